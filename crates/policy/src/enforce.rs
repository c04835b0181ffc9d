//! NetworkPolicy compiled for the kernel: one `inet podnet-policy` table per node, made from the
//! same compiled policies and pod selections that answer `podnet policy matrix`.
//!
//! Layout (see docs/policy.md). Every address of a pod (`status.podIPs`, IPv4 and IPv6 alike) is
//! that pod's: each object keyed by addresses comes in two twins, the IPv4 one under its plain
//! name and the IPv6 one with a `6` suffix (`egress-pods6`, `self6`, `.../peers6`, ...). The
//! base chains' sets and maps exist in both families, even empty; a policy rule's sets and rules
//! exist only for a family it has addresses of.
//! - two base chains on the node's `forward` hook, egress first (priority -10), then ingress
//!   (priority 0): a packet passes when neither drops it. Both see the packet after Service DNAT
//!   (prerouting) and before SNAT (postrouting), so a connection through a ClusterIP is judged
//!   on the backend pod, with the client pod's own address. The node's own traffic (probes,
//!   hostNetwork pods) takes the `output`/`input` hooks and is never filtered.
//! - replies and the rest of allowed connections pass on conntrack state; a pod reaching itself
//!   (a Service hairpin) passes on the `self`/`self6` sets; ICMPv6 neighbour discovery always
//!   passes.
//! - `egress-pods` / `ingress-pods` (`ip saddr` / `ip daddr`) and `egress-pods6` /
//!   `ingress-pods6` (`ip6 saddr` / `ip6 daddr`): verdict maps from each address of each isolated
//!   local pod to the chain of its *selection* (the set of policies that select it in that
//!   direction), so the per-packet dispatch is one lookup whatever the number of pods and
//!   policies, and an isolated pod is isolated in both families.
//! - a selection chain jumps to each of its policies' chains, then logs (NFLOG, rate-limited)
//!   and drops: a denied connection is dropped, never reset.
//! - a policy chain has, per NetworkPolicy rule, accept rules: allowed peers as an address
//!   interval set per family (`peers`, `peers6`: pod IPs, ipBlocks minus their `except`; an
//!   ipBlock admits only addresses inside it, so an IPv4 block never admits an IPv6 peer), ports
//!   as a `l4proto . port` interval set (`ports`, family-less), named ports as
//!   `address . l4proto . port` elements resolved on each address of each destination pod
//!   (`named`, `named6`). A rule with peers has its rules once per family it has peers of: a
//!   family with none has no rule, and its packets fall through to the drop. A rule without
//!   peers has one family-less rule for its numbered ports (or for every port), and one per
//!   family for its named ports. Every rule counts what it accepts.
//!
//! Rules grow with policies plus selections; elements with the pods each rule covers. No I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

/// An address family; its index (`as usize`) picks its half of per-family pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    V4 = 0,
    V6 = 1,
}

const FAMILIES: [Family; 2] = [Family::V4, Family::V6];

impl Family {
    /// An address's family and its value as an integer.
    fn split(ip: IpAddr) -> (Family, u128) {
        match ip {
            IpAddr::V4(v4) => (Family::V4, u128::from(u32::from(v4))),
            IpAddr::V6(v6) => (Family::V6, u128::from(v6)),
        }
    }

    fn of(ip: IpAddr) -> Family {
        Family::split(ip).0
    }

    /// The address itself, from its integer.
    fn addr(self, value: u128) -> IpAddr {
        match self {
            // IPv4 ranges hold 32-bit values only.
            Family::V4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(value).unwrap_or(u32::MAX))),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(value)),
        }
    }

    /// The suffix of the family's twin of an object name: the IPv4 names are the plain ones.
    fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "",
            Family::V6 => "6",
        }
    }

    /// The nft address type.
    fn addr_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }

    /// The nft header of the family's addresses (`ip saddr`, `ip6 daddr`).
    fn header(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }
}

/// A closed range of addresses of one family, as integers.
type Range = (u128, u128);

