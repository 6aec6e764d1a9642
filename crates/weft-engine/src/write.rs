//! Writing records the way a spec says: each record checked against the resource's field rules,
//! batched up to the operation's size, wrapped in its body shape, sent with a deterministic
//! idempotency key, and answered record by record from the provider's per-item results.

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use weft_core::model::{FieldType, ItemErrors, Operation, Resource, WriteBody};

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
    let Some(object) = record.as_object() else {
        return vec!["a record must be a JSON object".to_owned()];
    };
    let mut problems = Vec::new();
    check_object(
        &resource.fields,
        Some(&resource.primary_key),
        object,
        creating,
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
    creating: bool,
    prefix: &str,
    problems: &mut Vec<String>,
) {
    for (field, rule) in fields {
        let name = format!("{prefix}{field}");
        let value = object.get(field);
        match value {
            None | Some(Value::Null) => {
                if creating && rule.required {
                    problems.push(format!("`{name}` is required"));
                }
                continue;
            }
            Some(_) if rule.read_only && Some(field.as_str()) != primary_key => {
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
                    creating,
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
                            creating,
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

/// The request body for a batch of records.
pub fn body(op: &Operation, batch: &[Value]) -> Value {
    match op.body.as_ref() {
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
/// idempotency (whatever the key).
pub fn key_header(op: &Operation, key: Option<&str>) -> Option<(String, String)> {
    match (&op.idempotency, key) {
        (Some(i), Some(k)) => Some((i.header.clone(), k.to_owned())),
        _ => None,
    }
}

/// Whether `record` carries one of the rule's error statuses.
fn refused(record: Option<&Value>, items: Option<&ItemErrors>) -> bool {
    let (Some(record), Some(rule)) = (record, items) else {
        return false;
    };
    record
        .get(&rule.status_field)
        .and_then(Value::as_str)
        .is_some_and(|status| rule.error_values.iter().any(|e| e == status))
}

/// Per-record outcomes of a batch answer: from the per-item results when the spec declares
/// them, else the answer's records in order.
pub fn item_results(
    first_index: usize,
    count: usize,
    returned: &[Value],
    items: Option<&ItemErrors>,
    primary_key: &str,
) -> Vec<ItemResult> {
    (0..count)
        .map(|i| {
            let record = returned.get(i);
            let id = record
                .and_then(|r| r.get(primary_key))
                .and_then(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                });
            let failed = items.and_then(|rule| {
                let record = record?;
                let messages = |field: &str| -> Vec<String> {
                    record
                        .get(field)
                        .and_then(Value::as_array)
                        .map(|list| {
                            list.iter()
                                .filter_map(|e| {
                                    e.get(&rule.message_field)?.as_str().map(str::to_owned)
                                })
                                .collect()
                        })
                        .unwrap_or_default()
                };
                let refused = refused(Some(record), Some(rule));
                // A non-empty warnings list fails the item as well (the spec says warnings
                // there mean the record was changed, not written as sent).
                let warned = rule.warnings_field.as_deref().is_some_and(|field| {
                    record
                        .get(field)
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
                    index: first_index + i,
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
                    index: first_index + i,
                    status: "ok",
                    id,
                    errors: Vec::new(),
                },
                // Neither written nor refused as far as the answer says: the outcome is unknown
                // (a flow keeps the intent pending and settles it by natural key).
                (None, None) => ItemResult {
                    index: first_index + i,
                    status: "unknown",
                    id: None,
                    errors: vec!["the provider's answer does not mention this record".to_owned()],
                },
            }
        })
        .collect()
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
            status_field: "StatusAttributeString".into(),
            error_values: vec!["ERROR".into()],
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
            status_field: "Status".into(),
            error_values: vec!["ERROR".into()],
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
