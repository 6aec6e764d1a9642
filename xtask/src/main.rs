//! `cargo xtask`: project automation that cargo alone cannot do.
//!
//! - `check`: every spec in `specs/` valid with no warnings; the JSON Schema and the connector
//!   docs current; every snapshot has its fixture; every template flow checks clean; the
//!   OpenAPI fixture current (compared only when the official documents are beside the checkout).
//! - `docs`: regenerate `docs/connectors/<id>.md`, `specs/weft-spec.schema.json`,
//!   `templates/weft-flow.schema.json` and `docs/flows.md`.
//! - `new-connector NAME`: scaffold `specs/NAME.toml` (and its doc); refuses to overwrite.
//! - `plugins build [--release]`: build every native connector under `connectors/`, so `weft`
//!   finds their libraries in `target/<profile>/`.
//! - `openapi`: regenerate the Xero OpenAPI fixture the simulator tests validate against, from the
//!   official documents in `../shared/reference/xero-openapi/` (schemas only, with the MIT notice).
//! - `screenshots`: the console's real-browser test (`crates/weft-server/tests/browser.rs`, headless
//!   Chromium through chromedriver) with `WEFT_SCREENSHOTS` set; on success its PNGs replace
//!   `docs/console/*.png`, which the README shows.
//! - `bench [--quick]`: every benchmark (release build): the engine's against the rate-limit
//!   ceilings, the state backends and the fleet (B1-B7, B10, B11, `crates/weft-engine/benches/ceilings.rs`) and the console's pages and idle
//!   memory (B8-B9, `crates/weft-server/benches/console.rs`), one Markdown table on stdout (with
//!   the real time of the rows measured on simulated time or CPU time) and the same figures in
//!   `target/bench/results.json`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use weft_core::{DEFAULT_CALLBACK_PORT, Spec, callback_url, docs, load_file, schema};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  check               check specs (no errors, no warnings), generated files and snapshots
  docs                regenerate docs/connectors/*.md, docs/flows.md and both schemas
  new-connector NAME  scaffold specs/NAME.toml and its doc (refuses to overwrite)
  plugins build [--release]
                      build the native connectors in connectors/ into target/<profile>/
  openapi             regenerate crates/weft-harness/tests/fixtures/xero-openapi/ from
                      ../shared/reference/xero-openapi/ (schemas only)
  screenshots         walk the console in headless Chromium (needs chromium and
                      chromium-driver) and replace docs/console/*.png
  bench [--quick]     run the benchmarks (B1-B11), print a Markdown table, write
                      target/bench/results.json
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["check"] => check(),
        ["docs"] => generate(),
        ["openapi"] => openapi(),
        ["new-connector", name] => new_connector(name),
        ["plugins", "build"] => plugins_build(false),
        ["plugins", "build", "--release"] => plugins_build(true),
        ["screenshots"] => screenshots(),
        ["bench"] => bench(false),
        ["bench", "--quick"] => bench(true),
        ["help" | "--help" | "-h"] => {
            print!("{USAGE}");
            Ok(())
        }
        _ => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// Every `specs/*.toml`, loaded; fails listing every diagnostic when any has an error or a warning.
fn load_specs(root: &Path) -> Result<Vec<Spec>> {
    let dir = root.join("specs");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    let mut specs = Vec::new();
    let mut problems = String::new();
    for path in paths {
        let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
        let mut report = load_file(&path);
        report.source =
            weft_core::SourceFile::new(relative.display().to_string(), report.source.text());
        if !report.diagnostics.is_empty() {
            problems.push_str(&report.render());
        }
        if let Some(spec) = report.spec {
            specs.push(spec);
        }
    }
    if !problems.is_empty() {
        bail!("specs have problems (warnings count as errors here):\n{problems}");
    }
    Ok(specs)
}

/// The generated files: (path relative to the root, expected content).
fn generated(root: &Path, specs: &[Spec]) -> Vec<(PathBuf, String)> {
    let url = callback_url(DEFAULT_CALLBACK_PORT);
    let mut files = vec![
        (
            PathBuf::from("specs").join(schema::FILE_NAME),
            schema::json(),
        ),
        (
            PathBuf::from("templates").join(weft_engine::flow::SCHEMA_FILE),
            weft_engine::flow::schema_json(),
        ),
        (
            PathBuf::from("docs/flows.md"),
            format!(
                "<!-- Generated by `cargo xtask docs` from the flow model. Do not edit. -->\n\n{}",
                weft_engine::flow::reference_markdown()
            ),
        ),
    ];
    for spec in specs {
        let text = format!("{}\n\n{}", docs::GENERATED, docs::markdown(spec, &url));
        files.push((
            PathBuf::from("docs/connectors").join(format!("{}.md", spec.id())),
            text,
        ));
    }
    let _ = root;
    files
}

fn check() -> Result<()> {
    let root = project_root();
    let specs = load_specs(&root)?;
    let mut stale = Vec::new();
    for (path, expected) in generated(&root, &specs) {
        let actual = std::fs::read_to_string(root.join(&path)).unwrap_or_default();
        if actual != expected {
            stale.push(path.display().to_string());
        }
    }
    // A doc whose spec is gone is stale too.
    if let Ok(entries) = std::fs::read_dir(root.join("docs/connectors")) {
        for entry in entries.flatten() {
            let path = entry.path();
            let id = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            if !specs.iter().any(|s| s.id() == id) {
                stale.push(format!(
                    "{} (no spec `{id}`)",
                    path.strip_prefix(&root).unwrap_or(&path).display()
                ));
            }
        }
    }
    if !stale.is_empty() {
        bail!(
            "generated files are out of date: {}; run `cargo xtask docs` and commit the result",
            stale.join(", ")
        );
    }
    check_snapshots(&root)?;
    let flows = check_templates(&root, &specs)?;
    let fixture = check_openapi(&root)?;
    println!(
        "ok: {} specs valid with no warnings; {flows} template flows check clean; schemas and docs current; snapshots all referenced; {fixture}",
        specs.len()
    );
    Ok(())
}

/// Every shipped template's flows load and check against the specs with no problem.
fn check_templates(root: &Path, specs: &[Spec]) -> Result<usize> {
    let mut problems = Vec::new();
    let mut count = 0;
    for template in std::fs::read_dir(root.join("templates"))?.flatten() {
        let Ok(flows) = std::fs::read_dir(template.path().join("flows")) else {
            continue;
        };
        for flow in flows.flatten() {
            count += 1;
            match weft_engine::flow::Flow::load(&flow.path()) {
                Ok(f) => problems.extend(
                    f.check_against(&|id| specs.iter().find(|s| s.id() == id).cloned())
                        .into_iter()
                        .map(|p| p.to_string()),
                ),
                Err(e) => problems.push(e.to_string()),
            }
        }
    }
    if !problems.is_empty() {
        bail!("template flows have problems:\n  {}", problems.join("\n  "));
    }
    Ok(count)
}

/// Where the official OpenAPI documents are looked for: the shared reference folder beside the
/// checkout (absent on a fresh clone).
const OPENAPI_SOURCE: &str = "../shared/reference/xero-openapi";
/// The fixture the simulator tests read, inside the repository.
const OPENAPI_FIXTURE: &str = "crates/weft-harness/tests/fixtures/xero-openapi";
/// The official documents the fixture is made from.
const OPENAPI_DOCUMENTS: [&str; 2] = ["xero_accounting.yaml", "xero-identity.yaml"];

/// The fixture's files (path relative to the root, content) made from the official documents
/// in `source`.
fn openapi_fixture(source: &Path) -> Result<Vec<(PathBuf, String)>> {
    let license_path = source.join("LICENSE");
    let license = std::fs::read_to_string(&license_path)
        .with_context(|| format!("cannot read {}", license_path.display()))?;
    let dir = PathBuf::from(OPENAPI_FIXTURE);
    let mut files = vec![(dir.join("LICENSE"), license)];
    for name in OPENAPI_DOCUMENTS {
        let path = source.join(name);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let doc: serde_json::Value = serde_norway::from_str(&text)
            .with_context(|| format!("{} is not YAML", path.display()))?;
        let stem = name.trim_end_matches(".yaml");
        let mut json = serde_json::to_string_pretty(&openapi_schemas(&doc, name))
            .context("cannot write the fixture as JSON")?;
        json.push('\n');
        files.push((dir.join(format!("{stem}.json")), json));
    }
    Ok(files)
}

/// What validation needs of one OpenAPI document: its component schemas and the schemas of
/// each operation's request and response bodies, each cut down to [`schema_only`].
fn openapi_schemas(doc: &serde_json::Value, name: &str) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    let version = doc["info"]["version"].as_str().unwrap_or("unknown");
    let schemas: Map<String, Value> = doc["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), schema_only(v)))
        .collect();
    // Each body's schema, by path, method, and `requestBody` or response status, then media type.
    let bodies = |content: &Value| -> Option<Value> {
        let content: Map<String, Value> = content
            .as_object()?
            .iter()
            .filter_map(|(media, c)| {
                Some((
                    media.clone(),
                    json!({"schema": schema_only(c.get("schema")?)}),
                ))
            })
            .collect();
        (!content.is_empty()).then(|| json!({"content": content}))
    };
    let mut paths = Map::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        let mut methods = Map::new();
        for (method, op) in item.as_object().into_iter().flatten() {
            let mut kept = Map::new();
            if let Some(body) = bodies(&op["requestBody"]["content"]) {
                kept.insert("requestBody".to_owned(), body);
            }
            let responses: Map<String, Value> = op["responses"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(status, r)| Some((status.clone(), bodies(&r["content"])?)))
                .collect();
            if !responses.is_empty() {
                kept.insert("responses".to_owned(), Value::Object(responses));
            }
            if !kept.is_empty() {
                methods.insert(method.clone(), Value::Object(kept));
            }
        }
        if !methods.is_empty() {
            paths.insert(path.clone(), Value::Object(methods));
        }
    }
    json!({
        "x-generated": format!("Generated by `cargo xtask openapi` from {name} {version} of XeroAPI/Xero-OpenAPI (https://github.com/XeroAPI/Xero-OpenAPI): schemas only (types, properties, required, enums, formats), descriptions and examples left out. Do not edit."),
        "x-license": "MIT License, Copyright (c) 2017 Xero Developer API; the full notice is in LICENSE beside this file.",
        "openapi": doc["openapi"],
        "info": {"title": doc["info"]["title"], "version": version},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// A JSON Schema cut down to what validates a value: types, formats, enums, required
/// properties, references, and the sub-schemas under properties, items and combinators.
/// Descriptions, examples and vendor keywords are left out.
fn schema_only(schema: &serde_json::Value) -> serde_json::Value {
    use serde_json::{Map, Value};
    let Some(object) = schema.as_object() else {
        return schema.clone();
    };
    let mut out = Map::new();
    for (key, value) in object {
        let kept = match key.as_str() {
            "type" | "format" | "enum" | "required" | "$ref" => value.clone(),
            "items" | "not" | "additionalProperties" => schema_only(value),
            "allOf" | "anyOf" | "oneOf" => Value::Array(
                value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(schema_only)
                    .collect(),
            ),
            "properties" => Value::Object(
                value
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, s)| (name.clone(), schema_only(s)))
                    .collect(),
            ),
            _ => continue,
        };
        out.insert(key.clone(), kept);
    }
    Value::Object(out)
}

/// `cargo xtask openapi`: writes the fixture from the official documents.
fn openapi() -> Result<()> {
    let root = project_root();
    let source = root.join(OPENAPI_SOURCE);
    if !source.is_dir() {
        bail!(
            "{} is not there; the fixture is made from the official documents (XeroAPI/Xero-OpenAPI) placed in that folder",
            source.display()
        );
    }
    std::fs::create_dir_all(root.join(OPENAPI_FIXTURE))
        .with_context(|| format!("cannot create {OPENAPI_FIXTURE}"))?;
    for (path, content) in openapi_fixture(&source)? {
        let full = root.join(&path);
        if std::fs::read_to_string(&full).unwrap_or_default() != content {
            std::fs::write(&full, content)
                .with_context(|| format!("cannot write {}", full.display()))?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

/// Fails when the OpenAPI fixture differs from what the official documents give; says it
/// skipped the comparison when they are not beside the checkout.
fn check_openapi(root: &Path) -> Result<String> {
    let source = root.join(OPENAPI_SOURCE);
    if !source.is_dir() {
        let note = format!("OpenAPI fixture not compared ({OPENAPI_SOURCE} is absent)");
        eprintln!("skipped: {note}");
        return Ok(note);
    }
    let stale: Vec<String> = openapi_fixture(&source)?
        .into_iter()
        .filter(|(path, content)| {
            std::fs::read_to_string(root.join(path)).ok().as_ref() != Some(content)
        })
        .map(|(path, _)| path.display().to_string())
        .collect();
    if !stale.is_empty() {
        bail!(
            "the OpenAPI fixture is out of date: {}; run `cargo xtask openapi` and commit the result",
            stale.join(", ")
        );
    }
    Ok("OpenAPI fixture current".to_owned())
}

/// Every snapshot made from an input file must still have that file; stray `.snap.new` files fail.
fn check_snapshots(root: &Path) -> Result<()> {
    let mut problems = Vec::new();
    let mut stack = vec![root.join("tests"), root.join("crates")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.ends_with(".snap.new") || name.ends_with(".pending-snap") {
                problems.push(format!("{}: unreviewed snapshot", path.display()));
            } else if name.ends_with(".snap") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let input = text.lines().find_map(|l| l.strip_prefix("input_file: "));
                if let Some(input) = input
                    && !root.join(input.trim()).exists()
                {
                    problems.push(format!(
                        "{}: its input {} is gone; delete the snapshot",
                        path.display(),
                        input.trim()
                    ));
                }
            }
        }
    }
    if !problems.is_empty() {
        bail!("snapshot problems:\n  {}", problems.join("\n  "));
    }
    Ok(())
}

fn generate() -> Result<()> {
    let root = project_root();
    let specs = load_specs(&root)?;
    std::fs::create_dir_all(root.join("docs/connectors"))
        .context("cannot create docs/connectors")?;
    for (path, content) in generated(&root, &specs) {
        let full = root.join(&path);
        let current = std::fs::read_to_string(&full).unwrap_or_default();
        if current != content {
            std::fs::write(&full, content)
                .with_context(|| format!("cannot write {}", full.display()))?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

fn new_connector(name: &str) -> Result<()> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !valid {
        bail!(
            "`{name}` is not a valid connector id; use lowercase letters, digits and `-`, starting with a letter"
        );
    }
    let root = project_root();
    let path = root.join("specs").join(format!("{name}.toml"));
    if path.exists() {
        bail!(
            "{} already exists; refusing to overwrite it (edit it, or remove it first)",
            path.display()
        );
    }
    let text = SCAFFOLD
        .replace("{id}", name)
        .replace("{Name}", &title_case(name));
    let report = weft_core::load_str(&format!("specs/{name}.toml"), &text);
    if !report.diagnostics.is_empty() {
        bail!(
            "the scaffold does not validate (a bug in xtask):\n{}",
            report.render()
        );
    }
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote specs/{name}.toml");
    generate()?;
    println!(
        "next: fill in the hosts, auth, fields, setup steps and resources, then run `cargo xtask check`"
    );
    Ok(())
}

fn title_case(id: &str) -> String {
    id.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

const SCAFFOLD: &str = r#"#:schema ./weft-spec.schema.json
# {Name} connector spec. Reference: docs/connectors/{id}.md (regenerate with `cargo xtask docs`).

id = "{id}"
name = "{Name}"
version = "0.1.0"
description = "Reads and writes {Name} records."

[hosts]
api = "https://api.{id}.example"

[requests]
host = "api"
headers = { Accept = "application/json" }

[auth.oauth2]
authorize-url = "{{ hosts.api }}/oauth/authorize"
token-url = "{{ hosts.api }}/oauth/token"
client-id = "{{ fields.client_id }}"
client-secret = "{{ fields.client_secret }}"
pkce = "S256"
client-auth = "basic"

[[fields]]
id = "client_id"
label = "Client ID"
help = "From the app you register at {Name}."
required = true

[[fields]]
id = "client_secret"
label = "Client secret"
help = "Shown once by {Name} when you create the app; Weft stores it encrypted."
required = true
secret = true

[[fields]]
id = "concurrency"
label = "Concurrency level"
type = "integer"
min = 1
max = 25
default = 5

[[setup]]
title = "Register an app"
text = """
Register an OAuth app at {{ connector }} and set its redirect URI to {{ callback_url }}.
"""

[[setup]]
title = "Copy the client ID"
text = "Copy the app's client ID into {{ fields.client_id }}."
fills = "client_id"
check = "field-valid"

[[setup]]
title = "Copy the client secret"
text = "Copy the app's client secret into {{ fields.client_secret }}."
fills = "client_secret"
check = "client-accepted"

[limits]
concurrency = { default = 5, max = 25 }

[[errors]]
status = [401]
class = "unauthorized"

[[errors]]
status = [429]
class = "rate-limited"

[[errors]]
status = [500, 502, 503, 504]
class = "transient"

[test]
resource = "me"
describe = "{{ record.name }}"

[resources.me]
description = "The account the token belongs to."
primary-key = "id"

[resources.me.list]
path = "/me"
records = { style = "root" }
pagination = { style = "none" }
"#;

/// Builds every package under `connectors/` (each a plugin `cdylib`).
fn plugins_build(release: bool) -> Result<()> {
    let root = project_root();
    let dir = root.join("connectors");
    let mut packages = Vec::new();
    for entry in
        std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
    {
        let manifest = entry?.path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let name = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("name = "))
            .map(|n| n.trim_matches('"').to_owned())
            .with_context(|| format!("{} names no package", manifest.display()))?;
        packages.push(name);
    }
    packages.sort();
    if packages.is_empty() {
        bail!("no connector packages under {}", dir.display());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command.current_dir(&root).args(["build", "--lib"]);
    if release {
        command.arg("--release");
    }
    for package in &packages {
        command.args(["-p", package]);
    }
    let status = command.status().context("cannot run cargo")?;
    if !status.success() {
        bail!("building the plugins failed; see cargo's messages above");
    }
    println!(
        "built {}; check them with `cargo run -p weft-cli -- doctor`",
        packages.join(", ")
    );
    Ok(())
}

/// `cargo xtask screenshots`: the browser test saves its pictures in `target/console-screenshots/`;
/// only when it passed do they replace the committed ones, so a failed walk leaves
/// `docs/console/` as it was.
fn screenshots() -> Result<()> {
    let root = project_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let fresh = target.join("console-screenshots");
    if fresh.exists() {
        std::fs::remove_dir_all(&fresh)
            .with_context(|| format!("cannot empty {}", fresh.display()))?;
    }
    std::fs::create_dir_all(&fresh)
        .with_context(|| format!("cannot create {}", fresh.display()))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(&root)
        .env("WEFT_SCREENSHOTS", &fresh)
        .args([
            "test",
            "-p",
            "weft-server",
            "--test",
            "browser",
            "--",
            "--nocapture",
        ])
        .status()
        .context("cannot run cargo test")?;
    if !status.success() {
        bail!(
            "the browser test failed; docs/console/ is unchanged (see the test's messages above)"
        );
    }
    let mut pictures: Vec<PathBuf> = std::fs::read_dir(&fresh)
        .with_context(|| format!("cannot list {}", fresh.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect();
    pictures.sort();
    if pictures.is_empty() {
        bail!(
            "the browser test passed but saved no picture in {}",
            fresh.display()
        );
    }
    let docs = root.join("docs").join("console");
    std::fs::create_dir_all(&docs).with_context(|| format!("cannot create {}", docs.display()))?;
    for old in
        std::fs::read_dir(&docs).with_context(|| format!("cannot list {}", docs.display()))?
    {
        let old = old?.path();
        if old.extension().is_some_and(|x| x == "png") {
            std::fs::remove_file(&old)
                .with_context(|| format!("cannot remove {}", old.display()))?;
        }
    }
    let mut total = 0;
    for picture in &pictures {
        let name = picture.file_name().unwrap_or_default();
        let to = docs.join(name);
        total += std::fs::copy(picture, &to)
            .with_context(|| format!("cannot write {}", to.display()))?;
        println!("docs/console/{}", name.to_string_lossy());
    }
    println!(
        "{} screenshots, {} KiB in all; review them before committing (no secret may show)",
        pictures.len(),
        total / 1024
    );
    Ok(())
}

/// `cargo xtask bench [--quick]`.
fn bench(quick: bool) -> Result<()> {
    let root = project_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let status = std::process::Command::new(&cargo)
        .current_dir(&root)
        .args(["build", "--release", "-p", "weft-cli"])
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("building weft in release failed");
    }
    let out = target.join("bench").join("results.json");
    // Each bench target writes its rows to a file of its own; the engine's report (with the
    // machine) takes the console's rows after its own.
    let mut reports = Vec::new();
    for (package, bench, file) in [
        ("weft-engine", "ceilings", "results.json"),
        ("weft-server", "console", "console.json"),
    ] {
        let path = target.join("bench").join(file);
        let _ = std::fs::remove_file(&path);
        let mut command = std::process::Command::new(&cargo);
        command
            .current_dir(&root)
            .env("WEFT_BIN", target.join("release").join("weft"))
            .args(["bench", "-p", package, "--bench", bench, "--"]);
        if quick {
            command.arg("--quick");
        }
        command.arg("--json").arg(&path);
        let status = command.status().context("cannot run cargo bench")?;
        if !status.success() {
            bail!("the benchmarks of {package} ({bench}) failed");
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("the benchmarks wrote no {}", path.display()))?;
        let report: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        reports.push(report);
    }
    let mut reports = reports.into_iter();
    let mut report = reports.next().context("no benchmark report")?;
    for other in reports {
        let more = other["rows"].as_array().cloned().unwrap_or_default();
        if let Some(rows) = report["rows"].as_array_mut() {
            rows.extend(more);
        }
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", out.display()))?;
    print!("{}", table(&report));
    println!("\nThe same figures: {}", out.display());
    Ok(())
}

/// The report as Markdown: the machine, then one row per figure.
fn table(report: &serde_json::Value) -> String {
    let m = &report["machine"];
    let mut s = format!(
        "\nMachine: {}, {} cores, {} GB, {}/{}{}\n\n| | Benchmark | Figure | Target | Met | Real time | Detail |\n|---|---|---|---|---|---|---|\n",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["memory_gb"],
        m["os"].as_str().unwrap_or("?"),
        m["arch"].as_str().unwrap_or("?"),
        if report["quick"] == true {
            " (quick sizes)"
        } else {
            ""
        },
    );
    for row in report["rows"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "| {} | {} | {} {} | {} | {} | {} | {} |\n",
            row["id"].as_str().unwrap_or(""),
            row["name"].as_str().unwrap_or(""),
            row["value"],
            row["unit"].as_str().unwrap_or(""),
            row["target"].as_str().unwrap_or(""),
            if row["met"] == true { "yes" } else { "no" },
            row["real_s"]
                .as_f64()
                .map_or_else(String::new, |s| format!("{s} s")),
            row["detail"].as_str().unwrap_or("").replace('|', "/"),
        ));
    }
    s
}
