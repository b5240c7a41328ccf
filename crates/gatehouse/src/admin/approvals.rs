//! `/api/approvals`: statements held for approval. Listed for admins and the approvers who may
//! decide them, read by those and the requester, decided (`/approve`, `/deny`) by approvers
//! under the book's separation of duties and quorum; every decision is an `approval` record.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use gatehouse_core::approvals::{DecideError, DecideOutcome, ListFilter};
use gatehouse_core::audit::detail::{ApprovalDecided, Detail, DetailEvent};
use gatehouse_core::audit::{AuditEvent, Outcome, RecordKind};

use super::{
    AdminState, ApiError, ApiResult, DecisionBody, ListQuery, authenticate, counted, masked_reason,
};

pub(super) fn routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/api/approvals", get(list))
        .route("/api/approvals/{id}", get(one))
        .route("/api/approvals/{id}/{verb}", post(decision))
}

impl From<DecideError> for ApiError {
    fn from(e: DecideError) -> Self {
        let status = match e {
            DecideError::NotFound => StatusCode::NOT_FOUND,
            DecideError::NotPending(_) | DecideError::AlreadyApproved => StatusCode::CONFLICT,
            DecideError::SelfApproval | DecideError::NotApprover(_) => StatusCode::FORBIDDEN,
        };
        ApiError::new(status, e.to_string())
    }
}

/// Requests the identity may see: all for admins, else those it may decide.
async fn list(
    State(s): State<Arc<AdminState>>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> ApiResult {
    let p = authenticate(&s, &headers).await?;
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
    Ok(Json(list).into_response())
}

/// One request in full (statement, rule, votes): for admins, the rule's approvers and the
/// requester itself; 404 for an unknown id, 403 for anyone else.
async fn one(
    State(s): State<Arc<AdminState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let p = authenticate(&s, &headers).await?;
    let Some(r) = s.approvals.get(&id) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no such approval request",
        ));
    };
    if p.in_any(&s.admin_groups) || p.in_any(&r.approvers) || p.subject == r.requester {
        Ok(Json(r).into_response())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "only admins, the rule's approvers and the requester may read this request",
        ))
    }
}

/// `POST /api/approvals/{id}/approve` and `/deny`.
async fn decision(
    State(s): State<Arc<AdminState>>,
    Path((id, verb)): Path<(String, String)>,
    headers: HeaderMap,
    body: Option<Json<DecisionBody>>,
) -> ApiResult {
    let approve = match verb.as_str() {
        "approve" => true,
        "deny" => false,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "use /approve or /deny",
            ));
        }
    };
    let body = body.map(|b| b.0).unwrap_or_default();
    let p = authenticate(&s, &headers).await?;
    let reason = masked_reason(body.reason);
    let (req, outcome) = s
        .approvals
        .decide(&id, &p.subject, &p.groups, approve, reason.clone())?;
    // The decision (or one approval of several needed) is evidence: chained with everything
    // else.
    let event = match (&outcome, approve) {
        (DecideOutcome::Counted { .. }, _) => DetailEvent::ApprovalCounted,
        (DecideOutcome::Decided, true) => DetailEvent::Approved,
        (DecideOutcome::Decided, false) => DetailEvent::Denied,
    };
    let mut ev = AuditEvent::new(RecordKind::Approval, req.session_id.clone());
    ev.subject = Some(p.subject.clone());
    ev.groups = p.groups.clone();
    ev.issuer = Some(p.issuer.clone());
    ev.connection = Some(req.connection.clone());
    ev.rule = Some(req.rule.clone());
    ev.outcome = Some(if approve {
        Outcome::Ok
    } else {
        Outcome::Denied
    });
    let ev = ev.with_detail(
        ApprovalDecided {
            event,
            approval_id: req.id.clone(),
            requester: req.requester.clone(),
            reason: reason.clone(),
            approvals: req.votes.len(),
            min_approvals: req.min_approvals,
        }
        .to_value(),
    );
    if let Err(e) = s.auditor.record(ev).await {
        tracing::error!(error = %e, "approval decision could not be audited");
    }
    Ok(match outcome {
        DecideOutcome::Decided => Json(req).into_response(),
        // Counted, not decided yet: 202, with how many more are needed.
        DecideOutcome::Counted { have, need } => counted("request", req, have, need),
    })
}
