//! The service proxy's semantics, pure (kube-proxy's `pkg/proxy`): service ports from
//! Services ([`service`]), their endpoints from EndpointSlices as one node sees them, and which
//! of them a node sends traffic to under traffic policies and topology ([`topology`]), and a
//! node's desired state with a first-packet tracer ([`plan`]), rendered as nftables
//! ([`render`]), and a first packet traced through the rendered rules themselves
//! ([`nft_trace`], what `podnet proxy trace` answers).

#![forbid(unsafe_code)]

pub mod conntrack;
pub mod metrics;
pub mod nft_trace;
pub mod plan;
pub mod render;
pub mod service;
pub mod topology;

pub use plan::{NodePlan, ProxyConfig, Trace, plan};

impl NodePlan {
    /// What the node's rendered rules do with a first packet (the answer of `podnet proxy
    /// trace`); [`NodePlan::trace`] is the plan's own reading, the oracle it is tested against.
    pub fn trace_rules(&self, src: std::net::IpAddr, dst: std::net::IpAddr, dport: u16, protocol: model::Protocol) -> Result<Trace, nft_trace::Unreadable> {
        nft_trace::trace(&self.render(), &self.node.ips, src, dst, dport, protocol)
    }
}
pub use service::{ServicePort, endpoints_for, service_ports};
pub use topology::{Categorized, Endpoint, Policies, categorize};
