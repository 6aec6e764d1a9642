//! The Xero simulator: Xero's three hosts (the consent page, the token service and the API) as
//! real HTTP servers on 127.0.0.1, seeded, on simulated time.
//!
//! What it does, and the choices made where Xero's behaviour is not documented:
//!
//! - **OAuth 2.0** ([`auth`]): authorization code (single use, 5 minutes, redirect URI compared
//!   exactly, PKCE S256 checked), refresh tokens that rotate on every use, and client credentials.
//!   A refresh token that has been used keeps working for the grace period (30 minutes): reusing
//!   it answers a new access token with the **same** successor refresh token it produced the first
//!   time, so a retry after a lost answer cannot fork the chain. After the grace period it is
//!   `invalid_grant`, as is a refresh token left unused for 60 days.
//! - **Tenancy**: consent creates connections under a new `authEventId`; organisations already
//!   connected that are consented again move to the new event (so the token claim finds them).
//!   Revocation removes every connection of the user, as Xero documents.
//! - **Rate limits** ([`api`]): per (app, organisation) concurrent, rolling minute and rolling day,
//!   plus the app-wide minute, all on the simulated clock; a 429 is not counted.
//! - **Accounting API** ([`api`], [`data`], [`query`]): the JSON envelope, paging, If-Modified-Since,
//!   `where`/`order`, batch writes with summarized and per-element errors, Idempotency-Key.
//! - **Data** ([`data`]): generated from the seed, invoices and payments lazily from their index, so
//!   a million invoices per organisation cost nothing until changed. Lists read seeded invoices
//!   through a compact summary (dates, contact, totals; computed from the seed a chunk at a time
//!   and kept), so `where`, `order` and the list filters never build an invoice's JSON; smaller
//!   collections keep their seeded records as values. A seeded record read once is kept rendered
//!   (up to 128 MB per collection), so a page is mostly copied bytes.
//!
//! Choices where Xero's documentation is silent (see `shared/reference/xero-api.md` §10):
//!
//! - `X-Rate-Limit-Problem` is `concurrent` and `appminute` for the two undocumented limits; a
//!   concurrent breach says `Retry-After: 1`; the daily window is rolling; the 429 body is
//!   plain text. Idempotent replays count against the limits.
//! - A summarized 400 lists only the refused elements (each echoed with its `ValidationErrors`);
//!   the accepted ones are created but not reported, which is the trap real Xero sets.
//! - `summarizeErrors=false` marks accepted elements `StatusAttributeString: "OK"`; the default
//!   mode leaves that field out.
//! - Idempotency keys are per app; the stored answer (errors included) is replayed byte for byte.
//! - `where` text comparisons ignore case; unknown fields compare as null.
//! - Unpaged lists that would return more than 100,000 records are refused with a 400.
//! - PUT with the id of an existing record is refused (PUT only creates); tax on a line is always
//!   computed (a sent `TaxAmount` is ignored); rounding is half away from zero.
//! - Amounts are computed with `rust_decimal` and turned into JSON numbers only when written out
//!   (serde_json holds numbers as f64, which prints 2- and 4-decimal amounts back exactly).
//! - Accounts and tax rates are read-only; items can be created and updated.
//! - A list answer is rendered once per organisation, query and If-Modified-Since value, and kept
//!   until the next change; only the envelope's `Id` and `DateTimeUTC` are fresh per call.

mod api;
mod auth;
mod data;
mod query;
mod util;
pub mod webhook;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use serde_json::Value;

use crate::clock::SimClock;
use crate::server::{Observed, Running};

/// 2026-01-01T00:00:00Z in Unix ms, the default start of simulated time.
const DEFAULT_START_MS: u64 = 1_767_225_600_000;

/// Xero's limits and lifetimes; every value can be raised (up to `u32::MAX` for the counts, which
/// switches that limit off) for benchmarks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XeroLimits {
    /// Calls in progress at once per (app, organisation); Xero: 5.
    pub concurrent: u32,
    /// Calls per rolling minute per (app, organisation); Xero: 60.
    pub per_minute: u32,
    /// Calls per rolling day per (app, organisation); Xero: 5,000.
    pub per_day: u32,
    /// Calls per rolling minute for the whole app; Xero: 10,000.
    pub app_per_minute: u32,
    /// Access-token lifetime in simulated seconds; Xero: 1,800.
    pub access_token_ttl_secs: u64,
    /// How long a used refresh token keeps working, simulated seconds; Xero: 1,800.
    pub refresh_grace_secs: u64,
    /// How long an unused refresh token lives, simulated days; Xero: 60.
    pub refresh_idle_days: u64,
    /// How long an Idempotency-Key replays its answer, simulated seconds; Xero: 360.
    pub idempotency_window_secs: u64,
}

