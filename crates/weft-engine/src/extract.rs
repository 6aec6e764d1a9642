//! Finding the records in a response body, as a spec's `records` says: the body itself, an array
//! at a dotted path, or Kantata's ordered index joined with its per-type maps.

use serde_json::Value;
use weft_core::model::Extract;

/// Why records could not be found; the body was not what the spec describes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    /// Nothing at the path.
    #[error("the response has nothing at `{path}`")]
    Missing {
        /// The dotted path.
        path: String,
    },
    /// Something other than the expected shape at the path.
    #[error("`{path}` in the response is {found}, not {expected}")]
    Shape {
        /// The dotted path.
        path: String,
        /// What the spec expects.
        expected: &'static str,
        /// What was there.
        found: &'static str,
    },
    /// An index entry points at a record its map does not hold.
    #[error("index entry {position} names `{key}` id `{id}`, which is not in the `{key}` map")]
    Dangling {
        /// Position in the index.
        position: usize,
        /// The map key.
        key: String,
        /// The record id.
        id: String,
    },
}

/// The value at a dotted path (`meta.page_count`; a name holding `.` is quoted, see
/// [`weft_core::fieldpath`]).
pub fn at_path<'a>(body: &'a Value, path: &str) -> Option<&'a Value> {
    weft_core::fieldpath::lookup(body, path)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The records of `body`, in the order the provider gives them.
pub fn records(body: &Value, extract: &Extract) -> Result<Vec<Value>, ExtractError> {
    match extract {
        Extract::Root => match body {
            Value::Array(items) => Ok(items.clone()),
            Value::Object(_) => Ok(vec![body.clone()]),
            other => Err(ExtractError::Shape {
                path: "(body)".into(),
                expected: "an array or an object",
                found: kind(other),
            }),
        },
        Extract::Path { path, optional } => match at_path(body, path) {
            None | Some(Value::Null) if *optional => Ok(Vec::new()),
            None => Err(ExtractError::Missing { path: path.clone() }),
            Some(Value::Array(items)) => Ok(items.clone()),
            Some(record @ Value::Object(_)) => Ok(vec![record.clone()]),
            Some(other) => Err(ExtractError::Shape {
                path: path.clone(),
                expected: "an array or an object",
                found: kind(other),
            }),
        },
        Extract::Index {
            index,
            key_field,
            id_field,
            key,
            embed,
        } => {
            let entries = match at_path(body, index) {
                None => {
                    return Err(ExtractError::Missing {
                        path: index.clone(),
                    });
                }
                Some(Value::Array(entries)) => entries,
                Some(other) => {
                    return Err(ExtractError::Shape {
                        path: index.clone(),
                        expected: "an array",
                        found: kind(other),
                    });
                }
            };
            let mut out = Vec::with_capacity(entries.len());
            for (position, entry) in entries.iter().enumerate() {
                let text = |field: &str| match entry.get(field) {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                };
                let (Some(map_key), Some(id)) = (text(key_field), text(id_field)) else {
                    return Err(ExtractError::Shape {
                        path: format!("{index}[{position}]"),
                        expected: "an entry with a key and an id",
                        found: kind(entry),
                    });
                };
                if key.as_ref().is_some_and(|k| k != &map_key) {
                    continue;
                }
                match body.get(&map_key).and_then(|m| m.get(&id)) {
                    Some(record) if *embed => out.push(embedded(body, record)),
                    Some(record) => out.push(record.clone()),
                    None => {
                        return Err(ExtractError::Dangling {
                            position,
                            key: map_key,
                            id,
                        });
                    }
                }
            }
            Ok(out)
        }
    }
}

/// The records of `body`, moved out of it rather than copied where the style allows (the
/// body itself, or a path), so a large page is not held twice. `body` is left partly emptied.
pub fn take_records(body: &mut Value, extract: &Extract) -> Result<Vec<Value>, ExtractError> {
    match extract {
        Extract::Root => match body {
            Value::Array(items) => Ok(std::mem::take(items)),
            Value::Object(_) => Ok(vec![std::mem::take(body)]),
            other => Err(ExtractError::Shape {
                path: "(body)".into(),
                expected: "an array or an object",
                found: kind(other),
            }),
        },
        Extract::Path { path, .. } => match weft_core::fieldpath::lookup_mut(body, path) {
            Some(Value::Array(items)) => Ok(std::mem::take(items)),
            _ => records(body, extract),
        },
        Extract::Index { .. } => records(body, extract),
    }
}

