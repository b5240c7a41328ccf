//! The generic answers: `OK_Packet` and `ERR_Packet`, and the error codes the gateway uses.

use super::MessageError;
use crate::wire::{Reader, put_lenenc};

/// Error codes (and their SQLSTATEs) of the gateway's own refusals, as the contract names them.
pub mod codes {
    /// `ER_BAD_DB_ERROR`: the connection (the database name) is not configured.
    pub const UNKNOWN_CONNECTION: (u16, &str) = (1049, "42000");
    /// `ER_ACCESS_DENIED_ERROR`: the token was refused.
    pub const ACCESS_DENIED: (u16, &str) = (1045, "28000");
    /// `ER_SPECIFIC_ACCESS_DENIED_ERROR`: a rule refused the statement.
    pub const REFUSED: (u16, &str) = (1227, "42000");
    /// `ER_UNKNOWN_ERROR`: the gateway could not carry the statement out.
    pub const GATEWAY_ERROR: (u16, &str) = (1105, "HY000");
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OkPacket {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
    pub info: Vec<u8>,
}

impl OkPacket {
    /// The OK form (header `0x00`).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(0x00);
        put_lenenc(out, self.affected_rows);
        put_lenenc(out, self.last_insert_id);
        out.extend_from_slice(&self.status.to_le_bytes());
        out.extend_from_slice(&self.warnings.to_le_bytes());
        out.extend_from_slice(&self.info);
    }

    /// An OK packet (header `0x00`, or `0xfe` ending a result set under `DEPRECATE_EOF`).
    pub fn parse(payload: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(payload);
        match r.u8("OK header")? {
            0x00 | 0xfe => {}
            found => {
                return Err(MessageError::Unexpected {
                    what: "OK header",
                    found,
                });
            }
        }
        Ok(Self {
            affected_rows: r.lenenc("affected rows")?,
            last_insert_id: r.lenenc("last insert id")?,
            status: r.u16("status flags")?,
            warnings: r.u16("warnings")?,
            info: r.rest().to_vec(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrPacket {
    pub code: u16,
    pub sqlstate: [u8; 5],
    pub message: Vec<u8>,
}

impl ErrPacket {
    pub fn new((code, sqlstate): (u16, &str), message: impl Into<Vec<u8>>) -> Self {
        let mut state = *b"HY000";
        for (slot, b) in state.iter_mut().zip(sqlstate.bytes()) {
            *slot = b;
        }
        Self {
            code,
            sqlstate: state,
            message: message.into(),
        }
    }

    /// The 4.1 form: `0xff`, code, `#`, SQLSTATE, message.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(0xff);
        out.extend_from_slice(&self.code.to_le_bytes());
        out.push(b'#');
        out.extend_from_slice(&self.sqlstate);
        out.extend_from_slice(&self.message);
    }

    pub fn parse(payload: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(payload);
        match r.u8("ERR header")? {
            0xff => {}
            found => {
                return Err(MessageError::Unexpected {
                    what: "ERR header",
                    found,
                });
            }
        }
        let code = r.u16("error code")?;
        let mut sqlstate = *b"HY000";
        let rest = r.rest();
        let message = match rest.split_first() {
            Some((b'#', tail)) if tail.len() >= 5 => {
                let (state, msg) = tail.split_at(5);
                sqlstate.copy_from_slice(state);
                msg
            }
            _ => rest,
        };
        Ok(Self {
            code,
            sqlstate,
            message: message.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_and_err_round_trip() {
        let ok = OkPacket {
            affected_rows: 300,
            last_insert_id: 1 << 40,
            status: 0x0002,
            warnings: 1,
            info: b"Rows matched: 1".to_vec(),
        };
        let mut out = Vec::new();
        ok.encode(&mut out);
        assert_eq!(OkPacket::parse(&out), Ok(ok));

        let err = ErrPacket::new(codes::REFUSED, "refused by rule no-drops");
        let mut out = Vec::new();
        err.encode(&mut out);
        assert_eq!(&out[..9], b"\xff\xcb\x04#42000");
        assert_eq!(ErrPacket::parse(&out), Ok(err));
        // Pre-4.1 servers send no SQLSTATE.
        let old =
            ErrPacket::parse(b"\xff\x19\x04Unknown database").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((old.code, &old.sqlstate), (1049, b"HY000"));
        assert!(OkPacket::parse(b"\x00\xfc").is_err());
        assert!(ErrPacket::parse(b"").is_err());
    }
}
