//! What the workers of a fleet share through the PostgreSQL state: their presence (a heartbeat
//! row per process) and the providers' rate budgets ([`PgBudgets`], the [`BudgetStore`] every
//! connection of a process whose state is on PostgreSQL counts its calls in).
//!
//! Design, measured against the alternatives the issue names (bench row B11):
//! - A rate window is a table of call stamps per key (`weft_budget_calls`), read and changed
//!   only under a transaction-scoped advisory lock on the key (`pg_advisory_xact_lock`), so two
//!   workers never both take the last call; stamps that left the window are deleted as the key
//!   is used, so a key holds at most its budget's calls.
//! - A concurrent budget's slots are rows (`weft_budget_slots`) leased to a worker; a worker
//!   proves it is alive by its heartbeat row (`weft_workers`, beaten every
//!   [`HEARTBEAT`] by a thread of its own, on the database's clock so machines' clocks do not
//!   matter), and a slot whose holder has not beaten for [`PRESENCE_TIMEOUT`] is free again: a
//!   worker killed mid-call frees its slots within seconds.
//! - Each operation is one PL/pgSQL function of the state's schema (`weft_take_call`,
//!   `weft_take_slot`, `weft_observe`, `weft_settle`; see `state.rs`, version 3) that takes the
//!   key's lock and does the trim, count and insert inside: called as one statement outside a
//!   transaction it is its own transaction and one round trip, through a statement prepared
//!   once per connection (`prepare_cached`). A call's end — its stamps moved to its answer, its
//!   slot given back, the provider's "remaining" counts applied — is one [`BudgetStore::settle`].
//!   For a Xero call (5 in flight, 60 a minute and 5,000 a day per organisation, 10,000 a
//!   minute for the app) that is 5 round trips and no `BEGIN`/`COMMIT`, where a transaction of
//!   separately prepared statements per operation took 48.
//!
//! The tables and functions are part of the state's versioned schema: the state's migration
//! makes them, so any database holding the state (opened by [`crate::state::State`]) has them.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::limits::{BudgetStore, LimitError, Seen, Taken};
use crate::state::PgPool;

/// How often a process beats its heartbeat row.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// How long after its last beat a worker counts as gone (its slots free, its leases ignored).
pub const PRESENCE_TIMEOUT: Duration = Duration::from_secs(10);

/// The advisory lock class under which tables made on first use are created.
const SCHEMA_LOCK: i32 = 0x7765_6601;
/// The advisory lock class of a budget key, which the schema's budget functions take (spelled
/// out there as 2003133954; a test holds the two together).
#[cfg(test)]
const BUDGET_LOCK: i32 = 0x7765_6602;

/// Makes tables kept outside the state's versioned schema (`extra`, `CREATE … IF NOT EXISTS`
/// statements; the credential store's, `secrets/pg.rs`) when missing, under an advisory lock,
/// in a database holding Weft's state.
pub(crate) fn ensure_tables(pool: &PgPool, extra: &'static str) -> Result<(), String> {
    pool.run(move |mut client| async move {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1, 0)", &[&SCHEMA_LOCK])
            .await?;
        tx.batch_execute(extra).await?;
        tx.commit().await
    })
    .map_err(|e| format!("cannot make tables in {}: {e}", pool.shown()))
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

