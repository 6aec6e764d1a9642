//! Putting a connection to work from the console: Save & authorize (the provider's consent,
//! answered at the console's own `/oauth/callback`), the choice of the organisations a consent
//! connected, and Test (the spec's test call, its failure classified with a remedy).

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse as _, Redirect, Response};
use serde::Deserialize;
use weft_engine::connect::{self, ConnectError, Failure, TestFailure};
use weft_engine::limits::{Clock as _, SystemClock};
use weft_engine::request::{Hosts, Tenant};
use weft_engine::session::SessionError;
use weft_engine::workspace::{Workspace, connection_tokens_id};

use super::clients::url_path;
use super::connections::require_manage;
use crate::store::{now_ms, random_bytes};
use crate::web::{
    AppState, FormData, Me, PENDING_MS, PageError, PendingAuth, TenantChoice, lock, see_other,
};

/// What opening a connection's OAuth client failed with, in the console's words.
fn connect_error(name: &str, err: ConnectError) -> PageError {
    match err {
        ConnectError::NoClient { client, .. } => PageError::BadRequest(format!(
            "Connection {name} names OAuth client {client}, which does not exist. Add it on the OAuth clients page first."
        )),
        ConnectError::NoSecret { client, .. } => PageError::BadRequest(format!(
            "The secret of OAuth client {client} is not in the credential store. Enter it again: OAuth clients, Edit {client}."
        )),
        ConnectError::NoConnection(_) => {
            PageError::NotFound(format!("There is no connection {name} in this workspace."))
        }
        other => PageError::internal(other),
    }
}

/// What the callback's engine work failed with.
enum Fail {
    Connect(ConnectError),
    NoClient,
    Exchange(weft_engine::oauth::OAuthError),
}

/// Sends the browser to the provider's consent page for connection `name` (already saved).
pub(crate) fn start(state: &AppState, me: &Me, name: &str) -> Result<Response, PageError> {
    let ws = state.workspace()?;
    let mut connection = ws.file.connections.get(name).cloned().ok_or_else(|| {
        PageError::NotFound(format!("There is no connection {name} in this workspace."))
    })?;
    let spec = state.spec(&connection.connector).ok_or_else(|| {
        PageError::NotFound(format!("Connector {} is not loaded.", connection.connector))
    })?;
    connection.method =
        connect::method(&ws, spec.file(), name, &connection).map_err(|e| connect_error(name, e))?;
    if connection.method == Some(weft_core::model::AuthMethod::Token) {
        return Err(PageError::BadRequest(format!(
            "Connection {name} signs in with a pasted token, so there is nothing to authorize. To give it a new token, or to sign in with OAuth instead, use Edit."
        )));
    }
    if spec.file().auth.oauth2.is_none() {
        return Err(PageError::BadRequest(format!(
            "Connector {} does not authorize through a consent page; nothing to authorize here.",
            spec.file().name
        )));
    }
    let hosts = Hosts::new(spec.file(), &connection.hosts).map_err(PageError::internal)?;
    let all = [ws];
    let app = connect::oauth_app(&all, spec, &hosts, &connection, &state.callback_url())
        .map_err(|e| connect_error(name, e))?
        .ok_or_else(|| {
            PageError::BadRequest(format!(
                "Connection {name} has no OAuth client to authorize with."
            ))
        })?;
    let pending = app.start();
    let url = pending.url.to_string();
    let now = now_ms();
    let mut map = lock(&state.pending);
    map.retain(|_, p| now - p.started_ms < PENDING_MS);
    map.insert(
        pending.state.clone(),
        PendingAuth {
            user: me.user.name.clone(),
            connection: name.to_owned(),
            pending,
            started_ms: now,
        },
    );
    drop(map);
    state.audit(
        &me.user.name,
        "connection.authorize-start",
        name,
        "sent to the provider's consent page",
    )?;
    Ok(Redirect::to(&url).into_response())
}

pub(crate) async fn authorize(
    State(state): State<AppState>,
    me: Me,
    Path(name): Path<String>,
) -> Result<Response, PageError> {
    let ws = state.workspace()?;
    let connection = ws.file.connections.get(&name).ok_or_else(|| {
        PageError::NotFound(format!("There is no connection {name} in this workspace."))
    })?;
    require_manage(&state, &me, &name, connection, "authorize")?;
    start(&state, &me, &name)
}

