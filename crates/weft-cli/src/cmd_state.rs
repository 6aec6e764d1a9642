//! `weft runs list|show` and `weft errors list|show|retry|resolve`: the workspace's run history
//! and per-record error queue, read from its state database (`.weft/state.db`, or the
//! PostgreSQL database `[state] url` names); `weft state migrate|password`: moving that state to
//! PostgreSQL.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use serde::Serialize;
use weft_engine::queue::{Queue, QueueRules, given_up_job};
use weft_engine::secrets::{Secret, SecretStore};
use weft_engine::state::{
    PgTarget, QueuedError, RunOutcome, RunRecord, STATUS_RETRY, State, StateError, now_ms,
};
use weft_engine::workspace::{STATE_PASSWORD_ID, STATE_URL_VAR, Workspace, WorkspaceError};

use crate::Io;
use crate::cmd_client::start_dir;

#[derive(Debug, Subcommand)]
pub(crate) enum RunsCmd {
    /// List runs of the workspace's flows, newest first, with their counts.
    List {
        /// Only the runs of this flow.
        #[arg(long)]
        flow: Option<String>,
        /// How many runs to show at most.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one run: when, how it ended, and every count.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// Its id, as the list shows it.
    #[arg(value_parser = clap::value_parser!(i64).range(1..))]
    id: i64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ErrorsCmd {
    /// List the records waiting in the error queue (open, or marked for retry).
    List {
        /// Only the errors of this flow.
        #[arg(long)]
        flow: Option<String>,
        /// Include closed entries (resolved by a person, or fixed by a later run).
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one queued error in full.
    Show(ShowArgs),
    /// Mark an open error for retry: the next `weft sync run` of its flow reads the record
    /// again.
    #[command(
        override_usage = "weft errors retry <ID>\n       weft errors retry --all [--flow FLOW]"
    )]
    Retry {
        /// Error id (see `weft errors list`).
        #[arg(
            value_parser = clap::value_parser!(i64).range(1..),
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        id: Option<i64>,
        /// Every open error (of the flow given with --flow, else of every flow).
        #[arg(long)]
        all: bool,
        /// With --all: only the errors of this flow.
        #[arg(long, conflicts_with = "id")]
        flow: Option<String>,
    },
    /// Close an error by hand (you fixed the record yourself, or it does not matter).
    Resolve {
        /// Error id (see `weft errors list`).
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        id: i64,
        /// Why, kept with the entry.
        #[arg(long)]
        note: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum StateCmd {
    /// Copy the workspace's SQLite state (cursors, the id ledger, runs, the error queue) to an
    /// empty PostgreSQL database, then compare both; run it again after an interruption to
    /// finish. Sealed credentials stay in .weft/credentials.json.
    Migrate {
        /// The PostgreSQL database: postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE, with
        /// ?sslmode=require or verify-full for TLS. Without a password here, WEFT_STATE_URL's
        /// or the sealed one (`weft state password`) is used.
        #[arg(long, value_name = "URL")]
        to: String,
    },
    /// Seal the PostgreSQL state password in the workspace's credential store, for a
    /// `[state] url` written without one (asked on the terminal, or read from standard input).
    Password {
        /// Read the password from standard input instead of asking.
        #[arg(long)]
        stdin: bool,
    },
}

pub(crate) fn state(cmd: StateCmd, workspace: Option<&Path>, io: &mut Io<'_>) -> Result<u8> {
    let ws = find_workspace(workspace)?;
    match cmd {
        StateCmd::Password { stdin } => {
            let password = if stdin {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                    .context("cannot read the password from standard input")?;
                text.trim_end_matches(['\r', '\n']).to_owned()
            } else if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                rpassword::prompt_password("PostgreSQL state password (hidden): ")
                    .context("cannot read the password")?
            } else {
                bail!(
                    "no terminal to ask for the password: pass --stdin and write it to standard input"
                );
            };
            if password.is_empty() {
                bail!("the password is empty; nothing was stored");
            }
            // The local file: the password is what reaches the database.
            ws.local_secrets()?
                .put(STATE_PASSWORD_ID, &Secret::new(password))?;
            writeln!(
                io.out,
                "sealed the state password in {}; `[state] url` in weft.toml uses it",
                ws.credentials_path().display()
            )?;
            Ok(0)
        }
        StateCmd::Migrate { to } => migrate(&ws, &to, io),
    }
}

fn migrate(ws: &Workspace, to: &str, io: &mut Io<'_>) -> Result<u8> {
    let target = PgTarget::parse(to).map_err(|reason| StateError::Url {
        reason: format!("{reason} (given with --to)"),
    })?;
    let url = ws.with_state_password(to)?;
    let path = ws.state_path();
    if !path.exists() {
        bail!(
            "there is no SQLite state to copy: {} does not exist (a workspace that never ran a sync has none; point `[state] url` at the PostgreSQL database directly)",
            path.display()
        );
    }
    let source = State::open(&path)?;
    let dest = State::open_postgres(&url, &path)?;
    let shown = target.shown();
    writeln!(io.out, "copying {} to {shown}", path.display())?;
    let report = source.copy_to(&dest, &source.source_id()?, |_, _| {})?;
    if report.resumed {
        writeln!(io.out, "(went on from an earlier copy into it)")?;
    }
    for t in &report.tables {
        let sums = if t.checksums_match {
            "checksums match"
        } else {
            "checksums DIFFER"
        };
        writeln!(
            io.out,
            "  {:<8} {:>8} rows in SQLite, {:>8} in PostgreSQL, {sums}",
            t.table, t.source_rows, t.target_rows
        )?;
    }
    if !report.complete() {
        bail!(
            "the copy in {shown} differs from {} (see above): was a sync running meanwhile? Run `weft state migrate --to URL` again with nothing running; it rewrites every row",
            path.display()
        );
    }
    copy_credentials(ws, &dest, io)?;
    writeln!(
        io.out,
        "\nThe copy is complete. To use it, write in {}:\n\n[state]\nurl = \"{shown}\"\n\nwith the password sealed by `weft state password` (or the whole URL in {STATE_URL_VAR}). Every worker using that database then shares the connections' credentials (open with the same master key). {} and {} stay as they were; keep them until the new state has served a few runs.",
        ws.dir().join("weft.toml").display(),
        path.display(),
        ws.credentials_path().display()
    )?;
    Ok(0)
}

/// Copies the workspace's sealed credentials (its local file) into the store in `dest`'s
/// database, checked, and says what it did.
fn copy_credentials(ws: &Workspace, dest: &State, io: &mut Io<'_>) -> Result<()> {
    let file = ws.credentials_path();
    let Some(pool) = dest.postgres() else {
        return Ok(());
    };
    if !file.exists() {
        writeln!(
            io.out,
            "  credentials: none to copy ({} does not exist)",
            file.display()
        )?;
        return Ok(());
    }
    let source = ws.local_secrets()?;
    let mut target = SecretStore::open_postgres(pool, ws.local_secrets()?)
        .context("the credential store in the PostgreSQL database cannot be opened; the state was copied, the credentials were not")?;
    let report = source.copy_into(&mut target).context(
        "the credentials were not all copied; run `weft state migrate --to URL` again, it adds what is missing",
    )?;
    writeln!(
        io.out,
        "  credentials: {} copied, {} already there, {} read back and opened with the master key; sealed as they are, the database sees no plain secret",
        report.copied, report.already, report.checked
    )?;
    if report.stay_local > 0 {
        writeln!(
            io.out,
            "  the state's password stays in {} (it is what reaches the database)",
            file.display()
        )?;
    }
    for id in &report.kept {
        writeln!(
            io.out,
            "  credential `{id}` differs in the database and was kept as it is there (a worker may have renewed it since an earlier copy)"
        )?;
    }
    Ok(())
}

/// The workspace; outside one, says to create one.
fn find_workspace(workspace: Option<&Path>) -> Result<Workspace> {
    match Workspace::find(&start_dir(workspace)?) {
        Ok(ws) => Ok(ws),
        Err(WorkspaceError::NotFound { start }) => bail!(
            "no weft.toml in {} or any folder above it; state belongs to a workspace: run `weft init` to create one (or pass --workspace DIR)",
            start.display()
        ),
        Err(err) => Err(err.into()),
    }
}

/// The workspace's state database; outside a workspace, says to create one.
fn open(workspace: Option<&Path>) -> Result<State> {
    let ws = match Workspace::find(&start_dir(workspace)?) {
        Ok(ws) => ws,
        Err(WorkspaceError::NotFound { start }) => bail!(
            "no weft.toml in {} or any folder above it; runs and errors belong to a workspace: run `weft init` to create one (or pass --workspace DIR)",
            start.display()
        ),
        Err(err) => return Err(err.into()),
    };
    Ok(ws.open_state()?)
}

fn json(io: &mut Io<'_>, value: &impl Serialize) -> Result<()> {
    serde_json::to_writer_pretty(&mut *io.out, value)?;
    writeln!(io.out)?;
    Ok(())
}

/// A time as `YYYY-MM-DD HH:MM:SS` UTC.
fn time(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(
            || format!("{ms} ms"),
            |t| t.strftime("%Y-%m-%d %H:%M:%S").to_string(),
        )
}

/// A duration in ms as `850ms`, `12.4s`, `3m 05s` or `2h 03m`.
fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{}.{}s", s, (ms % 1000) / 100),
        60_000..3_600_000 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s / 60) % 60),
    }
}

