//! The console under a long history: every page a person opens daily, with 10,000 runs and
//! 10,000 open queued errors in the state database, and the idle memory of `weft serve`.
//!
//! The workspace is seeded once, the way Weft itself writes it: `weft init` and the
//! `kantata-xero` template (the flow and its tables), its two connections with sealed tokens,
//! an administrator in the console's own database ([`Store`]) and an audit log of one entry per
//! run, then the run history through [`State`] (each run started and finished with its counts in
//! total and per stream, some stopped or failed) and the error queue through
//! [`State::queue_error`]: the first run, a backfill, queued half of the errors, and each of the
//! latest runs one.
//!
//! B8, the pages. The console's router runs in this process on a current-thread Tokio runtime,
//! and is driven through `tower::ServiceExt::oneshot`, signed in as the administrator, one
//! request at a time: nothing else runs in the process while a request is served. Each request's
//! figure is the CPU time the whole process spent on it (`CLOCK_PROCESS_CPUTIME_ID` read before
//! and after, response body included), so the figure counts the work the console does for a page
//! (database reads, rendering, the session check and its write), not the time it waited for a
//! core another program held: the machine's load does not move it. The pages are requested in
//! turn (every page once, then again) after a warm-up of each, and each page's row is the 99th
//! percentile of its requests' CPU time against the 50 ms target. The wall-clock time of the same
//! requests is given beside it as the real time (its 99th percentile and median), which does
//! depend on the machine's load and disk.
//!
//! B9, idle memory. The release `weft serve` (`WEFT_BIN`, which `cargo xtask bench` builds and
//! sets) is started on 127.0.0.1 with port 0 against the same workspace; once it answers, the
//! administrator signs in over HTTP and opens each page once, then the server is left alone for
//! a few seconds and its resident memory read from `/proc/PID/status` (`VmRSS`, and `VmHWM`, the
//! peak, which includes the password check of the sign-in), before it is stopped.
//!
//! `cargo bench -p weft-server --bench console` (add `-- --quick` for 2,000 runs and errors and
//! fewer requests, `--json FILE` to write the rows, `--only B8` or `--only B9` for one part).

#![allow(clippy::print_stdout)]

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt as _;
use weft_engine::oauth::TokenSet;
use weft_engine::secrets::Secret;
use weft_engine::state::{RunOutcome, RunSummary, State};
use weft_engine::workspace::{Connection, TenantRef, Workspace, connection_tokens_id};
use weft_server::{Config, Role, Store};

const FLOW: &str = "kantata-xero";
const ADMIN: &str = "admin";
const PASSWORD: &str = "a long console password";
/// The seeded history starts here (Unix ms), a run every 15 minutes.
const START_MS: u64 = 1_750_000_000_000;
const EVERY_MS: u64 = 15 * 60 * 1000;
/// The target of every page: 50 ms at the 99th percentile.
const PAGE_TARGET_MS: f64 = 50.0;
/// The target of the idle server's resident memory.
const RSS_TARGET_MB: f64 = 30.0;

/// How big the seeded state is.
struct Sizes {
    runs: u64,
    errors: u64,
    /// Requests per page after the warm-up.
    requests: usize,
}

/// The seeded workspace: its folder, and the runs and errors the pages look at.
struct Seeded {
    dir: PathBuf,
    /// The newest run (one queued error).
    latest_run: i64,
    /// The first run, which queued half of the errors.
    backfill_run: i64,
    /// The newest open error.
    error: i64,
    took: Duration,
}

impl Drop for Seeded {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// A Xero validation message as the queue keeps it (the provider's words, with the record).
fn message(i: u64) -> String {
    format!(
        "Xero refused invoice INV-{i:06}: A validation exception occurred: Account code '4{:03}' is not a valid code for this document. (ValidationException, 400)",
        i % 1000
    )
}

fn seed(sizes: &Sizes) -> Seeded {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("weft-bench-console-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    weft_engine::workspace::init(&dir).unwrap();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates/kantata-xero"),
        &dir,
    );
    // The flow's two connections, authorized (their hosts are never called: no page of the
    // bench talks to a provider).
    let mut ws = Workspace::find(&dir).unwrap();
    let hosts = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    ws.file.connections.insert(
        "kantata".into(),
        Connection {
            connector: "kantata".into(),
            method: Some(weft_core::model::AuthMethod::Token),
            client: None,
            concurrency: 4,
            borrow_concurrency_from: None,
            hosts: hosts(&[("app", "http://127.0.0.1:9"), ("api", "http://127.0.0.1:9")]),
            tenants: Vec::new(),
            owner: None,
        },
    );
    ws.file.connections.insert(
        "xero".into(),
        Connection {
            connector: "xero".into(),
            method: Some(weft_core::model::AuthMethod::OAuth2),
            client: None,
            concurrency: 4,
            borrow_concurrency_from: None,
            hosts: hosts(&[
                ("login", "http://127.0.0.1:9"),
                ("identity", "http://127.0.0.1:9"),
                ("api", "http://127.0.0.1:9"),
            ]),
            tenants: vec![TenantRef {
                id: "00000000-0000-0000-0000-000000000001".into(),
                name: "Demo Company (US)".into(),
            }],
            owner: None,
        },
    );
    ws.save().unwrap();
    let mut secrets = ws.secrets().unwrap();
    for name in ["kantata", "xero"] {
        secrets
            .put(
                &connection_tokens_id(name),
                &TokenSet::fixed(Secret::new(format!("bench-token-{name}")), 0).to_sealed_json(),
            )
            .unwrap();
    }

