//! The limiter against the Xero simulator at its default limits, on simulated time: never a
//! 429, never more than 5 calls in flight or 60 in a minute for an organisation, and a daily cap
//! that stops instead of waiting.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use weft_core::Spec;
use weft_engine::http::{client, send};
use weft_engine::limits::{Clock, LimitError, Limiter};
use weft_engine::request::{Hosts, OpKind, Request, RequestContext, Tenant, build};
use weft_harness::xero::{XeroConfig, XeroLimits, XeroSim};

use common::{SimWait, shipped, xero_token};

async fn setup(config: XeroConfig) -> (XeroSim, Spec, Request, String) {
    let sim = XeroSim::start(config).unwrap();
    let spec = shipped("xero");
    let hosts = Hosts::new(
        spec.file(),
        &BTreeMap::from([("api".to_owned(), sim.api_url())]),
    )
    .unwrap();
    let token = xero_token(&sim).await;
    let (tenant, name) = sim.tenants().into_iter().next().unwrap();
    let ctx = RequestContext {
        tenant: Some(Tenant {
            id: tenant.clone(),
            name,
        }),
        ..RequestContext::with_field_defaults(spec.file())
    };
    let env = weft_core::template::environment();
    let mut request = build(
        &env,
        spec.file(),
        &hosts,
        "organisation",
        OpKind::List,
        &ctx,
        &[],
    )
    .unwrap();
    request
        .headers
        .push(("Authorization".into(), format!("Bearer {}", token)));
    (sim, spec, request, tenant)
}

#[tokio::test]
async fn a_long_read_stays_under_the_minute_budget_without_a_429() {
    let (sim, spec, request, tenant) = setup(XeroConfig::default()).await;
    let clock = SimWait::new(sim.clock());
    let limiter = Limiter::new(spec.file(), 5);
    let http = client().unwrap();
    let mut rng = fastrand::Rng::with_seed(1);
    let started = clock.now_ms();
    for _ in 0..150 {
        let permit = limiter.acquire(Some(&tenant), &clock).await.unwrap();
        let answer = send(&http, spec.file(), &[], &request, None, &clock, &mut rng)
            .await
            .unwrap();
        assert_eq!(answer.attempts, 1, "no call needed a retry");
        limiter.observe(Some(&tenant), &answer.headers, &clock);
        drop(permit);
    }
    let log = &sim.observed().log;
    assert!(
        log.requests().iter().all(|r| r.status == 200),
        "no 429 at default settings"
    );
    assert!(
        log.max_in_window(Some(&tenant), 60_000) <= 60,
        "{}",
        log.max_in_window(Some(&tenant), 60_000)
    );
    let elapsed = clock.now_ms() - started;
    assert!(
        (120_000..=150_000).contains(&elapsed),
        "150 calls at 60 a minute take a little over two simulated minutes: {elapsed}"
    );
}

#[tokio::test]
async fn many_tasks_never_exceed_five_in_flight_for_an_organisation() {
    let limits = XeroLimits {
        per_minute: 100_000,
        app_per_minute: 100_000,
        ..XeroLimits::default()
    };
    let config = XeroConfig {
        limits,
        latency: Some(Duration::from_millis(15)),
        ..XeroConfig::default()
    };
    let (sim, spec, request, tenant) = setup(config).await;
    let limiter = Limiter::new(spec.file(), 25);
    let shared = Arc::new((spec, request, tenant.clone(), sim.clock().clone()));
    let mut tasks = Vec::new();
    for worker in 0..12u64 {
        let (limiter, shared) = (limiter.clone(), shared.clone());
        tasks.push(tokio::spawn(async move {
            let (spec, request, tenant, clock) = &*shared;
            let clock = SimWait::new(clock);
            let http = client().unwrap();
            let mut rng = fastrand::Rng::with_seed(worker);
            for _ in 0..4 {
                let _permit = limiter.acquire(Some(tenant), &clock).await.unwrap();
                let answer = send(&http, spec.file(), &[], request, None, &clock, &mut rng)
                    .await
                    .unwrap();
                assert_eq!(answer.attempts, 1);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let log = &sim.observed().log;
    assert_eq!(log.requests().len(), 48);
    assert!(
        log.max_in_flight(Some(&tenant)) <= 5,
        "{}",
        log.max_in_flight(Some(&tenant))
    );
    assert!(
        log.max_in_flight(Some(&tenant)) >= 2,
        "the tasks did run side by side"
    );
}

#[tokio::test]
async fn a_spent_daily_budget_stops_instead_of_waiting() {
    let (sim, spec, _request, tenant) = setup(XeroConfig::default()).await;
    let mut file = spec.file().clone();
    let day = file
        .limits
        .budget
        .iter_mut()
        .find(|b| b.name == "day")
        .unwrap();
    day.calls = Some(3);
    let clock = SimWait::new(sim.clock());
    let limiter = Limiter::new(&file, 5);
    for _ in 0..3 {
        drop(limiter.acquire(Some(&tenant), &clock).await.unwrap());
    }
    let before = clock.now_ms();
    match limiter.acquire(Some(&tenant), &clock).await {
        Err(LimitError::Exhausted { budget, free_at_ms }) => {
            assert_eq!(budget, "day");
            assert!(free_at_ms >= before + 86_000_000, "{free_at_ms}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(clock.now_ms(), before, "it did not wait");
    // Another organisation has its own budget.
    assert!(
        limiter
            .acquire(Some("another-organisation"), &clock)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_borrower_draws_from_its_lenders_pool_in_this_process_and_across_processes() {
    use futures_util::FutureExt as _;
    let spec = shipped("kantata");
    let clock = weft_engine::limits::SystemClock;
    let dir = std::env::temp_dir().join(format!("weft-pool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // The lender has 2 slots; the borrower's own level is ignored: it draws from the pool.
    let lender = Limiter::shared(spec.file(), 2, &dir);
    let borrower = Limiter::shared(spec.file(), 2, &dir);
    let a = lender.acquire(None, &clock).await.unwrap();
    let b = borrower.acquire(None, &clock).await.unwrap();
    assert!(
        borrower.acquire(None, &clock).now_or_never().is_none(),
        "together they get the lender's level, not twice it"
    );
    drop(a);
    let c = borrower.acquire(None, &clock).await.unwrap();
    drop((b, c));

    // Another process holds both slots (its locks on the slot files): this one waits.
    let held: Vec<_> = (0..2)
        .map(|i| {
            weft_engine::files::LockFile::try_acquire(&dir.join(format!("slot-{i}.lock")))
                .unwrap()
                .unwrap()
        })
        .collect();
    let waiting = tokio::spawn({
        let borrower = borrower.clone();
        async move { borrower.acquire(None, &clock).await.map(|_| ()) }
    });
    // It cannot finish while the slots are held, however long it is given.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished());
    drop(held);
    waiting.await.unwrap().unwrap();
    std::fs::remove_dir_all(&dir).ok();
}
