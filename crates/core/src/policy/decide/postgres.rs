//! PostgreSQL's builtin refusals, decided before any rule.
//!
//! Whatever the rules say (named `builtin:...`):
//! - `builtin:copy-program`: `COPY ... TO/FROM PROGRAM`;
//! - `builtin:copy-file`: `COPY ... TO/FROM 'file'` (server-side file);
//! - `builtin:file-access`: any call of a server-side file function (`pg_read_file`,
//!   `pg_read_binary_file`, `pg_ls_dir`, `pg_stat_file`, `lo_import`, `lo_export`, ...), bare or
//!   schema-qualified;
//! - `builtin:standard-conforming-strings`, `builtin:backslash-quote`,
//!   `builtin:client-encoding`, `builtin:set-config-unknown`: settings that change how the
//!   server reads text, by SET, `set_config`, `ALTER ... SET` (judged in [`crate::policy::settings`],
//!   which startup parameters use too);
//! - `builtin:upstream-role`, `builtin:signal-backend`, `builtin:session-activity`: changing
//!   the gateway's own upstream role, signalling backends, reading other sessions' statement
//!   texts — unless an `allow` rule *with `groups`* lists `alter_upstream_role`,
//!   `signal_backend` / `read_activity`;
//! - `builtin:replication` (MySQL): binary-log and replication statements, unless an `allow`
//!   rule with `groups` lists `replication`;
//! - `builtin:sql-mode` (MySQL): a `sql_mode` that changes how strings and identifiers are
//!   read (judged in [`crate::policy::settings`]);
//! - `builtin:set-role` / `builtin:set-session-authorization`: `SET ROLE`, `RESET ROLE`,
//!   `SET SESSION AUTHORIZATION`, unless an `allow` rule that applies to the identity and the
//!   statement lists `set_role` / `set_session_authorization` in `statements` explicitly;
//! - `builtin:opaque-code`: code the gateway cannot analyse (DO, function/procedure/trigger/rule
//!   bodies), unless an `allow` rule that applies lists its kind (`do`, `create_function`,
//!   `create_trigger`, `create_rule`, ...) explicitly — umbrella kinds (`ddl`) and rules without
//!   criteria do not count.

use super::*;

/// Server-side file functions: refused whatever the rules (bare or qualified calls).
const FILE_FUNCTIONS: &[&str] = &[
    "pg_read_file",
    "pg_read_binary_file",
    "pg_stat_file",
    "pg_ls_*",
    "lo_import",
    "lo_export",
    // adminpack
    "pg_file_write",
    "pg_file_rename",
    "pg_file_unlink",
    "pg_file_sync",
    "pg_logdir_ls",
    // MySQL: reads a server-side file into a value.
    "load_file",
];

/// Kinds that are refused whatever the rules say, unless an allow rule for named groups
/// lists the kind: the rule, and what the statement does.
const GUARDED_KINDS: &[(&str, &str, &str)] = &[
    (
        "alter_upstream_role",
        "builtin:upstream-role",
        "changes the role the gateway logs in upstream as (password, name, validity, \
         membership, settings): every identity uses it",
    ),
    (
        "signal_backend",
        "builtin:signal-backend",
        "signals server processes (other sessions share the gateway's upstream role); a \
         session cancels its own work with a cancel request",
    ),
    (
        "read_activity",
        "builtin:session-activity",
        "reads other sessions' statement texts (pg_stat_activity and similar)",
    ),
    (
        "read_credentials",
        "builtin:upstream-credential",
        "reads the server accounts' password hashes (the gateway's own account is among them)",
    ),
    (
        "replication",
        "builtin:replication",
        "reads the binary log or controls replication (MySQL: SHOW BINLOG EVENTS, CHANGE \
         MASTER, START/STOP REPLICA, PURGE BINARY LOGS): the log holds every session's data",
    ),
];

