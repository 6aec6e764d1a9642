//! The `weft` command line, as a library so tests can drive it in-process.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod cmd_cassette;
mod cmd_client;
mod cmd_connection;
mod cmd_connectors;
mod cmd_demo;
mod cmd_notify;
mod cmd_plugins;
mod cmd_sandbox;
mod cmd_serve;
mod cmd_spec;
mod cmd_state;
mod cmd_sync;
mod cmd_tables;
mod cmd_use;
mod cmd_worker;
mod connect;
mod progress;
mod render;
mod specs;
mod table;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Weft: connectors as TOML specs — Kantata OX, Xero and yours.
#[derive(Debug, Parser)]
#[command(
    name = "weft",
    version,
    about = "Weft: integrations where a connector is a TOML spec (Kantata OX, Xero and yours)",
    propagate_version = true,
    after_help = "Examples:\n  weft connectors list\n  weft connectors show xero\n  weft spec check specs/\n  weft sandbox --json\n\nDocs: README.md and docs/connectors/ in the Weft repository."
)]
pub struct Cli {
    /// The workspace folder (default: the current folder or the nearest one above holding weft.toml).
    #[arg(long, global = true, value_name = "DIR")]
    workspace: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a workspace: weft.toml (for version control, no secrets) and .weft/ (ignored by git).
    Init {
        /// Folder to create it in (default: the current folder).
        dir: Option<std::path::PathBuf>,
        /// Also write a flow template: `kantata-xero` (flows/kantata-xero.toml and its tables).
        #[arg(long)]
        template: Option<String>,
    },
    /// Manage OAuth clients: the apps you register at Kantata, Xero and other providers.
    #[command(subcommand)]
    Client(cmd_client::ClientCmd),
    /// Manage connections: a connector, its OAuth client, concurrency and tenants.
    #[command(subcommand)]
    Connection(cmd_connection::ConnectionCmd),
    /// Read a resource through a connection: one JSON record per line on stdout.
    Read(cmd_use::ReadArgs),
    /// Create (or, with --update, update) records read as JSON Lines from standard input; one
    /// result per record on stdout.
    Write(cmd_use::WriteArgs),
    /// The whole job on the built-in sandbox: simulators, workspace, clients, connections,
    /// authorization, a sync, a payment written back; prints what happened.
    Demo(cmd_demo::DemoArgs),
    /// Run flows: `weft sync run FLOW [--stream S] [--dry-run] [--wait]`, `weft sync status`.
    #[command(subcommand)]
    Sync(cmd_sync::SyncCmd),
    /// The workspace's flows: `weft flow list`, `weft flow show FLOW`, `weft flow check [FLOW]`.
    #[command(subcommand)]
    Flow(cmd_sync::FlowCmd),
    /// A flow's mapping tables: `weft tables list FLOW`, `show FLOW TABLE`, `import FLOW TABLE
    /// FILE.csv` (M-Bridge's columns), `suggest FLOW TABLE [--out FILE]`.
    #[command(subcommand)]
    Tables(cmd_tables::TablesCmd),
    /// Manage the sealed credential store.
    #[command(subcommand)]
    Secrets(cmd_client::SecretsCmd),
    /// List and inspect the connectors Weft knows.
    #[command(subcommand)]
    Connectors(cmd_connectors::ConnectorsCmd),
    /// Work with connector spec files.
    #[command(subcommand)]
    Spec(cmd_spec::SpecCmd),
    /// The history of sync runs: when, how they ended, what they read, wrote and waited.
    #[command(subcommand)]
    Runs(cmd_state::RunsCmd),
    /// The per-record error queue: records a run could not sync, with their reason.
    #[command(subcommand)]
    Errors(cmd_state::ErrorsCmd),
    /// Where the workspace's state is kept: `weft state migrate --to postgres://…` copies the
    /// SQLite state to PostgreSQL; `weft state password` seals the PostgreSQL password.
    #[command(subcommand)]
    State(cmd_state::StateCmd),
    /// List the native plugins found in the plugin directories.
    #[command(subcommand)]
    Plugins(cmd_plugins::PluginsCmd),
    /// Check every spec and plugin: ✓ or ✘ for each spec loading, each plugin loading with its
    /// ABI in range, and each plugin a spec names being found with what the spec asks of it.
    Doctor,
    /// Start Kantata and Xero simulators on 127.0.0.1 with seeded demo data, and serve until
    /// interrupted. Prints every base URL and the demo client credentials.
    Sandbox(cmd_sandbox::SandboxArgs),
    /// Serve the console (pages for connectors, OAuth clients, connections, users and the
    /// audit log) on 127.0.0.1:8080; it requires a login (`weft user add NAME` first).
    Serve(cmd_serve::ServeArgs),
    /// The console's users: `weft user add NAME`, `list`, `remove NAME`, `passwd NAME`.
    #[command(subcommand)]
    User(cmd_serve::UserCmd),
    /// The audit log: who signed in, created, changed, tested, ran or deleted what.
    Audit(cmd_serve::AuditArgs),
    /// Who `weft serve` tells when a run stops, fails or queues errors: `weft notify add NAME
    /// --webhook`, `add NAME --email-to ADDRESS --from ADDRESS`, `list`, `remove NAME`, `test`.
    #[command(subcommand)]
    Notify(cmd_notify::NotifyCmd),
    /// Take flow runs from the work queue (state on PostgreSQL) and run them, until Ctrl-C:
    /// `weft worker [--concurrency N]`; start one on each machine of a fleet.
    Worker(cmd_worker::WorkerArgs),
    /// The work queue a fleet's workers take runs from: `weft queue add FLOW`, `list`, `show
    /// ID`, `cancel ID`.
    #[command(subcommand)]
    Queue(cmd_worker::QueueCmd),
    /// Provider webhooks `weft serve` receives: `weft webhook set-key xero`, `remove-key xero`.
    #[command(subcommand)]
    Webhook(cmd_notify::WebhookCmd),
}

