//! Connectors: every spec the console knows, and one connector's setup steps with the
//! console's callback URL filled in, its form fields and their rules.

use axum::extract::{Path, State};
use axum::response::Response;
use weft_core::Spec;

use crate::web::{AppState, Me, PageError};

fn auth_kind(spec: &Spec) -> &'static str {
    let auth = &spec.file().auth;
    if auth.oauth2.is_some() {
        "OAuth 2.0 (authorization code)"
    } else if auth.client_credentials.is_some() {
        "OAuth 2.0 (client credentials)"
    } else {
        "token or none"
    }
}

/// The first sentence of a description (at most about 220 characters), for the list.
fn summary(text: &str) -> String {
    let text = text.trim();
    let end = text.find(". ").map_or(text.len(), |i| i + 1);
    let mut out: String = text[..end].chars().take(220).collect();
    if out.len() < text.len() && !out.ends_with('.') {
        out.push('…');
    }
    out
}

pub(crate) async fn list(State(state): State<AppState>, me: Me) -> Result<Response, PageError> {
    let rows: Vec<_> = state
        .specs
        .iter()
        .map(|s| {
            let f = s.file();
            minijinja::context! {
                id => &f.id, name => &f.name, description => f.description.as_deref().map(summary),
                former => &f.former_names, auth => auth_kind(s),
            }
        })
        .collect();
    state.page(
        &me,
        "connectors.html",
        "connectors",
        minijinja::context! { connectors => rows },
    )
}

pub(crate) async fn show(
    State(state): State<AppState>,
    me: Me,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let spec = state.spec(&id).ok_or_else(|| {
        PageError::NotFound(format!(
            "There is no connector `{id}`; the Connectors page lists the ones this console knows."
        ))
    })?;
    let f = spec.file();
    let callback = state.callback_url();
    let steps = weft_core::docs::setup_steps(f, &callback);
    let fields: Vec<_> = f
        .fields
        .iter()
        .map(|field| {
            minijinja::context! {
                label => &field.label, id => &field.id, help => &field.help,
                rules => weft_core::docs::field_rules(field), secret => field.secret,
            }
        })
        .collect();
    let oauth = f.auth.oauth2.is_some() || f.auth.client_credentials.is_some();
    state.page(
        &me,
        "connector.html",
        "connectors",
        minijinja::context! {
            c => minijinja::context! {
                id => &f.id, name => &f.name, description => &f.description, former => &f.former_names,
                docs => &f.docs, auth => auth_kind(spec),
            },
            callback, steps, fields, oauth,
        },
    )
}
