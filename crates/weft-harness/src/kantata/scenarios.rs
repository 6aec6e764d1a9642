//! What the M-Bridge Xero scenarios need from the account beyond invoices: expense report and
//! timesheet submissions with their resolutions, expense categories, vendors, custom fields with
//! their choices and values, and the Subscribed Events log (see `kantata-scenarios-api.md`).
//! The rules every writer shares live here, so the HTTP routes and the test hooks behave alike:
//! submission transitions, choice-list replacement, value upserts and event emission.

use std::borrow::Cow;

use jiff::ToSpan;
use jiff::civil::Date;
use serde_json::{Value, json};

use super::store::{Coll, Db, Expense, TimeEntry};
use super::util::local_date;

/// Which kind of submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubKind {
    Expense,
    Timesheet,
}

impl SubKind {
    pub(crate) fn coll(self) -> Coll {
        match self {
            SubKind::Expense => Coll::ExpenseReportSubmissions,
            SubKind::Timesheet => Coll::TimesheetSubmissions,
        }
    }

    /// The event-type prefix (`expense_report:updated`, `timesheet:updated`).
    fn event_prefix(self) -> &'static str {
        match self {
            SubKind::Expense => "expense_report",
            SubKind::Timesheet => "timesheet",
        }
    }
}

/// A submission's status as the field spells it (the `statuses` filter says `new` for pending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubStatus {
    Pending,
    Approved,
    Rejected,
    Cancelled,
}

impl SubStatus {
    pub(crate) fn name(self) -> &'static str {
        match self {
            SubStatus::Pending => "pending",
            SubStatus::Approved => "approved",
            SubStatus::Rejected => "rejected",
            SubStatus::Cancelled => "cancelled",
        }
    }

    /// A value of the `statuses` filter; `new` and `pending` both mean pending.
    pub(crate) fn from_filter(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "new" | "pending" => Some(SubStatus::Pending),
            "approved" => Some(SubStatus::Approved),
            "rejected" => Some(SubStatus::Rejected),
            "cancelled" | "canceled" => Some(SubStatus::Cancelled),
            _ => None,
        }
    }
}

/// What a resolution does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Approve,
    Reject,
    Cancel,
}

impl Action {
    pub(crate) fn from_segment(s: &str) -> Option<Self> {
        match s {
            "approve" => Some(Action::Approve),
            "reject" => Some(Action::Reject),
            "cancel" => Some(Action::Cancel),
            _ => None,
        }
    }

    /// The resolution's `type`.
    pub(crate) fn resolution_type(self) -> &'static str {
        match self {
            Action::Approve => "approval",
            Action::Reject => "rejection",
            Action::Cancel => "cancellation",
        }
    }

    fn status(self) -> SubStatus {
        match self {
            Action::Approve => SubStatus::Approved,
            Action::Reject => SubStatus::Rejected,
            Action::Cancel => SubStatus::Cancelled,
        }
    }
}

/// An expense report or timesheet submission.
#[derive(Debug, Clone)]
pub(crate) struct Submission {
    pub(crate) kind: SubKind,
    pub(crate) title: String,
    pub(crate) comment: Option<String>,
    pub(crate) ws: u32,
    pub(crate) user: u32,
    /// Expense slots (reports) or time-entry slots (timesheets).
    pub(crate) lines: Vec<u32>,
    pub(crate) status: SubStatus,
    /// Resolution slots, oldest first; the last is the current one.
    pub(crate) resolutions: Vec<u32>,
    /// The week of a timesheet.
    pub(crate) start: Option<Date>,
    pub(crate) end: Option<Date>,
    pub(crate) created: i64,
    pub(crate) updated: i64,
}

/// An approval, rejection or cancellation of a submission.
#[derive(Debug, Clone)]
pub(crate) struct Resolution {
    pub(crate) action: Action,
    pub(crate) description: Option<String>,
    pub(crate) target: u32,
    pub(crate) user: u32,
    pub(crate) created: i64,
    pub(crate) updated: i64,
}

