//! The admin HTTP API: health, metrics, and (for `identity.admin_groups`) sessions.
//!
//! Every `/api` route takes `Authorization: Bearer <token>`, verified exactly like a database
//! login: 401 without a valid token, 403 when the identity is not an admin.

use std::sync::Arc;

use axum::extract::Query;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::routing::post;
use axum::{Json, Router};
use gatehouse_core::approvals::{ApprovalBook, DecideError, DecideOutcome, ListFilter};
use gatehouse_core::audit::{AuditEvent, Auditor, RecordKind};
use gatehouse_core::identity::{Principal, Verifier};
use gatehouse_store::SqliteStore;
use metrics_exporter_prometheus::PrometheusHandle;

pub struct AdminState {
    pub verifier: Verifier,
    pub admin_groups: Vec<String>,
    pub store: SqliteStore,
    pub metrics: PrometheusHandle,
    pub approvals: Arc<ApprovalBook>,
    pub auditor: Auditor,
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/api/sessions", get(sessions))
        .route("/api/sessions/{id}", get(session))
        .route("/api/approvals", get(approvals))
        .route("/api/approvals/{id}/{verb}", post(decision))
        .with_state(state)
}

async fn metrics(State(s): State<Arc<AdminState>>) -> String {
    s.metrics.render()
}

fn error(status: StatusCode, msg: &str) -> Response {
    (status, Json(serde_json::json!({ "error": msg }))).into_response()
}

async fn authenticate(s: &AdminState, headers: &HeaderMap) -> Result<Principal, Response> {
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        })
    else {
        return Err(error(StatusCode::UNAUTHORIZED, "missing bearer token"));
    };
    s.verifier
        .verify(token.trim())
        .await
        .map_err(|e| error(StatusCode::UNAUTHORIZED, &format!("invalid token: {e}")))
}

#[derive(serde::Deserialize)]
struct ListQuery {
    status: Option<String>,
    connection: Option<String>,
    requester: Option<String>,
}

/// Requests the identity may see: all for admins, else those it may decide.
async fn approvals(
    State(s): State<Arc<AdminState>>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    let p = match authenticate(&s, &headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let admin = p.in_any(&s.admin_groups);
    let filter = ListFilter {
        status: q.status.as_deref(),
        connection: q.connection.as_deref(),
        requester: q.requester.as_deref(),
    };
    let list: Vec<_> = s
        .approvals
        .list(&filter)
        .into_iter()
        .filter(|r| admin || p.in_any(&r.approvers))
        .collect();
    Json(list).into_response()
}

#[derive(serde::Deserialize, Default)]
struct DecisionBody {
    reason: Option<String>,
}

/// `POST /api/approvals/{id}/approve` and `/deny`.
async fn decision(
    State(s): State<Arc<AdminState>>,
    Path((id, verb)): Path<(String, String)>,
    headers: HeaderMap,
    body: Option<Json<DecisionBody>>,
) -> Response {
    let approve = match verb.as_str() {
        "approve" => true,
        "deny" => false,
        _ => return error(StatusCode::NOT_FOUND, "use /approve or /deny"),
    };
    let body = body.map(|b| b.0).unwrap_or_default();
    decide(&s, &id, &headers, body, approve).await
}

async fn decide(
    s: &AdminState,
    id: &str,
    headers: &HeaderMap,
    body: DecisionBody,
    approve: bool,
) -> Response {
    let p = match authenticate(s, headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let reason = body
        .reason
        .map(|r| gatehouse_core::pan::mask_pans(&r).into_owned());
    match s
        .approvals
        .decide(id, &p.subject, &p.groups, approve, reason.clone())
    {
        Ok((req, outcome)) => {
            // The decision (or one approval of several needed) is evidence: chained with
            // everything else.
            let event = match (&outcome, approve) {
                (DecideOutcome::Counted { .. }, _) => "approval_counted",
                (DecideOutcome::Decided, true) => "approved",
                (DecideOutcome::Decided, false) => "denied",
            };
            let mut ev = AuditEvent::new(RecordKind::Approval, req.session_id.clone());
            ev.subject = Some(p.subject.clone());
            ev.groups = p.groups.clone();
            ev.issuer = Some(p.issuer.clone());
            ev.connection = Some(req.connection.clone());
            ev.rule = Some(req.rule.clone());
            ev.outcome = Some(if approve {
                gatehouse_core::audit::Outcome::Ok
            } else {
                gatehouse_core::audit::Outcome::Denied
            });
            let ev = ev.with_detail(serde_json::json!({
                "event": event,
                "approval_id": req.id,
                "requester": req.requester,
                "reason": reason,
                "approvals": req.votes.len(),
                "min_approvals": req.min_approvals,
            }));
            if let Err(e) = s.auditor.record(ev).await {
                tracing::error!(error = %e, "approval decision could not be audited");
            }
            match outcome {
                DecideOutcome::Decided => Json(req).into_response(),
                // Counted, not decided yet: 202, with how many more are needed.
                DecideOutcome::Counted { have, need } => (
                    StatusCode::ACCEPTED,
                    Json(serde_json::json!({
                        "request": req,
                        "approvals": have,
                        "min_approvals": need,
                        "message": format!("approval counted ({have} of {need}); the request stays pending"),
                    })),
                )
                    .into_response(),
            }
        }
        Err(e @ DecideError::NotFound) => error(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e @ (DecideError::NotPending(_) | DecideError::AlreadyApproved)) => {
            error(StatusCode::CONFLICT, &e.to_string())
        }
        Err(e @ (DecideError::SelfApproval | DecideError::NotApprover(_))) => {
            error(StatusCode::FORBIDDEN, &e.to_string())
        }
    }
}

async fn authorize(s: &AdminState, headers: &HeaderMap) -> Result<Principal, Response> {
    let p = authenticate(s, headers).await?;
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
