//! `weft demo`: the whole job on the built-in sandbox, with the real commands.
//!
//! It starts the simulators in this process (seeded data, their clock on the wall clock), makes a
//! workspace from a template (kantata-xero unless `--flow` names another) in a folder of its own
//! (with its own configuration folder, so nothing of yours is touched), adds the OAuth client of
//! each connector the template's flow uses, creates and authorizes its connections (playing the
//! browser against the sandbox), runs the flow, and runs it again: for kantata-xero after paying
//! one invoice in the Xero sandbox, to record the payment in Kantata; for the others with nothing
//! changed. Finally it counts duplicates by reading the destinations back. Every step is the
//! `weft` binary itself, run as a child process, exactly as a person would type it.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use serde::Serialize;
use weft_core::callback_url;
use weft_harness::kantata::KantataSim;
use weft_harness::quickbooks::QuickBooksSim;
use weft_harness::xero::XeroSim;

use crate::Io;
use crate::cmd_sandbox::{SandboxArgs, start};

/// Options of `weft demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// The shipped flow template to run (see `weft init --help`).
    #[arg(long, default_value = "kantata-xero")]
    flow: String,
    /// Kantata invoices in the sandbox.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=5_000))]
    invoices: u64,
    /// Seed of the sandbox data.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Keep the demo workspace in this folder (created; must not exist) instead of a temporary one.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
    /// Then keep the sandbox running and serve the console over the demo's workspace (user
    /// `demo`; its password is asked for hidden, or read with --password-stdin) until Ctrl-C.
    #[arg(long, conflicts_with = "json")]
    serve: bool,
    /// Where the console listens with --serve (loopback only).
    #[arg(long, default_value = "127.0.0.1:8080", requires = "serve")]
    listen: std::net::SocketAddr,
    /// With --serve: read the console user's password from standard input (one line).
    #[arg(long, requires = "serve")]
    password_stdin: bool,
}

#[derive(Debug, Default, Serialize)]
struct Summary {
    flow: String,
    /// Source records read by the first run, in every stream.
    read: u64,
    /// Records created at the destinations by the first run.
    created: u64,
    /// Records the second run created and updated (nothing changed in between but what the
    /// demo says).
    second_run: serde_json::Value,
    invoices_read: u64,
    created_in_xero: u64,
    contacts_created: u64,
    references_written: u64,
    payments_written_back: u64,
    second_run_created: u64,
    /// Records created in the QuickBooks Online sandbox (a flow writing there).
    #[serde(skip_serializing_if = "Option::is_none")]
    created_in_quickbooks: Option<u64>,
    duplicates: u64,
    /// Per-stream counts of each run.
    streams: serde_json::Value,
    calls: u64,
    seconds: f64,
    workspace: Option<String>,
}

/// One child `weft` in the demo's workspace and configuration folder.
struct Demo {
    exe: PathBuf,
    workspace: PathBuf,
    config: PathBuf,
}

