//! Flows: what a sync moves, declared in TOML in the workspace (`flows/<name>.toml`).
//!
//! A flow is data. It names the connections it uses (by an alias, with the connector each must
//! be), options and mapping tables, and one or more **streams**. A stream reads a source resource
//! (incrementally, by the cursor its spec declares), skips what it must not send, looks up
//! related records at any connection (cached per run, optionally created when missing),
//! computes lists of items (with grouping and exact decimal arithmetic), writes one record per
//! source record to a destination (created, or updated while an update policy allows), and
//! writes back to the source from the destination's answer. A stream may be joined to another
//! through the ledger (a reverse stream: paid destination records back to the source).
//!
//! Every expression is MiniJinja (the spec template engine), compiled and checked at load: a
//! name that is not in scope, an option or table that is not declared, or an earlier lookup
//! misnamed is a located problem. [`Flow::check_against`] then checks the flow against its
//! connectors' specs: resources and operations exist, and every written field is one the
//! destination declares (with a suggestion for a typo).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use toml::Spanned;
use toml::de::{DeTable, DeValue};
use weft_core::Spec;
use weft_core::duration::SpecDuration;
use weft_core::model::{FieldType, Resource};

/// A flow file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FlowFile {
    /// What the flow is for, shown by `weft flow list`.
    #[serde(default)]
    pub description: String,
    /// When the flow is due to run by itself: `"every 15m"` (a duration of at least a minute,
    /// counted from the start of the last run) or a cron expression in UTC (five fields,
    /// `"*/15 * * * *"`, or six with seconds first). Runs missed while nothing was running the
    /// schedule are due once, not once per missed time. Left out, the flow runs only when asked.
    #[serde(default)]
    pub schedule: Option<String>,
    /// The connections the flow uses, by alias (`[connections.books] connector = "xero"`).
    pub connections: IndexMap<String, FlowConnection>,
    /// Choices that shape the written records (`options.<name>` in expressions; `-` reads as `_`).
    #[serde(default)]
    #[schemars(with = "IndexMap<String, serde_json::Value>")]
    pub options: IndexMap<String, toml::Value>,
    /// Mapping tables by name (`tables.<name>[key]` in expressions).
    #[serde(default)]
    pub tables: IndexMap<String, Table>,
    /// The streams, run in this order.
    pub streams: IndexMap<String, Stream>,
}

/// One connection a flow uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FlowConnection {
    /// The connector it must be (a spec id); the flow is checked against that spec.
    pub connector: String,
    /// The connection's name in `weft.toml`; the alias when left out.
    #[serde(default)]
    pub connection: Option<String>,
    /// The tenant (for instance a Xero organisation id); may be left out when the connection
    /// reaches exactly one.
    #[serde(default)]
    pub tenant: Option<String>,
}

/// A stream: one source resource, read and moved record by record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Stream {
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// Where its records come from.
    pub source: StreamSource,
    /// Join to another stream through the ledger: only records that stream wrote are read on
    /// (`linked.source_id`, `linked.dest_id` in scope).
    #[serde(default)]
    pub join: Option<Join>,
    /// Records not to send, each with its reason (first match wins).
    #[serde(default)]
    pub skip: Vec<Skip>,
    /// Related records found at any connection, in order (`lookup.<name>` in scope).
    #[serde(default)]
    pub lookup: Vec<Lookup>,
    /// Computed lists (`items.<into>` in scope), in order.
    #[serde(default)]
    pub items: Vec<Items>,
    /// The write at the destination.
    pub write: Write,
    /// Writes back at the source from the destination's answer, once per destination id.
    #[serde(default)]
    pub write_back: Vec<WriteBack>,
}

/// Where a stream reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StreamSource {
    /// A connection alias from `[connections]`.
    pub connection: String,
    /// A resource of its connector with a `list` operation.
    pub resource: String,
    /// Parameters passed to the list (filters the spec passes through, such as Kantata's
    /// `workspace_id` or Xero's `Statuses`).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Read only what changed since the last run, by the resource's declared cursor (the
    /// default when the resource declares one).
    #[serde(default = "yes")]
    pub incremental: bool,
    /// Read everything again when the last full read is older than this (for resources whose
    /// cursor cannot see every change, such as deletions); never when left out.
    #[serde(default)]
    pub full_every: Option<SpecDuration>,
    /// Learn what changed from a feed of change events instead of the resource's own cursor
    /// (for a change the resource's cursor cannot see, such as an approval).
    #[serde(default)]
    pub changes: Option<Changes>,
}

/// A feed of change events at the source's connection: each event names a changed record,
/// which is read again by id. Events may come twice and out of order; the feed keeps them for
/// a while only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Changes {
    /// The resource listing the events: its list must declare an incremental cursor (the time
    /// of each event), whose overlap covers how late an event may appear.
    pub resource: String,
    /// Parameters passed to its list (for instance the event types and subject type).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// The changed record's id in an event (`found` is the event).
    pub subject: String,
    /// The event's own id, so an event delivered twice is handled once (`found` is the event).
    pub event: String,
    /// How long the feed keeps events: when the last read is older than this (or there was
    /// none), the events since cannot all be had, so every record is read instead.
    pub keep: SpecDuration,
}

fn yes() -> bool {
    true
}

/// A join through the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Join {
    /// The stream whose links are followed.
    pub stream: String,
    /// The expression giving the id the other stream wrote (its destination id).
    pub on: String,
}

/// A skip rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Skip {
    /// A condition (`record`, `options`, `tables`, `linked`, `lookup` in scope).
    pub when: String,
    /// Why, shown in dry runs and reports.
    #[serde(default)]
    pub reason: String,
}

/// How a lookup reads its resource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LookupLoad {
    /// One `get` by id per key (cached for the run).
    #[default]
    Get,
    /// The whole list once per run, indexed by the `match` field.
    List,
    /// The list filtered to the keys a chunk of records needs: the keys go comma-separated in
    /// the list parameter `param`, `batch` of them per call (for an account with many records
    /// of which a run needs few, and memory that does not grow with the account).
    Keys,
    /// Every candidate of the list, read once per run: `lookup.<name>` is that list, the same
    /// for every record (no `key` or `match`), for instance the options of a list to copy, or
    /// the projects a filter selects.
    All,
}

