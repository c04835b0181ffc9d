//! `podnet bench proxy`: the service proxy at N services × E endpoints, measured the way
//! `../shared/bench/kube-proxy-layouts/run.sh` measures kube-proxy's layouts (a private namespace,
//! full load, one service added, TCP connect latency to the last service's VIP DNATed to a local
//! listener), and optionally that script itself in the same run, for ratios.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use dataplane::netns::{NamedNetns, run_in};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeStatus, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use model::{ClusterState, Namespaced};
use proxy::render::{Programmer, Update};

use crate::bench::median;

#[derive(Args)]
pub struct ProxyBenchArgs {
    /// Service counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,30000")]
    services: Vec<usize>,
    /// Endpoints per service.
    #[arg(long, default_value_t = 2)]
    endpoints: usize,
    /// Connections timed per connect-latency figure.
    #[arg(long, default_value_t = 3000)]
    connects: usize,
    /// The peer script (`kube-proxy-layouts/run.sh`) to run side by side.
    #[arg(long, value_name = "RUN_SH")]
    peer: Option<PathBuf>,
    /// The peer layouts to run.
    #[arg(long, value_delimiter = ',', default_value = "ipt-legacy,nft")]
    peer_layouts: Vec<String>,
    /// Skip the peer's `nft` layout above this many services (it takes minutes: 301 s at 30k).
    #[arg(long, default_value_t = 10_000)]
    peer_nft_max: usize,
}

const BASE_VIP: u32 = 0x0A60_000A; // 10.96.0.10, as gen.py numbers them

fn vip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(BASE_VIP + i as u32)
}

/// gen.py's endpoint addresses; the last service's endpoints are the local listener.
fn endpoint(i: usize, k: usize, n: usize) -> String {
    if i == n - 1 {
        return "127.0.0.1".into();
    }
    let a = i * 4 + k + 2;
    format!("10.{}.{}.{}", 244 + (a >> 16) % 8, (a >> 8) & 255, a & 255)
}

fn meta(name: String) -> ObjectMeta {
    ObjectMeta { name: Some(name), namespace: Some("bench".into()), ..Default::default() }
}

fn service(i: usize) -> Namespaced<Service> {
    let spec = ServiceSpec {
        cluster_ip: Some(vip(i).to_string()),
        ports: Some(vec![ServicePort { port: 80, protocol: Some("TCP".into()), ..Default::default() }]),
        ..Default::default()
    };
    Namespaced::from_object(Service { metadata: meta(format!("svc-{i}")), spec: Some(spec), status: None })
}

fn slice(i: usize, addresses: Vec<String>) -> Namespaced<EndpointSlice> {
    let mut m = meta(format!("svc-{i}-x"));
    m.labels = Some(BTreeMap::from([(model::endpoints::LABEL_SERVICE_NAME.to_owned(), format!("svc-{i}"))]));
    let object = EndpointSlice {
        metadata: m,
        address_type: "IPv4".into(),
        endpoints: addresses.into_iter().map(|a| Endpoint { addresses: vec![a], ..Default::default() }).collect(),
        ports: Some(vec![EndpointPort { port: Some(8080), protocol: Some("TCP".into()), ..Default::default() }]),
    };
    Namespaced::from_object(object)
}

/// N services (the last one's endpoints are 127.0.0.1:8080) and one node.
fn cluster(n: usize, e: usize) -> ClusterState {
    let node = Node {
        metadata: ObjectMeta { name: Some("node-1".into()), ..Default::default() },
        status: Some(NodeStatus { addresses: Some(vec![NodeAddress { type_: "InternalIP".into(), address: "192.168.0.2".into() }]), ..Default::default() }),
        ..Default::default()
    };
    ClusterState {
        services: (0..n).map(service).collect(),
        endpoint_slices: (0..n).map(|i| slice(i, (0..e).map(|k| endpoint(i, k, n)).collect())).collect(),
        nodes: vec![node],
        ..Default::default()
    }
}

fn node_plan(state: &ClusterState) -> Result<proxy::NodePlan> {
    Ok(proxy::plan(state, "node-1", &proxy::ProxyConfig::default())?)
}

