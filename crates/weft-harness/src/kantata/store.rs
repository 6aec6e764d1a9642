//! What the Kantata simulator holds: typed tables of users, groups, projects, time entries,
//! expenses, invoices and their line items, payments and external references, the seeded
//! generator that fills them, and cached sort orders so list calls never sort per request.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jiff::ToSpan;
use jiff::civil::Date;

pub(crate) use super::scenarios::{
    Category, Choice, CustomField, Delivery, Event, FieldValue, Resolution, Submission, Vendor,
};
use super::util::local_date;

/// Text that is usually one of a few generated phrases (shared, no allocation) and sometimes
/// written by a client.
pub(crate) type Text = Cow<'static, str>;

/// Every collection the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Coll {
    Users,
    WorkspaceGroups,
    Workspaces,
    TimeEntries,
    Expenses,
    Invoices,
    FixedFeeItems,
    AdditionalItems,
    BillingMilestones,
    Stories,
    ExternalPayments,
    ExternalReferences,
    ExpenseReportSubmissions,
    TimesheetSubmissions,
    Resolutions,
    ExpenseCategories,
    Vendors,
    CustomFields,
    CustomFieldChoices,
    CustomFieldValues,
    SubscribedEvents,
}

impl Coll {
    /// Every collection served by the index and show routes.
    pub(crate) const ROUTED: [Coll; 19] = [
        Coll::Users,
        Coll::WorkspaceGroups,
        Coll::Workspaces,
        Coll::TimeEntries,
        Coll::Expenses,
        Coll::Invoices,
        Coll::FixedFeeItems,
        Coll::AdditionalItems,
        Coll::BillingMilestones,
        Coll::ExternalPayments,
        Coll::ExternalReferences,
        Coll::ExpenseReportSubmissions,
        Coll::TimesheetSubmissions,
        Coll::ExpenseCategories,
        Coll::Vendors,
        Coll::CustomFields,
        Coll::CustomFieldChoices,
        Coll::CustomFieldValues,
        Coll::SubscribedEvents,
    ];

    /// The top-level key and path segment.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Coll::Users => "users",
            Coll::WorkspaceGroups => "workspace_groups",
            Coll::Workspaces => "workspaces",
            Coll::TimeEntries => "time_entries",
            Coll::Expenses => "expenses",
            Coll::Invoices => "invoices",
            Coll::FixedFeeItems => "fixed_fee_items",
            Coll::AdditionalItems => "additional_items",
            Coll::BillingMilestones => "billing_milestones",
            Coll::Stories => "stories",
            Coll::ExternalPayments => "external_payments",
            Coll::ExternalReferences => "external_references",
            Coll::ExpenseReportSubmissions => "expense_report_submissions",
            Coll::TimesheetSubmissions => "timesheet_submissions",
            Coll::Resolutions => "resolutions",
            Coll::ExpenseCategories => "expense_categories",
            Coll::Vendors => "vendors",
            Coll::CustomFields => "custom_fields",
            Coll::CustomFieldChoices => "custom_field_choices",
            Coll::CustomFieldValues => "custom_field_values",
            Coll::SubscribedEvents => "subscribed_events",
        }
    }

    /// The singular body key of writes.
    pub(crate) fn singular(self) -> &'static str {
        match self {
            Coll::Users => "user",
            Coll::WorkspaceGroups => "workspace_group",
            Coll::Workspaces => "workspace",
            Coll::TimeEntries => "time_entry",
            Coll::Expenses => "expense",
            Coll::Invoices => "invoice",
            Coll::FixedFeeItems => "fixed_fee_item",
            Coll::AdditionalItems => "additional_item",
            Coll::BillingMilestones => "billing_milestone",
            Coll::Stories => "story",
            Coll::ExternalPayments => "external_payment",
            Coll::ExternalReferences => "external_reference",
            Coll::ExpenseReportSubmissions => "expense_report_submission",
            Coll::TimesheetSubmissions => "timesheet_submission",
            Coll::Resolutions => "resolution",
            Coll::ExpenseCategories => "expense_category",
            Coll::Vendors => "vendor",
            Coll::CustomFields => "custom_field",
            Coll::CustomFieldChoices => "custom_field_choice",
            Coll::CustomFieldValues => "custom_field_value",
            Coll::SubscribedEvents => "subscribed_event",
        }
    }

    /// The model name used in `subject_type` and `subject_ref`.
    pub(crate) fn model(self) -> &'static str {
        match self {
            Coll::Users => "User",
            Coll::WorkspaceGroups => "WorkspaceGroup",
            Coll::Workspaces => "Workspace",
            Coll::TimeEntries => "TimeEntry",
            Coll::Expenses => "Expense",
            Coll::Invoices => "Invoice",
            Coll::FixedFeeItems => "FixedFeeItem",
            Coll::AdditionalItems => "AdditionalItem",
            Coll::BillingMilestones => "BillingMilestone",
            Coll::Stories => "Story",
            Coll::ExternalPayments => "ExternalPayment",
            Coll::ExternalReferences => "ExternalReference",
            // Both kinds of submission are one model; external references name it so.
            Coll::ExpenseReportSubmissions | Coll::TimesheetSubmissions => "Submission",
            Coll::Resolutions => "Resolution",
            Coll::ExpenseCategories => "ExpenseCategory",
            Coll::Vendors => "Vendor",
            Coll::CustomFields => "CustomField",
            Coll::CustomFieldChoices => "CustomFieldChoice",
            Coll::CustomFieldValues => "CustomFieldValue",
            Coll::SubscribedEvents => "SubscribedEvent",
        }
    }

    /// The collection for a path segment.
    pub(crate) fn from_key(key: &str) -> Option<Coll> {
        Coll::ROUTED.into_iter().find(|c| c.key() == key)
    }

    /// The model name Subscribed Events use in `subject_type` (submissions by kind).
    pub(crate) fn event_model(self) -> &'static str {
        match self {
            Coll::ExpenseReportSubmissions => "ExpenseReportSubmission",
            Coll::TimesheetSubmissions => "TimesheetSubmission",
            other => other.model(),
        }
    }

    /// The collection for a `subject_type` model name.
    pub(crate) fn from_model(model: &str) -> Option<Coll> {
        Coll::ROUTED
            .into_iter()
            .find(|c| c.model().eq_ignore_ascii_case(model))
    }

    /// The first id of the collection: ids are `base + slot`, in ranges that differ per type
    /// so that a client mixing up types notices.
    pub(crate) fn base(self) -> u64 {
        match self {
            Coll::Users => 5_100_000,
            Coll::WorkspaceGroups => 3_200_000,
            Coll::Workspaces => 40_000_000,
            Coll::TimeEntries => 900_000_000,
            Coll::Expenses => 70_000_000,
            Coll::Invoices => 6_000_000,
            Coll::FixedFeeItems => 8_000_000,
            Coll::AdditionalItems => 9_000_000,
            Coll::BillingMilestones => 9_500_000,
            Coll::Stories => 300_000_000,
            Coll::ExternalPayments => 1_200_000,
            Coll::ExternalReferences => 2_400_000,
            // One id space for both kinds of submission (they share a table).
            Coll::ExpenseReportSubmissions | Coll::TimesheetSubmissions => 7_700_000,
            Coll::Resolutions => 7_900_000,
            Coll::ExpenseCategories => 450_000,
            Coll::Vendors => 460_000,
            Coll::CustomFields => 610_000,
            Coll::CustomFieldChoices => 620_000,
            Coll::CustomFieldValues => 630_000,
            Coll::SubscribedEvents => 880_000_000,
        }
    }
}

