//! Every request a simulator received, for tests to inspect: "never more than 5 calls in flight
//! for a tenant", "no invoice created twice", "61 calls in the minute"; and [`Allowed`], the
//! least time a provider's limits allow for the calls logged, to judge them against.

use std::collections::HashMap;
use std::sync::Mutex;

/// One request as the simulator saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// Arrival order, from 0.
    pub seq: u64,
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query string, empty when none.
    pub query: String,
    /// The tenant the request named (Xero's `xero-tenant-id`), if any.
    pub tenant: Option<String>,
    /// Simulated time of arrival, Unix ms.
    pub at_ms: u64,
    /// Calls in flight for the same tenant (or the same simulator when untenanted), this one included.
    pub in_flight: u32,
    /// Response status; 0 when the connection was dropped without one.
    pub status: u16,
    /// Whether the simulator finished handling it (false while in flight).
    pub finished: bool,
}

/// The log, shared by every connection of one simulator.
#[derive(Debug, Default)]
pub struct RequestLog {
    state: Mutex<LogState>,
}

#[derive(Debug, Default)]
struct LogState {
    requests: Vec<LoggedRequest>,
    in_flight: HashMap<Option<String>, u32>,
    max_in_flight: HashMap<Option<String>, u32>,
}

/// A request that started and has not finished; give it back to [`RequestLog::finish`].
#[derive(Debug)]
pub struct Pending {
    seq: u64,
    tenant: Option<String>,
}

impl RequestLog {
    /// Records the start of a request.
    pub fn start(
        &self,
        method: &str,
        path: &str,
        query: &str,
        tenant: Option<String>,
        at_ms: u64,
    ) -> Pending {
        let mut s = self.lock();
        let current = s.in_flight.entry(tenant.clone()).or_default();
        *current += 1;
        let in_flight = *current;
        let max = s.max_in_flight.entry(tenant.clone()).or_default();
        *max = (*max).max(in_flight);
        let seq = s.requests.len() as u64;
        s.requests.push(LoggedRequest {
            seq,
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            tenant: tenant.clone(),
            at_ms,
            in_flight,
            status: 0,
            finished: false,
        });
        Pending { seq, tenant }
    }

    /// Records the end of a request with its status (0 for a dropped connection).
    pub fn finish(&self, pending: Pending, status: u16) {
        let mut s = self.lock();
        if let Some(current) = s.in_flight.get_mut(&pending.tenant) {
            *current = current.saturating_sub(1);
        }
        if let Some(r) = usize::try_from(pending.seq)
            .ok()
            .and_then(|i| s.requests.get_mut(i))
        {
            r.status = status;
            r.finished = true;
        }
    }

    /// A copy of every request so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.lock().requests.clone()
    }

    /// The most calls ever in flight at once for `tenant` (`None`: untenanted calls).
    pub fn max_in_flight(&self, tenant: Option<&str>) -> u32 {
        self.lock()
            .max_in_flight
            .get(&tenant.map(str::to_owned))
            .copied()
            .unwrap_or(0)
    }

    /// Number of requests whose method matches and whose path starts with `prefix`.
    pub fn count(&self, method: &str, prefix: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && r.path.starts_with(prefix))
            .count()
    }

    /// The most requests for `tenant` that arrived within any window of `window_ms` (simulated).
    pub fn max_in_window(&self, tenant: Option<&str>, window_ms: u64) -> usize {
        let s = self.lock();
        let times: Vec<u64> = s
            .requests
            .iter()
            .filter(|r| r.tenant.as_deref() == tenant)
            .map(|r| r.at_ms)
            .collect();
        let mut best = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end].saturating_sub(times[start]) >= window_ms {
                start += 1;
            }
            best = best.max(end + 1 - start);
        }
        best
    }

    /// Forgets every request (the maxima too).
    pub fn clear(&self) {
        let mut s = self.lock();
        s.requests.clear();
        s.max_in_flight.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What a provider's limits allow together, to judge a log against: the least time a given
/// number of calls can take (benchmarks' ceilings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// (calls, window ms): at most `calls` arrive in any window.
    pub windows: Vec<(usize, u64)>,
    /// Calls in flight at once.
    pub in_flight: usize,
    /// How long each call takes, ms.
    pub latency_ms: u64,
    /// Whether a call stays in a window until its answer (`true`: what a client that never
    /// risks a 429 must assume, since it cannot know when the provider counted the call; `false`:
    /// counting from arrival, as the simulators do).
    pub until_answered: bool,
}

