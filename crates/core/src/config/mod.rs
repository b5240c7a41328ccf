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

mod audit;
mod connection;
mod identity;
mod listen;
mod notify;
mod secret;

pub use audit::*;
pub use connection::{
    Connection, ConnectionKind, InjectedHeader, ParseErrorAction, PoolMode, UpstreamTls,
};
pub use identity::*;
pub use listen::*;
pub use notify::*;
pub use secret::*;

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

pub(crate) fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
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
            fix(&mut c.upstream_rsa_public_key_file);
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

/// A URL the gateway fetches from or posts to (JWKS, webhooks, HTTP sinks): `https://`, or
/// `http://` on a loopback address (keys, events and signatures would otherwise cross the
/// network in the clear). The URL itself is never echoed.
pub(crate) fn check_remote_url(key: &str, url: &str) -> Result<(), ConfigError> {
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
pub(crate) fn resolve_against(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

pub(crate) fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
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
