//! Schedules of flows: `every 15m` (any duration `weft_core::duration` reads, at least a
//! minute) or a cron expression (five or six fields, read by the `croner` crate, in UTC).
//!
//! Time is milliseconds since the Unix epoch from the engine's `Clock`, so a test drives the
//! schedule with the harness's simulated clock. [`next_run`] is the one rule for when a flow is
//! due next, given when its last run started (the pages show it): an interval counts from the
//! last start, a cron expression takes its first time strictly after it, and a flow that never
//! ran is due at once. Runs missed while the server was down therefore collapse into one: at
//! start the next time is in the past, the flow runs once, and the time after is computed from
//! that run. [`Scheduler`] keeps one entry per flow, adds a small jitter fixed per flow name (so
//! flows on the same schedule do not all start in the same second) and never hands out a flow
//! whose run is still under way; the flow lock of the engine stays the guard across processes.

use std::collections::BTreeMap;

pub use weft_engine::schedule::{
    MAX_JITTER_MS, MIN_INTERVAL_MS, Schedule, ScheduleError, due_at, jitter_ms, next_run,
};

#[derive(Debug)]
struct Entry {
    schedule: Schedule,
    last_ms: Option<u64>,
    running: bool,
}

/// The schedules of a workspace's flows and when each last started.
#[derive(Debug, Default)]
pub struct Scheduler {
    flows: BTreeMap<String, Entry>,
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces `flow`'s schedule; `last_ms` is when its last run started (from the
    /// state database's run history), `None` if it never ran.
    pub fn insert(&mut self, flow: &str, schedule: Schedule, last_ms: Option<u64>) {
        self.flows.insert(
            flow.to_owned(),
            Entry {
                schedule,
                last_ms,
                running: false,
            },
        );
    }

    /// When `flow` is due next, jitter included (`None`: no such flow or no later time).
    pub fn next_due(&self, flow: &str, now_ms: u64) -> Option<u64> {
        let e = self.flows.get(flow)?;
        due_at(flow, &e.schedule, e.last_ms, now_ms)
    }

    /// The flows due at `now_ms` and not running; each is marked running and started now.
    pub fn take_due(&mut self, now_ms: u64) -> Vec<String> {
        let due: Vec<String> = self
            .flows
            .iter()
            .filter(|(_, e)| !e.running)
            .filter(|(name, _)| self.next_due(name, now_ms).is_some_and(|t| t <= now_ms))
            .map(|(name, _)| name.clone())
            .collect();
        for name in &due {
            if let Some(e) = self.flows.get_mut(name) {
                e.running = true;
                e.last_ms = Some(now_ms);
            }
        }
        due
    }

    /// Forgets `flow` (its file or its schedule is gone).
    pub fn remove(&mut self, flow: &str) {
        self.flows.remove(flow);
    }

    /// A run of `flow` started at `started_ms` (here or elsewhere): the next is counted from
    /// it when it is later than what the scheduler knew.
    pub fn saw_start(&mut self, flow: &str, started_ms: u64) {
        if let Some(e) = self.flows.get_mut(flow)
            && e.last_ms.is_none_or(|l| l < started_ms)
        {
            e.last_ms = Some(started_ms);
        }
    }

    /// `flow`'s run ended (whatever its outcome).
    pub fn finished(&mut self, flow: &str) {
        if let Some(e) = self.flows.get_mut(flow) {
            e.running = false;
        }
    }

