//! OAuth 2.0 for a connection: the authorize URL (state and PKCE S256), the loopback callback
//! server that receives the code, the code exchange and refresh grants (the `oauth2` crate, over
//! Weft's own reqwest client), the client-credentials grant (machine to machine: no person, no
//! refresh token; a new grant replaces an expired token), revocation, and the tenants a consent
//! just connected.
//!
//! Every endpoint and credential comes from the spec, rendered with the connection's hosts, so a
//! sandbox or proxy works exactly like the provider.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use base64::Engine as _;
use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, HttpRequest, HttpResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RefreshToken, RequestTokenError, Scope, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use weft_core::model::{ClientAuth, OAuth2, Pkce, SpecFile};

use crate::request::Hosts;
use crate::secrets::{Secret, escape_control};

/// Errors of the OAuth flows. None of them carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// The connector does not authorize with OAuth 2.0.
    #[error("connector `{0}` does not authorize with OAuth 2.0 (its spec has no [auth.oauth2])")]
    NotOAuth(String),
    /// A spec template or URL that does not render.
    #[error("the spec's {place} does not give a usable URL or value: {reason}")]
    Spec {
        /// Which key.
        place: &'static str,
        /// Why.
        reason: String,
    },
    /// The provider refused a grant: `invalid_grant` and friends.
    #[error("{provider} refused the {grant} (HTTP {status}): {code}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused {
        /// Connector name.
        provider: String,
        /// Which grant (`authorization code`, `refresh token`).
        grant: &'static str,
        /// The HTTP status of the answer.
        status: u16,
        /// The OAuth error code (`invalid_grant`, `invalid_client`, …).
        code: String,
        /// The provider's description, when it gives one.
        description: Option<String>,
    },
    /// No usable answer: network failure, timeout, or a body that is not a token response.
    #[error("the {endpoint} endpoint of {provider} at {host} did not answer usably: {reason}")]
    Transport {
        /// Connector name.
        provider: String,
        /// Which endpoint (`token`, `revocation`).
        endpoint: &'static str,
        /// The endpoint's host (and port).
        host: String,
        /// What went wrong.
        reason: String,
    },
    /// The loopback callback server could not start.
    #[error(
        "cannot listen on 127.0.0.1:{port} for the OAuth callback: {reason}; close what uses that port, or register another callback URL at the provider and pass --port"
    )]
    Listen {
        /// The port.
        port: u16,
        /// Why.
        reason: String,
    },
    /// The person declined, or the provider sent an error back to the callback.
    #[error("the provider sent the browser back with `{code}`{}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Denied {
        /// The OAuth error code (`access_denied`, …).
        code: String,
        /// The description, when given.
        description: Option<String>,
    },
    /// Nobody came back to the callback in time.
    #[error(
        "no answer reached the callback URL within {0:?}; run the command again and finish the consent in the browser"
    )]
    Timeout(Duration),
}

/// The endpoints and credentials of one OAuth client for one connector, rendered from the spec.
pub struct OAuthApp {
    provider: String,
    client: BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>,
    spec: OAuth2,
    client_id: String,
    client_secret: Option<Secret>,
    token_url: url::Url,
    /// The revocation endpoint's template (it may read `token`), rendered at revocation.
    revoke_url: Option<String>,
    hosts: indexmap::IndexMap<String, String>,
    authorize_params: Vec<(String, String)>,
    timeout: Duration,
    /// The spec's grant is client credentials (`[auth.client-credentials]`), not a consent.
    machine: bool,
}

impl std::fmt::Debug for OAuthApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthApp")
            .field("provider", &self.provider)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .finish_non_exhaustive()
    }
}

