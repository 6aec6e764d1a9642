//! Weft against Xero's rate-limit ceilings, on the simulators (127.0.0.1).
//!
//! B1 and B2 run on an event-driven clock ([`SimClock::event_driven`]) shared by the simulators
//! and the engine: simulated time stands still while any of them works (a thread running, bytes
//! on their way through a socket) and jumps to the next deadline when all of them wait. Every
//! Xero call takes a modelled latency ([`XERO_LATENCY`], slept on that clock inside the call's
//! concurrency slot) and Kantata answers at once; nothing else takes simulated time, so neither
//! the simulators' CPU time nor the engine's, nor the machine's load, moves the figures. The real
//! time of each row is reported beside them (that one does depend on load).
//!
//! Each ceiling is what the simulator's limits allow together: at most 60 calls in any minute
//! (and 5,000 a day, 10,000 a minute per app), at most 5 in flight, each taking the modelled
//! latency. A client that must never cause a 429 cannot know when, between sending a call and
//! its answer, the provider counted it, so it keeps the call in the window until the answer (as
//! Weft's limiter does): the ceiling's least time is the schedule where every call starts as
//! early as those rules permit (for B1, every Xero call of the sync run: the contacts it lists
//! and creates share the organisation's limits with the invoices). The figure is that least time
//! over the time the calls took, both from arrival to arrival at the simulator. The detail also gives the least time and the share under
//! the simulator's own rule (a call counted from its arrival), which no client can aim at without
//! risking 429s; the two differ by one latency per minute window.
//!
//! 1. B1, creation: the Kantata → Xero sync creating invoices at Xero's default limits (50 per
//!    call). Reports create calls, invoices created, 429s, the most calls in flight and in any
//!    simulated minute, and the fraction of the ceiling.
//! 2. B2, reading: 100,000 (and 1,000,000) invoices, pages of 1,000, at Xero's default limits.
//!    Reports calls, 429s, the most calls in flight and in any simulated minute, and the fraction
//!    of the ceiling.
//! 3. B3: Kantata invoices read per second on the wall clock with 50 ms latency per answer.
//! 4. B4, memory: the reader runs in a child process (so the simulator's memory is not counted)
//!    against an unlimited simulator, for 10k, 100k and 1M invoices; reports peak RSS and CPU
//!    time per record.
//! 5. B5: cold start and spec loading. B6: the simulators' own speed.
//! 6. B7: peak memory of a flow run over a backlog of invoices (10,000 and 100,000; the sync in
//!    a child process, the simulators in this one, Xero's limits lifted), flat with its size.
//! 7. B10: the state's write intent begin + finish pairs per second, on the SQLite file and on
//!    PostgreSQL over loopback (skipped without PostgreSQL).
//! 8. B11: a fleet syncing 10,000 organisations hourly against the app-wide 10,000 calls a
//!    minute (`ceilings/fleet_sim.rs`): the workers needed and the fleet's throughput as a share of that
//!    ceiling from a discrete-event model of the limiter's rules, and the database's round
//!    trips per call through `PgBudgets`, measured on PostgreSQL (skipped without it); and a
//!    scheduling turn over 10,000 scheduled flow files: its round trips and time.
//!
//! `cargo bench -p weft-engine --bench ceilings` (add `-- --quick` for smaller sizes, `--only B1,B2`
//! for some rows, `--latency-ms N` for another Xero latency in B1 and B2, `--trace` to list B1's
//! Xero calls on the simulated clock: where its time goes).

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

// Beside this file in a folder of its own: cargo takes every file directly in `benches/` for a
// benchmark of its own.
#[path = "ceilings/fleet_sim.rs"]
mod fleet_sim;

use serde_json::{Value, json};
use weft_core::{Spec, builtin};
use weft_engine::http::Wait;
use weft_engine::limits::{Clock, Limiter};
use weft_engine::oauth::TokenSet;
use weft_engine::request::{Hosts, RequestContext, Tenant};
use weft_engine::secrets::{MasterKey, Secret, SecretStore};
use weft_engine::session::Session;
use weft_engine::tokens::TokenKeeper;
use weft_harness::clock::SimClock;
use weft_harness::log::Allowed;
use weft_harness::xero::{XeroConfig, XeroLimits, XeroSim};

