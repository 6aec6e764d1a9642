//! What the console's tests against the simulators share: the Kantata and Xero simulators on
//! the wall clock, and a workspace holding the shipped kantata-xero flow with its two
//! connections reaching them, tokens sealed.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use weft_engine::oauth::TokenSet;
use weft_engine::secrets::Secret;
use weft_engine::workspace::{Connection, TenantRef, Workspace, connection_tokens_id};
use weft_harness::clock::SimClock;
use weft_harness::kantata::{KantataConfig, KantataSim};
use weft_harness::xero::{XeroConfig, XeroSim};

/// One master key and configuration folder for the whole test binary, set before any test
/// reads the environment.
pub(crate) fn env() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let config = std::env::temp_dir().join(format!("weft-sims-config-{}", std::process::id()));
        std::fs::create_dir_all(&config).unwrap();
        // SAFETY: runs once, inside the OnceLock, before any test of this binary reads the
        // environment (every test calls `env()` first).
        unsafe {
            std::env::set_var("WEFT_CONFIG_DIR", &config);
            std::env::set_var(
                "WEFT_MASTER_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            );
            std::env::remove_var("WEFT_MASTER_KEY_COMMAND");
        }
    });
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

pub(crate) async fn xero_token(sim: &XeroSim) -> String {
    let token: serde_json::Value = weft_engine::http::client()
        .unwrap()
        .post(format!("{}/connect/token", sim.identity_url()))
        .basic_auth(sim.client_id(), Some(sim.client_secret()))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    token["access_token"].as_str().unwrap().to_owned()
}

/// The simulators and a workspace over them.
pub(crate) struct Sims {
    pub(crate) kantata: KantataSim,
    pub(crate) xero: XeroSim,
    /// The Xero organisation the flow writes to.
    pub(crate) tenant: String,
    /// The workspace folder (its users remove it).
    pub(crate) dir: PathBuf,
    /// The tokens and client secrets of the simulators, which nothing may show.
    pub(crate) secrets: Vec<String>,
}

/// The built-in connectors.
pub(crate) fn specs() -> Vec<weft_core::Spec> {
    weft_core::builtin::load_all()
        .into_iter()
        .filter_map(|r| r.spec)
        .collect()
}

/// Both simulators (Kantata with `invoices` invoices; one Xero organisation accepting
/// `currencies` besides its own, each call taking `latency`), and a workspace `weft-NAME-PID`
/// with the kantata-xero template and its connections to them.
pub(crate) async fn sims(
    name: &str,
    invoices: usize,
    currencies: Vec<String>,
    latency: Option<Duration>,
) -> Sims {
    env();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let clock = SimClock::scaled(now, 1);
    let kantata = KantataSim::start(KantataConfig {
        size: invoices,
        clock: clock.clone(),
        ..KantataConfig::default()
    })
    .unwrap();
    let xero = XeroSim::start(XeroConfig {
        organisations: 1,
        size: 3,
        clock,
        currencies,
        latency,
        ..XeroConfig::default()
    })
    .unwrap();
    let (tenant, tenant_name) = xero.tenants()[0].clone();
    let dir = std::env::temp_dir().join(format!("weft-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    weft_engine::workspace::init(&dir).unwrap();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates/kantata-xero"),
        &dir,
    );
    let mut ws = Workspace::find(&dir).unwrap();
    let hosts = |pairs: &[(&str, String)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    };
    ws.file.connections.insert(
        "kantata".into(),
        Connection {
            connector: "kantata".into(),
            method: Some(weft_core::model::AuthMethod::Token),
            client: None,
            concurrency: 4,
            borrow_concurrency_from: None,
            hosts: hosts(&[("app", kantata.app_url()), ("api", kantata.api_url())]),
            tenants: Vec::new(),
            owner: None,
        },
    );
    ws.file.connections.insert(
        "xero".into(),
        Connection {
            connector: "xero".into(),
            method: Some(weft_core::model::AuthMethod::OAuth2),
            client: None,
            concurrency: 4,
            borrow_concurrency_from: None,
            hosts: hosts(&[
                ("login", xero.login_url()),
                ("identity", xero.identity_url()),
                ("api", xero.api_url()),
            ]),
            tenants: vec![TenantRef {
                id: tenant.clone(),
                name: tenant_name,
            }],
            owner: None,
        },
    );
    ws.save().unwrap();
    let xero_access = xero_token(&xero).await;
    let mut store = ws.secrets().unwrap();
    for (name, token) in [
        ("kantata", kantata.personal_token().to_owned()),
        ("xero", xero_access.clone()),
    ] {
        store
            .put(
                &connection_tokens_id(name),
                &TokenSet::fixed(Secret::new(token), 0).to_sealed_json(),
            )
            .unwrap();
    }
    let secrets = vec![
        kantata.personal_token().to_owned(),
        xero_access,
        xero.client_secret().to_owned(),
        kantata.client_secret().to_owned(),
    ];
    Sims {
        kantata,
        xero,
        tenant,
        dir,
        secrets,
    }
}
