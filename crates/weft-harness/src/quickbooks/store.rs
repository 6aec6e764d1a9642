//! One company's records and QuickBooks' rules for them: creates, full and sparse updates checked
//! against the SyncToken, deletes and voids, invoices priced from their lines, payments applied
//! to invoices, names kept unique, references checked (to records that exist, are active and, in a
//! batch, existed before it), queries answered; and the seeded data.

use std::collections::{BTreeMap, HashMap};

use rust_decimal::Decimal;
use serde_json::{Map, Value, json};

use super::query::{SortKey, Statement, sort_key};
use super::util::{QbError, add_days, decimal, local_date, meta_time, mix, money, round2};

/// The entities the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Customers (name list).
    Customer,
    /// Sales invoices (transactions).
    Invoice,
    /// Payments received (transactions).
    Payment,
    /// Products and services (name list).
    Item,
    /// The chart of accounts (name list).
    Account,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Self; 5] = [
        Self::Customer,
        Self::Invoice,
        Self::Payment,
        Self::Item,
        Self::Account,
    ];

    /// The entity's name in bodies and queries (`Invoice`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Customer => "Customer",
            Self::Invoice => "Invoice",
            Self::Payment => "Payment",
            Self::Item => "Item",
            Self::Account => "Account",
        }
    }

    /// The entity's name in paths (`invoice`).
    pub fn path(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Invoice => "invoice",
            Self::Payment => "payment",
            Self::Item => "item",
            Self::Account => "account",
        }
    }

    /// The kind named `name` in a body or query (case sensitive, as QuickBooks is).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The kind of a path segment (lower case).
    pub(crate) fn from_path(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.path() == path)
    }

    /// Name lists are never deleted, only made inactive, and queries hide inactive ones.
    fn name_list(self) -> bool {
        matches!(self, Self::Customer | Self::Item | Self::Account)
    }

    /// Every top-level property a body may carry (others are refused with 2010).
    fn properties(self) -> &'static [&'static str] {
        match self {
            Self::Customer => &[
                "Id",
                "SyncToken",
                "MetaData",
                "domain",
                "sparse",
                "DisplayName",
                "Title",
                "GivenName",
                "MiddleName",
                "FamilyName",
                "Suffix",
                "CompanyName",
                "PrintOnCheckName",
                "PrimaryEmailAddr",
                "PrimaryPhone",
                "Mobile",
                "Fax",
                "WebAddr",
                "BillAddr",
                "ShipAddr",
                "Notes",
                "Active",
                "Taxable",
                "PreferredDeliveryMethod",
                "Job",
                "ParentRef",
                "BillWithParent",
                "Level",
                "FullyQualifiedName",
                "Balance",
                "BalanceWithJobs",
                "CurrencyRef",
                "SalesTermRef",
                "PaymentMethodRef",
                "ResaleNum",
                "DefaultTaxCodeRef",
            ],
            Self::Invoice => &[
                "Id",
                "SyncToken",
                "MetaData",
                "domain",
                "sparse",
                "DocNumber",
                "TxnDate",
                "DueDate",
                "PrivateNote",
                "EmailStatus",
                "PrintStatus",
                "ExchangeRate",
                "ApplyTaxAfterDiscount",
                "TotalAmt",
                "Balance",
                "HomeTotalAmt",
                "LinkedTxn",
                "TxnTaxDetail",
                "CustomerRef",
                "CurrencyRef",
                "BillEmail",
                "BillEmailCc",
                "BillEmailBcc",
                "CustomerMemo",
                "SalesTermRef",
                "Line",
                "BillAddr",
                "ShipAddr",
                "ShipDate",
                "TrackingNum",
                "ClassRef",
                "DepartmentRef",
                "CustomField",
                "AllowOnlineCreditCardPayment",
                "AllowOnlineACHPayment",
                "DeliveryInfo",
                "GlobalTaxCalculation",
            ],
            Self::Payment => &[
                "Id",
                "SyncToken",
                "MetaData",
                "domain",
                "sparse",
                "TotalAmt",
                "TxnDate",
                "PaymentRefNum",
                "PrivateNote",
                "ExchangeRate",
                "ProcessPayment",
                "UnappliedAmt",
                "CustomerRef",
                "DepositToAccountRef",
                "PaymentMethodRef",
                "CurrencyRef",
                "Line",
                "ARAccountRef",
                "CreditCardPayment",
            ],
            Self::Item => &[
                "Id",
                "SyncToken",
                "MetaData",
                "domain",
                "sparse",
                "Name",
                "Sku",
                "Description",
                "PurchaseDesc",
                "Type",
                "UnitPrice",
                "PurchaseCost",
                "Taxable",
                "Active",
                "TrackQtyOnHand",
                "QtyOnHand",
                "InvStartDate",
                "SubItem",
                "FullyQualifiedName",
                "IncomeAccountRef",
                "ExpenseAccountRef",
                "AssetAccountRef",
                "ParentRef",
                "Level",
                "SalesTaxCodeRef",
                "ClassRef",
            ],
            Self::Account => &[
                "Id",
                "SyncToken",
                "MetaData",
                "domain",
                "sparse",
                "Name",
                "AcctNum",
                "Description",
                "AccountType",
                "AccountSubType",
                "Classification",
                "Active",
                "SubAccount",
                "FullyQualifiedName",
                "CurrentBalance",
                "CurrentBalanceWithSubAccounts",
                "ParentRef",
                "CurrencyRef",
                "TaxCodeRef",
            ],
        }
    }

    /// Properties QuickBooks sets itself; what a body sends for them is ignored.
    fn computed(self) -> &'static [&'static str] {
        match self {
            Self::Customer => &["Balance", "BalanceWithJobs", "FullyQualifiedName", "Level"],
            Self::Invoice => &["TotalAmt", "Balance", "HomeTotalAmt", "LinkedTxn"],
            Self::Payment => &["UnappliedAmt"],
            Self::Item => &["FullyQualifiedName", "Level"],
            Self::Account => &[
                "Classification",
                "FullyQualifiedName",
                "CurrentBalance",
                "CurrentBalanceWithSubAccounts",
            ],
        }
    }
}

/// What a write does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Create,
    Update,
    Delete,
    Void,
}

type Faults = Vec<QbError>;

/// One company.
pub(crate) struct Company {
    pub(crate) realm: String,
    pub(crate) name: String,
    records: HashMap<Kind, BTreeMap<u64, Value>>,
    next_id: HashMap<Kind, u64>,
    next_doc: u64,
    /// Inside a batch: the next id of each kind when it started; records made by the batch are
    /// not visible to its later items.
    horizon: Option<HashMap<Kind, u64>>,
    info: Value,
    /// Records created through the API, by kind.
    pub(crate) created: HashMap<Kind, u64>,
}

fn id_of(v: &Value) -> Option<u64> {
    v.get("Id")?.as_str()?.parse().ok()
}

fn text<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn ref_id(v: &Value, key: &str) -> Option<String> {
    let r = v.get(key)?;
    match r {
        Value::Object(m) => match m.get("value")? {
            Value::String(s) => Some(s.trim().to_owned()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        },
        _ => None,
    }
}

fn bump(record: &mut Value, now: u64) {
    let next = record
        .get("SyncToken")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(0, |n| n + 1);
    record["SyncToken"] = json!(next.to_string());
    if let Some(meta) = record.get_mut("MetaData").and_then(Value::as_object_mut) {
        meta.insert("LastUpdatedTime".into(), json!(meta_time(now)));
    }
}

fn classification(account_type: &str) -> &'static str {
    match account_type {
        "Bank" | "Other Current Asset" | "Fixed Asset" | "Other Asset" | "Accounts Receivable" => {
            "Asset"
        }
        "Equity" => "Equity",
        "Expense" | "Other Expense" | "Cost of Goods Sold" => "Expense",
        "Accounts Payable" | "Credit Card" | "Long Term Liability" | "Other Current Liability" => {
            "Liability"
        }
        _ => "Revenue",
    }
}

