//! Writing records the way a spec says: each record checked against the resource's field rules,
//! batched up to the operation's size, wrapped in its body shape, sent with a deterministic
//! idempotency key, and answered record by record from the provider's per-item results.

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use weft_core::model::{FieldType, ItemErrors, ItemMatch, Operation, Resource, WriteBody};

use crate::EngineError;
use crate::request::RequestContext;

/// The outcome for one input record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemResult {
    /// Position of the record in the input, from 0.
    pub index: usize,
    /// `ok`, `failed`, or `unknown` (the answer does not mention it).
    pub status: &'static str,
    /// The record's id at the provider, when it came back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// Checks `record` against `resource`'s field rules for a create (`creating`) or an update;
/// returns every problem, each naming the field.
pub fn check_record(resource: &Resource, record: &Value, creating: bool) -> Vec<String> {
    check(
        resource,
        record,
        if creating {
            Purpose::Create
        } else {
            Purpose::Update
        },
    )
}

/// Checks a record as the provider gave it against `resource`'s field rules: the types,
/// lengths and choices of what is there (what is required or read-only matters only to
/// writes); every problem, each naming the field.
pub fn check_read(resource: &Resource, record: &Value) -> Vec<String> {
    check(resource, record, Purpose::Read)
}

/// What a record is checked for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Create,
    Update,
    Read,
}

fn check(resource: &Resource, record: &Value, purpose: Purpose) -> Vec<String> {
    let Some(object) = record.as_object() else {
        return vec!["a record must be a JSON object".to_owned()];
    };
    let mut problems = Vec::new();
    check_object(
        &resource.fields,
        Some(&resource.primary_key),
        object,
        purpose,
        "",
        &mut problems,
    );
    problems
}

/// Checks one object against `fields`; nested objects and list elements against their own
/// declared fields, named with their path (`LineItems[2].UnitAmount`).
fn check_object(
    fields: &indexmap::IndexMap<String, weft_core::model::RecordField>,
    primary_key: Option<&str>,
    object: &Map<String, Value>,
    purpose: Purpose,
    prefix: &str,
    problems: &mut Vec<String>,
) {
    let creating = purpose == Purpose::Create;
    let updating = purpose == Purpose::Update;
    for (field, rule) in fields {
        let name = format!("{prefix}{field}");
        let value = object.get(field);
        match value {
            None | Some(Value::Null) => {
                if creating && rule.required {
                    problems.push(format!("`{name}` is required"));
                }
                if updating && rule.required_on_update {
                    problems.push(format!("`{name}` is required on an update"));
                }
                continue;
            }
            Some(_) if creating && rule.update_only => {
                problems.push(format!(
                    "`{name}` can only be sent on an update, never on a create"
                ));
                continue;
            }
            Some(_)
                if purpose != Purpose::Read
                    && rule.read_only
                    && Some(field.as_str()) != primary_key =>
            {
                problems.push(format!(
                    "`{name}` is set by the provider and cannot be written"
                ));
                continue;
            }
            Some(_) => {}
        }
        let Some(value) = value else { continue };
        let type_ok = match rule.ty {
            FieldType::String | FieldType::Uuid | FieldType::Date | FieldType::Datetime => {
                value.is_string()
            }
            FieldType::Integer => value.is_i64() || value.is_u64(),
            FieldType::Decimal => {
                (value.is_number() && value.as_f64().is_some_and(f64::is_finite))
                    || crate::exact::is_decimal(value)
                    || value
                        .as_str()
                        .is_some_and(|s| s.trim().parse::<rust_decimal::Decimal>().is_ok())
            }
            FieldType::Money => match rule.unit {
                Some(weft_core::model::MoneyUnit::Cents) => value.is_i64() || value.is_u64(),
                _ => {
                    value.is_number()
                        || crate::exact::is_decimal(value)
                        || value
                            .as_str()
                            .is_some_and(|s| s.trim().parse::<rust_decimal::Decimal>().is_ok())
                }
            },
            FieldType::Boolean => value.is_boolean(),
            FieldType::Reference => value.is_string() || value.is_number(),
            FieldType::Object => value.is_object(),
            FieldType::Array => value.is_array(),
        };
        if !type_ok {
            problems.push(format!(
                "`{name}` must be {}",
                type_name(rule.ty, rule.unit)
            ));
            continue;
        }
        if let (Some(max), Some(text)) = (rule.max_length, value.as_str())
            && text.chars().count() > max as usize
        {
            problems.push(format!("`{name}` is longer than {max} characters"));
        }
        if let (false, Some(text)) = (rule.choices.is_empty(), value.as_str())
            && !rule.choices.iter().any(|c| c == text)
        {
            problems.push(format!(
                "`{name}` must be one of {}",
                rule.choices.join(", ")
            ));
        }
        if rule.fields.is_empty() {
            continue;
        }
        match value {
            Value::Object(inner) => {
                check_object(
                    &rule.fields,
                    None,
                    inner,
                    purpose,
                    &format!("{name}."),
                    problems,
                );
            }
            Value::Array(elements) => {
                for (i, element) in elements.iter().enumerate() {
                    match element.as_object() {
                        Some(inner) => check_object(
                            &rule.fields,
                            None,
                            inner,
                            purpose,
                            &format!("{name}[{i}]."),
                            problems,
                        ),
                        None => problems.push(format!("`{name}[{i}]` must be an object")),
                    }
                }
            }
            _ => {}
        }
    }
}

