//! The error queue (as `weft errors list|show|retry|resolve`): each record that failed, with
//! the provider's message; *Retry* (the next run reads the record again) and *Resolve* with a
//! note (closed by a person). Administrators and members alike handle errors; every action is
//! audited.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use weft_engine::state::{ErrorFilter, PageAt, QueuedError, STATUS_RETRY, State as Db, now_ms};

use super::flows::open_state;
use super::runs::{pager, time};
use crate::web::{AppState, FormData, Me, PageError, see_other};

/// The longest note kept with a resolution.
const NOTE_MAX: usize = 2000;

/// Entries per page of the queue: a queue of thousands is read a page at a time.
pub(crate) const PER_PAGE: usize = 100;

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    flow: Option<String>,
    all: Option<String>,
    /// Only the entries whose latest failure was in this run.
    run: Option<String>,
    /// The page after this entry, or before it.
    after: Option<String>,
    before: Option<String>,
    retried: Option<String>,
    /// A job given up, queued again.
    requeued: Option<String>,
    resolved: Option<String>,
    already: Option<String>,
}

fn view(e: &QueuedError) -> minijinja::Value {
    minijinja::context! {
        id => e.id, flow => &e.flow, kind => &e.kind, source_id => &e.source_id,
        stage => &e.stage, message => &e.message, status => &e.status, attempts => e.attempts,
        first_seen => time(e.first_seen_ms), last_seen => time(e.last_seen_ms), run => e.run,
        note => &e.note, closed => e.closed_ms.map(time), is_closed => e.is_closed(),
    }
}

pub(crate) async fn list(
    State(state): State<AppState>,
    me: Me,
    Query(q): Query<ListQuery>,
) -> Result<Response, PageError> {
    let ws = state.workspace()?;
    let db = open_state(&ws)?;
    let flow = q.flow.filter(|f| !f.is_empty());
    let all = q.all.is_some();
    // Numbers only: anything else in the address is ignored.
    let number = |v: Option<String>| v.and_then(|v| v.parse::<i64>().ok());
    let run = number(q.run);
    let filter = ErrorFilter {
        flow: flow.as_deref(),
        run,
        include_closed: all,
    };
    let at = match (number(q.after), number(q.before)) {
        (Some(id), _) => PageAt::After(id),
        (None, Some(id)) => PageAt::Before(id),
        (None, None) => PageAt::Start,
    };
    let page = db
        .errors_page(filter, at, PER_PAGE)
        .map_err(PageError::internal)?;
    let total = db.error_count(filter).map_err(PageError::internal)?;
    let errors: Vec<_> = page.items.iter().map(view).collect();
    // The queue reads oldest first: earlier entries have lower ids.
    let mut keep = vec![("flow", flow.clone().unwrap_or_default())];
    if all {
        keep.push(("all", "1".into()));
    }
    if let Some(run) = run {
        keep.push(("run", run.to_string()));
    }
    let pages = pager(
        &keep,
        page.items.first().map(|e| e.id),
        page.items.last().map(|e| e.id),
        page.lower,
        page.higher,
        false,
    );
    let notice = if let Some(id) = number(q.retried) {
        Some(format!(
            "Error {id} is marked for retry: the next run of its flow reads its record again."
        ))
    } else if let Some(id) = number(q.requeued) {
        Some(format!(
            "Error {id} is marked for retry: its flow is queued again for the workers, and the entry closes when that run completes."
        ))
    } else if let Some(id) = number(q.already) {
        Some(format!("Error {id} was already marked for retry."))
    } else {
        number(q.resolved).map(|id| format!("Error {id} is resolved."))
    };
    state.page(
        &me,
        "errors.html",
        "errors",
        minijinja::context! {
            errors, flow, all, run, notice, total, pages, per_page => PER_PAGE,
            flows => weft_engine::flows::names(ws.dir()),
        },
    )
}

fn find(db: &Db, id: &str) -> Result<QueuedError, PageError> {
    let n: i64 = id.parse().map_err(|_| {
        PageError::NotFound(format!(
            "{id:?} is not an error number; the Errors page lists them."
        ))
    })?;
    db.error(n).map_err(PageError::internal)?.ok_or_else(|| {
        PageError::NotFound(format!(
            "There is no error {n} in the queue; the Errors page lists them."
        ))
    })
}

