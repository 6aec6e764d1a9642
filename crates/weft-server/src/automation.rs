//! What `weft serve` does by itself, beside the pages: it runs each flow when its `schedule`
//! says, runs a stream sooner when a webhook says its source changed, and tells people when a
//! run stops, fails or leaves records in the error queue.
//!
//! One task ([`Automation::run`]) owns it all and wakes on the earliest of: a flow falling due
//! (on the [`Clock`] it is given; tests use a simulated one), a webhook's [`Trigger`], a run of
//! its own ending, the poll interval, or shutdown. At each wake it reads the flows again (a
//! schedule added, changed or removed takes effect without a restart), starts what is due, and
//! looks in the run history for runs that ended since it last looked, whoever started them (this
//! task, *Sync now*, `weft sync run`), to notify about them. A run goes on a thread of its own,
//! as *Sync now*'s do, under the engine's flow lock: a flow already running elsewhere is not
//! started twice (the scheduled time passes; the next comes as usual), and triggers that arrive
//! while a flow runs are kept and run once it ends.
//!
//! A server stopped or killed during a run leaves it without an end; the run history shows it
//! as interrupted, and the next run settles what it left by natural key, as any run does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use weft_core::Spec;
use weft_engine::flow::Flow;
use weft_engine::limits::Clock;
use weft_engine::state::{RunOutcome, RunRecord, State as Db};
use weft_engine::workspace::Workspace;

use crate::notify::{Notifier, RunEvent};
use crate::pages::flows::{Job, JobError, run_job};
use crate::schedule::{Schedule, Scheduler};
use crate::webhooks::{self, Trigger};

/// How often, at the longest, the task looks at the flows and the run history.
pub const POLL: Duration = Duration::from_secs(10);

/// Why a run was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// Its schedule fell due.
    Schedule,
    /// A webhook event of this category named a record its stream reads.
    Webhook(String),
}

/// What the task did, for the server's log and for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Happened {
    /// A run was started (`stream`: only that stream).
    Started {
        /// The flow.
        flow: String,
        /// The one stream run, or all.
        stream: Option<String>,
        /// Why.
        why: Why,
    },
    /// A run this task started ended.
    Ended {
        /// The flow.
        flow: String,
        /// Its id in the run history, when it got one.
        run: Option<i64>,
        /// `completed`, `stopped`, `failed`, `busy` (another run held the flow) or `not run`.
        outcome: String,
        /// What went wrong, if anything (never holding a secret).
        detail: Option<String>,
    },
    /// With the state on PostgreSQL, a due or triggered run was put in the work queue for the
    /// fleet's workers (`weft worker`) instead of run here.
    Enqueued {
        /// The flow.
        flow: String,
        /// The job.
        job: i64,
        /// Whether it joined a job already queued.
        merged: bool,
        /// Why.
        why: Why,
    },
    /// People were told about a run.
    Notified {
        /// The message.
        text: String,
        /// Receivers that could not be told, by host and reason.
        failures: Vec<String>,
    },
    /// A flow file cannot be read or its schedule used; its schedule is left out until fixed.
    FlowProblem {
        /// The flow.
        flow: String,
        /// What is wrong.
        problem: String,
    },
}

