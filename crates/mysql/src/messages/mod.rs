//! One message per file: the connection phase ([`handshake`], [`response`]), the command
//! phase ([`command`]: commands, column definitions, text rows) and the generic answers
//! ([`ok_err`]). Each parses from a payload with typed errors and builds into a buffer.

pub mod auth_switch;
pub mod command;
pub mod handshake;
pub mod ok_err;
pub mod response;

pub use auth_switch::{AuthMoreData, AuthSwitchRequest};
pub use command::{ColumnDefinition, CommandKind};
pub use handshake::HandshakeV10;
pub use ok_err::{ErrPacket, OkPacket, codes};
pub use response::{ClientHello, HandshakeResponse41, SslRequest};

/// A payload is not the message it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error(transparent)]
    Wire(#[from] crate::wire::WireError),
    #[error("{what}: unexpected {found:#04x}")]
    Unexpected { what: &'static str, found: u8 },
    #[error("{0}")]
    Unsupported(&'static str),
}
