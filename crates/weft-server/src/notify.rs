//! Notifications: when a run stops, fails or leaves records in the error queue, a message is
//! posted to each configured webhook as Slack's incoming webhooks take it, `{"text": …}`, and
//! sent by e-mail over SMTP (the `lettre` crate) to each configured mailbox.
//!
//! A webhook URL is a credential (Slack's carry their token in the path), and so is an SMTP URL
//! with its password: the receivers ([`Receiver`]) are kept sealed in the workspace's credential
//! store (`notify:NAME`, set with `weft notify add`), never printed: `Debug` hides them and a
//! failed delivery is reported by the host and status only. Every delivery has a total
//! timeout; one receiver failing does not keep the others from being told.

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Tokio1Executor};
use serde::{Deserialize, Serialize};
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

/// Why a receiver was refused, or a delivery failed. Names the host, never the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// Not an http(s) URL with a host.
    #[error("the notification webhook is not an http or https URL")]
    BadUrl,
    /// Not an SMTP URL lettre can use.
    #[error(
        "the SMTP server is not a URL such as smtps://USER:PASSWORD@HOST:465 or smtp://USER:PASSWORD@HOST:587?tls=required (smtp://HOST:25 without TLS only for a relay on this machine)"
    )]
    BadSmtpUrl,
    /// A sender or recipient that is not an e-mail address.
    #[error("`{0}` is not an e-mail address")]
    BadAddress(String),
    /// An e-mail receiver without a recipient.
    #[error("an e-mail notification needs at least one recipient (--to ADDRESS)")]
    NoRecipient,
    /// The receivers kept in the credential store cannot be read.
    #[error("the notification receivers cannot be read: {0}")]
    Store(String),
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

/// A mailbox list to send to over SMTP; the server URL (with its password) is a secret.
pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    host: String,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email")
            .field("host", &self.host)
            .field("smtp", &"[redacted]")
            .field("to", &self.to.len())
            .finish()
    }
}

fn mailbox(address: &str) -> Result<Mailbox, NotifyError> {
    address
        .trim()
        .parse()
        .map_err(|_| NotifyError::BadAddress(address.to_owned()))
}

impl Email {
    /// Sends from `from` to `to` through the SMTP server `smtp` (`smtps://…`, `smtp://…` with
    /// `?tls=required` for STARTTLS, or plain `smtp://HOST:PORT`).
    pub fn new(smtp: &str, from: &str, to: &[String]) -> Result<Self, NotifyError> {
        let url = url::Url::parse(smtp).map_err(|_| NotifyError::BadSmtpUrl)?;
        if !matches!(url.scheme(), "smtp" | "smtps") || url.host_str().is_none() {
            return Err(NotifyError::BadSmtpUrl);
        }
        let host = format!(
            "{}{}",
            url.host_str().unwrap_or_default(),
            url.port().map(|p| format!(":{p}")).unwrap_or_default()
        );
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp)
            .map_err(|_| NotifyError::BadSmtpUrl)?
            .timeout(Some(POST_TIMEOUT))
            .build();
        if to.is_empty() {
            return Err(NotifyError::NoRecipient);
        }
        Ok(Email {
            transport,
            host,
            from: mailbox(from)?,
            to: to.iter().map(|t| mailbox(t)).collect::<Result<_, _>>()?,
        })
    }

    async fn send(&self, text: &str) -> Result<(), NotifyError> {
        let mut message = lettre::Message::builder()
            .from(self.from.clone())
            .subject(text.lines().next().unwrap_or("Weft"));
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message
            .body(format!(
                "{text}\n\nSent by the Weft console (`weft serve`).\n"
            ))
            .map_err(|e| NotifyError::Send {
                host: self.host.clone(),
                reason: e.to_string(),
            })?;
        let sent = tokio::time::timeout(POST_TIMEOUT, self.transport.send(message)).await;
        match sent {
            Ok(Ok(_)) => Ok(()),
            // lettre's messages may quote the server; say only what kind of failure.
            Ok(Err(e)) => Err(NotifyError::Send {
                host: self.host.clone(),
                reason: match e.status() {
                    Some(code) => format!("the server answered {code}"),
                    None if e.is_timeout() => "timed out".to_owned(),
                    None => "could not connect or deliver".to_owned(),
                },
            }),
            Err(_) => Err(NotifyError::Send {
                host: self.host.clone(),
                reason: "timed out".to_owned(),
            }),
        }
    }
}

