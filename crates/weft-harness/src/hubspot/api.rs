//! The API host: HubSpot's checks in their order (the bearer token, its scope, the rate limits),
//! then the call: the account details, lists with their opaque cursor and absolute next link,
//! search with its filters, sorts, 200-record pages and 10,000-result cap, reads by id, single
//! writes and archives, batch create and update of up to 100 (results in no particular order,
//! 207 with `errors[]` for what was refused), owners, and the v4 associations batch read.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Response, Uri};
use axum::routing::any;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::auth::Caller;
use super::store::{Object, Portal, Refusal};
use super::util::{correlation, empty, error, instant, iso, json_response};
use super::{Shared, lock};

const TEN_SECONDS_MS: u64 = 10_000;
const SECOND_MS: u64 = 1_000;
const DAY_MS: u64 = 86_400_000;
/// Most inputs of one batch call.
pub(crate) const BATCH_MAX: usize = 100;
/// Most records of a list page and of a search page.
const LIST_MAX: usize = 100;
const SEARCH_MAX: usize = 200;
/// No search reaches past this many results.
pub(crate) const SEARCH_CAP: usize = 10_000;

/// Calls counted against each limit.
#[derive(Default)]
pub(crate) struct RateState {
    /// Per portal and app (`private` or `oauth`): the burst window and the search window.
    windows: HashMap<(u64, &'static str), Windows>,
    /// Per portal: the day (since 1970) and the private apps' calls on it.
    daily: HashMap<u64, (u64, u32)>,
}

#[derive(Default)]
struct Windows {
    burst: VecDeque<u64>,
    search: VecDeque<u64>,
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    super::auth::token_routes(shared.clone()).merge(
        Router::new()
            .route("/account-info/{*rest}", any(call))
            .route("/crm/{*rest}", any(call))
            .fallback(|| async {
                json_response(
                    404,
                    &json!({"status": "error", "message": "Not found", "category": "OBJECT_NOT_FOUND"}),
                )
            })
            .with_state(shared),
    )
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get("authorization")?.to_str().ok()?;
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .map(str::trim)
}

fn prune(q: &mut VecDeque<u64>, now: u64, window: u64) {
    while q.front().is_some_and(|t| t + window <= now) {
        q.pop_front();
    }
}

/// The rate-limit headers of an admitted call.
struct Admitted {
    headers: Vec<(&'static str, String)>,
}

/// Admits a call or answers HubSpot's 429 (which is not counted).
fn admit(
    shared: &Shared,
    caller: &Caller,
    search: bool,
    now: u64,
    n: u64,
) -> Result<Admitted, Box<Response<Body>>> {
    let l = &shared.limits;
    let mut rates = lock(&shared.rate);
    let app = if caller.private { "private" } else { "oauth" };
    let day = now / DAY_MS;
    let (daily_used, daily_left) = {
        let entry = rates.daily.entry(caller.portal).or_insert((day, 0));
        if entry.0 != day {
            *entry = (day, 0);
        }
        (entry.1, l.daily.saturating_sub(entry.1))
    };
    let w = rates.windows.entry((caller.portal, app)).or_default();
    prune(&mut w.burst, now, TEN_SECONDS_MS);
    prune(&mut w.search, now, SECOND_MS);
    let limited = |policy: &str, message: &str| {
        Box::new(json_response(
            429,
            &json!({
                "status": "error",
                "message": message,
                "errorType": "RATE_LIMIT",
                "correlationId": correlation(n),
                "policyName": policy,
                "requestId": correlation(n ^ 0x5a5a),
            }),
        ))
    };
    if caller.private && l.daily != u32::MAX && daily_left == 0 {
        return Err(limited("DAILY", "You have reached your daily limit."));
    }
    if search && l.search_per_second != u32::MAX && w.search.len() >= l.search_per_second as usize {
        return Err(limited("SECONDLY", "You have reached your secondly limit."));
    }
    if l.burst_per_10s != u32::MAX && w.burst.len() >= l.burst_per_10s as usize {
        return Err(limited(
            "TEN_SECONDLY_ROLLING",
            "You have reached your ten_secondly_rolling limit.",
        ));
    }
    if l.burst_per_10s != u32::MAX {
        w.burst.push_back(now);
    }
    if search && l.search_per_second != u32::MAX {
        w.search.push_back(now);
    }
    let burst_left = l.burst_per_10s.saturating_sub(w.burst.len() as u32);
    if caller.private && l.daily != u32::MAX {
        rates.daily.insert(caller.portal, (day, daily_used + 1));
    }
    let mut headers = Vec::new();
    // Search answers carry no rate-limit headers.
    if !search && l.burst_per_10s != u32::MAX {
        headers.push(("x-hubspot-ratelimit-max", l.burst_per_10s.to_string()));
        headers.push(("x-hubspot-ratelimit-remaining", burst_left.to_string()));
        headers.push((
            "x-hubspot-ratelimit-interval-milliseconds",
            TEN_SECONDS_MS.to_string(),
        ));
        if caller.private && l.daily != u32::MAX {
            headers.push(("x-hubspot-ratelimit-daily", l.daily.to_string()));
            headers.push((
                "x-hubspot-ratelimit-daily-remaining",
                daily_left.saturating_sub(1).to_string(),
            ));
        }
    }
    Ok(Admitted { headers })
}

fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

fn param<'q>(pairs: &'q [(String, String)], name: &str) -> Option<&'q str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A comma-separated list parameter (repeated parameters add to it).
fn list_param(pairs: &[(String, String)], name: &str) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, _)| k == name)
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// What a call is, for its scope and its limits.
enum Route {
    Account,
    List(Object),
    Search(Object),
    Get(Object, String),
    Create(Object),
    Patch(Object, String),
    Archive(Object, String),
    BatchCreate(Object),
    BatchUpdate(Object),
    BatchRead(Object),
    Owners,
    Owner(String),
    Associations(Object, Object),
}

