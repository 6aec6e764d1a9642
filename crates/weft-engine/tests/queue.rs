//! The work queue's rules on PostgreSQL, on a simulated clock (every time is given): one lease
//! per job under concurrent takers, a queued job enqueued once, leases that expire, retries with
//! a doubling backoff, giving up into the error queue, cancelling, and the SQLite state refused
//! with the way to move.

use std::collections::BTreeSet;
use std::sync::Arc;

use weft_engine::queue::{
    AfterFailure, Cancelled, GIVEN_UP_KIND, JobStatus, Queue, QueueError, QueueRules, given_up_job,
};
use weft_engine::state::State;

const RULES: QueueRules = QueueRules {
    lease_ms: 10_000,
    max_attempts: 3,
    backoff_ms: 1_000,
    backoff_cap_ms: 3_000,
};

fn queue(label: &str) -> Option<(weft_harness::postgres::TestDb, tempfile::TempDir, Queue)> {
    queue_and_state(label).map(|(db, dir, queue, _)| (db, dir, queue))
}

fn queue_and_state(
    label: &str,
) -> Option<(
    weft_harness::postgres::TestDb,
    tempfile::TempDir,
    Queue,
    State,
)> {
    let db = weft_harness::postgres::database(label)?;
    let dir = tempfile::tempdir().unwrap();
    let state = State::open_postgres(db.url(), &dir.path().join("state.db")).unwrap();
    let queue = Queue::open(&state, RULES).unwrap();
    Some((db, dir, queue, state))
}

/// The open (or retry) error-queue entries of jobs given up.
fn given_up(state: &State) -> Vec<weft_engine::state::QueuedError> {
    state
        .errors(None, false)
        .unwrap()
        .into_iter()
        .filter(|e| given_up_job(e).is_some())
        .collect()
}

#[test]
fn a_sqlite_state_is_refused_with_the_way_to_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let state = State::open(&dir.path().join("state.db")).unwrap();
    let err = Queue::open(&state, RULES).unwrap_err();
    assert!(matches!(err, QueueError::NeedsPostgres { .. }));
    let text = err.to_string();
    assert!(
        text.contains("`weft state migrate --to postgres://"),
        "{text}"
    );
}

#[test]
fn a_queued_job_is_enqueued_once_and_each_job_is_leased_to_one_taker() {
    let Some((_db, _dir, queue)) = queue("once") else {
        return;
    };
    let first = queue.enqueue("a", None, None, "schedule", 1_000).unwrap();
    let again = queue.enqueue("a", None, None, "webhook", 500).unwrap();
    assert!(!first.merged);
    assert_eq!(again.id, first.id);
    assert!(again.merged);
    assert_eq!(
        queue.job(first.id).unwrap().unwrap().due_ms,
        500,
        "the earlier time"
    );
    let tenant = queue
        .enqueue("a", Some("org-1"), None, "webhook", 1_000)
        .unwrap();
    assert_ne!(tenant.id, first.id, "per tenant, a job of its own");
    for flow in ["b", "c", "d", "e", "f", "g", "h"] {
        queue.enqueue(flow, None, None, "by hand", 1_000).unwrap();
    }
    // Eight workers take at once: every flow's job goes to exactly one of them, and the second
    // job of flow `a` waits while the first is leased.
    let queue = Arc::new(queue);
    let takers: Vec<_> = (0..8)
        .map(|w| {
            let queue = queue.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while let Some(job) = queue.take(&format!("w{w}"), 2_000).unwrap() {
                    got.push((job.id, job.flow));
                }
                got
            })
        })
        .collect();
    let taken: Vec<(i64, String)> = takers.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let ids: BTreeSet<i64> = taken.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), taken.len(), "no job leased twice: {taken:?}");
    let flows: BTreeSet<&str> = taken.iter().map(|(_, f)| f.as_str()).collect();
    assert_eq!(flows.len(), 8, "{taken:?}");
    assert_eq!(taken.len(), 8, "one job of flow `a` at a time: {taken:?}");
    // Which of flow `a`'s two jobs went first depends on which taker's transaction got there
    // first (a row one taker has locked is skipped by the others); the other waits, queued.
    let statuses = [first.id, tenant.id].map(|id| queue.job(id).unwrap().unwrap().status);
    assert!(
        statuses == [JobStatus::Running, JobStatus::Queued]
            || statuses == [JobStatus::Queued, JobStatus::Running],
        "{statuses:?}"
    );
}

