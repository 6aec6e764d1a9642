//! The connector specs that ship inside Weft, so the binary works from any directory.

use crate::load::{Report, load_str};

/// `(file name, text)` of each built-in spec.
pub const SPECS: &[(&str, &str)] = &[
    (
        "specs/kantata.toml",
        include_str!("../../../specs/kantata.toml"),
    ),
    ("specs/xero.toml", include_str!("../../../specs/xero.toml")),
    (
        "specs/quickbooks.toml",
        include_str!("../../../specs/quickbooks.toml"),
    ),
    (
        "specs/hubspot.toml",
        include_str!("../../../specs/hubspot.toml"),
    ),
    (
        "specs/files.toml",
        include_str!("../../../specs/files.toml"),
    ),
];

/// Loads every built-in spec.
pub fn load_all() -> Vec<Report> {
    SPECS
        .iter()
        .map(|(name, text)| load_str(name, text))
        .collect()
}
