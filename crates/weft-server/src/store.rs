//! The console's own database, `.weft/console.db`: users (argon2 password hashes), sessions,
//! the key that signs session cookies and CSRF tokens, and the audit log.
//!
//! It is a file of its own rather than tables in the run state database (`state.db`): that
//! database's invariant is that it holds no secret, and password hashes and the signing key
//! are secrets; its schema version moves with the engine, this one with the console
//! (`PRAGMA user_version`). The file is created with mode 0600.

use std::path::{Path, PathBuf};
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use rusqlite::{OptionalExtension as _, params};
use serde::Serialize;
use sha2::Digest as _;
use weft_engine::workspace::Workspace;

/// The file name inside the workspace's private folder.
pub const FILE_NAME: &str = "console.db";

/// The schema this code reads and writes.
pub const SCHEMA_VERSION: i64 = 1;

/// How long a session lasts without being used.
pub const SESSION_IDLE: Duration = Duration::from_secs(12 * 60 * 60);

/// How often a session in use is marked used: that mark is a write synced to disk, which a page
/// view should not wait for each time; against [`SESSION_IDLE`], a minute's lag is nothing.
pub const SESSION_MARK_EVERY: Duration = Duration::from_secs(60);

/// Shortest accepted password, in characters.
pub const MIN_PASSWORD: usize = 10;
/// Longest accepted password, in characters.
pub const MAX_PASSWORD: usize = 1024;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Manages workspace clients, connections, flows and users.
    Admin,
    /// Manages only their own user-scoped connections; runs flows and handles errors.
    Member,
}

impl Role {
    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Member => "member",
        }
    }

    /// Parses `admin` or `member`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "admin" | "administrator" => Some(Self::Admin),
            "member" => Some(Self::Member),
            _ => None,
        }
    }
}

/// A console user.
#[derive(Debug, Clone, Serialize)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// When the user was added (RFC 3339).
    pub created: String,
}

/// One audit entry: who did what to what.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    /// Sequence number.
    pub id: i64,
    /// When (RFC 3339, UTC).
    pub at: String,
    /// The user (or `cli:<os user>` for the command line).
    pub actor: String,
    /// What was done (`client.add`, `connection.delete`, `user.login`, …).
    pub action: String,
    /// What it was done to.
    pub target: String,
    /// A short outcome, never a secret.
    pub detail: String,
}

/// Errors of the console database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error(
        "the console database {path} failed: {source}; check the file's permissions and the disk"
    )]
    Sql {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The file was written by a newer Weft.
    #[error(
        "the console database {path} has schema version {found}, newer than this Weft's {SCHEMA_VERSION}; upgrade Weft"
    )]
    Newer {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: i64,
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
    /// A user name breaks the rules.
    #[error("user name `{0}`: use 1 to 64 letters, digits, `.`, `_`, `-` or `@`, with no spaces")]
    BadName(String),
    /// A password breaks the rules.
    #[error("the password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters long")]
    BadPassword,
    /// The user exists already.
    #[error(
        "a user `{0}` exists already; choose another name or change their password with `weft user passwd {0}`"
    )]
    Exists(String),
    /// No such user.
    #[error("no user `{0}`; see `weft user list`")]
    NoUser(String),
    /// Removing a user who still owns connections.
    #[error(
        "`{user}` owns connection{} {}; delete {} or give {} to the workspace or another user first (in the console: Edit, Owner; or `weft connection edit NAME --no-owner` or `weft connection edit NAME --owner USER`), then remove `{user}`",
        if .connections.len() == 1 { "" } else { "s" },
        .connections.join(", "),
        if .connections.len() == 1 { "it" } else { "them" },
        if .connections.len() == 1 { "it" } else { "them" }
    )]
    OwnsConnections {
        /// The user.
        user: String,
        /// The connections they own.
        connections: Vec<String>,
    },
    /// Removing or demoting the last administrator.
    #[error("`{0}` is the last administrator; add another administrator first")]
    LastAdmin(String),
    /// Hashing failed.
    #[error("cannot hash the password: {0}")]
    Hash(String),
    /// The operating system's random source failed.
    #[error("the operating system's random source failed: {0}")]
    Random(String),
}