#[test]
fn an_expired_lease_is_taken_by_another_worker_and_the_first_loses_it() {
    let Some((_db, _dir, queue, state)) = queue_and_state("expiry") else {
        return;
    };
    let id = queue.enqueue("a", None, None, "by hand", 0).unwrap().id;
    let job = queue.take("w1", 0).unwrap().unwrap();
    assert_eq!((job.id, job.attempts), (id, 1));
    assert!(queue.heartbeat(id, "w1", 5_000).unwrap());
    assert_eq!(
        queue.take("w2", 14_000).unwrap(),
        None,
        "renewed until 15 s"
    );
    let again = queue
        .take("w2", 15_001)
        .unwrap()
        .expect("expired: another worker");
    assert_eq!((again.id, again.attempts), (id, 2));
    assert_eq!(again.worker.as_deref(), Some("w2"));
    assert!(!queue.heartbeat(id, "w1", 15_002).unwrap(), "w1 lost it");
    assert!(!queue.finish(id, "w1", None, 15_003).unwrap());
    assert!(queue.finish(id, "w2", Some(7), 16_000).unwrap());
    let done = queue.job(id).unwrap().unwrap();
    assert_eq!((done.status, done.run_id), (JobStatus::Done, Some(7)));
    // On the last attempt, an expired lease gives the job up.
    let id = queue
        .enqueue("b", None, None, "by hand", 20_000)
        .unwrap()
        .id;
    for (n, at) in [(1, 20_000), (2, 30_001), (3, 40_002)] {
        assert_eq!(queue.take("w", at).unwrap().unwrap().attempts, n);
    }
    assert_eq!(queue.take("w", 50_003).unwrap(), None);
    let gone = queue.job(id).unwrap().unwrap();
    assert_eq!(gone.status, JobStatus::Failed);
    assert!(gone.last_error.unwrap().contains("lease expired"));
    // …into the error queue, as a failed attempt's give-up is.
    let entries = given_up(&state);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let e = &entries[0];
    assert_eq!((e.flow.as_str(), given_up_job(e)), ("b", Some(id)));
    assert!(e.message.contains("lease expired"), "{}", e.message);
    assert!(
        e.message.contains(&format!("`weft queue show {id}`")),
        "{}",
        e.message
    );
}

#[test]
fn failures_retry_with_a_doubling_backoff_then_give_up_into_the_error_queue() {
    let Some((_db, _dir, queue, state)) = queue_and_state("retry") else {
        return;
    };
    let id = queue.enqueue("a", None, None, "by hand", 0).unwrap().id;
    queue.take("w", 0).unwrap().unwrap();
    assert_eq!(
        queue.fail(id, "w", "Xero answered 500", 100).unwrap(),
        AfterFailure::Retry { due_ms: 1_100 }
    );
    assert_eq!(queue.take("w", 1_099).unwrap(), None, "backing off");
    queue.take("w", 1_100).unwrap().unwrap();
    assert_eq!(
        queue.fail(id, "w", "again", 1_200).unwrap(),
        AfterFailure::Retry { due_ms: 3_200 }
    );
    // A new enqueue while it waits is merged into it, and makes it due sooner.
    assert_eq!(
        queue.enqueue("a", None, None, "webhook", 2_000).unwrap().id,
        id
    );
    let third = queue.take("w", 2_000).unwrap().unwrap();
    assert_eq!(third.attempts, 3);
    assert_eq!(
        queue.fail(id, "w", "still failing", 2_100).unwrap(),
        AfterFailure::GaveUp
    );
    let failed = queue.job(id).unwrap().unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.last_error.as_deref(), Some("still failing"));
    assert_eq!(queue.take("w", 1_000_000).unwrap(), None);
    // Given up into the state's error queue, with the last failure, the attempts, the run of
    // the last attempt and the command that shows the job.
    let entries = given_up(&state);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let e = entries[0].clone();
    assert_eq!(
        (e.flow.as_str(), e.kind.as_str(), e.source_id.clone()),
        ("a", GIVEN_UP_KIND, id.to_string())
    );
    assert_eq!((e.status.as_str(), e.stage.as_str()), ("open", "run"));
    assert!(
        e.message
            .contains("given up after 3 attempts: still failing"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains(&format!("`weft queue show {id}`")),
        "{}",
        e.message
    );
    // Retrying the entry queues the flow again; a record's entry is not a job's.
    assert_eq!(
        queue
            .retry_given_up(e.id, 1_000_100)
            .unwrap()
            .map(|q| q.merged),
        Some(false)
    );
    assert_eq!(
        queue.retry_given_up(e.id, 1_000_101).unwrap(),
        None,
        "already marked for retry"
    );
    let record = state
        .queue_error("a", "invoice", "inv-1", "write", "refused", None, 1_000_102)
        .unwrap();
    assert_eq!(queue.retry_given_up(record, 1_000_103).unwrap(), None);
    assert_eq!(state.error(e.id).unwrap().unwrap().status, "retry");
    // The new job completes: the entry is closed as fixed, the record's entry stays open.
    let again = queue.take("w", 1_000_200).unwrap().unwrap();
    assert_eq!((again.flow.as_str(), again.attempts), ("a", 1));
    assert_ne!(again.id, id);
    assert!(queue.finish(again.id, "w", Some(9), 1_000_300).unwrap());
    assert_eq!(state.error(e.id).unwrap().unwrap().status, "fixed");
    assert_eq!(state.error(record).unwrap().unwrap().status, "open");
    assert_eq!(RULES.backoff(1), 1_000);
    assert_eq!(RULES.backoff(2), 2_000);
    assert_eq!(RULES.backoff(9), 3_000, "capped");
    // Put back (its flow busy elsewhere) without counting an attempt, merged into a job queued
    // meanwhile.
    let b = queue.enqueue("b", None, None, "by hand", 0).unwrap().id;
    queue.take("w", 0).unwrap().unwrap();
    let b2 = queue.enqueue("b", None, None, "by hand", 10).unwrap().id;
    assert_ne!(b, b2);
    assert!(queue.postpone(b, "w", 500, 20).unwrap());
    assert_eq!(queue.job(b).unwrap().unwrap().status, JobStatus::Merged);
    let next = queue.take("w", 30).unwrap().unwrap();
    assert_eq!((next.id, next.attempts), (b2, 1));
}

