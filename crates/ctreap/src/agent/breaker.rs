//! The circuit breaker: a guard against a broken view of the cluster, not against rollouts.
//!
//! What a broken view looks like: an API server that answers a list with nothing after a
//! restore, lost RBAC on EndpointSlices, a bad cache. Many Services then seem to lose every
//! endpoint at once, and a naive agent would cut most flows on the node.
//!
//! What it must not stop: a rollout (old backends leave, new ones are serving: the Service
//! still has backends) and a single Service losing its only backend or all of them. kube-proxy
//! skipped conntrack cleanup for Services left without endpoints and kept UDP clients
//! black-holed (kubernetes #139628); such a Service is exactly the case to flush at once.
//!
//! So a pass is held only when all three hold:
//! - it deletes more than `min` flows,
//! - they are more than `share` of the node's NAT (translated) flows (not only those the new
//!   view still calls Service flows: a view that lost every Service would count none),
//! - and they come from two or more Services left with no serving backend (or deleted).

/// `--max-delete-share` and `--max-delete-min`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    pub share: f64,
    pub min: u64,
}

/// Should this pass be held back until a fresh re-list confirms the view?
///
/// `to_delete`: flows the pass would delete; `service_flows`: flows of any Service on the node
/// (live, draining and stale); `emptied_services`: Services in the pass that have no serving
/// backend left in the view (or no longer exist).
pub fn holds(limits: Limits, to_delete: u64, service_flows: u64, emptied_services: usize) -> bool {
    emptied_services >= 2
        && to_delete > limits.min
        && (to_delete as f64) > limits.share * (service_flows as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: Limits = Limits {
        share: 0.5,
        min: 1000,
    };

    #[test]
    fn many_services_emptied_at_once_is_held() {
        assert!(holds(DEFAULT, 3000, 4000, 3));
    }

    #[test]
    fn one_service_losing_everything_is_not_held() {
        // Even when it carries every flow on the node.
        assert!(!holds(DEFAULT, 10_000, 10_000, 1));
    }

    #[test]
    fn small_or_minor_passes_are_not_held() {
        assert!(!holds(DEFAULT, 1000, 1001, 5), "not more than min");
        assert!(
            !holds(DEFAULT, 2000, 4000, 5),
            "exactly half is not more than half"
        );
        assert!(holds(DEFAULT, 2001, 4000, 5), "just over half, over min");
    }

    #[test]
    fn rollouts_empty_nothing() {
        assert!(!holds(DEFAULT, 50_000, 60_000, 0));
    }

    #[test]
    fn zero_share_holds_any_large_multi_service_pass() {
        let l = Limits { share: 0.0, min: 0 };
        assert!(holds(l, 1, 1_000_000, 2));
        assert!(!holds(l, 0, 1_000_000, 2));
    }
}
