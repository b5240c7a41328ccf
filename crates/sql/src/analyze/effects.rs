//! What a statement does beyond the tables it reads and writes: the kinds its subcommands and
//! function calls amount to, the roles it changes, the settings it leaves for later sessions.
//!
//! Why: a rule that blocks `drop` must also catch `ALTER TABLE ... DROP COLUMN`, one that
//! blocks `delete` must catch `lo_unlink(...)`, one that blocks `grant` must catch `REVOKE` and
//! `ALTER DEFAULT PRIVILEGES`; and the builtin refusals need to know when a statement changes
//! the gateway's own upstream role, signals other backends or reads other sessions' texts.
//! Each form is listed here once, so that the kinds the README documents are exactly these.

use gatehouse_core::policy::TableRef;
use pg_query::protobuf as pb;
use pg_query::{NodeEnum, NodeRef};

use super::{Class, LIST_QUOTE_SETTINGS, Walker, render_set_args, strings};

/// `ALTER TABLE` subcommands that discard something (data, a constraint, a default).
const DROPPING_SUBCOMMANDS: &[pb::AlterTableType] = &[
    pb::AlterTableType::AtDropColumn,
    pb::AlterTableType::AtDropConstraint,
    pb::AlterTableType::AtDropNotNull,
    pb::AlterTableType::AtDropExpression,
    pb::AlterTableType::AtDropIdentity,
    pb::AlterTableType::AtDropInherit,
    pb::AlterTableType::AtDropOf,
    pb::AlterTableType::AtDropCluster,
    pb::AlterTableType::AtDropOids,
    // A column type change rewrites every value (`USING` can discard any of them).
    pb::AlterTableType::AtAlterColumnType,
];

/// Functions that signal server processes (all sessions share the gateway's upstream role).
const SIGNAL_FUNCTIONS: &[&str] = &[
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_signal_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    "pg_log_backend_memory_contexts",
];

/// Functions that return other sessions' statement texts.
const ACTIVITY_FUNCTIONS: &[&str] = &[
    "pg_stat_get_activity",
    "pg_stat_get_backend_activity",
    "pg_stat_statements",
];

/// Relations that show other sessions' statement texts (in `pg_catalog`, or an extension's
/// anywhere).
const ACTIVITY_RELATIONS: &[&str] = &["pg_stat_activity"];
const ACTIVITY_RELATIONS_ANY_SCHEMA: &[&str] = &["pg_stat_statements"];

/// Large-object functions and the data kind each amounts to.
const LARGE_OBJECT_WRITES: &[(&str, &str)] = &[
    ("lo_unlink", "delete"),
    ("lo_truncate", "truncate"),
    ("lo_truncate64", "truncate"),
    ("lo_put", "update"),
    ("lowrite", "update"),
    ("lo_from_bytea", "insert"),
    ("lo_create", "insert"),
    ("lo_creat", "insert"),
];

fn role_name(r: &pb::RoleSpec) -> Option<String> {
    use pb::RoleSpecType as T;
    match T::try_from(r.roletype) {
        Ok(T::RolespecCstring) => Some(r.rolename.clone()),
        Ok(T::RolespecCurrentUser) => Some("CURRENT_USER".to_owned()),
        Ok(T::RolespecSessionUser) => Some("SESSION_USER".to_owned()),
        Ok(T::RolespecCurrentRole) => Some("CURRENT_ROLE".to_owned()),
        // PUBLIC is every role, the gateway's own included.
        Ok(T::RolespecPublic) => Some("ALL".to_owned()),
        _ => Some("ALL".to_owned()),
    }
}

fn role_names(list: &[pb::Node]) -> impl Iterator<Item = String> + '_ {
    list.iter().filter_map(|n| match &n.node {
        Some(NodeEnum::RoleSpec(r)) => role_name(r),
        Some(NodeEnum::String(s)) => Some(s.sval.clone()),
        _ => None,
    })
}

/// Whether a relation shows other sessions' statement texts.
pub(super) fn is_activity_relation(t: &TableRef) -> bool {
    let catalog = t.schema.as_deref().is_none_or(|s| s == "pg_catalog");
    (catalog && ACTIVITY_RELATIONS.contains(&t.name.as_str()))
        || ACTIVITY_RELATIONS_ANY_SCHEMA.contains(&t.name.as_str())
}

