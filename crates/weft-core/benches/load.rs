//! Loading and validating the shipped specs (the figure `weft` pays at start-up for each command
//! that needs the catalogue). Run with `cargo bench -p weft-core --bench load`.

use weft_core::builtin;

fn main() {
    divan::main();
}

/// Both built-in specs, parsed, deserialized and cross-checked.
#[divan::bench]
fn load_and_validate_all() -> usize {
    let reports = builtin::load_all();
    assert!(reports.iter().all(|r| r.spec.is_some()));
    divan::black_box(reports.len())
}

/// Each built-in spec on its own.
#[divan::bench(args = ["specs/kantata.toml", "specs/xero.toml"])]
fn load_one(name: &str) -> bool {
    let (_, text) = builtin::SPECS
        .iter()
        .find(|(n, _)| *n == name)
        .copied()
        .unwrap_or_default();
    divan::black_box(weft_core::load_str(name, text).spec.is_some())
}
