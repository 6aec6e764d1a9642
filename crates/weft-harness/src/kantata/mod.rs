//! The Kantata OX (Mavenlink) simulator: two real HTTP servers on 127.0.0.1, one for OAuth
//! (`app.mavenlink.com`: authorize, token, revoke) and one for the REST API
//! (`api.mavenlink.com/api/v1`), over a seeded, in-memory account.
//!
//! What it reproduces (see `kantata-api.md`, §11): bearer checks with Kantata's `oauth` error,
//! the `results` + per-type map envelope with string ids and its `meta` rules, page/per_page
//! clamping, `limit`+`offset`, `only`, `include` side-loading with `<assoc>_ids`, default filters
//! (archived projects and their time and expenses hidden), `created_*`/`updated_*` filters,
//! `order`, show routes that 404 on hidden records, singular and bulk writes with 422
//! `validation` errors, 204 deletes, invoice external references, and external payments that
//! settle invoices. Faults come from the shared [`crate::faults`] plan.
//!
//! ```no_run
//! use weft_harness::kantata::{KantataConfig, KantataSim};
//! let sim = KantataSim::start(KantataConfig::default()).unwrap();
//! let _workspaces = format!("{}/api/v1/workspaces.json", sim.api_url());
//! let _token = sim.personal_token();
//! ```

mod api;
mod hooks;
mod oauth;
mod scenarios;
mod store;
mod util;
mod write;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::clock::SimClock;
use crate::faults::{Fault, FaultRule, When};
use crate::server::{Observed, Running};

pub use hooks::{ChoiceInfo, EventInfo, Resolve, SubmissionInfo, SubmissionKind};
use store::{Coll, Db};

/// How to start the simulator.
#[derive(Debug, Clone)]
pub struct KantataConfig {
    /// Seed of everything random: data, secrets, tokens, fault probabilities.
    pub seed: u64,
    /// Number of invoices; users (10 + size/100), groups (size/10 + 2), projects (size/4 + 1),
    /// time entries and expenses follow from it.
    pub size: usize,
    /// Simulated time (code expiry, `created_at`/`updated_at` of writes, data dates).
    pub clock: SimClock,
    /// Port of the OAuth host; 0 picks a free one.
    pub app_port: u16,
    /// Port of the API host; 0 picks a free one.
    pub api_port: u16,
    /// Redirect URIs registered for the demo OAuth application.
    pub redirect_uris: Vec<String>,
    /// A delay added to every API call: simulated time on an event-driven clock, else real time.
    pub latency: Option<Duration>,
    /// Issue `refresh_token` and `expires_in` (2 hours) and accept `grant_type=refresh_token`.
    /// Kantata documents neither, so this is off by default.
    pub refresh_tokens: bool,
}

/// 2026-01-01T00:00:00Z in Unix milliseconds.
const DEFAULT_START_MS: u64 = 1_767_225_600_000;

impl Default for KantataConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            size: 20,
            clock: SimClock::manual(DEFAULT_START_MS),
            app_port: 0,
            api_port: 0,
            redirect_uris: vec!["http://localhost:8976/oauth/callback".to_owned()],
            latency: None,
            refresh_tokens: false,
        }
    }
}

/// What the next `GET /oauth/authorize` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consent {
    /// The user authorizes: redirect with a code.
    Grant,
    /// The user declines: redirect with `error=access_denied`.
    Deny,
}

/// An access or refresh token the OAuth host issued.
#[derive(Clone)]
pub(crate) struct TokenInfo {
    pub(crate) user: u32,
    pub(crate) revoked: bool,
    /// Simulated expiry (ms), only when refresh tokens are on.
    pub(crate) expires_at_ms: Option<u64>,
    /// The authorization code it came from, so a replayed code can revoke it.
    pub(crate) code: Option<String>,
}

/// A code from `/oauth/authorize`.
#[derive(Clone)]
pub(crate) struct CodeInfo {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) issued_ms: u64,
    pub(crate) used: bool,
    pub(crate) user: u32,
}

/// OAuth bookkeeping.
#[derive(Default)]
pub(crate) struct AuthState {
    pub(crate) codes: HashMap<String, CodeInfo>,
    pub(crate) tokens: HashMap<String, TokenInfo>,
    pub(crate) refresh: HashMap<String, TokenInfo>,
    pub(crate) counter: u64,
}

