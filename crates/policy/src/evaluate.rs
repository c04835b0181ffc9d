//! The reference evaluator: one connection at a time, with the reasons.
//!
//! Each policy answers for one side of a connection with an explicit "not mine"
//! ([`PolicyVerdict::NotSelected`]), the way kube-network-policies' evaluators do; the side's
//! verdict is the union of the policies that select the pod. A connection is allowed when both
//! sides allow it. The fast matrix ([`crate::matrix`]) must agree with this evaluator on every pair.

use std::net::IpAddr;

use model::{ClusterState, PodInfo, Protocol};

use crate::spec::{Direction, NamespaceScope, Peer, Policy, PolicySet};

/// One end of a connection.
#[derive(Clone, Copy, Debug)]
pub enum Endpoint<'a> {
    /// A pod (or a workload standing for its pods).
    Pod(&'a PodInfo),
    /// An address that belongs to no pod.
    External(IpAddr),
}

impl Endpoint<'_> {
    /// `ns/name` or the address.
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Pod(p) => p.display_name(),
            Endpoint::External(ip) => ip.to_string(),
        }
    }

    fn pod(&self) -> Option<&PodInfo> {
        match self {
            Endpoint::Pod(p) => Some(p),
            Endpoint::External(_) => None,
        }
    }

    fn ip(&self) -> Option<IpAddr> {
        match self {
            Endpoint::Pod(p) => p.primary_ip(),
            Endpoint::External(ip) => Some(*ip),
        }
    }
}

/// The rule (and entries in it) that allowed a connection.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RuleMatch {
    /// `namespace/name` of the policy.
    pub policy: String,
    /// `ingress` or `egress`.
    pub direction: &'static str,
    /// Index of the rule.
    pub rule: usize,
    /// Index of the matching peer; `None` when the rule has no peer list (all peers).
    pub peer: Option<usize>,
    /// Index of the matching port entry; `None` when the rule has no port list (all ports).
    pub port: Option<usize>,
}

impl RuleMatch {
    /// `ns/name ingress[0] (from[1], ports[0])`
    pub fn describe(&self) -> String {
        let peers_field = if self.direction == "ingress" { "from" } else { "to" };
        let peer = self.peer.map_or_else(|| format!("any {peers_field}"), |i| format!("{peers_field}[{i}]"));
        let port = self.port.map_or_else(|| "any port".to_owned(), |i| format!("ports[{i}]"));
        format!("{} {}[{}] ({peer}, {port})", self.policy, self.direction, self.rule)
    }
}

/// What one policy says about one side of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyVerdict {
    /// The policy does not select the pod for this direction: not its business.
    NotSelected,
    /// It selects the pod and a rule allows the connection.
    Allow(RuleMatch),
    /// It selects the pod (isolating it) and none of its rules allows the connection.
    NoMatch,
}

/// The connection being asked about.
#[derive(Clone, Copy, Debug)]
pub struct Connection<'a> {
    /// Who opens it.
    pub from: Endpoint<'a>,
    /// Who is asked to accept it.
    pub to: Endpoint<'a>,
    /// Destination port.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
}

/// Answers questions about single connections.
pub struct Evaluator<'a> {
    state: &'a ClusterState,
    policies: &'a PolicySet,
}

/// One side's verdict, with its reasons.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SideVerdict {
    /// `Ingress` for the destination, `Egress` for the source.
    pub direction: &'static str,
    /// The pod (or address) whose policies were consulted.
    pub endpoint: String,
    /// Whether any policy isolates it in this direction.
    pub isolated: bool,
    /// The policies that select it for this direction (`ns/name`).
    pub selected_by: Vec<String>,
    /// The rules that allow the connection.
    pub allowed_by: Vec<RuleMatch>,
    /// Whether this side lets the connection through.
    pub allowed: bool,
    /// Why policies do not apply, when they do not (external address, hostNetwork pod, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The verdict on a connection, with both sides' reasons.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Explanation {
    /// Source.
    pub from: String,
    /// Destination.
    pub to: String,
    /// Destination port.
    pub port: u16,
    /// Protocol.
    pub protocol: &'static str,
    /// The verdict.
    pub allowed: bool,
    /// A reason that overrides policies (a pod to itself, node-local traffic), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub always_allowed: Option<String>,
    /// The source's egress side.
    pub egress: SideVerdict,
    /// The destination's ingress side.
    pub ingress: SideVerdict,
}

impl Explanation {
    /// Why the connection is denied, in words (empty when it is allowed): each denying side,
    /// `ingress of ns/pod is isolated by ns/a, ns/b and no rule allows it`.
    pub fn denial(&self) -> String {
        let parts: Vec<String> = [&self.egress, &self.ingress]
            .into_iter()
            .filter(|s| !s.allowed && self.always_allowed.is_none())
            .map(|s| format!("{} of {} is isolated by {} and no rule allows it", s.direction.to_ascii_lowercase(), s.endpoint, s.selected_by.join(", ")))
            .collect();
        parts.join("; ")
    }
}

