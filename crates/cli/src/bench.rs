//! `podnet bench policy`: generates a cluster, then times what `policy matrix -o json` does.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use clap::{Args, Subcommand};
use policy::PolicySet;
use policy::render::Format;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Generate a cluster and time loading, policy compilation, the matrix and JSON output.
    Policy(PolicyBenchArgs),
    /// CNI ADD and DEL (bridge + IPAM): podnet-cni against the reference plugins (root).
    Cni(crate::bench_cni::CniBenchArgs),
    /// lab up / check / down of a generated cluster, and the lab process's memory (root).
    Lab(crate::bench_lab::LabBenchArgs),
    /// `--encrypt wireguard`'s cost: iperf3 throughput and TCP round trips between pods on two
    /// nodes, with and without, side by side (root, iperf3).
    Encrypt(crate::bench_encrypt::EncryptBenchArgs),
    /// The service proxy at 1k/10k/30k services: full load, one change, connect latency, memory (root).
    Proxy(crate::bench_proxy::ProxyBenchArgs),
    /// The cluster DNS under dnsperf, beside Knot DNS: QPS, latency, search path, memory (root).
    Dns(crate::bench_dns::DnsBenchArgs),
    /// The HTTP(S) proxy under wrk beside nginx and haproxy, and at 1000 Ingresses (root).
    Gateway(crate::bench_gateway::GatewayBenchArgs),
    /// NetworkPolicy in the kernel: change to enforced, first-packet cost, rule set size (root).
    PolicyEnforce(crate::bench_policy_enforce::PolicyEnforceBenchArgs),
    /// One node agent against a real API server with 1,000 nodes, 30,000 pods, 10,000 services:
    /// memory, start to rules, watch event to rules (root, the Kubernetes binaries).
    Agent(crate::bench_agent::AgentBenchArgs),
}

#[derive(Args)]
pub struct PolicyBenchArgs {
    /// Number of namespaces.
    #[arg(long, default_value_t = 50)]
    namespaces: usize,
    /// Pods per namespace (each serves 4 ports: 80/TCP, 443/TCP, 53/UDP, 9090/TCP).
    #[arg(long, default_value_t = 20)]
    pods: usize,
    /// NetworkPolicies per namespace.
    #[arg(long, default_value_t = 20)]
    policies: usize,
    /// Keep the generated manifests in this directory (to time `podnet policy matrix -f DIR` too).
    #[arg(long, value_name = "DIR")]
    write: Option<PathBuf>,
    /// Repetitions; the median is printed.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

pub fn run(cmd: BenchCommand) -> Result<ExitCode> {
    match cmd {
        BenchCommand::Policy(args) => policy_bench(args),
        BenchCommand::Cni(args) => crate::bench_cni::run(args),
        BenchCommand::Lab(args) => crate::bench_lab::run(args),
        BenchCommand::Encrypt(args) => crate::bench_encrypt::run(args),
        BenchCommand::Proxy(args) => crate::bench_proxy::run(args),
        BenchCommand::Dns(args) => crate::bench_dns::run(args),
        BenchCommand::Gateway(args) => crate::bench_gateway::run(args),
        BenchCommand::PolicyEnforce(args) => crate::bench_policy_enforce::run(args),
        BenchCommand::Agent(args) => crate::bench_agent::run(args),
    }
}

fn policy_bench(args: PolicyBenchArgs) -> Result<ExitCode> {
    let yaml = generate(args.namespaces, args.pods, args.policies);
    let temp;
    let dir = match &args.write {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.clone()
        }
        None => {
            temp = TempDir::new()?;
            temp.0.clone()
        }
    };
    let file = dir.join("cluster.yaml");
    std::fs::write(&file, &yaml).with_context(|| format!("writing {}", file.display()))?;

