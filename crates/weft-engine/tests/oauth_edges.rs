//! OAuth at its edges, against small servers on 127.0.0.1 that misbehave on purpose: a token
//! endpoint that never answers, one that answers a bare HTTP error, a strict revocation endpoint,
//! and a callback that receives repeated parameters or hostile text.

mod common;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use common::shipped;
use weft_core::duration::SpecDuration;
use weft_core::model::SpecFile;
use weft_engine::oauth::{Callback, OAuthApp, OAuthError};
use weft_engine::request::Hosts;
use weft_engine::secrets::Secret;

/// A server that answers every request with `reply` (or never, when `None`), keeping each
/// request's head.
struct Server {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(reply: Option<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().take(16) {
                let Ok(mut stream) = stream else { break };
                let mut buf = vec![0u8; 8192];
                let n = stream.read(&mut buf).unwrap_or(0);
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                match &reply {
                    Some(text) => {
                        let _ = stream.write_all(text.as_bytes());
                        // Drain what is left of the request before closing: unread bytes
                        // would turn the close into a reset that loses the answer.
                        let _ = stream.shutdown(std::net::Shutdown::Write);
                        let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(1)));
                        let _ = stream.read_to_end(&mut Vec::new());
                    }
                    // Accepted, read, and never answered: the connection stays open.
                    None => held.push(stream),
                }
            }
        });
        Self { port, heads }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Xero's spec with every OAuth endpoint on `identity`, and a one-second time limit.
fn app(identity: &str, secret: &str) -> OAuthApp {
    let mut file: SpecFile = shipped("xero").file().clone();
    file.limits.timeout = SpecDuration::from_secs(1);
    let hosts = Hosts::new(
        &file,
        &BTreeMap::from([
            ("login".to_owned(), identity.to_owned()),
            ("identity".to_owned(), identity.to_owned()),
        ]),
    )
    .unwrap();
    OAuthApp::new(
        &file,
        &hosts,
        "CLIENT+ID",
        Some(Secret::new(secret.to_owned())),
        "http://localhost:8976/oauth/callback",
    )
    .unwrap()
}

#[tokio::test]
async fn a_token_endpoint_that_never_answers_fails_within_the_timeout_naming_its_host() {
    let silent = Server::start(None);
    let app = app(&silent.url(), "s");
    let http = weft_engine::http::client().unwrap();
    let err = app
        .refresh(&http, &Secret::new("r".into()), 0)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, OAuthError::Transport { .. }), "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{}", silent.port)),
        "{text}"
    );
    assert!(text.contains("no answer within 1s"), "{text}");
    let revoked = app
        .revoke(&http, &Secret::new("r".into()))
        .await
        .unwrap_err();
    assert!(
        revoked
            .to_string()
            .contains("revocation endpoint of Xero at 127.0.0.1"),
        "{revoked}"
    );
}

#[tokio::test]
async fn token_endpoint_errors_name_the_http_status() {
    let broken = Server::start(Some(answer("502 Bad Gateway", "text/html", "<h1>x</h1>")));
    let app = app(&broken.url(), "s");
    let http = weft_engine::http::client().unwrap();
    let err = app
        .refresh(&http, &Secret::new("r".into()), 0)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("HTTP 502"), "{err}");

    let refused = Server::start(Some(answer(
        "400 Bad Request",
        "application/json",
        r#"{"error":"invalid_grant","error_description":"gone\u001b[2J now"}"#,
    )));
    let err = app_at(&refused)
        .refresh(&http, &Secret::new("r".into()), 0)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("(HTTP 400): invalid_grant"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "control characters are escaped: {text:?}"
    );
    assert!(text.contains("\\u{1b}[2J"), "{text}");
}

