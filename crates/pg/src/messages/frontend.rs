//! Client messages the gateway looks inside: Query, Parse, Bind, Execute, Close, Password.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{BodyReader, CodecError, Frame};

/// `Q`: the SQL text (without the NUL).
pub fn query_text(frame: &Frame) -> Result<Bytes, CodecError> {
    BodyReader::new(frame.body(), "Query").cstr()
}

/// `P`: statement name and SQL text.
#[derive(Debug, Clone)]
pub struct Parse {
    pub name: Bytes,
    pub query: Bytes,
}

pub fn parse(frame: &Frame) -> Result<Parse, CodecError> {
    let mut r = BodyReader::new(frame.body(), "Parse");
    let name = r.cstr()?;
    let query = r.cstr()?;
    let n = r.i16()?;
    if n < 0 || r.remaining() != usize::try_from(n).unwrap_or(0) * 4 {
        return Err(CodecError::Malformed { what: "Parse" });
    }
    Ok(Parse { name, query })
}

/// A bind parameter value as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    Null,
    Text(Bytes),
    Binary(Bytes),
}

/// `B`: portal, statement and parameter values.
#[derive(Debug, Clone)]
pub struct Bind {
    pub portal: Bytes,
    pub statement: Bytes,
    pub params: Vec<Param>,
    /// Result column format codes as sent: none (all text), one (all alike) or one per column.
    pub result_formats: Vec<i16>,
}

pub fn bind(frame: &Frame) -> Result<Bind, CodecError> {
    let bad = CodecError::Malformed { what: "Bind" };
    let mut r = BodyReader::new(frame.body(), "Bind");
    let portal = r.cstr()?;
    let statement = r.cstr()?;
    let nfmt = usize::try_from(r.i16()?).map_err(|_| bad.clone())?;
    let mut formats = Vec::with_capacity(nfmt.min(1024));
    for _ in 0..nfmt {
        formats.push(r.i16()?);
    }
    let nparams = usize::try_from(r.i16()?).map_err(|_| bad.clone())?;
    if nfmt > 1 && nfmt != nparams {
        return Err(bad);
    }
    let mut params = Vec::with_capacity(nparams.min(1024));
    for i in 0..nparams {
        let len = r.i32()?;
        let fmt = match nfmt {
            0 => 0,
            1 => formats.first().copied().unwrap_or(0),
            _ => formats.get(i).copied().unwrap_or(0),
        };
        if len == -1 {
            params.push(Param::Null);
            continue;
        }
        let len = usize::try_from(len).map_err(|_| bad.clone())?;
        let v = r.bytes(len)?;
        params.push(if fmt == 1 {
            Param::Binary(v)
        } else {
            Param::Text(v)
        });
    }
    let nres = usize::try_from(r.i16()?).map_err(|_| bad.clone())?;
    if r.remaining() != nres * 2 {
        return Err(bad);
    }
    let mut result_formats = Vec::with_capacity(nres);
    for _ in 0..nres {
        result_formats.push(r.i16()?);
    }
    Ok(Bind {
        portal,
        statement,
        params,
        result_formats,
    })
}

/// `E`: portal name.
pub fn execute_portal(frame: &Frame) -> Result<Bytes, CodecError> {
    let mut r = BodyReader::new(frame.body(), "Execute");
    let portal = r.cstr()?;
    let _max_rows = r.i32()?;
    Ok(portal)
}

/// `C`: what is closed (`S` statement or `P` portal) and its name.
pub fn close_target(frame: &Frame) -> Result<(u8, Bytes), CodecError> {
    let mut r = BodyReader::new(frame.body(), "Close");
    let kind = r.u8()?;
    let name = r.cstr()?;
    if kind != b'S' && kind != b'P' {
        return Err(CodecError::Malformed { what: "Close" });
    }
    Ok((kind, name))
}

