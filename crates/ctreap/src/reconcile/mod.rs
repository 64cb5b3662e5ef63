//! Pure decisions: ([`ServiceMap`](crate::cluster::ServiceMap), flows) -> verdicts and delete
//! plans. No sockets, no clock: every rule here is testable with plain values.
//!
//! - [`classify`]: one conntrack entry (`conntrack -L` line) -> [`Verdict`] with the Service,
//!   frontend and backend it concerns;
//! - [`plan`] / [`plan_flows`]: stale verdicts -> [`FlushKey`]s, one filtered flush per
//!   (frontend, stale backend), like `conntrack -D --orig-dst SVC --reply-src POD`;
//! - [`plan_diff`]: two maps -> the flushes for the backends that left, for watch-driven
//!   triggers.

mod plan;
mod verdict;

pub use plan::{FlushKey, Policy, ProtoSet, plan, plan_diff, plan_flows};
pub use verdict::{
    Decision, Flow, NotServiceReason, StaleReason, Verdict, VerdictCounts, classify,
};

#[cfg(test)]
mod tests;
