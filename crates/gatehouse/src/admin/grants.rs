//! `/api/grants`: time-bound access grants.
//!
//! `POST /api/grants` (any authenticated identity) asks for access to a connection whose
//! `allow_groups` it is not in; the connection's `grant_approvers` decide (`/approve`, `/deny`,
//! same separation of duties and quorum as held statements); the requester, an approver or an
//! admin may `/revoke`. Every step is a `grant` record in the audit chain.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use gatehouse_core::audit::detail::DetailEvent;
use gatehouse_core::grants::{AccessGrant, GrantDecision, GrantError, GrantFilter};
use gatehouse_core::identity::Principal;

use super::{
    AdminState, ApiError, ApiResult, DecisionBody, ListQuery, authenticate, counted, masked_reason,
};

pub(super) fn routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/api/grants", get(list).post(request))
        .route("/api/grants/{id}", get(one))
        .route("/api/grants/{id}/{verb}", post(action))
}

impl From<GrantError> for ApiError {
    fn from(e: GrantError) -> Self {
        let status = match e {
            GrantError::UnknownConnection(_)
            | GrantError::BadDuration(_)
            | GrantError::TooLong(_)
            | GrantError::NoReason => StatusCode::BAD_REQUEST,
            GrantError::NotEnabled
            | GrantError::SelfApproval
            | GrantError::NotApprover(_)
            | GrantError::NotAllowedToRevoke => StatusCode::FORBIDDEN,
            GrantError::NotFound => StatusCode::NOT_FOUND,
            GrantError::AlreadyAllowed
            | GrantError::AlreadyPending(_)
            | GrantError::NotPending(_)
            | GrantError::AlreadyApproved
            | GrantError::NotRevocable(_) => StatusCode::CONFLICT,
        };
        ApiError::new(status, e.to_string())
    }
}

/// Whether `p` may see `g`: admins all, approvers those of their connections, others their own.
fn visible(s: &AdminState, p: &Principal, g: &AccessGrant) -> bool {
    p.in_any(&s.admin_groups)
        || p.in_any(&g.approvers)
        || (g.requester == p.subject && g.requester_issuer == p.issuer)
}

/// Records a step of `g` (a `grant` record), logged if it cannot be.
async fn record(
    s: &AdminState,
    g: &AccessGrant,
    event: DetailEvent,
    actor: &Principal,
    reason: Option<&str>,
) {
    let ev = gatehouse_core::grants::audit_event(g, event, Some(actor), reason);
    if let Err(e) = s.auditor.record(ev).await {
        tracing::error!(error = %e, grant = %g.id, event = event.as_str(), "grant event could not be audited");
    }
}

#[derive(serde::Deserialize)]
struct GrantRequestBody {
    connection: String,
    duration: String,
    reason: String,
}

/// `POST /api/grants`: 201 with the pending grant.
async fn request(
    State(s): State<Arc<AdminState>>,
    headers: HeaderMap,
    body: Result<Json<GrantRequestBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let p = authenticate(&s, &headers).await?;
    let Json(body) = body.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"connection\", \"duration\", \"reason\"}}: {e}"),
        )
    })?;
    let g = s
        .grants
        .request(&p, &body.connection, &body.duration, &body.reason)?;
    record(&s, &g, DetailEvent::Requested, &p, Some(&g.reason)).await;
    Ok((StatusCode::CREATED, Json(g)).into_response())
}

/// `GET /api/grants?status=&connection=&requester=`, newest first, what the identity may see.
async fn list(
    State(s): State<Arc<AdminState>>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> ApiResult {
    let p = authenticate(&s, &headers).await?;
    let filter = GrantFilter {
        status: q.status.as_deref().filter(|s| *s != "all"),
        connection: q.connection.as_deref(),
        requester: q.requester.as_deref(),
    };
    let list: Vec<AccessGrant> = s
        .grants
        .list(&filter)
        .into_iter()
        .filter(|g| visible(&s, &p, g))
        .collect();
    Ok(Json(list).into_response())
}

async fn one(
    State(s): State<Arc<AdminState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let p = authenticate(&s, &headers).await?;
    match s.grants.get(&id) {
        None => Err(GrantError::NotFound.into()),
        Some(g) if !visible(&s, &p, &g) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "only an admin, an approver of the connection or the requester may see this grant",
        )),
        Some(g) => Ok(Json(g).into_response()),
    }
}

/// `POST /api/grants/{id}/approve`, `/deny` and `/revoke`, with an optional `{"reason"}`.
async fn action(
    State(s): State<Arc<AdminState>>,
    Path((id, verb)): Path<(String, String)>,
    headers: HeaderMap,
    body: Option<Json<DecisionBody>>,
) -> ApiResult {
    if !matches!(verb.as_str(), "approve" | "deny" | "revoke") {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "use /approve, /deny or /revoke",
        ));
    }
    let p = authenticate(&s, &headers).await?;
    let reason = masked_reason(body.and_then(|b| b.0.reason));
    if verb == "revoke" {
        let admin = p.in_any(&s.admin_groups);
        let g = s.grants.revoke(&id, &p, admin, reason.clone())?;
        record(&s, &g, DetailEvent::Revoked, &p, reason.as_deref()).await;
        return Ok(Json(g).into_response());
    }
    let approve = verb == "approve";
    let (g, decision) = s.grants.decide(&id, &p, approve, reason.clone())?;
    let event = match (&decision, approve) {
        (GrantDecision::Counted { .. }, _) => DetailEvent::ApprovalCounted,
        (GrantDecision::Decided, true) => DetailEvent::Approved,
        (GrantDecision::Decided, false) => DetailEvent::Denied,
    };
    record(&s, &g, event, &p, reason.as_deref()).await;
    Ok(match decision {
        GrantDecision::Decided => Json(g).into_response(),
        // Counted, not decided yet: 202, with how many more are needed.
        GrantDecision::Counted { have, need } => counted("grant", g, have, need),
    })
}