/// Where a command writes: stdout for results, stderr for diagnostics and messages.
pub struct Io<'a> {
    /// Results.
    pub out: &'a mut dyn Write,
    /// Diagnostics, progress and messages.
    pub err: &'a mut dyn Write,
}

/// Runs `weft` with `args` (the first is the program name) and returns the exit code.
pub fn run<I, T>(args: I, io: &mut Io<'_>) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => {
            let code = if err.use_stderr() { 2 } else { 0 };
            let text = err.render().to_string();
            let _ = if code == 0 {
                io.out.write_all(text.as_bytes())
            } else {
                io.err.write_all(text.as_bytes())
            };
            return code;
        }
    };
    let workspace = cli.workspace.as_deref();
    let result = match cli.command {
        Command::Init { dir, template } => cmd_client::init(dir, template, workspace, io),
        Command::Sync(cmd) => cmd_sync::run(cmd, workspace, io),
        Command::Flow(cmd) => cmd_sync::flow(cmd, workspace, io),
        Command::Tables(cmd) => cmd_tables::run(cmd, workspace, io),
        Command::Demo(args) => cmd_demo::run(args, io),
        Command::Client(cmd) => cmd_client::run(cmd, workspace, io),
        Command::Secrets(cmd) => cmd_client::secrets(cmd, workspace, io),
        Command::Connection(cmd) => cmd_connection::run(cmd, workspace, io),
        Command::Read(args) => cmd_use::read(args, workspace, io),
        Command::Write(args) => cmd_use::write(args, workspace, io),
        Command::Connectors(cmd) => cmd_connectors::run(cmd, io),
        Command::Spec(cmd) => cmd_spec::run(cmd, workspace, io),
        Command::Sandbox(args) => cmd_sandbox::run(args, io),
        Command::Runs(cmd) => cmd_state::runs(cmd, workspace, io),
        Command::Errors(cmd) => cmd_state::errors(cmd, workspace, io),
        Command::State(cmd) => cmd_state::state(cmd, workspace, io),
        Command::Plugins(cmd) => cmd_plugins::run(cmd, io),
        Command::Doctor => cmd_plugins::doctor(io),
        Command::Serve(args) => cmd_serve::serve(args, workspace, io),
        Command::User(cmd) => cmd_serve::user(cmd, workspace, io),
        Command::Audit(args) => cmd_serve::audit(args, workspace, io),
        Command::Notify(cmd) => cmd_notify::notify(cmd, workspace, io),
        Command::Worker(args) => cmd_worker::worker(args, workspace, io),
        Command::Queue(cmd) => cmd_worker::queue(cmd, workspace, io),
        Command::Webhook(cmd) => cmd_notify::webhook(cmd, workspace, io),
    };
    match result {
        Ok(code) => code,
        // A reader that stopped reading (`weft … | head`) chose to; nothing failed.
        Err(err) if is_broken_pipe(&err) => 0,
        Err(err) => {
            let _ = writeln!(io.err, "error: {err:#}");
            1
        }
    }
}

/// Whether `err` comes from writing to a pipe whose reader has gone.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == BrokenPipe)
            || cause
                .downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind)
                == Some(BrokenPipe)
    })
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // Not locked for the whole command: the progress line's ticker thread writes to stderr too
    // (see `progress`).
    let mut err = std::io::stderr();
    // What a token keeper tells (a cut-off refresh recovered) is a warning on stderr, whichever
    // command (a run, a worker's job, a test call) made the refresh; it never holds a token.
    weft_engine::tokens::set_notice_hook(|line| {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("warning: {line}");
        }
    });
    let code = run(
        std::env::args_os(),
        &mut Io {
            out: &mut out,
            err: &mut err,
        },
    );
    let _ = out.flush();
    ExitCode::from(code)
}
