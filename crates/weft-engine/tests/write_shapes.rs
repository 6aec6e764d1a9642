//! The write side of the spec language against a small local server (127.0.0.1): envelope
//! bodies with per-item templates, batch answers matched by key (an item id we sent, or a
//! property of the record) with failures shown by a fault object, the idempotency key as a query
//! parameter and as a template variable, constant fields merged into records, fields required
//! on update and refused on create, an update naming its record in the body, deletes, named
//! actions, and a sub-resource whose path carries its parent's id.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use weft_core::model::ErrorClass;
use weft_engine::http::CallError;
use weft_engine::limits::{Limiter, SystemClock};
use weft_engine::oauth::TokenSet;
use weft_engine::request::{Hosts, RequestContext};
use weft_engine::secrets::{MasterKey, Secret, SecretStore};
use weft_engine::session::{Session, SessionError};
use weft_engine::tokens::TokenKeeper;
use weft_engine::write::check_record;

use common::local::{Seen, Server};

const LEDGER: &str = r#"
id = "ledger"
name = "Ledger"
version = "1.0.0"

[hosts]
api = "https://api.example.com"

[auth.token]
value = "{{ fields.token }}"

[[fields]]
id = "token"
label = "Token"
secret = true
required = true

[[fields]]
id = "minor"
label = "Minor version"
default = "75"

[requests]
host = "api"

[test]
resource = "sales"

[resources.sales]
primary-key = "Id"

[resources.sales.fields.Id]
type = "string"
read-only = true

[resources.sales.fields.SyncToken]
type = "string"
required-on-update = true
update-only = true

[resources.sales.fields.Amount]
type = "money"
unit = "decimal"
required = true

[resources.sales.list]
path = "/sales"
records = { style = "path", path = "Sales" }
pagination = { style = "none" }

[resources.sales.create]
path = "/batch"
query = { minor = "{{ fields.minor }}" }
records = { style = "path", path = "BatchItemResponse" }
batch-size = 30
body = { shape = "envelope", key = "BatchItemRequest", item = { bId = "{{ index | string }}", operation = "{{ operation }}", Sale = "{{ record }}" } }
idempotency = { query = "requestid", max-length = 50 }
item-errors = { fault-field = "Fault", errors-field = "Fault.Error", message-field = "Message", id-field = "Sale.Id", match = { sent = "{{ index }}", returned = "bId" } }

[resources.sales.update]
method = "POST"
path = "/sale"
id-in-body = true
records = { style = "root" }
body = { shape = "bare" }
merge = { sparse = true }
idempotency = { query = "requestid", max-length = 50 }

[resources.sales.delete]
path = "/sales/{{ id }}"
records = { style = "root" }

[resources.sales.actions.void]
path = "/sale"
query = { operation = "void" }
id-in-body = true
records = { style = "root" }
body = { shape = "bare" }

[resources.sales.actions.approve]
method = "PUT"
path = "/sales/{{ id }}/approve"
headers = { "X-Request-Key" = "{{ idempotency_key }}" }
records = { style = "root" }
idempotency = { max-length = 40 }

[resources.sale_lines]
primary-key = "id"

[resources.sale_lines.create]
path = "/sales/{{ record.sale_id }}/lines"
records = { style = "root" }
body = { shape = "bare" }

[resources.people]
primary-key = "id"

[resources.people.create]
path = "/people/batch"
records = { style = "path", path = "results" }
batch-size = 100
body = { shape = "plural", key = "inputs" }
idempotency = { header = "Idempotency-Key", max-length = 64 }
item-errors = { errors-field = "errors", message-field = "message", match = { sent = "{{ record.properties.email }}", returned = "properties.email" }, separate-errors = { path = "errors", keys = "context.email" } }
"#;

fn session(server: &Server, dir_name: &str) -> (Session, std::path::PathBuf) {
    let report = weft_core::load_str("ledger.toml", LEDGER);
    assert!(report.diagnostics.is_empty(), "{}", report.render());
    let spec = report.spec.unwrap();
    let dir = std::env::temp_dir().join(format!("weft-{dir_name}-{}", std::process::id()));
    let mut store = SecretStore::open(
        &dir.join("credentials.json"),
        MasterKey::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap(),
    )
    .unwrap();
    store
        .put(
            "t",
            &TokenSet::fixed(Secret::new("token".to_owned()), 0).to_sealed_json(),
        )
        .unwrap();
    let http = weft_engine::http::client().unwrap();
    let clock = Arc::new(SystemClock);
    let keeper = TokenKeeper::new("l", "t", store, None, None, http.clone(), clock.clone());
    let hosts = Hosts::new(
        spec.file(),
        &BTreeMap::from([("api".to_owned(), server.url())]),
    )
    .unwrap();
    let limiter = Limiter::new(spec.file(), 1);
    (Session::new(spec, hosts, limiter, http, keeper, clock), dir)
}

