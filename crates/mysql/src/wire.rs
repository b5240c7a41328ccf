//! The protocol's basic encodings: little-endian fixed-width integers, length-encoded integers
//! and strings, NUL-terminated strings.
//!
//! [`Reader`] never panics and never reads past its slice: a short or malformed field is a
//! [`WireError`] naming the field, so a parser's error says what was wrong.

/// A field could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated {what}")]
    Truncated { what: &'static str },
    /// `0xff` (an ERR marker) or, where a length is required, `0xfb` (NULL).
    #[error("invalid length-encoded integer in {what}")]
    BadLenenc { what: &'static str },
    #[error("{what} is not terminated")]
    Unterminated { what: &'static str },
    #[error("{what}: {len} bytes is more than the packet holds")]
    TooLong { what: &'static str, len: u64 },
}

/// A cursor over one packet's payload.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, at: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.at)
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        let end = self
            .at
            .checked_add(n)
            .ok_or(WireError::Truncated { what })?;
        let out = self
            .buf
            .get(self.at..end)
            .ok_or(WireError::Truncated { what })?;
        self.at = end;
        Ok(out)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = self.buf.get(self.at..).unwrap_or_default();
        self.at = self.buf.len();
        out
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        let b = self.bytes(1, what)?;
        b.first().copied().ok_or(WireError::Truncated { what })
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        let b = self.bytes(2, what)?;
        let mut a = [0u8; 2];
        a.copy_from_slice(b);
        Ok(u16::from_le_bytes(a))
    }

    pub fn u24(&mut self, what: &'static str) -> Result<u32, WireError> {
        let b = self.bytes(3, what)?;
        let mut a = [0u8; 4];
        if let Some(dst) = a.get_mut(..3) {
            dst.copy_from_slice(b);
        }
        Ok(u32::from_le_bytes(a))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        let b = self.bytes(4, what)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        Ok(u32::from_le_bytes(a))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        let b = self.bytes(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A length-encoded integer; `None` for the NULL marker `0xfb` (row values).
    pub fn lenenc_or_null(&mut self, what: &'static str) -> Result<Option<u64>, WireError> {
        match self.u8(what)? {
            b @ 0..=0xfa => Ok(Some(u64::from(b))),
            0xfb => Ok(None),
            0xfc => self.u16(what).map(|v| Some(u64::from(v))),
            0xfd => self.u24(what).map(|v| Some(u64::from(v))),
            0xfe => self.u64(what).map(Some),
            0xff => Err(WireError::BadLenenc { what }),
        }
    }

    /// A length-encoded integer where NULL is not allowed.
    pub fn lenenc(&mut self, what: &'static str) -> Result<u64, WireError> {
        self.lenenc_or_null(what)?
            .ok_or(WireError::BadLenenc { what })
    }

    /// A length-encoded string (its length checked against what is left).
    pub fn lenenc_bytes(&mut self, what: &'static str) -> Result<&'a [u8], WireError> {
        let len = self.lenenc(what)?;
        let n = usize::try_from(len)
            .ok()
            .filter(|n| *n <= self.remaining())
            .ok_or(WireError::TooLong { what, len })?;
        self.bytes(n, what)
    }

    /// A NUL-terminated string (without its NUL).
    pub fn nul_str(&mut self, what: &'static str) -> Result<&'a [u8], WireError> {
        let rest = self.buf.get(self.at..).unwrap_or_default();
        let end = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or(WireError::Unterminated { what })?;
        let out = rest.get(..end).unwrap_or_default();
        self.at += end + 1;
        Ok(out)
    }
}

/// Appends a length-encoded integer.
pub fn put_lenenc(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=0xfa => out.push(v as u8),
        0xfb..=0xffff => {
            out.push(0xfc);
            out.extend_from_slice(&(v as u16).to_le_bytes());
        }
        0x1_0000..=0xff_ffff => {
            out.push(0xfd);
            out.extend_from_slice((v as u32).to_le_bytes().get(..3).unwrap_or_default());
        }
        _ => {
            out.push(0xfe);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// Appends a length-encoded string.
pub fn put_lenenc_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_lenenc(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Appends a NUL-terminated string (`b` must not hold a NUL; one inside is cut there).
pub fn put_nul_str(out: &mut Vec<u8>, b: &[u8]) {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    out.extend_from_slice(b.get(..end).unwrap_or_default());
    out.push(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_round_trips_at_every_width_and_rejects_markers() {
        for v in [
            0u64,
            250,
            251,
            0xffff,
            0x1_0000,
            0xff_ffff,
            0x100_0000,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_lenenc(&mut out, v);
            let mut r = Reader::new(&out);
            assert_eq!(r.lenenc("v"), Ok(v), "{v}");
            assert!(r.is_empty());
        }
        assert_eq!(Reader::new(&[0xfb]).lenenc_or_null("v"), Ok(None));
        assert!(Reader::new(&[0xfb]).lenenc("v").is_err());
        assert!(Reader::new(&[0xff]).lenenc("v").is_err());
        assert!(Reader::new(&[0xfc, 1]).lenenc("v").is_err());
    }

    #[test]
    fn strings_are_bounded_by_the_packet() {
        let mut r = Reader::new(b"\x05abc");
        assert_eq!(
            r.lenenc_bytes("name"),
            Err(WireError::TooLong {
                what: "name",
                len: 5
            })
        );
        let mut r = Reader::new(b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff");
        assert!(r.lenenc_bytes("huge").is_err());
        let mut r = Reader::new(b"user\0rest");
        assert_eq!(r.nul_str("user"), Ok(&b"user"[..]));
        assert_eq!(r.rest(), b"rest");
        assert!(Reader::new(b"no end").nul_str("x").is_err());
    }
}
