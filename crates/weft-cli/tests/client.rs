//! `weft init`, `weft client …` and `weft secrets rotate-key` through the real binary, each test
//! in its own temporary workspace and configuration folder.

mod common;

use common::{SECRET, Sandbox, err, out, read};

/// The current key (base64) of a key file.
fn current_key(key_file: &std::path::Path) -> String {
    let file: serde_json::Value = serde_json::from_str(&read(key_file)).unwrap();
    file["keys"][0]["key"].as_str().unwrap().to_owned()
}

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
            &["--connector", "sage-intacct", "--client-id", "ABC"],
            "x\n",
            "no connector `sage-intacct`",
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
    let old_key = current_key(&key_file);

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
        err(&wrong).contains("that Weft does not have"),
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
    assert_ne!(current_key(&key_file), old_key);
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
    // A conflict (HTTP 409: the record changed there since it was read) fails that record
    // with what to do about it.
    sim.observed().faults.add(
        weft_harness::faults::FaultRule::on(
            "/api/v1/external_payments",
            weft_harness::faults::When::Always,
            weft_harness::faults::Fault::Status {
                status: 409,
                body: r#"{"errors":[{"message":"changed by someone else"}]}"#.to_owned(),
            },
        )
        .method("POST"),
    );
    let conflict = s.run(&["write", "k", "external_payments"], Some(&again));
    assert_eq!(conflict.status.code(), Some(1), "{}", err(&conflict));
    let result: serde_json::Value =
        serde_json::from_str(out(&conflict).lines().next().unwrap()).unwrap();
    assert_eq!(result["status"], "failed");
    let why = result["errors"][0].as_str().unwrap();
    assert!(
        why.contains("changed at the provider since it was read"),
        "{why}"
    );
    assert!(why.contains("weft read k RESOURCE"), "{why}");
    sim.observed().faults.clear();
    let no_update = s.run(&["write", "k", "users", "--update"], Some("{}\n"));
    assert!(
        err(&no_update).contains("cannot be updated"),
        "{}",
        err(&no_update)
    );
    s.assert_no_plain_secret();
}

/// A second workspace beside the sandbox's project, sharing its configuration folder (and so its
/// key file).
fn second_workspace(s: &Sandbox) -> std::path::PathBuf {
    let other = s.project().parent().unwrap().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let init = s.run(&["--workspace", other.to_str().unwrap(), "init"], None);
    assert!(init.status.success(), "{}", err(&init));
    other
}

#[test]
fn two_workspaces_sharing_a_key_file_both_open_after_a_rotation_and_retiring_asks_first() {
    let s = Sandbox::new("shared-key");
    assert!(s.run(&["init"], None).status.success());
    s.add_client("books", "xero", "ABC", &format!("{SECRET}\n"));
    let other = second_workspace(&s);
    let ws = other.to_str().unwrap();
    let added = s.run(
        &[
            "--workspace",
            ws,
            "client",
            "add",
            "ledger",
            "--connector",
            "xero",
            "--client-id",
            "DEF",
            "--secret-stdin",
        ],
        Some(&format!("{SECRET}\n")),
    );
    assert!(added.status.success(), "{}", err(&added));
    let key_file = s.config().join("master.key");
    let old_id = {
        let file: serde_json::Value = serde_json::from_str(&read(&key_file)).unwrap();
        file["keys"][0]["id"].as_str().unwrap().to_owned()
    };

    let rotated = s.run(&["secrets", "rotate-key"], None);
    assert!(rotated.status.success(), "{}", err(&rotated));
    // The rotation reached this project only; the other workspace's store is still sealed under
    // the old key, which the key file keeps as retired.
    let shown = s.run(&["--workspace", ws, "client", "show", "ledger"], None);
    assert!(shown.status.success(), "{}", err(&shown));
    let listed = s.run(&["client", "list"], None);
    assert!(listed.status.success(), "{}", err(&listed));
    let keys = s.run(&["secrets", "keys"], None);
    assert!(
        out(&keys).contains(&format!("{old_id} retired")),
        "{}",
        out(&keys)
    );

    // Retiring the old key names the store still under it and needs a confirmation.
    let refused = s.run(&["secrets", "retire-key", &old_id], None);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        err(&refused).contains("other/.weft/credentials.json"),
        "{}",
        err(&refused)
    );
    assert!(err(&refused).contains("--yes"), "{}", err(&refused));

    // Its next write moves the other store to the new key; then retiring loses nothing.
    let edited = s.run(
        &[
            "--workspace",
            ws,
            "client",
            "edit",
            "ledger",
            "--secret-stdin",
        ],
        Some(&format!("{SECRET}\n")),
    );
    assert!(edited.status.success(), "{}", err(&edited));
    let retired = s.run(&["secrets", "retire-key", &old_id], None);
    assert!(retired.status.success(), "{}", err(&retired));
    assert!(
        s.run(&["--workspace", ws, "client", "show", "ledger"], None)
            .status
            .success()
    );
    assert!(s.run(&["client", "show", "books"], None).status.success());
    s.assert_no_plain_secret();
}