impl std::fmt::Display for Happened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Happened::Started { flow, stream, why } => {
                write!(f, "run of flow {flow}")?;
                if let Some(s) = stream {
                    write!(f, " (stream {s})")?;
                }
                match why {
                    Why::Schedule => write!(f, " started: its schedule fell due"),
                    Why::Webhook(c) => write!(f, " started: a webhook event ({c})"),
                }
            }
            Happened::Ended {
                flow,
                run,
                outcome,
                detail,
            } => {
                write!(f, "run of flow {flow}")?;
                if let Some(id) = run {
                    write!(f, " ({id})")?;
                }
                write!(f, " ended: {outcome}")?;
                if let Some(d) = detail {
                    write!(f, ": {d}")?;
                }
                Ok(())
            }
            Happened::Enqueued {
                flow,
                job,
                merged,
                why,
            } => {
                write!(f, "run of flow {flow} queued as job {job}")?;
                if *merged {
                    write!(f, " (joined the job already queued)")?;
                }
                match why {
                    Why::Schedule => write!(f, ": its schedule fell due"),
                    Why::Webhook(c) => write!(f, ": a webhook event ({c})"),
                }
            }
            Happened::Notified { text, failures } if failures.is_empty() => {
                write!(f, "notified: {text}")
            }
            Happened::Notified { text, failures } => {
                write!(
                    f,
                    "notified: {text} (not delivered: {})",
                    failures.join("; ")
                )
            }
            Happened::FlowProblem { flow, problem } => {
                write!(
                    f,
                    "flow {flow} is not scheduled: {problem} (check it with `weft flow check {flow}`)"
                )
            }
        }
    }
}

/// Everything the task needs.
pub struct Automation {
    /// The workspace folder.
    pub workspace: PathBuf,
    /// The connectors.
    pub specs: Vec<Spec>,
    /// The console's OAuth callback URL (for opening connections as the pages do).
    pub callback: String,
    /// Time: when flows are due, and how long to sleep.
    pub clock: Arc<dyn Clock>,
    /// Who to tell when a run stops, fails or queues errors.
    pub notifier: Notifier,
    /// The webhook receiver's triggers, when webhooks are set up.
    pub triggers: Option<mpsc::Receiver<Trigger>>,
    /// The longest sleep between looks.
    pub poll: Duration,
    /// Where to report what it does.
    pub report: mpsc::UnboundedSender<Happened>,
}

/// The runs of the history this task has already considered for notifications.
struct Watch {
    /// Every run up to this id was seen (ended, or kept in `open`).
    last: i64,
    /// Runs seen without an end yet.
    open: BTreeSet<i64>,
}

impl Watch {
    /// Starts after the newest run: what ended before the server started is not news, but a
    /// run still under way then is watched until it ends.
    fn start(db: &Db) -> Self {
        let recent = db.runs(None, 500).unwrap_or_default();
        let last = recent.first().map_or(0, |r| r.id);
        let open = recent
            .iter()
            .filter(|r| !r.dry_run && r.outcome.is_none() && db.run_status(r) == "running")
            .map(|r| r.id)
            .collect();
        Watch { last, open }
    }

    /// Runs that ended (or were found interrupted) since the last look, as events to send.
    fn ended(&mut self, db: &Db) -> Vec<RunEvent> {
        let mut events = Vec::new();
        let Ok(mut recent) = db.runs(None, 500) else {
            return events;
        };
        recent.reverse();
        for r in recent {
            if r.id <= self.last && !self.open.contains(&r.id) {
                continue;
            }
            self.last = self.last.max(r.id);
            if r.dry_run {
                continue;
            }
            match event_of(db, &r) {
                Some(e) => {
                    self.open.remove(&r.id);
                    events.extend(e);
                }
                None => {
                    self.open.insert(r.id);
                }
            }
        }
        events
    }
}

/// What to tell about run `r`: `None` while it runs, else the events (none when it simply
/// completed).
fn event_of(db: &Db, r: &RunRecord) -> Option<Vec<RunEvent>> {
    let flow = r.flow.clone();
    let queued = |flow: String| {
        (r.summary.failed > 0).then_some(RunEvent::QueuedErrors {
            flow,
            count: r.summary.failed,
        })
    };
    Some(match &r.outcome {
        Some(RunOutcome::Completed) => queued(flow).into_iter().collect(),
        Some(RunOutcome::Stopped { reason }) => {
            let mut v = vec![RunEvent::Stopped {
                flow: flow.clone(),
                reason: reason.clone(),
            }];
            v.extend(queued(flow));
            v
        }
        Some(RunOutcome::Failed { reason }) => vec![RunEvent::Failed {
            flow,
            message: reason.clone(),
        }],
        None if db.run_status(r) == "running" => return None,
        None => vec![RunEvent::Stopped {
            flow: flow.clone(),
            reason: format!(
                "run {} was interrupted (its process ended before it finished); the next run settles what it left (weft sync run {flow})",
                r.id
            ),
        }],
    })
}

