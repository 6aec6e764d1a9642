//! What every page shares: the application state, the signed session cookie, CSRF tokens,
//! login rate limits, the security headers, rendering into the layout and the error page.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};
use weft_core::Spec;
use weft_engine::workspace::Workspace;

use crate::store::{Role, Store, User, now_ms};
use crate::{Config, ServeError};

/// The session cookie.
pub(crate) const SESSION_COOKIE: &str = "weft_session";
/// The cookie that ties the login form's CSRF token to one browser.
pub(crate) const LOGIN_COOKIE: &str = "weft_login";
/// The largest request body accepted.
pub(crate) const BODY_LIMIT: usize = 64 * 1024;
/// Failed logins allowed per user name (and per client address) within [`ATTEMPT_WINDOW_MS`].
pub(crate) const MAX_ATTEMPTS: usize = 5;
/// The window of [`MAX_ATTEMPTS`].
pub(crate) const ATTEMPT_WINDOW_MS: i64 = 15 * 60 * 1000;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Shared by every handler.
#[derive(Clone)]
pub(crate) struct AppState(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) workspace: PathBuf,
    pub(crate) base_url: String,
    /// Whether cookies get `Secure` (the console serves HTTPS).
    pub(crate) secure: bool,
    pub(crate) specs: Vec<Spec>,
    store: Mutex<Store>,
    key: [u8; 32],
    pub(crate) env: &'static minijinja::Environment<'static>,
    attempts: Mutex<HashMap<String, Vec<i64>>>,
    /// Authorizations sent to a provider, by their OAuth state.
    pub(crate) pending: Mutex<HashMap<String, PendingAuth>>,
    /// Organisations a consent connected, waiting for the person's choice, by a random id.
    pub(crate) choices: Mutex<HashMap<String, TenantChoice>>,
}

/// How long an authorization or an organisation choice waits for the person.
pub(crate) const PENDING_MS: i64 = 15 * 60 * 1000;

/// An authorization in progress.
pub(crate) struct PendingAuth {
    pub(crate) user: String,
    pub(crate) connection: String,
    pub(crate) pending: weft_engine::oauth::Pending,
    pub(crate) started_ms: i64,
}

/// The organisations a consent connected, for the person who gave it to choose among.
pub(crate) struct TenantChoice {
    pub(crate) user: String,
    pub(crate) connection: String,
    pub(crate) found: Vec<weft_engine::workspace::TenantRef>,
    pub(crate) started_ms: i64,
}

