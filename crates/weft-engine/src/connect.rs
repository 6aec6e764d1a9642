//! A workspace connection put to work, shared by the `weft` command and the console: opening
//! it as a [`Session`] (spec, hosts, OAuth client, token keeper, limiter, borrowed pools), the
//! organisations a consent connected, the spec's test call with its failure classified, and
//! revoking a grant.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

use weft_core::Spec;
use weft_core::model::{AuthMethod, ErrorClass, TenantSelect};

use crate::http::CallError;
use crate::limits::{Clock, Limiter, SystemClock};
use crate::oauth::{OAuthApp, OAuthError, TokenSet, jwt_claims};
use crate::request::{Hosts, OpKind, RequestContext, Tenant};
use crate::secrets::{Secret, SecretError};
use crate::session::{Session, SessionError};
use crate::tokens::TokenError;
use crate::workspace::{
    Connection, TenantRef, Workspace, WorkspaceError, client_secret_id, connection_tokens_id,
};
use crate::{EngineError, extract};

/// Errors of opening a connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No connection of that name in any scope.
    #[error("no connection `{0}`; see `weft connection list`")]
    NoConnection(String),
    /// The connection's OAuth client is not declared.
    #[error(
        "the connection's OAuth client `{client}` does not exist; add it with `weft client add {client} --connector {connector}`"
    )]
    NoClient {
        /// The client's name.
        client: String,
        /// The connection's connector.
        connector: String,
    },
    /// The client's secret is not in its scope's store.
    #[error("the secret of OAuth client `{client}` is not in the credential store ({}); enter it again with `weft client edit {client}`", store.display())]
    NoSecret {
        /// The client's name.
        client: String,
        /// The store looked in.
        store: PathBuf,
    },
    /// The connection borrows from a connection that is gone.
    #[error(
        "connection `{name}` borrows concurrency from `{lender}`, which is gone; run `weft connection edit {name} --no-borrow`: no connection `{lender}`; see `weft connection list`"
    )]
    LenderGone {
        /// The borrower.
        name: String,
        /// The missing lender.
        lender: String,
    },
    /// The workspace refused.
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    /// The credential store refused.
    #[error(transparent)]
    Secrets(#[from] SecretError),
    /// The spec and the connection do not fit (hosts).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The OAuth client cannot be built or a grant failed.
    #[error(transparent)]
    OAuth(#[from] OAuthError),
    /// The HTTP client cannot be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// The connection's sign-in method is not (or no longer) one its spec declares.
    #[error(
        "connection `{name}` signs in with `{method}`, which connector `{connector}` does not declare (it signs in with {declared}); choose one of those with --method on `weft connection edit {name}`"
    )]
    MethodGone {
        /// The connection.
        name: String,
        /// Its method.
        method: AuthMethod,
        /// Its connector.
        connector: String,
        /// The methods the spec declares, for the message.
        declared: String,
    },
}

/// A connection opened for use.
pub struct Opened {
    /// The connection at work.
    pub session: Session,
    /// Its declaration.
    pub connection: Connection,
}

/// The scope index and declaration of connection `name` among `all`.
pub fn find(all: &[Workspace], name: &str) -> Result<(usize, Connection), ConnectError> {
    all.iter()
        .enumerate()
        .find_map(|(i, s)| s.file.connections.get(name).map(|c| (i, c.clone())))
        .ok_or_else(|| ConnectError::NoConnection(name.to_owned()))
}

