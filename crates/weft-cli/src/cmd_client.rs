//! `weft init`, `weft client add|list|show|edit|remove` and `weft secrets rotate-key|retire-key|keys`.
//!
//! An OAuth client is the app a person registers at a provider (integrator.io's "iClient"). Its
//! client ID is kept in `weft.toml`; its secret is read from a hidden prompt or from standard
//! input (never from an argument), checked against the connector's field rules, sealed in the
//! credential store, and never displayed again.

use std::io::{BufRead as _, IsTerminal as _, Read as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde::Serialize;
use weft_core::form::{self, FieldValue};
use weft_core::model::Field;
use weft_engine::secrets::{MASTER_KEY_VAR, MasterKey, Secret};
use weft_engine::workspace::{self, Client, Workspace, client_secret_id};

use crate::{Io, specs};

#[derive(Debug, Subcommand)]
pub(crate) enum ClientCmd {
    /// Add an OAuth client: the app you registered at the provider.
    Add(AddArgs),
    /// List OAuth clients of the workspace and of your user scope.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one OAuth client (its secret is never shown).
    Show {
        /// Client name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a client's ID or secret; the secret must be entered again.
    Edit(EditArgs),
    /// Remove a client and its sealed secret.
    Remove {
        /// Client name.
        name: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct AddArgs {
    /// A name for the client, unique across the workspace and your user scope.
    name: String,
    /// Connector id (`kantata`, `xero`, …).
    #[arg(long)]
    connector: String,
    /// The client ID the provider issued; asked for when missing.
    #[arg(long)]
    client_id: Option<String>,
    /// Read the client secret from standard input instead of a hidden prompt.
    #[arg(long)]
    secret_stdin: bool,
    /// Keep the client in your user scope instead of the workspace.
    #[arg(long)]
    user: bool,
}

#[derive(Debug, Args)]
pub(crate) struct EditArgs {
    /// Client name.
    name: String,
    /// A new client ID.
    #[arg(long)]
    client_id: Option<String>,
    /// Read the client secret from standard input instead of a hidden prompt.
    #[arg(long)]
    secret_stdin: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SecretsCmd {
    /// Re-encrypt every sealed credential (workspace and user scope) under a new master key,
    /// all or nothing. The old key is kept as a retired key, so stores this command cannot reach
    /// (other workspaces) still open; they move to the new key on their next write.
    RotateKey {
        /// Read the new key (base64 of 32 bytes) from standard input: for keys from
        /// WEFT_MASTER_KEY or master-key-command, which Weft cannot save itself.
        #[arg(long)]
        new_key_stdin: bool,
    },
    /// Drop a retired master key from the key file; stores still sealed under it stop opening.
    RetireKey {
        /// The key's id (see `weft secrets keys`).
        id: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// List the master keys (ids only) and the stores last seen under each.
    Keys,
}

/// Where workspace commands look for `weft.toml`: the `--workspace` folder, which must hold
/// one, else the current folder (and those above it).
pub(crate) fn start_dir(workspace: Option<&Path>) -> Result<PathBuf> {
    match workspace {
        Some(dir) if dir.join(workspace::FILE_NAME).is_file() => Ok(dir.to_path_buf()),
        Some(dir) => bail!(
            "--workspace {}: there is no {} in that folder; create one with `weft init {}`, or point --workspace at the folder holding it",
            dir.display(),
            workspace::FILE_NAME,
            dir.display()
        ),
        None => std::env::current_dir().context("cannot read the current folder"),
    }
}

pub(crate) fn init(
    dir: Option<PathBuf>,
    template: Option<String>,
    workspace: Option<&Path>,
    io: &mut Io<'_>,
) -> Result<u8> {
    let dir = match dir.or_else(|| workspace.map(Path::to_path_buf)) {
        Some(d) => d,
        None => std::env::current_dir().context("cannot read the current folder")?,
    };
    // A template into an existing workspace is fine; a second weft.toml is not.
    let existing = dir.join(workspace::FILE_NAME).is_file();
    if !(existing && template.is_some()) {
        let path = workspace::init(&dir)?;
        writeln!(io.out, "created {}", path.display())?;
    }
    let Some(template) = template else {
        writeln!(
            io.out,
            "next: `weft client add NAME --connector xero` (see `weft connectors show xero` for the setup steps)"
        )?;
        return Ok(0);
    };
    let (written, kept) = crate::cmd_sync::write_template(&dir, &template)?;
    for path in written {
        writeln!(io.out, "created {}", path.display())?;
    }
    for path in kept {
        writeln!(
            io.out,
            "kept {} (a mapping table the workspace has already; the new flow shares it)",
            path.display()
        )?;
    }
    // The template's own connectors, in the order its flow names them.
    let flow = weft_engine::flow::Flow::load(&dir.join("flows").join(format!("{template}.toml")))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let connectors: Vec<&str> = flow
        .file
        .connections
        .values()
        .map(|c| c.connector.as_str())
        .collect();
    let clients = connectors
        .iter()
        .map(|c| format!("`weft client add {c}-app --connector {c}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let (first_name, first) = flow
        .file
        .connections
        .iter()
        .next()
        .map(|(alias, c)| {
            (
                c.connection.clone().unwrap_or_else(|| alias.clone()),
                c.connector.clone(),
            )
        })
        .unwrap_or_default();
    let others = connectors.get(1..).unwrap_or_default().join(" and ");
    writeln!(
        io.out,
        "next: add the OAuth clients ({clients}), create the connections the flow names (`weft connection create {first_name} --connector {first} --client {first}-app --authorize`, the same for {others}), then `weft sync run {template} --dry-run`"
    )?;
    Ok(0)
}

/// The workspace (when one is found) and the user scope.
fn scope_pair(workspace: Option<&Path>) -> Result<(Option<Workspace>, Workspace)> {
    let ws = match Workspace::find(&start_dir(workspace)?) {
        Ok(ws) => Some(ws),
        Err(workspace::WorkspaceError::NotFound { .. }) => None,
        Err(err) => return Err(err.into()),
    };
    // Hand-edited files meet the same rules as what the commands write.
    let mut all: Vec<Workspace> = ws.into_iter().chain(Some(Workspace::user()?)).collect();
    crate::cmd_connection::check_declared(&all)?;
    let user = all.pop().context("the user scope")?;
    Ok((all.pop(), user))
}

/// Every scope in lookup order: the workspace (when one is found), then the user scope.
pub(crate) fn scopes(workspace: Option<&Path>) -> Result<Vec<Workspace>> {
    let (ws, user) = scope_pair(workspace)?;
    Ok(ws.into_iter().chain(Some(user)).collect())
}

/// Asks before something that cannot be undone; without a terminal, `--yes` is required.
/// Returns whether to go on.
pub(crate) fn confirm(question: &str, what: &str, yes: bool, io: &mut Io<'_>) -> Result<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        bail!("{what} cannot be undone; pass --yes to confirm");
    }
    write!(io.err, "{question} This cannot be undone. [y/N] ")?;
    io.err.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    let go = matches!(answer.trim(), "y" | "Y" | "yes");
    if !go {
        writeln!(io.err, "nothing changed")?;
    }
    Ok(go)
}

/// Refuses to change `field` when the spec says it is set only at creation
/// (`read-only-after-create`); `create` is the command that makes a new one.
pub(crate) fn editable(field: &Field, create: &str) -> Result<()> {
    if field.read_only_after_create {
        bail!(
            "{} can only be set when it is created, and the connector does not allow changing it; create a new one with `{create}`",
            field.label
        );
    }
    Ok(())
}

/// The scope holding client `name`.
fn owner(name: &str, workspace: Option<&Path>) -> Result<Workspace> {
    let (ws, user) = scope_pair(workspace)?;
    for scope in ws.into_iter().chain(Some(user)) {
        if scope.file.clients.contains_key(name) {
            return Ok(scope);
        }
    }
    bail!("no OAuth client `{name}`; see `weft client list`")
}

/// The form fields of a connector's OAuth client: (client ID field, client secret field).
fn client_fields(connector: &str) -> Result<(Field, Field)> {
    let spec = specs::find(connector)?;
    let file = spec.file();
    if file.auth.oauth2.is_none() && file.auth.client_credentials.is_none() {
        bail!("connector `{}` does not use OAuth clients", file.id);
    }
    let field = |id: &str| file.fields.iter().find(|f| f.id == id).cloned();
    match (field("client_id"), field("client_secret")) {
        (Some(id), Some(secret)) => Ok((id, secret)),
        _ => bail!(
            "connector `{}` declares no `client_id` and `client_secret` fields; its spec must declare them",
            file.id
        ),
    }
}

fn checked_text(field: &Field, input: Option<&str>) -> Result<String> {
    match form::check(field, input)? {
        Some(FieldValue::Text(text)) => Ok(text),
        _ => bail!("{}: a value is required", field.label),
    }
}

fn read_client_id(field: &Field, given: Option<String>) -> Result<String> {
    let typed = match given {
        Some(id) => id,
        None if std::io::stdin().is_terminal() => {
            // A prompt that cannot be shown is no reason to fail (and `eprint!` would panic).
            let _ = write!(std::io::stderr(), "{}: ", field.label);
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("cannot read the client ID")?;
            line.strip_suffix('\n')
                .map(|l| l.strip_suffix('\r').unwrap_or(l))
                .unwrap_or(&line)
                .to_owned()
        }
        None => bail!("pass --client-id (there is no terminal to ask for it)"),
    };
    checked_text(field, Some(&typed))
}

fn read_secret(field: &Field, from_stdin: bool) -> Result<Secret> {
    let typed = if from_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the secret from standard input")?;
        // Only the line ending is removed: other spaces are the field rules' business.
        let len = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .map_or(text.len(), str::len);
        text.truncate(len);
        Secret::new(text)
    } else if std::io::stdin().is_terminal() {
        let prompt = format!("{} (hidden; it will not be shown again): ", field.label);
        Secret::new(rpassword::prompt_password(prompt).context("cannot read the secret")?)
    } else {
        bail!(
            "no terminal to ask for the secret: pass --secret-stdin and write it to standard input"
        );
    };
    Ok(Secret::new(checked_text(field, Some(typed.expose()))?))
}

#[derive(Serialize)]
struct ClientView<'a> {
    name: &'a str,
    connector: &'a str,
    client_id: &'a str,
    scope: &'static str,
    secret: &'static str,
}

fn view<'a>(name: &'a str, client: &'a Client, scope: &Workspace) -> Result<ClientView<'a>> {
    let secret = if scope
        .secrets()?
        .ids()
        .any(|id| id == client_secret_id(name))
    {
        "stored"
    } else {
        "missing"
    };
    Ok(ClientView {
        name,
        connector: &client.connector,
        client_id: &client.client_id,
        scope: scope.scope().as_str(),
        secret,
    })
}

pub(crate) fn run(cmd: ClientCmd, workspace: Option<&Path>, io: &mut Io<'_>) -> Result<u8> {
    match cmd {
        ClientCmd::Add(args) => {
            workspace::check_name("client", &args.name).map_err(anyhow::Error::msg)?;
            let (ws, user) = scope_pair(workspace)?;
            for scope in ws.iter().chain(Some(&user)) {
                if scope.file.clients.contains_key(&args.name) {
                    bail!(
                        "an OAuth client `{}` already exists in the {} scope; choose another name or `weft client edit {}`",
                        args.name,
                        scope.scope().as_str(),
                        args.name
                    );
                }
            }
            let mut target = if args.user {
                user
            } else {
                ws.ok_or_else(|| anyhow::anyhow!("no {} here or above; run `weft init`, or pass --user to keep the client in your user scope", workspace::FILE_NAME))?
            };
            let (id_field, secret_field) = client_fields(&args.connector)?;
            let connector = specs::find(&args.connector)?.id().to_owned();
            let client_id = read_client_id(&id_field, args.client_id)?;
            let secret = read_secret(&secret_field, args.secret_stdin)?;
            let mut store = target.secrets()?;
            store.put(&client_secret_id(&args.name), &secret)?;
            target.file.clients.insert(
                args.name.clone(),
                Client {
                    connector: connector.clone(),
                    client_id,
                },
            );
            target.save()?;
            writeln!(
                io.out,
                "added OAuth client `{}` for {connector} ({} scope); its secret is sealed in {} and will not be shown again",
                args.name,
                target.scope().as_str(),
                target.credentials_path().display()
            )?;
            Ok(0)
        }
        ClientCmd::List { json } => {
            let (ws, user) = scope_pair(workspace)?;
            let mut rows = Vec::new();
            for scope in ws.iter().chain(Some(&user)) {
                for (name, client) in &scope.file.clients {
                    rows.push(view(name, client, scope)?);
                }
            }
            if json {
                serde_json::to_writer_pretty(&mut *io.out, &rows)?;
                writeln!(io.out)?;
            } else if rows.is_empty() {
                writeln!(
                    io.out,
                    "no OAuth clients yet; add one with `weft client add NAME --connector ID`"
                )?;
            } else {
                let mut table = crate::table::Columns::new(&[
                    "NAME",
                    "CONNECTOR",
                    "SCOPE",
                    "SECRET",
                    "CLIENT ID",
                ]);
                for r in rows {
                    table.row([r.name, r.connector, r.scope, r.secret, r.client_id]);
                }
                table.write(io.out)?;
            }
            Ok(0)
        }
        ClientCmd::Show { name, json } => {
            let scope = owner(&name, workspace)?;
            let client = &scope.file.clients[&name];
            let v = view(&name, client, &scope)?;
            if json {
                serde_json::to_writer_pretty(&mut *io.out, &v)?;
                writeln!(io.out)?;
            } else {
                writeln!(io.out, "name:       {}", v.name)?;
                writeln!(io.out, "connector:  {}", v.connector)?;
                writeln!(io.out, "client ID:  {}", v.client_id)?;
                writeln!(io.out, "scope:      {}", v.scope)?;
                let secret = if v.secret == "stored" {
                    format!("stored, sealed (never shown; `weft client edit {name}` to replace it)")
                } else {
                    format!("missing; run `weft client edit {name}`")
                };
                writeln!(io.out, "secret:     {secret}")?;
            }
            Ok(0)
        }
        ClientCmd::Edit(args) => {
            let mut scope = owner(&args.name, workspace)?;
            let connector = scope.file.clients[&args.name].connector.clone();
            let (id_field, secret_field) = client_fields(&connector)?;
            let client_id = match args.client_id {
                Some(id) => {
                    editable(
                        &id_field,
                        &format!("weft client add NEW --connector {connector}"),
                    )?;
                    checked_text(&id_field, Some(&id))?
                }
                None => scope.file.clients[&args.name].client_id.clone(),
            };
            let secret = read_secret(&secret_field, args.secret_stdin)?;
            let mut store = scope.secrets()?;
            store.put(&client_secret_id(&args.name), &secret)?;
            if let Some(client) = scope.file.clients.get_mut(&args.name) {
                client.client_id = client_id;
            }
            scope.save()?;
            writeln!(
                io.out,
                "updated OAuth client `{}`; the new secret is sealed and will not be shown again",
                args.name
            )?;
            Ok(0)
        }
        ClientCmd::Remove { name, yes } => {
            let (ws, user) = scope_pair(workspace)?;
            let users: Vec<&String> = ws
                .iter()
                .chain(Some(&user))
                .flat_map(|s| s.file.connections.iter())
                .filter(|(_, c)| c.client.as_deref() == Some(name.as_str()))
                .map(|(n, _)| n)
                .collect();
            if !users.is_empty() {
                let list: Vec<&str> = users.iter().map(|s| s.as_str()).collect();
                bail!(
                    "connections {} use OAuth client `{name}`; delete them or give them another client first",
                    list.join(", ")
                );
            }
            let mut scope = owner(&name, workspace)?;
            let question = format!("Remove OAuth client `{name}` and its sealed secret?");
            if !confirm(&question, &format!("removing `{name}`"), yes, io)? {
                return Ok(1);
            }
            let mut store = scope.secrets()?;
            store.remove(&client_secret_id(&name))?;
            scope.file.clients.shift_remove(&name);
            scope.save()?;
            writeln!(io.out, "removed OAuth client `{name}`")?;
            Ok(0)
        }
    }
}

pub(crate) fn secrets(cmd: SecretsCmd, workspace: Option<&Path>, io: &mut Io<'_>) -> Result<u8> {
    match cmd {
        SecretsCmd::RotateKey { new_key_stdin } => rotate_key(new_key_stdin, workspace, io),
        SecretsCmd::RetireKey { id, yes } => retire_key(&id, yes, workspace, io),
        SecretsCmd::Keys => {
            let ring = workspace::keyring()?;
            let source = ring
                .source()
                .map_or_else(String::new, |s| format!(" (from {s})"));
            writeln!(io.out, "{} current{source}", ring.current().id())?;
            for key in ring.retired() {
                writeln!(io.out, "{} retired", key.id())?;
            }
            for (store, id) in ring.stores_seen() {
                writeln!(io.out, "  {store}: last seen under {id}")?;
            }
            Ok(0)
        }
    }
}

/// The credential stores `rotate-key` and `retire-key` reach: the workspace's and the user's
/// files, and the workspace's store in its PostgreSQL state database when the state is there.
fn reachable_stores(workspace: Option<&Path>) -> Result<Vec<weft_engine::secrets::SecretStore>> {
    let (ws, user) = scope_pair(workspace)?;
    let mut stores = Vec::new();
    for scope in ws.iter().chain(Some(&user)) {
        let path = scope.credentials_path();
        if path.exists() {
            stores.push(scope.local_secrets().with_context(|| {
                format!(
                    "the credential store {} cannot be opened; nothing was changed",
                    path.display()
                )
            })?);
        }
    }
    if let Some(ws) = &ws
        && ws.state_url()?.is_some()
    {
        stores.push(ws.secrets().context(
            "the workspace's credential store in its PostgreSQL state cannot be opened; nothing was changed",
        )?);
    }
    Ok(stores)
}

fn rotate_key(new_key_stdin: bool, workspace: Option<&Path>, io: &mut Io<'_>) -> Result<u8> {
    let mut ring = workspace::keyring()?;
    // Every store is opened, locked and read again first: nothing changes unless all open.
    let stores = reachable_stores(workspace)?;
    let mut locks = Vec::new();
    for store in &stores {
        locks.push(store.lock()?);
    }
    let mut stores = stores;
    for store in &mut stores {
        store.reload().with_context(|| {
            format!(
                "the credential store {} cannot be read; nothing was changed",
                store.path().display()
            )
        })?;
    }
    let from_file = ring.source().and_then(|s| s.key_file()).is_some();
    let source = ring
        .source()
        .map_or_else(|| MASTER_KEY_VAR.to_owned(), |s| s.to_string());
    let new_key = if new_key_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the new key from standard input")?;
        let text = Secret::new(text);
        MasterKey::from_base64(text.expose())?
    } else if from_file {
        MasterKey::generate()?
    } else {
        if !std::io::stdin().is_terminal() {
            bail!(
                "the master key comes from {source}, where Weft cannot save a new one; generate one (`openssl rand -base64 32`), save it, and pass it with `weft secrets rotate-key --new-key-stdin`. Nothing was changed"
            );
        }
        let key = MasterKey::generate()?;
        writeln!(
            io.err,
            "the new master key (id {}) is below; save it where {source} reads it from before going on:",
            key.id()
        )?;
        writeln!(io.out, "{}", key.to_base64().as_str())?;
        io.out.flush()?;
        let typed = Secret::new(
            rpassword::prompt_password("paste the new key to confirm you saved it: ")
                .context("cannot read the confirmation")?,
        );
        if typed.expose().trim() != key.to_base64().as_str() {
            bail!("that is not the new key; nothing was changed");
        }
        key
    };
    if ring.current().id() == new_key.id() {
        bail!("that is the current key already; nothing was changed");
    }
    let mut resealed = Vec::new();
    for store in &stores {
        resealed.push(store.resealed(&new_key).with_context(|| {
            format!(
                "the credential store {} cannot be re-sealed; nothing was changed",
                store.path().display()
            )
        })?);
    }
    let paths: Vec<PathBuf> = stores.iter().map(|s| s.path().to_path_buf()).collect();
    let new_id = new_key.id().to_owned();
    weft_engine::secrets::replace_all(&resealed, || ring.install(new_key, &paths))?;
    drop(locks);
    let count: usize = resealed.iter().map(|r| r.count()).sum();
    writeln!(
        io.out,
        "re-sealed {count} credential(s) in {} store(s) under master key {new_id}",
        resealed.len()
    )?;
    if from_file {
        writeln!(
            io.out,
            "the old key {} stays in {} as a retired key, so other workspaces' stores still open (each moves to the new key on its next write); drop it with `weft secrets retire-key {}` once none needs it",
            ring.retired().first().map_or("", |k| k.id()),
            source,
            ring.retired().first().map_or("ID", |k| k.id()),
        )?;
    } else {
        writeln!(
            io.err,
            "set {source} to the new key before running Weft again; stores this command did not reach still need the old one (WEFT_MASTER_KEY takes several keys separated by commas, the new one first)"
        )?;
    }
    Ok(0)
}

fn retire_key(id: &str, yes: bool, workspace: Option<&Path>, io: &mut Io<'_>) -> Result<u8> {
    let mut ring = workspace::keyring()?;
    if ring.source().and_then(|s| s.key_file()).is_none() {
        bail!(
            "the master keys come from {}; retire a key by removing it there",
            ring.source()
                .map_or_else(|| MASTER_KEY_VAR.to_owned(), |s| s.to_string())
        );
    }
    let mut under: Vec<String> = ring
        .stores_seen()
        .iter()
        .filter(|(_, k)| k.as_str() == id)
        .map(|(s, _)| s.clone())
        .collect();
    for store in reachable_stores(workspace)? {
        let name = std::fs::canonicalize(store.path())
            .unwrap_or_else(|_| store.path().to_path_buf())
            .display()
            .to_string();
        if store.key_id().is_none_or(|k| k == id) && !under.contains(&name) {
            under.push(name);
        }
    }
    if under.is_empty() {
        writeln!(io.err, "no store was last seen under key {id}")?;
    } else {
        writeln!(
            io.err,
            "stores last seen under key {id} (they will no longer open unless written since):"
        )?;
        for s in &under {
            writeln!(io.err, "  {s}")?;
        }
        if !confirm(
            &format!("Retire key {id}?"),
            &format!("retiring key {id}"),
            yes,
            io,
        )? {
            return Ok(1);
        }
    }
    ring.retire(id)?;
    writeln!(io.out, "retired master key {id}")?;
    Ok(0)
}
