//! Typed views of the messages the gateway inspects or writes. Everything else is forwarded
//! as opaque [`crate::codec::Frame`]s.

pub mod backend;
pub mod frontend;
pub mod startup;
