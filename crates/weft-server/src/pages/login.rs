//! Signing in and out: the login form (its own CSRF token tied to a browser cookie), failed
//! attempts limited per user name and per client address, the signed session cookie.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;

use crate::store::random_bytes;
use crate::web::{
    AppState, ClientAddr, FormData, LOGIN_COOKIE, Me, PageError, SESSION_COOKIE, cookie, see_other,
};

#[derive(Deserialize)]
pub(crate) struct Next {
    next: Option<String>,
}

/// Only a path on this console is followed after signing in (never another site).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/connectors".to_owned(),
    }
}

fn login_page(
    state: &AppState,
    nonce: &str,
    status: StatusCode,
    name: &str,
    next: &str,
    error: Option<String>,
) -> Result<Response, PageError> {
    let html = state
        .env
        .get_template("login.html")
        .and_then(|t| {
            t.render(minijinja::context! {
                login_csrf => state.login_csrf(nonce), name, next, error,
            })
        })
        .map_err(PageError::internal)?;
    let mut res = (status, Html(html)).into_response();
    let cookie = format!(
        "{LOGIN_COOKIE}={nonce}{}",
        state.cookie_attrs("/login", "Strict")
    );
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(PageError::internal)?,
    );
    Ok(res)
}

fn nonce(headers: &HeaderMap) -> Result<String, PageError> {
    match cookie(headers, LOGIN_COOKIE) {
        Some(n)
            if n.len() == 43
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Ok(n.to_owned())
        }
        _ => Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(random_bytes::<32>().map_err(PageError::internal)?)),
    }
}

pub(crate) async fn form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<Next>,
) -> Result<Response, PageError> {
    let next = safe_next(q.next.as_deref());
    login_page(&state, &nonce(&headers)?, StatusCode::OK, "", &next, None)
}

pub(crate) async fn submit(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    form: FormData,
) -> Result<Response, PageError> {
    let nonce = nonce(&headers)?;
    let name = form.get("name").unwrap_or("").trim().to_owned();
    let password = form.get("password").unwrap_or("");
    let next = safe_next(form.get("next"));
    let shown_name: String = name.chars().take(64).collect();
    let mut keys = vec![format!("user:{shown_name}")];
    if let Some(addr) = addr {
        keys.push(format!("addr:{addr}"));
    }
    if let Some(minutes) = state.login_locked(&keys) {
        return login_page(
            &state,
            &nonce,
            StatusCode::TOO_MANY_REQUESTS,
            &shown_name,
            &next,
            Some(format!(
                "Too many failed sign-ins for this user or from this address. Try again in {minutes} minute{}, or ask an administrator to set a new password with `weft user passwd NAME`.",
                if minutes == 1 { "" } else { "s" }
            )),
        );
    }
    let user = if name.is_empty() || password.is_empty() {
        None
    } else {
        // The hash is read under the store's lock, then checked on a blocking thread: argon2
        // is slow on purpose and must hold up neither the lock nor the other requests.
        let hash = state
            .store()
            .password_hash(&name)
            .map_err(PageError::internal)?;
        let typed = weft_engine::secrets::Secret::new(password.to_owned());
        let matches = tokio::task::spawn_blocking(move || {
            crate::store::password_matches(hash.as_deref(), typed.expose())
        })
        .await
        .map_err(PageError::internal)?;
        if matches {
            state.store().user(&name).map_err(PageError::internal)?
        } else {
            None
        }
    };
    let Some(user) = user else {
        state.login_failed(&keys);
        state.audit(
            &shown_name,
            "user.login-failed",
            &shown_name,
            "wrong user name or password",
        )?;
        return login_page(
            &state,
            &nonce,
            StatusCode::UNAUTHORIZED,
            &shown_name,
            &next,
            Some("The user name or password is wrong. Check both and try again.".into()),
        );
    };
    state.login_succeeded(&user.name);
    let token = state
        .store()
        .create_session(&user.name)
        .map_err(PageError::internal)?;
    state.audit(&user.name, "user.login", &user.name, "signed in")?;
    let mut res = see_other(&next);
    // Lax, not Strict: the provider's redirect back to /oauth/callback is a cross-site
    // navigation and must carry the session; forms are protected by their CSRF tokens.
    let cookie = format!(
        "{SESSION_COOKIE}={}{}",
        state.session_cookie(&token),
        state.cookie_attrs("/", "Lax")
    );
    res.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(PageError::internal)?,
    );
    res.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("weft_login=; Path=/login; Max-Age=0; HttpOnly; SameSite=Strict"),
    );
    Ok(res)
}

pub(crate) async fn logout(State(state): State<AppState>, me: Me) -> Result<Response, PageError> {
    state
        .store()
        .end_session(&me.token)
        .map_err(PageError::internal)?;
    state.audit(&me.user.name, "user.logout", &me.user.name, "signed out")?;
    let mut res = see_other("/login");
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("weft_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"),
    );
    Ok(res)
}
