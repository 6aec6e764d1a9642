//! Flows of the workspace (`flows/*.toml`): the list with each flow's last run, a flow's
//! connections, options, streams and mapping tables, *Sync now* (the run goes on off the
//! request, under the flow lock, and its page follows it) and the dry-run preview (the engine's
//! plan of what would be created or updated).
//!
//! Flows are found, checked and run exactly as `weft sync run` does (`weft_engine::flows`,
//! `Flow::check_against`, `weft_engine::run::Run`); a run already under way, in this console or
//! another process, is reported and never started twice.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use weft_core::Spec;
use weft_engine::flow::{Flow, FlowProblem};
use weft_engine::flows::FlowRunError;
use weft_engine::limits::{Clock, SystemClock};
use weft_engine::run::{Report, RunError};
use weft_engine::state::{ErrorFilter, RunOutcome, RunRecord, State as Db};
use weft_engine::tables::{self, ImportError};
use weft_engine::workspace::Workspace;

use super::runs::{outcome, time};
use crate::web::{AppState, Me, PageError, see_other};

/// Flows a run was started for by this process and has not ended yet (workspace, flow): the
/// flow lock is taken only once the run's thread is under way, so two quick clicks must meet
/// here first.
fn starting() -> &'static Mutex<HashSet<(PathBuf, String)>> {
    static SET: OnceLock<Mutex<HashSet<(PathBuf, String)>>> = OnceLock::new();
    SET.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Removes its flow from [`starting`] when the run's thread ends, however it ends.
struct Started((PathBuf, String));

impl Drop for Started {
    fn drop(&mut self) {
        crate::web::lock(starting()).remove(&self.0);
    }
}

/// The workspace's state database.
pub(crate) fn open_state(ws: &Workspace) -> Result<Db, PageError> {
    ws.open_state().map_err(PageError::internal)
}

/// Flow `name`, loaded and checked against the connectors' specs, or a page saying what to fix.
fn load(state: &AppState, ws: &Workspace, name: &str) -> Result<Flow, PageError> {
    let path = weft_engine::flows::find(ws.dir(), name).map_err(PageError::NotFound)?;
    let flow = Flow::load(&path).map_err(|e| {
        PageError::BadRequest(format!(
            "Flow {name} cannot be used until its file is fixed: {e}"
        ))
    })?;
    let problems = flow.check_against(&|id| state.spec(id).cloned());
    if let Some(first) = problems.first() {
        return Err(PageError::BadRequest(format!(
            "Flow {name} does not fit its connectors ({} problem(s)); the first: {} at {}:{}:{}. Fix the file (`weft flow check {name}` lists them all), then try again.",
            problems.len(),
            first.message,
            first.file,
            first.line,
            first.column
        )));
    }
    Ok(flow)
}

/// Whether a run of `name` is under way: started here, or holding the flow lock (any process
/// on this machine, or with the state on PostgreSQL, any worker of the fleet).
fn running(ws: &Workspace, db: &Db, name: &str) -> Option<String> {
    if crate::web::lock(starting()).contains(&(ws.dir().to_path_buf(), name.to_owned())) {
        return Some("started from this console".into());
    }
    weft_engine::runlock::holder_in(db, name)
}

/// A flow's schedule for the templates: its text and when `weft serve` runs it next.
fn schedule_view(db: &Db, flow: &Flow) -> Option<minijinja::Value> {
    let text = flow.file.schedule.as_deref()?;
    let next = crate::automation::next_due(db, flow, SystemClock.now_ms()).map(time);
    Some(minijinja::context! { text, next })
}

fn last_run(db: &Db, name: &str) -> Result<Option<minijinja::Value>, PageError> {
    let run = db
        .runs(Some(name), 1)
        .map_err(PageError::internal)?
        .into_iter()
        .next();
    Ok(run.map(|r| run_view(db, &r)))
}