    let mut samples: Vec<[Duration; 4]> = Vec::new();
    let mut json_len = 0;
    let mut shape = (0, 0, 0);
    for _ in 0..args.runs.max(1) {
        let t0 = Instant::now();
        let state = model::load_cluster(&[&dir])?;
        let t1 = Instant::now();
        let policies = PolicySet::compile(&state).map_err(|e| anyhow!("generated policies are invalid: {}", e[0]))?;
        let t2 = Instant::now();
        let ports = policy::declared_ports(&state);
        let matrix = policy::compute(&state, &policies, &ports);
        let t3 = Instant::now();
        let mut sink = CountingSink(0);
        policy::render::render(&matrix, &state.pods, Format::Json, &mut std::io::BufWriter::new(&mut sink))?;
        let t4 = Instant::now();
        json_len = sink.0;
        shape = (state.pods.len(), policies.policies.len(), ports.len());
        samples.push([t1 - t0, t2 - t1, t3 - t2, t4 - t3]);
    }
    let median = |k: usize| {
        let mut v: Vec<Duration> = samples.iter().map(|s| s[k]).collect();
        v.sort();
        v[v.len() / 2]
    };
    let total: Duration = (0..4).map(median).sum();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "policy matrix bench: {} pods in {} namespaces, {} policies, {} ports; manifests {:.1} MB; median of {}",
        shape.0,
        args.namespaces,
        shape.1,
        shape.2,
        yaml.len() as f64 / 1e6,
        samples.len()
    );
    let _ = writeln!(out, "  load (YAML + model)   {:8.1} ms", ms(median(0)));
    let _ = writeln!(out, "  compile policies      {:8.1} ms", ms(median(1)));
    let _ = writeln!(out, "  compute matrix        {:8.1} ms", ms(median(2)));
    let _ = writeln!(out, "  render JSON           {:8.1} ms  ({:.1} MB)", ms(median(3)), json_len as f64 / 1e6);
    let _ = writeln!(out, "  total                 {:8.1} ms", ms(total));
    if let Some(rss) = proc_status_kib("self", "VmHWM") {
        let _ = writeln!(out, "  peak RSS              {:8.1} MB", rss / 1024.0);
    }
    if let Some(dir) = &args.write {
        let _ = writeln!(out, "manifests kept in {}: time `podnet policy matrix -f {} -o json`", dir.display(), dir.display());
    }
    out!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// A memory figure of a process (`VmRSS`, `VmHWM`, …; `pid` may be `self`), in KiB.
