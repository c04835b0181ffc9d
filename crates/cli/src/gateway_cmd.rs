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
pub const DEFAULT_INGRESS_CONTROLLER: &str = "k8s.io/ingress-nginx";
/// ingress-nginx's default `--ingress-class`.
pub const DEFAULT_INGRESS_CLASS: &str = "nginx";
/// The Gateway API controller name (GatewayClass `spec.controllerName`).
pub const DEFAULT_GATEWAY_CONTROLLER: &str = "podnet.io/gateway-controller";

#[derive(Subcommand)]
pub enum GatewayCommand {
    /// Serve HTTP and HTTPS for the Ingresses and Gateway API routes in manifest files.
    Serve(ServeArgs),
    /// The status the controller writes back to GatewayClasses, Gateways and HTTPRoutes, as kubectl shows it.
    Status(StatusArgs),
}

#[derive(Args)]
pub struct StatusArgs {
    /// Manifests (files or directories).
    #[arg(short = 'f', long = "filename", value_name = "PATH", num_args = 1.., required_unless_present = "lab", conflicts_with = "lab")]
    paths: Vec<PathBuf>,
    /// A running lab's Gateway API objects instead (its controller pods act for
    /// `podnet.io/gateway-controller`; Gateways get the controller's load balancer address).
    #[arg(long, value_name = "NAME")]
    lab: Option<lab::LabName>,
    /// Act for GatewayClasses whose spec.controllerName is this.
    #[arg(long, default_value = DEFAULT_GATEWAY_CONTROLLER)]
    gateway_controller: String,
    /// Output: a table (default) or the status stanzas as YAML.
    #[arg(short = 'o', long, value_parser = ["yaml"])]
    output: Option<String>,
}

#[derive(Args)]
pub struct ServeArgs {
    /// Manifests: IngressClasses, Ingresses, GatewayClasses, Gateways, HTTPRoutes, ReferenceGrants, Services, EndpointSlices, Pods, TLS Secrets (files or directories).
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true, num_args = 1..)]
    paths: Vec<PathBuf>,
    /// Plain HTTP address.
    #[arg(long, value_name = "ADDR:PORT")]
    http: Option<SocketAddr>,
    /// HTTPS address (certificates by SNI from the Ingresses' TLS Secrets).
    #[arg(long, value_name = "ADDR:PORT")]
    https: Option<SocketAddr>,
    /// Act for IngressClasses whose spec.controller is this (ingress-nginx's `--controller-class`).
    #[arg(long, default_value = DEFAULT_INGRESS_CONTROLLER)]
    ingress_controller: String,
    /// Also serve Ingresses of this class name when no IngressClass of that name exists
    /// (ingress-nginx's `--ingress-class`, whose IngressClass its chart makes).
    #[arg(long, default_value = DEFAULT_INGRESS_CLASS)]
    ingress_class: String,
    /// Act for GatewayClasses whose spec.controllerName is this.
    #[arg(long, default_value = DEFAULT_GATEWAY_CONTROLLER)]
    gateway_controller: String,
    /// Write no access log (as nginx's `access_log off`).
    #[arg(long)]
    no_access_log: bool,
    /// Serve `/metrics` (ingress-nginx's names) and `/healthz` on this address.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<SocketAddr>,
    /// Seconds a client has to send a request head, idle keep-alive time included
    /// (ingress-nginx's `client-header-timeout`); slower connections are closed.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    client_header_timeout: u64,
}

pub fn run(cmd: GatewayCommand) -> Result<ExitCode> {
    match cmd {
        GatewayCommand::Serve(a) => serve(a),
        GatewayCommand::Status(a) => status(a),
    }
}