/// An expense category; deleting one only stamps `deleted_at`.
#[derive(Debug, Clone)]
pub(crate) struct Category {
    pub(crate) name: String,
    pub(crate) deleted_at: Option<i64>,
    pub(crate) created: i64,
    pub(crate) updated: i64,
}

/// A party an expense is payable to.
#[derive(Debug, Clone)]
pub(crate) struct Vendor {
    pub(crate) name: String,
    pub(crate) archived: bool,
    pub(crate) created: i64,
    pub(crate) updated: i64,
}

/// A custom field.
#[derive(Debug, Clone)]
pub(crate) struct CustomField {
    pub(crate) name: String,
    pub(crate) subject_type: String,
    pub(crate) value_type: String,
    pub(crate) unique: bool,
    /// Active choice slots in display order.
    pub(crate) choices: Vec<u32>,
    pub(crate) created: i64,
    pub(crate) updated: i64,
}

/// One choice of a single/multi custom field; replaced choices stay, inactive.
#[derive(Debug, Clone)]
pub(crate) struct Choice {
    pub(crate) field: u32,
    pub(crate) label: String,
    pub(crate) position: i64,
    pub(crate) active: bool,
    pub(crate) created: i64,
    pub(crate) updated: i64,
}

/// A custom field's value on one subject.
#[derive(Debug, Clone)]
pub(crate) struct FieldValue {
    pub(crate) subject: (Coll, u32),
    pub(crate) field: u32,
    /// The text of string/date/number/currency values.
    pub(crate) text: String,
    /// Choice slots of single/multi values.
    pub(crate) choices: Vec<u32>,
    pub(crate) setter: u32,
    pub(crate) created: i64,
    pub(crate) updated: i64,
}

/// One Subscribed Event.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) event_type: String,
    pub(crate) subject: (Coll, u32),
    pub(crate) user: u32,
    pub(crate) changed_at: i64,
    pub(crate) created: i64,
    pub(crate) changes: Value,
}

/// How events are delivered: the seeded order of simultaneous events, and the faults tests ask
/// for (a duplicate of every n-th event, `created_at` moved back by up to `max_delay` seconds).
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) rng: fastrand::Rng,
    pub(crate) duplicate_every: u32,
    pub(crate) max_delay: i64,
    emitted: u64,
}

impl Delivery {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed ^ 0x0e7e_47ed),
            duplicate_every: 0,
            max_delay: 0,
            emitted: 0,
        }
    }
}

/// How long Subscribed Events keep an event (the current documentation says 9 days).
pub(crate) const EVENT_RETENTION_SECS: i64 = 9 * 86_400;

