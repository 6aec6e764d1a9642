//! Flows: what a sync moves, declared in TOML in the workspace (`flows/<name>.toml`).
//!
//! A flow names its source and destination connections, the source's filters, options, mapping
//! tables (inline or from CSV files beside the flow) and field mappings. Mappings are MiniJinja
//! expressions, the same engine as spec templates, evaluated over the source record, its computed
//! lines, the options and the tables. Loading checks everything it can without the network and
//! reports every problem with its file, line and column.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// A loaded flow file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FlowFile {
    /// What the flow is for, shown by `weft sync status`.
    #[serde(default)]
    pub description: String,
    /// Where records come from.
    pub source: Source,
    /// Where they go.
    pub destination: Destination,
    /// Choices that shape the written records.
    #[serde(default)]
    pub options: Options,
    /// Mapping tables by name (`tables.<name>[key]` in expressions).
    #[serde(default)]
    pub tables: IndexMap<String, Table>,
    /// Field mappings: destination field → expression.
    pub mapping: Mapping,
}

/// The source side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Source {
    /// Connection name (in `weft.toml`).
    pub connection: String,
    /// Filters passed to the source's list as parameters (Kantata project filters such as
    /// `workspace_id = "12,13"`).
    #[serde(default)]
    pub filter: BTreeMap<String, String>,
}

/// The destination side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Destination {
    /// Connection name (in `weft.toml`).
    pub connection: String,
    /// Tenant id (Xero organisation); may be left out when the connection reaches one.
    #[serde(default)]
    pub tenant: Option<String>,
}

/// The status new invoices get at the destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvoiceStatus {
    /// A draft, to review in Xero.
    #[serde(rename = "DRAFT")]
    Draft,
    /// Approved and awaiting payment.
    #[default]
    #[serde(rename = "AUTHORISED")]
    Authorised,
}

impl InvoiceStatus {
    /// The destination's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "DRAFT",
            Self::Authorised => "AUTHORISED",
        }
    }
}

/// Options of the invoice flow (M-Bridge's scenario settings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Options {
    /// Account code for lines no table maps.
    pub default_account_code: String,
    /// Item code put on every line, when set.
    pub item_code: Option<String>,
    /// One line per task for time entries, instead of one per entry.
    pub roll_up_time: bool,
    /// One line per task for expenses, instead of one per expense.
    pub roll_up_expenses: bool,
    /// Fixed-fee lines carry the item's notes in their description.
    pub fixed_fee_details: bool,
    /// An expression giving text put before the first line's description (for instance a
    /// project code or custom field); empty for none.
    pub leading_text: String,
    /// Status of new invoices.
    pub status: InvoiceStatus,
    /// Send draft source invoices too (normally only issued ones are sent).
    pub include_drafts: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            default_account_code: "200".to_owned(),
            item_code: None,
            roll_up_time: false,
            roll_up_expenses: false,
            fixed_fee_details: true,
            leading_text: String::new(),
            status: InvoiceStatus::Authorised,
            include_drafts: false,
        }
    }
}

/// A mapping table: inline rows, rows from a CSV file, or both (the file's rows win).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Table {
    /// Rows: key → value.
    #[serde(default)]
    pub rows: IndexMap<String, String>,
    /// A CSV file (relative to the flow file) with a header row.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Column of the key in the file.
    #[serde(default = "key_column")]
    pub key_column: String,
    /// Column of the value in the file.
    #[serde(default = "value_column")]
    pub value_column: String,
}

fn key_column() -> String {
    "key".to_owned()
}

fn value_column() -> String {
    "value".to_owned()
}

/// Field mappings: destination field name → MiniJinja expression.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Mapping {
    /// The destination invoice (`invoice`, `client`, `options`, `tables` in scope). The sync adds
    /// the contact and the line items.
    pub invoice: IndexMap<String, String>,
    /// Each line item (`line`, `invoice`, `options`, `tables` in scope).
    pub line: IndexMap<String, String>,
    /// A destination contact created for a client (`client`, `options`, `tables` in scope).
    pub contact: IndexMap<String, String>,
}

/// A problem in a flow or its tables, located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct FlowProblem {
    /// The file (flow or CSV).
    pub file: String,
    /// Line, from 1 (0 when unknown).
    pub line: usize,
    /// Column, from 1 (0 when unknown).
    pub column: usize,
    /// What is wrong and what to do.
    pub message: String,
}

/// Errors of loading a flow: every problem found.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// The flow file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The flow has problems.
    #[error("{} problem(s) in flow `{name}`:\n{}", problems.len(), problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// Flow name.
        name: String,
        /// Each problem.
        problems: Vec<FlowProblem>,
    },
}

