//! `weft runs …` and `weft errors …` through the real binary, on a state database seeded with
//! the engine's own `State` (as a sync would leave it).

mod common;

use common::{Sandbox, err, out};
use weft_engine::state::{RunOutcome, RunSummary, State};

fn ok(o: &std::process::Output) {
    assert!(o.status.success(), "{}\n{}", out(o), err(o));
}

fn db(s: &Sandbox) -> std::path::PathBuf {
    s.project().join(".weft").join("state.db")
}

fn workspace(name: &str) -> Sandbox {
    let s = Sandbox::new(name);
    ok(&s.run(&["init"], None));
    s
}

/// Three runs of `invoices` (completed, stopped by a daily cap, a dry run left unfinished) and
/// one of `payments`; two errors in `invoices`, one in `payments`.
struct Seeded {
    completed: i64,
    stopped: i64,
    unfinished: i64,
    payments: i64,
    account: i64,
    contact: i64,
    payment: i64,
}

const T0: u64 = 1_764_000_000_000; // 2025-11-24 16:00:00 UTC

fn seed(s: &Sandbox) -> Seeded {
    seed_into(&State::open(&db(s)).unwrap())
}

fn seed_into(st: &State) -> Seeded {
    let completed = st.start_run("invoices", false, T0).unwrap();
    let summary = RunSummary {
        read: 120,
        created: 100,
        updated: 7,
        unchanged: 11,
        failed: 2,
        lookups_created: 9,
        calls: 14,
        rate_limited: 1,
        waited_ms: 61_000,
        ..RunSummary::default()
    };
    st.finish_run(completed, &summary, &RunOutcome::Completed, T0 + 125_000)
        .unwrap();
    let stopped = st.start_run("invoices", false, T0 + 200_000).unwrap();
    st.finish_run(
        stopped,
        &RunSummary {
            read: 5_000,
            created: 4_950,
            ..RunSummary::default()
        },
        &RunOutcome::Stopped {
            reason: "Xero's daily call limit is used up".into(),
        },
        T0 + 300_000,
    )
    .unwrap();
    let payments = st.start_run("payments", false, T0 + 400_000).unwrap();
    st.finish_run(
        payments,
        &RunSummary {
            written_back: 3,
            ..RunSummary::default()
        },
        &RunOutcome::Failed {
            reason: "the Kantata token was refused".into(),
        },
        T0 + 401_000,
    )
    .unwrap();
    let unfinished = st.start_run("invoices", true, T0 + 500_000).unwrap();
    let account = st
        .queue_error(
            "invoices",
            "invoice",
            "K-1001",
            "write",
            "Account code '999' is not a valid code for this document.",
            Some(completed),
            T0 + 60_000,
        )
        .unwrap();
    let contact = st
        .queue_error(
            "invoices",
            "invoice",
            "K-1002",
            "map",
            "no Xero contact for client `Acme`\nsecond line of detail",
            Some(completed),
            T0 + 61_000,
        )
        .unwrap();
    let payment = st
        .queue_error(
            "payments",
            "payment",
            "X-9",
            "write",
            "invoice is closed",
            Some(payments),
            T0 + 400_500,
        )
        .unwrap();
    Seeded {
        completed,
        stopped,
        unfinished,
        payments,
        account,
        contact,
        payment,
    }
}

#[test]
fn outside_a_workspace_says_to_run_init() {
    let s = Sandbox::new("state-outside");
    for args in [
        &["runs", "list"][..],
        &["runs", "show", "1"],
        &["errors", "list"],
        &["errors", "retry", "--all"],
    ] {
        let o = s.run(args, None);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(err(&o).contains("weft init"), "{}", err(&o));
    }
    assert!(!s.project().join(".weft").exists());
}

#[test]
fn empty_states_say_what_to_do_next() {
    let s = workspace("state-empty");
    let runs = s.run(&["runs", "list"], None);
    ok(&runs);
    assert!(
        out(&runs).contains("no runs yet; run `weft sync run FLOW`"),
        "{}",
        out(&runs)
    );
    let runs = s.run(&["runs", "list", "--flow", "invoices"], None);
    assert!(
        out(&runs).contains("weft sync run invoices"),
        "{}",
        out(&runs)
    );
    let errors = s.run(&["errors", "list"], None);
    ok(&errors);
    assert!(out(&errors).contains("no errors"), "{}", out(&errors));
    for args in [
        &["runs", "list", "--json"][..],
        &["errors", "list", "--json"],
    ] {
        let o = s.run(args, None);
        ok(&o);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v, serde_json::json!([]));
    }
}

