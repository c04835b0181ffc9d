//! `podnet bench policy-enforce` (root): NetworkPolicy in the kernel at scale, by running the
//! real commands against real labs: how long a change takes to be in force (seen by a probe),
//! what 1,000 policies cost a new connection's first packet (two labs, one with the policies and
//! one without, probed alternately by the same prober), new connections per second through an
//! isolated pod, and the rule set's size, load time and memory.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

#[derive(Args)]
pub struct PolicyEnforceBenchArgs {
    /// Nodes per lab.
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// Pods (each serves 80/TCP), spread over 20 namespaces.
    #[arg(long, default_value_t = 1000)]
    pods: usize,
    /// NetworkPolicies, each isolating one pod and allowing one other pod's label.
    #[arg(long, default_value_t = 1000)]
    policies: usize,
    /// Changes timed (policy create/delete, pod relabel, namespace relabel, in turn).
    #[arg(long, default_value_t = 40)]
    changes: usize,
    /// Connections per contender for the first-packet comparison.
    #[arg(long, default_value_t = 2000)]
    connects: usize,
    /// Leave both labs up afterwards (to look at their tables and logs).
    #[arg(long)]
    keep: bool,
}

const NAMESPACES: usize = 20;

/// The generated cluster: `pods` pods over 20 namespaces (`app: p<i>`), the bench pair
/// `bench/client` and `bench/server` on different nodes, and with `policies`, that many
/// policies, the last of which isolates `bench/server` and allows `role: client` from
/// namespaces labelled `team: bench`.
fn manifests(a: &PolicyEnforceBenchArgs, policies: bool) -> String {
    let mut y = String::new();
    for ns in 0..NAMESPACES {
        let _ = write!(y, "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: ns{ns}, labels: {{team: t{}}}}}\n", ns % 5);
    }
    let _ = write!(y, "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: bench, labels: {{team: bench}}}}\n");
    for i in 0..a.pods.saturating_sub(2) {
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: ns{}, labels: {{app: p{i}}}}}\nspec: {{containers: [{{name: c, ports: [{{containerPort: 80}}]}}]}}\n",
            i % NAMESPACES
        );
    }
    let _ = write!(
        y,
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: client, namespace: bench, labels: {{role: client}}}}\nspec: {{nodeName: node-1, containers: [{{name: c, ports: [{{containerPort: 80}}]}}]}}\n"
    );
    let _ = write!(
        y,
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: server, namespace: bench, labels: {{role: server}}}}\nspec: {{nodeName: node-2, containers: [{{name: c, ports: [{{containerPort: 80}}]}}]}}\n"
    );
    if policies {
        for i in 0..a.policies.saturating_sub(1) {
            let (ns, peer) = (i % NAMESPACES, (i + 1) % a.pods.saturating_sub(2).max(1));
            let _ = write!(
                y,
                "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np{i}, namespace: ns{ns}}}\nspec: {{podSelector: {{matchLabels: {{app: p{i}}}}}, ingress: [{{from: [{{namespaceSelector: {{}}, podSelector: {{matchLabels: {{app: p{peer}}}}}}}], ports: [{{port: 80}}]}}]}}\n"
            );
        }
        y.push_str(&allow_clients());
    }
    y
}

fn allow_clients() -> String {
    "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-clients, namespace: bench}\nspec: {podSelector: {matchLabels: {role: server}}, ingress: [{from: [{namespaceSelector: {matchLabels: {team: bench}}, podSelector: {matchLabels: {role: client}}}], ports: [{port: 80}]}]}\n".into()
}

fn deny_server() -> String {
    "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-server-egress, namespace: bench}\nspec: {podSelector: {matchLabels: {role: client}}, policyTypes: [Egress]}\n".into()
}

