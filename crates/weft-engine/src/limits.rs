//! Staying under a provider's limits before it has to say no: the connection's concurrency
//! level, the spec's budgets (calls per window, calls in flight) per tenant, connection or app,
//! corrected by the "remaining" headers the provider sends back.
//!
//! A rate budget keeps the times of its recent calls; a call waits until the oldest leaves the
//! window. A budget marked `checkpoint` (a daily cap) never waits: the call fails with
//! [`LimitError::Exhausted`] so the run can stop cleanly and resume later.
//!
//! A connection that lends its concurrency (`--borrow-concurrency-from`) shares one pool with its
//! borrowers ([`Limiter::shared`]): within a process one semaphore for all of them, and across
//! processes one lock file per slot in the pool's folder, of which every call holds one.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use weft_core::model::{BudgetScope, OnExhausted, SpecFile};

use crate::http::Wait;

/// Time for the limiter: the current instant, and waiting.
pub trait Clock: Wait {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Wait for SystemClock {
    fn wait(
        &self,
        duration: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep(duration))
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// A budget that will not free up within this run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// A `checkpoint` budget is spent.
    #[error(
        "the `{budget}` budget is spent until {free_at_ms} (Unix ms); stop here and resume then"
    )]
    Exhausted {
        /// The budget's name.
        budget: String,
        /// When its window frees a call.
        free_at_ms: u64,
    },
    /// The shared concurrency pool's folder cannot be used.
    #[error("the shared concurrency pool cannot be used: {reason}")]
    Pool {
        /// What went wrong.
        reason: String,
    },
}

#[derive(Debug)]
enum Kind {
    Rate {
        calls: usize,
        window_ms: u64,
        log: Mutex<HashMap<String, VecDeque<u64>>>,
    },
    Concurrent {
        calls: usize,
        gates: Mutex<HashMap<String, Arc<Semaphore>>>,
    },
}

#[derive(Debug)]
struct Budget {
    name: String,
    scope: BudgetScope,
    /// The operations (`resource.operation`) it counts; empty for every call.
    operations: Vec<String>,
    remaining_header: Option<String>,
    checkpoint: bool,
    kind: Kind,
}

/// The limits of one connection (or of several, when they borrow its concurrency).
#[derive(Debug, Clone)]
pub struct Limiter {
    level: u32,
    concurrency: Arc<Semaphore>,
    budgets: Arc<Vec<Budget>>,
    pool: Option<Arc<SharedPool>>,
}

/// Concurrency slots shared with other processes: one lock file per slot.
#[derive(Debug)]
struct SharedPool {
    dir: PathBuf,
    slots: usize,
    next: AtomicUsize,
}