/// A refused change: the field it is about and the message.
pub(crate) type Refusal = (&'static str, String);

fn refuse(field: &'static str, message: impl Into<String>) -> Refusal {
    (field, message.into())
}

impl Db {
    /// Whether the submission in `slot` is of the collection's kind.
    pub(crate) fn submission_is(&self, coll: Coll, slot: u32) -> bool {
        self.submissions
            .get(slot)
            .is_some_and(|s| s.kind.coll() == coll)
    }

    /// The sum of a submission's lines in cents (time at minutes / 60 × rate).
    pub(crate) fn submission_total(&self, s: &Submission) -> i64 {
        s.lines.iter().fold(0_i64, |acc, l| {
            acc.saturating_add(match s.kind {
                SubKind::Expense => self.expenses.get(*l).map_or(0, |e| e.amount),
                SubKind::Timesheet => self.time_entries.get(*l).map_or(0, TimeEntry::value),
            })
        })
    }

    /// Whether a submission carries a locked external reference (which blocks rejection).
    pub(crate) fn submission_locked(&self, coll: Coll, slot: u32) -> bool {
        self.refs_of(coll, slot)
            .iter()
            .any(|r| self.ext_refs.get(*r).is_some_and(|x| x.locked))
    }

    /// The slot of a subject named by model and id; `Submission` finds either kind.
    pub(crate) fn subject_slot(&self, model: &str, id: u64) -> Option<(Coll, u32)> {
        if model.eq_ignore_ascii_case("Submission") {
            return [Coll::ExpenseReportSubmissions, Coll::TimesheetSubmissions]
                .into_iter()
                .find_map(|c| self.slot_of(c, id).map(|s| (c, s)));
        }
        let coll = Coll::from_model(model)?;
        self.slot_of(coll, id).map(|s| (coll, s))
    }

    /// Records one event (and, when asked, a duplicate of it), at `now` or a little before it.
    pub(crate) fn emit(
        &mut self,
        event_type: &str,
        subject: (Coll, u32),
        user: u32,
        now: i64,
        changes: Value,
    ) {
        self.delivery.emitted += 1;
        let delay = if self.delivery.max_delay > 0 {
            self.delivery.rng.i64(0..=self.delivery.max_delay)
        } else {
            0
        };
        let event = Event {
            event_type: event_type.to_owned(),
            subject,
            user,
            changed_at: now,
            created: now - delay,
            changes,
        };
        let duplicate = self.delivery.duplicate_every > 0
            && self
                .delivery
                .emitted
                .is_multiple_of(u64::from(self.delivery.duplicate_every));
        if duplicate {
            let mut again = event.clone();
            again.created = now;
            self.events.push(event);
            self.events.push(again);
        } else {
            self.events.push(event);
        }
        self.touch();
    }

    /// Creates a submission of `kind` for `user` in project `ws` over `lines` (expense or
    /// time-entry slots): every line must be in that project, belong to nobody else's active
    /// submission, and (timesheets) fall in one week.
    pub(crate) fn create_submission(
        &mut self,
        kind: SubKind,
        ws: u32,
        user: u32,
        (title, comment): (String, Option<String>),
        lines: Vec<u32>,
        now: i64,
    ) -> Result<u32, Refusal> {
        if title.trim().is_empty() {
            return Err(refuse("title", "title can't be blank"));
        }
        if self.workspaces.get(ws).is_none() {
            return Err(refuse(
                "workspace_id",
                "workspace_id does not name a project",
            ));
        }
        if lines.is_empty() {
            return Err(refuse("line_item_ids", "line_item_ids can't be blank"));
        }
        let active = |db: &Db, s: Option<u32>| {
            s.and_then(|s| db.submissions.get(s))
                .is_some_and(|s| matches!(s.status, SubStatus::Pending | SubStatus::Approved))
        };
        let mut dates = Vec::new();
        for l in &lines {
            let (line_ws, current, date) = match kind {
                SubKind::Expense => match self.expenses.get(*l) {
                    Some(e) => (e.ws, e.report, e.date),
                    None => return Err(refuse("line_item_ids", "an expense does not exist")),
                },
                SubKind::Timesheet => match self.time_entries.get(*l) {
                    Some(t) => (t.ws, t.submission, t.date),
                    None => return Err(refuse("line_item_ids", "a time entry does not exist")),
                },
            };
            if line_ws != ws {
                return Err(refuse(
                    "line_item_ids",
                    "every line item must belong to the submission's project",
                ));
            }
            if active(self, current) {
                return Err(refuse(
                    "line_item_ids",
                    "a line item is already on a pending or approved submission",
                ));
            }
            dates.push(date);
        }
        let (start, end) = match kind {
            SubKind::Expense => (None, None),
            SubKind::Timesheet => {
                let first = dates.iter().min().copied().unwrap_or_default();
                let start = week_start(first);
                let end = start.checked_add(6.days()).unwrap_or(start);
                if dates.iter().any(|d| *d > end) {
                    return Err(refuse(
                        "line_item_ids",
                        "a timesheet submission covers one week",
                    ));
                }
                (Some(start), Some(end))
            }
        };
        let mut unique = Vec::with_capacity(lines.len());
        for l in lines {
            if !unique.contains(&l) {
                unique.push(l);
            }
        }
        let lines = unique;
        let slot = self.submissions.push(Submission {
            kind,
            title: title.trim().to_owned(),
            comment,
            ws,
            user,
            lines: lines.clone(),
            status: SubStatus::Pending,
            resolutions: Vec::new(),
            start,
            end,
            created: now,
            updated: now,
        });
        for l in lines {
            match kind {
                SubKind::Expense => {
                    if let Some(e) = self.expenses.get_mut(l) {
                        e.report = Some(slot);
                    }
                }
                SubKind::Timesheet => {
                    if let Some(t) = self.time_entries.get_mut(l) {
                        t.submission = Some(slot);
                    }
                }
            }
        }
        let created = format!("{}:created", kind.event_prefix());
        self.emit(&created, (kind.coll(), slot), user, now, json!({}));
        Ok(slot)
    }

    /// Approves, rejects or cancels a submission. Pending goes anywhere; an approved one may
    /// still be cancelled or rejected (inferred: the `locked` flag of external references exists
    /// to block rejection), unless a locked reference blocks it; rejected and cancelled are
    /// final. Emits `<kind>:updated` and, for reports, `expense:updated` per expense, in a
    /// seeded random order.
    pub(crate) fn resolve(
        &mut self,
        slot: u32,
        action: Action,
        description: Option<String>,
        by: u32,
        now: i64,
    ) -> Result<u32, Refusal> {
        let Some(s) = self.submissions.get(slot) else {
            return Err(refuse("id", "submission not found"));
        };
        let kind = s.kind;
        let from = s.status;
        let allowed = matches!(
            (from, action),
            (SubStatus::Pending, _) | (SubStatus::Approved, Action::Cancel | Action::Reject)
        );
        if !allowed {
            return Err(refuse(
                "status",
                format!(
                    "A {} submission cannot be {}",
                    from.name(),
                    action.status().name()
                ),
            ));
        }
        if from == SubStatus::Approved
            && action == Action::Reject
            && self.submission_locked(kind.coll(), slot)
        {
            return Err(refuse(
                "status",
                "This submission is locked by an external reference and cannot be rejected",
            ));
        }
        let r = self.resolutions.push(Resolution {
            action,
            description: description.clone(),
            target: slot,
            user: by,
            created: now,
            updated: now,
        });
        let lines = {
            let s = self
                .submissions
                .get_mut(slot)
                .ok_or_else(|| refuse("id", "submission not found"))?;
            s.status = action.status();
            s.resolutions.push(r);
            s.updated = now;
            s.lines.clone()
        };
        let approved = action == Action::Approve;
        for l in &lines {
            match kind {
                SubKind::Expense => {
                    if let Some(e) = self.expenses.get_mut(*l) {
                        e.updated = now;
                    }
                }
                SubKind::Timesheet => {
                    if let Some(t) = self.time_entries.get_mut(*l) {
                        t.approved = approved;
                        t.updated = now;
                    }
                }
            }
        }
        let status_change = json!({"status": [from.name(), action.status().name()]});
        let mut events: Vec<(String, (Coll, u32), Value)> = vec![(
            format!("{}:updated", kind.event_prefix()),
            (kind.coll(), slot),
            status_change,
        )];
        if kind == SubKind::Expense {
            for l in &lines {
                events.push((
                    "expense:updated".to_owned(),
                    (Coll::Expenses, *l),
                    json!({"approved": [!approved, approved]}),
                ));
            }
        }
        self.delivery.rng.shuffle(&mut events);
        for (t, subject, changes) in events {
            self.emit(&t, subject, by, now, changes);
        }
        self.touch();
        Ok(r)
    }

    /// Replaces a field's whole choice list: elements with an `id` keep (and may rename) that
    /// choice, elements without one always create a new choice, array order is the position,
    /// and every choice left out becomes inactive (values still point at it).
    pub(crate) fn replace_choices(
        &mut self,
        field: u32,
        wanted: &[(Option<u64>, Option<String>)],
        now: i64,
    ) -> Result<(), Refusal> {
        let Some(f) = self.fields.get(field) else {
            return Err(refuse("id", "custom field not found"));
        };
        if !matches!(f.value_type.as_str(), "single" | "multi") {
            return Err(refuse(
                "choices",
                "only single and multi custom fields have choices",
            ));
        }
        let old = f.choices.clone();
        // Check everything first: a refused list changes nothing.
        let mut plan = Vec::new();
        for (id, label) in wanted {
            match id {
                Some(id) => {
                    let slot = self
                        .choices
                        .slot_of(*id)
                        .filter(|s| self.choices.get(*s).is_some_and(|c| c.field == field))
                        .ok_or_else(|| {
                            refuse(
                                "choices",
                                format!("choice {id} is not a choice of this field"),
                            )
                        })?;
                    if label.as_ref().is_some_and(|l| l.trim().is_empty()) {
                        return Err(refuse("choices", "a choice label can't be blank"));
                    }
                    plan.push((Some(slot), label.clone()));
                }
                None => match label {
                    Some(l) if !l.trim().is_empty() => plan.push((None, Some(l.clone()))),
                    _ => return Err(refuse("choices", "a new choice needs a label")),
                },
            }
        }
        let mut list = Vec::new();
        for (position, (slot, label)) in plan.into_iter().enumerate() {
            let position = i64::try_from(position).unwrap_or(i64::MAX);
            let slot = match slot {
                Some(s) => {
                    if let Some(c) = self.choices.get_mut(s) {
                        if let Some(l) = label {
                            c.label = l.trim().to_owned();
                        }
                        c.position = position;
                        c.active = true;
                        c.updated = now;
                    }
                    s
                }
                None => self.choices.push(Choice {
                    field,
                    label: label.unwrap_or_default().trim().to_owned(),
                    position,
                    active: true,
                    created: now,
                    updated: now,
                }),
            };
            if !list.contains(&slot) {
                list.push(slot);
            }
        }
        for s in old {
            if !list.contains(&s)
                && let Some(c) = self.choices.get_mut(s)
            {
                c.active = false;
                c.updated = now;
            }
        }
        if let Some(f) = self.fields.get_mut(field) {
            f.choices = list;
            f.updated = now;
        }
        self.touch();
        Ok(())
    }

    /// Sets a field's value on a subject, replacing any earlier value (each write is a new id).
    pub(crate) fn set_value(
        &mut self,
        subject: (Coll, u32),
        field: u32,
        raw: &Value,
        setter: u32,
        now: i64,
    ) -> Result<u32, Refusal> {
        let Some(f) = self.fields.get(field) else {
            return Err(refuse(
                "custom_field_id",
                "custom_field_id names no custom field",
            ));
        };
        if !f.subject_type.eq_ignore_ascii_case(subject.0.model()) {
            return Err(refuse(
                "subject_type",
                format!("this custom field belongs to {} records", f.subject_type),
            ));
        }
        let (text, choices) = match f.value_type.as_str() {
            "single" | "multi" => {
                let ids = choice_ids(raw)
                    .ok_or_else(|| refuse("value", "value must list choice ids, e.g. [1, 2]"))?;
                let mut slots = Vec::new();
                for id in ids {
                    let slot = self
                        .choices
                        .slot_of(id)
                        .filter(|s| {
                            self.choices
                                .get(*s)
                                .is_some_and(|c| c.field == field && c.active)
                        })
                        .ok_or_else(|| {
                            refuse(
                                "value",
                                format!("{id} is not an active choice of this field"),
                            )
                        })?;
                    if !slots.contains(&slot) {
                        slots.push(slot);
                    }
                }
                if f.value_type == "single" && slots.len() > 1 {
                    return Err(refuse("value", "a single-choice field takes one choice"));
                }
                (String::new(), slots)
            }
            _ => (super::api::value_text(raw), Vec::new()),
        };
        let old: Vec<u32> = self
            .values
            .iter()
            .filter(|(_, v)| v.subject == subject && v.field == field)
            .map(|(s, _)| s)
            .collect();
        for s in &old {
            self.values.remove(*s);
        }
        let slot = self.values.push(FieldValue {
            subject,
            field,
            text,
            choices,
            setter,
            created: now,
            updated: now,
        });
        let verb = if old.is_empty() { "created" } else { "updated" };
        let event = format!(
            "{}:custom_field_value_{verb}",
            subject.0.key().trim_end_matches('s')
        );
        self.emit(&event, subject, setter, now, json!({}));
        Ok(slot)
    }
}

/// Choice ids from `"[1, 2]"`, `[1, "2"]`, `3` or `"3"`.
fn choice_ids(raw: &Value) -> Option<Vec<u64>> {
    let one = |v: &Value| match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    match raw {
        Value::Array(a) => a.iter().map(one).collect(),
        Value::String(s) if s.trim().starts_with('[') => {
            let inner = s.trim().trim_start_matches('[').trim_end_matches(']');
            inner
                .split(',')
                .filter(|t| !t.trim().is_empty())
                .map(|t| t.trim().trim_matches('"').parse().ok())
                .collect()
        }
        other => one(other).map(|id| vec![id]),
    }
}

/// The Sunday that starts the week of `d` (Kantata's timesheet weeks; the start day is a guess).
pub(crate) fn week_start(d: Date) -> Date {
    let back = i64::from(d.weekday().to_sunday_zero_offset());
    d.checked_sub(back.days()).unwrap_or(d)
}

const CATEGORIES: [&str; 6] = [
    "Travel",
    "Mileage",
    "Lodging",
    "Food",
    "Entertainment",
    "Other",
];
const REPORT_NOTES: [&str; 6] = [
    "Flight to client site",
    "Mileage to workshop",
    "Hotel, two nights",
    "Team lunch",
    "Client dinner",
    "Courier",
];
const VENDORS: [(&str, bool); 4] = [
    ("Skyline Airways", false),
    ("Metro Cabs", false),
    ("Grand Harbour Hotel", false),
    ("Old Print Shop", true),
];

/// Adds the scenario data to a generated account: categories, vendors, expense reports and
/// timesheets in every status (mostly approved), a "Xero region" custom field with a value on
/// some projects, and the events those changes emitted. Uses its own random stream, so the
/// records generated before it do not change.
pub(crate) fn seed(db: &mut Db, seed: u64, size: usize, now: i64) {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5ce0_a210);
    db.delivery = Delivery::new(seed);
    let day = 86_400_i64;
    let start = now - 400 * day;
    for name in CATEGORIES {
        db.categories.push(Category {
            name: name.to_owned(),
            deleted_at: None,
            created: start,
            updated: start,
        });
    }
    // A retired category: hidden by default, still named by an old expense.
    let retired = db.categories.push(Category {
        name: "Subsistence (retired)".to_owned(),
        deleted_at: Some(now - 90 * day),
        created: start,
        updated: now - 90 * day,
    });
    for (name, archived) in VENDORS {
        db.vendors.push(Vendor {
            name: name.to_owned(),
            archived,
            created: start,
            updated: start,
        });
    }
    // Expenses already there get the category their text names.
    let slots: Vec<u32> = db.expenses.slots().collect();
    for s in slots {
        if let Some(e) = db.expenses.get_mut(s) {
            e.category_id = CATEGORIES
                .iter()
                .position(|c| *c == e.category)
                .and_then(|i| u32::try_from(i).ok());
        }
    }
    // Two projects in three require expense approval; in the others every expense counts as
    // approved without a report.
    let ws_slots: Vec<u32> = db.workspaces.slots().collect();
    for w in &ws_slots {
        if let Some(ws) = db.workspaces.get_mut(*w) {
            ws.expense_approvals = w % 3 != 2;
        }
    }
    let live: Vec<u32> = ws_slots
        .iter()
        .copied()
        .filter(|w| {
            db.workspaces
                .get(*w)
                .is_some_and(|x| !x.archived && x.expense_approvals)
        })
        .collect();
    if live.is_empty() {
        return;
    }
    let today = local_date(now);

    // Expense reports: index 0, 3, 6... belong to the account administrator (user 0).
    let n_reports = 10 + size / 2;
    for k in 0..n_reports {
        let ws = live[rng.usize(..live.len())];
        let user = if k % 3 == 0 {
            0
        } else {
            db.workspaces
                .get(ws)
                .map_or(0, |w| w.participants[rng.usize(..w.participants.len())])
        };
        let n = rng.usize(2..=4);
        let first_cat = rng.usize(..CATEGORIES.len());
        let age = rng.i64(4..40);
        let mut lines = Vec::new();
        let mut latest = start;
        for j in 0..n {
            let c = (first_cat + j) % CATEGORIES.len();
            let date = today
                .checked_sub((age + rng.i64(1..6)).days())
                .unwrap_or(today);
            let made = now - (age + 1) * day + rng.i64(0..day / 2);
            latest = latest.max(made);
            let vendor = match c {
                0 => Some(0),
                1 => Some(1),
                2 => Some(2),
                _ => None,
            };
            let category_id = if k == 4 && j == 0 {
                Some(retired)
            } else {
                u32::try_from(c).ok()
            };
            lines.push(db.expenses.push(Expense {
                ws,
                user,
                date,
                category: Cow::Borrowed(CATEGORIES[c]),
                amount: rng.i64(500..90_000),
                notes: Cow::Borrowed(REPORT_NOTES[c]),
                billable: rng.u8(..4) != 0,
                reimbursable: rng.u8(..3) != 0,
                invoice: None,
                category_id,
                vendor,
                report: None,
                created: made,
                updated: made,
            }));
        }
        let submitted = latest + rng.i64(600..day / 4);
        let title = format!("Expenses {}", local_date(submitted));
        let comment = (k % 2 == 0).then(|| "Receipts attached".to_owned());
        let Ok(slot) = db.create_submission(
            SubKind::Expense,
            ws,
            user,
            (title, comment),
            lines,
            submitted,
        ) else {
            continue;
        };
        let resolved = (submitted + rng.i64(day / 2..3 * day)).min(now - 60);
        let action = match k % 8 {
            5 => None,
            6 => Some(Action::Reject),
            7 => Some(Action::Cancel),
            _ => Some(Action::Approve),
        };
        if let Some(a) = action {
            let text = match a {
                Action::Approve => None,
                Action::Reject => Some("Missing receipt for the hotel".to_owned()),
                Action::Cancel => Some("Submitted twice".to_owned()),
            };
            let _ = db.resolve(slot, a, text, 0, resolved);
        }
    }

    // Timesheets: one week of time each, in the last six weeks.
    let n_sheets = 5 + size / 2;
    for k in 0..n_sheets {
        let ws = live[rng.usize(..live.len())];
        let user = db
            .workspaces
            .get(ws)
            .map_or(0, |w| w.participants[rng.usize(..w.participants.len())]);
        let week = week_start(
            today
                .checked_sub(((k as i64 % 6) * 7 + 7).days())
                .unwrap_or(today),
        );
        let mut lines = Vec::new();
        for j in 0..rng.i64(2..=5) {
            let date = week.checked_add((j + 1).days()).unwrap_or(week);
            let made = date
                .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::Offset::constant(
                    super::util::ACCOUNT_OFFSET_HOURS,
                )))
                .map_or(now - 30 * day, |z| z.timestamp().as_second())
                + 17 * 3600;
            // Every fourth line has no billing rate.
            let rate_set = (k + usize::try_from(j).unwrap_or(0)) % 4 != 3;
            let rate = if rate_set {
                [12_500, 15_000, 17_500][rng.usize(..3)]
            } else {
                0
            };
            lines.push(db.time_entries.push(TimeEntry {
                ws,
                user,
                story: None,
                date,
                minutes: 30 * rng.i64(1..=16),
                billable: rate_set,
                notes: Cow::Borrowed("Delivery work"),
                rate,
                rate_set,
                cost_rate: 7_000,
                approved: false,
                invoice: None,
                submission: None,
                created: made.min(now - 3_600),
                updated: made.min(now - 3_600),
            }));
        }
        let submitted = week
            .checked_add(6.days())
            .ok()
            .and_then(|d| {
                d.to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::Offset::constant(
                    super::util::ACCOUNT_OFFSET_HOURS,
                )))
                .ok()
            })
            .map_or(now - 2 * day, |z| z.timestamp().as_second() + 18 * 3600)
            .min(now - 7_200);
        let title = format!("Week of {week}");
        let Ok(slot) = db.create_submission(
            SubKind::Timesheet,
            ws,
            user,
            (title, None),
            lines,
            submitted,
        ) else {
            continue;
        };
        let action = match k % 5 {
            3 => None,
            4 => Some(Action::Reject),
            _ => Some(Action::Approve),
        };
        if let Some(a) = action {
            let at = (submitted + day).min(now - 60);
            let _ = db.resolve(slot, a, None, 0, at);
        }
    }

    // The custom fields a Xero sync reads and fills.
    let region = db.fields.push(CustomField {
        name: "Xero region".to_owned(),
        subject_type: "Workspace".to_owned(),
        value_type: "single".to_owned(),
        unique: false,
        choices: Vec::new(),
        created: start,
        updated: start,
    });
    let mut list = Vec::new();
    for (i, label) in ["EMEA", "Americas", "APAC"].into_iter().enumerate() {
        list.push(db.choices.push(Choice {
            field: region,
            label: label.to_owned(),
            position: i64::try_from(i).unwrap_or(0),
            active: true,
            created: start,
            updated: start,
        }));
    }
    if let Some(f) = db.fields.get_mut(region) {
        f.choices = list.clone();
    }
    db.fields.push(CustomField {
        name: "Xero contact".to_owned(),
        subject_type: "Workspace".to_owned(),
        value_type: "string".to_owned(),
        unique: false,
        choices: Vec::new(),
        created: start,
        updated: start,
    });
    for (i, w) in ws_slots.iter().take(3).enumerate() {
        db.values.push(FieldValue {
            subject: (Coll::Workspaces, *w),
            field: region,
            text: String::new(),
            choices: vec![list[i % list.len()]],
            setter: 0,
            created: start + day,
            updated: start + day,
        });
    }
    db.touch();
}