fn type_name(ty: FieldType, unit: Option<weft_core::model::MoneyUnit>) -> &'static str {
    match (ty, unit) {
        (FieldType::Money, Some(weft_core::model::MoneyUnit::Cents)) => "a whole number of cents",
        (FieldType::Money, _) | (FieldType::Decimal, _) => "a decimal number",
        (FieldType::Integer, _) => "a whole number",
        (FieldType::Boolean, _) => "true or false",
        (FieldType::Object, _) => "an object",
        (FieldType::Array, _) => "an array",
        (FieldType::Reference, _) => "an id",
        _ => "text",
    }
}

/// The request body for a batch of records, for the shapes that need no template; an
/// envelope's items are templates, rendered by [`shape`] (here `null`).
pub fn body(op: &Operation, batch: &[Value]) -> Value {
    match op.body.as_ref() {
        Some(WriteBody::Envelope { .. }) => Value::Null,
        Some(WriteBody::Plural { key }) => {
            let mut m = Map::new();
            m.insert(key.clone(), Value::Array(batch.to_vec()));
            Value::Object(m)
        }
        Some(WriteBody::Singular { key }) => {
            let mut m = Map::new();
            m.insert(key.clone(), batch.first().cloned().unwrap_or(Value::Null));
            Value::Object(m)
        }
        Some(WriteBody::Bare) | None => batch.first().cloned().unwrap_or(Value::Null),
    }
}

/// A deterministic idempotency key for one version of a batch: the same records written again
/// (a retry, a rerun after a crash) carry the same key; any change makes a new one.
pub fn idempotency_key(scope: &str, batch: &[Value], max_length: usize) -> String {
    let mut hash = Sha256::new();
    hash.update(scope.as_bytes());
    for record in batch {
        hash.update([0u8]);
        hash.update(record.to_string().as_bytes());
    }
    let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let key = format!("weft-{hex}");
    key.chars().take(max_length.max(16)).collect()
}

/// The idempotency key of a batch for `op`: `None` when the operation declares no idempotency
/// (so no key is sent), else as long as the spec's `max-length` allows.
pub fn idempotency_key_for(op: &Operation, scope: &str, batch: &[Value]) -> Option<String> {
    op.idempotency
        .as_ref()
        .map(|i| idempotency_key(scope, batch, i.max_length as usize))
}

/// The idempotency header of a write with `key`: none where the operation declares no
/// idempotency header (whatever the key). Requests built with the key in their context
/// (`RequestContext::idempotency_key`) carry it already.
pub fn key_header(op: &Operation, key: Option<&str>) -> Option<(String, String)> {
    match (op.idempotency.as_ref().and_then(|i| i.header.as_ref()), key) {
        (Some(header), Some(k)) => Some((header.clone(), k.to_owned())),
        _ => None,
    }
}

/// The value at a dotted path (`Fault.Error`) of `value`.
fn at<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(value, |v, part| v.get(part))
}

/// A scalar as text (a key or an id): strings as they are, numbers in their digits.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Whether `record` carries one of the rule's error statuses, or its fault field.
fn refused(record: Option<&Value>, items: Option<&ItemErrors>) -> bool {
    let (Some(record), Some(rule)) = (record, items) else {
        return false;
    };
    let by_status = rule
        .status_field
        .as_deref()
        .and_then(|field| at(record, field))
        .and_then(Value::as_str)
        .is_some_and(|status| rule.error_values.iter().any(|e| e == status));
    let by_fault = rule
        .fault_field
        .as_deref()
        .and_then(|field| at(record, field))
        .is_some_and(|fault| !fault.is_null());
    by_status || by_fault
}

