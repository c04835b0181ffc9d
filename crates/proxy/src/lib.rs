//! The service proxy's semantics, pure (kube-proxy's `pkg/proxy`): service ports from
//! Services ([`service`]), their endpoints from EndpointSlices as one node sees them, and which
//! of them a node sends traffic to under traffic policies and topology ([`topology`]), and a
//! node's desired state with a first-packet tracer ([`plan`]), rendered as nftables
//! ([`render`]).

#![forbid(unsafe_code)]

pub mod conntrack;
pub mod metrics;
pub mod plan;
pub mod render;
pub mod service;
pub mod topology;

pub use plan::{NodePlan, ProxyConfig, Trace, plan};
pub use service::{ServicePort, endpoints_for, service_ports};
pub use topology::{Categorized, Endpoint, Policies, categorize};
