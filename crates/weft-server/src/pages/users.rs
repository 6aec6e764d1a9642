//! Console users: the list; an administrator adds users (name, password, role) and removes
//! them (never the last administrator).

use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::clients::url_path;
use super::fields::FieldView;
use crate::store::{MAX_PASSWORD, MIN_PASSWORD, Role, StoreError};
use crate::web::{AppState, FormData, Me, PageError, see_other};

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    added: Option<String>,
    removed: Option<String>,
}

fn form_fields(name: &str, role: &str) -> Vec<FieldView> {
    vec![
        FieldView {
            id: "name".into(),
            label: "User name".into(),
            help: Some("Letters, digits, `.`, `_`, `-` or `@`, up to 64.".into()),
            input: "text",
            required: true,
            pattern: Some("[\\p{L}\\p{N}._@\\-]{1,64}".into()),
            maxlength: Some(64),
            value: name.into(),
            autocomplete: "off",
            ..FieldView::default()
        },
        FieldView {
            id: "password".into(),
            label: "Password".into(),
            help: Some(format!("{MIN_PASSWORD} to {MAX_PASSWORD} characters. Give it to the person yourself; an administrator changes it with `weft user passwd NAME`.")),
            input: "password",
            required: true,
            minlength: Some(u32::try_from(MIN_PASSWORD).unwrap_or(10)),
            maxlength: Some(u32::try_from(MAX_PASSWORD).unwrap_or(1024)),
            autocomplete: "new-password",
            ..FieldView::default()
        },
        FieldView {
            id: "role".into(),
            label: "Role".into(),
            help: Some("An administrator manages OAuth clients, every connection, mapping tables and users; a member creates and manages only their own connections, runs flows and handles errors.".into()),
            input: "select",
            required: true,
            choices: vec![("member".into(), "Member".into()), ("admin".into(), "Administrator".into())],
            value: role.into(),
            ..FieldView::default()
        },
    ]
}

fn render(
    state: &AppState,
    me: &Me,
    fields: Vec<FieldView>,
    notice: Option<String>,
    error: Option<&str>,
) -> Result<Response, PageError> {
    let ws = state.workspace()?;
    let users: Vec<_> = state
        .store()
        .users()
        .map_err(PageError::internal)?
        .into_iter()
        .map(|u| {
            let owns = ws.file.connections_owned_by(&u.name).join(", ");
            minijinja::context! { owns, ..minijinja::Value::from_serialize(&u) }
        })
        .collect();
    let mut res = state.page(
        me,
        "users.html",
        "users",
        minijinja::context! { users, fields, notice, error },
    )?;
    if error.is_some() {
        *res.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(res)
}

pub(crate) async fn list(
    State(state): State<AppState>,
    me: Me,
    Query(q): Query<ListQuery>,
) -> Result<Response, PageError> {
    let notice = match (q.added, q.removed) {
        (Some(n), _) => Some(format!("Added user {n}.")),
        (_, Some(n)) => Some(format!("Removed user {n} and ended their sessions.")),
        _ => None,
    };
    render(&state, &me, form_fields("", "member"), notice, None)
}

pub(crate) async fn add(
    State(state): State<AppState>,
    me: Me,
    data: FormData,
) -> Result<Response, PageError> {
    me.require_admin(&state, "add users")?;
    let name = data.get("name").unwrap_or_default().to_owned();
    let password = data.get("password").unwrap_or_default();
    let role_text = data.get("role").unwrap_or_default();
    let mut fields = form_fields(&name, role_text);
    let Some(role) = Role::parse(role_text) else {
        fields[2].error = Some("Choose Member or Administrator.".into());
        return render(
            &state,
            &me,
            fields,
            None,
            Some("Nothing was saved: correct the fields marked below."),
        );
    };
    let result = state.store().add_user(&name, password, role);
    match result {
        Ok(role) => {
            state.audit(&me.user.name, "user.add", &name, role.as_str())?;
            Ok(see_other(&format!("/users?added={}", url_path(&name))))
        }
        Err(e @ (StoreError::BadName(_) | StoreError::Exists(_))) => {
            fields[0].error = Some(e.to_string());
            render(
                &state,
                &me,
                fields,
                None,
                Some("Nothing was saved: correct the fields marked below."),
            )
        }
        Err(e @ StoreError::BadPassword) => {
            fields[1].error = Some(e.to_string());
            render(
                &state,
                &me,
                fields,
                None,
                Some("Nothing was saved: correct the fields marked below."),
            )
        }
        Err(e) => Err(PageError::internal(e)),
    }
}

pub(crate) async fn remove(
    State(state): State<AppState>,
    me: Me,
    Path(name): Path<String>,
) -> Result<Response, PageError> {
    me.require_admin(&state, "remove users")?;
    let ws = state.workspace()?;
    let result = state.store().remove_user(&name, &ws);
    match result {
        Ok(()) => {
            state.audit(&me.user.name, "user.remove", &name, "removed")?;
            Ok(see_other(&format!("/users?removed={}", url_path(&name))))
        }
        Err(
            e @ (StoreError::NoUser(_)
            | StoreError::LastAdmin(_)
            | StoreError::OwnsConnections { .. }),
        ) => Err(PageError::BadRequest(format!(
            "User {name} was not removed: {e}."
        ))),
        Err(e) => Err(PageError::internal(e)),
    }
}
