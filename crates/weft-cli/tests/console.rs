//! `weft user add|list|remove|passwd`, `weft audit` and `weft serve`'s address check, through
//! the real binary.

mod common;

use common::{Sandbox, err, out};

const ALICE_PW: &str = "alice's long password 1";
const BOB_PW: &str = "bob's long password 22";

fn ok(o: &std::process::Output) {
    assert!(o.status.success(), "{}\n{}", out(o), err(o));
}

fn workspace(name: &str) -> Sandbox {
    let s = Sandbox::new(name);
    ok(&s.run(&["init"], None));
    s.guard(ALICE_PW);
    s.guard(BOB_PW);
    s
}

#[test]
fn users_are_added_listed_changed_and_removed_with_passwords_from_stdin() {
    let s = workspace("users");
    let first = s.run(
        &["user", "add", "alice", "--password-stdin"],
        Some(&format!("{ALICE_PW}\n")),
    );
    ok(&first);
    assert!(
        out(&first)
            .contains("added administrator `alice` (the first user is always an administrator)"),
        "{}",
        out(&first)
    );
    let second = s.run(&["user", "add", "bob", "--password-stdin"], Some(BOB_PW));
    ok(&second);
    assert!(out(&second).contains("added member `bob`"));

    let again = s.run(&["user", "add", "bob", "--password-stdin"], Some(BOB_PW));
    assert_eq!(again.status.code(), Some(1));
    assert!(err(&again).contains("exists already"));
    let short = s.run(
        &["user", "add", "carol", "--password-stdin"],
        Some("short\n"),
    );
    assert_eq!(short.status.code(), Some(1));
    assert!(
        err(&short).contains("10 to 1024 characters"),
        "{}",
        err(&short)
    );
    let role = s.run(
        &["user", "add", "carol", "--role", "boss", "--password-stdin"],
        Some(BOB_PW),
    );
    assert!(err(&role).contains("--role `boss`: use admin or member"));
    let name = s.run(&["user", "add", "car ol", "--password-stdin"], Some(BOB_PW));
    assert!(err(&name).contains("no spaces"), "{}", err(&name));
    let no_stdin = s.run(&["user", "add", "carol"], None);
    assert!(
        err(&no_stdin).contains("--password-stdin"),
        "{}",
        err(&no_stdin)
    );

    let list = s.run(&["user", "list", "--json"], None);
    ok(&list);
    let users: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let roles: Vec<(&str, &str)> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["name"].as_str().unwrap(), u["role"].as_str().unwrap()))
        .collect();
    assert_eq!(roles, [("alice", "admin"), ("bob", "member")]);
    let table = s.run(&["user", "list"], None);
    assert!(out(&table).contains("NAME") && out(&table).contains("member"));

    ok(&s.run(
        &["user", "passwd", "bob", "--password-stdin"],
        Some(&format!("{BOB_PW}!\n")),
    ));
    s.guard(&format!("{BOB_PW}!"));
    let last = s.run(&["user", "remove", "alice", "--yes"], None);
    assert_eq!(last.status.code(), Some(1));
    assert!(err(&last).contains("last administrator"));
    let unconfirmed = s.run(&["user", "remove", "bob"], None);
    assert!(
        err(&unconfirmed).contains("pass --yes"),
        "{}",
        err(&unconfirmed)
    );
    ok(&s.run(&["user", "remove", "bob", "--yes"], None));

    let audit = s.run(&["audit", "--json"], None);
    ok(&audit);
    let entries: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    let actions: Vec<(&str, &str)> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["target"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("user.remove", "bob"),
            ("user.passwd", "bob"),
            ("user.add", "bob"),
            ("user.add", "alice")
        ]
    );
    assert!(entries[0]["actor"].as_str().unwrap().starts_with("cli:"));
    // Passwords are neither printed nor stored: only their argon2 hashes are.
    s.assert_no_plain_secret();
}

