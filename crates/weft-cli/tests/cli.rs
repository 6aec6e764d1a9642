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
fn connectors_list_json_has_both_connectors() {
    let out = weft(&["connectors", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("list --json is JSON");
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["kantata", "xero"]);
    assert_eq!(list[0]["former_names"][0], "Mavenlink");
}

#[test]
fn connectors_show_xero_has_setup_with_callback_and_field_rules() {
    let out = weft(&["connectors", "show", "xero", "--callback-port", "9123"]);
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
    let out = weft(&["connectors", "show", "quickbooks"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("no connector `quickbooks`") && err.contains("kantata, xero"),
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
