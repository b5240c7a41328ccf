//! The policy decision point of the PostgreSQL adapter: every Query and Parse is analysed
//! with PostgreSQL's own parser and judged by the rules before anything is forwarded.
//!
//! Session state that changes what a statement means is tracked here too: the `search_path`
//! used to qualify names, `standard_conforming_strings` (reported by the server), and the
//! statements prepared in this session, so that `EXECUTE name` is judged as what it runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use gatehouse_core::config::ParseErrorAction;
use gatehouse_core::policy::{Policy, StatementInfo};
use gatehouse_sql::{AnalysisCache, AnalysisContext, AnalysisError};

use crate::catalog::CatalogCache;
use crate::upstream::UpstreamTarget;

/// Shared by all sessions: the compiled rules, the analysis cache and the upstream catalogs.
#[derive(Debug)]
pub struct PolicyPoint {
    /// The rules; shared with the [`gatehouse_core::session::Gate`] (approvals read them).
    pub policy: Arc<Policy>,
    pub cache: AnalysisCache,
    pub catalog: CatalogCache,
    /// `on_parse_error` per connection name.
    pub on_parse_error: HashMap<String, ParseErrorAction>,
}

pub use gatehouse_core::policy::UNPARSEABLE_RULE;

/// The decision for one Query or Parse (the core's [`gatehouse_core::policy::Judgement`]),
/// with what actually runs: the statements, plus the body of each `EXECUTE name`.
#[derive(Debug)]
pub(crate) struct Judgement {
    judged: gatehouse_core::policy::Judgement,
    pub effective: Vec<StatementInfo>,
}

impl std::ops::Deref for Judgement {
    type Target = gatehouse_core::policy::Judgement;
    fn deref(&self) -> &Self::Target {
        &self.judged
    }
}

impl std::ops::DerefMut for Judgement {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.judged
    }
}

/// Per-session analysis state.
#[derive(Debug)]
pub(crate) struct SessionPolicy {
    ctx: AnalysisContext,
    /// Kept current by the backend direction from the server's ParameterStatus.
    scs: Arc<AtomicBool>,
    /// Statement name → what it does (SQL `PREPARE` and protocol-level `Parse` share names).
    prepared: HashMap<String, Arc<Vec<StatementInfo>>>,
    /// Masks apply to the session: unqualified names are left unresolved, so that each is
    /// judged as every relation of that name (see [`Self::judge`]).
    masked: bool,
}

impl SessionPolicy {
    pub fn new(search_path: Option<&str>, scs: Arc<AtomicBool>, masked: bool) -> Self {
        let mut ctx = AnalysisContext::default();
        if let Some(path) = search_path {
            ctx.search_path = split_search_path(path);
        }
        Self {
            ctx,
            scs,
            prepared: HashMap::new(),
            masked,
        }
    }

    /// The session's `search_path`, as the analysis follows it.
    pub fn search_path(&self) -> &[String] {
        &self.ctx.search_path
    }

