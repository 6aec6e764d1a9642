//! The QuickBooks Online simulator: Intuit's consent page, token service and Accounting API as
//! real HTTP servers on 127.0.0.1, seeded, on simulated time. Built from
//! `docs/reference/quickbooks.md`, whose checklist (§11) lists what it does and the choices made
//! where Intuit's documentation is silent.
//!
//! - **OAuth 2.0** ([`auth`]): authorization code (single use, 5 minutes, redirect URI compared
//!   exactly, Basic client authentication); the consent's redirect names the company in `realmId`;
//!   refresh tokens answered unchanged during their first 24 hours, replaced afterwards (the old one
//!   then dead at once); 100 days unused or five years after the consent end a grant; revocation by
//!   a JSON body.
//! - **API** ([`api`]): the gateway's 401 and 403, the throttles (10 in flight, 500 a minute, 120
//!   batch calls a minute per company, a 429 without `Retry-After`), `minorversion`, `requestid`
//!   replays, queries ([`query`]), reads by id, writes with SyncToken checks, sparse updates,
//!   deletes, voids, sends, and batches of 30 matched by `bId`.
//! - **Data** ([`store`]): per company, generated from the seed: accounts, items, customers (some
//!   inactive), invoices over the past year and the payments applied to about four in ten of them.

mod api;
mod auth;
mod query;
mod store;
mod util;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

use crate::clock::SimClock;
use crate::server::{Observed, Running};

pub use store::Kind;

/// 2026-01-01T00:00:00Z in Unix ms, the default start of simulated time.
const DEFAULT_START_MS: u64 = 1_767_225_600_000;

/// The most invoices a company is seeded with (records are kept whole in memory).
pub const MAX_SEEDED: usize = 20_000;

/// QuickBooks' limits and lifetimes; a count set to `u32::MAX` switches that limit off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuickBooksLimits {
    /// Calls in progress at once per (app, company); QuickBooks: 10.
    pub concurrent: u32,
    /// Calls per rolling minute per company, batch calls included; QuickBooks: 500.
    pub per_minute: u32,
    /// Batch calls per rolling minute per company; QuickBooks: 120 (40 before 2025).
    pub batch_per_minute: u32,
    /// Access-token lifetime, simulated seconds; QuickBooks: 3,600.
    pub access_token_ttl_secs: u64,
    /// How long a refresh token is answered unchanged before a refresh replaces it, simulated
    /// seconds; QuickBooks: 24 hours.
    pub refresh_rotate_after_secs: u64,
    /// How long an unused refresh token lives, simulated days; QuickBooks: 100.
    pub refresh_idle_days: u64,
    /// How long any grant lives from its consent, simulated days; QuickBooks: five years.
    pub refresh_absolute_days: u64,
}

impl Default for QuickBooksLimits {
    fn default() -> Self {
        Self {
            concurrent: 10,
            per_minute: 500,
            batch_per_minute: 120,
            access_token_ttl_secs: 3_600,
            refresh_rotate_after_secs: 86_400,
            refresh_idle_days: 100,
            refresh_absolute_days: 1_826,
        }
    }
}

impl QuickBooksLimits {
    /// Every count limit switched off (for throughput benchmarks); lifetimes stay QuickBooks'.
    pub fn unlimited() -> Self {
        Self {
            concurrent: u32::MAX,
            per_minute: u32::MAX,
            batch_per_minute: u32::MAX,
            ..Self::default()
        }
    }
}

/// How the simulator is set up.
#[derive(Debug, Clone)]
pub struct QuickBooksConfig {
    /// Seed of every generated id, name and amount.
    pub seed: u64,
    /// Invoices per company (at most [`MAX_SEEDED`]); customers are a quarter of it, at least 9
    /// (every ninth inactive).
    pub size: usize,
    /// Companies the simulated administrator can connect.
    pub companies: usize,
    /// Simulated time.
    pub clock: SimClock,
    /// Port of the consent host (`appcenter.intuit.com`); 0 picks a free one.
    pub appcenter_port: u16,
    /// Port of the token and revocation host (`oauth.platform.intuit.com`, which also stands for
    /// `developer.api.intuit.com`); 0 picks a free one.
    pub oauth_port: u16,
    /// Port of the API host (`quickbooks.api.intuit.com`); 0 picks a free one.
    pub api_port: u16,
    /// Redirect URIs registered for the demo app (compared exactly).
    pub redirect_uris: Vec<String>,
    /// Limits and lifetimes.
    pub limits: QuickBooksLimits,
    /// Time every API call takes once admitted: simulated time on an event-driven clock, else
    /// real time; `None` answers at once.
    pub latency: Option<Duration>,
}

