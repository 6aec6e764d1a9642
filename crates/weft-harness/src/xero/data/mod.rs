//! One organisation's data: seeded from the seed and generated lazily by index (a record is
//! materialised only when read, and stored only once changed), plus the writes Xero allows with
//! its validation rules, totals and status transitions.
//!
//! Layout of seeded records: record `i` of a kind was last updated at `base + i * step`, so the
//! seeded records are already in Xero's default order (UpdatedDateUTC, then id) and an
//! If-Modified-Since lower bound is a computed index. Every change made through the API happens
//! at the simulated "now", later than any seeded time, so changed and created records follow the
//! seeded ones in that order.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, OnceLock};

use rust_decimal::Decimal;
use serde_json::{Map, Value, json};

mod contacts;
mod expenses;
mod invoices;
mod items;
mod journals;
mod payments;
mod tracking;
mod users;

use crate::xero::query::{Expr, Field, OrderKey, Record, Scalar, compare_keys};
use crate::xero::util::{
    day_start, decimal, get_ci, index_of, indexed_id, iso_seconds, mix, money, ms_date,
    parse_client_date, parse_ms_date, round2, str_of, uuid, uuid_prefix,
};

/// The resources the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Contact,
    Invoice,
    Payment,
    Account,
    TaxRate,
    Item,
    User,
    TrackingCategory,
    ManualJournal,
    Receipt,
    ExpenseClaim,
}

impl Kind {
    pub(crate) const ALL: [Kind; 11] = [
        Kind::Contact,
        Kind::Invoice,
        Kind::Payment,
        Kind::Account,
        Kind::TaxRate,
        Kind::Item,
        Kind::User,
        Kind::TrackingCategory,
        Kind::ManualJournal,
        Kind::Receipt,
        Kind::ExpenseClaim,
    ];

    /// The plural key of the envelope and of write bodies.
    pub(crate) fn plural(self) -> &'static str {
        match self {
            Kind::Contact => "Contacts",
            Kind::Invoice => "Invoices",
            Kind::Payment => "Payments",
            Kind::Account => "Accounts",
            Kind::TaxRate => "TaxRates",
            Kind::Item => "Items",
            Kind::User => "Users",
            Kind::TrackingCategory => "TrackingCategories",
            Kind::ManualJournal => "ManualJournals",
            Kind::Receipt => "Receipts",
            Kind::ExpenseClaim => "ExpenseClaims",
        }
    }

    fn id_field(self) -> &'static str {
        match self {
            Kind::Contact => "ContactID",
            Kind::Invoice => "InvoiceID",
            Kind::Payment => "PaymentID",
            Kind::Account => "AccountID",
            Kind::TaxRate => "TaxType",
            Kind::Item => "ItemID",
            Kind::User => "UserID",
            Kind::TrackingCategory => "TrackingCategoryID",
            Kind::ManualJournal => "ManualJournalID",
            Kind::Receipt => "ReceiptID",
            Kind::ExpenseClaim => "ExpenseClaimID",
        }
    }

    fn slot(self) -> usize {
        self as usize
    }

    /// The fields `searchTerm` looks in (Xero's parameter descriptions); none where Xero has
    /// no such parameter.
    pub(crate) fn search_fields(self) -> &'static [&'static str] {
        match self {
            Kind::Contact => &[
                "Name",
                "FirstName",
                "LastName",
                "ContactNumber",
                "EmailAddress",
            ],
            Kind::Invoice => &["InvoiceNumber", "Reference"],
            _ => &[],
        }
    }

    /// What `summaryOnly=true` leaves out: the nested collections, which Xero computes or
    /// joins per record. Xero documents the parameter for Contacts and Invoices only.
    pub(crate) fn heavy_fields(self) -> &'static [&'static str] {
        match self {
            Kind::Contact => &[
                "Addresses",
                "Phones",
                "ContactGroups",
                "ContactPersons",
                "Balances",
                "PaymentTerms",
            ],
            Kind::Invoice => &[
                "LineItems",
                "Payments",
                "CreditNotes",
                "Prepayments",
                "Overpayments",
            ],
            _ => &[],
        }
    }
}

/// Seconds between two seeded records of a kind.
const STEP_MS: u64 = 60_000;

/// Unpaged lists that would hold more than this many records are refused, as Xero does.
pub(crate) const UNPAGED_MAX: usize = 100_000;

struct Coll {
    prefix: String,
    seeded: usize,
    base_ms: u64,
    moved: BTreeSet<usize>,
    dynamic: HashMap<String, Value>,
    order: BTreeSet<(u64, String)>,
    /// Seeded records rendered to JSON, by chunk of [`CHUNK`] indices, filled as they are read
    /// (seeded records never change: a changed one moves to `dynamic`).
    rendered: Vec<OnceLock<Box<[OnceLock<Json>]>>>,
    /// Bytes held in `rendered`; past [`RENDER_BUDGET`] records are rendered without keeping them.
    rendered_bytes: AtomicUsize,
    /// Seeded invoices' filtering and sorting facts, by chunk of [`CHUNK`] indices.
    summaries: Vec<OnceLock<Box<[InvSummary]>>>,
    /// Other kinds' seeded records as JSON values, by chunk of [`CHUNK`] indices, when the
    /// collection is small enough ([`VALUES_MAX`]) to keep them all.
    values: Vec<OnceLock<Box<[Value]>>>,
}

/// Seeded records of a kind other than invoices kept as values for filtering, at most.
const VALUES_MAX: usize = 20_000;

/// A record rendered to JSON.
pub(crate) type Json = Arc<[u8]>;

/// Seeded records per chunk of the render and summary caches.
const CHUNK: usize = 1024;

/// Rendered seeded records kept per collection, in bytes.
const RENDER_BUDGET: usize = 128 << 20;

/// What filtering and sorting need of a seeded invoice that its index alone does not give.
#[derive(Debug, Clone, Copy, Default)]
struct InvSummary {
    date: u64,
    contact: u32,
    lat: u8,
    sub: Decimal,
    tax: Decimal,
    total: Decimal,
    due: Decimal,
    paid: Decimal,
}

const LINE_AMOUNT_TYPES: [&str; 3] = ["Exclusive", "Inclusive", "NoTax"];

/// A seeded invoice as `where`, `order` and the list filters read it, answering exactly as its
/// JSON would (see the test `invoice_view_answers_like_json`).
struct InvView<'a> {
    org: &'a Org,
    i: usize,
    s: InvSummary,
}

impl InvView<'_> {
    fn accrec(&self) -> bool {
        self.i % 3 != 2
    }

    fn status(&self) -> &'static str {
        STATUS_CYCLE[self.i % STATUS_CYCLE.len()]
    }

    fn updated(&self) -> u64 {
        self.org.coll(Kind::Invoice).updated(self.i)
    }

    fn id(&self) -> String {
        self.org.seeded_id(Kind::Invoice, self.i)
    }

    fn number(&self) -> String {
        if self.accrec() {
            format!("INV-{:04}", accrec_before(self.i + 1))
        } else {
            format!("RPT{:03}-{}", 100 + self.s.contact % 900, self.i)
        }
    }

    fn contact_id(&self) -> String {
        self.org.seeded_id(Kind::Contact, self.s.contact as usize)
    }
}

impl Record for InvView<'_> {
    fn field(&self, path: &[String]) -> Field<'_> {
        let str = |s: String| Field::Str(Cow::Owned(s));
        let stat = |s: &'static str| Field::Str(Cow::Borrowed(s));
        let Some(first) = path.first() else {
            return Field::Null;
        };
        let is = |name: &str| first.eq_ignore_ascii_case(name);
        if path.len() == 2 && is("Contact") {
            let second = &path[1];
            if second.eq_ignore_ascii_case("ContactID") {
                return str(self.contact_id());
            }
            if second.eq_ignore_ascii_case("Name") {
                return str(contact_name(self.s.contact as usize));
            }
            return Field::Null;
        }
        if path.len() != 1 {
            return Field::Null;
        }
        let s = &self.s;
        let due_date = s.date + 30 * 86_400_000;
        // Dispatched on length and first letter, then compared ignoring case.
        let initial = first.bytes().next().unwrap_or(0).to_ascii_lowercase();
        let key = (first.len(), initial);
        match key {
            (4, b't') if is("Type") => stat(if self.accrec() { "ACCREC" } else { "ACCPAY" }),
            (9, b'i') if is("InvoiceID") => str(self.id()),
            (13, b'i') if is("InvoiceNumber") => str(self.number()),
            (9, b'r') if is("Reference") => {
                if self.accrec() {
                    str(format!("PO-{}", 1000 + self.i))
                } else {
                    stat("")
                }
            }
            (9, b'a') if is("AmountDue") => Field::Num(s.due),
            (10, b'a') if is("AmountPaid") => Field::Num(s.paid),
            (14, b'a') if is("AmountCredited") => Field::Num(Decimal::ZERO),
            (12, b'c') if is("CurrencyRate") => Field::Num(Decimal::ONE),
            (12, b'i') if is("IsDiscounted") => Field::Bool(false),
            (14, b'h') if is("HasAttachments") => Field::Bool(false),
            (9, b'h') if is("HasErrors") => Field::Bool(false),
            (10, b'd') if is("DateString") => str(iso_seconds(s.date)),
            (4, b'd') if is("Date") => str(ms_date(s.date)),
            (13, b'd') if is("DueDateString") => str(iso_seconds(due_date)),
            (7, b'd') if is("DueDate") => str(ms_date(due_date)),
            (6, b's') if is("Status") => stat(self.status()),
            (15, b'l') if is("LineAmountTypes") => stat(LINE_AMOUNT_TYPES[usize::from(s.lat)]),
            (8, b's') if is("SubTotal") => Field::Num(s.sub),
            (8, b't') if is("TotalTax") => Field::Num(s.tax),
            (5, b't') if is("Total") => Field::Num(s.total),
            (14, b'u') if is("UpdatedDateUTC") => str(ms_date(self.updated())),
            (12, b'c') if is("CurrencyCode") => stat(self.org.region().currency),
            (15, b'f') if is("FullyPaidOnDate") && self.status() == "PAID" => str(ms_date(
                (s.date + 7 * 86_400_000).min(day_start(self.updated())),
            )),
            // Missing, an object (Contact) or an array (LineItems, Payments…): all read as null.
            _ => Field::Null,
        }
    }
}

