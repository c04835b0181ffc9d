//! `podnet proxy trace`: what a node's service proxy does with one first packet, offline;
//! `podnet proxy render`: the nftables rule set that node's proxy programs.

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
    /// Print the nftables rule set of a node's proxy, as `nft -f` input (no root needed).
    Render(RenderArgs),
}

#[derive(Args)]
pub struct RenderArgs {
    #[command(flatten)]
    node: NodeArgs,
}

/// Which node's proxy, from which manifests and configuration.
#[derive(Args)]
pub struct NodeArgs {
    /// Manifests: Nodes, ServiceCIDRs, Services, EndpointSlices, Pods (files or directories).
    #[arg(short = 'f', long = "filename", value_name = "PATH", required_unless_present = "lab", num_args = 1..)]
    paths: Vec<PathBuf>,
    /// A running lab's Services, pods and nodes instead (with its proxy configuration).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["paths", "config"])]
    lab: Option<lab::LabName>,
    /// The node whose proxy it is.
    #[arg(long)]
    node: String,
    /// A KubeProxyConfiguration (clusterCIDR, masqueradeAll, nodePortAddresses, detectLocalMode).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl NodeArgs {
    fn plan(&self) -> Result<proxy::NodePlan> {
        if let Some(name) = &self.lab {
            let st = lab::state::load(name).with_context(|| format!("lab {name}"))?;
            return Ok(proxy::plan(&lab::service_proxy::proxy_view(&st), &self.node, &lab::service_proxy::proxy_config(&st))?);
        }
        let state = model::load_cluster_served(&self.paths)?;
        let config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                proxy::ProxyConfig::from_yaml(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?
            }
            None => proxy::ProxyConfig::default(),
        };
        Ok(proxy::plan(&state, &self.node, &config)?)
    }
}

#[derive(Args)]
pub struct TraceArgs {
    #[command(flatten)]
    node: NodeArgs,
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
        ProxyCommand::Render(a) => {
            out!("{}", a.node.plan()?.render().full_script());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn trace(a: TraceArgs) -> Result<ExitCode> {
    let plan = a.node.plan()?;
    // Traced through the rules `render` writes for the node, not read off the plan beside them.
    let t = plan.trace_rules(a.src, a.dst, a.dport, a.proto)?;
    match a.output {
        TextOrJson::Json => outln!("{}", serde_json::to_string(&t)?),
        TextOrJson::Text => {
            let masq = if t.masquerade { ", source NAT to the node (masquerade)" } else { "" };
            match t.verdict {
                "DNAT" => outln!("DNAT to one of: {}{masq}", t.endpoints.join(", ")),
                "ACCEPT" => {
                    outln!("ACCEPT: not a service address; the proxy leaves the packet alone")
                }
                v => outln!("{v}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