/// The sign-in method of connection `name` (declared in `scope`, of connector `spec`): the one
/// it records, which the spec must still declare; for a connection written before connections
/// recorded it, the one it has been using — `token` when its sealed credentials are a pasted
/// token or it has no OAuth client, otherwise its client's OAuth method. `None` for a
/// connector that declares no method (every resource run by a plugin).
pub fn method(
    scope: &Workspace,
    spec: &weft_core::model::SpecFile,
    name: &str,
    connection: &Connection,
) -> Result<Option<AuthMethod>, ConnectError> {
    let declared = spec.auth.methods();
    if let Some(m) = connection.method {
        if !declared.contains(&m) {
            return Err(ConnectError::MethodGone {
                name: name.to_owned(),
                method: m,
                connector: spec.id.clone(),
                declared: weft_core::form::method_list(&declared),
            });
        }
        return Ok(Some(m));
    }
    let token = declared
        .contains(&AuthMethod::Token)
        .then_some(AuthMethod::Token);
    let oauth = declared.iter().copied().find(|m| m.uses_client());
    let pasted = token.is_some()
        && scope
            .secrets()?
            .get(&connection_tokens_id(name))?
            .and_then(|s| TokenSet::from_sealed_json(&s))
            .is_some_and(|t| t.pasted);
    Ok(match (&connection.client, pasted) {
        (_, true) => token,
        (Some(_), false) => oauth.or(token),
        (None, false) => token.or(oauth),
    })
}

/// The OAuth client of `connection` (when it signs in through one), sending the browser back
/// to `redirect_uri`; `None` for a connection without a client or signing in with a pasted
/// token (a client it still names is then never used).
pub fn oauth_app(
    all: &[Workspace],
    spec: &Spec,
    hosts: &Hosts,
    connection: &Connection,
    redirect_uri: &str,
) -> Result<Option<OAuthApp>, ConnectError> {
    let uses_oauth = match connection.method {
        Some(m) => m.uses_client(),
        None => spec.file().auth.oauth2.is_some() || spec.file().auth.client_credentials.is_some(),
    };
    let (true, Some(name)) = (uses_oauth, &connection.client) else {
        return Ok(None);
    };
    let Some((scope, client)) = all
        .iter()
        .find_map(|s| s.file.clients.get(name).map(|c| (s, c)))
    else {
        return Err(ConnectError::NoClient {
            client: name.clone(),
            connector: connection.connector.clone(),
        });
    };
    let secret = scope.secrets()?.get(&client_secret_id(name))?;
    if secret.is_none() {
        // Found now rather than at the provider, after the person went through consent.
        return Err(ConnectError::NoSecret {
            client: name.clone(),
            store: scope.credentials_path(),
        });
    }
    Ok(Some(OAuthApp::new(
        spec.file(),
        hosts,
        &client.client_id,
        secret,
        redirect_uri,
    )?))
}

