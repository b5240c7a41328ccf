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
use gatehouse_core::audit::detail::{ApprovalDecided, AuditRead, Detail, DetailEvent};
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
    /// Time-bound access grants (see the grants block at the end of this file).
    pub grants: Arc<gatehouse_core::grants::GrantBook>,
    pub auditor: Auditor,
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/api/sessions", get(sessions))
        .route("/api/sessions/{id}", get(session))
        .route("/api/approvals", get(approvals))
        .route("/api/approvals/{id}", get(approval))
        .route("/api/approvals/{id}/{verb}", post(decision))
        .merge(grant_routes())
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

/// One request in full (statement, rule, votes): for admins, the rule's approvers and the
/// requester itself; 404 for an unknown id, 403 for anyone else.
async fn approval(
    State(s): State<Arc<AdminState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let p = match authenticate(&s, &headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some(r) = s.approvals.get(&id) else {
        return error(StatusCode::NOT_FOUND, "no such approval request");
    };
    if p.in_any(&s.admin_groups) || p.in_any(&r.approvers) || p.subject == r.requester {
        Json(r).into_response()
    } else {
        error(
            StatusCode::FORBIDDEN,
            "only admins, the rule's approvers and the requester may read this request",
        )
    }
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
                gatehouse_core::audit::Outcome::Ok
            } else {
                gatehouse_core::audit::Outcome::Denied
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

/// Records that an identity read audit data through the API (PCI DSS 10.2.1.3: access to the
/// audit logs is itself logged).
async fn record_read(s: &AdminState, p: &Principal, what: &str, target: Option<&str>) {
    let mut ev = AuditEvent::new(RecordKind::Admin, String::new());
    ev.subject = Some(p.subject.clone());
    ev.groups = p.groups.clone();
    ev.issuer = Some(p.issuer.clone());
    let ev = ev.with_detail(
        AuditRead {
            event: DetailEvent::AuditRead,
            what: what.to_owned(),
            target: target.map(str::to_owned),
        }
        .to_value(),
    );
    if let Err(e) = s.auditor.record(ev).await {
        tracing::error!(error = %e, "an audit read could not be recorded");
    }
}

async fn sessions(State(s): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    let p = match authorize(&s, &headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    record_read(&s, &p, "sessions", None).await;
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
    let p = match authorize(&s, &headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    record_read(&s, &p, "session", Some(&id)).await;
    let store = s.store.clone();
    let sid = id.clone();
    match tokio::task::spawn_blocking(move || store.session_records(&sid, 100_000))
        .await
        .unwrap_or_else(|e| Err(gatehouse_store::StoreError::Internal(e.to_string())))
    {
        Ok(recs) if recs.is_empty() => error(StatusCode::NOT_FOUND, "no such session"),
        Ok(recs) => Json(serde_json::json!({
            "id": id,
            "events": recs.iter().map(gatehouse_core::audit::AuditRecord::export_json).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "reading session");
            error(StatusCode::INTERNAL_SERVER_ERROR, "store error")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Time-bound access grants
// ---------------------------------------------------------------------------------------------
//
// `POST /api/grants` (any authenticated identity) asks for access to a connection whose
// `allow_groups` it is not in; the connection's `grant_approvers` decide (`/approve`, `/deny`,
// same separation of duties and quorum as held statements); the requester, an approver or an
// admin may `/revoke`. Every step is a `grant` record in the audit chain.

use gatehouse_core::grants::{AccessGrant, GrantDecision, GrantError, GrantFilter};

fn grant_routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/api/grants", get(grants_list).post(grant_request))
        .route("/api/grants/{id}", get(grant_get))
        .route("/api/grants/{id}/{verb}", post(grant_action))
}

fn grant_error(e: &GrantError) -> Response {
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
    error(status, &e.to_string())
}

/// Whether `p` may see `g`: admins all, approvers those of their connections, others their own.
fn grant_visible(s: &AdminState, p: &Principal, g: &AccessGrant) -> bool {
    p.in_any(&s.admin_groups)
        || p.in_any(&g.approvers)
        || (g.requester == p.subject && g.requester_issuer == p.issuer)
}

async fn grant_audit(
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
async fn grant_request(
    State(s): State<Arc<AdminState>>,
    headers: HeaderMap,
    body: Result<Json<GrantRequestBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let p = match authenticate(&s, &headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let body = match body {
        Ok(Json(b)) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"connection\", \"duration\", \"reason\"}}: {e}"),
            );
        }
    };
    match s
        .grants
        .request(&p, &body.connection, &body.duration, &body.reason)
    {
        Ok(g) => {
            grant_audit(&s, &g, DetailEvent::Requested, &p, Some(&g.reason)).await;
            (StatusCode::CREATED, Json(g)).into_response()
        }
        Err(e) => grant_error(&e),
    }
}

/// `GET /api/grants?status=&connection=&requester=`, newest first, what the identity may see.
async fn grants_list(
    State(s): State<Arc<AdminState>>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    let p = match authenticate(&s, &headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let filter = GrantFilter {
        status: q.status.as_deref().filter(|s| *s != "all"),
        connection: q.connection.as_deref(),
        requester: q.requester.as_deref(),
    };
    let list: Vec<AccessGrant> = s
        .grants
        .list(&filter)
        .into_iter()
        .filter(|g| grant_visible(&s, &p, g))
        .collect();
    Json(list).into_response()
}

async fn grant_get(
    State(s): State<Arc<AdminState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let p = match authenticate(&s, &headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    match s.grants.get(&id) {
        None => grant_error(&GrantError::NotFound),
        Some(g) if !grant_visible(&s, &p, &g) => error(
            StatusCode::FORBIDDEN,
            "only an admin, an approver of the connection or the requester may see this grant",
        ),
        Some(g) => Json(g).into_response(),
    }
}

/// `POST /api/grants/{id}/approve`, `/deny` and `/revoke`, with an optional `{"reason"}`.
async fn grant_action(
    State(s): State<Arc<AdminState>>,
    Path((id, verb)): Path<(String, String)>,
    headers: HeaderMap,
    body: Option<Json<DecisionBody>>,
) -> Response {
    if !matches!(verb.as_str(), "approve" | "deny" | "revoke") {
        return error(StatusCode::NOT_FOUND, "use /approve, /deny or /revoke");
    }
    let p = match authenticate(&s, &headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let reason = body
        .and_then(|b| b.0.reason)
        .map(|r| gatehouse_core::pan::mask_pans(&r).into_owned());
    if verb == "revoke" {
        let admin = p.in_any(&s.admin_groups);
        return match s.grants.revoke(&id, &p, admin, reason.clone()) {
            Ok(g) => {
                grant_audit(&s, &g, DetailEvent::Revoked, &p, reason.as_deref()).await;
                Json(g).into_response()
            }
            Err(e) => grant_error(&e),
        };
    }
    let approve = verb == "approve";
    match s.grants.decide(&id, &p, approve, reason.clone()) {
        Ok((g, decision)) => {
            let event = match (&decision, approve) {
                (GrantDecision::Counted { .. }, _) => DetailEvent::ApprovalCounted,
                (GrantDecision::Decided, true) => DetailEvent::Approved,
                (GrantDecision::Decided, false) => DetailEvent::Denied,
            };
            grant_audit(&s, &g, event, &p, reason.as_deref()).await;
            match decision {
                GrantDecision::Decided => Json(g).into_response(),
                // Counted, not decided yet: 202, with how many more are needed.
                GrantDecision::Counted { have, need } => (
                    StatusCode::ACCEPTED,
                    Json(serde_json::json!({
                        "grant": g,
                        "approvals": have,
                        "min_approvals": need,
                        "message": format!("approval counted ({have} of {need}); the grant stays pending"),
                    })),
                )
                    .into_response(),
            }
        }
        Err(e) => grant_error(&e),
    }
}
