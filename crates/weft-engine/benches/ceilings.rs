//! Weft against Xero's rate-limit ceilings, on the simulators (127.0.0.1).
//!
//! 0. Creation: the Kantata → Xero sync creating invoices at Xero's default limits (50 per call,
//!    60 calls a minute per organisation), both simulators and the engine on one clock running
//!    10 times faster than real time. Reports create calls, invoices created, 429s, the most
//!    calls in any simulated minute, and the fraction of the ceiling (least time the limit allows
//!    for those calls over the time they took).
//! 1. Reading: 100,000 (and 1,000,000) invoices at Xero's default limits (5 in flight, 60 calls a minute per
//!    organisation), the simulator's clock running 10 times faster than real time and the
//!    engine waiting on that same clock. Reports calls, 429s, the most calls in flight and in
//!    any simulated minute, and the fraction of the ceiling reached: the least time the limit
//!    allows for that many calls over the time it took.
//! 2. Memory: the reader runs in a child process (so the simulator's memory is not counted)
//!    against an unlimited simulator, for 10k, 100k and 1M invoices; reports peak RSS and CPU
//!    time per record.
//!
//! `cargo bench -p weft-engine --bench ceilings` (add `-- --quick` for smaller sizes).

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use weft_core::{Spec, builtin};
use weft_engine::http::Wait;
use weft_engine::limits::{Clock, Limiter};
use weft_engine::oauth::TokenSet;
use weft_engine::request::{Hosts, RequestContext, Tenant};
use weft_engine::secrets::{MasterKey, Secret, SecretStore};
use weft_engine::session::Session;
use weft_engine::tokens::TokenKeeper;
use weft_harness::clock::SimClock;
use weft_harness::xero::{XeroConfig, XeroLimits, XeroSim};

const SCALE: u32 = 10;

/// The simulator's scaled clock as the engine's: now is simulated time, waiting sleeps the
/// real equivalent.
struct Scaled(SimClock);

impl Wait for Scaled {
    fn wait(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep(duration / SCALE))
    }
}

impl Clock for Scaled {
    fn now_ms(&self) -> u64 {
        self.0.now_ms()
    }
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
    connector_session("xero", &[("api", api)], access, clock, dir)
}

fn connector_session(
    id: &str,
    hosts: &[(&str, &str)],
    access: &str,
    clock: Arc<dyn Clock>,
    dir: &std::path::Path,
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
    let limiter = Limiter::new(spec.file(), spec.file().limits.concurrency.default);
    Session::new(spec, hosts, limiter, http, tokens, clock)
}

