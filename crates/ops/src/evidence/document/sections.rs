//! One section per requirement, in the order of the report: the figures an assessor reads
//! first, then the tables that back them.

use super::{Section, Table, capped_table, fig, map_table, opt, opt_num, reasons, table};
use crate::evidence::summary::{
    Report, Requests, SessionRef, StatementRef, Status, round3, section_id,
};

/// A requirement's section, with the status its summary row gives it.
fn section(
    r: &Report,
    req: &str,
    title: &str,
    intro: &str,
    figures: Vec<(String, String)>,
    tables: Vec<Table>,
) -> Section {
    Section {
        id: section_id(req),
        heading: format!("{req} {title}"),
        status: r
            .summary
            .iter()
            .find(|s| s.requirement == req)
            .map_or(Status::Ok, |s| s.status),
        intro: intro.to_owned(),
        figures,
        tables,
    }
}

/// 10.2.1.1: Access to cardholder data: who received masked values or touched sensitive tables.
pub(super) fn cardholder_access(r: &Report) -> Section {
    let a = &r.access_to_cardholder_data;
    section(
        r,
        "10.2.1.1",
        "Access to cardholder data",
        "Statements whose results had values masked (outcome records, detail.masked), results \
         that went out unmasked to exempt identities (detail.unmasked_for), and statements \
         reading or writing tables named by the [[mask]] column patterns (statement records, \
         detail.tables), per identity.",
        vec![
            fig(
                "sensitive table patterns",
                if a.sensitive_table_patterns.is_empty() {
                    "-".to_owned()
                } else {
                    a.sensitive_table_patterns.join(", ")
                },
            ),
            fig("identities", a.identities.len()),
            fig("sessions", a.sessions),
            fig(
                "statements with masked values",
                a.statements_with_masked_values,
            ),
            fig("values masked", a.masked_values),
            fig(
                "statements touching sensitive tables",
                a.statements_touching_sensitive_tables,
            ),
        ],
        vec![
            table(
                "Per identity",
                [
                    "subject",
                    "sessions",
                    "statements with masked values",
                    "values masked",
                    "statements on sensitive tables",
                    "results unmasked (exempt)",
                ],
                a.identities
                    .iter()
                    .map(|i| {
                        [
                            i.subject.clone(),
                            i.sessions.to_string(),
                            i.statements_with_masked_values.to_string(),
                            i.masked_values.to_string(),
                            i.statements_touching_sensitive_tables.to_string(),
                            i.unmasked_results.to_string(),
                        ]
                    })
                    .collect(),
            ),
            table(
                "Masked values per result column and reason",
                ["column", "reasons"],
                a.masked_by_column
                    .iter()
                    .map(|(c, m)| [c.clone(), reasons(m)])
                    .collect(),
            ),
            map_table(
                "Statements per sensitive table",
                "table",
                "statements",
                &a.statements_by_table,
            ),
        ],
    )
}

/// 10.2.1.2: Administrative actions: gateway administration, administrative SQL, interactive sessions.
pub(super) fn administrative_actions(r: &Report) -> Section {
    let ad = &r.administrative_actions;
    section(
        r,
        "10.2.1.2",
        "Administrative actions",
        "Gateway administration recorded in the chain (approval, grant, admin and decision \
         records), administrative SQL (statement kinds listed below) and interactive sessions \
         (application_name of an interactive tool); interactive sessions of service identities \
         (identity.service_groups: agents, CI jobs, bots) need attention (8.6.1), with the \
         access grant that admitted them if any.",
        vec![
            fig(
                "administrative statement kinds",
                ad.admin_statement_kinds.join(", "),
            ),
            fig("administrative statements", ad.admin_statements.total),
            fig(
                "gateway administration records",
                ad.gateway_admin_records.total,
            ),
            fig(
                "interactive applications",
                ad.interactive_applications.join(", "),
            ),
            fig("interactive sessions", ad.interactive_sessions.total),
            fig(
                "service groups (identity.service_groups)",
                ad.service_groups.join(", "),
            ),
            fig(
                "interactive sessions of service identities",
                ad.service_identity_interactive_sessions.total,
            ),
        ],
        vec![
            map_table(
                "Gateway administration records per kind:event",
                "kind:event",
                "records",
                &ad.gateway_admin_events,
            ),
            capped_table(
                "Gateway administration records",
                [
                    "seq",
                    "time",
                    "kind",
                    "event",
                    "subject",
                    "connection",
                    "rule",
                    "outcome",
                    "about",
                ],
                &ad.gateway_admin_records,
                |e| {
                    [
                        e.seq.to_string(),
                        e.time.clone(),
                        e.kind.clone(),
                        opt(&e.event),
                        opt(&e.subject),
                        opt(&e.connection),
                        opt(&e.rule),
                        opt(&e.outcome),
                        opt(&e.about),
                    ]
                },
            ),
            map_table(
                "Administrative statements per kind",
                "kind",
                "statements",
                &ad.admin_statements_by_kind,
            ),
            capped_table(
                "Administrative statements",
                STATEMENT_HEADERS,
                &ad.admin_statements,
                statement_row,
            ),
            capped_table(
                "Interactive sessions",
                SESSION_HEADERS,
                &ad.interactive_sessions,
                session_row,
            ),
            capped_table(
                "Interactive sessions of service identities",
                SESSION_HEADERS,
                &ad.service_identity_interactive_sessions,
                session_row,
            ),
            map_table(
                "Sessions per application_name",
                "application",
                "sessions",
                &ad.sessions_by_application,
            ),
            map_table(
                "Sessions per protocol",
                "protocol",
                "sessions",
                &ad.sessions_by_protocol,
            ),
            map_table(
                "Statements per protocol",
                "protocol",
                "statements",
                &ad.statements_by_protocol,
            ),
        ],
    )
}

