//! Weft's engine: it runs connector specs loaded by `weft-core`.
//!
//! It renders spec operations into concrete requests ([`request`]), sends them ([`http`]) within
//! the provider's limits ([`limits`]), finds records in responses ([`extract`]), walks pages
//! ([`paginate`]), authorizes with OAuth ([`oauth`]) and keeps tokens fresh ([`tokens`]), seals
//! credentials ([`secrets`]), keeps workspaces ([`workspace`]) and their state between runs
//! ([`state`]). A [`session::Session`] puts these together for one connection; flows build on it.
//!
//! Flows ([`flow`], [`mapping`], [`sync`]) run on sessions and keep their memory in [`state`];
//! native plugins are loaded by [`plugin`] (the one place with unsafe loading code) and applied by
//! [`hooks`].
//!
//! API boundary: the engine sees connectors only as [`weft_core::Spec`] values and plugins
//! through their C ABI; it parses no connector TOML itself (only its own `weft.toml` and flows).

pub mod cassette;
pub mod connect;
pub mod cursor;
pub mod exact;
pub mod extract;
pub mod files;
pub mod fleet;
pub mod flow;
pub mod flows;
pub mod hooks;
pub mod http;
pub mod limits;
pub mod mapping;
pub mod oauth;
pub mod paginate;
pub mod plugin;
pub mod queue;
pub mod request;
pub mod run;
pub mod runlock;
pub mod schedule;
pub mod secrets;
pub mod session;
pub mod state;
pub mod tables;
pub mod tokens;
pub mod workspace;
pub mod write;

/// Locks `m`, going on with the data of a holder that panicked (counters and caches stay usable).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Errors of the engine, each naming what failed and what to do.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A resource the spec does not declare.
    #[error(
        "connector `{connector}` has no resource `{resource}`; see `weft connectors show {connector}`"
    )]
    UnknownResource {
        /// Connector id.
        connector: String,
        /// The resource asked for.
        resource: String,
    },
    /// An operation the resource does not declare.
    #[error(
        "resource `{resource}` of connector `{connector}` cannot `{operation}`; see `weft connectors show {connector}`"
    )]
    NoOperation {
        /// Connector id.
        connector: String,
        /// Resource name.
        resource: String,
        /// The operation asked for.
        operation: String,
    },
    /// A host name the spec does not declare (in an override, or an operation).
    #[error("connector `{connector}` has no host `{host}`; declared hosts: {declared}")]
    UnknownHost {
        /// The host name.
        host: String,
        /// Connector id.
        connector: String,
        /// The hosts it does declare.
        declared: String,
    },
    /// A connection's value of a field that chooses a host, which is not one of its choices.
    #[error(
        "connection field `{field}` is `{value}`, which is not one of its choices ({choices}); set it with `weft connection edit NAME --field {field}=CHOICE`"
    )]
    BadHostChoice {
        /// The field id.
        field: String,
        /// The value given.
        value: String,
        /// The field's choices, comma-separated.
        choices: String,
    },
    /// A connection's value of a field that the field's rules refuse (edited by hand).
    #[error(
        "connection field `{field}` is `{value}`, which is refused: {reason}; set it with `weft connection edit NAME --field {field}=VALUE`"
    )]
    BadField {
        /// The field id.
        field: String,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// A host override that is not a URL.
    #[error("the override of host `{host}` is not a URL (`{url}`): {reason}")]
    BadHostOverride {
        /// The host name.
        host: String,
        /// The value given.
        url: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A template that failed to render (for instance a variable missing at run time).
    #[error("template {place} failed: {reason}")]
    Template {
        /// Where the template is.
        place: String,
        /// MiniJinja's explanation.
        reason: String,
    },
    /// A rendered URL that does not parse.
    #[error("the request URL `{url}` is not valid: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A next-page URL on another host than the operation's.
    #[error(
        "the provider's next-page URL `{url}` is not on the operation's host `{host}`; Weft does not send the connection's credentials elsewhere"
    )]
    ForeignNextUrl {
        /// The URL the provider gave.
        url: String,
        /// The operation's base URL.
        host: String,
    },
    /// A record filter (`keep-if`) that cannot be judged for a record.
    #[error(
        "the record filter {place} failed on a record: {reason}; a field some records lack needs `default`, such as `record.archived | default(false)`"
    )]
    Filter {
        /// Where the filter is.
        place: String,
        /// MiniJinja's explanation.
        reason: String,
    },
    /// A tenanted resource called without a tenant.
    #[error(
        "resource `{resource}` of `{connector}` needs a tenant, and none is selected; pass --tenant or authorize the connection again"
    )]
    NoTenant {
        /// Connector id.
        connector: String,
        /// Resource name.
        resource: String,
    },
}
