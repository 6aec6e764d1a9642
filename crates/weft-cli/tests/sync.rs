//! `weft sync` through the real binary against both simulators: the template, a dry run that
//! changes nothing, runs killed with SIGKILL at random moments, and a final run after which
//! every invoice is in Xero exactly once and `weft sync status` and `weft runs` say so.

mod common;

use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Sandbox, authorize, callback, err, free_port, out};
use weft_harness::clock::SimClock;
use weft_harness::kantata::{KantataConfig, KantataSim};
use weft_harness::xero::{Consent, XeroConfig, XeroSim};

fn ok(o: &std::process::Output) {
    assert!(o.status.success(), "{}", err(o));
}

/// Both simulators on the wall clock (Xero's calls taking `latency`), and a workspace with the
/// kantata-xero template whose two connections are authorized through them.
struct World {
    s: Sandbox,
    k: KantataSim,
    x: XeroSim,
    tenant: String,
    eligible: Vec<weft_harness::kantata::InvoiceInfo>,
}

fn world(name: &str, latency: Option<Duration>) -> World {
    let port = free_port();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // The simulators run on the wall clock, like the binary.
    let clock = SimClock::scaled(now, 1);
    let k = KantataSim::start(KantataConfig {
        size: 150,
        clock: clock.clone(),
        redirect_uris: vec![callback(port)],
        ..KantataConfig::default()
    })
    .unwrap();
    let x = XeroSim::start(XeroConfig {
        organisations: 1,
        size: 3,
        clock,
        latency,
        redirect_uris: vec![callback(port)],
        ..XeroConfig::default()
    })
    .unwrap();
    let s = Sandbox::new(name);
    ok(&s.run(&["init", "--template", "kantata-xero"], None));
    for (name, connector, id, secret) in [
        ("kantata-app", "kantata", k.client_id(), k.client_secret()),
        ("xero-app", "xero", x.client_id(), x.client_secret()),
    ] {
        s.guard(secret);
        s.add_client(name, connector, id, &format!("{secret}\n"));
    }
    let (app, api) = (
        format!("app={}", k.app_url()),
        format!("api={}", k.api_url()),
    );
    ok(&s.run(
        &[
            "connection",
            "create",
            "kantata",
            "--connector",
            "kantata",
            "--client",
            "kantata-app",
            "--host",
            &app,
            "--host",
            &api,
        ],
        None,
    ));
    let (login, identity, xapi) = (
        format!("login={}", x.login_url()),
        format!("identity={}", x.identity_url()),
        format!("api={}", x.api_url()),
    );
    ok(&s.run(
        &[
            "connection",
            "create",
            "xero",
            "--connector",
            "xero",
            "--client",
            "xero-app",
            "--host",
            &login,
            "--host",
            &identity,
            "--host",
            &xapi,
        ],
        None,
    ));
    x.set_consent(Consent::Grant {
        tenants: vec![x.tenants()[0].0.clone()],
    });
    for name in ["kantata", "xero"] {
        let (code, _, stderr) = authorize(&s, name, port, &[]);
        assert_eq!(code, 0, "{stderr}");
    }
    let tenant = x.tenants()[0].0.clone();
    let eligible: Vec<_> = k
        .invoices()
        .into_iter()
        .filter(|i| !i.draft && i.status != "cancelled")
        .collect();

    World {
        s,
        k,
        x,
        tenant,
        eligible,
    }
}

/// Every eligible Kantata invoice (`expected` of them) is in Xero, each exactly once.
fn each_invoice_once(x: &XeroSim, tenant: &str, expected: usize) {
    let mut by_number = std::collections::HashMap::new();
    for inv in x.invoices(tenant) {
        if let Some(n) = inv["InvoiceNumber"]
            .as_str()
            .filter(|n| n.starts_with("KAN-"))
        {
            *by_number.entry(n.to_owned()).or_insert(0) += 1;
        }
    }
    assert_eq!(by_number.len(), expected, "no invoice lost");
    assert!(
        by_number.values().all(|&n| n == 1),
        "no invoice twice: {by_number:?}"
    );
}