/// Address ranges, per family (indexed by `Family as usize`), each disjoint and sorted.
type Ranges = [Vec<Range>; 2];

/// One NetworkPolicy rule, compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CompiledRule {
    /// Allowed peer addresses; `None` when the rule names no peers.
    peers: Option<Ranges>,
    /// Numbered ports by protocol, disjoint and sorted; `None` when the rule names no ports.
    numbered: Option<BTreeMap<Protocol, Vec<(u16, u16)>>>,
    /// Named ports resolved: `(destination address, protocol, port)`, every address of each
    /// destination pod.
    named: BTreeSet<(IpAddr, Protocol, u16)>,
}

impl CompiledRule {
    /// Whether the rule can match anything at all.
    fn can_match(&self) -> bool {
        let peers = self.peers.as_ref().is_none_or(|p| p.iter().any(|ranges| !ranges.is_empty()));
        let ports = self.numbered.is_none() || self.numbered.as_ref().is_some_and(|n| !n.is_empty()) || !self.named.is_empty();
        peers && ports
    }

    /// The kernel's decision for this rule, in words of addresses (of one family: a packet's).
    fn matches(&self, peer: IpAddr, destination: IpAddr, protocol: Option<Protocol>, port: u16) -> bool {
        if let Some(peers) = &self.peers {
            let (family, value) = Family::split(peer);
            if !contains(&peers[family as usize], value) {
                return false;
            }
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
    /// Non-hostNetwork pods by each of their addresses (both families).
    by_ip: std::collections::HashMap<IpAddr, usize>,
}

fn direction_index(d: Direction) -> usize {
    match d {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

/// A pod's IPv4 address (its first), for callers that speak IPv4 only (the lab's probes).
pub fn pod_ipv4(pod: &PodInfo) -> Option<Ipv4Addr> {
    pod.ips.iter().find_map(|ip| match ip {
        IpAddr::V4(v4) => Some(*v4),
        IpAddr::V6(_) => None,
    })
}

/// Every address of a pod, both families (`status.podIPs`): each is the pod's, to the kernel.
pub fn pod_ips(pod: &PodInfo) -> impl Iterator<Item = IpAddr> + '_ {
    pod.ips.iter().copied()
}

fn contains(ranges: &[Range], addr: u128) -> bool {
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

/// A CIDR as its family and range of addresses.
fn net_range(net: &ipnet::IpNet) -> (Family, Range) {
    let (family, lo) = Family::split(net.network());
    (family, (lo, Family::split(net.broadcast()).1))
}

/// An `ipBlock` as its family and ranges: the CIDR minus its exceptions (of the same family:
/// validation refuses others, and one could except nothing from the block).
fn block_ranges(block: &crate::spec::IpBlock) -> (Family, Vec<Range>) {
    let (family, whole) = net_range(&block.cidr);
    let mut ranges = vec![whole];
    for except in &block.except {
        let (except_family, (elo, ehi)) = net_range(except);
        if except_family != family {
            continue;
        }
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
    (family, ranges)
}

fn nft_protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

fn range_text(family: Family, lo: u128, hi: u128) -> String {
    if lo == hi { family.addr(lo).to_string() } else { format!("{}-{}", family.addr(lo), family.addr(hi)) }
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

/// The verdict map that dispatches a direction's isolated pods to their selection's chain, for
/// the addresses of one family.
fn dispatch_map(direction: Direction, family: Family) -> &'static str {
    match (direction, family) {
        (Direction::Egress, Family::V4) => "egress-pods",
        (Direction::Ingress, Family::V4) => "ingress-pods",
        (Direction::Egress, Family::V6) => "egress-pods6",
        (Direction::Ingress, Family::V6) => "ingress-pods6",
    }
}

/// Whether a node's table isolates any pod (in either direction, in either family): one that
/// does not denies nothing.
pub fn isolates_any(table: &Table) -> bool {
    [Direction::Egress, Direction::Ingress]
        .iter()
        .flat_map(|d| FAMILIES.map(|f| dispatch_map(*d, f)))
        .any(|map| table.sets.get(map).is_some_and(|s| !s.elements.is_empty()))
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
        let by_ip = state.pods.iter().enumerate().filter(|(_, p)| !p.host_network).flat_map(|(i, p)| pod_ips(p).map(move |ip| (ip, i))).collect();
        Enforcement { state, sides, selections, by_ip }
    }

    /// The pods of a node whose traffic its table judges (not hostNetwork, with an address), once
    /// per address.
    fn local_pods<'s>(&'s self, node: &'s str) -> impl Iterator<Item = (usize, IpAddr)> + 's {
        self.state
            .pods
            .iter()
            .enumerate()
            .filter(move |(_, p)| !p.host_network && p.node_name.as_deref() == Some(node))
            .flat_map(|(i, p)| pod_ips(p).map(move |ip| (i, ip)))
    }

    /// The node's `inet podnet-policy` table.
    pub fn node_table(&self, node: &str) -> Table {
        let mut t = Table::default();
        let mut egress = base("type filter hook forward priority -10; policy accept;");
        let mut ingress = base("type filter hook forward priority 0; policy accept;");
        for (chain, direction, field) in [(&mut egress, Direction::Egress, "saddr"), (&mut ingress, Direction::Ingress, "daddr")] {
            chain.rules = vec![
                "ct state established,related accept".into(),
                "ip saddr . ip daddr @self accept".into(),
                "ip6 saddr . ip6 daddr @self6 accept".into(),
                "icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect } accept".into(),
            ];
            for family in FAMILIES {
                chain.rules.push(format!("{} {field} vmap @{}", family.header(), dispatch_map(direction, family)));
            }
        }
        t.chains.insert("forward-egress".into(), egress);
        t.chains.insert("forward-ingress".into(), ingress);
        let local: Vec<(usize, IpAddr)> = self.local_pods(node).collect();
        // The base chains name both `self` sets: they exist even when empty.
        for family in FAMILIES {
            let (addr_type, suffix) = (family.addr_type(), family.suffix());
            let elements = local.iter().filter(|(_, ip)| Family::of(*ip) == family).map(|(_, ip)| format!("{ip} . {ip}"));
            t.sets.insert(format!("self{suffix}"), set(&format!("type {addr_type} . {addr_type};"), elements));
        }
        for direction in [Direction::Egress, Direction::Ingress] {
            self.render_direction(&mut t, direction, &local);
        }
        t
    }

    fn render_direction(&self, t: &mut Table, direction: Direction, local: &[(usize, IpAddr)]) {
        let d = direction_index(direction);
        let field = direction.field();
        let mut dispatch: [BTreeMap<String, Option<String>>; 2] = Default::default();
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
            dispatch[Family::of(ip) as usize].insert(ip.to_string(), Some(format!("goto {chain_name}")));
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
        // The base chains name both dispatch maps: they exist even when empty.
        for (family, elements) in FAMILIES.into_iter().zip(dispatch) {
            let spec = format!("type {} : verdict;", family.addr_type());
            t.sets.insert(dispatch_map(direction, family).to_owned(), Set { is_map: true, spec, elements, ..Default::default() });
        }
        let local_ips: BTreeSet<IpAddr> = local.iter().map(|&(_, ip)| ip).collect();
        // The peer's side of the packet: its source into the pod, its destination out of it.
        let peer_field = if direction == Direction::Ingress { "saddr" } else { "daddr" };
        for pi in used_policies {
            let Some(side) = self.sides[d].get(&pi) else { continue };
            let chain_name = format!("{field}/{}", object_part(&side.namespace, &side.name));
            let mut chain = Chain::default();
            for (ri, rule) in side.rules.iter().enumerate() {
                let set_base = format!("{chain_name}/{ri}");
                // The peer matches of the rule: none when it names no peers (any family), else one
                // per family it has peers of; a family without any has no rule and so drops.
                let peer_matches: Vec<(Option<Family>, String)> = match &rule.peers {
                    None => vec![(None, String::new())],
                    Some(ranges) => FAMILIES
                        .into_iter()
                        .filter(|f| !ranges[*f as usize].is_empty())
                        .map(|f| {
                            let name = format!("{set_base}/peers{}", f.suffix());
                            let elements = ranges[f as usize].iter().map(|&(lo, hi)| range_text(f, lo, hi));
                            t.sets.insert(name.clone(), set(&format!("type {}; flags interval;", f.addr_type()), elements));
                            (Some(f), format!("{} {peer_field} @{name} ", f.header()))
                        })
                        .collect(),
                };
                let Some(numbered) = &rule.numbered else {
                    chain.rules.extend(peer_matches.iter().map(|(_, m)| format!("{m}counter accept")));
                    continue;
                };
                if !numbered.is_empty() && !peer_matches.is_empty() {
                    let name = format!("{set_base}/ports");
                    let elements =
                        numbered.iter().flat_map(|(p, ranges)| ranges.iter().map(move |&(lo, hi)| format!("{} . {}", nft_protocol(*p), port_text(lo, hi))));
                    t.sets.insert(name.clone(), set("type inet_proto . inet_service; flags interval;", elements));
                    chain.rules.extend(peer_matches.iter().map(|(_, m)| format!("{m}meta l4proto . th dport @{name} counter accept")));
                }
                for family in FAMILIES {
                    // A named port's destination is of one family: only peers of that family (or
                    // any peer) reach it.
                    let matches: Vec<&String> = peer_matches.iter().filter(|(f, _)| f.is_none_or(|f| f == family)).map(|(_, m)| m).collect();
                    // Ingress rules resolve names on this node's pods only: they are the destinations.
                    let named: Vec<String> = rule
                        .named
                        .iter()
                        .filter(|(dst, _, _)| Family::of(*dst) == family && (direction == Direction::Egress || local_ips.contains(dst)))
                        .map(|(dst, p, port)| format!("{dst} . {} . {port}", nft_protocol(*p)))
                        .collect();
                    if named.is_empty() || matches.is_empty() {
                        continue;
                    }
                    let name = format!("{set_base}/named{}", family.suffix());
                    t.sets.insert(name.clone(), set(&format!("type {} . inet_proto . inet_service;", family.addr_type()), named));
                    let header = family.header();
                    chain.rules.extend(matches.iter().map(|m| format!("{m}{header} daddr . meta l4proto . th dport @{name} counter accept")));
                }
            }
            t.chains.insert(chain_name, chain);
        }
    }

    /// Whether the tables let a new connection through, decided on the compiled rules exactly
    /// as the kernel decides it on a node's forward hook (`protocol` `None`: not TCP, UDP or
    /// SCTP, e.g. ICMP). `from` and `to` are a packet's addresses, so of one family: IPv4 or
    /// IPv6, each pod judged on whichever of its addresses it is. Used to find established
    /// connections a change now denies.
    pub fn allows(&self, from: IpAddr, to: IpAddr, protocol: Option<Protocol>, port: u16) -> bool {
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

    /// The non-hostNetwork pod with this address (of either family).
    fn pod_at(&self, ip: IpAddr) -> Option<usize> {
        self.by_ip.get(&ip).copied()
    }
}

/// Compiles one rule: peers to address ranges, ports to numbered ranges and resolved names.
fn compile_rule<'a>(state: &'a ClusterState, index: &mut PodIndex<'a>, rule: &'a Rule, direction: Direction, selected: &crate::bitset::PodSet) -> CompiledRule {
    let peers = rule.peers.as_ref().map(|peers| {
        let mut ranges: Ranges = Default::default();
        for peer in peers {
            match peer {
                crate::spec::Peer::IpBlock(block) => {
                    let (family, block) = block_ranges(block);
                    ranges[family as usize].extend(block);
                }
                pods => {
                    for i in index.peer(pods).iter() {
                        for ip in pod_ips(&state.pods[i]) {
                            let (family, value) = Family::split(ip);
                            ranges[family as usize].push((value, value));
                        }
                    }
                }
            }
        }
        ranges.map(disjoint)
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
                        if let Some(port) = pod.named_port(name, entry.protocol) {
                            named.extend(pod_ips(pod).map(|ip| (ip, entry.protocol, port)));
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
        let (family, ranges) = block_ranges(&block);
        let texts: Vec<String> = ranges.into_iter().map(|(lo, hi)| range_text(family, lo, hi)).collect();
        assert_eq!(texts, ["10.0.0.64-10.0.0.127", "10.0.0.129-10.0.0.255"]);
        let whole = crate::spec::IpBlock { cidr: "0.0.0.0/0".parse().unwrap(), except: vec![], cidr_text: String::new(), except_text: vec![] };
        assert_eq!(block_ranges(&whole), (Family::V4, vec![(0, u128::from(u32::MAX))]));
    }

    #[test]
    fn an_ipv6_block_minus_its_exceptions() {
        let block = crate::spec::IpBlock {
            cidr: "2001:db8::/64".parse().unwrap(),
            except: vec!["2001:db8::/120".parse().unwrap(), "2001:db8::8000/128".parse().unwrap(), "10.0.0.0/8".parse().unwrap()],
            cidr_text: String::new(),
            except_text: Vec::new(),
        };
        let (family, ranges) = block_ranges(&block);
        assert_eq!(family, Family::V6);
        let texts: Vec<String> = ranges.into_iter().map(|(lo, hi)| range_text(family, lo, hi)).collect();
        assert_eq!(texts, ["2001:db8::100-2001:db8::7fff", "2001:db8::8001-2001:db8::ffff:ffff:ffff:ffff"]);
        let whole = crate::spec::IpBlock { cidr: "::/0".parse().unwrap(), except: vec![], cidr_text: String::new(), except_text: vec![] };
        assert_eq!(block_ranges(&whole), (Family::V6, vec![(0, u128::MAX)]));
    }

    #[test]
    fn membership_in_disjoint_ranges() {
        let r = vec![(10, 20), (30, 30)];
        assert!(contains(&r, 10) && contains(&r, 20) && contains(&r, 30));
        assert!(!contains(&r, 9) && !contains(&r, 21) && !contains(&r, 31));
    }

    /// Namespace `x` on nodes `n1` (`server`, `client`) and `n2` (`other`), every pod dual-stack:
    /// `10.244.<node>.<n>` and `fd00:10:244:<node>::<n>`; `server` names TCP 8080 `http`.
    fn dual_stack(policies: &[serde_json::Value]) -> ClusterState {
        use serde_json::json;
        let pod = |name: &str, node: u8, n: u8, ports: serde_json::Value| {
            let (v4, v6) = (format!("10.244.{node}.{n}"), format!("fd00:10:244:{node}::{n}"));
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "x", "labels": {"app": name}},
                "spec": {"nodeName": format!("n{node}"), "containers": [{"name": "c", "image": "agnhost", "ports": ports}]},
                "status": {"podIP": v4, "podIPs": [{"ip": v4}, {"ip": v6}]}
            })
        };
        let mut objects = vec![
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}),
            pod("server", 1, 2, json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}])),
            pod("client", 1, 3, json!([])),
            pod("other", 2, 4, json!([])),
        ];
        for (i, spec) in policies.iter().enumerate() {
            objects.push(
                json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": format!("np{i}"), "namespace": "x"}, "spec": spec}),
            );
        }
        testkit::cluster(&objects)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    const SERVER: [&str; 2] = ["10.244.1.2", "fd00:10:244:1::2"];
    const CLIENT: [&str; 2] = ["10.244.1.3", "fd00:10:244:1::3"];
    const OTHER: [&str; 2] = ["10.244.2.4", "fd00:10:244:2::4"];

    fn elements(t: &Table, set: &str) -> Vec<String> {
        t.sets.get(set).map(|s| s.elements.keys().cloned().collect()).unwrap_or_default()
    }

    #[test]
    fn a_dual_stack_pod_is_isolated_in_both_families() {
        let state = dual_stack(&[serde_json::json!({
            "podSelector": {"matchLabels": {"app": "server"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]
        })]);
        let policies = PolicySet::compile(&state).unwrap();
        let e = Enforcement::new(&state, &policies);
        for f in 0..2 {
            assert!(e.allows(ip(CLIENT[f]), ip(SERVER[f]), Some(Protocol::Tcp), 80), "{} -> {}", CLIENT[f], SERVER[f]);
            assert!(!e.allows(ip(OTHER[f]), ip(SERVER[f]), Some(Protocol::Tcp), 80), "{} -> {}", OTHER[f], SERVER[f]);
            assert!(!e.allows(ip(OTHER[f]), ip(SERVER[f]), None, 0), "{} -> {} (ICMP)", OTHER[f], SERVER[f]);
            // Egress is not isolated, nor is the other pod.
            assert!(e.allows(ip(SERVER[f]), ip(OTHER[f]), Some(Protocol::Udp), 53));
        }
        let t = e.node_table("n1");
        let goto = t.sets["ingress-pods6"].elements.get(SERVER[1]).cloned().flatten().unwrap();
        assert!(goto.starts_with("goto ingress-isolated/"), "{goto}");
        assert_eq!(t.sets["ingress-pods"].elements.get(SERVER[0]), Some(&Some(goto)));
        assert_eq!(elements(&t, "ingress-pods6"), [SERVER[1]], "only the isolated pod is dispatched");
        assert!(t.sets["egress-pods6"].elements.is_empty() && t.sets["egress-pods6"].spec == "type ipv6_addr : verdict;");
        assert_eq!(elements(&t, "ingress/x/np0/0/peers"), [CLIENT[0]]);
        assert_eq!(elements(&t, "ingress/x/np0/0/peers6"), [CLIENT[1]]);
        assert_eq!(t.chains["ingress/x/np0"].rules, ["ip saddr @ingress/x/np0/0/peers counter accept", "ip6 saddr @ingress/x/np0/0/peers6 counter accept"]);
        assert!(elements(&t, "self6").contains(&format!("{0} . {0}", SERVER[1])), "{:?}", elements(&t, "self6"));
        for (chain, rule) in [("forward-ingress", "ip6 daddr vmap @ingress-pods6"), ("forward-egress", "ip6 saddr vmap @egress-pods6")] {
            assert!(t.chains[chain].rules.iter().any(|r| r == rule), "{chain}: {:?}", t.chains[chain].rules);
            assert!(t.chains[chain].rules.iter().any(|r| r == "ip6 saddr . ip6 daddr @self6 accept"), "{chain}");
        }
        assert!(isolates_any(&t) && !isolates_any(&e.node_table("n2")));
    }

    #[test]
    fn an_ipv6_ip_block_with_an_exception() {
        let state = dual_stack(&[serde_json::json!({
            "podSelector": {"matchLabels": {"app": "server"}},
            "ingress": [{"from": [{"ipBlock": {"cidr": "2001:db8::/64", "except": ["2001:db8::/120"]}}]}]
        })]);
        let policies = PolicySet::compile(&state).unwrap();
        let e = Enforcement::new(&state, &policies);
        let to = ip(SERVER[1]);
        assert!(e.allows(ip("2001:db8::1:1"), to, Some(Protocol::Tcp), 80), "inside the block");
        assert!(e.allows(ip("2001:db8::ffff:ffff:ffff:ffff"), to, Some(Protocol::Tcp), 80), "the block's last address");
        assert!(!e.allows(ip("2001:db8::5"), to, Some(Protocol::Tcp), 80), "in the exception");
        assert!(!e.allows(ip("2001:db8:0:1::1"), to, Some(Protocol::Tcp), 80), "outside the block");
        assert!(!e.allows(ip(CLIENT[1]), to, Some(Protocol::Tcp), 80), "a pod outside the block");
        for from in ["192.0.2.1", CLIENT[0], "0.0.0.0"] {
            assert!(!e.allows(ip(from), ip(SERVER[0]), Some(Protocol::Tcp), 80), "an IPv6 block admits no IPv4 peer: {from}");
        }
        let t = e.node_table("n1");
        assert_eq!(elements(&t, "ingress/x/np0/0/peers6"), ["2001:db8::100-2001:db8::ffff:ffff:ffff:ffff"]);
        assert!(!t.sets.contains_key("ingress/x/np0/0/peers"), "no IPv4 peers, no IPv4 set");
        assert_eq!(t.chains["ingress/x/np0"].rules, ["ip6 saddr @ingress/x/np0/0/peers6 counter accept"]);
        // The pod's IPv4 address is still dispatched: it falls to the drop.
        assert!(t.sets["ingress-pods"].elements.contains_key(SERVER[0]));
    }

    #[test]
    fn an_ipv4_block_leaves_a_dual_stack_pod_closed_to_ipv6() {
        let state = dual_stack(&[serde_json::json!({
            "podSelector": {"matchLabels": {"app": "server"}},
            "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "TCP", "port": 80}]}]
        })]);
        let policies = PolicySet::compile(&state).unwrap();
        let e = Enforcement::new(&state, &policies);
        assert!(e.allows(ip(CLIENT[0]), ip(SERVER[0]), Some(Protocol::Tcp), 80));
        assert!(e.allows(ip("192.0.2.1"), ip(SERVER[0]), Some(Protocol::Tcp), 80));
        assert!(!e.allows(ip(CLIENT[0]), ip(SERVER[0]), Some(Protocol::Tcp), 81), "the rule's port");
        for from in [CLIENT[1], OTHER[1], "2001:db8::1", "::ffff:192.0.2.1"] {
            assert!(!e.allows(ip(from), ip(SERVER[1]), Some(Protocol::Tcp), 80), "{from}");
        }
        let t = e.node_table("n1");
        assert!(!t.sets.keys().any(|k| k.ends_with("/peers6")), "{:?}", t.sets.keys().collect::<Vec<_>>());
        assert_eq!(elements(&t, "ingress/x/np0/0/peers"), ["0.0.0.0-255.255.255.255"]);
        assert_eq!(t.chains["ingress/x/np0"].rules, ["ip saddr @ingress/x/np0/0/peers meta l4proto . th dport @ingress/x/np0/0/ports counter accept"]);
        assert!(t.sets["ingress-pods6"].elements.contains_key(SERVER[1]), "the pod's IPv6 address goes to its selection's drop");
    }

    #[test]
    fn named_ports_resolve_on_every_address_of_the_destination() {
        let state = dual_stack(&[
            serde_json::json!({"podSelector": {"matchLabels": {"app": "server"}}, "ingress": [{"ports": [{"port": "http"}]}]}),
            serde_json::json!({"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "http"}]}]}),
        ]);
        let policies = PolicySet::compile(&state).unwrap();
        let e = Enforcement::new(&state, &policies);
        for f in 0..2 {
            assert!(e.allows(ip(CLIENT[f]), ip(SERVER[f]), Some(Protocol::Tcp), 8080), "{}", CLIENT[f]);
            assert!(e.allows(ip(OTHER[f]), ip(SERVER[f]), Some(Protocol::Tcp), 8080), "{}", OTHER[f]);
            assert!(!e.allows(ip(OTHER[f]), ip(SERVER[f]), Some(Protocol::Udp), 8080), "{}", OTHER[f]);
            assert!(!e.allows(ip(OTHER[f]), ip(SERVER[f]), Some(Protocol::Tcp), 80), "{}", OTHER[f]);
            // The client's egress: `http` is a port of the server only.
            assert!(!e.allows(ip(CLIENT[f]), ip(OTHER[f]), Some(Protocol::Tcp), 8080), "{}", CLIENT[f]);
        }
        let t = e.node_table("n1");
        for direction in ["ingress/x/np0", "egress/x/np1"] {
            assert_eq!(elements(&t, &format!("{direction}/0/named")), [format!("{} . tcp . 8080", SERVER[0])]);
            assert_eq!(elements(&t, &format!("{direction}/0/named6")), [format!("{} . tcp . 8080", SERVER[1])]);
            assert_eq!(
                t.chains[direction].rules,
                [
                    format!("ip daddr . meta l4proto . th dport @{direction}/0/named counter accept"),
                    format!("ip6 daddr . meta l4proto . th dport @{direction}/0/named6 counter accept"),
                ]
            );
        }
        // On the other node, the server is no destination of its ingress rules: nothing to name.
        let t2 = e.node_table("n2");
        assert!(!t2.sets.keys().any(|k| k.starts_with("ingress/")), "{:?}", t2.sets.keys().collect::<Vec<_>>());
    }

    #[test]
    fn a_family_of_named_ports_is_reached_only_from_peers_of_that_family() {
        let state = dual_stack(&[serde_json::json!({
            "podSelector": {"matchLabels": {"app": "server"}},
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": "http"}, {"port": 9000}]}]
        })]);
        let policies = PolicySet::compile(&state).unwrap();
        let e = Enforcement::new(&state, &policies);
        assert!(e.allows(ip(CLIENT[0]), ip(SERVER[0]), Some(Protocol::Tcp), 8080));
        assert!(!e.allows(ip(CLIENT[1]), ip(SERVER[1]), Some(Protocol::Tcp), 8080));
        let t = e.node_table("n1");
        assert!(!t.sets.contains_key("ingress/x/np0/0/named6"), "no IPv6 peer reaches it");
        assert_eq!(
            t.chains["ingress/x/np0"].rules,
            [
                "ip saddr @ingress/x/np0/0/peers meta l4proto . th dport @ingress/x/np0/0/ports counter accept",
                "ip saddr @ingress/x/np0/0/peers ip daddr . meta l4proto . th dport @ingress/x/np0/0/named counter accept",
            ]
        );
    }

    /// The table of a dual-stack node, with every kind of rule, loads in nft's check mode (in a
    /// network namespace of its own: nothing is changed anywhere).
    #[test]
    fn a_dual_stack_table_passes_nft_check() {
        let state = dual_stack(&[
            serde_json::json!({
                "podSelector": {"matchLabels": {"app": "server"}},
                "ingress": [
                    {"from": [{"podSelector": {"matchLabels": {"app": "client"}}}, {"ipBlock": {"cidr": "2001:db8::/64", "except": ["2001:db8::/120"]}}]},
                    {"from": [{"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.128/25"]}}], "ports": [{"port": "http"}, {"protocol": "UDP", "port": 53, "endPort": 60}]},
                    {"ports": [{"port": "http"}]}
                ]
            }),
            serde_json::json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"podSelector": {}}], "ports": [{"port": "http"}, {"port": 53, "protocol": "UDP"}]}]}),
        ]);
        let policies = PolicySet::compile(&state).unwrap();
        let mut rules = nftset::Ruleset::default();
        rules.tables.insert((nftset::Family::Inet, TABLE.to_owned()), Enforcement::new(&state, &policies).node_table("n1"));
        let script = rules.full_script();
        for needed in ["peers6", "named6", "self6", "ingress-pods6", "egress-pods6", "fd00:10:244:1::2 . tcp . 8080"] {
            assert!(script.contains(needed), "{needed}:\n{script}");
        }
        let run = std::process::Command::new("unshare")
            .args(["--net", "nft", "-c", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write as _;
                child.stdin.take().map(|mut stdin| stdin.write_all(script.as_bytes())).transpose()?;
                child.wait_with_output()
            });
        match run {
            Err(e) => testkit::skip(&format!("needs unshare and nft: {e}")),
            Ok(out) if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Operation not permitted") => testkit::skip("needs root"),
            Ok(out) => assert!(out.status.success(), "nft -c refused the table: {}\n{script}", String::from_utf8_lossy(&out.stderr)),
        }
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
