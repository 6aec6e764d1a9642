//! Xero webhooks end to end over 127.0.0.1: the Xero simulator's sender posts signed
//! deliveries and the intent-to-receive handshake to the console's webhook route.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use weft_harness::xero::webhook::WebhookSender;
use weft_harness::xero::{XeroConfig, XeroSim};
use weft_server::webhooks::{Trigger, XeroWebhook, routes};

const KEY: &[u8] = b"sealed-webhook-key-for-tests";

async fn receiver() -> (String, mpsc::Receiver<Trigger>) {
    let (tx, rx) = mpsc::channel(64);
    let app = routes(Arc::new(XeroWebhook::new(KEY, tx)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/webhooks/xero"), rx)
}

#[tokio::test]
async fn intent_to_receive_from_the_simulator() {
    let (url, mut rx) = receiver().await;
    let sender = WebhookSender::new(&url, KEY);
    let rounds = tokio::time::timeout(Duration::from_secs(30), sender.intent_to_receive(6))
        .await
        .unwrap();
    assert_eq!(rounds.len(), 6);
    for (good, status) in rounds {
        assert_eq!(status.unwrap(), if good { 200 } else { 401 });
    }
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn invoice_events_trigger_once_and_bad_signatures_are_refused() {
    let sim = tokio::task::spawn_blocking(|| XeroSim::start(XeroConfig::default()).unwrap())
        .await
        .unwrap();
    let (tenant, _) = sim.tenants().into_iter().next().unwrap();
    let invoice = sim.invoices(&tenant).into_iter().next().unwrap();
    let id = invoice["InvoiceID"].as_str().unwrap().to_owned();
    let (url, mut rx) = receiver().await;

    // Signed with another key: refused, nothing triggered.
    let impostor = WebhookSender::new(&url, b"someone else's key");
    let event = sim.invoice_event(&tenant, &id, "UPDATE");
    assert!(
        event["eventDateUtc"]
            .as_str()
            .is_some_and(|d| !d.ends_with('Z') && d.contains('T'))
    );
    let status = tokio::time::timeout(
        Duration::from_secs(10),
        impostor.deliver(vec![event.clone()]),
    )
    .await
    .unwrap();
    assert_eq!(status.unwrap(), 401);
    assert!(rx.try_recv().is_err());

    // Signed correctly: a trigger for the invoice's stream; the same event again is handled once.
    let sender = WebhookSender::new(&url, KEY);
    for _ in 0..2 {
        let status = tokio::time::timeout(
            Duration::from_secs(10),
            sender.deliver(vec![event.clone(), event.clone()]),
        )
        .await
        .unwrap();
        assert_eq!(status.unwrap(), 200);
    }
    let t = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        t,
        Trigger {
            category: "INVOICE".into(),
            tenant_id: tenant.clone(),
            resource_id: id.clone()
        }
    );
    assert!(rx.try_recv().is_err());
}
