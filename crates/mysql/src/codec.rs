//! Framing: a byte stream into packets, and payloads back into packets.
//!
//! A packet is `length: u24 LE, sequence id: u8, payload`. A payload of 2^24−1 bytes or more is
//! sent as several packets, each full one (length 0xFFFFFF) followed by the next, the last one
//! shorter (possibly empty); their sequence ids are consecutive. [`PacketReader`] returns a whole
//! payload: zero-copy when it came in one packet (the common case), joined when it was split.
//! It also keeps the exact bytes received, so a packet the gateway does not rewrite is
//! forwarded as it came. Declared lengths are checked against the limit as soon as each header
//! arrives: a peer announcing 1 GiB gets an error, not an allocation.

use bytes::{Bytes, BytesMut};

/// The largest payload of one packet; a payload this long continues in the next packet.
pub const MAX_PACKET_PAYLOAD: usize = 0xff_ffff;

/// Why a byte stream is not valid MySQL framing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("a payload of at least {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("packet sequence id {got} where {expected} was due")]
    BadSequence { expected: u8, got: u8 },
    #[error("bytes after the last packet before a TLS handshake")]
    TrailingBytes,
}

/// One logical packet: its payload, the sequence ids of its first and last fragment, and the
/// bytes exactly as received (headers included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub first_seq: u8,
    pub last_seq: u8,
    pub payload: Bytes,
    pub wire: Bytes,
}

impl Packet {
    /// The sequence id the answer to this packet starts with.
    pub fn next_seq(&self) -> u8 {
        self.last_seq.wrapping_add(1)
    }
}

/// Splits a byte stream into packets, with a limit on a payload's total size.
#[derive(Debug, Clone)]
pub struct PacketReader {
    max_payload: usize,
}

impl PacketReader {
    pub fn new(max_payload: usize) -> Self {
        Self { max_payload }
    }

    /// Takes the next whole packet from the front of `buf`, if it is all there. `Ok(None)`:
    /// more bytes are needed (nothing is consumed). An error means the stream is unusable.
    pub fn next_packet(&self, buf: &mut BytesMut) -> Result<Option<Packet>, CodecError> {
        let mut at = 0usize;
        let mut total = 0usize;
        let mut fragments = 0usize;
        let mut first_seq = None;
        let mut last_seq = 0u8;
        loop {
            let Some(header) = buf.get(at..at + 4) else {
                return Ok(None);
            };
            let (len, seq) = header_fields(header);
            match first_seq {
                None => first_seq = Some(seq),
                Some(_) if seq != last_seq.wrapping_add(1) => {
                    return Err(CodecError::BadSequence {
                        expected: last_seq.wrapping_add(1),
                        got: seq,
                    });
                }
                Some(_) => {}
            }
            last_seq = seq;
            total += len;
            if total > self.max_payload {
                return Err(CodecError::TooLarge {
                    len: total,
                    limit: self.max_payload,
                });
            }
            fragments += 1;
            at += 4 + len;
            if buf.len() < at {
                return Ok(None);
            }
            if len < MAX_PACKET_PAYLOAD {
                break;
            }
        }
        let wire = buf.split_to(at).freeze();
        let payload = if fragments == 1 {
            wire.slice(4..)
        } else {
            join_payload(&wire, total)
        };
        Ok(Some(Packet {
            first_seq: first_seq.unwrap_or(0),
            last_seq,
            payload,
            wire,
        }))
    }
}

fn header_fields(header: &[u8]) -> (usize, u8) {
    let b = |i: usize| header.get(i).copied().unwrap_or(0);
    let len = usize::from(b(0)) | usize::from(b(1)) << 8 | usize::from(b(2)) << 16;
    (len, b(3))
}

/// The payload of a split packet: its fragments' payloads, headers left out.
fn join_payload(wire: &Bytes, total: usize) -> Bytes {
    let mut out = BytesMut::with_capacity(total);
    let mut at = 0usize;
    while let Some(header) = wire.get(at..at + 4) {
        let (len, _) = header_fields(header);
        out.extend_from_slice(wire.get(at + 4..at + 4 + len).unwrap_or_default());
        at += 4 + len;
    }
    out.freeze()
}

