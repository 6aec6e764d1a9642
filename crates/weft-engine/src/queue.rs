//! The work queue of a fleet, in the PostgreSQL state: jobs are flow runs (per flow, and
//! optionally per tenant — the organisation a webhook named — and narrowed to one stream, the
//! one a webhook concerns), taken by `weft worker` processes.
//!
//! The well-known `FOR UPDATE SKIP LOCKED` pattern in one table (`weft_jobs`), no coordination
//! of our own:
//! - a job is enqueued once: a second enqueue of a job still queued (same flow and tenant) is
//!   merged into it (due at the earlier of the two times, and widened to the whole flow when the
//!   two asked for different streams);
//! - a worker takes the oldest due job no other worker is taking (`SKIP LOCKED`) and whose flow
//!   no live lease holds, and holds it by a lease it renews ([`Queue::heartbeat`]);
//! - a lease that expires (its worker was killed or cut off) makes the job takeable again: the
//!   next run settles the writes the killed one left pending by natural key, as every run does;
//! - a failed run is retried after a backoff that doubles with each attempt, and after the
//!   job's last attempt it is given up (status `failed`) into the state's error queue, in the
//!   same transaction: an entry of kind [`GIVEN_UP_KIND`] whose source id is the job's id, with
//!   the last failure and `weft queue show ID`; retrying that entry
//!   ([`Queue::retry_given_up`]) queues its flow again, and a later job of the flow that
//!   completes closes it as fixed;
//! - a person cancels a queued job, or a running one (its worker sees the lease gone at its
//!   next heartbeat and stops the run).
//!
//! Two runs of one flow never overlap even when two workers take two jobs of it at once: the
//! run itself takes the flow's fleet-wide lock ([`crate::runlock::FlowLock::acquire_in`]), and
//! the worker that finds it held puts its job back ([`Queue::postpone`]) without counting an
//! attempt.
//!
//! Every time is given by the caller (`now_ms`), so tests drive the queue on a simulated clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::state::{PgPool, QueuedError, State};

/// The kind of the error-queue entry a job given up after its last attempt becomes; the
/// entry's source id is the job's id. (A flow's own entries are of its streams' kinds, which
/// hold no space.)
pub const GIVEN_UP_KIND: &str = "queue job";

/// The job id of error-queue entry `e` in SQL: its source id when that is a number (the CASE
/// keeps the cast from ever seeing another text, whatever order the planner picks).
const JOB_OF_ENTRY: &str = "CASE WHEN e.source_id ~ '^[0-9]{1,18}$' THEN e.source_id::BIGINT END";

/// The job an error-queue entry is about, when it is a job given up.
pub fn given_up_job(e: &QueuedError) -> Option<i64> {
    if e.kind == GIVEN_UP_KIND {
        e.source_id.parse().ok()
    } else {
        None
    }
}

/// Enqueues `($1 flow, $2 tenant, $3 reason, $4 max_attempts, $5 now, $6 stream)`, merged into
/// the job of the flow and tenant already queued (due at the earlier time; every stream unless
/// both asked for the same); returns the job's id and whether it is new.
const ENQUEUE: &str = "INSERT INTO weft_jobs (flow, tenant, status, reason, max_attempts, due_ms, created_ms, updated_ms, stream)
     VALUES ($1, $2, 'queued', $3, $4, $5, $5, $5, $6)
     ON CONFLICT (flow, tenant) WHERE status = 'queued'
     DO UPDATE SET due_ms = LEAST(weft_jobs.due_ms, EXCLUDED.due_ms), updated_ms = EXCLUDED.updated_ms,
         stream = CASE WHEN weft_jobs.stream = EXCLUDED.stream THEN weft_jobs.stream ELSE '' END
     RETURNING id, (xmax = 0)";

/// The advisory lock class under which a job of a flow is taken.
const TAKE_LOCK: i32 = 0x7765_6604;

/// How many due jobs one take looks at before saying there is none it may take.
const TAKE_CANDIDATES: usize = 32;

const JOB_COLUMNS: &str = "id, flow, tenant, status, reason, attempts, max_attempts, due_ms, lease_until_ms, worker, last_error, run_id, created_ms, updated_ms, finished_ms, stream";

/// Errors of the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The state is the SQLite file: a fleet's queue lives in PostgreSQL.
    #[error(
        "the work queue needs the state on PostgreSQL, and this workspace keeps it in {at}; move it with `weft state migrate --to postgres://USER@HOST/DATABASE`, then set `[state] url` in weft.toml (or WEFT_STATE_URL)"
    )]
    NeedsPostgres {
        /// The SQLite file.
        at: String,
    },
    /// The database refused or could not be reached.
    #[error("the work queue in {at} cannot be used: {reason}")]
    Database {
        /// The server (no password).
        at: String,
        /// What failed.
        reason: String,
    },
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Waiting for its due time and a worker.
    Queued,
    /// Leased to a worker (or its lease expired and another will take it).
    Running,
    /// Its run ended (completed or stopped by a daily cap).
    Done,
    /// Given up after its last attempt: in the error queue.
    Failed,
    /// Cancelled by a person.
    Cancelled,
    /// Merged into another queued job of the same flow and tenant while waiting for a retry.
    Merged,
}

