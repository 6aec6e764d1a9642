//! A workspace's memory between runs: by default one SQLite file (`.weft/state.db`); with
//! `[state] url = "postgres://…"` in `weft.toml` or `WEFT_STATE_URL`, a PostgreSQL database
//! that workers on several machines share.
//!
//! It holds, per flow:
//!
//! - **cursors** per stream (how far incremental reads got);
//! - the **id ledger** ([`Link`]): which destination record stands for which source record, the
//!   source version it reflects, and a pending write intent recorded *before* a request is
//!   sent, so a run that died mid-write reconciles instead of writing twice;
//! - the **run history** ([`RunRecord`]) with each run's counts;
//! - the per-record **error queue** ([`QueuedError`]): one active entry per record, which a
//!   person marks for retry or resolves.
//!
//! The database holds no secret: ids, versions, idempotency keys, cursors, counts and the
//! providers' error messages only. Credentials and tokens stay sealed in the credential store
//! ([`crate::secrets`]).
//!
//! Both backends run the same queries: each is written once, in the SQL both accept, against
//! the small layer in `state/sql.rs` (parameters, rows, transactions), which SQLite implements
//! on its connection and PostgreSQL on a pooled one (`state/pg.rs`). The schema is the same,
//! versioned the same way: SQLite's `PRAGMA user_version`, PostgreSQL's table `weft_schema`
//! (migrated under an advisory lock); a newer version is refused untouched on both, and so is a
//! database holding another application's tables.
//!
//! On SQLite several Weft processes may share the file: it is in WAL mode, every change is one
//! `BEGIN IMMEDIATE` transaction, and a busy database is waited for up to [`BUSY_TIMEOUT`].
//! Each transaction is synced to disk before the call returns (a few milliseconds);
//! [`State::begin_writes`] and [`State::finish_writes`] record a whole batch in one. A file
//! that is not a Weft state database (damaged, or another application's) is refused with an
//! error, never a panic. On PostgreSQL every call waits at most [`CALL_TIMEOUT`] for the
//! server, and messages name the server without its password. A [`State`] is `Send` and
//! `Sync`: threads and tasks may share one handle.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};
use serde::{Deserialize, Serialize};

mod copy;
mod pg;
mod sql;

pub use copy::{CopyReport, TableCopy};
pub(crate) use pg::PgFail;
pub use pg::{CALL_TIMEOUT, PgPool, PgTarget, TlsMode};
use sql::{Fail, Row, SqliteTx, Tx, Value, vals};

/// How long a call waits for another process holding the database before failing with
/// [`StateError::Busy`].
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The schema version this Weft writes (SQLite: `PRAGMA user_version`; PostgreSQL: table
/// `weft_schema`).
pub const SCHEMA_VERSION: i64 = 3;

// Every schema version has its migration.
const _: () = assert!(SQLITE_MIGRATIONS.len() as i64 == SCHEMA_VERSION);
const _: () = assert!(POSTGRES_MIGRATIONS.len() as i64 == SCHEMA_VERSION);

/// `PRAGMA application_id` of a Weft state database ("WEFT").
const APPLICATION_ID: i64 = 0x5745_4654;

/// `weft_schema.application` of a Weft state database on PostgreSQL.
const POSTGRES_APPLICATION: &str = "weft-state";

/// Whether `weft_schema` exists, read from the catalog with the statement's own snapshot: a
/// name lookup (`to_regclass`) may answer from the connection's catalog cache, which waiting
/// for an advisory lock does not refresh, and so miss a schema another process created while
/// this one waited for the migration lock (it then took the new tables for another
/// application's).
const SCHEMA_TABLE_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM information_schema.tables
    WHERE table_schema = current_schema() AND table_name = 'weft_schema')";

/// The advisory lock key that serialises migrations on PostgreSQL ("WEFTMIGR").
const MIGRATION_LOCK: i64 = 0x5745_4654_4d49_4752;

/// Each migration brings the SQLite schema from its index to the next version.
const SQLITE_MIGRATIONS: &[&str] = &[
    // 0 → 1
    "CREATE TABLE cursors (
        flow TEXT NOT NULL,
        stream TEXT NOT NULL,
        value TEXT NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (flow, stream)
    ) WITHOUT ROWID;
    CREATE TABLE links (
        flow TEXT NOT NULL,
        kind TEXT NOT NULL,
        source_id TEXT NOT NULL,
        dest_id TEXT,
        source_version TEXT NOT NULL DEFAULT '',
        dest_version TEXT,
        pending_key TEXT,
        pending_version TEXT,
        pending_since_ms INTEGER,
        note TEXT,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (flow, kind, source_id)
    ) WITHOUT ROWID;
    CREATE INDEX links_by_dest ON links (flow, kind, dest_id);
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        flow TEXT NOT NULL,
        dry_run INTEGER NOT NULL,
        started_ms INTEGER NOT NULL,
        finished_ms INTEGER,
        summary TEXT NOT NULL,
        outcome TEXT,
        reason TEXT
    );
    CREATE INDEX runs_by_flow ON runs (flow, id);
    CREATE TABLE errors (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        flow TEXT NOT NULL,
        kind TEXT NOT NULL,
        source_id TEXT NOT NULL,
        stage TEXT NOT NULL,
        message TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        first_seen_ms INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        run INTEGER,
        note TEXT,
        closed_ms INTEGER
    );
    CREATE UNIQUE INDEX errors_active ON errors (flow, kind, source_id)
        WHERE status IN ('open', 'retry');
    CREATE INDEX errors_by_flow ON errors (flow, status);",
    // 1 → 2: a run's errors (its page lists them) found without reading the whole queue.
    "CREATE INDEX errors_by_run ON errors (run, id);",
    // 2 → 3: nothing. Version 3 adds a fleet's tables, which only PostgreSQL holds (no fleet
    // shares an SQLite file); the number stays one for both backends.
    "",
];

