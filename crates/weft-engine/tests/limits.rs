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
    let lender = Limiter::shared(spec.file(), 2, &dir, &Default::default());
    let borrower = Limiter::shared(spec.file(), 2, &dir, &Default::default());
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

/// A spec whose limits depend on the operation and on the account: a rolling 10-second budget
/// sized by a form field (the plan's tier), a search endpoint's own budget, and a daily cap,
/// each named by the 429's body (`policyName`).
const TIERS: &str = r#"
id = "tiers"
name = "Tiers"
version = "1.0.0"

[hosts]
api = "https://api.example.com"

[auth.token]
value = "{{ fields.token }}"

[[fields]]
id = "token"
label = "Token"
secret = true
required = true

[[fields]]
id = "calls_per_10s"
label = "Calls per 10 seconds (your plan)"
type = "integer"
min = 100
max = 190
default = 100

[requests]
host = "api"

[limits]
problem-body = "policyName"

[[limits.budget]]
name = "rolling"
scope = "connection"
calls = 100
window = "10s"
calls-field = "calls_per_10s"
problem = "TEN_SECONDLY_ROLLING"

[[limits.budget]]
name = "search"
scope = "connection"
calls = 4
window = "1s"
operations = ["deal_search.list"]

[[limits.budget]]
name = "daily"
scope = "connection"
calls = 250000
window = "1d"
on-exhausted = "checkpoint"
problem = "DAILY"

[test]
resource = "deals"

[resources.deals]
primary-key = "id"

[resources.deals.list]
path = "/deals"
records = { style = "path", path = "results" }
pagination = { style = "none" }

[resources.deal_search]
primary-key = "id"

[resources.deal_search.list]
method = "POST"
path = "/deals/search"
records = { style = "path", path = "results" }
pagination = { style = "none" }
"#;

fn tiers() -> Spec {
    let report = weft_core::load_str("tiers.toml", TIERS);
    assert!(report.diagnostics.is_empty(), "{}", report.render());
    report.spec.unwrap()
}

/// Calls at once until one has to wait; how many went through, and the first wait.
async fn burst(
    limiter: &Limiter,
    operation: &str,
    clock: &SimWait,
    most: usize,
) -> (usize, Option<Duration>) {
    for n in 0..most {
        let before = clock.waits().len();
        drop(
            limiter
                .acquire_for(None, Some(operation), clock)
                .await
                .unwrap(),
        );
        if clock.waits().len() > before {
            return (n, clock.waits().get(before).copied());
        }
    }
    (most, None)
}

/// The rolling budget takes the size of the person's tier from its form field (the field's
/// default without a value), and a search endpoint's own budget counts only its calls.
#[tokio::test]
async fn budgets_per_operation_and_sized_by_a_form_field() {
    let spec = tiers();
    let clock = SimWait::new(&weft_harness::clock::SimClock::manual(0));

    let default = Limiter::new(spec.file(), 10);
    assert_eq!(
        burst(&default, "deals.list", &clock, 500).await,
        (100, Some(Duration::from_secs(10))),
        "the field's default: 100 calls per 10 s"
    );

    let clock = SimWait::new(&weft_harness::clock::SimClock::manual(0));
    let fields = BTreeMap::from([("calls_per_10s".to_owned(), serde_json::json!(190))]);
    let higher = Limiter::with_fields(spec.file(), 10, &fields);
    assert_eq!(
        burst(&higher, "deals.list", &clock, 500).await,
        (190, Some(Duration::from_secs(10))),
        "the higher tier: 190 calls per 10 s"
    );

    let clock = SimWait::new(&weft_harness::clock::SimClock::manual(0));
    let limiter = Limiter::with_fields(spec.file(), 10, &fields);
    assert_eq!(
        burst(&limiter, "deal_search.list", &clock, 50).await,
        (4, Some(Duration::from_secs(1))),
        "the search endpoint's own 4 per second"
    );
    assert_eq!(
        burst(&limiter, "deals.list", &clock, 50).await,
        (50, None),
        "other operations do not count against the search budget"
    );
}