/// An authorization in progress: the URL to open and what the callback must match.
pub struct Pending {
    /// The provider's authorize URL, with state and (when the spec says) the PKCE challenge.
    pub url: url::Url,
    /// The state the callback must carry back.
    pub state: String,
    verifier: Option<PkceCodeVerifier>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

/// Tokens as Weft keeps them (sealed in the credential store).
#[derive(Clone)]
pub struct TokenSet {
    /// The access token.
    pub access_token: Secret,
    /// The refresh token, when the provider issues one.
    pub refresh_token: Option<Secret>,
    /// When the access token expires (Unix ms), when known.
    pub expires_at_ms: Option<u64>,
    /// When these tokens were obtained (Unix ms).
    pub obtained_at_ms: u64,
    /// Scopes granted, when the provider says.
    pub scopes: Vec<String>,
    /// A token the person pasted (never refreshed), rather than one from an OAuth grant.
    pub pasted: bool,
    /// Set when the provider refused the grant for good (`invalid_grant`): why. The tokens are
    /// kept, but nothing uses them until the person authorizes again.
    pub needs_authorization: Option<String>,
    /// When the person consented (Unix ms): kept through refreshes, for a refresh token's
    /// absolute lifetime. Tokens sealed before it was kept give the time they were obtained.
    pub granted_at_ms: u64,
    /// A refresh of this record's refresh token that was sent and whose answer was never
    /// sealed (the process was killed, or the answer lost): written before every refresh grant,
    /// gone with the write of its new tokens. Sealed with them; it holds no token.
    pub refresh_intent: Option<RefreshIntent>,
    /// How many times a refresh token of this consent was sent again after such a cut-off
    /// refresh (counted, sealed, before each resend).
    pub refresh_recoveries: u64,
}

/// A refresh that began: when, and by whom. Sealed in the token record, never a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshIntent {
    /// When the first grant with this refresh token was sent (Unix ms).
    pub started_ms: u64,
    /// Who sent it: the process and its machine.
    pub by: String,
    /// Grants sent again with the same refresh token since.
    #[serde(default)]
    pub resends: u32,
}

/// The sealed form of a [`TokenSet`]; it exists only between serde and the cipher.
#[derive(Serialize, Deserialize)]
struct SealedTokens {
    kind: String,
    access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at_ms: Option<u64>,
    #[serde(default)]
    obtained_at_ms: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    needs_authorization: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    granted_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_intent: Option<RefreshIntent>,
    #[serde(default, skip_serializing_if = "is_zero")]
    refresh_recoveries: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl TokenSet {
    /// A token that never expires and cannot be refreshed (a pasted personal token).
    pub fn fixed(access_token: Secret, now_ms: u64) -> Self {
        Self {
            access_token,
            refresh_token: None,
            expires_at_ms: None,
            obtained_at_ms: now_ms,
            scopes: Vec::new(),
            pasted: true,
            needs_authorization: None,
            granted_at_ms: now_ms,
            refresh_intent: None,
            refresh_recoveries: 0,
        }
    }

    /// The JSON to seal in the credential store.
    pub fn to_sealed_json(&self) -> Secret {
        let sealed = SealedTokens {
            kind: if self.pasted { "token" } else { "oauth2" }.to_owned(),
            access_token: self.access_token.expose().to_owned(),
            refresh_token: self.refresh_token.as_ref().map(|s| s.expose().to_owned()),
            expires_at_ms: self.expires_at_ms,
            obtained_at_ms: self.obtained_at_ms,
            scopes: self.scopes.clone(),
            needs_authorization: self.needs_authorization.clone(),
            granted_at_ms: Some(self.granted_at_ms),
            refresh_intent: self.refresh_intent.clone(),
            refresh_recoveries: self.refresh_recoveries,
        };
        let text = serde_json::to_string(&sealed).unwrap_or_default();
        Secret::new(text)
    }

    /// Reads what [`TokenSet::to_sealed_json`] wrote; `None` when it is not a token record.
    pub fn from_sealed_json(secret: &Secret) -> Option<Self> {
        let sealed: SealedTokens = serde_json::from_str(secret.expose()).ok()?;
        Some(Self {
            access_token: Secret::new(sealed.access_token),
            refresh_token: sealed.refresh_token.map(Secret::new),
            expires_at_ms: sealed.expires_at_ms,
            obtained_at_ms: sealed.obtained_at_ms,
            scopes: sealed.scopes,
            pasted: sealed.kind == "token",
            needs_authorization: sealed.needs_authorization,
            granted_at_ms: sealed.granted_at_ms.unwrap_or(sealed.obtained_at_ms),
            refresh_intent: sealed.refresh_intent,
            refresh_recoveries: sealed.refresh_recoveries,
        })
    }
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &self.access_token)
            .field("refresh_token", &self.refresh_token)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("obtained_at_ms", &self.obtained_at_ms)
            .field("scopes", &self.scopes)
            .field("pasted", &self.pasted)
            .field("needs_authorization", &self.needs_authorization)
            .field("granted_at_ms", &self.granted_at_ms)
            .field("refresh_intent", &self.refresh_intent)
            .field("refresh_recoveries", &self.refresh_recoveries)
            .finish()
    }
}