    /// Analyses and judges `sql` for `connection` and the identity's `groups`.
    pub async fn judge(
        &mut self,
        point: &Arc<PolicyPoint>,
        target: &UpstreamTarget,
        groups: &[String],
        sql: &str,
    ) -> Judgement {
        let connection = target.name.as_str();
        self.ctx.standard_conforming_strings = self.scs.load(Ordering::Relaxed);
        // Parsing blocks its thread for microseconds; a very large statement goes to the
        // blocking pool so it never stalls the runtime.
        // For a masked session, which relation an unqualified name means is not guessed from
        // the gateway's view of the search_path (transactions, RESET, set_config, functions
        // and other sessions' DDL can all change the server's): names stay unresolved, and
        // masking judges each as the most-masked relation of that name in any schema. Sound
        // whatever the server's state; stricter only where same-named relations differ.
        let unresolved;
        let ctx = if self.masked {
            unresolved = AnalysisContext {
                search_path: Vec::new(),
                ..self.ctx.clone()
            };
            &unresolved
        } else {
            &self.ctx
        };
        let analysed = if sql.len() <= 16 * 1024 {
            point.cache.analyze(sql, ctx)
        } else {
            let (p, text, ctx) = (point.clone(), sql.to_owned(), ctx.clone());
            tokio::task::spawn_blocking(move || p.cache.analyze(&text, &ctx))
                .await
                .unwrap_or_else(|e| Err(AnalysisError::Internal(e.to_string())))
        };
        let statements = match analysed {
            Ok(s) => s,
            Err(e) => {
                let forward = point.on_parse_error.get(connection)
                    == Some(&ParseErrorAction::Forward)
                    && matches!(e, AnalysisError::Parse { .. });
                return Judgement {
                    judged: gatehouse_core::policy::Judgement::unparseable(&e, forward),
                    effective: Vec::new(),
                };
            }
        };
        // Names the analyser could not resolve without a catalog (unqualified tables under a
        // several-schema search_path, `*`): resolve them as the server will.
        let statements = if self.masked {
            statements
        } else {
            self.resolve(point, target, statements).await
        };
        // `EXECUTE name` is judged as what `name` does.
        let mut effective: Vec<StatementInfo> = Vec::with_capacity(statements.len());
        for s in statements.iter() {
            effective.push(s.clone());
            if let Some(name) = &s.executes
                && let Some(body) = self.prepared.get(name)
            {
                effective.extend(body.iter().cloned());
            }
        }
        let (decision, _) =
            point
                .policy
                .decide_all_as(connection, Some(&target.user), groups, &effective);
        Judgement {
            judged: gatehouse_core::policy::Judgement {
                decision,
                statements,
                parse_error: None,
            },
            effective,
        }
    }

    async fn resolve(
        &self,
        point: &PolicyPoint,
        target: &UpstreamTarget,
        statements: Arc<Vec<StatementInfo>>,
    ) -> Arc<Vec<StatementInfo>> {
        let needs = statements.iter().any(|s| {
            s.tables_read
                .iter()
                .chain(&s.tables_written)
                .any(|t| t.schema.is_none())
                || s.columns_read.iter().any(|c| c.column == "*")
        });
        if !needs {
            return statements;
        }
        let Some(catalog) = point.catalog.get(&target.name, target).await else {
            return statements;
        };
        let mut changed = false;
        let resolved: Vec<StatementInfo> = statements
            .iter()
            .map(
                |s| match catalog.resolve_statement(s, &self.ctx.search_path, &target.user) {
                    Some(r) => {
                        changed = true;
                        r
                    }
                    None => s.clone(),
                },
            )
            .collect();
        if changed {
            Arc::new(resolved)
        } else {
            statements
        }
    }

    /// After an allowed statement is forwarded: remember what it prepares, follow
    /// `SET search_path`, and forget the catalog after DDL.
    pub fn allowed(
        &mut self,
        point: &PolicyPoint,
        connection: &str,
        j: &Judgement,
        parse_name: Option<&str>,
    ) {
        if j.statements.iter().any(|s| s.kinds.contains("ddl")) {
            point.catalog.invalidate(connection);
        }
        if let Some(name) = parse_name.filter(|n| !n.is_empty()) {
            self.prepared.insert(name.to_owned(), j.statements.clone());
        }
        for s in j.statements.iter() {
            if let Some(name) = &s.prepares {
                self.prepared
                    .insert(name.clone(), Arc::new(vec![s.clone()]));
            }
            if let Some((setting, value)) = &s.set_setting
                && setting == "search_path"
            {
                match value {
                    Some(v) => self.ctx.search_path = split_search_path(v),
                    None => self.ctx.search_path = AnalysisContext::default().search_path,
                }
            }
        }
    }
}

fn split_search_path(path: &str) -> Vec<String> {
    path.split(',')
        .map(|s| s.trim().trim_matches('"').to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}
