//! PostgreSQL for tests: one fresh database per test, dropped when the test ends.
//!
//! With `WEFT_TEST_PG_URL` set (`postgres://USER[:PASSWORD]@HOST:PORT/DATABASE`, a user that
//! may create databases; `.ci/run` sets it to the cluster it starts), databases are made on that
//! server. Otherwise the first test that asks starts a throwaway cluster of its own: `initdb` in
//! a temporary folder (as the unprivileged user `postgres` when running as root, since initdb
//! refuses root), listening on 127.0.0.1 on a free port with its socket in that folder, trusted
//! local logins, and no disk syncs (a test cluster loses nothing it needs). Every test of the
//! process shares it; a watchdog started with it (a shell run as the cluster's owner) stops it
//! and removes the folder once the test process has ended, however it ended.
//!
//! Without PostgreSQL installed, [`database`] fails the test under `CI`, and otherwise says on
//! stderr that it skipped and returns `None`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How long starting or stopping the cluster, or any administrative statement, may take.
const WAIT: Duration = Duration::from_secs(60);

/// A database for one test; dropped (with its connections) when this is.
pub struct TestDb {
    url: String,
    admin: String,
    name: String,
    _cluster: Option<Arc<Cluster>>,
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDb")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TestDb {
    /// Its `postgres://` URL (for `[state] url`, `WEFT_STATE_URL` or `State::open_postgres`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its name on the server.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs SQL statements (separated by `;`) in this database, as the test's administrator:
    /// for a test that damages or inspects what the code under test wrote.
    pub fn execute(&self, sql: &str) -> Result<(), String> {
        admin(&self.url, sql)
    }

    /// Takes this database away for `down` (as a restart or a failover does): every
    /// connection to it ended, and none accepted until `down` has passed.
    pub fn outage(&self, down: Duration) -> Result<(), String> {
        let name = &self.name;
        admin(
            &self.admin,
            &format!(
                "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false;
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            ),
        )?;
        std::thread::sleep(down);
        admin(
            &self.admin,
            &format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"),
        )
    }

    /// The rows of one query in this database, each column as text (NULL as `None`).
    pub fn query(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        let url = self.url.clone();
        let sql = sql.to_owned();
        on_runtime(async move {
            let client = connect(&url).await?;
            let rows = client
                .simple_query(&sql)
                .await
                .map_err(|e| format!("{sql}: {e}"))?;
            Ok(rows
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                        (0..row.len())
                            .map(|i| row.get(i).map(str::to_owned))
                            .collect(),
                    ),
                    _ => None,
                })
                .collect())
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = admin(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name),
        );
    }
}

/// A fresh, empty database for the test `label`; `None` (after saying so on stderr) when no
/// PostgreSQL is available and `CI` is not set. Panics when one should be available and cannot
/// be used (a bad `WEFT_TEST_PG_URL`, a cluster that does not start).
pub fn database(label: &str) -> Option<TestDb> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (admin_url, cluster) = match std::env::var("WEFT_TEST_PG_URL") {
        Ok(url) if !url.trim().is_empty() => (url, None),
        _ => {
            let Some(bin) = bin_dir() else {
                let why = "PostgreSQL is not installed (install it with `apt-get install postgresql`, or set WEFT_TEST_PG_URL to a server where the user may create databases)";
                assert!(std::env::var_os("CI").is_none(), "CI: {why}");
                use std::io::Write as _;
                let _ = writeln!(std::io::stderr().lock(), "skipped: {why}");
                return None;
            };
            let cluster = Cluster::shared(&bin).unwrap_or_else(|e| panic!("{e}"));
            (cluster.url.clone(), Some(cluster))
        }
    };
    let tail: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(30)
        .collect();
    let name = format!(
        "weft_t{}_{}_{tail}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    admin(
        &admin_url,
        &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
    )
    .and_then(|()| admin(&admin_url, &format!("CREATE DATABASE \"{name}\"")))
    .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
    let mut url = url::Url::parse(&admin_url)
        .unwrap_or_else(|e| panic!("WEFT_TEST_PG_URL is not a URL: {e}"));
    url.set_path(&format!("/{name}"));
    Some(TestDb {
        url: url.to_string(),
        admin: admin_url,
        name,
        _cluster: cluster,
    })
}