const ACCOUNT_TYPES: [&str; 15] = [
    "Bank",
    "Other Current Asset",
    "Fixed Asset",
    "Other Asset",
    "Accounts Receivable",
    "Equity",
    "Expense",
    "Other Expense",
    "Cost of Goods Sold",
    "Accounts Payable",
    "Credit Card",
    "Long Term Liability",
    "Other Current Liability",
    "Income",
    "Other Income",
];

impl Company {
    fn empty(realm: String, name: String, now: u64) -> Self {
        let info = json!({
            "Id": "1",
            "SyncToken": "4",
            "CompanyName": name,
            "LegalName": format!("{name} LLC"),
            "CompanyAddr": {"Id": "1", "Line1": "123 Sierra Way", "City": "San Pablo", "CountrySubDivisionCode": "CA", "PostalCode": "87999"},
            "Country": "US",
            "Email": {"Address": "books@example.com"},
            "CompanyStartDate": "2020-01-01",
            "FiscalYearStartMonth": "January",
            "SupportedLanguages": "en",
            "domain": "QBO",
            "sparse": false,
            "MetaData": {"CreateTime": meta_time(now.saturating_sub(6 * 365 * 86_400_000)), "LastUpdatedTime": meta_time(now.saturating_sub(86_400_000))},
        });
        Self {
            realm,
            name,
            records: Kind::ALL.iter().map(|k| (*k, BTreeMap::new())).collect(),
            next_id: HashMap::new(),
            next_doc: 1001,
            horizon: None,
            info,
            created: HashMap::new(),
        }
    }

    /// The company's own record (`CompanyInfo`).
    pub(crate) fn info(&self) -> &Value {
        &self.info
    }

    fn map(&self, kind: Kind) -> &BTreeMap<u64, Value> {
        &self.records[&kind]
    }

    fn map_mut(&mut self, kind: Kind) -> &mut BTreeMap<u64, Value> {
        self.records.entry(kind).or_default()
    }

    /// A record by id, whatever its state.
    pub(crate) fn get(&self, kind: Kind, id: &str) -> Option<&Value> {
        self.map(kind).get(&id.trim().parse().ok()?)
    }

    /// Every record of a kind in id order, inactive ones included.
    pub(crate) fn all(&self, kind: Kind) -> Vec<Value> {
        self.map(kind).values().cloned().collect()
    }

    /// Starts a batch: what its items create is invisible to the items after them.
    pub(crate) fn begin_batch(&mut self) {
        self.horizon = Some(
            Kind::ALL
                .iter()
                .map(|k| (*k, self.next_id.get(k).copied().unwrap_or(1)))
                .collect(),
        );
    }

    /// Ends a batch.
    pub(crate) fn end_batch(&mut self) {
        self.horizon = None;
    }

    /// A record another one refers to: it must exist (and, in a batch, have existed before the
    /// batch) and, for a name list, be active.
    fn referenced(&self, kind: Kind, id: &str, what: &str) -> Result<&Value, QbError> {
        let n: u64 = id.parse().map_err(|_| QbError::not_found(what))?;
        if self
            .horizon
            .as_ref()
            .is_some_and(|h| n >= h.get(&kind).copied().unwrap_or(1))
        {
            return Err(QbError::not_found(what));
        }
        match self.map(kind).get(&n) {
            Some(r) if !kind.name_list() || r["Active"] != json!(false) => Ok(r),
            _ => Err(QbError::not_found(what)),
        }
    }

    fn allocate(&mut self, kind: Kind) -> u64 {
        let start = match kind {
            Kind::Invoice => 130,
            Kind::Payment => 1000,
            _ => 1,
        };
        let next = self.next_id.entry(kind).or_insert(start);
        let id = *next;
        *next += 1;
        id
    }

    // ------------------------------------------------------------------------------------------
    // Queries
    // ------------------------------------------------------------------------------------------

    /// The `QueryResponse` of a statement, or why QuickBooks would refuse it.
    pub(crate) fn query(&self, s: &Statement) -> Result<Value, String> {
        let records: Vec<&Value> = if s.entity == "CompanyInfo" {
            vec![&self.info]
        } else {
            let kind = Kind::from_name(&s.entity).ok_or_else(|| {
                format!(
                    "QueryValidationError: the entity {} is not supported",
                    s.entity
                )
            })?;
            let known = |p: &str| {
                let top = p.split('.').next().unwrap_or_default();
                kind.properties().contains(&top)
            };
            for p in s
                .conditions
                .iter()
                .map(|c| c.property.as_str())
                .chain(s.order.iter().map(|(p, _)| p.as_str()))
            {
                if !known(p) {
                    return Err(format!(
                        "QueryValidationError: property '{p}' is not queryable"
                    ));
                }
            }
            let hides_inactive = kind.name_list()
                && !s
                    .conditions
                    .iter()
                    .any(|c| c.property.eq_ignore_ascii_case("Active"));
            let found: Vec<&Value> = self
                .map(kind)
                .values()
                .filter(|r| !hides_inactive || r["Active"] != json!(false))
                .filter(|r| s.conditions.iter().all(|c| c.matches(r)))
                .collect();
            // Stable: records equal in every ordering property stay in id order. Each record's
            // keys are computed once.
            let mut keyed: Vec<(Vec<SortKey>, &Value)> = found
                .into_iter()
                .map(|r| (s.order.iter().map(|(p, _)| sort_key(r, p)).collect(), r))
                .collect();
            keyed.sort_by(|(a, _), (b, _)| {
                a.iter()
                    .zip(b)
                    .zip(&s.order)
                    .map(|((x, y), (_, desc))| if *desc { y.cmp(x) } else { x.cmp(y) })
                    .find(|o| o.is_ne())
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            keyed.into_iter().map(|(_, r)| r).collect()
        };
        if s.count {
            return Ok(json!({"totalCount": records.len()}));
        }
        let page: Vec<Value> = records
            .into_iter()
            .skip(s.start.saturating_sub(1))
            .take(s.max)
            .cloned()
            .collect();
        if page.is_empty() {
            return Ok(json!({}));
        }
        let name = if s.entity == "CompanyInfo" {
            "CompanyInfo"
        } else {
            s.entity.as_str()
        };
        Ok(json!({name: page, "startPosition": s.start, "maxResults": page.len()}))
    }

    // ------------------------------------------------------------------------------------------
    // Writes
    // ------------------------------------------------------------------------------------------

    /// A write of `kind` through the API: the record as QuickBooks returns it, or the errors of
    /// its `Fault`.
    pub(crate) fn write(
        &mut self,
        kind: Kind,
        op: Op,
        body: &Value,
        now: u64,
    ) -> Result<Value, Faults> {
        let result = self.apply(kind, op, body, now);
        if result.is_ok() && op == Op::Create {
            *self.created.entry(kind).or_default() += 1;
        }
        result
    }

    /// A write as someone working in QuickBooks makes it (not counted as made through the API).
    pub(crate) fn apply(
        &mut self,
        kind: Kind,
        op: Op,
        body: &Value,
        now: u64,
    ) -> Result<Value, Faults> {
        let Some(object) = body.as_object() else {
            return Err(vec![QbError::new(
                "2010",
                "Request has invalid or unsupported property",
                format!("The body must be one {} object", kind.name()),
            )]);
        };
        if matches!(op, Op::Create | Op::Update) {
            let unknown: Faults = object
                .keys()
                .filter(|k| !kind.properties().contains(&k.as_str()))
                .map(|k| QbError::unsupported(k))
                .collect();
            if !unknown.is_empty() {
                return Err(unknown);
            }
        }
        match op {
            Op::Create => self.create(kind, object, now),
            Op::Update => self.update(kind, object, now),
            Op::Delete => self.delete(kind, object, now),
            Op::Void => self.void(kind, object, now),
        }
    }

    /// The current record a write names by `Id` and `SyncToken`.
    fn current(&self, kind: Kind, body: &Map<String, Value>) -> Result<(u64, Value), Faults> {
        let id = match body.get("Id") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(vec![QbError::required("Id")]),
        };
        let Some(n) = id
            .parse::<u64>()
            .ok()
            .filter(|n| self.map(kind).contains_key(n))
        else {
            return Err(vec![QbError::not_found(&format!("{} {id}", kind.name()))]);
        };
        let token = match body.get("SyncToken") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(vec![QbError::required("SyncToken")]),
        };
        let record = self.map(kind)[&n].clone();
        if record["SyncToken"].as_str() != Some(token.as_str()) {
            return Err(vec![QbError::stale()]);
        }
        Ok((n, record))
    }