impl Route {
    fn parse(method: &Method, path: &str) -> Option<Route> {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let object = |s: &str| Object::from_path(s);
        Some(match (method, segments.as_slice()) {
            (&Method::GET, ["account-info", "v3", "details"]) => Route::Account,
            (&Method::GET, ["crm", "v3", "owners"]) => Route::Owners,
            (&Method::GET, ["crm", "v3", "owners", id]) => Route::Owner((*id).to_owned()),
            (&Method::GET, ["crm", "v3", "objects", t]) => Route::List(object(t)?),
            (&Method::POST, ["crm", "v3", "objects", t]) => Route::Create(object(t)?),
            (&Method::POST, ["crm", "v3", "objects", t, "search"]) => Route::Search(object(t)?),
            (&Method::POST, ["crm", "v3", "objects", t, "batch", "create"]) => {
                Route::BatchCreate(object(t)?)
            }
            (&Method::POST, ["crm", "v3", "objects", t, "batch", "update"]) => {
                Route::BatchUpdate(object(t)?)
            }
            (&Method::POST, ["crm", "v3", "objects", t, "batch", "read"]) => {
                Route::BatchRead(object(t)?)
            }
            (&Method::GET, ["crm", "v3", "objects", t, id]) => {
                Route::Get(object(t)?, (*id).to_owned())
            }
            (&Method::PATCH, ["crm", "v3", "objects", t, id]) => {
                Route::Patch(object(t)?, (*id).to_owned())
            }
            (&Method::DELETE, ["crm", "v3", "objects", t, id]) => {
                Route::Archive(object(t)?, (*id).to_owned())
            }
            (&Method::POST, ["crm", "v4", "associations", from, to, "batch", "read"]) => {
                Route::Associations(object(from)?, object(to)?)
            }
            _ => return None,
        })
    }

    /// The scope the call needs.
    fn scope(&self) -> Option<String> {
        let read = |o: &Object| format!("crm.objects.{}.read", o.path());
        let write = |o: &Object| format!("crm.objects.{}.write", o.path());
        match self {
            Route::Account => None,
            Route::Owners | Route::Owner(_) => Some("crm.objects.owners.read".to_owned()),
            Route::List(o)
            | Route::Search(o)
            | Route::Get(o, _)
            | Route::BatchRead(o)
            | Route::Associations(o, _) => Some(read(o)),
            Route::Create(o)
            | Route::Patch(o, _)
            | Route::Archive(o, _)
            | Route::BatchCreate(o)
            | Route::BatchUpdate(o) => Some(write(o)),
        }
    }
}

