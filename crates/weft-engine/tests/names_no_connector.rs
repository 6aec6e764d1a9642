//! The engine names no connector, resource or field: what belongs to a connector lives in its
//! spec (or a plugin the spec names) and in flow files. Comments may give examples; code, strings
//! and tests may not.

use std::path::Path;

/// Words that would mean the engine knows a connector.
const WORDS: [&str; 5] = ["kantata", "xero", "invoice", "contact", "payment"];

fn visit(dir: &Path, found: &mut Vec<String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            visit(&path, found);
            continue;
        }
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            // A comment after code.
            let code = code.find(" //").map_or(code, |i| &code[..i]).to_lowercase();
            if WORDS.iter().any(|w| code.contains(w)) {
                found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
}

#[test]
fn the_engine_names_no_connector_resource_or_field() {
    let mut found = Vec::new();
    visit(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut found,
    );
    assert!(
        found.is_empty(),
        "the engine names a connector, resource or field outside comments (move it to a spec or a flow file):\n{}",
        found.join("\n")
    );
}
