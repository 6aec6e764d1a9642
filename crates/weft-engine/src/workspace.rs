//! Workspaces: where connections and OAuth clients are declared (`weft.toml`); flows sit beside
//! it in `flows/`.
//!
//! A *workspace* is a folder with a `weft.toml`, meant for version control: it never holds a
//! secret. Its secrets live in `.weft/credentials.json` beside it (ignored by git), sealed by
//! [`crate::secrets`]. The *user scope* is the same pair of files in the user's configuration
//! folder, for things that belong to a person rather than a project (M-Bridge's "local" versus
//! "global for account"). The master key file is per user.
//!
//! A `weft.toml` is changed under a lock (`.weft/weft.toml.lock`) on its content as it is on disk
//! at that moment: [`Workspace::save`] applies only the clients and connections this process
//! changed since it read the file, so a command that waited (for a browser consent, for a
//! confirmation) never erases what another command wrote meanwhile.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::files;
use crate::secrets::{Keyring, SecretError, SecretStore};

/// File name of a workspace.
pub const FILE_NAME: &str = "weft.toml";
/// Folder of a workspace's private, unversioned files.
pub const PRIVATE_DIR: &str = ".weft";
/// Environment variable overriding the user's configuration folder.
pub const CONFIG_DIR_VAR: &str = "WEFT_CONFIG_DIR";
/// Environment variable giving the program that prints the master key (words separated by
/// spaces; the user `weft.toml`'s `master-key-command` list takes arguments with spaces).
pub const MASTER_KEY_COMMAND_VAR: &str = "WEFT_MASTER_KEY_COMMAND";

const HEADER: &str = "# Weft workspace: OAuth clients and connections (flows are in flows/*.toml).\n# Meant for version control: it holds no secret. Secrets are sealed in .weft/credentials.json.\n\n";

/// Where a client or connection is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// In the project's `weft.toml`.
    Workspace,
    /// In the user's configuration folder.
    User,
}

impl Scope {
    /// The name shown to people.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Workspace => "workspace",
            Self::User => "user",
        }
    }
}

/// The content of a `weft.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct WorkspaceFile {
    /// Format version; 1.
    #[serde(default = "one")]
    pub version: u32,
    /// OAuth clients (an app registered at a provider) by name.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub clients: IndexMap<String, Client>,
    /// Connections by name.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub connections: IndexMap<String, Connection>,
    /// The program (and its arguments) whose standard output is the master key, run without a
    /// shell: a keychain or password manager. Only in the user scope's file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_key_command: Option<Vec<String>>,
    /// Where the workspace's state is kept: the SQLite file `.weft/state.db` unless this names
    /// a PostgreSQL database. Only in a workspace's file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateConfig>,
}

/// `[state]` of a workspace's `weft.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StateConfig {
    /// `postgres://USER@HOST:PORT/DATABASE[?sslmode=…]`, without a password: the password comes
    /// from `WEFT_STATE_URL` (which then replaces this URL) or from the credential store
    /// (`weft state password`).
    pub url: String,
}

/// Environment variable naming the state database (`postgres://…`, password included); it
/// replaces `[state] url`.
pub const STATE_URL_VAR: &str = "WEFT_STATE_URL";

/// The credential-store id of the state database's password.
pub const STATE_PASSWORD_ID: &str = "state:password";