/// A table of one record type: slot `n` holds id `base + n`; deleted records leave `None`.
#[derive(Debug)]
pub(crate) struct Table<T> {
    pub(crate) rows: Vec<Option<T>>,
    base: u64,
}

impl<T> Table<T> {
    pub(crate) fn new(coll: Coll) -> Self {
        Self {
            rows: Vec::new(),
            base: coll.base(),
        }
    }

    /// The record in `slot`, if live.
    pub(crate) fn get(&self, slot: u32) -> Option<&T> {
        self.rows.get(slot as usize).and_then(Option::as_ref)
    }

    /// The record in `slot`, mutably.
    pub(crate) fn get_mut(&mut self, slot: u32) -> Option<&mut T> {
        self.rows.get_mut(slot as usize).and_then(Option::as_mut)
    }

    /// The slot of a live record with this id.
    pub(crate) fn slot_of(&self, id: u64) -> Option<u32> {
        let slot = u32::try_from(id.checked_sub(self.base)?).ok()?;
        self.get(slot).map(|_| slot)
    }

    /// Appends a record, returning its slot.
    pub(crate) fn push(&mut self, row: T) -> u32 {
        self.rows.push(Some(row));
        u32::try_from(self.rows.len() - 1).unwrap_or(u32::MAX)
    }

    /// Removes a record.
    pub(crate) fn remove(&mut self, slot: u32) -> Option<T> {
        self.rows.get_mut(slot as usize).and_then(Option::take)
    }

    /// Live slots in id order.
    pub(crate) fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_some())
            .map(|(i, _)| u32::try_from(i).unwrap_or(u32::MAX))
    }

    /// Live records with their slots.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &T)> + '_ {
        self.rows.iter().enumerate().filter_map(|(i, r)| {
            r.as_ref()
                .map(|r| (u32::try_from(i).unwrap_or(u32::MAX), r))
        })
    }
}

/// An account member.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) full_name: String,
    pub(crate) email: String,
    pub(crate) headline: Text,
    pub(crate) disabled: bool,
    pub(crate) created: i64,
    pub(crate) updated: i64,
}

/// A workspace group (a client when `company`).
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub(crate) name: String,
    pub(crate) company: bool,
    pub(crate) contact_name: String,
    pub(crate) email: String,
    pub(crate) phone: String,
    pub(crate) address: String,
    pub(crate) website: String,
    pub(crate) notes: Text,
    pub(crate) workspaces: Vec<u32>,
    pub(crate) created: i64,
    pub(crate) updated: i64,
}

/// A project.
#[derive(Debug, Clone)]
pub(crate) struct Workspace {
    pub(crate) title: String,
    pub(crate) description: Text,
    pub(crate) archived: bool,
    pub(crate) start: Option<Date>,
    pub(crate) due: Option<Date>,
    pub(crate) access_level: &'static str,
    pub(crate) budgeted: bool,
    pub(crate) price_in_cents: i64,
    pub(crate) groups: Vec<u32>,
    pub(crate) primary_group: Option<u32>,
    pub(crate) participants: Vec<u32>,
    pub(crate) creator: u32,
    /// Whether expenses here need an approved expense report to count as approved.
    pub(crate) expense_approvals: bool,
    pub(crate) created: i64,
    pub(crate) updated: i64,
}

/// Logged time.
#[derive(Debug, Clone)]
pub(crate) struct TimeEntry {
    pub(crate) ws: u32,
    pub(crate) user: u32,
    pub(crate) story: Option<u64>,
    pub(crate) date: Date,
    pub(crate) minutes: i64,
    pub(crate) billable: bool,
    pub(crate) notes: Text,
    pub(crate) rate: i64,
    /// False when the entry has no billing rate (`rate_in_cents` is null).
    pub(crate) rate_set: bool,
    pub(crate) cost_rate: i64,
    pub(crate) approved: bool,
    pub(crate) invoice: Option<u32>,
    /// The timesheet submission it was last submitted on.
    pub(crate) submission: Option<u32>,
    pub(crate) created: i64,
    pub(crate) updated: i64,
}

impl TimeEntry {
    /// The entry's value: minutes / 60 × hourly rate, rounded half up to a cent.
    pub(crate) fn value(&self) -> i64 {
        self.minutes.saturating_mul(self.rate).saturating_add(30) / 60
    }
}