/// A record of a list answer: seeded (by index) or stored.
#[derive(Clone, Copy)]
enum Rec<'a> {
    Seeded(usize),
    Stored(&'a Value),
}

impl Coll {
    fn updated(&self, i: usize) -> u64 {
        self.base_ms + i as u64 * STEP_MS
    }

    /// First seeded index updated in or after the second `since_ms` falls in.
    fn first_since(&self, since_ms: u64) -> usize {
        let since = since_ms - since_ms % 1000;
        if since <= self.base_ms {
            return 0;
        }
        let i = (since - self.base_ms).div_ceil(STEP_MS) as usize;
        // The seeded time must reach `since` only to the second.
        let mut i = i.min(self.seeded);
        while i > 0 && self.updated(i - 1) / 1000 * 1000 >= since {
            i -= 1;
        }
        i
    }

    /// The `k`-th seeded index at or after `from` that was not moved.
    fn nth_unmoved(&self, from: usize, k: usize) -> usize {
        let mut idx = from + k;
        loop {
            let before = self.moved.range(from..=idx).count();
            let want = from + k + before;
            if want == idx && !self.moved.contains(&idx) {
                return idx;
            }
            idx = if want == idx { idx + 1 } else { want };
        }
    }

    fn unmoved_from(&self, from: usize) -> usize {
        self.seeded.saturating_sub(from) - self.moved.range(from..).count()
    }
}

/// A page request, or none for an unpaged list.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListQuery {
    pub(crate) page: Option<usize>,
    pub(crate) page_size: usize,
    pub(crate) since_ms: Option<u64>,
    pub(crate) filter: Option<Expr>,
    pub(crate) order: Vec<OrderKey>,
    pub(crate) statuses: Vec<String>,
    pub(crate) ids: Vec<String>,
    pub(crate) contact_ids: Vec<String>,
    pub(crate) numbers: Vec<String>,
    pub(crate) include_archived: bool,
    /// `searchTerm`, lower-cased: a case-insensitive text search over [`Kind::search_fields`].
    pub(crate) search: Option<String>,
    /// `summaryOnly=true`: lightweight records ([`Kind::heavy_fields`] left out), always paged.
    pub(crate) summary_only: bool,
}

impl ListQuery {
    fn is_plain(&self, kind: Kind) -> bool {
        self.filter.is_none()
            && self.order.is_empty()
            && self.statuses.is_empty()
            && self.ids.is_empty()
            && self.contact_ids.is_empty()
            && self.numbers.is_empty()
            && self.search.is_none()
            && (kind != Kind::Contact || self.include_archived)
            && kind != Kind::TrackingCategory
    }

    /// Whether `r` contains the `searchTerm` in one of the fields Xero searches for `kind`.
    fn finds<R: Record + ?Sized>(&self, kind: Kind, r: &R) -> bool {
        let Some(term) = &self.search else {
            return true;
        };
        kind.search_fields().iter().any(|name| {
            matches!(r.field(&[(*name).to_owned()]), Field::Str(s) if s.to_lowercase().contains(term.as_str()))
        })
    }

    fn keeps(&self, kind: Kind, v: &Value) -> bool {
        let field = |k: &str| str_of(v, k).unwrap_or_default();
        if kind == Kind::Contact && !self.include_archived && field("ContactStatus") == "ARCHIVED" {
            return false;
        }
        if kind == Kind::TrackingCategory
            && (field("Status") == "DELETED"
                || (!self.include_archived && field("Status") == "ARCHIVED"))
        {
            return false;
        }
        if !self.statuses.is_empty()
            && !self
                .statuses
                .iter()
                .any(|s| s.eq_ignore_ascii_case(field("Status")))
        {
            return false;
        }
        if !self.ids.is_empty()
            && !self
                .ids
                .iter()
                .any(|s| s.eq_ignore_ascii_case(field(kind.id_field())))
        {
            return false;
        }
        if !self.contact_ids.is_empty() {
            let c = v
                .get("Contact")
                .map(|c| str_of(c, "ContactID").unwrap_or_default())
                .unwrap_or_default();
            if !self.contact_ids.iter().any(|s| s.eq_ignore_ascii_case(c)) {
                return false;
            }
        }
        if !self.numbers.is_empty()
            && !self
                .numbers
                .iter()
                .any(|s| s.eq_ignore_ascii_case(field("InvoiceNumber")))
        {
            return false;
        }
        if !self.finds(kind, v) {
            return false;
        }
        if let Some(since) = self.since_ms {
            let updated = str_of(v, "UpdatedDateUTC")
                .and_then(parse_ms_date)
                .unwrap_or(0);
            if updated.div_euclid(1000) < (since / 1000) as i64 {
                return false;
            }
        }
        self.filter.as_ref().is_none_or(|f| f.matches(v))
    }
}

impl ListQuery {
    /// [`ListQuery::keeps`] for a seeded invoice, without its JSON.
    fn keeps_invoice(&self, v: &InvView<'_>, sets: &InvoiceSets) -> bool {
        if !self.statuses.is_empty()
            && !self
                .statuses
                .iter()
                .any(|s| s.eq_ignore_ascii_case(v.status()))
        {
            return false;
        }
        if sets.ids.as_ref().is_some_and(|ids| !ids.contains(&v.i)) {
            return false;
        }
        if sets
            .contacts
            .as_ref()
            .is_some_and(|c| !c.contains(&(v.s.contact as usize)))
        {
            return false;
        }
        // Seeded numbers hold no lower-case letters, so upper-casing the asked ones compares
        // them ignoring case.
        if sets
            .numbers
            .as_ref()
            .is_some_and(|n| !n.contains(&v.number()))
        {
            return false;
        }
        if let Some(since) = self.since_ms
            && v.updated() / 1000 < since / 1000
        {
            return false;
        }
        if !self.finds(Kind::Invoice, v) {
            return false;
        }
        self.filter.as_ref().is_none_or(|f| f.matches(v))
    }

    /// Appends the record's `order` key values to `out`.
    fn push_order_keys<R: Record + ?Sized>(&self, r: &R, out: &mut Vec<Scalar>) {
        out.extend(self.order.iter().map(|k| k.scalar(r)));
    }
}

/// The IDs, ContactIDs and InvoiceNumbers filters of a list, prepared once for seeded invoices.
#[derive(Default)]
struct InvoiceSets {
    ids: Option<std::collections::HashSet<usize>>,
    contacts: Option<std::collections::HashSet<usize>>,
    numbers: Option<std::collections::HashSet<String>>,
}

/// Paging facts of an answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pagination {
    pub(crate) page: usize,
    pub(crate) page_size: usize,
    pub(crate) page_count: usize,
    pub(crate) item_count: usize,
}

/// Whether a write may create, update, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    /// PUT: create only.
    Put,
    /// POST: create or update.
    Post,
}

/// One organisation.
pub(crate) struct Org {
    pub(crate) tenant_id: String,
    pub(crate) name: String,
    index: usize,
    seed: u64,
    short_code: String,
    created_ms: u64,
    rng: fastrand::Rng,
    colls: Vec<Coll>,
    contacts_by_name: HashMap<String, String>,
    tax_rates: Vec<Rate>,
    seeded_accrec: usize,
    next_number: usize,
    used_numbers: BTreeSet<String>,
    /// Elements created through the API.
    pub(crate) creates: u64,
    /// Elements created through the API, per plural key.
    pub(crate) creates_by_kind: HashMap<String, u64>,
    /// Rendered list answers, cleared on every change.
    pub(crate) cache: std::sync::Mutex<HashMap<String, Arc<Vec<u8>>>>,
    /// The currencies transactions may use: the base currency, plus any enabled since.
    currencies: BTreeSet<String>,
    /// Whether the organisation may use classic expense claims (`/Receipts`, `/ExpenseClaims`):
    /// only organisations that used them before Xero retired them can, so off by default.
    pub(crate) classic_expenses: bool,
}

