//! `podnet bench agent`: one node agent against a real API server holding a big cluster's
//! objects (upstream's kube-apiserver and etcd, `kubeplane`): N Nodes (only one is real: the
//! agent's, a private network namespace), P Pods, S Services without selectors and one
//! EndpointSlice each written as objects. It prints the agent's memory, the time from its start
//! to its rules in place, and, for one EndpointSlice changed at a time, the time from the API
//! server's answer to the write to the agent's rules applied (p50/p99/max).

use std::io::BufRead as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

#[derive(Args)]
pub struct AgentBenchArgs {
    /// Nodes (one is the agent's).
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Pods, spread over the nodes.
    #[arg(long, default_value_t = 30_000)]
    pods: usize,
    /// Services, each with one EndpointSlice of `--endpoints` pods.
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// Endpoints per Service.
    #[arg(long, default_value_t = 3)]
    endpoints: usize,
    /// EndpointSlice changes timed one after the other.
    #[arg(long, default_value_t = 40)]
    changes: usize,
    /// The Kubernetes binaries (default: $PODNET_K8S_BIN, else tools/k8s/build.sh's cache).
    #[arg(long, value_name = "DIR")]
    kube_bin: Option<PathBuf>,
}

const NAMESPACES: usize = 10;

/// Node `i`'s pod CIDR: a /26 of 10.244.0.0/16 (1,024 nodes of 64 addresses).
fn node_cidr(i: usize) -> (Ipv4Addr, u8) {
    (Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 0)) + (i as u32) * 64), 26)
}

fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 20, 0, 1)) + i as u32)
}

/// Pod `k`'s node and address.
fn pod_place(k: usize, nodes: usize) -> (usize, Ipv4Addr) {
    let node = k % nodes;
    let slot = k / nodes;
    (node, Ipv4Addr::from(u32::from(node_cidr(node).0) + 2 + slot as u32))
}

/// Creates every object, `concurrency` requests at a time; how many per second.
async fn create_all<K>(api: impl Fn(&Value) -> Api<K>, objects: Vec<Value>, what: &str) -> Result<f64>
where
    K: Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug + kube::Resource,
{
    let start = Instant::now();
    let count = objects.len();
    let mut results = futures::stream::iter(objects.into_iter().map(|o| {
        let api = api(&o);
        async move {
            let object: K = serde_json::from_value(o)?;
            api.create(&PostParams::default(), &object).await.map(|_| ()).map_err(anyhow::Error::from)
        }
    }))
    .buffer_unordered(48);
    while let Some(r) = results.next().await {
        r.with_context(|| format!("creating {what}"))?;
    }
    let rate = count as f64 / start.elapsed().as_secs_f64();
    println!("  {count:>6} {what:<15} {:>6.1} s  ({rate:.0}/s)", start.elapsed().as_secs_f64());
    Ok(rate)
}

