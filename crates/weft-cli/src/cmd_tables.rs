//! `weft tables list|show|import|suggest`: a flow's mapping tables, their M-Bridge CSV files, and
//! rows proposed by reading both sides of a table through the workspace's connections.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use weft_engine::flow::{Flow, FlowProblem, Table, TableSide};
use weft_engine::tables::{self, ImportError, Match, Proposal, SideRecord, TableRow, shown};

use crate::cmd_sync::{find_flow, load_flow, workspace};
use crate::table::Columns;
use crate::{Io, cmd_use, connect};

#[derive(Debug, Subcommand)]
pub(crate) enum TablesCmd {
    /// A flow's mapping tables: rows, file, one-to-one, whether it has suggestion sides.
    List {
        /// Flow name (the file name in flows/, without .toml).
        flow: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A table's rows, with their display names and where each row is.
    Show {
        /// Flow name.
        flow: String,
        /// Table name.
        table: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace a table's file with a CSV file (M-Bridge's columns `Mavenlink Display Name`,
    /// `Mavenlink ID`, `External Display Name`, `External ID`; only the IDs are required).
    /// Every row is checked first; nothing is written when one is bad (exit 1).
    Import {
        /// Flow name.
        flow: String,
        /// Table name.
        table: String,
        /// The CSV file to import.
        file: PathBuf,
    },
    /// Propose rows for a table: both sides read through the flow's connections and matched by
    /// email, then by name (case, spaces and punctuation ignored). Rows already in the table are
    /// kept; the table itself is never changed.
    Suggest {
        /// Flow name.
        flow: String,
        /// Table name.
        table: String,
        /// Write the rows that can be imported to this CSV file (M-Bridge's columns) instead of
        /// printing every proposal.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Print every proposal as JSON.
        #[arg(long, conflicts_with = "out")]
        json: bool,
    },
}

pub(crate) fn run(cmd: TablesCmd, dir: Option<&Path>, io: &mut Io<'_>) -> Result<u8> {
    match cmd {
        TablesCmd::List { flow, json } => list(&flow, json, dir, io),
        TablesCmd::Show { flow, table, json } => show(&flow, &table, json, dir, io),
        TablesCmd::Import { flow, table, file } => import(&flow, &table, &file, dir, io),
        TablesCmd::Suggest {
            flow,
            table,
            out,
            json,
        } => suggest(&flow, &table, out.as_deref(), json, dir, io),
    }
}

/// The declaration of `table` in `flow`, or an error listing the tables it has.
fn declared<'a>(flow: &'a Flow, table: &str) -> Result<&'a Table> {
    flow.file.tables.get(table).ok_or_else(|| {
        let known: Vec<&str> = flow.file.tables.keys().map(String::as_str).collect();
        anyhow!(
            "flow `{}` has no table `{table}`; {}",
            flow.name,
            if known.is_empty() {
                format!(
                    "it declares none (add a [tables.NAME] table to {})",
                    flow.path.display()
                )
            } else {
                format!(
                    "its tables are: {} (see `weft tables list {}`)",
                    known.join(", "),
                    flow.name
                )
            }
        )
    })
}

/// Where a table's file is: relative to the flow file.
fn file_of(flow: &Flow, file: &Path) -> PathBuf {
    flow.path.parent().unwrap_or(Path::new(".")).join(file)
}

fn list(name: &str, json: bool, dir: Option<&Path>, io: &mut Io<'_>) -> Result<u8> {
    let ws = workspace(dir)?;
    let flow = load_flow(&ws, name)?;
    let rows: Vec<serde_json::Value> = flow
        .file
        .tables
        .iter()
        .map(|(t, spec)| {
            serde_json::json!({
                "table": t,
                "rows": flow.rows.get(t).map_or(0, Vec::len),
                "inline_rows": spec.rows.len(),
                "file": spec.file.as_ref().map(|f| shown(&file_of(&flow, f))),
                "one_to_one": spec.one_to_one,
                "suggest": spec.suggest.as_ref().map(|s| serde_json::json!({
                    "left": format!("{}.{}", s.left.connection, s.left.resource),
                    "right": format!("{}.{}", s.right.connection, s.right.resource),
                })),
            })
        })
        .collect();
    if json {
        serde_json::to_writer_pretty(&mut *io.out, &rows)?;
        writeln!(io.out)?;
        return Ok(0);
    }
    if rows.is_empty() {
        writeln!(
            io.out,
            "flow `{name}` has no tables; declare one under [tables.NAME] in {}",
            flow.path.display()
        )?;
        return Ok(0);
    }
    let mut table = Columns::new(&["TABLE", "ROWS", "FILE", "ONE-TO-ONE", "SUGGEST"]).right(&[1]);
    for r in &rows {
        table.row([
            r["table"].as_str().unwrap_or_default().to_owned(),
            r["rows"].to_string(),
            match r["file"].as_str() {
                Some(f) => f.to_owned(),
                None => "(inline)".to_owned(),
            },
            if r["one_to_one"] == true { "yes" } else { "no" }.to_owned(),
            match r["suggest"].as_object() {
                Some(s) => format!(
                    "{} → {}",
                    s["left"].as_str().unwrap_or_default(),
                    s["right"].as_str().unwrap_or_default()
                ),
                None => "-".to_owned(),
            },
        ]);
    }
    table.write(io.out)?;
    Ok(0)
}