struct Region {
    version: &'static str,
    country: &'static str,
    currency: &'static str,
    timezone: &'static str,
    rate: &'static str,
    output: &'static str,
    input: &'static str,
    none: &'static str,
}

const REGIONS: [Region; 3] = [
    Region {
        version: "NZ",
        country: "NZ",
        currency: "NZD",
        timezone: "NEWZEALANDSTANDARDTIME",
        rate: "15",
        output: "GST on Income",
        input: "GST on Expenses",
        none: "No GST",
    },
    Region {
        version: "AU",
        country: "AU",
        currency: "AUD",
        timezone: "AUSEASTERNSTANDARDTIME",
        rate: "10",
        output: "GST on Income",
        input: "GST on Expenses",
        none: "BAS Excluded",
    },
    Region {
        version: "UK",
        country: "GB",
        currency: "GBP",
        timezone: "GMTSTANDARDTIME",
        rate: "20",
        output: "20% (VAT on Income)",
        input: "20% (VAT on Expenses)",
        none: "No VAT",
    },
];

const ORG_NAMES: [&str; 6] = [
    "Demo Company (Global)",
    "Harbourside Plumbing Ltd",
    "Kestrel Design Studio",
    "Northwind Traders",
    "Bluegum Landscaping",
    "Tidewater Consulting",
];

/// Code, name, type, default tax (o = output, i = input, n = none), system account.
const ACCOUNTS: [(&str, &str, &str, char, &str); 24] = [
    ("090", "Business Bank Account", "BANK", 'n', ""),
    ("091", "Business Savings Account", "BANK", 'n', ""),
    ("200", "Sales", "REVENUE", 'o', ""),
    ("260", "Other Revenue", "REVENUE", 'o', ""),
    ("270", "Interest Income", "REVENUE", 'n', ""),
    ("310", "Cost of Goods Sold", "DIRECTCOSTS", 'i', ""),
    ("400", "Advertising", "OVERHEADS", 'i', ""),
    ("404", "Bank Fees", "OVERHEADS", 'n', ""),
    ("408", "Cleaning", "OVERHEADS", 'i', ""),
    ("412", "Consulting & Accounting", "EXPENSE", 'i', ""),
    ("420", "Entertainment", "OVERHEADS", 'n', ""),
    ("429", "General Expenses", "OVERHEADS", 'i', ""),
    ("433", "Insurance", "OVERHEADS", 'i', ""),
    ("445", "Light, Power, Heating", "OVERHEADS", 'i', ""),
    ("461", "Printing & Stationery", "OVERHEADS", 'i', ""),
    ("469", "Rent", "OVERHEADS", 'i', ""),
    ("473", "Repairs and Maintenance", "OVERHEADS", 'i', ""),
    ("489", "Telephone & Internet", "OVERHEADS", 'i', ""),
    ("493", "Travel - National", "OVERHEADS", 'i', ""),
    ("610", "Accounts Receivable", "CURRENT", 'n', "DEBTORS"),
    ("800", "Accounts Payable", "CURRLIAB", 'n', "CREDITORS"),
    ("820", "GST", "CURRLIAB", 'n', "GST"),
    (
        "960",
        "Retained Earnings",
        "EQUITY",
        'n',
        "RETAINEDEARNINGS",
    ),
    ("970", "Owner A Funds Introduced", "EQUITY", 'n', ""),
];

/// Code, name, sale price, purchase price.
const ITEMS: [(&str, &str, &str, &str); 8] = [
    ("CONSULT", "Consulting hour", "150.00", "0"),
    ("DESIGN", "Design hour", "120.00", "0"),
    ("SUPPORT", "Support plan (monthly)", "49.95", "0"),
    ("TRAVEL", "Travel (per km)", "0.85", "0.85"),
    ("PAPER", "Copy paper A4 (box)", "42.50", "31.20"),
    ("TONER", "Toner cartridge", "89.00", "61.75"),
    ("CABLE", "Network cable 5m", "12.99", "6.40"),
    ("LICENCE", "Software licence (annual)", "399.00", "250.00"),
];

const FIRST: [&str; 16] = [
    "Acme",
    "Bayside",
    "Cedar",
    "Delta",
    "Evergreen",
    "Falcon",
    "Granite",
    "Horizon",
    "Ironbark",
    "Juniper",
    "Kiwi",
    "Lakeside",
    "Meridian",
    "Nimbus",
    "Orchard",
    "Pinnacle",
];
const SECOND: [&str; 8] = [
    "Supplies",
    "Builders",
    "Foods",
    "Logistics",
    "Media",
    "Traders",
    "Electrical",
    "Partners",
];
const SUFFIX: [&str; 4] = ["Ltd", "Limited", "& Co", "Group"];
const PEOPLE: [(&str, &str); 8] = [
    ("Ana", "Ngata"),
    ("Ben", "Carter"),
    ("Chloe", "Wong"),
    ("Dev", "Patel"),
    ("Ella", "Murphy"),
    ("Finn", "O'Brien"),
    ("Grace", "Kim"),
    ("Hemi", "Walker"),
];

/// Status of seeded invoice `i`, cycling through a realistic mix.
const STATUS_CYCLE: [&str; 10] = [
    "AUTHORISED",
    "PAID",
    "DRAFT",
    "AUTHORISED",
    "PAID",
    "SUBMITTED",
    "AUTHORISED",
    "PAID",
    "VOIDED",
    "DELETED",
];
/// Positions in the cycle that are PAID, each with one seeded payment.
const PAID_AT: [usize; 3] = [1, 4, 7];

struct Rate {
    code: &'static str,
    name: String,
    rate: Decimal,
    report: &'static str,
    revenue: bool,
    expenses: bool,
}

impl Org {
    /// Seeds organisation `index`.
    pub(crate) fn seed(seed: u64, index: usize, size: usize, now_ms: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(mix(&[seed, index as u64, 0x0e6]));
        let tenant_id = uuid(&mut rng);
        let name = if index < ORG_NAMES.len() {
            ORG_NAMES[index].to_owned()
        } else {
            format!(
                "{} {}",
                ORG_NAMES[index % ORG_NAMES.len()],
                index / ORG_NAMES.len() + 1
            )
        };
        let contacts = (size / 4).clamp(8, 5_000);
        let payments =
            (size / 10) * PAID_AT.len() + PAID_AT.iter().filter(|p| **p < size % 10).count();
        let end = day_start(now_ms) - 86_400_000;
        let invoice_base = end - size as u64 * STEP_MS;
        let contact_base = invoice_base - contacts as u64 * STEP_MS - 86_400_000;
        let setup_base = contact_base - 86_400_000;
        let counts = [
            (Kind::Contact, contacts, contact_base),
            (Kind::Invoice, size, invoice_base),
            (Kind::Payment, payments, invoice_base),
            (Kind::Account, ACCOUNTS.len(), setup_base),
            (Kind::TaxRate, 6, setup_base),
            (Kind::Item, ITEMS.len(), setup_base),
            (Kind::User, users::USERS.len(), setup_base),
            (
                Kind::TrackingCategory,
                tracking::CATEGORIES.len(),
                setup_base,
            ),
            (Kind::ManualJournal, 0, setup_base),
            (Kind::Receipt, 0, setup_base),
            (Kind::ExpenseClaim, 0, setup_base),
        ];
        let colls = counts
            .iter()
            .map(|(kind, n, base)| Coll {
                prefix: uuid_prefix(&mut rng),
                seeded: *n,
                base_ms: *base,
                moved: BTreeSet::new(),
                dynamic: HashMap::new(),
                order: BTreeSet::new(),
                rendered: (0..n.div_ceil(CHUNK)).map(|_| OnceLock::new()).collect(),
                rendered_bytes: AtomicUsize::new(0),
                summaries: if *kind == Kind::Invoice {
                    (0..n.div_ceil(CHUNK)).map(|_| OnceLock::new()).collect()
                } else {
                    Vec::new()
                },
                values: if *kind != Kind::Invoice && *n <= VALUES_MAX {
                    (0..n.div_ceil(CHUNK)).map(|_| OnceLock::new()).collect()
                } else {
                    Vec::new()
                },
            })
            .collect();
        let short_code = format!("!{:05X}", rng.u32(..) & 0xfffff);
        let mut org = Self {
            tenant_id,
            name,
            index,
            seed: mix(&[seed, index as u64]),
            short_code,
            created_ms: setup_base - 30 * 86_400_000,
            rng,
            colls,
            contacts_by_name: HashMap::new(),
            tax_rates: Vec::new(),
            seeded_accrec: 0,
            next_number: 0,
            used_numbers: BTreeSet::new(),
            creates: 0,
            creates_by_kind: HashMap::new(),
            cache: std::sync::Mutex::default(),
            currencies: BTreeSet::new(),
            classic_expenses: false,
        };
        org.currencies.insert(org.region().currency.to_owned());
        org.seeded_accrec = accrec_before(size);
        org.next_number = org.seeded_accrec + 1;
        org.tax_rates = org.make_rates();
        for i in 0..contacts {
            if !contact_archived(i) {
                let id = indexed_id(&org.colls[Kind::Contact.slot()].prefix, i);
                org.contacts_by_name
                    .insert(contact_name(i).to_lowercase(), id);
            }
        }
        org
    }

