//! What the flow engine promises outside the happy path, each case one the invoice sync it
//! replaced got wrong: two runs at once, a lost state database, a source record gone, records
//! edited during a read, an update that goes back and forth, and a typo in a mapping.

mod common;

use std::time::Duration;

use common::world::World;
use weft_engine::run::RunError;
use weft_engine::state::RunOutcome;

fn eligible(w: &World) -> Vec<weft_harness::kantata::InvoiceInfo> {
    w.eligible()
}

fn open_errors(w: &World) -> Vec<weft_engine::state::QueuedError> {
    w.state()
        .errors(None, false)
        .unwrap()
        .into_iter()
        .filter(|e| e.status == "open" || e.status == "retry")
        .collect()
}

fn assert_each_once(w: &World) {
    let written = w.written();
    let eligible = eligible(w);
    assert_eq!(written.len(), eligible.len(), "every invoice is in Xero");
    for inv in &eligible {
        let copies = written
            .get(&format!("KAN-{}", inv.number))
            .map_or(0, Vec::len);
        assert_eq!(copies, 1, "KAN-{} exactly once", inv.number);
    }
}

async fn put_invoice(w: &World, id: &str, body: serde_json::Value) {
    let http = weft_engine::http::client().unwrap();
    let status = http
        .put(format!("{}/api/v1/invoices/{id}", w.kantata.api_url()))
        .bearer_auth(w.kantata.personal_token())
        .json(&serde_json::json!({ "invoice": body }))
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "{status}");
}

/// An eligible invoice not paid yet.
fn unpaid(w: &World) -> weft_harness::kantata::InvoiceInfo {
    eligible(w)
        .into_iter()
        .find(|i| i.status == "new")
        .expect("an unpaid invoice")
}

/// Sets an invoice's purchase order in Kantata (Xero's `Reference` in the template).
async fn set_po(w: &World, id: &str, po: &str) {
    put_invoice(w, id, serde_json::json!({ "purchase_order": po })).await;
}

/// A second run while one is under way is refused (or waits for it, when asked): nothing is
/// queued, nothing written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_at_once_one_refused_one_waiting_nothing_queued_nothing_twice() {
    let w = World::new("concurrent", 300);
    let (a, b) = tokio::join!(w.try_run(false, None, None, None), async {
        // Let the first run take the lock.
        tokio::time::sleep(Duration::from_millis(50)).await;
        w.try_run(false, None, None, None).await
    });
    let (a, b) = (a.unwrap(), b.unwrap());
    let refused = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Err(RunError::Busy { .. })))
        .count();
    assert_eq!(
        refused,
        1,
        "one of the two runs is refused: {:?} {:?}",
        a.as_ref().err(),
        b.as_ref().err()
    );
    let done = [a, b].into_iter().find_map(Result::ok).unwrap();
    assert_eq!(done.outcome, RunOutcome::Completed);
    let message = RunError::Busy {
        flow: "kantata-xero".into(),
        holder: "held by process 1 since now".into(),
    }
    .to_string();
    assert!(
        message.contains("already running") && message.contains("--wait"),
        "{message}"
    );

    // A second run that waits starts when the first ends, and has nothing left to do.
    let (a, b) = tokio::join!(w.try_run(false, None, None, None), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        w.try_run(false, None, None, Some(Duration::from_secs(600)))
            .await
    });
    let (a, b) = (a.unwrap().unwrap(), b.unwrap().unwrap());
    assert_eq!(a.summary.created + b.summary.created, 0);
    assert!(open_errors(&w).is_empty(), "{:?}", open_errors(&w));
    assert_each_once(&w);
    let refs = w.kantata.external_references();
    assert_eq!(
        refs.iter().filter(|r| r.service_name == "xero").count(),
        eligible(&w).len(),
        "one reference per invoice"
    );
}

