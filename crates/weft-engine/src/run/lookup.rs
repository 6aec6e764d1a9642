//! Lookups: the related record of each work, found at any connection by a key, cached for the
//! run, and optionally created once when missing (the ledger remembers what a lookup created or
//! found, so later runs neither list nor create again).

use std::collections::HashMap;
use std::ops::ControlFlow;

use minijinja::Value as JValue;
use serde_json::{Map, Value};
use weft_core::model::ErrorClass;

use super::record::Work;
use super::{RunError, StreamRun, Tally, at, id_text};
use crate::flow::{Lookup, LookupLoad};
use crate::http::CallError;
use crate::request::OpKind;
use crate::session::SessionError;
use crate::state::WriteIntent;

/// Keys per call of a `load = "keys"` lookup, unless it says.
const KEYS_PER_CALL: u32 = 100;

/// Records a `load = "keys"` lookup keeps between chunks, at most.
const KEYS_KEPT: usize = 500;

/// What one lookup knows in this run.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    /// Normalized key → the found record (None: known to be missing).
    found: HashMap<String, Option<Value>>,
    /// Whether the whole list was read (list lookups).
    listed: bool,
    /// Why a key could not be created, to tell each record that needed it.
    refused: HashMap<String, String>,
    /// Every candidate, for `load = "all"` (read once per run, shared by every record).
    all: Option<JValue>,
}

fn normalize(l: &Lookup, key: &str) -> String {
    if l.ignore_case {
        key.trim().to_lowercase()
    } else {
        key.to_owned()
    }
}

