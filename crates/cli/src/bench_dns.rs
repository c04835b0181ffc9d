//! `podnet bench dns`: the cluster DNS under dnsperf (Debian's), server and load each pinned to
//! one core, in a private network namespace: cluster names (and Knot DNS serving the same
//! records in the same run, for a ratio), cached external names, the search-path expansion of an
//! external name as a pod's resolver does it under `ndots:5`, and the server's memory at N
//! Services and M Pods.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use dataplane::netns::{NamedNetns, run_in};

use crate::bench::{Running, in_ns};

#[derive(Args)]
pub struct DnsBenchArgs {
    /// Services (ClusterIP), spread over 100 namespaces.
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// Pods (each backs one Service).
    #[arg(long, default_value_t = 50_000)]
    pods: usize,
    /// Seconds per dnsperf run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Queries per second at which latency percentiles are taken.
    #[arg(long, default_value_t = 120_000)]
    rate: u64,
    /// Do not run Knot DNS.
    #[arg(long)]
    no_knot: bool,
}

/// The address a pod of the benchmark queries from (on the namespace's loopback).
const CLIENT_IP: &str = "10.244.0.5";
const NAMESPACES: usize = 100;
const EXTERNAL_NAMES: usize = 1000;

fn service_ip(i: usize) -> String {
    let a = i + 20;
    format!("10.96.{}.{}", a >> 8, a & 255)
}

fn cluster_yaml(services: usize, pods: usize) -> String {
    let mut out = String::with_capacity(services * 200 + pods * 250);
    for n in 0..NAMESPACES {
        let _ = write!(out, "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: ns-{n}}}\n");
    }
    // The client pod, so that its namespace is known from its address.
    let _ = write!(
        out,
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: client, namespace: ns-0}}\nspec: {{containers: [{{name: c}}]}}\nstatus: {{podIP: {CLIENT_IP}}}\n"
    );
    for i in 0..services {
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: ns-{}}}\nspec: {{clusterIP: {}, selector: {{app: a{i}}}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n",
            i % NAMESPACES,
            service_ip(i)
        );
    }
    for j in 0..pods {
        let i = j % services.max(1);
        let a = j + 10;
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: pod-{j}, namespace: ns-{}, labels: {{app: a{i}}}}}\nspec: {{containers: [{{name: c, ports: [{{containerPort: 8080}}]}}]}}\nstatus: {{podIP: 10.{}.{}.{}, conditions: [{{type: Ready, status: 'True'}}]}}\n",
            i % NAMESPACES,
            245 + (a >> 16),
            (a >> 8) & 255,
            a & 255
        );
    }
    out
}

/// Starts `podnet dns serve` on core 0; returns it once it serves, and its address.
fn podnet_dns(ns: &NamedNetns, dir: &Path, extra: &[&str]) -> Result<(Running, SocketAddr)> {
    let exe = std::env::current_exe()?;
    let mut child = in_ns(ns.name(), 0, exe.to_str().unwrap_or("podnet"))
        .args(["dns", "serve", "-f", &dir.to_string_lossy(), "--listen", "127.0.0.1:0"])
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .context("starting podnet dns serve")?;
    let mut line = String::new();
    BufReader::new(child.stderr.take().context("no stderr")?).read_line(&mut line)?;
    let addr = line.split(" on ").nth(1).and_then(|r| r.split(' ').next()).and_then(|a| a.parse().ok());
    let Some(addr) = addr else { bail!("podnet dns serve: {line}") };
    Ok((Running(child), addr))
}

struct Perf {
    qps: f64,
    lost: String,
}

/// dnsperf on core 1 at full speed.
fn dnsperf(ns: &NamedNetns, server: SocketAddr, queries: &Path, seconds: u64) -> Result<Perf> {
    let out = in_ns(ns.name(), 1, "dnsperf")
        .args([
            "-s",
            &server.ip().to_string(),
            "-p",
            &server.port().to_string(),
            "-a",
            CLIENT_IP,
            "-d",
            &queries.to_string_lossy(),
            "-l",
            &seconds.to_string(),
            "-c",
            "4",
            "-q",
            "100",
        ])
        .output()
        .context("running dnsperf (apt-get install dnsperf)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| text.lines().find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_owned()));
    let qps = field("Queries per second:").and_then(|v| v.parse().ok()).with_context(|| format!("dnsperf said: {text}"))?;
    Ok(Perf { qps, lost: field("Queries lost:").unwrap_or_default() })
}

/// Latency percentiles (µs) at a fixed rate, from dnsperf's per-query lines.
fn latency(ns: &NamedNetns, server: SocketAddr, queries: &Path, seconds: u64, rate: u64) -> Result<(f64, f64, f64)> {
    let out = in_ns(ns.name(), 1, "dnsperf")
        .args([
            "-s",
            &server.ip().to_string(),
            "-p",
            &server.port().to_string(),
            "-a",
            CLIENT_IP,
            "-d",
            &queries.to_string_lossy(),
            "-l",
            &seconds.to_string(),
            "-c",
            "4",
            "-q",
            "50",
        ])
        .args(["-Q", &rate.to_string(), "-v"])
        .output()?;
    let mut l: Vec<f64> =
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("> ")).filter_map(|l| l.rsplit(' ').next()?.parse().ok()).collect();
    if l.is_empty() {
        bail!("dnsperf -v printed no answers");
    }
    l.sort_by(f64::total_cmp);
    let q = |p: f64| l[((p * l.len() as f64) as usize).min(l.len() - 1)] * 1e6;
    Ok((q(0.5), q(0.99), l.len() as f64 / seconds as f64))
}

