//! A Kantata account and a Xero organisation on one simulated clock, the shipped kantata-xero
//! flow, and engine sessions to both: what the sync tests run on.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use weft_engine::flow::Flow;
use weft_engine::limits::{Clock, Limiter};
use weft_engine::oauth::{OAuthApp, TokenSet};
use weft_engine::request::{Hosts, Tenant};
use weft_engine::run::{Endpoint, Report, Run, RunError};
use weft_engine::secrets::{MasterKey, Secret, SecretStore};
use weft_engine::session::Session;
use weft_engine::state::State;
use weft_engine::tokens::TokenKeeper;
use weft_harness::clock::SimClock;
use weft_harness::kantata::{KantataConfig, KantataSim};
use weft_harness::quickbooks::{QuickBooksConfig, QuickBooksSim};
use weft_harness::xero::{XeroConfig, XeroLimits, XeroSim};

use super::{SimWait, shipped};

const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

/// Both simulators, the flow, and where state and credentials live.
pub(crate) struct World {
    pub(crate) kantata: KantataSim,
    pub(crate) xero: XeroSim,
    pub(crate) clock: Arc<SimWait>,
    pub(crate) dir: std::path::PathBuf,
    pub(crate) flow: Flow,
    pub(crate) tenant: Tenant,
    /// Xero authorized with the code flow (rotating refresh tokens) instead of a fixed token.
    oauth: bool,
    /// A QuickBooks Online company instead of Xero as the flow's destination (connection alias
    /// `quickbooks`), authorized through its consent page, with its realm.
    pub(crate) qbo: Option<(QuickBooksSim, Tenant)>,
    /// The flow's state in this PostgreSQL database instead of the SQLite file.
    pg: Option<weft_harness::postgres::TestDb>,
}

fn store(dir: &Path) -> SecretStore {
    SecretStore::open(
        &dir.join("credentials.json"),
        MasterKey::from_base64(KEY).unwrap(),
    )
    .unwrap()
}

/// A session over connector `id` whose tokens are record `connection:{id}:tokens` of the
/// world's store, refreshed through `app` when given.
fn session(
    id: &str,
    hosts: &BTreeMap<String, String>,
    app: Option<OAuthApp>,
    clock: Arc<SimWait>,
    dir: &Path,
) -> Session {
    let spec = shipped(id);
    let hosts = Hosts::new(spec.file(), hosts).unwrap();
    let record = format!("connection:{id}:tokens");
    let http = weft_engine::http::client().unwrap();
    let refresh = spec
        .file()
        .auth
        .oauth2
        .as_ref()
        .and_then(|o| o.refresh.clone());
    let keeper = TokenKeeper::new(
        id,
        &record,
        store(dir),
        app,
        refresh,
        http.clone(),
        clock.clone(),
    );
    let limiter = Limiter::new(spec.file(), spec.file().limits.concurrency.default);
    Session::new(spec, hosts, limiter, http, keeper, clock)
}

impl World {
    /// A world with `invoices` Kantata invoices and one Xero organisation.
    pub(crate) fn new(name: &str, invoices: usize) -> Self {
        Self::build(name, invoices, false, XeroLimits::default())
    }

    /// A world whose Xero organisation has these limits, authorized through OAuth (so it lasts
    /// for simulated days).
    pub(crate) async fn with_limits(name: &str, invoices: usize, limits: XeroLimits) -> Self {
        let w = Self::build(name, invoices, true, limits);
        w.authorize_xero().await;
        w
    }

    /// The same, with Xero authorized through OAuth, so tokens expire and rotate.
    pub(crate) async fn with_oauth(name: &str, invoices: usize) -> Self {
        let w = Self::build(name, invoices, true, XeroLimits::default());
        w.authorize_xero().await;
        w
    }

    /// A world on `clock` (for instance event-driven), each Xero call taking `latency`.
    #[allow(dead_code)]
    pub(crate) fn on_clock(
        name: &str,
        invoices: usize,
        clock: &SimClock,
        latency: std::time::Duration,
    ) -> Self {
        Self::build_on(
            name,
            invoices,
            false,
            XeroLimits::default(),
            clock,
            Some(latency),
        )
    }

