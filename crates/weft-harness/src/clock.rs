//! Simulated time: a clock the test moves by hand, one that runs faster than real time, or one
//! driven by events, so token expiry, grace periods, per-minute windows and daily caps are
//! exercised in milliseconds.
//!
//! The event-driven clock ([`SimClock::event_driven`]) is for measurements that must not depend
//! on how busy the machine is. Its time stands still while anything works: a thread of a runtime
//! it tracks is running, a sleeper it woke has not run yet, or bytes sit unread or unacknowledged
//! in a socket of a port it watches. When everything is idle it jumps to the earliest deadline
//! among its sleepers ([`SimClock::sleep`]) and wakes them. Simulated time then counts only the
//! sleeps (modelled latency, a limiter's waits), never CPU time, however slow the machine is.
//! Tokio's paused clock cannot do this with real sockets: it advances as soon as its own thread
//! has nothing ready, even while an answer is on its way through the kernel.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A shared clock in Unix milliseconds. Clones see the same time.
#[derive(Debug, Clone)]
pub struct SimClock {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Simulated milliseconds at `started`, plus every manual advance (for an event-driven
    /// clock: the current simulated time).
    base_ms: AtomicU64,
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    /// Time moves only when the test calls [`SimClock::advance`].
    Manual,
    /// Time runs `factor` times faster than the wall clock from `started`.
    Scaled { started: Instant, factor: u32 },
    /// Time jumps to the next sleeper's deadline when nothing is working.
    Events(Events),
}

/// The event-driven clock's bookkeeping, under one lock.
#[derive(Debug, Default)]
struct Events {
    state: Mutex<EventState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct EventState {
    /// Sleepers not yet woken, by (deadline, registration order).
    sleepers: BTreeMap<(u64, u64), Arc<Slot>>,
    next_seq: u64,
    /// Threads of tracked runtimes that are running (not parked).
    busy: i64,
    /// Sleepers woken whose task has not run yet.
    woken: i64,
    /// Bumped by every change above, so the driver can tell that nothing moved while it
    /// looked at the sockets.
    generation: u64,
    /// Ports whose sockets must be drained before time moves.
    ports: Vec<u16>,
    /// Linux thread ids of the tracked runtimes' threads, which must be asleep in the kernel
    /// (not merely past their park hook) before time moves.
    threads: Vec<u32>,
}

#[derive(Debug, Default)]
struct Slot {
    fired: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl SimClock {
    /// A clock stopped at `start_ms`; it moves only by [`SimClock::advance`].
    pub fn manual(start_ms: u64) -> Self {
        Self::with_mode(start_ms, Mode::Manual)
    }

    /// A clock starting at `start_ms` that runs `factor` times faster than real time
    /// (`factor` 60 turns a minute into a second). A factor of 0 is taken as 1.
    pub fn scaled(start_ms: u64, factor: u32) -> Self {
        Self::with_mode(
            start_ms,
            Mode::Scaled {
                started: Instant::now(),
                factor: factor.max(1),
            },
        )
    }

    /// A clock starting at `start_ms` that moves only when everything it knows of is idle: then
    /// it jumps to the earliest deadline of a [`SimClock::sleep`] and wakes that sleeper. It knows
    /// of the runtimes given to [`SimClock::track_runtime`] (the simulators' servers track theirs)
    /// and the sockets of the ports given to [`SimClock::watch_port`]. A thread of its own drives
    /// it while any clone lives. Sockets are read from `/proc/net/tcp` (Linux).
    pub fn event_driven(start_ms: u64) -> std::io::Result<Self> {
        let clock = Self::with_mode(start_ms, Mode::Events(Events::default()));
        let weak = Arc::downgrade(&clock.inner);
        std::thread::Builder::new()
            .name("sim-clock".to_owned())
            .spawn(move || drive(&weak))?;
        Ok(clock)
    }

    fn with_mode(start_ms: u64, mode: Mode) -> Self {
        Self {
            inner: Arc::new(Inner {
                base_ms: AtomicU64::new(start_ms),
                mode,
            }),
        }
    }

    /// The current simulated time in Unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        let base = self.inner.base_ms.load(Ordering::SeqCst);
        match &self.inner.mode {
            Mode::Manual | Mode::Events(_) => base,
            Mode::Scaled { started, factor } => {
                let elapsed = started
                    .elapsed()
                    .as_millis()
                    .saturating_mul(u128::from(*factor));
                base.saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
            }
        }
    }

    /// Moves the clock forward (in any mode).
    pub fn advance(&self, by: Duration) {
        self.inner.base_ms.fetch_add(millis(by), Ordering::SeqCst);
    }

    /// The real time that `simulated` takes on this clock (zero for a manual or event-driven
    /// clock, which do not move with real time).
    pub fn real_duration(&self, simulated: Duration) -> Duration {
        match &self.inner.mode {
            Mode::Manual | Mode::Events(_) => Duration::ZERO,
            Mode::Scaled { factor, .. } => simulated / *factor,
        }
    }

