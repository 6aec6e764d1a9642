//! Snapshots of the diagnostics of malformed specs, and a check that the shipped specs are clean.
//!
//! Each file in `tests/fixtures/malformed/` is a small, otherwise valid spec with exactly one
//! thing broken; its first line says what. The loader must report it as a located error, and
//! the rendered report is snapshotted so that wording, position, key path and hint are reviewed.

use std::path::Path;

use weft_core::load_str;

/// The name shown in diagnostics: relative, so snapshots do not depend on the checkout's place.
fn display_name(path: &Path) -> String {
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .expect("fixture names are UTF-8");
    format!("tests/fixtures/malformed/{file}")
}

#[test]
fn malformed_specs_are_reported_with_locations() {
    // Problems are gathered so that one run names every fixture that falls short.
    let mut problems = Vec::new();
    let mut seen = 0;
    // The three-argument form: insta refuses `..` inside the pattern itself.
    insta::glob!("../fixtures/malformed", "*.toml", |path| {
        seen += 1;
        let text = std::fs::read_to_string(path).expect("fixture is readable");
        let name = display_name(path);
        if !text.starts_with("# ") {
            problems.push(format!(
                "{name}: must start with a `# ` comment saying what is wrong"
            ));
        }
        let report = load_str(&name, &text);
        let rendered = report.render();
        if !report.has_errors() {
            problems.push(format!("{name}: loaded without errors\n{rendered}"));
        }
        for d in report.diagnostics.iter().filter(|d| d.is_error()) {
            if d.span.as_ref().is_none_or(|s| s.end > text.len()) {
                problems.push(format!(
                    "{name}: error `{}` has no span in the file",
                    d.message
                ));
            }
        }
        if !is_located(&rendered, &name) {
            problems.push(format!(
                "{name}: no `{name}:<line>:<column>` in\n{rendered}"
            ));
        }
        insta::assert_snapshot!(rendered);
    });
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    assert!(seen >= 45, "only {seen} malformed fixtures");
}

/// Whether `rendered` names a position `<name>:<line>:<column>`.
fn is_located(rendered: &str, name: &str) -> bool {
    let prefix = format!("{name}:");
    rendered.match_indices(&prefix).any(|(at, _)| {
        let rest = &rendered[at + prefix.len()..];
        let mut parts = rest.splitn(3, ':');
        let line = parts.next().unwrap_or_default();
        let column: String = parts
            .next()
            .unwrap_or_default()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        line.parse::<usize>().is_ok() && !column.is_empty()
    })
}

#[test]
fn shipped_specs_load_cleanly() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../specs"));
    let mut count = 0;
    for entry in std::fs::read_dir(dir).expect("specs/ is readable") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        count += 1;
        let text = std::fs::read_to_string(&path).expect("spec is readable");
        let name = format!(
            "specs/{}",
            path.file_name()
                .and_then(|f| f.to_str())
                .unwrap_or_default()
        );
        let report = load_str(&name, &text);
        assert!(
            report.diagnostics.is_empty(),
            "{name} has diagnostics:\n{}",
            report.render()
        );
        assert!(report.spec.is_some(), "{name} did not load");
    }
    assert!(count > 0, "no spec found in {}", dir.display());
}
