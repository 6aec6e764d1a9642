//! The two file operations every store of Weft relies on: replacing a file atomically, and an
//! exclusive lock file that says who holds it.
//!
//! A replacement is written to a uniquely named temporary file in the same folder (the tempfile
//! crate), synced, renamed over the target, and the folder is synced too, so after a crash the
//! file is either the old one or the new one, never half of each. A stale temporary file left by
//! a crash never blocks the next write (every container runs as pid 1: names made from the pid
//! would collide).
//!
//! A lock is an OS lock on a file beside what it protects (released when the process ends, however
//! it ends). Its holder writes its process id and the time it took the lock into the file, so a
//! process that has to wait can say "held by live process N since T", or that the process named
//! in it does not run on this machine.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Writes `bytes` to `path` atomically; `private` files get mode 0600 from their creation on.
pub fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt as _;
        builder.permissions(std::fs::Permissions::from_mode(0o600));
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut tmp = builder.tempfile_in(&dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(&dir)
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// An exclusive lock, held until dropped.
#[derive(Debug)]
pub struct LockFile {
    _file: std::fs::File,
}

/// Who holds a lock, as its file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// A process running on this machine.
    Live {
        /// Its process id.
        pid: u32,
        /// When it took the lock (RFC 3339), when the file says.
        since: Option<String>,
    },
    /// The file names a process that does not run here: another machine or container sharing the
    /// folder still holds the OS lock.
    Elsewhere {
        /// The process id in the file.
        pid: u32,
        /// When it took the lock.
        since: Option<String>,
    },
    /// The file names nobody (a holder that has only just taken it, or an older Weft).
    Unknown,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let since = |s: &Option<String>| {
            s.as_ref()
                .map(|s| format!(" since {s}"))
                .unwrap_or_default()
        };
        match self {
            Self::Live { pid, since: s } => write!(f, "held by live process {pid}{}", since(s)),
            Self::Elsewhere { pid, since: s } => write!(
                f,
                "held by process {pid}{}, which does not run on this machine (another machine or container sharing this folder holds it)",
                since(s)
            ),
            Self::Unknown => f.write_str("held by a process that has not said who it is"),
        }
    }
}

/// Errors of lock files.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The lock stayed held for the whole patience.
    #[error("{path} is {holder}; waited {waited:?}")]
    Busy {
        /// The lock file.
        path: PathBuf,
        /// Who holds it.
        holder: Holder,
        /// How long this process waited.
        waited: Duration,
    },
    /// The lock file could not be used.
    #[error("cannot lock {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// How often a waiting process tries again.
const POLL: Duration = Duration::from_millis(15);

impl LockFile {
    /// Takes the lock at `path` if it is free now.
    pub fn try_acquire(path: &Path) -> Result<Option<Self>, LockError> {
        let io = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        // Who holds it, for whoever has to wait: a failure here costs only that message.
        let since = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ");
        let _ = file
            .set_len(0)
            .and_then(|()| writeln!(file, "{} {since}", std::process::id()));
        Ok(Some(Self { _file: file }))
    }

    /// Takes the lock at `path`, waiting at most `patience` for its holder.
    pub fn acquire(path: &Path, patience: Duration) -> Result<Self, LockError> {
        let started = Instant::now();
        loop {
            if let Some(lock) = Self::attempt(path, started, patience)? {
                return Ok(lock);
            }
            std::thread::sleep(POLL);
        }
    }

    /// [`LockFile::acquire`] for async code: waits without blocking the runtime.
    pub async fn acquire_async(path: &Path, patience: Duration) -> Result<Self, LockError> {
        let started = Instant::now();
        loop {
            if let Some(lock) = Self::attempt(path, started, patience)? {
                return Ok(lock);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// One try of a wait that began at `started`: the lock, `None` to wait on, or the error
    /// naming the holder once `patience` is spent.
    fn attempt(
        path: &Path,
        started: Instant,
        patience: Duration,
    ) -> Result<Option<Self>, LockError> {
        match Self::try_acquire(path)? {
            Some(lock) => Ok(Some(lock)),
            None if started.elapsed() >= patience => Err(LockError::Busy {
                path: path.to_path_buf(),
                holder: holder(path),
                waited: started.elapsed(),
            }),
            None => Ok(None),
        }
    }
}

/// Who the lock file at `path` says holds it.
pub fn holder(path: &Path) -> Holder {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut parts = text.split_whitespace();
    let Some(pid) = parts.next().and_then(|p| p.parse::<u32>().ok()) else {
        return Holder::Unknown;
    };
    let since = parts.next().map(str::to_owned);
    if process_runs(pid) {
        Holder::Live { pid, since }
    } else {
        Holder::Elsewhere { pid, since }
    }
}

/// Whether process `pid` runs on this machine (as far as this platform can tell; where it
/// cannot, the process is taken to run).
fn process_runs(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weft-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_stale_temporary_file_does_not_block_the_next_write() {
        let dir = temp_dir("stale");
        let path = dir.join("credentials.json");
        // What the old fixed naming left behind after a crash of pid 1 in a container.
        std::fs::write(
            dir.join(format!("credentials.tmp-{}", std::process::id())),
            "x",
        )
        .unwrap();
        std::fs::write(dir.join(".credentials.json.tmp"), "x").unwrap();
        write_atomic(&path, b"one", true).unwrap();
        write_atomic(&path, b"two", true).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_held_lock_names_its_live_holder() {
        let dir = temp_dir("lock");
        let path = dir.join("x.lock");
        let held = LockFile::acquire(&path, Duration::ZERO).unwrap();
        let err = LockFile::acquire(&path, Duration::ZERO).unwrap_err();
        match &err {
            LockError::Busy { holder, .. } => assert!(
                matches!(holder, Holder::Live { pid, since: Some(_) } if *pid == std::process::id()),
                "{holder:?}"
            ),
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("held by live process"), "{err}");
        drop(held);
        LockFile::acquire(&path, Duration::ZERO).unwrap();
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_holder_that_does_not_run_here_is_told_apart() {
        let dir = temp_dir("elsewhere");
        let path = dir.join("x.lock");
        // No process has this id (beyond Linux's pid_max).
        std::fs::write(&path, "4194304999 2026-01-01T00:00:00Z\n").unwrap();
        let shown = holder(&path).to_string();
        if cfg!(target_os = "linux") {
            assert!(shown.contains("does not run on this machine"), "{shown}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
