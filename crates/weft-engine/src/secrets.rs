//! The credential store: client secrets and tokens, sealed with AES-256-GCM.
//!
//! Each record is encrypted under the master key with a fresh random 96-bit nonce and
//! authenticated together with its own id (so a record copied into another slot fails to open).
//! The store also seals a known check value, which tells a wrong master key apart from a
//! tampered record. Plaintext lives only in [`Secret`], which zeroizes on drop and never prints.
//!
//! Keys carry ids (a fingerprint) and every sealed record names the id of the key it was sealed
//! under, so a key can be replaced without a flag day: the key file holds the current key and the
//! retired ones, a store sealed under a retired key still opens, and its next write re-seals it
//! under the current key. `weft secrets rotate-key` re-seals every store it reaches all or nothing
//! ([`replace_all`]); `weft secrets retire-key` drops an old key when the person says so.
//!
//! The master keys come from `WEFT_MASTER_KEY` (base64 of 32 bytes; several separated by commas,
//! the first current), else from the output of `master-key-command` (a program run without a
//! shell: a keychain, a password manager), else from a key file created with mode 0600 on first
//! use. Stores and key files of the first format (no key ids) open as they are and are rewritten
//! in the new format on their next write.
//!
//! A store has one of two backends behind the same API: a file (`.weft/credentials.json`,
//! guarded by a lock file beside it), or, when the workspace's state is on PostgreSQL, rows of
//! that database ([`SecretStore::open_postgres`], guarded by an advisory lock), so every worker
//! of a fleet reaches the same connections. Records are sealed in this process either way: the
//! database holds only what the file would. The state database's own password is needed to reach
//! the database, so it stays in the local file (records named in [`LOCAL_ONLY`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::files;
use crate::state::PgPool;

mod pg;
pub use pg::AdvisoryHold;
pub(crate) use pg::{NotHeld, REFRESH_LOCK};

/// Records that stay in the local file when the store is on PostgreSQL: the state database's
/// password (needed to reach the database at all).
pub const LOCAL_ONLY: &[&str] = &[crate::workspace::STATE_PASSWORD_ID];

/// Environment variable holding the master key (base64 of 32 random bytes).
pub const MASTER_KEY_VAR: &str = "WEFT_MASTER_KEY";

const CHECK_ID: &str = "weft:key-check";
const CHECK_VALUE: &[u8] = b"weft master key check v1";
/// Sealed values name their key: `v2:<key id>:<base64>`.
const PREFIX: &str = "v2:";
/// The first format, which named no key.
const PREFIX_V1: &str = "v1:";

/// A secret value. It zeroizes its memory on drop and never shows in `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a value.
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Errors of the credential store; none of them carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// `WEFT_MASTER_KEY` is set but is not base64 of 32 bytes.
    #[error(
        "{MASTER_KEY_VAR} is not a valid key ({reason}); it must be base64 of 32 random bytes, such as the output of `openssl rand -base64 32`"
    )]
    BadMasterKey {
        /// What is wrong with it.
        reason: String,
    },
    /// The key file cannot be read, created or has the wrong size.
    #[error("master key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The operating system gave no randomness.
    #[error("cannot get random bytes from the operating system: {0}")]
    Random(String),
    /// The store was sealed under a master key Weft does not have.
    #[error(
        "the credential store {path} was sealed with {} that Weft does not have; set {MASTER_KEY_VAR} to the key it was created with (several keys may be given, separated by commas), or restore the key file",
        key_id.as_deref().map_or_else(|| "a different master key".to_owned(), |k| format!("master key {k}"))
    )]
    WrongKey {
        /// The store file.
        path: PathBuf,
        /// The id of the key it names, when it names one.
        key_id: Option<String>,
    },
    /// `master-key-command` failed or printed something that is not a key.
    #[error(
        "master-key-command `{program}` gave no master key: {reason} (it is set by WEFT_MASTER_KEY_COMMAND or `master-key-command` in your user weft.toml)"
    )]
    KeyCommand {
        /// The program.
        program: String,
        /// What went wrong.
        reason: String,
    },
    /// `retire-key` named the current key.
    #[error(
        "key {id} is the current master key; run `weft secrets rotate-key` first, then retire it"
    )]
    RetireCurrent {
        /// The key id.
        id: String,
    },
    /// `retire-key` named a key the key file does not hold.
    #[error("the key file holds no key {id}; `weft secrets keys` lists the keys it holds")]
    UnknownKey {
        /// The key id.
        id: String,
    },
    /// A store or key file lock stayed held.
    #[error("{reason}")]
    Lock {
        /// Who holds it and where.
        reason: String,
    },
    /// A record failed authentication under the right key: it was altered.
    #[error(
        "record `{record}` in {path} fails its integrity check: it was altered; re-enter it (`weft client edit CLIENT` for a client's secret, `weft connection authorize NAME` for a connection's tokens)"
    )]
    Tampered {
        /// The store file.
        path: PathBuf,
        /// The record id.
        record: String,
    },
    /// The store file is not what Weft writes.
    #[error(
        "the credential store {path} is unreadable ({reason}); restore it from a backup, or move it away and enter the secrets again"
    )]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The database holding the store failed.
    #[error(
        "cannot {action} the credentials in {at}: {reason}; check that the database is running and reachable, then try again"
    )]
    Database {
        /// What was being done.
        action: &'static str,
        /// The database (its URL without password).
        at: String,
        /// What the server or driver said.
        reason: String,
    },
    /// A file operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The 256-bit master key, with its id (a short fingerprint that sealed records name).
pub struct MasterKey {
    bytes: Zeroizing<[u8; 32]>,
    id: String,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({}, [redacted])", self.id)
    }
}

/// Where the master keys came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The environment variable.
    Environment,
    /// The output of `master-key-command` (the program, for messages).
    Command(String),
    /// A key file (created now or earlier).
    File(PathBuf),
}

impl KeySource {
    /// Whether Weft can write new keys there itself (only a key file).
    pub fn key_file(&self) -> Option<&Path> {
        match self {
            Self::File(path) => Some(path),
            _ => None,
        }
    }
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Environment => write!(f, "{MASTER_KEY_VAR}"),
            Self::Command(program) => write!(f, "master-key-command `{program}`"),
            Self::File(path) => write!(f, "the key file {}", path.display()),
        }
    }
}