    let store = Store::open(&ws.private_dir()).unwrap();
    store.add_user(ADMIN, PASSWORD, Role::Admin).unwrap();

    let state = State::open(&ws.state_path()).unwrap();
    let mut first = 0;
    let mut latest = 0;
    for n in 0..sizes.runs {
        let at = START_MS + n * EVERY_MS;
        let id = state.start_run(FLOW, false, at).unwrap();
        if n == 0 {
            first = id;
        }
        latest = id;
        let mut summary = RunSummary {
            calls: 12 + n % 7,
            ..RunSummary::default()
        };
        let (read, created, failed) = if n == 0 {
            (sizes.errors, sizes.errors / 2, sizes.errors / 2)
        } else {
            (
                5 + n % 11,
                1 + n % 4,
                u64::from(n >= sizes.runs - sizes.errors / 2),
            )
        };
        summary.count("invoices", |c| {
            c.read = read;
            c.created = created;
            c.unchanged = read - created - failed;
            c.failed = failed;
            c.lookups_created = u64::from(n % 5 == 0);
        });
        summary.count("payments", |c| {
            c.read = n % 3;
            c.written_back = n % 3;
        });
        let outcome = if n % 200 == 199 {
            RunOutcome::Failed {
                reason: "Kantata answered 503 Service Unavailable five times; the run stopped before writing anything".into(),
            }
        } else if n % 50 == 49 {
            RunOutcome::Stopped {
                reason: "Xero's daily call limit for this organisation is spent; the next run continues where this one stopped".into(),
            }
        } else {
            RunOutcome::Completed
        };
        state
            .finish_run(id, &summary, &outcome, at + 40_000 + n % 9_000)
            .unwrap();
        store
            .audit(ADMIN, "sync", FLOW, &format!("run {id}"))
            .unwrap();
    }
    // Half of the errors from the backfill, then one from each of the latest runs.
    let mut error = 0;
    for i in 0..sizes.errors {
        let backfill = i < sizes.errors / 2;
        let run = if backfill {
            first
        } else {
            latest - i64::try_from(sizes.errors - 1 - i).unwrap()
        };
        let at = START_MS
            + if backfill {
                0
            } else {
                u64::try_from(run - first).unwrap() * EVERY_MS
            };
        error = state
            .queue_error(
                FLOW,
                "invoice",
                &format!("{}", 700_000 + i),
                "write",
                &message(i),
                Some(run),
                at,
            )
            .unwrap();
    }
    Seeded {
        dir,
        latest_run: latest,
        backfill_run: first,
        error,
        took: started.elapsed(),
    }
}

fn config(dir: &Path) -> Config {
    Config {
        workspace: dir.to_path_buf(),
        listen: "127.0.0.1:8080".parse().unwrap(),
        tls: None,
        insecure_http: false,
        specs: weft_core::builtin::load_all()
            .into_iter()
            .filter_map(|r| r.spec)
            .collect(),
    }
}

/// The pages a person opens daily, by a label and their address.
fn pages(seeded: &Seeded) -> Vec<(String, String)> {
    [
        (
            "flows (the list, with each flow's last run and open errors)",
            "/flows".to_owned(),
        ),
        ("a flow", format!("/flows/{FLOW}")),
        ("runs", "/runs".to_owned()),
        (
            "a run (one queued error)",
            format!("/runs/{}", seeded.latest_run),
        ),
        (
            "a run that queued half of the errors",
            format!("/runs/{}", seeded.backfill_run),
        ),
        ("errors (the open queue)", "/errors".to_owned()),
        ("an error", format!("/errors/{}", seeded.error)),
        ("connections", "/connections".to_owned()),
        ("connectors", "/connectors".to_owned()),
        ("a connector (Xero)", "/connectors/xero".to_owned()),
        ("audit log", "/audit".to_owned()),
    ]
    .into_iter()
    .map(|(label, path)| (label.to_owned(), path))
    .collect()
}

