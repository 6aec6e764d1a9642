//! Fifty seeded fault runs of each of M-Bridge's other Xero scenarios (bills, legacy expense
//! claims, timesheet journals, a Xero list into a Kantata custom field): 5xx, maintenance,
//! resets, cut and malformed answers, lost responses, 429s, expiring tokens, and runs dropped at
//! a random request. After the faults stop, a clean run finishes the job. Then every record the
//! scenario sends is at its destination exactly once, and nothing else was written.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::faults::{Tally, add_faults, clear, settle_within};
use common::world::{World, cents};
use weft_harness::kantata::SubmissionKind;

const SEEDS: u64 = 50;

/// Faults on these paths, then a clean finish.
async fn fault_and_finish(
    w: &World,
    seed: u64,
    (xero, kantata): (&[&str], &[&str]),
    requests: usize,
    tally: &mut Tally,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    add_faults(&w.xero.observed().faults, xero, &mut rng);
    add_faults(&w.kantata.observed().faults, kantata, &mut rng);
    if rng.bool() {
        w.clock.advance_by(Duration::from_secs(31 * 60));
    }
    settle_within(w, &mut rng, true, requests, tally)
        .await
        .unwrap();
    tally.fired += w.xero.observed().faults.fired() + w.kantata.observed().faults.fired();
    clear(w);
    settle_within(w, &mut rng, false, requests, tally)
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
}

fn approved(w: &World, kind: SubmissionKind) -> Vec<weft_harness::kantata::SubmissionInfo> {
    w.kantata
        .state()
        .submissions(kind)
        .into_iter()
        .filter(|s| s.status == "approved" && !s.line_ids.is_empty())
        .collect()
}

/// The records of Xero collection `plural` whose `field` starts with `prefix`, by that field,
/// deleted and voided ones left out.
fn by_key(
    w: &World,
    plural: &str,
    field: &str,
    prefix: &str,
) -> HashMap<String, Vec<serde_json::Value>> {
    let mut out: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    for r in w.xero.records(&w.tenant.id, plural) {
        if let Some(k) = r[field].as_str()
            && k.starts_with(prefix)
            && r["Status"] != "DELETED"
            && r["Status"] != "VOIDED"
        {
            out.entry(k.to_owned()).or_default().push(r);
        }
    }
    out
}

