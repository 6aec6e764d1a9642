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

#[tokio::test]
async fn the_console_serves_the_route_without_login_or_csrf() {
    use tower::ServiceExt as _;
    let dir = std::env::temp_dir().join(format!("weft-hooks-console-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // SAFETY: this binary's only test touching the environment, set before anything reads it.
    unsafe {
        std::env::set_var("WEFT_CONFIG_DIR", dir.join("config"));
        std::env::set_var(
            "WEFT_MASTER_KEY",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        );
    }
    weft_engine::workspace::init(&dir).unwrap();
    let store = weft_server::Store::open(&dir.join(".weft")).unwrap();
    store
        .add_user(
            "alice",
            "correct horse battery staple 1",
            weft_server::Role::Admin,
        )
        .unwrap();
    drop(store);
    let (tx, mut rx) = mpsc::channel(4);
    let app = weft_server::router_with_xero_webhook(
        weft_server::Config {
            workspace: dir.clone(),
            listen: "127.0.0.1:8080".parse().unwrap(),
            tls: None,
            insecure_http: false,
            specs: Vec::new(),
        },
        Arc::new(XeroWebhook::new(KEY, tx)),
    )
    .unwrap();
    let body = r#"{"events":[],"firstEventSequence":0,"lastEventSequence":0,"entropy":"QWERTY"}"#;
    for (signature, status) in [
        (weft_server::webhooks::sign(KEY, body.as_bytes()), 200),
        (weft_server::webhooks::sign(b"wrong", body.as_bytes()), 401),
    ] {
        let resp = app
            .clone()
            .oneshot(
                axum::http::Request::post("/webhooks/xero")
                    .header("content-type", "application/json")
                    .header("x-xero-signature", signature)
                    .body(axum::body::Body::from(body))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status);
        assert!(resp.headers().get("set-cookie").is_none());
        let bytes = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        assert!(bytes.is_empty());
    }
    // The console's own pages still ask for a login.
    let resp = app
        .oneshot(
            axum::http::Request::get("/connections")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(resp.status().is_redirection(), "{}", resp.status());
    assert!(rx.try_recv().is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