/// The outcome of record `index` from the returned item that answers it (if any).
fn outcome(
    index: usize,
    record: Option<&Value>,
    items: Option<&ItemErrors>,
    primary_key: &str,
) -> ItemResult {
    let id_field = items.and_then(|rule| rule.id_field.as_deref());
    let id = record
        .and_then(|r| match id_field {
            Some(path) => at(r, path),
            None => r.get(primary_key),
        })
        .and_then(text);
    let failed = items.and_then(|rule| {
        let record = record?;
        let messages = |field: &str| -> Vec<String> {
            let message = |e: &Value| {
                at(e, &rule.message_field)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            match at(record, field) {
                Some(Value::Array(list)) => list.iter().filter_map(message).collect(),
                Some(one @ Value::Object(_)) => message(one).into_iter().collect(),
                _ => Vec::new(),
            }
        };
        let refused = refused(Some(record), Some(rule));
        // A non-empty warnings list fails the item as well (the spec says warnings
        // there mean the record was changed, not written as sent).
        let warned = rule.warnings_field.as_deref().is_some_and(|field| {
            at(record, field)
                .and_then(Value::as_array)
                .is_some_and(|w| !w.is_empty())
        });
        if !refused && !warned {
            return None;
        }
        let mut errors = if refused {
            messages(&rule.errors_field)
        } else {
            Vec::new()
        };
        if let Some(field) = rule.warnings_field.as_deref().filter(|_| warned) {
            errors.extend(messages(field));
        }
        Some(errors)
    });
    match (record, failed) {
        (_, Some(errors)) => ItemResult {
            index,
            status: "failed",
            // Kept when the provider stored the record anyway (failed by its warnings),
            // so whoever reads the result can find what was written.
            id: if refused(record, items) { None } else { id },
            errors: if errors.is_empty() {
                vec!["refused without a message".to_owned()]
            } else {
                errors
            },
        },
        (Some(_), None) => ItemResult {
            index,
            status: "ok",
            id,
            errors: Vec::new(),
        },
        // Neither written nor refused as far as the answer says: the outcome is unknown
        // (a flow keeps the intent pending and settles it by natural key).
        (None, None) => ItemResult {
            index,
            status: "unknown",
            id: None,
            errors: vec!["the provider's answer does not mention this record".to_owned()],
        },
    }
}

/// Per-record outcomes of a batch answer, matched by position: from the per-item results when
/// the spec declares them, else the answer's records in order.
pub fn item_results(
    first_index: usize,
    count: usize,
    returned: &[Value],
    items: Option<&ItemErrors>,
    primary_key: &str,
) -> Vec<ItemResult> {
    (0..count)
        .map(|i| outcome(first_index + i, returned.get(i), items, primary_key))
        .collect()
}

/// Per-record outcomes of a batch answer, each record answered by the returned item whose
/// `match.returned` value equals the record's `match.sent` key (rendered with `record` and
/// `index`): answers that come back in any order, or carry an item id of their own. A record
/// no item names has an unknown outcome.
///
/// With `separate-errors`, the errors listed apart in `body` fail the records whose keys they
/// name, with their messages.
pub fn matched_results(
    env: &minijinja::Environment<'_>,
    sent: &[Value],
    returned: &[Value],
    body: &Value,
    items: &ItemErrors,
    by: &ItemMatch,
    primary_key: &str,
) -> Result<Vec<ItemResult>, EngineError> {
    let by_key: std::collections::HashMap<String, &Value> = returned
        .iter()
        .filter_map(|item| Some((text(at(item, &by.returned)?)?, item)))
        .collect();
    // Messages of the errors listed apart, by the record key each names.
    let mut apart: std::collections::HashMap<String, Vec<String>> = Default::default();
    if let Some(separate) = &items.separate_errors {
        for error in at(body, &separate.path)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let message = at(error, &items.message_field)
                .and_then(Value::as_str)
                .unwrap_or("refused without a message")
                .to_owned();
            let keys: Vec<String> = match at(error, &separate.keys) {
                Some(Value::Array(list)) => list.iter().filter_map(text).collect(),
                Some(one) => text(one).into_iter().collect(),
                None => Vec::new(),
            };
            for key in keys {
                apart.entry(key).or_default().push(message.clone());
            }
        }
    }
    sent.iter()
        .enumerate()
        .map(|(index, record)| {
            let key = env
                .render_str(
                    &by.sent,
                    minijinja::context! { record => crate::exact::plain(record), index => index },
                )
                .map_err(|e| EngineError::Template {
                    place: "item-errors.match.sent".to_owned(),
                    reason: e.to_string(),
                })?;
            let mut result = outcome(index, by_key.get(&key).copied(), Some(items), primary_key);
            if let Some(messages) = apart.get(&key) {
                if result.status != "failed" {
                    result.errors.clear();
                }
                result.status = "failed";
                result.id = None;
                result.errors.extend(messages.iter().cloned());
            }
            Ok(result)
        })
        .collect()
}

