//! Opening a connection for use (its spec, hosts, limiter, OAuth client and tokens as one engine
//! `Session`), and `weft connection authorize`: the loopback callback, the browser, the code
//! exchange, and the tenants the consent connected.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use weft_core::model::TenantSelect;
use weft_core::{DEFAULT_CALLBACK_PORT, Spec, callback_url};
use weft_engine::limits::{Clock, Limiter, SystemClock};
use weft_engine::oauth::{Callback, OAuthApp, jwt_claims};
use weft_engine::request::{Hosts, RequestContext};
use weft_engine::secrets::Secret;
use weft_engine::session::Session;
use weft_engine::tokens::TokenKeeper;
use weft_engine::workspace::{
    Connection, TenantRef, Workspace, client_secret_id, connection_tokens_id,
};

use crate::cmd_client::scopes;
use crate::{Io, specs};

/// A connection opened for use.
pub(crate) struct Opened {
    pub(crate) session: Session,
    pub(crate) connection: Connection,
}

/// The current-thread runtime every command uses.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn find(all: &[Workspace], name: &str) -> Result<(usize, Connection)> {
    all.iter()
        .enumerate()
        .find_map(|(i, s)| s.file.connections.get(name).map(|c| (i, c.clone())))
        .ok_or_else(|| anyhow!("no connection `{name}`; see `weft connection list`"))
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
    // A connection given a pasted token has no OAuth client.
    let uses_oauth =
        spec.file().auth.oauth2.is_some() || spec.file().auth.client_credentials.is_some();
    let (true, Some(name)) = (uses_oauth, &connection.client) else {
        return Ok(None);
    };
    let Some((scope, client)) = all
        .iter()
        .find_map(|s| s.file.clients.get(name).map(|c| (s, c)))
    else {
        bail!(
            "the connection's OAuth client `{name}` does not exist; add it with `weft client add {name} --connector {}`",
            connection.connector
        );
    };
    let secret = scope.secrets()?.get(&client_secret_id(name))?;
    if secret.is_none() {
        // Found now rather than at the provider, after the person went through consent.
        bail!(
            "the secret of OAuth client `{name}` is not in the credential store ({}); enter it again with `weft client edit {name}`",
            scope.credentials_path().display()
        );
    }
    Ok(Some(OAuthApp::new(
        spec.file(),
        hosts,
        &client.client_id,
        secret,
        &callback_url(port),
    )?))
}

/// Opens connection `name` with the wall clock.
pub(crate) fn open(name: &str, workspace: Option<&Path>) -> Result<Opened> {
    let all = scopes(workspace)?;
    let (index, connection) = find(&all, name)?;
    let spec = specs::find(&connection.connector)?;
    let hosts = Hosts::new(spec.file(), &connection.hosts)?;
    let app = oauth_app(&all, &spec, &hosts, &connection, DEFAULT_CALLBACK_PORT)?;
    // Borrowed concurrency: the borrower and its lender draw from one pool at the lender's
    // level, in this process and across processes.
    let pool = match &connection.borrow_concurrency_from {
        Some(lender) => {
            let (at, c) = find(&all, lender).with_context(|| {
                format!("connection `{name}` borrows concurrency from `{lender}`, which is gone; run `weft connection edit {name} --no-borrow`")
            })?;
            Some((c.concurrency, all[at].pool_dir(lender)))
        }
        None if all
            .iter()
            .flat_map(|s| s.file.connections.values())
            .any(|c| c.borrow_concurrency_from.as_deref() == Some(name)) =>
        {
            Some((connection.concurrency, all[index].pool_dir(name)))
        }
        None => None,
    };
    let http = weft_engine::http::client()?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let refresh = spec
        .file()
        .auth
        .oauth2
        .as_ref()
        .and_then(|o| o.refresh.clone());
    let tokens = TokenKeeper::new(
        name,
        &connection_tokens_id(name),
        all[index].secrets()?,
        app,
        refresh,
        http.clone(),
        clock.clone(),
    );
    let limiter = match &pool {
        Some((level, dir)) => Limiter::shared(spec.file(), *level, dir),
        None => Limiter::new(spec.file(), connection.concurrency),
    };
    Ok(Opened {
        session: Session::new(spec, hosts, limiter, http, tokens, clock),
        connection,
    })
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
    let (index, connection) = find(&all, name)?;
    let spec = specs::find(&connection.connector)?;
    let hosts = Hosts::new(spec.file(), &connection.hosts)?;
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

    let Some(tenancy) = spec.file().tenants.clone() else {
        return Ok(0);
    };
    let mut found = match (&tenancy.select, &tenancy.resource) {
        // The provider named the tenant just authorized in the callback.
        (TenantSelect::CallbackParam { param }, _) => {
            let Some(id) = callback_params.get(param).filter(|v| !v.trim().is_empty()) else {
                bail!(
                    "the provider's answer at the callback did not name the organisation (no `{param}` beside the code); run `weft connection authorize {name}` again and pick an organisation on the consent page"
                );
            };
            vec![TenantRef {
                id: id.clone(),
                name: id.clone(),
            }]
        }
        (_, Some(resource)) => {
            list_tenants(name, workspace, &runtime, &tenancy, resource, &tokens)?
        }
        (_, None) => bail!(
            "connector `{}` lists no tenants (its spec's [tenants] has no resource)",
            connection.connector
        ),
    };
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
    let target = all[index]
        .file
        .connections
        .get_mut(name)
        .ok_or_else(|| anyhow!("connection `{}` disappeared", name))?;
    for t in &found {
        match target.tenants.iter_mut().find(|x| x.id == t.id) {
            Some(existing) => existing.name = t.name.clone(),
            None => target.tenants.push(t.clone()),
        }
    }
    let total = target.tenants.len();
    all[index].save()?;
    writeln!(
        io.err,
        "tenant(s) added: {}; the connection reaches {total}",
        describe(&found)
    )?;
    Ok(0)
}