/// A connection: a connector, the OAuth client it authorizes with, and how hard it may push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Connection {
    /// Connector id.
    pub connector: String,
    /// How it signs in: one of the methods its spec declares under `[auth]` (`oauth2`,
    /// `client-credentials`, `token`), chosen when it was created. Left out in a `weft.toml`
    /// written before connections recorded it: [`crate::connect::method`] then infers it from
    /// what the connection holds (a pasted token: `token`; otherwise its OAuth client's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<weft_core::model::AuthMethod>,
    /// Name of the OAuth client it authorizes with; none for a connection whose credentials
    /// are a pasted token (such as Kantata's personal token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Calls in flight at once (within the spec's range).
    pub concurrency: u32,
    /// Another connection whose concurrency limiter this one shares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub borrow_concurrency_from: Option<String>,
    /// Base URLs replacing the spec's, by host name (a sandbox, a proxy).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub hosts: std::collections::BTreeMap<String, String>,
    /// Values of the spec's connection fields, by field id: the fields that choose a host
    /// (QuickBooks' `environment`); a field left out takes its default. Never a secret.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub fields: std::collections::BTreeMap<String, String>,
    /// The tenants (organisations) this connection reaches, chosen at authorization.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<TenantRef>,
    /// The console user (`weft user list`) this connection belongs to: in `weft serve`, only
    /// they and administrators change, authorize or delete it. None: the workspace's own,
    /// managed by administrators. Only in a workspace's file (the user scope is one person's
    /// already); the credentials stay in the workspace's store either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl Connection {
    /// Who it belongs to, as people read it: `workspace`, or `NAME's`.
    pub fn owner_label(&self) -> String {
        match &self.owner {
            Some(name) => format!("{name}'s"),
            None => "workspace".to_owned(),
        }
    }
}

/// A tenant a connection was authorized for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TenantRef {
    /// The provider's tenant id.
    pub id: String,
    /// Its name when it was authorized.
    pub name: String,
}

fn one() -> u32 {
    1
}

/// An OAuth client: the app a person registered at a provider. Its secret is in the credential store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Client {
    /// Connector id (`kantata`, `xero`, …).
    pub connector: String,
    /// The client ID the provider issued (not a secret).
    pub client_id: String,
}

