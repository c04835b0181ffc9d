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
    Serve(Box<ServeArgs>),
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
    /// Without them, the API server's objects (Ingresses, IngressClasses, Secrets, Services, EndpointSlices, Pods).
    #[arg(short = 'f', long = "filename", value_name = "PATH", num_args = 1.., conflicts_with = "kubeconfig")]
    paths: Vec<PathBuf>,
    /// Serve the API server's objects, reached with this kubeconfig (without `-f` and without
    /// it: the pod's service account in a cluster, else $KUBECONFIG or ~/.kube/config).
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// With the API server: write this Service's addresses into the status of the Ingresses
    /// served (ingress-nginx's `--publish-service`).
    #[arg(long, value_name = "NAMESPACE/NAME", conflicts_with_all = ["paths", "publish_status_address"])]
    publish_service: Option<crate::ingress_status::Publish>,
    /// With the API server: write these addresses into the status of the Ingresses served
    /// (ingress-nginx's `--publish-status-address`).
    #[arg(long, value_name = "ADDR", value_delimiter = ',', conflicts_with = "paths")]
    publish_status_address: Vec<String>,
    /// The Lease the controller replicas elect the status writer with (ingress-nginx's `--election-id`).
    #[arg(long, default_value = "ingress-nginx-leader")]
    election_id: String,
    /// The Lease's namespace (default: $POD_NAMESPACE, else `default`).
    #[arg(long, value_name = "NAMESPACE")]
    election_namespace: Option<String>,
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
        GatewayCommand::Serve(a) => serve(*a),
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

/// Where the controller's objects come from.
enum Source {
    Files(Vec<PathBuf>),
    Api { client: kube::Client, stores: Box<agent::source::Stores>, changed: Arc<tokio::sync::Notify> },
}

/// The ingress controller's settings, owned (the serving task outlives `ServeArgs`' borrow).
#[derive(Clone)]
struct Acting {
    controller: String,
    class: String,
    gateway_controller: String,
}

impl Acting {
    fn ingress(&self) -> gateway::ingress::Controller<'_> {
        gateway::ingress::Controller { controller: &self.controller, class: &self.class }
    }
}

fn snapshot_of(state: &model::ClusterState, acting: &Acting, announce: bool) -> Snapshot {
    if announce {
        // Which Ingresses are served, and why the others are not, once at start.
        for ing in &state.ingresses {
            match gateway::ingress::selected(state, acting.ingress(), ing) {
                Ok(()) => eprintln!("podnet gateway: serving Ingress {}/{}", ing.namespace, ing.name),
                Err(why) => eprintln!("podnet gateway: ignoring Ingress {}/{}: {why}", ing.namespace, ing.name),
            }
        }
    }
    let snapshot = Snapshot::build(state, acting.ingress(), &acting.gateway_controller);
    for p in &snapshot.problems {
        eprintln!("podnet gateway: {p}");
    }
    snapshot
}

