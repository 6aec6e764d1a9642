//! The record field rules a spec declares, as the host hands them over (kebab-case JSON), and
//! their application to values read from a file or records about to be written.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

/// The rules of one record field; keys this plugin does not apply are ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct FieldRule {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    max_length: Option<u32>,
    #[serde(default, rename = "enum")]
    choices: Vec<String>,
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    format: Option<String>,
}

/// A resource's fields in declaration order; empty when the spec declares none (anything goes).
#[derive(Debug, Clone, Default)]
pub(crate) struct Rules {
    fields: Vec<(String, FieldRule)>,
}

impl Rules {
    /// Reads the rules from the host's `fields`: an array of rules, each with its `name`, in
    /// declaration order (empty when the spec declares none).
    pub(crate) fn parse(items: &[Value]) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Named {
            name: String,
            #[serde(flatten)]
            rule: FieldRule,
        }
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let named: Named = serde_json::from_value(item.clone())
                .map_err(|e| format!("field rules `{item}` are not understood: {e}"))?;
            out.push((named.name, named.rule));
        }
        Ok(Self { fields: out })
    }

    /// Whether the spec declares fields.
    pub(crate) fn declared(&self) -> bool {
        !self.fields.is_empty()
    }

    /// The declared field names, in order.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(n, _)| n.as_str())
    }

    fn rule(&self, name: &str) -> Option<&FieldRule> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, r)| r)
    }

    /// Checks that every column of a header is a declared field.
    pub(crate) fn check_columns<'a>(
        &self,
        columns: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), String> {
        if !self.declared() {
            return Ok(());
        }
        for column in columns {
            if self.rule(column).is_none() {
                return Err(format!(
                    "column `{column}` is not a field of the resource; declared fields: {}",
                    self.names().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        Ok(())
    }

    /// A record from text cells (CSV): each cell converted to its field's type; empty cells left out.
    pub(crate) fn record_of_cells<'a>(
        &self,
        cells: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Value, String> {
        let mut record = Map::new();
        for (name, cell) in cells {
            if cell.is_empty() {
                continue;
            }
            let value = match self.rule(name) {
                Some(rule) => parse_cell(name, rule, cell)?,
                None => Value::String(cell.to_owned()),
            };
            record.insert(name.to_owned(), value);
        }
        let record = Value::Object(record);
        self.check(&record)?;
        Ok(record)
    }

    /// Checks a typed record (JSON Lines, or one about to be written) against the rules.
    pub(crate) fn check(&self, record: &Value) -> Result<(), String> {
        let Value::Object(map) = record else {
            return Err(format!("expected an object, found {}", kind(record)));
        };
        if !self.declared() {
            return Ok(());
        }
        for (name, rule) in &self.fields {
            match map.get(name) {
                None | Some(Value::Null) if rule.required => {
                    return Err(format!("required field `{name}` is missing"));
                }
                None | Some(Value::Null) => {}
                Some(value) => check_value(name, rule, value)?,
            }
        }
        if let Some(extra) = map.keys().find(|k| self.rule(k).is_none()) {
            return Err(format!(
                "`{extra}` is not a field of the resource; declared fields: {}",
                self.names().collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(())
    }
}

fn parse_cell(name: &str, rule: &FieldRule, cell: &str) -> Result<Value, String> {
    let bad = |what: &str| format!("field `{name}`: `{cell}` is not {what}");
    let value = match (rule.ty.as_str(), rule.unit.as_deref()) {
        ("integer", _) | ("money", Some("cents")) => cell
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| bad("a whole number"))?,
        ("boolean", _) => match cell {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(bad("`true` or `false`")),
        },
        ("object" | "array", _) => serde_json::from_str(cell).map_err(|_| bad("JSON"))?,
        _ => Value::String(cell.to_owned()),
    };
    check_value(name, rule, &value)?;
    Ok(value)
}

fn check_value(name: &str, rule: &FieldRule, value: &Value) -> Result<(), String> {
    let expected = |what: &str| {
        Err(format!(
            "field `{name}`: expected {what}, found {}",
            short(value)
        ))
    };
    match (rule.ty.as_str(), value) {
        ("integer", Value::Number(n)) if n.is_i64() || n.is_u64() => {}
        ("integer", _) => return expected("a whole number"),
        ("money", Value::Number(n)) if rule.unit.as_deref() == Some("cents") && n.is_i64() => {}
        ("money", _) if rule.unit.as_deref() == Some("cents") => {
            return expected("whole cents");
        }
        ("decimal" | "money", Value::String(s)) if is_decimal(s) => {}
        ("decimal" | "money", _) => {
            return expected("an exact decimal written as text, such as \"12.50\"");
        }
        ("boolean", Value::Bool(_)) => {}
        ("boolean", _) => return expected("true or false"),
        ("object", Value::Object(_)) | ("array", Value::Array(_)) => {}
        ("object", _) => return expected("an object"),
        ("array", _) => return expected("an array"),
        ("date", Value::String(s)) if rule.format.as_deref() != Some("date") || is_date(s) => {}
        ("date", _) => return expected("a date such as 2024-05-31"),
        ("uuid", Value::String(s)) if is_uuid(s) => {}
        ("uuid", _) => return expected("a UUID"),
        ("string" | "datetime" | "reference", Value::String(_)) => {}
        ("reference", Value::Number(_)) => {}
        (_, Value::String(_)) => {}
        _ => return expected("text"),
    }
    if let (Some(max), Value::String(s)) = (rule.max_length, value) {
        let n = s.chars().count();
        if n > max as usize {
            return Err(format!(
                "field `{name}`: {n} characters, more than the {max} allowed"
            ));
        }
    }
    if !rule.choices.is_empty()
        && let Value::String(s) = value
        && !rule.choices.contains(s)
    {
        return Err(format!(
            "field `{name}`: `{s}` is not one of {}",
            rule.choices.join(", ")
        ));
    }
    Ok(())
}

fn is_decimal(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let mut parts = digits.splitn(2, '.');
    let whole = parts.next().unwrap_or_default();
    let frac = parts.next();
    !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && [0, 1, 2, 3, 5, 6, 8, 9]
            .iter()
            .all(|&i| b[i].is_ascii_digit())
        && (1..=12).contains(&s[5..7].parse::<u32>().unwrap_or(0))
        && (1..=31).contains(&s[8..10].parse::<u32>().unwrap_or(0))
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A value as an error message shows it: short, and never more than one line.
fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 40 {
        format!("{}…", text.chars().take(40).collect::<String>())
    } else {
        text
    }
}

/// A record's fields as CSV cells for `columns`.
pub(crate) fn cells(record: &Map<String, Value>, columns: &[String]) -> Vec<String> {
    columns
        .iter()
        .map(|c| match record.get(c) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        })
        .collect()
}

/// Field names of a record in a stable order, for a CSV header when the spec declares none.
pub(crate) fn keys(record: &Map<String, Value>) -> Vec<String> {
    let sorted: BTreeMap<&String, ()> = record.keys().map(|k| (k, ())).collect();
    sorted.into_keys().cloned().collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rules() -> Rules {
        Rules::parse(&[
            json!({"name": "id", "type": "integer", "required": true}),
            json!({"name": "name", "type": "string", "max-length": 5}),
            json!({"name": "status", "type": "string", "enum": ["open", "closed"]}),
            json!({"name": "amount", "type": "money", "unit": "decimal"}),
            json!({"name": "cents", "type": "money", "unit": "cents"}),
            json!({"name": "paid", "type": "boolean"}),
            json!({"name": "due", "type": "date", "format": "date"}),
        ])
        .unwrap()
    }

    #[test]
    fn cells_become_typed_records() {
        let record = rules()
            .record_of_cells([
                ("id", "7"),
                ("name", "Ada"),
                ("paid", "true"),
                ("cents", "250"),
                ("amount", "2.50"),
                ("due", ""),
            ])
            .unwrap();
        assert_eq!(
            record,
            json!({"id": 7, "name": "Ada", "paid": true, "cents": 250, "amount": "2.50"})
        );
    }

    #[test]
    fn each_rule_refuses_with_the_field_named() {
        let r = rules();
        let err = |cells: &[(&str, &str)]| r.record_of_cells(cells.iter().copied()).unwrap_err();
        assert_eq!(err(&[("name", "x")]), "required field `id` is missing");
        assert!(err(&[("id", "x")]).contains("field `id`: `x` is not a whole number"));
        assert!(err(&[("id", "1"), ("name", "abcdef")]).contains("more than the 5 allowed"));
        assert!(err(&[("id", "1"), ("status", "gone")]).contains("not one of open, closed"));
        assert!(err(&[("id", "1"), ("amount", "1.2.3")]).contains("exact decimal"));
        assert!(err(&[("id", "1"), ("due", "2024-13-01")]).contains("a date"));
        assert!(err(&[("id", "1"), ("paid", "yes")]).contains("`true` or `false`"));
        assert!(
            r.check_columns(["id", "colour"])
                .unwrap_err()
                .contains("`colour`")
        );
        assert!(
            r.check(&json!({"id": 1, "colour": "red"}))
                .unwrap_err()
                .contains("`colour`")
        );
        assert!(
            r.check(&json!([1]))
                .unwrap_err()
                .contains("expected an object")
        );
    }

    #[test]
    fn no_declared_fields_accept_any_columns() {
        let r = Rules::parse(&[]).unwrap();
        assert_eq!(r.record_of_cells([("a", "1")]).unwrap(), json!({"a": "1"}));
        assert!(r.check_columns(["anything"]).is_ok());
    }
}
