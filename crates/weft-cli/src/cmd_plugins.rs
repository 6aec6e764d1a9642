//! Native plugins from the command line: `weft plugins list`, `weft doctor`, and `weft read` /
//! `weft write` of resources a plugin runs.
//!
//! A resource run by a plugin needs no connection: the command names the connector and the
//! place the data is, as `CONNECTOR:LOCATION` (`weft read files:contacts.csv rows`).

use std::io::BufRead;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde::Serialize;
use weft_core::{Spec, builtin, load_file};
use weft_engine::hooks::{self, Session};
use weft_engine::plugin::{PLUGIN_PATH_VAR, Plugin, Plugins};
use weft_plugin_abi::ResourceOperation;

use crate::{Io, specs};

/// Records asked of a plugin per call: enough to amortize a call, few enough to keep memory flat.
const BATCH: u32 = 1000;

/// `weft plugins …`.
#[derive(Debug, Subcommand)]
pub(crate) enum PluginsCmd {
    /// List the plugins found in the plugin directories, with their version, ABI and capabilities.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Serialize)]
struct Listed {
    name: String,
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    abi: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hooks: Vec<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    operations: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Runs `weft plugins …`.
pub(crate) fn run(cmd: PluginsCmd, io: &mut Io<'_>) -> Result<u8> {
    let PluginsCmd::List { json } = cmd;
    let plugins = Plugins::from_env();
    let listed: Vec<Listed> = plugins
        .discover()
        .into_iter()
        .map(|(name, path)| {
            let mut row = Listed {
                name: name.clone(),
                path: path.display().to_string(),
                version: None,
                abi: None,
                hooks: Vec::new(),
                operations: Vec::new(),
                error: None,
            };
            match plugins.get(&name) {
                Ok(plugin) => {
                    let caps = &plugin.manifest().capabilities;
                    row.version = Some(plugin.manifest().version.clone());
                    row.abi = Some(plugin.abi());
                    row.hooks = caps.hooks.iter().map(|h| h.as_str()).collect();
                    row.operations = caps.operations.iter().map(|o| o.as_str()).collect();
                }
                Err(err) => row.error = Some(err.to_string()),
            }
            row
        })
        .collect();
    let failed = listed.iter().any(|l| l.error.is_some());
    if json {
        serde_json::to_writer_pretty(&mut *io.out, &listed)?;
        writeln!(io.out)?;
        return Ok(u8::from(failed));
    }
    if listed.is_empty() {
        writeln!(
            io.err,
            "no plugins found in {}; run `cargo xtask plugins build`, or add a directory to {PLUGIN_PATH_VAR}",
            dirs(&plugins)
        )?;
        return Ok(0);
    }
    let mut table = crate::table::Columns::new(&["NAME", "VERSION", "ABI", "PROVIDES", "PATH"]);
    for row in &listed {
        let provides = match &row.error {
            None => {
                let mut provides: Vec<String> =
                    row.hooks.iter().map(|h| format!("{h} hook")).collect();
                provides.extend(row.operations.iter().map(|o| (*o).to_owned()));
                provides.join(", ")
            }
            Some(error) => format!("✘ {error}"),
        };
        table.row([
            row.name.clone(),
            row.version.clone().unwrap_or_else(|| "-".to_owned()),
            row.abi.map_or_else(|| "-".to_owned(), |a| a.to_string()),
            provides,
            row.path.clone(),
        ]);
    }
    table.write(io.out)?;
    Ok(u8::from(failed))
}

/// `weft doctor`: ✓ or ✘ for every spec (loads), every plugin (loads, ABI in range, manifest)
/// and every plugin a spec names (found, and provides what the spec asks).
pub(crate) fn doctor(io: &mut Io<'_>) -> Result<u8> {
    let plugins = Plugins::from_env();
    let mut failures = 0usize;
    let mut mark = |ok: bool| {
        if !ok {
            failures += 1;
        }
        if ok { "✓" } else { "✘" }
    };
    writeln!(io.out, "Specs")?;
    let mut reports = builtin::load_all();
    if let Some(path) = std::env::var_os(specs::SPEC_PATH_VAR) {
        for dir in std::env::split_paths(&path).filter(|d| !d.as_os_str().is_empty()) {
            reports.extend(specs::spec_files(&dir)?.iter().map(|p| load_file(p)));
        }
    }
    let mut loaded: Vec<Spec> = Vec::new();
    for report in reports {
        let name = report.source.name().to_owned();
        let warnings = report.warning_count();
        match report.spec {
            Some(spec) => {
                let note = if warnings > 0 {
                    format!(" ({warnings} warnings; run `weft spec check {name}`)")
                } else {
                    String::new()
                };
                writeln!(io.out, "  {} {} loads{note}", mark(true), name)?;
                loaded.push(spec);
            }
            None => writeln!(
                io.out,
                "  {} {} has errors; run `weft spec check {}`",
                mark(false),
                name,
                name
            )?,
        }
    }
    writeln!(io.out, "Plugins (searched: {})", dirs(&plugins))?;
    let discovered = plugins.discover();
    if discovered.is_empty() {
        writeln!(
            io.out,
            "  none found (the connectors' plugins are built with `cargo xtask plugins build`)"
        )?;
    }
    for (name, _) in &discovered {
        match plugins.get(name) {
            Ok(plugin) => writeln!(io.out, "  {} {}", mark(true), describe(&plugin))?,
            Err(err) => writeln!(io.out, "  {} {name}: {err}", mark(false))?,
        }
    }
    writeln!(io.out, "Hooks")?;
    let mut any = false;
    let mut unbuilt = Vec::new();
    for spec in &loaded {
        for (key, plugin, outcome) in hooks::check(spec.file(), &plugins) {
            any = true;
            match hook_state(&plugin, outcome, shipped) {
                HookState::Ready => writeln!(
                    io.out,
                    "  {} {} {key} → plugin `{plugin}`",
                    mark(true),
                    spec.id()
                )?,
                HookState::NotBuilt => {
                    writeln!(
                        io.out,
                        "  ○ {} {key} → plugin `{plugin}`, not built yet",
                        spec.id()
                    )?;
                    if !unbuilt.contains(&plugin) {
                        unbuilt.push(plugin);
                    }
                }
                HookState::Broken(err) => {
                    writeln!(io.out, "  {} {} {key}: {err}", mark(false), spec.id())?;
                }
            }
        }
    }
    if !any {
        writeln!(io.out, "  no spec names a plugin")?;
    }
    if !unbuilt.is_empty() {
        writeln!(
            io.err,
            "not built yet: plugin(s) {}; build them with `cargo xtask plugins build` (the specs that need them work once they are)",
            unbuilt.join(", ")
        )?;
    }
    if failures > 0 {
        writeln!(io.err, "{failures} problems found")?;
        return Ok(1);
    }
    if unbuilt.is_empty() {
        writeln!(io.err, "everything is in order")?;
    } else {
        writeln!(io.err, "everything else is in order")?;
    }
    Ok(0)
}

/// Where a spec's plugin reference stands in `weft doctor`.
#[derive(Debug)]
enum HookState {
    /// Found, loaded, and it provides what the spec asks.
    Ready,
    /// Not found, but its package is in this checkout's `connectors/`: it has not been built
    /// yet, which `cargo xtask plugins build` does (a fresh clone's state, not a fault).
    NotBuilt,
    /// Missing for good, or found and broken.
    Broken(hooks::HookError),
}

/// Classifies the outcome of checking plugin `name`; `shipped` says whether this checkout has
/// a package that builds it.
fn hook_state(
    name: &str,
    outcome: Result<(), hooks::HookError>,
    shipped: impl Fn(&str) -> bool,
) -> HookState {
    match outcome {
        Ok(()) => HookState::Ready,
        Err(hooks::HookError::Load(weft_engine::plugin::LoadError::NotFound { .. }))
            if shipped(name) =>
        {
            HookState::NotBuilt
        }
        Err(err) => HookState::Broken(err),
    }
}

/// Whether the checkout Weft was built from has a connector package building plugin `name`.
fn shipped(name: &str) -> bool {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../connectors")
        .join(name)
        .join("Cargo.toml")
        .is_file()
}

fn describe(plugin: &Plugin) -> String {
    let m = plugin.manifest();
    format!(
        "{} {}: ABI {} in range {}..={}, {}",
        m.name,
        m.version,
        plugin.abi(),
        weft_plugin_abi::ABI_MIN,
        weft_plugin_abi::ABI_VERSION,
        plugin.path().display()
    )
}

fn dirs(plugins: &Plugins) -> String {
    plugins
        .dirs()
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A resource run by a plugin, addressed as `CONNECTOR:LOCATION`.
struct Target {
    spec: Spec,
    resource: String,
    location: String,
}

impl Target {
    /// Opens a session of `operation` on the target, through the plugin the resource names.
    fn open(&self, operation: ResourceOperation) -> Result<Session> {
        let Some(resource) = self.spec.file().resources.get(&self.resource) else {
            bail!(
                "connector `{}` has no resource `{}`",
                self.spec.id(),
                self.resource
            );
        };
        Ok(Session::open(
            &Plugins::from_env(),
            self.spec.file(),
            &self.resource,
            resource,
            operation,
            &self.location,
        )?)
    }
}

/// Whether `connection` and `resource` name a resource a plugin runs; `None` leaves the command
/// to the connection path.
fn target(connection: &str, resource: &str) -> Result<Option<Target>> {
    let Some((connector, location)) = connection.split_once(':') else {
        // `weft read files rows`: say how to name the file rather than "no connection `files`".
        if let Ok(spec) = specs::find(connection)
            && spec
                .file()
                .resources
                .get(resource)
                .is_some_and(|r| r.plugin.is_some())
        {
            bail!(
                "resource `{resource}` of `{}` is run by a plugin and reads from a place you name: write `{}:LOCATION`, such as `weft read {}:data.csv {resource}`",
                spec.id(),
                spec.id(),
                spec.id()
            );
        }
        return Ok(None);
    };
    let spec = specs::find(connector)?;
    let file = spec.file();
    let Some(found) = file.resources.get(resource) else {
        let names: Vec<&str> = file.resources.keys().map(String::as_str).collect();
        bail!(
            "connector `{}` has no resource `{resource}`; its resources: {}",
            file.id,
            names.join(", ")
        );
    };
    if found.plugin.is_none() {
        bail!(
            "resource `{resource}` of `{}` is not run by a plugin, so it is read through a connection, not `{}:LOCATION`; see `weft connection list`",
            file.id,
            file.id
        );
    }
    if location.is_empty() {
        bail!("`{connection}` names no location; write `{}:PATH`", file.id);
    }
    Ok(Some(Target {
        resource: resource.to_owned(),
        location: location.to_owned(),
        spec,
    }))
}

/// `weft read CONNECTOR:LOCATION RESOURCE`: the records as JSON Lines on stdout, each bad row
/// on stderr with its location; exit 1 when any row was bad. `None` when not a plugin resource.
pub(crate) fn read_via_plugin(
    connection: &str,
    resource: &str,
    limit: Option<u64>,
    io: &mut Io<'_>,
) -> Result<Option<u8>> {
    let Some(target) = target(connection, resource)? else {
        return Ok(None);
    };
    let mut session = target.open(ResourceOperation::List)?;
    let (mut read, mut bad) = (0u64, 0u64);
    loop {
        let want = limit.map_or(BATCH, |l| {
            u32::try_from(l.saturating_sub(read)).map_or(BATCH, |n| n.min(BATCH))
        });
        if want == 0 {
            break;
        }
        let batch = session.next(want)?;
        for record in &batch.records {
            serde_json::to_writer(&mut *io.out, record)?;
            writeln!(io.out)?;
        }
        read += batch.records.len() as u64;
        for error in &batch.errors {
            bad += 1;
            writeln!(io.err, "error: {}: {}", error.at, error.message)?;
        }
        if batch.done {
            break;
        }
    }
    session.close()?;
    writeln!(io.err, "{read} records read, {bad} rows refused")?;
    Ok(Some(u8::from(bad > 0)))
}

/// One line of `weft write` output for a plugin resource.
#[derive(Serialize)]
struct WriteResult {
    index: usize,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    at: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<String>,
}

/// `weft write CONNECTOR:LOCATION RESOURCE < records.jsonl`: one result per input record on
/// stdout; exit 1 when any was refused. `None` when not a plugin resource.
pub(crate) fn write_via_plugin(
    connection: &str,
    resource: &str,
    update: bool,
    io: &mut Io<'_>,
) -> Result<Option<u8>> {
    let Some(target) = target(connection, resource)? else {
        return Ok(None);
    };
    let operation = if update {
        ResourceOperation::Update
    } else {
        ResourceOperation::Create
    };
    let mut session = target.open(operation)?;
    let mut counts = Counts::default();
    let mut pending: Vec<(usize, serde_json::Value)> = Vec::new();
    for (index, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("cannot read standard input")?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(record) => pending.push((index, record)),
            Err(e) => {
                flush(&mut pending, io, &mut session, &mut counts)?;
                counts.failed += 1;
                let line = WriteResult {
                    index,
                    status: "failed",
                    at: None,
                    errors: vec![format!("line {}: not JSON ({e})", index + 1)],
                };
                writeln!(io.out, "{}", serde_json::to_string(&line)?)?;
            }
        }
        if pending.len() >= BATCH as usize {
            flush(&mut pending, io, &mut session, &mut counts)?;
        }
    }
    flush(&mut pending, io, &mut session, &mut counts)?;
    session.close()?;
    writeln!(io.err, "{} written, {} failed", counts.ok, counts.failed)?;
    Ok(Some(u8::from(counts.failed > 0)))
}

#[derive(Default)]
struct Counts {
    ok: usize,
    failed: usize,
}

/// Writes the pending records and prints their results, in input order.
fn flush(
    pending: &mut Vec<(usize, serde_json::Value)>,
    io: &mut Io<'_>,
    session: &mut Session,
    counts: &mut Counts,
) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let (indexes, records): (Vec<usize>, Vec<serde_json::Value>) = pending.drain(..).unzip();
    for (index, result) in indexes.into_iter().zip(session.write(records)?) {
        let line = match result.error {
            None => {
                counts.ok += 1;
                WriteResult {
                    index,
                    status: "ok",
                    at: result.at,
                    errors: Vec::new(),
                }
            }
            Some(error) => {
                counts.failed += 1;
                WriteResult {
                    index,
                    status: "failed",
                    at: None,
                    errors: vec![error],
                }
            }
        };
        writeln!(io.out, "{}", serde_json::to_string(&line)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use weft_engine::hooks::HookError;
    use weft_engine::plugin::LoadError;

    use super::{HookState, hook_state, shipped};

    fn not_found(name: &str) -> Result<(), HookError> {
        Err(HookError::Load(LoadError::NotFound {
            name: name.to_owned(),
            file: format!("libweft_plugin_{name}.so"),
            searched: vec![PathBuf::from("/nowhere")],
        }))
    }

    #[test]
    fn a_plugin_not_built_yet_is_told_from_a_missing_or_broken_one() {
        // The files connector ships in this checkout: not found means not built yet.
        assert!(shipped("files"));
        assert!(matches!(
            hook_state("files", not_found("files"), shipped),
            HookState::NotBuilt
        ));
        // A plugin no package builds is missing for good.
        assert!(!shipped("ledger-sync"));
        assert!(matches!(
            hook_state("ledger-sync", not_found("ledger-sync"), shipped),
            HookState::Broken(_)
        ));
        // Found but not loadable is broken, shipped or not.
        let bad = Err(HookError::Load(LoadError::BadManifest {
            path: PathBuf::from("/x/libweft_plugin_files.so"),
            reason: "not JSON".to_owned(),
        }));
        assert!(matches!(
            hook_state("files", bad, shipped),
            HookState::Broken(_)
        ));
        assert!(matches!(
            hook_state("files", Ok(()), shipped),
            HookState::Ready
        ));
    }
}