fn show(name: &str, table: &str, json: bool, dir: Option<&Path>, io: &mut Io<'_>) -> Result<u8> {
    let ws = workspace(dir)?;
    let flow = load_flow(&ws, name)?;
    let spec = declared(&flow, table)?;
    let rows = flow.rows.get(table).cloned().unwrap_or_default();
    if json {
        serde_json::to_writer_pretty(
            &mut *io.out,
            &serde_json::json!({
                "table": table,
                "file": spec.file.as_ref().map(|f| shown(&file_of(&flow, f))),
                "one_to_one": spec.one_to_one,
                "rows": rows,
            }),
        )?;
        writeln!(io.out)?;
        return Ok(0);
    }
    if rows.is_empty() {
        writeln!(io.out, "table `{table}` of flow `{name}` has no rows")?;
        return Ok(0);
    }
    print_rows(&rows, io)?;
    writeln!(
        io.err,
        "{} row(s){}",
        rows.len(),
        if spec.one_to_one { ", one-to-one" } else { "" }
    )?;
    Ok(0)
}

fn print_rows(rows: &[TableRow], io: &mut Io<'_>) -> Result<()> {
    let mut out = Columns::new(&[
        "MAVENLINK ID",
        "MAVENLINK NAME",
        "EXTERNAL ID",
        "EXTERNAL NAME",
        "FROM",
    ]);
    for r in rows {
        out.row([
            r.key.clone(),
            r.key_name.clone(),
            r.value.clone(),
            r.value_name.clone(),
            format!("{}:{}", shown(Path::new(&r.file)).display(), r.line),
        ]);
    }
    out.write(io.out)?;
    Ok(())
}

fn print_problems(problems: &[FlowProblem], io: &mut Io<'_>) -> Result<()> {
    for p in problems {
        writeln!(
            io.err,
            "error: {}\n  --> {}:{}:{}",
            p.message, p.file, p.line, p.column
        )?;
    }
    Ok(())
}

