//! The test hooks of the scenario data: what tests do to the account without going through the
//! API (submit, approve, reject, cancel, change an expense, log time), and what they read back
//! that the API hides (inactive choices, the whole event log regardless of retention). Every
//! change goes through the same rules as the HTTP routes and emits the same events.

use std::borrow::Cow;

use serde_json::json;

use super::KantataState;
use super::scenarios::{Action, SubKind};
use super::store::{Coll, Expense, TimeEntry};
use super::util::{parse_date, render_time};

/// Which kind of submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmissionKind {
    /// `/expense_report_submissions`.
    ExpenseReport,
    /// `/timesheet_submissions`.
    Timesheet,
}

impl SubmissionKind {
    fn inner(self) -> SubKind {
        match self {
            SubmissionKind::ExpenseReport => SubKind::Expense,
            SubmissionKind::Timesheet => SubKind::Timesheet,
        }
    }
}

/// What to do with a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    /// `PUT …/approve`.
    Approve,
    /// `PUT …/reject`.
    Reject,
    /// `PUT …/cancel`.
    Cancel,
}

/// A summary of one submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionInfo {
    /// Id.
    pub id: String,
    /// Which kind.
    pub kind: SubmissionKind,
    /// `pending`, `approved`, `rejected` or `cancelled`.
    pub status: String,
    /// Who submitted it.
    pub user_id: String,
    /// Its project.
    pub workspace_id: String,
    /// Its expenses or time entries.
    pub line_ids: Vec<String>,
    /// `line_item_total_in_cents` as served.
    pub total_in_cents: i64,
    /// `updated_at`, Unix seconds.
    pub updated_at: i64,
}

/// One choice of a custom field, active or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChoiceInfo {
    /// Id.
    pub id: String,
    /// Label.
    pub label: String,
    /// Position in the field's list (an inactive choice keeps its last one).
    pub position: i64,
    /// False once a choice-list replacement left it out.
    pub active: bool,
    /// How many stored values point at it.
    pub values: usize,
}

/// One Subscribed Event, as stored (retention not applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventInfo {
    /// Id.
    pub id: String,
    /// E.g. `expense_report:updated`.
    pub event_type: String,
    /// E.g. `ExpenseReportSubmission`.
    pub subject_type: String,
    /// The subject's id.
    pub subject_id: String,
    /// Who made the change.
    pub user_id: String,
    /// `created_at`, Unix seconds (may be earlier than the change under injected delays).
    pub created_at: i64,
    /// `subject_changed_at`, Unix seconds.
    pub subject_changed_at: i64,
}

fn id(coll: Coll, slot: u32) -> String {
    (coll.base() + u64::from(slot)).to_string()
}

fn slot(db: &super::Db, coll: Coll, text: &str) -> Result<u32, String> {
    text.parse::<u64>()
        .ok()
        .and_then(|n| db.slot_of(coll, n))
        .ok_or_else(|| format!("no {} with id {text}", coll.model()))
}

impl KantataState {
    fn submission_info(db: &super::Db, s: u32) -> Option<SubmissionInfo> {
        let sub = db.submissions.get(s)?;
        let (kind, line_coll) = match sub.kind {
            SubKind::Expense => (SubmissionKind::ExpenseReport, Coll::Expenses),
            SubKind::Timesheet => (SubmissionKind::Timesheet, Coll::TimeEntries),
        };
        Some(SubmissionInfo {
            id: id(sub.kind.coll(), s),
            kind,
            status: sub.status.name().to_owned(),
            user_id: id(Coll::Users, sub.user),
            workspace_id: id(Coll::Workspaces, sub.ws),
            line_ids: sub.lines.iter().map(|l| id(line_coll, *l)).collect(),
            total_in_cents: db.submission_total(sub),
            updated_at: sub.updated,
        })
    }

    /// Every submission of a kind, in id order.
    pub fn submissions(&self, kind: SubmissionKind) -> Vec<SubmissionInfo> {
        let db = self.shared.read();
        db.all_slots(kind.inner().coll())
            .into_iter()
            .filter_map(|s| Self::submission_info(&db, s))
            .collect()
    }

