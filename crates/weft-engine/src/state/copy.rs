//! Copying a workspace's state from one database to another (`weft state migrate`): every
//! table in key order, a page per transaction, each row written by its key (so a second run
//! after an interruption rewrites what it had copied and adds the rest, never a second copy),
//! then each table counted and checksummed on both sides.
//!
//! A target remembers which source it was filled from (`weft_schema.source`, the id in the
//! source's `state.id` file beside the SQLite file): a target holding another workspace's
//! state, or state that was not copied into it, is refused before anything is written.

use sha2::{Digest as _, Sha256};

use super::sql::{Fail, Row, Tx, Value, vals};
use super::{Backend, State, StateError};

/// Rows per transaction.
const PAGE: usize = 500;

/// A table of the state: its columns (the key's first) and its key.
struct Table {
    name: &'static str,
    columns: &'static [&'static str],
    key: usize,
}

const TABLES: &[Table] = &[
    Table {
        name: "cursors",
        columns: &["flow", "stream", "value", "updated_ms"],
        key: 2,
    },
    Table {
        name: "links",
        columns: &[
            "flow",
            "kind",
            "source_id",
            "dest_id",
            "source_version",
            "dest_version",
            "pending_key",
            "pending_version",
            "pending_since_ms",
            "note",
            "updated_ms",
        ],
        key: 3,
    },
    Table {
        name: "runs",
        columns: &[
            "id",
            "flow",
            "dry_run",
            "started_ms",
            "finished_ms",
            "summary",
            "outcome",
            "reason",
        ],
        key: 1,
    },
    Table {
        name: "errors",
        columns: &[
            "id",
            "flow",
            "kind",
            "source_id",
            "stage",
            "message",
            "status",
            "attempts",
            "first_seen_ms",
            "last_seen_ms",
            "run",
            "note",
            "closed_ms",
        ],
        key: 1,
    },
];

/// One table's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCopy {
    /// The table.
    pub table: &'static str,
    /// Rows in the source.
    pub source_rows: u64,
    /// Rows in the target after the copy.
    pub target_rows: u64,
    /// Whether both sides' SHA-256 over every row (in key order) agree.
    pub checksums_match: bool,
}

/// What a copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Each table, in copy order.
    pub tables: Vec<TableCopy>,
    /// Whether this run went on from an earlier, interrupted one into the same target.
    pub resumed: bool,
}

impl CopyReport {
    /// Whether every table arrived whole.
    pub fn complete(&self) -> bool {
        self.tables
            .iter()
            .all(|t| t.source_rows == t.target_rows && t.checksums_match)
    }
}

impl State {
    /// Copies this state (cursors, ledger, runs, error queue) into `target`, then compares
    /// both. `source_id` names this state (see [`State::source_id`]); `progress` hears each table
    /// and the rows copied so far.
    pub fn copy_to(
        &self,
        target: &State,
        source_id: &str,
        mut progress: impl FnMut(&str, u64),
    ) -> Result<CopyReport, StateError> {
        let resumed = target.claim(source_id)?;
        let mut tables = Vec::new();
        for table in TABLES {
            let mut after: Option<Vec<Value>> = None;
            let mut copied = 0u64;
            loop {
                let rows = self.read("read the rows to copy", |tx| {
                    page(tx, table, after.as_deref())
                })?;
                let Some(last) = rows.last() else { break };
                after = Some(last.0[..table.key].to_vec());
                target.write("copy rows", |tx| {
                    for row in &rows {
                        tx.exec(&upsert(table), &row.0)?;
                    }
                    Ok(())
                })?;
                copied += rows.len() as u64;
                progress(table.name, copied);
                if rows.len() < PAGE {
                    break;
                }
            }
            if table.columns[0] == "id"
                && let Backend::Postgres(_) = &target.db
            {
                // Copied ids were given, not drawn: the next run or entry draws after them.
                target.write("move the id counter past the copied rows", |tx| {
                    tx.rows(
                        &format!(
                            "SELECT setval(pg_get_serial_sequence('{0}', 'id'), COALESCE((SELECT max(id) FROM {0}), 0) + 1, false)",
                            table.name
                        ),
                        &[],
                    )?;
                    Ok(())
                })?;
            }
            let (source_rows, source_sum) =
                self.read("checksum the copy", |tx| digest(tx, table))?;
            let (target_rows, target_sum) =
                target.read("checksum the copy", |tx| digest(tx, table))?;
            tables.push(TableCopy {
                table: table.name,
                source_rows,
                target_rows,
                checksums_match: source_sum == target_sum,
            });
        }
        Ok(CopyReport { tables, resumed })
    }