/// 10.2.1.3: Access to audit logs.
pub(super) fn audit_log_access(r: &Report) -> Section {
    let la = &r.audit_log_access;
    section(
        r,
        "10.2.1.3",
        "Access to audit logs",
        &la.note,
        vec![
            fig("reads of the audit logs", la.reads),
            fig("identities", la.by_subject.len()),
        ],
        vec![
            map_table("Reads per identity", "subject", "reads", &la.by_subject),
            map_table("Reads per channel:what", "via:what", "reads", &la.by_kind),
            capped_table(
                "Reads of the audit logs",
                ["seq", "time", "subject", "via", "what", "target", "result"],
                &la.list,
                |a| {
                    [
                        a.seq.to_string(),
                        a.time.clone(),
                        opt(&a.subject),
                        a.via.clone(),
                        a.what.clone(),
                        opt(&a.target),
                        opt(&a.result),
                    ]
                },
            ),
        ],
    )
}

/// 10.2.1.4: Invalid logical access attempts.
pub(super) fn invalid_access_attempts(r: &Report) -> Section {
    let inv = &r.invalid_access_attempts;
    section(
        r,
        "10.2.1.4",
        "Invalid logical access attempts",
        "Refused connections (login_failed records): bad or expired tokens, unknown issuers, \
         identities not allowed on the connection, TLS required, refused parameters, upstream \
         unavailable.",
        vec![fig("failed logins", inv.login_failed)],
        vec![
            map_table("Per reason", "reason", "attempts", &inv.by_reason),
            map_table("Per subject", "subject", "attempts", &inv.by_subject),
            map_table(
                "Per client address",
                "client address",
                "attempts",
                &inv.by_client_address,
            ),
            capped_table(
                "Failed logins",
                [
                    "seq",
                    "time",
                    "reason",
                    "subject",
                    "client",
                    "connection",
                    "sqlstate",
                ],
                &inv.records,
                |l| {
                    [
                        l.seq.to_string(),
                        l.time.clone(),
                        l.reason.clone(),
                        opt(&l.subject),
                        opt(&l.client_addr),
                        opt(&l.connection),
                        opt(&l.sqlstate),
                    ]
                },
            ),
        ],
    )
}

/// 10.2.2: Audit record content: the fields required per kind.
pub(super) fn record_completeness(r: &Report) -> Section {
    let c = &r.record_completeness;
    section(
        r,
        "10.2.2",
        "Audit record content",
        "Each record is checked for the fields required for its kind: user identification \
         (subject), date and time, origination (client address), affected component \
         (connection), success or failure (outcome) and the session.",
        vec![
            fig("records checked", c.records_checked),
            fig("complete records", c.complete_records),
            fig("incomplete records", c.incomplete.total),
        ],
        vec![
            table(
                "Per field",
                ["field", "required for", "applicable", "present", "%"],
                c.fields
                    .iter()
                    .map(|f| {
                        [
                            f.field.clone(),
                            c.rules.get(&f.field).cloned().unwrap_or_default(),
                            f.applicable.to_string(),
                            f.present.to_string(),
                            f.percent.to_string(),
                        ]
                    })
                    .collect(),
            ),
            capped_table(
                "Incomplete records",
                ["seq", "time", "kind", "missing"],
                &c.incomplete,
                |i| {
                    [
                        i.seq.to_string(),
                        i.time.clone(),
                        i.kind.clone(),
                        i.missing.join(", "),
                    ]
                },
            ),
        ],
    )
}

