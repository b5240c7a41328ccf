//! Admission: a token becomes an identity, and the identity is let into a connection — or
//! not, with a `login_failed` record that says why.

use super::gate::Gate;
use crate::audit::detail::{Detail, LoginFailed};
use crate::audit::{AuditError, AuditEvent, Outcome, RecordKind};
use crate::grants::Admission;
use crate::identity::{AuthError, Principal};

/// What a client said when it asked to be let in (no secret: the token is passed apart).
#[derive(Debug, Clone, Default)]
pub struct LoginAttempt {
    /// The peer's address, as recorded.
    pub peer: String,
    /// The connection asked for (the database name, the SSH user, the first path segment).
    pub connection: Option<String>,
    /// The user name the client sent, if its protocol has one.
    pub client_user: Option<String>,
    /// The client's own justification or name (PostgreSQL: `application_name`).
    pub application_name: Option<String>,
}

/// Why a client was not let in. The adapter turns it into its protocol's error; the
/// `login_failed` record carries [`LoginRefusal::reason_code`].
#[derive(Debug, thiserror::Error)]
pub enum LoginRefusal {
    #[error("TLS is required (tls.require = true)")]
    TlsRequired,
    /// A connection parameter the gateway refuses (the adapter's own rule, in its words).
    #[error("{0}")]
    Parameter(String),
    #[error("authentication failed: {0}")]
    Authentication(#[from] AuthError),
    #[error("no such Gatehouse connection \"{0}\"")]
    UnknownConnection(String),
    #[error(
        "identity \"{subject}\" is not in any group allowed to use connection \"{connection}\""
    )]
    GroupNotAllowed { subject: String, connection: String },
}

impl LoginRefusal {
    /// The stable code recorded as `detail.reason` (and the `reason` label of
    /// `gatehouse_auth_failures_total`).
    pub fn reason_code(&self) -> &'static str {
        match self {
            Self::TlsRequired => "tls_required",
            Self::Parameter(_) => "parameter_refused",
            Self::Authentication(e) => e.reason_code(),
            Self::UnknownConnection(_) => "unknown_connection",
            Self::GroupNotAllowed { .. } => "group_not_allowed",
        }
    }
}

/// An identity let into a connection.
#[derive(Debug)]
pub struct Admitted {
    pub principal: Principal,
    pub connection: String,
    /// The access grant that let it in (it was not in `allow_groups`): the session ends
    /// when the grant does.
    pub grant: Option<Admission>,
}

impl Gate {
    /// Verifies `token` and admits its identity to the connection of `attempt`. Every
    /// refusal is recorded (`login_failed`, outcome `denied`) with `code_of(refusal)` as its
    /// error code, the code the client is answered with.
    pub async fn admit(
        &self,
        attempt: &LoginAttempt,
        token: &str,
        code_of: fn(&LoginRefusal) -> &'static str,
    ) -> Result<Admitted, LoginRefusal> {
        let principal = match self.verifier.verify(token).await {
            Ok(p) => p,
            Err(e) => return Err(self.refuse(attempt, None, e.into(), code_of).await),
        };
        let connection = attempt.connection.clone().unwrap_or_default();
        let Some(allowed) = self.allow_groups.get(&connection) else {
            let refusal = LoginRefusal::UnknownConnection(connection);
            return Err(self
                .refuse(attempt, Some(&principal), refusal, code_of)
                .await);
        };
        let in_allow_groups = allowed
            .iter()
            .any(|g| g == "*" || principal.groups.iter().any(|h| h == g));
        // Not in allow_groups: an active access grant for this identity admits it all the same.
        let grant = if in_allow_groups {
            None
        } else {
            self.grants.admits(&principal, &connection)
        };
        if !in_allow_groups && grant.is_none() {
            let refusal = LoginRefusal::GroupNotAllowed {
                subject: principal.subject.clone(),
                connection,
            };
            return Err(self
                .refuse(attempt, Some(&principal), refusal, code_of)
                .await);
        }
        Ok(Admitted {
            principal,
            connection,
            grant,
        })
    }

    /// Records a refusal the adapter found itself (TLS required, a refused parameter) and
    /// hands it back for the answer.
    pub async fn refuse(
        &self,
        attempt: &LoginAttempt,
        principal: Option<&Principal>,
        refusal: LoginRefusal,
        code_of: fn(&LoginRefusal) -> &'static str,
    ) -> LoginRefusal {
        let code = code_of(&refusal);
        if !matches!(
            refusal,
            LoginRefusal::TlsRequired | LoginRefusal::Parameter(_)
        ) {
            metrics::counter!("gatehouse_auth_failures_total", "reason" => refusal.reason_code())
                .increment(1);
        }
        if let Err(e) = self
            .record_login_failed(attempt, principal, refusal.reason_code(), code)
            .await
        {
            tracing::error!(error = %e, "a refused login could not be recorded");
        }
        refusal
    }

    async fn record_login_failed(
        &self,
        attempt: &LoginAttempt,
        principal: Option<&Principal>,
        reason: &str,
        code: &str,
    ) -> Result<u64, AuditError> {
        let mut ev = AuditEvent::new(RecordKind::LoginFailed, crate::ids::time_ordered_id());
        ev.sqlstate = Some(code.to_owned());
        ev.client_addr = Some(attempt.peer.clone());
        ev.connection = attempt.connection.clone();
        if let Some(p) = principal {
            ev.subject = Some(p.subject.clone());
            ev.groups = p.groups.clone();
            ev.issuer = Some(p.issuer.clone());
        }
        ev.outcome = Some(Outcome::Denied);
        let ev = ev.with_detail(
            LoginFailed {
                reason: reason.to_owned(),
                client_user: attempt.client_user.clone(),
                application_name: attempt.application_name.clone(),
                error: None,
            }
            .to_value(),
        );
        self.auditor.record(ev).await
    }
}