/// Opens connection `name` (declared in one of `all`, of connector `spec`) on the wall clock;
/// `redirect_uri` is the callback its OAuth client names.
pub fn open(
    all: &[Workspace],
    spec: Spec,
    name: &str,
    redirect_uri: &str,
) -> Result<Opened, ConnectError> {
    let (index, mut connection) = find(all, name)?;
    // Settled once: a connection written before methods were recorded uses what it holds.
    connection.method = method(&all[index], spec.file(), name, &connection)?;
    let hosts = Hosts::for_connection(spec.file(), &connection.fields, &connection.hosts)?;
    // The connection's field values over the spec's defaults: in every request's templates and
    // in the budgets a field sizes.
    let fields = RequestContext::with_connection_fields(spec.file(), &connection.fields)?.fields;
    let app = oauth_app(all, &spec, &hosts, &connection, redirect_uri)?;
    // Borrowed concurrency: the borrower and its lender draw from one pool at the lender's
    // level, in this process and across processes.
    let pool = match &connection.borrow_concurrency_from {
        Some(lender) => {
            let (at, c) = find(all, lender).map_err(|_| ConnectError::LenderGone {
                name: name.to_owned(),
                lender: lender.clone(),
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
    let http = crate::http::client()?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let refresh = spec
        .file()
        .auth
        .oauth2
        .as_ref()
        .and_then(|o| o.refresh.clone());
    let tokens = crate::tokens::TokenKeeper::new(
        name,
        &connection_tokens_id(name),
        all[index].secrets()?,
        app,
        refresh,
        http.clone(),
        clock.clone(),
    );
    let mut limiter = match &pool {
        Some((level, dir)) => Limiter::shared(spec.file(), *level, dir, &fields),
        None => Limiter::with_fields(spec.file(), connection.concurrency, &fields),
    };
    if let Some(budgets) = fleet_budgets(all)? {
        limiter = limiter.in_fleet(budgets, &fleet_namespace(all, &connection));
    }
    Ok(Opened {
        session: Session::new(spec, hosts, limiter, http, tokens, clock).with_fields(fields),
        connection,
    })
}

/// The rate budgets of a process whose workspace keeps its state on PostgreSQL: the
/// [`PgBudgets`](crate::fleet::PgBudgets) every worker using that database shares; `None` with
/// the SQLite state (this process's memory then counts them).
pub fn fleet_budgets(
    all: &[Workspace],
) -> Result<Option<Arc<dyn crate::limits::BudgetStore>>, ConnectError> {
    let Some(ws) = all
        .iter()
        .find(|w| w.scope() == crate::workspace::Scope::Workspace)
    else {
        return Ok(None);
    };
    if ws.state_url()?.is_none() {
        return Ok(None);
    }
    let state = ws.open_state()?;
    let Some(pool) = state.postgres() else {
        return Ok(None);
    };
    let budgets = crate::fleet::PgBudgets::new(pool).map_err(|reason| {
        WorkspaceError::from(crate::state::StateError::Connect {
            at: pool.shown().to_owned(),
            reason,
        })
    })?;
    Ok(Some(Arc::new(budgets)))
}

/// Who shares a connection's budgets in a fleet: its connector and its OAuth client's
/// registration at the provider (the client id), so an app budget is one per app and a tenant
/// budget one per app and organisation. A connection without a client (a pasted token) is its
/// own app.
pub fn fleet_namespace(all: &[Workspace], connection: &Connection) -> String {
    let client_id = connection.client.as_ref().and_then(|name| {
        all.iter()
            .find_map(|s| s.file.clients.get(name))
            .map(|c| c.client_id.clone())
    });
    match client_id {
        Some(id) => format!("{}/client:{id}", connection.connector),
        None => format!("{}/connection", connection.connector),
    }
}

/// The organisations the consent that gave `tokens` connected, by the spec's `[tenants]`
/// (the token's claim, never "the first one listed"), and how many the provider listed.
/// `Ok(None)` for a connector without tenants.
pub async fn consent_tenants(
    session: &Session,
    tokens: &TokenSet,
    callback: &std::collections::BTreeMap<String, String>,
) -> Result<Option<(Vec<TenantRef>, usize)>, SessionError> {
    let file = session.spec().file();
    let Some(tenancy) = file.tenants.clone() else {
        return Ok(None);
    };
    // The provider named the tenant just authorized beside the code.
    if let TenantSelect::CallbackParam { param } = &tenancy.select {
        let found: Vec<TenantRef> = callback
            .get(param)
            .filter(|v| !v.trim().is_empty())
            .map(|id| TenantRef {
                id: id.clone(),
                name: id.clone(),
            })
            .into_iter()
            .collect();
        let n = found.len();
        return Ok(Some((found, n)));
    }
    let Some(resource) = &tenancy.resource else {
        return Ok(Some((Vec::new(), 0)));
    };
    let mut listed = Vec::new();
    session
        .list(resource, &session.context(Default::default()), |r| {
            listed.push(r);
            ControlFlow::Continue(())
        })
        .await?;
    // Fields are paths, as everywhere a spec names a value in a provider's JSON.
    let at = |v: &serde_json::Value, f: &str| {
        weft_core::fieldpath::lookup(v, f)
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    };
    let text = |v: &serde_json::Value, f: Option<&String>| match f
        .map_or(serde_json::Value::Null, |f| at(v, f))
    {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    let found = listed
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
    Ok(Some((found, listed.len())))
}

/// Adds `found` to connection `name`'s tenants (renaming those it has) and saves its scope;
/// returns how many it reaches.
pub fn add_tenants(
    scope: &mut Workspace,
    name: &str,
    found: &[TenantRef],
) -> Result<usize, ConnectError> {
    let target = scope
        .file
        .connections
        .get_mut(name)
        .ok_or_else(|| ConnectError::NoConnection(name.to_owned()))?;
    for t in found {
        match target.tenants.iter_mut().find(|x| x.id == t.id) {
            Some(existing) => existing.name.clone_from(&t.name),
            None => target.tenants.push(t.clone()),
        }
    }
    let total = target.tenants.len();
    scope.save()?;
    Ok(total)
}

/// The kinds of failure of a call, each with its own remedy (and the CLI's exit code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The credentials were refused (revoked grant, wrong or expired token, client secret).
    Unauthorized,
    /// The provider no longer accepts the OAuth client's secret.
    ClientRefused,
    /// The grant lacks permission for the call.
    Forbidden,
    /// No tenant, or the wrong one.
    Tenant,
    /// Rate limited (or a daily cap is spent).
    RateLimited,
    /// The provider could not be reached.
    Unreachable,
    /// The connection has no credentials yet.
    NotAuthorized,
    /// The record changed at the provider since it was read.
    Conflict,
    /// Anything else.
    Other,
}

/// The kind of a failed call.
pub fn classify(err: &SessionError) -> Failure {
    match err {
        SessionError::Call(CallError::Refused { class, .. }) => match class {
            ErrorClass::Unauthorized | ErrorClass::TokenExpired => Failure::Unauthorized,
            ErrorClass::Forbidden => Failure::Forbidden,
            ErrorClass::Tenant => Failure::Tenant,
            ErrorClass::RateLimited => Failure::RateLimited,
            ErrorClass::Conflict => Failure::Conflict,
            _ => Failure::Other,
        },
        SessionError::Call(CallError::DailyCap { .. }) | SessionError::Limit(_) => {
            Failure::RateLimited
        }
        SessionError::Call(CallError::Unreachable { .. }) => Failure::Unreachable,
        SessionError::Token(TokenError::NotAuthorized { .. }) => Failure::NotAuthorized,
        SessionError::Token(
            TokenError::NeedsAuthorization { .. } | TokenError::TokenRefused { .. },
        ) => Failure::Unauthorized,
        SessionError::Token(TokenError::OAuth(e)) if e.is_invalid_grant() => Failure::Unauthorized,
        SessionError::Token(TokenError::OAuth(e)) if e.is_invalid_client() => {
            Failure::ClientRefused
        }
        SessionError::Token(TokenError::OAuth(e)) if e.is_transient() => Failure::Unreachable,
        SessionError::Engine(EngineError::NoTenant { .. }) => Failure::Tenant,
        _ => Failure::Other,
    }
}

/// Why a test call failed.
#[derive(Debug)]
pub enum TestFailure {
    /// The call failed.
    Call(SessionError),
    /// The provider answered, but not as the spec's test expects (the message says how).
    Unexpected(String),
    /// The answer cannot be read as the spec describes its records.
    Unreadable(String),
}

/// The spec's test call for one organisation (or none): the spec's description of what
/// answered, or why it failed.
pub async fn test_call(session: &Session, tenant: Option<Tenant>) -> Result<String, TestFailure> {
    let file = session.spec().file();
    let test = &file.test;
    let ctx = RequestContext {
        tenant,
        ..session.context(Default::default())
    };
    let answer = session
        .call(&test.resource, OpKind::List, &ctx, &[], &[], None)
        .await
        .map_err(TestFailure::Call)?;
    let extract = file
        .resources
        .get(&test.resource)
        .and_then(|r| r.list.as_ref())
        .map(|op| op.records.clone())
        .unwrap_or(weft_core::model::Extract::Root);
    let found = extract::records(&answer.body, &extract).map_err(|e| {
        TestFailure::Unreadable(format!(
            "the test answer is not what the spec describes: {e}"
        ))
    })?;
    if !test.success_status.contains(&answer.status) || (test.needs_record && found.is_empty()) {
        return Err(TestFailure::Unexpected(format!(
            "the test call answered {} with {} record(s); the spec expects one of {:?} with a record",
            answer.status,
            found.len(),
            test.success_status
        )));
    }
    let env = weft_core::template::environment();
    Ok(test
        .describe
        .as_ref()
        .and_then(|d| {
            env.render_str(d, minijinja::context! { record => found.first() })
                .ok()
        })
        .unwrap_or_default())
}

/// Revokes connection `name`'s grant at the provider, when its spec declares how and it has
/// tokens. Returns whether a revocation was made.
pub async fn revoke(all: &[Workspace], spec: &Spec, name: &str) -> Result<bool, ConnectError> {
    let (index, mut connection) = find(all, name)?;
    // A pasted token has no grant behind it to revoke, whatever client the connection names.
    connection.method = method(&all[index], spec.file(), name, &connection)?;
    let hosts = Hosts::for_connection(spec.file(), &connection.fields, &connection.hosts)?;
    let Some(app) = oauth_app(
        all,
        spec,
        &hosts,
        &connection,
        &weft_core::callback_url(weft_core::DEFAULT_CALLBACK_PORT),
    )?
    else {
        return Ok(false);
    };
    if !app.can_revoke() {
        return Ok(false);
    }
    let Some(stored) = all[index].secrets()?.get(&connection_tokens_id(name))? else {
        return Ok(false);
    };
    let Some(tokens) = TokenSet::from_sealed_json(&stored) else {
        return Ok(false);
    };
    let token: Secret = tokens.refresh_token.unwrap_or(tokens.access_token);
    let http = crate::http::client()?;
    app.revoke(&http, &token).await?;
    Ok(true)
}

/// The other connections (described with the tenants they share) that revoking `name`'s
/// grant would disconnect: same connector and OAuth client, reaching one of the same tenants
/// (or either records none, when the connector has no tenants to tell them apart).
pub fn sharing_the_grant(all: &[Workspace], name: &str, deleted: &Connection) -> Vec<String> {
    all.iter()
        .flat_map(|s| s.file.connections.iter())
        .filter(|(n, c)| {
            n.as_str() != name && c.connector == deleted.connector && c.client == deleted.client
        })
        .filter_map(|(n, c)| {
            let shared: Vec<&str> = c
                .tenants
                .iter()
                .filter(|t| deleted.tenants.iter().any(|d| d.id == t.id))
                .map(|t| t.name.as_str())
                .collect();
            if !shared.is_empty() {
                Some(format!("`{n}` (reaching {})", shared.join(", ")))
            } else if c.tenants.is_empty() || deleted.tenants.is_empty() {
                Some(format!("`{n}`"))
            } else {
                None
            }
        })
        .collect()
}

/// The form field whose value is a pasted token (the field the spec's `[auth.token]` template
/// reads), when the connector takes one; its rules check what is pasted.
pub fn token_field(spec: &weft_core::model::SpecFile) -> Option<&weft_core::model::Field> {
    let token = spec.auth.token.as_ref()?;
    spec.fields
        .iter()
        .find(|f| token.value.contains(&format!("fields.{}", f.id)))
}

/// Seals `token` (already checked against [`token_field`]'s rules) as connection `name`'s
/// credentials in `scope`'s store.
pub fn store_pasted_token(
    scope: &Workspace,
    name: &str,
    token: &Secret,
) -> Result<(), ConnectError> {
    let sealed = Secret::new(
        serde_json::json!({ "kind": "token", "access_token": token.expose() }).to_string(),
    );
    scope.secrets()?.put(&connection_tokens_id(name), &sealed)?;
    Ok(())
}
