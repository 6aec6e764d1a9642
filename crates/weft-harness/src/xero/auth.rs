//! OAuth 2.0 as Xero runs it: the consent page on the login host, the token and revocation
//! endpoints on the identity host, and the connections (tenants) a consent creates.
//!
//! Tokens are opaque to the simulator's clients but JWT-shaped (`header.payload.signature`,
//! base64url, a fixed dummy signature) with Xero's claims, so a client can decode
//! `authentication_event_id` to pick the organisation it was just given.

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
use sha2::{Digest, Sha256};

use super::util::{json_response, mix, text_response, uuid};
use super::{Consent, Shared, lock};

/// How long an authorization code lives (simulated).
const CODE_TTL_MS: u64 = 5 * 60 * 1000;

/// Everything the identity side remembers.
pub(crate) struct AuthState {
    rng: fastrand::Rng,
    /// The answer the simulated user gives at the next consent.
    pub(crate) consent: Consent,
    user_id: String,
    user_sub: String,
    session_id: String,
    codes: HashMap<String, CodeGrant>,
    refresh: HashMap<String, RefreshEntry>,
    access: HashMap<String, AccessInfo>,
    /// The demo user's connections to organisations.
    pub(crate) connections: Vec<Connection>,
    /// Refresh-token grants received, and those answered with tokens.
    refresh_requests: u64,
    refreshed: u64,
    /// Refresh grants presenting a refresh token already used once (answered within the grace
    /// period or refused after it): a client that rotates tokens properly never sends one.
    reused: u64,
}

struct CodeGrant {
    client_id: String,
    redirect_uri: String,
    scopes: Vec<String>,
    challenge: Option<String>,
    auth_event: String,
    created_ms: u64,
    used: bool,
}

struct RefreshEntry {
    client_id: String,
    scopes: Vec<String>,
    auth_event: String,
    issued_ms: u64,
    /// When it was first used, and the refresh token that use produced.
    rotated: Option<(u64, String)>,
    revoked: bool,
}

/// What an access token grants.
#[derive(Clone)]
pub(crate) struct AccessInfo {
    pub(crate) exp_ms: u64,
    /// Client-credentials token ("custom connection"): bound to the first organisation.
    pub(crate) machine: bool,
}

/// One organisation connected to the app by the demo user.
#[derive(Clone)]
pub(crate) struct Connection {
    pub(crate) id: String,
    pub(crate) auth_event: String,
    pub(crate) tenant_id: String,
    pub(crate) tenant_name: String,
    pub(crate) created_ms: u64,
    pub(crate) updated_ms: u64,
}

impl AuthState {
    pub(crate) fn new(seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(mix(&[seed, 0xa07]));
        let user_id = uuid(&mut rng);
        let user_sub = format!("{:032x}", rng.u128(..));
        let session_id = format!("{:032x}", rng.u128(..));
        Self {
            rng,
            consent: Consent::Grant { tenants: vec![] },
            user_id,
            user_sub,
            session_id,
            codes: HashMap::new(),
            refresh: HashMap::new(),
            access: HashMap::new(),
            connections: Vec::new(),
            refresh_requests: 0,
            refreshed: 0,
            reused: 0,
        }
    }

    fn token_string(&mut self, len: usize) -> String {
        let bytes: Vec<u8> = (0..len).map(|_| self.rng.u8(..)).collect();
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Every access and refresh token issued so far.
    pub(crate) fn issued(&self) -> Vec<String> {
        self.access
            .keys()
            .chain(self.refresh.keys())
            .cloned()
            .collect()
    }

    /// How many refresh grants were answered with new tokens, and how many were refused.
    pub(crate) fn refresh_outcomes(&self) -> (u64, u64) {
        (self.refreshed, self.refresh_requests - self.refreshed)
    }

    /// How many refresh grants presented a refresh token already used once.
    pub(crate) fn refresh_reuses(&self) -> u64 {
        self.reused
    }

    /// The access token's grant, if it exists (expired or not).
    pub(crate) fn access(&self, token: &str) -> Option<AccessInfo> {
        self.access.get(token).cloned()
    }
}

pub(crate) fn login_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/identity/connect/authorize", get(authorize))
        .with_state(shared)
}

pub(crate) fn identity_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/connect/token", post(token))
        .route("/connect/revocation", post(revoke))
        .with_state(shared)
}