    /// Marks this (target) database as filled from `source_id`: refused when it holds another
    /// source's state, or rows without a source. True when it was already this source's (a
    /// copy resumed).
    fn claim(&self, source_id: &str) -> Result<bool, StateError> {
        self.write("claim the database for the copy", |tx| {
            let marked = match &self.db {
                Backend::Postgres(_) => tx
                    .one("SELECT source FROM weft_schema FOR UPDATE", &[])?
                    .opt_text(0)?,
                Backend::Sqlite(_) => None,
            };
            match marked {
                Some(id) if id == source_id => return Ok(true),
                Some(_) => {
                    return Err(Fail::State(StateError::OtherWorkspace {
                        at: self.at.clone(),
                    }));
                }
                None => {}
            }
            for table in TABLES {
                let n = tx
                    .one(&format!("SELECT COUNT(*) FROM {}", table.name), &[])?
                    .int(0)?;
                if n > 0 {
                    return Err(Fail::State(StateError::OtherWorkspace {
                        at: self.at.clone(),
                    }));
                }
            }
            if let Backend::Postgres(_) = &self.db {
                tx.exec("UPDATE weft_schema SET source = ?1", vals![source_id])?;
            }
            Ok(false)
        })
    }

    /// The id of this workspace's local state, kept in `state.id` beside the state file and made
    /// at the first call: what a copy's target remembers its source by.
    pub fn source_id(&self) -> Result<String, StateError> {
        let path = self.path.with_file_name("state.id");
        let fail = |source: std::io::Error| StateError::Folder {
            at: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_owned()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail(e)),
        }
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|e| fail(std::io::Error::other(e.to_string())))?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        crate::files::write_atomic(&path, id.as_bytes(), false).map_err(fail)?;
        Ok(id)
    }
}

/// The page of `table` after key `after` (from the start without one), in key order.
fn page(tx: &mut dyn Tx, table: &Table, after: Option<&[Value]>) -> Result<Vec<Row>, Fail> {
    let key = table.columns[..table.key].join(", ");
    let columns = table.columns.join(", ");
    match after {
        None => tx.rows(
            &format!(
                "SELECT {columns} FROM {} ORDER BY {key} LIMIT {PAGE}",
                table.name
            ),
            &[],
        ),
        Some(after) => {
            let marks: Vec<String> = (1..=after.len()).map(|i| format!("?{i}")).collect();
            tx.rows(
                &format!(
                    "SELECT {columns} FROM {} WHERE ({key}) > ({}) ORDER BY {key} LIMIT {PAGE}",
                    table.name,
                    marks.join(", ")
                ),
                after,
            )
        }
    }
}

/// The statement writing one row of `table` by its key.
fn upsert(table: &Table) -> String {
    let marks: Vec<String> = (1..=table.columns.len()).map(|i| format!("?{i}")).collect();
    let sets: Vec<String> = table.columns[table.key..]
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}",
        table.name,
        table.columns.join(", "),
        marks.join(", "),
        table.columns[..table.key].join(", "),
        sets.join(", ")
    )
}

/// How many rows `table` holds and a SHA-256 over all of them in key order, each value in a
/// form both backends give alike (a flag as the integer SQLite stores).
fn digest(tx: &mut dyn Tx, table: &Table) -> Result<(u64, [u8; 32]), Fail> {
    let mut sum = Sha256::new();
    let mut rows = 0u64;
    let mut after: Option<Vec<Value>> = None;
    loop {
        let page = page(tx, table, after.as_deref())?;
        for row in &page {
            for v in &row.0 {
                match v {
                    Value::Null => sum.update(b"N;"),
                    Value::Int(i) => sum.update(format!("I{i};")),
                    Value::Bool(b) => sum.update(format!("I{};", i64::from(*b))),
                    Value::Text(t) => sum.update(format!("T{}:{t};", t.len())),
                    Value::Other(what) => sum.update(format!("O{what};")),
                }
            }
            sum.update(b"\n");
        }
        rows += page.len() as u64;
        match page.last() {
            Some(last) if page.len() == PAGE => after = Some(last.0[..table.key].to_vec()),
            _ => break,
        }
    }
    Ok((rows, sum.finalize().into()))
}
