//! The whole path through the real binary against the simulators: add a client, create a
//! connection, authorize it (the test plays the browser by following the printed URL), test it
//! and read through it. Xero with two organisations, each read from the right one; eight
//! processes sharing one Xero connection across many token expiries; revocation on delete; and
//! a scan of everything printed and written for the client secret and every issued token.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Sandbox, authorize, callback, err, free_port, out, xero_connection};
use weft_harness::kantata::{KantataConfig, KantataSim};
use weft_harness::xero::{Consent, XeroConfig, XeroLimits, XeroSim};

fn ok(o: &std::process::Output) {
    assert!(o.status.success(), "{}", err(o));
}

#[test]
fn kantata_add_client_create_authorize_test_and_read() {
    let port = free_port();
    let sim = KantataSim::start(KantataConfig {
        redirect_uris: vec![callback(port)],
        ..KantataConfig::default()
    })
    .unwrap();
    let s = Sandbox::new("auth-kantata");
    ok(&s.run(&["init"], None));
    s.guard(sim.client_secret());
    s.guard(sim.personal_token());
    s.add_client(
        "kapp",
        "kantata",
        sim.client_id(),
        &format!("{}\n", sim.client_secret()),
    );
    let app = format!("app={}", sim.app_url());
    let api = format!("api={}", sim.api_url());
    ok(&s.run(
        &[
            "connection",
            "create",
            "k",
            "--connector",
            "kantata",
            "--client",
            "kapp",
            "--host",
            &app,
            "--host",
            &api,
        ],
        None,
    ));
    let (code, printed, stderr) = authorize(&s, "k", port, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("authorized connection `k`"), "{stderr}");
    // --no-browser: stdout holds the authorize URL alone, for a script to pick up.
    assert_eq!(printed.lines().count(), 1, "{printed}");
    assert!(printed.starts_with("http"), "{printed}");
    assert!(stderr.contains(&callback(port)), "{stderr}");

    let test = s.run(&["connection", "test", "k"], None);
    ok(&test);
    assert!(out(&test).contains("works"), "{}", out(&test));
    let read = s.run(&["read", "k", "workspaces", "--limit", "3"], None);
    ok(&read);
    assert_eq!(out(&read).lines().count(), 3);
    assert_eq!(s.connection_json("k")["status"], "authorized");

    s.assert_none_of(sim.issued_tokens());
}