#[test]
fn cancelling_a_queued_or_running_job() {
    let Some((_db, _dir, queue)) = queue("cancel") else {
        return;
    };
    let a = queue.enqueue("a", None, None, "by hand", 0).unwrap().id;
    let b = queue.enqueue("b", None, None, "by hand", 0).unwrap().id;
    assert_eq!(queue.cancel(a, 1).unwrap(), Some(Cancelled::Queued));
    let taken = queue.take("w", 2).unwrap().unwrap();
    assert_eq!(taken.id, b, "the cancelled job is never taken");
    assert_eq!(queue.cancel(b, 3).unwrap(), Some(Cancelled::Running));
    assert!(!queue.heartbeat(b, "w", 4).unwrap(), "its worker stops");
    assert_eq!(
        queue.fail(b, "w", "stopped", 5).unwrap(),
        AfterFailure::LeaseLost
    );
    assert_eq!(
        queue.cancel(b, 6).unwrap(),
        Some(Cancelled::AlreadyEnded(JobStatus::Cancelled))
    );
    assert_eq!(queue.cancel(999, 7).unwrap(), None);
    let listed = queue.list(true, 10).unwrap();
    assert_eq!(listed.len(), 2);
    assert!(queue.list(false, 10).unwrap().is_empty());
}

/// The flow lock on PostgreSQL holds across machines: two workspaces' state (other folders,
/// so other lock files) on one database cannot run one flow at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flow_lock_holds_for_the_fleet_on_postgres() {
    use weft_engine::runlock::{FlowLock, holder_in};
    let Some(db) = weft_harness::postgres::database("flowlock") else {
        return;
    };
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = State::open_postgres(db.url(), &one.path().join("state.db")).unwrap();
    let second = State::open_postgres(db.url(), &two.path().join("state.db")).unwrap();
    let held = FlowLock::acquire_in(&first, "f", None).await.unwrap();
    let refused = FlowLock::acquire_in(&second, "f", None).await.unwrap_err();
    assert!(refused.contains("held by a run of the fleet"), "{refused}");
    assert!(holder_in(&second, "f").is_some());
    FlowLock::acquire_in(&second, "other", None).await.unwrap();
    drop(held);
    assert_eq!(holder_in(&second, "f"), None);
    FlowLock::acquire_in(&second, "f", None).await.unwrap();
}