impl JobStatus {
    /// Its name, as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Merged => "merged",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "done" => Self::Done,
            "cancelled" => Self::Cancelled,
            "merged" => Self::Merged,
            _ => Self::Failed,
        }
    }
}

/// One job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Its id.
    pub id: i64,
    /// The flow it runs.
    pub flow: String,
    /// The tenant it is for (empty: the flow as a whole).
    pub tenant: String,
    /// The only stream it runs (empty: every stream of the flow).
    pub stream: String,
    /// Where it stands.
    pub status: JobStatus,
    /// Who asked for it (`schedule`, `webhook`, `by hand`, …).
    pub reason: String,
    /// Attempts made (a lease taken counts one).
    pub attempts: u32,
    /// Attempts allowed before it is given up.
    pub max_attempts: u32,
    /// When it may be taken (Unix ms).
    pub due_ms: u64,
    /// When its lease ends, while running.
    pub lease_until_ms: Option<u64>,
    /// The worker that holds (or last held) it.
    pub worker: Option<String>,
    /// Why its last attempt failed.
    pub last_error: Option<String>,
    /// The state's run of its last attempt.
    pub run_id: Option<i64>,
    /// When it was enqueued.
    pub created_ms: u64,
    /// When it last changed.
    pub updated_ms: u64,
    /// When it ended (done, failed, cancelled).
    pub finished_ms: Option<u64>,
}

/// A worker of the fleet, as its heartbeat row shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSeen {
    /// Its id (`HOST/PID/RANDOM`), as jobs name their worker.
    pub id: String,
    /// Its machine.
    pub host: String,
    /// Its process id there.
    pub pid: i64,
    /// When it started (Unix ms, the database's clock).
    pub started_ms: u64,
    /// How long since its last heartbeat.
    pub silent_ms: u64,
    /// Whether it counts as alive (its slots and leases honoured).
    pub alive: bool,
}

/// The queue's rules.
#[derive(Debug, Clone, Copy)]
pub struct QueueRules {
    /// How long a lease lasts without a heartbeat.
    pub lease_ms: u64,
    /// Attempts before a job is given up.
    pub max_attempts: u32,
    /// The wait before the first retry; doubled at each further attempt.
    pub backoff_ms: u64,
    /// The longest wait before a retry.
    pub backoff_cap_ms: u64,
}

impl Default for QueueRules {
    fn default() -> Self {
        Self {
            lease_ms: 30_000,
            max_attempts: 5,
            backoff_ms: 30_000,
            backoff_cap_ms: 3_600_000,
        }
    }
}

impl QueueRules {
    /// The wait before retrying after attempt `attempt` (1 for the first) failed.
    pub fn backoff(&self, attempt: u32) -> u64 {
        let doubled = self
            .backoff_ms
            .saturating_mul(1u64 << attempt.saturating_sub(1).min(32));
        doubled.min(self.backoff_cap_ms)
    }
}

/// What an enqueue did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    /// The job.
    pub id: i64,
    /// Whether a job already queued took the request (nothing new was added).
    pub merged: bool,
}

/// What became of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Queued again, due then (Unix ms).
    Retry {
        /// When.
        due_ms: u64,
    },
    /// Its last attempt: given up into the error queue.
    GaveUp,
    /// The lease had already been lost (cancelled, or taken after expiring): nothing changed.
    LeaseLost,
}

/// What cancelling did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// It was waiting and will not run.
    Queued,
    /// It was running: its worker stops the run at its next heartbeat.
    Running,
    /// It had already ended, as this.
    AlreadyEnded(JobStatus),
}

/// The queue of the state's PostgreSQL database.
#[derive(Debug, Clone)]
pub struct Queue {
    pool: PgPool,
    rules: QueueRules,
    /// Each flow file's schedule as last read, by its path, with the file's stamp
    /// ([`Queue::enqueue_scheduled`]).
    schedules: Arc<Mutex<HashMap<std::path::PathBuf, ScheduleRead>>>,
}

/// What a scheduling turn did for one flow: its job, or why its file or schedule could not be read.
pub type Scheduled = Result<Enqueued, String>;

/// A flow file's schedule (`None`: it has none) or why it could not be read, and the file's
/// modification time and length when it was read.
#[derive(Debug)]
struct ScheduleRead {
    stamp: (std::time::SystemTime, u64),
    schedule: Result<Option<crate::schedule::Schedule>, String>,
}

