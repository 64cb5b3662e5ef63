//! ctreap: ends traffic to dead pods through stale conntrack NAT entries.
//!
//! Layers, one way: `cluster` (Kubernetes watches -> ServiceMap), `reconcile` (pure decisions
//! over snapshots), `agent` (the node agent, `ctreap run`), `lab` (the reproduction, `ctreap lab`), `cli` (the
//! commands), over the `ctnetlink` crate for the kernel side.

pub mod agent;
pub mod cli;
pub mod cluster;
pub mod lab;
pub mod reconcile;