    /// A world whose Xero organisation uses these currencies besides its base one.
    #[allow(dead_code)]
    pub(crate) fn with_currencies(name: &str, invoices: usize, currencies: &[&str]) -> Self {
        let clock = SimClock::manual(1_760_000_000_000);
        let mut w = Self::build_on(name, invoices, false, XeroLimits::default(), &clock, None);
        w.xero = XeroSim::start(XeroConfig {
            organisations: 1,
            size: 3,
            clock,
            currencies: currencies.iter().map(|c| (*c).to_owned()).collect(),
            ..XeroConfig::default()
        })
        .unwrap();
        let (id, tname) = w.xero.tenants()[0].clone();
        w.tenant = Tenant { id, name: tname };
        w
    }

    fn build(name: &str, invoices: usize, oauth: bool, limits: XeroLimits) -> Self {
        let clock = SimClock::manual(1_760_000_000_000);
        Self::build_on(name, invoices, oauth, limits, &clock, None)
    }

    /// A world running the shipped template `template`'s flow instead (its Kantata account of
    /// `size`), with Xero authorized through OAuth when `oauth`.
    #[allow(dead_code)]
    pub(crate) async fn for_template(name: &str, template: &str, size: usize, oauth: bool) -> Self {
        let mut w = Self::build(name, size, oauth, XeroLimits::default());
        w.flow = template_flow(template);
        if oauth {
            w.authorize_xero().await;
        }
        w
    }

