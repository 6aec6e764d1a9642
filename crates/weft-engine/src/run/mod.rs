//! Running a flow: the same semantics for every flow, whatever its connectors.
//!
//! One run takes the flow's lock (one run per flow at a time), then runs each stream in order:
//! 1. it looks again at what the ledger and the error queue say is unsettled: writes whose
//!    outcome is unknown, write-backs not yet made, records a person marked for retry (each read
//!    by id; a record gone at the source is queued, and the run goes on);
//! 2. it reads what changed since the cursor, page by page (as a keyset where the spec allows,
//!    so a record changed during the read cannot push another past the reader);
//! 3. each page is a chunk: skip rules, lookups (cached, created once when missing), computed
//!    items, the mapped record and its version; then, against the ledger, unchanged records are
//!    left alone, new ones created in batches (intents committed before each request),
//!    unknown outcomes settled by natural key, changed ones updated while the update policy
//!    allows, and write-backs made once per destination id;
//! 4. the cursor moves past a chunk only once every record in it is handled (written,
//!    unchanged, skipped, or queued with its stage and message).
//!
//! Memory holds one chunk (a page) and the run's lookup caches, whatever the backlog.
//! A spent daily budget stops the run cleanly (`Stopped`); the next run resumes.
//!
//! The engine names no connector, resource or field: everything it needs is in the flow file
//! and the connectors' specs.

mod changes;
mod lookup;
mod outbox;
mod read;
mod record;
mod write;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use minijinja::Value as JValue;
use serde_json::Value;

use crate::flow::{Flow, Stream};
use crate::http::CallError;
use crate::limits::{Clock, LimitError};
use crate::request::{RequestContext, Tenant};
use crate::session::{Session, SessionError};
use crate::state::{RunOutcome, RunSummary, State, StateError};

/// Errors that end a run (per-record failures go to the error queue instead).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The state database failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// A call failed in a way that stops the run.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The flow does not fit its connections.
    #[error("{0}")]
    Config(String),
    /// Another run of the flow holds its lock.
    #[error(
        "flow `{flow}` is already running ({holder}); wait for it, or run with --wait to start when it ends"
    )]
    Busy {
        /// The flow.
        flow: String,
        /// Who holds the lock, since when.
        holder: String,
    },
}

/// What a run did or, in a dry run, would do to one record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Planned {
    /// The stream.
    pub stream: String,
    /// `create`, `update`, `unchanged`, `skip`, `lookup`, `link`, `pending`, `failed`.
    pub action: &'static str,
    /// The source id (or a lookup's key).
    pub source_id: String,
    /// A short description.
    pub detail: String,
}

/// How many plan entries a report keeps (the counts stay exact past it).
pub const PLAN_LIMIT: usize = 1000;

/// The result of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The run's id in the state database.
    pub run: i64,
    /// Counts.
    pub summary: RunSummary,
    /// How it ended.
    pub outcome: RunOutcome,
    /// Per-record actions (every record in a dry run, the changes otherwise), up to
    /// [`PLAN_LIMIT`].
    pub plan: Vec<Planned>,
    /// Plan entries left out past the limit.
    pub plan_omitted: u64,
}

/// One connection of the flow, at work.
pub struct Endpoint<'a> {
    /// Its session.
    pub session: &'a Session,
    /// The tenant its calls address, when the connector has tenants.
    pub tenant: Option<Tenant>,
}

/// Everything a run needs.
pub struct Run<'a> {
    /// The flow.
    pub flow: &'a Flow,
    /// Its connections by alias.
    pub endpoints: BTreeMap<String, Endpoint<'a>>,
    /// The state database.
    pub state: &'a State,
    /// Time.
    pub clock: &'a dyn Clock,
    /// Compute and report, write nothing.
    pub dry_run: bool,
    /// Run only this stream.
    pub only: Option<String>,
    /// When another run holds the flow: wait at most this long for it (refuse when `None`).
    pub wait: Option<Duration>,
    /// Told what the run is doing, as it goes (a progress line); `None` for quiet.
    pub progress: Option<&'a (dyn Fn(&str) + Sync)>,
}

