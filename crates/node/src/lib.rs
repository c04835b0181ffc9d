//! One node's reconcile (DESIGN.md's unit: the lab runs one per lab node, `podnet agent` one over
//! the API server): snapshot → plan (the pod network, the service proxy's tables and the
//! NetworkPolicy table, by the pure planners) → the difference against what was applied → one
//! nft transaction → the flows the new rules make wrong deleted ([`flows`]). A changed Service
//! is planned and written alone (O(change)). A failed apply forgets what was applied, and a
//! ruleset changed behind the agent's back is not trusted: the next write is then in full.

pub mod bgp;
pub mod flows;
pub mod pod_network;
pub mod wireguard;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use model::ClusterState;
use nftset::{Family, Ruleset, Table};
use proxy::ProxyConfig;
use proxy::conntrack::UdpEndpoints;
use proxy::plan::{NodePlan, NodeView, PortPlan};
use proxy::render::{Programmer, Update};

pub use pod_network::{Backend, CONFLIST, POD_BRIDGE, VXLAN_DEVICE, VxlanPeer, conflist, peer_routes, sync_routes, sync_vxlan, vxlan_peers, write_conflist};

/// What a sync did.
#[derive(Clone, Debug, PartialEq)]
pub struct Synced {
    /// Set and map elements in the node's tables.
    pub elements: usize,
    /// Whether the tables were written in full (first sync, after a failure, or after a change
    /// behind the agent's back).
    pub full: bool,
    /// Seconds from snapshot to applied rules.
    pub seconds: f64,
    /// Stale UDP flows deleted.
    pub stale_udp_flows: usize,
    /// Client/frontend/endpoint triples whose connections the policies now deny, cut.
    pub cut_connections: usize,
    /// The tables had been changed behind the agent's back (found while syncing) and were
    /// written in full again.
    pub healed: bool,
}

impl Synced {
    /// This sync followed by `later` on the same node (Services, then the pod tables): one
    /// report, with the element count `later` left.
    pub fn and(mut self, later: Synced) -> Synced {
        self.elements = later.elements;
        self.full |= later.full;
        self.seconds += later.seconds;
        self.stale_udp_flows += later.stale_udp_flows;
        self.cut_connections += later.cut_connections;
        self.healed |= later.healed;
        self
    }
}

/// A node's agent: its name, settings, and what it last applied.
pub struct NodeAgent {
    /// The Node it programs (`spec.nodeName` of its pods; `NODE_NAME` from the downward API).
    pub node: String,
    /// `KubeProxyConfiguration` settings.
    pub config: ProxyConfig,
    /// Program the rules in this network namespace instead of the agent's own (the lab's nodes,
    /// tests, and agents that run beside the node rather than in it).
    pub netns: Option<PathBuf>,
    /// Where the CNI conflist goes once the node's dataplane is ready (`None`: not written).
    pub cni_conf_dir: Option<PathBuf>,
    /// How this node reaches the other nodes' pods.
    pub backend: Backend,
    /// Whether this agent lays the routes or the overlay to the other nodes' pods (given a
    /// `clusterCIDR`); the lab lays its own when it makes the nodes.
    pub pod_network: bool,
    /// The cluster's AS number ([`Backend::Bgp`]).
    pub bgp_asn: u32,
    /// Where the agent's daemons keep their files ([`Backend::Bgp`]'s BIRD: `bird/<node>.*`).
    pub run_dir: PathBuf,
    /// `--encrypt wireguard`: this node's key pair. Pods' traffic to every Node that published
    /// its public key goes through the node's WireGuard tunnel instead of the backend's routes
    /// (BGP still announces; the tunnel's routes win).
    pub wireguard: Option<wireguard::KeyPair>,
    /// The running tunnel.
    tunnel: Option<wireguard::Tunnel>,
    /// What the kernel holds.
    applied: Option<Applied>,
    elements: usize,
    /// An `nft -i` session in the node's namespace, for element transactions.
    session: Option<dataplane::nft::Session>,
    /// A netfilter socket in the node's namespace, for the ruleset generation.
    socket: Option<dataplane::nfnetlink::Socket>,
    /// The pod bridge's MAC, once the node's first pod made the bridge.
    bridge_mac: Option<String>,
}

