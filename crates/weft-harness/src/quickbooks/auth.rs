//! OAuth 2.0 as Intuit runs it: the consent page on the app center host (its redirect names the
//! company connected in `realmId`), and the token and revocation endpoints.
//!
//! Refresh tokens follow Intuit's rules: a refresh during the first 24 hours of a refresh token's
//! life answers the same refresh token; a later one answers a new one and the old one is dead at
//! once (no grace). A refresh token unused for 100 days, and any token of a grant older than five
//! years, is `invalid_grant`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Response};

use crate::server::redirect;
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use super::util::{html_response, json_response, mix};
use super::{Consent, Shared, lock};

/// The scope of the Accounting API.
pub(crate) const ACCOUNTING: &str = "com.intuit.quickbooks.accounting";
/// How long an authorization code lives (Intuit does not say; 5 minutes, as most providers).
const CODE_TTL_MS: u64 = 5 * 60 * 1000;
const DAY_MS: u64 = 86_400_000;

/// Everything the token service remembers.
pub(crate) struct AuthState {
    rng: fastrand::Rng,
    /// What the simulated administrator answers at the next consent.
    pub(crate) consent: Consent,
    codes: HashMap<String, Code>,
    grants: Vec<Grant>,
    refresh: HashMap<String, RefreshToken>,
    access: HashMap<String, Access>,
    refresh_requests: u64,
    refreshed: u64,
}

struct Code {
    redirect_uri: String,
    realm: String,
    created_ms: u64,
    used: bool,
}

/// One consent: a company connected to the app.
struct Grant {
    realm: String,
    consent_ms: u64,
    revoked: bool,
}

struct RefreshToken {
    grant: usize,
    issued_ms: u64,
    last_used_ms: u64,
    /// Replaced by a newer refresh token: dead.
    replaced: bool,
}

/// What an access token opens.
#[derive(Clone)]
pub(crate) struct Access {
    grant: usize,
    pub(crate) exp_ms: u64,
}

impl AuthState {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(mix(&[seed, 0x1a7])),
            consent: Consent::Grant { realm: None },
            codes: HashMap::new(),
            grants: Vec::new(),
            refresh: HashMap::new(),
            access: HashMap::new(),
            refresh_requests: 0,
            refreshed: 0,
        }
    }

    fn token(&mut self, prefix: &str, len: usize) -> String {
        let bytes: Vec<u8> = (0..len).map(|_| self.rng.u8(..)).collect();
        format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Every access and refresh token issued so far.
    pub(crate) fn issued(&self) -> Vec<String> {
        self.access
            .keys()
            .chain(self.refresh.keys())
            .cloned()
            .collect()
    }

    /// Refresh grants answered with tokens, and refused ones.
    pub(crate) fn refresh_outcomes(&self) -> (u64, u64) {
        (self.refreshed, self.refresh_requests - self.refreshed)
    }

    /// The realm an access token opens, and when it expires; `None` for an unknown token or a
    /// revoked grant.
    pub(crate) fn access(&self, token: &str) -> Option<(String, u64)> {
        let a = self.access.get(token)?;
        let g = self.grants.get(a.grant).filter(|g| !g.revoked)?;
        Some((g.realm.clone(), a.exp_ms))
    }
}

pub(crate) fn appcenter_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/connect/oauth2", get(authorize))
        .with_state(shared)
}

pub(crate) fn oauth_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/oauth2/v1/tokens/bearer", post(token))
        .route("/v2/oauth2/tokens/revoke", post(revoke))
        .with_state(shared)
}

fn error_page(message: &str) -> Response<Body> {
    html_response(
        400,
        format!(
            "<!DOCTYPE html><html><head><title>Intuit | Error</title></head><body><h1>Something went wrong</h1><p>{message}</p></body></html>"
        ),
    )
}

fn with_query(uri: &str, pairs: &[(&str, &str)]) -> String {
    let mut out = uri.to_owned();
    for (i, (k, v)) in pairs.iter().enumerate() {
        out.push(if i == 0 && !uri.contains('?') {
            '?'
        } else {
            '&'
        });
        out.push_str(k);
        out.push('=');
        out.push_str(&url_escape(v));
    }
    out
}

