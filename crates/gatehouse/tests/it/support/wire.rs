//! The one raw PostgreSQL wire client of the tests: frame builders, a reader that tells a
//! closed connection from a slow one, and [`WireClient`], a logged-in session for message
//! sequences the real clients never send (or to see the exact bytes the gateway sends).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Gateway;

/// Protocol version 3.0, as a StartupMessage carries it.
pub const PROTOCOL_3_0: i32 = 196_608;

/// One backend message as received.
#[derive(Debug, Clone)]
pub struct Msg {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Msg {
    pub fn tag(&self) -> char {
        self.tag as char
    }

    /// ErrorResponse / NoticeResponse fields by code (`S`, `V`, `C`, `M`...).
    pub fn fields(&self) -> BTreeMap<char, String> {
        let mut out = BTreeMap::new();
        let mut rest = &self.body[..];
        while let Some((&code, tail)) = rest.split_first() {
            if code == 0 {
                break;
            }
            let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            out.insert(
                code as char,
                String::from_utf8_lossy(&tail[..end]).into_owned(),
            );
            rest = tail.get(end + 1..).unwrap_or_default();
        }
        out
    }

    /// The i32 at `at` in the body.
    pub fn i32_at(&self, at: usize) -> i32 {
        i32::from_be_bytes(self.body[at..at + 4].try_into().unwrap())
    }

    /// DataRow values as text.
    pub fn row(&self) -> Vec<Option<String>> {
        assert_eq!(self.tag, b'D');
        let n = i16::from_be_bytes([self.body[0], self.body[1]]);
        let mut at = 2;
        let mut out = Vec::new();
        for _ in 0..n {
            let len = self.i32_at(at);
            at += 4;
            if len < 0 {
                out.push(None);
            } else {
                let len = len as usize;
                out.push(Some(
                    String::from_utf8_lossy(&self.body[at..at + len]).into_owned(),
                ));
                at += len;
            }
        }
        out
    }
}

pub fn describe(msgs: &[Msg]) -> String {
    msgs.iter()
        .map(|m| {
            if m.tag == b'E' || m.tag == b'N' {
                format!("{}{:?}", m.tag(), m.fields())
            } else {
                format!("{}({} bytes)", m.tag(), m.body.len())
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A StartupMessage with `params`.
pub fn startup_packet(version: i32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    framed_startup(body)
}

/// A startup-style packet: 4-byte length (including itself), then `body`.
pub fn framed_startup(body: Vec<u8>) -> Vec<u8> {
    let mut out = i32::try_from(body.len() + 4)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(&body);
    out
}

pub fn request_packet(code: i32) -> Vec<u8> {
    let mut out = 8i32.to_be_bytes().to_vec();
    out.extend_from_slice(&code.to_be_bytes());
    out
}

pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&i32::try_from(body.len() + 4).unwrap().to_be_bytes());
    out.extend_from_slice(body);
    out
}

pub fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    message(b'Q', &body)
}

pub fn password(token: &str) -> Vec<u8> {
    let mut body = token.as_bytes().to_vec();
    body.push(0);
    message(b'p', &body)
}

pub fn is_closed(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe
    )
}

/// Reads one message; `None` when the gateway closed the connection. Panics if nothing
/// arrives within `wait`.
pub async fn read_msg(s: &mut TcpStream, wait: Duration) -> Option<Msg> {
    let fut = async {
        let mut header = [0u8; 5];
        if let Err(e) = s.read_exact(&mut header).await {
            assert!(is_closed(&e), "read error: {e}");
            return None;
        }
        let len = i32::from_be_bytes(header[1..5].try_into().unwrap());
        assert!(
            (4..16 * 1024 * 1024).contains(&len),
            "gateway sent a message {:?} with length {len}",
            header[0] as char
        );
        let mut body = vec![0u8; len as usize - 4];
        if let Err(e) = s.read_exact(&mut body).await {
            assert!(is_closed(&e), "read error: {e}");
            return None;
        }
        Some(Msg {
            tag: header[0],
            body,
        })
    };
    tokio::time::timeout(wait, fut)
        .await
        .unwrap_or_else(|_| panic!("no answer from the gateway within {wait:?}"))
}

/// Reads until the gateway closes the connection; panics if it is still open after `wait`.
pub async fn read_until_close(s: &mut TcpStream, wait: Duration) -> Vec<Msg> {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "connection still open after {wait:?}; got {}",
            describe(&out)
        );
        match read_msg(s, left).await {
            Some(m) => out.push(m),
            None => return out,
        }
    }
}

/// Reads up to and including the next ReadyForQuery.
pub async fn read_until_ready(s: &mut TcpStream) -> Vec<Msg> {
    let mut out = Vec::new();
    loop {
        match read_msg(s, Duration::from_secs(15)).await {
            Some(m) => {
                let done = m.tag == b'Z';
                out.push(m);
                if done {
                    return out;
                }
            }
            None => panic!(
                "connection closed before ReadyForQuery; got {}",
                describe(&out)
            ),
        }
    }
}

/// One backend message as read by [`WireClient`]: tag and body.
pub type WireMsg = (u8, Vec<u8>);

/// A minimal frontend speaking the wire protocol directly, so a test sees the exact bytes the
/// gateway sends and can choose result formats and message sequences freely.
pub struct WireClient {
    tcp: tokio::net::TcpStream,
}

