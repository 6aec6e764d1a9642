//! The executor against the simulators, on simulated time: retries, `Retry-After`, daily caps,
//! resets, and every failure classified by the spec's own rules.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use weft_core::Spec;
use weft_core::model::ErrorClass;
use weft_engine::http::{CallError, send};
use weft_engine::request::{Hosts, OpKind, Request, RequestContext, Tenant, build};
use weft_harness::faults::{Fault, FaultRule, When};
use weft_harness::kantata::{KantataConfig, KantataSim};
use weft_harness::xero::{XeroConfig, XeroLimits, XeroSim};

use common::{SimWait, shipped, xero_token};

fn with_auth(request: Request, spec: &Spec, token: &str) -> Request {
    request.with_token(spec.file(), token).unwrap()
}

fn kantata() -> (KantataSim, Spec, Hosts) {
    let sim = KantataSim::start(KantataConfig::default()).unwrap();
    let spec = shipped("kantata");
    let hosts = Hosts::new(
        spec.file(),
        &BTreeMap::from([("api".to_owned(), sim.api_url())]),
    )
    .unwrap();
    (sim, spec, hosts)
}

fn kantata_request(sim: &KantataSim, spec: &Spec, hosts: &Hosts, resource: &str) -> Request {
    let env = weft_core::template::environment();
    let ctx = RequestContext::with_field_defaults(spec.file());
    with_auth(
        build(&env, spec.file(), hosts, resource, OpKind::List, &ctx, &[]).unwrap(),
        spec,
        sim.personal_token(),
    )
}

#[tokio::test]
async fn transient_failures_and_resets_are_retried_with_backoff() {
    let (sim, spec, hosts) = kantata();
    sim.observed().faults.add(FaultRule::on(
        "/api/v1/workspaces",
        When::First(2),
        Fault::Maintenance,
    ));
    sim.observed().faults.add(FaultRule::on(
        "/api/v1/workspace_groups",
        When::First(1),
        Fault::Reset,
    ));
    let wait = SimWait::new(&sim.observed().clock);
    let client = weft_engine::http::client().unwrap();
    let mut rng = fastrand::Rng::with_seed(1);
    let request = kantata_request(&sim, &spec, &hosts, "workspaces");
    let answer = send(&client, spec.file(), &[], &request, None, &wait, &mut rng)
        .await
        .unwrap();
    assert_eq!((answer.status, answer.attempts), (200, 3));
    assert_eq!(wait.waits().len(), 2);
    let retry = &spec.file().limits.retry;
    assert!(
        wait.waits()[0] >= retry.initial_backoff.to_std() / 2
            && wait.waits()[0] <= retry.initial_backoff.to_std()
    );
    assert_eq!(answer.waited, wait.waits().iter().sum::<Duration>());

    let request = kantata_request(&sim, &spec, &hosts, "workspace_groups");
    let answer = send(&client, spec.file(), &[], &request, None, &wait, &mut rng)
        .await
        .unwrap();
    assert_eq!(answer.attempts, 2, "a reset connection is retried");
}

