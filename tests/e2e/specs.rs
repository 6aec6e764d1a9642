//! Snapshots of each shipped spec's loaded model and of its generated reference doc.

use weft_core::{DEFAULT_CALLBACK_PORT, builtin, callback_url, docs};

#[test]
fn shipped_specs_load_without_diagnostics() {
    for report in builtin::load_all() {
        assert!(report.diagnostics.is_empty(), "{}", report.render());
    }
}

#[test]
fn loaded_models() {
    for report in builtin::load_all() {
        let spec = report.spec.expect("loads");
        // Maps sorted: a JSON value in a spec (a body template) keeps its keys in file order when
        // another crate in the build turns on serde_json's `preserve_order`, and sorted otherwise.
        insta::with_settings!({ sort_maps => true }, {
            insta::assert_json_snapshot!(format!("model-{}", spec.id()), spec.file());
        });
    }
}

#[test]
fn generated_docs() {
    for report in builtin::load_all() {
        let spec = report.spec.expect("loads");
        insta::assert_snapshot!(
            format!("doc-{}", spec.id()),
            docs::markdown(&spec, &callback_url(DEFAULT_CALLBACK_PORT))
        );
    }
}
