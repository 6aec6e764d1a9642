//! The console's pages, one module per area, each rendered into `templates/layout.html`.
//! Later areas (flows, runs, errors, schedules) add a module and a line in [`routes`].

mod audit;
mod authorize;
mod clients;
mod connections;
mod connectors;
mod errors;
mod fields;
pub(crate) mod flows;
mod login;
mod queue;
mod runs;
mod users;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::web::{self, AppState};

/// The templates, embedded and parsed once; `.html` templates escape every value by default.
pub(crate) fn templates() -> &'static minijinja::Environment<'static> {
    static ENV: std::sync::OnceLock<minijinja::Environment<'static>> = std::sync::OnceLock::new();
    ENV.get_or_init(build_templates)
}

fn build_templates() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    for (name, text) in [
        ("layout.html", include_str!("../../templates/layout.html")),
        ("error.html", include_str!("../../templates/error.html")),
        ("login.html", include_str!("../../templates/login.html")),
        ("field.html", include_str!("../../templates/field.html")),
        (
            "connectors.html",
            include_str!("../../templates/connectors.html"),
        ),
        (
            "connector.html",
            include_str!("../../templates/connector.html"),
        ),
        ("clients.html", include_str!("../../templates/clients.html")),
        (
            "client_form.html",
            include_str!("../../templates/client_form.html"),
        ),
        ("confirm.html", include_str!("../../templates/confirm.html")),
        (
            "connections.html",
            include_str!("../../templates/connections.html"),
        ),
        (
            "connection_form.html",
            include_str!("../../templates/connection_form.html"),
        ),
        (
            "connection_method.html",
            include_str!("../../templates/connection_method.html"),
        ),
        ("users.html", include_str!("../../templates/users.html")),
        ("audit.html", include_str!("../../templates/audit.html")),
        (
            "organisations.html",
            include_str!("../../templates/organisations.html"),
        ),
        ("test.html", include_str!("../../templates/test.html")),
        // Flows, runs and errors.
        ("flows.html", include_str!("../../templates/flows.html")),
        ("flow.html", include_str!("../../templates/flow.html")),
        ("preview.html", include_str!("../../templates/preview.html")),
        (
            "table_form.html",
            include_str!("../../templates/table_form.html"),
        ),
        ("runs.html", include_str!("../../templates/runs.html")),
        ("run.html", include_str!("../../templates/run.html")),
        ("errors.html", include_str!("../../templates/errors.html")),
        (
            "error_detail.html",
            include_str!("../../templates/error_detail.html"),
        ),
        ("queue.html", include_str!("../../templates/queue.html")),
    ] {
        env.add_template(name, text)
            .unwrap_or_else(|e| panic!("embedded template {name} does not parse: {e}"));
    }
    env
}

/// Every route, behind the security headers, the body size limit and the CSRF check.
pub(crate) fn routes(state: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/connectors") }))
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/connectors", get(connectors::list))
        .route("/connectors/{id}", get(connectors::show))
        .route("/clients", get(clients::list).post(clients::add))
        .route("/clients/new", get(clients::new))
        .route(
            "/clients/{name}/edit",
            get(clients::edit_form).post(clients::edit),
        )
        .route(
            "/clients/{name}/remove",
            get(clients::remove_form).post(clients::remove),
        )
        .route(
            "/connections",
            get(connections::list).post(connections::create),
        )
        .route("/connections/new", get(connections::new))
        .route(
            "/connections/{name}/delete",
            get(connections::delete_form).post(connections::delete),
        )
        .route(
            "/connections/{name}/edit",
            get(connections::edit_form).post(connections::edit),
        )
        .route("/connections/{name}/authorize", post(authorize::authorize))
        .route("/connections/{name}/test", post(authorize::test))
        .route(
            "/connections/{name}/organisations",
            post(authorize::organisations),
        )
        .route("/oauth/callback", get(authorize::callback))
        .route("/users", get(users::list).post(users::add))
        .route("/users/{name}/remove", post(users::remove))
        .route("/audit", get(audit::list))
        // Flows, runs and errors.
        .route("/flows", get(flows::list))
        .route("/flows/{name}", get(flows::show))
        .route("/flows/{name}/sync", post(flows::sync))
        .route("/flows/{name}/preview", post(flows::preview))
        .route(
            "/flows/{name}/tables/{table}",
            get(flows::table_form).post(flows::table_save),
        )
        .route("/runs", get(runs::list))
        .route("/runs/{id}", get(runs::show))
        .route("/runs/{id}/events", get(runs::events))
        .route("/errors", get(errors::list))
        .route("/errors/{id}", get(errors::show))
        .route("/errors/{id}/retry", post(errors::retry))
        .route("/errors/{id}/resolve", post(errors::resolve))
        .route("/queue", get(queue::list))
        .route("/queue/{id}/cancel", post(queue::cancel))
        .route("/assets/console.css", get(css))
        .route("/assets/copy.js", get(js))
        .route("/assets/runs.js", get(runs_js))
        .fallback(|| async {
            web::PageError::NotFound("There is no page at this address; use the menu above.".into())
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            web::csrf_guard,
        ))
        .layer(DefaultBodyLimit::max(web::BODY_LIMIT))
        .layer(axum::middleware::from_fn(web::time_limit))
        .layer(axum::middleware::from_fn(web::security_headers))
        .with_state(state)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    res
}

async fn css() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../assets/console.css"),
    )
}

async fn js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../assets/copy.js"),
    )
}

async fn runs_js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../assets/runs.js"),
    )
}
