//! The server wrapper over real TCP on 127.0.0.1: logging, and each fault as a client sees it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use weft_harness::clock::SimClock;
use weft_harness::faults::{Fault, FaultRule, When};
use weft_harness::server::{Observed, Running};

/// Sends one raw HTTP/1.1 request and returns everything read until the server closes.
fn call(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nxero-tenant-id: t1\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn server() -> (Running, Observed) {
    let observed = Observed::new(SimClock::manual(1_000), 1, Some("xero-tenant-id"));
    let router = Router::new().route("/hello", get(|| async { "hello, world" }));
    (
        Running::start(router, 0, observed.clone()).unwrap(),
        observed,
    )
}

#[test]
fn serves_and_logs() {
    let (running, observed) = server();
    let answer = call(running.addr(), "/hello?x=1").unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("hello, world"), "{answer}");
    let log = observed.log.requests();
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].path.as_str(), log[0].query.as_str(), log[0].status),
        ("/hello", "x=1", 200)
    );
    assert_eq!(log[0].tenant.as_deref(), Some("t1"));
    assert_eq!(log[0].at_ms, 1_000);
    assert!(running.url().starts_with("http://127.0.0.1:"));
}

#[test]
fn faults_look_right_from_the_client() {
    let (running, observed) = server();
    let plan = &observed.faults;
    plan.add(FaultRule::on("/hello", When::Nth(1), Fault::Maintenance));
    plan.add(FaultRule::on("/hello", When::Nth(2), Fault::Reset));
    plan.add(FaultRule::on("/hello", When::Nth(3), Fault::Truncate));
    plan.add(FaultRule::on(
        "/hello",
        When::Nth(4),
        Fault::RateLimited {
            retry_after_secs: 66_975,
            problem: Some("day".into()),
        },
    ));
    plan.add(FaultRule::on("/hello", When::Nth(5), Fault::LoseResponse));

    let maintenance = call(running.addr(), "/hello").unwrap();
    assert!(maintenance.starts_with("HTTP/1.1 503"), "{maintenance}");
    let reset = call(running.addr(), "/hello").unwrap();
    assert_eq!(reset, "", "a reset connection answers nothing");
    let truncated = call(running.addr(), "/hello").unwrap();
    assert!(
        truncated.starts_with("HTTP/1.1 200") && truncated.contains("content-length: 12"),
        "{truncated}"
    );
    assert!(truncated.ends_with("hello,"), "{truncated}");
    let limited = call(running.addr(), "/hello").unwrap();
    assert!(limited.starts_with("HTTP/1.1 429"), "{limited}");
    assert!(
        limited.contains("retry-after: 66975") && limited.contains("x-rate-limit-problem: day"),
        "{limited}"
    );
    let lost = call(running.addr(), "/hello").unwrap();
    assert_eq!(lost, "");
    let fine = call(running.addr(), "/hello").unwrap();
    assert!(fine.ends_with("hello, world"));

    let statuses: Vec<u16> = observed.log.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 0, 0, 429, 0, 200]);
    assert_eq!(plan.fired(), 5);
    running.stop();
}

#[test]
fn slow_hanging_and_malformed_answers() {
    let (running, observed) = server();
    let plan = &observed.faults;
    plan.add(FaultRule::on(
        "/hello",
        When::Nth(1),
        Fault::Latency(Duration::from_millis(30)),
    ));
    plan.add(FaultRule::on(
        "/hello",
        When::Nth(2),
        Fault::Hang(Duration::from_millis(200)),
    ));
    plan.add(FaultRule::on("/hello", When::Nth(3), Fault::Malformed));
    plan.add(FaultRule::on(
        "/hello",
        When::Nth(4),
        Fault::Status {
            status: 502,
            body: "bad gateway".into(),
        },
    ));

    let slow = call(running.addr(), "/hello").unwrap();
    assert!(
        slow.ends_with("hello, world"),
        "latency delays but answers: {slow}"
    );
    let hung = call(running.addr(), "/hello").unwrap();
    assert_eq!(
        hung, "",
        "a hang ends with the connection dropped and no answer"
    );
    let malformed = call(running.addr(), "/hello").unwrap();
    assert!(malformed.starts_with("HTTP/1.1 200"), "{malformed}");
    let body = malformed.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(
        serde_json::from_str::<serde_json::Value>(body).is_err(),
        "the body must not parse: {body}"
    );
    let bad_gateway = call(running.addr(), "/hello").unwrap();
    assert!(
        bad_gateway.starts_with("HTTP/1.1 502") && bad_gateway.ends_with("bad gateway"),
        "{bad_gateway}"
    );

    let statuses: Vec<u16> = observed.log.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 0, 200, 502]);
}

/// On an event-driven clock, simulated time passes only in sleeps on it: a handler and a client
/// that both spend real time working (here, blocking their thread) leave every arrival and every
/// answer at the same simulated instant as if they took none.
#[test]
fn event_driven_clock_counts_only_sleeps_never_work() {
    const START: u64 = 1_000_000;
    let clock = SimClock::event_driven(START).unwrap();
    let observed = Observed::new(clock.clone(), 1, Some("xero-tenant-id"));
    let handler_clock = clock.clone();
    let router = Router::new().route(
        "/slow",
        get(move || {
            let clock = handler_clock.clone();
            async move {
                std::thread::sleep(Duration::from_millis(20));
                clock.sleep(Duration::from_secs(1)).await;
                std::thread::sleep(Duration::from_millis(20));
                "done"
            }
        }),
    );
    let running = Running::start(router, 0, observed.clone()).unwrap();
    let mut builder = tokio::runtime::Builder::new_current_thread();
    clock.track_runtime(&mut builder).enable_all();
    let rt = builder.build().unwrap();
    let url = format!("{}/slow", running.url());
    let answered = rt.block_on(async {
        let http = reqwest::Client::new();
        let get = |http: reqwest::Client, url: String| async move {
            http.get(url)
                .header("xero-tenant-id", "t1")
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        };
        let mut answered = Vec::new();
        let together: Vec<_> = (0..3)
            .map(|_| tokio::spawn(get(http.clone(), url.clone())))
            .collect();
        for call in together {
            assert_eq!(call.await.unwrap(), "done");
        }
        answered.push(clock.now_ms() - START);
        // The client works too; no time passes.
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(get(http.clone(), url.clone()).await, "done");
        answered.push(clock.now_ms() - START);
        answered
    });
    clock.untrack_runtime();
    let arrivals: Vec<u64> = observed
        .log
        .requests()
        .iter()
        .map(|r| r.at_ms - START)
        .collect();
    assert_eq!(arrivals, [0, 0, 0, 1_000]);
    assert_eq!(answered, [1_000, 2_000]);
}
