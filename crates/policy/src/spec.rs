//! NetworkPolicy as the API server stores it: validated (`validation.go`), defaulted
//! (`v1/defaults.go`) and compiled into a form that is cheap to evaluate.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{IPBlock, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use model::validation::{self, FieldError, FieldPath};
use model::{ClusterState, Location, ManifestError, ObjectRef, PodInfo, PolicyObject, Protocol, Selector};

/// The two directions a policy can isolate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Connections into the selected pods.
    Ingress,
    /// Connections out of the selected pods.
    Egress,
}

impl Direction {
    /// `Ingress` / `Egress`, as in `policyTypes`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "Ingress",
            Direction::Egress => "Egress",
        }
    }

    /// The rule list's field name: `ingress` / `egress`.
    pub fn field(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    /// The peer list's field name: `from` / `to`.
    pub fn peers_field(self) -> &'static str {
        match self {
            Direction::Ingress => "from",
            Direction::Egress => "to",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which namespaces a pod peer looks in.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NamespaceScope {
    /// `podSelector` alone: the policy's own namespace.
    Own(String),
    /// `namespaceSelector` (alone: with every pod; with `podSelector`: ANDed).
    Matching(Selector),
}

/// An `ipBlock`: `cidr` minus `except`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IpBlock {
    /// The block (host bits cleared, as `ParseCIDRSloppy` does).
    pub cidr: IpNet,
    /// Excluded sub-blocks.
    pub except: Vec<IpNet>,
    /// `cidr` as written (for warnings about non-canonical forms).
    pub cidr_text: String,
    /// `except` as written.
    pub except_text: Vec<String>,
}

impl IpBlock {
    /// Whether the address is in the block and in none of its exceptions.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.cidr.contains(&ip) && !self.except.iter().any(|e| e.contains(&ip))
    }
}

impl fmt::Display for IpBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.cidr)?;
        if !self.except.is_empty() {
            let except: Vec<String> = self.except.iter().map(ToString::to_string).collect();
            write!(f, " except {}", except.join(", "))?;
        }
        Ok(())
    }
}

/// One entry of `from` / `to`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// Pods chosen by labels (hostNetwork pods are never chosen this way).
    Pods {
        /// Where to look.
        namespaces: NamespaceScope,
        /// Which pods there (`{}` when only `namespaceSelector` was given).
        pods: Selector,
    },
    /// Addresses, matched against pod IPs too.
    IpBlock(IpBlock),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Pods { namespaces: NamespaceScope::Own(ns), pods } => write!(f, "pods {pods} in namespace {ns}"),
            Peer::Pods { namespaces: NamespaceScope::Matching(nss), pods } => {
                write!(f, "pods {pods} in namespaces {nss}")
            }
            Peer::IpBlock(b) => write!(f, "ipBlock {b}"),
        }
    }
}

/// Which port numbers of one protocol a port entry allows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PortSpec {
    /// No `port`: every port of the protocol.
    All,
    /// `port` .. `endPort` (inclusive; `port` alone is a range of one).
    Range(u16, u16),
    /// A named port, resolved on the destination pod.
    Named(String),
}

/// One entry of `ports`, defaulted (protocol TCP when absent).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PortRule {
    /// `protocol`
    pub protocol: Protocol,
    /// `port` / `endPort`
    pub port: PortSpec,
}

impl PortRule {
    /// Whether a connection to `port`/`protocol` on `destination` (a pod, or `None` for an
    /// address outside the cluster) matches. Named ports need the destination pod to declare
    /// that name with the same protocol and number.
    pub fn matches(&self, port: u16, protocol: Protocol, destination: Option<&PodInfo>) -> bool {
        if self.protocol != protocol {
            return false;
        }
        match &self.port {
            PortSpec::All => true,
            PortSpec::Range(lo, hi) => (*lo..=*hi).contains(&port),
            PortSpec::Named(name) => destination.and_then(|d| d.named_port(name, protocol)) == Some(port),
        }
    }
}

impl fmt::Display for PortRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.port {
            PortSpec::All => write!(f, "all/{}", self.protocol),
            PortSpec::Range(lo, hi) if lo == hi => write!(f, "{lo}/{}", self.protocol),
            PortSpec::Range(lo, hi) => write!(f, "{lo}-{hi}/{}", self.protocol),
            PortSpec::Named(n) => write!(f, "{n}/{}", self.protocol),
        }
    }
}