#[test]
fn runs_list_and_show() {
    let s = workspace("state-runs");
    let seeded = seed(&s);

    let list = s.run(&["runs", "list"], None);
    ok(&list);
    let text = out(&list);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(
        lines[0].contains("ID") && lines[0].contains("OUTCOME"),
        "{text}"
    );
    // Newest first.
    assert!(
        lines[1]
            .trim_start()
            .starts_with(&seeded.unfinished.to_string())
    );
    assert!(
        lines[1].contains("interrupted") && lines[1].contains("yes"),
        "{text}"
    );
    assert!(
        lines[2].contains("payments") && lines[2].contains("failed"),
        "{text}"
    );
    assert!(lines[3].contains("stopped"), "{text}");
    assert!(lines[4].contains("completed"), "{text}");
    assert!(lines[4].contains("2025-11-24 16:00:00"), "{text}");
    assert!(lines[4].contains("2m 05s"), "{text}");
    assert!(lines[4].contains("1m 01s"), "{text}");

    let only = s.run(
        &[
            "runs", "list", "--flow", "invoices", "--limit", "2", "--json",
        ],
        None,
    );
    ok(&only);
    let v: serde_json::Value = serde_json::from_slice(&only.stdout).unwrap();
    let ids: Vec<i64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [seeded.unfinished, seeded.stopped]);
    assert_eq!(v[1]["outcome"]["status"], "stopped");
    assert_eq!(v[1]["summary"]["created"], 4_950);
    assert_eq!(v[0]["outcome"], serde_json::Value::Null);

    let show = s.run(&["runs", "show", &seeded.completed.to_string()], None);
    ok(&show);
    let text = out(&show);
    for want in [
        "flow:       invoices",
        "outcome:    completed",
        "read:       120",
        "created:    100",
        "failed:     2",
        "looked-up records created: 9",
        "calls:      14 (1 rate limited, 1m 01s waiting on rate limits)",
        "2 queued by this run; see `weft errors list --flow invoices`",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let stopped = out(&s.run(&["runs", "show", &seeded.stopped.to_string()], None));
    assert!(
        stopped.contains("stopped: Xero's daily call limit is used up"),
        "{stopped}"
    );
    assert!(stopped.contains("resumes where it stopped"), "{stopped}");
    let failed = out(&s.run(&["runs", "show", &seeded.payments.to_string()], None));
    assert!(
        failed.contains("failed: the Kantata token was refused"),
        "{failed}"
    );
    let unfinished = out(&s.run(&["runs", "show", &seeded.unfinished.to_string()], None));
    assert!(unfinished.contains("dry run:    yes"), "{unfinished}");
    assert!(unfinished.contains("not yet"), "{unfinished}");

    let json = s.run(
        &["runs", "show", &seeded.completed.to_string(), "--json"],
        None,
    );
    ok(&json);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["id"], seeded.completed);
    assert_eq!(v["summary"]["waited_ms"], 61_000);
    assert_eq!(v["outcome"]["status"], "completed");
    assert_eq!(v["errors_queued"], 2);

    let missing = s.run(&["runs", "show", "999"], None);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        err(&missing).contains("no run 999; see `weft runs list`"),
        "{}",
        err(&missing)
    );
}

