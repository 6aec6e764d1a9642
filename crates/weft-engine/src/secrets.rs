//! The credential store: client secrets and tokens, sealed with AES-256-GCM.
//!
//! Each record is encrypted under the master key with a fresh random 96-bit nonce and
//! authenticated together with its own id (so a record copied into another slot fails to open).
//! The store also seals a known check value, which tells a wrong master key apart from a
//! tampered record. Plaintext lives only in [`Secret`], which zeroizes on drop and never prints.
//!
//! The master key comes from `WEFT_MASTER_KEY` (base64 of 32 bytes), else from a key file created
//! with mode 0600 on first use.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

/// Environment variable holding the master key (base64 of 32 random bytes).
pub const MASTER_KEY_VAR: &str = "WEFT_MASTER_KEY";

const CHECK_ID: &str = "weft:key-check";
const CHECK_VALUE: &[u8] = b"weft master key check v1";
const PREFIX: &str = "v1:";

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
    /// The store was sealed under another master key.
    #[error(
        "the credential store {path} was sealed with a different master key; set {MASTER_KEY_VAR} to the key it was created with (or restore the key file)"
    )]
    WrongKey {
        /// The store file.
        path: PathBuf,
    },
    /// A record failed authentication under the right key: it was altered.
    #[error(
        "record `{record}` in {path} fails its integrity check: the file was altered; re-enter it (`weft client edit CLIENT` for a client's secret, `weft connection authorize NAME` for a connection's tokens)"
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

/// The 256-bit master key.
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

/// Where the master key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The environment variable.
    Environment,
    /// A key file (created now or earlier).
    File(PathBuf),
}

impl MasterKey {
    /// A new random key.
    pub fn generate() -> Result<Self, SecretError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut()).map_err(|e| SecretError::Random(e.to_string()))?;
        Ok(Self(bytes))
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
        Ok(Self(key))
    }

    /// The key as base64 (for `weft secrets rotate-key` to hand a new key to the person).
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.as_ref()))
    }

    /// The key from `WEFT_MASTER_KEY`, else from `key_file` (created with mode 0600 when absent).
    pub fn load(key_file: &Path) -> Result<(Self, KeySource), SecretError> {
        if let Ok(value) = std::env::var(MASTER_KEY_VAR) {
            return Ok((Self::from_base64(&value)?, KeySource::Environment));
        }
        let file_err = |reason: String| SecretError::KeyFile {
            path: key_file.to_path_buf(),
            reason,
        };
        match std::fs::read(key_file) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                let text =
                    std::str::from_utf8(&bytes).map_err(|_| file_err("not text".to_owned()))?;
                let key = Self::from_base64(text).map_err(|e| file_err(e.to_string()))?;
                Ok((key, KeySource::File(key_file.to_path_buf())))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                // Two processes may get here at once: the key is written aside and linked into
                // place, which fails when the other one won; then its key is the key.
                let key = Self::generate()?;
                let aside = key_file.with_extension(format!("new-{}", std::process::id()));
                write_private(&aside, key.to_base64().as_bytes())
                    .map_err(|e| file_err(format!("cannot create it: {e}")))?;
                let linked = std::fs::hard_link(&aside, key_file);
                let _ = std::fs::remove_file(&aside);
                match linked {
                    Ok(()) => Ok((key, KeySource::File(key_file.to_path_buf()))),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load(key_file),
                    Err(e) => Err(file_err(format!("cannot create it: {e}"))),
                }
            }
            Err(err) => Err(file_err(err.to_string())),
        }
    }

    fn cipher(&self) -> Aes256Gcm {
        let key: &[u8; 32] = &self.0;
        Aes256Gcm::new(key.into())
    }
}

/// Seals `plaintext` for record `id`: `v1:` + base64(nonce ‖ ciphertext ‖ tag).
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
    Ok(format!("{PREFIX}{}", STANDARD.encode(out)))
}

/// Why a sealed value did not open.
enum OpenError {
    Malformed(String),
    Authentication,
}

fn open(key: &MasterKey, id: &str, sealed: &str) -> Result<Secret, OpenError> {
    let body = sealed
        .strip_prefix(PREFIX)
        .ok_or_else(|| OpenError::Malformed("unknown format".to_owned()))?;
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
    let plain = Zeroizing::new(
        key.cipher()
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: id.as_bytes(),
                },
            )
            .map_err(|_| OpenError::Authentication)?,
    );
    let text = String::from_utf8(plain.to_vec())
        .map_err(|_| OpenError::Malformed("not text".to_owned()))?;
    Ok(Secret::new(text))
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    version: u32,
    check: String,
    records: BTreeMap<String, String>,
}

/// A file of sealed records, written atomically with mode 0600.
#[derive(Debug)]
pub struct SecretStore {
    path: PathBuf,
    key: MasterKey,
    records: BTreeMap<String, String>,
    check: String,
}

impl SecretStore {
    /// Opens the store at `path` with `key`, creating an empty one when the file is absent.
    /// A wrong key or a damaged file is an error; nothing is overwritten.
    pub fn open(path: &Path, key: MasterKey) -> Result<Self, SecretError> {
        match Self::read(path, &key)? {
            Some((records, check)) => Ok(Self {
                path: path.to_path_buf(),
                key,
                records,
                check,
            }),
            None => {
                let check = seal(&key, CHECK_ID, CHECK_VALUE)?;
                Ok(Self {
                    path: path.to_path_buf(),
                    key,
                    records: BTreeMap::new(),
                    check,
                })
            }
        }
    }