fn error_page(message: &str) -> Response<Body> {
    let html = format!(
        "<!DOCTYPE html><html><head><title>Xero | Error</title></head><body><h1>Sorry, something went wrong</h1><p>{message}</p></body></html>"
    );
    text_response(400, &html, "text/html; charset=utf-8")
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
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

fn with_query(uri: &str, pairs: &[(&str, &str)]) -> String {
    let mut out = uri.to_owned();
    for (i, (k, v)) in pairs.iter().enumerate() {
        let sep = if i == 0 && !uri.contains('?') {
            '?'
        } else {
            '&'
        };
        out.push(sep);
        out.push_str(k);
        out.push('=');
        out.push_str(&enc(v));
    }
    out
}

/// `GET /identity/connect/authorize`: the consent page, answered at once with the configured
/// [`Consent`].
async fn authorize(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Response<Body> {
    let Ok(Query(q)) = query else {
        return error_page("The request could not be read.");
    };
    let param = |k: &str| q.get(k).map(String::as_str).unwrap_or_default();
    if param("client_id") != shared.client_id {
        return error_page("unauthorized_client: Invalid client_id.");
    }
    let redirect_uri = param("redirect_uri");
    if !shared.redirect_uris.iter().any(|u| u == redirect_uri) {
        return error_page("Invalid redirect_uri.");
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
    let scopes: Vec<String> = param("scope")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if scopes.is_empty() {
        return back(&[("error", "invalid_scope")]);
    }
    let challenge = match (q.get("code_challenge"), param("code_challenge_method")) {
        (None, _) => None,
        (Some(c), "S256") if (43..=128).contains(&c.len()) => Some(c.clone()),
        (Some(_), _) => return back(&[("error", "invalid_request")]),
    };
    let now = shared.now_ms();
    let mut auth = lock(&shared.auth);
    let chosen: Vec<&super::Tenant> = match &auth.consent {
        Consent::Deny => return back(&[("error", "access_denied")]),
        Consent::Grant { tenants } if tenants.is_empty() => shared.tenants.iter().collect(),
        Consent::Grant { tenants } => shared
            .tenants
            .iter()
            .filter(|t| tenants.iter().any(|x| x.eq_ignore_ascii_case(&t.id)))
            .collect(),
    };
    let event = uuid(&mut auth.rng);
    for t in chosen {
        let existing = auth.connections.iter_mut().find(|c| c.tenant_id == t.id);
        match existing {
            Some(c) => {
                c.auth_event = event.clone();
                c.updated_ms = now;
            }
            None => {
                let id = uuid(&mut auth.rng);
                auth.connections.push(Connection {
                    id,
                    auth_event: event.clone(),
                    tenant_id: t.id.clone(),
                    tenant_name: t.name.clone(),
                    created_ms: now,
                    updated_ms: now,
                });
            }
        }
    }
    let code = auth.token_string(32);
    auth.codes.insert(
        code.clone(),
        CodeGrant {
            client_id: shared.client_id.clone(),
            redirect_uri: redirect_uri.to_owned(),
            scopes,
            challenge,
            auth_event: event,
            created_ms: now,
            used: false,
        },
    );
    drop(auth);
    back(&[("code", &code), ("scope", param("scope"))])
}

fn oauth_error(status: u16, error: &str) -> Response<Body> {
    json_response(status, &json!({ "error": error }))
}

/// Client id and secret from HTTP Basic or the form body.
fn client_auth(
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> (Option<String>, Option<String>) {
    if let Some(basic) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        && let Some((id, secret)) = STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned())))
    {
        return (Some(id), Some(secret));
    }
    (
        form.get("client_id").cloned(),
        form.get("client_secret").cloned(),
    )
}

fn parse_form(body: &[u8]) -> Option<HashMap<String, String>> {
    let pairs: Vec<(String, String)> = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
        &format!("/?{}", std::str::from_utf8(body).ok()?)
            .parse()
            .ok()?,
    )
    .ok()?
    .0;
    Some(pairs.into_iter().collect())
}

