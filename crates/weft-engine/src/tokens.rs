//! A connection's tokens over their lifetime: the current access token, refreshed ahead of
//! expiry or after the provider rejects it, with exactly one refresh in flight per connection
//! across every Weft process.
//!
//! The rules that keep a rotating refresh token from ever being lost:
//! - a refresh happens only under the connection's refresh lock, after reading the stored tokens
//!   again: whoever waited for the lock usually finds a fresh token there and makes no call. With
//!   a file store the lock is a lock file (an OS lock, released when the process ends however it
//!   ends); with the store on PostgreSQL it is an advisory lock in that database, so it holds
//!   across machines, taken only for the refresh and released by the server when the holding
//!   connection ends (its process killed too);
//! - the new tokens are sealed in the store before the new access token is used;
//! - before a refresh grant leaves, its intent (when, by which process on which machine; no
//!   token) is sealed in the token record, and the write of the new tokens removes it. A keeper
//!   that finds an intent for the refresh token it is about to send knows an earlier refresh was
//!   cut off after sending (a process killed between the provider's answer and the sealing, or
//!   an answer lost): it sends the same token again (the provider's grace period), counts it in
//!   the record (`refresh_recoveries`) and in [`TokenStats::recoveries`], and says so through
//!   the notice hook ([`set_notice_hook`]); if the provider then refuses, the error says the
//!   refresh of that time was cut off and the grace period has passed. An answer the provider
//!   gave without handling the grant (an error with a status) puts the intent back as it was;
//!   one that never came leaves it;
//! - a refresh whose answer is lost is retried with the same refresh token only where the spec
//!   says that is safe: tokens that do not rotate (`refresh.rotates = false`), or rotating ones
//!   within the provider's `refresh.grace`; without a grace the old token is dead once the
//!   provider answered, and resending it would only earn `invalid_grant`;
//! - a refresh token unused for `refresh.idle-lifetime` lapses: [`use_by_ms`] says by when the
//!   connection must be used, and `weft connection list` shows it;
//! - `invalid_grant` marks the connection "needs authorization" (the tokens are kept) and every
//!   later use says which command to run.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weft_core::model::Refresh;

use crate::limits::Clock;
use crate::lock;
use crate::oauth::{OAuthApp, OAuthError, RefreshIntent, TokenSet};
use crate::secrets::{Secret, SecretError, SecretStore};

/// Where keepers tell what the person running Weft should know (a cut-off refresh recovered);
/// set once by the program (the CLI prints it as a warning), nothing otherwise.
static NOTICES: std::sync::OnceLock<NoticeHook> = std::sync::OnceLock::new();

/// What [`set_notice_hook`] keeps.
type NoticeHook = Box<dyn Fn(&str) + Send + Sync>;

/// Sets where every keeper of this process tells its notices (once; later calls are ignored).
pub fn set_notice_hook(hook: impl Fn(&str) + Send + Sync + 'static) {
    let _ = NOTICES.set(Box::new(hook));
}

/// A time for messages: RFC 3339 in UTC, to the second.
fn shown_time(ms: u64) -> String {
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| format!("{ms} ms after the Unix epoch"))
}

/// Attempts at a refresh whose answer does not arrive.
const REFRESH_ATTEMPTS: u32 = 4;

