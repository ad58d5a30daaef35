//! Fail points configured at run time, for fault tests that must move a member in and
//! out of a failure while it runs (hold its raft thread, fail its disk, then let it go).
//! Served on the client port only when the binary has the `failpoints` feature **and**
//! the member was started with `CAIRN_FAILPOINTS_HTTP=1`:
//!
//! - `PUT /debug/failpoints/<name>` with the actions as the body (the `fail` crate's
//!   syntax: `pause`, `sleep(1000)`, `return(ENOSPC)`, `5*off->return`, `off`);
//! - `DELETE /debug/failpoints/<name>` removes it (a paused thread goes on);
//! - `GET /debug/failpoints` lists them, one `name=actions` per line.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::Router;

/// Whether the run-time control is asked for.
pub fn enabled() -> bool {
    std::env::var_os("CAIRN_FAILPOINTS_HTTP").is_some_and(|v| v == "1")
}

/// The `/debug/failpoints` routes.
pub fn router() -> Router {
    Router::new()
        .route("/debug/failpoints", get(list))
        .route("/debug/failpoints/{name}", put(set).delete(remove))
}

async fn list() -> String {
    fail::list()
        .into_iter()
        .map(|(name, actions)| format!("{name}={actions}\n"))
        .collect()
}

async fn set(Path(name): Path<String>, actions: String) -> (StatusCode, String) {
    // A paused thread resumes when its fail point changes; that may take a while, so the
    // registry is changed off the async workers.
    let result = tokio::task::spawn_blocking(move || fail::cfg(name, actions.trim())).await;
    match result {
        Ok(Ok(())) => (StatusCode::OK, String::new()),
        Ok(Err(e)) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

async fn remove(Path(name): Path<String>) -> StatusCode {
    let _ = tokio::task::spawn_blocking(move || fail::remove(name)).await;
    StatusCode::OK
}
