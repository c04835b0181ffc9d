//! `podnet bench encrypt`: what `--encrypt wireguard` costs between pods on two nodes. Two labs
//! up side by side (plain host-gw, and host-gw with WireGuard), the same client and server pods;
//! iperf3 throughput and request latency measured in each, alternating, with the same clients.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

#[derive(Args)]
pub struct EncryptBenchArgs {
    /// Rounds (each: both labs, one after the other).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds of iperf3 per measurement.
    #[arg(long, default_value_t = 3)]
    seconds: u32,
    /// Requests per latency measurement.
    #[arg(long, default_value_t = 300)]
    round_trips: usize,
}

const MANIFEST: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: client, namespace: bench}\nspec:\n  nodeName: node-1\n  containers: [{name: c, ports: [{containerPort: 7000}]}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: server, namespace: bench}\nspec:\n  nodeName: node-2\n  containers: [{name: s, ports: [{containerPort: 8080}]}]\n";

/// One lab's measurements: throughputs (bit/s), and (p50, p99) latencies (µs).
type Measured = (Vec<f64>, Vec<(f64, f64)>);

struct Lab {
    name: String,
    exe: std::path::PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(&self.exe).args(["lab", "down", "--name", &self.name]).output();
    }
}

fn server_ip(lab: &str) -> Result<Ipv4Addr> {
    let st = lab::state::load(&lab.parse()?)?;
    let i = st.plan.pods.iter().position(|p| p.name == "server").context("no server pod")?;
    match st.pod_ips.get(i).copied().flatten() {
        Some(std::net::IpAddr::V4(v4)) => Ok(v4),
        _ => anyhow::bail!("the server pod has no IPv4 address"),
    }
}

/// iperf3 from the client pod to the server pod: bits per second received.
fn throughput(lab: &str, server: Ipv4Addr, seconds: u32) -> Result<f64> {
    let out = Command::new("ip")
        .args(["netns", "exec", &format!("podnet.{lab}.bench.client"), "iperf3", "-c", &server.to_string(), "-t", &seconds.to_string(), "-J"])
        .output()
        .context("running iperf3 (apt-get install iperf3)")?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| format!("iperf3 said: {}", String::from_utf8_lossy(&out.stderr)))?;
    v["end"]["sum_received"]["bits_per_second"].as_f64().with_context(|| format!("iperf3: {v}"))
}

/// Requests to the server's echo port from the client pod, each on a new TCP connection
/// (handshake, one byte, the answer, close: the echo server answers once per connection): p50
/// and p99 in microseconds.
fn round_trips(lab: &str, server: Ipv4Addr, n: usize) -> Result<(f64, f64)> {
    let path = dataplane::netns::path_of(&format!("podnet.{lab}.bench.client"));
    let mut took = dataplane::netns::run_in(&path, move || -> std::io::Result<Vec<f64>> {
        use std::io::{Read, Write};
        let mut took = Vec::with_capacity(n);
        let mut buf = Vec::with_capacity(4096);
        for _ in 0..n {
            let t = Instant::now();
            let mut s = std::net::TcpStream::connect_timeout(&SocketAddr::from((server, 8080)), Duration::from_secs(3))?;
            s.set_nodelay(true)?;
            s.write_all(b"x")?;
            buf.clear();
            s.read_to_end(&mut buf)?;
            took.push(t.elapsed().as_secs_f64() * 1e6);
        }
        Ok(took)
    })??;
    if took.is_empty() {
        bail!("no round trip completed");
    }
    took.sort_by(f64::total_cmp);
    let at = |p: f64| took[((took.len() - 1) as f64 * p).round() as usize];
    Ok((at(0.5), at(0.99)))
}

pub fn run(a: EncryptBenchArgs) -> Result<ExitCode> {
    let exe = std::env::current_exe()?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("pods.yaml"), MANIFEST)?;
    let id = std::process::id() % 10_000;
    let mut labs = Vec::new();
    for (name, extra) in [(format!("plain{id}"), None), (format!("wg{id}"), Some("wireguard"))] {
        let mut args = vec![
            "lab".to_owned(),
            "up".into(),
            "--name".into(),
            name.clone(),
            "--nodes".into(),
            "2".into(),
            "-f".into(),
            dir.path().to_string_lossy().into_owned(),
        ];
        if let Some(e) = extra {
            args.extend(["--encrypt".to_owned(), e.to_owned()]);
        }
        let out = Command::new(&exe).args(&args).output()?;
        labs.push(Lab { name: name.clone(), exe: exe.clone() });
        if !out.status.success() {
            bail!("lab up {name}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    // One iperf3 server per lab, in its server pod.
    let mut servers = Vec::new();
    for lab in &labs {
        let child = Command::new("ip")
            .args(["netns", "exec", &format!("podnet.{}.bench.server", lab.name), "iperf3", "-s"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting iperf3 -s (apt-get install iperf3)")?;
        servers.push(child);
    }
    std::thread::sleep(Duration::from_millis(300));
    let result = (|| -> Result<String> {
        let ips: Vec<Ipv4Addr> = labs.iter().map(|l| server_ip(&l.name)).collect::<Result<_>>()?;
        // Per lab: throughputs, and (p50, p99) of each latency measurement.
        let mut rows: [Measured; 2] = Default::default();
        for _ in 0..a.rounds {
            for (i, lab) in labs.iter().enumerate() {
                rows[i].0.push(throughput(&lab.name, ips[i], a.seconds)?);
                rows[i].1.push(round_trips(&lab.name, ips[i], a.round_trips)?);
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "encryption between pods on two nodes ({} rounds, alternating; iperf3 {} s, {} requests on new TCP connections each):",
            a.rounds, a.seconds, a.round_trips
        );
        let mut medians = Vec::new();
        for (i, label) in ["host-gw", "host-gw + WireGuard"].iter().enumerate() {
            let mut bps = rows[i].0.clone();
            let mut p50: Vec<f64> = rows[i].1.iter().map(|r| r.0).collect();
            let mut p99: Vec<f64> = rows[i].1.iter().map(|r| r.1).collect();
            let m = (median(&mut bps), median(&mut p50), median(&mut p99));
            let _ = writeln!(out, "  {label:<22} {:8.0} Mbit/s   request p50 {:7.1} µs  p99 {:7.1} µs", m.0 / 1e6, m.1, m.2);
            medians.push(m);
        }
        let _ = writeln!(out, "  WireGuard/plain: throughput x{:.2}, request p50 x{:.2}", medians[1].0 / medians[0].0, medians[1].1 / medians[0].1);
        Ok(out)
    })();
    for mut s in servers {
        let _ = s.kill();
        let _ = s.wait();
    }
    drop(labs);
    out!("{}", result?);
    Ok(ExitCode::SUCCESS)
}
