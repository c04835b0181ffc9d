//! `podnet dns serve`: the cluster DNS on UDP and TCP, with names outside the zone forwarded,
//! for the objects in manifest files (watched: a change is served within `watch::PERIOD`; a file
//! that no longer loads keeps the last good view and says why) or, as the CoreDNS Deployment
//! behind `kube-dns` is, for the API server's (watched with kube-rs reflectors: Namespaces,
//! Services, EndpointSlices, Pods, as CoreDNS's `kubernetes` plugin watches them).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use dns::forward::{ForwardConfig, Forwarder};
use dns::server::Shared;
use dns::{PodsMode, View, ZoneConfig};

#[derive(Subcommand)]
pub enum DnsCommand {
    /// Serve the cluster DNS for the objects in manifest files.
    Serve(ServeArgs),
}

#[derive(Args)]
pub struct ServeArgs {
    /// Manifests: Namespaces, Services, EndpointSlices, Pods, Nodes, ServiceCIDRs (files or
    /// directories). Without them, the API server's objects.
    #[arg(short = 'f', long = "filename", value_name = "PATH", num_args = 1.., conflicts_with = "kubeconfig")]
    paths: Vec<PathBuf>,
    /// Serve the API server's objects, reached with this kubeconfig (without `-f` and without
    /// it: the pod's service account in a cluster, else $KUBECONFIG or ~/.kube/config).
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// Address to serve on, UDP and TCP.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// The cluster domain.
    #[arg(long, default_value = "cluster.local")]
    zone: String,
    /// Pod records `a-b-c-d.<ns>.pod.<zone>`: disabled, insecure or verified.
    #[arg(long, default_value = "disabled")]
    pods: PodsMode,
    /// Upstream resolvers for other names (default: the nameservers of /etc/resolv.conf).
    #[arg(long, value_name = "ADDR:PORT")]
    upstream: Vec<SocketAddr>,
    /// CoreDNS's `autopath @kubernetes`: a query from a pod's address for a name in its first
    /// search domain that does not exist is answered from the rest of its search path.
    #[arg(long)]
    autopath: bool,
    /// Serve `/health`, `/ready` and `/metrics` (CoreDNS's names) over HTTP on this address.
    #[arg(long, value_name = "ADDR:PORT")]
    http: Option<SocketAddr>,
    /// Resolve names outside the zone only for these source networks (default: any source).
    #[arg(long = "recursion-from", value_name = "CIDR", value_delimiter = ',')]
    recursion_from: Vec<ipnet::IpNet>,
}

pub fn run(cmd: DnsCommand) -> Result<ExitCode> {
    match cmd {
        DnsCommand::Serve(args) => serve(args),
    }
}

fn build(paths: &[PathBuf], zone: &ZoneConfig, serial: u32) -> Result<View> {
    let state = model::load_cluster_served(paths)?;
    let view = View::build(&state, zone, serial)?;
    drop(state);
    // The manifests' parse trees were many times the view's size.
    dataplane::release_free_memory();
    Ok(view)
}

/// Where the objects come from.
enum Source {
    Files(Vec<PathBuf>),
    Api { stores: agent::source::Stores, changed: Arc<tokio::sync::Notify> },
}

impl Source {
    async fn open(a: &ServeArgs) -> Result<Source> {
        if !a.paths.is_empty() {
            return Ok(Source::Files(a.paths.clone()));
        }
        let client = crate::agent_cmd::client(a.kubeconfig.as_ref()).await?;
        let changed = Arc::new(tokio::sync::Notify::new());
        let stores = agent::source::Stores::start_for_dns(&client, &changed);
        stores.ready().await.map_err(|e| anyhow::anyhow!("watching the API server: {e}"))?;
        Ok(Source::Api { stores, changed })
    }

    fn view(&self, zone: &ZoneConfig) -> Result<View> {
        match self {
            Source::Files(paths) => build(paths, zone, serial()),
            Source::Api { stores, .. } => Ok(View::build(&stores.snapshot()?, zone, serial())?),
        }
    }

    /// Serves each change from now on: a new view per change (a burst of events is one).
    async fn follow(&self, zone: &ZoneConfig, shared: &Shared) {
        let mut seen = match self {
            Source::Files(paths) => crate::watch::fingerprint(paths),
            Source::Api { .. } => Vec::new(),
        };
        loop {
            match self {
                Source::Files(paths) => {
                    tokio::time::sleep(crate::watch::PERIOD).await;
                    let now = crate::watch::fingerprint(paths);
                    if now == seen {
                        continue;
                    }
                    seen = now;
                }
                Source::Api { changed, .. } => {
                    changed.notified().await;
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
            match self.view(zone) {
                Ok(view) => shared.set_view(view),
                Err(e) => eprintln!("podnet dns: keeping the last good objects: {e:#}"),
            }
        }
    }
}

/// A SOA serial: seconds since the epoch, as CoreDNS uses.
fn serial() -> u32 {
    SystemTime::UNIX_EPOCH.elapsed().map_or(1, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

fn serve(a: ServeArgs) -> Result<ExitCode> {
    let resolv_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let zone = ZoneConfig {
        zone: a.zone.clone(),
        pods: a.pods,
        autopath: a.autopath,
        host_searches: dns::forward::resolv_conf_searches(&resolv_conf),
        ..Default::default()
    };
    let upstreams = if a.upstream.is_empty() { dns::forward::resolv_conf_nameservers(&resolv_conf) } else { a.upstream.clone() };
    let recursion_from = (!a.recursion_from.is_empty()).then(|| a.recursion_from.clone());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build().context("starting the runtime")?;
    runtime.block_on(async move {
        let source = Source::open(&a).await?;
        let view = source.view(&zone)?;
        let forwarder = Forwarder::new(ForwardConfig { upstreams, ..Default::default() });
        let shared = Arc::new(Shared::new(view, forwarder, recursion_from));
        let udp = tokio::net::UdpSocket::bind(a.listen).await.with_context(|| format!("listening on udp {}", a.listen))?;
        // Port 0: TCP takes the port UDP was given.
        let listen = udp.local_addr()?;
        let tcp = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on tcp {listen}"))?;
        let mut http_note = String::new();
        if let Some(http) = a.http {
            let listener = tokio::net::TcpListener::bind(http).await.with_context(|| format!("listening on {http}"))?;
            http_note = format!(", /health /ready /metrics on http://{}", listener.local_addr()?);
            tokio::spawn(dns::metrics::serve_http(listener, Arc::clone(&shared)));
        }
        let from = if a.paths.is_empty() { "the API server's objects" } else { "the manifests' objects" };
        eprintln!("podnet dns: serving {} on {listen} (udp, tcp) for {from}{http_note}", zone.zone);
        tokio::select! {
            r = dns::server::serve_udp(udp, Arc::clone(&shared)) => r.context("udp server")?,
            r = dns::server::serve_tcp(tcp, Arc::clone(&shared)) => r.context("tcp server")?,
            () = source.follow(&zone, &shared) => {}
        }
        bail!("the DNS server stopped")
    })
}
