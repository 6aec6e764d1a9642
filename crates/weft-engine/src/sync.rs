//! The invoice sync: source invoices (Kantata) become destination sales invoices (Xero), payments
//! made at the destination are recorded back at the source, and nothing is written twice.
//!
//! One run:
//! 1. settles writes a crashed run left pending: each is looked up at the destination by its
//!    invoice number; found, it is linked; not found, it is written again (within the
//!    idempotency window the provider also replays the same key);
//! 2. reads the source's invoices changed since the cursor (with the spec's overlap), plus those
//!    the error queue marks for retry, and computes each one's destination record and a version
//!    hash of everything that record depends on;
//! 3. finds or creates the destination contact of each client (contact names are unique among
//!    active contacts);
//! 4. creates new invoices in batches with one idempotency key per batch and per-item results,
//!    recording the intent before each request and the link after it; updates changed ones while
//!    the destination still allows it (and records why when it does not);
//! 5. records the link at the source (an external reference holding the destination id);
//! 6. records, once, a payment at the source for each linked invoice the destination reports paid;
//! 7. moves the cursors only when everything read was handled (written, unchanged, or queued).
//!
//! A record that fails lands in the error queue with the provider's message; the run goes on.
//! A spent daily budget stops the run cleanly; the next run resumes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::ControlFlow;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::flow::Flow;
use crate::http::CallError;
use crate::limits::{Clock, LimitError};
use crate::mapping::{self, Line};
use crate::request::{OpKind, RequestContext, Tenant};
use crate::session::{Session, SessionError};
use crate::state::{Link, RunOutcome, RunSummary, State, StateError, WriteDone, WriteIntent};
use crate::write::{idempotency_key, item_results};

/// Resource names the invoice sync uses at each side.
mod names {
    pub(super) const SOURCE_INVOICES: &str = "invoices";
    pub(super) const SOURCE_PROJECTS: &str = "workspaces";
    pub(super) const SOURCE_PAYMENTS: &str = "external_payments";
    pub(super) const DEST_INVOICES: &str = "invoices";
    pub(super) const DEST_CONTACTS: &str = "contacts";
    pub(super) const INVOICE: &str = "invoice";
    pub(super) const CONTACT: &str = "contact";
    pub(super) const REFERENCE: &str = "reference";
    pub(super) const PAYMENT: &str = "payment";
}

/// Errors that end a run (per-record failures go to the error queue instead).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The state database failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// A call failed in a way that stops the run.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The flow does not fit its connections.
    #[error("{0}")]
    Config(String),
}

/// What a run did or, in a dry run, would do to one record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Planned {
    /// `create`, `update`, `unchanged`, `skip`, `contact`, `payment`, `failed`.
    pub action: &'static str,
    /// The source id (or contact name).
    pub source_id: String,
    /// A short description (invoice number and total, the reason of a skip).
    pub detail: String,
}

/// The result of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The run's id in the state database.
    pub run: i64,
    /// Counts.
    pub summary: RunSummary,
    /// How it ended.
    pub outcome: RunOutcome,
    /// Per-record actions (every record in a dry run; the changes otherwise).
    pub plan: Vec<Planned>,
}

/// A source invoice ready to send.
struct Work {
    source_id: String,
    version: String,
    number: String,
    client: String,
    record: serde_json::Map<String, Value>,
    lines: Vec<Line>,
    total: String,
}

/// Everything a run needs.
pub struct Run<'a> {
    /// The flow.
    pub flow: &'a Flow,
    /// The source connection (Kantata).
    pub source: &'a Session,
    /// The destination connection (Xero).
    pub dest: &'a Session,
    /// The destination tenant.
    pub tenant: Tenant,
    /// The state database.
    pub state: &'a State,
    /// Time.
    pub clock: &'a dyn Clock,
    /// Compute and report, write nothing.
    pub dry_run: bool,
    /// Told what the run is doing, as it goes (a progress bar's message); `None` for quiet.
    pub progress: Option<&'a (dyn Fn(&str) + Sync)>,
}