/// The streams a webhook event concerns: those reading, from a connection of the connector
/// that sends these webhooks and addressing the event's organisation, a resource the event's
/// category is about.
fn targets(ws: &Workspace, trigger: &Trigger) -> Vec<(String, String)> {
    let resources = webhooks::resources_of(&trigger.category);
    let mut out = Vec::new();
    if resources.is_empty() {
        return out;
    }
    for name in weft_engine::flows::names(ws.dir()) {
        let Ok(flow) = Flow::load(&weft_engine::flows::path(ws.dir(), &name)) else {
            continue;
        };
        for (stream, s) in &flow.file.streams {
            let Some(c) = flow.file.connections.get(&s.source.connection) else {
                continue;
            };
            if c.connector != webhooks::XERO_CONNECTOR
                || !resources.contains(&s.source.resource.as_str())
            {
                continue;
            }
            let Some(connection) = ws
                .file
                .connections
                .get(&flow.connection_name(&s.source.connection))
            else {
                continue;
            };
            let addressed = weft_engine::flows::tenant(&flow, &s.source.connection, connection);
            if addressed.is_ok_and(|t| t.id == trigger.tenant_id) {
                out.push((name.clone(), stream.clone()));
            }
        }
    }
    out
}

/// When `flow` is due next by its schedule, jitter included, as the flows pages show it: `None`
/// for a flow without a schedule.
pub fn next_due(db: &Db, flow: &Flow, now_ms: u64) -> Option<u64> {
    let schedule: Schedule = flow.file.schedule.as_deref()?.parse().ok()?;
    let mut s = Scheduler::new();
    s.insert(
        &flow.name,
        schedule,
        weft_engine::schedule::last_start(db, &flow.name),
    );
    s.next_due(&flow.name, now_ms)
}

