//! The read side of the spec language, driven through a session against a small local server
//! (127.0.0.1): list bodies (a search sent as POST, with the cursor and the paging state in its
//! body), paging inside a query text, next-page URLs (and the refusal of another host's),
//! records at nested, optional or single-object paths, and record filters.

mod common;

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use weft_core::load_str;
use weft_engine::EngineError;
use weft_engine::limits::Limiter;
use weft_engine::oauth::TokenSet;
use weft_engine::request::{Hosts, OpKind, RequestContext};
use weft_engine::secrets::{MasterKey, Secret, SecretStore};
use weft_engine::session::{Session, SessionError};
use weft_engine::tokens::TokenKeeper;
use weft_harness::clock::SimClock;

use common::SimWait;

const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

/// One request the server received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query, as sent.
    target: String,
    query: BTreeMap<String, String>,
    body: Value,
}

type Answer = Box<dyn Fn(&Seen, usize) -> (u16, Value) + Send + Sync>;

/// A local server answering every request with `answer(request, its index)`; returns its base
/// URL and the log of requests.
async fn serve(answer: Answer) -> (String, Arc<Mutex<Vec<Seen>>>) {
    use axum::extract::{Request, State};
    use axum::response::IntoResponse;

    type Shared = (Arc<Answer>, Arc<Mutex<Vec<Seen>>>);
    async fn handle(State((answer, log)): State<Shared>, request: Request) -> impl IntoResponse {
        let method = request.method().to_string();
        let uri = request.uri().clone();
        let bytes = axum::body::to_bytes(request.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        let query = uri
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        let seen = Seen {
            method,
            target: uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            query,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        };
        let index = {
            let mut log = log.lock().unwrap();
            log.push(seen.clone());
            log.len() - 1
        };
        let (status, body) = answer(&seen, index);
        (
            axum::http::StatusCode::from_u16(status).unwrap(),
            axum::Json(body),
        )
    }
    let log = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .fallback(handle)
        .with_state((Arc::new(answer), log.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, app).into_future());
    (format!("http://{addr}"), log)
}

/// A spec of one host and token auth, with these resources.
fn spec(resources: &str) -> weft_core::Spec {
    let text = format!(
        r#"
id = "acme"
name = "Acme"
version = "1.0.0"
[hosts]
api = "https://api.acme.example"
[requests]
host = "api"
[auth.token]
value = "{{{{ fields.token }}}}"
[[fields]]
id = "token"
label = "Token"
secret = true
[test]
resource = "things"
{resources}
"#
    );
    let report = load_str("acme.toml", &text);
    assert!(!report.has_errors(), "{}", report.render());
    report.spec.unwrap()
}

/// A session over `spec` with its `api` host at `url`.
fn session(spec: weft_core::Spec, url: &str, name: &str) -> Session {
    let clock = SimClock::manual(1_760_000_000_000);
    let dir = std::env::temp_dir().join(format!("weft-read-lang-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut store = SecretStore::open(
        &dir.join("credentials.json"),
        MasterKey::from_base64(KEY).unwrap(),
    )
    .unwrap();
    store
        .put(
            "connection:t:tokens",
            &TokenSet::fixed(Secret::new("tok".to_owned()), 0).to_sealed_json(),
        )
        .unwrap();
    let clock = Arc::new(SimWait::new(&clock));
    let http = weft_engine::http::client().unwrap();
    let keeper = TokenKeeper::new(
        "t",
        "connection:t:tokens",
        store,
        None,
        None,
        http.clone(),
        clock.clone(),
    );
    let hosts = Hosts::new(
        spec.file(),
        &BTreeMap::from([("api".to_owned(), url.to_owned())]),
    )
    .unwrap();
    let limiter = Limiter::new(spec.file(), 1);
    Session::new(spec, hosts, limiter, http, keeper, clock)
}

/// Every record of `resource`, or the error that stopped the read.
async fn read_all(
    session: &Session,
    resource: &str,
    ctx: &RequestContext,
) -> Result<Vec<Value>, SessionError> {
    let mut all = Vec::new();
    session
        .list(resource, ctx, |r| {
            all.push(r);
            ControlFlow::Continue(())
        })
        .await?;
    Ok(all)
}

fn ids(records: &[Value]) -> Vec<i64> {
    records.iter().map(|r| r["id"].as_i64().unwrap()).collect()
}

/// Issue 15 item 1: a search sent as POST, its body rendered per page with the incremental
/// cursor and the paging cursor (HubSpot's `after`, read from `paging.next.after`), retried
/// after a 500 like any read; and item 14: records the spec does not serve are dropped.
#[tokio::test]
async fn a_search_body_carries_the_cursor_and_the_paging_state_and_is_retried_as_a_read() {
    let (url, log) = serve(Box::new(|seen: &Seen, index| {
        if index == 0 {
            return (500, json!({"message": "try again"}));
        }
        match seen.body["after"].as_str() {
            None => (
                200,
                json!({"results": [{"id": 1, "archived": false}, {"id": 2, "archived": true}],
                       "paging": {"next": {"after": "2", "link": "ignored"}}}),
            ),
            Some("2") => (200, json!({"results": [{"id": 3, "archived": false}]})),
            Some(other) => (400, json!({"message": format!("bad after {other}")})),
        }
    }))
    .await;
    let spec = spec(
        r#"
[resources.things]
primary-key = "id"
[resources.things.list]
method = "POST"
path = "/search/{{ params.kind }}"
records = { style = "path", path = "results" }
pagination = { style = "cursor", next = "paging.next.after", size = 2 }
incremental = { field = "properties.updated", field-format = "epoch-millis", format = "epoch-millis" }
keep-if = "not record.archived"
read-body = { filterGroups = [{ filters = [{ propertyName = "updated", operator = "GTE", value = "{{ cursor }}" }] }], after = "{{ page.cursor | default('') }}", limit = 2, sorts = ["updated"] }
"#,
    );
    // The connector's reference says how the list reads.
    let doc = weft_core::docs::markdown(&spec, "http://localhost:8976/oauth/callback");
    assert!(
        doc.contains("with a JSON body, keeping records where `not record.archived`"),
        "{doc}"
    );
    assert!(
        doc.contains("`properties.updated` via the request's templates"),
        "{doc}"
    );
    assert!(
        doc.contains("cursor `{{ page.cursor }}` in a template from `paging.next.after`"),
        "{doc}"
    );
    let session = session(spec, &url, "search");
    let ctx = RequestContext {
        cursor: Some("1717156830750".into()),
        params: BTreeMap::from([("kind".into(), "deals".into())]),
        ..session.context(BTreeMap::new())
    };
    let records = read_all(&session, "things", &ctx).await.unwrap();
    assert_eq!(ids(&records), [1, 3], "the archived record is dropped");
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 3, "one retry after the 500, then two pages");
    for seen in &log {
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.target, "/search/deals");
        assert_eq!(
            seen.body["filterGroups"][0]["filters"][0]["value"],
            "1717156830750"
        );
        assert_eq!(seen.body["limit"], 2, "numbers stay numbers");
    }
    assert!(
        log[1].body.get("after").is_none(),
        "an empty value is left out"
    );
    assert_eq!(log[2].body["after"], "2");
}

