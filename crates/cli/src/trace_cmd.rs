//! `podnet trace FROM TO`: the seed's debugging walk — DNS, endpoints, proxy rules, NetworkPolicy,
//! pod health — as one command. In a lab every step is answered by the real thing: a DNS query
//! from the pod through its resolv.conf, one real connection traced by the nodes' kernels
//! (`lab::nftrace`), the endpoint's own answer. With `-f`, from manifests alone (no kernel: the
//! proxy step is the node plan's trace and the pod step is skipped).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use clap::{Args, ValueEnum};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use model::{ClusterState, PodInfo, Protocol};
use policy::{Connection, Endpoint, Evaluator, Explanation};
use serde::Serialize;
use serde_json::{Value, json};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TraceFormat {
    /// For people.
    Text,
    /// `{"from", "to", "steps": [...], "broken"}`.
    Json,
}

#[derive(Args)]
pub struct TraceArgs {
    /// The client: POD (in -n's namespace) or NS/POD.
    from: String,
    /// The destination: a Service (`order-service`, `order-service.production`, a full DNS
    /// name), `SERVICE:PORT-NAME`, a pod (NS/POD), or an IP address.
    to: String,
    /// The lab (default: the only one up, else `podnet`).
    #[arg(long)]
    name: Option<lab::LabName>,
    /// The client's namespace when FROM is a bare pod name.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Destination port, `PORT[/PROTO]` (a Service port, or the pod's; default: the only or first).
    #[arg(long, value_parser = crate::policy_cmd::parse_port)]
    port: Option<policy::PortKey>,
    /// Trace from manifests instead of a lab (no kernel).
    #[arg(short = 'f', long = "filename", value_name = "PATH", num_args = 1.., conflicts_with = "name")]
    paths: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    output: TraceFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Broken,
    Skipped,
}

#[derive(Debug, Serialize)]
struct Step {
    name: &'static str,
    status: Status,
    summary: String,
    details: Value,
    /// The smallest fix, for a broken step (in the text output after the summary).
    #[serde(skip)]
    fix: Option<String>,
}

fn step(name: &'static str, status: Status, summary: impl Into<String>, details: Value) -> Step {
    Step { name, status, summary: summary.into(), details, fix: None }
}

#[derive(Serialize)]
struct Report {
    from: String,
    to: String,
    steps: Vec<Step>,
    broken: Option<&'static str>,
}

/// What TO names.
enum Target {
    /// A Service name as written (resolved through DNS), with a port name if `:NAME` was given.
    Service { text: String, port_name: Option<String> },
    /// A pod.
    Pod(usize),
    /// An address.
    Ip(IpAddr),
    /// A Service's ClusterIP, given as an address.
    ClusterIp(IpAddr),
}

/// Where the checks run: a lab, or manifests.
enum Cluster {
    Lab { st: Box<lab::state::LabState> },
    Offline,
}