#[test]
fn errors_list_show_retry_resolve() {
    let s = workspace("state-errors");
    let seeded = seed(&s);
    let (account, contact, payment) = (
        seeded.account.to_string(),
        seeded.contact.to_string(),
        seeded.payment.to_string(),
    );

    let list = s.run(&["errors", "list"], None);
    ok(&list);
    let text = out(&list);
    assert!(
        text.contains("K-1001") && text.contains("K-1002") && text.contains("X-9"),
        "{text}"
    );
    // The table keeps one line per entry.
    assert!(!text.contains("second line of detail"), "{text}");
    assert!(text.contains("weft errors retry ID"), "{text}");
    let invoices = out(&s.run(&["errors", "list", "--flow", "invoices"], None));
    assert!(!invoices.contains("X-9"), "{invoices}");

    let show = s.run(&["errors", "show", &contact], None);
    ok(&show);
    let text = out(&show);
    for want in [
        "record:     invoice `K-1002`",
        "stage:      map",
        "status:     open",
        "attempts:   1",
        "  no Xero contact for client `Acme`",
        "  second line of detail",
        &format!("weft runs show {}", seeded.completed),
        &format!("weft errors retry {contact}"),
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let json = s.run(&["errors", "show", &account, "--json"], None);
    ok(&json);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["source_id"], "K-1001");
    assert_eq!(v["status"], "open");

    // Retry one; again says so.
    let retry = s.run(&["errors", "retry", &account], None);
    ok(&retry);
    assert!(
        out(&retry).contains("the next `weft sync run invoices` reads invoice `K-1001` again"),
        "{}",
        out(&retry)
    );
    let again = s.run(&["errors", "retry", &account], None);
    ok(&again);
    assert!(
        out(&again).contains("already marked for retry"),
        "{}",
        out(&again)
    );
    let st = State::open(&db(&s)).unwrap();
    assert_eq!(st.retries("invoices", "invoice").unwrap(), ["K-1001"]);

    // Resolve with a note; a closed entry cannot be retried or resolved again.
    let empty_note = s.run(&["errors", "resolve", &payment, "--note", "  "], None);
    assert_eq!(empty_note.status.code(), Some(1));
    assert!(
        err(&empty_note).contains("--note is empty"),
        "{}",
        err(&empty_note)
    );
    let resolve = s.run(
        &[
            "errors",
            "resolve",
            &payment,
            "--note",
            "paid by hand in Kantata",
        ],
        None,
    );
    ok(&resolve);
    assert!(out(&resolve).contains("resolved"), "{}", out(&resolve));
    let e = st.error(seeded.payment).unwrap().unwrap();
    assert_eq!(e.status, "resolved");
    assert_eq!(e.note.as_deref(), Some("paid by hand in Kantata"));
    let twice = s.run(&["errors", "resolve", &payment], None);
    assert_eq!(twice.status.code(), Some(1));
    assert!(
        err(&twice).contains("already closed (resolved)"),
        "{}",
        err(&twice)
    );
    let closed = s.run(&["errors", "retry", &payment], None);
    assert_eq!(closed.status.code(), Some(1));
    assert!(
        err(&closed).contains("nothing to retry"),
        "{}",
        err(&closed)
    );

    // The closed entry shows with --all only.
    assert!(!out(&s.run(&["errors", "list"], None)).contains("X-9"));
    let all = out(&s.run(&["errors", "list", "--all"], None));
    assert!(all.contains("X-9") && all.contains("resolved"), "{all}");
    let none_open = out(&s.run(&["errors", "list", "--flow", "payments"], None));
    assert!(
        none_open.contains("no open errors (1 closed"),
        "{none_open}"
    );

    // Retry every open error of a flow.
    let bulk = s.run(&["errors", "retry", "--all", "--flow", "invoices"], None);
    ok(&bulk);
    assert!(
        out(&bulk).contains("1 error marked for retry"),
        "{}",
        out(&bulk)
    );
    assert_eq!(
        st.retries("invoices", "invoice").unwrap(),
        ["K-1001", "K-1002"]
    );
    let nothing = s.run(&["errors", "retry", "--all"], None);
    ok(&nothing);
    assert!(
        out(&nothing).contains("no open errors to retry"),
        "{}",
        out(&nothing)
    );

    let missing = s.run(&["errors", "show", "4242"], None);
    assert_eq!(missing.status.code(), Some(1));
    assert!(err(&missing).contains("no error 4242"), "{}", err(&missing));
    for bad in [
        &["errors", "resolve", "4242"][..],
        &["errors", "retry", "4242"],
    ] {
        let o = s.run(bad, None);
        assert_eq!(o.status.code(), Some(1), "{bad:?}");
        assert!(err(&o).contains("no error 4242"), "{}", err(&o));
    }
}