/// The same schema on PostgreSQL, version by version: the same tables, columns, keys and
/// indexes, in PostgreSQL's types (BIGINT for SQLite's INTEGER, identity columns for
/// AUTOINCREMENT, BOOLEAN for a flag); from version 3 on, what only PostgreSQL holds (a
/// fleet's tables and functions). Each is one script of statements separated by `;`, sent as
/// one simple query inside the migration's transaction (function bodies hold `;` too).
pub(crate) const POSTGRES_MIGRATIONS: &[&str] = &[
    // 0 → 1
    "CREATE TABLE cursors (
        flow TEXT NOT NULL,
        stream TEXT NOT NULL,
        value TEXT NOT NULL,
        updated_ms BIGINT NOT NULL,
        PRIMARY KEY (flow, stream)
    );
    CREATE TABLE links (
        flow TEXT NOT NULL,
        kind TEXT NOT NULL,
        source_id TEXT NOT NULL,
        dest_id TEXT,
        source_version TEXT NOT NULL DEFAULT '',
        dest_version TEXT,
        pending_key TEXT,
        pending_version TEXT,
        pending_since_ms BIGINT,
        note TEXT,
        updated_ms BIGINT NOT NULL,
        PRIMARY KEY (flow, kind, source_id)
    );
    CREATE INDEX links_by_dest ON links (flow, kind, dest_id);
    CREATE TABLE runs (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        flow TEXT NOT NULL,
        dry_run BOOLEAN NOT NULL,
        started_ms BIGINT NOT NULL,
        finished_ms BIGINT,
        summary TEXT NOT NULL,
        outcome TEXT,
        reason TEXT
    );
    CREATE INDEX runs_by_flow ON runs (flow, id);
    CREATE TABLE errors (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        flow TEXT NOT NULL,
        kind TEXT NOT NULL,
        source_id TEXT NOT NULL,
        stage TEXT NOT NULL,
        message TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        first_seen_ms BIGINT NOT NULL,
        last_seen_ms BIGINT NOT NULL,
        run BIGINT,
        note TEXT,
        closed_ms BIGINT
    );
    CREATE UNIQUE INDEX errors_active ON errors (flow, kind, source_id)
        WHERE status IN ('open', 'retry');
    CREATE INDEX errors_by_flow ON errors (flow, status)",
    // 1 → 2
    "CREATE INDEX errors_by_run ON errors (run, id)",
    // 2 → 3: what a fleet's workers share (`fleet.rs`, `queue.rs`): their heartbeats, the
    // providers' rate windows and concurrency slots, the work queue, and the functions that
    // change a budget in one statement. Before version 3 these tables were made on first use,
    // so a database may hold them already: `IF NOT EXISTS` keeps them and their rows.
    //
    // Each budget function takes the key's transaction-scoped advisory lock (class
    // 0x7765_6602 = 2003133954, `fleet::BUDGET_LOCK`, the same key earlier versions took
    // around their statements) and does its reads and writes under it, so, called as one
    // statement outside a transaction, it is one round trip and its own transaction: two
    // workers never both take the last call of a window.
    "CREATE TABLE IF NOT EXISTS weft_workers (
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
    );
    CREATE TABLE IF NOT EXISTS weft_jobs (
        id BIGSERIAL PRIMARY KEY,
        flow TEXT NOT NULL,
        tenant TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL,
        reason TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        due_ms BIGINT NOT NULL,
        lease_until_ms BIGINT,
        worker TEXT,
        last_error TEXT,
        run_id BIGINT,
        created_ms BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL,
        finished_ms BIGINT,
        stream TEXT NOT NULL DEFAULT ''
    );
    -- A table made on first use (before version 3) has no stream: every job ran the whole flow.
    ALTER TABLE weft_jobs ADD COLUMN IF NOT EXISTS stream TEXT NOT NULL DEFAULT '';
    CREATE UNIQUE INDEX IF NOT EXISTS weft_jobs_queued_once ON weft_jobs (flow, tenant)
        WHERE status = 'queued';
    CREATE INDEX IF NOT EXISTS weft_jobs_due ON weft_jobs (status, due_ms, id);
    -- A flow's last scheduled job, looked up for every scheduled flow at a scheduling turn.
    CREATE INDEX IF NOT EXISTS weft_jobs_by_flow ON weft_jobs (flow, reason, created_ms);
    -- Work one worker of the fleet does for all at a time (looking for scheduled flows due):
    -- when it was last done.
    CREATE TABLE IF NOT EXISTS weft_turns (
        name TEXT PRIMARY KEY,
        at_ms BIGINT NOT NULL
    );

    -- Counts a call at p_now in window p_key when it holds fewer than p_calls: taken is its
    -- stamp; otherwise full_until is when the oldest call leaves the window.
    CREATE OR REPLACE FUNCTION weft_take_call(p_key TEXT, p_calls BIGINT, p_window BIGINT,
        p_now BIGINT, OUT taken BIGINT, OUT full_until BIGINT) LANGUAGE plpgsql AS $fn$
    DECLARE
        held BIGINT;
        oldest BIGINT;
    BEGIN
        PERFORM pg_advisory_xact_lock(2003133954, hashtext(p_key));
        DELETE FROM weft_budget_calls WHERE key = p_key AND at_ms <= p_now - p_window;
        SELECT count(*), min(at_ms) INTO held, oldest FROM weft_budget_calls WHERE key = p_key;
        IF held < p_calls THEN
            INSERT INTO weft_budget_calls (key, at_ms) VALUES (p_key, p_now)
                RETURNING stamp INTO taken;
        ELSE
            full_until := LEAST(COALESCE(oldest, p_now)::NUMERIC + p_window,
                9223372036854775807)::BIGINT;
        END IF;
    END
    $fn$;

    -- Tops window p_key up with calls at p_now until it holds p_used.
    CREATE OR REPLACE FUNCTION weft_observe(p_key TEXT, p_used BIGINT, p_window BIGINT,
        p_now BIGINT) RETURNS VOID LANGUAGE plpgsql AS $fn$
    DECLARE
        held BIGINT;
    BEGIN
        PERFORM pg_advisory_xact_lock(2003133954, hashtext(p_key));
        DELETE FROM weft_budget_calls WHERE key = p_key AND at_ms <= p_now - p_window;
        SELECT count(*) INTO held FROM weft_budget_calls WHERE key = p_key;
        IF held < p_used THEN
            INSERT INTO weft_budget_calls (key, at_ms)
                SELECT p_key, p_now FROM generate_series(1, p_used - held);
        END IF;
    END
    $fn$;

    -- Takes the lowest free of p_slots slots of p_key for p_holder (NULL when all are held),
    -- after freeing those of workers whose heartbeat is older than p_gone seconds.
    CREATE OR REPLACE FUNCTION weft_take_slot(p_key TEXT, p_slots BIGINT, p_holder TEXT,
        p_gone DOUBLE PRECISION) RETURNS BIGINT LANGUAGE plpgsql AS $fn$
    DECLARE
        free BIGINT;
    BEGIN
        PERFORM pg_advisory_xact_lock(2003133954, hashtext(p_key));
        DELETE FROM weft_budget_slots s WHERE s.key = p_key AND NOT EXISTS (
            SELECT 1 FROM weft_workers w WHERE w.id = s.holder
            AND w.beat > clock_timestamp() - make_interval(secs => p_gone));
        SELECT min(n) INTO free FROM generate_series(0::BIGINT, p_slots - 1) AS n
            WHERE NOT EXISTS (SELECT 1 FROM weft_budget_slots s WHERE s.key = p_key AND s.slot = n);
        IF free IS NOT NULL THEN
            INSERT INTO weft_budget_slots (key, slot, holder) VALUES (p_key, free, p_holder);
        END IF;
        RETURN free;
    END
    $fn$;

    -- A call's end: its stamps (p_keys, p_stamps) moved to p_now, its slots (p_slot_keys,
    -- p_slots) given back by p_holder, then the provider's counts (p_seen_keys, p_used,
    -- p_windows) applied as weft_observe does. The locks of every key it touches are taken
    -- first, in one order (the others take one lock each), so it never deadlocks with them.
    CREATE OR REPLACE FUNCTION weft_settle(p_keys TEXT[], p_stamps BIGINT[], p_slot_keys TEXT[],
        p_slots BIGINT[], p_holder TEXT, p_seen_keys TEXT[], p_used BIGINT[], p_windows BIGINT[],
        p_now BIGINT) RETURNS VOID LANGUAGE plpgsql AS $fn$
    DECLARE
        h INTEGER;
    BEGIN
        FOR h IN SELECT DISTINCT hashtext(k) FROM unnest(p_keys || p_slot_keys || p_seen_keys) AS k
            ORDER BY 1 LOOP
            PERFORM pg_advisory_xact_lock(2003133954, h);
        END LOOP;
        UPDATE weft_budget_calls c SET at_ms = GREATEST(c.at_ms, p_now)
            FROM unnest(p_keys, p_stamps) AS a (key, stamp)
            WHERE c.key = a.key AND c.stamp = a.stamp;
        DELETE FROM weft_budget_slots s USING unnest(p_slot_keys, p_slots) AS r (key, slot)
            WHERE s.key = r.key AND s.slot = r.slot AND s.holder = p_holder;
        FOR i IN 1 .. coalesce(array_length(p_seen_keys, 1), 0) LOOP
            PERFORM weft_observe(p_seen_keys[i], p_used[i], p_windows[i], p_now);
        END LOOP;
    END
    $fn$",
];

