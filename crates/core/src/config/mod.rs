//! The configuration file: the keys of the README's configuration reference, parsed strictly.
//!
//! Unknown keys are rejected (`deny_unknown_fields`) so that a typo in a security setting is an
//! error at `gatehouse check` time instead of a silently ignored control. Relative paths are
//! resolved against the directory of the config file, so the same file works from any cwd.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod connection;
pub use connection::{
    Connection, ConnectionKind, InjectedHeader, ParseErrorAction, PoolMode, UpstreamTls,
};

/// Why a configuration was rejected: the key and the problem, never a secret value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub listen: Listen,
    #[serde(default)]
    pub tls: Tls,
    #[serde(default)]
    pub identity: Identity,
    #[serde(default)]
    pub store: Store,
    #[serde(default)]
    pub audit: Audit,
    #[serde(default, rename = "connection")]
    pub connections: Vec<Connection>,
    /// Masking rules (`[[mask]]`), typed; compiled by `masking::MaskSet::compile`.
    #[serde(default, rename = "mask")]
    pub masks: Vec<crate::masking::MaskRule>,
    /// Policy rules (`[[rule]]`), typed and validated; compiled by `policy::Policy::new`.
    #[serde(default, rename = "rule")]
    pub rules: Vec<crate::policy::Rule>,
    /// Webhooks for approval events (`[[notify]]`), delivered by the binary's notifier.
    #[serde(default, rename = "notify")]
    pub notify: Vec<Notify>,
    /// Directory of the config file; relative paths were resolved against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./gatehouse-data")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    #[serde(default = "default_pg_listen")]
    pub postgres: String,
    /// MySQL/MariaDB clients (absent: no listener). Part of the contract; not served by this
    /// version yet ([`Listen::unserved`]).
    pub mysql: Option<String>,
    /// SSH clients (absent: no listener). Not served by this version yet.
    pub ssh: Option<String>,
    /// HTTP API clients (absent: no listener). Not served by this version yet.
    pub http: Option<String>,
    #[serde(default = "default_admin_listen")]
    pub admin: String,
    /// Most client connections served at once; further ones wait in the accept queue.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Time a client has to complete TLS, startup and authentication (e.g. "30s").
    #[serde(default = "default_startup_timeout")]
    pub startup_timeout: String,
    /// Largest client message accepted (Query, Parse, Bind, CopyData).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
}