#[test]
fn killed_runs_never_duplicate_and_the_last_run_finishes_the_job() {
    let World {
        s,
        k,
        x,
        tenant,
        eligible,
    } = world("sync-kill", None);
    // A dry run lists what it would do and changes nothing.
    let dry = s.run(&["sync", "run", "kantata-xero", "--dry-run"], None);
    ok(&dry);
    assert!(out(&dry).contains("would create"), "{}", out(&dry));
    assert_eq!(x.creates(&tenant), 0);

    // While another process holds the flow, a run is refused with who holds it (exit 11), and
    // a run with `--wait` waits, then runs once the lock is free.
    let lock = s.project().join(".weft/locks/flow-kantata-xero.lock");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    std::fs::write(&lock, "held by process 4242 since 2026-12-04T00:00:00Z").unwrap();
    let holder = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&lock)
        .unwrap();
    holder.lock().unwrap();
    let refused = s.run(&["sync", "run", "kantata-xero", "--dry-run"], None);
    assert_eq!(refused.status.code(), Some(11), "{}", err(&refused));
    assert!(
        err(&refused).contains("already running"),
        "{}",
        err(&refused)
    );
    assert!(
        err(&refused).contains("held by process 4242"),
        "{}",
        err(&refused)
    );
    assert!(err(&refused).contains("--wait"), "{}", err(&refused));
    let mut waiting = s
        .command(&["sync", "run", "kantata-xero", "--dry-run", "--wait", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "a run with --wait waits while the flow is held"
    );
    holder.unlock().unwrap();
    drop(holder);
    let waited = waiting.wait_with_output().unwrap();
    assert!(waited.status.success(), "{}", err(&waited));
    assert!(out(&waited).contains("would create"), "{}", out(&waited));

    // A second run while one holds the flow is refused with who holds it (exit 11).
    let mut first = s
        .command(&["sync", "run", "kantata-xero"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = s.project().join(".weft/locks/flow-kantata-xero.lock");
    let held = (0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        std::fs::read_to_string(&lock).is_ok_and(|t| t.contains("held by process"))
    });
    if held && first.try_wait().unwrap().is_none() {
        let second = s.run(&["sync", "run", "kantata-xero"], None);
        if first.try_wait().unwrap().is_none() {
            assert_eq!(second.status.code(), Some(11), "{}", err(&second));
            assert!(err(&second).contains("already running"), "{}", err(&second));
            assert!(err(&second).contains("held by process"), "{}", err(&second));
        }
    }
    first.kill().ok();
    first.wait().unwrap();

    // Killed (SIGKILL) at moments spread over the run.
    let mut rng = fastrand::Rng::with_seed(11);
    let mut killed = 0;
    for _ in 0..6 {
        let mut child = s
            .command(&["sync", "run", "kantata-xero"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.u64(30..400)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
    }
    assert!(killed >= 3, "runs were killed mid-way ({killed})");

    let last = s.run(&["sync", "run", "kantata-xero", "--json"], None);
    assert_eq!(last.status.code(), Some(0), "{}", err(&last));
    each_invoice_once(&x, &tenant, eligible.len());

    let status = s.run(&["sync", "status"], None);
    ok(&status);
    assert!(out(&status).contains("kantata-xero"), "{}", out(&status));
    assert!(out(&status).contains("open errors: 0"), "{}", out(&status));
    assert!(out(&status).contains(": completed"), "{}", out(&status));
    let runs = s.run(&["runs", "list", "--json"], None);
    ok(&runs);
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    let runs = runs.as_array().unwrap();
    assert!(
        runs.len() >= 2,
        "the dry run and the last run at least: {runs:?}"
    );
    assert_eq!(runs[0]["outcome"]["status"], "completed", "{:?}", runs[0]);

    s.assert_none_of(
        x.issued_tokens()
            .into_iter()
            .chain(k.issued_tokens())
            .collect(),
    );
}

/// `weft flow list|show|check` on the shipped template, and a typo found with its location.
#[test]
fn flows_are_listed_shown_and_checked_with_located_problems() {
    let s = Sandbox::new("flow-cmds");
    ok(&s.run(&["init", "--template", "kantata-xero"], None));
    let list = s.run(&["flow", "list"], None);
    ok(&list);
    assert!(
        out(&list).contains("kantata-xero  streams: invoices, payments"),
        "{}",
        out(&list)
    );
    let show = s.run(&["flow", "show", "kantata-xero"], None);
    ok(&show);
    assert!(
        out(&show).contains(
            "stream payments: xero.invoices → kantata.external_payments (joined to invoices)"
        ),
        "{}",
        out(&show)
    );
    let check = s.run(&["flow", "check"], None);
    ok(&check);
    assert!(
        out(&check).contains("1 flow(s) checked, 0 problem(s)"),
        "{}",
        out(&check)
    );
    let path = s.project().join("flows/kantata-xero.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\nTaxType =", "\nTaxTipe =")).unwrap();
    let check = s.run(&["flow", "check", "kantata-xero"], None);
    assert_eq!(check.status.code(), Some(1));
    let text = out(&check);
    assert!(
        text.contains("has no field `TaxTipe`; did you mean `TaxType`?"),
        "{text}"
    );
    assert!(text.contains("flows/kantata-xero.toml:"), "{text}");
    // A run refuses the flow the same way, before any call.
    let run = s.run(&["sync", "run", "kantata-xero"], None);
    assert_eq!(run.status.code(), Some(1));
    assert!(err(&run).contains("TaxTipe"), "{}", err(&run));
    let missing = s.run(&["flow", "show", "nope"], None);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        err(&missing).contains("the flows are: kantata-xero"),
        "{}",
        err(&missing)
    );
}

/// A `weft serve` child, killed when dropped (a failing assertion must not leave it running).
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `weft serve` on a free loopback port, and the lines it prints on stderr.
fn serve(s: &Sandbox) -> (Server, std::sync::mpsc::Receiver<String>) {
    let mut child = s
        .command(&["serve", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(child.stderr.take().unwrap());
    (Server(child), lines)
}

/// The lines `weft serve` printed so far, read on a thread of their own.
fn lines_of(stream: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stream)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (at most 120 s) for a line of `lines` containing `what`.
fn wait_for(lines: &std::sync::mpsc::Receiver<String>, what: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(what) => return line,
            Ok(_) => {}
            Err(e) => panic!("`weft serve` did not print {what:?} within 120 s ({e})"),
        }
    }
}

#[test]
fn serve_killed_during_a_scheduled_run_loses_and_duplicates_nothing_and_shows_it_interrupted() {
    // Each Xero call takes 150 ms, so the run is under way long enough to be killed mid-way.
    let World {
        s,
        k,
        x,
        tenant,
        eligible,
    } = world("serve-kill", Some(Duration::from_millis(150)));
    let flow = s.project().join("flows/kantata-xero.toml");
    let text = std::fs::read_to_string(&flow).unwrap();
    std::fs::write(&flow, format!("schedule = \"every 1h\"\n{text}")).unwrap();
    s.guard("serve-kill password 1");
    ok(&s.run(
        &["user", "add", "alice", "--password-stdin"],
        Some("serve-kill password 1\n"),
    ));

    // Never ran: the server runs it at start; it is killed (SIGKILL) once invoices are being
    // created in Xero.
    let (server, lines) = serve(&s);
    wait_for(&lines, "its schedule fell due");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while x.creates_of(&tenant, "Invoices") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the scheduled run created nothing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(server);
    let runs = s.run(&["runs", "list", "--json"], None);
    ok(&runs);
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert!(runs[0]["outcome"].is_null(), "no end: {runs}");
    let shown = s.run(&["runs", "show", "1"], None);
    ok(&shown);
    assert!(out(&shown).contains("interrupted"), "{}", out(&shown));

    // Started again: the interrupted run's work is unfinished, so the flow runs at once and
    // settles what the killed one left.
    let (server, lines) = serve(&s);
    wait_for(&lines, "its schedule fell due");
    let ended = wait_for(&lines, "ended:");
    drop(server);
    assert!(ended.contains("ended: completed"), "{ended}");

    each_invoice_once(&x, &tenant, eligible.len());
    let runs = s.run(&["runs", "list", "--json"], None);
    ok(&runs);
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(runs[0]["outcome"]["status"], "completed", "{runs}");
    assert!(runs[1]["outcome"].is_null(), "{runs}");
    let shown = s.run(&["runs", "show", "1"], None);
    assert!(out(&shown).contains("interrupted"), "{}", out(&shown));
    s.assert_none_of(
        x.issued_tokens()
            .into_iter()
            .chain(k.issued_tokens())
            .collect(),
    );
}

#[test]
fn a_recorded_read_replays_offline_and_a_changed_one_is_caught() {
    let World {
        s, k, x, tenant, ..
    } = world("spec-record", None);
    let dir = s.project().join("cassettes");
    let dir_text = dir.display().to_string();
    for (connection, resource) in [("xero", "contacts"), ("kantata", "invoices")] {
        let rec = s.run(
            &["spec", "record", connection, resource, "--out", &dir_text],
            None,
        );
        ok(&rec);
        assert!(out(&rec).contains("recorded"), "{}", out(&rec));
    }
    let contacts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("xero-contacts.json")).unwrap())
            .unwrap();
    assert_eq!(
        contacts["records"].as_u64().unwrap() as usize,
        x.contacts(&tenant).len()
    );
    assert_eq!(contacts["tenant"], tenant.as_str());
    // Nothing personal or secret is kept: no e-mail address or name of a person, no token.
    let tapes = [
        std::fs::read_to_string(dir.join("xero-contacts.json")).unwrap(),
        std::fs::read_to_string(dir.join("kantata-invoices.json")).unwrap(),
    ];
    for c in x.contacts(&tenant) {
        if let Some(email) = c["EmailAddress"].as_str().filter(|e| !e.is_empty()) {
            assert!(!tapes[0].contains(email), "{email} was recorded");
        }
    }
    for token in x.issued_tokens().into_iter().chain(k.issued_tokens()) {
        assert!(
            tapes.iter().all(|t| !t.contains(&token)),
            "a token was recorded"
        );
    }
    assert!(
        !tapes[0].contains(&x.api_url()),
        "base URLs become placeholders"
    );
    // The providers gone, the spec replays both recordings.
    drop(x);
    drop(k);
    let specs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../specs");
    for spec in ["xero", "kantata"] {
        let path = specs.join(format!("{spec}.toml")).display().to_string();
        let replay = s.run(&["spec", "test", &path, "--cassettes", &dir_text], None);
        assert!(replay.status.success(), "{}{}", out(&replay), err(&replay));
        assert!(out(&replay).contains("✓"), "{}", out(&replay));
    }
    // A throwaway credential store a killed replay left behind, under the name this replay's
    // process id would once have given its own (the shell makes it, then becomes `weft` under
    // the same id), is neither opened nor removed.
    let tmp = s.project().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let xero = specs.join("xero.toml");
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"mkdir "$TMPDIR/weft-spec-test-$$" && cp "$1" "$TMPDIR/weft-spec-test-$$/credentials.json" && exec "$0" spec test "$2" --cassettes "$3""#)
        .arg(env!("CARGO_BIN_EXE_weft"))
        .arg(s.project().join(".weft/credentials.json"))
        .arg(&xero)
        .arg(&dir)
        .current_dir(s.project())
        .env("TMPDIR", &tmp)
        .env("WEFT_CONFIG_DIR", s.config())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let leftover = tmp.join(format!("weft-spec-test-{}/credentials.json", child.id()));
    let replay = child.wait_with_output().unwrap();
    assert!(replay.status.success(), "{}{}", out(&replay), err(&replay));
    assert!(leftover.is_file(), "the leftover was removed");
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        1,
        "only the leftover is left"
    );
    // A recording the spec no longer matches (its last answer gone): caught, exit 1.
    let path = dir.join("kantata-invoices.json");
    let mut tape: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    tape["exchanges"].as_array_mut().unwrap().pop();
    std::fs::write(&path, tape.to_string()).unwrap();
    let kantata = specs.join("kantata.toml").display().to_string();
    let broken = s.run(&["spec", "test", &kantata, "--cassettes", &dir_text], None);
    assert_eq!(broken.status.code(), Some(1), "{}", out(&broken));
    assert!(
        out(&broken).contains("which the recording does not have"),
        "{}",
        out(&broken)
    );
    let none = s.run(
        &["spec", "test", &kantata, "--cassettes", "/nonexistent"],
        None,
    );
    assert!(
        err(&none).contains("cannot read the cassettes folder"),
        "{}",
        err(&none)
    );
}

/// `weft init --template kantata-quickbooks` writes the flow and its own item tables beside an
/// existing kantata-xero workspace (whose account tables it leaves alone), the next steps name
/// QuickBooks, and the flow checks clean against the shipped specs.
#[test]
fn the_quickbooks_template_joins_a_workspace_and_names_its_own_next_steps() {
    let s = Sandbox::new("init-qbo");
    ok(&s.run(&["init", "--template", "kantata-xero"], None));
    let o = s.run(&["init", "--template", "kantata-quickbooks"], None);
    ok(&o);
    let said = out(&o);
    assert!(
        said.contains("flows/kantata-quickbooks.toml")
            && said.contains("tables/quickbooks-line-items.csv")
            && said.contains("`weft client add quickbooks-app --connector quickbooks`")
            && !said.contains("xero"),
        "{said}"
    );
    assert!(s.project().join("tables/line-accounts.csv").is_file());
    let check = s.run(&["flow", "check", "kantata-quickbooks"], None);
    ok(&check);
    assert!(out(&check).contains("0 problem(s)"), "{}", out(&check));
}
