//! A fleet on the simulators: real `weft worker` processes sharing a PostgreSQL state, Xero
//! organisations each fed by its own Kantata account (one flow each). The small test kills one
//! worker with SIGKILL mid-run; the acceptance test runs 4 workers for 50 organisations under
//! seeded faults, killing a worker every few seconds and starting another. Every invoice reaches
//! its organisation once, every payment its Kantata account once, no organisation sees more
//! than 60 calls in a minute or 5 in flight, a refresh token is sent twice only as a reported
//! recovery of a refresh cut off by a kill or a lost answer, and no run is lost.

mod common;

use std::io::BufRead as _;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Sandbox, authorize, callback, err, free_port, kantata_invoices_in_xero, out};
use weft_harness::clock::SimClock;
use weft_harness::faults::{Fault, FaultPlan, FaultRule, When};
use weft_harness::kantata::{KantataConfig, KantataSim};
use weft_harness::xero::{Consent, XeroConfig, XeroLimits, XeroSim};

/// Organisations, each with its Kantata account and its flow.
const ORGS: usize = 3;
/// Workers running at once.
const WORKERS: usize = 2;
/// The longest the fleet may take to empty the queue.
const DEADLINE: Duration = Duration::from_secs(240);

fn ok(o: &std::process::Output) {
    assert!(o.status.success(), "{}", err(o));
}

/// A worker process and the lines it prints (read by a thread of their own).
struct Worker {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

/// Warnings every worker printed on stderr (kept beyond the worker, which may be killed).
type Warnings = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

fn worker(s: &Sandbox) -> Worker {
    worker_warning_into(s, None)
}

/// A worker whose stderr lines go to `warnings` (to nothing without).
fn worker_warning_into(s: &Sandbox, warnings: Option<&Warnings>) -> Worker {
    let mut child = s
        .command(&[
            "worker",
            "--concurrency",
            "2",
            "--lease",
            "3",
            "--poll",
            "1",
            "--backoff",
            "1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(if warnings.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .spawn()
        .unwrap();
    if let (Some(stderr), Some(warnings)) = (child.stderr.take(), warnings) {
        let warnings = warnings.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                warnings
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(line);
            }
        });
    }
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Worker { child, lines }
}

/// Statuses of the jobs, from the database.
fn jobs(db: &weft_harness::postgres::TestDb) -> Vec<(String, String)> {
    db.query("SELECT flow, status FROM weft_jobs ORDER BY id")
        .unwrap()
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect()
}

/// Waits (bounded) until every job has ended; the jobs' statuses then.
fn drained(db: &weft_harness::postgres::TestDb) -> Vec<(String, String)> {
    drained_while(db, DEADLINE, || {})
}

