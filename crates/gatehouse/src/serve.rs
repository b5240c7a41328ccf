//! `gatehouse serve`: wires the store, the audit writer, identity, TLS and the listeners.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use gatehouse_core::audit::detail::{ApprovalEnded, Detail, DetailEvent, GrantEndedByRestart};
use gatehouse_core::audit::{CheckpointSigner, WriterOptions, spawn_writer};
use gatehouse_core::config::{ConnectionKind, parse_duration};
use gatehouse_core::identity::Verifier;
use gatehouse_core::session::Gate;
use gatehouse_pg::cancel::CancelRegistry;
use gatehouse_pg::session::Shared;
use gatehouse_pg::upstream::UpstreamTarget;
use gatehouse_pg::{Gateway, GatewayConfig};
use gatehouse_store::SqliteStore;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub async fn run(path: &Path) -> Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GATEHOUSE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cfg = crate::commands::load(path)?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("metrics recorder")?;

    create_private_dir(&cfg.data_dir)?;
    let durability = match cfg.audit.durability {
        gatehouse_core::config::AuditDurability::Fsync => gatehouse_store::Durability::Fsync,
        gatehouse_core::config::AuditDurability::Os => gatehouse_store::Durability::Os,
    };
    let store = SqliteStore::open_with(&cfg.store.url, durability).map_err(|e| anyhow!("{e}"))?;
    let signer = CheckpointSigner::load_or_create(&cfg.data_dir).map_err(|e| anyhow!("{e}"))?;
    let writer_opts = WriterOptions {
        durability: cfg.audit.durability,
        checkpoint_every: cfg.audit.checkpoint_every,
        fail_closed: cfg.audit.fail_closed,
        ..WriterOptions::new(store.journal_dir())
    };
    let (auditor, writer) = spawn_writer(
        store.writer().map_err(|e| anyhow!("{e}"))?,
        signer,
        writer_opts,
    )
    .map_err(|e| anyhow!("audit store: {e}"))?;
    let verifier = Verifier::from_config(&cfg).map_err(|e| anyhow!("{e}"))?;
    let tls = crate::tls::server_config(
        cfg.tls.cert.as_deref(),
        cfg.tls.key.as_deref(),
        &cfg.data_dir,
    )?;

    let mut upstreams = HashMap::new();
    let mut mysql_targets = HashMap::new();
    let mut allow_groups = HashMap::new();
    for c in &cfg.connections {
        let password = c.password().map_err(|e| anyhow!("{e}"))?;
        match c.kind {
            ConnectionKind::Mysql => {
                let target = gatehouse_mysql::upstream::MysqlTarget::new(c, password)
                    .map_err(|e| anyhow!("connection[{}]: {e}", c.name))?;
                mysql_targets.insert(c.name.clone(), Arc::new(target));
            }
            _ => {
                let target = UpstreamTarget::new(c, password)
                    .map_err(|e| anyhow!("connection[{}]: {e}", c.name))?;
                upstreams.insert(c.name.clone(), Arc::new(target));
            }
        }
        allow_groups.insert(c.name.clone(), c.allow_groups.clone());
    }
    let startup_timeout =
        parse_duration(&cfg.listen.startup_timeout).unwrap_or(Duration::from_secs(30));
    let (stop_tx, stop_rx) = watch::channel(false);
    abandon_unfinished_approvals(&store, &auditor).await;
    let approvals = Arc::new(gatehouse_core::approvals::ApprovalBook::default());
    let grants = Arc::new(gatehouse_core::grants::GrantBook::from_connections(
        &cfg.connections,
    ));
    // Webhooks follow the book from here; they never hold a decision (see `gatehouse_ops::notify`).
    gatehouse_ops::notify::spawn(
        &cfg,
        approvals.subscribe(),
        auditor.subscribe_alerts(),
        auditor.clone(),
    )?;
    // Failures of the audit control become records once the store takes writes.
    let alert_records = gatehouse_ops::alert_records::spawn(auditor.clone(), stop_rx.clone());
    // SIEM sinks tail the store (the store is their spool; see `gatehouse_ops::sinks`).
    gatehouse_ops::sinks::spawn(&cfg, &store, &auditor)?;
    let policy = Arc::new(policy_point(&cfg));
    let gate = Arc::new(Gate {
        verifier: verifier.clone(),
        auditor: auditor.clone(),
        allow_groups,
        rules: policy.policy.clone(),
        masks: Arc::new(mask_set(&cfg)?),
        approvals: approvals.clone(),
        grants: grants.clone(),
        record_results: cfg.audit.record_results,
        result_cap_bytes: cfg.audit.result_cap_bytes,
        redacted_columns: redacted_columns(&cfg),
        admin_url: format!("http://{}", cfg.listen.admin),
        shutdown: stop_rx.clone(),
    });
    let mysql_shared = Arc::new(gatehouse_mysql::session::Shared {
        gate: gate.clone(),
        tls: Some(tls.clone()),
        tls_required: cfg.tls.require,
        targets: mysql_targets,
        startup_timeout,
        max_packet: cfg.listen.max_message_bytes,
        on_parse_error: cfg
            .connections
            .iter()
            .map(|c| (c.name.clone(), c.on_parse_error))
            .collect(),
        analysis: gatehouse_sql::AnalysisCache::new(ANALYSIS_CACHE_BYTES),
        sessions: gatehouse_mysql::session::Registry::default(),
        views: gatehouse_mysql::views::ViewCache::default(),
        rsa: gatehouse_mysql::rsa_exchange::RsaKeyCell::default(),
    });
    let shared = Arc::new(Shared {
        gate,
        tls: Some(tls),
        tls_required: cfg.tls.require,
        upstreams,
        cancel: CancelRegistry::default(),
        startup_timeout,
        max_message_bytes: cfg.listen.max_message_bytes,
        policy,
    });

    let pg_listener = TcpListener::bind(&cfg.listen.postgres)
        .await
        .with_context(|| format!("listen.postgres: cannot listen on {}", cfg.listen.postgres))?;
    let mysql_listener = match &cfg.listen.mysql {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("listen.mysql: cannot listen on {addr}"))?,
        ),
        None => None,
    };
    let admin_listener = TcpListener::bind(&cfg.listen.admin)
        .await
        .with_context(|| format!("listen.admin: cannot listen on {}", cfg.listen.admin))?;
    for (key, addr) in cfg.listen.unserved() {
        tracing::warn!(
            "listen.{key} = {addr:?}: the {} adapter is not in this version yet; nothing listens there",
            crate::commands::protocol_name(key)
        );
    }
    tracing::info!(
        postgres = %cfg.listen.postgres,
        mysql = cfg.listen.mysql.as_deref().unwrap_or("off"),
        admin = %cfg.listen.admin,
        connections = cfg.connections.len(),
        "gatehouse listening"
    );

    let gateway = Gateway::new(
        pg_listener,
        shared,
        GatewayConfig {
            max_connections: cfg.listen.max_connections,
        },
    );
    let gw_task = tokio::spawn(gateway.run(stop_rx.clone()));
    let mysql_task = mysql_listener.map(|l| {
        tokio::spawn(gatehouse_mysql::session::serve(
            l,
            mysql_shared,
            cfg.listen.max_connections,
            stop_rx.clone(),
        ))
    });
    // Periodic chain verification (alerts) and retention purge (see `gatehouse_ops::audit_tasks`).
    let audit_care =
        gatehouse_ops::audit_tasks::spawn(&cfg, store.clone(), auditor.clone(), stop_rx.clone());
    // CLI reads of the audit store, left in the drop box, become records (`gatehouse_ops::audit_access`).
    let access_log =
        gatehouse_ops::audit_access::spawn(cfg.data_dir.clone(), auditor.clone(), stop_rx.clone());
    let sweeper = tokio::spawn(grant_sweeper(
        grants.clone(),
        auditor.clone(),
        stop_rx.clone(),
    ));
    let admin_state = Arc::new(crate::admin::AdminState {
        verifier,
        admin_groups: cfg.identity.admin_groups.clone(),
        store: store.clone(),
        metrics,
        approvals,
        grants: grants.clone(),
        auditor: auditor.clone(),
    });
    let mut admin_stop = stop_rx.clone();
    let admin_task = tokio::spawn(async move {
        let app = crate::admin::router(admin_state);
        let r = axum::serve(admin_listener, app)
            .with_graceful_shutdown(async move {
                let _ = admin_stop.changed().await;
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "admin API stopped");
        }
    });

    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    // Open sessions get a moment to finish; then the chain is sealed with a checkpoint.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = gw_task.await;
        if let Some(t) = mysql_task {
            let _ = t.await;
        }
    })
    .await;
    let _ = admin_task.await;
    let _ = sweeper.await;
    let _ = audit_care.await;
    let _ = access_log.await;
    let _ = alert_records.await;
    if let Err(e) = auditor.flush().await {
        tracing::error!(error = %e, "final audit flush failed");
    }
    drop(auditor);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer.wait()).await;
    Ok(ExitCode::SUCCESS)
}