fn hash(value: &Value) -> String {
    let digest = Sha256::digest(value.to_string().as_bytes());
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Whether an error means "stop for now, resume later" (a spent daily budget).
fn is_cap(e: &SessionError) -> Option<String> {
    match e {
        SessionError::Call(CallError::DailyCap { .. })
        | SessionError::Limit(LimitError::Exhausted { .. }) => Some(e.to_string()),
        _ => None,
    }
}

impl Run<'_> {
    fn name(&self) -> &str {
        &self.flow.name
    }

    fn tell(&self, what: &str) {
        if let Some(progress) = self.progress {
            progress(what);
        }
    }

    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The stored cursor of `stream`, written the way `incremental` wants it (with its overlap).
    fn since(
        &self,
        stream: &str,
        incremental: Option<&weft_core::model::Incremental>,
    ) -> Result<Option<String>, SyncError> {
        let stored = self.state.cursor(self.name(), stream)?;
        Ok(match (stored, incremental) {
            (Some(c), Some(inc)) => crate::cursor::parse_since(&c)
                .ok()
                .map(|at| crate::cursor::format(at, inc)),
            _ => None,
        })
    }

    fn dest_ctx(&self) -> RequestContext {
        RequestContext {
            tenant: Some(self.tenant.clone()),
            ..RequestContext::with_field_defaults(self.dest.spec().file())
        }
    }

    fn source_ctx(&self) -> RequestContext {
        RequestContext::with_field_defaults(self.source.spec().file())
    }

    /// Runs the flow once.
    pub async fn run(&self) -> Result<Report, SyncError> {
        let run = self
            .state
            .start_run(self.name(), self.dry_run, self.now())?;
        let mut summary = RunSummary::default();
        let mut plan = Vec::new();
        let outcome = match self.steps(run, &mut summary, &mut plan).await {
            Ok(()) => RunOutcome::Completed,
            Err(SyncError::Session(e)) if is_cap(&e).is_some() => RunOutcome::Stopped {
                reason: is_cap(&e).unwrap_or_default(),
            },
            Err(e) => RunOutcome::Failed {
                reason: e.to_string(),
            },
        };
        for session in [self.source, self.dest] {
            let stats = session.stats();
            summary.calls += stats.calls;
            summary.rate_limited += stats.rate_limited;
            summary.waited_ms += u64::try_from(stats.waited.as_millis()).unwrap_or(u64::MAX);
        }
        self.state.finish_run(run, &summary, &outcome, self.now())?;
        Ok(Report {
            run,
            summary,
            outcome,
            plan,
        })
    }

    async fn steps(
        &self,
        run: i64,
        summary: &mut RunSummary,
        plan: &mut Vec<Planned>,
    ) -> Result<(), SyncError> {
        self.tell("reading the source's projects");
        let clients = self.clients().await?;
        self.tell("reading changed invoices");
        let (works, newest) = self.read_invoices(run, &clients, summary, plan).await?;
        self.settle_pending(&works).await?;

        let mut creates = Vec::new();
        let mut updates = Vec::new();
        for work in works {
            match self
                .state
                .link(self.name(), names::INVOICE, &work.source_id)?
            {
                Some(Link {
                    dest_id: Some(dest),
                    source_version,
                    pending: None,
                    ..
                }) if source_version == work.version => {
                    summary.unchanged += 1;
                    if self.dry_run {
                        plan.push(Planned {
                            action: "unchanged",
                            source_id: work.source_id.clone(),
                            detail: format!("{} is {dest}", work.number),
                        });
                    }
                    self.state.clear_error(
                        self.name(),
                        names::INVOICE,
                        &work.source_id,
                        self.now(),
                    )?;
                }
                Some(Link {
                    dest_id: Some(dest),
                    pending: None,
                    ..
                }) => updates.push((work, dest)),
                _ => creates.push(work),
            }
        }

        let contacts = self
            .contacts(
                creates.iter().chain(updates.iter().map(|(w, _)| w)),
                run,
                summary,
                plan,
            )
            .await?;
        self.create(creates, &contacts, run, summary, plan).await?;
        self.update(updates, &contacts, run, summary, plan).await?;
        self.tell("linking source invoices to their destination ids");
        self.references(summary).await?;
        self.tell("looking for payments made at the destination");
        self.payments(run, summary, plan).await?;
        if !self.dry_run
            && let Some(newest) = newest
        {
            self.state
                .set_cursor(self.name(), names::SOURCE_INVOICES, &newest)?;
        }
        Ok(())
    }

    /// Client name per project: the project's primary group (the client company), else its
    /// first group, else its title.
    async fn clients(&self) -> Result<HashMap<String, String>, SyncError> {
        let mut clients = HashMap::new();
        self.source
            .list(names::SOURCE_PROJECTS, &self.source_ctx(), |p| {
                let name = p["primary_workspace_group"]["name"]
                    .as_str()
                    .or_else(|| p["workspace_groups"][0]["name"].as_str())
                    .or_else(|| p["title"].as_str())
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                if let Some(id) = id_text(&p["id"]) {
                    clients.insert(id, name);
                }
                ControlFlow::Continue(())
            })
            .await?;
        Ok(clients)
    }

    /// Reads changed invoices (and those marked for retry) and computes what to send.
    async fn read_invoices(
        &self,
        run: i64,
        clients: &HashMap<String, String>,
        summary: &mut RunSummary,
        plan: &mut Vec<Planned>,
    ) -> Result<(Vec<Work>, Option<String>), SyncError> {
        let file = self.source.spec().file();
        let list = file
            .resources
            .get(names::SOURCE_INVOICES)
            .and_then(|r| r.list.as_ref())
            .ok_or_else(|| {
                SyncError::Config(format!(
                    "connector `{}` has no `{}` list; the invoice flow reads Kantata invoices",
                    file.id,
                    names::SOURCE_INVOICES
                ))
            })?;
        let mut ctx = self.source_ctx();
        ctx.params = self.flow.file.source.filter.clone();
        ctx.cursor = self.since(names::SOURCE_INVOICES, list.incremental.as_ref())?;
        let mut raw = Vec::new();
        let mut seen = BTreeSet::new();
        self.source
            .list(names::SOURCE_INVOICES, &ctx, |r| {
                // The overlap re-reads the boundary; the id keeps each record once.
                if let Some(id) = id_text(&r["id"])
                    && seen.insert(id)
                {
                    raw.push(r);
                }
                ControlFlow::Continue(())
            })
            .await?;
        for id in self.state.retries(self.name(), names::INVOICE)? {
            if seen.contains(&id) {
                continue;
            }
            let ctx = RequestContext {
                id: Some(id.clone()),
                ..self.source_ctx()
            };
            let answer = self
                .source
                .call(names::SOURCE_INVOICES, OpKind::Get, &ctx, &[], &[], None)
                .await?;
            let get = file.resources[names::SOURCE_INVOICES].get.as_ref();
            if let Some(op) = get {
                for r in crate::extract::records(&answer.body, &op.records).unwrap_or_default() {
                    seen.insert(id.clone());
                    raw.push(r);
                }
            }
        }
        let newest = raw
            .iter()
            .filter_map(|r| r["updated_at"].as_str().map(str::to_owned))
            .max();
        let env = mapping::environment();
        let tables = mapping::tables_value(&self.flow.tables);
        let options = &self.flow.file.options;
        let options_v = mapping::options_value(options);
        let mut works = Vec::new();
        for r in raw {
            summary.read += 1;
            let source_id = id_text(&r["id"]).unwrap_or_default();
            let draft = r["draft"].as_bool().unwrap_or(false);
            let status = r["status"].as_str().unwrap_or_default();
            if (draft && !options.include_drafts) || status == "cancelled" {
                plan.push(Planned {
                    action: "skip",
                    source_id,
                    detail: if draft {
                        "a draft (set options.include-drafts to send drafts)".to_owned()
                    } else {
                        "cancelled at the source".to_owned()
                    },
                });
                continue;
            }
            let workspace_id = r["workspace_ids"]
                .get(0)
                .and_then(id_text)
                .or_else(|| id_text(&r["workspace_id"]));
            let client = workspace_id
                .as_ref()
                .and_then(|w| clients.get(w).cloned())
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| "Unknown client".to_owned());
            let computed = mapping::kantata_lines(&r, options).and_then(|lines| {
                let total = mapping::total(&lines);
                let leading = if options.leading_text.is_empty() {
                    None
                } else {
                    env.compile_expression(&options.leading_text)
                        .and_then(|e| e.eval(minijinja::context! { invoice => &r }))
                        .map_err(|e| format!("options.leading-text: {e}"))?
                        .as_str()
                        .map(str::to_owned)
                        .filter(|s| !s.is_empty())
                };
                let client_v = json!({ "name": client });
                let record = mapping::evaluate(
                    &env,
                    "invoice",
                    &self.flow.file.mapping.invoice,
                    &minijinja::context! {
                        invoice => &r, client => &client_v, options => &options_v,
                        tables => &tables, total => &total, lines => &lines,
                    },
                )?;
                let mut items = Vec::new();
                for (i, line) in lines.iter().enumerate() {
                    let mut line_v = serde_json::to_value(line).unwrap_or_default();
                    if i == 0
                        && let Some(text) = &leading
                    {
                        line_v["description"] = json!(format!("{text} {}", line.description));
                    }
                    items.push(Value::Object(mapping::evaluate(
                        &env,
                        "line",
                        &self.flow.file.mapping.line,
                        &minijinja::context! {
                            line => &line_v, invoice => &r, options => &options_v, tables => &tables,
                        },
                    )?));
                }
                Ok((lines, total, record, items))
            });
            let (lines, total, mut record, items) = match computed {
                Ok(c) => c,
                Err(message) => {
                    summary.failed += 1;
                    plan.push(Planned {
                        action: "failed",
                        source_id: source_id.clone(),
                        detail: message.clone(),
                    });
                    if !self.dry_run {
                        self.state.queue_error(
                            self.name(),
                            names::INVOICE,
                            &source_id,
                            "map",
                            &message,
                            Some(run),
                            self.now(),
                        )?;
                    }
                    continue;
                }
            };
            record.insert("LineItems".to_owned(), Value::Array(items));
            let number = record
                .get("InvoiceNumber")
                .and_then(id_text)
                .unwrap_or_else(|| source_id.clone());
            let version = hash(&json!({ "record": record, "client": client }));
            works.push(Work {
                source_id,
                version,
                number,
                client,
                record,
                lines,
                total,
            });
        }
        Ok((works, newest))
    }

    /// Settles writes a crashed run left pending: found at the destination by invoice number,
    /// they are linked; otherwise the intent is dropped and the invoice is written again.
    async fn settle_pending(&self, works: &[Work]) -> Result<(), SyncError> {
        let pending: Vec<Link> = self
            .state
            .links(self.name(), names::INVOICE)?
            .into_iter()
            .filter(|l| l.pending.is_some())
            .collect();
        if pending.is_empty() || self.dry_run {
            return Ok(());
        }
        let by_id: HashMap<&str, &Work> = works.iter().map(|w| (w.source_id.as_str(), w)).collect();
        for chunk in pending.chunks(50) {
            let mut numbers = Vec::new();
            for link in chunk {
                match by_id.get(link.source_id.as_str()) {
                    Some(w) => numbers.push((link, w.number.clone())),
                    None => {
                        // Not read in this run (it did not change since): read it to learn its
                        // number.
                        let ctx = RequestContext {
                            id: Some(link.source_id.clone()),
                            ..self.source_ctx()
                        };
                        let file = self.source.spec().file();
                        let answer = self
                            .source
                            .call(names::SOURCE_INVOICES, OpKind::Get, &ctx, &[], &[], None)
                            .await?;
                        let get = file.resources[names::SOURCE_INVOICES].get.as_ref();
                        let record = get
                            .and_then(|op| {
                                crate::extract::records(&answer.body, &op.records)
                                    .ok()?
                                    .into_iter()
                                    .next()
                            })
                            .unwrap_or_default();
                        let env = mapping::environment();
                        let n = self
                            .flow
                            .file
                            .mapping
                            .invoice
                            .get("InvoiceNumber")
                            .and_then(|e| env.compile_expression(e).ok())
                            .and_then(|e| {
                                e.eval(minijinja::context! { invoice => &record, options => mapping::options_value(&self.flow.file.options) })
                                    .ok()
                            })
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| link.source_id.clone());
                        numbers.push((link, n));
                    }
                }
            }
            let mut ctx = self.dest_ctx();
            ctx.params.insert(
                "InvoiceNumbers".to_owned(),
                numbers
                    .iter()
                    .map(|(_, n)| n.clone())
                    .collect::<Vec<_>>()
                    .join(","),
            );
            let mut found: HashMap<String, String> = HashMap::new();
            self.dest
                .list(names::DEST_INVOICES, &ctx, |inv| {
                    if let (Some(n), Some(id)) =
                        (inv["InvoiceNumber"].as_str(), inv["InvoiceID"].as_str())
                        && inv["Status"].as_str() != Some("DELETED")
                    {
                        found.insert(n.to_owned(), id.to_owned());
                    }
                    ControlFlow::Continue(())
                })
                .await?;
            for (link, number) in numbers {
                let Some(pending) = &link.pending else {
                    continue;
                };
                match found.get(&number) {
                    Some(id) => self.state.finish_write(
                        self.name(),
                        names::INVOICE,
                        &link.source_id,
                        id,
                        &pending.source_version,
                        None,
                        self.now(),
                    )?,
                    None => {
                        self.state
                            .abandon_write(self.name(), names::INVOICE, &link.source_id)?
                    }
                }
            }
        }
        Ok(())
    }

    /// The destination contact id of each client the works need, creating the missing ones.
    async fn contacts<'w>(
        &self,
        works: impl Iterator<Item = &'w Work>,
        run: i64,
        summary: &mut RunSummary,
        plan: &mut Vec<Planned>,
    ) -> Result<HashMap<String, String>, SyncError> {
        let mut ids = HashMap::new();
        let mut missing = BTreeMap::new();
        for w in works {
            let key = w.client.to_lowercase();
            if ids.contains_key(&key) || missing.contains_key(&key) {
                continue;
            }
            match self.state.link(self.name(), names::CONTACT, &key)? {
                Some(Link {
                    dest_id: Some(id),
                    pending: None,
                    ..
                }) => {
                    ids.insert(key, id);
                }
                _ => {
                    missing.insert(key, w.client.clone());
                }
            }
        }
        if missing.is_empty() {
            return Ok(ids);
        }
        // Names are unique among active contacts: an existing one is used, never duplicated.
        let mut existing = HashMap::new();
        self.dest
            .list(names::DEST_CONTACTS, &self.dest_ctx(), |c| {
                if c["ContactStatus"].as_str().unwrap_or("ACTIVE") == "ACTIVE"
                    && let (Some(n), Some(id)) = (c["Name"].as_str(), c["ContactID"].as_str())
                {
                    existing.insert(n.trim().to_lowercase(), id.to_owned());
                }
                ControlFlow::Continue(())
            })
            .await?;
        let mut to_create = Vec::new();
        for (key, name) in missing {
            match existing.get(&key) {
                Some(id) => {
                    if !self.dry_run {
                        self.state.finish_write(
                            self.name(),
                            names::CONTACT,
                            &key,
                            id,
                            "",
                            None,
                            self.now(),
                        )?;
                    }
                    ids.insert(key, id.clone());
                }
                None => to_create.push((key, name)),
            }
        }
        let env = mapping::environment();
        let tables = mapping::tables_value(&self.flow.tables);
        let options = &mapping::options_value(&self.flow.file.options);
        let op = self.dest.spec().file().resources[names::DEST_CONTACTS]
            .create
            .clone()
            .ok_or_else(|| {
                SyncError::Config("the destination cannot create contacts".to_owned())
            })?;
        for chunk in to_create.chunks(op.batch_size.unwrap_or(1).max(1) as usize) {
            let mut records = Vec::new();
            for (_, name) in chunk {
                let client = json!({ "name": name });
                let mut record = mapping::evaluate(
                    &env,
                    "contact",
                    &self.flow.file.mapping.contact,
                    &minijinja::context! { client => &client, options => options, tables => &tables },
                )
                .map_err(SyncError::Config)?;
                record.entry("Name").or_insert_with(|| json!(name));
                records.push(Value::Object(record));
            }
            if self.dry_run {
                for (key, name) in chunk {
                    ids.insert(key.clone(), "(new contact)".to_owned());
                    summary.contacts_created += 1;
                    plan.push(Planned {
                        action: "contact",
                        source_id: name.clone(),
                        detail: "would be created".to_owned(),
                    });
                }
                continue;
            }
            let scope = format!("{}/contacts/{}", self.name(), self.tenant.id);
            let key = idempotency_key(&scope, &records, 128);
            for (k, _) in chunk {
                self.state
                    .begin_write(self.name(), names::CONTACT, k, "", &key, self.now())?;
            }
            let results = match self
                .write_batch(names::DEST_CONTACTS, OpKind::Create, &op, &records, &key)
                .await?
            {
                Ok(results) => results,
                Err(message) => chunk
                    .iter()
                    .map(|_| crate::write::ItemResult {
                        index: 0,
                        status: "failed",
                        id: None,
                        errors: vec![message.clone()],
                    })
                    .collect(),
            };
            for (result, (k, name)) in results.into_iter().zip(chunk) {
                match result.id {
                    Some(id) if result.status == "ok" => {
                        self.state.finish_write(
                            self.name(),
                            names::CONTACT,
                            k,
                            &id,
                            "",
                            None,
                            self.now(),
                        )?;
                        self.state
                            .clear_error(self.name(), names::CONTACT, k, self.now())?;
                        summary.contacts_created += 1;
                        plan.push(Planned {
                            action: "contact",
                            source_id: name.clone(),
                            detail: format!("created {id}"),
                        });
                        ids.insert(k.clone(), id);
                    }
                    _ => {
                        self.state.abandon_write(self.name(), names::CONTACT, k)?;
                        self.state.queue_error(
                            self.name(),
                            names::CONTACT,
                            k,
                            "create",
                            &result.errors.join("; "),
                            Some(run),
                            self.now(),
                        )?;
                    }
                }
            }
        }
        Ok(ids)
    }

    fn with_contact(&self, work: &Work, contacts: &HashMap<String, String>) -> Option<Value> {
        let id = contacts.get(&work.client.to_lowercase())?;
        let mut record = work.record.clone();
        record.insert("Contact".to_owned(), json!({ "ContactID": id }));
        Some(Value::Object(record))
    }

    /// One batch write to the destination, carrying `key` in the operation's idempotency
    /// header: the per-item results, or the message of a refusal of the whole batch (nothing
    /// was written). Anything else ends the run, leaving the batch's intents pending.
    async fn write_batch(
        &self,
        resource: &str,
        kind: OpKind,
        op: &weft_core::model::Operation,
        records: &[Value],
        key: &str,
    ) -> Result<Result<Vec<crate::write::ItemResult>, String>, SyncError> {
        let file = self.dest.spec().file();
        let header = op
            .idempotency
            .as_ref()
            .map_or("Idempotency-Key".to_owned(), |i| i.header.clone());
        let outcome = self
            .dest
            .call(
                resource,
                kind,
                &self.dest_ctx(),
                &[],
                &[(header, key.to_owned())],
                Some(&crate::write::body(op, records)),
            )
            .await;
        match outcome {
            Ok(answer) => {
                let returned =
                    crate::extract::records(&answer.body, &op.records).unwrap_or_default();
                let primary = file
                    .resources
                    .get(resource)
                    .map_or("id", |r| r.primary_key.as_str());
                Ok(Ok(item_results(
                    0,
                    records.len(),
                    &returned,
                    op.item_errors.as_ref(),
                    primary,
                )))
            }
            Err(SessionError::Call(CallError::Refused {
                class: weft_core::model::ErrorClass::Validation,
                message,
                ..
            })) => Ok(Err(message)),
            Err(e) => Err(e.into()),
        }
    }

    async fn queue(
        &self,
        run: i64,
        work: &Work,
        stage: &str,
        message: &str,
        summary: &mut RunSummary,
        plan: &mut Vec<Planned>,
    ) -> Result<(), SyncError> {
        summary.failed += 1;
        plan.push(Planned {
            action: "failed",
            source_id: work.source_id.clone(),
            detail: message.to_owned(),
        });
        if !self.dry_run {
            self.state.queue_error(
                self.name(),
                names::INVOICE,
                &work.source_id,
                stage,
                message,
                Some(run),
                self.now(),
            )?;
        }
        Ok(())
    }

    /// Creates invoices in the destination's batches, each with its idempotency key and the
    /// intent recorded first.
    async fn create(
        &self,
        works: Vec<Work>,
        contacts: &HashMap<String, String>,
        run: i64,
        summary: &mut RunSummary,
        plan: &mut Vec<Planned>,
    ) -> Result<(), SyncError> {
        let op = self.dest.spec().file().resources[names::DEST_INVOICES]
            .create
            .clone()
            .ok_or_else(|| {
                SyncError::Config("the destination cannot create invoices".to_owned())
            })?;
        let mut ready = Vec::new();
        for w in works {
            match self.with_contact(&w, contacts) {
                Some(record) => ready.push((w, record)),
                None => {
                    let message = format!(
                        "no contact for client `{}` (see the contact errors)",
                        w.client
                    );
                    self.queue(run, &w, "contact", &message, summary, plan)
                        .await?;
                }
            }
        }
        if self.dry_run {
            for (w, _) in &ready {
                summary.created += 1;
                plan.push(Planned {
                    action: "create",
                    source_id: w.source_id.clone(),
                    detail: format!(
                        "{} for {} ({} lines, {})",
                        w.number,
                        w.client,
                        w.lines.len(),
                        w.total
                    ),
                });
            }
            return Ok(());
        }
        let total = ready.len();
        for (n, chunk) in ready
            .chunks(op.batch_size.unwrap_or(1).max(1) as usize)
            .enumerate()
        {
            self.tell(&format!(
                "creating invoices: {} of {total}",
                (n * chunk.len()).min(total)
            ));
            let records: Vec<Value> = chunk.iter().map(|(_, r)| r.clone()).collect();
            let scope = format!("{}/invoices/{}", self.name(), self.tenant.id);
            let key = idempotency_key(&scope, &records, 128);
            // Every intent of the batch in one transaction, before the request.
            let intents: Vec<WriteIntent<'_>> = chunk
                .iter()
                .map(|(w, _)| WriteIntent {
                    source_id: &w.source_id,
                    source_version: &w.version,
                    idempotency_key: &key,
                })
                .collect();
            self.state
                .begin_writes(self.name(), names::INVOICE, &intents, self.now())?;
            let results = match self
                .write_batch(names::DEST_INVOICES, OpKind::Create, &op, &records, &key)
                .await?
            {
                Ok(results) => results,
                Err(message) => {
                    // Refused as a whole: nothing was created.
                    for (w, _) in chunk {
                        self.state
                            .abandon_write(self.name(), names::INVOICE, &w.source_id)?;
                        self.queue(run, w, "create", &message, summary, plan)
                            .await?;
                    }
                    continue;
                }
            };
            // Every link of the batch in one transaction, then the failures one by one.
            let done: Vec<WriteDone<'_>> = results
                .iter()
                .zip(chunk)
                .filter(|(r, _)| r.status == "ok" && r.id.is_some())
                .map(|(r, (w, _))| WriteDone {
                    source_id: &w.source_id,
                    dest_id: r.id.as_deref().unwrap_or_default(),
                    source_version: &w.version,
                    dest_version: None,
                })
                .collect();
            self.state
                .finish_writes(self.name(), names::INVOICE, &done, self.now())?;
            for (result, (w, _)) in results.iter().zip(chunk) {
                match &result.id {
                    Some(id) if result.status == "ok" => {
                        self.state.clear_error(
                            self.name(),
                            names::INVOICE,
                            &w.source_id,
                            self.now(),
                        )?;
                        summary.created += 1;
                        plan.push(Planned {
                            action: "create",
                            source_id: w.source_id.clone(),
                            detail: format!("{} → {id} ({})", w.number, w.total),
                        });
                    }
                    _ => {
                        self.state
                            .abandon_write(self.name(), names::INVOICE, &w.source_id)?;
                        let message = result.errors.join("; ");
                        self.queue(run, w, "create", &message, summary, plan)
                            .await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Updates changed invoices while the destination allows it; records why when it does not.
    async fn update(
        &self,
        works: Vec<(Work, String)>,
        contacts: &HashMap<String, String>,
        run: i64,
        summary: &mut RunSummary,
        plan: &mut Vec<Planned>,
    ) -> Result<(), SyncError> {
        if works.is_empty() {
            return Ok(());
        }
        let op = self.dest.spec().file().resources[names::DEST_INVOICES]
            .update
            .clone()
            .ok_or_else(|| {
                SyncError::Config("the destination cannot update invoices".to_owned())
            })?;
        // What the destination holds now: an invoice that is paid, voided or deleted stays as is.
        let mut states: HashMap<String, (String, String)> = HashMap::new();
        for chunk in works.chunks(50) {
            let mut ctx = self.dest_ctx();
            ctx.params.insert(
                "IDs".to_owned(),
                chunk
                    .iter()
                    .map(|(_, d)| d.clone())
                    .collect::<Vec<_>>()
                    .join(","),
            );
            self.dest
                .list(names::DEST_INVOICES, &ctx, |inv| {
                    if let Some(id) = inv["InvoiceID"].as_str() {
                        states.insert(
                            id.to_owned(),
                            (
                                inv["Status"].as_str().unwrap_or_default().to_owned(),
                                inv["AmountPaid"].to_string(),
                            ),
                        );
                    }
                    ControlFlow::Continue(())
                })
                .await?;
        }
        let mut ready = Vec::new();
        for (w, dest) in works {
            let editable = states.get(&dest).is_some_and(|(status, paid)| {
                matches!(status.as_str(), "DRAFT" | "SUBMITTED")
                    || (status == "AUTHORISED" && matches!(paid.as_str(), "0" | "0.0" | "null"))
            });
            if !editable {
                let why = states.get(&dest).map_or_else(
                    || "the destination invoice is gone".to_owned(),
                    |(s, _)| format!("the destination invoice is {s} with payments or closed, so it is not changed"),
                );
                summary.unchanged += 1;
                plan.push(Planned {
                    action: "skip",
                    source_id: w.source_id.clone(),
                    detail: why.clone(),
                });
                if !self.dry_run {
                    self.state
                        .set_note(self.name(), names::INVOICE, &w.source_id, Some(&why))?;
                    // The version is recorded so the same refusal is not retried every run.
                    self.state.finish_write(
                        self.name(),
                        names::INVOICE,
                        &w.source_id,
                        &dest,
                        &w.version,
                        None,
                        self.now(),
                    )?;
                }
                continue;
            }
            match self.with_contact(&w, contacts) {
                Some(Value::Object(mut record)) => {
                    record.insert("InvoiceID".to_owned(), json!(dest));
                    // Status is the destination's to keep once issued.
                    record.remove("Status");
                    ready.push((w, dest, Value::Object(record)));
                }
                _ => {
                    let message = format!("no contact for client `{}`", w.client);
                    self.queue(run, &w, "contact", &message, summary, plan)
                        .await?;
                }
            }
        }
        if self.dry_run {
            for (w, dest, _) in &ready {
                summary.updated += 1;
                plan.push(Planned {
                    action: "update",
                    source_id: w.source_id.clone(),
                    detail: format!("{} ({dest}) now {}", w.number, w.total),
                });
            }
            return Ok(());
        }
        for chunk in ready.chunks(op.batch_size.unwrap_or(1).max(1) as usize) {
            let records: Vec<Value> = chunk.iter().map(|(_, _, r)| r.clone()).collect();
            let scope = format!("{}/invoices-update/{}", self.name(), self.tenant.id);
            let key = idempotency_key(&scope, &records, 128);
            let results = match self
                .write_batch(names::DEST_INVOICES, OpKind::Update, &op, &records, &key)
                .await?
            {
                Ok(results) => results,
                Err(message) => {
                    for (w, _, _) in chunk {
                        self.queue(run, w, "update", &message, summary, plan)
                            .await?;
                    }
                    continue;
                }
            };
            // The batch's links in one transaction, as for creates.
            let done: Vec<WriteDone<'_>> = results
                .iter()
                .zip(chunk)
                .filter(|(r, _)| r.status == "ok")
                .map(|(_, (w, dest, _))| WriteDone {
                    source_id: &w.source_id,
                    dest_id: dest,
                    source_version: &w.version,
                    dest_version: None,
                })
                .collect();
            self.state
                .finish_writes(self.name(), names::INVOICE, &done, self.now())?;
            for (result, (w, dest, _)) in results.iter().zip(chunk) {
                if result.status == "ok" {
                    self.state.clear_error(
                        self.name(),
                        names::INVOICE,
                        &w.source_id,
                        self.now(),
                    )?;
                    summary.updated += 1;
                    plan.push(Planned {
                        action: "update",
                        source_id: w.source_id.clone(),
                        detail: format!("{} ({dest}) now {}", w.number, w.total),
                    });
                } else {
                    let message = result.errors.join("; ");
                    self.queue(run, w, "update", &message, summary, plan)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Records the destination id at the source (Kantata's external reference) for every linked
    /// invoice that does not have it yet.
    async fn references(&self, summary: &mut RunSummary) -> Result<(), SyncError> {
        if self.dry_run {
            return Ok(());
        }
        let file = self.source.spec().file();
        let Some(op) = file.resources[names::SOURCE_INVOICES].update.clone() else {
            return Ok(());
        };
        for link in self.state.links(self.name(), names::INVOICE)? {
            let Some(dest) = &link.dest_id else { continue };
            if link.pending.is_some() {
                continue;
            }
            if let Some(done) = self
                .state
                .link(self.name(), names::REFERENCE, &link.source_id)?
                && done.dest_id.as_deref() == Some(dest.as_str())
                && done.pending.is_none()
            {
                continue;
            }
            let record = json!({
                "external_reference": {
                    "service_name": "xero",
                    "service_model": "Invoice",
                    "service_model_ref": dest,
                    "status": "successful",
                }
            });
            let ctx = RequestContext {
                id: Some(link.source_id.clone()),
                ..self.source_ctx()
            };
            // Writing a reference twice is harmless (Kantata keeps one per service), so no
            // reconciliation is needed after a crash.
            self.state.begin_write(
                self.name(),
                names::REFERENCE,
                &link.source_id,
                "",
                dest,
                self.now(),
            )?;
            self.source
                .call(
                    names::SOURCE_INVOICES,
                    OpKind::Update,
                    &ctx,
                    &[],
                    &[],
                    Some(&crate::write::body(&op, std::slice::from_ref(&record))),
                )
                .await?;
            self.state.finish_write(
                self.name(),
                names::REFERENCE,
                &link.source_id,
                dest,
                "",
                None,
                self.now(),
            )?;
            summary.references_written += 1;
        }
        Ok(())
    }

    /// Records at the source, once, the payment of each linked invoice the destination reports
    /// paid.
    async fn payments(
        &self,
        run: i64,
        summary: &mut RunSummary,
        plan: &mut Vec<Planned>,
    ) -> Result<(), SyncError> {
        let links = self.state.links(self.name(), names::INVOICE)?;
        let by_dest: HashMap<String, String> = links
            .iter()
            .filter_map(|l| l.dest_id.clone().map(|d| (d, l.source_id.clone())))
            .collect();
        if by_dest.is_empty() {
            return Ok(());
        }
        let dest_file = self.dest.spec().file();
        let inc = dest_file.resources[names::DEST_INVOICES]
            .list
            .as_ref()
            .and_then(|l| l.incremental.clone());
        let mut ctx = self.dest_ctx();
        ctx.params.insert("Statuses".to_owned(), "PAID".to_owned());
        ctx.cursor = self.since(names::PAYMENT, inc.as_ref())?;
        let mut paid = Vec::new();
        let started = self.now();
        self.dest
            .list(names::DEST_INVOICES, &ctx, |inv| {
                if inv["Status"].as_str() == Some("PAID")
                    && let Some(id) = inv["InvoiceID"].as_str()
                    && let Some(source) = by_dest.get(id)
                {
                    paid.push((source.clone(), id.to_owned()));
                }
                ControlFlow::Continue(())
            })
            .await?;
        let source_file = self.source.spec().file();
        let op = source_file
            .resources
            .get(names::SOURCE_PAYMENTS)
            .and_then(|r| r.create.clone())
            .ok_or_else(|| SyncError::Config("the source cannot record payments".to_owned()))?;
        let mut complete = true;
        for (source_id, dest_id) in paid {
            match self.state.link(self.name(), names::PAYMENT, &source_id)? {
                Some(Link {
                    dest_id: Some(_),
                    pending: None,
                    ..
                }) => continue,
                Some(Link {
                    pending: Some(_), ..
                }) if !self.dry_run => {
                    // A crash between asking and hearing back: look before writing again.
                    if let Some(existing) = self.source_payment(&source_id).await? {
                        self.state.finish_write(
                            self.name(),
                            names::PAYMENT,
                            &source_id,
                            &existing,
                            "",
                            None,
                            self.now(),
                        )?;
                        continue;
                    }
                }
                _ => {}
            }
            if self.dry_run {
                summary.payments_written += 1;
                plan.push(Planned {
                    action: "payment",
                    source_id,
                    detail: format!("paid in the destination ({dest_id}); would be recorded"),
                });
                continue;
            }
            // Kantata needs the invoice's project, and records a payment only on an unpaid one.
            let (workspace, already_paid) = self.source_invoice_state(&source_id).await?;
            if already_paid {
                self.state.finish_write(
                    self.name(),
                    names::PAYMENT,
                    &source_id,
                    "already-paid",
                    "",
                    None,
                    self.now(),
                )?;
                plan.push(Planned {
                    action: "skip",
                    source_id,
                    detail: format!(
                        "paid in the destination ({dest_id}) and already paid at the source"
                    ),
                });
                continue;
            }
            let Some(workspace) = workspace else {
                complete = false;
                self.state.queue_error(
                    self.name(),
                    names::PAYMENT,
                    &source_id,
                    "payment",
                    "the source invoice names no project, so its payment cannot be recorded",
                    Some(run),
                    self.now(),
                )?;
                summary.failed += 1;
                continue;
            };
            let record = json!({
                "workspace_id": workspace,
                "invoice_id": source_id,
                "message": format!("Paid in Xero (invoice {dest_id})"),
            });
            self.state.begin_write(
                self.name(),
                names::PAYMENT,
                &source_id,
                "",
                &dest_id,
                self.now(),
            )?;
            let outcome = self
                .source
                .call(
                    names::SOURCE_PAYMENTS,
                    OpKind::Create,
                    &self.source_ctx(),
                    &[],
                    &[],
                    Some(&crate::write::body(&op, std::slice::from_ref(&record))),
                )
                .await;
            match outcome {
                Ok(answer) => {
                    let returned =
                        crate::extract::records(&answer.body, &op.records).unwrap_or_default();
                    let id = returned
                        .first()
                        .and_then(|r| id_text(&r["id"]))
                        .unwrap_or_default();
                    self.state.finish_write(
                        self.name(),
                        names::PAYMENT,
                        &source_id,
                        &id,
                        "",
                        None,
                        self.now(),
                    )?;
                    self.state
                        .clear_error(self.name(), names::PAYMENT, &source_id, self.now())?;
                    summary.payments_written += 1;
                    plan.push(Planned {
                        action: "payment",
                        source_id,
                        detail: format!("recorded ({dest_id} paid)"),
                    });
                }
                // A 4xx refusal means nothing was recorded: it waits in the queue, and the cursor
                // stays so the payment is read again. Anything else may have been recorded: the
                // intent stays pending and the next run looks before writing.
                Err(SessionError::Call(CallError::Refused {
                    message, status, ..
                })) if (400..500).contains(&status) => {
                    complete = false;
                    plan.push(Planned {
                        action: "failed",
                        source_id: source_id.clone(),
                        detail: message.clone(),
                    });
                    self.state
                        .abandon_write(self.name(), names::PAYMENT, &source_id)?;
                    self.state.queue_error(
                        self.name(),
                        names::PAYMENT,
                        &source_id,
                        "payment",
                        &message,
                        Some(run),
                        self.now(),
                    )?;
                    summary.failed += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !self.dry_run && complete {
            // Xero compares If-Modified-Since to the second; the spec's overlap covers the edge.
            let at = jiff::Timestamp::from_millisecond(i64::try_from(started).unwrap_or(0))
                .map(|t| t.to_string())
                .unwrap_or_default();
            self.state.set_cursor(self.name(), names::PAYMENT, &at)?;
        }
        Ok(())
    }

    /// The id of a payment already recorded at the source for `invoice`, if any.
    async fn source_payment(&self, invoice: &str) -> Result<Option<String>, SyncError> {
        let mut ctx = self.source_ctx();
        ctx.params
            .insert("invoice_id".to_owned(), invoice.to_owned());
        let mut found = None;
        self.source
            .list(names::SOURCE_PAYMENTS, &ctx, |p| {
                if id_text(&p["invoice_id"]).as_deref() == Some(invoice) {
                    found = id_text(&p["id"]);
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            })
            .await?;
        Ok(found)
    }

    /// The project of source invoice `invoice`, and whether it is paid already.
    async fn source_invoice_state(
        &self,
        invoice: &str,
    ) -> Result<(Option<String>, bool), SyncError> {
        let ctx = RequestContext {
            id: Some(invoice.to_owned()),
            ..self.source_ctx()
        };
        let file = self.source.spec().file();
        let answer = self
            .source
            .call(names::SOURCE_INVOICES, OpKind::Get, &ctx, &[], &[], None)
            .await?;
        let record = file.resources[names::SOURCE_INVOICES]
            .get
            .as_ref()
            .and_then(|op| crate::extract::records(&answer.body, &op.records).ok())
            .and_then(|r| r.into_iter().next())
            .unwrap_or_default();
        let workspace = record["workspace_ids"]
            .get(0)
            .and_then(id_text)
            .or_else(|| id_text(&record["workspace_id"]));
        Ok((workspace, record["status"] == "accepted payment"))
    }
}