#[derive(Deserialize)]
pub(crate) struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    /// What else the provider said beside the code (a tenant id some providers name there).
    #[serde(flatten)]
    rest: std::collections::BTreeMap<String, String>,
}

/// The provider's answer: the code exchanged (with the PKCE verifier), the tokens sealed, the
/// organisations this consent connected offered for choice.
pub(crate) async fn callback(
    State(state): State<AppState>,
    me: Me,
    Query(q): Query<CallbackQuery>,
) -> Result<Response, PageError> {
    let unknown = || {
        PageError::BadRequest(
            "This answer does not belong to an authorization started from this console by you in the last 15 minutes (or it was used already). Start again with Authorize on the Connections page.".into(),
        )
    };
    let key = q.state.as_deref().ok_or_else(unknown)?;
    let entry = {
        let mut map = lock(&state.pending);
        match map.get(key) {
            Some(p) if p.user == me.user.name && now_ms() - p.started_ms < PENDING_MS => {
                map.remove(key)
            }
            _ => None,
        }
    }
    .ok_or_else(unknown)?;
    let name = entry.connection.clone();
    if let Some(error) = q.error {
        let detail: String = q
            .error_description
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        state.audit(
            &me.user.name,
            "connection.authorize",
            &name,
            &format!("declined at the provider: {error}"),
        )?;
        return Err(PageError::BadRequest(format!(
            "The provider did not grant access ({error}{}{detail}). Nothing was changed; authorize again and allow access on the consent page.",
            if detail.is_empty() { "" } else { ": " }
        )));
    }
    let code = q.code.ok_or_else(|| {
        PageError::BadRequest(
            "The provider's answer carries no code. Start again with Authorize.".into(),
        )
    })?;
    let ws = state.workspace()?;
    let connection = ws.file.connections.get(&name).cloned().ok_or_else(|| {
        PageError::NotFound(format!(
            "Connection {name} was deleted meanwhile; nothing was stored."
        ))
    })?;
    // It may have been given to someone else while the person was at the provider.
    require_manage(&state, &me, &name, &connection, "authorize")?;
    let spec = state
        .spec(&connection.connector)
        .ok_or_else(|| {
            PageError::NotFound(format!("Connector {} is not loaded.", connection.connector))
        })?
        .clone();
    let hosts = Hosts::new(spec.file(), &connection.hosts).map_err(PageError::internal)?;
    let all = [ws];
    let callback = q.rest.clone();
    let url = state.callback_url();
    let owned = name.clone();
    let outcome = crate::web::engine(move || async move {
        let app = connect::oauth_app(&all, &spec, &hosts, &connection, &url)
            .map_err(Fail::Connect)?
            .ok_or(Fail::NoClient)?;
        let http = weft_engine::http::client().map_err(|e| Fail::Connect(e.into()))?;
        let tokens = app
            .exchange(&http, entry.pending, &code, SystemClock.now_ms())
            .await
            .map_err(Fail::Exchange)?;
        // Sealed first: whatever happens next, the grant is not lost.
        all[0]
            .secrets()
            .and_then(|mut store| {
                Ok(store.put(&connection_tokens_id(&owned), &tokens.to_sealed_json())?)
            })
            .map_err(|e| Fail::Connect(e.into()))?;
        let opened = connect::open(&all, spec, &owned, &url).map_err(Fail::Connect)?;
        let tenants = connect::consent_tenants(&opened.session, &tokens, &callback).await;
        Ok::<_, Fail>((all, tenants))
    })
    .await?;
    let (all, tenants) = match outcome {
        Ok(done) => done,
        Err(Fail::Exchange(e)) => {
            let remedy = if e.is_invalid_client() {
                " The provider does not accept the OAuth client: check its client ID, or generate a new secret at the provider and enter it on the OAuth clients page."
            } else {
                " Authorize again; if it keeps failing, check that the provider is reachable."
            };
            state.audit(
                &me.user.name,
                "connection.authorize",
                &name,
                "code exchange failed",
            )?;
            return Err(PageError::BadRequest(format!(
                "The code could not be exchanged for tokens: {e}.{remedy}"
            )));
        }
        Err(Fail::NoClient) => {
            return Err(PageError::BadRequest(format!(
                "Connection {name} has no OAuth client."
            )));
        }
        Err(Fail::Connect(e)) => return Err(connect_error(&name, e)),
    };
    state.audit(
        &me.user.name,
        "connection.authorize",
        &name,
        "tokens sealed",
    )?;
    let (found, listed) = match tenants {
        Ok(None) => {
            return Ok(see_other(&format!(
                "/connections?authorized={}",
                url_path(&name)
            )));
        }
        Ok(Some(t)) => t,
        Err(e) => {
            return Err(PageError::BadRequest(format!(
                "Connection {name} is authorized, but its organisations could not be listed: {}. Use Authorize again to choose them.",
                failure_text(&name, &e).0
            )));
        }
    };
    if found.is_empty() {
        return Err(PageError::BadRequest(format!(
            "The consent connected no organisation this app can use (the provider lists {listed} for the grant). Authorize {name} again and select an organisation on the consent page."
        )));
    }
    let id = base64_id()?;
    let now = now_ms();
    {
        let mut choices = lock(&state.choices);
        choices.retain(|_, c| now - c.started_ms < PENDING_MS);
        choices.insert(
            id.clone(),
            TenantChoice {
                user: me.user.name.clone(),
                connection: name.clone(),
                found: found.clone(),
                started_ms: now,
            },
        );
    }
    let existing: Vec<&str> = all[0]
        .file
        .connections
        .get(&name)
        .map(|c| c.tenants.iter().map(|t| t.id.as_str()).collect())
        .unwrap_or_default();
    let options: Vec<_> = found
        .iter()
        .map(|t| minijinja::context! { id => &t.id, name => &t.name, already => existing.contains(&t.id.as_str()) })
        .collect();
    state.page(
        &me,
        "organisations.html",
        "connections",
        minijinja::context! {
            name, choice => id, options,
            action => format!("/connections/{}/organisations", url_path(&name)),
        },
    )
}