/// A webhook's job runs the stream it concerns; merged with a job of another stream (or of the
/// whole flow) it runs every stream, merged with one of the same stream it stays narrow; a
/// failed attempt merged into a queued job widens it the same way; and a job that cannot run as
/// asked is given up at once, whatever attempts it has left.
#[test]
fn a_job_keeps_its_stream_until_merged_with_another_and_one_given_up_goes_at_once() {
    let Some((_db, _dir, queue, state)) = queue_and_state("streams") else {
        return;
    };
    let hook = queue
        .enqueue("a", Some("org-1"), Some("payments"), "webhook", 1_000)
        .unwrap();
    assert_eq!(queue.job(hook.id).unwrap().unwrap().stream, "payments");
    let same = queue
        .enqueue("a", Some("org-1"), Some("payments"), "webhook", 1_100)
        .unwrap();
    assert!(same.merged);
    assert_eq!(queue.job(hook.id).unwrap().unwrap().stream, "payments");
    queue
        .enqueue("a", Some("org-1"), Some("invoices"), "webhook", 1_200)
        .unwrap();
    assert_eq!(
        queue.job(hook.id).unwrap().unwrap().stream,
        "",
        "two streams asked for: the whole flow"
    );
    // Another tenant's job stays its own, narrow.
    let other = queue
        .enqueue("b", Some("org-2"), Some("payments"), "webhook", 1_000)
        .unwrap();
    let taken = queue.take("w1", 2_000).unwrap().unwrap();
    assert_eq!(taken.id, hook.id);
    // While job `a` runs, a webhook queues `a` for one stream; the running attempt then fails
    // and is merged into it: the merged job runs every stream (the failed one's too).
    let narrow = queue
        .enqueue("a", Some("org-1"), Some("payments"), "webhook", 2_100)
        .unwrap();
    assert!(!narrow.merged);
    assert!(matches!(
        queue
            .fail(hook.id, "w1", "Xero answered 503", 2_200)
            .unwrap(),
        AfterFailure::Retry { .. }
    ));
    assert_eq!(
        queue.job(hook.id).unwrap().unwrap().status,
        JobStatus::Merged
    );
    assert_eq!(queue.job(narrow.id).unwrap().unwrap().stream, "");
    // Job `b` cannot run as asked: given up on its first attempt of three, into the error
    // queue, its stream kept in the history.
    let b = queue.take("w2", 2_300).unwrap().unwrap();
    assert_eq!((b.id, b.stream.as_str()), (other.id, "payments"));
    assert_eq!(
        queue
            .give_up(b.id, "w2", "flow `b` has no stream `payments`", 2_400)
            .unwrap(),
        AfterFailure::GaveUp
    );
    let b = queue.job(b.id).unwrap().unwrap();
    assert_eq!((b.status, b.attempts), (JobStatus::Failed, 1));
    let entries = given_up(&state);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0].message.contains("has no stream"), "{entries:?}");
}

/// A scheduled run is queued only when no job of its flow is queued or running, and the
/// fleet's turn at looking for them goes to one caller per interval.
#[test]
fn a_due_flow_is_queued_once_and_one_worker_a_turn_looks_for_them() {
    let Some((_db, _dir, queue)) = queue("due") else {
        return;
    };
    assert_eq!(queue.last_enqueued("a", "schedule").unwrap(), None);
    let first = queue.enqueue_due("a", "schedule", 1_000).unwrap();
    assert!(!first.merged);
    // Queued: the same job.
    let again = queue.enqueue_due("a", "schedule", 1_500).unwrap();
    assert_eq!((again.id, again.merged), (first.id, true));
    // Running: still that job, nothing new queued behind it (a plain enqueue would queue one).
    assert_eq!(queue.take("w1", 2_000).unwrap().unwrap().id, first.id);
    let running = queue.enqueue_due("a", "schedule", 2_500).unwrap();
    assert_eq!((running.id, running.merged), (first.id, true));
    assert_eq!(queue.list(false, 10).unwrap().len(), 1);
    // Ended: the next is a new job.
    assert!(queue.finish(first.id, "w1", None, 3_000).unwrap());
    let next = queue.enqueue_due("a", "schedule", 4_000).unwrap();
    assert!(!next.merged && next.id != first.id);
    assert_eq!(queue.last_enqueued("a", "schedule").unwrap(), Some(4_000));
    assert_eq!(queue.last_enqueued("a", "by hand").unwrap(), None);

    // Turns: the first caller at a time wins; others lose until the interval has passed.
    let queue = Arc::new(queue);
    let callers: Vec<_> = (0..6)
        .map(|_| {
            let queue = queue.clone();
            std::thread::spawn(move || queue.take_turn("schedule", 10_000, 50_000).unwrap())
        })
        .collect();
    let won = callers
        .into_iter()
        .map(|c| c.join().unwrap())
        .filter(|w| *w)
        .count();
    assert_eq!(won, 1);
    assert!(!queue.take_turn("schedule", 10_000, 59_999).unwrap());
    assert!(queue.take_turn("schedule", 10_000, 60_000).unwrap());
    assert!(queue.take_turn("other work", 10_000, 60_000).unwrap());
}

