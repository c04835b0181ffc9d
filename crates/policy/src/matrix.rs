//! The connectivity matrix, computed on sets of pods.
//!
//! Selections are computed once per distinct selector and peer, and every rule adds a whole set
//! of allowed peers to the pods it covers; no step looks at (pod, pod, policy) triples. The
//! result must equal [`crate::evaluate::Evaluator`] on every pair (a property test checks it).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;

use model::selector::Requirement;
use model::{ClusterState, Protocol, Selector};

use crate::bitset::PodSet;
use crate::spec::{NamespaceScope, Peer, PolicySet, PortSpec, Rule};

/// A destination port and protocol: one matrix.
pub type PortKey = (u16, Protocol);

/// `allowed[c][i]` is the set of pods `j` that pod `i` may open a connection to on column `c`.
#[derive(Clone, Debug)]
pub struct Matrix {
    /// The columns (ports), in the order asked for.
    pub ports: Vec<PortKey>,
    allowed: Vec<Vec<PodSet>>,
}

impl Matrix {
    /// Whether pod `from` may open a new connection to pod `to` on column `port_index`.
    pub fn allowed(&self, port_index: usize, from: usize, to: usize) -> bool {
        self.allowed[port_index][from].contains(to)
    }

    /// The pods `from` may reach on column `port_index`.
    pub fn row(&self, port_index: usize, from: usize) -> &PodSet {
        &self.allowed[port_index][from]
    }

    /// A matrix observed rather than computed (`lab probe`): `cells[c][from][to]`.
    pub fn from_cells(ports: Vec<PortKey>, cells: &[Vec<Vec<bool>>]) -> Matrix {
        let allowed = cells
            .iter()
            .map(|rows| {
                rows.iter()
                    .map(|row| {
                        let mut set = PodSet::empty(row.len());
                        row.iter().enumerate().filter(|(_, ok)| **ok).for_each(|(j, _)| set.insert(j));
                        set
                    })
                    .collect()
            })
            .collect();
        Matrix { ports, allowed }
    }
}

/// Every (containerPort, protocol) some pod declares, by port then protocol.
pub fn declared_ports(state: &ClusterState) -> Vec<PortKey> {
    let set: BTreeSet<PortKey> = state.pods.iter().flat_map(|p| p.ports.iter().map(|cp| (cp.port, cp.protocol))).collect();
    set.into_iter().collect()
}

/// Pods of the snapshot indexed for selection.
pub(crate) struct PodIndex<'a> {
    state: &'a ClusterState,
    /// Pods of each namespace: a contiguous range, since pods are sorted by namespace.
    by_namespace: HashMap<&'a str, Range<usize>>,
    peer_cache: HashMap<&'a Peer, PodSet>,
    selected_cache: HashMap<(&'a str, &'a Selector), PodSet>,
    /// Pods carrying each `key=value`, ascending: a selector with an `In` requirement looks
    /// only at those, not at every pod of the namespace (1,000 policies over 1,000 pods: a
    /// million label matches otherwise).
    postings: HashMap<(&'a str, &'a str), Vec<usize>>,
}

impl<'a> PodIndex<'a> {
    pub(crate) fn new(state: &'a ClusterState) -> Self {
        let mut by_namespace: HashMap<&str, Range<usize>> = HashMap::new();
        for (i, pod) in state.pods.iter().enumerate() {
            by_namespace.entry(pod.namespace.as_str()).and_modify(|r| r.end = i + 1).or_insert(i..i + 1);
        }
        let mut postings: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
        for (i, pod) in state.pods.iter().enumerate() {
            for (k, v) in &pod.labels {
                postings.entry((k.as_str(), v.as_str())).or_default().push(i);
            }
        }
        PodIndex { state, by_namespace, peer_cache: HashMap::new(), selected_cache: HashMap::new(), postings }
    }

    fn n(&self) -> usize {
        self.state.pods.len()
    }

    fn namespace_pods(&self, ns: &str) -> Range<usize> {
        self.by_namespace.get(ns).cloned().unwrap_or(0..0)
    }

    /// Pods of `ns` matching `selector`, never hostNetwork ones.
    fn pods_in(&self, ns: &str, selector: &Selector, into: &mut PodSet) {
        let range = self.namespace_pods(ns);
        let mut check = |i: usize| {
            let pod = &self.state.pods[i];
            if !pod.host_network && selector.matches(&pod.labels) {
                into.insert(i);
            }
        };
        let narrowest = selector.requirements().iter().find_map(|r| match r {
            Requirement::In(key, values) => Some((key, values)),
            _ => None,
        });
        match narrowest {
            Some((key, values)) => {
                for value in values {
                    let Some(pods) = self.postings.get(&(key.as_str(), value.as_str())) else { continue };
                    let from = pods.partition_point(|&i| i < range.start);
                    pods[from..].iter().take_while(|&&i| i < range.end).for_each(|&i| check(i));
                }
            }
            None => range.for_each(check),
        }
    }

    /// The pods a policy's `podSelector` selects.
    pub(crate) fn selected(&mut self, ns: &'a str, selector: &'a Selector) -> &PodSet {
        if !self.selected_cache.contains_key(&(ns, selector)) {
            let mut set = PodSet::empty(self.n());
            self.pods_in(ns, selector, &mut set);
            self.selected_cache.insert((ns, selector), set);
        }
        &self.selected_cache[&(ns, selector)]
    }

    /// The pods a peer entry covers.
    pub(crate) fn peer(&mut self, peer: &'a Peer) -> &PodSet {
        if !self.peer_cache.contains_key(peer) {
            let set = self.compute_peer(peer);
            self.peer_cache.insert(peer, set);
        }
        &self.peer_cache[peer]
    }