/// Errors of the token lifecycle; none carries a token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The connection was never authorized.
    #[error(
        "connection `{connection}` has no credentials yet; run `weft connection authorize {connection}`"
    )]
    NotAuthorized {
        /// Connection name.
        connection: String,
    },
    /// The provider refused the grant for good.
    #[error(
        "connection `{connection}` needs authorization again ({reason}); run `weft connection authorize {connection}`"
    )]
    NeedsAuthorization {
        /// Connection name.
        connection: String,
        /// What the provider said.
        reason: String,
    },
    /// A pasted token the provider no longer accepts (it cannot be refreshed).
    #[error(
        "the provider refused the token of connection `{connection}`; paste a new one with `weft connection edit {connection} --token-stdin`"
    )]
    TokenRefused {
        /// Connection name.
        connection: String,
    },
    /// The stored record is not tokens.
    #[error(
        "the stored credentials of connection `{connection}` are damaged; run `weft connection authorize {connection}`"
    )]
    Damaged {
        /// Connection name.
        connection: String,
    },
    /// Another process held the refresh lock longer than a refresh can take.
    #[error(
        "the refresh lock of `{connection}` stayed held: {source}. A refresh gives up within its timeout, so a live holder is stuck: stop it; the OS releases the lock when it ends"
    )]
    LockTimeout {
        /// Connection name.
        connection: String,
        /// Who holds it.
        #[source]
        source: crate::files::LockError,
    },
    /// Another worker of the fleet held the refresh lock longer than a refresh can take.
    #[error(
        "the refresh lock of `{connection}` stayed held: {holder}. A refresh gives up within its timeout, so a live holder is stuck: stop it; the server releases the lock when its connection ends"
    )]
    FleetLockTimeout {
        /// Connection name.
        connection: String,
        /// Who holds it, as the server says.
        holder: String,
    },
    /// The lock file could not be used.
    #[error(transparent)]
    Lock(crate::files::LockError),
    /// A refresh answer was lost and the spec says its tokens rotate without a grace period.
    #[error(
        "the answer to the token refresh of `{connection}` was lost ({reason}); its refresh tokens rotate without a grace period, so Weft does not resend the old one. Run `weft connection test {connection}` to try again; if it says the grant is gone, run `weft connection authorize {connection}`"
    )]
    RefreshLost {
        /// Connection name.
        connection: String,
        /// What happened to the answer.
        reason: String,
    },
    /// The credential store refused.
    #[error(transparent)]
    Store(#[from] SecretError),
    /// The token endpoint failed.
    #[error(transparent)]
    OAuth(#[from] OAuthError),
}

/// Counters of one keeper, for tests and run summaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenStats {
    /// Refresh grants this process sent (each retry counted).
    pub refresh_calls: u64,
    /// Times a refresh was needed and another process (or task) had already done it.
    pub found_fresh: u64,
    /// Refresh grants that sent a refresh token again after a refresh with it was cut off
    /// (killed, or its answer lost), by this keeper.
    pub recoveries: u64,
}

/// Whether a refresh token first sent at `started` may be sent again at `now` after its answer
/// was lost: always when tokens do not rotate, within the grace period when they do.
fn may_resend(refresh: Option<&Refresh>, started: u64, now: u64) -> bool {
    match refresh {
        None => true,
        Some(r) if !r.rotates => true,
        Some(r) => r
            .grace
            .is_some_and(|g| now.saturating_sub(started) < g.as_millis()),
    }
}

