//! OAuth clients of the workspace: list, add, edit (the secret is write-only: never sent to
//! the browser, entered again on every edit, sealed with AES-256-GCM in the workspace's
//! credential store) and remove (refused while a connection uses the client, naming it).

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse as _, Response};
use serde::Deserialize;
use weft_core::Spec;
use weft_core::form::FieldValue;
use weft_core::model::Field;
use weft_engine::secrets::Secret;
use weft_engine::workspace::{Client, check_name, client_secret_id};

use super::fields::{self, FieldView};
use crate::web::{AppState, FormData, Me, PageError, see_other};

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    added: Option<String>,
    changed: Option<String>,
    removed: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct NewQuery {
    connector: Option<String>,
}

/// The connectors that use OAuth clients.
fn oauth_specs(state: &AppState) -> Vec<&Spec> {
    state
        .specs
        .iter()
        .filter(|s| s.file().auth.oauth2.is_some() || s.file().auth.client_credentials.is_some())
        .collect()
}

/// The spec's client ID and client secret fields.
fn client_fields(spec: &Spec) -> Result<(Field, Field), PageError> {
    let f = spec.file();
    let get = |id: &str| f.fields.iter().find(|x| x.id == id).cloned();
    match (get("client_id"), get("client_secret")) {
        (Some(a), Some(b)) if f.auth.oauth2.is_some() || f.auth.client_credentials.is_some() => {
            Ok((a, b))
        }
        _ => Err(PageError::BadRequest(format!(
            "Connector {} does not use OAuth clients (its spec declares no client ID and secret).",
            f.name
        ))),
    }
}

/// The connections (in any scope) that use client `name`.
fn users_of(ws: &weft_engine::workspace::Workspace, name: &str) -> Vec<String> {
    ws.file
        .connections
        .iter()
        .filter(|(_, c)| c.client.as_deref() == Some(name))
        .map(|(n, _)| n.clone())
        .collect()
}

pub(crate) async fn list(
    State(state): State<AppState>,
    me: Me,
    Query(q): Query<ListQuery>,
) -> Result<Response, PageError> {
    let ws = state.workspace()?;
    let store = ws.secrets().map_err(PageError::internal)?;
    let rows: Vec<_> = ws
        .file
        .clients
        .iter()
        .map(|(name, c)| {
            let stored = store.ids().any(|id| id == client_secret_id(name));
            minijinja::context! {
                name, connector => &c.connector, client_id => &c.client_id,
                secret => if stored { "sealed" } else { "missing" },
                used_by => users_of(&ws, name),
            }
        })
        .collect();
    let notice = match (q.added, q.changed, q.removed) {
        (Some(n), _, _) => Some(format!(
            "Added OAuth client {n}. Its secret is sealed and will not be shown again."
        )),
        (_, Some(n), _) => Some(format!("Saved OAuth client {n}.")),
        (_, _, Some(n)) => Some(format!("Removed OAuth client {n} and its sealed secret.")),
        _ => None,
    };
    let connectors: Vec<_> = oauth_specs(&state)
        .into_iter()
        .map(|s| minijinja::context! { id => s.id(), name => &s.file().name })
        .collect();
    state.page(
        &me,
        "clients.html",
        "clients",
        minijinja::context! { clients => rows, notice, connectors },
    )
}

struct ClientForm {
    connector: String,
    connector_name: String,
    name: FieldView,
    client_id: FieldView,
    secret: FieldView,
}

