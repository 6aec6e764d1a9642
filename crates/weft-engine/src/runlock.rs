//! One run per flow at a time: an OS lock on `locks/flow-<name>.lock` beside the state database.
//!
//! The lock is the operating system's (`flock`), so it is released when its holder exits, even
//! when killed; the file says who holds it ("pid N since T") for the message a second run
//! prints. Two runs in one process conflict too (each opens the file itself).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A held flow lock; dropping it releases the lock.
#[derive(Debug)]
pub struct FlowLock {
    file: File,
    path: PathBuf,
}

/// The lock file of flow `flow` for the state database at `state`.
pub fn path(state: &Path, flow: &str) -> PathBuf {
    state
        .parent()
        .unwrap_or(Path::new("."))
        .join("locks")
        .join(format!("flow-{flow}.lock"))
}

impl FlowLock {
    /// Takes the lock of `flow`; when another run holds it, waits up to `wait` (refuses at once
    /// when `None`). The error says who holds it.
    pub async fn acquire(state: &Path, flow: &str, wait: Option<Duration>) -> Result<Self, String> {
        let path = path(state, flow);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("cannot open the lock {}: {e}", path.display()))?;
        let started = std::time::Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    let waited = started.elapsed();
                    if wait.is_none_or(|w| waited >= w) {
                        let mut holder = String::new();
                        let _ = file.read_to_string(&mut holder);
                        let holder = holder.trim();
                        return Err(if holder.is_empty() {
                            format!("lock {} held", path.display())
                        } else {
                            format!("{holder}; lock {}", path.display())
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(TryLockError::Error(e)) => {
                    return Err(format!("cannot lock {}: {e}", path.display()));
                }
            }
        }
        let since = jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or_default();
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "held by process {} since {since}", std::process::id());
        let _ = file.flush();
        Ok(Self { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Who holds flow `flow`'s lock now ("held by process N since T"), or `None` when no run
/// holds it: a run with no end and no holder was interrupted.
pub fn holder(state: &Path, flow: &str) -> Option<String> {
    let mut file = OpenOptions::new().read(true).open(path(state, flow)).ok()?;
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            None
        }
        Err(_) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            Some(text.trim().to_owned())
                .filter(|t| !t.is_empty())
                .or(Some("held".to_owned()))
        }
    }
}

impl Drop for FlowLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}