impl Automation {
    /// Runs until `shutdown` completes. Runs under way then go on in their threads until the
    /// process ends; one cut short is shown as interrupted and settled by the next.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut scheduler = Scheduler::new();
        let mut schedules: BTreeMap<String, String> = BTreeMap::new();
        let mut problems: BTreeMap<String, String> = BTreeMap::new();
        let mut running: BTreeSet<String> = BTreeSet::new();
        let mut pending: BTreeMap<String, (BTreeSet<String>, String)> = BTreeMap::new();
        let (done_tx, mut done_rx) =
            mpsc::unbounded_channel::<(String, Result<weft_engine::run::Report, JobError>)>();
        let mut watch = None;
        loop {
            let now = self.clock.now_ms();
            if let Ok(ws) = Workspace::find(&self.workspace) {
                let db = ws.open_state().ok();
                self.reload(
                    &ws,
                    db.as_ref(),
                    &mut scheduler,
                    &mut schedules,
                    &mut problems,
                );
                for flow in scheduler.take_due(now) {
                    if running.contains(&flow) {
                        scheduler.finished(&flow);
                        continue;
                    }
                    if self.enqueue(&ws, &flow, Why::Schedule, None) {
                        scheduler.finished(&flow);
                        continue;
                    }
                    self.start(&flow, None, Why::Schedule, &done_tx, &mut running);
                }
                if let Some(db) = &db {
                    let watch = watch.get_or_insert_with(|| Watch::start(db));
                    for event in watch.ended(db) {
                        self.tell(&event).await;
                    }
                }
            }
            let until = scheduler
                .earliest(now)
                .map_or(self.poll, |t| Duration::from_millis(t.saturating_sub(now)))
                .min(self.poll);
            tokio::select! {
                () = &mut shutdown => return,
                () = self.clock.wait(until) => {}
                Some(trigger) = next_trigger(&mut self.triggers) => {
                    let Ok(ws) = Workspace::find(&self.workspace) else { continue };
                    for (flow, stream) in targets(&ws, &trigger) {
                        if self.enqueue(&ws, &flow, Why::Webhook(trigger.category.clone()), Some((&trigger.tenant_id, &stream))) {
                            continue;
                        }
                        if running.contains(&flow) {
                            let p = pending.entry(flow).or_insert_with(|| (BTreeSet::new(), trigger.category.clone()));
                            p.0.insert(stream);
                        } else {
                            self.start(&flow, Some(stream), Why::Webhook(trigger.category.clone()), &done_tx, &mut running);
                        }
                    }
                }
                Some((flow, result)) = done_rx.recv() => {
                    running.remove(&flow);
                    scheduler.finished(&flow);
                    let _ = self.report.send(ended(&flow, result));
                    if let Some((streams, category)) = pending.remove(&flow) {
                        // Several streams asked for: one run of the whole flow serves them all.
                        let stream = (streams.len() == 1).then(|| streams.into_iter().next()).flatten();
                        self.start(&flow, stream, Why::Webhook(category), &done_tx, &mut running);
                    }
                }
            }
        }
    }

    /// Reads the flows' schedules again: new and changed ones entered, removed ones dropped,
    /// each flow's last start raised to what the history says (a run started elsewhere counts).
    fn reload(
        &self,
        ws: &Workspace,
        db: Option<&Db>,
        scheduler: &mut Scheduler,
        schedules: &mut BTreeMap<String, String>,
        problems: &mut BTreeMap<String, String>,
    ) {
        let names = weft_engine::flows::names(ws.dir());
        for gone in schedules
            .keys()
            .filter(|n| !names.contains(n))
            .cloned()
            .collect::<Vec<_>>()
        {
            schedules.remove(&gone);
            scheduler.remove(&gone);
        }
        for name in names {
            let text = match Flow::load(&weft_engine::flows::path(ws.dir(), &name)) {
                Ok(flow) => flow.file.schedule.clone().map(Ok),
                Err(e) => Some(Err(e.to_string())),
            };
            let parsed = match text {
                None => {
                    problems.remove(&name);
                    if schedules.remove(&name).is_some() {
                        scheduler.remove(&name);
                    }
                    continue;
                }
                Some(Err(problem)) => Err(problem),
                Some(Ok(text)) => text
                    .parse::<Schedule>()
                    .map(|s| (text, s))
                    .map_err(|e| e.to_string()),
            };
            match parsed {
                Err(problem) => {
                    // Keep the schedule it had, if any; say once what is wrong.
                    if problems.get(&name) != Some(&problem) {
                        let _ = self.report.send(Happened::FlowProblem {
                            flow: name.clone(),
                            problem: problem.clone(),
                        });
                        problems.insert(name, problem);
                    }
                }
                Ok((text, schedule)) => {
                    problems.remove(&name);
                    let last = db.and_then(|db| weft_engine::schedule::last_start(db, &name));
                    if schedules.get(&name) != Some(&text) {
                        scheduler.insert(&name, schedule, last);
                        schedules.insert(name, text);
                    } else if let Some(last) = last {
                        scheduler.saw_start(&name, last);
                    }
                }
            }
        }
    }

    /// With the state on PostgreSQL, puts a run of `flow` in the work queue for the fleet's
    /// workers and says so; `false` (nothing done) with the SQLite state, where this process runs
    /// its flows itself. A queue that cannot be used is reported, and the run is left to the
    /// next due time or event. A webhook's job is for its organisation and the stream it
    /// concerns (`target`), so its worker runs that stream only.
    fn enqueue(&self, ws: &Workspace, flow: &str, why: Why, target: Option<(&str, &str)>) -> bool {
        if !matches!(ws.state_url(), Ok(Some(_))) {
            return false;
        }
        let queued = ws
            .open_state()
            .map_err(|e| e.to_string())
            .and_then(|state| {
                weft_engine::queue::Queue::open(&state, weft_engine::queue::QueueRules::default())
                    .map_err(|e| e.to_string())
            })
            .and_then(|queue| {
                let now = self.clock.now_ms();
                match &why {
                    // As the workers queue them: not while a job of the flow is queued or running.
                    Why::Schedule => queue.enqueue_due(flow, "schedule", now),
                    Why::Webhook(c) => queue.enqueue(
                        flow,
                        target.map(|t| t.0),
                        target.map(|t| t.1),
                        &format!("webhook ({c})"),
                        now,
                    ),
                }
                .map_err(|e| e.to_string())
            });
        let _ = self.report.send(match queued {
            Ok(done) => Happened::Enqueued {
                flow: flow.to_owned(),
                job: done.id,
                merged: done.merged,
                why,
            },
            Err(e) => Happened::Ended {
                flow: flow.to_owned(),
                run: None,
                outcome: "not queued".into(),
                detail: Some(e),
            },
        });
        true
    }

    fn start(
        &self,
        flow: &str,
        stream: Option<String>,
        why: Why,
        done: &mpsc::UnboundedSender<(String, Result<weft_engine::run::Report, JobError>)>,
        running: &mut BTreeSet<String>,
    ) {
        let workspace = match Workspace::find(&self.workspace) {
            Ok(ws) => ws,
            Err(e) => {
                let _ = self.report.send(Happened::Ended {
                    flow: flow.to_owned(),
                    run: None,
                    outcome: "not run".into(),
                    detail: Some(e.to_string()),
                });
                return;
            }
        };
        let job = Job {
            workspace,
            specs: self.specs.clone(),
            callback: self.callback.clone(),
            name: flow.to_owned(),
            stream: stream.clone(),
            dry_run: false,
        };
        let done = done.clone();
        let name = flow.to_owned();
        let spawned = std::thread::Builder::new()
            .name(format!("run {flow}"))
            .spawn(move || {
                let result = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(run_job(job)),
                    Err(e) => Err(JobError::Other(e.to_string())),
                };
                let _ = done.send((name, result));
            });
        match spawned {
            Ok(_) => {
                running.insert(flow.to_owned());
                let _ = self.report.send(Happened::Started {
                    flow: flow.to_owned(),
                    stream,
                    why,
                });
            }
            Err(e) => {
                let _ = self.report.send(Happened::Ended {
                    flow: flow.to_owned(),
                    run: None,
                    outcome: "not run".into(),
                    detail: Some(format!("no thread for the run: {e}")),
                });
            }
        }
    }

    async fn tell(&self, event: &RunEvent) {
        if self.notifier.is_empty() {
            return;
        }
        let failures = self.notifier.notify(event).await;
        let _ = self.report.send(Happened::Notified {
            text: event.text(),
            failures: failures.iter().map(ToString::to_string).collect(),
        });
    }
}

fn ended(flow: &str, result: Result<weft_engine::run::Report, JobError>) -> Happened {
    let (run, outcome, detail) = match result {
        Ok(report) => {
            let (outcome, detail) = match report.outcome {
                RunOutcome::Completed => ("completed", None),
                RunOutcome::Stopped { reason } => ("stopped", Some(reason)),
                RunOutcome::Failed { reason } => ("failed", Some(reason)),
            };
            (Some(report.run), outcome, detail)
        }
        Err(JobError::Busy(holder)) => (
            None,
            "busy",
            Some(format!("another run holds the flow ({holder})")),
        ),
        Err(JobError::Other(reason)) => (None, "not run", Some(reason)),
    };
    Happened::Ended {
        flow: flow.to_owned(),
        run,
        outcome: outcome.to_owned(),
        detail,
    }
}

async fn next_trigger(triggers: &mut Option<mpsc::Receiver<Trigger>>) -> Option<Trigger> {
    match triggers {
        Some(r) => match r.recv().await {
            Some(t) => Some(t),
            None => {
                *triggers = None;
                None
            }
        },
        None => std::future::pending().await,
    }
}