    /// One submission by id (either kind).
    pub fn submission(&self, id: &str) -> Option<SubmissionInfo> {
        let db = self.shared.read();
        let s = db.submissions.slot_of(id.parse().ok()?)?;
        Self::submission_info(&db, s)
    }

    /// Submits expenses (or time entries) of one project for `user_id`, as the create route does.
    pub fn create_submission(
        &self,
        kind: SubmissionKind,
        workspace_id: &str,
        user_id: &str,
        title: &str,
        line_ids: &[&str],
    ) -> Result<String, String> {
        let now = self.shared.now_secs();
        let mut db = self.shared.write();
        let ws = slot(&db, Coll::Workspaces, workspace_id)?;
        let user = slot(&db, Coll::Users, user_id)?;
        let line_coll = match kind {
            SubmissionKind::ExpenseReport => Coll::Expenses,
            SubmissionKind::Timesheet => Coll::TimeEntries,
        };
        let lines = line_ids
            .iter()
            .map(|l| slot(&db, line_coll, l))
            .collect::<Result<Vec<_>, _>>()?;
        let s = db
            .create_submission(kind.inner(), ws, user, (title.to_owned(), None), lines, now)
            .map_err(|(f, m)| format!("{f}: {m}"))?;
        db.touch();
        Ok(id(kind.inner().coll(), s))
    }

    /// Approves, rejects or cancels a submission as the account administrator, with the same
    /// rules and events as the HTTP routes.
    pub fn resolve_submission(
        &self,
        id: &str,
        how: Resolve,
        description: Option<&str>,
    ) -> Result<(), String> {
        let now = self.shared.now_secs();
        let mut db = self.shared.write();
        let s = id
            .parse::<u64>()
            .ok()
            .and_then(|n| db.submissions.slot_of(n))
            .ok_or_else(|| format!("no submission with id {id}"))?;
        let action = match how {
            Resolve::Approve => Action::Approve,
            Resolve::Reject => Action::Reject,
            Resolve::Cancel => Action::Cancel,
        };
        db.resolve(s, action, description.map(str::to_owned), 0, now)
            .map(|_| ())
            .map_err(|(f, m)| format!("{f}: {m}"))
    }

    /// Changes an expense's amount (cents), bumping `updated_at` and emitting `expense:updated`.
    pub fn set_expense_amount(&self, expense_id: &str, cents: i64) -> Result<(), String> {
        let now = self.shared.now_secs();
        let mut db = self.shared.write();
        let s = slot(&db, Coll::Expenses, expense_id)?;
        if let Some(e) = db.expenses.get_mut(s) {
            e.amount = cents;
            e.updated = now;
        }
        db.emit(
            "expense:updated",
            (Coll::Expenses, s),
            0,
            now,
            json!({"amount_in_cents": cents}),
        );
        Ok(())
    }

    /// Changes a time entry's minutes, bumping `updated_at` and emitting `time_entry:updated`.
    pub fn set_time_entry_minutes(&self, entry_id: &str, minutes: i64) -> Result<(), String> {
        let now = self.shared.now_secs();
        let mut db = self.shared.write();
        let s = slot(&db, Coll::TimeEntries, entry_id)?;
        if let Some(t) = db.time_entries.get_mut(s) {
            t.minutes = minutes;
            t.updated = now;
        }
        db.emit(
            "time_entry:updated",
            (Coll::TimeEntries, s),
            0,
            now,
            json!({"time_in_minutes": minutes}),
        );
        Ok(())
    }

    /// Logs an expense (not on any report) and returns its id.
    pub fn add_expense(
        &self,
        workspace_id: &str,
        user_id: &str,
        date: &str,
        category_id: &str,
        cents: i64,
    ) -> Result<String, String> {
        let now = self.shared.now_secs();
        let mut db = self.shared.write();
        let ws = slot(&db, Coll::Workspaces, workspace_id)?;
        let user = slot(&db, Coll::Users, user_id)?;
        let cat = slot(&db, Coll::ExpenseCategories, category_id)?;
        let date = parse_date(date).ok_or_else(|| format!("{date} is not a date"))?;
        let name = db
            .categories
            .get(cat)
            .map(|c| c.name.clone())
            .unwrap_or_default();
        let s = db.expenses.push(Expense {
            ws,
            user,
            date,
            category: Cow::Owned(name),
            amount: cents,
            notes: Cow::Borrowed(""),
            billable: true,
            reimbursable: true,
            invoice: None,
            category_id: Some(cat),
            vendor: None,
            report: None,
            created: now,
            updated: now,
        });
        db.emit("expense:created", (Coll::Expenses, s), user, now, json!({}));
        Ok(id(Coll::Expenses, s))
    }