impl MasterKey {
    fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Self {
        let digest = Sha256::new()
            .chain_update(b"weft master key id\0")
            .chain_update(bytes.as_ref())
            .finalize();
        let id = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Self { bytes, id }
    }

    /// A new random key.
    pub fn generate() -> Result<Self, SecretError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut()).map_err(|e| SecretError::Random(e.to_string()))?;
        Ok(Self::from_bytes(bytes))
    }

    /// Parses base64 of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, SecretError> {
        let mut decoded = Zeroizing::new(STANDARD.decode(text.trim()).map_err(|e| {
            SecretError::BadMasterKey {
                reason: format!("not base64: {e}"),
            }
        })?);
        if decoded.len() != 32 {
            return Err(SecretError::BadMasterKey {
                reason: format!("{} bytes instead of 32", decoded.len()),
            });
        }
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&decoded);
        decoded.zeroize();
        Ok(Self::from_bytes(key))
    }

    /// The key as base64 (for `weft secrets rotate-key` to hand a new key to the person).
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.bytes.as_ref()))
    }

    /// The key's id: a fingerprint, not secret, named by every record sealed under it.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> Aes256Gcm {
        let key: &[u8; 32] = &self.bytes;
        Aes256Gcm::new(key.into())
    }
}

impl Clone for MasterKey {
    fn clone(&self) -> Self {
        Self {
            bytes: self.bytes.clone(),
            id: self.id.clone(),
        }
    }
}

/// The master keys Weft can open stores with: the current key, which seals every write, and
/// retired keys, which only open what was sealed before a rotation (a store re-seals under the
/// current key on its next write).
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: Vec<MasterKey>,
    source: Option<KeySource>,
    /// Store files by path, and the id of the key each was last seen sealed under.
    seen: BTreeMap<String, String>,
}

impl From<MasterKey> for Keyring {
    fn from(key: MasterKey) -> Self {
        Self {
            keys: vec![key],
            source: None,
            seen: BTreeMap::new(),
        }
    }
}

/// The key file as Weft writes it since key ids exist (older files hold one bare base64 key).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct KeyFile {
    version: u32,
    /// The current key first, then the retired ones.
    keys: Vec<KeyEntry>,
    /// Store files and the key id each was last seen sealed under.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    stores: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: String,
    key: String,
}

/// How long a process waits for another one's change to the key file or a store.
const FILE_LOCK_PATIENCE: Duration = Duration::from_secs(30);

impl Keyring {
    /// A ring of `current` plus `retired` keys.
    pub fn new(current: MasterKey, retired: Vec<MasterKey>) -> Self {
        let mut keys = vec![current];
        for key in retired {
            if !keys.iter().any(|k| k.id == key.id) {
                keys.push(key);
            }
        }
        Self {
            keys,
            source: None,
            seen: BTreeMap::new(),
        }
    }

    /// The key that seals every write.
    pub fn current(&self) -> &MasterKey {
        &self.keys[0]
    }

    /// Retired keys, still able to open what was sealed under them.
    pub fn retired(&self) -> &[MasterKey] {
        &self.keys[1..]
    }

    /// Where these keys came from (absent for a ring built in code).
    pub fn source(&self) -> Option<&KeySource> {
        self.source.as_ref()
    }

    /// Store files by the id of the key they were last seen sealed under (key-file mode).
    pub fn stores_seen(&self) -> &BTreeMap<String, String> {
        &self.seen
    }

