//! `Protocol::HandshakeV10`: the server's greeting — version, connection id, the scramble
//! (20 bytes of auth-plugin data), capabilities and the default auth plugin.
//!
//! The gateway sends its own to clients (its scramble, its capabilities) and reads the
//! upstream's when it logs in with the held credential.

use super::MessageError;
use crate::capabilities::{PLUGIN_AUTH, SECURE_CONNECTION};
use crate::wire::{Reader, put_nul_str};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeV10 {
    pub server_version: Vec<u8>,
    pub connection_id: u32,
    /// The scramble the client's auth response answers (20 bytes for the native and
    /// caching_sha2 plugins).
    pub auth_data: Vec<u8>,
    pub capabilities: u32,
    pub charset: u8,
    pub status: u16,
    pub auth_plugin: Vec<u8>,
}

impl HandshakeV10 {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(10);
        put_nul_str(out, &self.server_version);
        out.extend_from_slice(&self.connection_id.to_le_bytes());
        let (part1, part2) = self.auth_data.split_at(self.auth_data.len().min(8));
        out.extend_from_slice(part1);
        out.extend(std::iter::repeat_n(0u8, 8 - part1.len()));
        out.push(0);
        out.extend_from_slice(&(self.capabilities as u16).to_le_bytes());
        out.push(self.charset);
        out.extend_from_slice(&self.status.to_le_bytes());
        out.extend_from_slice(&((self.capabilities >> 16) as u16).to_le_bytes());
        let data_len = if self.capabilities & PLUGIN_AUTH != 0 {
            (self.auth_data.len() + 1).min(255) as u8
        } else {
            0
        };
        out.push(data_len);
        out.extend_from_slice(&[0u8; 10]);
        if self.capabilities & SECURE_CONNECTION != 0 {
            // Part 2 is at least 13 bytes with its terminating NUL.
            out.extend_from_slice(part2);
            out.extend(std::iter::repeat_n(
                0u8,
                13usize.saturating_sub(part2.len()),
            ));
        }
        if self.capabilities & PLUGIN_AUTH != 0 {
            put_nul_str(out, &self.auth_plugin);
        }
    }

    pub fn parse(payload: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(payload);
        let version = r.u8("protocol version")?;
        if version != 10 {
            return Err(MessageError::Unexpected {
                what: "protocol version",
                found: version,
            });
        }
        let server_version = r.nul_str("server version")?.to_vec();
        let connection_id = r.u32("connection id")?;
        let mut auth_data = r.bytes(8, "auth-plugin data")?.to_vec();
        r.u8("filler")?;
        let low = r.u16("capability flags")?;
        let mut out = Self {
            server_version,
            connection_id,
            auth_data: Vec::new(),
            capabilities: u32::from(low),
            charset: 0,
            status: 0,
            auth_plugin: Vec::new(),
        };
        if r.is_empty() {
            out.auth_data = auth_data;
            return Ok(out);
        }
        out.charset = r.u8("character set")?;
        out.status = r.u16("status flags")?;
        let high = r.u16("capability flags")?;
        out.capabilities |= u32::from(high) << 16;
        let data_len = r.u8("auth-plugin data length")?;
        r.bytes(10, "reserved")?;
        if out.capabilities & SECURE_CONNECTION != 0 {
            let n = usize::from(data_len).saturating_sub(8).max(13);
            let part2 = r.bytes(n.min(r.remaining()), "auth-plugin data")?;
            // The last byte of part 2 is a NUL terminator, not scramble.
            let part2 = part2.strip_suffix(&[0]).unwrap_or(part2);
            auth_data.extend_from_slice(part2);
        }
        if out.capabilities & PLUGIN_AUTH != 0 && !r.is_empty() {
            let rest = r.rest();
            let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            out.auth_plugin = rest.get(..end).unwrap_or_default().to_vec();
        }
        out.auth_data = auth_data;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::GATEWAY_OFFERS;

    /// What MariaDB 10.11.19 (Debian 12) sent, captured from a real server.
    const MARIADB: &[u8] = b"\x0a5.5.5-10.11.19-MariaDB-0+deb12u1\x00\x08\x00\x00\x00&J$p.0FM\x00\
        \xfe\xf7-\x02\x00\xff\x81\x15\x00\x00\x00\x00\x00\x00\x1d\x00\x00\x004W<eh[p?+WU'\x00\
        mysql_native_password\x00";

    #[test]
    fn a_real_greeting_parses() {
        let h = HandshakeV10::parse(MARIADB).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(h.server_version, b"5.5.5-10.11.19-MariaDB-0+deb12u1");
        assert_eq!(h.connection_id, 8);
        assert_eq!(h.auth_data, b"&J$p.0FM4W<eh[p?+WU'");
        assert_eq!(h.auth_plugin, b"mysql_native_password");
        assert_ne!(h.capabilities & PLUGIN_AUTH, 0);
    }

    #[test]
    fn the_gateways_greeting_round_trips() {
        let h = HandshakeV10 {
            server_version: b"8.0.0-gatehouse".to_vec(),
            connection_id: 7,
            auth_data: (1u8..=20).collect(),
            capabilities: GATEWAY_OFFERS,
            charset: 45,
            status: 2,
            auth_plugin: b"mysql_clear_password".to_vec(),
        };
        let mut out = Vec::new();
        h.encode(&mut out);
        assert_eq!(HandshakeV10::parse(&out), Ok(h));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(HandshakeV10::parse(b"").is_err());
        assert!(HandshakeV10::parse(b"\x09old").is_err());
        assert!(HandshakeV10::parse(b"\x0aversion-without-end").is_err());
    }
}