/// Conditions as the API shows them; `generation` (the object's `metadata.generation`, when it
/// has one) is what they were observed at.
fn conditions_yaml(out: &mut String, indent: &str, conditions: &[gateway::httproute::Condition], generation: Option<i64>) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "{indent}conditions:");
    for c in conditions {
        let _ = writeln!(
            out,
            "{indent}- type: {}\n{indent}  status: \"{}\"\n{indent}  reason: {}\n{indent}  message: {:?}",
            c.type_,
            if c.status { "True" } else { "False" },
            c.reason,
            c.message
        );
        if let Some(g) = generation {
            let _ = writeln!(out, "{indent}  observedGeneration: {g}");
        }
    }
}

fn summary(conditions: &[gateway::httproute::Condition]) -> String {
    conditions.iter().map(|c| format!("{}={}({})", c.type_, if c.status { "True" } else { "False" }, c.reason)).collect::<Vec<_>>().join(" ")
}

fn status(a: StatusArgs) -> Result<ExitCode> {
    use std::fmt::Write as _;
    let (state, controller, address) = match &a.lab {
        Some(name) => {
            let st = lab::state::load(name)?;
            // The controller pods are reached at their LoadBalancer Service's address.
            let address = st
                .services
                .iter()
                .find(|s| {
                    s.metadata.namespace.as_deref() == Some(lab::system::INGRESS_NAMESPACE)
                        && s.metadata.name.as_deref() == Some(lab::system::INGRESS_CONTROLLER)
                })
                .and_then(|s| s.status.as_ref()?.load_balancer.as_ref()?.ingress.as_ref()?.first()?.ip.clone());
            (lab::ingress_controller::view(&st), lab::system::GATEWAY_CONTROLLER.to_owned(), address)
        }
        None => (model::load_cluster(&a.paths)?, a.gateway_controller.clone(), None),
    };
    let compiled = gateway::httproute::compile(&state, &controller);
    let s = &compiled.status;
    let mut out = String::new();
    if a.output.is_some() {
        for (name, c) in &s.classes {
            let _ = writeln!(out, "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata:\n  name: {name}\nstatus:");
            let generation = state.gateway_classes.iter().find(|g| g.metadata.name.as_deref() == Some(name.as_str())).and_then(|g| g.metadata.generation);
            conditions_yaml(&mut out, "  ", c, generation);
        }
        for ((ns, name), (c, listeners)) in &s.gateways {
            let generation = state.gateways.iter().find(|g| (&g.namespace, &g.name) == (ns, name)).and_then(|g| g.object.metadata.generation);
            let _ = writeln!(out, "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: {name}\n  namespace: {ns}\nstatus:");
            if let Some(ip) = &address {
                let _ = writeln!(out, "  addresses:\n  - type: IPAddress\n    value: {ip}");
            }
            conditions_yaml(&mut out, "  ", c, generation);
            let _ = writeln!(out, "  listeners:");
            for (l, lc, attached) in listeners {
                let _ = writeln!(
                    out,
                    "  - name: {l}\n    attachedRoutes: {attached}\n    supportedKinds:\n    - group: gateway.networking.k8s.io\n      kind: HTTPRoute"
                );
                conditions_yaml(&mut out, "    ", lc, generation);
            }
        }
        for ((ns, name), parents) in &s.routes {
            let generation = state.http_routes.iter().find(|r| (&r.namespace, &r.name) == (ns, name)).and_then(|r| r.object.metadata.generation);
            let _ = writeln!(
                out,
                "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: {name}\n  namespace: {ns}\nstatus:\n  parents:"
            );
            for (p, c) in parents {
                let _ = writeln!(
                    out,
                    "  - parentRef:\n      name: {}\n      namespace: {}\n    controllerName: {controller}",
                    p.name,
                    p.namespace.as_deref().unwrap_or(ns)
                );
                if let Some(section) = &p.section_name {
                    let _ = writeln!(out, "      sectionName: {section}");
                }
                conditions_yaml(&mut out, "    ", c, generation);
            }
        }
    } else {
        out.push_str("KIND\tNAMESPACE\tNAME\tCONDITIONS\n");
        for (name, c) in &s.classes {
            let _ = writeln!(out, "GatewayClass\t-\t{name}\t{}", summary(c));
        }
        for ((ns, name), (c, listeners)) in &s.gateways {
            let _ = writeln!(out, "Gateway\t{ns}\t{name}\t{}{}", summary(c), address.as_ref().map(|ip| format!(" address={ip}")).unwrap_or_default());
            for (l, lc, attached) in listeners {
                let _ = writeln!(out, "  listener\t{ns}\t{name}/{l}\t{} attachedRoutes={attached}", summary(lc));
            }
        }
        for ((ns, name), parents) in &s.routes {
            for (p, c) in parents {
                let _ = writeln!(out, "HTTPRoute\t{ns}\t{name} → {}\t{}", p.name, summary(c));
            }
        }
        out = crate::lab_cmd::align(&out);
    }
    out!("{out}");
    Ok(ExitCode::SUCCESS)
}