/// Errors of the state database, each naming the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file cannot be opened or created.
    #[error(
        "cannot open the state database {at}: {source}; check that the folder exists and that you may write to it"
    )]
    Open {
        /// The database: its file, or its server (without password).
        at: String,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The folder of the file cannot be created.
    #[error("cannot create the folder of the state database {at}: {source}")]
    Folder {
        /// The database: its file, or its server (without password).
        at: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not an SQLite database (damaged, or another kind of file).
    #[error(
        "{at} is not a Weft state database (it is damaged or is another kind of file); restore it from a backup, or move it aside to start a new one (Weft then no longer knows which records it already wrote, so check the destination for duplicates)"
    )]
    NotADatabase {
        /// The database: its file, or its server (without password).
        at: String,
    },
    /// An SQLite database of another application.
    #[error(
        "{at} is an SQLite database of another application, not Weft's state; move it elsewhere, Weft will then create its own"
    )]
    Foreign {
        /// The database: its file, or its server (without password).
        at: String,
    },
    /// Written by a newer Weft.
    #[error(
        "the state database {at} was written by a newer Weft (schema version {found}; this Weft knows up to {supported}); upgrade weft to use it (it was left unchanged)"
    )]
    Newer {
        /// The database: its file, or its server (without password).
        at: String,
        /// Its schema version.
        found: i64,
        /// The newest version this Weft knows.
        supported: i64,
    },
    /// Another process held the database for longer than [`BUSY_TIMEOUT`].
    #[error(
        "the state database {at} stayed locked by another Weft process for more than {}s while trying to {action}; wait for that process to finish (see `weft runs list`) and try again",
        BUSY_TIMEOUT.as_secs()
    )]
    Busy {
        /// The database: its file, or its server (without password).
        at: String,
        /// What was being done.
        action: &'static str,
    },
    /// A row that does not read back (the file was damaged or edited by hand).
    #[error(
        "the state database {at} holds a damaged {what}: {reason}; restore the file from a backup"
    )]
    Corrupt {
        /// The database: its file, or its server (without password).
        at: String,
        /// Which kind of row.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// `finish_run` or `save_progress` of a run that does not exist.
    #[error("the state database {at} has no run {id}; see `weft runs list`")]
    NoRun {
        /// The database: its file, or its server (without password).
        at: String,
        /// The run id.
        id: i64,
    },
    /// `finish_run` of a run that already finished.
    #[error("run {id} in {at} has already finished; a run is finished once")]
    RunFinished {
        /// The database: its file, or its server (without password).
        at: String,
        /// The run id.
        id: i64,
    },
    /// `set_note` on a record the ledger does not know.
    #[error(
        "the state database {at} has no link for {kind} `{source_id}` of flow `{flow}`; a note is kept on a known record only"
    )]
    NoLink {
        /// The database: its file, or its server (without password).
        at: String,
        /// The flow.
        flow: String,
        /// The record kind.
        kind: String,
        /// The source id.
        source_id: String,
    },
    /// The file (or its folder) may not be written.
    #[error(
        "the state database {at} is read-only; Weft writes to it on every run: check the permissions of the file and of its folder"
    )]
    ReadOnly {
        /// The database: its file, or its server (without password).
        at: String,
    },
    /// A `postgres://` state URL that cannot be used.
    #[error(
        "the PostgreSQL state URL cannot be used: {reason}; write it as postgres://USER@HOST:PORT/DATABASE (the password in WEFT_STATE_URL, not in weft.toml)"
    )]
    Url {
        /// What is wrong (never the URL itself: it may hold a password).
        reason: String,
    },
    /// The PostgreSQL server cannot be reached or refused the connection.
    #[error(
        "cannot connect to the PostgreSQL state database {at}: {reason}; check that the server runs and accepts connections from this machine, and the user, password and database in WEFT_STATE_URL or `[state] url`"
    )]
    Connect {
        /// The server (without password).
        at: String,
        /// Why.
        reason: String,
    },
    /// The PostgreSQL server refused a statement.
    #[error(
        "cannot {action} in the PostgreSQL state database {at}: {reason}; check the server (its log, free space, the user's rights) and try again"
    )]
    Server {
        /// The server (without password).
        at: String,
        /// What was being done.
        action: &'static str,
        /// The server's message.
        reason: String,
    },
    /// No answer from the PostgreSQL server in time.
    #[error(
        "the PostgreSQL state database {at} did not answer within {secs}s while trying to {action}; check the server and the network to it, then try again"
    )]
    Timeout {
        /// The server (without password).
        at: String,
        /// What was being done.
        action: &'static str,
        /// The time waited.
        secs: u64,
    },
    /// A PostgreSQL database holding another application's tables.
    #[error(
        "the PostgreSQL database {at} holds tables that are not Weft's state; give Weft a database of its own (for instance `createdb weft`) and point `[state] url` or WEFT_STATE_URL at it"
    )]
    ForeignDatabase {
        /// The server and database (without password).
        at: String,
    },
    /// A copy's target holding another workspace's state, or state not copied into it.
    #[error(
        "the state database {at} already holds state that was not copied from this workspace; copy into an empty database of its own (for instance `createdb weft`), or point `[state] url` at this one if it is this workspace's already"
    )]
    OtherWorkspace {
        /// The target (without password).
        at: String,
    },
    /// Any other SQLite failure (disk full, I/O error).
    #[error(
        "cannot {action} in the state database {at}: {source}; check the disk (free space, permissions) and try again"
    )]
    Sqlite {
        /// The database: its file, or its server (without password).
        at: String,
        /// What was being done.
        action: &'static str,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
}

/// One record in the cross-system id ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    /// Record kind (`invoice`, `contact`, `payment`, `reference`).
    pub kind: String,
    /// The source system's id.
    pub source_id: String,
    /// The destination system's id, once a write succeeded.
    pub dest_id: Option<String>,
    /// The source version the destination reflects (empty while nothing was written).
    pub source_version: String,
    /// The destination's version after the last write, when it reports one.
    pub dest_version: Option<String>,
    /// A write begun and not yet finished or abandoned: after a crash, reconcile first.
    pub pending: Option<PendingWrite>,
    /// Why the record is as it is (for instance why an update was not possible).
    pub note: Option<String>,
    /// When the link last changed (ms since the Unix epoch).
    pub updated_ms: u64,
}

/// A write whose request may have been sent, with no known answer yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingWrite {
    /// The idempotency key the request carries.
    pub idempotency_key: String,
    /// The source version being written.
    pub source_version: String,
    /// When the intent was first recorded (ms since the Unix epoch).
    pub since_ms: u64,
}

/// The counts of one run: totals over its streams, and each stream's own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunSummary {
    /// Source records read.
    pub read: u64,
    /// Destination records created.
    pub created: u64,
    /// Destination records updated.
    pub updated: u64,
    /// Records already up to date.
    pub unchanged: u64,
    /// Records not sent, by a skip rule or an update policy.
    pub skipped: u64,
    /// Records that failed (see the error queue).
    pub failed: u64,
    /// Records a lookup created (for instance a missing customer).
    pub lookups_created: u64,
    /// Write-backs made at the source.
    pub written_back: u64,
    /// API calls made.
    pub calls: u64,
    /// Answers that said "rate limited".
    pub rate_limited: u64,
    /// Time spent waiting on rate limits (ms).
    pub waited_ms: u64,
    /// Per stream.
    pub streams: BTreeMap<String, StreamCounts>,
}

/// The counts of one stream in a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamCounts {
    /// Source records read.
    pub read: u64,
    /// Destination records created.
    pub created: u64,
    /// Destination records updated.
    pub updated: u64,
    /// Records already up to date.
    pub unchanged: u64,
    /// Records not sent.
    pub skipped: u64,
    /// Records that failed.
    pub failed: u64,
    /// Records a lookup created.
    pub lookups_created: u64,
    /// Write-backs made.
    pub written_back: u64,
}

impl RunSummary {
    /// The counts of stream `name` (zero when it did nothing).
    pub fn stream(&self, name: &str) -> StreamCounts {
        self.streams.get(name).cloned().unwrap_or_default()
    }

    /// Adds `f` to stream `name`'s counts and to the totals.
    pub fn count(&mut self, name: &str, f: impl Fn(&mut StreamCounts)) {
        f(self.streams.entry(name.to_owned()).or_default());
        let mut totals = StreamCounts::default();
        for c in self.streams.values() {
            totals.read += c.read;
            totals.created += c.created;
            totals.updated += c.updated;
            totals.unchanged += c.unchanged;
            totals.skipped += c.skipped;
            totals.failed += c.failed;
            totals.lookups_created += c.lookups_created;
            totals.written_back += c.written_back;
        }
        self.read = totals.read;
        self.created = totals.created;
        self.updated = totals.updated;
        self.unchanged = totals.unchanged;
        self.skipped = totals.skipped;
        self.failed = totals.failed;
        self.lookups_created = totals.lookups_created;
        self.written_back = totals.written_back;
    }
}

/// One record of [`State::begin_writes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteIntent<'a> {
    /// The source system's id.
    pub source_id: &'a str,
    /// The source version being written.
    pub source_version: &'a str,
    /// The idempotency key the request carries.
    pub idempotency_key: &'a str,
}

/// One record of [`State::finish_writes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteDone<'a> {
    /// The source system's id.
    pub source_id: &'a str,
    /// The destination system's id.
    pub dest_id: &'a str,
    /// The source version the destination now reflects.
    pub source_version: &'a str,
    /// The destination's version, when it reports one.
    pub dest_version: Option<&'a str>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum RunOutcome {
    /// Every record was handled (some may be in the error queue).
    Completed,
    /// Stopped early and resumable, for instance by a provider's daily cap.
    Stopped {
        /// Why.
        reason: String,
    },
    /// Failed as a whole.
    Failed {
        /// Why.
        reason: String,
    },
}

