//! One node's reconcile: snapshot → plan (the service proxy's tables and the NetworkPolicy
//! table, by the same pure planners as the lab) → the difference against what was applied →
//! one nft transaction. A failed apply forgets what was applied, so the next one is full.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proxy::render::Update;

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

/// The conflist file the agent writes (libcni reads the first in name order).
pub const CONFLIST: &str = "10-podnet.conflist";

/// The conflist a container runtime on this node reads: podnet's bridge plugin with its
/// host-local compatible IPAM over the node's pod CIDRs (the lab's layout: bridge `cni0`, the
/// node the pods' gateway, hairpin for Services that lead a pod back to itself).
pub fn conflist(pod_cidrs: &[ipnet::IpNet]) -> serde_json::Value {
    let ranges: Vec<serde_json::Value> = pod_cidrs.iter().map(|c| serde_json::json!([{"subnet": c.trunc().to_string()}])).collect();
    serde_json::json!({
        "cniVersion": "1.1.0",
        "name": "podnet",
        "plugins": [{
            "type": cni::plugin::BRIDGE_TYPE,
            "bridge": "cni0",
            "isGateway": true,
            "isDefaultGateway": true,
            "hairpinMode": true,
            "ipam": {"type": cni::plugin::IPAM_TYPE, "ranges": ranges}
        }]
    })
}

/// Writes `conflist` into `dir` as [`CONFLIST`] when it differs from what is there, atomically
/// (a temporary file renamed over it: a runtime never reads half of it). True when written.
pub fn write_conflist(dir: &std::path::Path, conflist: &serde_json::Value) -> std::io::Result<bool> {
    let path = dir.join(CONFLIST);
    let text = serde_json::to_string_pretty(conflist).map_err(std::io::Error::other)? + "\n";
    if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{CONFLIST}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)?;
    Ok(true)
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
    /// Where the CNI conflist goes once the node's dataplane is ready (`None`: not written).
    pub cni_conf_dir: Option<PathBuf>,
    /// How this node reaches the other nodes' pods.
    pub backend: Backend,
    /// What the kernel holds: the proxy's rules as the programmer keeps them per Service (so
    /// that a changed Service is planned and written alone; the whole rule set is made from it
    /// only for a full sync's difference), the node as the proxy sees it, and the policy table.
    applied: Option<Applied>,
    elements: usize,
}

/// A full sync's plan: the proxy's, the policy table, the pod network's routes, the node's pod
/// CIDRs (for the conflist).
struct Planned {
    proxy: proxy::plan::NodePlan,
    policy: nftset::Table,
    network: PodNetwork,
    pod_cidrs: Vec<ipnet::IpNet>,
}

/// The routes to the other nodes' pods a full sync makes.
enum PodNetwork {
    /// No `clusterCIDR`: the agent does not own the pod routes.
    None,
    Routes {
        wanted: Vec<(ipnet::IpNet, std::net::IpAddr)>,
        cluster: Vec<ipnet::IpNet>,
    },
    Vxlan {
        ip: std::net::Ipv4Addr,
        cidr: ipnet::Ipv4Net,
        peers: Vec<VxlanPeer>,
        cluster: Vec<ipnet::IpNet>,
    },
}

/// What a node agent applied.
struct Applied {
    programmer: proxy::render::Programmer,
    node: proxy::plan::NodeView,
    policy: nftset::Table,
}

/// host-gw (Flannel's layout): a route to every other Node's pod CIDRs via that Node's
/// InternalIP of the same family, from `spec.podCIDRs` as node IPAM assigned them.
pub fn peer_routes(state: &ClusterState, node: &str) -> Vec<(ipnet::IpNet, std::net::IpAddr)> {
    let mut out = Vec::new();
    for n in state.nodes.iter().filter(|n| n.metadata.name.as_deref() != Some(node)) {
        let ips: Vec<std::net::IpAddr> =
            n.status.iter().flat_map(|s| s.addresses.iter().flatten()).filter(|a| a.type_ == "InternalIP").filter_map(|a| a.address.parse().ok()).collect();
        for cidr in model::cluster::node_pod_cidrs(n) {
            if let Some(via) = ips.iter().find(|ip| ip.is_ipv4() == cidr.addr().is_ipv4()) {
                out.push((cidr.trunc(), *via));
            }
        }
    }
    out.sort();
    out
}

/// How pods on different nodes reach each other (Flannel's backends).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// A route per peer's pod CIDR via the peer's InternalIP (the nodes share a network).
    #[default]
    HostGw,
    /// An overlay: one vxlan device per node (VNI 1, UDP 8472); per peer a route onlink via the
    /// peer's vxlan address (its pod CIDR's network address), a neighbour and an FDB entry.
    Vxlan,
}

