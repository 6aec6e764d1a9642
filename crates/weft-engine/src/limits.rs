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
//!
//! Where the rate windows are counted is a [`BudgetStore`]: this process's memory by default
//! ([`MemoryBudgets`]), or a store every worker of a fleet shares (the PostgreSQL state), so
//! that a provider's limits hold for all of them together ([`Limiter::in_fleet`]).

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
    /// The store shared by a fleet's workers cannot count a call.
    #[error("the fleet's shared budgets cannot be used: {reason}")]
    Store {
        /// What went wrong, naming the store (never a password).
        reason: String,
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
        calls: u32,
        window_ms: u64,
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
    store: Arc<dyn BudgetStore>,
    /// Put in front of every budget key: who shares the store's windows (empty in memory).
    namespace: String,
    /// Whether concurrent budgets are slots in the store (a fleet) rather than semaphores.
    fleet: bool,
}

/// A call counted in a rate window: the stamp to move when it is answered, or when the
/// window has room again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Counted; the stamp identifies the call's entry in its window.
    Counted(i64),
    /// The window is full until this instant (Unix ms).
    FullUntil(u64),
}

/// Where rate windows are counted. Keys are opaque; each holds the times of its recent calls.
/// Implementations must be atomic per key: two callers never both take the last call.
pub trait BudgetStore: Send + Sync + std::fmt::Debug {
    /// Counts a call at `now_ms` in the window `key` when fewer than `calls` were counted in
    /// the `window_ms` before it; otherwise says when the oldest leaves the window.
    fn take_call(
        &self,
        key: &str,
        calls: u32,
        window_ms: u64,
        now_ms: u64,
    ) -> Result<Taken, LimitError>;
    /// The call counted as `stamp` was answered at `now_ms`: its entry moves there.
    fn answered(&self, key: &str, stamp: i64, now_ms: u64) -> Result<(), LimitError>;
    /// The provider says `used` calls of a `window_ms` window were spent: entries are added at
    /// `now_ms` until the window holds that many.
    fn observe(&self, key: &str, used: u32, window_ms: u64, now_ms: u64) -> Result<(), LimitError>;
    /// Takes one of the `slots` slots of the concurrent budget `key` for this process, or `None`
    /// when all are held. A slot held by a process that stopped (killed) is free again once the
    /// store sees that process gone.
    fn take_slot(&self, key: &str, slots: u32, now_ms: u64) -> Result<Option<i64>, LimitError>;
    /// Gives back a slot [`BudgetStore::take_slot`] took.
    fn release_slot(&self, key: &str, slot: i64) -> Result<(), LimitError>;
    /// A call's end at `now_ms`, all at once: each entry of `answered` (key, stamp) moves to
    /// `now_ms` as [`BudgetStore::answered`] does, each slot of `released` (key, slot) is given
    /// back, then each count of `seen` is applied as [`BudgetStore::observe`] does. The default
    /// does them one by one (every one tried; the first failure is returned); a store across a
    /// network does them in one trip.
    fn settle(
        &self,
        answered: &[(String, i64)],
        released: &[(String, i64)],
        seen: &[Seen],
        now_ms: u64,
    ) -> Result<(), LimitError> {
        let mut first = Ok(());
        let mut keep = |done: Result<(), LimitError>| {
            if first.is_ok() {
                first = done;
            }
        };
        for (key, stamp) in answered {
            keep(self.answered(key, *stamp, now_ms));
        }
        for (key, slot) in released {
            keep(self.release_slot(key, *slot));
        }
        for s in seen {
            keep(self.observe(&s.key, s.used, s.window_ms, now_ms));
        }
        first
    }
}

/// What a provider says of one rate window: `used` calls of its `window_ms` are spent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The window's key.
    pub key: String,
    /// Calls spent, by the provider's count.
    pub used: u32,
    /// The window's length.
    pub window_ms: u64,
}

/// Rate windows in this process's memory: what one process alone needs.
#[derive(Debug, Default)]
pub struct MemoryBudgets {
    windows: Mutex<HashMap<String, VecDeque<(i64, u64)>>>,
    held: Mutex<HashMap<String, std::collections::BTreeSet<i64>>>,
    next: std::sync::atomic::AtomicI64,
}

impl MemoryBudgets {
    fn trimmed<'a>(
        windows: &'a mut HashMap<String, VecDeque<(i64, u64)>>,
        key: &str,
        window_ms: u64,
        now_ms: u64,
    ) -> &'a mut VecDeque<(i64, u64)> {
        let times = windows.entry(key.to_owned()).or_default();
        while times
            .front()
            .is_some_and(|(_, t)| now_ms.saturating_sub(*t) >= window_ms)
        {
            times.pop_front();
        }
        times
    }
}