/// A lookup: the record of `resource` whose `match` field equals `key`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Lookup {
    /// Its name in expressions (`lookup.<name>`).
    pub name: String,
    /// A connection alias.
    pub connection: String,
    /// The resource.
    pub resource: String,
    /// The expression giving the key to find (not with `load = "all"`).
    #[serde(default)]
    pub key: String,
    /// Whether the record needs this lookup (always when left out); when it does not,
    /// `lookup.<name>` is none and nothing is read for it.
    #[serde(default)]
    pub when: Option<String>,
    /// Parameters passed to the list (`list`, `keys` and `all`), as a source's are.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// More list parameters as one `&`-joined text (`name=value&name=value`, the way Kantata's
    /// M-Bridge writes a project filter), from an expression over `options` and `tables`; each
    /// name must be a parameter the list passes on (`weft flow check` says which).
    #[serde(default)]
    pub filter: Option<String>,
    /// The field of the found record that equals the key (`get`: the id).
    #[serde(default, rename = "match")]
    pub match_field: Option<String>,
    /// How the resource is read.
    #[serde(default)]
    pub load: LookupLoad,
    /// `load = "keys"`: the list parameter that takes the wanted keys, comma-separated.
    #[serde(default)]
    pub param: Option<String>,
    /// `load = "keys"`: keys per call (100 when left out).
    #[serde(default)]
    pub batch: Option<u32>,
    /// Compare keys without regard to case and surrounding spaces.
    #[serde(default)]
    pub ignore_case: bool,
    /// Only candidates for which this holds (`found` in scope), for instance active contacts.
    #[serde(default)]
    pub candidates: Option<String>,
    /// When nothing is found: create it with these fields (`key`, `record`, `options`,
    /// `tables`, `lookup` in scope), once, linked in the ledger so no later run creates it
    /// again.
    #[serde(default)]
    pub create: Option<IndexMap<String, String>>,
    /// A record whose key is empty or not found goes on without it (`lookup.<name>` is none)
    /// instead of failing.
    #[serde(default)]
    pub optional: bool,
}

/// A computed list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Items {
    /// The list it adds to (`items.<into>`); several blocks may add to one list, in order.
    pub into: String,
    /// The expression giving the elements (`item` in scope for each).
    pub each: String,
    /// Whether this block applies to the record (always when left out).
    #[serde(default)]
    pub when: Option<String>,
    /// Values computed per element and added to it, in order (`item.<name>` afterwards).
    #[serde(default, rename = "let")]
    pub lets: IndexMap<String, String>,
    /// Group the elements by this expression: one output element per group (`group.key`,
    /// `group.items`, `group.count` in scope instead of `item`).
    #[serde(default)]
    pub group_by: Option<String>,
    /// The output element's fields.
    pub fields: IndexMap<String, String>,
}

/// The natural key of written records: how to find one at the destination when the ledger does
/// not know it (an unknown outcome, a lost state, "already exists").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NaturalKey {
    /// The written field that identifies a record (for instance `InvoiceNumber`); a path
    /// reaches into objects and lists (`Receipts.0.ReceiptID`: the first receipt's id).
    pub field: String,
    /// The list parameter that finds records by it. When left out, the destination's whole
    /// list is read and its records matched by the field: for a resource whose list cannot be
    /// filtered by the key, and whose records are few.
    #[serde(default)]
    pub param: Option<String>,
    /// How many values one lookup may carry (joined by commas).
    #[serde(default = "one")]
    pub batch: u32,
    /// The parameter's value as a MiniJinja template over `keys` (the values looked for), for
    /// an API that finds records through a query language rather than a list of values, e.g.
    /// `{% for k in keys %}{{ ' OR ' if not loop.first }}Narration=="{{ k }}"{% endfor %}`.
    /// The values joined by commas when left out.
    #[serde(default)]
    pub format: Option<String>,
    /// Found records to disregard (`found` in scope), for instance deleted ones.
    #[serde(default)]
    pub ignore: Option<String>,
}

fn one() -> u32 {
    1
}

/// When an existing destination record may be updated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct UpdatePolicy {
    /// Never update: a record is written once.
    #[serde(default)]
    pub never: bool,
    /// The condition on the destination record as it is now (`found` in scope); always
    /// allowed when left out.
    #[serde(default)]
    pub when: Option<String>,
    /// The reason recorded when `when` refuses (a MiniJinja template, `found` in scope).
    #[serde(default)]
    pub refused: Option<String>,
    /// The list parameter that reads destination records by their ids, for the policy (a `get`
    /// per record when left out).
    #[serde(default)]
    pub read_param: Option<String>,
    /// Fields not sent on update (the destination's to keep once written).
    #[serde(default)]
    pub omit: Vec<String>,
    /// Fields copied into each update from the destination record as it is now, which is read
    /// before updating: a version the provider checks, such as QuickBooks Online's `SyncToken`
    /// (an update with an older one is refused as a conflict).
    #[serde(default)]
    pub carry: Vec<String>,
}

/// A list field of the written record, one element per item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ListMapping {
    /// The expression giving the elements (`item`, and `index` from 0, in scope for each).
    pub each: String,
    /// Each element's fields.
    pub fields: IndexMap<String, String>,
}

/// The write at the destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Write {
    /// A connection alias.
    pub connection: String,
    /// A resource with a `create` operation (and `update`, unless updates are never made).
    pub resource: String,
    /// The destination record this source record is written to when it exists already (an
    /// expression giving its id, for instance a record the flow is told about in its options):
    /// the first write updates it, under the update policy, instead of creating one. When the
    /// expression gives none, the record is created as usual.
    #[serde(default)]
    pub id: Option<String>,
    /// Destination field → expression.
    pub fields: IndexMap<String, String>,
    /// Destination list fields, one element per item.
    #[serde(default)]
    pub lists: IndexMap<String, ListMapping>,
    /// The natural key, for reconciliation.
    #[serde(default)]
    pub natural_key: Option<NaturalKey>,
    /// When an existing record is updated.
    #[serde(default)]
    pub update: UpdatePolicy,
}

/// A write back at the source (or any connection) after a record was written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct WriteBack {
    /// A connection alias.
    pub connection: String,
    /// The resource written: with `update`, the record updated is the source record; with
    /// `create`, a record of its own (for an API that keeps references apart from the records
    /// they describe, where the create is an upsert).
    pub resource: String,
    /// Which operation of the resource writes it.
    #[serde(default)]
    pub operation: BackOperation,
    /// Field → expression (`written.id` and the stream's scope).
    pub fields: IndexMap<String, String>,
}

/// The operation a write-back uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BackOperation {
    /// Update the source record (`id` is the source record's id).
    #[default]
    Update,
    /// Create a record: for a create that is an upsert at the provider (writing back twice
    /// must be harmless, since a run that dies after sending it sends it again).
    Create,
}

impl BackOperation {
    /// The operation's name in a spec.
    pub fn name(self) -> &'static str {
        match self {
            BackOperation::Update => "update",
            BackOperation::Create => "create",
        }
    }
}

