//! From a source record to the record to write: join, skip rules, lookups, computed items, the
//! mapping, its version and the destination's field rules.

use minijinja::Value as JValue;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{RunError, StreamRun, Tally, at, id_text};

/// A source record on its way.
#[derive(Debug)]
pub(crate) struct Work {
    /// The source id.
    pub(crate) id: String,
    /// The source record.
    pub(crate) record: Value,
    /// `{source_id, dest_id}` of the joined stream's link (reverse streams).
    pub(crate) linked: Value,
    /// Found records by lookup name (null when optional and not found).
    pub(crate) lookups: Map<String, Value>,
    /// Computed lists by name.
    pub(crate) items: Map<String, Value>,
    /// The record to write.
    pub(crate) body: Map<String, Value>,
    /// A hash of `body`: what the destination reflects once written.
    pub(crate) version: String,
    /// The destination id, once known.
    pub(crate) dest: Option<String>,
}

impl Work {
    /// The value of the natural key field, when the flow declares one.
    pub(crate) fn natural(&self, field: Option<&str>) -> Option<String> {
        field.and_then(|f| self.body.get(f)).and_then(id_text)
    }
}

fn hash(value: &Map<String, Value>) -> String {
    let digest = Sha256::digest(Value::Object(value.clone()).to_string().as_bytes());
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

impl StreamRun<'_> {
    /// The expression scope of a record.
    pub(crate) fn scope(&self, w: &Work, extra: &[(&str, JValue)]) -> JValue {
        let mut map: std::collections::BTreeMap<String, JValue> = [
            ("record".to_owned(), JValue::from_serialize(&w.record)),
            ("options".to_owned(), self.options.clone()),
            ("tables".to_owned(), self.tables.clone()),
            ("linked".to_owned(), JValue::from_serialize(&w.linked)),
            ("lookup".to_owned(), JValue::from_serialize(&w.lookups)),
            ("items".to_owned(), JValue::from_serialize(&w.items)),
        ]
        .into_iter()
        .collect();
        for (k, v) in extra {
            map.insert((*k).to_owned(), v.clone());
        }
        JValue::from_object(map)
    }

    /// Applies the skip rules that read (`late`) or do not read lookups; true when the record
    /// is skipped.
    fn skipped(
        &self,
        w: &Work,
        late: bool,
        tally: &mut Tally,
    ) -> Result<Result<bool, String>, RunError> {
        let ctx = self.scope(w, &[]);
        for (i, rule) in self.stream.skip.iter().enumerate() {
            if rule.when.contains("lookup") != late {
                continue;
            }
            match crate::mapping::truthy(&self.env, &format!("skip[{i}].when"), &rule.when, &ctx) {
                Ok(true) => {
                    tally.summary.count(self.name, |c| c.skipped += 1);
                    let reason = if rule.reason.is_empty() {
                        rule.when.clone()
                    } else {
                        rule.reason.clone()
                    };
                    tally.plan(self.name, "skip", &w.id, reason);
                    self.cleared(&w.id)?;
                    return Ok(Ok(true));
                }
                Ok(false) => {}
                Err(message) => return Ok(Err(message)),
            }
        }
        Ok(Ok(false))
    }

    /// Turns source records into works ready to write; records that are skipped or fail on
    /// the way are counted (and failures queued) here.
    pub(crate) async fn prepare(
        &mut self,
        records: Vec<Value>,
        tally: &mut Tally,
    ) -> Result<Vec<Work>, RunError> {
        let src = &self.stream.source;
        let primary = self
            .resource(&src.connection, &src.resource)?
            .primary_key
            .clone();
        let mut works = Vec::with_capacity(records.len());
        for record in records {
            let Some(id) = id_text(at(&record, &primary)) else {
                tally.summary.count(self.name, |c| c.read += 1);
                self.fail(
                    tally,
                    "(no id)",
                    "read",
                    &format!("a source record has no `{primary}`"),
                )?;
                continue;
            };
            let mut w = Work {
                id,
                record,
                linked: Value::Null,
                lookups: Map::new(),
                items: Map::new(),
                body: Map::new(),
                version: String::new(),
                dest: None,
            };
            if let Some(join) = &self.stream.join {
                let ctx = self.scope(&w, &[]);
                let on = crate::mapping::value(&self.env, "join.on", &join.on, &ctx)
                    .ok()
                    .flatten()
                    .as_ref()
                    .and_then(id_text);
                let link = match on {
                    Some(on) => self
                        .run
                        .state
                        .link_by_dest(self.flow(), &join.stream, &on)?,
                    None => None,
                };
                match link {
                    Some(l) if l.pending.is_none() => {
                        w.linked = json!({ "source_id": l.source_id, "dest_id": l.dest_id });
                    }
                    // Not something the joined stream wrote: not this flow's business.
                    _ => continue,
                }
            }
            tally.summary.count(self.name, |c| c.read += 1);
            match self.skipped(&w, false, tally)? {
                Ok(true) => continue,
                Ok(false) => works.push(w),
                Err(message) => self.fail(tally, &w.id.clone(), "skip", &message)?,
            }
        }
        for li in 0..self.stream.lookup.len() {
            works = self.lookup(li, works, tally).await?;
        }
        let mut ready = Vec::with_capacity(works.len());
        for mut w in works {
            match self.skipped(&w, true, tally)? {
                Ok(true) => continue,
                Ok(false) => {}
                Err(message) => {
                    self.fail(tally, &w.id, "skip", &message)?;
                    continue;
                }
            }
            if let Err(message) = self.compute(&mut w) {
                self.fail(tally, &w.id, "map", &message)?;
                continue;
            }
            ready.push(w);
        }
        Ok(ready)
    }

    /// Computes a work's items, its record and version, and checks the record against the
    /// destination's field rules.
    fn compute(&self, w: &mut Work) -> Result<(), String> {
        for (bi, block) in self.stream.items.iter().enumerate() {
            let what = |part: &str| format!("items[{bi}].{part}");
            let ctx = self.scope(w, &[]);
            if let Some(when) = &block.when
                && !crate::mapping::truthy(&self.env, &what("when"), when, &ctx)?
            {
                w.items
                    .entry(block.into.clone())
                    .or_insert_with(|| json!([]));
                continue;
            }
            let elements = match crate::mapping::value(&self.env, &what("each"), &block.each, &ctx)?
            {
                Some(Value::Array(a)) => a,
                None => Vec::new(),
                Some(other) => {
                    return Err(format!(
                        "{}: `{}` gives {other}, not a list",
                        what("each"),
                        block.each
                    ));
                }
            };
            // Each element with its computed values.
            let mut computed = Vec::with_capacity(elements.len());
            for element in elements {
                let mut element = match element {
                    Value::Object(o) => o,
                    other => {
                        let mut o = Map::new();
                        o.insert("value".to_owned(), other);
                        o
                    }
                };
                for (name, expr) in &block.lets {
                    let ctx = self.scope(w, &[("item", JValue::from_serialize(&element))]);
                    let v = crate::mapping::value(
                        &self.env,
                        &what(&format!("let.{name}")),
                        expr,
                        &ctx,
                    )?;
                    element.insert(name.clone(), v.unwrap_or(Value::Null));
                }
                computed.push(Value::Object(element));
            }
            let mut out = Vec::new();
            match &block.group_by {
                None => {
                    for element in computed {
                        let ctx = self.scope(w, &[("item", JValue::from_serialize(&element))]);
                        out.push(Value::Object(crate::mapping::evaluate(
                            &self.env,
                            &what("fields"),
                            &block.fields,
                            &ctx,
                        )?));
                    }
                }
                Some(group_by) => {
                    let mut groups: indexmap::IndexMap<String, (Value, Vec<Value>)> =
                        indexmap::IndexMap::new();
                    for element in computed {
                        let ctx = self.scope(w, &[("item", JValue::from_serialize(&element))]);
                        let key =
                            crate::mapping::value(&self.env, &what("group-by"), group_by, &ctx)?
                                .unwrap_or(Value::Null);
                        groups
                            .entry(key.to_string())
                            .or_insert_with(|| (key, Vec::new()))
                            .1
                            .push(element);
                    }
                    for (_, (key, members)) in groups {
                        let group = json!({ "key": key, "count": members.len(), "items": members });
                        let ctx = self.scope(w, &[("group", JValue::from_serialize(&group))]);
                        out.push(Value::Object(crate::mapping::evaluate(
                            &self.env,
                            &what("fields"),
                            &block.fields,
                            &ctx,
                        )?));
                    }
                }
            }
            match w.items.get_mut(&block.into) {
                Some(Value::Array(list)) => list.extend(out),
                _ => {
                    w.items.insert(block.into.clone(), Value::Array(out));
                }
            }
        }
        let write = &self.stream.write;
        let ctx = self.scope(w, &[]);
        let mut body = crate::mapping::evaluate(&self.env, "write.fields", &write.fields, &ctx)?;
        for (list, m) in &write.lists {
            let elements = match crate::mapping::value(
                &self.env,
                &format!("write.lists.{list}.each"),
                &m.each,
                &ctx,
            )? {
                Some(Value::Array(a)) => a,
                None => Vec::new(),
                Some(other) => {
                    return Err(format!("write.lists.{list}.each gives {other}, not a list"));
                }
            };
            let mut out = Vec::with_capacity(elements.len());
            for (index, element) in elements.iter().enumerate() {
                let ctx = self.scope(
                    w,
                    &[
                        ("item", JValue::from_serialize(element)),
                        ("index", JValue::from(index)),
                    ],
                );
                out.push(Value::Object(crate::mapping::evaluate(
                    &self.env,
                    &format!("write.lists.{list}.fields"),
                    &m.fields,
                    &ctx,
                )?));
            }
            body.insert(list.clone(), Value::Array(out));
        }
        let dest = self
            .resource(&write.connection, &write.resource)
            .map_err(|e| e.to_string())?;
        let problems = crate::write::check_record(dest, &Value::Object(body.clone()), true);
        if !problems.is_empty() {
            return Err(format!(
                "the record does not meet `{}`'s rules: {}",
                write.resource,
                problems.join("; ")
            ));
        }
        w.version = hash(&body);
        w.body = body;
        Ok(())
    }
}
