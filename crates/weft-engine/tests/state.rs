//! The state database: round trips, schema versions, refused files, writers in several threads
//! and handles, and the error queue's semantics.

use std::path::PathBuf;

use weft_engine::state::{
    BUSY_TIMEOUT, ErrorFilter, Link, PageAt, PendingWrite, RunOutcome, RunSummary, SCHEMA_VERSION,
    State, StateError, WriteDone, WriteIntent,
};

/// A fresh folder for one test.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("weft-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn db(&self) -> PathBuf {
        self.0.join(".weft").join("state.db")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The database a behaviour test runs on: SQLite's file, or a fresh PostgreSQL database.
enum Db {
    Sqlite(Dir),
    Postgres(Dir, weft_harness::postgres::TestDb),
}

impl Db {
    fn sqlite(name: &str) -> Self {
        Self::Sqlite(Dir::new(name))
    }

    /// None when the test skips (no PostgreSQL here, outside CI).
    fn postgres(name: &str) -> Option<Self> {
        let pg = weft_harness::postgres::database(name)?;
        Some(Self::Postgres(Dir::new(&format!("pg-{name}")), pg))
    }

    /// A new handle on the database.
    fn open(&self) -> State {
        match self {
            Self::Sqlite(dir) => State::open(&dir.db()).unwrap(),
            Self::Postgres(dir, pg) => State::open_postgres(pg.url(), &dir.db()).unwrap(),
        }
    }

    /// Runs SQL behind the state's back (to damage rows).
    fn damage(&self, sql: &str) {
        match self {
            Self::Sqlite(dir) => rusqlite::Connection::open(dir.db())
                .unwrap()
                .execute_batch(sql)
                .unwrap(),
            Self::Postgres(_, pg) => pg.execute(sql).unwrap(),
        }
    }
}

/// A behaviour test run on each backend: `NAME::sqlite` and `NAME::postgres`.
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(&super::Db::sqlite(stringify!($name)));
            }

            #[test]
            fn postgres() {
                if let Some(db) = super::Db::postgres(stringify!($name)) {
                    super::$name(&db);
                }
            }
        }
    };
}

