//! The upstream's views, read with the held credential, so that a view's columns are masked
//! and judged as what they are computed from.
//!
//! Why: MySQL names a view's column by the view (`org_table` = the view), not by the base
//! column it shows, so `SELECT * FROM v` over `payments.card_number` would otherwise be masked
//! only by the content detector, and `WHERE v.c LIKE '4%'` would infer digits unseen. Each
//! view's definition is analysed like a statement; a view column stands for the sources of its
//! position in the view's query (all of the query's sources when positions are not known).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use gatehouse_core::policy::{ColumnRef, OutputColumn, StatementInfo, TableRef};
use gatehouse_sql::mysql::MysqlContext;

use crate::upstream::{Upstream, UpstreamError};

/// How long a connection's views are trusted before they are read again (DDL through the
/// gateway invalidates them at once; DDL made elsewhere is seen within this).
pub const VIEWS_TTL: Duration = Duration::from_secs(5);

/// How deep views over views are followed.
const MAX_DEPTH: usize = 8;

/// One view: its analysed query and its column names in order.
#[derive(Debug, Clone)]
pub struct View {
    pub query: StatementInfo,
    pub columns: Vec<String>,
}

/// The views of one connection's upstream, by (database, name), lower case.
#[derive(Debug, Default)]
pub struct ViewCatalog {
    views: HashMap<(String, String), View>,
}

fn text(v: Option<&Option<Vec<u8>>>) -> String {
    v.and_then(|v| v.as_deref())
        .map(|b| String::from_utf8_lossy(b).to_lowercase())
        .unwrap_or_default()
}

impl ViewCatalog {
    /// Reads every view the held credential can see.
    pub async fn load(upstream: &mut Upstream) -> Result<Self, UpstreamError> {
        let defs = upstream
            .query_rows(
                "SELECT TABLE_SCHEMA, TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS",
            )
            .await?;
        let cols = upstream
            .query_rows(
                "SELECT c.TABLE_SCHEMA, c.TABLE_NAME, c.COLUMN_NAME FROM information_schema.COLUMNS c \
                 JOIN information_schema.VIEWS v ON v.TABLE_SCHEMA = c.TABLE_SCHEMA \
                 AND v.TABLE_NAME = c.TABLE_NAME ORDER BY c.TABLE_SCHEMA, c.TABLE_NAME, c.ORDINAL_POSITION",
            )
            .await?;
        let mut views = HashMap::new();
        for row in defs {
            let (schema, name) = (text(row.first()), text(row.get(1)));
            let definition = row
                .get(2)
                .and_then(|v| v.as_deref())
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            let ctx = MysqlContext {
                database: Some(schema.clone()),
            };
            // A definition the analyser cannot read (or cannot see: no SHOW VIEW privilege)
            // is opaque: judged as code the gateway cannot see into.
            let query = gatehouse_sql::mysql::analyze_mysql(&definition, &ctx)
                .ok()
                .and_then(|mut s| (s.len() == 1).then(|| s.remove(0)))
                .unwrap_or_else(|| StatementInfo {
                    kind: "select".to_owned(),
                    opaque: true,
                    ..StatementInfo::default()
                });
            views.insert(
                (schema, name),
                View {
                    query,
                    columns: Vec::new(),
                },
            );
        }
        for row in cols {
            let key = (text(row.first()), text(row.get(1)));
            if let Some(v) = views.get_mut(&key) {
                v.columns.push(text(row.get(2)));
            }
        }
        Ok(Self { views })
    }

    /// The views a table name may be (unqualified: every database's view of that name).
    pub fn views_named(&self, t: &TableRef) -> Vec<&View> {
        let name = t.name.to_lowercase();
        match &t.schema {
            Some(s) => self
                .views
                .get(&(s.to_lowercase(), name))
                .into_iter()
                .collect(),
            None => self
                .views
                .iter()
                .filter(|((_, n), _)| *n == name)
                .map(|(_, v)| v)
                .collect(),
        }
    }

    /// What a column of a view stands for: the table columns that can flow into it and those
    /// that reach it only through a computation (followed through views over views). `None`
    /// when `column` is not a view's.
    pub fn lineage(&self, column: &ColumnRef) -> Option<OutputColumn> {
        self.lineage_at(column, 0)
    }