/// A first full load, as the proxy does it (`dataplane::nft::load`), timed.
fn load_in(ns: &NamedNetns, ruleset: nftset::Ruleset) -> Result<f64> {
    let t = Instant::now();
    let loaded = run_in(ns.path(), move || dataplane::nft::load(&ruleset))??;
    let elapsed = t.elapsed().as_secs_f64();
    if let dataplane::nft::Loaded::Replaced(why) = loaded {
        bail!("the first load fell back to one nft transaction: {why}");
    }
    Ok(elapsed)
}

/// The listener every VIP of the benchmark ends at: 127.0.0.1:8080 in the namespace.
fn serve_local(ns: &NamedNetns) -> Result<()> {
    let listener = run_in(ns.path(), || TcpListener::bind("127.0.0.1:8080"))??;
    std::thread::spawn(move || {
        for c in listener.incoming() {
            drop(c);
        }
    });
    Ok(())
}

/// TCP connect() latency percentiles (µs) to `dst`.
fn connect_latency(ns: &NamedNetns, dst: SocketAddr, count: usize) -> Result<(f64, f64, f64)> {
    let mut lat = run_in(ns.path(), move || -> std::io::Result<Vec<f64>> {
        let mut lat = Vec::with_capacity(count);
        for j in 0..count + 200 {
            let t = Instant::now();
            let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(2))?;
            let elapsed = t.elapsed().as_secs_f64() * 1e6;
            let _ = s.write_all(b"x");
            let _ = s.read(&mut [0u8; 1]);
            if j >= 200 {
                lat.push(elapsed);
            }
        }
        Ok(lat)
    })??;
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| lat[((p * lat.len() as f64) as usize).min(lat.len() - 1)];
    Ok((q(0.5), q(0.9), q(0.99)))
}

fn rss_mb() -> f64 {
    crate::bench::proc_status_kib("self", "VmRSS").map_or(f64::NAN, |kb| kb / 1024.0)
}

/// One Service changed, timed as the proxy handles it: from the changed Service and its
/// EndpointSlices to the rules in place (its ports planned, its elements diffed and written),
/// and the kernel commit alone.
fn change(
    session: &mut dataplane::nft::Session,
    programmer: &mut Programmer,
    node: &proxy::plan::NodeView,
    svc: &Namespaced<Service>,
    slice: &Namespaced<EndpointSlice>,
) -> Result<(f64, f64, usize)> {
    let t = Instant::now();
    let ports = proxy::plan::service_plan(&svc.object, &[&slice.object], node);
    let Update::Elements(script) = programmer.update(&svc.namespace, &svc.name, &ports) else {
        bail!("the change needs a full load");
    };
    let c = Instant::now();
    session.apply(&script)?;
    let commit = c.elapsed().as_secs_f64();
    Ok((t.elapsed().as_secs_f64(), commit, script.lines().count()))
}

