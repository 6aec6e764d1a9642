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
    /// `{source_id, dest_id}` of the joined stream's link (reverse streams).
    pub(crate) linked: Value,
    /// Found records by lookup name (null when optional and not found).
    pub(crate) lookups: Map<String, Value>,
    /// Lookups whose value every record of the run shares (`load = "all"`), by name.
    shared: std::collections::BTreeMap<String, JValue>,
    /// Computed lists by name.
    pub(crate) items: Map<String, Value>,
    /// The record to write.
    pub(crate) body: Map<String, Value>,
    /// A hash of `body`: what the destination reflects once written.
    pub(crate) version: String,
    /// The destination id, once known.
    pub(crate) dest: Option<String>,
    /// The existing destination record the flow's `write.id` names, if any.
    pub(crate) target: Option<String>,
    /// The record, linked, lookups and items as expression values, made once (a record with
    /// its embedded lines is large; every expression of the record shares these).
    j: [JValue; 4],
}

impl Work {
    pub(crate) fn new(id: String, record: Value) -> Self {
        let jrecord = JValue::from_serialize(&record);
        Self {
            id,
            linked: Value::Null,
            lookups: Map::new(),
            shared: std::collections::BTreeMap::new(),
            items: Map::new(),
            body: Map::new(),
            version: String::new(),
            dest: None,
            target: None,
            j: [
                jrecord,
                JValue::from(()),
                JValue::from_serialize(Map::new()),
                JValue::from_serialize(Map::new()),
            ],
        }
    }

    /// Sets the joined link.
    pub(crate) fn set_linked(&mut self, linked: Value) {
        self.j[1] = JValue::from_serialize(&linked);
        self.linked = linked;
    }

    /// Sets what lookup `name` found.
    pub(crate) fn set_lookup(&mut self, name: &str, found: Value) {
        self.lookups.insert(name.to_owned(), found);
        self.lookups_changed();
    }

    /// Sets a lookup whose value is shared by every record (not copied).
    pub(crate) fn share_lookup(&mut self, name: &str, all: JValue) {
        self.shared.insert(name.to_owned(), all);
        self.lookups_changed();
    }

    fn lookups_changed(&mut self) {
        if self.shared.is_empty() {
            self.j[2] = JValue::from_serialize(&self.lookups);
            return;
        }
        let mut all: std::collections::BTreeMap<String, JValue> = self
            .lookups
            .iter()
            .map(|(k, v)| (k.clone(), JValue::from_serialize(v)))
            .collect();
        all.extend(self.shared.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.j[2] = JValue::from(all);
    }

    fn items_changed(&mut self) {
        self.j[3] = JValue::from_serialize(&self.items);
    }

    /// Drops what nothing reads once the work is computed (its write-backs are all that
    /// read it later), so works on their way to the destination stay small.
    pub(crate) fn lighten(&mut self, keep: &Keep) {
        if let Some(attrs) = &keep.record {
            let kept: std::collections::BTreeMap<&str, JValue> = attrs
                .iter()
                .filter_map(|a| {
                    let v = self.j[0].get_attr(a).ok()?;
                    (!v.is_undefined()).then_some((a.as_str(), v))
                })
                .collect();
            self.j[0] = JValue::from_serialize(&kept);
        }
        if !keep.lookups {
            self.lookups = Map::new();
            self.shared.clear();
            self.lookups_changed();
        }
        if !keep.items {
            self.items = Map::new();
            self.items_changed();
        }
    }

    /// The value of the natural key field, when the flow declares one.
    pub(crate) fn natural(&self, field: Option<&str>) -> Option<String> {
        let f = field?;
        match self.body.get(f) {
            Some(v) => id_text(v),
            // A path into the written record (`Receipts.0.ReceiptID`).
            None => {
                let body = Value::Object(self.body.clone());
                weft_core::fieldpath::lookup(&body, f).and_then(id_text)
            }
        }
    }
}

fn hash(value: &Map<String, Value>) -> String {
    let digest = Sha256::digest(Value::Object(value.clone()).to_string().as_bytes());
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// What a computed work must keep for the expressions still to read it (its write-backs).
#[derive(Debug, Default)]
pub(crate) struct Keep {
    /// The record's attributes they read; none: the whole record.
    record: Option<std::collections::BTreeSet<String>>,
    lookups: bool,
    items: bool,
}

impl Keep {
    /// What `exprs` read.
    pub(crate) fn reading<'e>(exprs: impl IntoIterator<Item = &'e String>) -> Self {
        let mut keep = Keep {
            record: Some(std::collections::BTreeSet::new()),
            ..Keep::default()
        };
        for expr in exprs {
            let Some(names) = crate::mapping::reads(expr) else {
                return Keep {
                    record: None,
                    lookups: true,
                    items: true,
                };
            };
            for name in names {
                let mut parts = name.split('.');
                match (parts.next(), parts.next()) {
                    (Some("record"), Some(attr)) => {
                        if let Some(r) = &mut keep.record {
                            r.insert(attr.to_owned());
                        }
                    }
                    (Some("record"), None) => keep.record = None,
                    (Some("lookup"), _) => keep.lookups = true,
                    (Some("items"), _) => keep.items = true,
                    _ => {}
                }
            }
        }
        keep
    }
}

impl StreamRun<'_> {
    /// The expression scope of a record, with `extra` names.
    pub(crate) fn scope(&self, w: &Work, extra: &[(&str, JValue)]) -> JValue {
        let mut map: std::collections::BTreeMap<&str, JValue> = [
            ("record", w.j[0].clone()),
            ("options", self.options.clone()),
            ("tables", self.tables.clone()),
            ("linked", w.j[1].clone()),
            ("lookup", w.j[2].clone()),
            ("items", w.j[3].clone()),
        ]
        .into_iter()
        .collect();
        for (k, v) in extra {
            map.insert(k, v.clone());
        }
        JValue::from_serialize(&map)
    }

