//! Property tests for the wire-protocol codec and message parsers: whatever bytes a peer
//! sends, framing and parsing return a value or an error, never panic; valid streams split
//! into exactly the messages they were built from; and declared lengths never make the
//! reader ask for more memory than the per-type limit allows.

// Test code: panicking on the unexpected is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use bytes::{BufMut, Bytes, BytesMut};
use gatehouse_pg::codec::{
    CodecError, Frame, FrameReader, LARGE_MESSAGE_LIMIT, SMALL_MESSAGE_LIMIT, Side, backend_limit,
    frontend_limit,
};
use gatehouse_pg::messages::startup::{
    CANCEL_REQUEST, GSSENC_REQUEST, MAX_STARTUP_LEN, PROTOCOL_3_0, SSL_REQUEST, StartupPacket,
    parse_startup, startup_len,
};
use gatehouse_pg::messages::{backend, frontend};
use proptest::prelude::*;

const FRONTEND_TAGS: &[u8] = b"QPBdFpEDCcfSHX";
const BACKEND_TAGS: &[u8] = b"DdTENAVWGHtRSvC123InscKZ";

fn limit_of(side: Side, large: usize, tag: u8) -> Option<usize> {
    match side {
        Side::Frontend => frontend_limit(tag, large.min(LARGE_MESSAGE_LIMIT)),
        Side::Backend => backend_limit(tag),
    }
}

/// `tag + len + body` as on the wire.
fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(body.len() + 5);
    b.push(tag);
    b.extend_from_slice(&(i32::try_from(body.len() + 4).unwrap()).to_be_bytes());
    b.extend_from_slice(body);
    b
}

/// A frame with `body`, built the only public way: through a `FrameReader` (of the side that
/// knows the tag).
fn frame(tag: u8, body: &[u8]) -> Frame {
    let side = if frontend_limit(tag, LARGE_MESSAGE_LIMIT).is_some() {
        Side::Frontend
    } else {
        Side::Backend
    };
    let reader = FrameReader::new(side, LARGE_MESSAGE_LIMIT);
    let mut buf = BytesMut::from(&message(tag, body)[..]);
    let f = reader.next_frame(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty());
    f
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Frontend), Just(Side::Backend)]
}

fn large_limit() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        0usize..512,
        Just(SMALL_MESSAGE_LIMIT),
        Just(LARGE_MESSAGE_LIMIT),
        Just(usize::MAX),
    ]
}

/// Bytes that often look like message headers: a known or unknown tag, then a length that is
/// small, negative, at a limit or huge.
fn headerish() -> impl Strategy<Value = Vec<u8>> {
    let tag = prop_oneof![
        proptest::sample::select(FRONTEND_TAGS.to_vec()),
        proptest::sample::select(BACKEND_TAGS.to_vec()),
        any::<u8>(),
    ];
    let len = prop_oneof![
        -8i32..64,
        Just(i32::MIN),
        Just(i32::MAX),
        Just(0x4000_0000),
        Just(0x3fff_ffff + 4),
        Just(0x3fff_ffff + 5),
        Just(64 * 1024 + 4),
        Just(64 * 1024 + 5),
        any::<i32>(),
    ];
    (tag, len, proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(t, l, rest)| {
        let mut v = vec![t];
        v.extend_from_slice(&l.to_be_bytes());
        v.extend_from_slice(&rest);
        v
    })
}

/// Arbitrary byte streams, mixing pure noise and header-shaped runs.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        proptest::collection::vec(headerish(), 0..8).prop_map(|parts| parts.concat()),
    ]
}

