//! The verified identity behind a connection or API call.

/// Who is on the other end, as asserted by a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub` claim (never empty).
    pub subject: String,
    /// Groups from the issuer's groups claim (empty when the claim is absent).
    pub groups: Vec<String>,
    /// The issuer that vouched for it (`gatehouse-local` for the local issuer).
    pub issuer: String,
}

impl Principal {
    /// Whether the principal belongs to any of `groups`.
    pub fn in_any(&self, groups: &[String]) -> bool {
        self.groups.iter().any(|g| groups.contains(g))
    }
}