impl BudgetStore for MemoryBudgets {
    fn take_call(
        &self,
        key: &str,
        calls: u32,
        window_ms: u64,
        now_ms: u64,
    ) -> Result<Taken, LimitError> {
        let mut windows = lock(&self.windows);
        let times = Self::trimmed(&mut windows, key, window_ms, now_ms);
        if times.len() < calls as usize {
            let stamp = self.next.fetch_add(1, Ordering::Relaxed);
            times.push_back((stamp, now_ms));
            Ok(Taken::Counted(stamp))
        } else {
            let oldest = times.front().map_or(now_ms, |(_, t)| *t);
            Ok(Taken::FullUntil(oldest + window_ms))
        }
    }

    fn answered(&self, key: &str, stamp: i64, now_ms: u64) -> Result<(), LimitError> {
        let mut windows = lock(&self.windows);
        if let Some(times) = windows.get_mut(key)
            && let Some(at) = times.iter().position(|(s, _)| *s == stamp)
        {
            times[at].1 = now_ms.max(times[at].1);
            times.make_contiguous().sort_unstable_by_key(|(_, t)| *t);
        }
        Ok(())
    }

    fn observe(&self, key: &str, used: u32, window_ms: u64, now_ms: u64) -> Result<(), LimitError> {
        let mut windows = lock(&self.windows);
        let times = Self::trimmed(&mut windows, key, window_ms, now_ms);
        while times.len() < used as usize {
            let stamp = self.next.fetch_add(1, Ordering::Relaxed);
            times.push_back((stamp, now_ms));
        }
        Ok(())
    }

    fn take_slot(&self, key: &str, slots: u32, _now_ms: u64) -> Result<Option<i64>, LimitError> {
        let mut held = lock(&self.held);
        let taken = held.entry(key.to_owned()).or_default();
        let free = (0..i64::from(slots)).find(|s| !taken.contains(s));
        if let Some(slot) = free {
            taken.insert(slot);
        }
        Ok(free)
    }

    fn release_slot(&self, key: &str, slot: i64) -> Result<(), LimitError> {
        if let Some(taken) = lock(&self.held).get_mut(key) {
            taken.remove(&slot);
        }
        Ok(())
    }
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
    /// The call's entries in the rate windows: (key, stamp).
    stamps: Vec<(String, i64)>,
    /// The fleet's concurrency slots it holds: (key, slot).
    leases: Vec<(String, i64)>,
    store: Arc<dyn BudgetStore>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        for (key, slot) in &self.leases {
            // A slot the store cannot free now is freed when it sees this process gone.
            let _ = self.store.release_slot(key, *slot);
        }
    }
}

impl Permit {
    /// The call was answered: its entries in the rate windows move from when it started to
    /// now, and its slots are given back. The provider counted it at some moment in between;
    /// counting from the later end means a window Weft sees as free is free at the provider
    /// too, whatever the latency.
    ///
    /// A store that cannot be reached leaves the entry where it was: the window then frees a
    /// little early, which the provider's "remaining" headers and its 429s still correct.
    pub fn answered(self, clock: &dyn Clock) {
        self.settle(&[], clock.now_ms());
    }

