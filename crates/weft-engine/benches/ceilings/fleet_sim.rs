//! B11: a fleet of workers syncing 10,000 Xero organisations hourly against the app-wide limit
//! of 10,000 calls a minute (and 60 a minute, 5 in flight per organisation).
//!
//! Two parts:
//! - a discrete-event model of the fleet, in whole steps of 100 ms of simulated time (every
//!   event of the model falls on one: the latency, the windows and the due times are multiples
//!   of it), so its figures depend on nothing but its inputs. Each worker makes
//!   [`RUNS_PER_WORKER`] runs at once (`weft worker --concurrency`); a run syncs one
//!   organisation, at most 5 calls in flight; each call takes [`LATENCY_MS`] (B1's modelled
//!   latency) and, as Weft's limiter does, is kept in the organisation's and the app's windows
//!   from its start until its answer, then counted at its answer for the rest of the window.
//!   The model applies the limiter's rules; it does not run the engine.
//! - the database's load per call, measured: the engine's own `Limiter` for the shipped Xero
//!   spec, counted in the fleet's `PgBudgets` on a real PostgreSQL (the harness's), acquires
//!   and settles calls for many organisations (with and without Xero's "remaining" headers,
//!   as `Limiter::answered` gets them) through a loopback relay that counts the
//!   protocol messages the pool sends: round trips (a `Sync` or a simple `Query` each waits for
//!   the server, except the `Sync` after a statement's `Close`, which nothing waits for) and
//!   statements executed.

use std::collections::VecDeque;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Organisations synced every hour.
const ORGS: usize = 10_000;
/// The app-wide limit: calls per minute for every organisation together.
const APP_PER_MINUTE: usize = 10_000;
/// Per organisation: calls per minute, and in flight.
const ORG_PER_MINUTE: usize = 60;
const ORG_IN_FLIGHT: usize = 5;
/// What each Xero call takes (as in B1 and B2; an assumption, not a measurement of Xero).
const LATENCY_MS: u64 = 1_000;
/// Runs each worker makes at once (`weft worker --concurrency 8`).
const RUNS_PER_WORKER: usize = 8;
/// Xero calls of one organisation's hourly incremental sync (an assumption: a few lists and a
/// few dozen writes); 10,000 of them make 500,000 calls an hour, 83% of the app's ceiling.
const CALLS_PER_SYNC: usize = 50;
/// The model's step.
const STEP_MS: u64 = 100;
const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;

/// How the report makes a row (id, name, value, unit, target, met, detail).
type RowFn = dyn Fn(&str, &str, f64, &str, &str, bool, &str) -> Value;

/// Calls kept in a window until answered, then counted at their answer for a minute.
#[derive(Default)]
struct Window {
    in_flight: usize,
    /// Answer times, oldest first (every call takes the same latency, so they come in order).
    answered: VecDeque<u64>,
}

impl Window {
    fn trim(&mut self, now: u64) {
        while self.answered.front().is_some_and(|&t| t + MINUTE_MS <= now) {
            self.answered.pop_front();
        }
    }

    fn held(&self) -> usize {
        self.in_flight + self.answered.len()
    }
}

/// A run slot of a worker: the organisation it syncs, the calls still to make.
#[derive(Clone, Copy)]
struct Run {
    org: usize,
    left: usize,
    in_flight: usize,
}

/// What one simulated stretch of time gave.
struct Outcome {
    /// Calls made in each simulated minute.
    per_minute: Vec<usize>,
    /// When each hour's last run ended, from the start of its hour (ms); `None` when it had not
    /// ended by the end of the simulation.
    hour_done_ms: Vec<Option<u64>>,
    /// When the first hour's last organisation was taken by a run (ms).
    taken_all_ms: u64,
}

