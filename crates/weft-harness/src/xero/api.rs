//! The API host: `/connections` and the Accounting API under `/api.xro/2.0`, with Xero's checks
//! in Xero's order: the access token (401), the tenant (403), the rate limits (429), then the
//! Idempotency-Key, then the call itself.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, Response, Uri};
use axum::routing::{any, delete, get};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::auth::{self, AccessInfo};
use super::data::{Kind, ListQuery, Org, Verb};
use super::query::{parse_order, parse_where};
use super::util::{
    bytes_response, exception, get_ci, iso_seven, json_response, mix, not_found, parse_client_date,
    problem, text_response,
};
use super::{Shared, lock, read, write as write_lock};

const MINUTE_MS: u64 = 60_000;
const DAY_MS: u64 = 86_400_000;

/// Calls counted against each limit.
#[derive(Default)]
pub(crate) struct RateState {
    tenants: HashMap<String, TenantRate>,
    app_minute: VecDeque<u64>,
}

#[derive(Default)]
struct TenantRate {
    in_flight: u32,
    minute: VecDeque<u64>,
    day: VecDeque<u64>,
}

/// An answer kept for an Idempotency-Key.
pub(crate) struct Stored {
    fingerprint: Vec<u8>,
    at_ms: u64,
    status: u16,
    body: Vec<u8>,
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/connections", get(connections))
        .route("/Connections", get(connections))
        .route("/connections/{id}", delete(disconnect))
        .route("/Connections/{id}", delete(disconnect))
        .route("/api.xro/2.0/{*rest}", any(accounting))
        .fallback(|| async { not_found() })
        .with_state(shared)
}

fn instance(shared: &Shared) -> String {
    let n = shared.envelope_counter.fetch_add(1, Ordering::Relaxed);
    let mut rng = fastrand::Rng::with_seed(mix(&[shared.seed, n, 0x1d]));
    super::util::uuid(&mut rng)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get("authorization")?.to_str().ok()?;
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .map(str::trim)
}

/// The token's grant, or the 401 Xero answers.
fn authenticate(
    shared: &Shared,
    headers: &HeaderMap,
    now: u64,
) -> Result<AccessInfo, Box<Response<Body>>> {
    let info = bearer(headers).and_then(|t| lock(&shared.auth).access(t));
    let Some(info) = info else {
        return Err(Box::new(problem(
            401,
            "Unauthorized",
            "AuthenticationUnsuccessful",
            &instance(shared),
        )));
    };
    if info.exp_ms <= now {
        let at = jiff::Timestamp::from_millisecond(i64::try_from(info.exp_ms).unwrap_or(i64::MAX))
            .map(|t| t.strftime("%m/%d/%Y %H:%M:%S").to_string())
            .unwrap_or_default();
        return Err(Box::new(problem(
            401,
            "Unauthorized",
            &format!("TokenExpired: token expired at {at}"),
            &instance(shared),
        )));
    }
    Ok(info)
}

fn set_header(r: &mut Response<Body>, name: &'static str, value: impl ToString) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        r.headers_mut().insert(name, v);
    }
}

fn prune(q: &mut VecDeque<u64>, now: u64, window: u64) {
    while q.front().is_some_and(|t| t + window <= now) {
        q.pop_front();
    }
}

fn retry_after(q: &VecDeque<u64>, now: u64, window: u64) -> u64 {
    q.front().map_or(1, |t| {
        (t + window).saturating_sub(now).div_ceil(1000).max(1)
    })
}

/// A call admitted by the limits; dropping it frees its concurrency slot.
struct Permit {
    shared: Arc<Shared>,
    tenant: String,
    day: u64,
    minute: u64,
    app: u64,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut rs = lock(&self.shared.rate);
        if let Some(t) = rs.tenants.get_mut(&self.tenant) {
            t.in_flight = t.in_flight.saturating_sub(1);
        }
    }
}