/// One ingress or egress rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// `from` / `to`; `None` when empty or absent: every peer, inside the cluster or not.
    pub peers: Option<Vec<Peer>>,
    /// `ports`; `None` when empty or absent: every port of every protocol.
    pub ports: Option<Vec<PortRule>>,
}

impl Rule {
    /// Index of the first port entry that matches, or `Some(None)` when the rule has no port list.
    pub fn matching_port(&self, port: u16, protocol: Protocol, destination: Option<&PodInfo>) -> Option<Option<usize>> {
        match &self.ports {
            None => Some(None),
            Some(ports) => ports.iter().position(|p| p.matches(port, protocol, destination)).map(Some),
        }
    }
}

/// A validated, defaulted NetworkPolicy.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Its namespace: the one it selects pods in.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Where it was read.
    pub location: Location,
    /// `spec.podSelector`
    pub pod_selector: Selector,
    /// Ingress rules, when `Ingress` is among the (defaulted) policy types.
    pub ingress: Option<Vec<Rule>>,
    /// Egress rules, when `Egress` is among the (defaulted) policy types.
    pub egress: Option<Vec<Rule>>,
    /// Directions whose rules are given but ignored because `policyTypes` leaves them out.
    pub ignored_rules: Vec<Direction>,
}

impl Policy {
    /// `namespace/name`
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The rules of a direction, when the policy isolates that direction.
    pub fn rules(&self, direction: Direction) -> Option<&[Rule]> {
        match direction {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }

    /// Whether the policy selects this pod. hostNetwork pods are never selected: their
    /// traffic is the node's.
    pub fn selects(&self, pod: &PodInfo) -> bool {
        !pod.host_network && pod.namespace == self.namespace && self.pod_selector.matches(&pod.labels)
    }
}

/// Every policy of a cluster, validated and compiled, in namespace/name order.
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    /// The policies.
    pub policies: Vec<Policy>,
}

impl PolicySet {
    /// Compiles every policy; fails with the errors of every invalid one.
    pub fn compile(state: &ClusterState) -> Result<Self, Vec<ManifestError>> {
        let (set, errors) = PolicySet::compile_valid(state);
        if errors.is_empty() { Ok(set) } else { Err(errors) }
    }

    /// Compiles every valid policy, and returns the errors of the invalid ones beside: for the
    /// enforcers, which must keep enforcing the rest (an invalid policy on the API server, or
    /// in an older lab state) where the CLI refuses the whole input.
    pub fn compile_valid(state: &ClusterState) -> (Self, Vec<ManifestError>) {
        let (mut policies, mut errors) = (Vec::with_capacity(state.policies.len()), Vec::new());
        for object in &state.policies {
            match compile(object) {
                Ok(p) => policies.push(p),
                Err(e) => errors.push(e),
            }
        }
        (PolicySet { policies }, errors)
    }
}

/// Validates, defaults and compiles one policy.
pub fn compile(object: &PolicyObject) -> Result<Policy, ManifestError> {
    let spec = object.policy.spec.clone().unwrap_or_default();
    let errors = validate_spec(&spec, &FieldPath::new("spec"));
    if !errors.is_empty() {
        return Err(ManifestError {
            location: object.location.clone(),
            object: Some(ObjectRef { kind: "NetworkPolicy".into(), namespace: object.namespace.clone(), name: object.name.clone() }),
            messages: errors.iter().map(ToString::to_string).collect(),
        });
    }

    // Defaulting (v1/defaults.go): no policyTypes means Ingress, plus Egress iff egress rules exist.
    let types: Vec<Direction> = match spec.policy_types.as_deref() {
        Some(list) if !list.is_empty() => list.iter().map(|t| if t == "Egress" { Direction::Egress } else { Direction::Ingress }).collect(),
        _ => {
            let mut t = vec![Direction::Ingress];
            if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
                t.push(Direction::Egress);
            }
            t
        }
    };
    let ns = &object.namespace;
    let ingress: Vec<Rule> = spec.ingress.iter().flatten().map(|r| compile_rule(r.from.as_deref(), r.ports.as_deref(), ns)).collect();
    let egress: Vec<Rule> = spec.egress.iter().flatten().map(|r| compile_rule(r.to.as_deref(), r.ports.as_deref(), ns)).collect();
    let mut ignored_rules = Vec::new();
    if !types.contains(&Direction::Ingress) && !ingress.is_empty() {
        ignored_rules.push(Direction::Ingress);
    }
    if !types.contains(&Direction::Egress) && !egress.is_empty() {
        ignored_rules.push(Direction::Egress);
    }
    Ok(Policy {
        namespace: ns.clone(),
        name: object.name.clone(),
        location: object.location.clone(),
        pod_selector: compile_selector(spec.pod_selector.as_ref()),
        ingress: types.contains(&Direction::Ingress).then_some(ingress),
        egress: types.contains(&Direction::Egress).then_some(egress),
        ignored_rules,
    })
}