fn base64_id() -> Result<String, PageError> {
    use base64::Engine as _;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(random_bytes::<24>().map_err(PageError::internal)?))
}

/// The person's choice among the organisations the consent connected.
pub(crate) async fn organisations(
    State(state): State<AppState>,
    me: Me,
    Path(name): Path<String>,
    data: FormData,
) -> Result<Response, PageError> {
    let choice_id = data.get("choice").unwrap_or_default().to_owned();
    let choice = {
        let choices = lock(&state.choices);
        choices
            .get(&choice_id)
            .filter(|c| c.user == me.user.name && c.connection == name && now_ms() - c.started_ms < PENDING_MS)
            .map(|c| c.found.clone())
    }
    .ok_or_else(|| PageError::BadRequest("This choice has expired or was made already. Authorize the connection again to choose organisations.".into()))?;
    let picked: Vec<_> = data
        .0
        .iter()
        .filter(|(k, _)| k == "tenant")
        .filter_map(|(_, v)| choice.iter().find(|t| &t.id == v).cloned())
        .collect();
    if picked.is_empty() {
        return Err(PageError::BadRequest(
            "Choose at least one organisation: go back and tick the ones this connection should reach.".into(),
        ));
    }
    let mut ws = state.workspace()?;
    if let Some(connection) = ws.file.connections.get(&name) {
        require_manage(
            &state,
            &me,
            &name,
            connection,
            "choose the organisations of",
        )?;
    }
    lock(&state.choices).remove(&choice_id);
    let total =
        connect::add_tenants(&mut ws, &name, &picked).map_err(|e| connect_error(&name, e))?;
    let names: Vec<&str> = picked.iter().map(|t| t.name.as_str()).collect();
    state.audit(
        &me.user.name,
        "connection.organisations",
        &name,
        &format!("added {}; reaches {total}", names.join(", ")),
    )?;
    Ok(see_other(&format!(
        "/connections?authorized={}",
        url_path(&name)
    )))
}