/// Simulates `workers` workers for `hours` hours; each hour every organisation is due (within
/// the scheduler's jitter, under 30 s) and needs `calls` calls.
fn simulate(workers: usize, hours: u64, calls: usize) -> Outcome {
    let end = (hours + 1) * HOUR_MS;
    let mut app = Window::default();
    let mut orgs: Vec<Window> = (0..ORGS).map(|_| Window::default()).collect();
    let mut slots: Vec<Option<Run>> = vec![None; workers * RUNS_PER_WORKER];
    // Answers due: (time, slot, org), in time order (every call takes the same latency).
    let mut answers: VecDeque<(u64, usize, usize)> = VecDeque::new();
    // Due organisations of the current hour, in due order: the jitter is fixed per flow (as the
    // scheduler's), spread over the first 30 s.
    let jitter = |org: usize| ((org as u64 * 7_919) % 300) * STEP_MS;
    let mut order: Vec<usize> = (0..ORGS).collect();
    order.sort_by_key(|&o| (jitter(o), o));
    let mut queue: VecDeque<(u64, usize, usize)> = VecDeque::new();
    let mut per_minute = vec![0usize; usize::try_from(end / MINUTE_MS).unwrap_or(0) + 1];
    let mut hour_left = vec![0usize; usize::try_from(hours).unwrap_or(0)];
    let mut hour_done_ms = vec![None; hour_left.len()];
    // Each organisation's hour it is being synced for.
    let mut hour_of = vec![0usize; ORGS];
    let mut now = 0;
    let mut taken_all_ms = end;
    while now < end {
        let hour = usize::try_from(now / HOUR_MS).unwrap_or(usize::MAX);
        if now.is_multiple_of(HOUR_MS) && hour < hour_left.len() {
            for &o in &order {
                queue.push_back((now + jitter(o), o, hour));
            }
            hour_left[hour] += ORGS;
        }
        // Answers arriving now.
        while answers.front().is_some_and(|&(t, _, _)| t <= now) {
            let (t, slot, org) = answers.pop_front().unwrap_or_default();
            app.in_flight -= 1;
            app.answered.push_back(t);
            orgs[org].in_flight -= 1;
            orgs[org].answered.push_back(t);
            if let Some(run) = slots[slot].as_mut() {
                run.in_flight -= 1;
                if run.left == 0 && run.in_flight == 0 {
                    let h = hour_of[run.org];
                    hour_left[h] -= 1;
                    if hour_left[h] == 0 {
                        hour_done_ms[h] = Some(now - h as u64 * HOUR_MS);
                    }
                    slots[slot] = None;
                }
            }
        }
        app.trim(now);
        // Idle slots take due organisations; every run starts what its limits allow now.
        for (slot, entry) in slots.iter_mut().enumerate() {
            if entry.is_none()
                && let Some(&(due, org, due_hour)) = queue.front()
                && due <= now
            {
                queue.pop_front();
                hour_of[org] = due_hour;
                if due_hour == 0 && queue.front().is_none_or(|q| q.2 != 0) {
                    taken_all_ms = now;
                }
                *entry = Some(Run {
                    org,
                    left: calls,
                    in_flight: 0,
                });
            }
            let Some(run) = entry.as_mut() else {
                continue;
            };
            let window = &mut orgs[run.org];
            window.trim(now);
            while run.left > 0
                && run.in_flight < ORG_IN_FLIGHT
                && window.held() < ORG_PER_MINUTE
                && app.held() < APP_PER_MINUTE
            {
                run.left -= 1;
                run.in_flight += 1;
                window.in_flight += 1;
                app.in_flight += 1;
                answers.push_back((now + LATENCY_MS, slot, run.org));
                per_minute[usize::try_from(now / MINUTE_MS).unwrap_or(0)] += 1;
            }
        }
        now += STEP_MS;
    }
    Outcome {
        per_minute,
        hour_done_ms,
        taken_all_ms,
    }
}

