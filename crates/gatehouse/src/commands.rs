//! The CLI commands other than `serve`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use gatehouse_core::audit::{AuditRecord, ChainVerifier, CheckpointSigner, RecordKind};
use gatehouse_core::config::{Config, parse_duration};
use gatehouse_core::identity::LocalIssuer;
use gatehouse_store::SqliteStore;

pub fn load(path: &Path) -> Result<Config> {
    Config::load(path).map_err(|e| anyhow!("{e}"))
}

fn open_store(cfg: &Config) -> Result<SqliteStore> {
    SqliteStore::open_existing(&cfg.store.url).map_err(|e| anyhow!("{e}"))
}

/// Below this `audit.retention_days`, `gatehouse check` warns (PCI DSS 10.5.1: 12 months).
const RETENTION_MIN_DAYS: u32 = 365;

pub fn check(path: &Path) -> Result<ExitCode> {
    let cfg = load(path)?;
    // Secrets must be resolvable, or `serve` would fail later.
    for c in &cfg.connections {
        c.password().map_err(|e| anyhow!("{e}"))?;
    }
    for (i, n) in cfg.notify.iter().enumerate() {
        n.secret(&format!("notify[{i}]"), &cfg.base_dir)
            .map_err(|e| anyhow!("{e}"))?;
    }
    if cfg.audit.retention_days < RETENTION_MIN_DAYS {
        eprintln!(
            "warning: audit.retention_days = {} is below {RETENTION_MIN_DAYS}: PCI DSS 10.5.1 \
             asks for at least 12 months of audit history",
            cfg.audit.retention_days
        );
    }
    for (key, addr) in cfg.listen.unserved() {
        eprintln!(
            "warning: listen.{key} = {addr:?}: the {} adapter is not in this version yet; \
             nothing will listen there",
            protocol_name(key)
        );
    }
    println!(
        "ok: {} ({} connection(s), {} OIDC issuer(s), local issuer {})",
        path.display(),
        cfg.connections.len(),
        cfg.identity.oidc.len(),
        if cfg.identity.local_issuer {
            "on"
        } else {
            "off"
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// How the README names the protocol of a `[listen]` key.
pub fn protocol_name(listen_key: &str) -> &'static str {
    match listen_key {
        "mysql" => "MySQL/MariaDB",
        "ssh" => "SSH",
        "http" => "HTTP",
        _ => "PostgreSQL",
    }
}

/// `gatehouse explain`: the analysis and decision for each statement, nothing executed. The
/// upstream catalog is read through the held credential to resolve names, when reachable.
pub async fn explain(
    path: &Path,
    connection: &str,
    subject: &str,
    groups: &[String],
    sql: &str,
    search_path: Option<&str>,
) -> Result<ExitCode> {
    use gatehouse_core::policy::{Action, Policy};
    let cfg = load(path)?;
    let conn = cfg
        .connection(connection)
        .ok_or_else(|| anyhow!("--connection {connection:?}: no such connection in the config"))?;
    let mut out = std::io::stdout().lock();
    if !conn.admits(groups) {
        writeln!(
            out,
            "login: refused (28000): {subject} is not in any of allow_groups {:?}",
            conn.allow_groups
        )?;
        return Ok(ExitCode::from(1));
    }
    let mut ctx = gatehouse_sql::AnalysisContext::default();
    if let Some(p) = search_path {
        ctx.search_path = p.split(',').map(|s| s.trim().to_owned()).collect();
    }
    let policy = Policy::new(&cfg.rules);
    let mut loaded: Option<gatehouse_pg::catalog::Catalog> = None;
    let is_mysql = conn.kind == gatehouse_core::config::ConnectionKind::Mysql;
    let analysed = if is_mysql {
        let mctx = gatehouse_sql::mysql::MysqlContext {
            database: Some(conn.database.clone()),
        };
        gatehouse_sql::mysql::analyze_mysql(sql, &mctx)
    } else {
        gatehouse_sql::analyze(sql, &ctx)
    };
    let stmts = match analysed {
        // MySQL: no catalog is read (names resolve to the connection's database).
        Ok(s) if is_mysql => s,
        Ok(s) => {
            let catalog = match conn.password().map_err(|e| anyhow!("{e}")).and_then(|pw| {
                gatehouse_pg::upstream::UpstreamTarget::new(conn, pw).map_err(|e| anyhow!("{e}"))
            }) {
                Ok(target) => gatehouse_pg::catalog::Catalog::load(&target)
                    .await
                    .map_err(|e| anyhow!("{e}")),
                Err(e) => Err(e),
            };
            match catalog {
                Ok(cat) => {
                    let resolved = s
                        .iter()
                        .map(|st| {
                            cat.resolve_statement(st, &ctx.search_path, &conn.user)
                                .unwrap_or_else(|| st.clone())
                        })
                        .collect();
                    loaded = Some(cat);
                    resolved
                }
                Err(e) => {
                    writeln!(
                        out,
                        "note: upstream catalog not read ({e}); names left unresolved"
                    )?;
                    s
                }
            }
        }
        Err(e) => {
            let verdict = match conn.on_parse_error {
                gatehouse_core::config::ParseErrorAction::Block => {
                    "block (rule \"builtin:unparseable\")"
                }
                gatehouse_core::config::ParseErrorAction::Forward => {
                    "allow (on_parse_error = forward)"
                }
            };
            writeln!(out, "parse error: {e}\ndecision: {verdict}")?;
            return Ok(ExitCode::from(1));
        }
    };
    let masks = gatehouse_core::masking::MaskSet::compile(
        &cfg.masks,
        gatehouse_core::masking::TokenKey::from_bytes([0; 32]),
    )
    .map_err(|e| anyhow!("{e}"))?
    .for_session(connection, groups);
    let fmt_table = |t: &gatehouse_core::policy::TableRef| match &t.schema {
        Some(s) => format!("{s}.{}", t.name),
        None => t.name.clone(),
    };
    let mut overall: Option<gatehouse_core::policy::Decision> = None;
    for (i, s) in stmts.iter().enumerate() {
        let mut d = policy.decide_as(connection, Some(&conn.user), groups, s);
        let inference = if is_mysql {
            gatehouse_mysql::session::masked_inference(&masks, s)
        } else {
            gatehouse_pg::masked_inference(loaded.as_ref(), &masks, &ctx.search_path, &conn.user, s)
        };
        if d.action != Action::Block
            && let Some(refusal) = inference
        {
            d = refusal;
        }
        if overall
            .as_ref()
            .is_none_or(|o| d.action.severity() > o.action.severity())
        {
            overall = Some(d.clone());
        }
        writeln!(out, "statement {}: {}", i + 1, s.kind)?;
        writeln!(out, "  kinds:     {}", join(s.kinds.iter().cloned()))?;
        writeln!(
            out,
            "  reads:     {}",
            join(s.tables_read.iter().map(fmt_table))
        )?;
        writeln!(
            out,
            "  writes:    {}",
            join(s.tables_written.iter().map(fmt_table))
        )?;
        writeln!(
            out,
            "  columns:   {}",
            join(s.columns_read.iter().map(|c| match &c.table {
                Some(t) => format!("{}.{}", fmt_table(t), c.column),
                None => c.column.clone(),
            }))
        )?;
        writeln!(out, "  functions: {}", join(s.functions.iter().cloned()))?;
        if s.data_modifying {
            writeln!(out, "  modifies data")?;
        }
        if s.opaque {
            writeln!(out, "  contains code that cannot be analysed")?;
        }
        let rule = d
            .rule
            .as_deref()
            .map(|r| format!(" (rule \"{r}\")"))
            .unwrap_or_default();
        writeln!(out, "  decision:  {}{rule}", d.action.as_str())?;
        if masks.is_active() {
            let lines = gatehouse_pg::describe_output_masks(
                loaded.as_ref(),
                &masks,
                &ctx.search_path,
                &conn.user,
                s,
            );
            if lines.is_empty() {
                writeln!(
                    out,
                    "  masked:    no output column comes from a masked column"
                )?;
            }
            for l in lines {
                writeln!(out, "  masked:    {l}")?;
            }
            if let Some(style) = masks.pan_style() {
                writeln!(
                    out,
                    "  detector:  pan ({}) on every text value sent to the client",
                    format!("{style:?}").to_lowercase()
                )?;
            }
        } else if !masks.exemptions().is_empty() {
            writeln!(
                out,
                "  masked:    nothing: {subject} is exempt ([[mask]] rules {:?})",
                masks
                    .exemptions()
                    .iter()
                    .map(|e| e.rule)
                    .collect::<Vec<_>>()
            )?;
        }
        if d.action != Action::Allow {
            writeln!(out, "  client sees: ERROR 42501 {}", d.client_message())?;
        }
    }
    let overall = overall.unwrap_or_else(gatehouse_core::policy::Decision::default_allow);
    writeln!(
        out,
        "overall: {}{}",
        overall.action.as_str(),
        overall
            .rule
            .as_deref()
            .map(|r| format!(" (rule \"{r}\"; nothing of the string runs)"))
            .unwrap_or_default()
    )?;
    Ok(if overall.action == Action::Allow {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

fn join(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    if v.is_empty() {
        "-".to_owned()
    } else {
        v.join(", ")
    }
}

/// Calls the admin API named by `cfg` (`listen.admin`) with `token`: a GET, or a POST of
/// `body`. The answer becomes an exit code and a body (see [`api_result`]).
async fn admin_api(
    cfg: &gatehouse_core::config::Config,
    token: &str,
    path: &str,
    query: &[(&str, &str)],
    body: Option<serde_json::Value>,
) -> Result<(ExitCode, serde_json::Value)> {
    let mut url = reqwest::Url::parse(&format!("http://{}{path}", cfg.listen.admin))
        .context("listen.admin")?;
    for (k, v) in query {
        url.query_pairs_mut().append_pair(k, v);
    }
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .no_proxy()
        .build()
        .context("http client")?;
    let req = match body {
        Some(b) => client.post(url).json(&b),
        None => client.get(url),
    };
    let resp = req
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("cannot reach the admin API on {}", cfg.listen.admin))?;
    api_result(resp).await
}

/// Turns an admin API answer into output and an exit code (non-zero on any HTTP error).
async fn api_result(resp: reqwest::Response) -> Result<(ExitCode, serde_json::Value)> {
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    if status.is_success() {
        return Ok((ExitCode::SUCCESS, body));
    }
    let msg = body
        .get("error")
        .and_then(|e| e.as_str())
        .unwrap_or("request failed")
        .to_owned();
    eprintln!("error: {} {msg}", status.as_u16());
    Ok((ExitCode::from(1), body))
}

pub async fn approvals_list(path: &Path, token: &str, status: &str) -> Result<ExitCode> {
    let cfg = load(path)?;
    let query: &[(&str, &str)] = if status == "all" {
        &[]
    } else {
        &[("status", status)]
    };
    let (code, body) = admin_api(&cfg, token, "/api/approvals", query, None).await?;
    if code == ExitCode::SUCCESS {
        println!(
            "{:<36}  {:<9}  {:<16}  {:<12}  {:<20}  STATEMENT",
            "ID", "STATUS", "REQUESTER", "CONNECTION", "RULE"
        );
        for r in body.as_array().into_iter().flatten() {
            let f = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or("").to_owned();
            println!(
                "{:<36}  {:<9}  {:<16}  {:<12}  {:<20}  {}",
                f("id"),
                f("status"),
                f("requester"),
                f("connection"),
                f("rule"),
                f("statement")
            );
        }
    }
    Ok(code)
}

pub fn token_issue(path: &Path, subject: &str, groups: &[String], ttl: &str) -> Result<ExitCode> {
    let cfg = load(path)?;
    if !cfg.identity.local_issuer {
        bail!("identity.local_issuer is false: this gateway does not trust local tokens");
    }
    let ttl = parse_duration(ttl).ok_or_else(|| anyhow!("--ttl {ttl:?}: use e.g. 30s, 15m, 8h"))?;
    let issuer = LocalIssuer::load_or_create(&cfg.data_dir).map_err(|e| anyhow!("{e}"))?;
    let token = issuer
        .issue(subject, groups, ttl)
        .map_err(|e| anyhow!("{e}"))?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

pub async fn sessions_list(path: &Path, limit: i64) -> Result<ExitCode> {
    let cfg = load(path)?;
    let store = open_store(&cfg)?;
    let list = store.sessions(limit)?;
    println!(
        "{:<36}  {:<27}  {:<20}  {:<12}  {:<8}  {:>5}  ENDED",
        "SESSION", "STARTED", "SUBJECT", "CONNECTION", "PROTOCOL", "STMTS"
    );
    for s in list {
        println!(
            "{:<36}  {:<27}  {:<20}  {:<12}  {:<8}  {:>5}  {}",
            s.session_id,
            s.started_at,
            s.subject.unwrap_or_default(),
            s.connection.unwrap_or_default(),
            s.protocol,
            s.statements,
            s.ended_at.unwrap_or_else(|| "(open)".into())
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn session_records(path: &Path, id: &str) -> Result<Vec<AuditRecord>> {
    let cfg = load(path)?;
    let store = open_store(&cfg)?;
    let recs = store.session_records(id, i64::MAX)?;
    if recs.is_empty() {
        bail!("no session {id:?} in the audit store");
    }
    Ok(recs)
}

pub async fn sessions_show(path: &Path, id: &str) -> Result<ExitCode> {
    let recs = session_records(path, id).await?;
    let mut out = std::io::stdout().lock();
    for r in &recs {
        writeln!(out, "{}", r.export_json())?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn sessions_replay(path: &Path, id: &str) -> Result<ExitCode> {
    let recs = session_records(path, id).await?;
    let mut out = std::io::stdout().lock();
    let first = recs
        .first()
        .map(|r| r.event.time.clone())
        .unwrap_or_default();
    let t0 = gatehouse_core::audit::parse_rfc3339(&first);
    writeln!(out, "session {id}")?;
    for r in &recs {
        let e = &r.event;
        let offset = match (t0, gatehouse_core::audit::parse_rfc3339(&e.time)) {
            (Some(a), Some(b)) => format!("+{:>9.3}s", (b - a).as_seconds_f64()),
            _ => String::from("          "),
        };
        let clock = e.time.get(11..23).unwrap_or(&e.time);
        let detail: serde_json::Value = e
            .detail
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or_default();
        let line = match e.kind {
            RecordKind::SessionStart => format!(
                "session start   {} (groups: {}) from {} to {}{}{}",
                e.subject.as_deref().unwrap_or("?"),
                e.groups.join(", "),
                e.client_addr.as_deref().unwrap_or("?"),
                e.connection.as_deref().unwrap_or("?"),
                if field(&detail, "tls") == true {
                    ", TLS"
                } else {
                    ", no TLS"
                },
                field(&detail, "application_name")
                    .as_str()
                    .map(|a| format!(", application {a:?}"))
                    .unwrap_or_default()
            ),
            RecordKind::Statement => {
                let mut s = format!(
                    "statement #{:<5} {}",
                    r.seq,
                    e.statement.as_deref().unwrap_or("")
                );
                if let Some(p) = &e.params
                    && !p.is_empty()
                {
                    let ps: Vec<String> = p
                        .iter()
                        .map(|v| v.clone().unwrap_or_else(|| "NULL".into()))
                        .collect();
                    s.push_str(&format!("   params: [{}]", ps.join(", ")));
                }
                if let Some(o) = e.outcome {
                    s.push_str(&format!("   [{}]", o.as_str()));
                }
                s
            }
            RecordKind::Outcome => {
                let mut s = format!(
                    "  -> #{:<5} {}",
                    e.statement_seq.map(|q| q.to_string()).unwrap_or_default(),
                    e.outcome.map(|o| o.as_str()).unwrap_or("?")
                );
                if let Some(st) = &e.sqlstate {
                    s.push_str(&format!(" {st}"));
                }
                if let Some(rows) = e.rows {
                    s.push_str(&format!(", {rows} row(s)"));
                }
                if let Some(d) = e.duration_ms {
                    s.push_str(&format!(", {d:.2} ms"));
                }
                if let Some(res) = detail.get("results") {
                    if let Some(rows) = field(res, "rows").as_array() {
                        for row in rows.iter().take(20) {
                            s.push_str(&format!("\n{:>28}{}", "", row));
                        }
                    }
                    if field(res, "truncated") == true {
                        s.push_str(&format!(
                            "\n{:>28}(results truncated at audit.result_cap_bytes)",
                            ""
                        ));
                    }
                }
                s
            }
            RecordKind::SessionEnd => format!(
                "session end     {} after {:.1} s",
                field(&detail, "reason").as_str().unwrap_or("?"),
                e.duration_ms.unwrap_or(0.0) / 1000.0
            ),
            other => format!("{}  {}", other.as_str(), detail),
        };
        writeln!(out, "{clock} {offset}  {line}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A JSON object's member, or `null` (never panics).
fn field<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v.get(name).unwrap_or(&serde_json::Value::Null)
}

pub async fn audit_verify(path: &Path) -> Result<ExitCode> {
    let cfg = load(path)?;
    let store = open_store(&cfg)?;
    let signer = CheckpointSigner::load(&cfg.data_dir).map_err(|e| anyhow!("{e}"))?;
    let checkpoints = store.checkpoints()?;
    let mut verifier = match ChainVerifier::new(&signer, checkpoints) {
        Ok(v) => v,
        Err(e) => {
            println!("FAILED: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let mut failure = None;
    let mut unreadable = None;
    let read = store.for_each_record(None, |r| match verifier.push(&r) {
        Ok(()) => true,
        Err(e) => {
            failure = Some(e);
            false
        }
    });
    if let Err(e) = read {
        unreadable = Some(e);
    }
    if let Some(e) = unreadable {
        println!("FAILED: {e}");
        return Ok(ExitCode::from(1));
    }
    if let Some(e) = failure {
        println!("FAILED: {e}");
        return Ok(ExitCode::from(1));
    }
    match verifier.finish() {
        Ok(rep) => {
            println!(
                "ok: {} records (seq {}..{}), {} signed checkpoints, head {}",
                rep.records,
                rep.first_seq.unwrap_or(0),
                rep.last_seq.unwrap_or(0),
                rep.checkpoints,
                rep.head_hash
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("FAILED: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

pub async fn audit_export(path: &Path, since: Option<&str>, format: &str) -> Result<ExitCode> {
    let cef = match format {
        "jsonl" => false,
        "cef" => true,
        _ => bail!("--format {format:?} is not supported (supported: jsonl, cef)"),
    };
    let cfg = load(path)?;
    let since = match since {
        None => None,
        Some(s) => Some(normalize_since(s)?),
    };
    let store = open_store(&cfg)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut write_err = None;
    store.for_each_record(since.as_deref(), |r| {
        let written = if cef {
            writeln!(out, "{}", gatehouse_ops::export::record_cef(&r))
        } else {
            writeln!(out, "{}", r.export_json())
        };
        match written {
            Ok(()) => true,
            Err(e) => {
                write_err = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = write_err {
        return Err(e).context("writing the export");
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Accepts RFC 3339 or a date; returns the canonical stored form for comparison.
fn normalize_since(s: &str) -> Result<String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(gatehouse_core::audit::rfc3339(t));
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(s, &fmt) {
        return Ok(format!("{d}T00:00:00.000000Z"));
    }
    bail!("--since {s:?}: use RFC 3339 (2026-11-22T10:00:00Z) or a date (2026-11-22)")
}

// ---------------------------------------------------------------------------------------------
// `gatehouse grants`: time-bound access grants through the admin API
// ---------------------------------------------------------------------------------------------

fn print_grant_row(g: &serde_json::Value) {
    let f = |k: &str| g.get(k).and_then(|v| v.as_str()).unwrap_or("").to_owned();
    println!(
        "{:<36}  {:<8}  {:<16}  {:<12}  {:>8}  {:<30}  {}",
        f("id"),
        f("status"),
        f("requester"),
        f("connection"),
        g.get("duration_secs")
            .and_then(|v| v.as_u64())
            .map(|s| format!("{s}s"))
            .unwrap_or_default(),
        f("expires_at"),
        f("reason")
    );
}

pub async fn grants_request(
    path: &Path,
    token: &str,
    connection: &str,
    duration: &str,
    reason: &str,
) -> Result<ExitCode> {
    let cfg = load(path)?;
    let body = serde_json::json!({
        "connection": connection,
        "duration": duration,
        "reason": reason,
    });
    let (code, body) = admin_api(&cfg, token, "/api/grants", &[], Some(body)).await?;
    if code == ExitCode::SUCCESS {
        println!(
            "{}: {}",
            body.get("id").and_then(|s| s.as_str()).unwrap_or("?"),
            body.get("status").and_then(|s| s.as_str()).unwrap_or("?")
        );
    }
    Ok(code)
}

pub async fn grants_list(
    path: &Path,
    token: &str,
    status: &str,
    connection: Option<&str>,
) -> Result<ExitCode> {
    let cfg = load(path)?;
    let mut query: Vec<(&str, &str)> = Vec::new();
    if status != "all" {
        query.push(("status", status));
    }
    if let Some(c) = connection {
        query.push(("connection", c));
    }
    let (code, body) = admin_api(&cfg, token, "/api/grants", &query, None).await?;
    if code == ExitCode::SUCCESS {
        println!(
            "{:<36}  {:<8}  {:<16}  {:<12}  {:>8}  {:<30}  REASON",
            "ID", "STATUS", "REQUESTER", "CONNECTION", "DURATION", "EXPIRES"
        );
        for g in body.as_array().into_iter().flatten() {
            print_grant_row(g);
        }
    }
    Ok(code)
}

/// `approve`, `deny` or `revoke` one grant.
/// `approve`/`deny`/`revoke` of a held statement (`resource` = `approvals`, the answer's
/// request under `request`) or an access grant (`grants`, under `grant`) through the admin API;
/// prints the status, and the message of a counted approval (202).
pub async fn decide(
    path: &Path,
    token: &str,
    resource: &str,
    id: &str,
    verb: &str,
    reason: Option<String>,
) -> Result<ExitCode> {
    let cfg = load(path)?;
    let body = serde_json::json!({ "reason": reason });
    let (code, body) = admin_api(
        &cfg,
        token,
        &format!("/api/{resource}/{id}/{verb}"),
        &[],
        Some(body),
    )
    .await?;
    if code == ExitCode::SUCCESS {
        let nested = if resource == "grants" {
            "grant"
        } else {
            "request"
        };
        let status = body
            .get("status")
            .or_else(|| body.get(nested).and_then(|g| g.get("status")))
            .and_then(|s| s.as_str())
            .unwrap_or("?");
        match body.get("message").and_then(|m| m.as_str()) {
            Some(m) => println!("{id}: {status} ({m})"),
            None => println!("{id}: {status}"),
        }
    }
    Ok(code)
}
