//! The client's answer to the greeting: an `SSLRequest` (then TLS, then the response again)
//! or `Protocol::HandshakeResponse41` with the user, the auth response, the database and the
//! connection attributes.
//!
//! For the gateway, the auth response *is* the client's token (sent with
//! `mysql_clear_password`), so [`HandshakeResponse41`]'s `Debug` never shows it.

use super::MessageError;
use crate::capabilities::{
    CONNECT_ATTRS, CONNECT_WITH_DB, PLUGIN_AUTH, PLUGIN_AUTH_LENENC_CLIENT_DATA, PROTOCOL_41,
    SECURE_CONNECTION, SSL,
};
use crate::wire::{Reader, put_lenenc, put_lenenc_bytes, put_nul_str};

/// The fixed 32-byte start of every client response; alone, it asks for TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SslRequest {
    pub capabilities: u32,
    pub max_packet: u32,
    pub charset: u8,
}

/// The client's login.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct HandshakeResponse41 {
    pub capabilities: u32,
    pub max_packet: u32,
    pub charset: u8,
    pub user: Vec<u8>,
    /// The plugin's answer; with `mysql_clear_password`, the password (the token) itself.
    pub auth_response: Vec<u8>,
    pub database: Option<Vec<u8>>,
    pub auth_plugin: Option<Vec<u8>>,
    pub attributes: Vec<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for HandshakeResponse41 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakeResponse41")
            .field("capabilities", &format_args!("{:#x}", self.capabilities))
            .field("user", &String::from_utf8_lossy(&self.user))
            .field(
                "auth_response",
                &format_args!("<{} bytes>", self.auth_response.len()),
            )
            .field(
                "database",
                &self.database.as_deref().map(String::from_utf8_lossy),
            )
            .field(
                "auth_plugin",
                &self.auth_plugin.as_deref().map(String::from_utf8_lossy),
            )
            .field("attributes", &self.attributes.len())
            .finish()
    }
}

/// The first packet a client sends after the greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHello {
    Ssl(SslRequest),
    Login(HandshakeResponse41),
}

impl ClientHello {
    pub fn parse(payload: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(payload);
        let capabilities = r.u32("capability flags")?;
        if capabilities & PROTOCOL_41 == 0 {
            return Err(MessageError::Unsupported(
                "the pre-4.1 client protocol is not supported",
            ));
        }
        let max_packet = r.u32("max packet size")?;
        let charset = r.u8("character set")?;
        r.bytes(23, "filler")?;
        if r.is_empty() && capabilities & SSL != 0 {
            return Ok(Self::Ssl(SslRequest {
                capabilities,
                max_packet,
                charset,
            }));
        }
        let user = r.nul_str("user name")?.to_vec();
        let auth_response = if capabilities & PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            r.lenenc_bytes("auth response")?.to_vec()
        } else if capabilities & SECURE_CONNECTION != 0 {
            let n = r.u8("auth response length")?;
            r.bytes(usize::from(n), "auth response")?.to_vec()
        } else {
            r.nul_str("auth response")?.to_vec()
        };
        let database = if capabilities & CONNECT_WITH_DB != 0 && !r.is_empty() {
            Some(r.nul_str("database")?.to_vec())
        } else {
            None
        };
        let auth_plugin = if capabilities & PLUGIN_AUTH != 0 && !r.is_empty() {
            Some(r.nul_str("auth plugin name")?.to_vec())
        } else {
            None
        };
        let mut attributes = Vec::new();
        if capabilities & CONNECT_ATTRS != 0 && !r.is_empty() {
            let all = r.lenenc_bytes("connection attributes")?;
            let mut a = Reader::new(all);
            while !a.is_empty() {
                let k = a.lenenc_bytes("attribute name")?.to_vec();
                let v = a.lenenc_bytes("attribute value")?.to_vec();
                attributes.push((k, v));
            }
        }
        Ok(Self::Login(HandshakeResponse41 {
            capabilities,
            max_packet,
            charset,
            user,
            auth_response,
            database,
            auth_plugin,
            attributes,
        }))
    }
}

impl SslRequest {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.capabilities | SSL).to_le_bytes());
        out.extend_from_slice(&self.max_packet.to_le_bytes());
        out.push(self.charset);
        out.extend_from_slice(&[0u8; 23]);
    }
}

