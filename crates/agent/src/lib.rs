//! `podnet agent`: one node agent over a real API server (DESIGN.md's "the node agent is the
//! unit"). Its source is kube-rs watchers ([`source`]), which yield the same `ClusterState`
//! snapshot the lab's YAML store does; its reconcile loop (the `node` crate, the lab's too) plans this node's service
//! proxy and NetworkPolicy tables with the same pure planners and applies only the difference.

pub mod leader;
pub mod source;
