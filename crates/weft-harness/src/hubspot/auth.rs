//! OAuth 2.0 as HubSpot runs it: the install (consent) page on the app host, and on the API host
//! the token endpoint (client credentials in the form body; access tokens of 30 minutes; a
//! refresh token that never changes and never expires), the token information endpoint, and the
//! refresh token's deletion (`DELETE /oauth/v1/refresh-tokens/{token}`), which leaves access
//! tokens already issued working until they expire. Private-app tokens are issued per portal
//! when the simulator starts.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::Response;

use crate::server::redirect;
use axum::routing::{delete, get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::util::{correlation, empty, html_response, json_response, mix};
use super::{Consent, Shared, lock};

/// Every scope the simulated app may ask for.
pub(crate) const SCOPES: &[&str] = &[
    "oauth",
    "crm.objects.contacts.read",
    "crm.objects.contacts.write",
    "crm.objects.companies.read",
    "crm.objects.companies.write",
    "crm.objects.deals.read",
    "crm.objects.deals.write",
    "crm.objects.line_items.read",
    "crm.objects.line_items.write",
    "crm.objects.owners.read",
];
/// How long an authorization code lives (HubSpot does not say; 5 minutes, as most providers).
const CODE_TTL_MS: u64 = 5 * 60 * 1000;

/// Everything the token service remembers.
pub(crate) struct AuthState {
    rng: fastrand::Rng,
    /// What the simulated person answers at the next install.
    pub(crate) consent: Consent,
    codes: HashMap<String, Code>,
    grants: Vec<Grant>,
    refresh: HashMap<String, usize>,
    access: HashMap<String, Access>,
    /// Private-app tokens: token → portal.
    pub(crate) private: HashMap<String, u64>,
    serial: u64,
}

struct Code {
    redirect_uri: String,
    portal: u64,
    scopes: Vec<String>,
    created_ms: u64,
    used: bool,
}

/// One install of the app into a portal.
struct Grant {
    portal: u64,
    scopes: Vec<String>,
    /// The refresh token was deleted, or the app uninstalled.
    dead: bool,
}

/// What an access token opens.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    grant: usize,
    pub(crate) exp_ms: u64,
}

/// Who a bearer token is: the portal, its scopes (all of them for a private app), when it
/// expires (never for a private app), and whether it is a private app's.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) portal: u64,
    pub(crate) scopes: Vec<String>,
    pub(crate) exp_ms: Option<u64>,
    pub(crate) private: bool,
}

impl AuthState {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(mix(&[seed, 0x4b5])),
            consent: Consent::Grant { portal: None },
            codes: HashMap::new(),
            grants: Vec::new(),
            refresh: HashMap::new(),
            access: HashMap::new(),
            private: HashMap::new(),
            serial: 0,
        }
    }

    fn token(&mut self, prefix: &str, len: usize) -> String {
        let bytes: Vec<u8> = (0..len).map(|_| self.rng.u8(..)).collect();
        format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// A private app token for `portal`, shaped as HubSpot's (`pat-na1-` and a UUID).
    pub(crate) fn issue_private(&mut self, portal: u64) -> String {
        let a = self.rng.u64(..);
        let b = self.rng.u64(..);
        let token = format!(
            "pat-na1-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        );
        self.private.insert(token.clone(), portal);
        token
    }

    /// A fresh number for correlation ids.
    pub(crate) fn next_serial(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    /// Every access, refresh and private-app token issued so far.
    pub(crate) fn issued(&self) -> Vec<String> {
        self.access
            .keys()
            .chain(self.refresh.keys())
            .chain(self.private.keys())
            .cloned()
            .collect()
    }

    /// Who `token` is, or `None` for an unknown token.
    pub(crate) fn caller(&self, token: &str) -> Option<Caller> {
        if let Some(portal) = self.private.get(token) {
            return Some(Caller {
                portal: *portal,
                scopes: SCOPES.iter().map(|s| (*s).to_owned()).collect(),
                exp_ms: None,
                private: true,
            });
        }
        let a = self.access.get(token)?;
        let g = self.grants.get(a.grant)?;
        Some(Caller {
            portal: g.portal,
            scopes: g.scopes.clone(),
            exp_ms: Some(a.exp_ms),
            private: false,
        })
    }

    /// The app is uninstalled from `portal`: its refresh tokens stop working.
    pub(crate) fn uninstall(&mut self, portal: u64) {
        for g in self.grants.iter_mut().filter(|g| g.portal == portal) {
            g.dead = true;
        }
    }
}

pub(crate) fn app_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/oauth/authorize", get(authorize))
        .with_state(shared)
}

/// The token endpoints, served by the API host as HubSpot serves them.
pub(crate) fn token_routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/oauth/v1/token", post(token))
        .route("/oauth/v1/refresh-tokens/{token}", delete(revoke))
        .route("/oauth/v1/access-tokens/{token}", get(info))
        .with_state(shared)
}

