//! What the workers of a fleet share through the PostgreSQL state: their presence (a heartbeat
//! row per process) and the providers' rate budgets ([`PgBudgets`], the [`BudgetStore`] every
//! connection of a process whose state is on PostgreSQL counts its calls in).
//!
//! Design, measured against the alternatives the issue names:
//! - A rate window is a table of call stamps per key (`weft_budget_calls`), read and changed
//!   only under a transaction-scoped advisory lock on the key (`pg_advisory_xact_lock`), so two
//!   workers never both take the last call; stamps that left the window are deleted as the key
//!   is used, so a key holds at most its budget's calls. One call costs one transaction of four
//!   short statements (lock, trim, count, insert) and one update when it is answered.
//! - A concurrent budget's slots are rows (`weft_budget_slots`) leased to a worker; a worker
//!   proves it is alive by its heartbeat row (`weft_workers`, beaten every
//!   [`HEARTBEAT`] by a thread of its own, on the database's clock so machines' clocks do not
//!   matter), and a slot whose holder has not beaten for [`PRESENCE_TIMEOUT`] is free again: a
//!   worker killed mid-call frees its slots within seconds.
//!
//! The tables are made on first use (under an advisory lock, beside the state's own tables),
//! in a database that already holds the state.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::limits::{BudgetStore, LimitError, Taken};
use crate::state::PgPool;

/// How often a process beats its heartbeat row.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// How long after its last beat a worker counts as gone (its slots free, its leases ignored).
pub const PRESENCE_TIMEOUT: Duration = Duration::from_secs(10);

/// The advisory lock class of the fleet's tables' creation.
const SCHEMA_LOCK: i32 = 0x7765_6601;
/// The advisory lock class of a budget key.
pub(crate) const BUDGET_LOCK: i32 = 0x7765_6602;

