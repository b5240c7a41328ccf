//! What the upstream database holds: tables and their columns, read through the gateway's own
//! credential, so that policy sees what the server will resolve.
//!
//! The SQL analyser has no catalog: it cannot tell which schema of the `search_path` holds an
//! unqualified table, nor which columns `*` reads. This cache answers both per connection. It
//! is loaded on first need, shared by all sessions, dropped after any DDL, and optional: if it
//! cannot be loaded, names stay unresolved and rules match them conservatively.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_core::policy::{ColumnRef, StatementInfo, TableRef};

use crate::upstream::{UpstreamError, UpstreamTarget};

/// One table of a given name: its schema and its columns in order.
type Located = (String, Arc<[String]>);

/// Tables by name (a name may exist in several schemas).
#[derive(Debug, Default)]
pub struct Catalog {
    tables: HashMap<String, Vec<Located>>,
}

const TABLES_SQL: &str = "SELECT n.nspname, c.relname, a.attname \
    FROM pg_catalog.pg_class c \
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
    JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
    WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f') \
      AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' \
    ORDER BY n.nspname, c.relname, a.attnum";

impl Catalog {
    /// Reads the catalog through a short-lived connection with the held credential.
    pub async fn load(target: &UpstreamTarget) -> Result<Self, UpstreamError> {
        let mut conn = target.login(&[], Duration::from_secs(10)).await?;
        let rows = conn.simple_rows(TABLES_SQL).await?;
        let mut grouped: HashMap<(String, String), Vec<String>> = HashMap::new();
        let mut order: Vec<(String, String)> = Vec::new();
        for row in rows {
            let mut it = row.into_iter();
            let (Some(Some(schema)), Some(Some(table)), Some(Some(column))) =
                (it.next(), it.next(), it.next())
            else {
                continue;
            };
            let key = (schema, table);
            if !grouped.contains_key(&key) {
                order.push(key.clone());
            }
            grouped.entry(key).or_default().push(column);
        }
        let mut tables: HashMap<String, Vec<Located>> = HashMap::new();
        for key in order {
            if let Some(cols) = grouped.remove(&key) {
                tables.entry(key.1).or_default().push((key.0, cols.into()));
            }
        }
        Ok(Self { tables })
    }

    /// The schema that holds `table` first in `search_path` order (`$user` is `user`).
    fn resolve(&self, table: &str, search_path: &[String], user: &str) -> Option<&str> {
        let candidates = self.tables.get(table)?;
        search_path.iter().find_map(|s| {
            let s = if s == "$user" { user } else { s.as_str() };
            candidates
                .iter()
                .find(|(schema, _)| schema == s)
                .map(|(schema, _)| schema.as_str())
        })
    }

    fn columns(&self, schema: &str, table: &str) -> Option<&Arc<[String]>> {
        self.tables
            .get(table)?
            .iter()
            .find(|(s, _)| s == schema)
            .map(|(_, c)| c)
    }

    /// Qualifies unresolved tables through the `search_path` and expands `*` and whole-row
    /// reads into the table's columns. Returns `None` when nothing changed.
    pub fn resolve_statement(
        &self,
        stmt: &StatementInfo,
        search_path: &[String],
        user: &str,
    ) -> Option<StatementInfo> {
        let unresolved =
            stmt.tables_read
                .iter()
                .chain(&stmt.tables_written)
                .any(|t| t.schema.is_none())
                || stmt.columns_read.iter().any(|c| {
                    c.column == "*" || c.table.as_ref().is_some_and(|t| t.schema.is_none())
                });
        if !unresolved {
            return None;
        }
        let fix = |t: &TableRef| -> TableRef {
            match &t.schema {
                Some(_) => t.clone(),
                None => TableRef {
                    schema: self.resolve(&t.name, search_path, user).map(str::to_owned),
                    name: t.name.clone(),
                },
            }
        };
        let mut out = stmt.clone();
        out.tables_read = stmt.tables_read.iter().map(fix).collect();
        out.tables_written = stmt.tables_written.iter().map(fix).collect();
        out.columns_read = stmt
            .columns_read
            .iter()
            .flat_map(|c| {
                let table = c.table.as_ref().map(fix);
                let expanded: Vec<ColumnRef> = match (&table, c.column.as_str()) {
                    (
                        Some(TableRef {
                            schema: Some(s),
                            name,
                        }),
                        "*",
                    ) => self
                        .columns(s, name)
                        .map(|cols| {
                            cols.iter()
                                .map(|col| ColumnRef {
                                    table: table.clone(),
                                    column: col.clone(),
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    _ => Vec::new(),
                };
                if expanded.is_empty() {
                    vec![ColumnRef {
                        table,
                        column: c.column.clone(),
                    }]
                } else {
                    expanded
                }
            })
            .collect();
        Some(out)
    }
}

/// One catalog per connection, loaded on first need and dropped after DDL.
#[derive(Debug, Default)]
pub struct CatalogCache {
    by_connection: Mutex<HashMap<String, Arc<Catalog>>>,
}

impl CatalogCache {
    /// The catalog of `connection`, loading it if needed; `None` if it cannot be read (the
    /// caller then keeps names unresolved).
    pub async fn get(&self, connection: &str, target: &UpstreamTarget) -> Option<Arc<Catalog>> {
        if let Some(c) = self
            .by_connection
            .lock()
            .ok()
            .and_then(|m| m.get(connection).cloned())
        {
            return Some(c);
        }
        match Catalog::load(target).await {
            Ok(c) => {
                let c = Arc::new(c);
                if let Ok(mut m) = self.by_connection.lock() {
                    m.insert(connection.to_owned(), c.clone());
                }
                Some(c)
            }
            Err(e) => {
                tracing::warn!(connection, error = %e, "cannot read the upstream catalog; names stay unresolved");
                None
            }
        }
    }

    /// Forgets a connection's catalog (after DDL).
    pub fn invalidate(&self, connection: &str) {
        if let Ok(mut m) = self.by_connection.lock() {
            m.remove(connection);
        }
    }
}