pub fn run(a: TraceArgs) -> Result<ExitCode> {
    match trace(&a) {
        Ok(report) => {
            let broken = report.broken.is_some();
            match a.output {
                TraceFormat::Json => outln!("{}", serde_json::to_string_pretty(&report)?),
                TraceFormat::Text => print_text(&report),
            }
            Ok(if broken { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(2))
        }
    }
}

/// One lab trace for the browser view (`lab ui`): the report as `-o json` prints it, with the
/// broken step's fix beside it.
pub(crate) fn lab_trace_json(lab: &lab::LabName, from: &str, to: &str) -> Result<Value> {
    let args = TraceArgs {
        from: from.to_owned(),
        to: to.to_owned(),
        name: Some(lab.clone()),
        namespace: "default".into(),
        port: None,
        paths: Vec::new(),
        output: TraceFormat::Json,
    };
    let report = trace(&args)?;
    let mut v = serde_json::to_value(&report)?;
    v["fix"] = json!(report.broken.and_then(|b| report.steps.iter().find(|s| s.name == b)).and_then(|s| s.fix.clone()));
    Ok(v)
}

fn print_text(r: &Report) {
    outln!("trace {} → {}", r.from, r.to);
    for s in &r.steps {
        let mark = match s.status {
            Status::Ok => "✓",
            Status::Broken => "✗",
            Status::Skipped => "-",
        };
        outln!(" {mark} {:<10} {}", s.name, s.summary);
    }
    match r.broken.and_then(|b| r.steps.iter().find(|s| s.name == b)) {
        Some(s) => outln!("broken: {}{}", s.name, s.fix.as_ref().map(|f| format!(" — fix: {f}")).unwrap_or_default()),
        None => outln!("every step is ok"),
    }
}

fn trace(a: &TraceArgs) -> Result<Report> {
    let (cluster, view) = if a.paths.is_empty() {
        let lab = crate::lab_cmd::which_lab(a.name.as_ref())?;
        let st = lab::state::load(&lab)?;
        lab::daemon::require_running(&lab)?;
        let view = st.cluster_view();
        (Cluster::Lab { st: Box::new(st) }, view)
    } else {
        (Cluster::Offline, model::load_cluster_served(&a.paths)?)
    };
    let policies = policy::PolicySet::compile(&view)
        .map_err(|errors| anyhow!("invalid NetworkPolicy: {}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")))?;
    let evaluator = Evaluator::new(&view, &policies);
    let from = find_pod(&view, &a.from, &a.namespace).ok_or_else(|| anyhow!("FROM: no pod {} (give NS/POD or -n NS)", a.from))?;
    let client = &view.pods[from];
    // Manifests may give pods no address (status.podIP): offline, the walk goes on without it.
    let client_ip = policy::enforce::pod_ipv4(client);
    if client_ip.is_none() && matches!(cluster, Cluster::Lab { .. }) {
        bail!("FROM: {} has no address yet", client.key());
    }
    let target = parse_target(&view, &a.to, &client.namespace)?;
    let mut steps = Vec::new();

    // 1. dns
    let (service, dns_step) = match &target {
        Target::Service { text, .. } => dns_step(&cluster, &view, client, text),
        _ => (None, step("dns", Status::Skipped, "not a name: nothing to resolve", json!({}))),
    };
    steps.push(dns_step);

    // 2. endpoints, and where the connection goes.
    let (dest, port, protocol, endpoint_step) = match &target {
        Target::Service { text, port_name } => {
            let service = service.or_else(|| guess_service(&view, text, &client.namespace));
            endpoints_step(&view, service, port_name.as_deref(), a.port)
        }
        Target::ClusterIp(ip) => endpoints_step(&view, service_with_ip(&view, *ip), None, a.port),
        Target::Pod(i) => {
            let pod = &view.pods[*i];
            let (port, protocol) = match a.port {
                Some(p) => p,
                None => pod.ports.first().map(|p| (p.port, p.protocol)).ok_or_else(|| anyhow!("TO: {} declares no port: give --port", pod.key()))?,
            };
            let ip = policy::enforce::pod_ipv4(pod).map(IpAddr::V4);
            (ip, port, protocol, step("endpoints", Status::Skipped, "a pod, not a Service", json!({})))
        }
        Target::Ip(ip) => {
            let (port, protocol) = a.port.ok_or_else(|| anyhow!("TO is an address: give --port PORT[/PROTO]"))?;
            (Some(*ip), port, protocol, step("endpoints", Status::Skipped, "an address, not a Service", json!({})))
        }
    };
    steps.push(endpoint_step);
    let is_service = matches!(target, Target::Service { .. } | Target::ClusterIp(_));
    let to_text = match (&target, dest) {
        (Target::Service { text, .. }, Some(ip)) => format!("{text} ({ip}:{port}/{protocol})"),
        (_, Some(ip)) => format!("{} ({ip}:{port}/{protocol})", a.to),
        (_, None) => a.to.clone(),
    };

    // 3.-5. One real connection, traced by the kernel (lab), or the node plan (offline).
    // Offline, the pod a Service or TO names stands for the endpoint when nobody has an address.
    let named_pod = match &target {
        Target::Pod(i) => Some(&view.pods[*i]),
        _ => steps[1].details["pods"].as_array().and_then(|pods| pods.iter().find(|p| p["ready"] == true)).and_then(|p| {
            let key = p["pod"].as_str()?;
            view.pods.iter().find(|q| q.key() == key)
        }),
    };
    match (&cluster, dest, client_ip) {
        (Cluster::Lab { st, .. }, Some(IpAddr::V4(ip)), Some(client_ip)) => {
            let netns = st.plan.pods[from].netns.clone();
            let (outcome, traces) = lab::nftrace::trace(st, &netns, client_ip, SocketAddr::from((ip, port)), protocol, Duration::from_millis(1500))?;
            let node = client.node_name.clone().unwrap_or_default();
            let (proxy, endpoint) = proxy_step_from_kernel(&traces, &node, ip, port, is_service);
            steps.push(proxy);
            let endpoint = endpoint.or_else(|| (!is_service).then_some((IpAddr::V4(ip), port)));
            steps.push(policy_step(&view, &evaluator, client, endpoint.map(|(ip, p)| (Destination::Address(ip), p)), protocol, Some(&traces)));
            steps.push(pod_step_in_lab(st, &view, endpoint, protocol, &outcome));
        }
        (Cluster::Offline, dest, client_ip) => {
            let node = client.node_name.clone().or_else(|| view.nodes.first().and_then(|n| n.metadata.name.clone())).unwrap_or_else(|| "node".into());
            // The node plan needs the client's Node among the manifests.
            let plan = view
                .nodes
                .iter()
                .any(|n| n.metadata.name.as_deref() == Some(node.as_str()))
                .then(|| proxy::plan(&view, &node, &proxy::ProxyConfig::default()))
                .transpose()?;
            let traced = match (dest, client_ip, &plan) {
                (Some(ip), Some(src), Some(plan)) if plan.ports.iter().any(|p| !p.cluster.is_empty()) || !is_service => {
                    Some(plan.trace(IpAddr::V4(src), ip, port, protocol))
                }
                _ => None,
            };
            let (proxy, endpoint) = match (is_service, traced) {
                (true, Some(t)) => {
                    let endpoint = t.endpoints.first().and_then(|e| e.parse::<SocketAddr>().ok()).map(|s| (s.ip(), s.port()));
                    let status = if t.verdict == "DNAT" { Status::Ok } else { Status::Broken };
                    let summary =
                        format!("{} (the node plan, offline): {}{}", t.verdict, t.endpoints.join(", "), if t.masquerade { ", masqueraded" } else { "" });
                    (step("proxy", status, summary, json!({"verdict": t.verdict, "endpoints": t.endpoints, "masquerade": t.masquerade})), endpoint)
                }
                (true, None) => (
                    step("proxy", Status::Skipped, "offline without the client's Node or the pods' addresses (status.podIP): no node plan to trace", json!({})),
                    None,
                ),
                (false, _) => (step("proxy", Status::Skipped, "not a Service address", json!({})), dest.map(|ip| (ip, port))),
            };
            steps.push(proxy);
            let judged = match (endpoint, named_pod) {
                (Some((ip, p)), _) => Some((Destination::Address(ip), p)),
                (None, Some(pod)) => {
                    let p = steps[1].details["pods"].as_array().and_then(|ps| ps.iter().find(|q| q["pod"] == pod.key())).and_then(|q| q["port"].as_u64());
                    Some((Destination::Pod(pod), p.and_then(|p| u16::try_from(p).ok()).unwrap_or(port)))
                }
                (None, None) => None,
            };
            steps.push(policy_step(&view, &evaluator, client, judged, protocol, None));
            steps.push(step("pod", Status::Skipped, "offline: no pod to connect to", json!({})));
        }
        _ => {
            for name in ["proxy", "policy", "pod"] {
                steps.push(step(name, Status::Skipped, "no address to connect to", json!({})));
            }
        }
    }
    let broken = steps.iter().find(|s| s.status == Status::Broken).map(|s| s.name);
    Ok(Report { from: client.key(), to: to_text, steps, broken })
}