/// The console database, open.
pub struct Store {
    path: PathBuf,
    db: rusqlite::Connection,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(
        |_| ms.to_string(),
        |t| t.strftime("%Y-%m-%d %H:%M:%SZ").to_string(),
    )
}

/// `n` random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], StoreError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| StoreError::Random(e.to_string()))?;
    Ok(out)
}

/// Checks a user name: 1 to 64 of letters, digits, `.`, `_`, `-`, `@` (the engine's rule,
/// which a connection's `owner` in `weft.toml` follows too).
pub fn check_user_name(name: &str) -> Result<(), StoreError> {
    weft_engine::workspace::check_user_name(name).map_err(|_| StoreError::BadName(name.to_owned()))
}

fn check_password(password: &str) -> Result<(), StoreError> {
    let n = password.chars().count();
    if (MIN_PASSWORD..=MAX_PASSWORD).contains(&n) {
        Ok(())
    } else {
        Err(StoreError::BadPassword)
    }
}

fn hash_password(password: &str) -> Result<String, StoreError> {
    let salt = random_bytes::<16>()?;
    Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Hash(e.to_string()))
}

/// A hash verified when the user does not exist, so a wrong name takes as long as a wrong
/// password and timing does not tell which names exist.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("not a password of anyone").unwrap_or_default())
}

/// Whether `password` matches `hash`; `None` (an unknown user) is checked against a decoy
/// hash, so it takes as long and never matches.
pub fn password_matches(hash: Option<&str>, password: &str) -> bool {
    let stored = hash.unwrap_or_else(|| decoy_hash());
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), stored)
        .is_ok();
    ok && hash.is_some()
}