/// Where PostgreSQL's programs are: `WEFT_PG_BIN`, the newest `/usr/lib/postgresql/N/bin`, or
/// the folder of an `initdb` on `PATH`.
pub fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("WEFT_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((n, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
}

/// A throwaway cluster; stopped, and its folder removed, by its watchdog once the process ends.
struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
    url: String,
}

impl Cluster {
    /// The cluster the tests of this process share, started at the first call.
    fn shared(bin: &Path) -> Result<Arc<Self>, String> {
        static SHARED: OnceLock<Result<Arc<Cluster>, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| Self::start(bin, false).map(Arc::new))
            .clone()
    }

    /// Starts a cluster; with `tls`, serving TLS with a certificate for `localhost` signed by a
    /// test CA (`tls/ca.pem` in its folder), made with the `openssl` program.
    fn start(bin: &Path, tls: bool) -> Result<Self, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "weft-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let owner = unprivileged_owner()?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| format!("cannot give {} to user postgres: {e}", dir.display()))?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free loopback port: {e}"))?
            .port();
        let cluster = Self {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable"),
            dir,
            bin: bin.to_path_buf(),
            owner,
        };
        // From here on a failure would leave a folder (and maybe a server) behind: the watchdog
        // starts first, so they are removed and stopped whatever happens next.
        cluster.watch()?;
        let data = cluster.dir.join("data");
        cluster.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "-A".as_ref(),
                "trust".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            cluster.dir.display()
        );
        if tls {
            let dir = cluster.make_certificates()?;
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={0}/server.pem -c ssl_key_file={0}/server.key",
                dir.display()
            ));
        }
        let log = cluster.dir.join("log");
        cluster.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "start".as_ref(),
            ],
        )?;
        Ok(cluster)
    }

    /// A test CA and a server certificate for `localhost` it signed, in `tls/` (the key
    /// readable by the cluster's owner only, as PostgreSQL demands).
    fn make_certificates(&self) -> Result<PathBuf, String> {
        let dir = self.dir.join("tls");
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .map_err(|e| format!("cannot write the certificate extensions: {e}"))?;
        let openssl = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run openssl: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "openssl {} failed: {}",
                    args.first().unwrap_or(&""),
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=weft test CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            ]
            .concat(),
        )?;
        openssl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=localhost",
                ],
            ]
            .concat(),
        )?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ])?;
        use std::os::unix::fs::PermissionsExt as _;
        for name in ["server.key", "server.pem", "ca.pem"] {
            let path = dir.join(name);
            if let Some((uid, gid)) = self.owner {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .map_err(|e| format!("cannot give {} to postgres: {e}", path.display()))?;
            }
            let mode = if name == "server.key" { 0o600 } else { 0o644 };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))?;
        }
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| format!("cannot give {} to postgres: {e}", dir.display()))?;
        }
        Ok(dir)
    }

    /// Stops the cluster now and removes its folder (the watchdog would, at the process's end).
    fn stop(&self) {
        let data = self.dir.join("data");
        let _ = self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "30".as_ref(),
                "stop".as_ref(),
            ],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Starts the watchdog: a shell (as the cluster's owner, its output discarded so it holds
    /// none of the test's pipes) that waits for this process to end, then stops the cluster and
    /// removes its folder.
    fn watch(&self) -> Result<(), String> {
        let mut cmd = Command::new("/bin/sh");
        cmd.args([
            "-c",
            r#"while [ -e "/proc/$1" ]; do sleep 0.5; done; "$2/pg_ctl" -D "$3/data" -m immediate -w -t 30 stop; rm -rf "$3""#,
            "weft-pg-watchdog",
        ])
        .arg(std::process::id().to_string())
        .arg(&self.bin)
        .arg(&self.dir)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if let Some((uid, gid)) = self.owner {
            use std::os::unix::process::CommandExt as _;
            cmd.uid(uid).gid(gid);
        }
        cmd.spawn()
            .map(drop)
            .map_err(|e| format!("cannot start the test cluster's watchdog: {e}"))
    }

    /// Runs one of PostgreSQL's programs as the cluster's owner, at most [`WAIT`].
    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = self.owner {
            use std::os::unix::process::CommandExt as _;
            cmd.uid(uid).gid(gid);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        let deadline = Instant::now() + WAIT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    let mut text = String::new();
                    if let Some(mut err) = child.stderr.take() {
                        use std::io::Read as _;
                        let _ = err.read_to_string(&mut text);
                    }
                    let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
                    return Err(format!("{program} failed ({status}): {text}{log}"));
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "{program} did not finish within {}s",
                        WAIT.as_secs()
                    ));
                }
            }
        }
    }
}