/// A mapping table: inline rows, rows from a CSV file, or both (the file's rows win).
///
/// A file whose header names `Mavenlink ID` and `External ID` (Kantata M-Bridge's mapping
/// export; case and surrounding spaces do not matter) is read with those as key and value, and
/// its optional `Mavenlink Display Name` and `External Display Name` columns are kept for
/// `weft tables show` and `weft tables suggest`. Other files name their columns with
/// `key-column` and `value-column` (`key` and `value` when left out).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Table {
    /// Rows: key → value.
    #[serde(default)]
    pub rows: IndexMap<String, String>,
    /// A CSV file (relative to the flow file) with a header row.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Column of the key in the file (default: `Mavenlink ID` when the header has M-Bridge's
    /// columns, else `key`).
    #[serde(default)]
    pub key_column: Option<String>,
    /// Column of the value in the file (default: `External ID` when the header has M-Bridge's
    /// columns, else `value`).
    #[serde(default)]
    pub value_column: Option<String>,
    /// Each value may be mapped from one key only (users, contacts); two keys mapped to one
    /// value are refused when the flow loads. When false (the default), several keys may map to
    /// one value (expense categories → one account).
    #[serde(default)]
    pub one_to_one: bool,
    /// Where `weft tables suggest` reads the two sides of the table to propose rows.
    #[serde(default)]
    pub suggest: Option<TableSuggest>,
}

/// The two sides of a table, read by `weft tables suggest` to propose rows by matching names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TableSuggest {
    /// The records whose ids are the table's keys (M-Bridge's Mavenlink side).
    pub left: TableSide,
    /// The records whose ids are the table's values (M-Bridge's external side).
    pub right: TableSide,
}

/// One side of a table: a listed resource and how to read each record (`found` in scope).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TableSide {
    /// A connection alias from `[connections]`.
    pub connection: String,
    /// A resource of its connector with a `list` operation.
    pub resource: String,
    /// Parameters passed to the list, as for a stream's source.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// The expression giving the id that goes in the table (`found` in scope); records whose
    /// key is empty are left out.
    pub key: String,
    /// The expression giving the display name compared with the other side's.
    pub name: String,
    /// The expression giving an email address, compared first when both sides give one.
    #[serde(default)]
    pub email: Option<String>,
}

/// File name of the committed JSON Schema of flow files (beside the templates).
pub const SCHEMA_FILE: &str = "weft-flow.schema.json";

/// The JSON Schema of flow files, as pretty JSON with a trailing newline.
pub fn schema_json() -> String {
    let mut schema = schemars::schema_for!(FlowFile);
    schema.insert("title".into(), "Weft flow".into());
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// A Markdown reference of the flow language, from the schema: every table and key with its
/// type and meaning.
pub fn reference_markdown() -> String {
    let schema: serde_json::Value = serde_json::from_str(&schema_json()).unwrap_or_default();
    let mut out = String::from(
        "# The flow language\n\nA flow is `flows/NAME.toml` in a workspace. Every key below is checked when the flow loads (`weft flow check`); expressions are MiniJinja. Editors that read `#:schema` comments can use `templates/weft-flow.schema.json`.\n",
    );
    let describe = |out: &mut String, title: &str, node: &serde_json::Value| {
        out.push_str(&format!("\n## {title}\n\n"));
        if let Some(d) = node["description"].as_str() {
            out.push_str(d);
            out.push_str("\n\n");
        }
        if let Some(props) = node["properties"].as_object() {
            let required: Vec<&str> = node["required"]
                .as_array()
                .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            out.push_str("| key | required | meaning |\n|---|---|---|\n");
            for (key, p) in props {
                let text = p["description"]
                    .as_str()
                    .unwrap_or_default()
                    .replace('\n', " ");
                out.push_str(&format!(
                    "| `{key}` | {} | {} |\n",
                    if required.contains(&key.as_str()) {
                        "yes"
                    } else {
                        ""
                    },
                    text.replace('|', "\\|")
                ));
            }
        }
        if let Some(options) = node["oneOf"].as_array().or(node["enum"].as_array()) {
            for o in options {
                let name = o["const"].as_str().or(o.as_str()).unwrap_or_default();
                let text = o["description"].as_str().unwrap_or_default();
                out.push_str(&format!("- `{name}`: {text}\n"));
            }
        }
    };
    describe(&mut out, "The flow file", &schema);
    if let Some(defs) = schema["$defs"].as_object() {
        for (name, node) in defs {
            describe(&mut out, name, node);
        }
    }
    out
}

/// A problem in a flow or its tables, located.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
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
    /// The tables with their files read: key → value.
    pub tables: BTreeMap<String, BTreeMap<String, String>>,
    /// The tables' rows as read, in order, with their display names and where each is.
    pub rows: BTreeMap<String, Vec<crate::tables::TableRow>>,
    /// The text, for locating problems found later ([`Flow::check_against`]).
    text: String,
}

fn position(text: &str, offset: usize) -> (usize, usize) {
    let at = weft_core::diagnostic::line_col(text, offset);
    (at.line, at.column)
}

/// One step of a key path.
#[derive(Debug, Clone)]
enum Part {
    Key(String),
    Index(usize),
}

fn k(s: &str) -> Part {
    Part::Key(s.to_owned())
}

/// Where the value at `path` is in `text` (the nearest ancestor that exists).
fn locate(text: &str, path: &[Part]) -> (usize, usize) {
    let Ok(root) = DeTable::parse(text) else {
        return (0, 0);
    };
    let mut best = 0;
    let mut current = DeValue::Table(root.get_ref().clone());
    for part in path {
        let next: Option<Spanned<DeValue<'_>>> = match (&current, part) {
            (DeValue::Table(t), Part::Key(key)) => t
                .iter()
                .find(|(name, _)| name.get_ref().as_ref() == key.as_str())
                .map(|(name, value)| {
                    best = name.span().start;
                    value.clone()
                }),
            (DeValue::Array(a), Part::Index(i)) => a.get(*i).cloned().inspect(|v| {
                best = v.span().start;
            }),
            _ => None,
        };
        let Some(next) = next else { break };
        current = next.into_inner();
    }
    position(text, best)
}

/// The names each place of a stream may read.
mod scope {
    pub(super) const RECORD: &[&str] = &["record", "options", "tables", "linked", "lookup"];
    /// An items block (`items` holds the lists of the blocks before it).
    pub(super) const BLOCK: &[&str] = &["record", "options", "tables", "linked", "lookup", "items"];
    pub(super) const ITEM: &[&str] = &[
        "record", "options", "tables", "linked", "lookup", "items", "item",
    ];
    pub(super) const GROUP: &[&str] = &[
        "record", "options", "tables", "linked", "lookup", "items", "group",
    ];
    /// What a lookup's filter may read: the flow's own settings, the same for every record.
    pub(super) const OPTIONS: &[&str] = &["options", "tables"];
    pub(super) const WRITE: &[&str] = &["record", "options", "tables", "linked", "lookup", "items"];
    pub(super) const WRITE_ITEM: &[&str] = &[
        "record", "options", "tables", "linked", "lookup", "items", "item", "index",
    ];
    pub(super) const FOUND: &[&str] = &["found", "options", "tables"];
    pub(super) const CREATE: &[&str] = &["key", "record", "options", "tables", "linked", "lookup"];
    pub(super) const BACK: &[&str] = &[
        "record", "options", "tables", "linked", "lookup", "items", "written",
    ];
}