    /// Whether time moves by events ([`SimClock::event_driven`]).
    pub fn is_event_driven(&self) -> bool {
        matches!(self.inner.mode, Mode::Events(_))
    }

    /// Waits `duration`: of simulated time on an event-driven clock, else of real time (the
    /// simulators' modelled latency has always been real time on the other clocks).
    pub fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let Mode::Events(events) = &self.inner.mode else {
            return Box::pin(tokio::time::sleep(duration));
        };
        if duration.is_zero() {
            return Box::pin(std::future::ready(()));
        }
        let slot = Arc::new(Slot::default());
        let mut s = events.lock();
        let deadline = self
            .inner
            .base_ms
            .load(Ordering::SeqCst)
            .saturating_add(millis(duration));
        let key = (deadline, s.next_seq);
        s.next_seq += 1;
        s.sleepers.insert(key, slot.clone());
        s.generation += 1;
        drop(s);
        events.changed.notify_all();
        Box::pin(EventSleep {
            clock: self.clone(),
            key,
            slot,
            done: false,
        })
    }

    /// Makes an event-driven clock wait for the thread of the current-thread runtime `builder`
    /// will build: time stands still while that thread runs, and moves only while it is parked.
    /// The thread counts as running from this call until it first parks, and after the runtime
    /// is done with it until [`SimClock::untrack_runtime`]. Does nothing on other clocks.
    pub fn track_runtime<'b>(
        &self,
        builder: &'b mut tokio::runtime::Builder,
    ) -> &'b mut tokio::runtime::Builder {
        let Mode::Events(events) = &self.inner.mode else {
            return builder;
        };
        events.lock().busy += 1;
        let (park, unpark) = (self.clone(), self.clone());
        builder
            .on_thread_park(move || {
                if let (Mode::Events(events), Some(tid)) = (&park.inner.mode, thread_id()) {
                    let mut s = events.lock();
                    if !s.threads.contains(&tid) {
                        s.threads.push(tid);
                    }
                }
                park.busy_by(-1);
            })
            .on_thread_unpark(move || unpark.busy_by(1))
    }

    /// The thread of a runtime given to [`SimClock::track_runtime`] is done with it (call it
    /// after the runtime's last `block_on`, from that thread).
    pub fn untrack_runtime(&self) {
        if let (Mode::Events(events), Some(tid)) = (&self.inner.mode, thread_id()) {
            events.lock().threads.retain(|t| *t != tid);
        }
        self.busy_by(-1);
    }

    /// Makes an event-driven clock wait, before it moves, until no socket from or to 127.0.0.1
    /// `port` holds unread or unacknowledged bytes (a request or an answer on its way).
    pub fn watch_port(&self, port: u16) {
        if let Mode::Events(events) = &self.inner.mode {
            events.lock().ports.push(port);
        }
    }

    fn busy_by(&self, delta: i64) {
        if let Mode::Events(events) = &self.inner.mode {
            let mut s = events.lock();
            s.busy += delta;
            s.generation += 1;
            drop(s);
            events.changed.notify_all();
        }
    }
}

impl Events {
    fn lock(&self) -> MutexGuard<'_, EventState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One turn of the driver: when nothing runs and nothing is on its way, moves time to the
    /// earliest deadline and wakes every sleeper due by then.
    fn turn(&self, base_ms: &AtomicU64) {
        let s = self.lock();
        if s.busy > 0 || s.woken > 0 || s.sleepers.is_empty() {
            // Woken by any change; the timeout only bounds how long a stale view can last.
            drop(self.changed.wait_timeout(s, Duration::from_millis(5)));
            return;
        }
        let generation = s.generation;
        let ports = s.ports.clone();
        let threads = s.threads.clone();
        drop(s);
        // The park hook runs before the thread checks for ready tasks and blocks: only a thread
        // the kernel shows asleep is really waiting (one woken by a socket shows as running).
        if !threads.iter().all(|t| asleep(*t)) {
            // Runnable, or between its park hook and blocking: let it run.
            std::thread::yield_now();
            return;
        }
        if !sockets_idle(&ports) {
            // Bytes on their way, or an acknowledgement the kernel delays (up to 40 ms).
            std::thread::sleep(Duration::from_micros(500));
            return;
        }
        let mut s = self.lock();
        if s.generation != generation || s.busy > 0 || s.woken > 0 {
            return;
        }
        let Some(&(deadline, _)) = s.sleepers.keys().next() else {
            return;
        };
        let now = base_ms.load(Ordering::SeqCst).max(deadline);
        base_ms.store(now, Ordering::SeqCst);
        while let Some(entry) = s.sleepers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let slot = entry.remove();
            slot.fired.store(true, Ordering::SeqCst);
            s.woken += 1;
            let waker = slot
                .waker
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
        s.generation += 1;
    }
}

/// The driver thread of an event-driven clock; it ends with the clock's last clone.
fn drive(clock: &Weak<Inner>) {
    while let Some(inner) = clock.upgrade() {
        if let Mode::Events(events) = &inner.mode {
            events.turn(&inner.base_ms);
        } else {
            return;
        }
    }
}