/// Issue 15 items 2 and 5: paging inside a query text (QuickBooks' STARTPOSITION and
/// MAXRESULTS), records under a nested path that a provider leaves out when nothing matches,
/// and one record given as an object.
#[tokio::test]
async fn paging_inside_a_query_text_and_records_at_optional_and_single_object_paths() {
    let (url, log) = serve(Box::new(|seen: &Seen, _| {
        if seen.target.starts_with("/one/") {
            return (200, json!({"Thing": {"id": 9}, "time": "now"}));
        }
        let q = seen.query.get("query").cloned().unwrap_or_default();
        let start: i64 = q
            .split("STARTPOSITION ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        match start {
            1 => (
                200,
                json!({"QueryResponse": {"Thing": [{"id": 1}, {"id": 2}]}}),
            ),
            3 => (
                200,
                json!({"QueryResponse": {"Thing": [{"id": 3}, {"id": 4}]}}),
            ),
            _ => (200, json!({"QueryResponse": {}})),
        }
    }))
    .await;
    let spec = spec(
        r#"
[resources.things]
primary-key = "id"
[resources.things.list]
path = "/query"
query = { query = "select * from Thing where MetaData.LastUpdatedTime > '{{ cursor }}' STARTPOSITION {{ page.start }} MAXRESULTS {{ page.size }}" }
records = { style = "path", path = "QueryResponse.Thing", optional = true }
pagination = { style = "offset", size = 2, stop = { when = "short-page" } }
[resources.things.get]
path = "/one/{{ id }}"
records = { style = "path", path = "Thing" }
[resources.things.fields]
id = { type = "integer" }
MetaData = { type = "object", fields = { LastUpdatedTime = { type = "datetime", format = "rfc3339" } } }
"#,
    );
    let session = session(spec, &url, "query");
    let ctx = RequestContext {
        cursor: Some("2024-05-31T12:00:00Z".into()),
        ..session.context(BTreeMap::new())
    };
    let records = read_all(&session, "things", &ctx).await.unwrap();
    assert_eq!(ids(&records), [1, 2, 3, 4]);
    let queries: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.query["query"].clone())
        .collect();
    assert_eq!(
        queries,
        [
            "select * from Thing where MetaData.LastUpdatedTime > '2024-05-31T12:00:00Z' STARTPOSITION 1 MAXRESULTS 2",
            "select * from Thing where MetaData.LastUpdatedTime > '2024-05-31T12:00:00Z' STARTPOSITION 3 MAXRESULTS 2",
            "select * from Thing where MetaData.LastUpdatedTime > '2024-05-31T12:00:00Z' STARTPOSITION 5 MAXRESULTS 2",
        ],
        "the third page is empty (`QueryResponse` without records) and ends the list"
    );
    assert!(
        log.lock().unwrap().iter().all(|s| s.query.len() == 1),
        "no paging parameter besides the query text"
    );

    let get = RequestContext {
        id: Some("9".into()),
        ..session.context(BTreeMap::new())
    };
    let answer = session
        .call("things", OpKind::Get, &get, &[], &[], None)
        .await
        .unwrap();
    let file = session.spec().file();
    let records = weft_engine::extract::records(
        &answer.body,
        &file.resources["things"].get.as_ref().unwrap().records,
    )
    .unwrap();
    assert_eq!(records, [json!({"id": 9})], "one record given as an object");
}