impl OAuthApp {
    /// The OAuth client of `spec` with this client ID and secret, sending the browser back to
    /// `redirect_uri`.
    pub fn new(
        spec: &SpecFile,
        hosts: &Hosts,
        client_id: &str,
        client_secret: Option<Secret>,
        redirect_uri: &str,
    ) -> Result<Self, OAuthError> {
        let (oauth, machine) = match (&spec.auth.oauth2, &spec.auth.client_credentials) {
            (Some(oauth), _) => (oauth.clone(), false),
            // The client-credentials grant needs only the token endpoint and the client; the
            // authorize URL is never used (there is no consent), so it is the token URL.
            (None, Some(c)) => (
                OAuth2 {
                    authorize_url: c.token_url.clone(),
                    token_url: c.token_url.clone(),
                    revoke_url: None,
                    client_id: c.client_id.clone(),
                    client_secret: Some(c.client_secret.clone()),
                    scopes: c.scopes.clone(),
                    scope_separator: " ".to_owned(),
                    pkce: Pkce::None,
                    client_auth: c.client_auth,
                    authorize_params: indexmap::IndexMap::new(),
                    access_token_lifetime: None,
                    refresh: None,
                    revoke_request: None,
                },
                true,
            ),
            (None, None) => return Err(OAuthError::NotOAuth(spec.id.clone())),
        };
        let env = weft_core::template::environment();
        // Endpoint templates see the hosts; credential templates see the client's two fields.
        let scope = minijinja::context! { hosts => hosts.as_map() };
        let render = |place: &'static str, template: &str| {
            env.render_str(template, &scope)
                .map_err(|e| OAuthError::Spec {
                    place,
                    reason: e.to_string(),
                })
        };
        let authorize = render("auth.oauth2.authorize-url", &oauth.authorize_url)?;
        let token = render("auth.oauth2.token-url", &oauth.token_url)?;
        let fields_scope = |secret: &str| {
            minijinja::context! { fields => BTreeMap::from([("client_id", client_id), ("client_secret", secret)]) }
        };
        let rendered_id = env
            .render_str(&oauth.client_id, fields_scope(""))
            .map_err(|e| OAuthError::Spec {
                place: "auth.oauth2.client-id",
                reason: e.to_string(),
            })?;
        let rendered_secret = match (&oauth.client_secret, &client_secret) {
            (Some(template), Some(secret)) => Some(Secret::new(
                env.render_str(template, fields_scope(secret.expose()))
                    .map_err(|_| OAuthError::Spec {
                        place: "auth.oauth2.client-secret",
                        reason: "the template does not render".to_owned(),
                    })?,
            )),
            _ => None,
        };
        let url = |place: &'static str, text: &str| {
            url::Url::parse(text).map_err(|e| OAuthError::Spec {
                place,
                reason: format!("`{text}`: {e}"),
            })
        };
        let token_url = url("auth.oauth2.token-url", &token)?;
        let mut client = BasicClient::new(ClientId::new(rendered_id.clone()))
            .set_auth_uri(AuthUrl::from_url(url(
                "auth.oauth2.authorize-url",
                &authorize,
            )?))
            .set_token_uri(TokenUrl::from_url(token_url.clone()))
            .set_redirect_uri(RedirectUrl::from_url(url("callback URL", redirect_uri)?))
            .set_auth_type(match oauth.client_auth {
                ClientAuth::Basic => AuthType::BasicAuth,
                ClientAuth::Body => AuthType::RequestBody,
            });
        if let Some(secret) = &rendered_secret {
            client = client.set_client_secret(ClientSecret::new(secret.expose().to_owned()));
        }
        let authorize_params = oauth
            .authorize_params
            .iter()
            .map(|(k, t)| render("auth.oauth2.authorize-params", t).map(|v| (k.clone(), v)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            provider: spec.name.clone(),
            client,
            revoke_url: oauth.revoke_url.clone(),
            hosts: hosts.as_map().clone(),
            spec: oauth,
            client_id: rendered_id,
            client_secret: rendered_secret,
            token_url,
            authorize_params,
            timeout: spec.limits.timeout.to_std(),
            machine,
        })
    }

    /// Whether this client uses the client-credentials grant (no consent, no refresh token).
    pub fn is_client_credentials(&self) -> bool {
        self.machine
    }

    /// Obtains tokens with the client-credentials grant.
    pub async fn client_credentials(
        &self,
        http: &reqwest::Client,
        now_ms: u64,
    ) -> Result<TokenSet, OAuthError> {
        let status = std::sync::Mutex::new(0);
        let mut request = self.client.exchange_client_credentials();
        for scope in &self.spec.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let response = request
            .request_async(&|r| send(http, r, self.timeout, &status))
            .await
            .map_err(|e| self.token_error("client credentials", e, &status))?;
        Ok(self.token_set(&response, None, now_ms))
    }

    /// The time limit of every request to the provider's OAuth endpoints (the spec's
    /// `limits.timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether the spec declares a revocation endpoint.
    pub fn can_revoke(&self) -> bool {
        self.revoke_url.is_some()
    }

    /// Starts an authorization: a fresh random state and, when the spec asks, a PKCE S256
    /// verifier whose challenge goes in the URL.
    pub fn start(&self) -> Pending {
        let mut request = self.client.authorize_url(CsrfToken::new_random);
        for scope in &self.spec.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let verifier = match self.spec.pkce {
            Pkce::S256 => {
                let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
                request = request.set_pkce_challenge(challenge);
                Some(verifier)
            }
            Pkce::None => None,
        };
        for (k, v) in &self.authorize_params {
            request = request.add_extra_param(k.clone(), v.clone());
        }
        let (mut url, state) = request.url();
        if self.spec.scope_separator != " " {
            // The oauth2 crate joins scopes with spaces; a provider wanting another separator
            // gets the parameter rewritten.
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "scope" {
                        v.split(' ')
                            .collect::<Vec<_>>()
                            .join(&self.spec.scope_separator)
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        Pending {
            url,
            state: state.secret().clone(),
            verifier,
        }
    }

    /// Exchanges the code the callback received for tokens.
    pub async fn exchange(
        &self,
        http: &reqwest::Client,
        pending: Pending,
        code: &str,
        now_ms: u64,
    ) -> Result<TokenSet, OAuthError> {
        let mut request = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()));
        if let Some(verifier) = pending.verifier {
            request = request.set_pkce_verifier(verifier);
        }
        let status = std::sync::Mutex::new(0);
        let response = request
            .request_async(&|r| send(http, r, self.timeout, &status))
            .await
            .map_err(|e| self.token_error("authorization code", e, &status))?;
        Ok(self.token_set(&response, None, now_ms))
    }

    /// Uses `refresh_token` for new tokens. When the provider does not rotate, the old refresh
    /// token is kept.
    pub async fn refresh(
        &self,
        http: &reqwest::Client,
        refresh_token: &Secret,
        now_ms: u64,
    ) -> Result<TokenSet, OAuthError> {
        let token = RefreshToken::new(refresh_token.expose().to_owned());
        let status = std::sync::Mutex::new(0);
        let response = self
            .client
            .exchange_refresh_token(&token)
            .request_async(&|r| send(http, r, self.timeout, &status))
            .await
            .map_err(|e| self.token_error("refresh token", e, &status))?;
        Ok(self.token_set(&response, Some(refresh_token), now_ms))
    }

    /// Revokes `token` (the refresh token, which ends the whole grant) at the spec's revocation
    /// endpoint: RFC 7009's form POST unless the spec's `revoke-request` says otherwise (a JSON
    /// body, another method, or the token in the URL). Made on reqwest directly: the oauth2
    /// crate refuses any revocation URL that is not https, which would leave the sandbox and
    /// the tests unable to exercise it.
    pub async fn revoke(&self, http: &reqwest::Client, token: &Secret) -> Result<(), OAuthError> {
        use weft_core::model::RevokeBody;
        let Some(template) = &self.revoke_url else {
            return Ok(());
        };
        // The token may ride in the path: escaped as one path segment (and never in a message).
        let escaped: String =
            url::form_urlencoded::byte_serialize(token.expose().as_bytes()).collect();
        let escaped = Secret::new(escaped.replace('+', "%20"));
        let rendered = Secret::new(
            weft_core::template::environment()
                .render_str(
                    template,
                    minijinja::context! { hosts => &self.hosts, token => escaped.expose() },
                )
                .map_err(|e| OAuthError::Spec {
                    place: "auth.oauth2.revoke-url",
                    reason: e.to_string(),
                })?,
        );
        let url = url::Url::parse(rendered.expose()).map_err(|e| OAuthError::Spec {
            place: "auth.oauth2.revoke-url",
            reason: format!("the rendered URL does not parse: {e}"),
        })?;
        let (method, body) = self
            .spec
            .revoke_request
            .as_ref()
            .map_or((weft_core::model::Method::Post, RevokeBody::Form), |r| {
                (r.method, r.body)
            });
        let method = reqwest::Method::from_bytes(method.as_str().as_bytes())
            .unwrap_or(reqwest::Method::POST);
        let hint = "refresh_token";
        let mut fields = vec![("token", token.expose()), ("token_type_hint", hint)];
        let mut request = http.request(method, url.clone()).timeout(self.timeout);
        match (self.spec.client_auth, &self.client_secret) {
            (ClientAuth::Basic, secret) => {
                // RFC 6749 §2.3.1: each part is form-encoded before the Basic encoding, exactly
                // as the token request does it.
                let (id, secret) = basic_parts(&self.client_id, secret.as_ref());
                request = request.basic_auth(id, Some(secret));
            }
            (ClientAuth::Body, secret) => {
                fields.push(("client_id", &self.client_id));
                if let Some(secret) = secret {
                    fields.push(("client_secret", secret.expose()));
                }
            }
        }
        request = match body {
            RevokeBody::Form => request.form(&fields),
            RevokeBody::Json => {
                let object: serde_json::Map<String, serde_json::Value> = fields
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
                    .collect();
                request.json(&object)
            }
            // The token is in the URL; client credentials in a body have nowhere to go.
            RevokeBody::None => request,
        };
        let answer = request.send().await.map_err(|e| OAuthError::Transport {
            provider: self.provider.clone(),
            endpoint: "revocation",
            host: host_of(&url),
            reason: describe(&e, self.timeout),
        })?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        let body: serde_json::Value = answer.json().await.unwrap_or_default();
        Err(OAuthError::Refused {
            provider: self.provider.clone(),
            grant: "revocation",
            status: status.as_u16(),
            code: escape_control(body["error"].as_str().unwrap_or("no error code")),
            description: body["error_description"].as_str().map(escape_control),
        })
    }

    fn token_set(
        &self,
        response: &oauth2::basic::BasicTokenResponse,
        previous_refresh: Option<&Secret>,
        now_ms: u64,
    ) -> TokenSet {
        let lifetime = response
            .expires_in()
            .or_else(|| self.spec.access_token_lifetime.map(|d| d.to_std()));
        TokenSet {
            access_token: Secret::new(response.access_token().secret().clone()),
            refresh_token: response
                .refresh_token()
                .map(|r| Secret::new(r.secret().clone()))
                .or_else(|| previous_refresh.cloned()),
            expires_at_ms: lifetime
                .map(|d| now_ms.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))),
            obtained_at_ms: now_ms,
            scopes: response
                .scopes()
                .map(|s| s.iter().map(|x| x.to_string()).collect())
                .unwrap_or_default(),
            pasted: false,
            needs_authorization: None,
            granted_at_ms: now_ms,
            refresh_intent: None,
            refresh_recoveries: 0,
        }
    }

    fn token_error(
        &self,
        grant: &'static str,
        err: RequestTokenError<HttpError, oauth2::StandardErrorResponse<BasicErrorResponseType>>,
        status: &std::sync::Mutex<u16>,
    ) -> OAuthError {
        let status = *crate::lock(status);
        let transport = |reason: String| OAuthError::Transport {
            provider: self.provider.clone(),
            endpoint: "token",
            host: host_of(&self.token_url),
            reason,
        };
        let answered = |what: &str| {
            if status == 0 {
                what.to_owned()
            } else {
                format!("HTTP {status}, {what}")
            }
        };
        match err {
            RequestTokenError::ServerResponse(resp) => OAuthError::Refused {
                provider: self.provider.clone(),
                grant,
                status,
                code: escape_control(resp.error().as_ref()),
                description: resp.error_description().map(|d| escape_control(d)),
            },
            RequestTokenError::Request(e) => transport(e.to_string()),
            RequestTokenError::Parse(e, _) => transport(answered(&format!(
                "the answer is not a token response ({})",
                e.path()
            ))),
            RequestTokenError::Other(e) => transport(answered(&escape_control(&e))),
        }
    }
}

