//! Capability flags of the connection phase, and what the gateway advertises.
//!
//! Why a fixed set: the gateway must understand every packet it forwards in order to mask and
//! judge it. A capability changes packet shapes (compression wraps every packet; query
//! attributes add parameters to COM_QUERY; optional result metadata lets a server omit the
//! column definitions masking needs; MariaDB's metadata cache does the same for prepared
//! statements). What it cannot follow it does not advertise, so a client never asks for it.

/// `CLIENT_LONG_PASSWORD`.
pub const LONG_PASSWORD: u32 = 1;
pub const FOUND_ROWS: u32 = 1 << 1;
pub const LONG_FLAG: u32 = 1 << 2;
pub const CONNECT_WITH_DB: u32 = 1 << 3;
pub const NO_SCHEMA: u32 = 1 << 4;
pub const COMPRESS: u32 = 1 << 5;
pub const ODBC: u32 = 1 << 6;
pub const LOCAL_FILES: u32 = 1 << 7;
pub const IGNORE_SPACE: u32 = 1 << 8;
pub const PROTOCOL_41: u32 = 1 << 9;
pub const INTERACTIVE: u32 = 1 << 10;
pub const SSL: u32 = 1 << 11;
pub const IGNORE_SIGPIPE: u32 = 1 << 12;
pub const TRANSACTIONS: u32 = 1 << 13;
pub const RESERVED: u32 = 1 << 14;
/// `CLIENT_SECURE_CONNECTION` (also called `RESERVED2`): 1-byte length before the auth data.
pub const SECURE_CONNECTION: u32 = 1 << 15;
pub const MULTI_STATEMENTS: u32 = 1 << 16;
pub const MULTI_RESULTS: u32 = 1 << 17;
pub const PS_MULTI_RESULTS: u32 = 1 << 18;
pub const PLUGIN_AUTH: u32 = 1 << 19;
pub const CONNECT_ATTRS: u32 = 1 << 20;
pub const PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 1 << 21;
pub const CAN_HANDLE_EXPIRED_PASSWORDS: u32 = 1 << 22;
pub const SESSION_TRACK: u32 = 1 << 23;
pub const DEPRECATE_EOF: u32 = 1 << 24;
pub const OPTIONAL_RESULTSET_METADATA: u32 = 1 << 25;
pub const ZSTD_COMPRESSION: u32 = 1 << 26;
pub const QUERY_ATTRIBUTES: u32 = 1 << 27;
pub const MULTI_FACTOR_AUTHENTICATION: u32 = 1 << 28;
/// On MariaDB, bit 0 (`CLIENT_MYSQL`) unset means the extended capabilities below apply.
pub const MARIADB_CACHE_METADATA: u64 = 1 << 36;

/// What the gateway offers clients. Not offered: compression (zlib, zstd), query attributes,
/// optional result metadata, multi-factor authentication, session tracking (state changes the
/// gateway would have to follow), and MariaDB's extended capabilities (the metadata cache).
/// TLS (`SSL`) is added by the adapter when it has a certificate.
pub const GATEWAY_OFFERS: u32 = LONG_PASSWORD
    | FOUND_ROWS
    | LONG_FLAG
    | CONNECT_WITH_DB
    | LOCAL_FILES
    | IGNORE_SPACE
    | PROTOCOL_41
    | INTERACTIVE
    | TRANSACTIONS
    | SECURE_CONNECTION
    | MULTI_STATEMENTS
    | MULTI_RESULTS
    | PS_MULTI_RESULTS
    | PLUGIN_AUTH
    | CONNECT_ATTRS
    | PLUGIN_AUTH_LENENC_CLIENT_DATA
    | DEPRECATE_EOF;

/// Capabilities a client may not use even if it sets them (the gateway never offered them):
/// the session is refused rather than relayed half-understood.
pub const NEVER_ACCEPTED: u32 =
    COMPRESS | ZSTD_COMPRESSION | QUERY_ATTRIBUTES | OPTIONAL_RESULTSET_METADATA | SESSION_TRACK;

/// What a client's response may use: its own flags, limited to what was offered.
pub fn negotiated(offered: u32, client: u32) -> u32 {
    offered & client
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_never_offers_what_it_cannot_follow() {
        assert_eq!(GATEWAY_OFFERS & NEVER_ACCEPTED, 0);
        assert_eq!(GATEWAY_OFFERS & SSL, 0, "TLS is the adapter's to add");
        assert_ne!(GATEWAY_OFFERS & PROTOCOL_41, 0);
        assert_eq!(negotiated(GATEWAY_OFFERS, u32::MAX) & COMPRESS, 0);
    }
}
