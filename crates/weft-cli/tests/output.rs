//! What every command prints, as a reader sees it: a closed pipe (`weft … | head`) is no
//! failure, and tables stay aligned whatever their values.

mod common;

use std::process::Stdio;

use common::{Sandbox, err, out};

/// Runs `weft args` with stdout a pipe whose reader has already gone, as `| head` leaves it
/// once it has read its lines; returns (exit code, stderr).
fn into_closed_pipe(s: &Sandbox, args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = s
        .command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (output.status.code(), err(&output))
}

#[test]
fn a_closed_pipe_is_not_a_failure_for_any_command() {
    let s = Sandbox::new("pipe");
    assert!(s.run(&["init"], None).status.success());
    s.add_client("xapp", "xero", "ABC", "x-secret\n");
    s.create_connection("x", "xero", "xapp");
    let commands: &[&[&str]] = &[
        &["--help"],
        &["--version"],
        &["connectors", "list"],
        &["connectors", "list", "--json"],
        &["connectors", "show", "xero"],
        &["connectors", "show", "kantata", "--json"],
        &["client", "list"],
        &["client", "list", "--json"],
        &["client", "show", "xapp"],
        &["connection", "list"],
        &["connection", "list", "--json"],
        &["connection", "show", "x"],
        &["connection", "callback-url"],
        &["plugins", "list"],
        &["doctor"],
        &["runs", "list"],
        &["errors", "list"],
        &["sync", "status"],
        &["init", "--template", "kantata-xero"],
    ];
    for args in commands {
        let (code, stderr) = into_closed_pipe(&s, args);
        assert!(
            !stderr.to_lowercase().contains("broken pipe"),
            "weft {}: {stderr}",
            args.join(" ")
        );
        assert_ne!(code, Some(1), "weft {}: {stderr}", args.join(" "));
        assert!(code.is_some(), "weft {} was killed", args.join(" "));
    }
}

#[test]
fn tables_stay_aligned_with_long_and_wide_values() {
    let s = Sandbox::new("tables");
    assert!(s.run(&["init"], None).status.success());
    let long = "a-client-name-far-longer-than-twenty-characters";
    s.add_client(long, "xero", "ABC", "x-secret\n");
    s.add_client("短い名前", "xero", "DEF", "x-secret\n");
    s.create_connection("x", "xero", long);
    s.create_connection("配信-接続", "xero", "短い名前");
    for args in [&["client", "list"][..], &["connection", "list"]] {
        let listed = s.run(args, None);
        assert!(listed.status.success(), "{}", err(&listed));
        let text = out(&listed);
        let lines: Vec<&str> = text.lines().collect();
        // Every column starts at the same display column on every line.
        let starts = |line: &str| -> Vec<usize> {
            let mut starts = Vec::new();
            let mut width = 0;
            let mut gap = 2;
            for c in line.chars() {
                if c == ' ' {
                    gap += 1;
                } else {
                    if gap >= 2 {
                        starts.push(width);
                    }
                    gap = 0;
                }
                width += unicode_width(c);
            }
            starts
        };
        let header = starts(lines[0]);
        for line in &lines[1..] {
            assert_eq!(starts(line), header, "{}:\n{text}", args.join(" "));
        }
        assert!(lines.iter().all(|l| !l.ends_with(' ')), "{text}");
    }
}

/// Display width of the characters these tests use: CJK ideographs and kana take two columns.
fn unicode_width(c: char) -> usize {
    if ('\u{3040}'..='\u{30ff}').contains(&c) || ('\u{4e00}'..='\u{9fff}').contains(&c) {
        2
    } else {
        1
    }
}

#[test]
fn connectors_show_reads_as_text_and_promises_only_what_weft_does() {
    let s = Sandbox::new("show");
    for id in ["kantata", "xero"] {
        let shown = s.run(&["connectors", "show", id], None);
        assert!(shown.status.success(), "{}", err(&shown));
        let text = out(&shown);
        for markup in ["**", "`", "|---", "<br>", "## "] {
            assert!(!text.contains(markup), "{id}: `{markup}` left in:\n{text}");
        }
        assert!(text.contains("Setup\n-----"), "{text}");
        // A wrong secret is found when the code is exchanged, and the steps say so rather
        // than promising a check before consent.
        assert!(
            text.contains("a wrong secret only when Weft exchanges"),
            "{id}:\n{text}"
        );
        for promise in [
            "straight away",
            "Weft then asks Xero's token service",
            "the provider accepts the client ID and secret",
        ] {
            assert!(!text.contains(promise), "{id}: {promise}");
        }
        let raw = s.run(&["connectors", "show", id, "--markdown"], None);
        assert!(raw.status.success(), "{}", err(&raw));
        let markdown = out(&raw);
        assert!(
            markdown.contains("## Setup") && markdown.contains("|---|"),
            "{markdown}"
        );
        let committed = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("../../docs/connectors/{id}.md")),
        )
        .unwrap();
        assert!(
            committed.ends_with(&markdown),
            "--markdown is the committed reference"
        );
    }
}