fn report(name: &str, tally: &Tally) {
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "{name}: {SEEDS} seeds, {} faults fired, {} runs dropped mid-way, {} runs failed",
            tally.fired, tally.killed, tally.failed_runs
        );
    }
    assert!(tally.fired > SEEDS, "{name}: faults fired: {}", tally.fired);
    assert!(
        tally.killed > SEEDS / 2,
        "{name}: runs killed: {}",
        tally.killed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bills_under_fifty_seeded_faults_land_once() {
    let mut tally = Tally::default();
    for seed in 0..SEEDS {
        let w = World::for_template(
            &format!("bill-faults-{seed}"),
            "kantata-xero-bills",
            12,
            true,
        )
        .await;
        fault_and_finish(
            &w,
            seed,
            (
                &["/api.xro/2.0/Invoices", "/api.xro/2.0/Contacts"],
                &[
                    "/api/v1/expense_report_submissions",
                    "/api/v1/external_references",
                ],
            ),
            20,
            &mut tally,
        )
        .await;
        let reports = approved(&w, SubmissionKind::ExpenseReport);
        let bills = by_key(&w, "Invoices", "InvoiceNumber", "KX-ERS-");
        assert_eq!(
            bills.len(),
            reports.len(),
            "seed {seed}: nothing else was written"
        );
        for s in &reports {
            let copies = bills.get(&format!("KX-ERS-{}", s.id)).map_or(0, Vec::len);
            assert_eq!(copies, 1, "seed {seed}: report {} once", s.id);
            assert_eq!(
                cents(&bills[&format!("KX-ERS-{}", s.id)][0]["Total"]),
                s.total_in_cents
            );
        }
    }
    report("bills", &tally);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journals_under_fifty_seeded_faults_land_once_and_balanced() {
    let mut tally = Tally::default();
    for seed in 0..SEEDS {
        let w = World::for_template(
            &format!("journal-faults-{seed}"),
            "kantata-xero-journals",
            12,
            true,
        )
        .await;
        fault_and_finish(
            &w,
            seed,
            (
                &["/api.xro/2.0/ManualJournals"],
                &[
                    "/api/v1/timesheet_submissions",
                    "/api/v1/external_references",
                ],
            ),
            12,
            &mut tally,
        )
        .await;
        let sheets = approved(&w, SubmissionKind::Timesheet);
        let journals = by_key(
            &w,
            "ManualJournals",
            "Narration",
            "Kantata timesheet submission #",
        );
        assert_eq!(
            journals.len(),
            sheets.len(),
            "seed {seed}: nothing else was written"
        );
        for s in &sheets {
            let copies = &journals[&format!("Kantata timesheet submission #{}", s.id)];
            assert_eq!(copies.len(), 1, "seed {seed}: timesheet {} once", s.id);
            let sum: i64 = copies[0]["JournalLines"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| cents(&l["LineAmount"]))
                .sum();
            assert_eq!(sum, 0, "seed {seed}: balanced");
        }
    }
    report("journals", &tally);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_under_fifty_seeded_faults_land_once() {
    let mut tally = Tally::default();
    for seed in 0..SEEDS {
        let mut w = World::for_template(
            &format!("claim-faults-{seed}"),
            "kantata-xero-expense-claims",
            12,
            true,
        )
        .await;
        assert!(w.xero.enable_classic_expenses(&w.tenant.id));
        let user = w.xero.records(&w.tenant.id, "Users")[0]["UserID"]
            .as_str()
            .unwrap()
            .to_owned();
        let reports = approved(&w, SubmissionKind::ExpenseReport);
        let table: BTreeMap<String, String> = reports
            .iter()
            .map(|s| (s.user_id.clone(), user.clone()))
            .collect();
        w.flow.tables.insert("xero-users".to_owned(), table);
        fault_and_finish(
            &w,
            seed,
            (
                &[
                    "/api.xro/2.0/Receipts",
                    "/api.xro/2.0/ExpenseClaims",
                    "/api.xro/2.0/Contacts",
                ],
                &[
                    "/api/v1/expense_report_submissions",
                    "/api/v1/external_references",
                ],
            ),
            20,
            &mut tally,
        )
        .await;
        let receipts = by_key(&w, "Receipts", "Reference", "KX-ERS-");
        assert_eq!(
            receipts.len(),
            reports.len(),
            "seed {seed}: nothing else was written"
        );
        let claims = w.xero.records(&w.tenant.id, "ExpenseClaims");
        for s in &reports {
            let mine = &receipts[&format!("KX-ERS-{}", s.id)];
            assert_eq!(
                mine.len(),
                1,
                "seed {seed}: report {} has one receipt",
                s.id
            );
            let id = &mine[0]["ReceiptID"];
            let on = claims
                .iter()
                .filter(|c| c["Status"] != "DELETED" && c["Status"] != "VOIDED")
                .filter(|c| {
                    c["Receipts"]
                        .as_array()
                        .is_some_and(|rs| rs.iter().any(|r| &r["ReceiptID"] == id))
                })
                .count();
            assert_eq!(
                on, 1,
                "seed {seed}: receipt of report {} on one claim",
                s.id
            );
        }
    }
    report("claims", &tally);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_field_choices_under_fifty_seeded_faults_follow_the_list_once() {
    let mut tally = Tally::default();
    for seed in 0..SEEDS {
        let w = World::for_template(
            &format!("list-faults-{seed}"),
            "xero-lists-kantata",
            12,
            true,
        )
        .await;
        let cat = w
            .xero
            .records(&w.tenant.id, "TrackingCategories")
            .into_iter()
            .find(|c| c["Name"] == "Region")
            .unwrap();
        let cat_id = cat["TrackingCategoryID"].as_str().unwrap().to_owned();
        w.xero
            .add_tracking_option(&w.tenant.id, &cat_id, &format!("Option {seed}"))
            .unwrap();
        fault_and_finish(
            &w,
            seed,
            (
                &["/api.xro/2.0/TrackingCategories"],
                &["/api/v1/custom_fields"],
            ),
            5,
            &mut tally,
        )
        .await;
        let state = w.kantata.state();
        let field = state.custom_field_id("Xero region").unwrap();
        let mut active: Vec<String> = state
            .custom_field_choices(&field)
            .into_iter()
            .filter(|c| c.active)
            .map(|c| c.label)
            .collect();
        active.sort();
        let mut wanted = vec![
            "Central".to_owned(),
            "North".to_owned(),
            format!("Option {seed}"),
            "South".to_owned(),
        ];
        wanted.sort();
        assert_eq!(
            active, wanted,
            "seed {seed}: each option once, nothing else active"
        );
    }
    report("lists", &tally);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickbooks_invoices_under_fifty_seeded_faults_land_once_and_paid_ones_come_back_once() {
    use weft_harness::quickbooks::Kind;
    let mut tally = Tally::default();
    let mut paid_back = 0;
    for seed in 0..SEEDS {
        let w =
            World::for_quickbooks(&format!("qbo-faults-{seed}"), "kantata-quickbooks", 12, 9).await;
        let (sim, realm) = w.quickbooks();
        let mut rng = fastrand::Rng::with_seed(seed);
        // A first clean run half the time, then payments in QuickBooks for the faulty runs to
        // bring back; otherwise invoices and payments both under faults.
        let eligible = w.eligible();
        if rng.bool() {
            common::faults::settle_within(&w, &mut rng, false, 20, &mut tally)
                .await
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            for inv in eligible.iter().filter(|i| i.status == "new").take(3) {
                let found = sim
                    .records(realm, Kind::Invoice)
                    .into_iter()
                    .find(|q| q["DocNumber"] == format!("KAN-{}", inv.number))
                    .unwrap();
                sim.pay_invoice(
                    realm,
                    found["Id"].as_str().unwrap(),
                    &found["Balance"].to_string(),
                )
                .unwrap();
            }
            w.clock.advance_by(Duration::from_secs(5));
        }
        add_faults(&sim.observed().faults, &["/v3/company"], &mut rng);
        add_faults(
            &sim.oauth_observed().faults,
            &["/oauth2/v1/tokens"],
            &mut rng,
        );
        add_faults(
            &w.kantata.observed().faults,
            &[
                "/api/v1/invoices",
                "/api/v1/external_references",
                "/api/v1/external_payments",
            ],
            &mut rng,
        );
        if rng.bool() {
            // Access tokens expire; the runs refresh them.
            w.clock.advance_by(Duration::from_secs(61 * 60));
        }
        settle_within(&w, &mut rng, true, 20, &mut tally)
            .await
            .unwrap();
        tally.fired += sim.observed().faults.fired()
            + sim.oauth_observed().faults.fired()
            + w.kantata.observed().faults.fired();
        clear(&w);
        settle_within(&w, &mut rng, false, 20, &mut tally)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));

        // Every eligible invoice once in QuickBooks with its exact total; nothing else written.
        let mut by_number: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
        for q in sim.records(realm, Kind::Invoice) {
            if let Some(n) = q["DocNumber"].as_str()
                && n.starts_with("KAN-")
            {
                by_number.entry(n.to_owned()).or_default().push(q);
            }
        }
        assert_eq!(
            by_number.len(),
            eligible.len(),
            "seed {seed}: nothing else was written"
        );
        for inv in &eligible {
            let copies = &by_number[&format!("KAN-{}", inv.number)];
            assert_eq!(copies.len(), 1, "seed {seed}: KAN-{} once", inv.number);
            assert_eq!(
                cents(&copies[0]["TotalAmt"]),
                inv.total_in_cents,
                "seed {seed}"
            );
        }
        // Each client is one customer.
        let mut names: Vec<String> = sim
            .records(realm, Kind::Customer)
            .iter()
            .filter_map(|c| c["DisplayName"].as_str().map(str::to_lowercase))
            .collect();
        let total = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), total, "seed {seed}: no customer twice");
        // Every open invoice paid in QuickBooks is paid once in Kantata, and only those (the
        // Kantata account's own payments on invoices paid there are left as they are).
        let payments = w.kantata.external_payments();
        for inv in eligible.iter().filter(|i| i.status == "new") {
            let paid_q =
                by_number[&format!("KAN-{}", inv.number)][0]["Balance"] == serde_json::json!(0);
            let n = payments
                .iter()
                .filter(|p| p.invoice_id.as_deref() == Some(inv.id.as_str()))
                .count();
            assert_eq!(
                n,
                usize::from(paid_q),
                "seed {seed}: payments of invoice {}",
                inv.id
            );
            paid_back += n;
        }
        // Kantata holds each QuickBooks id once.
        let refs = w.kantata.external_references();
        for inv in &eligible {
            let n = refs
                .iter()
                .filter(|r| r.service_name == "quickbooks" && r.subject_id == inv.id)
                .count();
            assert_eq!(n, 1, "seed {seed}: reference of invoice {}", inv.id);
        }
    }
    assert!(paid_back > 0, "payments came back in some seeds");
    report("quickbooks", &tally);
}
