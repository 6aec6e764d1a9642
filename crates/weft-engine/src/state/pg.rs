//! The PostgreSQL backend of the state: a pool of connections (deadpool-postgres over
//! tokio-postgres, TLS by rustls) on a runtime of its own.
//!
//! The state's API is synchronous and is called from async engine code, so the backend never
//! blocks on a future in the caller's thread: it owns a small multi-threaded tokio runtime,
//! sends each statement to it and waits for the answer on a channel, at most [`CALL_TIMEOUT`]
//! (the statement itself is cancelled at that time too). A connection that failed mid-way or
//! timed out is taken out of the pool instead of being handed to the next caller; a closed
//! connection is replaced at the next checkout. Other parts of Weft (token refresh, and later
//! the queue and the shared budgets) borrow the same pool through [`PgPool`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use super::sql::{Fail, Row, Tx, Value, dollar_placeholders};

/// The longest a statement (or a checkout from the pool) may take before the call fails.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long connecting to the server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections in the pool of one process.
const POOL_SIZE: usize = 16;

/// A PostgreSQL failure, before it is named with the server and the action.
#[derive(Debug)]
pub(crate) enum PgFail {
    /// No answer within [`CALL_TIMEOUT`].
    Timeout,
    /// The connection could not be made or was lost.
    Connect(String),
    /// The server refused the statement, or the connection broke during it.
    Server(String),
}

impl PgFail {
    /// The failure in words, as [`PgPool::run`] gives it.
    pub(crate) fn text(self) -> String {
        match self {
            PgFail::Timeout => format!("no answer within {}s", CALL_TIMEOUT.as_secs()),
            PgFail::Connect(m) | PgFail::Server(m) => m,
        }
    }

    pub(crate) fn from_pg(e: &tokio_postgres::Error) -> Self {
        // A closed connection, a connection exception (class 08) or the server ending the
        // session (57P01-57P03: shut down, crashed, not accepting connections yet).
        let ended = e.as_db_error().is_some_and(|db| {
            let code = db.code().code();
            code.starts_with("08") || code.starts_with("57P")
        });
        if e.is_closed() || ended {
            return Self::Connect(describe(e));
        }
        Self::Server(describe(e))
    }
}

/// Why the pool gave no connection, in words (the server's reason, not the pool's wrapper).
fn pool_fail(e: deadpool_postgres::PoolError) -> PgFail {
    match e {
        deadpool_postgres::PoolError::Timeout(_) => PgFail::Timeout,
        deadpool_postgres::PoolError::Backend(e) => PgFail::Connect(describe(&e)),
        other => PgFail::Connect(other.to_string()),
    }
}

/// A driver error in words: the server's message (with its detail) when it sent one.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_owned(),
        },
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

/// How the connection is protected, by `sslmode` (libpq's meanings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, the certificate not checked (libpq's default).
    Prefer,
    /// TLS always, the certificate not checked.
    Require,
    /// TLS always, the certificate checked against trusted roots, not the host name.
    VerifyCa,
    /// TLS always, the certificate and the host name checked.
    VerifyFull,
}

/// A parsed `postgres://` state URL: the driver's configuration, its TLS mode, and the URL
/// without its password (what messages show).
#[derive(Clone)]
pub struct PgTarget {
    config: tokio_postgres::Config,
    tls: TlsMode,
    root_cert: Option<std::path::PathBuf>,
    shown: String,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("url", &self.shown)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl PgTarget {
    /// Parses a state URL (`postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=…]`). The
    /// error never repeats the URL (it may hold a password).
    pub fn parse(url: &str) -> Result<Self, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("it is not a URL ({e})"))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(format!(
                "its scheme is `{}`; a state URL starts with postgres://",
                parsed.scheme()
            ));
        }
        if parsed.host_str().is_none_or(str::is_empty)
            && !parsed.query_pairs().any(|(k, _)| k == "host")
        {
            return Err("it names no server (postgres://USER@HOST:PORT/DATABASE)".into());
        }
        let mut tls = TlsMode::Prefer;
        let mut root_cert = None;
        let mut kept = parsed.clone();
        kept.set_query(None);
        let mut rest = Vec::new();
        for (key, value) in parsed.query_pairs() {
            match key.as_ref() {
                "sslmode" => {
                    tls = match value.as_ref() {
                        "disable" => TlsMode::Disable,
                        "prefer" | "allow" => TlsMode::Prefer,
                        "require" => TlsMode::Require,
                        "verify-ca" => TlsMode::VerifyCa,
                        "verify-full" => TlsMode::VerifyFull,
                        other => {
                            return Err(format!(
                                "sslmode `{other}` is unknown (disable, prefer, require, verify-ca or verify-full)"
                            ));
                        }
                    }
                }
                "sslrootcert" => root_cert = Some(std::path::PathBuf::from(value.as_ref())),
                _ => rest.push((key.into_owned(), value.into_owned())),
            }
        }
        if !rest.is_empty() {
            kept.query_pairs_mut().extend_pairs(rest);
        }
        let mut config: tokio_postgres::Config =
            kept.as_str().parse().map_err(|e: tokio_postgres::Error| {
                format!("the driver refuses it ({})", describe(&e))
            })?;
        config.ssl_mode(match tls {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        });
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("weft");
        }
        config.keepalives(true);
        let mut shown = parsed.clone();
        let _ = shown.set_password(None);
        shown.set_query(None);
        Ok(Self {
            config,
            tls,
            root_cert,
            shown: shown.to_string(),
        })
    }

    /// The URL without password nor parameters: what messages name.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The TLS mode.
    pub fn tls(&self) -> TlsMode {
        self.tls
    }
}

