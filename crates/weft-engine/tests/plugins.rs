//! The plugin host against real libraries built by cargo: the files connector, and fixture
//! plugins that panic, speak a future ABI, lack an export or have a bad manifest. None of them
//! may crash the test process.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::json;
use weft_core::load_str;
use weft_engine::hooks::{self, HookError, Session};
use weft_engine::plugin::{CallError, LoadError, Plugin, Plugins, library_file};
use weft_engine::request::Request;
use weft_harness::cdylib::{Targets, build, pick};
use weft_plugin_abi::{Call, Closed, ResourceOperation, symbols};

fn fixtures() -> &'static [PathBuf] {
    static BUILT: OnceLock<Vec<PathBuf>> = OnceLock::new();
    BUILT.get_or_init(|| build("weft-plugin-abi", Targets::Examples).expect("fixtures build"))
}

fn fixture(name: &str) -> PathBuf {
    pick(fixtures(), &format!("weft_plugin_{name}"))
}

fn spec_of(name: &str, text: &str) -> weft_core::Spec {
    let report = load_str(name, text);
    assert!(report.diagnostics.is_empty(), "{}", report.render());
    report.spec.expect("loads")
}

fn files_plugin() -> PathBuf {
    pick(
        &build("weft-connector-files", Targets::Lib).expect("files builds"),
        "weft_plugin_files",
    )
}

#[test]
fn the_files_connector_loads_through_libloading() {
    let path = files_plugin();
    let plugin = Plugin::load(&path).expect("loads");
    assert_eq!(plugin.name(), "files");
    assert_eq!(plugin.abi(), weft_plugin_abi::ABI_VERSION);
    assert_eq!(
        plugin.manifest().capabilities.operations,
        [ResourceOperation::List, ResourceOperation::Create]
    );
    // Found by name in a plugin directory, and loaded once however often it is asked for.
    let plugins = Plugins::new(vec![path.parent().unwrap().to_owned()]);
    let first = plugins.get("files").unwrap();
    let again = plugins.get("files").unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, &again));
    assert!(plugins.discover().iter().any(|(name, _)| name == "files"));
}

#[test]
fn a_panicking_plugin_is_an_error_and_the_host_carries_on() {
    let plugin = Plugin::load(&fixture("panics")).expect("loads");
    for _ in 0..3 {
        let err = plugin
            .call::<serde_json::Value>(&Call::Next {
                session: 1,
                max: 10,
            })
            .unwrap_err();
        let CallError::Panicked {
            plugin: name,
            message,
        } = &err
        else {
            panic!("expected a caught panic, got {err:?}");
        };
        assert_eq!(name, "panics");
        assert!(message.contains("deliberate panic"), "{message}");
        assert!(err.to_string().contains("crashed"), "{err}");
    }
    // The same plugin still answers the calls that do not panic.
    let closed: Closed = plugin.call(&Call::Close { session: 1 }).unwrap();
    assert_eq!(closed.count, 0);
    // And another plugin still loads and works.
    let hooks = Plugin::load(&fixture("hooks")).expect("loads after a panic");
    assert_eq!(hooks.name(), "hooks");
}

#[test]
fn a_library_with_a_future_abi_is_refused_before_any_other_symbol() {
    let path = fixture("future_abi");
    let err = Plugin::load(&path).unwrap_err();
    let LoadError::AbiOutOfRange {
        found, min, max, ..
    } = &err
    else {
        panic!("expected AbiOutOfRange, got {err:?}");
    };
    assert_eq!(*found, weft_plugin_abi::ABI_VERSION + 100);
    assert_eq!(
        (*min, *max),
        (weft_plugin_abi::ABI_MIN, weft_plugin_abi::ABI_VERSION)
    );
    let text = err.to_string();
    assert!(text.contains("cargo xtask plugins build"), "{text}");
}

#[test]
fn a_library_without_invoke_reports_the_missing_symbol() {
    let err = Plugin::load(&fixture("no_invoke")).unwrap_err();
    let LoadError::MissingSymbol { symbol, .. } = &err else {
        panic!("expected MissingSymbol, got {err:?}");
    };
    assert_eq!(*symbol, symbols::INVOKE);
    assert!(err.to_string().contains("export_plugin!"), "{err}");
}

