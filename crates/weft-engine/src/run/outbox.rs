//! Create batches on their way to the destination. The stream's steps (read, prepare, classify)
//! put whole batches in, each with its intents recorded first, and handle the answers as they
//! come back; beside them a sender keeps up to the connection's concurrency of batches in
//! flight, so the destination's slots do not wait for the steps before the write. Both run in
//! the stream's task and are polled together: neither can hold a concurrency slot while the
//! other waits for one.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use weft_core::model::Operation;

use super::record::Work;
use super::{RunError, StreamRun, Tally};
use crate::request::OpKind;
use crate::write::ItemResult;

/// A create batch with its intents recorded: its works, their records and the batch's
/// idempotency key.
pub(crate) struct Sending {
    pub(super) works: Vec<Work>,
    pub(super) records: Vec<Value>,
    pub(super) key: Option<String>,
}

type Answered = (Sending, Result<Vec<ItemResult>, RunError>);

/// The stream's side of the batches on their way.
#[derive(Default)]
pub(crate) struct Outbox {
    tx: RefCell<Option<UnboundedSender<Sending>>>,
    /// Batches put in whose answers are not handled yet.
    waiting: Cell<usize>,
    /// The source ids in those batches.
    ids: RefCell<HashSet<String>>,
    /// Answers not handled yet.
    answers: RefCell<Vec<Answered>>,
    /// Told when an answer comes back.
    answered: Notify,
    /// The steps failed: batches not sent yet stay unsent (their intents are settled by the
    /// next run).
    stopping: Cell<bool>,
}

impl Outbox {
    /// Opens the outbox; the sender takes batches from what this returns.
    pub(crate) fn open(&self) -> UnboundedReceiver<Sending> {
        let (tx, rx) = unbounded_channel();
        *self.tx.borrow_mut() = Some(tx);
        rx
    }

    /// No more batches: the sender ends once those in flight are answered (and sends no more
    /// when `stop`).
    pub(crate) fn close(&self, stop: bool) {
        self.stopping.set(stop);
        self.tx.borrow_mut().take();
    }
}

impl StreamRun<'_> {
    /// Records the intents of `batches` and puts them in the outbox.
    fn dispatch(
        &self,
        op: &Operation,
        batches: Vec<(Vec<Work>, Option<String>)>,
    ) -> Result<(), RunError> {
        if batches.is_empty() {
            return Ok(());
        }
        let sending = self.begin_creates(op, batches)?;
        let n: usize = sending.iter().map(|s| s.works.len()).sum();
        self.run.tell(&format!("{}: creating {n} more", self.name));
        let tx = self.outbox.tx.borrow();
        for s in sending {
            let ids = s.works.iter().map(|w| w.id.clone());
            self.outbox.ids.borrow_mut().extend(ids);
            let sent = tx.as_ref().map(|tx| tx.send(s));
            if !matches!(sent, Some(Ok(()))) {
                // Only a run whose outbox is closed gets here; the intents stay pending.
                return Err(RunError::Config(format!(
                    "stream `{}`: a create batch came after the writes ended; run again to settle it",
                    self.name
                )));
            }
            self.outbox.waiting.set(self.outbox.waiting.get() + 1);
        }
        Ok(())
    }

    /// Sends again, as they were, batches whose outcome is unknown (`(key, works)`).
    pub(crate) fn dispatch_replays(
        &self,
        replays: Vec<(String, Vec<Work>)>,
    ) -> Result<(), RunError> {
        if replays.is_empty() {
            return Ok(());
        }
        let op = self.create_op()?;
        let batches = replays
            .into_iter()
            .map(|(key, works)| (works, Some(key)))
            .collect();
        self.dispatch(&op, batches)
    }

    /// Puts the held creates that fill whole batches in the outbox (all of them when `all`).
    pub(crate) fn dispatch_held(&self, all: bool) -> Result<(), RunError> {
        if self.held.borrow().is_empty() {
            return Ok(());
        }
        let op = self.create_op()?;
        let batches = self.take_held(&op, all);
        self.dispatch(&op, batches)
    }

    /// Handles the answers that came back (links, relinks, write-backs); then, with
    /// `Some(most)`, waits for more while over `most` batches are out.
    pub(crate) async fn answered(
        &self,
        tally: &mut Tally,
        most: Option<usize>,
    ) -> Result<(), RunError> {
        loop {
            let done = std::mem::take(&mut *self.outbox.answers.borrow_mut());
            if !done.is_empty() {
                let left = self.outbox.waiting.get().saturating_sub(done.len());
                self.outbox.waiting.set(left);
                {
                    let mut ids = self.outbox.ids.borrow_mut();
                    for w in done.iter().flat_map(|(s, _)| &s.works) {
                        ids.remove(&w.id);
                    }
                }
                let (sending, answers): (Vec<_>, Vec<_>) = done.into_iter().unzip();
                let created = self.created(sending, answers, tally).await?;
                self.write_back(&created, tally)?;
            }
            match most {
                Some(most) if self.outbox.waiting.get() > most => {
                    self.outbox.answered.notified().await;
                }
                _ => return Ok(()),
            }
        }
    }

    /// Waits for the answers of batches holding any of `works` (a record read again while its
    /// create is on the way), so that it is classified against the ledger as that answer left
    /// it, never written twice in one run.
    pub(crate) async fn settle_on_the_way(
        &self,
        works: &[Work],
        tally: &mut Tally,
    ) -> Result<(), RunError> {
        let on_the_way = {
            let ids = self.outbox.ids.borrow();
            !ids.is_empty() && works.iter().any(|w| ids.contains(&w.id))
        };
        if on_the_way {
            self.answered(tally, Some(0)).await?;
        }
        Ok(())
    }

    /// Sends what the outbox receives, up to the connection's concurrency at a time, until it
    /// is closed and every batch in flight is answered.
    pub(crate) async fn send_outbox(&self, mut rx: UnboundedReceiver<Sending>) {
        let op = self.create_op();
        let most = self.concurrency().unwrap_or(1);
        let w = &self.stream.write;
        let send = |s: Sending| {
            let op = op.as_ref();
            async move {
                let answer = match op {
                    Ok(_) => {
                        self.send_batch(
                            &w.connection,
                            &w.resource,
                            OpKind::Create,
                            &s.records,
                            s.key.as_deref(),
                            None,
                        )
                        .await
                    }
                    Err(e) => Err(RunError::Config(e.to_string())),
                };
                (s, answer)
            }
        };
        let mut flying = FuturesUnordered::new();
        let mut open = true;
        while open || !flying.is_empty() {
            tokio::select! {
                Some(done) = flying.next(), if !flying.is_empty() => {
                    self.outbox.answers.borrow_mut().push(done);
                    self.outbox.answered.notify_one();
                }
                got = rx.recv(), if open && flying.len() < most => match got {
                    Some(_) if self.outbox.stopping.get() => {
                        let left = self.outbox.waiting.get().saturating_sub(1);
                        self.outbox.waiting.set(left);
                    }
                    Some(s) => flying.push(send(s)),
                    None => open = false,
                },
                else => break,
            }
        }
    }
}