const TABLES: &str = "
CREATE TABLE IF NOT EXISTS weft_workers (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    started TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    beat TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS weft_budget_calls (
    stamp BIGSERIAL PRIMARY KEY,
    key TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS weft_budget_calls_by_key ON weft_budget_calls (key, at_ms);
CREATE TABLE IF NOT EXISTS weft_budget_slots (
    key TEXT NOT NULL,
    slot BIGINT NOT NULL,
    holder TEXT NOT NULL,
    PRIMARY KEY (key, slot)
)";

/// Makes the fleet's tables (and `extra`, more `CREATE … IF NOT EXISTS` statements) when
/// missing, in a database holding Weft's state.
pub(crate) fn ensure_tables(pool: &PgPool, extra: &'static str) -> Result<(), String> {
    pool.run(move |mut client| async move {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1, 0)", &[&SCHEMA_LOCK])
            .await?;
        tx.batch_execute(TABLES).await?;
        if !extra.is_empty() {
            tx.batch_execute(extra).await?;
        }
        tx.commit().await
    })
    .map_err(|e| format!("cannot make the fleet's tables in {}: {e}", pool.shown()))
}

/// This process as a worker of the fleet: an id, and the heartbeat that proves it alive.
/// Dropping the last handle stops the heartbeat and removes its row.
#[derive(Debug)]
pub struct Presence {
    id: String,
    pool: PgPool,
    stop: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

impl Presence {
    /// This process's presence in the database `pool` reaches (one per database and process,
    /// shared while anyone holds it): its row written now, then beaten every [`HEARTBEAT`].
    pub fn of(pool: &PgPool) -> Result<Arc<Self>, String> {
        static ALL: Mutex<Vec<(String, Weak<Presence>)>> = Mutex::new(Vec::new());
        let mut all = crate::lock(&ALL);
        all.retain(|(_, p)| p.strong_count() > 0);
        if let Some(p) = all
            .iter()
            .find(|(at, _)| at == pool.shown())
            .and_then(|(_, p)| p.upgrade())
        {
            return Ok(p);
        }
        ensure_tables(pool, "")?;
        let mut raw = [0u8; 12];
        getrandom::fill(&mut raw).map_err(|e| format!("cannot draw a worker id: {e}"))?;
        let host = hostname();
        let id = format!(
            "{host}/{}/{}",
            std::process::id(),
            raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let (row_id, row_host) = (id.clone(), host);
        pool.run(move |client| async move {
            client
                .execute(
                    "INSERT INTO weft_workers (id, host, pid) VALUES ($1, $2, $3)
                     ON CONFLICT (id) DO UPDATE SET beat = clock_timestamp()",
                    &[&row_id, &row_host, &i64::from(std::process::id())],
                )
                .await
        })
        .map_err(|e| format!("cannot record this worker in {}: {e}", pool.shown()))?;
        let presence = Arc::new(Self {
            id,
            pool: pool.clone(),
            stop: Arc::new((Mutex::new(false), std::sync::Condvar::new())),
        });
        let (weak, stop) = (Arc::downgrade(&presence), presence.stop.clone());
        std::thread::Builder::new()
            .name("weft-heartbeat".into())
            .spawn(move || beat(&weak, &stop))
            .map_err(|e| format!("cannot start the heartbeat: {e}"))?;
        all.push((pool.shown().to_owned(), Arc::downgrade(&presence)));
        Ok(presence)
    }

    /// The worker's id (`HOST/PID/RANDOM`).
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        let (stopped, wake) = &*self.stop;
        *crate::lock(stopped) = true;
        wake.notify_all();
        let id = self.id.clone();
        // Gone cleanly: its slots free at once rather than at the heartbeat's timeout.
        let _ = self.pool.run(move |client| async move {
            client
                .execute("DELETE FROM weft_budget_slots WHERE holder = $1", &[&id])
                .await?;
            client
                .execute("DELETE FROM weft_workers WHERE id = $1", &[&id])
                .await
        });
    }
}

/// The heartbeat thread: beats until the presence is dropped. A failed beat is tried again at
/// the next one (a worker that cannot reach the database for [`PRESENCE_TIMEOUT`] is counted
/// gone, which is what it is to the fleet).
fn beat(presence: &Weak<Presence>, stop: &(Mutex<bool>, std::sync::Condvar)) {
    loop {
        {
            let (stopped, wake) = stop;
            let guard = crate::lock(stopped);
            let (guard, _) = wake
                .wait_timeout_while(guard, HEARTBEAT, |s| !*s)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *guard {
                return;
            }
        }
        let Some(p) = presence.upgrade() else { return };
        let (id, pool) = (p.id.clone(), p.pool.clone());
        drop(p);
        // An upsert: a row removed while this worker was out of reach comes back.
        let _ = pool.run(move |client| async move {
            client
                .execute(
                    "INSERT INTO weft_workers (id, host, pid) VALUES ($1, $2, $3)
                     ON CONFLICT (id) DO UPDATE SET beat = clock_timestamp()",
                    &[&id, &hostname(), &i64::from(std::process::id())],
                )
                .await
        });
    }
}

/// This machine's name, as workers are listed.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Rate windows and concurrency slots in the PostgreSQL state, shared by every worker using
/// that database (see the module's documentation for the design).
#[derive(Debug, Clone)]
pub struct PgBudgets {
    presence: Arc<Presence>,
}

impl PgBudgets {
    /// The budgets in the database `pool` reaches (which holds Weft's state), counted for this
    /// process as a worker of the fleet.
    pub fn new(pool: &PgPool) -> Result<Self, String> {
        Ok(Self {
            presence: Presence::of(pool)?,
        })
    }

    /// This process's presence (its worker id).
    pub fn presence(&self) -> &Arc<Presence> {
        &self.presence
    }

    fn pool(&self) -> &PgPool {
        &self.presence.pool
    }

    fn fail(&self, e: String) -> LimitError {
        LimitError::Store {
            reason: format!("{} ({})", e, self.pool().shown()),
        }
    }
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl BudgetStore for PgBudgets {
    fn take_call(
        &self,
        key: &str,
        calls: u32,
        window_ms: u64,
        now_ms: u64,
    ) -> Result<Taken, LimitError> {
        let key = key.to_owned();
        let (now, window) = (ms(now_ms), ms(window_ms));
        self.pool()
            .run(move |mut client| async move {
                let tx = client.transaction().await?;
                tx.execute(
                    "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                    &[&BUDGET_LOCK, &key],
                )
                .await?;
                tx.execute(
                    "DELETE FROM weft_budget_calls WHERE key = $1 AND at_ms <= $2",
                    &[&key, &now.saturating_sub(window)],
                )
                .await?;
                let row = tx
                    .query_one(
                        "SELECT count(*), min(at_ms) FROM weft_budget_calls WHERE key = $1",
                        &[&key],
                    )
                    .await?;
                let (held, oldest): (i64, Option<i64>) = (row.get(0), row.get(1));
                let taken = if held < i64::from(calls) {
                    let stamp: i64 = tx
                        .query_one(
                            "INSERT INTO weft_budget_calls (key, at_ms) VALUES ($1, $2) RETURNING stamp",
                            &[&key, &now],
                        )
                        .await?
                        .get(0);
                    Taken::Counted(stamp)
                } else {
                    let oldest = u64::try_from(oldest.unwrap_or(now)).unwrap_or(0);
                    Taken::FullUntil(oldest.saturating_add(window_ms))
                };
                tx.commit().await?;
                Ok(taken)
            })
            .map_err(|e| self.fail(e))
    }

    fn answered(&self, key: &str, stamp: i64, now_ms: u64) -> Result<(), LimitError> {
        let key = key.to_owned();
        let now = ms(now_ms);
        self.pool()
            .run(move |client| async move {
                client
                    .execute(
                        "UPDATE weft_budget_calls SET at_ms = GREATEST(at_ms, $3) WHERE key = $1 AND stamp = $2",
                        &[&key, &stamp, &now],
                    )
                    .await
            })
            .map(|_| ())
            .map_err(|e| self.fail(e))
    }

    fn observe(&self, key: &str, used: u32, window_ms: u64, now_ms: u64) -> Result<(), LimitError> {
        let key = key.to_owned();
        let (now, window) = (ms(now_ms), ms(window_ms));
        self.pool()
            .run(move |mut client| async move {
                let tx = client.transaction().await?;
                tx.execute(
                    "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                    &[&BUDGET_LOCK, &key],
                )
                .await?;
                tx.execute(
                    "DELETE FROM weft_budget_calls WHERE key = $1 AND at_ms <= $2",
                    &[&key, &now.saturating_sub(window)],
                )
                .await?;
                let held: i64 = tx
                    .query_one(
                        "SELECT count(*) FROM weft_budget_calls WHERE key = $1",
                        &[&key],
                    )
                    .await?
                    .get(0);
                let missing = i64::from(used) - held;
                if missing > 0 {
                    tx.execute(
                        "INSERT INTO weft_budget_calls (key, at_ms) SELECT $1, $2 FROM generate_series(1::BIGINT, $3::BIGINT)",
                        &[&key, &now, &missing],
                    )
                    .await?;
                }
                tx.commit().await
            })
            .map_err(|e| self.fail(e))
    }

    fn take_slot(&self, key: &str, slots: u32, _now_ms: u64) -> Result<Option<i64>, LimitError> {
        let key = key.to_owned();
        let holder = self.presence.id.clone();
        let gone = PRESENCE_TIMEOUT.as_secs_f64();
        self.pool()
            .run(move |mut client| async move {
                let tx = client.transaction().await?;
                tx.execute(
                    "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                    &[&BUDGET_LOCK, &key],
                )
                .await?;
                // Slots of workers whose heartbeat stopped are free again.
                tx.execute(
                    "DELETE FROM weft_budget_slots s WHERE s.key = $1 AND NOT EXISTS (
                         SELECT 1 FROM weft_workers w WHERE w.id = s.holder
                         AND w.beat > clock_timestamp() - make_interval(secs => $2))",
                    &[&key, &gone],
                )
                .await?;
                let held: Vec<i64> = tx
                    .query("SELECT slot FROM weft_budget_slots WHERE key = $1", &[&key])
                    .await?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let free = (0..i64::from(slots)).find(|s| !held.contains(s));
                if let Some(slot) = free {
                    tx.execute(
                        "INSERT INTO weft_budget_slots (key, slot, holder) VALUES ($1, $2, $3)",
                        &[&key, &slot, &holder],
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok(free)
            })
            .map_err(|e| self.fail(e))
    }

    fn release_slot(&self, key: &str, slot: i64) -> Result<(), LimitError> {
        let key = key.to_owned();
        let holder = self.presence.id.clone();
        self.pool()
            .run(move |client| async move {
                client
                    .execute(
                        "DELETE FROM weft_budget_slots WHERE key = $1 AND slot = $2 AND holder = $3",
                        &[&key, &slot, &holder],
                    )
                    .await
            })
            .map(|_| ())
            .map_err(|e| self.fail(e))
    }
}
