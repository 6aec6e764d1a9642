//! The HubSpot CRM simulator: HubSpot's install (consent) page, and its API host with the token
//! endpoints, as real HTTP servers on 127.0.0.1, seeded, on simulated time. Built from
//! `docs/reference/hubspot.md`, whose checklist (§11) lists what it does and the choices made
//! where HubSpot's documentation is silent.
//!
//! - **Sign-in** ([`auth`]): OAuth 2.0 (the install names no portal in the callback; the token
//!   belongs to the portal the person picked; client credentials in the form body; access tokens
//!   of 30 minutes; a refresh token that never changes and never expires; deleting it leaves the
//!   access tokens already issued working) and one private-app token per portal.
//! - **API** ([`api`]): the envelope `{status, message, correlationId, category}`, scopes, the
//!   burst limit per 10 seconds, search's own limit and the private apps' daily cap (429s naming
//!   `policyName`, the `X-HubSpot-RateLimit-*` headers), lists with opaque cursors and absolute
//!   next links, search (filters, sorts, 200 a page, the 10,000-result cap), batches of 100 with
//!   unordered results and 207s, associations.
//! - **Data** ([`store`]): per portal, generated from the seed: owners, companies, contacts,
//!   deals (a quarter of them won, each with its company) and their line items.

mod api;
mod auth;
mod store;
mod util;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

use crate::clock::SimClock;
use crate::server::{Observed, Running};

pub use store::Object;

/// 2026-01-01T00:00:00Z in Unix ms, the default start of simulated time.
const DEFAULT_START_MS: u64 = 1_767_225_600_000;

/// The most contacts a portal is seeded with (records are kept whole in memory).
pub const MAX_SEEDED: usize = 20_000;

/// Most results any one search can page through.
pub const SEARCH_CAP: usize = api::SEARCH_CAP;

/// HubSpot's limits and lifetimes; a count set to `u32::MAX` switches that limit off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSpotLimits {
    /// Calls per rolling 10 seconds per portal and app: 100 (Free, Starter), 190 (Professional,
    /// Enterprise), 250 (with the API limit increase), 110 (public apps).
    pub burst_per_10s: u32,
    /// Search calls per second per portal and app, on top of the burst limit; HubSpot: 5.
    pub search_per_second: u32,
    /// Private-app calls per day per portal (midnight UTC to midnight UTC); HubSpot: 250,000 to
    /// 1,000,000 by plan. OAuth apps have no daily cap.
    pub daily: u32,
    /// Access-token lifetime, simulated seconds; HubSpot: 1,800.
    pub access_token_ttl_secs: u64,
}

impl Default for HubSpotLimits {
    fn default() -> Self {
        Self {
            burst_per_10s: 100,
            search_per_second: 5,
            daily: 250_000,
            access_token_ttl_secs: 1_800,
        }
    }
}

impl HubSpotLimits {
    /// Every count limit switched off (for throughput benchmarks); lifetimes stay HubSpot's.
    pub fn unlimited() -> Self {
        Self {
            burst_per_10s: u32::MAX,
            search_per_second: u32::MAX,
            daily: u32::MAX,
            ..Self::default()
        }
    }
}

/// How the simulator is set up.
#[derive(Debug, Clone)]
pub struct HubSpotConfig {
    /// Seed of every generated id, name and amount.
    pub seed: u64,
    /// Contacts per portal (at most [`MAX_SEEDED`]); companies are a quarter of it (at least 5),
    /// deals half of it (at least 6).
    pub size: usize,
    /// Portals (HubSpot accounts) the simulated person can install the app into.
    pub portals: usize,
    /// Simulated time.
    pub clock: SimClock,
    /// Port of the install host (`app.hubspot.com`); 0 picks a free one.
    pub app_port: u16,
    /// Port of the API host (`api.hubapi.com`, which serves the token endpoints too); 0 picks a
    /// free one.
    pub api_port: u16,
    /// Redirect URLs registered for the demo app (compared exactly).
    pub redirect_uris: Vec<String>,
    /// Limits and lifetimes.
    pub limits: HubSpotLimits,
    /// Time every API call takes once admitted: simulated time on an event-driven clock, else
    /// real time; `None` answers at once.
    pub latency: Option<Duration>,
}

