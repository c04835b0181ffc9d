//! `podnet dns serve`: the cluster DNS for the objects in manifest files, on UDP and TCP, with
//! names outside the zone forwarded; the files are watched and a change is served within
//! `WATCH_PERIOD` (a file that no longer loads keeps the last good view and says why).

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
    /// Manifests: Namespaces, Services, EndpointSlices, Pods, Nodes, ServiceCIDRs (files or directories).
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true, num_args = 1..)]
    paths: Vec<PathBuf>,
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
    let view = build(&a.paths, &zone, serial())?;
    let upstreams = if a.upstream.is_empty() { dns::forward::resolv_conf_nameservers(&resolv_conf) } else { a.upstream.clone() };
    let forwarder = Forwarder::new(ForwardConfig { upstreams, ..Default::default() });
    let recursion_from = (!a.recursion_from.is_empty()).then(|| a.recursion_from.clone());
    let shared = Arc::new(Shared::new(view, forwarder, recursion_from));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build().context("starting the runtime")?;
    runtime.block_on(async move {
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
        eprintln!("podnet dns: serving {} on {listen} (udp, tcp){http_note}", zone.zone);
        let watch = {
            let shared = Arc::clone(&shared);
            async move {
                let mut seen = crate::watch::fingerprint(&a.paths);
                loop {
                    tokio::time::sleep(crate::watch::PERIOD).await;
                    let now = crate::watch::fingerprint(&a.paths);
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    match build(&a.paths, &zone, serial()) {
                        Ok(view) => shared.set_view(view),
                        Err(e) => eprintln!("podnet dns: keeping the last good objects: {e:#}"),
                    }
                }
            }
        };
        tokio::select! {
            r = dns::server::serve_udp(udp, Arc::clone(&shared)) => r.context("udp server")?,
            r = dns::server::serve_tcp(tcp, Arc::clone(&shared)) => r.context("tcp server")?,
            () = watch => {}
        }
        bail!("the DNS server stopped")
    })
}
