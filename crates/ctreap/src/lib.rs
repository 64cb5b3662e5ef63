pub mod cluster;
pub mod reconcile;
