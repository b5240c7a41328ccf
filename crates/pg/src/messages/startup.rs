//! The untagged packets a client may open a connection with.

use bytes::{Buf, Bytes};

use crate::codec::{BodyReader, CodecError};

pub const SSL_REQUEST: i32 = 80_877_103;
pub const GSSENC_REQUEST: i32 = 80_877_104;
pub const CANCEL_REQUEST: i32 = 80_877_102;
/// Protocol 3.0.
pub const PROTOCOL_3_0: i32 = 196_608;
/// Largest startup packet accepted (PostgreSQL uses 10000 too).
pub const MAX_STARTUP_LEN: usize = 10_000;

/// The first packet of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel { pid: i32, secret: Bytes },
    Startup(StartupMessage),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    pub major: u16,
    pub minor: u16,
    /// Parameters in the order sent (names and values as text; non-UTF-8 is rejected).
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a startup packet body (after the 4-byte length).
pub fn parse_startup(body: Bytes) -> Result<StartupPacket, CodecError> {
    let bad = CodecError::Malformed {
        what: "startup packet",
    };
    let mut r = BodyReader::new(body, "startup packet");
    let code = r.i32()?;
    match code {
        SSL_REQUEST if r.remaining() == 0 => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST if r.remaining() == 0 => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST => {
            let pid = r.i32()?;
            // Protocol 3.2 allows secret keys of up to 256 bytes.
            let secret = r.rest();
            if secret.len() < 4 || secret.len() > 256 {
                return Err(bad);
            }
            Ok(StartupPacket::Cancel { pid, secret })
        }
        _ => {
            let major = u16::try_from(code >> 16).map_err(|_| bad.clone())?;
            let minor = u16::try_from(code & 0xffff).map_err(|_| bad.clone())?;
            let mut params = Vec::new();
            loop {
                let name = r.cstr()?;
                if name.is_empty() {
                    break;
                }
                let value = r.cstr()?;
                let name = String::from_utf8(name.to_vec()).map_err(|_| bad.clone())?;
                let value = String::from_utf8(value.to_vec()).map_err(|_| bad.clone())?;
                params.push((name, value));
                if params.len() > 64 {
                    return Err(bad);
                }
            }
            if r.remaining() != 0 {
                return Err(bad);
            }
            Ok(StartupPacket::Startup(StartupMessage {
                major,
                minor,
                params,
            }))
        }
    }
}

/// Reads the 4-byte length prefix of a startup packet, validating it.
pub fn startup_len(header: [u8; 4]) -> Result<usize, CodecError> {
    let len = (&header[..]).get_i32();
    let len = usize::try_from(len).unwrap_or(0);
    if !(8..=MAX_STARTUP_LEN).contains(&len) {
        return Err(CodecError::BadLength {
            tag: '\0',
            len: i64::try_from(len).unwrap_or(-1),
        });
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_startup_and_requests() {
        let mut b = Vec::new();
        b.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
        b.extend_from_slice(b"user\0bot\0database\0payments\0\0");
        match parse_startup(Bytes::from(b)).unwrap() {
            StartupPacket::Startup(m) => {
                assert_eq!((m.major, m.minor), (3, 0));
                assert_eq!(m.get("database"), Some("payments"));
            }
            other => panic!("{other:?}"),
        }
        let ssl = Bytes::copy_from_slice(&SSL_REQUEST.to_be_bytes());
        assert_eq!(parse_startup(ssl).unwrap(), StartupPacket::SslRequest);
        let mut c = Vec::new();
        c.extend_from_slice(&CANCEL_REQUEST.to_be_bytes());
        c.extend_from_slice(&7i32.to_be_bytes());
        c.extend_from_slice(&9i32.to_be_bytes());
        assert!(matches!(
            parse_startup(Bytes::from(c)).unwrap(),
            StartupPacket::Cancel { pid: 7, .. }
        ));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_startup(Bytes::from_static(b"\0\x03\0\0user\0x")).is_err());
        assert!(parse_startup(Bytes::from_static(b"\0\x03")).is_err());
        assert!(startup_len([0x7f, 0xff, 0xff, 0xff]).is_err());
        assert!(startup_len([0, 0, 0, 3]).is_err());
    }
}