/// The tenants the consent just connected, from the spec's tenant list (its `keep-if` already
/// applied): those whose record matches the token's claim, or every one listed.
fn list_tenants(
    name: &str,
    workspace: Option<&Path>,
    runtime: &tokio::runtime::Runtime,
    tenancy: &weft_core::model::Tenants,
    resource: &str,
    tokens: &weft_engine::oauth::TokenSet,
) -> Result<Vec<TenantRef>> {
    let opened = open(name, workspace)?;
    let mut listed = Vec::new();
    runtime.block_on(opened.session.list(
        resource,
        &RequestContext::with_field_defaults(opened.session.spec().file()),
        |r| {
            listed.push(r);
            ControlFlow::Continue(())
        },
    ))?;
    // Fields are paths, as everywhere a spec names a value in a provider's JSON.
    let at = |v: &serde_json::Value, f: &str| {
        weft_core::fieldpath::lookup(v, f)
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    };
    let text = |v: &serde_json::Value, f: Option<&String>| match f
        .map_or(serde_json::Value::Null, |f| at(v, f))
    {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    let found: Vec<TenantRef> = listed
        .iter()
        .filter(|r| match &tenancy.select {
            TenantSelect::TokenClaim { claim, field } => {
                let wanted = jwt_claims(&tokens.access_token).and_then(|c| c.get(claim).cloned());
                wanted.is_some_and(|w| w == at(r, field))
            }
            TenantSelect::Choose | TenantSelect::CallbackParam { .. } => true,
        })
        .map(|r| TenantRef {
            id: text(r, tenancy.id_field.as_ref()),
            name: text(r, tenancy.name_field.as_ref()),
        })
        .collect();
    if found.is_empty() {
        bail!(
            "the consent connected no organisation this app can use (the provider lists {} for the grant); run `weft connection authorize {}` again and select an organisation on the consent page",
            listed.len(),
            name
        );
    }
    Ok(found)
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
    let (index, connection) = find(&all, name)?;
    let spec = specs::find(&connection.connector)?;
    let hosts = Hosts::new(spec.file(), &connection.hosts)?;
    let Some(app) = oauth_app(&all, &spec, &hosts, &connection, DEFAULT_CALLBACK_PORT)? else {
        return Ok(false);
    };
    if !app.can_revoke() {
        return Ok(false);
    }
    let Some(stored) = all[index].secrets()?.get(&connection_tokens_id(name))? else {
        return Ok(false);
    };
    let Some(tokens) = weft_engine::oauth::TokenSet::from_sealed_json(&stored) else {
        return Ok(false);
    };
    let token: Secret = tokens.refresh_token.unwrap_or(tokens.access_token);
    let http = weft_engine::http::client()?;
    runtime()?.block_on(app.revoke(&http, &token))?;
    Ok(true)
}