    fn compute_peer(&self, peer: &Peer) -> PodSet {
        let mut set = PodSet::empty(self.n());
        match peer {
            Peer::Pods { namespaces: NamespaceScope::Own(ns), pods } => self.pods_in(ns, pods, &mut set),
            Peer::Pods { namespaces: NamespaceScope::Matching(nss), pods } => {
                for ns in self.state.namespaces.iter().filter(|ns| nss.matches(&ns.labels)) {
                    self.pods_in(&ns.name, pods, &mut set);
                }
            }
            Peer::IpBlock(block) => {
                for (i, pod) in self.state.pods.iter().enumerate() {
                    if pod.primary_ip().is_some_and(|ip| block.contains(ip)) {
                        set.insert(i);
                    }
                }
            }
        }
        set
    }

    /// The pods a rule's peer list covers (`None`: everyone).
    pub(crate) fn rule_peers(&mut self, rule: &'a Rule) -> PodSet {
        match &rule.peers {
            None => PodSet::full(self.n()),
            Some(peers) => {
                let mut set = PodSet::empty(self.n());
                for p in peers {
                    set.union_with(self.peer(p));
                }
                set
            }
        }
    }

    /// The destinations on which a rule's port list allows `port`: every pod for numbers and
    /// ranges, the pods declaring the name for named ports.
    pub(crate) fn rule_destinations(&self, rule: &Rule, (port, protocol): PortKey) -> PodSet {
        let n = self.n();
        let Some(entries) = &rule.ports else {
            return PodSet::full(n);
        };
        let mut set = PodSet::empty(n);
        for entry in entries.iter().filter(|e| e.protocol == protocol) {
            match &entry.port {
                PortSpec::All => return PodSet::full(n),
                PortSpec::Range(lo, hi) if (*lo..=*hi).contains(&port) => return PodSet::full(n),
                PortSpec::Range(..) => {}
                PortSpec::Named(name) => {
                    for (i, pod) in self.state.pods.iter().enumerate() {
                        if pod.named_port(name, protocol) == Some(port) {
                            set.insert(i);
                        }
                    }
                }
            }
        }
        set
    }
}

/// Computes the matrix for the given ports.
pub fn compute(state: &ClusterState, policies: &PolicySet, ports: &[PortKey]) -> Matrix {
    let n = state.pods.len();
    let cols = ports.len();
    let mut index = PodIndex::new(state);

    let mut ingress_isolated = PodSet::empty(n);
    let mut egress_isolated = PodSet::empty(n);
    // in_from[c][j]: sources pod j's ingress rules admit; out_to[c][i]: destinations i's egress rules admit.
    let mut in_from = vec![vec![PodSet::empty(n); n]; cols];
    let mut out_to = vec![vec![PodSet::empty(n); n]; cols];

    for policy in &policies.policies {
        let selected = index.selected(&policy.namespace, &policy.pod_selector).clone();
        if selected.is_empty() {
            continue;
        }
        if let Some(rules) = &policy.ingress {
            ingress_isolated.union_with(&selected);
            for rule in rules {
                let peers = index.rule_peers(rule);
                if peers.is_empty() {
                    continue;
                }
                for (c, key) in ports.iter().enumerate() {
                    let mut covered = index.rule_destinations(rule, *key);
                    covered.intersect_with(&selected);
                    for j in covered.iter() {
                        in_from[c][j].union_with(&peers);
                    }
                }
            }
        }
        if let Some(rules) = &policy.egress {
            egress_isolated.union_with(&selected);
            for rule in rules {
                let peers = index.rule_peers(rule);
                if peers.is_empty() {
                    continue;
                }
                for (c, key) in ports.iter().enumerate() {
                    let mut targets = index.rule_destinations(rule, *key);
                    targets.intersect_with(&peers);
                    if targets.is_empty() {
                        continue;
                    }
                    for i in selected.iter() {
                        out_to[c][i].union_with(&targets);
                    }
                }
            }
        }
    }

    let mut not_ingress_isolated = PodSet::full(n);
    for j in ingress_isolated.iter() {
        not_ingress_isolated.remove(j);
    }
    let node_local = node_local_pairs(state);

    let mut allowed = Vec::with_capacity(cols);
    for c in 0..cols {
        // Transpose ingress: accepts[i] = destinations whose ingress side admits i.
        let mut accepts = vec![not_ingress_isolated.clone(); n];
        for j in ingress_isolated.iter() {
            for i in in_from[c][j].iter() {
                accepts[i].insert(j);
            }
        }
        let mut rows = Vec::with_capacity(n);
        for (i, mut row) in accepts.into_iter().enumerate() {
            if egress_isolated.contains(i) {
                row.intersect_with(&out_to[c][i]);
            }
            row.insert(i);
            for &(a, b) in node_local.get(&i).into_iter().flatten() {
                row.insert(if a == i { b } else { a });
            }
            rows.push(row);
        }
        allowed.push(rows);
    }
    Matrix { ports: ports.to_vec(), allowed }
}

/// Pairs of pods on the same node where one is hostNetwork: node traffic, always allowed.
fn node_local_pairs(state: &ClusterState) -> BTreeMap<usize, Vec<(usize, usize)>> {
    let mut by_node: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, pod) in state.pods.iter().enumerate() {
        if let Some(node) = &pod.node_name {
            by_node.entry(node).or_default().push(i);
        }
    }
    let mut out: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new();
    for pods in by_node.values() {
        for &h in pods.iter().filter(|&&h| state.pods[h].host_network) {
            for &k in pods.iter().filter(|&&k| k != h) {
                out.entry(h).or_default().push((h, k));
                out.entry(k).or_default().push((h, k));
            }
        }
    }
    out
}