impl Default for HubSpotConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            size: 40,
            portals: 1,
            clock: SimClock::manual(DEFAULT_START_MS),
            app_port: 0,
            api_port: 0,
            redirect_uris: vec!["http://localhost:8976/oauth/callback".to_owned()],
            limits: HubSpotLimits::default(),
            latency: None,
        }
    }
}

/// What the simulated person answers on the install page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consent {
    /// Install into this portal; `None` installs into the first one.
    Grant {
        /// The portal id; the first portal when `None`.
        portal: Option<u64>,
    },
    /// Decline: the redirect carries `error=access_denied`.
    Deny,
}

/// One portal and its data.
pub(crate) struct Cell {
    pub(crate) id: u64,
    pub(crate) store: Mutex<store::Portal>,
}

/// State shared by the two servers.
pub(crate) struct Shared {
    pub(crate) clock: SimClock,
    pub(crate) limits: HubSpotLimits,
    pub(crate) latency: Option<Duration>,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) redirect_uris: Vec<String>,
    pub(crate) auth: Mutex<auth::AuthState>,
    pub(crate) portals: Vec<Cell>,
    pub(crate) rate: Mutex<api::RateState>,
}

impl Shared {
    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }
}

/// Locks a mutex, ignoring poisoning (a panicked request leaves the data usable).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running simulator; dropping it stops both servers.
pub struct HubSpotSim {
    shared: Arc<Shared>,
    observed: Observed,
    private_tokens: Vec<(u64, String)>,
    app: Running,
    api: Running,
}

impl std::fmt::Debug for HubSpotSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSpotSim")
            .field("app", &self.app.url())
            .field("api", &self.api.url())
            .finish_non_exhaustive()
    }
}

impl HubSpotSim {
    /// Seeds the portals and starts the two servers.
    pub fn start(config: HubSpotConfig) -> std::io::Result<Self> {
        let mut rng = fastrand::Rng::with_seed(util::mix(&[config.seed, 0x4b5c]));
        let hex = |rng: &mut fastrand::Rng, n: usize| -> String {
            (0..n)
                .map(|_| char::from(b"0123456789abcdef"[rng.usize(..16)]))
                .collect()
        };
        let client_id = format!(
            "{}-{}-{}-{}-{}",
            hex(&mut rng, 8),
            hex(&mut rng, 4),
            hex(&mut rng, 4),
            hex(&mut rng, 4),
            hex(&mut rng, 12)
        );
        let client_secret = format!(
            "{}-{}-{}-{}-{}",
            hex(&mut rng, 8),
            hex(&mut rng, 4),
            hex(&mut rng, 4),
            hex(&mut rng, 4),
            hex(&mut rng, 12)
        );
        let now = config.clock.now_ms();
        let size = config.size.min(MAX_SEEDED);
        let portals: Vec<Cell> = (0..config.portals.max(1))
            .map(|i| {
                let p = store::Portal::seed(config.seed, i, size, now);
                Cell {
                    id: p.id,
                    store: Mutex::new(p),
                }
            })
            .collect();
        let mut auth = auth::AuthState::new(config.seed);
        let private_tokens = portals
            .iter()
            .map(|p| (p.id, auth.issue_private(p.id)))
            .collect();
        let shared = Arc::new(Shared {
            clock: config.clock.clone(),
            limits: config.limits.clone(),
            latency: config.latency,
            client_id,
            client_secret,
            redirect_uris: config.redirect_uris.clone(),
            auth: Mutex::new(auth),
            portals,
            rate: Mutex::default(),
        });
        let app = Running::start(
            auth::app_router(shared.clone()),
            config.app_port,
            Observed::new(config.clock.clone(), config.seed ^ 1, None),
        )?;
        let observed = Observed::new(config.clock.clone(), config.seed, None);
        let api = Running::start(
            api::router(shared.clone()),
            config.api_port,
            observed.clone(),
        )?;
        Ok(Self {
            shared,
            observed,
            private_tokens,
            app,
            api,
        })
    }

    /// Base URL of the install host (stands for `https://app.hubspot.com`).
    pub fn app_url(&self) -> String {
        self.app.url()
    }

    /// Base URL of the API host (stands for `https://api.hubapi.com`).
    pub fn api_url(&self) -> String {
        self.api.url()
    }

