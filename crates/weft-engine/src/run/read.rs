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
    pub(crate) async fn revisit(&mut self, tally: &mut Tally) -> Result<(), RunError> {
        let state = self.run.state;
        let mut ids: BTreeSet<String> = state
            .retries(self.flow(), self.kind())?
            .into_iter()
            .collect();
        if !self.dry() {
            ids.extend(state.unsettled(self.flow(), self.kind(), &self.back_kinds())?);
        }
        let ids: Vec<String> = ids.into_iter().collect();
        for chunk in ids.chunks(BY_ID_CHUNK) {
            let mut records = Vec::new();
            for id in chunk {
                if let Some(r) = self.get_source(id, tally).await? {
                    records.push(r);
                }
            }
            self.chunk(records, tally).await?;
        }
        Ok(())
    }

    /// Source record `id` by its `get`; one that is gone is queued (stage `read`).
    async fn get_source(&self, id: &str, tally: &mut Tally) -> Result<Option<Value>, RunError> {
        let src = &self.stream.source;
        let resource = self.resource(&src.connection, &src.resource)?;
        let Some(get) = resource.get.as_ref() else {
            self.fail(
                tally,
                id,
                "read",
                &format!("`{}` cannot be read by id (its spec has no `get`), so this record cannot be retried; resolve it with `weft errors resolve`", src.resource),
            )?;
            return Ok(None);
        };
        let mut ctx = self.ctx(&src.connection)?;
        ctx.id = Some(id.to_owned());
        let session = self.endpoint(&src.connection)?.session;
        match session
            .call(&src.resource, OpKind::Get, &ctx, &[], &[], None)
            .await
        {
            Ok(answer) => {
                let found = crate::extract::records(&answer.body, &get.records)
                    .ok()
                    .and_then(|r| r.into_iter().next());
                if found.is_none() {
                    self.fail(tally, id, "read", "the source no longer has this record")?;
                }
                Ok(found)
            }
            Err(SessionError::Call(CallError::Refused {
                class: ErrorClass::NotFound | ErrorClass::Forbidden,
                message,
                ..
            })) => {
                self.fail(
                    tally,
                    id,
                    "read",
                    &format!("the source record cannot be read ({message}); once it is back, run `weft errors retry`, or `weft errors resolve` to let it go"),
                )?;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Reads what changed since the stream's cursor and handles it page by page. With a keyset
    /// resource, each page restarts from the newest change seen, and the cursor is saved after
    /// every page; otherwise pages are numbered and the cursor is saved at the end.
    pub(crate) async fn read(&mut self, tally: &mut Tally) -> Result<(), RunError> {
        let src = &self.stream.source;
        let resource = self.resource(&src.connection, &src.resource)?;
        let list = resource.list.as_ref().ok_or_else(|| {
            RunError::Config(format!(
                "`{}` has no list operation; run `weft flow check {}`",
                src.resource,
                self.flow()
            ))
        })?;
        let session = self.endpoint(&src.connection)?.session;
        let state = self.run.state;
        let inc = list.incremental.as_ref().filter(|_| src.incremental);
        let now = self.now();
        let full = match src.full_every {
            Some(every) => state
                .cursor(self.flow(), &self.full_key())?
                .and_then(|c| c.parse::<u64>().ok())
                .is_none_or(|last| now.saturating_sub(last) >= every.as_millis()),
            None => false,
        };
        let mut cursor: Option<Timestamp> = match (inc, full) {
            (Some(_), false) => state
                .cursor(self.flow(), self.name)?
                .and_then(|c| crate::cursor::parse_since(&c).ok()),
            _ => None,
        };
        let keyset = inc.is_some_and(|i| i.keyset);
        let pagination = list.pagination.clone().unwrap_or(Pagination::None);
        let mut pager = Pager::new(&pagination);
        let mut newest = cursor;
        // Each record once per change: what a restarted page reads again is passed over.
        let mut seen: HashMap<String, i64> = HashMap::new();
        let mut pages = 0u64;
        loop {
            let mut ctx = self.ctx(&src.connection)?;
            ctx.params = src.params.clone();
            if let (Some(i), Some(c)) = (inc, cursor) {
                ctx.cursor = Some(crate::cursor::format(c, i));
            }
            let Some(query) = pager.next_query() else {
                break;
            };
            let (records, body) = session.page(&src.resource, &ctx, &query).await?;
            pages += 1;
            pager
                .advance(&body, records.len())
                .map_err(|source| SessionError::Page {
                    resource: src.resource.clone(),
                    source,
                })?;
            drop(body);
            let mut page_newest = None;
            let mut fresh = Vec::with_capacity(records.len());
            for r in records {
                let changed = inc.and_then(|i| {
                    crate::cursor::parse_field(super::at(&r, &i.field), i.field_format)
                });
                page_newest = page_newest.max(changed);
                let ms = changed.map_or(i64::MIN, Timestamp::as_millisecond);
                let id = id_text(super::at(&r, &resource.primary_key)).unwrap_or_default();
                if seen.get(&id) == Some(&ms) {
                    continue;
                }
                seen.insert(id, ms);
                fresh.push(r);
            }
            self.run.tell(&format!(
                "{}: page {pages}, {} records",
                self.name,
                fresh.len()
            ));
            self.chunk(fresh, tally).await?;
            newest = newest.max(page_newest);
            if keyset
                && !self.dry()
                && let Some(n) = page_newest
            {
                // Everything up to this page's newest change is handled.
                state.set_cursor(self.flow(), self.name, &n.to_string())?;
            }
            if pager.is_done() {
                break;
            }
            if keyset && page_newest > cursor {
                cursor = page_newest;
                pager = Pager::new(&pagination);
                // Forget what is older than the restart point: it cannot come back.
                if let (Some(c), Some(i)) = (cursor, inc) {
                    let overlap =
                        i64::try_from(i.overlap.map_or(0, |o| o.as_millis())).unwrap_or(0);
                    let floor = c.as_millisecond().saturating_sub(overlap + 86_400_000);
                    seen.retain(|_, ms| *ms >= floor);
                }
            }
        }
        if !self.dry() {
            if inc.is_some()
                && let Some(n) = newest
            {
                state.set_cursor(self.flow(), self.name, &n.to_string())?;
            }
            if src.full_every.is_some() && (full || inc.is_none()) {
                state.set_cursor(self.flow(), &self.full_key(), &now.to_string())?;
            }
        }
        Ok(())
    }
}