fn slice(ns: &str, svc: &str, ips: &[(Ipv4Addr, usize)]) -> Value {
    let endpoints: Vec<Value> =
        ips.iter().map(|(ip, node)| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}, "nodeName": format!("node-{node}")})).collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{svc}-abcde"), "namespace": ns, "labels": {"kubernetes.io/service-name": svc, "endpointslice.kubernetes.io/managed-by": "bench.podnet.io"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}], "endpoints": endpoints})
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub fn run(a: AgentBenchArgs) -> Result<ExitCode> {
    crate::lab_cmd::need_root()?;
    if a.nodes == 0 || a.nodes > 1024 || a.services == 0 || a.endpoints == 0 {
        bail!("--nodes must be 1..=1024 (one /26 of 10.244.0.0/16 each), --services and --endpoints at least 1");
    }
    let bin = a.kube_bin.clone().or_else(kubeplane::binaries).ok_or_else(|| anyhow!("needs the Kubernetes binaries: tools/k8s/build.sh, or --kube-bin"))?;
    println!(
        "podnet bench agent: {} nodes, {} pods, {} services × {} endpoints (upstream's apiserver from {})",
        a.nodes,
        a.pods,
        a.services,
        a.endpoints,
        bin.display()
    );
    let t = Instant::now();
    // Only one node has an agent, and none a kubelet: without the node lifecycle controller the
    // other 999 are not marked unreachable (and their 30,000 pods not-ready) halfway through,
    // as they would not be on a cluster whose kubelets renew their leases.
    let settings = kubeplane::Settings { controllers: "*,-node-lifecycle-controller".into(), ..kubeplane::Settings::loopback(&bin) };
    let cp = kubeplane::ControlPlane::start_with(settings)?;
    println!("  control plane up in {:.1} s", t.elapsed().as_secs_f64());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let kubeconfig = cp.kubeconfig();
    let client = runtime.block_on(crate::agent_cmd::client(Some(&kubeconfig)))?;

    // The cluster, through the API.
    runtime.block_on(async {
        let namespaces = (0..NAMESPACES).map(|n| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("bench-{n}")}})).collect();
        create_all::<Namespace>(|_| Api::all(client.clone()), namespaces, "namespaces").await?;
        let nodes = (0..a.nodes)
            .map(|i| {
                let (net, len) = node_cidr(i);
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("node-{i}")}, "spec": {"podCIDR": format!("{net}/{len}"), "podCIDRs": [format!("{net}/{len}")]}})
            })
            .collect();
        create_all::<Node>(|_| Api::all(client.clone()), nodes, "nodes").await?;
        let start = Instant::now();
        let api: Api<Node> = Api::all(client.clone());
        let mut statuses = futures::stream::iter((0..a.nodes).map(|i| {
            let api = api.clone();
            async move {
                let status = json!({"status": {"addresses": [{"type": "InternalIP", "address": node_ip(i).to_string()}]}});
                api.patch_status(&format!("node-{i}"), &PatchParams::default(), &Patch::Merge(status)).await.map(|_| ())
            }
        }))
        .buffer_unordered(48);
        while let Some(r) = statuses.next().await {
            r.context("node status")?;
        }
        println!("  {:>6} {:<15} {:>6.1} s", a.nodes, "node addresses", start.elapsed().as_secs_f64());
        // Service accounts first: pods wait for their namespace's `default` one.
        for n in 0..NAMESPACES {
            let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), &format!("bench-{n}"));
            let deadline = Instant::now() + Duration::from_secs(60);
            while sa.get_opt("default").await?.is_none() {
                if Instant::now() > deadline {
                    bail!("namespace bench-{n} has no default service account after 60 s");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let pods = (0..a.pods)
            .map(|k| {
                let (node, _) = pod_place(k, a.nodes);
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("pod-{k}"), "namespace": format!("bench-{}", k % NAMESPACES), "labels": {"app": format!("svc-{}", k % a.services)}},
                    "spec": {"nodeName": format!("node-{node}"), "containers": [{"name": "c", "image": "none", "ports": [{"containerPort": 8080}]}]}})
            })
            .collect();
        create_all::<Pod>(|o| Api::namespaced(client.clone(), o["metadata"]["namespace"].as_str().unwrap_or("default")), pods, "pods").await?;
        let services = (0..a.services)
            .map(|s| {
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("svc-{s}"), "namespace": format!("bench-{}", s % NAMESPACES)},
                    "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
            })
            .collect();
        create_all::<Service>(|o| Api::namespaced(client.clone(), o["metadata"]["namespace"].as_str().unwrap_or("default")), services, "services").await?;
        let slices = (0..a.services)
            .map(|s| {
                let ips: Vec<(Ipv4Addr, usize)> = (0..a.endpoints).map(|e| pod_place((s * a.endpoints + e) % a.pods.max(1), a.nodes)).map(|(n, ip)| (ip, n)).collect();
                slice(&format!("bench-{}", s % NAMESPACES), &format!("svc-{s}"), &ips)
            })
            .collect();
        create_all::<EndpointSlice>(|o| Api::namespaced(client.clone(), o["metadata"]["namespace"].as_str().unwrap_or("default")), slices, "endpointslices").await?;
        Ok::<(), anyhow::Error>(())
    })?;

    // The agent, on node-0, in a private namespace with node-0's underlay address.
    let netns = dataplane::netns::NamedNetns::new(&format!("pnbench{}", std::process::id() % 100_000))?;
    for cmd in [&["link", "add", "eth0", "type", "bridge"][..], &["addr", "add", &format!("{}/16", node_ip(0)), "dev", "eth0"], &["link", "set", "eth0", "up"]]
    {
        let out = Command::new("ip").args(["netns", "exec", netns.name(), "ip"]).args(cmd).output()?;
        if !out.status.success() {
            bail!("ip {cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let config = tempfile::NamedTempFile::new()?;
    std::fs::write(config.path(), "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nclusterCIDR: 10.244.0.0/16\n")?;
    let free = || std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.to_string());
    let started = Instant::now();
    let mut agent = Command::new(std::env::current_exe()?)
        .args(["agent", "--kubeconfig", &kubeconfig.to_string_lossy(), "--node-name", "node-0", "--netns", &netns.path().to_string_lossy()])
        .args([
            "--proxy-config",
            &config.path().to_string_lossy(),
            "--cni-conf-dir",
            "",
            "--metrics-bind-address",
            &free()?,
            "--healthz-bind-address",
            &free()?,
        ])
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the agent")?;
    let pid = agent.id();
    let stderr = agent.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let synced = |rx: &mpsc::Receiver<(Instant, String)>, within: Duration| -> Result<(Instant, String)> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (at, line) = rx.recv_timeout(left).map_err(|_| anyhow!("the agent did not sync within {within:?}"))?;
            if line.contains(" sync, ") {
                return Ok((at, line));
            }
            if line.contains("retrying") || line.contains("Error") || line.contains("RSS") {
                eprintln!("agent: {line}");
            }
        }
    };
    let result = (|| -> Result<()> {
        let (at, line) = synced(&rx, Duration::from_secs(120))?;
        let rss = |what: &str| crate::bench::proc_status_kib(&pid.to_string(), what).map_or(f64::NAN, |kb| kb / 1024.0);
        println!("agent start to rules in place: {:.2} s  ({line})", at.duration_since(started).as_secs_f64());
        println!("agent memory after the first sync: RSS {:.1} MB, peak {:.1} MB", rss("VmRSS"), rss("VmHWM"));
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "bench-1");
        let mut latencies = Vec::new();
        let mut syncs = Vec::new();
        let mut kinds: std::collections::BTreeMap<String, Vec<f64>> = std::collections::BTreeMap::new();
        while rx.try_recv().is_ok() {}
        for c in 0..a.changes {
            // Service svc-1's endpoints move between pods: one endpoint replaced per change.
            let ips: Vec<(Ipv4Addr, usize)> =
                (0..a.endpoints).map(|e| pod_place((c * 7 + e * 13 + 1) % a.pods.max(1), a.nodes)).map(|(n, ip)| (ip, n)).collect();
            let patch = slice("bench-1", "svc-1", &ips);
            runtime.block_on(slices.patch("svc-1-abcde", &PatchParams::apply("bench").force(), &Patch::Apply(patch)))?;
            let written = Instant::now();
            let (at, line) = synced(&rx, Duration::from_secs(30))?;
            latencies.push(at.duration_since(written).as_secs_f64() * 1e3);
            kinds
                .entry(line.split(" sync,").next().and_then(|h| h.rsplit(' ').next()).unwrap_or("?").to_owned())
                .or_default()
                .push(*latencies.last().unwrap_or(&0.0));
            if let Some(ms) = line.rsplit(", ").next().and_then(|t| t.trim_end_matches(" ms").parse::<f64>().ok()) {
                syncs.push(ms);
            }
            // The next change only after this one settled (a burst would be one sync).
            std::thread::sleep(Duration::from_millis(50));
            while rx.try_recv().is_ok() {}
        }
        latencies.sort_by(f64::total_cmp);
        syncs.sort_by(f64::total_cmp);
        println!(
            "one EndpointSlice changed, API write to rules applied ({} changes): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (the agent's plan+apply: p50 {:.1} ms, p99 {:.1} ms)",
            latencies.len(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or(f64::NAN),
            percentile(&syncs, 0.5),
            percentile(&syncs, 0.99)
        );
        for (kind, mut l) in kinds {
            l.sort_by(f64::total_cmp);
            println!("  {:>3} carried by a {kind} sync: p50 {:.1} ms, max {:.1} ms", l.len(), percentile(&l, 0.5), l.last().copied().unwrap_or(f64::NAN));
        }
        println!("  (service: that Service alone; partial/full: the whole state, as other objects changed too)");
        println!("agent memory after the changes: RSS {:.1} MB, peak {:.1} MB", rss("VmRSS"), rss("VmHWM"));
        println!("goals (issue #14 §4): memory < 200 MB, start to rules < 5 s, change to rules p99 < 100 ms");
        Ok(())
    })();
    let _ = agent.kill();
    let _ = agent.wait();
    drop(cp);
    result.map(|()| ExitCode::SUCCESS)
}
