//! Weft's core: the connector spec language.
//!
//! A connector is one TOML file. This crate holds its model ([`model`]), the loader that turns
//! text into a [`Spec`] while locating every problem ([`load`]), the cross-checks ([`validate`]),
//! the template rules ([`template`]), the JSON Schema ([`schema`]), the Markdown reference
//! ([`docs`]) and the specs that ship with Weft ([`builtin`]).
//!
//! Architecture invariant: nothing here touches the network or loads native code; the only I/O
//! is reading the spec files it is asked to read.

pub mod builtin;
pub mod diagnostic;
pub mod docs;
pub mod duration;
pub mod fieldpath;
pub mod form;
pub mod load;
pub mod model;
pub mod schema;
pub mod template;
pub mod validate;

pub use diagnostic::{Diagnostic, Severity, SourceFile};
pub use load::{Report, Spec, load_file, load_str};

/// The port of the loopback server that receives OAuth callbacks, unless configured otherwise.
pub const DEFAULT_CALLBACK_PORT: u16 = 8976;

/// The callback (redirect) URL to register at a provider for the given port.
///
/// It uses `localhost`, not `127.0.0.1`: Xero refuses `http://127.0.0.1` redirect URIs but
/// accepts `http://localhost`, and the callback server listens on 127.0.0.1 either way.
pub fn callback_url(port: u16) -> String {
    format!("http://localhost:{port}/oauth/callback")
}
