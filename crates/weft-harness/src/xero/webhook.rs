//! The simulator's webhook sender: Xero's deliveries to a URL a test registers, signed as Xero
//! signs them (`x-xero-signature`, the base64 HMAC-SHA256 of the raw body under the signing
//! key), and the intent-to-receive handshake (a series of POSTs with `events: []`, sequences 0,
//! some signed correctly and some not).
//!
//! Deliveries are made when a test asks ([`WebhookSender::deliver`], with events built by
//! [`super::XeroSim::invoice_event`] after changing an invoice); every post has a timeout.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};
use serde_json::{Value, json};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// How long one delivery may take (Xero wants an answer within 5 s).
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The `x-xero-signature` of `body` under `key`.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Posts signed deliveries to one registered URL.
#[derive(Debug)]
pub struct WebhookSender {
    url: String,
    key: Vec<u8>,
    client: reqwest::Client,
    sequence: AtomicU32,
}

impl WebhookSender {
    /// A sender posting to `url`, signing with `key`.
    pub fn new(url: &str, key: &[u8]) -> Self {
        let client = reqwest::Client::builder()
            .timeout(DELIVERY_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a plain HTTP client builds");
        WebhookSender {
            url: url.to_owned(),
            key: key.to_vec(),
            client,
            sequence: AtomicU32::new(1),
        }
    }

    async fn post(&self, body: &[u8], signature: &str) -> Result<u16, String> {
        self.client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-xero-signature", signature)
            .body(body.to_vec())
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string())
    }

    /// Delivers `events` in one signed POST, sequence numbers following the last delivery's;
    /// the receiver's status.
    pub async fn deliver(&self, events: Vec<Value>) -> Result<u16, String> {
        let n = u32::try_from(events.len().max(1)).unwrap_or(u32::MAX);
        let first = self.sequence.fetch_add(n, Ordering::SeqCst);
        let body = json!({
            "events": events,
            "firstEventSequence": first,
            "lastEventSequence": first + n - 1,
            "entropy": entropy(),
        })
        .to_string();
        self.post(body.as_bytes(), &sign(&self.key, body.as_bytes()))
            .await
    }

    /// Sends the same delivery body again, as Xero does when it got no 200.
    pub async fn redeliver(&self, body: &str) -> Result<u16, String> {
        self.post(body.as_bytes(), &sign(&self.key, body.as_bytes()))
            .await
    }

    /// The intent-to-receive handshake: `rounds` POSTs with no events, alternately signed
    /// correctly and with another key; each round's (signed correctly, status answered).
    pub async fn intent_to_receive(&self, rounds: usize) -> Vec<(bool, Result<u16, String>)> {
        let mut out = Vec::with_capacity(rounds);
        for i in 0..rounds {
            let body = json!({
                "events": [],
                "firstEventSequence": 0,
                "lastEventSequence": 0,
                "entropy": entropy(),
            })
            .to_string();
            let good = i % 2 == 0;
            let signature = if good {
                sign(&self.key, body.as_bytes())
            } else {
                sign(b"not the signing key", body.as_bytes())
            };
            out.push((good, self.post(body.as_bytes(), &signature).await));
        }
        out
    }
}

fn entropy() -> String {
    (0..20)
        .map(|_| char::from(b'A' + fastrand::u8(0..26)))
        .collect()
}
