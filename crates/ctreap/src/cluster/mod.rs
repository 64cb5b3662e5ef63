//! Kubernetes watches -> ServiceMap.
