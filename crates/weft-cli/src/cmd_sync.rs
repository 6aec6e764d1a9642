//! `weft sync run FLOW`, `weft sync status`, `weft flow list|show|check`, and the flow
//! templates of `weft init --template`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use weft_engine::flow::{Flow, FlowError, FlowProblem};
use weft_engine::limits::{Clock, SystemClock};
use weft_engine::request::Tenant;
use weft_engine::run::Report;
use weft_engine::state::RunOutcome;
use weft_engine::workspace::Workspace;

use crate::cmd_client::start_dir;
use crate::{Io, connect};

/// Exit codes of `weft sync run`.
pub(crate) mod exit {
    /// Stopped at a spent daily budget; the next run resumes.
    pub(crate) const STOPPED: u8 = 6;
    /// Completed, with records waiting in the error queue.
    pub(crate) const QUEUED: u8 = 10;
    /// Another run of the flow is under way.
    pub(crate) const BUSY: u8 = 11;
}

#[derive(Debug, Subcommand)]
pub(crate) enum SyncCmd {
    /// Run a flow once (flows/FLOW.toml in the workspace).
    ///
    /// Exit codes: 0 every record handled; 10 done, with records in the error queue (see
    /// `weft errors list`); 6 stopped at a daily limit (run again later to resume); 11 another
    /// run of the flow is under way; 1 failed.
    Run {
        /// Flow name (the file name in flows/, without .toml).
        flow: String,
        /// Run only this stream of the flow.
        #[arg(long)]
        stream: Option<String>,
        /// Show what would be created or updated; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// When another run of the flow is under way, wait for it to end (at most this many
        /// minutes) instead of refusing.
        #[arg(long, value_name = "MINUTES", num_args = 0..=1, default_missing_value = "60")]
        wait: Option<u64>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The workspace's flows: last run, cursors, open errors.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum FlowCmd {
    /// The workspace's flows, with their streams.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One flow: its connections, options, tables and streams.
    Show {
        /// Flow name.
        flow: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check flows (all, or one) and their tables against their connectors' specs: every
    /// problem with its file, line and column. Exit 1 when there is one.
    Check {
        /// Flow name (default: every flow of the workspace).
        flow: Option<String>,
        /// Print the problems as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// One file of a shipped template: its path in the workspace and its text.
macro_rules! template_file {
    ($template:literal, $rel:literal) => {
        (
            $rel,
            include_str!(concat!("../../../templates/", $template, "/", $rel)),
        )
    };
}

/// A shipped workspace template: files relative to the workspace.
pub(crate) const KANTATA_XERO: &[(&str, &str)] = &[
    template_file!("kantata-xero", "flows/kantata-xero.toml"),
    template_file!("kantata-xero", "tables/line-accounts.csv"),
    template_file!("kantata-xero", "tables/expense-accounts.csv"),
];

pub(crate) const KANTATA_XERO_BILLS: &[(&str, &str)] = &[
    template_file!("kantata-xero-bills", "flows/kantata-xero-bills.toml"),
    template_file!("kantata-xero-bills", "tables/vendor-contacts.csv"),
    template_file!("kantata-xero-bills", "tables/accounts-for-expense.csv"),
];

pub(crate) const KANTATA_XERO_EXPENSE_CLAIMS: &[(&str, &str)] = &[
    template_file!(
        "kantata-xero-expense-claims",
        "flows/kantata-xero-expense-claims.toml"
    ),
    template_file!("kantata-xero-expense-claims", "tables/xero-users.csv"),
    template_file!(
        "kantata-xero-expense-claims",
        "tables/accounts-for-expense.csv"
    ),
];

pub(crate) const KANTATA_XERO_JOURNALS: &[(&str, &str)] = &[template_file!(
    "kantata-xero-journals",
    "flows/kantata-xero-journals.toml"
)];

pub(crate) const XERO_LISTS_KANTATA: &[(&str, &str)] = &[template_file!(
    "xero-lists-kantata",
    "flows/xero-lists-kantata.toml"
)];

pub(crate) const HUBSPOT_KANTATA: &[(&str, &str)] = &[template_file!(
    "hubspot-kantata",
    "flows/hubspot-kantata.toml"
)];
pub(crate) const KANTATA_QUICKBOOKS: &[(&str, &str)] = &[
    template_file!("kantata-quickbooks", "flows/kantata-quickbooks.toml"),
    template_file!("kantata-quickbooks", "tables/quickbooks-line-items.csv"),
    template_file!("kantata-quickbooks", "tables/quickbooks-expense-items.csv"),
];

/// The shipped workspace templates, by name.
pub(crate) const TEMPLATES: &[(&str, &[(&str, &str)])] = &[
    ("kantata-xero", KANTATA_XERO),
    ("kantata-xero-bills", KANTATA_XERO_BILLS),
    ("kantata-xero-expense-claims", KANTATA_XERO_EXPENSE_CLAIMS),
    ("kantata-xero-journals", KANTATA_XERO_JOURNALS),
    ("xero-lists-kantata", XERO_LISTS_KANTATA),
    ("hubspot-kantata", HUBSPOT_KANTATA),
    ("kantata-quickbooks", KANTATA_QUICKBOOKS),
];

/// The names of the shipped templates, for messages.
pub(crate) fn template_names() -> String {
    TEMPLATES
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes template `name` into `dir`, refusing to overwrite a flow. A mapping table the
/// workspace has already (flows share tables, as M-Bridge's scenarios do) is kept as it is and
/// listed in the second list.
pub(crate) fn write_template(dir: &Path, name: &str) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let Some(&(_, files)) = TEMPLATES.iter().find(|(n, _)| *n == name) else {
        bail!(
            "no template `{name}`; the templates are: {}",
            template_names()
        );
    };
    let mut kept = Vec::new();
    for (rel, _) in files {
        let path = dir.join(rel);
        if path.exists() {
            if rel.starts_with("tables/") {
                kept.push(path);
                continue;
            }
            bail!("{} already exists; it is kept as it is", path.display());
        }
    }
    let mut written = Vec::new();
    for (rel, text) in files {
        let path = dir.join(rel);
        if kept.contains(&path) {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        weft_engine::files::write_atomic(&path, text.as_bytes(), false)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok((written, kept))
}

pub(crate) fn workspace(workspace: Option<&Path>) -> Result<Workspace> {
    let ws = Workspace::find(&start_dir(workspace)?)?;
    Ok(ws)
}

fn flow_path(ws: &Workspace, name: &str) -> PathBuf {
    weft_engine::flows::path(ws.dir(), name)
}

/// The names of the workspace's flows, sorted.
fn flow_names(ws: &Workspace) -> Vec<String> {
    weft_engine::flows::names(ws.dir())
}

/// The file of flow `name`, which must exist.
pub(crate) fn find_flow(ws: &Workspace, name: &str) -> Result<PathBuf> {
    weft_engine::flows::find(ws.dir(), name).map_err(|e| anyhow!(e))
}

/// Loads flow `name` and checks it against the connectors' specs.
pub(crate) fn load_flow(ws: &Workspace, name: &str) -> Result<Flow> {
    let path = find_flow(ws, name)?;
    let flow = Flow::load(&path)?;
    let problems = flow.check_against(&|id| crate::specs::find(id).ok());
    if !problems.is_empty() {
        return Err(FlowError::Invalid {
            name: name.to_owned(),
            problems,
        }
        .into());
    }
    Ok(flow)
}

/// The tenant of `alias` for a connector with tenants: the flow's, else the connection's only
/// one.
pub(crate) fn tenant(
    flow: &Flow,
    alias: &str,
    connection: &weft_engine::workspace::Connection,
) -> Result<Tenant> {
    weft_engine::flows::tenant(flow, alias, connection).map_err(|e| anyhow!(e))
}

/// What `weft sync run` was asked.
pub(crate) struct RunOptions<'a> {
    pub(crate) stream: Option<String>,
    pub(crate) dry_run: bool,
    pub(crate) wait: Option<Duration>,
    pub(crate) progress: Option<&'a (dyn Fn(&str) + Sync)>,
}

/// Runs flow `name` of the workspace at `dir` once.
pub(crate) fn run_flow(name: &str, dir: Option<&Path>, options: RunOptions<'_>) -> Result<Report> {
    run_flow_until(name, dir, options, None)
}

/// Runs flow `name` of the workspace at `dir` once, stopped (`Ok(None)`) as soon as `stop` is
/// notified: the run is dropped where it stands, its pending writes settled by the next run.
pub(crate) fn run_flow_until(
    name: &str,
    dir: Option<&Path>,
    options: RunOptions<'_>,
    stop: Option<&tokio::sync::Notify>,
) -> Result<Report> {
    let ws = workspace(dir)?;
    let flow = load_flow(&ws, name)?;
    let mut opened = BTreeMap::new();
    for alias in flow.file.connections.keys() {
        let connection = flow.connection_name(alias);
        let o = connect::open(&connection, dir).with_context(|| {
            format!("flow `{name}`: connection `{connection}` (alias `{alias}`)")
        })?;
        opened.insert(alias.clone(), o);
    }
    let state = ws.open_state()?;
    let running = weft_engine::flows::run(
        &flow,
        &opened,
        &state,
        &SystemClock as &dyn Clock,
        weft_engine::flows::RunOptions {
            stream: options.stream,
            dry_run: options.dry_run,
            wait: options.wait,
            progress: options.progress,
        },
    );
    let report = connect::runtime()?.block_on(async {
        match stop {
            None => Some(running.await),
            Some(stop) => tokio::select! {
                done = running => Some(done),
                () = stop.notified() => None,
            },
        }
    });
    let Some(report) = report else {
        return Err(anyhow!(Stopped));
    };
    match report {
        Ok(r) => Ok(r),
        Err(weft_engine::flows::FlowRunError::Tenant(e)) => Err(anyhow!(e)),
        Err(weft_engine::flows::FlowRunError::Run(e)) => Err(e.into()),
    }
}

/// A run stopped from outside (its job cancelled, or its worker stopping).
#[derive(Debug)]
pub(crate) struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the run was stopped before it ended")
    }
}

impl std::error::Error for Stopped {}

pub(crate) fn run(cmd: SyncCmd, dir: Option<&Path>, io: &mut Io<'_>) -> Result<u8> {
    match cmd {
        SyncCmd::Run {
            flow,
            stream,
            dry_run,
            wait,
            json,
        } => {
            let progress = crate::progress::Progress::spinner(
                !json,
                "{spinner} {msg}",
                format!("running flow `{flow}`…"),
            );
            let tell = |what: &str| progress.message(format!("{flow}: {what}"));
            let report = run_flow(
                &flow,
                dir,
                RunOptions {
                    stream,
                    dry_run,
                    wait: wait.map(|m| Duration::from_secs(m.saturating_mul(60))),
                    progress: Some(&tell),
                },
            );
            drop(progress);
            let report = match report {
                Ok(r) => r,
                Err(e)
                    if e.downcast_ref::<weft_engine::run::RunError>()
                        .is_some_and(|r| matches!(r, weft_engine::run::RunError::Busy { .. })) =>
                {
                    writeln!(io.err, "error: {e}")?;
                    return Ok(exit::BUSY);
                }
                Err(e) => return Err(e),
            };
            if json {
                serde_json::to_writer_pretty(&mut *io.out, &report)?;
                writeln!(io.out)?;
            } else {
                print_report(&flow, dry_run, &report, io)?;
            }
            Ok(match &report.outcome {
                RunOutcome::Completed if report.summary.failed > 0 => exit::QUEUED,
                RunOutcome::Completed => 0,
                RunOutcome::Stopped { .. } => exit::STOPPED,
                RunOutcome::Failed { .. } => 1,
            })
        }
        SyncCmd::Status { json } => status(dir, json, io),
    }
}

fn print_report(flow: &str, dry_run: bool, report: &Report, io: &mut Io<'_>) -> Result<()> {
    let s = &report.summary;
    if dry_run {
        writeln!(io.out, "dry run of `{flow}` (nothing was changed):")?;
        for p in &report.plan {
            writeln!(
                io.out,
                "  {:<9} {:<9} {:<12} {}",
                p.stream, p.action, p.source_id, p.detail
            )?;
        }
        if report.plan_omitted > 0 {
            writeln!(io.out, "  … and {} more", report.plan_omitted)?;
        }
    }
    for (name, c) in &s.streams {
        writeln!(
            io.out,
            "{name}: read {}, {} {}, {} {}, unchanged {}, skipped {}, failed {}; {} looked-up record(s) {}; {} write-back(s)",
            c.read,
            if dry_run { "would create" } else { "created" },
            c.created,
            if dry_run { "would update" } else { "updated" },
            c.updated,
            c.unchanged,
            c.skipped,
            c.failed,
            c.lookups_created,
            if dry_run { "to create" } else { "created" },
            c.written_back
        )?;
    }
    if dry_run {
        return Ok(());
    }
    writeln!(
        io.out,
        "run {} of `{flow}`: {} call(s), {} rate-limited, {:.1} s waiting on limits",
        report.run,
        s.calls,
        s.rate_limited,
        s.waited_ms as f64 / 1000.0
    )?;
    match &report.outcome {
        RunOutcome::Completed if s.failed > 0 => writeln!(
            io.err,
            "{} record(s) are in the error queue: `weft errors list`, fix them, then `weft errors retry ID`",
            s.failed
        )?,
        RunOutcome::Completed => {}
        RunOutcome::Stopped { reason } => writeln!(
            io.err,
            "stopped: {reason}. Everything done so far is kept; run `weft sync run {flow}` again later to resume"
        )?,
        RunOutcome::Failed { reason } => writeln!(
            io.err,
            "error: the run failed: {reason}. Nothing written is lost and nothing will be written twice; run it again when the cause is fixed"
        )?,
    }
    Ok(())
}

/// `weft flow list|show|check`.
pub(crate) fn flow(cmd: FlowCmd, dir: Option<&Path>, io: &mut Io<'_>) -> Result<u8> {
    let ws = workspace(dir)?;
    match cmd {
        FlowCmd::List { json } => {
            let mut rows = Vec::new();
            for name in flow_names(&ws) {
                let row = match Flow::load(&flow_path(&ws, &name)) {
                    Ok(f) => serde_json::json!({
                        "flow": name,
                        "description": f.file.description,
                        "streams": f.file.streams.keys().collect::<Vec<_>>(),
                    }),
                    Err(e) => serde_json::json!({ "flow": name, "problem": e.to_string() }),
                };
                rows.push(row);
            }
            if json {
                serde_json::to_writer_pretty(&mut *io.out, &rows)?;
                writeln!(io.out)?;
            } else if rows.is_empty() {
                writeln!(
                    io.out,
                    "no flows in {}; `weft init --template kantata-xero` writes one",
                    ws.dir().join("flows").display()
                )?;
            } else {
                for r in rows {
                    match r["problem"].as_str() {
                        Some(p) => writeln!(
                            io.out,
                            "{}  (invalid: run `weft flow check {}`)\n  {}",
                            r["flow"].as_str().unwrap_or_default(),
                            r["flow"].as_str().unwrap_or_default(),
                            p.lines().next().unwrap_or_default()
                        )?,
                        None => writeln!(
                            io.out,
                            "{}  streams: {}\n  {}",
                            r["flow"].as_str().unwrap_or_default(),
                            r["streams"]
                                .as_array()
                                .map(|a| a
                                    .iter()
                                    .filter_map(|v| v.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", "))
                                .unwrap_or_default(),
                            r["description"].as_str().unwrap_or_default()
                        )?,
                    }
                }
            }
            Ok(0)
        }
        FlowCmd::Show { flow, json } => {
            let f = load_flow(&ws, &flow)?;
            if json {
                serde_json::to_writer_pretty(
                    &mut *io.out,
                    &serde_json::json!({ "flow": f.name, "path": f.path, "file": f.file, "tables": f.tables }),
                )?;
                writeln!(io.out)?;
                return Ok(0);
            }
            writeln!(
                io.out,
                "{} ({})\n  {}",
                f.name,
                f.path.display(),
                f.file.description
            )?;
            writeln!(io.out, "connections:")?;
            for (alias, c) in &f.file.connections {
                writeln!(
                    io.out,
                    "  {alias}: {} connection `{}`{}",
                    c.connector,
                    f.connection_name(alias),
                    c.tenant
                        .as_ref()
                        .map(|t| format!(", tenant {t}"))
                        .unwrap_or_default()
                )?;
            }
            if !f.file.options.is_empty() {
                writeln!(io.out, "options:")?;
                for (k, v) in &f.file.options {
                    writeln!(io.out, "  {k} = {v}")?;
                }
            }
            for (t, rows) in &f.tables {
                writeln!(io.out, "table {t}: {} row(s)", rows.len())?;
            }
            for (name, s) in &f.file.streams {
                writeln!(
                    io.out,
                    "stream {name}: {}.{} → {}.{}{}",
                    s.source.connection,
                    s.source.resource,
                    s.write.connection,
                    s.write.resource,
                    s.join
                        .as_ref()
                        .map(|j| format!(" (joined to {})", j.stream))
                        .unwrap_or_default()
                )?;
                if !s.description.is_empty() {
                    writeln!(io.out, "  {}", s.description)?;
                }
                for l in &s.lookup {
                    writeln!(
                        io.out,
                        "  lookup {}: {}.{}{}",
                        l.name,
                        l.connection,
                        l.resource,
                        if l.create.is_some() {
                            " (created when missing)"
                        } else {
                            ""
                        }
                    )?;
                }
                if let Some(nk) = &s.write.natural_key {
                    writeln!(io.out, "  natural key: {}", nk.field)?;
                }
                for b in &s.write_back {
                    writeln!(
                        io.out,
                        "  write-back: {}.{} ({})",
                        b.connection,
                        b.resource,
                        b.fields.keys().cloned().collect::<Vec<_>>().join(", ")
                    )?;
                }
            }
            Ok(0)
        }
        FlowCmd::Check { flow, json } => {
            let names = match flow {
                Some(f) => vec![f],
                None => flow_names(&ws),
            };
            let mut problems: Vec<FlowProblem> = Vec::new();
            for name in &names {
                let path = flow_path(&ws, name);
                if !path.exists() {
                    bail!("no flow `{name}` ({} does not exist)", path.display());
                }
                match Flow::load(&path) {
                    Ok(f) => problems.extend(f.check_against(&|id| crate::specs::find(id).ok())),
                    Err(FlowError::Invalid { problems: p, .. }) => problems.extend(p),
                    Err(e) => return Err(e.into()),
                }
            }
            if json {
                serde_json::to_writer_pretty(&mut *io.out, &problems)?;
                writeln!(io.out)?;
            } else {
                for p in &problems {
                    writeln!(
                        io.out,
                        "error: {}\n  --> {}:{}:{}",
                        p.message, p.file, p.line, p.column
                    )?;
                }
                writeln!(
                    io.out,
                    "{} flow(s) checked, {} problem(s)",
                    names.len(),
                    problems.len()
                )?;
            }
            Ok(u8::from(!problems.is_empty()))
        }
    }
}

fn status(dir: Option<&Path>, json: bool, io: &mut Io<'_>) -> Result<u8> {
    let ws = workspace(dir)?;
    let flows_dir = ws.dir().join("flows");
    let names = flow_names(&ws);
    if names.is_empty() {
        writeln!(
            io.out,
            "no flows in {}; `weft init --template kantata-xero` writes one",
            flows_dir.display()
        )?;
        return Ok(0);
    }
    let state = ws.open_state()?;
    let mut rows = Vec::new();
    for name in &names {
        let valid = Flow::load(&flow_path(&ws, name))
            .err()
            .map(|e| e.to_string());
        let last = state.runs(Some(name), 1)?.into_iter().next();
        let open = state
            .errors(Some(name), false)?
            .into_iter()
            .filter(|e| e.status == "open" || e.status == "retry")
            .count();
        let mut cursors = serde_json::Map::new();
        if let Ok(f) = Flow::load(&flow_path(&ws, name)) {
            for stream in f.file.streams.keys() {
                if let Some(c) = state.cursor(name, stream)? {
                    cursors.insert(stream.clone(), c.into());
                }
            }
        }
        rows.push(serde_json::json!({
            "flow": name, "problem": valid, "last_run": last, "open_errors": open, "cursors": cursors,
        }));
    }
    if json {
        serde_json::to_writer_pretty(&mut *io.out, &rows)?;
        writeln!(io.out)?;
        return Ok(0);
    }
    for row in rows {
        let name = row["flow"].as_str().unwrap_or_default();
        writeln!(io.out, "{name}")?;
        if let Some(problem) = row["problem"].as_str() {
            writeln!(io.out, "  invalid: {problem}")?;
        }
        match row["last_run"].as_object() {
            None => writeln!(
                io.out,
                "  never run; `weft sync run {name} --dry-run` shows what it would do"
            )?,
            Some(run) => writeln!(
                io.out,
                "  last run {}: {} (created {}, updated {}, failed {})",
                run["id"],
                run["outcome"]["status"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| "unfinished".to_owned()),
                run["summary"]["created"],
                run["summary"]["updated"],
                run["summary"]["failed"]
            )?,
        }
        if let Some(cursors) = row["cursors"].as_object() {
            for (stream, c) in cursors {
                writeln!(
                    io.out,
                    "  {stream}: changes after {} are read next",
                    c.as_str().unwrap_or_default()
                )?;
            }
        }
        writeln!(io.out, "  open errors: {}", row["open_errors"])?;
    }
    Ok(0)
}
