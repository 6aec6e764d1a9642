//! Simulated time: a clock the test moves by hand, or one that runs faster than real time, so
//! token expiry, grace periods, per-minute windows and daily caps are exercised in milliseconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A shared clock in Unix milliseconds. Clones see the same time.
#[derive(Debug, Clone)]
pub struct SimClock {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Simulated milliseconds at `started`, plus every manual advance.
    base_ms: AtomicU64,
    mode: Mode,
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Time moves only when the test calls [`SimClock::advance`].
    Manual,
    /// Time runs `factor` times faster than the wall clock from `started`.
    Scaled { started: Instant, factor: u32 },
}

impl SimClock {
    /// A clock stopped at `start_ms`; it moves only by [`SimClock::advance`].
    pub fn manual(start_ms: u64) -> Self {
        Self {
            inner: Arc::new(Inner {
                base_ms: AtomicU64::new(start_ms),
                mode: Mode::Manual,
            }),
        }
    }

    /// A clock starting at `start_ms` that runs `factor` times faster than real time
    /// (`factor` 60 turns a minute into a second). A factor of 0 is taken as 1.
    pub fn scaled(start_ms: u64, factor: u32) -> Self {
        let mode = Mode::Scaled {
            started: Instant::now(),
            factor: factor.max(1),
        };
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
        match self.inner.mode {
            Mode::Manual => base,
            Mode::Scaled { started, factor } => {
                let elapsed = started
                    .elapsed()
                    .as_millis()
                    .saturating_mul(u128::from(factor));
                base.saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
            }
        }
    }

    /// Moves the clock forward (in either mode).
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.inner.base_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// The real time that `simulated` takes on this clock (zero for a manual clock, which
    /// does not move by itself).
    pub fn real_duration(&self, simulated: Duration) -> Duration {
        match self.inner.mode {
            Mode::Manual => Duration::ZERO,
            Mode::Scaled { factor, .. } => simulated / factor,
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
}