/// A logged cost.
#[derive(Debug, Clone)]
pub(crate) struct Expense {
    pub(crate) ws: u32,
    pub(crate) user: u32,
    pub(crate) date: Date,
    pub(crate) category: Text,
    pub(crate) amount: i64,
    pub(crate) notes: Text,
    pub(crate) billable: bool,
    pub(crate) reimbursable: bool,
    pub(crate) invoice: Option<u32>,
    /// Slot of its expense category, if any.
    pub(crate) category_id: Option<u32>,
    /// Slot of the vendor it is payable to, if any.
    pub(crate) vendor: Option<u32>,
    /// The expense report it was last submitted on.
    pub(crate) report: Option<u32>,
    pub(crate) created: i64,
    pub(crate) updated: i64,
}

/// A fixed-fee or additional line of an invoice (`story` is always `None` for additional items).
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub(crate) invoice: u32,
    pub(crate) ws: u32,
    pub(crate) amount: i64,
    pub(crate) notes: Text,
    pub(crate) taxable: bool,
    pub(crate) story: Option<u64>,
    pub(crate) created: i64,
    pub(crate) updated: i64,
}

/// One line of an invoice, by kind and slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Line {
    Time(u32),
    Expense(u32),
    Fixed(u32),
    Additional(u32),
}

/// The documented invoice statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    New,
    Paid,
    Cancelled,
}

impl Status {
    /// Kantata's phrase.
    pub(crate) fn phrase(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Paid => "accepted payment",
            Status::Cancelled => "cancelled",
        }
    }
}

/// An invoice.
#[derive(Debug, Clone)]
pub(crate) struct Invoice {
    pub(crate) workspaces: Vec<u32>,
    pub(crate) user: u32,
    pub(crate) recipient: Option<u32>,
    pub(crate) number: i64,
    pub(crate) user_title: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) purchase_order: Option<String>,
    pub(crate) project_code: Option<String>,
    pub(crate) date: Date,
    pub(crate) payment_schedule: i64,
    pub(crate) draft: bool,
    pub(crate) status: Status,
    /// Percent, in hundredths (825 = 8.25 %).
    pub(crate) tax_rate_bp: i64,
    pub(crate) lines: Vec<Line>,
    pub(crate) paid: i64,
    pub(crate) created: i64,
    pub(crate) updated: i64,
}

/// A payment recorded outside Kantata.
#[derive(Debug, Clone)]
pub(crate) struct Payment {
    pub(crate) invoice: Option<u32>,
    pub(crate) ws: u32,
    pub(crate) user: u32,
    pub(crate) amount: i64,
    pub(crate) message: Option<String>,
    pub(crate) created: i64,
    pub(crate) updated: i64,
}

/// A link from a Kantata record to a record in another system.
#[derive(Debug, Clone)]
pub(crate) struct ExtRef {
    pub(crate) subject: (Coll, u32),
    pub(crate) service_name: String,
    pub(crate) service_model: String,
    pub(crate) service_model_ref: String,
    pub(crate) status: String,
    pub(crate) external_link: Option<String>,
    pub(crate) external_status: Option<String>,
    pub(crate) external_message: Option<String>,
    pub(crate) locked: bool,
    pub(crate) created: i64,
    pub(crate) updated: i64,
}

/// Sorted slots per collection and field, with the generation they were built for.
type SortCache = HashMap<(Coll, &'static str), (u64, Arc<Vec<u32>>)>;

/// Everything the simulated account holds.
#[derive(Debug)]
pub(crate) struct Db {
    pub(crate) users: Table<User>,
    pub(crate) groups: Table<Group>,
    pub(crate) workspaces: Table<Workspace>,
    pub(crate) time_entries: Table<TimeEntry>,
    pub(crate) expenses: Table<Expense>,
    pub(crate) invoices: Table<Invoice>,
    pub(crate) fixed: Table<Item>,
    pub(crate) additional: Table<Item>,
    pub(crate) payments: Table<Payment>,
    pub(crate) ext_refs: Table<ExtRef>,
    /// External references per subject.
    pub(crate) refs_by_subject: HashMap<(Coll, u32), Vec<u32>>,
    /// Expense reports and timesheet submissions, the Submission model shared by both.
    pub(crate) submissions: Table<Submission>,
    pub(crate) resolutions: Table<Resolution>,
    pub(crate) categories: Table<Category>,
    pub(crate) vendors: Table<Vendor>,
    pub(crate) fields: Table<CustomField>,
    pub(crate) choices: Table<Choice>,
    pub(crate) values: Table<FieldValue>,
    pub(crate) events: Table<Event>,
    /// Knobs and the seeded randomness of event delivery.
    pub(crate) delivery: Delivery,
    /// The next user-facing invoice number.
    pub(crate) next_invoice_number: i64,
    /// Bumped by every write; sort caches built for an older generation are rebuilt.
    pub(crate) generation: u64,
    sorted: Mutex<SortCache>,
}

/// A sort key: numbers, or text compared without case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SortKey {
    Int(i64),
    Text(String),
}

impl Db {
    fn empty() -> Self {
        Self {
            users: Table::new(Coll::Users),
            groups: Table::new(Coll::WorkspaceGroups),
            workspaces: Table::new(Coll::Workspaces),
            time_entries: Table::new(Coll::TimeEntries),
            expenses: Table::new(Coll::Expenses),
            invoices: Table::new(Coll::Invoices),
            fixed: Table::new(Coll::FixedFeeItems),
            additional: Table::new(Coll::AdditionalItems),
            payments: Table::new(Coll::ExternalPayments),
            ext_refs: Table::new(Coll::ExternalReferences),
            refs_by_subject: HashMap::new(),
            submissions: Table::new(Coll::ExpenseReportSubmissions),
            resolutions: Table::new(Coll::Resolutions),
            categories: Table::new(Coll::ExpenseCategories),
            vendors: Table::new(Coll::Vendors),
            fields: Table::new(Coll::CustomFields),
            choices: Table::new(Coll::CustomFieldChoices),
            values: Table::new(Coll::CustomFieldValues),
            events: Table::new(Coll::SubscribedEvents),
            delivery: Delivery::new(0),
            next_invoice_number: 1001,
            generation: 0,
            sorted: Mutex::new(HashMap::new()),
        }
    }

