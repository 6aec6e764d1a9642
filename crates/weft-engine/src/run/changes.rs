//! A stream whose changes come from a feed of change events: each event names a record, read
//! again by id. Events may come twice, late or out of order, and the feed keeps them only for a
//! while, so the feed's cursor keeps an overlap (with the ids of the events already handled in
//! it), and a stream whose last read is older than the feed keeps everything is read whole.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use jiff::Timestamp;
use minijinja::Value as JValue;

use super::{RunError, StreamRun, Tally, at, id_text};
use crate::flow::Changes;

/// Records read by id handled together.
const BY_ID_CHUNK: usize = 50;

impl StreamRun<'_> {
    fn changes_key(&self) -> String {
        format!("{}@changes", self.name)
    }

    fn changes_seen_key(&self) -> String {
        format!("{}@changes-seen", self.name)
    }

    /// Reads the records the feed names since the last read, or every record when the feed
    /// cannot vouch for everything since then.
    pub(crate) async fn read_changes(
        &self,
        changes: &Changes,
        tally: &mut Tally,
    ) -> Result<(), RunError> {
        let state = self.run.state;
        let src = &self.stream.source;
        let now = self.now();
        let last = state
            .cursor(self.flow(), &self.changes_key())?
            .and_then(|c| crate::cursor::parse_since(&c).ok());
        let within = last.filter(|l| {
            let age = i64::try_from(now)
                .unwrap_or(i64::MAX)
                .saturating_sub(l.as_millisecond());
            age < i64::try_from(changes.keep.as_millis()).unwrap_or(i64::MAX)
        });
        let (Some(since), false) = (within, self.full_due()?) else {
            self.run.tell(&format!(
                "{}: {}; reading every record",
                self.name,
                if last.is_none() {
                    "no change events read yet".to_owned()
                } else if within.is_none() {
                    format!(
                        "the last read of `{}` is older than the {} it keeps events",
                        changes.resource, changes.keep
                    )
                } else {
                    "a full read is due".to_owned()
                }
            ));
            // Events from the start of this read on are read next time.
            let started = Timestamp::from_millisecond(i64::try_from(now).unwrap_or(i64::MAX))
                .unwrap_or(Timestamp::UNIX_EPOCH);
            self.read_pages(true, tally).await?;
            if !self.dry() {
                state.set_cursor(self.flow(), &self.changes_key(), &started.to_string())?;
                state.set_cursor(self.flow(), &self.changes_seen_key(), "")?;
            }
            return Ok(());
        };
        let resource = self.resource(&src.connection, &changes.resource)?;
        let inc = resource
            .list
            .as_ref()
            .and_then(|l| l.incremental.clone())
            .ok_or_else(|| {
                RunError::Config(format!(
                    "`{}` has no incremental list; run `weft flow check {}`",
                    changes.resource,
                    self.flow()
                ))
            })?;
        let mut ctx = self.ctx(&src.connection)?;
        ctx.params = changes.params.clone();
        ctx.cursor = Some(crate::cursor::format(since, &inc));
        // Events handled already (those in the overlap of the last read), by id.
        let before: BTreeMap<String, i64> = state
            .cursor(self.flow(), &self.changes_seen_key())?
            .unwrap_or_default()
            .split(',')
            .filter_map(|s| {
                let (id, ms) = s.rsplit_once('@')?;
                Some((id.to_owned(), ms.parse().ok()?))
            })
            .collect();
        let mut events: BTreeMap<String, i64> = BTreeMap::new();
        let mut subjects: Vec<String> = Vec::new();
        let mut named: BTreeSet<String> = BTreeSet::new();
        let mut newest = since;
        let mut bad = None;
        self.run
            .tell(&format!("{}: reading {}", self.name, changes.resource));
        self.endpoint(&src.connection)?
            .session
            .list(&changes.resource, &ctx, |found| {
                let scope = minijinja::context! { found => JValue::from_serialize(&found), options => &self.options, tables => &self.tables };
                let read = |what: &str, expr: &str| -> Result<Option<String>, String> {
                    Ok(crate::mapping::value(what, expr, &scope)?
                        .as_ref()
                        .and_then(id_text))
                };
                let (event, subject) = match (
                    read("changes.event", &changes.event),
                    read("changes.subject", &changes.subject),
                ) {
                    (Ok(e), Ok(s)) => (e, s),
                    (Err(e), _) | (_, Err(e)) => {
                        bad = Some(e);
                        return ControlFlow::Break(());
                    }
                };
                let at_ms = crate::cursor::parse_field(at(&found, &inc.field), inc.field_format);
                if let Some(t) = at_ms {
                    newest = newest.max(t);
                }
                let Some(event) = event else {
                    return ControlFlow::Continue(());
                };
                if before.contains_key(&event) || events.contains_key(&event) {
                    return ControlFlow::Continue(());
                }
                events.insert(event, at_ms.map_or(i64::MIN, Timestamp::as_millisecond));
                if let Some(subject) = subject
                    && named.insert(subject.clone())
                {
                    subjects.push(subject);
                }
                ControlFlow::Continue(())
            })
            .await?;
        if let Some(e) = bad {
            return Err(RunError::Config(format!(
                "source.changes of `{}`: {e}",
                self.name
            )));
        }
        self.run.tell(&format!(
            "{}: {} events name {} records",
            self.name,
            events.len(),
            subjects.len()
        ));
        for ids in subjects.chunks(BY_ID_CHUNK) {
            let mut records = Vec::with_capacity(ids.len());
            for id in ids {
                // A record the feed names and the source no longer has was deleted there:
                // nothing to send.
                if let Ok(found) = self.get_source_or_gone(id).await? {
                    records.push(found);
                }
            }
            self.chunk(records, tally).await?;
        }
        self.dispatch_held(true)?;
        if !self.dry() {
            // The next read starts the overlap before the newest event; the events in that
            // overlap (read again then) are remembered so they are not handled twice.
            let overlap = i64::try_from(inc.overlap.map_or(0, |o| o.as_millis())).unwrap_or(0);
            let from = newest.as_millisecond().saturating_sub(overlap);
            let kept: Vec<String> = before
                .into_iter()
                .chain(events)
                .filter(|(_, ms)| *ms >= from)
                .map(|(id, ms)| format!("{id}@{ms}"))
                .collect();
            state.set_cursor(self.flow(), &self.changes_key(), &newest.to_string())?;
            state.set_cursor(self.flow(), &self.changes_seen_key(), &kept.join(","))?;
        }
        Ok(())
    }
}
