//! `weft worker`: takes flow runs from the work queue in the PostgreSQL state and runs them,
//! several at once with `--concurrency`; and `weft queue add|list|show|cancel`.
//!
//! A worker holds each job by a lease it renews every third of the lease; a job whose lease it
//! lost (cancelled, or taken by another worker after the lease expired) has its run stopped.
//! On Ctrl-C or SIGTERM it stops taking jobs, stops its runs and puts their jobs back for other
//! workers at once (their pending writes are settled by the next run, by natural key).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use clap::{Args, Subcommand};
use weft_engine::queue::{AfterFailure, Cancelled, Job, Queue, QueueRules};
use weft_engine::state::RunOutcome;

use crate::Io;
use crate::cmd_sync::{RunOptions, Stopped, run_flow_until, workspace};

/// `weft worker` options.
#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// How many runs this worker makes at once (different flows).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    concurrency: u32,
    /// How often to look for due jobs when the queue has none, in seconds.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=300))]
    poll: u64,
    /// How long a job's lease lasts without this worker renewing it, in seconds: how soon
    /// another worker takes the jobs of a worker that died.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(3..=3600))]
    lease: u64,
    /// Attempts a job is given before it goes to the error queue (for jobs this worker's
    /// process enqueues; `weft queue add` takes its own).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    max_attempts: u32,
    /// The wait before retrying a job whose run failed, in seconds; doubled at each further
    /// attempt, at most an hour.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    backoff: u64,
    /// How often the fleet looks for flows their `schedule` makes due and queues them, in
    /// seconds: one worker of the fleet at a time, whichever's turn it is.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    schedule_every: u64,
    /// Never queue scheduled flows from this worker (another worker, or `weft serve`, does).
    #[arg(long)]
    no_schedule: bool,
}

