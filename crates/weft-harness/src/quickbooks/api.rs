//! The API host: `/v3/company/{realmId}/…`, with QuickBooks' checks in its order: the access
//! token (the gateway's 401), the company the token was granted (403), the throttles (429), the
//! `minorversion`, the `requestid` (a repeat is answered with the stored answer), then the call:
//! queries, reads by id, creates, full and sparse updates, deletes, voids, the invoice's send, and
//! batches of up to 30 items.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Response, Uri};
use axum::routing::any;
use serde_json::{Value, json};

use super::query::parse;
use super::store::{Company, Kind, Op};
use super::util::{
    QbError, answer_time, bytes_response, fault, gateway, json_response, query_error, throttled,
    validation,
};
use super::{Shared, lock};

const MINUTE_MS: u64 = 60_000;
/// Most items in one batch.
pub(crate) const BATCH_MAX: usize = 30;

/// Calls counted against each throttle, per realm.
#[derive(Default)]
pub(crate) struct RateState {
    realms: HashMap<String, RealmRate>,
}

#[derive(Default)]
struct RealmRate {
    in_flight: u32,
    minute: VecDeque<u64>,
    batch_minute: VecDeque<u64>,
}

/// An answer kept for a `requestid`.
pub(crate) struct Stored {
    status: u16,
    body: Vec<u8>,
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v3/company/{realm}/{*rest}", any(company))
        .fallback(|| async {
            json_response(
                404,
                &json!({"Fault": {"Error": [{"Message": "Not Found", "Detail": "No such address", "code": "404"}], "type": "ValidationFault"}}),
            )
        })
        .with_state(shared)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get("authorization")?.to_str().ok()?;
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .map(str::trim)
}

fn prune(q: &mut VecDeque<u64>, now: u64) {
    while q.front().is_some_and(|t| t + MINUTE_MS <= now) {
        q.pop_front();
    }
}

/// A call admitted by the throttles; dropping it frees its place in flight.
struct Permit {
    shared: Arc<Shared>,
    realm: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(r) = lock(&self.shared.rate).realms.get_mut(&self.realm) {
            r.in_flight = r.in_flight.saturating_sub(1);
        }
    }
}

/// Admits a call to `realm` or answers the 429 (which is not counted).
fn admit(
    shared: &Arc<Shared>,
    realm: &str,
    batch: bool,
    now: u64,
) -> Result<Permit, Box<Response<Body>>> {
    let l = &shared.limits;
    let mut rates = lock(&shared.rate);
    let r = rates.realms.entry(realm.to_owned()).or_default();
    prune(&mut r.minute, now);
    prune(&mut r.batch_minute, now);
    if r.in_flight >= l.concurrent
        || r.minute.len() >= l.per_minute as usize
        || (batch && r.batch_minute.len() >= l.batch_per_minute as usize)
    {
        return Err(Box::new(throttled(now)));
    }
    r.in_flight += 1;
    if l.per_minute != u32::MAX {
        r.minute.push_back(now);
    }
    if batch && l.batch_per_minute != u32::MAX {
        r.batch_minute.push_back(now);
    }
    Ok(Permit {
        shared: shared.clone(),
        realm: realm.to_owned(),
    })
}

fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|q| q.0)
        .unwrap_or_default()
}

