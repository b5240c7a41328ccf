//! Arbitrary bytes as the first packet of a connection, the way the gateway reads it:
//! a 4-byte length (validated by `startup_len` before anything is allocated), the body
//! (`parse_startup`), then the password message that should follow.
#![no_main]

use bytes::{Bytes, BytesMut};
use gatehouse_pg::codec::{FrameReader, Side};
use gatehouse_pg::messages::frontend;
use gatehouse_pg::messages::startup::{MAX_STARTUP_LEN, StartupPacket, parse_startup, startup_len};
use libfuzzer_sys::fuzz_target;

fn check(packet: &StartupPacket) {
    match packet {
        StartupPacket::Startup(m) => {
            assert!(m.params.len() <= 65);
            for (k, v) in &m.params {
                assert!(!k.is_empty());
                assert!(!k.contains('\0') && !v.contains('\0'));
            }
            let _ = m.get("user");
            let _ = m.get("database");
        }
        StartupPacket::Cancel { secret, .. } => {
            assert!((4..=256).contains(&secret.len()));
        }
        StartupPacket::SslRequest | StartupPacket::GssEncRequest => {}
    }
}

fuzz_target!(|data: &[u8]| {
    // The whole input as a body, whatever its length.
    if let Ok(p) = parse_startup(Bytes::copy_from_slice(data)) {
        check(&p);
    }

    // The input as a connection: length, body, then a password message.
    let Some((header, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let Ok(len) = startup_len(*header) else {
        return;
    };
    assert!((8..=MAX_STARTUP_LEN).contains(&len));
    let Some((body, tail)) = rest.split_at_checked(len - 4) else {
        return;
    };
    match parse_startup(Bytes::copy_from_slice(body)) {
        Ok(p) => check(&p),
        Err(_) => return,
    }
    let reader = FrameReader::new(Side::Frontend, 64 * 1024);
    let mut buf = BytesMut::from(tail);
    if let Ok(Some(frame)) = reader.next_frame(&mut buf) {
        let _ = frontend::password(&frame);
    }
});