/// A full sync's plan: the proxy's, the policy table, the pod network's routes, the node's pod
/// CIDRs (for the conflist and the bridge table).
struct Planned {
    proxy: NodePlan,
    policy: Table,
    network: PodNetwork,
    pod_cidrs: Vec<ipnet::IpNet>,
    /// `--encrypt wireguard`: the tunnel's settings.
    tunnel: Option<wireguard::Settings>,
}

/// The routes to the other nodes' pods a full sync makes.
enum PodNetwork {
    /// Not this agent's (no `clusterCIDR`, or laid by someone else).
    None,
    Routes {
        wanted: Vec<(ipnet::IpNet, IpAddr)>,
        cluster: Vec<ipnet::IpNet>,
    },
    Vxlan {
        ip: std::net::Ipv4Addr,
        cidr: ipnet::Ipv4Net,
        cidr6: Option<ipnet::Ipv6Net>,
        peers: Vec<VxlanPeer>,
        cluster: Vec<ipnet::IpNet>,
    },
    Bgp(Box<bgp::NodeRouting>),
}

/// What a node agent applied: the proxy's rules as the programmer keeps them per Service (a
/// changed Service is planned and written alone; the whole rule set is made from it only for a
/// full sync's difference), the node as the proxy sees it, the policy and bridge tables, each
/// UDP port's endpoints and each Service's external addresses, and the ruleset generation the
/// write left.
struct Applied {
    programmer: Programmer,
    node: NodeView,
    policy: Table,
    bridge: Option<Table>,
    udp: UdpEndpoints,
    external: BTreeMap<(String, String), Vec<(IpAddr, bool)>>,
    generation: Option<u32>,
    /// [`Backend::Bgp`]: the routing BIRD was given (its announcements follow `external`).
    bgp: Option<bgp::NodeRouting>,
}

/// `routing` announcing, besides its pod CIDRs (its first announcements, one per family), the
/// /32 (/128) of each LoadBalancer or external IP in `external` this node may serve.
fn with_external(mut routing: bgp::NodeRouting, external: &BTreeMap<(String, String), Vec<(IpAddr, bool)>>) -> bgp::NodeRouting {
    routing.announce.retain(|net| net.prefix_len() < net.max_prefix_len());
    let cidrs = routing.announce.len();
    for (addr, may_serve) in external.values().flatten() {
        if *may_serve && let Ok(host) = ipnet::IpNet::new(*addr, if addr.is_ipv4() { 32 } else { 128 }) {
            routing.announce.push(host);
        }
    }
    if let Some(hosts) = routing.announce.get_mut(cidrs..) {
        hosts.sort();
    }
    routing.announce.dedup();
    routing
}

/// The node's NetworkPolicy table.
fn policy_table(state: &ClusterState, node: &str) -> Table {
    let policies = compile_policies(state);
    policy::enforce::Enforcement::new(state, &policies).node_table(node)
}

/// The valid policies; an invalid one is left out and said, the others are enforced (the lab's
/// CLI refuses invalid ones before they reach its state; one there anyway, from an older state
/// file, is logged and left out too).
pub fn compile_policies(state: &ClusterState) -> policy::PolicySet {
    let (policies, invalid) = policy::PolicySet::compile_valid(state);
    for e in invalid {
        eprintln!("not enforced: {e}");
    }
    policies
}

/// The table that sends same-node pod-to-pod frames through the node's IP stack.
pub const BRIDGE_TABLE: &str = "podnet-l3";