#[test]
fn xero_two_organisations_each_read_from_the_right_one() {
    let port = free_port();
    let sim = XeroSim::start(XeroConfig {
        organisations: 2,
        size: 12,
        redirect_uris: vec![callback(port)],
        ..XeroConfig::default()
    })
    .unwrap();
    let tenants = sim.tenants();
    let (a, b) = (tenants[0].clone(), tenants[1].clone());
    let s = Sandbox::new("auth-xero");
    ok(&s.run(&["init"], None));
    xero_connection(&s, &sim, "x");

    // Not authorized yet: its own exit code.
    assert_eq!(
        s.run(&["connection", "test", "x"], None).status.code(),
        Some(8)
    );

    // The person connects organisation A: the connection reaches A only (matched by the
    // token's authentication_event_id, not by taking the first listed).
    sim.set_consent(Consent::Grant {
        tenants: vec![a.0.clone()],
    });
    let (code, _, stderr) = authorize(&s, "x", port, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains(&a.1) && !stderr.contains(&b.1), "{stderr}");
    ok(&s.run(&["connection", "test", "x"], None));

    // Authorizing again for B adds it; the consent listed both, only B is new.
    sim.set_consent(Consent::Grant {
        tenants: vec![b.0.clone()],
    });
    let (code, _, stderr) = authorize(&s, "x", port, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("the connection reaches 2"), "{stderr}");

    // Two tenants: reading without choosing is refused, with the choices named.
    let unchosen = s.run(&["read", "x", "invoices"], None);
    assert_eq!(unchosen.status.code(), Some(1));
    assert!(err(&unchosen).contains("--tenant"), "{}", err(&unchosen));
    for (id, _) in [&a, &b] {
        let read = s.run(&["read", "x", "invoices", "--tenant", id], None);
        ok(&read);
        let got: Vec<String> = out(&read)
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["InvoiceID"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let expected: Vec<String> = sim
            .invoices(id)
            .iter()
            .map(|i| i["InvoiceID"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(got.len(), expected.len());
        let mut g = got.clone();
        let mut e = expected.clone();
        g.sort();
        e.sort();
        assert_eq!(g, e, "tenant {id} read its own invoices");
    }
    // Every API call carried one of the two tenants, never a mix-up: the simulator answers a
    // wrong tenant with 403, and no call failed.
    assert!(sim.observed().log.requests().iter().all(|r| r.status < 400));

    // A declined consent says so and changes nothing.
    sim.set_consent(Consent::Deny);
    let (code, _, stderr) = authorize(&s, "x", port, &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("access_denied"), "{stderr}");

    // Delete revokes the grant at Xero: its refresh token stops working there.
    let deleted = s.run(&["connection", "delete", "x", "--yes"], None);
    ok(&deleted);
    assert!(out(&deleted).contains("revoked"), "{}", out(&deleted));

    s.assert_none_of(sim.issued_tokens());
}

/// A workspace with connection `x` to one Xero organisation of a simulator without limits,
/// authorized.
fn authorized_xero(label: &str) -> (XeroSim, Sandbox) {
    let port = free_port();
    let sim = XeroSim::start(XeroConfig {
        organisations: 1,
        size: 5,
        redirect_uris: vec![callback(port)],
        limits: XeroLimits::unlimited(),
        ..XeroConfig::default()
    })
    .unwrap();
    let s = Sandbox::new(label);
    ok(&s.run(&["init"], None));
    xero_connection(&s, &sim, "x");
    let (code, _, stderr) = authorize(&s, "x", port, &[]);
    assert_eq!(code, 0, "{stderr}");
    (sim, s)
}

#[test]
fn eight_processes_share_one_xero_connection_across_many_expiries() {
    let (sim, s) = authorized_xero("auth-eight");

    let rounds = 6;
    for round in 0..rounds {
        // Every access token is now expired at Xero; each process finds out from a 401.
        sim.clock().advance(Duration::from_secs(31 * 60));
        let children: Vec<_> = (0..8)
            .map(|_| {
                s.command(&["read", "x", "contacts", "--limit", "2"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let o = child.wait_with_output().unwrap();
            s.printed(&o.stdout);
            s.printed(&o.stderr);
            assert!(o.status.success(), "round {round}: {}", err(&o));
            assert_eq!(out(&o).lines().count(), 2);
        }
    }
    let (refreshed, refused) = sim.refresh_outcomes();
    assert_eq!(refused, 0, "no refresh was refused (no invalid_grant)");
    assert_eq!(
        refreshed, rounds,
        "exactly one refresh per expiry, across all processes"
    );
    assert!(sim.identity_observed().log.max_in_flight(None) <= 1);
    assert_eq!(s.connection_json("x")["status"], "authorized");

    s.assert_none_of(sim.issued_tokens());
}

#[test]
fn a_wrong_client_secret_says_what_to_do() {
    let port = free_port();
    let sim = XeroSim::start(XeroConfig {
        organisations: 1,
        redirect_uris: vec![callback(port)],
        ..XeroConfig::default()
    })
    .unwrap();
    let s = Sandbox::new("auth-wrong-secret");
    ok(&s.run(&["init"], None));
    s.add_client("xapp", "xero", sim.client_id(), "not-the-secret\n");
    let hosts = [
        format!("login={}", sim.login_url()),
        format!("identity={}", sim.identity_url()),
        format!("api={}", sim.api_url()),
    ];
    let mut args = vec![
        "connection",
        "create",
        "x",
        "--connector",
        "xero",
        "--client",
        "xapp",
    ];
    for h in &hosts {
        args.extend(["--host", h.as_str()]);
    }
    ok(&s.run(&args, None));
    let (code, _, stderr) = authorize(&s, "x", port, &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("invalid_client"), "{stderr}");
    assert!(stderr.contains("weft client edit xapp"), "{stderr}");
    assert_eq!(s.connection_json("x")["status"], "not authorized");
}

#[test]
fn deleting_one_of_two_connections_on_one_organisation_leaves_the_other_working() {
    let port = free_port();
    let sim = XeroSim::start(XeroConfig {
        organisations: 2,
        size: 3,
        redirect_uris: vec![callback(port)],
        ..XeroConfig::default()
    })
    .unwrap();
    let tenants = sim.tenants();
    let s = Sandbox::new("auth-shared-grant");
    ok(&s.run(&["init"], None));
    xero_connection(&s, &sim, "x");
    let hosts = [
        format!("login={}", sim.login_url()),
        format!("identity={}", sim.identity_url()),
        format!("api={}", sim.api_url()),
    ];
    let mut args = vec![
        "connection",
        "create",
        "y",
        "--connector",
        "xero",
        "--client",
        "xapp",
    ];
    for h in &hosts {
        args.extend(["--host", h.as_str()]);
    }
    ok(&s.run(&args, None));
    sim.set_consent(Consent::Grant {
        tenants: vec![tenants[0].0.clone()],
    });
    for name in ["x", "y"] {
        let (code, _, stderr) = authorize(&s, name, port, &[]);
        assert_eq!(code, 0, "{stderr}");
    }
    // Xero's refresh tokens lapse after 60 days unused: the list says by when to use it.
    let shown = s.connection_json("y");
    assert_eq!(shown["status"], "authorized");
    assert!(
        shown["use_by"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{shown}"
    );
    let listed = s.run(&["connection", "list"], None);
    ok(&listed);
    let text = out(&listed);
    assert!(
        text.lines()
            .any(|l| l.contains('y') && l.contains(shown["use_by"].as_str().unwrap())),
        "the list says by when each connection must be used:\n{text}"
    );
    let deleted = s.run(&["connection", "delete", "x", "--yes"], None);
    ok(&deleted);
    assert!(
        out(&deleted).contains("kept the grant"),
        "{}",
        out(&deleted)
    );
    assert!(out(&deleted).contains("`y`"), "{}", out(&deleted));
    ok(&s.run(&["connection", "test", "y"], None));
    // The last one using the grant revokes it.
    let last = s.run(&["connection", "delete", "y", "--yes"], None);
    ok(&last);
    assert!(out(&last).contains("revoked"), "{}", out(&last));
    s.assert_none_of(sim.issued_tokens());
}

/// Xero's spec as a "custom connection": the client-credentials grant instead of a consent.
fn client_credentials_spec(dir: &std::path::Path) {
    let xero = common::read(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../specs/xero.toml"),
    );
    let start = xero.find("[auth.oauth2]").unwrap();
    let end = xero.find("[tenants]").unwrap();
    let grant = r#"[auth.client-credentials]
token-url = "{{ hosts.identity }}/connect/token"
client-id = "{{ fields.client_id }}"
client-secret = "{{ fields.client_secret }}"
client-auth = "basic"
scopes = ["accounting.transactions", "accounting.contacts", "accounting.settings"]

"#;
    let spec = format!("{}{grant}{}", &xero[..start], &xero[end..])
        .replacen("id = \"xero\"", "id = \"xero-custom\"", 1)
        .replacen("name = \"Xero\"", "name = \"Xero custom connection\"", 1)
        .replace(
            "select = { by = \"token-claim\", claim = \"authentication_event_id\", field = \"authEventId\" }",
            "select = { by = \"choose\" }",
        );
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("xero-custom.toml"), spec).unwrap();
}

#[test]
fn a_client_credentials_connector_connects_refreshes_and_is_tested() {
    let sim = XeroSim::start(XeroConfig {
        organisations: 1,
        size: 3,
        ..XeroConfig::default()
    })
    .unwrap();
    let s = Sandbox::new("auth-client-credentials");
    let specs = s.project().parent().unwrap().join("specs");
    client_credentials_spec(&specs);
    let env = [("WEFT_SPEC_PATH", specs.to_str().unwrap())];
    ok(&s.run_env(&["init"], None, &env));
    s.guard(sim.client_secret());
    ok(&s.run_env(
        &[
            "client",
            "add",
            "machine",
            "--connector",
            "xero-custom",
            "--client-id",
            sim.client_id(),
            "--secret-stdin",
        ],
        Some(&format!("{}\n", sim.client_secret())),
        &env,
    ));
    let identity = format!("identity={}", sim.identity_url());
    let api = format!("api={}", sim.api_url());
    ok(&s.run_env(
        &[
            "connection",
            "create",
            "m",
            "--connector",
            "xero-custom",
            "--client",
            "machine",
            "--host",
            &identity,
            "--host",
            &api,
        ],
        None,
        &env,
    ));
    // No browser: the client's credentials get the token, and the organisation is found.
    let authorized = s.run_env(&["connection", "authorize", "m"], None, &env);
    ok(&authorized);
    // Messages go to stderr (stdout carries only an authorize URL, for scripts).
    assert!(
        err(&authorized).contains("authorized connection `m`"),
        "{}",
        err(&authorized)
    );
    assert!(
        err(&authorized).contains(&sim.tenants()[0].1),
        "{}",
        err(&authorized)
    );
    ok(&s.run_env(&["connection", "test", "m"], None, &env));
    let issued = sim.issued_tokens().len();
    // Past the token's lifetime a new grant replaces it (there is no refresh token).
    sim.clock().advance(Duration::from_secs(31 * 60));
    ok(&s.run_env(&["connection", "test", "m"], None, &env));
    assert_eq!(sim.issued_tokens().len(), issued + 1, "one new grant");
    s.assert_none_of(sim.issued_tokens());
}

/// A token endpoint that accepts connections, reads them, and never answers.
fn silent_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(32) {
            let Ok(stream) = stream else { break };
            held.push(stream);
        }
    });
    url
}

#[test]
fn a_token_endpoint_that_never_answers_fails_authorize_test_and_delete_naming_its_host() {
    let port = free_port();
    let sim = XeroSim::start(XeroConfig {
        organisations: 1,
        size: 3,
        redirect_uris: vec![callback(port)],
        ..XeroConfig::default()
    })
    .unwrap();
    let s = Sandbox::new("auth-silent");
    // Xero's spec with a one-second time limit, so the test does not wait two minutes.
    let specs = s.project().parent().unwrap().join("specs");
    std::fs::create_dir_all(&specs).unwrap();
    let xero = common::read(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../specs/xero.toml"),
    );
    assert!(xero.contains("\ntimeout = \"120s\""));
    std::fs::write(
        specs.join("xero.toml"),
        xero.replacen("\ntimeout = \"120s\"", "\ntimeout = \"1s\"", 1),
    )
    .unwrap();
    s.set_env("WEFT_SPEC_PATH", specs.to_str().unwrap());
    ok(&s.run(&["init"], None));
    xero_connection(&s, &sim, "x");
    let silent = silent_server();
    let host = silent.trim_start_matches("http://").to_owned();
    let at = |url: &str| format!("identity={url}");

    // The code exchange: the browser was told "received", the terminal says what failed.
    ok(&s.run(&["connection", "edit", "x", "--host", &at(&silent)], None));
    let (code, _, stderr) = authorize(&s, "x", port, &[]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&host) && stderr.contains("no answer within 1s"),
        "{stderr}"
    );

    // Authorized for real, then the token endpoint goes silent and the token expires.
    ok(&s.run(
        &[
            "connection",
            "edit",
            "x",
            "--host",
            &at(&sim.identity_url()),
        ],
        None,
    ));
    let (code, _, stderr) = authorize(&s, "x", port, &[]);
    assert_eq!(code, 0, "{stderr}");
    ok(&s.run(&["connection", "edit", "x", "--host", &at(&silent)], None));
    sim.clock().advance(Duration::from_secs(31 * 60));
    let tested = s.run(&["connection", "test", "x"], None);
    assert_ne!(tested.status.code(), Some(0));
    assert!(err(&tested).contains(&host), "{}", err(&tested));
    // The refresh lock was let go: the next command is not told that a lock is held.
    let again = s.run(&["connection", "test", "x"], None);
    assert!(!err(&again).contains("lock"), "{}", err(&again));

    let deleted = s.run(&["connection", "delete", "x", "--yes"], None);
    assert_eq!(deleted.status.code(), Some(1));
    assert!(err(&deleted).contains(&host), "{}", err(&deleted));
    assert!(
        err(&deleted).contains("nothing was deleted"),
        "{}",
        err(&deleted)
    );
    s.assert_none_of(sim.issued_tokens());
}

#[test]
fn a_client_added_while_authorize_waits_for_the_browser_is_kept() {
    let port = free_port();
    let sim = XeroSim::start(XeroConfig {
        organisations: 1,
        size: 3,
        redirect_uris: vec![callback(port)],
        ..XeroConfig::default()
    })
    .unwrap();
    let s = Sandbox::new("auth-meanwhile");
    ok(&s.run(&["init"], None));
    xero_connection(&s, &sim, "x");
    let (code, _, stderr) = common::authorize_with(&s, "x", port, &[], || {
        s.add_client("later", "kantata", "K-LATER", "later-secret\n");
    });
    assert_eq!(code, 0, "{stderr}");
    let file = common::read(&s.project().join("weft.toml"));
    assert!(file.contains("[clients.later]"), "{file}");
    assert!(file.contains("[[connections.x.tenants]]"), "{file}");
    ok(&s.run(&["client", "show", "later"], None));
    s.assert_none_of(sim.issued_tokens());
}

/// A provider that names the company just authorized in the callback (`realmId` beside the
/// code) and carries it in its API paths, played by a small server on 127.0.0.1: the consent
/// redirects at once, the token endpoint answers one grant, the API answers one company.
/// Returns its base URL and the request lines it received.
fn realm_provider() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(stream) = stream else { break };
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut length = 0;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
                if let Some((name, value)) = header.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            log.lock().unwrap().push(line.trim().to_owned());
            let target = line.split(' ').nth(1).unwrap_or("/").to_owned();
            let (path, raw_query) = target.split_once('?').unwrap_or((&target, ""));
            // The raw (still escaped) value of a query parameter.
            let query = |k: &str| {
                raw_query
                    .split('&')
                    .find_map(|pair| pair.strip_prefix(&format!("{k}=")))
                    .unwrap_or_default()
                    .to_owned()
            };
            let (status, extra, text) = match path {
                "/authorize" => {
                    let back = format!(
                        "{}?code=code-1&state={}&realmId=4620816365",
                        unescape(&query("redirect_uri")),
                        query("state")
                    );
                    ("302 Found", format!("location: {back}\r\n"), String::new())
                }
                "/token" => (
                    "200 OK",
                    String::new(),
                    r#"{"access_token":"realm-access","refresh_token":"realm-refresh","token_type":"bearer","expires_in":3600}"#.to_owned(),
                ),
                "/v3/company/4620816365/query" => (
                    "200 OK",
                    String::new(),
                    r#"{"QueryResponse":{"Thing":[{"Id":"1","Name":"First"}]}}"#.to_owned(),
                ),
                _ => ("404 Not Found", String::new(), "{}".to_owned()),
            };
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\n{extra}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    (url, seen)
}

/// `text` with its `%XX` escapes decoded.
fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], text.get(i + 1..i + 3)) {
            (b'%', Some(hex)) if u8::from_str_radix(hex, 16).is_ok() => {
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// Issue 15 item 4: the tenant comes from the callback's query string (`realmId` beside the
/// code), with no tenant list, and rides in the API paths instead of a header; the connection
/// list shows the use-by date of its refresh token (item 13's lifetimes).
#[test]
fn a_tenant_named_in_the_callback_is_kept_and_carried_in_the_path() {
    let (provider, seen) = realm_provider();
    let port = free_port();
    let s = Sandbox::new("auth-callback-tenant");
    let specs = s.project().parent().unwrap().join("specs");
    std::fs::create_dir_all(&specs).unwrap();
    std::fs::write(
        specs.join("realmco.toml"),
        r#"id = "realmco"
name = "Realm Co"
version = "1.0.0"

[hosts]
app = "https://appcenter.realm.example"
api = "https://api.realm.example"

[requests]
host = "api"

[auth.oauth2]
authorize-url = "{{ hosts.app }}/authorize"
token-url = "{{ hosts.app }}/token"
client-id = "{{ fields.client_id }}"
client-secret = "{{ fields.client_secret }}"
scopes = ["accounting"]
refresh = { rotates = true, idle-lifetime = "100d", absolute-lifetime = "1826d" }

[[fields]]
id = "client_id"
label = "Client ID"
required = true

[[fields]]
id = "client_secret"
label = "Client secret"
required = true
secret = true

[tenants]
select = { by = "callback-param", param = "realmId" }

[test]
resource = "things"

[resources.things]
primary-key = "Id"

[resources.things.list]
path = "/v3/company/{{ tenant.id }}/query"
query = { query = "select * from Thing STARTPOSITION {{ page.start }} MAXRESULTS {{ page.size }}" }
records = { style = "path", path = "QueryResponse.Thing", optional = true }
pagination = { style = "offset", size = 100, stop = { when = "short-page" } }
"#,
    )
    .unwrap();
    s.set_env("WEFT_SPEC_PATH", specs.to_str().unwrap());
    ok(&s.run(&["init"], None));
    s.add_client("rapp", "realmco", "realm-client", "realm-secret\n");
    let app = format!("app={provider}");
    let api = format!("api={provider}");
    ok(&s.run(
        &[
            "connection",
            "create",
            "q",
            "--connector",
            "realmco",
            "--client",
            "rapp",
            "--host",
            &app,
            "--host",
            &api,
        ],
        None,
    ));
    let (code, _, stderr) = authorize(&s, "q", port, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("4620816365"), "{stderr}");
    assert_eq!(
        s.connection_json("q")["tenants"][0]["id"],
        "4620816365",
        "{}",
        s.connection_json("q")
    );
    let test = s.run(&["connection", "test", "q"], None);
    ok(&test);
    let lines = seen.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("GET /v3/company/4620816365/query?query=select")),
        "{lines:?}"
    );
    let list = s.run(&["connection", "list"], None);
    ok(&list);
    // Used by 100 days from now (the idle lifetime binds before the five-year one).
    let day = |offset_s: i64| {
        jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_secs(100 * 86_400 + offset_s))
            .unwrap()
            .strftime("%Y-%m-%d")
            .to_string()
    };
    let printed = out(&list);
    assert!(
        printed
            .lines()
            .any(|l| l.contains("authorized") && (l.contains(&day(-120)) || l.contains(&day(0)))),
        "{printed}"
    );
}