fn url_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET /connect/oauth2`: the consent page, answered at once with the configured [`Consent`].
async fn authorize(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Response<Body> {
    let Ok(Query(q)) = query else {
        return error_page("The request could not be read.");
    };
    let param = |k: &str| q.get(k).map(String::as_str).unwrap_or_default();
    if param("client_id") != shared.client_id {
        return error_page("The client_id is not valid.");
    }
    let redirect_uri = param("redirect_uri");
    if !shared.redirect_uris.iter().any(|u| u == redirect_uri) {
        return error_page(
            "The redirect_uri query parameter value is invalid. Make sure it is listed in the Redirect URIs section on your app's keys tab and matches it exactly.",
        );
    }
    let state = param("state");
    let back = |pairs: &[(&str, &str)]| {
        let mut pairs = pairs.to_vec();
        if !state.is_empty() {
            pairs.push(("state", state));
        }
        redirect(with_query(redirect_uri, &pairs))
    };
    if param("response_type") != "code" {
        return back(&[("error", "unsupported_response_type")]);
    }
    if !param("scope").split_whitespace().any(|s| s == ACCOUNTING) {
        return back(&[("error", "invalid_scope")]);
    }
    let now = shared.now_ms();
    let mut auth = lock(&shared.auth);
    let realm = match &auth.consent {
        Consent::Deny => return back(&[("error", "access_denied")]),
        Consent::Grant { realm: None } => shared.companies.first().map(|c| c.realm.clone()),
        Consent::Grant { realm: Some(r) } => shared
            .companies
            .iter()
            .find(|c| &c.realm == r)
            .map(|c| c.realm.clone()),
    };
    let Some(realm) = realm else {
        return error_page("There is no company to connect.");
    };
    let code = auth.token("AB11", 24);
    auth.codes.insert(
        code.clone(),
        Code {
            redirect_uri: redirect_uri.to_owned(),
            realm: realm.clone(),
            created_ms: now,
            used: false,
        },
    );
    drop(auth);
    back(&[("code", &code), ("realmId", &realm)])
}

fn oauth_error(status: u16, error: &str) -> Response<Body> {
    json_response(status, &json!({ "error": error }))
}

/// The client id and secret of HTTP Basic authentication (Intuit's token and revocation
/// endpoints take no other kind).
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get("authorization")?.to_str().ok()?;
    let encoded = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    // RFC 6749 §2.3.1: each part is form-encoded before the Basic encoding.
    Some((form_decode(id), form_decode(secret)))
}

fn client_ok(shared: &Shared, headers: &HeaderMap) -> bool {
    basic(headers)
        .is_some_and(|(id, secret)| id == shared.client_id && secret == shared.client_secret)
}

/// A form-encoded value decoded (`+` is a space, `%XX` a byte).
fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_form(body: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (form_decode(k), form_decode(v)),
            None => (form_decode(p), String::new()),
        })
        .collect()
}

/// `POST /oauth2/v1/tokens/bearer`.
async fn token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let form = parse_form(&body);
    if !client_ok(&shared, &headers) {
        return oauth_error(401, "invalid_client");
    }
    let now = shared.now_ms();
    let limits = &shared.limits;
    let mut auth = lock(&shared.auth);
    match form
        .get("grant_type")
        .map(String::as_str)
        .unwrap_or_default()
    {
        "authorization_code" => {
            let code = form.get("code").map(String::as_str).unwrap_or_default();
            let Some(grant) = auth.codes.get_mut(code) else {
                return oauth_error(400, "invalid_grant");
            };
            if grant.used
                || now.saturating_sub(grant.created_ms) > CODE_TTL_MS
                || form.get("redirect_uri") != Some(&grant.redirect_uri)
            {
                return oauth_error(400, "invalid_grant");
            }
            grant.used = true;
            let realm = grant.realm.clone();
            auth.grants.push(Grant {
                realm,
                consent_ms: now,
                revoked: false,
            });
            let index = auth.grants.len() - 1;
            let refresh = auth.token("RT1-", 32);
            auth.refresh.insert(
                refresh.clone(),
                RefreshToken {
                    grant: index,
                    issued_ms: now,
                    last_used_ms: now,
                    replaced: false,
                },
            );
            let answer = issue(&mut auth, limits, index, refresh, now);
            json_response(200, &answer)
        }
        "refresh_token" => {
            auth.refresh_requests += 1;
            let presented = form.get("refresh_token").cloned().unwrap_or_default();
            let idle_ms = limits.refresh_idle_days.saturating_mul(DAY_MS);
            let absolute_ms = limits.refresh_absolute_days.saturating_mul(DAY_MS);
            let rotate_ms = limits.refresh_rotate_after_secs.saturating_mul(1000);
            let Some(entry) = auth.refresh.get(&presented) else {
                return oauth_error(400, "invalid_grant");
            };
            let grant_index = entry.grant;
            let Some(grant) = auth.grants.get(grant_index) else {
                return oauth_error(400, "invalid_grant");
            };
            if entry.replaced
                || grant.revoked
                || now.saturating_sub(entry.last_used_ms) > idle_ms
                || now.saturating_sub(grant.consent_ms) > absolute_ms
            {
                return oauth_error(400, "invalid_grant");
            }
            let rotate = now.saturating_sub(entry.issued_ms) >= rotate_ms;
            let refresh = if rotate {
                if let Some(old) = auth.refresh.get_mut(&presented) {
                    old.replaced = true;
                }
                let next = auth.token("RT1-", 32);
                auth.refresh.insert(
                    next.clone(),
                    RefreshToken {
                        grant: grant_index,
                        issued_ms: now,
                        last_used_ms: now,
                        replaced: false,
                    },
                );
                next
            } else {
                if let Some(same) = auth.refresh.get_mut(&presented) {
                    same.last_used_ms = now;
                }
                presented
            };
            auth.refreshed += 1;
            let answer = issue(&mut auth, limits, grant_index, refresh, now);
            json_response(200, &answer)
        }
        "" => oauth_error(400, "invalid_request"),
        _ => oauth_error(400, "unsupported_grant_type"),
    }
}

/// A new access token for `grant`, answered with `refresh`.
fn issue(
    auth: &mut AuthState,
    limits: &super::QuickBooksLimits,
    grant: usize,
    refresh: String,
    now: u64,
) -> Value {
    let ttl = limits.access_token_ttl_secs;
    let access = auth.token("eyJ", 96);
    auth.access.insert(
        access.clone(),
        Access {
            grant,
            exp_ms: now.saturating_add(ttl.saturating_mul(1000)),
        },
    );
    let consent = auth.grants.get(grant).map_or(now, |g| g.consent_ms);
    let idle_left = limits.refresh_idle_days.saturating_mul(86_400);
    let hard_left =
        (consent + limits.refresh_absolute_days.saturating_mul(DAY_MS)).saturating_sub(now) / 1000;
    json!({
        "token_type": "bearer",
        "access_token": access,
        "expires_in": ttl,
        "refresh_token": refresh,
        "x_refresh_token_expires_in": idle_left.min(hard_left),
    })
}

/// `POST /v2/oauth2/tokens/revoke`: `{"token": …}` with Basic authentication; revoking either
/// token of a grant ends the whole grant (the app is disconnected from the company).
async fn revoke(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    if !client_ok(&shared, &headers) {
        return oauth_error(401, "invalid_client");
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return oauth_error(400, "invalid_request");
    };
    let Some(token) = body.get("token").and_then(Value::as_str) else {
        return oauth_error(400, "invalid_request");
    };
    let mut auth = lock(&shared.auth);
    let grant = auth
        .refresh
        .get(token)
        .map(|r| r.grant)
        .or_else(|| auth.access.get(token).map(|a| a.grant));
    if let Some(g) = grant.and_then(|g| auth.grants.get_mut(g)) {
        g.revoked = true;
    }
    json_response(200, &json!({}))
}
