//! NetworkPolicy compiled for the kernel: one `inet podnet-policy` table per node, made from the
//! same compiled policies and pod selections that answer `podnet policy matrix`.
//!
//! Layout (see docs/policy.md):
//! - two base chains on the node's `forward` hook, egress first (priority -10), then ingress
//!   (priority 0): a packet passes when neither drops it. Both see the packet after Service DNAT
//!   (prerouting) and before SNAT (postrouting), so a connection through a ClusterIP is judged
//!   on the backend pod, with the client pod's own address. The node's own traffic (probes,
//!   hostNetwork pods) takes the `output`/`input` hooks and is never filtered.
//! - replies and the rest of allowed connections pass on conntrack state; a pod reaching itself
//!   (a Service hairpin) passes on the `self` set; ICMPv6 neighbour discovery always passes.
//! - `egress-pods` / `ingress-pods`: verdict maps from each isolated local pod's address to the
//!   chain of its *selection* (the set of policies that select it in that direction), so the
//!   per-packet dispatch is one lookup whatever the number of pods and policies.
//! - a selection chain jumps to each of its policies' chains, then logs (NFLOG, rate-limited)
//!   and drops: a denied connection is dropped, never reset.
//! - a policy chain has one rule per NetworkPolicy rule (two when it mixes numbered and named
//!   ports): allowed peers as an address interval set (pod IPs, ipBlocks minus their `except`),
//!   ports as a `l4proto . port` interval set, named ports as `address . l4proto . port`
//!   elements resolved on each destination pod. Every rule counts what it accepts.
//!
//! Rules grow with policies plus selections; elements with the pods each rule covers. No I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use model::{ClusterState, PodInfo, Protocol};
use nftset::{Chain, Set, Table};

use crate::matrix::PodIndex;
use crate::spec::{Direction, PolicySet, PortSpec, Rule};

/// The table's name (family `inet`).
pub const TABLE: &str = "podnet-policy";

/// The NFLOG group drops are logged to.
pub const LOG_GROUP: u16 = 7;

/// What every drop log prefix starts with.
pub const LOG_PREFIX: &str = "podnet drop";

/// Drops logged per second per node at most (a flood of denied packets is counted, not logged).
const LOG_RATE: &str = "limit rate 50/second burst 100 packets";

/// nftables' limit on a log prefix (the kernel's 128 bytes with the NUL).
const MAX_PREFIX: usize = 127;

/// A closed range of IPv4 addresses, as integers.
type Range4 = (u32, u32);

/// One NetworkPolicy rule, compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CompiledRule {
    /// Allowed peer addresses, disjoint and sorted; `None` when the rule names no peers.
    peers: Option<Vec<Range4>>,
    /// Numbered ports by protocol, disjoint and sorted; `None` when the rule names no ports.
    numbered: Option<BTreeMap<Protocol, Vec<(u16, u16)>>>,
    /// Named ports resolved: `(destination, protocol, port)`.
    named: BTreeSet<(Ipv4Addr, Protocol, u16)>,
}

impl CompiledRule {
    /// Whether the rule can match anything at all.
    fn can_match(&self) -> bool {
        let peers = self.peers.as_ref().is_none_or(|p| !p.is_empty());
        let ports = self.numbered.is_none() || self.numbered.as_ref().is_some_and(|n| !n.is_empty()) || !self.named.is_empty();
        peers && ports
    }

    /// The kernel's decision for this rule, in words of addresses.
    fn matches(&self, peer: Ipv4Addr, destination: Ipv4Addr, protocol: Option<Protocol>, port: u16) -> bool {
        if let Some(peers) = &self.peers
            && !contains(peers, u32::from(peer))
        {
            return false;
        }
        let Some(numbered) = &self.numbered else {
            return true;
        };
        let Some(protocol) = protocol else {
            return false;
        };
        numbered.get(&protocol).is_some_and(|ranges| ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&port)))
            || self.named.contains(&(destination, protocol, port))
    }
}

/// One policy in one direction.
#[derive(Clone, Debug)]
struct CompiledSide {
    namespace: String,
    name: String,
    rules: Vec<CompiledRule>,
}

/// The policies of a cluster compiled for enforcement, ready to render any node's table.
pub struct Enforcement<'a> {
    state: &'a ClusterState,
    /// Per direction (ingress 0, egress 1), per policy index: the compiled side, when the policy
    /// isolates that direction and selects some pod.
    sides: [BTreeMap<usize, CompiledSide>; 2],
    /// Per direction, per pod index: the policies selecting it (its selection).
    selections: [Vec<Vec<usize>>; 2],
    /// Non-hostNetwork pods by address.
    by_ip: std::collections::HashMap<Ipv4Addr, usize>,
}