/// Whether every TCP socket from or to one of `ports` has nothing unread and nothing
/// unacknowledged (a listening socket: no connection waiting to be accepted).
fn sockets_idle(ports: &[u16]) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return true;
    };
    table.lines().skip(1).all(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(remote), Some(state), Some(queues)) =
            (f.get(1), f.get(2), f.get(3), f.get(4))
        else {
            return true;
        };
        let port = |address: &str| {
            address
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
        };
        let ours = [port(local), port(remote)]
            .into_iter()
            .flatten()
            .any(|p| ports.contains(&p));
        if !ours {
            return true;
        }
        let (tx, rx) = queues.split_once(':').unwrap_or(("0", "0"));
        let queued = |q: &str| u64::from_str_radix(q, 16).unwrap_or(0) > 0;
        // A listening socket shows its backlog's capacity as tx_queue.
        const LISTEN: &str = "0A";
        !queued(rx) && (*state == LISTEN || !queued(tx))
    })
}

/// Whether thread `tid` of this process is blocked in the kernel (state `S`), or gone.
fn asleep(tid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else {
        return true;
    };
    stat.rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .is_none_or(|state| state == "S")
}

/// The calling thread's Linux thread id, read once per thread from `/proc/thread-self`.
fn thread_id() -> Option<u32> {
    thread_local! {
        static TID: Option<u32> = std::fs::read_link("/proc/thread-self")
            .ok()
            .and_then(|p| p.file_name()?.to_str()?.parse().ok());
    }
    TID.with(|t| *t)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A sleeper on an event-driven clock.
struct EventSleep {
    clock: SimClock,
    key: (u64, u64),
    slot: Arc<Slot>,
    done: bool,
}

impl EventSleep {
    fn events(&self) -> Option<&Events> {
        match &self.clock.inner.mode {
            Mode::Events(events) => Some(events),
            _ => None,
        }
    }
}

impl Future for EventSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.done {
            return Poll::Ready(());
        }
        *self
            .slot
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
        if !self.slot.fired.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        self.done = true;
        if let Some(events) = self.events() {
            let mut s = events.lock();
            s.woken -= 1;
            s.generation += 1;
            drop(s);
            events.changed.notify_all();
        }
        Poll::Ready(())
    }
}

impl Drop for EventSleep {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let key = self.key;
        if let Some(events) = self.events() {
            let mut s = events.lock();
            // Not woken yet: forget it; woken but never polled: it will not run.
            if s.sleepers.remove(&key).is_none() {
                s.woken -= 1;
            }
            s.generation += 1;
            drop(s);
            events.changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = SimClock::manual(1_000);
        let other = clock.clone();
        assert_eq!(clock.now_ms(), 1_000);
        other.advance(Duration::from_secs(1_800));
        assert_eq!(clock.now_ms(), 1_801_000);
        assert_eq!(clock.real_duration(Duration::from_secs(60)), Duration::ZERO);
    }

    #[test]
    fn scaled_clock_is_monotonic_and_maps_durations() {
        let clock = SimClock::scaled(0, 600);
        let a = clock.now_ms();
        let b = clock.now_ms();
        assert!(b >= a);
        assert_eq!(
            clock.real_duration(Duration::from_secs(60)),
            Duration::from_millis(100)
        );
        clock.advance(Duration::from_secs(86_400));
        assert!(clock.now_ms() >= 86_400_000);
    }

    fn tracked(clock: &SimClock) -> tokio::runtime::Runtime {
        let mut builder = tokio::runtime::Builder::new_current_thread();
        clock.track_runtime(&mut builder).enable_all();
        builder.build().unwrap()
    }

    #[test]
    fn event_driven_clock_jumps_over_sleeps_in_deadline_order() {
        let clock = SimClock::event_driven(1_000).unwrap();
        let rt = tracked(&clock);
        let seen = rt.block_on(async {
            let (a, b) = (clock.clone(), clock.clone());
            let long = tokio::spawn(async move {
                a.sleep(Duration::from_secs(3_600)).await;
                a.now_ms()
            });
            let short = tokio::spawn(async move {
                b.sleep(Duration::from_secs(90)).await;
                let first = b.now_ms();
                b.sleep(Duration::from_secs(90)).await;
                (first, b.now_ms())
            });
            (short.await.unwrap(), long.await.unwrap())
        });
        clock.untrack_runtime();
        assert_eq!(seen, ((91_000, 181_000), 3_601_000));
    }

    #[test]
    fn event_driven_clock_stands_still_while_a_tracked_thread_works() {
        let clock = SimClock::event_driven(0).unwrap();
        let rt = tracked(&clock);
        let sleeper = clock.clone();
        let (during, after) = rt.block_on(async move {
            let slept = tokio::spawn(async move {
                sleeper.sleep(Duration::from_millis(10)).await;
            });
            tokio::task::yield_now().await;
            // The sleeper is registered; this thread now works for longer than it sleeps.
            std::thread::sleep(Duration::from_millis(50));
            let during = clock.now_ms();
            slept.await.unwrap();
            (during, clock.now_ms())
        });
        assert_eq!((during, after), (0, 10));
    }
}