/// What an expression may read, for the load-time check.
struct Names<'a> {
    roots: &'a [&'a str],
    options: &'a BTreeSet<String>,
    tables: &'a BTreeSet<String>,
    lookups: &'a [String],
    items: &'a BTreeSet<String>,
}

/// The list parameters an operation passes on: the names its templates read as `params.NAME`.
pub fn passed_params(op: &weft_core::model::Operation) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let texts = std::iter::once(&op.path)
        .chain(op.query.values())
        .chain(op.headers.values());
    for text in texts {
        for (i, _) in text.match_indices("params.") {
            if text[..i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
            {
                continue;
            }
            let name: String = text[i + 7..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// Splits an `&`-joined list of `name=value` parameters (a value may be empty; a part without
/// `=` or with an empty name is refused).
pub fn split_params(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for part in text.split('&').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() => {
                out.push((name.trim().to_owned(), value.trim().to_owned()))
            }
            _ => {
                return Err(format!(
                    "`{part}` is not a `name=value` parameter (parameters are joined with `&`, as in `workspace_ids=1,2&include_archived=true`)"
                ));
            }
        }
    }
    Ok(out)
}

/// `-` in option names reads as `_` in expressions.
pub fn option_name(name: &str) -> String {
    name.replace('-', "_")
}

fn close(given: &str, known: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    known
        .into_iter()
        .map(|c| {
            let c = c.as_ref().to_owned();
            (strsim::damerau_levenshtein(given, &c), c)
        })
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min()
        .map_or_else(String::new, |(_, c)| format!("; did you mean `{c}`?"))
}

/// Checks an expression: it parses, and reads only what its place provides.
fn check_expression(expr: &str, names: &Names<'_>) -> Result<(), String> {
    let env = crate::mapping::environment();
    let compiled = env.compile_expression(expr).map_err(|e| {
        format!(
            "`{expr}` is not a valid expression: {}",
            e.detail().unwrap_or(&e.to_string())
        )
    })?;
    let mut used: Vec<String> = compiled.undeclared_variables(true).into_iter().collect();
    used.sort();
    for name in used {
        let mut parts = name.split('.');
        let root = parts.next().unwrap_or_default();
        let attr = parts.next();
        if crate::mapping::FUNCTIONS.contains(&root) {
            continue;
        }
        if !names.roots.contains(&root) {
            return Err(format!(
                "`{expr}` reads `{root}`, which is not available here (here: {}){}",
                names.roots.join(", "),
                close(root, names.roots)
            ));
        }
        let Some(attr) = attr else { continue };
        let (known, what): (Vec<String>, &str) = match root {
            "options" => (names.options.iter().cloned().collect(), "option"),
            "tables" => (names.tables.iter().cloned().collect(), "table"),
            "lookup" => (names.lookups.to_vec(), "earlier lookup"),
            "items" => (names.items.iter().cloned().collect(), "items list"),
            _ => continue,
        };
        if !known.iter().any(|n| n == attr) {
            return Err(format!(
                "`{expr}` reads {root}.{attr}, but there is no {what} `{attr}`{}",
                close(attr, &known)
            ));
        }
    }
    Ok(())
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

    /// The options as expressions read them (`-` in names read as `_`).
    pub fn options_value(&self) -> serde_json::Map<String, serde_json::Value> {
        self.file
            .options
            .iter()
            .map(|(k, v)| {
                (
                    option_name(k),
                    serde_json::to_value(v).unwrap_or(serde_json::Value::Null),
                )
            })
            .collect()
    }

    /// The list parameters of a lookup's `filter` expression (over `options` and `tables`).
    pub fn filter_params(&self, filter: &str) -> Result<Vec<(String, String)>, String> {
        let scope = minijinja::context! {
            options => minijinja::Value::from_serialize(self.options_value()),
            tables => minijinja::Value::from_serialize(&self.tables),
        };
        let text = match crate::mapping::value("filter", filter, &scope)? {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(s)) => s,
            Some(other) => {
                return Err(format!(
                    "filter `{filter}` gives {other}, not a text of `name=value` parameters joined with `&`"
                ));
            }
        };
        split_params(&text)
    }

    /// The stream `name`.
    pub fn stream(&self, name: &str) -> Option<&Stream> {
        self.file.streams.get(name)
    }

    /// `Err` with a message naming the streams there are, when the flow has no stream `name`.
    pub fn has_stream(&self, name: &str) -> Result<(), String> {
        match self.stream(name) {
            Some(_) => Ok(()),
            None => Err(format!(
                "flow `{}` has no stream `{name}`; its streams are: {}",
                self.name,
                self.file
                    .streams
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// The connection name in `weft.toml` of alias `alias`.
    pub fn connection_name(&self, alias: &str) -> String {
        self.file
            .connections
            .get(alias)
            .and_then(|c| c.connection.clone())
            .unwrap_or_else(|| alias.to_owned())
    }

    /// Parses flow `name` from `text` (read from `path`, which locates its CSV tables).
    pub fn parse(name: &str, path: &Path, text: &str) -> Result<Self, FlowError> {
        Self::parse_leaving_out(name, path, text, None)
    }

    /// Loads `path` like [`Flow::load`], leaving out the file of table `table` (its inline rows
    /// only), so the file can be written anew (`weft tables import`) even when it is missing or
    /// bad.
    pub fn load_leaving_out(path: &Path, table: &str) -> Result<Self, FlowError> {
        let text = std::fs::read_to_string(path).map_err(|source| FlowError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self::parse_leaving_out(&name, path, &text, Some(table))
    }

    /// Where a key path is in the flow file (line, column), for messages about it.
    pub fn locate_key(&self, path: &[&str]) -> (usize, usize) {
        let parts: Vec<Part> = path.iter().map(|p| k(p)).collect();
        locate(&self.text, &parts)
    }

    fn parse_leaving_out(
        name: &str,
        path: &Path,
        text: &str,
        skip_file_of: Option<&str>,
    ) -> Result<Self, FlowError> {
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
        let at = |path: &[Part]| locate(text, path);
        let options: BTreeSet<String> = file.options.keys().map(|o| option_name(o)).collect();
        let table_names: BTreeSet<String> = file.tables.keys().cloned().collect();
        let aliases: Vec<&String> = file.connections.keys().collect();
        for (alias, c) in &file.connections {
            if c.connector.trim().is_empty() {
                problems.push(problem(
                    at(&[k("connections"), k(alias), k("connector")]),
                    format!("connections.{alias}.connector is empty; name a connector from `weft connectors list`"),
                ));
            }
        }
        if let Some(schedule) = &file.schedule
            && let Err(e) = schedule.parse::<crate::schedule::Schedule>()
        {
            problems.push(problem(at(&[k("schedule")]), e.to_string()));
        }
        if file.streams.is_empty() {
            problems.push(problem(
                (1, 1),
                "the flow has no stream; add a [streams.NAME] table (docs/flows.md in the Weft repository describes the language)".to_owned(),
            ));
        }
        let stream_names: Vec<&String> = file.streams.keys().collect();
        for (si, (sname, stream)) in file.streams.iter().enumerate() {
            let base = |rest: &[Part]| {
                let mut p = vec![k("streams"), k(sname)];
                p.extend_from_slice(rest);
                p
            };
            let alias_check = |alias: &str, path: Vec<Part>, problems: &mut Vec<FlowProblem>| {
                if !file.connections.contains_key(alias) {
                    problems.push(problem(
                        at(&path),
                        format!(
                            "`{alias}` is not one of the flow's connections ({}){}; declare it under [connections.{alias}]",
                            aliases.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", "),
                            close(alias, &aliases)
                        ),
                    ));
                }
            };
            alias_check(
                &stream.source.connection,
                base(&[k("source"), k("connection")]),
                &mut problems,
            );
            if let Some(ch) = &stream.source.changes {
                for (name, e) in [("subject", &ch.subject), ("event", &ch.event)] {
                    if let Err(message) = check_expression(
                        e,
                        &Names {
                            roots: scope::FOUND,
                            options: &options,
                            tables: &table_names,
                            lookups: &[],
                            items: &BTreeSet::new(),
                        },
                    ) {
                        problems.push(problem(
                            at(&base(&[k("source"), k("changes"), k(name)])),
                            message,
                        ));
                    }
                }
            }
            alias_check(
                &stream.write.connection,
                base(&[k("write"), k("connection")]),
                &mut problems,
            );
            let mut lookups: Vec<String> = Vec::new();
            let mut items: BTreeSet<String> = BTreeSet::new();
            let expr = |e: &str,
                        roots: &[&str],
                        lookups: &[String],
                        items: &BTreeSet<String>,
                        path: Vec<Part>,
                        problems: &mut Vec<FlowProblem>| {
                let names = Names {
                    roots,
                    options: &options,
                    tables: &table_names,
                    lookups,
                    items,
                };
                if let Err(message) = check_expression(e, &names) {
                    problems.push(problem(at(&path), message));
                }
            };
            if let Some(join) = &stream.join {
                match file.streams.get_index_of(&join.stream) {
                    Some(j) if j < si => {}
                    _ => problems.push(problem(
                        at(&base(&[k("join"), k("stream")])),
                        format!(
                            "join.stream `{}` must name a stream declared before `{sname}`{}",
                            join.stream,
                            close(&join.stream, &stream_names)
                        ),
                    )),
                }
                expr(
                    &join.on,
                    &["record", "options", "tables"],
                    &[],
                    &items,
                    base(&[k("join"), k("on")]),
                    &mut problems,
                );
            }
            for (i, l) in stream.lookup.iter().enumerate() {
                let lp = |rest: &str| base(&[k("lookup"), Part::Index(i), k(rest)]);
                alias_check(&l.connection, lp("connection"), &mut problems);
                if l.load == LookupLoad::All {
                    let set: Vec<&str> = [
                        ("key", !l.key.is_empty()),
                        ("match", l.match_field.is_some()),
                        ("create", l.create.is_some()),
                        ("ignore-case", l.ignore_case),
                    ]
                    .into_iter()
                    .filter_map(|(n, set)| set.then_some(n))
                    .collect();
                    if let Some(first) = set.first() {
                        problems.push(problem(
                            at(&lp(first)),
                            format!("lookup `{}` has `load = \"all\"`: it is the whole list, so it takes no {}; leave {} out, or load by key", l.name, set.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "), if set.len() == 1 { "it" } else { "them" }),
                        ));
                    }
                } else if l.key.trim().is_empty() {
                    problems.push(problem(
                        at(&lp("name")),
                        format!("lookup `{}` needs `key`: the expression giving what to find (or `load = \"all\"` for the whole list)", l.name),
                    ));
                } else {
                    expr(
                        &l.key,
                        scope::RECORD,
                        &lookups,
                        &items,
                        lp("key"),
                        &mut problems,
                    );
                }
                if let Some(w) = &l.when {
                    expr(
                        w,
                        scope::RECORD,
                        &lookups,
                        &items,
                        lp("when"),
                        &mut problems,
                    );
                }
                if let Some(f) = &l.filter {
                    expr(
                        f,
                        scope::OPTIONS,
                        &lookups,
                        &items,
                        lp("filter"),
                        &mut problems,
                    );
                }
                if l.load == LookupLoad::Get && (!l.params.is_empty() || l.filter.is_some()) {
                    problems.push(problem(
                        at(&lp(if l.params.is_empty() { "filter" } else { "params" })),
                        format!("lookup `{}` reads one record by id (`load = \"get\"`), which takes no list parameters; load a list to filter it", l.name),
                    ));
                }
                if let Some(c) = &l.candidates {
                    expr(
                        c,
                        scope::FOUND,
                        &lookups,
                        &items,
                        lp("candidates"),
                        &mut problems,
                    );
                }
                if let Some(create) = &l.create {
                    for (field, e) in create {
                        expr(
                            e,
                            scope::CREATE,
                            &lookups,
                            &items,
                            base(&[k("lookup"), Part::Index(i), k("create"), k(field)]),
                            &mut problems,
                        );
                    }
                }
                if matches!(l.load, LookupLoad::List | LookupLoad::Keys) && l.match_field.is_none()
                {
                    problems.push(problem(
                        at(&lp("load")),
                        format!("lookup `{}` reads a list, so it needs `match`: the field compared with the key", l.name),
                    ));
                }
                if (l.load == LookupLoad::Keys) != l.param.is_some() {
                    problems.push(problem(
                        at(&lp(if l.param.is_some() { "param" } else { "load" })),
                        format!("lookup `{}`: `param` (the list parameter that takes the keys) goes with `load = \"keys\"`, and only with it", l.name),
                    ));
                }
                if l.batch.is_some() && l.load != LookupLoad::Keys || l.batch == Some(0) {
                    problems.push(problem(
                        at(&lp("batch")),
                        format!("lookup `{}`: `batch` is the number of keys per call with `load = \"keys\"` (at least 1)", l.name),
                    ));
                }
                if lookups.contains(&l.name) {
                    problems.push(problem(
                        at(&lp("name")),
                        format!("lookup `{}` is declared twice", l.name),
                    ));
                }
                lookups.push(l.name.clone());
            }
            for (i, block) in stream.items.iter().enumerate() {
                let ip = |rest: &[Part]| {
                    let mut p = vec![k("items"), Part::Index(i)];
                    p.extend_from_slice(rest);
                    base(&p)
                };
                expr(
                    &block.each,
                    scope::BLOCK,
                    &lookups,
                    &items,
                    ip(&[k("each")]),
                    &mut problems,
                );
                if let Some(w) = &block.when {
                    expr(
                        w,
                        scope::BLOCK,
                        &lookups,
                        &items,
                        ip(&[k("when")]),
                        &mut problems,
                    );
                }
                for (n, e) in &block.lets {
                    expr(
                        e,
                        scope::ITEM,
                        &lookups,
                        &items,
                        ip(&[k("let"), k(n)]),
                        &mut problems,
                    );
                }
                if let Some(g) = &block.group_by {
                    expr(
                        g,
                        scope::ITEM,
                        &lookups,
                        &items,
                        ip(&[k("group-by")]),
                        &mut problems,
                    );
                }
                let roots = if block.group_by.is_some() {
                    scope::GROUP
                } else {
                    scope::ITEM
                };
                for (n, e) in &block.fields {
                    expr(
                        e,
                        roots,
                        &lookups,
                        &items,
                        ip(&[k("fields"), k(n)]),
                        &mut problems,
                    );
                }
                items.insert(block.into.clone());
            }
            // Skip rules run after the lookups they read, and after the items when they read
            // those.
            for (i, skip) in stream.skip.iter().enumerate() {
                expr(
                    &skip.when,
                    scope::WRITE,
                    &lookups,
                    &items,
                    base(&[k("skip"), Part::Index(i), k("when")]),
                    &mut problems,
                );
            }

            let w = &stream.write;
            if let Some(id) = &w.id {
                expr(
                    id,
                    scope::WRITE,
                    &lookups,
                    &items,
                    base(&[k("write"), k("id")]),
                    &mut problems,
                );
            }
            for (field, e) in &w.fields {
                expr(
                    e,
                    scope::WRITE,
                    &lookups,
                    &items,
                    base(&[k("write"), k("fields"), k(field)]),
                    &mut problems,
                );
            }
            for (list, m) in &w.lists {
                expr(
                    &m.each,
                    scope::WRITE,
                    &lookups,
                    &items,
                    base(&[k("write"), k("lists"), k(list), k("each")]),
                    &mut problems,
                );
                for (field, e) in &m.fields {
                    expr(
                        e,
                        scope::WRITE_ITEM,
                        &lookups,
                        &items,
                        base(&[k("write"), k("lists"), k(list), k("fields"), k(field)]),
                        &mut problems,
                    );
                }
            }
            if let Some(nk) = &w.natural_key {
                // A path starts at a written field (`Receipts.0.ReceiptID` at `Receipts`).
                let first = weft_core::fieldpath::segments(&nk.field)
                    .ok()
                    .and_then(|s| s.into_iter().next())
                    .unwrap_or_else(|| nk.field.clone());
                if !w.fields.contains_key(&nk.field)
                    && !w.fields.contains_key(&first)
                    && !w.lists.contains_key(&first)
                {
                    problems.push(problem(
                        at(&base(&[k("write"), k("natural-key"), k("field")])),
                        format!(
                            "natural-key.field `{}` is not one of write.fields{}",
                            nk.field,
                            close(&nk.field, w.fields.keys())
                        ),
                    ));
                }
                if let Some(e) = &nk.ignore {
                    expr(
                        e,
                        scope::FOUND,
                        &lookups,
                        &items,
                        base(&[k("write"), k("natural-key"), k("ignore")]),
                        &mut problems,
                    );
                }
            }
            if let Some(e) = &w.update.when {
                expr(
                    e,
                    scope::FOUND,
                    &lookups,
                    &items,
                    base(&[k("write"), k("update"), k("when")]),
                    &mut problems,
                );
            }
            if let Some(t) = w.natural_key.as_ref().and_then(|n| n.format.as_ref())
                && let Err(e) = crate::mapping::environment().template_from_str(t)
            {
                problems.push(problem(
                    at(&base(&[k("write"), k("natural-key"), k("format")])),
                    format!("natural-key.format is not a valid template: {e}"),
                ));
            }
            if let Some(t) = &w.update.refused
                && let Err(e) = crate::mapping::environment().template_from_str(t)
            {
                problems.push(problem(
                    at(&base(&[k("write"), k("update"), k("refused")])),
                    format!("update.refused is not a valid template: {e}"),
                ));
            }
            for (i, back) in stream.write_back.iter().enumerate() {
                alias_check(
                    &back.connection,
                    base(&[k("write-back"), Part::Index(i), k("connection")]),
                    &mut problems,
                );
                for (field, e) in &back.fields {
                    expr(
                        e,
                        scope::BACK,
                        &lookups,
                        &items,
                        base(&[k("write-back"), Part::Index(i), k("fields"), k(field)]),
                        &mut problems,
                    );
                }
            }
        }
        let mut tables = BTreeMap::new();
        let mut all_rows = BTreeMap::new();
        for (table, spec) in &file.tables {
            let tp = |rest: &[Part]| {
                let mut p = vec![k("tables"), k(table)];
                p.extend_from_slice(rest);
                p
            };
            let inline: Vec<crate::tables::TableRow> = spec
                .rows
                .iter()
                .map(|(key, value)| {
                    let (line, _) = at(&tp(&[k("rows"), k(key)]));
                    crate::tables::TableRow {
                        key: key.clone(),
                        value: value.clone(),
                        key_name: String::new(),
                        value_name: String::new(),
                        file: shown.clone(),
                        line,
                    }
                })
                .collect();
            for row in &inline {
                if row.key.trim().is_empty() || row.value.trim().is_empty() {
                    problems.push(problem(
                        (row.line, 1),
                        format!("table `{table}` has a row with an empty key or value; fill it in or delete it"),
                    ));
                }
            }
            let mut from_file = Vec::new();
            if let Some(csv) = &spec.file
                && skip_file_of != Some(table.as_str())
            {
                let csv_path = path.parent().unwrap_or(Path::new(".")).join(csv);
                let columns = crate::tables::Columns {
                    key: spec.key_column.as_deref(),
                    value: spec.value_column.as_deref(),
                };
                if csv_path.exists() {
                    match crate::tables::read_file(&csv_path, columns) {
                        Ok(found) => from_file = found,
                        Err(mut found) => problems.append(&mut found),
                    }
                } else {
                    problems.push(problem(
                        at(&tp(&[k("file")])),
                        format!(
                            "the file of table `{table}`, {}, does not exist; write it with `weft tables import {name} {table} FILE` (a CSV file with M-Bridge's columns) or fix `file`",
                            crate::tables::shown(&csv_path).display()
                        ),
                    ));
                }
            }
            if spec.file.is_none() && (spec.key_column.is_some() || spec.value_column.is_some()) {
                problems.push(problem(
                    at(&tp(&[k(if spec.key_column.is_some() { "key-column" } else { "value-column" })])),
                    format!("table `{table}` names a column but has no `file`; add `file = \"…\"` or remove the column"),
                ));
            }
            let rows = crate::tables::merge(inline, from_file);
            if spec.one_to_one {
                problems.extend(crate::tables::check_one_to_one(table, &rows));
            }
            if let Some(sides) = &spec.suggest {
                for (which, side) in [("left", &sides.left), ("right", &sides.right)] {
                    let sp = |key: &str| tp(&[k("suggest"), k(which), k(key)]);
                    if !file.connections.contains_key(&side.connection) {
                        problems.push(problem(
                            at(&sp("connection")),
                            format!(
                                "`{}` is not one of the flow's connections ({}){}; declare it under [connections.{}]",
                                side.connection,
                                aliases.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", "),
                                close(&side.connection, &aliases),
                                side.connection
                            ),
                        ));
                    }
                    let names = Names {
                        roots: scope::FOUND,
                        options: &options,
                        tables: &table_names,
                        lookups: &[],
                        items: &BTreeSet::new(),
                    };
                    let exprs = [
                        ("key", Some(&side.key)),
                        ("name", Some(&side.name)),
                        ("email", side.email.as_ref()),
                    ];
                    for (key, e) in exprs {
                        if let Some(e) = e
                            && let Err(message) = check_expression(e, &names)
                        {
                            problems.push(problem(at(&sp(key)), message));
                        }
                    }
                }
            }
            tables.insert(
                table.clone(),
                rows.iter()
                    .map(|r| (r.key.clone(), r.value.clone()))
                    .collect(),
            );
            all_rows.insert(table.clone(), rows);
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
            rows: all_rows,
            text: text.to_owned(),
        })
    }

    /// Checks the flow against its connectors' specs (`spec` finds one by id): every resource
    /// and operation it uses exists, and every field it writes is one the resource declares.
    /// Returns every problem, located.
    pub fn check_against(&self, spec: &dyn Fn(&str) -> Option<Spec>) -> Vec<FlowProblem> {
        let shown = self.path.display().to_string();
        let mut problems = Vec::new();
        let mut push = |path: Vec<Part>, message: String| {
            let (line, column) = locate(&self.text, &path);
            problems.push(FlowProblem {
                file: shown.clone(),
                line,
                column,
                message,
            });
        };
        let mut specs = BTreeMap::new();
        for (alias, c) in &self.file.connections {
            match spec(&c.connector) {
                Some(s) => {
                    specs.insert(alias.clone(), s);
                }
                None => push(
                    vec![k("connections"), k(alias), k("connector")],
                    format!(
                        "there is no connector `{}`; see `weft connectors list`",
                        c.connector
                    ),
                ),
            }
        }
        let resource = |alias: &str, name: &str| -> Result<Option<Resource>, String> {
            let Some(s) = specs.get(alias) else {
                return Ok(None);
            };
            let file = s.file();
            file.resources.get(name).cloned().map(Some).ok_or_else(|| {
                format!(
                    "connector `{}` has no resource `{name}`{}",
                    file.id,
                    close(name, file.resources.keys())
                )
            })
        };
        let needs = |r: &Resource, op: &str| -> bool {
            match op {
                "list" => r.list.is_some(),
                "get" => r.get.is_some(),
                "create" => r.create.is_some(),
                "update" => r.update.is_some(),
                _ => false,
            }
        };
        for (sname, stream) in &self.file.streams {
            let base = |rest: &[&str]| {
                let mut p = vec![k("streams"), k(sname)];
                p.extend(rest.iter().map(|r| k(r)));
                p
            };
            let mut uses: Vec<(Vec<Part>, &str, &str, Vec<&'static str>)> = vec![
                (
                    base(&["source", "resource"]),
                    &stream.source.connection,
                    &stream.source.resource,
                    vec!["list"],
                ),
                (
                    base(&["write", "resource"]),
                    &stream.write.connection,
                    &stream.write.resource,
                    if stream.write.update.never {
                        vec!["create"]
                    } else if stream.write.id.is_some() {
                        // Written in place: a create is needed only when `id` may give none.
                        vec!["update"]
                    } else {
                        vec!["create", "update"]
                    },
                ),
            ];
            for (i, l) in stream.lookup.iter().enumerate() {
                let mut ops = vec![match l.load {
                    LookupLoad::Get => "get",
                    LookupLoad::List | LookupLoad::Keys | LookupLoad::All => "list",
                }];
                if l.create.is_some() {
                    ops.push("create");
                }
                uses.push((
                    vec![
                        k("streams"),
                        k(sname),
                        k("lookup"),
                        Part::Index(i),
                        k("resource"),
                    ],
                    &l.connection,
                    &l.resource,
                    ops,
                ));
            }
            for (i, b) in stream.write_back.iter().enumerate() {
                uses.push((
                    vec![
                        k("streams"),
                        k(sname),
                        k("write-back"),
                        Part::Index(i),
                        k("resource"),
                    ],
                    &b.connection,
                    &b.resource,
                    vec![b.operation.name()],
                ));
            }
            for (path, alias, name, ops) in uses {
                match resource(alias, name) {
                    Err(message) => push(path, message),
                    Ok(Some(r)) => {
                        for op in ops {
                            if !needs(&r, op) {
                                push(
                                    path.clone(),
                                    format!(
                                        "resource `{name}` of `{alias}` has no `{op}` operation, which this step needs"
                                    ),
                                );
                            }
                        }
                    }
                    Ok(None) => {}
                }
            }
            // List parameters must be ones the list passes on.
            let mut given: Vec<(Vec<Part>, &str, &str, Vec<String>)> = vec![(
                base(&["source", "params"]),
                &stream.source.connection,
                &stream.source.resource,
                stream.source.params.keys().cloned().collect(),
            )];
            let w = &stream.write;
            let written: Vec<String> = w
                .natural_key
                .iter()
                .filter_map(|n| n.param.clone())
                .chain(w.update.read_param.clone())
                .collect();
            given.push((base(&["write"]), &w.connection, &w.resource, written));
            for (i, l) in stream.lookup.iter().enumerate() {
                let lp =
                    |rest: &str| vec![k("streams"), k(sname), k("lookup"), Part::Index(i), k(rest)];
                let mut names: Vec<String> = l.params.keys().cloned().collect();
                names.extend(l.param.clone());
                given.push((lp("params"), &l.connection, &l.resource, names));
                if let Some(f) = &l.filter {
                    match self.filter_params(f) {
                        Ok(pairs) => given.push((
                            lp("filter"),
                            &l.connection,
                            &l.resource,
                            pairs.into_iter().map(|(n, _)| n).collect(),
                        )),
                        Err(message) => push(lp("filter"), message),
                    }
                }
            }
            if let Some(ch) = &stream.source.changes {
                let path = base(&["source", "changes", "resource"]);
                match resource(&stream.source.connection, &ch.resource) {
                    Err(message) => push(path, message),
                    Ok(Some(r)) => match &r.list {
                        Some(list) if list.incremental.is_some() => given.push((
                            base(&["source", "changes", "params"]),
                            &stream.source.connection,
                            &ch.resource,
                            ch.params.keys().cloned().collect(),
                        )),
                        _ => push(
                            path,
                            format!(
                                "`{}` cannot be a change feed: its list must declare an incremental cursor (the time of each event)",
                                ch.resource
                            ),
                        ),
                    },
                    Ok(None) => {}
                }
                if let Ok(Some(r)) = resource(&stream.source.connection, &stream.source.resource)
                    && r.get.is_none()
                {
                    push(
                        base(&["source", "changes"]),
                        format!(
                            "the records a change feed names are read again by id, and `{}` has no `get`",
                            stream.source.resource
                        ),
                    );
                }
            }
            for (path, alias, name, names) in given {
                let Ok(Some(r)) = resource(alias, name) else {
                    continue;
                };
                let Some(list) = &r.list else { continue };
                let known = passed_params(list);
                for n in names {
                    if !known.contains(&n) {
                        push(
                            path.clone(),
                            format!(
                                "the list of `{name}` does not pass on a parameter `{n}`{}; it passes on: {}",
                                close(&n, &known),
                                if known.is_empty() {
                                    "none".to_owned()
                                } else {
                                    known
                                        .iter()
                                        .map(|k| format!("`{k}`"))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                }
                            ),
                        );
                    }
                }
            }
            // Written fields must be declared by the destination (when it declares fields).
            if let Ok(Some(r)) = resource(&stream.write.connection, &stream.write.resource) {
                check_fields(
                    &r.fields,
                    stream.write.fields.keys(),
                    &stream.write.resource,
                    |field, m| {
                        push(base(&["write", "fields", field]), m);
                    },
                );
                let carried = &stream.write.update.carry;
                check_fields(
                    &r.fields,
                    carried.iter(),
                    &stream.write.resource,
                    |field, m| {
                        let i = carried.iter().position(|c| c == field).unwrap_or(0);
                        push(
                            vec![
                                k("streams"),
                                k(sname),
                                k("write"),
                                k("update"),
                                k("carry"),
                                Part::Index(i),
                            ],
                            m,
                        );
                    },
                );
                for (list, m) in &stream.write.lists {
                    match r.fields.get(list) {
                        Some(rule) if rule.ty == FieldType::Array => {
                            check_fields(
                                &rule.fields,
                                m.fields.keys(),
                                &format!("{} {list}", stream.write.resource),
                                |field, msg| {
                                    push(base(&["write", "lists", list, "fields", field]), msg);
                                },
                            );
                        }
                        Some(_) => push(
                            base(&["write", "lists", list]),
                            format!(
                                "`{list}` of `{}` is not a list field",
                                stream.write.resource
                            ),
                        ),
                        None if r.fields.is_empty() => {}
                        None => push(
                            base(&["write", "lists", list]),
                            format!(
                                "`{}` has no field `{list}`{}",
                                stream.write.resource,
                                close(list, r.fields.keys())
                            ),
                        ),
                    }
                }
            }
            for (i, b) in stream.write_back.iter().enumerate() {
                if let Ok(Some(r)) = resource(&b.connection, &b.resource) {
                    check_fields(&r.fields, b.fields.keys(), &b.resource, |field, m| {
                        push(
                            vec![
                                k("streams"),
                                k(sname),
                                k("write-back"),
                                Part::Index(i),
                                k("fields"),
                                k(field),
                            ],
                            m,
                        );
                    });
                }
            }
            if let Some(sp) = specs.get(&stream.source.connection)
                && let Some(list) = sp
                    .file()
                    .resources
                    .get(&stream.source.resource)
                    .and_then(|r| r.list.as_ref())
                && stream.source.incremental
                && list.incremental.is_none()
                && stream.source.full_every.is_none()
            {
                push(
                    base(&["source", "incremental"]),
                    format!(
                        "`{}` declares no incremental cursor, so every run reads it whole; say so with `incremental = false`",
                        stream.source.resource
                    ),
                );
            }
        }
        for (table, spec) in &self.file.tables {
            let Some(sides) = &spec.suggest else { continue };
            for (which, side) in [("left", &sides.left), ("right", &sides.right)] {
                let path = vec![k("tables"), k(table), k("suggest"), k(which), k("resource")];
                match resource(&side.connection, &side.resource) {
                    Err(message) => push(path, message),
                    Ok(Some(r)) if !needs(&r, "list") => push(
                        path,
                        format!(
                            "resource `{}` of `{}` has no `list` operation, which suggestions need to read it",
                            side.resource, side.connection
                        ),
                    ),
                    Ok(Some(r)) => {
                        let known = r.list.as_ref().map(passed_params).unwrap_or_default();
                        for n in side.params.keys().filter(|n| !known.contains(*n)) {
                            push(
                                vec![k("tables"), k(table), k("suggest"), k(which), k("params")],
                                format!(
                                    "the list of `{}` does not pass on a parameter `{n}`{}",
                                    side.resource,
                                    close(n, &known)
                                ),
                            );
                        }
                    }
                    Ok(None) => {}
                }
            }
        }
        problems
    }
}

/// Each written field must be one the resource declares (when it declares any).
fn check_fields<'a>(
    declared: &IndexMap<String, weft_core::model::RecordField>,
    written: impl Iterator<Item = &'a String>,
    what: &str,
    mut push: impl FnMut(&str, String),
) {
    if declared.is_empty() {
        return;
    }
    for field in written {
        match declared.get(field) {
            None => push(
                field,
                format!(
                    "`{what}` has no field `{field}`{}",
                    close(field, declared.keys())
                ),
            ),
            Some(rule) if rule.read_only => push(
                field,
                format!("`{field}` of `{what}` is set by the provider and cannot be written"),
            ),
            Some(_) => {}
        }
    }
}