fn outcome(run: &RunRecord, state: &State) -> &'static str {
    state.run_status(run)
}

/// One line of text, at most `max` characters.
fn clip(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() <= max && !text.contains('\n') {
        return line.to_owned();
    }
    let mut short: String = line.chars().take(max.saturating_sub(1)).collect();
    short.push('…');
    short
}

/// `weft runs show --json`: the run and how many error-queue entries it left.
#[derive(Serialize)]
struct RunView<'a> {
    #[serde(flatten)]
    run: &'a RunRecord,
    errors_queued: usize,
}

pub(crate) fn runs(cmd: RunsCmd, workspace: Option<&Path>, io: &mut Io<'_>) -> Result<u8> {
    let state = open(workspace)?;
    match cmd {
        RunsCmd::List {
            flow,
            limit,
            json: as_json,
        } => {
            let runs = state.runs(flow.as_deref(), usize::try_from(limit)?)?;
            if as_json {
                json(io, &runs)?;
            } else if runs.is_empty() {
                let flow = flow.as_deref();
                writeln!(
                    io.out,
                    "no runs{} yet; run `weft sync run {}`",
                    flow.map(|f| format!(" of flow `{f}`")).unwrap_or_default(),
                    flow.unwrap_or("FLOW")
                )?;
            } else {
                let mut table = crate::table::Columns::new(&[
                    "ID",
                    "FLOW",
                    "STARTED (UTC)",
                    "TOOK",
                    "OUTCOME",
                    "DRY",
                    "READ",
                    "CREATED",
                    "UPDATED",
                    "UNCHANGED",
                    "FAILED",
                    "CALLS",
                    "WAITED",
                ])
                .right(&[0, 3, 6, 7, 8, 9, 10, 11, 12]);
                for r in &runs {
                    let s = &r.summary;
                    table.row([
                        r.id.to_string(),
                        r.flow.clone(),
                        time(r.started_ms),
                        r.finished_ms
                            .map(|f| duration(f.saturating_sub(r.started_ms)))
                            .unwrap_or_else(|| "-".to_owned()),
                        outcome(r, &state).to_string(),
                        (if r.dry_run { "yes" } else { "no" }).to_owned(),
                        s.read.to_string(),
                        s.created.to_string(),
                        s.updated.to_string(),
                        s.unchanged.to_string(),
                        s.failed.to_string(),
                        s.calls.to_string(),
                        duration(s.waited_ms),
                    ]);
                }
                table.write(io.out)?;
            }
            Ok(0)
        }
        RunsCmd::Show(ShowArgs { id, json: as_json }) => {
            let Some(run) = state.run(id)? else {
                bail!("no run {id}; see `weft runs list`");
            };
            let errors_queued = state
                .errors(Some(&run.flow), true)?
                .iter()
                .filter(|e| e.run == Some(id))
                .count();
            if as_json {
                return json(
                    io,
                    &RunView {
                        run: &run,
                        errors_queued,
                    },
                )
                .map(|()| 0);
            }
            let s = &run.summary;
            let w = &mut *io.out;
            writeln!(w, "run:        {}", run.id)?;
            writeln!(w, "flow:       {}", run.flow)?;
            if run.dry_run {
                writeln!(w, "dry run:    yes (nothing was changed)")?;
            }
            writeln!(w, "started:    {} UTC", time(run.started_ms))?;
            match run.finished_ms {
                Some(f) => writeln!(
                    w,
                    "finished:   {} UTC (took {})",
                    time(f),
                    duration(f.saturating_sub(run.started_ms))
                )?,
                None => writeln!(
                    w,
                    "finished:   not yet (still running, or the process died)"
                )?,
            }
            match &run.outcome {
                Some(RunOutcome::Completed) => writeln!(w, "outcome:    completed")?,
                Some(RunOutcome::Stopped { reason }) => writeln!(
                    w,
                    "outcome:    stopped: {reason} (the next `weft sync run {}` resumes where it stopped)",
                    run.flow
                )?,
                Some(RunOutcome::Failed { reason }) => writeln!(w, "outcome:    failed: {reason}")?,
                None if weft_engine::runlock::holder_in(&state, &run.flow).is_some() => writeln!(
                    w,
                    "outcome:    running (the counts below are as of its last saved chunk)",
                )?,
                None => writeln!(
                    w,
                    "outcome:    interrupted (counts as of its last saved chunk; the next `weft sync run {}` reconciles and carries on)",
                    run.flow
                )?,
            }
            writeln!(w, "read:       {}", s.read)?;
            writeln!(w, "created:    {}", s.created)?;
            writeln!(w, "updated:    {}", s.updated)?;
            writeln!(w, "unchanged:  {}", s.unchanged)?;
            writeln!(w, "failed:     {}", s.failed)?;
            writeln!(w, "skipped:    {}", s.skipped)?;
            writeln!(w, "looked-up records created: {}", s.lookups_created)?;
            writeln!(w, "write-backs: {}", s.written_back)?;
            for (stream, c) in &s.streams {
                writeln!(
                    w,
                    "  {stream}: read {}, created {}, updated {}, unchanged {}, skipped {}, failed {}",
                    c.read, c.created, c.updated, c.unchanged, c.skipped, c.failed
                )?;
            }
            writeln!(
                w,
                "calls:      {} ({} rate limited, {} waiting on rate limits)",
                s.calls,
                s.rate_limited,
                duration(s.waited_ms)
            )?;
            if errors_queued > 0 {
                writeln!(
                    w,
                    "errors:     {errors_queued} queued by this run; see `weft errors list --flow {}`",
                    run.flow
                )?;
            }
            Ok(0)
        }
    }
}