    /// The body without what QuickBooks sets itself.
    fn writable(kind: Kind, body: &Map<String, Value>) -> Map<String, Value> {
        body.iter()
            .filter(|(k, _)| {
                !["Id", "SyncToken", "MetaData", "domain", "sparse"].contains(&k.as_str())
                    && !kind.computed().contains(&k.as_str())
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn create(&mut self, kind: Kind, body: &Map<String, Value>, now: u64) -> Result<Value, Faults> {
        let mut record = Value::Object(Self::writable(kind, body));
        self.prepare(kind, &mut record, None, now)?;
        let id = self.allocate(kind);
        record["Id"] = json!(id.to_string());
        record["SyncToken"] = json!("0");
        record["domain"] = json!("QBO");
        record["sparse"] = json!(false);
        record["MetaData"] =
            json!({"CreateTime": meta_time(now), "LastUpdatedTime": meta_time(now)});
        if kind == Kind::Payment {
            self.apply_payment(id, &record, now)?;
        }
        self.map_mut(kind).insert(id, record.clone());
        self.after_change(kind, &record);
        Ok(record)
    }

    fn update(&mut self, kind: Kind, body: &Map<String, Value>, now: u64) -> Result<Value, Faults> {
        let (id, old) = self.current(kind, body)?;
        let sparse = body.get("sparse").and_then(Value::as_bool).unwrap_or(false);
        let given = Self::writable(kind, body);
        let mut record = if sparse {
            let mut merged = old.clone();
            for (k, v) in given {
                merged[k.as_str()] = v;
            }
            merged
        } else {
            // A full update replaces every property it may write; the rest stays QuickBooks'.
            let mut fresh = Map::new();
            for key in ["Id", "SyncToken", "MetaData", "domain", "sparse"]
                .iter()
                .chain(kind.computed())
            {
                if let Some(v) = old.get(*key) {
                    fresh.insert((*key).to_owned(), v.clone());
                }
            }
            fresh.extend(given);
            Value::Object(fresh)
        };
        if kind == Kind::Payment {
            self.unapply_payment(id, &old, now);
        }
        if let Err(e) = self.prepare(kind, &mut record, Some(&old), now) {
            if kind == Kind::Payment {
                let _ = self.apply_payment(id, &old, now);
            }
            return Err(e);
        }
        if kind == Kind::Payment
            && let Err(e) = self.apply_payment(id, &record, now)
        {
            let _ = self.apply_payment(id, &old, now);
            return Err(e);
        }
        bump(&mut record, now);
        record["sparse"] = json!(false);
        self.map_mut(kind).insert(id, record.clone());
        self.after_change(kind, &record);
        Ok(record)
    }

    fn delete(&mut self, kind: Kind, body: &Map<String, Value>, now: u64) -> Result<Value, Faults> {
        if kind.name_list() {
            return Err(vec![QbError::new(
                "500",
                "Unsupported Operation",
                format!(
                    "Operation Delete is not supported for {}: make it inactive instead",
                    kind.name()
                ),
            )]);
        }
        let (id, old) = self.current(kind, body)?;
        if kind == Kind::Invoice && has_payments(&old) {
            return Err(vec![QbError::business(
                "This invoice has payments applied to it. Delete or void the payments first.",
            )]);
        }
        if kind == Kind::Payment {
            self.unapply_payment(id, &old, now);
        }
        self.map_mut(kind).remove(&id);
        self.after_change(kind, &old);
        Ok(json!({"status": "Deleted", "domain": "QBO", "Id": id.to_string()}))
    }

    fn void(&mut self, kind: Kind, body: &Map<String, Value>, now: u64) -> Result<Value, Faults> {
        if !matches!(kind, Kind::Invoice | Kind::Payment) {
            return Err(vec![QbError::new(
                "500",
                "Unsupported Operation",
                format!("Operation Void is not supported for {}", kind.name()),
            )]);
        }
        let (id, mut record) = self.current(kind, body)?;
        if kind == Kind::Invoice && has_payments(&record) {
            return Err(vec![QbError::business(
                "This invoice has payments applied to it. Delete or void the payments first.",
            )]);
        }
        if kind == Kind::Payment {
            self.unapply_payment(id, &record, now);
            record["UnappliedAmt"] = json!(0);
        } else {
            record["Balance"] = json!(0);
        }
        record["TotalAmt"] = json!(0);
        if let Some(lines) = record.get_mut("Line").and_then(Value::as_array_mut) {
            for line in lines {
                line["Amount"] = json!(0);
                if let Some(d) = line
                    .get_mut("SalesItemLineDetail")
                    .and_then(Value::as_object_mut)
                {
                    d.insert("Qty".into(), json!(0));
                    d.insert("UnitPrice".into(), json!(0));
                }
            }
        }
        let note = match text(&record, "PrivateNote") {
            Some(n) => format!("Voided - {n}"),
            None => "Voided".to_owned(),
        };
        record["PrivateNote"] = json!(note);
        bump(&mut record, now);
        self.map_mut(kind).insert(id, record.clone());
        self.after_change(kind, &record);
        Ok(record)
    }

    /// E-mails an invoice: it needs an address; its EmailStatus becomes EmailSent.
    pub(crate) fn send(&mut self, id: &str, to: Option<&str>, now: u64) -> Result<Value, Faults> {
        let Some(n) = id
            .parse::<u64>()
            .ok()
            .filter(|n| self.map(Kind::Invoice).contains_key(n))
        else {
            return Err(vec![QbError::not_found(&format!("Invoice {id}"))]);
        };
        let mut record = self.map(Kind::Invoice)[&n].clone();
        let address = to
            .map(str::to_owned)
            .or_else(|| {
                record
                    .pointer("/BillEmail/Address")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .filter(|a| a.contains('@'));
        let Some(address) = address else {
            return Err(vec![QbError::business(
                "Invoice has no e-mail address (BillEmail) and none was given in sendTo.",
            )]);
        };
        record["EmailStatus"] = json!("EmailSent");
        record["BillEmail"] = json!({"Address": address});
        record["DeliveryInfo"] = json!({"DeliveryType": "Email", "DeliveryTime": meta_time(now)});
        bump(&mut record, now);
        self.map_mut(Kind::Invoice).insert(n, record.clone());
        Ok(record)
    }

    /// Checks and completes a record about to be written (`old`: the record an update replaces).
    fn prepare(
        &mut self,
        kind: Kind,
        record: &mut Value,
        old: Option<&Value>,
        now: u64,
    ) -> Result<(), Faults> {
        match kind {
            Kind::Customer => self.prepare_customer(record, old),
            Kind::Invoice => self.prepare_invoice(record, old, now),
            Kind::Payment => self.prepare_payment(record, now),
            Kind::Item => self.prepare_item(record, old),
            Kind::Account => self.prepare_account(record, old),
        }
    }

    fn unique(
        &self,
        kind: Kind,
        field: &str,
        name: &str,
        old: Option<&Value>,
    ) -> Result<(), QbError> {
        let mine = old.and_then(id_of);
        let taken = self.map(kind).iter().any(|(id, r)| {
            Some(*id) != mine
                && r.get(field)
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.trim().eq_ignore_ascii_case(name.trim()))
        });
        if taken {
            let who = match kind {
                Kind::Customer => {
                    "Another customer, vendor or employee is already using this name. Please use a different name."
                }
                Kind::Item => {
                    "Another product or service is already using this name. Please use a different name."
                }
                _ => "Another account is already using this name. Please use a different name.",
            };
            return Err(QbError::duplicate_name(who).at(field));
        }
        Ok(())
    }

    fn prepare_customer(&mut self, r: &mut Value, old: Option<&Value>) -> Result<(), Faults> {
        let parts: Vec<&str> = ["Title", "GivenName", "MiddleName", "FamilyName", "Suffix"]
            .iter()
            .filter_map(|k| text(r, k))
            .collect();
        let display = match text(r, "DisplayName") {
            Some(d) => d.to_owned(),
            None if !parts.is_empty() => parts.join(" "),
            None => {
                return Err(vec![QbError::new(
                    "6080",
                    "No Name Provided",
                    "Title, GivenName, MiddleName, FamilyName, DisplayName, Suffix - one of these must be non-empty",
                )]);
            }
        };
        if display.contains(':') {
            return Err(vec![
                QbError::business("The name cannot contain a colon (:).").at("DisplayName"),
            ]);
        }
        self.unique(Kind::Customer, "DisplayName", &display, old)
            .map_err(|e| vec![e])?;
        if let Some(parent) = ref_id(r, "ParentRef") {
            self.referenced(Kind::Customer, &parent, "ParentRef")
                .map_err(|e| vec![e])?;
        }
        r["DisplayName"] = json!(display);
        r["FullyQualifiedName"] = json!(display);
        for (key, default) in [
            ("Active", json!(true)),
            ("Taxable", json!(false)),
            ("Job", json!(false)),
            ("BillWithParent", json!(false)),
            ("PreferredDeliveryMethod", json!("Print")),
            (
                "CurrencyRef",
                json!({"value": "USD", "name": "United States Dollar"}),
            ),
        ] {
            if r.get(key).is_none_or(Value::is_null) {
                r[key] = default;
            }
        }
        r["Level"] = json!(0);
        for key in ["Balance", "BalanceWithJobs"] {
            r[key] = old.and_then(|o| o.get(key).cloned()).unwrap_or(json!(0));
        }
        Ok(())
    }

    fn prepare_invoice(
        &mut self,
        r: &mut Value,
        old: Option<&Value>,
        now: u64,
    ) -> Result<(), Faults> {
        let mut errors = Faults::new();
        let customer = match ref_id(r, "CustomerRef") {
            None => {
                errors.push(QbError::required("CustomerRef"));
                None
            }
            Some(c) => match self.referenced(Kind::Customer, &c, "CustomerRef") {
                Ok(found) => Some((c, found["DisplayName"].clone())),
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
        };
        if let Some(doc) = text(r, "DocNumber")
            && doc.chars().count() > 21
        {
            errors
                .push(QbError::business("DocNumber may be at most 21 characters.").at("DocNumber"));
        }
        let lines = r
            .get("Line")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut priced = Vec::new();
        let mut subtotal = Decimal::ZERO;
        let mut discount = Decimal::ZERO;
        let mut next_line = lines
            .iter()
            .filter_map(|l| l.get("Id").and_then(Value::as_str)?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        for line in lines
            .iter()
            .filter(|l| l["DetailType"] != "SubTotalLineDetail")
        {
            let mut line = line.clone();
            let kind = line
                .get("DetailType")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let amount = line.get("Amount").and_then(decimal);
            match kind.as_str() {
                "SalesItemLineDetail" => {
                    let Some(amount) = amount else {
                        errors.push(QbError::required("Line.Amount"));
                        continue;
                    };
                    let detail = line
                        .get("SalesItemLineDetail")
                        .cloned()
                        .unwrap_or(json!({}));
                    match ref_id(&detail, "ItemRef") {
                        None => errors.push(QbError::required("Line.SalesItemLineDetail.ItemRef")),
                        Some(item) => match self.referenced(Kind::Item, &item, "ItemRef") {
                            Ok(found) => {
                                line["SalesItemLineDetail"]["ItemRef"]["name"] =
                                    found["Name"].clone();
                            }
                            Err(e) => errors.push(e),
                        },
                    }
                    let qty = detail.get("Qty").and_then(decimal);
                    let price = detail.get("UnitPrice").and_then(decimal);
                    if let (Some(q), Some(p)) = (qty, price)
                        && round2(q * p) != round2(amount)
                    {
                        errors.push(QbError::new(
                            "6070",
                            "Amount calculation incorrect in the request",
                            format!(
                                "Amount is not equal to UnitPrice * Qty. Supplied value:{amount}"
                            ),
                        ));
                    }
                    subtotal += round2(amount);
                    line["Amount"] = money(round2(amount));
                }
                "DescriptionOnly" => {
                    line["Amount"] = money(round2(amount.unwrap_or_default()));
                }
                "DiscountLineDetail" => {
                    let d = line.get("DiscountLineDetail").cloned().unwrap_or(json!({}));
                    let cut = if d["PercentBased"] == json!(true) {
                        round2(
                            subtotal
                                * d.get("DiscountPercent")
                                    .and_then(decimal)
                                    .unwrap_or_default()
                                / Decimal::ONE_HUNDRED,
                        )
                    } else {
                        round2(amount.unwrap_or_default())
                    };
                    discount += cut;
                    line["Amount"] = money(cut);
                }
                "" => {
                    errors.push(QbError::required("Line.DetailType"));
                    continue;
                }
                other => {
                    errors.push(
                        QbError::business(format!(
                            "Line.DetailType {other} is not supported here."
                        ))
                        .at("Line.DetailType"),
                    );
                    continue;
                }
            }
            if line.get("Id").and_then(Value::as_str).is_none() {
                line["Id"] = json!(next_line.to_string());
                next_line += 1;
            }
            priced.push(line);
        }
        if priced.is_empty() && errors.is_empty() {
            errors.push(QbError::business(
                "You must fill out at least one split line.",
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        for (n, line) in priced.iter_mut().enumerate() {
            line["LineNum"] = json!(n + 1);
        }
        priced.push(json!({"Amount": money(subtotal), "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}}));
        let total = subtotal - discount;
        let paid = old
            .and_then(id_of)
            .map(|id| self.paid_on(id))
            .unwrap_or_default();
        if total < paid {
            return Err(vec![QbError::business(format!(
                "The invoice total {total} would be less than the {paid} already paid on it."
            ))]);
        }
        if let Some((_, name)) = customer {
            r["CustomerRef"]["name"] = name;
        }
        r["Line"] = Value::Array(priced);
        r["TotalAmt"] = money(total);
        r["Balance"] = money(total - paid);
        r["LinkedTxn"] = old
            .and_then(|o| o.get("LinkedTxn").cloned())
            .unwrap_or(json!([]));
        if text(r, "DocNumber").is_none() {
            r["DocNumber"] = json!(self.next_doc.to_string());
            self.next_doc += 1;
        }
        if text(r, "TxnDate").is_none() {
            r["TxnDate"] = json!(local_date(now));
        }
        if text(r, "DueDate").is_none() {
            let due = add_days(r["TxnDate"].as_str().unwrap_or_default(), 30);
            r["DueDate"] = json!(due);
        }
        for (key, default) in [
            ("EmailStatus", json!("NotSet")),
            ("PrintStatus", json!("NotSet")),
            (
                "CurrencyRef",
                json!({"value": "USD", "name": "United States Dollar"}),
            ),
            ("TxnTaxDetail", json!({"TotalTax": 0})),
            ("ApplyTaxAfterDiscount", json!(false)),
        ] {
            if r.get(key).is_none_or(Value::is_null) {
                r[key] = default;
            }
        }
        Ok(())
    }

    fn prepare_payment(&mut self, r: &mut Value, now: u64) -> Result<(), Faults> {
        let mut errors = Faults::new();
        match ref_id(r, "CustomerRef") {
            None => errors.push(QbError::required("CustomerRef")),
            Some(c) => match self.referenced(Kind::Customer, &c, "CustomerRef") {
                Ok(found) => {
                    let name = found["DisplayName"].clone();
                    r["CustomerRef"]["name"] = name;
                }
                Err(e) => errors.push(e),
            },
        }
        let total = r.get("TotalAmt").and_then(decimal);
        if total.is_none() {
            errors.push(QbError::required("TotalAmt"));
        }
        if let Some(account) = ref_id(r, "DepositToAccountRef")
            && let Err(e) = self.referenced(Kind::Account, &account, "DepositToAccountRef")
        {
            errors.push(e);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let total = total.unwrap_or_default();
        if total < Decimal::ZERO {
            return Err(vec![
                QbError::business("TotalAmt may not be negative.").at("TotalAmt"),
            ]);
        }
        let applied = applied_by(r).map_err(|e| vec![e])?;
        let sum: Decimal = applied.iter().map(|(_, a)| *a).sum();
        if sum > total {
            return Err(vec![QbError::business(format!(
                "The payment's lines apply {sum}, more than its TotalAmt of {total}."
            ))]);
        }
        r["TotalAmt"] = money(round2(total));
        r["UnappliedAmt"] = money(round2(total - sum));
        if text(r, "TxnDate").is_none() {
            r["TxnDate"] = json!(local_date(now));
        }
        for (key, default) in [
            (
                "CurrencyRef",
                json!({"value": "USD", "name": "United States Dollar"}),
            ),
            ("ProcessPayment", json!(false)),
            ("Line", json!([])),
        ] {
            if r.get(key).is_none_or(Value::is_null) {
                r[key] = default;
            }
        }
        Ok(())
    }

    /// Applies a payment's lines to its invoices, all or none.
    fn apply_payment(&mut self, id: u64, payment: &Value, now: u64) -> Result<(), Faults> {
        let applied = applied_by(payment).map_err(|e| vec![e])?;
        let customer = ref_id(payment, "CustomerRef").unwrap_or_default();
        let mut errors = Faults::new();
        let mut per_invoice: BTreeMap<u64, Decimal> = BTreeMap::new();
        for (invoice, amount) in &applied {
            *per_invoice.entry(*invoice).or_default() += *amount;
        }
        for (invoice, amount) in &per_invoice {
            match self.referenced(Kind::Invoice, &invoice.to_string(), "LinkedTxn") {
                Err(e) => errors.push(e),
                Ok(found) => {
                    if ref_id(found, "CustomerRef").as_deref() != Some(customer.as_str()) {
                        errors.push(QbError::business(format!(
                            "Invoice {invoice} belongs to another customer than the payment."
                        )));
                    } else if found.get("Balance").and_then(decimal).unwrap_or_default() < *amount {
                        errors.push(QbError::business(format!(
                            "The amount applied to invoice {invoice} is more than its open balance."
                        )));
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        for (invoice, amount) in per_invoice {
            if let Some(inv) = self.map_mut(Kind::Invoice).get_mut(&invoice) {
                let balance = inv.get("Balance").and_then(decimal).unwrap_or_default() - amount;
                inv["Balance"] = money(round2(balance));
                let link = json!({"TxnId": id.to_string(), "TxnType": "Payment"});
                match inv.get_mut("LinkedTxn").and_then(Value::as_array_mut) {
                    Some(links) => links.push(link),
                    None => inv["LinkedTxn"] = json!([link]),
                }
                bump(inv, now);
            }
        }
        self.customer_balance(&customer);
        Ok(())
    }

    /// Gives a payment's invoices back what it paid.
    fn unapply_payment(&mut self, id: u64, payment: &Value, now: u64) {
        let key = id.to_string();
        let mut per_invoice: BTreeMap<u64, Decimal> = BTreeMap::new();
        for (invoice, amount) in applied_by(payment).unwrap_or_default() {
            *per_invoice.entry(invoice).or_default() += amount;
        }
        for (n, back) in per_invoice {
            if let Some(inv) = self.map_mut(Kind::Invoice).get_mut(&n) {
                if let Some(links) = inv.get_mut("LinkedTxn").and_then(Value::as_array_mut) {
                    links.retain(|t| !(t["TxnType"] == "Payment" && t["TxnId"] == key.as_str()));
                }
                let balance = inv.get("Balance").and_then(decimal).unwrap_or_default() + back;
                inv["Balance"] = money(round2(balance));
                bump(inv, now);
            }
        }
        if let Some(customer) = ref_id(payment, "CustomerRef") {
            self.customer_balance(&customer);
        }
    }

    /// What payments have paid on invoice `id`.
    fn paid_on(&self, id: u64) -> Decimal {
        self.map(Kind::Payment)
            .values()
            .flat_map(|p| applied_by(p).unwrap_or_default())
            .filter(|(invoice, _)| *invoice == id)
            .map(|(_, amount)| amount)
            .sum()
    }

    /// A customer's Balance: what its invoices leave open (QuickBooks does not count this as a
    /// change of the customer, so its SyncToken and LastUpdatedTime stay).
    fn customer_balance(&mut self, customer: &str) {
        let open: Decimal = self
            .map(Kind::Invoice)
            .values()
            .filter(|i| ref_id(i, "CustomerRef").as_deref() == Some(customer))
            .filter_map(|i| i.get("Balance").and_then(decimal))
            .sum();
        if let Some(c) = customer
            .parse::<u64>()
            .ok()
            .and_then(|n| self.map_mut(Kind::Customer).get_mut(&n))
        {
            c["Balance"] = money(round2(open));
            c["BalanceWithJobs"] = money(round2(open));
        }
    }

    fn after_change(&mut self, kind: Kind, record: &Value) {
        if kind == Kind::Invoice
            && let Some(c) = ref_id(record, "CustomerRef")
        {
            self.customer_balance(&c);
        }
    }

    fn prepare_item(&mut self, r: &mut Value, old: Option<&Value>) -> Result<(), Faults> {
        let Some(name) = text(r, "Name").map(str::to_owned) else {
            return Err(vec![QbError::required("Name")]);
        };
        if name.contains(':') {
            return Err(vec![
                QbError::business("The name cannot contain a colon (:).").at("Name"),
            ]);
        }
        self.unique(Kind::Item, "Name", &name, old)
            .map_err(|e| vec![e])?;
        let ty = text(r, "Type").unwrap_or("Service").to_owned();
        if !["Inventory", "Service", "NonInventory", "Group", "Category"].contains(&ty.as_str()) {
            return Err(vec![
                QbError::business(format!("Type {ty} is not a type of item.")).at("Type"),
            ]);
        }
        let mut errors = Faults::new();
        let needs: &[&str] = match ty.as_str() {
            "Service" | "NonInventory" => &["IncomeAccountRef"],
            "Inventory" => &[
                "IncomeAccountRef",
                "ExpenseAccountRef",
                "AssetAccountRef",
                "QtyOnHand",
                "InvStartDate",
            ],
            _ => &[],
        };
        for key in needs {
            if r.get(*key).is_none_or(Value::is_null) {
                errors.push(QbError::required(key));
            }
        }
        for key in ["IncomeAccountRef", "ExpenseAccountRef", "AssetAccountRef"] {
            if let Some(account) = ref_id(r, key) {
                match self.referenced(Kind::Account, &account, key) {
                    Ok(found) => r[key]["name"] = found["Name"].clone(),
                    Err(e) => errors.push(e),
                }
            }
        }
        if let Some(parent) = ref_id(r, "ParentRef")
            && let Err(e) = self.referenced(Kind::Item, &parent, "ParentRef")
        {
            errors.push(e);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        r["Type"] = json!(ty);
        r["FullyQualifiedName"] = json!(name);
        for (key, default) in [
            ("Active", json!(true)),
            ("Taxable", json!(false)),
            ("UnitPrice", json!(0)),
            ("TrackQtyOnHand", json!(ty == "Inventory")),
            ("SubItem", json!(false)),
        ] {
            if r.get(key).is_none_or(Value::is_null) {
                r[key] = default;
            }
        }
        r["Level"] = json!(0);
        Ok(())
    }

    fn prepare_account(&mut self, r: &mut Value, old: Option<&Value>) -> Result<(), Faults> {
        let Some(name) = text(r, "Name").map(str::to_owned) else {
            return Err(vec![QbError::required("Name")]);
        };
        if name.contains(':') || name.contains('"') {
            return Err(vec![
                QbError::business(
                    "The name of an account cannot contain double quotes (\") or colons (:).",
                )
                .at("Name"),
            ]);
        }
        self.unique(Kind::Account, "Name", &name, old)
            .map_err(|e| vec![e])?;
        let ty = text(r, "AccountType").map(str::to_owned);
        let sub = text(r, "AccountSubType").map(str::to_owned);
        let ty = match (ty, sub) {
            (None, None) => {
                return Err(vec![QbError::new(
                    "6010",
                    "Invalid Account.AccountType && Account.SubType",
                    "Either an Account.AccountType or an Account.AccountSubType must be specified",
                )]);
            }
            (Some(t), _) if !ACCOUNT_TYPES.contains(&t.as_str()) => {
                return Err(vec![
                    QbError::business(format!("{t} is not an account type.")).at("AccountType"),
                ]);
            }
            (Some(t), _) => t,
            // A detail type alone: the simulator knows the income ones it seeds, else Expense.
            (None, Some(s)) if s.contains("Income") => "Income".to_owned(),
            (None, Some(_)) => "Expense".to_owned(),
        };
        if let Some(parent) = ref_id(r, "ParentRef") {
            self.referenced(Kind::Account, &parent, "ParentRef")
                .map_err(|e| vec![e])?;
        }
        r["AccountType"] = json!(ty);
        r["Classification"] = json!(classification(&ty));
        r["FullyQualifiedName"] = json!(name);
        for (key, default) in [
            ("Active", json!(true)),
            ("SubAccount", json!(false)),
            (
                "CurrencyRef",
                json!({"value": "USD", "name": "United States Dollar"}),
            ),
        ] {
            if r.get(key).is_none_or(Value::is_null) {
                r[key] = default;
            }
        }
        for key in ["CurrentBalance", "CurrentBalanceWithSubAccounts"] {
            r[key] = old.and_then(|o| o.get(key).cloned()).unwrap_or(json!(0));
        }
        Ok(())
    }

    /// Changes a record as someone working in QuickBooks would (a new SyncToken, a new
    /// LastUpdatedTime), by a sparse update without SyncToken checks.
    pub(crate) fn edit(
        &mut self,
        kind: Kind,
        id: &str,
        patch: &Value,
        now: u64,
    ) -> Result<Value, Faults> {
        let current = self
            .get(kind, id)
            .cloned()
            .ok_or_else(|| vec![QbError::not_found(&format!("{} {id}", kind.name()))])?;
        let mut body = patch.as_object().cloned().unwrap_or_default();
        body.insert("Id".into(), current["Id"].clone());
        body.insert("SyncToken".into(), current["SyncToken"].clone());
        body.insert("sparse".into(), json!(true));
        self.update(kind, &body, now)
    }

    // ------------------------------------------------------------------------------------------
    // Seeding
    // ------------------------------------------------------------------------------------------

    /// Company `index` of seed `seed`: accounts, items, customers (a few inactive) and `size`
    /// invoices over the past year, about four in ten paid (some in part), every time before
    /// `now`.
    pub(crate) fn seed(seed: u64, index: usize, size: usize, now: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(mix(&[seed, index as u64, 0x0b0]));
        let realm = format!("9341{:012}", rng.u64(..1_000_000_000_000));
        let names = [
            "Larkspur Design Studio",
            "Harbour Lane Consulting",
            "Copperfield Engineering",
            "Bluegate Architects",
            "Meridian Advisory Group",
        ];
        let name = names[index % names.len()].to_owned();
        let mut c = Self::empty(realm, name, now);
        let day = 86_400_000u64;
        let start = now.saturating_sub(400 * day);
        let mut tick = start;
        let mut at = |step: u64| {
            tick += step;
            tick
        };
        let accounts = [
            ("Checking", "Bank", "Checking", true),
            ("Savings", "Bank", "Savings", true),
            (
                "Accounts Receivable (A/R)",
                "Accounts Receivable",
                "AccountsReceivable",
                true,
            ),
            (
                "Undeposited Funds",
                "Other Current Asset",
                "UndepositedFunds",
                true,
            ),
            ("Services", "Income", "ServiceFeeIncome", true),
            ("Consulting Income", "Income", "ServiceFeeIncome", true),
            (
                "Sales of Product Income",
                "Income",
                "SalesOfProductIncome",
                true,
            ),
            (
                "Cost of Goods Sold",
                "Cost of Goods Sold",
                "SuppliesMaterialsCogs",
                true,
            ),
            ("Inventory Asset", "Other Current Asset", "Inventory", true),
            ("Travel", "Expense", "Travel", true),
            (
                "Opening Balance Equity",
                "Equity",
                "OpeningBalanceEquity",
                true,
            ),
            ("Old Operating Account", "Bank", "Checking", false),
        ];
        for (n, ty, sub, active) in accounts {
            let t = at(3_600_000);
            let id = c.allocate(Kind::Account);
            c.map_mut(Kind::Account).insert(
                id,
                json!({
                    "Id": id.to_string(), "SyncToken": if active { "0" } else { "1" }, "Name": n,
                    "AccountType": ty, "AccountSubType": sub, "Classification": classification(ty),
                    "Active": active, "SubAccount": false, "FullyQualifiedName": n,
                    "CurrentBalance": 0, "CurrentBalanceWithSubAccounts": 0,
                    "CurrencyRef": {"value": "USD", "name": "United States Dollar"},
                    "domain": "QBO", "sparse": false,
                    "MetaData": {"CreateTime": meta_time(t), "LastUpdatedTime": meta_time(if active { t } else { t + 30 * day })},
                }),
            );
        }
        let items = [
            ("Hours", "Professional services by the hour", 150, 5, true),
            ("Consulting", "Advisory work", 200, 6, true),
            ("Design", "Design work", 120, 5, true),
            ("Training", "Training sessions", 900, 6, true),
            ("Travel", "Travel billed at cost", 1, 5, true),
            ("Materials", "Materials billed at cost", 25, 7, true),
            ("Retainer", "Monthly retainer", 2500, 6, true),
            (
                "Legacy Support",
                "Support plan no longer sold",
                80,
                5,
                false,
            ),
        ];
        for (n, desc, price, income, active) in items {
            let t = at(3_600_000);
            let id = c.allocate(Kind::Item);
            let income_name = c.map(Kind::Account)[&income]["Name"].clone();
            c.map_mut(Kind::Item).insert(
                id,
                json!({
                    "Id": id.to_string(), "SyncToken": if active { "0" } else { "1" }, "Name": n,
                    "Description": desc, "Type": "Service", "UnitPrice": price, "Taxable": false,
                    "Active": active, "TrackQtyOnHand": false, "SubItem": false, "Level": 0,
                    "FullyQualifiedName": n,
                    "IncomeAccountRef": {"value": income.to_string(), "name": income_name},
                    "domain": "QBO", "sparse": false,
                    "MetaData": {"CreateTime": meta_time(t), "LastUpdatedTime": meta_time(if active { t } else { t + 40 * day })},
                }),
            );
        }
        let first = [
            "Amy", "Bill", "Cathy", "Dylan", "Erin", "Felix", "Grace", "Hugo", "Iris", "Jonas",
            "Kara", "Liam",
        ];
        let last = [
            "Lauf", "Barry", "Chen", "Diaz", "Evans", "Fischer", "Gupta", "Hale", "Ito", "Jensen",
            "Kowalski", "Lopez",
        ];
        let trades = [
            "Bakery", "Builders", "Clinic", "Dental", "Florist", "Garage", "Hotel", "Kitchens",
            "Law", "Media",
        ];
        let customers = (size / 4).max(9);
        let mut active_customers = Vec::new();
        let mut taken = std::collections::HashSet::new();
        for n in 0..customers {
            let t = at(3 * 3_600_000);
            let id = c.allocate(Kind::Customer);
            let (g, f) = (
                first[n % first.len()],
                last[(n / first.len() + n) % last.len()],
            );
            let company = format!("{f} {}", trades[n % trades.len()]);
            let display = if taken.contains(&company) {
                format!("{company} {n}")
            } else {
                company.clone()
            };
            taken.insert(display.clone());
            let active = n % 9 != 8;
            c.map_mut(Kind::Customer).insert(
                id,
                json!({
                    "Id": id.to_string(), "SyncToken": if active { "0" } else { "1" },
                    "DisplayName": display, "GivenName": g, "FamilyName": f, "CompanyName": company,
                    "PrintOnCheckName": company, "FullyQualifiedName": display,
                    "PrimaryEmailAddr": {"Address": format!("{}.{}@example.com", g.to_lowercase(), f.to_lowercase())},
                    "BillAddr": {"Id": (100 + n).to_string(), "Line1": format!("{} Main Street", 10 + n), "City": "Oakland", "CountrySubDivisionCode": "CA", "PostalCode": "94612"},
                    "Active": active, "Taxable": false, "Job": false, "BillWithParent": false, "Level": 0,
                    "PreferredDeliveryMethod": "Email",
                    "CurrencyRef": {"value": "USD", "name": "United States Dollar"},
                    "Balance": 0, "BalanceWithJobs": 0, "domain": "QBO", "sparse": false,
                    "MetaData": {"CreateTime": meta_time(t), "LastUpdatedTime": meta_time(if active { t } else { t + 20 * day })},
                }),
            );
            if active {
                active_customers.push((id, display));
            }
        }
        // Invoices in the order they were made, over the last year, each an hour or more apart
        // from the previous one on average.
        let mut times: Vec<u64> = (0..size)
            .map(|_| now.saturating_sub(365 * day) + rng.u64(..364 * day))
            .collect();
        times.sort_unstable();
        let sold: Vec<u64> = c
            .map(Kind::Item)
            .iter()
            .filter(|(_, i)| i["Active"] == json!(true))
            .map(|(id, _)| *id)
            .collect();
        let mut payments: Vec<(u64, u64, u64, Decimal)> = Vec::new();
        for made in times {
            let (customer, display) = active_customers[rng.usize(..active_customers.len())].clone();
            let mut lines = Vec::new();
            let mut total = Decimal::ZERO;
            for n in 0..rng.usize(1..=3) {
                let item = sold[rng.usize(..sold.len())];
                let (name, price) = {
                    let i = &c.map(Kind::Item)[&item];
                    (
                        i["Name"].clone(),
                        i.get("UnitPrice").and_then(decimal).unwrap_or_default(),
                    )
                };
                let qty = Decimal::from(rng.u32(1..=40));
                let amount = round2(qty * price);
                total += amount;
                lines.push(json!({
                    "Id": (n + 1).to_string(), "LineNum": n + 1,
                    "Description": format!("{} for {display}", name.as_str().unwrap_or_default()),
                    "Amount": money(amount), "DetailType": "SalesItemLineDetail",
                    "SalesItemLineDetail": {"ItemRef": {"value": item.to_string(), "name": name}, "Qty": money(qty), "UnitPrice": money(price), "TaxCodeRef": {"value": "NON"}},
                }));
            }
            lines.push(json!({"Amount": money(total), "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}}));
            let id = c.allocate(Kind::Invoice);
            let doc = c.next_doc;
            c.next_doc += 1;
            let date = local_date(made);
            c.map_mut(Kind::Invoice).insert(
                id,
                json!({
                    "Id": id.to_string(), "SyncToken": "0", "DocNumber": doc.to_string(),
                    "TxnDate": date, "DueDate": add_days(&date, 30),
                    "CustomerRef": {"value": customer.to_string(), "name": display},
                    "Line": lines, "TotalAmt": money(total), "Balance": money(total),
                    "LinkedTxn": [], "EmailStatus": "EmailSent", "PrintStatus": "NotSet",
                    "ApplyTaxAfterDiscount": false, "TxnTaxDetail": {"TotalTax": 0},
                    "CurrencyRef": {"value": "USD", "name": "United States Dollar"},
                    "domain": "QBO", "sparse": false,
                    "MetaData": {"CreateTime": meta_time(made), "LastUpdatedTime": meta_time(made)},
                }),
            );
            let roll = rng.u32(..10);
            if roll < 4 {
                let paid_at = (made + day + rng.u64(..40 * day)).min(now.saturating_sub(60_000));
                let amount = if roll == 0 {
                    round2(total / Decimal::TWO)
                } else {
                    total
                };
                payments.push((paid_at, id, customer, amount));
            }
        }
        payments.sort_unstable_by_key(|p| p.0);
        for (paid_at, invoice, customer, amount) in payments {
            let id = c.allocate(Kind::Payment);
            let payment = json!({
                "Id": id.to_string(), "SyncToken": "0", "TxnDate": local_date(paid_at),
                "CustomerRef": {"value": customer.to_string(), "name": c.map(Kind::Customer)[&customer]["DisplayName"].clone()},
                "DepositToAccountRef": {"value": "4", "name": "Undeposited Funds"},
                "TotalAmt": money(amount), "UnappliedAmt": 0, "ProcessPayment": false,
                "Line": [{"Amount": money(amount), "LinkedTxn": [{"TxnId": invoice.to_string(), "TxnType": "Invoice"}]}],
                "CurrencyRef": {"value": "USD", "name": "United States Dollar"},
                "domain": "QBO", "sparse": false,
                "MetaData": {"CreateTime": meta_time(paid_at), "LastUpdatedTime": meta_time(paid_at)},
            });
            // Applying moves the invoice's LastUpdatedTime to the payment's time.
            if c.apply_payment(id, &payment, paid_at).is_ok() {
                c.map_mut(Kind::Payment).insert(id, payment);
            }
        }
        c
    }
}

/// Whether an invoice has payments applied.
fn has_payments(invoice: &Value) -> bool {
    invoice
        .get("LinkedTxn")
        .and_then(Value::as_array)
        .is_some_and(|l| l.iter().any(|t| t["TxnType"] == "Payment"))
}

/// The invoices a payment's lines pay, with the amount each line applies.
fn applied_by(payment: &Value) -> Result<Vec<(u64, Decimal)>, QbError> {
    let mut out = Vec::new();
    for line in payment
        .get("Line")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(amount) = line.get("Amount").and_then(decimal) else {
            return Err(QbError::required("Line.Amount"));
        };
        let links: Vec<&Value> = line
            .get("LinkedTxn")
            .and_then(Value::as_array)
            .map(|l| l.iter().collect())
            .unwrap_or_default();
        let [link] = links.as_slice() else {
            return Err(QbError::business(
                "Each payment line must name exactly one transaction in LinkedTxn.",
            ));
        };
        if link["TxnType"] != "Invoice" {
            return Err(QbError::business(
                "The simulator applies payments to invoices only (LinkedTxn.TxnType Invoice).",
            ));
        }
        let invoice = match &link["TxnId"] {
            Value::String(s) => s.trim().parse().ok(),
            Value::Number(n) => n.as_u64(),
            _ => None,
        }
        .ok_or_else(|| QbError::required("Line.LinkedTxn.TxnId"))?;
        if amount < Decimal::ZERO {
            return Err(QbError::business(
                "A payment line may not apply a negative amount.",
            ));
        }
        out.push((invoice, round2(amount)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quickbooks::query::parse;

    const NOW: u64 = 1_767_225_600_000;

    #[test]
    fn seeded_companies_are_deterministic_and_consistent() {
        let a = Company::seed(7, 0, 50, NOW);
        let b = Company::seed(7, 0, 50, NOW);
        assert_eq!(a.realm, b.realm);
        assert_eq!(a.all(Kind::Invoice), b.all(Kind::Invoice));
        assert_eq!(a.all(Kind::Invoice).len(), 50);
        assert!(!a.all(Kind::Payment).is_empty());
        for inv in a.all(Kind::Invoice) {
            let total = decimal(&inv["TotalAmt"]).unwrap();
            let balance = decimal(&inv["Balance"]).unwrap();
            assert_eq!(total - balance, a.paid_on(id_of(&inv).unwrap()), "{inv}");
            assert!(
                crate::quickbooks::util::parse_instant(
                    inv["MetaData"]["LastUpdatedTime"].as_str().unwrap()
                )
                .unwrap()
                    <= NOW as i64
            );
        }
        assert!(
            a.all(Kind::Customer)
                .iter()
                .any(|c| c["Active"] == json!(false))
        );
    }

    #[test]
    fn queries_hide_inactive_name_lists_unless_asked_and_page() {
        let c = Company::seed(1, 0, 40, NOW);
        let all = c.all(Kind::Customer).len();
        let active = c
            .all(Kind::Customer)
            .iter()
            .filter(|r| r["Active"] == json!(true))
            .count();
        let count = |q: &str| {
            c.query(&parse(q).unwrap()).unwrap()["totalCount"]
                .as_u64()
                .unwrap() as usize
        };
        assert_eq!(count("select count(*) from Customer"), active);
        assert_eq!(
            count("select count(*) from Customer where Active in (true, false)"),
            all
        );
        let page = c
            .query(&parse("select * from Invoice orderby MetaData.LastUpdatedTime startposition 31 maxresults 20").unwrap())
            .unwrap();
        assert_eq!(page["Invoice"].as_array().unwrap().len(), 10);
        assert_eq!(page["startPosition"], 31);
        let none = c
            .query(&parse("select * from Invoice startposition 41").unwrap())
            .unwrap();
        assert_eq!(none, json!({}));
        assert!(
            c.query(&parse("select * from Invoice where Nope = '1'").unwrap())
                .is_err()
        );
    }

    #[test]
    fn updates_check_the_sync_token_and_sparse_updates_keep_the_rest() {
        let mut c = Company::seed(1, 0, 10, NOW);
        let customer = c.all(Kind::Customer)[0].clone();
        let id = customer["Id"].clone();
        let stale = c.write(
            Kind::Customer,
            Op::Update,
            &json!({"Id": id, "SyncToken": "9", "sparse": true, "Notes": "x"}),
            NOW,
        );
        assert_eq!(stale.unwrap_err()[0].code, "5010");
        let missing = c.write(
            Kind::Customer,
            Op::Update,
            &json!({"Id": id, "sparse": true, "Notes": "x"}),
            NOW,
        );
        assert_eq!(missing.unwrap_err()[0].code, "2020");
        let done = c
            .write(
                Kind::Customer,
                Op::Update,
                &json!({"Id": id, "SyncToken": "0", "sparse": true, "Notes": "x"}),
                NOW + 1000,
            )
            .unwrap();
        assert_eq!(done["SyncToken"], "1");
        assert_eq!(done["Notes"], "x");
        assert_eq!(done["DisplayName"], customer["DisplayName"]);
        let unknown = c.write(
            Kind::Customer,
            Op::Create,
            &json!({"DisplayName": "New", "Colour": "red"}),
            NOW,
        );
        assert_eq!(unknown.unwrap_err()[0].code, "2010");
        let dup = c.write(
            Kind::Customer,
            Op::Create,
            &json!({"DisplayName": customer["DisplayName"]}),
            NOW,
        );
        assert_eq!(dup.unwrap_err()[0].code, "6240");
        let nameless = c.write(Kind::Customer, Op::Create, &json!({"Notes": "who"}), NOW);
        assert_eq!(nameless.unwrap_err()[0].code, "6080");
    }

    #[test]
    fn invoices_are_priced_and_payments_applied_then_given_back() {
        let mut c = Company::seed(1, 0, 5, NOW);
        let customer = c
            .all(Kind::Customer)
            .into_iter()
            .find(|r| r["Active"] == json!(true))
            .unwrap()["Id"]
            .clone();
        let wrong = c.write(Kind::Invoice, Op::Create, &json!({"CustomerRef": {"value": customer}, "Line": [
            {"Amount": 10, "DetailType": "SalesItemLineDetail", "SalesItemLineDetail": {"ItemRef": {"value": "1"}, "Qty": 2, "UnitPrice": 6}}]}), NOW);
        assert_eq!(wrong.unwrap_err()[0].code, "6070");
        let inv = c
            .write(Kind::Invoice, Op::Create, &json!({"CustomerRef": {"value": customer}, "Line": [
                {"Amount": 12, "DetailType": "SalesItemLineDetail", "SalesItemLineDetail": {"ItemRef": {"value": "1"}, "Qty": 2, "UnitPrice": 6}},
                {"Amount": 3.5, "DetailType": "SalesItemLineDetail", "SalesItemLineDetail": {"ItemRef": {"value": "2"}}}]}), NOW)
            .unwrap();
        assert_eq!(inv["TotalAmt"], json!(15.5));
        assert_eq!(
            inv["Line"].as_array().unwrap().last().unwrap()["DetailType"],
            "SubTotalLineDetail"
        );
        let pay = c
            .write(Kind::Payment, Op::Create, &json!({"CustomerRef": {"value": customer}, "TotalAmt": 20,
                "Line": [{"Amount": 15.5, "LinkedTxn": [{"TxnId": inv["Id"], "TxnType": "Invoice"}]}]}), NOW)
            .unwrap();
        assert_eq!(pay["UnappliedAmt"], json!(4.5));
        let paid = c
            .get(Kind::Invoice, inv["Id"].as_str().unwrap())
            .unwrap()
            .clone();
        assert_eq!(paid["Balance"], json!(0));
        assert_eq!(paid["SyncToken"], "1");
        let refused = c.write(
            Kind::Invoice,
            Op::Void,
            &json!({"Id": inv["Id"], "SyncToken": "1"}),
            NOW,
        );
        assert_eq!(refused.unwrap_err()[0].code, "6000");
        c.write(
            Kind::Payment,
            Op::Delete,
            &json!({"Id": pay["Id"], "SyncToken": "0"}),
            NOW,
        )
        .unwrap();
        let back = c
            .get(Kind::Invoice, inv["Id"].as_str().unwrap())
            .unwrap()
            .clone();
        assert_eq!(back["Balance"], json!(15.5));
        let voided = c
            .write(
                Kind::Invoice,
                Op::Void,
                &json!({"Id": inv["Id"], "SyncToken": back["SyncToken"]}),
                NOW,
            )
            .unwrap();
        assert_eq!(
            (voided["TotalAmt"].clone(), voided["PrivateNote"].clone()),
            (json!(0), json!("Voided"))
        );
    }
}