/// `p`: a cleartext password (the token).
pub fn password(frame: &Frame) -> Result<Bytes, CodecError> {
    if frame.tag() != b'p' {
        return Err(CodecError::Malformed {
            what: "PasswordMessage",
        });
    }
    BodyReader::new(frame.body(), "PasswordMessage").cstr()
}

/// Builds a simple `Query` message.
pub fn build_query(sql: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(sql.len() + 6);
    b.put_u8(b'Q');
    b.put_i32(i32::try_from(sql.len() + 5).unwrap_or(i32::MAX));
    b.put_slice(sql.as_bytes());
    b.put_u8(0);
    b.freeze()
}

/// Builds a `Parse` of `sql` into the statement `name`, with no parameter types.
pub fn build_parse(name: &[u8], sql: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(name.len() + sql.len() + 9);
    b.put_u8(b'P');
    b.put_i32(i32::try_from(4 + name.len() + 1 + sql.len() + 1 + 2).unwrap_or(i32::MAX));
    b.put_slice(name);
    b.put_u8(0);
    b.put_slice(sql.as_bytes());
    b.put_u8(0);
    b.put_i16(0);
    b.freeze()
}

/// Builds an `Execute` of `portal` (all rows).
pub fn build_execute(portal: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(portal.len() + 10);
    b.put_u8(b'E');
    b.put_i32(i32::try_from(portal.len() + 4 + 1 + 4).unwrap_or(i32::MAX));
    b.put_slice(portal.as_bytes());
    b.put_u8(0);
    b.put_i32(0);
    b.freeze()
}

/// Builds a `Describe` of the portal `name` (the gateway's own, to learn a result's columns).
pub fn build_describe_portal(name: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(name.len() + 7);
    b.put_u8(b'D');
    b.put_i32(i32::try_from(4 + 1 + name.len() + 1).unwrap_or(i32::MAX));
    b.put_u8(b'P');
    b.put_slice(name);
    b.put_u8(0);
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Frame {
        let mut b = BytesMut::new();
        b.put_u8(tag);
        b.put_i32(body.len() as i32 + 4);
        b.put_slice(body);
        Frame::from_raw(b.freeze())
    }

    #[test]
    fn bind_decodes_formats_and_nulls() {
        let mut body = Vec::new();
        body.extend_from_slice(b"p1\0s1\0");
        body.extend_from_slice(&1i16.to_be_bytes());
        body.extend_from_slice(&0i16.to_be_bytes());
        body.extend_from_slice(&2i16.to_be_bytes());
        body.extend_from_slice(&3i32.to_be_bytes());
        body.extend_from_slice(b"abc");
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&0i16.to_be_bytes());
        let b = bind(&frame(b'B', &body)).unwrap();
        assert_eq!(&b.portal[..], b"p1");
        assert_eq!(
            b.params,
            vec![Param::Text(Bytes::from_static(b"abc")), Param::Null]
        );
    }

    #[test]
    fn bind_rejects_lying_lengths() {
        let mut body = Vec::new();
        body.extend_from_slice(b"\0\0");
        body.extend_from_slice(&0i16.to_be_bytes());
        body.extend_from_slice(&1i16.to_be_bytes());
        body.extend_from_slice(&1_000_000i32.to_be_bytes());
        assert!(bind(&frame(b'B', &body)).is_err());
    }

    #[test]
    fn built_messages_parse_back() {
        let q = Frame::from_raw(build_query("SELECT 1"));
        assert_eq!(&query_text(&q).unwrap()[..], b"SELECT 1");
        let p = Frame::from_raw(build_parse(b"s1", "SELECT 2"));
        let parsed = parse(&p).unwrap();
        assert_eq!(
            (&parsed.name[..], &parsed.query[..]),
            (&b"s1"[..], &b"SELECT 2"[..])
        );
        let e = Frame::from_raw(build_execute("x"));
        assert_eq!(&execute_portal(&e).unwrap()[..], b"x");
    }
}