fn measure(n: usize, e: usize, connects: usize) -> Result<()> {
    if n == 0 || e == 0 {
        bail!("--services and --endpoints must be at least 1");
    }
    let ns = NamedNetns::new(&format!("podnet-bench-proxy-{}", std::process::id()))?;
    for cmd in [
        "ip link set lo up",
        "ip link add kpb0 type veth peer name kpb1",
        "ip link set kpb0 up",
        "ip link set kpb1 up",
        "ip addr add 192.168.0.2/24 dev kpb0",
        "ip route add 10.96.0.0/12 dev kpb0",
    ] {
        let out = Command::new("ip").args(["netns", "exec", ns.name()]).args(cmd.split(' ')).output()?;
        if !out.status.success() {
            bail!("{cmd}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    serve_local(&ns)?;
    let baseline = connect_latency(&ns, "127.0.0.1:8080".parse()?, connects)?;

    let base_rss = rss_mb();
    let mut state = cluster(n, e);
    let objects_rss = rss_mb();
    let t = Instant::now();
    let plan = node_plan(&state)?;
    let plan_rss = rss_mb();
    let mut programmer = Programmer::new(&plan);
    let full = programmer.ruleset();
    let plan_render = t.elapsed().as_secs_f64();
    let elements = full.element_count();
    if let Ok(path) = std::env::var("PODNET_BENCH_DUMP") {
        std::fs::write(path, full.full_script())?; // for looking at the load with `time nft -f`
    }
    let load = load_in(&ns, full)?;
    let rss = rss_mb();

    let mut session = run_in(ns.path(), dataplane::nft::Session::start)??;
    let mut add = Vec::new();
    for r in 0..3 {
        let (svc, sl) = (service(n + r), slice(n + r, (0..e).map(|k| endpoint(n + r, k, n + 10)).collect()));
        add.push(change(&mut session, &mut programmer, &plan.node, &svc, &sl)?);
        state.services.push(svc);
        state.endpoint_slices.push(sl);
    }
    let mut ep = Vec::new();
    for r in 0..3 {
        state.endpoint_slices[0].object.endpoints[0].addresses = vec![format!("10.250.0.{}", r + 1)];
        ep.push(change(&mut session, &mut programmer, &plan.node, &state.services[0], &state.endpoint_slices[0])?);
    }
    // The changes are in the kernel, not only timed.
    let listed = run_in(ns.path(), || dataplane::nft::list_table(nftset::Family::Ip, proxy::render::TABLE))??.unwrap_or_default();
    if !listed.contains("10.250.0.3 . 8080") || !listed.contains(&format!("{} . tcp . 80", vip(n + 2))) {
        bail!("the changes did not reach the kernel");
    }
    let last = connect_latency(&ns, SocketAddr::from((vip(n - 1), 80)), connects)?;

    let ms = |v: &[(f64, f64, usize)], f: fn(&(f64, f64, usize)) -> f64| median(v.iter().map(f).collect()) * 1e3;
    outln!("podnet N={n} E={e}");
    outln!("  full load            {:8.3} s   kernel (nft -f skeleton + netlink element batch), plan+render {:.3} s, {} elements", load, plan_render, elements);
    outln!("  add one service      {:8.2} ms  kernel commit; network_programming_duration {:.1} ms ({} lines)", ms(&add, |a| a.1), ms(&add, |a| a.0), add[0].2);
    outln!("  change one endpoint  {:8.2} ms  kernel commit; network_programming_duration {:.1} ms", ms(&ep, |a| a.1), ms(&ep, |a| a.0));
    outln!(
        "  connect p50/p90/p99  {:.1} / {:.1} / {:.1} µs to the last VIP; no rules {:.1} / {:.1} / {:.1} µs → p50 ratio {:.2}x",
        last.0,
        last.1,
        last.2,
        baseline.0,
        baseline.1,
        baseline.2,
        last.0 / baseline.0
    );
    outln!(
        "  proxy memory         {rss:8.1} MB RSS (this process: objects +{:.1} MB, node plan +{:.1} MB, per-Service programmer and rule set +{:.1} MB)",
        objects_rss - base_rss,
        plan_rss - objects_rss,
        rss - plan_rss
    );
    Ok(())
}

fn peer(script: &PathBuf, layout: &str, n: usize, e: usize) -> Result<()> {
    let out =
        Command::new("bash").arg(script).args([layout, &n.to_string(), &e.to_string()]).output().with_context(|| format!("running {}", script.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if out.status.success() {
        outln!("  peer {}", text.trim());
    } else {
        outln!("  peer {layout} N={n}: failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

pub fn run(a: ProxyBenchArgs) -> Result<ExitCode> {
    if !nix::unistd::geteuid().is_root() {
        bail!("podnet bench proxy needs root (it makes a network namespace and loads nftables)");
    }
    for &n in &a.services {
        measure(n, a.endpoints, a.connects)?;
        if let Some(script) = &a.peer {
            for layout in &a.peer_layouts {
                if layout == "nft" && n > a.peer_nft_max {
                    outln!("  peer nft N={n}: skipped (above --peer-nft-max; 301 s at 30k on this kernel)");
                    continue;
                }
                peer(script, layout, n, a.endpoints)?;
            }
        }
    }
    if let Some(script) = &a.peer {
        peer(script, "baseline", 0, 0)?;
    }
    Ok(ExitCode::SUCCESS)
}
