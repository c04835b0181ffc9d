//! `podnet bench lab`: times `lab up`, `lab check` and `lab down` of a generated cluster, and the
//! lab process's memory, by running the real commands.

use std::fmt::Write as _;
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;

#[derive(Args)]
pub struct LabBenchArgs {
    /// Nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Pods per node (each declares 80/TCP and 53/UDP; ten Services select them).
    #[arg(long, default_value_t = 30)]
    pods_per_node: usize,
    /// Routing mode.
    #[arg(long, default_value = "host-gw")]
    mode: String,
    /// Every combination instead: host-gw, vxlan and bgp, plain and `--encrypt wireguard`, with
    /// `--ip-family` ipv4, dual and ipv6; up, check and down of each, and BGP's convergence and
    /// failover.
    #[arg(long, conflicts_with = "mode")]
    every_mode: bool,
}

fn timed(exe: &std::path::Path, args: &[&str]) -> Result<f64> {
    timed_output(exe, args).map(|(t, _)| t)
}

/// Runs `podnet ARGS`: how long it took and what it printed.
fn timed_output(exe: &std::path::Path, args: &[&str]) -> Result<(f64, String)> {
    let t = Instant::now();
    let out = Command::new(exe).args(args).output().with_context(|| format!("running podnet {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("podnet {} failed: {}{}", args.join(" "), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok((t.elapsed().as_secs_f64(), String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// BGP's figures in a `--mode bgp` lab: convergence (from `lab up`'s own line), and how long
/// node-1 keeps node-2's pod CIDR after node-2's BIRD is killed, until it is back (restarted by
/// the lab process), and after node-3 goes silent (its link down: only the hold timer notices).
struct BgpFigures {
    converged_ms: f64,
    killed_withdrawn_ms: f64,
    restarted_back_ms: f64,
    silent_withdrawn_ms: f64,
}

fn bgp_figures(lab: &lab::LabName, up_output: &str) -> Result<BgpFigures> {
    let converged_ms = up_output
        .lines()
        .find(|l| l.contains("BGP: every node has every pod CIDR"))
        .and_then(|l| l.split_whitespace().rev().nth(1)?.parse().ok())
        .context("lab up did not say when BGP converged")?;
    let node = |n: usize| format!("podnet.{lab}.node-{n}");
    let has_route = |netns: &str, dst: &str, via: &str| -> bool {
        let family = if dst.contains(':') { "-6" } else { "-4" };
        Command::new("ip")
            .args(["-n", netns, family, "route", "show", dst])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("via {via}")))
    };
    let wait = |cond: &dyn Fn() -> bool| -> Result<f64> {
        let t = Instant::now();
        while !cond() {
            if t.elapsed() > std::time::Duration::from_secs(15) {
                bail!("no change in 15 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    // Each node's primary pod CIDR and its underlay address of that family (an IPv6 lab's BGP
    // carries IPv6 pod CIDRs between IPv6 addresses).
    let st = lab::state::load(lab)?;
    let route_of = |n: usize| -> Result<(String, String)> {
        let node = st.plan.nodes.get(n - 1).context("the lab has fewer nodes")?;
        let cidr = *node.pod_cidrs().first().context("a node without a pod CIDR")?;
        let via = node.internal_ips().into_iter().find(|ip| ip.is_ipv6() == cidr.addr().is_ipv6()).context("a node without an address")?;
        Ok((cidr.to_string(), via.to_string()))
    };
    let ((cidr2, via2), (cidr3, via3)) = (route_of(2)?, route_of(3)?);
    let pid: i32 = std::fs::read_to_string(lab::bgp::dir(lab).join("node-2.pid"))?.trim().parse()?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)?;
    let killed_withdrawn_ms = wait(&|| !has_route(&node(1), &cidr2, &via2)).context("node-2's routes after its BIRD was killed")?;
    let restarted_back_ms = wait(&|| has_route(&node(1), &cidr2, &via2)).context("node-2's routes after the restart")?;
    let down = Command::new("ip").args(["-n", &node(3), "link", "set", "eth0", "down"]).status()?;
    if !down.success() {
        bail!("ip link set eth0 down on node-3 failed");
    }
    let silent_withdrawn_ms = wait(&|| !has_route(&node(1), &cidr3, &via3)).context("node-3's routes after it went silent")?;
    Ok(BgpFigures { converged_ms, killed_withdrawn_ms, restarted_back_ms, silent_withdrawn_ms })
}

/// The generated cluster: `pods_per_node` pods per node in ten apps, a Service per app.
fn cluster_yaml(a: &LabBenchArgs) -> String {
    let mut yaml = String::new();
    for i in 0..a.nodes * a.pods_per_node {
        let _ = write!(
            yaml,
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: pod-{i:04}, namespace: bench, labels: {{app: app-{}}}}}\nspec: {{containers: [{{name: c, ports: [{{containerPort: 80}}, {{containerPort: 53, protocol: UDP}}]}}]}}\n",
            i % 10
        );
    }
    // A Service per app: a pod marked (not) ready changes every node's rules.
    for app in 0..10 {
        let _ = write!(
            yaml,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: app-{app}, namespace: bench}}\nspec: {{selector: {{app: app-{app}}}, ports: [{{name: http, port: 80}}, {{name: dns, port: 53, protocol: UDP}}]}}\n"
        );
    }
    yaml
}

