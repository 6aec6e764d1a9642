//! The progress line every long command shows on a terminal (`weft read`, `weft sync run`): one
//! spinner line on stderr, redrawn by a ticker thread, cleared when the command is done.
//!
//! The ticker draws from its own thread through `std::io::stderr()`, whose lock is reentrant
//! only for the thread holding it; so no command may keep stderr locked while a line is shown
//! ([`crate::main`] writes messages through the unlocked handle for this reason), else the
//! ticker waits for the lock forever and the command with it.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// How often the line is redrawn when nothing else moves it.
const TICK: Duration = Duration::from_millis(120);

/// A progress line, or nothing when stderr is not a terminal (or the command prints JSON).
pub(crate) struct Progress(Option<ProgressBar>);

impl Progress {
    /// A spinner drawn with `template` (indicatif's syntax: `{spinner}`, `{msg}`, `{pos}`,
    /// `{per_sec}`, `{elapsed}`), starting with `message`; shown only when `wanted` and stderr
    /// is a terminal.
    pub(crate) fn spinner(wanted: bool, template: &str, message: String) -> Self {
        if !wanted || !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(message);
        bar.enable_steady_tick(TICK);
        Self(Some(bar))
    }

    /// Replaces the message.
    pub(crate) fn message(&self, text: String) {
        if let Some(bar) = &self.0 {
            bar.set_message(text);
        }
    }

    /// Counts `n` more items.
    pub(crate) fn inc(&self, n: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(n);
        }
    }
}

impl Drop for Progress {
    /// The line is cleared, so what the command prints next starts on a clean line.
    fn drop(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}
