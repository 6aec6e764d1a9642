//! `weft queue add` and `weft worker` for a tenant and a stream: a job is for an organisation
//! the flow addresses and a stream it has (anything else refused with what there is), a worker
//! runs only the stream a job asks for, and a job its flow can no longer run as asked (the
//! stream renamed since) is given up at once rather than run for every stream.

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Sandbox, err, flow_sims, flow_workspace, free_port, kantata_invoices_in_xero, out};

const FLOW: &str = "kantata-xero";

fn ok(o: &std::process::Output) {
    assert!(o.status.success(), "{}", err(o));
}

fn worker(s: &Sandbox) -> Child {
    s.command(&["worker", "--lease", "5", "--poll", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The flow's workspace against simulators of its own (`invoices` Kantata invoices), its state
/// in a database of its own.
struct OnPostgres {
    db: weft_harness::postgres::TestDb,
    k: weft_harness::kantata::KantataSim,
    x: weft_harness::xero::XeroSim,
    s: Sandbox,
}

/// [`OnPostgres`] named `label`; `None` where there is no PostgreSQL.
fn on_postgres(label: &str, invoices: usize) -> Option<OnPostgres> {
    let db = weft_harness::postgres::database(&label.replace('-', "_"))?;
    let port = free_port();
    let (k, x) = flow_sims(port, invoices);
    let s = Sandbox::new(label);
    flow_workspace(&s, &k, &x, port);
    s.set_env("WEFT_STATE_URL", db.url());
    Some(OnPostgres { db, k, x, s })
}

/// Stops a worker with SIGTERM; what it printed.
fn stop(w: Child) -> String {
    let pid = rustix::process::Pid::from_child(&w);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let done = w.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "{:?}: {}{}",
        done.status,
        String::from_utf8_lossy(&done.stdout),
        String::from_utf8_lossy(&done.stderr)
    );
    String::from_utf8_lossy(&done.stdout).into_owned()
}

/// Waits (at most 120 s) until job `id` has ended; its status, attempts and run.
fn ended(db: &weft_harness::postgres::TestDb, id: &str) -> (String, String, Option<String>) {
    let started = Instant::now();
    loop {
        let rows = db
            .query(&format!(
                "SELECT status, attempts::TEXT, run_id::TEXT FROM weft_jobs WHERE id = {id}"
            ))
            .unwrap();
        let row = &rows[0];
        let status = row[0].clone().unwrap();
        if status != "queued" && status != "running" {
            return (status, row[1].clone().unwrap(), row[2].clone());
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "job {id} did not end: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The id in `queued job ID (…)`.
fn job_id(said: &str) -> String {
    said.strip_prefix("queued job ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no job id in: {said}"))
        .to_owned()
}

#[test]
fn a_job_for_a_tenant_and_a_stream_runs_that_stream_and_one_it_cannot_run_is_given_up() {
    let Some(OnPostgres { db, k: _k, x, s }) = on_postgres("jobs", 4) else {
        return;
    };
    let tenant = x.tenants()[0].0.clone();

    // Refused, with what there is, and nothing queued.
    let wrong = s.run(&["queue", "add", FLOW, "--tenant", "no-such-org"], None);
    assert_eq!(wrong.status.code(), Some(1), "{}", out(&wrong));
    let said = err(&wrong);
    assert!(
        said.contains("addresses no tenant no-such-org") && said.contains(&tenant),
        "{said}"
    );
    assert!(said.contains(&format!("`weft queue add {FLOW}`")), "{said}");
    let wrong = s.run(&["queue", "add", FLOW, "--stream", "refunds"], None);
    assert_eq!(wrong.status.code(), Some(1), "{}", out(&wrong));
    assert!(
        err(&wrong).contains("has no stream `refunds`; its streams are: invoices, payments"),
        "{}",
        err(&wrong)
    );
    let listed = out(&s.run(&["queue", "list"], None));
    assert!(listed.starts_with("no jobs queued or running"), "{listed}");

    // A job for the organisation's invoices only: the worker runs that stream and no other.
    let added = s.run(
        &[
            "queue", "add", FLOW, "--tenant", &tenant, "--stream", "invoices",
        ],
        None,
    );
    ok(&added);
    let said = out(&added);
    assert!(
        said.contains(&format!(
            "flow `{FLOW}` (stream `invoices` only) for tenant {tenant}"
        )),
        "{said}"
    );
    let id = job_id(&said);
    let listed = out(&s.run(&["queue", "list"], None));
    assert!(listed.contains("invoices"), "{listed}");
    let before = x.invoices(&tenant).len();
    let w = worker(&s);
    let (status, attempts, run) = ended(&db, &id);
    let workers = out(&s.run(&["queue", "workers"], None));
    let pid = w.id().to_string();
    assert!(
        workers
            .lines()
            .any(|l| l.contains(&format!("/{pid}/")) && l.trim_end().ends_with("alive")),
        "{workers}"
    );
    let printed = stop(w);
    assert_eq!(
        (status.as_str(), attempts.as_str()),
        ("done", "1"),
        "{printed}"
    );
    // Stopped cleanly: its row is gone.
    let workers = out(&s.run(&["queue", "workers"], None));
    assert!(workers.starts_with("no workers"), "{workers}");
    let created = x.invoices(&tenant).len() - before;
    assert!(created > 0, "{printed}");
    let shown = out(&s.run(&["runs", "show", &run.unwrap()], None));
    assert!(
        shown.contains(&format!("  invoices: read 4, created {created},")),
        "{shown}"
    );
    assert!(!shown.contains("payments"), "{shown}");

    // A job for the payments stream, which is renamed before a worker takes it: given up on
    // its first attempt (of 5), into the error queue, nothing run.
    let added = s.run(&["queue", "add", FLOW, "--stream", "payments"], None);
    ok(&added);
    let id = job_id(&out(&added));
    let path = s.project().join(format!("flows/{FLOW}.toml"));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("streams.payments", "streams.paid")).unwrap();
    ok(&s.run(&["flow", "check"], None));
    let calls = x.observed().log.requests().len();
    let w = worker(&s);
    let (status, attempts, run) = ended(&db, &id);
    let printed = stop(w);
    assert_eq!(
        (status.as_str(), attempts.as_str()),
        ("failed", "1"),
        "{printed}"
    );
    assert_eq!(run, None, "{printed}");
    assert!(
        printed.contains("cannot run as asked (flow `kantata-xero` has no stream `payments`"),
        "{printed}"
    );
    assert_eq!(
        x.observed().log.requests().len(),
        calls,
        "nothing was called"
    );
    let errors = out(&s.run(&["errors", "show", "1"], None));
    assert!(
        errors.contains(&format!(
            "the run of flow `{FLOW}` (stream `payments` only) was given up after 1 attempt: flow `{FLOW}` has no stream `payments`"
        )),
        "{errors}"
    );
}

/// Workers queue the flows their schedule makes due, without `weft serve`: one worker a turn
/// looks, a due flow is queued once however many workers look, and a flow whose file cannot
/// be read is said (once per worker), not queued.
#[test]
fn workers_queue_scheduled_flows_once_between_them() {
    let Some(OnPostgres { db, k: _k, x, s }) = on_postgres("jobs-schedule", 3) else {
        return;
    };
    let path = s.project().join(format!("flows/{FLOW}.toml"));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("schedule = \"every 1h\"\n{text}")).unwrap();
    std::fs::write(
        s.project().join("flows/broken.toml"),
        format!("schedule = \"now and then\"\n{text}"),
    )
    .unwrap();
    let start = || {
        s.command(&[
            "worker",
            "--lease",
            "5",
            "--poll",
            "1",
            "--schedule-every",
            "1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let workers = [start(), start()];
    let scheduled = || {
        // (The table is made by the first worker to open the state.)
        db.query("SELECT id::TEXT, status FROM weft_jobs WHERE reason = 'schedule' ORDER BY id")
            .unwrap_or_default()
    };
    let started = Instant::now();
    while !scheduled().iter().any(|r| r[1].as_deref() == Some("done")) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the scheduled run did not happen: {:?}",
            scheduled()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A few more turns: the flow ran, so it is not due for an hour.
    std::thread::sleep(Duration::from_secs(4));
    let printed: Vec<String> = workers.into_iter().map(stop).collect();
    let jobs = scheduled();
    assert_eq!(jobs.len(), 1, "{jobs:?} {printed:?}");
    let all = printed.join("\n");
    assert_eq!(
        all.matches(&format!("flow `{FLOW}` queued by its schedule"))
            .count(),
        1,
        "{all}"
    );
    for said in &printed {
        assert!(
            said.matches("flow `broken` cannot be scheduled").count() <= 1,
            "{said}"
        );
    }
    assert!(all.contains("flow `broken` cannot be scheduled"), "{all}");
    assert!(
        x.invoices(&x.tenants()[0].0).len() > 3,
        "the run wrote invoices"
    );
}

/// The database goes away for 4 s in the middle of a run (a restart, a failover), then drops
/// every connection again and again: the worker rides it out — the run fails, the worker keeps
/// what it could not record and records it once the database is back (before the fix it
/// exited on the first error, leaving its job running until a lease ran out) — and every job
/// ends done with every invoice in Xero once.
#[test]
fn a_worker_rides_out_the_database_dropping_its_connections() {
    let Some(OnPostgres { db, k, x, s }) = on_postgres("jobs-outage", 40) else {
        return;
    };
    let w = s
        .command(&[
            "worker",
            "--lease",
            "5",
            "--poll",
            "1",
            "--backoff",
            "1",
            "--no-schedule",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = job_id(&out(
        &s.run(&["queue", "add", FLOW, "--stream", "invoices"], None)
    ));
    // Once the run is under way, the database goes away for 4 s (a restart); then every
    // connection to it is ended, ten times over about 3 s.
    let started = Instant::now();
    while x.invoices(&x.tenants()[0].0).len() <= 3 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    db.outage(Duration::from_secs(4)).unwrap();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(300));
        db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .unwrap();
    }
    let (status, _, _) = ended(&db, &first);
    let second = job_id(&out(&s.run(&["queue", "add", FLOW], None)));
    let (again, _, _) = ended(&db, &second);
    let printed = stop(w);
    assert_eq!(
        (status.as_str(), again.as_str()),
        ("done", "done"),
        "{printed}"
    );
    let (eligible, by_number) = kantata_invoices_in_xero(&k, &x, &x.tenants()[0].0);
    assert_eq!(by_number.len(), eligible, "no invoice lost: {printed}");
    // The outage is told once, and its end once.
    assert!(
        printed.matches("cannot take a job").count() <= 1,
        "{printed}"
    );
    assert_eq!(
        printed.matches("cannot take a job").count(),
        printed.matches("the queue answers again").count(),
        "{printed}"
    );
    assert!(
        by_number.values().all(|n| *n == 1),
        "none twice: {by_number:?}"
    );
}