/// `POST /connect/token`.
async fn token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let Some(form) = parse_form(&body) else {
        return oauth_error(400, "invalid_request");
    };
    let (client_id, secret) = client_auth(&headers, &form);
    if client_id.as_deref() != Some(shared.client_id.as_str()) {
        return oauth_error(400, "invalid_client");
    }
    let secret_ok = secret.as_deref() == Some(shared.client_secret.as_str());
    if secret.is_some() && !secret_ok {
        return oauth_error(400, "invalid_client");
    }
    let now = shared.now_ms();
    let grant_type = form
        .get("grant_type")
        .map(String::as_str)
        .unwrap_or_default();
    let mut auth = lock(&shared.auth);
    match grant_type {
        "authorization_code" => {
            let code = form.get("code").map(String::as_str).unwrap_or_default();
            let Some(grant) = auth.codes.get_mut(code) else {
                return oauth_error(400, "invalid_grant");
            };
            if grant.used || now.saturating_sub(grant.created_ms) > CODE_TTL_MS {
                return oauth_error(400, "invalid_grant");
            }
            if form.get("redirect_uri").map(String::as_str) != Some(grant.redirect_uri.as_str()) {
                return oauth_error(400, "invalid_grant");
            }
            match (&grant.challenge, form.get("code_verifier")) {
                (Some(challenge), Some(verifier)) => {
                    let digest = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
                    if &digest != challenge {
                        return oauth_error(400, "invalid_grant");
                    }
                }
                (Some(_), None) => return oauth_error(400, "invalid_grant"),
                (None, _) if !secret_ok => return oauth_error(400, "invalid_client"),
                (None, _) => {}
            }
            grant.used = true;
            let client = grant.client_id.clone();
            let scopes = grant.scopes.clone();
            let event = grant.auth_event.clone();
            let answer = issue(
                &shared, &mut auth, &client, &scopes, &event, now, false, None,
            );
            json_response(200, &answer)
        }
        "refresh_token" => {
            auth.refresh_requests += 1;
            if !secret_ok {
                return oauth_error(400, "invalid_client");
            }
            let presented = form
                .get("refresh_token")
                .map(String::as_str)
                .unwrap_or_default();
            let grace_ms = shared.limits.refresh_grace_secs.saturating_mul(1000);
            let idle_ms = shared.limits.refresh_idle_days.saturating_mul(86_400_000);
            let Some(entry) = auth.refresh.get(presented) else {
                return oauth_error(400, "invalid_grant");
            };
            if entry.revoked || entry.client_id != shared.client_id {
                return oauth_error(400, "invalid_grant");
            }
            let (scopes, event) = (entry.scopes.clone(), entry.auth_event.clone());
            if entry.rotated.is_some() {
                auth.reused += 1;
            }
            let Some(entry) = auth.refresh.get(presented) else {
                return oauth_error(400, "invalid_grant");
            };
            let successor = match &entry.rotated {
                None if now.saturating_sub(entry.issued_ms) > idle_ms => {
                    return oauth_error(400, "invalid_grant");
                }
                None => None,
                Some((at, next)) if now.saturating_sub(*at) <= grace_ms => Some(next.clone()),
                Some(_) => return oauth_error(400, "invalid_grant"),
            };
            let client = shared.client_id.clone();
            let answer = issue(
                &shared,
                &mut auth,
                &client,
                &scopes,
                &event,
                now,
                false,
                successor.clone(),
            );
            if successor.is_none() {
                let next = answer["refresh_token"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if let Some(entry) = auth.refresh.get_mut(presented) {
                    entry.rotated = Some((now, next));
                }
            }
            auth.refreshed += 1;
            json_response(200, &answer)
        }
        "client_credentials" => {
            if !secret_ok {
                return oauth_error(400, "invalid_client");
            }
            let scopes: Vec<String> = form
                .get("scope")
                .map(|s| s.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_else(|| {
                    vec![
                        "accounting.transactions".to_owned(),
                        "accounting.contacts".to_owned(),
                        "accounting.settings".to_owned(),
                    ]
                });
            let event = uuid(&mut auth.rng);
            let client = shared.client_id.clone();
            let mut answer = issue(
                &shared, &mut auth, &client, &scopes, &event, now, true, None,
            );
            if let Some(map) = answer.as_object_mut() {
                map.remove("refresh_token");
                map.remove("id_token");
            }
            json_response(200, &answer)
        }
        "" => oauth_error(400, "invalid_request"),
        _ => oauth_error(400, "unsupported_grant_type"),
    }
}

fn jwt(claims: &Value, kid: &str) -> String {
    let header = json!({"alg": "RS256", "kid": kid, "typ": "JWT", "x5t": kid});
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(b"simulated-signature-not-verifiable")
    )
}

