//! `[tls]` and `[identity]`: the certificate clients see, and who may be admitted (the local
//! issuer, OIDC issuers, the admin groups).

use super::*;

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

pub(crate) fn yes() -> bool {
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

pub(crate) fn default_groups_claim() -> String {
    "groups".into()
}
