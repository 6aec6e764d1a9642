//! `weft connection create|list|show|edit|delete|callback-url`.
//!
//! A connection names a connector, the OAuth client it authorizes with, its concurrency level
//! (checked against the spec's `concurrency` field) and, optionally, another connection whose
//! concurrency it borrows. Authorization, tenants and the connection test build on it.

use std::path::Path;

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use serde::Serialize;
use weft_core::form::{self, FieldValue};
use weft_core::model::{AuthMethod, well_known};
use weft_core::{DEFAULT_CALLBACK_PORT, callback_url};
use weft_engine::workspace::{Connection, Scope, Workspace};

use crate::cmd_client::{confirm, scopes};
use crate::{Io, connect, specs};

#[derive(Debug, Subcommand)]
pub(crate) enum ConnectionCmd {
    /// Create a connection.
    Create(CreateArgs),
    /// List connections of the workspace and of your user scope.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one connection.
    Show {
        /// Connection name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a connection's client, concurrency level or borrowing.
    Edit(EditArgs),
    /// Rename a connection: in weft.toml, its sealed credentials, the connections borrowing its
    /// concurrency, and the workspace's flows that name it.
    Rename {
        /// The connection's current name.
        name: String,
        /// Its new name.
        new_name: String,
    },
    /// Delete a connection, revoking its grant at the provider when the connector allows; this
    /// cannot be undone.
    Delete {
        /// Connection name.
        name: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Delete here only, without revoking the grant at the provider (then disconnect Weft
        /// in the provider's settings yourself).
        #[arg(long)]
        no_revoke: bool,
    },
    /// Run the connector's connection test through this connection.
    ///
    /// Exit codes: 0 works; 3 credentials refused; 4 permission missing; 5 no or wrong tenant;
    /// 6 rate limited; 7 provider unreachable; 8 no credentials yet; 1 anything else.
    Test {
        /// Connection name.
        name: String,
        /// Test this organisation only (by default every one the connection reaches).
        #[arg(long, value_name = "ID")]
        tenant: Option<String>,
    },
    /// Authorize the connection at the provider: a browser consent that comes back to a local
    /// callback URL; the tokens are sealed, and the organisations the consent connected are
    /// added (authorizing again adds more).
    Authorize {
        /// Connection name.
        name: String,
        #[command(flatten)]
        options: connect::AuthorizeOptions,
    },
    /// Print the callback URL to register at the provider (read-only).
    CallbackUrl {
        /// Port of the local callback server.
        #[arg(long, default_value_t = DEFAULT_CALLBACK_PORT, value_parser = clap::value_parser!(u16).range(1..))]
        port: u16,
    },
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// A unique name for the connection.
    name: String,
    /// Connector id (`kantata`, `xero`, or a former name such as `mavenlink`).
    #[arg(long)]
    connector: String,
    /// How the connection signs in, among the methods its connector declares: `oauth2` or
    /// `client-credentials` (with --client) or `token` (with --token-stdin). Inferred when only
    /// one fits what is given.
    #[arg(long, value_name = "METHOD", value_parser = parse_method)]
    method: Option<AuthMethod>,
    /// The OAuth client to authorize with (see `weft client list`); not needed with
    /// --token-stdin.
    #[arg(long)]
    client: Option<String>,
    /// Calls in flight at once; the connector's default when left out.
    #[arg(long, conflicts_with = "borrow_concurrency_from")]
    concurrency: Option<String>,
    /// Share the concurrency limiter of this other connection.
    #[arg(long)]
    borrow_concurrency_from: Option<String>,
    /// Replace a base URL of the connector, such as `api=http://127.0.0.1:8704` for the sandbox
    /// (repeatable; names are the spec's hosts).
    #[arg(long = "host", value_name = "NAME=URL")]
    hosts: Vec<String>,
    /// Set a connection field of the connector, such as `environment=sandbox` or
    /// `minor_version=76` for QuickBooks Online, `burst_limit=190` for HubSpot (repeatable;
    /// `weft connectors show CONNECTOR` lists every field with its rules).
    #[arg(long = "field", value_name = "ID=VALUE")]
    fields: Vec<String>,
    /// Read a pasted token (such as Kantata's personal token) from standard input and seal it
    /// as the connection's credentials.
    #[arg(long)]
    token_stdin: bool,
    /// Keep the connection in your user scope instead of the workspace.
    #[arg(long)]
    user: bool,
    /// Give the connection to this console user (`weft user list`): in `weft serve`, only they
    /// and administrators change, authorize or delete it. Without it, it is the workspace's.
    #[arg(long, value_name = "USER", conflicts_with = "user")]
    owner: Option<String>,
    /// Save, then authorize at once ("save & authorize").
    #[arg(long, conflicts_with = "token_stdin")]
    authorize: bool,
    #[command(flatten)]
    options: connect::AuthorizeOptions,
}

#[derive(Debug, Args)]
pub(crate) struct EditArgs {
    /// Connection name.
    name: String,
    /// Switch how the connection signs in (`oauth2`, `client-credentials` or `token`, among
    /// those its connector declares), with what the new method needs: --client for an OAuth
    /// method, --token-stdin for `token`. The old method's credentials are not used again.
    #[arg(long, value_name = "METHOD", value_parser = parse_method)]
    method: Option<AuthMethod>,
    /// Another OAuth client of the same connector.
    #[arg(long)]
    client: Option<String>,
    /// A new concurrency level.
    #[arg(long, conflicts_with = "borrow_concurrency_from")]
    concurrency: Option<String>,
    /// Share the concurrency limiter of this other connection.
    #[arg(long, conflicts_with = "no_borrow")]
    borrow_concurrency_from: Option<String>,
    /// Stop borrowing concurrency.
    #[arg(long)]
    no_borrow: bool,
    /// Replace a base URL (repeatable), such as `api=http://127.0.0.1:8704`.
    #[arg(long = "host", value_name = "NAME=URL")]
    hosts: Vec<String>,
    /// Go back to the spec's own base URLs.
    #[arg(long, conflicts_with = "hosts")]
    no_hosts: bool,
    /// Set a connection field (repeatable), such as `environment=sandbox`.
    #[arg(long = "field", value_name = "ID=VALUE")]
    fields: Vec<String>,
    /// Read a new pasted token from standard input.
    #[arg(long)]
    token_stdin: bool,
    /// Give the connection to this console user (`weft user list`).
    #[arg(long, value_name = "USER", conflicts_with = "no_owner")]
    owner: Option<String>,
    /// Make it the workspace's again (managed by the console's administrators).
    #[arg(long)]
    no_owner: bool,
}

#[derive(Serialize)]
struct View<'a> {
    name: &'a str,
    scope: &'static str,
    #[serde(flatten)]
    connection: Connection,
    status: &'static str,
    /// When the connection must be used (or re-authorized) by, before its refresh token lapses
    /// unused (RFC 3339, UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    use_by: Option<String>,
    /// A token refresh sent whose answer is not sealed (in flight, or cut off by a kill or a
    /// lost answer): when (RFC 3339, UTC) and by whom.
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_unanswered: Option<Unanswered>,
    /// Cut-off refreshes recovered (their refresh token sent again) since the consent.
    #[serde(skip_serializing_if = "is_zero")]
    refresh_recoveries: u64,
}

#[derive(serde::Serialize)]
struct Unanswered {
    since: String,
    by: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What `connection list|show` say of connection `name` of `scope`.
fn view<'a>(scope: &Workspace, name: &'a str, c: &Connection) -> Result<View<'a>> {
    let (status, use_by) = status(scope, name, c)?;
    let (intent, refresh_recoveries) = scope.connection_refreshes(name)?.unwrap_or_default();
    Ok(View {
        name,
        scope: scope.scope().as_str(),
        connection: settled(scope, name, c),
        status,
        use_by,
        refresh_unanswered: intent.map(|i| Unanswered {
            since: crate::cmd_worker::when(i.started_ms),
            by: i.by,
        }),
        refresh_recoveries,
    })
}

