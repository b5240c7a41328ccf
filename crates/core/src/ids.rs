//! Identifiers the gateway mints (sessions, approval requests, grants, token ids): UUIDs that
//! never look like a card number.
//!
//! Why: every text the gateway stores, shows or reports goes through the PAN detector, and a
//! random UUID's hex digits, with its dashes as separators, hold a Luhn-valid 13–19 digit run
//! with a card brand's prefix often enough to matter (`7e5ebe52-8466-4906-950c-…` holds
//! `52-8466-4906-950`). Masked, such an id no longer names its session or request: an approver
//! could not decide it, an auditor could not follow it. An id the detector would match is
//! drawn again.

use crate::masking::detector::find_pans;

/// A random (v4) UUID with no card number in its text.
pub fn random_id() -> String {
    first_clean(|| uuid::Uuid::new_v4().to_string())
}

/// A time-ordered (v7) UUID with no card number in its text (sorts by creation time, as
/// session and grant ids do in listings). If the millisecond's timestamp digits alone keep
/// producing a match, a random id is used instead.
pub fn time_ordered_id() -> String {
    for _ in 0..DRAWS {
        let id = uuid::Uuid::now_v7().to_string();
        if !holds_card_number(&id) {
            return id;
        }
    }
    random_id()
}

/// Draws before giving up on one kind of id (each draw matches with well under 1 %).
const DRAWS: usize = 16;

fn first_clean(mut draw: impl FnMut() -> String) -> String {
    let mut id = draw();
    while holds_card_number(&id) {
        id = draw();
    }
    id
}

fn holds_card_number(text: &str) -> bool {
    let mut found = false;
    find_pans(text.as_bytes(), |_| found = true);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uuid_that_was_masked_would_be_drawn_again_and_minted_ids_never_match() {
        assert!(holds_card_number("7e5ebe52-8466-4906-950c-973463226af3"));
        for _ in 0..20_000 {
            assert!(!holds_card_number(&random_id()));
            assert!(!holds_card_number(&time_ordered_id()));
        }
        assert_eq!(random_id().len(), 36);
        assert_ne!(random_id(), random_id());
    }
}