/// Splits `input` fed `chunk` bytes at a time; checks the reader's invariants on the way.
fn split(
    side: Side,
    large: usize,
    input: &[u8],
    chunk: usize,
) -> Result<(Vec<Frame>, Option<CodecError>, BytesMut), TestCaseError> {
    let reader = FrameReader::new(side, large);
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut frames = Vec::new();
    loop {
        let need = reader.check_header(&buf);
        match reader.next_frame(&mut buf) {
            Ok(Some(f)) => {
                prop_assert_eq!(&need, &Ok(0));
                let raw = f.raw().clone();
                prop_assert!(raw.len() >= 5);
                let len = i32::from_be_bytes([raw[1], raw[2], raw[3], raw[4]]);
                prop_assert_eq!(usize::try_from(len).unwrap() + 1, raw.len());
                prop_assert_eq!(f.tag(), raw[0]);
                prop_assert_eq!(&f.body()[..], &raw[5..]);
                prop_assert_eq!(f.len(), raw.len());
                prop_assert!(!f.is_empty());
                let limit = limit_of(side, large, f.tag());
                prop_assert!(limit.is_some(), "frame with unknown tag {:?}", f.tag());
                prop_assert!(f.body().len() <= limit.unwrap_or(0));
                frames.push(f);
            }
            Ok(None) => {
                let need = need.map_err(|e| TestCaseError::fail(format!("{e}")))?;
                prop_assert!(need > 0);
                if buf.len() >= 5 {
                    // What the reader asks for is bounded by the type's limit, never by the
                    // peer's claim.
                    let limit = limit_of(side, large, buf[0]).unwrap_or(0);
                    prop_assert!(need + buf.len() <= limit + 5);
                } else {
                    prop_assert_eq!(need, 5 - buf.len());
                }
                if fed >= input.len() {
                    return Ok((frames, None, buf));
                }
                let end = (fed + chunk).min(input.len());
                buf.extend_from_slice(&input[fed..end]);
                fed = end;
            }
            Err(e) => {
                prop_assert_eq!(&need, &Err(e.clone()));
                // An error is sticky: the header stays where it was.
                prop_assert_eq!(reader.next_frame(&mut buf), Err(e.clone()));
                return Ok((frames, Some(e), buf));
            }
        }
    }
}

/// A valid message body for `tag` on `side` (empty for Sync/Flush/Terminate).
fn valid_message(side: Side) -> impl Strategy<Value = (u8, Vec<u8>)> {
    let tags = match side {
        Side::Frontend => FRONTEND_TAGS,
        Side::Backend => BACKEND_TAGS,
    };
    (
        proptest::sample::select(tags.to_vec()),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(move |(tag, body)| {
            let limit = limit_of(side, LARGE_MESSAGE_LIMIT, tag).unwrap_or(0);
            let body = if body.len() > limit { Vec::new() } else { body };
            (tag, body)
        })
}

/// A side, whole messages (tag, body) and a truncated message after them.
type ValidStream = (Side, Vec<(u8, Vec<u8>)>, Vec<u8>);

fn valid_stream() -> impl Strategy<Value = ValidStream> {
    side()
        .prop_flat_map(|s| {
            (
                Just(s),
                proptest::collection::vec(valid_message(s), 0..16),
                valid_message(s),
            )
        })
        .prop_flat_map(|(s, msgs, (tag, body))| {
            // A truncated extra message at the end: the reader must wait for the rest.
            let partial = message(tag, &body);
            let cut = 0..partial.len();
            (Just(s), Just(msgs), cut, Just(partial))
        })
        .prop_map(|(s, msgs, cut, partial)| (s, msgs, partial[..cut].to_vec()))
}

fn cstr(b: &mut Vec<u8>, s: &[u8]) {
    b.extend_from_slice(s);
    b.push(0);
}

/// NUL-free byte strings (what a C string may hold).
fn name() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(1u8..=255, 0..24)
}

#[derive(Debug, Clone)]
enum ParamSpec {
    Null,
    Value(Vec<u8>),
}

fn bind_spec() -> impl Strategy<Value = (Vec<u8>, Vec<u8>, u8, Vec<ParamSpec>, Vec<i16>)> {
    (
        name(),
        name(),
        0u8..3,
        proptest::collection::vec(
            prop_oneof![
                Just(ParamSpec::Null),
                proptest::collection::vec(any::<u8>(), 0..40).prop_map(ParamSpec::Value),
            ],
            0..12,
        ),
        proptest::collection::vec(0i16..2, 0..4),
    )
}