/// `c` with its sign-in method settled: a connection written before connections recorded it
/// shows the one it uses.
fn settled(scope: &Workspace, name: &str, c: &Connection) -> Connection {
    let mut c = c.clone();
    if c.method.is_none()
        && let Ok(spec) = specs::find(&c.connector)
    {
        c.method = weft_engine::connect::method(scope, spec.file(), name, &c)
            .ok()
            .flatten();
    }
    c
}

fn find_connection<'a>(
    scopes: &'a [Workspace],
    name: &str,
) -> Option<(&'a Workspace, &'a Connection)> {
    scopes
        .iter()
        .find_map(|s| s.file.connections.get(name).map(|c| (s, c)))
}

fn parse_method(text: &str) -> std::result::Result<AuthMethod, String> {
    AuthMethod::parse(text).ok_or_else(|| {
        format!("`{text}` is not a sign-in method; use oauth2, client-credentials or token")
    })
}

/// The sign-in method of connection `name` of `spec` from what the command line gave
/// (`chosen` by --method, an OAuth client by --client, a token by --token-stdin): the method
/// chosen, refusing what belongs to another, or the one declared method that fits what was
/// given. `command` is the command to repeat in a hint (`weft connection create …`).
fn settle_method(
    spec: &weft_core::Spec,
    chosen: Option<AuthMethod>,
    client: bool,
    token: bool,
    command: &str,
) -> Result<AuthMethod> {
    let file = spec.file();
    if let Some(m) = chosen {
        if client && !m.uses_client() {
            bail!(
                "--client names an OAuth client, which a connection signing in with `{m}` does not use; leave out --client, or choose an OAuth method (`--method oauth2`)"
            );
        }
        if token && m != AuthMethod::Token {
            bail!(
                "--token-stdin gives a pasted token, which a connection signing in with `{m}` does not use; leave out --token-stdin, or choose `--method token`"
            );
        }
    }
    if client && token && chosen.is_none() {
        bail!(
            "--client (an OAuth client) and --token-stdin (a pasted token) are for different sign-in methods; a connection signs in one way: give one of them, or choose with --method"
        );
    }
    // What an OAuth client holds, and the field a pasted token fills.
    let mut given: Vec<&str> = Vec::new();
    if client {
        given.extend(["client_id", "client_secret"]);
    }
    if token && let Some(field) = weft_engine::connect::token_field(file) {
        given.push(field.id.as_str());
    }
    let fits = |m: AuthMethod| (!client || m.uses_client()) && (!token || m == AuthMethod::Token);
    form::choose_method(file, chosen, &given, fits).map_err(|e| match e {
        form::MethodError::Ambiguous { ref methods, .. } => {
            let ways: Vec<String> = methods
                .iter()
                .map(|m| match m {
                    AuthMethod::Token => "`--method token --token-stdin`".to_owned(),
                    m => format!("`--method {m} --client CLIENT`"),
                })
                .collect();
            anyhow!("{e}: run {command} with {}", ways.join(" or "))
        }
        form::MethodError::OtherMethod(f) => anyhow!(
            "{}: it belongs to connections signing in with {}; leave it out, or choose that method with --method",
            f.label,
            form::method_list(
                &file
                    .fields
                    .iter()
                    .find(|x| x.id == f.id)
                    .map(|x| x.methods.clone())
                    .unwrap_or_default()
            )
        ),
        other => anyhow!(other),
    })
}

