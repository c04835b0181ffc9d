//! `podnet`: Kubernetes pod networking in Rust.

#![forbid(unsafe_code)]

mod bench;
mod bench_cni;
mod policy_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Kubernetes pod networking: pod network, services, DNS, ingress, NetworkPolicy, debugging.
#[derive(Parser)]
#[command(name = "podnet", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// NetworkPolicy: connectivity matrix, explanations and lint, offline from manifests.
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCommand),
    /// Benchmarks that print figures.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Policy(cmd) => policy_cmd::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