/// Every call under `/crm` and `/account-info`.
async fn call(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let now = shared.now_ms();
    let (caller, n) = {
        let mut auth = lock(&shared.auth);
        let n = auth.next_serial();
        (bearer(&headers).and_then(|t| auth.caller(t)), n)
    };
    let Some(caller) = caller else {
        return error(
            401,
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
            Vec::new(),
            n,
        );
    };
    if let Some(exp) = caller.exp_ms
        && exp <= now
    {
        let minutes = (now - exp) / 60_000;
        return error(
            401,
            "EXPIRED_AUTHENTICATION",
            &format!("The OAuth token used to make this call expired {minutes} minute(s) ago."),
            Vec::new(),
            n,
        );
    }
    let Some(route) = Route::parse(&method, uri.path()) else {
        return error(
            404,
            "OBJECT_NOT_FOUND",
            &format!("No such endpoint: {method} {}", uri.path()),
            Vec::new(),
            n,
        );
    };
    if let Some(scope) = route.scope()
        && !caller.scopes.contains(&scope)
    {
        return error(
            403,
            "MISSING_SCOPES",
            "This app hasn't been granted all required scopes to make this call.",
            vec![
                json!({"message": "One or more of the following scopes are required.", "context": {"requiredScopes": [scope]}}),
            ],
            n,
        );
    }
    let search = matches!(route, Route::Search(_));
    let admitted = match admit(&shared, &caller, search, now, n) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    if let Some(d) = shared.latency {
        shared.clock.sleep(d).await;
    }
    let Some(cell) = shared.portals.iter().find(|p| p.id == caller.portal) else {
        return error(404, "OBJECT_NOT_FOUND", "No such account", Vec::new(), n);
    };
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned();
    let pairs = query_pairs(&uri);
    let mut response = {
        let mut portal = lock(&cell.store);
        let ctx = Ctx {
            pairs: &pairs,
            path: uri.path(),
            host: &host,
            now,
            n,
        };
        handle(&mut portal, &route, &ctx, &body)
    };
    for (name, value) in admitted.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, v);
        }
    }
    response
}

struct Ctx<'a> {
    pairs: &'a [(String, String)],
    path: &'a str,
    host: &'a str,
    now: u64,
    n: u64,
}

fn bad_request(message: &str, n: u64) -> Response<Body> {
    error(400, "VALIDATION_ERROR", message, Vec::new(), n)
}

fn refused(object: Object, refusal: &Refusal, n: u64) -> Response<Body> {
    match refusal {
        Refusal::Invalid(errors) => error(
            400,
            "VALIDATION_ERROR",
            &refusal.message(),
            errors
                .iter()
                .map(|(m, code, name)| json!({"message": m, "code": code, "context": {"propertyName": [name]}}))
                .collect(),
            n,
        ),
        Refusal::Conflict { message } => error(409, "CONFLICT", message, Vec::new(), n),
        Refusal::NotFound(id) => error(
            404,
            "OBJECT_NOT_FOUND",
            &format!("resource not found: no {} with id {id}", object.upper()),
            Vec::new(),
            n,
        ),
    }
}