impl WireClient {
    /// Connects through the gateway as `agent` with `token` and waits for ReadyForQuery.
    pub async fn connect(gw: &Gateway, db: &str, token: &str) -> WireClient {
        let mut tcp = TcpStream::connect(("127.0.0.1", gw.pg_port))
            .await
            .expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        tcp.write_all(&startup_packet(
            PROTOCOL_3_0,
            &[("user", "agent"), ("database", db)],
        ))
        .await
        .expect("startup");
        let mut c = WireClient { tcp };
        let (tag, auth) = c.read_msg().await;
        assert_eq!(
            (tag, auth.as_slice()),
            (b'R', &3i32.to_be_bytes()[..]),
            "cleartext password request"
        );
        c.tcp.write_all(&password(token)).await.expect("password");
        let msgs = c.until_ready().await;
        assert!(
            msgs.iter()
                .any(|(t, b)| *t == b'R' && b == &0i32.to_be_bytes()),
            "authentication failed: {msgs:?}"
        );
        c
    }

    pub async fn send(&mut self, tag: u8, body: &[u8]) {
        self.tcp.write_all(&message(tag, body)).await.expect("send");
    }

    /// The next backend message; panics if the gateway closed the connection or sent
    /// nothing for 20 s.
    pub async fn read_msg(&mut self) -> WireMsg {
        let m = read_msg(&mut self.tcp, Duration::from_secs(20))
            .await
            .expect("the gateway closed the connection");
        (m.tag, m.body)
    }

    /// Reads up to and including ReadyForQuery.
    pub async fn until_ready(&mut self) -> Vec<WireMsg> {
        let mut out = Vec::new();
        loop {
            let m = self.read_msg().await;
            let done = m.0 == b'Z';
            out.push(m);
            if done {
                return out;
            }
        }
    }

    /// A simple-protocol Query; everything up to ReadyForQuery.
    pub async fn simple(&mut self, sql: &str) -> Vec<WireMsg> {
        let mut b = sql.as_bytes().to_vec();
        b.push(0);
        self.send(b'Q', &b).await;
        self.until_ready().await
    }

    /// Extended protocol on the unnamed statement and portal: Parse (no parameter types),
    /// Bind (`params` in text format, every result column in `result_format`: 0 text,
    /// 1 binary), optionally Describe (portal), Execute, Sync.
    pub async fn extended(
        &mut self,
        sql: &str,
        params: &[&str],
        result_format: i16,
        describe: bool,
    ) -> Vec<WireMsg> {
        let mut p = vec![0u8];
        p.extend_from_slice(sql.as_bytes());
        p.extend_from_slice(&[0, 0, 0]);
        self.send(b'P', &p).await;
        let mut b = vec![0u8, 0u8];
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&(params.len() as i16).to_be_bytes());
        for v in params {
            b.extend_from_slice(&(v.len() as i32).to_be_bytes());
            b.extend_from_slice(v.as_bytes());
        }
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&result_format.to_be_bytes());
        self.send(b'B', &b).await;
        if describe {
            self.send(b'D', b"P\0").await;
        }
        let mut e = vec![0u8];
        e.extend_from_slice(&0i32.to_be_bytes());
        self.send(b'E', &e).await;
        self.send(b'S', &[]).await;
        self.until_ready().await
    }
}

impl WireClient {
    /// Parse into the unnamed statement (no parameter types), without Sync.
    pub async fn parse_unnamed(&mut self, sql: &str) {
        let mut b = vec![0u8];
        b.extend_from_slice(sql.as_bytes());
        b.extend_from_slice(&[0, 0, 0]);
        self.send(b'P', &b).await;
    }

    /// Bind (unnamed portal, unnamed statement, one text parameter), Execute, Sync.
    pub async fn bind_execute_sync(&mut self, param: &str) -> Vec<WireMsg> {
        let mut b = vec![0u8, 0u8];
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&(param.len() as i32).to_be_bytes());
        b.extend_from_slice(param.as_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
        self.send(b'B', &b).await;
        let mut e = vec![0u8];
        e.extend_from_slice(&0i32.to_be_bytes());
        self.send(b'E', &e).await;
        self.send(b'S', &[]).await;
        self.until_ready().await
    }
}

/// The values of every DataRow among `msgs` (`None`: SQL NULL).
pub fn wire_data_rows(msgs: &[WireMsg]) -> Vec<Vec<Option<Vec<u8>>>> {
    msgs.iter()
        .filter(|(t, _)| *t == b'D')
        .map(|(_, body)| {
            let n = i16::from_be_bytes([body[0], body[1]]) as usize;
            let mut at = 2;
            let mut row = Vec::with_capacity(n);
            for _ in 0..n {
                let len = i32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
                at += 4;
                if len < 0 {
                    row.push(None);
                } else {
                    let len = len as usize;
                    row.push(Some(body[at..at + len].to_vec()));
                    at += len;
                }
            }
            row
        })
        .collect()
}

/// The fields (`code`, value) of the first ErrorResponse among `msgs`.
pub fn wire_error(msgs: &[WireMsg]) -> Option<Vec<(u8, String)>> {
    let (_, body) = msgs.iter().find(|(t, _)| *t == b'E')?;
    Some(
        body.split(|b| *b == 0)
            .filter(|f| !f.is_empty())
            .map(|f| (f[0], String::from_utf8_lossy(&f[1..]).into_owned()))
            .collect(),
    )
}