/// CPU time of this whole process, ns.
fn cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}

/// The `q` quantile (nearest rank) of `v`, which it sorts.
fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

struct Answer {
    status: StatusCode,
    cookies: Vec<String>,
    body: String,
}

async fn send(app: &axum::Router, req: Request<Body>) -> Answer {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let cookies = res
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(str::to_owned)
        .collect();
    let bytes = axum::body::to_bytes(res.into_body(), 64 << 20)
        .await
        .unwrap();
    Answer {
        status,
        cookies,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

fn login_form(csrf: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("csrf", csrf),
            ("name", ADMIN),
            ("password", PASSWORD),
            ("next", "/flows"),
        ])
        .finish()
}

/// Signs the administrator in through the login form; returns the session cookie.
async fn sign_in(app: &axum::Router) -> String {
    let form = send(app, Request::get("/login").body(Body::empty()).unwrap()).await;
    let nonce = form.cookies.first().expect("the login cookie").clone();
    let res = send(
        app,
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::COOKIE, &nonce)
            .body(Body::from(login_form(&csrf_of(&form.body))))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "sign-in: {}", res.body);
    res.cookies
        .into_iter()
        .find(|c| c.starts_with("weft_session="))
        .expect("a session cookie")
}

/// B8: every page's CPU and real time per request.
fn measure_pages(seeded: &Seeded, sizes: &Sizes) -> Vec<Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let app = weft_server::router(config(&seeded.dir)).unwrap();
    let cookie = rt.block_on(sign_in(&app));
    let pages = pages(seeded);
    let get = |path: &str| {
        Request::get(path)
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap()
    };
    let mut sizes_kb = vec![0.0; pages.len()];
    for _ in 0..3 {
        for (i, (label, path)) in pages.iter().enumerate() {
            let res = rt.block_on(send(&app, get(path)));
            assert_eq!(res.status, StatusCode::OK, "{label} ({path}): {}", res.body);
            sizes_kb[i] = res.body.len() as f64 / 1024.0;
        }
    }
    let mut cpu: Vec<Vec<f64>> = vec![Vec::with_capacity(sizes.requests); pages.len()];
    let mut real: Vec<Vec<f64>> = vec![Vec::with_capacity(sizes.requests); pages.len()];
    for _ in 0..sizes.requests {
        for (i, (label, path)) in pages.iter().enumerate() {
            let req = get(path);
            let (c0, t0) = (cpu_ns(), Instant::now());
            let res = rt.block_on(send(&app, req));
            let (t, c) = (t0.elapsed(), cpu_ns());
            assert_eq!(res.status, StatusCode::OK, "{label} ({path}): {}", res.body);
            cpu[i].push(c.saturating_sub(c0) as f64 / 1e6);
            real[i].push(t.as_secs_f64() * 1000.0);
        }
    }
    let mut rows = Vec::new();
    let mut worst = (0.0, String::new());
    for (i, (label, path)) in pages.iter().enumerate() {
        let cpu_p99 = quantile(&mut cpu[i], 0.99);
        let cpu_p50 = quantile(&mut cpu[i], 0.5);
        let real_p99 = quantile(&mut real[i], 0.99);
        let real_p50 = quantile(&mut real[i], 0.5);
        if cpu_p99 >= worst.0 {
            worst = (cpu_p99, label.clone());
        }
        rows.push(row(
            "B8",
            &format!("console page p99 CPU time: {label} ({path})"),
            cpu_p99,
            "ms",
            "<= 50",
            cpu_p99 <= PAGE_TARGET_MS,
            &format!(
                "real time p99 {real_p99:.2} ms (median {real_p50:.2}); CPU median {cpu_p50:.2} ms; {} requests, {:.0} KB page; {} runs, {} open errors",
                sizes.requests, sizes_kb[i], sizes.runs, sizes.errors,
            ),
        ));
    }
    rows.push(row(
        "B8",
        &format!(
            "console pages, slowest p99 CPU time of {} pages with {} runs and {} open errors",
            pages.len(),
            sizes.runs,
            sizes.errors
        ),
        worst.0,
        "ms",
        "<= 50",
        worst.0 <= PAGE_TARGET_MS,
        &format!(
            "{}; signed in, in process, one request at a time on a current-thread runtime",
            worst.1
        ),
    ));
    rows
}

