//! Writes: creates (singular and bulk bodies), updates, deletes and invoice cancellation, with
//! Kantata's 422 `validation` errors naming the refused field.

// Refusals are whole HTTP answers; they are rare, so their size does not matter.
#![allow(clippy::result_large_err)]

use std::borrow::Cow;

use axum::body::Body;
use axum::http::Response;
use jiff::civil::Date;
use serde_json::{Map, Value, json};

use super::Shared;
use super::api::{QueryParams, no_content, value_text, written};
use super::scenarios::{Action, SubKind};
use super::store::{
    Category, Coll, CustomField, Db, Expense, ExtRef, Group, Invoice, Item, Line, Payment, Status,
    TimeEntry, Vendor, Workspace,
};
use super::util::{error, parse_date, validation};

type Resp = Response<Body>;

/// Field readers over one body object; each refuses a wrong type with a 422 naming the field.
struct Obj<'a>(&'a Map<String, Value>);

impl Obj<'_> {
    fn raw(&self, k: &str) -> Option<&Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }
    fn text(&self, k: &str) -> Option<String> {
        self.raw(k).map(value_text)
    }
    fn int(&self, k: &str) -> Result<Option<i64>, Resp> {
        match self.raw(k) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| validation(k, &format!("{k} must be an integer"))),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => s
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| validation(k, &format!("{k} must be an integer"))),
            Some(_) => Err(validation(k, &format!("{k} must be an integer"))),
        }
    }
    fn id(&self, k: &str) -> Result<Option<u64>, Resp> {
        match self.int(k)? {
            None => Ok(None),
            Some(n) => u64::try_from(n)
                .map(Some)
                .map_err(|_| validation(k, &format!("{k} is not a valid id"))),
        }
    }
    fn flag(&self, k: &str) -> Result<Option<bool>, Resp> {
        match self.raw(k) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => match value_text(v).to_ascii_lowercase().as_str() {
                "true" | "1" | "t" => Ok(Some(true)),
                "false" | "0" | "f" => Ok(Some(false)),
                "" => Ok(None),
                _ => Err(validation(k, &format!("{k} must be true or false"))),
            },
        }
    }
    fn date(&self, k: &str) -> Result<Option<Date>, Resp> {
        match self.text(k) {
            None => Ok(None),
            Some(t) if t.trim().is_empty() => Ok(None),
            Some(t) => parse_date(&t)
                .map(Some)
                .ok_or_else(|| validation(k, &format!("{k} must be a date (YYYY-MM-DD)"))),
        }
    }
}

fn required<T>(v: Option<T>, field: &str) -> Result<T, Resp> {
    v.ok_or_else(|| validation(field, &format!("{field} can't be blank")))
}

/// The objects of a write body: `{"<singular>": {...}}` or `{"<plural>": [...]}`.
fn objects(coll: Coll, body: &Map<String, Value>) -> Result<(Vec<Map<String, Value>>, bool), Resp> {
    if let Some(v) = body.get(coll.key()) {
        let Value::Array(items) = v else {
            return Err(validation(coll.key(), "must be a list of objects"));
        };
        if items.len() > 100 {
            return Err(validation(coll.key(), "at most 100 records per request"));
        }
        let mut out = Vec::new();
        for item in items {
            match item {
                Value::Object(m) => out.push(m.clone()),
                _ => return Err(validation(coll.key(), "must be a list of objects")),
            }
        }
        return Ok((out, true));
    }
    match body.get(coll.singular()) {
        Some(Value::Object(m)) => Ok((vec![m.clone()], false)),
        Some(_) => Err(validation(coll.singular(), "must be an object")),
        None => Ok((vec![Map::new()], false)),
    }
}

fn ws_slot(db: &Db, o: &Obj<'_>) -> Result<u32, Resp> {
    let id = required(o.id("workspace_id")?, "workspace_id")?;
    db.workspaces.slot_of(id).ok_or_else(|| {
        validation(
            "workspace_id",
            "workspace_id does not name a project you can see",
        )
    })
}

fn user_slot(db: &Db, o: &Obj<'_>, me: u32) -> Result<u32, Resp> {
    match o.id("user_id")? {
        None => Ok(me),
        Some(id) => db
            .users
            .slot_of(id)
            .ok_or_else(|| validation("user_id", "user_id does not name a user on the account")),
    }
}