/// What every Xero call takes, inside its concurrency slot, unless `--latency-ms` says otherwise:
/// a modelled answer time for a page of 1,000 invoices or a batch of 50 (an assumption, not a
/// measurement of Xero).
const XERO_LATENCY: Duration = Duration::from_secs(1);
/// Simulated start of B1 and B2, Unix ms.
const START_MS: u64 = 1_700_000_000_000;

/// The simulators' event-driven clock as the engine's: now is simulated time, waiting sleeps on
/// it.
struct Simulated(SimClock);

impl Wait for Simulated {
    fn wait(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.0.sleep(duration)
    }
}

impl Clock for Simulated {
    fn now_ms(&self) -> u64 {
        self.0.now_ms()
    }
}

/// The engine's runtime: one thread, tracked by `clock` so simulated time waits for its work.
fn tracked_runtime(clock: &SimClock) -> tokio::runtime::Runtime {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    clock.track_runtime(&mut builder).enable_all();
    builder.build().unwrap()
}

/// A clock that jumps over every wait (for the memory runs, where limits are not the point).
struct Virtual(AtomicU64);

impl Wait for Virtual {
    fn wait(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.0.fetch_add(
            u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
        Box::pin(async {})
    }
}

impl Clock for Virtual {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn shipped(id: &str) -> Spec {
    builtin::load_all()
        .into_iter()
        .filter_map(|r| r.spec)
        .find(|s| s.id() == id)
        .expect("a shipped spec")
}

fn token(identity: &str, id: &str, secret: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let v: serde_json::Value = weft_engine::http::client()
            .unwrap()
            .post(format!("{identity}/connect/token"))
            .basic_auth(id, Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["access_token"].as_str().unwrap().to_owned()
    })
}

fn session(api: &str, access: &str, clock: Arc<dyn Clock>, dir: &std::path::Path) -> Session {
    connector_session("xero", &[("api", api)], access, clock, dir, None)
}

fn connector_session(
    id: &str,
    hosts: &[(&str, &str)],
    access: &str,
    clock: Arc<dyn Clock>,
    dir: &std::path::Path,
    concurrency: Option<u32>,
) -> Session {
    let spec = shipped(id);
    let hosts = Hosts::new(
        spec.file(),
        &hosts
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    )
    .unwrap();
    let mut store = SecretStore::open(
        &dir.join("credentials.json"),
        MasterKey::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap(),
    )
    .unwrap();
    let record = format!("connection:{id}:tokens");
    store
        .put(
            &record,
            &TokenSet::fixed(Secret::new(access.to_owned()), 0).to_sealed_json(),
        )
        .unwrap();
    let http = weft_engine::http::client().unwrap();
    let tokens = TokenKeeper::new(id, &record, store, None, None, http.clone(), clock.clone());
    let level = concurrency.unwrap_or(spec.file().limits.concurrency.default);
    let limiter = Limiter::new(spec.file(), level);
    Session::new(spec, hosts, limiter, http, tokens, clock)
}

fn read_all(rt: &tokio::runtime::Runtime, session: &Session, tenant: &str) -> u64 {
    let ctx = RequestContext {
        tenant: Some(Tenant {
            id: tenant.to_owned(),
            name: String::new(),
        }),
        ..RequestContext::with_field_defaults(session.spec().file())
    };
    let mut sink = std::io::sink();
    rt.block_on(session.list("invoices", &ctx, |record| {
        // Serialized as `weft read` would, so the cost of writing is counted.
        serde_json::to_writer(&mut sink, &record).unwrap();
        ControlFlow::Continue(())
    }))
    .unwrap()
}

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The simulated Xero's limits for one organisation, each call taking `latency`, counted until
/// its answer or from its arrival.
fn xero_allows(latency: Duration, until_answered: bool) -> Allowed {
    let l = XeroLimits::default();
    Allowed {
        windows: vec![
            (l.per_minute as usize, 60_000),
            (l.per_day as usize, 86_400_000),
            (l.app_per_minute as usize, 60_000),
        ],
        in_flight: l.concurrent as usize,
        latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
        until_answered,
    }
}

/// The figure (against a client that never risks a 429), and the share of the simulator's own
/// rule and both least times (s) for the detail.
fn judged(latency: Duration, times: &[u64]) -> (f64, String) {
    let (safe, strict) = (xero_allows(latency, true), xero_allows(latency, false));
    let least = |a: &Allowed| {
        times.first().map_or(0.0, |f| {
            (a.least_last(&[], *f, times.len()) - f) as f64 / 1000.0
        })
    };
    let took = times.last().zip(times.first()).map_or(0, |(l, f)| l - f) as f64 / 1000.0;
    (
        safe.share(&[], times),
        format!(
            "{took:.1} simulated s, least {:.1} counting each call until its answer, {:.1} ({:.1} %) counting from arrival as the simulator does",
            least(&safe),
            least(&strict),
            strict.share(&[], times),
        ),
    )
}

/// B2: reads `records` invoices on the event-driven clock, each Xero call taking `latency`.
fn ceiling(records: usize, latency: Duration) -> Value {
    let clock = SimClock::event_driven(START_MS).unwrap();
    let sim = XeroSim::start(XeroConfig {
        organisations: 1,
        size: records,
        clock: clock.clone(),
        latency: Some(latency),
        ..XeroConfig::default()
    })
    .unwrap();
    let access = token(&sim.identity_url(), sim.client_id(), sim.client_secret());
    let tenant = sim.tenants()[0].0.clone();
    let dir = temp("ceiling");
    let session = session(
        &sim.api_url(),
        &access,
        Arc::new(Simulated(clock.clone())),
        &dir,
    );
    let rt = tracked_runtime(&clock);
    let started = Instant::now();
    let read = read_all(&rt, &session, &tenant);
    let real = started.elapsed();
    clock.untrack_runtime();
    let log = sim.observed().log.requests();
    let times: Vec<u64> = log
        .iter()
        .filter(|r| r.tenant.as_deref() == Some(&tenant))
        .map(|r| r.at_ms)
        .collect();
    let limited = log.iter().filter(|r| r.status == 429).count();
    let (share, timing) = judged(latency, &times);
    let _ = std::fs::remove_dir_all(&dir);
    timed(
        row(
            "B2",
            &format!(
                "Xero extraction, {read} invoices (pageSize 1000), share of what Xero's limits allow"
            ),
            share,
            "%",
            ">= 97",
            share >= 97.0 && limited == 0,
            &format!(
                "{} calls of {} ms, 429s {limited}, most in flight {}, most in any minute {}, {timing}; {:.1} real s",
                times.len(),
                latency.as_millis(),
                sim.observed().log.max_in_flight(Some(&tenant)),
                sim.observed().log.max_in_window(Some(&tenant), 60_000),
                real.as_secs_f64(),
            ),
        ),
        real,
    )
}

/// B1: the sync creating the invoices of a Kantata account with `invoices` invoices in an empty
/// Xero organisation, on the event-driven clock, each Xero call taking `latency`.
fn creation(invoices: usize, latency: Duration, trace: bool) -> Value {
    use weft_harness::kantata::{KantataConfig, KantataSim};
    let clock = SimClock::event_driven(START_MS).unwrap();
    let kantata = KantataSim::start(KantataConfig {
        size: invoices,
        clock: clock.clone(),
        ..KantataConfig::default()
    })
    .unwrap();
    let xero = XeroSim::start(XeroConfig {
        organisations: 1,
        size: 3,
        clock: clock.clone(),
        latency: Some(latency),
        ..XeroConfig::default()
    })
    .unwrap();
    let access = token(&xero.identity_url(), xero.client_id(), xero.client_secret());
    let (tenant, name) = xero.tenants()[0].clone();
    let dir = temp("creation");
    std::fs::create_dir_all(&dir).unwrap();
    let engine_clock: Arc<dyn Clock> = Arc::new(Simulated(clock.clone()));
    let source = connector_session(
        "kantata",
        &[("api", &kantata.api_url()), ("app", &kantata.app_url())],
        kantata.personal_token(),
        engine_clock.clone(),
        &dir,
        None,
    );
    let dest = session(&xero.api_url(), &access, engine_clock.clone(), &dir);
    let rt = tracked_runtime(&clock);
    let started = Instant::now();
    let created = rt.block_on(sync_once(
        &source,
        &dest,
        Tenant {
            id: tenant.clone(),
            name,
        },
        engine_clock.as_ref(),
        &dir,
    ));
    let real = started.elapsed();
    clock.untrack_runtime();
    let log = xero.observed().log.requests();
    let ours: Vec<_> = log
        .iter()
        .filter(|r| r.tenant.as_deref() == Some(&tenant))
        .collect();
    let is_create =
        |r: &&&weft_harness::log::LoggedRequest| r.method == "PUT" && r.path.ends_with("/Invoices");
    let creates: Vec<u64> = ours.iter().filter(is_create).map(|r| r.at_ms).collect();
    // Judged: every Xero call of the run, from its first; the contacts the sync lists and
    // creates on the way share the organisation's limits with the invoices.
    let calls: Vec<u64> = ours.iter().map(|r| r.at_ms).collect();
    let in_flight = ours
        .iter()
        .filter(is_create)
        .map(|r| r.in_flight)
        .max()
        .unwrap_or(0);
    let limited = log.iter().filter(|r| r.status == 429).count();
    let (share, timing) = judged(latency, &calls);
    if trace {
        println!("B1 calls: simulated ms, method, path, calls in flight at its arrival");
        for r in &ours {
            println!(
                "  {} {} {} {}",
                r.at_ms - START_MS,
                r.method,
                r.path,
                r.in_flight
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    timed(
        row(
            "B1",
            &format!(
                "Xero invoice creation by the sync, {created} invoices, share of what Xero's limits allow"
            ),
            share,
            "%",
            ">= 97",
            share >= 97.0 && limited == 0,
            &format!(
                "{} Xero calls of {} ms: {} invoice creates ({:.1} invoices each) and {} for contacts, 429s {limited}, most creates in flight {in_flight}, most Xero calls in any minute {}, {timing}; whole run {:.1} real s",
                calls.len(),
                latency.as_millis(),
                creates.len(),
                created as f64 / creates.len().max(1) as f64,
                calls.len() - creates.len(),
                xero.observed().log.max_in_window(Some(&tenant), 60_000),
                real.as_secs_f64(),
            ),
        ),
        real,
    )
}

/// One run of the Kantata → Xero template flow; returns the invoices created. The only code
/// that knows the sync's API.
async fn sync_once(
    source: &Session,
    dest: &Session,
    tenant: Tenant,
    clock: &dyn Clock,
    dir: &std::path::Path,
) -> u64 {
    let template =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates/kantata-xero");
    let flow = weft_engine::flow::Flow::load(&template.join("flows/kantata-xero.toml")).unwrap();
    let state = weft_engine::state::State::open(&dir.join("state.db")).unwrap();
    let report = weft_engine::run::Run {
        flow: &flow,
        endpoints: BTreeMap::from([
            (
                "kantata".to_owned(),
                weft_engine::run::Endpoint {
                    session: source,
                    tenant: None,
                },
            ),
            (
                "xero".to_owned(),
                weft_engine::run::Endpoint {
                    session: dest,
                    tenant: Some(tenant),
                },
            ),
        ]),
        state: &state,
        clock,
        dry_run: false,
        only: Some("invoices".to_owned()),
        wait: None,
        progress: None,
    }
    .run()
    .await
    .unwrap();
    report.summary.created
}

/// `row` with the real time it took, for a row measured on simulated time.
fn timed(mut row: Value, real: Duration) -> Value {
    row["real_s"] = json!((real.as_secs_f64() * 10.0).round() / 10.0);
    row
}

/// One row of the report.
/// B10: write intent begin + finish pairs per second (each call its own transaction, as a run
/// writing records one at a time makes them) on the SQLite file and on PostgreSQL over
/// loopback (`WEFT_TEST_PG_URL`'s server, or a throwaway cluster; skipped without one).
fn state_pairs(quick: bool) -> Vec<Value> {
    use weft_engine::state::State;
    let pairs = if quick { 300 } else { 2_000 };
    let dir = std::env::temp_dir().join(format!("weft-bench-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let measure = |name: &str, state: &State, detail: &str| {
        let pair = |i: usize| {
            let id = format!("K{i}");
            state
                .begin_write("bench", "invoice", &id, "v1", &format!("key-{i}"), 1)
                .unwrap();
            state
                .finish_write("bench", "invoice", &id, &format!("X{i}"), "v1", None, 2)
                .unwrap();
        };
        (0..50).for_each(pair);
        let t = Instant::now();
        (50..50 + pairs).for_each(pair);
        let rate = pairs as f64 / t.elapsed().as_secs_f64();
        row(
            "B10",
            &format!("write intent begin + finish pairs per second, {name}"),
            rate,
            "pairs/s",
            ">= 100",
            rate >= 100.0,
            &format!("{pairs} pairs, each call one transaction; {detail}"),
        )
    };
    let mut rows = vec![measure(
        "SQLite",
        &State::open(&dir.join("state.db")).unwrap(),
        "WAL, each commit synced",
    )];
    match weft_harness::postgres::database("bench_b10") {
        Some(pg) => {
            let state = State::open_postgres(pg.url(), &dir.join("state.db")).unwrap();
            // Whether the server syncs its commits decides the figure: say which it was (the
            // harness's throwaway cluster does not; WEFT_TEST_PG_URL may name one that does).
            let syncs = state
                .postgres()
                .unwrap()
                .run(|c| async move {
                    let fsync = c.query_one("SHOW fsync", &[]).await?.get::<_, String>(0);
                    let commit = c
                        .query_one("SHOW synchronous_commit", &[])
                        .await?
                        .get::<_, String>(0);
                    Ok(format!("server fsync {fsync}, synchronous_commit {commit}"))
                })
                .unwrap();
            rows.push(measure("PostgreSQL over loopback", &state, &syncs));
        }
        None => println!("B10 PostgreSQL: skipped (no PostgreSQL here)"),
    }
    let _ = std::fs::remove_dir_all(&dir);
    rows
}

fn row(
    id: &str,
    name: &str,
    value: f64,
    unit: &str,
    target: &str,
    met: bool,
    detail: &str,
) -> Value {
    println!("{id} {name}: {value:.1} {unit} (target {target}) — {detail}");
    json!({
        "id": id, "name": name, "value": (value * 10.0).round() / 10.0, "unit": unit,
        "target": target, "met": met, "detail": detail,
    })
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn cpu_ms() -> u64 {
    // utime and stime, fields 14 and 15 of /proc/self/stat, in clock ticks (100 per second).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<u64> = after
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    f.get(10).zip(f.get(11)).map_or(0, |(u, s)| (u + s) * 10)
}

/// The child: reads everything and reports peak RSS and CPU time.
fn child(api: &str, access: &str, tenant: &str) {
    let dir = temp("child");
    let session = session(api, access, Arc::new(Virtual(AtomicU64::new(0))), &dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cpu = cpu_ms();
    let read = read_all(&rt, &session, tenant);
    println!(
        "{} {} {}",
        read,
        status_kb("VmHWM:"),
        cpu_ms().saturating_sub(cpu)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Peak RSS (MB) and CPU µs per record of a child reading `records` invoices.
fn memory(records: usize) -> Option<(u64, f64, f64)> {
    let sim = XeroSim::start(XeroConfig {
        organisations: 1,
        size: records,
        limits: XeroLimits::unlimited(),
        ..XeroConfig::default()
    })
    .unwrap();
    let access = token(&sim.identity_url(), sim.client_id(), sim.client_secret());
    let tenant = sim.tenants()[0].0.clone();
    let started = Instant::now();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--child", &sim.api_url(), &access, &tenant])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<u64> = text
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    if f.len() != 3 {
        println!(
            "memory {records}: the reader failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let _ = started;
    Some((
        f[0],
        f[1] as f64 / 1024.0,
        f[2] as f64 * 1000.0 / f[0].max(1) as f64,
    ))
}

/// The B7 child: the kantata-xero flow's invoices stream over the whole backlog, then peak RSS
/// and CPU time. Its arguments: Kantata API and app URLs, Kantata token, Xero API URL, Xero
/// access token, tenant.
fn sync_child(args: &[String]) {
    let dir = temp("sync-child");
    std::fs::create_dir_all(&dir).unwrap();
    let clock: Arc<dyn Clock> = Arc::new(Virtual(AtomicU64::new(1_760_000_000_000)));
    let source = connector_session(
        "kantata",
        &[("api", &args[0]), ("app", &args[1])],
        &args[2],
        clock.clone(),
        &dir,
        None,
    );
    let dest = session(&args[3], &args[4], clock.clone(), &dir);
    let template =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates/kantata-xero");
    let flow = weft_engine::flow::Flow::load(&template.join("flows/kantata-xero.toml")).unwrap();
    let state = weft_engine::state::State::open(&dir.join("state.db")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cpu = cpu_ms();
    let report = rt
        .block_on(
            weft_engine::run::Run {
                flow: &flow,
                endpoints: BTreeMap::from([
                    (
                        "kantata".to_owned(),
                        weft_engine::run::Endpoint {
                            session: &source,
                            tenant: None,
                        },
                    ),
                    (
                        "xero".to_owned(),
                        weft_engine::run::Endpoint {
                            session: &dest,
                            tenant: Some(Tenant {
                                id: args[5].clone(),
                                name: String::new(),
                            }),
                        },
                    ),
                ]),
                state: &state,
                clock: clock.as_ref(),
                dry_run: false,
                only: Some("invoices".to_owned()),
                wait: None,
                progress: None,
            }
            .run(),
        )
        .unwrap();
    println!(
        "{} {} {} {}",
        report.summary.created,
        report.summary.failed,
        status_kb("VmHWM:"),
        cpu_ms().saturating_sub(cpu)
    );
    drop(state);
    let _ = std::fs::remove_dir_all(&dir);
}

/// B7: peak RSS of a process syncing a backlog of `invoices` Kantata invoices to Xero (the
/// simulators run in this process, the sync in a child, so only the sync is measured).
/// Xero's limits are lifted: this measures memory, not the rate.
fn backlog(invoices: usize) -> Option<(u64, u64, f64, f64, f64)> {
    use weft_harness::kantata::{KantataConfig, KantataSim};
    let kantata = KantataSim::start(KantataConfig {
        size: invoices,
        ..KantataConfig::default()
    })
    .unwrap();
    let xero = XeroSim::start(XeroConfig {
        organisations: 1,
        size: 3,
        limits: XeroLimits::unlimited(),
        ..XeroConfig::default()
    })
    .unwrap();
    let access = token(&xero.identity_url(), xero.client_id(), xero.client_secret());
    let tenant = xero.tenants()[0].0.clone();
    let started = Instant::now();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--sync-child",
            &kantata.api_url(),
            &kantata.app_url(),
            kantata.personal_token(),
            &xero.api_url(),
            &access,
            &tenant,
        ])
        .output()
        .unwrap();
    let real = started.elapsed().as_secs_f64();
    let f: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    if f.len() != 4 {
        println!(
            "backlog {invoices}: the sync failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    Some((
        f[0],
        f[1],
        f[2] as f64 / 1024.0,
        f[3] as f64 * 1000.0 / f[0].max(1) as f64,
        real,
    ))
}

/// Kantata invoices read per second through a Session, with `latency` on every answer, at
/// `concurrency`.
fn kantata_rate(invoices: usize, concurrency: u32) -> f64 {
    use weft_harness::kantata::{KantataConfig, KantataSim};
    let sim = KantataSim::start(KantataConfig {
        size: invoices,
        latency: Some(Duration::from_millis(50)),
        ..KantataConfig::default()
    })
    .unwrap();
    let dir = temp(&format!("kantata-{concurrency}"));
    let spec = shipped("kantata");
    let session = connector_session(
        "kantata",
        &[("api", &sim.api_url()), ("app", &sim.app_url())],
        sim.personal_token(),
        Arc::new(weft_engine::limits::SystemClock),
        &dir,
        Some(concurrency),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let read = rt
        .block_on(session.list(
            "invoices",
            &RequestContext::with_field_defaults(spec.file()),
            |_| ControlFlow::Continue(()),
        ))
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    read as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Requests per second `clients` keep-alive clients get from `url` over `secs` seconds.
fn rate(url: &str, headers: &[(String, String)], clients: usize, secs: u64) -> f64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let http = weft_engine::http::client().unwrap();
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (http, url, headers) = (http.clone(), url.to_owned(), headers.to_vec());
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let mut r = http.get(&url);
                    for (k, v) in &headers {
                        r = r.header(k, v);
                    }
                    if let Ok(resp) = r.send().await
                        && resp.bytes().await.is_ok()
                    {
                        n += 1;
                    }
                }
                n
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap_or(0);
        }
        total as f64 / secs as f64
    })
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    json!({
        "cpu": model,
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "memory_gb": (mem_kb as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        child(&args[2], &args[3], &args[4]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("--sync-child") {
        sync_child(&args[2..]);
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let out = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1))
        .cloned();
    // `--only B1,B2` runs those rows alone.
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let wanted = |id: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|x| x == id))
    };
    // `--latency-ms N`: what each Xero call takes in B1 and B2.
    let latency = args
        .iter()
        .position(|a| a == "--latency-ms")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .map_or(XERO_LATENCY, Duration::from_millis);
    let mut rows = Vec::new();

    // B1, B2: the ceilings.
    if wanted("B1") {
        rows.push(creation(
            if quick { 7_000 } else { 9_000 },
            latency,
            args.iter().any(|a| a == "--trace"),
        ));
    }
    if wanted("B2") {
        rows.push(ceiling(100_000, latency));
        if !quick {
            rows.push(ceiling(1_000_000, latency));
        }
    }

    // B3: Kantata extraction with 50 ms latency.
    for concurrency in [1, 5, 25].into_iter().filter(|_| wanted("B3")) {
        let per_sec = kantata_rate(if quick { 1_000 } else { 6_000 }, concurrency);
        rows.push(row(
            "B3",
            &format!("Kantata invoices read per second, 50 ms latency, concurrency {concurrency}"),
            per_sec,
            "records/s",
            "-",
            true,
            "pages of 200 with their line items embedded, asked for ahead up to the concurrency",
        ));
    }

    // B4: CPU per record and peak memory, flat with the count.
    let sizes: &[usize] = match (wanted("B4"), quick) {
        (false, _) => &[],
        (true, true) => &[10_000, 100_000],
        (true, false) => &[10_000, 100_000, 1_000_000],
    };
    let mut peaks = Vec::new();
    for &n in sizes {
        if let Some((read, mb, us)) = memory(n) {
            peaks.push(mb);
            rows.push(row(
                "B4",
                &format!("peak RSS reading and serializing {read} Xero invoices"),
                mb,
                "MB",
                "<= 64, flat",
                mb <= 64.0,
                &format!("{us:.2} µs CPU per record"),
            ));
        }
    }
    if let (Some(first), Some(last)) = (peaks.first(), peaks.last()) {
        rows.push(row(
            "B4",
            "peak RSS growth from the smallest to the largest read",
            last - first,
            "MB",
            "flat (< 16)",
            last - first < 16.0,
            &format!("{} sizes", peaks.len()),
        ));
    }

    // B5: cold start and spec loading.
    if let Ok(bin) = std::env::var("WEFT_BIN")
        && wanted("B5")
    {
        let runs: Vec<f64> = (0..21)
            .map(|_| {
                let t = Instant::now();
                let ok = std::process::Command::new(&bin)
                    .arg("--version")
                    .output()
                    .is_ok_and(|o| o.status.success());
                if ok {
                    t.elapsed().as_secs_f64() * 1000.0
                } else {
                    f64::NAN
                }
            })
            .collect();
        let ms = median(runs);
        rows.push(row(
            "B5",
            "`weft --version` cold start (median of 21)",
            ms,
            "ms",
            "<= 10",
            ms <= 10.0,
            &bin,
        ));
    }
    let loads: Vec<f64> = (0..if wanted("B5") { 51 } else { 0 })
        .map(|_| {
            let t = Instant::now();
            let reports = builtin::load_all();
            assert!(reports.iter().all(|r| r.spec.is_some()));
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    let ms = median(loads);
    rows.extend(wanted("B5").then(|| {
        row(
            "B5",
            "loading and validating every shipped spec (median of 51)",
            ms,
            "ms",
            "<= 10",
            ms <= 10.0,
            "in process",
        )
    }));

    // B7: memory of a sync over a backlog, flat with its size.
    let backlogs: &[usize] = if !wanted("B7") {
        &[]
    } else if quick {
        &[2_000, 10_000]
    } else {
        &[10_000, 100_000]
    };
    let mut peaks = Vec::new();
    for &n in backlogs {
        if let Some((created, failed, mb, us, real)) = backlog(n) {
            peaks.push(mb);
            rows.push(row(
                "B7",
                &format!("peak RSS of a sync over a backlog of {n} Kantata invoices"),
                mb,
                "MB",
                "<= 64",
                mb <= 64.0 && failed == 0,
                &format!(
                    "{created} created in Xero, {failed} failed, {us:.0} µs CPU per invoice, {real:.1} real s (Xero's limits lifted)"
                ),
            ));
        }
    }
    if let (Some(first), Some(last)) = (peaks.first(), peaks.last()) {
        rows.push(row(
            "B7",
            "peak RSS growth from the smaller to the larger backlog",
            last - first,
            "MB",
            "flat (< 16)",
            last - first < 16.0,
            &format!("{} backlogs", peaks.len()),
        ));
    }

    // B6: the simulators' own speed, so they never bound B1-B4.
    if wanted("B6") {
        rows.extend(simulators(quick));
    }

    // B10: the state's typical write, a write intent begun then finished, on each backend.
    if wanted("B10") {
        rows.extend(state_pairs(quick));
    }

    // B11: a fleet for 10,000 organisations, modelled; the database's load per call, measured.
    if wanted("B11") {
        rows.extend(fleet_sim::model(quick, &row));
        rows.extend(fleet_sim::database_load(quick, &shipped("xero"), &row));
        rows.extend(fleet_sim::schedule_turn(quick, &row));
    }

    let report = json!({ "machine": machine(), "quick": quick, "rows": rows });
    if let Some(path) = out {
        if let Some(dir) = std::path::Path::new(&path).parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    }
}

/// B6: requests per second each simulator serves.
fn simulators(quick: bool) -> Vec<Value> {
    let mut rows = Vec::new();
    let xero = XeroSim::start(XeroConfig {
        organisations: 1,
        size: 1_000,
        limits: XeroLimits::unlimited(),
        ..XeroConfig::default()
    })
    .unwrap();
    let access = token(&xero.identity_url(), xero.client_id(), xero.client_secret());
    let secs = if quick { 1 } else { 3 };
    let per_sec = rate(
        &format!(
            "{}/api.xro/2.0/Invoices?page=1&pageSize=100",
            xero.api_url()
        ),
        &[
            ("authorization".to_owned(), format!("Bearer {access}")),
            ("xero-tenant-id".to_owned(), xero.tenants()[0].0.clone()),
        ],
        8,
        secs,
    );
    rows.push(row(
        "B6",
        "Xero simulator, Invoices pageSize 100, 8 clients",
        per_sec,
        "requests/s",
        "-",
        true,
        "keep-alive, one process",
    ));
    let kantata =
        weft_harness::kantata::KantataSim::start(weft_harness::kantata::KantataConfig::default())
            .unwrap();
    let per_sec = rate(
        &format!("{}/api/v1/workspaces?per_page=20", kantata.api_url()),
        &[(
            "authorization".to_owned(),
            format!("Bearer {}", kantata.personal_token()),
        )],
        8,
        secs,
    );
    rows.push(row(
        "B6",
        "Kantata simulator, workspaces per_page 20, 8 clients",
        per_sec,
        "requests/s",
        "-",
        true,
        "keep-alive, one process",
    ));
    rows
}
