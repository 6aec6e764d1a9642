//! The console in a real browser: Debian's `chromium`, headless, driven through `chromedriver`
//! over WebDriver (thirtyfour), against the console served on a real loopback port and the
//! Kantata and Xero simulators in-process. One walk, as a person does it: sign in, add both OAuth
//! clients, create both connections (bad values refused beside their fields), Save & authorize
//! through the simulators' consent, choose the Xero organisation, Test, Sync now on the
//! kantata-xero flow, a refused record seen in Errors, fixed and retried, and a connection
//! deleted after its confirmation page. Every step is asserted on what the page shows.
//!
//! Without `chromium` and `chromedriver` the test says it skipped, unless `CI` is set (or
//! screenshots were asked for), where it fails saying what to install. `WEFT_CHROMIUM` and
//! `WEFT_CHROMEDRIVER` name other binaries. When `WEFT_SCREENSHOTS` names a folder, a PNG of each
//! page of the walk is saved there (`cargo xtask screenshots` writes `docs/console/`).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use thirtyfour::prelude::*;
use weft_harness::clock::SimClock;
use weft_harness::kantata::{KantataConfig, KantataSim};
use weft_harness::xero::{XeroConfig, XeroSim};
use weft_server::{Config, Role, Store};

const ADMIN_PW: &str = "correct horse battery";
/// How long any one wait of the walk may take: a page, an element, a text.
const WAIT: Duration = Duration::from_secs(20);
/// How long a run of the flow may take.
const RUN_WAIT: Duration = Duration::from_secs(90);

