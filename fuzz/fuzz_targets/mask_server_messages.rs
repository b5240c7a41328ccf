//! Arbitrary bytes as a server's ErrorResponse, NoticeResponse or NotificationResponse, through
//! the rewriters that mask card numbers in them before a client sees them.
//!
//! The first input byte picks the mask style; the rest is one message. Checks, besides "no
//! panic": a rewrite is a well-formed message (its length field is its size minus the tag), it
//! keeps the tag, and no text field a client shows (an error or notice field, a notification's
//! channel or payload) holds a Luhn-valid card number after the error/notice and notification
//! maskers.
#![no_main]

use gatehouse_core::masking::detector::find_pans;
use gatehouse_pg::mask_fuzzing::rewrite_text_messages;
use libfuzzer_sys::fuzz_target;

fn card_numbers(bytes: &[u8]) -> usize {
    let mut n = 0;
    find_pans(bytes, |_| n += 1);
    n
}

/// The text fields a client shows of a message (whole message: tag, length, body): each
/// ErrorResponse/NoticeResponse field value, a NotificationResponse's channel and payload.
/// Each is displayed on its own, so each is checked on its own (a binary process id next to a
/// channel name is not one number).
fn text_fields(msg: &[u8]) -> Vec<&[u8]> {
    let body = msg.get(5..).unwrap_or_default();
    let mut out = Vec::new();
    match msg.first() {
        Some(b'E' | b'N') => {
            let mut rest = body;
            while let Some((&code, tail)) = rest.split_first() {
                if code == 0 {
                    break;
                }
                let end = tail.iter().position(|b| *b == 0).unwrap_or(tail.len());
                out.push(tail.get(..end).unwrap_or_default());
                rest = tail.get(end + 1..).unwrap_or_default();
            }
        }
        Some(b'A') => {
            let mut rest = body.get(4..).unwrap_or_default();
            for _ in 0..2 {
                let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
                out.push(rest.get(..end).unwrap_or_default());
                rest = rest.get(end + 1..).unwrap_or_default();
            }
        }
        _ => {}
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&style, msg)) = data.split_first() else {
        return;
    };
    let [masked, withheld, notified] = rewrite_text_messages(msg, style);
    for out in [&masked, &withheld, &notified].into_iter().flatten().flatten() {
        assert_eq!(out.first(), msg.first(), "the rewrite changed the message type");
        let len = out.get(1..5).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        assert_eq!(len, i32::try_from(out.len() - 1).ok(), "wrong length field");
    }
    // The relay calls each masker only for its own message type.
    let own = match msg.first() {
        Some(b'E' | b'N') => Some(&masked),
        Some(b'A') => Some(&notified),
        _ => None,
    };
    if let Some(Ok(out)) = own {
        let seen = out.as_deref().unwrap_or(msg);
        for field in text_fields(seen) {
            assert_eq!(card_numbers(field), 0, "a card number survived masking");
        }
    }
});