/// Locks a mutex, going on after a panic elsewhere (the maps stay consistent per entry).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub(crate) fn new(config: Config) -> Result<Self, ServeError> {
        let ws = Workspace::find(&config.workspace)?;
        let store = Store::open(&ws.private_dir())?;
        if store.users()?.is_empty() {
            return Err(ServeError::NoUsers);
        }
        let key = store.signing_key()?;
        Ok(Self(Arc::new(Inner {
            workspace: ws.dir().to_path_buf(),
            base_url: crate::base_url(config.listen, config.tls.is_some()),
            secure: config.tls.is_some(),
            specs: config.specs,
            store: Mutex::new(store),
            key,
            env: crate::pages::templates(),
            attempts: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            choices: Mutex::new(HashMap::new()),
        })))
    }

    /// The console database (one connection, used briefly by each request).
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The workspace as it is on disk now (the CLI may have changed it).
    pub(crate) fn workspace(&self) -> Result<Workspace, PageError> {
        Workspace::find(&self.workspace).map_err(PageError::internal)
    }

    /// The console's OAuth callback URL, to register at providers.
    pub(crate) fn callback_url(&self) -> String {
        format!("{}/oauth/callback", self.base_url)
    }

    pub(crate) fn spec(&self, id: &str) -> Option<&Spec> {
        self.specs
            .iter()
            .find(|s| s.id() == id || s.file().former_names.iter().any(|n| n == id))
    }

    fn mac(&self, purpose: &str, value: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(value.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    fn mac_ok(&self, purpose: &str, value: &str, given: &str) -> bool {
        let Ok(given) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(given) else {
            return false;
        };
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(value.as_bytes());
        mac.verify_slice(&given).is_ok()
    }

    /// The attributes every cookie of the console carries after its value.
    pub(crate) fn cookie_attrs(&self, path: &str, same_site: &str) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("; Path={path}; HttpOnly; SameSite={same_site}{secure}")
    }

    /// The signed cookie value of a session token.
    pub(crate) fn session_cookie(&self, token: &str) -> String {
        format!("{token}.{}", self.mac("session", token))
    }

    /// The session token of a cookie value whose signature holds.
    pub(crate) fn session_token<'a>(&self, cookie: &'a str) -> Option<&'a str> {
        let (token, sig) = cookie.rsplit_once('.')?;
        self.mac_ok("session", token, sig).then_some(token)
    }

    /// The CSRF token of a session.
    pub(crate) fn csrf_for(&self, token: &str) -> String {
        self.mac("csrf", token)
    }

    /// The CSRF token of the login form for a browser's login nonce.
    pub(crate) fn login_csrf(&self, nonce: &str) -> String {
        self.mac("login", nonce)
    }

    /// Whether a login for `keys` (the user name, the client address) is refused for now;
    /// returns the minutes to wait.
    pub(crate) fn login_locked(&self, keys: &[String]) -> Option<i64> {
        let now = now_ms();
        let mut attempts = self
            .attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        keys.iter()
            .filter_map(|k| {
                let list = attempts.get_mut(k)?;
                list.retain(|t| now - t < ATTEMPT_WINDOW_MS);
                (list.len() >= MAX_ATTEMPTS).then(|| {
                    let oldest = list.iter().min().copied().unwrap_or(now);
                    (oldest + ATTEMPT_WINDOW_MS - now).max(0) / 60_000 + 1
                })
            })
            .max()
    }

    pub(crate) fn login_failed(&self, keys: &[String]) {
        let now = now_ms();
        let mut attempts = self
            .attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for k in keys {
            attempts.entry(k.clone()).or_default().push(now);
        }
    }

    pub(crate) fn login_succeeded(&self, name: &str) {
        let mut attempts = self
            .attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        attempts.remove(&format!("user:{name}"));
    }

    /// Records an action in the audit log. A failure to record is reported, never hidden.
    pub(crate) fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Result<(), PageError> {
        self.store()
            .audit(actor, action, target, detail)
            .map_err(PageError::internal)
    }

    /// Renders `template` inside the layout, for `me`.
    pub(crate) fn page(
        &self,
        me: &Me,
        template: &str,
        nav: &str,
        ctx: minijinja::Value,
    ) -> Result<Response, PageError> {
        let layout = minijinja::context! {
            me => minijinja::context! { name => &me.user.name, role => me.user.role.as_str(), admin => me.is_admin() },
            csrf => &me.csrf,
            nav => nav,
            // The Queue page is in the menu when the state is on PostgreSQL (a fleet).
            fleet => self.workspace().is_ok_and(|ws| matches!(ws.state_url(), Ok(Some(_)))),
        };
        let html = self
            .env
            .get_template(template)
            .and_then(|t| t.render(minijinja::context! { ..layout, ..ctx }))
            .map_err(PageError::internal)?;
        Ok(Html(html).into_response())
    }
}

/// The signed-in user of a request, with the CSRF token for the forms of its pages.
pub(crate) struct Me {
    pub(crate) user: User,
    pub(crate) token: String,
    pub(crate) csrf: String,
}

impl Me {
    pub(crate) fn is_admin(&self) -> bool {
        self.user.role == Role::Admin
    }

    /// Refuses a member an administrator's action, saying what and who can.
    pub(crate) fn require_admin(&self, state: &AppState, what: &str) -> Result<(), PageError> {
        if self.is_admin() {
            return Ok(());
        }
        let admins: Vec<String> = state
            .store()
            .users()
            .map_err(PageError::internal)?
            .into_iter()
            .filter(|u| u.role == Role::Admin)
            .map(|u| u.name)
            .collect();
        Err(PageError::Forbidden(format!(
            "Only an administrator can {what}. You are signed in as {}, a member; ask an administrator ({}) to do it or to make you one.",
            self.user.name,
            admins.join(", ")
        )))
    }
}

/// The value of cookie `name` in a request's headers.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl FromRequestParts<AppState> for Me {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let to_login = || {
            let next = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let next = url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>();
            Redirect::to(&format!("/login?next={next}")).into_response()
        };
        let Some(token) =
            cookie(&parts.headers, SESSION_COOKIE).and_then(|c| state.session_token(c))
        else {
            return Err(to_login());
        };
        let user = state
            .store()
            .session_user(token)
            .map_err(|e| PageError::internal(e).into_response())?;
        match user {
            Some(user) => Ok(Me {
                user,
                token: token.to_owned(),
                csrf: state.csrf_for(token),
            }),
            None => Err(to_login()),
        }
    }
}

/// A failure shown as a page: what went wrong and what to do.
#[derive(Debug)]
pub(crate) enum PageError {
    BadRequest(String),
    Forbidden(String),
    NotFound(String),
    Internal(String),
}

impl PageError {
    /// A failure of the server's own (database, file, template); the message names it and
    /// never holds a secret (the stores' errors never do).
    pub(crate) fn internal(err: impl std::fmt::Display) -> Self {
        Self::Internal(err.to_string())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, "Bad request", m),
            Self::Forbidden(m) => (StatusCode::FORBIDDEN, "Not allowed", m),
            Self::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m),
            Self::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, "Something failed", m),
        };
        let env = crate::pages::templates();
        let html = env
            .get_template("error.html")
            .and_then(|t| {
                t.render(minijinja::context! { title, message, status => status.as_u16() })
            })
            .unwrap_or_else(|_| format!("{title}: {message}"));
        (status, Html(html)).into_response()
    }
}

