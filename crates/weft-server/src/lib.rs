//! `weft serve`: the console, server-rendered HTML over the same workspace, credential store and
//! engine the `weft` command uses.
//!
//! [`router`] builds the whole application for a [`Config`] (tests drive it with
//! `tower::ServiceExt::oneshot`); [`serve`] binds it after [`check_bind`] allowed the address.
//! Users, sessions and the audit log are in the workspace's `.weft/console.db` ([`store`]).
//! Every page is a module of [`pages`] rendered into the one layout; every form POST passes the
//! CSRF check in [`web`] before any handler sees it.

pub mod automation;
pub mod notify;
mod pages;
pub mod schedule;
pub mod store;
pub mod tls;
mod web;
pub mod webhooks;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use store::{AuditEntry, Role, Store, StoreError, User};
pub use tls::{TlsError, TlsFiles};
use weft_core::Spec;

/// What the console serves.
#[derive(Debug, Clone)]
pub struct Config {
    /// The workspace folder (holding `weft.toml`).
    pub workspace: PathBuf,
    /// The address to listen on.
    pub listen: SocketAddr,
    /// Serve HTTPS with this certificate and key.
    pub tls: Option<TlsFiles>,
    /// Serve plain HTTP on an address other than loopback (the operator's explicit choice).
    pub insecure_http: bool,
    /// The connectors the console knows (built-in specs and `WEFT_SPEC_PATH`).
    pub specs: Vec<Spec>,
}

/// Errors of starting the console.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A non-loopback address without TLS or the explicit choice of plain HTTP.
    #[error(
        "{0} is not a loopback address: the console would be reachable by other machines over plain HTTP, passwords and session cookies readable on the network; pass --tls-cert FILE --tls-key FILE to serve HTTPS, listen on 127.0.0.1 (the default) behind a TLS-terminating proxy, or pass --insecure-http if you accept that"
    )]
    NotLoopback(SocketAddr),
    /// The certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The workspace cannot be opened.
    #[error(transparent)]
    Workspace(#[from] weft_engine::workspace::WorkspaceError),
    /// The console database cannot be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The console has no user yet.
    #[error(
        "the console has no user yet: add the first (an administrator) with `weft user add NAME`"
    )]
    NoUsers,
    /// The notification receivers or the webhook key cannot be read.
    #[error("{0}")]
    Automation(String),
    /// Binding or serving failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The console's address as people and providers use it: `localhost` for a loopback address
/// (Xero, for one, accepts `http://localhost` redirect URIs but refuses `http://127.0.0.1`, and
/// cookies belong to the host name, so the console must be opened under the same name its
/// callback uses), else the address itself.
pub fn base_url(listen: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    if listen.ip().is_loopback() {
        format!("{scheme}://localhost:{}", listen.port())
    } else {
        format!("{scheme}://{listen}")
    }
}

/// Whether the console may listen on `addr`: loopback always, anything else with TLS, or
/// with `insecure_http`, in which case the warning to print is returned.
pub fn check_bind(
    addr: SocketAddr,
    tls: bool,
    insecure_http: bool,
) -> Result<Option<String>, ServeError> {
    if addr.ip().is_loopback() || tls {
        Ok(None)
    } else if insecure_http {
        Ok(Some(format!(
            "warning: serving plain HTTP on {addr}: anyone on the network path can read passwords and session cookies; prefer 127.0.0.1 behind a TLS-terminating proxy"
        )))
    } else {
        Err(ServeError::NotLoopback(addr))
    }
}

/// The console's application for `config`: every page, the assets and the middleware
/// (security headers, body size limit, CSRF check).
pub fn router(config: Config) -> Result<axum::Router, ServeError> {
    let state = web::AppState::new(config)?;
    Ok(pages::routes(state))
}

/// The console with the Xero webhook route (`POST /webhooks/xero`) beside it, outside the
/// console's session, CSRF and time-limit layers: Xero cannot log in, so the route stands on its
/// signature check alone ([`webhooks`]).
pub fn router_with_xero_webhook(
    config: Config,
    hook: std::sync::Arc<webhooks::XeroWebhook>,
) -> Result<axum::Router, ServeError> {
    Ok(webhooks::routes(hook).merge(router(config)?))
}

