//! `podnet proxy trace`: what a node's service proxy does with one first packet, offline.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::{Args, Subcommand};
use model::Protocol;

use crate::policy_cmd::TextOrJson;

#[derive(Subcommand)]
pub enum ProxyCommand {
    /// Evaluate one first packet against a node's desired proxy state (no root needed).
    Trace(TraceArgs),
}

#[derive(Args)]
pub struct TraceArgs {
    /// Manifests: Nodes, ServiceCIDRs, Services, EndpointSlices, Pods (files or directories).
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true, num_args = 1..)]
    paths: Vec<PathBuf>,
    /// The node whose proxy handles the packet.
    #[arg(long)]
    node: String,
    /// A KubeProxyConfiguration (clusterCIDR, masqueradeAll, nodePortAddresses, detectLocalMode).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Source address.
    #[arg(long)]
    src: IpAddr,
    /// Destination address.
    #[arg(long)]
    dst: IpAddr,
    /// Destination port.
    #[arg(long)]
    dport: u16,
    /// Protocol.
    #[arg(long, default_value = "TCP", value_parser = parse_protocol)]
    proto: Protocol,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: TextOrJson,
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    s.parse()
}

pub fn run(cmd: ProxyCommand) -> Result<ExitCode> {
    match cmd {
        ProxyCommand::Trace(a) => trace(a),
    }
}

fn trace(a: TraceArgs) -> Result<ExitCode> {
    let state = model::load_cluster(&a.paths)?;
    let config = match &a.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            proxy::ProxyConfig::from_yaml(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?
        }
        None => proxy::ProxyConfig::default(),
    };
    let plan = proxy::plan(&state, &a.node, &config)?;
    let t = plan.trace(a.src, a.dst, a.dport, a.proto);
    match a.output {
        TextOrJson::Json => outln!("{}", serde_json::to_string(&t)?),
        TextOrJson::Text => {
            let masq = if t.masquerade { ", source NAT to the node (masquerade)" } else { "" };
            match t.verdict {
                "DNAT" => outln!("DNAT to one of: {}{masq}", t.endpoints.join(", ")),
                "ACCEPT" => outln!("ACCEPT: not a service address; the proxy leaves the packet alone"),
                v => outln!("{v}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