pub fn run(a: LabBenchArgs) -> Result<ExitCode> {
    let exe = std::env::current_exe()?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("pods.yaml"), cluster_yaml(&a))?;
    if a.every_mode {
        return every_mode(&a, &exe, &dir.path().to_string_lossy());
    }
    let name = format!("bench{}", std::process::id() % 100_000);
    let lab_name: lab::LabName = name.parse()?;
    let nodes = a.nodes.to_string();
    let path = dir.path().to_string_lossy().into_owned();
    let up = timed_output(&exe, &["lab", "up", "--name", &name, "--nodes", &nodes, "--mode", &a.mode, "-f", &path]);
    let mut up_output = String::new();
    let result = up.and_then(|(up, printed)| {
        up_output = printed;
        let rss = std::fs::read_to_string(lab::state::pid_file(&lab_name))
            .ok()
            .and_then(|pid| crate::bench::proc_status_kib(pid.trim(), "VmRSS"))
            .unwrap_or(f64::NAN);
        let check = timed(&exe, &["lab", "check", "--name", &name])?;
        let dns = dns_while_syncing(&exe, &lab_name)?;
        Ok((up, rss, check, dns))
    });
    // Last, as it breaks the lab: BGP's failure figures.
    let bgp = match &result {
        Ok(_) if a.mode == "bgp" && a.nodes >= 3 => Some(bgp_figures(&lab_name, &up_output)),
        _ => None,
    };
    let down = timed(&exe, &["lab", "down", "--name", &name]);
    let (up, rss, check, dns) = result?;
    let down = down?;
    outln!("lab bench: {} nodes x {} pods ({} mode), real commands:", a.nodes, a.pods_per_node, a.mode);
    outln!("  lab up        {:8.3} s   (goal < 3 s; kind needs 33 s, k3d 20 s to a working cluster)", up);
    outln!("  lab check     {:8.3} s   (pod-to-pod across nodes + node-to-pod, real TCP)", check);
    outln!("  lab down      {:8.3} s   (goal < 2 s)", down);
    outln!("  lab process   {:8.1} MB RSS (goal < 100 MB)", rss / 1024.0);
    outln!(
        "  DNS from a pod, {} queries each: idle p50 {:.2} ms p99 {:.2} ms | during {} `lab mark`s ({:.0} ms each: a DNS view and {} node proxies re-synced) p50 {:.2} ms p99 {:.2} ms; {} unanswered",
        dns.queries,
        dns.idle.0,
        dns.idle.1,
        MARKS,
        dns.per_mark_ms,
        a.nodes,
        dns.busy.0,
        dns.busy.1,
        dns.lost
    );
    if let Some(bgp) = bgp {
        let b = bgp?;
        outln!("  BGP converged {:8.1} ms  (every node has every other pod CIDR, as `lab up` waited for)", b.converged_ms);
        outln!(
            "  node-2's BIRD killed: its pod CIDR gone from node-1 in {:.1} ms, back {:.1} ms later (restarted by the lab process)",
            b.killed_withdrawn_ms,
            b.restarted_back_ms
        );
        outln!("  node-3 silent (link down): its pod CIDR gone from node-1 in {:.1} ms (hold time 3 s)", b.silent_withdrawn_ms);
    }
    Ok(ExitCode::SUCCESS)
}