/// A scheduling turn: every scheduled flow's last real run and last scheduled job in one query,
/// a dry run not counted, an interrupted run due at once, a flow queued by its schedule waiting
/// its time even without a run, a broken schedule reported, a flow without one left alone, and
/// a file read again once it changed (its stamp), never before.
#[test]
fn a_scheduling_turn_finds_the_due_flows_from_their_runs_and_jobs() {
    let Some((_db, dir, queue, state)) = queue_and_state("scheduled") else {
        return;
    };
    let ws = dir.path().join("ws");
    let template =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates/kantata-xero");
    std::fs::create_dir_all(ws.join("flows")).unwrap();
    std::fs::create_dir_all(ws.join("tables")).unwrap();
    for table in ["line-accounts.csv", "expense-accounts.csv"] {
        std::fs::copy(
            template.join("tables").join(table),
            ws.join("tables").join(table),
        )
        .unwrap();
    }
    let text = std::fs::read_to_string(template.join("flows/kantata-xero.toml")).unwrap();
    let write = |name: &str, schedule: Option<&str>| {
        let head = schedule
            .map(|s| format!("schedule = \"{s}\"\n"))
            .unwrap_or_default();
        std::fs::write(
            ws.join(format!("flows/{name}.toml")),
            format!("{head}{text}"),
        )
        .unwrap();
    };
    let hour = 3_600_000;
    let now = 100 * hour;
    // never ran: due; ran 10 minutes ago: not due; a dry run since does not count;
    // ran 10 minutes ago with only a dry run before: not due; interrupted: due at once;
    // queued by its schedule 10 minutes ago, never ran: not due; broken; unscheduled.
    for name in ["fresh", "ran", "dry-since", "interrupted", "queued"] {
        write(name, Some("every 1h"));
    }
    write("broken", Some("now and then"));
    write("unscheduled", None);
    let ended = |flow: &str, at: u64| {
        let run = state.start_run(flow, false, at).unwrap();
        state
            .finish_run(
                run,
                &Default::default(),
                &weft_engine::state::RunOutcome::Completed,
                at + 1_000,
            )
            .unwrap();
    };
    ended("ran", now - 600_000);
    ended("dry-since", now - 600_000);
    state.start_run("dry-since", true, now - 300_000).unwrap();
    state
        .start_run("interrupted", false, now - 600_000)
        .unwrap();
    let job = queue
        .enqueue_due("queued", "schedule", now - 600_000)
        .unwrap();
    assert_eq!(queue.take("w", now - 600_000).unwrap().unwrap().id, job.id);
    assert!(queue.finish(job.id, "w", None, now - 590_000).unwrap());

    let turn = |at: u64| -> BTreeSet<String> {
        queue
            .enqueue_scheduled(&ws, &state, at)
            .unwrap()
            .into_iter()
            .map(|(flow, done)| match done {
                Ok(job) => format!(
                    "{flow}: job {}{}",
                    job.id,
                    if job.merged { " again" } else { "" }
                ),
                Err(e) => format!("{flow}: {e}"),
            })
            .collect()
    };
    let first = turn(now);
    let said: Vec<&str> = first.iter().map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(said, ["broken", "fresh", "interrupted"], "{first:?}");
    assert!(
        first
            .iter()
            .any(|l| l.starts_with("broken: ") && l.contains("now and then")),
        "{first:?}"
    );
    // Their jobs count as their last time: at the next turn only the broken file is said.
    let second = turn(now + 1_000);
    assert_eq!(second.len(), 1, "{second:?}");
    assert!(
        second.iter().all(|l| l.starts_with("broken: ")),
        "{second:?}"
    );

    // A schedule changed in its file is read again: every 10 minutes, `ran` is due now.
    write("ran", Some("every 10m"));
    let third = turn(now + 60_000);
    assert!(third.iter().any(|l| l.starts_with("ran: job")), "{third:?}");
    // Its file gone, a flow is forgotten; an unchanged broken file is still reported.
    std::fs::remove_file(ws.join("flows/broken.toml")).unwrap();
    assert!(!turn(now + 61_000).iter().any(|l| l.starts_with("broken")));
    // An hour and more after, every flow that ran or was queued is due again (`dry-since`
    // counts from its real run, not its dry run).
    let later = turn(now + 2 * hour);
    for flow in ["ran", "dry-since", "queued"] {
        assert!(
            later.iter().any(|l| l.starts_with(&format!("{flow}: job"))),
            "{later:?}"
        );
    }
}