/// [`drained`] within `deadline`, calling `meanwhile` at each look.
fn drained_while(
    db: &weft_harness::postgres::TestDb,
    deadline: Duration,
    mut meanwhile: impl FnMut(),
) -> Vec<(String, String)> {
    let started = Instant::now();
    loop {
        let now = jobs(db);
        if now.iter().all(|(_, s)| s != "queued" && s != "running") {
            return now;
        }
        assert!(
            started.elapsed() < deadline,
            "the fleet did not empty the queue: {now:?}"
        );
        meanwhile();
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_fleet_of_workers_syncs_every_organisation_once_within_its_limits_when_one_is_killed() {
    let Some(db) = weft_harness::postgres::database("fleet") else {
        return;
    };
    let port = free_port();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let clock = SimClock::scaled(now, 1);
    let x = XeroSim::start(XeroConfig {
        organisations: ORGS,
        size: 3,
        clock: clock.clone(),
        latency: Some(Duration::from_millis(20)),
        redirect_uris: vec![callback(port)],
        ..XeroConfig::default()
    })
    .unwrap();
    let ks: Vec<KantataSim> = (0..ORGS)
        .map(|i| {
            KantataSim::start(KantataConfig {
                size: 60,
                seed: 100 + i as u64,
                clock: clock.clone(),
                redirect_uris: vec![callback(port)],
                ..KantataConfig::default()
            })
            .unwrap()
        })
        .collect();
    let s = Sandbox::new("fleet");
    ok(&s.run(&["init", "--template", "kantata-xero"], None));
    s.guard(x.client_secret());
    s.add_client(
        "xero-app",
        "xero",
        x.client_id(),
        &format!("{}\n", x.client_secret()),
    );
    let tenants: Vec<String> = x.tenants().into_iter().map(|(id, _)| id).collect();
    x.set_consent(Consent::Grant {
        tenants: tenants.clone(),
    });
    let xhosts = [
        format!("login={}", x.login_url()),
        format!("identity={}", x.identity_url()),
        format!("api={}", x.api_url()),
    ];
    s.create_connection_at("xero", "xero", "xero-app", &xhosts);
    let (code, _, stderr) = authorize(&s, "xero", port, &[]);
    assert_eq!(code, 0, "{stderr}");
    let template = std::fs::read_to_string(s.project().join("flows/kantata-xero.toml")).unwrap();
    for (i, k) in ks.iter().enumerate() {
        let (client, conn) = (format!("kantata-app-{i}"), format!("kantata-{i}"));
        s.guard(k.client_secret());
        s.add_client(
            &client,
            "kantata",
            k.client_id(),
            &format!("{}\n", k.client_secret()),
        );
        let hosts = [
            format!("app={}", k.app_url()),
            format!("api={}", k.api_url()),
        ];
        s.create_connection_at(&conn, "kantata", &client, &hosts);
        let (code, _, stderr) = authorize(&s, &conn, port, &[]);
        assert_eq!(code, 0, "{stderr}");
        // Flow `org-I`: Kantata account I into organisation I.
        let flow = template
            .replacen(
                "[connections.kantata]\nconnector = \"kantata\"",
                &format!("[connections.kantata]\nconnector = \"kantata\"\nconnection = \"{conn}\""),
                1,
            )
            .replacen(
                "[connections.xero]\nconnector = \"xero\"",
                &format!(
                    "[connections.xero]\nconnector = \"xero\"\ntenant = \"{}\"",
                    tenants[i]
                ),
                1,
            );
        std::fs::write(s.project().join(format!("flows/org-{i}.toml")), flow).unwrap();
    }
    std::fs::remove_file(s.project().join("flows/kantata-xero.toml")).unwrap();
    let check = s.run(&["flow", "check"], None);
    ok(&check);
    s.set_env("WEFT_STATE_URL", db.url());

    // Round one: every organisation's flow queued, once (a second add merges).
    for i in 0..ORGS {
        ok(&s.run(&["queue", "add", &format!("org-{i}")], None));
    }
    let again = s.run(&["queue", "add", "org-0"], None);
    ok(&again);
    assert!(out(&again).contains("merged"), "{}", out(&again));
    let mut fleet: Vec<Worker> = (0..WORKERS).map(|_| worker(&s)).collect();
    // The first worker is killed as soon as it has started a run.
    let victim = fleet.remove(0);
    let started = Instant::now();
    let began = loop {
        match victim.lines.recv_timeout(Duration::from_secs(5)) {
            Ok(line) if line.contains("attempt 1") => break line,
            Ok(_) => {}
            Err(_) => panic!(
                "the first worker started no run within {:?}",
                started.elapsed()
            ),
        }
    };
    std::thread::sleep(Duration::from_millis(150));
    let mut victim = victim;
    // std's kill is kill(2) with SIGKILL on this one process.
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    fleet.push(worker(&s));
    let ended = drained(&db);
    assert!(
        ended.iter().all(|(_, s)| s == "done"),
        "every run done, none lost ({began}): {ended:?}"
    );
    // The killed worker's job was taken again by another once its lease expired.
    let retaken = db
        .query("SELECT count(*) FROM weft_jobs WHERE attempts >= 2")
        .unwrap();
    let retaken: u32 = retaken[0][0].as_deref().unwrap().parse().unwrap();
    assert!(
        (1..=2).contains(&retaken),
        "the victim's jobs (one or two: it runs two at once) retaken: {retaken}; {began}"
    );

    // Round two: some invoices paid in Xero; the payments go to Kantata once each.
    let mut paid = Vec::new();
    let before: Vec<std::collections::BTreeSet<String>> = ks
        .iter()
        .map(|k| k.external_payments().into_iter().map(|p| p.id).collect())
        .collect();
    for (i, tenant) in tenants.iter().enumerate() {
        // Invoices still awaiting payment in Kantata (one paid there already is left alone).
        let awaiting: std::collections::BTreeSet<String> = ks[i]
            .invoices()
            .into_iter()
            .filter(|v| !v.draft && v.status == "new")
            .map(|v| format!("KAN-{}", v.number))
            .collect();
        let payable = x.invoices(tenant).into_iter().filter(|v| {
            v["Status"] == "AUTHORISED"
                && v["InvoiceNumber"]
                    .as_str()
                    .is_some_and(|n| awaiting.contains(n))
        });
        for inv in payable.take(2) {
            let id = inv["InvoiceID"].as_str().unwrap().to_owned();
            x.pay_in_full(tenant, &id).unwrap();
            paid.push((
                i,
                inv["InvoiceNumber"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    for i in 0..ORGS {
        ok(&s.run(&["queue", "add", &format!("org-{i}")], None));
    }
    let ended = drained(&db);
    assert!(ended.iter().all(|(_, s)| s == "done"), "{ended:?}");
    // SIGTERM (kill(2) on each worker's own pid): each stops cleanly.
    for mut w in fleet {
        let pid = rustix::process::Pid::from_child(&w.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let status = w.child.wait().unwrap();
        assert!(status.success(), "{status:?}");
        let said: Vec<String> = w.lines.try_iter().collect();
        assert!(
            said.last().is_some_and(|l| l.ends_with("worker stopped")),
            "{said:?}"
        );
    }

    for (i, k) in ks.iter().enumerate() {
        let tenant = &tenants[i];
        let (eligible, by_number) = kantata_invoices_in_xero(k, &x, tenant);
        assert_eq!(
            by_number.len(),
            eligible,
            "organisation {i}: no invoice lost"
        );
        assert!(
            by_number.values().all(|&n| n == 1),
            "organisation {i}: no invoice twice: {by_number:?}"
        );
        let payments: Vec<_> = k
            .external_payments()
            .into_iter()
            .filter(|p| !before[i].contains(&p.id))
            .collect();
        let mut per_invoice = std::collections::HashMap::new();
        for p in &payments {
            if let Some(inv) = &p.invoice_id {
                *per_invoice.entry(inv.clone()).or_insert(0) += 1;
            }
        }
        let expected = paid.iter().filter(|(o, _)| *o == i).count();
        assert_eq!(
            per_invoice.len(),
            expected,
            "organisation {i}: every payment"
        );
        assert_eq!(
            payments.len(),
            expected,
            "organisation {i}: each payment once"
        );
        assert!(
            per_invoice.values().all(|&n| n == 1),
            "organisation {i}: no payment twice: {per_invoice:?}"
        );
        let log = &x.observed().log;
        let minute = log.max_in_window(Some(tenant), 60_000);
        assert!(minute <= 60, "organisation {i}: {minute} calls in a minute");
        let in_flight = log.max_in_flight(Some(tenant));
        assert!(in_flight <= 5, "organisation {i}: {in_flight} in flight");
    }
    let listed = s.run(&["queue", "list", "--all"], None);
    ok(&listed);
    assert!(out(&listed).contains("done"), "{}", out(&listed));
}

/// Organisations of the acceptance test, each with its Kantata account and its flow.
const BIG_ORGS: usize = 50;
/// Workers of the acceptance test running at once.
const BIG_WORKERS: usize = 4;
/// Invoices per Kantata account (small: the counts that matter are organisations and workers).
const BIG_INVOICES: usize = 6;
/// How often a worker is killed (SIGKILL) and another started.
const KILL_EVERY: Duration = Duration::from_secs(3);
/// The longest one round of the acceptance test may take.
const BIG_DEADLINE: Duration = Duration::from_secs(300);
/// Access tokens' lifetime in the simulator: the spec refreshes 5 minutes ahead, so the fleet
/// refreshes (rotating the refresh token) every 20 s or so.
const TOKEN_TTL_SECS: u64 = 320;

/// A fault the simulators inject into a request (seeded): errors, resets, lost answers.
fn api_fault(rng: &mut fastrand::Rng) -> Fault {
    match rng.u8(0..6) {
        0 => Fault::Status {
            status: 500,
            body: "{\"Message\":\"An error occurred\"}".to_owned(),
        },
        1 => Fault::Maintenance,
        2 => Fault::Reset,
        3 => Fault::Truncate,
        4 => Fault::LoseResponse,
        _ => Fault::RateLimited {
            retry_after_secs: 1,
            problem: None,
        },
    }
}

/// One to three seeded fault rules on `plan`, each on one of `prefixes`.
fn add_faults(plan: &FaultPlan, prefixes: &[&str], rng: &mut fastrand::Rng) {
    for _ in 0..rng.usize(1..=3) {
        let prefix = prefixes[rng.usize(..prefixes.len())];
        let p = 0.02 + rng.f64() * 0.06;
        plan.add(FaultRule::on(prefix, When::Probability(p), api_fault(rng)));
    }
}

/// Whether a token request has waited for its answer longer than Xero takes to handle one:
/// the answer is being held (the simulator's `HoldResponse`), so a refresh is in flight.
fn refresh_held(x: &XeroSim) -> bool {
    let now = x.observed().clock.now_ms();
    x.identity_observed()
        .log
        .requests()
        .iter()
        .any(|r| !r.finished && r.path == "/connect/token" && now.saturating_sub(r.at_ms) > 1_000)
}

/// The acceptance test of the fleet (issue 17): 4 `weft worker` processes, 50 Xero
/// organisations each fed by its own Kantata account (a flow per pair), seeded faults in the
/// simulators, and a worker killed with SIGKILL every few seconds and another started.
///
/// Kills land anytime, refreshes included, and once deterministically while a refresh is in
/// flight (Xero handled it and holds its answer: every worker is killed then). The token
/// endpoint's faults include answers lost after Xero rotated the token. A worker killed between
/// Xero's answer and the sealing of the rotated tokens leaves the sealed intent of its refresh;
/// the next refresher sends the old token again (Xero's grace period) and warns. So every
/// refresh token Xero saw twice is a recovery a worker reported: two workers refreshing one
/// token at once would be a reuse nobody reported.
#[test]
fn the_acceptance_fleet_of_four_workers_and_fifty_organisations_under_faults_and_kills() {
    let Some(db) = weft_harness::postgres::database("fleet_big") else {
        return;
    };
    let mut rng = fastrand::Rng::with_seed(17);
    let port = free_port();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let clock = SimClock::scaled(now, 1);
    let x = XeroSim::start(XeroConfig {
        organisations: BIG_ORGS,
        size: 2,
        clock: clock.clone(),
        latency: Some(Duration::from_millis(20)),
        redirect_uris: vec![callback(port)],
        limits: XeroLimits {
            access_token_ttl_secs: TOKEN_TTL_SECS,
            ..XeroLimits::default()
        },
        ..XeroConfig::default()
    })
    .unwrap();
    let ks: Vec<KantataSim> = (0..BIG_ORGS)
        .map(|i| {
            KantataSim::start(KantataConfig {
                size: BIG_INVOICES,
                seed: 1_000 + i as u64,
                clock: clock.clone(),
                ..KantataConfig::default()
            })
            .unwrap()
        })
        .collect();
    let s = Sandbox::new("fleet-big");
    ok(&s.run(&["init", "--template", "kantata-xero"], None));
    s.guard(x.client_secret());
    s.add_client(
        "xero-app",
        "xero",
        x.client_id(),
        &format!("{}\n", x.client_secret()),
    );
    let tenants: Vec<String> = x.tenants().into_iter().map(|(id, _)| id).collect();
    x.set_consent(Consent::Grant {
        tenants: tenants.clone(),
    });
    let xhosts = [
        format!("login={}", x.login_url()),
        format!("identity={}", x.identity_url()),
        format!("api={}", x.api_url()),
    ];
    s.create_connection_at("xero", "xero", "xero-app", &xhosts);
    let (code, _, stderr) = authorize(&s, "xero", port, &[]);
    assert_eq!(code, 0, "{stderr}");
    let template = std::fs::read_to_string(s.project().join("flows/kantata-xero.toml")).unwrap();
    for (i, k) in ks.iter().enumerate() {
        // Kantata account I by its personal token; flow `org-I` feeds organisation I from it.
        let conn = format!("kantata-{i}");
        s.guard(k.personal_token());
        let (api, app) = (
            format!("api={}", k.api_url()),
            format!("app={}", k.app_url()),
        );
        let created = s.run(
            &[
                "connection",
                "create",
                &conn,
                "--connector",
                "kantata",
                "--host",
                &api,
                "--host",
                &app,
                "--token-stdin",
            ],
            Some(&format!("{}\n", k.personal_token())),
        );
        ok(&created);
        let flow = template
            .replacen(
                "[connections.kantata]\nconnector = \"kantata\"",
                &format!("[connections.kantata]\nconnector = \"kantata\"\nconnection = \"{conn}\""),
                1,
            )
            .replacen(
                "[connections.xero]\nconnector = \"xero\"",
                &format!(
                    "[connections.xero]\nconnector = \"xero\"\ntenant = \"{}\"",
                    tenants[i]
                ),
                1,
            );
        std::fs::write(s.project().join(format!("flows/org-{i}.toml")), flow).unwrap();
    }
    std::fs::remove_file(s.project().join("flows/kantata-xero.toml")).unwrap();
    ok(&s.run(&["flow", "check"], None));
    s.set_env("WEFT_STATE_URL", db.url());
    let state = weft_engine::state::State::open_postgres(
        db.url(),
        &s.project().join(".weft").join("state.db"),
    )
    .unwrap();
    let queue = weft_engine::queue::Queue::open(
        &state,
        weft_engine::queue::QueueRules {
            // Every kill costs the killed worker's jobs an attempt: enough that none is given up.
            max_attempts: 100,
            ..weft_engine::queue::QueueRules::default()
        },
    )
    .unwrap();
    let enqueue_all = |why: &str| {
        for i in 0..BIG_ORGS {
            let now = weft_engine::state::now_ms();
            queue
                .enqueue(&format!("org-{i}"), None, None, why, now)
                .unwrap();
        }
    };

    // Seeded faults: Xero's API, every Kantata account, and Xero's token endpoint.
    add_faults(
        &x.observed().faults,
        &["/api.xro/2.0/Invoices", "/api.xro/2.0/Contacts"],
        &mut rng,
    );
    for k in &ks {
        add_faults(
            &k.observed().faults,
            &[
                "/api/v1/invoices",
                "/api/v1/workspaces",
                "/api/v1/external_payments",
            ],
            &mut rng,
        );
    }
    // The second refresh is handled and its answer held, for the deterministic kill.
    x.identity_observed().faults.add(
        FaultRule::on(
            "/connect/token",
            When::Nth(2),
            Fault::HoldResponse(Duration::from_secs(20)),
        )
        .method("POST"),
    );
    x.identity_observed().faults.add(
        FaultRule::on(
            "/connect/token",
            When::Probability(0.2),
            Fault::Status {
                status: 503,
                body: String::new(),
            },
        )
        .method("POST"),
    );
    x.identity_observed()
        .faults
        .add(FaultRule::on("/connect/token", When::Every(4), Fault::Reset).method("POST"));
    x.identity_observed()
        .faults
        .add(FaultRule::on("/connect/token", When::Every(5), Fault::LoseResponse).method("POST"));

    let warnings = Warnings::default();
    let mut fleet: Vec<Worker> = (0..BIG_WORKERS)
        .map(|_| worker_warning_into(&s, Some(&warnings)))
        .collect();
    let mut kills = 0u32;
    let mut kills_mid_refresh = 0u32;
    let mut last_kill = Instant::now();
    // Every few seconds, a worker killed (SIGKILL on its own process; it has no children) and
    // another started in its place; once, while a refresh's answer is held, every worker.
    let mut killer = |fleet: &mut Vec<Worker>| {
        if kills_mid_refresh == 0 && refresh_held(&x) {
            for mut victim in fleet.drain(..) {
                let pid = rustix::process::Pid::from_child(&victim.child);
                rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
                victim.child.wait().unwrap();
                kills += 1;
            }
            kills_mid_refresh += 1;
            fleet.extend((0..BIG_WORKERS).map(|_| worker_warning_into(&s, Some(&warnings))));
            return;
        }
        if last_kill.elapsed() < KILL_EVERY {
            return;
        }
        last_kill = Instant::now();
        let mut victim = fleet.swap_remove(rng.usize(..fleet.len()));
        let pid = rustix::process::Pid::from_child(&victim.child);
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
        victim.child.wait().unwrap();
        kills += 1;
        fleet.push(worker_warning_into(&s, Some(&warnings)));
    };
    let started = Instant::now();

    // Round one: every organisation's invoices, under faults and kills.
    enqueue_all("schedule");
    drained_while(&db, BIG_DEADLINE, || killer(&mut fleet));
    let round_one = started.elapsed();

    // Round two: an invoice paid in Xero per organisation (one still awaiting payment in
    // Kantata); the payments go to Kantata, still under faults and kills.
    let mut paid = Vec::new();
    let before: Vec<std::collections::BTreeSet<String>> = ks
        .iter()
        .map(|k| k.external_payments().into_iter().map(|p| p.id).collect())
        .collect();
    for (i, tenant) in tenants.iter().enumerate() {
        let awaiting: std::collections::BTreeSet<String> = ks[i]
            .invoices()
            .into_iter()
            .filter(|v| !v.draft && v.status == "new")
            .map(|v| format!("KAN-{}", v.number))
            .collect();
        let payable = x.invoices(tenant).into_iter().find(|v| {
            v["Status"] == "AUTHORISED"
                && v["InvoiceNumber"]
                    .as_str()
                    .is_some_and(|n| awaiting.contains(n))
        });
        if let Some(inv) = payable {
            x.pay_in_full(tenant, inv["InvoiceID"].as_str().unwrap())
                .unwrap();
            paid.push(i);
        }
    }
    assert!(
        paid.len() >= BIG_ORGS / 2,
        "most organisations had an invoice to pay: {}",
        paid.len()
    );
    enqueue_all("schedule");
    drained_while(&db, BIG_DEADLINE, || killer(&mut fleet));

    // Round three: the faults stop (the kills do not); every flow runs once more and finishes
    // what the faults left undone.
    let fired = x.observed().faults.fired()
        + x.identity_observed().faults.fired()
        + ks.iter().map(|k| k.observed().faults.fired()).sum::<u64>();
    x.observed().faults.clear();
    x.identity_observed().faults.clear();
    for k in &ks {
        k.observed().faults.clear();
    }
    enqueue_all("schedule");
    let ended = drained_while(&db, BIG_DEADLINE, || killer(&mut fleet));
    let took = started.elapsed();

    for mut w in fleet {
        let pid = rustix::process::Pid::from_child(&w.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let status = w.child.wait().unwrap();
        assert!(status.success(), "{status:?}");
    }

    // No run lost: every job done (or merged into one queued after it, which is done).
    assert!(
        ended.iter().all(|(_, st)| st == "done" || st == "merged"),
        "{ended:?}"
    );
    assert_eq!(
        ended.iter().filter(|(_, st)| st == "done").count(),
        3 * BIG_ORGS,
        "each organisation's flow ran to its end once a round: {ended:?}"
    );
    let retaken = db
        .query("SELECT count(*) FROM weft_jobs WHERE attempts >= 2")
        .unwrap();
    let retaken: u32 = retaken[0][0].as_deref().unwrap().parse().unwrap();
    assert!(kills >= 3, "workers killed: {kills} in {took:?}");
    assert!(retaken >= 1, "killed workers' jobs taken again: {retaken}");
    assert!(fired > 0, "the faults fired");

    // The tokens did rotate; every refresh token sent twice is a recovery a worker reported
    // (a recovery may also resend a grant Xero never saw: killed before it left), and the
    // refresh cut off by the kill was recovered.
    let (refreshed, _refused) = x.refresh_outcomes();
    assert!(refreshed >= 1, "the access token was refreshed ({took:?})");
    let warnings = warnings
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let recoveries = warnings
        .iter()
        .filter(|l| l.starts_with("warning: connection `xero`: the token refresh begun at "))
        .count() as u64;
    let reuses = x.refresh_reuses();
    assert!(
        kills_mid_refresh >= 1,
        "a kill while a refresh was in flight"
    );
    assert!(reuses >= 1, "the refresh cut off by the kill was resent");
    assert!(
        reuses <= recoveries,
        "{reuses} refresh tokens sent twice, {recoveries} recoveries reported: {warnings:?}"
    );
    let issued = x.issued_tokens();
    assert!(
        !warnings
            .iter()
            .any(|l| issued.iter().any(|t| l.contains(t))),
        "a token in a warning"
    );

    for (i, k) in ks.iter().enumerate() {
        let tenant = &tenants[i];
        let (eligible, by_number) = kantata_invoices_in_xero(k, &x, tenant);
        assert_eq!(
            by_number.len(),
            eligible,
            "organisation {i}: no invoice lost"
        );
        assert!(
            by_number.values().all(|&n| n == 1),
            "organisation {i}: no invoice twice: {by_number:?}"
        );
        let payments: Vec<_> = k
            .external_payments()
            .into_iter()
            .filter(|p| !before[i].contains(&p.id))
            .collect();
        let expected = usize::from(paid.contains(&i));
        assert_eq!(
            payments.len(),
            expected,
            "organisation {i}: its payment once"
        );
        let log = &x.observed().log;
        let minute = log.max_in_window(Some(tenant), 60_000);
        assert!(minute <= 60, "organisation {i}: {minute} calls in a minute");
        let in_flight = log.max_in_flight(Some(tenant));
        assert!(in_flight <= 5, "organisation {i}: {in_flight} in flight");
    }
    // What the run went through, for whoever reads the test's output.
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "fleet: {BIG_ORGS} organisations, {BIG_WORKERS} workers, {kills} killed ({kills_mid_refresh} times all while a refresh was in flight), {fired} faults, {refreshed} refreshes, {reuses} refresh tokens sent twice, {recoveries} recoveries reported; round one {round_one:?}, all {took:?}"
        );
    }
    s.assert_none_of(x.issued_tokens());
}
