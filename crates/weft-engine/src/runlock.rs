//! One run per flow at a time: an OS lock on `locks/flow-<name>.lock` beside the state database.
//!
//! The lock is the operating system's (`flock`), so it is released when its holder exits, even
//! when killed; the file says who holds it ("pid N since T") for the message a second run
//! prints. Two runs in one process conflict too (each opens the file itself).
//!
//! With the state on PostgreSQL the lock must hold for a fleet on several machines, so a run
//! also takes a session advisory lock on the flow's name ([`FlowLock::acquire_in`]), held by a
//! connection of its own for the whole run: the server releases it when that connection
//! closes, which happens when the run ends, when its process is killed (the socket closes with
//! it), or when its machine stops answering (TCP keepalives).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A held flow lock; dropping it releases the lock.
#[derive(Debug)]
pub struct FlowLock {
    file: File,
    path: PathBuf,
    /// The connection holding the fleet-wide advisory lock, on PostgreSQL.
    fleet: Option<FleetHold>,
}

/// The advisory lock class of flow locks.
const FLOW_LOCK: i32 = 0x7765_6603;

/// A pooled connection holding a session advisory lock; closed (never returned to the pool)
/// when dropped, which releases the lock.
struct FleetHold(Option<deadpool_postgres::Object>, crate::state::PgPool);

impl std::fmt::Debug for FleetHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FleetHold")
    }
}

impl Drop for FleetHold {
    fn drop(&mut self) {
        if let Some(object) = self.0.take() {
            // Unlocked before this returns (so the next run sees the flow free), then taken out
            // of the pool and dropped: the session ends, and any lock with it.
            let _ = self.1.block(async move {
                let _ = object
                    .batch_execute("SELECT pg_advisory_unlock_all()")
                    .await;
                drop(deadpool_postgres::Object::take(object));
                Ok(())
            });
        }
    }
}

/// Takes flow `flow`'s advisory lock in the database of `pool` without waiting: the holding
/// connection, or who holds it.
fn try_fleet_lock(
    pool: &crate::state::PgPool,
    flow: &str,
) -> Result<Result<FleetHold, String>, String> {
    let name = flow.to_owned();
    let got = pool.run(move |client| async move {
        let got: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, hashtext($2))",
                &[&FLOW_LOCK, &name],
            )
            .await?
            .get(0);
        Ok(got.then_some(client))
    })?;
    match got {
        Some(client) => Ok(Ok(FleetHold(Some(client), pool.clone()))),
        None => Ok(Err(fleet_holder(pool, flow)?.unwrap_or_else(|| {
            "held by a run elsewhere in the fleet".to_owned()
        }))),
    }
}

/// Who holds flow `flow`'s advisory lock in the database of `pool` (its server process,
/// client address and since when), or `None` when nobody does.
fn fleet_holder(pool: &crate::state::PgPool, flow: &str) -> Result<Option<String>, String> {
    let name = flow.to_owned();
    pool.run(move |client| async move {
        let rows = client
            .query(
                "SELECT a.pid, coalesce(host(a.client_addr), 'a local socket'),
                        to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
                 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                   AND l.classid = ($1::BIGINT & 4294967295)::OID
                   AND l.objid = (hashtext($2)::BIGINT & 4294967295)::OID",
                &[&i64::from(FLOW_LOCK), &name],
            )
            .await?;
        Ok(rows.first().map(|r| {
            let (pid, from, since): (i32, String, Option<String>) = (r.get(0), r.get(1), r.get(2));
            format!(
                "held by a run of the fleet (PostgreSQL server process {pid}, connected from {from} since {})",
                since.unwrap_or_default()
            )
        }))
    })
}

/// The lock file of flow `flow` for the state database at `state`.
pub fn path(state: &Path, flow: &str) -> PathBuf {
    state
        .parent()
        .unwrap_or(Path::new("."))
        .join("locks")
        .join(format!("flow-{flow}.lock"))
}

impl FlowLock {
    /// Takes the lock of `flow`; when another run holds it, waits up to `wait` (refuses at once
    /// when `None`). The error says who holds it.
    pub async fn acquire(state: &Path, flow: &str, wait: Option<Duration>) -> Result<Self, String> {
        let path = path(state, flow);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("cannot open the lock {}: {e}", path.display()))?;
        let started = std::time::Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    let waited = started.elapsed();
                    if wait.is_none_or(|w| waited >= w) {
                        let mut holder = String::new();
                        let _ = file.read_to_string(&mut holder);
                        let holder = holder.trim();
                        return Err(if holder.is_empty() {
                            format!("lock {} held", path.display())
                        } else {
                            format!("{holder}; lock {}", path.display())
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(TryLockError::Error(e)) => {
                    return Err(format!("cannot lock {}: {e}", path.display()));
                }
            }
        }
        let since = jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or_default();
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "held by process {} since {since}", std::process::id());
        let _ = file.flush();
        Ok(Self {
            file,
            path,
            fleet: None,
        })
    }

    /// Takes the lock of `flow` for the state `state`: the file lock beside it, and with the
    /// state on PostgreSQL the fleet-wide advisory lock too (waiting up to `wait` for both).
    pub async fn acquire_in(
        state: &crate::state::State,
        flow: &str,
        wait: Option<Duration>,
    ) -> Result<Self, String> {
        let started = std::time::Instant::now();
        let mut lock = Self::acquire(state.path(), flow, wait).await?;
        let Some(pool) = state.postgres() else {
            return Ok(lock);
        };
        loop {
            let pool_for = pool.clone();
            let name = flow.to_owned();
            let tried = tokio::task::spawn_blocking(move || try_fleet_lock(&pool_for, &name))
                .await
                .map_err(|e| format!("cannot take the fleet's lock of flow `{flow}`: {e}"))?
                .map_err(|e| {
                    format!(
                        "cannot take the fleet's lock of flow `{flow}` in {}: {e}",
                        pool.shown()
                    )
                })?;
            match tried {
                Ok(hold) => {
                    lock.fleet = Some(hold);
                    return Ok(lock);
                }
                Err(holder) if wait.is_none_or(|w| started.elapsed() >= w) => {
                    return Err(holder);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Who holds flow `flow`'s lock now ("held by process N since T"), or `None` when no run
/// holds it: a run with no end and no holder was interrupted.
pub fn holder(state: &Path, flow: &str) -> Option<String> {
    let mut file = OpenOptions::new().read(true).open(path(state, flow)).ok()?;
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            None
        }
        Err(_) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            Some(text.trim().to_owned())
                .filter(|t| !t.is_empty())
                .or(Some("held".to_owned()))
        }
    }
}

/// Who holds flow `flow`'s lock for the state `state`, in this machine's lock file or, with
/// the state on PostgreSQL, anywhere in the fleet; `None` when no run holds it.
pub fn holder_in(state: &crate::state::State, flow: &str) -> Option<String> {
    holder(state.path(), flow).or_else(|| {
        state
            .postgres()
            .and_then(|pool| fleet_holder(pool, flow).ok().flatten())
    })
}

impl Drop for FlowLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}
