//! `weft init`, `weft client …` and `weft secrets rotate-key` through the real binary, each test
//! in its own temporary workspace and configuration folder.

mod common;

use common::{SECRET, Sandbox, err, out, read};

#[test]
fn init_creates_a_workspace_and_refuses_to_overwrite() {
    let s = Sandbox::new("init");
    let first = s.run(&["init"], None);
    assert!(first.status.success(), "{}", err(&first));
    assert!(read(&s.project().join("weft.toml")).contains("version = 1"));
    assert!(read(&s.project().join(".gitignore")).contains(".weft/"));
    let again = s.run(&["init"], None);
    assert_eq!(again.status.code(), Some(1));
    assert!(err(&again).contains("already exists"), "{}", err(&again));
}

#[test]
fn add_list_show_edit_remove_without_ever_showing_the_secret() {
    let s = Sandbox::new("flow");
    assert!(s.run(&["init"], None).status.success());
    let secret_line = format!("{SECRET}\n");
    let add = s.run(
        &[
            "client",
            "add",
            "books",
            "--connector",
            "xero",
            "--client-id",
            "ABC123",
            "--secret-stdin",
        ],
        Some(&secret_line),
    );
    assert!(add.status.success(), "{}", err(&add));
    assert!(out(&add).contains("will not be shown again"));

    let list = s.run(&["client", "list", "--json"], None);
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(rows[0]["name"], "books");
    assert_eq!(rows[0]["connector"], "xero");
    assert_eq!(rows[0]["client_id"], "ABC123");
    assert_eq!(rows[0]["scope"], "workspace");
    assert_eq!(rows[0]["secret"], "stored");
    let show = s.run(&["client", "show", "books"], None);
    assert!(out(&show).contains("never shown"), "{}", out(&show));
    assert!(read(&s.project().join("weft.toml")).contains("client-id = \"ABC123\""));

    let duplicate = s.run(
        &[
            "client",
            "add",
            "books",
            "--connector",
            "kantata",
            "--client-id",
            "X",
            "--secret-stdin",
        ],
        Some(&secret_line),
    );
    assert_eq!(duplicate.status.code(), Some(1));
    assert!(err(&duplicate).contains("already exists"));

    let edit = s.run(
        &[
            "client",
            "edit",
            "books",
            "--client-id",
            "DEF456",
            "--secret-stdin",
        ],
        Some(&secret_line),
    );
    assert!(edit.status.success(), "{}", err(&edit));
    assert!(read(&s.project().join("weft.toml")).contains("DEF456"));

    let unconfirmed = s.run(&["client", "remove", "books"], None);
    assert_eq!(unconfirmed.status.code(), Some(1));
    assert!(err(&unconfirmed).contains("--yes"));
    s.assert_no_plain_secret();
    let removed = s.run(&["client", "remove", "books", "--yes"], None);
    assert!(removed.status.success());
    assert!(!read(&s.project().join(".weft/credentials.json")).contains("client:books"));
    assert!(out(&s.run(&["client", "list"], None)).contains("no OAuth clients"));
}

#[test]
fn bad_input_is_refused_and_nothing_is_written() {
    let s = Sandbox::new("bad");
    assert!(s.run(&["init"], None).status.success());
    let before = read(&s.project().join("weft.toml"));
    let cases: [(&[&str], &str, &str); 5] = [
        (
            &["--connector", "xero", "--client-id", " ABC"],
            "x\n",
            "Client ID: the value has a leading space",
        ),
        (
            &["--connector", "xero", "--client-id", "ABC"],
            "secret-with-space \n",
            "Client secret: the value has a trailing space",
        ),
        (
            &["--connector", "kantata", "--client-id", "ABC"],
            "\n",
            "(client secret): a value is required",
        ),
        (
            &["--connector", "xero", "--client-id", "AB C"],
            "x\n",
            "Client ID",
        ),
        (
            &["--connector", "quickbooks", "--client-id", "ABC"],
            "x\n",
            "no connector `quickbooks`",
        ),
    ];
    for (extra, stdin, expected) in cases {
        let mut args = vec!["client", "add", "c1", "--secret-stdin"];
        args.extend_from_slice(extra);
        let o = s.run(&args, Some(stdin));
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(err(&o).contains(expected), "{args:?}: {}", err(&o));
    }
    let no_stdin_flag = s.run(
        &[
            "client",
            "add",
            "c1",
            "--connector",
            "xero",
            "--client-id",
            "ABC",
        ],
        None,
    );
    assert_eq!(no_stdin_flag.status.code(), Some(1));
    assert!(
        err(&no_stdin_flag).contains("--secret-stdin"),
        "{}",
        err(&no_stdin_flag)
    );
    assert_eq!(
        read(&s.project().join("weft.toml")),
        before,
        "a refused add changes nothing"
    );
    assert!(!s.project().join(".weft/credentials.json").exists());
}

