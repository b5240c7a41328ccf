//! `[[notify]]`: webhooks for approval events and failures of the audit control.

use super::*;

/// Scheme, host and port of a URL, for logs and records (its path and query may hold a token).
pub(crate) fn redact_url(url: &str) -> String {
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

pub(crate) fn default_notify_events() -> Vec<String> {
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
        Ok(Some(Secret::new(value)))
    }
}

/// Checks every `[[notify]]` entry. Keys are `notify[i].field`, `i` from 0 (like `rule[i]`).
pub(crate) fn validate_notify(entries: &[Notify]) -> Result<(), ConfigError> {
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
