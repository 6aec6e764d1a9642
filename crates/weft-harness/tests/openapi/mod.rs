//! Xero's official OpenAPI schemas as a validator, read from the fixture inside the repository
//! (`tests/fixtures/xero-openapi/`, made by `cargo xtask openapi` from XeroAPI/Xero-OpenAPI 16.1.0:
//! schemas only, MIT notice beside them), so these tests need nothing outside the checkout.
//!
//! Each document is handed to a JSON Schema validator as one resource, so
//! `$ref: "#/components/schemas/…"` resolves inside it. OpenAPI 3.0 schemas are JSON Schema draft 4
//! plus keywords the validator ignores; these documents use no `nullable`. Formats are asserted
//! (uuid, date-time), with one narrow exception documented in [`adjust`].

// Each test binary that includes this module uses a part of it.
#![allow(dead_code)]

use boon::{Compiler, Draft, Schemas};
use serde_json::Value;

/// The fixture's folder.
const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/xero-openapi/");

/// The Accounting API document.
pub(crate) const ACCOUNTING: &str = "xero_accounting";
/// The identity (connections) document.
pub(crate) const IDENTITY: &str = "xero-identity";

/// One document of the fixture, as the official schemas say it.
pub(crate) fn unadjusted(name: &str) -> Value {
    let path = format!("{DIR}{name}.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("{path}: {e}; the fixture is part of the repository (regenerate it with `cargo xtask openapi`)")
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Narrow corrections where the official schema refuses what real Xero sends.
fn adjust(name: &str, doc: &mut Value) {
    if name == IDENTITY {
        // Connection.createdDateUtc / updatedDateUtc are declared `format: date-time`, but Xero
        // sends them without a zone ("2019-12-07T18:46:19.5165400"; xero-api.md §1.4), which is not
        // an RFC 3339 date-time. Keep them strings, drop the format.
        for key in ["createdDateUtc", "updatedDateUtc"] {
            if let Some(p) =
                doc.pointer_mut(&format!("/components/schemas/Connection/properties/{key}"))
                && let Some(m) = p.as_object_mut()
            {
                m.remove("format");
            }
        }
    }
}

/// The schemas of both documents, compiled on demand.
pub(crate) struct Validator {
    schemas: Schemas,
    compiler: Compiler,
}

impl Validator {
    /// Both documents, with [`adjust`] applied.
    pub(crate) fn new() -> Self {
        let mut v = Self::empty();
        for name in [ACCOUNTING, IDENTITY] {
            let mut doc = unadjusted(name);
            adjust(name, &mut doc);
            v.add(name, doc);
        }
        v
    }

    /// A validator with no document yet.
    pub(crate) fn empty() -> Self {
        let mut compiler = Compiler::new();
        compiler.set_default_draft(Draft::V4);
        compiler.enable_format_assertions();
        Self {
            schemas: Schemas::new(),
            compiler,
        }
    }

    /// Adds `doc` under `name`.
    pub(crate) fn add(&mut self, name: &str, doc: Value) {
        self.compiler
            .add_resource(&format!("file:///{name}.json"), doc)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }

    /// The validation error of `instance` against the schema at `name#pointer`, if any.
    pub(crate) fn error(&mut self, name: &str, pointer: &str, instance: &Value) -> Option<String> {
        let loc = format!("file:///{name}.json#{pointer}");
        let idx = self
            .compiler
            .compile(&loc, &mut self.schemas)
            .unwrap_or_else(|e| panic!("{loc}: {e:#}"));
        self.schemas
            .validate(instance, idx)
            .err()
            .map(|e| format!("{e:#}"))
    }

    /// Whether `instance` matches the schema at `name#pointer`.
    pub(crate) fn valid(&mut self, name: &str, pointer: &str, instance: &Value) -> bool {
        self.error(name, pointer, instance).is_none()
    }

    /// Panics, saying `what` and why, unless `instance` matches the schema at `name#pointer`.
    pub(crate) fn check(&mut self, name: &str, pointer: &str, instance: &Value, what: &str) {
        if let Some(e) = self.error(name, pointer, instance) {
            panic!(
                "{what} does not match {pointer}:\n{e}\n{}",
                serde_json::to_string_pretty(instance).unwrap_or_default()
            );
        }
    }

    /// [`Self::check`] against a component schema of the Accounting API.
    pub(crate) fn accounting(&mut self, schema: &str, instance: &Value, what: &str) {
        self.check(
            ACCOUNTING,
            &format!("/components/schemas/{schema}"),
            instance,
            what,
        );
    }
}