#[test]
fn without_a_workspace_the_user_scope_is_explicit() {
    let s = Sandbox::new("user");
    let o = s.run(
        &[
            "client",
            "add",
            "mine",
            "--connector",
            "kantata",
            "--client-id",
            "K1",
            "--secret-stdin",
        ],
        Some("k-secret\n"),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("weft init") && err(&o).contains("--user"),
        "{}",
        err(&o)
    );
    let o = s.run(
        &[
            "client",
            "add",
            "mine",
            "--user",
            "--connector",
            "mavenlink",
            "--client-id",
            "K1",
            "--secret-stdin",
        ],
        Some("k-secret\n"),
    );
    assert!(o.status.success(), "{}", err(&o));
    assert!(read(&s.config().join("weft.toml")).contains("connector = \"kantata\""));
    let list = s.run(&["client", "list", "--json"], None);
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(rows[0]["scope"], "user");
}

#[test]
fn wrong_keys_corrupt_stores_and_rotation() {
    let s = Sandbox::new("keys");
    assert!(s.run(&["init"], None).status.success());
    let secret_line = format!("{SECRET}\n");
    assert!(
        s.run(
            &[
                "client",
                "add",
                "books",
                "--connector",
                "xero",
                "--client-id",
                "ABC",
                "--secret-stdin"
            ],
            Some(&secret_line)
        )
        .status
        .success()
    );
    let key_file = s.config().join("master.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let old_key = read(&key_file);

    let wrong = s.run_env(
        &["client", "list"],
        None,
        &[(
            "WEFT_MASTER_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )],
    );
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        err(&wrong).contains("different master key"),
        "{}",
        err(&wrong)
    );
    let malformed = s.run_env(
        &["client", "list"],
        None,
        &[("WEFT_MASTER_KEY", "not-a-key")],
    );
    assert_eq!(malformed.status.code(), Some(1));
    assert!(
        err(&malformed).contains("WEFT_MASTER_KEY is not a valid key"),
        "{}",
        err(&malformed)
    );

    let rotated = s.run(&["secrets", "rotate-key"], None);
    assert!(rotated.status.success(), "{}", err(&rotated));
    assert!(out(&rotated).contains("re-sealed 1 credential"));
    assert_ne!(read(&key_file), old_key);
    let with_old = s.run_env(
        &["client", "list"],
        None,
        &[("WEFT_MASTER_KEY", old_key.trim())],
    );
    assert_eq!(
        with_old.status.code(),
        Some(1),
        "the old key no longer opens the store"
    );
    assert!(s.run(&["client", "list"], None).status.success());

    let store = s.project().join(".weft/credentials.json");
    std::fs::write(&store, "{ this is not json").unwrap();
    let corrupt = s.run(&["client", "list"], None);
    assert_eq!(corrupt.status.code(), Some(1));
    assert!(err(&corrupt).contains("unreadable"), "{}", err(&corrupt));
    assert_eq!(
        read(&store),
        "{ this is not json",
        "a corrupt store is never overwritten by a read"
    );
    s.assert_no_plain_secret();
}

#[test]
fn connections_check_their_client_concurrency_and_borrowing() {
    let s = Sandbox::new("connections");
    assert!(s.run(&["init"], None).status.success());
    s.add_client("xapp", "xero", "ABC", "x-secret\n");
    s.add_client("kapp", "kantata", "K", "k-secret\n");

    let created = s.run(
        &[
            "connection",
            "create",
            "books",
            "--connector",
            "xero",
            "--client",
            "xapp",
        ],
        None,
    );
    assert!(created.status.success(), "{}", err(&created));
    assert!(
        out(&created).contains("concurrency 5"),
        "the spec's default applies: {}",
        out(&created)
    );
    let refusals: [(&[&str], &str); 6] = [
        (
            &[
                "connection",
                "create",
                "books",
                "--connector",
                "xero",
                "--client",
                "xapp",
            ],
            "already exists",
        ),
        (
            &[
                "connection",
                "create",
                "b2",
                "--connector",
                "xero",
                "--client",
                "xapp",
                "--concurrency",
                "26",
            ],
            "26 is outside the allowed range 1–25",
        ),
        (
            &[
                "connection",
                "create",
                "b2",
                "--connector",
                "xero",
                "--client",
                "xapp",
                "--concurrency",
                "0",
            ],
            "outside the allowed range",
        ),
        (
            &[
                "connection",
                "create",
                "b2",
                "--connector",
                "xero",
                "--client",
                "kapp",
            ],
            "is for kantata, not xero",
        ),
        (
            &[
                "connection",
                "create",
                "b2",
                "--connector",
                "xero",
                "--client",
                "nope",
            ],
            "no OAuth client `nope`",
        ),
        (
            &[
                "connection",
                "create",
                "b2",
                "--connector",
                "xero",
                "--client",
                "xapp",
                "--borrow-concurrency-from",
                "ghost",
            ],
            "no connection `ghost`",
        ),
    ];
    for (args, expected) in refusals {
        let o = s.run(args, None);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(err(&o).contains(expected), "{args:?}: {}", err(&o));
    }
    let borrower = s.run(
        &[
            "connection",
            "create",
            "b2",
            "--connector",
            "xero",
            "--client",
            "xapp",
            "--borrow-concurrency-from",
            "books",
        ],
        None,
    );
    assert!(borrower.status.success(), "{}", err(&borrower));
    let chained = s.run(
        &[
            "connection",
            "create",
            "b3",
            "--connector",
            "xero",
            "--client",
            "xapp",
            "--borrow-concurrency-from",
            "b2",
        ],
        None,
    );
    assert!(
        err(&chained).contains("itself borrows"),
        "{}",
        err(&chained)
    );

    let list = s.run(&["connection", "list", "--json"], None);
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(rows[1]["borrow-concurrency-from"], "books");
    assert_eq!(rows[0]["status"], "not authorized");
    assert_eq!(rows[0]["scope"], "workspace");

    let lender = s.run(&["connection", "delete", "books", "--yes"], None);
    assert!(
        err(&lender).contains("borrow concurrency from `books`"),
        "{}",
        err(&lender)
    );
    let in_use = s.run(&["client", "remove", "xapp", "--yes"], None);
    assert!(
        err(&in_use).contains("use OAuth client `xapp`"),
        "{}",
        err(&in_use)
    );
    let unconfirmed = s.run(&["connection", "delete", "b2"], None);
    assert!(err(&unconfirmed).contains("--yes"));
    assert!(
        s.run(&["connection", "delete", "b2", "--yes"], None)
            .status
            .success()
    );
    assert!(
        s.run(&["connection", "delete", "books", "--yes"], None)
            .status
            .success()
    );
    let url = s.run(&["connection", "callback-url", "--port", "9100"], None);
    assert_eq!(out(&url).trim(), "http://localhost:9100/oauth/callback");
}

#[test]
fn connections_point_at_other_hosts_only_by_the_specs_names() {
    let s = Sandbox::new("hosts");
    assert!(s.run(&["init"], None).status.success());
    s.add_client("xapp", "xero", "ABC", "x-secret\n");
    let typo = s.run(
        &[
            "connection",
            "create",
            "books",
            "--connector",
            "xero",
            "--client",
            "xapp",
            "--host",
            "apii=http://127.0.0.1:8704",
        ],
        None,
    );
    assert_eq!(typo.status.code(), Some(1));
    assert!(
        err(&typo).contains("no host `apii`") && err(&typo).contains("login, identity, api"),
        "{}",
        err(&typo)
    );
    let not_url = s.run(
        &[
            "connection",
            "create",
            "books",
            "--connector",
            "xero",
            "--client",
            "xapp",
            "--host",
            "api=127.0.0.1",
        ],
        None,
    );
    assert!(err(&not_url).contains("not a URL"), "{}", err(&not_url));
    let bad_pair = s.run(
        &[
            "connection",
            "create",
            "books",
            "--connector",
            "xero",
            "--client",
            "xapp",
            "--host",
            "api",
        ],
        None,
    );
    assert!(err(&bad_pair).contains("NAME=URL"), "{}", err(&bad_pair));
    let ok = s.run(
        &[
            "connection",
            "create",
            "books",
            "--connector",
            "xero",
            "--client",
            "xapp",
            "--host",
            "api=http://127.0.0.1:8704",
            "--host",
            "identity=http://127.0.0.1:8703",
        ],
        None,
    );
    assert!(ok.status.success(), "{}", err(&ok));
    assert!(read(&s.project().join("weft.toml")).contains("api = \"http://127.0.0.1:8704\""));
    assert!(
        out(&s.run(&["connection", "show", "books"], None))
            .contains("host:         api = http://127.0.0.1:8704")
    );
    assert!(
        s.run(&["connection", "edit", "books", "--no-hosts"], None)
            .status
            .success()
    );
    assert!(!read(&s.project().join("weft.toml")).contains("8704"));
}

#[test]
fn token_connections_test_and_read_against_the_kantata_simulator() {
    use weft_harness::kantata::{KantataConfig, KantataSim};
    let sim = KantataSim::start(KantataConfig {
        size: 30,
        ..KantataConfig::default()
    })
    .unwrap();
    let s = Sandbox::new("read");
    assert!(s.run(&["init"], None).status.success());
    s.add_client("kapp", "kantata", "K", "k-secret\n");
    let api = format!("api={}", sim.api_url());
    let app = format!("app={}", sim.app_url());
    let token = format!("{}\n", sim.personal_token());
    s.guard(sim.personal_token());
    let create = s.run(
        &[
            "connection",
            "create",
            "k",
            "--connector",
            "kantata",
            "--client",
            "kapp",
            "--host",
            &api,
            "--host",
            &app,
            "--token-stdin",
        ],
        Some(&token),
    );
    assert!(create.status.success(), "{}", err(&create));
    assert!(
        !read(&s.project().join("weft.toml")).contains(sim.personal_token()),
        "the token is sealed, not in weft.toml"
    );

    let test = s.run(&["connection", "test", "k"], None);
    assert_eq!(test.status.code(), Some(0), "{}", err(&test));
    assert!(
        out(&test).starts_with("connection `k` works: "),
        "{}",
        out(&test)
    );

    let limited = s.run(&["read", "k", "invoices", "--limit", "3"], None);
    assert!(limited.status.success(), "{}", err(&limited));
    assert_eq!(out(&limited).lines().count(), 3);
    let all = s.run(&["read", "k", "invoices"], None);
    let lines: Vec<serde_json::Value> = out(&all)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: std::collections::HashSet<String> = lines
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), lines.len(), "each invoice once");
    assert!(lines.len() >= 30, "{}", lines.len());
    assert!(
        lines
            .iter()
            .all(|r| !out(&all).contains(sim.personal_token()) && r["balance_in_cents"].is_i64()),
        "money in integer cents"
    );
    let future = s.run(&["read", "k", "invoices", "--since", "2099-01-01"], None);
    assert!(future.status.success(), "{}", err(&future));
    assert_eq!(
        out(&future).lines().count(),
        0,
        "nothing changed after 2099"
    );
    let bad_since = s.run(&["read", "k", "invoices", "--since", "yesterday"], None);
    assert_eq!(bad_since.status.code(), Some(1));
    assert!(
        err(&bad_since).contains("not a date or an instant"),
        "{}",
        err(&bad_since)
    );
    let not_incremental = s.run(&["read", "k", "me", "--since", "2024-01-01"], None);
    assert!(
        err(&not_incremental).contains("does not read incrementally"),
        "{}",
        err(&not_incremental)
    );
    let unknown = s.run(&["read", "k", "widgets"], None);
    assert!(
        err(&unknown).contains("no resource `widgets`"),
        "{}",
        err(&unknown)
    );

    let refused = s.run(
        &["connection", "edit", "k", "--token-stdin"],
        Some("not-the-token\n"),
    );
    assert!(refused.status.success());
    let test = s.run(&["connection", "test", "k"], None);
    assert_eq!(
        test.status.code(),
        Some(3),
        "credentials refused: {}",
        err(&test)
    );
    assert!(
        err(&test).contains("weft connection edit k --token-stdin"),
        "{}",
        err(&test)
    );

    s.add_client("xapp", "xero", "ABC", "x-secret\n");
    assert!(
        s.run(
            &[
                "connection",
                "create",
                "x",
                "--connector",
                "xero",
                "--client",
                "xapp"
            ],
            None
        )
        .status
        .success()
    );
    let unauthorized = s.run(&["connection", "test", "x"], None);
    assert_eq!(
        unauthorized.status.code(),
        Some(8),
        "{}",
        err(&unauthorized)
    );
    let no_token = s.run(&["connection", "edit", "x", "--token-stdin"], Some("t\n"));
    assert!(
        err(&no_token).contains("takes no pasted token"),
        "{}",
        err(&no_token)
    );
    s.assert_no_plain_secret();
}

