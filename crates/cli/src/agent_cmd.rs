//! `podnet agent`: the node agent on a real cluster — watches the API server (kube-rs
//! reflectors) and keeps this node's service proxy and NetworkPolicy tables as the objects say,
//! with the same planners as the lab. Runs as a DaemonSet pod (`hostNetwork`, `NODE_NAME` from
//! the downward API), or by hand with a kubeconfig.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::Args;

#[derive(Args)]
pub struct AgentArgs {
    /// A kubeconfig (default: the pod's service account in a cluster, else $KUBECONFIG or
    /// ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The Node this agent programs (default: $NODE_NAME, from the downward API).
    #[arg(long)]
    node_name: Option<String>,
    /// A `KubeProxyConfiguration` file (clusterCIDR, masqueradeAll, nodePortAddresses, ...).
    #[arg(long, value_name = "FILE")]
    proxy_config: Option<PathBuf>,
    /// Program the rules in this network namespace (`/run/netns/NAME`) instead of the agent's own.
    #[arg(long, value_name = "PATH")]
    netns: Option<PathBuf>,
    /// Sync once the watches have listed everything, then exit (for checks and tests).
    #[arg(long)]
    once: bool,
}

async fn client(kubeconfig: Option<&PathBuf>) -> Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context("no kubeconfig given and none found (in-cluster, $KUBECONFIG, ~/.kube/config)")?,
    };
    kube::Client::try_from(config).context("making the API client")
}

pub fn run(a: AgentArgs) -> Result<ExitCode> {
    let node = a.node_name.clone().or_else(|| std::env::var("NODE_NAME").ok()).ok_or_else(|| anyhow!("give --node-name or set NODE_NAME"))?;
    let config = match &a.proxy_config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            proxy::ProxyConfig::from_yaml(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?
        }
        None => proxy::ProxyConfig::default(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let client = client(a.kubeconfig.as_ref()).await?;
        let changed = Arc::new(tokio::sync::Notify::new());
        let stores = agent::source::Stores::start(&client, &changed);
        stores.ready().await.map_err(|e| anyhow!("watching the API server: {e}"))?;
        let mut agent = agent::node::NodeAgent::new(node.clone(), config, a.netns.clone());
        eprintln!("podnet agent: node {node}: watching the API server");
        loop {
            // A burst of events is one sync.
            tokio::time::sleep(Duration::from_millis(20)).await;
            match stores.snapshot().map_err(|e| e.to_string()).and_then(|state| agent.sync(&state)) {
                Ok(s) => {
                    eprintln!("podnet agent: node {node}: {} sync, {} elements, {:.1} ms", if s.full { "full" } else { "partial" }, s.elements, s.seconds * 1e3)
                }
                Err(e) if a.once => return Err(anyhow!("node {node}: {e}")),
                Err(e) => eprintln!("podnet agent: node {node}: {e} (retrying on the next change)"),
            }
            if a.once {
                return Ok(ExitCode::SUCCESS);
            }
            changed.notified().await;
        }
    })
}
