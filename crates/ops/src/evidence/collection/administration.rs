//! 10.2.1.2 (administrative actions): gateway administration recorded in the chain
//! (approval, grant, admin and decision records), administrative SQL, and interactive
//! sessions, those of service identities apart (8.6.1).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use gatehouse_core::audit::detail::session_protocol;
use gatehouse_core::audit::{AuditRecord, RecordKind};
use gatehouse_core::config::Config;
use serde_json::Value;

use super::EventField;
use super::values::{bump, masked_opt, masked_str, statement_ref, strings};
use crate::evidence::summary::{AdminActions, Capped, EventRef, SessionRef, StatementRef};

/// Statement kinds counted as administrative actions (10.2.1.2): DDL, privilege changes,
/// assuming another role, server configuration and maintenance.
const ADMIN_KINDS: &[&str] = &[
    "create",
    "alter",
    "drop",
    "truncate",
    "grant",
    "revoke",
    "alter_system",
    "create_extension",
    "create_function",
    "create_trigger",
    "create_rule",
    "create_policy",
    "comment",
    "set_role",
    "set_session_authorization",
    "vacuum",
    "reindex",
    "cluster",
    "checkpoint",
    "load",
];

/// `application_name` prefixes (lowercase) of interactive tools (10.2.1.2 interactive use).
const INTERACTIVE_APPS: &[&str] = &["psql", "pgcli", "pgadmin", "dbeaver", "datagrip", "usql"];

/// Interactive MySQL clients, by their exact program name (the `program_name` connection
/// attribute; `mysql` as a prefix would take in mysqldump and mysqlslap, which are not).
const INTERACTIVE_MYSQL_APPS: &[&str] = &["mysql", "mariadb", "mycli", "mysqlsh"];

fn is_interactive(app: &str) -> bool {
    let lower = app.to_ascii_lowercase();
    INTERACTIVE_APPS.iter().any(|p| lower.starts_with(p))
        || INTERACTIVE_MYSQL_APPS.contains(&lower.as_str())
}

pub(super) struct AdminAcc {
    /// Gateway administration records per `kind:event`.
    events: BTreeMap<String, u64>,
    records: Capped<EventRef>,
    statements: Capped<StatementRef>,
    statements_by_kind: BTreeMap<String, u64>,
    interactive: Capped<SessionRef>,
    /// `identity.service_groups`.
    service_groups: Vec<String>,
    service_interactive: Capped<SessionRef>,
    /// Sessions per `application_name`.
    applications: BTreeMap<String, u64>,
    /// Sessions and statements per protocol (`postgres`, `mysql`, ...).
    sessions_by_protocol: BTreeMap<String, u64>,
    statements_by_protocol: BTreeMap<String, u64>,
    /// The protocol of each open session started in the period, for its statements.
    protocol_of: HashMap<String, String>,
}

impl AdminAcc {
    pub(super) fn new(cfg: &Config) -> Self {
        Self {
            events: BTreeMap::new(),
            records: Capped::default(),
            statements: Capped::default(),
            statements_by_kind: BTreeMap::new(),
            interactive: Capped::default(),
            service_groups: cfg.identity.service_groups.clone(),
            service_interactive: Capped::default(),
            applications: BTreeMap::new(),
            sessions_by_protocol: BTreeMap::new(),
            statements_by_protocol: BTreeMap::new(),
            protocol_of: HashMap::new(),
        }
    }

    /// A session start: its application, and whether it is interactive use.
    pub(super) fn session_start(&mut self, r: &AuditRecord, detail: &Value) {
        let e = &r.event;
        let protocol = session_protocol(detail.get("protocol").and_then(Value::as_str)).to_owned();
        bump(&mut self.sessions_by_protocol, &protocol, 1);
        self.protocol_of.insert(e.session_id.clone(), protocol);
        let app = masked_str(detail.get("application_name"));
        bump(
            &mut self.applications,
            app.as_deref().unwrap_or("(none)"),
            1,
        );
        if let Some(a) = &app
            && is_interactive(a)
        {
            let session = SessionRef {
                session_id: e.session_id.clone(),
                time: e.time.clone(),
                subject: masked_opt(&e.subject),
                application_name: app.clone(),
                client_addr: masked_opt(&e.client_addr),
                connection: masked_opt(&e.connection),
                grant: masked_str(detail.get("grant")),
            };
            if e.groups.iter().any(|g| self.service_groups.contains(g)) {
                self.service_interactive.push(session.clone());
            }
            self.interactive.push(session);
        }
    }

    /// A session end: its protocol is no longer needed (only open sessions are held).
    pub(super) fn session_end(&mut self, r: &AuditRecord) {
        self.protocol_of.remove(&r.event.session_id);
    }

    /// A statement record: is it of an administrative kind?
    pub(super) fn statement(&mut self, r: &AuditRecord, detail: &Value) {
        // A session started before the period: its protocol is not known here.
        let protocol = self
            .protocol_of
            .get(&r.event.session_id)
            .map_or("(session started before the period)", String::as_str);
        bump(&mut self.statements_by_protocol, protocol, 1);
        let kinds = strings(detail.get("kinds"));
        let admin: Vec<&String> = kinds
            .iter()
            .filter(|k| ADMIN_KINDS.contains(&k.as_str()))
            .collect();
        if !admin.is_empty() {
            let distinct: BTreeSet<&String> = admin.into_iter().collect();
            for k in distinct {
                bump(&mut self.statements_by_kind, k, 1);
            }
            self.statements.push(statement_ref(r, detail));
        }
    }

    /// An approval, grant, admin or decision record.
    pub(super) fn gateway_record(&mut self, r: &AuditRecord, detail: &Value, event: EventField) {
        let e = &r.event;
        let kind = e.kind.as_str();
        let key = format!("{kind}:{}", event.text.unwrap_or("-"));
        bump(&mut self.events, &key, 1);
        let about = match e.kind {
            RecordKind::Approval => masked_str(detail.get("approval_id")),
            RecordKind::Grant => masked_str(detail.get("grant_id")),
            _ => {
                let what = masked_str(detail.get("what"));
                let target = masked_str(detail.get("target"));
                match (what, target) {
                    (Some(w), Some(t)) => Some(format!("{w} {t}")),
                    (w, t) => w.or(t),
                }
            }
        };
        self.records.push(EventRef {
            seq: r.seq,
            time: e.time.clone(),
            kind: kind.to_owned(),
            event: event.text.map(str::to_owned),
            subject: masked_opt(&e.subject),
            connection: masked_opt(&e.connection),
            rule: masked_opt(&e.rule),
            outcome: e.outcome.map(|o| o.as_str().to_owned()),
            about,
        });
    }

    pub(super) fn finish(self) -> AdminActions {
        AdminActions {
            admin_statement_kinds: ADMIN_KINDS.iter().map(|k| (*k).to_owned()).collect(),
            gateway_admin_events: self.events,
            gateway_admin_records: self.records,
            admin_statements_by_kind: self.statements_by_kind,
            admin_statements: self.statements,
            interactive_applications: INTERACTIVE_APPS
                .iter()
                .chain(INTERACTIVE_MYSQL_APPS)
                .map(|k| (*k).to_owned())
                .collect(),
            interactive_sessions: self.interactive,
            service_groups: self.service_groups,
            service_identity_interactive_sessions: self.service_interactive,
            sessions_by_application: self.applications,
            sessions_by_protocol: self.sessions_by_protocol,
            statements_by_protocol: self.statements_by_protocol,
        }
    }
}
