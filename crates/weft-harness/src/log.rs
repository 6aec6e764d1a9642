//! Every request a simulator received, for tests to inspect: "never more than 5 calls in flight
//! for a tenant", "no invoice created twice", "61 calls in the minute".

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
}
