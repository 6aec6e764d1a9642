//! Mapping tables: their CSV files (M-Bridge's four columns, or two named columns), the rules a
//! table's rows follow (one row per key, non-empty ids, one-to-one when the table says so), the
//! M-Bridge CSV written by `weft tables import`, and the proposals of `weft tables suggest`
//! (names matched after normalising, emails first).
//!
//! Every bad row is a [`FlowProblem`] with its file and line and what to do.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::flow::{FlowProblem, TableSide};

/// M-Bridge's column of the Kantata (Mavenlink) display name.
pub const MAVENLINK_NAME: &str = "Mavenlink Display Name";
/// M-Bridge's column of the Kantata (Mavenlink) id: the table's key.
pub const MAVENLINK_ID: &str = "Mavenlink ID";
/// M-Bridge's column of the external system's display name.
pub const EXTERNAL_NAME: &str = "External Display Name";
/// M-Bridge's column of the external system's id: the table's value.
pub const EXTERNAL_ID: &str = "External ID";

/// One row of a table, with where it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableRow {
    /// The key (M-Bridge's `Mavenlink ID`).
    pub key: String,
    /// The value (M-Bridge's `External ID`).
    pub value: String,
    /// The key's display name, when the file has one.
    pub key_name: String,
    /// The value's display name, when the file has one.
    pub value_name: String,
    /// The file the row is in (the flow file for inline rows).
    pub file: String,
    /// Its line, from 1 (0 when unknown).
    pub line: usize,
}

/// The columns a table file is read with.
#[derive(Debug, Clone, Copy, Default)]
pub struct Columns<'a> {
    /// The table's `key-column`, when it names one.
    pub key: Option<&'a str>,
    /// The table's `value-column`, when it names one.
    pub value: Option<&'a str>,
}

/// A header name as compared: case and surrounding spaces do not matter.
fn header_name(name: &str) -> String {
    name.trim()
        .trim_start_matches('\u{feff}')
        .trim()
        .to_lowercase()
}

/// Reads a table file: the rows of a CSV file with a header row, M-Bridge's columns when the
/// header has `Mavenlink ID` and `External ID` (unless `columns` names others), else
/// `columns` (`key` and `value` by default). Every bad row is a located problem: a row with
/// the wrong number of cells, an empty id, a key that appears twice.
pub fn read_file(path: &Path, columns: Columns<'_>) -> Result<Vec<TableRow>, Vec<FlowProblem>> {
    let shown = shown(path).display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(vec![problem(
                &shown,
                0,
                format!(
                    "the table file does not exist; create it (a header row `{MAVENLINK_NAME},{MAVENLINK_ID},{EXTERNAL_NAME},{EXTERNAL_ID}`, then a row per mapping) or fix the table's `file`"
                ),
            )]);
        }
        Err(e) => {
            return Err(vec![problem(
                &shown,
                0,
                format!("cannot read the table: {e}"),
            )]);
        }
    };
    read_bytes(&shown, &bytes, columns)
}

/// A path as shown in messages: `flows/../tables/x.csv` as `tables/x.csv` (files are opened
/// by the path as written, which the system resolves).
pub fn shown(path: &Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut clean = std::path::PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir
                if matches!(clean.components().next_back(), Some(Component::Normal(_))) =>
            {
                clean.pop();
            }
            Component::CurDir => {}
            other => clean.push(other),
        }
    }
    clean
}

fn problem(file: &str, line: usize, message: String) -> FlowProblem {
    FlowProblem {
        file: file.to_owned(),
        line,
        column: if line == 0 { 0 } else { 1 },
        message,
    }
}

