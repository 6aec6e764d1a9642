//! M-Bridge's other Xero scenarios, each a shipped flow template run on the simulators: approved
//! expense reports to bills, timesheets to balanced journals, a Xero list into a Kantata custom
//! field, and the legacy expense claims. Each: records land once with exact amounts and the
//! right lookups, write-backs once, a second run changes nothing, a changed source record
//! updates while the destination allows it.

mod common;

use std::collections::HashMap;

use common::world::{World, cents};
use weft_engine::state::RunOutcome;
use weft_harness::kantata::{Resolve, SubmissionKind};

/// Approved expense reports with expenses: what the bills flow sends.
fn approved_reports(w: &World) -> Vec<weft_harness::kantata::SubmissionInfo> {
    w.kantata
        .state()
        .submissions(SubmissionKind::ExpenseReport)
        .into_iter()
        .filter(|s| s.status == "approved" && !s.line_ids.is_empty())
        .collect()
}

/// The flow's bills in Xero, by number.
fn xero_bills(w: &World) -> HashMap<String, Vec<serde_json::Value>> {
    let mut out: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    for inv in w.xero.invoices(&w.tenant.id) {
        if inv["Type"] == "ACCPAY"
            && let Some(n) = inv["InvoiceNumber"].as_str()
            && n.starts_with("KX-ERS-")
            && inv["Status"] != "DELETED"
        {
            out.entry(n.to_owned()).or_default().push(inv);
        }
    }
    out
}

