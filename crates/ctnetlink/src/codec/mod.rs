//! The pure codec: bytes in, typed values out, and back. No sockets, no clock, no allocation
//! beyond the values themselves.

pub mod entry;
pub mod filter;
pub mod format;
pub mod message;
pub mod nla;
pub mod tuple;