/// State shared by both hosts and the inspection handle.
pub(crate) struct Shared {
    pub(crate) seed: u64,
    pub(crate) clock: SimClock,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) personal_token: String,
    pub(crate) redirect_uris: Vec<String>,
    pub(crate) refresh_tokens: bool,
    pub(crate) latency: Option<Duration>,
    pub(crate) account_id: String,
    pub(crate) consent: Mutex<Consent>,
    pub(crate) auth: RwLock<AuthState>,
    pub(crate) db: RwLock<Db>,
}

impl std::fmt::Debug for Shared {
    // Secrets (client secret, tokens, codes) stay out of `Debug`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("seed", &self.seed)
            .field("account_id", &self.account_id)
            .field("redirect_uris", &self.redirect_uris)
            .field("refresh_tokens", &self.refresh_tokens)
            .field("latency", &self.latency)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn now_secs(&self) -> i64 {
        i64::try_from(self.clock.now_ms() / 1000).unwrap_or(i64::MAX)
    }

    pub(crate) fn read(&self) -> std::sync::RwLockReadGuard<'_, Db> {
        self.db
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn write(&self) -> std::sync::RwLockWriteGuard<'_, Db> {
        self.db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn auth_read(&self) -> std::sync::RwLockReadGuard<'_, AuthState> {
        self.auth
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn auth_write(&self) -> std::sync::RwLockWriteGuard<'_, AuthState> {
        self.auth
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running Kantata simulator. Dropping it stops both servers.
#[derive(Debug)]
pub struct KantataSim {
    shared: Arc<Shared>,
    app: Running,
    api: Running,
    observed: Observed,
    app_observed: Observed,
}

impl KantataSim {
    /// Generates the account and starts the OAuth and API hosts.
    pub fn start(config: KantataConfig) -> std::io::Result<Self> {
        let now_secs = i64::try_from(config.clock.now_ms() / 1000).unwrap_or(i64::MAX);
        let db = store::generate(config.seed, config.size, now_secs);
        let personal_token = util::secret_hex(config.seed, "personal-token", 0);
        let mut auth = AuthState::default();
        auth.tokens.insert(
            personal_token.clone(),
            TokenInfo {
                user: 0,
                revoked: false,
                expires_at_ms: None,
                code: None,
            },
        );
        let shared = Arc::new(Shared {
            seed: config.seed,
            clock: config.clock.clone(),
            client_id: util::secret_hex(config.seed, "client-id", 0),
            client_secret: util::secret_hex(config.seed, "client-secret", 0),
            personal_token,
            redirect_uris: config.redirect_uris.clone(),
            refresh_tokens: config.refresh_tokens,
            latency: config.latency,
            account_id: (10_000 + config.seed % 90_000).to_string(),
            consent: Mutex::new(Consent::Grant),
            auth: RwLock::new(auth),
            db: RwLock::new(db),
        });
        let observed = Observed::new(config.clock.clone(), config.seed, None);
        let app_observed = Observed::new(config.clock.clone(), config.seed ^ 0x5eed, None);
        let api = Running::start(
            api::router(Arc::clone(&shared)),
            config.api_port,
            observed.clone(),
        )?;
        let app = Running::start(
            oauth::router(Arc::clone(&shared)),
            config.app_port,
            app_observed.clone(),
        )?;
        Ok(Self {
            shared,
            app,
            api,
            observed,
            app_observed,
        })
    }

    /// The OAuth host (`/oauth/authorize`, `/oauth/token`, `/oauth/revoke`).
    pub fn app_url(&self) -> String {
        self.app.url()
    }

    /// The API host; requests go to `{api_url}/api/v1/...`.
    pub fn api_url(&self) -> String {
        self.api.url()
    }

    /// The demo OAuth application's client id.
    pub fn client_id(&self) -> &str {
        &self.shared.client_id
    }

    /// The demo OAuth application's secret.
    pub fn client_secret(&self) -> &str {
        &self.shared.client_secret
    }

    /// The demo user's personal ("Your OAuth Token") bearer token.
    pub fn personal_token(&self) -> &str {
        &self.shared.personal_token
    }