impl Default for XeroLimits {
    fn default() -> Self {
        Self {
            concurrent: 5,
            per_minute: 60,
            per_day: 5_000,
            app_per_minute: 10_000,
            access_token_ttl_secs: 1_800,
            refresh_grace_secs: 1_800,
            refresh_idle_days: 60,
            idempotency_window_secs: 360,
        }
    }
}

impl XeroLimits {
    /// Every count limit switched off (for throughput benchmarks); lifetimes stay Xero's.
    pub fn unlimited() -> Self {
        Self {
            concurrent: u32::MAX,
            per_minute: u32::MAX,
            per_day: u32::MAX,
            app_per_minute: u32::MAX,
            ..Self::default()
        }
    }
}

/// How the simulator is set up.
#[derive(Debug, Clone)]
pub struct XeroConfig {
    /// Seed of every generated id, name and amount.
    pub seed: u64,
    /// Seeded invoices per organisation (up to a million and more: they are generated lazily).
    pub size: usize,
    /// Number of organisations the demo user can connect.
    pub organisations: usize,
    /// Simulated time.
    pub clock: SimClock,
    /// Port of the consent host (`login.xero.com`); 0 picks a free one.
    pub login_port: u16,
    /// Port of the token host (`identity.xero.com`); 0 picks a free one.
    pub identity_port: u16,
    /// Port of the API host (`api.xero.com`); 0 picks a free one.
    pub api_port: u16,
    /// Redirect URIs registered for the demo app (compared exactly).
    pub redirect_uris: Vec<String>,
    /// Limits and lifetimes.
    pub limits: XeroLimits,
    /// Time every API call takes while it holds its concurrency slot (to exercise the
    /// concurrent limit): simulated time on an event-driven clock, else real time; `None`
    /// answers at once.
    pub latency: Option<Duration>,
    /// Currencies (ISO 4217) every organisation uses besides its base currency; an invoice in
    /// any other is refused as Xero refuses it ("Organisation is not subscribed to currency
    /// EUR"). The default is USD, the currency the Kantata simulator bills in, enabled as a
    /// firm invoicing its US clients from Xero enables it; empty leaves the base currency only.
    pub currencies: Vec<String>,
}

impl Default for XeroConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            size: 20,
            organisations: 2,
            clock: SimClock::manual(DEFAULT_START_MS),
            login_port: 0,
            identity_port: 0,
            api_port: 0,
            redirect_uris: vec!["http://localhost:8976/oauth/callback".to_owned()],
            limits: XeroLimits::default(),
            latency: None,
            currencies: vec!["USD".to_owned()],
        }
    }
}

/// What the simulated user answers on the consent page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consent {
    /// Allow access to these organisations (tenant ids); empty means all of them.
    Grant {
        /// Tenant ids to connect; empty connects every organisation.
        tenants: Vec<String>,
    },
    /// Click "Cancel": the redirect carries `error=access_denied`.
    Deny,
}

/// One organisation and its data.
pub(crate) struct Tenant {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) store: RwLock<data::Org>,
}

/// State shared by the three servers.
pub(crate) struct Shared {
    pub(crate) seed: u64,
    pub(crate) clock: SimClock,
    pub(crate) limits: XeroLimits,
    pub(crate) latency: Option<Duration>,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) redirect_uris: Vec<String>,
    pub(crate) app_name: String,
    pub(crate) auth: Mutex<auth::AuthState>,
    pub(crate) tenants: Vec<Tenant>,
    pub(crate) rate: Mutex<api::RateState>,
    pub(crate) idempotency: Mutex<HashMap<String, api::Stored>>,
    pub(crate) envelope_counter: AtomicU64,
}

impl Shared {
    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    pub(crate) fn tenant(&self, id: &str) -> Option<&Tenant> {
        self.tenants.iter().find(|t| t.id.eq_ignore_ascii_case(id))
    }
}