/// Pods of one node share a bridge, so a reply from a Service's backend to a client on the same
/// node would be bridged straight back, past the conntrack entry that undoes the DNAT, and the
/// client would drop it; and pod-to-pod frames on one bridge would pass the forward hook where
/// NetworkPolicy is judged. Routing every same-node pod-to-pod frame through the node (as
/// Calico's point-to-point layout does, without br_netfilter) gives both directions the node's
/// hooks: frames for another local pod are re-addressed to the bridge and handed up.
pub fn bridge_table(bridge_mac: &str, pod_cidrs: &[ipnet::IpNet]) -> Table {
    let mut t = Table::default();
    // Neighbour discovery stays on the bridge: routed, its hop limit would no longer be 255
    // and the pods would drop it (RFC 4861), as ARP (not IP) stays on it for IPv4.
    let nd = pod_cidrs
        .iter()
        .any(|c| c.addr().is_ipv6())
        .then(|| "ether type ip6 icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect } accept".to_owned());
    let rules = nd
        .into_iter()
        .chain(pod_cidrs.iter().map(|c| {
            let (ether, ip) = if c.addr().is_ipv4() { ("ip", "ip") } else { ("ip6", "ip6") };
            format!("ether type {ether} {ip} daddr {} ether daddr != {bridge_mac} ether daddr set {bridge_mac} meta pkttype set host", c.trunc())
        }))
        .collect();
    t.chains.insert("prerouting".into(), nftset::Chain { base: Some("type filter hook prerouting priority -300; policy accept;".into()), rules });
    t
}

/// Each Service's LoadBalancer and external addresses among `ports`, and whether this node may
/// serve it: always for `externalTrafficPolicy: Cluster`, with a ready endpoint here for `Local`.
fn external_addresses(ports: &[PortPlan]) -> BTreeMap<(String, String), Vec<(IpAddr, bool)>> {
    let mut out: BTreeMap<(String, String), Vec<(IpAddr, bool)>> = BTreeMap::new();
    for p in ports {
        let preferred = !p.port.policies.external_local || !p.local.is_empty();
        for ip in p.port.load_balancer_ips.iter().chain(&p.port.external_ips) {
            let list = out.entry((p.port.namespace.clone(), p.port.service.clone())).or_default();
            match list.iter_mut().find(|(a, _)| a == ip) {
                Some(entry) => entry.1 |= preferred,
                None => list.push((*ip, preferred)),
            }
        }
    }
    out
}

impl NodeAgent {
    /// An agent that has applied nothing yet.
    pub fn new(node: String, config: ProxyConfig, netns: Option<PathBuf>) -> NodeAgent {
        NodeAgent {
            node,
            config,
            netns,
            cni_conf_dir: None,
            backend: Backend::HostGw,
            pod_network: true,
            bgp_asn: 64512,
            run_dir: PathBuf::from("/run/podnet-agent"),
            wireguard: None,
            tunnel: None,
            applied: None,
            elements: 0,
            session: None,
            socket: None,
            bridge_mac: None,
        }
    }

    /// Whether the next sync can be of changed Services alone (a full one came before).
    pub fn can_sync_services(&self) -> bool {
        self.applied.is_some()
    }

    /// Forgets what was applied: the next sync writes every table in full.
    pub fn forget_applied(&mut self) {
        self.applied = None;
        self.session = None;
    }

    /// The LoadBalancer and external addresses of the Services, and whether this node may serve
    /// each (`externalTrafficPolicy: Cluster`, or `Local` with a ready endpoint here): what a
    /// load balancer announcing from nodes (MetalLB, Calico's BGP) announces from here.
    pub fn external_addresses(&self) -> BTreeMap<IpAddr, bool> {
        let mut out = BTreeMap::new();
        for (ip, preferred) in self.applied.iter().flat_map(|a| a.external.values().flatten()) {
            *out.entry(*ip).or_insert(false) |= preferred;
        }
        out
    }