fn direction_index(d: Direction) -> usize {
    match d {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

/// A pod's IPv4 address, the one the kernel sees (the lab and this compiler are IPv4 today).
pub fn pod_ipv4(pod: &PodInfo) -> Option<Ipv4Addr> {
    pod.ips.iter().find_map(|ip| match ip {
        IpAddr::V4(v4) => Some(*v4),
        IpAddr::V6(_) => None,
    })
}

fn contains(ranges: &[Range4], addr: u32) -> bool {
    let i = ranges.partition_point(|&(lo, _)| lo <= addr);
    i > 0 && ranges[i - 1].1 >= addr
}

/// Sorts and merges overlapping ranges (adjacent ones stay apart, so that one pod coming or
/// going changes one element).
fn disjoint<T: Ord + Copy>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// An `ipBlock` as IPv4 ranges: the CIDR minus its exceptions (IPv6 blocks have none).
fn block_ranges(block: &crate::spec::IpBlock) -> Vec<Range4> {
    let ipnet::IpNet::V4(cidr) = block.cidr else {
        return Vec::new();
    };
    let mut ranges = vec![(u32::from(cidr.network()), u32::from(cidr.broadcast()))];
    for except in &block.except {
        let ipnet::IpNet::V4(e) = except else { continue };
        let (elo, ehi) = (u32::from(e.network()), u32::from(e.broadcast()));
        ranges = ranges
            .into_iter()
            .flat_map(|(lo, hi)| {
                let mut kept = Vec::with_capacity(2);
                if ehi < lo || elo > hi {
                    kept.push((lo, hi));
                } else {
                    if elo > lo {
                        kept.push((lo, elo - 1));
                    }
                    if ehi < hi {
                        kept.push((ehi + 1, hi));
                    }
                }
                kept
            })
            .collect();
    }
    ranges
}

fn nft_protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

fn range_text(lo: u32, hi: u32) -> String {
    if lo == hi { Ipv4Addr::from(lo).to_string() } else { format!("{}-{}", Ipv4Addr::from(lo), Ipv4Addr::from(hi)) }
}

fn port_text(lo: u16, hi: u16) -> String {
    if lo == hi { lo.to_string() } else { format!("{lo}-{hi}") }
}

/// FNV-1a: a stable name for a selection, the same on every run and in every process.
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// `namespace/name` as part of an nft object name: DNS names are safe there; anything else (or
/// a name too long for the kernel's 256 bytes) is named by its hash.
fn object_part(namespace: &str, name: &str) -> String {
    let safe = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if safe(namespace) && safe(name) && namespace.len() + name.len() < 200 {
        format!("{namespace}/{name}")
    } else {
        format!("h{:016x}", stable_hash(&format!("{namespace}/{name}")))
    }
}

fn base(hook_line: &str) -> Chain {
    Chain { base: Some(hook_line.to_owned()), rules: Vec::new() }
}

fn set(spec: &str, elements: impl IntoIterator<Item = String>) -> Set {
    Set { is_map: false, spec: spec.to_owned(), elements: elements.into_iter().map(|e| (e, None)).collect(), ..Default::default() }
}

/// The drop log prefix of a selection: direction, namespace and the policies that isolate the
/// pod, cut to fit (`+N` more).
fn drop_prefix(direction: Direction, namespace: &str, policies: &[&str]) -> String {
    let head = format!("{LOG_PREFIX} {} {namespace}: ", direction.field());
    let mut text = head.clone();
    for (i, p) in policies.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let rest = policies.len() - i;
        let more = if rest > 1 { format!(",+{}", rest - 1) } else { String::new() };
        if text.len() + sep.len() + p.len() + more.len() > MAX_PREFIX {
            if i == 0 {
                return format!("{head}+{}", policies.len()).chars().take(MAX_PREFIX).collect();
            }
            text.push_str(&format!(",+{rest}"));
            return text;
        }
        text.push_str(sep);
        text.push_str(p);
    }
    text
}

/// The verdict map that dispatches a direction's isolated pods to their selection's chain.
fn dispatch_map(direction: Direction) -> &'static str {
    match direction {
        Direction::Egress => "egress-pods",
        Direction::Ingress => "ingress-pods",
    }
}