/// A pool of connections to the state's server and the runtime it lives on; clones share both.
/// Other parts of Weft run their own statements through it ([`PgPool::run`]).
#[derive(Clone)]
pub struct PgPool {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    shown: String,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A runtime dropped inside another one's async context would panic; this does not wait.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for PgPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgPool")
            .field("server", &self.inner.shown)
            .finish_non_exhaustive()
    }
}

impl PgPool {
    /// The pool of this process for `target`'s URL: made at the first call, then shared by every
    /// state handle and every part of Weft that asks (a console that opens the state for each
    /// page, the workers of one process), so they draw on one set of connections.
    pub fn shared(target: &PgTarget, url: &str) -> Result<Self, String> {
        static POOLS: std::sync::Mutex<Vec<(String, PgPool)>> = std::sync::Mutex::new(Vec::new());
        let mut pools = crate::lock(&POOLS);
        if let Some((_, pool)) = pools.iter().find(|(u, _)| u == url) {
            return Ok(pool.clone());
        }
        let pool = Self::new(target)?;
        pools.push((url.to_owned(), pool.clone()));
        Ok(pool)
    }

    /// Builds a pool of its own (connecting lazily: the first statement makes the first
    /// connection).
    pub fn new(target: &PgTarget) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("weft-state-pg")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the threads of its connection pool: {e}"))?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match target.tls {
            TlsMode::Disable => {
                Manager::from_config(target.config.clone(), tokio_postgres::NoTls, manager_config)
            }
            mode => Manager::from_config(
                target.config.clone(),
                MakeRustls::new(mode, target.root_cert.as_deref())?,
                manager_config,
            ),
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CALL_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| format!("cannot build its connection pool: {e}"))?;
        Ok(Self {
            inner: Arc::new(Inner {
                runtime: Some(runtime),
                pool,
                shown: target.shown.clone(),
            }),
        })
    }

    /// The server, as messages name it (no password).
    pub fn shown(&self) -> &str {
        &self.inner.shown
    }

    /// Runs `work` on the pool's runtime and waits for it, at most [`CALL_TIMEOUT`] (the work
    /// is cancelled then). Safe to call from async code: the caller's thread only waits on a
    /// channel.
    pub(crate) fn block<T, F>(&self, work: F) -> Result<T, PgFail>
    where
        F: Future<Output = Result<T, PgFail>> + Send + 'static,
        T: Send + 'static,
    {
        let Some(rt) = self.inner.runtime.as_ref() else {
            return Err(PgFail::Connect("its connection pool was shut down".into()));
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let done = tokio::time::timeout(CALL_TIMEOUT, work)
                .await
                .unwrap_or(Err(PgFail::Timeout));
            let _ = tx.send(done);
        });
        match rx.recv_timeout(CALL_TIMEOUT + Duration::from_secs(2)) {
            Ok(done) => done,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(PgFail::Timeout),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(PgFail::Connect(
                "its connection pool stopped while answering".into(),
            )),
        }
    }

    /// A connection from the pool.
    fn checkout(&self) -> Result<Object, PgFail> {
        let pool = self.inner.pool.clone();
        self.block(async move { pool.get().await.map_err(pool_fail) })
    }

    /// Runs `f` with one connection: inside one transaction when `write` (committed when `f`
    /// succeeds, rolled back otherwise), else statement by statement. A connection found closed
    /// at its first statement (the server restarted, or ended idle connections) did nothing, so
    /// `f` runs again on a fresh one, up to twice more.
    pub(crate) fn with<T>(
        &self,
        write: bool,
        mut f: impl FnMut(&mut dyn Tx) -> Result<T, Fail>,
    ) -> Result<T, Fail> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let client = Arc::new(self.checkout().map_err(Fail::Pg)?);
            let mut tx = PgTx {
                pool: self,
                client,
                broken: false,
                answered: 0,
            };
            let done = if write {
                tx.batch("BEGIN")
                    .and_then(|()| f(&mut tx))
                    .and_then(|v| tx.batch("COMMIT").map(|()| v))
            } else {
                f(&mut tx)
            };
            if done.is_err() && write && !tx.broken && tx.batch("ROLLBACK").is_err() {
                tx.broken = true;
            }
            let answered = tx.answered;
            if tx.broken {
                // A connection in an unknown state never goes back to the pool.
                if let Ok(object) = Arc::try_unwrap(tx.client) {
                    drop(Object::take(object));
                }
            }
            match done {
                Err(Fail::Pg(PgFail::Connect(_))) if answered == 0 && attempt < 3 => {}
                done => return done,
            }
        }
    }

    /// Runs `f` on a connection of the pool, in the pool's runtime, waiting for it as
    /// [`PgPool::block`] does: for work beyond the state's own tables (locks, the queue).
    pub fn run<T, F, Fut>(&self, f: F) -> Result<T, String>
    where
        F: FnOnce(Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.inner.pool.clone();
        self.block(async move {
            let client = pool.get().await.map_err(pool_fail)?;
            f(client).await.map_err(|e| PgFail::from_pg(&e))
        })
        .map_err(PgFail::text)
    }
}

