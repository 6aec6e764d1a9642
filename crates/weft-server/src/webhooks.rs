//! Xero webhooks: `POST /webhooks/xero`, unauthenticated (no session, no CSRF) but every
//! request checked against the app's webhook signing key before its body is parsed.
//!
//! Xero signs the raw body: `x-xero-signature` is the base64 of HMAC-SHA256 over the bytes
//! with the signing key. A good signature gets 200, a bad or missing one 401, both with an
//! empty body and no cookie, and without waiting on anything slow: the intent-to-receive
//! handshake (a series of POSTs with `events: []`, some signed wrongly on purpose) is answered
//! by the same rule. Events already seen (Xero retries a delivery until it gets a 200) are
//! dropped; each new one becomes a [`Trigger`] on a bounded channel for whoever runs flows,
//! which never makes the answer wait (a full channel drops the trigger; the schedule still
//! reads the change later).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};
use serde::Deserialize;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// How many event identities are remembered for deduplication (oldest forgotten first).
pub const SEEN_CAPACITY: usize = 10_000;

/// The largest body accepted; Xero's deliveries are a few kilobytes.
pub const MAX_BODY: usize = 256 * 1024;

/// Whether `signature` (the `x-xero-signature` header) is the base64 HMAC-SHA256 of `body`
/// under `key`, compared in constant time.
pub fn signature_ok(key: &[u8], body: &[u8], signature: &str) -> bool {
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// The `x-xero-signature` value for `body` under `key` (the simulator's sender and tests).
pub fn sign(key: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// One event of a delivery, as Xero names its fields.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// The API URL of the changed resource.
    #[serde(default)]
    pub resource_url: String,
    /// The changed resource's id.
    pub resource_id: String,
    /// When it changed, UTC without a zone designator.
    pub event_date_utc: String,
    /// `CREATE` or `UPDATE`.
    pub event_type: String,
    /// `INVOICE`, `CONTACT`, …
    pub event_category: String,
    /// The organisation.
    pub tenant_id: String,
    /// `ORGANISATION` or `APPLICATION`.
    #[serde(default)]
    pub tenant_type: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Delivery {
    events: Vec<Event>,
}

/// What an event asks of the server: read this category of resource again for this tenant
/// (the flows whose streams read it), now instead of at the next scheduled time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// The event's category (`INVOICE`, `CONTACT`, …).
    pub category: String,
    /// The organisation.
    pub tenant_id: String,
    /// The changed resource.
    pub resource_id: String,
}

/// Event identities already handled, bounded.
#[derive(Debug, Default)]
struct Seen {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl Seen {
    /// Records `id`; false when it was already there.
    fn insert(&mut self, id: String) -> bool {
        if self.set.contains(&id) {
            return false;
        }
        if self.order.len() >= SEEN_CAPACITY
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.set.insert(id.clone());
        self.order.push_back(id);
        true
    }
}

/// The receiver of one Xero app's webhooks.
pub struct XeroWebhook {
    key: Zeroizing<Vec<u8>>,
    seen: Mutex<Seen>,
    triggers: mpsc::Sender<Trigger>,
}

impl std::fmt::Debug for XeroWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XeroWebhook")
            .field("key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl XeroWebhook {
    /// A receiver checking signatures with `key` and sending new events' triggers to
    /// `triggers`.
    pub fn new(key: &[u8], triggers: mpsc::Sender<Trigger>) -> Self {
        XeroWebhook {
            key: Zeroizing::new(key.to_vec()),
            seen: Mutex::new(Seen::default()),
            triggers,
        }
    }

    /// Handles one delivery: the status to answer.
    pub fn receive(&self, headers: &HeaderMap, body: &[u8]) -> StatusCode {
        let Some(signature) = headers
            .get("x-xero-signature")
            .and_then(|v| v.to_str().ok())
        else {
            return StatusCode::UNAUTHORIZED;
        };
        if !signature_ok(&self.key, body, signature) {
            return StatusCode::UNAUTHORIZED;
        }
        // Signed by Xero: answer 200 whatever the body holds, or Xero would retry it for a day.
        let Ok(delivery) = serde_json::from_slice::<Delivery>(body) else {
            return StatusCode::OK;
        };
        for event in delivery.events {
            let id = format!(
                "{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
                event.tenant_id,
                event.event_category,
                event.resource_id,
                event.event_type,
                event.event_date_utc
            );
            let new = self.seen.lock().map(|mut s| s.insert(id)).unwrap_or(false);
            if new {
                let _ = self.triggers.try_send(Trigger {
                    category: event.event_category,
                    tenant_id: event.tenant_id,
                    resource_id: event.resource_id,
                });
            }
        }
        StatusCode::OK
    }
}

/// The connector whose webhooks this module receives.
pub const XERO_CONNECTOR: &str = "xero";

/// The resources of the Xero spec an event category is about (its streams are the ones a
/// trigger runs); none for a category Weft does not read.
pub fn resources_of(category: &str) -> &'static [&'static str] {
    match category {
        "INVOICE" => &["invoices"],
        "CONTACT" => &["contacts"],
        _ => &[],
    }
}

/// The record of the credential store holding the Xero app's webhook signing key.
pub const XERO_KEY_ID: &str = "webhook:xero:key";

/// Why a webhook key was not stored or read.
#[derive(Debug, thiserror::Error)]
pub enum WebhookKeyError {
    /// An empty key (or only spaces).
    #[error(
        "the webhook signing key is empty; paste the key Xero's developer portal shows for the webhook"
    )]
    Empty,
    /// The credential store refused.
    #[error(transparent)]
    Store(#[from] weft_engine::secrets::SecretError),
}

