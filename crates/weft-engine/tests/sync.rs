//! The Kantata → Xero invoice sync against both simulators, on their clock: every invoice once in
//! Xero with the right contact and totals to the cent, links written back, payments recorded
//! once, a second run that changes nothing, and a dry run that changes nothing either.

mod common;

use common::world::{World, cents};
use weft_engine::state::RunOutcome;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invoice_once_with_totals_to_the_cent_then_payments_back_once() {
    every_invoice_once_with_totals_to_the_cent_then_payments_back_once_on(World::new("once", 60))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invoice_once_with_totals_to_the_cent_then_payments_back_once_on_postgres() {
    if let Some(w) = World::new("once-pg", 60).on_postgres() {
        every_invoice_once_with_totals_to_the_cent_then_payments_back_once_on(w).await;
    }
}

async fn every_invoice_once_with_totals_to_the_cent_then_payments_back_once_on(w: World) {
    let eligible: Vec<_> = w.eligible();
    assert!(eligible.len() > 20, "the seed gives enough invoices");

    // A dry run changes nothing.
    let dry = w.run(true).await;
    assert_eq!(dry.outcome, RunOutcome::Completed);
    assert_eq!(
        dry.summary.created as usize,
        eligible.len(),
        "{:?} {:?}",
        dry.outcome,
        &dry.plan[..dry.plan.len().min(5)]
    );
    assert!(w.written().is_empty());

    let first = w.run(false).await;
    assert_eq!(first.outcome, RunOutcome::Completed, "{first:?}");
    assert_eq!(first.summary.failed, 0, "{:?}", first.plan);
    assert_eq!(first.summary.created as usize, eligible.len());
    let written = w.written();
    assert_eq!(written.len(), eligible.len());
    for inv in &eligible {
        let got = &written[&format!("KAN-{}", inv.number)];
        assert_eq!(got.len(), 1, "KAN-{} exactly once", inv.number);
        assert_eq!(
            cents(&got[0]["SubTotal"]),
            inv.total_in_cents,
            "KAN-{} total",
            inv.number
        );
        assert_eq!(got[0]["Type"], "ACCREC");
        assert!(got[0]["Contact"]["ContactID"].is_string());
    }
    // Kantata knows each Xero id.
    let refs = w.kantata.external_references();
    assert_eq!(
        refs.iter().filter(|r| r.service_name == "xero").count(),
        eligible.len()
    );

    // A second run changes nothing.
    let second = w.run(false).await;
    assert_eq!(
        second.summary.created + second.summary.updated,
        0,
        "{:?}",
        second.plan
    );
    assert_eq!(second.summary.lookups_created, 0);

    // Paid in Xero → recorded in Kantata, once.
    // An invoice still awaiting payment in Kantata (one paid there already is left alone).
    let unpaid = eligible.iter().find(|i| i.status == "new").unwrap();
    let number = format!("KAN-{}", unpaid.number);
    let xero_inv = written[&number][0].clone();
    w.xero
        .pay_invoice(
            &w.tenant.id,
            xero_inv["InvoiceID"].as_str().unwrap(),
            &xero_inv["AmountDue"].to_string(),
        )
        .unwrap();
    w.xero.clock().advance(std::time::Duration::from_secs(5));
    let third = w.run(false).await;
    let after = w
        .xero
        .invoice(&w.tenant.id, xero_inv["InvoiceID"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        third.summary.stream("payments").created,
        1,
        "{:?} paid invoice: {} {} cursor {:?} now {}",
        third.plan,
        after["Status"],
        after["UpdatedDateUTC"],
        w.state().cursor("kantata-xero", "payments"),
        w.xero.clock().now_ms()
    );
    let fourth = w.run(false).await;
    assert_eq!(fourth.summary.stream("payments").created, 0);
    let kantata_id = eligible
        .iter()
        .find(|i| format!("KAN-{}", i.number) == number)
        .unwrap()
        .id
        .clone();
    let payments: Vec<_> = w
        .kantata
        .external_payments()
        .into_iter()
        .filter(|p| p.invoice_id.as_deref() == Some(kantata_id.as_str()))
        .collect();
    assert_eq!(payments.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_invoices_each_exactly_once_then_nothing_changes() {
    two_thousand_invoices_each_exactly_once_then_nothing_changes_on(World::new("2000", 2000)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_invoices_each_exactly_once_then_nothing_changes_on_postgres() {
    if let Some(w) = World::new("2000-pg", 2000).on_postgres() {
        two_thousand_invoices_each_exactly_once_then_nothing_changes_on(w).await;
    }
}

async fn two_thousand_invoices_each_exactly_once_then_nothing_changes_on(w: World) {
    let eligible: Vec<_> = w.eligible();
    let kinds = eligible.iter().fold([0usize; 4], |mut acc, i| {
        for (a, n) in acc.iter_mut().zip(i.line_counts) {
            *a += usize::from(n > 0);
        }
        acc
    });
    assert!(kinds.iter().all(|&k| k > 0), "mixed line items: {kinds:?}");
    let first = w.run(false).await;
    assert_eq!(first.outcome, RunOutcome::Completed);
    assert_eq!(first.summary.failed, 0);
    let written = w.written();
    assert_eq!(written.len(), eligible.len());
    for inv in &eligible {
        let got = &written[&format!("KAN-{}", inv.number)];
        assert_eq!(got.len(), 1);
        assert_eq!(cents(&got[0]["SubTotal"]), inv.total_in_cents);
        let lines = got[0]["LineItems"].as_array().unwrap();
        assert_eq!(lines.len(), inv.line_counts.iter().sum::<usize>());
        assert!(lines.iter().all(|l| l["AccountCode"].is_string()));
    }
    // At most 60 calls in any minute and 5 in flight for the organisation, and no 429.
    let log = &w.xero.observed().log;
    assert!(log.max_in_window(Some(&w.tenant.id), 60_000) <= 60);
    assert!(log.max_in_flight(Some(&w.tenant.id)) <= 5);
    assert!(log.requests().iter().all(|r| r.status != 429));
    // One contact per client name: none created twice.
    let mut names = std::collections::HashSet::new();
    for c in w.xero.contacts(&w.tenant.id) {
        let name = c["Name"].as_str().unwrap_or_default().to_lowercase();
        assert!(names.insert(name.clone()), "contact {name} twice");
    }
    assert!(
        names.len() > 20,
        "clients named from their projects: {names:?}"
    );
    // Projects are read by the ids a chunk of invoices needs (`load = "keys"`), at most 200
    // per call, never the whole list.
    let projects: Vec<_> = w
        .kantata
        .observed()
        .log
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/workspaces"))
        .collect();
    assert!(!projects.is_empty());
    for r in &projects {
        let only = r
            .query
            .split('&')
            .find_map(|p| p.strip_prefix("only="))
            .unwrap_or_else(|| panic!("a whole-list read of projects: {}", r.query));
        let ids = only.split("%2C").flat_map(|s| s.split(',')).count();
        assert!((1..=200).contains(&ids), "{ids} ids in one call");
    }
    let second = w.run(false).await;
    assert_eq!(
        second.summary.created + second.summary.updated + second.summary.failed,
        0
    );
    assert_eq!(w.written().len(), eligible.len());

    // Twenty invoices paid in Xero: each recorded in Kantata exactly once, over two runs.
    let unpaid: Vec<_> = eligible
        .iter()
        .filter(|i| i.status == "new")
        .take(20)
        .collect();
    for inv in &unpaid {
        let x = &written[&format!("KAN-{}", inv.number)][0];
        w.xero
            .pay_invoice(
                &w.tenant.id,
                x["InvoiceID"].as_str().unwrap(),
                &x["AmountDue"].to_string(),
            )
            .unwrap();
    }
    w.clock.advance_by(std::time::Duration::from_secs(5));
    let third = w.run(false).await;
    assert_eq!(
        third.summary.stream("payments").created as usize,
        unpaid.len()
    );
    assert_eq!(w.run(false).await.summary.stream("payments").created, 0);
    let payments = w.kantata.external_payments();
    for inv in &unpaid {
        let n = payments
            .iter()
            .filter(|p| p.invoice_id.as_deref() == Some(inv.id.as_str()))
            .count();
        assert_eq!(n, 1, "invoice {} paid once in Kantata", inv.id);
    }
}

/// Changing an invoice in Kantata updates it in Xero while Xero allows it; a paid one is left
/// as it is, with the reason recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_update_xero_while_it_allows_and_say_why_not_otherwise() {
    let w = World::new("update", 30);
    assert_eq!(w.run(false).await.summary.failed, 0);
    let open: Vec<_> = w
        .kantata
        .invoices()
        .into_iter()
        .filter(|i| !i.draft && i.status == "new")
        .collect();
    let (changed, paid) = (&open[0], &open[1]);
    let written = w.written();
    let paid_x = &written[&format!("KAN-{}", paid.number)][0];
    w.xero
        .pay_invoice(
            &w.tenant.id,
            paid_x["InvoiceID"].as_str().unwrap(),
            &paid_x["AmountDue"].to_string(),
        )
        .unwrap();
    let http = weft_engine::http::client().unwrap();
    for inv in [changed, paid] {
        let status = http
            .put(format!(
                "{}/api/v1/invoices/{}",
                w.kantata.api_url(),
                inv.id
            ))
            .bearer_auth(w.kantata.personal_token())
            .json(&serde_json::json!({"invoice": {"purchase_order": format!("PO-{}", inv.number)}}))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "{status}");
    }
    w.clock.advance_by(std::time::Duration::from_secs(90));
    let report = w.run(false).await;
    assert_eq!(report.summary.updated, 1, "{:?}", report.plan);
    let after = w.written();
    let updated = &after[&format!("KAN-{}", changed.number)];
    assert_eq!(updated.len(), 1);
    assert_eq!(updated[0]["Reference"], format!("PO-{}", changed.number));
    let kept = &after[&format!("KAN-{}", paid.number)][0];
    assert_eq!(kept["Status"], "PAID");
    assert_ne!(kept["Reference"], format!("PO-{}", paid.number));
    let link = w
        .state()
        .link("kantata-xero", "invoices", &paid.id)
        .unwrap()
        .unwrap();
    assert!(link.note.unwrap_or_default().contains("PAID"));
    // Settled: the next run has nothing to do.
    let again = w.run(false).await;
    assert_eq!(
        again.summary.updated + again.summary.created,
        0,
        "{:?}",
        again.plan
    );
}

/// A spent daily limit stops the run cleanly; a day later the next run finishes the job with
/// nothing written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_daily_limit_stops_cleanly_and_the_next_day_resumes() {
    a_spent_daily_limit_stops_cleanly_and_the_next_day_resumes_on(daycap("daycap").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_daily_limit_stops_cleanly_and_the_next_day_resumes_on_postgres() {
    if let Some(w) = daycap("daycap-pg").await.on_postgres() {
        a_spent_daily_limit_stops_cleanly_and_the_next_day_resumes_on(w).await;
    }
}

async fn daycap(name: &str) -> World {
    World::with_limits(
        name,
        120,
        weft_harness::xero::XeroLimits {
            per_day: 3,
            ..weft_harness::xero::XeroLimits::default()
        },
    )
    .await
}

async fn a_spent_daily_limit_stops_cleanly_and_the_next_day_resumes_on(w: World) {
    let first = w.run(false).await;
    assert!(
        matches!(first.outcome, RunOutcome::Stopped { .. }),
        "{:?}",
        first.outcome
    );
    let partial = w.written().len();
    w.clock
        .advance_by(std::time::Duration::from_secs(24 * 3600 + 60));
    // Still four calls a day: each day moves the job on; it ends within a few days.
    let mut outcome = RunOutcome::Stopped {
        reason: String::new(),
    };
    for _ in 0..10 {
        let r = w.run(false).await;
        outcome = r.outcome;
        if outcome == RunOutcome::Completed {
            break;
        }
        w.clock
            .advance_by(std::time::Duration::from_secs(24 * 3600 + 60));
    }
    assert_eq!(outcome, RunOutcome::Completed);
    let written = w.written();
    assert!(written.len() > partial);
    assert!(written.values().all(|v| v.len() == 1), "nothing twice");
    let eligible = w.eligible().len();
    assert_eq!(written.len(), eligible);
}

/// With each Xero call taking a second (on a clock that moves only while everything waits),
/// the invoice creates stay in flight while the next records are read and prepared: a contact
/// is created beside invoice creates, and five creates are in flight at once.
#[test]
fn creates_stay_in_flight_while_the_next_records_are_prepared() {
    let clock = weft_harness::clock::SimClock::event_driven(1_760_000_000_000).unwrap();
    let w = World::on_clock("pipeline", 1200, &clock, std::time::Duration::from_secs(1));
    let mut builder = tokio::runtime::Builder::new_current_thread();
    clock.track_runtime(&mut builder).enable_all();
    let rt = builder.build().unwrap();
    let report = rt.block_on(w.run(false));
    clock.untrack_runtime();
    assert_eq!(
        report.outcome,
        RunOutcome::Completed,
        "{:?}",
        report.outcome
    );
    assert_eq!(report.summary.failed, 0);
    let log = w.xero.observed().log.requests();
    let puts = |path: &str| {
        log.iter()
            .filter(|r| r.method == "PUT" && r.path.ends_with(path))
            .collect::<Vec<_>>()
    };
    let (invoices, contacts) = (puts("/Invoices"), puts("/Contacts"));
    let most = invoices.iter().map(|r| r.in_flight).max();
    assert_eq!(most, Some(5), "creates in flight");
    // Each call takes 1,000 simulated ms: an invoice create is on its way from its arrival
    // until then.
    assert!(
        contacts.iter().any(|c| invoices
            .iter()
            .any(|i| i.at_ms <= c.at_ms && c.at_ms < i.at_ms + 1_000)),
        "a contact created while invoice creates were on their way"
    );
    assert!(log.iter().all(|r| r.status != 429));
}
/// An organisation that does not use the invoices' currency: Xero refuses each invoice, and
/// each is queued with Xero's message at stage `create`, the run completes, and a second run
/// queues nothing twice (the person enables the currency in Xero, then `weft errors retry`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoice_in_a_currency_the_organisation_does_not_use_is_queued_with_xeros_message() {
    let w = World::with_currencies("currency", 12, &[]);
    let eligible = w.eligible().len();
    let first = w.run(false).await;
    assert_eq!(first.outcome, RunOutcome::Completed, "{:?}", first.outcome);
    assert_eq!(first.summary.created, 0);
    assert_eq!(first.summary.failed as usize, eligible);
    let queued = w.state().errors(None, false).unwrap();
    assert_eq!(queued.len(), eligible);
    for e in &queued {
        assert_eq!(e.stage, "create", "{e:?}");
        assert!(
            e.message.contains("not subscribed to currency USD"),
            "Xero's own message: {}",
            e.message
        );
    }
    assert!(w.written().is_empty());
    // A second run meets the same refusal: still nothing created, nothing queued twice.
    let second = w.run(false).await;
    assert_eq!(second.summary.created, 0);
    assert_eq!(w.state().errors(None, false).unwrap().len(), eligible);
}

/// Warnings are failures, without duplicates: with every line mapped to an account code Xero
/// does not know, Xero stores each invoice without the code and warns; the run counts each as
/// failed with Xero's message but links what was stored, so once the table is fixed the next
/// run updates those invoices instead of creating them again.
#[tokio::test]
async fn invoices_stored_with_warnings_are_failures_then_updated_not_duplicated() {
    let mut w = World::new("warned", 8);
    let eligible = w.eligible().len();
    assert!(eligible > 0);
    let original = w.flow.tables.clone();
    for name in ["accounts", "expense-accounts"] {
        for code in w.flow.tables.get_mut(name).unwrap().values_mut() {
            *code = "9999".to_owned();
        }
    }
    let first = w.run(false).await;
    assert_eq!(first.outcome, RunOutcome::Completed, "{:?}", first.outcome);
    assert_eq!(first.summary.created, 0);
    assert_eq!(first.summary.failed as usize, eligible);
    let queued = w.state().errors(None, false).unwrap();
    assert_eq!(queued.len(), eligible);
    assert!(
        queued
            .iter()
            .all(|e| e.message.contains("'9999' has been removed")),
        "{queued:?}"
    );
    let written = w.written();
    assert_eq!(written.len(), eligible);
    assert!(written.values().all(|v| v.len() == 1), "one invoice each");

    w.flow.tables = original;
    let second = w.run(false).await;
    assert_eq!(
        second.outcome,
        RunOutcome::Completed,
        "{:?}",
        second.outcome
    );
    assert_eq!(second.summary.created, 0, "{:?}", second.summary);
    assert_eq!(
        second.summary.updated as usize, eligible,
        "{:?}",
        second.summary
    );
    assert!(w.state().errors(None, false).unwrap().is_empty());
    let written = w.written();
    assert!(
        written.values().all(|v| v.len() == 1),
        "still one invoice each"
    );
    assert!(written.values().all(|v| {
        v[0]["LineItems"]
            .as_array()
            .is_some_and(|lines| lines.iter().all(|l| l["AccountCode"].is_string()))
    }));
}
