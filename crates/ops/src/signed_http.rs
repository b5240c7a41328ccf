//! HTTP to the URLs the configuration names (`[[notify]]` webhooks, HTTP audit sinks): the
//! client every such request goes through, and the signature that lets a receiver check a
//! request came from this gateway and when.
//!
//! Why shared: a receiver of both webhooks and sink batches verifies them the same way
//! (`X-Gatehouse-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>` with
//! `X-Gatehouse-Timestamp`, Unix seconds), and both must not follow redirects the
//! configuration never named.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const SIGNATURE_HEADER: &str = "x-gatehouse-signature";
pub const TIMESTAMP_HEADER: &str = "x-gatehouse-timestamp";

/// The client for a configured outbound URL (`[[notify]]` webhooks, HTTP audit sinks).
pub(crate) fn http_client(url: &str, timeout: Duration) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        // A redirect could lead the signed event somewhere the config never named.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")));
    if url.starts_with("http://") {
        // Loopback only (checked by the config): no TLS, no proxy, no trust store needed.
        builder = builder.tls_certs_only(std::iter::empty()).no_proxy();
    } else {
        builder = builder.https_only(true);
    }
    builder.build()
}

/// `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    // HMAC accepts keys of any length; the error case cannot occur.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Reference: python3 -c "import hmac,hashlib; print(hmac.new(b'hook-secret',
        //   b'1700000000.{\"event\":\"approval.requested\"}', hashlib.sha256).hexdigest())"
        assert_eq!(
            signature(
                b"hook-secret",
                1_700_000_000,
                br#"{"event":"approval.requested"}"#
            ),
            "sha256=04a166b419f8bda94e8a2838f21d77baac4184c40f41e380d9776dd708f97b5d"
        );
        assert_ne!(
            signature(
                b"hook-secret",
                1_700_000_001,
                br#"{"event":"approval.requested"}"#
            ),
            signature(
                b"hook-secret",
                1_700_000_000,
                br#"{"event":"approval.requested"}"#
            ),
            "the timestamp is signed"
        );
    }
}
