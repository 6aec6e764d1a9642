//! The OAuth host (`app.mavenlink.com`): the authorization-code flow as Kantata documents it.
//! Codes live 5 simulated minutes and work once; `redirect_uri` must match exactly; tokens never
//! expire unless refresh tokens are switched on. Errors follow RFC 6749 as Doorkeeper renders
//! them: JSON `error` + `error_description` from the token endpoint, a redirect (or a 400 page
//! when the client or redirect URI is wrong) from the authorize endpoint.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};

use super::util::{
    bytes_response, json_response, parse_urlencoded, percent_decode, percent_encode, secret_hex,
};
use super::{CodeInfo, Consent, Shared, TokenInfo};

/// How long a code stays valid, in simulated milliseconds.
const CODE_TTL_MS: u64 = 5 * 60 * 1000;
/// `expires_in` of access tokens when refresh tokens are on.
const ACCESS_TTL_SECS: u64 = 7200;

/// The OAuth host's routes.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/oauth/authorize", get(authorize))
        .route("/oauth/token", post(token))
        .route("/oauth/revoke", post(revoke))
        .with_state(shared)
}

fn page(status: u16, title: &str, text: &str) -> Response<Body> {
    let html = format!(
        "<!DOCTYPE html><html><head><title>{title}</title></head><body><h1>{title}</h1><p>{text}</p></body></html>"
    );
    let mut r = bytes_response(status, html.into_bytes());
    r.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

fn redirect(to: String) -> Response<Body> {
    let mut r = bytes_response(302, Vec::new());
    r.headers_mut().remove("content-type");
    if let Ok(v) = axum::http::HeaderValue::from_str(&to) {
        r.headers_mut().insert("location", v);
    }
    r
}

fn with_query(uri: &str, pairs: &[(&str, &str)]) -> String {
    let mut out = uri.to_owned();
    let mut sep = if uri.contains('?') { '&' } else { '?' };
    for (k, v) in pairs {
        out.push(sep);
        out.push_str(k);
        out.push('=');
        out.push_str(&percent_encode(v));
        sep = '&';
    }
    out
}

async fn authorize(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response<Body> {
    let params = parse_urlencoded(query.as_deref().unwrap_or(""));
    let get = |k: &str| {
        params
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    if get("client_id") != Some(shared.client_id.as_str()) {
        return page(
            400,
            "Client authentication failed",
            "The application is unknown. Check the client_id.",
        );
    }
    let Some(redirect_uri) =
        get("redirect_uri").filter(|r| shared.redirect_uris.iter().any(|u| u == r))
    else {
        return page(
            400,
            "Invalid redirect URI",
            "The redirect uri included is not valid: it must exactly match one registered for the application.",
        );
    };
    let state = get("state");
    let mut extra: Vec<(&str, &str)> = Vec::new();
    if get("response_type") != Some("code") {
        extra.push(("error", "unsupported_response_type"));
        extra.push((
            "error_description",
            "The authorization server does not support this response type.",
        ));
        if let Some(s) = state {
            extra.push(("state", s));
        }
        return redirect(with_query(redirect_uri, &extra));
    }
    let consent = *shared
        .consent
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match consent {
        Consent::Deny => {
            extra.push(("error", "access_denied"));
            extra.push((
                "error_description",
                "The resource owner or authorization server denied the request.",
            ));
            if let Some(s) = state {
                extra.push(("state", s));
            }
            redirect(with_query(redirect_uri, &extra))
        }
        Consent::Grant => {
            let code = {
                let mut auth = shared.auth_write();
                auth.counter += 1;
                let code = secret_hex(shared.seed, "code", auth.counter);
                auth.codes.insert(
                    code.clone(),
                    CodeInfo {
                        client_id: shared.client_id.clone(),
                        redirect_uri: redirect_uri.to_owned(),
                        issued_ms: shared.clock.now_ms(),
                        used: false,
                        user: 0,
                    },
                );
                code
            };
            extra.push(("code", &code));
            if let Some(s) = state {
                extra.push(("state", s));
            }
            redirect(with_query(redirect_uri, &extra))
        }
    }
}

fn oauth_error(status: u16, error: &str, description: &str) -> Response<Body> {
    let mut r = json_response(
        status,
        &json!({"error": error, "error_description": description}),
    );
    r.headers_mut().insert(
        "cache-control",
        axum::http::HeaderValue::from_static("no-store"),
    );
    r
}

/// Reads a form or JSON body into name/value pairs.
fn body_pairs(headers: &HeaderMap, body: &[u8]) -> Vec<(String, String)> {
    let is_json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if is_json {
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
            return Vec::new();
        };
        return map
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect();
    }
    parse_urlencoded(&String::from_utf8_lossy(body))
}

/// Client credentials from HTTP Basic, if sent.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((percent_decode(id), percent_decode(secret)))
}

fn issue(shared: &Shared, user: u32, code: Option<String>) -> Value {
    let mut auth = shared.auth_write();
    auth.counter += 1;
    let n = auth.counter;
    let access = secret_hex(shared.seed, "access", n);
    let expires_at_ms = shared
        .refresh_tokens
        .then(|| shared.clock.now_ms() + ACCESS_TTL_SECS * 1000);
    auth.tokens.insert(
        access.clone(),
        TokenInfo {
            user,
            revoked: false,
            expires_at_ms,
            code: code.clone(),
        },
    );
    let mut body = json!({"access_token": access, "token_type": "bearer"});
    if shared.refresh_tokens {
        let refresh = secret_hex(shared.seed, "refresh", n);
        auth.refresh.insert(
            refresh.clone(),
            TokenInfo {
                user,
                revoked: false,
                expires_at_ms: None,
                code,
            },
        );
        if let Some(obj) = body.as_object_mut() {
            obj.insert("refresh_token".into(), Value::String(refresh));
            obj.insert("expires_in".into(), json!(ACCESS_TTL_SECS));
            obj.insert("created_at".into(), json!(shared.clock.now_ms() / 1000));
        }
    }
    body
}

async fn token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let pairs = body_pairs(&headers, &body);
    let get = |k: &str| {
        pairs
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let (client_id, client_secret) = match basic_credentials(&headers) {
        Some((id, secret)) => (Some(id), Some(secret)),
        None => (get("client_id"), get("client_secret")),
    };
    if client_id.as_deref() != Some(shared.client_id.as_str())
        || client_secret.as_deref() != Some(shared.client_secret.as_str())
    {
        return oauth_error(
            401,
            "invalid_client",
            "Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method.",
        );
    }
    match get("grant_type").as_deref() {
        None => oauth_error(
            400,
            "invalid_request",
            "The request is missing a required parameter: grant_type.",
        ),
        Some("authorization_code") => {
            let Some(code) = get("code") else {
                return oauth_error(
                    400,
                    "invalid_request",
                    "The request is missing a required parameter: code.",
                );
            };
            let redirect_uri = get("redirect_uri").unwrap_or_default();
            let invalid = "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client.";
            let user = {
                let mut auth = shared.auth_write();
                let Some(info) = auth.codes.get_mut(&code) else {
                    return oauth_error(400, "invalid_grant", invalid);
                };
                if info.used {
                    // A replayed code: refuse it and revoke what it produced (RFC 6749 §4.1.2).
                    let state = &mut *auth;
                    for t in state.tokens.values_mut().chain(state.refresh.values_mut()) {
                        if t.code.as_deref() == Some(code.as_str()) {
                            t.revoked = true;
                        }
                    }
                    return oauth_error(400, "invalid_grant", invalid);
                }
                let expired = shared.clock.now_ms() > info.issued_ms + CODE_TTL_MS;
                if expired
                    || info.redirect_uri != redirect_uri
                    || info.client_id != shared.client_id
                {
                    return oauth_error(400, "invalid_grant", invalid);
                }
                info.used = true;
                info.user
            };
            json_response(200, &issue(&shared, user, Some(code)))
        }
        Some("refresh_token") if shared.refresh_tokens => {
            let Some(refresh) = get("refresh_token") else {
                return oauth_error(
                    400,
                    "invalid_request",
                    "The request is missing a required parameter: refresh_token.",
                );
            };
            let user = {
                let mut auth = shared.auth_write();
                match auth.refresh.get_mut(&refresh) {
                    Some(info) if !info.revoked => {
                        // Rotation: a refresh token works once.
                        info.revoked = true;
                        info.user
                    }
                    _ => {
                        return oauth_error(
                            400,
                            "invalid_grant",
                            "The refresh token is invalid, expired or revoked.",
                        );
                    }
                }
            };
            json_response(200, &issue(&shared, user, None))
        }
        Some(_) => oauth_error(
            400,
            "unsupported_grant_type",
            "The authorization grant type is not supported by the authorization server.",
        ),
    }
}

async fn revoke(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let pairs = body_pairs(&headers, &body);
    let token = pairs
        .iter()
        .rev()
        .find(|(n, _)| n == "token")
        .map(|(_, v)| v.clone());
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return oauth_error(
            400,
            "invalid_request",
            "The request is missing a required parameter: token.",
        );
    };
    let mut auth = shared.auth_write();
    if let Some(t) = auth.tokens.get_mut(&token) {
        t.revoked = true;
    }
    if let Some(t) = auth.refresh.get_mut(&token) {
        t.revoked = true;
    }
    // RFC 7009: unknown tokens are not an error.
    json_response(200, &json!({}))
}