    fn lineage_at(&self, column: &ColumnRef, depth: usize) -> Option<OutputColumn> {
        let t = column.table.as_ref()?;
        let views = self.views_named(t);
        if views.is_empty() {
            return None;
        }
        let mut out = OutputColumn::default();
        for v in views {
            let Some(outputs) = v.query.outputs.as_deref() else {
                // No known outputs (opaque): the view may show anything it reads.
                out.sources.extend(v.query.columns_read.iter().cloned());
                out.derived.extend(v.query.columns_read.iter().cloned());
                out.star = true;
                continue;
            };
            let positional = !outputs.iter().any(|o| o.star) && outputs.len() == v.columns.len();
            let picked: Vec<&OutputColumn> =
                match v.columns.iter().position(|c| *c == column.column) {
                    Some(i) if positional && column.column != "*" => {
                        outputs.get(i).into_iter().collect()
                    }
                    _ => outputs.iter().collect(),
                };
            for o in picked {
                out.sources.extend(o.sources.iter().cloned());
                out.derived.extend(o.derived.iter().cloned());
            }
            if v.query.opaque {
                out.star = true;
            }
        }
        if depth < MAX_DEPTH {
            // Sources that are themselves view columns stand for what those show.
            let nested: Vec<ColumnRef> = out.sources.iter().cloned().collect();
            for s in nested {
                if let Some(inner) = self.lineage_at(&s, depth + 1) {
                    let derived = out.derived.contains(&s);
                    out.sources.extend(inner.sources.iter().cloned());
                    if derived {
                        out.derived.extend(inner.sources.iter().cloned());
                    } else {
                        out.derived.extend(inner.derived.iter().cloned());
                    }
                    out.star |= inner.star;
                }
            }
        }
        Some(out)
    }

    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }
}

/// The view catalogs of every MySQL connection, shared by its sessions.
#[derive(Debug, Default)]
pub struct ViewCache {
    entries: Mutex<HashMap<String, (Instant, Arc<ViewCatalog>)>>,
}

impl ViewCache {
    /// The connection's catalog, read again through `upstream` when older than [`VIEWS_TTL`]
    /// or invalidated. A catalog that cannot be read is an error (the caller fails closed).
    pub async fn get(
        &self,
        connection: &str,
        upstream: &mut Upstream,
    ) -> Result<Arc<ViewCatalog>, UpstreamError> {
        let fresh = self
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(connection)
            .filter(|(at, _)| at.elapsed() < VIEWS_TTL)
            .map(|(_, c)| c.clone());
        if let Some(c) = fresh {
            return Ok(c);
        }
        let catalog = Arc::new(ViewCatalog::load(upstream).await?);
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(connection.to_owned(), (Instant::now(), catalog.clone()));
        Ok(catalog)
    }

    /// Forgets a connection's catalog (after DDL through the gateway).
    pub fn invalidate(&self, connection: &str) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(connection);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(schema: &str, table: &str, c: &str) -> ColumnRef {
        ColumnRef {
            table: Some(TableRef {
                schema: Some(schema.into()),
                name: table.into(),
            }),
            column: c.into(),
        }
    }

    fn catalog(defs: &[(&str, &str, &[&str])]) -> ViewCatalog {
        let mut views = HashMap::new();
        for (name, sql, columns) in defs {
            let ctx = MysqlContext {
                database: Some("shop".into()),
            };
            let query = gatehouse_sql::mysql::analyze_mysql(sql, &ctx)
                .ok()
                .and_then(|mut s| (s.len() == 1).then(|| s.remove(0)))
                .unwrap_or_else(|| StatementInfo {
                    opaque: true,
                    ..StatementInfo::default()
                });
            views.insert(
                ("shop".to_owned(), (*name).to_owned()),
                View {
                    query,
                    columns: columns.iter().map(|c| (*c).to_owned()).collect(),
                },
            );
        }
        ViewCatalog { views }
    }

    #[test]
    fn a_view_column_stands_for_its_position_in_the_query() {
        let c = catalog(&[(
            "v",
            "SELECT id, card_number AS c, concat(note, '') AS n FROM payments",
            &["id", "c", "n"],
        )]);
        let card = col("shop", "payments", "card_number");
        let l = c.lineage(&col("shop", "v", "c")).unwrap_or_default();
        assert!(
            l.sources.contains(&card) && !l.derived.contains(&card),
            "{l:?}"
        );
        let l = c.lineage(&col("shop", "v", "id")).unwrap_or_default();
        assert!(!l.sources.contains(&card), "{l:?}");
        let l = c.lineage(&col("shop", "v", "n")).unwrap_or_default();
        assert!(
            l.derived.contains(&col("shop", "payments", "note")),
            "{l:?}"
        );
        // A whole-row reference, and an unqualified name, take every column / every view.
        let l = c.lineage(&col("shop", "v", "*")).unwrap_or_default();
        assert!(l.sources.contains(&card));
        let unqualified = ColumnRef {
            table: Some(TableRef {
                schema: None,
                name: "V".into(),
            }),
            column: "c".into(),
        };
        assert!(
            c.lineage(&unqualified)
                .is_some_and(|l| l.sources.contains(&card))
        );
        assert!(c.lineage(&col("shop", "payments", "card_number")).is_none());
    }

    #[test]
    fn views_over_views_and_unreadable_views_are_followed_conservatively() {
        let c = catalog(&[
            ("v", "SELECT card_number AS c FROM payments", &["c"]),
            ("w", "SELECT upper(c) AS u FROM v", &["u"]),
            ("x", "not sql at all", &["a"]),
        ]);
        let card = col("shop", "payments", "card_number");
        let l = c.lineage(&col("shop", "w", "u")).unwrap_or_default();
        assert!(
            l.sources.contains(&card) && l.derived.contains(&card),
            "{l:?}"
        );
        let l = c.lineage(&col("shop", "x", "a")).unwrap_or_default();
        assert!(l.star, "an unreadable view shows anything: {l:?}");
    }
}
