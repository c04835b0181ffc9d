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
    /// Pods per node (each declares 80/TCP and 53/UDP).
    #[arg(long, default_value_t = 30)]
    pods_per_node: usize,
    /// Routing mode.
    #[arg(long, default_value = "host-gw")]
    mode: String,
}

fn timed(exe: &std::path::Path, args: &[&str]) -> Result<f64> {
    let t = Instant::now();
    let out = Command::new(exe).args(args).output().with_context(|| format!("running podnet {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("podnet {} failed: {}{}", args.join(" "), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(t.elapsed().as_secs_f64())
}

pub fn run(a: LabBenchArgs) -> Result<ExitCode> {
    let exe = std::env::current_exe()?;
    let dir = tempfile::tempdir()?;
    let mut yaml = String::new();
    for i in 0..a.nodes * a.pods_per_node {
        let _ = write!(
            yaml,
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: pod-{i:04}, namespace: bench, labels: {{app: app-{}}}}}\nspec: {{containers: [{{name: c, ports: [{{containerPort: 80}}, {{containerPort: 53, protocol: UDP}}]}}]}}\n",
            i % 10
        );
    }
    std::fs::write(dir.path().join("pods.yaml"), yaml)?;
    let name = format!("bench{}", std::process::id() % 100_000);
    let lab_name: lab::LabName = name.parse()?;
    let nodes = a.nodes.to_string();
    let path = dir.path().to_string_lossy().into_owned();
    let up = timed(&exe, &["lab", "up", "--name", &name, "--nodes", &nodes, "--mode", &a.mode, "-f", &path]);
    let result = up.and_then(|up| {
        let rss = std::fs::read_to_string(lab::state::pid_file(&lab_name))
            .ok()
            .and_then(|pid| crate::bench::proc_status_kib(pid.trim(), "VmRSS"))
            .unwrap_or(f64::NAN);
        let check = timed(&exe, &["lab", "check", "--name", &name])?;
        Ok((up, rss, check))
    });
    let down = timed(&exe, &["lab", "down", "--name", &name]);
    let (up, rss, check) = result?;
    let down = down?;
    outln!("lab bench: {} nodes x {} pods ({} mode), real commands:", a.nodes, a.pods_per_node, a.mode);
    outln!("  lab up        {:8.3} s   (goal < 3 s; kind needs 33 s, k3d 20 s to a working cluster)", up);
    outln!("  lab check     {:8.3} s   (pod-to-pod across nodes + node-to-pod, real TCP)", check);
    outln!("  lab down      {:8.3} s   (goal < 2 s)", down);
    outln!("  lab process   {:8.1} MB RSS (goal < 100 MB)", rss / 1024.0);
    Ok(ExitCode::SUCCESS)
}
