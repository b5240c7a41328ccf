//! Framing: splitting a byte stream into PostgreSQL messages without copying.
//!
//! A regular message is `tag:u8, len:i32 (including itself), body`. Frames are returned as
//! `Bytes` views of the read buffer holding the *whole* message, so a message that needs no
//! rewrite is forwarded as the very bytes that arrived. Declared lengths are checked against
//! per-message limits before any memory is reserved: a peer claiming a 1 GiB message gets an
//! error, not an allocation.

use bytes::{Buf, Bytes, BytesMut};

/// Why a byte stream is not valid PostgreSQL framing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("invalid message length {len} for message type {tag:?}")]
    BadLength { tag: char, len: i64 },
    #[error("message type {tag:?} of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { tag: char, len: usize, limit: usize },
    #[error("unknown message type {tag:?}")]
    UnknownType { tag: char },
    #[error("malformed {what} message")]
    Malformed { what: &'static str },
}

/// One complete message: tag, length and body, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    raw: Bytes,
}

impl Frame {
    /// Wraps a whole message (tag + length + body). The caller guarantees the shape; frames
    /// built by [`FrameReader`] or [`crate::messages`] always have it.
    pub(crate) fn from_raw(raw: Bytes) -> Self {
        Self { raw }
    }

    pub fn tag(&self) -> u8 {
        self.raw.first().copied().unwrap_or(0)
    }

    /// The body after the 5-byte header.
    pub fn body(&self) -> Bytes {
        if self.raw.len() >= 5 {
            self.raw.slice(5..)
        } else {
            Bytes::new()
        }
    }

    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    pub fn into_raw(self) -> Bytes {
        self.raw
    }

    pub fn len(&self) -> usize {
        self.raw.len()
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
}

/// Which side's messages a reader accepts (the limits and valid tags differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Messages sent by a client.
    Frontend,
    /// Messages sent by a server.
    Backend,
}

/// Largest message PostgreSQL itself accepts (`PQ_LARGE_MESSAGE_LIMIT`).
pub const LARGE_MESSAGE_LIMIT: usize = 0x3fff_ffff;
/// Limit for messages that carry no data of their own.
pub const SMALL_MESSAGE_LIMIT: usize = 64 * 1024;

/// Largest body a frontend message of type `tag` may declare, or `None` for an unknown tag.
pub fn frontend_limit(tag: u8, large: usize) -> Option<usize> {
    match tag {
        // Query, Parse, Bind, CopyData, FunctionCall, password/SASL responses.
        b'Q' | b'P' | b'B' | b'd' | b'F' => Some(large),
        b'p' | b'E' | b'D' | b'C' | b'c' | b'f' => Some(SMALL_MESSAGE_LIMIT),
        // Sync, Flush, Terminate have no body.
        b'S' | b'H' | b'X' => Some(0),
        _ => None,
    }
}

/// Largest body a backend message of type `tag` may declare.
pub fn backend_limit(tag: u8) -> Option<usize> {
    match tag {
        b'D' | b'd' | b'T' | b'E' | b'N' | b'A' | b'V' | b'W' | b'G' | b'H' | b't' | b'R'
        | b'S' | b'v' | b'C' => Some(LARGE_MESSAGE_LIMIT),
        b'1' | b'2' | b'3' | b'I' | b'n' | b's' | b'c' | b'K' | b'Z' => Some(SMALL_MESSAGE_LIMIT),
        _ => None,
    }
}

/// Splits messages off a buffer as they become complete.
#[derive(Debug)]
pub struct FrameReader {
    side: Side,
    large_limit: usize,
}

impl FrameReader {
    pub fn new(side: Side, large_limit: usize) -> Self {
        Self {
            side,
            large_limit: large_limit.min(LARGE_MESSAGE_LIMIT),
        }
    }

    /// Returns how many more bytes the message at the front of `buf` needs, `0` if a whole
    /// message is there, or an error if the header is invalid. Lets the caller reserve exactly.
    pub fn check_header(&self, buf: &[u8]) -> Result<usize, CodecError> {
        let Some(header) = buf.get(..5) else {
            return Ok(5 - buf.len());
        };
        let tag = header.first().copied().unwrap_or(0);
        let len = i32::from_be_bytes([
            header.get(1).copied().unwrap_or(0),
            header.get(2).copied().unwrap_or(0),
            header.get(3).copied().unwrap_or(0),
            header.get(4).copied().unwrap_or(0),
        ]);
        let limit = match self.side {
            Side::Frontend => frontend_limit(tag, self.large_limit),
            Side::Backend => backend_limit(tag),
        }
        .ok_or(CodecError::UnknownType { tag: tag as char })?;
        if len < 4 {
            return Err(CodecError::BadLength {
                tag: tag as char,
                len: i64::from(len),
            });
        }
        let body = usize::try_from(len - 4).unwrap_or(usize::MAX);
        if body > limit {
            if limit == 0 {
                return Err(CodecError::BadLength {
                    tag: tag as char,
                    len: i64::from(len),
                });
            }
            return Err(CodecError::TooLarge {
                tag: tag as char,
                len: body,
                limit,
            });
        }
        let total = body + 5;
        Ok(total.saturating_sub(buf.len()))
    }

