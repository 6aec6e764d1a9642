//! Names, `weft.toml` and connections as a person meets them: blank names refused, connections
//! renamed everywhere their name is used, a hand-edited file checked like the commands check,
//! `--workspace` without a workspace refused, a pasted token needing no OAuth client, and a
//! connection test for each organisation.

mod common;

use common::{Sandbox, authorize, callback, err, free_port, out, read, xero_connection};
use weft_harness::kantata::{KantataConfig, KantataSim};
use weft_harness::xero::{Consent, XeroConfig, XeroSim};

fn ok(o: &std::process::Output) {
    assert!(o.status.success(), "{}", err(o));
}

#[test]
fn blank_names_are_refused_and_nothing_is_written() {
    let s = Sandbox::new("blank-names");
    ok(&s.run(&["init"], None));
    let before = read(&s.project().join("weft.toml"));
    for name in ["", "   ", "\t", " xapp", "xapp "] {
        let added = s.run(
            &[
                "client",
                "add",
                name,
                "--connector",
                "xero",
                "--client-id",
                "ABC",
                "--secret-stdin",
            ],
            Some("x-secret\n"),
        );
        assert_eq!(added.status.code(), Some(1), "client {name:?}");
        assert!(err(&added).contains("client name"), "{}", err(&added));
    }
    s.add_client("xapp", "xero", "ABC", "x-secret\n");
    let with_client = read(&s.project().join("weft.toml"));
    for name in ["", "  ", " x"] {
        let created = s.run(
            &[
                "connection",
                "create",
                name,
                "--connector",
                "xero",
                "--client",
                "xapp",
            ],
            None,
        );
        assert_eq!(created.status.code(), Some(1), "connection {name:?}");
        assert!(
            err(&created).contains("connection name"),
            "{}",
            err(&created)
        );
    }
    assert_ne!(before, with_client);
    assert_eq!(read(&s.project().join("weft.toml")), with_client);
}

#[test]
fn a_pasted_token_needs_no_client_and_renaming_moves_everything_named() {
    let sim = KantataSim::start(KantataConfig {
        size: 5,
        ..KantataConfig::default()
    })
    .unwrap();
    let s = Sandbox::new("rename");
    ok(&s.run(&["init", "--template", "kantata-xero"], None));
    s.guard(sim.personal_token());
    let (api, app) = (
        format!("api={}", sim.api_url()),
        format!("app={}", sim.app_url()),
    );
    // An OAuth connector without --client and without a token: told what to pass.
    let no_client = s.run(
        &["connection", "create", "kantata", "--connector", "kantata"],
        None,
    );
    assert_eq!(no_client.status.code(), Some(1));
    assert!(err(&no_client).contains("--client"), "{}", err(&no_client));
    // The personal token alone.
    let created = s.run(
        &[
            "connection",
            "create",
            "kantata",
            "--connector",
            "kantata",
            "--host",
            &api,
            "--host",
            &app,
            "--token-stdin",
        ],
        Some(&format!("{}\n", sim.personal_token())),
    );
    ok(&created);
    ok(&s.run(&["connection", "test", "kantata"], None));
    ok(&s.run(
        &[
            "connection",
            "create",
            "second",
            "--connector",
            "kantata",
            "--borrow-concurrency-from",
            "kantata",
            "--token-stdin",
        ],
        Some("another-token\n"),
    ));
    let flow_path = s.project().join("flows/kantata-xero.toml");
    let flow_before = read(&flow_path);

    for bad in ["", "  ", "second"] {
        let refused = s.run(&["connection", "rename", "kantata", bad], None);
        assert_eq!(refused.status.code(), Some(1), "{bad:?}");
    }
    let renamed = s.run(&["connection", "rename", "kantata", "kantata-main"], None);
    ok(&renamed);
    assert!(
        out(&renamed).contains("kantata-xero.toml"),
        "{}",
        out(&renamed)
    );

    // The credentials moved with the name: the renamed connection still works.
    let test = s.run(&["connection", "test", "kantata-main"], None);
    assert_eq!(test.status.code(), Some(0), "{}", err(&test));
    assert_eq!(
        s.run(&["connection", "show", "kantata"], None)
            .status
            .code(),
        Some(1)
    );
    let second = s.connection_json("second");
    assert_eq!(second["borrow-concurrency-from"], "kantata-main");
    // The flow names the new connection, and nothing else in it changed.
    let flow_after = read(&flow_path);
    assert_eq!(
        flow_after,
        flow_before.replace(
            "[connections.kantata]\nconnector = \"kantata\"\n",
            "[connections.kantata]\nconnection = \"kantata-main\"\nconnector = \"kantata\"\n"
        )
    );
    assert_ne!(flow_after, flow_before);
    s.assert_no_plain_secret();
}