fn error_page(message: &str) -> Response<Body> {
    html_response(
        400,
        format!(
            "<!DOCTYPE html><html><head><title>HubSpot | Error</title></head><body><h1>Something went wrong</h1><p>{message}</p></body></html>"
        ),
    )
}

fn with_query(uri: &str, pairs: &[(&str, &str)]) -> String {
    let mut url = match url::Url::parse(uri) {
        Ok(u) => u,
        Err(_) => return uri.to_owned(),
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
    }
    url.to_string()
}

/// `GET /oauth/authorize`: the install page, answered at once with the configured [`Consent`].
async fn authorize(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Response<Body> {
    let Ok(Query(q)) = query else {
        return error_page("The request could not be read.");
    };
    let param = |k: &str| q.get(k).map(String::as_str).unwrap_or_default();
    if param("client_id") != shared.client_id {
        return error_page("Couldn't complete the connection: the client_id is not valid.");
    }
    let redirect_uri = param("redirect_uri");
    if !shared.redirect_uris.iter().any(|u| u == redirect_uri) {
        return error_page(
            "Couldn't complete the connection: the redirect_uri does not match the app's redirect URL.",
        );
    }
    let scopes: Vec<String> = param("scope")
        .split([' ', '+'])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if scopes.is_empty() {
        return error_page("Couldn't complete the connection: no scope was asked for.");
    }
    if let Some(bad) = scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        return error_page(&format!(
            "Couldn't complete the connection: the scope {bad} is not one this app may ask for."
        ));
    }
    let state = param("state");
    let back = |pairs: &[(&str, &str)]| {
        let mut pairs = pairs.to_vec();
        if !state.is_empty() {
            pairs.push(("state", state));
        }
        redirect(with_query(redirect_uri, &pairs))
    };
    let now = shared.now_ms();
    let mut auth = lock(&shared.auth);
    let portal = match &auth.consent {
        Consent::Deny => return back(&[("error", "access_denied")]),
        Consent::Grant { portal: None } => shared.portals.first().map(|c| c.id),
        Consent::Grant { portal: Some(p) } => {
            shared.portals.iter().find(|c| c.id == *p).map(|c| c.id)
        }
    };
    let Some(portal) = portal else {
        return error_page("There is no account to install the app into.");
    };
    let code = auth.token("na1-", 24);
    auth.codes.insert(
        code.clone(),
        Code {
            redirect_uri: redirect_uri.to_owned(),
            portal,
            scopes,
            created_ms: now,
            used: false,
        },
    );
    drop(auth);
    back(&[("code", &code)])
}

/// A token endpoint's refusal: HubSpot's own `status` beside OAuth's `error` code.
fn token_error(status: u16, kind: &str, message: &str, n: u64) -> Response<Body> {
    let error = match kind {
        "BAD_CLIENT_ID" => "invalid_client",
        "BAD_GRANT_TYPE" => "unsupported_grant_type",
        _ => "invalid_grant",
    };
    json_response(
        status,
        &json!({"status": kind, "message": message, "error": error, "error_description": message, "correlationId": correlation(n)}),
    )
}