/// Errors of workspaces.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// No workspace here or above.
    #[error(
        "no {FILE_NAME} in {start} or any folder above it; create a workspace there with `weft init`"
    )]
    NotFound {
        /// Where the search started.
        start: PathBuf,
    },
    /// `weft init` where a workspace exists.
    #[error("{path} already exists; it is kept as it is")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The file does not parse.
    #[error("{path} is not a valid workspace file: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its line and column.
        reason: String,
    },
    /// No user configuration folder can be found.
    #[error("cannot find your configuration folder: set {CONFIG_DIR_VAR} or HOME")]
    NoConfigDir,
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
    /// The credential store refused.
    #[error(transparent)]
    Secrets(#[from] SecretError),
    /// Another process kept `weft.toml` locked.
    #[error("{0}")]
    Lock(String),
    /// The state database refused.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

/// A loaded workspace (or the user scope).
#[derive(Debug)]
pub struct Workspace {
    scope: Scope,
    dir: PathBuf,
    /// The declarations.
    pub file: WorkspaceFile,
    /// The declarations as read from disk, to tell this process's changes from others'.
    loaded: WorkspaceFile,
}

/// The user's configuration folder: `WEFT_CONFIG_DIR`, else `$XDG_CONFIG_HOME/weft`, else `~/.config/weft`.
pub fn user_dir() -> Result<PathBuf, WorkspaceError> {
    if let Some(dir) = std::env::var_os(CONFIG_DIR_VAR).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("weft"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|h| PathBuf::from(h).join(".config/weft"))
        .ok_or(WorkspaceError::NoConfigDir)
}

/// Creates a workspace in `dir`: `weft.toml`, and `.weft/` in `.gitignore`. Refuses to overwrite.
pub fn init(dir: &Path) -> Result<PathBuf, WorkspaceError> {
    fn io<'a>(
        action: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(std::io::Error) -> WorkspaceError + 'a {
        move |source| WorkspaceError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let path = dir.join(FILE_NAME);
    if path.exists() {
        return Err(WorkspaceError::Exists { path });
    }
    let file = WorkspaceFile {
        version: 1,
        ..WorkspaceFile::default()
    };
    let mut ws = Workspace {
        scope: Scope::Workspace,
        dir: dir.to_path_buf(),
        loaded: file.clone(),
        file,
    };
    ws.save()?;
    let ignore = dir.join(".gitignore");
    let current = std::fs::read_to_string(&ignore).unwrap_or_default();
    if !current
        .lines()
        .any(|l| l.trim() == ".weft/" || l.trim() == ".weft")
    {
        let mut text = current;
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("# Weft's sealed credentials and local state\n.weft/\n");
        std::fs::write(&ignore, text).map_err(io("write", &ignore))?;
    }
    Ok(path)
}

impl Workspace {
    /// The workspace holding `start` (it or a folder above it).
    pub fn find(start: &Path) -> Result<Self, WorkspaceError> {
        let mut dir = Some(start);
        while let Some(d) = dir {
            if d.join(FILE_NAME).is_file() {
                return Self::load(Scope::Workspace, d);
            }
            dir = d.parent();
        }
        Err(WorkspaceError::NotFound {
            start: start.to_path_buf(),
        })
    }

    /// The user scope (empty when its file does not exist yet).
    pub fn user() -> Result<Self, WorkspaceError> {
        let dir = user_dir()?;
        if dir.join(FILE_NAME).is_file() {
            Self::load(Scope::User, &dir)
        } else {
            let file = WorkspaceFile {
                version: 1,
                ..WorkspaceFile::default()
            };
            Ok(Self {
                scope: Scope::User,
                dir,
                loaded: file.clone(),
                file,
            })
        }
    }

    fn load(scope: Scope, dir: &Path) -> Result<Self, WorkspaceError> {
        let file = Self::read(scope, &dir.join(FILE_NAME))?.unwrap_or_default();
        Ok(Self {
            scope,
            dir: dir.to_path_buf(),
            loaded: file.clone(),
            file,
        })
    }

    /// The file at `path` (`None` when it does not exist), checked.
    fn read(scope: Scope, path: &Path) -> Result<Option<WorkspaceFile>, WorkspaceError> {
        let path = path.to_path_buf();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(WorkspaceError::Io {
                    action: "read",
                    path,
                    source,
                });
            }
        };
        let file: WorkspaceFile = toml::from_str(&text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    let at = weft_core::diagnostic::line_col(&text, s.start);
                    format!(" (line {}, column {})", at.line, at.column)
                })
                .unwrap_or_default();
            WorkspaceError::Invalid {
                path: path.clone(),
                reason: format!("{}{at}", e.message().trim()),
            }
        })?;
        // The rules the CLI applies to what it writes hold for a file edited by hand too.
        let names = file.clients.keys().map(|n| ("clients", "client", n)).chain(
            file.connections
                .keys()
                .map(|n| ("connections", "connection", n)),
        );
        for (table, kind, name) in names {
            if let Err(reason) = check_name(kind, name) {
                return Err(WorkspaceError::Invalid {
                    reason: format!("{reason} (line {})", key_line(&text, &[table, name])),
                    path,
                });
            }
        }
        for (name, c) in &file.connections {
            let Some(owner) = &c.owner else { continue };
            let at = key_line(&text, &["connections", name, "owner"]);
            let reason = if scope == Scope::User {
                format!(
                    "connection `{name}`: `owner` belongs to a workspace's connections (a console user of `weft serve`); a connection in your user scope is yours already, so remove the line (line {at})"
                )
            } else if let Err(why) = check_user_name(owner) {
                format!(
                    "connection `{name}`: owner: {why}; name a console user (see `weft user list`) or remove the line to make it the workspace's (line {at})"
                )
            } else {
                continue;
            };
            return Err(WorkspaceError::Invalid { reason, path });
        }
        if let Some((name, _)) = file.connections.iter().find(|(_, c)| c.concurrency == 0) {
            return Err(WorkspaceError::Invalid {
                reason: format!(
                    "connection `{name}`: concurrency 0 would never call; use 1 or more (line {})",
                    key_line(&text, &["connections", name, "concurrency"])
                ),
                path,
            });
        }
        if file.version != 1 {
            return Err(WorkspaceError::Invalid {
                path,
                reason: format!(
                    "version {} is newer than this Weft understands",
                    file.version
                ),
            });
        }
        if let Some(state) = &file.state {
            let at = key_line(&text, &["state", "url"]);
            let reason = if scope == Scope::User {
                format!(
                    "`[state]` belongs in a workspace's {FILE_NAME} (the state is a workspace's), not in your user one; move it (line {at})"
                )
            } else if let Err(why) = crate::state::PgTarget::parse(&state.url) {
                format!("[state] url: {why} (line {at})")
            } else if url::Url::parse(&state.url).is_ok_and(|u| u.password().is_some()) {
                format!(
                    "[state] url holds a password, and {FILE_NAME} is meant for version control: remove it from the URL, then seal it with `weft state password` or give the whole URL in {STATE_URL_VAR} (line {at})"
                )
            } else {
                String::new()
            };
            if !reason.is_empty() {
                return Err(WorkspaceError::Invalid { path, reason });
            }
        }
        if scope == Scope::Workspace && file.master_key_command.is_some() {
            // A project file must never make Weft run a program: cloning a repository would
            // be enough to run anything.
            return Err(WorkspaceError::Invalid {
                path,
                reason: format!(
                    "`master-key-command` belongs in your user {FILE_NAME} (in {}), not in a project's",
                    user_dir().map_or_else(
                        |_| "your configuration folder".to_owned(),
                        |d| d.display().to_string()
                    )
                ),
            });
        }
        Ok(Some(file))
    }

    /// Where the value at `keys` (such as `["connections", "xero", "concurrency"]`) is written
    /// in this scope's `weft.toml`: `path:line`, or the path alone when it is not there.
    pub fn locate(&self, keys: &[&str]) -> String {
        let path = self.dir.join(FILE_NAME);
        match std::fs::read_to_string(&path) {
            Ok(text) => format!("{}:{}", path.display(), key_line(&text, keys)),
            Err(_) => path.display().to_string(),
        }
    }

    /// Which scope this is.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The folder holding `weft.toml`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes this process's changes to `weft.toml`: under the file's lock, the file is read
    /// again and only the clients and connections changed since it was loaded are applied to
    /// it (added, replaced or removed), so another process's changes in between are kept.
    /// `self.file` then holds the merged result.
    pub fn save(&mut self) -> Result<(), WorkspaceError> {
        let path = self.dir.join(FILE_NAME);
        let lock_path = match self.scope {
            Scope::Workspace => self.dir.join(PRIVATE_DIR).join("weft.toml.lock"),
            Scope::User => self.dir.join("weft.toml.lock"),
        };
        let _lock = files::LockFile::acquire(&lock_path, std::time::Duration::from_secs(30))
            .map_err(|e| WorkspaceError::Lock(e.to_string()))?;
        let mut merged = Self::read(self.scope, &path)?.unwrap_or_else(|| self.loaded.clone());
        merge(
            &mut merged.clients,
            &self.loaded.clients,
            &self.file.clients,
        );
        merge(
            &mut merged.connections,
            &self.loaded.connections,
            &self.file.connections,
        );
        if self.file.master_key_command != self.loaded.master_key_command {
            merged.master_key_command = self.file.master_key_command.clone();
        }
        let body = toml::to_string_pretty(&merged).map_err(|e| WorkspaceError::Invalid {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        files::write_atomic(&path, format!("{HEADER}{body}").as_bytes(), false).map_err(
            |source| WorkspaceError::Io {
                action: "write",
                path,
                source,
            },
        )?;
        self.loaded = merged.clone();
        self.file = merged;
        Ok(())
    }

    /// Opens this scope's credential store with the user's master keys: in the workspace's
    /// PostgreSQL database when its state is there (shared by every worker of a fleet; the state's
    /// own password stays in the local file), else the local file.
    pub fn secrets(&self) -> Result<SecretStore, WorkspaceError> {
        let local = self.local_secrets()?;
        if self.scope != Scope::Workspace {
            return Ok(local);
        }
        if self.state_url()?.is_none() {
            return Ok(local);
        }
        // The state is opened (made or migrated) first: the credential tables go into a
        // database that holds Weft's state, never into an empty one it would then refuse.
        let state = self.open_state()?;
        let Some(pool) = state.postgres() else {
            return Ok(local);
        };
        let mut store = SecretStore::open_postgres(pool, local)?;
        // A database the workspace was pointed at without `weft state migrate`: the first
        // process to open it brings the local file's credentials along.
        store.adopt_local()?;
        Ok(store)
    }

    /// Opens this scope's local credential file ([`Workspace::credentials_path`]), whichever
    /// backend holds the rest: the state's password is there, and `weft state migrate` copies
    /// from it.
    pub fn local_secrets(&self) -> Result<SecretStore, WorkspaceError> {
        Ok(SecretStore::open(&self.credentials_path(), keyring()?)?)
    }

    /// Where connection `name` stands: `not authorized` (no tokens yet), `damaged credentials`,
    /// `needs authorization` (the provider refused its refresh token), `lapsed unused`, `lapses
    /// soon` or `authorized`; and, when `refresh` (the connector's refresh-token rules) says
    /// refresh tokens lapse unused, the time it must be used by (`YYYY-MM-DDTHH:MMZ`).
    pub fn connection_status(
        &self,
        name: &str,
        refresh: Option<&weft_core::model::Refresh>,
    ) -> Result<(&'static str, Option<String>), WorkspaceError> {
        use crate::limits::Clock as _;
        let Some(stored) = self.secrets()?.get(&connection_tokens_id(name))? else {
            return Ok(("not authorized", None));
        };
        let Some(tokens) = crate::oauth::TokenSet::from_sealed_json(&stored) else {
            return Ok(("damaged credentials", None));
        };
        if tokens.needs_authorization.is_some() {
            return Ok(("needs authorization", None));
        }
        let Some(use_by) = crate::tokens::use_by_ms(&tokens, refresh) else {
            return Ok(("authorized", None));
        };
        let now = crate::limits::SystemClock.now_ms();
        let at = jiff::Timestamp::from_millisecond(i64::try_from(use_by).unwrap_or(i64::MAX))
            .map_or_else(
                |_| use_by.to_string(),
                |t| t.strftime("%Y-%m-%dT%H:%MZ").to_string(),
            );
        // Past a grant's absolute lifetime the consent itself has run out, however it was used.
        let absolute = refresh
            .and_then(|r| r.absolute_lifetime)
            .is_some_and(|d| tokens.granted_at_ms.saturating_add(d.as_millis()) == use_by);
        let state = if now >= use_by && absolute {
            "grant expired"
        } else if now >= use_by {
            "lapsed unused"
        } else if crate::tokens::lapses_soon(use_by, refresh, now) {
            "lapses soon"
        } else {
            "authorized"
        };
        Ok((state, Some(at)))
    }

    /// How connection `name`'s token refreshes have gone: a refresh begun and not answered yet
    /// (in flight now, or cut off; the next refresh sends its token again) and how many cut-off
    /// refreshes were recovered since the consent. `None` without sealed tokens.
    pub fn connection_refreshes(
        &self,
        name: &str,
    ) -> Result<Option<(Option<crate::oauth::RefreshIntent>, u64)>, WorkspaceError> {
        let Some(stored) = self.secrets()?.get(&connection_tokens_id(name))? else {
            return Ok(None);
        };
        Ok(crate::oauth::TokenSet::from_sealed_json(&stored)
            .map(|t| (t.refresh_intent, t.refresh_recoveries)))
    }

    /// The workspace's flows (`flows/*.toml`) that use a connection named `connection`, by
    /// an alias's `connection = "…"` or by the alias itself. Read leniently, without loading
    /// the flows' tables: a file that is not TOML names nothing.
    pub fn flows_naming(&self, connection: &str) -> Vec<String> {
        crate::flows::names(&self.dir)
            .into_iter()
            .filter(|flow| {
                let Ok(text) = std::fs::read_to_string(crate::flows::path(&self.dir, flow)) else {
                    return false;
                };
                let Ok(table) = text.parse::<toml::Table>() else {
                    return false;
                };
                table
                    .get("connections")
                    .and_then(toml::Value::as_table)
                    .is_some_and(|aliases| {
                        aliases.iter().any(|(alias, c)| {
                            c.get("connection")
                                .and_then(toml::Value::as_str)
                                .unwrap_or(alias)
                                == connection
                        })
                    })
            })
            .collect()
    }

    /// Where the workspace's state database is (`.weft/state.db`: cursors, the id ledger, runs
    /// and the error queue; see [`crate::state`]). State belongs to a workspace, never to the
    /// user scope.
    pub fn state_path(&self) -> PathBuf {
        self.dir.join(PRIVATE_DIR).join("state.db")
    }

    /// The PostgreSQL URL of the workspace's state, with its password, and where it came from
    /// (`WEFT_STATE_URL`, or `weft.toml:LINE`); `None` when the state is the SQLite file.
    /// `[state] url` takes its password from the credential store when it has one.
    pub fn state_url(&self) -> Result<Option<(String, String)>, WorkspaceError> {
        if let Ok(url) = std::env::var(STATE_URL_VAR)
            && !url.trim().is_empty()
        {
            return Ok(Some((url, STATE_URL_VAR.to_owned())));
        }
        let Some(state) = &self.file.state else {
            return Ok(None);
        };
        let place = self.locate(&["state", "url"]);
        Ok(Some((self.with_state_password(&state.url)?, place)))
    }

    /// `url` with the state's password when it has none: `WEFT_STATE_URL`'s, else the one
    /// sealed by `weft state password`; unchanged otherwise.
    pub fn with_state_password(&self, url: &str) -> Result<String, WorkspaceError> {
        let Ok(mut parsed) = url::Url::parse(url) else {
            return Ok(url.to_owned());
        };
        if parsed.password().is_some() {
            return Ok(url.to_owned());
        }
        let from_env = std::env::var(STATE_URL_VAR)
            .ok()
            .and_then(|e| url::Url::parse(&e).ok())
            .and_then(|e| e.password().map(str::to_owned));
        let password = match from_env {
            Some(p) => Some(crate::secrets::Secret::new(p)),
            None if self.credentials_path().exists() => {
                self.local_secrets()?.get(STATE_PASSWORD_ID)?
            }
            None => None,
        };
        match password {
            Some(p) if parsed.set_password(Some(p.expose())).is_ok() => Ok(parsed.to_string()),
            _ => Ok(url.to_owned()),
        }
    }

    /// Opens the workspace's state: the PostgreSQL database [`Workspace::state_url`] names, or
    /// else the SQLite file at [`Workspace::state_path`]. An unusable URL's error says where it
    /// was given.
    pub fn open_state(&self) -> Result<crate::state::State, WorkspaceError> {
        match self.state_url()? {
            None => Ok(crate::state::State::open(&self.state_path())?),
            Some((url, place)) => crate::state::State::open_postgres(&url, &self.state_path())
                .map_err(|e| match e {
                    crate::state::StateError::Url { reason } => crate::state::StateError::Url {
                        reason: format!("{reason} (given in {place})"),
                    }
                    .into(),
                    other => other.into(),
                }),
        }
    }

    /// The folder of this scope's private, unversioned files (`.weft/` of a workspace; the
    /// configuration folder itself for the user scope).
    pub fn private_dir(&self) -> PathBuf {
        match self.scope {
            Scope::Workspace => self.dir.join(PRIVATE_DIR),
            Scope::User => self.dir.clone(),
        }
    }

    /// Where the concurrency pool lent by connection `name` keeps its slots.
    pub fn pool_dir(&self, name: &str) -> PathBuf {
        self.private_dir().join("pools").join(name)
    }

    /// Where this scope's sealed credentials are.
    pub fn credentials_path(&self) -> PathBuf {
        match self.scope {
            Scope::Workspace => self.dir.join(PRIVATE_DIR).join("credentials.json"),
            Scope::User => self.dir.join("credentials.json"),
        }
    }
}

/// Applies to `disk` the entries that changed from `before` to `after`.
fn merge<T: Clone + PartialEq>(
    disk: &mut IndexMap<String, T>,
    before: &IndexMap<String, T>,
    after: &IndexMap<String, T>,
) {
    for (name, value) in after {
        if before.get(name) != Some(value) {
            disk.insert(name.clone(), value.clone());
        }
    }
    for name in before.keys() {
        if !after.contains_key(name) {
            disk.shift_remove(name);
        }
    }
}

/// The user's master keys: `WEFT_MASTER_KEY`, else the output of the master-key command
/// (`WEFT_MASTER_KEY_COMMAND`, else `master-key-command` in the user `weft.toml`), else the key
/// file `master.key` in the user's configuration folder.
pub fn keyring() -> Result<Keyring, WorkspaceError> {
    let dir = user_dir()?;
    let command = match std::env::var(MASTER_KEY_COMMAND_VAR) {
        Ok(text) if !text.trim().is_empty() => {
            Some(text.split_whitespace().map(str::to_owned).collect())
        }
        _ => Workspace::user()?.file.master_key_command,
    };
    Ok(Keyring::load(&dir.join("master.key"), command.as_deref())?)
}

/// Checks the name of a client or connection (`kind`): not blank, no spaces around it, no
/// control characters. The message says what is wrong.
pub fn check_name(kind: &str, name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err(format!("a {kind} name cannot be empty or only spaces"));
    }
    if name.trim() != name {
        return Err(format!(
            "the {kind} name `{name}` starts or ends with spaces; remove them"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("the {kind} name {name:?} holds control characters"));
    }
    Ok(())
}

/// Checks a console user name (`weft user add`, a connection's `owner`): 1 to 64 letters,
/// digits, `.`, `_`, `-` or `@`. The message says what is wrong.
pub fn check_user_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.chars().count() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "user name {name:?}: use 1 to 64 letters, digits, `.`, `_`, `-` or `@`, with no spaces"
        ))
    }
}

