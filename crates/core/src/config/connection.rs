//! `[[connection]]`: one upstream target, typed by its `kind`.
//!
//! Every kind shares the admission keys (`name`, `allow_groups`, the grant keys); the rest
//! depends on the protocol. `kind` selects which keys apply: a key of another kind is an error
//! (`connection[N].headers: not a key of kind = "postgres"`), so a config written for one
//! protocol cannot silently half-apply to another. [`Connection::target`] is the typed view an
//! adapter reads.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, Secret, invalid, parse_duration};

/// The protocol of a connection (`kind`; default `postgres`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionKind {
    #[default]
    Postgres,
    Mysql,
    Ssh,
    Http,
}

impl ConnectionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
            Self::Ssh => "ssh",
            Self::Http => "http",
        }
    }

    /// Whether this version has the adapter that serves the kind.
    pub fn is_served(self) -> bool {
        matches!(self, Self::Postgres | Self::Mysql)
    }

    /// The `[listen]` key whose listener serves the kind.
    pub fn listen_key(self) -> &'static str {
        self.as_str()
    }
}

impl fmt::Display for ConnectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `kind = "http"`: one header carrying the held credential, e.g.
/// `{ name = "Authorization", value_env = "BILLING_API_TOKEN", prefix = "Bearer " }`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectedHeader {
    pub name: String,
    pub value_env: Option<String>,
    pub value_file: Option<PathBuf>,
    #[serde(default)]
    pub prefix: String,
}

impl fmt::Debug for InjectedHeader {
    // The value is a secret: only where it comes from is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InjectedHeader")
            .field("name", &self.name)
            .field("value_env", &self.value_env)
            .field("value_file", &self.value_file)
            .finish_non_exhaustive()
    }
}

/// The typed view of a connection's protocol keys (see [`Connection::target`]).
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// `postgres` and `mysql`: a database server.
    Database {
        upstream: &'a str,
        database: &'a str,
        user: &'a str,
        upstream_tls: UpstreamTls,
    },
    Ssh {
        upstream: &'a str,
        user: &'a str,
        host_key: &'a str,
        private_key_file: Option<&'a std::path::Path>,
    },
    Http {
        base_url: &'a str,
        headers: &'a [InjectedHeader],
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTls {
    Disable,
    Prefer,
    Require,
    VerifyFull,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    pub name: String,
    /// Which protocol the connection speaks; selects the keys that apply (see
    /// [`ConnectionKind`]).
    #[serde(default)]
    pub kind: ConnectionKind,
    /// `host:port` (postgres, mysql, ssh) or the base URL (http).
    pub upstream: String,
    /// The upstream database (postgres, mysql).
    #[serde(default)]
    pub database: String,
    /// The upstream login (postgres, mysql, ssh).
    #[serde(default)]
    pub user: String,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_upstream_tls")]
    pub upstream_tls: UpstreamTls,
    /// CA bundle for `upstream_tls = "verify-full"`.
    pub upstream_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub allow_groups: Vec<String>,
    /// What to do with a statement PostgreSQL's parser rejects: `block` (default) or `forward`
    /// (let the server reject it too).
    #[serde(default)]
    pub on_parse_error: ParseErrorAction,
    /// Groups that may approve time-bound access grants to this connection (see
    /// [`crate::grants`]); empty: grants to it are refused.
    #[serde(default)]
    pub grant_approvers: Vec<String>,
    /// Longest grant that may be requested, e.g. "8h".
    #[serde(default = "default_grant_max_duration")]
    pub grant_max_duration: String,
    /// Distinct approvers a grant needs (at least 1). One denial suffices.
    #[serde(default = "default_grant_min_approvals")]
    pub grant_min_approvals: u32,
    /// Whether upstream connections are kept and reused across client sessions (reset with
    /// `DISCARD ALL` in between): `session` (default) or `none` (one login per client).
    #[serde(default)]
    pub pool: PoolMode,
    /// Most upstream connections open at once for this connection (pooled or in use).
    #[serde(default = "default_max_upstream")]
    pub max_upstream: u32,
    /// An unused pooled upstream connection is closed after this long, e.g. "5m".
    #[serde(default = "default_pool_idle_timeout")]
    pub pool_idle_timeout: String,
    /// How long a client waits for an upstream connection when `max_upstream` are in use
    /// before it is refused (`53300`), e.g. "30s".
    #[serde(default = "default_pool_wait_timeout")]
    pub pool_wait_timeout: String,
    /// `kind = "mysql"`: the upstream server's RSA public key (PEM), pinned. Without TLS to
    /// the upstream, `caching_sha2_password` full authentication sends the held password
    /// encrypted to this key; the gateway never asks the server for its key (whoever sits on
    /// the path could answer with their own and read the password).
    pub upstream_rsa_public_key_file: Option<PathBuf>,
    /// `kind = "ssh"`: the held private key the gateway logs in upstream with.
    pub private_key_file: Option<PathBuf>,
    /// `kind = "ssh"`: the upstream's host key fingerprint (`SHA256:…`), required.
    pub host_key: Option<String>,
    /// `kind = "http"`: the held credential, injected as request headers.
    #[serde(default)]
    pub headers: Vec<InjectedHeader>,
    /// `kind = "http"`: how long to wait for the upstream's response headers, e.g. "30s".
    pub timeout: Option<String>,
}

/// See [`Connection::pool`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    #[default]
    Session,
    None,
}