fn find_pod(view: &ClusterState, text: &str, namespace: &str) -> Option<usize> {
    let (ns, name) = text.split_once('/').unwrap_or((namespace, text));
    view.pods.iter().position(|p| p.namespace == ns && p.name == name && !p.host_network)
}

fn parse_target(view: &ClusterState, text: &str, client_ns: &str) -> Result<Target> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(if service_with_ip(view, ip).is_some() { Target::ClusterIp(ip) } else { Target::Ip(ip) });
    }
    if text.contains('/') {
        return find_pod(view, text, client_ns).map(Target::Pod).ok_or_else(|| anyhow!("TO: no pod {text}"));
    }
    let (name, port_name) = match text.split_once(':') {
        Some((n, p)) => (n, Some(p.to_owned())),
        None => (text, None),
    };
    if name.is_empty() || name.contains(char::is_whitespace) {
        bail!("TO: {text:?} is not a Service name, NS/POD or an address");
    }
    Ok(Target::Service { text: name.to_owned(), port_name })
}

/// The names a pod's resolver asks, in order (ndots 5, the search path of its namespace).
fn candidates(name: &str, searches: &[String], ndots: usize) -> Vec<String> {
    if let Some(absolute) = name.strip_suffix('.') {
        return vec![format!("{absolute}.")];
    }
    let mut out = Vec::new();
    if name.matches('.').count() >= ndots {
        out.push(format!("{name}."));
    }
    out.extend(searches.iter().map(|s| format!("{name}.{}.", s.trim_end_matches('.'))));
    if !out.contains(&format!("{name}.")) {
        out.push(format!("{name}."));
    }
    out
}