impl StreamRun<'_> {
    /// What lookup `name` knows so far (never borrowed across an await).
    fn cache(&self, name: &str) -> std::cell::RefMut<'_, Cache> {
        std::cell::RefMut::map(self.caches.borrow_mut(), |c| {
            c.entry(name.to_owned()).or_default()
        })
    }

    fn lookup_kind(&self, l: &Lookup) -> String {
        format!("{}@{}", self.name, l.name)
    }

    /// Resolves lookup `li` for every work; works whose lookup fails are queued and dropped.
    pub(crate) async fn lookup(
        &self,
        li: usize,
        works: Vec<Work>,
        tally: &mut Tally,
    ) -> Result<Vec<Work>, RunError> {
        let l = &self.stream.lookup[li];
        let mut keyed = Vec::with_capacity(works.len());
        let mut needed = Vec::with_capacity(works.len());
        // Works that do not need this lookup go on without it.
        let mut passed = Vec::new();
        for mut w in works {
            if let Some(when) = &l.when {
                let ctx = self.scope(&w, &[]);
                match crate::mapping::truthy(&format!("lookup {}.when", l.name), when, &ctx) {
                    Ok(true) => {}
                    Ok(false) => {
                        w.set_lookup(&l.name, Value::Null);
                        passed.push(w);
                        continue;
                    }
                    Err(message) => {
                        self.fail(tally, &w.id, &format!("lookup {}", l.name), &message)?;
                        continue;
                    }
                }
            }
            needed.push(w);
        }
        if l.load == LookupLoad::All {
            if !needed.is_empty() {
                let all = self.list_all(l).await?;
                for w in &mut needed {
                    w.share_lookup(&l.name, all.clone());
                }
            }
            passed.extend(needed);
            return Ok(passed);
        }
        for w in needed {
            let ctx = self.scope(&w, &[]);
            match crate::mapping::value(&format!("lookup {}.key", l.name), &l.key, &ctx) {
                Ok(key) => {
                    let key = key.as_ref().and_then(|k| match k {
                        Value::String(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
                        other => id_text(other),
                    });
                    keyed.push((w, key));
                }
                Err(message) => self.fail(tally, &w.id, &format!("lookup {}", l.name), &message)?,
            }
        }
        let wanted: Vec<(String, String)> = keyed
            .iter()
            .filter_map(|(_, k)| k.as_ref().map(|k| (normalize(l, k), k.clone())))
            .collect();
        if l.load == LookupLoad::Keys {
            // Found records are kept for the next chunks up to a bound, so memory does not
            // grow with the account.
            let mut cache = self.cache(&l.name);
            if cache.found.len() > KEYS_KEPT {
                cache.found.clear();
            }
        }
        self.resolve(l, &wanted, tally).await?;
        let cache = self.cache(&l.name);
        let mut out = passed;
        out.reserve(keyed.len());
        let mut failures = Vec::new();
        for (mut w, key) in keyed {
            let found = key
                .as_ref()
                .and_then(|k| cache.found.get(&normalize(l, k)).cloned().flatten());
            match (found, key) {
                (Some(found), _) => {
                    w.set_lookup(&l.name, found);
                    out.push(w);
                }
                (None, _) if l.optional => {
                    w.set_lookup(&l.name, Value::Null);
                    out.push(w);
                }
                (None, None) => failures.push((
                    w.id,
                    format!(
                        "lookup `{}`: its key `{}` is empty for this record",
                        l.name, l.key
                    ),
                )),
                (None, Some(k)) => {
                    let why = cache
                        .refused
                        .get(&normalize(l, &k))
                        .cloned()
                        .unwrap_or_else(|| format!("no `{}` matches `{k}`", l.resource));
                    failures.push((w.id, format!("lookup `{}`: {why}", l.name)));
                }
            }
        }
        for (id, message) in failures {
            self.fail(tally, &id, &format!("lookup {}", l.name), &message)?;
        }
        Ok(out)
    }

    /// The context of `l`'s list calls: its parameters and its filter's.
    fn list_ctx(&self, l: &Lookup) -> Result<crate::request::RequestContext, RunError> {
        let mut ctx = self.ctx(&l.connection)?;
        ctx.params
            .extend(l.params.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(f) = &l.filter {
            let pairs = self
                .run
                .flow
                .filter_params(f)
                .map_err(|e| RunError::Config(format!("lookup `{}`: {e}", l.name)))?;
            // A parameter the list does not pass on would be dropped without a word, and the
            // filter would select everything: refused instead.
            let known = self
                .resource(&l.connection, &l.resource)?
                .list
                .as_ref()
                .map(crate::flow::passed_params)
                .unwrap_or_default();
            if let Some((name, _)) = pairs.iter().find(|(n, _)| !known.contains(n)) {
                return Err(RunError::Config(format!(
                    "lookup `{}`: the filter names `{name}`, which the list of `{}` does not pass on (it passes on: {}); fix the option and check with `weft flow check {}`",
                    l.name,
                    l.resource,
                    known
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    self.flow()
                )));
            }
            ctx.params.extend(pairs);
        }
        Ok(ctx)
    }

    /// Every candidate of `l`'s list, read once per run.
    async fn list_all(&self, l: &Lookup) -> Result<JValue, RunError> {
        if let Some(all) = &self.cache(&l.name).all {
            return Ok(all.clone());
        }
        let ctx = self.list_ctx(l)?;
        let mut all = Vec::new();
        let mut bad = None;
        self.endpoint(&l.connection)?
            .session
            .list(&l.resource, &ctx, |found| {
                match self.candidate(l, &found) {
                    Ok(true) => all.push(found),
                    Ok(false) => {}
                    Err(e) => {
                        bad = Some(e);
                        return ControlFlow::Break(());
                    }
                }
                ControlFlow::Continue(())
            })
            .await?;
        if let Some(e) = bad {
            return Err(RunError::Config(format!("lookup `{}`: {e}", l.name)));
        }
        let all = JValue::from_serialize(&all);
        self.cache(&l.name).all = Some(all.clone());
        Ok(all)
    }

    /// Whether `found` is a candidate of `l`.
    fn candidate(&self, l: &Lookup, found: &Value) -> Result<bool, String> {
        match &l.candidates {
            None => Ok(true),
            Some(c) => {
                let scope = minijinja::context! { found => JValue::from_serialize(found), options => &self.options, tables => &self.tables };
                crate::mapping::truthy("candidates", c, &scope)
            }
        }
    }

    /// The records of `l`'s list (with `ctx`'s parameters) that pass its `candidates`, by
    /// normalized match value (the first of each).
    async fn list_candidates(
        &self,
        l: &Lookup,
        match_field: &str,
        ctx: &crate::request::RequestContext,
    ) -> Result<HashMap<String, Value>, RunError> {
        let mut all: HashMap<String, Value> = HashMap::new();
        let mut bad = None;
        self.endpoint(&l.connection)?
            .session
            .list(&l.resource, ctx, |found| {
                match self.candidate(l, &found) {
                    Ok(true) => {}
                    Ok(false) => return ControlFlow::Continue(()),
                    Err(e) => {
                        bad = Some(e);
                        return ControlFlow::Break(());
                    }
                }
                if let Some(k) = id_text(at(&found, match_field)).map(|k| normalize(l, &k)) {
                    all.entry(k).or_insert(found);
                }
                ControlFlow::Continue(())
            })
            .await?;
        match bad {
            Some(e) => Err(RunError::Config(format!("lookup `{}`: {e}", l.name))),
            None => Ok(all),
        }
    }

    /// Finds (and creates, when the lookup says so) every wanted key not known yet.
    async fn resolve(
        &self,
        l: &Lookup,
        wanted: &[(String, String)],
        tally: &mut Tally,
    ) -> Result<(), RunError> {
        let kind = self.lookup_kind(l);
        let endpoint = self.endpoint(&l.connection)?;
        let resource = self.resource(&l.connection, &l.resource)?;
        let primary = resource.primary_key.clone();
        let match_field = l.match_field.clone().unwrap_or_else(|| primary.clone());
        let mut missing: Vec<(String, String)> = Vec::new();
        {
            let mut cache = self.cache(&l.name);
            for (norm, key) in wanted {
                if cache.found.contains_key(norm) || missing.iter().any(|(n, _)| n == norm) {
                    continue;
                }
                // What an earlier run found or created.
                if l.create.is_some()
                    && let Some(link) = self.run.state.link(&self.run.flow.name, &kind, norm)?
                    && let (Some(id), None) = (link.dest_id, link.pending)
                {
                    let mut found = Map::new();
                    found.insert(primary.clone(), Value::String(id));
                    found.insert(match_field.clone(), Value::String(key.clone()));
                    cache.found.insert(norm.clone(), Some(Value::Object(found)));
                    continue;
                }
                missing.push((norm.clone(), key.clone()));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let ctx = match l.load {
            LookupLoad::Get => self.ctx(&l.connection)?,
            _ => self.list_ctx(l)?,
        };
        match l.load {
            // Read whole by `list_all`, never by key.
            LookupLoad::All => {}
            LookupLoad::Get => {
                for (norm, key) in &missing {
                    let mut ctx = ctx.clone();
                    ctx.id = Some(key.clone());
                    let found = match endpoint
                        .session
                        .call(&l.resource, OpKind::Get, &ctx, &[], &[], None)
                        .await
                    {
                        Ok(answer) => resource
                            .get
                            .as_ref()
                            .and_then(|op| crate::extract::records(&answer.body, &op.records).ok())
                            .and_then(|r| r.into_iter().next()),
                        Err(SessionError::Call(CallError::Refused {
                            class: ErrorClass::NotFound,
                            ..
                        })) => None,
                        Err(e) => return Err(e.into()),
                    };
                    self.cache(&l.name).found.insert(norm.clone(), found);
                }
            }
            LookupLoad::List => {
                let listed = self.caches.borrow().get(&l.name).is_some_and(|c| c.listed);
                if !listed {
                    let all = self.list_candidates(l, &match_field, &ctx).await?;
                    let mut cache = self.cache(&l.name);
                    cache.listed = true;
                    for (k, v) in all {
                        cache.found.insert(k, Some(v));
                    }
                }
            }
            LookupLoad::Keys => {
                let param = l.param.clone().unwrap_or_default();
                let batch = l.batch.unwrap_or(KEYS_PER_CALL).max(1) as usize;
                for keys in missing.chunks(batch) {
                    let mut ctx = ctx.clone();
                    let joined: Vec<&str> = keys.iter().map(|(_, k)| k.as_str()).collect();
                    ctx.params.insert(param.clone(), joined.join(","));
                    let all = self.list_candidates(l, &match_field, &ctx).await?;
                    let mut cache = self.cache(&l.name);
                    for (k, v) in all {
                        cache.found.insert(k, Some(v));
                    }
                }
            }
        }
        {
            let mut cache = self.cache(&l.name);
            for (norm, _) in &missing {
                cache.found.entry(norm.clone()).or_insert(None);
            }
        }
        // Record what was found, so the next run need not look again.
        let found_now: Vec<(String, String)> = {
            let cache = self.cache(&l.name);
            missing
                .iter()
                .filter_map(|(norm, _)| {
                    let found = cache.found.get(norm)?.as_ref()?;
                    Some((norm.clone(), id_text(at(found, &primary))?))
                })
                .collect()
        };
        if !self.dry() && l.create.is_some() && !found_now.is_empty() {
            self.link_all(
                &kind,
                found_now
                    .iter()
                    .map(|(n, id)| (n.as_str(), id.as_str(), "")),
            )?;
        }
        let Some(create) = &l.create else {
            return Ok(());
        };
        let to_create: Vec<(String, String)> = {
            let cache = self.cache(&l.name);
            missing
                .into_iter()
                .filter(|(norm, _)| matches!(cache.found.get(norm), Some(None)))
                .collect()
        };
        let op = resource.create.clone().ok_or_else(|| {
            RunError::Config(format!(
                "lookup `{}`: `{}` cannot be created; run `weft flow check {}`",
                l.name,
                l.resource,
                self.flow()
            ))
        })?;
        let batch = op.batch_size.unwrap_or(1).max(1) as usize;
        let mut calls = Vec::new();
        for chunk in to_create.chunks(batch) {
            let mut records = Vec::with_capacity(chunk.len());
            for (_, key) in chunk {
                let scope = minijinja::context! { key => key, options => &self.options, tables => &self.tables };
                let record =
                    crate::mapping::evaluate(&format!("lookup {}.create", l.name), create, &scope)
                        .map_err(RunError::Config)?;
                records.push(Value::Object(record));
            }
            if self.dry() {
                let mut cache = self.cache(&l.name);
                for (norm, key) in chunk {
                    let mut found = Map::new();
                    found.insert(primary.clone(), Value::String("(new)".to_owned()));
                    found.insert(match_field.clone(), Value::String(key.clone()));
                    cache.found.insert(norm.clone(), Some(Value::Object(found)));
                    tally.summary.count(self.name, |c| c.lookups_created += 1);
                    tally.plan(
                        self.name,
                        "lookup",
                        key,
                        format!("{} would be created", l.resource),
                    );
                }
                continue;
            }
            let scope = format!(
                "{}/{kind}/{}",
                self.run.flow.name,
                endpoint.tenant.as_ref().map_or("", |t| t.id.as_str())
            );
            let key = crate::write::idempotency_key_for(&op, &scope, &records);
            let intents: Vec<WriteIntent<'_>> = chunk
                .iter()
                .map(|(norm, _)| WriteIntent {
                    source_id: norm,
                    source_version: "",
                    idempotency_key: key.as_deref().unwrap_or("-"),
                })
                .collect();
            self.run
                .state
                .begin_writes(&self.run.flow.name, &kind, &intents, self.now())?;
            calls.push((chunk, records, key));
        }
        // The batches go out together (the connection's limiter paces them).
        let answers = futures_util::future::join_all(calls.iter().map(|(_, records, key)| {
            self.send_batch(
                &l.connection,
                &l.resource,
                OpKind::Create,
                records,
                key.as_deref(),
                None,
            )
        }))
        .await;
        // A batch whose call failed keeps its intents (the next run's list finds what it
        // created); the others are handled, then that failure ends the run.
        let (answered, stop) =
            super::write::split_failed(calls.into_iter().map(|(chunk, _, _)| chunk).zip(answers));
        for (chunk, results) in answered {
            let mut done = Vec::new();
            let mut cache = self.cache(&l.name);
            for ((norm, key), result) in chunk.iter().zip(results) {
                match (result.status, result.id) {
                    ("ok", Some(id)) => {
                        let mut found = Map::new();
                        found.insert(primary.clone(), Value::String(id.clone()));
                        found.insert(match_field.clone(), Value::String(key.clone()));
                        cache.found.insert(norm.clone(), Some(Value::Object(found)));
                        done.push((norm.clone(), id));
                        tally.summary.count(self.name, |c| c.lookups_created += 1);
                        tally.plan(self.name, "lookup", key, format!("{} created", l.resource));
                    }
                    // Unknown: the intent stays; the next run's list finds it.
                    ("unknown", _) | ("ok", None) => {}
                    (_, _) => {
                        self.run
                            .state
                            .abandon_write(&self.run.flow.name, &kind, norm)?;
                        cache.refused.insert(
                            norm.clone(),
                            format!("`{key}` could not be created: {}", result.errors.join("; ")),
                        );
                    }
                }
            }
            self.link_all(
                &kind,
                done.iter().map(|(n, id)| (n.as_str(), id.as_str(), "")),
            )?;
        }
        if let Some(e) = stop {
            return Err(e);
        }
        Ok(())
    }
}
