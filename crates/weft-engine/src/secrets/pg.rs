//! The credential store's PostgreSQL backend: the same sealed records, one row each, in table
//! `weft_credentials` of the database holding the state, and the store's key check in
//! `weft_credential_check`. Values are sealed before they leave the process, so the database
//! sees only ciphertext and key ids, never a secret or a master key.
//!
//! The store's lock, and a connection's token-refresh lock, are session advisory locks
//! ([`AdvisoryHold`]) on a pooled connection kept for as long as the lock is held: the server
//! frees them when that connection ends, which happens when its process is killed too.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use deadpool_postgres::Object;

use crate::state::PgPool;

/// The advisory lock class of a credential store's writes.
pub(crate) const STORE_LOCK: i32 = 0x7765_6610;
/// The advisory lock class of a connection's token refresh.
pub(crate) const REFRESH_LOCK: i32 = 0x7765_6611;
/// The key (under [`STORE_LOCK`]) of the one store a database holds.
pub(crate) const STORE_KEY: &str = "credentials";

const TABLES: &str = "
CREATE TABLE IF NOT EXISTS weft_credentials (
    id TEXT PRIMARY KEY,
    sealed TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS weft_credential_check (
    one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    sealed TEXT NOT NULL
)";

/// Makes the credential tables when missing (once per database and process).
pub(crate) fn ensure_tables(pool: &PgPool) -> Result<(), String> {
    static DONE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    if crate::lock(&DONE).iter().any(|s| s == pool.shown()) {
        return Ok(());
    }
    crate::fleet::ensure_tables(pool, TABLES)?;
    crate::lock(&DONE).push(pool.shown().to_owned());
    Ok(())
}

/// The sealed records and the key check in the database; `None` when no store was written there.
#[allow(clippy::type_complexity)]
pub(crate) fn read(pool: &PgPool) -> Result<Option<(BTreeMap<String, String>, String)>, String> {
    pool.run(|client| async move {
        let check = client
            .query_opt("SELECT sealed FROM weft_credential_check", &[])
            .await?;
        let Some(check) = check else {
            return Ok(None);
        };
        let rows = client
            .query("SELECT id, sealed FROM weft_credentials ORDER BY id", &[])
            .await?;
        let records = rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect();
        Ok(Some((records, check.get(0))))
    })
}

/// The changes from `before` to `after` (sealed records) and the key check, in one transaction.
pub(crate) fn write(
    pool: &PgPool,
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
    check: &str,
) -> Result<(), String> {
    let gone: Vec<String> = before
        .keys()
        .filter(|id| !after.contains_key(*id))
        .cloned()
        .collect();
    let changed: Vec<(String, String)> = after
        .iter()
        .filter(|(id, sealed)| before.get(*id) != Some(sealed))
        .map(|(id, sealed)| (id.clone(), sealed.clone()))
        .collect();
    let check = check.to_owned();
    pool.run(move |mut client| async move {
        let tx = client.transaction().await?;
        put_rows(&tx, &gone, &changed, &check).await?;
        tx.commit().await
    })
}

async fn put_rows(
    tx: &deadpool_postgres::Transaction<'_>,
    gone: &[String],
    changed: &[(String, String)],
    check: &str,
) -> Result<(), tokio_postgres::Error> {
    for id in gone {
        tx.execute("DELETE FROM weft_credentials WHERE id = $1", &[id])
            .await?;
    }
    for (id, sealed) in changed {
        tx.execute(
            "INSERT INTO weft_credentials (id, sealed) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET sealed = EXCLUDED.sealed",
            &[id, sealed],
        )
        .await?;
    }
    tx.execute(
        "INSERT INTO weft_credential_check (one, sealed) VALUES (TRUE, $1)
         ON CONFLICT (one) DO UPDATE SET sealed = EXCLUDED.sealed",
        &[&check],
    )
    .await?;
    Ok(())
}

/// A transaction replacing every record and the check, begun and written but not committed:
/// `weft secrets rotate-key` commits it only once the new key is installed.
pub(crate) struct Pending {
    client: Option<Object>,
    pool: PgPool,
}

impl Pending {
    /// Begins the transaction and writes `records` (every one) and `check` in it.
    pub(crate) fn begin(
        pool: &PgPool,
        records: &BTreeMap<String, String>,
        check: &str,
    ) -> Result<Self, String> {
        let client = pool.run(|client| async move {
            client.batch_execute("BEGIN").await?;
            Ok(client)
        })?;
        let mut pending = Self {
            client: Some(client),
            pool: pool.clone(),
        };
        let rows: Vec<(String, String)> = records
            .iter()
            .map(|(id, sealed)| (id.clone(), sealed.clone()))
            .collect();
        let check = check.to_owned();
        pending.step(move |client| async move {
            client
                .execute(
                    "DELETE FROM weft_credentials WHERE NOT (id = ANY($1))",
                    &[&rows.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>()],
                )
                .await?;
            for (id, sealed) in &rows {
                client
                    .execute(
                        "INSERT INTO weft_credentials (id, sealed) VALUES ($1, $2)
                         ON CONFLICT (id) DO UPDATE SET sealed = EXCLUDED.sealed",
                        &[id, sealed],
                    )
                    .await?;
            }
            client
                .execute(
                    "INSERT INTO weft_credential_check (one, sealed) VALUES (TRUE, $1)
                     ON CONFLICT (one) DO UPDATE SET sealed = EXCLUDED.sealed",
                    &[&check],
                )
                .await?;
            Ok(client)
        })?;
        Ok(pending)
    }

    fn step<F, Fut>(&mut self, f: F) -> Result<(), String>
    where
        F: FnOnce(Object) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<Object, tokio_postgres::Error>> + Send + 'static,
    {
        let Some(client) = self.client.take() else {
            return Err("the transaction was already ended".to_owned());
        };
        let back = self.pool.block(async move {
            f(client)
                .await
                .map_err(|e| crate::state::PgFail::from_pg(&e))
        });
        match back {
            Ok(client) => {
                self.client = Some(client);
                Ok(())
            }
            // The connection went with the failed future: the server rolls the transaction
            // back when it closes.
            Err(e) => Err(e.text()),
        }
    }

    /// Commits the replacement.
    pub(crate) fn commit(mut self) -> Result<(), String> {
        self.step(|client| async move {
            client.batch_execute("COMMIT").await?;
            Ok(client)
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Not committed: the connection is closed rather than returned, which rolls back.
            let _ = self.pool.block(async move {
                drop(Object::take(client));
                Ok(())
            });
        }
    }
}

/// A session advisory lock, held by a pooled connection until dropped.
pub struct AdvisoryHold {
    client: Option<Box<Object>>,
    pool: PgPool,
    class: i32,
    key: String,
}

impl std::fmt::Debug for AdvisoryHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdvisoryHold")
            .field("class", &self.class)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Drop for AdvisoryHold {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let (class, key) = (self.class, self.key.clone());
            let _ = self.pool.block(async move {
                let unlocked = client
                    .query_one(
                        "SELECT pg_advisory_unlock($1, hashtext($2))",
                        &[&class, &key],
                    )
                    .await
                    .is_ok_and(|r| r.get::<_, bool>(0));
                if !unlocked {
                    // Closing the session is what surely frees the lock.
                    drop(Object::take(*client));
                }
                Ok(())
            });
        }
    }
}