fn build(paths: &[PathBuf], ingress: gateway::ingress::Controller<'_>, gateway_controller: &str, announce: bool) -> Result<Snapshot> {
    let state = model::load_cluster_served(paths)?;
    if announce {
        // Which Ingresses are served, and why the others are not, once at start.
        for ing in &state.ingresses {
            match gateway::ingress::selected(&state, ingress, ing) {
                Ok(()) => eprintln!("podnet gateway: serving Ingress {}/{}", ing.namespace, ing.name),
                Err(why) => eprintln!("podnet gateway: ignoring Ingress {}/{}: {why}", ing.namespace, ing.name),
            }
        }
    }
    let snapshot = Snapshot::build(&state, ingress, gateway_controller);
    for p in &snapshot.problems {
        eprintln!("podnet gateway: {p}");
    }
    Ok(snapshot)
}

fn serve(a: ServeArgs) -> Result<ExitCode> {
    if a.http.is_none() && a.https.is_none() {
        bail!("give --http ADDR:PORT, --https ADDR:PORT or both");
    }
    let ingress = gateway::ingress::Controller { controller: &a.ingress_controller, class: &a.ingress_class };
    let shared = Shared::new(build(&a.paths, ingress, &a.gateway_controller, true)?);
    shared.access_log.store(!a.no_access_log, std::sync::atomic::Ordering::Relaxed);
    shared.client_header_timeout_ms.store(a.client_header_timeout * 1000, std::sync::atomic::Ordering::Relaxed);
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
        if let Some(addr) = a.metrics {
            let l = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
            listening.push(format!("metrics=http://{}", l.local_addr()?));
            servers.spawn(gateway::server::serve_metrics(l, Arc::clone(&shared)));
        }
        eprintln!("podnet gateway: serving on {}", listening.join(" "));
        let (paths, controller, class, gateway_controller) =
            (a.paths.clone(), a.ingress_controller.clone(), a.ingress_class.clone(), a.gateway_controller.clone());
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
                // Built off the serving thread: a thousand Ingresses take tens of milliseconds.
                let (p, c, k, g) = (paths.clone(), controller.clone(), class.clone(), gateway_controller.clone());
                match tokio::task::spawn_blocking(move || build(&p, gateway::ingress::Controller { controller: &c, class: &k }, &g, false)).await {
                    // A snapshot with a broken certificate is served, but not a successful reload.
                    Ok(Ok(snapshot)) => watcher.swap(snapshot),
                    Ok(Err(e)) => {
                        watcher.last_reload_ok.store(false, std::sync::atomic::Ordering::Relaxed);
                        eprintln!("podnet gateway: keeping the last good objects: {e:#}");
                    }
                    Err(e) => {
                        watcher.last_reload_ok.store(false, std::sync::atomic::Ordering::Relaxed);
                        eprintln!("podnet gateway: keeping the last good objects: {e}");
                    }
                }
            }
        });
        if let Some(r) = servers.join_next().await {
            r.context("a server task")?.context("serving")?;
        }
        bail!("the gateway stopped")
    })
}