    /// The records and key check on disk; `None` when there is no file yet.
    #[allow(clippy::type_complexity)]
    fn read(
        path: &Path,
        key: &MasterKey,
    ) -> Result<Option<(BTreeMap<String, String>, String)>, SecretError> {
        let corrupt = |reason: String| SecretError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let file: StoreFile =
                    serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
                if file.version != 1 {
                    return Err(corrupt(format!(
                        "version {} is not supported by this Weft",
                        file.version
                    )));
                }
                match open(key, CHECK_ID, &file.check) {
                    Ok(check) if check.expose().as_bytes() == CHECK_VALUE => {}
                    Ok(_) => {
                        return Err(corrupt(
                            "the key check holds an unexpected value".to_owned(),
                        ));
                    }
                    Err(OpenError::Authentication) => {
                        return Err(SecretError::WrongKey {
                            path: path.to_path_buf(),
                        });
                    }
                    Err(OpenError::Malformed(reason)) => {
                        return Err(corrupt(format!("key check: {reason}")));
                    }
                }
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
        let Some(sealed) = self.records.get(id) else {
            return Ok(None);
        };
        match open(&self.key, id, sealed) {
            Ok(secret) => Ok(Some(secret)),
            Err(OpenError::Authentication) => Err(SecretError::Tampered {
                path: self.path.clone(),
                record: id.to_owned(),
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
        let _lock = self.exclusive()?;
        self.reload()?;
        let sealed = seal(&self.key, id, value.expose().as_bytes())?;
        self.records.insert(id.to_owned(), sealed);
        self.save()
    }

    /// Removes `id` (if present) and saves the file, under the same lock as [`SecretStore::put`].
    pub fn remove(&mut self, id: &str) -> Result<bool, SecretError> {
        let _lock = self.exclusive()?;
        self.reload()?;
        let removed = self.records.remove(id).is_some();
        if removed {
            self.save()?;
        }
        Ok(removed)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file again, to see what other processes wrote since it was opened.
    pub fn reload(&mut self) -> Result<(), SecretError> {
        if let Some((records, check)) = Self::read(&self.path, &self.key)? {
            self.records = records;
            self.check = check;
        }
        Ok(())
    }

    /// An exclusive lock on the store (a lock file beside it), held until the file is dropped.
    /// The operating system releases it when the process ends, however it ends.
    fn exclusive(&self) -> Result<std::fs::File, SecretError> {
        let path = self.path.with_extension("lock");
        let io = |source| SecretError::Io {
            action: "lock",
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        file.lock().map_err(io)?;
        Ok(file)
    }

    /// Ids of the stored records.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.records.keys().map(String::as_str)
    }

    /// Re-seals every record under `new_key`; fails without changing anything if any record
    /// does not open.
    pub fn rotate(&mut self, new_key: MasterKey) -> Result<usize, SecretError> {
        let _lock = self.exclusive()?;
        self.reload()?;
        let mut resealed = BTreeMap::new();
        for id in self.records.keys() {
            if let Some(secret) = self.get(id)? {
                resealed.insert(id.clone(), seal(&new_key, id, secret.expose().as_bytes())?);
            }
        }
        let check = seal(&new_key, CHECK_ID, CHECK_VALUE)?;
        let count = resealed.len();
        let (old_records, old_check) = (
            std::mem::replace(&mut self.records, resealed),
            std::mem::replace(&mut self.check, check),
        );
        let old_key = std::mem::replace(&mut self.key, new_key);
        if let Err(err) = self.save() {
            self.records = old_records;
            self.check = old_check;
            self.key = old_key;
            return Err(err);
        }
        Ok(count)
    }

    fn save(&self) -> Result<(), SecretError> {
        let file = StoreFile {
            version: 1,
            check: self.check.clone(),
            records: self.records.clone(),
        };
        let text = serde_json::to_string_pretty(&file).map_err(|e| SecretError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        write_private(&self.path, text.as_bytes()).map_err(|source| SecretError::Io {
            action: "write",
            path: self.path.clone(),
            source,
        })
    }
}

/// Writes `key` to `path` (mode 0600), replacing it atomically.
pub fn write_key_file(path: &Path, key: &MasterKey) -> Result<(), SecretError> {
    write_private(path, key.to_base64().as_bytes()).map_err(|e| SecretError::KeyFile {
        path: path.to_path_buf(),
        reason: format!("cannot write it: {e}"),
    })
}

/// Writes `bytes` to `path` atomically (a temporary file renamed over it), mode 0600.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
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
            .put("client:xero", &Secret::new("very-secret-value".into()))
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("very-secret-value"));
        let store = SecretStore::open(&path, key()).unwrap();
        assert_eq!(
            store.get("client:xero").unwrap().unwrap().expose(),
            "very-secret-value"
        );
        assert_eq!(
            format!("{:?}", store.get("client:xero").unwrap().unwrap()),
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
    fn rotation_reseals_everything() {
        let dir = temp_dir("rotate");
        let path = dir.join("secrets.json");
        let mut store = SecretStore::open(&path, key()).unwrap();
        store.put("a", &Secret::new("alpha".into())).unwrap();
        let new_key = MasterKey::generate().unwrap();
        let new_b64 = new_key.to_base64();
        assert_eq!(store.rotate(new_key).unwrap(), 1);
        assert!(matches!(
            SecretStore::open(&path, key()),
            Err(SecretError::WrongKey { .. })
        ));
        let reopened = SecretStore::open(&path, MasterKey::from_base64(&new_b64).unwrap()).unwrap();
        assert_eq!(reopened.get("a").unwrap().unwrap().expose(), "alpha");
        std::fs::remove_dir_all(&dir).ok();
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
