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
use weft_harness::xero::{XeroConfig, XeroLimits, XeroSim};

const SCALE: u32 = 10;

/// The simulator's scaled clock as the engine's: now is simulated time, waiting sleeps the
/// real equivalent.
struct Scaled(SimClock, u32);

impl Wait for Scaled {
    fn wait(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep(duration / self.1))
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

/// B2 at clock speed `scale`: the simulator's own time per page is multiplied by it too, so a
/// short read at a high scale understates the share (its first minute is the slowest).
fn ceiling(records: usize, scale: u32) -> Value {
    let clock = SimClock::scaled(1_700_000_000_000, scale);
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
        Arc::new(Scaled(clock.clone(), scale)),
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
    let limited = calls.iter().filter(|r| r.status == 429).count();
    let share = fraction(&times, 60);
    let _ = std::fs::remove_dir_all(&dir);
    row(
        "B2",
        &format!("Xero extraction, {read} invoices (pageSize 1000), share of 60 calls/min"),
        share,
        "%",
        ">= 95",
        share >= 95.0 && limited == 0,
        &format!(
            "{n} calls, 429s {limited}, most in flight {}, most in any minute {}, {:.1} simulated s ({:.1} real s at x{scale})",
            sim.observed().log.max_in_flight(Some(&tenant)),
            sim.observed().log.max_in_window(Some(&tenant), 60_000),
            took_ms as f64 / 1000.0,
            real.as_secs_f64(),
        ),
    )
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

fn creation(invoices: usize) -> Value {
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
    let engine_clock: Arc<dyn Clock> = Arc::new(Scaled(clock.clone(), SCALE));
    let source = connector_session(
        "kantata",
        &[("api", &kantata.api_url()), ("app", &kantata.app_url())],
        kantata.personal_token(),
        engine_clock.clone(),
        &dir,
        None,
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
            weft_engine::run::Run {
                flow: &flow,
                endpoints: std::collections::BTreeMap::from([
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
                                id: tenant.clone(),
                                name,
                            }),
                        },
                    ),
                ]),
                state: &state,
                clock: engine_clock.as_ref(),
                dry_run: false,
                only: Some("invoices".to_owned()),
                wait: None,
                progress: None,
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
    let limited = log.iter().filter(|r| r.status == 429).count();
    let share = fraction(&creates, 60);
    let _ = std::fs::remove_dir_all(&dir);
    row(
        "B1",
        &format!(
            "Xero invoice creation by the sync, {} invoices, share of 50 x 60/min",
            report.summary.created
        ),
        share,
        "%",
        ">= 95",
        share >= 95.0 && limited == 0,
        &format!(
            "{} create calls ({:.1} invoices each), 429s {limited}, most Xero calls in any minute {}, create phase {:.1} simulated s, whole run {:.1} real s at x{SCALE}",
            creates.len(),
            report.summary.created as f64 / creates.len().max(1) as f64,
            xero.observed().log.max_in_window(Some(&tenant), 60_000),
            creates
                .last()
                .zip(creates.first())
                .map_or(0, |(l, f)| l - f) as f64
                / 1000.0,
            real.as_secs_f64(),
        ),
    )
}

/// One row of the report.
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
    let mut rows = Vec::new();

    // B1, B2: the ceilings.
    rows.push(creation(if quick { 7_000 } else { 9_000 }));
    rows.push(ceiling(100_000, if quick { SCALE } else { 2 }));
    if !quick {
        rows.push(ceiling(1_000_000, SCALE));
    }

    // B3: Kantata extraction with 50 ms latency.
    for concurrency in [1, 5, 25] {
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
    let sizes: &[usize] = if quick {
        &[10_000, 100_000]
    } else {
        &[10_000, 100_000, 1_000_000]
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
    if let Ok(bin) = std::env::var("WEFT_BIN") {
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
    let loads: Vec<f64> = (0..51)
        .map(|_| {
            let t = Instant::now();
            let reports = builtin::load_all();
            assert!(reports.iter().all(|r| r.spec.is_some()));
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    let ms = median(loads);
    rows.push(row(
        "B5",
        "loading and validating every shipped spec (median of 51)",
        ms,
        "ms",
        "<= 10",
        ms <= 10.0,
        "in process",
    ));

    // B7: memory of a sync over a backlog, flat with its size.
    let backlogs: &[usize] = if quick {
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

    let report = json!({ "machine": machine(), "quick": quick, "rows": rows });
    if let Some(path) = out {
        if let Some(dir) = std::path::Path::new(&path).parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    }
}