/// A failed call in the console's words: the message and the remedy.
fn failure_text(name: &str, err: &SessionError) -> (String, &'static str) {
    let message = match err {
        SessionError::Call(weft_engine::http::CallError::Refused { message, .. }) => {
            message.clone()
        }
        _ => err.to_string(),
    };
    let _ = name;
    let remedy = match connect::classify(err) {
        Failure::Unauthorized => {
            "The provider refused the credentials. If the client secret was regenerated, enter it on the OAuth clients page; then use Authorize again."
        }
        Failure::ClientRefused => {
            "The provider no longer accepts the OAuth client's secret. Generate a new secret in the app's settings at the provider and enter it on the OAuth clients page."
        }
        Failure::Forbidden => {
            "The user who granted access lacks the permission this call needs; authorize again as a user who has it."
        }
        Failure::Tenant => {
            "The organisation is no longer connected. Use Authorize again and select it."
        }
        Failure::RateLimited => {
            "The provider's rate limit is spent for now. Wait for its window to pass, then test again."
        }
        Failure::Unreachable => {
            "The provider could not be reached. Check the network and the provider's status page, then test again."
        }
        Failure::NotAuthorized => "The connection has no credentials yet. Use Authorize.",
        Failure::Conflict => {
            "The record changed at the provider since it was read; read it again before writing."
        }
        Failure::Other => {
            "See the message above; if it names a setting, correct it and test again."
        }
    };
    (message, remedy)
}

/// Test: the spec's test call, once per organisation the connection reaches.
pub(crate) async fn test(
    State(state): State<AppState>,
    me: Me,
    Path(name): Path<String>,
) -> Result<Response, PageError> {
    let ws = state.workspace()?;
    let connection = ws.file.connections.get(&name).cloned().ok_or_else(|| {
        PageError::NotFound(format!("There is no connection {name} in this workspace."))
    })?;
    let spec = state
        .spec(&connection.connector)
        .ok_or_else(|| {
            PageError::NotFound(format!("Connector {} is not loaded.", connection.connector))
        })?
        .clone();
    let all: [Workspace; 1] = [ws];
    let file = spec.file();
    let tenanted = file
        .resources
        .get(&file.test.resource)
        .is_some_and(|r| file.is_tenanted(r));
    let targets: Vec<Option<Tenant>> = if tenanted && !connection.tenants.is_empty() {
        connection
            .tenants
            .iter()
            .map(|t| {
                Some(Tenant {
                    id: t.id.clone(),
                    name: t.name.clone(),
                })
            })
            .collect()
    } else {
        vec![None]
    };
    let url = state.callback_url();
    let outcomes = {
        let owned = name.clone();
        crate::web::engine(move || async move {
            let opened = connect::open(&all, spec, &owned, &url)?;
            let mut outcomes = Vec::new();
            for tenant in targets {
                let label = tenant.as_ref().map(|t| t.name.clone());
                outcomes.push((label, connect::test_call(&opened.session, tenant).await));
            }
            Ok::<_, ConnectError>(outcomes)
        })
        .await?
        .map_err(|e| connect_error(&name, e))?
    };
    let mut results = Vec::new();
    let mut failures = 0;
    for (label, outcome) in outcomes {
        match outcome {
            Ok(description) => {
                results.push(minijinja::context! { label, ok => true, message => description })
            }
            Err(TestFailure::Call(err)) => {
                failures += 1;
                let (message, remedy) = failure_text(&name, &err);
                results.push(minijinja::context! { label, ok => false, message, remedy });
            }
            Err(TestFailure::Unexpected(text) | TestFailure::Unreadable(text)) => {
                failures += 1;
                results.push(minijinja::context! { label, ok => false, message => text, remedy => "The provider answered differently from what the connector's spec expects; report it with the message." });
            }
        }
    }
    let detail = if failures == 0 {
        "works".to_owned()
    } else {
        format!("{failures} failure(s)")
    };
    state.audit(&me.user.name, "connection.test", &name, &detail)?;
    state.page(
        &me,
        "test.html",
        "connections",
        minijinja::context! { name, results, works => failures == 0 },
    )
}