fn serve(a: ServeArgs) -> Result<ExitCode> {
    if a.http.is_none() && a.https.is_none() {
        bail!("give --http ADDR:PORT, --https ADDR:PORT or both");
    }
    let acting = Acting { controller: a.ingress_controller.clone(), class: a.ingress_class.clone(), gateway_controller: a.gateway_controller.clone() };
    // One core, as the benchmark compares it with one nginx worker.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async move {
        let source = if a.paths.is_empty() {
            let client = crate::agent_cmd::client(a.kubeconfig.as_ref()).await?;
            let changed = Arc::new(tokio::sync::Notify::new());
            let mut stores = agent::source::Stores::start_for_ingress(&client, &changed);
            stores.ready().await.map_err(|e| anyhow::anyhow!("watching the API server: {e}"))?;
            match stores.watch_gateway_api(&client, &changed).await {
                0 => eprintln!("podnet gateway: the API server serves no Gateway API kinds (their CRDs are not installed): Ingresses only"),
                n => eprintln!("podnet gateway: watching {n} Gateway API kinds"),
            }
            Source::Api { client, stores: Box::new(stores), changed }
        } else {
            Source::Files(a.paths.clone())
        };
        let first = match &source {
            Source::Files(paths) => snapshot_of(&model::load_cluster_served(paths)?, &acting, true),
            Source::Api { stores, .. } => snapshot_of(&stores.snapshot()?, &acting, true),
        };
        let shared = Shared::new(first);
        shared.access_log.store(!a.no_access_log, std::sync::atomic::Ordering::Relaxed);
        shared.client_header_timeout_ms.store(a.client_header_timeout * 1000, std::sync::atomic::Ordering::Relaxed);
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
        let watcher = Arc::clone(&shared);
        match source {
            Source::Files(paths) => {
                servers.spawn(follow_files(paths, acting, watcher));
            }
            Source::Api { client, stores, changed } => {
                let publish = match (a.publish_service, a.publish_status_address.is_empty()) {
                    (Some(service), _) => Some(service),
                    (None, false) => Some(crate::ingress_status::Publish::Addresses(a.publish_status_address.clone())),
                    (None, true) => None,
                };
                let leading = Arc::new(std::sync::atomic::AtomicBool::new(false));
                // One replica writes status (Ingress and Gateway API): the Lease's holder.
                let namespace = a.election_namespace.clone().or_else(|| std::env::var("POD_NAMESPACE").ok()).unwrap_or_else(|| "default".into());
                let identity = std::env::var("POD_NAME")
                    .unwrap_or_else(|_| format!("{}-{}", std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim(), std::process::id()));
                let elector = agent::leader::Elector::new(&client, &namespace, &a.election_id, &identity);
                tokio::spawn(elector.run(Arc::clone(&leading)));
                if publish.is_none() {
                    eprintln!("podnet gateway: no --publish-service or --publish-status-address: Ingress status is not written, Gateways get no address");
                }
                servers.spawn(follow_api(client, *stores, changed, acting, watcher, publish, leading));
            }
        }
        if let Some(r) = servers.join_next().await {
            r.context("a server task")?.context("serving")?;
        }
        bail!("the gateway stopped")
    })
}

/// Serves each change of the files: the whole route snapshot is swapped (requests in flight
/// finish on the old one).
async fn follow_files(paths: Vec<PathBuf>, acting: Acting, watcher: Arc<Shared>) -> std::io::Result<()> {
    let mut seen = crate::watch::fingerprint(&paths);
    loop {
        tokio::time::sleep(crate::watch::PERIOD).await;
        let now = crate::watch::fingerprint(&paths);
        if now == seen {
            continue;
        }
        seen = now;
        // Built off the serving thread: a thousand Ingresses take tens of milliseconds.
        let (p, acting) = (paths.clone(), acting.clone());
        let built = tokio::task::spawn_blocking(move || model::load_cluster_served(&p).map(|state| snapshot_of(&state, &acting, false))).await;
        match built {
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
}

/// How often the leader looks at the Ingresses' status even without a change (it may have just
/// been elected).
const STATUS_RESYNC: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves each change of the API server's objects, and (the leader) writes Ingress status.
async fn follow_api(
    client: kube::Client,
    stores: agent::source::Stores,
    changed: Arc<tokio::sync::Notify>,
    acting: Acting,
    watcher: Arc<Shared>,
    publish: Option<crate::ingress_status::Publish>,
    leading: Arc<std::sync::atomic::AtomicBool>,
) -> std::io::Result<()> {
    let mut state = stores.snapshot().ok();
    loop {
        let was_change = tokio::select! {
            () = changed.notified() => true,
            () = tokio::time::sleep(STATUS_RESYNC) => false,
        };
        if was_change {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            match stores.snapshot() {
                Ok(s) => {
                    watcher.swap(snapshot_of(&s, &acting, false));
                    state = Some(s);
                }
                Err(e) => {
                    watcher.last_reload_ok.store(false, std::sync::atomic::Ordering::Relaxed);
                    eprintln!("podnet gateway: keeping the last good objects: {e}");
                }
            }
        }
        if let Some(state) = &state
            && leading.load(std::sync::atomic::Ordering::SeqCst)
        {
            let addresses = publish.as_ref().map(|p| crate::ingress_status::published(p, &stores.services())).unwrap_or_default();
            if publish.is_some() {
                let written = crate::ingress_status::write(&client, state, acting.ingress(), &addresses).await;
                if written > 0 {
                    eprintln!("podnet gateway: wrote the status of {written} Ingress(es)");
                }
            }
            let compiled = gateway::httproute::compile(state, &acting.gateway_controller);
            let written = crate::gateway_api_status::write(&client, &stores, &compiled.status, &acting.gateway_controller, &addresses).await;
            if written > 0 {
                eprintln!("podnet gateway: wrote the status of {written} Gateway API object(s)");
            }
        }
    }
}