/// A process killed after Xero rotated the refresh token and before it sealed the answer: the
/// connection says a refresh has no sealed answer, the next command sends the old refresh token
/// again within Xero's grace period (once), warns about it, and the connection then counts one
/// recovered refresh and nothing pending.
#[test]
fn a_refresh_cut_off_by_a_kill_is_shown_recovered_once_and_counted() {
    use weft_harness::faults::{Fault, FaultRule, When};
    let (sim, s) = authorized_xero("auth-cut-off");
    let shown = out(&s.run(&["connection", "show", "x"], None));
    assert!(
        !shown.contains("refreshing:") && !shown.contains("recovered:"),
        "{shown}"
    );

    // The first refresh is handled at Xero, its answer held; the process is killed meanwhile.
    sim.identity_observed().faults.add(
        FaultRule::on(
            "/connect/token",
            When::Nth(1),
            Fault::HoldResponse(Duration::from_secs(30)),
        )
        .method("POST"),
    );
    sim.clock().advance(Duration::from_secs(31 * 60));
    let mut victim = s
        .command(&["read", "x", "contacts", "--limit", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..600 {
        if sim.refresh_outcomes().0 == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sim.refresh_outcomes().0, 1, "Xero handled the refresh");
    victim.kill().unwrap();
    victim.wait().unwrap();
    let shown = out(&s.run(&["connection", "show", "x"], None));
    assert!(
        shown.contains("refreshing:   a token refresh sent at 20")
            && shown.contains(&format!("by process {} on ", victim.id())),
        "{shown}"
    );

    // The next command recovers it: one resend, a warning, the count.
    let read = s.run(&["read", "x", "contacts", "--limit", "2"], None);
    ok(&read);
    assert!(
        err(&read).contains("warning: connection `x`: the token refresh begun at ")
            && err(&read)
                .contains("sending its refresh token again within the provider's grace period"),
        "{}",
        err(&read)
    );
    assert_eq!(sim.refresh_reuses(), 1);
    let shown = out(&s.run(&["connection", "show", "x"], None));
    assert!(
        shown.contains("recovered:    1 cut-off token refresh(es) since the consent")
            && !shown.contains("refreshing:"),
        "{shown}"
    );
    let json = s.connection_json("x");
    assert_eq!(json["refresh_recoveries"], 1, "{json}");
    assert!(json.get("refresh_unanswered").is_none(), "{json}");
    s.assert_none_of(sim.issued_tokens());
}