/// Checks a concurrency level against the spec's `concurrency` field (or its default).
fn concurrency(connector: &str, given: Option<&str>) -> Result<u32> {
    let spec = specs::find(connector)?;
    let limits = spec.file().limits.concurrency;
    let value = match spec
        .file()
        .fields
        .iter()
        .find(|f| f.id == well_known::CONCURRENCY)
    {
        Some(field) => match form::check(field, given)? {
            Some(FieldValue::Integer(n)) => n,
            _ => i64::from(limits.default),
        },
        None => match given {
            None => i64::from(limits.default),
            Some(text) => {
                let n: i64 = text
                    .trim()
                    .parse()
                    .map_err(|_| anyhow::anyhow!("concurrency `{text}` is not a whole number"))?;
                if n < 1 || n > i64::from(limits.max) {
                    bail!(
                        "concurrency {n} is outside the allowed range 1–{}",
                        limits.max
                    );
                }
                n
            }
        },
    };
    Ok(u32::try_from(value)?)
}

/// Parses `NAME=URL` overrides and checks them against the connector's hosts.
fn host_overrides(
    connector: &str,
    given: &[String],
    mut into: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    for pair in given {
        let Some((name, url)) = pair.split_once('=') else {
            bail!("--host `{pair}` is not NAME=URL (such as api=http://127.0.0.1:8704)");
        };
        into.insert(name.trim().to_owned(), url.trim().to_owned());
    }
    let spec = specs::find(connector)?;
    weft_engine::request::Hosts::new(spec.file(), &into)?;
    Ok(into)
}