fn handle(p: &mut Portal, route: &Route, ctx: &Ctx<'_>, body: &[u8]) -> Response<Body> {
    let n = ctx.n;
    let json_body = || serde_json::from_slice::<Value>(body).ok();
    match route {
        Route::Account => json_response(
            200,
            &json!({
                "portalId": p.id,
                "accountType": "STANDARD",
                "timeZone": p.time_zone,
                "companyCurrency": p.currency,
                "additionalCurrencies": [],
                "utcOffset": "+00:00",
                "utcOffsetMilliseconds": 0,
                "uiDomain": "app.hubspot.com",
                "dataHostingLocation": "na1",
            }),
        ),
        Route::List(object) => list(p, *object, ctx),
        Route::Search(object) => match json_body() {
            Some(b) => search(p, *object, &b, n),
            None => bad_request("Invalid input JSON: the body is not JSON", n),
        },
        Route::Get(object, id) => {
            let props = list_param(ctx.pairs, "properties");
            let assoc = associations_param(ctx.pairs);
            let archived = param(ctx.pairs, "archived") == Some("true");
            match p.get(*object, id).filter(|r| r.archived == archived) {
                Some(r) => json_response(200, &p.render(*object, r, Some(&props), &assoc)),
                None => refused(*object, &Refusal::NotFound(id.clone()), n),
            }
        }
        Route::Create(object) => {
            let Some(input) = json_body() else {
                return bad_request("Invalid input JSON: the body is not JSON", n);
            };
            match p.check_create(*object, &input, &BTreeSet::new()) {
                Ok((props, links)) => {
                    let id = p.create(*object, props, &links, ctx.now);
                    let rec = &p.records(*object)[&id];
                    let names: Vec<String> = rec.props.keys().cloned().collect();
                    json_response(201, &p.render(*object, rec, Some(&names), &[]))
                }
                Err(r) => refused(*object, &r, n),
            }
        }
        Route::Patch(object, id) => {
            let Some(input) = json_body() else {
                return bad_request("Invalid input JSON: the body is not JSON", n);
            };
            match p.check_update(*object, id, input.get("properties")) {
                Ok((id, props)) => {
                    p.update(*object, id, props, ctx.now);
                    let rec = &p.records(*object)[&id];
                    let names: Vec<String> = rec.props.keys().cloned().collect();
                    json_response(200, &p.render(*object, rec, Some(&names), &[]))
                }
                Err(r) => refused(*object, &r, n),
            }
        }
        Route::Archive(object, id) => {
            p.archive(*object, id, ctx.now);
            // HubSpot answers 204 whether or not the record was there.
            empty(204)
        }
        Route::BatchCreate(object) => match json_body() {
            Some(b) => batch_create(p, *object, &b, ctx),
            None => bad_request("Invalid input JSON: the body is not JSON", n),
        },
        Route::BatchUpdate(object) => match json_body() {
            Some(b) => batch_update(p, *object, &b, ctx),
            None => bad_request("Invalid input JSON: the body is not JSON", n),
        },
        Route::BatchRead(object) => match json_body() {
            Some(b) => batch_read(p, *object, &b, ctx),
            None => bad_request("Invalid input JSON: the body is not JSON", n),
        },
        Route::Owners => owners(p, ctx),
        Route::Owner(id) => match p.owners.iter().find(|o| o["id"] == json!(id)) {
            Some(o) => json_response(200, o),
            None => error(
                404,
                "OBJECT_NOT_FOUND",
                &format!("No owner with id {id}"),
                Vec::new(),
                n,
            ),
        },
        Route::Associations(from, to) => match json_body() {
            Some(b) => associations_read(p, *from, *to, &b, n),
            None => bad_request("Invalid input JSON: the body is not JSON", n),
        },
    }
}

fn associations_param(pairs: &[(String, String)]) -> Vec<Object> {
    list_param(pairs, "associations")
        .iter()
        .filter_map(|s| Object::from_path(s))
        .collect()
}

/// The page size asked for: `default` when absent, refused above `most`.
fn limit(pairs: &[(String, String)], default: usize, most: usize) -> Result<usize, String> {
    match param(pairs, "limit") {
        None => Ok(default),
        Some(v) => match v.trim().parse::<usize>() {
            Ok(0) => Err("limit must be at least 1".to_owned()),
            Ok(l) if l > most => Err(format!("limit may be at most {most}, got {l}")),
            Ok(l) => Ok(l),
            Err(_) => Err(format!("limit {v} is not a number")),
        },
    }
}

/// The opaque list cursor: base64 of the id the next page starts at.
fn cursor_of(id: u64) -> String {
    STANDARD.encode(id.to_string())
}

fn cursor_value(after: &str) -> Option<u64> {
    let bytes = STANDARD.decode(after.trim()).ok()?;
    String::from_utf8(bytes).ok()?.trim().parse().ok()
}

/// The absolute link of the next page: the same request with `after` replaced.
fn next_link(ctx: &Ctx<'_>, after: &str) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in ctx.pairs.iter().filter(|(k, _)| k != "after") {
        query.append_pair(k, v);
    }
    query.append_pair("after", after);
    format!("http://{}{}?{}", ctx.host, ctx.path, query.finish())
}

/// `GET /crm/v3/objects/{type}`: id order, `limit` up to 100, an opaque `after`.
fn list(p: &Portal, object: Object, ctx: &Ctx<'_>) -> Response<Body> {
    let n = ctx.n;
    let size = match limit(ctx.pairs, 10, LIST_MAX) {
        Ok(s) => s,
        Err(m) => return bad_request(&m, n),
    };
    let from = match param(ctx.pairs, "after") {
        None => 0,
        Some(a) => match cursor_value(a) {
            Some(id) => id,
            None => return bad_request(&format!("after {a} is not a valid paging cursor"), n),
        },
    };
    let archived = param(ctx.pairs, "archived") == Some("true");
    let props = list_param(ctx.pairs, "properties");
    let assoc = associations_param(ctx.pairs);
    let mut matching = p
        .records(object)
        .range(from..)
        .map(|(_, r)| r)
        .filter(|r| r.archived == archived);
    let page: Vec<Value> = matching
        .by_ref()
        .take(size)
        .map(|r| p.render(object, r, Some(&props), &assoc))
        .collect();
    let mut answer = json!({ "results": page });
    if let Some(next) = matching.next() {
        let after = cursor_of(next.id);
        answer["paging"] = json!({"next": {"after": after, "link": next_link(ctx, &after)}});
    }
    json_response(200, &answer)
}