/// The limit a 429 names in its body decides what happens: a rolling window is waited out
/// (its whole window when no `Retry-After` says otherwise) and the call goes through; the daily
/// cap stops with `DailyCap` instead of waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_naming_its_policy_in_the_body_waits_or_stops() {
    use weft_engine::http::CallError;

    let spec = tiers();
    let server = common::local::Server::start();
    let hosts = Hosts::new(
        spec.file(),
        &BTreeMap::from([("api".to_owned(), server.url())]),
    )
    .unwrap();
    let env = weft_core::template::environment();
    let ctx = RequestContext::with_field_defaults(spec.file());
    let request = build(&env, spec.file(), &hosts, "deals", OpKind::List, &ctx, &[]).unwrap();
    let clock = SimWait::new(&weft_harness::clock::SimClock::manual(0));
    let http = client().unwrap();
    let mut rng = fastrand::Rng::with_seed(1);

    server.answer(
        429,
        serde_json::json!({"status": "error", "message": "You have reached your ten_secondly_rolling limit.", "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING"}),
    );
    server.answer(200, serde_json::json!({"results": [{"id": "1"}]}));
    let answer = send(&http, spec.file(), &[], &request, None, &clock, &mut rng)
        .await
        .unwrap();
    assert_eq!(answer.attempts, 2);
    assert_eq!(clock.waits(), [Duration::from_secs(10)]);

    server.answer_with(
        429,
        serde_json::json!({"status": "error", "message": "You have reached your daily limit.", "errorType": "RATE_LIMIT", "policyName": "DAILY"}),
        &[("Retry-After", "3600")],
    );
    let err = send(&http, spec.file(), &[], &request, None, &clock, &mut rng)
        .await
        .unwrap_err();
    match err {
        CallError::DailyCap {
            budget,
            retry_after,
        } => {
            assert_eq!(budget, "daily");
            assert_eq!(retry_after, Duration::from_secs(3600));
        }
        other => panic!("expected a daily cap, got {other}"),
    }
    assert_eq!(clock.waits().len(), 1, "the daily cap is not waited out");
}

/// Two workers of a fleet — two limiters, as two processes would build them, counting in one
/// store — stay under the organisation's minute together: 60 calls, not twice that.
#[tokio::test]
async fn two_workers_of_a_fleet_share_the_minute_budget() {
    use weft_engine::limits::MemoryBudgets;
    share_the_minute_budget(Arc::new(MemoryBudgets::default())).await;
}

/// The same on the PostgreSQL store a fleet's workers share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_of_a_fleet_share_the_minute_budget_on_postgres() {
    let Some((_db, _state, store)) = pg_store("minute") else {
        return;
    };
    share_the_minute_budget(store).await;
}

/// A fresh PostgreSQL database holding a state, and the fleet's budgets in it.
fn pg_store(
    label: &str,
) -> Option<(
    weft_harness::postgres::TestDb,
    weft_engine::state::State,
    Arc<dyn weft_engine::limits::BudgetStore>,
)> {
    let db = weft_harness::postgres::database(label)?;
    let dir = tempfile::tempdir().unwrap();
    let state =
        weft_engine::state::State::open_postgres(db.url(), &dir.path().join("state.db")).unwrap();
    let store = weft_engine::fleet::PgBudgets::new(state.postgres().unwrap()).unwrap();
    Some((db, state, Arc::new(store)))
}

async fn share_the_minute_budget(store: Arc<dyn weft_engine::limits::BudgetStore>) {
    let (sim, spec, request, tenant) = setup(XeroConfig::default()).await;
    let clock = SimWait::new(sim.clock());
    let workers: Vec<Limiter> = (0..2)
        .map(|_| Limiter::new(spec.file(), 5).in_fleet(store.clone(), "xero/app"))
        .collect();
    let http = client().unwrap();
    let mut rng = fastrand::Rng::with_seed(3);
    for call in 0..150 {
        let limiter = &workers[call % 2];
        let permit = limiter.acquire(Some(&tenant), &clock).await.unwrap();
        let answer = send(&http, spec.file(), &[], &request, None, &clock, &mut rng)
            .await
            .unwrap();
        // The call's end and Xero's "remaining" counts, as the session settles them.
        limiter.answered(permit, Some(&tenant), &answer.headers, &clock);
    }
    let log = &sim.observed().log;
    assert!(
        log.requests().iter().all(|r| r.status == 200),
        "no 429: the fleet never spent more than the organisation allows"
    );
    let per_minute = log.max_in_window(Some(&tenant), 60_000);
    assert!(per_minute <= 60, "{per_minute}");
}

/// The same fleet's workers, each running five tasks, keep at most 5 calls in flight for the
/// organisation together (10 would be in flight with a store each).
#[tokio::test]
async fn two_workers_of_a_fleet_share_the_in_flight_budget() {
    use weft_engine::limits::MemoryBudgets;
    share_the_in_flight_budget(Arc::new(MemoryBudgets::default())).await;
}