/// One run of a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunRecord {
    /// Run id (increasing).
    pub id: i64,
    /// The flow.
    pub flow: String,
    /// Whether it changed nothing.
    pub dry_run: bool,
    /// Start (ms since the Unix epoch).
    pub started_ms: u64,
    /// End, once finished.
    pub finished_ms: Option<u64>,
    /// Its counts (as last saved, for a run still going or one that died).
    pub summary: RunSummary,
    /// None while running, or when the process died before finishing it.
    pub outcome: Option<RunOutcome>,
}

/// An entry of the per-record error queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueuedError {
    /// Entry id.
    pub id: i64,
    /// The flow.
    pub flow: String,
    /// Record kind.
    pub kind: String,
    /// The source record's id.
    pub source_id: String,
    /// Where it failed (`read`, `map`, `write`, …).
    pub stage: String,
    /// The latest message (the provider's, when it gave one).
    pub message: String,
    /// `open`, `retry` (the next run re-reads the record), `resolved` or `fixed` (closed).
    pub status: String,
    /// How many times the record failed while this entry was active.
    pub attempts: u32,
    /// First failure (ms since the Unix epoch).
    pub first_seen_ms: u64,
    /// Latest failure (ms since the Unix epoch).
    pub last_seen_ms: u64,
    /// The run of the latest failure.
    pub run: Option<i64>,
    /// A person's note (given when resolving).
    pub note: Option<String>,
    /// When it was resolved or fixed.
    pub closed_ms: Option<u64>,
}

impl QueuedError {
    /// Whether the entry is closed (`resolved` or `fixed`).
    pub fn is_closed(&self) -> bool {
        self.status == STATUS_RESOLVED || self.status == STATUS_FIXED
    }
}

/// Queue status: waiting for a person.
pub const STATUS_OPEN: &str = "open";
/// Queue status: the next run re-reads the record.
pub const STATUS_RETRY: &str = "retry";
/// Queue status: closed by a person.
pub const STATUS_RESOLVED: &str = "resolved";
/// Queue status: closed because the record later succeeded.
pub const STATUS_FIXED: &str = "fixed";

/// Where a page of a long list starts, by entry id (runs and queue entries alike): the first
/// page, the entries after an id (higher ids), or those before one (lower ids). Ids are stable,
/// so a page does not shift when entries are added meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PageAt {
    /// The first page in the list's own order (runs: the newest; the queue: the oldest).
    #[default]
    Start,
    /// Entries with a higher id than this one.
    After(i64),
    /// Entries with a lower id than this one.
    Before(i64),
}

/// One page of a long list, in the list's own order, and whether entries lie beyond it on
/// either side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The entries of the page.
    pub items: Vec<T>,
    /// Entries with lower ids than every one on the page exist.
    pub lower: bool,
    /// Entries with higher ids than every one on the page exist.
    pub higher: bool,
}

/// Which queue entries a listing or a count takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ErrorFilter<'a> {
    /// One flow's, or every flow's.
    pub flow: Option<&'a str>,
    /// Only those whose latest failure was in this run.
    pub run: Option<i64>,
    /// Closed entries too (`resolved`, `fixed`), not only active ones.
    pub include_closed: bool,
}

impl ErrorFilter<'_> {
    /// The SQL condition of the filter and its parameters (`?1`, `?2`… in order). Only the
    /// terms the filter sets are written, as plain comparisons, so the database answers them
    /// from the indexes (`errors_by_run`, `errors_by_flow`, and the active entries'
    /// `errors_active`).
    fn condition(&self) -> (String, Vec<Value>) {
        let mut terms = Vec::new();
        let mut params = Vec::new();
        if let Some(flow) = self.flow {
            params.push(Value::from(flow));
            terms.push(format!("flow = ?{}", params.len()));
        }
        if let Some(run) = self.run {
            params.push(Value::Int(run));
            terms.push(format!("run = ?{}", params.len()));
        }
        if !self.include_closed {
            terms.push("status IN ('open', 'retry')".to_owned());
        }
        if terms.is_empty() {
            terms.push("TRUE".to_owned());
        }
        (terms.join(" AND "), params)
    }
}

/// Where the state lives.
enum Backend {
    /// The SQLite file.
    Sqlite(Mutex<Connection>),
    /// A PostgreSQL database.
    Postgres(PgPool),
}

