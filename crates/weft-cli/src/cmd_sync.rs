//! `weft sync run FLOW [--dry-run]` and `weft sync status`, and the flow templates of
//! `weft init --template`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use weft_engine::flow::Flow;
use weft_engine::limits::{Clock, SystemClock};
use weft_engine::request::Tenant;
use weft_engine::state::{RunOutcome, State};
use weft_engine::sync::{Report, Run};
use weft_engine::workspace::Workspace;

use crate::cmd_client::start_dir;
use crate::{Io, connect};

/// Exit codes of `weft sync run`.
pub(crate) mod exit {
    /// Stopped at a spent daily budget; the next run resumes.
    pub(crate) const STOPPED: u8 = 6;
    /// Completed, with records waiting in the error queue.
    pub(crate) const QUEUED: u8 = 10;
}

#[derive(Debug, Subcommand)]
pub(crate) enum SyncCmd {
    /// Run a flow once (flows/FLOW.toml in the workspace).
    ///
    /// Exit codes: 0 every record handled; 10 done, with records in the error queue (see
    /// `weft errors list`); 6 stopped at a daily limit (run again later to resume); 1 failed.
    Run {
        /// Flow name (the file name in flows/, without .toml).
        flow: String,
        /// Show what would be created or updated; change nothing.
        #[arg(long)]
        dry_run: bool,
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

/// A shipped workspace template: files relative to the workspace.
pub(crate) const KANTATA_XERO: &[(&str, &str)] = &[
    (
        "flows/kantata-xero.toml",
        include_str!("../../../templates/kantata-xero/flows/kantata-xero.toml"),
    ),
    (
        "tables/line-accounts.csv",
        include_str!("../../../templates/kantata-xero/tables/line-accounts.csv"),
    ),
    (
        "tables/expense-accounts.csv",
        include_str!("../../../templates/kantata-xero/tables/expense-accounts.csv"),
    ),
];

/// Writes template `name` into `dir`, refusing to overwrite anything.
pub(crate) fn write_template(dir: &Path, name: &str) -> Result<Vec<PathBuf>> {
    let files = match name {
        "kantata-xero" => KANTATA_XERO,
        other => bail!("no template `{other}`; the templates are: kantata-xero"),
    };
    for (rel, _) in files {
        let path = dir.join(rel);
        if path.exists() {
            bail!("{} already exists; it is kept as it is", path.display());
        }
    }
    let mut written = Vec::new();
    for (rel, text) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn workspace(workspace: Option<&Path>) -> Result<Workspace> {
    Ok(Workspace::find(&start_dir(workspace)?)?)
}

fn flow_path(ws: &Workspace, name: &str) -> PathBuf {
    ws.dir().join("flows").join(format!("{name}.toml"))
}

/// The destination tenant: the flow's, else the connection's only one.
fn tenant(flow: &Flow, connection: &weft_engine::workspace::Connection) -> Result<Tenant> {
    let tenants = &connection.tenants;
    let chosen = match &flow.file.destination.tenant {
        Some(id) => tenants.iter().find(|t| &t.id == id).ok_or_else(|| {
            anyhow!(
                "flow `{}` names tenant {id}, which connection `{}` does not reach; run `weft connection authorize {}` and select it",
                flow.name,
                flow.file.destination.connection,
                flow.file.destination.connection
            )
        })?,
        None => match tenants.as_slice() {
            [only] => only,
            [] => bail!(
                "connection `{}` has no organisation yet; run `weft connection authorize {}`",
                flow.file.destination.connection,
                flow.file.destination.connection
            ),
            many => bail!(
                "connection `{}` reaches {} organisations; set destination.tenant in {} to one of: {}",
                flow.file.destination.connection,
                many.len(),
                flow.path.display(),
                many.iter()
                    .map(|t| format!("{} ({})", t.id, t.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    };
    Ok(Tenant {
        id: chosen.id.clone(),
        name: chosen.name.clone(),
    })
}

/// Runs flow `name` of the workspace at `dir` once.
pub(crate) fn run_flow(
    name: &str,
    dry_run: bool,
    dir: Option<&Path>,
    progress: Option<&(dyn Fn(&str) + Sync)>,
) -> Result<Report> {
    let ws = workspace(dir)?;
    let path = flow_path(&ws, name);
    if !path.exists() {
        bail!(
            "no flow `{name}` ({} does not exist); `weft init --template kantata-xero` writes one",
            path.display()
        );
    }
    let flow = Flow::load(&path)?;
    let source = connect::open(&flow.file.source.connection, dir)
        .with_context(|| format!("flow `{name}`: source connection"))?;
    let dest = connect::open(&flow.file.destination.connection, dir)
        .with_context(|| format!("flow `{name}`: destination connection"))?;
    let tenant = tenant(&flow, &dest.connection)?;
    let state = State::open(&ws.state_path())?;
    let run = Run {
        flow: &flow,
        source: &source.session,
        dest: &dest.session,
        tenant,
        state: &state,
        clock: &SystemClock as &dyn Clock,
        dry_run,
        progress,
    };
    Ok(connect::runtime()?.block_on(run.run())?)
}

pub(crate) fn run(cmd: SyncCmd, dir: Option<&Path>, io: &mut Io<'_>) -> Result<u8> {
    match cmd {
        SyncCmd::Run {
            flow,
            dry_run,
            json,
        } => {
            let progress = crate::progress::Progress::spinner(
                !json,
                "{spinner} {msg}",
                format!("running flow `{flow}`…"),
            );
            let tell = |what: &str| progress.message(format!("{flow}: {what}"));
            let report = run_flow(&flow, dry_run, dir, Some(&tell));
            drop(progress);
            let report = report?;
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
            writeln!(io.out, "  {:<9} {:<10} {}", p.action, p.source_id, p.detail)?;
        }
        writeln!(
            io.out,
            "would create {}, update {}, leave {} unchanged; {} contact(s) to create; {} payment(s) to record; {} failing",
            s.created, s.updated, s.unchanged, s.contacts_created, s.payments_written, s.failed
        )?;
        return Ok(());
    }
    writeln!(
        io.out,
        "run {} of `{flow}`: read {} invoice(s); created {}, updated {}, unchanged {}, failed {}; {} contact(s) created; {} payment(s) recorded in the source; {} reference(s) written",
        report.run,
        s.read,
        s.created,
        s.updated,
        s.unchanged,
        s.failed,
        s.contacts_created,
        s.payments_written,
        s.references_written
    )?;
    writeln!(
        io.out,
        "{} call(s), {} rate-limited, {:.1} s waiting on limits",
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

fn status(dir: Option<&Path>, json: bool, io: &mut Io<'_>) -> Result<u8> {
    let ws = workspace(dir)?;
    let flows_dir = ws.dir().join("flows");
    let mut names: Vec<String> = std::fs::read_dir(&flows_dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let p = e.path();
                    (p.extension().is_some_and(|x| x == "toml"))
                        .then(|| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                        .flatten()
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    if names.is_empty() {
        writeln!(
            io.out,
            "no flows in {}; `weft init --template kantata-xero` writes one",
            flows_dir.display()
        )?;
        return Ok(0);
    }
    let state = State::open(&ws.state_path())?;
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
        let cursor = state.cursor(name, "invoices")?;
        rows.push(serde_json::json!({
            "flow": name, "problem": valid, "last_run": last, "open_errors": open, "cursor": cursor,
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
                run["outcome"]
                    .as_str()
                    .map(str::to_owned)
                    .or_else(|| run["outcome"]
                        .as_object()
                        .and_then(|o| o.keys().next().cloned()))
                    .unwrap_or_else(|| "unfinished".to_owned()),
                run["summary"]["created"],
                run["summary"]["updated"],
                run["summary"]["failed"]
            )?,
        }
        if let Some(c) = row["cursor"].as_str() {
            writeln!(io.out, "  invoices changed after {c} are read next")?;
        }
        writeln!(io.out, "  open errors: {}", row["open_errors"])?;
    }
    Ok(0)
}
