//! ctreap: ends traffic to dead pods through stale conntrack NAT entries.
//!
//! Layers, one way: `cluster` (Kubernetes watches -> the live Service map), `reconcile` (pure
//! decisions), then three siblings that never import each other: `agent` (the node agent,
//! `ctreap run`), `cli` (the diagnosis commands) and `lab` (the reproduction, `ctreap lab`;
//! only with the `lab` feature, on by default, which the image leaves out so that the product
//! binary links no test server); `args` holds what they share. All over the `ctnetlink` crate
//! for the kernel side.

pub mod agent;
pub mod args;
pub mod cli;
pub mod cluster;
#[cfg(feature = "lab")]
pub mod lab;
pub mod reconcile;