    /// Marks the data changed so cached orders are rebuilt.
    pub(crate) fn touch(&mut self) {
        self.generation += 1;
    }

    /// Whether a live record with this id exists.
    pub(crate) fn slot_of(&self, coll: Coll, id: u64) -> Option<u32> {
        match coll {
            Coll::Users => self.users.slot_of(id),
            Coll::WorkspaceGroups => self.groups.slot_of(id),
            Coll::Workspaces => self.workspaces.slot_of(id),
            Coll::TimeEntries => self.time_entries.slot_of(id),
            Coll::Expenses => self.expenses.slot_of(id),
            Coll::Invoices => self.invoices.slot_of(id),
            Coll::FixedFeeItems => self.fixed.slot_of(id),
            Coll::AdditionalItems => self.additional.slot_of(id),
            Coll::ExternalPayments => self.payments.slot_of(id),
            Coll::ExternalReferences => self.ext_refs.slot_of(id),
            Coll::ExpenseReportSubmissions | Coll::TimesheetSubmissions => self
                .submissions
                .slot_of(id)
                .filter(|s| self.submission_is(coll, *s)),
            Coll::Resolutions => self.resolutions.slot_of(id),
            Coll::ExpenseCategories => self.categories.slot_of(id),
            Coll::Vendors => self.vendors.slot_of(id),
            Coll::CustomFields => self.fields.slot_of(id),
            Coll::CustomFieldChoices => self.choices.slot_of(id),
            Coll::CustomFieldValues => self.values.slot_of(id),
            Coll::SubscribedEvents => self.events.slot_of(id),
            Coll::BillingMilestones | Coll::Stories => None,
        }
    }

    /// Live slots of a collection, in id order.
    pub(crate) fn all_slots(&self, coll: Coll) -> Vec<u32> {
        match coll {
            Coll::Users => self.users.slots().collect(),
            Coll::WorkspaceGroups => self.groups.slots().collect(),
            Coll::Workspaces => self.workspaces.slots().collect(),
            Coll::TimeEntries => self.time_entries.slots().collect(),
            Coll::Expenses => self.expenses.slots().collect(),
            Coll::Invoices => self.invoices.slots().collect(),
            Coll::FixedFeeItems => self.fixed.slots().collect(),
            Coll::AdditionalItems => self.additional.slots().collect(),
            Coll::ExternalPayments => self.payments.slots().collect(),
            Coll::ExternalReferences => self.ext_refs.slots().collect(),
            Coll::ExpenseReportSubmissions | Coll::TimesheetSubmissions => self
                .submissions
                .slots()
                .filter(|s| self.submission_is(coll, *s))
                .collect(),
            Coll::Resolutions => self.resolutions.slots().collect(),
            Coll::ExpenseCategories => self.categories.slots().collect(),
            Coll::Vendors => self.vendors.slots().collect(),
            Coll::CustomFields => self.fields.slots().collect(),
            Coll::CustomFieldChoices => self.choices.slots().collect(),
            Coll::CustomFieldValues => self.values.slots().collect(),
            Coll::SubscribedEvents => self.events.slots().collect(),
            Coll::BillingMilestones | Coll::Stories => Vec::new(),
        }
    }

    /// `(created, updated)` of a record.
    pub(crate) fn stamps(&self, coll: Coll, slot: u32) -> Option<(i64, i64)> {
        match coll {
            Coll::Users => self.users.get(slot).map(|r| (r.created, r.updated)),
            Coll::WorkspaceGroups => self.groups.get(slot).map(|r| (r.created, r.updated)),
            Coll::Workspaces => self.workspaces.get(slot).map(|r| (r.created, r.updated)),
            Coll::TimeEntries => self.time_entries.get(slot).map(|r| (r.created, r.updated)),
            Coll::Expenses => self.expenses.get(slot).map(|r| (r.created, r.updated)),
            Coll::Invoices => self.invoices.get(slot).map(|r| (r.created, r.updated)),
            Coll::FixedFeeItems => self.fixed.get(slot).map(|r| (r.created, r.updated)),
            Coll::AdditionalItems => self.additional.get(slot).map(|r| (r.created, r.updated)),
            Coll::ExternalPayments => self.payments.get(slot).map(|r| (r.created, r.updated)),
            Coll::ExternalReferences => self.ext_refs.get(slot).map(|r| (r.created, r.updated)),
            Coll::ExpenseReportSubmissions | Coll::TimesheetSubmissions => self
                .submissions
                .get(slot)
                .filter(|_| self.submission_is(coll, slot))
                .map(|r| (r.created, r.updated)),
            Coll::Resolutions => self.resolutions.get(slot).map(|r| (r.created, r.updated)),
            Coll::ExpenseCategories => self.categories.get(slot).map(|r| (r.created, r.updated)),
            Coll::Vendors => self.vendors.get(slot).map(|r| (r.created, r.updated)),
            Coll::CustomFields => self.fields.get(slot).map(|r| (r.created, r.updated)),
            Coll::CustomFieldChoices => self.choices.get(slot).map(|r| (r.created, r.updated)),
            Coll::CustomFieldValues => self.values.get(slot).map(|r| (r.created, r.updated)),
            Coll::SubscribedEvents => self.events.get(slot).map(|r| (r.created, r.created)),
            Coll::BillingMilestones | Coll::Stories => None,
        }
    }

    /// The sum of an invoice's lines, in cents.
    pub(crate) fn invoice_total(&self, inv: &Invoice) -> i64 {
        inv.lines
            .iter()
            .fold(0_i64, |acc, l| acc.saturating_add(self.line_amount(*l)))
    }

