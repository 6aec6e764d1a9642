//! A connection signs in with one of the methods its spec declares: Kantata's either with an
//! OAuth client (`oauth2`) or with a pasted personal token (`token`). The method is chosen with
//! `--method` or inferred from what is given, what belongs to the other method is refused,
//! a connection switches method on edit, and a `weft.toml` written before connections recorded
//! their method keeps working, losing nothing.

mod common;

use common::{Sandbox, err, out, read};
use weft_harness::kantata::{KantataConfig, KantataSim};

fn ok(o: &std::process::Output) {
    assert!(o.status.success(), "{}", err(o));
}

/// Runs a command that must fail with exit code 1 and a message holding `expect`.
fn refused(s: &Sandbox, args: &[&str], stdin: Option<&str>, expect: &str) {
    let o = s.run(args, stdin);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {}", err(&o));
    assert!(err(&o).contains(expect), "{args:?}: {}", err(&o));
}

fn show(s: &Sandbox, name: &str) -> serde_json::Value {
    let o = s.run(&["connection", "show", name, "--json"], None);
    ok(&o);
    serde_json::from_str(&out(&o)).unwrap()
}

#[test]
fn kantata_connections_sign_in_one_way_each_and_refuse_the_other_ways_fields() {
    let sim = KantataSim::start(KantataConfig {
        size: 5,
        ..KantataConfig::default()
    })
    .unwrap();
    let s = Sandbox::new("signin-ways");
    ok(&s.run(&["init"], None));
    s.add_client("kapp", "kantata", "K", "k-secret\n");
    s.guard(sim.personal_token());
    let token = format!("{}\n", sim.personal_token());
    let api = format!("api={}", sim.api_url());
    let app = format!("app={}", sim.app_url());
    let weft_toml = s.project().join("weft.toml");

    // OAuth, inferred from the client.
    let o = s.run(
        &[
            "connection",
            "create",
            "o",
            "--connector",
            "kantata",
            "--client",
            "kapp",
        ],
        None,
    );
    ok(&o);
    assert!(out(&o).contains("signs in with oauth2"), "{}", out(&o));
    assert!(
        out(&o).contains("weft connection authorize o"),
        "{}",
        out(&o)
    );
    assert_eq!(show(&s, "o")["method"], "oauth2");

    // The token, chosen explicitly, and working against the simulator.
    let t = s.run(
        &[
            "connection",
            "create",
            "t",
            "--connector",
            "kantata",
            "--method",
            "token",
            "--host",
            &api,
            "--host",
            &app,
            "--token-stdin",
        ],
        Some(&token),
    );
    ok(&t);
    assert!(out(&t).contains("signs in with token"), "{}", out(&t));
    assert_eq!(show(&s, "t")["method"], "token");
    assert!(show(&s, "t").get("client").is_none());
    ok(&s.run(&["connection", "test", "t"], None));
    // The token inferred from --token-stdin alone.
    ok(&s.run(
        &[
            "connection",
            "create",
            "t2",
            "--connector",
            "kantata",
            "--token-stdin",
        ],
        Some("another-token\n"),
    ));
    assert_eq!(show(&s, "t2")["method"], "token");

    let before = read(&weft_toml);
    // Nothing given: two methods fit, and the message says how to choose.
    refused(
        &s,
        &["connection", "create", "x", "--connector", "kantata"],
        None,
        "connector `kantata` signs in with `oauth2` or `token`; choose which this connection uses: run `weft connection create x --connector kantata` with `--method oauth2 --client CLIENT` or `--method token --token-stdin`",
    );
    // Both ways at once.
    refused(
        &s,
        &[
            "connection",
            "create",
            "x",
            "--connector",
            "kantata",
            "--client",
            "kapp",
            "--token-stdin",
        ],
        Some(&token),
        "--client (an OAuth client) and --token-stdin (a pasted token) are for different sign-in methods",
    );
    // What belongs to the other method, with the method chosen.
    refused(
        &s,
        &[
            "connection",
            "create",
            "x",
            "--connector",
            "kantata",
            "--method",
            "token",
            "--client",
            "kapp",
            "--token-stdin",
        ],
        Some(&token),
        "--client names an OAuth client, which a connection signing in with `token` does not use",
    );
    refused(
        &s,
        &[
            "connection",
            "create",
            "x",
            "--connector",
            "kantata",
            "--method",
            "oauth2",
            "--token-stdin",
        ],
        Some(&token),
        "--token-stdin gives a pasted token, which a connection signing in with `oauth2` does not use",
    );
    // A method the spec does not declare, and what each method needs.
    refused(
        &s,
        &[
            "connection",
            "create",
            "x",
            "--connector",
            "kantata",
            "--method",
            "client-credentials",
            "--client",
            "kapp",
        ],
        None,
        "connector `kantata` does not sign in with `client-credentials`; choose `oauth2` or `token`",
    );
    refused(
        &s,
        &[
            "connection",
            "create",
            "x",
            "--connector",
            "kantata",
            "--method",
            "token",
        ],
        None,
        "a connection signing in with `token` needs its token",
    );
    refused(
        &s,
        &[
            "connection",
            "create",
            "x",
            "--connector",
            "kantata",
            "--method",
            "oauth2",
        ],
        None,
        "pass --client CLIENT",
    );
    // The token field's own rules still apply, without repeating the value.
    refused(
        &s,
        &[
            "connection",
            "create",
            "x",
            "--connector",
            "kantata",
            "--token-stdin",
        ],
        Some("two words\n"),
        "Personal OAuth token: the value is not accepted",
    );
    let bad = s.run(
        &[
            "connection",
            "create",
            "x",
            "--connector",
            "kantata",
            "--method",
            "saml",
        ],
        None,
    );
    assert_eq!(bad.status.code(), Some(2), "{}", err(&bad));
    assert!(
        err(&bad).contains("`saml` is not a sign-in method"),
        "{}",
        err(&bad)
    );
    assert_eq!(read(&weft_toml), before, "nothing refused was written");

    // Editing keeps each connection to its method unless --method switches it.
    refused(
        &s,
        &["connection", "edit", "t", "--client", "kapp"],
        None,
        "connection `t` signs in with a pasted token (`token`), which uses no OAuth client",
    );
    refused(
        &s,
        &["connection", "edit", "o", "--token-stdin"],
        Some(&token),
        "connection `o` signs in with `oauth2`; a pasted token is for connections signing in with `token`",
    );
    refused(
        &s,
        &[
            "connection",
            "authorize",
            "t",
            "--no-browser",
            "--timeout",
            "1",
        ],
        None,
        "connection `t` signs in with a pasted token (`token`), so there is nothing to authorize",
    );
    refused(
        &s,
        &["connection", "edit", "o", "--method", "token"],
        None,
        "a connection switched to `token` needs its token",
    );
    assert_eq!(read(&weft_toml), before, "nothing refused was written");

    // Switched to the token: the client is left, and the token works.
    let switched = s.run(
        &[
            "connection",
            "edit",
            "o",
            "--method",
            "token",
            "--host",
            &api,
            "--host",
            &app,
            "--token-stdin",
        ],
        Some(&token),
    );
    ok(&switched);
    assert!(
        out(&switched).contains("it now signs in with token"),
        "{}",
        out(&switched)
    );
    let o = show(&s, "o");
    assert_eq!(o["method"], "token");
    assert!(o.get("client").is_none(), "{o}");
    ok(&s.run(&["connection", "test", "o"], None));

    // And back to OAuth: the pasted token is not used again; the connection awaits consent.
    let back = s.run(
        &[
            "connection",
            "edit",
            "o",
            "--method",
            "oauth2",
            "--client",
            "kapp",
        ],
        None,
    );
    ok(&back);
    assert!(
        out(&back).contains("weft connection authorize o"),
        "{}",
        out(&back)
    );
    let o = show(&s, "o");
    assert_eq!(o["method"], "oauth2");
    assert_eq!(o["client"], "kapp");
    assert_eq!(o["status"], "not authorized");
    let test = s.run(&["connection", "test", "o"], None);
    assert_eq!(
        test.status.code(),
        Some(8),
        "no credentials yet: {}",
        err(&test)
    );

    let list = s.run(&["connection", "list"], None);
    ok(&list);
    assert!(out(&list).contains("SIGN-IN"), "{}", out(&list));
    s.assert_no_plain_secret();
}

