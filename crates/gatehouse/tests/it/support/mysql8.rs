//! A MySQL-protocol test server for what MariaDB cannot show: `caching_sha2_password` as
//! MySQL 8 speaks it (no MySQL 8 server is packaged for this machine; MariaDB has no such
//! server plugin). Only the login is MySQL 8's; after it, every query is answered with one
//! text row, enough for the gateway's own checks and a client's `SELECT`.
//!
//! The account decides the path: `fast_user` passes the fast path (the server checks the
//! SHA-256 scramble and answers `0x03`), `full_user` is asked for full authentication
//! (`0x04`) and must send the password RSA-encrypted to the server's key — a request for the
//! key (`0x02`) is refused and logged, since the gateway must use only the pinned key.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeySize, OAEP_SHA1_MGF1SHA1, OaepPrivateDecryptingKey, PrivateDecryptingKey};
use base64::Engine as _;
use sha2::{Digest, Sha256};

pub struct Mysql8 {
    pub port: u16,
    /// The server's RSA public key, PEM (what `public_key.pem` holds on a MySQL 8 server).
    pub public_pem: String,
    /// What happened, in order: `fast ok`, `full rsa ok`, `key requested`, `bad password`,
    /// `query <text>`.
    pub log: Arc<Mutex<Vec<String>>>,
}

const SCRAMBLE: &[u8; 20] = b"0123456789ABCDEFGHIJ";

impl Mysql8 {
    pub fn start(password: &str) -> Mysql8 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let private = PrivateDecryptingKey::generate(KeySize::Rsa2048).expect("rsa key");
        let der = private.public_key().as_der().expect("der");
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let mut public_pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            public_pem.push_str(std::str::from_utf8(line).expect("b64"));
            public_pem.push('\n');
        }
        public_pem.push_str("-----END PUBLIC KEY-----\n");
        let key = Arc::new(OaepPrivateDecryptingKey::new(private).expect("oaep"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let password = password.to_owned();
        let l = log.clone();
        std::thread::spawn(move || {
            for (id, conn) in listener.incoming().enumerate() {
                let Ok(conn) = conn else { break };
                let (key, log, password) = (key.clone(), l.clone(), password.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, id as u32 + 1, &key, &password, &log);
                });
            }
        });
        Mysql8 {
            port,
            public_pem,
            log,
        }
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }
}

fn read_packet(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h)?;
    let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
    let mut p = vec![0u8; len];
    s.read_exact(&mut p)?;
    Ok((h[3], p))
}

fn write_packet(s: &mut TcpStream, seq: u8, payload: &[u8]) -> std::io::Result<()> {
    let len = payload.len();
    let mut out = vec![len as u8, (len >> 8) as u8, (len >> 16) as u8, seq];
    out.extend_from_slice(payload);
    s.write_all(&out)
}

fn lenenc_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(s.len() as u8);
    out.extend_from_slice(s);
}

fn ok_packet(header: u8) -> Vec<u8> {
    vec![header, 0, 0, 2, 0, 0, 0]
}

fn err_packet(code: u16, msg: &str) -> Vec<u8> {
    let mut p = vec![0xff, code as u8, (code >> 8) as u8, b'#'];
    p.extend_from_slice(b"28000");
    p.extend_from_slice(msg.as_bytes());
    p
}

fn fast_scramble(password: &[u8]) -> Vec<u8> {
    let p1 = Sha256::digest(password);
    let p2 = Sha256::digest(p1);
    let mut h = Sha256::new();
    h.update(p2);
    h.update(SCRAMBLE);
    let mix = h.finalize();
    p1.iter().zip(mix.iter()).map(|(a, b)| a ^ b).collect()
}

