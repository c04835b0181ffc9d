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
    /// The pod network's settings as a file (the DaemonSet's ConfigMap): `backend`, `bgpAS`,
    /// `encrypt`, as the flags below name them; a flag given wins over the file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// How this node reaches the other nodes' pods (Flannel's backends): a route per peer, or a
    /// vxlan overlay (device `podnet.1`, VNI 1, UDP 8472) [default: host-gw].
    #[arg(long, value_enum)]
    backend: Option<BackendArg>,
    /// `--backend bgp`: the cluster's AS number [default: 64512].
    #[arg(long = "bgp-as", value_name = "ASN")]
    bgp_as: Option<u32>,
    /// Encrypt the traffic between nodes' pods: WireGuard (userspace, UDP 51820); the node's
    /// public key is published as its `podnet.io/wireguard-public-key` annotation.
    #[arg(long, value_enum, value_name = "HOW")]
    encrypt: Option<EncryptArg>,
    /// Where the agent's daemons keep their files (`--backend bgp`: BIRD's configuration,
    /// socket, pid file and log).
    #[arg(long, default_value = "/run/podnet-agent", value_name = "DIR")]
    run_dir: PathBuf,
    /// Where the CNI conflist goes once the node's rules are in place (empty: not written).
    #[arg(long, default_value = "/etc/cni/net.d", value_name = "DIR")]
    cni_conf_dir: String,
    /// Sync once the watches have listed everything, then exit (for checks and tests).
    #[arg(long)]
    once: bool,
    /// Where to serve `/metrics` (kube-proxy's names and port; empty: not served).
    #[arg(long, default_value = "0.0.0.0:10249")]
    metrics_bind_address: String,
    /// Where to serve `/healthz` and `/livez` (kube-proxy's; empty: not served).
    #[arg(long, default_value = "0.0.0.0:10256")]
    healthz_bind_address: String,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EncryptArg {
    /// No encryption.
    None,
    /// WireGuard between every pair of nodes.
    Wireguard,
}

/// The pod network's settings file (`--config`): the flags' names in camelCase.
#[derive(Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NetworkConfig {
    backend: Option<BackendArg>,
    #[serde(rename = "bgpAS")]
    bgp_as: Option<u32>,
    encrypt: Option<EncryptArg>,
}

impl NetworkConfig {
    fn read(path: &std::path::Path) -> Result<NetworkConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_norway::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
    }
}

#[derive(Clone, Copy, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendArg {
    /// Routes via the peers' InternalIPs (the nodes share a network).
    HostGw,
    /// A vxlan overlay between the nodes.
    Vxlan,
    /// BGP (Calico's): BIRD 2 announces the node's pod CIDR to every other Node.
    Bgp,
}

/// What the agent reports: kube-proxy's metrics and health.
#[derive(Default)]
struct Status {
    metrics: proxy::metrics::Metrics,
    health: proxy::metrics::Health,
}

fn unix_now() -> f64 {
    std::time::SystemTime::UNIX_EPOCH.elapsed().unwrap_or_default().as_secs_f64()
}

fn lock(status: &std::sync::Mutex<Status>) -> std::sync::MutexGuard<'_, Status> {
    status.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One request to the agent's `/metrics`, `/healthz` or `/livez`.
fn answer(status: &std::sync::Mutex<Status>, path: &str) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let (code, kind, body) = {
        let s = &mut *lock(status);
        proxy::metrics::respond(&mut s.metrics, &s.health, path, unix_now(), "")
    };
    let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = kind.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Serves the agent's endpoints on `addr`.
async fn serve(addr: String, status: Arc<std::sync::Mutex<Status>>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("listening on {addr}"))?;
    loop {
        let (stream, _) = listener.accept().await?;
        let status = Arc::clone(&status);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let reply = answer(&status, req.uri().path());
                async move { Ok::<_, std::convert::Infallible>(reply) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
        });
    }
}

