//! The service proxy's semantics, pure (kube-proxy's `pkg/proxy`): service ports from
//! Services ([`service`]), their endpoints from EndpointSlices as one node sees them, and which
//! of them a node sends traffic to under traffic policies and topology ([`topology`]).
//! The nftables layout and its dataplane come next.

#![forbid(unsafe_code)]

pub mod service;
pub mod topology;

pub use service::{ServicePort, endpoints_for, service_ports};
pub use topology::{Categorized, Endpoint, Policies, categorize};
