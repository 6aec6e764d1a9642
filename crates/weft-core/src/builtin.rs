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

#[cfg(test)]
mod tests {
    use super::*;

    fn connection_fields(id: &str) -> Vec<String> {
        let spec = load_all()
            .into_iter()
            .find_map(|r| r.spec.filter(|s| s.id() == id))
            .expect("a built-in spec");
        spec.file()
            .connection_fields()
            .iter()
            .map(|f| f.id.clone())
            .collect()
    }

    /// A connection holds the fields that are neither credentials, nor its concurrency, nor
    /// its OAuth client's ID and secret: host choices, versions, budgets, options.
    #[test]
    fn connection_fields_leave_out_credentials_concurrency_and_the_client() {
        assert_eq!(
            connection_fields("quickbooks"),
            ["environment", "minor_version"]
        );
        assert_eq!(connection_fields("hubspot"), ["burst_limit", "daily_limit"]);
        assert_eq!(
            connection_fields("xero"),
            ["include_archived_contacts", "four_decimal_unit_amounts"]
        );
        assert!(connection_fields("kantata").is_empty());
    }
}