/// Whether a node's table isolates any pod (in either direction): one that does not denies
/// nothing.
pub fn isolates_any(table: &Table) -> bool {
    [Direction::Egress, Direction::Ingress].iter().any(|d| table.sets.get(dispatch_map(*d)).is_some_and(|s| !s.elements.is_empty()))
}

/// A drop log prefix read back: `(direction, "namespace/policy,...")`.
pub fn parse_drop_prefix(prefix: &str) -> Option<(&str, String)> {
    let rest = prefix.strip_prefix(LOG_PREFIX)?.trim_start();
    let (direction, rest) = rest.split_once(' ')?;
    let (namespace, policies) = rest.split_once(": ")?;
    let named: Vec<String> = policies.split(',').map(|p| if p.starts_with('+') { format!("{p} more") } else { format!("{namespace}/{p}") }).collect();
    Some((direction, named.join(",")))
}

impl<'a> Enforcement<'a> {
    /// Compiles every policy against the snapshot's pods and namespaces.
    pub fn new(state: &'a ClusterState, policies: &'a PolicySet) -> Self {
        let n = state.pods.len();
        let mut index = PodIndex::new(state);
        let mut sides: [BTreeMap<usize, CompiledSide>; 2] = Default::default();
        let mut selections: [Vec<Vec<usize>>; 2] = [vec![Vec::new(); n], vec![Vec::new(); n]];
        for (pi, policy) in policies.policies.iter().enumerate() {
            let selected = index.selected(&policy.namespace, &policy.pod_selector).clone();
            if selected.is_empty() {
                continue;
            }
            for direction in [Direction::Ingress, Direction::Egress] {
                let Some(rules) = policy.rules(direction) else { continue };
                let d = direction_index(direction);
                for i in selected.iter() {
                    selections[d][i].push(pi);
                }
                let rules = rules.iter().map(|r| compile_rule(state, &mut index, r, direction, &selected)).filter(CompiledRule::can_match).collect();
                sides[d].insert(pi, CompiledSide { namespace: policy.namespace.clone(), name: policy.name.clone(), rules });
            }
        }
        let by_ip = state.pods.iter().enumerate().filter(|(_, p)| !p.host_network).filter_map(|(i, p)| pod_ipv4(p).map(|ip| (ip, i))).collect();
        Enforcement { state, sides, selections, by_ip }
    }

    /// The pods of a node whose traffic its table judges: not hostNetwork, with an address.
    fn local_pods<'s>(&'s self, node: &'s str) -> impl Iterator<Item = (usize, Ipv4Addr)> + 's {
        self.state
            .pods
            .iter()
            .enumerate()
            .filter(move |(_, p)| !p.host_network && p.node_name.as_deref() == Some(node))
            .filter_map(|(i, p)| pod_ipv4(p).map(|ip| (i, ip)))
    }

    /// The node's `inet podnet-policy` table.
    pub fn node_table(&self, node: &str) -> Table {
        let mut t = Table::default();
        let mut egress = base("type filter hook forward priority -10; policy accept;");
        let mut ingress = base("type filter hook forward priority 0; policy accept;");
        for (chain, map, addr) in [(&mut egress, dispatch_map(Direction::Egress), "ip saddr"), (&mut ingress, dispatch_map(Direction::Ingress), "ip daddr")] {
            chain.rules = vec![
                "ct state established,related accept".into(),
                "ip saddr . ip daddr @self accept".into(),
                "icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect } accept".into(),
                format!("{addr} vmap @{map}"),
            ];
        }
        t.chains.insert("forward-egress".into(), egress);
        t.chains.insert("forward-ingress".into(), ingress);
        let local: Vec<(usize, Ipv4Addr)> = self.local_pods(node).collect();
        t.sets.insert("self".into(), set("type ipv4_addr . ipv4_addr;", local.iter().map(|(_, ip)| format!("{ip} . {ip}"))));
        for direction in [Direction::Egress, Direction::Ingress] {
            self.render_direction(&mut t, direction, &local);
        }
        t
    }