    /// Takes the next complete message off `buf`, if there is one.
    pub fn next_frame(&self, buf: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match self.check_header(buf)? {
            0 => {
                let len = i32::from_be_bytes([
                    buf.get(1).copied().unwrap_or(0),
                    buf.get(2).copied().unwrap_or(0),
                    buf.get(3).copied().unwrap_or(0),
                    buf.get(4).copied().unwrap_or(0),
                ]);
                let total = usize::try_from(len).unwrap_or(0) + 1;
                Ok(Some(Frame::from_raw(buf.split_to(total).freeze())))
            }
            _ => Ok(None),
        }
    }
}

/// A cursor over a message body with checked reads (no panics on short or bad input).
pub struct BodyReader {
    body: Bytes,
    what: &'static str,
}

impl BodyReader {
    pub fn new(body: Bytes, what: &'static str) -> Self {
        Self { body, what }
    }

    fn err(&self) -> CodecError {
        CodecError::Malformed { what: self.what }
    }

    pub fn remaining(&self) -> usize {
        self.body.len()
    }

    pub fn u8(&mut self) -> Result<u8, CodecError> {
        if self.body.is_empty() {
            return Err(self.err());
        }
        Ok(self.body.get_u8())
    }

    pub fn i16(&mut self) -> Result<i16, CodecError> {
        if self.body.len() < 2 {
            return Err(self.err());
        }
        Ok(self.body.get_i16())
    }

    pub fn i32(&mut self) -> Result<i32, CodecError> {
        if self.body.len() < 4 {
            return Err(self.err());
        }
        Ok(self.body.get_i32())
    }

    /// A NUL-terminated string, without the NUL (bytes, not necessarily UTF-8).
    pub fn cstr(&mut self) -> Result<Bytes, CodecError> {
        let pos = memchr::memchr(0, &self.body).ok_or_else(|| self.err())?;
        let s = self.body.split_to(pos);
        self.body.advance(1);
        Ok(s)
    }

    pub fn bytes(&mut self, n: usize) -> Result<Bytes, CodecError> {
        if self.body.len() < n {
            return Err(self.err());
        }
        Ok(self.body.split_to(n))
    }

    pub fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_whole_messages_zero_copy() {
        let mut buf = BytesMut::from(&b"Q\0\0\0\x0dSELECT 1\0S\0\0\0\x04X\0"[..]);
        let r = FrameReader::new(Side::Frontend, 1 << 20);
        let q = r.next_frame(&mut buf).unwrap().unwrap();
        assert_eq!(q.tag(), b'Q');
        assert_eq!(&q.body()[..], b"SELECT 1\0");
        let s = r.next_frame(&mut buf).unwrap().unwrap();
        assert_eq!(s.raw().as_ref(), b"S\0\0\0\x04");
        assert_eq!(r.next_frame(&mut buf).unwrap(), None);
        assert_eq!(r.check_header(&buf).unwrap(), 3);
    }

    #[test]
    fn rejects_huge_and_negative_lengths_before_allocating() {
        let r = FrameReader::new(Side::Frontend, 1 << 20);
        let huge = [b'Q', 0x40, 0, 0, 0];
        assert!(matches!(
            r.check_header(&huge),
            Err(CodecError::TooLarge { .. })
        ));
        let neg = [b'Q', 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            r.check_header(&neg),
            Err(CodecError::BadLength { .. })
        ));
        let sync_with_body = [b'S', 0, 0, 0, 5];
        assert!(matches!(
            r.check_header(&sync_with_body),
            Err(CodecError::BadLength { .. })
        ));
        assert!(matches!(
            r.check_header(b"\x00\0\0\0\x04"),
            Err(CodecError::UnknownType { .. })
        ));
    }

    #[test]
    fn body_reader_never_panics() {
        let mut b = BodyReader::new(Bytes::from_static(b"ab"), "test");
        assert!(b.i32().is_err());
        assert!(b.cstr().is_err());
        assert_eq!(b.i16().unwrap(), 0x6162);
        assert!(b.u8().is_err());
    }
}
