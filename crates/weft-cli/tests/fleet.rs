//! A fleet on the simulators: real `weft worker` processes sharing a PostgreSQL state, several
//! Xero organisations each fed by its own Kantata account (one flow each), one worker killed
//! with SIGKILL mid-run. Every invoice reaches its organisation once, every payment its Kantata
//! account once, no organisation sees more than 60 calls in a minute or 5 in flight, and no
//! run is lost.

mod common;

use std::io::BufRead as _;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Sandbox, authorize, callback, err, free_port, out};
use weft_harness::clock::SimClock;
use weft_harness::kantata::{KantataConfig, KantataSim};
use weft_harness::xero::{Consent, XeroConfig, XeroSim};

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

fn worker(s: &Sandbox) -> Worker {
    let mut child = s
        .command(&[
            "worker",
            "--concurrency",
            "2",
            "--lease",
            "3",
            "--poll",
            "1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
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
    let started = Instant::now();
    loop {
        let now = jobs(db);
        if now.iter().all(|(_, s)| s != "queued" && s != "running") {
            return now;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the fleet did not empty the queue: {now:?}"
        );
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
        let eligible = k
            .invoices()
            .into_iter()
            .filter(|v| !v.draft && v.status != "cancelled")
            .count();
        let mut by_number = std::collections::HashMap::new();
        for inv in x.invoices(tenant) {
            if let Some(n) = inv["InvoiceNumber"]
                .as_str()
                .filter(|n| n.starts_with("KAN-"))
            {
                *by_number.entry(n.to_owned()).or_insert(0) += 1;
            }
        }
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
