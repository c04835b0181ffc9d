//! Warnings about valid policies that do not do what they seem to.

use std::fmt;

use model::{ClusterState, Location, Protocol};
use serde::Serialize;

use crate::matrix::PodIndex;
use crate::spec::{Direction, NamespaceScope, Peer, Policy, PolicySet, PortSpec, Rule, parse_cidr_sloppy};

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The input is invalid: the API server would reject it.
    Error,
    /// Valid, but probably not what was meant.
    Warning,
}

/// One finding about one object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// `Kind namespace/name`
    pub object: String,
    /// `file: document N`
    pub location: String,
    /// The field, when one is to blame (`spec.ingress[0].from[1]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{severity}: {}: {}", self.location, self.object)?;
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Lints every (valid) policy against the snapshot's pods.
pub fn lint(state: &ClusterState, policies: &PolicySet) -> Vec<Finding> {
    let mut index = PodIndex::new(state);
    let mut out = Vec::new();
    for policy in &policies.policies {
        PolicyLint { state, policy, out: &mut out }.run(&mut index);
    }
    out
}

struct PolicyLint<'s, 'o> {
    state: &'s ClusterState,
    policy: &'s Policy,
    out: &'o mut Vec<Finding>,
}

impl<'s> PolicyLint<'s, '_> {
    fn warn(&mut self, field: Option<String>, message: String) {
        self.out.push(Finding {
            severity: Severity::Warning,
            object: format!("NetworkPolicy {}", self.policy.key()),
            location: location_text(&self.policy.location),
            field,
            message,
        });
    }

    fn run(mut self, index: &mut PodIndex<'s>) {
        let policy = self.policy;
        let selected = index.selected(&policy.namespace, &policy.pod_selector).clone();
        if selected.is_empty() {
            self.warn(
                Some("spec.podSelector".into()),
                format!("selects no pod in namespace {} ({}): the policy has no effect", policy.namespace, policy.pod_selector),
            );
        }
        for direction in &policy.ignored_rules {
            self.warn(
                Some(format!("spec.{}", direction.field())),
                format!("rules are ignored: spec.policyTypes does not include {direction}, so these rules can never match"),
            );
        }
        for direction in [Direction::Ingress, Direction::Egress] {
            let Some(rules) = policy.rules(direction) else {
                continue;
            };
            for (ri, rule) in rules.iter().enumerate() {
                let rule_path = format!("spec.{}[{ri}]", direction.field());
                self.lint_rule(index, direction, rule, &rule_path, &selected);
            }
        }
        self.lint_dns_over_tcp();
    }

    /// Resolvers retry truncated answers over TCP: DNS egress on 53/UDP alone breaks large answers.
    fn lint_dns_over_tcp(&mut self) {
        let Some(rules) = self.policy.egress.as_deref() else {
            return;
        };
        let opens = |rule: &Rule, protocol: Protocol| {
            rule.ports.as_ref().is_some_and(|ports| ports.iter().any(|p| p.protocol == protocol && p.matches(53, protocol, None)))
        };
        let tcp_anywhere = rules.iter().any(|r| r.ports.is_none() || opens(r, Protocol::Tcp));
        if tcp_anywhere {
            return;
        }
        for (ri, rule) in rules.iter().enumerate() {
            if opens(rule, Protocol::Udp) {
                self.warn(
                    Some(format!("spec.egress[{ri}]")),
                    "allows DNS on 53/UDP but not 53/TCP: resolvers retry truncated answers over TCP, which stays blocked unless another policy allows it"
                        .into(),
                );
            }
        }
    }

    fn lint_rule(&mut self, index: &mut PodIndex<'s>, direction: Direction, rule: &'s Rule, rule_path: &str, selected: &crate::bitset::PodSet) {
        let mut matches_anything = true;
        if let Some(peers) = &rule.peers {
            let mut any_peer = false;
            for (pi, peer) in peers.iter().enumerate() {
                let path = format!("{rule_path}.{}[{pi}]", direction.peers_field());
                match peer {
                    Peer::Pods { namespaces, pods } => {
                        if index.peer(peer).is_empty() {
                            let message = match namespaces {
                                NamespaceScope::Matching(nss) if !self.state.namespaces.iter().any(|n| nss.matches(&n.labels)) => {
                                    format!("namespaceSelector {nss} selects no namespace")
                                }
                                NamespaceScope::Own(ns) => {
                                    format!("podSelector {pods} selects no pod in namespace {ns}")
                                }
                                NamespaceScope::Matching(nss) => {
                                    format!("selects no pod (pods {pods} in namespaces {nss})")
                                }
                            };
                            self.warn(Some(path), message);
                        } else {
                            any_peer = true;
                        }
                    }
                    Peer::IpBlock(block) => {
                        any_peer = true;
                        self.lint_ip_block(index, peer, block, &path);
                    }
                }
            }
            if !any_peer {
                matches_anything = false;
            }
        }
        if let Some(ports) = &rule.ports {
            let mut any_port = false;
            for (i, port) in ports.iter().enumerate() {
                let PortSpec::Named(name) = &port.port else {
                    any_port = true;
                    continue;
                };
                let path = format!("{rule_path}.ports[{i}]");
                // A named port resolves on the destination: the selected pods for ingress, the peers for egress.
                let destinations = match direction {
                    Direction::Ingress => selected.clone(),
                    Direction::Egress => index.rule_peers(rule),
                };
                if declares(self.state, &destinations, name, port.protocol) {
                    any_port = true;
                } else {
                    let whose = match direction {
                        Direction::Ingress => "no selected pod",
                        Direction::Egress => "no destination pod",
                    };
                    self.warn(Some(path), format!("named port {name:?} ({}): {whose} declares it, so it matches nothing", port.protocol));
                }
            }
            if !any_port {
                matches_anything = false;
            }
        }
        if !matches_anything {
            self.warn(Some(rule_path.to_owned()), "this rule can never match".into());
        }
    }

    fn lint_ip_block(&mut self, index: &mut PodIndex<'s>, peer: &'s Peer, block: &crate::spec::IpBlock, path: &str) {
        let covered = index.peer(peer).clone();
        if let Some(first) = covered.iter().next() {
            self.warn(
                Some(format!("{path}.ipBlock")),
                format!(
                    "ipBlock {block} covers the IPs of {} pod(s) (e.g. {}); whether ipBlocks apply to pod-to-pod traffic differs across CNIs: select pods with podSelector/namespaceSelector instead",
                    covered.len(),
                    self.state.pods[first].key()
                ),
            );
        }
        // The API server's warnings for non-canonical CIDRs.
        let written = std::iter::once((format!("{path}.ipBlock.cidr"), &block.cidr_text))
            .chain(block.except_text.iter().enumerate().map(|(i, t)| (format!("{path}.ipBlock.except[{i}]"), t)));
        for (field, text) in written {
            if let Some(net) = parse_cidr_sloppy(text)
                && let Some((addr, _)) = text.split_once('/')
                && addr.parse::<std::net::IpAddr>().ok() != Some(net.network())
            {
                let single = format!("{}/{}", addr, net.max_prefix_len());
                self.warn(Some(field), format!("CIDR value {text:?} is ambiguous in this context (should be \"{net}\" or {single:?}?)"));
            }
        }
    }
}

fn declares(state: &ClusterState, pods: &crate::bitset::PodSet, name: &str, protocol: Protocol) -> bool {
    pods.iter().any(|i| state.pods[i].named_port(name, protocol).is_some())
}

/// `file: document N`
pub fn location_text(l: &Location) -> String {
    l.to_string()
}
