//! What the upstream database holds: tables and their columns, read through the gateway's own
//! credential, so that policy sees what the server will resolve.
//!
//! The SQL analyser has no catalog: it cannot tell which schema of the `search_path` holds an
//! unqualified table, nor which columns `*` reads. This cache answers both per connection. It
//! is loaded on first need, shared by all sessions, dropped after any DDL, and optional: if it
//! cannot be loaded, names stay unresolved and rules match them conservatively.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::collections::HashSet;

use gatehouse_core::policy::{ColumnRef, OutputColumn, StatementInfo, TableRef};

use crate::upstream::{UpstreamError, UpstreamTarget};

/// One table of a given name: its schema and its columns in order.
type Located = (String, Arc<[String]>);

/// A relation as a RowDescription names it (by OID): where it lives and its columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub schema: String,
    pub name: String,
    /// `r` table, `v` view, `m` materialized view, `p` partitioned table, `f` foreign table.
    pub kind: char,
    /// (attnum, name, type OID), in attnum order.
    pub columns: Vec<(i16, String, u32)>,
}

impl Relation {
    pub fn column(&self, attnum: i16) -> Option<(&str, u32)> {
        self.columns
            .iter()
            .find(|(n, _, _)| *n == attnum)
            .map(|(_, name, ty)| (name.as_str(), *ty))
    }
}

/// Tables by name (a name may exist in several schemas), relations by OID, and where the
/// columns of views come from.
#[derive(Debug, Default)]
pub struct Catalog {
    tables: HashMap<String, Vec<Located>>,
    by_oid: HashMap<u32, Relation>,
    /// name → schema → OID: lineage sources name relations, result columns give OIDs.
    oid_by_name: HashMap<String, HashMap<String, u32>>,
    /// (view OID, attnum) → the table columns its values are computed from (the view's
    /// query analysed with PostgreSQL's parser; views over views resolved when used).
    view_sources: HashMap<(u32, i16), OutputColumn>,
    /// View OID → the analysis of its query (what it computes with, for masked identities).
    view_queries: HashMap<u32, StatementInfo>,
    /// Names of functions outside the system schemas (bodies the gateway does not analyse).
    user_functions: HashSet<String>,
}

const TABLES_SQL: &str = "SELECT n.nspname, c.relname, a.attname, c.oid, a.attnum, a.atttypid, c.relkind \
    FROM pg_catalog.pg_class c \
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
    JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
    WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f') \
      AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' \
    ORDER BY n.nspname, c.relname, a.attnum";

/// Functions, procedures and aggregates created outside the system schemas.
const FUNCTIONS_SQL: &str = "SELECT DISTINCT p.proname, n.nspname FROM pg_catalog.pg_proc p \
    JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
    WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'";

/// View definitions with every name schema-qualified (empty search_path while deparsing).
const VIEWS_SQL: &str = "SELECT c.oid, pg_catalog.pg_get_viewdef(c.oid) \
    FROM pg_catalog.pg_class c \
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
    WHERE c.relkind IN ('v', 'm') \
      AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'";