/// What the server does by itself beside the pages ([`automation`]): the clock it schedules
/// on, how often it looks, and where it reports what it did.
pub struct Automate {
    /// Time for schedules (the wall clock in production).
    pub clock: std::sync::Arc<dyn weft_engine::limits::Clock>,
    /// The longest sleep between looks at the flows and the run history.
    pub poll: std::time::Duration,
    /// Where to report each thing it does (the CLI prints them).
    pub report: Option<tokio::sync::mpsc::UnboundedSender<automation::Happened>>,
}

impl Default for Automate {
    fn default() -> Self {
        Automate {
            clock: std::sync::Arc::new(weft_engine::limits::SystemClock),
            poll: automation::POLL,
            report: None,
        }
    }
}

/// How many webhook triggers may wait for the automation task before new ones are dropped
/// (the schedule still reads those changes later).
const TRIGGER_QUEUE: usize = 1024;

/// Serves the console until `shutdown` completes, with the automation of [`Automate::default`].
/// `ready` is called with the bound address (port 0 picks a free port).
pub async fn serve(
    config: Config,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_with(config, Automate::default(), ready, shutdown).await
}

/// Serves the console until `shutdown` completes, and beside it runs scheduled flows, flows a
/// Xero webhook asks for (when `weft webhook set-key xero` stored the signing key: the route
/// `POST /webhooks/xero` is then served) and notifications (receivers added with `weft notify
/// add`).
pub async fn serve_with(
    config: Config,
    automate: Automate,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    check_bind(config.listen, config.tls.is_some(), config.insecure_http)?;
    let acceptor = config.tls.as_ref().map(tls::acceptor).transpose()?;
    let ws = weft_engine::workspace::Workspace::find(&config.workspace)?;
    let store = ws.secrets()?;
    let receivers = notify::receivers(&store).map_err(|e| ServeError::Automation(e.to_string()))?;
    let notifier = notify::Notifier::from_receivers(&receivers)
        .map_err(|e| ServeError::Automation(e.to_string()))?;
    let key = webhooks::xero_key(&store).map_err(|e| ServeError::Automation(e.to_string()))?;
    drop(store);
    let addr = config.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError::Listen { addr, source })?;
    let mut config = config;
    config.listen = bound;
    let (triggers, app) = match key {
        Some(key) => {
            let (tx, rx) = tokio::sync::mpsc::channel(TRIGGER_QUEUE);
            let hook = std::sync::Arc::new(webhooks::XeroWebhook::new(&key, tx));
            (Some(rx), router_with_xero_webhook(config.clone(), hook)?)
        }
        None => (None, router(config.clone())?),
    };
    // Nobody listening: a channel whose receiver is gone, so reports are dropped, not kept.
    let report = automate
        .report
        .unwrap_or_else(|| tokio::sync::mpsc::unbounded_channel().0);
    let task = automation::Automation {
        workspace: config.workspace.clone(),
        specs: config.specs.clone(),
        callback: format!("{}/oauth/callback", base_url(bound, config.tls.is_some())),
        clock: automate.clock,
        notifier,
        triggers,
        poll: automate.poll,
        report,
    };
    let automation = tokio::spawn(task.run(std::future::pending()));
    ready(bound);
    let service = app.into_make_service_with_connect_info::<web::PeerAddr>();
    let served = match acceptor {
        Some(acceptor) => {
            let listener = tls::TlsListener::new(listener, acceptor)
                .map_err(|source| ServeError::Listen { addr, source })?;
            axum::serve(listener, service)
                .with_graceful_shutdown(shutdown)
                .await
        }
        None => {
            axum::serve(listener, service)
                .with_graceful_shutdown(shutdown)
                .await
        }
    };
    automation.abort();
    served.map_err(|source| ServeError::Listen { addr, source })
}