/// Issues an access token (and a refresh token when `offline_access` was granted; `reuse`
/// answers that one instead of a new one).
#[allow(clippy::too_many_arguments)]
fn issue(
    shared: &Shared,
    auth: &mut AuthState,
    client_id: &str,
    scopes: &[String],
    event: &str,
    now: u64,
    machine: bool,
    reuse: Option<String>,
) -> Value {
    let ttl = shared.limits.access_token_ttl_secs;
    let now_s = now / 1000;
    let jti = format!("{:032X}", auth.rng.u128(..));
    let mut claims = json!({
        "nbf": now_s,
        "exp": now_s + ttl,
        "iss": "https://identity.xero.com",
        "aud": "https://identity.xero.com/resources",
        "client_id": client_id,
        "scope": scopes,
        "jti": jti,
        "authentication_event_id": event,
    });
    if !machine {
        claims["sub"] = json!(auth.user_sub);
        claims["auth_time"] = json!(now_s);
        claims["xero_userid"] = json!(auth.user_id);
        claims["global_session_id"] = json!(auth.session_id);
    }
    let access = jwt(&claims, "1CAF8A4B1D8E4E2A");
    auth.access.insert(
        access.clone(),
        AccessInfo {
            exp_ms: now.saturating_add(ttl.saturating_mul(1000)),
            machine,
        },
    );
    let id_token = jwt(
        &json!({
            "nbf": now_s, "exp": now_s + 300, "iss": "https://identity.xero.com", "aud": client_id,
            "iat": now_s, "auth_time": now_s, "sub": auth.user_sub, "xero_userid": auth.user_id,
            "global_session_id": auth.session_id, "preferred_username": "demo@example.com",
            "email": "demo@example.com", "given_name": "Demo", "family_name": "User",
        }),
        "1CAF8A4B1D8E4E2A",
    );
    let mut answer = json!({
        "id_token": id_token,
        "access_token": access,
        "expires_in": ttl,
        "token_type": "Bearer",
        "scope": scopes.join(" "),
    });
    if !scopes.iter().any(|s| s == "openid")
        && let Some(m) = answer.as_object_mut()
    {
        m.remove("id_token");
    }
    if scopes.iter().any(|s| s == "offline_access") {
        let refresh = match reuse {
            Some(r) => r,
            None => {
                let r = auth.token_string(32);
                auth.refresh.insert(
                    r.clone(),
                    RefreshEntry {
                        client_id: client_id.to_owned(),
                        scopes: scopes.to_vec(),
                        auth_event: event.to_owned(),
                        issued_ms: now,
                        rotated: None,
                        revoked: false,
                    },
                );
                r
            }
        };
        answer["refresh_token"] = json!(refresh);
    }
    answer
}

/// `POST /connect/revocation`: revokes the refresh token (and every other one of the user for
/// this app) and removes all of the user's connections.
async fn revoke(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let Some(form) = parse_form(&body) else {
        return oauth_error(400, "invalid_request");
    };
    let (client_id, secret) = client_auth(&headers, &form);
    if client_id.as_deref() != Some(shared.client_id.as_str())
        || secret.as_deref() != Some(shared.client_secret.as_str())
    {
        return oauth_error(400, "invalid_client");
    }
    let token = form.get("token").map(String::as_str).unwrap_or_default();
    let mut auth = lock(&shared.auth);
    if auth.refresh.contains_key(token) {
        for entry in auth.refresh.values_mut() {
            entry.revoked = true;
        }
        auth.connections.clear();
    }
    text_response(200, "", "text/plain; charset=utf-8")
}

/// Whether the access token's holder is connected to `tenant`.
pub(crate) fn connected(
    shared: &Shared,
    auth: &AuthState,
    info: &AccessInfo,
    tenant: &str,
) -> bool {
    if info.machine {
        return shared
            .tenants
            .first()
            .is_some_and(|t| t.id.eq_ignore_ascii_case(tenant));
    }
    auth.connections
        .iter()
        .any(|c| c.tenant_id.eq_ignore_ascii_case(tenant))
}

/// The connections an access token sees, optionally only those of one consent.
pub(crate) fn connections_for(
    shared: &Shared,
    auth: &AuthState,
    info: &AccessInfo,
    event: Option<&str>,
) -> Vec<Connection> {
    if info.machine {
        return shared
            .tenants
            .first()
            .map(|t| Connection {
                id: super::util::indexed_id(&t.id[..24], 1),
                auth_event: String::new(),
                tenant_id: t.id.clone(),
                tenant_name: t.name.clone(),
                created_ms: 0,
                updated_ms: 0,
            })
            .into_iter()
            .collect();
    }
    auth.connections
        .iter()
        .filter(|c| event.is_none_or(|e| c.auth_event.eq_ignore_ascii_case(e)))
        .cloned()
        .collect()
}

/// Removes a connection by its id; false when there is none.
pub(crate) fn disconnect(auth: &mut AuthState, id: &str) -> bool {
    let before = auth.connections.len();
    auth.connections.retain(|c| !c.id.eq_ignore_ascii_case(id));
    auth.connections.len() != before
}
