//! The diagnosis commands: `ctreap conntrack ...`, `stale`, `watch` and `doctor`. The binary
//! (`main.rs`) puts them beside `run` (`agent`).

pub mod conntrack;
pub mod doctor;
pub mod filter;
pub mod stale;