#[test]
fn serve_refuses_a_non_loopback_address_without_insecure_http() {
    let s = workspace("serve-bind");
    let o = s.run(&["serve", "--listen", "0.0.0.0:0"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("not a loopback address") && err(&o).contains("--insecure-http"),
        "{}",
        err(&o)
    );
    let o = s.run(
        &["serve", "--listen", "0.0.0.0:0", "--tls-cert", "cert.pem"],
        None,
    );
    assert_eq!(o.status.code(), Some(2), "--tls-cert needs --tls-key");
    assert!(err(&o).contains("--tls-key"), "{}", err(&o));
    let o = s.run(
        &[
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--tls-cert",
            "absent.pem",
            "--tls-key",
            "absent.pem",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("--tls-cert") && err(&o).contains("absent.pem"),
        "{}",
        err(&o)
    );
    // On loopback, a console without users says how to add the first.
    let o = s.run(&["serve", "--listen", "127.0.0.1:0"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("weft user add NAME"), "{}", err(&o));
}

#[test]
fn notification_receivers_and_the_webhook_key_are_sealed_listed_tested_and_removed() {
    let s = workspace("notify");
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let url = format!("http://127.0.0.1:{port}/services/T0SECRET/B0SECRET/XSECRETTOKEN");
    s.guard("XSECRETTOKEN");
    s.guard("mailpassword77");

    let bad = s.run(
        &["notify", "add", "ops", "--webhook", "--stdin"],
        Some("slack please\n"),
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        err(&bad).contains("not an http or https URL"),
        "{}",
        err(&bad)
    );
    let name = s.run(
        &["notify", "add", "ops team", "--webhook", "--stdin"],
        Some(&url),
    );
    assert!(err(&name).contains("receiver name"), "{}", err(&name));
    let neither = s.run(&["notify", "add", "ops", "--stdin"], Some(&url));
    assert!(err(&neither).contains("--webhook"), "{}", err(&neither));

    ok(&s.run(
        &["notify", "add", "ops", "--webhook", "--stdin"],
        Some(&format!("{url}\n")),
    ));
    ok(&s.run(
        &[
            "notify",
            "add",
            "books",
            "--email-to",
            "books@firm.example",
            "--from",
            "weft@firm.example",
            "--stdin",
        ],
        Some("smtps://weft:mailpassword77@127.0.0.1:1\n"),
    ));
    let list = s.run(&["notify", "list"], None);
    ok(&list);
    assert!(
        out(&list).contains("ops\twebhook to 127.0.0.1"),
        "{}",
        out(&list)
    );
    assert!(
        out(&list).contains("books\te-mail to books@firm.example via 127.0.0.1"),
        "{}",
        out(&list)
    );
    // Nobody listens: said per receiver, by host only, and the exit code says it failed.
    let test = s.run(&["notify", "test", "ops"], None);
    assert_eq!(test.status.code(), Some(1), "{}", err(&test));
    assert!(
        err(&test).contains(&format!(
            "not delivered: posting the notification to 127.0.0.1:{port} failed"
        )),
        "{}",
        err(&test)
    );
    assert!(
        out(&test).contains("told 0 of 1 receiver(s)"),
        "{}",
        out(&test)
    );
    let missing = s.run(&["notify", "test", "nobody"], None);
    assert!(
        err(&missing).contains("`weft notify list`"),
        "{}",
        err(&missing)
    );
    ok(&s.run(&["notify", "remove", "ops"], None));
    let again = s.run(&["notify", "remove", "ops"], None);
    assert_eq!(again.status.code(), Some(1));

    let empty = s.run(&["webhook", "set-key", "xero", "--stdin"], Some("  \n"));
    assert!(err(&empty).contains("empty"), "{}", err(&empty));
    ok(&s.run(
        &["webhook", "set-key", "xero", "--stdin"],
        Some("a-webhook-key\n"),
    ));
    ok(&s.run(&["webhook", "remove-key", "xero"], None));
    let other = s.run(&["webhook", "set-key", "hubspot", "--stdin"], Some("k"));
    assert_eq!(other.status.code(), Some(2), "{}", err(&other));
    // Nothing sealed is readable in the workspace's files.
    for entry in std::fs::read_dir(s.project().join(".weft")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains("XSECRETTOKEN") && !text.contains("mailpassword77"));
        }
    }
}

#[test]
fn a_connection_owned_by_a_console_user_is_listed_and_keeps_its_owner_from_removal() {
    let s = workspace("owners");
    s.add_client("xapp", "xero", "ABC123", &format!("{}\n", common::SECRET));
    // No console users yet: nobody to give a connection to.
    let early = s.run(
        &[
            "connection",
            "create",
            "early",
            "--connector",
            "xero",
            "--client",
            "xapp",
            "--owner",
            "bob",
        ],
        None,
    );
    assert_eq!(early.status.code(), Some(1));
    assert!(
        err(&early).contains("no console users yet") && err(&early).contains("weft user add bob"),
        "{}",
        err(&early)
    );
    ok(&s.run(
        &["user", "add", "alice", "--password-stdin"],
        Some(ALICE_PW),
    ));
    ok(&s.run(&["user", "add", "bob", "--password-stdin"], Some(BOB_PW)));
    let create = |name: &str, owner: &str| {
        s.run(
            &[
                "connection",
                "create",
                name,
                "--connector",
                "xero",
                "--client",
                "xapp",
                "--owner",
                owner,
            ],
            None,
        )
    };
    let nobody = create("stray", "mallory");
    assert_eq!(nobody.status.code(), Some(1));
    assert!(
        err(&nobody).contains("no console user `mallory`; see `weft user list`"),
        "{}",
        err(&nobody)
    );
    let spaced = create("stray", "bob smith");
    assert!(err(&spaced).contains("1 to 64 letters"), "{}", err(&spaced));
    let made = create("bobs", "bob");
    ok(&made);
    assert!(out(&made).contains("owned by bob"), "{}", out(&made));
    s.create_connection("shared", "xero", "xapp");
    let user_scope = s.run(
        &[
            "connection",
            "create",
            "mine",
            "--connector",
            "xero",
            "--client",
            "xapp",
            "--user",
            "--owner",
            "bob",
        ],
        None,
    );
    assert_eq!(
        user_scope.status.code(),
        Some(2),
        "--user and --owner conflict"
    );

    let list = s.run(&["connection", "list"], None);
    ok(&list);
    let text = out(&list);
    assert!(text.contains("OWNER"), "{text}");
    let row = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} in {text}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(row("bobs")[2..4], ["workspace", "bob"]);
    assert_eq!(row("shared")[2..4], ["workspace", "-"]);
    let json: serde_json::Value =
        serde_json::from_slice(&s.run(&["connection", "list", "--json"], None).stdout).unwrap();
    assert_eq!(json[0]["owner"], "bob");
    assert!(json[1].get("owner").is_none());
    let show = s.run(&["connection", "show", "bobs"], None);
    assert!(out(&show).contains("owner:        bob"), "{}", out(&show));
    let users = s.run(&["user", "list"], None);
    assert!(out(&users).contains("CONNECTIONS"), "{}", out(&users));
    assert!(
        out(&users)
            .lines()
            .any(|l| l.starts_with("bob") && l.contains("bobs")),
        "{}",
        out(&users)
    );

    // bob owns a connection: he is not removed, and the message says what to do.
    let refused = s.run(&["user", "remove", "bob", "--yes"], None);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        err(&refused).contains("`bob` owns connection bobs")
            && err(&refused).contains("weft connection edit NAME --no-owner"),
        "{}",
        err(&refused)
    );
    // Given to alice, then back to the workspace; then bob goes.
    ok(&s.run(&["connection", "edit", "bobs", "--owner", "alice"], None));
    assert_eq!(s.connection_json("bobs")["owner"], "alice");
    let both = s.run(
        &["connection", "edit", "bobs", "--owner", "bob", "--no-owner"],
        None,
    );
    assert_eq!(both.status.code(), Some(2));
    ok(&s.run(&["connection", "edit", "bobs", "--no-owner"], None));
    assert!(s.connection_json("bobs").get("owner").is_none());
    ok(&s.run(&["user", "remove", "bob", "--yes"], None));
    let toml = std::fs::read_to_string(s.project().join("weft.toml")).unwrap();
    assert!(!toml.contains("owner"), "{toml}");
    s.assert_no_plain_secret();
}