fn import(
    name: &str,
    table: &str,
    input: &Path,
    dir: Option<&Path>,
    io: &mut Io<'_>,
) -> Result<u8> {
    let ws = workspace(dir)?;
    let path = find_flow(&ws, name)?;
    // The table's own file is left out: it is what gets replaced, and may be missing or bad.
    let flow = Flow::load_leaving_out(&path, table)?;
    let spec = declared(&flow, table)?;
    let checked = tables::import_target(&flow, table, spec);
    if checked.is_ok() && !input.is_file() {
        bail!(
            "{} does not exist (or is not a file); nothing was written. Give the path of the CSV file to import, with a header row naming `{}` and `{}`",
            input.display(),
            tables::MAVENLINK_ID,
            tables::EXTERNAL_ID
        );
    }
    let bytes = match checked {
        Ok(_) => {
            std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))?
        }
        // The import refuses before reading anything.
        Err(_) => Vec::new(),
    };
    let imported = match tables::import(
        &flow,
        table,
        spec,
        &shown(input).display().to_string(),
        &bytes,
    ) {
        Ok(i) => i,
        Err(ImportError::Inline { line }) => bail!(
            "table `{table}` of flow `{name}` keeps its rows inline ({}:{line}), so there is no file to import into; nothing was written. Add `file = \"../tables/{table}.csv\"` under [tables.{table}] (a file's rows replace inline rows of the same key), then run `weft tables import {name} {table} {}` again: it creates the file",
            flow.path.display(),
            input.display()
        ),
        Err(ImportError::OwnColumns { column, line }) => bail!(
            "table `{table}` of flow `{name}` reads the column `{column}` of its file ({}:{line}), but an import writes M-Bridge's columns; nothing was written. Remove `key-column` and `value-column` from [tables.{table}] so it reads them, then run the import again",
            flow.path.display()
        ),
        Err(ImportError::Rows(problems)) => {
            print_problems(&problems, io)?;
            writeln!(
                io.err,
                "{} problem(s) in {}; nothing was written. Fix the rows above and run `weft tables import {name} {table} {}` again",
                problems.len(),
                input.display(),
                input.display()
            )?;
            return Ok(1);
        }
        Err(ImportError::Empty { target }) => bail!(
            "{} has a header row but no rows; nothing was written (to empty table `{table}`, edit {} by hand)",
            input.display(),
            shown(&target).display()
        ),
        Err(ImportError::OneToOne(problems)) => {
            print_problems(&problems, io)?;
            writeln!(
                io.err,
                "{} problem(s); nothing was written. Table `{table}` is one-to-one: fix the rows above and run `weft tables import {name} {table} {}` again",
                problems.len(),
                input.display()
            )?;
            return Ok(1);
        }
        Err(ImportError::Write { target, source }) => {
            return Err(anyhow!(source).context(format!("cannot write {}", target.display())));
        }
    };
    let summary = match imported.changes {
        None => "a new file".to_owned(),
        Some((added, changed, removed)) => {
            format!("{added} added, {changed} changed, {removed} removed")
        }
    };
    writeln!(
        io.out,
        "imported {} row(s) into table `{table}` of flow `{name}` ({summary}): {}",
        imported.rows,
        shown(&imported.target).display()
    )?;
    // The flow as a run will see it.
    if let Err(e) = load_flow(&ws, name) {
        writeln!(
            io.err,
            "warning: the flow does not load with the new table: {e:#}\nfix it, then check with `weft flow check {name}`"
        )?;
        return Ok(1);
    }
    Ok(0)
}