impl Demo {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg("--workspace")
            .arg(&self.workspace)
            .args(args)
            .env("WEFT_CONFIG_DIR", &self.config)
            .env_remove("WEFT_MASTER_KEY")
            .env_remove("WEFT_SPEC_PATH")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs `weft ARGS` with `input` on stdin; fails unless it exits with one of `ok_codes`.
    fn run(&self, args: &[&str], input: Option<&str>, ok_codes: &[i32]) -> Result<String> {
        let mut child = self
            .command(args)
            .spawn()
            .with_context(|| format!("cannot start {}", self.exe.display()))?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(text.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        let code = out.status.code().unwrap_or(-1);
        if !ok_codes.contains(&code) {
            bail!(
                "`weft {}` exited with {code}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `weft connection authorize NAME --no-browser`, with the browser played by following the
    /// printed URL through the sandbox's consent to the callback.
    fn authorize(&self, name: &str, port: u16) -> Result<()> {
        let port_text = port.to_string();
        let mut child = self
            .command(&[
                "connection",
                "authorize",
                name,
                "--no-browser",
                "--port",
                &port_text,
                "--timeout",
                "60",
            ])
            .stdin(Stdio::null())
            .spawn()?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?);
        let mut url = String::new();
        stdout.read_line(&mut url)?;
        if url.starts_with("http") {
            let runtime = crate::connect::runtime()?;
            runtime.block_on(async {
                let http = weft_engine::http::client()?;
                let consent = http.get(url.trim()).send().await?;
                let back = consent
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| anyhow!("the sandbox's consent page did not redirect"))?
                    .to_owned();
                http.get(back).send().await?;
                anyhow::Ok(())
            })?;
        }
        let mut rest = String::new();
        stdout.read_to_string(&mut rest)?;
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            e.read_to_string(&mut err)?;
        }
        if !child.wait()?.success() {
            bail!("authorizing `{name}` failed: {}", err.trim());
        }
        Ok(())
    }
}

pub(crate) fn run(args: DemoArgs, io: &mut Io<'_>) -> Result<u8> {
    let started = Instant::now();
    if args.serve && !args.listen.ip().is_loopback() {
        bail!(
            "--listen {}: the demo console listens on loopback only (127.0.0.1:PORT)",
            args.listen
        );
    }
    // A temporary folder is made new (never one a killed demo left behind) and removed when it
    // is dropped; one given with --dir is kept.
    let (temp, root) = match &args.dir {
        Some(d) => {
            if d.exists() {
                bail!(
                    "{} already exists; give --dir a folder that does not exist yet",
                    d.display()
                );
            }
            (None, d.clone())
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("weft-demo-")
                .tempdir()
                .context("cannot make a temporary folder for the demo")?;
            let root = temp.path().to_path_buf();
            (Some(temp), root)
        }
    };
    let stop = Stop::default();
    stop.watch(temp.as_ref().map(|t| t.path().to_path_buf()))?;
    let result = demo(&args, &root, temp.is_none(), started, &stop, io);
    drop(temp);
    result
}

/// What Ctrl-C or SIGTERM stops. While the console runs, it is sent SIGTERM and the demo ends
/// as usual (after a terminal's Ctrl-C, which reached the console too, that is its second signal,
/// so it ends at once: a demo's console has nothing to finish); before that the demo ends at
/// once (exit code 130), its temporary folder removed first.
#[derive(Clone, Default)]
struct Stop {
    asked: Arc<AtomicBool>,
    /// The console's `weft serve`, reaped only under this lock, so a signal never goes to
    /// another process that was given its id.
    console: Arc<Mutex<Option<Child>>>,
}

impl Stop {
    fn watch(&self, temp: Option<PathBuf>) -> Result<()> {
        let stop = self.clone();
        crate::connect::on_stop(move || {
            stop.asked.store(true, Ordering::SeqCst);
            let console = stop.console();
            match console.as_ref() {
                Some(child) => {
                    let _ = rustix::process::kill_process(
                        rustix::process::Pid::from_child(child),
                        rustix::process::Signal::TERM,
                    );
                }
                None => {
                    if let Some(temp) = temp {
                        let _ = std::fs::remove_dir_all(temp);
                    }
                    std::process::exit(130);
                }
            }
        })
    }