fn user_version(path: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn creates_folder_and_schema_and_reopens() {
    let dir = Dir::new("create");
    let state = State::open(&dir.db()).unwrap();
    assert_eq!(state.path(), dir.db());
    assert_eq!(state.cursor("f", "invoices").unwrap(), None);
    state
        .set_cursor("f", "invoices", "2026-01-01T00:00:00Z")
        .unwrap();
    drop(state);
    assert_eq!(user_version(&dir.db()), SCHEMA_VERSION);
    let state = State::open(&dir.db()).unwrap();
    assert_eq!(
        state.cursor("f", "invoices").unwrap().as_deref(),
        Some("2026-01-01T00:00:00Z")
    );
    state
        .set_cursor("f", "invoices", "2026-02-01T00:00:00Z")
        .unwrap();
    assert_eq!(
        state.cursor("f", "invoices").unwrap().as_deref(),
        Some("2026-02-01T00:00:00Z")
    );
    assert_eq!(state.cursor("f", "payments").unwrap(), None);
    assert_eq!(state.cursor("other", "invoices").unwrap(), None);
    let mode: String = rusqlite::Connection::open(dir.db())
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn an_empty_file_is_migrated() {
    let dir = Dir::new("empty");
    std::fs::create_dir_all(dir.db().parent().unwrap()).unwrap();
    std::fs::write(dir.db(), b"").unwrap();
    let state = State::open(&dir.db()).unwrap();
    assert!(state.runs(None, 10).unwrap().is_empty());
    drop(state);
    assert_eq!(user_version(&dir.db()), SCHEMA_VERSION);
}

#[test]
fn a_first_version_file_gains_the_run_index_and_keeps_its_rows() {
    let dir = Dir::new("v1");
    let state = State::open(&dir.db()).unwrap();
    let run = state.start_run("f", false, 1_000).unwrap();
    let error = state
        .queue_error("f", "invoice", "K1", "write", "refused", Some(run), 1_000)
        .unwrap();
    drop(state);
    // Version 1 is version 2 without the index of errors by run.
    let indexes = || -> Vec<String> {
        let conn = rusqlite::Connection::open(dir.db()).unwrap();
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'errors' ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert!(indexes().contains(&"errors_by_run".to_owned()));
    rusqlite::Connection::open(dir.db())
        .unwrap()
        .execute_batch("DROP INDEX errors_by_run; PRAGMA user_version = 1;")
        .unwrap();
    assert_eq!(user_version(&dir.db()), 1);

    let state = State::open(&dir.db()).unwrap();
    assert_eq!(user_version(&dir.db()), SCHEMA_VERSION);
    assert!(indexes().contains(&"errors_by_run".to_owned()));
    let filter = ErrorFilter {
        run: Some(run),
        ..ErrorFilter::default()
    };
    let page = state.errors_page(filter, PageAt::Start, 10).unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].id, error);
    assert_eq!(state.run(run).unwrap().unwrap().flow, "f");
}

#[test]
fn a_newer_schema_is_refused_untouched() {
    let dir = Dir::new("newer");
    drop(State::open(&dir.db()).unwrap());
    {
        let conn = rusqlite::Connection::open(dir.db()).unwrap();
        conn.execute_batch("PRAGMA user_version = 99; CREATE TABLE later (x INTEGER);")
            .unwrap();
    }
    let err = State::open(&dir.db()).unwrap_err();
    assert!(
        matches!(err, StateError::Newer { found: 99, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("newer Weft"), "{text}");
    assert!(text.contains("upgrade weft"), "{text}");
    assert!(text.contains(&dir.db().display().to_string()), "{text}");
    assert_eq!(user_version(&dir.db()), 99);
}

#[test]
fn garbage_is_refused_with_a_clear_error() {
    let dir = Dir::new("garbage");
    std::fs::create_dir_all(dir.db().parent().unwrap()).unwrap();
    for bytes in [
        b"hello".to_vec(),
        vec![0xAB; 4096],
        b"SQLite format 3\0"
            .iter()
            .copied()
            .chain([0xFF; 200])
            .collect(),
    ] {
        std::fs::write(dir.db(), &bytes).unwrap();
        let err = State::open(&dir.db()).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(
                err,
                StateError::NotADatabase { .. } | StateError::Corrupt { .. }
            ),
            "{err:?}"
        );
        assert!(text.contains(&dir.db().display().to_string()), "{text}");
        assert!(text.contains("backup"), "{text}");
        assert_eq!(std::fs::read(dir.db()).unwrap(), bytes, "left unchanged");
    }
}

#[test]
fn another_applications_database_is_refused() {
    let dir = Dir::new("foreign");
    std::fs::create_dir_all(dir.db().parent().unwrap()).unwrap();
    {
        let conn = rusqlite::Connection::open(dir.db()).unwrap();
        conn.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('mine');")
            .unwrap();
    }
    let err = State::open(&dir.db()).unwrap_err();
    assert!(matches!(err, StateError::Foreign { .. }), "{err:?}");
    assert!(err.to_string().contains("another application"), "{err}");
}

#[test]
fn a_folder_in_the_way_is_an_error() {
    let dir = Dir::new("folder");
    std::fs::create_dir_all(dir.db()).unwrap();
    let err = State::open(&dir.db()).unwrap_err();
    assert!(
        err.to_string().contains(&dir.db().display().to_string()),
        "{err}"
    );
}

both!(link_lifecycle);

fn link_lifecycle(db: &Db) {
    let s = db.open();
    assert_eq!(s.link("f", "invoice", "K1").unwrap(), None);

    s.begin_write("f", "invoice", "K1", "v1", "key-1", 1_000)
        .unwrap();
    // Beginning again with the same key keeps the first time.
    s.begin_write("f", "invoice", "K1", "v1", "key-1", 2_000)
        .unwrap();
    let pending = s.link("f", "invoice", "K1").unwrap().unwrap();
    assert_eq!(
        pending,
        Link {
            kind: "invoice".into(),
            source_id: "K1".into(),
            dest_id: None,
            source_version: String::new(),
            dest_version: None,
            pending: Some(PendingWrite {
                idempotency_key: "key-1".into(),
                source_version: "v1".into(),
                since_ms: 1_000,
            }),
            note: None,
            updated_ms: 2_000,
        }
    );

    s.finish_write("f", "invoice", "K1", "X-1", "v1", Some("d1"), 3_000)
        .unwrap();
    let done = s.link("f", "invoice", "K1").unwrap().unwrap();
    assert_eq!(done.dest_id.as_deref(), Some("X-1"));
    assert_eq!(done.source_version, "v1");
    assert_eq!(done.dest_version.as_deref(), Some("d1"));
    assert_eq!(done.pending, None);
    assert_eq!(done.updated_ms, 3_000);
    assert_eq!(
        s.link_by_dest("f", "invoice", "X-1").unwrap().as_ref(),
        Some(&done)
    );
    assert_eq!(s.link_by_dest("f", "invoice", "X-2").unwrap(), None);

    // An update begun on a written link, then refused: the link stays as written.
    s.begin_write("f", "invoice", "K1", "v2", "key-2", 4_000)
        .unwrap();
    let updating = s.link("f", "invoice", "K1").unwrap().unwrap();
    assert_eq!(updating.pending.as_ref().unwrap().since_ms, 4_000);
    assert_eq!(updating.source_version, "v1");
    s.abandon_write("f", "invoice", "K1").unwrap();
    let kept = s.link("f", "invoice", "K1").unwrap().unwrap();
    assert_eq!(kept.pending, None);
    assert_eq!(kept.dest_id.as_deref(), Some("X-1"));

    // A create begun and refused leaves nothing behind.
    s.begin_write("f", "invoice", "K2", "v1", "key-3", 5_000)
        .unwrap();
    s.abandon_write("f", "invoice", "K2").unwrap();
    assert_eq!(s.link("f", "invoice", "K2").unwrap(), None);
    s.abandon_write("f", "invoice", "nothing").unwrap();

    // Notes.
    s.set_note(
        "f",
        "invoice",
        "K1",
        Some("Xero invoice is PAID; not updated"),
    )
    .unwrap();
    assert_eq!(
        s.link("f", "invoice", "K1")
            .unwrap()
            .unwrap()
            .note
            .as_deref(),
        Some("Xero invoice is PAID; not updated")
    );
    s.set_note("f", "invoice", "K1", None).unwrap();
    assert_eq!(s.link("f", "invoice", "K1").unwrap().unwrap().note, None);
    let err = s.set_note("f", "invoice", "nope", Some("x")).unwrap_err();
    assert!(matches!(err, StateError::NoLink { .. }), "{err:?}");

    // A found (not written) contact is recorded with finish_write alone.
    s.finish_write("f", "contact", "C1", "XC-1", "", None, 6_000)
        .unwrap();
    s.finish_write("f", "contact", "C0", "XC-0", "", None, 6_000)
        .unwrap();
    let contacts = s.links("f", "contact").unwrap();
    assert_eq!(
        contacts
            .iter()
            .map(|l| l.source_id.as_str())
            .collect::<Vec<_>>(),
        ["C0", "C1"]
    );
    assert!(s.links("other", "contact").unwrap().is_empty());
}

both!(batches_of_intents_and_results);

fn batches_of_intents_and_results(db: &Db) {
    let s = db.open();
    let ids: Vec<String> = (0..50).map(|i| format!("K{i:02}")).collect();
    let keys: Vec<String> = ids.iter().map(|id| format!("key-{id}")).collect();
    let intents: Vec<WriteIntent<'_>> = ids
        .iter()
        .zip(&keys)
        .map(|(id, key)| WriteIntent {
            source_id: id,
            source_version: "v1",
            idempotency_key: key,
        })
        .collect();
    s.begin_writes("f", "invoice", &intents, 10).unwrap();
    let links = s.links("f", "invoice").unwrap();
    assert_eq!(links.len(), 50);
    assert!(
        links
            .iter()
            .all(|l| l.pending.is_some() && l.dest_id.is_none())
    );
    assert_eq!(
        links[7].pending.as_ref().unwrap().idempotency_key,
        "key-K07"
    );

    let dest: Vec<String> = ids.iter().map(|id| format!("X-{id}")).collect();
    let done: Vec<WriteDone<'_>> = ids
        .iter()
        .zip(&dest)
        .take(49)
        .map(|(id, d)| WriteDone {
            source_id: id,
            dest_id: d,
            source_version: "v1",
            dest_version: None,
        })
        .collect();
    s.finish_writes("f", "invoice", &done, 20).unwrap();
    let links = s.links("f", "invoice").unwrap();
    let pending: Vec<&str> = links
        .iter()
        .filter(|l| l.pending.is_some())
        .map(|l| l.source_id.as_str())
        .collect();
    assert_eq!(pending, ["K49"], "the one without an answer stays pending");
    assert_eq!(links[0].dest_id.as_deref(), Some("X-K00"));
    s.begin_writes("f", "invoice", &[], 30).unwrap();
    s.finish_writes("f", "invoice", &[], 30).unwrap();
}

both!(run_history);

fn run_history(db: &Db) {
    let s = db.open();
    let first = s.start_run("f", false, 1_000).unwrap();
    let dry = s.start_run("f", true, 2_000).unwrap();
    let other = s.start_run("g", false, 3_000).unwrap();
    assert!(first < dry && dry < other);

    let running = s.run(first).unwrap().unwrap();
    assert_eq!(running.outcome, None);
    assert_eq!(running.finished_ms, None);
    assert_eq!(running.summary, RunSummary::default());

    let mut summary = RunSummary {
        read: 10,
        created: 7,
        ..RunSummary::default()
    };
    s.save_progress(first, &summary).unwrap();
    assert_eq!(s.run(first).unwrap().unwrap().summary, summary);
    summary.failed = 3;
    summary.waited_ms = 1_500;
    s.finish_run(first, &summary, &RunOutcome::Completed, 9_000)
        .unwrap();
    s.finish_run(
        dry,
        &RunSummary::default(),
        &RunOutcome::Stopped {
            reason: "Xero's daily limit".into(),
        },
        9_500,
    )
    .unwrap();
    s.finish_run(
        other,
        &RunSummary::default(),
        &RunOutcome::Failed {
            reason: "token refused".into(),
        },
        9_900,
    )
    .unwrap();

    let done = s.run(first).unwrap().unwrap();
    assert_eq!(done.summary, summary);
    assert_eq!(done.finished_ms, Some(9_000));
    assert_eq!(done.outcome, Some(RunOutcome::Completed));
    assert!(s.run(dry).unwrap().unwrap().dry_run);
    assert_eq!(
        s.run(other).unwrap().unwrap().outcome,
        Some(RunOutcome::Failed {
            reason: "token refused".into()
        })
    );
    assert_eq!(s.run(12345).unwrap(), None);

    let all: Vec<i64> = s.runs(None, 10).unwrap().iter().map(|r| r.id).collect();
    assert_eq!(all, [other, dry, first]);
    let f: Vec<i64> = s
        .runs(Some("f"), 10)
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(f, [dry, first]);
    assert_eq!(s.runs(Some("f"), 1).unwrap().len(), 1);
    assert_eq!(s.runs(None, usize::MAX).unwrap().len(), 3);

    let twice = s
        .finish_run(first, &summary, &RunOutcome::Completed, 10_000)
        .unwrap_err();
    assert!(matches!(twice, StateError::RunFinished { .. }), "{twice:?}");
    let missing = s
        .finish_run(777, &summary, &RunOutcome::Completed, 10_000)
        .unwrap_err();
    assert!(
        matches!(missing, StateError::NoRun { id: 777, .. }),
        "{missing:?}"
    );
    assert!(s.save_progress(777, &summary).is_err());

    // The JSON shape scripts see.
    let json = serde_json::to_value(s.run(dry).unwrap().unwrap()).unwrap();
    assert_eq!(json["outcome"]["status"], "stopped");
    assert_eq!(json["outcome"]["reason"], "Xero's daily limit");
    assert_eq!(json["summary"]["read"], 0);
}

both!(the_run_history_is_read_a_page_at_a_time_newest_first);

fn the_run_history_is_read_a_page_at_a_time_newest_first(db: &Db) {
    let s = db.open();
    let mut f = Vec::new();
    for n in 0..12 {
        f.push(s.start_run("f", false, 1_000 + n).unwrap());
        if n % 4 == 0 {
            s.start_run("g", false, 1_000 + n).unwrap();
        }
    }
    assert_eq!(s.run_count(Some("f")).unwrap(), 12);
    assert_eq!(s.run_count(None).unwrap(), 15);
    assert_eq!(s.run_count(Some("nothing")).unwrap(), 0);
    let ids = |p: &weft_engine::state::Page<weft_engine::state::RunRecord>| {
        p.items.iter().map(|r| r.id).collect::<Vec<_>>()
    };
    let newest_first: Vec<i64> = f.iter().rev().copied().collect();

    // Walking to older runs reads each run of the flow once, in order.
    let first = s.runs_page(Some("f"), PageAt::Start, 5).unwrap();
    assert_eq!(ids(&first), newest_first[..5]);
    assert!(first.lower && !first.higher);
    let second = s
        .runs_page(Some("f"), PageAt::Before(*ids(&first).last().unwrap()), 5)
        .unwrap();
    assert_eq!(ids(&second), newest_first[5..10]);
    assert!(second.lower && second.higher);
    let last = s
        .runs_page(Some("f"), PageAt::Before(*ids(&second).last().unwrap()), 5)
        .unwrap();
    assert_eq!(ids(&last), newest_first[10..]);
    assert!(!last.lower && last.higher);

    // And back to newer runs, the same pages.
    let back = s
        .runs_page(Some("f"), PageAt::After(ids(&last)[0]), 5)
        .unwrap();
    assert_eq!(back, second);
    let top = s
        .runs_page(Some("f"), PageAt::After(ids(&back)[0]), 5)
        .unwrap();
    assert_eq!(top, first);

    // Past either end: an empty page that knows which side holds the runs.
    let beyond = s
        .runs_page(Some("f"), PageAt::After(i64::MAX - 1), 5)
        .unwrap();
    assert!(beyond.items.is_empty() && beyond.lower && !beyond.higher);
    let below = s.runs_page(Some("f"), PageAt::Before(1), 5).unwrap();
    assert!(below.items.is_empty() && !below.lower && below.higher);
    // Every flow's runs, and the old call reading the first page.
    assert_eq!(
        s.runs_page(None, PageAt::Start, 100).unwrap().items.len(),
        15
    );
    assert_eq!(s.runs(Some("f"), 3).unwrap(), first.items[..3]);
}

both!(the_error_queue_is_read_and_counted_a_page_at_a_time);

fn the_error_queue_is_read_and_counted_a_page_at_a_time(db: &Db) {
    let s = db.open();
    let (r1, r2) = (
        s.start_run("f", false, 1_000).unwrap(),
        s.start_run("f", false, 2_000).unwrap(),
    );
    let mut f = Vec::new();
    for n in 0..12 {
        let run = if n < 7 { r1 } else { r2 };
        f.push(
            s.queue_error(
                "f",
                "invoice",
                &format!("K{n}"),
                "write",
                "refused",
                Some(run),
                1_000,
            )
            .unwrap(),
        );
        if n % 5 == 0 {
            s.queue_error(
                "g",
                "invoice",
                &format!("G{n}"),
                "write",
                "refused",
                None,
                1_000,
            )
            .unwrap();
        }
    }
    // Two of f's entries are closed: one resolved, one fixed by a later success.
    assert!(s.resolve(f[1], Some("by hand"), 3_000).unwrap());
    s.clear_error("f", "invoice", "K8", 3_000).unwrap();
    let open: Vec<i64> = f
        .iter()
        .copied()
        .filter(|id| *id != f[1] && *id != f[8])
        .collect();
    let of_f = ErrorFilter {
        flow: Some("f"),
        ..ErrorFilter::default()
    };
    assert_eq!(s.error_count(of_f).unwrap(), 10);
    assert_eq!(
        s.error_count(ErrorFilter {
            include_closed: true,
            ..of_f
        })
        .unwrap(),
        12
    );
    assert_eq!(s.error_count(ErrorFilter::default()).unwrap(), 13);
    let of_r2 = ErrorFilter {
        run: Some(r2),
        include_closed: true,
        ..of_f
    };
    assert_eq!(s.error_count(of_r2).unwrap(), 5);
    assert_eq!(
        s.error_count(ErrorFilter {
            include_closed: false,
            ..of_r2
        })
        .unwrap(),
        4
    );

    // Oldest first: later entries come after the page's last id.
    let ids = |p: &weft_engine::state::Page<weft_engine::state::QueuedError>| {
        p.items.iter().map(|e| e.id).collect::<Vec<_>>()
    };
    let first = s.errors_page(of_f, PageAt::Start, 4).unwrap();
    assert_eq!(ids(&first), open[..4]);
    assert!(!first.lower && first.higher);
    let second = s
        .errors_page(of_f, PageAt::After(*ids(&first).last().unwrap()), 4)
        .unwrap();
    assert_eq!(ids(&second), open[4..8]);
    let third = s
        .errors_page(of_f, PageAt::After(*ids(&second).last().unwrap()), 4)
        .unwrap();
    assert_eq!(ids(&third), open[8..]);
    assert!(third.lower && !third.higher);
    assert_eq!(
        s.errors_page(of_f, PageAt::Before(ids(&third)[0]), 4)
            .unwrap(),
        second
    );
    // A run's entries, closed ones included, and every flow's open ones.
    let run_page = s.errors_page(of_r2, PageAt::Start, 100).unwrap();
    assert_eq!(ids(&run_page), f[7..]);
    assert!(run_page.items.iter().all(|e| e.run == Some(r2)));
    assert!(!run_page.lower && !run_page.higher);
    let everyone = s
        .errors_page(ErrorFilter::default(), PageAt::Start, 100)
        .unwrap();
    assert_eq!(everyone.items.len(), 13);
    assert_eq!(everyone.items, s.errors(None, false).unwrap());
}

both!(a_damaged_row_is_an_error_not_a_panic);

fn a_damaged_row_is_an_error_not_a_panic(db: &Db) {
    let s = db.open();
    let id = s.start_run("f", false, 1).unwrap();
    let e = s
        .queue_error("f", "invoice", "K1", "write", "m", None, 1)
        .unwrap();
    db.damage(
        "UPDATE runs SET summary = 'not json', outcome = 'exploded';
         UPDATE errors SET first_seen_ms = -5;",
    );
    let err = s.run(id).unwrap_err();
    assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("backup"), "{err}");
    assert!(s.runs(None, 5).is_err());
    let err = s.error(e).unwrap_err();
    assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");
}

both!(error_queue_semantics);

fn error_queue_semantics(db: &Db) {
    let s = db.open();
    let run = s.start_run("f", false, 1_000).unwrap();
    let id = s
        .queue_error(
            "f",
            "invoice",
            "K1",
            "write",
            "AccountCode 999 is not valid",
            Some(run),
            1_000,
        )
        .unwrap();
    // A repeat updates the one open entry.
    let again = s
        .queue_error(
            "f",
            "invoice",
            "K1",
            "write",
            "Contact is archived",
            Some(run),
            2_000,
        )
        .unwrap();
    assert_eq!(id, again);
    let e = s.error(id).unwrap().unwrap();
    assert_eq!(e.attempts, 2);
    assert_eq!(e.message, "Contact is archived");
    assert_eq!(e.first_seen_ms, 1_000);
    assert_eq!(e.last_seen_ms, 2_000);
    assert_eq!(e.status, "open");
    assert_eq!(e.run, Some(run));
    assert!(!e.is_closed());

    let other = s
        .queue_error(
            "f",
            "invoice",
            "K2",
            "map",
            "no account code for `travel`",
            None,
            2_500,
        )
        .unwrap();
    let g = s
        .queue_error("g", "invoice", "K1", "write", "x", None, 2_600)
        .unwrap();
    assert_ne!(other, id);
    assert_ne!(g, id);
    assert_eq!(s.errors(None, false).unwrap().len(), 3);
    assert_eq!(s.errors(Some("f"), false).unwrap().len(), 2);

    // Retry: open → retry, once.
    assert!(s.mark_retry(id).unwrap());
    assert!(!s.mark_retry(id).unwrap());
    assert!(!s.mark_retry(999).unwrap());
    assert_eq!(s.retries("f", "invoice").unwrap(), ["K1"]);
    assert!(s.retries("f", "contact").unwrap().is_empty());
    // The retried record fails again: the same entry, open again.
    let third = s
        .queue_error(
            "f",
            "invoice",
            "K1",
            "write",
            "still archived",
            Some(run),
            3_000,
        )
        .unwrap();
    assert_eq!(third, id);
    let e = s.error(id).unwrap().unwrap();
    assert_eq!((e.status.as_str(), e.attempts), ("open", 3));
    assert!(s.retries("f", "invoice").unwrap().is_empty());

    // Then succeeds: fixed (closed).
    assert!(s.mark_retry(id).unwrap());
    s.clear_error("f", "invoice", "K1", 4_000).unwrap();
    let e = s.error(id).unwrap().unwrap();
    assert_eq!(e.status, "fixed");
    assert_eq!(e.closed_ms, Some(4_000));
    assert!(e.is_closed());
    assert!(s.retries("f", "invoice").unwrap().is_empty());
    s.clear_error("f", "invoice", "never-failed", 4_000)
        .unwrap();

    // Resolve with a note; a closed entry cannot be resolved or retried again.
    assert!(
        s.resolve(other, Some("fixed the mapping table"), 5_000)
            .unwrap()
    );
    assert!(!s.resolve(other, None, 6_000).unwrap());
    assert!(!s.mark_retry(other).unwrap());
    let r = s.error(other).unwrap().unwrap();
    assert_eq!(r.status, "resolved");
    assert_eq!(r.note.as_deref(), Some("fixed the mapping table"));
    assert!(!s.resolve(424_242, None, 1).unwrap());

    // Closed entries show only with include_closed; a new failure opens a new entry.
    let open: Vec<i64> = s
        .errors(Some("f"), false)
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert!(open.is_empty(), "{open:?}");
    let all: Vec<i64> = s
        .errors(Some("f"), true)
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(all, [id, other]);
    let fresh = s
        .queue_error("f", "invoice", "K1", "write", "new problem", None, 7_000)
        .unwrap();
    assert_ne!(fresh, id);
    assert_eq!(s.error(fresh).unwrap().unwrap().attempts, 1);
    assert_eq!(s.error(31_337).unwrap(), None);
}

both!(writers_in_threads_and_handles_share_the_database);

fn writers_in_threads_and_handles_share_the_database(db: &Db) {
    let shared = db.open();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let shared = &shared;
            scope.spawn(move || {
                // Two threads use their own handle (as two processes would), two share one.
                let own = (t % 2 == 0).then(|| db.open());
                let s = own.as_ref().unwrap_or(shared);
                for i in 0..50 {
                    let id = format!("T{t}-{i}");
                    s.begin_write("f", "invoice", &id, "v1", &format!("k-{id}"), 1)
                        .unwrap();
                    s.finish_write("f", "invoice", &id, &format!("X-{id}"), "v1", None, 2)
                        .unwrap();
                    s.queue_error("f", "invoice", "same", "write", &id, None, 3)
                        .unwrap();
                    let run = s.start_run("f", false, 4).unwrap();
                    s.finish_run(run, &RunSummary::default(), &RunOutcome::Completed, 5)
                        .unwrap();
                }
            });
        }
    });
    drop(shared);
    let s = db.open();
    assert_eq!(s.links("f", "invoice").unwrap().len(), 200);
    assert_eq!(s.runs(None, 1_000).unwrap().len(), 200);
    let queue = s.errors(None, true).unwrap();
    assert_eq!(queue.len(), 1, "one entry for one record");
    assert_eq!(queue[0].attempts, 200);
}