/// 3.4.1: PAN masked when displayed.
pub(super) fn masking(r: &Report) -> Section {
    let m = &r.masking;
    section(
        r,
        "3.4.1",
        "PAN masked when displayed",
        "Values masked on their way to clients, from the outcome records (detail.masked), and \
         results that went out unmasked to identities in a rule's exempt_groups \
         (detail.unmasked_for).",
        vec![
            fig("[[mask]] rules", m.rules.len()),
            fig("results with masked values", m.outcome_records_with_masking),
            fig("values masked", m.masked_values),
            fig("values masked per reason", reasons(&m.by_reason)),
            fig(
                "results unmasked for exempt identities",
                m.exempt_statements,
            ),
        ],
        vec![
            table(
                "Configured [[mask]] rules",
                [
                    "connections",
                    "columns",
                    "detectors",
                    "style",
                    "exempt groups",
                ],
                m.rules
                    .iter()
                    .map(|x| {
                        [
                            if x.connections.is_empty() {
                                "(all)".to_owned()
                            } else {
                                x.connections.join(", ")
                            },
                            x.columns.join(", "),
                            x.detectors.join(", "),
                            x.style.clone(),
                            x.exempt_groups.join(", "),
                        ]
                    })
                    .collect(),
            ),
            table(
                "Masked values per column",
                [
                    "column",
                    "column rule",
                    "verification code",
                    "pan detector",
                    "total",
                ],
                m.by_column
                    .iter()
                    .map(|(col, rs)| {
                        let get = |k: &str| rs.get(k).copied().unwrap_or(0);
                        [
                            col.clone(),
                            get("column").to_string(),
                            get("verification_code").to_string(),
                            get("pan").to_string(),
                            rs.values().sum::<u64>().to_string(),
                        ]
                    })
                    .collect(),
            ),
            table(
                "Exemptions used",
                ["subject", "groups", "rules", "results"],
                m.exemptions
                    .iter()
                    .map(|x| {
                        [
                            x.subject.clone(),
                            x.groups.join(", "),
                            x.rules.join(", "),
                            x.statements.to_string(),
                        ]
                    })
                    .collect(),
            ),
        ],
    )
}

/// 3.5.1: PAN unreadable wherever stored.
pub(super) fn pan_scan(r: &Report) -> Section {
    let p = &r.pan_scan;
    section(
        r,
        "3.5.1",
        "PAN unreadable wherever stored",
        "Every record of the period is scanned with the gateway's card-number detector (13-19 \
         digits, brand prefix, Luhn). The numbers themselves are never copied into this report.",
        vec![
            fig("records scanned", p.records_scanned),
            fig("fields scanned", p.fields_scanned.join(", ")),
            fig("bytes scanned", p.bytes_scanned),
            fig("PANs found", p.pans_found),
        ],
        vec![capped_table(
            "Records holding card numbers",
            ["seq", "kind", "fields", "count"],
            &p.records,
            |h| {
                [
                    h.seq.to_string(),
                    h.kind.clone(),
                    h.fields.join(", "),
                    h.count.to_string(),
                ]
            },
        )],
    )
}

/// 7.2 / 8.6.1: Approved access: held statements and grants.
pub(super) fn approved_access(r: &Report) -> Section {
    let (mut figures, mut tables) = requests_tables("Held statements", &r.approvals, false);
    let (gf, gt) = requests_tables("Grants", &r.grants, true);
    figures.extend(gf);
    tables.extend(gt);
    section(
        r,
        "7.2 / 8.6.1",
        "Approved access (held statements and grants)",
        "Statements held for approval (approval records) and time-bound access grants (grant \
         records): who asked, who decided, the reason, and how long the decision took.",
        figures,
        tables,
    )
}