impl Policy {
    /// The builtin refusal of `f`, if any (`allow` rules that list an opaque kind lift
    /// `builtin:opaque-code`).
    pub(super) fn builtin(
        &self,
        connection: &str,
        groups: &[String],
        f: &Facts<'_>,
    ) -> Option<Decision> {
        let s = f.stmt;
        if s.copy_program {
            let dir = if f.has("copy_from") {
                "COPY FROM PROGRAM"
            } else if f.has("copy_to") {
                "COPY TO PROGRAM"
            } else {
                "COPY ... PROGRAM"
            };
            return Some(block("builtin:copy-program", dir));
        }
        if s.copy_file {
            let dir = if f.has("copy_from") {
                "COPY FROM a server-side file"
            } else if f.has("copy_to") {
                "COPY TO a server-side file"
            } else {
                "COPY with a server-side file"
            };
            return Some(block("builtin:copy-file", dir));
        }
        for call in &s.functions {
            let hit = FILE_FUNCTIONS.iter().any(|p| {
                FunctionPattern::parse(p)
                    .map(|fp| fp.matches(call))
                    .unwrap_or(true)
            });
            if hit {
                return Some(block(
                    "builtin:file-access",
                    format!("calls {call} (server-side file access)"),
                ));
            }
        }
        // set_config(name, value, ...) is SET by another name.
        // A name that is not a constant cannot be judged here (pg_dump itself sets
        // `restrict_nonsystem_relation_kind` that way); the server's ParameterStatus keeps
        // `standard_conforming_strings` in sync for the analyser regardless.
        for (name, value) in &s.config_calls {
            let Some(name) = name else {
                if let Some(d) = settings::unknown_name_refusal(known(value)) {
                    return Some(d);
                }
                continue;
            };
            if let Some(d) = setting_refusal(name, known(value), "set_config") {
                return Some(d);
            }
            if name == "role" || name == "session_authorization" {
                return Some(block(
                    "builtin:set-role",
                    format!("set_config('{name}', ...) changes the role"),
                ));
            }
        }
        if let Some((name, value)) = &s.set_setting {
            let value = match value {
                Some(v) => SettingValue::Known(v.as_str()),
                None => SettingValue::Default,
            };
            if let Some(d) = setting_refusal(name, value, "SET") {
                return Some(d);
            }
        }
        // Defaults for later sessions (ALTER ROLE/DATABASE ... SET): the gateway's next
        // sessions would start in that state.
        for (name, value) in &s.persistent_settings {
            let value = match value {
                Some(v) => SettingValue::Known(v.as_str()),
                None => SettingValue::Default,
            };
            if let Some(d) = setting_refusal(name, value, "ALTER ... SET") {
                return Some(d);
            }
        }
        for (kind, rule, what) in GUARDED_KINDS {
            if f.has(kind) && !self.explicitly_allowed_for_groups(connection, groups, f, kind) {
                return Some(block(
                    rule,
                    format!("{what}; needs an allow rule for named groups listing \"{kind}\""),
                ));
            }
        }
        // Going back to the login role (RESET ROLE, SET ROLE NONE, SET SESSION AUTHORIZATION
        // DEFAULT, DISCARD ALL — which connection pools send) gives no privilege: only
        // assuming another role needs an explicit allow.
        let back_to_login_role = f.has("reset")
            || f.has("discard")
            || s.set_setting.as_ref().is_some_and(|(name, value)| {
                matches!(name.as_str(), "role" | "session_authorization")
                    && value.as_deref().is_none_or(|v| {
                        let v = v.trim().trim_matches(['\'', '"']).to_ascii_lowercase();
                        v == "none" || v == "default"
                    })
            });
        for (kind, rule, what) in [
            ("set_role", "builtin:set-role", "SET ROLE"),
            (
                "set_session_authorization",
                "builtin:set-session-authorization",
                "SET SESSION AUTHORIZATION",
            ),
        ] {
            if f.has(kind)
                && !back_to_login_role
                && !self.explicitly_allowed(connection, groups, f, &[kind])
            {
                return Some(block(
                    rule,
                    format!("{what} needs an allow rule listing \"{kind}\" for this identity"),
                ));
            }
        }
        if s.opaque {
            let mut needed: Vec<&str> = OPAQUE_KINDS.iter().copied().filter(|k| f.has(k)).collect();
            if needed.is_empty() {
                needed.push(s.kind.as_str());
            }
            if !self.explicitly_allowed(connection, groups, f, &needed) {
                let listed: Vec<String> = needed.iter().map(|k| format!("\"{k}\"")).collect();
                return Some(block(
                    "builtin:opaque-code",
                    format!(
                        "{} contains code the gateway cannot analyse; needs an allow rule listing {} for this identity",
                        render_kind(&s.kind),
                        listed.join(" and ")
                    ),
                ));
            }
        }
        None
    }
}

/// A `set_config` argument: its text when constant.
fn known(v: &Option<String>) -> SettingValue<'_> {
    match v {
        Some(v) => SettingValue::Known(v.as_str()),
        None => SettingValue::Unknown,
    }
}
