//! Card numbers (PANs) in text written to the audit store, recordings, logs and exports.
//!
//! PCI DSS 3.5.1: nothing the gateway stores holds a full PAN, whatever the session's masking
//! rules say (an exempt identity sees clear values; the evidence of what it saw does not keep
//! them). Uses the content detector of [`crate::masking::detector`] and always renders `last4`.

use crate::masking::{MaskStyle, TokenKey, mask_pans_with};

/// Returns the text with every card number masked to its last four digits; borrows when
/// nothing needs masking (the common case costs one scan, no allocation).
pub fn mask_pans(text: &str) -> std::borrow::Cow<'_, str> {
    // `last4` never uses the key.
    static KEY: std::sync::OnceLock<TokenKey> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| TokenKey::from_bytes([0; 32]));
    match mask_pans_with(MaskStyle::Last4, key, text.as_bytes()) {
        // Only ASCII digits were replaced by ASCII '*', so the bytes stay valid UTF-8.
        Some((buf, _)) => std::borrow::Cow::Owned(String::from_utf8_lossy(&buf).into_owned()),
        None => std::borrow::Cow::Borrowed(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_luhn_valid_runs_only() {
        assert_eq!(
            mask_pans("card 4111111111111111 ok"),
            "card ************1111 ok"
        );
        assert_eq!(mask_pans("4111 1111 1111 1111"), "**** **** **** 1111");
        assert_eq!(mask_pans("4111-1111-1111-1111"), "****-****-****-1111");
        // Not Luhn-valid: untouched.
        assert_eq!(mask_pans("4111111111111112"), "4111111111111112");
        // Too short.
        assert_eq!(mask_pans("id 411111111111"), "id 411111111111");
        assert!(matches!(
            mask_pans("nothing here"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn masks_inside_sql_literals() {
        assert_eq!(
            mask_pans("SELECT * FROM p WHERE card='5555555555554444'"),
            "SELECT * FROM p WHERE card='************4444'"
        );
    }
}