/// Statements on one pooled connection.
struct PgTx<'a> {
    pool: &'a PgPool,
    client: Arc<Object>,
    /// The connection failed or timed out mid-way: it is not returned to the pool.
    broken: bool,
    /// Statements the server answered so far.
    answered: u32,
}

impl PgTx<'_> {
    fn batch(&mut self, sql: &'static str) -> Result<(), Fail> {
        let client = self.client.clone();
        let done = self.pool.block(async move {
            let r = client.batch_execute(sql).await;
            drop(client);
            r.map_err(|e| PgFail::from_pg(&e))
        });
        self.settle(done)
    }

    fn settle<T>(&mut self, done: Result<T, PgFail>) -> Result<T, Fail> {
        if done.is_ok() {
            self.answered += 1;
        }
        done.map_err(|e| {
            if matches!(e, PgFail::Timeout | PgFail::Connect(_)) {
                self.broken = true;
            }
            Fail::Pg(e)
        })
    }

    fn statement(&mut self, sql: &str, params: &[Value], rows: bool) -> Result<Query, Fail> {
        let client = self.client.clone();
        let sql = dollar_placeholders(sql);
        let params = params.to_vec();
        let done = self.pool.block(async move {
            let stmt = client
                .prepare_cached(&sql)
                .await
                .map_err(|e| PgFail::from_pg(&e))?;
            let refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            let r = if rows {
                client
                    .query(&stmt, &refs)
                    .await
                    .map(Query::Rows)
                    .map_err(|e| PgFail::from_pg(&e))
            } else {
                client
                    .execute(&stmt, &refs)
                    .await
                    .map(Query::Changed)
                    .map_err(|e| PgFail::from_pg(&e))
            };
            drop(refs);
            drop(client);
            r
        });
        self.settle(done)
    }
}

enum Query {
    Rows(Vec<tokio_postgres::Row>),
    Changed(u64),
}

impl Tx for PgTx<'_> {
    fn script(&mut self, sql: &'static str) -> Result<(), Fail> {
        self.batch(sql)
    }

    fn exec(&mut self, sql: &str, params: &[Value]) -> Result<u64, Fail> {
        match self.statement(sql, params, false)? {
            Query::Changed(n) => Ok(n),
            Query::Rows(rows) => Ok(u64::try_from(rows.len()).unwrap_or(u64::MAX)),
        }
    }

    fn rows(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, Fail> {
        let Query::Rows(rows) = self.statement(sql, params, true)? else {
            return Ok(Vec::new());
        };
        rows.iter().map(decode).collect()
    }
}