pub(crate) async fn show(
    State(state): State<AppState>,
    me: Me,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let ws = state.workspace()?;
    let db = open_state(&ws)?;
    let e = find(&db, &id)?;
    state.page(
        &me,
        "error_detail.html",
        "errors",
        minijinja::context! { e => view(&e), note_max => NOTE_MAX },
    )
}

pub(crate) async fn retry(
    State(state): State<AppState>,
    me: Me,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let ws = state.workspace()?;
    let db = open_state(&ws)?;
    let e = find(&db, &id)?;
    if e.is_closed() {
        return Err(PageError::BadRequest(format!(
            "Error {} is {} (closed); there is nothing to retry.",
            e.id, e.status
        )));
    }
    if weft_engine::queue::given_up_job(&e).is_some() {
        return retry_given_up(&state, &me, &db, &e);
    }
    if !db.mark_retry(e.id).map_err(PageError::internal)? {
        let now = find(&db, &id)?;
        if now.status != STATUS_RETRY {
            return Err(PageError::BadRequest(format!(
                "Error {} is {} (closed); there is nothing to retry.",
                e.id, now.status
            )));
        }
        return Ok(see_other(&format!("/errors?already={}", e.id)));
    }
    state.audit(
        &me.user.name,
        "error retry",
        &format!("error {}", e.id),
        &format!("{} {} `{}`", e.flow, e.kind, e.source_id),
    )?;
    Ok(see_other(&format!("/errors?retried={}", e.id)))
}

/// *Retry* on the entry of a job the fleet's queue gave up: its flow is queued again for the
/// workers, and the entry closes when a job of the flow completes.
fn retry_given_up(
    state: &AppState,
    me: &Me,
    db: &Db,
    e: &QueuedError,
) -> Result<Response, PageError> {
    use weft_engine::queue::{Queue, QueueRules};
    let queue = Queue::open(db, QueueRules::default()).map_err(PageError::internal)?;
    let Some(queued) = queue
        .retry_given_up(e.id, now_ms())
        .map_err(PageError::internal)?
    else {
        let now = find(db, &e.id.to_string())?;
        if now.status == STATUS_RETRY {
            return Ok(see_other(&format!("/errors?already={}", e.id)));
        }
        return Err(PageError::BadRequest(format!(
            "Error {} is {} and its job cannot be queued again.",
            e.id, now.status
        )));
    };
    state.audit(
        &me.user.name,
        "error retry",
        &format!("error {}", e.id),
        &format!(
            "{} {} `{}`: queued as job {}",
            e.flow, e.kind, e.source_id, queued.id
        ),
    )?;
    Ok(see_other(&format!("/errors?requeued={}", e.id)))
}

pub(crate) async fn resolve(
    State(state): State<AppState>,
    me: Me,
    Path(id): Path<String>,
    form: FormData,
) -> Result<Response, PageError> {
    let ws = state.workspace()?;
    let db = open_state(&ws)?;
    let e = find(&db, &id)?;
    let note = form.get("note").unwrap_or("").trim();
    if note.is_empty() {
        return Err(PageError::BadRequest(
            "Say why the error is resolved in the note (for example \"fixed by hand in Xero\"), then Resolve again.".into(),
        ));
    }
    if note.chars().count() > NOTE_MAX {
        return Err(PageError::BadRequest(format!(
            "The note is longer than {NOTE_MAX} characters; shorten it."
        )));
    }
    if e.is_closed() {
        return Err(PageError::BadRequest(format!(
            "Error {} is already closed ({}).",
            e.id, e.status
        )));
    }
    if !db
        .resolve(e.id, Some(note), now_ms())
        .map_err(PageError::internal)?
    {
        return Err(PageError::BadRequest(format!(
            "Error {} was closed by someone else meanwhile.",
            e.id
        )));
    }
    state.audit(
        &me.user.name,
        "error resolve",
        &format!("error {}", e.id),
        note,
    )?;
    Ok(see_other(&format!("/errors?resolved={}", e.id)))
}
