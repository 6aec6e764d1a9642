//! The catalogue of connector specs: the built-in ones, plus `*.toml` files in the directories
//! listed in `WEFT_SPEC_PATH` (a later file with the same id replaces an earlier one).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use weft_core::{Spec, builtin, load_file};

/// Environment variable listing extra spec directories, separated like `PATH`.
pub(crate) const SPEC_PATH_VAR: &str = "WEFT_SPEC_PATH";

/// Every spec Weft can use; a spec with errors makes this fail with its diagnostics. Loaded
/// once per process and `WEFT_SPEC_PATH` value (a command looks connectors up many times).
pub(crate) fn catalogue() -> Result<Vec<Spec>> {
    type Loaded = Option<(Option<std::ffi::OsString>, Vec<Spec>)>;
    static LOADED: std::sync::Mutex<Loaded> = std::sync::Mutex::new(None);
    let path = std::env::var_os(SPEC_PATH_VAR);
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((for_path, specs)) = loaded.as_ref()
        && *for_path == path
    {
        return Ok(specs.clone());
    }
    let specs = load_catalogue()?;
    *loaded = Some((path, specs.clone()));
    Ok(specs)
}

fn load_catalogue() -> Result<Vec<Spec>> {
    let mut reports = builtin::load_all();
    if let Some(dirs) = std::env::var_os(SPEC_PATH_VAR) {
        for dir in std::env::split_paths(&dirs) {
            reports.extend(spec_files(&dir)?.iter().map(|p| load_file(p)));
        }
    }
    let mut specs: Vec<Spec> = Vec::new();
    for report in reports {
        match report.spec {
            Some(spec) => {
                specs.retain(|s| s.id() != spec.id());
                specs.push(spec);
            }
            None => bail!(
                "spec {} has errors; run `weft spec check {}`\n{}",
                report.source.name(),
                report.source.name(),
                report.render()
            ),
        }
    }
    Ok(specs)
}

/// Finds a connector by id, or by a former name (so `mavenlink` finds Kantata).
pub(crate) fn find(id: &str) -> Result<Spec> {
    let specs = catalogue()?;
    let wanted = id.to_lowercase();
    let found = specs.iter().find(|s| s.id() == wanted).or_else(|| {
        specs.iter().find(|s| {
            s.file().name.to_lowercase() == wanted
                || s.file()
                    .former_names
                    .iter()
                    .any(|n| n.to_lowercase() == wanted)
        })
    });
    match found {
        Some(spec) => Ok(spec.clone()),
        None => {
            let ids: Vec<&str> = specs.iter().map(Spec::id).collect();
            bail!(
                "no connector `{id}`; known connectors: {} (see `weft connectors list`)",
                ids.join(", ")
            )
        }
    }
}

/// The `*.toml` files of a directory, sorted; a file path is returned as is.
pub(crate) fn spec_files(path: &std::path::Path) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path)
        .with_context(|| format!("cannot list spec directory {}", path.display()))?
    {
        let entry =
            entry.with_context(|| format!("cannot list spec directory {}", path.display()))?;
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "toml") {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}