/// A flow ready to run: its file, name and tables.
#[derive(Debug, Clone)]
pub struct Flow {
    /// Its name (the file stem).
    pub name: String,
    /// Where it was loaded from.
    pub path: PathBuf,
    /// The declarations.
    pub file: FlowFile,
    /// The tables with their files read.
    pub tables: BTreeMap<String, BTreeMap<String, String>>,
}

fn position(text: &str, offset: usize) -> (usize, usize) {
    let at = weft_core::diagnostic::line_col(text, offset);
    (at.line, at.column)
}

/// Where key `path` (e.g. `["mapping", "invoice", "Date"]`) is in `text`, best effort.
fn locate(text: &str, path: &[&str]) -> (usize, usize) {
    let mut from = 0;
    for part in path {
        let candidates = [format!("[{part}]"), format!("{part} ="), format!("{part}=")];
        if let Some(found) = candidates
            .iter()
            .filter_map(|c| text[from..].find(c.as_str()).map(|i| i + from))
            .min()
        {
            from = found;
        }
    }
    position(text, from)
}

impl Flow {
    /// Loads `path` (a flow file), its CSV tables, and checks every expression.
    pub fn load(path: &Path) -> Result<Self, FlowError> {
        let text = std::fs::read_to_string(path).map_err(|source| FlowError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self::parse(&name, path, &text)
    }

    /// Parses flow `name` from `text` (read from `path`, which locates its CSV tables).
    pub fn parse(name: &str, path: &Path, text: &str) -> Result<Self, FlowError> {
        let shown = path.display().to_string();
        let problem = |(line, column): (usize, usize), message: String| FlowProblem {
            file: shown.clone(),
            line,
            column,
            message,
        };
        let file: FlowFile = match toml::from_str(text) {
            Ok(f) => f,
            Err(e) => {
                let at = e.span().map_or((0, 0), |s| position(text, s.start));
                return Err(FlowError::Invalid {
                    name: name.to_owned(),
                    problems: vec![problem(at, e.message().trim().to_owned())],
                });
            }
        };
        let mut problems = Vec::new();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            problems.push(problem(
                (0, 0),
                format!("the flow name `{name}` (the file name) may use only letters, digits, `-` and `_`; rename the file"),
            ));
        }
        if file.source.connection.trim().is_empty() {
            problems.push(problem(
                locate(text, &["source", "connection"]),
                "source.connection is empty; name a connection from `weft connection list`"
                    .to_owned(),
            ));
        }
        if file.destination.connection.trim().is_empty() {
            problems.push(problem(
                locate(text, &["destination", "connection"]),
                "destination.connection is empty; name a connection from `weft connection list`"
                    .to_owned(),
            ));
        }
        let env = crate::mapping::environment();
        let mut check = |section: &'static str, map: &IndexMap<String, String>| {
            if map.is_empty() {
                problems.push(problem(
                    locate(text, &["mapping", section]),
                    format!("[mapping.{section}] maps no field; see the kantata-xero template (`weft init --template kantata-xero`)"),
                ));
            }
            for (field, expr) in map {
                if let Err(e) = env.compile_expression(expr) {
                    problems.push(problem(
                        locate(text, &["mapping", section, field]),
                        format!(
                            "mapping.{section}.{field}: `{expr}` is not a valid expression: {}",
                            e.detail().unwrap_or(&e.to_string())
                        ),
                    ));
                }
            }
        };
        check("invoice", &file.mapping.invoice);
        check("line", &file.mapping.line);
        check("contact", &file.mapping.contact);
        if !file.options.leading_text.is_empty()
            && let Err(e) = env.compile_expression(&file.options.leading_text)
        {
            problems.push(problem(
                locate(text, &["options", "leading-text"]),
                format!("options.leading-text is not a valid expression: {e}"),
            ));
        }
        if file.options.default_account_code.trim().is_empty() {
            problems.push(problem(
                locate(text, &["options", "default-account-code"]),
                "options.default-account-code is empty; give the account code for lines no table maps (Xero's sales account is usually 200)".to_owned(),
            ));
        }
        let mut tables = BTreeMap::new();
        for (table, spec) in &file.tables {
            let mut rows: BTreeMap<String, String> = spec
                .rows
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if let Some(csv) = &spec.file {
                let csv_path = path.parent().unwrap_or(Path::new(".")).join(csv);
                match read_table(&csv_path, &spec.key_column, &spec.value_column) {
                    Ok(found) => rows.extend(found),
                    Err(mut found) => problems.append(&mut found),
                }
            }
            tables.insert(table.clone(), rows);
        }
        if !problems.is_empty() {
            return Err(FlowError::Invalid {
                name: name.to_owned(),
                problems,
            });
        }
        Ok(Self {
            name: name.to_owned(),
            path: path.to_path_buf(),
            file,
            tables,
        })
    }
}