impl Listen {
    /// The `[listen]` keys set for protocols this version does not serve yet, with their
    /// addresses: nothing listens there (`gatehouse check` and `serve` say so).
    pub fn unserved(&self) -> Vec<(&'static str, &str)> {
        [
            ("mysql", self.mysql.as_deref()),
            ("ssh", self.ssh.as_deref()),
            ("http", self.http.as_deref()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }
}

fn default_max_connections() -> usize {
    1000
}
fn default_startup_timeout() -> String {
    "30s".into()
}
fn default_max_message_bytes() -> usize {
    64 * 1024 * 1024
}

fn default_pg_listen() -> String {
    "127.0.0.1:15432".into()
}
fn default_admin_listen() -> String {
    "127.0.0.1:8080".into()
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            postgres: default_pg_listen(),
            mysql: None,
            ssh: None,
            http: None,
            admin: default_admin_listen(),
            max_connections: default_max_connections(),
            startup_timeout: default_startup_timeout(),
            max_message_bytes: default_max_message_bytes(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    #[serde(default)]
    pub require: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    #[serde(default = "yes")]
    pub local_issuer: bool,
    #[serde(default)]
    pub admin_groups: Vec<String>,
    /// Groups of service identities (agents, CI jobs, bots): their interactive sessions are
    /// reported under PCI DSS 10.2.1.2 / 8.6.1 by `gatehouse evidence`.
    #[serde(default)]
    pub service_groups: Vec<String>,
    #[serde(default)]
    pub oidc: Vec<OidcIssuer>,
}

fn yes() -> bool {
    true
}

impl Default for Identity {
    fn default() -> Self {
        Self {
            local_issuer: true,
            admin_groups: Vec::new(),
            service_groups: Vec::new(),
            oidc: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcIssuer {
    pub issuer: String,
    pub audience: String,
    pub jwks_url: String,
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// CA bundle (PEM) trusted for the JWKS endpoint, in addition to none: when set, only it.
    pub ca_file: Option<PathBuf>,
    /// Accepted signature algorithms; defaults to the asymmetric ones (never HS*, never none).
    #[serde(default)]
    pub algorithms: Vec<String>,
}

fn default_groups_claim() -> String {
    "groups".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Store {
    #[serde(default = "default_store_url")]
    pub url: String,
}

/// Empty means "gatehouse.db inside data_dir" (resolved in `resolve_paths`).
fn default_store_url() -> String {
    String::new()
}

impl Default for Store {
    fn default() -> Self {
        Self {
            url: default_store_url(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordResults {
    None,
    Summary,
    Masked,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    #[serde(default = "yes")]
    pub fail_closed: bool,
    #[serde(default = "default_retention")]
    pub retention_days: u32,
    #[serde(default = "default_record_results")]
    pub record_results: RecordResults,
    #[serde(default = "default_result_cap")]
    pub result_cap_bytes: usize,
    /// A signed checkpoint is written after this many records (and on shutdown).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// When an audit record counts as durable: `fsync` (survives power loss; default) or `os`
    /// (written to the operating system; survives a gateway crash, not a machine crash).
    #[serde(default = "default_durability")]
    pub durability: AuditDurability,
    /// Continuous SIEM sinks (`[[audit.sink]]`), fed by tailing the store.
    #[serde(default, rename = "sink")]
    pub sinks: Vec<AuditSink>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditDurability {
    Fsync,
    Os,
}

fn default_durability() -> AuditDurability {
    AuditDurability::Fsync
}

fn default_retention() -> u32 {
    400
}
fn default_record_results() -> RecordResults {
    RecordResults::Masked
}
fn default_result_cap() -> usize {
    65536
}
fn default_checkpoint_every() -> u64 {
    1000
}

impl Default for Audit {
    fn default() -> Self {
        Self {
            fail_closed: true,
            retention_days: default_retention(),
            record_results: default_record_results(),
            result_cap_bytes: default_result_cap(),
            checkpoint_every: default_checkpoint_every(),
            durability: default_durability(),
            sinks: Vec::new(),
        }
    }
}

/// What a sink delivers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    File,
    Syslog,
    Http,
}

/// How each record is rendered: the `audit export` JSON line, or an ArcSight CEF line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkFormat {
    #[default]
    Jsonl,
    Cef,
}

/// Syslog transport: one datagram per record, TCP with octet-counting framing (RFC 6587), or
/// TLS with the same framing (RFC 5425; the server certificate is always verified).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogProtocol {
    #[default]
    Udp,
    Tcp,
    Tls,
}

/// One continuous SIEM sink (`[[audit.sink]]`). Kind-specific keys are optional here and
/// checked against `kind` by `validate`, so a key set on the wrong kind is an error.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSink {
    /// Unique; names the delivery position file `data_dir/sinks/<name>.seq` and the metrics.
    pub name: String,
    pub kind: SinkKind,
    #[serde(default)]
    pub format: SinkFormat,
    /// file: the output file (relative to the config file's directory).
    pub path: Option<PathBuf>,
    /// file: rotate when the file would grow beyond this (default 100 MiB).
    pub max_bytes: Option<u64>,
    /// file: rotated files kept (default 10).
    pub keep: Option<u32>,
    /// syslog: `host:port`.
    pub address: Option<String>,
    /// syslog: `udp` (default), `tcp` or `tls`.
    pub protocol: Option<SyslogProtocol>,
    /// syslog over TLS: PEM bundle of the only trusted CA certificates (relative to the config
    /// file's directory); without it the platform trust store is used.
    pub ca_file: Option<PathBuf>,
    /// syslog over TLS: the name checked against the server certificate (default: the host
    /// part of `address`).
    pub server_name: Option<String>,
    /// http: `https://`, or `http://` on a loopback address only.
    pub url: Option<String>,
    /// http: records per POST (default 100).
    pub batch: Option<usize>,
    /// http: environment variable holding the HMAC secret that signs each POST.
    pub secret_env: Option<String>,
    /// An error is logged while more records than this wait for delivery (default 10000).
    #[serde(default = "default_lag_alert_records")]
    pub lag_alert_records: u64,
}

fn default_lag_alert_records() -> u64 {
    10_000
}

impl AuditSink {
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes.unwrap_or(100 * 1024 * 1024)
    }
    pub fn keep(&self) -> u32 {
        self.keep.unwrap_or(10)
    }
    pub fn protocol(&self) -> SyslogProtocol {
        self.protocol.unwrap_or_default()
    }
    pub fn batch(&self) -> usize {
        self.batch.unwrap_or(100)
    }
    /// syslog over TLS: `server_name`, else the host part of `address` (without `[]`).
    pub fn tls_server_name(&self) -> Option<String> {
        if let Some(n) = &self.server_name {
            return Some(n.clone());
        }
        let (host, _) = self.address.as_deref()?.rsplit_once(':')?;
        Some(
            host.strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host)
                .to_owned(),
        )
    }
    /// The file sink's path, resolved against `base_dir` (the config file's directory).
    pub fn file_path(&self, base_dir: &Path) -> Option<PathBuf> {
        self.path.as_ref().map(|p| {
            if p.is_absolute() {
                p.clone()
            } else {
                base_dir.join(p)
            }
        })
    }
    /// Scheme, host and port of `url` only (the path may hold a token).
    pub fn redacted_url(&self) -> String {
        self.url
            .as_deref()
            .map_or_else(|| "(no url)".to_owned(), redact_url)
    }
}

impl fmt::Debug for AuditSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditSink")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("format", &self.format)
            .field("path", &self.path)
            .field("address", &self.address)
            .field("protocol", &self.protocol)
            .field("ca_file", &self.ca_file)
            .field("server_name", &self.server_name)
            .field("url", &self.redacted_url())
            .field("signed", &self.secret_env.is_some())
            .finish_non_exhaustive()
    }
}

/// Checks every `[[audit.sink]]`. Keys are `audit.sink[i].field`, `i` from 0.
fn validate_sinks(sinks: &[AuditSink]) -> Result<(), ConfigError> {
    let mut names = BTreeSet::new();
    for (i, s) in sinks.iter().enumerate() {
        let key = format!("audit.sink[{i}]");
        if s.name.is_empty() {
            return Err(invalid(format!("{key}.name"), "must not be empty"));
        }
        if !s
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            || s.name.starts_with('.')
        {
            return Err(invalid(
                format!("{key}.name"),
                format!(
                    "{:?} may hold only letters, digits, '-', '_' and '.' (not first)",
                    s.name
                ),
            ));
        }
        if !names.insert(s.name.as_str()) {
            return Err(invalid(
                format!("{key}.name"),
                format!("duplicate sink name {:?}", s.name),
            ));
        }
        if s.lag_alert_records == 0 {
            return Err(invalid(
                format!("{key}.lag_alert_records"),
                "must be greater than 0",
            ));
        }
        let (kind, allowed): (&str, &[&str]) = match s.kind {
            SinkKind::File => ("file", &["path", "max_bytes", "keep"]),
            SinkKind::Syslog => ("syslog", &["address", "protocol", "ca_file", "server_name"]),
            SinkKind::Http => ("http", &["url", "batch", "secret_env"]),
        };
        let set = [
            ("path", s.path.is_some()),
            ("max_bytes", s.max_bytes.is_some()),
            ("keep", s.keep.is_some()),
            ("address", s.address.is_some()),
            ("protocol", s.protocol.is_some()),
            ("ca_file", s.ca_file.is_some()),
            ("server_name", s.server_name.is_some()),
            ("url", s.url.is_some()),
            ("batch", s.batch.is_some()),
            ("secret_env", s.secret_env.is_some()),
        ];
        if let Some((field, _)) = set.iter().find(|(f, on)| *on && !allowed.contains(f)) {
            return Err(invalid(
                format!("{key}.{field}"),
                format!(
                    "is not a key of kind = \"{kind}\" (its keys: {})",
                    allowed.join(", ")
                ),
            ));
        }
        match s.kind {
            SinkKind::File => {
                if s.path.as_ref().is_none_or(|p| p.as_os_str().is_empty()) {
                    return Err(invalid(
                        format!("{key}.path"),
                        "is required for kind = \"file\"",
                    ));
                }
                if s.max_bytes() < 1024 {
                    return Err(invalid(format!("{key}.max_bytes"), "must be at least 1024"));
                }
                if s.keep() == 0 {
                    return Err(invalid(
                        format!("{key}.keep"),
                        "must be at least 1 (rotation would delete records)",
                    ));
                }
            }
            SinkKind::Syslog => {
                let Some(addr) = s.address.as_deref() else {
                    return Err(invalid(
                        format!("{key}.address"),
                        "is required for kind = \"syslog\"",
                    ));
                };
                let ok = addr
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
                if !ok {
                    return Err(invalid(
                        format!("{key}.address"),
                        format!("{addr:?} is not a host:port address"),
                    ));
                }
                if s.protocol() == SyslogProtocol::Tls {
                    let field = if s.server_name.is_some() {
                        "server_name"
                    } else {
                        "address"
                    };
                    let name = s.tls_server_name().unwrap_or_default();
                    // A DNS name or an IP address (rustls checks it exactly at start).
                    let dns = !name.is_empty()
                        && name.len() <= 253
                        && name.split('.').all(|l| {
                            !l.is_empty()
                                && l.chars()
                                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
                        });
                    if !dns && name.parse::<std::net::IpAddr>().is_err() {
                        return Err(invalid(
                            format!("{key}.{field}"),
                            format!("{name:?} is not a valid TLS server name"),
                        ));
                    }
                } else {
                    for (field, on) in [
                        ("ca_file", s.ca_file.is_some()),
                        ("server_name", s.server_name.is_some()),
                    ] {
                        if on {
                            return Err(invalid(
                                format!("{key}.{field}"),
                                "is only used with protocol = \"tls\"",
                            ));
                        }
                    }
                }
            }
            SinkKind::Http => {
                let Some(url) = s.url.as_deref() else {
                    return Err(invalid(
                        format!("{key}.url"),
                        "is required for kind = \"http\"",
                    ));
                };
                check_remote_url(&format!("{key}.url"), url)?;
                if !(1..=10_000).contains(&s.batch()) {
                    return Err(invalid(
                        format!("{key}.batch"),
                        "must be between 1 and 10000",
                    ));
                }
                if s.secret_env.as_deref().is_some_and(str::is_empty) {
                    return Err(invalid(format!("{key}.secret_env"), "must not be empty"));
                }
            }
        }
    }
    Ok(())
}

/// A secret read from the environment or a file; `Debug` never prints it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Config {
    /// Reads, parses, resolves relative paths and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    p.to_owned()
                }
            })
            .unwrap_or_else(|| PathBuf::from("."));
        let base = std::fs::canonicalize(&base).unwrap_or(base);
        Self::from_toml(&text, &base).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses config text; `base_dir` anchors relative paths.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        cfg.base_dir = base_dir.to_owned();
        cfg.resolve_paths();
        cfg.validate()?;
        Ok(cfg)
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        resolve_against(&self.base_dir, p)
    }

    fn resolve_paths(&mut self) {
        let base = self.base_dir.clone();
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(path) = p.take() {
                *p = Some(resolve_against(&base, &path));
            }
        };
        self.data_dir = resolve_against(&base, &self.data_dir);
        fix(&mut self.tls.cert);
        fix(&mut self.tls.key);
        for o in &mut self.identity.oidc {
            fix(&mut o.ca_file);
        }
        for c in &mut self.connections {
            fix(&mut c.password_file);
            fix(&mut c.upstream_ca_file);
            fix(&mut c.private_key_file);
            for h in &mut c.headers {
                fix(&mut h.value_file);
            }
        }
        for sink in &mut self.audit.sinks {
            fix(&mut sink.ca_file);
        }
        if self.store.url.is_empty() {
            self.store.url = format!("sqlite://{}", self.data_dir.join("gatehouse.db").display());
        }
        if let Some(rest) = self.store.url.strip_prefix("sqlite://") {
            let (path, query) = match rest.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (rest, None),
            };
            if !path.is_empty() && !path.starts_with(':') {
                let abs = self.resolve(Path::new(path));
                self.store.url = match query {
                    Some(q) => format!("sqlite://{}?{q}", abs.display()),
                    None => format!("sqlite://{}", abs.display()),
                };
            }
        }
    }

    /// Checks what serde cannot: addresses, duplicates, references, secrets present.
    pub fn validate(&self) -> Result<(), ConfigError> {
        parse_addr("listen.postgres", &self.listen.postgres)?;
        parse_addr("listen.admin", &self.listen.admin)?;
        for (k, v) in self.listen.unserved() {
            parse_addr(&format!("listen.{k}"), v)?;
        }
        if parse_duration(&self.listen.startup_timeout).is_none_or(|d| d.is_zero()) {
            return Err(invalid(
                "listen.startup_timeout",
                format!(
                    "{:?} is not a duration such as 30s",
                    self.listen.startup_timeout
                ),
            ));
        }
        if self.listen.max_connections == 0 {
            return Err(invalid("listen.max_connections", "must be greater than 0"));
        }
        if self.listen.max_message_bytes < 1024 {
            return Err(invalid("listen.max_message_bytes", "must be at least 1024"));
        }
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) => {
                return Err(invalid("tls.key", "tls.cert is set but tls.key is not"));
            }
            (None, Some(_)) => {
                return Err(invalid("tls.cert", "tls.key is set but tls.cert is not"));
            }
            _ => {}
        }
        if !self.store.url.starts_with("sqlite://") {
            return Err(invalid(
                "store.url",
                "only sqlite:// is supported in this version (postgres:// is planned)",
            ));
        }
        if self.audit.result_cap_bytes == 0 {
            return Err(invalid("audit.result_cap_bytes", "must be greater than 0"));
        }
        if self.audit.retention_days == 0 {
            return Err(invalid("audit.retention_days", "must be greater than 0"));
        }
        if self.audit.checkpoint_every == 0 {
            return Err(invalid("audit.checkpoint_every", "must be greater than 0"));
        }
        validate_sinks(&self.audit.sinks)?;
        for (i, o) in self.identity.oidc.iter().enumerate() {
            let key = format!("identity.oidc[{i}]");
            if o.issuer.is_empty() {
                return Err(invalid(format!("{key}.issuer"), "must not be empty"));
            }
            if o.audience.is_empty() {
                return Err(invalid(format!("{key}.audience"), "must not be empty"));
            }
            check_remote_url(&format!("{key}.jwks_url"), &o.jwks_url)?;
            for alg in &o.algorithms {
                if !crate::identity::ALLOWED_ALGORITHMS.contains(&alg.as_str()) {
                    return Err(invalid(
                        format!("{key}.algorithms"),
                        format!(
                            "{alg:?} is not allowed (allowed: {})",
                            crate::identity::ALLOWED_ALGORITHMS.join(", ")
                        ),
                    ));
                }
            }
        }
        let mut names = BTreeSet::new();
        for (i, c) in self.connections.iter().enumerate() {
            let key = format!("connection[{i}]");
            if c.name.is_empty() {
                return Err(invalid(format!("{key}.name"), "must not be empty"));
            }
            if !names.insert(c.name.clone()) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("duplicate connection name {:?}", c.name),
                ));
            }
            c.validate(&key)?;
        }
        let connection_names: Vec<&str> =
            self.connections.iter().map(|c| c.name.as_str()).collect();
        crate::policy::validate_rules(&self.rules, Some(&connection_names))
            .map_err(|e| invalid(e.key, e.problem))?;
        for (i, m) in self.masks.iter().enumerate() {
            if let Some(c) = m
                .connections
                .iter()
                .find(|c| !connection_names.contains(&c.as_str()))
            {
                return Err(invalid(
                    format!("mask[{}].connections", i + 1),
                    format!("no [[connection]] is named {c:?}"),
                ));
            }
        }
        crate::masking::MaskSet::compile(
            &self.masks,
            crate::masking::TokenKey::from_bytes([0; 32]),
        )
        .map_err(|e| match e.split_once(": ") {
            Some((key, problem)) => invalid(key, problem),
            None => invalid("mask", e),
        })?;
        validate_notify(&self.notify)?;
        Ok(())
    }

    pub fn connection(&self, name: &str) -> Option<&Connection> {
        self.connections.iter().find(|c| c.name == name)
    }

    /// Path of the SQLite database behind `store.url`.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        let rest = self.store.url.strip_prefix("sqlite://")?;
        let path = rest.split_once('?').map(|(p, _)| p).unwrap_or(rest);
        Some(PathBuf::from(path))
    }
}

