//! Flow schedules: `every 15m` (any duration `weft_core::duration` reads, at least a minute)
//! or a cron expression (five fields, or six with seconds first, read by the `croner` crate, in
//! UTC), and [`next_run`], the one rule for when a flow is due next. `weft serve` runs flows by
//! them; the flow loader checks a flow's `schedule` with the same parser.

use std::str::FromStr;

use weft_core::duration::SpecDuration;

/// The shortest interval accepted.
pub const MIN_INTERVAL_MS: u64 = 60_000;

/// A flow's schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// A run every so many milliseconds after the last one started.
    Every(u64),
    /// The times a cron expression names, in UTC.
    Cron(Box<croner::Cron>),
}

/// Why a schedule text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// `every` with something that is not a duration.
    #[error(
        "`{0}` is not an interval: write `every` and a duration such as \"every 15m\" or \"every 1h\""
    )]
    Interval(String),
    /// An interval under a minute.
    #[error("`{0}` is too often: the shortest schedule is \"every 1m\"")]
    TooShort(String),
    /// Not a cron expression either.
    #[error(
        "`{text}` is neither `every DURATION` nor a cron expression ({reason}); for example \"every 15m\" or \"*/15 * * * *\""
    )]
    Cron {
        /// The text.
        text: String,
        /// What the cron parser said.
        reason: String,
    },
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        if let Some(rest) = trimmed.strip_prefix("every ") {
            let d = SpecDuration::from_str(rest.trim())
                .map_err(|_| ScheduleError::Interval(trimmed.to_owned()))?;
            if d.as_millis() < MIN_INTERVAL_MS {
                return Err(ScheduleError::TooShort(trimmed.to_owned()));
            }
            return Ok(Schedule::Every(d.as_millis()));
        }
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(trimmed)
            .map_err(|e| ScheduleError::Cron {
                text: trimmed.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Schedule::Cron(Box::new(cron)))
    }
}

fn civil(ms: u64) -> Option<jiff::civil::DateTime> {
    let ts = jiff::Timestamp::from_millisecond(i64::try_from(ms).ok()?).ok()?;
    Some(ts.to_zoned(jiff::tz::TimeZone::UTC).datetime())
}

fn epoch_ms(dt: jiff::civil::DateTime) -> Option<u64> {
    let ts = dt.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    u64::try_from(ts.as_millisecond()).ok()
}

/// When a flow with `schedule` is due next, given when its last run started (`None`: never
/// ran, due at once, `now_ms`). `None` when the schedule names no later time.
pub fn next_run(schedule: &Schedule, last_ms: Option<u64>, now_ms: u64) -> Option<u64> {
    let Some(last) = last_ms else {
        return Some(now_ms);
    };
    match schedule {
        Schedule::Every(every) => last.checked_add(*every),
        Schedule::Cron(cron) => {
            let next = cron.find_next_occurrence(&civil(last)?, false).ok()?;
            epoch_ms(next)
        }
    }
}

/// The largest jitter added to a due time.
pub const MAX_JITTER_MS: u64 = 30_000;

/// The jitter of `flow`: the same for the same name, under [`MAX_JITTER_MS`] and under a tenth
/// of an interval, so flows on one schedule do not all start in the same second.
pub fn jitter_ms(flow: &str, schedule: &Schedule) -> u64 {
    let cap = match schedule {
        Schedule::Every(every) => (every / 10).min(MAX_JITTER_MS),
        Schedule::Cron(_) => MAX_JITTER_MS,
    };
    if cap == 0 {
        return 0;
    }
    // FNV-1a: stable across builds and processes, unlike the standard hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in flow.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % cap
}

/// When `flow` with `schedule` is due, given its last start: at once when it never ran,
/// otherwise its next time plus its jitter.
pub fn due_at(flow: &str, schedule: &Schedule, last_ms: Option<u64>, now_ms: u64) -> Option<u64> {
    let next = next_run(schedule, last_ms, now_ms)?;
    if last_ms.is_none() {
        return Some(next);
    }
    next.checked_add(jitter_ms(flow, schedule))
}

/// When `flow`'s last real run started, from the state's history; `None` (due at once) when it
/// never ran or its last run was interrupted (its process stopped or was killed during it):
/// that run's work is unfinished, so the schedule does not wait a whole interval to finish it.
pub fn last_start(state: &crate::state::State, flow: &str) -> Option<u64> {
    let last = state
        .runs(Some(flow), 50)
        .ok()?
        .into_iter()
        .find(|r| !r.dry_run)?;
    counted_start(state, flow, last.started_ms, last.outcome.is_some())
}

/// The start of `flow`'s last real run as its schedule counts it: `None` when the run did not
/// end and no process runs it now (interrupted), as [`crate::state::State::run_status`] says.
pub fn counted_start(
    state: &crate::state::State,
    flow: &str,
    started_ms: u64,
    ended: bool,
) -> Option<u64> {
    (ended || crate::runlock::holder_in(state, flow).is_some()).then_some(started_ms)
}