impl HandshakeResponse41 {
    /// Builds the login the gateway sends upstream (the auth response per the capabilities).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.capabilities.to_le_bytes());
        out.extend_from_slice(&self.max_packet.to_le_bytes());
        out.push(self.charset);
        out.extend_from_slice(&[0u8; 23]);
        put_nul_str(out, &self.user);
        // The three forms `ClientHello::parse` reads, chosen by the same flags.
        if self.capabilities & PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            put_lenenc_bytes(out, &self.auth_response);
        } else if self.capabilities & SECURE_CONNECTION != 0 {
            let n = self.auth_response.len().min(255);
            out.push(n as u8);
            out.extend_from_slice(self.auth_response.get(..n).unwrap_or_default());
        } else {
            put_nul_str(out, &self.auth_response);
        }
        if self.capabilities & CONNECT_WITH_DB != 0 {
            put_nul_str(out, self.database.as_deref().unwrap_or_default());
        }
        if self.capabilities & PLUGIN_AUTH != 0 {
            put_nul_str(out, self.auth_plugin.as_deref().unwrap_or_default());
        }
        if self.capabilities & CONNECT_ATTRS != 0 {
            let mut all = Vec::new();
            for (k, v) in &self.attributes {
                put_lenenc_bytes(&mut all, k);
                put_lenenc_bytes(&mut all, v);
            }
            put_lenenc(out, all.len() as u64);
            out.extend_from_slice(&all);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::GATEWAY_OFFERS;

    fn login() -> HandshakeResponse41 {
        HandshakeResponse41 {
            capabilities: GATEWAY_OFFERS,
            max_packet: 1 << 24,
            charset: 45,
            user: b"fraud-bot".to_vec(),
            auth_response: b"eyJ-the-token".to_vec(),
            database: Some(b"shop".to_vec()),
            auth_plugin: Some(b"mysql_clear_password".to_vec()),
            attributes: vec![(b"_client_name".to_vec(), b"libmariadb".to_vec())],
        }
    }

    #[test]
    fn a_login_round_trips_and_its_debug_hides_the_token() {
        let mut out = Vec::new();
        login().encode(&mut out);
        assert_eq!(ClientHello::parse(&out), Ok(ClientHello::Login(login())));
        let shown = format!("{:?}", login());
        assert!(!shown.contains("eyJ"), "{shown}");
        assert!(
            shown.contains("fraud-bot") && shown.contains("13 bytes"),
            "{shown}"
        );
    }

    /// Found by fuzzing: a login without `SECURE_CONNECTION` carries a NUL-terminated auth
    /// response, and must be built back the same way.
    #[test]
    fn every_auth_response_form_round_trips() {
        for caps in [
            GATEWAY_OFFERS,
            GATEWAY_OFFERS & !PLUGIN_AUTH_LENENC_CLIENT_DATA,
            GATEWAY_OFFERS & !PLUGIN_AUTH_LENENC_CLIENT_DATA & !SECURE_CONNECTION,
        ] {
            let l = HandshakeResponse41 {
                capabilities: caps,
                ..login()
            };
            let mut out = Vec::new();
            l.encode(&mut out);
            assert_eq!(
                ClientHello::parse(&out),
                Ok(ClientHello::Login(l)),
                "{caps:#x}"
            );
        }
    }

    #[test]
    fn the_32_byte_form_asks_for_tls() {
        let mut out = Vec::new();
        SslRequest {
            capabilities: GATEWAY_OFFERS,
            max_packet: 1 << 24,
            charset: 33,
        }
        .encode(&mut out);
        assert_eq!(out.len(), 32);
        assert!(matches!(ClientHello::parse(&out), Ok(ClientHello::Ssl(s)) if s.charset == 33));
    }

    #[test]
    fn short_or_lying_logins_are_errors() {
        let mut out = Vec::new();
        login().encode(&mut out);
        for cut in 0..out.len() {
            // Any prefix either parses as a shorter login (optional fields) or fails cleanly.
            let _ = ClientHello::parse(&out[..cut]);
        }
        // An auth response claiming more bytes than the packet has.
        let mut bad = out[..32].to_vec();
        bad.extend_from_slice(b"u\0\xfc\xff\xff");
        assert!(ClientHello::parse(&bad).is_err());
        // Pre-4.1 clients are refused.
        assert!(ClientHello::parse(&[0u8; 32]).is_err());
    }
}