/// The model's rows: the fleet's throughput as a share of the app's ceiling while work waits,
/// and the workers needed for the hourly syncs.
pub(crate) fn model(quick: bool, row: &RowFn) -> Vec<Value> {
    let started = Instant::now();
    // Workers needed: the fewest whose every hour's syncs end within that hour (two hours
    // simulated, so the second starts with whatever the first left).
    let hours = if quick { 1 } else { 2 };
    let mut needed = None;
    for workers in 1..=64 {
        let out = simulate(workers, hours, CALLS_PER_SYNC);
        if out
            .hour_done_ms
            .iter()
            .all(|d| d.is_some_and(|ms| ms <= HOUR_MS))
        {
            needed = Some((workers, out));
            break;
        }
    }
    let Some((workers, out)) = needed else {
        return vec![row(
            "B11",
            "workers needed for 10,000 organisations hourly (model)",
            0.0,
            "workers",
            "found within 64",
            false,
            "no fleet of up to 64 workers finished an hour's syncs within the hour",
        )];
    };
    let done_min = out.hour_done_ms[0].unwrap_or(HOUR_MS) as f64 / MINUTE_MS as f64;
    let calls_hour: usize = out.per_minute.iter().take(60).sum();
    let mut rows = vec![row(
        "B11",
        "workers needed for 10,000 organisations hourly (model)",
        workers as f64,
        "workers",
        "reported",
        true,
        &format!(
            "{RUNS_PER_WORKER} runs at once each (--concurrency {RUNS_PER_WORKER}); {CALLS_PER_SYNC} calls an organisation an hour, {calls_hour} in the first hour ({:.0}% of the app's 600,000); the hour's syncs end at minute {done_min:.1}; {} ms a call, 5 in flight and 60 a minute per organisation, 10,000 a minute for the app; the budgets' own time per call is not in the model (the measured row gives it)",
            calls_hour as f64 * 100.0 / (APP_PER_MINUTE as f64 * 60.0),
            LATENCY_MS
        ),
    )];
    // Throughput while work waits: twice the workers needed, so that the app's limit and not
    // the fleet's runs bounds the calls (each run's 50 calls fit in its organisation's minute).
    // The share is over the whole minutes from the first to the one in which the last
    // organisation was taken (work waited throughout).
    let saturated = simulate(workers * 2, 1, CALLS_PER_SYNC);
    let last = usize::try_from(saturated.taken_all_ms / MINUTE_MS).unwrap_or(0);
    let busy: Vec<usize> = saturated
        .per_minute
        .iter()
        .copied()
        .take(last)
        .skip(1)
        .collect();
    let share = busy.iter().sum::<usize>() as f64 / (busy.len().max(1) * APP_PER_MINUTE) as f64;
    let best = busy.iter().copied().max().unwrap_or(0);
    rows.push(row(
        "B11",
        "fleet throughput while work waits, share of the app-wide 10,000 calls/min (model)",
        share * 100.0,
        "%",
        ">= 95%",
        share >= 0.95,
        &format!(
            "{} workers at --concurrency {RUNS_PER_WORKER} ({} runs able to make {} calls/min), the 10,000 organisations' hourly syncs queued: minutes 2-{last} average {:.0} calls/min, the busiest {best}; a call stays in the app's window from its start to its answer ({} ms), so a full window holds the calls in flight too",
            workers * 2,
            workers * 2 * RUNS_PER_WORKER,
            workers * 2 * RUNS_PER_WORKER * ORG_IN_FLIGHT * 60,
            share * APP_PER_MINUTE as f64,
            LATENCY_MS
        ),
    ));
    let real = started.elapsed();
    for r in &mut rows {
        r["real_s"] = serde_json::json!((real.as_secs_f64() * 10.0).round() / 10.0);
    }
    rows
}

/// What the relay counted of the frontend's messages.
#[derive(Default)]
struct Counts {
    /// `Sync` and simple `Query` messages: each ends a round trip (the client waits for the
    /// server's `ReadyForQuery`).
    round_trips: AtomicU64,
    /// `Execute` messages and simple queries: statements run.
    statements: AtomicU64,
    /// `Parse` messages: statements prepared.
    parses: AtomicU64,
    /// `Close` messages (a prepared statement dropped), each sent with a `Sync` of its own that
    /// nothing waits for: not counted as round trips.
    closes: AtomicU64,
}