// ---------------------------------------------------------------------------------------------
// [[notify]]: webhooks for approval events
// ---------------------------------------------------------------------------------------------

/// Scheme, host and port of a URL, for logs and records (its path and query may hold a token).
fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{}://{h}:{p}/...", u.scheme()),
            (Some(h), None) => format!("{}://{h}/...", u.scheme()),
            _ => "(invalid url)".to_owned(),
        },
        Err(_) => "(invalid url)".to_owned(),
    }
}

/// The events a `[[notify]]` entry can subscribe to: approval requests and decisions, and
/// failures of the audit control itself (PCI DSS 10.7.2: a failed audit write, a failed
/// periodic chain verification, a SIEM sink lagging, CLI reads of the audit store that cannot
/// be chained). An entry without `events` gets all.
pub const NOTIFY_EVENTS: &[&str] = &[
    "approval.requested",
    "approval.decided",
    "audit.write_failed",
    "audit.verify_failed",
    "audit.sink_lag",
    "audit.access_log_failed",
];

/// One webhook (`[[notify]]`). The URL may carry a token in its path (Slack's do) and the
/// secret signs every delivery, so `Debug` shows neither.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// A label for logs and metrics (default `notify[i]`).
    pub name: Option<String>,
    /// `https://`, or `http://` on a loopback address only.
    pub url: String,
    /// Environment variable holding the shared HMAC secret.
    pub secret_env: Option<String>,
    /// File holding the shared HMAC secret (a trailing newline is dropped).
    pub secret_file: Option<PathBuf>,
    /// Which events are posted (default: all of [`NOTIFY_EVENTS`]).
    #[serde(default = "default_notify_events")]
    pub events: Vec<String>,
    #[serde(default)]
    pub format: NotifyFormat,
}