/// The longest a request may take (engine calls inside have their own, shorter limits).
pub(crate) const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Answers 503 with a page when a request takes longer than [`REQUEST_TIMEOUT`].
pub(crate) async fn time_limit(req: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(res) => res,
        Err(_) => {
            let mut res = PageError::Internal(format!(
                "The request took longer than {} seconds and was stopped; nothing more will happen for it. Try again; if it keeps happening, check that the provider is reachable.",
                REQUEST_TIMEOUT.as_secs()
            ))
            .into_response();
            *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            res
        }
    }
}

/// The console's Content-Security-Policy: its own styles and scripts only, forms posted only to
/// itself, no framing.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The same for the Connections pages, whose Save & authorize and Authorize forms are answered
/// with a redirect to the provider's consent page. Browsers apply `form-action` to the redirects
/// of a form submission too (Chromium refuses the navigation), so there forms may also lead to
/// HTTPS sites and to plain HTTP on loopback (the sandbox's simulators).
const CSP_CONSENT: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self' https: http://127.0.0.1:* http://localhost:*; frame-ancestors 'none'; base-uri 'none'";

/// Every response's security headers: a strict CSP ([`CSP`], or [`CSP_CONSENT`] on the pages
/// under `/connections`), no MIME sniffing, no referrer, and no caching of pages.
pub(crate) async fn security_headers(req: Request, next: Next) -> Response {
    let consent_forms = req.uri().path().starts_with("/connections");
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(if consent_forms { CSP_CONSENT } else { CSP }),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// The CSRF check of every POST, before any handler: the form's `csrf` field must be the token
/// of the request's session (or, for the login form, of its login cookie). The body is read
/// (within the size limit) and handed on unchanged.
pub(crate) async fn csrf_guard(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if req.method() != axum::http::Method::POST {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        return PageError::BadRequest(format!(
            "The form is larger than the console accepts ({} KiB).",
            BODY_LIMIT / 1024
        ))
        .into_response();
    };
    let given = url::form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned());
    let expected_ok = |given: &str| {
        if parts.uri.path() == "/login" {
            cookie(&parts.headers, LOGIN_COOKIE)
                .is_some_and(|nonce| state.mac_ok("login", nonce, given))
        } else {
            cookie(&parts.headers, SESSION_COOKIE)
                .and_then(|c| state.session_token(c))
                .is_some_and(|token| state.mac_ok("csrf", token, given))
        }
    };
    if !given.as_deref().is_some_and(expected_ok) {
        return PageError::Forbidden(
            "The form's security token is missing or does not match your session, so nothing was changed. Reload the page and submit the form again (signing in again if your session ended).".into(),
        )
        .into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The peer address of a connection, over plain TCP or TLS (axum's own `ConnectInfo` knows
/// only its TCP listener).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerAddr(pub(crate) SocketAddr);

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, crate::tls::TlsListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// The client's address, when the server knows it (not in tests driving the router directly).
pub(crate) struct ClientAddr(pub(crate) Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<PeerAddr>>()
                .map(|ConnectInfo(PeerAddr(addr))| addr.ip().to_string()),
        ))
    }
}

/// A form body: every field in order (a field may repeat).
pub(crate) struct FormData(pub(crate) Vec<(String, String)>);

impl FormData {
    pub(crate) fn parse(bytes: &[u8]) -> Self {
        Self(url::form_urlencoded::parse(bytes).into_owned().collect())
    }

    /// The first value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for FormData {
    type Rejection = Response;

    async fn from_request(req: Request, _: &S) -> Result<Self, Response> {
        let bytes = axum::body::to_bytes(req.into_body(), BODY_LIMIT)
            .await
            .map_err(|_| PageError::BadRequest("The form is too large.".into()).into_response())?;
        Ok(Self::parse(&bytes))
    }
}

/// Runs engine work (a session's calls) on a runtime of its own on a blocking thread, as the
/// CLI does: the engine's futures borrow their session across awaits, which a handler's future
/// cannot hold and stay `Send`. Every call inside has the engine's own timeouts.
pub(crate) async fn engine<T, F>(work: impl FnOnce() -> F + Send + 'static) -> Result<T, PageError>
where
    T: Send + 'static,
    F: std::future::Future<Output = T>,
{
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(PageError::internal)?;
        Ok(rt.block_on(work()))
    })
    .await
    .map_err(PageError::internal)?
}

/// A redirect after a successful POST (303, so the browser GETs the next page).
pub(crate) fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}