impl Walker<'_> {
    /// The effects of `node` itself (its children are walked as usual).
    pub(super) fn effects(&mut self, node: NodeRef<'_>) {
        match node {
            NodeRef::AlterTableStmt(s) => {
                for c in &s.cmds {
                    let Some(NodeEnum::AlterTableCmd(cmd)) = &c.node else {
                        continue;
                    };
                    let sub = pb::AlterTableType::try_from(cmd.subtype).ok();
                    let drop_default =
                        sub == Some(pb::AlterTableType::AtColumnDefault) && cmd.def.is_none();
                    if sub == Some(pb::AlterTableType::AtAlterColumnType) {
                        self.note_kind("alter_column_type", Class::Ddl);
                    }
                    if drop_default || sub.is_some_and(|t| DROPPING_SUBCOMMANDS.contains(&t)) {
                        self.note_kind("drop", Class::Ddl);
                    }
                    if sub == Some(pb::AlterTableType::AtChangeOwner) {
                        // The new owner holds every privilege on the object.
                        self.add_kind("grant");
                    }
                }
            }
            NodeRef::AlterDomainStmt(s) => {
                // 'X': DROP CONSTRAINT, 'N': DROP NOT NULL, 'T' without a value: DROP DEFAULT.
                let dropping = matches!(s.subtype.as_str(), "X" | "N")
                    || (s.subtype == "T" && s.def.is_none());
                if dropping {
                    self.note_kind("drop", Class::Ddl);
                }
            }
            NodeRef::AlterExtensionContentsStmt(s) if s.action < 0 => {
                self.note_kind("drop", Class::Ddl);
            }
            NodeRef::GrantStmt(_) | NodeRef::AlterDefaultPrivilegesStmt(_) => {
                // REVOKE and default privileges are privilege changes as much as GRANT.
                self.add_kind("grant");
            }
            NodeRef::AlterOwnerStmt(_) => self.add_kind("grant"),
            NodeRef::GrantRoleStmt(s) => {
                self.add_kind("grant");
                let roles: Vec<String> = role_names(&s.grantee_roles).collect();
                self.roles_changed(roles);
            }
            NodeRef::AlterRoleStmt(s) => {
                let mut roles: Vec<String> =
                    s.role.as_ref().and_then(role_name).into_iter().collect();
                // ALTER GROUP g ADD/DROP USER u: u's memberships change too.
                for o in &s.options {
                    if let Some(NodeEnum::DefElem(d)) = &o.node
                        && d.defname == "rolemembers"
                        && let Some(NodeEnum::List(l)) =
                            d.arg.as_deref().and_then(|a| a.node.as_ref())
                    {
                        roles.extend(role_names(&l.items));
                    }
                }
                self.roles_changed(roles);
            }
            NodeRef::CreateRoleStmt(s) => {
                // CREATE ROLE r ROLE u / ADMIN u: u becomes a member of r.
                let mut roles = Vec::new();
                for o in &s.options {
                    if let Some(NodeEnum::DefElem(d)) = &o.node
                        && matches!(d.defname.as_str(), "rolemembers" | "adminmembers")
                        && let Some(NodeEnum::List(l)) =
                            d.arg.as_deref().and_then(|a| a.node.as_ref())
                    {
                        roles.extend(role_names(&l.items));
                    }
                }
                self.roles_changed(roles);
            }
            NodeRef::AlterRoleSetStmt(s) => {
                let role = s
                    .role
                    .as_ref()
                    .and_then(role_name)
                    .unwrap_or_else(|| "ALL".to_owned());
                self.roles_changed(vec![role]);
                self.persistent_setting(s.setstmt.as_ref());
            }
            NodeRef::AlterDatabaseSetStmt(s) => self.persistent_setting(s.setstmt.as_ref()),
            NodeRef::AlterSystemStmt(s) => self.persistent_setting(s.setstmt.as_ref()),
            NodeRef::RenameStmt(s)
                if pb::ObjectType::try_from(s.rename_type) == Ok(pb::ObjectType::ObjectRole) =>
            {
                self.roles_changed(vec![s.subname.clone()]);
            }
            NodeRef::DropRoleStmt(s) => {
                let roles: Vec<String> = role_names(&s.roles).collect();
                self.roles_changed(roles);
            }
            _ => {}
        }
    }

    /// The effects of a function call (`name` as written, lower case, schema dropped).
    pub(super) fn call_effects(&mut self, name: &str) {
        if SIGNAL_FUNCTIONS.contains(&name) {
            self.add_kind("signal_backend");
        }
        if ACTIVITY_FUNCTIONS.contains(&name) {
            self.add_kind("read_activity");
        }
        if let Some((_, kind)) = LARGE_OBJECT_WRITES.iter().find(|(f, _)| *f == name) {
            self.note_kind(kind, Class::Dml);
        }
    }

    fn roles_changed(&mut self, roles: Vec<String>) {
        if self.deferred == 0 {
            self.info.roles_changed.extend(roles);
        }
    }

    fn persistent_setting(&mut self, s: Option<&pb::VariableSetStmt>) {
        use pb::VariableSetKind as V;
        let Some(s) = s else { return };
        let name = if s.name.is_empty() {
            "all".to_owned()
        } else {
            s.name.to_ascii_lowercase()
        };
        let value = match V::try_from(s.kind) {
            Ok(V::VarSetValue | V::VarSetMulti) => Some(render_set_args(
                &s.args,
                LIST_QUOTE_SETTINGS.contains(&name.as_str()),
            )),
            _ => None,
        };
        if self.deferred == 0 {
            self.info.persistent_settings.push((name, value));
        }
    }
}

/// The function's name without its schema, lower case.
pub(super) fn bare_name(f: &pb::FuncCall) -> Option<String> {
    strings(&f.funcname).last().map(|n| n.to_ascii_lowercase())
}