/// [`read_file`] on text already read (`shown` names it in problems).
pub fn read_bytes(
    shown: &str,
    bytes: &[u8],
    columns: Columns<'_>,
) -> Result<Vec<TableRow>, Vec<FlowProblem>> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .has_headers(false)
        .from_reader(bytes);
    let mut records = reader.records();
    let headers = match records.next() {
        None => {
            return Err(vec![problem(
                shown,
                1,
                format!(
                    "the file is empty; it needs a header row (`{MAVENLINK_NAME},{MAVENLINK_ID},{EXTERNAL_NAME},{EXTERNAL_ID}`)"
                ),
            )]);
        }
        Some(Err(e)) => {
            return Err(vec![problem(
                shown,
                1,
                format!("the header row cannot be read: {}", csv_error(&e)),
            )]);
        }
        Some(Ok(h)) => h,
    };
    let names: Vec<String> = headers.iter().map(header_name).collect();
    let find = |name: &str| names.iter().position(|h| *h == header_name(name));
    let mut problems = Vec::new();
    for (i, n) in names.iter().enumerate() {
        if !n.is_empty() && names[..i].contains(n) {
            problems.push(problem(
                shown,
                1,
                format!(
                    "the header row names the column `{}` twice; rename or delete one",
                    headers.get(i).unwrap_or_default()
                ),
            ));
        }
    }
    let mbridge = find(MAVENLINK_ID).is_some() && find(EXTERNAL_ID).is_some();
    let (key_col, value_col) = match (columns.key, columns.value) {
        (None, None) if mbridge => (MAVENLINK_ID, EXTERNAL_ID),
        (k, v) => (k.unwrap_or("key"), v.unwrap_or("value")),
    };
    let (Some(k), Some(v)) = (find(key_col), find(value_col)) else {
        let had = headers.iter().collect::<Vec<_>>().join(", ");
        let wanted = if columns.key.is_none() && columns.value.is_none() {
            format!(
                "`{MAVENLINK_ID}` and `{EXTERNAL_ID}` (M-Bridge's columns, with `{MAVENLINK_NAME}` and `{EXTERNAL_NAME}` optional) or `key` and `value`"
            )
        } else {
            format!("`{key_col}` and `{value_col}` (the table's key-column and value-column)")
        };
        problems.push(problem(
            shown,
            1,
            format!("the header row must name the columns {wanted}; it has: {had}"),
        ));
        return Err(problems);
    };
    let (key_name_col, value_name_col) = if mbridge
        && header_name(key_col) == header_name(MAVENLINK_ID)
        && header_name(value_col) == header_name(EXTERNAL_ID)
    {
        (find(MAVENLINK_NAME), find(EXTERNAL_NAME))
    } else {
        (None, None)
    };
    let width = headers.len();
    let mut rows: Vec<TableRow> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for record in records {
        let r = match record {
            Err(e) => {
                let line = e.position().map_or(0, |p| line_at(bytes, p.byte()));
                problems.push(problem(
                    shown,
                    line,
                    format!("unreadable row: {}", csv_error(&e)),
                ));
                continue;
            }
            Ok(r) => r,
        };
        let line = r.position().map_or(0, |p| line_at(bytes, p.byte()));
        // A blank line is not a row.
        if r.iter().all(str::is_empty) {
            continue;
        }
        if r.len() != width {
            problems.push(problem(
                shown,
                line,
                format!(
                    "the row has {} cell(s) but the header has {width}; a value holding a comma must be in double quotes",
                    r.len()
                ),
            ));
            continue;
        }
        let cell = |i: usize| r.get(i).unwrap_or_default().to_owned();
        let (key, value) = (cell(k), cell(v));
        let mut bad = false;
        for (text, column) in [(&key, key_col), (&value, value_col)] {
            if text.is_empty() {
                bad = true;
                problems.push(problem(
                    shown,
                    line,
                    format!("`{column}` is empty; fill it in or delete the row"),
                ));
            }
        }
        if bad {
            continue;
        }
        if let Some(first) = seen.get(&key) {
            problems.push(problem(
                shown,
                line,
                format!(
                    "`{key}` appears twice (first on line {first}); a key maps to one value, so keep one of the rows"
                ),
            ));
            continue;
        }
        seen.insert(key.clone(), line);
        rows.push(TableRow {
            key,
            value,
            key_name: key_name_col.map(cell).unwrap_or_default(),
            value_name: value_name_col.map(cell).unwrap_or_default(),
            file: shown.to_owned(),
            line,
        });
    }
    if problems.is_empty() {
        Ok(rows)
    } else {
        Err(problems)
    }
}

/// The line (from 1) of byte `offset` (the csv crate's own line count leaves out blank lines).
fn line_at(bytes: &[u8], offset: u64) -> usize {
    let mut end = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    // A record after blank lines starts where they do.
    while matches!(bytes.get(end), Some(b'\n' | b'\r')) {
        end += 1;
    }
    1 + bytes[..end].iter().filter(|&&b| b == b'\n').count()
}

/// A CSV error without the crate's position prefix where it has one of its own.
fn csv_error(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => {
            "it is not UTF-8 text; save the file as CSV UTF-8".to_owned()
        }
        _ => e.to_string(),
    }
}