#[test]
fn rotating_with_one_damaged_store_changes_nothing_and_names_the_store() {
    let s = Sandbox::new("rotate-damaged");
    assert!(s.run(&["init"], None).status.success());
    s.add_client("books", "xero", "ABC", &format!("{SECRET}\n"));
    let user = s.run(
        &[
            "client",
            "add",
            "mine",
            "--user",
            "--connector",
            "xero",
            "--client-id",
            "U",
            "--secret-stdin",
        ],
        Some(&format!("{SECRET}\n")),
    );
    assert!(user.status.success(), "{}", err(&user));
    // One record of the user store is damaged (its sealed value swapped for another's).
    let user_store = s.config().join("credentials.json");
    let mut file: serde_json::Value = serde_json::from_str(&read(&user_store)).unwrap();
    let check = file["check"].clone();
    file["records"]["client:mine:secret"] = check;
    std::fs::write(&user_store, serde_json::to_string_pretty(&file).unwrap()).unwrap();
    let key_file = s.config().join("master.key");
    let project_store = s.project().join(".weft/credentials.json");
    let before = (read(&key_file), read(&project_store), read(&user_store));

    let rotated = s.run(&["secrets", "rotate-key"], None);
    assert_eq!(rotated.status.code(), Some(1));
    assert!(
        err(&rotated).contains(&user_store.display().to_string()),
        "{}",
        err(&rotated)
    );
    assert!(
        err(&rotated).contains("nothing was changed"),
        "{}",
        err(&rotated)
    );
    assert_eq!(
        (read(&key_file), read(&project_store), read(&user_store)),
        before
    );
    let leftovers: Vec<_> = std::fs::read_dir(s.project().join(".weft"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp") || n.contains("rotating") || n.contains(".new"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn with_the_key_in_the_environment_the_new_key_must_be_given_or_confirmed() {
    let s = Sandbox::new("rotate-env");
    let old = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let new = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    assert!(s.run(&["init"], None).status.success());
    let added = s.run_env(
        &[
            "client",
            "add",
            "books",
            "--connector",
            "xero",
            "--client-id",
            "A",
            "--secret-stdin",
        ],
        Some(&format!("{SECRET}\n")),
        &[("WEFT_MASTER_KEY", old)],
    );
    assert!(added.status.success(), "{}", err(&added));
    let store = s.project().join(".weft/credentials.json");
    let before = read(&store);
    // No terminal to confirm on: Weft will not make up a key nobody saved.
    let refused = s.run_env(
        &["secrets", "rotate-key"],
        None,
        &[("WEFT_MASTER_KEY", old)],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        err(&refused).contains("--new-key-stdin"),
        "{}",
        err(&refused)
    );
    assert_eq!(read(&store), before);
    assert!(!s.config().join("master.key").exists());

    let rotated = s.run_env(
        &["secrets", "rotate-key", "--new-key-stdin"],
        Some(new),
        &[("WEFT_MASTER_KEY", old)],
    );
    assert!(rotated.status.success(), "{}", err(&rotated));
    let shown = s.run_env(
        &["client", "show", "books"],
        None,
        &[("WEFT_MASTER_KEY", new)],
    );
    assert!(shown.status.success(), "{}", err(&shown));
    let stale = s.run_env(
        &["client", "show", "books"],
        None,
        &[("WEFT_MASTER_KEY", old)],
    );
    assert_eq!(stale.status.code(), Some(1));
}

#[cfg(unix)]
#[test]
fn the_master_key_can_come_from_a_command_run_without_a_shell() {
    use std::os::unix::fs::PermissionsExt as _;
    let s = Sandbox::new("key-command");
    assert!(s.run(&["init"], None).status.success());
    let script = s.project().parent().unwrap().join("keychain.sh");
    // Stands in for `security find-generic-password -w …`: prints the key for the right item.
    std::fs::write(
        &script,
        "#!/bin/sh\nif [ \"$1 $2 $3\" = \"find weft key\" ]; then echo AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=; exit 0; fi\nif [ \"$1\" = short ]; then echo AQEB; exit 0; fi\necho \"item not found: $1\" >&2\nexit 44\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let program = script.to_str().unwrap();
    let good = format!("{program} find weft key");
    let added = s.run_env(
        &[
            "client",
            "add",
            "books",
            "--connector",
            "xero",
            "--client-id",
            "A",
            "--secret-stdin",
        ],
        Some(&format!("{SECRET}\n")),
        &[("WEFT_MASTER_KEY_COMMAND", &good)],
    );
    assert!(added.status.success(), "{}", err(&added));
    assert!(
        !s.config().join("master.key").exists(),
        "no key file is made"
    );
    let opened = s.run_env(
        &["client", "show", "books"],
        None,
        &[(
            "WEFT_MASTER_KEY",
            "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
        )],
    );
    assert!(opened.status.success(), "{}", err(&opened));

    // The user weft.toml's list form takes the same program.
    std::fs::create_dir_all(s.config()).unwrap();
    std::fs::write(
        s.config().join("weft.toml"),
        format!("version = 1\nmaster-key-command = [{program:?}, \"find\", \"weft\", \"key\"]\n"),
    )
    .unwrap();
    assert!(s.run(&["client", "show", "books"], None).status.success());

    for (command, expected) in [
        ("weft-no-such-keychain-program".to_owned(), "was not found"),
        (
            format!("{program} missing item"),
            "exited with 44 (item not found: missing)",
        ),
        (format!("{program} short"), "3 bytes instead of 32"),
    ] {
        let failed = s.run_env(
            &["client", "show", "books"],
            None,
            &[("WEFT_MASTER_KEY_COMMAND", &command)],
        );
        assert_eq!(failed.status.code(), Some(1));
        assert!(
            err(&failed).contains(expected),
            "{command}: {}",
            err(&failed)
        );
        assert!(
            err(&failed).contains("master-key-command"),
            "{}",
            err(&failed)
        );
    }
}

#[test]
fn a_project_weft_toml_cannot_name_a_key_command() {
    let s = Sandbox::new("key-command-project");
    std::fs::write(
        s.project().join("weft.toml"),
        "version = 1\nmaster-key-command = [\"/bin/sh\", \"-c\", \"echo pwned\"]\n",
    )
    .unwrap();
    let listed = s.run(&["client", "list"], None);
    assert_eq!(listed.status.code(), Some(1));
    assert!(
        err(&listed).contains("belongs in your user weft.toml"),
        "{}",
        err(&listed)
    );
}

#[test]
fn authorize_refuses_port_zero_like_callback_url() {
    let s = Sandbox::new("port-zero");
    for args in [
        &["connection", "authorize", "books", "--port", "0"][..],
        &["connection", "callback-url", "--port", "0"][..],
    ] {
        let o = s.run(args, None);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(err(&o).contains("0 is not in 1..=65535"), "{}", err(&o));
    }
}

#[test]
fn a_borrower_takes_no_concurrency_level_of_its_own() {
    let s = Sandbox::new("borrow-level");
    assert!(s.run(&["init"], None).status.success());
    s.add_client("xapp", "xero", "ABC", "x-secret\n");
    for args in [
        &[
            "connection",
            "create",
            "b",
            "--connector",
            "xero",
            "--client",
            "xapp",
            "--borrow-concurrency-from",
            "a",
            "--concurrency",
            "3",
        ][..],
        &[
            "connection",
            "edit",
            "b",
            "--borrow-concurrency-from",
            "a",
            "--concurrency",
            "3",
        ][..],
    ] {
        let o = s.run(args, None);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(err(&o).contains("cannot be used with"), "{}", err(&o));
    }
}

#[test]
fn a_field_the_spec_makes_read_only_after_create_cannot_be_edited() {
    let s = Sandbox::new("read-only-after-create");
    let specs = s.project().parent().unwrap().join("specs");
    std::fs::create_dir_all(&specs).unwrap();
    let xero =
        read(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../specs/xero.toml"));
    let locked = xero
        .replacen(
            "label = \"Client ID\"\n",
            "label = \"Client ID\"\nread-only-after-create = true\n",
            1,
        )
        .replacen(
            "label = \"Concurrency level\"\n",
            "label = \"Concurrency level\"\nread-only-after-create = true\n",
            1,
        );
    assert_ne!(locked, xero);
    std::fs::write(specs.join("xero.toml"), locked).unwrap();
    s.set_env("WEFT_SPEC_PATH", specs.to_str().unwrap());
    assert!(s.run(&["init"], None).status.success());
    s.add_client("xapp", "xero", "ABC", &format!("{SECRET}\n"));
    let created = s.run(
        &[
            "connection",
            "create",
            "books",
            "--connector",
            "xero",
            "--client",
            "xapp",
            "--concurrency",
            "3",
        ],
        None,
    );
    assert!(created.status.success(), "{}", err(&created));
    let client = s.run(
        &[
            "client",
            "edit",
            "xapp",
            "--client-id",
            "DEF",
            "--secret-stdin",
        ],
        Some(&format!("{SECRET}\n")),
    );
    assert_eq!(client.status.code(), Some(1));
    assert!(
        err(&client).contains("Client ID can only be set when it is created"),
        "{}",
        err(&client)
    );
    assert!(err(&client).contains("weft client add"), "{}", err(&client));
    let level = s.run(&["connection", "edit", "books", "--concurrency", "4"], None);
    assert_eq!(level.status.code(), Some(1));
    assert!(
        err(&level).contains("weft connection create"),
        "{}",
        err(&level)
    );
    assert!(read(&s.project().join("weft.toml")).contains("client-id = \"ABC\""));
    assert!(read(&s.project().join("weft.toml")).contains("concurrency = 3"));
}

/// `weft write --delete` and `--action NAME` call a spec's delete and named actions, one record
/// per input line named by its primary key: here a copy of the Kantata spec that declares
/// deleting an invoice and cancelling one (Kantata's `PUT /invoices/{id}/cancel`).
#[test]
fn write_deletes_and_runs_actions_by_name() {
    use weft_harness::kantata::{KantataConfig, KantataSim};
    let sim = KantataSim::start(KantataConfig {
        size: 20,
        ..KantataConfig::default()
    })
    .unwrap();
    let s = Sandbox::new("write-actions");
    let specs = s.project().parent().unwrap().join("specs");
    std::fs::create_dir_all(&specs).unwrap();
    let kantata = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../specs/kantata.toml"),
    )
    .unwrap();
    let extended = kantata.replacen("\nid = \"kantata\"\n", "\nid = \"kantata-ops\"\n", 1)
        + r#"
[resources.invoices.delete]
path = "/invoices/{{ id }}"
records = { style = "root" }

[resources.invoices.actions.cancel]
method = "PUT"
path = "/invoices/{{ id }}/cancel"
records = { style = "index", index = "results", key-field = "key", id-field = "id", key = "invoices" }
"#;
    std::fs::write(specs.join("kantata-ops.toml"), extended).unwrap();
    s.set_env("WEFT_SPEC_PATH", specs.to_str().unwrap());
    assert!(s.run(&["init"], None).status.success());
    s.add_client("kapp", "kantata-ops", "K", "k-secret\n");
    let api = format!("api={}", sim.api_url());
    s.guard(sim.personal_token());
    let created = s.run(
        &[
            "connection",
            "create",
            "k",
            "--connector",
            "kantata-ops",
            "--host",
            &api,
            "--token-stdin",
        ],
        Some(&format!("{}\n", sim.personal_token())),
    );
    assert!(created.status.success(), "{}", err(&created));

    let invoices = sim.invoices();
    let draft = invoices.iter().find(|i| i.draft).expect("a draft invoice");
    let sent = invoices
        .iter()
        .find(|i| !i.draft && i.status == "new")
        .expect("a sent invoice");

    let line = |id: &str| format!("{}\n", serde_json::json!({ "id": id }));
    let deleted = s.run(
        &["write", "k", "invoices", "--delete"],
        Some(&line(&draft.id)),
    );
    assert!(deleted.status.success(), "{}", err(&deleted));
    let result: serde_json::Value =
        serde_json::from_str(out(&deleted).lines().next().unwrap()).unwrap();
    assert_eq!(result["status"], "ok", "{}", out(&deleted));
    assert_eq!(result["id"], draft.id.as_str());
    assert!(
        sim.invoices().iter().all(|i| i.id != draft.id),
        "the draft is gone"
    );

    let cancelled = s.run(
        &["write", "k", "invoices", "--action", "cancel"],
        Some(&format!("{}{}", line(&sent.id), line(&draft.id))),
    );
    assert_eq!(cancelled.status.code(), Some(1), "{}", err(&cancelled));
    let results: Vec<serde_json::Value> = out(&cancelled)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results[0]["status"], "ok", "{}", out(&cancelled));
    assert_eq!(results[0]["id"], sent.id.as_str());
    assert_eq!(
        sim.invoices()
            .iter()
            .find(|i| i.id == sent.id)
            .unwrap()
            .status,
        "cancelled"
    );
    assert_eq!(
        results[1]["status"], "failed",
        "the deleted draft is not found"
    );

    let unknown = s.run(
        &["write", "k", "invoices", "--action", "approve"],
        Some(&line(&sent.id)),
    );
    assert!(
        err(&unknown).contains("cannot be given the action `approve` (its actions: cancel)"),
        "{}",
        err(&unknown)
    );
    s.assert_no_plain_secret();
}

/// QuickBooks' environment and minor version are connection fields: `--field
/// environment=sandbox` is kept in weft.toml and shown, checked against the field's choices,
/// `minor_version` against its range; the OAuth client's ID and the concurrency are refused, and
/// a hand-edited value the field refuses is located in weft.toml.
#[test]
fn a_connection_field_chooses_the_host_and_is_checked() {
    let s = Sandbox::new("fields");
    assert!(s.run(&["init"], None).status.success());
    s.add_client("qapp", "quickbooks", "ABC", "q-secret\n");
    let create = |name: &str, field: &str| {
        s.run(
            &[
                "connection",
                "create",
                name,
                "--connector",
                "quickbooks",
                "--client",
                "qapp",
                "--field",
                field,
            ],
            None,
        )
    };
    let wrong = create("qbo", "environment=staging");
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        err(&wrong).contains("Environment") && err(&wrong).contains("production, sandbox"),
        "{}",
        err(&wrong)
    );
    // The client's ID is its OAuth client's, the concurrency has its own option.
    for taken in ["client_id=ABC", "concurrency=3"] {
        let unknown = create("qbo", taken);
        assert_eq!(unknown.status.code(), Some(1));
        assert!(
            err(&unknown).contains("is not a connection field")
                && err(&unknown).contains("environment (")
                && err(&unknown).contains("minor_version (")
                && err(&unknown).contains("whole number 75–999"),
            "{}",
            err(&unknown)
        );
    }
    // Every other field is one, checked by its own rules.
    let low = create("qbo", "minor_version=74");
    assert_eq!(low.status.code(), Some(1));
    assert!(
        err(&low).contains("API minor version") && err(&low).contains("75"),
        "{}",
        err(&low)
    );
    let bad_pair = create("qbo", "environment");
    assert!(err(&bad_pair).contains("ID=VALUE"), "{}", err(&bad_pair));
    assert!(!read(&s.project().join("weft.toml")).contains("[connections"));

    let ok = create("qbo", "environment=sandbox");
    assert!(ok.status.success(), "{}", err(&ok));
    assert!(read(&s.project().join("weft.toml")).contains("environment = \"sandbox\""));
    let minor = s.run(
        &["connection", "edit", "qbo", "--field", "minor_version=76"],
        None,
    );
    assert!(minor.status.success(), "{}", err(&minor));
    assert!(read(&s.project().join("weft.toml")).contains("minor_version = \"76\""));
    assert!(
        out(&s.run(&["connection", "show", "qbo"], None))
            .contains("field:        environment = sandbox")
    );
    let edit = s.run(
        &[
            "connection",
            "edit",
            "qbo",
            "--field",
            "environment=production",
        ],
        None,
    );
    assert!(edit.status.success(), "{}", err(&edit));
    assert!(read(&s.project().join("weft.toml")).contains("environment = \"production\""));

    // Edited by hand into something that is not a choice: every command names the line.
    let toml = read(&s.project().join("weft.toml"))
        .replace("environment = \"production\"", "environment = \"staging\"");
    std::fs::write(s.project().join("weft.toml"), toml).unwrap();
    let listed = s.run(&["connection", "list"], None);
    assert_eq!(listed.status.code(), Some(1));
    assert!(
        err(&listed).contains("weft.toml:") && err(&listed).contains("`environment` is `staging`"),
        "{}",
        err(&listed)
    );
    let toml = read(&s.project().join("weft.toml"))
        .replace("environment = \"staging\"", "environment = \"sandbox\"")
        .replace("minor_version = \"76\"", "minor_version = \"7\"");
    std::fs::write(s.project().join("weft.toml"), toml).unwrap();
    let listed = s.run(&["connection", "list"], None);
    assert_eq!(listed.status.code(), Some(1));
    assert!(
        err(&listed).contains("weft.toml:")
            && err(&listed).contains("`minor_version` is `7`")
            && err(&listed).contains("75"),
        "{}",
        err(&listed)
    );
}