/// Expires access grants on time and records each expiry (`grant` record, event `expired`);
/// a last sweep runs when the gateway stops.
async fn grant_sweeper(
    grants: Arc<gatehouse_core::grants::GrantBook>,
    auditor: gatehouse_core::audit::Auditor,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            r = stop.wait_for(|s| *s) => {
                let _ = r;
                true
            }
        };
        for g in grants.sweep() {
            let ev = gatehouse_core::grants::audit_event(&g, DetailEvent::Expired, None, None);
            if let Err(e) = auditor.record(ev).await {
                tracing::error!(error = %e, grant = %g.id, "grant expiry could not be audited");
            }
        }
        if stopping {
            return;
        }
    }
}

/// Size of the statement analysis cache (bytes of SQL text).
const ANALYSIS_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// The compiled rules and the analysis cache shared by all sessions.
pub fn policy_point(
    cfg: &gatehouse_core::config::Config,
) -> gatehouse_pg::session::policy::PolicyPoint {
    gatehouse_pg::session::policy::PolicyPoint {
        policy: Arc::new(gatehouse_core::policy::Policy::new(&cfg.rules)),
        cache: gatehouse_sql::AnalysisCache::new(ANALYSIS_CACHE_BYTES),
        catalog: gatehouse_pg::catalog::CatalogCache::default(),
        on_parse_error: cfg
            .connections
            .iter()
            .map(|c| (c.name.clone(), c.on_parse_error))
            .collect(),
    }
}

