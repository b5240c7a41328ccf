//! What a masked identity may do with a masked column, so that no single statement's output
//! lets it rebuild more than masking shows.
//!
//! Masking results alone is not enough: a statement can compute with a card number in a
//! condition, an ordering, a CASE, an OFFSET or a function and return only the answer (a
//! letter per digit, a row count, a position). So the rule here is an allow-list of *uses*,
//! over the analysis of the statement ([`ColumnUses`]), and everything else is refused as
//! [`RULE`]:
//!
//! * **returned** — the value itself goes to a result column and is masked there (`last4`,
//!   `token`, `redact`); a value *computed* from it (a substring, an encoding, a hash) is
//!   masked whole, so returning derivatives reveals nothing — provided every operation on the
//!   way answers every value: a cast to a number, arithmetic or a function that fails on some
//!   values (`fallible`) turns the statement's success into a bit of the value, so it is
//!   refused (only operations known to be total are allowed: text casts, `||`, `substr`,
//!   `md5`, `length`...);
//! * **compared as it is** — `c = $1`, `c IN (...)` (at most one client-chosen value set per
//!   statement: a one-bit answer per row), `a.c = b.c`, GROUP BY / ORDER BY / DISTINCT /
//!   PARTITION BY of the plain column, provided every column compared is masked too (comparing
//!   with an unmasked column, a series or a VALUES list of guesses would answer many guesses
//!   at once);
//! * **its last four characters** — `right(c, 4)`, `c LIKE '%1234'` (not for verification
//!   codes, nor columns masked by `redact`);
//! * **counted** — `count(c)`.
//!
//! Refused besides: computing with it anywhere else (`computed`), copying it into a column
//! that is not masked the same way (`stored`: a renamed CVV, a temporary table), passing it
//! to a function that parks or multiplies values (`set_config`, `setval`, advisory locks,
//! large objects, notifications, set-returning functions), reading large objects and
//! statistics views at all (they hold values earlier statements parked), running SQL held in
//! strings (`query_to_xml`), calling functions the gateway cannot see into, and code it
//! cannot analyse (DO blocks). The decision is protocol-agnostic: an adapter supplies what it
//! knows of the server through [`MaskedData`].

use super::ColumnMask;
use crate::policy::analysis::{ColumnRef, ColumnUses, StatementInfo, TableRef};
use crate::policy::pattern::FunctionPattern;
use crate::policy::{Action, Decision};

/// The builtin rule that refuses what would let a masked identity infer masked values.
pub const RULE: &str = "builtin:masked-inference";

/// What the adapter knows about the session's masks and the server's objects.
pub trait MaskedData {
    /// How a value of `column` is masked for this session, if it is. `column == "*"` stands
    /// for every column of the table (a whole-row reference).
    fn mask(&self, column: &ColumnRef) -> Option<ColumnMask>;

    /// Whether a call of `name` (as written, lower case) may run a function the gateway
    /// cannot see into (not a builtin of the server).
    fn opaque_function(&self, _name: &str) -> bool {
        false
    }

    /// The analyses of the queries of the views `table` may name (an unqualified name: every
    /// view of that name), when the adapter knows them.
    fn views(&self, _table: &TableRef) -> Vec<&StatementInfo> {
        Vec::new()
    }
}

/// Functions that keep, publish or multiply their arguments where a later (or the same)
/// query can read them: refused with a masked value among their arguments.
const PARKING_FUNCTIONS: &[&str] = &[
    "set_config",
    "setval",
    "nextval",
    "pg_advisory_*",
    "pg_try_advisory_*",
    "pg_notify",
    "pg_logical_emit_message",
    "pg_create_restore_point",
    "pg_replication_origin_*",
    "pg_sleep*",
    "lo_*",
    "lowrite",
    "txid_*",
    "pg_stat_*",
    // Set-returning: the number of rows is a function of the value.
    "generate_series",
    "generate_subscripts",
    "unnest",
    "regexp_matches",
    "regexp_split_to_table",
    "string_to_table",
    "json_array_elements*",
    "jsonb_array_elements*",
    "json_each*",
    "jsonb_each*",
    "json_object_keys",
    "jsonb_object_keys",
    "json_populate_recordset",
    "jsonb_populate_recordset",
    "json_to_recordset",
    "jsonb_to_recordset",
    "jsonb_path_query",
    "ts_parse",
    "ts_debug",
];

