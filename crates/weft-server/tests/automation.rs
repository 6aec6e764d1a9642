//! What `weft serve` does by itself, against the Kantata and Xero simulators: a schedule firing
//! on a simulated clock, a missed run caught up once, a signed Xero webhook running the stream
//! it concerns (and a badly signed one refused), and notifications received by a local webhook
//! and a local SMTP sink.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use weft_engine::http::Wait;
use weft_engine::limits::Clock;
use weft_harness::clock::SimClock;
use weft_harness::smtp::SmtpSink;
use weft_server::automation::{Automation, Happened, Why};
use weft_server::notify::{self, Notifier, Receiver};
use weft_server::{Automate, Config, Role, Store};

const FLOW: &str = "kantata-xero";
const WEBHOOK_KEY: &str = "xero-webhook-signing-key-for-tests-only";

/// The schedule's clock for the tests: simulated now; each wait a short real sleep, so the task
/// looks again soon after the test moves the clock.
struct TestClock(SimClock);

impl Wait for TestClock {
    fn wait(
        &self,
        duration: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep(duration.min(Duration::from_millis(20))))
    }
}

impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.0.now_ms()
    }
}

fn real_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Puts `schedule = …` at the top of the flow's file.
fn schedule(sims: &common::Sims, schedule: &str) {
    let path = sims.dir.join("flows").join(format!("{FLOW}.toml"));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("schedule = \"{schedule}\"\n{text}")).unwrap();
}

/// The next report, at most 90 s away (a run against the simulators takes a few seconds).
async fn next(reports: &mut mpsc::UnboundedReceiver<Happened>) -> Happened {
    tokio::time::timeout(Duration::from_secs(90), reports.recv())
        .await
        .expect("the automation reported nothing within 90 s")
        .expect("the automation task ended")
}

/// Reports until a run ends; the start and the end.
async fn one_run(reports: &mut mpsc::UnboundedReceiver<Happened>) -> (Happened, Happened) {
    let started = loop {
        match next(reports).await {
            h @ Happened::Started { .. } => break h,
            Happened::Notified { .. } => {}
            other => panic!("expected a run to start, got {other:?}"),
        }
    };
    loop {
        match next(reports).await {
            h @ Happened::Ended { .. } => return (started, h),
            Happened::Notified { .. } => {}
            other => panic!("expected the run to end, got {other:?}"),
        }
    }
}

fn completed(h: &Happened) -> i64 {
    match h {
        Happened::Ended {
            outcome,
            run: Some(id),
            ..
        } if outcome == "completed" => *id,
        other => panic!("expected a completed run, got {other:?}"),
    }
}

fn automation(
    sims: &common::Sims,
    clock: &SimClock,
    notifier: Notifier,
) -> (Automation, mpsc::UnboundedReceiver<Happened>) {
    let (report, reports) = mpsc::unbounded_channel();
    (
        Automation {
            workspace: sims.dir.clone(),
            specs: common::specs(),
            callback: "http://localhost:8080/oauth/callback".into(),
            clock: Arc::new(TestClock(clock.clone())),
            notifier,
            triggers: None,
            poll: Duration::from_secs(60),
            report,
        },
        reports,
    )
}