    /// Every access and refresh token issued so far (for tests that check none leaks).
    pub fn issued_tokens(&self) -> Vec<String> {
        let auth = self
            .shared
            .auth
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        auth.tokens
            .keys()
            .chain(auth.refresh.keys())
            .cloned()
            .collect()
    }

    /// The API host's clock, request log and fault plan.
    pub fn observed(&self) -> &Observed {
        &self.observed
    }

    /// The OAuth host's request log and fault plan.
    pub fn app_observed(&self) -> &Observed {
        &self.app_observed
    }

    /// What the next authorization answers.
    pub fn set_consent(&self, consent: Consent) {
        *self
            .shared
            .consent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = consent;
    }

    /// Makes the next `n` API calls answer 429 with Kantata's error body and no `Retry-After`.
    pub fn rate_limit_next(&self, n: u64) {
        self.observed.faults.add(FaultRule::on(
            "/api/v1",
            When::First(n),
            Fault::Status {
                status: 429,
                body: util::error_body("system", "Rate limit exceeded", None).to_string(),
            },
        ));
    }

    /// A non-expiring bearer token acting as another user of the account (only user 0, the
    /// demo user, is an account administrator). `None` when no such user exists.
    pub fn token_for_user(&self, user_id: &str) -> Option<String> {
        let slot = self.shared.read().users.slot_of(user_id.parse().ok()?)?;
        let token = util::secret_hex(self.shared.seed, "user-token", u64::from(slot));
        self.shared.auth_write().tokens.insert(
            token.clone(),
            TokenInfo {
                user: slot,
                revoked: false,
                expires_at_ms: None,
                code: None,
            },
        );
        Some(token)
    }

    /// A handle for reading what the simulator holds.
    pub fn state(&self) -> KantataState {
        KantataState {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Every invoice (see [`KantataState::invoices`]).
    pub fn invoices(&self) -> Vec<InvoiceInfo> {
        self.state().invoices()
    }

    /// One invoice by id.
    pub fn invoice(&self, id: &str) -> Option<InvoiceInfo> {
        self.state().invoice(id)
    }

    /// Every external payment.
    pub fn external_payments(&self) -> Vec<PaymentInfo> {
        self.state().external_payments()
    }

    /// Every external reference.
    pub fn external_references(&self) -> Vec<ExternalReferenceInfo> {
        self.state().external_references()
    }
}

/// A summary of one invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceInfo {
    /// Id.
    pub id: String,
    /// `user_invoice_number`.
    pub number: i64,
    /// `new`, `accepted payment` or `cancelled`.
    pub status: String,
    /// Whether it is a draft.
    pub draft: bool,
    /// Sum of its lines, in cents.
    pub total_in_cents: i64,
    /// `balance_in_cents` as served.
    pub balance_in_cents: i64,
    /// Its projects.
    pub workspace_ids: Vec<String>,
    /// Number of lines per kind: time entries, expenses, fixed-fee items, additional items.
    pub line_counts: [usize; 4],
    /// Its external references.
    pub external_reference_ids: Vec<String>,
    /// `updated_at`, Unix seconds.
    pub updated_at: i64,
}

/// A summary of one external payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentInfo {
    /// Id.
    pub id: String,
    /// The invoice paid, if any.
    pub invoice_id: Option<String>,
    /// The project.
    pub workspace_id: String,
    /// Amount in cents.
    pub amount_in_cents: i64,
    /// Note.
    pub message: Option<String>,
}

/// A summary of one external reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalReferenceInfo {
    /// Id.
    pub id: String,
    /// `Invoice`, `TimeEntry`...
    pub subject_type: String,
    /// Id of the subject.
    pub subject_id: String,
    /// E.g. `xero`.
    pub service_name: String,
    /// E.g. `Invoice`.
    pub service_model: String,
    /// E.g. the Xero InvoiceID.
    pub service_model_ref: String,
    /// `pending`, `successful` or `failed`.
    pub status: String,
}

/// Read access to the simulated account, for assertions.
#[derive(Debug, Clone)]
pub struct KantataState {
    shared: Arc<Shared>,
}

