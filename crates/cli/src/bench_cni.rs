//! `podnet bench cni`: ADD and DEL of our bridge + IPAM against the reference plugins, side by
//! side in one run, each exec'd the way a runtime does it from the node's namespace.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use dataplane::netns::{self, NamedNetns};
use serde_json::{Value, json};

use crate::bench::median;

#[derive(Args)]
pub struct CniBenchArgs {
    /// Containers to ADD then DEL per plugin.
    #[arg(long, default_value_t = 50)]
    containers: usize,
    /// Our plugin binary (default: podnet-cni next to this executable).
    #[arg(long)]
    plugin: Option<PathBuf>,
    /// Where the reference plugins are (Debian: containernetworking-plugins).
    #[arg(long, default_value = "/usr/lib/cni")]
    reference_dir: PathBuf,
}

struct Subject {
    label: &'static str,
    binary: PathBuf,
    conf: Value,
}

/// Execs one plugin command from the node namespace and times the child alone.
fn exec(node: &Path, s: &Subject, command: &str, id: &str, pod: &Path, cni_path: &Path) -> Result<Duration> {
    let binary = s.binary.clone();
    let conf = s.conf.to_string();
    let name = command.to_owned();
    let (command, id, pod, cni_path) = (command.to_owned(), id.to_owned(), pod.to_owned(), cni_path.to_owned());
    let (elapsed, out) = netns::run_in(node, move || -> std::io::Result<(Duration, std::process::Output)> {
        let start = Instant::now();
        let mut child = Command::new(&binary)
            .env_clear()
            .env("CNI_COMMAND", &command)
            .env("CNI_CONTAINERID", &id)
            .env("CNI_NETNS", &pod)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child.stdin.take().map(|mut i| i.write_all(conf.as_bytes())).transpose()?;
        let out = child.wait_with_output()?;
        Ok((start.elapsed(), out))
    })??;
    if !out.status.success() {
        bail!("{} {name} failed: {}", s.label, String::from_utf8_lossy(&out.stdout));
    }
    Ok(elapsed)
}

pub fn run(args: CniBenchArgs) -> Result<std::process::ExitCode> {
    let ours = match args.plugin {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("podnet-cni"),
    };
    if !ours.is_file() {
        bail!("{} not found: build it with `cargo build --release -p podnet-cni` or pass --plugin", ours.display());
    }
    let reference = args.reference_dir.join("bridge");
    if !reference.is_file() {
        bail!("{} not found: install the reference plugins (apt-get install containernetworking-plugins)", reference.display());
    }
    let data = tempfile::tempdir()?;
    let ipam = |ty: &str| json!({"type": ty, "ranges": [[{"subnet": "10.88.0.0/16"}]], "dataDir": data.path()});
    let subjects = [
        Subject {
            label: "podnet",
            binary: ours.clone(),
            conf: json!({"cniVersion": "1.0.0", "name": "bench-ours", "type": "podnet-bridge", "bridge": "pnb0",
                         "isGateway": true, "hairpinMode": true, "ipam": ipam("podnet-ipam")}),
        },
        Subject {
            label: "reference",
            binary: reference,
            conf: json!({"cniVersion": "1.0.0", "name": "bench-ref", "type": "bridge", "bridge": "rfb0",
                         "isGateway": true, "hairpinMode": true, "ipam": ipam("host-local")}),
        },
    ];
    let id = format!("pnbench{}", std::process::id());
    let node = NamedNetns::new(&format!("{id}-node")).context("creating the node namespace (needs root)")?;
    let pods: Vec<NamedNetns> = (0..args.containers).map(|i| NamedNetns::new(&format!("{id}-{i}"))).collect::<std::io::Result<_>>()?;

    let mut report = String::new();
    let _ = writeln!(report, "CNI bridge + IPAM, {} containers each, median (exec'd from the node namespace):", args.containers);
    let mut medians = Vec::new();
    // Interleave the two plugins' containers so machine noise hits both alike.
    let mut adds: Vec<Vec<Duration>> = vec![Vec::new(), Vec::new()];
    let mut dels: Vec<Vec<Duration>> = vec![Vec::new(), Vec::new()];
    for (i, pod) in pods.iter().enumerate() {
        for (k, s) in subjects.iter().enumerate() {
            let container = format!("{}-{i}", s.label);
            adds[k].push(exec(node.path(), s, "ADD", &container, pod.path(), &args.reference_dir)?);
            // DEL right away: the other plugin uses eth0 in the same pod next.
            dels[k].push(exec(node.path(), s, "DEL", &container, pod.path(), &args.reference_dir)?);
        }
    }
    for (k, s) in subjects.iter().enumerate() {
        let (a, d) = (median(adds[k].clone()), median(dels[k].clone()));
        medians.push((a, d));
        let _ = writeln!(report, "  {:<10} ADD {:6.2} ms   DEL {:6.2} ms", s.label, a.as_secs_f64() * 1e3, d.as_secs_f64() * 1e3);
    }
    let ratio = |x: Duration, y: Duration| x.as_secs_f64() / y.as_secs_f64();
    let _ = writeln!(
        report,
        "  ratio      ADD {:.2}x     DEL {:.2}x   (podnet / reference; goal <= 0.33)",
        ratio(medians[0].0, medians[1].0),
        ratio(medians[0].1, medians[1].1)
    );
    out!("{report}");
    Ok(std::process::ExitCode::SUCCESS)
}