fn bind_body(
    portal: &[u8],
    stmt: &[u8],
    fmt_mode: u8,
    params: &[ParamSpec],
    results: &[i16],
) -> (Vec<u8>, Vec<frontend::Param>) {
    let mut b = Vec::new();
    cstr(&mut b, portal);
    cstr(&mut b, stmt);
    // 0: no format codes (all text); 1: one code (binary) for all; 2: one per parameter.
    let formats: Vec<i16> = match fmt_mode {
        0 => Vec::new(),
        1 => vec![1],
        _ => (0..params.len()).map(|i| i16::from(i % 2 == 1)).collect(),
    };
    let n_formats = i16::try_from(formats.len()).unwrap();
    b.extend_from_slice(&n_formats.to_be_bytes());
    for f in &formats {
        b.extend_from_slice(&f.to_be_bytes());
    }
    b.extend_from_slice(&i16::try_from(params.len()).unwrap().to_be_bytes());
    let mut expected = Vec::new();
    for (i, p) in params.iter().enumerate() {
        match p {
            ParamSpec::Null => {
                b.extend_from_slice(&(-1i32).to_be_bytes());
                expected.push(frontend::Param::Null);
            }
            ParamSpec::Value(v) => {
                b.extend_from_slice(&i32::try_from(v.len()).unwrap().to_be_bytes());
                b.extend_from_slice(v);
                let fmt = match formats.len() {
                    0 => 0,
                    1 => formats[0],
                    _ => formats[i],
                };
                let v = Bytes::copy_from_slice(v);
                expected.push(if fmt == 1 {
                    frontend::Param::Binary(v)
                } else {
                    frontend::Param::Text(v)
                });
            }
        }
    }
    b.extend_from_slice(&i16::try_from(results.len()).unwrap().to_be_bytes());
    for r in results {
        b.extend_from_slice(&r.to_be_bytes());
    }
    (b, expected)
}

/// Runs every message parser over one body; none may panic.
fn parse_all(body: &[u8]) {
    for tag in [b'd', b'p'] {
        if tag == b'p' && body.len() > SMALL_MESSAGE_LIMIT {
            continue;
        }
        let f = frame(tag, body);
        let _ = frontend::query_text(&f);
        let _ = frontend::parse(&f);
        let _ = frontend::bind(&f);
        let _ = frontend::execute_portal(&f);
        let _ = frontend::close_target(&f);
        let _ = frontend::password(&f);
        let _ = backend::error_fields(&f);
        let _ = backend::data_row_values(&f);
        let _ = backend::row_description_names(&f);
        let _ = backend::command_rows(&f);
        let _ = backend::command_tag(&f);
        let _ = backend::ready_status(&f);
        let _ = backend::auth_request(&f);
        let _ = backend::parameter(&f);
        let _ = backend::backend_key(&f);
    }
    let _ = parse_startup(Bytes::copy_from_slice(body));
}

