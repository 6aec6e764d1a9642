//! A connection's own field values reach its requests and its budgets: QuickBooks' minor version
//! is sent with every call, HubSpot's burst limit sizes the calls let through per 10 seconds.
//! Both run the real `weft` binary against the simulators, on the wall clock (like the binary).

mod common;

use std::process::Output;

use common::{Sandbox, authorize, callback, err, free_port, out, read};
use weft_harness::clock::SimClock;
use weft_harness::hubspot::{HubSpotConfig, HubSpotLimits, HubSpotSim};
use weft_harness::quickbooks::{QuickBooksConfig, QuickBooksSim};

fn ok(o: &Output) {
    assert!(o.status.success(), "{}", err(o));
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `--field minor_version=76` on a QuickBooks connection: the connection test and a read send
/// `minorversion=76`, not the spec's default 75.
#[test]
fn quickbooks_minor_version_of_the_connection_reaches_every_call() {
    let port = free_port();
    let sim = QuickBooksSim::start(QuickBooksConfig {
        size: 5,
        companies: 1,
        clock: SimClock::scaled(now_ms(), 1),
        redirect_uris: vec![callback(port)],
        ..QuickBooksConfig::default()
    })
    .unwrap();
    let s = Sandbox::new("fields-qbo");
    ok(&s.run(&["init"], None));
    s.guard(sim.client_secret());
    s.add_client(
        "qapp",
        "quickbooks",
        sim.client_id(),
        &format!("{}\n", sim.client_secret()),
    );
    let hosts: Vec<String> = sim
        .hosts()
        .into_iter()
        .map(|(name, url)| format!("{name}={url}"))
        .collect();
    let mut args = vec![
        "connection",
        "create",
        "qbo",
        "--connector",
        "quickbooks",
        "--client",
        "qapp",
        "--field",
        "minor_version=76",
    ];
    for h in &hosts {
        args.extend(["--host", h.as_str()]);
    }
    ok(&s.run(&args, None));
    assert!(read(&s.project().join("weft.toml")).contains("minor_version = \"76\""));
    let (code, _, stderr) = authorize(&s, "qbo", port, &[]);
    assert_eq!(code, 0, "{stderr}");

    ok(&s.run(&["connection", "test", "qbo"], None));
    let listed = s.run(&["read", "qbo", "customers", "--limit", "3"], None);
    ok(&listed);
    assert_eq!(out(&listed).lines().count(), 3, "{}", out(&listed));

    let calls: Vec<String> = sim
        .observed()
        .log
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/v3/company/"))
        .map(|r| r.query)
        .collect();
    assert!(calls.len() >= 2, "{calls:?}");
    for query in &calls {
        assert!(
            query.split('&').any(|p| p == "minorversion=76"),
            "a call without the connection's minor version: {query}"
        );
    }
    s.assert_none_of(sim.issued_tokens());
}

/// `--field burst_limit=190` on a HubSpot connection (a Professional account): one read of 150
/// pages is let through within 10 seconds instead of being held to the default 100 per 10 s,
/// and never beyond 190; a value beyond the field's range is refused with its rule.
#[test]
fn hubspot_burst_limit_of_the_connection_sizes_its_budget() {
    let sim = HubSpotSim::start(HubSpotConfig {
        size: 20_000,
        clock: SimClock::scaled(now_ms(), 1),
        limits: HubSpotLimits {
            burst_per_10s: 190,
            ..HubSpotLimits::default()
        },
        ..HubSpotConfig::default()
    })
    .unwrap();
    let portal = sim.portals()[0];
    let token = sim.private_app_token(portal).unwrap().to_owned();
    let s = Sandbox::new("fields-hubspot");
    s.guard(&token);
    ok(&s.run(&["init"], None));
    let app = format!("app={}", sim.app_url());
    let api = format!("api={}", sim.api_url());
    let create = |burst: &str| {
        s.run(
            &[
                "connection",
                "create",
                "h",
                "--connector",
                "hubspot",
                "--method",
                "token",
                "--host",
                &app,
                "--host",
                &api,
                "--field",
                burst,
                "--token-stdin",
            ],
            Some(&format!("{token}\n")),
        )
    };
    let over = create("burst_limit=300");
    assert_eq!(over.status.code(), Some(1));
    assert!(
        err(&over).contains("Calls per 10 seconds") && err(&over).contains("250"),
        "{}",
        err(&over)
    );
    ok(&create("burst_limit=190"));

    let pages = 150;
    let listed = s.run(
        &[
            "read",
            "h",
            "line_items",
            "--limit",
            &(pages * 100).to_string(),
        ],
        None,
    );
    ok(&listed);
    assert_eq!(out(&listed).lines().count(), pages * 100);
    let log = &sim.observed().log;
    assert!(log.count("GET", "/crm/v3/objects/line_items") >= pages);
    let most = log.max_in_window(None, 10_000);
    // Held to the spec's default, no 10 seconds would see more than 100 of them. (Not a higher
    // floor: the calls' pace is this machine's, and a busy machine is slower.)
    assert!(
        most > 100 && most <= 190,
        "{most} calls in the busiest 10 seconds"
    );
    assert_eq!(
        log.requests().iter().filter(|r| r.status == 429).count(),
        0,
        "the simulator's own limit of 190 was never reached"
    );
}
