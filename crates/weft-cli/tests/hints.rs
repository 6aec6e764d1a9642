//! Every `weft …` command a message suggests (in the string literals of the CLI and the engine)
//! is one the command line accepts: same subcommands, same options, the right arguments.

mod common;

use std::io::BufRead as _;
use std::path::Path;
use std::process::Stdio;

use clap::Parser as _;
use common::{Sandbox, err, free_port};
use weft_cli::Cli;

/// The `weft …` commands quoted in backticks in `dir`'s files ending in `ext` (the string
/// literals of Rust files, comments left out; the text of specs), with the file and line of each.
fn suggested(dir: &Path, ext: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") || code.starts_with('#') {
                continue;
            }
            for quoted in line.split('`').skip(1).step_by(2) {
                if quoted.starts_with("weft ") {
                    found.push((format!("{}:{}", file.display(), n + 1), quoted.to_owned()));
                }
            }
        }
    }
    found
}

/// The command line a suggestion stands for: format arguments (`{name}`, `{}`) and the `ID`
/// placeholder become `1` (valid for names and numeric ids alike), optional parts lose their
/// brackets, and a redirection or pipe ends it.
fn words(suggestion: &str) -> Vec<String> {
    let mut text = String::new();
    let mut in_braces = false;
    for c in suggestion.chars() {
        match c {
            '{' => {
                in_braces = true;
                text.push('1');
            }
            '}' => in_braces = false,
            '[' | ']' => {}
            _ if in_braces => {}
            _ => text.push(c),
        }
    }
    let text = text.split(['<', '|']).next().unwrap_or_default();
    text.split_whitespace()
        .map(|w| {
            if w == "ID" {
                "1".to_owned()
            } else {
                w.to_owned()
            }
        })
        .collect()
}

#[test]
fn every_suggested_command_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut all = suggested(&root.join("src"), "rs");
    all.extend(suggested(&root.join("../weft-engine/src"), "rs"));
    all.extend(suggested(&root.join("../weft-server/src"), "rs"));
    all.extend(suggested(&root.join("../weft-server/src/pages"), "rs"));
    // The specs' setup steps and messages, shown by `weft connectors show`.
    all.extend(suggested(&root.join("../../specs"), "toml"));
    assert!(all.len() > 40, "found only {} suggestions", all.len());
    let mut wrong = Vec::new();
    for (at, suggestion) in &all {
        // `weft {}` echoes a command being run, built from real arguments.
        if suggestion.starts_with("weft {") {
            continue;
        }
        if let Err(e) = Cli::try_parse_from(words(suggestion)) {
            let first = e.to_string().lines().next().unwrap_or_default().to_owned();
            wrong.push(format!("{at}: `{suggestion}`: {first}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "suggestions that do not parse:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_sandbox_suggests_the_names_the_template_uses() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["sandbox", "--port-base", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let done = line.starts_with("Serving until interrupted");
            lines.push(line);
            if done {
                break;
            }
        }
        let _ = tx.send(lines);
    });
    // A bound on the wait, not a timing assertion: a sandbox that never prints fails the test.
    let lines = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    let commands: Vec<Vec<String>> = lines
        .iter()
        .filter_map(|l| l.trim().split("| ").last())
        .filter(|l| l.starts_with("weft "))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    assert!(commands.len() >= 4, "{lines:?}");
    for command in &commands {
        assert!(Cli::try_parse_from(command).is_ok(), "{command:?}");
    }
    // The Kantata and Xero connections are the ones the kantata-xero template's flow names; the
    // QuickBooks and HubSpot ones belong to no template the sandbox prints commands for.
    let connector = |c: &Vec<String>| {
        c.iter()
            .position(|w| w == "--connector")
            .and_then(|i| c.get(i + 1))
            .cloned()
            .unwrap_or_default()
    };
    let creates: Vec<&Vec<String>> = commands
        .iter()
        .filter(|c| c[1] == "connection" && c[2] == "create")
        .collect();
    for wanted in ["quickbooks", "hubspot"] {
        assert!(
            creates.iter().any(|c| connector(c) == wanted),
            "{creates:?}"
        );
    }
    let created: Vec<&str> = creates
        .iter()
        .filter(|c| connector(c) != "quickbooks" && connector(c) != "hubspot")
        .map(|c| c[3].as_str())
        .collect();
    let flow = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../templates/kantata-xero/flows/kantata-xero.toml"),
    )
    .unwrap();
    for name in &created {
        assert!(
            flow.contains(&format!("connection = \"{name}\"")),
            "the sandbox creates connection `{name}`, which the template's flow does not name"
        );
    }
    assert_eq!(created.len(), 2, "{created:?}");
}

#[test]
fn hints_fit_the_situation() {
    let s = Sandbox::new("hints");
    // Outside a workspace: `sync run` takes no --user, so it is not suggested.
    for args in [&["sync", "run", "kantata-xero"][..], &["runs", "list"]] {
        let refused = s.run(args, None);
        assert_eq!(refused.status.code(), Some(1));
        assert!(err(&refused).contains("`weft init`"), "{}", err(&refused));
        assert!(!err(&refused).contains("--user"), "{}", err(&refused));
    }

    // The credential store deleted: the client's secret is what is missing, and `client edit`
    // is the fix, said before any consent.
    assert!(s.run(&["init"], None).status.success());
    s.add_client("xapp", "xero", "ABC", "x-secret\n");
    s.create_connection("x", "xero", "xapp");
    std::fs::remove_file(s.project().join(".weft/credentials.json")).unwrap();
    let port = free_port().to_string();
    let authorize = s.run(
        &[
            "connection",
            "authorize",
            "x",
            "--no-browser",
            "--port",
            &port,
            "--timeout",
            "5",
        ],
        None,
    );
    assert_eq!(authorize.status.code(), Some(1));
    assert!(
        err(&authorize).contains("weft client edit xapp"),
        "{}",
        err(&authorize)
    );
    assert!(
        authorize.stdout.is_empty(),
        "no authorize URL: {:?}",
        authorize.stdout
    );
}
