//! The real `weft` binary, run as a person would: exit codes, stdout and stderr.

use std::path::Path;
use std::process::{Command, Output};

fn weft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .env_remove("WEFT_SPEC_PATH")
        .output()
        .expect("the weft binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_reads_well_and_version_prints() {
    let out = weft(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    assert!(
        help.contains("connectors") && help.contains("spec"),
        "{help}"
    );
    let out = weft(&["--version"]);
    assert!(text(&out.stdout).starts_with("weft "));
}

#[test]
fn connectors_list_json_has_every_shipped_connector() {
    let out = weft(&["connectors", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("list --json is JSON");
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["kantata", "xero", "quickbooks", "hubspot", "files"]);
    assert_eq!(list[0]["former_names"][0], "Mavenlink");
}

#[test]
fn connectors_show_xero_has_setup_with_callback_and_field_rules() {
    let out = weft(&[
        "connectors",
        "show",
        "xero",
        "--callback-port",
        "9123",
        "--markdown",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("http://localhost:9123/oauth/callback"),
        "{shown}"
    );
    assert!(
        !shown.contains("{{"),
        "a template was left unrendered:\n{shown}"
    );
    let row = |id: &str| {
        shown
            .lines()
            .find(|l| l.starts_with("| ") && l.contains(&format!("`{id}`")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(row("client_id").contains("required"), "{shown}");
    assert!(
        row("client_secret").contains("required")
            && row("client_secret").contains("never shown again"),
        "{shown}"
    );
    assert!(row("concurrency").contains("1–25"), "{shown}");
}

#[test]
fn connectors_show_finds_former_names_and_json() {
    let out = weft(&["connectors", "show", "mavenlink", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["spec"]["id"], "kantata");
    assert_eq!(
        shown["callback_url"],
        "http://localhost:8976/oauth/callback"
    );
}

#[test]
fn unknown_connector_and_bad_arguments_fail_clearly() {
    let out = weft(&["connectors", "show", "sage-intacct"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("no connector `sage-intacct`") && err.contains("kantata, xero, quickbooks"),
        "{err}"
    );

    let out = weft(&["connectors", "show", "xero", "--callback-port", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let out = weft(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn spec_check_passes_shipped_specs_and_locates_errors() {
    let out = weft(&["spec", "check", "--deny-warnings", "specs"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("0 errors, 0 warnings"));

    let dir = std::env::temp_dir().join(format!("weft-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "id = \"bad\"\nname = 3\n").unwrap();
    let bad_path = bad.to_str().unwrap();
    let out = weft(&["spec", "check", bad_path]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{bad_path}:2:8")), "{err}");

    let out = weft(&["spec", "check", "--json", bad_path]);
    assert_eq!(out.status.code(), Some(1));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["valid"], false);
    assert_eq!(line["diagnostics"][0]["line"], 2);

    let out = weft(&["spec", "check", dir.join("missing.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read the file"));
    std::fs::remove_dir_all(&dir).ok();
}

/// Starts `weft sandbox --json` and returns the child and its first line (the JSON object).
fn sandbox(extra: &[&str]) -> (std::process::Child, serde_json::Value) {
    use std::io::BufRead as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["sandbox", "--json", "--port-base", "0"])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("weft sandbox starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    // A bound on the wait, not a timing assertion: a sandbox that never prints fails the test.
    let line = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .unwrap_or_default();
    let info = serde_json::from_str(&line).unwrap_or_else(|e| {
        let _ = child.kill();
        panic!("the first line is not JSON ({e}): {line:?}")
    });
    (child, info)
}

/// A plain HTTP/1.1 GET over loopback; returns the whole answer.
fn http_get(base: &str, path: &str, headers: &[(&str, &str)]) -> String {
    use std::io::{Read as _, Write as _};
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("the sandbox listens");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    out
}

#[test]
fn sandbox_prints_urls_and_credentials_that_work() {
    let (mut child, info) = sandbox(&["--seed", "7", "--size", "5"]);
    assert_eq!(info["seed"], 7);
    assert_eq!(info["callback_url"], "http://localhost:8976/oauth/callback");
    for url in [
        &info["kantata"]["app_url"],
        &info["kantata"]["api_url"],
        &info["xero"]["login_url"],
        &info["xero"]["identity_url"],
        &info["xero"]["api_url"],
    ] {
        assert!(
            url.as_str().unwrap().starts_with("http://127.0.0.1:"),
            "{url}"
        );
    }
    assert_eq!(info["xero"]["organisations"].as_array().unwrap().len(), 2);
    let token = format!(
        "Bearer {}",
        info["kantata"]["personal_token"].as_str().unwrap()
    );
    let me = http_get(
        info["kantata"]["api_url"].as_str().unwrap(),
        "/api/v1/users/me",
        &[("Authorization", &token)],
    );
    assert!(me.starts_with("HTTP/1.1 200"), "{me}");
    let refused = http_get(
        info["kantata"]["api_url"].as_str().unwrap(),
        "/api/v1/users/me",
        &[],
    );
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn sandbox_on_a_busy_port_fails_clearly() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = weft(&["sandbox", "--port-base", &port]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot start the Kantata simulator") && err.contains("--port-base 0"),
        "{err}"
    );
}
