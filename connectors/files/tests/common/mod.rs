//! Helpers shared by the files connector's tests: the plugin built as a real cdylib and loaded
//! through the engine's host, and specs that delegate a resource to it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use weft_core::{Spec, load_str};
use weft_engine::plugin::Plugins;
use weft_harness::cdylib::{Targets, build, pick};

/// The plugin directory holding the freshly built `files` plugin.
pub(crate) fn plugins() -> Plugins {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let built = build("weft-connector-files", Targets::Lib).expect("the files plugin builds");
        pick(&built, "weft_plugin_files")
            .parent()
            .expect("a directory")
            .to_owned()
    });
    Plugins::new(vec![dir.clone()])
}

/// A spec whose resource `rows` is run by the files plugin, with `fields` as its field rules
/// (TOML lines under `[resources.rows.fields]`).
pub(crate) fn spec(fields: &str) -> Spec {
    let text = format!(
        "id = \"sheet\"\nname = \"Sheet\"\nversion = \"1.0.0\"\n\n[test]\nresource = \"rows\"\n\n\
         [resources.rows]\nprimary-key = \"id\"\nplugin = \"files\"\n\n[resources.rows.fields]\n{fields}"
    );
    let report = load_str("sheet.toml", &text);
    assert!(report.diagnostics.is_empty(), "{}", report.render());
    report.spec.expect("loads")
}

/// A fresh temporary directory for one test.
pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-files-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}