/// Counts the frontend messages in `buf` (after the startup message), carrying a message cut
/// across reads in `pending`.
fn count(pending: &mut Vec<u8>, last: &mut u8, buf: &[u8], counts: &Counts) {
    pending.extend_from_slice(buf);
    let mut at = 0;
    while pending.len() >= at + 5 {
        let kind = pending[at];
        let len = u32::from_be_bytes([
            pending[at + 1],
            pending[at + 2],
            pending[at + 3],
            pending[at + 4],
        ]) as usize;
        if pending.len() < at + 1 + len {
            break;
        }
        match kind {
            b'S' if *last != b'C' => {
                counts.round_trips.fetch_add(1, Ordering::Relaxed);
            }
            b'C' => {
                counts.closes.fetch_add(1, Ordering::Relaxed);
            }
            b'Q' => {
                counts.round_trips.fetch_add(1, Ordering::Relaxed);
                counts.statements.fetch_add(1, Ordering::Relaxed);
            }
            b'E' => {
                counts.statements.fetch_add(1, Ordering::Relaxed);
            }
            b'P' => {
                counts.parses.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        *last = kind;
        at += 1 + len;
    }
    pending.drain(..at);
}

/// The database `url` through a counting relay: the relay's URL, and its counts.
fn relayed(url: &str) -> (url::Url, Arc<Counts>) {
    let mut url = url::Url::parse(url).expect("the test database's URL");
    let upstream = format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(5432)
    );
    let counts = Arc::new(Counts::default());
    let port = relay(upstream, counts.clone());
    url.set_port(Some(port)).expect("a port");
    (url, counts)
}

/// A loopback relay in front of `upstream` (host:port) counting what clients send; its port.
fn relay(upstream: String, counts: Arc<Counts>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let port = listener.local_addr().expect("its address").port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut c_in, mut s_out) = (
                client.try_clone().expect("a socket"),
                server.try_clone().expect("a socket"),
            );
            let (mut s_in, mut c_out) = (server, client);
            let counts = counts.clone();
            // Client to server: untyped messages first (length, then code: an SSL or GSS
            // encryption request, then the startup message), then typed messages, counted.
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                let mut started = false;
                let mut pending = Vec::new();
                let mut last = 0u8;
                loop {
                    let n = match c_in.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if s_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    if started {
                        count(&mut pending, &mut last, &buf[..n], &counts);
                        continue;
                    }
                    pending.extend_from_slice(&buf[..n]);
                    while !started && pending.len() >= 8 {
                        let len =
                            u32::from_be_bytes([pending[0], pending[1], pending[2], pending[3]])
                                as usize;
                        if pending.len() < len {
                            break;
                        }
                        let code =
                            u32::from_be_bytes([pending[4], pending[5], pending[6], pending[7]]);
                        // 80877103: SSLRequest; 80877104: GSSENCRequest.
                        started = code != 80_877_103 && code != 80_877_104;
                        pending.drain(..len.max(8));
                    }
                    if started {
                        let rest = std::mem::take(&mut pending);
                        count(&mut pending, &mut last, &rest, &counts);
                    }
                }
                let _ = s_out.shutdown(std::net::Shutdown::Both);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s_in, &mut c_out);
                let _ = c_out.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    port
}

/// A clock moving 20 ms at each look: no budget window ever fills in the measurement, so
/// nothing waits and every call costs exactly its budget work.
struct Ticking(AtomicU64);

impl weft_engine::limits::Clock for Ticking {
    fn now_ms(&self) -> u64 {
        self.0.fetch_add(20, Ordering::SeqCst)
    }
}