/// Connection field values `given` as ID=VALUE added to `into`, each checked by its field's
/// rules for a connection signing in with `method` (`None`: not settled, any method); only the
/// spec's connection fields ([`weft_core::model::SpecFile::connection_fields`]) are accepted.
/// Values are kept as text in their checked form (`76`, `true`, `sandbox`).
fn connection_fields(
    connector: &str,
    method: Option<AuthMethod>,
    given: &[String],
    mut into: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    let spec = specs::find(connector)?;
    let file = spec.file();
    let known = file.connection_fields();
    let listed = || {
        if known.is_empty() {
            format!("connector `{connector}` has no connection field")
        } else {
            format!(
                "the connection fields of `{connector}` are: {}",
                known
                    .iter()
                    .map(|f| format!("{} ({})", f.id, weft_core::docs::field_rules(f)))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        }
    };
    let check = |field: &weft_core::model::Field, value: &str| match method {
        Some(m) => form::check_for(field, m, Some(value)),
        None => form::check(field, Some(value)),
    };
    for pair in given {
        let Some((id, value)) = pair.split_once('=') else {
            bail!("--field `{pair}` is not ID=VALUE (such as environment=sandbox)");
        };
        let id = id.trim();
        let Some(field) = known.iter().find(|f| f.id == id) else {
            bail!(
                "--field `{pair}`: `{id}` is not a connection field; {}",
                listed()
            );
        };
        match check(field, value) {
            Ok(Some(checked)) => {
                into.insert(id.to_owned(), checked.to_text());
            }
            Ok(None) => bail!("--field `{pair}`: give a value; {}", listed()),
            Err(e) => bail!("--field `{pair}`: {e}"),
        }
    }
    for (id, value) in &into {
        let Some(field) = known.iter().find(|f| &f.id == id) else {
            bail!("`{id}` is not a connection field; {}", listed());
        };
        if let Err(e) = check(field, value) {
            bail!("`{id}` is `{value}`, refused: {e}");
        }
    }
    weft_engine::request::Hosts::for_connection(file, &into, &BTreeMap::new())?;
    Ok(into)
}

/// Checks every client and connection of `all` (as loaded, perhaps edited by hand) with the
/// rules `client add`, `connection create` and `connection edit` apply, naming the file and
/// line of the first problem.
pub(crate) fn check_declared(all: &[Workspace]) -> Result<()> {
    for scope in all {
        for (name, client) in &scope.file.clients {
            if let Err(e) = specs::find(&client.connector) {
                bail!(
                    "{}: client `{name}`: {e:#}",
                    scope.locate(&["clients", name, "connector"])
                );
            }
        }
        for (name, c) in &scope.file.connections {
            let at = |key: &str| scope.locate(&["connections", name, key]);
            let connector = match specs::find(&c.connector) {
                Ok(spec) => spec.id().to_owned(),
                Err(e) => bail!(
                    "{}: connection `{name}`: {e:#}; if its spec lives in a folder of yours, list that folder in {}",
                    at("connector"),
                    specs::SPEC_PATH_VAR
                ),
            };
            if let Err(e) = concurrency(&connector, Some(&c.concurrency.to_string())) {
                bail!("{}: connection `{name}`: {e:#}", at("concurrency"));
            }
            if let Some(m) = c.method
                && let Ok(spec) = specs::find(&connector)
                && !spec.file().auth.methods().contains(&m)
            {
                bail!(
                    "{}: connection `{name}`: connector `{connector}` does not sign in with `{m}`; it signs in with {}",
                    at("method"),
                    form::method_list(&spec.file().auth.methods())
                );
            }
            if let Some(client) = &c.client
                && let Err(e) = check_client(all, client, &connector)
            {
                bail!("{}: connection `{name}`: {e:#}", at("client"));
            }
            if let Some(lender) = &c.borrow_concurrency_from
                && let Err(e) = check_borrow(all, name, lender, &connector)
            {
                bail!(
                    "{}: connection `{name}`: {e:#}",
                    at("borrow-concurrency-from")
                );
            }
            if let Err(e) = host_overrides(&connector, &[], c.hosts.clone()) {
                bail!("{}: connection `{name}`: {e:#}", at("hosts"));
            }
            if let Err(e) = connection_fields(&connector, c.method, &[], c.fields.clone()) {
                bail!("{}: connection `{name}`: {e:#}", at("fields"));
            }
        }
    }
    Ok(())
}

/// Checks that `owner` is a console user of workspace `ws` (`weft user add`).
fn check_owner(ws: &Workspace, owner: &str) -> Result<()> {
    weft_engine::workspace::check_user_name(owner).map_err(anyhow::Error::msg)?;
    if !ws
        .private_dir()
        .join(weft_server::store::FILE_NAME)
        .is_file()
    {
        bail!(
            "this workspace has no console users yet, so `{owner}` cannot own a connection; add them with `weft user add {owner}`"
        );
    }
    if weft_server::Store::open(&ws.private_dir())?
        .user(owner)?
        .is_none()
    {
        bail!(
            "no console user `{owner}`; see `weft user list`, or add them with `weft user add {owner}`"
        );
    }
    Ok(())
}

/// Checks that `client` exists (in any scope) and belongs to `connector`.
fn check_client(scopes: &[Workspace], client: &str, connector: &str) -> Result<()> {
    let found = scopes.iter().find_map(|s| s.file.clients.get(client));
    match found {
        None => bail!(
            "no OAuth client `{client}`; add it with `weft client add {client} --connector {connector}`"
        ),
        Some(c) if c.connector != connector => {
            bail!(
                "OAuth client `{client}` is for {}, not {connector}",
                c.connector
            )
        }
        Some(_) => Ok(()),
    }
}

/// Checks that `lender` exists, is of the same connector, is not `name` and borrows from nobody.
fn check_borrow(scopes: &[Workspace], name: &str, lender: &str, connector: &str) -> Result<()> {
    if lender == name {
        bail!("a connection cannot borrow concurrency from itself");
    }
    match find_connection(scopes, lender) {
        None => {
            bail!("no connection `{lender}` to borrow concurrency from; see `weft connection list`")
        }
        Some((_, c)) if c.connector != connector => {
            bail!(
                "connection `{lender}` is for {}, not {connector}; concurrency is shared only within one provider",
                c.connector
            )
        }
        Some((_, c)) if c.borrow_concurrency_from.is_some() => bail!(
            "connection `{lender}` itself borrows from `{}`; borrow from that one instead",
            c.borrow_concurrency_from.as_deref().unwrap_or_default()
        ),
        Some(_) => Ok(()),
    }
}

/// The other connections (with the tenants they share) that revoking `name`'s grant would
/// disconnect.
fn sharing_the_grant(all: &[Workspace], name: &str, deleted: &Connection) -> Vec<String> {
    weft_engine::connect::sharing_the_grant(all, name, deleted)
}

/// Where a connection stands (see `Workspace::connection_status`), with its spec's refresh rules.
fn status(scope: &Workspace, name: &str, c: &Connection) -> Result<(&'static str, Option<String>)> {
    let refresh = specs::find(&c.connector).ok().and_then(|s| {
        s.file()
            .auth
            .oauth2
            .as_ref()
            .and_then(|o| o.refresh.clone())
    });
    Ok(scope.connection_status(name, refresh.as_ref())?)
}

pub(crate) fn run(cmd: ConnectionCmd, workspace: Option<&Path>, io: &mut Io<'_>) -> Result<u8> {
    match cmd {
        ConnectionCmd::Create(args) => {
            weft_engine::workspace::check_name("connection", &args.name)
                .map_err(anyhow::Error::msg)?;
            let mut all = scopes(workspace)?;
            if find_connection(&all, &args.name).is_some() {
                bail!(
                    "a connection `{}` already exists; choose another name or `weft connection edit {}`",
                    args.name,
                    args.name
                );
            }
            let spec = specs::find(&args.connector)?;
            let connector = spec.id().to_owned();
            let method = settle_method(
                &spec,
                args.method,
                args.client.is_some(),
                args.token_stdin,
                &format!(
                    "`weft connection create {} --connector {connector}`",
                    args.name
                ),
            )?;
            match &args.client {
                Some(client) => check_client(&all, client, &connector)?,
                None if method.uses_client() => bail!(
                    "pass --client CLIENT, the OAuth client a connection signing in with `{method}` authorizes with (see `weft client list`)"
                ),
                None => {}
            }
            if method == AuthMethod::Token && !args.token_stdin {
                bail!(
                    "a connection signing in with `token` needs its token: run `weft connection create {} --connector {connector} --token-stdin` and write the token to standard input",
                    args.name
                );
            }
            let level = concurrency(&connector, args.concurrency.as_deref())?;
            let hosts = host_overrides(&connector, &args.hosts, BTreeMap::new())?;
            let fields =
                connection_fields(&connector, Some(method), &args.fields, BTreeMap::new())?;
            if let Some(lender) = &args.borrow_concurrency_from {
                check_borrow(&all, &args.name, lender, &connector)?;
            }
            let index = if args.user {
                all.len() - 1
            } else if all.len() == 2 {
                0
            } else {
                bail!(
                    "no weft.toml here or above; run `weft init`, or pass --user to keep the connection in your user scope"
                );
            };
            if let Some(owner) = &args.owner {
                check_owner(&all[index], owner)?;
            }
            let target = &mut all[index];
            target.file.connections.insert(
                args.name.clone(),
                Connection {
                    connector: connector.clone(),
                    method: Some(method),
                    client: args.client,
                    concurrency: level,
                    borrow_concurrency_from: args.borrow_concurrency_from,
                    hosts,
                    fields,
                    tenants: Vec::new(),
                    owner: args.owner.clone(),
                },
            );
            if args.token_stdin {
                crate::cmd_use::store_token(&args.name, &connector, target)?;
            }
            target.save()?;
            writeln!(
                io.out,
                "created connection `{}` ({connector}, signs in with {method}, {} scope{}, concurrency {level})",
                args.name,
                target.scope().as_str(),
                args.owner
                    .as_ref()
                    .map(|o| format!(", owned by {o}"))
                    .unwrap_or_default()
            )?;
            if args.authorize {
                return connect::authorize(&args.name, &args.options, workspace, io);
            }
            if method == AuthMethod::OAuth2 {
                writeln!(
                    io.out,
                    "next: register {} as the app's callback URL at the provider, then run `weft connection authorize {}`",
                    callback_url(args.options.port),
                    args.name
                )?;
            }
            Ok(0)
        }
        ConnectionCmd::List { json } => {
            let all = scopes(workspace)?;
            let mut rows: Vec<View<'_>> = Vec::new();
            for s in &all {
                for (n, c) in &s.file.connections {
                    rows.push(view(s, n, c)?);
                }
            }
            if json {
                serde_json::to_writer_pretty(&mut *io.out, &rows)?;
                writeln!(io.out)?;
            } else if rows.is_empty() {
                writeln!(
                    io.out,
                    "no connections yet; create one with `weft connection create NAME --connector ID --client CLIENT`"
                )?;
            } else {
                let mut table = crate::table::Columns::new(&[
                    "NAME",
                    "CONNECTOR",
                    "SCOPE",
                    "OWNER",
                    "CONCURRENCY",
                    "SIGN-IN",
                    "CLIENT",
                    "STATUS",
                    "USE BY",
                ]);
                for r in rows {
                    let level = match &r.connection.borrow_concurrency_from {
                        Some(lender) => format!("from {lender}"),
                        None => r.connection.concurrency.to_string(),
                    };
                    table.row([
                        r.name,
                        &r.connection.connector,
                        r.scope,
                        r.connection.owner.as_deref().unwrap_or("-"),
                        &level,
                        r.connection.method.map_or("-", AuthMethod::as_str),
                        r.connection.client.as_deref().unwrap_or("-"),
                        r.status,
                        r.use_by.as_deref().unwrap_or("-"),
                    ]);
                }
                table.write(io.out)?;
            }
            Ok(0)
        }
        ConnectionCmd::Show { name, json } => {
            let all = scopes(workspace)?;
            let Some((scope, c)) = find_connection(&all, &name) else {
                bail!("no connection `{name}`; see `weft connection list`");
            };
            let view = view(scope, &name, c)?;
            if json {
                serde_json::to_writer_pretty(&mut *io.out, &view)?;
                writeln!(io.out)?;
            } else {
                writeln!(io.out, "name:         {name}")?;
                writeln!(io.out, "connector:    {}", c.connector)?;
                if let Some(m) = view.connection.method {
                    writeln!(io.out, "sign-in:      {m} ({})", m.describe())?;
                }
                match &c.client {
                    Some(client) => writeln!(io.out, "client:       {client}")?,
                    None => writeln!(io.out, "client:       none (a pasted token)")?,
                }
                writeln!(io.out, "scope:        {}", view.scope)?;
                if let Some(owner) = &c.owner {
                    writeln!(
                        io.out,
                        "owner:        {owner} (in `weft serve`, only they and administrators change it)"
                    )?;
                }
                writeln!(io.out, "concurrency:  {}", c.concurrency)?;
                if let Some(lender) = &c.borrow_concurrency_from {
                    writeln!(io.out, "borrows from: {lender} (shares its limiter)")?;
                }
                for (id, value) in &c.fields {
                    writeln!(io.out, "field:        {id} = {value}")?;
                }
                for (host, url) in &c.hosts {
                    writeln!(
                        io.out,
                        "host:         {host} = {url} (instead of the spec's)"
                    )?;
                }
                for t in &c.tenants {
                    writeln!(io.out, "tenant:       {} ({})", t.name, t.id)?;
                }
                writeln!(io.out, "status:       {}", view.status)?;
                if let Some(at) = &view.use_by {
                    writeln!(
                        io.out,
                        "use by:       {at} (its refresh token lapses if unused; after that, run `weft connection authorize {name}`)"
                    )?;
                }
                if let Some(u) = &view.refresh_unanswered {
                    writeln!(
                        io.out,
                        "refreshing:   a token refresh sent at {} by {} has no sealed answer (in flight, or cut off: the next refresh sends its token again, within the provider's grace period)",
                        u.since, u.by
                    )?;
                }
                if view.refresh_recoveries > 0 {
                    writeln!(
                        io.out,
                        "recovered:    {} cut-off token refresh(es) since the consent",
                        view.refresh_recoveries
                    )?;
                }
                writeln!(
                    io.out,
                    "callback URL: {}",
                    callback_url(DEFAULT_CALLBACK_PORT)
                )?;
            }
            Ok(0)
        }
        ConnectionCmd::Edit(args) => {
            let mut all = scopes(workspace)?;
            let Some(index) = all
                .iter()
                .position(|s| s.file.connections.contains_key(&args.name))
            else {
                bail!("no connection `{}`; see `weft connection list`", args.name);
            };
            let mut updated = all[index].file.connections[&args.name].clone();
            let spec = specs::find(&updated.connector)?;
            // A connection written before connections recorded their method gets the one it
            // has been using, recorded from now on.
            let current =
                weft_engine::connect::method(&all[index], spec.file(), &args.name, &updated)?;
            let takes_token = spec.file().auth.token.is_some();
            let method = match (args.method, current) {
                (Some(m), _) => Some(settle_method(
                    &spec,
                    Some(m),
                    args.client.is_some(),
                    args.token_stdin,
                    &format!("`weft connection edit {}`", args.name),
                )?),
                (None, Some(AuthMethod::Token)) if args.client.is_some() => bail!(
                    "connection `{}` signs in with a pasted token (`token`), which uses no OAuth client; to switch it to OAuth, run `weft connection edit {} --method oauth2 --client CLIENT`",
                    args.name,
                    args.name
                ),
                (None, Some(m)) if args.token_stdin && takes_token && m != AuthMethod::Token => {
                    bail!(
                        "connection `{}` signs in with `{m}`; a pasted token is for connections signing in with `token`: to switch it, run `weft connection edit {} --method token --token-stdin`",
                        args.name,
                        args.name
                    )
                }
                (None, current) => current,
            };
            let switched = args.method.is_some() && method != current;
            match method {
                Some(AuthMethod::Token) if switched && !args.token_stdin => bail!(
                    "a connection switched to `token` needs its token: run `weft connection edit {} --method token --token-stdin` and write the token to standard input",
                    args.name
                ),
                Some(m) if m.uses_client() && args.client.is_none() && updated.client.is_none() => {
                    bail!(
                        "a connection signing in with `{m}` authorizes through an OAuth client: pass --client CLIENT (see `weft client list`)"
                    )
                }
                _ => {}
            }
            updated.method = method;
            if switched && method == Some(AuthMethod::Token) {
                // Its OAuth client is not used again.
                updated.client = None;
            }
            if let Some(client) = args.client {
                check_client(&all, &client, &updated.connector)?;
                updated.client = Some(client);
            }
            if let Some(level) = args.concurrency.as_deref() {
                if let Some(field) = specs::find(&updated.connector)?
                    .file()
                    .fields
                    .iter()
                    .find(|f| f.id == well_known::CONCURRENCY)
                {
                    crate::cmd_client::editable(
                        field,
                        &format!(
                            "weft connection create NEW --connector {}{}",
                            updated.connector,
                            updated
                                .client
                                .as_ref()
                                .map(|c| format!(" --client {c}"))
                                .unwrap_or_default()
                        ),
                    )?;
                }
                updated.concurrency = concurrency(&updated.connector, Some(level))?;
            }
            if let Some(lender) = args.borrow_concurrency_from {
                check_borrow(&all, &args.name, &lender, &updated.connector)?;
                let borrowers: Vec<&str> = all
                    .iter()
                    .flat_map(|s| s.file.connections.iter())
                    .filter(|(_, c)| {
                        c.borrow_concurrency_from.as_deref() == Some(args.name.as_str())
                    })
                    .map(|(n, _)| n.as_str())
                    .collect();
                if !borrowers.is_empty() {
                    bail!(
                        "`{}` lends its concurrency to {}; it cannot borrow in turn",
                        args.name,
                        borrowers.join(", ")
                    );
                }
                updated.borrow_concurrency_from = Some(lender);
            }
            if args.no_borrow {
                updated.borrow_concurrency_from = None;
            }
            if (args.owner.is_some() || args.no_owner) && all[index].scope() == Scope::User {
                bail!(
                    "`{}` is in your user scope, which is yours alone; an owner is given to a workspace's connections",
                    args.name
                );
            }
            if let Some(owner) = args.owner {
                check_owner(&all[index], &owner)?;
                updated.owner = Some(owner);
            }
            if args.no_owner {
                updated.owner = None;
            }
            if args.no_hosts {
                updated.hosts.clear();
            }
            if !args.hosts.is_empty() {
                updated.hosts = host_overrides(&updated.connector, &args.hosts, updated.hosts)?;
            }
            if !args.fields.is_empty() || switched {
                let file = specs::find(&updated.connector)?;
                for pair in &args.fields {
                    let id = pair
                        .split_once('=')
                        .map_or(pair.as_str(), |(id, _)| id.trim());
                    if let Some(field) = file.file().fields.iter().find(|f| f.id == id) {
                        crate::cmd_client::editable(
                            field,
                            &format!(
                                "weft connection create NEW --connector {} --field {pair}",
                                updated.connector
                            ),
                        )?;
                    }
                }
                if switched && let Some(m) = method {
                    // Values of fields the new method does not use are dropped with its old
                    // credentials.
                    updated.fields.retain(|id, _| {
                        file.file()
                            .fields
                            .iter()
                            .find(|f| &f.id == id)
                            .is_none_or(|f| f.applies_to(m))
                    });
                }
                updated.fields =
                    connection_fields(&updated.connector, method, &args.fields, updated.fields)?;
            }
            let target = &mut all[index];
            if args.token_stdin {
                crate::cmd_use::store_token(&args.name, &updated.connector, target)?;
            } else if switched {
                // The old method's credentials are never used again: a pasted token is
                // removed, so the connection waits for its OAuth consent.
                target
                    .secrets()?
                    .remove(&weft_engine::workspace::connection_tokens_id(&args.name))?;
            }
            target.file.connections.insert(args.name.clone(), updated);
            target.save()?;
            writeln!(io.out, "updated connection `{}`", args.name)?;
            if switched && let Some(m) = method {
                writeln!(io.out, "it now signs in with {m} ({})", m.describe())?;
                if m == AuthMethod::OAuth2 {
                    writeln!(
                        io.out,
                        "next: run `weft connection authorize {}`",
                        args.name
                    )?;
                }
            }
            Ok(0)
        }
        ConnectionCmd::Delete {
            name,
            yes,
            no_revoke,
        } => {
            let mut all = scopes(workspace)?;
            let Some(index) = all
                .iter()
                .position(|s| s.file.connections.contains_key(&name))
            else {
                bail!("no connection `{name}`; see `weft connection list`");
            };
            let borrowers: Vec<String> = all
                .iter()
                .flat_map(|s| s.file.connections.iter())
                .filter(|(_, c)| c.borrow_concurrency_from.as_deref() == Some(name.as_str()))
                .map(|(n, _)| n.clone())
                .collect();
            if !borrowers.is_empty() {
                bail!(
                    "connections {} borrow concurrency from `{name}`; edit them first (`weft connection edit NAME --no-borrow`)",
                    borrowers.join(", ")
                );
            }
            if !confirm(
                &format!("Delete connection `{name}`?"),
                &format!("deleting `{name}`"),
                yes,
                io,
            )? {
                return Ok(1);
            }
            // A grant is the app's at the provider: revoking it disconnects every connection of
            // the same client reaching the same organisations (Xero ends all of them at once).
            let deleted = &all[index].file.connections[&name];
            let sharing = sharing_the_grant(&all, &name, deleted);
            if !no_revoke && !sharing.is_empty() {
                writeln!(
                    io.out,
                    "kept the grant at the provider: {} of the same OAuth client `{}` still use it; nothing was disconnected there",
                    sharing.join(", "),
                    deleted.client.as_deref().unwrap_or("-")
                )?;
            }
            if !no_revoke && sharing.is_empty() {
                match connect::revoke(&name, workspace) {
                    Ok(true) => writeln!(io.out, "revoked the grant of `{name}` at the provider")?,
                    Ok(false) => {}
                    Err(e) => bail!(
                        "could not revoke the grant of `{name}` at the provider: {e:#}; nothing was deleted. Run again later, or pass --no-revoke to delete it here only (then disconnect Weft in the provider's settings)"
                    ),
                }
            }
            let target = &mut all[index];
            target
                .secrets()?
                .remove(&weft_engine::workspace::connection_tokens_id(&name))?;
            target.file.connections.shift_remove(&name);
            target.save()?;
            writeln!(io.out, "deleted connection `{name}`")?;
            Ok(0)
        }
        ConnectionCmd::Test { name, tenant } => {
            crate::cmd_use::test(&name, tenant.as_deref(), workspace, io)
        }
        ConnectionCmd::Rename { name, new_name } => rename(&name, &new_name, workspace, io),
        ConnectionCmd::Authorize { name, options } => {
            connect::authorize(&name, &options, workspace, io)
        }
        ConnectionCmd::CallbackUrl { port } => {
            writeln!(io.out, "{}", callback_url(port))?;
            Ok(0)
        }
    }
}

/// `weft connection rename NAME NEW_NAME`. The credentials are sealed under the new name before
/// anything else changes and the old record goes last, so a failure in between leaves the
/// credentials under both names, never under none.
fn rename(old: &str, new: &str, workspace: Option<&Path>, io: &mut Io<'_>) -> Result<u8> {
    use weft_engine::workspace::{check_name, connection_tokens_id};
    check_name("connection", new).map_err(anyhow::Error::msg)?;
    let mut all = scopes(workspace)?;
    let Some(index) = all
        .iter()
        .position(|s| s.file.connections.contains_key(old))
    else {
        bail!("no connection `{old}`; see `weft connection list`");
    };
    if find_connection(&all, new).is_some() {
        bail!("a connection `{new}` already exists; choose another name");
    }
    let mut store = all[index].secrets()?;
    let tokens = store.get(&connection_tokens_id(old))?;
    if let Some(tokens) = &tokens {
        store.put(&connection_tokens_id(new), tokens)?;
    }
    for (i, scope) in all.iter_mut().enumerate() {
        let mut changed = i == index;
        for c in scope.file.connections.values_mut() {
            if c.borrow_concurrency_from.as_deref() == Some(old) {
                c.borrow_concurrency_from = Some(new.to_owned());
                changed = true;
            }
        }
        if i == index {
            // The entry keeps its place in the file.
            let connections = std::mem::take(&mut scope.file.connections);
            scope.file.connections = connections
                .into_iter()
                .map(|(n, c)| (if n == old { new.to_owned() } else { n }, c))
                .collect();
        }
        if changed {
            scope.save()?;
        }
    }
    let mut flows = Vec::new();
    if let Some(ws) = all.iter().find(|s| s.scope() == Scope::Workspace) {
        flows = rename_in_flows(&ws.dir().join("flows"), old, new)?;
    }
    if tokens.is_some() {
        store.remove(&connection_tokens_id(old))?;
    }
    writeln!(io.out, "renamed connection `{old}` to `{new}`")?;
    for path in flows {
        writeln!(io.out, "updated {}", path.display())?;
    }
    Ok(0)
}

/// Replaces connection name `old` by `new` where flows in `dir` name it (`source.connection`,
/// `destination.connection`), changing nothing else in the files. Returns the files changed.
fn rename_in_flows(dir: &Path, old: &str, new: &str) -> Result<Vec<std::path::PathBuf>> {
    use toml::de::{DeTable, DeValue};
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let quoted = toml::Value::String(new.to_owned()).to_string();
    let mut changed = Vec::new();
    for path in entries.flatten().map(|e| e.path()) {
        if path.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let mut text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        // A flow that does not parse is reported by its own checks when it is used.
        let Ok(root) = DeTable::parse(&text) else {
            continue;
        };
        // Each edit: (where, what to put, how much to replace).
        let mut edits: Vec<(usize, String, usize)> = Vec::new();
        if let Some(DeValue::Table(connections)) =
            root.get_ref().get("connections").map(|v| v.get_ref())
        {
            for (alias, value) in connections {
                let DeValue::Table(table) = value.get_ref() else {
                    continue;
                };
                match table.get("connection") {
                    // `connection = "old"`: the value changes.
                    Some(v) if matches!(v.get_ref(), DeValue::String(s) if s == old) => {
                        let span = v.span();
                        edits.push((span.start, quoted.clone(), span.end - span.start));
                    }
                    Some(_) => {}
                    // The alias names the connection: say which one it is now.
                    None if alias.get_ref() == old => {
                        let span = value.span();
                        if text[span.clone()].trim_start().starts_with('{') {
                            // An inline table: before its closing brace.
                            let close = text[..span.end].rfind('}').unwrap_or(span.end);
                            edits.push((close, format!(", connection = {quoted} "), 0));
                        } else {
                            // A table of its own: the line after its header.
                            let header_end = text[alias.span().end..]
                                .find('\n')
                                .map_or(text.len(), |i| alias.span().end + i + 1);
                            edits.push((header_end, format!("connection = {quoted}\n"), 0));
                        }
                    }
                    None => {}
                }
            }
        }
        drop(root);
        if edits.is_empty() {
            continue;
        }
        edits.sort_by_key(|e| std::cmp::Reverse(e.0));
        for (at, put, len) in edits {
            text.replace_range(at..at + len, &put);
        }
        weft_engine::files::write_atomic(&path, text.as_bytes(), false)
            .with_context(|| format!("cannot write {}", path.display()))?;
        changed.push(path);
    }
    changed.sort();
    Ok(changed)
}
