//! Arbitrary bytes as a client (or server) byte stream: framing and every message parser.
//!
//! The first input byte picks the reader configuration (side, large-message limit, how many
//! bytes arrive per "read"), the rest is the stream. Checks, besides "no panic":
//! - every frame is a whole message (`tag + len + body`, `len` = body + 4) within its limit;
//! - the frames are an exact, in-order prefix of the stream (nothing lost, nothing invented);
//! - `check_header` never asks for more than the limit allows (no attacker-sized reservation);
//! - feeding the stream in small pieces yields the same frames as feeding it whole.
#![no_main]

use bytes::BytesMut;
use gatehouse_pg::codec::{
    CodecError, Frame, FrameReader, LARGE_MESSAGE_LIMIT, SMALL_MESSAGE_LIMIT, Side, backend_limit,
    frontend_limit,
};
use gatehouse_pg::messages::{backend, frontend};
use libfuzzer_sys::fuzz_target;

fn limit_of(side: Side, large: usize, tag: u8) -> Option<usize> {
    match side {
        Side::Frontend => frontend_limit(tag, large.min(LARGE_MESSAGE_LIMIT)),
        Side::Backend => backend_limit(tag),
    }
}

/// Runs every parser over the frame; none may panic, whatever the body.
fn exercise(frame: &Frame) {
    let _ = frontend::query_text(frame);
    let _ = frontend::parse(frame);
    if let Ok(b) = frontend::bind(frame) {
        // Parameters are views into the body: they cannot be larger than it.
        let total: usize = b
            .params
            .iter()
            .map(|p| match p {
                frontend::Param::Null => 0,
                frontend::Param::Text(v) | frontend::Param::Binary(v) => v.len(),
            })
            .sum();
        assert!(total <= frame.body().len());
        assert!(b.result_formats.len() * 2 <= frame.body().len());
    }
    let _ = frontend::execute_portal(frame);
    if let Ok((kind, _)) = frontend::close_target(frame) {
        assert!(kind == b'S' || kind == b'P');
    }
    let _ = frontend::password(frame);
    let _ = backend::error_fields(frame);
    let _ = backend::command_rows(frame);
    let _ = backend::command_tag(frame);
    let _ = backend::ready_status(frame);
    let _ = backend::auth_request(frame);
    let _ = backend::parameter(frame);
    let _ = backend::backend_key(frame);
    if let Ok(names) = backend::row_description_names(frame) {
        assert!(names.len() * 19 <= frame.body().len());
    }
    if let Ok(values) = backend::data_row_values(frame) {
        assert!(values.len() * 4 <= frame.body().len());
    }
}

/// Splits `stream` into frames, `chunk` bytes arriving at a time. Returns the frames and
/// the error that stopped the split, if any.
fn split(
    reader: &FrameReader,
    side: Side,
    large: usize,
    stream: &[u8],
    chunk: usize,
) -> (Vec<Frame>, Option<CodecError>) {
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut frames = Vec::new();
    loop {
        // `check_header` must agree with `next_frame` and bound what it asks for.
        let need = reader.check_header(&buf);
        match reader.next_frame(&mut buf) {
            Ok(Some(frame)) => {
                assert_eq!(need, Ok(0));
                let raw = frame.raw();
                assert!(raw.len() >= 5);
                let len = i32::from_be_bytes([raw[1], raw[2], raw[3], raw[4]]);
                assert_eq!(usize::try_from(len).unwrap() + 1, raw.len());
                assert_eq!(frame.tag(), raw[0]);
                assert_eq!(frame.body().len(), raw.len() - 5);
                let limit = limit_of(side, large, frame.tag()).expect("known tag");
                assert!(frame.body().len() <= limit);
                exercise(&frame);
                frames.push(frame);
            }
            Ok(None) => {
                let need = need.expect("check_header agrees with next_frame");
                assert!(need > 0);
                if buf.len() >= 5 {
                    let limit = limit_of(side, large, buf[0]).expect("known tag");
                    assert!(need + buf.len() <= limit + 5);
                } else {
                    assert_eq!(need, 5 - buf.len());
                }
                if fed == stream.len() {
                    return (frames, None);
                }
                let end = (fed + chunk).min(stream.len());
                buf.extend_from_slice(&stream[fed..end]);
                fed = end;
            }
            Err(e) => {
                assert_eq!(need, Err(e.clone()));
                return (frames, Some(e));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cfg, stream)) = data.split_first() else {
        return;
    };
    let side = if cfg & 1 == 0 {
        Side::Frontend
    } else {
        Side::Backend
    };
    let large = match (cfg >> 1) & 3 {
        0 => 0,
        1 => 64,
        2 => SMALL_MESSAGE_LIMIT,
        _ => usize::MAX,
    };
    let reader = FrameReader::new(side, large);
    let chunk = usize::from(cfg >> 3) + 1;

    let (frames, err) = split(&reader, side, large, stream, chunk);
    let consumed: Vec<u8> = frames
        .iter()
        .flat_map(|f| f.raw().iter().copied())
        .collect();
    assert!(stream.starts_with(&consumed));

    // The same stream delivered in one piece splits identically.
    let (whole, whole_err) = split(&reader, side, large, stream, stream.len().max(1));
    assert_eq!(frames, whole);
    assert_eq!(err, whole_err);
});