/// A PostgreSQL row as [`Value`]s, by each column's type.
fn decode(row: &tokio_postgres::Row) -> Result<Row, Fail> {
    let bad = |i: usize, e: tokio_postgres::Error| Fail::Decode(format!("column {i}: {e}"));
    let mut out = Vec::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let v = match *col.type_() {
            Type::INT8 => row
                .try_get::<_, Option<i64>>(i)
                .map_err(|e| bad(i, e))?
                .map_or(Value::Null, Value::Int),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)
                .map_err(|e| bad(i, e))?
                .map_or(Value::Null, |v| Value::Int(i64::from(v))),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)
                .map_err(|e| bad(i, e))?
                .map_or(Value::Null, |v| Value::Int(i64::from(v))),
            Type::BOOL => row
                .try_get::<_, Option<bool>>(i)
                .map_err(|e| bad(i, e))?
                .map_or(Value::Null, Value::Bool),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => row
                .try_get::<_, Option<String>>(i)
                .map_err(|e| bad(i, e))?
                .map_or(Value::Null, Value::Text),
            _ => Value::Other("a value of another type"),
        };
        out.push(v);
    }
    Ok(Row(out))
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match (self, ty) {
            (Self::Null | Self::Other(_), _) => Ok(IsNull::Yes),
            (Self::Int(v), &Type::INT8) => v.to_sql(ty, out),
            (Self::Int(v), &Type::INT4) => i32::try_from(*v)?.to_sql(ty, out),
            (Self::Int(v), &Type::INT2) => i16::try_from(*v)?.to_sql(ty, out),
            (Self::Int(v), &Type::BOOL) => (*v != 0).to_sql(ty, out),
            (Self::Bool(v), &Type::BOOL) => v.to_sql(ty, out),
            (Self::Bool(v), &Type::INT8) => i64::from(*v).to_sql(ty, out),
            (Self::Bool(v), &Type::INT4) => i32::from(*v).to_sql(ty, out),
            (Self::Text(v), _) if <&str as ToSql>::accepts(ty) => v.as_str().to_sql(ty, out),
            (v, ty) => Err(format!("a parameter {v:?} does not fit a column of type {ty}").into()),
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::INT8 | Type::INT4 | Type::INT2 | Type::BOOL)
            || <&str as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

/// TLS for tokio-postgres by rustls (AWS-LC, as the HTTP client), checking the server's
/// certificate as the `sslmode` says.
#[derive(Clone)]
struct MakeRustls {
    config: Arc<rustls::ClientConfig>,
}

impl MakeRustls {
    fn new(mode: TlsMode, root_cert: Option<&std::path::Path>) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set up TLS: {e}"))?;
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match mode {
            TlsMode::Disable | TlsMode::Prefer | TlsMode::Require => {
                Arc::new(Unchecked(provider.clone()))
            }
            TlsMode::VerifyCa | TlsMode::VerifyFull => {
                let checked: Arc<dyn rustls::client::danger::ServerCertVerifier> = match root_cert {
                    Some(path) => {
                        use rustls::pki_types::pem::PemObject as _;
                        let mut roots = rustls::RootCertStore::empty();
                        let certs = CertificateDer::pem_file_iter(path).map_err(|e| {
                            format!("cannot read sslrootcert {}: {e}", path.display())
                        })?;
                        for cert in certs {
                            let cert = cert.map_err(|e| {
                                format!("sslrootcert {} does not read: {e}", path.display())
                            })?;
                            roots.add(cert).map_err(|e| {
                                format!("sslrootcert {} is refused: {e}", path.display())
                            })?;
                        }
                        rustls::client::WebPkiServerVerifier::builder_with_provider(
                            Arc::new(roots),
                            provider.clone(),
                        )
                        .build()
                        .map_err(|e| format!("cannot set up TLS: {e}"))?
                    }
                    None => Arc::new(
                        rustls_platform_verifier::Verifier::new(provider.clone())
                            .map_err(|e| format!("cannot read the system's trusted roots: {e}"))?,
                    ),
                };
                if mode == TlsMode::VerifyCa {
                    Arc::new(AnyName(checked))
                } else {
                    checked
                }
            }
        };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
        })
    }
}

/// libpq's `prefer` and `require`: encrypted, the certificate not checked (its handshake
/// signature still is).
#[derive(Debug)]
struct Unchecked(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// libpq's `verify-ca`: the chain checked, the host name not.
#[derive(Debug)]
struct AnyName(Arc<dyn rustls::client::danger::ServerCertVerifier>);

impl rustls::client::danger::ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, Self::Error> {
        Ok(RustlsConnect {
            config: self.config.clone(),
            name: ServerName::try_from(domain.to_owned())?,
        })
    }
}

/// One TLS handshake to come.
struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let tls = tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await?;
            Ok(RustlsStream(tls))
        })
    }
}

/// A TLS connection to the server.
struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_shown_without_its_password() {
        let t = PgTarget::parse("postgres://weft:s3cret@db.example:5433/acme?sslmode=verify-full")
            .unwrap();
        assert_eq!(t.shown(), "postgres://weft@db.example:5433/acme");
        assert_eq!(t.tls(), TlsMode::VerifyFull);
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn bad_urls_are_refused_without_repeating_them() {
        for url in [
            "mysql://u:s3cret@h/db",
            "postgres://u:s3cret@h/db?sslmode=sometimes",
            "not a url s3cret",
        ] {
            let err = PgTarget::parse(url).unwrap_err();
            assert!(!err.contains("s3cret"), "{err}");
        }
    }
}