fn default_max_upstream() -> u32 {
    100
}
fn default_pool_idle_timeout() -> String {
    "5m".into()
}
fn default_pool_wait_timeout() -> String {
    "30s".into()
}

fn default_grant_max_duration() -> String {
    "8h".into()
}
fn default_grant_min_approvals() -> u32 {
    1
}

/// See [`Connection::on_parse_error`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParseErrorAction {
    #[default]
    Block,
    Forward,
}

fn default_upstream_tls() -> UpstreamTls {
    UpstreamTls::Prefer
}

impl fmt::Debug for Connection {
    // Written by hand so that a future secret field can never slip into Debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("upstream", &self.upstream)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("upstream_tls", &self.upstream_tls)
            .field("allow_groups", &self.allow_groups)
            .field("grant_approvers", &self.grant_approvers)
            .field("pool", &self.pool)
            .field("max_upstream", &self.max_upstream)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Reads the upstream password from `password_env` or `password_file`.
    pub fn password(&self) -> Result<Option<Secret>, ConfigError> {
        let key = format!("connection[{}]", self.name);
        if let Some(var) = &self.password_env {
            return match std::env::var(var) {
                Ok(v) => Ok(Some(Secret::new(v))),
                Err(_) => Err(invalid(
                    format!("{key}.password_env"),
                    format!("environment variable {var} is not set"),
                )),
            };
        }
        if let Some(path) = &self.password_file {
            return match std::fs::read_to_string(path) {
                Ok(v) => Ok(Some(Secret::new(
                    v.trim_end_matches(['\n', '\r']).to_owned(),
                ))),
                Err(e) => Err(invalid(
                    format!("{key}.password_file"),
                    format!("cannot read {}: {e}", path.display()),
                )),
            };
        }
        Ok(None)
    }

    /// Whether an identity with these groups may use this connection.
    pub fn admits(&self, groups: &[String]) -> bool {
        self.allow_groups
            .iter()
            .any(|g| g == "*" || groups.iter().any(|h| h == g))
    }
}