fn query(seen: &Seen) -> BTreeMap<String, String> {
    let url = url::Url::parse(&format!("http://x{}", seen.uri)).unwrap();
    url.query_pairs().into_owned().collect()
}

/// A batch in per-item envelopes (`bId`, the operation, the record under its own key), the
/// idempotency key as `?requestid=`, and an answer that comes back in another order, leaves a
/// record out, and shows a failure by a `Fault` object: each record gets its own outcome,
/// matched by the `bId` it was sent with, its id read from `Sale.Id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_batch_is_answered_by_item_key_with_faults_and_a_query_key() {
    let server = Server::start();
    let (session, dir) = session(&server, "envelope");
    server.answer(
        200,
        json!({"BatchItemResponse": [
            {"bId": "2", "Sale": {"Id": "132", "Amount": "7.00"}},
            {"bId": "1", "Fault": {"type": "ValidationFault", "Error": [{"Message": "Amount must not be negative", "code": "6000"}]}}
        ]}),
    );
    let records = [
        json!({"Amount": "12.50"}),
        json!({"Amount": "-1.00"}),
        json!({"Amount": "7.00"}),
    ];
    let ctx = session.context(BTreeMap::new());
    let key = "weft-0123456789abcdef0123456789";
    let results = session
        .write("sales", "create", &ctx, &records, Some(key))
        .await
        .unwrap();
    let seen = server.last();
    assert_eq!(seen.method, "POST");
    let q = query(&seen);
    assert_eq!(q["requestid"], key, "the key rides in the query");
    assert_eq!(q["minor"], "75");
    assert_eq!(Server::header(&seen, "Idempotency-Key"), None);
    assert_eq!(
        seen.body,
        json!({"BatchItemRequest": [
            {"bId": "0", "operation": "create", "Sale": {"Amount": "12.50"}},
            {"bId": "1", "operation": "create", "Sale": {"Amount": "-1.00"}},
            {"bId": "2", "operation": "create", "Sale": {"Amount": "7.00"}}
        ]})
    );
    let statuses: Vec<_> = results.iter().map(|r| r.status).collect();
    assert_eq!(statuses, ["unknown", "failed", "ok"]);
    assert_eq!(results[1].errors, ["Amount must not be negative"]);
    assert_eq!(results[1].id, None);
    assert_eq!(results[2].id.as_deref(), Some("132"));
    std::fs::remove_dir_all(dir).ok();
}

/// Results that come back unordered are matched by a property the records were sent with
/// (`properties.email`); a failure listed apart in `errors[]`, naming its record in its
/// `context`, fails that record; the key rides in the header the operation names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unordered_results_are_matched_by_a_property_we_sent() {
    let server = Server::start();
    let (session, dir) = session(&server, "unordered");
    server.answer(
        207,
        json!({"status": "COMPLETE",
            "results": [
                {"id": "902", "properties": {"email": "b@example.com"}},
                {"id": "901", "properties": {"email": "a@example.com"}}
            ],
            "numErrors": 1,
            "errors": [{"status": "error", "category": "VALIDATION_ERROR",
                "message": "Property values were not valid", "context": {"email": ["c@example.com"]}}]}),
    );
    let records = [
        json!({"properties": {"email": "a@example.com"}}),
        json!({"properties": {"email": "b@example.com"}}),
        json!({"properties": {"email": "c@example.com"}}),
    ];
    let results = session
        .write(
            "people",
            "create",
            &session.context(BTreeMap::new()),
            &records,
            Some("weft-people-0000000000"),
        )
        .await
        .unwrap();
    let seen = server.last();
    assert_eq!(
        Server::header(&seen, "Idempotency-Key").as_deref(),
        Some("weft-people-0000000000")
    );
    assert_eq!(seen.body["inputs"].as_array().unwrap().len(), 3);
    let got: Vec<_> = results.iter().map(|r| (r.status, r.id.clone())).collect();
    assert_eq!(
        got,
        [
            ("ok", Some("901".to_owned())),
            ("ok", Some("902".to_owned())),
            ("failed", None)
        ]
    );
    assert_eq!(results[2].errors, ["Property values were not valid"]);
    std::fs::remove_dir_all(dir).ok();
}