    fn console(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.console.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn asked(&self) -> bool {
        self.asked.load(Ordering::SeqCst)
    }
}

/// The sandbox, the scenario, its summary, and with --serve the console until it stops.
fn demo(
    args: &DemoArgs,
    root: &Path,
    keep: bool,
    started: Instant,
    stop: &Stop,
    io: &mut Io<'_>,
) -> Result<u8> {
    let port = weft_harness::server::callback_port()
        .context("cannot find a free port for the OAuth callback")?;
    let console = args.serve.then(|| {
        format!(
            "{}/oauth/callback",
            weft_server::base_url(args.listen, false)
        )
    });
    let sandbox = start(&SandboxArgs::for_demo(
        args.seed,
        args.invoices,
        callback_url(port),
        console,
    ))?;
    let demo = Demo {
        exe: std::env::current_exe().context("cannot find the weft executable")?,
        workspace: root.join("workspace"),
        config: root.join("config"),
    };
    let mut summary = scenario(args, port, &sandbox, &demo, io)?;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.workspace = keep.then(|| root.join("workspace").display().to_string());
    if args.json {
        serde_json::to_writer(&mut *io.out, &summary)?;
        writeln!(io.out)?;
    } else if summary.flow != "kantata-xero" {
        writeln!(
            io.out,
            "{} on the sandbox: {} records read, {} created ({} looked-up records created), {} written back.",
            summary.flow,
            summary.read,
            summary.created,
            summary.contacts_created,
            summary.references_written
        )?;
        writeln!(
            io.out,
            "A second run with nothing changed created {} and updated {}.",
            summary.second_run["created"], summary.second_run["updated"]
        )?;
        if summary.created_in_quickbooks.is_some() {
            writeln!(
                io.out,
                "One invoice was then paid in full in QuickBooks; the next run recorded {} payment(s) back in Kantata.",
                summary.payments_written_back
            )?;
        }
        writeln!(
            io.out,
            "Duplicates found by reading the destination back: {}. {} API calls, {:.1} s.",
            summary.duplicates, summary.calls, summary.seconds
        )?;
    } else {
        writeln!(
            io.out,
            "Kantata → Xero on the sandbox: {} invoices read, {} created in Xero ({} contacts created), {} Kantata invoices linked to their Xero ids.",
            summary.invoices_read,
            summary.created_in_xero,
            summary.contacts_created,
            summary.references_written
        )?;
        writeln!(
            io.out,
            "One invoice was then paid in Xero; the next run recorded {} payment(s) back in Kantata and created {} invoice(s).",
            summary.payments_written_back, summary.second_run_created
        )?;
        writeln!(
            io.out,
            "Duplicates found by reading both sandboxes back: {}. {} API calls, {:.1} s.",
            summary.duplicates, summary.calls, summary.seconds
        )?;
    }
    if let (false, Some(ws)) = (args.json, &summary.workspace) {
        writeln!(
            io.out,
            "The workspace is kept in {ws}; its credentials are sealed with a key in {}.",
            root.join("config").display()
        )?;
    }
    if args.serve {
        serve(args, &demo, stop, io)?;
    }
    Ok(if summary.duplicates == 0 { 0 } else { 1 })
}

/// `weft user add demo` and `weft serve` in the demo's workspace, the sandbox still running in
/// this process: the console shows the demo's flow, runs and connections until Ctrl-C.
fn serve(args: &DemoArgs, demo: &Demo, stop: &Stop, io: &mut Io<'_>) -> Result<()> {
    let password = if args.password_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the password from standard input")?;
        text.lines().next().unwrap_or_default().to_owned()
    } else if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        rpassword::prompt_password("A password for the console's user `demo` (hidden): ")
            .context("cannot read the password")?
    } else {
        bail!(
            "no terminal to ask for the console's password: pass --password-stdin and write it to standard input"
        );
    };
    demo.run(
        &["user", "add", "demo", "--role", "admin", "--password-stdin"],
        Some(&format!("{password}\n")),
        &[0],
    )?;
    let listen = args.listen.to_string();
    writeln!(
        io.out,
        "The console: {}/ (sign in as `demo`); the sandbox keeps running until you stop it with Ctrl-C.",
        weft_server::base_url(args.listen, false)
    )?;
    io.out.flush()?;
    {
        // Locked before it starts: a stop asked meanwhile waits for it, then stops it too.
        let mut console = stop.console();
        *console = Some(
            demo.command(&["serve", "--listen", &listen])
                .stdin(Stdio::null())
                .stdout(Stdio::inherit())
                .stderr(Stdio::inherit())
                .spawn()
                .context("cannot start `weft serve`")?,
        );
    }
    let status = loop {
        {
            let mut console = stop.console();
            let ended = match console.as_mut() {
                Some(child) => child.try_wait().context("cannot wait for `weft serve`")?,
                None => bail!("the console's process was lost"),
            };
            if let Some(status) = ended {
                *console = None;
                break status;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    if stop.asked() {
        writeln!(io.out, "The console and the sandbox are stopped.")?;
        return Ok(());
    }
    if !status.success() {
        bail!("the console (weft serve on {listen}) stopped: {status}");
    }
    Ok(())
}

fn scenario(
    args: &DemoArgs,
    port: u16,
    sandbox: &crate::cmd_sandbox::Sandbox,
    demo: &Demo,
    io: &mut Io<'_>,
) -> Result<Summary> {
    let (k, x, q): (&KantataSim, &XeroSim, &QuickBooksSim) =
        (&sandbox.kantata, &sandbox.xero, &sandbox.quickbooks);
    let step = |io: &mut Io<'_>, text: &str| -> Result<()> {
        if !args.json {
            writeln!(io.err, "· {text}")?;
        }
        Ok(())
    };
    let flow = args.flow.as_str();
    if !crate::cmd_sync::TEMPLATES.iter().any(|(n, _)| *n == flow) {
        bail!(
            "no template `{flow}`; the templates are: {}",
            crate::cmd_sync::template_names()
        );
    }
    step(io, &format!("workspace from the {flow} template"))?;
    std::fs::create_dir_all(&demo.workspace)?;
    demo.run(&["init", "--template", flow], None, &[0])?;
    // The template's connections, each pointed at its simulator.
    let file =
        weft_engine::flow::Flow::load(&demo.workspace.join("flows").join(format!("{flow}.toml")))
            .map_err(|e| anyhow!("{e}"))?;
    let connections: Vec<(String, String)> = file
        .file
        .connections
        .keys()
        .map(|alias| {
            (
                file.connection_name(alias),
                file.file.connections[alias].connector.clone(),
            )
        })
        .collect();
    step(io, "OAuth clients (secrets sealed, never shown)")?;
    for (_, connector) in &connections {
        let (id, secret) = app_of(sandbox, connector)?;
        let client = format!("{connector}-app");
        demo.run(
            &[
                "client",
                "add",
                &client,
                "--connector",
                connector,
                "--client-id",
                &id,
                "--secret-stdin",
            ],
            Some(&format!("{secret}\n")),
            &[0],
        )?;
    }
    step(
        io,
        "connections, authorized through the sandbox's consent pages",
    )?;
    for (name, connector) in &connections {
        let client = format!("{connector}-app");
        let hosts: Vec<String> = hosts_of(sandbox, connector)?
            .into_iter()
            .map(|(host, url)| format!("{host}={url}"))
            .collect();
        let mut create = vec![
            "connection",
            "create",
            name.as_str(),
            "--connector",
            connector.as_str(),
            "--client",
            client.as_str(),
        ];
        for h in &hosts {
            create.extend(["--host", h.as_str()]);
        }
        demo.run(&create, None, &[0])?;
    }
    let tenant = x
        .tenants()
        .first()
        .map(|t| t.0.clone())
        .ok_or_else(|| anyhow!("the Xero sandbox has no organisation"))?;
    x.set_consent(weft_harness::xero::Consent::Grant {
        tenants: vec![tenant.clone()],
    });
    // QuickBooks' consent names one company (`realmId` beside the code): the sandbox's first.
    let quickbooks = connections.iter().any(|(_, c)| c == "quickbooks");
    let realm = q
        .companies()
        .first()
        .map(|c| c.0.clone())
        .ok_or_else(|| anyhow!("the QuickBooks sandbox has no company"))?;
    if quickbooks {
        q.set_consent(weft_harness::quickbooks::Consent::Grant {
            realm: Some(realm.clone()),
        });
    }
    for (name, connector) in &connections {
        demo.authorize(name, port)?;
        if connector == "xero" {
            demo.run(&["connection", "test", name], None, &[0])?;
        }
    }

    if quickbooks {
        return quickbooks_scenario(args, k, q, &realm, demo, io, &step);
    }

    if flow == "kantata-xero-expense-claims" {
        classic_claims(demo, x, &tenant, io, &step)?;
    }

    step(io, "first sync run")?;
    let first: serde_json::Value =
        serde_json::from_str(&demo.run(&["sync", "run", flow, "--json"], None, &[0, 10])?)?;
    let mut summary = Summary {
        flow: flow.to_owned(),
        read: first["summary"]["read"].as_u64().unwrap_or(0),
        created: first["summary"]["created"].as_u64().unwrap_or(0),
        invoices_read: first["summary"]["read"].as_u64().unwrap_or(0),
        created_in_xero: first["summary"]["created"].as_u64().unwrap_or(0),
        contacts_created: first["summary"]["lookups_created"].as_u64().unwrap_or(0),
        references_written: first["summary"]["written_back"].as_u64().unwrap_or(0),
        calls: first["summary"]["calls"].as_u64().unwrap_or(0),
        ..Summary::default()
    };

    if flow != "kantata-xero" {
        step(io, "a second run, with nothing changed")?;
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let second: serde_json::Value =
            serde_json::from_str(&demo.run(&["sync", "run", flow, "--json"], None, &[0, 10])?)?;
        summary.second_run = serde_json::json!({
            "created": second["summary"]["created"],
            "updated": second["summary"]["updated"],
        });
        summary.streams = serde_json::json!({ "first_run": first["summary"]["streams"], "second_run": second["summary"]["streams"] });
        summary.second_run_created = second["summary"]["created"].as_u64().unwrap_or(0);
        summary.calls += second["summary"]["calls"].as_u64().unwrap_or(0);
        summary.duplicates = duplicates(demo, flow, &tenant)?;
        return Ok(summary);
    }
    step(
        io,
        "one invoice paid in the Xero sandbox, then a second run",
    )?;
    // An invoice still awaiting payment on both sides.
    let unpaid: std::collections::HashSet<String> = k
        .invoices()
        .into_iter()
        .filter(|i| i.status == "new" && !i.draft)
        .map(|i| format!("KAN-{}", i.number))
        .collect();
    let paid = x
        .invoices(&tenant)
        .into_iter()
        .find(|i| {
            i["InvoiceNumber"]
                .as_str()
                .is_some_and(|n| unpaid.contains(n))
                && i["Status"] == "AUTHORISED"
        })
        .ok_or_else(|| anyhow!("the first run created no invoice to pay"))?;
    x.pay_invoice(
        &tenant,
        paid["InvoiceID"].as_str().unwrap_or_default(),
        &paid["AmountDue"].to_string(),
    )
    .map_err(|e| anyhow!("paying in the sandbox failed: {e}"))?;
    // Xero compares If-Modified-Since to the second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second: serde_json::Value =
        serde_json::from_str(&demo.run(&["sync", "run", flow, "--json"], None, &[0, 10])?)?;
    summary.payments_written_back = second["summary"]["streams"]["payments"]["created"]
        .as_u64()
        .unwrap_or(0);
    summary.streams = serde_json::json!({ "first_run": first["summary"]["streams"], "second_run": second["summary"]["streams"] });
    summary.second_run_created = second["summary"]["streams"]["invoices"]["created"]
        .as_u64()
        .unwrap_or(0);
    summary.second_run = serde_json::json!({
        "created": second["summary"]["created"],
        "updated": second["summary"]["updated"],
    });
    summary.calls += second["summary"]["calls"].as_u64().unwrap_or(0);

    summary.duplicates = duplicates(demo, flow, &tenant)?;
    Ok(summary)
}

/// The client id and secret of the sandbox's demo app for `connector`.
fn app_of(sandbox: &crate::cmd_sandbox::Sandbox, connector: &str) -> Result<(String, String)> {
    Ok(match connector {
        "kantata" => (
            sandbox.kantata.client_id().to_owned(),
            sandbox.kantata.client_secret().to_owned(),
        ),
        "xero" => (
            sandbox.xero.client_id().to_owned(),
            sandbox.xero.client_secret().to_owned(),
        ),
        "quickbooks" => (
            sandbox.quickbooks.client_id().to_owned(),
            sandbox.quickbooks.client_secret().to_owned(),
        ),
        "hubspot" => (
            sandbox.hubspot.client_id().to_owned(),
            sandbox.hubspot.client_secret().to_owned(),
        ),
        other => bail!("the sandbox has no simulator for connector `{other}`"),
    })
}

/// The host overrides that point a connection of `connector` at its simulator.
fn hosts_of(
    sandbox: &crate::cmd_sandbox::Sandbox,
    connector: &str,
) -> Result<Vec<(String, String)>> {
    Ok(match connector {
        "kantata" => vec![
            ("app".to_owned(), sandbox.kantata.app_url()),
            ("api".to_owned(), sandbox.kantata.api_url()),
        ],
        "xero" => vec![
            ("login".to_owned(), sandbox.xero.login_url()),
            ("identity".to_owned(), sandbox.xero.identity_url()),
            ("api".to_owned(), sandbox.xero.api_url()),
        ],
        "quickbooks" => sandbox.quickbooks.hosts(),
        "hubspot" => sandbox.hubspot.hosts(),
        other => bail!("the sandbox has no simulator for connector `{other}`"),
    })
}

/// A template writing to QuickBooks Online, once its connections are authorized (the company named
/// by the consent's `realmId`): a first run, a second with nothing changed, then one invoice paid in
/// full in the QuickBooks sandbox and a run that records it in Kantata; duplicates counted by
/// reading both sandboxes back, and the customers created in the QuickBooks sandbox.
fn quickbooks_scenario(
    args: &DemoArgs,
    k: &KantataSim,
    q: &QuickBooksSim,
    realm: &str,
    demo: &Demo,
    io: &mut Io<'_>,
    step: &dyn Fn(&mut Io<'_>, &str) -> Result<()>,
) -> Result<Summary> {
    use weft_harness::quickbooks::Kind;
    let flow = args.flow.as_str();
    demo.run(&["connection", "test", "quickbooks"], None, &[0])?;
    let customers_before = q.records(realm, Kind::Customer).len() as u64;

    step(io, "first sync run")?;
    let first: serde_json::Value =
        serde_json::from_str(&demo.run(&["sync", "run", flow, "--json"], None, &[0, 10])?)?;
    let mut summary = Summary {
        flow: flow.to_owned(),
        read: first["summary"]["read"].as_u64().unwrap_or(0),
        created: first["summary"]["created"].as_u64().unwrap_or(0),
        invoices_read: first["summary"]["read"].as_u64().unwrap_or(0),
        created_in_quickbooks: first["summary"]["streams"]["invoices"]["created"].as_u64(),
        contacts_created: first["summary"]["lookups_created"].as_u64().unwrap_or(0),
        references_written: first["summary"]["written_back"].as_u64().unwrap_or(0),
        calls: first["summary"]["calls"].as_u64().unwrap_or(0),
        ..Summary::default()
    };
    step(io, "a second run, with nothing changed")?;
    // QuickBooks compares change times to the second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second: serde_json::Value =
        serde_json::from_str(&demo.run(&["sync", "run", flow, "--json"], None, &[0, 10])?)?;
    summary.second_run = serde_json::json!({
        "created": second["summary"]["created"],
        "updated": second["summary"]["updated"],
    });
    summary.second_run_created = second["summary"]["created"].as_u64().unwrap_or(0);
    summary.calls += second["summary"]["calls"].as_u64().unwrap_or(0);

    step(
        io,
        "one invoice paid in full in the QuickBooks sandbox, then a third run",
    )?;
    // An invoice still awaiting payment on both sides.
    let unpaid: std::collections::HashSet<String> = k
        .invoices()
        .into_iter()
        .filter(|i| i.status == "new" && !i.draft)
        .map(|i| format!("KAN-{}", i.number))
        .collect();
    let paid = q
        .records(realm, Kind::Invoice)
        .into_iter()
        .find(|i| {
            i["DocNumber"].as_str().is_some_and(|n| unpaid.contains(n))
                && i["Balance"] != serde_json::json!(0)
        })
        .ok_or_else(|| anyhow!("the first run created no invoice to pay"))?;
    q.pay_invoice(
        realm,
        paid["Id"].as_str().unwrap_or_default(),
        &paid["Balance"].to_string(),
    )
    .map_err(|e| anyhow!("paying in the sandbox failed: {e}"))?;
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let third: serde_json::Value =
        serde_json::from_str(&demo.run(&["sync", "run", flow, "--json"], None, &[0, 10])?)?;
    summary.payments_written_back = third["summary"]["streams"]["payments"]["created"]
        .as_u64()
        .unwrap_or(0);
    summary.calls += third["summary"]["calls"].as_u64().unwrap_or(0);
    summary.streams = serde_json::json!({
        "first_run": first["summary"]["streams"],
        "second_run": second["summary"]["streams"],
        "third_run": third["summary"]["streams"],
    });
    summary.duplicates = duplicates(demo, flow, realm)?;
    // The customers the flow created in the QuickBooks sandbox: none twice by display name.
    let customers = q.records(realm, Kind::Customer);
    let mut names: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for c in customers.iter().skip(customers_before as usize) {
        if let Some(n) = c["DisplayName"].as_str() {
            *names.entry(n.to_lowercase()).or_default() += 1;
        }
    }
    summary.duplicates += names.values().map(|n| n - 1).sum::<u64>();
    Ok(summary)
}

/// The legacy expense claims: the sandbox organisation refuses them at first, as most do; then
/// it is given classic claims, the Kantata people are invited to it as Xero users, and the Xero
/// Users table is filled the way a person would: `weft tables suggest`, then `weft tables import`.
fn classic_claims(
    demo: &Demo,
    x: &XeroSim,
    tenant: &str,
    io: &mut Io<'_>,
    step: &dyn Fn(&mut Io<'_>, &str) -> Result<()>,
) -> Result<()> {
    const FLOW: &str = "kantata-xero-expense-claims";
    step(
        io,
        "the Kantata people invited to the sandbox organisation as Xero users",
    )?;
    for line in demo.run(&["read", "kantata", "users"], None, &[0])?.lines() {
        let user: serde_json::Value = serde_json::from_str(line)?;
        let name = user["full_name"].as_str().unwrap_or_default();
        let (first, last) = name.split_once(' ').unwrap_or((name, ""));
        if let Some(email) = user["email_address"].as_str() {
            x.add_user(tenant, first, last, email);
        }
    }
    step(
        io,
        "the Xero Users table proposed by `weft tables suggest kantata-xero-expense-claims xero-users --out proposal.csv` and imported with `weft tables import kantata-xero-expense-claims xero-users proposal.csv`",
    )?;
    let proposal = demo.workspace.join("proposal.csv");
    let out = proposal.display().to_string();
    demo.run(
        &["tables", "suggest", FLOW, "xero-users", "--out", &out],
        None,
        &[0],
    )?;
    demo.run(&["tables", "import", FLOW, "xero-users", &out], None, &[0])?;
    step(
        io,
        "a first run on an organisation without classic expense claims (refused, as Xero does)",
    )?;
    let refused = demo
        .command(&["sync", "run", FLOW])
        .output()
        .context("cannot run weft")?;
    let said = String::from_utf8_lossy(&refused.stderr);
    if refused.status.success() || !said.contains("kantata-xero-bills") {
        bail!(
            "the organisation without classic claims was not refused with the bills remedy: {}",
            said.trim()
        );
    }
    step(io, "classic claims turned on in the sandbox organisation")?;
    if !x.enable_classic_expenses(tenant) {
        bail!("the Xero sandbox has no organisation {tenant}");
    }
    Ok(())
}

/// Duplicates at the destinations, found by reading them back with `weft read`: for each stream
/// with a natural key, the records sharing the key of a record the flow wrote, beyond the first.
fn duplicates(demo: &Demo, flow: &str, tenant: &str) -> Result<u64> {
    let ws = weft_engine::workspace::Workspace::find(&demo.workspace)?;
    let file = weft_engine::flow::Flow::load(&ws.dir().join("flows").join(format!("{flow}.toml")))?;
    let state = ws.open_state()?;
    let mut extra = 0;
    for (name, stream) in &file.file.streams {
        let Some(nk) = &stream.write.natural_key else {
            continue;
        };
        let alias = &stream.write.connection;
        let connection = file.connection_name(alias);
        let spec = crate::specs::find(&file.file.connections[alias].connector)?;
        let primary = spec
            .file()
            .resources
            .get(&stream.write.resource)
            .map_or("id".to_owned(), |r| r.primary_key.clone());
        let mut read = vec!["read", connection.as_str(), stream.write.resource.as_str()];
        if spec.file().tenants.is_some() {
            read.extend(["--tenant", tenant]);
        }
        let text = demo.run(&read, None, &[0])?;
        let written: std::collections::HashSet<String> = state
            .links(flow, name)?
            .into_iter()
            .filter_map(|l| l.dest_id)
            .collect();
        let text_of = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        let mut keys: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        let mut ours = std::collections::HashSet::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let record: serde_json::Value = serde_json::from_str(line)?;
            let Some(key) = weft_core::fieldpath::lookup(&record, &nk.field).and_then(text_of)
            else {
                continue;
            };
            if text_of(&record[primary.as_str()]).is_some_and(|id| written.contains(&id)) {
                ours.insert(key.clone());
            }
            *keys.entry(key).or_default() += 1;
        }
        extra += ours
            .iter()
            .map(|k| keys.get(k).copied().unwrap_or(1).saturating_sub(1))
            .sum::<u64>();
    }
    Ok(extra)
}
