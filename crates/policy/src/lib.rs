//! NetworkPolicy, exactly as upstream defines it.
//!
//! - [`spec`]: validation (the API server's checks and messages), defaulting and compilation;
//! - [`evaluate`]: the reference evaluator, one connection at a time, with reasons (`explain`);
//! - [`matrix`]: the connectivity matrix computed on sets of pods (`matrix`);
//! - [`lint`]: warnings about policies that do not do what they seem to;
//! - [`render`]: the matrix as a truth table, JSON, Markdown, HTML and SVG;
//! - [`enforce`]: the policies compiled into each node's nftables table.

#![forbid(unsafe_code)]

pub mod bitset;
pub mod enforce;
pub mod evaluate;
pub mod lint;
pub mod matrix;
pub mod render;
pub mod spec;

pub use evaluate::{Connection, Endpoint, Evaluator, Explanation};
pub use matrix::{Matrix, PortKey, compute, declared_ports};
pub use spec::{Direction, Policy, PolicySet};