    /// Applies the skip rules of `phase` (0: those that read neither lookups nor items, 1: those
    /// that read lookups, 2: those that read items); true when the record is skipped.
    fn skipped(
        &self,
        w: &Work,
        phase: u8,
        tally: &mut Tally,
    ) -> Result<Result<bool, String>, RunError> {
        let ctx = self.scope(w, &[]);
        for (i, rule) in self.stream.skip.iter().enumerate() {
            let reads = if rule.when.contains("items") {
                2
            } else {
                u8::from(rule.when.contains("lookup"))
            };
            if reads != phase {
                continue;
            }
            match crate::mapping::truthy(&format!("skip[{i}].when"), &rule.when, &ctx) {
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

    /// Whether the skip rules of `phase` drop the record: it is skipped, or a rule failed on
    /// it (queued).
    fn dropped(&self, w: &Work, phase: u8, tally: &mut Tally) -> Result<bool, RunError> {
        match self.skipped(w, phase, tally)? {
            Ok(skipped) => Ok(skipped),
            Err(message) => {
                self.fail(tally, &w.id, "skip", &message)?;
                Ok(true)
            }
        }
    }

    /// Turns source records into works ready to write; records that are skipped or fail on
    /// the way are counted (and failures queued) here.
    pub(crate) async fn prepare(
        &self,
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
            let mut w = Work::new(id, record);
            if let Some(join) = &self.stream.join {
                let ctx = self.scope(&w, &[]);
                let on = crate::mapping::value("join.on", &join.on, &ctx)
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
                    // Found by its destination id: the joined stream wrote it (an update of it
                    // may be under way; the relation stands).
                    Some(l) => {
                        w.set_linked(json!({ "source_id": l.source_id, "dest_id": l.dest_id }));
                    }
                    // Not something the joined stream wrote: not this flow's business.
                    _ => continue,
                }
            }
            tally.summary.count(self.name, |c| c.read += 1);
            if !self.dropped(&w, 0, tally)? {
                works.push(w);
            }
        }
        for li in 0..self.stream.lookup.len() {
            works = self.lookup(li, works, tally).await?;
        }
        let mut ready = Vec::with_capacity(works.len());
        for mut w in works {
            if self.dropped(&w, 1, tally)? {
                continue;
            }
            if let Err(message) = self.compute(&mut w) {
                self.fail(tally, &w.id, "map", &message)?;
                continue;
            }
            if !self.dropped(&w, 2, tally)? {
                ready.push(w);
            }
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
                && !crate::mapping::truthy(&what("when"), when, &ctx)?
            {
                w.items
                    .entry(block.into.clone())
                    .or_insert_with(|| json!([]));
                continue;
            }
            let elements = match crate::mapping::value(&what("each"), &block.each, &ctx)? {
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
                    let v = crate::mapping::value(&what(&format!("let.{name}")), expr, &ctx)?;
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
                        let key = crate::mapping::value(&what("group-by"), group_by, &ctx)?
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
            w.items_changed();
        }
        let write = &self.stream.write;
        let ctx = self.scope(w, &[]);
        if let Some(id) = &write.id {
            w.target = crate::mapping::value("write.id", id, &ctx)?
                .as_ref()
                .and_then(id_text)
                .filter(|t| !t.trim().is_empty());
        }
        let mut body = crate::mapping::evaluate("write.fields", &write.fields, &ctx)?;
        for (list, m) in &write.lists {
            let elements =
                match crate::mapping::value(&format!("write.lists.{list}.each"), &m.each, &ctx)? {
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

#[cfg(test)]
mod tests {
    use super::Keep;

    fn keep(exprs: &[&str]) -> Keep {
        let owned: Vec<String> = exprs.iter().map(|e| (*e).to_owned()).collect();
        Keep::reading(owned.iter())
    }

    #[test]
    fn a_work_keeps_what_its_write_backs_read() {
        let k = keep(&["{'ref': written.id, 'of': record.id}", "record.number ~ ''"]);
        let attrs: Vec<&str> = k.record.iter().flatten().map(String::as_str).collect();
        assert_eq!(attrs, ["id", "number"]);
        assert!(!k.lookups && !k.items);
        let k = keep(&["written.id"]);
        assert_eq!(k.record.map(|r| r.len()), Some(0));
        let k = keep(&["record | tojson", "lookup.owner.Id", "items.lines | length"]);
        assert!(k.record.is_none() && k.lookups && k.items);
    }
}