/// The vxlan device the agent makes (Flannel's `flannel.1`).
pub const VXLAN_DEVICE: &str = "podnet.1";
/// Flannel's (and Linux's) vxlan port and VNI.
const VXLAN_PORT: u16 = 8472;
const VXLAN_VNI: u32 = 1;
/// What vxlan adds to each packet (outer IPv4, UDP, vxlan and Ethernet headers).
const VXLAN_OVERHEAD: u32 = 50;

/// One vxlan peer: its pod CIDR, its vxlan device's address and MAC, its underlay address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanPeer {
    /// The peer's IPv4 pod CIDR.
    pub pod_cidr: ipnet::Ipv4Net,
    /// Its vxlan device's address: the pod CIDR's network address (Flannel's convention).
    pub vxlan_ip: std::net::Ipv4Addr,
    /// Its vxlan device's MAC.
    pub mac: [u8; 6],
    /// Its InternalIP, where the encapsulated packets go.
    pub node_ip: std::net::Ipv4Addr,
}

/// vxlan to every other Node with an IPv4 pod CIDR and InternalIP (pure).
pub fn vxlan_peers(state: &ClusterState, node: &str) -> Vec<VxlanPeer> {
    peer_routes(state, node)
        .into_iter()
        .filter_map(|(cidr, via)| match (cidr, via) {
            (ipnet::IpNet::V4(pod_cidr), std::net::IpAddr::V4(node_ip)) => {
                Some(VxlanPeer { pod_cidr, vxlan_ip: pod_cidr.network(), mac: dataplane::link::vxlan_mac_for(node_ip), node_ip })
            }
            _ => None,
        })
        .collect()
}

/// This node's vxlan endpoint: its IPv4 InternalIP and IPv4 pod CIDR.
fn own_vxlan(state: &ClusterState, node: &str) -> Option<(std::net::Ipv4Addr, ipnet::Ipv4Net)> {
    let n = state.nodes.iter().find(|n| n.metadata.name.as_deref() == Some(node))?;
    let ip = n.status.iter().flat_map(|s| s.addresses.iter().flatten()).filter(|a| a.type_ == "InternalIP").find_map(|a| a.address.parse().ok())?;
    let cidr = model::cluster::node_pod_cidrs(n).into_iter().find_map(|c| match c {
        ipnet::IpNet::V4(v4) => Some(v4.trunc()),
        ipnet::IpNet::V6(_) => None,
    })?;
    Some((ip, cidr))
}

/// Makes this namespace's vxlan device (if missing) and its peers exactly `peers`: routes into the
/// cluster's pod networks (`cluster`) that no peer has are deleted; each peer's route, neighbour
/// and FDB entry written (the last two replace what is there).
pub fn sync_vxlan(own_ip: std::net::Ipv4Addr, own_cidr: ipnet::Ipv4Net, cluster: &[ipnet::IpNet], peers: &[VxlanPeer]) -> std::io::Result<usize> {
    use std::net::IpAddr;
    let nl = dataplane::link::Netlink::connect()?;
    let vx = match nl.link(VXLAN_DEVICE)? {
        Some(l) => l.index,
        None => {
            let underlay =
                nl.link_with_address(IpAddr::V4(own_ip))?.ok_or_else(|| std::io::Error::other(format!("no interface has this node's InternalIP {own_ip}")))?;
            let spec = dataplane::VxlanSpec {
                name: VXLAN_DEVICE.into(),
                vni: VXLAN_VNI,
                underlay_index: underlay.index,
                local: own_ip,
                port: VXLAN_PORT,
                mtu: underlay.mtu.unwrap_or(1500).saturating_sub(VXLAN_OVERHEAD),
                mac: dataplane::link::vxlan_mac_for(own_ip),
            };
            let vx = nl.add_vxlan(&spec)?;
            nl.add_address(vx, ipnet::IpNet::new(IpAddr::V4(own_cidr.network()), 32).map_err(std::io::Error::other)?)?;
            nl.set_up(vx)?;
            vx
        }
    };
    let ours = |dst: &ipnet::IpNet| cluster.iter().any(|c| c.contains(dst) && c != dst);
    let mut changed = 0;
    for r in nl.routes(false)?.iter().filter(|r| ours(&r.dst) && r.gateway.is_some()) {
        if !peers.iter().any(|p| r.dst == ipnet::IpNet::V4(p.pod_cidr) && r.gateway == Some(IpAddr::V4(p.vxlan_ip))) {
            nl.delete_route(r.dst, r.gateway)?;
            changed += 1;
        }
    }
    for p in peers {
        nl.add_neighbour(vx, IpAddr::V4(p.vxlan_ip), &p.mac)?;
        nl.add_fdb(vx, &p.mac, IpAddr::V4(p.node_ip))?;
        nl.add_onlink_route(ipnet::IpNet::V4(p.pod_cidr), IpAddr::V4(p.vxlan_ip), vx)?;
    }
    Ok(changed)
}