impl KantataState {
    fn invoice_info(db: &Db, slot: u32) -> Option<InvoiceInfo> {
        let inv = db.invoices.get(slot)?;
        let mut counts = [0; 4];
        for l in &inv.lines {
            counts[match l {
                store::Line::Time(_) => 0,
                store::Line::Expense(_) => 1,
                store::Line::Fixed(_) => 2,
                store::Line::Additional(_) => 3,
            }] += 1;
        }
        Some(InvoiceInfo {
            id: (Coll::Invoices.base() + u64::from(slot)).to_string(),
            number: inv.number,
            status: inv.status.phrase().to_owned(),
            draft: inv.draft,
            total_in_cents: db.invoice_total(inv),
            balance_in_cents: db.invoice_balance(inv),
            workspace_ids: inv
                .workspaces
                .iter()
                .map(|w| (Coll::Workspaces.base() + u64::from(*w)).to_string())
                .collect(),
            line_counts: counts,
            external_reference_ids: db
                .refs_of(Coll::Invoices, slot)
                .iter()
                .map(|r| (Coll::ExternalReferences.base() + u64::from(*r)).to_string())
                .collect(),
            updated_at: inv.updated,
        })
    }

    /// Every invoice, in id order.
    pub fn invoices(&self) -> Vec<InvoiceInfo> {
        let db = self.shared.read();
        db.invoices
            .slots()
            .filter_map(|s| Self::invoice_info(&db, s))
            .collect()
    }

    /// One invoice by id.
    pub fn invoice(&self, id: &str) -> Option<InvoiceInfo> {
        let db = self.shared.read();
        let slot = db.invoices.slot_of(id.parse().ok()?)?;
        Self::invoice_info(&db, slot)
    }

    /// Every external payment, in id order.
    pub fn external_payments(&self) -> Vec<PaymentInfo> {
        let db = self.shared.read();
        db.payments
            .iter()
            .map(|(s, p)| PaymentInfo {
                id: (Coll::ExternalPayments.base() + u64::from(s)).to_string(),
                invoice_id: p
                    .invoice
                    .map(|i| (Coll::Invoices.base() + u64::from(i)).to_string()),
                workspace_id: (Coll::Workspaces.base() + u64::from(p.ws)).to_string(),
                amount_in_cents: p.amount,
                message: p.message.clone(),
            })
            .collect()
    }

    /// Every external reference, in id order.
    pub fn external_references(&self) -> Vec<ExternalReferenceInfo> {
        let db = self.shared.read();
        db.ext_refs
            .iter()
            .map(|(s, r)| ExternalReferenceInfo {
                id: (Coll::ExternalReferences.base() + u64::from(s)).to_string(),
                subject_type: r.subject.0.model().to_owned(),
                subject_id: (r.subject.0.base() + u64::from(r.subject.1)).to_string(),
                service_name: r.service_name.clone(),
                service_model: r.service_model.clone(),
                service_model_ref: r.service_model_ref.clone(),
                status: r.status.clone(),
            })
            .collect()
    }

    /// Any record as the API renders it (no includes), by collection key and id.
    pub fn record(&self, collection: &str, id: &str) -> Option<serde_json::Value> {
        let coll = Coll::from_key(collection)?;
        let db = self.shared.read();
        let slot = db.slot_of(coll, id.parse().ok()?)?;
        Some(serde_json::Value::Object(api::render(
            &db,
            &self.shared,
            coll,
            slot,
        )))
    }

    /// Number of live records in a collection (by its key, e.g. `time_entries`).
    pub fn count(&self, collection: &str) -> usize {
        Coll::from_key(collection).map_or(0, |c| self.shared.read().all_slots(c).len())
    }

    /// The demo user's id (the user behind the personal token and every authorization).
    pub fn demo_user_id(&self) -> String {
        Coll::Users.base().to_string()
    }

    /// Ids of the invoices in a status phrase (`new`, `accepted payment`, `cancelled`).
    pub fn invoice_ids_with_status(&self, status: &str) -> Vec<String> {
        let db = self.shared.read();
        db.invoices
            .iter()
            .filter(|(_, i)| i.status.phrase() == status)
            .map(|(s, _)| (Coll::Invoices.base() + u64::from(s)).to_string())
            .collect()
    }
}
