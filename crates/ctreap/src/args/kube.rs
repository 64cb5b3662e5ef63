//! Flags shared by the commands that read the cluster, named as kubectl names them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::cluster::{ClusterWatch, Snapshot, WatchConfig, addresses_in, kube_client, node_name};

#[derive(Debug, Clone, Args)]
pub struct KubeArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster).
    #[arg(long, env = "KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long)]
    pub context: Option<String>,
    /// This node's name (default: $NODE_NAME, then the hostname).
    #[arg(long = "node-name")]
    pub node_name: Option<String>,
    /// How long to wait for the first complete list of Services, EndpointSlices and the Node
    /// (`ctreap run` waits on, and warns at this period).
    #[arg(long = "sync-timeout", value_parser = super::parse_duration, default_value = "30s")]
    pub sync_timeout: Duration,
}

impl KubeArgs {
    /// Starts the watches and waits until every one has delivered its initial list: a verdict
    /// on a half-listed cluster would call every not-yet-listed endpoint gone.
    pub async fn synced_watch(&self, netns: Option<&ctnetlink::Netns>) -> Result<ClusterWatch> {
        let client = kube_client(self.kubeconfig.clone(), self.context.clone()).await?;
        let node = node_name(self.node_name.clone())?;
        // NodePorts answer on the node's own interface addresses too (kube-proxy with
        // nodePortAddresses unset); read them where the conntrack table lives.
        let node_local_addrs = addresses_in(netns)?;
        let watch = ClusterWatch::start(
            client,
            WatchConfig {
                node_name: Some(node.clone()),
                node_local_addrs,
            },
        );
        if let Err(e) = watch.follow_local_addresses(netns.cloned()) {
            tracing::warn!(error = %e, "cannot follow the node's address changes (rtnetlink)");
        }
        if tokio::time::timeout(self.sync_timeout, watch.wait_synced())
            .await
            .is_err()
        {
            let status = watch.status();
            let pending: Vec<String> = status
                .watches
                .iter()
                .filter(|(_, s)| !s.synced)
                .map(|(w, s)| match &s.last_error {
                    Some(e) => format!("{}: {e}", w.as_str()),
                    None => w.as_str().to_string(),
                })
                .collect();
            bail!(
                "the API server did not deliver a complete list within {:?} (waiting for {})",
                self.sync_timeout,
                pending.join("; ")
            );
        }
        if watch.status().get(crate::cluster::Watched::Node).objects == 0 {
            tracing::warn!(
                "Node {node:?} not found in the API server: NodePorts are judged on this node's interface addresses only, not on the Node's InternalIP/ExternalIP; check --node-name or NODE_NAME"
            );
        }
        Ok(watch)
    }
}

pub fn snapshot(watch: &ClusterWatch) -> Result<std::sync::Arc<Snapshot>> {
    watch
        .snapshot()
        .context("no complete view of the cluster yet")
}
