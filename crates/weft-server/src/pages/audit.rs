//! The audit log: who signed in, created, changed, tested, ran or deleted what (administrators).

use axum::extract::State;
use axum::response::Response;

use crate::web::{AppState, Me, PageError};

/// Entries shown, newest first.
const SHOWN: usize = 500;

pub(crate) async fn list(State(state): State<AppState>, me: Me) -> Result<Response, PageError> {
    me.require_admin(&state, "read the audit log")?;
    let entries = state
        .store()
        .audit_log(SHOWN)
        .map_err(PageError::internal)?;
    state.page(
        &me,
        "audit.html",
        "audit",
        minijinja::context! { entries, shown => SHOWN },
    )
}
