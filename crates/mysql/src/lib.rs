//! The MySQL/MariaDB wire protocol for the gateway: packet framing and the messages of the
//! connection phase, shared by the client-facing side and the upstream login.
//!
//! Groundwork for the MySQL adapter (issue "MySQL and MariaDB through the same gate"): the
//! adapter that admits clients through `gatehouse_core::session`, relays commands and masks
//! results will sit on these types. Like the PostgreSQL adapter, nothing here decides policy:
//! it frames, parses and builds, and every length a peer sends is checked before it is used.
//!
//! Layout: [`codec`] splits a byte stream into packets (3-byte length, sequence id) and joins
//! the 16 MiB continuations of a large payload; [`wire`] reads the protocol's integer and string
//! encodings; [`messages`] has one file per message; [`capabilities`] the flags and the set the
//! gateway advertises (only what it can follow); [`mask`] masks text-protocol rows by their
//! columns' sources and the content detector; [`auth`] answers an upstream's scramble.
#![forbid(unsafe_code)]

pub mod auth;
pub mod capabilities;
pub mod codec;
pub mod mask;
pub mod messages;
pub mod rsa_exchange;
pub mod session;
pub mod stream;
pub mod upstream;
pub mod views;
pub mod wire;

pub use codec::{CodecError, Packet, PacketReader, write_packets};