    /// One line's amount in cents.
    pub(crate) fn line_amount(&self, line: Line) -> i64 {
        match line {
            Line::Time(s) => self.time_entries.get(s).map_or(0, TimeEntry::value),
            Line::Expense(s) => self.expenses.get(s).map_or(0, |e| e.amount),
            Line::Fixed(s) => self.fixed.get(s).map_or(0, |e| e.amount),
            Line::Additional(s) => self.additional.get(s).map_or(0, |e| e.amount),
        }
    }

    /// What is still owed on an invoice.
    pub(crate) fn invoice_balance(&self, inv: &Invoice) -> i64 {
        match inv.status {
            Status::Cancelled | Status::Paid => 0,
            Status::New => (self.invoice_total(inv) - inv.paid).max(0),
        }
    }

    /// External references of a subject.
    pub(crate) fn refs_of(&self, coll: Coll, slot: u32) -> &[u32] {
        self.refs_by_subject
            .get(&(coll, slot))
            .map_or(&[], Vec::as_slice)
    }

    /// Slots of `coll` sorted ascending by `field` (ties by id); cached until the next write.
    pub(crate) fn sorted(&self, coll: Coll, field: &'static str) -> Arc<Vec<u32>> {
        let mut cache = self
            .sorted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((generation, slots)) = cache.get(&(coll, field))
            && *generation == self.generation
        {
            return Arc::clone(slots);
        }
        let mut slots = self.all_slots(coll);
        if field != "id" {
            let mut keyed: Vec<(SortKey, u32)> = slots
                .iter()
                .map(|s| (self.sort_key(coll, field, *s), *s))
                .collect();
            keyed.sort();
            slots = keyed.into_iter().map(|(_, s)| s).collect();
        }
        let slots = Arc::new(slots);
        cache.insert((coll, field), (self.generation, Arc::clone(&slots)));
        slots
    }

    fn sort_key(&self, coll: Coll, field: &str, slot: u32) -> SortKey {
        let date = |d: Option<Date>| SortKey::Int(d.map_or(i64::MIN, date_key));
        let text = |s: &str| SortKey::Text(s.to_lowercase());
        if field == "created_at" || field == "updated_at" {
            let (c, u) = self.stamps(coll, slot).unwrap_or_default();
            return SortKey::Int(if field == "created_at" { c } else { u });
        }
        match coll {
            Coll::Users => text(self.users.get(slot).map_or("", |u| &u.full_name)),
            Coll::WorkspaceGroups => text(self.groups.get(slot).map_or("", |g| &g.name)),
            Coll::Workspaces => {
                let Some(w) = self.workspaces.get(slot) else {
                    return SortKey::Int(0);
                };
                match field {
                    "title" => text(&w.title),
                    "start_date" => date(w.start),
                    "due_date" => date(w.due),
                    "price" => SortKey::Int(w.price_in_cents),
                    _ => SortKey::Int(i64::from(w.archived)),
                }
            }
            Coll::TimeEntries => date(self.time_entries.get(slot).map(|t| t.date)),
            Coll::Expenses => {
                let Some(e) = self.expenses.get(slot) else {
                    return SortKey::Int(0);
                };
                match field {
                    "amount" => SortKey::Int(e.amount),
                    "category" => text(&e.category),
                    "notes" => text(&e.notes),
                    "vendor_name" => SortKey::Int(0),
                    _ => date(Some(e.date)),
                }
            }
            Coll::Invoices => date(self.invoices.get(slot).map(|i| i.date)),
            Coll::ExpenseReportSubmissions | Coll::TimesheetSubmissions => {
                let Some(s) = self.submissions.get(slot) else {
                    return SortKey::Int(0);
                };
                match field {
                    "amount" => SortKey::Int(self.submission_total(s)),
                    "status" => text(s.status.name()),
                    "title" => text(&s.title),
                    "workspace_title" => text(self.workspaces.get(s.ws).map_or("", |w| &w.title)),
                    // `date`: the week's start for timesheets, the day submitted for reports.
                    _ => s
                        .start
                        .map_or_else(|| date(Some(local_date(s.created))), |d| date(Some(d))),
                }
            }
            Coll::ExpenseCategories => text(self.categories.get(slot).map_or("", |c| &c.name)),
            Coll::Vendors => text(self.vendors.get(slot).map_or("", |v| &v.name)),
            Coll::CustomFieldChoices => {
                let Some(c) = self.choices.get(slot) else {
                    return SortKey::Int(0);
                };
                match field {
                    "label" => text(&c.label),
                    // Position within each field, fields in id order.
                    _ => SortKey::Int(i64::from(c.field) * 1_000_000 + c.position),
                }
            }
            Coll::CustomFields => text(self.fields.get(slot).map_or("", |f| &f.name)),
            _ => SortKey::Int(i64::from(slot)),
        }
    }
}

/// A number that orders dates like the calendar does.
fn date_key(d: Date) -> i64 {
    i64::from(d.year()) * 10_000 + i64::from(d.month()) * 100 + i64::from(d.day())
}

// ------------------------------------------------------------------------------------------
// Seeded generation
// ------------------------------------------------------------------------------------------

