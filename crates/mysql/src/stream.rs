//! A byte stream (TCP or TLS) read as packets and written in batches.
//!
//! Why one type for both peers: the client side and the upstream side frame the same way, and
//! the session is strictly request–response, so one task owns both streams and no split is
//! needed. Reads are zero-copy for the common one-packet payload ([`PacketReader`]); writes
//! are queued and flushed once per answer (or when the queue passes [`FLUSH_AT`]), which keeps
//! memory bounded for large results without a syscall per row.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::codec::{CodecError, Packet, PacketReader, write_packets};

/// What any stream the session uses must be.
pub trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// Queued output past this many bytes is written out before more is queued.
pub const FLUSH_AT: usize = 64 * 1024;

/// Why a packet stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("framing: {0}")]
    Codec(#[from] CodecError),
    #[error("the peer closed the connection")]
    Closed,
}

/// Packets over a stream.
pub struct PacketStream<S> {
    io: S,
    buf: BytesMut,
    reader: PacketReader,
    out: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> PacketStream<S> {
    pub fn new(io: S, max_payload: usize) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(8 * 1024),
            reader: PacketReader::new(max_payload),
            out: BytesMut::with_capacity(8 * 1024),
        }
    }

    /// Changes the largest payload accepted from now on (after the login, the configured
    /// limit replaces the login's small one).
    pub fn set_max_payload(&mut self, max_payload: usize) {
        self.reader = PacketReader::new(max_payload);
    }

    /// The next whole packet.
    pub async fn read(&mut self) -> Result<Packet, StreamError> {
        loop {
            if let Some(p) = self.reader.next_packet(&mut self.buf)? {
                return Ok(p);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(StreamError::Closed);
            }
        }
    }

    /// Queues `payload` as packets from sequence id `seq`; returns the next id.
    pub fn queue(&mut self, payload: &[u8], seq: u8) -> u8 {
        write_packets(payload, seq, &mut self.out)
    }

    /// Queues bytes already framed (a packet forwarded as it came).
    pub fn queue_wire(&mut self, wire: &[u8]) {
        self.out.extend_from_slice(wire);
    }

    /// Writes out what is queued once it passes [`FLUSH_AT`].
    pub async fn flush_if_full(&mut self) -> std::io::Result<()> {
        if self.out.len() >= FLUSH_AT {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes out everything queued.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.io.write_all(&self.out).await?;
            self.out.clear();
        }
        self.io.flush().await
    }

    /// Queues `payload` at `seq` and writes everything out.
    pub async fn send(&mut self, payload: &[u8], seq: u8) -> std::io::Result<u8> {
        let next = self.queue(payload, seq);
        self.flush().await?;
        Ok(next)
    }

    /// The stream, for a TLS upgrade. Fails if the peer already sent bytes past the last
    /// packet (they would belong to the TLS handshake, read as plaintext).
    pub fn into_inner(self) -> Result<S, StreamError> {
        if !self.buf.is_empty() {
            return Err(StreamError::Codec(CodecError::TrailingBytes));
        }
        Ok(self.io)
    }

    /// Closes the write side (after a final error packet).
    pub async fn shutdown(&mut self) {
        let _ = self.flush().await;
        let _ = self.io.shutdown().await;
    }
}
