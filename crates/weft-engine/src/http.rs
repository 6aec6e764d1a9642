//! Sending requests the way a spec says: classify every failure by the spec's error rules, retry
//! what is worth retrying with exponential backoff and jitter (or the provider's `Retry-After`),
//! and stop cleanly at a daily cap with the time it frees up.
//!
//! Waiting goes through a [`Wait`], so tests run on simulated time and production sleeps.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::Value;
use weft_core::model::{ErrorClass, ErrorRule, OnExhausted, SpecFile};

use crate::request::Request;

/// How a caller waits; production sleeps, tests record and move a simulated clock.
pub trait Wait: Send + Sync {
    /// Waits `duration`.
    fn wait(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// Real sleeping.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sleep;

impl Wait for Sleep {
    fn wait(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// Time limit of connecting to a provider.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time limit of a whole request where nothing more specific applies (each API call and token
/// request sets the spec's `limits.timeout` instead).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The HTTP client for providers: rustls with the AWS-LC crypto provider and the platform's
/// certificate verifier (no OpenSSL), redirects not followed (an OAuth or API redirect is an
/// answer to inspect, not to chase), Weft's user agent, and connect and total timeouts on every
/// request, so no request Weft makes can wait forever.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(DEFAULT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("weft/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A response that succeeded.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Response headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body as JSON (`null` when empty).
    pub body: Value,
    /// Attempts it took, the first included.
    pub attempts: u32,
    /// Time spent waiting between attempts (backoff and `Retry-After`).
    pub waited: Duration,
}

/// A request that did not succeed, classified.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The provider answered with an error the spec classifies.
    #[error("{message} (HTTP {status}, {class:?})")]
    Refused {
        /// The class from the spec's rules.
        class: ErrorClass,
        /// HTTP status.
        status: u16,
        /// The rule's message, or a generic one.
        message: String,
        /// The body as JSON (`null` when not JSON).
        body: Value,
        /// Attempts made.
        attempts: u32,
    },
    /// A daily cap (a budget with `on-exhausted = "checkpoint"`) was reached: stop and resume later.
    #[error(
        "the `{budget}` budget is spent; the provider frees it in {retry_after:?}. Weft stops here and the next run resumes"
    )]
    DailyCap {
        /// The budget's name.
        budget: String,
        /// When it frees up.
        retry_after: Duration,
    },
    /// No answer: connection refused, reset, timed out, or a body that was cut short.
    #[error(
        "no answer from {url} after {attempts} attempt(s): {reason}; check the network, or the provider's status page"
    )]
    Unreachable {
        /// The URL.
        url: String,
        /// The last transport error.
        reason: String,
        /// Attempts made.
        attempts: u32,
    },
    /// A success status whose body is not JSON.
    #[error("{url} answered {status} with a body that is not JSON: {reason}")]
    NotJson {
        /// The URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// Why it does not parse.
        reason: String,
    },
}

/// Classifies a failed answer by `rules` (operation rules first, then the spec's).
pub fn classify(
    rules: &[&ErrorRule],
    status: u16,
    text: &str,
    body: &Value,
) -> (ErrorClass, String) {
    let env = weft_core::template::environment();
    for rule in rules {
        let status_ok = rule.status.is_empty() || rule.status.contains(&status);
        let body_ok = rule
            .body_contains
            .as_ref()
            .is_none_or(|needle| text.contains(needle.as_str()));
        if status_ok && body_ok {
            let message = rule
                .message
                .as_ref()
                .and_then(|m| {
                    env.render_str(m, minijinja::context! { status => status, body => body })
                        .ok()
                })
                // The message quotes the provider's body: what it says is printed, never
                // obeyed by the terminal.
                .map(|m| crate::secrets::escape_control(&m))
                .unwrap_or_else(|| generic(status));
            return (rule.class, message);
        }
    }
    let class = match status {
        401 => ErrorClass::Unauthorized,
        403 => ErrorClass::Forbidden,
        404 => ErrorClass::NotFound,
        409 => ErrorClass::Conflict,
        429 => ErrorClass::RateLimited,
        408 | 500..=599 => ErrorClass::Transient,
        _ => ErrorClass::Fatal,
    };
    (class, generic(status))
}

