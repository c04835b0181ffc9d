//! `podnet`: Kubernetes pod networking in Rust.

#![forbid(unsafe_code)]

/// `print!` that never panics: a closed stdout (`| head`) is not an error worth a backtrace.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `println!` that never panics (see `out!`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod agent_cmd;
mod bench;
mod bench_agent;
mod bench_cni;
mod bench_dns;
mod bench_encrypt;
mod bench_gateway;
mod bench_lab;
mod bench_policy_enforce;
mod bench_proxy;
mod dns_cmd;
mod gateway_api_status;
mod gateway_cmd;
mod ingress_status;
mod lab_check;
mod lab_cmd;
mod lab_control_plane;
mod lab_describe;
mod lab_kubelet;
mod lab_probe;
mod lab_routes;
mod lab_rules;
mod lab_ui;
mod observe_cmd;
mod policy_cmd;
mod proxy_cmd;
mod trace_cmd;
mod watch;

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
    /// NetworkPolicy: connectivity matrix, explanations and lint, from manifests or a lab (--lab).
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCommand),
    /// The service proxy: what it does with a packet, from manifests or a lab (--lab).
    #[command(subcommand)]
    Proxy(proxy_cmd::ProxyCommand),
    /// The cluster DNS.
    #[command(subcommand)]
    Dns(dns_cmd::DnsCommand),
    /// Ingress (and Gateway API): the HTTP(S) proxy.
    #[command(subcommand)]
    Gateway(gateway_cmd::GatewayCommand),
    /// A cluster's pod network as network namespaces on this machine.
    #[command(subcommand)]
    Lab(lab_cmd::LabCommand),
    /// Benchmarks that print figures.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Why FROM cannot reach TO (or that it can): DNS, endpoints, proxy rules, NetworkPolicy and
    /// the pod, in the seed's order, answered by the lab's kernel (or, with -f, from manifests).
    Trace(trace_cmd::TraceArgs),
    /// Every connection in the lab with its verdict (forwarded, or dropped by which policy), as
    /// Hubble's observe shows flows.
    Observe(observe_cmd::ObserveArgs),
    /// The node agent on a real cluster: watches the API server and keeps this node's service
    /// proxy and NetworkPolicy rules as the objects say (as a DaemonSet, or by hand with a kubeconfig).
    Agent(agent_cmd::AgentArgs),
}

fn main() -> ExitCode {
    // With CNI_COMMAND set, podnet is the CNI plugin (podnet-bridge / podnet-ipam), as a
    // runtime execs it.
    if std::env::var_os("CNI_COMMAND").is_some() || std::env::var_os(cni::plugin::REAP_ENV).is_some() {
        return cni::plugin::main();
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Policy(cmd) => policy_cmd::run(cmd),
        Command::Trace(args) => trace_cmd::run(args),
        Command::Observe(args) => observe_cmd::run(args),
        Command::Agent(args) => agent_cmd::run(args),
        Command::Lab(cmd) => lab_cmd::run(cmd),
        Command::Proxy(cmd) => proxy_cmd::run(cmd),
        Command::Dns(cmd) => dns_cmd::run(cmd),
        Command::Gateway(cmd) => gateway_cmd::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", error_text(&err));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each said once: many errors already put their cause
/// in their own message (`LabError`'s "what: why", io errors made from another's text), and
/// anyhow's `{:#}` would print that cause a second time.
fn error_text(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let said = io.to_string();
        let err = anyhow::Error::new(lab::up::LabError { what: "reloading the lab process".into(), source: io });
        assert_eq!(super::error_text(&err), format!("reloading the lab process: {said}"));
        let err = anyhow::Error::new(std::io::Error::other("inner")).context("outer");
        assert_eq!(super::error_text(&err), "outer: inner");
    }
}
