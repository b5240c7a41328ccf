//! Server messages: the ones the gateway writes itself, and the few it reads.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{BodyReader, CodecError, Frame};

/// Severity of a gateway-generated error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Self::Error => "ERROR",
            Self::Fatal => "FATAL",
        }
    }
}

fn message(tag: u8, body: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut b = BytesMut::with_capacity(64);
    b.put_u8(tag);
    b.put_i32(0);
    body(&mut b);
    let len = i32::try_from(b.len() - 1).unwrap_or(i32::MAX);
    if let Some(slot) = b.get_mut(1..5) {
        slot.copy_from_slice(&len.to_be_bytes());
    }
    b.freeze()
}

fn put_cstr(b: &mut BytesMut, s: &str) {
    // A NUL inside would end the field early; gateway text never contains one, but be sure.
    for part in s.split('\0') {
        b.put_slice(part.as_bytes());
    }
    b.put_u8(0);
}

/// `E`: an ErrorResponse with severity, SQLSTATE and message (and optional hint).
pub fn error_response(severity: Severity, sqlstate: &str, msg: &str, hint: Option<&str>) -> Bytes {
    message(b'E', |b| {
        b.put_u8(b'S');
        put_cstr(b, severity.as_str());
        b.put_u8(b'V');
        put_cstr(b, severity.as_str());
        b.put_u8(b'C');
        put_cstr(b, sqlstate);
        b.put_u8(b'M');
        put_cstr(b, msg);
        if let Some(h) = hint {
            b.put_u8(b'H');
            put_cstr(b, h);
        }
        b.put_u8(0);
    })
}

/// `N`: a NoticeResponse (severity NOTICE) with `msg`.
pub fn notice_response(msg: &str) -> Bytes {
    message(b'N', |b| {
        b.put_u8(b'S');
        put_cstr(b, "NOTICE");
        b.put_u8(b'V');
        put_cstr(b, "NOTICE");
        b.put_u8(b'C');
        put_cstr(b, "00000");
        b.put_u8(b'M');
        put_cstr(b, msg);
        b.put_u8(0);
    })
}

/// `R` AuthenticationOk.
pub fn auth_ok() -> Bytes {
    message(b'R', |b| b.put_i32(0))
}

/// `R` AuthenticationCleartextPassword.
pub fn auth_cleartext() -> Bytes {
    message(b'R', |b| b.put_i32(3))
}

/// `S` ParameterStatus.
pub fn parameter_status(name: &str, value: &str) -> Bytes {
    message(b'S', |b| {
        put_cstr(b, name);
        put_cstr(b, value);
    })
}

/// `K` BackendKeyData (4-byte secret, protocol 3.0).
pub fn backend_key_data(pid: i32, secret: i32) -> Bytes {
    message(b'K', |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    })
}

/// `Z` ReadyForQuery.
pub fn ready_for_query(status: u8) -> Bytes {
    message(b'Z', |b| b.put_u8(status))
}

/// `v` NegotiateProtocolVersion: the newest minor version supported and the options not.
pub fn negotiate_protocol_version(minor: i32, unsupported: &[String]) -> Bytes {
    message(b'v', |b| {
        b.put_i32(minor);
        b.put_i32(i32::try_from(unsupported.len()).unwrap_or(0));
        for o in unsupported {
            put_cstr(b, o);
        }
    })
}

/// Fields of an ErrorResponse or NoticeResponse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: String,
    pub sqlstate: String,
    pub message: String,
}

pub fn error_fields(frame: &Frame) -> Result<ErrorFields, CodecError> {
    let mut r = BodyReader::new(frame.body(), "ErrorResponse");
    let mut out = ErrorFields::default();
    loop {
        let code = r.u8()?;
        if code == 0 {
            break;
        }
        let value = String::from_utf8_lossy(&r.cstr()?).into_owned();
        match code {
            b'V' => out.severity = value,
            b'S' if out.severity.is_empty() => out.severity = value,
            b'C' => out.sqlstate = value,
            b'M' => out.message = value,
            _ => {}
        }
    }
    Ok(out)
}