/// Bodies that are arbitrary but often start like the real thing: counts and lengths that
/// lie (huge, negative, off by one) followed by noise.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let count = prop_oneof![
        any::<i16>(),
        Just(i16::MAX),
        Just(-1i16),
        Just(0i16),
        Just(1i16)
    ];
    let len = prop_oneof![any::<i32>(), Just(-1i32), Just(i32::MAX), 0i32..16];
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        (
            proptest::collection::vec(any::<u8>(), 0..8),
            count.clone(),
            proptest::collection::vec(len, 0..4),
            count,
            proptest::collection::vec(any::<u8>(), 0..32),
        )
            .prop_map(|(pre, c1, lens, c2, tail)| {
                let mut b = pre;
                b.extend_from_slice(&c1.to_be_bytes());
                for l in lens {
                    b.extend_from_slice(&l.to_be_bytes());
                }
                b.extend_from_slice(&c2.to_be_bytes());
                b.extend_from_slice(&tail);
                b
            }),
        (
            prop_oneof![
                Just(PROTOCOL_3_0),
                Just(196_610i32),
                Just(SSL_REQUEST),
                Just(GSSENC_REQUEST),
                Just(CANCEL_REQUEST),
                any::<i32>()
            ],
            proptest::collection::vec(prop_oneof![name(), Just(Vec::new())], 0..6),
        )
            .prop_map(|(code, parts)| {
                let mut b = code.to_be_bytes().to_vec();
                for p in parts {
                    cstr(&mut b, &p);
                }
                b
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary bytes: no panic, and every frame is a whole, in-limit message taken in order
    /// from the front of the stream.
    #[test]
    fn framing_never_panics(side in side(), large in large_limit(), input in stream(), chunk in 1usize..40) {
        let (frames, err, rest) = split(side, large, &input, chunk)?;
        let consumed: Vec<u8> = frames.iter().flat_map(|f| f.raw().iter().copied()).collect();
        prop_assert!(input.starts_with(&consumed));
        if err.is_some() {
            // Nothing after the bad header was consumed.
            prop_assert!(input[consumed.len()..].starts_with(&rest));
        }
        // Byte-at-a-time and all-at-once deliveries agree.
        let (whole, whole_err, _) = split(side, large, &input, input.len().max(1))?;
        prop_assert_eq!(&frames, &whole);
        prop_assert_eq!(&err, &whole_err);
    }

    /// `check_header` on arbitrary bytes, and on every prefix of them.
    #[test]
    fn check_header_never_panics(side in side(), large in large_limit(), input in stream()) {
        let reader = FrameReader::new(side, large);
        for i in 0..=input.len().min(16) {
            let _ = reader.check_header(&input[..i]);
        }
        let _ = reader.check_header(&input);
    }

    /// Valid messages, concatenated, come back exactly: same tags, same bodies, and the raw
    /// bytes of the frames concatenate to the input; a trailing partial message stays in the
    /// buffer.
    #[test]
    fn valid_streams_round_trip((side, msgs, partial) in valid_stream(), chunk in 1usize..64) {
        let mut input = Vec::new();
        for (tag, body) in &msgs {
            input.extend_from_slice(&message(*tag, body));
        }
        let complete = input.len();
        input.extend_from_slice(&partial);
        let (frames, err, rest) = split(side, LARGE_MESSAGE_LIMIT, &input, chunk)?;
        prop_assert_eq!(err, None);
        prop_assert_eq!(frames.len(), msgs.len());
        for (f, (tag, body)) in frames.iter().zip(&msgs) {
            prop_assert_eq!(f.tag(), *tag);
            prop_assert_eq!(&f.body()[..], &body[..]);
        }
        let consumed: Vec<u8> = frames.iter().flat_map(|f| f.raw().iter().copied()).collect();
        prop_assert_eq!(&consumed[..], &input[..complete]);
        prop_assert_eq!(&rest[..], &partial[..]);
    }

    /// Every parser on arbitrary bodies: a value or an error, never a panic.
    #[test]
    fn parsers_never_panic(body in body()) {
        parse_all(&body);
    }

    /// Well-formed Bind messages decode to the values sent; any truncation or single-byte
    /// corruption of them does not panic.
    #[test]
    fn bind_round_trips((portal, stmt, fmt_mode, params, results) in bind_spec(), cut in any::<prop::sample::Index>(), flip in any::<(prop::sample::Index, u8)>()) {
        let (body, expected) = bind_body(&portal, &stmt, fmt_mode, &params, &results);
        let b = frontend::bind(&frame(b'B', &body));
        prop_assert!(b.is_ok(), "{:?}", b.err());
        let b = b.unwrap();
        prop_assert_eq!(&b.portal[..], &portal[..]);
        prop_assert_eq!(&b.statement[..], &stmt[..]);
        prop_assert_eq!(b.params, expected);
        prop_assert_eq!(b.result_formats, results);

        let truncated = &body[..cut.index(body.len() + 1)];
        if truncated.len() < body.len() {
            let _ = frontend::bind(&frame(b'B', truncated));
        }
        let mut corrupt = body.clone();
        let i = flip.0.index(corrupt.len());
        corrupt[i] ^= flip.1 | 1;
        parse_all(&corrupt);
    }

    /// Parse, Execute, Close and Query built as a client would build them decode back.
    #[test]
    fn extended_messages_round_trip(stmt in name(), sql in name(), types in proptest::collection::vec(any::<u32>(), 0..8), max_rows in any::<i32>(), kind in prop_oneof![Just(b'S'), Just(b'P'), any::<u8>()]) {
        let mut p = Vec::new();
        cstr(&mut p, &stmt);
        cstr(&mut p, &sql);
        p.extend_from_slice(&i16::try_from(types.len()).unwrap().to_be_bytes());
        for t in &types {
            p.extend_from_slice(&t.to_be_bytes());
        }
        let parsed = frontend::parse(&frame(b'P', &p)).unwrap();
        prop_assert_eq!(&parsed.name[..], &stmt[..]);
        prop_assert_eq!(&parsed.query[..], &sql[..]);
        // One type oid too many or too few is refused.
        let mut longer = p.clone();
        longer.extend_from_slice(&[0, 0, 0, 23]);
        prop_assert!(frontend::parse(&frame(b'P', &longer)).is_err());

        let mut e = Vec::new();
        cstr(&mut e, &stmt);
        e.extend_from_slice(&max_rows.to_be_bytes());
        prop_assert_eq!(&frontend::execute_portal(&frame(b'E', &e)).unwrap()[..], &stmt[..]);

        let portal_text = String::from_utf8_lossy(&stmt).replace('\0', "");
        let built = frontend::build_execute(&portal_text);
        let reader = FrameReader::new(Side::Frontend, LARGE_MESSAGE_LIMIT);
        let mut buf = BytesMut::from(&built[..]);
        let ef = reader.next_frame(&mut buf).unwrap().unwrap();
        prop_assert!(buf.is_empty());
        prop_assert_eq!(&frontend::execute_portal(&ef).unwrap()[..], portal_text.as_bytes());

        let mut c = vec![kind];
        cstr(&mut c, &stmt);
        let closed = frontend::close_target(&frame(b'C', &c));
        if kind == b'S' || kind == b'P' {
            let (k, n) = closed.unwrap();
            prop_assert_eq!(k, kind);
            prop_assert_eq!(&n[..], &stmt[..]);
        } else {
            prop_assert!(closed.is_err());
        }

        let sql_text = String::from_utf8_lossy(&sql).replace('\0', "");
        let q = frontend::build_query(&sql_text);
        let reader = FrameReader::new(Side::Frontend, LARGE_MESSAGE_LIMIT);
        let mut buf = BytesMut::from(&q[..]);
        let qf = reader.next_frame(&mut buf).unwrap().unwrap();
        prop_assert!(buf.is_empty());
        prop_assert_eq!(&frontend::query_text(&qf).unwrap()[..], sql_text.as_bytes());
    }

    /// DataRow and RowDescription decode what a server sends.
    #[test]
    fn backend_rows_round_trip(values in proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)), 0..20), names in proptest::collection::vec(name(), 0..10)) {
        let mut d = Vec::new();
        d.extend_from_slice(&i16::try_from(values.len()).unwrap().to_be_bytes());
        for v in &values {
            match v {
                None => d.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    d.extend_from_slice(&i32::try_from(v.len()).unwrap().to_be_bytes());
                    d.extend_from_slice(v);
                }
            }
        }
        let got = backend::data_row_values(&frame(b'D', &d)).unwrap();
        let got: Vec<Option<Vec<u8>>> = got.into_iter().map(|v| v.map(|b| b.to_vec())).collect();
        prop_assert_eq!(got, values);

        let mut t = Vec::new();
        t.extend_from_slice(&i16::try_from(names.len()).unwrap().to_be_bytes());
        for n in &names {
            cstr(&mut t, n);
            t.extend_from_slice(&[0u8; 18]);
        }
        let got = backend::row_description_names(&frame(b'T', &t)).unwrap();
        let want: Vec<String> = names.iter().map(|n| String::from_utf8_lossy(n).into_owned()).collect();
        prop_assert_eq!(got, want);
        // A RowDescription cut short is an error, not a panic.
        if !t.is_empty() {
            let _ = backend::row_description_names(&frame(b'T', &t[..t.len() - 1]));
        }
    }

    /// ErrorResponses the gateway writes go through the backend reader and parse back.
    #[test]
    fn error_responses_round_trip(state in "[0-9A-Z]{5}", msg in any::<String>(), hint in proptest::option::of(any::<String>()), fatal in any::<bool>()) {
        let sev = if fatal { backend::Severity::Fatal } else { backend::Severity::Error };
        let raw = backend::error_response(sev, &state, &msg, hint.as_deref());
        let reader = FrameReader::new(Side::Backend, LARGE_MESSAGE_LIMIT);
        let mut buf = BytesMut::from(&raw[..]);
        let f = reader.next_frame(&mut buf).unwrap().unwrap();
        prop_assert!(buf.is_empty());
        prop_assert_eq!(f.tag(), b'E');
        let fields = backend::error_fields(&f).unwrap();
        prop_assert_eq!(fields.sqlstate, state);
        prop_assert_eq!(fields.message, msg.replace('\0', ""));
        prop_assert_eq!(fields.severity, if fatal { "FATAL" } else { "ERROR" });
    }

    /// Startup packets: well-formed ones parse to what was sent; the length check accepts
    /// exactly 8..=10000.
    #[test]
    fn startup_round_trips(params in proptest::collection::vec(("[a-z_.]{1,12}", "[ -~]{0,20}"), 0..10), minor in 0u16..4, header in any::<[u8; 4]>()) {
        let mut b = ((3i32 << 16) | i32::from(minor)).to_be_bytes().to_vec();
        for (k, v) in &params {
            cstr(&mut b, k.as_bytes());
            cstr(&mut b, v.as_bytes());
        }
        b.push(0);
        match parse_startup(Bytes::from(b.clone())) {
            Ok(StartupPacket::Startup(m)) => {
                prop_assert_eq!((m.major, m.minor), (3, minor));
                prop_assert_eq!(m.params, params);
            }
            other => prop_assert!(false, "{:?}", other),
        }
        // Missing the final terminator, or trailing junk: refused.
        prop_assert!(parse_startup(Bytes::copy_from_slice(&b[..b.len() - 1])).is_err());
        let mut junk = b.clone();
        junk.push(b'x');
        prop_assert!(parse_startup(Bytes::from(junk)).is_err());

        let declared = i32::from_be_bytes(header);
        let ok = (8..=i32::try_from(MAX_STARTUP_LEN).unwrap()).contains(&declared);
        prop_assert_eq!(startup_len(header).is_ok(), ok);
    }
}

#[test]
fn huge_declared_lengths_are_refused_before_reading_the_body() {
    let reader = FrameReader::new(Side::Frontend, 64 * 1024 * 1024);
    let mut buf = BytesMut::new();
    buf.put_u8(b'Q');
    buf.put_i32(0x4000_0000);
    assert!(matches!(
        reader.next_frame(&mut buf),
        Err(CodecError::TooLarge { .. })
    ));
    for tag in FRONTEND_TAGS {
        let mut b = BytesMut::new();
        b.put_u8(*tag);
        b.put_i32(i32::MAX);
        assert!(reader.next_frame(&mut b).is_err(), "{}", *tag as char);
    }
    let backend_reader = FrameReader::new(Side::Backend, usize::MAX);
    for tag in BACKEND_TAGS {
        let mut b = BytesMut::new();
        b.put_u8(*tag);
        b.put_i32(i32::MAX);
        assert!(
            backend_reader.next_frame(&mut b).is_err(),
            "{}",
            *tag as char
        );
    }
    assert!(startup_len(0x4000_0000i32.to_be_bytes()).is_err());
    assert!(startup_len(10_001i32.to_be_bytes()).is_err());
    assert!(startup_len(10_000i32.to_be_bytes()).is_ok());
}
