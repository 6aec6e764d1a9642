//! Opening a connection for use (its spec, hosts, limiter, OAuth client and tokens as one engine
//! `Session`), and `weft connection authorize`: the loopback callback, the browser, the code
//! exchange, and the tenants the consent connected.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use weft_core::{DEFAULT_CALLBACK_PORT, Spec, callback_url};
use weft_engine::limits::{Clock, SystemClock};
use weft_engine::oauth::{Callback, OAuthApp};
use weft_engine::request::Hosts;
use weft_engine::workspace::{Connection, TenantRef, Workspace, connection_tokens_id};

use crate::cmd_client::scopes;
use crate::{Io, specs};

pub(crate) use weft_engine::connect::Opened;

/// The current-thread runtime every command uses.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Calls `then`, on a thread of its own, once the process is asked to stop (Ctrl-C or SIGTERM).
/// The signals are watched from before this returns, and from then on the first no longer ends
/// the process by itself: `then` decides what stopping means. A second one ends it at once, with
/// exit code 130, for whoever will not wait for a clean stop.
pub(crate) fn on_stop(then: impl FnOnce() + Send + 'static) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = runtime()?;
    let (mut interrupt, mut terminate) = rt
        .block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            ))
        })
        .context("cannot watch for Ctrl-C and SIGTERM")?;
    std::thread::Builder::new()
        .name("weft-signals".into())
        .spawn(move || {
            let mut asked = || {
                rt.block_on(async {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                });
            };
            asked();
            then();
            asked();
            std::process::exit(130);
        })
        .context("cannot start the signal watcher")?;
    Ok(())
}

pub(crate) fn find(all: &[Workspace], name: &str) -> Result<(usize, Connection)> {
    Ok(weft_engine::connect::find(all, name)?)
}

/// The OAuth client of `connection` (when its connector uses OAuth), sending the browser back
/// to the callback on `port`.
fn oauth_app(
    all: &[Workspace],
    spec: &Spec,
    hosts: &Hosts,
    connection: &Connection,
    port: u16,
) -> Result<Option<OAuthApp>> {
    Ok(weft_engine::connect::oauth_app(
        all,
        spec,
        hosts,
        connection,
        &callback_url(port),
    )?)
}

/// Opens connection `name` with the wall clock.
pub(crate) fn open(name: &str, workspace: Option<&Path>) -> Result<Opened> {
    let all = scopes(workspace)?;
    let (_, connection) = find(&all, name)?;
    let spec = specs::find(&connection.connector)?;
    Ok(weft_engine::connect::open(
        &all,
        spec,
        name,
        &callback_url(DEFAULT_CALLBACK_PORT),
    )?)
}

/// How `weft connection authorize` (and `create --authorize`) runs the consent.
#[derive(Debug, Args)]
pub(crate) struct AuthorizeOptions {
    /// Port of the callback server; the callback URL registered at the provider must use it
    /// (0 is refused: a port picked at random cannot match a registered URL).
    #[arg(long, default_value_t = DEFAULT_CALLBACK_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) port: u16,
    /// Print the authorize URL instead of opening a browser.
    #[arg(long)]
    pub(crate) no_browser: bool,
    /// Keep only this tenant among those the consent connected (repeatable).
    #[arg(long = "tenant", value_name = "ID")]
    pub(crate) tenants: Vec<String>,
    /// Seconds to wait for the browser to come back.
    #[arg(long, default_value_t = 300)]
    pub(crate) timeout: u64,
}