fn render_form(
    state: &AppState,
    me: &Me,
    form: &ClientForm,
    edit: Option<&str>,
    error: Option<&str>,
) -> Result<Response, PageError> {
    let mut secret = form.secret.clone();
    if edit.is_some() {
        secret.help = Some(format!(
            "Enter the secret again: it is never shown or sent back to the browser. {}",
            secret.help.unwrap_or_default()
        ));
    }
    let fields: Vec<&FieldView> = if edit.is_some() {
        vec![&form.client_id, &secret]
    } else {
        vec![&form.name, &form.client_id, &secret]
    };
    let action = match edit {
        Some(name) => format!("/clients/{}/edit", url_path(name)),
        None => "/clients".to_owned(),
    };
    let mut res = state.page(
        me,
        "client_form.html",
        "clients",
        minijinja::context! {
            edit, action, fields, error,
            connector => &form.connector, connector_name => &form.connector_name,
            callback => state.callback_url(),
        },
    )?;
    if error.is_some() {
        *res.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(res)
}

/// A path segment, percent-encoded.
pub(crate) fn url_path(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn blank_form(spec: &Spec) -> Result<ClientForm, PageError> {
    let (id_field, secret_field) = client_fields(spec)?;
    Ok(ClientForm {
        connector: spec.id().to_owned(),
        connector_name: spec.file().name.clone(),
        name: fields::name_input(
            "name",
            "Name",
            "How flows and connections refer to this client, unique in the workspace (for example xero-app).",
            "",
        ),
        client_id: fields::view(&id_field, "client_id", None),
        secret: fields::view(&secret_field, "client_secret", None),
    })
}

pub(crate) async fn new(
    State(state): State<AppState>,
    me: Me,
    Query(q): Query<NewQuery>,
) -> Result<Response, PageError> {
    me.require_admin(&state, "add OAuth clients")?;
    let Some(id) = q.connector.filter(|c| !c.is_empty()) else {
        return Ok(see_other("/clients#add"));
    };
    let spec = state
        .spec(&id)
        .ok_or_else(|| PageError::NotFound(format!("There is no connector `{id}`.")))?;
    render_form(&state, &me, &blank_form(spec)?, None, None)
}

/// Checks the ID and the secret with the spec's rules; errors go beside the fields.
fn checked(
    spec: &Spec,
    form: &mut ClientForm,
    data: &FormData,
) -> Result<Option<(String, Secret)>, PageError> {
    let (id_field, secret_field) = client_fields(spec)?;
    let typed_id = data.get("client_id");
    form.client_id = fields::view(&id_field, "client_id", typed_id);
    let id = fields::check(&id_field, &mut form.client_id, typed_id);
    let typed_secret = data.get("client_secret").map(|s| Secret::new(s.to_owned()));
    let secret = fields::check(
        &secret_field,
        &mut form.secret,
        typed_secret.as_ref().map(Secret::expose),
    );
    match (id, secret) {
        (Some(FieldValue::Text(id)), Some(FieldValue::Text(secret))) => {
            Ok(Some((id, Secret::new(secret))))
        }
        _ => {
            if form.client_id.error.is_none() && typed_id.unwrap_or("").is_empty() {
                form.client_id.error = Some("A value is required.".into());
            }
            if form.secret.error.is_none()
                && typed_secret.as_ref().is_none_or(|s| s.expose().is_empty())
            {
                form.secret.error = Some("A value is required.".into());
            }
            Ok(None)
        }
    }
}

pub(crate) async fn add(
    State(state): State<AppState>,
    me: Me,
    data: FormData,
) -> Result<Response, PageError> {
    me.require_admin(&state, "add OAuth clients")?;
    let connector = data.get("connector").unwrap_or_default();
    let spec = state.spec(connector).ok_or_else(|| {
        PageError::BadRequest(format!(
            "There is no connector `{connector}`; choose one from the list."
        ))
    })?;
    let mut form = blank_form(spec)?;
    let name = data.get("name").unwrap_or_default().to_owned();
    form.name.value.clone_from(&name);
    let mut ws = state.workspace()?;
    if let Err(reason) = check_name("client", &name) {
        form.name.error = Some(reason);
    } else if ws.file.clients.contains_key(&name) {
        form.name.error = Some(format!(
            "An OAuth client {name} exists already; choose another name, or edit that one."
        ));
    }
    let values = checked(spec, &mut form, &data)?;
    let (Some((client_id, secret)), None) = (values, &form.name.error) else {
        return render_form(
            &state,
            &me,
            &form,
            None,
            Some("Nothing was saved: correct the fields marked below."),
        );
    };
    let mut store = ws.secrets().map_err(PageError::internal)?;
    store
        .put(&client_secret_id(&name), &secret)
        .map_err(PageError::internal)?;
    ws.file.clients.insert(
        name.clone(),
        Client {
            connector: spec.id().to_owned(),
            client_id,
        },
    );
    ws.save().map_err(PageError::internal)?;
    state.audit(
        &me.user.name,
        "client.add",
        &name,
        &format!("{} client added, secret sealed", spec.id()),
    )?;
    Ok(see_other(&format!("/clients?added={}", url_path(&name))))
}

fn existing(
    state: &AppState,
    name: &str,
) -> Result<(weft_engine::workspace::Workspace, Client), PageError> {
    let ws = state.workspace()?;
    let client = ws.file.clients.get(name).cloned().ok_or_else(|| {
        PageError::NotFound(format!(
            "There is no OAuth client {name} in this workspace; see OAuth clients."
        ))
    })?;
    Ok((ws, client))
}

pub(crate) async fn edit_form(
    State(state): State<AppState>,
    me: Me,
    Path(name): Path<String>,
) -> Result<Response, PageError> {
    me.require_admin(&state, "edit OAuth clients")?;
    let (_, client) = existing(&state, &name)?;
    let spec = state.spec(&client.connector).ok_or_else(|| {
        PageError::NotFound(format!("Connector {} is not loaded.", client.connector))
    })?;
    let mut form = blank_form(spec)?;
    form.client_id.value = client.client_id;
    render_form(&state, &me, &form, Some(&name), None)
}

pub(crate) async fn edit(
    State(state): State<AppState>,
    me: Me,
    Path(name): Path<String>,
    data: FormData,
) -> Result<Response, PageError> {
    me.require_admin(&state, "edit OAuth clients")?;
    let (mut ws, client) = existing(&state, &name)?;
    let spec = state.spec(&client.connector).ok_or_else(|| {
        PageError::NotFound(format!("Connector {} is not loaded.", client.connector))
    })?;
    let mut form = blank_form(spec)?;
    let Some((client_id, secret)) = checked(spec, &mut form, &data)? else {
        return render_form(
            &state,
            &me,
            &form,
            Some(&name),
            Some("Nothing was saved: correct the fields marked below."),
        );
    };
    let mut store = ws.secrets().map_err(PageError::internal)?;
    store
        .put(&client_secret_id(&name), &secret)
        .map_err(PageError::internal)?;
    if let Some(c) = ws.file.clients.get_mut(&name) {
        c.client_id = client_id;
    }
    ws.save().map_err(PageError::internal)?;
    state.audit(
        &me.user.name,
        "client.edit",
        &name,
        "client ID saved, secret sealed again",
    )?;
    Ok(see_other(&format!("/clients?changed={}", url_path(&name))))
}

pub(crate) async fn remove_form(
    State(state): State<AppState>,
    me: Me,
    Path(name): Path<String>,
) -> Result<Response, PageError> {
    me.require_admin(&state, "remove OAuth clients")?;
    let (ws, _) = existing(&state, &name)?;
    let used = users_of(&ws, &name);
    state.page(
        &me,
        "confirm.html",
        "clients",
        minijinja::context! {
            title => format!("Remove OAuth client {name}?"),
            action => format!("/clients/{}/remove", url_path(&name)),
            blocked => (!used.is_empty()).then(|| format!(
                "Connections {} use this client. Delete them or give them another client first.",
                used.join(", ")
            )),
            what => "This removes the client from weft.toml and deletes its sealed secret. It cannot be undone; the app stays registered at the provider.",
            button => "Remove client",
            back => "/clients",
        },
    )
}

pub(crate) async fn remove(
    State(state): State<AppState>,
    me: Me,
    Path(name): Path<String>,
) -> Result<Response, PageError> {
    me.require_admin(&state, "remove OAuth clients")?;
    let (mut ws, _) = existing(&state, &name)?;
    let used = users_of(&ws, &name);
    if !used.is_empty() {
        let mut res = PageError::BadRequest(format!(
            "OAuth client {name} was not removed: connections {} use it. Delete them or give them another client first.",
            used.join(", ")
        ))
        .into_response();
        *res.status_mut() = axum::http::StatusCode::CONFLICT;
        return Ok(res);
    }
    let mut store = ws.secrets().map_err(PageError::internal)?;
    store
        .remove(&client_secret_id(&name))
        .map_err(PageError::internal)?;
    ws.file.clients.shift_remove(&name);
    ws.save().map_err(PageError::internal)?;
    state.audit(
        &me.user.name,
        "client.remove",
        &name,
        "client and sealed secret removed",
    )?;
    Ok(see_other(&format!("/clients?removed={}", url_path(&name))))
}