/// A workspace's state database: the SQLite file, or a PostgreSQL database.
pub struct State {
    db: Backend,
    /// The workspace's local state file: the database itself on SQLite; on PostgreSQL, where the
    /// flow locks (`locks/` beside it) are still kept.
    path: PathBuf,
    /// The database as messages name it: the file, or the server's URL without its password.
    at: String,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

/// Milliseconds as the database stores them (saturating: no input panics).
fn sql_ms(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

const LINK_COLUMNS: &str = "kind, source_id, dest_id, source_version, dest_version, pending_key, pending_version, pending_since_ms, note, updated_ms";

fn link_row(row: &Row) -> Result<Link, Fail> {
    let key = row.opt_text(5)?;
    let version = row.opt_text(6)?;
    let since = row.opt_u64(7)?;
    let pending = match (key, version, since) {
        (Some(idempotency_key), Some(source_version), Some(since_ms)) => Some(PendingWrite {
            idempotency_key,
            source_version,
            since_ms,
        }),
        _ => None,
    };
    Ok(Link {
        kind: row.text(0)?,
        source_id: row.text(1)?,
        dest_id: row.opt_text(2)?,
        source_version: row.text(3)?,
        dest_version: row.opt_text(4)?,
        pending,
        note: row.opt_text(8)?,
        updated_ms: row.u64(9)?,
    })
}

const RUN_COLUMNS: &str = "id, flow, dry_run, started_ms, finished_ms, summary, outcome, reason";

/// A run row as stored; decoded by [`State::decode_run`].
struct RawRun {
    id: i64,
    flow: String,
    dry_run: bool,
    started_ms: u64,
    finished_ms: Option<u64>,
    summary: String,
    outcome: Option<String>,
    reason: Option<String>,
}

fn run_row(row: &Row) -> Result<RawRun, Fail> {
    Ok(RawRun {
        id: row.int(0)?,
        flow: row.text(1)?,
        dry_run: row.bool(2)?,
        started_ms: row.u64(3)?,
        finished_ms: row.opt_u64(4)?,
        summary: row.text(5)?,
        outcome: row.opt_text(6)?,
        reason: row.opt_text(7)?,
    })
}

const ERROR_COLUMNS: &str = "id, flow, kind, source_id, stage, message, status, attempts, first_seen_ms, last_seen_ms, run, note, closed_ms";

fn error_row(row: &Row) -> Result<QueuedError, Fail> {
    Ok(QueuedError {
        id: row.int(0)?,
        flow: row.text(1)?,
        kind: row.text(2)?,
        source_id: row.text(3)?,
        stage: row.text(4)?,
        message: row.text(5)?,
        status: row.text(6)?,
        attempts: row.u32(7)?,
        first_seen_ms: row.u64(8)?,
        last_seen_ms: row.u64(9)?,
        run: row.opt_int(10)?,
        note: row.opt_text(11)?,
        closed_ms: row.opt_u64(12)?,
    })
}

/// A count read back.
fn count(row: &Row) -> Result<u64, Fail> {
    Ok(u64::try_from(row.int(0)?).unwrap_or(0))
}

impl State {
    /// Opens (creating) the database at `path`: WAL, busy_timeout ~10 s (several weft processes
    /// may share it), schema migrated by PRAGMA user_version; refuses a newer version.
    ///
    /// The folder of `path` is created when missing. A file that is not Weft's state (garbage,
    /// another application's database) or was written by a newer Weft is refused, unchanged.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let at = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StateError::Folder {
                at: at.clone(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|source| StateError::Open {
            at: at.clone(),
            source,
        })?;
        let state = Self {
            db: Backend::Sqlite(Mutex::new(conn)),
            path: path.to_path_buf(),
            at,
        };
        if let Backend::Sqlite(conn) = &state.db {
            let conn = crate::lock(conn);
            conn.busy_timeout(BUSY_TIMEOUT)
                .map_err(|e| state.fail("open", Fail::Sqlite(e)))?;
        }
        state.migrate_sqlite()?;
        if let Backend::Sqlite(conn) = &state.db {
            let conn = crate::lock(conn);
            // Returns the mode now in force; a file system without shared memory keeps the
            // rollback journal, which is still correct, only slower with several readers.
            let _mode: String = conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                .map_err(|e| state.fail("switch to WAL mode", Fail::Sqlite(e)))?;
        }
        Ok(state)
    }

    /// Opens the state in the PostgreSQL database `url` names (`postgres://USER[:PASSWORD]@
    /// HOST[:PORT]/DATABASE[?sslmode=…]`), creating or migrating its tables (the schema version
    /// in table `weft_schema`; a newer one is refused untouched, as is a database holding
    /// another application's tables). `local` is the workspace's state file path, beside which
    /// flow locks are kept. Messages name the server without the password.
    pub fn open_postgres(url: &str, local: &Path) -> Result<Self, StateError> {
        let target = PgTarget::parse(url).map_err(|reason| StateError::Url { reason })?;
        let at = target.shown().to_owned();
        let pool = PgPool::shared(&target, url).map_err(|reason| StateError::Connect {
            at: at.clone(),
            reason,
        })?;
        let state = Self {
            db: Backend::Postgres(pool),
            path: local.to_path_buf(),
            at,
        };
        // Most opens find the schema current: one read says so, without the migration's lock.
        let current = state.read("check the schema version", |tx| {
            let known = tx.one(SCHEMA_TABLE_EXISTS, &[])?.bool(0)?;
            if !known {
                return Ok(false);
            }
            Ok(tx
                .row("SELECT application, version FROM weft_schema", &[])?
                .map(|r| Ok::<_, Fail>((r.text(0)?, r.int(1)?)))
                .transpose()?
                .is_some_and(|(app, v)| app == POSTGRES_APPLICATION && v == SCHEMA_VERSION))
        })?;
        if !current {
            state.migrate_postgres()?;
        }
        Ok(state)
    }

    /// The workspace's local state file (on PostgreSQL, the place its flow locks are kept
    /// beside).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database as messages name it: the file, or the server's URL without its password.
    pub fn location(&self) -> &str {
        &self.at
    }

    /// The PostgreSQL pool when the state is there, for the parts of Weft that coordinate
    /// through the same database (token refresh locks, the queue).
    pub fn postgres(&self) -> Option<&PgPool> {
        match &self.db {
            Backend::Postgres(pool) => Some(pool),
            Backend::Sqlite(_) => None,
        }
    }

    /// Which backend: `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match &self.db {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Names a failure with this database and what was being done.
    fn fail(&self, action: &'static str, fail: Fail) -> StateError {
        let at = self.at.clone();
        let e = match fail {
            Fail::State(e) => return e,
            Fail::Decode(reason) => {
                return StateError::Corrupt {
                    at,
                    what: "row",
                    reason,
                };
            }
            Fail::Pg(PgFail::Timeout) => {
                return StateError::Timeout {
                    at,
                    action,
                    secs: pg::CALL_TIMEOUT.as_secs(),
                };
            }
            Fail::Pg(PgFail::Connect(reason)) => return StateError::Connect { at, reason },
            Fail::Pg(PgFail::Server(reason)) => {
                return StateError::Server { at, action, reason };
            }
            Fail::Sqlite(e) => e,
        };
        match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => return StateError::NotADatabase { at },
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                return StateError::Busy { at, action };
            }
            Some(ErrorCode::ReadOnly) => return StateError::ReadOnly { at },
            Some(ErrorCode::DatabaseCorrupt) => {
                return StateError::Corrupt {
                    at,
                    what: "file",
                    reason: e.to_string(),
                };
            }
            _ => {}
        }
        match e {
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..) => StateError::Corrupt {
                at,
                what: "row",
                reason: e.to_string(),
            },
            source => StateError::Sqlite { at, action, source },
        }
    }

    /// Runs `f` in one transaction, committing on success and rolling back on any failure: on
    /// SQLite `BEGIN IMMEDIATE` (waiting for other writers), on PostgreSQL a transaction on one
    /// pooled connection.
    fn write<T>(
        &self,
        action: &'static str,
        mut f: impl FnMut(&mut dyn Tx) -> Result<T, Fail>,
    ) -> Result<T, StateError> {
        match &self.db {
            Backend::Postgres(pool) => pool.with(true, f).map_err(|e| self.fail(action, e)),
            Backend::Sqlite(conn) => {
                let conn = crate::lock(conn);
                conn.execute_batch("BEGIN IMMEDIATE")
                    .map_err(|e| self.fail(action, Fail::Sqlite(e)))?;
                let done = f(&mut SqliteTx(&conn)).and_then(|v| {
                    conn.execute_batch("COMMIT")?;
                    Ok(v)
                });
                match done {
                    Ok(v) => Ok(v),
                    Err(fail) => {
                        if !conn.is_autocommit() {
                            let _ = conn.execute_batch("ROLLBACK");
                        }
                        Err(self.fail(action, fail))
                    }
                }
            }
        }
    }

    /// Runs a read.
    fn read<T>(
        &self,
        action: &'static str,
        mut f: impl FnMut(&mut dyn Tx) -> Result<T, Fail>,
    ) -> Result<T, StateError> {
        match &self.db {
            Backend::Postgres(pool) => pool.with(false, f).map_err(|e| self.fail(action, e)),
            Backend::Sqlite(conn) => {
                let conn = crate::lock(conn);
                f(&mut SqliteTx(&conn)).map_err(|e| self.fail(action, e))
            }
        }
    }

    fn migrate_sqlite(&self) -> Result<(), StateError> {
        let Backend::Sqlite(conn) = &self.db else {
            return Ok(());
        };
        let conn = crate::lock(conn);
        let step = || -> Result<(), Fail> {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            let app: i64 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
            let supported = SCHEMA_VERSION;
            if app != APPLICATION_ID {
                let tables: i64 =
                    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
                if app != 0 || version != 0 || tables != 0 {
                    return Err(Fail::State(StateError::Foreign {
                        at: self.at.clone(),
                    }));
                }
            }
            self.check_version(version)?;
            let start = usize::try_from(version).unwrap_or(usize::MAX);
            for sql in SQLITE_MIGRATIONS.iter().skip(start) {
                conn.execute_batch(sql)?;
            }
            if version != supported {
                conn.execute_batch(&format!(
                    "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {supported};"
                ))?;
            }
            conn.execute_batch("COMMIT")?;
            Ok(())
        };
        step().map_err(|fail| {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            self.fail("check the schema version", fail)
        })
    }

    /// A stored schema version this Weft may use (not newer, not negative).
    fn check_version(&self, version: i64) -> Result<(), Fail> {
        if version > SCHEMA_VERSION {
            return Err(Fail::State(StateError::Newer {
                at: self.at.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            }));
        }
        if version < 0 {
            return Err(Fail::State(StateError::Corrupt {
                at: self.at.clone(),
                what: "schema version",
                reason: format!("the version is {version}"),
            }));
        }
        Ok(())
    }

    /// Creates or migrates the tables on PostgreSQL, in one transaction under an advisory lock
    /// (two processes starting at once migrate once).
    fn migrate_postgres(&self) -> Result<(), StateError> {
        self.write("check the schema version", |tx| {
            tx.rows("SELECT pg_advisory_xact_lock(?1)", vals![MIGRATION_LOCK])?;
            let known = tx.one(SCHEMA_TABLE_EXISTS, &[])?.bool(0)?;
            let version = if known {
                let row = tx.row("SELECT application, version FROM weft_schema", &[])?;
                match row {
                    Some(row) if row.text(0)? == POSTGRES_APPLICATION => row.int(1)?,
                    Some(_) => {
                        return Err(Fail::State(StateError::ForeignDatabase {
                            at: self.at.clone(),
                        }));
                    }
                    None => 0,
                }
            } else {
                let tables = tx
                    .one(
                        "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()",
                        &[],
                    )?
                    .int(0)?;
                if tables != 0 {
                    return Err(Fail::State(StateError::ForeignDatabase {
                        at: self.at.clone(),
                    }));
                }
                tx.exec(
                    "CREATE TABLE weft_schema (
                        one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
                        application TEXT NOT NULL,
                        version BIGINT NOT NULL,
                        source TEXT
                    )",
                    &[],
                )?;
                tx.exec(
                    "INSERT INTO weft_schema (application, version) VALUES (?1, 0)",
                    vals![POSTGRES_APPLICATION],
                )?;
                0
            };
            self.check_version(version)?;
            let start = usize::try_from(version).unwrap_or(usize::MAX);
            for script in POSTGRES_MIGRATIONS.iter().skip(start) {
                tx.script(script)?;
            }
            if version != SCHEMA_VERSION {
                tx.exec("UPDATE weft_schema SET version = ?1", vals![SCHEMA_VERSION])?;
            }
            Ok(())
        })
    }

    /// The cursor of a flow's stream (e.g. "invoices", "payments"), if one was saved.
    pub fn cursor(&self, flow: &str, stream: &str) -> Result<Option<String>, StateError> {
        self.read("read a cursor", |c| {
            c.row(
                "SELECT value FROM cursors WHERE flow = ?1 AND stream = ?2",
                vals![flow, stream],
            )?
            .map(|r| r.text(0))
            .transpose()
        })
    }

    /// Saves the cursor of a flow's stream.
    pub fn set_cursor(&self, flow: &str, stream: &str, value: &str) -> Result<(), StateError> {
        let now = now_ms();
        self.write("save a cursor", |c| {
            c.exec(
                "INSERT INTO cursors (flow, stream, value, updated_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (flow, stream) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms",
                vals![flow, stream, value, sql_ms(now)],
            )?;
            Ok(())
        })
    }

    /// The ledger entry of a source record. `kind` e.g. "invoice", "contact", "payment",
    /// "reference"; `source_id` is the source system's id.
    pub fn link(
        &self,
        flow: &str,
        kind: &str,
        source_id: &str,
    ) -> Result<Option<Link>, StateError> {
        self.one_link("source_id", flow, kind, source_id)
    }

    /// How many writes of `kind` have an unknown outcome and no destination id yet (a record
    /// the destination may hold that the ledger cannot name).
    pub fn unknown_count(&self, flow: &str, kind: &str) -> Result<u64, StateError> {
        self.read("count unknown outcomes", |c| {
            count(&c.one(
                "SELECT COUNT(*) FROM links WHERE flow = ?1 AND kind = ?2 AND pending_key IS NOT NULL AND dest_id IS NULL",
                vals![flow, kind],
            )?)
        })
    }

    /// How many writes of `kind` are pending under idempotency key `key` (a batch's intents
    /// share its key).
    pub fn pending_count(&self, flow: &str, kind: &str, key: &str) -> Result<u64, StateError> {
        self.read("count pending writes", |c| {
            count(&c.one(
                "SELECT COUNT(*) FROM links WHERE flow = ?1 AND kind = ?2 AND pending_key = ?3",
                vals![flow, kind, key],
            )?)
        })
    }

    /// Source ids of `kind` whose write is pending (outcome unknown), with the idempotency key
    /// of each (grouped by key: a batch's intents share one), then those that are linked but
    /// whose `follow` entry (a write-back) is missing, pending, or names another destination
    /// id: what a run must look at again even if the source did not change.
    pub fn unsettled(
        &self,
        flow: &str,
        kind: &str,
        follow: &[String],
    ) -> Result<Vec<(String, Option<String>)>, StateError> {
        self.read("list unsettled records", |c| {
            let mut out = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for row in c.rows(
                "SELECT source_id, pending_key FROM links WHERE flow = ?1 AND kind = ?2 AND pending_key IS NOT NULL ORDER BY pending_key, source_id",
                vals![flow, kind],
            )? {
                let id = row.text(0)?;
                seen.insert(id.clone());
                out.push((id, row.opt_text(1)?));
            }
            for back in follow {
                for row in c.rows(
                    "SELECT l.source_id FROM links l LEFT JOIN links b
                       ON b.flow = l.flow AND b.kind = ?3 AND b.source_id = l.source_id
                     WHERE l.flow = ?1 AND l.kind = ?2 AND l.dest_id IS NOT NULL AND l.pending_key IS NULL
                       AND (b.source_id IS NULL OR b.pending_key IS NOT NULL OR b.dest_id IS DISTINCT FROM l.dest_id)
                     ORDER BY l.source_id",
                    vals![flow, kind, back],
                )? {
                    let id = row.text(0)?;
                    if seen.insert(id.clone()) {
                        out.push((id, None));
                    }
                }
            }
            Ok(out)
        })
    }

    /// The ledger entry whose destination id is `dest_id` (for instance the Kantata invoice of a
    /// paid Xero invoice).
    pub fn link_by_dest(
        &self,
        flow: &str,
        kind: &str,
        dest_id: &str,
    ) -> Result<Option<Link>, StateError> {
        self.one_link("dest_id", flow, kind, dest_id)
    }

    /// The first link (by source id) whose `column` is `id`.
    fn one_link(
        &self,
        column: &'static str,
        flow: &str,
        kind: &str,
        id: &str,
    ) -> Result<Option<Link>, StateError> {
        self.read("read a link", |c| {
            c.row(
                &format!(
                    "SELECT {LINK_COLUMNS} FROM links WHERE flow = ?1 AND kind = ?2 AND {column} = ?3
                     ORDER BY source_id LIMIT 1"
                ),
                vals![flow, kind, id],
            )?
            .map(|r| link_row(&r))
            .transpose()
        })
    }

    /// Every ledger entry of a kind, by source id.
    pub fn links(&self, flow: &str, kind: &str) -> Result<Vec<Link>, StateError> {
        self.read("read links", |c| {
            c.rows(
                &format!(
                    "SELECT {LINK_COLUMNS} FROM links WHERE flow = ?1 AND kind = ?2 ORDER BY source_id"
                ),
                vals![flow, kind],
            )?
            .iter()
            .map(link_row)
            .collect()
        })
    }

    /// Records the intent to write BEFORE the request is sent: the idempotency key and the
    /// source version. A link in state Pending after a crash tells the next run to reconcile
    /// before writing again.
    ///
    /// Beginning again with the same key keeps the first `since_ms` (the age of the key is what
    /// tells whether the provider still honours it); another key replaces the intent.
    pub fn begin_write(
        &self,
        flow: &str,
        kind: &str,
        source_id: &str,
        source_version: &str,
        idempotency_key: &str,
        now_ms: u64,
    ) -> Result<(), StateError> {
        self.begin_writes(
            flow,
            kind,
            &[WriteIntent {
                source_id,
                source_version,
                idempotency_key,
            }],
            now_ms,
        )
    }

    /// [`State::begin_write`] for a whole batch, in one transaction (one disk sync instead of
    /// one per record).
    pub fn begin_writes(
        &self,
        flow: &str,
        kind: &str,
        intents: &[WriteIntent<'_>],
        now_ms: u64,
    ) -> Result<(), StateError> {
        self.write("record a write intent", |c| {
            for w in intents {
                c.exec(
                    "INSERT INTO links (flow, kind, source_id, pending_key, pending_version, pending_since_ms, updated_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
                     ON CONFLICT (flow, kind, source_id) DO UPDATE SET
                       pending_since_ms = CASE WHEN links.pending_key IS NOT DISTINCT FROM excluded.pending_key
                         THEN links.pending_since_ms ELSE excluded.pending_since_ms END,
                       pending_key = excluded.pending_key,
                       pending_version = excluded.pending_version,
                       updated_ms = excluded.updated_ms",
                    vals![
                        flow,
                        kind,
                        w.source_id,
                        w.idempotency_key,
                        w.source_version,
                        sql_ms(now_ms)
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// The write succeeded: dest id and the source version it reflects; state Done (no pending
    /// intent). Also records a link found rather than written (a reconciled or matched record).
    #[allow(clippy::too_many_arguments)]
    pub fn finish_write(
        &self,
        flow: &str,
        kind: &str,
        source_id: &str,
        dest_id: &str,
        source_version: &str,
        dest_version: Option<&str>,
        now_ms: u64,
    ) -> Result<(), StateError> {
        self.finish_writes(
            flow,
            kind,
            &[WriteDone {
                source_id,
                dest_id,
                source_version,
                dest_version,
            }],
            now_ms,
        )
    }

    /// [`State::finish_write`] for a whole batch, in one transaction.
    pub fn finish_writes(
        &self,
        flow: &str,
        kind: &str,
        done: &[WriteDone<'_>],
        now_ms: u64,
    ) -> Result<(), StateError> {
        self.write("record a finished write", |c| {
            for d in done {
                c.exec(
                    "INSERT INTO links (flow, kind, source_id, dest_id, source_version, dest_version, updated_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (flow, kind, source_id) DO UPDATE SET
                       dest_id = excluded.dest_id,
                       source_version = excluded.source_version,
                       dest_version = excluded.dest_version,
                       pending_key = NULL, pending_version = NULL, pending_since_ms = NULL,
                       updated_ms = excluded.updated_ms",
                    vals![
                        flow,
                        kind,
                        d.source_id,
                        d.dest_id,
                        d.source_version,
                        d.dest_version,
                        sql_ms(now_ms)
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// Forget a pending intent (the write was refused, nothing was created). A link that was
    /// never written and has no note disappears; otherwise only the intent goes.
    pub fn abandon_write(&self, flow: &str, kind: &str, source_id: &str) -> Result<(), StateError> {
        self.write("abandon a write intent", |c| {
            c.exec(
                "DELETE FROM links WHERE flow = ?1 AND kind = ?2 AND source_id = ?3
                   AND dest_id IS NULL AND note IS NULL",
                vals![flow, kind, source_id],
            )?;
            c.exec(
                "UPDATE links SET pending_key = NULL, pending_version = NULL, pending_since_ms = NULL
                 WHERE flow = ?1 AND kind = ?2 AND source_id = ?3",
                vals![flow, kind, source_id],
            )?;
            Ok(())
        })
    }

    /// Sets (or, with `None`, clears) the note of a known link, e.g. why an update was not
    /// possible. A record the ledger does not know is [`StateError::NoLink`].
    pub fn set_note(
        &self,
        flow: &str,
        kind: &str,
        source_id: &str,
        note: Option<&str>,
    ) -> Result<(), StateError> {
        self.write("save a note", |c| {
            let changed = c.exec(
                "UPDATE links SET note = ?4 WHERE flow = ?1 AND kind = ?2 AND source_id = ?3",
                vals![flow, kind, source_id, note],
            )?;
            if changed == 0 {
                return Err(Fail::State(StateError::NoLink {
                    at: self.at.clone(),
                    flow: flow.to_owned(),
                    kind: kind.to_owned(),
                    source_id: source_id.to_owned(),
                }));
            }
            Ok(())
        })
    }

    /// Records the start of a run and returns its id.
    pub fn start_run(&self, flow: &str, dry_run: bool, now_ms: u64) -> Result<i64, StateError> {
        let summary = summary_json(&RunSummary::default());
        self.write("record a run", |c| {
            c.one(
                "INSERT INTO runs (flow, dry_run, started_ms, summary) VALUES (?1, ?2, ?3, ?4) RETURNING id",
                vals![flow, dry_run, sql_ms(now_ms), &summary],
            )?
            .int(0)
        })
    }

    /// Saves the counts of a run still going, so a run that dies leaves what it did.
    pub fn save_progress(&self, run: i64, summary: &RunSummary) -> Result<(), StateError> {
        let summary = summary_json(summary);
        self.write("save a run's progress", |c| {
            let changed = c.exec(
                "UPDATE runs SET summary = ?2 WHERE id = ?1",
                vals![run, &summary],
            )?;
            if changed == 0 {
                return Err(Fail::State(StateError::NoRun {
                    at: self.at.clone(),
                    id: run,
                }));
            }
            Ok(())
        })
    }

    /// Records the end of a run, its counts and outcome. A run finishes once.
    pub fn finish_run(
        &self,
        run: i64,
        summary: &RunSummary,
        outcome: &RunOutcome,
        now_ms: u64,
    ) -> Result<(), StateError> {
        let summary = summary_json(summary);
        let (status, reason) = match outcome {
            RunOutcome::Completed => ("completed", None),
            RunOutcome::Stopped { reason } => ("stopped", Some(reason.as_str())),
            RunOutcome::Failed { reason } => ("failed", Some(reason.as_str())),
        };
        self.write("record the end of a run", |c| {
            // One statement both checks and finishes, so two processes cannot both finish it.
            let changed = c.exec(
                "UPDATE runs SET finished_ms = ?2, summary = ?3, outcome = ?4, reason = ?5
                 WHERE id = ?1 AND finished_ms IS NULL",
                vals![run, sql_ms(now_ms), &summary, status, reason],
            )?;
            if changed > 0 {
                return Ok(());
            }
            let exists = c
                .row("SELECT id FROM runs WHERE id = ?1", vals![run])?
                .is_some();
            Err(Fail::State(if exists {
                StateError::RunFinished {
                    at: self.at.clone(),
                    id: run,
                }
            } else {
                StateError::NoRun {
                    at: self.at.clone(),
                    id: run,
                }
            }))
        })
    }

    fn decode_run(&self, raw: RawRun) -> Result<RunRecord, StateError> {
        let corrupt = |reason: String| StateError::Corrupt {
            at: self.at.clone(),
            what: "run",
            reason: format!("run {}: {reason}", raw.id),
        };
        let summary: RunSummary = serde_json::from_str(&raw.summary)
            .map_err(|e| corrupt(format!("its summary does not read: {e}")))?;
        let reason = raw.reason.unwrap_or_default();
        let outcome = match raw.outcome.as_deref() {
            None => None,
            Some("completed") => Some(RunOutcome::Completed),
            Some("stopped") => Some(RunOutcome::Stopped { reason }),
            Some("failed") => Some(RunOutcome::Failed { reason }),
            Some(other) => return Err(corrupt(format!("unknown outcome `{other}`"))),
        };
        Ok(RunRecord {
            id: raw.id,
            flow: raw.flow,
            dry_run: raw.dry_run,
            started_ms: raw.started_ms,
            finished_ms: raw.finished_ms,
            summary,
            outcome,
        })
    }

    /// Runs, newest first, of one flow or all, at most `limit`.
    pub fn runs(&self, flow: Option<&str>, limit: usize) -> Result<Vec<RunRecord>, StateError> {
        Ok(self.runs_page(flow, PageAt::Start, limit)?.items)
    }

    /// One page of the run history of one flow or all, newest first: at most `limit` runs from
    /// `at` (older runs are [`PageAt::Before`] the page's last id, newer ones
    /// [`PageAt::After`] its first).
    pub fn runs_page(
        &self,
        flow: Option<&str>,
        at: PageAt,
        limit: usize,
    ) -> Result<Page<RunRecord>, StateError> {
        let (filter, params) = match flow {
            Some(flow) => ("flow = ?1", vec![Value::from(flow)]),
            None => ("TRUE", Vec::new()),
        };
        let page = self.read("read runs", |c| {
            keyset_page(
                c,
                "runs",
                RUN_COLUMNS,
                filter,
                &params,
                at,
                limit,
                true,
                run_row,
            )
        })?;
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(|r| self.decode_run(r))
                .collect::<Result<_, _>>()?,
            lower: page.lower,
            higher: page.higher,
        })
    }

    /// How many runs one flow (or all) has recorded.
    pub fn run_count(&self, flow: Option<&str>) -> Result<u64, StateError> {
        self.read("count runs", |c| match flow {
            Some(flow) => count(&c.one("SELECT COUNT(*) FROM runs WHERE flow = ?1", vals![flow])?),
            None => count(&c.one("SELECT COUNT(*) FROM runs", &[])?),
        })
    }

    /// Where run `run` stands: `completed`, `stopped` or `failed` once it ended; without an
    /// end, `running` while a run holds its flow's lock, else `interrupted` (its process ended
    /// without finishing it; its counts are those saved as it went).
    pub fn run_status(&self, run: &RunRecord) -> &'static str {
        match run.outcome {
            Some(RunOutcome::Completed) => "completed",
            Some(RunOutcome::Stopped { .. }) => "stopped",
            Some(RunOutcome::Failed { .. }) => "failed",
            None if crate::runlock::holder_in(self, &run.flow).is_some() => "running",
            None => "interrupted",
        }
    }

    /// One run.
    pub fn run(&self, id: i64) -> Result<Option<RunRecord>, StateError> {
        let raw = self.read("read a run", |c| {
            c.row(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
                vals![id],
            )?
            .map(|r| run_row(&r))
            .transpose()
        })?;
        raw.map(|r| self.decode_run(r)).transpose()
    }

    /// Queues a record's failure and returns the entry's id. There is one active (open or
    /// retry) entry per (flow, kind, source_id): a repeat updates its stage, message, run and
    /// last_seen, adds one to attempts, and sets it back to open.
    #[allow(clippy::too_many_arguments)]
    pub fn queue_error(
        &self,
        flow: &str,
        kind: &str,
        source_id: &str,
        stage: &str,
        message: &str,
        run: Option<i64>,
        now_ms: u64,
    ) -> Result<i64, StateError> {
        self.write("queue an error", |c| {
            c.one(
                "INSERT INTO errors (flow, kind, source_id, stage, message, status, attempts, first_seen_ms, last_seen_ms, run)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'open', 1, ?6, ?6, ?7)
                 ON CONFLICT (flow, kind, source_id) WHERE status IN ('open', 'retry') DO UPDATE SET
                   stage = excluded.stage,
                   message = excluded.message,
                   status = 'open',
                   attempts = errors.attempts + 1,
                   last_seen_ms = excluded.last_seen_ms,
                   run = excluded.run
                 RETURNING id",
                vals![flow, kind, source_id, stage, message, sql_ms(now_ms), run],
            )?
            .int(0)
        })
    }

    /// Queue entries of one flow or all: active ones only, or with `include_closed` every one;
    /// oldest first.
    pub fn errors(
        &self,
        flow: Option<&str>,
        include_closed: bool,
    ) -> Result<Vec<QueuedError>, StateError> {
        let (condition, params) = ErrorFilter {
            flow,
            run: None,
            include_closed,
        }
        .condition();
        self.read("read the error queue", |c| {
            c.rows(
                &format!("SELECT {ERROR_COLUMNS} FROM errors WHERE {condition} ORDER BY id"),
                &params,
            )?
            .iter()
            .map(error_row)
            .collect()
        })
    }

    /// One page of the queue entries `filter` takes, oldest first: at most `limit` from `at`
    /// (later entries are [`PageAt::After`] the page's last id, earlier ones
    /// [`PageAt::Before`] its first).
    pub fn errors_page(
        &self,
        filter: ErrorFilter<'_>,
        at: PageAt,
        limit: usize,
    ) -> Result<Page<QueuedError>, StateError> {
        let (condition, params) = filter.condition();
        self.read("read the error queue", |c| {
            keyset_page(
                c,
                "errors",
                ERROR_COLUMNS,
                &condition,
                &params,
                at,
                limit,
                false,
                error_row,
            )
        })
    }

    /// How many queue entries `filter` takes.
    pub fn error_count(&self, filter: ErrorFilter<'_>) -> Result<u64, StateError> {
        let (condition, params) = filter.condition();
        self.read("count the error queue", |c| {
            count(&c.one(
                &format!("SELECT COUNT(*) FROM errors WHERE {condition}"),
                &params,
            )?)
        })
    }

    /// One queue entry.
    pub fn error(&self, id: i64) -> Result<Option<QueuedError>, StateError> {
        self.read("read an error", |c| {
            c.row(
                &format!("SELECT {ERROR_COLUMNS} FROM errors WHERE id = ?1"),
                vals![id],
            )?
            .map(|r| error_row(&r))
            .transpose()
        })
    }

    /// Marks an open entry for retry (the next run re-reads its record). False when there is no
    /// such open entry (unknown, already marked, or closed).
    pub fn mark_retry(&self, id: i64) -> Result<bool, StateError> {
        self.write("mark an error for retry", |c| {
            Ok(c.exec(
                "UPDATE errors SET status = 'retry' WHERE id = ?1 AND status = 'open'",
                vals![id],
            )? > 0)
        })
    }

    /// Marks every open entry (of one flow, or of all) for retry, in one transaction; returns
    /// how many.
    pub fn mark_retry_all(&self, flow: Option<&str>) -> Result<u64, StateError> {
        self.write("mark errors for retry", |c| match flow {
            Some(flow) => c.exec(
                "UPDATE errors SET status = 'retry' WHERE status = 'open' AND flow = ?1",
                vals![flow],
            ),
            None => c.exec(
                "UPDATE errors SET status = 'retry' WHERE status = 'open'",
                &[],
            ),
        })
    }

    /// Closes an active entry as resolved by a person, with an optional note. False when there
    /// is no such active entry (unknown or already closed).
    pub fn resolve(&self, id: i64, note: Option<&str>, now_ms: u64) -> Result<bool, StateError> {
        self.write("resolve an error", |c| {
            Ok(c.exec(
                "UPDATE errors SET status = 'resolved', note = ?2, closed_ms = ?3
                 WHERE id = ?1 AND status IN ('open', 'retry')",
                vals![id, note, sql_ms(now_ms)],
            )? > 0)
        })
    }

    /// Source ids marked for retry (the next run re-reads them), in queue order.
    pub fn retries(&self, flow: &str, kind: &str) -> Result<Vec<String>, StateError> {
        self.read("read the retries", |c| {
            c.rows(
                "SELECT source_id FROM errors WHERE flow = ?1 AND kind = ?2 AND status = 'retry' ORDER BY id",
                vals![flow, kind],
            )?
            .iter()
            .map(|r| r.text(0))
            .collect()
        })
    }

    /// The record succeeded: its open or retry entry, if any, becomes `fixed` (closed).
    pub fn clear_error(
        &self,
        flow: &str,
        kind: &str,
        source_id: &str,
        now_ms: u64,
    ) -> Result<(), StateError> {
        // Nearly every record a run writes has no error to close: a read answers that without a
        // write transaction (and its sync to disk).
        let open = self.read("look for an open error", |c| {
            c.one(
                "SELECT EXISTS (SELECT 1 FROM errors WHERE flow = ?1 AND kind = ?2 AND source_id = ?3
                 AND status IN ('open', 'retry'))",
                vals![flow, kind, source_id],
            )?
            .bool(0)
        })?;
        if !open {
            return Ok(());
        }
        self.write("close an error", |c| {
            c.exec(
                "UPDATE errors SET status = 'fixed', closed_ms = ?4
                 WHERE flow = ?1 AND kind = ?2 AND source_id = ?3 AND status IN ('open', 'retry')",
                vals![flow, kind, source_id, sql_ms(now_ms)],
            )?;
            Ok(())
        })
    }
}

/// One page of `table` by id: the rows `filter` takes (its parameters `params`, numbered from
/// `?1`), at most `limit` from `at`, in descending id order when `newest_first`, else ascending;
/// each read with `row`. Besides the page, one look on either side says whether more lie there.
#[allow(clippy::too_many_arguments)]
fn keyset_page<T>(
    c: &mut dyn Tx,
    table: &str,
    columns: &str,
    filter: &str,
    params: &[Value],
    at: PageAt,
    limit: usize,
    newest_first: bool,
    row: impl Fn(&Row) -> Result<T, Fail>,
) -> Result<Page<T>, Fail> {
    let n = params.len();
    let (condition, id) = match at {
        PageAt::Start => (filter.to_owned(), None),
        PageAt::After(id) => (format!("{filter} AND id > ?{}", n + 1), Some(id)),
        PageAt::Before(id) => (format!("{filter} AND id < ?{}", n + 1), Some(id)),
    };
    // Rows are read walking away from `at`: upwards after an id, downwards before one, and from
    // the list's own start otherwise; then put in the list's order.
    let upwards = match at {
        PageAt::Start => !newest_first,
        PageAt::After(_) => true,
        PageAt::Before(_) => false,
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut all = params.to_vec();
    if let Some(id) = id {
        all.push(Value::Int(id));
    }
    all.push(Value::Int(limit));
    let mut items = c
        .rows(
            &format!(
                "SELECT {columns} FROM {table} WHERE {condition} ORDER BY id {} LIMIT ?{}",
                if upwards { "ASC" } else { "DESC" },
                all.len()
            ),
            &all,
        )?
        .iter()
        .map(|r| Ok((r.int(0)?, row(r)?)))
        .collect::<Result<Vec<_>, Fail>>()?;
    if upwards == newest_first {
        items.reverse();
    }
    let ids = items.iter().map(|(id, _)| *id);
    let (low, high) = (ids.clone().min(), ids.max());
    let mut beyond = |op: &str, edge: i64| -> Result<bool, Fail> {
        let mut p = params.to_vec();
        p.push(Value::Int(edge));
        c.one(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM {table} WHERE {filter} AND id {op} ?{})",
                n + 1
            ),
            &p,
        )?
        .bool(0)
    };
    // An empty page still says what lies on the side it was asked from.
    let (lower, higher) = match (low, high, at) {
        (Some(low), Some(high), _) => (beyond("<", low)?, beyond(">", high)?),
        (_, _, PageAt::After(id)) => (beyond("<=", id)?, false),
        (_, _, PageAt::Before(id)) => (false, beyond(">=", id)?),
        (_, _, PageAt::Start) => (false, false),
    };
    Ok(Page {
        items: items.into_iter().map(|(_, item)| item).collect(),
        lower,
        higher,
    })
}

fn summary_json(summary: &RunSummary) -> String {
    // A struct of integers always serializes.
    serde_json::to_string(summary).unwrap_or_else(|_| "{}".to_owned())
}

/// Milliseconds since the Unix epoch by the wall clock (0 before it), for callers without a
/// clock of their own.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