/// Approval requests left pending by a previous run: their clients were disconnected when the
/// gateway stopped, so nobody waits for them any more. Each gets an `abandoned` record, so the
/// evidence says how every request ended (the request itself was recorded when it was made).
/// Access grants live in memory too: one still pending or active when the gateway stopped is
/// gone, and gets an `expired` record saying so (the identity asks again).
async fn abandon_unfinished_approvals(
    store: &SqliteStore,
    auditor: &gatehouse_core::audit::Auditor,
) {
    use gatehouse_core::audit::{AuditEvent, Outcome, RecordKind};
    let store = store.clone();
    let scan = tokio::task::spawn_blocking(move || {
        let mut open: std::collections::BTreeMap<String, AuditEvent> = Default::default();
        let mut grants: std::collections::BTreeMap<String, AuditEvent> = Default::default();
        let r = store.for_each_record(None, |rec| {
            if !matches!(rec.event.kind, RecordKind::Grant | RecordKind::Approval) {
                return true;
            }
            // `detail.<key>` of the record, as text (the detail parsed once per record).
            let detail: serde_json::Value = rec
                .event
                .detail
                .as_deref()
                .and_then(|d| serde_json::from_str(d).ok())
                .unwrap_or_default();
            let field = |key: &str| detail.get(key)?.as_str().map(str::to_owned);
            let event = detail.get("event").and_then(|e| e.as_str());
            if rec.event.kind == RecordKind::Grant
                && let Some(event) = event
            {
                match DetailEvent::parse(event) {
                    Some(DetailEvent::Requested) => {
                        grants.insert(rec.event.session_id.clone(), rec.event);
                    }
                    Some(DetailEvent::Denied | DetailEvent::Revoked | DetailEvent::Expired) => {
                        grants.remove(&rec.event.session_id);
                    }
                    _ => {}
                }
                return true;
            }
            if rec.event.kind == RecordKind::Approval
                && let (Some(event), Some(id)) = (event, field("approval_id"))
            {
                match DetailEvent::parse(event) {
                    Some(DetailEvent::Requested) => {
                        open.insert(id, rec.event);
                    }
                    Some(
                        DetailEvent::Approved
                        | DetailEvent::Denied
                        | DetailEvent::Expired
                        | DetailEvent::Abandoned,
                    ) => {
                        open.remove(&id);
                    }
                    _ => {}
                }
            }
            true
        });
        r.map(|()| (open, grants))
    })
    .await;
    let (open, grants) = match scan
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, "cannot scan for unfinished approval requests");
            return;
        }
    };
    for (id, requested) in open {
        let mut ev = AuditEvent::new(RecordKind::Approval, requested.session_id.clone());
        ev.subject = requested.subject.clone();
        ev.groups = requested.groups.clone();
        ev.connection = requested.connection.clone();
        ev.rule = requested.rule.clone();
        ev.outcome = Some(Outcome::Error);
        let ev = ev.with_detail(
            ApprovalEnded {
                event: DetailEvent::Abandoned,
                approval_id: id.clone(),
                why: Some(
                    "the gateway restarted while the statement was held; its client was \
                     disconnected"
                        .to_owned(),
                ),
            }
            .to_value(),
        );
        if let Err(e) = auditor.record(ev).await {
            tracing::error!(error = %e, approval_id = %id, "cannot record an abandoned approval request");
        } else {
            tracing::info!(approval_id = %id, "approval request left pending by the previous run marked abandoned");
        }
    }
    for (id, requested) in grants {
        let mut ev = AuditEvent::new(RecordKind::Grant, id.clone());
        ev.connection = requested.connection.clone();
        ev.outcome = Some(Outcome::Expired);
        let ev = ev.with_detail(
            GrantEndedByRestart {
                event: DetailEvent::Expired,
                grant_id: id.clone(),
                requester: requested.subject.clone(),
                why: "the gateway restarted; access grants are not kept across restarts".to_owned(),
            }
            .to_value(),
        );
        if let Err(e) = auditor.record(ev).await {
            tracing::error!(error = %e, grant_id = %id, "cannot record a grant ended by the restart");
        } else {
            tracing::info!(grant_id = %id, "access grant of the previous run ended by the restart");
        }
    }
}

/// The `[[mask]]` rules with the token key (created in `data_dir` on first start).
fn mask_set(cfg: &gatehouse_core::config::Config) -> Result<gatehouse_core::masking::MaskSet> {
    use gatehouse_core::masking::{MaskSet, TokenKey};
    let key = TokenKey::load_or_create(&cfg.data_dir).with_context(|| {
        format!(
            "data_dir: cannot read or create the masking token key in {}",
            cfg.data_dir.display()
        )
    })?;
    MaskSet::compile(&cfg.masks, key).map_err(|e| anyhow!("{e}"))
}

/// Column names never recorded in results: `[[mask]] columns` (their last segment) and the
/// card verification code names.
fn redacted_columns(cfg: &gatehouse_core::config::Config) -> Vec<String> {
    let mut out: Vec<String> = gatehouse_pg::session::VERIFICATION_CODE_COLUMNS
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    for mask in &cfg.masks {
        for c in &mask.columns {
            if let Some(name) = c.rsplit('.').next()
                && name != "*"
            {
                out.push(name.to_ascii_lowercase());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

async fn wait_for_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("data_dir: cannot create {}", dir.display()))
}