    fn key(&self, id: &str) -> Option<&MasterKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Parses one or more keys (base64, separated by commas or white space; the first is current).
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let mut keys = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty())
            .map(MasterKey::from_base64);
        let Some(current) = keys.next().transpose()? else {
            return Err(SecretError::BadMasterKey {
                reason: "it is empty".to_owned(),
            });
        };
        Ok(Self::new(current, keys.collect::<Result<_, _>>()?))
    }

    /// The keys from `WEFT_MASTER_KEY`, else from `command` (`master-key-command`), else from
    /// `key_file` (created with mode 0600 when absent).
    pub fn load(key_file: &Path, command: Option<&[String]>) -> Result<Self, SecretError> {
        if let Ok(value) = std::env::var(MASTER_KEY_VAR) {
            let mut ring = Self::parse(&value)?;
            ring.source = Some(KeySource::Environment);
            return Ok(ring);
        }
        if let Some(argv) = command {
            let output = run_key_command(argv)?;
            let program = argv.first().cloned().unwrap_or_default();
            let mut ring = Self::parse(&output).map_err(|e| SecretError::KeyCommand {
                program: program.clone(),
                reason: format!("its output is not a key: {e}"),
            })?;
            ring.source = Some(KeySource::Command(program));
            return Ok(ring);
        }
        match Self::read_file(key_file)? {
            Some(ring) => Ok(ring),
            None => {
                // Two processes may get here at once: the key is written aside and linked into
                // place, which fails when the other one won; then its key is the key.
                let ring = Self::new(MasterKey::generate()?, Vec::new());
                let text = ring.file_text(key_file)?;
                let dir = key_file.parent().unwrap_or(Path::new("."));
                let file_err = |e: std::io::Error| SecretError::KeyFile {
                    path: key_file.to_path_buf(),
                    reason: format!("cannot create it: {e}"),
                };
                std::fs::create_dir_all(dir).map_err(file_err)?;
                let aside = tempfile::Builder::new()
                    .prefix(".master.key.")
                    .tempfile_in(dir)
                    .map_err(file_err)?;
                files::write_atomic(aside.path(), text.as_bytes(), true).map_err(file_err)?;
                match std::fs::hard_link(aside.path(), key_file) {
                    Ok(()) => Self::load(key_file, None),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::load(key_file, None)
                    }
                    Err(e) => Err(file_err(e)),
                }
            }
        }
    }

    /// The ring in `key_file`; `None` when the file does not exist. The old format (one bare
    /// base64 key) reads as a ring of that one key.
    fn read_file(key_file: &Path) -> Result<Option<Self>, SecretError> {
        let file_err = |reason: String| SecretError::KeyFile {
            path: key_file.to_path_buf(),
            reason,
        };
        let bytes = match std::fs::read(key_file) {
            Ok(bytes) => Zeroizing::new(bytes),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(file_err(err.to_string())),
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| file_err("not text".to_owned()))?;
        let mut ring = if text.trim_start().starts_with('{') {
            let file: KeyFile = serde_json::from_str(text).map_err(|e| file_err(e.to_string()))?;
            if file.version != 2 {
                return Err(file_err(format!(
                    "version {} is not supported by this Weft",
                    file.version
                )));
            }
            let mut keys = Vec::new();
            for entry in &file.keys {
                let key = MasterKey::from_base64(&entry.key)
                    .map_err(|e| file_err(format!("key {}: {e}", entry.id)))?;
                if key.id != entry.id {
                    return Err(file_err(format!(
                        "key {} does not match its id (the file was edited)",
                        entry.id
                    )));
                }
                keys.push(key);
            }
            let mut keys = keys.into_iter();
            let Some(current) = keys.next() else {
                return Err(file_err("it holds no key".to_owned()));
            };
            let mut ring = Self::new(current, keys.collect());
            ring.seen = file.stores;
            ring
        } else {
            Self::from(MasterKey::from_base64(text).map_err(|e| file_err(e.to_string()))?)
        };
        ring.source = Some(KeySource::File(key_file.to_path_buf()));
        Ok(Some(ring))
    }

    fn file_text(&self, key_file: &Path) -> Result<Zeroizing<String>, SecretError> {
        let file = KeyFile {
            version: 2,
            keys: self
                .keys
                .iter()
                .map(|k| KeyEntry {
                    id: k.id.clone(),
                    key: k.to_base64().to_string(),
                })
                .collect(),
            stores: self.seen.clone(),
        };
        serde_json::to_string_pretty(&file)
            .map(Zeroizing::new)
            .map_err(|e| SecretError::KeyFile {
                path: key_file.to_path_buf(),
                reason: e.to_string(),
            })
    }

    /// Changes the key file under its lock, on its content as it is on disk now (another
    /// workspace's process may have changed it since this ring was loaded). Does nothing when the
    /// keys do not come from a file.
    fn update_file(&mut self, change: impl FnOnce(&mut Self)) -> Result<(), SecretError> {
        let Some(KeySource::File(path)) = self.source.clone() else {
            return Ok(());
        };
        let _lock = lock_beside(&path)?;
        if let Some(on_disk) = Self::read_file(&path)? {
            *self = on_disk;
        }
        change(self);
        let text = self.file_text(&path)?;
        files::write_atomic(&path, text.as_bytes(), true).map_err(|e| SecretError::KeyFile {
            path: path.clone(),
            reason: format!("cannot write it: {e}"),
        })
    }

    /// Makes `new` the current key of the key file, keeping every key it held as retired, and
    /// notes the stores now sealed under it.
    pub fn install(&mut self, new: MasterKey, stores: &[PathBuf]) -> Result<(), SecretError> {
        let id = new.id.clone();
        self.update_file(|ring| {
            ring.keys.retain(|k| k.id != new.id);
            ring.keys.insert(0, new);
            for store in stores {
                ring.seen.insert(store_name(store), id.clone());
            }
        })
    }

    /// Drops retired key `id` from the key file. The current key cannot be retired.
    pub fn retire(&mut self, id: &str) -> Result<(), SecretError> {
        if self.current().id == id {
            return Err(SecretError::RetireCurrent { id: id.to_owned() });
        }
        if self.key(id).is_none() {
            return Err(SecretError::UnknownKey { id: id.to_owned() });
        }
        self.update_file(|ring| {
            // The file's current key is never dropped, even if it changed meanwhile.
            let current = ring.current().id.clone();
            ring.keys.retain(|k| k.id != id || k.id == current);
            ring.seen.retain(|_, k| k != id);
        })
    }

    /// Notes that `store` is sealed under the current key, when the key file says otherwise.
    fn saw(&mut self, store: &Path) -> Result<(), SecretError> {
        let name = store_name(store);
        let current = self.current().id.clone();
        if self.seen.get(&name) == Some(&current) {
            return Ok(());
        }
        self.update_file(|ring| {
            // Only when the file's current key is still ours: a rotation in between wins.
            if ring.current().id == current {
                ring.seen.insert(name, current);
            }
        })
    }
}

/// How the key file names a store: its absolute path, so every workspace names it alike.
fn store_name(store: &Path) -> String {
    std::fs::canonicalize(store)
        .unwrap_or_else(|_| store.to_path_buf())
        .display()
        .to_string()
}

/// Runs `argv` without a shell and returns its standard output (the key or keys).
fn run_key_command(argv: &[String]) -> Result<Zeroizing<String>, SecretError> {
    use std::io::Read as _;
    let Some(program) = argv.first() else {
        return Err(SecretError::KeyCommand {
            program: String::new(),
            reason: "it is empty; give the program and its arguments".to_owned(),
        });
    };
    let err = |reason: String| SecretError::KeyCommand {
        program: program.clone(),
        reason,
    };
    let mut child = std::process::Command::new(program)
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                err("the program was not found; install it, or give its full path".to_owned())
            } else {
                err(format!("it cannot be started: {e}"))
            }
        })?;
    // Read both pipes while waiting, so a chatty program cannot block on a full pipe.
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Zeroizing::new(Vec::new());
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.take(4096).read_to_end(&mut buf);
        }
        buf
    });
    let started = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > KEY_COMMAND_PATIENCE => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(err(format!(
                    "it did not finish within {KEY_COMMAND_PATIENCE:?} (was it waiting for input?)"
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(err(format!("cannot wait for it: {e}"))),
        }
    };
    let out = out_reader.join().unwrap_or_default();
    let diagnostics = err_reader.join().unwrap_or_default();
    if !status.success() {
        let said = String::from_utf8_lossy(&diagnostics);
        let said = said.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let code = status
            .code()
            .map_or_else(|| "a signal".to_owned(), |c| c.to_string());
        return Err(err(format!(
            "it exited with {code}{}; check that the key is stored where the command looks",
            if said.is_empty() {
                String::new()
            } else {
                format!(" ({})", escape_control(said.trim()))
            }
        )));
    }
    let text =
        String::from_utf8(out.to_vec()).map_err(|_| err("its output is not text".to_owned()))?;
    Ok(Zeroizing::new(text))
}