/// The same on the PostgreSQL store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_of_a_fleet_share_the_in_flight_budget_on_postgres() {
    let Some((_db, _state, store)) = pg_store("in_flight") else {
        return;
    };
    share_the_in_flight_budget(store).await;
}

async fn share_the_in_flight_budget(store: Arc<dyn weft_engine::limits::BudgetStore>) {
    let config = XeroConfig {
        limits: XeroLimits {
            per_minute: 100_000,
            app_per_minute: 100_000,
            ..XeroLimits::default()
        },
        latency: Some(Duration::from_millis(15)),
        ..XeroConfig::default()
    };
    let (sim, spec, request, tenant) = setup(config).await;
    let shared = Arc::new((spec, request, tenant.clone(), sim.clock().clone()));
    let mut tasks = Vec::new();
    for n in 0..2u64 {
        let limiter = Limiter::new(shared.0.file(), 5).in_fleet(store.clone(), "xero/app");
        for task in 0..5u64 {
            let (limiter, shared) = (limiter.clone(), shared.clone());
            tasks.push(tokio::spawn(async move {
                let (spec, request, tenant, clock) = &*shared;
                let clock = SimWait::new(clock);
                let http = client().unwrap();
                let mut rng = fastrand::Rng::with_seed(n * 10 + task);
                // The slots are waited for in real time, as a fleet's workers do: a simulated
                // wait that advanced the shared clock at every poll would, under load, carry it
                // past the access token's 30 minutes.
                let wall = weft_engine::limits::SystemClock;
                for _ in 0..4 {
                    let permit = limiter.acquire(Some(tenant), &wall).await.unwrap();
                    let answer = send(&http, spec.file(), &[], request, None, &clock, &mut rng)
                        .await
                        .unwrap();
                    assert_eq!(answer.attempts, 1);
                    permit.answered(&wall);
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let log = &sim.observed().log;
    assert_eq!(log.requests().len(), 40);
    let in_flight = log.max_in_flight(Some(&tenant));
    assert!((2..=5).contains(&in_flight), "{in_flight}");
}

/// The memory store's rules, which a fleet's store follows too: a full window says when it
/// frees, an answered call moves to its answer, the provider's count tops a window up, slots are
/// taken once and given back.
#[test]
fn the_memory_store_counts_windows_and_slots() {
    store_rules(&weft_engine::limits::MemoryBudgets::default());
}

/// The PostgreSQL store follows the same rules; and a slot held by a worker whose heartbeat
/// stopped (killed) is free again, while a live worker's is not.
#[test]
fn the_postgres_store_counts_windows_and_slots_and_frees_a_dead_workers_slots() {
    let Some((db, _state, store)) = pg_store("rules") else {
        return;
    };
    store_rules(&*store);
    db.execute(
        "INSERT INTO weft_workers (id, host, pid, beat) VALUES ('dead', 'h', 1, clock_timestamp() - interval '1 minute'), ('alive', 'h', 2, clock_timestamp() + interval '1 hour');
         INSERT INTO weft_budget_slots (key, slot, holder) VALUES ('d', 0, 'dead'), ('d', 1, 'alive')",
    )
    .unwrap();
    assert_eq!(
        store.take_slot("d", 2, 0).unwrap(),
        Some(0),
        "the dead worker's slot"
    );
    assert_eq!(
        store.take_slot("d", 2, 0).unwrap(),
        None,
        "the live one's is held"
    );
    let rows = db
        .query("SELECT holder FROM weft_budget_slots WHERE key = 'd' ORDER BY slot")
        .unwrap();
    assert_eq!(rows[1][0].as_deref(), Some("alive"));
    assert_ne!(rows[0][0].as_deref(), Some("dead"));
}

fn store_rules(store: &dyn weft_engine::limits::BudgetStore) {
    use weft_engine::limits::Taken;
    let Taken::Counted(first) = store.take_call("k", 2, 1_000, 100).unwrap() else {
        panic!("room for the first call")
    };
    assert!(matches!(
        store.take_call("k", 2, 1_000, 200),
        Ok(Taken::Counted(_))
    ));
    assert_eq!(
        store.take_call("k", 2, 1_000, 300).unwrap(),
        Taken::FullUntil(1_100)
    );
    store.answered("k", first, 600).unwrap();
    assert_eq!(
        store.take_call("k", 2, 1_000, 700).unwrap(),
        Taken::FullUntil(1_200)
    );
    assert!(matches!(
        store.take_call("k", 2, 1_000, 1_200),
        Ok(Taken::Counted(_))
    ));
    store.observe("other", 3, 1_000, 0).unwrap();
    assert_eq!(
        store.take_call("other", 3, 1_000, 10).unwrap(),
        Taken::FullUntil(1_000)
    );
    assert_eq!(store.take_slot("s", 2, 0).unwrap(), Some(0));
    assert_eq!(store.take_slot("s", 2, 0).unwrap(), Some(1));
    assert_eq!(store.take_slot("s", 2, 0).unwrap(), None);
    store.release_slot("s", 0).unwrap();
    assert_eq!(store.take_slot("s", 2, 0).unwrap(), Some(0));

    // A call's end at once: its stamp moved to its answer, its slot given back, the
    // provider's count applied.
    let Taken::Counted(call) = store.take_call("m", 1, 1_000, 0).unwrap() else {
        panic!("room for the call")
    };
    assert_eq!(store.take_slot("t", 1, 0).unwrap(), Some(0));
    let seen = weft_engine::limits::Seen {
        key: "n".into(),
        used: 2,
        window_ms: 1_000,
    };
    store
        .settle(&[("m".into(), call)], &[("t".into(), 0)], &[seen], 500)
        .unwrap();
    assert_eq!(
        store.take_call("m", 1, 1_000, 900).unwrap(),
        Taken::FullUntil(1_500),
        "counted from its answer"
    );
    assert_eq!(store.take_slot("t", 1, 0).unwrap(), Some(0), "given back");
    assert_eq!(
        store.take_call("n", 2, 1_000, 600).unwrap(),
        Taken::FullUntil(1_500),
        "the provider's two calls"
    );
}

/// Many takers at once never share a window's last call or a slot: in each of 5 rounds, 8
/// threads released together take 4 times each from a window of 10 calls and get exactly 10,
/// and from 3 slots exactly 3, each once.
#[test]
fn the_memory_store_holds_under_concurrent_takers() {
    concurrent_takers(&weft_engine::limits::MemoryBudgets::default());
}

/// The same on PostgreSQL, each taker a statement of its own on a pooled connection.
#[test]
fn the_postgres_store_holds_under_concurrent_takers() {
    let Some((_db, _state, store)) = pg_store("concurrent") else {
        return;
    };
    concurrent_takers(&*store);
}

fn concurrent_takers(store: &dyn weft_engine::limits::BudgetStore) {
    use weft_engine::limits::Taken;
    const THREADS: usize = 8;
    const ROUNDS: usize = 5;
    let start = std::sync::Barrier::new(THREADS);
    // What one taker got in one round: its calls, its slots.
    type Round = (Vec<Taken>, Vec<Option<i64>>);
    // Per taker, per round.
    let got: Vec<Vec<Round>> = std::thread::scope(|scope| {
        let takers: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| {
                    (0..ROUNDS)
                        .map(|round| {
                            start.wait();
                            let mut got = (Vec::new(), Vec::new());
                            for i in 0..4 {
                                let key = format!("burst-{round}");
                                got.0
                                    .push(store.take_call(&key, 10, 60_000, 1_000 + i).unwrap());
                                let key = format!("lanes-{round}");
                                got.1.push(store.take_slot(&key, 3, 0).unwrap());
                            }
                            got
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        takers.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for round in 0..ROUNDS {
        let calls: Vec<Taken> = got.iter().flat_map(|t| t[round].0.clone()).collect();
        let slots: Vec<Option<i64>> = got.iter().flat_map(|t| t[round].1.clone()).collect();
        let counted: std::collections::BTreeSet<i64> = calls
            .iter()
            .filter_map(|t| match t {
                Taken::Counted(stamp) => Some(*stamp),
                Taken::FullUntil(_) => None,
            })
            .collect();
        assert_eq!(
            calls
                .iter()
                .filter(|t| matches!(t, Taken::Counted(_)))
                .count(),
            10,
            "round {round}: {calls:?}"
        );
        assert_eq!(counted.len(), 10, "each stamp once");
        assert!(
            calls
                .iter()
                .all(|t| matches!(t, Taken::Counted(_) | Taken::FullUntil(61_000..=61_003))),
            "a full window frees when its oldest call leaves: {calls:?}"
        );
        let mut held: Vec<i64> = slots.iter().flatten().copied().collect();
        held.sort_unstable();
        assert_eq!(held, vec![0, 1, 2], "round {round}: {slots:?}");
    }
}
