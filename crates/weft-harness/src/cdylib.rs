//! Builds plugin libraries for tests with `cargo build` and finds them by cargo's own account
//! (`--message-format=json`), so tests work with any target directory or profile.
//!
//! Cargo cannot depend on a `cdylib` on stable, so a test that loads a plugin builds it first.

use std::env::consts::DLL_SUFFIX;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What of a package to build.
#[derive(Debug, Clone, Copy)]
pub enum Targets {
    /// Its library.
    Lib,
    /// Its examples (fixture plugins).
    Examples,
}

/// Builds `package` and returns the dynamic libraries cargo reports, by path.
pub fn build(package: &str, targets: Targets) -> Result<Vec<PathBuf>, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // Any directory of the workspace will do: the test's own package (cargo sets the variable
    // when it runs a test), else this crate's, as it was when compiled.
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_owned());
    let output = Command::new(cargo)
        .current_dir(&dir)
        .args(["build", "--quiet", "--message-format=json", "-p", package])
        .arg(match targets {
            Targets::Lib => "--lib",
            Targets::Examples => "--examples",
        })
        .output()
        .map_err(|e| format!("cargo could not be run: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo build -p {package} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let files = message["filenames"].as_array().into_iter().flatten();
        found.extend(
            files
                .filter_map(|f| f.as_str())
                .filter(|f| f.ends_with(DLL_SUFFIX))
                .map(PathBuf::from),
        );
    }
    if found.is_empty() {
        return Err(format!(
            "cargo build -p {package} reported no dynamic library"
        ));
    }
    Ok(found)
}

/// The library among `built` whose file name contains `stem` (e.g. `weft_plugin_files`).
pub fn pick(built: &[PathBuf], stem: &str) -> PathBuf {
    built
        .iter()
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(stem))
        })
        .cloned()
        .unwrap_or_else(|| panic!("no `{stem}` among {built:?}"))
}