impl SharedPool {
    /// Takes a free slot, waiting while other processes hold them all.
    async fn take(&self) -> Result<Option<crate::files::LockFile>, LimitError> {
        let mut pause = Duration::from_millis(2);
        loop {
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            for i in 0..self.slots {
                let path = self
                    .dir
                    .join(format!("slot-{}.lock", (start + i) % self.slots));
                match crate::files::LockFile::try_acquire(&path) {
                    Ok(Some(lock)) => return Ok(Some(lock)),
                    Ok(None) => {}
                    Err(e) => {
                        return Err(LimitError::Pool {
                            reason: e.to_string(),
                        });
                    }
                }
            }
            // Every slot is held by another process; one frees when its call ends (each call
            // has a time limit). Real time: the pool's holders live on the wall clock.
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

/// The in-process semaphore of each shared pool, by folder, so every connection of the pool
/// opened in this process draws from one.
fn pool_semaphore(dir: &Path, slots: usize) -> Arc<Semaphore> {
    static POOLS: OnceLock<Mutex<HashMap<PathBuf, Arc<Semaphore>>>> = OnceLock::new();
    lock(POOLS.get_or_init(Mutex::default))
        .entry(dir.to_path_buf())
        .or_insert_with(|| Arc::new(Semaphore::new(slots)))
        .clone()
}

/// Held while a call is in flight; dropping it frees the slots.
#[derive(Debug)]
pub struct Permit {
    _slots: Vec<OwnedSemaphorePermit>,
    _shared: Option<crate::files::LockFile>,
    /// The call's entries in the rate windows: (budget index, key, time recorded).
    stamps: Vec<(usize, String, u64)>,
    budgets: Arc<Vec<Budget>>,
}

impl Permit {
    /// The call was answered: its entries in the rate windows move from when it started to
    /// now. The provider counted it at some moment in between; counting from the later end
    /// means a window Weft sees as free is free at the provider too, whatever the latency.
    pub fn answered(self, clock: &dyn Clock) {
        let now = clock.now_ms();
        for (index, key, stamp) in &self.stamps {
            if let Some(Budget {
                kind: Kind::Rate { log, .. },
                ..
            }) = self.budgets.get(*index)
            {
                let mut log = lock(log);
                if let Some(times) = log.get_mut(key)
                    && let Some(at) = times.iter().position(|t| t == stamp)
                {
                    times[at] = now.max(*stamp);
                    times.make_contiguous().sort_unstable();
                }
            }
        }
    }
}

impl Limiter {
    /// The connection's concurrency level (calls in flight at once).
    pub fn concurrency(&self) -> u32 {
        self.level
    }

    /// The limits of `spec` with `concurrency` calls in flight for the connection; a budget
    /// sized by a form field takes that field's default.
    pub fn new(spec: &SpecFile, concurrency: u32) -> Self {
        let defaults = crate::request::RequestContext::with_field_defaults(spec).fields;
        Self::with_fields(spec, concurrency, &defaults)
    }

    /// The limits of `spec` with `concurrency` calls in flight, a budget with `calls-field`
    /// sized by that form field's value in `fields` (a positive whole number; otherwise its
    /// `calls`).
    pub fn with_fields(
        spec: &SpecFile,
        concurrency: u32,
        fields: &std::collections::BTreeMap<String, serde_json::Value>,
    ) -> Self {
        let budgets = spec
            .limits
            .budget
            .iter()
            .filter_map(|b| {
                let sized = b
                    .calls_field
                    .as_ref()
                    .and_then(|f| fields.get(f))
                    .and_then(serde_json::Value::as_u64)
                    .filter(|n| *n > 0)
                    .and_then(|n| u32::try_from(n).ok());
                let kind = match (sized.or(b.calls), b.window, b.concurrent) {
                    (Some(calls), Some(window), _) => Kind::Rate {
                        calls: calls as usize,
                        window_ms: window.as_millis(),
                        log: Mutex::default(),
                    },
                    (_, _, Some(calls)) => Kind::Concurrent {
                        calls: calls as usize,
                        gates: Mutex::default(),
                    },
                    _ => return None,
                };
                Some(Budget {
                    name: b.name.clone(),
                    scope: b.scope,
                    operations: b.operations.clone(),
                    remaining_header: b.remaining_header.as_ref().map(|h| h.to_ascii_lowercase()),
                    checkpoint: b.on_exhausted == OnExhausted::Checkpoint,
                    kind,
                })
            })
            .collect();
        Self {
            level: concurrency.max(1),
            concurrency: Arc::new(Semaphore::new(concurrency.max(1) as usize)),
            budgets: Arc::new(budgets),
            pool: None,
        }
    }

    /// The limits of `spec` drawing on the concurrency pool in `dir` (`concurrency` slots, the
    /// lender's level), shared by every limiter of that folder in this process and, through the
    /// slots' lock files, in every other process.
    pub fn shared(spec: &SpecFile, concurrency: u32, dir: &Path) -> Self {
        let slots = concurrency.max(1) as usize;
        Self {
            concurrency: pool_semaphore(dir, slots),
            pool: Some(Arc::new(SharedPool {
                dir: dir.to_path_buf(),
                slots,
                next: AtomicUsize::new(0),
            })),
            ..Self::new(spec, concurrency)
        }
    }

    /// Waits for room for one call for `tenant` and takes it (in the budgets that count every
    /// call).
    pub async fn acquire(
        &self,
        tenant: Option<&str>,
        clock: &dyn Clock,
    ) -> Result<Permit, LimitError> {
        self.acquire_for(tenant, None, clock).await
    }

    /// Waits for room for one call of `operation` (`resource.operation`) for `tenant` and takes
    /// it: in the budgets that count every call, and in those that list this operation.
    pub async fn acquire_for(
        &self,
        tenant: Option<&str>,
        operation: Option<&str>,
        clock: &dyn Clock,
    ) -> Result<Permit, LimitError> {
        let mut slots = Vec::new();
        let mut stamps = Vec::new();
        // Closed semaphores never happen here (nobody closes them); treat one as no limit.
        if let Ok(p) = self.concurrency.clone().acquire_owned().await {
            slots.push(p);
        }
        let shared = match &self.pool {
            Some(pool) => pool.take().await?,
            None => None,
        };
        for (index, budget) in self.budgets.iter().enumerate() {
            if !budget.operations.is_empty()
                && !operation.is_some_and(|op| budget.operations.iter().any(|o| o == op))
            {
                continue;
            }
            let key = scope_key(budget.scope, tenant);
            match &budget.kind {
                Kind::Concurrent { calls, gates } => {
                    let gate = lock(gates)
                        .entry(key)
                        .or_insert_with(|| Arc::new(Semaphore::new(*calls)))
                        .clone();
                    if let Ok(p) = gate.acquire_owned().await {
                        slots.push(p);
                    }
                }
                Kind::Rate {
                    calls,
                    window_ms,
                    log,
                } => loop {
                    let now = clock.now_ms();
                    let free_at = {
                        let mut log = lock(log);
                        let times = log.entry(key.clone()).or_default();
                        while times
                            .front()
                            .is_some_and(|t| now.saturating_sub(*t) >= *window_ms)
                        {
                            times.pop_front();
                        }
                        if times.len() < *calls {
                            times.push_back(now);
                            stamps.push((index, key.clone(), now));
                            None
                        } else {
                            Some(times.front().copied().unwrap_or(now) + window_ms)
                        }
                    };
                    match free_at {
                        None => break,
                        Some(free_at_ms) if budget.checkpoint => {
                            return Err(LimitError::Exhausted {
                                budget: budget.name.clone(),
                                free_at_ms,
                            });
                        }
                        Some(free_at_ms) => {
                            clock
                                .wait(Duration::from_millis(free_at_ms.saturating_sub(now).max(1)))
                                .await
                        }
                    }
                },
            }
        }
        Ok(Permit {
            _slots: slots,
            _shared: shared,
            stamps,
            budgets: self.budgets.clone(),
        })
    }

    /// Corrects the rate budgets with what the provider says is left: when a "remaining" header
    /// is lower than Weft's own count allows, calls are recorded until the two agree (another
    /// process, or another app on the same organisation, spent them).
    pub fn observe(&self, tenant: Option<&str>, headers: &[(String, String)], clock: &dyn Clock) {
        let now = clock.now_ms();
        for budget in self.budgets.iter() {
            let (
                Kind::Rate {
                    calls,
                    window_ms,
                    log,
                },
                Some(header),
            ) = (&budget.kind, &budget.remaining_header)
            else {
                continue;
            };
            let Some(remaining) = headers
                .iter()
                .find(|(n, _)| n == header)
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            else {
                continue;
            };
            let mut log = lock(log);
            let times = log.entry(scope_key(budget.scope, tenant)).or_default();
            while times
                .front()
                .is_some_and(|t| now.saturating_sub(*t) >= *window_ms)
            {
                times.pop_front();
            }
            let used_by_provider = calls.saturating_sub(remaining);
            while times.len() < used_by_provider {
                times.push_back(now);
            }
        }
    }
}

fn scope_key(scope: BudgetScope, tenant: Option<&str>) -> String {
    match scope {
        BudgetScope::Tenant => format!("tenant:{}", tenant.unwrap_or_default()),
        BudgetScope::Connection => "connection".to_owned(),
        BudgetScope::App => "app".to_owned(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