/// Issue 15 item 2: a next-page URL is followed as given (its own query, the operation's
/// headers), and one on another host is refused before anything is sent there.
#[tokio::test]
async fn next_page_urls_are_followed_on_the_same_host_only() {
    let base = Arc::new(Mutex::new(String::new()));
    let shared = base.clone();
    let (url, log) = serve(Box::new(move |seen: &Seen, _| {
        let base = shared.lock().unwrap().clone();
        match seen.query.get("after").map(String::as_str) {
            None => (
                200,
                json!({"data": [{"id": 1}], "links": {"next": format!("{base}/v3/things?after=a1&limit=1")}}),
            ),
            Some("a1") => (
                200,
                json!({"data": [{"id": 2}], "links": {"next": "/v3/things?after=a2&limit=1"}}),
            ),
            Some("a2") => (
                200,
                json!({"data": [{"id": 3}], "links": {"next": "https://elsewhere.example/v3/things?after=a3"}}),
            ),
            _ => (200, json!({"data": []})),
        }
    }))
    .await;
    *base.lock().unwrap() = url.clone();
    let spec = spec(
        r#"
[resources.things]
primary-key = "id"
[resources.things.list]
path = "/v3/things"
query = { archived = "false" }
records = { style = "path", path = "data" }
pagination = { style = "next-url", next = "links.next", size-param = "limit", size = 1 }
"#,
    );
    let session = session(spec, &url, "next-url");
    let ctx = session.context(BTreeMap::new());
    let mut seen = Vec::new();
    let err = session
        .list("things", &ctx, |r| {
            seen.push(r);
            ControlFlow::Continue(())
        })
        .await
        .unwrap_err();
    assert_eq!(ids(&seen), [1, 2, 3]);
    assert!(
        matches!(
            &err,
            SessionError::Engine(EngineError::ForeignNextUrl { url, .. }) if url.starts_with("https://elsewhere.example/")
        ),
        "{err}"
    );
    let targets: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.target.clone())
        .collect();
    assert_eq!(
        targets,
        [
            "/v3/things?archived=false&limit=1",
            "/v3/things?after=a1&limit=1",
            "/v3/things?after=a2&limit=1",
        ]
    );
}