    /// The two host overrides of the spec (`app`, `api`).
    pub fn hosts(&self) -> Vec<(String, String)> {
        vec![
            ("app".to_owned(), self.app_url()),
            ("api".to_owned(), self.api_url()),
        ]
    }

    /// Client id of the pre-registered demo app.
    pub fn client_id(&self) -> &str {
        &self.shared.client_id
    }

    /// Client secret of the pre-registered demo app.
    pub fn client_secret(&self) -> &str {
        &self.shared.client_secret
    }

    /// Every portal's id.
    pub fn portals(&self) -> Vec<u64> {
        self.shared.portals.iter().map(|p| p.id).collect()
    }

    /// The private app token of `portal` (every scope of the connector).
    pub fn private_app_token(&self, portal: u64) -> Option<&str> {
        self.private_tokens
            .iter()
            .find(|(p, _)| *p == portal)
            .map(|(_, t)| t.as_str())
    }

    /// What the simulated person answers at the next install.
    pub fn set_consent(&self, consent: Consent) {
        lock(&self.shared.auth).consent = consent;
    }

    /// The app is uninstalled from `portal`: its refresh tokens stop working.
    pub fn uninstall(&self, portal: u64) {
        lock(&self.shared.auth).uninstall(portal);
    }

    /// Every access, refresh and private-app token issued so far (for tests that check none
    /// leaks).
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.shared.auth).issued()
    }

    /// The API host's clock, request log and fault plan.
    pub fn observed(&self) -> &Observed {
        &self.observed
    }

    /// The simulated clock.
    pub fn clock(&self) -> &SimClock {
        &self.shared.clock
    }

    fn with<R>(&self, portal: u64, f: impl FnOnce(&mut store::Portal) -> R) -> Option<R> {
        let cell = self.shared.portals.iter().find(|c| c.id == portal)?;
        Some(f(&mut lock(&cell.store)))
    }

    /// Every record of an object in a portal, archived ones included, in id order, with every
    /// property and association.
    pub fn records(&self, portal: u64, object: Object) -> Vec<Value> {
        self.with(portal, |p| {
            p.records(object)
                .values()
                .map(|r| p.full(object, r))
                .collect()
        })
        .unwrap_or_default()
    }

    /// One record by id, with every property and association.
    pub fn record(&self, portal: u64, object: Object, id: &str) -> Option<Value> {
        self.with(portal, |p| p.get(object, id).map(|r| p.full(object, r)))
            .flatten()
    }

    /// Records of an object created through the API in a portal.
    pub fn created(&self, portal: u64, object: Object) -> u64 {
        self.with(portal, |p| p.created.get(&object).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Changes a record as someone working in HubSpot would (`properties` holds the properties
    /// changed, as text), which moves its last-change time. Returns the record, or HubSpot's
    /// reasons.
    pub fn edit(
        &self,
        portal: u64,
        object: Object,
        id: &str,
        properties: Value,
    ) -> Result<Value, String> {
        let now = self.shared.now_ms();
        self.with(portal, |p| {
            let (id, props) = p
                .check_update(object, id, Some(&properties))
                .map_err(|r| r.message())?;
            p.update(object, id, props, now);
            Ok(p.full(object, &p.records(object)[&id]))
        })
        .ok_or_else(|| format!("no portal {portal}"))?
    }

    /// Creates a record as someone working in HubSpot would, associated with `links` (object and
    /// id). Returns the record, or HubSpot's reasons.
    pub fn add(
        &self,
        portal: u64,
        object: Object,
        properties: Value,
        links: &[(Object, &str)],
    ) -> Result<Value, String> {
        let now = self.shared.now_ms();
        let associations: Vec<Value> = links
            .iter()
            .map(|(to, id)| {
                serde_json::json!({"to": {"id": id}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": store::association_type(object, *to)}]})
            })
            .collect();
        let input = serde_json::json!({"properties": properties, "associations": associations});
        self.with(portal, |p| {
            let (props, links) = p
                .check_create(object, &input, &Default::default())
                .map_err(|r| r.message())?;
            let id = p.create(object, props, &links, now);
            Ok(p.full(object, &p.records(object)[&id]))
        })
        .ok_or_else(|| format!("no portal {portal}"))?
    }
}
