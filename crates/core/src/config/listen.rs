//! `[listen]`: where the gateway accepts clients and its admin API, and the limits per
//! connection. Every address is loopback unless the file says otherwise.

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    #[serde(default = "default_pg_listen")]
    pub postgres: String,
    /// MySQL/MariaDB clients (absent: no listener).
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
        [("ssh", self.ssh.as_deref()), ("http", self.http.as_deref())]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect()
    }
}

pub(crate) fn default_max_connections() -> usize {
    1000
}
pub(crate) fn default_startup_timeout() -> String {
    "30s".into()
}
pub(crate) fn default_max_message_bytes() -> usize {
    64 * 1024 * 1024
}

pub(crate) fn default_pg_listen() -> String {
    "127.0.0.1:15432".into()
}
pub(crate) fn default_admin_listen() -> String {
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