fn param<'q>(pairs: &'q [(String, String)], name: &str) -> Option<&'q str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Everything under `/v3/company/{realm}`.
async fn company(
    State(shared): State<Arc<Shared>>,
    method: Method,
    Path((realm, rest)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let now = shared.now_ms();
    let token = bearer(&headers).and_then(|t| lock(&shared.auth).access(t));
    let Some((granted, exp_ms)) = token else {
        return gateway(401, "3200", "AuthenticationFailed", "Token invalid", now);
    };
    if exp_ms <= now {
        return gateway(401, "3200", "AuthenticationFailed", "Token expired", now);
    }
    if granted != realm {
        return gateway(
            403,
            "3100",
            "AuthorizationFailed",
            "The app is not authorized to access this company",
            now,
        );
    }
    let Some(cell) = shared.companies.iter().find(|c| c.realm == realm) else {
        return gateway(403, "3100", "AuthorizationFailed", "No such company", now);
    };
    let batch = rest == "batch";
    let permit = match admit(&shared, &realm, batch, now) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    if let Some(d) = shared.latency {
        shared.clock.sleep(d).await;
    }
    let pairs = query_pairs(&uri);
    if let Some(minor) = param(&pairs, "minorversion")
        && (minor.is_empty() || !minor.bytes().all(|b| b.is_ascii_digit()))
    {
        return validation(
            &[QbError::new(
                "2010",
                "Request has invalid or unsupported property",
                format!("minorversion {minor} is not a version number"),
            )],
            now,
        );
    }
    let request_id = (method == Method::POST)
        .then(|| param(&pairs, "requestid"))
        .flatten()
        .map(str::to_owned);
    if let Some(id) = &request_id {
        let most = if batch { 36 } else { 50 };
        if id.chars().count() > most {
            return validation(
                &[QbError::new(
                    "2010",
                    "Request has invalid or unsupported property",
                    format!("requestid may be at most {most} characters here"),
                )],
                now,
            );
        }
        if let Some(stored) = lock(&shared.replies).get(&(realm.clone(), id.clone())) {
            return bytes_response(stored.status, stored.body.clone());
        }
    }
    let (status, answer) = {
        let mut store = lock(&cell.store);
        handle(
            &mut store,
            &method,
            &rest,
            &pairs,
            &body,
            request_id.is_some(),
            now,
        )
    };
    let bytes = serde_json::to_vec(&answer).unwrap_or_default();
    if let Some(id) = request_id
        && status < 500
    {
        lock(&shared.replies).insert(
            (realm, id),
            Stored {
                status,
                body: bytes.clone(),
            },
        );
    }
    drop(permit);
    bytes_response(status, bytes)
}

fn ok(key: &str, record: Value, now: u64) -> (u16, Value) {
    (200, json!({key: record, "time": answer_time(now)}))
}

fn refused(errors: &[QbError], now: u64) -> (u16, Value) {
    (
        400,
        json!({"Fault": fault(errors, "ValidationFault"), "time": answer_time(now)}),
    )
}

/// One call on a company: its status and JSON answer.
fn handle(
    c: &mut Company,
    method: &Method,
    rest: &str,
    pairs: &[(String, String)],
    body: &[u8],
    keyed: bool,
    now: u64,
) -> (u16, Value) {
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["query"]) | (&Method::POST, ["query"]) => {
            let text = if method == Method::GET {
                param(pairs, "query").unwrap_or_default().to_owned()
            } else {
                String::from_utf8_lossy(body).into_owned()
            };
            run_query(c, &text, now)
        }
        (&Method::GET, ["companyinfo", id]) => {
            if *id == c.realm {
                ok("CompanyInfo", c.info().clone(), now)
            } else {
                refused(&[QbError::not_found(&format!("CompanyInfo {id}"))], now)
            }
        }
        (&Method::GET, [entity, id]) => match Kind::from_path(entity) {
            Some(kind) => match c.get(kind, id) {
                Some(r) => ok(kind.name(), r.clone(), now),
                None => refused(&[QbError::not_found(&format!("{} {id}", kind.name()))], now),
            },
            None => unsupported(entity, now),
        },
        (&Method::POST, ["batch"]) => batch(c, body, keyed, now),
        (&Method::POST, ["invoice", id, "send"]) => match c.send(id, param(pairs, "sendTo"), now) {
            Ok(r) => ok("Invoice", r, now),
            Err(e) => refused(&e, now),
        },
        (&Method::POST, [entity]) => {
            let Some(kind) = Kind::from_path(entity) else {
                return unsupported(entity, now);
            };
            let Ok(record) = serde_json::from_slice::<Value>(body) else {
                return refused(
                    &[QbError::new(
                        "2010",
                        "Request has invalid or unsupported property",
                        "The body is not JSON",
                    )],
                    now,
                );
            };
            let op = match (param(pairs, "operation"), param(pairs, "include")) {
                (Some("delete"), _) => Op::Delete,
                (Some("void"), _) => Op::Void,
                (Some("update"), Some("void")) => Op::Void,
                (None | Some("update") | Some("create"), _) if record.get("Id").is_some() => {
                    Op::Update
                }
                (None | Some("create"), _) => Op::Create,
                (Some(other), _) => {
                    return refused(
                        &[QbError::new(
                            "500",
                            "Unsupported Operation",
                            format!("Operation {other} is not supported"),
                        )],
                        now,
                    );
                }
            };
            if op == Op::Void
                && kind == Kind::Payment
                && param(pairs, "operation") != Some("update")
            {
                return refused(
                    &[QbError::new(
                        "500",
                        "Unsupported Operation",
                        "A payment is voided by operation=update&include=void",
                    )],
                    now,
                );
            }
            match c.write(kind, op, &record, now) {
                Ok(r) => ok(kind.name(), r, now),
                Err(e) => refused(&e, now),
            }
        }
        _ => unsupported(rest, now),
    }
}