/// The body of a delivery: the event as JSON, or a Slack-compatible `{"text": ...}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyFormat {
    #[default]
    Json,
    Slack,
}

fn default_notify_events() -> Vec<String> {
    NOTIFY_EVENTS.iter().map(|e| (*e).to_owned()).collect()
}

impl fmt::Debug for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = match (&self.secret_env, &self.secret_file) {
            (Some(_), _) => "env",
            (None, Some(_)) => "file",
            (None, None) => "none",
        };
        f.debug_struct("Notify")
            .field("name", &self.name)
            .field("url", &self.redacted_url())
            .field("secret", &secret)
            .field("events", &self.events)
            .field("format", &self.format)
            .finish()
    }
}

impl Notify {
    /// The label used in logs and metrics: `name`, or `notify[i]`.
    pub fn label(&self, index: usize) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => format!("notify[{index}]"),
        }
    }

    /// Scheme, host and port only: the path and query may hold a token.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// Whether `event` is posted to this webhook.
    pub fn wants(&self, event: &str) -> bool {
        self.events.iter().any(|e| e == event)
    }

    /// Reads the shared secret from `secret_env` or `secret_file` (a relative file is resolved
    /// against `base_dir`, the config file's directory). `key` is `notify[i]`.
    pub fn secret(&self, key: &str, base_dir: &Path) -> Result<Option<Secret>, ConfigError> {
        let value = if let Some(var) = &self.secret_env {
            match std::env::var(var) {
                Ok(v) => v,
                Err(_) => {
                    return Err(invalid(
                        format!("{key}.secret_env"),
                        format!("environment variable {var} is not set"),
                    ));
                }
            }
        } else if let Some(path) = &self.secret_file {
            let path = if path.is_absolute() {
                path.clone()
            } else {
                base_dir.join(path)
            };
            match std::fs::read_to_string(&path) {
                Ok(v) => v.trim_end_matches(['\n', '\r']).to_owned(),
                Err(e) => {
                    return Err(invalid(
                        format!("{key}.secret_file"),
                        format!("cannot read {}: {e}", path.display()),
                    ));
                }
            }
        } else {
            return Ok(None);
        };
        if value.is_empty() {
            let field = if self.secret_env.is_some() {
                "secret_env"
            } else {
                "secret_file"
            };
            return Err(invalid(format!("{key}.{field}"), "the secret is empty"));
        }
        Ok(Some(Secret(value)))
    }
}