/// Makes the routes to the cluster's pod networks (`cluster`) exactly `wanted`: adds the
/// missing ones, deletes those a Node no longer has. Routes outside `cluster` are not ours.
pub fn sync_routes(cluster: &[ipnet::IpNet], wanted: &[(ipnet::IpNet, std::net::IpAddr)]) -> std::io::Result<usize> {
    let nl = dataplane::link::Netlink::connect()?;
    let mut have = nl.routes(false)?;
    have.extend(nl.routes(true)?);
    let ours = |dst: &ipnet::IpNet| cluster.iter().any(|c| c.contains(dst) && c != dst);
    let mut changed = 0;
    for r in have.iter().filter(|r| ours(&r.dst) && r.gateway.is_some()) {
        if !wanted.iter().any(|(dst, via)| *dst == r.dst && Some(*via) == r.gateway) {
            nl.delete_route(r.dst, r.gateway)?;
            changed += 1;
        }
    }
    for (dst, via) in wanted {
        if !have.iter().any(|r| r.dst == *dst && r.gateway == Some(*via)) {
            nl.add_route(*dst, Some(*via), None)?;
            changed += 1;
        }
    }
    Ok(changed)
}

/// The node's NetworkPolicy table.
fn policy_table(state: &ClusterState, node: &str) -> nftset::Table {
    // An invalid policy is left out and said; the others are enforced.
    let (policies, invalid) = policy::PolicySet::compile_valid(state);
    for e in invalid {
        eprintln!("not enforced: {e}");
    }
    let enforcement = policy::enforce::Enforcement::new(state, &policies);
    enforcement.node_table(node)
}

impl NodeAgent {
    /// An agent that has applied nothing yet.
    pub fn new(node: String, config: ProxyConfig, netns: Option<PathBuf>) -> NodeAgent {
        NodeAgent { node, config, netns, cni_conf_dir: None, backend: Backend::HostGw, applied: None, elements: 0 }
    }

    /// Whether the next sync can be of changed Services alone (a full one came before).
    pub fn can_sync_services(&self) -> bool {
        self.applied.is_some()
    }