fn compile_selector(s: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>) -> Selector {
    // Validation has rejected unknown operators already.
    s.map(|s| Selector::from_k8s(s).unwrap_or_default()).unwrap_or_default()
}

fn compile_rule(peers: Option<&[NetworkPolicyPeer]>, ports: Option<&[NetworkPolicyPort]>, ns: &str) -> Rule {
    let peers = peers.filter(|p| !p.is_empty()).map(|p| p.iter().map(|peer| compile_peer(peer, ns)).collect());
    let ports = ports.filter(|p| !p.is_empty()).map(|p| p.iter().map(compile_port).collect());
    Rule { peers, ports }
}

fn compile_peer(peer: &NetworkPolicyPeer, ns: &str) -> Peer {
    if let Some(block) = &peer.ip_block {
        let cidr = parse_cidr_sloppy(&block.cidr).unwrap_or_else(|| IpNet::V4(Default::default()));
        let except = block.except.iter().flatten().filter_map(|e| parse_cidr_sloppy(e)).collect();
        return Peer::IpBlock(IpBlock { cidr, except, cidr_text: block.cidr.clone(), except_text: block.except.clone().unwrap_or_default() });
    }
    let pods = compile_selector(peer.pod_selector.as_ref());
    match &peer.namespace_selector {
        Some(nss) => Peer::Pods { namespaces: NamespaceScope::Matching(compile_selector(Some(nss))), pods },
        None => Peer::Pods { namespaces: NamespaceScope::Own(ns.to_owned()), pods },
    }
}

fn compile_port(port: &NetworkPolicyPort) -> PortRule {
    let protocol = port.protocol.as_deref().and_then(|p| p.parse().ok()).unwrap_or(Protocol::Tcp);
    let port = match &port.port {
        None => PortSpec::All,
        Some(IntOrString::String(name)) => PortSpec::Named(name.clone()),
        Some(IntOrString::Int(n)) => {
            let lo = u16::try_from(*n).unwrap_or_default();
            let hi = port.end_port.and_then(|e| u16::try_from(e).ok()).unwrap_or(lo);
            PortSpec::Range(lo, hi)
        }
    };
    PortRule { protocol, port }
}

/// `netutils.ParseCIDRSloppy`: like `IpNet` parsing, but IPv4 octets may have leading zeros
/// (read as decimal), and host bits are cleared.
pub fn parse_cidr_sloppy(text: &str) -> Option<IpNet> {
    let (addr, len) = text.split_once('/')?;
    if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let len: u8 = len.parse().ok()?;
    let ip: IpAddr = match addr.parse() {
        Ok(ip) => ip,
        Err(_) => sloppy_ipv4(addr)?,
    };
    IpNet::new(ip, len).ok().map(|n| n.trunc())
}

fn sloppy_ipv4(text: &str) -> Option<IpAddr> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut octets = [0u8; 4];
    for (o, p) in octets.iter_mut().zip(&parts) {
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *o = p.parse().ok()?;
    }
    Some(IpAddr::from(octets))
}