/// A Kantata API answer to a GET of `path` (and its query), as the account's owner.
async fn kantata_get(w: &World, path: &str) -> serde_json::Value {
    weft_engine::http::client()
        .unwrap()
        .get(format!("{}{path}", w.kantata.api_url()))
        .bearer_auth(w.kantata.personal_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Kantata's external references on submissions for `service_model`, by submission id.
async fn references(w: &World, model: &str) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for page in 1..100 {
        let body = kantata_get(
            w,
            &format!(
                "/api/v1/external_references?subject_type=Submission&per_page=200&page={page}"
            ),
        )
        .await;
        let results = body["results"].as_array().cloned().unwrap_or_default();
        for r in &results {
            let refs = &body[r["key"].as_str().unwrap()][r["id"].as_str().unwrap()];
            if refs["service_model"] == model {
                out.entry(refs["subject_id"].to_string().trim_matches('"').to_owned())
                    .or_default()
                    .push(
                        refs["service_model_ref"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    );
            }
        }
        if results.len() < 200 {
            break;
        }
    }
    out
}

fn assert_clean(report: &weft_engine::run::Report) {
    assert_eq!(report.outcome, RunOutcome::Completed, "{report:?}");
    assert_eq!(
        report.summary.failed,
        0,
        "{:?}",
        report
            .plan
            .iter()
            .filter(|p| p.action == "failed")
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_expense_reports_become_one_bill_each_with_exact_lines() {
    let w = World::for_template("bills", "kantata-xero-bills", 30, true).await;
    let first = w.run(false).await;
    assert_clean(&first);
    let approved = approved_reports(&w);
    assert!(approved.len() >= 5, "{}", approved.len());
    let bills = xero_bills(&w);
    assert_eq!(bills.len(), approved.len(), "one bill per approved report");
    for s in &approved {
        let copies = &bills[&format!("KX-ERS-{}", s.id)];
        assert_eq!(copies.len(), 1, "report {} once", s.id);
        let bill = &copies[0];
        assert_eq!(
            bill["LineItems"].as_array().unwrap().len(),
            s.line_ids.len()
        );
        assert_eq!(cents(&bill["Total"]), s.total_in_cents, "report {}", s.id);
        assert!(bill["Contact"]["ContactID"].as_str().is_some());
    }
    // Kantata holds each bill's id once.
    let refs = references(&w, "Invoice").await;
    for s in &approved {
        let id = bills[&format!("KX-ERS-{}", s.id)][0]["InvoiceID"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(refs.get(&s.id), Some(&vec![id]), "report {}", s.id);
    }
    assert_eq!(first.summary.written_back, approved.len() as u64);

    // Nothing changed: nothing written.
    let second = w.run(false).await;
    assert_clean(&second);
    assert_eq!(
        (
            second.summary.created,
            second.summary.updated,
            second.summary.written_back
        ),
        (0, 0, 0),
        "{:?}",
        second.summary
    );

    // A report approved now is sent; an expense changed on a sent report updates its bill.
    let state = w.kantata.state();
    let pending = state
        .submissions(SubmissionKind::ExpenseReport)
        .into_iter()
        .find(|s| s.status == "pending" && !s.line_ids.is_empty())
        .expect("a pending report");
    state
        .resolve_submission(&pending.id, Resolve::Approve, Some("ok"))
        .unwrap();
    w.clock.advance_by(std::time::Duration::from_secs(120));
    let third = w.run(false).await;
    assert_clean(&third);
    assert_eq!(
        (third.summary.created, third.summary.updated),
        (1, 0),
        "{:?}",
        third.summary
    );
    // An expense changed on a sent report does not move the report's change time: the daily
    // full read finds it.
    let changed = &approved[0];
    state
        .set_expense_amount(&changed.line_ids[0], 12_345)
        .unwrap();
    w.clock
        .advance_by(std::time::Duration::from_secs(25 * 3600));
    let fourth = w.run(false).await;
    assert_clean(&fourth);
    assert_eq!(
        (fourth.summary.created, fourth.summary.updated),
        (0, 1),
        "{:?}",
        fourth.summary
    );
    let bills = xero_bills(&w);
    let after = state.submission(&changed.id).unwrap();
    let bill = &bills[&format!("KX-ERS-{}", changed.id)];
    assert_eq!(bill.len(), 1);
    assert_eq!(cents(&bill[0]["Total"]), after.total_in_cents);
    assert_eq!(bills[&format!("KX-ERS-{}", pending.id)].len(), 1);

    // A bill paid in Xero, and one voided, are never touched again.
    let (paid, voided) = (&approved[1], &approved[2]);
    let id_of = |s: &weft_harness::kantata::SubmissionInfo| {
        bills[&format!("KX-ERS-{}", s.id)][0]["InvoiceID"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    w.xero.pay_in_full(&w.tenant.id, &id_of(paid)).unwrap();
    w.xero.void_invoice(&w.tenant.id, &id_of(voided)).unwrap();
    let before = xero_bills(&w);
    state.set_expense_amount(&paid.line_ids[0], 777).unwrap();
    state.set_expense_amount(&voided.line_ids[0], 888).unwrap();
    w.clock
        .advance_by(std::time::Duration::from_secs(25 * 3600));
    let fifth = w.run(false).await;
    assert_clean(&fifth);
    assert_eq!(
        (fifth.summary.created, fifth.summary.updated),
        (0, 0),
        "{:?}",
        fifth.summary
    );
    let after = xero_bills(&w);
    for s in [paid, voided] {
        let key = format!("KX-ERS-{}", s.id);
        assert_eq!(
            after.get(&key).map(Vec::len),
            before.get(&key).map(Vec::len)
        );
    }
    assert!(
        fifth
            .plan
            .iter()
            .filter(|p| p.detail.contains("so it is not changed"))
            .count()
            >= 1,
        "{:?}",
        fifth.plan
    );
}

/// M-Bridge's "Filter by Project": only the reports of the projects the filter selects are sent,
/// and a filter naming a parameter Kantata's project list does not take stops the run with the
/// names it does take, rather than select every project.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_project_filter_selects_the_reports_sent() {
    let mut w = World::for_template("project-filter", "kantata-xero-bills", 30, false).await;
    let approved = approved_reports(&w);
    // A word of one project's title.
    let ws = &approved[0].workspace_id;
    let body = kantata_get(
        &w,
        &format!("/api/v1/workspaces?only={ws}&include_archived=true"),
    )
    .await;
    let title = body["workspaces"][ws]["title"].as_str().unwrap().to_owned();
    let word = title.split_whitespace().next().unwrap().to_owned();
    let selected: std::collections::HashSet<String> = {
        let body = kantata_get(
            &w,
            &format!("/api/v1/workspaces?matching={word}&include_archived=true&per_page=200"),
        )
        .await;
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    w.flow.file.options.insert(
        "project-filter".to_owned(),
        toml::Value::String("onyl=1".to_owned()),
    );
    let refused = w.run(false).await;
    let RunOutcome::Failed { reason } = &refused.outcome else {
        panic!("{refused:?}");
    };
    assert!(
        reason.contains("`onyl`") && reason.contains("`matching`"),
        "{reason}"
    );
    assert_eq!(refused.summary.created, 0);
    w.flow.file.options.insert(
        "project-filter".to_owned(),
        toml::Value::String(format!("matching={word}")),
    );
    let report = w.run(false).await;
    assert_clean(&report);
    let sent: Vec<_> = approved
        .iter()
        .filter(|s| selected.contains(&s.workspace_id))
        .collect();
    assert!(
        !sent.is_empty() && sent.len() < approved.len(),
        "{} of {}",
        sent.len(),
        approved.len()
    );
    let bills = xero_bills(&w);
    assert_eq!(bills.len(), sent.len());
    for s in sent {
        assert!(bills.contains_key(&format!("KX-ERS-{}", s.id)));
    }
    assert!(
        report
            .plan
            .iter()
            .any(|p| p.action == "skip" && p.detail.contains("outside the project filter")),
        "{:?}",
        report.plan
    );
}

/// The flow's journals in Xero, by narration.
fn xero_journals(w: &World) -> HashMap<String, Vec<serde_json::Value>> {
    let mut out: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    for j in w.xero.records(&w.tenant.id, "ManualJournals") {
        if let Some(n) = j["Narration"].as_str()
            && n.starts_with("Kantata timesheet submission #")
            && j["Status"] != "DELETED"
        {
            out.entry(n.to_owned()).or_default().push(j);
        }
    }
    out
}

/// Time entries by id, read from Kantata.
async fn time_entries(w: &World, ids: &[String]) -> HashMap<String, serde_json::Value> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(100) {
        let body = kantata_get(
            w,
            &format!(
                "/api/v1/time_entries?only={}&from_archived_workspaces=true&per_page=200",
                chunk.join(",")
            ),
        )
        .await;
        for (id, t) in body["time_entries"].as_object().unwrap() {
            out.insert(id.clone(), t.clone());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_timesheets_become_balanced_journals_once() {
    let w = World::for_template("journals", "kantata-xero-journals", 30, true).await;
    let first = w.run(false).await;
    assert_clean(&first);
    let approved: Vec<_> = w
        .kantata
        .state()
        .submissions(SubmissionKind::Timesheet)
        .into_iter()
        .filter(|s| s.status == "approved" && !s.line_ids.is_empty())
        .collect();
    assert!(approved.len() >= 3, "{}", approved.len());
    let journals = xero_journals(&w);
    assert_eq!(journals.len(), approved.len());
    let all_ids: Vec<String> = approved.iter().flat_map(|s| s.line_ids.clone()).collect();
    let entries = time_entries(&w, &all_ids).await;
    let mut unrated = 0;
    for s in &approved {
        let copies = &journals[&format!("Kantata timesheet submission #{}", s.id)];
        assert_eq!(copies.len(), 1, "timesheet {} once", s.id);
        let lines = copies[0]["JournalLines"].as_array().unwrap();
        let amounts: Vec<i64> = lines.iter().map(|l| cents(&l["LineAmount"])).collect();
        assert_eq!(
            amounts.iter().sum::<i64>(),
            0,
            "balanced to the cent: {amounts:?}"
        );
        // Each debit is minutes × rate ÷ 60, half away from zero; no rate: the default.
        let mut expected: Vec<i64> = s
            .line_ids
            .iter()
            .map(|id| {
                let t = &entries[id];
                let minutes = t["time_in_minutes"].as_i64().unwrap();
                let rate = t["rate_in_cents"].as_i64().unwrap_or_else(|| {
                    unrated += 1;
                    15_000
                });
                let (n, d) = (minutes * rate, 60);
                (n + d / 2) / d
            })
            .filter(|c| *c != 0)
            .collect();
        let mut debits: Vec<i64> = amounts.iter().copied().filter(|a| *a > 0).collect();
        expected.sort_unstable();
        debits.sort_unstable();
        assert_eq!(debits, expected, "timesheet {}", s.id);
        assert_eq!(copies[0]["Status"], "POSTED");
    }
    assert!(unrated > 0, "some entries use the default rate");
    let refs = references(&w, "ManualJournal").await;
    assert_eq!(refs.len(), approved.len());
    assert!(refs.values().all(|r| r.len() == 1));

    let second = w.run(false).await;
    assert_clean(&second);
    assert_eq!((second.summary.created, second.summary.updated), (0, 0));

    // Time logged later on a posted journal's week does not change the posted journal.
    let s = &approved[0];
    let state = w.kantata.state();
    let t = &entries[&s.line_ids[0]];
    let date = t["date_performed"].as_str().unwrap();
    let _ = state.add_time_entry(&s.workspace_id, &s.user_id, date, 60, Some(10_000));
    w.clock
        .advance_by(std::time::Duration::from_secs(25 * 3600));
    let third = w.run(false).await;
    assert_clean(&third);
    assert_eq!(third.summary.created, 0);
    assert_eq!(xero_journals(&w).len(), approved.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_xero_list_becomes_the_choices_of_a_custom_field_merged_never_deleted() {
    let w = World::for_template("lists", "xero-lists-kantata", 20, false).await;
    let state = w.kantata.state();
    let field = state
        .custom_field_id("Xero region")
        .expect("the seeded field");
    let before = state.custom_field_choices(&field);
    let used: Vec<_> = before.iter().filter(|c| c.values > 0).cloned().collect();
    assert!(!used.is_empty(), "seeded values use some choices");

    let first = w.run(false).await;
    assert_clean(&first);
    assert_eq!(first.summary.updated, 1, "{:?}", first.summary);
    let active = |w: &World| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = w
            .kantata
            .state()
            .custom_field_choices(&field)
            .into_iter()
            .filter(|c| c.active)
            .map(|c| (c.label, c.id))
            .collect();
        v.sort();
        v
    };
    let labels = |v: &[(String, String)]| v.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>();
    assert_eq!(labels(&active(&w)), ["Central", "North", "South"]);
    // The choices Xero does not have are inactive, not deleted, and keep their values.
    let after = state.custom_field_choices(&field);
    for c in &used {
        let now = after.iter().find(|a| a.id == c.id).expect("never deleted");
        assert!(!now.active);
        assert_eq!(now.values, c.values);
    }

    let second = w.run(false).await;
    assert_clean(&second);
    assert_eq!(second.summary.updated, 0, "{:?}", second.summary);

    // Xero changes: an option added, one renamed, one archived.
    let cat = w
        .xero
        .records(&w.tenant.id, "TrackingCategories")
        .into_iter()
        .find(|c| c["Name"] == "Region")
        .unwrap();
    let cat_id = cat["TrackingCategoryID"].as_str().unwrap();
    let option = |name: &str| {
        cat["Options"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["Name"] == name)
            .unwrap()["TrackingOptionID"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let kept = active(&w)
        .into_iter()
        .find(|(l, _)| l == "Central")
        .unwrap();
    w.xero
        .add_tracking_option(&w.tenant.id, cat_id, "West")
        .unwrap();
    w.xero
        .rename_tracking_option(&w.tenant.id, cat_id, &option("North"), "Northern")
        .unwrap();
    w.xero
        .archive_tracking_option(&w.tenant.id, cat_id, &option("South"))
        .unwrap();
    let third = w.run(false).await;
    assert_clean(&third);
    let now = active(&w);
    assert_eq!(labels(&now), ["Central", "Northern", "West"]);
    assert!(now.contains(&kept), "an existing choice keeps its id");
    let fourth = w.run(false).await;
    assert_clean(&fourth);
    assert_eq!(fourth.summary.updated, 0);
    // No label was ever created twice among the field's choices.
    let all = state.custom_field_choices(&field);
    let mut seen = std::collections::HashSet::new();
    for c in all.iter().filter(|c| c.active) {
        assert!(seen.insert(c.label.clone()), "{} twice", c.label);
    }
}

/// The invoice template's roll-up options (one line per task for time and for expenses) once
/// summed with a filter argument MiniJinja does not take, so every invoice with time failed to
/// map when they were on. Rolled up, each invoice still carries its exact total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_up_invoice_lines_keep_exact_totals() {
    let mut w = World::new("roll-up", 40);
    for option in ["roll-up-time", "roll-up-expenses"] {
        w.flow
            .file
            .options
            .insert(option.to_owned(), toml::Value::Boolean(true));
    }
    let report = w.run(false).await;
    assert_clean(&report);
    let written = w.written();
    let eligible = w.eligible();
    assert_eq!(written.len(), eligible.len());
    let mut rolled = 0;
    for inv in &eligible {
        let x = &written[&format!("KAN-{}", inv.number)][0];
        assert_eq!(
            cents(&x["SubTotal"]),
            inv.total_in_cents,
            "KAN-{}",
            inv.number
        );
        let lines = x["LineItems"].as_array().unwrap();
        if lines.iter().any(|l| {
            l["Description"]
                .as_str()
                .is_some_and(|d| d.starts_with("Time") && d.contains(" h"))
        }) {
            rolled += 1;
        }
    }
    assert!(rolled > 0, "some invoices have rolled-up time");
}

/// The legacy expense claims: refused at the first call where the organisation has no classic
/// claims (the message names the bills template), and where it has them, one receipt per
/// approved report on one claim of its user, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expense_claims_point_to_bills_without_classic_claims_and_land_once_with_them() {
    let mut w = World::for_template("claims", "kantata-xero-expense-claims", 20, false).await;
    // Every Kantata user is the first Xero user (the Xero Users table).
    let xero_user = w.xero.records(&w.tenant.id, "Users")[0]["UserID"]
        .as_str()
        .unwrap()
        .to_owned();
    let approved = approved_reports(&w);
    let users: std::collections::BTreeMap<String, String> = approved
        .iter()
        .map(|s| (s.user_id.clone(), xero_user.clone()))
        .collect();
    w.flow.tables.insert("xero-users".to_owned(), users);
    let refused = w.run(false).await;
    let RunOutcome::Failed { reason } = &refused.outcome else {
        panic!("{refused:?}");
    };
    assert!(reason.contains("kantata-xero-bills"), "{reason}");
    assert_eq!(refused.summary.created, 0);
    let receipts_calls = w
        .xero
        .observed()
        .log
        .requests()
        .iter()
        .filter(|r| r.path.contains("/Receipts"))
        .count();
    assert_eq!(
        receipts_calls, 1,
        "the first call is refused and the run stops there"
    );

    assert!(w.xero.enable_classic_expenses(&w.tenant.id));
    let first = w.run(false).await;
    assert_clean(&first);
    let receipts = w.xero.records(&w.tenant.id, "Receipts");
    let claims = w.xero.records(&w.tenant.id, "ExpenseClaims");
    for s in &approved {
        let mine: Vec<_> = receipts
            .iter()
            .filter(|r| r["Reference"] == format!("KX-ERS-{}", s.id))
            .collect();
        assert_eq!(mine.len(), 1, "report {} has one receipt", s.id);
        assert_eq!(cents(&mine[0]["Total"]), s.total_in_cents);
        let id = mine[0]["ReceiptID"].as_str().unwrap();
        let on = claims
            .iter()
            .filter(|c| {
                c["Receipts"]
                    .as_array()
                    .is_some_and(|rs| rs.iter().any(|r| r["ReceiptID"] == id))
            })
            .count();
        assert_eq!(on, 1, "receipt of report {} on one claim", s.id);
    }
    let refs = references(&w, "ExpenseClaim").await;
    assert_eq!(refs.len(), approved.len());
    assert!(refs.values().all(|r| r.len() == 1));
    let second = w.run(false).await;
    assert_clean(&second);
    assert_eq!((second.summary.created, second.summary.updated), (0, 0));

    // A claim whose answer is lost, settled after Xero's idempotency window has passed: found
    // by the receipt on it, never made twice, and Kantata still learns it.
    let state = w.kantata.state();
    let pending = state
        .submissions(SubmissionKind::ExpenseReport)
        .into_iter()
        .find(|s| s.status == "pending" && !s.line_ids.is_empty())
        .expect("a pending report");
    let mut users = w.flow.tables["xero-users"].clone();
    users.insert(pending.user_id.clone(), xero_user.clone());
    w.flow.tables.insert("xero-users".to_owned(), users);
    state
        .resolve_submission(&pending.id, Resolve::Approve, None)
        .unwrap();
    w.xero.observed().faults.add(
        weft_harness::faults::FaultRule::on(
            "/api.xro/2.0/ExpenseClaims",
            weft_harness::faults::When::Probability(1.0),
            weft_harness::faults::Fault::LoseResponse,
        )
        .method("PUT"),
    );
    w.clock.advance_by(std::time::Duration::from_secs(120));
    let lost = w.run(false).await;
    assert_eq!(
        lost.summary.created, 1,
        "the receipt only: {:?}",
        lost.summary
    );
    w.xero.observed().faults.clear();
    w.clock.advance_by(std::time::Duration::from_secs(10 * 60));
    let settled = w.run(false).await;
    assert_clean(&settled);
    let receipt = w
        .xero
        .records(&w.tenant.id, "Receipts")
        .into_iter()
        .find(|r| r["Reference"] == format!("KX-ERS-{}", pending.id))
        .unwrap();
    let on = w
        .xero
        .records(&w.tenant.id, "ExpenseClaims")
        .into_iter()
        .filter(|c| {
            c["Receipts"]
                .as_array()
                .is_some_and(|rs| rs.iter().any(|r| r["ReceiptID"] == receipt["ReceiptID"]))
        })
        .count();
    assert_eq!(on, 1);
    assert_eq!(references(&w, "ExpenseClaim").await[&pending.id].len(), 1);
}

/// Kantata's Subscribed Events as the bills stream's change source: the first run reads every
/// report, then approvals come from the events (delivered twice and out of order, handled
/// once), and a run after the feed's nine days reads everything again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_from_the_event_feed_are_handled_once_and_an_old_cursor_reads_everything() {
    let mut w = World::for_template("events", "kantata-xero-bills", 30, true).await;
    let text = std::fs::read_to_string(&w.flow.path).unwrap();
    let with_feed = text
        .lines()
        .map(|l| match l.strip_prefix("# source = ") {
            Some(rest) if rest.contains("changes") => format!("source = {rest}"),
            _ if l.starts_with("source = ") => String::new(),
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(with_feed.contains("changes = {"));
    w.flow =
        weft_engine::flow::Flow::parse("kantata-xero-bills", &w.flow.path, &with_feed).unwrap();

    let first = w.run(false).await;
    assert_clean(&first);
    let approved = approved_reports(&w);
    assert_eq!(xero_bills(&w).len(), approved.len());
    let everything = first.summary.read;

    // Two approvals, their events delivered twice and late.
    let state = w.kantata.state();
    state.set_event_delivery(1, 120);
    let pending: Vec<_> = state
        .submissions(SubmissionKind::ExpenseReport)
        .into_iter()
        .filter(|s| s.status == "pending" && !s.line_ids.is_empty())
        .take(2)
        .collect();
    assert_eq!(pending.len(), 2);
    for p in &pending {
        state
            .resolve_submission(&p.id, Resolve::Approve, None)
            .unwrap();
    }
    w.clock.advance_by(std::time::Duration::from_secs(300));
    let second = w.run(false).await;
    assert_clean(&second);
    assert_eq!(second.summary.created, 2, "{:?}", second.summary);
    assert!(
        second.summary.read <= 4,
        "only what the events name: {:?}",
        second.summary
    );
    let third = w.run(false).await;
    assert_clean(&third);
    assert_eq!(
        (third.summary.created, third.summary.read),
        (0, 0),
        "{:?}",
        third.summary
    );
    let bills = xero_bills(&w);
    for p in &pending {
        assert_eq!(bills[&format!("KX-ERS-{}", p.id)].len(), 1);
    }

    // Ten days later the events since the last read are gone: every report is read again.
    w.clock
        .advance_by(std::time::Duration::from_secs(10 * 86_400));
    let late = w.run(false).await;
    assert_clean(&late);
    assert!(late.summary.read >= everything, "{:?}", late.summary);
    assert_eq!(late.summary.created, 0);
}

/// Journals left as drafts follow their timesheet: a time entry changed on an approved timesheet
/// changes the draft journal (still balanced), once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_journal_follows_its_timesheet() {
    let mut w = World::for_template("journal-drafts", "kantata-xero-journals", 20, true).await;
    w.flow
        .file
        .options
        .insert("status".to_owned(), toml::Value::String("DRAFT".to_owned()));
    assert_clean(&w.run(false).await);
    let sheet = w
        .kantata
        .state()
        .submissions(SubmissionKind::Timesheet)
        .into_iter()
        .find(|s| s.status == "approved" && !s.line_ids.is_empty())
        .unwrap();
    let key = format!("Kantata timesheet submission #{}", sheet.id);
    let total = |w: &World| -> i64 {
        xero_journals(w)[&key][0]["JournalLines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| cents(&l["LineAmount"]))
            .filter(|c| *c > 0)
            .sum()
    };
    let before = total(&w);
    let entry = &time_entries(&w, &sheet.line_ids[..1]).await[&sheet.line_ids[0]];
    let minutes = entry["time_in_minutes"].as_i64().unwrap();
    let rate = entry["rate_in_cents"].as_i64().unwrap_or(15_000);
    w.kantata
        .state()
        .set_time_entry_minutes(&sheet.line_ids[0], minutes + 60)
        .unwrap();
    // The timesheet's own change time does not move: the daily full read finds the change.
    w.clock
        .advance_by(std::time::Duration::from_secs(25 * 3600));
    let report = w.run(false).await;
    assert_clean(&report);
    assert_eq!(
        (report.summary.created, report.summary.updated),
        (0, 1),
        "{:?}",
        report.summary
    );
    let journals = xero_journals(&w);
    assert_eq!(journals[&key].len(), 1);
    let lines = journals[&key][0]["JournalLines"].as_array().unwrap();
    assert_eq!(
        lines.iter().map(|l| cents(&l["LineAmount"])).sum::<i64>(),
        0
    );
    let (old, new) = (
        (minutes * rate + 30) / 60,
        ((minutes + 60) * rate + 30) / 60,
    );
    assert_eq!(total(&w), before - old + new);
}

/// The same flow copies Xero's active accounts when told to (`list = "accounts"`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lists_flow_copies_accounts_when_told() {
    let mut w = World::for_template("list-accounts", "xero-lists-kantata", 10, false).await;
    w.flow.file.options.insert(
        "list".to_owned(),
        toml::Value::String("accounts".to_owned()),
    );
    assert_clean(&w.run(false).await);
    let state = w.kantata.state();
    let field = state.custom_field_id("Xero region").unwrap();
    let active: Vec<String> = state
        .custom_field_choices(&field)
        .into_iter()
        .filter(|c| c.active)
        .map(|c| c.label)
        .collect();
    let accounts: Vec<String> = w
        .xero
        .records(&w.tenant.id, "Accounts")
        .into_iter()
        .filter(|a| a["Status"] == "ACTIVE")
        .map(|a| {
            format!(
                "{} {}",
                a["Code"].as_str().unwrap(),
                a["Name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(active.len(), accounts.len());
    for a in &accounts {
        assert!(active.contains(a), "{a}");
    }
    assert_eq!(w.run(false).await.summary.updated, 0);
}

/// The flow's invoices in QuickBooks, by DocNumber.
fn qbo_invoices(w: &World) -> HashMap<String, Vec<serde_json::Value>> {
    let (sim, realm) = w.quickbooks();
    let mut out: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    for inv in sim.records(realm, weft_harness::quickbooks::Kind::Invoice) {
        if let Some(n) = inv["DocNumber"].as_str()
            && n.starts_with("KAN-")
        {
            out.entry(n.to_owned()).or_default().push(inv);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kantata_invoices_land_in_quickbooks_once_exactly_and_payments_come_back_once() {
    use weft_harness::quickbooks::Kind;
    let w = World::for_quickbooks("kq", "kantata-quickbooks", 40, 20).await;
    let (sim, realm) = w.quickbooks();
    let customers_before = sim.records(realm, Kind::Customer).len();
    let eligible = w.eligible();
    assert!(eligible.len() > 15, "{}", eligible.len());

    let first = w.run(false).await;
    assert_clean(&first);
    assert_eq!(first.summary.created as usize, eligible.len());
    let written = qbo_invoices(&w);
    assert_eq!(written.len(), eligible.len(), "nothing else was written");
    let items: HashMap<String, String> = sim
        .records(realm, Kind::Item)
        .into_iter()
        .map(|i| {
            (
                i["Id"].as_str().unwrap().to_owned(),
                i["Name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for inv in &eligible {
        let copies = &written[&format!("KAN-{}", inv.number)];
        assert_eq!(copies.len(), 1, "KAN-{} exactly once", inv.number);
        let got = &copies[0];
        assert_eq!(
            cents(&got["TotalAmt"]),
            inv.total_in_cents,
            "KAN-{} total",
            inv.number
        );
        let lines: Vec<&serde_json::Value> = got["Line"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["DetailType"] == "SalesItemLineDetail")
            .collect();
        assert_eq!(
            lines.len(),
            inv.line_counts.iter().sum::<usize>(),
            "KAN-{}",
            inv.number
        );
        for l in &lines {
            let item = l["SalesItemLineDetail"]["ItemRef"]["value"]
                .as_str()
                .unwrap();
            assert!(
                ["Hours", "Travel", "Consulting", "Materials"].contains(&items[item].as_str()),
                "{l}"
            );
            assert_eq!(
                cents(&l["Amount"]),
                cents(&l["SalesItemLineDetail"]["UnitPrice"])
            );
        }
        let customer = sim
            .record(
                realm,
                Kind::Customer,
                got["CustomerRef"]["value"].as_str().unwrap(),
            )
            .unwrap();
        assert_eq!(customer["Active"], true);
    }
    // Each client once: the customers created are the distinct clients, and none twice.
    let customers = sim.records(realm, Kind::Customer);
    assert_eq!(
        customers.len() - customers_before,
        first.summary.lookups_created as usize
    );
    let mut names: Vec<&str> = customers
        .iter()
        .filter_map(|c| c["DisplayName"].as_str())
        .collect();
    names.sort_unstable();
    let total = names.len();
    names.dedup();
    assert_eq!(names.len(), total, "no customer twice");
    // Kantata knows each QuickBooks id.
    let refs = w.kantata.external_references();
    for inv in &eligible {
        let id = written[&format!("KAN-{}", inv.number)][0]["Id"]
            .as_str()
            .unwrap()
            .to_owned();
        let mine: Vec<_> = refs
            .iter()
            .filter(|r| r.service_name == "quickbooks" && r.subject_id == inv.id)
            .map(|r| r.service_model_ref.clone())
            .collect();
        assert_eq!(mine, vec![id], "KAN-{}", inv.number);
    }

    // A second run creates nothing.
    let second = w.run(false).await;
    assert_clean(&second);
    assert_eq!(
        (
            second.summary.created,
            second.summary.updated,
            second.summary.lookups_created,
            second.summary.written_back
        ),
        (0, 0, 0, 0),
        "{:?}",
        second.plan
    );

    // Paid in full in QuickBooks → recorded in Kantata, once; a change in Kantata updates an
    // unpaid invoice (with its current SyncToken) and leaves the paid one as it is.
    let open: Vec<_> = eligible.iter().filter(|i| i.status == "new").collect();
    let (paid, changed) = (open[0], open[1]);
    let paid_q = written[&format!("KAN-{}", paid.number)][0].clone();
    sim.pay_invoice(
        realm,
        paid_q["Id"].as_str().unwrap(),
        &paid_q["Balance"].to_string(),
    )
    .unwrap();
    // Someone edits the other invoice in QuickBooks: its SyncToken moves on.
    let changed_q = written[&format!("KAN-{}", changed.number)][0].clone();
    sim.edit(
        realm,
        Kind::Invoice,
        changed_q["Id"].as_str().unwrap(),
        serde_json::json!({"CustomerMemo": {"value": "Thank you"}}),
    )
    .unwrap();
    let http = weft_engine::http::client().unwrap();
    for inv in [paid, changed] {
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
    let third = w.run(false).await;
    assert_clean(&third);
    assert_eq!(
        third.summary.stream("payments").created,
        1,
        "{:?}",
        third.plan
    );
    assert_eq!(
        third.summary.stream("invoices").updated,
        1,
        "{:?}",
        third.plan
    );
    assert_eq!(
        third.summary.created - third.summary.stream("payments").created,
        0
    );
    let after = qbo_invoices(&w);
    let updated = &after[&format!("KAN-{}", changed.number)][0];
    assert!(
        updated["PrivateNote"]
            .as_str()
            .unwrap()
            .ends_with(&format!("PO-{}", changed.number))
    );
    assert_eq!(
        updated["CustomerMemo"]["value"], "Thank you",
        "a sparse update keeps the rest"
    );
    assert_ne!(updated["SyncToken"], changed_q["SyncToken"]);
    let kept = &after[&format!("KAN-{}", paid.number)][0];
    assert_eq!(
        kept["PrivateNote"], paid_q["PrivateNote"],
        "the paid invoice is kept"
    );
    let link = w
        .state()
        .link("kantata-quickbooks", "invoices", &paid.id)
        .unwrap()
        .unwrap();
    assert!(link.note.unwrap_or_default().contains("payments applied"));
    let payments: Vec<_> = w
        .kantata
        .external_payments()
        .into_iter()
        .filter(|p| p.invoice_id.as_deref() == Some(paid.id.as_str()))
        .collect();
    assert_eq!(payments.len(), 1);
    assert!(
        payments[0]
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("QuickBooks")
    );

    // Settled: the next run writes nothing.
    let fourth = w.run(false).await;
    assert_clean(&fourth);
    assert_eq!(
        (
            fourth.summary.created,
            fourth.summary.updated,
            fourth.summary.written_back
        ),
        (0, 0, 0),
        "{:?}",
        fourth.plan
    );
    assert_eq!(
        w.kantata
            .external_payments()
            .iter()
            .filter(|p| p.invoice_id.as_deref() == Some(paid.id.as_str()))
            .count(),
        1
    );
}

/// A line kind mapped to an item the QuickBooks company does not have is refused before
/// anything is sent, naming the line field and what to do; once the table is fixed and the
/// errors retried, the next run sends those invoices once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_on_an_item_quickbooks_lacks_is_queued_before_sending_then_sent_once_fixed() {
    let mut w = World::for_quickbooks("kq-items", "kantata-quickbooks", 12, 9).await;
    w.flow
        .tables
        .get_mut("items")
        .unwrap()
        .insert("time".to_owned(), "Hourz".to_owned());
    let first = w.run(false).await;
    let failed: Vec<_> = first.plan.iter().filter(|p| p.action == "failed").collect();
    let with_time: Vec<_> = w
        .eligible()
        .into_iter()
        .filter(|i| i.line_counts[0] > 0)
        .collect();
    assert_eq!(failed.len(), with_time.len(), "{:?}", first.plan);
    for f in &failed {
        assert!(
            f.detail
                .contains("write.lists.Line.fields.SalesItemLineDetail")
                && f.detail.contains("a table with no row for the key"),
            "{}",
            f.detail
        );
    }
    let (sim, realm) = w.quickbooks();
    let invoices_before = qbo_invoices(&w).len();
    assert_eq!(
        invoices_before + with_time.len(),
        w.eligible().len(),
        "only the others were sent"
    );
    assert_eq!(
        sim.created(realm, weft_harness::quickbooks::Kind::Invoice) as usize,
        invoices_before
    );
    w.flow
        .tables
        .get_mut("items")
        .unwrap()
        .insert("time".to_owned(), "Hours".to_owned());
    // What `weft errors retry --all` does.
    assert_eq!(
        w.state()
            .mark_retry_all(Some("kantata-quickbooks"))
            .unwrap() as usize,
        with_time.len()
    );
    let second = w.run(false).await;
    assert_clean(&second);
    assert_eq!(second.summary.created as usize, with_time.len());
    let written = qbo_invoices(&w);
    assert_eq!(written.len(), w.eligible().len());
    assert!(written.values().all(|copies| copies.len() == 1));
}