    /// What the kernel holds now, as a rule set.
    fn in_kernel(&self) -> Option<Ruleset> {
        let applied = self.applied.as_ref()?;
        let mut rules = applied.programmer.ruleset();
        rules.tables.insert((Family::Inet, policy::enforce::TABLE.to_owned()), applied.policy.clone());
        Some(rules)
    }

    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
        match &self.netns {
            Some(path) => dataplane::netns::run_in(path, f).map_err(|e| e.to_string()),
            None => Ok(f()),
        }
    }

    /// Plans the changed Services alone and writes their elements (O(change), where kube-proxy's
    /// nftables mode re-plans every Service). `lookup` gives a Service (`None`: deleted) and its
    /// EndpointSlices. A Service that needs a new chain makes it a full write of the
    /// programmer's rules; a failure forgets what was applied, so that the next sync is full.
    pub fn sync_services(
        &mut self,
        services: &std::collections::BTreeSet<(String, String)>,
        lookup: impl Fn(&str, &str) -> (Option<Arc<Service>>, Vec<Arc<EndpointSlice>>),
    ) -> Result<Synced, String> {
        let start = Instant::now();
        let Some(applied) = self.applied.as_mut() else { return Err("no full sync yet".into()) };
        let mut script = String::new();
        let mut full = false;
        for (ns, name) in services {
            let (svc, slices) = lookup(ns, name);
            let slices: Vec<&EndpointSlice> = slices.iter().map(AsRef::as_ref).collect();
            let ports = svc.map(|s| proxy::plan::service_plan(&s, &slices, &applied.node)).unwrap_or_default();
            match applied.programmer.update(ns, name, &ports) {
                Update::Elements(s) => script.push_str(&s),
                Update::Full => full = true,
            }
        }
        let written = if full {
            let new = self.in_kernel().ok_or("nothing applied yet")?;
            self.elements = new.element_count();
            self.run(move || dataplane::nft::load(&new).map(|_| ())).and_then(|r| r.map_err(|e| e.to_string()))
        } else {
            self.run(move || dataplane::nft::apply(&script)).and_then(|r| r.map_err(|e| e.to_string()))
        };
        if let Err(e) = written {
            self.applied = None;
            return Err(format!("applying the changed Services: {e}"));
        }
        Ok(Synced { elements: self.elements, full, seconds: start.elapsed().as_secs_f64() })
    }

    /// Plans from `state` and applies what changed.
    pub fn sync(&mut self, state: &ClusterState) -> Result<Synced, String> {
        let start = Instant::now();
        let planned = self.plan(state)?;
        self.apply(planned, start)
    }

    /// [`NodeAgent::sync`], dropping the snapshot once planned: the rules kept per Service are
    /// then made in the memory it leaves, not above it (the heap's top stays releasable).
    pub fn sync_owned(&mut self, state: ClusterState) -> Result<Synced, String> {
        let start = Instant::now();
        let planned = self.plan(&state)?;
        drop(state);
        self.apply(planned, start)
    }

    /// Everything a full sync writes, from the snapshot.
    fn plan(&self, state: &ClusterState) -> Result<Planned, String> {
        let proxy = proxy::plan(state, &self.node, &self.config).map_err(|e| e.to_string())?;
        let policy = policy_table(state, &self.node);
        let cluster = self.config.cluster_cidrs().map_err(|e| e.to_string())?;
        let network = match self.backend {
            _ if cluster.is_empty() => PodNetwork::None,
            Backend::Vxlan => {
                let (ip, cidr) = own_vxlan(state, &self.node).ok_or_else(|| format!("vxlan: node {} has no IPv4 InternalIP and pod CIDR yet", self.node))?;
                PodNetwork::Vxlan { ip, cidr, peers: vxlan_peers(state, &self.node), cluster }
            }
            Backend::HostGw => PodNetwork::Routes { wanted: peer_routes(state, &self.node), cluster },
        };
        let node = state.nodes.iter().find(|n| n.metadata.name.as_deref() == Some(self.node.as_str()));
        let pod_cidrs = node.map(model::cluster::node_pod_cidrs).unwrap_or_default();
        Ok(Planned { proxy, policy, network, pod_cidrs })
    }

    fn apply(&mut self, planned: Planned, start: Instant) -> Result<Synced, String> {
        let Planned { proxy: plan, policy, network, pod_cidrs } = planned;
        let programmer = proxy::render::Programmer::new(&plan);
        let mut new = programmer.ruleset();
        new.tables.insert((Family::Inet, policy::enforce::TABLE.to_owned()), policy);
        let old = self.in_kernel();
        self.applied = None;
        let full = old.is_none();
        // The rule set goes to the applying thread and comes back (no copy of 80,000 elements).
        let apply = move || {
            let r = dataplane::nft::sync(old.as_ref(), &new);
            (r, new)
        };
        let (result, mut new) = self.run(apply)?;
        result.map_err(|e| format!("applying the node's rules: {e}"))?;
        // The pod network: routes (host-gw) or the overlay (vxlan) to the other Nodes' pod CIDRs.
        match network {
            PodNetwork::None => {}
            PodNetwork::Vxlan { ip, cidr, peers, cluster } => {
                self.run(move || sync_vxlan(ip, cidr, &cluster, &peers))?.map_err(|e| format!("vxlan to the other nodes' pods: {e}"))?;
            }
            PodNetwork::Routes { wanted, cluster } => {
                self.run(move || sync_routes(&cluster, &wanted))?.map_err(|e| format!("routes to the other nodes' pods: {e}"))?;
            }
        }
        // The dataplane is ready: pods may be attached, so the runtime gets its conflist.
        if let Some(dir) = &self.cni_conf_dir
            && !pod_cidrs.is_empty()
        {
            write_conflist(dir, &conflist(&pod_cidrs)).map_err(|e| format!("writing {}: {e}", dir.join(CONFLIST).display()))?;
        }
        self.elements = new.element_count();
        let policy = new.tables.remove(&(Family::Inet, policy::enforce::TABLE.to_owned())).unwrap_or_default();
        drop(new);
        self.applied = Some(Applied { programmer, node: plan.node, policy });
        Ok(Synced { elements: self.elements, full, seconds: start.elapsed().as_secs_f64() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_conflist_is_written_once_and_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let list = conflist(&["10.244.1.0/24".parse().unwrap()]);
        assert_eq!(list["plugins"][0]["ipam"]["ranges"][0][0]["subnet"], "10.244.1.0/24");
        assert!(write_conflist(dir.path(), &list).unwrap());
        assert!(!write_conflist(dir.path(), &list).unwrap(), "the same content is not written again");
        let read: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join(CONFLIST)).unwrap()).unwrap();
        assert_eq!(read, list);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    }
}
