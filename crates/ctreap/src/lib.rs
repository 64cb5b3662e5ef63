//! ctreap: ends traffic to dead pods through stale conntrack NAT entries.
//!
//! Layers, one way: `cluster` (Kubernetes watches -> ServiceMap), `reconcile` (pure decisions
//! over snapshots), `cli` (the commands), over the `ctnetlink` crate for the kernel side.

pub mod cli;
pub mod cluster;
pub mod reconcile;
