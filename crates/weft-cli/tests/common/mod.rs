//! What the CLI tests share: a sandbox (its own workspace and configuration folder) that runs the
//! real `weft` binary and checks that nothing it prints or writes holds a guarded secret.
#![allow(dead_code)]

pub(crate) mod pty;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub(crate) const SECRET: &str = "Xs3cr3t-never-shown-4f1c";

pub(crate) struct Sandbox {
    root: PathBuf,
    /// Values that must never appear in output or in a file (besides `SECRET`).
    secrets: std::cell::RefCell<Vec<String>>,
    /// Everything the binary printed, for the final scan against every guarded value.
    printed: std::cell::RefCell<Vec<Vec<u8>>>,
    /// Environment variables every command of this sandbox gets.
    env: std::cell::RefCell<Vec<(String, String)>>,
}

impl Sandbox {
    pub(crate) fn new(name: &str) -> Self {
        let root = std::env::temp_dir().join(format!("weft-client-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("project")).unwrap();
        Self {
            root,
            secrets: std::cell::RefCell::new(vec![SECRET.to_owned()]),
            printed: std::cell::RefCell::new(Vec::new()),
            env: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// Sets an environment variable for every later command of this sandbox.
    pub(crate) fn set_env(&self, name: &str, value: &str) {
        self.env
            .borrow_mut()
            .push((name.to_owned(), value.to_owned()));
    }

    /// Adds an OAuth client, which must succeed.
    pub(crate) fn add_client(
        &self,
        name: &str,
        connector: &str,
        client_id: &str,
        secret_line: &str,
    ) {
        let args = [
            "client",
            "add",
            name,
            "--connector",
            connector,
            "--client-id",
            client_id,
            "--secret-stdin",
        ];
        let o = self.run(&args, Some(secret_line));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    /// Creates connection `name` of `connector` with OAuth client `client`, which must succeed.
    pub(crate) fn create_connection(&self, name: &str, connector: &str, client: &str) {
        self.create_connection_at(name, connector, client, &[]);
    }

    /// Creates connection `name` of `connector` with OAuth client `client` and these host
    /// overrides (`NAME=URL`), which must succeed.
    pub(crate) fn create_connection_at(
        &self,
        name: &str,
        connector: &str,
        client: &str,
        hosts: &[String],
    ) {
        let mut args = vec![
            "connection",
            "create",
            name,
            "--connector",
            connector,
            "--client",
            client,
        ];
        for host in hosts {
            args.extend(["--host", host.as_str()]);
        }
        let o = self.run(&args, None);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    /// Adds a value to those that must never be seen.
    pub(crate) fn guard(&self, secret: &str) {
        self.secrets.borrow_mut().push(secret.to_owned());
    }

    pub(crate) fn project(&self) -> PathBuf {
        self.root.join("project")
    }

    pub(crate) fn config(&self) -> PathBuf {
        self.root.join("config")
    }

    pub(crate) fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.run_env(args, stdin, &[])
    }

    pub(crate) fn run_env(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> Output {
        let mut child = self
            .command(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            // The command may refuse before it reads its input; a closed pipe is fine then.
            let _ = input.write_all(text.as_bytes());
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        self.printed(&out.stdout);
        self.printed(&out.stderr);
        out
    }

    /// Checks `bytes` (something the binary printed) now and keeps it for the final scan.
    pub(crate) fn printed(&self, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        for secret in self.secrets.borrow().iter() {
            assert!(
                !text.contains(secret.as_str()),
                "a guarded secret was printed"
            );
        }
        self.printed.borrow_mut().push(bytes.to_vec());
    }

    /// A `weft` command to spawn by hand (for commands a test interacts with).
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_weft"));
        c.args(args)
            .current_dir(self.project())
            .env("WEFT_CONFIG_DIR", self.config())
            .env_remove("WEFT_MASTER_KEY")
            .env_remove("WEFT_MASTER_KEY_COMMAND")
            .env_remove("WEFT_SPEC_PATH")
            .env_remove("WEFT_STATE_URL")
            .env_remove("BROWSER")
            .envs(
                self.env
                    .borrow()
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            );
        c
    }

    /// `weft connection show NAME --json`, parsed.
    pub(crate) fn connection_json(&self, name: &str) -> serde_json::Value {
        let shown = self.run(&["connection", "show", name, "--json"], None);
        assert!(shown.status.success(), "{}", err(&shown));
        serde_json::from_slice(&shown.stdout).unwrap()
    }

    /// Guards `tokens` (every token a simulator issued), then scans everything.
    pub(crate) fn assert_none_of(&self, tokens: Vec<String>) {
        for t in tokens {
            self.guard(&t);
        }
        self.assert_no_plain_secret();
    }

    /// Every file under the sandbox, read as text, and everything the binary printed must be
    /// free of every guarded value.
    pub(crate) fn assert_no_plain_secret(&self) {
        let secrets = self.secrets.borrow();
        for text in self.printed.borrow().iter() {
            let text = String::from_utf8_lossy(text);
            for secret in secrets.iter() {
                assert!(
                    !text.contains(secret.as_str()),
                    "a guarded secret was printed"
                );
            }
        }
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let bytes = std::fs::read(&path).unwrap();
                    let text = String::from_utf8_lossy(&bytes);
                    for secret in secrets.iter() {
                        assert!(
                            !text.contains(secret.as_str()),
                            "{} holds a guarded secret",
                            path.display()
                        );
                    }
                }
            }
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

pub(crate) fn err(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub(crate) fn out(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

pub(crate) fn free_port() -> u16 {
    weft_harness::server::callback_port().unwrap()
}

pub(crate) fn callback(port: u16) -> String {
    format!("http://localhost:{port}/oauth/callback")
}

/// What a person's browser does: open the authorize URL, let the provider redirect (consent is
/// decided by the simulator), and follow the redirect to the callback.
pub(crate) fn play_browser(url: &str) -> u16 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let http = weft_engine::http::client().unwrap();
        let consent = http.get(url).send().await.unwrap();
        assert!(
            consent.status().is_redirection(),
            "the consent page answered {}",
            consent.status()
        );
        let back = consent.headers()["location"].to_str().unwrap().to_owned();
        http.get(back).send().await.unwrap().status().as_u16()
    })
}

/// Runs `weft connection authorize NAME` and plays the browser; returns (exit code, stdout,
/// stderr) after the command ends.
pub(crate) fn authorize(
    s: &Sandbox,
    name: &str,
    port: u16,
    extra: &[&str],
) -> (i32, String, String) {
    authorize_with(s, name, port, extra, || {})
}

/// [`authorize`], running `meanwhile` while the command waits for the browser.
pub(crate) fn authorize_with(
    s: &Sandbox,
    name: &str,
    port: u16,
    extra: &[&str],
    meanwhile: impl FnOnce(),
) -> (i32, String, String) {
    let port_text = port.to_string();
    let mut args = vec![
        "connection",
        "authorize",
        name,
        "--no-browser",
        "--port",
        &port_text,
        "--timeout",
        "60",
    ];
    args.extend_from_slice(extra);
    let mut child = s
        .command(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut url = String::new();
    stdout.read_line(&mut url).unwrap();
    let mut rest = String::new();
    if url.starts_with("http") {
        meanwhile();
        let page = play_browser(url.trim());
        assert_eq!(page, 200, "the callback page");
    }
    stdout.read_to_string(&mut rest).unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    let printed = format!("{url}{rest}");
    s.printed(printed.as_bytes());
    s.printed(stderr.as_bytes());
    (status.code().unwrap_or(-1), printed, stderr)
}

/// A workspace with the kantata-xero template, both OAuth clients, and connections `kantata`
/// and `xero` to these simulators, authorized (the browser played) for Xero's first
/// organisation: what `weft sync run kantata-xero` needs.
pub(crate) fn flow_workspace(
    s: &Sandbox,
    k: &weft_harness::kantata::KantataSim,
    x: &weft_harness::xero::XeroSim,
    port: u16,
) {
    let ok = |o: Output| assert!(o.status.success(), "{}", err(&o));
    ok(s.run(&["init", "--template", "kantata-xero"], None));
    for (name, connector, id, secret) in [
        ("kantata-app", "kantata", k.client_id(), k.client_secret()),
        ("xero-app", "xero", x.client_id(), x.client_secret()),
    ] {
        s.guard(secret);
        s.add_client(name, connector, id, &format!("{secret}\n"));
    }
    let hosts: [(&str, &str, Vec<String>); 2] = [
        (
            "kantata",
            "kantata-app",
            vec![
                format!("app={}", k.app_url()),
                format!("api={}", k.api_url()),
            ],
        ),
        (
            "xero",
            "xero-app",
            vec![
                format!("login={}", x.login_url()),
                format!("identity={}", x.identity_url()),
                format!("api={}", x.api_url()),
            ],
        ),
    ];
    for (name, client, urls) in &hosts {
        s.create_connection_at(name, name, client, urls);
    }
    x.set_consent(weft_harness::xero::Consent::Grant {
        tenants: vec![x.tenants()[0].0.clone()],
    });
    for name in ["kantata", "xero"] {
        let (code, _, stderr) = authorize(s, name, port, &[]);
        assert_eq!(code, 0, "{stderr}");
    }
}

/// A Kantata account with `invoices` invoices and a Xero organisation, both on the wall clock
/// (like the binary) and accepting the callback on `port`.
pub(crate) fn flow_sims(
    port: u16,
    invoices: usize,
) -> (
    weft_harness::kantata::KantataSim,
    weft_harness::xero::XeroSim,
) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let clock = weft_harness::clock::SimClock::scaled(now, 1);
    let k = weft_harness::kantata::KantataSim::start(weft_harness::kantata::KantataConfig {
        size: invoices,
        clock: clock.clone(),
        redirect_uris: vec![callback(port)],
        ..Default::default()
    })
    .unwrap();
    let x = weft_harness::xero::XeroSim::start(weft_harness::xero::XeroConfig {
        organisations: 1,
        size: 3,
        clock,
        redirect_uris: vec![callback(port)],
        ..Default::default()
    })
    .unwrap();
    (k, x)
}

/// OAuth client `xapp` for the Xero simulator's app, and connection `name` through it to the
/// simulator's hosts.
pub(crate) fn xero_connection(s: &Sandbox, sim: &weft_harness::xero::XeroSim, name: &str) {
    s.guard(sim.client_secret());
    s.add_client(
        "xapp",
        "xero",
        sim.client_id(),
        &format!("{}\n", sim.client_secret()),
    );
    let hosts = [
        format!("login={}", sim.login_url()),
        format!("identity={}", sim.identity_url()),
        format!("api={}", sim.api_url()),
    ];
    s.create_connection_at(name, "xero", "xapp", &hosts);
}

/// How many of Kantata account `k`'s invoices should reach Xero (not drafts, not cancelled),
/// and how many times each `KAN-` number is in organisation `tenant` of `x`: every invoice
/// once is `eligible == by_number.len()` with every count 1.
pub(crate) fn kantata_invoices_in_xero(
    k: &weft_harness::kantata::KantataSim,
    x: &weft_harness::xero::XeroSim,
    tenant: &str,
) -> (usize, std::collections::HashMap<String, usize>) {
    let eligible = k
        .invoices()
        .into_iter()
        .filter(|v| !v.draft && v.status != "cancelled")
        .count();
    let mut by_number = std::collections::HashMap::new();
    for inv in x.invoices(tenant) {
        if let Some(n) = inv["InvoiceNumber"]
            .as_str()
            .filter(|n| n.starts_with("KAN-"))
        {
            *by_number.entry(n.to_owned()).or_insert(0) += 1;
        }
    }
    (eligible, by_number)
}
