//! The admin HTTP API: health, metrics, and the resources behind `/api` — recorded sessions
//! (for `identity.admin_groups`), held statements and access grants (for whoever may see or
//! decide them).
//!
//! Every `/api` route takes `Authorization: Bearer <token>`, verified exactly like a database
//! login: 401 without a valid token, 403 when the identity may not use the resource. This file
//! holds what every resource shares (the state, the router, authentication, the error answer);
//! each resource has its own file, and the one that reads audit data records the read first
//! (`audit`).

mod approvals;
mod audit;
mod grants;
mod sessions;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use gatehouse_core::approvals::ApprovalBook;
use gatehouse_core::audit::Auditor;
use gatehouse_core::grants::GrantBook;
use gatehouse_core::identity::{Principal, Verifier};
use gatehouse_store::SqliteStore;
use metrics_exporter_prometheus::PrometheusHandle;

pub struct AdminState {
    pub verifier: Verifier,
    pub admin_groups: Vec<String>,
    pub store: SqliteStore,
    pub metrics: PrometheusHandle,
    pub approvals: Arc<ApprovalBook>,
    /// Time-bound access grants (see `grants.rs`).
    pub grants: Arc<GrantBook>,
    pub auditor: Auditor,
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .merge(sessions::routes())
        .merge(approvals::routes())
        .merge(grants::routes())
        .with_state(state)
}

async fn metrics(State(s): State<Arc<AdminState>>) -> String {
    s.metrics.render()
}

/// A refused or failed request: its status and `{"error": message}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

/// What a handler answers: its response, or the error it was refused with.
type ApiResult = Result<Response, ApiError>;

/// The identity of the request's bearer token (401 without a valid one).
async fn authenticate(s: &AdminState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        })
    else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing bearer token",
        ));
    };
    s.verifier
        .verify(token.trim())
        .await
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, format!("invalid token: {e}")))
}

/// An authenticated identity in `identity.admin_groups` (403 for any other).
async fn authorize(s: &AdminState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let p = authenticate(s, headers).await?;
    if !p.in_any(&s.admin_groups) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "identity is not in identity.admin_groups",
        ));
    }
    Ok(p)
}

/// `?status=&connection=&requester=` of the lists of requests and grants.
#[derive(serde::Deserialize)]
struct ListQuery {
    status: Option<String>,
    connection: Option<String>,
    requester: Option<String>,
}

/// The optional body of a decision: `{"reason": ...}`.
#[derive(serde::Deserialize, Default)]
struct DecisionBody {
    reason: Option<String>,
}

/// A decider's reason as recorded and answered: card numbers masked.
fn masked_reason(reason: Option<String>) -> Option<String> {
    reason.map(|r| gatehouse_core::pan::mask_pans(&r).into_owned())
}

/// 202 for a vote counted towards a quorum: the request or the grant (under its name, `what`),
/// and how many approvals it has and needs.
fn counted(what: &str, item: impl serde::Serialize, have: u32, need: u32) -> Response {
    let mut body = serde_json::Map::new();
    body.insert(
        what.to_owned(),
        serde_json::to_value(item).unwrap_or(serde_json::Value::Null),
    );
    body.insert("approvals".to_owned(), have.into());
    body.insert("min_approvals".to_owned(), need.into());
    body.insert(
        "message".to_owned(),
        format!("approval counted ({have} of {need}); the {what} stays pending").into(),
    );
    (StatusCode::ACCEPTED, Json(body)).into_response()
}