/// Appends `payload` as packets starting at sequence id `seq` (split at 2^24−1 bytes, with
/// the empty packet that ends a payload of an exact multiple). Returns the next sequence id.
pub fn write_packets(payload: &[u8], mut seq: u8, out: &mut BytesMut) -> u8 {
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_PACKET_PAYLOAD);
        let (chunk, tail) = rest.split_at(n);
        out.extend_from_slice((n as u32).to_le_bytes().get(..3).unwrap_or_default());
        out.extend_from_slice(&[seq]);
        out.extend_from_slice(chunk);
        seq = seq.wrapping_add(1);
        rest = tail;
        if n < MAX_PACKET_PAYLOAD {
            return seq;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packets(payload: &[u8], seq: u8) -> BytesMut {
        let mut out = BytesMut::new();
        write_packets(payload, seq, &mut out);
        out
    }

    #[test]
    fn one_packet_is_taken_whole_and_zero_copy() {
        let mut buf = packets(b"\x03SELECT 1", 0);
        buf.extend_from_slice(b"\x01\x00"); // the start of the next header
        let p = PacketReader::new(1 << 20)
            .next_packet(&mut buf)
            .unwrap_or_default()
            .unwrap_or_else(|| panic!("a whole packet"));
        assert_eq!(&p.payload[..], b"\x03SELECT 1");
        assert_eq!((p.first_seq, p.last_seq, p.next_seq()), (0, 0, 1));
        assert_eq!(&p.wire[..4], &[9, 0, 0, 0]);
        assert_eq!(&buf[..], b"\x01\x00", "only the packet was consumed");
    }

    #[test]
    fn partial_input_consumes_nothing() {
        let whole = packets(b"hello", 7);
        let reader = PacketReader::new(1 << 20);
        for cut in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..cut]);
            assert_eq!(reader.next_packet(&mut buf), Ok(None), "cut at {cut}");
            assert_eq!(buf.len(), cut);
        }
    }

    #[test]
    fn a_split_payload_is_joined_and_the_exact_multiple_ends_with_an_empty_packet() {
        let big = vec![b'x'; MAX_PACKET_PAYLOAD + 10];
        let mut buf = packets(&big, 3);
        let p = PacketReader::new(64 << 20)
            .next_packet(&mut buf)
            .unwrap_or_default()
            .unwrap_or_else(|| panic!("a whole packet"));
        assert_eq!(p.payload.len(), big.len());
        assert_eq!((p.first_seq, p.last_seq), (3, 4));
        assert!(buf.is_empty());

        let exact = vec![b'y'; MAX_PACKET_PAYLOAD];
        let buf = packets(&exact, 0);
        assert_eq!(buf.len(), MAX_PACKET_PAYLOAD + 8, "a trailing empty packet");
        let mut buf = buf;
        let p = PacketReader::new(64 << 20)
            .next_packet(&mut buf)
            .unwrap_or_default()
            .unwrap_or_else(|| panic!("a whole packet"));
        assert_eq!(p.payload.len(), MAX_PACKET_PAYLOAD);
        assert_eq!(p.last_seq, 1);
    }

    #[test]
    fn lengths_over_the_limit_fail_at_the_header_and_sequences_must_follow() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0][..]);
        assert_eq!(
            PacketReader::new(1 << 20).next_packet(&mut buf),
            Err(CodecError::TooLarge {
                len: MAX_PACKET_PAYLOAD,
                limit: 1 << 20
            })
        );
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0xff, 0xff, 0xff, 5]);
        buf.extend_from_slice(&vec![0u8; MAX_PACKET_PAYLOAD]);
        buf.extend_from_slice(&[0, 0, 0, 9]);
        assert_eq!(
            PacketReader::new(64 << 20).next_packet(&mut buf),
            Err(CodecError::BadSequence {
                expected: 6,
                got: 9
            })
        );
    }
}