    fn render_direction(&self, t: &mut Table, direction: Direction, local: &[(usize, Ipv4Addr)]) {
        let d = direction_index(direction);
        let field = direction.field();
        let mut dispatch = BTreeMap::new();
        let mut used_policies = BTreeSet::new();
        let mut selection_chains: BTreeMap<String, Chain> = BTreeMap::new();
        for &(i, ip) in local {
            let selection = &self.selections[d][i];
            if selection.is_empty() {
                continue;
            }
            let sides: Vec<&CompiledSide> = selection.iter().filter_map(|pi| self.sides[d].get(pi)).collect();
            let key: Vec<String> = sides.iter().map(|s| object_part(&s.namespace, &s.name)).collect();
            let chain_name = format!("{field}-isolated/{:016x}", stable_hash(&key.join(" ")));
            dispatch.insert(ip.to_string(), Some(format!("goto {chain_name}")));
            selection_chains.entry(chain_name).or_insert_with(|| {
                let mut rules: Vec<String> = key.iter().map(|k| format!("jump {field}/{k}")).collect();
                let names: Vec<&str> = sides.iter().map(|s| s.name.as_str()).collect();
                let prefix = drop_prefix(direction, &sides[0].namespace, &names);
                rules.push(format!("{LOG_RATE} log prefix \"{prefix}\" group {LOG_GROUP}"));
                rules.push("counter drop".into());
                Chain { base: None, rules }
            });
            used_policies.extend(selection.iter().copied());
        }
        t.chains.extend(selection_chains);
        t.sets.insert(
            dispatch_map(direction).to_owned(),
            Set { is_map: true, spec: "type ipv4_addr : verdict;".into(), elements: dispatch, ..Default::default() },
        );
        let local_ips: BTreeSet<Ipv4Addr> = local.iter().map(|&(_, ip)| ip).collect();
        for pi in used_policies {
            let Some(side) = self.sides[d].get(&pi) else { continue };
            let chain_name = format!("{field}/{}", object_part(&side.namespace, &side.name));
            let mut chain = Chain::default();
            for (ri, rule) in side.rules.iter().enumerate() {
                let set_base = format!("{chain_name}/{ri}");
                let peer_match = match &rule.peers {
                    None => String::new(),
                    Some(ranges) => {
                        let (peer_field, name) = (if direction == Direction::Ingress { "ip saddr" } else { "ip daddr" }, format!("{set_base}/peers"));
                        t.sets.insert(name.clone(), set("type ipv4_addr; flags interval;", ranges.iter().map(|&(lo, hi)| range_text(lo, hi))));
                        format!("{peer_field} @{name} ")
                    }
                };
                let Some(numbered) = &rule.numbered else {
                    chain.rules.push(format!("{peer_match}counter accept"));
                    continue;
                };
                if !numbered.is_empty() {
                    let name = format!("{set_base}/ports");
                    let elements =
                        numbered.iter().flat_map(|(p, ranges)| ranges.iter().map(move |&(lo, hi)| format!("{} . {}", nft_protocol(*p), port_text(lo, hi))));
                    t.sets.insert(name.clone(), set("type inet_proto . inet_service; flags interval;", elements));
                    chain.rules.push(format!("{peer_match}meta l4proto . th dport @{name} counter accept"));
                }
                // Ingress rules resolve names on this node's pods only: they are the destinations.
                let named: Vec<String> = rule
                    .named
                    .iter()
                    .filter(|(dst, _, _)| direction == Direction::Egress || local_ips.contains(dst))
                    .map(|(dst, p, port)| format!("{dst} . {} . {port}", nft_protocol(*p)))
                    .collect();
                if !named.is_empty() {
                    let name = format!("{set_base}/named");
                    t.sets.insert(name.clone(), set("type ipv4_addr . inet_proto . inet_service;", named));
                    chain.rules.push(format!("{peer_match}ip daddr . meta l4proto . th dport @{name} counter accept"));
                }
            }
            t.chains.insert(chain_name, chain);
        }
    }

    /// Whether the tables let a new connection through, decided on the compiled rules exactly
    /// as the kernel decides it on a node's forward hook (`protocol` `None`: not TCP, UDP or
    /// SCTP, e.g. ICMP). Used to find established connections a change now denies.
    pub fn allows(&self, from: Ipv4Addr, to: Ipv4Addr, protocol: Option<Protocol>, port: u16) -> bool {
        if from == to {
            return true;
        }
        [(Direction::Egress, from, to), (Direction::Ingress, to, from)].into_iter().all(|(direction, subject, peer)| {
            let d = direction_index(direction);
            let Some(i) = self.pod_at(subject) else { return true };
            let selection = &self.selections[d][i];
            selection.is_empty()
                || selection.iter().filter_map(|pi| self.sides[d].get(pi)).any(|side| side.rules.iter().any(|r| r.matches(peer, to, protocol, port)))
        })
    }

    /// The non-hostNetwork pod with this address.
    fn pod_at(&self, ip: Ipv4Addr) -> Option<usize> {
        self.by_ip.get(&ip).copied()
    }
}