/// How many open (or retrying) queue entries flow `name` has, counted in the database.
fn open_errors(db: &Db, name: &str) -> Result<u64, PageError> {
    db.error_count(ErrorFilter {
        flow: Some(name),
        ..ErrorFilter::default()
    })
    .map_err(PageError::internal)
}

/// A run for the templates: times, outcome and counts.
pub(crate) fn run_view(db: &Db, r: &RunRecord) -> minijinja::Value {
    let reason = match &r.outcome {
        Some(RunOutcome::Stopped { reason } | RunOutcome::Failed { reason }) => {
            Some(reason.clone())
        }
        _ => None,
    };
    minijinja::context! {
        id => r.id, flow => &r.flow, dry_run => r.dry_run,
        started => time(r.started_ms), finished => r.finished_ms.map(time),
        outcome => outcome(r, db), reason,
        s => minijinja::Value::from_serialize(&r.summary),
    }
}

pub(crate) async fn list(State(state): State<AppState>, me: Me) -> Result<Response, PageError> {
    let ws = state.workspace()?;
    let db = open_state(&ws)?;
    let mut rows = Vec::new();
    for name in weft_engine::flows::names(ws.dir()) {
        let (description, streams, problem, schedule) =
            match Flow::load(&weft_engine::flows::path(ws.dir(), &name)) {
                Ok(f) => (
                    f.file.description.clone(),
                    f.file.streams.keys().cloned().collect::<Vec<_>>(),
                    None,
                    schedule_view(&db, &f),
                ),
                Err(e) => (String::new(), Vec::new(), Some(e.to_string()), None),
            };
        let open = open_errors(&db, &name)?;
        rows.push(minijinja::context! {
            name => &name, description, streams, problem, open, schedule,
            last => last_run(&db, &name)?, running => running(&ws, &db, &name),
        });
    }
    state.page(
        &me,
        "flows.html",
        "flows",
        minijinja::context! { flows => rows, dir => ws.dir().join("flows").display().to_string() },
    )
}

#[derive(Deserialize)]
pub(crate) struct ShowQuery {
    saved: Option<String>,
}