/// Issue 15 item 14 on tenants: the tenants of a grant are the records of the tenant
/// resource's list, so its `keep-if` drops the tenants a spec does not serve (Xero's practice
/// manager connections) wherever tenants are listed.
#[tokio::test]
async fn tenants_a_spec_does_not_serve_are_dropped_by_their_lists_keep_if() {
    let (url, _) = serve(Box::new(|_: &Seen, _| {
        (
            200,
            json!([
                {"id": 1, "tenantType": "ORGANISATION", "tenantName": "One"},
                {"id": 2, "tenantType": "PRACTICEMANAGER", "tenantName": "Practice"},
                {"id": 3, "tenantType": "ORGANISATION", "tenantName": "Three"}
            ]),
        )
    }))
    .await;
    let text = r#"
[tenants]
resource = "connections"
id-field = "id"
name-field = "tenantName"
select = { by = "choose" }
header = { name = "acme-org", value = "{{ tenant.id }}" }
[resources.connections]
primary-key = "id"
tenanted = false
[resources.connections.list]
path = "/connections"
records = { style = "root" }
pagination = { style = "none" }
keep-if = "record.tenantType != 'PRACTICEMANAGER'"
[resources.things]
primary-key = "id"
[resources.things.list]
path = "/things"
records = { style = "root" }
pagination = { style = "none" }
"#;
    let session = session(spec(text), &url, "tenants");
    let ctx = session.context(BTreeMap::new());
    let tenants = read_all(&session, "connections", &ctx).await.unwrap();
    assert_eq!(ids(&tenants), [1, 3]);
}

/// A record filter reads a field a record lacks as undefined, which counts as false; `default`
/// says what a missing field means instead. An expression that cannot be judged at all (an
/// attribute of a missing object) fails the read, saying so, rather than guessing.
#[tokio::test]
async fn a_record_filter_reads_a_missing_field_as_false_unless_given_a_default() {
    let (url, _) = serve(Box::new(|_: &Seen, _| {
        (
            200,
            json!([{"id": 1, "Active": false}, {"id": 2}, {"id": 3, "Active": true}]),
        )
    }))
    .await;
    let list = |keep: &str| {
        format!(
            r#"
[resources.things]
primary-key = "id"
[resources.things.list]
path = "/things"
records = {{ style = "root" }}
pagination = {{ style = "none" }}
keep-if = "{keep}"
"#
        )
    };
    let read = |keep: &str, name: &str| {
        let session = session(spec(&list(keep)), &url, name);
        async move {
            let ctx = session.context(BTreeMap::new());
            read_all(&session, "things", &ctx).await
        }
    };
    assert_eq!(ids(&read("record.Active", "f1").await.unwrap()), [3]);
    assert_eq!(
        ids(&read("record.Active | default(true)", "f2").await.unwrap()),
        [2, 3]
    );
    let err = read("record.Meta.Active", "f3").await.unwrap_err();
    assert!(
        matches!(&err, SessionError::Engine(EngineError::Filter { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("default"), "{err}");
}