/// The schedule of the flow file at `path`, read again only when its stamp changed since `read`
/// has it.
fn schedule_of(
    read: &mut HashMap<std::path::PathBuf, ScheduleRead>,
    path: &std::path::Path,
) -> Result<Option<crate::schedule::Schedule>, String> {
    let stamp = std::fs::metadata(path)
        .and_then(|m| Ok((m.modified()?, m.len())))
        .ok();
    if let (Some(stamp), Some(known)) = (stamp, read.get(path))
        && known.stamp == stamp
    {
        return known.schedule.clone();
    }
    let schedule = match crate::flow::Flow::load(path) {
        Ok(flow) => flow
            .file
            .schedule
            .as_deref()
            .map(|text| text.parse::<crate::schedule::Schedule>())
            .transpose()
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match stamp {
        Some(stamp) => {
            read.insert(
                path.to_path_buf(),
                ScheduleRead {
                    stamp,
                    schedule: schedule.clone(),
                },
            );
        }
        None => {
            read.remove(path);
        }
    }
    schedule
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn unms(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn job_row(r: &tokio_postgres::Row) -> Job {
    let opt = |i: usize| r.get::<_, Option<i64>>(i).map(unms);
    Job {
        id: r.get(0),
        flow: r.get(1),
        tenant: r.get(2),
        stream: r.get(15),
        status: JobStatus::parse(r.get(3)),
        reason: r.get(4),
        attempts: u32::try_from(r.get::<_, i32>(5)).unwrap_or(0),
        max_attempts: u32::try_from(r.get::<_, i32>(6)).unwrap_or(0),
        due_ms: unms(r.get(7)),
        lease_until_ms: opt(8),
        worker: r.get(9),
        last_error: r.get(10),
        run_id: r.get(11),
        created_ms: unms(r.get(12)),
        updated_ms: unms(r.get(13)),
        finished_ms: opt(14),
    }
}

impl Queue {
    /// The queue of `state`, which must be on PostgreSQL (its table is part of the state's schema).
    pub fn open(state: &State, rules: QueueRules) -> Result<Self, QueueError> {
        let Some(pool) = state.postgres() else {
            return Err(QueueError::NeedsPostgres {
                at: state.location().to_owned(),
            });
        };
        Ok(Self {
            pool: pool.clone(),
            rules,
            schedules: Arc::default(),
        })
    }

    /// The rules it follows.
    pub fn rules(&self) -> QueueRules {
        self.rules
    }

    fn run<T, F, Fut>(&self, f: F) -> Result<T, QueueError>
    where
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>> + Send + 'static,
        T: Send + 'static,
    {
        self.pool.run(f).map_err(|reason| QueueError::Database {
            at: self.pool.shown().to_owned(),
            reason,
        })
    }

    /// Enqueues a run of `flow` (for `tenant`, or the flow as a whole; of `stream` only, or of
    /// every stream), due at `now_ms`; merged into the job of the same flow and tenant already
    /// queued, if any, which then runs every stream unless both asked for the same one.
    pub fn enqueue(
        &self,
        flow: &str,
        tenant: Option<&str>,
        stream: Option<&str>,
        reason: &str,
        now_ms: u64,
    ) -> Result<Enqueued, QueueError> {
        let (flow, tenant, stream, reason) = (
            flow.to_owned(),
            tenant.unwrap_or_default().to_owned(),
            stream.unwrap_or_default().to_owned(),
            reason.to_owned(),
        );
        let max = i32::try_from(self.rules.max_attempts.max(1)).unwrap_or(i32::MAX);
        let now = ms(now_ms);
        self.run(move |client| async move {
            let row = client
                .query_one(ENQUEUE, &[&flow, &tenant, &reason, &max, &now, &stream])
                .await?;
            Ok(Enqueued {
                id: row.get(0),
                merged: !row.get::<_, bool>(1),
            })
        })
    }

    /// Enqueues a run of `flow` as a whole that its schedule made due, unless a job of the flow
    /// is already queued or running (then that job, `merged`): a scheduled run never waits
    /// behind another of the same flow. Taken under the lock `take` leases a flow's job with,
    /// so no job of the flow starts running in between.
    pub fn enqueue_due(
        &self,
        flow: &str,
        reason: &str,
        now_ms: u64,
    ) -> Result<Enqueued, QueueError> {
        let (flow, reason) = (flow.to_owned(), reason.to_owned());
        let max = i32::try_from(self.rules.max_attempts.max(1)).unwrap_or(i32::MAX);
        let now = ms(now_ms);
        self.run(move |mut client| async move {
            let tx = client.transaction().await?;
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                &[&TAKE_LOCK, &flow],
            )
            .await?;
            let active = tx
                .query_opt(
                    "SELECT id FROM weft_jobs WHERE flow = $1 AND status IN ('queued', 'running')
                     ORDER BY id LIMIT 1",
                    &[&flow],
                )
                .await?;
            let done = match active {
                Some(row) => Enqueued {
                    id: row.get(0),
                    merged: true,
                },
                None => {
                    let row = tx
                        .query_one(ENQUEUE, &[&flow, &"", &reason, &max, &now, &""])
                        .await?;
                    Enqueued {
                        id: row.get(0),
                        merged: !row.get::<_, bool>(1),
                    }
                }
            };
            tx.commit().await?;
            Ok(done)
        })
    }

    /// Looks through the flows of the workspace at `dir` for those their schedule makes due at
    /// `now_ms` and enqueues each ([`Queue::enqueue_due`]), with the reason `schedule`. A flow is
    /// due [`crate::schedule::next_run`] after the later of its last real run's start (from
    /// `state`) and its last scheduled job (so a flow that fails before it starts a run is not
    /// queued again until its next time), plus its jitter. What each due flow became: its job,
    /// or why its file or schedule could not be read; an error when the database could not say.
    ///
    /// A turn's cost does not grow with the flows' history: each file is read again only when it
    /// changed since this queue last read it, and one query gives every scheduled flow's last
    /// run and last scheduled job; then one transaction each for the flows that are due.
    pub fn enqueue_scheduled(
        &self,
        dir: &std::path::Path,
        state: &State,
        now_ms: u64,
    ) -> Result<Vec<(String, Scheduled)>, QueueError> {
        use crate::schedule::{counted_start, due_at};
        let mut out = Vec::new();
        let mut scheduled = Vec::new();
        {
            let mut read = crate::lock(&self.schedules);
            let flows: Vec<(String, std::path::PathBuf)> = crate::flows::names(dir)
                .into_iter()
                .map(|name| {
                    let path = crate::flows::path(dir, &name);
                    (name, path)
                })
                .collect();
            let paths: std::collections::HashSet<&std::path::PathBuf> =
                flows.iter().map(|(_, p)| p).collect();
            read.retain(|path, _| paths.contains(path));
            for (name, path) in flows {
                match schedule_of(&mut read, &path) {
                    Ok(None) => {}
                    Ok(Some(schedule)) => scheduled.push((name, schedule)),
                    Err(e) => out.push((name, Err(e))),
                }
            }
        }
        let names: Vec<String> = scheduled.iter().map(|(n, _)| n.clone()).collect();
        let lasts = self.run(move |client| async move {
            let rows = client
                .query(
                    "SELECT f.flow, r.started_ms, r.ended, j.at
                     FROM unnest($1::TEXT[]) AS f(flow)
                     LEFT JOIN LATERAL (
                         SELECT started_ms, outcome IS NOT NULL AS ended FROM runs
                         WHERE runs.flow = f.flow AND NOT dry_run ORDER BY id DESC LIMIT 1
                     ) r ON TRUE
                     LEFT JOIN LATERAL (
                         SELECT max(created_ms) AS at FROM weft_jobs
                         WHERE weft_jobs.flow = f.flow AND reason = 'schedule'
                     ) j ON TRUE",
                    &[&names],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| {
                    let run = r
                        .get::<_, Option<i64>>(1)
                        .map(|at| (unms(at), r.get::<_, Option<bool>>(2).unwrap_or(false)));
                    let queued = r.get::<_, Option<i64>>(3).map(unms);
                    (r.get::<_, String>(0), (run, queued))
                })
                .collect::<HashMap<_, _>>())
        })?;
        for (name, schedule) in scheduled {
            let (run, queued) = lasts.get(&name).copied().unwrap_or_default();
            let run = run.and_then(|(started, ended)| counted_start(state, &name, started, ended));
            let due = due_at(&name, &schedule, run.max(queued), now_ms);
            if due.is_some_and(|at| at <= now_ms) {
                let done = self
                    .enqueue_due(&name, "schedule", now_ms)
                    .map_err(|e| e.to_string());
                out.push((name, done));
            }
        }
        Ok(out)
    }

    /// When a job of `flow` was last enqueued with `reason` (Unix ms), if ever.
    pub fn last_enqueued(&self, flow: &str, reason: &str) -> Result<Option<u64>, QueueError> {
        let (flow, reason) = (flow.to_owned(), reason.to_owned());
        self.run(move |client| async move {
            let row = client
                .query_one(
                    "SELECT max(created_ms) FROM weft_jobs WHERE flow = $1 AND reason = $2",
                    &[&flow, &reason],
                )
                .await?;
            Ok(row.get::<_, Option<i64>>(0).map(unms))
        })
    }

    /// Whether this caller takes the fleet's turn at `work` now: `true` for one caller at most
    /// every `every_ms` (by the given times), whichever asks first.
    pub fn take_turn(&self, work: &str, every_ms: u64, now_ms: u64) -> Result<bool, QueueError> {
        let work = work.to_owned();
        let (now, since) = (ms(now_ms), ms(now_ms.saturating_sub(every_ms)));
        self.run(move |client| async move {
            let won = client
                .query_opt(
                    "INSERT INTO weft_turns (name, at_ms) VALUES ($1, $2)
                     ON CONFLICT (name) DO UPDATE SET at_ms = EXCLUDED.at_ms
                     WHERE weft_turns.at_ms <= $3
                     RETURNING name",
                    &[&work, &now, &since],
                )
                .await?;
            Ok(won.is_some())
        })
    }

    /// Takes the oldest due job for `worker`, leased until `now_ms` plus the lease: a queued
    /// job, or a running one whose lease expired; never a job of a flow another live lease
    /// holds. A job whose lease expired on its last attempt is given up instead.
    pub fn take(&self, worker: &str, now_ms: u64) -> Result<Option<Job>, QueueError> {
        let worker = worker.to_owned();
        let (now, until) = (ms(now_ms), ms(now_ms.saturating_add(self.rules.lease_ms)));
        self.run(move |mut client| async move {
            let tx = client.transaction().await?;
            let expired = tx
                .query(
                    "UPDATE weft_jobs SET status = 'failed', finished_ms = $1, updated_ms = $1, lease_until_ms = NULL,
                         last_error = coalesce(last_error || '; then ', '') || 'its worker stopped answering during its last attempt (lease expired)'
                     WHERE status = 'running' AND lease_until_ms < $1 AND attempts >= max_attempts
                     RETURNING id",
                    &[&now],
                )
                .await?;
            for r in &expired {
                into_error_queue(&tx, r.get(0), now).await?;
            }
            // Candidates one by one, each locked or skipped (SKIP LOCKED); a candidate is taken
            // only under its flow's transaction lock, after seeing no live lease of its flow, so
            // two takers never lease two jobs of one flow at once.
            let mut skipped: Vec<i64> = Vec::new();
            let mut row = None;
            for _ in 0..TAKE_CANDIDATES {
                let Some(candidate) = tx
                    .query_opt(
                        "SELECT id, flow FROM weft_jobs
                         WHERE ((status = 'queued' AND due_ms <= $1)
                                OR (status = 'running' AND lease_until_ms < $1))
                           AND id <> ALL($2)
                         ORDER BY due_ms, id
                         LIMIT 1
                         FOR UPDATE SKIP LOCKED",
                        &[&now, &skipped],
                    )
                    .await?
                else {
                    break;
                };
                let (id, flow): (i64, String) = (candidate.get(0), candidate.get(1));
                let locked: bool = tx
                    .query_one(
                        "SELECT pg_try_advisory_xact_lock($1, hashtext($2))",
                        &[&TAKE_LOCK, &flow],
                    )
                    .await?
                    .get(0);
                // A statement of its own: its snapshot is taken after the lock, so it sees the
                // lease another taker committed before releasing it.
                let free = locked
                    && tx
                        .query_one(
                            "SELECT NOT EXISTS (SELECT 1 FROM weft_jobs WHERE flow = $1 AND id <> $2
                                                AND status = 'running' AND lease_until_ms >= $3)",
                            &[&flow, &id, &now],
                        )
                        .await?
                        .get::<_, bool>(0);
                if !free {
                    skipped.push(id);
                    continue;
                }
                row = tx
                    .query_opt(
                        &format!(
                            "UPDATE weft_jobs SET status = 'running', attempts = attempts + 1, worker = $1,
                                 lease_until_ms = $3, updated_ms = $2
                             WHERE id = $4
                             RETURNING {JOB_COLUMNS}"
                        ),
                        &[&worker, &now, &until, &id],
                    )
                    .await?;
                break;
            }
            tx.commit().await?;
            Ok(row.as_ref().map(job_row))
        })
    }

    /// Renews `worker`'s lease of job `id` until `now_ms` plus the lease; `false` when the lease
    /// is lost (the job was cancelled, or taken by another worker after it expired): the
    /// worker must stop its run.
    pub fn heartbeat(&self, id: i64, worker: &str, now_ms: u64) -> Result<bool, QueueError> {
        let worker = worker.to_owned();
        let (now, until) = (ms(now_ms), ms(now_ms.saturating_add(self.rules.lease_ms)));
        self.run(move |client| async move {
            let n = client
                .execute(
                    "UPDATE weft_jobs SET lease_until_ms = $3, updated_ms = $4
                     WHERE id = $1 AND worker = $2 AND status = 'running'",
                    &[&id, &worker, &until, &now],
                )
                .await?;
            Ok(n == 1)
        })
    }

    /// Records the run of job `id`'s current attempt.
    pub fn set_run(&self, id: i64, worker: &str, run_id: i64) -> Result<(), QueueError> {
        let worker = worker.to_owned();
        self.run(move |client| async move {
            client
                .execute(
                    "UPDATE weft_jobs SET run_id = $3 WHERE id = $1 AND worker = $2 AND status = 'running'",
                    &[&id, &worker, &run_id],
                )
                .await
                .map(|_| ())
        })
    }

    /// Job `id`'s run ended (completed, or stopped by a budget to resume later): done, and the
    /// error-queue entries of earlier jobs of its flow given up (for its tenant, or for any
    /// when it ran the flow as a whole) are closed as fixed. `false` when `worker` no longer
    /// held it.
    pub fn finish(
        &self,
        id: i64,
        worker: &str,
        run_id: Option<i64>,
        now_ms: u64,
    ) -> Result<bool, QueueError> {
        let worker = worker.to_owned();
        let now = ms(now_ms);
        self.run(move |mut client| async move {
            let tx = client.transaction().await?;
            let Some(row) = tx
                .query_opt(
                    "UPDATE weft_jobs SET status = 'done', finished_ms = $3, updated_ms = $3,
                         lease_until_ms = NULL, run_id = coalesce($4, run_id)
                     WHERE id = $1 AND worker = $2 AND status = 'running'
                     RETURNING flow, tenant",
                    &[&id, &worker, &now, &run_id],
                )
                .await?
            else {
                return Ok(false);
            };
            let (flow, tenant): (String, String) = (row.get(0), row.get(1));
            // The flow's active entries first (by the errors' own index), then, for a job of one
            // tenant, each entry's job by its id (the CASE keeps the cast to numeric ids).
            tx.execute(
                &format!(
                    "UPDATE errors e SET status = 'fixed', closed_ms = $3
                     WHERE e.flow = $1 AND e.kind = $4 AND e.status IN ('open', 'retry')
                       AND ($2 = '' OR EXISTS (SELECT 1 FROM weft_jobs j
                                               WHERE j.id = {JOB_OF_ENTRY} AND j.tenant = $2))"
                ),
                &[&flow, &tenant, &now, &GIVEN_UP_KIND],
            )
            .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Job `id`'s attempt failed with `error`: queued again after the backoff, or given up into
    /// the error queue after its last attempt.
    pub fn fail(
        &self,
        id: i64,
        worker: &str,
        error: &str,
        now_ms: u64,
    ) -> Result<AfterFailure, QueueError> {
        self.failed(id, worker, error, now_ms, false)
    }

    /// Job `id` cannot run as it asks (its flow no longer addresses its tenant, or has no such
    /// stream): given up into the error queue at once, since another attempt would fail alike.
    pub fn give_up(
        &self,
        id: i64,
        worker: &str,
        error: &str,
        now_ms: u64,
    ) -> Result<AfterFailure, QueueError> {
        self.failed(id, worker, error, now_ms, true)
    }

    fn failed(
        &self,
        id: i64,
        worker: &str,
        error: &str,
        now_ms: u64,
        last: bool,
    ) -> Result<AfterFailure, QueueError> {
        let worker = worker.to_owned();
        let error = error.to_owned();
        let rules = self.rules;
        let now = ms(now_ms);
        self.run(move |mut client| async move {
            let tx = client.transaction().await?;
            let Some(row) = tx
                .query_opt(
                    "SELECT attempts, max_attempts, flow, tenant FROM weft_jobs
                     WHERE id = $1 AND worker = $2 AND status = 'running' FOR UPDATE",
                    &[&id, &worker],
                )
                .await?
            else {
                return Ok(AfterFailure::LeaseLost);
            };
            let (attempts, max, flow, tenant): (i32, i32, String, String) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            let after = if last || attempts >= max {
                tx.execute(
                    "UPDATE weft_jobs SET status = 'failed', last_error = $2, finished_ms = $3,
                         updated_ms = $3, lease_until_ms = NULL WHERE id = $1",
                    &[&id, &error, &now],
                )
                .await?;
                into_error_queue(&tx, id, now).await?;
                AfterFailure::GaveUp
            } else {
                let due =
                    now.saturating_add(ms(rules.backoff(u32::try_from(attempts).unwrap_or(1))));
                requeue(&tx, id, &flow, &tenant, due, now, Some(&error), false).await?;
                AfterFailure::Retry { due_ms: unms(due) }
            };
            tx.commit().await?;
            Ok(after)
        })
    }

    /// Puts job `id` back without counting the attempt, due after `delay_ms`: its flow was
    /// running elsewhere, or its worker is stopping. `false` when `worker` no longer held it.
    pub fn postpone(
        &self,
        id: i64,
        worker: &str,
        delay_ms: u64,
        now_ms: u64,
    ) -> Result<bool, QueueError> {
        let worker = worker.to_owned();
        let now = ms(now_ms);
        let due = ms(now_ms.saturating_add(delay_ms));
        self.run(move |mut client| async move {
            let tx = client.transaction().await?;
            let Some(row) = tx
                .query_opt(
                    "SELECT flow, tenant FROM weft_jobs
                     WHERE id = $1 AND worker = $2 AND status = 'running' FOR UPDATE",
                    &[&id, &worker],
                )
                .await?
            else {
                return Ok(false);
            };
            let (flow, tenant): (String, String) = (row.get(0), row.get(1));
            requeue(&tx, id, &flow, &tenant, due, now, None, true).await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Cancels job `id`; `None` when there is no such job.
    pub fn cancel(&self, id: i64, now_ms: u64) -> Result<Option<Cancelled>, QueueError> {
        let now = ms(now_ms);
        self.run(move |mut client| async move {
            let tx = client.transaction().await?;
            let Some(row) = tx
                .query_opt("SELECT status FROM weft_jobs WHERE id = $1 FOR UPDATE", &[&id])
                .await?
            else {
                return Ok(None);
            };
            let status = JobStatus::parse(row.get(0));
            let done = match status {
                JobStatus::Queued | JobStatus::Running => {
                    tx.execute(
                        "UPDATE weft_jobs SET status = 'cancelled', finished_ms = $2, updated_ms = $2,
                             lease_until_ms = NULL WHERE id = $1",
                        &[&id, &now],
                    )
                    .await?;
                    if status == JobStatus::Queued {
                        Cancelled::Queued
                    } else {
                        Cancelled::Running
                    }
                }
                other => Cancelled::AlreadyEnded(other),
            };
            tx.commit().await?;
            Ok(Some(done))
        })
    }

    /// Retries error-queue entry `error_id` of a job given up: its flow (and tenant) is queued
    /// again (merged into a job already queued) and the entry is marked for retry, closed as
    /// fixed once a job of the flow completes. `None` when the entry is not an open entry of a
    /// job given up.
    pub fn retry_given_up(
        &self,
        error_id: i64,
        now_ms: u64,
    ) -> Result<Option<Enqueued>, QueueError> {
        let now = ms(now_ms);
        self.run(move |mut client| async move {
            let tx = client.transaction().await?;
            let Some(row) = tx
                .query_opt(
                    &format!(
                        "SELECT j.flow, j.tenant, j.max_attempts, e.id, j.stream FROM errors e
                         JOIN weft_jobs j ON j.id = {JOB_OF_ENTRY} AND j.flow = e.flow
                         WHERE e.id = $1 AND e.kind = $2 AND e.status = 'open'
                         FOR UPDATE OF e"
                    ),
                    &[&error_id, &GIVEN_UP_KIND],
                )
                .await?
            else {
                return Ok(None);
            };
            let (flow, tenant, max, stream): (String, String, i32, String) =
                (row.get(0), row.get(1), row.get(2), row.get(4));
            let reason = format!("retry of error {error_id}");
            let row = tx
                .query_one(ENQUEUE, &[&flow, &tenant, &reason, &max, &now, &stream])
                .await?;
            tx.execute(
                "UPDATE errors SET status = 'retry' WHERE id = $1",
                &[&error_id],
            )
            .await?;
            tx.commit().await?;
            Ok(Some(Enqueued {
                id: row.get(0),
                merged: !row.get::<_, bool>(1),
            }))
        })
    }

    /// One job.
    pub fn job(&self, id: i64) -> Result<Option<Job>, QueueError> {
        self.run(move |client| async move {
            let row = client
                .query_opt(
                    &format!("SELECT {JOB_COLUMNS} FROM weft_jobs WHERE id = $1"),
                    &[&id],
                )
                .await?;
            Ok(row.as_ref().map(job_row))
        })
    }

    /// The jobs not ended (queued and running), then, with `all`, the most recent ended ones;
    /// at most `limit`, newest first within each group.
    pub fn list(&self, all: bool, limit: usize) -> Result<Vec<Job>, QueueError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |client| async move {
            let rows = client
                .query(
                    &format!(
                        "SELECT {JOB_COLUMNS} FROM weft_jobs
                         WHERE $1 OR status IN ('queued', 'running')
                         ORDER BY (status IN ('queued', 'running')) DESC, id DESC LIMIT $2"
                    ),
                    &[&all, &limit],
                )
                .await?;
            Ok(rows.iter().map(job_row).collect())
        })
    }

    /// The fleet's workers, as their heartbeat rows show them (oldest first): the live ones,
    /// and those gone for less than a minute (killed or cut off; a clean stop removes its row).
    pub fn workers(&self) -> Result<Vec<WorkerSeen>, QueueError> {
        let gone_after = crate::fleet::PRESENCE_TIMEOUT.as_millis();
        self.run(move |client| async move {
            let rows = client
                .query(
                    "SELECT id, host, pid, (extract(epoch FROM started) * 1000)::BIGINT,
                            (extract(epoch FROM clock_timestamp() - beat) * 1000)::BIGINT
                     FROM weft_workers
                     WHERE beat > clock_timestamp() - interval '1 minute'
                     ORDER BY started, id",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| {
                    let silent_ms = unms(r.get(4));
                    WorkerSeen {
                        id: r.get(0),
                        host: r.get(1),
                        pid: r.get(2),
                        started_ms: unms(r.get(3)),
                        silent_ms,
                        alive: u128::from(silent_ms) <= gone_after,
                    }
                })
                .collect())
        })
    }

    /// How many jobs are in each status.
    pub fn counts(&self) -> Result<Vec<(JobStatus, u64)>, QueueError> {
        self.run(move |client| async move {
            let rows = client
                .query(
                    "SELECT status, count(*) FROM weft_jobs GROUP BY status ORDER BY status",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| (JobStatus::parse(r.get(0)), unms(r.get(1))))
                .collect())
        })
    }
}

/// Puts running job `id` back in the queue, due `due`, or merges it into the job of the same
/// flow and tenant already queued (which then becomes due at the earlier time, and runs every
/// stream unless both were for the same one). `uncount`
/// gives back the attempt its lease counted.
#[allow(clippy::too_many_arguments)]
async fn requeue(
    tx: &tokio_postgres::Transaction<'_>,
    id: i64,
    flow: &str,
    tenant: &str,
    due: i64,
    now: i64,
    error: Option<&str>,
    uncount: bool,
) -> Result<(), tokio_postgres::Error> {
    let other = tx
        .query_opt(
            "SELECT id FROM weft_jobs WHERE flow = $1 AND tenant = $2 AND status = 'queued' FOR UPDATE",
            &[&flow, &tenant],
        )
        .await?;
    let uncount = i32::from(uncount);
    match other {
        Some(row) => {
            let into: i64 = row.get(0);
            tx.execute(
                "UPDATE weft_jobs SET due_ms = LEAST(due_ms, $2), updated_ms = $3,
                     stream = CASE WHEN stream = (SELECT stream FROM weft_jobs WHERE id = $4) THEN stream ELSE '' END
                 WHERE id = $1",
                &[&into, &due, &now, &id],
            )
            .await?;
            tx.execute(
                "UPDATE weft_jobs SET status = 'merged', attempts = attempts - $5, lease_until_ms = NULL,
                     finished_ms = $3, updated_ms = $3,
                     last_error = coalesce($4, last_error, 'put back') || ' (merged into job ' || $2::BIGINT || ')'
                 WHERE id = $1",
                &[&id, &into, &now, &error, &uncount],
            )
            .await?;
        }
        None => {
            tx.execute(
                "UPDATE weft_jobs SET status = 'queued', attempts = attempts - $5, due_ms = $2,
                     lease_until_ms = NULL, updated_ms = $3, last_error = coalesce($4, last_error)
                 WHERE id = $1",
                &[&id, &due, &now, &error, &uncount],
            )
            .await?;
        }
    }
    Ok(())
}

/// Puts given-up job `id` in the state's error queue (one active entry per job): the last
/// failure, the attempts, the tenant, the job's last run, and `weft queue show ID`.
async fn into_error_queue(
    tx: &tokio_postgres::Transaction<'_>,
    id: i64,
    now: i64,
) -> Result<(), tokio_postgres::Error> {
    let row = tx
        .query_one(
            "SELECT flow, tenant, attempts, last_error, run_id, stream FROM weft_jobs WHERE id = $1",
            &[&id],
        )
        .await?;
    let (flow, tenant, attempts, last_error, run): (
        String,
        String,
        i32,
        Option<String>,
        Option<i64>,
    ) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    let stream: String = row.get(5);
    let mut whom = String::new();
    if !stream.is_empty() {
        whom.push_str(&format!(" (stream `{stream}` only)"));
    }
    if !tenant.is_empty() {
        whom.push_str(&format!(" for tenant {tenant}"));
    }
    let message = format!(
        "the run of flow `{flow}`{whom} was given up after {attempts} attempt{}: {}; the job's history: `weft queue show {id}`",
        if attempts == 1 { "" } else { "s" },
        last_error.as_deref().unwrap_or("no failure was recorded"),
    );
    tx.execute(
        "INSERT INTO errors (flow, kind, source_id, stage, message, status, attempts, first_seen_ms, last_seen_ms, run)
         VALUES ($1, $2, $3, 'run', $4, 'open', $5, $6, $6, $7)
         ON CONFLICT (flow, kind, source_id) WHERE status IN ('open', 'retry') DO UPDATE SET
           message = excluded.message, status = 'open', attempts = excluded.attempts,
           last_seen_ms = excluded.last_seen_ms, run = excluded.run",
        &[&flow, &GIVEN_UP_KIND, &id.to_string(), &message, &i64::from(attempts), &now, &run],
    )
    .await?;
    Ok(())
}