/// The budget functions' statements, prepared once per pooled connection.
const TAKE_CALL: &str = "SELECT taken, full_until FROM weft_take_call($1, $2, $3, $4)";
const OBSERVE: &str = "SELECT weft_observe($1, $2, $3, $4)";
const TAKE_SLOT: &str = "SELECT weft_take_slot($1, $2, $3, $4)";
const SETTLE: &str = "SELECT weft_settle($1, $2, $3, $4, $5, $6, $7, $8, $9)";
const RELEASE: &str = "DELETE FROM weft_budget_slots WHERE key = $1 AND slot = $2 AND holder = $3";

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
        let row = self
            .pool()
            .run(move |client| async move {
                let stmt = client.prepare_cached(TAKE_CALL).await?;
                client
                    .query_one(&stmt, &[&key, &i64::from(calls), &window, &now])
                    .await
            })
            .map_err(|e| self.fail(e))?;
        let (taken, full_until): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
        match (taken, full_until) {
            (Some(stamp), _) => Ok(Taken::Counted(stamp)),
            (None, Some(until)) => Ok(Taken::FullUntil(u64::try_from(until).unwrap_or(0))),
            (None, None) => Err(self.fail(
                "weft_take_call answered neither a stamp nor a time: the function was changed outside Weft; restore the database's Weft schema (version 3) from a backup".into(),
            )),
        }
    }

    fn answered(&self, key: &str, stamp: i64, now_ms: u64) -> Result<(), LimitError> {
        self.settle(&[(key.to_owned(), stamp)], &[], &[], now_ms)
    }

    fn observe(&self, key: &str, used: u32, window_ms: u64, now_ms: u64) -> Result<(), LimitError> {
        let key = key.to_owned();
        let (now, window) = (ms(now_ms), ms(window_ms));
        self.pool()
            .run(move |client| async move {
                let stmt = client.prepare_cached(OBSERVE).await?;
                client
                    .execute(&stmt, &[&key, &i64::from(used), &window, &now])
                    .await
            })
            .map(|_| ())
            .map_err(|e| self.fail(e))
    }

    fn take_slot(&self, key: &str, slots: u32, _now_ms: u64) -> Result<Option<i64>, LimitError> {
        let key = key.to_owned();
        let holder = self.presence.id.clone();
        let gone = PRESENCE_TIMEOUT.as_secs_f64();
        self.pool()
            .run(move |client| async move {
                let stmt = client.prepare_cached(TAKE_SLOT).await?;
                let row = client
                    .query_one(&stmt, &[&key, &i64::from(slots), &holder, &gone])
                    .await?;
                Ok(row.get::<_, Option<i64>>(0))
            })
            .map_err(|e| self.fail(e))
    }

    fn release_slot(&self, key: &str, slot: i64) -> Result<(), LimitError> {
        let key = key.to_owned();
        let holder = self.presence.id.clone();
        self.pool()
            .run(move |client| async move {
                let stmt = client.prepare_cached(RELEASE).await?;
                client.execute(&stmt, &[&key, &slot, &holder]).await
            })
            .map(|_| ())
            .map_err(|e| self.fail(e))
    }

    /// One statement, one round trip: `weft_settle` does it all under the keys' locks.
    fn settle(
        &self,
        answered: &[(String, i64)],
        released: &[(String, i64)],
        seen: &[Seen],
        now_ms: u64,
    ) -> Result<(), LimitError> {
        if answered.is_empty() && released.is_empty() && seen.is_empty() {
            return Ok(());
        }
        let (keys, stamps): (Vec<String>, Vec<i64>) = answered.iter().cloned().unzip();
        let (slot_keys, slots): (Vec<String>, Vec<i64>) = released.iter().cloned().unzip();
        let seen_keys: Vec<String> = seen.iter().map(|s| s.key.clone()).collect();
        let used: Vec<i64> = seen.iter().map(|s| i64::from(s.used)).collect();
        let windows: Vec<i64> = seen.iter().map(|s| ms(s.window_ms)).collect();
        let holder = self.presence.id.clone();
        let now = ms(now_ms);
        self.pool()
            .run(move |client| async move {
                let stmt = client.prepare_cached(SETTLE).await?;
                client
                    .execute(
                        &stmt,
                        &[
                            &keys, &stamps, &slot_keys, &slots, &holder, &seen_keys, &used,
                            &windows, &now,
                        ],
                    )
                    .await
            })
            .map(|_| ())
            .map_err(|e| self.fail(e))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_budget_function_takes_the_budget_lock() {
        let script = crate::state::POSTGRES_MIGRATIONS[2];
        let lock = format!("pg_advisory_xact_lock({}, ", super::BUDGET_LOCK);
        let functions: Vec<&str> = script
            .split("CREATE OR REPLACE FUNCTION ")
            .skip(1)
            .collect();
        assert_eq!(functions.len(), 4, "take_call, observe, take_slot, settle");
        for body in functions {
            assert!(body.contains(&lock), "{body}");
        }
    }
}
