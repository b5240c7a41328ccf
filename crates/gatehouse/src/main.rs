//! `gatehouse`: the identity-aware data-path gateway. The CLI, config keys and admin API it
//! offers are the contract documented in the README (configuration, CLI and admin API sections).
#![forbid(unsafe_code)]

mod admin;
mod commands;
mod evidence;
mod serve;
mod tls;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "Identity-aware data-path gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
    },
    /// Validate the configuration file.
    Check {
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
    },
    /// Show the decision for a statement without running it.
    Explain {
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        /// Connection name (what clients give as the database name).
        #[arg(long)]
        connection: String,
        #[arg(long)]
        subject: String,
        #[arg(long = "group")]
        groups: Vec<String>,
        /// The SQL (may hold several statements).
        sql: String,
        /// The session's search_path (default: public).
        #[arg(long)]
        search_path: Option<String>,
    },
    /// Local token issuer.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Recorded sessions.
    Sessions {
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// Decide held statements (through the admin API).
    Approvals {
        #[command(subcommand)]
        command: ApprovalsCommand,
    },
    /// Time-bound access grants to connections (through the admin API).
    Grants {
        #[command(subcommand)]
        command: GrantsCommand,
    },
    /// The audit chain.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// PCI DSS evidence report for a period, computed from the audit store (read-only).
    Evidence {
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        /// First day (YYYY-MM-DD, inclusive) or RFC 3339 time.
        #[arg(long)]
        from: String,
        /// Last day (YYYY-MM-DD, inclusive) or RFC 3339 time.
        #[arg(long)]
        to: String,
        /// The report file.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// html | json | md (default: from the output's extension, else html).
        #[arg(long)]
        format: Option<String>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a JWT signed by the local issuer.
    Issue {
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        #[arg(long)]
        subject: String,
        #[arg(long = "group")]
        groups: Vec<String>,
        #[arg(long, default_value = "15m")]
        ttl: String,
    },
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// List sessions, newest first.
    List {
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Print one session's records as JSON lines.
    Show {
        id: String,
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
    },
    /// Print one session as a readable timeline.
    Replay {
        id: String,
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum ApprovalsCommand {
    /// List requests (pending by default).
    List {
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        #[arg(long, env = "GATEHOUSE_TOKEN", hide_env_values = true)]
        token: String,
        /// pending | approved | denied | expired | all
        #[arg(long, default_value = "pending")]
        status: String,
    },
    /// Approve a request.
    Approve {
        id: String,
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        #[arg(long, env = "GATEHOUSE_TOKEN", hide_env_values = true)]
        token: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deny a request.
    Deny {
        id: String,
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        #[arg(long, env = "GATEHOUSE_TOKEN", hide_env_values = true)]
        token: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
enum GrantsCommand {
    /// Ask for access to a connection for a while.
    Request {
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        #[arg(long, env = "GATEHOUSE_TOKEN", hide_env_values = true)]
        token: String,
        #[arg(long)]
        connection: String,
        /// e.g. 30m, 2h (at most the connection's grant_max_duration)
        #[arg(long)]
        duration: String,
        #[arg(long)]
        reason: String,
    },
    /// List grants (all by default).
    List {
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        #[arg(long, env = "GATEHOUSE_TOKEN", hide_env_values = true)]
        token: String,
        /// pending | active | denied | expired | revoked | all
        #[arg(long, default_value = "all")]
        status: String,
        #[arg(long)]
        connection: Option<String>,
    },
    /// Approve a grant.
    Approve {
        id: String,
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        #[arg(long, env = "GATEHOUSE_TOKEN", hide_env_values = true)]
        token: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deny a grant.
    Deny {
        id: String,
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        #[arg(long, env = "GATEHOUSE_TOKEN", hide_env_values = true)]
        token: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Revoke a pending or active grant.
    Revoke {
        id: String,
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        #[arg(long, env = "GATEHOUSE_TOKEN", hide_env_values = true)]
        token: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the hash chain and the signed checkpoints.
    Verify {
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
    },
    /// Write audit records (masked) for a SIEM.
    Export {
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        /// RFC 3339 time or YYYY-MM-DD date: only records at or after it.
        #[arg(long)]
        since: Option<String>,
        /// `jsonl` (one JSON object a line) or `cef` (ArcSight CEF, one event a line).
        #[arg(long, default_value = "jsonl")]
        format: String,
    },
}

/// Runs a command that reads the audit store, recording the read (PCI DSS 10.2.1.3): the drop
/// box is opened before the command reads (no record, no read), and its line written when the
/// command ends; failing to write it fails a command that succeeded. The gateway chains the
/// line (see `gatehouse_ops::audit_access`).
async fn audit_read(
    config: &std::path::Path,
    what: &str,
    args: serde_json::Value,
    run: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> anyhow::Result<ExitCode> {
    use gatehouse_ops::audit_access::{AccessLog, ReadResult};
    let cfg = commands::load(config)?;
    let log = AccessLog::open(&cfg.data_dir)?;
    let result = run.await;
    let ended = match &result {
        Ok(code) if *code == ExitCode::SUCCESS => ReadResult::Ok,
        Ok(_) => ReadResult::Failed,
        Err(e) => ReadResult::Error(format!("{e:#}")),
    };
    log.record(what, args, &ended)?;
    result
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve { .. }) {
        bound_malloc_arenas();
    }
    // Statements are analysed on the runtime's own threads (no hand-over to another thread per
    // statement); PostgreSQL's parser recurses deeply on nested input, hence the big stacks
    // (virtual memory, committed only as used).
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(gatehouse_sql::STACK_SIZE)
        .on_thread_start(gatehouse_sql::mark_big_stack)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Serve { config } => serve::run(&config).await,
            Command::Check { config } => commands::check(&config),
            Command::Explain {
                config,
                connection,
                subject,
                groups,
                sql,
                search_path,
            } => {
                commands::explain(
                    &config,
                    &connection,
                    &subject,
                    &groups,
                    &sql,
                    search_path.as_deref(),
                )
                .await
            }
            Command::Token {
                command:
                    TokenCommand::Issue {
                        config,
                        subject,
                        groups,
                        ttl,
                    },
            } => commands::token_issue(&config, &subject, &groups, &ttl),
            Command::Sessions { command } => match command {
                SessionsCommand::List { config, limit } => {
                    let args = json!({ "limit": limit });
                    let run = commands::sessions_list(&config, limit);
                    audit_read(&config, "sessions_list", args, run).await
                }
                SessionsCommand::Show { id, config } => {
                    let args = json!({ "session_id": id });
                    let run = commands::sessions_show(&config, &id);
                    audit_read(&config, "session", args, run).await
                }
                SessionsCommand::Replay { id, config } => {
                    let args = json!({ "session_id": id });
                    let run = commands::sessions_replay(&config, &id);
                    audit_read(&config, "replay", args, run).await
                }
            },
            Command::Approvals { command } => match command {
                ApprovalsCommand::List {
                    config,
                    token,
                    status,
                } => commands::approvals_list(&config, &token, &status).await,
                ApprovalsCommand::Approve {
                    id,
                    config,
                    token,
                    reason,
                } => commands::decide(&config, &token, "approvals", &id, "approve", reason).await,
                ApprovalsCommand::Deny {
                    id,
                    config,
                    token,
                    reason,
                } => commands::decide(&config, &token, "approvals", &id, "deny", reason).await,
            },
            Command::Grants { command } => match command {
                GrantsCommand::Request {
                    config,
                    token,
                    connection,
                    duration,
                    reason,
                } => {
                    commands::grants_request(&config, &token, &connection, &duration, &reason).await
                }
                GrantsCommand::List {
                    config,
                    token,
                    status,
                    connection,
                } => commands::grants_list(&config, &token, &status, connection.as_deref()).await,
                GrantsCommand::Approve {
                    id,
                    config,
                    token,
                    reason,
                } => commands::decide(&config, &token, "grants", &id, "approve", reason).await,
                GrantsCommand::Deny {
                    id,
                    config,
                    token,
                    reason,
                } => commands::decide(&config, &token, "grants", &id, "deny", reason).await,
                GrantsCommand::Revoke {
                    id,
                    config,
                    token,
                    reason,
                } => commands::decide(&config, &token, "grants", &id, "revoke", reason).await,
            },
            Command::Audit { command } => match command {
                AuditCommand::Verify { config } => {
                    let run = commands::audit_verify(&config);
                    audit_read(&config, "verify", json!({}), run).await
                }
                AuditCommand::Export {
                    config,
                    since,
                    format,
                } => {
                    let args = json!({ "since": since, "format": format });
                    let run = commands::audit_export(&config, since.as_deref(), &format);
                    audit_read(&config, "export", args, run).await
                }
            },
            Command::Evidence {
                config,
                from,
                to,
                output,
                format,
            } => {
                let args = json!({
                    "from": from,
                    "to": to,
                    "output": output.display().to_string(),
                    "format": format,
                });
                let run = async { evidence::run(&config, &from, &to, &output, format.as_deref()) };
                audit_read(&config, "evidence", args, run).await
            }
        }
    });
    match result {
        Ok(code) => code,
        // A closed pipe (`gatehouse audit export | head`) is not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the gateway with two glibc malloc arenas unless the environment chose otherwise.
///
/// Why: glibc gives each thread that allocates its own arena (up to eight per core) and keeps
/// what each one freed for that thread. A large result streamed through the two runtime
/// workers, the analysis and the audit threads left 77–90 MB resident after 3M masked rows,
/// against 49–54 MB with one or two arenas (`bench/masking.sh`), which is what "results
/// streamed with bounded memory" means. The allocator reads its settings before `main`, so
/// the process re-executes itself once, same pid, same arguments, with `MALLOC_ARENA_MAX=2`;
/// if that fails it carries on with the defaults.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn bound_malloc_arenas() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("MALLOC_ARENA_MAX").is_some()
        || std::env::var_os("GLIBC_TUNABLES").is_some()
    {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    let err = std::process::Command::new(&exe)
        .arg0(arg0)
        .args(args)
        .env("MALLOC_ARENA_MAX", "2")
        .exec();
    eprintln!("note: could not re-execute with MALLOC_ARENA_MAX=2 ({err}); using glibc's defaults");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn bound_malloc_arenas() {}