impl OAuthError {
    /// Whether the grant is gone for good (`invalid_grant`): the person must authorize again.
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, Self::Refused { code, .. } if code == "invalid_grant")
    }

    /// Whether the provider refused the client itself (a wrong or regenerated secret).
    pub fn is_invalid_client(&self) -> bool {
        matches!(self, Self::Refused { code, .. } if code == "invalid_client" || code == "unauthorized_client")
    }

    /// Whether trying again may help (no answer, or a body that was cut).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transport { .. })
    }
}

/// A transport failure of a token request, without its URL (which is not secret, but long) and
/// without any body (which could hold a token).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

/// The host (and port) of `url`, for messages.
fn host_of(url: &url::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => url.as_str().to_owned(),
    }
}

/// The client ID and secret as RFC 6749 §2.3.1 puts them in a Basic header: each
/// `application/x-www-form-urlencoded` first.
fn basic_parts(id: &str, secret: Option<&Secret>) -> (String, String) {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    (enc(id), enc(secret.map_or("", |s| s.expose())))
}

/// Sends a token request within `timeout`, noting the answer's HTTP status in `status`.
fn send<'a>(
    http: &'a reqwest::Client,
    request: HttpRequest,
    timeout: Duration,
    status: &'a std::sync::Mutex<u16>,
) -> Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'a>> {
    Box::pin(async move {
        let mut request = reqwest::Request::try_from(request)
            .map_err(|e| HttpError(format!("cannot build the request: {}", e.without_url())))?;
        *request.timeout_mut() = Some(timeout);
        let response = http
            .execute(request)
            .await
            .map_err(|e| HttpError(describe(&e, timeout)))?;
        *crate::lock(status) = response.status().as_u16();
        let mut builder = oauth2::http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            builder = builder.header(name, value);
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| HttpError(describe(&e, timeout)))?;
        builder
            .body(body.to_vec())
            .map_err(|e| HttpError(e.to_string()))
    })
}

fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    let mut text = if e.is_timeout() {
        format!("no answer within {timeout:?}")
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else if e.is_body() || e.is_decode() {
        "the answer was cut short".to_owned()
    } else {
        "the request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// The claims of a JWT access token, decoded without verification: the token came straight
/// from the provider's token endpoint over TLS, and only routing (which tenant) depends on it.
pub fn jwt_claims(token: &Secret) -> Option<serde_json::Value> {
    let payload = token.expose().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The loopback server that receives the browser after consent (`/oauth/callback` on
/// 127.0.0.1 only).
pub struct Callback {
    listener: tokio::net::TcpListener,
    port: u16,
}

/// How long the callback server may take to close its connections once the answer is in.
const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(2);

/// What reached the callback.
enum Arrival {
    Code(CallbackAnswer),
    Error(String, Option<String>),
}

/// The provider's answer at the callback: the code, and the other parameters it added beside it
/// (QuickBooks names the company just authorized in `realmId`); `state` is left out.
#[derive(Clone, PartialEq, Eq)]
pub struct CallbackAnswer {
    /// The authorization code.
    pub code: String,
    /// The other query parameters, by name.
    pub params: BTreeMap<String, String>,
}

impl std::fmt::Debug for CallbackAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The code is a credential until it is exchanged.
        f.debug_struct("CallbackAnswer")
            .field("code", &"[redacted]")
            .field("params", &self.params)
            .finish()
    }
}

impl Callback {
    /// Listens on 127.0.0.1:`port` (0 picks a free port, for tests).
    pub async fn bind(port: u16) -> Result<Self, OAuthError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| OAuthError::Listen {
                port,
                reason: e.to_string(),
            })?;
        let port = listener
            .local_addr()
            .map_err(|e| OAuthError::Listen {
                port,
                reason: e.to_string(),
            })?
            .port();
        Ok(Self { listener, port })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the browser comes back with `state` and a code (returned), or an error, or
    /// `timeout` passes. An answer with another state gets an error page and is otherwise
    /// ignored: it belongs to an older attempt, or to someone else. So is an answer that repeats
    /// a parameter (RFC 6749 §3.1). The page the browser sees says only that the answer was
    /// received: whether the authorization worked is known after the code exchange, in the
    /// terminal.
    pub async fn wait(self, state: &str, timeout: Duration) -> Result<String, OAuthError> {
        self.wait_answer(state, timeout).await.map(|a| a.code)
    }

    /// As [`Callback::wait`], returning the parameters the provider added beside the code.
    pub async fn wait_answer(
        self,
        state: &str,
        timeout: Duration,
    ) -> Result<CallbackAnswer, OAuthError> {
        use axum::extract::{Query, State};
        use axum::response::Html;
        use std::collections::HashMap;
        use std::sync::Arc;

        struct Shared {
            state: String,
            tx: tokio::sync::mpsc::UnboundedSender<Arrival>,
        }
        async fn handle(
            State(shared): State<Arc<Shared>>,
            Query(pairs): Query<Vec<(String, String)>>,
        ) -> (axum::http::StatusCode, Html<&'static str>) {
            use axum::http::StatusCode;
            let mut q = HashMap::new();
            for (k, v) in pairs {
                if q.insert(k, v).is_some() {
                    return (
                        StatusCode::BAD_REQUEST,
                        Html(
                            "<!doctype html><title>Weft</title><p>This answer repeats a parameter, which OAuth does not allow; it was ignored. Start again from the command line.</p>",
                        ),
                    );
                }
            }
            if q.get("state").map(String::as_str) != Some(shared.state.as_str()) {
                return (
                    StatusCode::BAD_REQUEST,
                    Html(
                        "<!doctype html><title>Weft</title><p>This answer does not belong to the authorization Weft is waiting for. Start again from the command line.</p>",
                    ),
                );
            }
            if let Some(error) = q.get("error") {
                let _ = shared.tx.send(Arrival::Error(
                    error.clone(),
                    q.get("error_description").cloned(),
                ));
                return (
                    StatusCode::OK,
                    Html(
                        "<!doctype html><title>Weft</title><p>The authorization was not granted. You can close this tab; the command line says what happened.</p>",
                    ),
                );
            }
            match q.remove("code") {
                Some(code) => {
                    q.remove("state");
                    let params = q.into_iter().collect();
                    let _ = shared
                        .tx
                        .send(Arrival::Code(CallbackAnswer { code, params }));
                    (
                        StatusCode::OK,
                        Html(
                            "<!doctype html><title>Weft</title><p>Weft received the provider's answer. The result of the authorization is shown in the terminal; you can close this tab.</p>",
                        ),
                    )
                }
                None => (
                    StatusCode::BAD_REQUEST,
                    Html(
                        "<!doctype html><title>Weft</title><p>The provider sent no authorization code.</p>",
                    ),
                ),
            }
        }

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            state: state.to_owned(),
            tx,
        });
        let app = axum::Router::new()
            .route("/oauth/callback", axum::routing::get(handle))
            .with_state(shared);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            axum::serve(self.listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .into_future(),
        );
        let outcome = match tokio::time::timeout(timeout, rx.recv()).await {
            Ok(Some(Arrival::Code(code))) => Ok(code),
            Ok(Some(Arrival::Error(code, description))) => Err(OAuthError::Denied {
                code: escape_control(&code),
                description: description.as_deref().map(escape_control),
            }),
            Ok(None) | Err(_) => Err(OAuthError::Timeout(timeout)),
        };
        let _ = stop.send(());
        // A graceful shutdown waits for open connections; one that sent half a request would
        // hold it forever, so the wait is bounded and the server is then dropped.
        let abort = server.abort_handle();
        if tokio::time::timeout(SHUTDOWN_PATIENCE, server)
            .await
            .is_err()
        {
            abort.abort();
        }
        outcome
    }
}