#[test]
fn a_writer_waits_for_another_process_lock() {
    let dir = Dir::new("busy");
    let s = State::open(&dir.db()).unwrap();
    let path = dir.db();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500));
        conn.execute_batch("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();
    let started = std::time::Instant::now();
    s.set_cursor("f", "invoices", "c").unwrap();
    let waited = started.elapsed();
    holder.join().unwrap();
    assert!(
        waited >= std::time::Duration::from_millis(300),
        "{waited:?}"
    );
    assert!(waited < BUSY_TIMEOUT);
    assert_eq!(s.cursor("f", "invoices").unwrap().as_deref(), Some("c"));
}

#[test]
fn state_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<State>();
}

#[test]
fn postgres_keeps_the_schema_version_migrates_and_refuses_a_newer_one() {
    let Some(pg) = weft_harness::postgres::database("schema") else {
        return;
    };
    let dir = Dir::new("pg-schema");
    let version = || {
        pg.query("SELECT version, application FROM weft_schema")
            .unwrap()
    };
    let s = State::open_postgres(pg.url(), &dir.db()).unwrap();
    assert_eq!(s.backend(), "postgres");
    s.set_cursor("f", "invoices", "c1").unwrap();
    let run = s.start_run("f", true, 1_000).unwrap();
    s.queue_error("f", "invoice", "K1", "write", "refused", Some(run), 1_000)
        .unwrap();
    drop(s);
    assert_eq!(
        version(),
        vec![vec![
            Some(SCHEMA_VERSION.to_string()),
            Some("weft-state".to_owned())
        ]]
    );

    // Version 1 is version 2 without the index of errors by run.
    let has_run_index = || {
        !pg.query("SELECT 1 FROM pg_indexes WHERE indexname = 'errors_by_run'")
            .unwrap()
            .is_empty()
    };
    assert!(has_run_index());
    pg.execute("DROP INDEX errors_by_run; UPDATE weft_schema SET version = 1")
        .unwrap();
    let s = State::open_postgres(pg.url(), &dir.db()).unwrap();
    assert!(has_run_index());
    assert_eq!(
        version()[0][0].as_deref(),
        Some(SCHEMA_VERSION.to_string().as_str())
    );
    assert_eq!(s.cursor("f", "invoices").unwrap().as_deref(), Some("c1"));
    let r = s.run(run).unwrap().unwrap();
    assert!(r.dry_run);
    assert_eq!(s.errors(None, false).unwrap()[0].run, Some(run));
    drop(s);

    pg.execute("UPDATE weft_schema SET version = 99").unwrap();
    let err = State::open_postgres(pg.url(), &dir.db()).unwrap_err();
    assert!(
        matches!(err, StateError::Newer { found: 99, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("upgrade weft"), "{text}");
    assert!(text.contains(pg.name()), "names the database: {text}");
    assert_eq!(version()[0][0].as_deref(), Some("99"), "left unchanged");
}

/// Version 2 is version 3 without a fleet's tables and functions; its fleet made its tables on
/// first use, or had none yet. Migrated, the tables made then keep their rows, the missing ones
/// are made, and the budget functions count in them.
#[test]
fn postgres_version_2_gains_the_fleets_tables_and_functions_and_keeps_their_rows() {
    use weft_engine::limits::{BudgetStore, Taken};
    let Some(pg) = weft_harness::postgres::database("fleet_schema") else {
        return;
    };
    let dir = Dir::new("pg-fleet-schema");
    drop(State::open_postgres(pg.url(), &dir.db()).unwrap());
    let exists = |name: &str| {
        pg.query(&format!(
            "SELECT to_regclass('{name}') IS NOT NULL, to_regproc('{name}') IS NOT NULL"
        ))
        .unwrap()[0]
            .iter()
            .any(|v| v.as_deref() == Some("t"))
    };
    let fleet = [
        "weft_workers",
        "weft_budget_calls",
        "weft_budget_slots",
        "weft_jobs",
        "weft_take_call",
        "weft_observe",
        "weft_take_slot",
        "weft_settle",
    ];
    for name in fleet {
        assert!(exists(name), "{name} is in the schema");
    }
    // A version-2 database whose fleet made three of the tables on first use and used them
    // (its jobs' table as it was then, without streams).
    pg.execute(
        "DROP FUNCTION weft_settle, weft_take_slot, weft_observe, weft_take_call;
         DROP TABLE weft_budget_slots;
         ALTER TABLE weft_jobs DROP COLUMN stream;
         INSERT INTO weft_jobs (flow, status, reason, max_attempts, due_ms, created_ms, updated_ms)
             VALUES ('f', 'queued', 'schedule', 5, 0, 0, 0);
         UPDATE weft_schema SET version = 2;
         INSERT INTO weft_budget_calls (key, at_ms) VALUES ('k', 100), ('k', 150);
         INSERT INTO weft_workers (id, host, pid) VALUES ('w', 'h', 1)",
    )
    .unwrap();
    assert!(!exists("weft_take_call") && !exists("weft_budget_slots"));

    let s = State::open_postgres(pg.url(), &dir.db()).unwrap();
    assert_eq!(
        pg.query("SELECT version FROM weft_schema").unwrap()[0][0].as_deref(),
        Some(SCHEMA_VERSION.to_string().as_str())
    );
    for name in fleet {
        assert!(exists(name), "{name} after the migration");
    }
    assert_eq!(
        pg.query("SELECT count(*) FROM weft_workers WHERE id = 'w'")
            .unwrap()[0][0]
            .as_deref(),
        Some("1")
    );
    assert_eq!(
        pg.query("SELECT stream FROM weft_jobs WHERE flow = 'f'")
            .unwrap(),
        vec![vec![Some(String::new())]],
        "the queued job kept, for every stream"
    );
    let store = weft_engine::fleet::PgBudgets::new(s.postgres().unwrap()).unwrap();
    // The two calls counted before the migration fill the window of two.
    assert_eq!(
        store.take_call("k", 2, 1_000, 200).unwrap(),
        Taken::FullUntil(1_100)
    );
    assert!(matches!(
        store.take_call("k", 2, 1_000, 1_100),
        Ok(Taken::Counted(_))
    ));
    assert_eq!(store.take_slot("s", 1, 0).unwrap(), Some(0));
    drop(store);
    drop(s);

    // Version 3 under a Weft that knows only version 2 is what this one sees of version 4.
    pg.execute("UPDATE weft_schema SET version = 4").unwrap();
    let err = State::open_postgres(pg.url(), &dir.db()).unwrap_err();
    assert!(matches!(err, StateError::Newer { found: 4, .. }), "{err:?}");
}

#[test]
fn a_postgres_database_of_another_application_is_refused_untouched() {
    let Some(pg) = weft_harness::postgres::database("foreign") else {
        return;
    };
    pg.execute("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('mine')")
        .unwrap();
    let dir = Dir::new("pg-foreign");
    let err = State::open_postgres(pg.url(), &dir.db()).unwrap_err();
    assert!(matches!(err, StateError::ForeignDatabase { .. }), "{err:?}");
    assert!(err.to_string().contains("createdb"), "{err}");
    assert_eq!(
        pg.query("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
            .unwrap(),
        vec![vec![Some("1".to_owned())]]
    );
}

#[test]
fn a_bad_or_unreachable_postgres_url_is_named_without_its_password() {
    let dir = Dir::new("pg-unreachable");
    let err = State::open_postgres("mysql://weft:s3cret@127.0.0.1/db", &dir.db()).unwrap_err();
    assert!(matches!(err, StateError::Url { .. }), "{err:?}");
    assert!(!err.to_string().contains("s3cret"), "{err}");
    let err = State::open_postgres(
        "postgres://weft:s3cret@127.0.0.1/db?sslmode=often",
        &dir.db(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("sslmode"), "{err}");
    assert!(!format!("{err} {err:?}").contains("s3cret"), "{err}");

    // A loopback port nobody listens on: refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://weft:s3cret@127.0.0.1:{port}/acme?sslmode=disable");
    let err = State::open_postgres(&url, &dir.db()).unwrap_err();
    assert!(matches!(err, StateError::Connect { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("postgres://weft@127.0.0.1:{port}/acme")),
        "{text}"
    );
    assert!(text.contains("WEFT_STATE_URL"), "{text}");
    assert!(!format!("{text} {err:?}").contains("s3cret"), "{text}");
}

#[test]
fn a_copy_to_postgres_is_checked_resumable_and_refuses_another_workspaces_database() {
    let Some(pg) = weft_harness::postgres::database("copy") else {
        return;
    };
    let dir = Dir::new("copy-source");
    let lite = State::open(&dir.db()).unwrap();
    let done: Vec<(String, String)> = (0..1_200)
        .map(|i| (format!("K{i:04}"), format!("X{i:04}")))
        .collect();
    let rows: Vec<WriteDone<'_>> = done
        .iter()
        .map(|(k, x)| WriteDone {
            source_id: k,
            dest_id: x,
            source_version: "v1",
            dest_version: Some("d1"),
        })
        .collect();
    lite.finish_writes("f", "invoice", &rows, 10).unwrap();
    lite.begin_write("f", "invoice", "K9999", "v2", "key-1", 11)
        .unwrap();
    lite.set_cursor("f", "invoices", "2026-01-01").unwrap();
    let run = lite.start_run("f", true, 12).unwrap();
    lite.finish_run(run, &RunSummary::default(), &RunOutcome::Completed, 13)
        .unwrap();
    lite.queue_error("f", "invoice", "K0001", "write", "no", Some(run), 14)
        .unwrap();
    let id = lite.source_id().unwrap();
    assert_eq!(lite.source_id().unwrap(), id, "kept in state.id");

    // Interrupted after the first page of links.
    let target = State::open_postgres(pg.url(), &dir.db()).unwrap();
    let cut = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lite.copy_to(&target, &id, |table, n| {
            assert!(!(table == "links" && n >= 500), "interrupted");
        })
    }));
    assert!(cut.is_err());
    assert_eq!(
        pg.query("SELECT count(*) FROM links").unwrap()[0][0].as_deref(),
        Some("500")
    );

    let report = lite.copy_to(&target, &id, |_, _| {}).unwrap();
    assert!(report.resumed);
    assert!(report.complete(), "{report:?}");
    let links = report.tables.iter().find(|t| t.table == "links").unwrap();
    assert_eq!((links.source_rows, links.target_rows), (1_201, 1_201));
    // Once more: nothing doubles.
    assert!(lite.copy_to(&target, &id, |_, _| {}).unwrap().complete());
    assert_eq!(
        target.links("f", "invoice").unwrap(),
        lite.links("f", "invoice").unwrap()
    );
    assert_eq!(target.runs(None, 10).unwrap(), lite.runs(None, 10).unwrap());
    assert_eq!(
        target.errors(None, true).unwrap(),
        lite.errors(None, true).unwrap()
    );
    // Ids drawn after the copy follow the copied ones.
    assert_eq!(target.start_run("f", false, 20).unwrap(), run + 1);

    // Another workspace's copy into the same database is refused, untouched.
    let other = Dir::new("copy-other");
    let stranger = State::open(&other.db()).unwrap();
    stranger.set_cursor("g", "s", "x").unwrap();
    let err = stranger
        .copy_to(&target, &stranger.source_id().unwrap(), |_, _| {})
        .unwrap_err();
    assert!(matches!(err, StateError::OtherWorkspace { .. }), "{err:?}");
    assert_eq!(target.cursor("g", "s").unwrap(), None);

    // So is a database filled without a copy.
    let Some(used) = weft_harness::postgres::database("copy_used") else {
        return;
    };
    let used_state = State::open_postgres(used.url(), &other.db()).unwrap();
    used_state.set_cursor("g", "s", "y").unwrap();
    let err = lite.copy_to(&used_state, &id, |_, _| {}).unwrap_err();
    assert!(matches!(err, StateError::OtherWorkspace { .. }), "{err:?}");
}

#[test]
fn connections_the_server_ends_are_replaced_without_an_error() {
    let Some(pg) = weft_harness::postgres::database("lost") else {
        return;
    };
    let dir = Dir::new("pg-lost");
    let s = State::open_postgres(pg.url(), &dir.db()).unwrap();
    for round in 0..3 {
        // Idle connections in the pool, then the server ends them all (as a restart or an idle
        // timeout would).
        std::thread::scope(|scope| {
            for t in 0..3 {
                let s = &s;
                scope.spawn(move || s.set_cursor("f", &format!("s{t}"), "x").unwrap());
            }
        });
        pg.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .unwrap();
        let value = format!("after-{round}");
        s.set_cursor("f", "s0", &value).unwrap();
        assert_eq!(s.cursor("f", "s0").unwrap(), Some(value));
        let run = s.start_run("f", false, 1).unwrap();
        assert!(s.run(run).unwrap().is_some());
    }
}

#[test]
fn tls_to_postgres_follows_the_sslmode() {
    let Some(server) = weft_harness::postgres::tls_server() else {
        return;
    };
    let dir = Dir::new("pg-tls");
    let port = server.port();
    let ca = server.ca();
    let ca = ca.display();
    let url = |host: &str, query: &str| {
        format!("postgres://postgres@{host}:{port}/postgres?hostaddr=127.0.0.1&{query}")
    };
    let encrypted = |state: &State| -> bool {
        state
            .postgres()
            .unwrap()
            .run(|c| async move {
                c.query_one(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )
                .await
                .map(|r| r.get::<_, bool>(0))
            })
            .unwrap()
    };
    // Encrypted, the certificate not checked; checked against the CA with the host name; the
    // chain only; and no TLS at all.
    for (host, query, tls) in [
        ("localhost", "sslmode=require".to_owned(), true),
        ("localhost", "sslmode=prefer".to_owned(), true),
        (
            "localhost",
            format!("sslmode=verify-full&sslrootcert={ca}"),
            true,
        ),
        (
            "127.0.0.1",
            format!("sslmode=verify-ca&sslrootcert={ca}"),
            true,
        ),
        ("localhost", "sslmode=disable".to_owned(), false),
    ] {
        let s = State::open_postgres(&url(host, &query), &dir.db())
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        s.set_cursor("f", "s", &query).unwrap();
        assert_eq!(encrypted(&s), tls, "{query}");
    }
    // A certificate for another name, or from a CA the system does not trust, is refused.
    for (host, query, says) in [
        (
            "127.0.0.1",
            format!("sslmode=verify-full&sslrootcert={ca}"),
            "certificate",
        ),
        ("localhost", "sslmode=verify-full".to_owned(), "certificate"),
    ] {
        let err = State::open_postgres(&url(host, &query), &dir.db()).unwrap_err();
        assert!(
            matches!(err, StateError::Connect { .. }),
            "{query}: {err:?}"
        );
        assert!(err.to_string().contains(says), "{query}: {err}");
    }
}

/// Workers of a fleet started together on a new database: each opens the state, one creates
/// it and the others wait for it and find it Weft's (before the fix, a process that waited for
/// the migration lock still saw no `weft_schema` in its stale catalog cache, counted the tables
/// the first had just made, and refused the database as another application's).
#[test]
fn processes_opening_a_new_postgres_database_at_once_all_find_it_weft_s() {
    for round in 0..4 {
        let Some(pg) = weft_harness::postgres::database(&format!("at_once_{round}")) else {
            return;
        };
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
        let openers: Vec<_> = (0..4)
            .map(|i| {
                let (url, barrier) = (pg.url().to_owned(), barrier.clone());
                std::thread::spawn(move || {
                    let dir = Dir::new(&format!("at-once-{round}-{i}"));
                    barrier.wait();
                    State::open_postgres(&url, &dir.db()).map(drop)
                })
            })
            .collect();
        for opener in openers {
            let opened = opener.join().unwrap();
            assert!(opened.is_ok(), "round {round}: {opened:?}");
        }
    }
}