/// Locks a mutex, ignoring poisoning (a panicked request leaves the data usable).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Read access to a lock, ignoring poisoning.
pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Write access to a lock, ignoring poisoning.
pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running simulator; dropping it stops the three servers.
pub struct XeroSim {
    shared: Arc<Shared>,
    observed: Observed,
    identity_observed: Observed,
    login: Running,
    identity: Running,
    api: Running,
    /// Where invoice changes are sent as webhook events, once a test subscribes.
    webhooks: Mutex<Option<Arc<webhook::WebhookSender>>>,
    /// Each delivery's answer (the receiver's status, or why it failed), in order.
    deliveries: Arc<Mutex<Vec<Result<u16, String>>>>,
}

impl std::fmt::Debug for XeroSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XeroSim")
            .field("login", &self.login.url())
            .field("identity", &self.identity.url())
            .field("api", &self.api.url())
            .finish_non_exhaustive()
    }
}

impl XeroSim {
    /// Seeds the data and starts the three servers.
    pub fn start(config: XeroConfig) -> std::io::Result<Self> {
        let mut rng = fastrand::Rng::with_seed(util::mix(&[config.seed, 0x5e70]));
        let client_id = format!(
            "{:032X}",
            u128::from(rng.u64(..)) << 64 | u128::from(rng.u64(..))
        );
        let mut secret = String::new();
        for _ in 0..48 {
            let c = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            secret.push(char::from(c[rng.usize(..c.len())]));
        }
        let now = config.clock.now_ms();
        let tenants = (0..config.organisations)
            .map(|i| {
                let mut org = data::Org::seed(config.seed, i, config.size, now);
                for code in &config.currencies {
                    org.enable_currency(code);
                }
                Tenant {
                    id: org.tenant_id.clone(),
                    name: org.name.clone(),
                    store: RwLock::new(org),
                }
            })
            .collect();
        let shared = Arc::new(Shared {
            seed: config.seed,
            clock: config.clock.clone(),
            limits: config.limits.clone(),
            latency: config.latency,
            client_id,
            client_secret: secret,
            redirect_uris: config.redirect_uris.clone(),
            app_name: "Weft Demo App".to_owned(),
            auth: Mutex::new(auth::AuthState::new(config.seed)),
            tenants,
            rate: Mutex::default(),
            idempotency: Mutex::default(),
            envelope_counter: AtomicU64::new(0),
        });
        let quiet = |seed| Observed::new(config.clock.clone(), seed, None);
        let login = Running::start(
            auth::login_router(shared.clone()),
            config.login_port,
            quiet(config.seed ^ 1),
        )?;
        let identity_observed = quiet(config.seed ^ 2);
        let identity = Running::start(
            auth::identity_router(shared.clone()),
            config.identity_port,
            identity_observed.clone(),
        )?;
        let observed = Observed::new(config.clock.clone(), config.seed, Some("xero-tenant-id"));
        let api = Running::start(
            api::router(shared.clone()),
            config.api_port,
            observed.clone(),
        )?;
        Ok(Self {
            shared,
            observed,
            identity_observed,
            login,
            identity,
            api,
            webhooks: Mutex::new(None),
            deliveries: Arc::default(),
        })
    }

    /// From now on, every change made to an invoice as someone working in Xero would
    /// ([`Self::pay_invoice`], [`Self::pay_in_full`], [`Self::void_invoice`]) is sent as a
    /// signed webhook event (`INVOICE`, `UPDATE`) to `url`, as Xero does for an app with a
    /// webhook subscription: each delivery on a thread of its own, with a timeout.
    pub fn send_webhooks_to(&self, url: &str, key: &[u8]) {
        if let Ok(mut w) = self.webhooks.lock() {
            *w = Some(Arc::new(webhook::WebhookSender::new(url, key)));
        }
    }

    /// The answers to the webhook deliveries made so far, in order.
    pub fn webhook_deliveries(&self) -> Vec<Result<u16, String>> {
        self.deliveries
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default()
    }