const FIRST: [&str; 40] = [
    "Avery", "Jordan", "Priya", "Mateo", "Chen", "Amara", "Lukas", "Sofia", "Kwame", "Hannah",
    "Ravi", "Elena", "Tomasz", "Yuki", "Olivia", "Diego", "Fatima", "Noah", "Ingrid", "Samuel",
    "Leila", "Marcus", "Aoife", "Benedikt", "Camila", "Dmitri", "Grace", "Hugo", "Isabel", "Jamal",
    "Keiko", "Liam", "Maya", "Nikolai", "Oscar", "Paula", "Quentin", "Rosa", "Stefan", "Tessa",
];
const LAST: [&str; 40] = [
    "Morgan",
    "Patel",
    "Okafor",
    "Lindqvist",
    "Garcia",
    "Nakamura",
    "O'Neill",
    "Schmidt",
    "Rossi",
    "Dubois",
    "Kowalski",
    "Haddad",
    "Nguyen",
    "Fischer",
    "Moreau",
    "Silva",
    "Andersen",
    "Kim",
    "Mensah",
    "Novak",
    "Walsh",
    "Ibrahim",
    "Costa",
    "Berg",
    "Reyes",
    "Tanaka",
    "Murphy",
    "Weber",
    "Santos",
    "Larsen",
    "Chowdhury",
    "Hughes",
    "Bianchi",
    "Eriksen",
    "Adeyemi",
    "Popescu",
    "Fernandes",
    "Kaplan",
    "Yilmaz",
    "Brennan",
];
const HEADLINES: [&str; 8] = [
    "Project Manager",
    "Senior Consultant",
    "Consultant",
    "Designer",
    "Engineer",
    "Analyst",
    "Delivery Lead",
    "Finance Manager",
];
const COMPANY_A: [&str; 32] = [
    "Harbor",
    "Northwind",
    "Bluefield",
    "Cedar",
    "Summit",
    "Ironbridge",
    "Lakeshore",
    "Granite",
    "Silverline",
    "Redwood",
    "Brightwater",
    "Oakridge",
    "Pinecrest",
    "Riverside",
    "Sterling",
    "Westgate",
    "Copperleaf",
    "Evergreen",
    "Falcon",
    "Goldcrest",
    "Highland",
    "Juniper",
    "Keystone",
    "Lighthouse",
    "Maplewood",
    "Northstar",
    "Orchard",
    "Prairie",
    "Quarry",
    "Ridgeway",
    "Sandstone",
    "Tidewater",
];
const COMPANY_B: [&str; 24] = [
    "Analytics",
    "Logistics",
    "Health",
    "Foods",
    "Energy",
    "Media",
    "Robotics",
    "Capital",
    "Architects",
    "Outfitters",
    "Labs",
    "Pharma",
    "Software",
    "Hotels",
    "Studios",
    "Biotech",
    "Telecom",
    "Retail",
    "Freight",
    "Insurance",
    "Consulting",
    "Motors",
    "Textiles",
    "Education",
];
const COMPANY_C: [&str; 8] = [
    "Ltd", "Inc.", "LLC", "Group", "Co.", "Partners", "Holdings", "GmbH",
];
const STREETS: [&str; 10] = [
    "Market", "Main", "Harbour", "Elm", "King", "Queen", "Station", "Mill", "Church", "Park",
];
const CITIES: [(&str, &str, &str); 8] = [
    ("San Francisco", "CA", "941"),
    ("Portland", "OR", "972"),
    ("Austin", "TX", "787"),
    ("Denver", "CO", "802"),
    ("Chicago", "IL", "606"),
    ("Boston", "MA", "021"),
    ("Seattle", "WA", "981"),
    ("New York", "NY", "100"),
];
const PROJECT_KINDS: [&str; 12] = [
    "Website Redesign",
    "ERP Rollout",
    "Brand Refresh",
    "Data Platform",
    "Mobile App",
    "Cloud Migration",
    "Security Audit",
    "Market Research",
    "Process Review",
    "CRM Implementation",
    "Training Programme",
    "Support Retainer",
];
const TIME_NOTES: [&str; 10] = [
    "Workshop with stakeholders",
    "Requirements analysis",
    "Design review",
    "Implementation",
    "Testing and fixes",
    "Status meeting",
    "Data migration",
    "Documentation",
    "Deployment support",
    "Follow-up calls\nand notes",
];
const EXPENSE_CATEGORIES: [&str; 6] = [
    "Travel",
    "Mileage",
    "Lodging",
    "Food",
    "Entertainment",
    "Other",
];
const EXPENSE_NOTES: [&str; 6] = [
    "Flight to client site",
    "Mileage to workshop",
    "Hotel, two nights",
    "Team lunch",
    "Client dinner",
    "Printing",
];
const FIXED_NOTES: [&str; 5] = [
    "Milestone: discovery",
    "Milestone: design sign-off",
    "Milestone: launch",
    "Monthly retainer",
    "Fixed fee: audit report",
];
const ADDITIONAL_NOTES: [&str; 5] = [
    "Software licence",
    "Hosting (annual)",
    "Third-party fonts",
    "Stock photography",
    "Equipment rental",
];
const RATES: [i64; 6] = [9_500, 12_500, 15_000, 17_500, 20_000, 22_500];

/// A bijection of `0..n` so generated names are unique yet look shuffled.
fn spread(i: usize, n: usize, offset: usize) -> usize {
    // 7919 is prime and larger than every table size product used here, so it is coprime to n
    // unless n is a multiple of it, which never happens for these tables.
    (i.wrapping_mul(7919).wrapping_add(offset)) % n
}

fn person_name(i: usize, offset: usize) -> String {
    let n = FIRST.len() * LAST.len();
    let k = spread(i % n, n, offset);
    let base = format!("{} {}", FIRST[k % FIRST.len()], LAST[k / FIRST.len()]);
    if i >= n {
        format!("{base} {}", i / n + 1)
    } else {
        base
    }
}

fn company_name(i: usize, offset: usize) -> String {
    let n = COMPANY_A.len() * COMPANY_B.len() * COMPANY_C.len();
    let k = spread(i % n, n, offset);
    let a = COMPANY_A[k % COMPANY_A.len()];
    let b = COMPANY_B[(k / COMPANY_A.len()) % COMPANY_B.len()];
    let c = COMPANY_C[k / (COMPANY_A.len() * COMPANY_B.len())];
    if i >= n {
        format!("{a} {b} {} {c}", i / n + 1)
    } else {
        format!("{a} {b} {c}")
    }
}