impl<'a> Evaluator<'a> {
    /// An evaluator over a snapshot and its compiled policies.
    pub fn new(state: &'a ClusterState, policies: &'a PolicySet) -> Self {
        Evaluator { state, policies }
    }

    /// Whether a new connection is allowed.
    pub fn allowed(&self, c: &Connection<'_>) -> bool {
        self.explain(c).allowed
    }

    /// The verdict with its reasons.
    pub fn explain(&self, c: &Connection<'_>) -> Explanation {
        let egress = self.side(Direction::Egress, c);
        let ingress = self.side(Direction::Ingress, c);
        let always_allowed = always_allowed(c);
        Explanation {
            from: c.from.describe(),
            to: c.to.describe(),
            port: c.port,
            protocol: c.protocol.as_str(),
            allowed: always_allowed.is_some() || (egress.allowed && ingress.allowed),
            always_allowed,
            egress,
            ingress,
        }
    }

    /// One side: the source's egress or the destination's ingress.
    fn side(&self, direction: Direction, c: &Connection<'_>) -> SideVerdict {
        let subject = match direction {
            Direction::Egress => c.from,
            Direction::Ingress => c.to,
        };
        let mut v = SideVerdict {
            direction: direction.as_str(),
            endpoint: subject.describe(),
            isolated: false,
            selected_by: Vec::new(),
            allowed_by: Vec::new(),
            allowed: true,
            note: None,
        };
        let Endpoint::Pod(pod) = subject else {
            v.note = Some("not a pod: NetworkPolicy does not apply".into());
            return v;
        };
        if pod.host_network {
            v.note = Some("hostNetwork pod: no policy selects it; its traffic is the node's".into());
            return v;
        }
        for policy in &self.policies.policies {
            match self.policy_verdict(policy, direction, c) {
                PolicyVerdict::NotSelected => {}
                PolicyVerdict::Allow(m) => {
                    v.selected_by.push(policy.key());
                    v.allowed_by.push(m);
                }
                PolicyVerdict::NoMatch => v.selected_by.push(policy.key()),
            }
        }
        v.isolated = !v.selected_by.is_empty();
        v.allowed = !v.isolated || !v.allowed_by.is_empty();
        v
    }

    /// What one policy says about one side of a connection.
    pub fn policy_verdict(&self, policy: &Policy, direction: Direction, c: &Connection<'_>) -> PolicyVerdict {
        let (subject, peer) = match direction {
            Direction::Egress => (c.from, c.to),
            Direction::Ingress => (c.to, c.from),
        };
        let Some(rules) = policy.rules(direction) else {
            return PolicyVerdict::NotSelected;
        };
        if !subject.pod().is_some_and(|p| policy.selects(p)) {
            return PolicyVerdict::NotSelected;
        }
        // Named ports are resolved on the destination, whichever side the rule belongs to.
        let destination = c.to.pod();
        for (ri, rule) in rules.iter().enumerate() {
            let Some(port) = rule.matching_port(c.port, c.protocol, destination) else {
                continue;
            };
            let peer_index = match &rule.peers {
                None => Some(None),
                Some(peers) => peers.iter().position(|p| self.peer_matches(p, peer)).map(Some),
            };
            if let Some(peer_index) = peer_index {
                return PolicyVerdict::Allow(RuleMatch { policy: policy.key(), direction: direction.field(), rule: ri, peer: peer_index, port });
            }
        }
        PolicyVerdict::NoMatch
    }

    /// Whether a peer entry covers an endpoint.
    pub fn peer_matches(&self, peer: &Peer, endpoint: Endpoint<'_>) -> bool {
        match peer {
            Peer::IpBlock(block) => endpoint.ip().is_some_and(|ip| block.contains(ip)),
            Peer::Pods { namespaces, pods } => {
                let Endpoint::Pod(pod) = endpoint else {
                    return false;
                };
                if pod.host_network || !pods.matches(&pod.labels) {
                    return false;
                }
                match namespaces {
                    NamespaceScope::Own(ns) => &pod.namespace == ns,
                    NamespaceScope::Matching(sel) => self.state.namespace(&pod.namespace).is_some_and(|ns| sel.matches(&ns.labels)),
                }
            }
        }
    }
}

/// Traffic no policy can block: a pod to itself, and traffic between a pod and its own node
/// (hostNetwork pods are node traffic).
fn always_allowed(c: &Connection<'_>) -> Option<String> {
    let (Endpoint::Pod(from), Endpoint::Pod(to)) = (c.from, c.to) else {
        return None;
    };
    if std::ptr::eq(from, to) || (from.namespace == to.namespace && from.name == to.name && from.kind == to.kind) {
        return Some("a pod may always connect to itself".into());
    }
    if (from.host_network || to.host_network) && from.node_name.is_some() && from.node_name == to.node_name {
        return Some("traffic between a pod and its own node is always allowed (hostNetwork pods are node traffic)".into());
    }
    None
}