/// Rows reported by a CommandComplete tag (`SELECT 5`, `INSERT 0 1`, `COPY 10`...).
pub fn command_rows(frame: &Frame) -> Option<u64> {
    let tag = BodyReader::new(frame.body(), "CommandComplete")
        .cstr()
        .ok()?;
    let last = tag.rsplit(|&c| c == b' ').next()?;
    std::str::from_utf8(last).ok()?.parse().ok()
}

/// The command word of a CommandComplete tag (`SELECT`, `INSERT`...).
pub fn command_tag(frame: &Frame) -> String {
    BodyReader::new(frame.body(), "CommandComplete")
        .cstr()
        .map(|t| String::from_utf8_lossy(&t).into_owned())
        .unwrap_or_default()
}

/// Transaction status of a ReadyForQuery (`I`, `T` or `E`).
pub fn ready_status(frame: &Frame) -> u8 {
    frame.body().first().copied().unwrap_or(b'I')
}

/// `R`: the authentication request code and its data.
pub fn auth_request(frame: &Frame) -> Result<(i32, Bytes), CodecError> {
    let mut r = BodyReader::new(frame.body(), "Authentication");
    let code = r.i32()?;
    Ok((code, r.rest()))
}

/// `S`: ParameterStatus name and value.
pub fn parameter(frame: &Frame) -> Result<(String, String), CodecError> {
    let mut r = BodyReader::new(frame.body(), "ParameterStatus");
    let name = String::from_utf8_lossy(&r.cstr()?).into_owned();
    let value = String::from_utf8_lossy(&r.cstr()?).into_owned();
    Ok((name, value))
}

/// `K`: process id and secret key bytes.
pub fn backend_key(frame: &Frame) -> Result<(i32, Bytes), CodecError> {
    let mut r = BodyReader::new(frame.body(), "BackendKeyData");
    let pid = r.i32()?;
    Ok((pid, r.rest()))
}

/// `T`: column names of a RowDescription.
pub fn row_description_names(frame: &Frame) -> Result<Vec<String>, CodecError> {
    let mut r = BodyReader::new(frame.body(), "RowDescription");
    let n = usize::try_from(r.i16()?).map_err(|_| CodecError::Malformed {
        what: "RowDescription",
    })?;
    let mut names = Vec::with_capacity(n.min(1600));
    for _ in 0..n {
        names.push(String::from_utf8_lossy(&r.cstr()?).into_owned());
        r.bytes(18)?;
    }
    Ok(names)
}

/// `D`: the values of a DataRow (`None` for NULL).
pub fn data_row_values(frame: &Frame) -> Result<Vec<Option<Bytes>>, CodecError> {
    let mut r = BodyReader::new(frame.body(), "DataRow");
    let n = usize::try_from(r.i16()?).map_err(|_| CodecError::Malformed { what: "DataRow" })?;
    let mut out = Vec::with_capacity(n.min(1600));
    for _ in 0..n {
        let len = r.i32()?;
        if len < 0 {
            out.push(None);
        } else {
            out.push(Some(r.bytes(usize::try_from(len).unwrap_or(usize::MAX))?));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_round_trip() {
        let e = Frame::from_raw(error_response(Severity::Error, "42501", "no", Some("h")));
        let f = error_fields(&e).unwrap();
        assert_eq!(f.sqlstate, "42501");
        assert_eq!(f.message, "no");
        assert_eq!(f.severity, "ERROR");
    }

    #[test]
    fn command_rows_parses_tags() {
        let mk = |t: &str| {
            let mut b = BytesMut::new();
            b.put_u8(b'C');
            b.put_i32(t.len() as i32 + 5);
            b.put_slice(t.as_bytes());
            b.put_u8(0);
            Frame::from_raw(b.freeze())
        };
        assert_eq!(command_rows(&mk("SELECT 5")), Some(5));
        assert_eq!(command_rows(&mk("INSERT 0 3")), Some(3));
        assert_eq!(command_rows(&mk("BEGIN")), None);
    }
}