/// A binary named by `var`, else at `default`, else found on `PATH` as `name`.
fn binary(var: &str, default: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{var} names {}, which is not a file: point it at the binary, or unset it to use {default}",
            path.display()
        );
        return Some(path);
    }
    if Path::new(default).is_file() {
        return Some(default.into());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// chromedriver on a free 127.0.0.1 port, killed when dropped.
struct Chromedriver {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Chromedriver {
    fn start(binary: &Path, dir: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port on 127.0.0.1")
            .port();
        let log = dir.join("chromedriver.log");
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut driver = Self { child, port, log };
        let deadline = Instant::now() + WAIT;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!(
                    "chromedriver exited ({status}) before listening on port {port}; its log:\n{}",
                    driver.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on 127.0.0.1:{port} within {WAIT:?}; its log:\n{}",
                driver.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        let start = (start..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        text[start..].to_owned()
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary folder removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// The browser and what the walk checks on every page.
struct Walk {
    driver: WebDriver,
    base: String,
    shots: Option<PathBuf>,
    saved: Vec<String>,
    /// Every page's HTML, scanned for secrets at the end (tokens are known only then).
    pages: Vec<String>,
}

impl Walk {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn goto(&mut self, path: &str) {
        let url = self.url(path);
        self.driver
            .goto(url.as_str())
            .await
            .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    /// The elements matching `css` once there is at least one, within [`WAIT`].
    async fn wait_all(&self, css: &str, what: &str) -> Vec<WebElement> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(found) = self.driver.find_all(By::Css(css)).await
                && !found.is_empty()
            {
                return found;
            }
            if Instant::now() >= deadline {
                let at = self.driver.current_url().await.map(|u| u.to_string());
                let body = self.body_text().await;
                panic!("waited {WAIT:?} for {what} (`{css}`) at {at:?}; the page shows:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait(&self, css: &str, what: &str) -> WebElement {
        self.wait_all(css, what).await.remove(0)
    }

    /// Waits for the page at `path` (its path, without the query) whose `h1` holds `title`.
    async fn page(&mut self, path: &str, title: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let at = self.driver.current_url().await.ok();
            let heading = match self.driver.find_all(By::Css("h1")).await {
                Ok(h) if !h.is_empty() => h[0].text().await.unwrap_or_default(),
                _ => String::new(),
            };
            if at.as_ref().is_some_and(|u| u.path() == path) && heading.contains(title) {
                break;
            }
            if Instant::now() >= deadline {
                let body = self.body_text().await;
                panic!(
                    "waited {WAIT:?} for the page {path} titled {title:?}; the browser is at {:?} titled {heading:?}, showing:\n{body}",
                    at.map(|u| u.to_string())
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.remember().await;
    }

    async fn remember(&mut self) {
        if let Ok(html) = self.driver.source().await {
            self.pages.push(html);
        }
    }

    async fn body_text(&self) -> String {
        match self.driver.find(By::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(e) => format!("(no body: {e})"),
        }
    }

    /// The text of the element `css`, waited for (again, when a reloading page replaced it).
    async fn text(&self, css: &str, what: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.wait(css, what).await.text().await {
                Ok(text) => return text,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "waited {WAIT:?} for the text of {what} (`{css}`): {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Asserts that the element `css` shows `expected` (waited for within [`WAIT`]).
    async fn shows(&self, css: &str, expected: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let mut texts = Vec::new();
            if let Ok(found) = self.driver.find_all(By::Css(css)).await {
                for e in found {
                    texts.push(e.text().await.unwrap_or_default());
                }
            }
            if texts.iter().any(|t| t.contains(expected)) {
                return;
            }
            if Instant::now() >= deadline {
                let body = self.body_text().await;
                panic!(
                    "waited {WAIT:?} for `{css}` to show {expected:?}; it shows {texts:?}; the page:\n{body}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        let input = self.wait(css, css).await;
        input.clear().await.unwrap();
        input.send_keys(text).await.unwrap();
    }

    async fn click(&self, css: &str, what: &str) {
        self.wait(css, what)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {what} (`{css}`): {e}"));
    }

    async fn script(&self, js: &str) -> serde_json::Value {
        self.driver
            .execute(js, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("running {js}: {e}"))
            .json()
            .clone()
    }

    /// Saves a PNG of the page as `NAME.png` when screenshots were asked for.
    async fn shot(&mut self, name: &str) {
        self.remember().await;
        let Some(dir) = &self.shots else { return };
        // The page's own focus ring and caret are left out, so that two runs differ only where
        // the data differs.
        self.script("document.activeElement && document.activeElement.blur(); return null;")
            .await;
        let png = self.driver.screenshot_as_png().await.unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        self.saved.push(format!("{name}.png"));
    }

    /// Follows the run page the browser is on until it shows the run ended (the page reloads
    /// itself then); returns the outcome.
    async fn run_outcome(&mut self) -> String {
        let deadline = Instant::now() + RUN_WAIT;
        loop {
            let outcome = match self.driver.find_all(By::Css("[data-outcome]")).await {
                Ok(found) if !found.is_empty() => found[0].text().await.unwrap_or_default(),
                _ => String::new(),
            };
            if !outcome.is_empty() && outcome != "running" {
                // The page reloads itself when the run ends: read the counts from that page.
                let h1 = self.text("h1", "the run's title").await;
                if self
                    .driver
                    .find_all(By::Css("table[data-events]"))
                    .await
                    .is_ok_and(|t| t.is_empty())
                {
                    assert!(h1.starts_with("Run "), "{h1}");
                    self.remember().await;
                    return outcome;
                }
            }
            if Instant::now() >= deadline {
                let body = self.body_text().await;
                panic!("the run did not end within {RUN_WAIT:?}; its page shows:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn count(&self, name: &str) -> u64 {
        let text = self
            .text(
                &format!("td[data-count='{name}']"),
                &format!("the {name} count"),
            )
            .await;
        text.parse()
            .unwrap_or_else(|_| panic!("the {name} count is {text:?}"))
    }
}

#[test]
fn the_console_in_a_real_browser() {
    let (Some(chromedriver), Some(chromium)) = (
        binary("WEFT_CHROMEDRIVER", "/usr/bin/chromedriver", "chromedriver"),
        binary("WEFT_CHROMIUM", "/usr/bin/chromium", "chromium"),
    ) else {
        let why = "chromium and chromedriver not installed (install them with `apt-get install chromium chromium-driver`, or name them with WEFT_CHROMIUM and WEFT_CHROMEDRIVER)";
        assert!(std::env::var_os("CI").is_none(), "CI: {why}");
        assert!(
            std::env::var_os("WEFT_SCREENSHOTS").is_none(),
            "WEFT_SCREENSHOTS asks for screenshots, but {why}"
        );
        // Written to the process's stderr itself, past the test harness's capture, so that
        // `cargo test` shows it.
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "skipped: {why}");
        return;
    };
    let tmp = TempDir(std::env::temp_dir().join(format!("weft-browser-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&tmp.0);
    std::fs::create_dir_all(&tmp.0).unwrap();
    // SAFETY: set before any other thread of this test binary runs (this is its only test, and
    // the runtime below starts after this).
    unsafe {
        std::env::set_var("WEFT_CONFIG_DIR", tmp.0.join("config"));
        std::env::set_var(
            "WEFT_MASTER_KEY",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        );
        std::env::remove_var("WEFT_MASTER_KEY_COMMAND");
    }
    let shots = std::env::var_os("WEFT_SCREENSHOTS").map(PathBuf::from);
    if let Some(dir) = &shots {
        std::fs::create_dir_all(dir)
            .unwrap_or_else(|e| panic!("WEFT_SCREENSHOTS: cannot create {}: {e}", dir.display()));
    }
    let driver = Chromedriver::start(&chromedriver, &tmp.0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let saved = runtime.block_on(walk(&tmp.0, &driver, &chromium, shots));
    drop(runtime);
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "the walk took {:.1} s{}",
            started.elapsed().as_secs_f64(),
            if saved.is_empty() {
                String::new()
            } else {
                format!("; screenshots: {}", saved.join(", "))
            }
        );
    }
}

async fn walk(
    tmp: &Path,
    chromedriver: &Chromedriver,
    chromium: &Path,
    shots: Option<PathBuf>,
) -> Vec<String> {
    // The workspace, as `weft init --template kantata-xero` writes it, and its first user.
    let dir = tmp.join("workspace");
    std::fs::create_dir_all(&dir).unwrap();
    weft_engine::workspace::init(&dir).unwrap();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates/kantata-xero"),
        &dir,
    );
    Store::open(&dir.join(".weft"))
        .unwrap()
        .add_user("alice", ADMIN_PW, Role::Member)
        .unwrap();

    // The console on a free loopback port, opened as http://localhost:PORT (the name its
    // cookies and callback URL use).
    let specs = weft_core::builtin::load_all()
        .into_iter()
        .filter_map(|r| r.spec)
        .collect();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(weft_server::serve(
        Config {
            workspace: dir.clone(),
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: None,
            insecure_http: false,
            specs,
        },
        move |addr| {
            let _ = tx.send(addr);
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let addr = tokio::time::timeout(WAIT, rx)
        .await
        .expect("the console listens")
        .unwrap();
    let base = weft_server::base_url(addr, false);
    let callback = format!("{base}/oauth/callback");

    // Both simulators, seeded, on the wall clock (the console runs flows on it), sending the
    // browser back to the console's callback.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let clock = SimClock::scaled(now, 1);
    let kantata = KantataSim::start(KantataConfig {
        size: 6,
        clock: clock.clone(),
        redirect_uris: vec![callback.clone()],
        ..KantataConfig::default()
    })
    .unwrap();
    let xero = XeroSim::start(XeroConfig {
        organisations: 2,
        size: 3,
        clock,
        redirect_uris: vec![callback.clone()],
        ..XeroConfig::default()
    })
    .unwrap();
    let (tenant, tenant_name) = xero.tenants()[0].clone();
    let (other_id, other_tenant) = xero.tenants()[1].clone();

    // One invoice is broken at the source: an expense too large for Xero, which refuses it.
    let eligible: Vec<_> = kantata
        .invoices()
        .into_iter()
        .filter(|i| !i.draft && i.status != "cancelled")
        .collect();
    let broken = eligible
        .iter()
        .find(|i| i.line_counts[1] > 0)
        .expect("a seeded invoice with an expense line")
        .clone();
    let body: serde_json::Value = weft_engine::http::client()
        .unwrap()
        .get(format!(
            "{}/api/v1/invoices/{}.json?include=expenses",
            kantata.api_url(),
            broken.id
        ))
        .bearer_auth(kantata.personal_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expense = body["invoices"][&broken.id]["expense_ids"][0]
        .as_str()
        .unwrap_or_else(|| panic!("an expense id in {body}"))
        .to_owned();
    let amount = kantata.state().record("expenses", &expense).unwrap()["amount_in_cents"]
        .as_i64()
        .unwrap();
    kantata
        .state()
        .set_expense_amount(&expense, 2_000_000_000_000)
        .unwrap();

    // The browser: headless Chromium, a fixed window, a profile of its own.
    let mut caps = DesiredCapabilities::chrome();
    caps.set_binary(chromium.to_str().unwrap()).unwrap();
    let profile = tmp.join("profile");
    for arg in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1280,900",
        &format!("--user-data-dir={}", profile.display()),
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--lang=en-US",
        "--password-store=basic",
    ] {
        caps.add_arg(arg).unwrap();
    }
    let driver = WebDriver::builder(chromedriver.url(), caps)
        .request_timeout(Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "no browser session from chromedriver: {e}; its log:\n{}",
                chromedriver.log_text()
            )
        });
    driver
        .update_timeouts(TimeoutConfiguration::new(
            Some(Duration::from_secs(10)),
            Some(Duration::from_secs(30)),
            Some(Duration::ZERO),
        ))
        .await
        .unwrap();
    let mut w = Walk {
        driver,
        base,
        shots,
        saved: Vec::new(),
        pages: Vec::new(),
    };

    // Sign in.
    w.goto("/connections").await;
    w.page("/login", "Sign in").await;
    w.shot("01-login").await;
    w.type_into("#name", "alice").await;
    w.type_into("#password", ADMIN_PW).await;
    w.click("form[action='/login'] button[type=submit]", "Sign in")
        .await;
    w.page("/connections", "Connections").await;
    w.shows("header .who", "alice").await;
    w.shows("main .empty", "No connections yet").await;

    // Connectors: the setup steps with the console's callback URL.
    w.click("nav a[href='/connectors']", "the Connectors link")
        .await;
    w.page("/connectors", "Connectors").await;
    w.shows("main", "Kantata").await;
    w.shows("main", "Xero").await;
    w.shot("02-connectors").await;

    // OAuth clients: Kantata's, then Xero's, whose client ID typed with a space inside is
    // refused by the browser (the spec's pattern as an HTML constraint) and, sent anyway, by the
    // server beside its field.
    w.click("nav a[href='/clients']", "the OAuth clients link")
        .await;
    w.page("/clients", "OAuth clients").await;
    w.click("#connector option[value='kantata']", "the Kantata choice")
        .await;
    w.click("form[action='/clients/new'] button", "Continue")
        .await;
    w.page("/clients/new", "Add an OAuth client for Kantata")
        .await;
    w.type_into("#name", "kantata-app").await;
    w.type_into("#client_id", kantata.client_id()).await;
    w.type_into("#client_secret", kantata.client_secret()).await;
    w.click("form.card button[type=submit]", "Save").await;
    w.page("/clients", "OAuth clients").await;
    w.shows("main .notice", "kantata-app").await;
    w.shows("main table", "kantata-app").await;

    w.click("#connector option[value='xero']", "the Xero choice")
        .await;
    w.click("form[action='/clients/new'] button", "Continue")
        .await;
    w.page("/clients/new", "Add an OAuth client for Xero").await;
    let spaced = {
        let id = xero.client_id();
        format!("{} {}", &id[..4], &id[4..])
    };
    w.type_into("#name", "xero-app").await;
    w.type_into("#client_id", &spaced).await;
    w.type_into("#client_secret", xero.client_secret()).await;
    w.click("form.card button[type=submit]", "Save").await;
    assert_eq!(
        w.script("return document.getElementById('client_id').validity.patternMismatch;")
            .await,
        serde_json::Value::Bool(true),
        "the browser refuses the spaced client ID"
    );
    w.page("/clients/new", "Add an OAuth client for Xero").await;
    w.script("document.querySelector('form.card').noValidate = true; return null;")
        .await;
    w.click("form.card button[type=submit]", "Save").await;
    w.page("/clients", "Add an OAuth client for Xero").await;
    w.shows("#client_id-error", "no spaces inside").await;
    let input = w.wait("#client_id", "the client ID input").await;
    let described = input.attr("aria-describedby").await.unwrap();
    assert!(
        described.is_some_and(|d| d.contains("client_id-error")),
        "the error is tied to its input"
    );
    assert_eq!(
        input.prop("value").await.unwrap().as_deref(),
        Some(spaced.as_str()),
        "the value typed is kept"
    );
    let secret = w.wait("#client_secret", "the secret input").await;
    assert_eq!(
        secret.prop("value").await.unwrap().as_deref(),
        Some(""),
        "the secret is never sent back to the browser"
    );
    w.shot("03-client-form-errors").await;
    w.type_into("#client_id", xero.client_id()).await;
    w.type_into("#client_secret", xero.client_secret()).await;
    w.click("form.card button[type=submit]", "Save").await;
    w.page("/clients", "OAuth clients").await;
    w.shows("main table", "xero-app").await;
    let rows = w.text("main table tbody", "the clients").await;
    assert_eq!(rows.matches("sealed").count(), 2, "{rows}");
    w.shot("04-clients").await;

    // The Kantata connection: concurrency 26 is refused by the browser, and, sent anyway, by
    // the server beside its field.
    w.click("nav a[href='/connections']", "the Connections link")
        .await;
    w.page("/connections", "Connections").await;
    w.click("#connector option[value='kantata']", "the Kantata choice")
        .await;
    w.click("form[action='/connections/new'] button", "Continue")
        .await;
    // Kantata signs in two ways: the first page asks which, a link each.
    w.page("/connections/new", "Create a Kantata OX connection")
        .await;
    w.shows("main", "How will this connection sign in to Kantata OX?")
        .await;
    w.click("a[href$='method=oauth2']", "the OAuth 2.0 sign-in link")
        .await;
    w.page("/connections/new", "Create a Kantata OX connection")
        .await;
    w.type_into("#name", "kantata").await;
    w.click(
        "#client option[value='kantata-app']",
        "the kantata-app client",
    )
    .await;
    w.type_into("#concurrency", "26").await;
    w.click("summary", "Base URLs").await;
    w.type_into("#host_app", &kantata.app_url()).await;
    w.type_into("#host_api", &kantata.api_url()).await;
    w.click("button[value='authorize']", "Save & authorize")
        .await;
    assert_eq!(
        w.script("return document.getElementById('concurrency').validity.rangeOverflow;")
            .await,
        serde_json::Value::Bool(true),
        "the browser refuses concurrency 26"
    );
    w.page("/connections/new", "Create a Kantata OX connection")
        .await;
    w.script("document.querySelector('form.card').noValidate = true; return null;")
        .await;
    w.click("button[value='authorize']", "Save & authorize")
        .await;
    w.page("/connections", "Create a Kantata OX connection")
        .await;
    w.shows("#concurrency-error", "25").await;
    let kept = w
        .wait("#concurrency", "the concurrency input")
        .await
        .prop("value")
        .await
        .unwrap();
    assert_eq!(kept.as_deref(), Some("26"), "the value typed is kept");
    w.shot("05-connection-form-errors").await;
    w.type_into("#concurrency", "4").await;
    // Save & authorize: the simulator's consent page answers at once and sends the browser
    // back to the console's callback; Kantata has no organisations to choose.
    w.click("button[value='authorize']", "Save & authorize")
        .await;
    w.page("/connections", "Connections").await;
    w.shows(
        "main .notice",
        "Connection kantata is authorized; its tokens are sealed.",
    )
    .await;

    // The Xero connection: Save & authorize, then the organisations that consent connected.
    w.click("#connector option[value='xero']", "the Xero choice")
        .await;
    w.click("form[action='/connections/new'] button", "Continue")
        .await;
    w.page("/connections/new", "Create a Xero connection").await;
    w.type_into("#name", "xero").await;
    w.click("summary", "Base URLs").await;
    w.type_into("#host_login", &xero.login_url()).await;
    w.type_into("#host_identity", &xero.identity_url()).await;
    w.type_into("#host_api", &xero.api_url()).await;
    w.click("button[value='authorize']", "Save & authorize")
        .await;
    w.page("/oauth/callback", "Choose the organisations for xero")
        .await;
    w.shows("form fieldset", &tenant_name).await;
    w.shows("form fieldset", &other_tenant).await;
    w.shot("06-organisations").await;
    w.click(
        &format!("input[name=tenant][value='{other_id}']"),
        "the other organisation's box",
    )
    .await;
    w.click("form.card button[type=submit]", "Use these organisations")
        .await;
    w.page("/connections", "Connections").await;
    w.shows("main table", &tenant_name).await;
    let rows = w.text("main table tbody", "the connections").await;
    assert!(!rows.contains(&other_tenant), "only the chosen one: {rows}");
    assert_eq!(rows.matches("authorized").count(), 2, "{rows}");
    w.shot("07-connections").await;

    // Test: the connector's test call against the chosen organisation.
    w.click(
        "form[action='/connections/xero/test'] button",
        "Test on the xero row",
    )
    .await;
    w.page("/connections/xero/test", "Test of connection xero")
        .await;
    w.shows("main .notice", "works.").await;
    w.shot("08-test").await;

    // Sync now on the kantata-xero flow: every eligible invoice but the broken one reaches
    // Xero; that one is refused and queued.
    w.click("nav a[href='/flows']", "the Flows link").await;
    w.page("/flows", "Flows").await;
    w.shows("main table", "kantata-xero").await;
    w.shows("main table", "never run").await;
    w.shot("09-flows").await;
    w.click(
        "form[action='/flows/kantata-xero/sync'] button",
        "Sync now on kantata-xero",
    )
    .await;
    w.wait("[data-outcome]", "the run's outcome").await;
    let outcome = w.run_outcome().await;
    assert_eq!(outcome, "completed");
    let created = w.count("created").await;
    assert_eq!(created as usize, eligible.len() - 1);
    assert_eq!(w.count("failed").await, 1);
    w.shows("main", &broken.id).await;
    w.shot("10-run").await;
    assert_eq!(
        xero.creates_of(&tenant, "Invoices") as usize,
        eligible.len() - 1
    );
    let error_link = w
        .wait("main a[href^='/errors/']", "the queued error's link")
        .await
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    let error_id = error_link.trim_start_matches("/errors/").to_owned();

    // Errors: the provider's message and the record; fix the record, Retry, Sync now.
    w.click("nav a[href='/errors']", "the Errors link").await;
    w.page("/errors", "Errors").await;
    w.shows("main table", &broken.id).await;
    w.shows("main table", "open").await;
    w.shot("11-errors").await;
    kantata
        .state()
        .set_expense_amount(&expense, amount)
        .unwrap();
    w.click(
        &format!("form[action='/errors/{error_id}/retry'] button"),
        "Retry on the error",
    )
    .await;
    w.page("/errors", "Errors").await;
    w.shows(
        "main .notice",
        &format!("Error {error_id} is marked for retry"),
    )
    .await;
    w.click("nav a[href='/flows']", "the Flows link").await;
    w.page("/flows", "Flows").await;
    w.click(
        "form[action='/flows/kantata-xero/sync'] button",
        "Sync now on kantata-xero",
    )
    .await;
    w.wait("[data-outcome]", "the run's outcome").await;
    assert_eq!(w.run_outcome().await, "completed");
    assert_eq!(w.count("created").await, 1);
    assert_eq!(w.count("failed").await, 0);
    assert_eq!(
        xero.creates_of(&tenant, "Invoices") as usize,
        eligible.len()
    );
    w.goto(&format!("/errors/{error_id}")).await;
    w.page(&format!("/errors/{error_id}"), &format!("Error {error_id}"))
        .await;
    w.shows("main dl", "fixed").await;
    w.shot("12-error-fixed").await;

    // Delete a connection: the confirmation page says what it does, then the row is gone.
    w.click("nav a[href='/connections']", "the Connections link")
        .await;
    w.page("/connections", "Connections").await;
    w.click(
        "a[href='/connections/kantata/delete']",
        "Delete on the kantata row",
    )
    .await;
    w.page("/connections/kantata/delete", "kantata").await;
    w.shows("main", "It cannot be undone").await;
    w.shot("13-delete-confirmation").await;
    w.click("main form button.danger", "the Delete button")
        .await;
    w.page("/connections", "Connections").await;
    w.shows("main .notice", "Deleted connection kantata").await;
    let rows = w.text("main table tbody", "the connections").await;
    assert!(
        !rows.lines().any(|l| l.starts_with("kantata ")),
        "kantata is gone: {rows}"
    );
    assert!(rows.contains("xero"), "{rows}");

    // No page showed a secret: client secrets, the password, and every token issued.
    let mut secrets = vec![
        ADMIN_PW.to_owned(),
        kantata.client_secret().to_owned(),
        kantata.personal_token().to_owned(),
        xero.client_secret().to_owned(),
    ];
    secrets.extend(kantata.issued_tokens());
    secrets.extend(xero.issued_tokens());
    assert!(secrets.len() > 4, "the simulators issued tokens");
    for page in &w.pages {
        for secret in &secrets {
            assert!(
                !page.contains(secret.as_str()),
                "a page shows a secret or token:\n{page}"
            );
        }
    }

    let saved = std::mem::take(&mut w.saved);
    w.driver.quit().await.unwrap();
    let _ = stop.send(());
    tokio::time::timeout(WAIT, server)
        .await
        .expect("the console stops")
        .unwrap()
        .unwrap();
    saved
}
