//! `podnet lab`: a whole cluster's pod network on one Linux machine. Nodes and pods are network
//! namespaces, joined by an underlay bridge; pods are attached by podnet's CNI plugin exactly as
//! a runtime would call it.
//!
//! - [`plan`]: the pure `LabPlan` (nodes, addresses, pods);
//! - [`up`]: carrying a plan out, and `down`;
//! - [`state`]: what a running lab keeps under `/run/podnet/<lab>/`;
//! - [`daemon`] and [`echo`]: the lab process serving every pod's declared ports;
//! - [`service_proxy`]: every node's agent (service proxy, policy), run by the lab process;
//! - [`bgp`]: `--mode bgp`'s BIRD daemons, supervised by the lab process;
//! - [`wireguard`]: `--encrypt wireguard`'s tunnels and keys;
//! - [`system`]: the cluster DNS the lab adds, and [`resolv`]: each pod's resolv.conf.

pub mod bgp;
pub mod change;
pub mod cluster_dns;
pub mod daemon;
pub mod drops;
pub mod echo;
pub mod ingress_controller;
pub mod load_balancer;
pub mod name;
pub mod nftrace;
pub mod plan;
pub mod probe;
pub mod resolv;
pub mod service_proxy;
pub mod state;
pub mod system;
pub mod up;
pub mod wireguard;

pub use name::LabName;
pub use plan::{LabConfig, LabPlan, Mode, NodePlan, PodPlan};
