//! Weft's engine: it runs connector specs loaded by `weft-core`.
//!
//! Today it renders spec operations into concrete requests ([`request`]), finds records in
//! responses ([`extract`]), walks pages ([`paginate`]), seals credentials ([`secrets`]) and keeps
//! workspaces ([`workspace`]); the HTTP client, OAuth
//! token lifecycle, rate limiting, flows and state build on that.
//!
//! API boundary: the engine sees connectors only as [`weft_core::Spec`] values (and, later,
//! plugins through their C ABI); it never parses TOML itself.

pub mod cursor;
pub mod extract;
pub mod hooks;
pub mod http;
pub mod limits;
pub mod paginate;
pub mod plugin;
pub mod request;
pub mod secrets;
pub mod workspace;
pub mod write;

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
        operation: &'static str,
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