impl Default for QuickBooksConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            size: 20,
            companies: 1,
            clock: SimClock::manual(DEFAULT_START_MS),
            appcenter_port: 0,
            oauth_port: 0,
            api_port: 0,
            redirect_uris: vec!["http://localhost:8976/oauth/callback".to_owned()],
            limits: QuickBooksLimits::default(),
            latency: None,
        }
    }
}

/// What the simulated administrator answers on the consent page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consent {
    /// Connect this company (a realm id); `None` connects the first one.
    Grant {
        /// The realm id to connect; the first company when `None`.
        realm: Option<String>,
    },
    /// Click "Cancel": the redirect carries `error=access_denied`.
    Deny,
}

/// One company and its data.
pub(crate) struct Cell {
    pub(crate) realm: String,
    pub(crate) name: String,
    pub(crate) store: Mutex<store::Company>,
}

/// State shared by the three servers.
pub(crate) struct Shared {
    pub(crate) clock: SimClock,
    pub(crate) limits: QuickBooksLimits,
    pub(crate) latency: Option<Duration>,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) redirect_uris: Vec<String>,
    pub(crate) auth: Mutex<auth::AuthState>,
    pub(crate) companies: Vec<Cell>,
    pub(crate) rate: Mutex<api::RateState>,
    pub(crate) replies: Mutex<HashMap<(String, String), api::Stored>>,
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

/// A running simulator; dropping it stops the three servers.
pub struct QuickBooksSim {
    shared: Arc<Shared>,
    observed: Observed,
    oauth_observed: Observed,
    appcenter: Running,
    oauth: Running,
    api: Running,
}

impl std::fmt::Debug for QuickBooksSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuickBooksSim")
            .field("appcenter", &self.appcenter.url())
            .field("oauth", &self.oauth.url())
            .field("api", &self.api.url())
            .finish_non_exhaustive()
    }
}