/// `POST /<coll>`.
pub(crate) fn create(
    shared: &Shared,
    coll: Coll,
    body: &Map<String, Value>,
    p: &QueryParams,
    me: u32,
) -> Resp {
    let (items, _bulk) = match objects(coll, body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let now = shared.now_secs();
    let mut db = shared.write();
    // Validate everything first: a bulk write is all or nothing.
    let mut slots = Vec::new();
    match coll {
        Coll::TimeEntries => {
            let mut rows = Vec::new();
            for m in &items {
                match time_entry(&db, &Obj(m), me, now) {
                    Ok(t) => rows.push(t),
                    Err(r) => return r,
                }
            }
            for t in rows {
                let s = db.time_entries.push(t);
                db.emit("time_entry:created", (coll, s), me, now, json!({}));
                slots.push(s);
            }
        }
        Coll::Expenses => {
            let mut rows = Vec::new();
            for m in &items {
                match expense(&db, &Obj(m), me, now) {
                    Ok(e) => rows.push(e),
                    Err(r) => return r,
                }
            }
            for e in rows {
                let s = db.expenses.push(e);
                db.emit("expense:created", (coll, s), me, now, json!({}));
                slots.push(s);
            }
        }
        Coll::WorkspaceGroups => {
            for m in &items {
                let o = Obj(m);
                let Some(name) = o.text("name").filter(|n| !n.trim().is_empty()) else {
                    return validation("name", "name can't be blank");
                };
                if db
                    .groups
                    .iter()
                    .any(|(_, g)| g.name.eq_ignore_ascii_case(name.trim()))
                {
                    return validation("name", "name has already been taken");
                }
                let company = match o.flag("company") {
                    Ok(c) => c.unwrap_or(false),
                    Err(r) => return r,
                };
                slots.push(db.groups.push(Group {
                    name: name.trim().to_owned(),
                    company,
                    contact_name: o.text("contact_name").unwrap_or_default(),
                    email: o.text("email").unwrap_or_default(),
                    phone: o.text("phone_number").unwrap_or_default(),
                    address: o.text("address").unwrap_or_default(),
                    website: o.text("website").unwrap_or_default(),
                    notes: Cow::Owned(o.text("notes").unwrap_or_default()),
                    workspaces: Vec::new(),
                    created: now,
                    updated: now,
                }));
            }
        }
        Coll::ExternalPayments => {
            for m in &items {
                match payment(&mut db, &Obj(m), me, now) {
                    Ok(s) => slots.push(s),
                    Err(r) => return r,
                }
            }
        }
        Coll::Invoices => {
            for m in &items {
                match invoice(&mut db, m, me, now) {
                    Ok(s) => slots.push(s),
                    Err(r) => return r,
                }
            }
        }
        Coll::Workspaces => {
            for m in &items {
                match workspace(&mut db, &Obj(m), me, now) {
                    Ok(s) => slots.push(s),
                    Err(r) => return r,
                }
            }
        }
        Coll::ExternalReferences => {
            for m in &items {
                let o = Obj(m);
                let Some(model) = o.text("subject_type").filter(|t| {
                    t.eq_ignore_ascii_case("Submission") || Coll::from_model(t).is_some()
                }) else {
                    return validation(
                        "subject_type",
                        "subject_type can't be blank and must name a known type",
                    );
                };
                let subject = match o.id("subject_id") {
                    Ok(Some(id)) => db.subject_slot(&model, id),
                    Ok(None) => None,
                    Err(r) => return r,
                };
                let Some(subject) = subject else {
                    return validation("subject_id", "subject_id does not name a record");
                };
                match upsert_ref(&mut db, subject, m, now) {
                    Ok(s) => slots.push(s),
                    Err(r) => return r,
                }
            }
        }
        Coll::ExpenseReportSubmissions | Coll::TimesheetSubmissions => {
            for m in &items {
                match submission(&mut db, coll, &Obj(m), me, now) {
                    Ok(s) => slots.push(s),
                    Err(r) => return r,
                }
            }
        }
        Coll::ExpenseCategories => {
            for m in &items {
                let o = Obj(m);
                let Some(name) = o.text("name").filter(|n| !n.trim().is_empty()) else {
                    return validation("name", "name can't be blank");
                };
                slots.push(db.categories.push(Category {
                    name: name.trim().to_owned(),
                    deleted_at: None,
                    created: now,
                    updated: now,
                }));
            }
        }
        Coll::Vendors => {
            for m in &items {
                let o = Obj(m);
                let Some(name) = o.text("name").filter(|n| !n.trim().is_empty()) else {
                    return validation("name", "name can't be blank");
                };
                let slot = db.vendors.push(Vendor {
                    name: name.trim().to_owned(),
                    archived: false,
                    created: now,
                    updated: now,
                });
                if let Some(Value::Object(r)) = o.raw("external_reference")
                    && let Err(r) = upsert_ref(&mut db, (Coll::Vendors, slot), r, now)
                {
                    return r;
                }
                db.emit("vendor:created", (Coll::Vendors, slot), me, now, json!({}));
                slots.push(slot);
            }
        }
        Coll::CustomFields => {
            for m in &items {
                match custom_field(&mut db, m, me, now) {
                    Ok(s) => slots.push(s),
                    Err(r) => return r,
                }
            }
        }
        Coll::CustomFieldValues => {
            for m in &items {
                let o = Obj(m);
                let Some(model) = o.text("subject_type") else {
                    return validation("subject_type", "subject_type can't be blank");
                };
                let subject = match o.id("subject_id") {
                    Ok(Some(id)) => db.subject_slot(&model, id),
                    Ok(None) => None,
                    Err(r) => return r,
                };
                let Some(subject) = subject else {
                    return validation("subject_id", "subject_id does not name a record");
                };
                let field = match o.id("custom_field_id") {
                    Ok(Some(id)) => db.fields.slot_of(id),
                    Ok(None) => None,
                    Err(r) => return r,
                };
                let Some(field) = field else {
                    return validation("custom_field_id", "custom_field_id names no custom field");
                };
                let raw = o.raw("value").cloned().unwrap_or(Value::Null);
                match db.set_value(subject, field, &raw, me, now) {
                    Ok(s) => slots.push(s),
                    Err((f, msg)) => return validation(f, &msg),
                }
            }
        }
        _ => {
            return error(
                422,
                "system",
                &format!("The simulator does not create {} yet", coll.key()),
            );
        }
    }
    db.touch();
    written(shared, &db, coll, &slots, p)
}

/// Cents from a major-unit amount (`"12.50"` or `12.5`), as invoice items are written.
fn major_to_cents(v: &Value, field: &str) -> Result<i64, Resp> {
    let text = value_text(v);
    let bad = || validation(field, &format!("{field} must be an amount such as 12.50"));
    let d: rust_decimal::Decimal = text.trim().parse().map_err(|_| bad())?;
    let cents = (d * rust_decimal::Decimal::from(100)).round_dp(0);
    i64::try_from(cents).map_err(|_| bad())
}

/// A fixed-fee or additional item from a create body: cents, notes, taxable, story id.
type NewItem = (i64, String, bool, Option<u64>);

fn line_items(m: &Map<String, Value>, key: &str) -> Result<Vec<NewItem>, Resp> {
    let Some(v) = m.get(key).filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let list: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Object(o) => o.values().collect(),
        _ => return Err(validation(key, &format!("{key} must be a list"))),
    };
    let mut out = Vec::new();
    for item in list {
        let Value::Object(i) = item else {
            return Err(validation(key, &format!("{key} must be a list of objects")));
        };
        let o = Obj(i);
        let amount = match o.raw("amount") {
            Some(a) => major_to_cents(a, "amount")?,
            None => required(o.int("amount_in_cents")?, "amount")?,
        };
        out.push((
            amount,
            o.text("notes").unwrap_or_default(),
            o.flag("taxable")?.unwrap_or(false),
            o.id("story_id")?,
        ));
    }
    Ok(out)
}