/// With the state database lost, the next run finds every invoice by its number and links it
/// (no error), and the one after has nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_state_relinks_everything_without_one_error() {
    let w = World::new("lost-state", 120);
    let first = w.run(false).await;
    assert_eq!(first.summary.failed, 0);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(w.dir.join(format!("state.db{suffix}")));
    }
    // Past Xero's idempotency window (inside it, the same batches would be answered from
    // Xero's replay store, which also duplicates nothing), so only the natural key can tell.
    w.clock.advance_by(Duration::from_secs(7 * 60));
    let contacts = w.xero.contacts(&w.tenant.id).len();
    let second = w.run(false).await;
    assert_eq!(
        second.outcome,
        RunOutcome::Completed,
        "{:?}",
        second.outcome
    );
    assert_eq!(second.summary.failed, 0, "{:?}", second.plan);
    assert_eq!(second.summary.created, 0, "nothing created again");
    assert_eq!(
        second.summary.lookups_created, 0,
        "no contact created again"
    );
    assert_eq!(w.xero.contacts(&w.tenant.id).len(), contacts);
    assert!(open_errors(&w).is_empty(), "{:?}", open_errors(&w));
    let links = w.state().links("kantata-xero", "invoices").unwrap();
    assert_eq!(
        links
            .iter()
            .filter(|l| l.dest_id.is_some() && l.pending.is_none())
            .count(),
        eligible(&w).len(),
        "every invoice linked again"
    );
    let third = w.run(false).await;
    assert_eq!(
        third.summary.created + third.summary.updated + third.summary.written_back,
        0,
        "{:?}",
        third.plan
    );
    assert_each_once(&w);
}

/// A linked invoice that is gone at the source (a draft sent earlier, then deleted), with a
/// retry queued: the run completes for everything else, names the record, and moves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_record_gone_is_queued_by_name_and_the_run_goes_on() {
    let w = World::new("gone", 40);
    assert_eq!(w.run(false).await.summary.failed, 0);
    let gone = w
        .kantata
        .invoices()
        .into_iter()
        .find(|i| i.draft)
        .expect("the seed has drafts");
    let state = w.state();
    // It was sent once (include-drafts) and linked, and a person asked for a retry.
    state
        .finish_write(
            "kantata-xero",
            "invoices",
            &gone.id,
            "0f0f0f0f-0000-4000-8000-000000000001",
            "v0",
            None,
            1,
        )
        .unwrap();
    let queued = state
        .queue_error(
            "kantata-xero",
            "invoices",
            &gone.id,
            "update",
            "earlier problem",
            None,
            1,
        )
        .unwrap();
    assert!(state.mark_retry(queued).unwrap());
    let http = weft_engine::http::client().unwrap();
    let status = http
        .delete(format!(
            "{}/api/v1/invoices/{}",
            w.kantata.api_url(),
            gone.id
        ))
        .bearer_auth(w.kantata.personal_token())
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "{status}");
    // Another invoice changes, so the run has work beyond the missing one.
    let other = unpaid(&w);
    w.clock.advance_by(Duration::from_secs(90));
    set_po(&w, &other.id, "PO-after").await;
    let report = w.run(false).await;
    assert_eq!(
        report.outcome,
        RunOutcome::Completed,
        "{:?}",
        report.outcome
    );
    let errors = open_errors(&w);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].source_id, gone.id);
    assert_eq!(errors[0].stage, "read");
    assert!(
        errors[0].message.contains("cannot be read"),
        "{}",
        errors[0].message
    );
    let x = &w.written()[&format!("KAN-{}", other.number)][0];
    assert_eq!(x["Reference"], "PO-after", "the other invoice was updated");
    // The next run is not held up by it either.
    let again = w.run(false).await;
    assert_eq!(again.outcome, RunOutcome::Completed);
}

/// Invoices edited while a run reads them (besides the run's own write-backs): after two quiet
/// runs every invoice is in Xero once, carrying its latest change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_during_a_read_are_all_read_by_the_next_runs() {
    let w = World::new("edits", 2100);
    let targets: Vec<_> = eligible(&w)
        .into_iter()
        .filter(|i| i.status == "new")
        .step_by(7)
        .take(150)
        .collect();
    let editor = async {
        for (n, inv) in targets.iter().enumerate() {
            set_po(&w, &inv.id, &format!("PO-edit-{n}")).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let (first, ()) = tokio::join!(w.run(false), editor);
    assert_eq!(first.outcome, RunOutcome::Completed);
    w.clock.advance_by(Duration::from_secs(120));
    w.run(false).await;
    w.clock.advance_by(Duration::from_secs(120));
    w.run(false).await;
    assert_each_once(&w);
    let written = w.written();
    for (n, inv) in targets.iter().enumerate() {
        let x = &written[&format!("KAN-{}", inv.number)][0];
        assert_eq!(
            x["Reference"],
            format!("PO-edit-{n}"),
            "KAN-{} has its last edit",
            inv.number
        );
    }
    assert!(open_errors(&w).is_empty(), "{:?}", open_errors(&w));
}

/// A → B → A → B inside Xero's idempotency window: each update is its own request, so Xero
/// ends with B (a key that depended on content only would replay the first B's answer and
/// leave A).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_and_forth_updates_are_never_replayed() {
    let w = World::new("aba", 20);
    assert_eq!(w.run(false).await.summary.failed, 0);
    let inv = unpaid(&w);
    for po in ["PO-B", "PO-A", "PO-B"] {
        w.clock.advance_by(Duration::from_secs(61));
        set_po(&w, &inv.id, po).await;
        let r = w.run(false).await;
        assert_eq!(r.summary.updated, 1, "{po}: {:?}", r.plan);
        let x = &w.written()[&format!("KAN-{}", inv.number)][0];
        assert_eq!(x["Reference"], po);
    }
}