/// One configured receiver of notifications, as sealed in the credential store.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Receiver {
    /// A Slack-compatible incoming webhook.
    Webhook {
        /// Its URL (a secret).
        url: String,
    },
    /// E-mail over SMTP.
    Email {
        /// The SMTP server's URL, credentials included (a secret).
        smtp: String,
        /// The sender's address.
        from: String,
        /// The recipients.
        to: Vec<String>,
    },
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Receiver {
    /// Whether it can be used: the URL and addresses checked, nothing sent.
    pub fn check(&self) -> Result<(), NotifyError> {
        match self {
            Receiver::Webhook { url } => Webhook::new(url).map(drop),
            Receiver::Email { smtp, from, to } => Email::new(smtp, from, to).map(drop),
        }
    }

    /// What it is, without its secret: `webhook to HOST` or `e-mail to A, B via HOST`.
    pub fn describe(&self) -> String {
        let host = |u: &str| {
            url::Url::parse(u)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_else(|| "?".to_owned())
        };
        match self {
            Receiver::Webhook { url } => format!("webhook to {}", host(url)),
            Receiver::Email { smtp, to, .. } => {
                format!("e-mail to {} via {}", to.join(", "), host(smtp))
            }
        }
    }
}

/// The prefix of receivers' entries in the credential store.
pub const RECEIVER_PREFIX: &str = "notify:";

/// The receivers sealed in `store`, by name.
pub fn receivers(
    store: &weft_engine::secrets::SecretStore,
) -> Result<Vec<(String, Receiver)>, NotifyError> {
    let mut out = Vec::new();
    for id in store.ids() {
        let Some(name) = id.strip_prefix(RECEIVER_PREFIX) else {
            continue;
        };
        let sealed = store
            .get(id)
            .map_err(|e| NotifyError::Store(e.to_string()))?
            .ok_or_else(|| NotifyError::Store(format!("`{id}` vanished while being read")))?;
        let receiver: Receiver = serde_json::from_str(sealed.expose()).map_err(|_| {
            NotifyError::Store(format!(
                "`{id}` is not a receiver this version of Weft reads; remove it with `weft notify remove {name}` and add it again"
            ))
        })?;
        out.push((name.to_owned(), receiver));
    }
    Ok(out)
}

/// Seals `receiver` as `name` (replacing one of that name), after checking it.
pub fn store_receiver(
    store: &mut weft_engine::secrets::SecretStore,
    name: &str,
    receiver: &Receiver,
) -> Result<(), NotifyError> {
    receiver.check()?;
    let text = serde_json::to_string(receiver).map_err(|e| NotifyError::Store(e.to_string()))?;
    store
        .put(
            &format!("{RECEIVER_PREFIX}{name}"),
            &weft_engine::secrets::Secret::new(text),
        )
        .map_err(|e| NotifyError::Store(e.to_string()))
}

/// The configured receivers of notifications.
#[derive(Debug)]
pub struct Notifier {
    client: reqwest::Client,
    webhooks: Vec<Webhook>,
    emails: Vec<Email>,
}

impl Notifier {
    /// A notifier posting to `webhooks`.
    pub fn new(webhooks: Vec<Webhook>) -> Result<Self, NotifyError> {
        let client = weft_engine::http::client().map_err(|e| NotifyError::Send {
            host: String::new(),
            reason: e.to_string(),
        })?;
        Ok(Notifier {
            client,
            webhooks,
            emails: Vec::new(),
        })
    }

    /// A notifier for every receiver of `receivers`.
    pub fn from_receivers(receivers: &[(String, Receiver)]) -> Result<Self, NotifyError> {
        let mut notifier = Notifier::new(Vec::new())?;
        for (_, r) in receivers {
            match r {
                Receiver::Webhook { url } => notifier.webhooks.push(Webhook::new(url)?),
                Receiver::Email { smtp, from, to } => {
                    notifier.emails.push(Email::new(smtp, from, to)?);
                }
            }
        }
        Ok(notifier)
    }

    /// How many receivers it tells.
    pub fn len(&self) -> usize {
        self.webhooks.len() + self.emails.len()
    }

    /// Whether it tells nobody.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tells every receiver about `event`; the errors of those that could not be told.
    pub async fn notify(&self, event: &RunEvent) -> Vec<NotifyError> {
        let text = event.text();
        let mut errors = Vec::new();
        for email in &self.emails {
            if let Err(e) = email.send(&text).await {
                errors.push(e);
            }
        }
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