fn id_list(o: &Obj<'_>, key: &str) -> Result<Option<Vec<u64>>, Resp> {
    let Some(v) = o.raw(key) else {
        return Ok(None);
    };
    let items: Vec<String> = match v {
        Value::Array(a) => a.iter().map(value_text).collect(),
        other => value_text(other)
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
    };
    items
        .iter()
        .map(|s| {
            s.trim()
                .parse::<u64>()
                .map_err(|_| validation(key, &format!("{key} must list ids")))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn invoice(db: &mut Db, m: &Map<String, Value>, me: u32, now: i64) -> Result<u32, Resp> {
    let o = Obj(m);
    let schedule = required(o.int("payment_schedule")?, "payment_schedule")?;
    if !(0..=3650).contains(&schedule) {
        return Err(validation(
            "payment_schedule",
            "payment_schedule must be between 0 and 3650 days",
        ));
    }
    let mut ws_ids = id_list(&o, "workspace_ids")?.unwrap_or_default();
    if let Some(w) = o.id("workspace_id")? {
        ws_ids.insert(0, w);
    }
    ws_ids.dedup();
    let ws_ids = required((!ws_ids.is_empty()).then_some(ws_ids), "workspace_id")?;
    let mut workspaces = Vec::new();
    for id in ws_ids {
        workspaces.push(db.workspaces.slot_of(id).ok_or_else(|| {
            validation(
                "workspace_id",
                "workspace_id does not name a project you can see",
            )
        })?);
    }
    let mut lines = Vec::new();
    for id in id_list(&o, "time_entry_ids")?.unwrap_or_default() {
        let slot = db.time_entries.slot_of(id).filter(|s| {
            db.time_entries
                .get(*s)
                .is_some_and(|t| t.invoice.is_none() && t.billable && workspaces.contains(&t.ws))
        });
        let slot = slot.ok_or_else(|| {
            validation("time_entry_ids", &format!("Time entry {id} cannot be invoiced here (missing, already invoiced, not billable or in another project)"))
        })?;
        lines.push(Line::Time(slot));
    }
    for id in id_list(&o, "expense_ids")?.unwrap_or_default() {
        let slot = db.expenses.slot_of(id).filter(|s| {
            db.expenses
                .get(*s)
                .is_some_and(|e| e.invoice.is_none() && e.billable && workspaces.contains(&e.ws))
        });
        let slot = slot.ok_or_else(|| {
            validation("expense_ids", &format!("Expense {id} cannot be invoiced here (missing, already invoiced, not billable or in another project)"))
        })?;
        lines.push(Line::Expense(slot));
    }
    let fixed = line_items(m, "fixed_fee_items")?;
    let additional = line_items(m, "additional_items")?;
    if lines.is_empty() && fixed.is_empty() && additional.is_empty() {
        return Err(validation(
            "time_entry_ids",
            "An invoice needs at least one line: time_entry_ids, expense_ids, fixed_fee_items or additional_items",
        ));
    }
    let date = o
        .date("invoice_date")?
        .unwrap_or_else(|| super::util::local_date(now));
    let number = match o.int("user_invoice_number")? {
        Some(n) => n,
        None => db.next_invoice_number,
    };
    db.next_invoice_number = db.next_invoice_number.max(number.saturating_add(1));
    let slot_next = u32::try_from(db.invoices.rows.len()).unwrap_or(u32::MAX);
    let ws0 = workspaces[0];
    for (amount, notes, taxable, story) in fixed {
        let s = db.fixed.push(Item {
            invoice: slot_next,
            ws: ws0,
            amount,
            notes: Cow::Owned(notes),
            taxable,
            story,
            created: now,
            updated: now,
        });
        lines.push(Line::Fixed(s));
    }
    for (amount, notes, taxable, _) in additional {
        let s = db.additional.push(Item {
            invoice: slot_next,
            ws: ws0,
            amount,
            notes: Cow::Owned(notes),
            taxable,
            story: None,
            created: now,
            updated: now,
        });
        lines.push(Line::Additional(s));
    }
    for l in &lines {
        match l {
            Line::Time(s) => {
                if let Some(t) = db.time_entries.get_mut(*s) {
                    t.invoice = Some(slot_next);
                    t.updated = now;
                }
            }
            Line::Expense(s) => {
                if let Some(e) = db.expenses.get_mut(*s) {
                    e.invoice = Some(slot_next);
                    e.updated = now;
                }
            }
            _ => {}
        }
    }
    let recipient = db
        .workspaces
        .get(ws0)
        .and_then(|w| w.participants.get(1).copied());
    let slot = db.invoices.push(Invoice {
        workspaces,
        user: me,
        recipient,
        number,
        user_title: o.text("user_invoice_title"),
        message: o.text("message"),
        purchase_order: o.text("purchase_order"),
        project_code: o.text("project_code"),
        date,
        payment_schedule: schedule,
        draft: o.flag("draft")?.unwrap_or(false),
        status: Status::New,
        tax_rate_bp: 0,
        lines,
        paid: 0,
        created: now,
        updated: now,
    });
    if let Some(Value::Object(r)) = o.raw("external_reference") {
        upsert_ref(db, (Coll::Invoices, slot), r, now)?;
    }
    Ok(slot)
}

fn workspace(db: &mut Db, o: &Obj<'_>, me: u32, now: i64) -> Result<u32, Resp> {
    let title = o
        .text("title")
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| validation("title", "Please give your project a title"))?;
    let mut groups = Vec::new();
    for id in id_list(o, "workspace_group_ids")?.unwrap_or_default() {
        groups.push(db.groups.slot_of(id).ok_or_else(|| {
            validation(
                "workspace_group_ids",
                "workspace_group_ids names an unknown group",
            )
        })?);
    }
    let primary = match o.id("primary_workspace_group_id")? {
        Some(id) => Some(db.groups.slot_of(id).ok_or_else(|| {
            validation(
                "primary_workspace_group_id",
                "primary_workspace_group_id names an unknown group",
            )
        })?),
        None => groups.first().copied(),
    };
    if let Some(p) = primary
        && !groups.contains(&p)
    {
        groups.insert(0, p);
    }
    let budgeted = o.flag("budgeted")?.unwrap_or(false);
    let price = match o.raw("price") {
        Some(v) => major_to_cents(v, "price")?,
        None if budgeted => {
            return Err(validation(
                "price",
                "price is required for budgeted projects",
            ));
        }
        None => 0,
    };
    let slot = db.workspaces.push(Workspace {
        title,
        description: Cow::Owned(o.text("description").unwrap_or_default()),
        archived: false,
        start: o.date("start_date")?,
        due: o.date("due_date")?,
        access_level: "invitation",
        budgeted,
        price_in_cents: price,
        groups: groups.clone(),
        primary_group: primary,
        participants: vec![me],
        creator: me,
        expense_approvals: false,
        created: now,
        updated: now,
    });
    for g in groups {
        if let Some(gr) = db.groups.get_mut(g) {
            gr.workspaces.push(slot);
        }
    }
    Ok(slot)
}

fn time_entry(db: &Db, o: &Obj<'_>, me: u32, now: i64) -> Result<TimeEntry, Resp> {
    let ws = ws_slot(db, o)?;
    let date = required(o.date("date_performed")?, "date_performed")?;
    let minutes = required(o.int("time_in_minutes")?, "time_in_minutes")?;
    if minutes < 0 {
        return Err(validation(
            "time_in_minutes",
            "time_in_minutes must be positive",
        ));
    }
    let user = user_slot(db, o, me)?;
    Ok(TimeEntry {
        ws,
        user,
        story: o.id("story_id")?,
        date,
        minutes,
        billable: o.flag("billable")?.unwrap_or(true),
        notes: Cow::Owned(o.text("notes").unwrap_or_default()),
        rate: o.int("rate_in_cents")?.unwrap_or(0),
        rate_set: o.raw("rate_in_cents").is_some(),
        cost_rate: 0,
        approved: false,
        invoice: None,
        submission: None,
        created: now,
        updated: now,
    })
}

fn expense(db: &Db, o: &Obj<'_>, me: u32, now: i64) -> Result<Expense, Resp> {
    let ws = ws_slot(db, o)?;
    let category_id = match o.id("expense_category_id")? {
        None => None,
        Some(id) => Some(db.categories.slot_of(id).ok_or_else(|| {
            validation(
                "expense_category_id",
                "expense_category_id names no expense category",
            )
        })?),
    };
    let vendor = match o.id("vendor_id")? {
        None => None,
        Some(id) => Some(
            db.vendors
                .slot_of(id)
                .ok_or_else(|| validation("vendor_id", "vendor_id names no vendor"))?,
        ),
    };
    let date = required(o.date("date")?, "date")?;
    let category = required(o.text("category").filter(|c| !c.is_empty()), "category")?;
    let amount = required(o.int("amount_in_cents")?, "amount_in_cents")?;
    let user = user_slot(db, o, me)?;
    Ok(Expense {
        ws,
        user,
        date,
        category: Cow::Owned(category),
        amount,
        notes: Cow::Owned(o.text("notes").unwrap_or_default()),
        billable: o.flag("billable")?.unwrap_or(true),
        reimbursable: o.flag("reimbursable")?.unwrap_or(false),
        invoice: None,
        category_id,
        vendor,
        report: None,
        created: now,
        updated: now,
    })
}

fn payment(db: &mut Db, o: &Obj<'_>, me: u32, now: i64) -> Result<u32, Resp> {
    let ws = ws_slot(db, o)?;
    let message = o.text("message");
    if message.as_ref().is_some_and(|m| m.chars().count() > 255) {
        return Err(validation(
            "message",
            "message is too long (maximum is 255 characters)",
        ));
    }
    let invoice = match o.id("invoice_id")? {
        None => None,
        Some(id) => Some(
            db.invoices
                .slot_of(id)
                .ok_or_else(|| validation("invoice_id", "invoice_id does not name an invoice"))?,
        ),
    };
    let amount = match invoice {
        Some(i) => {
            let inv = db
                .invoices
                .get(i)
                .ok_or_else(|| validation("invoice_id", "invoice_id does not name an invoice"))?;
            if inv.workspaces != [ws] {
                return Err(validation(
                    "invoice_id",
                    "Payments can only be applied to single-project invoices of this project",
                ));
            }
            if inv.draft {
                return Err(validation(
                    "invoice_id",
                    "Payments cannot be applied to draft invoices",
                ));
            }
            if inv.status != Status::New {
                return Err(validation(
                    "invoice_id",
                    "Payments can only be applied to pending invoices",
                ));
            }
            // Kantata sets the amount to the invoice's amount and ignores amount_in_cents.
            db.invoice_balance(inv)
        }
        None => required(o.int("amount_in_cents")?, "amount_in_cents")?,
    };
    let slot = db.payments.push(Payment {
        invoice,
        ws,
        user: me,
        amount,
        message,
        created: now,
        updated: now,
    });
    if let Some(i) = invoice {
        let total = db.invoices.get(i).map_or(0, |inv| db.invoice_total(inv));
        if let Some(inv) = db.invoices.get_mut(i) {
            inv.paid = inv.paid.saturating_add(amount);
            if inv.paid >= total {
                inv.status = Status::Paid;
            }
            inv.updated = now;
        }
    }
    Ok(slot)
}

/// Creates or updates the subject's reference for `service_name` (one per service and subject).
fn upsert_ref(
    db: &mut Db,
    subject: (Coll, u32),
    m: &Map<String, Value>,
    now: i64,
) -> Result<u32, Resp> {
    let o = Obj(m);
    let name = o.text("service_name").filter(|s| !s.trim().is_empty());
    let existing = name.as_ref().and_then(|n| {
        db.refs_of(subject.0, subject.1).iter().copied().find(|r| {
            db.ext_refs
                .get(*r)
                .is_some_and(|x| x.service_name.eq_ignore_ascii_case(n))
        })
    });
    let status = o.text("status");
    if let Some(s) = &status
        && !["pending", "successful", "failed"].contains(&s.as_str())
    {
        return Err(validation(
            "status",
            "status must be pending, successful or failed",
        ));
    }
    let locked = o.flag("locked")?;
    if let Some(slot) = existing {
        if let Some(r) = db.ext_refs.get_mut(slot) {
            if let Some(v) = o.text("service_model").filter(|s| !s.is_empty()) {
                r.service_model = v;
            }
            if let Some(v) = o.text("service_model_ref").filter(|s| !s.is_empty()) {
                r.service_model_ref = v;
            }
            if let Some(v) = status {
                r.status = v;
            }
            if let Some(v) = o.text("external_link") {
                r.external_link = Some(v);
            }
            if let Some(v) = o.text("external_status") {
                r.external_status = Some(v);
            }
            if let Some(v) = o.text("external_message") {
                r.external_message = Some(v);
            }
            if let Some(v) = locked {
                r.locked = v;
            }
            r.updated = now;
        }
        return Ok(slot);
    }
    let name = required(name, "service_name")?;
    let model = required(
        o.text("service_model").filter(|s| !s.is_empty()),
        "service_model",
    )?;
    let model_ref = required(
        o.text("service_model_ref").filter(|s| !s.is_empty()),
        "service_model_ref",
    )?;
    let slot = db.ext_refs.push(ExtRef {
        subject,
        service_name: name,
        service_model: model,
        service_model_ref: model_ref,
        status: status.unwrap_or_else(|| "pending".to_owned()),
        external_link: o.text("external_link"),
        external_status: o.text("external_status"),
        external_message: o.text("external_message"),
        locked: locked.unwrap_or(false),
        created: now,
        updated: now,
    });
    db.refs_by_subject.entry(subject).or_default().push(slot);
    Ok(slot)
}

fn find(db: &Db, coll: Coll, id: &str) -> Option<u32> {
    id.parse::<u64>().ok().and_then(|id| db.slot_of(coll, id))
}

/// `PUT /<coll>/{id}`.
pub(crate) fn update(
    shared: &Shared,
    coll: Coll,
    id: &str,
    body: &Map<String, Value>,
    p: &QueryParams,
    me: u32,
) -> Resp {
    let now = shared.now_secs();
    let mut db = shared.write();
    let Some(slot) = find(&db, coll, id) else {
        return error(404, "system", &format!("{} not found", coll.model()));
    };
    let m = match body.get(coll.singular()) {
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return validation(coll.singular(), "must be an object"),
        None => Map::new(),
    };
    let o = Obj(&m);
    let result: Result<(), Resp> = (|| {
        match coll {
            Coll::Invoices => {
                let draft = o.flag("draft")?;
                let schedule = o.int("payment_schedule")?;
                if let Some(Value::Object(r)) = o.raw("external_reference") {
                    upsert_ref(&mut db, (Coll::Invoices, slot), r, now)?;
                } else if o.raw("external_reference").is_some() {
                    return Err(validation("external_reference", "must be an object"));
                }
                let inv = db
                    .invoices
                    .get_mut(slot)
                    .ok_or_else(|| error(404, "system", "Invoice not found"))?;
                if let Some(d) = draft {
                    if d && !inv.draft {
                        return Err(validation(
                            "draft",
                            "An active invoice cannot become a draft",
                        ));
                    }
                    inv.draft = d;
                }
                if let Some(s) = schedule {
                    if !(0..=3650).contains(&s) {
                        return Err(validation(
                            "payment_schedule",
                            "payment_schedule must be between 0 and 3650 days",
                        ));
                    }
                    inv.payment_schedule = s;
                }
                for (k, field) in [
                    ("message", &mut inv.message),
                    ("purchase_order", &mut inv.purchase_order),
                    ("project_code", &mut inv.project_code),
                    ("user_invoice_title", &mut inv.user_title),
                ] {
                    if let Some(v) = m.get(k) {
                        *field = (!v.is_null()).then(|| value_text(v));
                    }
                }
                inv.updated = now;
            }
            Coll::TimeEntries => {
                let date = o.date("date_performed")?;
                let minutes = o.int("time_in_minutes")?;
                let billable = o.flag("billable")?;
                let rate = o.int("rate_in_cents")?;
                let t = db
                    .time_entries
                    .get_mut(slot)
                    .ok_or_else(|| error(404, "system", "TimeEntry not found"))?;
                if let Some(d) = date {
                    t.date = d;
                }
                if let Some(v) = minutes {
                    if !(0..=100_000).contains(&v) {
                        return Err(validation(
                            "time_in_minutes",
                            "time_in_minutes must be between 0 and 100000",
                        ));
                    }
                    t.minutes = v;
                }
                if let Some(v) = billable {
                    t.billable = v;
                }
                if let Some(v) = rate {
                    t.rate = v;
                }
                if let Some(v) = o.text("notes") {
                    t.notes = Cow::Owned(v);
                }
                t.updated = now;
                db.emit("time_entry:updated", (coll, slot), me, now, json!({}));
            }
            Coll::Expenses => {
                let date = o.date("date")?;
                let amount = o.int("amount_in_cents")?;
                let e = db
                    .expenses
                    .get_mut(slot)
                    .ok_or_else(|| error(404, "system", "Expense not found"))?;
                if let Some(d) = date {
                    e.date = d;
                }
                if let Some(v) = amount {
                    e.amount = v;
                }
                if let Some(v) = o.text("category").filter(|c| !c.is_empty()) {
                    e.category = Cow::Owned(v);
                }
                if let Some(v) = o.text("notes") {
                    e.notes = Cow::Owned(v);
                }
                e.updated = now;
                db.emit("expense:updated", (coll, slot), me, now, json!({}));
            }
            Coll::Workspaces => {
                let archived = o.flag("archived")?;
                let w = db
                    .workspaces
                    .get_mut(slot)
                    .ok_or_else(|| error(404, "system", "Workspace not found"))?;
                if let Some(t) = o.text("title") {
                    if t.trim().is_empty() {
                        return Err(validation("title", "Please give your project a title"));
                    }
                    w.title = t;
                }
                if let Some(v) = o.text("description") {
                    w.description = Cow::Owned(v);
                }
                if let Some(a) = archived {
                    w.archived = a;
                }
                w.updated = now;
            }
            Coll::WorkspaceGroups => {
                let company = o.flag("company")?;
                if let Some(n) = o.text("name") {
                    if n.trim().is_empty() {
                        return Err(validation("name", "name can't be blank"));
                    }
                    if db
                        .groups
                        .iter()
                        .any(|(s, g)| s != slot && g.name.eq_ignore_ascii_case(n.trim()))
                    {
                        return Err(validation("name", "name has already been taken"));
                    }
                }
                let g = db
                    .groups
                    .get_mut(slot)
                    .ok_or_else(|| error(404, "system", "WorkspaceGroup not found"))?;
                if let Some(n) = o.text("name") {
                    g.name = n.trim().to_owned();
                }
                if let Some(c) = company {
                    g.company = c;
                }
                for (k, field) in [
                    ("contact_name", &mut g.contact_name),
                    ("email", &mut g.email),
                    ("phone_number", &mut g.phone),
                    ("address", &mut g.address),
                    ("website", &mut g.website),
                ] {
                    if let Some(v) = o.text(k) {
                        *field = v;
                    }
                }
                g.updated = now;
            }
            Coll::ExpenseCategories => {
                let c = db
                    .categories
                    .get_mut(slot)
                    .ok_or_else(|| error(404, "system", "ExpenseCategory not found"))?;
                if let Some(n) = o.text("name") {
                    if n.trim().is_empty() {
                        return Err(validation("name", "name can't be blank"));
                    }
                    c.name = n.trim().to_owned();
                }
                c.updated = now;
            }
            Coll::Vendors => {
                let archived = o.flag("archived")?;
                let v = db
                    .vendors
                    .get_mut(slot)
                    .ok_or_else(|| error(404, "system", "Vendor not found"))?;
                if let Some(n) = o.text("name") {
                    if n.trim().is_empty() {
                        return Err(validation("name", "name can't be blank"));
                    }
                    v.name = n.trim().to_owned();
                }
                if let Some(a) = archived {
                    v.archived = a;
                }
                v.updated = now;
                db.emit("vendor:updated", (Coll::Vendors, slot), me, now, json!({}));
            }
            Coll::CustomFields => update_field(&mut db, slot, &m, me, now)?,
            Coll::ExternalReferences => {
                let subject = db
                    .ext_refs
                    .get(slot)
                    .map(|r| (r.subject, r.service_name.clone()))
                    .ok_or_else(|| error(404, "system", "ExternalReference not found"))?;
                let mut m2 = m.clone();
                m2.insert("service_name".into(), Value::String(subject.1));
                upsert_ref(&mut db, subject.0, &m2, now)?;
            }
            _ => {
                return Err(error(
                    422,
                    "system",
                    &format!("{} cannot be updated here", coll.key()),
                ));
            }
        }
        Ok(())
    })();
    if let Err(r) = result {
        return r;
    }
    db.touch();
    written(shared, &db, coll, &[slot], p)
}

/// `PUT /invoices/{id}/cancel`.
pub(crate) fn cancel_invoice(shared: &Shared, id: &str, p: &QueryParams, _me: u32) -> Resp {
    let now = shared.now_secs();
    let mut db = shared.write();
    let Some(slot) = find(&db, Coll::Invoices, id) else {
        return error(404, "system", "Invoice not found");
    };
    if let Some(inv) = db.invoices.get_mut(slot) {
        if inv.draft {
            return validation("draft", "Draft invoices are deleted, not cancelled");
        }
        inv.status = Status::Cancelled;
        inv.updated = now;
    }
    db.touch();
    written(shared, &db, Coll::Invoices, &[slot], p)
}

/// `DELETE /<coll>/{id}` (and the all-or-nothing bulk deletes of time entries and expenses).
pub(crate) fn delete(shared: &Shared, coll: Coll, ids: &[&str], me: u32) -> Resp {
    let mut db = shared.write();
    let mut slots = Vec::new();
    for id in ids {
        let Some(slot) = find(&db, coll, id) else {
            return error(404, "system", &format!("{} not found", coll.model()));
        };
        let refused = match coll {
            Coll::TimeEntries => {
                let t = db.time_entries.get(slot);
                if t.is_some_and(|t| t.invoice.is_some()) {
                    Some(("invoice_id", "Invoiced time entries cannot be deleted"))
                } else if t.is_some_and(|t| submitted(&db, t.submission)) {
                    Some((
                        "active_submission_id",
                        "Time entries on a pending or approved timesheet cannot be deleted",
                    ))
                } else {
                    None
                }
            }
            Coll::Expenses => {
                let e = db.expenses.get(slot);
                if e.is_some_and(|e| e.invoice.is_some()) {
                    Some(("invoice_id", "Invoiced expenses cannot be deleted"))
                } else if e.is_some_and(|e| submitted(&db, e.report)) {
                    Some((
                        "expense_report_id",
                        "Expenses on a pending or approved expense report cannot be deleted",
                    ))
                } else {
                    None
                }
            }
            Coll::Invoices => db.invoices.get(slot).is_some_and(|i| !i.draft).then_some((
                "draft",
                "Only draft invoices can be deleted; cancel it instead",
            )),
            Coll::WorkspaceGroups
            | Coll::ExternalReferences
            | Coll::ExpenseCategories
            | Coll::Vendors => None,
            _ => {
                return error(
                    422,
                    "system",
                    &format!("{} cannot be deleted through the API", coll.key()),
                );
            }
        };
        if let Some((field, message)) = refused {
            return validation(field, message);
        }
        slots.push(slot);
    }
    for slot in slots {
        match coll {
            Coll::TimeEntries => {
                db.time_entries.remove(slot);
                let now = shared.now_secs();
                db.emit("time_entry:deleted", (coll, slot), me, now, json!({}));
            }
            Coll::Expenses => {
                db.expenses.remove(slot);
                let now = shared.now_secs();
                db.emit("expense:deleted", (coll, slot), me, now, json!({}));
            }
            // Deleting a category only marks it; expenses keep pointing at it.
            Coll::ExpenseCategories => {
                let now = shared.now_secs();
                if let Some(c) = db.categories.get_mut(slot) {
                    c.deleted_at.get_or_insert(now);
                    c.updated = now;
                }
            }
            Coll::Vendors => {
                db.vendors.remove(slot);
            }
            Coll::Invoices => {
                if let Some(inv) = db.invoices.remove(slot) {
                    for l in inv.lines {
                        match l {
                            super::store::Line::Time(s) => {
                                if let Some(t) = db.time_entries.get_mut(s) {
                                    t.invoice = None;
                                }
                            }
                            super::store::Line::Expense(s) => {
                                if let Some(e) = db.expenses.get_mut(s) {
                                    e.invoice = None;
                                }
                            }
                            super::store::Line::Fixed(s) => {
                                db.fixed.remove(s);
                            }
                            super::store::Line::Additional(s) => {
                                db.additional.remove(s);
                            }
                        }
                    }
                }
            }
            Coll::WorkspaceGroups => {
                db.groups.remove(slot);
                for w in db.workspaces.rows.iter_mut().flatten() {
                    w.groups.retain(|g| *g != slot);
                    if w.primary_group == Some(slot) {
                        w.primary_group = w.groups.first().copied();
                    }
                }
            }
            Coll::ExternalReferences => {
                if let Some(r) = db.ext_refs.remove(slot)
                    && let Some(list) = db.refs_by_subject.get_mut(&r.subject)
                {
                    list.retain(|x| *x != slot);
                }
            }
            _ => {}
        }
    }
    db.touch();
    no_content()
}

/// A submission from a create body (`line_item_ids` are expense or time-entry ids).
fn submission(db: &mut Db, coll: Coll, o: &Obj<'_>, me: u32, now: i64) -> Result<u32, Resp> {
    let kind = if coll == Coll::ExpenseReportSubmissions {
        SubKind::Expense
    } else {
        SubKind::Timesheet
    };
    let ws = ws_slot(db, o)?;
    let user = user_slot(db, o, me)?;
    let title = required(o.text("title"), "title")?;
    let ids = required(id_list(o, "line_item_ids")?, "line_item_ids")?;
    let mut lines = Vec::new();
    for id in ids {
        let slot = match kind {
            SubKind::Expense => db.expenses.slot_of(id),
            SubKind::Timesheet => db.time_entries.slot_of(id),
        };
        lines.push(slot.ok_or_else(|| {
            validation("line_item_ids", &format!("line item {id} does not exist"))
        })?);
    }
    let slot = db
        .create_submission(kind, ws, user, (title, o.text("comment")), lines, now)
        .map_err(|(f, m)| validation(f, &m))?;
    if let Some(Value::Object(r)) = o.raw("external_reference") {
        upsert_ref(db, (coll, slot), r, now)?;
    }
    Ok(slot)
}

/// The `description` of a `{"resolution": {...}}` body, which approve, reject and cancel require.
fn resolution_body(body: &Map<String, Value>) -> Result<Option<String>, Resp> {
    match body.get("resolution") {
        Some(Value::Object(r)) => Ok(Obj(r).text("description")),
        Some(_) => Err(validation("resolution", "resolution must be an object")),
        None => Err(validation("resolution", "resolution is required")),
    }
}

/// `PUT /expense_report_submissions/{id}/approve|reject|cancel` (and the timesheet routes).
pub(crate) fn resolve_submission(
    shared: &Shared,
    coll: Coll,
    id: &str,
    action: &str,
    body: &Map<String, Value>,
    p: &QueryParams,
    me: u32,
) -> Resp {
    let Some(action) = Action::from_segment(action) else {
        return error(404, "system", "Not found");
    };
    let now = shared.now_secs();
    let mut db = shared.write();
    let Some(slot) = find(&db, coll, id) else {
        return error(404, "system", "Submission not found");
    };
    let description = match resolution_body(body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    if let Err((f, m)) = db.resolve(slot, action, description, me, now) {
        return validation(f, &m);
    }
    written(shared, &db, coll, &[slot], p)
}

/// `POST /timesheet_approvals`: approves several timesheets at once, all or nothing, and
/// answers `{"resolutions": [...]}` as a plain array with integer ids.
pub(crate) fn bulk_approve(shared: &Shared, body: &Map<String, Value>, me: u32) -> Resp {
    let Some(Value::Object(r)) = body.get("resolution") else {
        return validation("resolution", "resolution is required");
    };
    let o = Obj(r);
    let ids = match id_list(&o, "submission_ids") {
        Ok(Some(mut ids)) if !ids.is_empty() => {
            let mut seen = std::collections::HashSet::new();
            ids.retain(|id| seen.insert(*id));
            ids
        }
        Ok(_) => return validation("submission_ids", "submission_ids can't be blank"),
        Err(r) => return r,
    };
    let now = shared.now_secs();
    let mut db = shared.write();
    let mut slots = Vec::new();
    for id in &ids {
        match db.slot_of(Coll::TimesheetSubmissions, *id) {
            Some(s)
                if db
                    .submissions
                    .get(s)
                    .is_some_and(|x| x.status == super::scenarios::SubStatus::Pending) =>
            {
                slots.push(s);
            }
            Some(_) => {
                return validation(
                    "submission_ids",
                    &format!("Submission {id} is not pending approval"),
                );
            }
            None => {
                return validation(
                    "submission_ids",
                    &format!("Submission {id} is not a timesheet submission"),
                );
            }
        }
    }
    let mut out = Vec::new();
    for s in slots {
        match db.resolve(s, Action::Approve, o.text("description"), me, now) {
            Ok(r) => {
                if let Some(res) = db.resolutions.get(r) {
                    out.push(json!({
                        "id": Coll::Resolutions.base() + u64::from(r),
                        "type": "approval",
                        "description": res.description,
                        "target_type": "Submission",
                        "target_id": Coll::TimesheetSubmissions.base() + u64::from(s),
                        "user_id": Coll::Users.base() + u64::from(me),
                        "account_id": shared.account_id.parse::<u64>().unwrap_or(0),
                        "current": true,
                        "created_at": super::util::render_time(now),
                        "updated_at": super::util::render_time(now),
                    }));
                }
            }
            Err((f, m)) => return validation(f, &m),
        }
    }
    super::util::json_response(200, &json!({ "resolutions": out }))
}

/// The choice list of a create or update body: `(id, label)` per element, in order.
/// One element of a choice list: its id (absent for a new choice) and label.
type ChoiceItem = (Option<u64>, Option<String>);

fn choice_list(m: &Map<String, Value>) -> Result<Option<Vec<ChoiceItem>>, Resp> {
    let Some(v) = m.get("choices").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let Value::Array(items) = v else {
        return Err(validation("choices", "choices must be a list"));
    };
    let mut out = Vec::new();
    for item in items {
        let Value::Object(c) = item else {
            return Err(validation("choices", "choices must be a list of objects"));
        };
        let c = Obj(c);
        out.push((c.id("id")?, c.text("label")));
    }
    Ok(Some(out))
}

const VALUE_TYPES: [&str; 6] = ["string", "date", "number", "currency", "single", "multi"];
const FIELD_SUBJECTS: [&str; 6] = [
    "Estimate",
    "Story",
    "User",
    "Workspace",
    "WorkspaceGroup",
    "Resource",
];

fn custom_field(db: &mut Db, m: &Map<String, Value>, me: u32, now: i64) -> Result<u32, Resp> {
    let o = Obj(m);
    let name = required(o.text("name").filter(|n| !n.trim().is_empty()), "name")?;
    let value_type = o.text("value_type").unwrap_or_else(|| "string".to_owned());
    if !VALUE_TYPES.contains(&value_type.as_str()) {
        return Err(validation(
            "value_type",
            "value_type must be string, date, number, currency, single or multi",
        ));
    }
    // Without a set the field lands in the default project set: a Workspace field.
    let subject_type = o
        .text("subject_type")
        .unwrap_or_else(|| "Workspace".to_owned());
    if !FIELD_SUBJECTS.contains(&subject_type.as_str()) {
        return Err(validation(
            "subject_type",
            "subject_type is not a custom field subject",
        ));
    }
    let choices = choice_list(m)?;
    if choices
        .as_ref()
        .is_some_and(|c| c.iter().any(|(id, _)| id.is_some()))
    {
        return Err(validation(
            "choices",
            "a new field's choices cannot name ids",
        ));
    }
    let slot = db.fields.push(CustomField {
        name: name.trim().to_owned(),
        subject_type,
        value_type,
        unique: o.flag("unique_constraint")?.unwrap_or(false),
        choices: Vec::new(),
        created: now,
        updated: now,
    });
    if let Some(c) = choices {
        db.replace_choices(slot, &c, now)
            .map_err(|(f, msg)| validation(f, &msg))?;
    }
    db.emit(
        "custom_field:created",
        (Coll::CustomFields, slot),
        me,
        now,
        json!({}),
    );
    Ok(slot)
}

fn update_field(
    db: &mut Db,
    slot: u32,
    m: &Map<String, Value>,
    me: u32,
    now: i64,
) -> Result<(), Resp> {
    let o = Obj(m);
    let Some(f) = db.fields.get(slot) else {
        return Err(error(404, "system", "CustomField not found"));
    };
    if let Some(t) = o.text("value_type")
        && t != f.value_type
    {
        return Err(validation("value_type", "value_type cannot be changed"));
    }
    if let Some(u) = o.flag("unique_constraint")?
        && u != f.unique
    {
        return Err(validation(
            "unique_constraint",
            "unique_constraint cannot be changed",
        ));
    }
    let name = match o.text("name") {
        Some(n) if n.trim().is_empty() => return Err(validation("name", "name can't be blank")),
        other => other,
    };
    if let Some(c) = choice_list(m)? {
        db.replace_choices(slot, &c, now)
            .map_err(|(f, msg)| validation(f, &msg))?;
    }
    if let Some(f) = db.fields.get_mut(slot) {
        if let Some(n) = name {
            f.name = n.trim().to_owned();
        }
        f.updated = now;
    }
    db.emit(
        "custom_field:updated",
        (Coll::CustomFields, slot),
        me,
        now,
        json!({}),
    );
    Ok(())
}

/// Whether a submission slot names a pending or approved submission (its lines are locked).
fn submitted(db: &Db, submission: Option<u32>) -> bool {
    submission
        .and_then(|s| db.submissions.get(s))
        .is_some_and(|s| {
            matches!(
                s.status,
                super::scenarios::SubStatus::Pending | super::scenarios::SubStatus::Approved
            )
        })
}