/// Checks every `[[notify]]` entry. Keys are `notify[i].field`, `i` from 0 (like `rule[i]`).
fn validate_notify(entries: &[Notify]) -> Result<(), ConfigError> {
    let mut names = BTreeSet::new();
    for (i, n) in entries.iter().enumerate() {
        let key = format!("notify[{i}]");
        check_remote_url(&format!("{key}.url"), &n.url)?;
        if let Some(name) = &n.name {
            if name.is_empty() {
                return Err(invalid(format!("{key}.name"), "must not be empty"));
            }
            if !names.insert(name.as_str()) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("duplicate notify name {name:?}"),
                ));
            }
        }
        if n.secret_env.is_some() && n.secret_file.is_some() {
            return Err(invalid(
                format!("{key}.secret_env"),
                "set secret_env or secret_file, not both",
            ));
        }
        if n.events.is_empty() {
            return Err(invalid(
                format!("{key}.events"),
                "is empty: nothing would be sent",
            ));
        }
        if let Some(e) = n
            .events
            .iter()
            .find(|e| !NOTIFY_EVENTS.contains(&e.as_str()))
        {
            return Err(invalid(
                format!("{key}.events"),
                format!("unknown event {e:?} (known: {})", NOTIFY_EVENTS.join(", ")),
            ));
        }
    }
    Ok(())
}

