//! The policy decision point of the MySQL adapter: every statement is analysed with the
//! MySQL-dialect analyser and judged by the rules, the builtin refusals and the masking
//! inference judge before anything is forwarded.
//!
//! Also here: how a result column is masked from the statement's lineage (the server names
//! the source of plain columns; computed ones, and anything the server names by a derived
//! table or view, take what the analysis says could flow into them — the whole statement's
//! masked columns when it cannot say per column).

use gatehouse_core::config::ParseErrorAction;
use gatehouse_core::masking::inference::{self, MaskedData};
use gatehouse_core::masking::{ColumnMask, SessionMasks};
use gatehouse_core::policy::{Action, ColumnRef, Decision, StatementInfo, TableRef};
use gatehouse_sql::AnalysisCache;
use gatehouse_sql::mysql::MysqlContext;

use crate::messages::ColumnDefinition;
use crate::views::ViewCatalog;

/// Name of the builtin rule that keeps a masked session's warnings and errors to itself.
pub const MASKED_DIAGNOSTICS_RULE: &str = "builtin:masked-diagnostics";

/// The decision for one COM_QUERY (or prepared text), with what the audit needs.
pub(crate) use gatehouse_core::policy::Judgement;

/// Whether a judged text reads or writes masked data (for what the server may quote back).
pub(crate) trait MaskedReads {
    /// Whether the statement reads a masked column's values (its warnings could quote them).
    fn reads_masked_values(&self, data: Masked<'_>) -> bool;
    /// Whether the statement reads or writes anything masked for the session.
    fn touches_masked(&self, data: Masked<'_>) -> bool;
}

impl MaskedReads for Judgement {
    fn reads_masked_values(&self, data: Masked<'_>) -> bool {
        data.masks.is_active()
            && self.statements.iter().any(|s| {
                s.columns_read
                    .iter()
                    .chain(s.outputs.iter().flatten().flat_map(|o| o.sources.iter()))
                    .chain(s.uses.computed.iter())
                    .any(|c| data.source(c).is_some())
            })
    }

    fn touches_masked(&self, data: Masked<'_>) -> bool {
        data.masks.is_active()
            && self
                .statements
                .iter()
                .any(|s| inference::touches_masked(s, &data))
    }
}

/// The session's masks, with the upstream's views seen through.
#[derive(Clone, Copy)]
pub(crate) struct Masked<'a> {
    pub masks: &'a SessionMasks,
    pub views: Option<&'a ViewCatalog>,
}

impl Masked<'_> {
    /// How a value of `column` is masked: as the table column it names, and as every table
    /// column that can flow into it when it is a view's column (masked whole when the view
    /// computes it, or when the view's definition cannot be read).
    pub fn source(&self, column: &ColumnRef) -> Option<ColumnMask> {
        let own = self.masks.source(column);
        let via_view = self.views.and_then(|v| v.lineage(column)).and_then(|l| {
            let seen = strongest(l.sources.iter().map(|s| {
                self.masks
                    .source(s)
                    .map(|m| if l.derived.contains(s) { m.derive() } else { m })
            }));
            if l.star && self.masks.is_active() {
                // What the view shows is not known: masked whole.
                Some(seen.map_or(UNKNOWN_VIEW_MASK, |m| m.merge(UNKNOWN_VIEW_MASK)))
            } else {
                seen
            }
        });
        match (own, via_view) {
            (Some(a), Some(b)) => Some(a.merge(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The mask of a column whose view cannot be seen into.
const UNKNOWN_VIEW_MASK: ColumnMask = ColumnMask {
    style: gatehouse_core::masking::MaskStyle::Redact,
    verification_code: false,
    derived: true,
};

impl MaskedData for Masked<'_> {
    fn mask(&self, column: &ColumnRef) -> Option<ColumnMask> {
        self.source(column)
    }

    fn opaque_function(&self, name: &str) -> bool {
        !is_builtin_function(name)
    }

    fn views(&self, table: &TableRef) -> Vec<&StatementInfo> {
        self.views
            .map(|v| v.views_named(table).into_iter().map(|v| &v.query).collect())
            .unwrap_or_default()
    }
}

/// The `builtin:masked-inference` refusal of `stmt` for `masks`, if any (for `gatehouse
/// explain` and the session alike).
pub fn masked_inference(masks: &SessionMasks, stmt: &StatementInfo) -> Option<Decision> {
    masked_inference_with(Masked { masks, views: None }, stmt)
}

/// [`masked_inference`] with the upstream's views seen through.
pub(crate) fn masked_inference_with(data: Masked<'_>, stmt: &StatementInfo) -> Option<Decision> {
    if !data.masks.is_active() {
        return None;
    }
    inference::judge(stmt, &data)
}

/// What one session needs to judge a statement.
pub(crate) struct Judge<'a> {
    pub connection: &'a str,
    pub upstream_user: &'a str,
    pub groups: &'a [String],
    pub policy: &'a gatehouse_core::policy::Policy,
    pub masks: &'a SessionMasks,
    pub on_parse_error: ParseErrorAction,
    pub database: Option<String>,
    pub cache: &'a AnalysisCache,
    /// The upstream's views (for a masked session).
    pub views: Option<&'a ViewCatalog>,
}

impl Judge<'_> {
    pub fn judge(&self, sql: &str) -> Judgement {
        let ctx = MysqlContext {
            database: self.database.clone(),
        };
        // A very large text is analysed off the runtime's threads by the analyser's pool
        // either way; the cache keeps repeated texts from being parsed again.
        let statements = match self.cache.analyze_mysql(sql, &ctx) {
            Ok(s) => s,
            Err(e) => {
                let forward = self.on_parse_error == ParseErrorAction::Forward
                    && matches!(e, gatehouse_sql::AnalysisError::Parse { .. })
                    && !self.masks.is_active();
                return Judgement::unparseable(&e, forward);
            }
        };
        let (mut decision, _) = self.policy.decide_all_as(
            self.connection,
            Some(self.upstream_user),
            self.groups,
            &statements,
        );
        if decision.action != Action::Block
            && let Some(d) = statements.iter().find_map(|s| {
                masked_inference_with(
                    Masked {
                        masks: self.masks,
                        views: self.views,
                    },
                    s,
                )
            })
        {
            decision = d;
        }
        Judgement {
            decision,
            statements,
            parse_error: None,
        }
    }
}

/// `SHOW WARNINGS`, `SHOW ERRORS` and `GET DIAGNOSTICS`: they return the messages of the
/// previous statement, which can quote the values it computed with.
pub fn reads_diagnostics(sql: &str) -> bool {
    let words: Vec<String> = sql
        .split(|c: char| c.is_whitespace() || c == '(' || c == ';')
        .filter(|w| !w.is_empty())
        .take(3)
        .map(str::to_ascii_lowercase)
        .collect();
    let w = |i: usize| words.get(i).map(String::as_str);
    matches!(
        (w(0), w(1)),
        (Some("show"), Some("warnings" | "errors" | "count"))
            | (Some("get"), Some("diagnostics" | "current" | "stacked"))
    )
}

/// The refusal of a diagnostics read after a statement that touched masked values.
pub fn diagnostics_refusal() -> Decision {
    Decision {
        action: Action::Block,
        rule: Some(MASKED_DIAGNOSTICS_RULE.to_owned()),
        reason: "the previous statement used masked values, and its warnings or errors could \
                 quote them"
            .to_owned(),
    }
}

/// How the result column at `position` (of `columns`) of the result of `stmt` is masked by the analysis
/// (on top of what its definition names). `None` for `stmt`: not known which statement the
/// result belongs to, so every statement of the string counts.
pub(crate) fn column_mask(
    data: Masked<'_>,
    stmt: Option<&StatementInfo>,
    all: &[StatementInfo],
    position: usize,
    columns: usize,
    column: &ColumnDefinition,
) -> Option<ColumnMask> {
    let masks = data.masks;
    if !masks.is_active() {
        return None;
    }
    let org = String::from_utf8_lossy(&column.org_table).to_ascii_lowercase();
    // A view's column (MySQL names the view, not what it shows): as what its query computes.
    let from_view = data
        .views
        .filter(|v| !v.is_empty() && !org.is_empty())
        .and_then(|v| {
            let named = ColumnRef {
                table: Some(TableRef {
                    schema: Some(String::from_utf8_lossy(&column.schema).to_ascii_lowercase())
                        .filter(|s| !s.is_empty()),
                    name: org.clone(),
                }),
                column: String::from_utf8_lossy(&column.org_name).to_ascii_lowercase(),
            };
            let is_view = named
                .table
                .as_ref()
                .is_some_and(|t| !v.views_named(t).is_empty());
            is_view.then(|| data.source(&named))
        });
    let named_by_server = from_view.is_none() && !org.is_empty() && {
        // The server names a base table of the statement: its definition is the source.
        stmt.into_iter()
            .chain(all.iter())
            .flat_map(|s| s.tables_read.iter().chain(&s.tables_written))
            .any(|t| t.name == org)
    };
    if let Some(s) = stmt
        && let Some(outputs) = &s.outputs
        && !outputs.iter().any(|o| o.star)
        && let Some(o) = outputs.get(position)
        && outputs.len() == columns
    {
        let positional = strongest(o.sources.iter().map(|c| {
            data.source(c)
                .map(|m| if o.derived.contains(c) { m.derive() } else { m })
        }));
        return strongest([positional, from_view.flatten()].into_iter());
    }
    if let Some(view) = from_view {
        return view;
    }
    if named_by_server {
        return None;
    }
    // Computed, or named by something that is not a base table here (a derived table, a
    // view): whatever masked value the statement reads may be in it, whole.
    let scope: Vec<&StatementInfo> = match stmt {
        Some(s) => vec![s],
        None => all.iter().collect(),
    };
    strongest(scope.iter().flat_map(|s| {
        s.columns_read
            .iter()
            .chain(s.outputs.iter().flatten().flat_map(|o| o.sources.iter()))
            .map(|c| data.source(c).map(ColumnMask::derive))
    }))
}

fn strongest(masks: impl Iterator<Item = Option<ColumnMask>>) -> Option<ColumnMask> {
    masks.flatten().reduce(ColumnMask::merge)
}

/// MySQL and MariaDB builtin functions the gateway knows compute only from their arguments.
/// Any other name may be a stored function, which can read masked columns the statement does
/// not name: for a masked session, the inference judge refuses calling it.
fn is_builtin_function(name: &str) -> bool {
    const BUILTINS: &[&str] = &[
        "abs",
        "ascii",
        "avg",
        "bin",
        "bit_count",
        "bit_length",
        "cast",
        "ceil",
        "ceiling",
        "char",
        "char_length",
        "character_length",
        "coalesce",
        "concat",
        "concat_ws",
        "connection_id",
        "conv",
        "convert",
        "count",
        "crc32",
        "curdate",
        "current_date",
        "current_time",
        "current_timestamp",
        "current_user",
        "curtime",
        "database",
        "date",
        "date_add",
        "date_format",
        "date_sub",
        "datediff",
        "day",
        "dayname",
        "dayofmonth",
        "dayofweek",
        "dayofyear",
        "decode",
        "elt",
        "exp",
        "extract",
        "field",
        "find_in_set",
        "floor",
        "format",
        "found_rows",
        "from_base64",
        "from_unixtime",
        "greatest",
        "group_concat",
        "hex",
        "hour",
        "if",
        "ifnull",
        "in",
        "inet_aton",
        "inet_ntoa",
        "instr",
        "isnull",
        "json_array",
        "json_extract",
        "json_object",
        "json_unquote",
        "last_day",
        "last_insert_id",
        "lcase",
        "least",
        "left",
        "length",
        "ln",
        "locate",
        "log",
        "lower",
        "lpad",
        "ltrim",
        "max",
        "md5",
        "mid",
        "min",
        "minute",
        "mod",
        "month",
        "monthname",
        "now",
        "nullif",
        "nvl",
        "oct",
        "octet_length",
        "ord",
        "position",
        "pow",
        "power",
        "quarter",
        "rand",
        "regexp_replace",
        "regexp_substr",
        "repeat",
        "replace",
        "reverse",
        "right",
        "round",
        "row_count",
        "rownum",
        "rpad",
        "rtrim",
        "schema",
        "second",
        "session_user",
        "sha",
        "sha1",
        "sha2",
        "sign",
        "sleep",
        "space",
        "sqrt",
        "std",
        "stddev",
        "str_to_date",
        "strcmp",
        "substr",
        "substring",
        "substring_index",
        "sum",
        "sysdate",
        "system_user",
        "time",
        "timestamp",
        "timestampdiff",
        "to_base64",
        "trim",
        "truncate",
        "ucase",
        "unhex",
        "unix_timestamp",
        "upper",
        "user",
        "utc_date",
        "utc_time",
        "utc_timestamp",
        "uuid",
        "version",
        "week",
        "weekday",
        "year",
        "yearweek",
    ];
    BUILTINS.binary_search(&name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_list_is_sorted_for_binary_search() {
        assert!(is_builtin_function("concat"));
        assert!(is_builtin_function("yearweek"));
        assert!(is_builtin_function("sleep"));
        assert!(is_builtin_function("abs"));
        assert!(!is_builtin_function("shop.reveal"));
        assert!(!is_builtin_function("reveal_card"));
    }

    #[test]
    fn diagnostics_reads_are_recognised() {
        assert!(reads_diagnostics("SHOW WARNINGS"));
        assert!(reads_diagnostics("  show\n errors limit 1"));
        assert!(reads_diagnostics("SHOW COUNT(*) WARNINGS"));
        assert!(reads_diagnostics(
            "GET DIAGNOSTICS CONDITION 1 @m = MESSAGE_TEXT"
        ));
        assert!(!reads_diagnostics("SHOW TABLES"));
        assert!(!reads_diagnostics("SELECT 1"));
    }
}