#[test]
fn bad_command_lines_exit_2() {
    let s = workspace("state-usage");
    for args in [
        &["runs", "show", "abc"][..],
        &["runs", "show", "0"],
        &["runs", "list", "--limit", "0"],
        &["runs", "list", "--limit", "many"],
        &["errors", "show"],
        &["errors", "retry"],
        &["errors", "retry", "1", "--all"],
        &["errors", "retry", "1", "--flow", "invoices"],
        &["errors", "retry", "--flow", "invoices"],
        &["errors", "resolve", "-3"],
    ] {
        let o = s.run(args, None);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", err(&o));
    }
}

#[test]
fn a_damaged_or_newer_database_is_a_clear_error() {
    let s = workspace("state-damaged");
    std::fs::create_dir_all(db(&s).parent().unwrap()).unwrap();
    std::fs::write(db(&s), vec![0x5A; 8192]).unwrap();
    for args in [&["runs", "list"][..], &["errors", "list"]] {
        let o = s.run(args, None);
        assert_eq!(o.status.code(), Some(1));
        let text = err(&o);
        assert!(text.contains("is not a Weft state database"), "{text}");
        assert!(text.contains("state.db"), "{text}");
        assert!(!text.contains("panicked"), "{text}");
    }
    std::fs::remove_file(db(&s)).unwrap();
    drop(State::open(&db(&s)).unwrap());
    set_user_version(&db(&s), 42);
    let o = s.run(&["runs", "list"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("newer Weft"), "{}", err(&o));
}

/// Sets the schema version of a database, as a newer Weft would.
fn set_user_version(path: &std::path::Path, version: i64) {
    // Through SQLite's own header: bytes 60..64 hold user_version, big-endian.
    let mut bytes = std::fs::read(path).unwrap();
    bytes[60..64].copy_from_slice(&i32::try_from(version).unwrap().to_be_bytes());
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn the_same_commands_read_the_same_state_on_postgres() {
    let Some(pg) = weft_harness::postgres::database("cli_state") else {
        return;
    };
    let lite = workspace("state-on-sqlite");
    let seeded = seed(&lite);
    let s = workspace("state-on-postgres");
    let on_pg = seed_into(&State::open_postgres(pg.url(), &db(&s)).unwrap());
    assert_eq!(on_pg.completed, seeded.completed);
    assert_eq!(on_pg.payment, seeded.payment);
    let toml = s.project().join("weft.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, format!("{text}\n[state]\nurl = \"{}\"\n", pg.url())).unwrap();
    let completed = seeded.completed.to_string();
    let contact = seeded.contact.to_string();
    for args in [
        &["runs", "list"][..],
        &["runs", "list", "--json"],
        &["runs", "show", &completed],
        &["errors", "list", "--all"],
        &["errors", "show", &contact],
    ] {
        let (a, b) = (lite.run(args, None), s.run(args, None));
        ok(&a);
        ok(&b);
        // The interrupted run shows alike on both: no flow lock is held in either workspace.
        assert_eq!(out(&a), out(&b), "weft {}", args.join(" "));
    }
    assert!(
        !db(&s).exists(),
        "no SQLite file made beside a PostgreSQL state"
    );

    // WEFT_STATE_URL chooses the database too (here, without the [state] table).
    std::fs::write(&toml, &text).unwrap();
    let listed = s.run_env(&["runs", "list"], None, &[("WEFT_STATE_URL", pg.url())]);
    ok(&listed);
    assert_eq!(out(&listed), out(&lite.run(&["runs", "list"], None)));
}

#[test]
fn a_state_url_is_checked_where_it_is_written_and_never_printed() {
    let s = workspace("state-url-rules");
    s.guard("s3cret");
    let toml = s.project().join("weft.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let lines = text.lines().count();
    for (url, says) in [
        ("postgres://weft:s3cret@db.example/acme", "holds a password"),
        ("mysql://weft@db.example/acme", "postgres://"),
        ("postgres://weft@db.example/acme?sslmode=often", "sslmode"),
    ] {
        std::fs::write(&toml, format!("{text}\n[state]\nurl = \"{url}\"\n")).unwrap();
        let o = s.run(&["runs", "list"], None);
        assert_eq!(o.status.code(), Some(1), "{url}");
        let e = err(&o);
        assert!(e.contains(says), "{url}: {e}");
        assert!(e.contains(&format!("line {}", lines + 3)), "{url}: {e}");
    }
    std::fs::write(&toml, format!("{text}\n[state]\nhost = \"db\"\n")).unwrap();
    let o = s.run(&["runs", "list"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("host"), "{}", err(&o));

    // A server nobody answers on: the error names it without the password, and what to check.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(&toml, &text).unwrap();
    let url = format!("postgres://weft:s3cret@127.0.0.1:{port}/acme?sslmode=disable");
    let o = s.run_env(&["runs", "list"], None, &[("WEFT_STATE_URL", &url)]);
    assert_eq!(o.status.code(), Some(1));
    let e = err(&o);
    assert!(
        e.contains(&format!("postgres://weft@127.0.0.1:{port}/acme")),
        "{e}"
    );
    assert!(e.contains("WEFT_STATE_URL"), "{e}");
}

#[test]
fn state_migrate_copies_to_postgres_and_says_how_to_switch() {
    let Some(pg) = weft_harness::postgres::database("cli_migrate") else {
        return;
    };
    let s = workspace("state-migrate");
    let nothing = s.run(&["state", "migrate", "--to", pg.url()], None);
    assert_eq!(nothing.status.code(), Some(1));
    assert!(
        err(&nothing).contains("no SQLite state"),
        "{}",
        err(&nothing)
    );
    seed(&s);
    let before = s.run(&["errors", "list", "--all"], None);
    ok(&before);
    // A client's secret, sealed in the workspace's local file for now.
    s.guard("client-s3cret-value");
    ok(&s.run(
        &[
            "client",
            "add",
            "acme",
            "--secret-stdin",
            "--connector",
            "xero",
            "--client-id",
            "ABC123",
        ],
        Some("client-s3cret-value\n"),
    ));

    let o = s.run(&["state", "migrate", "--to", pg.url()], None);
    ok(&o);
    let text = out(&o);
    for line in [
        "cursors",
        "links",
        "runs            4 rows in SQLite,        4 in PostgreSQL, checksums match",
        "errors          3 rows in SQLite,        3 in PostgreSQL, checksums match",
        "credentials: 1 copied, 0 already there, 1 read back and opened",
        "the database sees no plain secret",
        "shares the connections' credentials",
        "The copy is complete",
        "[state]",
        "`weft state password`",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }
    let again = s.run(&["state", "migrate", "--to", pg.url()], None);
    ok(&again);
    assert!(
        out(&again).contains("went on from an earlier copy")
            && out(&again).contains("credentials: 0 copied, 1 already there"),
        "{}",
        out(&again)
    );
    let rows = pg.query("SELECT id, sealed FROM weft_credentials").unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(!format!("{rows:?}").contains("client-s3cret-value"));

    let toml = s.project().join("weft.toml");
    let body = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, format!("{body}\n[state]\nurl = \"{}\"\n", pg.url())).unwrap();
    let after = s.run(&["errors", "list", "--all"], None);
    ok(&after);
    assert_eq!(out(&after), out(&before));
    // With the state there, the secret is read from the database: gone from the file, still
    // stored.
    std::fs::remove_file(s.project().join(".weft/credentials.json")).unwrap();
    let shown = s.run(&["client", "show", "acme"], None);
    ok(&shown);
    assert!(
        out(&shown).contains("secret:     stored"),
        "{}",
        out(&shown)
    );
    // A key rotation reaches the database's store too, in its one transaction.
    let sealed_before = pg.query("SELECT sealed FROM weft_credentials").unwrap();
    let rotated = s.run(&["secrets", "rotate-key"], None);
    ok(&rotated);
    assert!(
        out(&rotated).contains("re-sealed 1 credential(s) in 1 store(s)"),
        "{}",
        out(&rotated)
    );
    let sealed_after = pg.query("SELECT sealed FROM weft_credentials").unwrap();
    assert_ne!(sealed_after, sealed_before);
    let shown = s.run(&["client", "show", "acme"], None);
    ok(&shown);
    assert!(
        out(&shown).contains("secret:     stored"),
        "{}",
        out(&shown)
    );

    // Another workspace cannot copy into it.
    let other = workspace("state-migrate-other");
    seed(&other);
    let refused = other.run(&["state", "migrate", "--to", pg.url()], None);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        err(&refused).contains("not copied from this workspace"),
        "{}",
        err(&refused)
    );

    // The password is sealed, never echoed nor kept in the clear.
    s.guard("pg-s3cret-pass");
    let sealed = s.run(&["state", "password", "--stdin"], Some("pg-s3cret-pass\n"));
    ok(&sealed);
    let store = std::fs::read_to_string(s.project().join(".weft/credentials.json")).unwrap();
    assert!(!store.contains("pg-s3cret-pass"));
    let listed = s.run(&["runs", "list"], None);
    ok(&listed);
}

/// A job the fleet's queue gave up after its last attempt is in `weft errors list` with its
/// last failure and the job named; `weft errors retry` queues its flow again for the workers
/// (`--all` too, each job once), and the entry closes when a job of the flow completes.
#[test]
fn a_job_given_up_is_in_the_error_queue_and_retry_queues_it_again() {
    use weft_engine::queue::{AfterFailure, Queue, QueueRules, given_up_job};
    let Some(pg) = weft_harness::postgres::database("cli_given_up") else {
        return;
    };
    let s = workspace("given-up");
    let toml = s.project().join("weft.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, format!("{text}\n[state]\nurl = \"{}\"\n", pg.url())).unwrap();
    let state = State::open_postgres(pg.url(), &db(&s)).unwrap();
    let queue = Queue::open(
        &state,
        QueueRules {
            max_attempts: 2,
            ..QueueRules::default()
        },
    )
    .unwrap();
    let mut jobs = Vec::new();
    for flow in ["invoices", "payments"] {
        let id = queue.enqueue(flow, None, None, "by hand", T0).unwrap().id;
        for (attempt, at) in [(1u64, T0), (2, T0 + 3_600_000)] {
            queue.take("w", at).unwrap().unwrap();
            let after = queue
                .fail(
                    id,
                    "w",
                    &format!("Xero answered 503 (attempt {attempt})"),
                    at + 1,
                )
                .unwrap();
            assert_eq!(after == AfterFailure::GaveUp, attempt == 2, "{after:?}");
        }
        jobs.push(id);
    }
    let entries: Vec<_> = state
        .errors(None, false)
        .unwrap()
        .into_iter()
        .filter_map(|e| given_up_job(&e).map(|job| (e.id, job)))
        .collect();
    assert_eq!(entries.len(), 2, "{entries:?}");
    let (entry, job) = entries[0];
    assert_eq!(job, jobs[0]);
    let listed = s.run(&["errors", "list"], None);
    ok(&listed);
    assert!(out(&listed).contains("queue job"), "{}", out(&listed));
    let shown = s.run(&["errors", "show", &entry.to_string()], None);
    ok(&shown);
    let text = out(&shown);
    assert!(
        text.contains("given up after 2 attempts: Xero answered 503 (attempt 2)"),
        "{text}"
    );
    assert!(text.contains(&format!("`weft queue show {job}`")), "{text}");
    assert!(
        text.contains(&format!("`weft errors retry {entry}`")),
        "{text}"
    );

    let retried = s.run(&["errors", "retry", &entry.to_string()], None);
    ok(&retried);
    assert!(
        out(&retried).contains("queued again as job"),
        "{}",
        out(&retried)
    );
    let again = s.run(&["errors", "retry", &entry.to_string()], None);
    ok(&again);
    assert!(out(&again).contains("already marked"), "{}", out(&again));
    // --all: the other job's flow queued again; nothing queued twice.
    let all = s.run(&["errors", "retry", "--all"], None);
    ok(&all);
    assert!(out(&all).contains("flow `payments`"), "{}", out(&all));
    let queued = queue.list(false, 10).unwrap();
    assert_eq!(
        queued.iter().map(|j| j.flow.as_str()).collect::<Vec<_>>(),
        ["payments", "invoices"],
        "{queued:?}"
    );
    // A worker's job of `invoices` completes: its entry is fixed, the other still waits.
    // (The commands queued them on the wall clock.)
    let later = weft_engine::state::now_ms() + 60_000;
    let taken = queue.take("w", later).unwrap().unwrap();
    assert_eq!(taken.flow, "invoices");
    assert!(queue.finish(taken.id, "w", None, later + 1).unwrap());
    assert_eq!(state.error(entry).unwrap().unwrap().status, "fixed");
    assert_eq!(state.error(entries[1].0).unwrap().unwrap().status, "retry");
}