/// Compiles one rule: peers to address ranges, ports to numbered ranges and resolved names.
fn compile_rule<'a>(state: &'a ClusterState, index: &mut PodIndex<'a>, rule: &'a Rule, direction: Direction, selected: &crate::bitset::PodSet) -> CompiledRule {
    let peers = rule.peers.as_ref().map(|peers| {
        let mut ranges = Vec::new();
        for peer in peers {
            match peer {
                crate::spec::Peer::IpBlock(block) => ranges.extend(block_ranges(block)),
                pods => {
                    for i in index.peer(pods).iter() {
                        if let Some(ip) = pod_ipv4(&state.pods[i]) {
                            ranges.push((u32::from(ip), u32::from(ip)));
                        }
                    }
                }
            }
        }
        disjoint(ranges)
    });
    let mut named = BTreeSet::new();
    let numbered = rule.ports.as_ref().map(|entries| {
        let mut by_protocol: BTreeMap<Protocol, Vec<(u16, u16)>> = BTreeMap::new();
        for entry in entries {
            match &entry.port {
                PortSpec::All => by_protocol.entry(entry.protocol).or_default().push((0, u16::MAX)),
                PortSpec::Range(lo, hi) => by_protocol.entry(entry.protocol).or_default().push((*lo, *hi)),
                PortSpec::Named(name) => {
                    // Resolved on the destination: the selected pods for ingress, any pod for egress.
                    for (i, pod) in state.pods.iter().enumerate() {
                        if direction == Direction::Ingress && !selected.contains(i) {
                            continue;
                        }
                        if let (Some(port), Some(ip)) = (pod.named_port(name, entry.protocol), pod_ipv4(pod)) {
                            named.insert((ip, entry.protocol, port));
                        }
                    }
                }
            }
        }
        by_protocol.into_iter().map(|(p, ranges)| (p, disjoint(ranges))).collect()
    });
    CompiledRule { peers, numbered, named }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_ranges_merge_and_adjacent_ones_stay_apart() {
        assert_eq!(disjoint(vec![(5u32, 9), (1, 3), (2, 4), (10, 10)]), vec![(1, 4), (5, 9), (10, 10)]);
        assert_eq!(disjoint(vec![(1u16, 100), (80, 80)]), vec![(1, 100)]);
    }

    #[test]
    fn an_ip_block_minus_its_exceptions() {
        let block = crate::spec::IpBlock {
            cidr: "10.0.0.0/24".parse().unwrap(),
            except: vec!["10.0.0.0/26".parse().unwrap(), "10.0.0.128/32".parse().unwrap(), "192.168.0.0/16".parse().unwrap()],
            cidr_text: String::new(),
            except_text: Vec::new(),
        };
        let texts: Vec<String> = block_ranges(&block).into_iter().map(|(lo, hi)| range_text(lo, hi)).collect();
        assert_eq!(texts, ["10.0.0.64-10.0.0.127", "10.0.0.129-10.0.0.255"]);
        let whole = crate::spec::IpBlock { cidr: "0.0.0.0/0".parse().unwrap(), except: vec![], cidr_text: String::new(), except_text: vec![] };
        assert_eq!(block_ranges(&whole), vec![(0, u32::MAX)]);
    }

    #[test]
    fn membership_in_disjoint_ranges() {
        let r = vec![(10, 20), (30, 30)];
        assert!(contains(&r, 10) && contains(&r, 20) && contains(&r, 30));
        assert!(!contains(&r, 9) && !contains(&r, 21) && !contains(&r, 31));
    }

    #[test]
    fn drop_prefixes_fit_and_read_back() {
        let p = drop_prefix(Direction::Ingress, "production", &["default-deny-all", "api-network-policy"]);
        assert_eq!(p, "podnet drop ingress production: default-deny-all,api-network-policy");
        assert_eq!(parse_drop_prefix(&p), Some(("ingress", "production/default-deny-all,production/api-network-policy".into())));
        let long: Vec<String> = (0..20).map(|i| format!("policy-number-{i}")).collect();
        let refs: Vec<&str> = long.iter().map(String::as_str).collect();
        let p = drop_prefix(Direction::Egress, "ns", &refs);
        assert!(p.len() <= MAX_PREFIX, "{p}");
        assert!(p.ends_with(" more") || p.contains(",+"), "{p}");
    }

    #[test]
    fn object_names_fall_back_to_a_hash() {
        assert_eq!(object_part("x", "allow-80"), "x/allow-80");
        assert!(object_part("x", &"a".repeat(250)).starts_with('h'));
    }
}
