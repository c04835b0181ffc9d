//! Cluster DNS: the Kubernetes DNS-Based Service Discovery specification (schema 1.1.0) over a
//! ClusterState view, as CoreDNS's `kubernetes` plugin answers it ([`view`], [`lookup`]), the
//! DNS protocol around it ([`message`]), and forwarding of other names with a cache
//! ([`forward`]). Wire format from `hickory-proto`; the servers are in [`server`].

#![forbid(unsafe_code)]

pub mod client;
pub mod fast;
pub mod forward;
pub mod lookup;
pub mod message;
pub mod metrics;
pub mod server;
pub mod view;

pub use view::{PodsMode, View, ZoneConfig};
