//! The fleet's work queue (as `weft queue list|workers|cancel`), when the state is on
//! PostgreSQL: the workers their heartbeats show, the jobs queued and running (and, on asking,
//! the recent ended ones), each with its stream, tenant, attempts, worker, last failure and run;
//! *Cancel* on a job that has not ended. With the SQLite state the page says how to move.
//! Administrators and members alike cancel jobs; every cancel is audited.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use weft_engine::queue::{Cancelled, Job, JobStatus, Queue, QueueError, QueueRules};
use weft_engine::state::now_ms;

use super::flows::open_state;
use super::runs::time;
use crate::web::{AppState, Me, PageError, see_other};

/// Jobs listed at most.
const SHOWN: usize = 200;

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    all: Option<String>,
    cancelled: Option<String>,
    stopping: Option<String>,
}

fn view(j: &Job) -> minijinja::Value {
    minijinja::context! {
        id => j.id, flow => &j.flow, stream => &j.stream, tenant => &j.tenant,
        status => j.status.as_str(), reason => &j.reason, attempts => j.attempts,
        max_attempts => j.max_attempts, due => time(j.due_ms), worker => &j.worker,
        last_error => &j.last_error, run => j.run_id,
        open => matches!(j.status, JobStatus::Queued | JobStatus::Running),
        bad => j.status == JobStatus::Failed,
    }
}

/// The queue of the workspace's state, or `None` with the SQLite state.
fn queue(state: &AppState) -> Result<Option<Queue>, PageError> {
    let ws = state.workspace()?;
    let db = open_state(&ws)?;
    match Queue::open(&db, QueueRules::default()) {
        Ok(q) => Ok(Some(q)),
        Err(QueueError::NeedsPostgres { .. }) => Ok(None),
        Err(e) => Err(PageError::internal(e)),
    }
}

pub(crate) async fn list(
    State(state): State<AppState>,
    me: Me,
    Query(q): Query<ListQuery>,
) -> Result<Response, PageError> {
    let all = q.all.is_some();
    let Some(queue) = queue(&state)? else {
        // The page says how to move (the layout's `fleet` is false).
        return state.page(&me, "queue.html", "queue", minijinja::context! {});
    };
    let jobs: Vec<_> = queue
        .list(all, SHOWN)
        .map_err(PageError::internal)?
        .iter()
        .map(view)
        .collect();
    let counts: Vec<_> = queue
        .counts()
        .map_err(PageError::internal)?
        .into_iter()
        .map(|(status, n)| minijinja::context! { status => status.as_str(), n => n })
        .collect();
    let workers: Vec<_> = queue
        .workers()
        .map_err(PageError::internal)?
        .into_iter()
        .map(|w| {
            minijinja::context! {
                id => w.id, host => w.host, pid => w.pid, started => time(w.started_ms),
                silent => w.silent_ms / 1000, alive => w.alive,
            }
        })
        .collect();
    let number = |v: Option<String>| v.and_then(|v| v.parse::<i64>().ok());
    let notice = if let Some(id) = number(q.cancelled) {
        Some(format!("Job {id} is cancelled; it will not run."))
    } else {
        number(q.stopping).map(|id| {
            format!("Job {id} is cancelled; its worker stops the run at its next heartbeat.")
        })
    };
    state.page(
        &me,
        "queue.html",
        "queue",
        minijinja::context! {
            jobs, counts, workers, all, notice, shown => SHOWN,
        },
    )
}

pub(crate) async fn cancel(
    State(state): State<AppState>,
    me: Me,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let Ok(n) = id.parse::<i64>() else {
        return Err(PageError::NotFound(format!(
            "{id:?} is not a job number; the Queue page lists them."
        )));
    };
    let Some(queue) = queue(&state)? else {
        return Err(PageError::BadRequest(
            "This workspace keeps its state in SQLite, which has no work queue; `weft state migrate --to postgres://USER@HOST/DATABASE` moves it.".into(),
        ));
    };
    let job = queue.job(n).map_err(PageError::internal)?;
    let done = queue.cancel(n, now_ms()).map_err(PageError::internal)?;
    let (Some(job), Some(done)) = (job, done) else {
        return Err(PageError::NotFound(format!(
            "There is no job {n}; the Queue page lists them."
        )));
    };
    let back = match done {
        Cancelled::Queued => format!("/queue?cancelled={n}"),
        Cancelled::Running => format!("/queue?stopping={n}"),
        Cancelled::AlreadyEnded(status) => {
            return Err(PageError::BadRequest(format!(
                "Job {n} had already ended ({}); there is nothing to cancel.",
                status.as_str()
            )));
        }
    };
    state.audit(
        &me.user.name,
        "job cancel",
        &format!("job {n}"),
        &format!("flow {} ({})", job.flow, job.status.as_str()),
    )?;
    Ok(see_other(&back))
}