fn generic(status: u16) -> String {
    format!("the provider answered HTTP {status}")
}

/// The backoff before attempt `attempt` (2 for the first retry): exponential from
/// `initial`, capped at `max`, with full jitter drawn from `rng`.
pub fn backoff(
    initial: Duration,
    max: Duration,
    attempt: u32,
    rng: &mut fastrand::Rng,
) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.saturating_sub(2).min(20));
    let ceiling = exp.min(max);
    let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    // Full jitter, but never less than half the step, so retries still spread out.
    Duration::from_millis(ms / 2 + rng.u64(0..=ms / 2))
}

/// Seconds in a `Retry-After` header (the delta-seconds form providers use).
pub fn retry_after(headers: &[(String, String)], name: Option<&str>) -> Option<Duration> {
    let name = name.unwrap_or("retry-after").to_ascii_lowercase();
    headers
        .iter()
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Sends `request` with `body` (JSON, for writes), retrying per the spec.
pub async fn send(
    client: &reqwest::Client,
    spec: &SpecFile,
    op_rules: &[ErrorRule],
    request: &Request,
    body: Option<&Value>,
    wait: &dyn Wait,
    rng: &mut fastrand::Rng,
) -> Result<Answer, CallError> {
    let retry = &spec.limits.retry;
    let rules: Vec<&ErrorRule> = op_rules.iter().chain(&spec.errors).collect();
    let mut waited = Duration::ZERO;
    let mut attempt = 0;
    let step = |attempt: u32, rng: &mut fastrand::Rng| {
        backoff(
            retry.initial_backoff.to_std(),
            retry.max_backoff.to_std(),
            attempt + 1,
            rng,
        )
    };
    loop {
        attempt += 1;
        let method = reqwest::Method::from_bytes(request.method.as_str().as_bytes())
            .unwrap_or(reqwest::Method::GET);
        let mut call = client
            .request(method, request.url.as_str())
            .timeout(spec.limits.timeout.to_std());
        for (name, value) in &request.headers {
            call = call.header(name, value);
        }
        if let Some(body) = body {
            // Exact decimals are written with their digits, never through f64.
            call = call
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(crate::exact::to_vec(body));
        }
        let outcome = match call.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let headers: Vec<(String, String)> = response
                    .headers()
                    .iter()
                    .map(|(n, v)| {
                        (
                            n.as_str().to_ascii_lowercase(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                match response.text().await {
                    Ok(text) => Ok((status, headers, text)),
                    Err(err) => Err((err.to_string(), false)),
                }
            }
            Err(err) => Err((err.to_string(), err.is_connect())),
        };
        // Each failure either ends the call or says how long to wait before the next attempt.
        let pause = match outcome {
            // A write that may have reached the provider is not sent again: only a failure to
            // connect proves it did not.
            Err((reason, connect))
                if attempt >= retry.max_attempts || !(connect || request.replay_safe) =>
            {
                return Err(CallError::Unreachable {
                    url: request.url.to_string(),
                    reason,
                    attempts: attempt,
                });
            }
            Err(_) => step(attempt, rng),
            Ok((status, headers, text)) => {
                let body: Value = if text.trim().is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(&text).unwrap_or(Value::Null)
                };
                if (200..300).contains(&status) {
                    if body.is_null() && !text.trim().is_empty() {
                        let reason = serde_json::from_str::<Value>(&text)
                            .err()
                            .map(|e| e.to_string())
                            .unwrap_or_default();
                        return Err(CallError::NotJson {
                            url: request.url.to_string(),
                            status,
                            reason,
                        });
                    }
                    return Ok(Answer {
                        status,
                        headers,
                        body,
                        attempts: attempt,
                        waited,
                    });
                }
                let (class, message) = classify(&rules, status, &text, &body);
                let refused = CallError::Refused {
                    class,
                    status,
                    message,
                    body,
                    attempts: attempt,
                };
                match class {
                    ErrorClass::RateLimited => {
                        let after =
                            retry_after(&headers, spec.limits.headers.retry_after.as_deref());
                        let named = named_budget(spec, &headers, &refused);
                        if let Some(budget) =
                            named.filter(|b| b.on_exhausted == OnExhausted::Checkpoint)
                        {
                            return Err(CallError::DailyCap {
                                budget: budget.name.clone(),
                                retry_after: after.unwrap_or(Duration::from_secs(3600)),
                            });
                        }
                        if attempt >= retry.max_attempts {
                            return Err(refused);
                        }
                        // Without `Retry-After`, a rolling window the 429 names is waited out
                        // whole; otherwise backoff.
                        let window = named.and_then(|b| b.window).map(|w| w.to_std());
                        after.or(window).unwrap_or_else(|| step(attempt, rng))
                    }
                    // 503 says the request was not handled; any other 5xx may have been, so
                    // only replay-safe requests try again.
                    ErrorClass::Transient
                        if attempt < retry.max_attempts
                            && (request.replay_safe || status == 503) =>
                    {
                        step(attempt, rng)
                    }
                    _ => return Err(refused),
                }
            }
        };
        waited += pause;
        wait.wait(pause).await;
    }
}

/// The budget a 429 names, through the problem header (`limits.headers.problem`) or the
/// body's `limits.problem-body`; a checkpoint budget named either way comes first.
fn named_budget<'s>(
    spec: &'s SpecFile,
    headers: &[(String, String)],
    refused: &CallError,
) -> Option<&'s weft_core::model::Budget> {
    let by_header = spec.limits.headers.problem.as_ref().and_then(|h| {
        let h = h.to_ascii_lowercase();
        headers
            .iter()
            .find(|(n, _)| *n == h)
            .map(|(_, v)| v.clone())
    });
    let by_body = match (spec.limits.problem_body.as_deref(), refused) {
        (Some(path), CallError::Refused { body, .. }) => path
            .split('.')
            .try_fold(body, |v, part| v.get(part))
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    };
    let named: Vec<&weft_core::model::Budget> = [by_header, by_body]
        .into_iter()
        .flatten()
        .filter_map(|problem| {
            spec.limits.budget.iter().find(|b| {
                b.problem
                    .as_deref()
                    .is_some_and(|p| p.eq_ignore_ascii_case(&problem))
            })
        })
        .collect();
    named
        .iter()
        .find(|b| b.on_exhausted == OnExhausted::Checkpoint)
        .or(named.first())
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters_reproducibly() {
        let steps = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            (2..10)
                .map(|a| {
                    backoff(
                        Duration::from_millis(500),
                        Duration::from_secs(8),
                        a,
                        &mut rng,
                    )
                    .as_millis()
                })
                .collect::<Vec<u128>>()
        };
        for (i, ms) in steps(3).iter().enumerate() {
            let ceiling = (500u128 << i).min(8_000);
            assert!(
                *ms >= ceiling / 2 && *ms <= ceiling,
                "attempt {}: {ms} not in {}..={ceiling}",
                i + 2,
                ceiling / 2
            );
        }
        assert_eq!(steps(3), steps(3));
    }

    #[test]
    fn the_client_builds_with_tls() {
        assert!(client().is_ok());
    }

    #[test]
    fn provider_text_in_a_message_is_escaped() {
        let rule: ErrorRule = toml::from_str(
            "status = [403]\nclass = \"forbidden\"\nmessage = \"refused: {{ body.Detail }}\"",
        )
        .unwrap();
        let body = serde_json::json!({"Detail": "no\u{1b}[2J\rway"});
        let (_, message) = classify(&[&rule], 403, &body.to_string(), &body);
        assert_eq!(message, "refused: no\\u{1b}[2J\\rway");
    }

    #[test]
    fn retry_after_reads_seconds() {
        let h = vec![("retry-after".to_owned(), "66975".to_owned())];
        assert_eq!(
            retry_after(&h, Some("Retry-After")),
            Some(Duration::from_secs(66_975))
        );
        assert_eq!(retry_after(&[], None), None);
    }
}
