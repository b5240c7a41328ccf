//! Arbitrary bytes as a MySQL byte stream: framed by `PacketReader` (the first byte picks the
//! limit and the read size), then every parser (connection phase, commands, column
//! definitions, text rows) on each payload.
//!
//! Checks, besides "no panic": packets come whole and in order from the front of the stream
//! (their wire bytes are exactly what was consumed), a payload never exceeds the limit,
//! chunked and whole delivery frame identically, and what the builders make parses back.
#![no_main]

use bytes::BytesMut;
use gatehouse_mysql::messages::command::{binary_row, encode_text_row, text_row};
use gatehouse_mysql::messages::{
    AuthMoreData, AuthSwitchRequest, ClientHello, ColumnDefinition, CommandKind, ErrPacket,
    HandshakeV10, OkPacket,
};
use gatehouse_mysql::{PacketReader, write_packets};
use gatehouse_core::masking::detector::find_pans;
use gatehouse_core::masking::{MaskRule, MaskSet, MaskStyle, SessionMasks, TokenKey};
use gatehouse_mysql::mask::RowMask;
use libfuzzer_sys::fuzz_target;

/// A session under a `last4` rule on one column, with the card-number detector.
fn masks() -> &'static SessionMasks {
    static M: std::sync::OnceLock<SessionMasks> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        let rules = [MaskRule {
            columns: vec!["shop.payments.card_number".into()],
            detectors: vec!["pan".into()],
            style: MaskStyle::Last4,
            ..MaskRule::default()
        }];
        match MaskSet::compile(&rules, TokenKey::from_bytes([5; 32])) {
            Ok(set) => set.for_session("shop", &[]),
            Err(e) => panic!("{e}"),
        }
    })
}

fn frame_all(reader: &PacketReader, data: &[u8], step: usize) -> (Vec<Vec<u8>>, bool) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut failed = false;
    let mut fed = 0;
    while fed < data.len() && !failed {
        let end = (fed + step).min(data.len());
        buf.extend_from_slice(data.get(fed..end).unwrap_or_default());
        fed = end;
        loop {
            let before = buf.len();
            match reader.next_packet(&mut buf) {
                Ok(Some(p)) => {
                    assert_eq!(before - buf.len(), p.wire.len(), "consumed != wire bytes");
                    out.push(p.payload.to_vec());
                }
                Ok(None) => {
                    assert_eq!(before, buf.len(), "consumed without a packet");
                    break;
                }
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
    }
    (out, failed)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    let limit = [64usize, 4096, 1 << 20][usize::from(mode % 3)];
    let step = [1usize, 7, 4096][usize::from((mode / 3) % 3)];
    let reader = PacketReader::new(limit);
    let (whole, whole_failed) = frame_all(&reader, stream, usize::MAX);
    let (chunked, chunked_failed) = frame_all(&reader, stream, step);
    assert_eq!(whole, chunked, "chunked delivery framed differently");
    assert_eq!(whole_failed, chunked_failed);
    for payload in &whole {
        assert!(payload.len() <= limit);
        let _ = HandshakeV10::parse(payload);
        let _ = OkPacket::parse(payload);
        let _ = ErrPacket::parse(payload);
        let _ = CommandKind::of(payload);
        let _ = AuthMoreData::parse(payload);
        if let Ok(switch) = AuthSwitchRequest::parse(payload) {
            let mut out = Vec::new();
            switch.encode(&mut out);
            let _ = AuthSwitchRequest::parse(&out);
        }
        if let Ok(c) = ColumnDefinition::parse(payload) {
            let mut out = Vec::new();
            c.encode(&mut out);
            assert_eq!(ColumnDefinition::parse(&out).ok(), Some(c), "column definition round trip");
        }
        // As a row of a result whose columns are a masked card column, a note, a number.
        let defs: Vec<ColumnDefinition> = [("card_number", 0xfd), ("note", 0xfc), ("n", 0x08)]
            .into_iter()
            .map(|(name, t)| ColumnDefinition {
                schema: b"shop".to_vec(),
                org_table: b"payments".to_vec(),
                org_name: name.as_bytes().to_vec(),
                name: name.as_bytes().to_vec(),
                column_type: t,
                ..ColumnDefinition::default()
            })
            .collect();
        let mut plan = RowMask::plan(&defs, masks(), None);
        if let Ok(rewritten) = plan.text_row(payload, masks()) {
            let out = rewritten.unwrap_or_else(|| payload.clone());
            let values = text_row(&out, 3);
            assert!(values.is_ok(), "a masked row no longer parses");
            for v in values.unwrap_or_default().into_iter().flatten() {
                let mut n = 0;
                find_pans(v, |_| n += 1);
                assert_eq!(n, 0, "a card number survived row masking");
            }
        }
        // The same columns in the binary protocol (a prepared statement's rows).
        if let Ok(rewritten) = plan.binary_row(payload, masks()) {
            let out = rewritten.unwrap_or_else(|| payload.clone());
            let values = binary_row(&out, &[0xfd, 0xfc, 0x08]);
            assert!(values.is_ok(), "a masked binary row no longer parses");
            for v in values.unwrap_or_default().into_iter().take(2).flatten() {
                let mut n = 0;
                find_pans(v, |_| n += 1);
                assert_eq!(n, 0, "a card number survived binary row masking");
            }
        }
        for columns in 0..4 {
            if let Ok(row) = text_row(payload, columns) {
                let mut out = Vec::new();
                encode_text_row(&row, &mut out);
                assert_eq!(text_row(&out, columns).ok(), Some(row), "row round trip");
            }
        }
        if let Ok(hello) = ClientHello::parse(payload) {
            // What parsed builds back into something that parses the same.
            if let ClientHello::Login(login) = &hello {
                let mut out = Vec::new();
                login.encode(&mut out);
                let again = ClientHello::parse(&out);
                assert!(again.is_ok(), "a re-encoded login no longer parses");
            }
        }
        // Any payload can be framed and read back.
        let mut framed = BytesMut::new();
        write_packets(payload, mode, &mut framed);
        let back = PacketReader::new(usize::MAX).next_packet(&mut framed);
        assert_eq!(back.ok().flatten().map(|p| p.payload.to_vec()), Some(payload.clone()));
    }
});