/// Reads one side of a table: every record of its resource through its connection, by the
/// side's expressions.
fn read_side(
    flow: &Flow,
    which: &str,
    side: &TableSide,
    table: &str,
    dir: Option<&Path>,
) -> Result<std::result::Result<Vec<SideRecord>, (u8, String)>> {
    let connection = flow.connection_name(&side.connection);
    let opened = connect::open(&connection, dir).with_context(|| {
        format!(
            "table `{table}`, {which} side: connection `{connection}` (alias `{}`)",
            side.connection
        )
    })?;
    let options: serde_json::Map<String, serde_json::Value> = flow
        .file
        .options
        .iter()
        .map(|(k, v)| {
            (
                weft_engine::flow::option_name(k),
                serde_json::to_value(v).unwrap_or(serde_json::Value::Null),
            )
        })
        .collect();
    let options = serde_json::Value::Object(options);
    let tables_value = serde_json::to_value(&flow.tables)?;
    let mut found = Vec::new();
    let mut failed: Option<String> = None;
    let outcome = cmd_use::list_to_end(
        &opened,
        cmd_use::Listing {
            connection: &connection,
            resource: &side.resource,
            params: side.params.clone(),
            since: None,
        },
        |c| crate::cmd_sync::tenant(flow, &side.connection, c).map(Some),
        |record| {
            match tables::side_record(side, &record, &options, &tables_value) {
                Ok(Some(r)) => found.push(r),
                Ok(None) => {}
                Err(e) => {
                    failed = Some(e);
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        },
    )?;
    if let Some(e) = failed {
        let (line, _) = flow.locate_key(&["tables", table, "suggest", which]);
        bail!(
            "tables.{table}.suggest.{which} ({}:{line}): {e}; fix the expression, then run the command again",
            flow.path.display()
        );
    }
    Ok(outcome.map(|()| found))
}

fn suggest(
    name: &str,
    table: &str,
    out: Option<&Path>,
    json: bool,
    dir: Option<&Path>,
    io: &mut Io<'_>,
) -> Result<u8> {
    let ws = workspace(dir)?;
    let flow = load_flow(&ws, name)?;
    let spec = declared(&flow, table)?;
    let Some(sides) = &spec.suggest else {
        let (line, _) = flow.locate_key(&["tables", table]);
        bail!(
            "table `{table}` of flow `{name}` has no suggestion sides ({}:{line}); add [tables.{table}.suggest] with `left` and `right` (each `{{ connection, resource, key, name, email }}`; docs/flows.md describes them)",
            flow.path.display()
        );
    };
    if let (Some(out), Some(file)) = (out, &spec.file) {
        let table_file = file_of(&flow, file);
        let same = match (
            std::fs::canonicalize(out),
            std::fs::canonicalize(&table_file),
        ) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if same {
            bail!(
                "--out {} is the file of table `{table}`; a suggestion never changes the table. Write it elsewhere, review it, then run `weft tables import {name} {table} FILE`",
                out.display()
            );
        }
    }
    let mut read = Vec::new();
    for (which, side) in [("left", &sides.left), ("right", &sides.right)] {
        match read_side(&flow, which, side, table, dir)? {
            Ok(records) => read.push(records),
            Err((code, text)) => {
                writeln!(
                    io.err,
                    "error: cannot read the {which} side of table `{table}` (`{}` of `{}`): {text}\nnothing was changed",
                    side.resource,
                    flow.connection_name(&side.connection)
                )?;
                return Ok(if code == 0 { 1 } else { code });
            }
        }
    }
    let existing = flow.rows.get(table).cloned().unwrap_or_default();
    let proposals = tables::propose(&existing, &read[0], &read[1], spec.one_to_one);
    if json {
        serde_json::to_writer_pretty(&mut *io.out, &proposals)?;
        writeln!(io.out)?;
        return Ok(0);
    }
    let count = |f: &dyn Fn(&Match) -> bool| proposals.iter().filter(|p| f(&p.how)).count();
    let kept = count(&|m| *m == Match::Kept);
    let matched = count(&|m| matches!(m, Match::Email | Match::Name));
    let ambiguous = count(&|m| matches!(m, Match::Ambiguous { .. }));
    let unmatched = count(&|m| *m == Match::Unmatched);
    let summary = format!(
        "{} record(s) of {}.{} (left), {} of {}.{} (right): {kept} kept, {matched} matched, {ambiguous} ambiguous, {unmatched} unmatched",
        read[0].len(),
        sides.left.connection,
        sides.left.resource,
        read[1].len(),
        sides.right.connection,
        sides.right.resource,
    );
    match out {
        Some(file) => {
            let rows: Vec<TableRow> = proposals.iter().filter_map(Proposal::row).collect();
            weft_engine::files::write_atomic(file, &tables::to_csv(&rows), false)
                .with_context(|| format!("cannot write {}", file.display()))?;
            let open: Vec<Proposal> = proposals
                .iter()
                .filter(|p| p.right.is_none())
                .cloned()
                .collect();
            if !open.is_empty() {
                writeln!(
                    io.out,
                    "not in {} (a person must choose; add them to the file by hand):",
                    file.display()
                )?;
                print_proposals(&open, io)?;
            }
            writeln!(
                io.out,
                "{summary}\nwrote {} row(s) to {}; table `{table}` is unchanged. Review the file, then apply it with `weft tables import {name} {table} {}`",
                rows.len(),
                file.display(),
                file.display()
            )?;
        }
        None => {
            print_proposals(&proposals, io)?;
            writeln!(
                io.out,
                "{summary}\ntable `{table}` is unchanged. To apply: `weft tables suggest {name} {table} --out FILE`, review FILE, then `weft tables import {name} {table} FILE`"
            )?;
        }
    }
    Ok(0)
}

fn print_proposals(proposals: &[Proposal], io: &mut Io<'_>) -> Result<()> {
    let mut out = Columns::new(&[
        "STATUS",
        "MAVENLINK ID",
        "MAVENLINK NAME",
        "EXTERNAL ID",
        "EXTERNAL NAME",
        "NOTE",
    ]);
    for p in proposals {
        let (status, note) = match &p.how {
            Match::Kept => ("kept", "already in the table".to_owned()),
            Match::Email => ("email", "same email".to_owned()),
            Match::Name => ("name", "same name".to_owned()),
            Match::Ambiguous { candidates, reason } => (
                "ambiguous",
                format!(
                    "{reason}: {}",
                    candidates
                        .iter()
                        .map(|c| format!("{} ({})", c.key, c.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Match::Unmatched if p.left.email.is_some() => {
                ("unmatched", "no record with this email or name".to_owned())
            }
            Match::Unmatched => ("unmatched", "no record with this name".to_owned()),
        };
        let (id, right_name) = p
            .right
            .as_ref()
            .map_or((String::new(), String::new()), |r| {
                (r.key.clone(), r.name.clone())
            });
        out.row([
            status.to_owned(),
            p.left.key.clone(),
            p.left.name.clone(),
            id,
            right_name,
            note,
        ]);
    }
    out.write(io.out)?;
    Ok(())
}