/// Reads a two-column mapping from a CSV file with a header row; every bad row is a located
/// problem.
fn read_table(
    path: &Path,
    key: &str,
    value: &str,
) -> Result<BTreeMap<String, String>, Vec<FlowProblem>> {
    let shown = path.display().to_string();
    let problem = |line: usize, column: usize, message: String| FlowProblem {
        file: shown.clone(),
        line,
        column,
        message,
    };
    let mut reader = match csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
    {
        Ok(r) => r,
        Err(e) => return Err(vec![problem(0, 0, format!("cannot read the table: {e}"))]),
    };
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            return Err(vec![problem(
                1,
                1,
                format!("the header row cannot be read: {e}"),
            )]);
        }
    };
    let column = |name: &str| headers.iter().position(|h| h == name);
    let (Some(k), Some(v)) = (column(key), column(value)) else {
        return Err(vec![problem(
            1,
            1,
            format!(
                "the header row must name the columns `{key}` and `{value}` (it has: {})",
                headers.iter().collect::<Vec<_>>().join(", ")
            ),
        )]);
    };
    let mut rows = BTreeMap::new();
    let mut problems = Vec::new();
    for record in reader.records() {
        match record {
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line() as usize);
                problems.push(problem(line, 1, format!("unreadable row: {e}")));
            }
            Ok(r) => {
                let line = r.position().map_or(0, |p| p.line() as usize);
                match (r.get(k), r.get(v)) {
                    (Some(key), Some(value)) if !key.is_empty() && !value.is_empty() => {
                        if rows.insert(key.to_owned(), value.to_owned()).is_some() {
                            problems.push(problem(
                                line,
                                1,
                                format!("`{key}` appears twice; keep one row per key"),
                            ));
                        }
                    }
                    _ => problems.push(problem(
                        line,
                        1,
                        "the row needs a key and a value".to_owned(),
                    )),
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(rows)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[source]
connection = "kantata"

[destination]
connection = "xero"

[mapping.invoice]
Type = "'ACCREC'"

[mapping.line]
Description = "line.description"

[mapping.contact]
Name = "client.name"
"#;

    #[test]
    fn a_minimal_flow_loads_with_default_options() {
        let flow = Flow::parse("k2x", Path::new("flows/k2x.toml"), MINIMAL).unwrap();
        assert_eq!(flow.file.options.default_account_code, "200");
        assert_eq!(flow.file.options.status, InvoiceStatus::Authorised);
    }

    #[test]
    fn every_problem_is_located() {
        let bad = MINIMAL
            .replace("line.description", "line.description +")
            .replace("connection = \"xero\"", "connection = \"\"");
        let err = Flow::parse("k2x", Path::new("flows/k2x.toml"), &bad).unwrap_err();
        let FlowError::Invalid { problems, .. } = err else {
            panic!("expected problems");
        };
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().all(|p| p.line > 0));
        assert!(problems[0].message.contains("destination.connection"));
        let unknown = format!("{MINIMAL}\n[options]\nroll-up-tme = true\n");
        let err = Flow::parse("k2x", Path::new("f.toml"), &unknown).unwrap_err();
        assert!(err.to_string().contains("roll-up-tme"), "{err}");
    }

    #[test]
    fn csv_tables_report_each_bad_row() {
        let dir = std::env::temp_dir().join(format!("weft-flow-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("accounts.csv"),
            "key,value\ntime,200\nexpense,\ntime,201\n",
        )
        .unwrap();
        let text = format!("{MINIMAL}\n[tables.accounts]\nfile = \"accounts.csv\"\n");
        let err = Flow::parse("k2x", &dir.join("k2x.toml"), &text).unwrap_err();
        let FlowError::Invalid { problems, .. } = err else {
            panic!("expected problems");
        };
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].line, 3);
        assert_eq!(problems[1].line, 4);
        std::fs::write(dir.join("accounts.csv"), "key,value\ntime,210\n").unwrap();
        let flow = Flow::parse("k2x", &dir.join("k2x.toml"), &text).unwrap();
        assert_eq!(flow.tables["accounts"]["time"], "210");
        std::fs::remove_dir_all(&dir).ok();
    }
}
