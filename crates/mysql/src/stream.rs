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

    /// The stream and the bytes read past the last packet: a client starts its TLS handshake
    /// right after its SSLRequest (no answer is due), so the two may arrive together.
    pub fn into_parts(self) -> (S, BytesMut) {
        (self.io, self.buf)
    }

    /// Closes the write side (after a final error packet).
    pub async fn shutdown(&mut self) {
        let _ = self.flush().await;
        let _ = self.io.shutdown().await;
    }
}

/// A stream whose first bytes were already read: they are served again before the stream's
/// own (the start of a TLS handshake that arrived with the SSLRequest).
pub struct Prefixed<S> {
    prefix: BytesMut,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: BytesMut, inner: S) -> Self {
        Self { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let head = self.prefix.split_to(n);
            buf.put_slice(&head);
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn the_prefix_is_read_before_the_stream() {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b" world")
            .await
            .ok();
        drop(a);
        let mut p = Prefixed::new(BytesMut::from(&b"hello"[..]), b);
        let mut out = Vec::new();
        p.read_to_end(&mut out).await.ok();
        assert_eq!(out, b"hello world");
    }
}