    /// Logs time (`rate_in_cents` null when `rate` is `None`) and returns the entry's id.
    pub fn add_time_entry(
        &self,
        workspace_id: &str,
        user_id: &str,
        date: &str,
        minutes: i64,
        rate: Option<i64>,
    ) -> Result<String, String> {
        let now = self.shared.now_secs();
        let mut db = self.shared.write();
        let ws = slot(&db, Coll::Workspaces, workspace_id)?;
        let user = slot(&db, Coll::Users, user_id)?;
        let date = parse_date(date).ok_or_else(|| format!("{date} is not a date"))?;
        let s = db.time_entries.push(TimeEntry {
            ws,
            user,
            story: None,
            date,
            minutes,
            billable: true,
            notes: Cow::Borrowed(""),
            rate: rate.unwrap_or(0),
            rate_set: rate.is_some(),
            cost_rate: 0,
            approved: false,
            invoice: None,
            submission: None,
            created: now,
            updated: now,
        });
        db.emit(
            "time_entry:created",
            (Coll::TimeEntries, s),
            user,
            now,
            json!({}),
        );
        Ok(id(Coll::TimeEntries, s))
    }

    /// The id of the custom field with this name.
    pub fn custom_field_id(&self, name: &str) -> Option<String> {
        let db = self.shared.read();
        db.fields
            .iter()
            .find(|(_, f)| f.name == name)
            .map(|(s, _)| id(Coll::CustomFields, s))
    }

    /// Every choice of a custom field, inactive ones included: active ones in list order, then
    /// inactive ones in id order.
    pub fn custom_field_choices(&self, field_id: &str) -> Vec<ChoiceInfo> {
        let db = self.shared.read();
        let Ok(field) = slot(&db, Coll::CustomFields, field_id) else {
            return Vec::new();
        };
        let mut all: Vec<(u32, &super::store::Choice)> = db
            .choices
            .iter()
            .filter(|(_, c)| c.field == field)
            .collect();
        all.sort_by_key(|(s, c)| (!c.active, if c.active { c.position } else { 0 }, *s));
        all.into_iter()
            .map(|(s, c)| ChoiceInfo {
                id: id(Coll::CustomFieldChoices, s),
                label: c.label.clone(),
                position: c.position,
                active: c.active,
                values: db
                    .values
                    .iter()
                    .filter(|(_, v)| v.choices.contains(&s))
                    .count(),
            })
            .collect()
    }

    /// The whole events log in id order (retention is applied only by the API).
    pub fn events(&self) -> Vec<EventInfo> {
        let db = self.shared.read();
        db.events
            .iter()
            .map(|(s, e)| EventInfo {
                id: id(Coll::SubscribedEvents, s),
                event_type: e.event_type.clone(),
                subject_type: e.subject.0.event_model().to_owned(),
                subject_id: id(e.subject.0, e.subject.1),
                user_id: id(Coll::Users, e.user),
                created_at: e.created,
                subject_changed_at: e.changed_at,
            })
            .collect()
    }

    /// Event delivery faults from now on: every `duplicate_every`-th event is delivered twice
    /// (0: never), and `created_at` lags the change by a seeded 0..=`max_delay_secs` seconds, so
    /// events arrive out of order.
    pub fn set_event_delivery(&self, duplicate_every: u32, max_delay_secs: i64) {
        let mut db = self.shared.write();
        db.delivery.duplicate_every = duplicate_every;
        db.delivery.max_delay = max_delay_secs.max(0);
    }

    /// `created_at` of an event as the API renders it (for building cursors in tests).
    pub fn render_time(&self, secs: i64) -> String {
        render_time(secs)
    }
}