/// A version token is refused on a create and required on an update; the update names its
/// record in the body (POST `/sale` with `Id` and `SyncToken`), with `sparse = true` merged in.
/// A stale token answered 409 is a `conflict`: the caller reads the record again before
/// writing on top of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_names_its_record_in_the_body_with_constants_merged() {
    let server = Server::start();
    let (session, dir) = session(&server, "update");
    let file = session.spec().file();
    let sales = &file.resources["sales"];
    assert_eq!(
        check_record(sales, &json!({"Amount": "1.00", "SyncToken": "0"}), true),
        ["`SyncToken` can only be sent on an update, never on a create"]
    );
    assert_eq!(
        check_record(sales, &json!({"Id": "7", "Amount": "1.00"}), false),
        ["`SyncToken` is required on an update"]
    );
    let record = json!({"Id": "7", "SyncToken": "3", "Amount": "20.00"});
    assert!(check_record(sales, &record, false).is_empty());

    server.answer(200, json!({"Id": "7", "SyncToken": "4", "Amount": "20.00"}));
    let ctx = RequestContext {
        id: Some("7".to_owned()),
        ..session.context(BTreeMap::new())
    };
    let results = session
        .write(
            "sales",
            "update",
            &ctx,
            std::slice::from_ref(&record),
            Some("weft-update-000000000000"),
        )
        .await
        .unwrap();
    let seen = server.last();
    assert_eq!(
        (seen.method.as_str(), seen.uri.split('?').next()),
        ("POST", Some("/sale"))
    );
    assert_eq!(
        seen.body,
        json!({"Id": "7", "SyncToken": "3", "Amount": "20.00", "sparse": true})
    );
    assert_eq!(query(&seen)["requestid"], "weft-update-000000000000");
    assert_eq!(results[0].status, "ok");
    assert_eq!(results[0].id.as_deref(), Some("7"));

    server.answer(
        409,
        json!({"Fault": {"Error": [{"Message": "Stale Object Error"}]}}),
    );
    let err = session
        .write(
            "sales",
            "update",
            &ctx,
            &[record],
            Some("weft-update-000000000001"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SessionError::Call(CallError::Refused {
                class: ErrorClass::Conflict,
                ..
            })
        ),
        "{err}"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// A delete (DELETE with the id in the path, answered 204), actions by name (a void that is a
/// POST with `?operation=void` and the record in the body; an approval that is a PUT on a path
/// with the id, its key only in a header template), and a line created under its sale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_actions_and_sub_resources() {
    let server = Server::start();
    let (session, dir) = session(&server, "actions");
    let base = session.context(BTreeMap::new());

    server.answer(204, Value::Null);
    let ctx = RequestContext {
        id: Some("7".to_owned()),
        ..base.clone()
    };
    let deleted = session
        .write("sales", "delete", &ctx, &[json!({"Id": "7"})], None)
        .await
        .unwrap();
    let seen = server.last();
    assert_eq!(
        (seen.method.as_str(), seen.uri.as_str()),
        ("DELETE", "/sales/7")
    );
    assert_eq!(seen.body, Value::Null, "no body");
    assert_eq!(
        (deleted[0].status, deleted[0].id.as_deref()),
        ("ok", Some("7"))
    );

    server.answer(200, json!({"Id": "8", "status": "Voided"}));
    let voided = session
        .action(
            "sales",
            "void",
            &base,
            "8",
            json!({"Id": "8", "SyncToken": "2"}),
            None,
        )
        .await
        .unwrap();
    let seen = server.last();
    assert_eq!(
        (seen.method.as_str(), seen.uri.as_str()),
        ("POST", "/sale?operation=void")
    );
    assert_eq!(seen.body, json!({"Id": "8", "SyncToken": "2"}));
    assert_eq!((voided.status, voided.id.as_deref()), ("ok", Some("8")));

    server.answer(204, Value::Null);
    let approved = session
        .action(
            "sales",
            "approve",
            &base,
            "9",
            json!({}),
            Some("weft-approve-0000000"),
        )
        .await
        .unwrap();
    let seen = server.last();
    assert_eq!(
        (seen.method.as_str(), seen.uri.as_str()),
        ("PUT", "/sales/9/approve")
    );
    assert_eq!(
        Server::header(&seen, "X-Request-Key").as_deref(),
        Some("weft-approve-0000000")
    );
    assert_eq!((approved.status, approved.id.as_deref()), ("ok", Some("9")));

    let err = session
        .action("sales", "refund", &base, "9", json!({}), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot `refund`"), "{err}");

    server.answer(201, json!({"id": "l1", "sale_id": "9", "text": "Hours"}));
    let line = session
        .write(
            "sale_lines",
            "create",
            &base,
            &[json!({"sale_id": "9", "text": "Hours"})],
            None,
        )
        .await
        .unwrap();
    let seen = server.last();
    assert_eq!(
        (seen.method.as_str(), seen.uri.as_str()),
        ("POST", "/sales/9/lines")
    );
    assert_eq!((line[0].status, line[0].id.as_deref()), ("ok", Some("l1")));
    std::fs::remove_dir_all(dir).ok();
}
