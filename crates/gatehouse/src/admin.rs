//! The admin HTTP API: health, metrics, and (for `identity.admin_groups`) sessions.
//!
//! Every `/api` route takes `Authorization: Bearer <token>`, verified exactly like a database
//! login: 401 without a valid token, 403 when the identity is not an admin.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use gatehouse_core::identity::{Principal, Verifier};
use gatehouse_store::SqliteStore;
use metrics_exporter_prometheus::PrometheusHandle;

pub struct AdminState {
    pub verifier: Verifier,
    pub admin_groups: Vec<String>,
    pub store: SqliteStore,
    pub metrics: PrometheusHandle,
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/api/sessions", get(sessions))
        .route("/api/sessions/{id}", get(session))
        .with_state(state)
}

async fn metrics(State(s): State<Arc<AdminState>>) -> String {
    s.metrics.render()
}

fn error(status: StatusCode, msg: &str) -> Response {
    (status, Json(serde_json::json!({ "error": msg }))).into_response()
}

async fn authorize(s: &AdminState, headers: &HeaderMap) -> Result<Principal, Response> {
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            // The scheme name is case-insensitive (RFC 9110 §11.1).
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        })
    else {
        return Err(error(StatusCode::UNAUTHORIZED, "missing bearer token"));
    };
    let p = s
        .verifier
        .verify(token.trim())
        .await
        .map_err(|e| error(StatusCode::UNAUTHORIZED, &format!("invalid token: {e}")))?;
    if !p.in_any(&s.admin_groups) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "identity is not in identity.admin_groups",
        ));
    }
    Ok(p)
}

async fn sessions(State(s): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&s, &headers).await {
        return r;
    }
    let store = s.store.clone();
    match tokio::task::spawn_blocking(move || store.sessions(1000))
        .await
        .unwrap_or_else(|e| Err(gatehouse_store::StoreError::Internal(e.to_string())))
    {
        Ok(list) => Json(list).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "listing sessions");
            error(StatusCode::INTERNAL_SERVER_ERROR, "store error")
        }
    }
}

async fn session(
    State(s): State<Arc<AdminState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&s, &headers).await {
        return r;
    }
    let store = s.store.clone();
    let sid = id.clone();
    match tokio::task::spawn_blocking(move || store.session_records(&sid, 100_000))
        .await
        .unwrap_or_else(|e| Err(gatehouse_store::StoreError::Internal(e.to_string())))
    {
        Ok(recs) if recs.is_empty() => error(StatusCode::NOT_FOUND, "no such session"),
        Ok(recs) => Json(serde_json::json!({
            "id": id,
            "events": recs.iter().map(crate::export::record_json).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "reading session");
            error(StatusCode::INTERNAL_SERVER_ERROR, "store error")
        }
    }
}