/// SHA-256 of a session token, hex: what the database keeps instead of the token.
fn token_digest(token: &str) -> String {
    let digest = sha2::Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Store {
    /// Opens (creating when needed) the console database in `private_dir` (a workspace's `.weft/`).
    pub fn open(private_dir: &Path) -> Result<Self, StoreError> {
        let path = private_dir.join(FILE_NAME);
        std::fs::create_dir_all(private_dir).map_err(|source| StoreError::Io {
            action: "create",
            path: private_dir.to_path_buf(),
            source,
        })?;
        let sql = |source| StoreError::Sql {
            path: path.clone(),
            source,
        };
        let db = rusqlite::Connection::open(&path).map_err(sql)?;
        // Only its owner reads it (password hashes, the signing key), however it was made.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(
                |source| StoreError::Io {
                    action: "restrict the permissions of",
                    path: path.clone(),
                    source,
                },
            )?;
        }
        db.busy_timeout(weft_engine::state::BUSY_TIMEOUT)
            .map_err(sql)?;
        let version: i64 = db
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sql)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Newer {
                path,
                found: version,
            });
        }
        if version < 1 {
            db.execute_batch(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
                 CREATE TABLE IF NOT EXISTS users (
                     name TEXT PRIMARY KEY,
                     role TEXT NOT NULL CHECK (role IN ('admin', 'member')),
                     hash TEXT NOT NULL,
                     created_ms INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS sessions (
                     digest TEXT PRIMARY KEY,
                     user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
                     created_ms INTEGER NOT NULL,
                     seen_ms INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS audit (
                     id INTEGER PRIMARY KEY AUTOINCREMENT,
                     at_ms INTEGER NOT NULL,
                     actor TEXT NOT NULL,
                     action TEXT NOT NULL,
                     target TEXT NOT NULL,
                     detail TEXT NOT NULL);
                 PRAGMA user_version = 1;
                 COMMIT;",
            )
            .map_err(sql)?;
        }
        db.execute_batch("PRAGMA foreign_keys = ON;").map_err(sql)?;
        Ok(Self { path, db })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    /// The key that signs session cookies and CSRF tokens; made on first use.
    pub fn signing_key(&self) -> Result<[u8; 32], StoreError> {
        let found: Option<Vec<u8>> = self
            .db
            .query_row(
                "SELECT value FROM meta WHERE key = 'signing-key'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql())?;
        if let Some(key) = found.and_then(|k| <[u8; 32]>::try_from(k).ok()) {
            return Ok(key);
        }
        let key = random_bytes::<32>()?;
        self.db
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('signing-key', ?1)",
                params![key.to_vec()],
            )
            .map_err(self.sql())?;
        Ok(key)
    }

    /// Adds a user. The first user is always an administrator; later ones get `role`.
    /// Returns the role given.
    pub fn add_user(&self, name: &str, password: &str, role: Role) -> Result<Role, StoreError> {
        check_user_name(name)?;
        check_password(password)?;
        if self.user(name)?.is_some() {
            return Err(StoreError::Exists(name.to_owned()));
        }
        let role = if self.users()?.is_empty() {
            Role::Admin
        } else {
            role
        };
        let hash = hash_password(password)?;
        self.db
            .execute(
                "INSERT INTO users (name, role, hash, created_ms) VALUES (?1, ?2, ?3, ?4)",
                params![name, role.as_str(), hash, now_ms()],
            )
            .map_err(self.sql())?;
        Ok(role)
    }

    /// Every user, by name.
    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        let mut stmt = self
            .db
            .prepare("SELECT name, role, created_ms FROM users ORDER BY name")
            .map_err(self.sql())?;
        let rows = stmt
            .query_map([], |r| {
                let role: String = r.get(1)?;
                Ok(User {
                    name: r.get(0)?,
                    role: Role::parse(&role).unwrap_or(Role::Member),
                    created: rfc3339(r.get(2)?),
                })
            })
            .map_err(self.sql())?;
        rows.collect::<Result<_, _>>().map_err(self.sql())
    }

    /// One user.
    pub fn user(&self, name: &str) -> Result<Option<User>, StoreError> {
        Ok(self.users()?.into_iter().find(|u| u.name == name))
    }

    /// Why user `name` cannot be removed from the console of `workspace` now, if they cannot:
    /// no such user, the owner of connections (whose only managers would then be the
    /// administrators, without anyone having decided so), or the last administrator.
    pub fn removal_blocked(&self, name: &str, workspace: &Workspace) -> Result<(), StoreError> {
        let user = self
            .user(name)?
            .ok_or_else(|| StoreError::NoUser(name.to_owned()))?;
        let owned = workspace.file.connections_owned_by(name);
        if !owned.is_empty() {
            return Err(StoreError::OwnsConnections {
                user: name.to_owned(),
                connections: owned.into_iter().map(str::to_owned).collect(),
            });
        }
        if user.role == Role::Admin && self.admins()? <= 1 {
            return Err(StoreError::LastAdmin(name.to_owned()));
        }
        Ok(())
    }

    /// Removes a user and their sessions, unless [`Store::removal_blocked`] says why not.
    /// `workspace` is the one this console database belongs to, as it is on disk now.
    pub fn remove_user(&self, name: &str, workspace: &Workspace) -> Result<(), StoreError> {
        self.removal_blocked(name, workspace)?;
        self.db
            .execute("DELETE FROM sessions WHERE user = ?1", params![name])
            .map_err(self.sql())?;
        self.db
            .execute("DELETE FROM users WHERE name = ?1", params![name])
            .map_err(self.sql())?;
        Ok(())
    }

    fn admins(&self) -> Result<usize, StoreError> {
        Ok(self
            .users()?
            .iter()
            .filter(|u| u.role == Role::Admin)
            .count())
    }

    /// Sets a user's password and ends their sessions.
    pub fn set_password(&self, name: &str, password: &str) -> Result<(), StoreError> {
        check_password(password)?;
        if self.user(name)?.is_none() {
            return Err(StoreError::NoUser(name.to_owned()));
        }
        let hash = hash_password(password)?;
        self.db
            .execute(
                "UPDATE users SET hash = ?2 WHERE name = ?1",
                params![name, hash],
            )
            .map_err(self.sql())?;
        self.db
            .execute("DELETE FROM sessions WHERE user = ?1", params![name])
            .map_err(self.sql())?;
        Ok(())
    }

    /// The stored password hash of `name` (`None` for an unknown name), to check with
    /// [`password_matches`] outside any lock: hashing is slow on purpose.
    pub fn password_hash(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.db
            .query_row(
                "SELECT hash FROM users WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql())
    }

    /// The user when `password` is theirs. An unknown name costs the same hashing time as a
    /// wrong password.
    pub fn verify(&self, name: &str, password: &str) -> Result<Option<User>, StoreError> {
        let hash = self.password_hash(name)?;
        if password_matches(hash.as_deref(), password) {
            self.user(name)
        } else {
            Ok(None)
        }
    }

    /// Starts a session for `user`; returns its token (kept only as a digest here).
    pub fn create_session(&self, user: &str) -> Result<String, StoreError> {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>()?);
        let now = now_ms();
        self.db
            .execute(
                "INSERT INTO sessions (digest, user, created_ms, seen_ms) VALUES (?1, ?2, ?3, ?3)",
                params![token_digest(&token), user, now],
            )
            .map_err(self.sql())?;
        Ok(token)
    }

    /// The user of a live session, marking it used (at most once every
    /// [`SESSION_MARK_EVERY`]); an idle session is ended.
    pub fn session_user(&self, token: &str) -> Result<Option<User>, StoreError> {
        let digest = token_digest(token);
        let found: Option<(String, i64)> = self
            .db
            .query_row(
                "SELECT user, seen_ms FROM sessions WHERE digest = ?1",
                params![digest],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.sql())?;
        let Some((user, seen)) = found else {
            return Ok(None);
        };
        let now = now_ms();
        let idle = i64::try_from(SESSION_IDLE.as_millis()).unwrap_or(i64::MAX);
        if now.saturating_sub(seen) > idle {
            self.end_session(token)?;
            return Ok(None);
        }
        let every = i64::try_from(SESSION_MARK_EVERY.as_millis()).unwrap_or(i64::MAX);
        if now.saturating_sub(seen) >= every {
            self.db
                .execute(
                    "UPDATE sessions SET seen_ms = ?2 WHERE digest = ?1",
                    params![digest, now],
                )
                .map_err(self.sql())?;
        }
        self.user(&user)
    }

    /// Ends a session.
    pub fn end_session(&self, token: &str) -> Result<(), StoreError> {
        self.db
            .execute(
                "DELETE FROM sessions WHERE digest = ?1",
                params![token_digest(token)],
            )
            .map_err(self.sql())?;
        Ok(())
    }

    /// Records who did what to what. `detail` must never hold a secret.
    pub fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO audit (at_ms, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![now_ms(), actor, action, target, detail],
            )
            .map_err(self.sql())?;
        Ok(())
    }

    /// The latest `limit` audit entries, newest first.
    pub fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let mut stmt = self
            .db
            .prepare("SELECT id, at_ms, actor, action, target, detail FROM audit ORDER BY id DESC LIMIT ?1")
            .map_err(self.sql())?;
        let rows = stmt
            .query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                Ok(AuditEntry {
                    id: r.get(0)?,
                    at: rfc3339(r.get(1)?),
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    detail: r.get(5)?,
                })
            })
            .map_err(self.sql())?;
        rows.collect::<Result<_, _>>().map_err(self.sql())
    }
}