/// A pod's resolver resolving `name` under `ndots:5` with its search path, as glibc does it:
/// each candidate asked for A and AAAA, the first that answers ends it. Returns µs per name.
fn resolve_like_a_pod(server: SocketAddr, names: &[String], search: &[&str]) -> Result<f64> {
    // On the load generator's core, away from the server's.
    let mut cpus = nix::sched::CpuSet::new();
    cpus.set(1)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus)?;
    let socket = UdpSocket::bind((CLIENT_IP.parse::<IpAddr>()?, 0))?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = vec![0u8; 4096];
    let mut id: u16 = 1;
    let t = Instant::now();
    for name in names {
        let candidates: Vec<String> = if name.ends_with('.') {
            vec![name.clone()]
        } else if name.matches('.').count() >= 5 {
            vec![format!("{name}.")]
        } else {
            search.iter().map(|s| format!("{name}.{s}.")).chain([format!("{name}.")]).collect()
        };
        for candidate in candidates {
            let mut answered = false;
            for qtype in [hickory_proto::rr::RecordType::A, hickory_proto::rr::RecordType::AAAA] {
                id = id.wrapping_add(1);
                let mut q = hickory_proto::op::Message::query();
                q.metadata.id = id;
                q.metadata.recursion_desired = true;
                q.add_query(hickory_proto::op::Query::query(hickory_proto::rr::Name::from_ascii(&candidate)?, qtype));
                socket.send_to(&q.to_vec()?, server)?;
                let n = socket.recv(&mut buf)?;
                let r = hickory_proto::op::Message::from_vec(&buf[..n])?;
                answered |= r.metadata.response_code == hickory_proto::op::ResponseCode::NoError && !r.answers.is_empty();
            }
            if answered {
                break;
            }
        }
    }
    Ok(t.elapsed().as_secs_f64() * 1e6 / names.len() as f64)
}

fn rss_mb(pid: u32) -> f64 {
    // `ip netns exec` execs taskset, which execs the server: the pid is the server's.
    crate::bench::proc_status_kib(&pid.to_string(), "VmRSS").map_or(f64::NAN, |kb| kb / 1024.0)
}

fn knot_zone(services: usize, dir: &Path) -> Result<()> {
    let mut z = String::from("$ORIGIN cluster.local.\n$TTL 5\n@ IN SOA ns.dns hostmaster 1 7200 1800 86400 5\n@ IN NS ns.dns\nns.dns IN A 10.96.0.10\n");
    for i in 0..services {
        let _ = writeln!(z, "svc-{i}.ns-{}.svc IN A {}", i % NAMESPACES, service_ip(i));
    }
    std::fs::write(dir.join("cluster.local.zone"), z)?;
    let conf = format!(
        "server:\n    listen: 127.0.0.1@5399\n    rundir: {d}\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\ndatabase:\n    storage: {d}\nlog:\n  - target: stderr\n    any: error\nzone:\n  - domain: cluster.local\n    file: {d}/cluster.local.zone\n    zonefile-sync: -1\n    journal-content: none\n",
        d = dir.display()
    );
    std::fs::write(dir.join("knot.conf"), conf)?;
    Ok(())
}