impl Connection {
    /// The protocol keys of this connection, typed by its kind (after [`Connection::validate`]).
    pub fn target(&self) -> Target<'_> {
        match self.kind {
            ConnectionKind::Postgres | ConnectionKind::Mysql => Target::Database {
                upstream: &self.upstream,
                database: &self.database,
                user: &self.user,
                upstream_tls: self.upstream_tls,
            },
            ConnectionKind::Ssh => Target::Ssh {
                upstream: &self.upstream,
                user: &self.user,
                host_key: self.host_key.as_deref().unwrap_or_default(),
                private_key_file: self.private_key_file.as_deref(),
            },
            ConnectionKind::Http => Target::Http {
                base_url: &self.upstream,
                headers: &self.headers,
            },
        }
    }

    /// Checks what serde cannot, for the keys of this connection's kind; `key` names it in
    /// errors (`connection[N]`).
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        self.validate_kind_keys(key)?;
        if self.password_env.is_some() && self.password_file.is_some() {
            return Err(invalid(
                format!("{key}.password_env"),
                "set password_env or password_file, not both",
            ));
        }
        if self.allow_groups.is_empty() {
            return Err(invalid(
                format!("{key}.allow_groups"),
                "is empty: nobody could use this connection",
            ));
        }
        if parse_duration(&self.grant_max_duration).is_none_or(|d| d.is_zero()) {
            return Err(invalid(
                format!("{key}.grant_max_duration"),
                format!("{:?} is not a duration such as 8h", self.grant_max_duration),
            ));
        }
        if self.max_upstream == 0 {
            return Err(invalid(format!("{key}.max_upstream"), "must be at least 1"));
        }
        for (field, value) in [
            ("pool_idle_timeout", &self.pool_idle_timeout),
            ("pool_wait_timeout", &self.pool_wait_timeout),
        ] {
            if parse_duration(value).is_none_or(|d| d.is_zero()) {
                return Err(invalid(
                    format!("{key}.{field}"),
                    format!("{value:?} is not a duration such as 30s"),
                ));
            }
        }
        if self.grant_min_approvals == 0 {
            return Err(invalid(
                format!("{key}.grant_min_approvals"),
                "must be at least 1",
            ));
        }
        if self
            .grant_approvers
            .iter()
            .any(|g| g.is_empty() || g == "*")
        {
            return Err(invalid(
                format!("{key}.grant_approvers"),
                "name the approver groups (empty names and \"*\" are not allowed)",
            ));
        }
        if !self.kind.is_served() {
            return Err(invalid(
                format!("{key}.kind"),
                format!(
                    "kind = \"{}\" is part of the contract but not served by this version yet \
                     (served: postgres)",
                    self.kind
                ),
            ));
        }
        Ok(())
    }

    /// The keys of other kinds must not be set; the keys this kind requires must be.
    fn validate_kind_keys(&self, key: &str) -> Result<(), ConfigError> {
        use ConnectionKind::*;
        let kind = self.kind;
        let not_of_kind = |field: &str| {
            invalid(
                format!("{key}.{field}"),
                format!("not a key of kind = \"{kind}\""),
            )
        };
        let database = matches!(kind, Postgres | Mysql);
        let set: [(&str, bool, bool); 8] = [
            ("database", !self.database.is_empty(), database),
            ("user", !self.user.is_empty(), kind != Http),
            (
                "private_key_file",
                self.private_key_file.is_some(),
                kind == Ssh,
            ),
            ("host_key", self.host_key.is_some(), kind == Ssh),
            (
                "upstream_rsa_public_key_file",
                self.upstream_rsa_public_key_file.is_some(),
                kind == Mysql,
            ),
            ("headers", !self.headers.is_empty(), kind == Http),
            ("timeout", self.timeout.is_some(), kind == Http),
            (
                "on_parse_error",
                self.on_parse_error != ParseErrorAction::Block,
                database,
            ),
        ];
        if let Some((field, _, _)) = set.iter().find(|(_, is_set, allowed)| *is_set && !allowed) {
            return Err(not_of_kind(field));
        }
        let required: &[(&str, bool)] = match kind {
            Postgres | Mysql => &[
                ("database", self.database.is_empty()),
                ("user", self.user.is_empty()),
            ],
            Ssh => &[
                ("user", self.user.is_empty()),
                ("host_key", self.host_key.is_none()),
            ],
            Http => &[],
        };
        if let Some((field, _)) = required.iter().find(|(_, missing)| *missing) {
            let why = if *field == "host_key" {
                "is required: the upstream's host key fingerprint (SHA256:...); the gateway \
                 never trusts an unknown host"
            } else {
                "is required"
            };
            return Err(invalid(
                format!("{key}.{field}"),
                format!("{why} for kind = \"{kind}\""),
            ));
        }
        match kind {
            Postgres | Mysql | Ssh => {
                if !self.upstream.contains(':') {
                    return Err(invalid(
                        format!("{key}.upstream"),
                        format!("{:?} is not host:port", self.upstream),
                    ));
                }
            }
            Http => {
                if !(self.upstream.starts_with("https://") || self.upstream.starts_with("http://"))
                {
                    return Err(invalid(
                        format!("{key}.upstream"),
                        format!("{:?} is not an http:// or https:// URL", self.upstream),
                    ));
                }
            }
        }
        if let Some(h) = &self.host_key
            && !h.starts_with("SHA256:")
        {
            return Err(invalid(
                format!("{key}.host_key"),
                "must be an OpenSSH SHA256 fingerprint (SHA256:...)",
            ));
        }
        if let Some(t) = &self.timeout
            && parse_duration(t).is_none_or(|d| d.is_zero())
        {
            return Err(invalid(
                format!("{key}.timeout"),
                format!("{t:?} is not a duration such as 30s"),
            ));
        }
        if kind == Ssh
            && self.private_key_file.is_none()
            && self.password_env.is_none()
            && self.password_file.is_none()
        {
            return Err(invalid(
                format!("{key}.private_key_file"),
                "set private_key_file (or password_env / password_file) for kind = \"ssh\"",
            ));
        }
        for (i, h) in self.headers.iter().enumerate() {
            let hk = format!("{key}.headers[{i}]");
            if h.name.is_empty() || h.name.bytes().any(|b| !b.is_ascii_graphic() || b == b':') {
                return Err(invalid(format!("{hk}.name"), "must be a header name"));
            }
            if h.value_env.is_some() == h.value_file.is_some() {
                return Err(invalid(
                    format!("{hk}.value_env"),
                    "set exactly one of value_env or value_file (the value is a secret)",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Config;

    fn load(connection: &str, listen: &str) -> Result<Config, String> {
        let text = format!(
            "data_dir = \"./data\"\n[listen]\npostgres = \"127.0.0.1:15432\"\n{listen}\n\
             [[connection]]\n{connection}\nallow_groups = [\"ops\"]\n"
        );
        Config::from_toml(&text, Path::new("/etc/gh")).map_err(|e| e.to_string())
    }

    fn error(connection: &str) -> String {
        match load(connection, "") {
            Ok(_) => panic!("accepted: {connection}"),
            Err(e) => e,
        }
    }

    const PG: &str =
        "name = \"payments\"\nupstream = \"127.0.0.1:5432\"\ndatabase = \"p\"\nuser = \"svc\"";
    const SSH: &str = "name = \"web-1\"\nkind = \"ssh\"\nupstream = \"10.0.0.5:22\"\nuser = \"deploy\"\n\
                       private_key_file = \"id_ed25519\"\nhost_key = \"SHA256:abc\"";

    #[test]
    fn postgres_is_the_default_kind_and_is_served() {
        let cfg = load(PG, "").unwrap();
        let c = cfg.connections.first().unwrap();
        assert_eq!(c.kind, super::ConnectionKind::Postgres);
        assert!(matches!(
            c.target(),
            super::Target::Database {
                database: "p",
                user: "svc",
                ..
            }
        ));
    }

    #[test]
    fn keys_of_another_kind_are_errors() {
        let e = error(&format!(
            "{PG}\nheaders = [{{ name = \"X-Key\", value_env = \"K\" }}]"
        ));
        assert!(
            e.contains("connection[0].headers") && e.contains("not a key of kind = \"postgres\""),
            "{e}"
        );
        let e = error(&format!("{PG}\nhost_key = \"SHA256:abc\""));
        assert!(e.contains("connection[0].host_key"), "{e}");
        let e = error(&format!("{SSH}\ndatabase = \"x\""));
        assert!(
            e.contains("connection[0].database") && e.contains("kind = \"ssh\""),
            "{e}"
        );
        let e = error(&format!("{SSH}\non_parse_error = \"forward\""));
        assert!(e.contains("on_parse_error"), "{e}");
        let e = error(&format!("{PG}\nupstream_rsa_public_key_file = \"k.pem\""));
        assert!(
            e.contains("connection[0].upstream_rsa_public_key_file")
                && e.contains("not a key of kind = \"postgres\""),
            "{e}"
        );
    }

    #[test]
    fn each_kind_requires_its_own_keys() {
        let e = error(
            "name = \"web-1\"\nkind = \"ssh\"\nupstream = \"10.0.0.5:22\"\nuser = \"deploy\"\nprivate_key_file = \"k\"",
        );
        assert!(
            e.contains("host_key") && e.contains("never trusts an unknown host"),
            "{e}"
        );
        let e = error(
            "name = \"web-1\"\nkind = \"ssh\"\nupstream = \"10.0.0.5:22\"\nuser = \"d\"\nhost_key = \"SHA256:x\"",
        );
        assert!(e.contains("private_key_file"), "{e}");
        let e = error(&SSH.replace("SHA256:abc", "MD5:ab:cd"));
        assert!(e.contains("SHA256 fingerprint"), "{e}");
        let e = error("name = \"billing\"\nkind = \"http\"\nupstream = \"10.0.0.5:443\"");
        assert!(e.contains("http:// or https:// URL"), "{e}");
        let e = error(
            "name = \"billing\"\nkind = \"http\"\nupstream = \"https://api\"\nheaders = [{ name = \"Authorization\" }]",
        );
        assert!(e.contains("value_env or value_file"), "{e}");
        let e =
            error("name = \"p\"\nkind = \"mysql\"\nupstream = \"127.0.0.1:3306\"\nuser = \"svc\"");
        assert!(
            e.contains("connection[0].database") && e.contains("required"),
            "{e}"
        );
        let e = error("name = \"p\"\nkind = \"oracle\"\nupstream = \"x:1\"");
        assert!(e.contains("oracle"), "{e}");
    }

    #[test]
    fn a_valid_connection_of_an_unserved_kind_says_so() {
        let e = error(SSH);
        assert!(
            e.contains("kind = \"ssh\" is part of the contract but not served by this version yet"),
            "{e}"
        );
        let e = error(
            "name = \"billing\"\nkind = \"http\"\nupstream = \"https://api.internal:8443\"\n\
                       headers = [{ name = \"Authorization\", value_env = \"T\", prefix = \"Bearer \" }]\ntimeout = \"30s\"",
        );
        assert!(e.contains("kind = \"http\""), "{e}");
    }

    #[test]
    fn listen_keys_of_unserved_protocols_are_checked_and_reported() {
        let cfg = load(PG, "mysql = \"127.0.0.1:13306\"\nssh = \"127.0.0.1:2222\"").unwrap();
        assert_eq!(cfg.listen.unserved(), vec![("ssh", "127.0.0.1:2222")]);
        assert_eq!(cfg.listen.mysql.as_deref(), Some("127.0.0.1:13306"));
        let e = load(PG, "http = \"nowhere\"").err().unwrap();
        assert!(e.contains("listen.http"), "{e}");
    }

    #[test]
    fn injected_header_values_never_show_in_debug() {
        let h = super::InjectedHeader {
            name: "Authorization".into(),
            value_env: Some("BILLING_TOKEN".into()),
            value_file: None,
            prefix: "Bearer ".into(),
        };
        let shown = format!("{h:?}");
        assert!(
            shown.contains("BILLING_TOKEN") && !shown.contains("Bearer"),
            "{shown}"
        );
    }
}
