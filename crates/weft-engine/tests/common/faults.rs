//! Seeded faults for the sync tests: which faults, on which paths, and running a flow until a
//! run completes under them (or, without faults, must complete).

use std::time::Duration;

use weft_engine::state::RunOutcome;
use weft_harness::faults::{Fault, FaultPlan, FaultRule, When};

use super::world::World;

pub(crate) fn fault(rng: &mut fastrand::Rng) -> Fault {
    match rng.u8(0..7) {
        0 => Fault::Status {
            status: 500,
            body: "{\"Message\":\"An error occurred\"}".to_owned(),
        },
        1 => Fault::Maintenance,
        2 => Fault::Reset,
        3 => Fault::Truncate,
        4 => Fault::Malformed,
        5 => Fault::LoseResponse,
        _ => Fault::RateLimited {
            retry_after_secs: 2,
            problem: None,
        },
    }
}

pub(crate) fn add_faults(plan: &FaultPlan, prefixes: &[&str], rng: &mut fastrand::Rng) {
    for _ in 0..rng.usize(1..=3) {
        let prefix = prefixes[rng.usize(..prefixes.len())];
        let p = 0.05 + rng.f64() * 0.25;
        plan.add(FaultRule::on(prefix, When::Probability(p), fault(rng)));
    }
}

pub(crate) fn clear(w: &World) {
    w.xero.observed().faults.clear();
    w.kantata.observed().faults.clear();
    w.xero.identity_observed().faults.clear();
    if let Some((q, _)) = &w.qbo {
        q.observed().faults.clear();
        q.oauth_observed().faults.clear();
    }
}

/// What the faults did, over all seeds.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) fired: u64,
    pub(crate) killed: u64,
    pub(crate) failed_runs: u64,
}

/// Runs until a run completes (bounded); faults may make some fail.
/// Runs until one completes without a failure (at most 8 runs). With no faults left
/// (`faulty` false) it must get there: otherwise the last run's outcome is the error.
pub(crate) async fn settle(
    w: &World,
    rng: &mut fastrand::Rng,
    faulty: bool,
    tally: &mut Tally,
) -> Result<(), String> {
    settle_within(w, rng, faulty, 30, tally).await
}

/// [`settle`], a faulty run being killed at one of its first `requests` requests.
pub(crate) async fn settle_within(
    w: &World,
    rng: &mut fastrand::Rng,
    faulty: bool,
    requests: usize,
    tally: &mut Tally,
) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 0..8 {
        // Sometimes killed at a random request.
        let kill = (faulty && (attempt == 0 || rng.bool())).then(|| rng.usize(1..requests.max(2)));
        let killed = match w.run_until(false, kill).await {
            Some(report)
                if report.outcome == RunOutcome::Completed && report.summary.failed == 0 =>
            {
                return Ok(());
            }
            Some(report) => {
                tally.failed_runs += 1;
                last = format!(
                    "run {attempt}: {:?}, {} failed, errors queued: {:?}",
                    report.outcome,
                    report.summary.failed,
                    report
                        .plan
                        .iter()
                        .filter(|p| p.action == "failed")
                        .map(|p| format!("{} {}", p.source_id, p.detail))
                        .collect::<Vec<_>>()
                );
                false
            }
            None => {
                tally.killed += 1;
                last = format!("run {attempt}: killed");
                true
            }
        };
        // A run killed during a refresh may have lost the rotated refresh token Xero sent;
        // Xero's grace period lets the next run use the old one for 30 minutes, so time moves
        // on only after a run that was not killed (a client run more than 30 minutes after
        // such a kill has to be authorized again: that is Xero's rule, not Weft's).
        if attempt % 3 == 2 && !killed {
            // Access tokens expire between runs; the next run refreshes (rotating).
            w.clock.advance_by(Duration::from_secs(31 * 60));
        }
    }
    if faulty {
        Ok(())
    } else {
        Err(format!(
            "no clean run in 8 without faults; the last: {last}"
        ))
    }
}