/// Whether an error means "stop for now, resume later" (a spent daily budget).
fn is_cap(e: &RunError) -> Option<String> {
    match e {
        RunError::Session(
            s @ (SessionError::Call(CallError::DailyCap { .. })
            | SessionError::Limit(LimitError::Exhausted { .. })),
        ) => Some(s.to_string()),
        _ => None,
    }
}

/// A record's id as text.
pub(crate) fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The value at a dotted path of a record.
pub(crate) fn at<'v>(record: &'v Value, path: &str) -> &'v Value {
    crate::extract::at_path(record, path).unwrap_or(&Value::Null)
}

/// The run's plan and counts.
pub(crate) struct Tally {
    pub(crate) summary: RunSummary,
    pub(crate) plan: Vec<Planned>,
    pub(crate) omitted: u64,
}

impl Tally {
    pub(crate) fn plan(
        &mut self,
        stream: &str,
        action: &'static str,
        source_id: &str,
        detail: String,
    ) {
        if self.plan.len() < PLAN_LIMIT {
            self.plan.push(Planned {
                stream: stream.to_owned(),
                action,
                source_id: source_id.to_owned(),
                detail,
            });
        } else {
            self.omitted += 1;
        }
    }
}

impl Run<'_> {
    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    fn tell(&self, what: &str) {
        if let Some(progress) = self.progress {
            progress(what);
        }
    }

    /// Runs the flow once.
    pub async fn run(&self) -> Result<Report, RunError> {
        let _lock = crate::runlock::FlowLock::acquire_in(self.state, &self.flow.name, self.wait)
            .await
            .map_err(|holder| RunError::Busy {
                flow: self.flow.name.clone(),
                holder,
            })?;
        for (alias, c) in &self.flow.file.connections {
            let Some(e) = self.endpoints.get(alias) else {
                return Err(RunError::Config(format!(
                    "flow `{}` uses connection `{alias}`, which the run was not given",
                    self.flow.name
                )));
            };
            let id = &e.session.spec().file().id;
            if id != &c.connector {
                return Err(RunError::Config(format!(
                    "flow `{}` expects `{alias}` to be a {} connection, but `{}` is {id}; fix [connections.{alias}] in the flow",
                    self.flow.name,
                    c.connector,
                    self.flow.connection_name(alias)
                )));
            }
        }
        if let Some(only) = &self.only
            && let Err(e) = self.flow.has_stream(only)
        {
            return Err(RunError::Config(e));
        }
        let run = self
            .state
            .start_run(&self.flow.name, self.dry_run, self.now())?;
        let mut tally = Tally {
            summary: RunSummary::default(),
            plan: Vec::new(),
            omitted: 0,
        };
        let result = self.streams(run, &mut tally).await;
        let outcome = match result {
            Ok(()) => RunOutcome::Completed,
            Err(e) => match is_cap(&e) {
                Some(reason) => RunOutcome::Stopped { reason },
                None => RunOutcome::Failed {
                    reason: e.to_string(),
                },
            },
        };
        self.add_stats(&mut tally.summary);
        self.state
            .finish_run(run, &tally.summary, &outcome, self.now())?;
        Ok(Report {
            run,
            summary: tally.summary,
            outcome,
            plan: tally.plan,
            plan_omitted: tally.omitted,
        })
    }

    fn add_stats(&self, summary: &mut RunSummary) {
        let mut calls = 0;
        let mut limited = 0;
        let mut waited = 0u64;
        for e in self.endpoints.values() {
            let stats = e.session.stats();
            calls += stats.calls;
            limited += stats.rate_limited;
            waited += u64::try_from(stats.waited.as_millis()).unwrap_or(u64::MAX);
        }
        summary.calls = calls;
        summary.rate_limited = limited;
        summary.waited_ms = waited;
    }

    async fn streams(&self, run: i64, tally: &mut Tally) -> Result<(), RunError> {
        for (name, stream) in &self.flow.file.streams {
            if self.only.as_ref().is_some_and(|o| o != name) {
                continue;
            }
            let s = StreamRun::new(self, run, name, stream)?;
            s.go(tally).await?;
        }
        Ok(())
    }
}

