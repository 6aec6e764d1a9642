//! Reading a stream's source: what is unsettled (by id), then what changed (page by page).

use std::collections::{BTreeSet, HashMap};

use jiff::Timestamp;
use serde_json::Value;
use weft_core::model::{ErrorClass, Pagination};

use super::{RunError, StreamRun, Tally, id_text};
use crate::http::CallError;
use crate::paginate::Pager;
use crate::request::OpKind;
use crate::session::SessionError;

/// Records read by id per chunk.
const BY_ID_CHUNK: usize = 50;

/// Records read by page handled together (at least; a page is never split).
const CHUNK: usize = 200;

impl StreamRun<'_> {
    /// The cursor key of the last full read of this stream.
    fn full_key(&self) -> String {
        format!("{}@full", self.name)
    }

    /// The ledger kinds of this stream's write-backs.
    pub(crate) fn back_kinds(&self) -> Vec<String> {
        (0..self.stream.write_back.len())
            .map(|i| format!("{}#back{i}", self.name))
            .collect()
    }

    /// Reads again, by id, every record the error queue marks for retry and every record whose
    /// write or write-back is unsettled, and handles them first.
    pub(crate) async fn revisit(&self, tally: &mut Tally) -> Result<(), RunError> {
        let state = self.run.state;
        // Unsettled writes first, a batch's intents kept in one chunk (so a batch can be sent
        // again whole), then the retries a person asked for.
        let mut ids: Vec<(String, Option<String>)> = if self.dry() {
            Vec::new()
        } else {
            state.unsettled(self.flow(), self.kind(), &self.back_kinds())?
        };
        let known: BTreeSet<String> = ids.iter().map(|(id, _)| id.clone()).collect();
        ids.extend(
            state
                .retries(self.flow(), self.kind())?
                .into_iter()
                .filter(|id| !known.contains(id))
                .map(|id| (id, None)),
        );
        self.reading_at.set(None);
        let mut chunk: Vec<Value> = Vec::new();
        let mut count = 0;
        let mut last_key: Option<String> = None;
        for (id, key) in ids {
            let boundary = count >= BY_ID_CHUNK || (key.is_some() && key != last_key && count > 0);
            if boundary {
                self.chunk(std::mem::take(&mut chunk), tally).await?;
                count = 0;
            }
            last_key = key;
            count += 1;
            if let Some(r) = self.get_source(&id, tally).await? {
                chunk.push(r);
            }
        }
        if !chunk.is_empty() {
            self.chunk(chunk, tally).await?;
        }
        Ok(())
    }

    /// Source record `id` by its `get`; one that is gone is queued (stage `read`).
    async fn get_source(&self, id: &str, tally: &mut Tally) -> Result<Option<Value>, RunError> {
        match self.get_source_or_gone(id).await? {
            Ok(found) => Ok(Some(found)),
            Err(message) => {
                self.fail(tally, id, "read", &message)?;
                Ok(None)
            }
        }
    }

    /// Source record `id` by its `get`, or why it cannot be had (gone or out of reach).
    pub(crate) async fn get_source_or_gone(
        &self,
        id: &str,
    ) -> Result<Result<Value, String>, RunError> {
        let src = &self.stream.source;
        let resource = self.resource(&src.connection, &src.resource)?;
        let Some(get) = resource.get.as_ref() else {
            return Ok(Err(format!(
                "`{}` cannot be read by id (its spec has no `get`), so this record cannot be retried; resolve it with `weft errors resolve`",
                src.resource
            )));
        };
        let mut ctx = self.ctx(&src.connection)?;
        ctx.id = Some(id.to_owned());
        let session = self.endpoint(&src.connection)?.session;
        match session
            .call(&src.resource, OpKind::Get, &ctx, &[], &[], None)
            .await
        {
            Ok(answer) => Ok(crate::extract::records(&answer.body, &get.records)
                .ok()
                .and_then(|r| r.into_iter().next())
                .ok_or_else(|| "the source no longer has this record".to_owned())),
            Err(SessionError::Call(CallError::Refused {
                class: ErrorClass::NotFound | ErrorClass::Forbidden,
                message,
                ..
            })) => Ok(Err(format!(
                "the source record cannot be read ({message}); once it is back, run `weft errors retry`, or `weft errors resolve` to let it go"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads what changed since the stream's cursor and handles it page by page.
    ///
    /// With a keyset resource each request restarts from the newest change seen, so a record
    /// changed during the read (it moves to the end of the order) cannot push another onto a
    /// page already read. Where more records share one change time than a page holds, the read
    /// pages by number within that time, where such a push can happen: those pages are read
    /// again (records not seen yet are handled) until a pass finds nothing new, and if none
    /// settles, the cursor stays at that time so the next run reads it again. The cursor is
    /// saved at each restart point, and at the end of the read.
    pub(crate) async fn read(&self, tally: &mut Tally) -> Result<(), RunError> {
        match &self.stream.source.changes {
            Some(changes) => self.read_changes(changes, tally).await,
            None => self.read_pages(false, tally).await,
        }
    }

    /// Whether the stream's periodic full read is due.
    pub(crate) fn full_due(&self) -> Result<bool, RunError> {
        Ok(match self.stream.source.full_every {
            Some(every) => self
                .run
                .state
                .cursor(self.flow(), &self.full_key())?
                .and_then(|c| c.parse::<u64>().ok())
                .is_none_or(|last| self.now().saturating_sub(last) >= every.as_millis()),
            None => false,
        })
    }

    /// Reads the source's list page by page: what changed since its cursor, or everything
    /// (`everything`, or when a full read is due).
    pub(crate) async fn read_pages(
        &self,
        everything: bool,
        tally: &mut Tally,
    ) -> Result<(), RunError> {
        let src = &self.stream.source;
        let resource = self.resource(&src.connection, &src.resource)?;
        let list = resource.list.as_ref().ok_or_else(|| {
            RunError::Config(format!(
                "`{}` has no list operation; run `weft flow check {}`",
                src.resource,
                self.flow()
            ))
        })?;
        let state = self.run.state;
        let inc = list.incremental.as_ref().filter(|_| src.incremental);
        let now = self.now();
        let full = everything || self.full_due()?;
        let mut cursor: Option<Timestamp> = match (inc, full) {
            (Some(_), false) => state
                .cursor(self.flow(), self.name)?
                .and_then(|c| crate::cursor::parse_since(&c).ok()),
            _ => None,
        };
        let keyset = inc.is_some_and(|i| i.keyset);
        // A joined stream whose writes have unknown outcomes cannot yet name every record it
        // wrote: records it passes over now may be its own, so the cursor stays where it is.
        let hold = match &self.stream.join {
            Some(join) => state.unknown_count(self.flow(), &join.stream)? > 0,
            None => false,
        };
        let pagination = list.pagination.clone().unwrap_or(Pagination::None);
        let mut pager = Pager::new(&pagination);
        let mut newest = cursor;
        // Each record once per change: what a restarted page reads again is passed over.
        let mut seen: HashMap<String, i64> = HashMap::new();
        // Pages read at the current restart point, and the lowest point the read could not
        // vouch for.
        let mut at_cursor = 0u32;
        let mut floor: Option<Option<Timestamp>> = None;
        let mut pages = 0u64;
        // Records read and not handled yet, with the read position of the first of them:
        // pages are handled a few together, so a lookup's call serves more records.
        let mut unread: Vec<Value> = Vec::new();
        let mut unread_at: Option<Timestamp> = None;
        while let Some(query) = pager.next_query() {
            let (fresh, page_newest, _) = self.fetch(cursor, &query, &mut pager, &mut seen).await?;
            pages += 1;
            at_cursor += 1;
            self.run.tell(&format!(
                "{}: page {pages}, {} records",
                self.name,
                fresh.len()
            ));
            if unread.is_empty() {
                unread_at = cursor;
            }
            unread.extend(fresh);
            if unread.len() >= CHUNK || pager.is_done() {
                self.reading_at.set(unread_at);
                self.chunk(std::mem::take(&mut unread), tally).await?;
            }
            newest = newest.max(page_newest);
            let moving = keyset && page_newest > cursor;
            if !(pager.is_done() || moving) {
                continue;
            }
            if keyset && at_cursor > 1 && !unread.is_empty() {
                // The pages at this point are read again: what was read is handled first.
                self.reading_at.set(unread_at);
                self.chunk(std::mem::take(&mut unread), tally).await?;
            }
            self.reading_at.set(cursor);
            if keyset
                && at_cursor > 1
                && !self.verify(cursor, &pagination, &mut seen, tally).await?
            {
                floor = Some(floor.map_or(cursor, |f| f.min(cursor)));
            }
            if pager.is_done() {
                break;
            }
            cursor = page_newest;
            pager = Pager::new(&pagination);
            at_cursor = 0;
            if let (Some(c), Some(i)) = (cursor, inc) {
                // Forget what is older than the restart point: it cannot come back.
                let overlap = i64::try_from(i.overlap.map_or(0, |o| o.as_millis())).unwrap_or(0);
                let oldest = c.as_millisecond().saturating_sub(overlap);
                seen.retain(|_, ms| *ms >= oldest);
                // Everything before the restart point is handled, but for records not handled
                // yet and creates held to fill a batch: the cursor stays where the oldest of
                // them was read.
                let held = self.held.borrow().front().map(|(_, at)| *at);
                let oldest_open = [held, (!unread.is_empty()).then_some(unread_at)]
                    .into_iter()
                    .flatten()
                    .min();
                let safe = match oldest_open {
                    None => Some(c),
                    Some(at) => at.map(|at| at.min(c)),
                };
                if let Some(safe) = safe.filter(|_| floor.is_none() && !hold && !self.dry()) {
                    state.set_cursor(self.flow(), self.name, &safe.to_string())?;
                }
            }
        }
        if !unread.is_empty() {
            self.reading_at.set(unread_at);
            self.chunk(unread, tally).await?;
        }
        self.dispatch_held(true)?;
        if !self.dry() && !hold {
            let keep = match floor {
                Some(f) => f,
                None => newest,
            };
            if inc.is_some()
                && let Some(n) = keep
            {
                state.set_cursor(self.flow(), self.name, &n.to_string())?;
            }
            if (src.full_every.is_some() || src.changes.is_some()) && (full || inc.is_none()) {
                state.set_cursor(self.flow(), &self.full_key(), &now.to_string())?;
            }
        }
        Ok(())
    }

    /// One page at `cursor`: its records not seen yet at their change time, the newest change
    /// time in it, and how many of the new ones changed at or before `cursor`.
    async fn fetch(
        &self,
        cursor: Option<Timestamp>,
        query: &[(String, String)],
        pager: &mut Pager,
        seen: &mut HashMap<String, i64>,
    ) -> Result<(Vec<Value>, Option<Timestamp>, usize), RunError> {
        let src = &self.stream.source;
        let resource = self.resource(&src.connection, &src.resource)?;
        let inc = resource
            .list
            .as_ref()
            .and_then(|l| l.incremental.as_ref())
            .filter(|_| src.incremental);
        let session = self.endpoint(&src.connection)?.session;
        let mut ctx = self.ctx(&src.connection)?;
        ctx.params = src.params.clone();
        if let (Some(i), Some(c)) = (inc, cursor) {
            ctx.cursor = Some(crate::cursor::format(c, i));
        }
        if let Some(ask) = pager.next() {
            ask.apply(&mut ctx);
        }
        let (records, body) = session.page(&src.resource, &ctx, query).await?;
        pager
            .advance(&body, records.len())
            .map_err(|source| SessionError::Page {
                resource: src.resource.clone(),
                source,
            })?;
        drop(body);
        let mut page_newest = None;
        let mut fresh = Vec::with_capacity(records.len());
        let mut old = 0;
        for r in records {
            let changed = inc
                .and_then(|i| crate::cursor::parse_field(super::at(&r, &i.field), i.field_format));
            page_newest = page_newest.max(changed);
            let ms = changed.map_or(i64::MIN, Timestamp::as_millisecond);
            let id = id_text(super::at(&r, &resource.primary_key)).unwrap_or_default();
            if seen.get(&id) == Some(&ms) {
                continue;
            }
            if changed <= cursor {
                old += 1;
            }
            seen.insert(id, ms);
            fresh.push(r);
        }
        Ok((fresh, page_newest, old))
    }

    /// Reads the pages at `cursor` again (they were read by number, so a change during the
    /// read may have pushed a record onto a page already read): handles what was not seen,
    /// until a pass finds nothing new (at most three passes). True when one did.
    async fn verify(
        &self,
        cursor: Option<Timestamp>,
        pagination: &Pagination,
        seen: &mut HashMap<String, i64>,
        tally: &mut Tally,
    ) -> Result<bool, RunError> {
        for _ in 0..3 {
            let mut pager = Pager::new(pagination);
            let mut found = 0;
            while let Some(query) = pager.next_query() {
                let (fresh, page_newest, old) =
                    self.fetch(cursor, &query, &mut pager, seen).await?;
                found += old;
                self.chunk(fresh, tally).await?;
                if pager.is_done() || page_newest > cursor {
                    break;
                }
            }
            if found == 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
