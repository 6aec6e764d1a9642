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

/// Kantata's external references on submissions for `service_model`, by submission id.
async fn references(w: &World, model: &str) -> HashMap<String, Vec<String>> {
    let http = weft_engine::http::client().unwrap();
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for page in 1..100 {
        let body: serde_json::Value = http
            .get(format!(
                "{}/api/v1/external_references?subject_type=Submission&per_page=200&page={page}",
                w.kantata.api_url()
            ))
            .bearer_auth(w.kantata.personal_token())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
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
}

/// M-Bridge's "Filter by Project": only the reports of the projects the filter selects are sent,
/// and a filter naming a parameter Kantata's project list does not take stops the run with the
/// names it does take, rather than select every project.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_project_filter_selects_the_reports_sent() {
    let mut w = World::for_template("project-filter", "kantata-xero-bills", 30, false).await;
    let approved = approved_reports(&w);
    // A word of one project's title.
    let http = weft_engine::http::client().unwrap();
    let ws = &approved[0].workspace_id;
    let body: serde_json::Value = http
        .get(format!(
            "{}/api/v1/workspaces?only={ws}&include_archived=true",
            w.kantata.api_url()
        ))
        .bearer_auth(w.kantata.personal_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let title = body["workspaces"][ws]["title"].as_str().unwrap().to_owned();
    let word = title.split_whitespace().next().unwrap().to_owned();
    let selected: std::collections::HashSet<String> = {
        let body: serde_json::Value = http
            .get(format!(
                "{}/api/v1/workspaces?matching={word}&include_archived=true&per_page=200",
                w.kantata.api_url()
            ))
            .bearer_auth(w.kantata.personal_token())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
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
