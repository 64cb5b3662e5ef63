//! Pure decisions: ([`ServiceMap`](crate::cluster::ServiceMap), flows) -> verdicts and delete
//! plans. No sockets, no clock: every rule here is testable with plain values.
//!
//! - [`classify`]: one conntrack entry (`conntrack -L` line) -> [`Verdict`] with the Service,
//!   frontend and backend it concerns;
//! - [`deletable`], [`planned`], [`deletable_planned`]: the one rule every deleting path
//!   follows (is this entry deletable now, and why);
//! - [`FlushKey`]: a (frontend, backend) pair, the entries one filtered flush deletes, like
//!   `conntrack -D --orig-dst SVC --reply-src POD`;
//! - [`plan_diff`]: two maps -> the flushes for the backends that left: the reference the live
//!   model's recorded changes are tested against (`cluster::state`), and the verdict
//!   benchmark's baseline.

mod decide;
mod plan;
mod verdict;

pub use decide::{
    Planned, Settle, Stale, deletable, deletable_planned, flow_of, key_of, planned, settle,
};
pub use plan::{FlushKey, Policy, ProtoSet, plan_diff};
pub use verdict::{
    Decision, Flow, NotServiceReason, StaleReason, Verdict, VerdictCounts, classify,
};

#[cfg(test)]
mod tests;