/// `ValidateNetworkPolicySpec`
pub fn validate_spec(spec: &NetworkPolicySpec, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(sel) = &spec.pod_selector {
        errs.extend(validation::validate_label_selector(sel, &path.child("podSelector")));
    }
    for (i, rule) in spec.ingress.iter().flatten().enumerate() {
        let rule_path = path.child("ingress").index(i);
        errs.extend(validate_rule(rule.ports.as_deref(), rule.from.as_deref(), &rule_path, "from"));
    }
    for (i, rule) in spec.egress.iter().flatten().enumerate() {
        let rule_path = path.child("egress").index(i);
        errs.extend(validate_rule(rule.ports.as_deref(), rule.to.as_deref(), &rule_path, "to"));
    }
    let types = spec.policy_types.as_deref().unwrap_or_default();
    if types.len() > 2 {
        let quoted: Vec<String> = types.iter().map(|t| validation::go_quote(t)).collect();
        errs.push(FieldError::invalid_raw(
            path.child("policyTypes"),
            format!("[]networking.PolicyType{{{}}}", quoted.join(", ")),
            "may not specify more than two policyTypes",
        ));
        return errs;
    }
    for (i, t) in types.iter().enumerate() {
        if t != "Ingress" && t != "Egress" {
            errs.push(FieldError::not_supported(path.child("policyTypes").index(i), t, &["Ingress", "Egress"]));
        }
    }
    errs
}

/// One ingress or egress rule: its ports, then its peers (upstream's order of errors).
fn validate_rule(ports: Option<&[NetworkPolicyPort]>, peers: Option<&[NetworkPolicyPeer]>, path: &FieldPath, peers_field: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (j, port) in ports.into_iter().flatten().enumerate() {
        errs.extend(validate_port(port, &path.child("ports").index(j)));
    }
    for (j, peer) in peers.into_iter().flatten().enumerate() {
        errs.extend(validate_peer(peer, &path.child(peers_field).index(j)));
    }
    errs
}

/// `ValidateNetworkPolicyPort`
fn validate_port(port: &NetworkPolicyPort, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(p) = &port.protocol
        && !matches!(p.as_str(), "TCP" | "UDP" | "SCTP")
    {
        errs.push(FieldError::not_supported(path.child("protocol"), p, &["TCP", "UDP", "SCTP"]));
    }
    match &port.port {
        Some(IntOrString::Int(n)) => {
            let n = i64::from(*n);
            errs.extend(validation::is_valid_port_num(n).into_iter().map(|m| FieldError::invalid_int(path.child("port"), n, m)));
            if let Some(end) = port.end_port {
                let end = i64::from(end);
                if end < n {
                    errs.push(FieldError::invalid_int(path.child("endPort"), end, "must be greater than or equal to `port`"));
                }
                errs.extend(validation::is_valid_port_num(end).into_iter().map(|m| FieldError::invalid_int(path.child("endPort"), end, m)));
            }
        }
        Some(IntOrString::String(name)) => {
            if let Some(end) = port.end_port {
                errs.push(FieldError::invalid_int(path.child("endPort"), i64::from(end), "may not be specified when `port` is non-numeric"));
            }
            errs.extend(validation::is_valid_port_name(name).into_iter().map(|m| FieldError::invalid_str(path.child("port"), name, m)));
        }
        None => {
            if let Some(end) = port.end_port {
                errs.push(FieldError::invalid_int(path.child("endPort"), i64::from(end), "may not be specified when `port` is not specified"));
            }
        }
    }
    errs
}

/// `ValidateNetworkPolicyPeer`
fn validate_peer(peer: &NetworkPolicyPeer, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut count = 0;
    if let Some(sel) = &peer.pod_selector {
        count += 1;
        errs.extend(validation::validate_label_selector(sel, &path.child("podSelector")));
    }
    if let Some(sel) = &peer.namespace_selector {
        count += 1;
        errs.extend(validation::validate_label_selector(sel, &path.child("namespaceSelector")));
    }
    if let Some(block) = &peer.ip_block {
        count += 1;
        errs.extend(validate_ip_block(block, &path.child("ipBlock")));
    }
    if count == 0 {
        errs.push(FieldError::required(path.clone(), "must specify a peer"));
    } else if count > 1 && peer.ip_block.is_some() {
        errs.push(FieldError::forbidden(path.clone(), "may not specify both ipBlock and another peer"));
    }
    errs
}