impl QuickBooksSim {
    /// Seeds the companies and starts the three servers.
    pub fn start(config: QuickBooksConfig) -> std::io::Result<Self> {
        let mut rng = fastrand::Rng::with_seed(util::mix(&[config.seed, 0x0b0a]));
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut pick = |n: usize| -> String {
            (0..n)
                .map(|_| char::from(alphabet[rng.usize(..alphabet.len())]))
                .collect()
        };
        let client_id = format!("AB{}", pick(48));
        let client_secret = pick(40);
        let now = config.clock.now_ms();
        let size = config.size.min(MAX_SEEDED);
        let companies = (0..config.companies.max(1))
            .map(|i| {
                let c = store::Company::seed(config.seed, i, size, now);
                Cell {
                    realm: c.realm.clone(),
                    name: c.name.clone(),
                    store: Mutex::new(c),
                }
            })
            .collect();
        let shared = Arc::new(Shared {
            clock: config.clock.clone(),
            limits: config.limits.clone(),
            latency: config.latency,
            client_id,
            client_secret,
            redirect_uris: config.redirect_uris.clone(),
            auth: Mutex::new(auth::AuthState::new(config.seed)),
            companies,
            rate: Mutex::default(),
            replies: Mutex::default(),
        });
        let appcenter = Running::start(
            auth::appcenter_router(shared.clone()),
            config.appcenter_port,
            Observed::new(config.clock.clone(), config.seed ^ 1, None),
        )?;
        let oauth_observed = Observed::new(config.clock.clone(), config.seed ^ 2, None);
        let oauth = Running::start(
            auth::oauth_router(shared.clone()),
            config.oauth_port,
            oauth_observed.clone(),
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
            oauth_observed,
            appcenter,
            oauth,
            api,
        })
    }

    /// Base URL of the consent host (stands for `https://appcenter.intuit.com`).
    pub fn appcenter_url(&self) -> String {
        self.appcenter.url()
    }

    /// Base URL of the token host (stands for `https://oauth.platform.intuit.com`).
    pub fn oauth_url(&self) -> String {
        self.oauth.url()
    }

    /// Base URL of the revocation host (stands for `https://developer.api.intuit.com`; the token
    /// server serves it too).
    pub fn developer_url(&self) -> String {
        self.oauth.url()
    }

    /// Base URL of the API host (stands for `https://quickbooks.api.intuit.com`, or the sandbox's).
    pub fn api_url(&self) -> String {
        self.api.url()
    }

    /// The four host overrides of the spec (`appcenter`, `oauth`, `developer`, `api`).
    pub fn hosts(&self) -> Vec<(String, String)> {
        vec![
            ("appcenter".to_owned(), self.appcenter_url()),
            ("oauth".to_owned(), self.oauth_url()),
            ("developer".to_owned(), self.developer_url()),
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

    /// Every company as (realm id, name).
    pub fn companies(&self) -> Vec<(String, String)> {
        self.shared
            .companies
            .iter()
            .map(|c| (c.realm.clone(), c.name.clone()))
            .collect()
    }

    /// What the simulated administrator answers at the next consent.
    pub fn set_consent(&self, consent: Consent) {
        lock(&self.shared.auth).consent = consent;
    }

    /// Every access and refresh token issued so far (for tests that check none leaks).
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.shared.auth).issued()
    }

    /// Refresh grants answered with tokens, and refused (`invalid_grant`) ones.
    pub fn refresh_outcomes(&self) -> (u64, u64) {
        lock(&self.shared.auth).refresh_outcomes()
    }

    /// The API host's clock, request log and fault plan.
    pub fn observed(&self) -> &Observed {
        &self.observed
    }

    /// The token host's request log and fault plan.
    pub fn oauth_observed(&self) -> &Observed {
        &self.oauth_observed
    }

    /// The simulated clock.
    pub fn clock(&self) -> &SimClock {
        &self.shared.clock
    }

    fn with<R>(&self, realm: &str, f: impl FnOnce(&mut store::Company) -> R) -> Option<R> {
        let cell = self.shared.companies.iter().find(|c| c.realm == realm)?;
        Some(f(&mut lock(&cell.store)))
    }

    /// Every record of a kind in a company, inactive ones included, in id order.
    pub fn records(&self, realm: &str, kind: Kind) -> Vec<Value> {
        self.with(realm, |c| c.all(kind)).unwrap_or_default()
    }

    /// One record by id.
    pub fn record(&self, realm: &str, kind: Kind, id: &str) -> Option<Value> {
        self.with(realm, |c| c.get(kind, id).cloned()).flatten()
    }

    /// Records of a kind created through the API in a company.
    pub fn created(&self, realm: &str, kind: Kind) -> u64 {
        self.with(realm, |c| c.created.get(&kind).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Changes a record as someone working in QuickBooks would (`patch` holds the properties
    /// changed), which gives it a new SyncToken. Returns the record, or QuickBooks' reasons.
    pub fn edit(&self, realm: &str, kind: Kind, id: &str, patch: Value) -> Result<Value, String> {
        let now = self.shared.now_ms();
        self.with(realm, |c| c.edit(kind, id, &patch, now))
            .ok_or_else(|| format!("no company {realm}"))?
            .map_err(|e| {
                e.iter()
                    .map(|x| x.detail.clone())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
    }

    /// Records a payment of `amount` on an invoice as someone working in QuickBooks would (into
    /// Undeposited Funds, dated today). Returns the payment, or QuickBooks' reasons.
    pub fn pay_invoice(&self, realm: &str, invoice: &str, amount: &str) -> Result<Value, String> {
        let now = self.shared.now_ms();
        let inv = self
            .record(realm, Kind::Invoice, invoice)
            .ok_or_else(|| format!("no invoice {invoice}"))?;
        let amount: rust_decimal::Decimal = amount
            .parse()
            .map_err(|_| format!("{amount} is not an amount"))?;
        let body = serde_json::json!({
            "CustomerRef": inv["CustomerRef"].clone(),
            "TotalAmt": util::money(amount),
            "Line": [{"Amount": util::money(amount), "LinkedTxn": [{"TxnId": invoice, "TxnType": "Invoice"}]}],
        });
        self.with(realm, |c| {
            c.apply(Kind::Payment, store::Op::Create, &body, now)
        })
        .ok_or_else(|| format!("no company {realm}"))?
        .map_err(|e| {
            e.iter()
                .map(|x| x.detail.clone())
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}
