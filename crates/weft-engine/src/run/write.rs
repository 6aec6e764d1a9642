//! Writing at the destination against the ledger: unchanged records left alone, new ones
//! created in batches (intents first), unknown outcomes settled by natural key, changed ones
//! updated while the update policy allows (intents too, keyed by the version they replace), and
//! write-backs made once per destination id.

use std::collections::HashMap;
use std::ops::ControlFlow;

use minijinja::Value as JValue;
use serde_json::{Value, json};
use weft_core::model::{ErrorClass, Operation};

use super::outbox::Sending;
use super::record::Work;
use super::{Back, RunError, StreamRun, Tally, at, id_text};
use crate::flow::BackOperation;
use crate::http::CallError;
use crate::request::OpKind;
use crate::session::SessionError;
use crate::state::WriteIntent;
use crate::write::{ItemResult, idempotency_key_for};

/// Destination records read per call for an update policy.
const READ_CHUNK: usize = 50;

impl StreamRun<'_> {
    /// One write call with per-item results. A refusal of the whole call (a 4xx other than
    /// 401 and 429) fails every item with its message: nothing was written. Anything else that
    /// fails ends the run, leaving the intents pending.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn send_batch(
        &self,
        alias: &str,
        resource: &str,
        kind: OpKind,
        records: &[Value],
        key: Option<&str>,
        id: Option<&str>,
    ) -> Result<Vec<ItemResult>, RunError> {
        let endpoint = self.endpoint(alias)?;
        let mut ctx = self.ctx(alias)?;
        ctx.id = id.map(str::to_owned);
        match endpoint
            .session
            .write(resource, kind.as_str(), &ctx, records, key)
            .await
        {
            Ok(results) => Ok(results),
            Err(SessionError::Call(CallError::Refused {
                status,
                message,
                class,
                ..
            })) if (400..500).contains(&status)
                && status != 401
                && status != 429
                // A refusal of the grant's permission is the same for every record: the run
                // stops with it rather than queue each record.
                && class != ErrorClass::Forbidden =>
            {
                let message = if class == ErrorClass::Conflict {
                    format!(
                        "{message} (the record changed at the destination since it was read: the next run reads it again and writes on top of it; `weft errors retry` asks for that now)"
                    )
                } else {
                    message
                };
                Ok(records
                    .iter()
                    .enumerate()
                    .map(|(index, _)| ItemResult {
                        index,
                        status: "failed",
                        id: None,
                        errors: vec![message.clone()],
                    })
                    .collect())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The field of the write's natural key, when it declares one.
    fn natural_field(&self) -> Option<String> {
        let nk = self.stream.write.natural_key.as_ref();
        nk.map(|n| n.field.clone())
    }

    /// The idempotency scope of this stream's writes.
    fn scope_key(&self, what: &str) -> String {
        let tenant = self
            .endpoint(&self.stream.write.connection)
            .ok()
            .and_then(|e| e.tenant.as_ref())
            .map_or(String::new(), |t| t.id.clone());
        format!("{}/{}/{what}/{tenant}", self.flow(), self.name)
    }

    /// Destination ids by natural key value, for the values found there.
    async fn find_natural(&self, values: &[String]) -> Result<HashMap<String, String>, RunError> {
        let mut found = HashMap::new();
        let Some(nk) = &self.stream.write.natural_key else {
            return Ok(found);
        };
        let w = &self.stream.write;
        let primary = self
            .resource(&w.connection, &w.resource)?
            .primary_key
            .clone();
        let session = self.endpoint(&w.connection)?.session;
        // Without a parameter the whole list is read once, for every value.
        let per_call = match nk.param {
            Some(_) => nk.batch.max(1) as usize,
            None => values.len().max(1),
        };
        for chunk in values.chunks(per_call) {
            let mut ctx = self.ctx(&w.connection)?;
            let value = match &nk.format {
                None => chunk.join(","),
                Some(t) => crate::mapping::environment()
                    .render_str(t, minijinja::context! { keys => chunk })
                    .map_err(|e| RunError::Config(format!("natural-key.format: {e}")))?,
            };
            if let Some(param) = &nk.param {
                ctx.params.insert(param.clone(), value);
            }
            let mut bad = None;
            session
                .list(&w.resource, &ctx, |record| {
                    if let Some(ignore) = &nk.ignore {
                        let scope = minijinja::context! { found => JValue::from_serialize(&record), options => &self.options, tables => &self.tables };
                        match crate::mapping::truthy("natural-key.ignore", ignore, &scope) {
                            Ok(true) => return ControlFlow::Continue(()),
                            Ok(false) => {}
                            Err(e) => {
                                bad = Some(e);
                                return ControlFlow::Break(());
                            }
                        }
                    }
                    if let (Some(v), Some(id)) = (id_text(at(&record, &nk.field)), id_text(at(&record, &primary)))
                        && chunk.contains(&v)
                    {
                        found.entry(v).or_insert(id);
                    }
                    ControlFlow::Continue(())
                })
                .await?;
            if let Some(e) = bad {
                return Err(RunError::Config(e));
            }
        }
        Ok(found)
    }

    /// Splits writes whose outcome is unknown into those that can be sent again exactly as
    /// they were, with their idempotency key, because the provider still replays that key (its
    /// `window` has not passed since the intent, every record of the batch is here at the
    /// version it had, and the batch is whole), and the others, to settle by natural key.
    #[allow(clippy::type_complexity)]
    fn replayable(
        &self,
        settle: Vec<(Work, crate::state::PendingWrite)>,
    ) -> Result<(Vec<(String, Vec<Work>)>, Vec<Work>), RunError> {
        let w = &self.stream.write;
        let window = self
            .resource(&w.connection, &w.resource)?
            .create
            .as_ref()
            .and_then(|op| op.idempotency.as_ref())
            .and_then(|i| i.window);
        let Some(window) = window else {
            return Ok((Vec::new(), settle.into_iter().map(|(w, _)| w).collect()));
        };
        let mut groups: std::collections::BTreeMap<
            String,
            Vec<(Work, crate::state::PendingWrite)>,
        > = std::collections::BTreeMap::new();
        for (work, pending) in settle {
            groups
                .entry(pending.idempotency_key.clone())
                .or_default()
                .push((work, pending));
        }
        let mut replays = Vec::new();
        let mut rest = Vec::new();
        for (key, members) in groups {
            let fresh = members
                .iter()
                .all(|(_, p)| self.now().saturating_sub(p.since_ms) < window.as_millis());
            let same = members.iter().all(|(w, p)| p.source_version == w.version);
            let whole = self
                .run
                .state
                .pending_count(self.flow(), self.kind(), &key)?
                == members.len() as u64;
            if key != "-" && fresh && same && whole {
                replays.push((key, members.into_iter().map(|(w, _)| w).collect()));
            } else {
                rest.extend(members.into_iter().map(|(w, _)| w));
            }
        }
        Ok((replays, rest))
    }

    /// Looks works up at the destination by their natural key and links those found (their
    /// version unknown, so an update follows); returns the found ones with their destination
    /// id, and the others with what they carried.
    #[allow(clippy::type_complexity)]
    async fn relink_by_natural<T>(
        &self,
        works: Vec<(Work, T)>,
        tally: &mut Tally,
    ) -> Result<(Vec<(Work, String)>, Vec<(Work, T)>), RunError> {
        let nk_field = self.natural_field();
        let values: Vec<String> = works
            .iter()
            .filter_map(|(w, _)| w.natural(nk_field.as_deref()))
            .collect();
        let found = self.find_natural(&values).await?;
        let (mut linked, mut missing) = (Vec::new(), Vec::new());
        for (w, extra) in works {
            match w
                .natural(nk_field.as_deref())
                .and_then(|v| found.get(&v).cloned())
            {
                Some(id) => {
                    self.run.state.finish_write(
                        self.flow(),
                        self.kind(),
                        &w.id,
                        &id,
                        "",
                        None,
                        self.now(),
                    )?;
                    tally.plan(
                        self.name,
                        "link",
                        &w.id,
                        format!("already at the destination as {id}, found by its natural key"),
                    );
                    linked.push((w, id));
                }
                None => missing.push((w, extra)),
            }
        }
        Ok((linked, missing))
    }

    /// Writes the works: returns those that ended linked to a destination record (for the
    /// write-backs).
    pub(crate) async fn write(
        &self,
        works: Vec<Work>,
        tally: &mut Tally,
    ) -> Result<Vec<Work>, RunError> {
        self.settle_on_the_way(&works, tally).await?;
        let state = self.run.state;
        let nk_field = self.natural_field();
        let mut linked = Vec::new();
        let mut creates = Vec::new();
        let mut updates = Vec::new();
        let mut settle = Vec::new();
        for mut w in works {
            let link = state.link(self.flow(), self.kind(), &w.id)?;
            match link {
                Some(l) if l.pending.is_some() && !self.dry() => match (l.dest_id, l.pending) {
                    // An update whose answer was lost: the record is known, update it again.
                    (Some(d), _) => updates.push((w, d, "pending".to_owned())),
                    // The first write into a record the flow names: known, update it again.
                    (None, Some(_)) if w.target.is_some() => {
                        let d = w.target.clone().unwrap_or_default();
                        updates.push((w, d, "pending".to_owned()));
                    }
                    (None, Some(p)) => settle.push((w, p)),
                    (None, None) => creates.push(w),
                },
                Some(l) if l.dest_id.is_some() => {
                    let d = l.dest_id.unwrap_or_default();
                    if l.source_version == w.version {
                        tally.summary.count(self.name, |c| c.unchanged += 1);
                        if self.dry() {
                            tally.plan(self.name, "unchanged", &w.id, format!("is {d}"));
                        }
                        self.cleared(&w.id)?;
                        w.dest = Some(d);
                        linked.push(w);
                    } else {
                        updates.push((w, d, l.source_version));
                    }
                }
                // A record the flow names: updated (under the policy), never created.
                _ => match w.target.clone() {
                    Some(d) => updates.push((w, d, String::new())),
                    None if self.stream.write.id.is_some() && self.create_op().is_err() => {
                        self.fail(
                            tally,
                            &w.id,
                            "create",
                            &format!(
                                "write.id gives no `{}` to write into, and one cannot be created",
                                self.stream.write.resource
                            ),
                        )?;
                    }
                    None => creates.push(w),
                },
            }
        }
        let (replays, settle) = self.replayable(settle)?;
        if !settle.is_empty() {
            if nk_field.is_some() {
                let (found, missing) = self
                    .relink_by_natural(settle.into_iter().map(|w| (w, ())).collect(), tally)
                    .await?;
                updates.extend(found.into_iter().map(|(w, id)| (w, id, String::new())));
                creates.extend(missing.into_iter().map(|(w, ())| w));
            } else {
                for w in settle {
                    self.fail(
                        tally,
                        &w.id,
                        "create",
                        &format!(
                            "an earlier write's outcome is unknown and the flow declares no natural key to find it by; check `{}` at the destination, then run `weft errors resolve`",
                            w.id
                        ),
                    )?;
                }
            }
        }
        if self.dry() {
            self.plan_creates(creates, tally);
        } else {
            self.hold(creates);
            self.dispatch_replays(replays)?;
        }
        linked.extend(self.update(updates, tally).await?);
        Ok(linked)
    }

    /// What a dry run would create.
    fn plan_creates(&self, works: Vec<Work>, tally: &mut Tally) {
        let nk_field = self.natural_field();
        for work in works {
            tally.summary.count(self.name, |c| c.created += 1);
            let label = work
                .natural(nk_field.as_deref())
                .unwrap_or_else(|| work.id.clone());
            tally.plan(
                self.name,
                "create",
                &work.id,
                format!("{label} would be created"),
            );
        }
    }

    /// Keeps creates until they fill whole batches; a record held already is replaced by its
    /// newer version.
    fn hold(&self, works: Vec<Work>) {
        let mut held = self.held.borrow_mut();
        for mut work in works {
            work.lighten(&self.keep);
            match held.iter_mut().find(|(h, _)| h.id == work.id) {
                Some(h) => h.0 = work,
                None => held.push_back((work, self.reading_at.get())),
            }
        }
    }

    /// Takes the held creates that fill whole batches (all of them when `all`).
    pub(crate) fn take_held(&self, op: &Operation, all: bool) -> Vec<(Vec<Work>, Option<String>)> {
        let batch_size = op.batch_size.unwrap_or(1).max(1) as usize;
        let mut held = self.held.borrow_mut();
        let mut count = if all {
            held.len().div_ceil(batch_size)
        } else {
            held.len() / batch_size
        };
        let mut batches = Vec::with_capacity(count);
        while count > 0 {
            let n = batch_size.min(held.len());
            batches.push((held.drain(..n).map(|(w, _)| w).collect(), None));
            count -= 1;
        }
        batches
    }

    /// The destination's create operation.
    pub(crate) fn create_op(&self) -> Result<Operation, RunError> {
        let w = &self.stream.write;
        self.resource(&w.connection, &w.resource)?
            .create
            .clone()
            .ok_or_else(|| {
                RunError::Config(format!(
                    "`{}` cannot be created; run `weft flow check {}`",
                    w.resource,
                    self.flow()
                ))
            })
    }

    /// The destination connection's concurrency level: how many batches go out together.
    pub(crate) fn concurrency(&self) -> Result<usize, RunError> {
        let alias = &self.stream.write.connection;
        Ok(self.endpoint(alias)?.session.concurrency().max(1) as usize)
    }

    /// Records the intents of create batches (before anything is sent): each batch
    /// in the order of its source ids, with its records and idempotency key.
    pub(crate) fn begin_creates(
        &self,
        op: &Operation,
        batches: Vec<(Vec<Work>, Option<String>)>,
    ) -> Result<Vec<Sending>, RunError> {
        let mut sending = Vec::with_capacity(batches.len());
        for (mut works, replay_key) in batches {
            // In the order of their source ids, so a batch can be sent again exactly as it was
            // (its idempotency key then replays the first answer, item by item).
            works.sort_by(|a, b| a.id.cmp(&b.id));
            let records: Vec<Value> = works
                .iter()
                .map(|w| Value::Object(w.body.clone()))
                .collect();
            let key = match replay_key {
                Some(k) => Some(k),
                None => idempotency_key_for(op, &self.scope_key("create"), &records),
            };
            let intents: Vec<WriteIntent<'_>> = works
                .iter()
                .map(|w| WriteIntent {
                    source_id: &w.id,
                    source_version: &w.version,
                    idempotency_key: key.as_deref().unwrap_or("-"),
                })
                .collect();
            self.run
                .state
                .begin_writes(self.flow(), self.kind(), &intents, self.now())?;
            sending.push(Sending {
                works,
                records,
                key,
            });
        }
        Ok(sending)
    }

    /// Handles answers to create batches: links what was created, relinks by natural key (and updates)
    /// what the destination refused as already there, queues the other refusals; an item the
    /// answer does not mention stays pending, settled next run. A batch whose call failed stays
    /// pending too; the others are handled, then that failure ends the run. Returns the works
    /// now linked.
    pub(crate) async fn created(
        &self,
        sending: Vec<Sending>,
        answers: Vec<Result<Vec<ItemResult>, RunError>>,
        tally: &mut Tally,
    ) -> Result<Vec<Work>, RunError> {
        let state = self.run.state;
        let nk_field = self.natural_field();
        let mut created = Vec::new();
        let mut relinked = Vec::new();
        let (answered, stop) = split_failed(sending.into_iter().zip(answers));
        for (sent, results) in answered {
            let mut done = Vec::new();
            let mut failed = Vec::new();
            let mut stored_failed = Vec::new();
            for (work, result) in sent.works.into_iter().zip(results) {
                match (result.status, result.id) {
                    ("ok", Some(id)) => done.push((work, id)),
                    // Failed, but the provider stored it (failed by its warnings).
                    ("failed", Some(id)) => {
                        stored_failed.push((work, id, result.errors.join("; ")));
                    }
                    ("failed", None) => failed.push((work, result.errors.join("; "))),
                    _ => tally.plan(
                        self.name,
                        "pending",
                        &work.id,
                        "the answer does not say; settled next run".to_owned(),
                    ),
                }
            }
            self.link_all(
                self.kind(),
                done.iter()
                    .map(|(w, id)| (w.id.as_str(), id.as_str(), w.version.as_str())),
            )?;
            for (mut work, id) in done {
                self.cleared(&work.id)?;
                tally.summary.count(self.name, |c| c.created += 1);
                let label = work
                    .natural(nk_field.as_deref())
                    .unwrap_or_else(|| work.id.clone());
                tally.plan(self.name, "create", &work.id, format!("{label} → {id}"));
                work.dest = Some(id);
                created.push(work);
            }
            // Stored but failed: linked to what was stored with no version written, so the next
            // run updates it rather than creating it a second time; queued like any failure.
            self.link_all(
                self.kind(),
                stored_failed
                    .iter()
                    .map(|(w, id, _)| (w.id.as_str(), id.as_str(), "")),
            )?;
            for (work, _, message) in stored_failed {
                self.fail(tally, &work.id, "create", &message)?;
            }
            // Refused: perhaps because it is already there (a lost state, another tool).
            let (found, missing) = if nk_field.is_some() && !failed.is_empty() {
                self.relink_by_natural(failed, tally).await?
            } else {
                (Vec::new(), failed)
            };
            relinked.extend(found.into_iter().map(|(w, id)| (w, id, String::new())));
            for (work, message) in missing {
                state.abandon_write(self.flow(), self.kind(), &work.id)?;
                self.fail(tally, &work.id, "create", &message)?;
            }
        }
        self.save_progress(tally)?;
        if let Some(e) = stop {
            return Err(e);
        }
        created.extend(self.update(relinked, tally).await?);
        Ok(created)
    }

    /// The destination records `ids` as they are now (for the update policy).
    async fn current(&self, ids: &[&str]) -> Result<HashMap<String, Value>, RunError> {
        let w = &self.stream.write;
        let resource = self.resource(&w.connection, &w.resource)?;
        let session = self.endpoint(&w.connection)?.session;
        let mut out = HashMap::new();
        match &w.update.read_param {
            Some(param) => {
                for chunk in ids.chunks(READ_CHUNK) {
                    let mut ctx = self.ctx(&w.connection)?;
                    ctx.params.insert(param.clone(), chunk.join(","));
                    session
                        .list(&w.resource, &ctx, |r| {
                            if let Some(id) = id_text(at(&r, &resource.primary_key)) {
                                out.insert(id, r);
                            }
                            ControlFlow::Continue(())
                        })
                        .await?;
                }
            }
            None => {
                for id in ids {
                    let mut ctx = self.ctx(&w.connection)?;
                    ctx.id = Some((*id).to_owned());
                    match session
                        .call(&w.resource, OpKind::Get, &ctx, &[], &[], None)
                        .await
                    {
                        Ok(answer) => {
                            if let Some(r) = resource
                                .get
                                .as_ref()
                                .and_then(|op| {
                                    crate::extract::records(&answer.body, &op.records).ok()
                                })
                                .and_then(|r| r.into_iter().next())
                            {
                                out.insert((*id).to_owned(), r);
                            }
                        }
                        Err(SessionError::Call(CallError::Refused {
                            class: ErrorClass::NotFound,
                            ..
                        })) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(out)
    }

    /// Updates changed works while the policy allows; records why when it does not.
    async fn update(
        &self,
        works: Vec<(Work, String, String)>,
        tally: &mut Tally,
    ) -> Result<Vec<Work>, RunError> {
        let mut linked = Vec::new();
        if works.is_empty() {
            return Ok(linked);
        }
        let state = self.run.state;
        let w = &self.stream.write;
        let policy = &w.update;
        // The destination records as they are now: for the policy's condition, and for the
        // fields each update carries over from them (a version the provider checks).
        let needs_current = !policy.never && (policy.when.is_some() || !policy.carry.is_empty());
        let current = if needs_current {
            let ids: Vec<&str> = works.iter().map(|(_, d, _)| d.as_str()).collect();
            self.current(&ids).await?
        } else {
            HashMap::new()
        };
        let mut ready = Vec::new();
        for (mut work, dest, previous) in works {
            let refusal = if policy.never {
                Some("the flow writes these records once and never updates them".to_owned())
            } else if needs_current && !current.contains_key(&dest) {
                Some("the destination record is gone".to_owned())
            } else if let Some(when) = &policy.when {
                match current.get(&dest) {
                    None => Some("the destination record is gone".to_owned()),
                    Some(found) => {
                        let scope = minijinja::context! { found => JValue::from_serialize(found), options => &self.options, tables => &self.tables };
                        match crate::mapping::truthy("update.when", when, &scope) {
                            Ok(true) => None,
                            Ok(false) => Some(match &policy.refused {
                                Some(t) => self
                                    .env
                                    .render_str(t, &scope)
                                    .unwrap_or_else(|e| e.to_string()),
                                None => format!(
                                    "the update policy (`{when}`) keeps the destination record as it is"
                                ),
                            }),
                            Err(e) => {
                                self.fail(tally, &work.id, "update", &e)?;
                                continue;
                            }
                        }
                    }
                }
            } else {
                None
            };
            match refusal {
                Some(why) => {
                    tally.summary.count(self.name, |c| c.skipped += 1);
                    tally.plan(self.name, "skip", &work.id, why.clone());
                    if !self.dry() {
                        state.set_note(self.flow(), self.kind(), &work.id, Some(&why))?;
                        // The version is recorded so the same refusal is not tried every run.
                        state.finish_write(
                            self.flow(),
                            self.kind(),
                            &work.id,
                            &dest,
                            &work.version,
                            None,
                            self.now(),
                        )?;
                        self.cleared(&work.id)?;
                    }
                    work.dest = Some(dest);
                    linked.push(work);
                }
                None => ready.push((work, dest, previous)),
            }
        }
        if ready.is_empty() {
            return Ok(linked);
        }
        if self.dry() {
            for (work, dest, _) in ready {
                tally.summary.count(self.name, |c| c.updated += 1);
                tally.plan(
                    self.name,
                    "update",
                    &work.id,
                    format!("{dest} would be updated"),
                );
            }
            return Ok(linked);
        }
        let resource = self.resource(&w.connection, &w.resource)?;
        let op = resource.update.clone().ok_or_else(|| {
            RunError::Config(format!(
                "`{}` cannot be updated; run `weft flow check {}`",
                w.resource,
                self.flow()
            ))
        })?;
        // An update names its record in the path (one per call) or in the body.
        let by_path = weft_core::template::variables(&self.env, &op.path)
            .is_some_and(|v| weft_core::template::reads(&v, "id"));
        let batch_size = if by_path {
            1
        } else {
            op.batch_size.unwrap_or(1).max(1) as usize
        };
        let primary = resource.primary_key.clone();
        let mut ready = ready.into_iter().peekable();
        while ready.peek().is_some() {
            let batch: Vec<(Work, String, String)> = ready.by_ref().take(batch_size).collect();
            let records: Vec<Value> = batch
                .iter()
                .map(|(work, dest, _)| {
                    let mut body = work.body.clone();
                    for field in &policy.omit {
                        body.remove(field);
                    }
                    if let Some(found) = current.get(dest) {
                        for field in &policy.carry {
                            if let Some(v) = found.get(field).filter(|v| !v.is_null()) {
                                body.insert(field.clone(), v.clone());
                            }
                        }
                    }
                    if !by_path {
                        body.insert(primary.clone(), Value::String(dest.clone()));
                    }
                    Value::Object(body)
                })
                .collect();
            // The key names the version each update replaces and when the intent was made, so
            // going back and forth (A → B → A → B) inside the provider's idempotency window is a
            // new request each time, never a replay of an older answer. A retry of this very
            // request (inside `send`) carries the same key.
            let intent_at = self.now();
            let keyed: Vec<Value> = records
                .iter()
                .zip(&batch)
                .map(|(r, (_, _, previous))| json!([r, previous, intent_at]))
                .collect();
            let key = idempotency_key_for(&op, &self.scope_key("update"), &keyed);
            let intents: Vec<WriteIntent<'_>> = batch
                .iter()
                .map(|(work, _, _)| WriteIntent {
                    source_id: &work.id,
                    source_version: &work.version,
                    idempotency_key: key.as_deref().unwrap_or("-"),
                })
                .collect();
            state.begin_writes(self.flow(), self.kind(), &intents, self.now())?;
            let id = if by_path {
                batch.first().map(|(_, d, _)| d.as_str())
            } else {
                None
            };
            let results = self
                .send_batch(
                    &w.connection,
                    &w.resource,
                    OpKind::Update,
                    &records,
                    key.as_deref(),
                    id,
                )
                .await?;
            let mut done = Vec::new();
            for ((work, dest, previous), result) in batch.into_iter().zip(results) {
                match result.status {
                    "ok" => done.push((work, dest)),
                    "failed" => {
                        // Nothing changed: the link keeps the version it had.
                        state.finish_write(
                            self.flow(),
                            self.kind(),
                            &work.id,
                            &dest,
                            &previous,
                            None,
                            self.now(),
                        )?;
                        self.fail(tally, &work.id, "update", &result.errors.join("; "))?;
                    }
                    _ => tally.plan(
                        self.name,
                        "pending",
                        &work.id,
                        "the answer does not say; updated again next run".to_owned(),
                    ),
                }
            }
            self.link_all(
                self.kind(),
                done.iter()
                    .map(|(w, dest)| (w.id.as_str(), dest.as_str(), w.version.as_str())),
            )?;
            for (mut work, dest) in done {
                self.cleared(&work.id)?;
                tally.summary.count(self.name, |c| c.updated += 1);
                tally.plan(self.name, "update", &work.id, format!("{dest} updated"));
                work.dest = Some(dest);
                linked.push(work);
            }
            self.save_progress(tally)?;
        }
        Ok(linked)
    }

    /// Queues the write-backs of every linked work (once per destination id): their bodies are
    /// computed now, from the record, and sent by [`Self::flush_write_backs`] at the end of the
    /// read (or when many are waiting), so the destination's writes are not held up by the
    /// source's. A run that dies before sending them leaves the links without their write-back,
    /// which the next run finds and makes.
    pub(crate) fn write_back(&self, works: &[Work], tally: &mut Tally) -> Result<(), RunError> {
        let state = self.run.state;
        for (i, back) in self.stream.write_back.iter().enumerate() {
            let kind = format!("{}#back{i}", self.name);
            for work in works {
                let Some(dest) = &work.dest else { continue };
                if let Some(l) = state.link(self.flow(), &kind, &work.id)?
                    && l.dest_id.as_deref() == Some(dest.as_str())
                    && l.pending.is_none()
                {
                    continue;
                }
                if self.dry() {
                    tally.summary.count(self.name, |c| c.written_back += 1);
                    continue;
                }
                let scope = self.scope(
                    work,
                    &[("written", JValue::from_serialize(json!({ "id": dest })))],
                );
                match crate::mapping::evaluate(
                    &format!("write-back[{i}].fields"),
                    &back.fields,
                    &scope,
                ) {
                    Ok(b) => self.backs.borrow_mut().push(Back {
                        index: i,
                        source_id: work.id.clone(),
                        dest_id: dest.clone(),
                        body: Value::Object(b),
                    }),
                    Err(message) => self.fail(tally, &work.id, "write-back", &message)?,
                }
            }
        }
        Ok(())
    }

    /// Sends the queued write-backs.
    pub(crate) async fn flush_write_backs(&self, tally: &mut Tally) -> Result<(), RunError> {
        let state = self.run.state;
        let backs = std::mem::take(&mut *self.backs.borrow_mut());
        let total = backs.len();
        for (n, b) in backs.into_iter().enumerate() {
            let back = &self.stream.write_back[b.index];
            let kind = format!("{}#back{}", self.name, b.index);
            if n % 50 == 0 {
                self.run
                    .tell(&format!("{}: writing back {} of {total}", self.name, n + 1));
            }
            let res = self.resource(&back.connection, &back.resource)?;
            let (kind_of, op, id) = match back.operation {
                BackOperation::Update => (OpKind::Update, &res.update, Some(b.source_id.as_str())),
                BackOperation::Create => (OpKind::Create, &res.create, None),
            };
            op.as_ref().ok_or_else(|| {
                RunError::Config(format!(
                    "`{}` has no `{}` operation; run `weft flow check {}`",
                    back.resource,
                    back.operation.name(),
                    self.flow()
                ))
            })?;
            // Writing back twice is harmless (it sets the same values), so no key is needed.
            state.begin_write(self.flow(), &kind, &b.source_id, "", &b.dest_id, self.now())?;
            let result = self
                .send_batch(
                    &back.connection,
                    &back.resource,
                    kind_of,
                    std::slice::from_ref(&b.body),
                    None,
                    id,
                )
                .await?;
            match result.into_iter().next() {
                Some(r) if r.status == "failed" => {
                    state.abandon_write(self.flow(), &kind, &b.source_id)?;
                    self.fail(tally, &b.source_id, "write-back", &r.errors.join("; "))?;
                }
                _ => {
                    state.finish_write(
                        self.flow(),
                        &kind,
                        &b.source_id,
                        &b.dest_id,
                        "",
                        None,
                        self.now(),
                    )?;
                    tally.summary.count(self.name, |c| c.written_back += 1);
                }
            }
        }
        self.save_progress(tally)
    }
}

/// Splits `(what, answer)` pairs into those answered and the first failure: the calls that
/// were answered are handled before that failure ends the run.
pub(crate) fn split_failed<T, R>(
    pairs: impl IntoIterator<Item = (T, Result<R, RunError>)>,
) -> (Vec<(T, R)>, Option<RunError>) {
    let mut answered = Vec::new();
    let mut stop = None;
    for (what, answer) in pairs {
        match answer {
            Ok(r) => answered.push((what, r)),
            Err(e) => {
                stop.get_or_insert(e);
            }
        }
    }
    (answered, stop)
}