/// The rows of a table: its inline rows, then its file's, a file row replacing the inline row
/// of the same key.
pub fn merge(inline: Vec<TableRow>, file: Vec<TableRow>) -> Vec<TableRow> {
    let from_file: std::collections::HashSet<String> = file.iter().map(|r| r.key.clone()).collect();
    inline
        .into_iter()
        .filter(|r| !from_file.contains(&r.key))
        .chain(file)
        .collect()
}

/// A one-to-one table's rule: each value is mapped from one key only. Every value mapped from
/// several keys is a problem at its second row, naming both.
pub fn check_one_to_one(table: &str, rows: &[TableRow]) -> Vec<FlowProblem> {
    let mut first: HashMap<&str, &TableRow> = HashMap::new();
    let mut problems = Vec::new();
    for row in rows {
        match first.get(row.value.as_str()) {
            None => {
                first.insert(&row.value, row);
            }
            Some(earlier) => problems.push(FlowProblem {
                file: row.file.clone(),
                line: row.line,
                column: if row.line == 0 { 0 } else { 1 },
                message: format!(
                    "`{}` is mapped from both `{}` ({}:{}) and `{}` (here); table `{table}` is one-to-one, so keep one of the rows (or set `one-to-one = false` if several keys may share a value)",
                    row.value, earlier.key, earlier.file, earlier.line, row.key
                ),
            }),
        }
    }
    problems
}

/// Rows as a CSV file in M-Bridge's four columns, a header row first.
pub fn to_csv(rows: &[TableRow]) -> Vec<u8> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let mut write = || -> Result<(), csv::Error> {
        writer.write_record([MAVENLINK_NAME, MAVENLINK_ID, EXTERNAL_NAME, EXTERNAL_ID])?;
        for r in rows {
            writer.write_record([&r.key_name, &r.key, &r.value_name, &r.value])?;
        }
        writer.flush()?;
        Ok(())
    };
    // Writing to memory fails only if the allocator does.
    let _ = write();
    writer.into_inner().unwrap_or_default()
}

/// A name as compared by suggestions: lower case, punctuation removed, spaces collapsed.
pub fn normalise(name: &str) -> String {
    let kept: String = name
        .chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect();
    kept.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A listed record as one side of a table sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SideRecord {
    /// Its id (what goes in the table).
    pub key: String,
    /// Its display name.
    pub name: String,
    /// Its email address, when the side gives one.
    pub email: Option<String>,
}

/// Reads a listed record by the side's expressions (`found` is the record; `options` and
/// `tables` as in the flow). `Ok(None)` for a record whose key is empty.
pub fn side_record(
    side: &TableSide,
    found: &Value,
    options: &Value,
    tables: &Value,
) -> Result<Option<SideRecord>, String> {
    let ctx = minijinja::Value::from_serialize(serde_json::json!({
        "found": found, "options": options, "tables": tables,
    }));
    let text = |what: &str, expr: &str| -> Result<String, String> {
        let found = crate::mapping::value(what, expr, &ctx).map_err(|e| {
            if e.contains("or ''") {
                e
            } else {
                format!("{e}; write `… or ''` where a field may be missing")
            }
        })?;
        Ok(match found {
            None => String::new(),
            Some(Value::String(s)) => s.trim().to_owned(),
            Some(other) => other.to_string(),
        })
    };
    let key = text("key", &side.key)?;
    if key.is_empty() {
        return Ok(None);
    }
    let name = text("name", &side.name)?;
    let email = match &side.email {
        Some(e) => Some(text("email", e)?).filter(|e| !e.is_empty()),
        None => None,
    };
    Ok(Some(SideRecord { key, name, email }))
}

/// How a proposed row was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum Match {
    /// Already in the table; kept as it is.
    Kept,
    /// The same email address on both sides.
    Email,
    /// The same name on both sides (after normalising).
    Name,
    /// Several records of the other side fit; a person must choose.
    Ambiguous {
        /// The candidates (id and name).
        candidates: Vec<SideRecord>,
        /// Why it is ambiguous.
        reason: String,
    },
    /// Nothing of the other side fits.
    Unmatched,
}

/// A proposed row of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Proposal {
    /// The left record.
    pub left: SideRecord,
    /// The right record chosen, when there is one.
    pub right: Option<SideRecord>,
    /// How.
    #[serde(flatten)]
    pub how: Match,
}

impl Proposal {
    /// The table row it stands for, when it has a value.
    pub fn row(&self) -> Option<TableRow> {
        self.right.as_ref().map(|r| TableRow {
            key: self.left.key.clone(),
            value: r.key.clone(),
            key_name: self.left.name.clone(),
            value_name: r.name.clone(),
            file: String::new(),
            line: 0,
        })
    }
}

