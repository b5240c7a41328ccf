//! The session handle: the records of a session's life, written once and in order.

use std::sync::Arc;
use std::time::Instant;

use super::admission::{Admitted, LoginAttempt};
use super::ending::EndReason;
use super::gate::Gate;
use crate::audit::detail::{
    Detail, DetailEvent, GrantUsed, LoginFailed, SessionEnded, SessionStarted,
};
use crate::audit::{AuditError, AuditEvent, Outcome, RecordKind};
use crate::grants::Admission;
use crate::identity::Principal;

/// Who and where: the facts every record of the session carries.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub id: String,
    pub principal: Principal,
    pub client_addr: String,
    pub connection: String,
    pub started: Instant,
}

impl SessionInfo {
    /// A record of this session, with its identity and connection filled in.
    pub fn event(&self, kind: RecordKind) -> AuditEvent {
        let mut ev = AuditEvent::new(kind, self.id.clone());
        ev.subject = Some(self.principal.subject.clone());
        ev.groups = self.principal.groups.clone();
        ev.issuer = Some(self.principal.issuer.clone());
        ev.client_addr = Some(self.client_addr.clone());
        ev.connection = Some(self.connection.clone());
        ev
    }
}

/// The session could not be recorded, so it must not start (`audit.fail_closed`).
#[derive(Debug, thiserror::Error)]
#[error("the session could not be recorded: {0}")]
pub struct StartError(#[from] pub AuditError);

/// Where a session is in its life; decides what its `Drop` still owes the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Admitted, upstream not yet ready: nothing recorded yet.
    Admitted,
    /// `session_start` recorded: a `session_end` is owed.
    Started,
    /// Recorded as ended (or as a failed login): nothing more is owed.
    Closed,
}

/// One admitted session. Its records go through here; dropping it records the end that
/// [`Session::end`] did not.
pub struct Session {
    gate: Arc<Gate>,
    info: SessionInfo,
    grant: Option<Admission>,
    stage: Stage,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.info.id)
            .field("subject", &self.info.principal.subject)
            .field("connection", &self.info.connection)
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The session of an admitted identity; nothing is recorded until [`Session::start`].
    pub fn new(gate: Arc<Gate>, admitted: Admitted, client_addr: String) -> Self {
        let info = SessionInfo {
            id: crate::ids::time_ordered_id(),
            principal: admitted.principal,
            client_addr,
            connection: admitted.connection,
            started: Instant::now(),
        };
        Self {
            gate,
            info,
            grant: admitted.grant,
            stage: Stage::Admitted,
        }
    }

    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// The access grant that admitted the session, if it was not in `allow_groups`.
    pub fn grant(&self) -> Option<&Admission> {
        self.grant.as_ref()
    }

    /// A record of this session (identity and connection filled in).
    pub fn event(&self, kind: RecordKind) -> AuditEvent {
        self.info.event(kind)
    }

    /// The session could not be set up after admission (no upstream, a refused upstream
    /// state): recorded as `login_failed` (outcome `error`) under this session's id.
    pub async fn fail(&mut self, attempt: &LoginAttempt, reason: &str, code: &str, error: String) {
        let mut ev = self.event(RecordKind::LoginFailed);
        ev.sqlstate = Some(code.to_owned());
        ev.outcome = Some(Outcome::Error);
        let ev = ev.with_detail(
            LoginFailed {
                reason: reason.to_owned(),
                client_user: attempt.client_user.clone(),
                application_name: attempt.application_name.clone(),
                error: Some(error),
            }
            .to_value(),
        );
        if let Err(e) = self.gate.auditor.record(ev).await {
            tracing::error!(error = %e, "a failed session setup could not be recorded");
        }
        self.stage = Stage::Closed;
    }

    /// Records the session's start before the client may send anything: first the use of
    /// the grant that admitted it (if any), then `session_start` with the adapter's facts.
    /// With `audit.fail_closed`, a record that cannot be written refuses the session.
    pub async fn start(&mut self, started: SessionStarted) -> Result<(), StartError> {
        let mut started = started;
        if let Some(g) = &self.grant {
            let mut ev = self.event(RecordKind::Grant);
            ev.outcome = Some(Outcome::Ok);
            let ev = ev.with_detail(
                GrantUsed {
                    event: DetailEvent::Used,
                    grant_id: g.id.clone(),
                    requester: self.info.principal.subject.clone(),
                    expires_at: g.expires_at_rfc3339(),
                }
                .to_value(),
            );
            if let Err(e) = self.gate.auditor.record(ev).await
                && self.gate.auditor.fail_closed()
            {
                tracing::error!(error = %e, "grant use could not be audited; refusing session");
                self.stage = Stage::Closed;
                return Err(e.into());
            }
            started.grant = Some(g.id.clone());
        }
        let ev = self
            .event(RecordKind::SessionStart)
            .with_detail(started.to_value());
        if let Err(e) = self.gate.auditor.record(ev).await
            && self.gate.auditor.fail_closed()
        {
            tracing::error!(error = %e, "session start could not be audited; refusing session");
            self.stage = Stage::Closed;
            return Err(e.into());
        }
        self.stage = Stage::Started;
        metrics::counter!("gatehouse_sessions_total").increment(1);
        metrics::gauge!("gatehouse_sessions_active").increment(1.0);
        Ok(())
    }

    /// Records the end of a started session (nothing for one that never started).
    pub fn end(mut self, reason: EndReason) {
        self.close(reason.as_str());
    }

    fn close(&mut self, reason: &str) {
        if self.stage != Stage::Started {
            self.stage = Stage::Closed;
            return;
        }
        self.stage = Stage::Closed;
        metrics::gauge!("gatehouse_sessions_active").decrement(1.0);
        let mut ev = self.event(RecordKind::SessionEnd);
        ev.duration_ms = Some(self.info.started.elapsed().as_secs_f64() * 1000.0);
        let ev = ev.with_detail(
            SessionEnded {
                reason: reason.to_owned(),
            }
            .to_value(),
        );
        self.gate.auditor.record_unwaited(ev);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // A panic or a cancelled task: the session still ends in the record.
        self.close(EndReason::Dropped.as_str());
    }
}