/// `weft queue …`.
#[derive(Debug, Subcommand)]
pub(crate) enum QueueCmd {
    /// Enqueue a run of FLOW (merged into its job when one is already queued).
    Add {
        /// The flow.
        flow: String,
        /// For this tenant (organisation id), as a webhook would ask: one the flow addresses.
        #[arg(long)]
        tenant: Option<String>,
        /// Only this stream of the flow, as a webhook would ask.
        #[arg(long)]
        stream: Option<String>,
        /// Attempts before the job goes to the error queue.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
        max_attempts: u32,
    },
    /// The jobs queued and running (with --all, the ended ones too).
    List {
        /// Also the ended jobs (done, failed, cancelled, merged).
        #[arg(long)]
        all: bool,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// The fleet's workers: the live ones and those silent for less than a minute.
    Workers,
    /// One job: its flow, status, attempts, lease, last error and run.
    Show {
        /// The job's id (see `weft queue list`).
        id: i64,
    },
    /// Cancel a job: a queued one never runs; a running one is stopped by its worker.
    Cancel {
        /// The job's id (see `weft queue list`).
        id: i64,
    },
}

fn now_ms() -> u64 {
    weft_engine::state::now_ms()
}

fn open_queue(dir: Option<&Path>, rules: QueueRules) -> Result<Queue> {
    let ws = workspace(dir)?;
    let state = ws.open_state()?;
    Ok(Queue::open(&state, rules)?)
}

/// A time (Unix ms) as RFC 3339 in UTC, to the second.
pub(crate) fn when(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|m| jiff::Timestamp::from_millisecond(m).ok())
        .map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn subject(job: &Job) -> String {
    let mut s = format!("flow `{}`", job.flow);
    if !job.stream.is_empty() {
        s.push_str(&format!(" (stream `{}` only)", job.stream));
    }
    if !job.tenant.is_empty() {
        s.push_str(&format!(" for tenant {}", job.tenant));
    }
    s
}

/// Whether the workspace at `dir` can run `flow` as a job for `tenant` and `stream` asks: the
/// flow loads, addresses that tenant and has that stream. The message says what is wrong.
fn runnable(dir: Option<&Path>, flow: &str, tenant: &str, stream: &str) -> Result<()> {
    let ws = workspace(dir)?;
    let path = weft_engine::flows::find(ws.dir(), flow).map_err(|e| anyhow!(e))?;
    let loaded = weft_engine::flow::Flow::load(&path).map_err(|e| anyhow!(e))?;
    if !stream.is_empty() {
        loaded.has_stream(stream).map_err(|e| anyhow!(e))?;
    }
    if !tenant.is_empty() {
        weft_engine::flows::addresses(&loaded, &ws.file.connections, tenant)
            .map_err(|e| anyhow!("{e}; `weft queue add {flow}` queues the flow as it stands"))?;
    }
    Ok(())
}

/// `weft queue …`.
pub(crate) fn queue(cmd: QueueCmd, dir: Option<&Path>, io: &mut Io<'_>) -> Result<u8> {
    match cmd {
        QueueCmd::Add {
            flow,
            tenant,
            stream,
            max_attempts,
        } => {
            runnable(
                dir,
                &flow,
                tenant.as_deref().unwrap_or_default(),
                stream.as_deref().unwrap_or_default(),
            )?;
            let queue = open_queue(
                dir,
                QueueRules {
                    max_attempts,
                    ..QueueRules::default()
                },
            )?;
            let done = queue.enqueue(
                &flow,
                tenant.as_deref(),
                stream.as_deref(),
                "by hand",
                now_ms(),
            )?;
            let job = queue
                .job(done.id)?
                .context("the job just queued is gone (cancelled at once?)")?;
            if done.merged {
                writeln!(
                    io.out,
                    "{} is already queued as job {}; merged into it",
                    subject(&job),
                    done.id
                )?;
            } else {
                writeln!(
                    io.out,
                    "queued job {} ({}); `weft worker` runs it",
                    done.id,
                    subject(&job)
                )?;
            }
            Ok(0)
        }
        QueueCmd::List { all, limit } => {
            let queue = open_queue(dir, QueueRules::default())?;
            let jobs = queue.list(all, limit)?;
            if jobs.is_empty() {
                writeln!(
                    io.out,
                    "no jobs{}; `weft queue add FLOW` adds one",
                    if all { "" } else { " queued or running" }
                )?;
                return Ok(0);
            }
            let mut table = crate::table::Columns::new(&[
                "ID", "FLOW", "STREAM", "TENANT", "STATUS", "ATTEMPTS", "DUE", "WORKER",
            ]);
            for j in &jobs {
                table.row([
                    j.id.to_string(),
                    j.flow.clone(),
                    if j.stream.is_empty() {
                        "all".to_owned()
                    } else {
                        j.stream.clone()
                    },
                    j.tenant.clone(),
                    j.status.as_str().to_owned(),
                    format!("{}/{}", j.attempts, j.max_attempts),
                    when(j.due_ms),
                    j.worker.clone().unwrap_or_default(),
                ]);
            }
            table.write(&mut *io.out)?;
            Ok(0)
        }
        QueueCmd::Workers => {
            let queue = open_queue(dir, QueueRules::default())?;
            let workers = queue.workers()?;
            if workers.is_empty() {
                writeln!(
                    io.out,
                    "no workers; `weft worker` on a machine with this workspace starts one"
                )?;
                return Ok(0);
            }
            let mut table = crate::table::Columns::new(&[
                "WORKER",
                "HOST",
                "PID",
                "STARTED",
                "LAST SEEN",
                "STATE",
            ]);
            for w in &workers {
                table.row([
                    w.id.clone(),
                    w.host.clone(),
                    w.pid.to_string(),
                    when(w.started_ms),
                    format!("{} s ago", w.silent_ms / 1000),
                    if w.alive { "alive" } else { "gone" }.to_owned(),
                ]);
            }
            table.write(&mut *io.out)?;
            Ok(0)
        }
        QueueCmd::Show { id } => {
            let queue = open_queue(dir, QueueRules::default())?;
            let Some(j) = queue.job(id)? else {
                return Err(anyhow!("no job {id}; see `weft queue list --all`"));
            };
            writeln!(io.out, "job {}: {}", j.id, subject(&j))?;
            writeln!(io.out, "status:   {}", j.status.as_str())?;
            writeln!(io.out, "asked by: {}", j.reason)?;
            writeln!(io.out, "attempts: {} of {}", j.attempts, j.max_attempts)?;
            writeln!(io.out, "queued:   {}", when(j.created_ms))?;
            writeln!(io.out, "due:      {}", when(j.due_ms))?;
            if let Some(w) = &j.worker {
                writeln!(io.out, "worker:   {w}")?;
            }
            if let Some(l) = j.lease_until_ms {
                writeln!(io.out, "lease:    until {}", when(l))?;
            }
            if let Some(f) = j.finished_ms {
                writeln!(io.out, "ended:    {}", when(f))?;
            }
            if let Some(r) = j.run_id {
                writeln!(io.out, "run:      {r} (`weft runs show {r}`)")?;
            }
            if let Some(e) = &j.last_error {
                writeln!(io.out, "error:    {e}")?;
            }
            Ok(0)
        }
        QueueCmd::Cancel { id } => {
            let queue = open_queue(dir, QueueRules::default())?;
            match queue.cancel(id, now_ms())? {
                None => Err(anyhow!("no job {id}; see `weft queue list --all`")),
                Some(Cancelled::Queued) => {
                    writeln!(io.out, "cancelled job {id}; it will not run")?;
                    Ok(0)
                }
                Some(Cancelled::Running) => {
                    writeln!(
                        io.out,
                        "cancelled job {id}; its worker stops the run at its next heartbeat"
                    )?;
                    Ok(0)
                }
                Some(Cancelled::AlreadyEnded(status)) => {
                    writeln!(
                        io.err,
                        "job {id} had already ended ({}); nothing to cancel",
                        status.as_str()
                    )?;
                    Ok(1)
                }
            }
        }
    }
}

/// How a job's run ended.
#[derive(Clone)]
enum Ended {
    Done { run: i64, outcome: String },
    Failed { run: Option<i64>, error: String },
    Unrunnable(String),
    Busy(String),
    Stopped,
}

/// A job being run on a thread of its own.
struct Running {
    job: Job,
    stop: Arc<tokio::sync::Notify>,
    thread: std::thread::JoinHandle<Ended>,
    beat_at: std::time::Instant,
}

fn run_job(job: &Job, dir: Option<PathBuf>, stop: &tokio::sync::Notify) -> Ended {
    // The flow may have changed since the job was queued: a job it can no longer run as asked
    // is given up at once rather than run for another tenant or every stream.
    if let Err(e) = runnable(dir.as_deref(), &job.flow, &job.tenant, &job.stream) {
        return Ended::Unrunnable(format!("{e:#}"));
    }
    let report = run_flow_until(
        &job.flow,
        dir.as_deref(),
        RunOptions {
            stream: (!job.stream.is_empty()).then(|| job.stream.clone()),
            dry_run: false,
            wait: None,
            progress: None,
        },
        Some(stop),
    );
    match report {
        Ok(r) => match r.outcome {
            RunOutcome::Completed => Ended::Done {
                run: r.run,
                outcome: format!(
                    "completed: {} created, {} updated, {} queued as errors",
                    r.summary.created, r.summary.updated, r.summary.failed
                ),
            },
            RunOutcome::Stopped { reason } => Ended::Done {
                run: r.run,
                outcome: format!("stopped: {reason}"),
            },
            RunOutcome::Failed { reason } => Ended::Failed {
                run: Some(r.run),
                error: reason,
            },
        },
        Err(e) if e.downcast_ref::<Stopped>().is_some() => Ended::Stopped,
        Err(e)
            if e.downcast_ref::<weft_engine::run::RunError>()
                .is_some_and(|r| matches!(r, weft_engine::run::RunError::Busy { .. })) =>
        {
            Ended::Busy(e.to_string())
        }
        Err(e) => Ended::Failed {
            run: None,
            error: format!("{e:#}"),
        },
    }
}

/// The fleet's schedule, on a thread of its own so that a long turn (a worker's first reads
/// every flow file) never holds up the leases the main loop renews. Every `every_secs` it asks
/// for the fleet's turn; at each turn it wins, every flow its schedule makes due is queued once.
/// What it did goes to `said` as lines, stamped, for the main loop to print.
fn scheduler(
    queue: Queue,
    dir: PathBuf,
    state: weft_engine::state::State,
    every_secs: u64,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    said: std::sync::mpsc::Sender<String>,
) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("weft-schedule".into())
        .spawn(move || {
            let stopped = || stopping.load(std::sync::atomic::Ordering::SeqCst);
            let mut problems = std::collections::BTreeMap::new();
            while !stopped() {
                for line in schedule(&queue, &dir, &state, every_secs, &mut problems) {
                    if said.send(format!("{} {line}", when(now_ms()))).is_err() {
                        return;
                    }
                }
                let next = std::time::Instant::now() + Duration::from_secs(every_secs);
                while !stopped() && std::time::Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
        .context("cannot start the scheduling thread")
}

/// This worker's turn at the fleet's schedule, if it is its turn: every flow its schedule
/// makes due queued once; a flow whose schedule cannot be read said once (until it changes).
/// What it did, as lines to print.
fn schedule(
    queue: &Queue,
    dir: &Path,
    state: &weft_engine::state::State,
    every_secs: u64,
    problems: &mut std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    let now = now_ms();
    match queue.take_turn("schedule", every_secs * 1000, now) {
        Ok(true) => {}
        Ok(false) => return Vec::new(),
        Err(e) => return vec![format!("cannot look for scheduled flows: {e}")],
    }
    let found = match queue.enqueue_scheduled(dir, state, now) {
        Ok(found) => found,
        Err(e) => return vec![format!("cannot look for scheduled flows: {e}")],
    };
    let mut said = Vec::new();
    for (flow, done) in found {
        match done {
            Ok(job) if job.merged => {}
            Ok(job) => {
                problems.remove(&flow);
                said.push(format!(
                    "job {}: flow `{flow}` queued by its schedule",
                    job.id
                ));
            }
            Err(e) => {
                if problems.get(&flow) != Some(&e) {
                    said.push(format!(
                        "flow `{flow}` cannot be scheduled: {e}; `weft flow check {flow}` says more"
                    ));
                    problems.insert(flow, e);
                }
            }
        }
    }
    said
}

fn say(io: &mut Io<'_>, what: std::fmt::Arguments<'_>) -> Result<()> {
    writeln!(io.out, "{} {what}", when(now_ms()))?;
    io.out.flush()?;
    Ok(())
}

/// `weft worker`.
pub(crate) fn worker(args: WorkerArgs, dir: Option<&Path>, io: &mut Io<'_>) -> Result<u8> {
    let ws = workspace(dir)?;
    let state = ws.open_state()?;
    let rules = QueueRules {
        lease_ms: args.lease * 1000,
        max_attempts: args.max_attempts,
        backoff_ms: args.backoff * 1000,
        ..QueueRules::default()
    };
    let queue = Queue::open(&state, rules)?;
    let pool = state.postgres().context("the state is not on PostgreSQL")?;
    let presence = weft_engine::fleet::Presence::of(pool).map_err(|e| anyhow!(e))?;
    let me = presence.id().to_owned();
    let runtime = crate::connect::runtime()?;
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let wake = Arc::new(tokio::sync::Notify::new());
    {
        let (stopping, wake) = (stopping.clone(), wake.clone());
        crate::connect::on_stop(move || {
            stopping.store(true, std::sync::atomic::Ordering::SeqCst);
            wake.notify_one();
        })?;
    }
    say(
        io,
        format_args!(
            "worker {me} taking runs from the queue in {} ({} at once); Ctrl-C stops it",
            pool.shown(),
            args.concurrency
        ),
    )?;
    let mut running: Vec<Running> = Vec::new();
    let mut unsettled: Vec<(Job, Ended, bool)> = Vec::new();
    let mut unreachable: Option<std::time::Instant> = None;
    let beat_every = Duration::from_millis(rules.lease_ms / 3);
    let workspace_dir = dir.map(Path::to_path_buf);
    // Scheduled flows made due, queued by whichever worker's turn it is.
    let (said, schedule_said) = std::sync::mpsc::channel::<String>();
    let scheduling = if args.no_schedule {
        None
    } else {
        Some(scheduler(
            queue.clone(),
            ws.dir().to_path_buf(),
            ws.open_state()?,
            args.schedule_every,
            stopping.clone(),
            said,
        )?)
    };
    let print = |io: &mut Io<'_>| -> Result<()> {
        for line in schedule_said.try_iter() {
            writeln!(io.out, "{line}")?;
            io.out.flush()?;
        }
        Ok(())
    };
    loop {
        if stopping.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        print(io)?;
        // Runs that ended.
        let mut i = 0;
        while i < running.len() {
            if !running[i].thread.is_finished() {
                i += 1;
                continue;
            }
            let r = running.swap_remove(i);
            let ended = r.thread.join().unwrap_or_else(|_| Ended::Failed {
                run: None,
                error: "the run's thread panicked".into(),
            });
            unsettled.push((r.job, ended, false));
        }
        // How they ended, recorded in the queue; while the database cannot be reached, kept and
        // tried again at each turn of the loop (the worker carries on meanwhile).
        let mut kept = Vec::new();
        for (job, ended, told) in unsettled.drain(..) {
            match settle(&queue, &me, &job, ended.clone(), io) {
                Ok(()) => {}
                Err(e) if e.downcast_ref::<weft_engine::queue::QueueError>().is_some() => {
                    if !told {
                        say(
                            io,
                            format_args!(
                                "job {}: cannot record how its run ended yet ({e}); trying again",
                                job.id
                            ),
                        )?;
                    }
                    kept.push((job, ended, true));
                }
                Err(e) => return Err(e),
            }
        }
        unsettled = kept;
        // Leases renewed; a lost one stops its run.
        for r in &mut running {
            if r.beat_at.elapsed() >= beat_every {
                r.beat_at = std::time::Instant::now();
                match queue.heartbeat(r.job.id, &me, now_ms()) {
                    Ok(true) => {}
                    Ok(false) => {
                        say(
                            io,
                            format_args!(
                                "job {}: lease lost (cancelled, or taken by another worker); stopping its run",
                                r.job.id
                            ),
                        )?;
                        r.stop.notify_one();
                    }
                    Err(e) => say(io, format_args!("job {}: heartbeat failed: {e}", r.job.id))?,
                }
            }
        }
        // New jobs, while there is room.
        let mut took = false;
        while running.len() < args.concurrency as usize {
            let taken = queue.take(&me, now_ms());
            // Said once when the queue cannot be reached, and once when it can again.
            match (&taken, &unreachable) {
                (Err(e), None) => {
                    say(
                        io,
                        format_args!("cannot take a job: {e}; trying again at each poll"),
                    )?;
                    unreachable = Some(std::time::Instant::now());
                }
                (Ok(_), Some(since)) => {
                    say(
                        io,
                        format_args!(
                            "the queue answers again (after {} s); taking jobs",
                            since.elapsed().as_secs()
                        ),
                    )?;
                    unreachable = None;
                }
                _ => {}
            }
            let job = match taken {
                Ok(Some(job)) => job,
                Ok(None) | Err(_) => break,
            };
            took = true;
            say(
                io,
                format_args!(
                    "job {}: {} — attempt {} of {}",
                    job.id,
                    subject(&job),
                    job.attempts,
                    job.max_attempts
                ),
            )?;
            let stop = Arc::new(tokio::sync::Notify::new());
            let (asked, dir, stop_for) = (job.clone(), workspace_dir.clone(), stop.clone());
            let thread = std::thread::Builder::new()
                .name(format!("weft-job-{}", job.id))
                .spawn(move || run_job(&asked, dir, &stop_for))
                .context("cannot start a run's thread")?;
            running.push(Running {
                job,
                stop,
                thread,
                beat_at: std::time::Instant::now(),
            });
        }
        if !took {
            let pause = if running.is_empty() {
                Duration::from_secs(args.poll)
            } else {
                Duration::from_millis(200).min(beat_every)
            };
            let wake = wake.clone();
            runtime.block_on(async move {
                let _ = tokio::time::timeout(pause, wake.notified()).await;
            });
        }
    }
    say(
        io,
        format_args!(
            "stopping: {} run(s) stopped, their jobs put back for other workers",
            running.len()
        ),
    )?;
    for r in &running {
        r.stop.notify_one();
    }
    for r in running {
        let _ = queue.postpone(r.job.id, &me, 0, now_ms());
        let _ = r.thread.join();
        say(io, format_args!("job {}: put back", r.job.id))?;
    }
    for (job, ended, _) in unsettled {
        if let Err(e) = settle(&queue, &me, &job, ended, io) {
            say(
                io,
                format_args!(
                    "job {}: how its run ended could not be recorded ({e}); when its lease ends another worker takes it",
                    job.id
                ),
            )?;
        }
    }
    if let Some(scheduling) = scheduling {
        let _ = scheduling.join();
    }
    print(io)?;
    drop(presence);
    say(io, format_args!("worker stopped"))?;
    Ok(0)
}

fn settle(queue: &Queue, me: &str, job: &Job, ended: Ended, io: &mut Io<'_>) -> Result<()> {
    let now = now_ms();
    match ended {
        Ended::Done { run, outcome } => {
            queue.finish(job.id, me, Some(run), now)?;
            say(io, format_args!("job {}: run {run} {outcome}", job.id))
        }
        Ended::Failed { run, error } => {
            if let Some(run_id) = run {
                let _ = queue.set_run(job.id, me, run_id);
            }
            match queue.fail(job.id, me, &error, now)? {
                AfterFailure::Retry { due_ms } => say(
                    io,
                    format_args!(
                        "job {}: failed ({error}); retried at {}",
                        job.id,
                        when(due_ms)
                    ),
                ),
                AfterFailure::GaveUp => say(
                    io,
                    format_args!(
                        "job {}: failed ({error}); given up after {} attempts into the error queue (`weft errors list`, `weft queue show {}`)",
                        job.id, job.attempts, job.id
                    ),
                ),
                AfterFailure::LeaseLost => say(
                    io,
                    format_args!(
                        "job {}: failed ({error}); its lease was already lost",
                        job.id
                    ),
                ),
            }
        }
        Ended::Unrunnable(error) => {
            let told = match queue.give_up(job.id, me, &error, now)? {
                AfterFailure::LeaseLost => "its lease was already lost",
                _ => "given up at once into the error queue (`weft errors list`)",
            };
            say(
                io,
                format_args!("job {}: cannot run as asked ({error}); {told}", job.id),
            )
        }
        Ended::Busy(holder) => {
            queue.postpone(job.id, me, 5_000, now)?;
            say(
                io,
                format_args!(
                    "job {}: its flow is running elsewhere ({holder}); put back",
                    job.id
                ),
            )
        }
        Ended::Stopped => say(io, format_args!("job {}: run stopped", job.id)),
    }
}