#[test]
fn a_bad_manifest_is_refused() {
    let err = Plugin::load(&fixture("bad_manifest")).unwrap_err();
    assert!(matches!(err, LoadError::BadManifest { .. }), "{err:?}");
    assert!(err.to_string().contains("`Bad Manifest!`"), "{err}");
}

#[test]
fn a_library_named_for_another_plugin_is_refused() {
    let dir = std::env::temp_dir().join(format!("weft-plugin-renamed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture("hooks"), dir.join(library_file("signer"))).unwrap();
    let err = Plugins::new(vec![dir.clone()]).get("signer").unwrap_err();
    assert!(
        err.to_string().contains("its manifest says `hooks`"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

const HOOKED: &str = r#"
id = "hooked"
name = "Hooked"
version = "1.0.0"

[hosts]
api = "https://api.example.com"

[auth.token]
value = "{{ fields.token }}"

[[fields]]
id = "token"
label = "Token"
secret = true
required = true

[requests]
host = "api"
sign = "hooks"

[test]
resource = "people"

[resources.people]
primary-key = "id"

[resources.people.list]
path = "/people"
records = { style = "root" }
pagination = { style = "none" }
hooks = { extract = "hooks", transform = "hooks" }

[resources.notes]
primary-key = "id"

[resources.notes.list]
path = "/notes"
records = { style = "root" }
pagination = { style = "none" }
hooks = { transform = "absent" }
"#;

#[test]
fn spec_hooks_run_in_their_plugins() {
    let spec = spec_of("hooked.toml", HOOKED);
    let spec = spec.file();
    let dir = fixture("hooks").parent().unwrap().to_owned();
    let plugins = Plugins::new(vec![dir]);

    let list = spec.resources["people"].list.as_ref().unwrap();
    let body = json!({"data": {"items": [{"id": 1, "name": "ada"}, {"id": 2, "name": "grace"}]}});
    let found = hooks::extract(&plugins, spec, "people", "list", list, &body).unwrap();
    assert_eq!(found.len(), 2);
    let renamed = hooks::transform(&plugins, spec, "people", "list", list, found).unwrap();
    assert_eq!(renamed[1]["name"], "GRACE");

    let request = Request {
        method: weft_core::model::Method::Get,
        url: "https://api.example.com/people".parse().unwrap(),
        headers: vec![("X-Signature".to_owned(), "stale".to_owned())],
        replay_safe: true,
    };
    let signed = hooks::sign(&plugins, spec, request, None).unwrap();
    let signatures: Vec<_> = signed
        .headers
        .iter()
        .filter(|(name, _)| name == "X-Signature")
        .collect();
    assert_eq!(
        signatures.len(),
        1,
        "the signature replaces the stale header"
    );
    assert_ne!(signatures[0].1, "stale");

    // Every reference resolves but the transform of `notes`, whose plugin is not there.
    let checks = hooks::check(spec, &plugins);
    let failed: Vec<_> = checks.iter().filter(|(_, _, r)| r.is_err()).collect();
    assert_eq!(checks.len(), 4);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, "resources.notes.list.hooks.transform");
    assert!(matches!(
        failed[0].2,
        Err(HookError::Load(LoadError::NotFound { .. }))
    ));
}

#[test]
fn a_plugin_without_the_hook_asked_for_is_refused_by_name() {
    let spec = spec_of(
        "hooked.toml",
        &HOOKED
            .replace("sign = \"hooks\"", "sign = \"panics\"")
            .replace("transform = \"absent\"", "transform = \"panics\""),
    );
    let dir = fixture("panics").parent().unwrap().to_owned();
    let plugins = Plugins::new(vec![dir]);
    let request = Request {
        method: weft_core::model::Method::Get,
        url: "https://api.example.com/people".parse().unwrap(),
        headers: Vec::new(),
        replay_safe: true,
    };
    let err = hooks::sign(&plugins, spec.file(), request, None).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("does not provide the `sign` hook"), "{text}");
    assert!(text.contains("requests.sign"), "{text}");
    // The transform hook it does list panics: an error, not a crash.
    let list = spec.file().resources["notes"].list.as_ref().unwrap();
    let err = hooks::transform(
        &plugins,
        spec.file(),
        "notes",
        "list",
        list,
        vec![json!({})],
    )
    .unwrap_err();
    assert!(
        matches!(err, HookError::Call(CallError::Panicked { .. })),
        "{err:?}"
    );
}

#[test]
fn a_resource_session_refuses_an_operation_the_plugin_does_not_run() {
    let spec_text = r#"
id = "sheet"
name = "Sheet"
version = "1.0.0"

[test]
resource = "rows"

[resources.rows]
primary-key = "id"
plugin = "files"
"#;
    let spec = spec_of("sheet.toml", spec_text);
    let plugins = Plugins::new(vec![files_plugin().parent().unwrap().to_owned()]);
    let rows = &spec.file().resources["rows"];
    let err = Session::open(
        &plugins,
        spec.file(),
        "rows",
        rows,
        ResourceOperation::Update,
        "x.csv",
    )
    .unwrap_err();
    assert!(err.to_string().contains("the `update` operation"), "{err}");
    let err = Session::open(
        &plugins,
        spec.file(),
        "rows",
        rows,
        ResourceOperation::List,
        "x.txt",
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("name the file `.csv` or `.jsonl`"),
        "{err}"
    );
}

/// The hooks on the HTTP path: an engine `Session` reading a spec that names them signs each
/// request with the plugin, and extracts and transforms each page through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_signs_requests_and_extracts_and_transforms_through_the_plugin() {
    use std::collections::BTreeMap;
    use std::ops::ControlFlow;
    use std::sync::{Arc, Mutex};

    use axum::routing::get;
    use weft_engine::limits::{Limiter, SystemClock};
    use weft_engine::oauth::TokenSet;
    use weft_engine::request::{Hosts, RequestContext};
    use weft_engine::secrets::{MasterKey, Secret, SecretStore};
    use weft_engine::tokens::TokenKeeper;

    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen_by_server = seen.clone();
    let router = axum::Router::new().route(
        "/people",
        get(move |headers: axum::http::HeaderMap| {
            let seen = seen_by_server.clone();
            async move {
                if let Some(sig) = headers.get("x-signature").and_then(|v| v.to_str().ok()) {
                    seen.lock().unwrap().push(sig.to_owned());
                }
                axum::Json(json!({"data": {"items": [{"id": 1, "name": "ada"}, {"id": 2, "name": "grace"}]}}))
            }
        }),
    );
    let server = weft_harness::server::Running::start(
        router,
        0,
        weft_harness::server::Observed::new(weft_harness::clock::SimClock::manual(0), 1, None),
    )
    .unwrap();

    let spec = spec_of("hooked.toml", HOOKED);
    let dir = std::env::temp_dir().join(format!("weft-hook-session-{}", std::process::id()));
    let mut store = SecretStore::open(
        &dir.join("credentials.json"),
        MasterKey::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap(),
    )
    .unwrap();
    store
        .put(
            "t",
            &TokenSet::fixed(Secret::new("token".to_owned()), 0).to_sealed_json(),
        )
        .unwrap();
    let http = weft_engine::http::client().unwrap();
    let clock = Arc::new(SystemClock);
    let keeper = TokenKeeper::new("h", "t", store, None, None, http.clone(), clock.clone());
    let hosts = Hosts::new(
        spec.file(),
        &BTreeMap::from([("api".to_owned(), server.url())]),
    )
    .unwrap();
    let limiter = Limiter::new(spec.file(), 1);
    let plugins = Arc::new(Plugins::new(vec![
        fixture("hooks").parent().unwrap().to_owned(),
    ]));
    let session =
        weft_engine::session::Session::new(spec.clone(), hosts, limiter, http, keeper, clock)
            .with_plugins(plugins);
    let mut names = Vec::new();
    session
        .list("people", &RequestContext::default(), |r| {
            names.push(r["name"].as_str().unwrap_or_default().to_owned());
            ControlFlow::Continue(())
        })
        .await
        .unwrap();
    assert_eq!(
        names,
        ["ADA", "GRACE"],
        "extracted from data.items, then transformed"
    );
    assert_eq!(seen.lock().unwrap().len(), 1, "the request was signed");
    std::fs::remove_dir_all(&dir).ok();
}