impl Allowed {
    /// The earliest arrival of the last of `n` calls made from `start` on, after calls that
    /// arrived at `prior` (sorted, none after `start`): each call as early as every rule allows.
    pub fn least_last(&self, prior: &[u64], start: u64, n: usize) -> u64 {
        let held = if self.until_answered {
            self.latency_ms
        } else {
            0
        };
        let mut at: Vec<u64> = prior.to_vec();
        for _ in 0..n {
            let i = at.len();
            let mut t = start;
            if i >= self.in_flight {
                t = t.max(at[i - self.in_flight] + self.latency_ms);
            }
            for &(calls, window) in &self.windows {
                if i >= calls {
                    t = t.max(at[i - calls] + held + window);
                }
            }
            at.push(t);
        }
        at.last().copied().unwrap_or(start)
    }

    /// The fraction of the ceiling (%) for calls that arrived at `times` (sorted) after `prior`:
    /// the least time the rules allow from the first to the last over the time they took.
    pub fn share(&self, prior: &[u64], times: &[u64]) -> f64 {
        let (Some(&first), Some(&last)) = (times.first(), times.last()) else {
            return 0.0;
        };
        let least = self.least_last(prior, first, times.len()) - first;
        100.0 * least as f64 / last.saturating_sub(first).max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_in_flight_and_windows_per_tenant() {
        let log = RequestLog::default();
        let a = log.start("GET", "/x", "", Some("t1".into()), 0);
        let b = log.start("GET", "/x", "", Some("t1".into()), 10);
        let c = log.start("GET", "/x", "", Some("t2".into()), 20);
        log.finish(a, 200);
        let d = log.start("GET", "/x", "", Some("t1".into()), 60_000);
        log.finish(b, 200);
        log.finish(c, 429);
        log.finish(d, 200);
        assert_eq!(log.max_in_flight(Some("t1")), 2);
        assert_eq!(log.max_in_flight(Some("t2")), 1);
        assert_eq!(log.max_in_window(Some("t1"), 60_000), 2);
        assert_eq!(log.count("get", "/x"), 4);
        assert!(log.requests().iter().all(|r| r.finished));
    }

    fn xero(until_answered: bool) -> Allowed {
        Allowed {
            windows: vec![(60, 60_000)],
            in_flight: 5,
            latency_ms: 1_000,
            until_answered,
        }
    }

    #[test]
    fn least_time_respects_window_in_flight_and_latency_together() {
        // Five at a time, a second each: the first 60 by 11 s, then the minute binds.
        assert_eq!(xero(false).least_last(&[], 0, 60), 11_000);
        assert_eq!(xero(false).least_last(&[], 0, 114), 70_000);
        // Counted until the answer, every window starts one latency later.
        assert_eq!(xero(true).least_last(&[], 0, 114), 71_000);
        // Calls made before take their share of the window.
        let prior: Vec<u64> = (0..60).map(|i| i * 100).collect();
        assert_eq!(xero(false).least_last(&prior, 6_000, 1), 60_000);
        // One call a second when five a second were allowed: 10 s least over 49 s taken.
        let times: Vec<u64> = (0..50).map(|i| i * 1_000).collect();
        assert!((xero(false).share(&[], &times) - 100.0 * 9.0 / 49.0).abs() < 1e-9);
    }
}