/// Functions refused to masked identities whatever their arguments: they run SQL given as
/// text (which the gateway never analysed), or read values other statements parked.
const REFUSED_FUNCTIONS: &[&str] = &[
    "query_to_xml*",
    "query_to_xmlschema",
    "cursor_to_xml*",
    "table_to_xml*",
    "schema_to_xml*",
    "database_to_xml*",
    "ts_stat",
    "ts_rewrite",
    "dblink*",
    "lo_*",
    "loread",
    "pg_read_*",
];

/// Catalog relations that hold values of other columns (statistics), refused to masked
/// identities.
const REFUSED_RELATIONS: &[&str] = &[
    "pg_stats",
    "pg_stats_ext",
    "pg_stats_ext_exprs",
    "pg_statistic",
    "pg_statistic_ext_data",
    "pg_largeobject",
    "pg_stat_statements",
];

/// Statement kinds that define or redefine objects (dropping is not among them: it shows
/// nothing).
const DEFINING_KINDS: &[&str] = &[
    "create",
    "alter",
    "alter_column_type",
    "create_trigger",
    "create_rule",
    "create_policy",
];

/// Views followed through views at most this deep.
const MAX_VIEW_DEPTH: usize = 16;

fn matches_any(patterns: &[&str], name: &str) -> bool {
    patterns.iter().any(|p| {
        FunctionPattern::parse(p)
            .map(|fp| fp.matches(name))
            .unwrap_or(true)
    })
}

fn render_table(t: &TableRef) -> String {
    match &t.schema {
        Some(s) => format!("{s}.{}", t.name),
        None => t.name.clone(),
    }
}

fn render(c: &ColumnRef) -> String {
    match &c.table {
        Some(t) => match &t.schema {
            Some(s) => format!("{s}.{}.{}", t.name, c.column),
            None => format!("{}.{}", t.name, c.column),
        },
        None => c.column.clone(),
    }
}

fn refuse(reason: String) -> Decision {
    Decision {
        action: Action::Block,
        rule: Some(RULE.to_owned()),
        reason,
    }
}

/// The refusal of `stmt` for a session whose masks `data` describes, or `None` when the
/// statement uses masked values only in the allowed ways. Call it only for sessions with
/// active masks.
pub fn judge(stmt: &StatementInfo, data: &dyn MaskedData) -> Option<Decision> {
    judge_at(stmt, data, 0)
}

fn judge_at(stmt: &StatementInfo, data: &dyn MaskedData, depth: usize) -> Option<Decision> {
    if stmt.opaque {
        return Some(refuse(format!(
            "{} contains code the gateway cannot analyse, which could read masked columns",
            stmt.kind.to_uppercase()
        )));
    }
    // Definitions are part of what masks rely on: masks name columns, so a renamed or moved
    // relation or column would no longer be masked, and a generated column, expression index,
    // default, constraint, trigger, rule or policy computes with the raw values.
    if DEFINING_KINDS.iter().any(|k| stmt.kinds.contains(*k)) {
        let whole = |t: &TableRef| ColumnRef {
            table: Some(t.clone()),
            column: "*".to_owned(),
        };
        if let Some(t) = stmt
            .tables_written
            .iter()
            .find(|t| data.mask(&whole(t)).is_some())
        {
            return Some(refuse(format!(
                "changes the definition of {}, which has masked columns",
                render_table(t)
            )));
        }
    }
    for f in &stmt.functions {
        if matches_any(REFUSED_FUNCTIONS, f) {
            return Some(refuse(format!(
                "calls {f}, which runs SQL the gateway cannot analyse or reads stored values"
            )));
        }
        if data.opaque_function(f) {
            return Some(refuse(format!(
                "calls {f}, a function whose body the gateway cannot see into"
            )));
        }
    }
    for t in stmt.tables_read.iter().chain(&stmt.tables_written) {
        let catalog = t.schema.as_deref().is_none_or(|s| s == "pg_catalog");
        if catalog && REFUSED_RELATIONS.contains(&t.name.as_str()) {
            return Some(refuse(format!(
                "reads {}, which holds values of other columns",
                t.name
            )));
        }
    }
    if let Some(d) = judge_uses(&stmt.uses, data) {
        return Some(d);
    }
    // Views: their queries run with the statement, under the same constraints.
    for t in &stmt.tables_read {
        for view in data.views(t) {
            if depth >= MAX_VIEW_DEPTH {
                return Some(refuse(format!(
                    "reads view {}, nested deeper than the gateway follows",
                    t.name
                )));
            }
            if let Some(mut d) = judge_at(view, data, depth + 1) {
                d.reason = format!("reads view {}, which {}", t.name, d.reason);
                return Some(d);
            }
        }
    }
    None
}

