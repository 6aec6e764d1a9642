//! Run history from the state database (as `weft runs list|show`): each run's counts and
//! outcome, a run's detail with its streams and the errors it queued, and, while a run goes on,
//! its progress as server-sent events (`/runs/{id}/events`; the page refreshes itself instead
//! without JavaScript). The stream ends when the run does.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use weft_engine::state::{ErrorFilter, PageAt, RunRecord, State as Db};

use super::flows::{open_state, run_view};
use crate::web::{AppState, Me, PageError};

/// A time as `YYYY-MM-DD HH:MM:SS` (UTC).
pub(crate) fn time(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(
            || format!("{ms} ms"),
            |t| t.strftime("%Y-%m-%d %H:%M:%S").to_string(),
        )
}

/// How a run stands (`completed`, `stopped`, `failed`, `running`, `interrupted`).
pub(crate) fn outcome(run: &RunRecord, db: &Db) -> &'static str {
    db.run_status(run)
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    flow: Option<String>,
    /// The page of runs newer than this one, or older.
    after: Option<String>,
    before: Option<String>,
}

/// Runs per page of the history.
pub(crate) const PER_PAGE: usize = 100;

/// The errors a run's page lists; the rest are on the Errors page, filtered to the run.
pub(crate) const RUN_ERRORS_SHOWN: usize = 100;

/// The links around one page of a long list read by id: `prev` and `next` in reading order and
/// `first` (shown when `off_start`), each the query to put after the list's path (`?…`, or nothing),
/// keeping the list's filters (`keep`; empty values left out). `newest_first`: the list reads by
/// descending id (runs), so its next page holds lower ids; otherwise (the error queue) higher
/// ones.
pub(crate) fn pager(
    keep: &[(&str, String)],
    first_id: Option<i64>,
    last_id: Option<i64>,
    lower: bool,
    higher: bool,
    newest_first: bool,
) -> minijinja::Value {
    let link = |key: Option<(&str, i64)>| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in keep.iter().filter(|(_, v)| !v.is_empty()) {
            q.append_pair(k, v);
        }
        if let Some((k, id)) = key {
            q.append_pair(k, &id.to_string());
        }
        let q = q.finish();
        if q.is_empty() { q } else { format!("?{q}") }
    };
    // The page's edges by id: its lowest and its highest.
    let (low, high) = if newest_first {
        (last_id, first_id)
    } else {
        (first_id, last_id)
    };
    let older = low.filter(|_| lower).map(|id| link(Some(("before", id))));
    let newer = high.filter(|_| higher).map(|id| link(Some(("after", id))));
    let (prev, next) = if newest_first {
        (newer, older)
    } else {
        (older, newer)
    };
    // Off the first page (a previous page exists, or this one is empty past the list's end).
    let off_start = prev.is_some() || (first_id.is_none() && (lower || higher));
    minijinja::context! { prev, next, off_start, first => link(None) }
}

pub(crate) async fn list(
    State(state): State<AppState>,
    me: Me,
    Query(q): Query<ListQuery>,
) -> Result<Response, PageError> {
    let ws = state.workspace()?;
    let db = open_state(&ws)?;
    let flow = q.flow.filter(|f| !f.is_empty());
    let number = |v: Option<String>| v.and_then(|v| v.parse::<i64>().ok());
    let at = match (number(q.after), number(q.before)) {
        (Some(id), _) => PageAt::After(id),
        (None, Some(id)) => PageAt::Before(id),
        (None, None) => PageAt::Start,
    };
    let page = db
        .runs_page(flow.as_deref(), at, PER_PAGE)
        .map_err(PageError::internal)?;
    let total = db.run_count(flow.as_deref()).map_err(PageError::internal)?;
    let pages = pager(
        &[("flow", flow.clone().unwrap_or_default())],
        page.items.first().map(|r| r.id),
        page.items.last().map(|r| r.id),
        page.lower,
        page.higher,
        true,
    );
    let runs: Vec<_> = page.items.iter().map(|r| run_view(&db, r)).collect();
    state.page(
        &me,
        "runs.html",
        "runs",
        minijinja::context! {
            runs, flow, total, pages, per_page => PER_PAGE,
            flows => weft_engine::flows::names(ws.dir()),
        },
    )
}

fn find(db: &Db, id: &str) -> Result<RunRecord, PageError> {
    let n: i64 = id.parse().map_err(|_| {
        PageError::NotFound(format!(
            "{id:?} is not a run number; the Runs page lists them."
        ))
    })?;
    db.run(n).map_err(PageError::internal)?.ok_or_else(|| {
        PageError::NotFound(format!("There is no run {n}; the Runs page lists them."))
    })
}

pub(crate) async fn show(
    State(state): State<AppState>,
    me: Me,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let ws = state.workspace()?;
    let db = open_state(&ws)?;
    let run = find(&db, &id)?;
    let streams: Vec<_> = run
        .summary
        .streams
        .iter()
        .map(|(name, c)| minijinja::context! { name, c => minijinja::Value::from_serialize(c) })
        .collect();
    // The entries whose latest failure was in this run, the first of them on this page.
    let filter = ErrorFilter {
        flow: Some(&run.flow),
        run: Some(run.id),
        include_closed: true,
    };
    let errors: Vec<_> = db
        .errors_page(filter, PageAt::Start, RUN_ERRORS_SHOWN)
        .map_err(PageError::internal)?
        .items
        .into_iter()
        .map(|e| {
            minijinja::context! { id => e.id, kind => e.kind, source_id => e.source_id, stage => e.stage, message => e.message, status => e.status }
        })
        .collect();
    let error_total = db.error_count(filter).map_err(PageError::internal)?;
    let view = run_view(&db, &run);
    state.page(
        &me,
        "run.html",
        "runs",
        minijinja::context! {
            run => view, streams, errors, error_total,
            running => outcome(&run, &db) == "running",
            calls => run.summary.calls, rate_limited => run.summary.rate_limited,
            waited => format!("{:.1}", run.summary.waited_ms as f64 / 1000.0),
        },
    )
}

/// How often the progress stream reads the run's saved counts.
const POLL: Duration = Duration::from_millis(500);

/// The run's progress as server-sent events: a `progress` event with the counts whenever they
/// change, then one `end` event with the outcome, after which the stream closes.
pub(crate) async fn events(
    State(state): State<AppState>,
    _me: Me,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let ws = state.workspace()?;
    let db = open_state(&ws)?;
    let run = find(&db, &id)?;
    let id = run.id;
    let stream = futures_util::stream::unfold(
        (db, None::<String>, false),
        move |(db, last, ended)| async move {
            if ended {
                return None;
            }
            loop {
                let run = match db.run(id) {
                    Ok(Some(r)) => r,
                    // Gone or unreadable: say so and end.
                    Ok(None) | Err(_) => {
                        let ev = Event::default().event("end").data("unknown");
                        return Some((Ok::<_, Infallible>(ev), (db, last, true)));
                    }
                };
                let state_now = outcome(&run, &db);
                let data = serde_json::json!({
                    "outcome": state_now, "summary": run.summary,
                })
                .to_string();
                if state_now != "running" {
                    let ev = Event::default().event("end").data(data);
                    return Some((Ok(ev), (db, last, true)));
                }
                if last.as_deref() != Some(data.as_str()) {
                    let ev = Event::default().event("progress").data(data.clone());
                    return Some((Ok(ev), (db, Some(data), false)));
                }
                tokio::time::sleep(POLL).await;
            }
        },
    );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
