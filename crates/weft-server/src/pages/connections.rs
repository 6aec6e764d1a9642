//! Connections of the workspace: the list (who it belongs to, status, organisations), the
//! create form (the OAuth client, the concurrency field with the spec's rules, or concurrency
//! borrowed from another connection) and deletion of a connection that holds no grant.
//!
//! A connection signs in with one of the methods its spec declares. Without JavaScript the form
//! cannot change as a choice is made, so the method comes first: for a connector with more than
//! one, `/connections/new` asks it (one link per method), and the form then shows only that
//! method's inputs (an OAuth client, or the pasted token), carries the method in a hidden input,
//! and the server refuses anything that belongs to another method.
//!
//! A connection is the workspace's (no `owner`: administrators manage it) or a console user's
//! (`owner`): a member creates connections, which become theirs, and changes, authorizes and
//! deletes only those; an administrator does all of it to any connection and chooses, or
//! changes, the owner. Anyone signed in may Test any connection.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use weft_core::Spec;
use weft_core::form::FieldValue;
use weft_core::form::method_list;
use weft_core::model::{AuthMethod, FieldKind, well_known};
use weft_engine::secrets::Secret;
use weft_engine::workspace::{Connection, Workspace, check_name, connection_tokens_id};

use crate::store::{Role, User};