/// A `weft serve` child, killed and reaped when dropped.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status_kb(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// B9: the release `weft serve`'s resident memory, idle after a sign-in and each page once.
fn idle_rss(seeded: &Seeded, bin: &str) -> Result<Value, String> {
    let mut child = std::process::Command::new(bin)
        .arg("--workspace")
        .arg(&seeded.dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {bin}: {e}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let server = Server(child);
    let pid = server.0.id();
    // The first line names the address: "… at http://localhost:PORT/ …".
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| "weft serve said nothing within 30 s".to_owned())?;
    let port: u16 = line
        .split("http://localhost:")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("weft serve did not say its address: {line:?}"))?;
    let base = format!("http://127.0.0.1:{port}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let http = weft_engine::http::client().unwrap();
    let opened = rt.block_on(async {
        // It answers once the listener is up; a bounded wait.
        let deadline = Instant::now() + Duration::from_secs(10);
        let form = loop {
            match http.get(format!("{base}/login")).send().await {
                Ok(res) if res.status().is_success() => break res,
                _ if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return Err(format!("weft serve does not answer: {other:?}")),
            }
        };
        let started = status_kb(pid, "VmRSS:").unwrap_or(0);
        let nonce = form
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::to_owned)
            .ok_or("no login cookie")?;
        let csrf = csrf_of(&form.text().await.map_err(|e| e.to_string())?);
        let res = http
            .post(format!("{base}/login"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::COOKIE, &nonce)
            .body(login_form(&csrf))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let cookie = res
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .find(|c| c.starts_with("weft_session="))
            .map(str::to_owned)
            .ok_or_else(|| format!("sign-in refused ({})", res.status()))?;
        let mut n = 0;
        for (label, path) in pages(seeded) {
            let res = http
                .get(format!("{base}{path}"))
                .header(header::COOKIE, &cookie)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if res.status() != StatusCode::OK {
                return Err(format!("{label} ({path}) answered {}", res.status()));
            }
            res.bytes().await.map_err(|e| e.to_string())?;
            n += 1;
        }
        Ok((n, started as f64 / 1024.0))
    })?;
    let (opened, at_start) = opened;
    std::thread::sleep(Duration::from_secs(3));
    let rss = status_kb(pid, "VmRSS:").ok_or("no VmRSS")? as f64 / 1024.0;
    let peak = status_kb(pid, "VmHWM:").ok_or("no VmHWM")? as f64 / 1024.0;
    let threads = status_kb(pid, "Threads:").unwrap_or(0);
    drop(server);
    Ok(row(
        "B9",
        "`weft serve` resident memory, idle",
        rss,
        "MB",
        "<= 30",
        rss <= RSS_TARGET_MB,
        &format!(
            "{at_start:.1} MB once it answered, peak {peak:.1} MB (VmHWM, the sign-in's password check included); idle after a sign-in and {opened} pages over HTTP, then 3 s; {threads} threads; release build {bin}"
        ),
    ))
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let value_of = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let out = value_of("--json");
    let only = value_of("--only");
    let wanted = |id: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|x| x == id))
    };
    // The credential store's key and the user scope, for this process and the server it starts
    // (set before any thread exists).
    let config_dir =
        std::env::temp_dir().join(format!("weft-bench-console-config-{}", std::process::id()));
    std::fs::create_dir_all(&config_dir).unwrap();
    // SAFETY: the first thing `main` does, before this process starts any thread.
    unsafe {
        std::env::set_var("WEFT_CONFIG_DIR", &config_dir);
        std::env::set_var(
            "WEFT_MASTER_KEY",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        );
        std::env::remove_var("WEFT_MASTER_KEY_COMMAND");
    }
    let sizes = if quick {
        Sizes {
            runs: 2_000,
            errors: 2_000,
            requests: 40,
        }
    } else {
        Sizes {
            runs: 10_000,
            errors: 10_000,
            requests: 200,
        }
    };
    let mut rows = Vec::new();
    if wanted("B8") || wanted("B9") {
        let seeded = seed(&sizes);
        println!(
            "seeded {} runs and {} open errors in {:.1} s",
            sizes.runs,
            sizes.errors,
            seeded.took.as_secs_f64()
        );
        if wanted("B8") {
            rows.extend(measure_pages(&seeded, &sizes));
        }
        if wanted("B9") {
            match std::env::var("WEFT_BIN") {
                Ok(bin) => match idle_rss(&seeded, &bin) {
                    Ok(r) => rows.push(r),
                    Err(e) => {
                        println!("B9: {e}");
                        rows.push(row(
                            "B9",
                            "`weft serve` resident memory, idle",
                            0.0,
                            "MB",
                            "<= 30",
                            false,
                            &format!("not measured: {e}"),
                        ));
                    }
                },
                Err(_) => println!(
                    "B9 skipped: WEFT_BIN names no weft binary (`cargo xtask bench` builds one in release and sets it)"
                ),
            }
        }
    }
    let _ = std::fs::remove_dir_all(&config_dir);
    let report = json!({ "quick": quick, "rows": rows });
    if let Some(path) = out {
        if let Some(dir) = Path::new(&path).parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    }
}
