//! The PostgreSQL adapter: speaks the wire protocol to clients and to the upstream server,
//! and translates what happens into the core's decision points (identity, audit).
//!
//! Nothing here decides policy; it only frames, inspects and forwards. Messages that need no
//! rewrite travel as the original bytes.
#![forbid(unsafe_code)]

pub mod cancel;
pub mod catalog;
pub mod codec;
mod mask;
pub use mask::{describe_output_masks, fuzzing as mask_fuzzing, masked_inference};
pub mod messages;
pub mod pool;
pub mod server;
pub mod session;
mod stream;
pub mod upstream;

pub use server::{Gateway, GatewayConfig};