use super::clients::url_path;
use super::fields::{self, FieldView};
use crate::web::{AppState, FormData, Me, PageError, see_other};

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    created: Option<String>,
    deleted: Option<String>,
    authorized: Option<String>,
    revoked: Option<String>,
    kept: Option<String>,
    changed: Option<String>,
    reauthorize: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct NewQuery {
    connector: Option<String>,
    method: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct EditQuery {
    method: Option<String>,
}

/// The sign-in method named by a link or a form (`None` when none is), refused when the
/// connector does not declare it.
fn named_method(spec: &Spec, named: Option<&str>) -> Result<Option<AuthMethod>, PageError> {
    let Some(text) = named.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let declared = spec.file().auth.methods();
    match AuthMethod::parse(text).filter(|m| declared.contains(m)) {
        Some(m) => Ok(Some(m)),
        None => Err(PageError::BadRequest(format!(
            "{} does not sign in with `{text}`; it signs in with {}. Choose one of those.",
            spec.file().name,
            method_list(&declared)
        ))),
    }
}

/// The connection fields of `spec` a connection signing in with `method` sets, in the order of
/// the form.
fn connection_fields(spec: &Spec, method: AuthMethod) -> Vec<&weft_core::model::Field> {
    spec.file()
        .connection_fields()
        .into_iter()
        .filter(|f| f.applies_to(method))
        .collect()
}

/// The only method `spec` declares, when it declares one.
fn only_method(spec: &Spec) -> Option<AuthMethod> {
    match spec.file().auth.methods().as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// What a method asks for on the form, for the page that lets a person choose it.
fn method_asks(spec: &Spec, method: AuthMethod) -> String {
    let f = spec.file();
    if method.uses_client() {
        return "an OAuth client (its client ID and secret), added on the OAuth clients page"
            .to_owned();
    }
    match weft_engine::connect::token_field(f) {
        Some(field) if field.applies_to(method) => format!("the {}", field.label),
        _ => "the token".to_owned(),
    }
}

/// The links that choose a sign-in method: to the create form (`editing` none) or to the edit
/// form of connection `editing`; `current` is left out.
fn method_links(
    spec: &Spec,
    editing: Option<&str>,
    current: Option<AuthMethod>,
) -> Vec<minijinja::Value> {
    spec.file()
        .auth
        .methods()
        .into_iter()
        .filter(|m| Some(*m) != current)
        .map(|m| {
            let href = match editing {
                Some(name) => format!("/connections/{}/edit?method={m}", url_path(name)),
                None => format!("/connections/new?connector={}&method={m}", spec.id()),
            };
            minijinja::context! { href, label => m.describe(), method => m.as_str(), asks => method_asks(spec, m) }
        })
        .collect()
}

fn refresh_rules(state: &AppState, connector: &str) -> Option<weft_core::model::Refresh> {
    state.spec(connector).and_then(|s| {
        s.file()
            .auth
            .oauth2
            .as_ref()
            .and_then(|o| o.refresh.clone())
    })
}

/// Whether `me` may change, authorize or delete connection `c`: an administrator any, a
/// member only their own.
pub(crate) fn may_manage(me: &Me, c: &Connection) -> bool {
    me.is_admin() || c.owner.as_deref() == Some(me.user.name.as_str())
}

/// The console's administrators, by name, for the messages that send people to them.
fn admin_names(state: &AppState) -> Result<String, PageError> {
    let users = state.store().users().map_err(PageError::internal)?;
    Ok(users
        .into_iter()
        .filter(|u| u.role == Role::Admin)
        .map(|u| u.name)
        .collect::<Vec<_>>()
        .join(", "))
}

/// Refuses (403) `me` an action on connection `name` they may not take (`what`: `edit`,
/// `delete`, …), naming who can.
pub(crate) fn require_manage(
    state: &AppState,
    me: &Me,
    name: &str,
    c: &Connection,
    what: &str,
) -> Result<(), PageError> {
    if may_manage(me, c) {
        return Ok(());
    }
    let admins = admin_names(state)?;
    let who = match &c.owner {
        Some(owner) => {
            format!("belongs to {owner}: only {owner} or an administrator ({admins}) can {what} it")
        }
        None => format!("belongs to the workspace: only an administrator ({admins}) can {what} it"),
    };
    Err(PageError::Forbidden(format!(
        "Connection {name} {who}. You are signed in as {}, a member: you can {what} the connections you own, and Test any. Nothing was changed.",
        me.user.name
    )))
}

pub(crate) async fn list(
    State(state): State<AppState>,
    me: Me,
    Query(q): Query<ListQuery>,
) -> Result<Response, PageError> {
    let ws = state.workspace()?;
    let users = state.store().users().map_err(PageError::internal)?;
    let mut rows = Vec::new();
    for (name, c) in &ws.file.connections {
        let (status, use_by) = ws
            .connection_status(name, refresh_rules(&state, &c.connector).as_ref())
            .map_err(PageError::internal)?;
        let tenants: Vec<&str> = c.tenants.iter().map(|t| t.name.as_str()).collect();
        let yours = c.owner.as_deref() == Some(me.user.name.as_str());
        // An owner who is not (or no longer) a console user: only administrators manage it.
        let stray = c
            .owner
            .as_ref()
            .is_some_and(|o| !users.iter().any(|u| &u.name == o));
        rows.push(minijinja::context! {
            name, connector => &c.connector, client => &c.client,
            owner => c.owner_label(), yours, stray, manage => may_manage(&me, c),
            concurrency => c.concurrency, borrows => &c.borrow_concurrency_from,
            tenants, status, use_by,
            consent => state.spec(&c.connector).is_some_and(|s| {
                weft_engine::connect::method(&ws, s.file(), name, c)
                    .is_ok_and(|m| m == Some(AuthMethod::OAuth2))
            }),
            bad => matches!(status, "needs authorization" | "damaged credentials" | "lapsed unused" | "not authorized"),
        });
    }
    let notice = if let Some(n) = q.created {
        Some(format!(
            "Created connection {n}. Use Authorize on its row when its OAuth client is registered at the provider."
        ))
    } else if let Some(n) = q.authorized {
        Some(format!(
            "Connection {n} is authorized; its tokens are sealed. Use Test to check it."
        ))
    } else if let Some(n) = q.changed {
        Some(if q.reauthorize.is_some() {
            format!(
                "Saved connection {n}. Its OAuth client changed: use Authorize so its grant comes from the new client."
            )
        } else {
            format!("Saved connection {n}.")
        })
    } else if let Some(n) = q.deleted {
        Some(match (q.revoked.is_some(), q.kept) {
            (true, _) => format!("Deleted connection {n} and revoked its grant at the provider."),
            (false, Some(_)) => format!(
                "Deleted connection {n}. Its grant was kept at the provider because another connection of the same OAuth client uses it."
            ),
            (false, None) => format!("Deleted connection {n}."),
        })
    } else {
        None
    };
    let connectors: Vec<_> = state
        .specs
        .iter()
        .filter(|s| !s.file().auth.methods().is_empty())
        .map(|s| minijinja::context! { id => s.id(), name => &s.file().name })
        .collect();
    state.page(
        &me,
        "connections.html",
        "connections",
        minijinja::context! { connections => rows, notice, connectors },
    )
}

struct ConnectionForm {
    /// How the connection signs in; the form holds only this method's inputs.
    method: AuthMethod,
    name: FieldView,
    /// Who the connection belongs to: administrators choose (the workspace or a user);
    /// a member's connections are theirs, without a field.
    owner: Option<FieldView>,
    /// The OAuth client, for a method that uses one.
    client: Option<FieldView>,
    /// Values sent for inputs of another method (a form not made by this page): each refused
    /// with what to do, above the form.
    refused: Vec<String>,
    concurrency: FieldView,
    borrow: FieldView,
    /// Base URL overrides: for an administrator one input per host of the spec (a sandbox, a
    /// proxy; empty keeps the spec's); for a member one choice among the sets administrators
    /// gave other connections of the connector (see [`member_hosts`]).
    hosts: Vec<FieldView>,
    /// The pasted token, for a connection signing in with `token`.
    token: Option<FieldView>,
    /// The spec's connection fields (those choosing a host, such as a sandbox or production),
    /// one input each, named `field_<id>`. A choice only picks among the connector's own base
    /// URLs, so members set them too.
    extra: Vec<FieldView>,
}

/// The `hosts_from` choice of a member: the connector's own base URLs, or the base URLs of an
/// existing connection of the same connector, each distinct set once (named by the first
/// connection using it).
///
/// A member never types a base URL: the token request carries the OAuth client's secret to the
/// token URL, which is built from these hosts, and the clients are the administrators'. A base
/// URL a member could type would send an administrator's client secret wherever they like.
fn member_hosts(spec: &Spec, ws: &Workspace) -> FieldView {
    let mut choices = vec![(String::new(), "The connector's own".to_owned())];
    let mut seen: Vec<&std::collections::BTreeMap<String, String>> = Vec::new();
    for (n, c) in &ws.file.connections {
        if c.connector != spec.id() || c.hosts.is_empty() || seen.contains(&&c.hosts) {
            continue;
        }
        seen.push(&c.hosts);
        let urls: Vec<String> = c.hosts.iter().map(|(h, u)| format!("{h} {u}")).collect();
        choices.push((n.clone(), format!("As {n}: {}", urls.join(", "))));
    }
    FieldView {
        id: "hosts_from".into(),
        label: "Base URLs".into(),
        help: Some("A sandbox or a proxy: use the base URLs an administrator gave another connection of this connector, or the connector's own. Only administrators enter new ones.".into()),
        input: "select",
        choices,
        ..FieldView::default()
    }
}

/// The `hosts_from` value that stands for `hosts` (the first connection of the same connector
/// with the same base URLs; empty for the connector's own).
fn hosts_value(
    spec: &Spec,
    ws: &Workspace,
    hosts: &std::collections::BTreeMap<String, String>,
) -> String {
    if hosts.is_empty() {
        return String::new();
    }
    ws.file
        .connections
        .iter()
        .find(|(_, c)| c.connector == spec.id() && &c.hosts == hosts)
        .map(|(n, _)| n.clone())
        .unwrap_or_default()
}

/// The owner choice of an administrator's form: the workspace, or any console user (and the
/// current owner even when they are no console user any more, so saving keeps it).
fn owner_field(users: &[User], current: Option<&str>) -> FieldView {
    let mut choices = vec![(
        String::new(),
        "The workspace (administrators manage it)".to_owned(),
    )];
    choices.extend(users.iter().map(|u| {
        let role = if u.role == Role::Admin {
            "administrator"
        } else {
            "member"
        };
        (u.name.clone(), format!("{} ({role})", u.name))
    }));
    if let Some(owner) = current
        && !users.iter().any(|u| u.name == owner)
    {
        choices.push((
            owner.to_owned(),
            format!("{owner} (no longer a console user)"),
        ));
    }
    FieldView {
        id: "owner".into(),
        label: "Belongs to".into(),
        help: Some("A member manages only the connections that belong to them (edit, authorize, delete); administrators manage all. Choose the workspace for connections the team shares.".into()),
        input: "select",
        value: current.unwrap_or_default().to_owned(),
        choices,
        ..FieldView::default()
    }
}

/// The form for a new connection signing in with `method`, or for editing connection
/// `editing` (which cannot borrow from itself), as `me` may fill it.
fn blank_form(
    state: &AppState,
    me: &Me,
    spec: &Spec,
    ws: &Workspace,
    editing: Option<(&str, &Connection)>,
    method: AuthMethod,
) -> Result<ConnectionForm, PageError> {
    let f = spec.file();
    let token_field = weft_engine::connect::token_field(f).filter(|_| method == AuthMethod::Token);
    let clients: Vec<(String, String)> = ws
        .file
        .clients
        .iter()
        .filter(|(_, c)| c.connector == f.id)
        .map(|(n, c)| (n.clone(), format!("{n} (client ID {})", c.client_id)))
        .collect();
    if method.uses_client() && clients.is_empty() {
        let who = if me.is_admin() {
            "add one on the OAuth clients page first".to_owned()
        } else {
            format!("ask an administrator ({}) to add one", admin_names(state)?)
        };
        return Err(PageError::BadRequest(format!(
            "There is no OAuth client for {} yet: {who}, then create the connection.",
            f.name
        )));
    }
    let concurrency = match f.fields.iter().find(|x| x.id == well_known::CONCURRENCY) {
        Some(field) => fields::view(field, "concurrency", None),
        None => FieldView {
            id: "concurrency".into(),
            label: "Concurrency level".into(),
            input: "number",
            min: Some(1),
            max: Some(i64::from(f.limits.concurrency.max)),
            value: f.limits.concurrency.default.to_string(),
            ..FieldView::default()
        },
    };
    let mut lenders = vec![(
        String::new(),
        "No: use its own concurrency level".to_owned(),
    )];
    let (editing_name, current_lender) = match editing {
        Some((n, c)) => (Some(n), c.borrow_concurrency_from.as_deref()),
        None => (None, None),
    };
    // A member shares only the pools of their own connections (and keeps the one an
    // administrator chose for them): a borrower holds up its lender's deletion.
    lenders.extend(
        ws.file
            .connections
            .iter()
            .filter(|(n, c)| {
                c.connector == f.id
                    && c.borrow_concurrency_from.is_none()
                    && Some(n.as_str()) != editing_name
                    && (may_manage(me, c) || Some(n.as_str()) == current_lender)
            })
            .map(|(n, c)| (n.clone(), format!("{n} (level {})", c.concurrency))),
    );
    let owner = if me.is_admin() {
        let users = state.store().users().map_err(PageError::internal)?;
        Some(owner_field(
            &users,
            editing.and_then(|(_, c)| c.owner.as_deref()),
        ))
    } else {
        None
    };
    let extra = connection_fields(spec, method)
        .into_iter()
        .map(|field| {
            let typed = editing.and_then(|(_, c)| c.fields.get(&field.id).map(String::as_str));
            fields::view(field, &format!("field_{}", field.id), typed)
        })
        .collect();
    let hosts = if me.is_admin() {
        f.hosts
            .iter()
            .map(|(host, url)| FieldView {
                id: format!("host_{host}"),
                label: format!("Base URL of host {host}"),
                help: Some(match url {
                    weft_core::model::Host::Url(url) => format!(
                        "Leave empty for {url}. Set it to reach a sandbox or a proxy instead."
                    ),
                    weft_core::model::Host::ByField(by) => format!(
                        "Leave empty for the base URL {} chooses ({}). Set it to reach a simulator or a proxy instead.",
                        f.fields
                            .iter()
                            .find(|x| x.id == by.field)
                            .map_or(by.field.as_str(), |x| x.label.as_str()),
                        by.choices
                            .iter()
                            .map(|(c, u)| format!("{c}: {u}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }),
                input: "url",
                maxlength: Some(2000),
                autocomplete: "off",
                ..FieldView::default()
            })
            .collect()
    } else {
        vec![member_hosts(spec, ws)]
    };
    Ok(ConnectionForm {
        method,
        refused: Vec::new(),
        name: fields::name_input(
            "name",
            "Name",
            "How flows refer to this connection, unique in the workspace (for example xero).",
            "",
        ),
        owner,
        client: method.uses_client().then(|| FieldView {
            id: "client".into(),
            label: "OAuth client".into(),
            help: Some("The app registered at the provider that this connection authorizes with.".into()),
            input: "select",
            required: true,
            value: clients.first().map(|c| c.0.clone()).unwrap_or_default(),
            choices: clients,
            ..FieldView::default()
        }),
        concurrency,
        token: token_field.map(|field| {
            let mut view = fields::view(field, "token", None);
            // On Edit, a token stored already is kept when the input is left empty.
            let stored = editing.is_some_and(|(_, c)| c.method == Some(AuthMethod::Token));
            view.required = field.required && !stored;
            view.help = Some(format!(
                "Sealed in the credential store and never shown again; on Edit, leave it empty to keep the one stored. {}",
                view.help.unwrap_or_default()
            ));
            view
        }),
        hosts,
        extra,
        borrow: FieldView {
            id: "borrow".into(),
            label: "Borrow concurrency from".into(),
            help: Some(if me.is_admin() {
                "Share another connection's pool: both draw from its level together, in every process. Its own level is then not used.".into()
            } else {
                "Share the pool of another of your connections: both draw from its level together, in every process. Its own level is then not used.".into()
            }),
            input: "select",
            choices: lenders,
            ..FieldView::default()
        },
    })
}

fn render_form(
    state: &AppState,
    me: &Me,
    spec: &Spec,
    form: &ConnectionForm,
    edit: Option<&str>,
    error: Option<&str>,
) -> Result<Response, PageError> {
    let mut fields = vec![&form.name];
    fields.extend(form.owner.as_ref());
    fields.extend(form.client.as_ref());
    fields.extend(form.token.as_ref());
    fields.extend(form.extra.iter());
    fields.extend([&form.concurrency, &form.borrow]);
    if edit.is_some() {
        fields.remove(0);
    }
    let action = edit.map_or_else(
        || "/connections".to_owned(),
        |name| format!("/connections/{}/edit", url_path(name)),
    );
    // Whose a member's new connection will be, said before they save it.
    let ownership = (!me.is_admin() && edit.is_none()).then(|| {
        format!(
            "This connection will be yours ({}): you and the administrators can change, authorize or delete it; everyone can see and Test it.",
            me.user.name
        )
    });
    let refused = (!form.refused.is_empty()).then(|| form.refused.join(" "));
    let error = match (error, &refused) {
        (Some(e), Some(r)) => Some(format!("{e} {r}")),
        (e, r) => e.map(str::to_owned).or_else(|| r.clone()),
    };
    let mut res = state.page(
        me,
        "connection_form.html",
        "connections",
        minijinja::context! {
            fields, error, edit, action, hosts => &form.hosts, connector => spec.id(), connector_name => &spec.file().name,
            consent => form.method == AuthMethod::OAuth2,
            method => form.method.as_str(), method_label => form.method.describe(),
            other_methods => method_links(spec, edit, Some(form.method)),
            callback => state.callback_url(), ownership,
        },
    )?;
    if error.is_some() {
        *res.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(res)
}

pub(crate) async fn new(
    State(state): State<AppState>,
    me: Me,
    Query(q): Query<NewQuery>,
) -> Result<Response, PageError> {
    let Some(id) = q.connector.filter(|c| !c.is_empty()) else {
        return Ok(see_other("/connections#create"));
    };
    let spec = state
        .spec(&id)
        .ok_or_else(|| PageError::NotFound(format!("There is no connector `{id}`.")))?;
    let method = match named_method(spec, q.method.as_deref())? {
        Some(m) => m,
        None => match only_method(spec) {
            Some(m) => m,
            None => return choose_method(&state, &me, spec),
        },
    };
    let ws = state.workspace()?;
    let form = blank_form(&state, &me, spec, &ws, None, method)?;
    render_form(&state, &me, spec, &form, None, None)
}

/// The first step of creating a connection of a connector with several sign-in methods: one
/// link per method, each to the form of that method.
fn choose_method(state: &AppState, me: &Me, spec: &Spec) -> Result<Response, PageError> {
    if spec.file().auth.methods().is_empty() {
        return Err(PageError::BadRequest(format!(
            "{} declares no sign-in method: every resource is run by a plugin, which needs no connection credentials.",
            spec.file().name
        )));
    }
    state.page(
        me,
        "connection_method.html",
        "connections",
        minijinja::context! {
            connector_name => &spec.file().name,
            methods => method_links(spec, None, None),
        },
    )
}

/// The method a submitted form names: its hidden `method` input, or the connector's only one.
fn submitted_method(spec: &Spec, data: &FormData) -> Result<AuthMethod, PageError> {
    match named_method(spec, data.get("method"))? {
        Some(m) => Ok(m),
        None => only_method(spec).ok_or_else(|| {
            PageError::BadRequest(format!(
                "{} signs in with {}: choose how this connection signs in first (Connections, Create a connection). Nothing was saved.",
                spec.file().name,
                method_list(&spec.file().auth.methods())
            ))
        }),
    }
}

/// The owner an administrator chose (`None`: the workspace's), checked against the choices;
/// the error goes beside the field.
fn read_owner(form: &mut ConnectionForm, data: &FormData) -> Option<Option<String>> {
    let view = form.owner.as_mut()?;
    let typed = data.get("owner").unwrap_or_default().to_owned();
    view.value.clone_from(&typed);
    if !view.choices.iter().any(|(v, _)| *v == typed) {
        view.error = Some(
            "Choose the workspace or one of the console users listed; add a user on the Users page first."
                .into(),
        );
        return None;
    }
    Some((!typed.is_empty()).then_some(typed))
}

pub(crate) async fn create(
    State(state): State<AppState>,
    me: Me,
    data: FormData,
) -> Result<Response, PageError> {
    let connector = data.get("connector").unwrap_or_default();
    let spec = state.spec(connector).ok_or_else(|| {
        PageError::BadRequest(format!(
            "There is no connector `{connector}`; choose one from the list."
        ))
    })?;
    let method = submitted_method(spec, &data)?;
    let mut ws = state.workspace()?;
    let mut form = blank_form(&state, &me, spec, &ws, None, method)?;
    let name = data.get("name").unwrap_or_default().to_owned();
    form.name.value.clone_from(&name);
    if let Err(reason) = check_name("connection", &name) {
        form.name.error = Some(reason);
    } else if ws.file.connections.contains_key(&name) {
        form.name.error = Some(format!(
            "A connection {name} exists already; choose another name."
        ));
    } else if !me.is_admin() {
        // A flow runs with whatever connection carries the name it uses: a member's
        // connection must not step into an administrator's flow.
        let flows = ws.flows_naming(&name);
        if !flows.is_empty() {
            form.name.error = Some(format!(
                "Flow {} uses a connection named {name}; only an administrator ({}) can create it. Choose another name.",
                flows.join(", "),
                admin_names(&state)?
            ));
        }
    }
    let owner = if me.is_admin() {
        read_owner(&mut form, &data)
    } else {
        Some(Some(me.user.name.clone()))
    };
    let settings = read_settings(spec, &mut form, &data, false, &ws);
    let (Some(settings), Some(owner), None) = (settings, owner, &form.name.error) else {
        return render_form(
            &state,
            &me,
            spec,
            &form,
            None,
            Some("Nothing was saved: correct the fields marked below."),
        );
    };
    let Settings {
        client,
        token,
        level,
        borrow,
        hosts,
        fields: values,
    } = settings;
    ws.file.connections.insert(
        name.clone(),
        Connection {
            connector: spec.id().to_owned(),
            method: Some(method),
            client,
            concurrency: level,
            borrow_concurrency_from: borrow.clone(),
            hosts,
            fields: values,
            tenants: Vec::new(),
            owner: owner.clone(),
        },
    );
    ws.save().map_err(PageError::internal)?;
    let mut detail = match &borrow {
        Some(lender) => format!(
            "{} connection, borrows concurrency from {lender}",
            spec.id()
        ),
        None => format!("{} connection, concurrency {level}", spec.id()),
    };
    detail.push_str(&format!(", signs in with {method}"));
    if let Some(owner) = &owner {
        detail.push_str(&format!(", {owner}'s"));
    }
    if let Some(token) = &token {
        weft_engine::connect::store_pasted_token(&ws, &name, token).map_err(PageError::internal)?;
    }
    state.audit(&me.user.name, "connection.create", &name, &detail)?;
    if data.get("action") == Some("authorize") && method == AuthMethod::OAuth2 {
        return super::authorize::start(&state, &me, &name);
    }
    Ok(see_other(&format!(
        "/connections?created={}",
        url_path(&name)
    )))
}

/// What the create and edit forms set.
struct Settings {
    client: Option<String>,
    token: Option<Secret>,
    level: u32,
    borrow: Option<String>,
    hosts: std::collections::BTreeMap<String, String>,
    /// The connection fields' values, by field id.
    fields: std::collections::BTreeMap<String, String>,
}

/// Checks the client, concurrency, borrowing and base URL fields, each error beside its
/// field; `None` when any is wrong.
/// `editing_token`: an edited connection already holding a pasted token (an empty token field
/// keeps it).
fn read_settings(
    spec: &Spec,
    form: &mut ConnectionForm,
    data: &FormData,
    editing_token: bool,
    ws: &Workspace,
) -> Option<Settings> {
    let method = form.method;
    let typed_client = data.get("client").unwrap_or_default().to_owned();
    let mut client = None;
    match form.client.as_mut() {
        Some(view) => {
            view.value.clone_from(&typed_client);
            if typed_client.is_empty() || !view.choices.iter().any(|(v, _)| *v == typed_client) {
                view.error = Some(format!(
                    "Choose one of the {} OAuth clients listed.",
                    spec.file().name
                ));
            } else {
                client = Some(typed_client);
            }
        }
        None if !typed_client.is_empty() => form.refused.push(format!(
            "An OAuth client was given, but this connection signs in with {}, which uses none: leave it out, or choose another sign-in method.",
            method.describe()
        )),
        None => {}
    }
    // The pasted token, for a connection signing in with `token`: checked by its field's
    // rules, never echoed; refused for any other method.
    let mut token = None;
    let typed = data
        .get("token")
        .filter(|t| !t.is_empty())
        .map(|t| Secret::new(t.to_owned()));
    let field = weft_engine::connect::token_field(spec.file());
    match (form.token.as_mut(), field) {
        (Some(view), Some(field)) => match &typed {
            None if !editing_token && field.required => {
                view.error = Some(format!("Paste the {}.", field.label));
            }
            None => {}
            Some(t) => {
                if let Some(FieldValue::Text(text)) = fields::check(field, view, Some(t.expose())) {
                    token = Some(Secret::new(text));
                }
            }
        },
        (_, field) if typed.is_some() => {
            let reason = match field
                .map(|f| weft_core::form::check_for(f, method, typed.as_ref().map(Secret::expose)))
            {
                Some(Err(e)) => e.to_string(),
                _ => "A token was given, but this connection signs in without one.".to_owned(),
            };
            form.refused.push(format!(
                "{reason} (it signs in with {}); choose another sign-in method to use a token.",
                method.describe()
            ));
        }
        _ => {}
    }
    let borrow = data.get("borrow").unwrap_or_default().to_owned();
    form.borrow.value.clone_from(&borrow);
    let borrow = (!borrow.is_empty()).then_some(borrow);
    if let Some(lender) = &borrow
        && !form.borrow.choices.iter().any(|(v, _)| v == lender)
    {
        form.borrow.error = Some(format!(
            "Choose one of the {} connections listed (they use their own level), or No.",
            spec.file().name
        ));
    }
    let typed = data.get("concurrency");
    let field = spec
        .file()
        .fields
        .iter()
        .find(|x| x.id == well_known::CONCURRENCY);
    form.concurrency.value = typed.unwrap_or_default().to_owned();
    let level = match field {
        Some(field) => match fields::check(field, &mut form.concurrency, typed) {
            Some(FieldValue::Integer(n)) => u32::try_from(n).ok(),
            _ => None,
        },
        None => match typed.unwrap_or_default().trim().parse::<u32>() {
            Ok(n) if (1..=spec.file().limits.concurrency.max).contains(&n) => Some(n),
            _ => {
                form.concurrency.error = Some(format!(
                    "Enter a whole number from 1 to {}.",
                    spec.file().limits.concurrency.max
                ));
                None
            }
        },
    };
    let mut hosts = std::collections::BTreeMap::new();
    match form.hosts.first_mut() {
        // A member's choice among the base URLs already given to a connection.
        Some(choice) if choice.id == "hosts_from" => {
            let typed = data.get("hosts_from").unwrap_or_default().to_owned();
            choice.value.clone_from(&typed);
            let known = choice.choices.iter().any(|(v, _)| *v == typed);
            match ws.file.connections.get(&typed) {
                Some(c) if known => hosts.clone_from(&c.hosts),
                _ if known && typed.is_empty() => {}
                _ => {
                    choice.error = Some(
                        "Choose the connector's own base URLs or those of a connection listed."
                            .into(),
                    );
                }
            }
        }
        _ => {
            for (field, (host, _)) in form.hosts.iter_mut().zip(spec.file().hosts.iter()) {
                let typed = data.get(&field.id).unwrap_or_default().trim().to_owned();
                field.value.clone_from(&typed);
                if typed.is_empty() {
                    continue;
                }
                match url::Url::parse(&typed) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") => {
                        hosts.insert(host.clone(), typed);
                    }
                    _ => {
                        field.error =
                            Some("Enter an absolute http or https URL, or leave it empty.".into())
                    }
                }
            }
        }
    }
    let mut values = std::collections::BTreeMap::new();
    for (view, field) in form.extra.iter_mut().zip(connection_fields(spec, method)) {
        let typed = data.get(&view.id);
        view.value = typed.unwrap_or_default().to_owned();
        let given = field.ty == FieldKind::Boolean || typed.is_some_and(|t| !t.trim().is_empty());
        // A field left empty takes the spec's default at run time rather than a copy of it.
        if let Some(value) = fields::check(field, view, typed)
            && given
        {
            values.insert(field.id.clone(), value.to_text());
        }
    }
    if let Err(e) = weft_engine::request::Hosts::for_connection(spec.file(), &values, &hosts)
        && let Some(first) = form.hosts.first_mut()
    {
        first.error = Some(e.to_string());
    }
    let errors = [&form.concurrency, &form.borrow]
        .into_iter()
        .chain(form.client.as_ref())
        .chain(form.token.as_ref())
        .chain(form.hosts.iter())
        .chain(form.extra.iter())
        .any(|f| f.error.is_some());
    let (false, true, Some(level)) = (errors, form.refused.is_empty(), level) else {
        return None;
    };
    Some(Settings {
        client,
        token,
        level,
        borrow,
        hosts,
        fields: values,
    })
}

/// Why connection `name` cannot be deleted now, if it cannot.
fn blocked(ws: &Workspace, name: &str) -> Option<String> {
    let borrowers: Vec<&str> = ws
        .file
        .connections
        .iter()
        .filter(|(_, c)| c.borrow_concurrency_from.as_deref() == Some(name))
        .map(|(n, _)| n.as_str())
        .collect();
    (!borrowers.is_empty()).then(|| {
        format!(
            "Connections {} borrow concurrency from {name}. Give them their own level first.",
            borrowers.join(", ")
        )
    })
}

/// What deleting connection `name` does at the provider: (revoke?, grant kept for another
/// connection?, the sentence saying so).
fn revocation(
    state: &AppState,
    ws: &Workspace,
    name: &str,
    c: &Connection,
) -> Result<(bool, bool, String), PageError> {
    let has_grant = ws
        .secrets()
        .map_err(PageError::internal)?
        .ids()
        .any(|id| id == connection_tokens_id(name));
    let can_revoke = state
        .spec(&c.connector)
        .and_then(|s| s.file().auth.oauth2.as_ref())
        .is_some_and(|o| o.revoke_url.is_some());
    let sharing = weft_engine::connect::sharing_the_grant(std::slice::from_ref(ws), name, c);
    Ok(match (has_grant, can_revoke, sharing.is_empty()) {
        (false, _, _) => (false, false, "It was never authorized, so there is no grant at the provider to revoke.".into()),
        (true, true, true) => (true, false, "It also revokes the connection's grant at the provider (its sealed tokens stop working there and are deleted here).".into()),
        (true, true, false) => (false, true, format!(
            "Its grant at the provider is kept, because {} use{} it too; its sealed tokens are deleted here.",
            sharing.join(", "),
            if sharing.len() == 1 { "s" } else { "" }
        )),
        (true, false, _) => (false, false, "The provider offers no revocation endpoint: its sealed tokens are deleted here; remove Weft's access in the provider's settings yourself.".into()),
    })
}

pub(crate) async fn delete_form(
    State(state): State<AppState>,
    me: Me,
    Path(name): Path<String>,
) -> Result<Response, PageError> {
    let ws = state.workspace()?;
    let c = ws.file.connections.get(&name).cloned().ok_or_else(|| {
        PageError::NotFound(format!("There is no connection {name} in this workspace."))
    })?;
    require_manage(&state, &me, &name, &c, "delete")?;
    let (_, _, revokes) = revocation(&state, &ws, &name, &c)?;
    state.page(
        &me,
        "confirm.html",
        "connections",
        minijinja::context! {
            title => format!("Delete connection {name}?"),
            action => format!("/connections/{}/delete", url_path(&name)),
            blocked => blocked(&ws, &name),
            what => "This removes the connection from weft.toml. It cannot be undone.",
            also => [revokes, "Flows that name it stop working until a connection of that name exists again.".to_owned()],
            button => "Delete connection",
            back => "/connections",
        },
    )
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    me: Me,
    Path(name): Path<String>,
) -> Result<Response, PageError> {
    let ws = state.workspace()?;
    let c = ws.file.connections.get(&name).cloned().ok_or_else(|| {
        PageError::NotFound(format!("There is no connection {name} in this workspace."))
    })?;
    require_manage(&state, &me, &name, &c, "delete")?;
    if let Some(why) = blocked(&ws, &name) {
        return Err(PageError::BadRequest(format!(
            "Connection {name} was not deleted. {why}"
        )));
    }
    let (revoke, kept, _) = revocation(&state, &ws, &name, &c)?;
    let spec = state.spec(&c.connector).cloned();
    let mut all = [ws];
    if revoke && let Some(spec) = spec {
        let (back, outcome) = {
            let name = name.clone();
            crate::web::engine(move || async move {
                let outcome = weft_engine::connect::revoke(&all, &spec, &name).await;
                (all, outcome)
            })
            .await?
        };
        all = back;
        if let Err(e) = outcome {
            state.audit(
                &me.user.name,
                "connection.delete",
                &name,
                "refused: revocation failed",
            )?;
            return Err(PageError::BadRequest(format!(
                "Connection {name} was not deleted: revoking its grant at the provider failed ({e}). Try again later; to delete it here only, run `weft connection delete {name} --no-revoke` and remove Weft's access in the provider's settings."
            )));
        }
    }
    let ws = &mut all[0];
    ws.secrets()
        .and_then(|mut store| Ok(store.remove(&connection_tokens_id(&name))?))
        .map_err(PageError::internal)?;
    ws.file.connections.shift_remove(&name);
    ws.save().map_err(PageError::internal)?;
    let detail = if revoke {
        "deleted, grant revoked"
    } else if kept {
        "deleted, grant kept for another connection"
    } else {
        "deleted"
    };
    state.audit(&me.user.name, "connection.delete", &name, detail)?;
    let mut to = format!("/connections?deleted={}", url_path(&name));
    if revoke {
        to.push_str("&revoked=1");
    } else if kept {
        to.push_str("&kept=1");
    }
    Ok(see_other(&to))
}

/// The workspace, connection `name` (its sign-in method settled: one written before
/// connections recorded it gets the one it uses) and its spec.
fn editing(state: &AppState, name: &str) -> Result<(Workspace, Connection, Spec), PageError> {
    let ws = state.workspace()?;
    let mut c = ws.file.connections.get(name).cloned().ok_or_else(|| {
        PageError::NotFound(format!("There is no connection {name} in this workspace."))
    })?;
    let spec = state
        .spec(&c.connector)
        .cloned()
        .ok_or_else(|| PageError::NotFound(format!("Connector {} is not loaded.", c.connector)))?;
    c.method = match weft_engine::connect::method(&ws, spec.file(), name, &c) {
        Ok(m) => m,
        // A method the spec no longer declares: the edit form chooses another.
        Err(weft_engine::connect::ConnectError::MethodGone { .. }) => None,
        Err(e) => return Err(PageError::internal(e)),
    };
    Ok((ws, c, spec))
}

/// The method the edit form of `c` shows: the one a link names, else the connection's.
fn edit_method(spec: &Spec, c: &Connection, named: Option<&str>) -> Result<AuthMethod, PageError> {
    named_method(spec, named)?
        .or(c.method)
        .or_else(|| only_method(spec))
        .ok_or_else(|| {
            PageError::BadRequest(format!(
                "{} signs in with {}: choose one below.",
                spec.file().name,
                method_list(&spec.file().auth.methods())
            ))
        })
}

pub(crate) async fn edit_form(
    State(state): State<AppState>,
    me: Me,
    Path(name): Path<String>,
    Query(q): Query<EditQuery>,
) -> Result<Response, PageError> {
    let (ws, c, spec) = editing(&state, &name)?;
    require_manage(&state, &me, &name, &c, "edit")?;
    let method = edit_method(&spec, &c, q.method.as_deref())?;
    let mut form = blank_form(&state, &me, &spec, &ws, Some((&name, &c)), method)?;
    if let Some(client) = form.client.as_mut()
        && let Some(current) = &c.client
    {
        client.value.clone_from(current);
    }
    form.concurrency.value = c.concurrency.to_string();
    form.borrow.value = c.borrow_concurrency_from.clone().unwrap_or_default();
    match form.hosts.first_mut() {
        Some(choice) if choice.id == "hosts_from" => {
            choice.value = hosts_value(&spec, &ws, &c.hosts);
        }
        _ => {
            for (field, (host, _)) in form.hosts.iter_mut().zip(spec.file().hosts.iter()) {
                field.value = c.hosts.get(host).cloned().unwrap_or_default();
            }
        }
    }
    render_form(&state, &me, &spec, &form, Some(&name), None)
}

pub(crate) async fn edit(
    State(state): State<AppState>,
    me: Me,
    Path(name): Path<String>,
    data: FormData,
) -> Result<Response, PageError> {
    let (mut ws, c, spec) = editing(&state, &name)?;
    require_manage(&state, &me, &name, &c, "edit")?;
    let method = submitted_method(&spec, &data)?;
    let switched = c.method != Some(method);
    let mut form = blank_form(&state, &me, &spec, &ws, Some((&name, &c)), method)?;
    // An administrator may give the connection to someone else; a member's stays theirs.
    let owner = if me.is_admin() {
        read_owner(&mut form, &data)
    } else {
        Some(c.owner.clone())
    };
    let borrowed_from = ws
        .file
        .connections
        .iter()
        .any(|(_, o)| o.borrow_concurrency_from.as_deref() == Some(name.as_str()));
    let has_token = !switched
        && method == AuthMethod::Token
        && ws
            .secrets()
            .map_err(PageError::internal)?
            .ids()
            .any(|id| id == connection_tokens_id(&name));
    let settings = read_settings(&spec, &mut form, &data, has_token, &ws);
    let (Some(settings), Some(owner)) = (settings, owner) else {
        return render_form(
            &state,
            &me,
            &spec,
            &form,
            Some(&name),
            Some("Nothing was saved: correct the fields marked below."),
        );
    };
    if borrowed_from && settings.borrow.is_some() {
        form.borrow.error = Some(format!(
            "Other connections borrow concurrency from {name}, so it cannot borrow itself; keep No."
        ));
        return render_form(
            &state,
            &me,
            &spec,
            &form,
            Some(&name),
            Some("Nothing was saved: correct the fields marked below."),
        );
    }
    let field = spec
        .file()
        .fields
        .iter()
        .find(|x| x.id == well_known::CONCURRENCY);
    if let Some(field) = field
        && field.read_only_after_create
        && settings.level != c.concurrency
    {
        form.concurrency.error = Some(format!(
            "{} can only be set when the connection is created.",
            field.label
        ));
        return render_form(
            &state,
            &me,
            &spec,
            &form,
            Some(&name),
            Some("Nothing was saved: correct the fields marked below."),
        );
    }
    let client_changed = settings.client.is_some() && c.client != settings.client;
    if let Some(target) = ws.file.connections.get_mut(&name) {
        target.method = Some(method);
        // A token connection written before methods were recorded keeps the client it names
        // (unused); a switch to the token leaves the OAuth client.
        if method.uses_client() || switched {
            target.client.clone_from(&settings.client);
        }
        target.concurrency = settings.level;
        target.borrow_concurrency_from.clone_from(&settings.borrow);
        target.hosts = settings.hosts;
        target.fields = settings.fields;
        target.owner.clone_from(&owner);
    }
    ws.save().map_err(PageError::internal)?;
    if let Some(token) = &settings.token {
        weft_engine::connect::store_pasted_token(&ws, &name, token).map_err(PageError::internal)?;
    } else if switched {
        // The old method's credentials are never used again: the connection waits for its
        // consent under the new one.
        ws.secrets()
            .and_then(|mut store| Ok(store.remove(&connection_tokens_id(&name))?))
            .map_err(PageError::internal)?;
    }
    let mut detail = match &settings.borrow {
        Some(lender) => format!("borrows concurrency from {lender}"),
        None => format!("concurrency {}", settings.level),
    };
    if switched {
        detail.push_str(&format!("; now signs in with {method}"));
    }
    if owner != c.owner {
        let whose = |o: &Option<String>| {
            o.as_ref()
                .map_or_else(|| "the workspace".to_owned(), Clone::clone)
        };
        detail.push_str(&format!(
            "; owner changed from {} to {}",
            whose(&c.owner),
            whose(&owner)
        ));
    }
    state.audit(&me.user.name, "connection.edit", &name, &detail)?;
    let mut to = format!("/connections?changed={}", url_path(&name));
    if client_changed || (switched && method.uses_client()) {
        to.push_str("&reauthorize=1");
    }
    Ok(see_other(&to))
}
