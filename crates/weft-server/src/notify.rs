//! Notifications: when a run stops, fails or leaves records in the error queue, a message is
//! posted to each configured webhook as Slack's incoming webhooks take it, `{"text": …}`.
//!
//! A webhook URL is a credential (Slack's carry their token in the path), so it is kept sealed
//! with the other secrets, never printed: [`Webhook`]'s `Debug` hides it and a failed post is
//! reported by the host and status only. Every post has a total timeout; one receiver failing
//! does not keep the others from being told.

use std::time::Duration;

use serde::Serialize;
use zeroize::Zeroizing;

/// How long one post may take, connection included.
pub const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// What happened to a run that people should hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEvent {
    /// The run stopped before the end (a daily limit spent, the server shutting down).
    Stopped {
        /// The flow.
        flow: String,
        /// Why, in a sentence.
        reason: String,
    },
    /// The run failed.
    Failed {
        /// The flow.
        flow: String,
        /// The error, as the run history records it (never holding a secret).
        message: String,
    },
    /// The run ended with records in the error queue.
    QueuedErrors {
        /// The flow.
        flow: String,
        /// How many records failed.
        count: u64,
    },
}

impl RunEvent {
    /// The one-line message sent.
    pub fn text(&self) -> String {
        match self {
            RunEvent::Stopped { flow, reason } => format!("Weft: flow {flow} stopped: {reason}"),
            RunEvent::Failed { flow, message } => format!("Weft: flow {flow} failed: {message}"),
            RunEvent::QueuedErrors { flow, count } => format!(
                "Weft: flow {flow} finished with {count} record{} in the error queue (weft errors list --flow {flow})",
                if *count == 1 { "" } else { "s" }
            ),
        }
    }
}

/// A webhook to post to; its URL is a secret.
pub struct Webhook {
    url: Zeroizing<String>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("host", &self.host())
            .field("url", &"[redacted]")
            .finish()
    }
}

/// Why a webhook URL was refused, or a post failed. Names the host, never the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// Not an http(s) URL with a host.
    #[error("the notification webhook is not an http or https URL")]
    BadUrl,
    /// The post could not be made or timed out.
    #[error("posting the notification to {host} failed: {reason}")]
    Send {
        /// The receiver's host.
        host: String,
        /// Connection refused, timed out, …
        reason: String,
    },
    /// The receiver answered with an error status.
    #[error("the notification webhook at {host} answered HTTP {status}")]
    Status {
        /// The receiver's host.
        host: String,
        /// The status.
        status: u16,
    },
}

impl Webhook {
    /// A webhook posting to `url` (http or https).
    pub fn new(url: &str) -> Result<Self, NotifyError> {
        let parsed = url::Url::parse(url).map_err(|_| NotifyError::BadUrl)?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(NotifyError::BadUrl);
        }
        Ok(Webhook {
            url: Zeroizing::new(url.to_owned()),
        })
    }

    fn host(&self) -> String {
        url::Url::parse(&self.url)
            .ok()
            .and_then(|u| {
                u.host_str().map(|h| {
                    format!(
                        "{h}{}",
                        u.port().map(|p| format!(":{p}")).unwrap_or_default()
                    )
                })
            })
            .unwrap_or_default()
    }
}

#[derive(Serialize)]
struct Body<'a> {
    text: &'a str,
}

/// The configured receivers of notifications.
#[derive(Debug)]
pub struct Notifier {
    client: reqwest::Client,
    webhooks: Vec<Webhook>,
}

impl Notifier {
    /// A notifier posting to `webhooks`.
    pub fn new(webhooks: Vec<Webhook>) -> Result<Self, NotifyError> {
        let client = weft_engine::http::client().map_err(|e| NotifyError::Send {
            host: String::new(),
            reason: e.to_string(),
        })?;
        Ok(Notifier { client, webhooks })
    }

    /// Tells every receiver about `event`; the errors of those that could not be told.
    pub async fn notify(&self, event: &RunEvent) -> Vec<NotifyError> {
        let text = event.text();
        let mut errors = Vec::new();
        for hook in &self.webhooks {
            let sent = self
                .client
                .post(hook.url.as_str())
                .timeout(POST_TIMEOUT)
                .json(&Body { text: &text })
                .send()
                .await;
            match sent {
                Ok(resp) if resp.status().is_success() => {}
                Ok(resp) => errors.push(NotifyError::Status {
                    host: hook.host(),
                    status: resp.status().as_u16(),
                }),
                Err(e) => errors.push(NotifyError::Send {
                    host: hook.host(),
                    // reqwest's message would hold the URL; say only what kind of failure.
                    reason: if e.is_timeout() {
                        "timed out".to_owned()
                    } else if e.is_connect() {
                        "could not connect".to_owned()
                    } else {
                        "the request failed".to_owned()
                    },
                }),
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::routing::post;

    type Got = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

    async fn receiver() -> (std::net::SocketAddr, Got) {
        let got: Got = Arc::default();
        let app = Router::new()
            .route(
                "/hooks/{token}",
                post(
                    |State(got): State<Got>,
                     Path(token): Path<String>,
                     axum::Json(v): axum::Json<serde_json::Value>| async move {
                        got.lock().unwrap().push((token.clone(), v));
                        if token == "broken" {
                            StatusCode::INTERNAL_SERVER_ERROR
                        } else {
                            StatusCode::OK
                        }
                    },
                ),
            )
            .with_state(got.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, got)
    }

    #[tokio::test]
    async fn posts_slack_text_to_every_receiver_and_hides_urls() {
        let (addr, got) = receiver().await;
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_port = dead.local_addr().unwrap().port();
        drop(dead);
        let notifier = Notifier::new(vec![
            Webhook::new(&format!("http://{addr}/hooks/T0SECRET1")).unwrap(),
            Webhook::new(&format!("http://{addr}/hooks/broken")).unwrap(),
            Webhook::new(&format!("http://127.0.0.1:{dead_port}/hooks/T0SECRET2")).unwrap(),
        ])
        .unwrap();
        let event = RunEvent::QueuedErrors {
            flow: "kantata-xero".into(),
            count: 2,
        };
        let errors = tokio::time::timeout(Duration::from_secs(30), notifier.notify(&event))
            .await
            .unwrap();
        let got = got.lock().unwrap().clone();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, "T0SECRET1");
        assert_eq!(got[0].1, serde_json::json!({ "text": event.text() }));
        assert!(event.text().contains("2 records in the error queue"));
        assert_eq!(errors.len(), 2);
        assert_eq!(
            errors[0],
            NotifyError::Status {
                host: addr.to_string(),
                status: 500
            }
        );
        assert!(matches!(&errors[1], NotifyError::Send { .. }));
        let shown = format!("{errors:?} {} {} {notifier:?}", errors[0], errors[1]);
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(!shown.contains("/hooks"), "{shown}");
    }

    #[test]
    fn refuses_what_is_not_a_url() {
        for bad in ["", "slack", "ftp://x/y", "file:///etc/passwd", "http://"] {
            assert_eq!(Webhook::new(bad).unwrap_err(), NotifyError::BadUrl, "{bad}");
        }
        assert!(
            RunEvent::Failed {
                flow: "f".into(),
                message: "m".into()
            }
            .text()
            .contains("failed: m")
        );
    }
}