fn serve(
    mut s: TcpStream,
    id: u32,
    key: &OaepPrivateDecryptingKey,
    password: &str,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let note = |what: String| log.lock().expect("log").push(what);
    // CLIENT_LONG_PASSWORD | CONNECT_WITH_DB | PROTOCOL_41 | TRANSACTIONS |
    // SECURE_CONNECTION | MULTI_STATEMENTS | MULTI_RESULTS | PS_MULTI_RESULTS | PLUGIN_AUTH |
    // PLUGIN_AUTH_LENENC_CLIENT_DATA | DEPRECATE_EOF; no SSL.
    let caps: u32 = 0x1
        | 0x8
        | 0x200
        | 0x2000
        | 0x8000
        | 0x10000
        | 0x20000
        | 0x40000
        | 0x80000
        | 0x200000
        | 0x1000000;
    let mut hello = vec![10u8];
    hello.extend_from_slice(b"8.0.40-gatehouse-test\0");
    hello.extend_from_slice(&id.to_le_bytes());
    hello.extend_from_slice(&SCRAMBLE[..8]);
    hello.push(0);
    hello.extend_from_slice(&(caps as u16).to_le_bytes());
    hello.push(0xff);
    hello.extend_from_slice(&2u16.to_le_bytes());
    hello.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    hello.push(21);
    hello.extend_from_slice(&[0u8; 10]);
    hello.extend_from_slice(&SCRAMBLE[8..]);
    hello.push(0);
    hello.extend_from_slice(b"caching_sha2_password\0");
    write_packet(&mut s, 0, &hello)?;
    let (_, login) = read_packet(&mut s)?;
    let client_caps = u32::from_le_bytes([login[0], login[1], login[2], login[3]]);
    // Without CLIENT_DEPRECATE_EOF, column definitions and rows end with EOF packets.
    let deprecate_eof = client_caps & 0x1000000 != 0;
    let eof = [0xfeu8, 0, 0, 2, 0];
    // caps(4) max_packet(4) charset(1) filler(23), user NUL, lenenc auth response.
    let rest = &login[32..];
    let nul = rest.iter().position(|b| *b == 0).expect("user");
    let user = String::from_utf8_lossy(&rest[..nul]).into_owned();
    let auth_len = usize::from(rest[nul + 1]);
    let auth = &rest[nul + 2..nul + 2 + auth_len];
    let expected = fast_scramble(password.as_bytes());
    if user == "fast_user" {
        if auth != expected.as_slice() {
            note("bad password".into());
            return write_packet(&mut s, 2, &err_packet(1045, "Access denied"));
        }
        write_packet(&mut s, 2, &[0x01, 0x03])?;
        write_packet(&mut s, 3, &ok_packet(0))?;
        note("fast ok".into());
    } else {
        // As MySQL 8 after a restart: the cache is empty, so full authentication.
        write_packet(&mut s, 2, &[0x01, 0x04])?;
        let (_, answer) = read_packet(&mut s)?;
        if answer == [0x02] {
            note("key requested".into());
            return write_packet(&mut s, 4, &err_packet(1045, "no key for you"));
        }
        let mut buf = vec![0u8; key.min_output_size()];
        let plain: Vec<u8> = match key.decrypt(&OAEP_SHA1_MGF1SHA1, &answer, &mut buf, None) {
            Ok(p) => p
                .iter()
                .zip(SCRAMBLE.iter().cycle())
                .map(|(b, s)| b ^ s)
                .collect(),
            Err(_) => Vec::new(),
        };
        let mut wanted = password.as_bytes().to_vec();
        wanted.push(0);
        if plain != wanted {
            note(
                if answer
                    .windows(password.len())
                    .any(|w| w == password.as_bytes())
                {
                    "password in the clear".into()
                } else {
                    "bad password".into()
                },
            );
            return write_packet(&mut s, 4, &err_packet(1045, "Access denied"));
        }
        write_packet(&mut s, 4, &ok_packet(0))?;
        note("full rsa ok".into());
    }
    loop {
        let (_, cmd) = read_packet(&mut s)?;
        match cmd.first() {
            Some(0x01) | None => return Ok(()),
            Some(0x03) => {
                let q = String::from_utf8_lossy(&cmd[1..]).into_owned();
                note(format!("query {q}"));
                let value: &[u8] = if q.contains("sql_mode") {
                    b"STRICT_TRANS_TABLES"
                } else {
                    b"hello from mysql 8"
                };
                write_packet(&mut s, 1, &[1])?;
                let mut col = Vec::new();
                for part in [&b"def"[..], b"", b"", b"", b"v", b""] {
                    lenenc_str(&mut col, part);
                }
                col.push(0x0c);
                col.extend_from_slice(&33u16.to_le_bytes());
                col.extend_from_slice(&255u32.to_le_bytes());
                col.push(0xfd);
                col.extend_from_slice(&[0, 0, 0, 0, 0]);
                write_packet(&mut s, 2, &col)?;
                let mut seq = 3;
                if !deprecate_eof {
                    write_packet(&mut s, seq, &eof)?;
                    seq += 1;
                }
                let mut row = Vec::new();
                lenenc_str(&mut row, value);
                write_packet(&mut s, seq, &row)?;
                if deprecate_eof {
                    write_packet(&mut s, seq + 1, &ok_packet(0xfe))?;
                } else {
                    write_packet(&mut s, seq + 1, &eof)?;
                }
            }
            Some(_) => write_packet(&mut s, 1, &ok_packet(0))?,
        }
    }
}