fn judge_uses(u: &ColumnUses, data: &dyn MaskedData) -> Option<Decision> {
    if let Some(c) = u.computed.iter().find(|c| data.mask(c).is_some()) {
        return Some(refuse(format!(
            "computes with masked column {} (in a condition, ordering, limit or expression); \
             a masked column may only be returned, compared as it is, counted or matched by \
             its last four digits",
            render(c)
        )));
    }
    for (operation, sources) in &u.fallible {
        if let Some(c) = sources.iter().find(|c| data.mask(c).is_some()) {
            return Some(refuse(format!(
                "passes masked column {} through {operation}, which fails on some values: \
                 whether the statement fails would tell a bit of the value",
                render(c)
            )));
        }
    }
    for (target, sources) in &u.stored {
        // A position not known (`*`) may be any column of the target, masked or not.
        let target_mask = (target.column != "*").then(|| data.mask(target)).flatten();
        for s in sources {
            let Some(m) = data.mask(s) else { continue };
            let same = target_mask
                .is_some_and(|t| t.effective_style() == m.effective_style() || t.verification_code);
            if !same {
                return Some(refuse(format!(
                    "copies masked column {} into {}, which is not masked the same way",
                    render(s),
                    render(target)
                )));
            }
        }
    }
    for (name, sources) in &u.calls {
        if matches_any(PARKING_FUNCTIONS, name)
            && let Some(s) = sources.iter().find(|s| data.mask(s).is_some())
        {
            return Some(refuse(format!(
                "passes masked column {} to {name}, which keeps or multiplies the value",
                render(s)
            )));
        }
    }
    for c in &u.last4 {
        if let Some(m) = data.mask(c)
            && (m.verification_code || m.style == super::MaskStyle::Redact)
        {
            return Some(refuse(format!(
                "reads characters of {}, which is fully redacted",
                render(c)
            )));
        }
    }
    let mut guesses = 0usize;
    for cmp in &u.compared {
        let Some(masked) = cmp.columns.iter().find(|c| data.mask(c).is_some()) else {
            continue;
        };
        if let Some(plain) = cmp.columns.iter().find(|c| data.mask(c).is_none()) {
            return Some(refuse(format!(
                "compares masked column {} with {}, which is not masked",
                render(masked),
                render(plain)
            )));
        }
        if cmp.constant {
            guesses += 1;
            if guesses > 1 {
                return Some(refuse(format!(
                    "tests masked column {} against client-chosen values more than once in one \
                     statement",
                    render(masked)
                )));
            }
        }
    }
    None
}