/// A misspelt destination field in the shipped template is a located error at load, with the
/// right name suggested, before any call.
#[test]
fn a_mapping_typo_is_a_located_error_at_load() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../templates/kantata-xero/flows/kantata-xero.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("AccountCode ="))
        .unwrap()
        + 1;
    let typo = text.replace("\nAccountCode =", "\nAcountCode =");
    let flow = weft_engine::flow::Flow::parse("kantata-xero", &path, &typo).unwrap();
    let problems = flow.check_against(&|id| Some(common::shipped(id)));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].message.contains("no field `AcountCode`")
            && problems[0].message.contains("did you mean `AccountCode`"),
        "{problems:?}"
    );
    assert_eq!(problems[0].line, line);
    // And an expression reading an undeclared option fails at load.
    let option = text.replace(
        "options.default_account_code",
        "options.default_acount_code",
    );
    let err = weft_engine::flow::Flow::parse("kantata-xero", &path, &option).unwrap_err();
    assert!(
        err.to_string()
            .contains("did you mean `default_account_code`"),
        "{err}"
    );
}

/// A run killed part-way keeps the counts of what it did (saved after every chunk), so the run
/// history shows the invoices it created, and it reads as interrupted once its lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_keeps_its_counts() {
    a_killed_run_keeps_its_counts_on(World::new("killed", 600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_keeps_its_counts_on_postgres() {
    if let Some(w) = World::new("killed-pg", 600).on_postgres() {
        a_killed_run_keeps_its_counts_on(w).await;
    }
}

async fn a_killed_run_keeps_its_counts_on(w: World) {
    // Killed after many calls: well into the creates.
    assert!(
        w.run_until(false, Some(40)).await.is_none(),
        "the run was dropped"
    );
    let state = w.state();
    let last = state.runs(Some("kantata-xero"), 1).unwrap().remove(0);
    assert!(last.outcome.is_none(), "no end was recorded");
    let created = w.written().len() as u64;
    assert!(created > 0, "the run created invoices before it was killed");
    assert!(
        last.summary.created > 0 && last.summary.created <= created,
        "counts saved as it went: {} (Xero has {created})",
        last.summary.created
    );
    assert_eq!(
        weft_engine::runlock::holder(state.path(), "kantata-xero"),
        None,
        "nobody holds the flow any more: interrupted"
    );
}

/// `full-every` reads the whole source again once the last full read is that old (for changes a
/// cursor cannot see); in between, runs read only what changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_read_comes_back_when_it_is_due() {
    // Hours pass: Xero's tokens expire and rotate as they would.
    let mut w = World::with_oauth("full", 60).await;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../templates/kantata-xero/flows/kantata-xero.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        r#"source = { connection = "kantata", resource = "invoices" }"#,
        r#"source = { connection = "kantata", resource = "invoices", full-every = "6h" }"#,
    );
    w.flow = weft_engine::flow::Flow::parse("kantata-xero", &path, &text).unwrap();
    let all = w.kantata.invoices().len() as u64;
    let first = w.run(false).await;
    assert_eq!(first.summary.stream("invoices").read, all);
    // The first run's write-backs changed the invoices: the next run reads them once more,
    // then runs read only what changed since (and the cursor's one-minute overlap).
    let edited: Vec<_> = eligible(&w).into_iter().take(2).collect();
    for inv in &edited {
        w.clock.advance_by(Duration::from_secs(1800));
        set_po(&w, &inv.id, &format!("PO-{}", inv.id)).await;
        let r = w.run(false).await;
        assert_eq!(r.outcome, RunOutcome::Completed, "{:?}", r.outcome);
    }
    w.clock.advance_by(Duration::from_secs(1800));
    let quiet = w.run(false).await;
    assert!(
        quiet.summary.stream("invoices").read <= 1,
        "only what changed since (within the overlap): {:?}",
        quiet.summary.stream("invoices")
    );
    w.clock.advance_by(Duration::from_secs(6 * 3600));
    let full = w.run(false).await;
    assert_eq!(
        full.summary.stream("invoices").read,
        all,
        "the full read is due"
    );
    assert_eq!(full.summary.created + full.summary.updated, 0);
}