fn unsupported(what: &str, now: u64) -> (u16, Value) {
    refused(
        &[QbError::new(
            "500",
            "Unsupported Operation",
            format!("Operation {what} is not supported"),
        )],
        now,
    )
}

fn run_query(c: &Company, text: &str, now: u64) -> (u16, Value) {
    match parse(text).and_then(|s| c.query(&s)) {
        Ok(q) => (200, json!({"QueryResponse": q, "time": answer_time(now)})),
        Err(reason) => refused(&[query_error(&reason)], now),
    }
}

/// `POST /batch`: each item run in order, answered under its `bId` with its entity, its
/// `QueryResponse` or its `Fault`; what an item creates is invisible to the items after it.
fn batch(c: &mut Company, body: &[u8], keyed: bool, now: u64) -> (u16, Value) {
    let items = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|b| b.get("BatchItemRequest").and_then(Value::as_array).cloned());
    let Some(items) = items else {
        return refused(&[QbError::required("BatchItemRequest")], now);
    };
    if items.len() > BATCH_MAX {
        return refused(
            &[QbError::new(
                "1040",
                "Batch size exceeds allowed limit",
                format!(
                    "Batch size {} exceeds the limit of {BATCH_MAX}",
                    items.len()
                ),
            )],
            now,
        );
    }
    c.begin_batch();
    let answers: Vec<Value> = items
        .iter()
        .map(|item| batch_item(c, item, keyed, now))
        .collect();
    c.end_batch();
    (
        200,
        json!({"BatchItemResponse": answers, "time": answer_time(now)}),
    )
}

fn batch_item(c: &mut Company, item: &Value, keyed: bool, now: u64) -> Value {
    let bid = item.get("bId").and_then(Value::as_str).map(str::to_owned);
    let failed = |errors: &[QbError]| {
        let mut v = json!({"Fault": fault(errors, "ValidationFault")});
        if let Some(b) = &bid {
            v["bId"] = json!(b);
        }
        v
    };
    let Some(b) = bid.clone() else {
        return failed(&[QbError::required("bId")]);
    };
    if keyed && b.chars().count() > 10 {
        return failed(&[QbError::new(
            "2010",
            "Request has invalid or unsupported property",
            "With a requestid, a bId may be at most 10 characters",
        )]);
    }
    if let Some(q) = item.get("Query").and_then(Value::as_str) {
        return match parse(q).and_then(|s| c.query(&s)) {
            Ok(r) => json!({"bId": b, "QueryResponse": r}),
            Err(reason) => failed(&[query_error(&reason)]),
        };
    }
    let kinds: Vec<Kind> = item
        .as_object()
        .map(|m| m.keys().filter_map(|k| Kind::from_name(k)).collect())
        .unwrap_or_default();
    let [kind] = kinds.as_slice() else {
        return failed(&[QbError::new(
            "2010",
            "Request has invalid or unsupported property",
            "A batch item carries exactly one entity (or a Query)",
        )]);
    };
    let op = match (
        item.get("operation").and_then(Value::as_str),
        item.get("optionsData").and_then(Value::as_str),
    ) {
        (Some("create"), _) => Op::Create,
        (Some("update"), Some("void")) => Op::Void,
        (Some("update"), _) => Op::Update,
        (Some("delete"), _) => Op::Delete,
        (None, _) => return failed(&[QbError::required("operation")]),
        (Some(other), _) => {
            return failed(&[QbError::new(
                "500",
                "Unsupported Operation",
                format!("Operation {other} is not supported"),
            )]);
        }
    };
    match c.write(*kind, op, &item[kind.name()], now) {
        Ok(r) => json!({"bId": b, kind.name(): r}),
        Err(e) => failed(&e),
    }
}