#[test]
fn connections_written_before_methods_were_recorded_keep_working_and_lose_nothing() {
    let sim = KantataSim::start(KantataConfig {
        size: 5,
        ..KantataConfig::default()
    })
    .unwrap();
    let s = Sandbox::new("signin-legacy");
    ok(&s.run(&["init"], None));
    s.add_client("kapp", "kantata", "K", "k-secret\n");
    s.guard(sim.personal_token());
    let token = format!("{}\n", sim.personal_token());
    let api = format!("api={}", sim.api_url());
    let app = format!("app={}", sim.app_url());
    for name in ["pasted", "both"] {
        ok(&s.run(
            &[
                "connection",
                "create",
                name,
                "--connector",
                "kantata",
                "--host",
                &api,
                "--host",
                &app,
                "--token-stdin",
            ],
            Some(&token),
        ));
    }
    ok(&s.run(
        &[
            "connection",
            "create",
            "oauth",
            "--connector",
            "kantata",
            "--client",
            "kapp",
        ],
        None,
    ));
    // The file as Weft wrote it before connections recorded their method: no `method`, and
    // a connection that was given both an OAuth client and a pasted token (which it used).
    let weft_toml = s.project().join("weft.toml");
    let text = read(&weft_toml);
    assert_eq!(text.matches("method = ").count(), 3, "{text}");
    let legacy: String = text
        .lines()
        .filter(|l| !l.starts_with("method = "))
        .map(|l| {
            if l == "[connections.both]" {
                format!("{l}\nclient = \"kapp\"\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&weft_toml, &legacy).unwrap();

    // Each shows the method it has been using, without the file being rewritten.
    assert_eq!(show(&s, "pasted")["method"], "token");
    assert_eq!(show(&s, "oauth")["method"], "oauth2");
    let both = show(&s, "both");
    assert_eq!(both["method"], "token");
    assert_eq!(both["client"], "kapp");
    assert_eq!(both["status"], "authorized");
    assert_eq!(read(&weft_toml), legacy);
    // And works as before: the pasted tokens are used.
    ok(&s.run(&["connection", "test", "pasted"], None));
    ok(&s.run(&["connection", "test", "both"], None));
    let unauthorized = s.run(&["connection", "test", "oauth"], None);
    assert_eq!(
        unauthorized.status.code(),
        Some(8),
        "{}",
        err(&unauthorized)
    );

    // An edit records the method, keeping everything else (the client named, the token sealed).
    ok(&s.run(&["connection", "edit", "both", "--concurrency", "3"], None));
    ok(&s.run(&["connection", "edit", "oauth", "--concurrency", "3"], None));
    let text = read(&weft_toml);
    assert_eq!(text.matches("method = \"token\"").count(), 1, "{text}");
    assert_eq!(text.matches("method = \"oauth2\"").count(), 1, "{text}");
    let both = show(&s, "both");
    assert_eq!(both["method"], "token");
    assert_eq!(both["client"], "kapp");
    assert_eq!(both["concurrency"], 3);
    ok(&s.run(&["connection", "test", "both"], None));

    // A hand-edited method the connector does not declare is refused at its line.
    let edited = read(&weft_toml).replacen(
        "[connections.pasted]\n",
        "[connections.pasted]\nmethod = \"client-credentials\"\n",
        1,
    );
    std::fs::write(&weft_toml, &edited).unwrap();
    let line = edited
        .lines()
        .position(|l| l == "method = \"client-credentials\"")
        .unwrap()
        + 1;
    refused(
        &s,
        &["connection", "list"],
        None,
        &format!(
            "weft.toml:{line}: connection `pasted`: connector `kantata` does not sign in with `client-credentials`; it signs in with `oauth2` or `token`"
        ),
    );
    s.assert_no_plain_secret();
}