fn parse_form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// `POST /oauth/v1/token`: the client's id and secret in the form body.
async fn token(State(shared): State<Arc<Shared>>, body: Bytes) -> Response<Body> {
    let form = parse_form(&body);
    let now = shared.now_ms();
    let ttl_ms = shared.limits.access_token_ttl_secs.saturating_mul(1000);
    let mut auth = lock(&shared.auth);
    let n = auth.next_serial();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    if field("client_id") != shared.client_id {
        return token_error(400, "BAD_CLIENT_ID", "missing or unknown client id", n);
    }
    if field("client_secret") != shared.client_secret {
        return token_error(
            400,
            "BAD_CLIENT_ID",
            "the client secret does not match the client id",
            n,
        );
    }
    let (grant, refresh) = match field("grant_type") {
        "authorization_code" => {
            let Some(code) = auth.codes.get_mut(field("code")) else {
                return token_error(400, "BAD_AUTH_CODE", "missing or unknown auth code", n);
            };
            if code.used || now.saturating_sub(code.created_ms) > CODE_TTL_MS {
                return token_error(400, "BAD_AUTH_CODE", "auth code expired or already used", n);
            }
            if code.redirect_uri != field("redirect_uri") {
                return token_error(
                    400,
                    "BAD_REDIRECT_URI",
                    "redirect_uri does not match the install's",
                    n,
                );
            }
            code.used = true;
            let (portal, scopes) = (code.portal, code.scopes.clone());
            auth.grants.push(Grant {
                portal,
                scopes,
                dead: false,
            });
            let grant = auth.grants.len() - 1;
            let refresh = auth.token("na1-", 32);
            auth.refresh.insert(refresh.clone(), grant);
            (grant, refresh)
        }
        "refresh_token" => {
            let presented = field("refresh_token").to_owned();
            let grant = auth.refresh.get(&presented).copied();
            match grant.filter(|g| auth.grants.get(*g).is_some_and(|g| !g.dead)) {
                Some(g) => (g, presented),
                None => {
                    return token_error(
                        400,
                        "BAD_REFRESH_TOKEN",
                        "missing or unknown refresh token",
                        n,
                    );
                }
            }
        }
        "" => return token_error(400, "BAD_GRANT_TYPE", "grant_type is missing", n),
        other => {
            return token_error(
                400,
                "BAD_GRANT_TYPE",
                &format!("unsupported grant_type {other}"),
                n,
            );
        }
    };
    let access = auth.token("CO", 90);
    auth.access.insert(
        access.clone(),
        Access {
            grant,
            exp_ms: now.saturating_add(ttl_ms),
        },
    );
    json_response(
        200,
        &json!({
            "token_type": "bearer",
            "refresh_token": refresh,
            "access_token": access,
            "expires_in": shared.limits.access_token_ttl_secs,
        }),
    )
}

/// `DELETE /oauth/v1/refresh-tokens/{token}`: the refresh token is deleted (its access tokens
/// live on until they expire).
async fn revoke(State(shared): State<Arc<Shared>>, Path(token): Path<String>) -> Response<Body> {
    let mut auth = lock(&shared.auth);
    let n = auth.next_serial();
    match auth.refresh.get(&token).copied() {
        Some(g) => {
            if let Some(grant) = auth.grants.get_mut(g) {
                grant.dead = true;
            }
            auth.refresh.remove(&token);
            empty(204)
        }
        None => token_error(
            404,
            "BAD_REFRESH_TOKEN",
            "missing or unknown refresh token",
            n,
        ),
    }
}

/// `GET /oauth/v1/access-tokens/{token}`: the portal (`hub_id`) and scopes of an access token.
async fn info(State(shared): State<Arc<Shared>>, Path(token): Path<String>) -> Response<Body> {
    let now = shared.now_ms();
    let mut auth = lock(&shared.auth);
    let n = auth.next_serial();
    let found = auth.access.get(&token).cloned();
    let Some(access) = found.filter(|a| a.exp_ms > now) else {
        return token_error(
            404,
            "EXPIRED_OR_UNKNOWN",
            "the access token is expired or unknown",
            n,
        );
    };
    let Some(grant) = auth.grants.get(access.grant) else {
        return token_error(
            404,
            "EXPIRED_OR_UNKNOWN",
            "the access token is expired or unknown",
            n,
        );
    };
    let body: Value = json!({
        "token": token,
        "user": "installer@example.com",
        "hub_id": grant.portal,
        "app_id": 1_000_001,
        "scopes": grant.scopes,
        "token_type": "access",
        "user_id": 9_100_000,
        "expires_in": (access.exp_ms - now) / 1000,
    });
    json_response(200, &body)
}
