//! Why a sink cannot start (the gateway refuses to start with it), and why a delivery failed
//! (logged, retried with backoff; the records wait in the store).

use std::path::PathBuf;

use crate::position::PositionError;

/// A `[[audit.sink]]` that cannot be set up; `key` names it (`audit.sink[i]`).
#[derive(Debug, thiserror::Error)]
pub enum SinkSetupError {
    #[error("cannot create {}", .path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{key}")]
    Output {
        key: String,
        #[source]
        source: OutputError,
    },
    #[error("{key}")]
    Position {
        key: String,
        #[source]
        source: PositionError,
    },
    /// A file sink's file could not be read back at start.
    #[error("{key}: reading {}", .path.display())]
    Recover {
        key: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{key}")]
    SavePosition {
        key: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why a sink's output could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// A key the sink's kind needs (`path`, `address`, `url`).
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("cannot create {}", .path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret_env: environment variable {0} is not set or empty")]
    SecretEnv(String),
    #[error(transparent)]
    HttpClient(reqwest::Error),
    #[error(transparent)]
    Tls(rustls::Error),
    #[error("ca_file: cannot read {}", .path.display())]
    CaRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ca_file: {} is not PEM: {error}", .path.display())]
    CaNotPem {
        path: PathBuf,
        error: rustls_pki_types::pem::Error,
    },
    #[error("ca_file: bad CA certificate in {}: {error}", .path.display())]
    CaRejected { path: PathBuf, error: rustls::Error },
    #[error("ca_file: {} contains no certificate", .0.display())]
    CaEmpty(PathBuf),
    #[error("cannot load the platform trust store")]
    PlatformTrust(#[source] rustls::Error),
    #[error("server_name: {0}")]
    ServerName(rustls_pki_types::InvalidDnsNameError),
}

/// Why one delivery failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum DeliveryError {
    #[error("cannot open {}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot rotate {}", .path.display())]
    Rotate {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot sync {}", .path.display())]
    Sync {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not open", .0.display())]
    NotOpen(PathBuf),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("connecting to {0} timed out")]
    ConnectTimeout(String),
    #[error("cannot connect to {address}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake with {0} timed out")]
    HandshakeTimeout(String),
    #[error("TLS handshake with {address} failed")]
    Handshake {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not connected")]
    NotConnected,
    #[error("cannot send to {address}")]
    Send {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sending to {0} timed out")]
    SendTimeout(String),
    #[error("cannot resolve {address}")]
    Resolve {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no socket")]
    NoSocket,
    /// The kind of failure only: reqwest's text can hold the URL (and its token).
    #[error("POST failed ({0})")]
    Post(&'static str),
    #[error("POST answered {0}")]
    Status(reqwest::StatusCode),
    #[error("cannot persist the sink position")]
    Position(#[source] std::io::Error),
}