#[test]
fn write_reports_every_record_and_records_payments_in_kantata() {
    use weft_harness::kantata::{KantataConfig, KantataSim};
    let sim = KantataSim::start(KantataConfig {
        size: 20,
        ..KantataConfig::default()
    })
    .unwrap();
    let s = Sandbox::new("write");
    assert!(s.run(&["init"], None).status.success());
    s.add_client("kapp", "kantata", "K", "k-secret\n");
    let api = format!("api={}", sim.api_url());
    let token = format!("{}\n", sim.personal_token());
    s.guard(sim.personal_token());
    assert!(
        s.run(
            &[
                "connection",
                "create",
                "k",
                "--connector",
                "kantata",
                "--client",
                "kapp",
                "--host",
                &api,
                "--token-stdin"
            ],
            Some(&token)
        )
        .status
        .success()
    );

    // A single-project invoice still waiting for its payment.
    let unpaid_invoice = sim
        .invoices()
        .into_iter()
        .find(|i| i.status == "new" && !i.draft && i.workspace_ids.len() == 1)
        .expect("a seeded unpaid invoice");
    let unpaid = &unpaid_invoice.id;
    let workspace = unpaid_invoice.workspace_ids[0].clone();
    let payments_before = sim.external_payments().len();
    let input = format!(
        "{}\n{}\n{}\n{}\n",
        serde_json::json!({"workspace_id": workspace, "invoice_id": unpaid, "message": "Xero payment 1"}),
        "{ not json",
        serde_json::json!({"invoice_id": unpaid, "message": "no project"}),
        serde_json::json!({"workspace_id": workspace, "invoice_id": unpaid, "amount_in_cents": 12.5}),
    );
    let written = s.run(&["write", "k", "external_payments"], Some(&input));
    assert_eq!(
        written.status.code(),
        Some(1),
        "some records failed: {}",
        err(&written)
    );
    let results: Vec<serde_json::Value> = out(&written)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        results.len(),
        4,
        "one result per input line: {}",
        out(&written)
    );
    assert_eq!(results[0]["status"], "ok", "{}", out(&written));
    assert!(results[0]["id"].is_string());
    assert!(
        results[1]["errors"][0]
            .as_str()
            .unwrap()
            .contains("line 2: not JSON")
    );
    assert!(
        results[2]["errors"][0]
            .as_str()
            .unwrap()
            .contains("`workspace_id` is required")
    );
    assert!(
        results[3]["errors"][0]
            .as_str()
            .unwrap()
            .contains("whole number of cents")
    );
    assert_eq!(
        sim.external_payments().len(),
        payments_before + 1,
        "only the valid record reached Kantata"
    );
    assert_eq!(
        sim.state().invoice(unpaid).unwrap().status,
        "accepted payment"
    );

    // Paying the same invoice again is refused by Kantata, and reported for that record.
    let again = format!(
        "{}\n",
        serde_json::json!({"workspace_id": workspace, "invoice_id": unpaid})
    );
    let refused = s.run(&["write", "k", "external_payments"], Some(&again));
    assert_eq!(refused.status.code(), Some(1));
    let result: serde_json::Value =
        serde_json::from_str(out(&refused).lines().next().unwrap()).unwrap();
    assert_eq!(result["status"], "failed");
    assert!(!result["errors"][0].as_str().unwrap().is_empty());
    let no_update = s.run(&["write", "k", "users", "--update"], Some("{}\n"));
    assert!(
        err(&no_update).contains("cannot be updated"),
        "{}",
        err(&no_update)
    );
    s.assert_no_plain_secret();
}
