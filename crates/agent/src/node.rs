//! One node's reconcile: snapshot → plan (the service proxy's tables and the NetworkPolicy
//! table, by the same pure planners as the lab) → the difference against what was applied →
//! one nft transaction. A failed apply forgets what was applied, so the next one is full.

use std::path::PathBuf;
use std::time::Instant;

use model::ClusterState;
use nftset::{Family, Ruleset};
use proxy::ProxyConfig;

/// What a sync did.
#[derive(Clone, Debug, PartialEq)]
pub struct Synced {
    /// Set and map elements in the node's tables.
    pub elements: usize,
    /// Whether the tables were written in full (first sync, or after a failure).
    pub full: bool,
    /// Seconds from snapshot to applied rules.
    pub seconds: f64,
}

/// A node's agent: its name, settings, and what it last applied.
pub struct NodeAgent {
    /// The Node it programs (`spec.nodeName` of its pods; `NODE_NAME` from the downward API).
    pub node: String,
    /// `KubeProxyConfiguration` settings.
    pub config: ProxyConfig,
    /// Program the rules in this network namespace instead of the agent's own (tests, and
    /// agents that run beside the node rather than in it).
    pub netns: Option<PathBuf>,
    applied: Option<Ruleset>,
}

/// The node's whole desired rule set: the proxy's tables and the policy table.
pub fn desired(state: &ClusterState, node: &str, config: &ProxyConfig) -> Result<Ruleset, String> {
    let plan = proxy::plan(state, node, config).map_err(|e| e.to_string())?;
    let mut rules = plan.render();
    let policies = policy::PolicySet::compile(state).map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))?;
    let enforcement = policy::enforce::Enforcement::new(state, &policies);
    rules.tables.insert((Family::Inet, policy::enforce::TABLE.to_owned()), enforcement.node_table(node));
    Ok(rules)
}

impl NodeAgent {
    /// An agent that has applied nothing yet.
    pub fn new(node: String, config: ProxyConfig, netns: Option<PathBuf>) -> NodeAgent {
        NodeAgent { node, config, netns, applied: None }
    }

    /// Plans from `state` and applies what changed.
    pub fn sync(&mut self, state: &ClusterState) -> Result<Synced, String> {
        let start = Instant::now();
        let new = desired(state, &self.node, &self.config)?;
        let old = self.applied.take();
        let full = old.is_none();
        let apply = {
            let new = new.clone();
            move || dataplane::nft::sync(old.as_ref(), &new)
        };
        let result = match &self.netns {
            Some(path) => dataplane::netns::run_in(path, apply).map_err(|e| e.to_string())?,
            None => apply(),
        };
        result.map_err(|e| format!("applying the node's rules: {e}"))?;
        let elements = new.element_count();
        self.applied = Some(new);
        Ok(Synced { elements, full, seconds: start.elapsed().as_secs_f64() })
    }
}