    /// What the kernel holds now, as a rule set.
    fn in_kernel(&self) -> Option<Ruleset> {
        let applied = self.applied.as_ref()?;
        let mut rules = applied.programmer.ruleset();
        rules.tables.insert((Family::Inet, policy::enforce::TABLE.to_owned()), applied.policy.clone());
        if let Some(bridge) = &applied.bridge {
            rules.tables.insert((Family::Bridge, BRIDGE_TABLE.to_owned()), bridge.clone());
        }
        Some(rules)
    }

    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
        match &self.netns {
            Some(path) => dataplane::netns::run_in(path, f).map_err(|e| e.to_string()),
            None => Ok(f()),
        }
    }

    /// The node's ruleset generation now (a socket is opened in its namespace on first use).
    fn generation(&mut self) -> Option<u32> {
        if self.socket.is_none() {
            self.socket = self.run(dataplane::nfnetlink::Socket::open).ok().and_then(Result::ok);
        }
        self.socket.as_mut()?.generation().ok()
    }

    /// Whether the node's rules may differ from what this agent applied (someone flushed or
    /// edited them, or nothing was applied yet): one generation read, whatever the tables' size.
    pub fn drifted(&mut self) -> bool {
        let applied = self.applied.as_ref().and_then(|a| a.generation);
        applied.is_none() || applied != self.generation()
    }

    /// Plans the changed Services alone and writes their elements (O(change), where kube-proxy's
    /// nftables mode re-plans every Service), then deletes the UDP flows they leave stale.
    /// `lookup` gives a Service (`None`: deleted) and its EndpointSlices. A Service that needs
    /// a new chain, or a ruleset changed behind the agent's back, makes it a full write of the
    /// programmer's rules; a failure forgets what was applied, so that the next sync is full.
    pub fn sync_services(
        &mut self,
        services: &std::collections::BTreeSet<(String, String)>,
        lookup: impl Fn(&str, &str) -> (Option<Arc<Service>>, Vec<Arc<EndpointSlice>>),
    ) -> Result<Synced, String> {
        let start = Instant::now();
        let drifted = self.drifted();
        let mut full = drifted;
        let Some(applied) = self.applied.as_mut() else { return Err("no full sync yet".into()) };
        let mut script = String::new();
        let (mut udp_before, mut udp_after, mut udp_ports) = (UdpEndpoints::new(), UdpEndpoints::new(), Vec::new());
        for (ns, name) in services {
            let (svc, slices) = lookup(ns, name);
            let slices: Vec<&EndpointSlice> = slices.iter().map(AsRef::as_ref).collect();
            let ports = svc.map(|s| proxy::plan::service_plan(&s, &slices, &applied.node)).unwrap_or_default();
            let key = |k: &(String, String, u16)| (&k.0, &k.1) == (ns, name);
            let (was, rest): (UdpEndpoints, UdpEndpoints) = std::mem::take(&mut applied.udp).into_iter().partition(|(k, _)| key(k));
            applied.udp = rest;
            udp_before.extend(was);
            let now = proxy::conntrack::udp_endpoints(&ports);
            applied.udp.extend(now.clone());
            udp_after.extend(now);
            udp_ports.extend(ports.iter().filter(|p| p.port.protocol == model::Protocol::Udp).cloned());
            applied.external.remove(&(ns.clone(), name.clone()));
            applied.external.extend(external_addresses(&ports));
            match applied.programmer.update(ns, name, &ports) {
                Update::Elements(s) => script.push_str(&s),
                Update::Full => full = true,
            }
        }
        let node = applied.node.clone();
        let written = if full {
            let new = self.in_kernel().ok_or("nothing applied yet")?;
            self.elements = new.element_count();
            self.run(move || dataplane::nft::load(&new).map(|_| ())).and_then(|r| r.map_err(|e| e.to_string()))
        } else {
            self.apply_script(script)
        };
        if let Err(e) = written {
            self.forget_applied();
            return Err(format!("applying the changed Services: {e}"));
        }
        let generation = self.generation();
        if let Some(applied) = self.applied.as_mut() {
            applied.generation = generation;
        }
        // BGP: a LoadBalancer IP this node may now serve, or no longer, is announced or withdrawn.
        let routing = self.applied.as_ref().and_then(|a| Some(with_external(a.bgp.clone()?, &a.external)));
        if let Some(routing) = routing {
            self.bird().supervise(&bgp::config(&routing)).map_err(|e| format!("BGP: {e}"))?;
            if let Some(applied) = self.applied.as_mut() {
                applied.bgp = Some(routing);
            }
        }
        let mut stale_udp_flows = 0;
        if proxy::conntrack::may_leave_stale(&udp_before, &udp_after) {
            let plan = NodePlan { node, config: self.config.clone(), ports: udp_ports, service_cidrs: Vec::new(), cluster_cidrs: Vec::new() };
            stale_udp_flows = self.run(move || flows::clear_stale_udp(&plan))?.map_err(|e| format!("stale UDP flows: {e}"))?;
        }
        Ok(Synced { elements: self.elements, full, seconds: start.elapsed().as_secs_f64(), stale_udp_flows, cut_connections: 0, healed: drifted })
    }

    /// One element transaction through the node's `nft -i` session (started in its namespace
    /// on first use; dropped after a failure, so that the next starts afresh).
    fn apply_script(&mut self, script: String) -> Result<(), String> {
        if script.is_empty() {
            return Ok(());
        }
        if self.session.is_none() {
            self.session = Some(self.run(dataplane::nft::Session::start)?.map_err(|e| e.to_string())?);
        }
        let session = self.session.as_mut().ok_or("no nft session")?;
        session.apply(&script).map_err(|e| {
            self.session = None;
            e.to_string()
        })
    }

    /// Plans from `state` and applies what changed.
    pub fn sync(&mut self, state: &ClusterState) -> Result<Synced, String> {
        let start = Instant::now();
        let planned = self.plan(state)?;
        let cut = self.must_cut(&planned.policy);
        let mut synced = self.apply(planned, start)?;
        if cut {
            synced.cut_connections = self.cut_denied(state)?;
        }
        Ok(synced)
    }

    /// [`NodeAgent::sync`], dropping the snapshot once planned (unless the policies' change
    /// needs it to judge the node's connections): the rules kept per Service are then made in
    /// the memory it leaves, not above it (the heap's top stays releasable).
    pub fn sync_owned(&mut self, state: ClusterState) -> Result<Synced, String> {
        let start = Instant::now();
        let planned = self.plan(&state)?;
        let kept = self.must_cut(&planned.policy).then_some(state);
        let mut synced = self.apply(planned, start)?;
        if let Some(state) = kept {
            synced.cut_connections = self.cut_denied(&state)?;
        }
        Ok(synced)
    }

    /// Whether the planned policy table may deny connections the applied one let through: it
    /// changed (or nothing was applied, or the rules were changed behind our back) and isolates
    /// some pod. A node that isolates none of its pods denies nothing itself (the other end's
    /// node cuts what it denies).
    fn must_cut(&mut self, policy: &Table) -> bool {
        let changed = self.drifted() || self.applied.as_ref().is_none_or(|a| &a.policy != policy);
        changed && policy::enforce::isolates_any(policy)
    }

    /// The tables that follow pods, namespaces and policies rather than Services: the
    /// NetworkPolicy table, and the bridge table once the pod bridge exists.
    fn pod_tables(policy: &Table, bridge: Option<&Table>) -> Ruleset {
        let mut rules = Ruleset::default();
        rules.tables.insert((Family::Inet, policy::enforce::TABLE.to_owned()), policy.clone());
        if let Some(bridge) = bridge {
            rules.tables.insert((Family::Bridge, BRIDGE_TABLE.to_owned()), bridge.clone());
        }
        rules
    }

    /// After pods, namespaces or policies changed (and the Services they back were synced with
    /// [`NodeAgent::sync_services`]): re-plans the policy and bridge tables alone, writes their
    /// difference, and cuts the connections the policies now deny. Full when the tables were
    /// changed behind the agent's back.
    pub fn sync_pod_tables(&mut self, state: &ClusterState) -> Result<Synced, String> {
        let start = Instant::now();
        if self.drifted() {
            return self.sync(state);
        }
        let policy = policy_table(state, &self.node);
        let node = state.nodes.iter().find(|n| n.metadata.name.as_deref() == Some(self.node.as_str()));
        let pod_cidrs = node.map(model::cluster::node_pod_cidrs).unwrap_or_default();
        let bridge = self.bridge_mac()?.map(|mac| bridge_table(&mac, &pod_cidrs));
        let cut = self.must_cut(&policy);
        let applied = self.applied.as_ref().ok_or("no full sync yet")?;
        let (old, new) = (Self::pod_tables(&applied.policy, applied.bridge.as_ref()), Self::pod_tables(&policy, bridge.as_ref()));
        // A difference that is more than elements (a chain's rules) replaces the two tables.
        let written = match nftset::transaction(&old, &new) {
            Ok(script) => self.apply_script(script),
            Err(_) => {
                let tables = new.clone();
                self.run(move || dataplane::nft::load(&tables).map(|_| ())).and_then(|r| r.map_err(|e| e.to_string()))
            }
        };
        if let Err(e) = written {
            self.forget_applied();
            return Err(format!("applying the policy table: {e}"));
        }
        self.elements = (self.elements + new.element_count()).saturating_sub(old.element_count());
        let generation = self.generation();
        if let Some(applied) = self.applied.as_mut() {
            (applied.policy, applied.bridge, applied.generation) = (policy, bridge, generation);
        }
        let cut_connections = if cut { self.cut_denied(state)? } else { 0 };
        Ok(Synced { elements: self.elements, full: false, seconds: start.elapsed().as_secs_f64(), stale_udp_flows: 0, cut_connections, healed: false })
    }

    /// Deletes the node's connections the policies in `state` deny.
    fn cut_denied(&self, state: &ClusterState) -> Result<usize, String> {
        let listed = self.run(flows::listing)?.map_err(|e| format!("listing the node's connections: {e}"))?;
        let policies = compile_policies(state);
        let enforcement = policy::enforce::Enforcement::new(state, &policies);
        let doomed = flows::denied(&listed.0, &listed.1, |from, to, protocol, port| enforcement.allows(from, to, Some(protocol), port));
        let count = doomed.len();
        if count > 0 {
            self.run(move || flows::delete(&doomed))?.map_err(|e| format!("cutting the connections the policies deny: {e}"))?;
        }
        Ok(count)
    }

    /// Everything a full sync writes, from the snapshot.
    fn plan(&self, state: &ClusterState) -> Result<Planned, String> {
        let proxy = proxy::plan(state, &self.node, &self.config).map_err(|e| e.to_string())?;
        let policy = policy_table(state, &self.node);
        let cluster = self.config.cluster_cidrs().map_err(|e| e.to_string())?;
        let encrypted = self.wireguard.is_some();
        let network = match self.backend {
            _ if cluster.is_empty() || !self.pod_network => PodNetwork::None,
            // Encrypted: the tunnel routes to the other nodes' pods (BGP still announces).
            Backend::HostGw | Backend::Vxlan if encrypted => PodNetwork::None,
            Backend::Vxlan => {
                let (ip, cidr, cidr6) =
                    pod_network::own_vxlan(state, &self.node).ok_or_else(|| format!("vxlan: node {} has no IPv4 InternalIP and pod CIDR yet", self.node))?;
                PodNetwork::Vxlan { ip, cidr, cidr6, peers: vxlan_peers(state, &self.node), cluster }
            }
            Backend::HostGw => PodNetwork::Routes { wanted: peer_routes(state, &self.node), cluster },
            Backend::Bgp => PodNetwork::Bgp(Box::new(self.bgp_routing(state, &proxy)?)),
        };
        let node = state.nodes.iter().find(|n| n.metadata.name.as_deref() == Some(self.node.as_str()));
        let pod_cidrs = node.map(model::cluster::node_pod_cidrs).unwrap_or_default();
        let tunnel = self
            .wireguard
            .as_ref()
            .filter(|_| self.pod_network)
            .map(|key| wireguard::Settings { secret: key.secret(), peers: wireguard::peers_of(state, &self.node) });
        Ok(Planned { proxy, policy, network, pod_cidrs, tunnel })
    }

    /// This node's BIRD (in its namespace; its files under `run_dir`).
    pub fn bird(&self) -> bgp::Bird {
        let netns = self.netns.clone().unwrap_or_else(|| PathBuf::from("/proc/self/ns/net"));
        bgp::Bird { netns, stem: self.run_dir.join("bird").join(&self.node) }
    }

    /// [`Backend::Bgp`]: a full iBGP mesh with every other Node that has an IPv4 InternalIP,
    /// announcing this node's pod CIDR and the LoadBalancer/external IPs it may serve.
    fn bgp_routing(&self, state: &ClusterState, plan: &NodePlan) -> Result<bgp::NodeRouting, String> {
        let (ip, cidr, _) =
            pod_network::own_vxlan(state, &self.node).ok_or_else(|| format!("BGP: node {} has no IPv4 InternalIP and pod CIDR yet", self.node))?;
        // IPv4 sessions between IPv4 InternalIPs, IPv6 ones between IPv6 InternalIPs.
        let v6_of = |n: &k8s_openapi::api::core::v1::Node| {
            model::cluster::node_internal_ips(n).into_iter().find_map(|a| if let IpAddr::V6(v6) = a { Some(v6) } else { None })
        };
        let speaker = |n: &k8s_openapi::api::core::v1::Node| -> Option<bgp::Speaker> {
            Some(bgp::Speaker { name: n.metadata.name.clone()?, ip: pod_network::internal_ipv4(n)?, ip6: v6_of(n) })
        };
        let peers = state.nodes.iter().filter(|n| n.metadata.name.as_deref() != Some(self.node.as_str())).filter_map(speaker).collect();
        let own = state.nodes.iter().find(|n| n.metadata.name.as_deref() == Some(self.node.as_str()));
        let me = bgp::Speaker { name: self.node.clone(), ip, ip6: own.and_then(v6_of) };
        let announce = own.map(model::cluster::node_pod_cidrs).unwrap_or_else(|| vec![ipnet::IpNet::V4(cidr)]);
        let routing = bgp::NodeRouting {
            me,
            asn: self.bgp_asn,
            reflector: false,
            peers,
            reflector_peers: Vec::new(),
            external: None,
            announce: announce.into_iter().map(|c| c.trunc()).collect(),
        };
        Ok(with_external(routing, &external_addresses(&plan.ports)))
    }

    /// Starts this node's WireGuard tunnel (its address: the pod CIDRs' network addresses), or
    /// gives the running one its peers as the Nodes now publish them.
    fn sync_tunnel(&mut self, settings: wireguard::Settings, pod_cidrs: &[ipnet::IpNet]) -> Result<(), String> {
        if let Some(t) = &self.tunnel {
            return t.update(settings).map_err(|e| format!("WireGuard: {e}"));
        }
        let (v4, v6) = pod_network::by_family(pod_cidrs);
        let Some(address) = v4.map(|c| c.network()) else {
            return Err(format!("WireGuard: node {} has no IPv4 pod CIDR yet", self.node));
        };
        let netns = self.netns.clone().unwrap_or_else(|| PathBuf::from("/proc/self/ns/net"));
        let tunnel =
            wireguard::Tunnel::start(&netns, address, v6.map(|c| c.network()), 1500 - wireguard::OVERHEAD, settings).map_err(|e| format!("WireGuard: {e}"))?;
        self.tunnel = Some(tunnel);
        Ok(())
    }

    /// The pod bridge's MAC, looked up in the node's namespace until the bridge exists.
    fn bridge_mac(&mut self) -> Result<Option<String>, String> {
        if self.bridge_mac.is_none() {
            let found = self.run(|| dataplane::link::Netlink::connect()?.link(POD_BRIDGE))?.map_err(|e| format!("looking up the pod bridge: {e}"))?;
            self.bridge_mac = found.and_then(|l| l.mac);
        }
        Ok(self.bridge_mac.clone())
    }

    fn apply(&mut self, planned: Planned, start: Instant) -> Result<Synced, String> {
        let Planned { proxy: plan, policy, network, pod_cidrs, tunnel } = planned;
        let programmer = Programmer::new(&plan);
        let bridge = self.bridge_mac()?.map(|mac| bridge_table(&mac, &pod_cidrs));
        let mut new = programmer.ruleset();
        new.tables.insert((Family::Inet, policy::enforce::TABLE.to_owned()), policy);
        if let Some(bridge) = &bridge {
            new.tables.insert((Family::Bridge, BRIDGE_TABLE.to_owned()), bridge.clone());
        }
        // What is in the kernel is trusted only if nobody changed the rules since we wrote them.
        let drifted = self.drifted();
        let healed = drifted && self.applied.is_some();
        let old = if drifted { None } else { self.in_kernel() };
        let udp_before = self.applied.take().map(|a| a.udp);
        let full = old.is_none();
        // The rule set and the session go to the applying thread and come back (no copy of
        // 80,000 elements).
        let mut session = self.session.take();
        let apply = move || {
            let r = dataplane::nft::sync_in_session(&mut session, old.as_ref(), &new);
            (r, new, session)
        };
        let mut bgp_routing = None;
        let (result, mut new, session) = self.run(apply)?;
        self.session = session;
        let synced = result.map_err(|e| format!("applying the node's rules: {e}"))?;
        let generation = self.generation();
        // The pod network: routes (host-gw) or the overlay (vxlan) to the other Nodes' pod CIDRs.
        match network {
            PodNetwork::None => {}
            PodNetwork::Vxlan { ip, cidr, cidr6, peers, cluster } => {
                self.run(move || sync_vxlan(ip, cidr, cidr6, &cluster, &peers))?.map_err(|e| format!("vxlan to the other nodes' pods: {e}"))?;
            }
            PodNetwork::Routes { wanted, cluster } => {
                self.run(move || sync_routes(&cluster, &wanted))?.map_err(|e| format!("routes to the other nodes' pods: {e}"))?;
            }
            PodNetwork::Bgp(routing) => {
                self.bird().supervise(&bgp::config(&routing)).map_err(|e| format!("BGP: {e}"))?;
                bgp_routing = Some(*routing);
            }
        }
        if let Some(settings) = tunnel {
            self.sync_tunnel(settings, &pod_cidrs)?;
        }
        // The dataplane is ready: pods may be attached, so the runtime gets its conflist (with
        // the MTU that leaves room for the overlay's or the tunnel's headers).
        if let Some(dir) = &self.cni_conf_dir
            && !pod_cidrs.is_empty()
        {
            let mtu = match (self.wireguard.is_some(), self.backend) {
                (true, _) => Some(1500 - wireguard::OVERHEAD),
                (false, Backend::Vxlan) => Some(1500 - pod_network::VXLAN_OVERHEAD),
                _ => None,
            };
            write_conflist(dir, &conflist(&pod_cidrs, mtu)).map_err(|e| format!("writing {}: {e}", dir.join(CONFLIST).display()))?;
        }
        self.elements = new.element_count();
        let policy = new.tables.remove(&(Family::Inet, policy::enforce::TABLE.to_owned())).unwrap_or_default();
        drop(new);
        let udp = proxy::conntrack::udp_endpoints(&plan.ports);
        let external = external_addresses(&plan.ports);
        let stale_possible = udp_before.as_ref().is_none_or(|before| proxy::conntrack::may_leave_stale(before, &udp));
        let node = plan.node.clone();
        let stale_udp_flows = if stale_possible { self.run(move || flows::clear_stale_udp(&plan))?.map_err(|e| format!("stale UDP flows: {e}"))? } else { 0 };
        self.applied = Some(Applied { programmer, node, policy, bridge, udp, external, generation, bgp: bgp_routing });
        Ok(Synced {
            elements: self.elements,
            full: full || synced == dataplane::nft::Synced::Full,
            seconds: start.elapsed().as_secs_f64(),
            stale_udp_flows,
            cut_connections: 0,
            healed,
        })
    }
}