/// `weft connection authorize NAME`.
pub(crate) fn authorize(
    name: &str,
    args: &AuthorizeOptions,
    workspace: Option<&Path>,
    io: &mut Io<'_>,
) -> Result<u8> {
    let mut all = scopes(workspace)?;
    let (index, mut connection) = find(&all, name)?;
    let spec = specs::find(&connection.connector)?;
    connection.method = weft_engine::connect::method(&all[index], spec.file(), name, &connection)?;
    if connection.method == Some(weft_core::model::AuthMethod::Token) {
        bail!(
            "connection `{name}` signs in with a pasted token (`token`), so there is nothing to authorize; give it a new token with `weft connection edit {name} --token-stdin`, or switch it to OAuth with `weft connection edit {name} --method oauth2 --client CLIENT`"
        );
    }
    let hosts = Hosts::for_connection(spec.file(), &connection.fields, &connection.hosts)?;
    let Some(app) = oauth_app(&all, &spec, &hosts, &connection, args.port)? else {
        if spec.file().auth.oauth2.is_some() {
            bail!(
                "connection `{name}` has no OAuth client to authorize with; give it one with `weft connection edit {name} --client CLIENT` (see `weft client list`)"
            );
        }
        bail!(
            "connector `{}` does not authorize with OAuth; give the connection its token with `weft connection edit {} --token-stdin`",
            connection.connector,
            name
        );
    };
    let runtime = runtime()?;
    let http = weft_engine::http::client()?;
    let (tokens, callback_params) = runtime.block_on(async {
        if app.is_client_credentials() {
            // Machine to machine: no browser, the client's own credentials get the token.
            return app
                .client_credentials(&http, SystemClock.now_ms())
                .await
                .map(|tokens| (tokens, BTreeMap::new()))
                .map_err(|e| {
                    if e.is_invalid_client() {
                        anyhow!(
                            "{e}; the provider does not accept the OAuth client `{client}`: check its client ID and secret with `weft client edit {client} --secret-stdin`",
                            client = connection.client.as_deref().unwrap_or("CLIENT"),
                        )
                    } else {
                        anyhow!(e)
                    }
                });
        }
        let callback = Callback::bind(args.port).await?;
        let pending = app.start();
        writeln!(
            io.err,
            "waiting for {} on {} (this URL must be registered as the app's callback URL)",
            spec.file().name,
            callback_url(callback.port())
        )?;
        let opened = !args.no_browser && open_browser(pending.url.as_str());
        if opened {
            writeln!(
                io.err,
                "a browser window is open at {}'s consent page; if none appeared, open this URL:",
                spec.file().name
            )?;
        } else {
            writeln!(io.err, "open this URL in a browser to authorize:")?;
        }
        writeln!(io.out, "{}", pending.url)?;
        io.out.flush()?;
        let state = pending.state.clone();
        let answer = callback
            .wait_answer(&state, Duration::from_secs(args.timeout))
            .await?;
        let tokens = app
            .exchange(&http, pending, &answer.code, SystemClock.now_ms())
            .await
            .map_err(|e| {
                if e.is_invalid_client() {
                    anyhow!(
                        "{e}; the provider does not accept the OAuth client `{client}`: check its client ID, or generate a new secret at the provider and run `weft client edit {client} --secret-stdin`",
                        client = connection.client.as_deref().unwrap_or_default()
                    )
                } else {
                    anyhow!(e)
                }
            })?;
        anyhow::Ok((tokens, answer.params))
    })?;
    // Sealed first: whatever happens next, the grant is not lost.
    all[index]
        .secrets()?
        .put(&connection_tokens_id(name), &tokens.to_sealed_json())?;
    // Messages go to stderr: stdout holds the authorize URL alone, for a script to pick up.
    writeln!(io.err, "authorized connection `{}`", name)?;

    if spec.file().tenants.is_none() {
        return Ok(0);
    }
    if let Some(weft_core::model::TenantSelect::CallbackParam { param }) =
        spec.file().tenants.as_ref().map(|t| &t.select)
        && callback_params
            .get(param)
            .is_none_or(|v| v.trim().is_empty())
    {
        bail!(
            "the provider's answer at the callback did not name the organisation (no `{param}` beside the code); run `weft connection authorize {name}` again and pick an organisation on the consent page"
        );
    }
    let opened = open(name, workspace)?;
    let (mut found, listed) = runtime
        .block_on(weft_engine::connect::consent_tenants(
            &opened.session,
            &tokens,
            &callback_params,
        ))?
        .unwrap_or_default();
    if found.is_empty() {
        bail!(
            "the consent connected no organisation this app can use (the provider lists {} for the grant); run `weft connection authorize {}` again and select an organisation on the consent page",
            listed,
            name
        );
    }
    if !args.tenants.is_empty() {
        let unknown: Vec<&String> = args
            .tenants
            .iter()
            .filter(|t| !found.iter().any(|f| &f.id == *t))
            .collect();
        if !unknown.is_empty() {
            bail!(
                "--tenant {} was not connected by this consent; it connected: {}",
                unknown
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                describe(&found)
            );
        }
        found.retain(|f| args.tenants.contains(&f.id));
    } else if found.len() > 1 && std::io::stdin().is_terminal() {
        found = choose(found, io)?;
    }
    let total = weft_engine::connect::add_tenants(&mut all[index], name, &found)?;
    writeln!(
        io.err,
        "tenant(s) added: {}; the connection reaches {total}",
        describe(&found)
    )?;
    Ok(0)
}

fn describe(tenants: &[TenantRef]) -> String {
    tenants
        .iter()
        .map(|t| format!("{} ({})", t.name, t.id))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Lets the person pick among several organisations on a terminal.
fn choose(found: Vec<TenantRef>, io: &mut Io<'_>) -> Result<Vec<TenantRef>> {
    use std::io::BufRead as _;
    writeln!(io.err, "this consent connected several organisations:")?;
    for (i, t) in found.iter().enumerate() {
        writeln!(io.err, "  {}. {} ({})", i + 1, t.name, t.id)?;
    }
    loop {
        write!(
            io.err,
            "which should this connection use? numbers separated by commas, Enter for all: "
        )?;
        io.err.flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        if line.trim().is_empty() {
            return Ok(found);
        }
        let picked: Result<Vec<usize>, _> =
            line.split(',').map(|p| p.trim().parse::<usize>()).collect();
        match picked {
            Ok(p) if !p.is_empty() && p.iter().all(|n| (1..=found.len()).contains(n)) => {
                return Ok(found
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| p.contains(&(i + 1)))
                    .map(|(_, t)| t.clone())
                    .collect());
            }
            _ => writeln!(io.err, "enter numbers between 1 and {}", found.len())?,
        }
    }
}

/// Opens `url` in the person's browser; false when none could be started.
fn open_browser(url: &str) -> bool {
    let mut command = if let Some(browser) = std::env::var_os("BROWSER").filter(|b| !b.is_empty()) {
        std::process::Command::new(browser)
    } else if cfg!(target_os = "macos") {
        std::process::Command::new("open")
    } else if cfg!(windows) {
        let mut c = std::process::Command::new("rundll32");
        c.arg("url.dll,FileProtocolHandler");
        c
    } else {
        std::process::Command::new("xdg-open")
    };
    command
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

/// Revokes the grant of `name` at the provider, when its spec declares how. Returns whether a
/// revocation was made.
pub(crate) fn revoke(name: &str, workspace: Option<&Path>) -> Result<bool> {
    let all = scopes(workspace)?;
    let (_, connection) = find(&all, name)?;
    let spec = specs::find(&connection.connector)?;
    Ok(runtime()?.block_on(weft_engine::connect::revoke(&all, &spec, name))?)
}