/// A URL the gateway fetches from or posts to (JWKS, webhooks, HTTP sinks): `https://`, or
/// `http://` on a loopback address (keys, events and signatures would otherwise cross the
/// network in the clear). The URL itself is never echoed.
fn check_remote_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| invalid(key, format!("is not a URL: {e}")))?;
    match parsed.scheme() {
        "https" if parsed.host_str().is_some() => Ok(()),
        "http" => {
            let host = parsed.host_str().unwrap_or("");
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err(invalid(
                    key,
                    "must be https:// (http:// is accepted only on loopback addresses)",
                ))
            }
        }
        _ => Err(invalid(key, "must be an https:// URL")),
    }
}

/// `p` as given if absolute, else relative to `base` (the config file's directory).
fn resolve_against(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| invalid(key, format!("{value:?} is not an ip:port address")))
}

/// Parses durations such as `15m`, `30s`, `2h`, `1d`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
data_dir = "./data"
[listen]
postgres = "127.0.0.1:15432"
admin = "127.0.0.1:8080"
[[connection]]
name = "payments"
upstream = "127.0.0.1:5432"
database = "payments"
user = "svc"
password_file = "pw.txt"
allow_groups = ["dba"]
"#;

    #[test]
    fn resolves_relative_paths_against_config_dir() {
        let cfg = Config::from_toml(GOOD, Path::new("/etc/gh")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.data_dir, PathBuf::from("/etc/gh/./data"));
        assert_eq!(
            cfg.connections
                .first()
                .and_then(|c| c.password_file.clone()),
            Some(PathBuf::from("/etc/gh/pw.txt"))
        );
        assert_eq!(cfg.store.url, "sqlite:///etc/gh/./data/gatehouse.db");
    }

    #[test]
    fn rejects_unknown_keys_and_names_them() {
        let bad = GOOD.replace("user = \"svc\"", "usr = \"svc\"");
        let err = Config::from_toml(&bad, Path::new("/"))
            .err()
            .map(|e| e.to_string());
        assert!(err.as_deref().unwrap_or("").contains("usr"), "{err:?}");
    }

    #[test]
    fn rejects_bad_listen_address() {
        let bad = GOOD.replace("127.0.0.1:8080", "localhost");
        let err = Config::from_toml(&bad, Path::new("/"))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("listen.admin: \"localhost\" is not an ip:port address")
        );
    }

    #[test]
    fn jwks_url_must_be_https_unless_loopback() {
        assert!(check_remote_url("k", "https://idp.example.com/jwks").is_ok());
        assert!(check_remote_url("k", "http://127.0.0.1:9000/jwks").is_ok());
        assert!(check_remote_url("k", "http://localhost/jwks").is_ok());
        assert!(check_remote_url("k", "http://idp.example.com/jwks").is_err());
        assert!(check_remote_url("k", "ftp://x").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("15"), None);
        assert_eq!(parse_duration("m"), None);
    }

    fn notify_err(entries: &str) -> String {
        match Config::from_toml(&format!("{GOOD}\n{entries}"), Path::new("/")) {
            Ok(_) => panic!("accepted:\n{entries}"),
            Err(e) => e.to_string(),
        }
    }

    const NOTIFY_OK: &str = "[[notify]]\nurl = \"https://hooks.example.com/T1/B2/sekrit\"\n";

    #[test]
    fn notify_entries_parse_with_defaults_and_hide_url_path() {
        let text = format!(
            "{GOOD}\n{NOTIFY_OK}\n[[notify]]\nname = \"local\"\nurl = \"http://[::1]:9/x\"\n\
             secret_file = \"hook.secret\"\nevents = [\"approval.decided\"]\nformat = \"slack\"\n"
        );
        let cfg = Config::from_toml(&text, Path::new("/etc/gh")).unwrap_or_else(|e| panic!("{e}"));
        let [a, b] = cfg.notify.as_slice() else {
            panic!("{:?}", cfg.notify)
        };
        assert!(a.wants("approval.requested") && a.wants("approval.decided"));
        assert_eq!(a.format, NotifyFormat::Json);
        assert_eq!(a.label(0), "notify[0]");
        let debug = format!("{a:?}");
        assert!(!debug.contains("sekrit"), "{debug}");
        assert!(debug.contains("hooks.example.com"), "{debug}");
        assert_eq!(b.label(1), "local");
        assert_eq!(b.format, NotifyFormat::Slack);
        assert!(!b.wants("approval.requested"));
        let err = b
            .secret("notify[1]", Path::new("/nonexistent-dir"))
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .unwrap_or("")
                .starts_with("notify[1].secret_file: cannot read /nonexistent-dir/hook.secret"),
            "{err:?}"
        );
        assert!(matches!(a.secret("notify[0]", Path::new("/")), Ok(None)));
    }

    #[test]
    fn notify_rejections_name_the_entry() {
        for (entry, expect) in [
            (
                "url = \"http://example.com/hook\"",
                "notify[1].url: must be https:// (http:// is accepted only on loopback",
            ),
            (
                "url = \"ftp://example.com/\"",
                "notify[1].url: must be an https:// URL",
            ),
            ("url = \"not a url\"", "notify[1].url: is not a URL"),
            (
                "url = \"https://x.example/\"\nevents = [\"approval.granted\"]",
                "notify[1].events: unknown event \"approval.granted\"",
            ),
            (
                "url = \"https://x.example/\"\nevents = []",
                "notify[1].events: is empty",
            ),
            (
                "url = \"https://x.example/\"\nsecret_env = \"A\"\nsecret_file = \"b\"",
                "notify[1].secret_env: set secret_env or secret_file, not both",
            ),
            (
                "url = \"https://x.example/\"\nformat = \"xml\"",
                "unknown variant `xml`",
            ),
            (
                "url = \"https://x.example/\"\nsecret = \"x\"",
                "unknown field `secret`",
            ),
        ] {
            let err = notify_err(&format!("{NOTIFY_OK}\n[[notify]]\n{entry}\n"));
            assert!(err.contains(expect), "{entry}: {err}");
        }
        for ok in [
            "http://127.0.0.1:9000/hook",
            "http://localhost/hook",
            "http://[::1]/hook",
        ] {
            let text = format!("{GOOD}\n[[notify]]\nurl = \"{ok}\"\n");
            assert!(Config::from_toml(&text, Path::new("/")).is_ok(), "{ok}");
        }
        let dup = format!(
            "{NOTIFY_OK}name = \"a\"\n[[notify]]\nurl = \"https://y.example/\"\nname = \"a\"\n"
        );
        assert!(
            notify_err(&dup).contains("notify[1].name: duplicate"),
            "{}",
            notify_err(&dup)
        );
    }

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(
            format!("{:?}", Secret::new("hunter2".into())),
            "Secret(***)"
        );
    }
}