/// How long `master-key-command` may take (a keychain may ask the person to unlock it).
const KEY_COMMAND_PATIENCE: Duration = Duration::from_secs(120);

/// `text` with control characters shown as escapes, for printing what another program or a
/// server said without letting it move the cursor or rewrite the terminal.
pub fn escape_control(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Checks that the sealed key check `check` of the store at `path` opens under `keys`.
fn verify(path: &Path, keys: &Keyring, check: &str) -> Result<(), SecretError> {
    let corrupt = |reason: String| SecretError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    match open(keys, CHECK_ID, check) {
        Ok(check) if check.expose().as_bytes() == CHECK_VALUE => Ok(()),
        Ok(_) => Err(corrupt(
            "the key check holds an unexpected value".to_owned(),
        )),
        Err(OpenError::Authentication) => Err(SecretError::WrongKey {
            path: path.to_path_buf(),
            key_id: None,
        }),
        Err(OpenError::MissingKey(kid)) => Err(SecretError::WrongKey {
            path: path.to_path_buf(),
            key_id: Some(kid),
        }),
        Err(OpenError::Malformed(reason)) => Err(corrupt(format!("key check: {reason}"))),
    }
}

fn lock_beside(path: &Path) -> Result<files::LockFile, SecretError> {
    let lock = path.with_extension("lock");
    files::LockFile::acquire(&lock, FILE_LOCK_PATIENCE).map_err(|e| SecretError::Lock {
        reason: e.to_string(),
    })
}

/// Seals `plaintext` for record `id` under `key`: `v2:<key id>:` + base64(nonce ‖ ciphertext ‖ tag).
pub fn seal(key: &MasterKey, id: &str, plaintext: &[u8]) -> Result<String, SecretError> {
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).map_err(|e| SecretError::Random(e.to_string()))?;
    let sealed = key
        .cipher()
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: id.as_bytes(),
            },
        )
        .map_err(|_| SecretError::Random("encryption failed".to_owned()))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(format!("{PREFIX}{}:{}", key.id, STANDARD.encode(out)))
}

/// Why a sealed value did not open.
enum OpenError {
    Malformed(String),
    /// Sealed under a key the ring does not hold.
    MissingKey(String),
    Authentication,
}

/// The id of the key `sealed` names; `None` for the first format, which names none.
fn sealed_key_id(sealed: &str) -> Option<&str> {
    sealed.strip_prefix(PREFIX)?.split(':').next()
}

fn open(ring: &Keyring, id: &str, sealed: &str) -> Result<Secret, OpenError> {
    let (candidates, body): (Vec<&MasterKey>, &str) =
        if let Some(rest) = sealed.strip_prefix(PREFIX) {
            let (kid, body) = rest
                .split_once(':')
                .ok_or_else(|| OpenError::Malformed("no key id".to_owned()))?;
            let key = ring
                .key(kid)
                .ok_or_else(|| OpenError::MissingKey(kid.to_owned()))?;
            (vec![key], body)
        } else if let Some(body) = sealed.strip_prefix(PREFIX_V1) {
            // The first format named no key: any key of the ring may have sealed it.
            (ring.keys.iter().collect(), body)
        } else {
            return Err(OpenError::Malformed("unknown format".to_owned()));
        };
    let bytes = STANDARD
        .decode(body)
        .map_err(|e| OpenError::Malformed(format!("not base64: {e}")))?;
    if bytes.len() < 12 + 16 {
        return Err(OpenError::Malformed("too short".to_owned()));
    }
    let (nonce, ciphertext) = bytes.split_at(12);
    let nonce: [u8; 12] = nonce
        .try_into()
        .map_err(|_| OpenError::Malformed("bad nonce".to_owned()))?;
    for key in candidates {
        if let Ok(plain) = key.cipher().decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad: id.as_bytes(),
            },
        ) {
            let plain = Zeroizing::new(plain);
            let text = String::from_utf8(plain.to_vec())
                .map_err(|_| OpenError::Malformed("not text".to_owned()))?;
            return Ok(Secret::new(text));
        }
    }
    Err(OpenError::Authentication)
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    version: u32,
    check: String,
    records: BTreeMap<String, String>,
}

/// Sealed records: a file written atomically with mode 0600, or rows of the state's PostgreSQL
/// database.
#[derive(Debug)]
pub struct SecretStore {
    /// The file, or for a store on PostgreSQL the name messages give it (table and server).
    path: PathBuf,
    keys: Keyring,
    records: BTreeMap<String, String>,
    check: String,
    db: Option<OnPostgres>,
}

/// Where a store on PostgreSQL is, and the local file keeping the records of [`LOCAL_ONLY`].
#[derive(Debug)]
struct OnPostgres {
    pool: PgPool,
    local: Box<SecretStore>,
    /// The database held no store when this one was opened.
    fresh: bool,
}

/// A store's lock, held until dropped: a lock file beside the file, or an advisory lock in the
/// database.
#[derive(Debug)]
pub enum StoreLock {
    /// The lock file of a file store.
    File(files::LockFile),
    /// The advisory lock of a store on PostgreSQL.
    Postgres(AdvisoryHold),
}

/// What [`SecretStore::copy_into`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CredentialCopy {
    /// Records added to the database.
    pub copied: usize,
    /// Records the database already held alike (an earlier copy).
    pub already: usize,
    /// Records the database holds with another value, kept as they are there.
    pub kept: Vec<String>,
    /// Records that stay in the local file ([`LOCAL_ONLY`]).
    pub stay_local: usize,
    /// Records read back from the database and opened.
    pub checked: usize,
}

/// A store re-sealed under a new key in memory, not yet written.
pub struct Resealed {
    path: PathBuf,
    text: Zeroizing<String>,
    /// For a store on PostgreSQL: its database, the re-sealed records and check.
    rows: Option<(PgPool, BTreeMap<String, String>, String)>,
    count: usize,
}

impl fmt::Debug for Resealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resealed")
            .field("path", &self.path)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl Resealed {
    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records re-sealed.
    pub fn count(&self) -> usize {
        self.count
    }
}

