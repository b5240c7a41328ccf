//! The answers to the server's scramble for the two password plugins the gateway logs in
//! upstream with (the held credential never leaves the gateway; only these hashes do).
//!
//! - `mysql_native_password`: `SHA1(password) XOR SHA1(scramble ‖ SHA1(SHA1(password)))`.
//! - `caching_sha2_password` (fast path): `SHA256(password) XOR SHA256(SHA256(SHA256(password))
//!   ‖ scramble)`. When the server has no cached entry it asks for the full authentication:
//!   the password in clear over TLS, or RSA-encrypted with the server's key (not here yet).

use sha1::{Digest as _, Sha1};
use sha2::Sha256;

/// The `mysql_native_password` auth response (empty for an empty password, as servers expect).
pub fn native_password(password: &[u8], scramble: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1 = Sha1::digest(password);
    let stage2 = Sha1::digest(stage1);
    let mut h = Sha1::new();
    h.update(scramble_20(scramble));
    h.update(stage2);
    let mix = h.finalize();
    stage1.iter().zip(mix.iter()).map(|(a, b)| a ^ b).collect()
}

/// The `caching_sha2_password` fast-path auth response.
pub fn caching_sha2_password(password: &[u8], scramble: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let p1 = Sha256::digest(password);
    let p2 = Sha256::digest(p1);
    let mut h = Sha256::new();
    h.update(p2);
    h.update(scramble_20(scramble));
    let mix = h.finalize();
    p1.iter().zip(mix.iter()).map(|(a, b)| a ^ b).collect()
}

/// The 20 bytes of scramble both plugins use (servers may send a trailing NUL).
pub fn scramble_20(scramble: &[u8]) -> &[u8] {
    scramble.get(..20).unwrap_or(scramble)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The native scramble inverts: the server, holding SHA1(SHA1(password)), recovers
    /// SHA1(password) from the response and checks it hashes to what it holds.
    #[test]
    fn the_server_side_check_accepts_the_native_response() {
        let scramble: Vec<u8> = (1u8..=20).collect();
        let r = native_password(b"s3cret", &scramble);
        let stored = Sha1::digest(Sha1::digest(b"s3cret"));
        let mut h = Sha1::new();
        h.update(&scramble);
        h.update(stored);
        let mix = h.finalize();
        let stage1: Vec<u8> = r.iter().zip(mix.iter()).map(|(a, b)| a ^ b).collect();
        assert_eq!(Sha1::digest(&stage1)[..], stored[..]);
        assert_ne!(native_password(b"other", &scramble), r);
        assert!(native_password(b"", &scramble).is_empty());
    }

    #[test]
    fn the_server_side_check_accepts_the_caching_sha2_response() {
        let scramble: Vec<u8> = (21u8..=40).collect();
        let r = caching_sha2_password(b"s3cret", &scramble);
        let p2 = Sha256::digest(Sha256::digest(b"s3cret"));
        let mut h = Sha256::new();
        h.update(p2);
        h.update(&scramble);
        let mix = h.finalize();
        let p1: Vec<u8> = r.iter().zip(mix.iter()).map(|(a, b)| a ^ b).collect();
        assert_eq!(Sha256::digest(&p1)[..], p2[..]);
    }
}