/// SIGTERM (as a service manager sends it) or Ctrl-C stops `weft serve` cleanly: it says so,
/// exits with 0, and a connection that never finishes its request holds it back no longer than
/// its grace period; a second signal during that period ends it at once, with 130.
#[test]
fn serve_stops_cleanly_on_sigterm_even_with_a_request_left_unfinished() {
    use std::io::{BufRead as _, Write as _};
    let s = workspace("serve-stop");
    ok(&s.run(
        &["user", "add", "alice", "--password-stdin"],
        Some(&format!("{ALICE_PW}\n")),
    ));
    use rustix::process::Signal;
    for signals in [
        &[Signal::TERM][..],
        &[Signal::INT][..],
        &[Signal::TERM, Signal::INT][..],
    ] {
        let mut child = s
            .command(&["serve", "--listen", "127.0.0.1:0"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        let at = first.find("http://localhost:").expect(&first) + "http://localhost:".len();
        let port: u16 = first[at..].split('/').next().unwrap().parse().unwrap();
        // The console answers; then a request is begun and never finished.
        let mut page = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        page.write_all(b"GET /login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut page, &mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let mut unfinished = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        unfinished.write_all(b"GET /login HTTP/1.1\r\n").unwrap();
        let pid = rustix::process::Pid::from_child(&child);
        rustix::process::kill_process(pid, signals[0]).unwrap();
        if let Some(&again) = signals.get(1) {
            // Once it has said it is stopping, the second signal.
            let mut said = std::io::BufReader::new(child.stderr.take().unwrap());
            let mut line = String::new();
            while !line.contains("stopping:") {
                line.clear();
                assert!(said.read_line(&mut line).unwrap() > 0, "no stopping line");
            }
            rustix::process::kill_process(pid, again).unwrap();
            // (A clean stop ends with 0, after the unfinished request's grace period.)
            let status = child.wait().unwrap();
            assert_eq!(status.code(), Some(130), "{status}");
            assert_eq!(lines.map_while(Result::ok).count(), 0, "no `stopped` line");
            drop(unfinished);
            continue;
        }
        let mut status = None;
        for _ in 0..600 {
            status = child.try_wait().unwrap();
            if status.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let Some(status) = status else {
            let _ = child.kill();
            panic!("`weft serve` still runs a minute after {signals:?}");
        };
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        let mut said = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut said).unwrap();
        assert_eq!(status.code(), Some(0), "{signals:?}: {status}\n{said}");
        assert!(said.contains("stopping: no new connections"), "{said}");
        assert_eq!(rest, ["the Weft console stopped"], "{said}");
        drop(unfinished);
    }
}