    /// The call's end in one [`BudgetStore::settle`]: stamps answered, slots given back, the
    /// provider's counts applied. Tried once, as the drop of a permit gives back its slots (a
    /// slot the store cannot free now is freed when it sees this process gone).
    fn settle(mut self, seen: &[Seen], now_ms: u64) {
        let leases = std::mem::take(&mut self.leases);
        let _ = self.store.settle(&self.stamps, &leases, seen, now_ms);
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
                        calls,
                        window_ms: window.as_millis(),
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
            store: Arc::new(MemoryBudgets::default()),
            namespace: String::new(),
            fleet: false,
        }
    }

    /// These limits counted in `store`, shared with every process that uses the same store and
    /// `namespace` — the workers of a fleet. `namespace` names who shares the provider's limits
    /// (the connector and the OAuth app): an app budget is then one for every connection of that
    /// app, a tenant budget one per organisation for all of them.
    pub fn in_fleet(self, store: Arc<dyn BudgetStore>, namespace: &str) -> Self {
        Self {
            store,
            namespace: format!("{namespace}/"),
            fleet: true,
            ..self
        }
    }

    /// The limits of `spec` drawing on the concurrency pool in `dir` (`concurrency` slots, the
    /// lender's level), shared by every limiter of that folder in this process and, through the
    /// slots' lock files, in every other process; budgets sized by a form field take its value
    /// in `fields` (as [`Limiter::with_fields`]).
    pub fn shared(
        spec: &SpecFile,
        concurrency: u32,
        dir: &Path,
        fields: &std::collections::BTreeMap<String, serde_json::Value>,
    ) -> Self {
        let slots = concurrency.max(1) as usize;
        Self {
            concurrency: pool_semaphore(dir, slots),
            pool: Some(Arc::new(SharedPool {
                dir: dir.to_path_buf(),
                slots,
                next: AtomicUsize::new(0),
            })),
            ..Self::with_fields(spec, concurrency, fields)
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
        // Built first so that whatever it holds is given back when a budget refuses midway.
        let mut permit = Permit {
            _slots: Vec::new(),
            _shared: None,
            stamps: Vec::new(),
            leases: Vec::new(),
            store: self.store.clone(),
        };
        // Closed semaphores never happen here (nobody closes them); treat one as no limit.
        if let Ok(p) = self.concurrency.clone().acquire_owned().await {
            permit._slots.push(p);
        }
        if let Some(pool) = &self.pool {
            permit._shared = pool.take().await?;
        }
        for budget in self.budgets.iter() {
            if !budget.operations.is_empty()
                && !operation.is_some_and(|op| budget.operations.iter().any(|o| o == op))
            {
                continue;
            }
            let key = scope_key(budget.scope, tenant);
            match &budget.kind {
                Kind::Concurrent { calls, .. } if self.fleet => {
                    let key = format!("{}{}:{key}", self.namespace, budget.name);
                    let mut pause = Duration::from_millis(2);
                    loop {
                        let slots = u32::try_from(*calls).unwrap_or(u32::MAX);
                        if let Some(slot) = self.store.take_slot(&key, slots, clock.now_ms())? {
                            permit.leases.push((key, slot));
                            break;
                        }
                        // Every slot is held by a call of this fleet; each call has a time limit.
                        // Yield too: a clock whose wait returns at once (simulated time) must
                        // still let this process's own holders finish their calls.
                        clock.wait(pause).await;
                        tokio::task::yield_now().await;
                        pause = (pause * 2).min(Duration::from_millis(50));
                    }
                }
                Kind::Concurrent { calls, gates } => {
                    let gate = lock(gates)
                        .entry(key)
                        .or_insert_with(|| Arc::new(Semaphore::new(*calls)))
                        .clone();
                    if let Ok(p) = gate.acquire_owned().await {
                        permit._slots.push(p);
                    }
                }
                Kind::Rate { calls, window_ms } => loop {
                    let key = format!("{}{}:{key}", self.namespace, budget.name);
                    let now = clock.now_ms();
                    match self.store.take_call(&key, *calls, *window_ms, now)? {
                        Taken::Counted(stamp) => {
                            permit.stamps.push((key, stamp));
                            break;
                        }
                        Taken::FullUntil(free_at_ms) if budget.checkpoint => {
                            return Err(LimitError::Exhausted {
                                budget: budget.name.clone(),
                                free_at_ms,
                            });
                        }
                        Taken::FullUntil(free_at_ms) => {
                            clock
                                .wait(Duration::from_millis(free_at_ms.saturating_sub(now).max(1)))
                                .await
                        }
                    }
                },
            }
        }
        Ok(permit)
    }

    /// Corrects the rate budgets with what the provider says is left: when a "remaining" header
    /// is lower than Weft's own count allows, calls are recorded until the two agree (another
    /// process, or another app on the same organisation, spent them).
    pub fn observe(&self, tenant: Option<&str>, headers: &[(String, String)], clock: &dyn Clock) {
        let seen = self.seen(tenant, headers);
        // Unreachable store: the next call's own count, and the provider's 429, still hold.
        let _ = self.store.settle(&[], &[], &seen, clock.now_ms());
    }

    /// A call of `permit` was answered with `headers` (none when it failed): [`Permit::answered`]
    /// and [`Limiter::observe`] at once, in one trip to a fleet's store.
    pub fn answered(
        &self,
        permit: Permit,
        tenant: Option<&str>,
        headers: &[(String, String)],
        clock: &dyn Clock,
    ) {
        let seen = self.seen(tenant, headers);
        permit.settle(&seen, clock.now_ms());
    }

    /// The rate windows the provider's "remaining" headers give a count for.
    fn seen(&self, tenant: Option<&str>, headers: &[(String, String)]) -> Vec<Seen> {
        let mut seen = Vec::new();
        for budget in self.budgets.iter() {
            let (Kind::Rate { calls, window_ms }, Some(header)) =
                (&budget.kind, &budget.remaining_header)
            else {
                continue;
            };
            let Some(remaining) = headers
                .iter()
                .find(|(n, _)| n == header)
                .and_then(|(_, v)| v.trim().parse::<u32>().ok())
            else {
                continue;
            };
            let key = format!(
                "{}{}:{}",
                self.namespace,
                budget.name,
                scope_key(budget.scope, tenant)
            );
            seen.push(Seen {
                key,
                used: calls.saturating_sub(remaining),
                window_ms: *window_ms,
            });
        }
        seen
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
