//! Mid-login packets: `AuthSwitchRequest` (the server asks for another plugin, with a new
//! scramble) and `AuthMoreData` (plugin-specific data, e.g. caching_sha2_password's "fast path
//! done" `0x03` or "send the full password" `0x04`).
//!
//! The gateway sends an `AuthSwitchRequest` for `mysql_clear_password` to a client that logged
//! in with another plugin, because the token must arrive as it is; and answers the upstream's
//! when it logs in with the held credential.

use super::MessageError;
use crate::wire::{Reader, put_nul_str};

/// The cleartext plugin: how a client hands the gateway its token (over TLS).
pub const CLEAR_PASSWORD: &[u8] = b"mysql_clear_password";
pub const NATIVE_PASSWORD: &[u8] = b"mysql_native_password";
pub const CACHING_SHA2_PASSWORD: &[u8] = b"caching_sha2_password";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSwitchRequest {
    pub plugin: Vec<u8>,
    /// The new scramble (empty for the cleartext plugin).
    pub data: Vec<u8>,
}

impl AuthSwitchRequest {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(0xfe);
        put_nul_str(out, &self.plugin);
        out.extend_from_slice(&self.data);
        if !self.data.is_empty() {
            out.push(0);
        }
    }

    /// Parses the `0xfe` packet of the login phase (a trailing NUL of the data is dropped).
    pub fn parse(payload: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(payload);
        match r.u8("auth switch header")? {
            0xfe => {}
            found => {
                return Err(MessageError::Unexpected {
                    what: "auth switch header",
                    found,
                });
            }
        }
        let plugin = r.nul_str("auth plugin name")?.to_vec();
        let rest = r.rest();
        let data = rest.strip_suffix(&[0]).unwrap_or(rest).to_vec();
        Ok(Self { plugin, data })
    }
}

/// `AuthMoreData`: `0x01` and the plugin's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthMoreData(pub Vec<u8>);

impl AuthMoreData {
    pub fn parse(payload: &[u8]) -> Result<Self, MessageError> {
        match payload.split_first() {
            Some((0x01, data)) => Ok(Self(data.to_vec())),
            Some((&found, _)) => Err(MessageError::Unexpected {
                what: "auth more data header",
                found,
            }),
            None => Err(MessageError::Wire(crate::wire::WireError::Truncated {
                what: "auth more data",
            })),
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(0x01);
        out.extend_from_slice(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_round_trip_and_the_cleartext_one_has_no_scramble() {
        for req in [
            AuthSwitchRequest {
                plugin: CLEAR_PASSWORD.to_vec(),
                data: Vec::new(),
            },
            AuthSwitchRequest {
                plugin: NATIVE_PASSWORD.to_vec(),
                data: (1u8..=20).collect(),
            },
        ] {
            let mut out = Vec::new();
            req.encode(&mut out);
            assert_eq!(AuthSwitchRequest::parse(&out), Ok(req));
        }
        let mut out = Vec::new();
        AuthSwitchRequest {
            plugin: CLEAR_PASSWORD.to_vec(),
            data: Vec::new(),
        }
        .encode(&mut out);
        assert_eq!(out, b"\xfemysql_clear_password\0");
        assert!(AuthSwitchRequest::parse(b"\x00ok").is_err());
        assert!(AuthSwitchRequest::parse(b"\xfeunterminated").is_err());
        assert_eq!(AuthMoreData::parse(b"\x01\x03"), Ok(AuthMoreData(vec![3])));
        assert!(AuthMoreData::parse(b"").is_err());
    }
}