fn podnet(exe: &std::path::Path, args: &[&str]) -> Result<String> {
    let out = Command::new(exe).args(args).output().with_context(|| format!("running podnet {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("podnet {} failed: {}{}", args.join(" "), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A lab removed on drop.
struct BenchLab {
    exe: std::path::PathBuf,
    name: String,
}

impl Drop for BenchLab {
    fn drop(&mut self) {
        if !self.name.is_empty() {
            let _ = podnet(&self.exe, &["lab", "down", "--name", &self.name]);
        }
    }
}

/// A thread in a pod's namespace that makes connections on request: the prober both labs share.
struct Prober {
    requests: std::sync::mpsc::Sender<(SocketAddr, Duration, std::sync::mpsc::Sender<Option<Duration>>)>,
}

impl Prober {
    fn start(netns: &str) -> Result<Prober> {
        let (tx, rx) = std::sync::mpsc::channel::<(SocketAddr, Duration, std::sync::mpsc::Sender<Option<Duration>>)>();
        dataplane::netns::spawn_in(&dataplane::netns::path_of(netns), move || {
            for (addr, timeout, reply) in rx {
                let t = Instant::now();
                let done = TcpStream::connect_timeout(&addr, timeout).ok().map(|_| t.elapsed());
                let _ = reply.send(done);
            }
            Ok(())
        })?;
        Ok(Prober { requests: tx })
    }

    /// One new connection: how long the handshake took, `None` when it timed out or failed.
    fn connect(&self, addr: SocketAddr, timeout: Duration) -> Option<Duration> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.requests.send((addr, timeout, tx)).ok()?;
        rx.recv().ok().flatten()
    }
}

fn pod_ip(lab: &lab::LabName, ns: &str, name: &str) -> Result<(String, Ipv4Addr)> {
    let st = lab::state::load(lab)?;
    let i = st.plan.pods.iter().position(|p| p.namespace == ns && p.name == name).with_context(|| format!("no pod {ns}/{name}"))?;
    match st.pod_ips[i] {
        Some(std::net::IpAddr::V4(v4)) => Ok((st.plan.pods[i].netns.clone(), v4)),
        _ => anyhow::bail!("{ns}/{name} has no IPv4 address"),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs `change` and waits until connections from the prober to `addr` succeed (`want`) or
/// stop succeeding: milliseconds from the start of the command to the first attempt that sees
/// the new verdict (an attempt that does not answer within 20 ms is blocked: the lab answers in
/// well under 1 ms; attempts 1 ms apart).
fn time_change(prober: &Prober, addr: SocketAddr, want: bool, change: impl FnOnce() -> Result<String> + Send) -> Result<f64> {
    let t = Instant::now();
    let changing = std::thread::scope(|s| -> Result<Option<f64>> {
        let cmd = s.spawn(change);
        let mut seen = None;
        while t.elapsed() < Duration::from_secs(10) {
            let attempt = t.elapsed();
            if prober.connect(addr, Duration::from_millis(20)).is_some() == want {
                seen = Some(attempt.as_secs_f64() * 1e3);
                break;
            }
            // 1 ms between attempts: enough resolution for a 100 ms goal, and the prober does
            // not flood the lab it measures with thousands of connections a second.
            std::thread::sleep(Duration::from_millis(1));
        }
        cmd.join().map_err(|_| anyhow::anyhow!("the change panicked"))??;
        Ok(seen)
    })?;
    changing.with_context(|| format!("the change was not seen within 10 s (want {})", if want { "allowed" } else { "blocked" }))
}

pub fn run(a: PolicyEnforceBenchArgs) -> Result<ExitCode> {
    crate::lab_cmd::need_root()?;
    let exe = std::env::current_exe()?;
    let dir = tempfile::tempdir()?;
    let id = std::process::id() % 100_000;
    let nodes = a.nodes.to_string();
    let mut labs = Vec::new();
    let mut up_seconds = Vec::new();
    for (suffix, policies) in [("with", true), ("none", false)] {
        let file = dir.path().join(format!("{suffix}.yaml"));
        std::fs::write(&file, manifests(&a, policies))?;
        let lab = BenchLab { exe: exe.clone(), name: format!("pe{id}-{suffix}") };
        let t = Instant::now();
        podnet(&exe, &["lab", "up", "--name", &lab.name, "--nodes", &nodes, "-f", &file.to_string_lossy()])?;
        up_seconds.push(t.elapsed().as_secs_f64());
        labs.push(lab);
    }
    let with: lab::LabName = labs[0].name.parse()?;
    let none: lab::LabName = labs[1].name.parse()?;
    // The rule set: elements and rules of every node's policy table, its full load time (from
    // the lab log) and the lab process's memory.
    let st = lab::state::load(&with)?;
    let (mut elements, mut rules) = (0usize, 0usize);
    for node in &st.plan.nodes {
        let listed = Command::new("ip").args(["netns", "exec", &node.netns, "nft", "-j", "list", "table", "inet", policy::enforce::TABLE]).output()?;
        let v: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap_or_default();
        for item in v["nftables"].as_array().into_iter().flatten() {
            elements += item["set"]["elem"].as_array().map_or(0, Vec::len) + item["map"]["elem"].as_array().map_or(0, Vec::len);
            rules += usize::from(item.get("rule").is_some());
        }
    }
    let log = std::fs::read_to_string(lab::daemon::log_file(&with)).unwrap_or_default();
    let full_ms: Vec<f64> = log.lines().filter(|l| l.contains("Full sync")).filter_map(|l| l.rsplit(", ").next()?.strip_suffix(" ms")?.parse().ok()).collect();
    let rss = |lab: &lab::LabName| {
        std::fs::read_to_string(lab::state::pid_file(lab)).ok().and_then(|pid| crate::bench::proc_status_kib(pid.trim(), "VmRSS")).unwrap_or(f64::NAN) / 1024.0
    };

    // First packet: the same prober, alternating between the two labs' client pods (one prober
    // thread per lab, used in turn), to each lab's server pod.
    let (client_with, _) = pod_ip(&with, "bench", "client")?;
    let (client_none, _) = pod_ip(&none, "bench", "client")?;
    let (_, server_with) = pod_ip(&with, "bench", "server")?;
    let (_, server_none) = pod_ip(&none, "bench", "server")?;
    let probers = [Prober::start(&client_with)?, Prober::start(&client_none)?];
    let targets = [SocketAddr::from((server_with, 80)), SocketAddr::from((server_none, 80))];
    // Ten rounds, each contender first in every other one; the ratio of each round's medians,
    // and the median of those ratios (this machine's noise moves whole rounds, not one side).
    let mut took: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut lost = [0usize; 2];
    let mut ratios = Vec::new();
    for round in 0..10 {
        let mut this: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for i in 0..(a.connects / 10).max(1) * 2 {
            let k = (i + round) % 2;
            match probers[k].connect(targets[k], Duration::from_secs(1)) {
                Some(d) => this[k].push(d.as_secs_f64() * 1e6),
                None => lost[k] += 1,
            }
        }
        this.iter_mut().for_each(|t| t.sort_by(f64::total_cmp));
        ratios.push(percentile(&this[0], 0.5) / percentile(&this[1], 0.5));
        took[0].extend(&this[0]);
        took[1].extend(&this[1]);
    }
    took.iter_mut().for_each(|t| t.sort_by(f64::total_cmp));
    ratios.sort_by(f64::total_cmp);
    // New connections per second, 1 s blocks alternating, 3 each.
    let (mut rate, mut failed) = ([0f64; 2], [0u32; 2]);
    for round in 0..6 {
        let k = round % 2;
        let t = Instant::now();
        let mut n = 0;
        while t.elapsed() < Duration::from_secs(1) {
            match probers[k].connect(targets[k], Duration::from_secs(1)) {
                Some(_) => n += 1,
                None => failed[k] += 1,
            }
        }
        rate[k] += f64::from(n) / t.elapsed().as_secs_f64() / 3.0;
    }

    // Changes, each timed from the command's start to the new verdict seen by the prober.
    let target = targets[0];
    let prober = &probers[0];
    let name = labs[0].name.clone();
    let deny = dir.path().join("deny.yaml");
    std::fs::write(&deny, deny_server())?;
    let deny = deny.to_string_lossy().into_owned();
    let mut kinds: Vec<(&str, Vec<f64>)> = ["policy create", "policy delete", "pod relabel", "namespace relabel"].iter().map(|k| (*k, Vec::new())).collect();
    for i in 0..a.changes {
        let (first, second): (Vec<&str>, Vec<&str>) = match i % 4 {
            0 | 1 => (vec!["apply", "-f", &deny], vec!["delete", "-f", &deny]),
            2 => (vec!["label", "pod", "-n", "bench", "client", "role=other"], vec!["label", "pod", "-n", "bench", "client", "role=client"]),
            _ => (vec!["label", "namespace", "bench", "team=other"], vec!["label", "namespace", "bench", "team=bench"]),
        };
        let run = |args: &[&str]| {
            let mut full = vec!["lab"];
            full.extend_from_slice(&args[..1]);
            full.extend(["--name", &name]);
            full.extend_from_slice(&args[1..]);
            podnet(&exe, &full)
        };
        let blocked = time_change(prober, target, false, || run(&first))?;
        let allowed = time_change(prober, target, true, || run(&second))?;
        match i % 4 {
            0 | 1 => {
                kinds[0].1.push(blocked);
                kinds[1].1.push(allowed);
            }
            k => {
                kinds[k].1.push(blocked);
                kinds[k].1.push(allowed);
            }
        }
    }
    let mut all: Vec<f64> = kinds.iter().flat_map(|(_, v)| v.iter().copied()).collect();
    all.sort_by(f64::total_cmp);

    outln!("policy-enforce bench: {} nodes, {} pods, {} NetworkPolicies (and a lab without them), real commands and packets", a.nodes, a.pods, a.policies);
    outln!("  lab up             {:8.2} s with the policies, {:.2} s without", up_seconds[0], up_seconds[1]);
    outln!(
        "  policy tables      {elements} set/map elements and {rules} rules over {} nodes; full load per node median {:.1} ms (from lab.log)",
        st.plan.nodes.len(),
        {
            let mut f = full_ms.clone();
            f.sort_by(f64::total_cmp);
            percentile(&f, 0.5)
        }
    );
    outln!("  lab process        {:8.1} MB RSS with the policies, {:.1} MB without", rss(&with), rss(&none));
    outln!(
        "  first packet       TCP connect p50 {:.1} µs p99 {:.1} µs with the policies | {:.1} µs / {:.1} µs without: ratio of medians {:.3}, per round {:.3}..{:.3}, median {:.3} (goal ≤ 1.1); {} and {} of {} timed out",
        percentile(&took[0], 0.5),
        percentile(&took[0], 0.99),
        percentile(&took[1], 0.5),
        percentile(&took[1], 0.99),
        percentile(&took[0], 0.5) / percentile(&took[1], 0.5),
        ratios.first().copied().unwrap_or(f64::NAN),
        ratios.last().copied().unwrap_or(f64::NAN),
        percentile(&ratios, 0.5),
        lost[0],
        lost[1],
        a.connects
    );
    outln!(
        "  new connections    {:8.0}/s to an isolated pod with the policies, {:.0}/s without (one prober, sequential; {} and {} failed)",
        rate[0],
        rate[1],
        failed[0],
        failed[1]
    );
    for (kind, v) in &mut kinds {
        v.sort_by(f64::total_cmp);
        outln!("  {kind:<18} to enforced: p50 {:6.1} ms p99 {:6.1} ms ({} samples)", percentile(v, 0.5), percentile(v, 0.99), v.len());
    }
    outln!("  every change       to enforced: p50 {:6.1} ms p99 {:6.1} ms (goal p99 < 100 ms)", percentile(&all, 0.5), percentile(&all, 0.99));
    if a.keep {
        outln!("  kept: labs {} and {} (podnet lab down --name NAME removes them)", labs[0].name, labs[1].name);
        labs.iter_mut().for_each(|l| l.name.clear());
    }
    drop(labs);
    Ok(ExitCode::SUCCESS)
}
