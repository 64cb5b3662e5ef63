//! Flags shared by the commands that read the cluster, named as kubectl names them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::cluster::{ClusterWatch, Snapshot, WatchConfig, addresses_in, kube_config, node_name};

/// How long a command waits for the API server's first answer before it gives up, as kubectl
/// does within seconds rather than retrying for the whole --sync-timeout.
const REACH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Args)]
pub struct KubeArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster).
    // Not `env = "KUBECONFIG"`: kube reads that itself, as kubectl does (a colon-separated
    // list, merged), where clap would take it as one path.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long)]
    pub context: Option<String>,
    /// This node's name (default: $NODE_NAME, then the hostname).
    #[arg(long = "node-name")]
    pub node_name: Option<String>,
    /// How long to wait for the first complete list of Services, EndpointSlices and the Node
    /// (`ctreap run` waits on, and warns at this period).
    #[arg(long = "sync-timeout", value_parser = super::parse_duration, allow_hyphen_values = true, default_value = "30s")]
    pub sync_timeout: Duration,
    /// Judge hostPort flows too (the CNI portmap plugin's DNAT to this node's Pods): watches
    /// the Pods of this node (`fieldSelector spec.nodeName`); `--hostports=false` does not.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub hostports: bool,
}

impl KubeArgs {
    /// Starts the watches and waits until every one has delivered its initial list: a verdict
    /// on a half-listed cluster would call every not-yet-listed endpoint gone.
    pub async fn synced_watch(&self, netns: Option<&ctnetlink::Netns>) -> Result<ClusterWatch> {
        let config = kube_config(self.kubeconfig.clone(), self.context.clone()).await?;
        let url = config.cluster_url.clone();
        let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
        // One request first: an unreachable or refusing server is one line now, not 30 s of
        // retries.
        match tokio::time::timeout(REACH_TIMEOUT, client.apiserver_version()).await {
            Ok(Ok(_)) => {}
            // It answered, with an error: say so, and what that status usually means.
            Ok(Err(e)) => match crate::cluster::api_status(&e) {
                Some(status) => bail!(
                    "the server at {url} answered GET /version with {}",
                    crate::cluster::answered(status)
                ),
                None => bail!(
                    "cannot reach the API server at {url}: {}",
                    crate::cluster::innermost(&e)
                ),
            },
            Err(_) => bail!("the API server at {url} did not answer within {REACH_TIMEOUT:?}"),
        }
        let node = node_name(self.node_name.clone())?;
        // NodePorts answer on the node's own interface addresses too (kube-proxy with
        // nodePortAddresses unset); read them where the conntrack table lives.
        let node_local_addrs = addresses_in(netns)?;
        let watch = ClusterWatch::start(
            client,
            WatchConfig {
                node_name: Some(node.clone()),
                hostports: self.hostports,
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
                .map(|(w, s)| {
                    // The Pod watch is for hostPorts only: a kubeconfig that may not list
                    // Pods can do without it.
                    let hint = if *w == crate::cluster::Watched::Pods {
                        " (--hostports=false does without the Pod watch)"
                    } else {
                        ""
                    };
                    match &s.last_error {
                        Some(e) => format!("{}: {e}{hint}", w.as_str()),
                        None => format!("{}{hint}", w.as_str()),
                    }
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