impl weft_engine::http::Wait for Ticking {
    fn wait(
        &self,
        duration: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        self.0.fetch_add(
            u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
        Box::pin(async {})
    }
}

/// The database's load per Xero call through `PgBudgets`, measured on a real PostgreSQL.
pub(crate) fn database_load(quick: bool, xero: &weft_core::Spec, row: &RowFn) -> Vec<Value> {
    let Some(pg) = weft_harness::postgres::database("bench_b11") else {
        println!("B11 database load: skipped (no PostgreSQL here)");
        return Vec::new();
    };
    let (relayed, counts) = relayed(pg.url());
    let dir = std::env::temp_dir().join(format!("weft-bench-b11-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    let calls = if quick { 300 } else { 2_000 };
    let tenants: Vec<String> = (0..100).map(|i| format!("org-{i:03}")).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    // What Xero answers a call with: the organisation's minute and day, the app's minute.
    let xero_headers: Vec<(String, String)> = [
        ("x-minlimit-remaining", "59"),
        ("x-daylimit-remaining", "4999"),
        ("x-appminlimit-remaining", "9999"),
    ]
    .iter()
    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
    .collect();
    // `calls` calls through the budgets in the database `url` names, each answered with
    // `headers` (settled as the session does): how long they took.
    let pass = |url: &str, name: &str, headers: &[(String, String)]| {
        let folder = dir.join(name);
        std::fs::create_dir_all(&folder).expect("a temporary folder");
        let state = weft_engine::state::State::open_postgres(url, &folder.join("state.db"))
            .expect("the state on PostgreSQL");
        let pool = state.postgres().expect("on PostgreSQL");
        let budgets = Arc::new(weft_engine::fleet::PgBudgets::new(pool).expect("the budgets"));
        let limiter = weft_engine::limits::Limiter::new(xero.file(), 5)
            .in_fleet(budgets, &format!("xero/bench-{name}"));
        let clock = Ticking(AtomicU64::new(1_700_000_000_000));
        let one = |i: usize| {
            rt.block_on(async {
                let tenant = Some(tenants[i % tenants.len()].as_str());
                let permit = limiter
                    .acquire(tenant, &clock)
                    .await
                    .expect("room for the call");
                limiter.answered(permit, tenant, headers, &clock);
            });
        };
        // Warm up: the tables made, the pool's connections opened.
        (0..50).for_each(one);
        let before = (
            counts.round_trips.load(Ordering::SeqCst),
            counts.statements.load(Ordering::SeqCst),
            counts.parses.load(Ordering::SeqCst),
            counts.closes.load(Ordering::SeqCst),
        );
        let t = Instant::now();
        (50..50 + calls).for_each(one);
        let took = t.elapsed();
        let after = (
            counts.round_trips.load(Ordering::SeqCst),
            counts.statements.load(Ordering::SeqCst),
            counts.parses.load(Ordering::SeqCst),
            counts.closes.load(Ordering::SeqCst),
        );
        let per = |now: u64, then: u64| (now - then) as f64 / calls as f64;
        let counted = (
            per(after.0, before.0),
            per(after.1, before.1),
            per(after.2, before.2),
            per(after.3, before.3),
        );
        (took, counted)
    };
    let dir = &dir;
    let (_, (trips, statements, parses, closes)) = pass(relayed.as_str(), "counted", &[]);
    let (_, (trips_seen, statements_seen, ..)) =
        pass(relayed.as_str(), "counted-headers", &xero_headers);
    let (took, _) = pass(pg.url(), "timed", &[]);
    let us = took.as_secs_f64() * 1e6 / calls as f64;
    let at_ceiling = trips * APP_PER_MINUTE as f64 / 60.0;
    let _ = std::fs::remove_dir_all(dir);
    vec![row(
        "B11",
        "database round trips per Xero call through PgBudgets (measured)",
        trips,
        "round trips/call",
        "reported",
        true,
        &format!(
            "the engine's Limiter for the shipped Xero spec (budgets: 5 in flight, 60 a minute and 5,000 a day per organisation, 10,000 a minute for the app) in PgBudgets on PostgreSQL over loopback, {calls} calls over 100 organisations, each acquired (a slot, then the three windows: one function call each) and settled at its answer (stamps, slot: one function call), counted at a relay: {statements:.1} statements, {parses:.1} prepares and {closes:.1} closes a call (statements prepared once per connection, no BEGIN/COMMIT); settled with Xero's \"remaining\" headers too, as the session does: {trips_seen:.1} round trips and {statements_seen:.1} statements a call; {us:.0} µs of budget work a call on this machine (direct, without the relay); at the app's ceiling (167 calls/s) {at_ceiling:.0} round trips/s for the database"
        ),
    )]
}

/// A scheduling turn of the fleet (`Queue::enqueue_scheduled`, one worker's every 15 s) over
/// `flows` flow files of the shipped kantata-xero template, each scheduled `every 1h`, each
/// with a day of hourly runs in the state and its last scheduled job, nothing due: the
/// database's round trips (counted at the relay) and the time of the first turn (every file
/// read) and of the next (files unchanged), on a real PostgreSQL.
pub(crate) fn schedule_turn(quick: bool, row: &RowFn) -> Vec<Value> {
    let Some(pg) = weft_harness::postgres::database("bench_b11_turn") else {
        println!("B11 scheduling turn: skipped (no PostgreSQL here)");
        return Vec::new();
    };
    let flows: usize = if quick { 1_000 } else { 10_000 };
    let (relayed, counts) = relayed(pg.url());
    let dir = std::env::temp_dir().join(format!("weft-bench-b11-turn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let template =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates/kantata-xero");
    let ws = dir.join("ws");
    std::fs::create_dir_all(ws.join("flows")).expect("a temporary folder");
    std::fs::create_dir_all(ws.join("tables")).expect("a temporary folder");
    for table in ["line-accounts.csv", "expense-accounts.csv"] {
        std::fs::copy(
            template.join("tables").join(table),
            ws.join("tables").join(table),
        )
        .expect("the template's tables");
    }
    let text = std::fs::read_to_string(template.join("flows/kantata-xero.toml"))
        .expect("the template's flow");
    let text = format!("schedule = \"every 1h\"\n{text}");
    for i in 0..flows {
        std::fs::write(ws.join(format!("flows/flow-{i:05}.toml")), &text).expect("a flow file");
    }
    let hour: i64 = 3_600_000;
    let now: i64 = 1_000 * hour;
    let state = weft_engine::state::State::open_postgres(relayed.as_str(), &dir.join("state.db"))
        .expect("the state on PostgreSQL");
    let queue = weft_engine::queue::Queue::open(&state, weft_engine::queue::QueueRules::default())
        .expect("the queue");
    // A day of hourly runs per flow, the last 10 minutes ago, and the last scheduled job.
    pg.execute(&format!(
        "INSERT INTO runs (flow, dry_run, started_ms, finished_ms, summary, outcome)
             SELECT format('flow-%s', lpad(f::TEXT, 5, '0')), FALSE,
                    {now} - 600000 - h * {hour}, {now} - 590000 - h * {hour}, '{{}}', 'completed'
             FROM generate_series(0, {flows} - 1) AS f, generate_series(0, 23) AS h
             ORDER BY h DESC, f;
         INSERT INTO weft_jobs (flow, status, reason, max_attempts, due_ms, created_ms, updated_ms, finished_ms)
             SELECT format('flow-%s', lpad(f::TEXT, 5, '0')), 'done', 'schedule', 5,
                    {now} - 600000, {now} - 600000, {now} - 590000, {now} - 590000
             FROM generate_series(0, {flows} - 1) AS f;
         ANALYZE"
    ))
    .expect("the runs and jobs");
    let turn = |queue: &weft_engine::queue::Queue, state: &weft_engine::state::State| {
        let before = counts.round_trips.load(Ordering::SeqCst);
        let t = Instant::now();
        let found = queue
            .enqueue_scheduled(&ws, state, u64::try_from(now).unwrap_or(0))
            .expect("a turn");
        let took = t.elapsed();
        assert!(found.is_empty(), "nothing is due: {found:?}");
        (counts.round_trips.load(Ordering::SeqCst) - before, took)
    };
    let (first_trips, _) = turn(&queue, &state);
    let (next_trips, _) = turn(&queue, &state);
    // Timed without the relay.
    let direct = weft_engine::state::State::open_postgres(pg.url(), &dir.join("state.db"))
        .expect("the state on PostgreSQL");
    let timed = weft_engine::queue::Queue::open(&direct, weft_engine::queue::QueueRules::default())
        .expect("the queue");
    let (_, first) = turn(&timed, &direct);
    let (_, next) = turn(&timed, &direct);
    let _ = std::fs::remove_dir_all(&dir);
    vec![row(
        "B11",
        &format!("a scheduling turn over {flows} scheduled flows, database round trips (measured)"),
        next_trips as f64,
        "round trips/turn",
        "reported",
        true,
        &format!(
            "Queue::enqueue_scheduled over {flows} kantata-xero flow files scheduled every 1h, each with 24 hourly runs and its last scheduled job in the state, nothing due: {first_trips} round trips at the first turn (every file read) and {next_trips} at the next (files unchanged); {:.0} ms and {:.0} ms on this machine (without the relay)",
            first.as_secs_f64() * 1e3,
            next.as_secs_f64() * 1e3
        ),
    )]
}