pub(crate) async fn show(
    State(state): State<AppState>,
    me: Me,
    Path(name): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Result<Response, PageError> {
    let ws = state.workspace()?;
    let ctx = flow_context(&state, &ws, &name)?;
    let notice = q.saved.map(|t| format!("Saved the rows of table {t}."));
    state.page(
        &me,
        "flow.html",
        "flows",
        minijinja::context! { notice, ..ctx },
    )
}

/// What the flow page shows of flow `name`.
fn flow_context(
    state: &AppState,
    ws: &Workspace,
    name: &str,
) -> Result<minijinja::Value, PageError> {
    let flow = load(state, ws, name)?;
    let db = open_state(ws)?;
    let connections: Vec<_> = flow
        .file
        .connections
        .iter()
        .map(|(alias, c)| {
            minijinja::context! {
                alias, connector => &c.connector, connection => flow.connection_name(alias),
                tenant => &c.tenant,
            }
        })
        .collect();
    let options: Vec<_> = flow
        .file
        .options
        .iter()
        .map(|(k, v)| minijinja::context! { name => k, value => v.to_string() })
        .collect();
    let mut streams = Vec::new();
    for (sname, s) in &flow.file.streams {
        let cursor = db.cursor(name, sname).map_err(PageError::internal)?;
        streams.push(minijinja::context! {
            name => sname, description => &s.description,
            source => format!("{}.{}", s.source.connection, s.source.resource),
            dest => format!("{}.{}", s.write.connection, s.write.resource),
            join => s.join.as_ref().map(|j| j.stream.clone()),
            lookups => s.lookup.iter().map(|l| format!("{} ({}.{}{})", l.name, l.connection, l.resource, if l.create.is_some() { ", created when missing" } else { "" })).collect::<Vec<_>>(),
            write_backs => s.write_back.iter().map(|b| format!("{}.{}", b.connection, b.resource)).collect::<Vec<_>>(),
            cursor,
        });
    }
    let tables: Vec<_> = flow
        .file
        .tables
        .iter()
        .map(|(tname, t)| {
            let rows: Vec<_> = flow
                .rows
                .get(tname)
                .map(|rows| {
                    rows.iter()
                        .map(|r| {
                            minijinja::context! {
                                key => &r.key, value => &r.value,
                                key_name => &r.key_name, value_name => &r.value_name,
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            minijinja::context! {
                name => tname, rows,
                file => t.file.as_ref().map(|f| f.display().to_string()),
                one_to_one => t.one_to_one,
            }
        })
        .collect();
    let last = last_run(&db, name)?;
    Ok(minijinja::context! {
        flow => minijinja::context! { name, description => &flow.file.description, path => flow.path.display().to_string() },
        connections, options, streams, tables, last,
        running => running(ws, &db, name),
        schedule => schedule_view(&db, &flow),
        open_errors => open_errors(&db, name)?,
    })
}

/// What a run needs, all of it `Send`: the flow and its connections are opened on the run's
/// own thread (a session's futures are not `Send`).
pub(crate) struct Job {
    pub(crate) workspace: Workspace,
    pub(crate) specs: Vec<Spec>,
    pub(crate) callback: String,
    pub(crate) name: String,
    /// Run only this stream (a webhook's trigger), else all of them.
    pub(crate) stream: Option<String>,
    pub(crate) dry_run: bool,
}

/// How a run failed to happen or to finish.
pub(crate) enum JobError {
    /// Another run holds the flow.
    Busy(String),
    /// Anything else, as a sentence.
    Other(String),
}

/// Runs the job's flow once, as `weft sync run` does: every connection opened through
/// `weft_engine::connect`, then `weft_engine::flows::run` (tenants, the flow lock, the state
/// database).
pub(crate) async fn run_job(job: Job) -> Result<Report, JobError> {
    let path = weft_engine::flows::find(job.workspace.dir(), &job.name).map_err(JobError::Other)?;
    let flow = Flow::load(&path).map_err(|e| JobError::Other(e.to_string()))?;
    let spec_of = |id: &str| {
        job.specs
            .iter()
            .find(|s| s.id() == id || s.file().former_names.iter().any(|n| n == id))
            .cloned()
    };
    let all = [job.workspace];
    let mut opened = BTreeMap::new();
    for (alias, c) in &flow.file.connections {
        let connection = flow.connection_name(alias);
        let declared = all[0].file.connections.get(&connection).ok_or_else(|| {
            JobError::Other(format!(
                "flow `{}` uses connection `{connection}` (as `{alias}`), which this workspace does not have; create it on the Connections page",
                flow.name
            ))
        })?;
        let spec = spec_of(&declared.connector).ok_or_else(|| {
            JobError::Other(format!(
                "connection `{connection}` is of connector {}, which the console has not loaded",
                declared.connector
            ))
        })?;
        let o =
            weft_engine::connect::open(&all, spec, &connection, &job.callback).map_err(|e| {
                JobError::Other(format!(
                    "connection `{connection}` (the flow's {} connection `{alias}`) cannot be opened: {e}",
                    c.connector
                ))
            })?;
        opened.insert(alias.clone(), o);
    }
    let state = all[0]
        .open_state()
        .map_err(|e| JobError::Other(e.to_string()))?;
    let options = weft_engine::flows::RunOptions {
        dry_run: job.dry_run,
        stream: job.stream,
        // A run under way was refused before this thread started; this only rides out a
        // status page's momentary look at the lock (`runlock::holder`) at the same instant.
        wait: Some(Duration::from_secs(2)),
        ..Default::default()
    };
    weft_engine::flows::run(&flow, &opened, &state, &SystemClock as &dyn Clock, options)
        .await
        .map_err(|e| match e {
            FlowRunError::Run(RunError::Busy { holder, .. }) => JobError::Busy(holder),
            e => JobError::Other(e.to_string()),
        })
}

/// The page refusing a second run while one is under way (409).
fn busy(name: &str, holder: &str) -> Response {
    let mut res = PageError::BadRequest(format!(
        "Flow {name} is already running ({holder}), so no second run was started. Follow it on the Runs page; start another when it has ended."
    ))
    .into_response();
    *res.status_mut() = StatusCode::CONFLICT;
    res
}

fn job(state: &AppState, ws: Workspace, name: &str, dry_run: bool) -> Job {
    Job {
        workspace: ws,
        specs: state.specs.clone(),
        callback: state.callback_url(),
        name: name.to_owned(),
        stream: None,
        dry_run,
    }
}

/// *Sync now*: starts a run of the flow on a thread of its own and sends the browser to its
/// page; refused while a run is under way.
pub(crate) async fn sync(
    State(state): State<AppState>,
    me: Me,
    Path(name): Path<String>,
) -> Result<Response, PageError> {
    let ws = state.workspace()?;
    drop(load(&state, &ws, &name)?);
    let key = (ws.dir().to_path_buf(), name.clone());
    let db = open_state(&ws)?;
    let before = db
        .runs(Some(&name), 1)
        .map_err(PageError::internal)?
        .first()
        .map_or(0, |r| r.id);
    {
        let mut set = crate::web::lock(starting());
        if let Some(holder) = set
            .contains(&key)
            .then(|| "started from this console".to_owned())
            .or_else(|| weft_engine::runlock::holder_in(&db, &name))
        {
            drop(set);
            state.audit(
                &me.user.name,
                "sync refused",
                &name,
                &format!("already running ({holder})"),
            )?;
            return Ok(busy(&name, &holder));
        }
        set.insert(key.clone());
    }
    let work = job(&state, ws, &name, false);
    let (tx, rx) = std::sync::mpsc::channel();
    let guard = Started(key);
    let spawned = std::thread::Builder::new()
        .name(format!("run {name}"))
        .spawn(move || {
            let _guard = guard;
            let result = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(run_job(work)),
                Err(e) => Err(JobError::Other(e.to_string())),
            };
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        return Err(PageError::internal(e));
    }
    // Wait until the run is recorded (or failed to start), at most a few seconds: the page of
    // the run then follows it (read from the workspace's state, the SQLite file or PostgreSQL).
    for _ in 0..100 {
        match rx.try_recv() {
            Ok(Ok(report)) => {
                state.audit(&me.user.name, "sync", &name, &format!("run {}", report.run))?;
                return Ok(see_other(&format!("/runs/{}", report.run)));
            }
            Ok(Err(JobError::Busy(holder))) => {
                state.audit(
                    &me.user.name,
                    "sync refused",
                    &name,
                    &format!("already running ({holder})"),
                )?;
                return Ok(busy(&name, &holder));
            }
            Ok(Err(JobError::Other(reason))) => {
                state.audit(&me.user.name, "sync failed", &name, &reason)?;
                return Err(PageError::BadRequest(format!(
                    "Flow {name} could not run: {reason}"
                )));
            }
            Err(_) => {}
        }
        if let Some(r) = db
            .runs(Some(&name), 1)
            .map_err(PageError::internal)?
            .into_iter()
            .next()
            .filter(|r| r.id > before && !r.dry_run)
        {
            state.audit(&me.user.name, "sync", &name, &format!("run {}", r.id))?;
            return Ok(see_other(&format!("/runs/{}", r.id)));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    state.audit(&me.user.name, "sync", &name, "started")?;
    Ok(see_other(&format!("/runs?flow={name}")))
}

/// The dry-run preview: the engine's plan of what a run would create or update, nothing
/// written.
pub(crate) async fn preview(
    State(state): State<AppState>,
    me: Me,
    Path(name): Path<String>,
) -> Result<Response, PageError> {
    let ws = state.workspace()?;
    drop(load(&state, &ws, &name)?);
    let refused = |holder: &str| {
        state.audit(
            &me.user.name,
            "preview refused",
            &name,
            &format!("already running ({holder})"),
        )?;
        Ok(busy(&name, holder))
    };
    if let Some(holder) = running(&ws, &open_state(&ws)?, &name) {
        return refused(&holder);
    }
    let work = job(&state, ws, &name, true);
    let report = crate::web::engine(move || run_job(work)).await?;
    let report = match report {
        Ok(r) => r,
        Err(JobError::Busy(holder)) => return refused(&holder),
        Err(JobError::Other(reason)) => {
            state.audit(&me.user.name, "preview failed", &name, &reason)?;
            return Err(PageError::BadRequest(format!(
                "The preview of flow {name} could not run: {reason}"
            )));
        }
    };
    state.audit(
        &me.user.name,
        "preview",
        &name,
        &format!("dry run {}", report.run),
    )?;
    let reason = match &report.outcome {
        RunOutcome::Stopped { reason } | RunOutcome::Failed { reason } => Some(reason.clone()),
        RunOutcome::Completed => None,
    };
    let plan: Vec<_> = report
        .plan
        .iter()
        .map(|p| {
            minijinja::context! { stream => &p.stream, action => p.action, source_id => &p.source_id, detail => &p.detail }
        })
        .collect();
    state.page(
        &me,
        "preview.html",
        "flows",
        minijinja::context! {
            name, run => report.run, plan, omitted => report.plan_omitted, reason,
            s => minijinja::Value::from_serialize(&report.summary),
        },
    )
}

/// The label of pasted rows in problems (they have no file name).
const PASTED: &str = "the rows";

/// The table editor: the rows of the table's file as M-Bridge CSV, to edit or replace with a
/// pasted export. Administrators only.
pub(crate) async fn table_form(
    State(state): State<AppState>,
    me: Me,
    Path((name, table)): Path<(String, String)>,
) -> Result<Response, PageError> {
    me.require_admin(&state, "edit a flow's mapping tables")?;
    let ws = state.workspace()?;
    let path = weft_engine::flows::find(ws.dir(), &name).map_err(PageError::NotFound)?;
    let flow = Flow::load_leaving_out(&path, &table)
        .map_err(|e| PageError::BadRequest(format!("Flow {name} cannot be loaded: {e}")))?;
    let spec = declared(&flow, &table)?;
    let text = match &spec.file {
        Some(file) => {
            let target = flow
                .path
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join(file);
            match tables::read_file(&target, tables::Columns::default()) {
                Ok(rows) => String::from_utf8_lossy(&tables::to_csv(&rows)).into_owned(),
                Err(_) => String::from_utf8_lossy(&tables::to_csv(&[])).into_owned(),
            }
        }
        None => String::new(),
    };
    table_page(&state, &me, &flow, &table, spec, &text, &[], None)
}

fn declared<'a>(flow: &'a Flow, table: &str) -> Result<&'a weft_engine::flow::Table, PageError> {
    flow.file.tables.get(table).ok_or_else(|| {
        PageError::NotFound(format!(
            "Flow {} has no table {table}; its tables are: {}.",
            flow.name,
            flow.file
                .tables
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

#[allow(clippy::too_many_arguments)]
fn table_page(
    state: &AppState,
    me: &Me,
    flow: &Flow,
    table: &str,
    spec: &weft_engine::flow::Table,
    text: &str,
    problems: &[String],
    error: Option<String>,
) -> Result<Response, PageError> {
    let mut res = state.page(
        me,
        "table_form.html",
        "flows",
        minijinja::context! {
            flow => &flow.name, table, text, problems, error,
            file => spec.file.as_ref().map(|f| f.display().to_string()),
            inline => spec.file.is_none(), one_to_one => spec.one_to_one,
            header => format!("{},{},{},{}", tables::MAVENLINK_NAME, tables::MAVENLINK_ID, tables::EXTERNAL_NAME, tables::EXTERNAL_ID),
        },
    )?;
    if error.is_some() || !problems.is_empty() {
        *res.status_mut() = StatusCode::BAD_REQUEST;
    }
    Ok(res)
}

/// Saves a table's rows (edited, or a pasted M-Bridge export) through the import
/// `weft tables import` uses: every row checked first, nothing written on a problem.
pub(crate) async fn table_save(
    State(state): State<AppState>,
    me: Me,
    Path((name, table)): Path<(String, String)>,
    form: crate::web::FormData,
) -> Result<Response, PageError> {
    me.require_admin(&state, "edit a flow's mapping tables")?;
    let ws = state.workspace()?;
    let path = weft_engine::flows::find(ws.dir(), &name).map_err(PageError::NotFound)?;
    let flow = Flow::load_leaving_out(&path, &table)
        .map_err(|e| PageError::BadRequest(format!("Flow {name} cannot be loaded: {e}")))?;
    let spec = declared(&flow, &table)?;
    let text = form.get("rows").unwrap_or("").replace("\r\n", "\n");
    let fail = |problems: &[FlowProblem], error: Option<String>| {
        let lines: Vec<String> = problems
            .iter()
            .map(|p| {
                if p.file == PASTED && p.line > 0 {
                    format!("Line {}: {}", p.line, p.message)
                } else {
                    p.message.clone()
                }
            })
            .collect();
        table_page(&state, &me, &flow, &table, spec, &text, &lines, error)
    };
    if text.trim().is_empty() {
        return fail(
            &[],
            Some("The rows are empty: paste an M-Bridge mapping export, or edit the rows shown, header row first.".into()),
        );
    }
    match tables::import(&flow, &table, spec, PASTED, text.as_bytes()) {
        Ok(done) => {
            let changes = match done.changes {
                None => "a new file".to_owned(),
                Some((a, c, r)) => format!("{a} added, {c} changed, {r} removed"),
            };
            state.audit(
                &me.user.name,
                "table import",
                &format!("{name}/{table}"),
                &format!("{} row(s): {changes}", done.rows),
            )?;
            let to = url::form_urlencoded::byte_serialize(table.as_bytes()).collect::<String>();
            let flow_url = url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>();
            Ok(see_other(&format!("/flows/{flow_url}?saved={to}")))
        }
        Err(ImportError::Inline { line }) => fail(&[], Some(format!(
            "Table {table} keeps its rows inline in the flow file ({}:{line}), so there is no file to save them in; nothing was written. Add `file = \"../tables/{table}.csv\"` under [tables.{table}] in the flow file, then save again: it creates the file.",
            flow.path.display()
        ))),
        Err(ImportError::OwnColumns { column, line }) => fail(&[], Some(format!(
            "Table {table} reads the column {column} of its file ({}:{line}), not M-Bridge's columns; nothing was written. Remove key-column and value-column from [tables.{table}] so it reads them, then save again.",
            flow.path.display()
        ))),
        Err(ImportError::Rows(problems)) => fail(&problems, Some(format!(
            "{} problem(s) in the rows; nothing was written. Fix them and save again.",
            problems.len()
        ))),
        Err(ImportError::Empty { .. }) => fail(&[], Some(
            "The rows have a header but no mapping; nothing was written. A table file needs at least one row (to empty it, edit the file by hand).".into(),
        )),
        Err(ImportError::OneToOne(problems)) => fail(&problems, Some(format!(
            "Table {table} is one-to-one and {} value(s) are given to two keys; nothing was written.",
            problems.len()
        ))),
        Err(ImportError::Write { target, source }) => Err(PageError::Internal(format!(
            "Cannot write {}: {source}",
            tables::shown(&target).display()
        ))),
    }
}