pub(crate) async fn client(kubeconfig: Option<&PathBuf>) -> Result<kube::Client> {
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

/// Publishes this node's WireGuard public key as its Node's annotation (what the other nodes'
/// agents peer with), as Calico publishes its own.
async fn publish_public_key(client: &kube::Client, node: &str, key: &node::wireguard::KeyPair) -> Result<()> {
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    let public = node::wireguard::encode(&key.public());
    let patch = serde_json::json!({"metadata": {"annotations": {node::wireguard::PUBLIC_KEY_ANNOTATION: public}}});
    nodes
        .patch(node, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
        .await
        .with_context(|| format!("publishing the WireGuard public key on Node {node}"))?;
    eprintln!("podnet agent: node {node}: WireGuard public key {public} published");
    Ok(())
}

/// How often the agent checks, between changes, that its tables are as it wrote them.
const DRIFT_CHECK_PERIOD: Duration = Duration::from_secs(5);

pub fn run(a: AgentArgs) -> Result<ExitCode> {
    let node = a.node_name.clone().or_else(|| std::env::var("NODE_NAME").ok()).ok_or_else(|| anyhow!("give --node-name or set NODE_NAME"))?;
    let config = match &a.proxy_config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            proxy::ProxyConfig::from_yaml(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?
        }
        None => proxy::ProxyConfig::default(),
    };
    let file = a.config.as_deref().map(NetworkConfig::read).transpose()?.unwrap_or_default();
    let backend = a.backend.or(file.backend).unwrap_or(BackendArg::HostGw);
    let bgp_as = a.bgp_as.or(file.bgp_as).unwrap_or(64512);
    let encrypt = a.encrypt.or(file.encrypt).unwrap_or(EncryptArg::None);
    if bgp_as == 0 {
        anyhow::bail!("--bgp-as: 0 is not an AS number");
    }
    dataplane::one_malloc_arena();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let client = client(a.kubeconfig.as_ref()).await?;
        let changed = Arc::new(tokio::sync::Notify::new());
        let stores = agent::source::Stores::start(&client, &changed);
        stores.ready().await.map_err(|e| anyhow!("watching the API server: {e}"))?;
        let mut agent = node::NodeAgent::new(node.clone(), config, a.netns.clone());
        agent.cni_conf_dir = Some(PathBuf::from(&a.cni_conf_dir)).filter(|d| !d.as_os_str().is_empty());
        agent.backend = match backend {
            BackendArg::HostGw => node::Backend::HostGw,
            BackendArg::Vxlan => node::Backend::Vxlan,
            BackendArg::Bgp => node::Backend::Bgp,
        };
        agent.bgp_asn = bgp_as;
        agent.run_dir.clone_from(&a.run_dir);
        if encrypt == EncryptArg::Wireguard {
            let key = node::wireguard::KeyPair::load_or_create(&node::wireguard::key_dir(&a.run_dir), &node)
                .with_context(|| format!("the WireGuard key in {}", node::wireguard::key_dir(&a.run_dir).display()))?;
            publish_public_key(&client, &node, &key).await?;
            agent.wireguard = Some(key);
        }
        let status = Arc::new(std::sync::Mutex::new(Status::default()));
        for addr in [&a.metrics_bind_address, &a.healthz_bind_address].into_iter().filter(|s| !s.is_empty() && !a.once) {
            let (addr, status) = (addr.clone(), Arc::clone(&status));
            tokio::spawn(async move {
                if let Err(e) = serve(addr, status).await {
                    eprintln!("podnet agent: {e:#}");
                }
            });
        }
        let rss = || crate::bench::proc_status_kib("self", "VmRSS").map_or(f64::NAN, |kb| kb / 1024.0);
        eprintln!("podnet agent: node {node}: watching the API server (RSS {:.1} MB)", rss());
        loop {
            // A burst of events is one sync.
            let queued = unix_now();
            lock(&status).health.oldest_pending.get_or_insert(queued);
            tokio::time::sleep(Duration::from_millis(20)).await;
            // Services (or their EndpointSlices) changed: those alone; Pods, Namespaces or
            // NetworkPolicies: the policy and bridge tables from a snapshot (no proxy plan);
            // anything else: the whole state.
            let changes = stores.take_changes();
            // Tables changed behind our back (or left unknown by a failure) take a full sync.
            let drifted = agent.can_sync_services() && agent.drifted();
            if drifted {
                eprintln!("podnet agent: node {node}: the tables differ from what was applied; re-syncing in full");
            }
            let result = if !changes.other && !drifted && agent.can_sync_services() {
                let services = agent.sync_services(&changes.services, |ns, name| stores.service(ns, name));
                match services {
                    Ok(synced) if changes.pods_or_policies => {
                        let tables = stores.snapshot().map_err(|e| e.to_string()).and_then(|state| agent.sync_pod_tables(&state));
                        dataplane::release_free_memory();
                        tables.map(|t| synced.and(t))
                    }
                    other => other,
                }
            } else {
                let synced = stores.snapshot().map_err(|e| e.to_string()).and_then(|state| agent.sync_owned(state));
                // The snapshot was a copy of every object: give its memory back.
                dataplane::release_free_memory();
                synced
            };
            match result {
                Ok(s) => {
                    let now = unix_now();
                    {
                        let mut st = lock(&status);
                        st.metrics.synced(now, s.seconds, s.full, queued, s.elements);
                        st.health = proxy::metrics::Health { last_updated: now, oldest_pending: None };
                    }
                    // Found while syncing rather than by the check above (the change raced it).
                    if s.healed && !drifted {
                        eprintln!("podnet agent: node {node}: the tables differ from what was applied; re-syncing in full");
                    }
                    if s.full || changes.other || changes.pods_or_policies {
                        eprintln!("podnet agent: node {node}: RSS {:.1} MB", rss());
                    }
                    eprintln!(
                        "podnet agent: node {node}: {} sync, {} elements, {:.1} ms",
                        match (s.full, changes.other, changes.pods_or_policies) {
                            (true, ..) => "full",
                            (false, true, _) => "partial",
                            (false, false, true) => "policy",
                            (false, false, false) => "service",
                        },
                        s.elements,
                        s.seconds * 1e3
                    );
                    if s.stale_udp_flows > 0 {
                        eprintln!("podnet agent: node {node}: deleted {} stale UDP conntrack entries", s.stale_udp_flows);
                    }
                    if s.cut_connections > 0 {
                        eprintln!(
                            "podnet agent: node {node}: cut the connections of {} client/port/endpoint triple(s) the policies now deny",
                            s.cut_connections
                        );
                    }
                }
                Err(e) if a.once => return Err(anyhow!("node {node}: {e}")),
                Err(e) => {
                    lock(&status).metrics.sync_failures += 1;
                    eprintln!("podnet agent: node {node}: {e} (retrying within 5 s)");
                }
            }
            if a.once {
                return Ok(ExitCode::SUCCESS);
            }
            // Wait for a change; meanwhile check now and then (one generation read) that nobody
            // changed the node's tables behind our back, or a failed sync left them unknown:
            // either is healed with a full sync.
            loop {
                match tokio::time::timeout(DRIFT_CHECK_PERIOD, changed.notified()).await {
                    Ok(()) => break,
                    Err(_) if agent.drifted() => break,
                    Err(_) => {}
                }
            }
        }
    })
}
