//! `podnet lab`: a whole cluster's pod network on one Linux machine. Nodes and pods are network
//! namespaces, joined by an underlay bridge; pods are attached by podnet's CNI plugin exactly as
//! a runtime would call it.
//!
//! - [`plan`]: the pure `LabPlan` (nodes, addresses, pods);

pub mod plan;

pub use plan::{LabConfig, LabPlan, Mode, NodePlan, PodPlan};