fn slug(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Fills an account for `seed`: `size` invoices and the people, clients, projects, time and
/// expenses behind them, all dated before `now` (Unix seconds).
pub(crate) fn generate(seed: u64, size: usize, now: i64) -> Db {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut db = Db::empty();
    let today = local_date(now);
    let n_users = 10 + size / 100;
    let n_groups = size / 10 + 2;
    let n_ws = size / 4 + 1;
    let name_offset = rng.usize(..1000);
    let company_offset = rng.usize(..1000);
    let day = 86_400_i64;
    // A time in the past: between `min_days` and `max_days` days before now.
    let past = |rng: &mut fastrand::Rng, min_days: i64, max_days: i64| {
        now - rng.i64(min_days * day..max_days * day)
    };
    let later = |rng: &mut fastrand::Rng, from: i64, max_days: i64| {
        (from + rng.i64(0..=max_days * day)).min(now - 60).max(from)
    };

    for i in 0..n_users {
        let full_name = person_name(i, name_offset);
        let mut email = full_name.to_lowercase().replace([' ', '\''], ".");
        email = email.replace("..", ".");
        let created = past(&mut rng, 400, 900);
        db.users.push(User {
            email: format!("{email}@example.com"),
            full_name,
            headline: Cow::Borrowed(if i == 0 {
                "Account Administrator"
            } else {
                HEADLINES[rng.usize(..HEADLINES.len())]
            }),
            disabled: i % 9 == 8,
            created,
            updated: later(&mut rng, created, 200),
        });
    }
    // The last two users work on no project: only `on_my_account=true` lists them.
    let participant_pool = if n_users > 4 { n_users - 2 } else { n_users };

    for i in 0..n_groups {
        let name = company_name(i, company_offset);
        let s = slug(&name);
        let (city, state, zip) = CITIES[rng.usize(..CITIES.len())];
        let created = past(&mut rng, 300, 800);
        db.groups.push(Group {
            company: i % 5 != 4,
            contact_name: person_name(i * 7 + 3, name_offset + 17),
            email: format!("accounts@{s}.example"),
            phone: format!("+1 555-01{:02}", rng.u32(..100)),
            address: format!(
                "{} {} St, {city}, {state} {zip}{:02}",
                rng.u32(1..2000),
                STREETS[rng.usize(..STREETS.len())],
                rng.u32(..100)
            ),
            website: format!("https://www.{s}.example"),
            notes: Cow::Borrowed(""),
            workspaces: Vec::new(),
            name,
            created,
            updated: later(&mut rng, created, 200),
        });
    }

    for i in 0..n_ws {
        let g = u32::try_from(rng.usize(..n_groups)).unwrap_or(0);
        let mut groups = vec![g];
        if rng.u8(..10) == 0 && n_groups > 1 {
            let other = u32::try_from(rng.usize(..n_groups)).unwrap_or(0);
            if other != g {
                groups.push(other);
            }
        }
        let mut participants = vec![0_u32];
        for _ in 0..rng.usize(1..=3) {
            let u = u32::try_from(rng.usize(..participant_pool)).unwrap_or(0);
            if !participants.contains(&u) {
                participants.push(u);
            }
        }
        let created = past(&mut rng, 120, 700);
        let start = local_date(created);
        let kind = PROJECT_KINDS[rng.usize(..PROJECT_KINDS.len())];
        let group_name = db
            .groups
            .get(g)
            .map(|gr| gr.name.clone())
            .unwrap_or_default();
        let budgeted = rng.bool();
        let slot = db.workspaces.push(Workspace {
            title: format!("{group_name}: {kind}"),
            description: Cow::Borrowed(kind),
            archived: i % 6 == 5,
            start: Some(start),
            due: start.checked_add(rng.i64(30..240).days()).ok(),
            access_level: "invitation",
            budgeted,
            price_in_cents: if budgeted {
                rng.i64(50..2_000) * 100_000
            } else {
                0
            },
            creator: participants[rng.usize(..participants.len())],
            primary_group: Some(g),
            groups: groups.clone(),
            participants,
            expense_approvals: false,
            created,
            updated: later(&mut rng, created, 120),
        });
        for g in groups {
            if let Some(gr) = db.groups.get_mut(g) {
                gr.workspaces.push(slot);
            }
        }
    }

    let ws_user = |db: &Db, rng: &mut fastrand::Rng, ws: u32| {
        db.workspaces
            .get(ws)
            .map_or(0, |w| w.participants[rng.usize(..w.participants.len())])
    };
    let local_noon = |d: Date, rng: &mut fastrand::Rng| {
        d.to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::Offset::constant(
            super::util::ACCOUNT_OFFSET_HOURS,
        )))
        .map_or(now, |z| z.timestamp().as_second())
            + rng.i64(8 * 3600..19 * 3600)
    };

    for i in 0..size {
        let ws = u32::try_from(rng.usize(..n_ws)).unwrap_or(0);
        let inv_slot = u32::try_from(i).unwrap_or(u32::MAX);
        let date = today.checked_sub(rng.i64(2..365).days()).unwrap_or(today);
        let created = local_noon(date, &mut rng).min(now - 3600);
        let draft = i % 13 == 7;
        let roll = rng.u8(..100);
        let status = if draft || roll < 60 {
            Status::New
        } else if roll < 88 {
            Status::Paid
        } else {
            Status::Cancelled
        };
        let mut lines = Vec::new();
        for _ in 0..rng.usize(1..=6) {
            let kind = rng.u8(..100);
            let when = date.checked_sub(rng.i64(1..45).days()).unwrap_or(date);
            let made = local_noon(when, &mut rng).min(created);
            if kind < 50 {
                let user = ws_user(&db, &mut rng, ws);
                let rate = RATES[rng.usize(..RATES.len())];
                let s = db.time_entries.push(TimeEntry {
                    ws,
                    user,
                    story: (rng.u8(..3) == 0).then(|| Coll::Stories.base() + rng.u64(..50_000)),
                    date: when,
                    minutes: 15 * rng.i64(1..=32),
                    billable: true,
                    notes: Cow::Borrowed(TIME_NOTES[rng.usize(..TIME_NOTES.len())]),
                    rate,
                    rate_set: true,
                    cost_rate: rate * 55 / 100 / 100 * 100,
                    approved: true,
                    invoice: Some(inv_slot),
                    submission: None,
                    created: made,
                    updated: made,
                });
                lines.push(Line::Time(s));
            } else if kind < 70 {
                let user = ws_user(&db, &mut rng, ws);
                let c = rng.usize(..EXPENSE_CATEGORIES.len());
                let s = db.expenses.push(Expense {
                    ws,
                    user,
                    date: when,
                    category: Cow::Borrowed(EXPENSE_CATEGORIES[c]),
                    amount: rng.i64(500..250_000),
                    notes: Cow::Borrowed(EXPENSE_NOTES[c]),
                    billable: true,
                    reimbursable: rng.bool(),
                    invoice: Some(inv_slot),
                    category_id: None,
                    vendor: None,
                    report: None,
                    created: made,
                    updated: made,
                });
                lines.push(Line::Expense(s));
            } else if kind < 85 {
                let s = db.fixed.push(Item {
                    invoice: inv_slot,
                    ws,
                    amount: rng.i64(5..150) * 10_000,
                    notes: Cow::Borrowed(FIXED_NOTES[rng.usize(..FIXED_NOTES.len())]),
                    taxable: false,
                    story: (rng.bool()).then(|| Coll::Stories.base() + rng.u64(..50_000)),
                    created,
                    updated: created,
                });
                lines.push(Line::Fixed(s));
            } else {
                let s = db.additional.push(Item {
                    invoice: inv_slot,
                    ws,
                    amount: rng.i64(1_000..60_000),
                    notes: Cow::Borrowed(ADDITIONAL_NOTES[rng.usize(..ADDITIONAL_NOTES.len())]),
                    taxable: false,
                    story: None,
                    created,
                    updated: created,
                });
                lines.push(Line::Additional(s));
            }
        }
        let user = db.workspaces.get(ws).map_or(0, |w| w.creator);
        let recipient = Some(ws_user(&db, &mut rng, ws));
        let number = db.next_invoice_number;
        db.next_invoice_number += 1;
        let mut invoice = Invoice {
            workspaces: vec![ws],
            user,
            recipient,
            number,
            user_title: None,
            message: (rng.u8(..4) == 0).then(|| "Thank you for your business.".to_owned()),
            purchase_order: (rng.u8(..3) == 0).then(|| format!("PO-{}", rng.u32(10_000..99_999))),
            project_code: None,
            date,
            payment_schedule: [15, 30, 30, 45, 60][rng.usize(..5)],
            draft,
            status,
            tax_rate_bp: 0,
            lines,
            paid: 0,
            created,
            updated: later(&mut rng, created, 20),
        };
        if status == Status::Paid {
            let total = db.invoice_total(&invoice);
            let paid_at = later(&mut rng, created, 40);
            invoice.paid = total;
            invoice.updated = invoice.updated.max(paid_at);
            db.payments.push(Payment {
                invoice: Some(inv_slot),
                ws,
                user: 0,
                amount: total,
                message: Some(format!("Payment received for invoice {number}")),
                created: paid_at,
                updated: paid_at,
            });
        }
        let refs = !draft && i % 10 == 3;
        let updated = invoice.updated;
        db.invoices.push(invoice);
        if refs {
            let r = db.ext_refs.push(ExtRef {
                subject: (Coll::Invoices, inv_slot),
                service_name: "netsuite".into(),
                service_model: "Invoice".into(),
                service_model_ref: format!("INV{}", 40_000 + i),
                status: "successful".into(),
                external_link: None,
                external_status: None,
                external_message: None,
                locked: false,
                created: updated,
                updated,
            });
            db.refs_by_subject
                .entry((Coll::Invoices, inv_slot))
                .or_default()
                .push(r);
        }
    }

    // Work not yet invoiced, recent, in any project (archived ones too).
    for _ in 0..(size / 2 + 3) {
        let ws = u32::try_from(rng.usize(..n_ws)).unwrap_or(0);
        let user = ws_user(&db, &mut rng, ws);
        let when = today.checked_sub(rng.i64(1..60).days()).unwrap_or(today);
        let made = local_noon(when, &mut rng).min(now - 600);
        let rate = RATES[rng.usize(..RATES.len())];
        let billable = rng.u8(..5) != 0;
        db.time_entries.push(TimeEntry {
            ws,
            user,
            story: None,
            date: when,
            minutes: 15 * rng.i64(1..=32),
            billable,
            notes: Cow::Borrowed(TIME_NOTES[rng.usize(..TIME_NOTES.len())]),
            rate: if billable { rate } else { 0 },
            rate_set: true,
            cost_rate: rate * 55 / 100 / 100 * 100,
            approved: rng.bool(),
            invoice: None,
            submission: None,
            created: made,
            updated: later(&mut rng, made, 3),
        });
    }
    for _ in 0..(size / 5 + 2) {
        let ws = u32::try_from(rng.usize(..n_ws)).unwrap_or(0);
        let user = ws_user(&db, &mut rng, ws);
        let when = today.checked_sub(rng.i64(1..60).days()).unwrap_or(today);
        let made = local_noon(when, &mut rng).min(now - 600);
        let c = rng.usize(..EXPENSE_CATEGORIES.len());
        db.expenses.push(Expense {
            ws,
            user,
            date: when,
            category: Cow::Borrowed(EXPENSE_CATEGORIES[c]),
            amount: rng.i64(500..150_000),
            notes: Cow::Borrowed(EXPENSE_NOTES[c]),
            billable: rng.u8(..4) != 0,
            reimbursable: rng.bool(),
            invoice: None,
            category_id: None,
            vendor: None,
            report: None,
            created: made,
            updated: later(&mut rng, made, 3),
        });
    }
    super::scenarios::seed(&mut db, seed, size, now);
    db
}