fn lookups_by_number(w: &World) -> usize {
    w.xero
        .observed()
        .log
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.query.contains("InvoiceNumbers="))
        .count()
}

/// A batch whose answers were all lost stays pending. Inside the provider's idempotency
/// `window`, the next run sends the same batch again with the same key (Xero replays what it
/// did) and needs no lookup; past the window it looks the invoices up by number instead. Either
/// way each invoice is in Xero once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_outcomes_are_replayed_inside_the_window_and_looked_up_after_it() {
    use weft_harness::faults::{Fault, FaultRule, When};
    for (name, wait_s, replayed) in [("window-in", 60, true), ("window-out", 7 * 60, false)] {
        let w = World::with_oauth(name, 30).await;
        w.xero.observed().faults.add(
            FaultRule::on("/api.xro/2.0/Invoices", When::Always, Fault::LoseResponse).method("PUT"),
        );
        let first = w.run(false).await;
        assert!(
            matches!(first.outcome, RunOutcome::Failed { .. }),
            "{:?}",
            first.outcome
        );
        let pending = w
            .state()
            .links("kantata-xero", "invoices")
            .unwrap()
            .into_iter()
            .filter(|l| l.pending.is_some())
            .count();
        assert!(pending > 0, "the lost batch stays pending");
        w.xero.observed().faults.clear();
        w.clock.advance_by(Duration::from_secs(wait_s));
        let before = lookups_by_number(&w);
        let second = w.run(false).await;
        assert_eq!(
            second.outcome,
            RunOutcome::Completed,
            "{:?}",
            second.outcome
        );
        assert_eq!(second.summary.failed, 0, "{:?}", second.plan);
        let looked_up = lookups_by_number(&w) - before;
        if replayed {
            assert_eq!(looked_up, 0, "{name}: replayed with its key, no lookup");
        } else {
            assert!(
                looked_up > 0,
                "{name}: past the window, looked up by number"
            );
        }
        assert_each_once(&w);
        assert!(
            w.state()
                .links("kantata-xero", "invoices")
                .unwrap()
                .iter()
                .all(|l| l.pending.is_none()),
            "{name}: nothing left pending"
        );
    }
}

/// An update the destination refuses as a conflict (HTTP 409: the record changed there since it
/// was read) is queued with that remedy at stage `update`, the run goes on, and the next run
/// reads the record again and writes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_update_is_queued_and_the_next_run_writes_it() {
    use weft_harness::faults::{Fault, FaultRule, When};
    let w = World::new("conflict", 20);
    let first = w.run(false).await;
    assert_eq!(first.summary.failed, 0);
    let inv = unpaid(&w);
    w.clock.advance_by(Duration::from_secs(60));
    set_po(&w, &inv.id, "PO-conflict").await;
    w.xero.observed().faults.add(
        FaultRule::on(
            "/api.xro/2.0/Invoices",
            When::Always,
            Fault::Status {
                status: 409,
                body: r#"{"Message":"The invoice was changed by another user"}"#.to_owned(),
            },
        )
        .method("POST"),
    );
    let second = w.run(false).await;
    assert_eq!(
        second.outcome,
        RunOutcome::Completed,
        "{:?}",
        second.outcome
    );
    assert_eq!(second.summary.stream("invoices").failed, 1);
    let queued = open_errors(&w);
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].stage, "update");
    assert_eq!(queued[0].source_id, inv.id);
    assert!(
        queued[0]
            .message
            .contains("changed at the destination since it was read"),
        "{}",
        queued[0].message
    );
    w.xero.observed().faults.clear();
    w.clock.advance_by(Duration::from_secs(60));
    let third = w.run(false).await;
    assert_eq!(
        third.summary.stream("invoices").updated,
        1,
        "{:?}",
        third.plan
    );
    assert!(open_errors(&w).is_empty());
    let written = w.written();
    let x = &written[&format!("KAN-{}", inv.number)][0];
    assert_eq!(x["Reference"], "PO-conflict", "{x}");
}
