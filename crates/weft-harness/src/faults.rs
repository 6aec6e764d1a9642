//! Fault injection, seeded and scriptable per route.
//!
//! A [`FaultPlan`] holds rules; each names the requests it applies to (method and path prefix),
//! when it fires (the n-th matching request, every n-th, the first n, or with a seeded
//! probability) and what happens. The plan is applied by [`crate::server`] around every
//! simulator, so both simulators get the same faults the same way.

use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode};

/// What goes wrong.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer with this status and body instead of handling the request (500, 502…).
    Status {
        /// HTTP status.
        status: u16,
        /// Response body.
        body: String,
    },
    /// 503 with a maintenance message, without handling the request.
    Maintenance,
    /// Wait this long (real time) before handling the request normally.
    Latency(Duration),
    /// Never answer (the connection is held for this long, real time, then dropped), so the
    /// client's own timeout fires. The request is not handled.
    Hang(Duration),
    /// Drop the connection without an answer; the request is not handled.
    Reset,
    /// Handle the request, then send only the first half of the body and drop the connection.
    Truncate,
    /// Handle the request, then answer 200 with a body that is not JSON.
    Malformed,
    /// Handle the request (its effects happen), then drop the connection without an answer:
    /// the duplicate trap for writes.
    LoseResponse,
    /// Handle the request (its effects happen), then hold the connection without an answer for
    /// this long (real time) and drop it: the client's timeout fires, or a test ends the client
    /// while it waits (a process killed between the provider's handling and its own record).
    HoldResponse(Duration),
    /// 429 with `Retry-After` and, when given, `X-Rate-Limit-Problem`, without handling the request.
    RateLimited {
        /// Seconds in `Retry-After`.
        retry_after_secs: u64,
        /// Value of `X-Rate-Limit-Problem` (Xero names `minute` or `day`); `None` sends no such header.
        problem: Option<String>,
    },
}

/// When a rule fires, counted over the requests it matches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum When {
    /// Only the n-th matching request (1-based).
    Nth(u64),
    /// Every n-th matching request.
    Every(u64),
    /// The first n matching requests.
    First(u64),
    /// Each matching request with this probability, from the plan's seeded generator.
    Probability(f64),
    /// Every matching request.
    Always,
}

/// One rule.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    /// HTTP method to match; `None` matches any.
    pub method: Option<String>,
    /// Path prefix to match, e.g. `/api.xro/2.0/Invoices`; empty matches every path.
    pub path_prefix: String,
    /// When it fires.
    pub when: When,
    /// What happens.
    pub fault: Fault,
}

impl FaultRule {
    /// A rule for every method on paths starting with `path_prefix`.
    pub fn on(path_prefix: impl Into<String>, when: When, fault: Fault) -> Self {
        Self {
            method: None,
            path_prefix: path_prefix.into(),
            when,
            fault,
        }
    }

    /// Restricts the rule to one method.
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_ascii_uppercase());
        self
    }
}

/// A set of rules with their match counts and a seeded random generator.
#[derive(Debug)]
pub struct FaultPlan {
    state: Mutex<PlanState>,
}

#[derive(Debug)]
struct PlanState {
    rules: Vec<(FaultRule, u64)>,
    rng: fastrand::Rng,
    fired: u64,
}

impl FaultPlan {
    /// An empty plan whose probabilities draw from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: Mutex::new(PlanState {
                rules: Vec::new(),
                rng: fastrand::Rng::with_seed(seed),
                fired: 0,
            }),
        }
    }

    /// Adds a rule; rules are checked in the order added, the first that fires wins.
    pub fn add(&self, rule: FaultRule) {
        self.lock().rules.push((rule, 0));
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.lock().rules.clear();
    }

    /// How many faults have fired so far.
    pub fn fired(&self) -> u64 {
        self.lock().fired
    }

    /// The fault for this request, if one fires. Every matching rule counts the request.
    pub fn decide(&self, method: &str, path: &str) -> Option<Fault> {
        let mut state = self.lock();
        let PlanState { rules, rng, fired } = &mut *state;
        let mut chosen = None;
        for (rule, count) in rules.iter_mut() {
            let method_ok = rule
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method));
            if !method_ok || !path.starts_with(&rule.path_prefix) {
                continue;
            }
            *count += 1;
            let fires = match rule.when {
                When::Nth(n) => *count == n,
                When::Every(n) => n > 0 && *count % n == 0,
                When::First(n) => *count <= n,
                When::Probability(p) => rng.f64() < p,
                When::Always => true,
            };
            if fires && chosen.is_none() {
                chosen = Some(rule.fault.clone());
            }
        }
        if chosen.is_some() {
            *fired += 1;
        }
        chosen
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PlanState> {
        // A poisoned lock only means another request panicked; the counts are still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The response a fault that replaces handling produces; `None` for faults applied around handling.
pub(crate) fn replacement(fault: &Fault) -> Option<Response<Body>> {
    let (status, body, headers): (u16, String, Vec<(&str, String)>) = match fault {
        Fault::Status { status, body } => (*status, body.clone(), vec![]),
        Fault::Maintenance => (
            503,
            "The service is down for scheduled maintenance; try again later.".to_owned(),
            vec![],
        ),
        Fault::RateLimited {
            retry_after_secs,
            problem,
        } => {
            let mut h = vec![("Retry-After", retry_after_secs.to_string())];
            if let Some(p) = problem {
                h.push(("X-Rate-Limit-Problem", p.clone()));
            }
            (429, String::new(), h)
        }
        _ => return None,
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, v);
        }
    }
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_fire_when_told_and_count_their_own_matches() {
        let plan = FaultPlan::new(7);
        plan.add(FaultRule::on("/a", When::Nth(2), Fault::Reset).method("put"));
        plan.add(FaultRule::on("/", When::Every(3), Fault::Maintenance));
        assert_eq!(plan.decide("PUT", "/a/1"), None);
        assert_eq!(plan.decide("PUT", "/a/1"), Some(Fault::Reset));
        assert_eq!(plan.decide("GET", "/a/1"), Some(Fault::Maintenance));
        assert_eq!(plan.decide("PUT", "/a/1"), None);
        assert_eq!(plan.fired(), 2);
    }

    #[test]
    fn probabilities_are_reproducible_for_a_seed() {
        let draw = |seed| {
            let plan = FaultPlan::new(seed);
            plan.add(FaultRule::on("", When::Probability(0.3), Fault::Reset));
            (0..200)
                .map(|_| plan.decide("GET", "/x").is_some())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
        let hits = draw(42).iter().filter(|h| **h).count();
        assert!((30..=90).contains(&hits), "{hits}");
    }
}