    /// Lets transactions use `code` (ISO 4217), as adding a currency in Xero's settings does.
    pub(crate) fn enable_currency(&mut self, code: &str) {
        self.currencies.insert(code.trim().to_ascii_uppercase());
    }

    /// Removes a record, as `DELETE /Items/{ItemID}` does; false when there is none.
    pub(crate) fn delete(&mut self, kind: Kind, key: &str) -> bool {
        let Some(id) = self
            .find(kind, key)
            .and_then(|v| str_of(&v, kind.id_field()).map(str::to_ascii_lowercase))
        else {
            return false;
        };
        let c = &mut self.colls[kind.slot()];
        if let Some(old) = c.dynamic.remove(&id) {
            let at = str_of(&old, "UpdatedDateUTC")
                .and_then(parse_ms_date)
                .unwrap_or(0)
                .max(0) as u64;
            c.order.remove(&(at, id.clone()));
        }
        if let Some(i) = index_of(&c.prefix, &id).filter(|i| *i < c.seeded) {
            c.moved.insert(i);
        }
        super::lock(&self.cache).clear();
        true
    }

    fn region(&self) -> &'static Region {
        &REGIONS[self.index % REGIONS.len()]
    }

    fn coll(&self, kind: Kind) -> &Coll {
        &self.colls[kind.slot()]
    }

    fn rates(&self) -> &[Rate] {
        &self.tax_rates
    }

    fn make_rates(&self) -> Vec<Rate> {
        let r = self.region();
        let rate: Decimal = r.rate.parse().unwrap_or_default();
        vec![
            Rate {
                code: "OUTPUT",
                name: r.output.to_owned(),
                rate,
                report: "OUTPUT",
                revenue: true,
                expenses: false,
            },
            Rate {
                code: "INPUT",
                name: r.input.to_owned(),
                rate,
                report: "INPUT",
                revenue: false,
                expenses: true,
            },
            Rate {
                code: "NONE",
                name: r.none.to_owned(),
                rate: Decimal::ZERO,
                report: "NONE",
                revenue: true,
                expenses: true,
            },
            Rate {
                code: "EXEMPTOUTPUT",
                name: "Exempt Sales".to_owned(),
                rate: Decimal::ZERO,
                report: "EXEMPTOUTPUT",
                revenue: true,
                expenses: false,
            },
            Rate {
                code: "EXEMPTINPUT",
                name: "Exempt Purchases".to_owned(),
                rate: Decimal::ZERO,
                report: "EXEMPTINPUT",
                revenue: false,
                expenses: true,
            },
            Rate {
                code: "ZERORATEDOUTPUT",
                name: "Zero Rated Sales".to_owned(),
                rate: Decimal::ZERO,
                report: "ZERORATEDOUTPUT",
                revenue: true,
                expenses: false,
            },
        ]
    }

    /// AccountID and default tax type of an account code.
    fn account_by_code(&self, code: &str) -> Option<(String, &'static str)> {
        let i = ACCOUNTS
            .iter()
            .position(|(c, ..)| c.eq_ignore_ascii_case(code))?;
        let tax = match ACCOUNTS[i].3 {
            'o' => "OUTPUT",
            'i' => "INPUT",
            _ => "NONE",
        };
        Some((self.seeded_id(Kind::Account, i), tax))
    }

    fn rate_of(&self, code: &str) -> Option<Decimal> {
        self.rates()
            .iter()
            .find(|r| r.code.eq_ignore_ascii_case(code))
            .map(|r| r.rate)
    }

    fn rng_for(&self, kind: Kind, i: usize) -> fastrand::Rng {
        fastrand::Rng::with_seed(mix(&[self.seed, kind as u64, i as u64]))
    }

    fn seeded_id(&self, kind: Kind, i: usize) -> String {
        if kind == Kind::TaxRate {
            return self
                .rates()
                .get(i)
                .map(|r| r.code.to_owned())
                .unwrap_or_default();
        }
        indexed_id(&self.coll(kind).prefix, i)
    }

    /// The organisation record (`GET /Organisation`).
    pub(crate) fn organisation(&self) -> Value {
        let r = self.region();
        json!({
            "OrganisationID": self.tenant_id,
            "APIKey": "",
            "Name": self.name,
            "LegalName": format!("{} Limited", self.name.trim_end_matches(" Ltd")),
            "PaysTax": true,
            "Version": r.version,
            "OrganisationType": "COMPANY",
            "BaseCurrency": r.currency,
            "CountryCode": r.country,
            "IsDemoCompany": self.index == 0,
            "OrganisationStatus": "ACTIVE",
            "TaxNumber": format!("{:03}-{:03}-{:03}", self.seed % 1000, (self.seed >> 10) % 1000, (self.seed >> 20) % 1000),
            "FinancialYearEndDay": 31,
            "FinancialYearEndMonth": 3,
            "SalesTaxBasis": "ACCRUALS",
            "SalesTaxPeriod": "TWOMONTHS",
            "DefaultSalesTax": "Tax Exclusive",
            "DefaultPurchasesTax": "Tax Inclusive",
            "CreatedDateUTC": ms_date(self.created_ms),
            "OrganisationEntityType": "COMPANY",
            "Timezone": r.timezone,
            "ShortCode": self.short_code,
            "OrganisationID_": null,
            "Edition": "BUSINESS",
            "Class": if self.index == 0 { "DEMO" } else { "STANDARD" },
            "LineOfBusiness": "Professional services",
            "Addresses": [],
            "Phones": [],
            "ExternalLinks": [],
            "PaymentTerms": {}
        })
        .as_object()
        .map(|m| {
            let mut m = m.clone();
            m.remove("OrganisationID_");
            Value::Object(m)
        })
        .unwrap_or(Value::Null)
    }

    /// `GET /Organisation/Actions`: what the connection may do here. `UseMulticurrency` is
    /// allowed once a currency besides the base one is enabled.
    pub(crate) fn actions(&self) -> Vec<Value> {
        let multicurrency = self.currencies.len() > 1;
        [
            ("CreateDraftInvoice", true),
            ("CreateApprovedInvoice", true),
            ("CreateDraftBill", true),
            ("CreateApprovedBill", true),
            ("CreateInvoicePayment", true),
            ("UseMulticurrency", multicurrency),
        ]
        .iter()
        .map(|(name, allowed)| {
            json!({"Name": name, "Status": if *allowed { "ALLOWED" } else { "NOT-ALLOWED" }})
        })
        .collect()
    }

    // ----------------------------------------------------------------------------------------
    // Seeded records
    // ----------------------------------------------------------------------------------------

    fn seeded(&self, kind: Kind, i: usize) -> Value {
        match kind {
            Kind::Contact => self.seeded_contact(i),
            Kind::Invoice => self.seeded_invoice(i),
            Kind::Payment => self.seeded_payment(i),
            Kind::Account => self.seeded_account(i),
            Kind::TaxRate => self.seeded_tax_rate(i),
            Kind::Item => self.seeded_item(i),
            Kind::User => self.seeded_user(i),
            Kind::TrackingCategory => self.seeded_tracking_category(i),
            // Only created through the API: nothing is seeded.
            Kind::ManualJournal | Kind::Receipt | Kind::ExpenseClaim => json!({}),
        }
    }

    fn seeded_account(&self, i: usize) -> Value {
        let (code, name, ty, tax, system) = ACCOUNTS[i];
        let class = match ty {
            "BANK" | "CURRENT" => "ASSET",
            "REVENUE" => "REVENUE",
            "CURRLIAB" => "LIABILITY",
            "EQUITY" => "EQUITY",
            _ => "EXPENSE",
        };
        let tax_type = match tax {
            'o' => "OUTPUT",
            'i' => "INPUT",
            _ => "NONE",
        };
        let mut v = json!({
            "AccountID": self.seeded_id(Kind::Account, i),
            "Code": code,
            "Name": name,
            "Status": "ACTIVE",
            "Type": ty,
            "TaxType": tax_type,
            "Class": class,
            "EnablePaymentsToAccount": false,
            "ShowInExpenseClaims": class == "EXPENSE",
            "ReportingCode": format!("{}.{}", &class[..3], code),
            "ReportingCodeName": name,
            "HasAttachments": false,
            "UpdatedDateUTC": ms_date(self.coll(Kind::Account).updated(i)),
            "AddToWatchlist": false,
        });
        if ty == "BANK" {
            v["BankAccountNumber"] = json!(format!("12-3456-{:07}-0{}", self.seed % 10_000_000, i));
            v["BankAccountType"] = json!("BANK");
            v["CurrencyCode"] = json!(self.region().currency);
        } else {
            v["Description"] = json!(format!("{name} account"));
        }
        if !system.is_empty() {
            v["SystemAccount"] = json!(system);
        }
        v
    }

    fn seeded_tax_rate(&self, i: usize) -> Value {
        let rates = self.rates();
        let Some(r) = rates.get(i) else {
            return Value::Null;
        };
        let rate4 = money(r.rate.round_dp(4));
        json!({
            "Name": r.name,
            "TaxType": r.code,
            "ReportTaxType": r.report,
            "CanApplyToAssets": true,
            "CanApplyToEquity": true,
            "CanApplyToExpenses": r.expenses,
            "CanApplyToLiabilities": true,
            "CanApplyToRevenue": r.revenue,
            "DisplayTaxRate": rate4,
            "EffectiveRate": rate4,
            "Status": "ACTIVE",
            "TaxComponents": [{"Name": if r.rate.is_zero() { "No Tax" } else { "GST" }, "Rate": rate4, "IsCompound": false, "IsNonRecoverable": false}]
        })
    }

    // ----------------------------------------------------------------------------------------
    // Reading
    // ----------------------------------------------------------------------------------------

    /// A record by id (or by the other keys Xero accepts in the path: InvoiceNumber, ContactNumber,
    /// item Code, TaxType).
    pub(crate) fn find(&self, kind: Kind, key: &str) -> Option<Value> {
        let c = self.coll(kind);
        let lower = key.to_ascii_lowercase();
        if let Some(v) = c.dynamic.get(&lower) {
            return Some(v.clone());
        }
        if kind == Kind::TaxRate {
            return self
                .rates()
                .iter()
                .position(|r| r.code.eq_ignore_ascii_case(key))
                .filter(|i| !c.moved.contains(i))
                .map(|i| self.seeded(kind, i));
        }
        if let Some(i) = index_of(&c.prefix, key) {
            if i < c.seeded && !c.moved.contains(&i) {
                return Some(self.seeded(kind, i));
            }
            return None;
        }
        // Secondary keys.
        let field = match kind {
            Kind::Invoice => "InvoiceNumber",
            Kind::Contact => "ContactNumber",
            Kind::Item | Kind::Account => "Code",
            _ => return None,
        };
        let dynamic = c
            .order
            .iter()
            .filter_map(|(_, id)| c.dynamic.get(id))
            .find(|v| str_of(v, field).is_some_and(|s| s.eq_ignore_ascii_case(key)))
            .cloned();
        if dynamic.is_some() {
            return dynamic;
        }
        let seeded_index = match kind {
            Kind::Invoice => invoice_index_of_number(key, c.seeded),
            Kind::Item => ITEMS
                .iter()
                .position(|(code, ..)| code.eq_ignore_ascii_case(key)),
            Kind::Account => ACCOUNTS
                .iter()
                .position(|(code, ..)| code.eq_ignore_ascii_case(key)),
            _ => None,
        };
        seeded_index
            .filter(|i| *i < c.seeded && !c.moved.contains(i))
            .map(|i| self.seeded(kind, i))
    }

    /// A record as `GET /{plural}/{id}` answers it: [`Org::find`], with a tracking category's
    /// deleted options left out (archived ones shown).
    pub(crate) fn get(&self, kind: Kind, key: &str) -> Option<Value> {
        let v = self.find(kind, key)?;
        Some(if kind == Kind::TrackingCategory {
            tracking::shown(v, true)
        } else {
            v
        })
    }

    /// Every record of a kind in default order.
    pub(crate) fn all(&self, kind: Kind) -> Vec<Value> {
        let q = ListQuery {
            include_archived: true,
            ..ListQuery::default()
        };
        self.scan(kind, &q, 0, usize::MAX).0
    }

    fn records_from(&self, kind: Kind, from: usize) -> impl Iterator<Item = Value> + '_ {
        let c = self.coll(kind);
        (from..c.seeded)
            .filter(|i| !c.moved.contains(i))
            .map(move |i| self.seeded(kind, i))
            .chain(
                c.order
                    .iter()
                    .filter_map(|(_, id)| c.dynamic.get(id).cloned()),
            )
    }

    /// Scans in default order, keeping matches with index in `skip..skip+take`; returns them and
    /// the number of matches.
    fn scan(&self, kind: Kind, q: &ListQuery, skip: usize, take: usize) -> (Vec<Value>, usize) {
        let from = q.since_ms.map_or(0, |s| self.coll(kind).first_since(s));
        let mut out = Vec::new();
        let mut n = 0;
        for v in self.records_from(kind, from) {
            if q.keeps(kind, &v) {
                if n >= skip && n - skip < take {
                    out.push(v);
                }
                n += 1;
            }
        }
        (out, n)
    }

    /// A seeded invoice's summary (computed a chunk at a time, then kept).
    fn inv_summary(&self, i: usize) -> InvSummary {
        let c = self.coll(Kind::Invoice);
        let Some(chunk) = c.summaries.get(i / CHUNK) else {
            return self.summarize_invoice(i);
        };
        let chunk = chunk.get_or_init(|| {
            let start = i / CHUNK * CHUNK;
            (start..(start + CHUNK).min(c.seeded))
                .map(|j| self.summarize_invoice(j))
                .collect()
        });
        chunk.get(i % CHUNK).copied().unwrap_or_default()
    }

    /// A seeded invoice's summary straight from the seed: the draws of
    /// [`Org::seeded_invoice`] in the same order, priced as [`Org::price_lines`] prices them.
    fn summarize_invoice(&self, i: usize) -> InvSummary {
        let mut rng = self.rng_for(Kind::Invoice, i);
        let accrec = i % 3 != 2;
        let updated = self.coll(Kind::Invoice).updated(i);
        let date = day_start(updated) - rng.u64(0..20) * 86_400_000;
        let contact = rng.usize(..self.coll(Kind::Contact).seeded);
        let lat = match rng.u8(..10) {
            0 => 1,
            1 => 2,
            _ => 0,
        };
        let lines_n = 1 + rng.usize(..3);
        let (mut sum_lines, mut sum_tax) = (Decimal::ZERO, Decimal::ZERO);
        for _ in 0..lines_n {
            let (amount, tax) = if accrec {
                let (_, _, sale, _) = ITEMS[rng.usize(..ITEMS.len())];
                (sale.parse::<Decimal>().unwrap_or_default(), "OUTPUT")
            } else {
                let (code, ..) = ACCOUNTS[6 + rng.usize(..13)];
                let cents = rng.i64(1_000..250_000);
                let _ = rng.u8(..28);
                let tax = if code == "404" || code == "420" {
                    "NONE"
                } else {
                    "INPUT"
                };
                (Decimal::new(cents, 2), tax)
            };
            let qty = Decimal::from(1 + rng.u32(..8));
            let line_amount = round2(qty * round2(amount));
            let rate = if lat == 2 {
                Decimal::ZERO
            } else {
                self.rate_of(tax).unwrap_or_default()
            };
            let tax = match lat {
                1 => round2(line_amount * rate / (Decimal::ONE_HUNDRED + rate)),
                2 => Decimal::ZERO,
                _ => round2(line_amount * rate / Decimal::ONE_HUNDRED),
            };
            sum_lines += line_amount;
            sum_tax += tax;
        }
        let sub = if lat == 1 {
            sum_lines - sum_tax
        } else {
            sum_lines
        };
        let total = sub + sum_tax;
        let (due, paid) = match STATUS_CYCLE[i % STATUS_CYCLE.len()] {
            "PAID" => (Decimal::ZERO, total),
            "VOIDED" | "DELETED" => (Decimal::ZERO, Decimal::ZERO),
            _ => (total, Decimal::ZERO),
        };
        InvSummary {
            date,
            contact: u32::try_from(contact).unwrap_or(0),
            lat,
            sub,
            tax: sum_tax,
            total,
            due,
            paid,
        }
    }

    /// A seeded invoice's summary read from its JSON (what [`Org::summarize_invoice`] must match).
    #[cfg(test)]
    fn summarize_invoice_json(&self, i: usize) -> InvSummary {
        let v = self.seeded_invoice(i);
        let num = |k: &str| v.get(k).and_then(decimal).unwrap_or_default();
        let contact = v
            .get("Contact")
            .and_then(|c| str_of(c, "ContactID"))
            .and_then(|id| index_of(&self.coll(Kind::Contact).prefix, id))
            .unwrap_or(0);
        let lat = str_of(&v, "LineAmountTypes").unwrap_or_default();
        InvSummary {
            date: str_of(&v, "Date")
                .and_then(parse_ms_date)
                .unwrap_or(0)
                .max(0) as u64,
            contact: u32::try_from(contact).unwrap_or(0),
            lat: LINE_AMOUNT_TYPES
                .iter()
                .position(|l| *l == lat)
                .and_then(|p| u8::try_from(p).ok())
                .unwrap_or(0),
            sub: num("SubTotal"),
            tax: num("TotalTax"),
            total: num("Total"),
            due: num("AmountDue"),
            paid: num("AmountPaid"),
        }
    }

    /// Seeded record `i` as JSON, from the value cache when its collection keeps one.
    fn seeded_value(&self, kind: Kind, i: usize) -> Cow<'_, Value> {
        let c = self.coll(kind);
        let Some(chunk) = c.values.get(i / CHUNK) else {
            return Cow::Owned(self.seeded(kind, i));
        };
        let chunk = chunk.get_or_init(|| {
            let start = i / CHUNK * CHUNK;
            (start..(start + CHUNK).min(c.seeded))
                .map(|j| self.seeded(kind, j))
                .collect()
        });
        chunk
            .get(i % CHUNK)
            .map_or_else(|| Cow::Owned(self.seeded(kind, i)), Cow::Borrowed)
    }

    fn invoice_view(&self, i: usize) -> InvView<'_> {
        InvView {
            org: self,
            i,
            s: self.inv_summary(i),
        }
    }

    /// Seeded record `i` as JSON bytes, kept for the next read while the budget allows.
    fn render_seeded(&self, kind: Kind, i: usize) -> Json {
        let render = || -> Json {
            serde_json::to_vec(&self.seeded(kind, i))
                .unwrap_or_default()
                .into()
        };
        let c = self.coll(kind);
        let Some(chunk) = c.rendered.get(i / CHUNK) else {
            return render();
        };
        let full = c.rendered_bytes.load(AtomicOrdering::Relaxed) >= RENDER_BUDGET;
        let chunk = match chunk.get() {
            Some(chunk) => chunk,
            None if full => return render(),
            None => chunk.get_or_init(|| (0..CHUNK).map(|_| OnceLock::new()).collect()),
        };
        let Some(slot) = chunk.get(i % CHUNK) else {
            return render();
        };
        if let Some(b) = slot.get() {
            return b.clone();
        }
        if full {
            return render();
        }
        slot.get_or_init(|| {
            let b = render();
            c.rendered_bytes.fetch_add(b.len(), AtomicOrdering::Relaxed);
            b
        })
        .clone()
    }

    /// A record of a list answer as JSON bytes, without the fields named in `strip`.
    fn render(&self, kind: Kind, rec: &Rec<'_>, strip: &[&str]) -> Json {
        let to_bytes = |mut v: Value| -> Json {
            if let Some(m) = v.as_object_mut() {
                for field in strip {
                    m.remove(*field);
                }
            }
            serde_json::to_vec(&v).unwrap_or_default().into()
        };
        match rec {
            Rec::Seeded(i) if strip.is_empty() => self.render_seeded(kind, *i),
            Rec::Seeded(i) => to_bytes(self.seeded(kind, *i)),
            Rec::Stored(v) if strip.is_empty() => serde_json::to_vec(v).unwrap_or_default().into(),
            Rec::Stored(v) => to_bytes((*v).clone()),
        }
    }

    /// A list answer: the records (as JSON; an unpaged invoice list leaves out LineItems, a
    /// `summaryOnly` one the heavy fields) and, for a paged request, the pagination facts.
    pub(crate) fn list(
        &self,
        kind: Kind,
        q: &ListQuery,
    ) -> Result<(Vec<Json>, Option<Pagination>), String> {
        let size = q.page_size.max(1);
        let (skip, take) = match q.page {
            Some(p) => ((p.max(1) - 1).saturating_mul(size), size),
            None => (0, usize::MAX),
        };
        if q.page.is_none() && q.is_plain(kind) {
            let c = self.coll(kind);
            let from = q.since_ms.map_or(0, |s| c.first_since(s));
            let total = c.unmoved_from(from) + c.dynamic.len();
            if total > UNPAGED_MAX {
                return Err(format!(
                    "The request would return about {total} records, more than the {UNPAGED_MAX} allowed without paging; add page to the request"
                ));
            }
        }
        let (records, total) = if q.is_plain(kind) {
            self.plain_page(kind, q.since_ms, skip, take)
        } else {
            self.select(kind, q, skip, take)
        };
        if q.page.is_none() && total > UNPAGED_MAX {
            return Err(format!(
                "The request would return {total} records, more than the {UNPAGED_MAX} allowed without paging; add page to the request"
            ));
        }
        let strip: &[&str] = if q.summary_only {
            kind.heavy_fields()
        } else if kind == Kind::Invoice && q.page.is_none() {
            &["LineItems"]
        } else {
            &[]
        };
        let records = records
            .iter()
            .map(|r| {
                if kind == Kind::TrackingCategory {
                    let v = match r {
                        Rec::Seeded(i) => self.seeded(kind, *i),
                        Rec::Stored(v) => (*v).clone(),
                    };
                    let shown = tracking::shown(v, q.include_archived);
                    serde_json::to_vec(&shown).unwrap_or_default().into()
                } else {
                    self.render(kind, r, strip)
                }
            })
            .collect();
        let pagination = q.page.map(|p| Pagination {
            page: p.max(1),
            page_size: size,
            page_count: total.div_ceil(size),
            item_count: total,
        });
        Ok((records, pagination))
    }

    /// The matches of a filtered or ordered list with index in `skip..skip+take`, and the number
    /// of matches. Seeded invoices are judged from their summaries, without their JSON.
    fn select(&self, kind: Kind, q: &ListQuery, skip: usize, take: usize) -> (Vec<Rec<'_>>, usize) {
        let c = self.coll(kind);
        let from = q.since_ms.map_or(0, |s| c.first_since(s));
        let seeded = (from..c.seeded)
            .filter(|i| !c.moved.contains(i))
            .map(Rec::Seeded);
        let stored = c
            .order
            .iter()
            .filter_map(|(_, id)| c.dynamic.get(id))
            .map(Rec::Stored);
        let sets = if kind == Kind::Invoice {
            let indices = |asked: &[String], prefix: &str| {
                (!asked.is_empty()).then(|| {
                    asked
                        .iter()
                        .filter_map(|s| indexed_id_index(prefix, s))
                        .collect()
                })
            };
            InvoiceSets {
                ids: indices(&q.ids, &c.prefix),
                contacts: indices(&q.contact_ids, &self.coll(Kind::Contact).prefix),
                numbers: (!q.numbers.is_empty())
                    .then(|| q.numbers.iter().map(|n| n.to_ascii_uppercase()).collect()),
            }
        } else {
            InvoiceSets::default()
        };
        let ordered = !q.order.is_empty();
        // With `order`: every match and its key values (`width` per match), sorted at the end.
        let width = q.order.len();
        let mut keys: Vec<Scalar> = Vec::new();
        let mut matches: Vec<Rec<'_>> = Vec::new();
        let mut out = Vec::new();
        let mut n = 0;
        for rec in seeded.chain(stored) {
            let kept = match rec {
                Rec::Seeded(i) if kind == Kind::Invoice => {
                    let v = self.invoice_view(i);
                    let kept = q.keeps_invoice(&v, &sets);
                    if kept && ordered {
                        q.push_order_keys(&v, &mut keys);
                    }
                    kept
                }
                Rec::Seeded(i) => {
                    let v = self.seeded_value(kind, i);
                    let kept = q.keeps(kind, &v);
                    if kept && ordered {
                        q.push_order_keys(v.as_ref(), &mut keys);
                    }
                    kept
                }
                Rec::Stored(v) => {
                    let kept = q.keeps(kind, v);
                    if kept && ordered {
                        q.push_order_keys(v, &mut keys);
                    }
                    kept
                }
            };
            if !kept {
                continue;
            }
            if ordered {
                matches.push(rec);
            } else if n >= skip && n - skip < take {
                out.push(rec);
            }
            n += 1;
        }
        if ordered {
            let key = |m: usize| &keys[m * width..(m + 1) * width];
            // Ties broken by position: the same order a stable sort gives, so only the records
            // up to the end of the page need sorting.
            let cmp = |a: &usize, b: &usize| {
                compare_keys(&q.order, key(*a), key(*b)).then_with(|| a.cmp(b))
            };
            let mut sorted: Vec<usize> = (0..matches.len()).collect();
            let end = skip.saturating_add(take).min(sorted.len());
            if end == 0 {
                sorted.clear();
            } else if end < sorted.len() {
                sorted.select_nth_unstable_by(end - 1, cmp);
                sorted.truncate(end);
            }
            sorted.sort_unstable_by(cmp);
            out = sorted.into_iter().skip(skip).map(|m| matches[m]).collect();
        }
        (out, n)
    }

    /// A page of the unfiltered default order, computed without scanning.
    fn plain_page(
        &self,
        kind: Kind,
        since: Option<u64>,
        skip: usize,
        take: usize,
    ) -> (Vec<Rec<'_>>, usize) {
        let c = self.coll(kind);
        let from = since.map_or(0, |s| c.first_since(s));
        let seeded_n = c.unmoved_from(from);
        let since_s = since.map_or(0, |s| s / 1000);
        let dynamic: Vec<&String> = c
            .order
            .iter()
            .filter(|(at, _)| at / 1000 >= since_s)
            .map(|(_, id)| id)
            .collect();
        let total = seeded_n + dynamic.len();
        let mut out = Vec::new();
        let mut k = skip;
        while out.len() < take && k < total {
            if k < seeded_n {
                out.push(Rec::Seeded(c.nth_unmoved(from, k)));
            } else if let Some(v) = dynamic.get(k - seeded_n).and_then(|id| c.dynamic.get(*id)) {
                out.push(Rec::Stored(v));
            }
            k += 1;
        }
        (out, total)
    }

    // ----------------------------------------------------------------------------------------
    // Writing
    // ----------------------------------------------------------------------------------------

    fn new_id(&mut self) -> String {
        uuid(&mut self.rng)
    }

    /// Stores a new or changed record, moving it to the end of the default order.
    fn store(&mut self, kind: Kind, record: Value, created: bool) {
        let id = str_of(&record, kind.id_field())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let updated = str_of(&record, "UpdatedDateUTC")
            .and_then(parse_ms_date)
            .unwrap_or(0)
            .max(0) as u64;
        let c = &mut self.colls[kind.slot()];
        if let Some(i) = index_of(&c.prefix, &id).filter(|i| *i < c.seeded) {
            c.moved.insert(i);
        }
        if kind == Kind::TaxRate
            && let Some(i) = [
                "output",
                "input",
                "none",
                "exemptoutput",
                "exemptinput",
                "zeroratedoutput",
            ]
            .iter()
            .position(|c| *c == id)
        {
            c.moved.insert(i);
        }
        if let Some(old) = c.dynamic.get(&id) {
            let at = str_of(old, "UpdatedDateUTC")
                .and_then(parse_ms_date)
                .unwrap_or(0)
                .max(0) as u64;
            c.order.remove(&(at, id.clone()));
        }
        c.order.insert((updated, id.clone()));
        c.dynamic.insert(id, record);
        super::lock(&self.cache).clear();
        if created {
            self.creates += 1;
            *self
                .creates_by_kind
                .entry(kind.plural().to_owned())
                .or_default() += 1;
        }
    }

    /// Creates or updates one element of a write; `Ok` holds the stored record and any warnings.
    pub(crate) fn write(
        &mut self,
        kind: Kind,
        verb: Verb,
        element: &Value,
        path_id: Option<&str>,
        now: u64,
        unitdp4: bool,
    ) -> Result<(Value, Vec<String>), Vec<String>> {
        let Some(el) = element.as_object() else {
            return Err(vec!["The element is not a JSON object.".to_owned()]);
        };
        match kind {
            Kind::Contact => self.write_contact(verb, el, path_id, now),
            Kind::Invoice => self.write_invoice(verb, el, path_id, now, unitdp4),
            Kind::Payment => self.write_payment(verb, el, path_id, now),
            Kind::Item => self.write_item(verb, el, path_id, now),
            Kind::TrackingCategory => self.write_tracking_category(verb, el, path_id),
            Kind::ManualJournal => self.write_manual_journal(verb, el, path_id, now),
            Kind::Receipt => self.write_receipt(verb, el, path_id, now, unitdp4),
            Kind::ExpenseClaim => self.write_expense_claim(verb, el, path_id, now),
            Kind::Account | Kind::TaxRate | Kind::User => Err(vec![format!(
                "The simulator does not change {} through the API.",
                kind.plural()
            )]),
        }
    }

    fn existing_for_update(
        &self,
        kind: Kind,
        verb: Verb,
        el: &Map<String, Value>,
        path_id: Option<&str>,
    ) -> Result<Option<Value>, Vec<String>> {
        let id = path_id.map(str::to_owned).or_else(|| {
            get_ci(el, kind.id_field())
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        let Some(id) = id.filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        match self.find(kind, &id) {
            Some(v) if verb == Verb::Post || path_id.is_some() => Ok(Some(v)),
            Some(_) => Err(vec![format!(
                "A {} with this id already exists; PUT only creates, use POST to update it.",
                kind.plural().trim_end_matches('s')
            )]),
            None => Err(vec![format!(
                "{} {} could not be found.",
                kind.id_field(),
                id
            )]),
        }
    }
}

/// The contact shape Xero always returns: both addresses and all four phones, possibly empty.
fn blank_contact() -> Value {
    json!({
        "ContactID": "",
        "ContactStatus": "ACTIVE",
        "Name": "",
        "EmailAddress": "",
        "BankAccountDetails": "",
        "Addresses": [
            {"AddressType": "POBOX", "City": "", "Region": "", "PostalCode": "", "Country": ""},
            {"AddressType": "STREET", "City": "", "Region": "", "PostalCode": "", "Country": ""}
        ],
        "Phones": [
            {"PhoneType": "DEFAULT", "PhoneNumber": "", "PhoneAreaCode": "", "PhoneCountryCode": ""},
            {"PhoneType": "DDI", "PhoneNumber": "", "PhoneAreaCode": "", "PhoneCountryCode": ""},
            {"PhoneType": "FAX", "PhoneNumber": "", "PhoneAreaCode": "", "PhoneCountryCode": ""},
            {"PhoneType": "MOBILE", "PhoneNumber": "", "PhoneAreaCode": "", "PhoneCountryCode": ""}
        ],
        "UpdatedDateUTC": "",
        "ContactGroups": [],
        "IsSupplier": false,
        "IsCustomer": false,
        "ContactPersons": [],
        "HasAttachments": false,
        "HasValidationErrors": false
    })
}

/// Overwrites `target`'s keys with those of `fields` (both objects).
fn merge(target: &mut Value, fields: &Value) {
    if let (Some(t), Some(f)) = (target.as_object_mut(), fields.as_object()) {
        for (k, v) in f {
            t.insert(k.clone(), v.clone());
        }
    }
}

/// The spelling of `key` already used in `record` (clients may send other casing).
fn canonical_key(record: &Value, key: &str) -> String {
    record
        .as_object()
        .and_then(|m| m.keys().find(|k| k.eq_ignore_ascii_case(key)).cloned())
        .unwrap_or_else(|| key.to_owned())
}

/// The index `i` of an id equal (ignoring case) to `indexed_id(prefix, i)`.
fn indexed_id_index(prefix: &str, id: &str) -> Option<usize> {
    let head = id.get(..prefix.len())?;
    let tail = id.get(prefix.len()..)?;
    if tail.len() != 12 || !tail.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    usize::from_str_radix(tail, 16).ok()
}

/// Seeded contact name `i`, unique.
fn contact_name(i: usize) -> String {
    let a = FIRST[i % FIRST.len()];
    let b = SECOND[(i / FIRST.len()) % SECOND.len()];
    let round = i / (FIRST.len() * SECOND.len());
    let suffix = SUFFIX[round % SUFFIX.len()];
    if round < SUFFIX.len() {
        format!("{a} {b} {suffix}")
    } else {
        format!("{a} {b} {suffix} {}", round / SUFFIX.len() + 1)
    }
}

fn contact_archived(i: usize) -> bool {
    i % 9 == 8
}

/// Number of sales invoices among seeded indices `0..n` (every third is a bill).
fn accrec_before(n: usize) -> usize {
    n - n / 3
}

/// The seeded payment of seeded invoice `i`, when it is PAID.
fn payment_of_invoice(i: usize) -> Option<usize> {
    let pos = PAID_AT.iter().position(|p| *p == i % STATUS_CYCLE.len())?;
    Some(i / STATUS_CYCLE.len() * PAID_AT.len() + pos)
}

/// The seeded invoice index of a sales invoice number `INV-nnnn`.
fn invoice_index_of_number(number: &str, seeded: usize) -> Option<usize> {
    let n: usize = number
        .to_ascii_uppercase()
        .strip_prefix("INV-")?
        .parse()
        .ok()?;
    if n == 0 {
        return None;
    }
    // The n-th (1-based) index whose i % 3 != 2.
    let i = (n - 1) / 2 * 3 + (n - 1) % 2;
    (i < seeded).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbering_and_layout_agree() {
        for i in 0..30 {
            if i % 3 != 2 {
                let n = accrec_before(i + 1);
                assert_eq!(
                    invoice_index_of_number(&format!("INV-{n:04}"), 100),
                    Some(i)
                );
            }
        }
        let org = Org::seed(1, 0, 50, 1_767_225_600_000);
        let c = org.coll(Kind::Invoice);
        assert_eq!(c.first_since(0), 0);
        assert_eq!(c.first_since(c.updated(10)), 10);
        assert_eq!(c.first_since(c.updated(10) + 1), 10);
        assert_eq!(c.first_since(c.updated(10) + 1000), 11);
        let pays = org.coll(Kind::Payment).seeded;
        for j in 0..pays {
            let p = org.seeded_payment(j);
            let inv = p["Invoice"]["InvoiceID"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let v = org.find(Kind::Invoice, &inv).unwrap_or_default();
            assert_eq!(v["Status"], "PAID");
            assert_eq!(v["Payments"][0]["PaymentID"], p["PaymentID"]);
        }
    }

    #[test]
    fn invoice_view_answers_like_json() {
        for seed in [1, 2, 9] {
            for index in 0..3 {
                let org = Org::seed(seed, index, 3_000, 1_767_225_600_000);
                for i in 0..3_000 {
                    let (a, b) = (org.summarize_invoice(i), org.summarize_invoice_json(i));
                    let same = (a.date, a.contact, a.lat) == (b.date, b.contact, b.lat)
                        && [a.sub, a.tax, a.total, a.due, a.paid]
                            == [b.sub, b.tax, b.total, b.due, b.paid];
                    assert!(same, "seed {seed} org {index} invoice {i}: {a:?} != {b:?}");
                }
            }
        }
        let org = Org::seed(3, 1, 400, 1_767_225_600_000);
        let extra = [
            "Contact.ContactID",
            "contact.name",
            "Contact.Foo",
            "Contact",
            "Foo",
            "LineItems",
            "Payments",
            "Total.X",
            "STATUS",
            "FullyPaidOnDate",
        ];
        for i in 0..400 {
            let v = org.seeded_invoice(i);
            let view = org.invoice_view(i);
            let keys = v.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>());
            for k in keys
                .unwrap_or_default()
                .into_iter()
                .chain(extra.iter().map(|s| (*s).to_owned()))
            {
                let path: Vec<String> = k.split('.').map(str::to_owned).collect();
                assert_eq!(view.field(&path), v.field(&path), "invoice {i} field {k}");
            }
        }
    }

    /// The list answer computed the plain way: every record's JSON, filtered and sorted.
    fn reference_list(org: &Org, kind: Kind, q: &ListQuery) -> (Vec<Value>, usize) {
        let (mut all, total) = org.scan(kind, q, 0, usize::MAX);
        if !q.order.is_empty() {
            let keys = |v: &Value| {
                let mut k = Vec::new();
                q.push_order_keys(v, &mut k);
                k
            };
            all.sort_by(|a, b| compare_keys(&q.order, &keys(a), &keys(b)));
        }
        let size = q.page_size.max(1);
        let skip = q.page.map_or(0, |p| (p.max(1) - 1) * size);
        let take = if q.page.is_some() { size } else { usize::MAX };
        (all.into_iter().skip(skip).take(take).collect(), total)
    }

    #[test]
    fn lists_agree_with_plain_filtering() {
        use super::super::query::{parse_order, parse_where};
        let mut org = Org::seed(5, 0, 200, 1_767_225_600_000);
        let now = 1_767_225_600_000 + 5_000;
        for i in [0usize, 2, 43, 150, 196] {
            let id = org.seeded_id(Kind::Invoice, i);
            let el = json!({"InvoiceID": id, "Reference": format!("changed {i}")});
            let written = org.write(Kind::Invoice, Verb::Post, &el, None, now, false);
            assert!(written.is_ok(), "{written:?}");
        }
        let paid = org
            .all(Kind::Invoice)
            .into_iter()
            .find(|v| str_of(v, "Status") == Some("AUTHORISED") && !v["Total"].is_null())
            .and_then(|v| str_of(&v, "InvoiceID").map(str::to_owned))
            .unwrap_or_default();
        assert!(org.pay(&paid, Decimal::ONE, now + 1_000).is_ok());
        let wheres = [
            "",
            "Total>=500",
            r#"Status=="PAID" OR Status == "VOIDED""#,
            r#"Contact.Name.Contains("acme")"#,
            "Date >= DateTime(2025, 12, 20) AND AmountDue > 0",
            r#"Reference.StartsWith("changed")"#,
            r#"Type == "ACCPAY" && NOT (SubTotal < 100)"#,
            "FullyPaidOnDate != null",
            r#"InvoiceNumber == "INV-0010""#,
            "HasErrors",
            "LineItems == null",
        ];
        let orders = ["", "Total DESC", "Contact.Name, Date DESC", "InvoiceNumber"];
        let since = [None, Some(org.coll(Kind::Invoice).updated(120) + 500)];
        let id3 = org.seeded_id(Kind::Invoice, 3).to_ascii_uppercase();
        let mut checked = 0;
        for w in wheres {
            for o in orders {
                for s in since {
                    for page in [None, Some(2)] {
                        for statuses in [vec![], vec!["paid".to_owned(), "AUTHORISED".to_owned()]] {
                            let q = ListQuery {
                                page,
                                page_size: 25,
                                since_ms: s,
                                filter: (!w.is_empty()).then(|| parse_where(w).ok()).flatten(),
                                order: parse_order(o).unwrap_or_default(),
                                statuses,
                                ..ListQuery::default()
                            };
                            let (want, total) = reference_list(&org, Kind::Invoice, &q);
                            let (got, pagination) = org.list(Kind::Invoice, &q).unwrap_or_default();
                            let got: Vec<Value> = got
                                .iter()
                                .map(|b| serde_json::from_slice(b).unwrap_or_default())
                                .collect();
                            let want: Vec<Value> = want
                                .into_iter()
                                .map(|mut v| {
                                    if page.is_none()
                                        && let Some(m) = v.as_object_mut()
                                    {
                                        m.remove("LineItems");
                                    }
                                    v
                                })
                                .collect();
                            assert_eq!(
                                got, want,
                                "where {w:?} order {o:?} since {s:?} page {page:?}"
                            );
                            if let Some(p) = pagination {
                                assert_eq!(p.item_count, total);
                            }
                            checked += usize::from(!want.is_empty());
                        }
                    }
                }
            }
        }
        assert!(checked > 100);
        let contact = org.seeded_id(Kind::Contact, 4);
        let el = json!({"ContactID": contact, "Name": "Renamed Ltd"});
        let written = org.write(Kind::Contact, Verb::Post, &el, None, now, false);
        assert!(written.is_ok(), "{written:?}");
        for (kind, w, o) in [
            (Kind::Contact, "", ""),
            (Kind::Contact, r#"Name.StartsWith("a")"#, ""),
            (Kind::Contact, "", "Name DESC"),
            (Kind::Contact, "IsSupplier == true", "EmailAddress"),
            (Kind::Payment, "Amount > 100", ""),
            (Kind::Payment, "", "Amount DESC"),
            (Kind::Item, "", "Code"),
        ] {
            for include_archived in [false, true] {
                for page in [None, Some(2)] {
                    let q = ListQuery {
                        page,
                        page_size: 7,
                        filter: (!w.is_empty()).then(|| parse_where(w).ok()).flatten(),
                        order: parse_order(o).unwrap_or_default(),
                        include_archived,
                        ..ListQuery::default()
                    };
                    let (want, total) = reference_list(&org, kind, &q);
                    let (got, pagination) = org.list(kind, &q).unwrap_or_default();
                    let got: Vec<Value> = got
                        .iter()
                        .map(|b| serde_json::from_slice(b).unwrap_or_default())
                        .collect();
                    assert_eq!(got, want, "{kind:?} where {w:?} order {o:?}");
                    assert!(!want.is_empty() || page.is_some(), "{kind:?} {w:?}");
                    if let Some(p) = pagination {
                        assert_eq!(p.item_count, total);
                    }
                }
            }
        }
        let contact = org.seeded_invoice(5)["Contact"]["ContactID"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_uppercase();
        for (ids, numbers, contact_ids) in [
            (vec![id3.clone()], vec!["inv-0003".to_owned()], vec![]),
            (vec![], vec!["inv-0004".to_owned()], vec![]),
            (vec![], vec![], vec![contact.clone(), "nope".to_owned()]),
        ] {
            let q = ListQuery {
                page: Some(1),
                page_size: 10,
                ids,
                numbers,
                contact_ids,
                ..ListQuery::default()
            };
            let (want, _) = reference_list(&org, Kind::Invoice, &q);
            let (got, _) = org.list(Kind::Invoice, &q).unwrap_or_default();
            let got: Vec<Value> = got
                .iter()
                .map(|b| serde_json::from_slice(b).unwrap_or_default())
                .collect();
            assert!(!want.is_empty());
            assert_eq!(got, want);
        }
    }

    #[test]
    fn indexed_ids_read_back() {
        let p = "0a1b2c3d-4e5f-4a6b-8c7d-";
        for i in [0usize, 9, 255, 999_999] {
            let id = indexed_id(p, i);
            assert_eq!(indexed_id_index(p, &id), Some(i));
            assert_eq!(indexed_id_index(p, &id.to_ascii_uppercase()), Some(i));
            assert_eq!(indexed_id_index(p, &format!("{id}0")), None);
        }
        assert_eq!(indexed_id_index(p, &format!("{p}+0000000000a")), None);
        assert_eq!(indexed_id_index(p, "short"), None);
    }

    #[test]
    fn nth_unmoved_skips_moved() {
        let mut org = Org::seed(1, 0, 50, 1_767_225_600_000);
        let c = &mut org.colls[Kind::Invoice.slot()];
        c.moved.extend([0, 3, 4, 9]);
        let got: Vec<usize> = (0..6).map(|k| c.nth_unmoved(0, k)).collect();
        assert_eq!(got, [1, 2, 5, 6, 7, 8]);
        assert_eq!(c.nth_unmoved(3, 0), 5);
        assert_eq!(c.unmoved_from(0), 46);
    }
}