    /// The earliest due time of a flow not running, to sleep until.
    pub fn earliest(&self, now_ms: u64) -> Option<u64> {
        self.flows
            .iter()
            .filter(|(_, e)| !e.running)
            .filter_map(|(name, _)| self.next_due(name, now_ms))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use weft_harness::clock::SimClock;

    const MIN: u64 = 60_000;
    // 2026-01-01T00:00:00Z
    const START: u64 = 1_767_225_600_000;

    #[test]
    fn parses_and_refuses() {
        assert!(matches!("every 15m".parse(), Ok(Schedule::Every(900_000))));
        assert!(matches!(
            "every 1h30m".parse(),
            Ok(Schedule::Every(5_400_000))
        ));
        assert!(matches!("*/15 * * * *".parse(), Ok(Schedule::Cron(_))));
        assert!(matches!("0 0 6 * * MON-FRI".parse(), Ok(Schedule::Cron(_))));
        for bad in [
            "every",
            "every soon",
            "every 10s",
            "",
            "61 * * * *",
            "\u{0}",
            "every -1m",
        ] {
            let e = bad.parse::<Schedule>().unwrap_err();
            assert!(!e.to_string().is_empty(), "{bad}");
        }
    }

    #[test]
    fn next_run_by_interval_and_cron() {
        let every: Schedule = "every 15m".parse().unwrap();
        assert_eq!(next_run(&every, None, START), Some(START));
        assert_eq!(next_run(&every, Some(START), START), Some(START + 15 * MIN));
        let cron: Schedule = "0 * * * *".parse().unwrap();
        // Last run at 00:07 → next at 01:00; last at exactly 01:00 → 02:00.
        assert_eq!(
            next_run(&cron, Some(START + 7 * MIN), START),
            Some(START + 60 * MIN)
        );
        assert_eq!(
            next_run(&cron, Some(START + 60 * MIN), START),
            Some(START + 120 * MIN)
        );
    }

    #[test]
    fn jitter_is_small_and_stable() {
        let every: Schedule = "every 1m".parse().unwrap();
        assert!(jitter_ms("a", &every) < 6_000);
        assert_eq!(jitter_ms("a", &every), jitter_ms("a", &every));
        let cron: Schedule = "* * * * *".parse().unwrap();
        assert!(jitter_ms("kantata-xero", &cron) < MAX_JITTER_MS);
    }

    #[test]
    fn fires_on_a_simulated_clock_one_run_at_a_time() {
        let clock = SimClock::manual(START);
        let mut s = Scheduler::new();
        s.insert("sync", "every 15m".parse().unwrap(), None);
        // Never ran: due at once.
        assert_eq!(s.take_due(clock.now_ms()), vec!["sync".to_owned()]);
        // Still running: not handed out again, however late it gets.
        clock.advance(Duration::from_secs(3600));
        assert!(s.take_due(clock.now_ms()).is_empty());
        s.finished("sync");
        // Started now: due again 15 minutes later, jitter included.
        let started = clock.now_ms();
        assert_eq!(s.take_due(started), vec!["sync".to_owned()]);
        s.finished("sync");
        let due = s.next_due("sync", started).unwrap();
        assert!(due >= started + 15 * MIN && due < started + 15 * MIN + MAX_JITTER_MS);
        let mut fired = Vec::new();
        for _ in 0..40 {
            clock.advance(Duration::from_secs(30));
            for f in s.take_due(clock.now_ms()) {
                fired.push(clock.now_ms());
                s.finished(&f);
            }
        }
        // 20 minutes of 30-second steps: exactly one run, at its due time or the step after.
        assert_eq!(fired.len(), 1);
        assert!(fired[0] >= due && fired[0] < due + 30_000);
    }

    #[test]
    fn missed_runs_are_caught_up_once() {
        let clock = SimClock::manual(START);
        let mut s = Scheduler::new();
        // Last ran at 00:07; the server was down until 05:30, missing five hourly runs.
        s.insert("sync", "0 * * * *".parse().unwrap(), Some(START + 7 * MIN));
        clock.advance(Duration::from_secs(5 * 3600 + 30 * 60));
        assert_eq!(s.take_due(clock.now_ms()), vec!["sync".to_owned()]);
        s.finished("sync");
        assert!(s.take_due(clock.now_ms()).is_empty());
        // The next is the next hour, 06:00 (plus jitter), not another catch-up.
        let next = s.earliest(clock.now_ms()).unwrap();
        assert!((START + 360 * MIN..START + 360 * MIN + MAX_JITTER_MS).contains(&next));
    }
}
