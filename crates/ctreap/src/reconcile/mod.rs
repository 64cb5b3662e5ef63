//! Pure decisions: ([`ServiceMap`](crate::cluster::ServiceMap), flows) -> verdicts and delete
//! plans. No sockets, no clock: every rule here is testable with plain values.
//!
//! From a slice change to a delete, one module per arrow:
//!
//! 1. `cluster/watch.rs`: the EndpointSlice watch event, decoded on its own, applied to the live
//!    model under its lock.
//! 2. `cluster/state.rs`: the model patches the backends the slice lists in the ports of the
//!    Service it is labelled for (or rebuilds that one Service where a patch cannot be exact)
//!    and records what changed, state and not verdicts: (frontend, backend) pairs whose
//!    backend's view changed, with its conditions before and now
//!    ([`Change`](crate::cluster::Change), `take_changes`), and frontends that gained a
//!    serving backend (`take_gained`).
//! 3. `reconcile/decide.rs`, [`planned`]: those changes and the policy -> the (frontend, backend)
//!    keys to judge, each with its settle window ([`Settle`]: `--grace`, or `--move-grace` for
//!    a backend that vanished while serving).
//! 4. `agent/mod.rs`: the loop holds each key until its window ends (`ctreap_settling_pairs`),
//!    then hands the due keys to one pass.
//! 5. `agent/pass.rs`: the pass finds the keys' entries (the flow index, or a kernel-filtered
//!    dump), judges each on the newest model with [`deletable_planned`] (the same rule as
//!    [`deletable`]), and asks the circuit breaker.
//! 6. `agent/executor.rs`: the deletes, by tuple, on the table (`agent/kernel.rs`'s `Table`:
//!    the kernel's, or an in-memory one in the loop tests, `agent/loop_tests.rs`).
//!
//! The full passes, the conntrack NEW-event path and `ctreap stale` judge entries with
//! [`deletable`] too; nothing else decides whether a flow may go.
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
    Planned, Settle, Stale, deletable, deletable_decision, deletable_planned, flow_of, key_of,
    planned, settle, unlisted_hostport_backend,
};
pub use plan::{FlushKey, Policy, ProtoSet, plan_diff};
pub use verdict::{
    Decision, Flow, NotServiceReason, StaleReason, Verdict, VerdictCounts, classify,
};

#[cfg(test)]
mod tests;