#[test]
fn a_hand_edited_workspace_meets_the_same_rules_with_its_line() {
    let s = Sandbox::new("hand-edited");
    ok(&s.run(&["init"], None));
    s.add_client("xapp", "xero", "ABC", "x-secret\n");
    s.create_connection("books", "xero", "xapp");
    let path = s.project().join("weft.toml");
    let text = read(&path);
    let edited = text.replace("concurrency = 5", "concurrency = 99");
    assert_ne!(edited, text);
    std::fs::write(&path, &edited).unwrap();
    let line = edited
        .lines()
        .position(|l| l.starts_with("concurrency = 99"))
        .unwrap()
        + 1;
    for args in [
        &["connection", "list"][..],
        &["connection", "test", "books"],
        &["client", "list"],
    ] {
        let refused = s.run(args, None);
        assert_eq!(refused.status.code(), Some(1), "{}", out(&refused));
        assert!(
            err(&refused).contains(&format!("weft.toml:{line}")) && err(&refused).contains("99"),
            "{}",
            err(&refused)
        );
    }

    let blank = text.replace("[connections.books]", "[connections.\"  \"]");
    assert_ne!(blank, text);
    std::fs::write(&path, &blank).unwrap();
    let refused = s.run(&["connection", "list"], None);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        err(&refused).contains("connection name"),
        "{}",
        err(&refused)
    );

    let unknown_client = text.replace("client = \"xapp\"", "client = \"nobody\"");
    std::fs::write(&path, &unknown_client).unwrap();
    let refused = s.run(&["connection", "list"], None);
    assert_eq!(refused.status.code(), Some(1));
    assert!(err(&refused).contains("nobody"), "{}", err(&refused));

    // --workspace must point at a workspace.
    std::fs::write(&path, &text).unwrap();
    let empty = s.project().join("elsewhere");
    std::fs::create_dir_all(&empty).unwrap();
    let dir = empty.to_str().unwrap();
    for args in [
        &["--workspace", dir, "connection", "list"][..],
        &["--workspace", dir, "client", "list"],
        &["--workspace", dir, "sync", "status"],
        &["--workspace", dir, "runs", "list"],
    ] {
        let refused = s.run(args, None);
        assert_eq!(refused.status.code(), Some(1), "{}", out(&refused));
        assert!(
            err(&refused).contains("no weft.toml in that folder"),
            "{}",
            err(&refused)
        );
    }
    ok(&s.run(&["--workspace", dir, "init"], None));
    ok(&s.run(&["--workspace", dir, "connection", "list"], None));
}

#[test]
fn connection_test_checks_every_organisation_or_the_one_named() {
    let port = free_port();
    let sim = XeroSim::start(XeroConfig {
        organisations: 2,
        size: 3,
        redirect_uris: vec![callback(port)],
        ..XeroConfig::default()
    })
    .unwrap();
    let s = Sandbox::new("test-tenants");
    ok(&s.run(&["init"], None));
    xero_connection(&s, &sim, "x");
    let tenants = sim.tenants();
    sim.set_consent(Consent::Grant {
        tenants: tenants.iter().map(|t| t.0.clone()).collect(),
    });
    let (code, _, stderr) = authorize(&s, "x", port, &[]);
    assert_eq!(code, 0, "{stderr}");

    let both = s.run(&["connection", "test", "x"], None);
    assert_eq!(both.status.code(), Some(0), "{}", err(&both));
    let lines: Vec<String> = out(&both).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (line, (id, name)) in lines.iter().zip(&tenants) {
        assert!(
            line.contains(id) && line.contains(name) && line.contains("works"),
            "{line}"
        );
    }
    let one = s.run(
        &["connection", "test", "x", "--tenant", &tenants[1].0],
        None,
    );
    assert_eq!(one.status.code(), Some(0), "{}", err(&one));
    assert_eq!(out(&one).lines().count(), 1);
    assert!(out(&one).contains(&tenants[1].1), "{}", out(&one));
    let unknown = s.run(&["connection", "test", "x", "--tenant", "nope"], None);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(err(&unknown).contains(&tenants[0].0), "{}", err(&unknown));
    s.assert_none_of(sim.issued_tokens());
}