/// The per-record outcomes of an answer to operation `name`: matched by key or by position as
/// the operation's `item-errors` says. A one-record delete or action whose answer names no
/// record succeeded (its status said so), under the id it was sent with.
#[allow(clippy::too_many_arguments)]
pub fn results(
    env: &minijinja::Environment<'_>,
    op: &Operation,
    name: &str,
    sent: &[Value],
    returned: &[Value],
    body: &Value,
    primary_key: &str,
    id: Option<&str>,
) -> Result<Vec<ItemResult>, EngineError> {
    let one_record = name != "create" && name != "update";
    if one_record && returned.is_empty() && op.item_errors.is_none() {
        return Ok((0..sent.len().max(1))
            .map(|index| ItemResult {
                index,
                status: "ok",
                id: id.map(str::to_owned),
                errors: Vec::new(),
            })
            .collect());
    }
    match op.item_errors.as_ref() {
        Some(
            items @ ItemErrors {
                match_by: Some(by), ..
            },
        ) => matched_results(env, sent, returned, body, items, by, primary_key),
        items => Ok(item_results(0, sent.len(), returned, items, primary_key)),
    }
}

/// `records` with the operation's `merge` constants set on each (objects only).
pub fn merged(op: &Operation, records: &[Value]) -> Vec<Value> {
    records
        .iter()
        .map(|record| match record {
            Value::Object(fields) if !op.merge.is_empty() => {
                let mut fields = fields.clone();
                for (name, value) in &op.merge {
                    fields.insert(name.clone(), value.clone());
                }
                Value::Object(fields)
            }
            other => other.clone(),
        })
        .collect()
}

/// The request body of operation `name` for `records` (already merged): the operation's
/// shape, an envelope's items rendered one per record; `None` when a delete or an action
/// declares no body.
pub fn shape(
    env: &minijinja::Environment<'_>,
    op: &Operation,
    name: &str,
    records: &[Value],
    ctx: &RequestContext,
) -> Result<Option<Value>, EngineError> {
    match &op.body {
        None if name != "create" && name != "update" => Ok(None),
        Some(WriteBody::Envelope { key, item }) => {
            let items = records
                .iter()
                .enumerate()
                .map(|(index, record)| envelope_item(env, item, name, index, record, ctx))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(match key {
                Some(key) => {
                    let mut m = Map::new();
                    m.insert(key.clone(), Value::Array(items));
                    Value::Object(m)
                }
                None => Value::Array(items),
            }))
        }
        _ => Ok(Some(body(op, records))),
    }
}