/// The event types the simulator emits, with their subjects.
const EVENT_TYPES: [(&str, &str); 17] = [
    ("expense_report:created", "An expense report was submitted"),
    (
        "expense_report:updated",
        "An expense report changed (approved, rejected, cancelled)",
    ),
    ("timesheet:created", "A timesheet was submitted"),
    (
        "timesheet:updated",
        "A timesheet changed (approved, rejected, cancelled)",
    ),
    ("expense:created", "An expense was created"),
    ("expense:updated", "An expense changed"),
    ("expense:deleted", "An expense was deleted"),
    ("time_entry:created", "A time entry was created"),
    ("time_entry:updated", "A time entry changed"),
    ("time_entry:deleted", "A time entry was deleted"),
    ("custom_field:created", "A custom field was created"),
    (
        "custom_field:updated",
        "A custom field or its choices changed",
    ),
    ("vendor:created", "A vendor was created"),
    ("vendor:updated", "A vendor changed"),
    (
        "workspace:custom_field_value_created",
        "A project custom field value was set",
    ),
    (
        "workspace:custom_field_value_updated",
        "A project custom field value changed",
    ),
    (
        "user:custom_field_value_updated",
        "A user custom field value changed",
    ),
];

/// `GET /subscribed_events/event_types`: the type names and a minimal schema of each.
pub(crate) fn event_types() -> Value {
    let names: Vec<&str> = EVENT_TYPES.iter().map(|(n, _)| *n).collect();
    let mut schemas = serde_json::Map::new();
    for (name, description) in EVENT_TYPES {
        schemas.insert(
            name.to_owned(),
            json!({
                "name": name,
                "description": description,
                "fields": {
                    "id": {"name": "id", "type": "string", "description": "The subject's id"},
                    "updated_at": {"name": "updated_at", "type": "datetime", "description": "When the subject changed"}
                }
            }),
        );
    }
    json!({"subscribed_event_types": names, "subscribed_event_type_schemas": schemas})
}