fn service_with_ip(view: &ClusterState, ip: IpAddr) -> Option<&model::Namespaced<Service>> {
    view.services.iter().find(|s| s.object.spec.as_ref().and_then(|sp| sp.cluster_ip.as_deref()).and_then(|c| c.parse::<IpAddr>().ok()) == Some(ip))
}

fn guess_service<'a>(view: &'a ClusterState, text: &str, client_ns: &str) -> Option<&'a model::Namespaced<Service>> {
    let mut labels = text.trim_end_matches('.').split('.');
    let name = labels.next()?;
    let ns = labels.next().unwrap_or(client_ns);
    view.services.iter().find(|s| s.name == name && s.namespace == ns)
}

fn dns_step<'a>(cluster: &Cluster, view: &'a ClusterState, client: &PodInfo, text: &str) -> (Option<&'a model::Namespaced<Service>>, Step) {
    let zone = lab::system::CLUSTER_DOMAIN;
    let default_search = vec![format!("{}.svc.{zone}", client.namespace), format!("svc.{zone}"), zone.to_owned()];
    let mut asked = Vec::new();
    let answered: Option<(String, Vec<IpAddr>, String)> = match cluster {
        Cluster::Lab { st, .. } => {
            let netns = st.plan.pods.iter().find(|p| p.namespace == client.namespace && p.name == client.name).map(|p| p.netns.clone()).unwrap_or_default();
            let resolv = lab::resolv::parse(&std::fs::read_to_string(format!("/etc/netns/{netns}/resolv.conf")).unwrap_or_default());
            let (search, ndots) = (resolv.searches.clone(), resolv.ndots());
            let server = resolv.nameservers.iter().find_map(|n| n.parse().ok()).unwrap_or(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)));
            let mut found = None;
            for name in candidates(text, if search.is_empty() { &default_search } else { &search }, ndots) {
                let asked_name = name.clone();
                let result = dataplane::netns::run_in(&dataplane::netns::path_of(&netns), move || {
                    dns::client::lookup_a(SocketAddr::new(server, 53), &asked_name, Duration::from_secs(1))
                });
                match result {
                    Ok(Ok((rcode, ips))) => {
                        asked.push(json!({"name": name, "rcode": rcode, "answers": ips}));
                        if !ips.is_empty() {
                            found = Some((name, ips, server.to_string()));
                            break;
                        }
                    }
                    Ok(Err(e)) | Err(e) => {
                        asked.push(json!({"name": name, "error": e.to_string()}));
                        if matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) {
                            break; // the server does not answer: the next name would not either
                        }
                    }
                }
            }
            found
        }
        Cluster::Offline => {
            let mut found = None;
            let records = dns::View::build(view, &dns::ZoneConfig::default(), 1).ok();
            for name in candidates(text, &default_search, 5) {
                let ips: Vec<IpAddr> = records.as_ref().map(|r| offline_a(r, &name)).unwrap_or_default();
                asked.push(json!({"name": name, "answers": ips}));
                if !ips.is_empty() {
                    found = Some((name, ips, "the cluster's records (offline)".to_owned()));
                    break;
                }
            }
            found
        }
    };
    match answered {
        Some((name, ips, server)) => {
            let service = ips.iter().find_map(|ip| service_with_ip(view, *ip));
            let summary = format!("{name} A {} (from {server})", ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "));
            (service, step("dns", Status::Ok, summary, json!({"asked": asked, "server": server, "name": name, "answers": ips})))
        }
        None => {
            let timed_out = asked.iter().any(|a| a.get("error").is_some());
            let mut s = step(
                "dns",
                Status::Broken,
                if timed_out {
                    format!("{text}: the cluster DNS did not answer")
                } else {
                    format!("{text} does not resolve from namespace {}", client.namespace)
                },
                json!({"asked": asked}),
            );
            let short = text.split('.').next().unwrap_or(text);
            let elsewhere: Vec<String> = view.services.iter().filter(|sv| sv.name == short).map(|sv| format!("{}.{}", sv.name, sv.namespace)).collect();
            s.fix = Some(if timed_out {
                format!(
                    "let {} reach the cluster DNS (UDP and TCP 53 to the pods labelled k8s-app=kube-dns): a NetworkPolicy may deny its egress",
                    client.key()
                )
            } else if elsewhere.is_empty() {
                format!("no Service named {short} exists; create it, or check the name")
            } else {
                format!("the Service is {}: use that name", elsewhere.join(" or "))
            });
            (None, s)
        }
    }
}

