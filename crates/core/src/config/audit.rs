//! `[store]` and `[audit]`: where records are kept, how durably, what is recorded of results,
//! retention, checkpoints, and the `[[audit.sink]]` copies to a SIEM.

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Store {
    #[serde(default = "default_store_url")]
    pub url: String,
}

/// Empty means "gatehouse.db inside data_dir" (resolved in `resolve_paths`).
pub(crate) fn default_store_url() -> String {
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

pub(crate) fn default_durability() -> AuditDurability {
    AuditDurability::Fsync
}

pub(crate) fn default_retention() -> u32 {
    400
}
pub(crate) fn default_record_results() -> RecordResults {
    RecordResults::Masked
}
pub(crate) fn default_result_cap() -> usize {
    65536
}
pub(crate) fn default_checkpoint_every() -> u64 {
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

pub(crate) fn default_lag_alert_records() -> u64 {
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
pub(crate) fn validate_sinks(sinks: &[AuditSink]) -> Result<(), ConfigError> {
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
