//! ctreap: ends traffic to dead pods through stale conntrack NAT entries.
//!
//! Layers, one way: `cluster` (Kubernetes watches -> the live Service map), `reconcile` (pure
//! decisions), then two siblings that never import each other: `agent` (the node agent,
//! `ctreap run`) and `cli` (the diagnosis commands); `args` holds what they share. All over
//! the `ctnetlink` crate for the kernel side. The reproduction (`ctreap-lab`) is a crate of
//! its own on top of this one, so that the product binary links no test server.

pub mod agent;
pub mod args;
pub mod cli;
pub mod cluster;
pub mod reconcile;