impl SecretStore {
    /// Opens the store at `path` with `keys`, creating an empty one when the file is absent.
    /// A key the ring lacks or a damaged file is an error; nothing is overwritten.
    pub fn open(path: &Path, keys: impl Into<Keyring>) -> Result<Self, SecretError> {
        let keys = keys.into();
        match Self::read(path, &keys)? {
            Some((records, check)) => Ok(Self {
                path: path.to_path_buf(),
                keys,
                records,
                check,
                db: None,
            }),
            None => {
                let check = seal(keys.current(), CHECK_ID, CHECK_VALUE)?;
                Ok(Self {
                    path: path.to_path_buf(),
                    keys,
                    records: BTreeMap::new(),
                    check,
                    db: None,
                })
            }
        }
    }

    /// Opens the store kept in the PostgreSQL database of `pool` (making its tables when
    /// missing), with the keys of `local`, the workspace's file store, which keeps the records of
    /// [`LOCAL_ONLY`]. A key the ring lacks is an error, as for a file.
    /// The records of `local` stay out of the database unless [`SecretStore::adopt_local`] is
    /// called.
    pub fn open_postgres(pool: &PgPool, local: SecretStore) -> Result<Self, SecretError> {
        let at = PathBuf::from(format!("table weft_credentials of {}", pool.shown()));
        let db_err = |action: &'static str| {
            move |reason: String| SecretError::Database {
                action,
                at: pool.shown().to_owned(),
                reason,
            }
        };
        pg::ensure_tables(pool).map_err(db_err("make the tables of"))?;
        let keys = local.keys.clone();
        let (records, check, new) = match pg::read(pool).map_err(db_err("read"))? {
            Some((records, check)) => {
                verify(&at, &keys, &check)?;
                (records, check, false)
            }
            None => (
                BTreeMap::new(),
                seal(keys.current(), CHECK_ID, CHECK_VALUE)?,
                true,
            ),
        };
        let mut store = Self {
            path: at,
            keys,
            records,
            check,
            db: Some(OnPostgres {
                pool: pool.clone(),
                local: Box::new(local),
                fresh: false,
            }),
        };
        if let Some(db) = &mut store.db {
            db.fresh = new;
        }
        Ok(store)
    }

    /// When the database held no store at open, fills it with the local file's records (all
    /// but [`LOCAL_ONLY`]), sealed as they are, under the store's lock: a workspace pointed at a
    /// new database without `weft state migrate` keeps its connections. Does nothing for a file
    /// store, when the database held a store, when another process made one meanwhile (the
    /// first process to get there wins), or when the file holds nothing to adopt. Returns how
    /// many records were adopted.
    pub fn adopt_local(&mut self) -> Result<usize, SecretError> {
        let Some(db) = self.db.as_ref().filter(|d| d.fresh) else {
            return Ok(0);
        };
        let adopt: BTreeMap<String, String> = db
            .local
            .records
            .iter()
            .filter(|(id, _)| !LOCAL_ONLY.contains(&id.as_str()))
            .map(|(id, sealed)| (id.clone(), sealed.clone()))
            .collect();
        if adopt.is_empty() {
            return Ok(0);
        }
        let _lock = self.lock()?;
        if let Some((records, check)) = pg::read(&db.pool).map_err(self.db_err("read"))? {
            verify(&self.path, &self.keys, &check)?;
            self.records = records;
            self.check = check;
            return Ok(0);
        }
        for (id, sealed) in &adopt {
            // Only what opens here is adopted: a damaged record is named now.
            self.open_record(id, sealed)?;
        }
        let count = adopt.len();
        self.records = adopt;
        self.save(&BTreeMap::new())?;
        if let Some(db) = &mut self.db {
            db.fresh = false;
        }
        Ok(count)
    }

    /// The database when the store is on PostgreSQL.
    pub fn postgres(&self) -> Option<&PgPool> {
        self.db.as_ref().map(|d| &d.pool)
    }

    /// The local file store keeping `id`, when this store is on PostgreSQL and `id` stays local.
    fn local_for(&mut self, id: &str) -> Option<&mut SecretStore> {
        self.db
            .as_mut()
            .filter(|_| LOCAL_ONLY.contains(&id))
            .map(|d| d.local.as_mut())
    }

    fn db_err(&self, action: &'static str) -> impl Fn(String) -> SecretError + '_ {
        move |reason| SecretError::Database {
            action,
            at: self
                .postgres()
                .map_or_else(String::new, |p| p.shown().to_owned()),
            reason,
        }
    }

    /// The records and key check on disk; `None` when there is no file yet.
    #[allow(clippy::type_complexity)]
    fn read(
        path: &Path,
        keys: &Keyring,
    ) -> Result<Option<(BTreeMap<String, String>, String)>, SecretError> {
        let corrupt = |reason: String| SecretError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let file: StoreFile =
                    serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
                if file.version != 1 && file.version != 2 {
                    return Err(corrupt(format!(
                        "version {} is not supported by this Weft",
                        file.version
                    )));
                }
                verify(path, keys, &file.check)?;
                Ok(Some((file.records, file.check)))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(SecretError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// The secret stored as `id`, if any.
    pub fn get(&self, id: &str) -> Result<Option<Secret>, SecretError> {
        if let Some(db) = &self.db
            && LOCAL_ONLY.contains(&id)
        {
            return db.local.get(id);
        }
        let Some(sealed) = self.records.get(id) else {
            return Ok(None);
        };
        self.open_record(id, sealed).map(Some)
    }

    fn open_record(&self, id: &str, sealed: &str) -> Result<Secret, SecretError> {
        match open(&self.keys, id, sealed) {
            Ok(secret) => Ok(secret),
            Err(OpenError::Authentication) => Err(SecretError::Tampered {
                path: self.path.clone(),
                record: id.to_owned(),
            }),
            Err(OpenError::MissingKey(kid)) => Err(SecretError::WrongKey {
                path: self.path.clone(),
                key_id: Some(kid),
            }),
            Err(OpenError::Malformed(reason)) => Err(SecretError::Corrupt {
                path: self.path.clone(),
                reason: format!("record `{id}`: {reason}"),
            }),
        }
    }

    /// Stores `value` as `id` and saves the file. Other processes may write the same file: the
    /// change is made under an exclusive lock on the file's state as it is on disk, so no
    /// process's record is lost to another's write.
    pub fn put(&mut self, id: &str, value: &Secret) -> Result<(), SecretError> {
        if let Some(local) = self.local_for(id) {
            return local.put(id, value);
        }
        let _lock = self.lock()?;
        self.reload()?;
        let before = self.records.clone();
        let sealed = seal(self.keys.current(), id, value.expose().as_bytes())?;
        self.records.insert(id.to_owned(), sealed);
        self.save(&before)
    }

    /// Removes `id` (if present) and saves the file, under the same lock as [`SecretStore::put`].
    pub fn remove(&mut self, id: &str) -> Result<bool, SecretError> {
        if let Some(local) = self.local_for(id) {
            return local.remove(id);
        }
        let _lock = self.lock()?;
        self.reload()?;
        let before = self.records.clone();
        let removed = self.records.remove(id).is_some();
        if removed {
            self.save(&before)?;
        }
        Ok(removed)
    }

    /// The file (for a store on PostgreSQL, its name in messages: table and server).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The keys it opens with.
    pub fn keys(&self) -> &Keyring {
        &self.keys
    }

    /// The id of the key the store's check is sealed under (`None` for the first format).
    pub fn key_id(&self) -> Option<&str> {
        sealed_key_id(&self.check)
    }

    /// Reads the file (or the database) again, to see what other processes wrote since it was
    /// opened.
    pub fn reload(&mut self) -> Result<(), SecretError> {
        let read = match &self.db {
            None => Self::read(&self.path, &self.keys)?,
            Some(db) => match pg::read(&db.pool).map_err(self.db_err("read"))? {
                Some((records, check)) => {
                    verify(&self.path, &self.keys, &check)?;
                    Some((records, check))
                }
                None => None,
            },
        };
        if let Some((records, check)) = read {
            self.records = records;
            self.check = check;
        }
        Ok(())
    }

    /// An exclusive lock on the store, held until dropped: a lock file beside it, which the
    /// operating system releases when the process ends however it ends; on PostgreSQL an
    /// advisory lock, which the server releases when the holding connection ends. Waits up to
    /// 30 seconds for another holder; the error says who holds it.
    pub fn lock(&self) -> Result<StoreLock, SecretError> {
        match &self.db {
            None => lock_beside(&self.path).map(StoreLock::File),
            Some(db) => {
                pg::AdvisoryHold::acquire(&db.pool, pg::STORE_LOCK, pg::STORE_KEY, FILE_LOCK_PATIENCE)
                    .map(StoreLock::Postgres)
                    .map_err(|e| match e {
                        NotHeld::Busy(holder) => SecretError::Lock {
                            reason: format!(
                                "the lock of the credential store stayed held: {holder}. A change to the store takes moments, so a holder this long is stuck: stop it (ending its connection frees the lock)"
                            ),
                        },
                        NotHeld::Failed(reason) => self.db_err("lock")(reason),
                    })
            }
        }
    }

    /// Ids of the stored records.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        let local = self
            .db
            .iter()
            .flat_map(|d| d.local.records.keys())
            .map(String::as_str)
            .filter(|id| LOCAL_ONLY.contains(id));
        self.records.keys().map(String::as_str).chain(local)
    }

    /// Every record (and the check) sealed under `key`, in memory; fails naming the record if
    /// any does not open. Take [`SecretStore::lock`] and [`SecretStore::reload`] first. For a
    /// store on PostgreSQL these are its rows only (the local file is a store of its own).
    pub fn resealed(&self, key: &MasterKey) -> Result<Resealed, SecretError> {
        let mut records = BTreeMap::new();
        for (id, sealed) in &self.records {
            let secret = self.open_record(id, sealed)?;
            records.insert(id.clone(), seal(key, id, secret.expose().as_bytes())?);
        }
        let count = records.len();
        let check = seal(key, CHECK_ID, CHECK_VALUE)?;
        if let Some(db) = &self.db {
            return Ok(Resealed {
                path: self.path.clone(),
                text: Zeroizing::new(String::new()),
                rows: Some((db.pool.clone(), records, check)),
                count,
            });
        }
        let file = StoreFile {
            version: 2,
            check,
            records,
        };
        Ok(Resealed {
            path: self.path.clone(),
            text: Zeroizing::new(self.to_text(&file)?),
            rows: None,
            count,
        })
    }

    /// Copies this file store's records into `target`, a store on PostgreSQL, sealed as they
    /// are (the database sees no plain secret), under `target`'s lock: records it lacks are
    /// added, records it holds alike are counted, records it holds with another value are kept
    /// as they are there (a worker may have rotated a token since an earlier copy) and named.
    /// The records of [`LOCAL_ONLY`] stay in the file. Then every copied record is read back and
    /// opened. Running it again after an interruption adds what is missing.
    pub fn copy_into(&self, target: &mut SecretStore) -> Result<CredentialCopy, SecretError> {
        if target.db.is_none() {
            return Err(SecretError::Corrupt {
                path: target.path.clone(),
                reason: "it is not a store on PostgreSQL; credentials are copied into one"
                    .to_owned(),
            });
        }
        let _lock = target.lock()?;
        target.reload()?;
        let before = target.records.clone();
        let mut report = CredentialCopy::default();
        for (id, sealed) in &self.records {
            if LOCAL_ONLY.contains(&id.as_str()) {
                report.stay_local += 1;
                continue;
            }
            // A record that does not open here would not open there either: named now.
            self.open_record(id, sealed)?;
            match before.get(id) {
                Some(there) if there == sealed => report.already += 1,
                Some(_) => report.kept.push(id.clone()),
                None => {
                    target.records.insert(id.clone(), sealed.clone());
                    report.copied += 1;
                }
            }
        }
        if report.copied > 0 || before.is_empty() {
            target.save(&before)?;
        }
        target.reload()?;
        for id in self
            .records
            .keys()
            .filter(|id| !LOCAL_ONLY.contains(&id.as_str()))
        {
            if target.get(id)?.is_none() {
                return Err(SecretError::Corrupt {
                    path: target.path.clone(),
                    reason: format!("record `{id}` is missing after the copy"),
                });
            }
            report.checked += 1;
        }
        Ok(report)
    }

    fn to_text(&self, file: &StoreFile) -> Result<String, SecretError> {
        serde_json::to_string_pretty(file).map_err(|e| SecretError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }

    /// Writes the records (changed from `before`, as read under the lock).
    fn save(&mut self, before: &BTreeMap<String, String>) -> Result<(), SecretError> {
        let current = self.keys.current().id.clone();
        let stale = sealed_key_id(&self.check) != Some(current.as_str())
            || self
                .records
                .values()
                .any(|r| sealed_key_id(r) != Some(current.as_str()));
        if let Some(db) = &self.db {
            let (records, check) = if stale {
                match self.resealed(self.keys.current())?.rows {
                    Some((_, records, check)) => (records, check),
                    None => (self.records.clone(), self.check.clone()),
                }
            } else {
                (self.records.clone(), self.check.clone())
            };
            pg::write(&db.pool, before, &records, &check).map_err(self.db_err("write"))?;
            self.records = records;
            self.check = check;
            let at = self.path.clone();
            return self.keys.saw(&at);
        }
        let text = if stale {
            // Sealed (in part) under a retired key or the first format: everything moves to the
            // current key with this write.
            self.resealed(self.keys.current())?.text
        } else {
            Zeroizing::new(self.to_text(&StoreFile {
                version: 2,
                check: self.check.clone(),
                records: self.records.clone(),
            })?)
        };
        files::write_atomic(&self.path, text.as_bytes(), true).map_err(|source| {
            SecretError::Io {
                action: "write",
                path: self.path.clone(),
                source,
            }
        })?;
        if stale {
            self.reload()?;
        }
        self.keys.saw(&self.path)
    }
}

/// Writes every store of `resealed` beside its file (a store on PostgreSQL: in one transaction,
/// not yet committed), then — only when all of them were written — calls `before_rename`
/// (which installs the new key), commits the database's transaction and renames the files into
/// place. A failure before that leaves every store and the key file as they were, and names the
/// store. Take every store's [`SecretStore::lock`] first and hold them until this returns.
pub fn replace_all(
    resealed: &[Resealed],
    before_rename: impl FnOnce() -> Result<(), SecretError>,
) -> Result<(), SecretError> {
    let mut written = Vec::new();
    let mut pending = Vec::new();
    let result = (|| {
        for store in resealed {
            if let Some((pool, records, check)) = &store.rows {
                let begun = pg::Pending::begin(pool, records, check).map_err(|reason| {
                    SecretError::Database {
                        action: "write the re-sealed records of",
                        at: pool.shown().to_owned(),
                        reason,
                    }
                })?;
                pending.push((begun, pool));
                continue;
            }
            let dir = store.path.parent().unwrap_or(Path::new("."));
            let io = |source| SecretError::Io {
                action: "write the re-sealed copy of",
                path: store.path.clone(),
                source,
            };
            let mut builder = tempfile::Builder::new();
            builder.prefix(".credentials.rotating.");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                builder.permissions(std::fs::Permissions::from_mode(0o600));
            }
            let mut tmp = builder.tempfile_in(dir).map_err(io)?;
            std::io::Write::write_all(&mut tmp, store.text.as_bytes()).map_err(io)?;
            tmp.as_file().sync_all().map_err(io)?;
            written.push((tmp, store));
        }
        before_rename()?;
        for (begun, pool) in pending.drain(..) {
            begun.commit().map_err(|reason| SecretError::Database {
                action: "commit the re-sealed records of",
                at: pool.shown().to_owned(),
                reason: format!(
                    "{reason} (the new key is installed and the old one kept as retired, so the store still opens; run the rotation again)"
                ),
            })?;
        }
        for (tmp, store) in written.drain(..) {
            tmp.persist(&store.path).map_err(|e| SecretError::Io {
                action: "replace",
                path: store.path.clone(),
                source: e.error,
            })?;
        }
        Ok(())
    })();
    // Copies not renamed are removed when `written` drops; transactions not committed roll back.
    drop(written);
    drop(pending);
    result
}
#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::from_base64(&STANDARD.encode([7u8; 32])).unwrap()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weft-secrets-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn round_trip_and_nothing_in_plain_text() {
        let dir = temp_dir("roundtrip");
        let path = dir.join("secrets.json");
        let mut store = SecretStore::open(&path, key()).unwrap();
        store
            .put("client:acme", &Secret::new("very-secret-value".into()))
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("very-secret-value"));
        let store = SecretStore::open(&path, key()).unwrap();
        assert_eq!(
            store.get("client:acme").unwrap().unwrap().expose(),
            "very-secret-value"
        );
        assert_eq!(
            format!("{:?}", store.get("client:acme").unwrap().unwrap()),
            "Secret([redacted])"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn wrong_key_tampering_and_swaps_are_detected() {
        let dir = temp_dir("tamper");
        let path = dir.join("secrets.json");
        let mut store = SecretStore::open(&path, key()).unwrap();
        store.put("a", &Secret::new("alpha".into())).unwrap();
        store.put("b", &Secret::new("bravo".into())).unwrap();
        let other = MasterKey::from_base64(&STANDARD.encode([8u8; 32])).unwrap();
        assert!(matches!(
            SecretStore::open(&path, other),
            Err(SecretError::WrongKey { .. })
        ));

        let mut file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let a = file["records"]["a"].clone();
        file["records"]["b"] = a; // a record moved into another slot
        std::fs::write(&path, file.to_string()).unwrap();
        let store = SecretStore::open(&path, key()).unwrap();
        assert_eq!(store.get("a").unwrap().unwrap().expose(), "alpha");
        assert!(matches!(store.get("b"), Err(SecretError::Tampered { .. })));

        std::fs::write(&path, "{ not json").unwrap();
        assert!(matches!(
            SecretStore::open(&path, key()),
            Err(SecretError::Corrupt { .. })
        ));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn writers_with_their_own_handles_lose_nothing() {
        let dir = temp_dir("writers");
        let path = dir.join("secrets.json");
        SecretStore::open(&path, key())
            .unwrap()
            .put("seed", &Secret::new("s".into()))
            .unwrap();
        std::thread::scope(|s| {
            for w in 0..6 {
                let path = path.clone();
                s.spawn(move || {
                    // Each writer opened the file before the others wrote: a plain
                    // read-modify-write would drop their records.
                    let mut store = SecretStore::open(&path, key()).unwrap();
                    for i in 0..10 {
                        store
                            .put(&format!("w{w}-{i}"), &Secret::new(format!("v{w}{i}")))
                            .unwrap();
                    }
                });
            }
        });
        let store = SecretStore::open(&path, key()).unwrap();
        assert_eq!(store.ids().count(), 61);
        assert_eq!(store.get("w5-9").unwrap().unwrap().expose(), "v59");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_store_under_a_retired_key_opens_and_moves_to_the_current_key_on_its_next_write() {
        let dir = temp_dir("retired");
        let path = dir.join("secrets.json");
        let mut store = SecretStore::open(&path, key()).unwrap();
        store.put("a", &Secret::new("alpha".into())).unwrap();
        let new_key = MasterKey::generate().unwrap();
        let ring = Keyring::new(new_key.clone(), vec![key()]);
        let mut store = SecretStore::open(&path, ring.clone()).unwrap();
        assert_eq!(store.key_id(), Some(key().id()));
        assert_eq!(store.get("a").unwrap().unwrap().expose(), "alpha");
        store.put("b", &Secret::new("bravo".into())).unwrap();
        assert_eq!(store.key_id(), Some(new_key.id()));
        // Everything is now under the new key alone.
        let only_new = SecretStore::open(&path, new_key.clone()).unwrap();
        assert_eq!(only_new.get("a").unwrap().unwrap().expose(), "alpha");
        assert!(matches!(
            SecretStore::open(&path, key()),
            Err(SecretError::WrongKey { key_id: Some(k), .. }) if k == new_key.id()
        ));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_store_of_the_first_format_opens_and_is_migrated() {
        let dir = temp_dir("v1");
        let path = dir.join("secrets.json");
        let mut store = SecretStore::open(&path, key()).unwrap();
        store.put("a", &Secret::new("alpha".into())).unwrap();
        // Rewrite it as the first format wrote it: `v1:` values naming no key, version 1.
        let kid = format!("v2:{}:", key().id());
        let old = std::fs::read_to_string(&path)
            .unwrap()
            .replace(&kid, "v1:")
            .replace("\"version\": 2", "\"version\": 1");
        std::fs::write(&path, &old).unwrap();
        let mut store = SecretStore::open(&path, key()).unwrap();
        assert_eq!(store.key_id(), None);
        assert_eq!(store.get("a").unwrap().unwrap().expose(), "alpha");
        store.put("b", &Secret::new("bravo".into())).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("v1:") && text.contains("\"version\": 2"),
            "{text}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn replace_all_changes_nothing_when_the_key_cannot_be_installed() {
        let dir = temp_dir("replace");
        let (p1, p2) = (dir.join("one.json"), dir.join("two.json"));
        for p in [&p1, &p2] {
            SecretStore::open(p, key())
                .unwrap()
                .put("a", &Secret::new("alpha".into()))
                .unwrap();
        }
        let before = (
            std::fs::read_to_string(&p1).unwrap(),
            std::fs::read_to_string(&p2).unwrap(),
        );
        let new_key = MasterKey::generate().unwrap();
        let resealed: Vec<Resealed> = [&p1, &p2]
            .iter()
            .map(|p| {
                SecretStore::open(p, key())
                    .unwrap()
                    .resealed(&new_key)
                    .unwrap()
            })
            .collect();
        let failed = replace_all(&resealed, || {
            Err(SecretError::Random("the key file cannot be written".into()))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read_to_string(&p1).unwrap(), before.0);
        assert_eq!(std::fs::read_to_string(&p2).unwrap(), before.1);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            4,
            "no copy is left beside"
        );
        replace_all(&resealed, || Ok(())).unwrap();
        for p in [&p1, &p2] {
            let s = SecretStore::open(p, new_key.clone()).unwrap();
            assert_eq!(s.get("a").unwrap().unwrap().expose(), "alpha");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_key_command_failure_says_what_went_wrong() {
        let missing = Keyring::load(
            Path::new("/nonexistent/master.key"),
            Some(&["weft-no-such-program-here".to_owned()]),
        )
        .unwrap_err()
        .to_string();
        if std::env::var_os(MASTER_KEY_VAR).is_none() {
            assert!(missing.contains("was not found"), "{missing}");
        }
    }

    #[test]
    fn a_key_file_of_the_first_format_opens_and_a_rotation_keeps_its_key_as_retired() {
        if std::env::var_os(MASTER_KEY_VAR).is_some() {
            return; // The environment's key would win over the file.
        }
        let dir = temp_dir("keyfile-v1");
        std::fs::create_dir_all(&dir).unwrap();
        let key_file = dir.join("master.key");
        // The first format: one bare base64 key.
        std::fs::write(&key_file, STANDARD.encode([7u8; 32])).unwrap();
        let mut ring = Keyring::load(&key_file, None).unwrap();
        assert_eq!(ring.current().id(), key().id());
        let store_path = dir.join("credentials.json");
        SecretStore::open(&store_path, ring.clone())
            .unwrap()
            .put("a", &Secret::new("alpha".into()))
            .unwrap();
        let new_key = MasterKey::generate().unwrap();
        ring.install(new_key.clone(), &[]).unwrap();
        let reloaded = Keyring::load(&key_file, None).unwrap();
        assert_eq!(reloaded.current().id(), new_key.id());
        assert_eq!(reloaded.retired()[0].id(), key().id());
        let store = SecretStore::open(&store_path, reloaded).unwrap();
        assert_eq!(store.get("a").unwrap().unwrap().expose(), "alpha");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            escape_control("bad\u{1b}[2Jthing\n"),
            "bad\\u{1b}[2Jthing\\n"
        );
    }

    #[test]
    fn bad_master_keys_are_refused() {
        assert!(matches!(
            MasterKey::from_base64("not base64!"),
            Err(SecretError::BadMasterKey { .. })
        ));
        assert!(matches!(
            MasterKey::from_base64(&STANDARD.encode([1u8; 16])),
            Err(SecretError::BadMasterKey { .. })
        ));
    }
}
