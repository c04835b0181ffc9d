//! `podnet gateway serve`: the HTTP(S) proxy for the Ingresses in manifest files, acting for the
//! IngressClasses whose `spec.controller` is ours; the files are watched and a change is served
//! by swapping the whole route snapshot (requests in flight finish on the old one).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use gateway::server::{Shared, Snapshot};

/// The controller name podnet answers to by default (IngressClass `spec.controller`).
pub const DEFAULT_INGRESS_CONTROLLER: &str = "podnet.io/ingress-controller";
/// The Gateway API controller name (GatewayClass `spec.controllerName`).
pub const DEFAULT_GATEWAY_CONTROLLER: &str = "podnet.io/gateway-controller";

#[derive(Subcommand)]
pub enum GatewayCommand {
    /// Serve HTTP and HTTPS for the Ingresses in manifest files.
    Serve(ServeArgs),
}

#[derive(Args)]
pub struct ServeArgs {
    /// Manifests: IngressClasses, Ingresses, Services, EndpointSlices, Pods, TLS Secrets (files or directories).
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true, num_args = 1..)]
    paths: Vec<PathBuf>,
    /// Plain HTTP address.
    #[arg(long, value_name = "ADDR:PORT")]
    http: Option<SocketAddr>,
    /// HTTPS address (certificates by SNI from the Ingresses' TLS Secrets).
    #[arg(long, value_name = "ADDR:PORT")]
    https: Option<SocketAddr>,
    /// Act for IngressClasses whose spec.controller is this.
    #[arg(long, default_value = DEFAULT_INGRESS_CONTROLLER)]
    ingress_controller: String,
    /// Act for GatewayClasses whose spec.controllerName is this (Gateway API: not served yet).
    #[arg(long, default_value = DEFAULT_GATEWAY_CONTROLLER)]
    gateway_controller: String,
}

pub fn run(cmd: GatewayCommand) -> Result<ExitCode> {
    match cmd {
        GatewayCommand::Serve(a) => serve(a),
    }
}

fn build(paths: &[PathBuf], controller: &str) -> Result<Snapshot> {
    let state = model::load_cluster(paths)?;
    let snapshot = Snapshot::build(&state, controller);
    for p in &snapshot.problems {
        eprintln!("podnet gateway: {p}");
    }
    Ok(snapshot)
}

fn serve(a: ServeArgs) -> Result<ExitCode> {
    if a.http.is_none() && a.https.is_none() {
        bail!("give --http ADDR:PORT, --https ADDR:PORT or both");
    }
    let _ = &a.gateway_controller;
    let shared = Shared::new(build(&a.paths, &a.ingress_controller)?);
    // One core, as the benchmark compares it with one nginx worker.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async move {
        let mut listening = Vec::new();
        let mut servers = tokio::task::JoinSet::new();
        if let Some(addr) = a.http {
            let l = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
            listening.push(format!("http://{}", l.local_addr()?));
            servers.spawn(gateway::server::serve_http(l, Arc::clone(&shared)));
        }
        if let Some(addr) = a.https {
            let l = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
            listening.push(format!("https://{}", l.local_addr()?));
            servers.spawn(gateway::server::serve_https(l, Arc::clone(&shared)));
        }
        eprintln!("podnet gateway: serving on {}", listening.join(" "));
        let (paths, controller) = (a.paths.clone(), a.ingress_controller.clone());
        let watcher = Arc::clone(&shared);
        servers.spawn(async move {
            let mut seen = crate::watch::fingerprint(&paths);
            loop {
                tokio::time::sleep(crate::watch::PERIOD).await;
                let now = crate::watch::fingerprint(&paths);
                if now == seen {
                    continue;
                }
                seen = now;
                match build(&paths, &controller) {
                    Ok(snapshot) => watcher.swap(snapshot),
                    Err(e) => eprintln!("podnet gateway: keeping the last good objects: {e:#}"),
                }
            }
        });
        if let Some(r) = servers.join_next().await {
            r.context("a server task")?.context("serving")?;
        }
        bail!("the gateway stopped")
    })
}
