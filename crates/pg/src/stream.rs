//! Byte streams that may or may not be TLS, split into owned halves for the two relay
//! directions. Plain TCP splits without a lock; TLS goes through `tokio::io::split`.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

pub type BoxRead = Box<dyn AsyncRead + Send + Sync + Unpin>;
pub type BoxWrite = Box<dyn AsyncWrite + Send + Sync + Unpin>;

pub fn split_tcp(s: TcpStream) -> (BoxRead, BoxWrite) {
    let (r, w) = s.into_split();
    (Box::new(r), Box::new(w))
}

pub fn split_any<S>(s: S) -> (BoxRead, BoxWrite)
where
    S: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static,
{
    let (r, w) = tokio::io::split(s);
    (Box::new(r), Box::new(w))
}