/// 8.2.1: Unique identification.
pub(super) fn identities(r: &Report) -> Section {
    let id = &r.identities;
    section(
        r,
        "8.2.1",
        "Unique identification",
        "Every session is opened by a verified identity (subject and issuer from the token).",
        vec![
            fig("unique subjects", id.unique_subjects),
            fig("sessions", id.sessions),
            fig("sessions without subject", id.sessions_without_subject),
            fig(
                "subjects from several issuers",
                if id.subjects_with_several_issuers.is_empty() {
                    "-".to_owned()
                } else {
                    id.subjects_with_several_issuers.join(", ")
                },
            ),
        ],
        vec![table(
            "Identities",
            [
                "subject",
                "issuers",
                "groups",
                "sessions",
                "statements",
                "client addresses",
                "first seen",
                "last seen",
            ],
            id.list
                .iter()
                .map(|i| {
                    [
                        i.subject.clone(),
                        i.issuers.join(", "),
                        i.groups.join(", "),
                        i.sessions.to_string(),
                        i.statements.to_string(),
                        i.client_addresses.join(", "),
                        i.first_seen.clone(),
                        i.last_seen.clone(),
                    ]
                })
                .collect(),
        )],
    )
}

/// 10.3: Audit log integrity.
pub(super) fn integrity(r: &Report) -> Section {
    let i = &r.integrity;
    section(
        r,
        "10.3",
        "Audit log integrity",
        "The whole store is verified like `gatehouse audit verify`: every record's hash, the \
         links between records, and every Ed25519-signed checkpoint.",
        vec![
            fig("result", &i.result),
            fig("records verified", i.records),
            fig("first seq", opt_num(i.first_seq)),
            fig("head seq", opt_num(i.head_seq)),
            fig("head hash", opt(&i.head_hash)),
            fig("signed checkpoints", i.checkpoints),
            fig(
                "last checkpoint",
                i.last_checkpoint.as_ref().map_or_else(
                    || "-".to_owned(),
                    |c| {
                        format!(
                            "seq {} at {}, hash {}, key {}",
                            c.seq, c.time, c.hash, c.key_id
                        )
                    },
                ),
            ),
            fig(
                "records after the last checkpoint",
                i.records_after_last_checkpoint,
            ),
        ],
        Vec::new(),
    )
}

/// 10.5.1: Audit log retention.
pub(super) fn retention(r: &Report) -> Section {
    let ret = &r.retention;
    section(
        r,
        "10.5.1",
        "Audit log retention",
        &ret.note,
        vec![
            fig("audit.retention_days", ret.retention_days),
            fig("at least 12 months", ret.at_least_12_months),
            fig("oldest record seq", opt_num(ret.oldest_record_seq)),
            fig("oldest record time", opt(&ret.oldest_record_time)),
            fig(
                "oldest record age (days)",
                opt_num(ret.oldest_record_age_days),
            ),
            fig("newest record time", opt(&ret.newest_record_time)),
            fig("store covers the period start", ret.covers_period_start),
            fig("retention purges in the period", ret.purges),
        ],
        Vec::new(),
    )
}

/// 10.7.2: Failures of critical security controls.
pub(super) fn control_failures(r: &Report) -> Section {
    let cf = &r.control_failures;
    section(
        r,
        "10.7.2",
        "Failures of critical security controls",
        &cf.note,
        vec![
            fig("fail-closed refusals (58000)", cf.fail_closed_refusals),
            fig(
                "audit control alerts",
                cf.audit_control_alerts.values().sum::<u64>(),
            ),
            fig("webhook failures", cf.webhook_failures),
            fig("statements blocked by rules", cf.blocked_statements),
            fig(
                "held statements denied or expired",
                cf.held_statements_refused,
            ),
            fig(
                "statements cut short by the session ending",
                cf.statements_cut_short,
            ),
            fig("protocol errors", cf.protocol_errors),
        ],
        vec![
            capped_table(
                "Fail-closed refusals",
                [
                    "seq",
                    "time",
                    "kind",
                    "subject",
                    "connection",
                    "sqlstate",
                    "statement seq",
                ],
                &cf.fail_closed,
                |f| {
                    [
                        f.seq.to_string(),
                        f.time.clone(),
                        f.kind.clone(),
                        opt(&f.subject),
                        opt(&f.connection),
                        opt(&f.sqlstate),
                        opt_num(f.statement_seq),
                    ]
                },
            ),
            map_table(
                "Blocked per rule",
                "rule",
                "statements",
                &cf.blocked_by_rule,
            ),
            capped_table(
                "Blocked statements",
                STATEMENT_HEADERS,
                &cf.blocked,
                statement_row,
            ),
            map_table(
                "Session ends per reason",
                "reason",
                "sessions",
                &cf.session_end_reasons,
            ),
            map_table(
                "Audit control alerts per kind",
                "alert",
                "alerts",
                &cf.audit_control_alerts,
            ),
            map_table(
                "Undelivered webhook events per [[notify]]",
                "notify",
                "events",
                &cf.webhook_failures_by_target,
            ),
        ],
    )
}