/// Seals the Xero webhook signing key in the workspace's credential store (surrounding spaces
/// removed, as a pasted key often has them).
pub fn store_xero_key(
    store: &mut weft_engine::secrets::SecretStore,
    key: &str,
) -> Result<(), WebhookKeyError> {
    let key = key.trim();
    if key.is_empty() {
        return Err(WebhookKeyError::Empty);
    }
    store.put(
        XERO_KEY_ID,
        &weft_engine::secrets::Secret::new(key.to_owned()),
    )?;
    Ok(())
}

/// The Xero webhook signing key sealed in `store`, if one was set: the bytes HMAC is keyed
/// with.
pub fn xero_key(
    store: &weft_engine::secrets::SecretStore,
) -> Result<Option<Zeroizing<Vec<u8>>>, WebhookKeyError> {
    Ok(store
        .get(XERO_KEY_ID)?
        .map(|s| Zeroizing::new(s.expose().as_bytes().to_vec())))
}

/// The webhook route, to be merged outside the console's session and CSRF layers.
pub fn routes(hook: Arc<XeroWebhook>) -> Router {
    Router::new()
        .route("/webhooks/xero", post(receive))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(hook)
}

async fn receive(
    State(hook): State<Arc<XeroWebhook>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    hook.receive(&headers, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    const KEY: &[u8] = b"test-signing-key-0123456789";

    fn app() -> (Router, mpsc::Receiver<Trigger>) {
        let (tx, rx) = mpsc::channel(16);
        (routes(Arc::new(XeroWebhook::new(KEY, tx))), rx)
    }

    async fn post(app: &Router, body: &str, signature: Option<&str>) -> axum::response::Response {
        let mut req = Request::post("/webhooks/xero").header("content-type", "application/json");
        if let Some(s) = signature {
            req = req.header("x-xero-signature", s);
        }
        app.clone()
            .oneshot(req.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap()
    }

    async fn assert_bare(resp: axum::response::Response, status: StatusCode) {
        assert_eq!(resp.status(), status);
        assert!(resp.headers().get("set-cookie").is_none());
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        assert!(body.is_empty());
    }

    fn event_body(resource: &str, date: &str) -> String {
        format!(
            r#"{{"events":[{{"resourceUrl":"https://api.xero.com/api.xro/2.0/Invoices/{resource}","resourceId":"{resource}","eventDateUtc":"{date}","eventType":"UPDATE","eventCategory":"INVOICE","tenantId":"t-1","tenantType":"ORGANISATION"}}],"firstEventSequence":1,"lastEventSequence":1,"entropy":"ABCDEF"}}"#
        )
    }

    #[tokio::test]
    async fn intent_to_receive_answers_by_signature() {
        let (app, mut rx) = app();
        let body = r#"{"events":[],"firstEventSequence":0,"lastEventSequence":0,"entropy":"XYZ"}"#;
        assert_bare(
            post(&app, body, Some(&sign(KEY, body.as_bytes()))).await,
            StatusCode::OK,
        )
        .await;
        assert_bare(
            post(&app, body, Some(&sign(b"another key", body.as_bytes()))).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
        assert_bare(
            post(&app, body, Some("not base64!")).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
        assert_bare(post(&app, body, None).await, StatusCode::UNAUTHORIZED).await;
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn bad_signature_triggers_nothing_and_good_one_triggers_once() {
        let (app, mut rx) = app();
        let body = event_body("inv-1", "2025-12-02T00:44:09.923");
        // Signed over other bytes: refused.
        let wrong = sign(KEY, body.replace("inv-1", "inv-2").as_bytes());
        assert_bare(
            post(&app, &body, Some(&wrong)).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
        assert!(rx.try_recv().is_err());
        let good = sign(KEY, body.as_bytes());
        assert_bare(post(&app, &body, Some(&good)).await, StatusCode::OK).await;
        // Redelivered: answered 200, handled once.
        assert_bare(post(&app, &body, Some(&good)).await, StatusCode::OK).await;
        let t = rx.try_recv().unwrap();
        assert_eq!(
            t,
            Trigger {
                category: "INVOICE".into(),
                tenant_id: "t-1".into(),
                resource_id: "inv-1".into()
            }
        );
        assert!(rx.try_recv().is_err());
        // A later change of the same invoice is a new event.
        let later = event_body("inv-1", "2025-12-02T00:50:00.000");
        assert_bare(
            post(&app, &later, Some(&sign(KEY, later.as_bytes()))).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(rx.try_recv().unwrap().resource_id, "inv-1");
    }

    #[tokio::test]
    async fn signed_garbage_is_answered_without_panicking() {
        let (app, mut rx) = app();
        for body in ["", "{", "[]", r#"{"events":[{"x":1}]}"#, "\u{0}\u{ff}"] {
            let resp = post(&app, body, Some(&sign(KEY, body.as_bytes()))).await;
            assert_bare(resp, StatusCode::OK).await;
        }
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn seen_is_bounded() {
        let mut seen = Seen::default();
        for i in 0..SEEN_CAPACITY + 5 {
            assert!(seen.insert(i.to_string()));
        }
        assert_eq!(seen.order.len(), SEEN_CAPACITY);
        assert!(seen.insert("0".into()));
        assert!(!seen.insert("10".into()));
    }

    #[test]
    fn the_key_is_sealed_in_the_credential_store() {
        let dir = std::env::temp_dir().join(format!("weft-webhook-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("credentials.json");
        let master = weft_engine::secrets::MasterKey::generate().unwrap();
        let mut store = weft_engine::secrets::SecretStore::open(&path, master.clone()).unwrap();
        assert!(xero_key(&store).unwrap().is_none());
        assert!(matches!(
            store_xero_key(&mut store, "  \n"),
            Err(WebhookKeyError::Empty)
        ));
        store_xero_key(&mut store, " xero-key-ABCDEFGH12345 \n").unwrap();
        let on_disk = std::fs::read_to_string(&path).unwrap();
        assert!(!on_disk.contains("xero-key-ABCDEFGH12345"));
        let reopened = weft_engine::secrets::SecretStore::open(&path, master).unwrap();
        let key = xero_key(&reopened).unwrap().unwrap();
        assert_eq!(key.as_slice(), b"xero-key-ABCDEFGH12345");
        let body = b"{}";
        assert!(signature_ok(
            &key,
            body,
            &sign(b"xero-key-ABCDEFGH12345", body)
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn key_is_not_debug_printed() {
        let (tx, _rx) = mpsc::channel(1);
        let hook = XeroWebhook::new(KEY, tx);
        assert!(!format!("{hook:?}").contains("test-signing-key"));
    }
}