/// `record` with the side-loaded records its `*_ids` / `*_id` fields point at (see
/// `Extract::Index::embed`).
fn embedded(body: &Value, record: &Value) -> Value {
    let Some(fields) = record.as_object() else {
        return record.clone();
    };
    let mut out = fields.clone();
    let pluralize = |word: &str| match word.strip_suffix('y') {
        Some(base) if !base.ends_with(['a', 'e', 'o', 'u']) => format!("{base}ies"),
        _ => format!("{word}s"),
    };
    // The map holding records of `stem`: `stem` pluralized (Rails style: `entry` → `entries`),
    // dropping leading words (`primary_workspace_group` → `workspace_groups`) until one exists;
    // failing that, the one map whose name ends in `_` and that plural (`choice` →
    // `custom_field_choices`), inlined under the plural (`choices`).
    let map_for = |stem: &str| -> Option<(String, &serde_json::Map<String, Value>)> {
        let mut rest = stem;
        loop {
            let plural = pluralize(rest);
            if let Some(Value::Object(map)) = body.get(&plural) {
                return Some((plural, map));
            }
            match rest.split_once('_') {
                Some((_, tail)) => rest = tail,
                None => break,
            }
        }
        let plural = pluralize(stem);
        let suffix = format!("_{plural}");
        let mut found = body
            .as_object()?
            .iter()
            .filter(|(name, _)| name.ends_with(&suffix))
            .filter_map(|(_, v)| v.as_object());
        let map = found.next()?;
        found.next().is_none().then_some((plural, map))
    };
    let id_text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    for (field, value) in fields {
        if let Some(stem) = field.strip_suffix("_ids") {
            let (Some((name, map)), Value::Array(ids)) = (map_for(stem), value) else {
                continue;
            };
            if out.contains_key(&name) {
                continue;
            }
            let found: Vec<Value> = ids
                .iter()
                .filter_map(|id| id_text(id).and_then(|id| map.get(&id).cloned()))
                .collect();
            out.insert(name, Value::Array(found));
        } else if let Some(stem) = field.strip_suffix("_id") {
            let Some((_, map)) = map_for(stem) else {
                continue;
            };
            if out.contains_key(stem) {
                continue;
            }
            if let Some(found) = id_text(value).and_then(|id| map.get(&id).cloned()) {
                out.insert(stem.to_owned(), found);
            }
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn each_style() {
        let arr = json!([{"a": 1}, {"a": 2}]);
        assert_eq!(records(&arr, &Extract::Root).unwrap().len(), 2);
        assert_eq!(
            records(&json!({"a": 1}), &Extract::Root).unwrap(),
            vec![json!({"a": 1})]
        );
        let pathed = json!({"Orders": [{"OrderID": "x"}], "pagination": {"page": 1}});
        let path = Extract::Path {
            path: "Orders".into(),
            optional: false,
        };
        assert_eq!(
            records(&pathed, &path).unwrap(),
            vec![json!({"OrderID": "x"})]
        );
        assert_eq!(
            records(&json!({}), &path),
            Err(ExtractError::Missing {
                path: "Orders".into()
            })
        );

        // One record as an object, a quoted name holding a dot, and an absent result.
        let single = json!({"Order": {"OrderID": "y"}, "odata.value": [{"a": 1}]});
        let one = Extract::Path {
            path: "Order".into(),
            optional: false,
        };
        assert_eq!(
            records(&single, &one).unwrap(),
            vec![json!({"OrderID": "y"})]
        );
        let quoted = Extract::Path {
            path: r#""odata.value""#.into(),
            optional: false,
        };
        assert_eq!(records(&single, &quoted).unwrap(), vec![json!({"a": 1})]);
        let optional = Extract::Path {
            path: "QueryResponse.Order".into(),
            optional: true,
        };
        assert_eq!(
            records(&json!({"QueryResponse": {}}), &optional),
            Ok(vec![])
        );
        assert_eq!(
            records(&json!({"QueryResponse": null}), &optional),
            Ok(vec![])
        );
        assert!(matches!(
            records(&json!({"QueryResponse": {"Order": 3}}), &optional),
            Err(ExtractError::Shape { .. })
        ));
        let mut body = json!({"QueryResponse": {"Order": [{"id": 1}]}});
        assert_eq!(take_records(&mut body, &optional).unwrap().len(), 1);

        let indexed = json!({
            "count": 2,
            "results": [{"key": "orders", "id": "9"}, {"key": "orders", "id": "7"}, {"key": "users", "id": "1"}],
            "orders": {"7": {"id": "7"}, "9": {"id": "9"}},
            "users": {"1": {"id": "1"}}
        });
        let index = |key: Option<&str>| Extract::Index {
            index: "results".into(),
            key_field: "key".into(),
            id_field: "id".into(),
            key: key.map(str::to_owned),
            embed: false,
        };
        let ids: Vec<Value> = records(&indexed, &index(Some("orders")))
            .unwrap()
            .into_iter()
            .map(|r| r["id"].clone())
            .collect();
        assert_eq!(
            ids,
            vec![json!("9"), json!("7")],
            "the index order wins over the map order"
        );
        assert_eq!(records(&indexed, &index(None)).unwrap().len(), 3);
        let broken = json!({"results": [{"key": "orders", "id": "3"}], "orders": {}});
        assert!(matches!(
            records(&broken, &index(None)),
            Err(ExtractError::Dangling { .. })
        ));
    }

    #[test]
    fn embedding_follows_ids_into_the_side_loaded_maps() {
        let body = json!({
            "results": [{"key": "orders", "id": "7"}],
            "orders": {"7": {"id": "7", "time_entry_ids": ["1", "2"], "workspace_ids": ["5"],
                                "user_id": "3", "recipient_id": "3", "expense_ids": []}},
            "time_entries": {"1": {"id": "1", "time_in_minutes": 30}, "2": {"id": "2", "time_in_minutes": 45}},
            "workspaces": {"5": {"id": "5", "primary_workspace_group_id": "8"}},
            "users": {"3": {"id": "3"}},
        });
        let extract = Extract::Index {
            index: "results".into(),
            key_field: "key".into(),
            id_field: "id".into(),
            key: Some("orders".into()),
            embed: true,
        };
        let order = &records(&body, &extract).unwrap()[0];
        assert_eq!(order["time_entries"][1]["time_in_minutes"], 45);
        assert_eq!(order["workspaces"][0]["id"], "5");
        assert_eq!(order["user"]["id"], "3");
        // No `recipients` map, no `expenses` map: nothing invented.
        assert!(order.get("recipient").is_none());
        assert!(order.get("expenses").is_none());
    }

    #[test]
    fn embedding_finds_a_map_named_with_a_prefix() {
        let body = json!({
            "results": [{"key": "fields", "id": "1"}],
            "fields": {"1": {"id": "1", "option_ids": ["4", "3"], "owner_id": "9"}},
            "field_options": {"3": {"id": "3", "label": "B"}, "4": {"id": "4", "label": "A"}},
            "some_owners": {"9": {"id": "9"}},
            "other_owners": {"9": {"id": "9"}},
        });
        let extract = Extract::Index {
            index: "results".into(),
            key_field: "key".into(),
            id_field: "id".into(),
            key: Some("fields".into()),
            embed: true,
        };
        let field = &records(&body, &extract).unwrap()[0];
        // Inlined under the plural of the id field's stem, in the order of the ids.
        assert_eq!(field["options"][0]["label"], "A");
        assert_eq!(field["options"][1]["label"], "B");
        assert!(field.get("field_options").is_none());
        // Two maps end in `_owners`: ambiguous, so nothing is inlined.
        assert!(field.get("owner").is_none());
    }
}