impl WorkspaceFile {
    /// The connections console user `user` owns, in file order.
    pub fn connections_owned_by(&self, user: &str) -> Vec<&str> {
        self.connections
            .iter()
            .filter(|(_, c)| c.owner.as_deref() == Some(user))
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

/// The line of the deepest of `keys` found in `text` (1 when the file does not parse).
fn key_line(text: &str, keys: &[&str]) -> usize {
    let Ok(root) = toml::de::DeTable::parse(text) else {
        return 1;
    };
    let mut table = root.get_ref();
    let mut offset = 0;
    for key in keys {
        let Some((name, value)) = table.get_key_value(*key) else {
            break;
        };
        offset = name.span().start;
        match value.get_ref() {
            toml::de::DeValue::Table(inner) => table = inner,
            _ => break,
        }
    }
    weft_core::diagnostic::line_col(text, offset).line
}

/// The credential-store id of a client's secret.
pub fn client_secret_id(name: &str) -> String {
    format!("client:{name}:secret")
}

/// The credential-store id of a connection's tokens.
pub fn connection_tokens_id(name: &str) -> String {
    format!("connection:{name}:tokens")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: &str) -> Client {
        Client {
            connector: "acme".to_owned(),
            client_id: id.to_owned(),
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weft-ws-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    const OWNED: &str =
        "version = 1\n\n[connections.books]\nconnector = \"acme\"\nconcurrency = 5\n";

    #[test]
    fn an_owner_is_read_kept_on_save_and_listed() {
        let dir = scratch("owner-ok");
        std::fs::write(
            dir.join(FILE_NAME),
            format!(
                "{OWNED}owner = \"bob.smith@example\"\n\n[connections.shared]\nconnector = \"acme\"\nconcurrency = 2\n"
            ),
        )
        .unwrap();
        let mut ws = Workspace::find(&dir).unwrap();
        let books = &ws.file.connections["books"];
        assert_eq!(books.owner.as_deref(), Some("bob.smith@example"));
        assert_eq!(books.owner_label(), "bob.smith@example's");
        assert_eq!(ws.file.connections["shared"].owner, None);
        assert_eq!(ws.file.connections["shared"].owner_label(), "workspace");
        assert_eq!(ws.file.connections_owned_by("bob.smith@example"), ["books"]);
        assert!(ws.file.connections_owned_by("alice").is_empty());
        // Transferred to the workspace, then to someone else: written as the key or not at all.
        ws.file.connections.get_mut("books").unwrap().owner = None;
        ws.save().unwrap();
        let text = std::fs::read_to_string(dir.join(FILE_NAME)).unwrap();
        assert!(!text.contains("owner"), "{text}");
        ws.file.connections.get_mut("shared").unwrap().owner = Some("carol".into());
        ws.save().unwrap();
        let again = Workspace::find(&dir).unwrap();
        assert_eq!(
            again.file.connections["shared"].owner.as_deref(),
            Some("carol")
        );
        assert_eq!(again.file.connections["books"].owner, None);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_bad_owner_is_refused_at_its_line() {
        for (owner, expect) in [
            ("\"bob smith\"", "\"bob smith\": use 1 to 64 letters"),
            ("\"\"", "\"\": use 1 to 64 letters"),
            (
                &format!("\"{}\"", "a".repeat(65)) as &str,
                "use 1 to 64 letters",
            ),
            ("\"tab\\tbed\"", "use 1 to 64 letters"),
        ] {
            let dir = scratch("owner-bad");
            std::fs::write(dir.join(FILE_NAME), format!("{OWNED}owner = {owner}\n")).unwrap();
            let err = Workspace::find(&dir).unwrap_err().to_string();
            assert!(
                err.contains("connection `books`: owner: user name")
                    && err.contains(expect)
                    && err.contains("`weft user list`")
                    && err.ends_with("(line 6)"),
                "{owner}: {err}"
            );
            std::fs::remove_dir_all(&dir).ok();
        }
        // Not a string at all: the parser's own error, located.
        let dir = scratch("owner-type");
        std::fs::write(dir.join(FILE_NAME), format!("{OWNED}owner = 7\n")).unwrap();
        let err = Workspace::find(&dir).unwrap_err().to_string();
        assert!(err.contains("line 6"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn an_owner_in_the_user_scope_is_refused() {
        let dir = scratch("owner-user");
        std::fs::write(dir.join(FILE_NAME), format!("{OWNED}owner = \"bob\"\n")).unwrap();
        let err = Workspace::load(Scope::User, &dir).unwrap_err().to_string();
        assert!(
            err.contains("`owner` belongs to a workspace's connections")
                && err.ends_with("(line 6)"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_flows_naming_a_connection_are_found_by_alias_or_by_name() {
        let dir = scratch("flows-naming");
        init(&dir).unwrap();
        std::fs::create_dir_all(dir.join("flows")).unwrap();
        for (flow, text) in [
            ("a", "[connections.acme]\nconnector = \"acme\"\n"),
            (
                "b",
                "[connections.books]\nconnector = \"acme\"\nconnection = \"ledger\"\n",
            ),
            ("c", "this is not TOML ["),
            (
                "d",
                "[connections.ledger]\nconnector = \"x\"\nconnection = \"other\"\n",
            ),
        ] {
            std::fs::write(dir.join("flows").join(format!("{flow}.toml")), text).unwrap();
        }
        let ws = Workspace::find(&dir).unwrap();
        assert_eq!(ws.flows_naming("acme"), ["a"]);
        assert_eq!(ws.flows_naming("ledger"), ["b"], "d renames its alias");
        assert_eq!(ws.flows_naming("other"), ["d"]);
        assert!(ws.flows_naming("books").is_empty());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn user_names_follow_one_rule() {
        for good in ["alice", "bob.smith@example", "Zoë_2-x", &"a".repeat(64)] {
            assert!(check_user_name(good).is_ok(), "{good}");
        }
        for bad in ["", " alice", "a b", "a/b", "a\u{7}", &"a".repeat(65)] {
            assert!(check_user_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_save_after_a_long_wait_keeps_what_another_command_wrote_meanwhile() {
        let dir = std::env::temp_dir().join(format!("weft-ws-merge-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        init(&dir).unwrap();
        let mut first = Workspace::find(&dir).unwrap();
        first.file.clients.insert("a".to_owned(), client("A"));
        first.save().unwrap();
        // `connection authorize` read the file, then waited for the browser…
        let mut waiting = Workspace::find(&dir).unwrap();
        // …while `client add` wrote another client and `client edit` changed `a`.
        let mut other = Workspace::find(&dir).unwrap();
        other.file.clients.insert("b".to_owned(), client("B"));
        other.file.clients.insert("a".to_owned(), client("A2"));
        other.save().unwrap();
        waiting.file.clients.insert("c".to_owned(), client("C"));
        waiting.save().unwrap();
        let on_disk = Workspace::find(&dir).unwrap().file;
        assert_eq!(on_disk.clients["b"], client("B"), "kept");
        assert_eq!(on_disk.clients["a"], client("A2"), "not reverted");
        assert_eq!(on_disk.clients["c"], client("C"));
        assert_eq!(waiting.file, on_disk);
        // A removal is a change too.
        waiting.file.clients.shift_remove("b");
        waiting.save().unwrap();
        assert!(
            !Workspace::find(&dir)
                .unwrap()
                .file
                .clients
                .contains_key("b")
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