/// How a lock attempt ended short of the lock.
pub(crate) enum NotHeld {
    /// Another session held it for the whole patience: who, as far as the server says.
    Busy(String),
    /// The database failed.
    Failed(String),
}

impl AdvisoryHold {
    /// One attempt, without waiting.
    fn attempt(pool: &PgPool, class: i32, key: &str) -> Result<Option<Self>, String> {
        let name = key.to_owned();
        let got = pool.run(move |client| async move {
            let got: bool = client
                .query_one(
                    "SELECT pg_try_advisory_lock($1, hashtext($2))",
                    &[&class, &name],
                )
                .await?
                .get(0);
            Ok(got.then_some(client))
        })?;
        Ok(got.map(|client| Self {
            client: Some(Box::new(client)),
            pool: pool.clone(),
            class,
            key: key.to_owned(),
        }))
    }

    /// Takes lock (`class`, `key`), waiting up to `patience` (for code that may block).
    pub(crate) fn acquire(
        pool: &PgPool,
        class: i32,
        key: &str,
        patience: Duration,
    ) -> Result<Self, NotHeld> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            if let Some(hold) = Self::attempt(pool, class, key).map_err(NotHeld::Failed)? {
                return Ok(hold);
            }
            if started.elapsed() >= patience {
                return Err(NotHeld::Busy(holder(pool, class, key, started.elapsed())));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// [`AdvisoryHold::acquire`] for async code: waits without blocking the runtime.
    pub(crate) async fn acquire_async(
        pool: &PgPool,
        class: i32,
        key: &str,
        patience: Duration,
    ) -> Result<Self, NotHeld> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            let (p, k) = (pool.clone(), key.to_owned());
            let tried = tokio::task::spawn_blocking(move || Self::attempt(&p, class, &k))
                .await
                .map_err(|e| NotHeld::Failed(e.to_string()))?
                .map_err(NotHeld::Failed)?;
            if let Some(hold) = tried {
                return Ok(hold);
            }
            if started.elapsed() >= patience {
                return Err(NotHeld::Busy(holder(pool, class, key, started.elapsed())));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}

/// Who holds lock (`class`, `key`): its server process, where it connected from and since when.
fn holder(pool: &PgPool, class: i32, key: &str, waited: Duration) -> String {
    let name = key.to_owned();
    let found = pool.run(move |client| async move {
        let rows = client
            .query(
                "SELECT a.pid, coalesce(host(a.client_addr), 'a local socket'),
                        to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                        coalesce(a.application_name, '')
                 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                   AND l.classid = ($1::BIGINT & 4294967295)::OID
                   AND l.objid = (hashtext($2)::BIGINT & 4294967295)::OID",
                &[&i64::from(class), &name],
            )
            .await?;
        Ok(rows.first().map(|r| {
            let (pid, from, since): (i32, String, Option<String>) = (r.get(0), r.get(1), r.get(2));
            format!(
                "PostgreSQL server process {pid}, connected from {from} since {}",
                since.unwrap_or_default()
            )
        }))
    });
    let who = match found {
        Ok(Some(who)) => format!("held by {who}"),
        Ok(None) => "held by another session (it let go just now)".to_owned(),
        Err(e) => format!("held by another session (who, the server did not say: {e})"),
    };
    format!(
        "the lock in {} {who}; waited {}s",
        pool.shown(),
        waited.as_secs()
    )
}