/// Whether `stmt` reads or writes anything masked for the session: the server's errors and
/// notices about it may quote masked values in any shape, so they are withheld.
pub fn touches_masked(stmt: &StatementInfo, data: &dyn MaskedData) -> bool {
    let whole = |t: &TableRef| ColumnRef {
        table: Some(t.clone()),
        column: "*".to_owned(),
    };
    stmt.columns_read.iter().any(|c| data.mask(c).is_some())
        || stmt
            .tables_read
            .iter()
            .chain(&stmt.tables_written)
            .any(|t| data.mask(&whole(t)).is_some())
        || stmt
            .outputs
            .iter()
            .flatten()
            .flat_map(|o| o.sources.iter())
            .any(|c| data.mask(c).is_some())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::masking::MaskStyle;
    use crate::policy::analysis::Compared;

    struct Masks;
    impl MaskedData for Masks {
        fn mask(&self, c: &ColumnRef) -> Option<ColumnMask> {
            let table = c.table.as_ref().map(|t| t.name.as_str());
            match (table, c.column.as_str()) {
                (Some("payments"), "card_number" | "*") => Some(ColumnMask {
                    style: MaskStyle::Last4,
                    verification_code: false,
                    derived: false,
                }),
                (_, "cvv") => Some(ColumnMask {
                    style: MaskStyle::Redact,
                    verification_code: true,
                    derived: false,
                }),
                _ => None,
            }
        }
    }

    fn col(table: &str, column: &str) -> ColumnRef {
        ColumnRef {
            table: Some(TableRef {
                schema: Some("public".into()),
                name: table.into(),
            }),
            column: column.into(),
        }
    }

    fn with(u: ColumnUses) -> StatementInfo {
        StatementInfo {
            kind: "select".into(),
            uses: u,
            ..StatementInfo::default()
        }
    }

    fn set(c: &[ColumnRef]) -> BTreeSet<ColumnRef> {
        c.iter().cloned().collect()
    }

    #[test]
    fn computing_with_a_masked_column_is_refused() {
        let s = with(ColumnUses {
            computed: set(&[col("payments", "card_number")]),
            ..ColumnUses::default()
        });
        let d = judge(&s, &Masks).map(|d| d.rule);
        assert_eq!(d, Some(Some(RULE.to_owned())));
        let s = with(ColumnUses {
            computed: set(&[col("payments", "amount")]),
            ..ColumnUses::default()
        });
        assert!(judge(&s, &Masks).is_none());
    }

    #[test]
    fn comparisons_need_masked_sides_and_one_guess() {
        let card = col("payments", "card_number");
        let cmp = |cols: &[ColumnRef], constant: bool, position: i32| Compared {
            columns: set(cols),
            constant,
            position,
        };
        let one = with(ColumnUses {
            compared: vec![cmp(std::slice::from_ref(&card), true, 1)],
            ..ColumnUses::default()
        });
        assert!(judge(&one, &Masks).is_none());
        let two = with(ColumnUses {
            compared: vec![
                cmp(std::slice::from_ref(&card), true, 1),
                cmp(std::slice::from_ref(&card), true, 2),
            ],
            ..ColumnUses::default()
        });
        assert!(judge(&two, &Masks).is_some());
        let joined = with(ColumnUses {
            compared: vec![cmp(&[card.clone(), col("payments", "*")], false, 1)],
            ..ColumnUses::default()
        });
        assert!(judge(&joined, &Masks).is_none());
        let guesses = with(ColumnUses {
            compared: vec![cmp(&[card, col("guesses", "v")], false, 1)],
            ..ColumnUses::default()
        });
        assert!(judge(&guesses, &Masks).is_some());
    }

    #[test]
    fn copies_parking_and_last4_of_codes_are_refused() {
        let card = col("payments", "card_number");
        let cvv = col("payments", "cvv");
        let stored = with(ColumnUses {
            stored: vec![(col("t", "sec"), set(std::slice::from_ref(&cvv)))],
            ..ColumnUses::default()
        });
        assert!(judge(&stored, &Masks).is_some());
        let same = with(ColumnUses {
            stored: vec![(card.clone(), set(std::slice::from_ref(&card)))],
            ..ColumnUses::default()
        });
        assert!(judge(&same, &Masks).is_none());
        let parked = with(ColumnUses {
            calls: vec![("set_config".into(), set(std::slice::from_ref(&card)))],
            ..ColumnUses::default()
        });
        assert!(judge(&parked, &Masks).is_some());
        let fails = with(ColumnUses {
            fallible: vec![("a cast to int4".into(), set(std::slice::from_ref(&card)))],
            ..ColumnUses::default()
        });
        assert!(judge(&fails, &Masks).is_some());
        let plain_fails = with(ColumnUses {
            fallible: vec![("a cast to int4".into(), set(&[col("payments", "id")]))],
            ..ColumnUses::default()
        });
        assert!(judge(&plain_fails, &Masks).is_none());
        let pure = with(ColumnUses {
            calls: vec![("substr".into(), set(std::slice::from_ref(&card)))],
            ..ColumnUses::default()
        });
        assert!(judge(&pure, &Masks).is_none());
        let last4 = with(ColumnUses {
            last4: set(&[card]),
            ..ColumnUses::default()
        });
        assert!(judge(&last4, &Masks).is_none());
        let code = with(ColumnUses {
            last4: set(&[cvv]),
            ..ColumnUses::default()
        });
        assert!(judge(&code, &Masks).is_some());
    }

    #[test]
    fn sql_in_strings_statistics_and_opaque_code_are_refused() {
        let mut s = with(ColumnUses::default());
        s.functions.insert("query_to_xml".into());
        assert!(judge(&s, &Masks).is_some());
        let mut s = with(ColumnUses::default());
        s.tables_read.insert(TableRef {
            schema: Some("pg_catalog".into()),
            name: "pg_stats".into(),
        });
        assert!(judge(&s, &Masks).is_some());
        let mut s = with(ColumnUses::default());
        s.opaque = true;
        assert!(judge(&s, &Masks).is_some());
        assert!(judge(&with(ColumnUses::default()), &Masks).is_none());
    }
}