/// One stream at work in a run.
pub(crate) struct StreamRun<'r> {
    pub(crate) run: &'r Run<'r>,
    pub(crate) id: i64,
    pub(crate) name: &'r str,
    pub(crate) stream: &'r Stream,
    pub(crate) env: minijinja::Environment<'static>,
    pub(crate) options: JValue,
    pub(crate) tables: JValue,
    pub(crate) caches: RefCell<HashMap<String, lookup::Cache>>,
    /// Write-backs computed and not sent yet.
    pub(crate) backs: RefCell<Vec<Back>>,
    /// Creates waiting to fill whole batches, each with the read position it was read at (no
    /// intent recorded yet, so the cursor does not move past them).
    pub(crate) held: RefCell<VecDeque<(record::Work, Option<jiff::Timestamp>)>>,
    /// The read position of the records being handled (none while revisiting by id).
    pub(crate) reading_at: Cell<Option<jiff::Timestamp>>,
    /// Create batches on their way to the destination (see [`outbox`]).
    pub(crate) outbox: outbox::Outbox,
    /// What a held create keeps for its write-backs.
    pub(crate) keep: record::Keep,
}

/// A write-back waiting to be sent.
#[derive(Debug)]
pub(crate) struct Back {
    /// Which of the stream's write-backs.
    pub(crate) index: usize,
    /// The source record it updates.
    pub(crate) source_id: String,
    /// The destination id it records.
    pub(crate) dest_id: String,
    /// The update's body.
    pub(crate) body: Value,
}

/// Write-backs kept waiting at most (then sent), so memory stays bounded.
const BACKS_WAITING: usize = 1000;

impl<'r> StreamRun<'r> {
    fn new(run: &'r Run<'r>, id: i64, name: &'r str, stream: &'r Stream) -> Result<Self, RunError> {
        let options = run.flow.options_value();
        Ok(Self {
            run,
            id,
            name,
            stream,
            env: crate::mapping::environment(),
            options: JValue::from_serialize(&options),
            tables: JValue::from_serialize(&run.flow.tables),
            caches: RefCell::default(),
            backs: RefCell::default(),
            held: RefCell::default(),
            reading_at: Cell::default(),
            outbox: outbox::Outbox::default(),
            keep: record::Keep::reading(stream.write_back.iter().flat_map(|b| b.fields.values())),
        })
    }

    pub(crate) fn flow(&self) -> &str {
        &self.run.flow.name
    }

    pub(crate) fn now(&self) -> u64 {
        self.run.now()
    }

    pub(crate) fn dry(&self) -> bool {
        self.run.dry_run
    }

    /// The endpoint of alias `alias` (checked at the start of the run).
    pub(crate) fn endpoint(&self, alias: &str) -> Result<&'r Endpoint<'r>, RunError> {
        self.run
            .endpoints
            .get(alias)
            .ok_or_else(|| RunError::Config(format!("no connection `{alias}` in this run")))
    }

    /// A request context for `alias`: its connection's field values and tenant.
    pub(crate) fn ctx(&self, alias: &str) -> Result<RequestContext, RunError> {
        let e = self.endpoint(alias)?;
        Ok(RequestContext {
            tenant: e.tenant.clone(),
            ..e.session.context(BTreeMap::new())
        })
    }