/// One envelope item: every string of the template rendered for this record; a string that is
/// one expression alone gives its value as it is.
fn envelope_item(
    env: &minijinja::Environment<'_>,
    item: &Map<String, Value>,
    name: &str,
    index: usize,
    record: &Value,
    ctx: &RequestContext,
) -> Result<Value, EngineError> {
    // Templates see what the request's templates see, plus the record and its place; absent
    // values stay undefined so a template that needs one fails.
    let scope = |record: Value| {
        let mut m = Map::new();
        m.insert("fields".into(), serde_json::json!(ctx.fields));
        m.insert("params".into(), serde_json::json!(ctx.params));
        if let Some(t) = &ctx.tenant {
            m.insert("tenant".into(), serde_json::json!(t));
        }
        if let Some(id) = &ctx.id {
            m.insert("id".into(), Value::String(id.clone()));
        }
        if let Some(key) = &ctx.idempotency_key {
            m.insert("idempotency_key".into(), Value::String(key.clone()));
        }
        m.insert("record".into(), record);
        m.insert("index".into(), Value::from(index));
        m.insert("operation".into(), Value::String(name.to_owned()));
        minijinja::Value::from_serialize(Value::Object(m))
    };
    // A whole value keeps its exact decimals marked (written as exact numbers); text shows them
    // as their digits.
    let whole = scope(record.clone());
    let shown = scope(crate::exact::plain(record));
    fn fill(
        env: &minijinja::Environment<'_>,
        value: &Value,
        place: &str,
        whole: &minijinja::Value,
        shown: &minijinja::Value,
    ) -> Result<Value, EngineError> {
        let failed = |reason: String| EngineError::Template {
            place: format!("body.item.{place}"),
            reason,
        };
        Ok(match value {
            Value::String(source) => {
                let trimmed = source.trim();
                let inner = trimmed
                    .strip_prefix("{{")
                    .and_then(|rest| rest.strip_suffix("}}"))
                    .filter(|inner| !inner.contains("{{") && !inner.contains("}}"));
                match inner {
                    Some(expr) => {
                        let got = env
                            .compile_expression(expr.trim())
                            .and_then(|e| e.eval(whole))
                            .map_err(|e| failed(e.to_string()))?;
                        if got.is_undefined() {
                            return Err(failed(format!("`{}` is undefined", expr.trim())));
                        }
                        serde_json::to_value(&got).map_err(|e| failed(e.to_string()))?
                    }
                    None => Value::String(
                        env.render_str(source, shown)
                            .map_err(|e| failed(e.to_string()))?,
                    ),
                }
            }
            Value::Array(list) => Value::Array(
                list.iter()
                    .map(|v| fill(env, v, place, whole, shown))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| {
                        Ok((
                            k.clone(),
                            fill(env, v, &format!("{place}.{k}"), whole, shown)?,
                        ))
                    })
                    .collect::<Result<_, EngineError>>()?,
            ),
            other => other.clone(),
        })
    }
    let mut out = Map::new();
    for (k, v) in item {
        out.insert(k.clone(), fill(env, v, k, &whole, &shown)?);
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keys_are_stable_per_content() {
        let a = [json!({"Name": "A"})];
        let b = [json!({"Name": "B"})];
        assert_eq!(idempotency_key("x", &a, 128), idempotency_key("x", &a, 128));
        assert_ne!(idempotency_key("x", &a, 128), idempotency_key("x", &b, 128));
        assert_ne!(idempotency_key("x", &a, 128), idempotency_key("y", &a, 128));
        assert_eq!(idempotency_key("x", &a, 20).len(), 20);
    }

    #[test]
    fn per_item_results() {
        let rule = ItemErrors {
            status_field: Some("StatusAttributeString".into()),
            error_values: vec!["ERROR".into()],
            fault_field: None,
            id_field: None,
            match_by: None,
            separate_errors: None,
            errors_field: "ValidationErrors".into(),
            message_field: "Message".into(),
            warnings_field: None,
        };
        let returned = [
            json!({"CustomerID": "c1", "StatusAttributeString": "OK"}),
            json!({"StatusAttributeString": "ERROR", "ValidationErrors": [{"Message": "Name is required"}]}),
        ];
        let results = item_results(10, 3, &returned, Some(&rule), "CustomerID");
        assert_eq!(
            results[0],
            ItemResult {
                index: 10,
                status: "ok",
                id: Some("c1".into()),
                errors: vec![]
            }
        );
        assert_eq!(results[1].errors, vec!["Name is required".to_owned()]);
        assert_eq!(
            results[2].status, "unknown",
            "not mentioned: the outcome is unknown"
        );
    }

    #[test]
    fn warnings_fail_an_item_that_was_stored_anyway() {
        let rule = ItemErrors {
            status_field: Some("Status".into()),
            error_values: vec!["ERROR".into()],
            fault_field: None,
            id_field: None,
            match_by: None,
            separate_errors: None,
            errors_field: "Errors".into(),
            message_field: "Message".into(),
            warnings_field: Some("Warnings".into()),
        };
        let returned = [
            json!({"Id": "a", "Warnings": []}),
            json!({"Id": "b", "Warnings": [{"Message": "code removed"}]}),
            json!({"Id": "c", "Status": "ERROR", "Errors": [{"Message": "bad"}], "Warnings": [{"Message": "also"}]}),
            json!({"Id": "d"}),
        ];
        let results = item_results(0, 4, &returned, Some(&rule), "Id");
        let statuses: Vec<_> = results.iter().map(|r| r.status).collect();
        assert_eq!(statuses, ["ok", "failed", "failed", "ok"]);
        assert_eq!(results[1].errors, ["code removed"]);
        assert_eq!(
            results[1].id.as_deref(),
            Some("b"),
            "stored: its id is kept"
        );
        assert_eq!(results[2].errors, ["bad", "also"]);
        assert_eq!(results[2].id, None, "refused: no id");
    }
}