/// Nothing more happens while the clock stands before the next due time (the task looks again
/// every 20 ms of real time: 25 looks).
async fn quiet(reports: &mut mpsc::UnboundedReceiver<Happened>) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(h) = reports.try_recv() {
        assert!(
            matches!(h, Happened::Notified { .. }),
            "the automation did something before its time: {h}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_on_a_simulated_clock_and_a_missed_run_is_caught_up_once() {
    let sims = common::sims("auto-schedule", 4, vec!["USD".into()], None).await;
    schedule(&sims, "every 15m");
    let clock = SimClock::manual(real_now_ms());
    let seeded = sims.xero.invoices(&sims.tenant).len();

    let (task, mut reports) = automation(&sims, &clock, Notifier::new(Vec::new()).unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(task.run(async {
        let _ = stopped.await;
    }));
    // Never ran: due at once.
    let (started, ended) = one_run(&mut reports).await;
    assert_eq!(
        started,
        Happened::Started {
            flow: FLOW.into(),
            stream: None,
            why: Why::Schedule
        }
    );
    let first = completed(&ended);
    let written = sims.xero.invoices(&sims.tenant).len();
    assert!(written > seeded, "the first run wrote invoices");

    // Ten minutes later: not due yet.
    clock.advance(Duration::from_secs(600));
    quiet(&mut reports).await;
    // Past 15 minutes and the largest jitter (30 s): the second run, which finds nothing to do.
    clock.advance(Duration::from_secs(6 * 60));
    let (started, ended) = one_run(&mut reports).await;
    assert!(matches!(
        started,
        Happened::Started {
            why: Why::Schedule,
            ..
        }
    ));
    let second = completed(&ended);
    assert!(second > first);
    assert_eq!(
        sims.xero.invoices(&sims.tenant).len(),
        written,
        "nothing created twice"
    );
    let _ = stop.send(());
    handle.await.unwrap();

    // The server is down for three hours (eleven runs missed), then starts again: one run at
    // once, then the next a schedule's interval later, not a burst of catching up.
    clock.advance(Duration::from_secs(3 * 3600));
    let (task, mut reports) = automation(&sims, &clock, Notifier::new(Vec::new()).unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(task.run(async {
        let _ = stopped.await;
    }));
    let (_, ended) = one_run(&mut reports).await;
    assert!(completed(&ended) > second);
    clock.advance(Duration::from_secs(60));
    quiet(&mut reports).await;
    let _ = stop.send(());
    handle.await.unwrap();

    let db = weft_engine::state::State::open(&sims.dir.join(".weft").join("state.db")).unwrap();
    assert_eq!(db.runs(Some(FLOW), 100).unwrap().len(), 3);
    assert_eq!(sims.xero.invoices(&sims.tenant).len(), written);
    let _ = std::fs::remove_dir_all(&sims.dir);
}

type Posts = Arc<Mutex<Vec<serde_json::Value>>>;

/// A Slack-like receiver on 127.0.0.1: every JSON body posted to it.
async fn slack() -> (String, Posts) {
    let got: Posts = Arc::default();
    let kept = got.clone();
    let app = axum::Router::new().route(
        "/services/T000/B000/XXXX",
        axum::routing::post(move |axum::Json(v): axum::Json<serde_json::Value>| {
            let kept = kept.clone();
            async move {
                kept.lock().unwrap().push(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/services/T000/B000/XXXX"), got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_run_the_stream_they_concern_and_runs_with_errors_are_notified() {
    // The organisation takes no USD: every Kantata invoice is refused and queued, so the run
    // ends with errors, which both receivers hear about.
    let sims = common::sims("auto-hooks", 3, Vec::new(), None).await;
    schedule(&sims, "every 1h");
    let (slack_url, posts) = slack().await;
    let sink = SmtpSink::start().await.unwrap();
    let ws = weft_engine::workspace::Workspace::find(&sims.dir).unwrap();
    let mut store = ws.secrets().unwrap();
    weft_server::webhooks::store_xero_key(&mut store, WEBHOOK_KEY).unwrap();
    notify::store_receiver(
        &mut store,
        "ops-slack",
        &Receiver::Webhook {
            url: slack_url.clone(),
        },
    )
    .unwrap();
    notify::store_receiver(
        &mut store,
        "ops-mail",
        &Receiver::Email {
            smtp: sink.url(),
            from: "weft@firm.example".into(),
            to: vec!["books@firm.example".into()],
        },
    )
    .unwrap();
    drop(store);
    Store::open(&sims.dir.join(".weft"))
        .unwrap()
        .add_user("alice", "correct horse battery", Role::Admin)
        .unwrap();

    let clock = SimClock::manual(real_now_ms());
    let seeded = sims.xero.invoices(&sims.tenant).len();
    let (report, mut reports) = mpsc::unbounded_channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(weft_server::serve_with(
        Config {
            workspace: sims.dir.clone(),
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: None,
            insecure_http: false,
            specs: common::specs(),
        },
        Automate {
            clock: Arc::new(TestClock(clock.clone())),
            poll: Duration::from_secs(60),
            report: Some(report),
        },
        move |addr| {
            let _ = ready_tx.send(addr);
        },
        async {
            let _ = stopped.await;
        },
    ));
    let addr = tokio::time::timeout(Duration::from_secs(30), ready_rx)
        .await
        .unwrap()
        .unwrap();

    // Never ran: the schedule runs it at start; every invoice is refused and queued.
    let (_, ended) = one_run(&mut reports).await;
    completed(&ended);
    // Told (the task sees the run end in the history, whoever started it): the webhook and the
    // mailbox got the same line.
    for _ in 0..300 {
        if !posts.lock().unwrap().is_empty() && !sink.mails().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let told = posts.lock().unwrap()[0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(told.contains("in the error queue"), "{told}");
    assert_eq!(posts.lock().unwrap().len(), 1);

    let mails = sink.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, vec!["books@firm.example".to_owned()]);
    assert_eq!(mails[0].from, "weft@firm.example");
    assert!(mails[0].data.contains("in the error queue"));

    // The organisation now takes USD; an hour later the scheduled run retries the queue and
    // writes the invoices; nothing to tell.
    assert!(sims.xero.enable_currency(&sims.tenant, "USD"));
    clock.advance(Duration::from_secs(3600 + 60));
    let (_, ended) = one_run(&mut reports).await;
    completed(&ended);
    assert!(sims.xero.invoices(&sims.tenant).len() > seeded);
    quiet(&mut reports).await;

    let hook = format!("http://{addr}/webhooks/xero");
    // A delivery signed with another key: 401, nothing runs.
    let forged = weft_harness::xero::webhook::WebhookSender::new(&hook, b"not the key");
    assert_eq!(forged.deliver(Vec::new()).await, Ok(401));
    // The intent-to-receive handshake: 200 for the good signatures, 401 for the others.
    let sender = weft_harness::xero::webhook::WebhookSender::new(&hook, WEBHOOK_KEY.as_bytes());
    for (good, status) in sender.intent_to_receive(4).await {
        assert_eq!(status, Ok(if good { 200 } else { 401 }));
    }
    quiet(&mut reports).await;

    // Someone pays an invoice in Xero: the simulator's signed event runs the stream reading
    // Xero invoices (payments), and only it, long before the next scheduled run; the payment
    // reaches Kantata once.
    let paid = sims.xero.invoices(&sims.tenant)[seeded]["InvoiceID"]
        .as_str()
        .unwrap()
        .to_owned();
    let payments = sims.kantata.external_payments().len();
    sims.xero.send_webhooks_to(&hook, WEBHOOK_KEY.as_bytes());
    sims.xero.pay_in_full(&sims.tenant, &paid).unwrap();
    let (started, ended) = one_run(&mut reports).await;
    assert_eq!(
        started,
        Happened::Started {
            flow: FLOW.into(),
            stream: Some("payments".into()),
            why: Why::Webhook("INVOICE".into())
        }
    );
    completed(&ended);
    assert_eq!(sims.xero.webhook_deliveries(), vec![Ok(200)]);
    assert_eq!(sims.kantata.external_payments().len(), payments + 1);

    // The same event delivered again (Xero retries until it gets a 200): answered 200,
    // handled once.
    let event = sims.xero.invoice_event(&sims.tenant, &paid, "UPDATE");
    assert_eq!(sender.deliver(vec![event.clone()]).await, Ok(200));
    let (_, ended) = one_run(&mut reports).await;
    completed(&ended);
    assert_eq!(sender.deliver(vec![event]).await, Ok(200));
    quiet(&mut reports).await;
    assert_eq!(sims.kantata.external_payments().len(), payments + 1);

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // The receivers' URLs are secrets: none of the reports shows them.
    let _ = std::fs::remove_dir_all(&sims.dir);
}

/// With the state on PostgreSQL the server runs nothing itself: the schedule queues the whole
/// flow, and a Xero event queues a job for its organisation and the stream it concerns, which
/// a worker then runs alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_webhook_queues_a_job_for_its_organisation_and_stream() {
    use weft_engine::queue::{Queue, QueueRules};
    let Some(db) = weft_harness::postgres::database("auto-queue") else {
        return;
    };
    let sims = common::sims("auto-queue", 2, vec!["USD".into()], None).await;
    schedule(&sims, "every 1h");
    let toml = sims.dir.join("weft.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.push_str(&format!("\n[state]\nurl = \"{}\"\n", db.url()));
    std::fs::write(&toml, text).unwrap();
    let clock = SimClock::manual(real_now_ms());
    let (mut task, mut reports) = automation(&sims, &clock, Notifier::new(Vec::new()).unwrap());
    let (trigger, triggers) = mpsc::channel(4);
    task.triggers = Some(triggers);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(task.run(async {
        let _ = stopped.await;
    }));
    let Happened::Enqueued {
        job: scheduled,
        why: Why::Schedule,
        ..
    } = next(&mut reports).await
    else {
        panic!("the schedule's run was not queued")
    };
    trigger
        .send(weft_server::webhooks::Trigger {
            category: "INVOICE".into(),
            tenant_id: sims.tenant.clone(),
            resource_id: "any".into(),
        })
        .await
        .unwrap();
    let Happened::Enqueued {
        job: hooked,
        merged: false,
        why: Why::Webhook(category),
        ..
    } = next(&mut reports).await
    else {
        panic!("the webhook's run was not queued")
    };
    assert_eq!(category, "INVOICE");
    let _ = stop.send(());
    handle.await.unwrap();

    let state = weft_engine::workspace::Workspace::find(&sims.dir)
        .unwrap()
        .open_state()
        .unwrap();
    let queue = Queue::open(&state, QueueRules::default()).unwrap();
    let whole = queue.job(scheduled).unwrap().unwrap();
    assert_eq!((whole.tenant.as_str(), whole.stream.as_str()), ("", ""));
    let narrow = queue.job(hooked).unwrap().unwrap();
    assert_eq!(
        (narrow.tenant.as_str(), narrow.stream.as_str()),
        (sims.tenant.as_str(), "payments")
    );
    assert_eq!(sims.xero.creates(&sims.tenant), 0, "nothing ran here");
    let _ = std::fs::remove_dir_all(&sims.dir);
}