fn read_all(session: &Session, tenant: &str) -> u64 {
    let ctx = RequestContext {
        tenant: Some(Tenant {
            id: tenant.to_owned(),
            name: String::new(),
        }),
        ..RequestContext::with_field_defaults(session.spec().file())
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
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

fn ceiling(records: usize) {
    let clock = SimClock::scaled(1_700_000_000_000, SCALE);
    let sim = XeroSim::start(XeroConfig {
        organisations: 1,
        size: records,
        clock: clock.clone(),
        ..XeroConfig::default()
    })
    .unwrap();
    let access = token(&sim.identity_url(), sim.client_id(), sim.client_secret());
    let tenant = sim.tenants()[0].0.clone();
    let dir = temp("ceiling");
    let session = session(
        &sim.api_url(),
        &access,
        Arc::new(Scaled(clock.clone())),
        &dir,
    );
    let started = Instant::now();
    let read = read_all(&session, &tenant);
    let real = started.elapsed();
    let log = sim.observed().log.requests();
    let calls: Vec<_> = log
        .iter()
        .filter(|r| r.tenant.as_deref() == Some(&tenant))
        .collect();
    let first = calls.first().map_or(0, |r| r.at_ms);
    let last = calls.last().map_or(0, |r| r.at_ms);
    let n = calls.len() as u64;
    let times: Vec<u64> = calls.iter().map(|r| r.at_ms).collect();
    let took_ms = last.saturating_sub(first).max(1);
    println!(
        "ceiling: {read} invoices in {n} calls; 429s {}; most in flight {}; most in any minute {}; simulated {:.1} s (real {:.1} s); fraction of the ceiling {:.1}%",
        calls.iter().filter(|r| r.status == 429).count(),
        sim.observed().log.max_in_flight(Some(&tenant)),
        sim.observed().log.max_in_window(Some(&tenant), 60_000),
        took_ms as f64 / 1000.0,
        real.as_secs_f64(),
        fraction(&times, 60),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The fraction of the ceiling for calls at `times` (ms, sorted) with `per_minute` allowed in
/// any minute: the least time the limit allows over the time they took.
fn fraction(times: &[u64], per_minute: u64) -> f64 {
    let (Some(first), Some(last)) = (times.first(), times.last()) else {
        return 0.0;
    };
    let n = times.len() as u64;
    let least = (n.saturating_sub(1) / per_minute) * 60_000;
    100.0 * least as f64 / last.saturating_sub(*first).max(1) as f64
}

fn creation(invoices: usize) {
    use weft_harness::kantata::{KantataConfig, KantataSim};
    let clock = SimClock::scaled(1_700_000_000_000, SCALE);
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
        ..XeroConfig::default()
    })
    .unwrap();
    let access = token(&xero.identity_url(), xero.client_id(), xero.client_secret());
    let (tenant, name) = xero.tenants()[0].clone();
    let dir = temp("creation");
    std::fs::create_dir_all(&dir).unwrap();
    let engine_clock: Arc<dyn Clock> = Arc::new(Scaled(clock.clone()));
    let source = connector_session(
        "kantata",
        &[("api", &kantata.api_url()), ("app", &kantata.app_url())],
        kantata.personal_token(),
        engine_clock.clone(),
        &dir,
    );
    let dest = session(&xero.api_url(), &access, engine_clock.clone(), &dir);
    let template =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates/kantata-xero");
    let flow = weft_engine::flow::Flow::load(&template.join("flows/kantata-xero.toml")).unwrap();
    let state = weft_engine::state::State::open(&dir.join("state.db")).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let report = rt
        .block_on(
            weft_engine::sync::Run {
                flow: &flow,
                source: &source,
                dest: &dest,
                tenant: Tenant {
                    id: tenant.clone(),
                    name,
                },
                state: &state,
                clock: engine_clock.as_ref(),
                dry_run: false,
            }
            .run(),
        )
        .unwrap();
    let real = started.elapsed();
    let log = xero.observed().log.requests();
    let creates: Vec<u64> = log
        .iter()
        .filter(|r| r.method == "PUT" && r.path.ends_with("/Invoices"))
        .map(|r| r.at_ms)
        .collect();
    println!(
        "creation: {} invoices created in {} create calls ({:.1} per call); 429s {}; most Xero calls in any minute {}; create phase {:.1} simulated s; whole run {:.1} real s; fraction of the ceiling {:.1}%",
        report.summary.created,
        creates.len(),
        report.summary.created as f64 / creates.len().max(1) as f64,
        log.iter().filter(|r| r.status == 429).count(),
        xero.observed().log.max_in_window(Some(&tenant), 60_000),
        creates
            .last()
            .zip(creates.first())
            .map_or(0, |(l, f)| l - f) as f64
            / 1000.0,
        real.as_secs_f64(),
        fraction(&creates, 60),
    );
    let _ = std::fs::remove_dir_all(&dir);
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
    let cpu = cpu_ms();
    let read = read_all(&session, tenant);
    println!(
        "{} {} {}",
        read,
        status_kb("VmHWM:"),
        cpu_ms().saturating_sub(cpu)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn memory(records: usize) {
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
            "memory {records}: child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    println!(
        "memory: {} invoices read and serialized; peak RSS {:.1} MB; CPU {:.2} µs per record; {:.1} s",
        f[0],
        f[1] as f64 / 1024.0,
        f[2] as f64 * 1000.0 / f[0].max(1) as f64,
        started.elapsed().as_secs_f64()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        child(&args[2], &args[3], &args[4]);
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    creation(if quick { 3_500 } else { 9_000 });
    ceiling(100_000);
    if !quick {
        ceiling(1_000_000);
    }
    let sizes: &[usize] = if quick {
        &[10_000, 100_000]
    } else {
        &[10_000, 100_000, 1_000_000]
    };
    for &n in sizes {
        memory(n);
    }
}