/// Proposes a row for each left record: the existing row when the table has the key (kept),
/// else the right record with the same email (when both give one), else the one with the same
/// normalised name; several fitting records, or (in a one-to-one table) a right record already
/// taken or wanted by several left records, make it ambiguous. Left records in the order
/// given; keys of the table that no left record has are kept at the end.
pub fn propose(
    existing: &[TableRow],
    left: &[SideRecord],
    right: &[SideRecord],
    one_to_one: bool,
) -> Vec<Proposal> {
    let mut by_email: BTreeMap<String, Vec<&SideRecord>> = BTreeMap::new();
    let mut by_name: BTreeMap<String, Vec<&SideRecord>> = BTreeMap::new();
    let mut right_by_key: HashMap<&str, &SideRecord> = HashMap::new();
    for r in right {
        if let Some(e) = &r.email {
            by_email.entry(e.trim().to_lowercase()).or_default().push(r);
        }
        let n = normalise(&r.name);
        if !n.is_empty() {
            by_name.entry(n).or_default().push(r);
        }
        right_by_key.entry(&r.key).or_insert(r);
    }
    let existing_by_key: HashMap<&str, &TableRow> =
        existing.iter().map(|r| (r.key.as_str(), r)).collect();
    let mut out: Vec<Proposal> = Vec::new();
    let mut seen_left = std::collections::HashSet::new();
    for l in left {
        if !seen_left.insert(l.key.clone()) {
            continue;
        }
        if let Some(row) = existing_by_key.get(l.key.as_str()) {
            let right = right_by_key.get(row.value.as_str()).map_or_else(
                || SideRecord {
                    key: row.value.clone(),
                    name: row.value_name.clone(),
                    email: None,
                },
                |r| (*r).clone(),
            );
            out.push(Proposal {
                left: l.clone(),
                right: Some(right),
                how: Match::Kept,
            });
            continue;
        }
        let email = l
            .email
            .as_ref()
            .and_then(|e| by_email.get(&e.trim().to_lowercase()));
        let (found, how) = match email {
            Some(found) => (found.clone(), Match::Email),
            None => (
                by_name
                    .get(&normalise(&l.name))
                    .cloned()
                    .unwrap_or_default(),
                Match::Name,
            ),
        };
        out.push(match found.as_slice() {
            [] => Proposal {
                left: l.clone(),
                right: None,
                how: Match::Unmatched,
            },
            [one] => Proposal {
                left: l.clone(),
                right: Some((*one).clone()),
                how,
            },
            many => Proposal {
                left: l.clone(),
                right: None,
                how: Match::Ambiguous {
                    candidates: many.iter().map(|r| (*r).clone()).collect(),
                    reason: format!(
                        "{} records have this {}",
                        many.len(),
                        if how == Match::Email { "email" } else { "name" }
                    ),
                },
            },
        });
    }
    for row in existing {
        if !seen_left.contains(&row.key) {
            seen_left.insert(row.key.clone());
            out.push(Proposal {
                left: SideRecord {
                    key: row.key.clone(),
                    name: row.key_name.clone(),
                    email: None,
                },
                right: Some(SideRecord {
                    key: row.value.clone(),
                    name: row.value_name.clone(),
                    email: None,
                }),
                how: Match::Kept,
            });
        }
    }
    if one_to_one {
        // A value kept in the table, or proposed for several keys, cannot be proposed again.
        let mut wanted: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, p) in out.iter().enumerate() {
            if let Some(r) = &p.right {
                wanted.entry(r.key.clone()).or_default().push(i);
            }
        }
        for indexes in wanted.values() {
            if indexes.len() < 2 {
                continue;
            }
            let kept: Vec<String> = indexes
                .iter()
                .filter(|&&i| out[i].how == Match::Kept)
                .map(|&i| out[i].left.key.clone())
                .collect();
            for &i in indexes {
                if out[i].how == Match::Kept {
                    continue;
                }
                let Some(r) = out[i].right.take() else {
                    continue;
                };
                let reason = if kept.is_empty() {
                    format!(
                        "`{}` fits {} keys and the table is one-to-one",
                        r.key,
                        indexes.len()
                    )
                } else {
                    format!(
                        "`{}` is already mapped from `{}` and the table is one-to-one",
                        r.key,
                        kept.join("`, `")
                    )
                };
                out[i].how = Match::Ambiguous {
                    candidates: vec![r],
                    reason,
                };
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(key: &str, name: &str, email: Option<&str>) -> SideRecord {
        SideRecord {
            key: key.to_owned(),
            name: name.to_owned(),
            email: email.map(str::to_owned),
        }
    }

    #[test]
    fn names_are_compared_without_case_punctuation_or_extra_spaces() {
        assert_eq!(normalise("  O'Brien,   Anne. "), "obrien anne");
        assert_eq!(normalise("ACME  Ltd"), normalise("Acme Ltd."));
        assert_eq!(normalise("Zoë Ærø"), "zoë ærø");
    }

    #[test]
    fn proposals_keep_rows_prefer_email_and_mark_ambiguity() {
        let existing = vec![TableRow {
            key: "1".into(),
            value: "x9".into(),
            key_name: "Kept One".into(),
            value_name: "X Nine".into(),
            file: "t.csv".into(),
            line: 2,
        }];
        let left = vec![
            side("1", "Kept One", None),
            side("2", "Ann Lee", Some("ann@example.com")),
            side("3", "bob  smith", None),
            side("4", "Cy Twin", None),
            side("5", "Nobody", None),
        ];
        let right = vec![
            side("x1", "Someone Else", Some("ANN@example.com ")),
            side("x2", "Ann Lee", None),
            side("x3", "Bob Smith.", None),
            side("x4", "Cy Twin", None),
            side("x5", "cy twin", None),
        ];
        let p = propose(&existing, &left, &right, false);
        assert_eq!(p[0].how, Match::Kept);
        assert_eq!(p[0].right.as_ref().unwrap().key, "x9");
        assert_eq!(
            (p[1].how.clone(), p[1].right.clone().unwrap().key),
            (Match::Email, "x1".into())
        );
        assert_eq!(
            (p[2].how.clone(), p[2].right.clone().unwrap().key),
            (Match::Name, "x3".into())
        );
        assert!(matches!(&p[3].how, Match::Ambiguous { candidates, .. } if candidates.len() == 2));
        assert_eq!(p[4].how, Match::Unmatched);
        assert_eq!(p.iter().filter_map(Proposal::row).count(), 3);
    }

    #[test]
    fn a_side_reads_records_by_its_expressions() {
        let side = TableSide {
            connection: "a".into(),
            resource: "r".into(),
            params: BTreeMap::new(),
            key: "found.id".into(),
            name: "found.first ~ ' ' ~ found.last".into(),
            email: Some("found.mail or ''".into()),
        };
        let none = Value::Null;
        let record = serde_json::json!({"id": 7, "first": " Ann", "last": "Lee "});
        let read = side_record(&side, &record, &none, &none).unwrap().unwrap();
        assert_eq!(
            read,
            super::SideRecord {
                key: "7".into(),
                name: "Ann Lee".into(),
                email: None
            }
        );
        let no_key = serde_json::json!({"id": "", "first": "A", "last": "B"});
        assert_eq!(side_record(&side, &no_key, &none, &none).unwrap(), None);
        // A field the record does not have is an error saying what to write.
        let missing = serde_json::json!({"id": 8, "first": "A"});
        let e = side_record(&side, &missing, &none, &none).unwrap_err();
        assert!(e.contains("name") && e.contains("or ''"), "{e}");
    }

    #[test]
    fn a_one_to_one_table_never_proposes_a_value_twice() {
        let existing = vec![TableRow {
            key: "1".into(),
            value: "x1".into(),
            key_name: String::new(),
            value_name: String::new(),
            file: "t.csv".into(),
            line: 2,
        }];
        let left = vec![
            side("2", "Ann", None),
            side("3", "Bo", None),
            side("4", "bo", None),
        ];
        let right = vec![side("x1", "Ann", None), side("x2", "Bo", None)];
        let p = propose(&existing, &left, &right, true);
        assert!(
            matches!(&p[0].how, Match::Ambiguous { reason, .. } if reason.contains("already mapped from `1`")),
            "{p:?}"
        );
        assert!(
            matches!(&p[1].how, Match::Ambiguous { reason, .. } if reason.contains("fits 2 keys")),
            "{p:?}"
        );
        assert!(matches!(&p[2].how, Match::Ambiguous { .. }));
        assert_eq!(p[3].how, Match::Kept);
        // Many-to-one allows it.
        let p = propose(&existing, &left, &right, false);
        assert_eq!(p.iter().filter(|p| p.how == Match::Name).count(), 3);
    }
}

/// Why [`import`] wrote nothing.
#[derive(Debug)]
pub enum ImportError {
    /// The table keeps its rows inline in the flow file (at this line): there is no file to
    /// replace.
    Inline {
        /// The line of `[tables.NAME]`.
        line: usize,
    },
    /// The table reads its own columns (`key-column`/`value-column`), not M-Bridge's.
    OwnColumns {
        /// The column it reads.
        column: String,
        /// The line of `[tables.NAME]`.
        line: usize,
    },
    /// Rows of the imported text are bad (each located).
    Rows(Vec<FlowProblem>),
    /// The text has a header row but no rows.
    Empty {
        /// The table's file.
        target: std::path::PathBuf,
    },
    /// The rows break the table's one-to-one rule (each pair named).
    OneToOne(Vec<FlowProblem>),
    /// The table's file cannot be written.
    Write {
        /// The table's file.
        target: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// What [`import`] wrote.
#[derive(Debug, Clone)]
pub struct Imported {
    /// Rows written.
    pub rows: usize,
    /// The table's file.
    pub target: std::path::PathBuf,
    /// Keys added, values changed and keys removed, against the file as it was (`None` for a
    /// new file).
    pub changes: Option<(usize, usize, usize)>,
}

/// The file an import into table `table` of `flow` replaces: refused for a table whose rows
/// are inline only, or that reads columns of its own rather than M-Bridge's.
pub fn import_target(
    flow: &crate::flow::Flow,
    table: &str,
    spec: &crate::flow::Table,
) -> Result<std::path::PathBuf, ImportError> {
    let Some(file) = &spec.file else {
        let (line, _) = flow.locate_key(&["tables", table]);
        return Err(ImportError::Inline { line });
    };
    for (column, wanted) in [
        (&spec.key_column, MAVENLINK_ID),
        (&spec.value_column, EXTERNAL_ID),
    ] {
        if let Some(c) = column
            && !c.trim().eq_ignore_ascii_case(wanted)
        {
            let (line, _) = flow.locate_key(&["tables", table]);
            return Err(ImportError::OwnColumns {
                column: c.clone(),
                line,
            });
        }
    }
    Ok(flow.path.parent().unwrap_or(Path::new(".")).join(file))
}

/// Replaces table `table`'s file with the rows of `bytes` (M-Bridge CSV, named `shown` in
/// problems), `flow` loaded without that file ([`crate::flow::Flow::load_leaving_out`]): every
/// row checked first, the one-to-one rule checked on the rows a run would see, nothing written
/// on any problem; otherwise the file written atomically in M-Bridge's columns.
/// `weft tables import` and the console's table editor both go through it.
pub fn import(
    flow: &crate::flow::Flow,
    table: &str,
    spec: &crate::flow::Table,
    shown: &str,
    bytes: &[u8],
) -> Result<Imported, ImportError> {
    let target = import_target(flow, table, spec)?;
    let incoming = read_bytes(shown, bytes, Columns::default()).map_err(ImportError::Rows)?;
    if incoming.is_empty() {
        return Err(ImportError::Empty { target });
    }
    let inline = flow.rows.get(table).cloned().unwrap_or_default();
    let merged = merge(inline, incoming.clone());
    if spec.one_to_one {
        let problems = check_one_to_one(table, &merged);
        if !problems.is_empty() {
            return Err(ImportError::OneToOne(problems));
        }
    }
    let before = read_file(
        &target,
        Columns {
            key: spec.key_column.as_deref(),
            value: spec.value_column.as_deref(),
        },
    )
    .ok();
    crate::files::write_atomic(&target, &to_csv(&incoming), false).map_err(|source| {
        ImportError::Write {
            target: target.clone(),
            source,
        }
    })?;
    let changes = before.map(|old| {
        let old: BTreeMap<&str, &str> = old
            .iter()
            .map(|r| (r.key.as_str(), r.value.as_str()))
            .collect();
        let new: BTreeMap<&str, &str> = incoming
            .iter()
            .map(|r| (r.key.as_str(), r.value.as_str()))
            .collect();
        let added = new.keys().filter(|k| !old.contains_key(*k)).count();
        let removed = old.keys().filter(|k| !new.contains_key(*k)).count();
        let changed = new
            .iter()
            .filter(|(k, v)| old.get(*k).is_some_and(|o| o != *v))
            .count();
        (added, changed, removed)
    });
    Ok(Imported {
        rows: incoming.len(),
        target,
        changes,
    })
}