    fn build_on(
        name: &str,
        invoices: usize,
        oauth: bool,
        limits: XeroLimits,
        clock: &SimClock,
        latency: Option<std::time::Duration>,
    ) -> Self {
        let kantata = KantataSim::start(KantataConfig {
            size: invoices,
            clock: clock.clone(),
            ..KantataConfig::default()
        })
        .unwrap();
        let xero = XeroSim::start(XeroConfig {
            organisations: 1,
            size: 3,
            clock: clock.clone(),
            limits,
            latency,
            ..XeroConfig::default()
        })
        .unwrap();
        let dir = std::env::temp_dir().join(format!("weft-sync-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let flow = template_flow("kantata-xero");
        let (id, tname) = xero.tenants()[0].clone();
        Self {
            kantata,
            xero,
            clock: Arc::new(SimWait::new(clock)),
            dir,
            flow,
            tenant: Tenant { id, name: tname },
            oauth,
            qbo: None,
            pg: None,
        }
    }

    /// A world running shipped template `template`, whose destination is a QuickBooks Online
    /// company (`invoices` Kantata invoices; the company seeded with `seeded` invoices of its
    /// own), authorized through the consent page so its tokens expire and refresh.
    #[allow(dead_code)]
    pub(crate) async fn for_quickbooks(
        name: &str,
        template: &str,
        invoices: usize,
        seeded: usize,
    ) -> Self {
        let mut w = Self::build(name, invoices, false, XeroLimits::default());
        w.flow = template_flow(template);
        let sim = QuickBooksSim::start(QuickBooksConfig {
            size: seeded,
            clock: w.xero.clock().clone(),
            ..QuickBooksConfig::default()
        })
        .unwrap();
        let app = qbo_app(&sim);
        let pending = app.start();
        let http = weft_engine::http::client().unwrap();
        let consent = http.get(pending.url.clone()).send().await.unwrap();
        let back = url::Url::parse(consent.headers()["location"].to_str().unwrap()).unwrap();
        let param = |k: &str| {
            back.query_pairs()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.into_owned())
                .unwrap()
        };
        let tokens = app
            .exchange(&http, pending, &param("code"), w.clock.now_ms())
            .await
            .unwrap();
        store(&w.dir)
            .put("connection:quickbooks:tokens", &tokens.to_sealed_json())
            .unwrap();
        let realm = param("realmId");
        w.qbo = Some((
            sim,
            Tenant {
                id: realm.clone(),
                name: realm,
            },
        ));
        w
    }

    /// The QuickBooks simulator and realm of a world made by [`World::for_quickbooks`].
    #[allow(dead_code)]
    pub(crate) fn quickbooks(&self) -> (&QuickBooksSim, &str) {
        let (sim, tenant) = self.qbo.as_ref().expect("a QuickBooks world");
        (sim, tenant.id.as_str())
    }

    fn xero_hosts(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("login".to_owned(), self.xero.login_url()),
            ("identity".to_owned(), self.xero.identity_url()),
            ("api".to_owned(), self.xero.api_url()),
        ])
    }

    fn xero_app(&self) -> OAuthApp {
        let spec = shipped("xero");
        let hosts = Hosts::new(spec.file(), &self.xero_hosts()).unwrap();
        OAuthApp::new(
            spec.file(),
            &hosts,
            self.xero.client_id(),
            Some(Secret::new(self.xero.client_secret().to_owned())),
            "http://localhost:8976/oauth/callback",
        )
        .unwrap()
    }

    /// The code flow, the browser played by following the consent redirect.
    async fn authorize_xero(&self) {
        let app = self.xero_app();
        let pending = app.start();
        let http = weft_engine::http::client().unwrap();
        let consent = http.get(pending.url.clone()).send().await.unwrap();
        let back = url::Url::parse(consent.headers()["location"].to_str().unwrap()).unwrap();
        let code = back
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .unwrap();
        let tokens = app
            .exchange(&http, pending, &code, self.clock.now_ms())
            .await
            .unwrap();
        store(&self.dir)
            .put("connection:xero:tokens", &tokens.to_sealed_json())
            .unwrap();
    }

    /// Sessions to Kantata (the personal token) and Xero.
    pub(crate) async fn sessions(&self) -> (Session, Session) {
        let mut store = store(&self.dir);
        store
            .put(
                "connection:kantata:tokens",
                &TokenSet::fixed(Secret::new(self.kantata.personal_token().to_owned()), 0)
                    .to_sealed_json(),
            )
            .unwrap();
        if !self.oauth && store.get("connection:xero:tokens").unwrap().is_none() {
            let token = super::xero_token(&self.xero).await;
            store
                .put(
                    "connection:xero:tokens",
                    &TokenSet::fixed(Secret::new(token), 0).to_sealed_json(),
                )
                .unwrap();
        }
        let source = session(
            "kantata",
            &BTreeMap::from([
                ("api".to_owned(), self.kantata.api_url()),
                ("app".to_owned(), self.kantata.app_url()),
            ]),
            None,
            self.clock.clone(),
            &self.dir,
        );
        let dest = session(
            "xero",
            &self.xero_hosts(),
            self.oauth.then(|| self.xero_app()),
            self.clock.clone(),
            &self.dir,
        );
        (source, dest)
    }

    /// The Kantata invoices the flow writes (neither drafts nor cancelled).
    #[allow(dead_code)]
    pub(crate) fn eligible(&self) -> Vec<weft_harness::kantata::InvoiceInfo> {
        let all = self.kantata.invoices().into_iter();
        all.filter(|i| !i.draft && i.status != "cancelled")
            .collect()
    }

    /// The same world keeping its state on PostgreSQL (a fresh database); `None` when there is
    /// no PostgreSQL here and the test skips.
    #[allow(dead_code)]
    pub(crate) fn on_postgres(mut self) -> Option<Self> {
        let name = self
            .dir
            .file_name()
            .map_or_else(|| "world".to_owned(), |n| n.to_string_lossy().into_owned());
        self.pg = Some(weft_harness::postgres::database(&name)?);
        Some(self)
    }

    /// The flow's state database: the SQLite file, or the world's PostgreSQL database.
    pub(crate) fn state(&self) -> State {
        let local = self.dir.join("state.db");
        match &self.pg {
            Some(pg) => State::open_postgres(pg.url(), &local).unwrap(),
            None => State::open(&local).unwrap(),
        }
    }

    /// One run of the flow.
    pub(crate) async fn run(&self, dry_run: bool) -> Report {
        self.run_until(dry_run, None)
            .await
            .expect("the run was not stopped")
    }

    /// One run, dropped (as if the process were killed) once the simulators have received
    /// `kill_after` requests in all; `None` when it was dropped.
    pub(crate) async fn run_until(
        &self,
        dry_run: bool,
        kill_after: Option<usize>,
    ) -> Option<Report> {
        self.try_run(dry_run, kill_after, None, None)
            .await
            .map(|r| r.expect("the run started"))
    }

    /// One run with every choice: dropped after `kill_after` requests, only one stream, waiting
    /// up to `wait` for another run of the flow.
    pub(crate) async fn try_run(
        &self,
        dry_run: bool,
        kill_after: Option<usize>,
        only: Option<&str>,
        wait: Option<std::time::Duration>,
    ) -> Option<Result<Report, RunError>> {
        let (source, mut dest) = self.sessions().await;
        let mut dest_alias = "xero";
        let mut dest_tenant = self.tenant.clone();
        if let Some((sim, tenant)) = &self.qbo {
            dest = session(
                "quickbooks",
                &sim.hosts().into_iter().collect(),
                Some(qbo_app(sim)),
                self.clock.clone(),
                &self.dir,
            );
            dest_alias = "quickbooks";
            dest_tenant = tenant.clone();
        }
        let state = self.state();
        let run = Run {
            flow: &self.flow,
            endpoints: BTreeMap::from([
                (
                    "kantata".to_owned(),
                    Endpoint {
                        session: &source,
                        tenant: None,
                    },
                ),
                (
                    dest_alias.to_owned(),
                    Endpoint {
                        session: &dest,
                        tenant: Some(dest_tenant),
                    },
                ),
            ]),
            state: &state,
            clock: self.clock.as_ref() as &dyn Clock,
            dry_run,
            only: only.map(str::to_owned),
            wait,
            progress: None,
        };
        let requests = || {
            self.xero.observed().log.requests().len()
                + self.kantata.observed().log.requests().len()
                + self.xero.identity_observed().log.requests().len()
                + self.qbo.as_ref().map_or(0, |(q, _)| {
                    q.observed().log.requests().len() + q.oauth_observed().log.requests().len()
                })
        };
        let Some(limit) = kill_after else {
            return Some(run.run().await);
        };
        let start = requests();
        let watch = async {
            while requests() < start + limit {
                tokio::time::sleep(std::time::Duration::from_micros(200)).await;
            }
        };
        tokio::select! {
            report = run.run() => Some(report),
            () = watch => None,
        }
    }

    /// Xero invoices written by the flow, by invoice number.
    pub(crate) fn written(&self) -> HashMap<String, Vec<serde_json::Value>> {
        let mut by_number: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
        for inv in self.xero.invoices(&self.tenant.id) {
            if let Some(n) = inv["InvoiceNumber"].as_str()
                && n.starts_with("KAN-")
            {
                by_number.entry(n.to_owned()).or_default().push(inv);
            }
        }
        by_number
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The QuickBooks simulator's demo app as the shipped spec's OAuth client.
fn qbo_app(sim: &QuickBooksSim) -> OAuthApp {
    let spec = shipped("quickbooks");
    let hosts = Hosts::new(spec.file(), &sim.hosts().into_iter().collect()).unwrap();
    OAuthApp::new(
        spec.file(),
        &hosts,
        sim.client_id(),
        Some(Secret::new(sim.client_secret().to_owned())),
        "http://localhost:8976/oauth/callback",
    )
    .unwrap()
}

/// The flow of shipped template `name`.
pub(crate) fn template_flow(name: &str) -> Flow {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../templates")
        .join(name)
        .join("flows")
        .join(format!("{name}.toml"));
    Flow::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// An amount as Xero sends it, in cents.
pub(crate) fn cents(v: &serde_json::Value) -> i64 {
    let d: rust_decimal::Decimal = v.to_string().parse().unwrap();
    (d * rust_decimal::Decimal::from(100))
        .round()
        .try_into()
        .unwrap()
}
