//! 200 seeded runs of the Kantata → Xero sync under faults: 5xx, maintenance, resets, cut and
//! malformed answers, lost responses (the write happened, the answer never came), 429s, access
//! tokens expiring between runs, a lost refresh answer, and the run dropped at a random request
//! as if the process were killed. After the faults stop, a clean run finishes the job. Then:
//! every eligible invoice is in Xero exactly once, and the invoice paid in Xero has exactly one
//! payment in Kantata. Nothing is lost and nothing is duplicated. The same on PostgreSQL, with
//! fewer seeds.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::faults::{Tally, add_faults, clear, settle};
use common::world::World;
use weft_harness::faults::{Fault, FaultRule, When};

const SEEDS: u64 = 200;

/// Seeds of the PostgreSQL run (each makes a database of its own).
const PG_SEEDS: u64 = 50;

/// One seed; `None` when it should run on PostgreSQL and there is none here.
async fn one(seed: u64, tally: &mut Tally, postgres: bool) -> Option<()> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let w = if postgres {
        World::with_oauth(&format!("faults-pg-{seed}"), 14)
            .await
            .on_postgres()?
    } else {
        World::with_oauth(&format!("faults-{seed}"), 14).await
    };
    let eligible = w.eligible();

    add_faults(
        &w.xero.observed().faults,
        &["/api.xro/2.0/Invoices", "/api.xro/2.0/Contacts"],
        &mut rng,
    );
    add_faults(
        &w.kantata.observed().faults,
        &[
            "/api/v1/invoices",
            "/api/v1/workspaces",
            "/api/v1/external_payments",
        ],
        &mut rng,
    );
    if rng.bool() {
        w.xero
            .identity_observed()
            .faults
            .add(FaultRule::on("/connect/token", When::Nth(1), Fault::LoseResponse).method("POST"));
        w.clock.advance_by(Duration::from_secs(31 * 60));
    }
    settle(&w, &mut rng, true, tally).await.unwrap();
    clear(&w);
    settle(&w, &mut rng, false, tally)
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));

    // Pay one invoice (still unpaid in Kantata) in Xero, then sync under faults again.
    let unpaid = eligible.iter().find(|i| i.status == "new");
    let written = w.written();
    if let Some(inv) = unpaid
        && let Some(x) = written.get(&format!("KAN-{}", inv.number))
    {
        w.xero
            .pay_invoice(
                &w.tenant.id,
                x[0]["InvoiceID"].as_str().unwrap(),
                &x[0]["AmountDue"].to_string(),
            )
            .unwrap();
        w.clock.advance_by(Duration::from_secs(2));
        add_faults(
            &w.kantata.observed().faults,
            &["/api/v1/external_payments", "/api/v1/invoices"],
            &mut rng,
        );
        add_faults(
            &w.xero.observed().faults,
            &["/api.xro/2.0/Invoices"],
            &mut rng,
        );
        settle(&w, &mut rng, true, tally).await.unwrap();
        clear(&w);
        settle(&w, &mut rng, false, tally)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let payments = w
            .kantata
            .external_payments()
            .into_iter()
            .filter(|p| p.invoice_id.as_deref() == Some(inv.id.as_str()))
            .count();
        assert_eq!(
            payments, 1,
            "seed {seed}: the payment is recorded exactly once"
        );
    }

    tally.fired += w.xero.observed().faults.fired()
        + w.kantata.observed().faults.fired()
        + w.xero.identity_observed().faults.fired();
    let written = w.written();
    let mut numbers = HashSet::new();
    for inv in &eligible {
        let n = format!("KAN-{}", inv.number);
        let copies = written.get(&n).map_or(0, Vec::len);
        assert_eq!(copies, 1, "seed {seed}: {n} is in Xero exactly once");
        numbers.insert(n);
    }
    assert_eq!(
        written.len(),
        numbers.len(),
        "seed {seed}: nothing else was written"
    );
    let open = w.state().errors(None, false).unwrap();
    assert!(
        open.iter()
            .all(|e| e.status != "open" && e.status != "retry"),
        "seed {seed}: transient faults leave nothing in the queue: {open:?}"
    );
    Some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_seeded_fault_runs_lose_nothing_and_duplicate_nothing() {
    seeded(SEEDS, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_fault_runs_on_postgres_lose_nothing_and_duplicate_nothing() {
    seeded(PG_SEEDS, true).await;
}

async fn seeded(seeds: u64, postgres: bool) {
    let mut tally = Tally::default();
    for seed in 0..seeds {
        if one(seed, &mut tally, postgres).await.is_none() {
            return;
        }
    }
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "{seeds} seeds: {} faults fired, {} runs dropped mid-way, {} runs failed",
            tally.fired, tally.killed, tally.failed_runs
        );
    }
    // The faults did happen: on average several per seed, runs killed and runs failed.
    assert!(tally.fired > 2 * seeds, "faults fired: {}", tally.fired);
    assert!(tally.killed > seeds / 2, "runs killed: {}", tally.killed);
    assert!(
        tally.failed_runs > seeds / 4,
        "runs failed: {}",
        tally.failed_runs
    );
}