/// When `tokens` must be used by (Unix ms) before their refresh token lapses: unused for the
/// spec's `refresh.idle-lifetime` since they were obtained, or past its
/// `refresh.absolute-lifetime` since the consent, whichever comes first; `None` when it does
/// not lapse (or there is none).
pub fn use_by_ms(tokens: &TokenSet, refresh: Option<&Refresh>) -> Option<u64> {
    let refresh = refresh?;
    tokens.refresh_token.as_ref()?;
    let idle = refresh
        .idle_lifetime
        .map(|d| tokens.obtained_at_ms.saturating_add(d.as_millis()));
    let absolute = refresh
        .absolute_lifetime
        .map(|d| tokens.granted_at_ms.saturating_add(d.as_millis()));
    match (idle, absolute) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The longest warning ahead of a lapse: a five-year grant is not "lapsing soon" for a year.
const WARN_AT_MOST_MS: u64 = 30 * 86_400_000;

/// Whether `use_by` (from [`use_by_ms`]) is near enough at `now` to warn: within a quarter of
/// the shorter declared lifetime (at most 30 days), or past.
pub fn lapses_soon(use_by: u64, refresh: Option<&Refresh>, now: u64) -> bool {
    let quarter = refresh
        .map(|r| {
            [r.idle_lifetime, r.absolute_lifetime]
                .into_iter()
                .flatten()
                .map(|d| d.as_millis() / 4)
                .min()
                .unwrap_or(0)
        })
        .unwrap_or(0)
        .min(WARN_AT_MOST_MS);
    now.saturating_add(quarter) >= use_by
}

/// A connection's refresh lock, held until dropped.
#[derive(Debug)]
#[allow(dead_code)] // Held for its drop.
enum RefreshHold {
    File(crate::files::LockFile),
    Fleet(crate::secrets::AdvisoryHold),
}

/// The tokens of one connection.
pub struct TokenKeeper {
    connection: String,
    record: String,
    store: Mutex<SecretStore>,
    lock_path: PathBuf,
    app: Option<OAuthApp>,
    refresh: Option<Refresh>,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    current: Mutex<Option<TokenSet>>,
    gate: tokio::sync::Mutex<()>,
    stats: Mutex<TokenStats>,
    notices: Mutex<Vec<String>>,
}

impl std::fmt::Debug for TokenKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeeper")
            .field("connection", &self.connection)
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

impl TokenKeeper {
    /// The keeper of `connection`, whose tokens are record `record` of `store`. `app` is the
    /// OAuth client (absent for pasted tokens); `refresh` the spec's refresh rules.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        connection: &str,
        record: &str,
        store: SecretStore,
        app: Option<OAuthApp>,
        refresh: Option<Refresh>,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let safe: String = record
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let lock_path = store
            .path()
            .parent()
            .map(|d| d.join("locks"))
            .unwrap_or_else(|| PathBuf::from("locks"))
            .join(format!("{safe}.lock"));
        Self {
            connection: connection.to_owned(),
            record: record.to_owned(),
            store: Mutex::new(store),
            lock_path,
            app,
            refresh,
            http,
            clock,
            current: Mutex::new(None),
            gate: tokio::sync::Mutex::new(()),
            stats: Mutex::new(TokenStats::default()),
            notices: Mutex::new(Vec::new()),
        }
    }

    /// What this keeper has done so far.
    pub fn stats(&self) -> TokenStats {
        *lock(&self.stats)
    }

    /// The stored tokens, read again from disk.
    fn stored(&self) -> Result<TokenSet, TokenError> {
        let mut store = lock(&self.store);
        store.reload()?;
        let Some(secret) = store.get(&self.record)? else {
            return Err(TokenError::NotAuthorized {
                connection: self.connection.clone(),
            });
        };
        let tokens = TokenSet::from_sealed_json(&secret).ok_or_else(|| TokenError::Damaged {
            connection: self.connection.clone(),
        })?;
        if let Some(reason) = &tokens.needs_authorization {
            return Err(TokenError::NeedsAuthorization {
                connection: self.connection.clone(),
                reason: reason.clone(),
            });
        }
        Ok(tokens)
    }

    fn fresh(&self, tokens: &TokenSet) -> bool {
        let ahead = self.refresh.as_ref().map_or(0, |r| r.ahead.as_millis());
        match tokens.expires_at_ms {
            None => true,
            Some(at) => self.clock.now_ms().saturating_add(ahead) < at,
        }
    }

    /// An access token to use now: the current one, or a new one when it expires within the
    /// spec's `ahead` margin.
    pub async fn access_token(&self) -> Result<Secret, TokenError> {
        let current = lock(&self.current).clone();
        let tokens = match current {
            Some(t) => t,
            None => match self.stored() {
                Ok(t) => {
                    *lock(&self.current) = Some(t.clone());
                    t
                }
                // A client-credentials connection needs no consent: its first use gets a token.
                Err(TokenError::NotAuthorized { .. }) if self.machine() => {
                    return self.renew(&Secret::new(String::new())).await;
                }
                Err(e) => return Err(e),
            },
        };
        if self.fresh(&tokens) {
            return Ok(tokens.access_token);
        }
        self.renew(&tokens.access_token).await
    }

    /// The provider rejected `token` (expired early, clocks apart): a new access token, unless
    /// another task or process already has one.
    pub async fn rejected(&self, token: &Secret) -> Result<Secret, TokenError> {
        self.renew(token).await
    }

    fn machine(&self) -> bool {
        self.app
            .as_ref()
            .is_some_and(OAuthApp::is_client_credentials)
    }

    /// A new token from the client-credentials grant, sealed before use.
    async fn machine_token(&self, app: &OAuthApp) -> Result<Secret, TokenError> {
        lock(&self.stats).refresh_calls += 1;
        let tokens = app
            .client_credentials(&self.http, self.clock.now_ms())
            .await?;
        lock(&self.store).put(&self.record, &tokens.to_sealed_json())?;
        let access = tokens.access_token.clone();
        *lock(&self.current) = Some(tokens);
        Ok(access)
    }

    /// Replaces `stale` (the access token that expired or was rejected).
    async fn renew(&self, stale: &Secret) -> Result<Secret, TokenError> {
        let _gate = self.gate.lock().await;
        if let Some(t) = lock(&self.current).clone()
            && &t.access_token != stale
            && self.fresh(&t)
        {
            lock(&self.stats).found_fresh += 1;
            return Ok(t.access_token);
        }
        let _file = self.lock_file().await?;
        let stored = match (self.stored(), &self.app) {
            // Client credentials: no refresh token, a new grant replaces the token.
            (Err(TokenError::NotAuthorized { .. }), Some(app)) if app.is_client_credentials() => {
                return self.machine_token(app).await;
            }
            (stored, _) => stored?,
        };
        if let Some(app) = self.app.as_ref().filter(|a| a.is_client_credentials())
            && !(&stored.access_token != stale && self.fresh(&stored))
        {
            return self.machine_token(app).await;
        }
        if &stored.access_token != stale && self.fresh(&stored) {
            lock(&self.stats).found_fresh += 1;
            let access = stored.access_token.clone();
            *lock(&self.current) = Some(stored);
            return Ok(access);
        }
        let app = match &self.app {
            Some(app) if !stored.pasted => app,
            _ => {
                return Err(TokenError::TokenRefused {
                    connection: self.connection.clone(),
                });
            }
        };
        let Some(refresh_token) = stored.refresh_token.clone() else {
            return Err(self.mark(
                stored,
                "the provider no longer accepts the access token and issued no refresh token",
            )?);
        };
        let mut record = stored;
        let by = format!(
            "process {} on {}",
            std::process::id(),
            crate::fleet::hostname()
        );
        let mut attempt = 0;
        loop {
            attempt += 1;
            // The intent is sealed before the grant leaves: a refresh cut off after the provider
            // rotated the token is known to whoever sends this refresh token next.
            let before = record.refresh_intent.clone();
            match record.refresh_intent.as_mut() {
                Some(intent) => {
                    intent.resends += 1;
                    record.refresh_recoveries += 1;
                    let intent = intent.clone();
                    self.recovered(&intent);
                }
                None => {
                    record.refresh_intent = Some(RefreshIntent {
                        started_ms: self.clock.now_ms(),
                        by: by.clone(),
                        resends: 0,
                    });
                }
            }
            lock(&self.store).put(&self.record, &record.to_sealed_json())?;
            let started = record
                .refresh_intent
                .as_ref()
                .map_or_else(|| self.clock.now_ms(), |i| i.started_ms);
            lock(&self.stats).refresh_calls += 1;
            match app
                .refresh(&self.http, &refresh_token, self.clock.now_ms())
                .await
            {
                Ok(mut tokens) => {
                    // A refresh continues the same consent.
                    tokens.granted_at_ms = record.granted_at_ms;
                    tokens.refresh_recoveries = record.refresh_recoveries;
                    // Sealed before use, replacing the intent in the same write: a crash from
                    // here on leaves the new refresh token on disk.
                    lock(&self.store).put(&self.record, &tokens.to_sealed_json())?;
                    let access = tokens.access_token.clone();
                    *lock(&self.current) = Some(tokens);
                    return Ok(access);
                }
                Err(e) if e.is_invalid_grant() => {
                    let reason = match &record.refresh_intent {
                        Some(i) if i.resends > 0 => format!(
                            "the token refresh begun at {} by {} was cut off after it was sent, and the provider's grace period for its refresh token has passed: {e}",
                            shown_time(i.started_ms),
                            i.by
                        ),
                        _ => e.to_string(),
                    };
                    record.refresh_intent = None;
                    return Err(self.mark(record, &reason)?);
                }
                Err(e)
                    if e.is_transient()
                        && !may_resend(self.refresh.as_ref(), started, self.clock.now_ms()) =>
                {
                    return Err(TokenError::RefreshLost {
                        connection: self.connection.clone(),
                        reason: e.to_string(),
                    });
                }
                Err(e) if e.is_transient() && attempt < REFRESH_ATTEMPTS => {
                    // The answer may have been lost after the provider rotated the token; the
                    // same refresh token stays valid for the grace period, so try it again
                    // (the intent stays: the next send is a resend).
                    self.clock.wait(Duration::from_millis(250 << attempt)).await;
                }
                Err(e) if e.is_transient() => return Err(e.into()),
                Err(e) => {
                    // The provider answered without handling the grant: this send began
                    // nothing, so the record is as it was before it (a cut-off refresh found
                    // earlier is still one).
                    record.refresh_intent = before;
                    lock(&self.store).put(&self.record, &record.to_sealed_json())?;
                    return Err(e.into());
                }
            }
        }
    }

    /// Says that a cut-off refresh is being recovered: counted, and told to the notice hook.
    fn recovered(&self, intent: &RefreshIntent) {
        lock(&self.stats).recoveries += 1;
        let line = format!(
            "connection `{}`: the token refresh begun at {} by {} got no answer that was sealed; sending its refresh token again within the provider's grace period (resend {})",
            self.connection,
            shown_time(intent.started_ms),
            intent.by,
            intent.resends
        );
        if let Some(hook) = NOTICES.get() {
            hook(&line);
        }
        lock(&self.notices).push(line);
    }

    /// What this keeper told the notice hook so far (recoveries of cut-off refreshes).
    pub fn notices(&self) -> Vec<String> {
        lock(&self.notices).clone()
    }

    /// Records that the grant is gone, keeping the tokens, and returns the error to show.
    fn mark(&self, mut tokens: TokenSet, reason: &str) -> Result<TokenError, TokenError> {
        tokens.needs_authorization = Some(reason.to_owned());
        lock(&self.store).put(&self.record, &tokens.to_sealed_json())?;
        *lock(&self.current) = None;
        Ok(TokenError::NeedsAuthorization {
            connection: self.connection.clone(),
            reason: reason.to_owned(),
        })
    }

    /// The connection's refresh lock, waited for as long as the holder's refresh may take
    /// (every attempt times out, so a live holder lets go within this): the lock file, or with
    /// the store on PostgreSQL the advisory lock on the record in that database.
    async fn lock_file(&self) -> Result<RefreshHold, TokenError> {
        let per_attempt = self
            .app
            .as_ref()
            .map_or(Duration::from_secs(60), |a| a.timeout());
        let patience =
            (per_attempt + Duration::from_secs(5)) * REFRESH_ATTEMPTS + Duration::from_secs(10);
        let pool = lock(&self.store).postgres().cloned();
        if let Some(pool) = pool {
            return crate::secrets::AdvisoryHold::acquire_async(
                &pool,
                crate::secrets::REFRESH_LOCK,
                &self.record,
                patience,
            )
            .await
            .map(RefreshHold::Fleet)
            .map_err(|e| match e {
                crate::secrets::NotHeld::Busy(holder) => TokenError::FleetLockTimeout {
                    connection: self.connection.clone(),
                    holder,
                },
                crate::secrets::NotHeld::Failed(reason) => {
                    TokenError::Store(SecretError::Database {
                        action: "take the refresh lock of",
                        at: pool.shown().to_owned(),
                        reason,
                    })
                }
            });
        }
        crate::files::LockFile::acquire_async(&self.lock_path, patience)
            .await
            .map(RefreshHold::File)
            .map_err(|e| match e {
                e @ crate::files::LockError::Busy { .. } => TokenError::LockTimeout {
                    connection: self.connection.clone(),
                    source: e,
                },
                e => TokenError::Lock(e),
            })
    }
}