const CIDR_MESSAGE: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";

/// `ValidateIPBlock`
fn validate_ip_block(block: &IPBlock, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if block.cidr.is_empty() {
        errs.push(FieldError::required(path.child("cidr"), ""));
        return errs;
    }
    let Some(cidr) = parse_cidr_sloppy(&block.cidr) else {
        errs.push(FieldError::invalid_str(path.child("cidr"), &block.cidr, CIDR_MESSAGE));
        return errs;
    };
    for (i, text) in block.except.iter().flatten().enumerate() {
        let p = path.child("except").index(i);
        let Some(except) = parse_cidr_sloppy(text) else {
            errs.push(FieldError::invalid_str(p, text, CIDR_MESSAGE));
            continue;
        };
        if !cidr.contains(&except.network()) || cidr.prefix_len() >= except.prefix_len() {
            errs.push(FieldError::invalid_str(p, text, "must be a strict subset of `cidr`"));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(spec: serde_json::Value) -> Vec<String> {
        let spec: NetworkPolicySpec = serde_json::from_value(spec).unwrap();
        validate_spec(&spec, &FieldPath::new("spec")).iter().map(ToString::to_string).collect()
    }

    fn policy(spec: serde_json::Value) -> Policy {
        let object = PolicyObject {
            location: Location::default(),
            namespace: "x".into(),
            name: "p".into(),
            policy: serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "x"}, "spec": spec})).unwrap(),
        };
        compile(&object).unwrap()
    }

    #[test]
    fn a_peer_needs_a_selector_or_an_ip_block() {
        assert_eq!(errors(json!({"ingress": [{"from": [{}]}]})), ["spec.ingress[0].from[0]: Required value: must specify a peer"]);
    }

    #[test]
    fn ip_block_must_stand_alone() {
        assert_eq!(
            errors(json!({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]})),
            ["spec.egress[0].to[0]: Forbidden: may not specify both ipBlock and another peer"]
        );
    }

    #[test]
    fn except_must_be_a_strict_subset_of_cidr() {
        assert_eq!(
            errors(json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/16", "10.1.0.0/24", "10.0.1.0/24", "bogus"]}}]}]})),
            [
                "spec.ingress[0].from[0].ipBlock.except[0]: Invalid value: \"10.0.0.0/16\": must be a strict subset of `cidr`",
                "spec.ingress[0].from[0].ipBlock.except[1]: Invalid value: \"10.1.0.0/24\": must be a strict subset of `cidr`",
                "spec.ingress[0].from[0].ipBlock.except[3]: Invalid value: \"bogus\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            ]
        );
        assert_eq!(errors(json!({"ingress": [{"from": [{"ipBlock": {"cidr": ""}}]}]})), ["spec.ingress[0].from[0].ipBlock.cidr: Required value"]);
    }

    #[test]
    fn end_port_needs_a_numeric_port_not_below_it() {
        assert_eq!(
            errors(json!({"ingress": [{"ports": [
                {"port": 81, "endPort": 80},
                {"port": "http", "endPort": 90},
                {"endPort": 90},
                {"port": 0},
                {"port": 80, "endPort": 70000}
            ]}]})),
            [
                "spec.ingress[0].ports[0].endPort: Invalid value: 80: must be greater than or equal to `port`",
                "spec.ingress[0].ports[1].endPort: Invalid value: 90: may not be specified when `port` is non-numeric",
                "spec.ingress[0].ports[2].endPort: Invalid value: 90: may not be specified when `port` is not specified",
                "spec.ingress[0].ports[3].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.ingress[0].ports[4].endPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            ]
        );
    }

    #[test]
    fn protocols_and_policy_types_are_checked() {
        assert_eq!(
            errors(json!({"ingress": [{"ports": [{"protocol": "tcp", "port": 80}]}], "policyTypes": ["Ingress", "egress"]})),
            [
                "spec.ingress[0].ports[0].protocol: Unsupported value: \"tcp\": supported values: \"TCP\", \"UDP\", \"SCTP\"",
                "spec.policyTypes[1]: Unsupported value: \"egress\": supported values: \"Ingress\", \"Egress\"",
            ]
        );
        assert_eq!(
            errors(json!({"policyTypes": ["Ingress", "Egress", "Ingress"]})),
            ["spec.policyTypes: Invalid value: []networking.PolicyType{\"Ingress\", \"Egress\", \"Ingress\"}: may not specify more than two policyTypes"]
        );
    }

    #[test]
    fn named_port_must_be_an_iana_service_name() {
        assert_eq!(
            errors(json!({"egress": [{"ports": [{"port": "80"}]}]})),
            ["spec.egress[0].ports[0].port: Invalid value: \"80\": must contain at least one letter (a-z)"]
        );
    }

    #[test]
    fn selector_syntax_is_checked_in_peers() {
        assert_eq!(errors(json!({"ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"bad key!": "x"}}}]}]})).len(), 1);
    }

    #[test]
    fn policy_types_default_to_ingress_plus_egress_iff_egress_rules_exist() {
        let p = policy(json!({"podSelector": {}}));
        assert!(p.ingress.is_some() && p.egress.is_none());
        let p = policy(json!({"podSelector": {}, "egress": [{}]}));
        assert!(p.ingress.is_some() && p.egress.is_some());
        let p = policy(json!({"podSelector": {}, "egress": []}));
        assert!(p.egress.is_none());
        let p = policy(json!({"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]}));
        assert!(p.ingress.is_none() && p.egress == Some(vec![]));
        assert_eq!(p.ignored_rules, [Direction::Ingress]);
    }

    #[test]
    fn protocol_defaults_to_tcp() {
        let p = policy(json!({"ingress": [{"ports": [{"port": 80}]}]}));
        assert_eq!(p.ingress.unwrap()[0].ports.as_ref().unwrap()[0], PortRule { protocol: Protocol::Tcp, port: PortSpec::Range(80, 80) });
    }

    #[test]
    fn empty_peer_and_port_lists_mean_all() {
        let p = policy(json!({"ingress": [{"from": [], "ports": []}]}));
        assert_eq!(p.ingress.unwrap()[0], Rule { peers: None, ports: None });
    }

    #[test]
    fn peers_scope_pod_selectors_to_the_policy_namespace() {
        let p = policy(json!({"ingress": [{"from": [
            {"podSelector": {"matchLabels": {"a": "b"}}},
            {"namespaceSelector": {}},
            {"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {}}
        ]}]}));
        let peers = p.ingress.unwrap()[0].peers.clone().unwrap();
        assert_eq!(peers[0], Peer::Pods { namespaces: NamespaceScope::Own("x".into()), pods: Selector::from_labels([("a", "b")]) });
        assert_eq!(peers[1], Peer::Pods { namespaces: NamespaceScope::Matching(Selector::everything()), pods: Selector::everything() });
        assert_eq!(peers[2], Peer::Pods { namespaces: NamespaceScope::Matching(Selector::from_labels([("ns", "y")])), pods: Selector::everything() });
    }

    #[test]
    fn cidrs_are_parsed_sloppily_like_the_api_server() {
        assert_eq!(parse_cidr_sloppy("10.0.0.1/24").unwrap().to_string(), "10.0.0.0/24");
        assert_eq!(parse_cidr_sloppy("010.000.001.000/24").unwrap().to_string(), "10.0.1.0/24");
        assert_eq!(parse_cidr_sloppy("fd00::1/64").unwrap().to_string(), "fd00::/64");
        assert!(parse_cidr_sloppy("10.0.0.0").is_none());
        assert!(parse_cidr_sloppy("10.0.0.0/33").is_none());
        assert!(parse_cidr_sloppy("10.0.0.0/+8").is_none());
    }

    #[test]
    fn except_is_carved_out_of_the_block() {
        let b = IpBlock {
            cidr: "10.0.0.0/16".parse().unwrap(),
            except: vec!["10.0.1.0/24".parse().unwrap()],
            cidr_text: "10.0.0.0/16".into(),
            except_text: vec!["10.0.1.0/24".into()],
        };
        assert!(b.contains("10.0.2.1".parse().unwrap()));
        assert!(!b.contains("10.0.1.1".parse().unwrap()));
        assert!(!b.contains("10.1.0.1".parse().unwrap()));
        assert!(!b.contains("fd00::1".parse().unwrap()));
    }
}