pub(crate) fn proc_status_kib(pid: &str, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.strip_prefix(field).is_some_and(|rest| rest.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The middle value (the upper one of an even count).
pub(crate) fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

/// Counts bytes written: the JSON is rendered in full, but not kept.
struct CountingSink(usize);

impl std::io::Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("podnet-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const TIERS: [&str; 3] = ["web", "api", "db"];
const ENVS: [&str; 3] = ["prod", "dev", "staging"];

/// A deterministic cluster: namespaces with team/env labels, pods with app/tier labels serving
/// four named ports, and a mix of the policies people write (default deny, tier-to-tier,
/// cross-namespace, DNS egress, ipBlocks with excepts, port ranges, expressions).
pub fn generate(namespaces: usize, pods: usize, policies: usize) -> String {
    let mut y = String::with_capacity(namespaces * (pods * 700 + policies * 600));
    for n in 0..namespaces {
        let ns = format!("ns-{n:03}");
        let _ = write!(y, "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    team: team-{}\n    env: {}\n", n % 5, ENVS[n % 3]);
        for p in 0..pods {
            let idx = n * pods + p;
            let _ = write!(
                y,
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: pod-{p:03}\n  namespace: {ns}\n  labels:\n    app: app-{}\n    tier: {}\n    version: v{}\nspec:\n  containers:\n  - name: main\n    image: registry.example/app:1\n    ports:\n    - {{name: http, containerPort: 80}}\n    - {{name: https, containerPort: 443}}\n    - {{name: dns, containerPort: 53, protocol: UDP}}\n    - {{name: metrics, containerPort: 9090}}\nstatus:\n  phase: Running\n  podIP: 10.{}.{}.{}\n",
                p % 10,
                TIERS[p % 3],
                p % 2,
                244 + idx / 62500,
                (idx / 250) % 250,
                idx % 250 + 1
            );
        }
        for k in 0..policies {
            let _ = write!(y, "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: np-{k:03}\n  namespace: {ns}\nspec:\n");
            y.push_str(&policy_spec(n, k));
        }
    }
    y
}

fn policy_spec(n: usize, k: usize) -> String {
    let app = format!("app-{}", k % 10);
    let tier = TIERS[k % 3];
    let other_tier = TIERS[(k + 1) % 3];
    match k % 8 {
        0 => "  podSelector: {}\n  policyTypes: [Ingress, Egress]\n".into(),
        1 => format!(
            "  podSelector:\n    matchLabels: {{tier: {tier}}}\n  ingress:\n  - from:\n    - podSelector:\n        matchLabels: {{tier: {other_tier}}}\n    ports:\n    - port: https\n"
        ),
        2 => format!(
            "  podSelector:\n    matchLabels: {{app: {app}}}\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchLabels: {{env: prod}}\n      podSelector:\n        matchLabels: {{tier: web}}\n    ports:\n    - {{protocol: TCP, port: 80}}\n"
        ),
        3 => "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - namespaceSelector: {}\n      podSelector:\n        matchLabels: {app: app-0}\n    ports:\n    - {protocol: UDP, port: 53}\n".into(),
        4 => format!(
            "  podSelector:\n    matchLabels: {{tier: {tier}}}\n  ingress:\n  - from:\n    - ipBlock:\n        cidr: 10.0.0.0/8\n        except: [10.244.{}.0/24]\n",
            n % 250
        ),
        5 => format!(
            "  podSelector:\n    matchExpressions:\n    - {{key: app, operator: In, values: [{app}, app-{}]}}\n  ingress:\n  - ports:\n    - {{port: 9000, endPort: 9100}}\n",
            (k + 3) % 10
        ),
        6 => format!(
            "  podSelector:\n    matchLabels: {{tier: {tier}}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - podSelector:\n        matchExpressions:\n        - {{key: tier, operator: NotIn, values: [{tier}]}}\n    - namespaceSelector:\n        matchLabels: {{team: team-{}}}\n    ports:\n    - port: http\n    - port: metrics\n",
            (n + k) % 5
        ),
        _ => format!(
            "  podSelector:\n    matchLabels: {{app: {app}, version: v{}}}\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchExpressions:\n        - {{key: env, operator: NotIn, values: [dev]}}\n  - from:\n    - podSelector: {{}}\n    ports:\n    - port: metrics\n",
            k % 2
        ),
    }
}

/// A process a benchmark started, stopped on drop: SIGTERM first (nginx's master then stops its
/// workers, which SIGKILL would orphan), SIGKILL after a second.
pub(crate) struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.0.id()).unwrap_or(0));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..50 {
            if self.0.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `program` run in network namespace `ns`, pinned to `core`.
pub(crate) fn in_ns(ns: &str, core: u32, program: &str) -> std::process::Command {
    let mut c = std::process::Command::new("ip");
    c.args(["netns", "exec", ns, "taskset", "-c", &core.to_string(), program]);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_clusters_load_and_compile() {
        let yaml = generate(3, 4, 9);
        let objects = model::load_str(&yaml, std::path::Path::new("gen.yaml")).unwrap();
        let state = model::ClusterState::from_objects(&objects).unwrap();
        assert_eq!(state.pods.len(), 12);
        assert_eq!(state.namespaces.len(), 3);
        let policies = PolicySet::compile(&state).unwrap();
        assert_eq!(policies.policies.len(), 27);
        assert_eq!(policy::declared_ports(&state).len(), 4);
    }
}