/// `GET /crm/v3/owners/`: `limit` up to 500, an opaque `after`.
fn owners(p: &Portal, ctx: &Ctx<'_>) -> Response<Body> {
    let n = ctx.n;
    let size = match limit(ctx.pairs, 100, 500) {
        Ok(s) => s,
        Err(m) => return bad_request(&m, n),
    };
    let start = match param(ctx.pairs, "after") {
        None => 0,
        Some(a) => match cursor_value(a) {
            Some(i) => i as usize,
            None => return bad_request(&format!("after {a} is not a valid paging cursor"), n),
        },
    };
    let page: Vec<Value> = p.owners.iter().skip(start).take(size).cloned().collect();
    let mut answer = json!({ "results": page });
    if start + size < p.owners.len() {
        let after = cursor_of((start + size) as u64);
        answer["paging"] = json!({"next": {"after": after, "link": next_link(ctx, &after)}});
    }
    json_response(200, &answer)
}

/// Whether a property holds an instant (compared as instants).
fn is_time(property: &str) -> bool {
    matches!(
        property,
        "createdate" | "lastmodifieddate" | "hs_lastmodifieddate" | "closedate"
    )
}

/// A value as HubSpot compares it for its property's type: an instant, a number, or text
/// without regard to case.
#[derive(Debug, Clone, PartialEq)]
enum Key {
    Time(i64),
    Num(f64),
    Text(String),
}

impl Key {
    /// `text` as a value of `property`.
    fn of(property: &str, text: &str) -> Option<Key> {
        if is_time(property) {
            return instant(text).map(Key::Time);
        }
        match text.trim().parse::<f64>() {
            Ok(n) => Some(Key::Num(n)),
            Err(_) => Some(Key::Text(text.to_lowercase())),
        }
    }

    /// The record's value of `property` (its times from the record itself, not parsed again).
    fn of_record(rec: &super::store::Rec, property: &str) -> Option<Key> {
        let text = rec.props.get(property).filter(|v| !v.is_empty())?;
        match property {
            "lastmodifieddate" | "hs_lastmodifieddate" => {
                Some(Key::Time(i64::try_from(rec.updated_ms).unwrap_or(i64::MAX)))
            }
            "createdate" => Some(Key::Time(i64::try_from(rec.created_ms).unwrap_or(i64::MAX))),
            _ => Key::of(property, text),
        }
    }