fn requests_tables(name: &str, r: &Requests, grant: bool) -> (Vec<(String, String)>, Vec<Table>) {
    let l = |label: &str| format!("{name}: {label}");
    let mut figures = vec![
        fig(&l("records"), r.records),
        fig(&l("requests"), r.requests),
        fig(&l("approved"), r.approved),
        fig(&l("denied"), r.denied),
        fig(&l("expired"), r.expired),
    ];
    if grant {
        figures.push(fig(&l("revoked"), r.revoked));
        figures.push(fig(&l("sessions admitted (used)"), r.used));
    } else {
        figures.push(fig(&l("abandoned"), r.abandoned));
    }
    figures.extend([
        fig(&l("pending at the end of the period"), r.pending),
        fig(&l("decided by their own requester"), r.self_decisions),
        fig(
            &l("latency requested \u{2192} decided (s): min / median / max"),
            r.latency.as_ref().map_or_else(
                || "-".to_owned(),
                |x| {
                    format!(
                        "{} / {} / {} ({} decisions)",
                        x.min_seconds, x.median_seconds, x.max_seconds, x.decisions
                    )
                },
            ),
        ),
    ]);
    let tables = vec![
        map_table(
            &format!("{name}: records per event"),
            "event",
            "records",
            &r.events,
        ),
        map_table(
            &format!("{name}: requests per requester"),
            "requester",
            "requests",
            &r.requesters,
        ),
        map_table(
            &format!("{name}: approvals and decisions per approver"),
            "approver",
            "approvals/decisions",
            &r.deciders,
        ),
        capped_table(
            &format!("{name}: requests"),
            [
                "id",
                "requested at",
                "requester",
                "connection",
                "rule / statement",
                "status",
                "approvers",
                "decided by",
                "decided at",
                "reason",
                "latency (s)",
            ],
            &r.list,
            |q| {
                let what = match (&q.rule, &q.statement) {
                    (Some(rule), Some(st)) => format!("{rule}: {st}"),
                    (a, b) => opt(&a.clone().or(b.clone())),
                };
                let mut reason: Vec<String> = Vec::new();
                if let Some(a) = &q.request_reason {
                    reason.push(format!("request: {a}"));
                }
                if let Some(b) = &q.decision_reason {
                    reason.push(format!("decision: {b}"));
                }
                if let Some(by) = &q.revoked_by {
                    reason.push(format!(
                        "revoked by {by}: {}",
                        q.revoke_reason.as_deref().unwrap_or("no reason given")
                    ));
                }
                let reason = if reason.is_empty() {
                    "-".to_owned()
                } else {
                    reason.join("; ")
                };
                [
                    q.id.clone(),
                    opt(&q.requested_at),
                    opt(&q.requester),
                    opt(&q.connection),
                    what,
                    q.status.clone(),
                    if q.approvers.is_empty() {
                        "-".to_owned()
                    } else {
                        q.approvers.join(", ")
                    },
                    opt(&q.decided_by),
                    opt(&q.decided_at),
                    reason,
                    opt_num(q.latency_seconds.map(round3)),
                ]
            },
        ),
    ];
    (figures, tables)
}

const SESSION_HEADERS: [&str; 7] = [
    "session",
    "started",
    "subject",
    "application",
    "client",
    "connection",
    "grant",
];

fn session_row(s: &SessionRef) -> [String; 7] {
    [
        s.session_id.clone(),
        s.time.clone(),
        opt(&s.subject),
        opt(&s.application_name),
        opt(&s.client_addr),
        opt(&s.connection),
        opt(&s.grant),
    ]
}

fn statement_row(s: &StatementRef) -> [String; 8] {
    [
        s.seq.to_string(),
        s.time.clone(),
        opt(&s.subject),
        opt(&s.connection),
        s.kinds.join(", "),
        opt(&s.rule),
        opt(&s.outcome),
        s.statement.clone(),
    ]
}

const STATEMENT_HEADERS: [&str; 8] = [
    "seq",
    "time",
    "subject",
    "connection",
    "kinds",
    "rule",
    "outcome",
    "statement",
];