impl Permit {
    fn headers(&self, r: &mut Response<Body>) {
        set_header(r, "X-DayLimit-Remaining", self.day);
        set_header(r, "X-MinLimit-Remaining", self.minute);
        set_header(r, "X-AppMinLimit-Remaining", self.app);
    }
}

fn too_many(problem_name: &str, retry: u64, remaining: [(&'static str, u64); 3]) -> Response<Body> {
    let mut r = text_response(429, "Too Many Requests", "text/plain; charset=utf-8");
    set_header(&mut r, "Retry-After", retry);
    set_header(&mut r, "X-Rate-Limit-Problem", problem_name);
    for (name, v) in remaining {
        set_header(&mut r, name, v);
    }
    r
}

/// Admits a tenanted call or answers the 429.
fn admit(shared: &Arc<Shared>, tenant: &str, now: u64) -> Result<Permit, Box<Response<Body>>> {
    let l = &shared.limits;
    let mut guard = lock(&shared.rate);
    let rs = &mut *guard;
    prune(&mut rs.app_minute, now, MINUTE_MS);
    let t = rs.tenants.entry(tenant.to_owned()).or_default();
    prune(&mut t.minute, now, MINUTE_MS);
    prune(&mut t.day, now, DAY_MS);
    let left = |limit: u32, used: usize| u64::from(limit).saturating_sub(used as u64);
    let remaining = [
        ("X-DayLimit-Remaining", left(l.per_day, t.day.len())),
        ("X-MinLimit-Remaining", left(l.per_minute, t.minute.len())),
        (
            "X-AppMinLimit-Remaining",
            left(l.app_per_minute, rs.app_minute.len()),
        ),
    ];
    if t.in_flight >= l.concurrent {
        return Err(Box::new(too_many("concurrent", 1, remaining)));
    }
    if t.minute.len() >= l.per_minute as usize {
        return Err(Box::new(too_many(
            "minute",
            retry_after(&t.minute, now, MINUTE_MS),
            remaining,
        )));
    }
    if t.day.len() >= l.per_day as usize {
        return Err(Box::new(too_many(
            "day",
            retry_after(&t.day, now, DAY_MS),
            remaining,
        )));
    }
    if rs.app_minute.len() >= l.app_per_minute as usize {
        return Err(Box::new(too_many(
            "appminute",
            retry_after(&rs.app_minute, now, MINUTE_MS),
            remaining,
        )));
    }
    // Limits switched off (u32::MAX) are not recorded, so long benchmarks keep no history.
    if l.per_minute != u32::MAX {
        t.minute.push_back(now);
    }
    if l.per_day != u32::MAX {
        t.day.push_back(now);
    }
    if l.app_per_minute != u32::MAX {
        rs.app_minute.push_back(now);
    }
    t.in_flight += 1;
    let (day, minute) = (
        left(l.per_day, t.day.len()),
        left(l.per_minute, t.minute.len()),
    );
    let app = left(l.app_per_minute, rs.app_minute.len());
    Ok(Permit {
        shared: shared.clone(),
        tenant: tenant.to_owned(),
        day,
        minute,
        app,
    })
}

/// The app-wide minute limit alone, for the tenantless `/connections`.
fn admit_app(shared: &Shared, now: u64) -> Result<u64, Box<Response<Body>>> {
    let l = &shared.limits;
    let mut rs = lock(&shared.rate);
    prune(&mut rs.app_minute, now, MINUTE_MS);
    let used = rs.app_minute.len();
    if used >= l.app_per_minute as usize {
        let retry = retry_after(&rs.app_minute, now, MINUTE_MS);
        let mut r = too_many(
            "appminute",
            retry,
            [("X-AppMinLimit-Remaining", 0), ("", 0), ("", 0)],
        );
        r.headers_mut().remove("");
        return Err(Box::new(r));
    }
    if l.app_per_minute != u32::MAX {
        rs.app_minute.push_back(now);
    }
    Ok(u64::from(l.app_per_minute).saturating_sub(rs.app_minute.len() as u64))
}

/// Calls counted in the rolling day for a tenant.
pub(crate) fn calls_today(shared: &Shared, tenant: &str) -> usize {
    let now = shared.now_ms();
    let mut rs = lock(&shared.rate);
    rs.tenants.get_mut(tenant).map_or(0, |t| {
        prune(&mut t.day, now, DAY_MS);
        t.day.len()
    })
}

fn connection_json(c: &auth::Connection) -> Value {
    json!({
        "id": c.id,
        "authEventId": c.auth_event,
        "tenantId": c.tenant_id,
        "tenantType": "ORGANISATION",
        "tenantName": c.tenant_name,
        "createdDateUtc": iso_seven(c.created_ms),
        "updatedDateUtc": iso_seven(c.updated_ms),
    })
}

/// `GET /connections[?authEventId=]`.
async fn connections(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response<Body> {
    let now = shared.now_ms();
    let info = match authenticate(&shared, &headers, now) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    let remaining = match admit_app(&shared, now) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let event = q
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authEventId"))
        .map(|(_, v)| v.as_str());
    let list: Vec<Value> = {
        let a = lock(&shared.auth);
        auth::connections_for(&shared, &a, &info, event)
            .iter()
            .map(connection_json)
            .collect()
    };
    let mut r = json_response(200, &Value::Array(list));
    set_header(&mut r, "X-AppMinLimit-Remaining", remaining);
    r
}

/// `DELETE /connections/{id}`.
async fn disconnect(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response<Body> {
    let now = shared.now_ms();
    if let Err(r) = authenticate(&shared, &headers, now) {
        return *r;
    }
    let remaining = match admit_app(&shared, now) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let removed = auth::disconnect(&mut lock(&shared.auth), &id);
    let mut r = if removed {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = axum::http::StatusCode::NO_CONTENT;
        r
    } else {
        not_found()
    };
    set_header(&mut r, "X-AppMinLimit-Remaining", remaining);
    r
}

/// Everything under `/api.xro/2.0`.
async fn accounting(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let now = shared.now_ms();
    let info = match authenticate(&shared, &headers, now) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    let tenant = headers
        .get("xero-tenant-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .and_then(|t| shared.tenant(t));
    let Some(tenant) =
        tenant.filter(|t| auth::connected(&shared, &lock(&shared.auth), &info, &t.id))
    else {
        return problem(
            403,
            "Forbidden",
            "AuthenticationUnsuccessful",
            &instance(&shared),
        );
    };
    let tenant_id = tenant.id.clone();
    let permit = match admit(&shared, &tenant_id, now) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    if let Some(d) = shared.latency {
        shared.clock.sleep(d).await;
    }
    let mut response = handle(&shared, &tenant_id, &method, &uri, &headers, &body, now);
    permit.headers(&mut response);
    drop(permit);
    response
}

fn handle(
    shared: &Shared,
    tenant_id: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    now: u64,
) -> Response<Body> {
    let Some(tenant) = shared.tenant(tenant_id) else {
        return not_found();
    };
    let path = uri.path().strip_prefix("/api.xro/2.0/").unwrap_or_default();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let Some(resource) = segments.first() else {
        return not_found();
    };
    let params = Params(
        Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map(|q| q.0)
            .unwrap_or_default(),
    );
    let resource = resource.to_ascii_lowercase();
    if resource == "organisation" || resource == "organisations" {
        if method != Method::GET {
            return text_response(501, "Not implemented", "text/plain; charset=utf-8");
        }
        let org = read(&tenant.store);
        return match segments.get(1..).unwrap_or_default() {
            [] => envelope(shared, "Organisations", &[org.organisation()], None),
            [actions] if actions.eq_ignore_ascii_case("Actions") => {
                envelope(shared, "Actions", &org.actions(), None)
            }
            _ => not_found(),
        };
    }
    let Some(kind) = Kind::ALL
        .into_iter()
        .find(|k| k.plural().eq_ignore_ascii_case(&resource))
    else {
        return not_found();
    };
    if matches!(kind, Kind::Receipt | Kind::ExpenseClaim) && !read(&tenant.store).classic_expenses {
        return classic_expenses_refused();
    }
    let id = segments.get(1).copied();
    if kind == Kind::TrackingCategory
        && let Some(r) = tracking(shared, tenant, method, &segments, body)
    {
        return r;
    }
    if segments.len() > 2 {
        return not_found();
    }
    if *method == Method::GET {
        let org = read(&tenant.store);
        return match id {
            Some(id) => match org.get(kind, id) {
                Some(v) => envelope(shared, kind.plural(), &[v], None),
                None => not_found(),
            },
            None => list(shared, &org, kind, uri, headers, &params),
        };
    }
    let mut org = write_lock(&tenant.store);
    match *method {
        Method::PUT | Method::POST => {
            let verb = if *method == Method::PUT {
                Verb::Put
            } else {
                Verb::Post
            };
            let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok());
            let Some(key) = key else {
                return write(shared, &mut org, kind, verb, id, body, &params, now);
            };
            if key.chars().count() > 128 || key.is_empty() {
                return exception(
                    400,
                    "ValidationException",
                    "The Idempotency-Key header must be between 1 and 128 characters long.",
                );
            }
            let mut fp = Sha256::new();
            for part in [
                method.as_str(),
                uri.path(),
                uri.query().unwrap_or(""),
                tenant_id,
            ] {
                fp.update(part.as_bytes());
                fp.update([0]);
            }
            fp.update(body);
            let fingerprint = fp.finalize().to_vec();
            let store_key = format!("{}:{key}", shared.client_id);
            let window = shared.limits.idempotency_window_secs.saturating_mul(1000);
            {
                let stored = lock(&shared.idempotency);
                if let Some(s) = stored
                    .get(&store_key)
                    .filter(|s| now.saturating_sub(s.at_ms) < window)
                {
                    if s.fingerprint != fingerprint {
                        return exception(
                            400,
                            "ValidationException",
                            &format!("Idempotency Key {key} is used with a different request"),
                        );
                    }
                    return bytes_response(s.status, s.body.clone());
                }
            }
            let response = write(shared, &mut org, kind, verb, id, body, &params, now);
            let (parts, body) = response.into_parts();
            let bytes = body_bytes(body);
            lock(&shared.idempotency).insert(
                store_key,
                Stored {
                    fingerprint,
                    at_ms: now,
                    status: parts.status.as_u16(),
                    body: bytes.clone(),
                },
            );
            Response::from_parts(parts, Body::from(bytes))
        }
        // Xero deletes with DELETE only items (and accounts, tracking categories and a few
        // links the simulator does not serve): 204 with no body.
        Method::DELETE if kind == Kind::Item => match id {
            Some(id) if org.delete(kind, id) => {
                let mut r = Response::new(Body::empty());
                *r.status_mut() = axum::http::StatusCode::NO_CONTENT;
                r
            }
            Some(_) => not_found(),
            None => text_response(405, "Method not allowed", "text/plain; charset=utf-8"),
        },
        _ => text_response(405, "Method not allowed", "text/plain; charset=utf-8"),
    }
}

/// The answer to `/Receipts` and `/ExpenseClaims` for an organisation without classic expense
/// claims. Xero does not document it (unverified): the simulator answers 403 with the body of
/// Xero's other refusals (ErrorNumber, Type, Message), saying the feature is not available.
fn classic_expenses_refused() -> Response<Body> {
    json_response(
        403,
        &json!({
            "ErrorNumber": 403,
            "Type": "ForbiddenException",
            "Message": "Classic expense claims are not available to this organisation: Receipts and ExpenseClaims can only be used by organisations that used classic expense claims before July 2018.",
        }),
    )
}

/// The routes of tracking categories beyond the generic ones: deleting a category
/// (`DELETE /TrackingCategories/{id}`, answered with the category, status DELETED), and its
/// options (`PUT …/{id}/Options`, `POST|DELETE …/{id}/Options/{OptionID}`). None for the
/// generic routes.
fn tracking(
    shared: &Shared,
    tenant: &super::Tenant,
    method: &Method,
    segments: &[&str],
    body: &[u8],
) -> Option<Response<Body>> {
    let bad = |e: String| exception(10, "ValidationException", &e);
    match segments {
        [_, id] if *method == Method::DELETE => {
            let mut org = write_lock(&tenant.store);
            Some(match org.delete_tracking_category(id) {
                Some(c) => envelope(shared, "TrackingCategories", &[c], None),
                None => not_found(),
            })
        }
        [_, id, options, rest @ ..]
            if options.eq_ignore_ascii_case("Options") && rest.len() <= 1 =>
        {
            let option = rest.first().copied();
            if !matches!(
                (method, option),
                (&Method::PUT, None) | (&Method::POST | &Method::DELETE, Some(_))
            ) {
                return Some(text_response(
                    405,
                    "Method not allowed",
                    "text/plain; charset=utf-8",
                ));
            }
            let el = if *method == Method::DELETE {
                None
            } else {
                let parsed: Value = match serde_json::from_slice(body) {
                    Ok(v) => v,
                    Err(e) => {
                        return Some(exception(
                            14,
                            "PostDataInvalidException",
                            &format!("The request body could not be read as JSON: {e}"),
                        ));
                    }
                };
                // `{Name}` or `{Options: [{Name}]}` (one option per call).
                let el = match parsed.as_object().and_then(|m| get_ci(m, "Options")) {
                    Some(Value::Array(a)) if a.len() == 1 => a[0].clone(),
                    Some(_) => {
                        return Some(bad("Send one tracking option per request".to_owned()));
                    }
                    None => parsed,
                };
                match el {
                    Value::Object(m) => Some(m),
                    _ => return Some(bad("The tracking option must be a JSON object".to_owned())),
                }
            };
            let mut org = write_lock(&tenant.store);
            Some(match org.write_tracking_option(id, option, el.as_ref()) {
                Ok(o) => envelope(shared, "Options", &[o], None),
                Err(e) if e.contains("could not be found") => not_found(),
                Err(e) => bad(e),
            })
        }
        _ => None,
    }
}

/// The bytes of a body built from a `Vec<u8>` (every body the simulator builds itself).
fn body_bytes(body: Body) -> Vec<u8> {
    use futures_util::FutureExt;
    axum::body::to_bytes(body, usize::MAX)
        .now_or_never()
        .and_then(Result::ok)
        .map(|b| b.to_vec())
        .unwrap_or_default()
}

/// The success envelope with the records under `key`.
fn envelope(
    shared: &Shared,
    key: &str,
    records: &[Value],
    extra: Option<Map<String, Value>>,
) -> Response<Body> {
    let mut tail = extra.unwrap_or_default();
    tail.insert(key.to_owned(), Value::Array(records.to_vec()));
    let tail = serde_json::to_vec(&Value::Object(tail)).unwrap_or_default();
    bytes_response(200, with_head(shared, &tail))
}

/// Prefixes a serialized object (`{…}`) with the envelope's Id, Status, ProviderName and
/// DateTimeUTC.
fn with_head(shared: &Shared, tail: &[u8]) -> Vec<u8> {
    let head = format!(
        "{{\"Id\":\"{}\",\"Status\":\"OK\",\"ProviderName\":\"{}\",\"DateTimeUTC\":\"/Date({})/\"",
        instance(shared),
        shared.app_name,
        shared.now_ms()
    );
    let mut out = Vec::with_capacity(head.len() + tail.len() + 1);
    out.extend_from_slice(head.as_bytes());
    let rest = tail.get(1..).unwrap_or_default();
    if rest != b"}" {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    out
}

/// Query parameters, looked up case-insensitively.
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

fn list_query(kind: Kind, headers: &HeaderMap, params: &Params) -> Result<ListQuery, String> {
    let param = |k: &str| params.get(k);
    let paged = matches!(
        kind,
        Kind::Contact | Kind::Invoice | Kind::Payment | Kind::ManualJournal
    );
    let mut q = ListQuery {
        page_size: 100,
        ..ListQuery::default()
    };
    // Xero documents both for Contacts and Invoices only; elsewhere they are ignored.
    let summarized = matches!(kind, Kind::Contact | Kind::Invoice);
    q.summary_only =
        summarized && param("summaryOnly").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    q.search = param("searchTerm")
        .filter(|_| summarized)
        .map(|t| t.trim().to_lowercase())
        .filter(|t| !t.is_empty());
    if paged {
        if let Some(p) = param("page") {
            let n: i64 = p
                .trim()
                .parse()
                .map_err(|_| format!("'{p}' is not a page number"))?;
            q.page = Some(usize::try_from(n.max(1)).unwrap_or(1));
        }
        if let Some(s) = param("pageSize") {
            let n: i64 = s
                .trim()
                .parse()
                .map_err(|_| format!("'{s}' is not a page size"))?;
            q.page_size = usize::try_from(n.clamp(1, 1000)).unwrap_or(100);
        }
        // A summary is always paged.
        if q.summary_only && q.page.is_none() {
            q.page = Some(1);
        }
    }
    // Tax rates and tracking categories have no If-Modified-Since (nor a change time).
    if !matches!(kind, Kind::TaxRate | Kind::TrackingCategory)
        && let Some(h) = headers
            .get("if-modified-since")
            .and_then(|v| v.to_str().ok())
    {
        let ms = parse_client_date(h)
            .or_else(|| {
                jiff::fmt::rfc2822::parse(h)
                    .ok()
                    .map(|z| z.timestamp().as_millisecond())
            })
            .ok_or_else(|| format!("'{h}' is not a valid If-Modified-Since date"))?;
        q.since_ms = Some(u64::try_from(ms.max(0)).unwrap_or(0));
    }
    if let Some(w) = param("where").filter(|w| !w.trim().is_empty()) {
        q.filter = Some(parse_where(w)?);
    }
    if let Some(o) = param("order").filter(|o| !o.trim().is_empty()) {
        let keys = parse_order(o)?;
        // The default order needs no sorting.
        let default = keys.len() == 1
            && !keys[0].descending
            && o.split_whitespace()
                .next()
                .is_some_and(|f| f.eq_ignore_ascii_case("UpdatedDateUTC"));
        if !default {
            q.order = keys;
        }
    }
    let list = |k: &str| -> Vec<String> {
        param(k)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
    q.statuses = list("Statuses");
    q.ids = list("IDs");
    q.contact_ids = list("ContactIDs");
    q.numbers = list("InvoiceNumbers");
    q.include_archived = param("includeArchived").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    Ok(q)
}

fn list(
    shared: &Shared,
    org: &Org,
    kind: Kind,
    uri: &Uri,
    headers: &HeaderMap,
    params: &Params,
) -> Response<Body> {
    let since = headers
        .get("if-modified-since")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let cache_key = format!(
        "{}?{}|{since}",
        kind.plural(),
        uri.query().unwrap_or_default()
    );
    if let Some(tail) = lock(&org.cache).get(&cache_key).cloned() {
        return bytes_response(200, with_head(shared, &tail));
    }
    let q = match list_query(kind, headers, params) {
        Ok(q) => q,
        Err(e) => return exception(16, "QueryParseException", &e),
    };
    let (records, pagination) = match org.list(kind, &q) {
        Ok(r) => r,
        Err(e) => return exception(17, "ValidationException", &e),
    };
    // The object serde_json would write for {plural: [records…], pagination: {…}} (its keys
    // sorted: the plural is capitalised, so it comes first), from records already rendered.
    let mut tail = Vec::with_capacity(records.iter().map(|r| r.len() + 1).sum::<usize>() + 128);
    tail.extend_from_slice(b"{\"");
    tail.extend_from_slice(kind.plural().as_bytes());
    tail.extend_from_slice(b"\":[");
    for (n, r) in records.iter().enumerate() {
        if n > 0 {
            tail.push(b',');
        }
        tail.extend_from_slice(r);
    }
    tail.push(b']');
    if let Some(p) = pagination {
        tail.extend_from_slice(b",\"pagination\":");
        let p = json!({"page": p.page, "pageSize": p.page_size, "pageCount": p.page_count, "itemCount": p.item_count});
        tail.extend_from_slice(&serde_json::to_vec(&p).unwrap_or_default());
    }
    tail.push(b'}');
    let tail = Arc::new(tail);
    let response = bytes_response(200, with_head(shared, &tail));
    // The cache is per organisation and emptied by every change; it only saves re-rendering.
    // Inserted under the read lock, so no change can slip in between rendering and caching.
    let mut cache = lock(&org.cache);
    if cache.len() >= 1024 {
        cache.clear();
    }
    cache.insert(cache_key, tail);
    response
}

#[allow(clippy::too_many_arguments)]
fn write(
    shared: &Shared,
    org: &mut Org,
    kind: Kind,
    verb: Verb,
    path_id: Option<&str>,
    body: &[u8],
    params: &Params,
    now: u64,
) -> Response<Body> {
    if matches!(kind, Kind::Account | Kind::TaxRate | Kind::User) {
        return text_response(405, "Method not allowed", "text/plain; charset=utf-8");
    }
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return exception(
                14,
                "PostDataInvalidException",
                &format!("The request body could not be read as JSON: {e}"),
            );
        }
    };
    let plural = kind.plural();
    let elements: Vec<Value> = match &parsed {
        Value::Object(m) => match get_ci(m, plural) {
            Some(Value::Array(a)) => a.clone(),
            Some(v @ Value::Object(_)) => vec![v.clone()],
            Some(_) => {
                return exception(
                    14,
                    "PostDataInvalidException",
                    &format!("{plural} must be an array"),
                );
            }
            None => vec![parsed.clone()],
        },
        Value::Array(a) => a.clone(),
        _ => {
            return exception(
                14,
                "PostDataInvalidException",
                "The request body must be a JSON object",
            );
        }
    };
    if path_id.is_some() && elements.len() != 1 {
        return exception(
            14,
            "PostDataInvalidException",
            "A request to a single record must hold exactly one element",
        );
    }
    let param = |k: &str| params.get(k);
    let summarize = !param("summarizeErrors").is_some_and(|v| v.eq_ignore_ascii_case("false"));
    let unitdp4 = param("unitdp") == Some("4");
    let mut out = Vec::new();
    let mut failed = Vec::new();
    for el in &elements {
        match org.write(kind, verb, el, path_id, now, unitdp4) {
            Ok((mut record, warnings)) => {
                if !summarize {
                    record["StatusAttributeString"] =
                        json!(if warnings.is_empty() { "OK" } else { "WARNING" });
                }
                if !warnings.is_empty() {
                    record["Warnings"] = json!(
                        warnings
                            .iter()
                            .map(|w| json!({"Message": w}))
                            .collect::<Vec<_>>()
                    );
                }
                out.push(record);
            }
            Err(errors) => {
                let mut echoed = if el.is_object() {
                    el.clone()
                } else {
                    json!({})
                };
                echoed["ValidationErrors"] = json!(
                    errors
                        .iter()
                        .map(|m| json!({"Message": m}))
                        .collect::<Vec<_>>()
                );
                let flag = if kind == Kind::Invoice {
                    "HasErrors"
                } else {
                    "HasValidationErrors"
                };
                echoed[flag] = json!(true);
                if !summarize {
                    echoed["StatusAttributeString"] = json!("ERROR");
                    out.push(echoed);
                } else {
                    failed.push(echoed);
                }
            }
        }
    }
    if !failed.is_empty() {
        return json_response(
            400,
            &json!({
                "ErrorNumber": 10,
                "Type": "ValidationException",
                "Message": "A validation exception occurred",
                "Elements": failed,
            }),
        );
    }
    envelope(shared, plural, &out, None)
}