    /// Values of different kinds do not compare.
    fn compare(&self, other: &Key) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (Key::Time(a), Key::Time(b)) => Some(a.cmp(b)),
            (Key::Num(a), Key::Num(b)) => a.partial_cmp(b),
            (Key::Text(a), Key::Text(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A checked filter, its values read once for the property's type.
struct Filter {
    property: String,
    operator: String,
    value: Option<Key>,
    values: Vec<Key>,
}

impl Filter {
    fn matches(&self, rec: &super::store::Rec) -> bool {
        use std::cmp::Ordering::{Equal, Greater, Less};
        let stored = Key::of_record(rec, &self.property);
        let cmp = |given: &Key| stored.as_ref().and_then(|s| s.compare(given));
        let one = || self.value.as_ref().and_then(cmp);
        match self.operator.as_str() {
            "HAS_PROPERTY" => stored.is_some(),
            "NOT_HAS_PROPERTY" => stored.is_none(),
            "EQ" => one() == Some(Equal),
            "NEQ" => one() != Some(Equal),
            "LT" => one() == Some(Less),
            "LTE" => matches!(one(), Some(Less | Equal)),
            "GT" => one() == Some(Greater),
            "GTE" => matches!(one(), Some(Greater | Equal)),
            "IN" => self.values.iter().any(|v| cmp(v) == Some(Equal)),
            "NOT_IN" => !self.values.iter().any(|v| cmp(v) == Some(Equal)),
            _ => false,
        }
    }
}

const OPERATORS: &[&str] = &[
    "EQ",
    "NEQ",
    "LT",
    "LTE",
    "GT",
    "GTE",
    "IN",
    "NOT_IN",
    "HAS_PROPERTY",
    "NOT_HAS_PROPERTY",
];

/// The filter groups of a search body, checked against HubSpot's caps.
fn filter_groups(body: &Value) -> Result<Vec<Vec<Filter>>, String> {
    let groups = match body.get("filterGroups") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(g)) => g,
        Some(_) => return Err("filterGroups must be a list".to_owned()),
    };
    if groups.len() > 5 {
        return Err(format!(
            "There can be at most 5 filterGroups; this search has {}",
            groups.len()
        ));
    }
    let mut total = 0;
    let mut out = Vec::new();
    for g in groups {
        let filters = g
            .get("filters")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if filters.len() > 10 {
            return Err(format!(
                "A filterGroup can have at most 10 filters; one has {}",
                filters.len()
            ));
        }
        total += filters.len();
        let mut group = Vec::new();
        for f in filters {
            let property = f
                .get("propertyName")
                .and_then(Value::as_str)
                .ok_or("each filter needs a propertyName")?
                .to_owned();
            let operator = f
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or("EQ")
                .to_owned();
            if !OPERATORS.contains(&operator.as_str()) {
                return Err(format!("operator {operator} is not supported"));
            }
            let value = f.get("value").and_then(text_of);
            let values: Vec<Key> = f
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(text_of)
                .filter_map(|v| Key::of(&property, &v))
                .collect();
            let needs_value = !matches!(
                operator.as_str(),
                "HAS_PROPERTY" | "NOT_HAS_PROPERTY" | "IN" | "NOT_IN"
            );
            if needs_value && value.is_none() {
                return Err(format!(
                    "the filter on {property} with {operator} needs a value"
                ));
            }
            let value = match value {
                Some(v) => match Key::of(&property, &v) {
                    Some(k) => Some(k),
                    None => {
                        return Err(format!(
                            "{v} is not a valid value for {property}: a date-time is epoch milliseconds or ISO 8601"
                        ));
                    }
                },
                None => None,
            };
            group.push(Filter {
                property,
                operator,
                value,
                values,
            });
        }
        out.push(group);
    }
    if total > 25 {
        return Err(format!(
            "A search can have at most 25 filters in all; this one has {total}"
        ));
    }
    Ok(out)
}

/// `POST /crm/v3/objects/{type}/search`.
fn search(p: &Portal, object: Object, body: &Value, n: u64) -> Response<Body> {
    let groups = match filter_groups(body) {
        Ok(g) => g,
        Err(m) => return bad_request(&m, n),
    };
    let size = match body.get("limit") {
        None | Some(Value::Null) => 10,
        Some(v) => match v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        {
            Some(0) => return bad_request("limit must be at least 1", n),
            Some(l) if l as usize > SEARCH_MAX => {
                return bad_request(&format!("limit may be at most {SEARCH_MAX}, got {l}"), n);
            }
            Some(l) => l as usize,
            None => return bad_request("limit must be a number", n),
        },
    };
    let offset = match body.get("after").and_then(text_of) {
        None => 0,
        Some(a) if a.is_empty() => 0,
        Some(a) => match a.trim().parse::<usize>() {
            Ok(o) => o,
            Err(_) => return bad_request(&format!("after {a} is not a valid paging cursor"), n),
        },
    };
    if offset >= SEARCH_CAP {
        return bad_request(
            &format!(
                "There was a problem with the request: a search can only page through its first {SEARCH_CAP} results (after {offset}). Narrow the filters, or sort by a property and search again from the last value seen."
            ),
            n,
        );
    }
    let sort = body
        .get("sorts")
        .and_then(Value::as_array)
        .and_then(|s| s.first())
        .map(|s| match s {
            Value::String(name) => (name.clone(), false),
            other => (
                other
                    .get("propertyName")
                    .and_then(Value::as_str)
                    .unwrap_or("hs_object_id")
                    .to_owned(),
                other.get("direction").and_then(Value::as_str) == Some("DESCENDING"),
            ),
        });
    let text = body
        .get("query")
        .and_then(Value::as_str)
        .map(str::to_lowercase);
    let mut found: Vec<&super::store::Rec> = p
        .records(object)
        .values()
        .filter(|r| !r.archived)
        .filter(|r| groups.is_empty() || groups.iter().any(|g| g.iter().all(|f| f.matches(r))))
        .filter(|r| {
            text.as_ref().is_none_or(|t| {
                r.props
                    .values()
                    .any(|v| v.to_lowercase().contains(t.as_str()))
            })
        })
        .collect();
    if let Some((property, descending)) = &sort {
        // Each record's sort value read once.
        let mut keyed: Vec<(Option<Key>, &super::store::Rec)> = found
            .into_iter()
            .map(|r| (Key::of_record(r, property), r))
            .collect();
        keyed.sort_by(|(x, a), (y, b)| {
            let order = match (x, y) {
                (Some(x), Some(y)) => x.compare(y).unwrap_or(std::cmp::Ordering::Equal),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            };
            let order = if *descending { order.reverse() } else { order };
            order.then(a.id.cmp(&b.id))
        });
        found = keyed.into_iter().map(|(_, r)| r).collect();
    }
    let properties: Vec<String> = body
        .get("properties")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let total = found.len();
    let end = (offset + size).min(total).min(SEARCH_CAP);
    let page: Vec<Value> = found
        .get(offset.min(total)..end)
        .unwrap_or_default()
        .iter()
        .map(|r| p.render(object, r, Some(&properties), &[]))
        .collect();
    let mut answer = json!({ "total": total, "results": page });
    if end < total {
        answer["paging"] =
            json!({"next": {"after": end.to_string(), "link": format!("?after={end}")}});
    }
    json_response(200, &answer)
}

/// The inputs of a batch body, refused when missing or above 100.
fn inputs(body: &Value, n: u64) -> Result<Vec<Value>, Box<Response<Body>>> {
    let Some(list) = body.get("inputs").and_then(Value::as_array) else {
        return Err(Box::new(bad_request("inputs must be a list", n)));
    };
    if list.len() > BATCH_MAX {
        return Err(Box::new(bad_request(
            &format!(
                "Batch size exceeds the limit: at most {BATCH_MAX} inputs, got {}",
                list.len()
            ),
            n,
        )));
    }
    Ok(list.clone())
}

fn batch_answer(status: u16, results: Vec<Value>, errors: Vec<Value>, now: u64) -> Response<Body> {
    // HubSpot gives results in no particular order; the simulator reverses them, so a client
    // that pairs them with its inputs by position gets them wrong every time.
    let mut results = results;
    results.reverse();
    let mut answer = json!({
        "status": "COMPLETE",
        "results": results,
        "requestedAt": iso(now),
        "startedAt": iso(now),
        "completedAt": iso(now),
    });
    if !errors.is_empty() {
        answer["numErrors"] = json!(errors.len());
        answer["errors"] = Value::Array(errors);
    }
    json_response(status, &answer)
}

fn item_error(object: Object, refusal: &Refusal, context: Value) -> Value {
    let (category, details) = match refusal {
        Refusal::Invalid(errors) => (
            "VALIDATION_ERROR",
            errors
                .iter()
                .map(|(m, code, name)| json!({"message": m, "code": code, "context": {"propertyName": [name]}}))
                .collect(),
        ),
        Refusal::Conflict { .. } => ("CONFLICT", Vec::new()),
        Refusal::NotFound(_) => ("OBJECT_NOT_FOUND", Vec::new()),
    };
    let message = match refusal {
        Refusal::NotFound(_) => format!(
            "Could not get some {} objects, they may be deleted or not exist. Check that ids are valid.",
            object.upper()
        ),
        other => other.message(),
    };
    let mut e =
        json!({"status": "error", "category": category, "message": message, "context": context});
    if !Vec::<Value>::is_empty(&details) {
        e["errors"] = Value::Array(details);
    }
    e
}

/// `POST /crm/v3/objects/{type}/batch/create`. With an `objectWriteTraceId` on every input, each
/// input stands alone (207 naming the refused ones); without, one refusal refuses the batch.
fn batch_create(p: &mut Portal, object: Object, body: &Value, ctx: &Ctx<'_>) -> Response<Body> {
    let n = ctx.n;
    let list = match inputs(body, n) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let traced = !list.is_empty()
        && list
            .iter()
            .all(|i| i.get("objectWriteTraceId").and_then(text_of).is_some());
    let mut taken = BTreeSet::new();
    let mut checked = Vec::new();
    for input in &list {
        let outcome = p.check_create(object, input, &taken);
        if let Ok((props, _)) = &outcome
            && let Some(email) = props.get("email")
        {
            taken.insert(email.clone());
        }
        if !traced && let Err(r) = &outcome {
            return refused(object, r, n);
        }
        checked.push(outcome);
    }
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for (input, outcome) in list.iter().zip(checked) {
        let trace = input.get("objectWriteTraceId").and_then(text_of);
        match outcome {
            Ok((props, links)) => {
                let id = p.create(object, props, &links, ctx.now);
                let rec = &p.records(object)[&id];
                let names: Vec<String> = rec.props.keys().cloned().collect();
                let mut v = p.render(object, rec, Some(&names), &[]);
                if let Some(t) = trace {
                    v["objectWriteTraceId"] = json!(t);
                }
                results.push(v);
            }
            Err(r) => errors.push(item_error(
                object,
                &r,
                json!({"objectWriteTraceId": [trace.unwrap_or_default()]}),
            )),
        }
    }
    let status = if errors.is_empty() { 201 } else { 207 };
    batch_answer(status, results, errors, ctx.now)
}

/// `POST /crm/v3/objects/{type}/batch/update`: ids that do not exist are listed in `errors[]`
/// (207) while the others change; invalid values or a taken e-mail refuse the whole batch.
fn batch_update(p: &mut Portal, object: Object, body: &Value, ctx: &Ctx<'_>) -> Response<Body> {
    let n = ctx.n;
    let list = match inputs(body, n) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let mut missing = Vec::new();
    let mut changes = Vec::new();
    let mut emails = BTreeSet::new();
    for input in &list {
        let id = input.get("id").and_then(text_of).unwrap_or_default();
        match p.check_update(object, &id, input.get("properties")) {
            Ok((id, props)) => {
                if let Some(email) = props.get("email").filter(|e| !e.is_empty())
                    && !emails.insert(email.clone())
                {
                    return refused(
                        object,
                        &Refusal::Conflict {
                            message: format!("Duplicate email in the batch: {email}"),
                        },
                        n,
                    );
                }
                changes.push((id, props));
            }
            Err(Refusal::NotFound(id)) => missing.push(id),
            Err(other) => return refused(object, &other, n),
        }
    }
    let mut results = Vec::new();
    for (id, props) in changes {
        p.update(object, id, props, ctx.now);
        let rec = &p.records(object)[&id];
        let names: Vec<String> = rec.props.keys().cloned().collect();
        results.push(p.render(object, rec, Some(&names), &[]));
    }
    let mut errors = Vec::new();
    if !missing.is_empty() {
        errors.push(item_error(
            object,
            &Refusal::NotFound(String::new()),
            json!({ "ids": missing }),
        ));
    }
    let status = if errors.is_empty() { 200 } else { 207 };
    batch_answer(status, results, errors, ctx.now)
}

/// `POST /crm/v3/objects/{type}/batch/read`: by id, the missing ones listed in `errors[]`.
fn batch_read(p: &Portal, object: Object, body: &Value, ctx: &Ctx<'_>) -> Response<Body> {
    let n = ctx.n;
    let list = match inputs(body, n) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let properties: Vec<String> = body
        .get("properties")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let mut results = Vec::new();
    let mut missing = Vec::new();
    for input in &list {
        let id = input.get("id").and_then(text_of).unwrap_or_default();
        match p.get(object, &id).filter(|r| !r.archived) {
            Some(r) => results.push(p.render(object, r, Some(&properties), &[])),
            None => missing.push(id),
        }
    }
    let mut errors = Vec::new();
    if !missing.is_empty() {
        errors.push(item_error(
            object,
            &Refusal::NotFound(String::new()),
            json!({ "ids": missing }),
        ));
    }
    let status = if errors.is_empty() { 200 } else { 207 };
    batch_answer(status, results, errors, ctx.now)
}

/// `POST /crm/v4/associations/{from}/{to}/batch/read`.
fn associations_read(p: &Portal, from: Object, to: Object, body: &Value, n: u64) -> Response<Body> {
    let list = match inputs(body, n) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let type_id = super::store::association_type(from, to);
    let mut results = Vec::new();
    for input in &list {
        let id = input.get("id").and_then(text_of).unwrap_or_default();
        let Some(rec) = p.get(from, &id).filter(|r| !r.archived) else {
            continue;
        };
        let targets: Vec<Value> = rec
            .assoc
            .get(&to)
            .into_iter()
            .flatten()
            .map(|t| {
                json!({"toObjectId": t, "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": type_id, "label": null}]})
            })
            .collect();
        if !targets.is_empty() {
            results.push(json!({"from": {"id": rec.id.to_string()}, "to": targets}));
        }
    }
    json_response(200, &json!({"status": "COMPLETE", "results": results}))
}
