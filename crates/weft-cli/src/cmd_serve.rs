//! `weft serve` (the console; the `weft-server` crate does the serving), `weft user
//! add|list|remove|passwd` (the console's users) and `weft audit` (its audit log).

use std::io::{IsTerminal as _, Read as _};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use weft_engine::workspace::Workspace;
use weft_server::{Role, Store};

use crate::cmd_client::{confirm, start_dir};
use crate::{Io, connect, specs};

/// How long `weft serve`, once asked to stop, lets answers under way finish.
const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The address to listen on. Anything but loopback needs --tls-cert and --tls-key (or
    /// --insecure-http).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM); needs --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Serve plain HTTP on a non-loopback address (passwords and cookies readable on the
    /// network); prefer --tls-cert/--tls-key, or 127.0.0.1 behind a TLS-terminating proxy.
    #[arg(long, conflicts_with = "tls_cert")]
    insecure_http: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum UserCmd {
    /// Add a console user; the first one is always an administrator. The password is asked
    /// for hidden (twice), or read from standard input with --password-stdin.
    Add {
        /// Login name.
        name: String,
        /// `admin` or `member` (default; the first user is an administrator whatever is given).
        #[arg(long, default_value = "member")]
        role: String,
        /// Read the password from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the console's users.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a user and end their sessions (never the last administrator).
    Remove {
        /// Login name.
        name: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Set a user's password and end their sessions.
    Passwd {
        /// Login name.
        name: String,
        /// Read the password from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    /// How many entries, newest first.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn workspace_of(workspace: Option<&Path>) -> Result<Workspace> {
    Ok(Workspace::find(&start_dir(workspace)?)?)
}

fn store(workspace: Option<&Path>) -> Result<Store> {
    Ok(Store::open(&workspace_of(workspace)?.private_dir())?)
}

/// Who ran a command, for the audit log.
fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

fn read_password(from_stdin: bool) -> Result<String> {
    if from_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the password from standard input")?;
        let len = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .map_or(text.len(), str::len);
        text.truncate(len);
        return Ok(text);
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "no terminal to ask for the password: pass --password-stdin and write it to standard input"
        );
    }
    let first =
        rpassword::prompt_password("Password (hidden): ").context("cannot read the password")?;
    let again = rpassword::prompt_password("Once more: ").context("cannot read the password")?;
    if first != again {
        bail!("the two passwords differ; nothing was changed");
    }
    Ok(first)
}

pub(crate) fn serve(args: ServeArgs, workspace: Option<&Path>, io: &mut Io<'_>) -> Result<u8> {
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(weft_server::TlsFiles { cert, key }),
        _ => None,
    };
    if let Some(warning) = weft_server::check_bind(args.listen, tls.is_some(), args.insecure_http)?
    {
        writeln!(io.err, "{warning}")?;
    }
    let ws = workspace_of(workspace)?;
    let secure = tls.is_some();
    let config = weft_server::Config {
        workspace: ws.dir().to_path_buf(),
        listen: args.listen,
        tls,
        insecure_http: args.insecure_http,
        specs: specs::catalogue()?,
    };
    let out = &mut *io.out;
    let err = &mut *io.err;
    let (report, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let automate = weft_server::Automate {
        report: Some(report),
        ..Default::default()
    };
    // Ctrl-C or SIGTERM: no new connection is taken, answers under way get up to STOP_GRACE to
    // finish (a page streaming a run's progress never does), then the process ends with 0.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    connect::on_stop(move || {
        let _ = stop.send(true);
    })?;
    let asked = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    connect::runtime()?.block_on(async {
        let grace = tokio::time::sleep(Duration::MAX);
        tokio::pin!(grace);
        let mut stopping = false;
        let server = weft_server::serve_with(
            config,
            automate,
            |addr| {
                let _ = writeln!(
                    out,
                    "the Weft console serves {} at {base}/ (open it under this name: the OAuth callback URL is {base}/oauth/callback); stop it with Ctrl-C",
                    ws.dir().display(),
                    base = weft_server::base_url(addr, secure)
                );
                let _ = out.flush();
            },
            asked(stopped.clone()),
        );
        tokio::pin!(server);
        loop {
            tokio::select! {
                // The stop is told before the server, which it ends, is polled again.
                biased;
                () = asked(stopped.clone()), if !stopping => {
                    stopping = true;
                    grace.as_mut().reset(tokio::time::Instant::now() + STOP_GRACE);
                    let _ = writeln!(err, "stopping: no new connections; answers under way have {} s to finish (a flow run under way stops where it is, and its next run settles it)", STOP_GRACE.as_secs());
                }
                () = &mut grace, if stopping => return Ok(()),
                served = &mut server => return served,
                Some(happened) = reports.recv() => {
                    let _ = writeln!(err, "{}  {happened}", jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ"));
                }
            }
        }
    })?;
    writeln!(io.out, "the Weft console stopped")?;
    Ok(0)
}

pub(crate) fn user(cmd: UserCmd, workspace: Option<&Path>, io: &mut Io<'_>) -> Result<u8> {
    let store = store(workspace)?;
    match cmd {
        UserCmd::Add {
            name,
            role,
            password_stdin,
        } => {
            let Some(role) = Role::parse(&role) else {
                bail!("--role `{role}`: use admin or member");
            };
            weft_server::store::check_user_name(&name)?;
            if store.user(&name)?.is_some() {
                bail!(
                    "a user `{name}` exists already; change their password with `weft user passwd {name}`"
                );
            }
            let password = read_password(password_stdin)?;
            let role = store.add_user(&name, &password, role)?;
            store.audit(&cli_actor(), "user.add", &name, role.as_str())?;
            let first = if store.users()?.len() == 1 {
                " (the first user is always an administrator)"
            } else {
                ""
            };
            writeln!(
                io.out,
                "added {} `{name}`{first}",
                if role == Role::Admin {
                    "administrator"
                } else {
                    "member"
                }
            )?;
        }
        UserCmd::List { json } => {
            let users = store.users()?;
            let ws = workspace_of(workspace)?;
            let owns = |u: &weft_server::User| ws.file.connections_owned_by(&u.name);
            if json {
                #[derive(serde::Serialize)]
                struct Row<'a> {
                    #[serde(flatten)]
                    user: &'a weft_server::User,
                    /// The connections they own in the workspace.
                    connections: Vec<&'a str>,
                }
                let rows: Vec<Row<'_>> = users
                    .iter()
                    .map(|u| Row {
                        user: u,
                        connections: owns(u),
                    })
                    .collect();
                serde_json::to_writer_pretty(&mut *io.out, &rows)?;
                writeln!(io.out)?;
            } else if users.is_empty() {
                writeln!(
                    io.out,
                    "no console users yet; add the first (an administrator) with `weft user add NAME`"
                )?;
            } else {
                let mut table =
                    crate::table::Columns::new(&["NAME", "ROLE", "CONNECTIONS", "ADDED"]);
                for u in &users {
                    let owned = owns(u);
                    let owned = if owned.is_empty() {
                        "-".to_owned()
                    } else {
                        owned.join(", ")
                    };
                    table.row([
                        u.name.as_str(),
                        u.role.as_str(),
                        owned.as_str(),
                        u.created.as_str(),
                    ]);
                }
                table.write(io.out)?;
            }
        }
        UserCmd::Remove { name, yes } => {
            // Checked before asking, and again (on the file as it is then) when removing.
            store.removal_blocked(&name, &workspace_of(workspace)?)?;
            if !confirm(
                &format!("Remove console user `{name}`?"),
                &format!("removing `{name}`"),
                yes,
                io,
            )? {
                return Ok(1);
            }
            store.remove_user(&name, &workspace_of(workspace)?)?;
            store.audit(&cli_actor(), "user.remove", &name, "removed")?;
            writeln!(io.out, "removed user `{name}` and ended their sessions")?;
        }
        UserCmd::Passwd {
            name,
            password_stdin,
        } => {
            if store.user(&name)?.is_none() {
                bail!("no user `{name}`; see `weft user list`");
            }
            let password = read_password(password_stdin)?;
            store.set_password(&name, &password)?;
            store.audit(
                &cli_actor(),
                "user.passwd",
                &name,
                "password changed, sessions ended",
            )?;
            writeln!(
                io.out,
                "changed the password of `{name}` and ended their sessions"
            )?;
        }
    }
    Ok(0)
}

pub(crate) fn audit(args: AuditArgs, workspace: Option<&Path>, io: &mut Io<'_>) -> Result<u8> {
    let entries = store(workspace)?.audit_log(args.limit)?;
    if args.json {
        serde_json::to_writer_pretty(&mut *io.out, &entries)?;
        writeln!(io.out)?;
    } else if entries.is_empty() {
        writeln!(io.out, "nothing recorded yet")?;
    } else {
        let mut table =
            crate::table::Columns::new(&["WHEN (UTC)", "WHO", "ACTION", "ON", "DETAIL"]);
        for e in &entries {
            table.row([
                e.at.as_str(),
                e.actor.as_str(),
                e.action.as_str(),
                e.target.as_str(),
                e.detail.as_str(),
            ]);
        }
        table.write(io.out)?;
    }
    Ok(0)
}