#[tokio::test]
async fn kantata_429_without_retry_after_backs_off_and_401_is_classified() {
    let (sim, spec, hosts) = kantata();
    sim.rate_limit_next(1);
    let wait = SimWait::new(&sim.observed().clock);
    let client = weft_engine::http::client().unwrap();
    let mut rng = fastrand::Rng::with_seed(2);
    let answer = send(
        &client,
        spec.file(),
        &[],
        &kantata_request(&sim, &spec, &hosts, "me"),
        None,
        &wait,
        &mut rng,
    )
    .await
    .unwrap();
    assert_eq!(answer.attempts, 2);

    let env = weft_core::template::environment();
    let ctx = RequestContext::with_field_defaults(spec.file());
    let bad = with_auth(
        build(&env, spec.file(), &hosts, "me", OpKind::List, &ctx, &[]).unwrap(),
        &spec,
        "not-a-token",
    );
    match send(&client, spec.file(), &[], &bad, None, &wait, &mut rng).await {
        Err(CallError::Refused {
            class,
            status,
            attempts,
            ..
        }) => {
            assert_eq!(
                (class, status, attempts),
                (ErrorClass::Unauthorized, 401, 1),
                "not retried"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn exhausted_retries_and_unreachable_hosts_fail_clearly() {
    let (sim, spec, hosts) = kantata();
    sim.observed().faults.add(FaultRule::on(
        "/api/v1/workspaces",
        When::Always,
        Fault::Status {
            status: 500,
            body: "{}".into(),
        },
    ));
    let wait = SimWait::new(&sim.observed().clock);
    let client = weft_engine::http::client().unwrap();
    let mut rng = fastrand::Rng::with_seed(3);
    let max = spec.file().limits.retry.max_attempts;
    match send(
        &client,
        spec.file(),
        &[],
        &kantata_request(&sim, &spec, &hosts, "workspaces"),
        None,
        &wait,
        &mut rng,
    )
    .await
    {
        Err(CallError::Refused {
            class: ErrorClass::Transient,
            attempts,
            ..
        }) => assert_eq!(attempts, max),
        other => panic!("{other:?}"),
    }
    assert_eq!(wait.waits().len() as u32, max - 1);

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let nowhere = Hosts::new(spec.file(), &BTreeMap::from([("api".to_owned(), url)])).unwrap();
    match send(
        &client,
        spec.file(),
        &[],
        &kantata_request(&sim, &spec, &nowhere, "me"),
        None,
        &wait,
        &mut rng,
    )
    .await
    {
        Err(CallError::Unreachable { attempts, .. }) => assert_eq!(attempts, max),
        other => panic!("{other:?}"),
    }

    sim.observed().faults.clear();
    sim.observed().faults.add(FaultRule::on(
        "/api/v1/users",
        When::First(1),
        Fault::Malformed,
    ));
    match send(
        &client,
        spec.file(),
        &[],
        &kantata_request(&sim, &spec, &hosts, "me"),
        None,
        &wait,
        &mut rng,
    )
    .await
    {
        Err(CallError::NotJson { status: 200, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn xero_minute_limit_waits_retry_after_and_day_cap_stops() {
    let limits = XeroLimits {
        per_minute: 3,
        per_day: 5,
        ..XeroLimits::default()
    };
    let sim = XeroSim::start(XeroConfig {
        limits,
        ..XeroConfig::default()
    })
    .unwrap();
    let spec = shipped("xero");
    let hosts = Hosts::new(
        spec.file(),
        &BTreeMap::from([
            ("api".to_owned(), sim.api_url()),
            ("identity".to_owned(), sim.identity_url()),
        ]),
    )
    .unwrap();
    let token = xero_token(&sim).await;
    let (tenant, name) = sim.tenants().into_iter().next().unwrap();
    let env = weft_core::template::environment();
    let ctx = RequestContext {
        tenant: Some(Tenant {
            id: tenant.clone(),
            name,
        }),
        ..RequestContext::with_field_defaults(spec.file())
    };
    let request = with_auth(
        build(
            &env,
            spec.file(),
            &hosts,
            "organisation",
            OpKind::List,
            &ctx,
            &[],
        )
        .unwrap(),
        &spec,
        &token,
    );
    let wait = SimWait::new(sim.clock());
    let client = weft_engine::http::client().unwrap();
    let mut rng = fastrand::Rng::with_seed(4);
    for _ in 0..3 {
        assert_eq!(
            send(&client, spec.file(), &[], &request, None, &wait, &mut rng)
                .await
                .unwrap()
                .attempts,
            1
        );
    }
    // The 4th call in the minute gets a 429; the executor waits exactly Retry-After on the
    // simulated clock, then succeeds.
    let answer = send(&client, spec.file(), &[], &request, None, &wait, &mut rng)
        .await
        .unwrap();
    assert_eq!(answer.attempts, 2);
    let waited = wait.waits();
    assert_eq!(waited.len(), 1);
    assert!(
        waited[0] > Duration::ZERO && waited[0] <= Duration::from_secs(60),
        "{waited:?}"
    );
    assert!(
        answer
            .headers
            .iter()
            .any(|(n, _)| n == "x-minlimit-remaining")
    );
    // Call 5 uses the last of the day; call 6 meets the daily cap: a clean stop, not a wait.
    send(&client, spec.file(), &[], &request, None, &wait, &mut rng)
        .await
        .unwrap();
    match send(&client, spec.file(), &[], &request, None, &wait, &mut rng).await {
        Err(CallError::DailyCap {
            budget,
            retry_after,
        }) => {
            assert_eq!(budget, "day");
            assert!(
                retry_after > Duration::from_secs(60 * 60),
                "{retry_after:?}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn xero_tenant_and_expiry_failures_carry_the_specs_messages() {
    let sim = XeroSim::start(XeroConfig::default()).unwrap();
    let spec = shipped("xero");
    let hosts = Hosts::new(
        spec.file(),
        &BTreeMap::from([("api".to_owned(), sim.api_url())]),
    )
    .unwrap();
    let token = xero_token(&sim).await;
    let env = weft_core::template::environment();
    let wrong = RequestContext {
        tenant: Some(Tenant {
            id: "00000000-0000-0000-0000-000000000000".into(),
            name: "nobody".into(),
        }),
        ..RequestContext::default()
    };
    let request = with_auth(
        build(
            &env,
            spec.file(),
            &hosts,
            "organisation",
            OpKind::List,
            &wrong,
            &[],
        )
        .unwrap(),
        &spec,
        &token,
    );
    let client = weft_engine::http::client().unwrap();
    let wait = SimWait::new(sim.clock());
    let mut rng = fastrand::Rng::with_seed(5);
    match send(&client, spec.file(), &[], &request, None, &wait, &mut rng).await {
        Err(CallError::Refused {
            class: ErrorClass::Tenant,
            status: 403,
            message,
            ..
        }) => {
            assert!(message.contains("xero-tenant-id"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let (tenant, name) = sim.tenants().into_iter().next().unwrap();
    let ctx = RequestContext {
        tenant: Some(Tenant { id: tenant, name }),
        ..RequestContext::default()
    };
    let request = with_auth(
        build(
            &env,
            spec.file(),
            &hosts,
            "organisation",
            OpKind::List,
            &ctx,
            &[],
        )
        .unwrap(),
        &spec,
        &token,
    );
    sim.clock().advance(Duration::from_secs(31 * 60));
    match send(&client, spec.file(), &[], &request, None, &wait, &mut rng).await {
        Err(CallError::Refused {
            class: ErrorClass::TokenExpired,
            status: 401,
            attempts: 1,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}