/// A whole HTTP answer.
fn answer(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn app_at(server: &Server) -> OAuthApp {
    app(&server.url(), "s")
}

#[tokio::test]
async fn revocation_form_encodes_basic_credentials_like_the_token_request() {
    let strict = Server::start(Some(answer("200 OK", "text/plain", "")));
    let app = app(&strict.url(), "a+b%c d");
    let http = weft_engine::http::client().unwrap();
    app.revoke(&http, &Secret::new("r".into())).await.unwrap();
    let head = strict.heads.lock().unwrap()[0].to_lowercase();
    let expected = base64::engine::general_purpose::STANDARD.encode("CLIENT%2BID:a%2Bb%25c+d");
    assert!(
        head.contains(&format!("authorization: basic {}", expected.to_lowercase())),
        "{head}"
    );
}

/// Sends one raw request to the callback and returns the answer's text.
fn call(port: u16, target: &str) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

#[tokio::test]
async fn the_callback_refuses_repeated_parameters_and_never_claims_success() {
    let callback = Callback::bind(0).await.unwrap();
    let port = callback.port();
    let waiting = tokio::spawn(callback.wait("S1", std::time::Duration::from_secs(30)));
    // A half-sent request that never ends must not hold the shutdown.
    let mut half = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    half.write_all(b"GET /oauth/callback?state=S1").unwrap();
    let answers = tokio::task::spawn_blocking(move || {
        (
            call(port, "/oauth/callback?state=S1&state=S1&code=evil"),
            call(port, "/oauth/callback?state=S1&code=good"),
        )
    })
    .await
    .unwrap();
    assert!(answers.0.starts_with("HTTP/1.1 400"), "{}", answers.0);
    assert!(answers.0.contains("repeats a parameter"), "{}", answers.0);
    assert!(
        answers
            .1
            .contains("result of the authorization is shown in the terminal")
    );
    assert!(!answers.1.to_lowercase().contains("success"));
    assert_eq!(waiting.await.unwrap().unwrap(), "good");
    drop(half);
}

#[tokio::test]
async fn an_error_sent_back_to_the_callback_is_printed_with_control_characters_escaped() {
    let callback = Callback::bind(0).await.unwrap();
    let port = callback.port();
    let waiting = tokio::spawn(callback.wait("S2", std::time::Duration::from_secs(30)));
    tokio::task::spawn_blocking(move || {
        call(
            port,
            "/oauth/callback?state=S2&error=access_denied&error_description=no%1B%5B31m%0Dway",
        )
    })
    .await
    .unwrap();
    let err = waiting.await.unwrap().unwrap_err().to_string();
    assert!(!err.contains('\u{1b}') && !err.contains('\r'), "{err:?}");
    assert!(err.contains("no\\u{1b}[31m\\rway"), "{err}");
}

#[test]
fn authorize_params_and_the_scope_separator_shape_the_authorize_url() {
    let mut file: SpecFile = shipped("xero").file().clone();
    let oauth = file.auth.oauth2.as_mut().unwrap();
    oauth.scope_separator = ",".to_owned();
    oauth.scopes = vec!["a".to_owned(), "b".to_owned()];
    oauth
        .authorize_params
        .insert("prompt".to_owned(), "consent".to_owned());
    let hosts = Hosts::new(
        &file,
        &BTreeMap::from([("login".to_owned(), "http://127.0.0.1:9".to_owned())]),
    )
    .unwrap();
    let app = OAuthApp::new(
        &file,
        &hosts,
        "id",
        None,
        "http://localhost:8976/oauth/callback",
    )
    .unwrap();
    let url = app.start().url;
    let pairs: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(pairs["scope"], "a,b");
    assert_eq!(pairs["prompt"], "consent");
}

/// `app` with the spec's revocation changed by `change`.
fn app_revoking(server: &Server, change: impl FnOnce(&mut weft_core::model::OAuth2)) -> OAuthApp {
    let mut file: SpecFile = shipped("xero").file().clone();
    file.limits.timeout = SpecDuration::from_secs(1);
    change(file.auth.oauth2.as_mut().unwrap());
    let hosts = Hosts::new(
        &file,
        &BTreeMap::from([
            ("login".to_owned(), server.url()),
            ("identity".to_owned(), server.url()),
        ]),
    )
    .unwrap();
    OAuthApp::new(
        &file,
        &hosts,
        "CLIENT+ID",
        Some(Secret::new("s".to_owned())),
        "http://localhost:8976/oauth/callback",
    )
    .unwrap()
}

/// Issue 15 item 13: revocation that is not RFC 7009. HubSpot's shape, a DELETE with the token
/// in the path (escaped) and no body; and a JSON body carrying the token and, with `client-auth
/// = "body"`, the client.
#[tokio::test]
async fn revocation_by_delete_with_the_token_in_the_path_or_by_a_json_body() {
    use weft_core::model::{ClientAuth, Method, RevokeBody, RevokeRequest};
    let http = weft_engine::http::client().unwrap();

    let server = Server::start(Some(answer("204 No Content", "text/plain", "")));
    let app = app_revoking(&server, |o| {
        o.revoke_url = Some("{{ hosts.identity }}/oauth/v1/refresh-tokens/{{ token }}".into());
        o.revoke_request = Some(RevokeRequest {
            method: Method::Delete,
            body: RevokeBody::None,
        });
    });
    app.revoke(&http, &Secret::new("r/1 2".into()))
        .await
        .unwrap();
    let head = server.heads.lock().unwrap()[0].clone();
    assert!(
        head.starts_with("DELETE /oauth/v1/refresh-tokens/r%2F1%202 HTTP/1.1"),
        "{head}"
    );
    assert!(!head.contains("token_type_hint"), "no body: {head}");

    let server = Server::start(Some(answer("200 OK", "application/json", "{}")));
    let app = app_revoking(&server, |o| {
        o.revoke_url = Some("{{ hosts.identity }}/revoke".into());
        o.client_auth = ClientAuth::Body;
        o.revoke_request = Some(RevokeRequest {
            method: Method::Post,
            body: RevokeBody::Json,
        });
    });
    app.revoke(&http, &Secret::new("r1".into())).await.unwrap();
    let head = server.heads.lock().unwrap()[0].clone();
    let lower = head.to_lowercase();
    assert!(head.starts_with("POST /revoke HTTP/1.1"), "{head}");
    assert!(lower.contains("content-type: application/json"), "{head}");
    let body: serde_json::Value =
        serde_json::from_str(head.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"token": "r1", "token_type_hint": "refresh_token", "client_id": "CLIENT+ID", "client_secret": "s"})
    );

    // A refusal names the host and the status, never the URL that holds the token.
    let server = Server::start(Some(answer(
        "400 Bad Request",
        "application/json",
        r#"{"error":"invalid_token"}"#,
    )));
    let app = app_revoking(&server, |o| {
        o.revoke_url = Some("{{ hosts.identity }}/oauth/v1/refresh-tokens/{{ token }}".into());
        o.revoke_request = Some(RevokeRequest {
            method: Method::Delete,
            body: RevokeBody::None,
        });
    });
    let err = app
        .revoke(&http, &Secret::new("secret-refresh".into()))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("400") && !err.contains("secret-refresh"),
        "{err}"
    );
}

/// Issue 15 item 4: the parameters a provider adds beside the code (QuickBooks' `realmId`)
/// come back with it; `state` and `code` are not among them, and the code is never printed.
#[tokio::test]
async fn the_callback_hands_back_the_parameters_beside_the_code() {
    let callback = Callback::bind(0).await.unwrap();
    let port = callback.port();
    let waiting = tokio::spawn(callback.wait_answer("S2", std::time::Duration::from_secs(30)));
    let page = tokio::task::spawn_blocking(move || {
        call(
            port,
            "/oauth/callback?code=c%2B1&state=S2&realmId=4620816365",
        )
    })
    .await
    .unwrap();
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let answer = waiting.await.unwrap().unwrap();
    assert_eq!(answer.code, "c+1");
    assert_eq!(
        answer.params,
        BTreeMap::from([("realmId".to_owned(), "4620816365".to_owned())])
    );
    assert!(!format!("{answer:?}").contains("c+1"));
}