/// A cluster of its own serving TLS, for the tests of `sslmode`: 127.0.0.1 on [`TlsServer::port`],
/// a certificate for `localhost` signed by the test CA at [`TlsServer::ca`], trusted logins as
/// `postgres`. Stopped, and its folder removed, on drop.
pub struct TlsServer {
    cluster: Cluster,
    port: u16,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl TlsServer {
    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The test CA's certificate (PEM), for `sslrootcert`.
    pub fn ca(&self) -> PathBuf {
        self.cluster.dir.join("tls").join("ca.pem")
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.cluster.stop();
    }
}

/// A TLS-serving cluster of the test's own; `None` (after saying so on stderr) without
/// PostgreSQL or `openssl` here, unless `CI` is set, which makes that a failure.
pub fn tls_server() -> Option<TlsServer> {
    let openssl = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let Some(bin) = bin_dir().filter(|_| openssl) else {
        let why = "PostgreSQL or openssl is not installed (install them with `apt-get install postgresql openssl`)";
        assert!(std::env::var_os("CI").is_none(), "CI: {why}");
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "skipped: {why}");
        return None;
    };
    let cluster = Cluster::start(&bin, true).unwrap_or_else(|e| panic!("{e}"));
    let port = url::Url::parse(&cluster.url)
        .ok()
        .and_then(|u| u.port())
        .unwrap_or_else(|| panic!("the test cluster's URL has no port"));
    Some(TlsServer { cluster, port })
}

/// As root, the uid and gid of user `postgres` (initdb refuses to run as root); else none (the
/// cluster runs as the current user).
fn unprivileged_owner() -> Result<Option<(u32, u32)>, String> {
    use std::os::unix::fs::MetadataExt as _;
    let me = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1);
    if me != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd")
        .map_err(|e| format!("cannot read /etc/passwd: {e}"))?;
    passwd
        .lines()
        .find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.first() == Some(&"postgres") && f.len() > 3)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })
        .map(Some)
        .ok_or_else(|| {
            "running as root and there is no user `postgres` to run the test cluster as (initdb refuses root): create one with `useradd --system postgres`".to_owned()
        })
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("cannot connect to the test server: {e}"))?;
    tokio::spawn(conn);
    Ok(client)
}

/// Runs `sql` on `url` as an administrator.
fn admin(url: &str, sql: &str) -> Result<(), String> {
    let url = url.to_owned();
    let sql = sql.to_owned();
    on_runtime(async move {
        let client = connect(&url).await?;
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| format!("{sql}: {e}"))
    })
}

/// Runs `work` to its end on a runtime of its own in a thread of its own (so a test inside a
/// runtime may call it), at most [`WAIT`].
fn on_runtime<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, String>> + Send + 'static,
) -> Result<T, String> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            tokio::time::timeout(WAIT, work)
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {}s", WAIT.as_secs())))
        })
    })
    .join()
    .unwrap_or_else(|_| Err("the administrative connection's thread panicked".into()))
}