/// The A records the cluster DNS gives for a name, from the cluster's records.
fn offline_a(built: &dns::View, fqdn: &str) -> Vec<IpAddr> {
    use hickory_proto::rr::{Name, RData, RecordType};
    let Ok(name) = Name::from_ascii(fqdn) else { return Vec::new() };
    match built.lookup(&name, RecordType::A) {
        dns::lookup::Lookup::Answer(a) => a
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                _ => None,
            })
            .collect(),
        dns::lookup::Lookup::NotOurs => Vec::new(),
    }
}

type Resolved = (Option<IpAddr>, u16, Protocol, Step);

fn endpoints_step(view: &ClusterState, service: Option<&model::Namespaced<Service>>, port_name: Option<&str>, port: Option<policy::PortKey>) -> Resolved {
    let Some(svc) = service else {
        return (None, 0, Protocol::Tcp, step("endpoints", Status::Skipped, "no Service to look at", json!({})));
    };
    let spec = svc.object.spec.clone().unwrap_or_default();
    let ports = spec.ports.clone().unwrap_or_default();
    let chosen = match (port_name, port) {
        (Some(n), _) => ports.iter().find(|p| p.name.as_deref() == Some(n)),
        (None, Some((num, proto))) => ports.iter().find(|p| p.port == i32::from(num) && p.protocol.as_deref().unwrap_or("TCP") == proto.as_str()),
        (None, None) => ports.first(),
    };
    let vip = spec.cluster_ip.as_deref().and_then(|c| c.parse::<IpAddr>().ok());
    let key = format!("{}/{}", svc.namespace, svc.name);
    let Some(sp) = chosen else {
        let names: Vec<String> = ports
            .iter()
            .map(|p| format!("{}{}/{}", p.name.as_deref().map(|n| format!("{n}:")).unwrap_or_default(), p.port, p.protocol.as_deref().unwrap_or("TCP")))
            .collect();
        let mut s = step("endpoints", Status::Broken, format!("Service {key} has no such port; it has {}", names.join(", ")), json!({"service": key}));
        s.fix = Some(format!("use one of the Service's ports: {}", names.join(", ")));
        return (vip, 0, Protocol::Tcp, s);
    };
    let protocol: Protocol = sp.protocol.as_deref().unwrap_or("TCP").parse().unwrap_or(Protocol::Tcp);
    let svc_port = u16::try_from(sp.port).unwrap_or(0);
    let Some(selector) = spec.selector.clone().filter(|s| !s.is_empty()) else {
        let given = view
            .endpoint_slices
            .iter()
            .any(|s| s.namespace == svc.namespace && s.object.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")) == Some(&svc.name));
        let status = if given { Status::Ok } else { Status::Broken };
        let mut s = step(
            "endpoints",
            status,
            format!("Service {key} has no selector; {}", if given { "its EndpointSlices are given" } else { "and no EndpointSlice names it" }),
            json!({"service": key}),
        );
        if !given {
            s.fix = Some(format!("give Service {key} a selector, or an EndpointSlice labelled kubernetes.io/service-name={}", svc.name));
        }
        return (vip, svc_port, protocol, s);
    };
    let sel_text: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let sel_text = sel_text.join(",");
    let in_ns: Vec<&PodInfo> = view.pods.iter().filter(|p| p.namespace == svc.namespace && !p.terminal).collect();
    let selected: Vec<&PodInfo> = in_ns.iter().copied().filter(|p| selector.iter().all(|(k, v)| p.labels.get(k) == Some(v))).collect();
    let target = sp.target_port.clone().unwrap_or(IntOrString::Int(sp.port));
    let resolve = |p: &PodInfo| match &target {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => p.named_port(name, protocol),
    };
    let pods: Vec<Value> = selected
        .iter()
        .map(|p| json!({"pod": p.key(), "ip": policy::enforce::pod_ipv4(p), "ready": p.ready.unwrap_or(true) && !p.terminating, "port": resolve(p)}))
        .collect();
    let target_text = match &target {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    };
    let details = json!({"service": key, "selector": sel_text, "port": svc_port, "protocol": protocol.as_str(), "targetPort": target_text, "pods": pods});
    if selected.is_empty() {
        // What the namespace's pods carry for the selector's keys.
        let mut seen: Vec<String> = Vec::new();
        for p in &in_ns {
            for k in selector.keys() {
                if let Some(v) = p.labels.get(k) {
                    let kv = format!("{k}={v}");
                    if !seen.contains(&kv) {
                        seen.push(kv);
                    }
                }
            }
        }
        let summary = if seen.is_empty() {
            format!("no pod matches selector {sel_text}; no pod in {} has the label{}", svc.namespace, if selector.len() > 1 { "s" } else { "" })
        } else {
            format!("no pod matches selector {sel_text}; pods in {} have {}", svc.namespace, seen.join(", "))
        };
        let mut s = step("endpoints", Status::Broken, summary, details);
        s.fix = Some(if seen.is_empty() {
            format!("label the pods {sel_text}, or change Service {key}'s selector")
        } else {
            format!("change Service {key}'s selector to what the pods carry ({})", seen.join(", "))
        });
        return (vip, svc_port, protocol, s);
    }
    let unresolved: Vec<String> = selected.iter().filter(|p| resolve(p).is_none()).map(|p| p.key()).collect();
    let ready: Vec<&&PodInfo> = selected.iter().filter(|p| p.ready.unwrap_or(true) && !p.terminating && resolve(p).is_some()).collect();
    if ready.is_empty() {
        let why = if !unresolved.is_empty() {
            format!("no selected pod declares a port named {target_text} ({protocol}): {}", unresolved.join(", "))
        } else {
            format!("{} pod(s) match {sel_text} but none is ready", selected.len())
        };
        let mut s = step("endpoints", Status::Broken, why, details);
        s.fix = Some(if !unresolved.is_empty() {
            format!("declare containerPort name {target_text} on the pods, or set targetPort to a number")
        } else {
            "make the selected pods ready (see their readiness)".into()
        });
        return (vip, svc_port, protocol, s);
    }
    let list: Vec<String> = ready
        .iter()
        .map(|p| match (policy::enforce::pod_ipv4(p), resolve(p)) {
            (Some(ip), Some(port)) => format!("{ip}:{port}"),
            (None, Some(port)) => format!("{} (port {port}, no address)", p.display_name()),
            _ => p.display_name(),
        })
        .collect();
    let summary = format!(
        "{} of {} pod(s) selected by {sel_text} ready; port {svc_port}/{protocol} → targetPort {target_text}: {}",
        ready.len(),
        selected.len(),
        list.join(", ")
    );
    (vip, svc_port, protocol, step("endpoints", Status::Ok, summary, details))
}

/// The proxy step from the client node's trace: the frontend matched, the endpoint chosen
/// (the destination of the packet after the nat hook), masquerade, REJECT/DROP.
fn proxy_step_from_kernel(traces: &[lab::nftrace::NodeTrace], node: &str, ip: Ipv4Addr, port: u16, service: bool) -> (Step, Option<(IpAddr, u16)>) {
    let lines: Vec<lab::nftrace::TraceLine<'_>> =
        traces.iter().filter(|t| t.node == node).flat_map(|t| t.lines.iter().filter_map(|l| lab::nftrace::parse_line(l))).collect();
    let proxy: Vec<&lab::nftrace::TraceLine<'_>> = lines.iter().filter(|l| l.table == proxy::render::TABLE).collect();
    let rules: Vec<String> = proxy.iter().filter_map(|l| Some(format!("{} {}: {} → {}", l.table, l.chain, l.rule()?, l.verdict()?))).collect();
    if !service {
        return (step("proxy", Status::Skipped, "not a Service address: no proxy rule applies", json!({"node": node, "rules": rules})), None);
    }
    if lines.is_empty() {
        let mut s = step("proxy", Status::Broken, format!("{node}: the kernel traced no packet of the connection"), json!({"node": node}));
        s.fix = Some("check that the client can route to the Service address".into());
        return (s, None);
    }
    let frontend = proxy.iter().find(|l| {
        l.chain == "services" && l.verdict().is_some_and(|v| v.starts_with("goto") || v.starts_with("jump")) && l.rule().is_some_and(|r| r.contains("@"))
    });
    let rejected = proxy.iter().find(|l| l.rule().is_some_and(|r| r.contains("reject") || l.verdict() == Some("drop")));
    // The packet after DNAT: the first packet line past the nat hook with another destination.
    let endpoint = lines
        .iter()
        .filter_map(|l| l.packet_destination())
        .find(|(dst, dport)| *dst != IpAddr::V4(ip) || dport.is_some_and(|d| d != port))
        .map(|(d, p)| (d, p.unwrap_or(port)));
    let masquerade = proxy.iter().any(|l| l.chain.contains("postrouting") && l.rule().is_some_and(|r| r.contains("masquerade")));
    let details = json!({"node": node, "rules": rules, "endpoint": endpoint.map(|(i, p)| format!("{i}:{p}")), "masquerade": masquerade});
    if let Some(r) = rejected {
        let mut s = step(
            "proxy",
            Status::Broken,
            format!("{node}: {}:{port} is {} by `{}`", ip, if r.verdict() == Some("drop") { "dropped" } else { "rejected" }, r.rule().unwrap_or_default()),
            details,
        );
        s.fix = Some("the Service has no usable endpoint on this node's rules: see the endpoints step".into());
        return (s, endpoint);
    }
    match (frontend, endpoint) {
        (Some(f), Some((eip, eport))) => {
            let summary = format!(
                "{node}: {ip}:{port} matched ({}), DNAT to {eip}:{eport}, {}",
                f.verdict().unwrap_or_default(),
                if masquerade { "masqueraded" } else { "not masqueraded (the endpoint sees the client's address)" }
            );
            (step("proxy", Status::Ok, summary, details), Some((eip, eport)))
        }
        _ => {
            let mut s = step("proxy", Status::Broken, format!("{node}: no rule of {} took {ip}:{port}", proxy::render::TABLE), details);
            s.fix = Some(format!("the node's proxy rules do not know {ip}:{port}: check `podnet lab rules` or re-sync (lab restart)"));
            (s, None)
        }
    }
}

fn pod_at(view: &ClusterState, ip: IpAddr) -> Option<&PodInfo> {
    view.pods.iter().find(|p| !p.host_network && p.ips.contains(&ip))
}

fn denial_fix(e: &Explanation, protocol: Protocol, port: u16) -> String {
    let side = if !e.egress.allowed { &e.egress } else { &e.ingress };
    let (subject, other) = if !e.egress.allowed { (&e.from, &e.to) } else { (&e.to, &e.from) };
    let policies = if side.selected_by.len() == 1 {
        format!("policy {} isolates", side.selected_by[0])
    } else {
        format!("policies {} isolate", side.selected_by.join(", "))
    };
    format!(
        "{policies} {subject} for {}; no rule allows {protocol} {port} {} {other}: add a rule to one of them",
        side.direction.to_ascii_lowercase(),
        if !e.egress.allowed { "to" } else { "from" }
    )
}

/// Who the policy step judges on the other end.
enum Destination<'a> {
    /// An address (a pod's, or outside the cluster).
    Address(IpAddr),
    /// A pod named offline, without an address.
    Pod(&'a PodInfo),
}

fn policy_step(
    view: &ClusterState,
    evaluator: &Evaluator<'_>,
    client: &PodInfo,
    endpoint: Option<(Destination<'_>, u16)>,
    protocol: Protocol,
    traces: Option<&[lab::nftrace::NodeTrace]>,
) -> Step {
    let Some((destination, eport)) = endpoint else {
        return step("policy", Status::Skipped, "no endpoint to judge", json!({}));
    };
    let to = match destination {
        Destination::Address(ip) => pod_at(view, ip).map_or(Endpoint::External(ip), Endpoint::Pod),
        Destination::Pod(p) => Endpoint::Pod(p),
    };
    let e = evaluator.explain(&Connection { from: Endpoint::Pod(client), to, port: eport, protocol });
    // What the kernel did: drops and accepts in the policy tables on every node.
    let mut kernel = Vec::new();
    for t in traces.unwrap_or_default() {
        for l in t.lines.iter().filter_map(|l| lab::nftrace::parse_line(l)).filter(|l| l.table == policy::enforce::TABLE) {
            match l.verdict() {
                Some("drop") => kernel.push(format!("dropped in {} on {}", l.chain, t.node)),
                Some("accept") if l.chain.contains('/') && !l.chain.contains("isolated") => kernel.push(format!("accepted by {} on {}", l.chain, t.node)),
                _ => {}
            }
        }
    }
    kernel.dedup();
    let confirmed = if traces.is_none() {
        String::new()
    } else if kernel.is_empty() {
        " (kernel: no policy rule touched it)".into()
    } else {
        format!(" (kernel: {})", kernel.join("; "))
    };
    let details = json!({"explanation": e, "kernel": kernel});
    if e.allowed {
        let why = e.always_allowed.clone().unwrap_or_else(|| {
            let by: Vec<String> = e.egress.allowed_by.iter().chain(&e.ingress.allowed_by).map(|m| m.describe()).collect();
            if by.is_empty() { "no policy isolates either side".into() } else { format!("allowed by {}", by.join("; ")) }
        });
        step("policy", Status::Ok, format!("{} → {} {eport}/{protocol}: {why}{confirmed}", e.from, e.to), details)
    } else {
        let mut s = step("policy", Status::Broken, format!("{} → {} {eport}/{protocol} denied: {}{confirmed}", e.from, e.to, e.denial()), details);
        s.fix = Some(denial_fix(&e, protocol, eport));
        s
    }
}

fn pod_step_in_lab(
    st: &lab::state::LabState,
    view: &ClusterState,
    endpoint: Option<(IpAddr, u16)>,
    protocol: Protocol,
    outcome: &lab::nftrace::Outcome,
) -> Step {
    let Some((ip, port)) = endpoint else {
        return step("pod", Status::Skipped, "no endpoint to ask", json!({}));
    };
    let pod = pod_at(view, ip);
    let name = pod.map_or_else(|| ip.to_string(), PodInfo::key);
    if let Some(p) = pod
        && (!p.ready.unwrap_or(true) || p.terminating)
    {
        let mut s = step("pod", Status::Broken, format!("{name} is {}", if p.terminating { "terminating" } else { "not ready" }), json!({"pod": name}));
        s.fix = Some(format!("make {name} ready"));
        return s;
    }
    match outcome {
        lab::nftrace::Outcome::Answered(v) => {
            let by = v.as_ref().and_then(|v| v["pod"].as_str().map(str::to_owned)).unwrap_or_else(|| name.clone());
            step("pod", Status::Ok, format!("{by} answered on {port}/{protocol}"), json!({"pod": by, "answered": true}))
        }
        lab::nftrace::Outcome::Refused => {
            let mut s =
                step("pod", Status::Broken, format!("{name} refused {port}/{protocol}: nothing listens there"), json!({"pod": name, "answered": false}));
            s.fix = Some(format!("start the server on {port}/{protocol} in {name}, or point the Service's targetPort at the port it listens on"));
            s
        }
        _ => {
            // Dropped on the way (a policy): ask the pod from its own node, which policy never blocks.
            let node = pod.and_then(|p| p.node_name.clone()).and_then(|n| st.plan.nodes.iter().find(|x| x.name == n)).map(|n| n.netns.clone());
            let from_node = node.map(|ns| crate::lab_check::probe(&ns, ip, port, Duration::from_secs(1)).is_ok());
            match (from_node, protocol) {
                (Some(true), _) => step(
                    "pod",
                    Status::Ok,
                    format!("{name} answers on {port}/{protocol} from its node (the client's connection did not reach it)"),
                    json!({"pod": name}),
                ),
                _ => {
                    let mut s =
                        step("pod", Status::Broken, format!("{name} does not answer on {port}/{protocol}, not even from its node"), json!({"pod": name}));
                    s.fix = Some(format!("check that {name}'s server runs and listens on {port}/{protocol}"));
                    s
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_resolver_tries_the_search_path_before_the_name_itself() {
        let search = vec!["production.svc.cluster.local".to_owned(), "svc.cluster.local".to_owned(), "cluster.local".to_owned()];
        assert_eq!(
            candidates("order-service", &search, 5),
            ["order-service.production.svc.cluster.local.", "order-service.svc.cluster.local.", "order-service.cluster.local.", "order-service."]
        );
        assert_eq!(candidates("a.b.c.d.e.f", &search, 5)[0], "a.b.c.d.e.f.");
        assert_eq!(candidates("x.production.svc.cluster.local.", &search, 5), ["x.production.svc.cluster.local."]);
    }
}