pub(crate) fn errors(cmd: ErrorsCmd, workspace: Option<&Path>, io: &mut Io<'_>) -> Result<u8> {
    let state = open(workspace)?;
    match cmd {
        ErrorsCmd::List {
            flow,
            all,
            json: as_json,
        } => {
            let list = state.errors(flow.as_deref(), all)?;
            if as_json {
                json(io, &list)?;
            } else if list.is_empty() {
                let closed = if all {
                    0
                } else {
                    state.errors(flow.as_deref(), true)?.len()
                };
                if closed > 0 {
                    writeln!(
                        io.out,
                        "no open errors ({closed} closed; `weft errors list --all` shows them)"
                    )?;
                } else {
                    writeln!(
                        io.out,
                        "no errors{}; records that fail in `weft sync run FLOW` wait here with their reason",
                        flow.map(|f| format!(" in flow `{f}`")).unwrap_or_default()
                    )?;
                }
            } else {
                let mut table = crate::table::Columns::new(&[
                    "ID",
                    "FLOW",
                    "KIND",
                    "SOURCE ID",
                    "STAGE",
                    "STATUS",
                    "ATTEMPTS",
                    "LAST SEEN (UTC)",
                    "MESSAGE",
                ])
                .right(&[0, 6]);
                for e in &list {
                    table.row([
                        e.id.to_string(),
                        e.flow.clone(),
                        e.kind.to_string(),
                        e.source_id.clone(),
                        e.stage.to_string(),
                        e.status.to_string(),
                        e.attempts.to_string(),
                        time(e.last_seen_ms),
                        clip(&e.message, 60),
                    ]);
                }
                table.write(io.out)?;
                if list.iter().any(|e| !e.is_closed()) {
                    writeln!(
                        io.out,
                        "next: `weft errors show ID` for the whole message; fix the cause, then `weft errors retry ID` (or `--all`), or `weft errors resolve ID --note TEXT`"
                    )?;
                }
            }
            Ok(0)
        }
        ErrorsCmd::Show(ShowArgs { id, json: as_json }) => {
            let e = find(&state, id)?;
            if as_json {
                return json(io, &e).map(|()| 0);
            }
            show_error(&e, io)?;
            Ok(0)
        }
        ErrorsCmd::Retry { id: Some(id), .. } => {
            let e = find(&state, id)?;
            if e.is_closed() {
                bail!(
                    "error {id} is {} (closed); there is nothing to retry",
                    e.status
                );
            }
            if let Some(job) = given_up_job(&e) {
                return retry_given_up(&state, &e, job, io);
            }
            if !state.mark_retry(id)? {
                // Already marked (perhaps by another process just now).
                let now = find(&state, id)?;
                if now.status != STATUS_RETRY {
                    bail!(
                        "error {id} is {} (closed); there is nothing to retry",
                        now.status
                    );
                }
                writeln!(io.out, "error {id} is already marked for retry")?;
                return Ok(0);
            }
            writeln!(
                io.out,
                "error {id} marked for retry: the next `weft sync run {}` reads {} `{}` again",
                e.flow, e.kind, e.source_id
            )?;
            Ok(0)
        }
        ErrorsCmd::Retry { id: None, flow, .. } => {
            // Jobs given up are queued again, each once; the records' entries are marked.
            let jobs: Vec<(QueuedError, i64)> = state
                .errors(flow.as_deref(), false)?
                .into_iter()
                .filter(|e| e.status == "open")
                .filter_map(|e| given_up_job(&e).map(|job| (e, job)))
                .collect();
            for (e, job) in &jobs {
                retry_given_up(&state, e, *job, io)?;
            }
            let n = state.mark_retry_all(flow.as_deref())?;
            if n == 0 && jobs.is_empty() {
                writeln!(io.out, "no open errors to retry")?;
            } else if n > 0 {
                writeln!(
                    io.out,
                    "{n} error{} marked for retry: {} reads {} again",
                    if n == 1 { "" } else { "s" },
                    flow.map_or_else(
                        || "the next `weft sync run FLOW` of each flow".to_owned(),
                        |f| format!("the next `weft sync run {f}`")
                    ),
                    if n == 1 {
                        "its record"
                    } else {
                        "their records"
                    }
                )?;
            }
            Ok(0)
        }
        ErrorsCmd::Resolve { id, note } => {
            if note.as_deref().is_some_and(|n| n.trim().is_empty()) {
                bail!("--note is empty; give a reason, or leave --note out");
            }
            let e = find(&state, id)?;
            if e.is_closed() {
                bail!("error {id} is already closed ({})", e.status);
            }
            if !state.resolve(id, note.as_deref(), now_ms())? {
                bail!("error {id} was closed by another process meanwhile");
            }
            writeln!(io.out, "error {id} resolved")?;
            Ok(0)
        }
    }
}