    /// The resource `name` of `alias`'s connector.
    pub(crate) fn resource(
        &self,
        alias: &str,
        name: &str,
    ) -> Result<&'r weft_core::model::Resource, RunError> {
        let file = self.endpoint(alias)?.session.spec().file();
        file.resources.get(name).ok_or_else(|| {
            RunError::Config(format!(
                "connector `{}` has no resource `{name}`; run `weft flow check {}`",
                file.id,
                self.flow()
            ))
        })
    }

    /// The error queue's record kind for this stream (its name).
    pub(crate) fn kind(&self) -> &str {
        self.name
    }

    /// Queues a record's failure at `stage`, and counts it.
    pub(crate) fn fail(
        &self,
        tally: &mut Tally,
        source_id: &str,
        stage: &str,
        message: &str,
    ) -> Result<(), RunError> {
        tally.summary.count(self.name, |c| c.failed += 1);
        tally.plan(
            self.name,
            "failed",
            source_id,
            format!("{stage}: {message}"),
        );
        if !self.dry() {
            self.run.state.queue_error(
                self.flow(),
                self.kind(),
                source_id,
                stage,
                message,
                Some(self.id),
                self.now(),
            )?;
        }
        Ok(())
    }

    /// Records every `(source id, destination id, source version)` of `kind` as written, in
    /// one transaction.
    pub(crate) fn link_all<'a>(
        &self,
        kind: &str,
        rows: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
    ) -> Result<(), RunError> {
        let rows: Vec<crate::state::WriteDone<'a>> = rows
            .into_iter()
            .map(
                |(source_id, dest_id, source_version)| crate::state::WriteDone {
                    source_id,
                    dest_id,
                    source_version,
                    dest_version: None,
                },
            )
            .collect();
        self.run
            .state
            .finish_writes(self.flow(), kind, &rows, self.now())?;
        Ok(())
    }

    /// Closes a record's open error, if it has one.
    pub(crate) fn cleared(&self, source_id: &str) -> Result<(), RunError> {
        if !self.dry() {
            self.run
                .state
                .clear_error(self.flow(), self.kind(), source_id, self.now())?;
        }
        Ok(())
    }

    async fn go(&self, tally: &mut Tally) -> Result<(), RunError> {
        if self.dry() {
            self.revisit(tally).await?;
            self.read(tally).await?;
            return self.flush_write_backs(tally).await;
        }
        // The records are read, prepared and classified here while the create batches go out
        // beside it, the connection's concurrency at a time, so the destination's slots do not
        // wait for the steps before the write.
        let rx = self.outbox.open();
        let steps = async {
            let done = async {
                self.run.tell(&format!(
                    "{}: looking again at unsettled records",
                    self.name
                ));
                self.revisit(tally).await?;
                self.dispatch_held(true)?;
                self.run.tell(&format!("{}: reading changes", self.name));
                self.read(tally).await
            }
            .await;
            self.outbox.close(done.is_err());
            done
        };
        let (done, ()) = futures_util::future::join(steps, self.send_outbox(rx)).await;
        // What came back is handled even when the steps failed: it was written.
        let answered = self.answered(tally, None).await;
        done?;
        answered?;
        self.flush_write_backs(tally).await
    }

    /// Handles one chunk of source records, from start to write-back.
    pub(crate) async fn chunk(
        &self,
        records: Vec<Value>,
        tally: &mut Tally,
    ) -> Result<(), RunError> {
        let works = self.prepare(records, tally).await?;
        let works = self.write(works, tally).await?;
        self.write_back(&works, tally)?;
        if !self.dry() {
            // Whole batches go out; the answers that came back are handled, and when many
            // batches wait for their answers the read waits too (memory stays bounded).
            self.dispatch_held(false)?;
            let waiting = 2 * self.concurrency()?;
            self.answered(tally, Some(waiting)).await?;
        }
        if self.backs.borrow().len() >= BACKS_WAITING {
            self.flush_write_backs(tally).await?;
        }
        self.save_progress(tally)
    }

    /// Saves the run's counts so far (after every chunk and every write batch), so a run that
    /// is killed still shows what it did.
    pub(crate) fn save_progress(&self, tally: &Tally) -> Result<(), RunError> {
        if !self.dry() {
            self.run.state.save_progress(self.id, &tally.summary)?;
        }
        Ok(())
    }
}