    fn invoice_changed(&self, tenant: &str, id: &str) {
        let Some(sender) = self.webhooks.lock().ok().and_then(|w| w.clone()) else {
            return;
        };
        let event = self.invoice_event(tenant, id, "UPDATE");
        let deliveries = self.deliveries.clone();
        std::thread::spawn(move || {
            let answer = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(sender.deliver(vec![event])),
                Err(e) => Err(e.to_string()),
            };
            if let Ok(mut d) = deliveries.lock() {
                d.push(answer);
            }
        });
    }

    /// Base URL of the consent host (stands for `https://login.xero.com`).
    pub fn login_url(&self) -> String {
        self.login.url()
    }

    /// Base URL of the token host (stands for `https://identity.xero.com`).
    pub fn identity_url(&self) -> String {
        self.identity.url()
    }

    /// Base URL of the API host (stands for `https://api.xero.com`).
    pub fn api_url(&self) -> String {
        self.api.url()
    }

    /// Client id of the pre-registered demo app.
    pub fn client_id(&self) -> &str {
        &self.shared.client_id
    }

    /// Client secret of the pre-registered demo app.
    pub fn client_secret(&self) -> &str {
        &self.shared.client_secret
    }

    /// Every organisation as (tenant id, name).
    pub fn tenants(&self) -> Vec<(String, String)> {
        self.shared
            .tenants
            .iter()
            .map(|t| (t.id.clone(), t.name.clone()))
            .collect()
    }

    /// What the simulated user answers at the next consent.
    pub fn set_consent(&self, consent: Consent) {
        lock(&self.shared.auth).consent = consent;
    }

    /// Every access and refresh token issued so far (for tests that check none leaks).
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.shared.auth).issued()
    }

    /// Refresh grants answered with new tokens, and refused (`invalid_grant`) ones.
    pub fn refresh_outcomes(&self) -> (u64, u64) {
        lock(&self.shared.auth).refresh_outcomes()
    }

    /// Refresh grants that presented a refresh token already used once (within the grace
    /// period Xero answers them again; after it, refuses them): zero for a client whose
    /// refreshes are single-flight and whose rotated tokens are never lost.
    pub fn refresh_reuses(&self) -> u64 {
        lock(&self.shared.auth).refresh_reuses()
    }

    /// The API host's clock, request log and fault plan.
    pub fn observed(&self) -> &Observed {
        &self.observed
    }

    /// The token host's request log and fault plan (lost refresh answers, resets).
    pub fn identity_observed(&self) -> &Observed {
        &self.identity_observed
    }

    /// The simulated clock.
    pub fn clock(&self) -> &SimClock {
        &self.shared.clock
    }

    fn with_org<R>(&self, tenant: &str, f: impl FnOnce(&mut data::Org) -> R) -> Option<R> {
        let t = self.shared.tenant(tenant)?;
        let mut org = write(&t.store);
        Some(f(&mut org))
    }

    /// Every invoice of an organisation in Xero's default order (with line items). For very
    /// large seeds this materialises them all; use [`XeroSim::invoice`] for one.
    pub fn invoices(&self, tenant: &str) -> Vec<Value> {
        self.with_org(tenant, |o| o.all(data::Kind::Invoice))
            .unwrap_or_default()
    }

    /// The webhook event Xero would send for invoice `id` of organisation `tenant` changing
    /// now (`kind`: `CREATE` or `UPDATE`); `eventDateUtc` on the simulated clock, without a
    /// zone as Xero writes it. Deliver it with a [`webhook::WebhookSender`].
    pub fn invoice_event(&self, tenant: &str, id: &str, kind: &str) -> Value {
        let ms = i64::try_from(self.clock().now_ms()).unwrap_or(i64::MAX);
        let date = jiff::Timestamp::from_millisecond(ms)
            .map(|t| {
                t.to_zoned(jiff::tz::TimeZone::UTC)
                    .datetime()
                    .strftime("%Y-%m-%dT%H:%M:%S%.3f")
                    .to_string()
            })
            .unwrap_or_default();
        serde_json::json!({
            "resourceUrl": format!("{}/api.xro/2.0/Invoices/{id}", self.api_url()),
            "resourceId": id,
            "eventDateUtc": date,
            "eventType": kind,
            "eventCategory": "INVOICE",
            "tenantId": tenant,
            "tenantType": "ORGANISATION",
        })
    }

    /// One invoice by InvoiceID or InvoiceNumber.
    pub fn invoice(&self, tenant: &str, id: &str) -> Option<Value> {
        self.with_org(tenant, |o| o.find(data::Kind::Invoice, id))
            .flatten()
    }

    /// Every contact of an organisation, archived ones included.
    pub fn contacts(&self, tenant: &str) -> Vec<Value> {
        self.with_org(tenant, |o| o.all(data::Kind::Contact))
            .unwrap_or_default()
    }

    /// Every payment of an organisation.
    pub fn payments(&self, tenant: &str) -> Vec<Value> {
        self.with_org(tenant, |o| o.all(data::Kind::Payment))
            .unwrap_or_default()
    }

    /// Records created through the API in an organisation (contacts, invoices, payments, items,
    /// tracking categories, manual journals, receipts, expense claims),
    /// counting every element created, including those of batches answered with a 400.
    pub fn creates(&self, tenant: &str) -> u64 {
        self.with_org(tenant, |o| o.creates).unwrap_or(0)
    }

    /// Records of one kind (by plural: `"Invoices"`, `"Contacts"`, `"ManualJournals"`, …) created through
    /// the API in an organisation.
    pub fn creates_of(&self, tenant: &str, kind: &str) -> u64 {
        self.with_org(tenant, |o| {
            o.creates_by_kind.get(kind).copied().unwrap_or(0)
        })
        .unwrap_or(0)
    }

    /// Pays an invoice as someone working in Xero would (into the first bank account, dated
    /// today); the invoice becomes PAID when nothing is left due. Returns the payment, or the
    /// reason Xero would refuse it.
    pub fn pay_invoice(
        &self,
        tenant: &str,
        invoice_id: &str,
        amount: &str,
    ) -> Result<Value, String> {
        let now = self.shared.now_ms();
        let amount: rust_decimal::Decimal = amount
            .parse()
            .map_err(|_| format!("{amount} is not an amount"))?;
        let paid = self
            .with_org(tenant, |o| o.pay(invoice_id, amount, now))
            .ok_or_else(|| format!("no organisation {tenant}"))??;
        self.invoice_changed(tenant, invoice_id);
        Ok(paid)
    }

    /// Adds a contact as someone working in Xero would (with an email address when given), with
    /// Xero's rules for contacts (a name unique among active contacts). Returns the new
    /// ContactID, or Xero's reasons for refusing it.
    pub fn add_contact(
        &self,
        tenant: &str,
        name: &str,
        email: Option<&str>,
    ) -> Result<String, Vec<String>> {
        let now = self.shared.now_ms();
        let mut element = serde_json::json!({ "Name": name });
        if let Some(email) = email {
            element["EmailAddress"] = email.into();
        }
        let (record, _) = self
            .with_org(tenant, |o| {
                o.write(
                    data::Kind::Contact,
                    data::Verb::Put,
                    &element,
                    None,
                    now,
                    false,
                )
            })
            .ok_or_else(|| vec![format!("no organisation {tenant}")])??;
        Ok(record["ContactID"].as_str().unwrap_or_default().to_owned())
    }

    /// Adds a person to the organisation's users (a STANDARD role), as inviting them in Xero's
    /// settings does. Returns the new UserID.
    pub fn add_user(&self, tenant: &str, first: &str, last: &str, email: &str) -> Option<String> {
        let now = self.shared.now_ms();
        self.with_org(tenant, |o| o.add_user(first, last, email, now))
            .and_then(|u| u["UserID"].as_str().map(str::to_owned))
    }

    /// Lets an organisation's transactions use currency `code` besides its base currency (as
    /// adding a currency in Xero's settings does); false when there is no such organisation.
    /// Invoices in a currency not enabled are refused with Xero's message, "Organisation is not
    /// subscribed to currency USD".
    pub fn enable_currency(&self, tenant: &str, code: &str) -> bool {
        self.with_org(tenant, |o| o.enable_currency(code)).is_some()
    }

    /// Pays what is left due on an invoice or bill (`Type` ACCPAY), as someone working in Xero
    /// would; it becomes PAID. Returns the payment, or the reason Xero would refuse it.
    pub fn pay_in_full(&self, tenant: &str, invoice_id: &str) -> Result<Value, String> {
        let due = self
            .invoice(tenant, invoice_id)
            .ok_or_else(|| format!("no invoice {invoice_id}"))?
            .get("AmountDue")
            .and_then(util::decimal)
            .unwrap_or_default();
        self.pay_invoice(tenant, invoice_id, &due.to_string())
    }

    /// Voids an AUTHORISED invoice or bill without payments, as someone working in Xero would.
    /// Returns it, or the reason Xero would refuse.
    pub fn void_invoice(&self, tenant: &str, invoice_id: &str) -> Result<Value, String> {
        let voided = self.set_status(tenant, data::Kind::Invoice, invoice_id, "VOIDED")?;
        self.invoice_changed(tenant, invoice_id);
        Ok(voided)
    }

    fn set_status(
        &self,
        tenant: &str,
        kind: data::Kind,
        id: &str,
        status: &str,
    ) -> Result<Value, String> {
        let now = self.shared.now_ms();
        self.with_org(tenant, |o| {
            o.write(
                kind,
                data::Verb::Post,
                &serde_json::json!({ "Status": status }),
                Some(id),
                now,
                false,
            )
            .map(|(v, _)| v)
            .map_err(|e| e.join(" "))
        })
        .ok_or_else(|| format!("no organisation {tenant}"))?
    }

    /// Lets an organisation use classic expense claims (`/Receipts`, `/ExpenseClaims`), as an
    /// organisation that used them before Xero retired them can; false when there is no such
    /// organisation. Off by default: the others are refused with a 403.
    pub fn enable_classic_expenses(&self, tenant: &str) -> bool {
        self.with_org(tenant, |o| o.classic_expenses = true)
            .is_some()
    }

    /// Authorises an expense claim (as an approver in Xero does), then pays it: it becomes PAID.
    pub fn pay_expense_claim(&self, tenant: &str, claim_id: &str) -> Result<Value, String> {
        let claim = self
            .with_org(tenant, |o| o.find(data::Kind::ExpenseClaim, claim_id))
            .flatten()
            .ok_or_else(|| format!("no expense claim {claim_id}"))?;
        if claim["Status"] == "SUBMITTED" {
            self.set_status(tenant, data::Kind::ExpenseClaim, claim_id, "AUTHORISED")?;
        }
        let now = self.shared.now_ms();
        self.with_org(tenant, |o| o.pay_expense_claim(claim_id, now))
            .ok_or_else(|| format!("no organisation {tenant}"))?
    }

    /// Every record of a resource by its plural (`"Users"`, `"ManualJournals"`, `"Receipts"`,
    /// `"ExpenseClaims"`, `"TrackingCategories"` with archived and deleted options, …) in
    /// Xero's default order; empty for an unknown plural or organisation.
    pub fn records(&self, tenant: &str, plural: &str) -> Vec<Value> {
        let Some(kind) = data::Kind::ALL
            .into_iter()
            .find(|k| k.plural().eq_ignore_ascii_case(plural))
        else {
            return Vec::new();
        };
        self.with_org(tenant, |o| o.all(kind)).unwrap_or_default()
    }

    /// Adds an option to a tracking category (by TrackingCategoryID), as someone editing the
    /// category in Xero would. Returns the option.
    pub fn add_tracking_option(
        &self,
        tenant: &str,
        category_id: &str,
        name: &str,
    ) -> Result<Value, String> {
        let el = serde_json::json!({ "Name": name });
        self.tracking_option(tenant, category_id, None, el.as_object())
    }

    /// Renames a tracking option. Returns the option.
    pub fn rename_tracking_option(
        &self,
        tenant: &str,
        category_id: &str,
        option_id: &str,
        name: &str,
    ) -> Result<Value, String> {
        let el = serde_json::json!({ "Name": name });
        self.tracking_option(tenant, category_id, Some(option_id), el.as_object())
    }

    /// Archives a tracking option (lists leave it out unless `includeArchived=true`).
    pub fn archive_tracking_option(
        &self,
        tenant: &str,
        category_id: &str,
        option_id: &str,
    ) -> Result<Value, String> {
        let el = serde_json::json!({ "Status": "ARCHIVED" });
        self.tracking_option(tenant, category_id, Some(option_id), el.as_object())
    }

    fn tracking_option(
        &self,
        tenant: &str,
        category_id: &str,
        option_id: Option<&str>,
        el: Option<&serde_json::Map<String, Value>>,
    ) -> Result<Value, String> {
        self.with_org(tenant, |o| {
            o.write_tracking_option(category_id, option_id, el)
        })
        .ok_or_else(|| format!("no organisation {tenant}"))?
    }

    /// Number of API calls each organisation has made in the current rolling day.
    pub fn calls_today(&self, tenant: &str) -> usize {
        api::calls_today(&self.shared, tenant)
    }
}