impl Catalog {
    /// Reads the catalog through a short-lived connection with the held credential.
    pub async fn load(target: &UpstreamTarget) -> Result<Self, UpstreamError> {
        let mut conn = target.login(&[], Duration::from_secs(10)).await?;
        let rows = conn.simple_rows(TABLES_SQL).await?;
        let mut user_functions = HashSet::new();
        for row in conn.simple_rows(FUNCTIONS_SQL).await? {
            let mut it = row.into_iter();
            if let (Some(Some(name)), Some(Some(schema))) = (it.next(), it.next()) {
                user_functions.insert(format!("{schema}.{name}"));
                user_functions.insert(name);
            }
        }
        conn.simple_rows("SELECT pg_catalog.set_config('search_path', '', false)")
            .await?;
        let views = conn.simple_rows(VIEWS_SQL).await?;
        let mut grouped: HashMap<(String, String), Vec<String>> = HashMap::new();
        let mut order: Vec<(String, String)> = Vec::new();
        let mut by_oid: HashMap<u32, Relation> = HashMap::new();
        for row in rows {
            let mut it = row.into_iter();
            let (Some(Some(schema)), Some(Some(table)), Some(Some(column))) =
                (it.next(), it.next(), it.next())
            else {
                continue;
            };
            let num = |v: Option<Option<String>>| v.flatten().and_then(|s| s.parse::<i64>().ok());
            if let (Some(oid), Some(attnum), Some(ty), kind) = (
                num(it.next()),
                num(it.next()),
                num(it.next()),
                it.next().flatten(),
            ) && let (Ok(oid), Ok(attnum), Ok(ty)) =
                (u32::try_from(oid), i16::try_from(attnum), u32::try_from(ty))
            {
                by_oid
                    .entry(oid)
                    .or_insert_with(|| Relation {
                        schema: schema.clone(),
                        name: table.clone(),
                        kind: kind.and_then(|k| k.chars().next()).unwrap_or('r'),
                        columns: Vec::new(),
                    })
                    .columns
                    .push((attnum, column.clone(), ty));
            }
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
        let mut view_sources = HashMap::new();
        let mut view_queries = HashMap::new();
        for row in views {
            let mut it = row.into_iter();
            let (Some(Some(oid)), Some(Some(def))) = (it.next(), it.next()) else {
                continue;
            };
            let Ok(oid) = oid.parse::<u32>() else {
                continue;
            };
            let ctx = gatehouse_sql::AnalysisContext {
                search_path: Vec::new(),
                standard_conforming_strings: true,
            };
            let def = def.trim().trim_end_matches(';').to_owned();
            let analysed = tokio::task::spawn_blocking(move || gatehouse_sql::analyze(&def, &ctx))
                .await
                .ok()
                .and_then(Result::ok)
                .and_then(|mut v| v.pop());
            if let Some(mut query) = analysed {
                for (i, out) in query.outputs.take().into_iter().flatten().enumerate() {
                    if let Ok(attnum) = i16::try_from(i + 1) {
                        view_sources.insert((oid, attnum), out);
                    }
                }
                view_queries.insert(oid, query);
            }
        }
        let mut oid_by_name: HashMap<String, HashMap<String, u32>> = HashMap::new();
        for (oid, r) in &by_oid {
            oid_by_name
                .entry(r.name.clone())
                .or_default()
                .insert(r.schema.clone(), *oid);
        }
        Ok(Self {
            tables,
            by_oid,
            oid_by_name,
            view_sources,
            view_queries,
            user_functions,
        })
    }

    /// The relation a RowDescription's table OID names.
    pub fn relation(&self, oid: u32) -> Option<&Relation> {
        self.by_oid.get(&oid)
    }

    /// The table columns a view column is computed from (`None`: not a known view column).
    pub fn view_sources(&self, oid: u32, attnum: i16) -> Option<&OutputColumn> {
        self.view_sources.get(&(oid, attnum))
    }

    /// The analysis of the query of view `schema.name` (`None`: not a view, or its query
    /// could not be analysed).
    pub fn view_query(&self, schema: &str, name: &str) -> Option<&StatementInfo> {
        let (oid, rel) = self.relation_named(schema, name)?;
        if !matches!(rel.kind, 'v' | 'm') {
            return None;
        }
        self.view_queries.get(&oid)
    }

    /// Whether `call` (a function name as written, lower case, possibly schema-qualified)
    /// may resolve to a function created outside the system schemas.
    pub fn is_user_function(&self, call: &str) -> bool {
        match call.strip_prefix("pg_catalog.") {
            Some(_) => false,
            None => self.user_functions.contains(call),
        }
    }

    /// Whether `schema.name` is a view whose query could not be analysed.
    pub fn unanalysed_view(&self, schema: &str, name: &str) -> bool {
        self.relation_named(schema, name).is_some_and(|(oid, rel)| {
            matches!(rel.kind, 'v' | 'm') && !self.view_queries.contains_key(&oid)
        })
    }

    /// The relation `schema.name`, if known.
    pub fn relation_named(&self, schema: &str, name: &str) -> Option<(u32, &Relation)> {
        // Looked up per source column of every masked statement: no key is allocated.
        let oid = *self.oid_by_name.get(name)?.get(schema)?;
        self.by_oid.get(&oid).map(|r| (oid, r))
    }

    /// Every schema holding a relation called `name`.
    pub fn schemas_named<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        self.oid_by_name
            .get(name)
            .into_iter()
            .flat_map(|m| m.keys().map(String::as_str))
    }

    /// The schema an unqualified table name resolves to under `search_path`.
    pub fn schema_of(&self, table: &str, search_path: &[String], user: &str) -> Option<&str> {
        self.resolve(table, search_path, user)
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
    by_connection: Mutex<HashMap<String, (Arc<Catalog>, Instant)>>,
}

/// A catalog younger than this is not reloaded for an unknown relation (a temporary table,
/// or one created behind the gateway's back), so such relations cannot force a reload storm.
const MIN_RELOAD_AGE: Duration = Duration::from_secs(2);

/// PostgreSQL's first OID for user objects; lower ones are built into the system catalogs.
const FIRST_NORMAL_OBJECT_ID: u32 = 16_384;

impl CatalogCache {
    /// The catalog of `connection`, loading it if needed; `None` if it cannot be read (the
    /// caller then keeps names unresolved).
    pub async fn get(&self, connection: &str, target: &UpstreamTarget) -> Option<Arc<Catalog>> {
        if let Some(c) = self
            .by_connection
            .lock()
            .ok()
            .and_then(|m| m.get(connection).map(|(c, _)| c.clone()))
        {
            return Some(c);
        }
        match Catalog::load(target).await {
            Ok(c) => {
                let c = Arc::new(c);
                if let Ok(mut m) = self.by_connection.lock() {
                    m.insert(connection.to_owned(), (c.clone(), Instant::now()));
                }
                Some(c)
            }
            Err(e) => {
                tracing::warn!(connection, error = %e, "cannot read the upstream catalog; names stay unresolved");
                None
            }
        }
    }

    /// The catalog of `connection`, reloaded first if `oid` is not in it and the catalog is
    /// old enough: a relation created since the load (by a client, or behind the gateway).
    pub async fn get_with(
        &self,
        connection: &str,
        target: &UpstreamTarget,
        oid: u32,
    ) -> Option<Arc<Catalog>> {
        // System catalogs (OIDs below FirstNormalObjectId) are never in the cache: no reload.
        if oid < FIRST_NORMAL_OBJECT_ID {
            return self.get(connection, target).await;
        }
        let stale = self.by_connection.lock().ok().and_then(|m| {
            m.get(connection)
                .map(|(c, at)| c.relation(oid).is_none() && at.elapsed() >= MIN_RELOAD_AGE)
        });
        if stale == Some(true) {
            self.invalidate(connection);
        }
        self.get(connection, target).await
    }

    /// Forgets a connection's catalog (after DDL).
    pub fn invalidate(&self, connection: &str) {
        if let Ok(mut m) = self.by_connection.lock() {
            m.remove(connection);
        }
    }
}
