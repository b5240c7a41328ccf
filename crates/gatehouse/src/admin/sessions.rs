//! `/api/sessions`: the recorded sessions, for `identity.admin_groups`; each read is recorded
//! before it is answered (`audit.rs`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use gatehouse_core::audit::AuditRecord;
use gatehouse_store::StoreError;

use super::audit::record_read;
use super::{AdminState, ApiError, ApiResult, authorize};

/// Sessions in a list, newest first.
const LIST_LIMIT: i64 = 1000;
/// Records of one session in an answer.
const RECORDS_LIMIT: i64 = 100_000;

pub(super) fn routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/api/sessions", get(list))
        .route("/api/sessions/{id}", get(one))
}

/// A store failure: logged with what was being read, answered without detail.
fn store_error(e: &StoreError, reading: &str) -> ApiError {
    tracing::error!(error = %e, "{reading}");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store error")
}

async fn list(State(s): State<Arc<AdminState>>, headers: HeaderMap) -> ApiResult {
    let p = authorize(&s, &headers).await?;
    record_read(&s, &p, "sessions", None).await;
    let store = s.store.clone();
    let list = tokio::task::spawn_blocking(move || store.sessions(LIST_LIMIT))
        .await
        .unwrap_or_else(|e| Err(StoreError::Internal(e.to_string())))
        .map_err(|e| store_error(&e, "listing sessions"))?;
    Ok(Json(list).into_response())
}

async fn one(
    State(s): State<Arc<AdminState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let p = authorize(&s, &headers).await?;
    record_read(&s, &p, "session", Some(&id)).await;
    let store = s.store.clone();
    let sid = id.clone();
    let recs = tokio::task::spawn_blocking(move || store.session_records(&sid, RECORDS_LIMIT))
        .await
        .unwrap_or_else(|e| Err(StoreError::Internal(e.to_string())))
        .map_err(|e| store_error(&e, "reading session"))?;
    if recs.is_empty() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such session"));
    }
    Ok(Json(serde_json::json!({
        "id": id,
        "events": recs.iter().map(AuditRecord::export_json).collect::<Vec<_>>(),
    }))
    .into_response())
}