/// One lab per combination of mode, encryption and families, made, checked and removed in
/// turn (the same cluster and the same commands for each): a table of their times, and BGP's
/// convergence and failover in each BGP lab.
fn every_mode(a: &LabBenchArgs, exe: &std::path::Path, path: &str) -> Result<ExitCode> {
    let name = format!("bench{}", std::process::id() % 100_000);
    let lab_name: lab::LabName = name.parse()?;
    let nodes = a.nodes.to_string();
    outln!("lab bench: {} nodes x {} pods, every mode (real commands; `lab check` must pass in each):", a.nodes, a.pods_per_node);
    outln!(
        "  {:<8} {:<10} {:<6} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "mode",
        "encrypt",
        "family",
        "up s",
        "check s",
        "down s",
        "BGP conv",
        "killed",
        "back",
        "silent"
    );
    for mode in ["host-gw", "vxlan", "bgp"] {
        for encrypt in [None, Some("wireguard")] {
            for family in ["ipv4", "dual", "ipv6"] {
                let mut args = vec!["lab", "up", "--name", &name, "--nodes", &nodes, "--mode", mode, "--ip-family", family, "-f", path];
                if let Some(e) = encrypt {
                    args.extend(["--encrypt", e]);
                }
                let result = timed_output(exe, &args).and_then(|(up, printed)| {
                    let check = timed(exe, &["lab", "check", "--name", &name])?;
                    let bgp = if mode == "bgp" && a.nodes >= 3 { Some(bgp_figures(&lab_name, &printed)?) } else { None };
                    Ok((up, check, bgp))
                });
                let down = timed(exe, &["lab", "down", "--name", &name]);
                let (up, check, bgp) = result.with_context(|| format!("--mode {mode} --ip-family {family} --encrypt {}", encrypt.unwrap_or("none")))?;
                let ms = |f: Option<f64>| f.map_or_else(|| "-".to_owned(), |v| format!("{v:.0} ms"));
                outln!(
                    "  {:<8} {:<10} {:<6} {:>8.3} {:>8.3} {:>8.3} {:>9} {:>9} {:>9} {:>9}",
                    mode,
                    encrypt.unwrap_or("-"),
                    family,
                    up,
                    check,
                    down?,
                    ms(bgp.as_ref().map(|b| b.converged_ms)),
                    ms(bgp.as_ref().map(|b| b.killed_withdrawn_ms)),
                    ms(bgp.as_ref().map(|b| b.restarted_back_ms)),
                    ms(bgp.as_ref().map(|b| b.silent_withdrawn_ms)),
                );
            }
        }
    }
    outln!(
        "  (BGP: conv = every node has every pod CIDR after up; killed = node-2's BIRD killed, its pod CIDR gone from node-1; back = restarted by the lab process; silent = node-3's link down, withdrawn by the 3 s hold timer)"
    );
    Ok(ExitCode::SUCCESS)
}

/// DNS latency from a pod, idle and while `lab mark` keeps the lab process re-syncing.
struct DnsUnderSync {
    queries: usize,
    idle: (f64, f64),
    busy: (f64, f64),
    per_mark_ms: f64,
    lost: usize,
}

/// Sequential A queries to the cluster DNS from inside `netns`, until `n` were asked or `until`
/// is set (after at least one): their latencies in ms, sorted, and how many got no answer.
fn dns_latencies(netns: &str, n: usize, until: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>) -> Result<(Vec<f64>, usize)> {
    let server = std::net::SocketAddr::from(([10, 96, 0, 10], 53));
    let path = dataplane::netns::path_of(netns);
    let (mut took, lost) = dataplane::netns::run_in(&path, move || {
        let mut took = Vec::new();
        let mut lost = 0;
        let done = || until.as_ref().is_some_and(|u| u.load(std::sync::atomic::Ordering::Relaxed));
        while took.len() + lost < n && (took.is_empty() || !done()) {
            let t = Instant::now();
            match dns::client::lookup_a(server, "app-1.bench.svc.cluster.local.", std::time::Duration::from_secs(1)) {
                Ok(_) => took.push(t.elapsed().as_secs_f64() * 1e3),
                Err(_) => lost += 1,
            }
        }
        (took, lost)
    })?;
    took.sort_by(f64::total_cmp);
    Ok((took, lost))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// How many `lab mark`s the busy phase makes.
const MARKS: usize = 20;

fn dns_while_syncing(exe: &std::path::Path, lab: &lab::LabName) -> Result<DnsUnderSync> {
    let st = lab::state::load(lab)?;
    let client = st.plan.pods.iter().find(|p| !p.host_network && !lab::system::is_dns_pod(p)).context("no pod to ask from")?;
    let marked = st.plan.pods.iter().rev().find(|p| !p.host_network && !lab::system::is_dns_pod(p)).context("no pod to mark")?;
    // Busy: queries for as long as the marks take (each mark re-syncs the DNS view and every
    // node's proxy); then as many queries idle.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let marker = {
        let (stop, exe, lab, ns, pod) = (std::sync::Arc::clone(&stop), exe.to_owned(), lab.to_string(), marked.namespace.clone(), marked.name.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            for i in 0..MARKS {
                let state = if i % 2 == 0 { "not-ready" } else { "ready" };
                let _ = Command::new(&exe).args(["lab", "mark", "--name", &lab, "-n", &ns, &pod, state]).output();
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            started.elapsed().as_secs_f64() / MARKS as f64
        })
    };
    let busy = dns_latencies(&client.netns, usize::MAX, Some(std::sync::Arc::clone(&stop)));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let per_mark = marker.join().map_err(|_| anyhow::anyhow!("the marking thread panicked"))?;
    let (busy, lost_busy) = busy?;
    let (idle, lost_idle) = dns_latencies(&client.netns, busy.len(), None)?;
    Ok(DnsUnderSync {
        queries: busy.len(),
        idle: (percentile(&idle, 0.5), percentile(&idle, 0.99)),
        busy: (percentile(&busy, 0.5), percentile(&busy, 0.99)),
        per_mark_ms: per_mark * 1e3,
        lost: lost_idle + lost_busy,
    })
}