/// Retries the entry of job `job`, given up: its flow is queued again for `weft worker`.
fn retry_given_up(state: &State, e: &QueuedError, job: i64, io: &mut Io<'_>) -> Result<u8> {
    let queue = Queue::open(state, QueueRules::default())?;
    match queue.retry_given_up(e.id, now_ms())? {
        Some(q) => {
            writeln!(
                io.out,
                "error {} marked for retry: flow `{}` {} job {} (`weft queue show {}`); the entry closes when a job of the flow completes",
                e.id,
                e.flow,
                if q.merged {
                    "was already queued as"
                } else {
                    "queued again as"
                },
                q.id,
                q.id
            )?;
            Ok(0)
        }
        None => {
            let now = find(state, e.id)?;
            if now.status == STATUS_RETRY {
                writeln!(io.out, "error {} is already marked for retry", e.id)?;
                return Ok(0);
            }
            bail!(
                "error {} is {} and its job {job} cannot be queued again; see `weft queue show {job}`",
                e.id,
                now.status
            )
        }
    }
}

fn find(state: &State, id: i64) -> Result<QueuedError> {
    match state.error(id)? {
        Some(e) => Ok(e),
        None => bail!("no error {id}; see `weft errors list --all`"),
    }
}

fn show_error(e: &QueuedError, io: &mut Io<'_>) -> Result<()> {
    let w = &mut *io.out;
    writeln!(w, "error:      {}", e.id)?;
    writeln!(w, "flow:       {}", e.flow)?;
    writeln!(w, "record:     {} `{}`", e.kind, e.source_id)?;
    writeln!(w, "stage:      {}", e.stage)?;
    writeln!(w, "status:     {}", e.status)?;
    writeln!(w, "attempts:   {}", e.attempts)?;
    writeln!(w, "first seen: {} UTC", time(e.first_seen_ms))?;
    writeln!(w, "last seen:  {} UTC", time(e.last_seen_ms))?;
    if let Some(run) = e.run {
        writeln!(w, "run:        {run} (`weft runs show {run}`)")?;
    }
    if let Some(closed) = e.closed_ms {
        writeln!(w, "closed:     {} UTC", time(closed))?;
    }
    if let Some(note) = &e.note {
        writeln!(w, "note:       {note}")?;
    }
    writeln!(w, "message:")?;
    for line in e.message.lines() {
        writeln!(w, "  {line}")?;
    }
    if let Some(job) = given_up_job(e) {
        match e.status.as_str() {
            "open" => writeln!(
                w,
                "next: see `weft queue show {job}`, fix the cause, then `weft errors retry {}` (its flow is queued again for `weft worker`), or `weft errors resolve {} --note TEXT`",
                e.id, e.id
            )?,
            "retry" => writeln!(
                w,
                "next: `weft worker` runs the flow again; the entry closes when its job completes"
            )?,
            _ => {}
        }
        return Ok(());
    }
    match e.status.as_str() {
        "open" => writeln!(
            w,
            "next: fix the cause, then `weft errors retry {}` (the next `weft sync run {}` reads the record again), or `weft errors resolve {} --note TEXT`",
            e.id, e.flow, e.id
        )?,
        "retry" => writeln!(w, "next: `weft sync run {}` reads the record again", e.flow)?,
        _ => {}
    }
    Ok(())
}