fn wait_for(ns: &NamedNetns, server: SocketAddr, name: &str) -> Result<()> {
    let name = name.to_owned();
    run_in(ns.path(), move || -> Result<()> {
        for _ in 0..100 {
            if let Ok((_, ips)) = dns::client::lookup_a(server, &name, Duration::from_millis(100))
                && !ips.is_empty()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("{server} does not answer {name}")
    })?
}

pub fn run(a: DnsBenchArgs) -> Result<ExitCode> {
    if !nix::unistd::geteuid().is_root() {
        bail!("podnet bench dns needs root (it makes a network namespace)");
    }
    if a.services == 0 {
        bail!("--services must be at least 1");
    }
    let ns = NamedNetns::new(&format!("podnet-bench-dns-{}", std::process::id()))?;
    for cmd in [vec!["link", "set", "lo", "up"], vec!["addr", "add", &format!("{CLIENT_IP}/32"), "dev", "lo"]] {
        let out = Command::new("ip").args(["netns", "exec", ns.name(), "ip"]).args(&cmd).output()?;
        if !out.status.success() {
            bail!("ip {cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let tmp = tempfile::tempdir()?;
    let (cluster_dir, upstream_dir, knot_dir) = (tmp.path().join("cluster"), tmp.path().join("upstream"), tmp.path().join("knot"));
    for d in [&cluster_dir, &upstream_dir, &knot_dir] {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(cluster_dir.join("cluster.yaml"), cluster_yaml(a.services, a.pods))?;
    // The upstream: another podnet serving `example.test`, where the external names live.
    let mut up = String::new();
    for i in 0..EXTERNAL_NAMES {
        let _ = write!(
            up,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: www{i}, namespace: default}}\nspec: {{clusterIP: 10.97.{}.{}, ports: [{{port: 80}}]}}\n",
            i >> 8,
            i & 255
        );
    }
    std::fs::write(upstream_dir.join("upstream.yaml"), up)?;
    let queries = tmp.path().join("cluster-queries");
    std::fs::write(&queries, (0..a.services).map(|i| format!("svc-{i}.ns-{}.svc.cluster.local A\n", i % NAMESPACES)).collect::<String>())?;
    let external: Vec<String> = (0..EXTERNAL_NAMES).map(|i| format!("www{i}.default.svc.example.test")).collect();
    let external_queries = tmp.path().join("external-queries");
    std::fs::write(&external_queries, external.iter().map(|n| format!("{n} A\n")).collect::<String>())?;

    let t = Instant::now();
    let (_upstream, upstream_addr) = podnet_dns(&ns, &upstream_dir, &["--zone", "example.test", "--upstream", "127.0.0.1:9"])?;
    let (server, addr) = podnet_dns(&ns, &cluster_dir, &["--upstream", &upstream_addr.to_string(), "--autopath"])?;
    wait_for(&ns, addr, "svc-0.ns-0.svc.cluster.local.")?;
    let loaded = t.elapsed().as_secs_f64();
    let rss = rss_mb(server.0.id());
    outln!(
        "podnet dns: {} Services, {} Pods, {NAMESPACES} namespaces (server on core 0, dnsperf on core 1, loopback of a private namespace)",
        a.services,
        a.pods
    );
    outln!("  memory               {rss:8.1} MB RSS after loading ({loaded:.1} s to serve from YAML)");

    let cluster = dnsperf(&ns, addr, &queries, a.seconds)?;
    outln!("  cluster names        {:8.0} QPS (lost {})", cluster.qps, cluster.lost);
    let (p50, p99, achieved) = latency(&ns, addr, &queries, a.seconds.min(5), a.rate)?;
    outln!("  latency at {:.0} QPS  p50 {p50:.0} µs, p99 {p99:.0} µs", achieved);
    // Warm the cache, then the cached external names.
    dnsperf(&ns, addr, &external_queries, 1)?;
    let cached = dnsperf(&ns, addr, &external_queries, a.seconds)?;
    outln!("  cached external      {:8.0} QPS (lost {})", cached.qps, cached.lost);
    let search = ["ns-0.svc.cluster.local", "svc.cluster.local", "cluster.local"];
    let (addr2, ext2) = (addr, external.clone());
    let fqdn: Vec<String> = external.iter().map(|n| format!("{n}.")).collect();
    // Each measured twice, the second time counted (the caches are warm, as in a running cluster).
    let (expanded, one) = run_in(ns.path(), move || -> Result<(f64, f64)> {
        resolve_like_a_pod(addr2, &ext2, &search)?;
        resolve_like_a_pod(addr, &fqdn, &[])?;
        Ok((resolve_like_a_pod(addr2, &ext2, &search)?, resolve_like_a_pod(addr, &fqdn, &[])?))
    })??;
    outln!("  search path          {expanded:8.1} µs per external name under ndots:5 vs {one:.1} µs fully qualified → {:.2}x", expanded / one);
    outln!("  memory               {:8.1} MB RSS after the runs", rss_mb(server.0.id()));
    drop(server);

    if !a.no_knot {
        knot_zone(a.services, &knot_dir)?;
        let conf = knot_dir.join("knot.conf");
        let knot = in_ns(ns.name(), 0, "knotd")
            .args(["-c", &conf.to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting knotd (apt-get install knot)")?;
        let knot = Running(knot);
        let knot_addr: SocketAddr = "127.0.0.1:5399".parse()?;
        wait_for(&ns, knot_addr, "svc-0.ns-0.svc.cluster.local.")?;
        let k = dnsperf(&ns, knot_addr, &queries, a.seconds)?;
        outln!("  Knot DNS, same names {:8.0} QPS (lost {}), 1 UDP worker → podnet/Knot = {:.2}", k.qps, k.lost, cluster.qps / k.qps);
        drop(knot);
    }
    Ok(ExitCode::SUCCESS)
}
