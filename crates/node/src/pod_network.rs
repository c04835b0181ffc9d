//! The pod network of a node: the conflist a container runtime reads, and how this node reaches
//! the other nodes' pods (Flannel's host-gw routes or vxlan overlay, from `Node.spec.podCIDRs`
//! and the nodes' InternalIPs). Planning is pure; `sync_*` write the kernel through `dataplane`.

use model::ClusterState;

/// The bridge the pods of a node hang off (the conflist's, and the lab's).
pub const POD_BRIDGE: &str = "cni0";

/// The conflist file the agent writes (libcni reads the first in name order).
pub const CONFLIST: &str = "10-podnet.conflist";

/// The conflist a container runtime on this node reads: podnet's bridge plugin with its
/// host-local compatible IPAM over the node's pod CIDRs (the lab's layout: bridge `cni0`, the
/// node the pods' gateway, hairpin for Services that lead a pod back to itself).
/// `mtu`: the pods' MTU, when an overlay or tunnel takes room from the underlay's.
pub fn conflist(pod_cidrs: &[ipnet::IpNet], mtu: Option<u32>) -> serde_json::Value {
    let ranges: Vec<serde_json::Value> = pod_cidrs.iter().map(|c| serde_json::json!([{"subnet": c.trunc().to_string()}])).collect();
    let mut list = serde_json::json!({
        "cniVersion": "1.1.0",
        "name": "podnet",
        "plugins": [{
            "type": cni::plugin::BRIDGE_TYPE,
            "bridge": POD_BRIDGE,
            "isGateway": true,
            "isDefaultGateway": true,
            "hairpinMode": true,
            "ipam": {"type": cni::plugin::IPAM_TYPE, "ranges": ranges}
        }]
    });
    if let Some(mtu) = mtu {
        list["plugins"][0]["mtu"] = serde_json::json!(mtu);
    }
    list
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

/// host-gw (Flannel's layout): a route to every other Node's pod CIDRs via that Node's
/// InternalIP of the same family, from `spec.podCIDRs` as node IPAM assigned them.
pub fn peer_routes(state: &ClusterState, node: &str) -> Vec<(ipnet::IpNet, std::net::IpAddr)> {
    let mut out = Vec::new();
    for n in state.nodes.iter().filter(|n| n.metadata.name.as_deref() != Some(node)) {
        let ips = model::cluster::node_internal_ips(n);
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
    /// Calico's: BIRD 2 announces this node's pod CIDR (and the LoadBalancer IPs it may serve)
    /// to every other Node over iBGP and installs the routes it learns (see `crate::bgp`).
    Bgp,
}

/// The vxlan device the agent makes (Flannel's `flannel.1`).
pub const VXLAN_DEVICE: &str = "podnet.1";
/// Flannel's (and Linux's) vxlan port and VNI.
const VXLAN_PORT: u16 = 8472;
const VXLAN_VNI: u32 = 1;
/// What vxlan adds to each packet (outer IPv4, UDP, vxlan and Ethernet headers).
pub const VXLAN_OVERHEAD: u32 = 50;

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
    /// Its IPv6 pod CIDR (dual-stack): carried over the same IPv4 tunnel, via its network
    /// address on the peer's device.
    pub pod_cidr6: Option<ipnet::Ipv6Net>,
}

/// The first CIDR of each family of `cidrs`.
pub(crate) fn by_family(cidrs: &[ipnet::IpNet]) -> (Option<ipnet::Ipv4Net>, Option<ipnet::Ipv6Net>) {
    let v4 = cidrs.iter().find_map(|c| if let ipnet::IpNet::V4(v4) = c { Some(v4.trunc()) } else { None });
    let v6 = cidrs.iter().find_map(|c| if let ipnet::IpNet::V6(v6) = c { Some(v6.trunc()) } else { None });
    (v4, v6)
}

/// A Node's first pod CIDR of each family.
fn cidrs_of(n: &k8s_openapi::api::core::v1::Node) -> (Option<ipnet::Ipv4Net>, Option<ipnet::Ipv6Net>) {
    by_family(&model::cluster::node_pod_cidrs(n))
}

/// A Node's first IPv4 InternalIP (where tunnels to it go).
pub(crate) fn internal_ipv4(n: &k8s_openapi::api::core::v1::Node) -> Option<std::net::Ipv4Addr> {
    model::cluster::node_internal_ips(n).into_iter().find_map(|ip| if let std::net::IpAddr::V4(v4) = ip { Some(v4) } else { None })
}

/// vxlan to every other Node with an IPv4 pod CIDR and InternalIP (and its IPv6 pod CIDR, if it
/// has one) (pure).
pub fn vxlan_peers(state: &ClusterState, node: &str) -> Vec<VxlanPeer> {
    let mut out: Vec<VxlanPeer> = state
        .nodes
        .iter()
        .filter(|n| n.metadata.name.as_deref() != Some(node))
        .filter_map(|n| {
            let node_ip = internal_ipv4(n)?;
            let (v4, pod_cidr6) = cidrs_of(n);
            let pod_cidr = v4?;
            Some(VxlanPeer { pod_cidr, vxlan_ip: pod_cidr.network(), mac: dataplane::link::vxlan_mac_for(node_ip), node_ip, pod_cidr6 })
        })
        .collect();
    out.sort_by_key(|p| p.pod_cidr);
    out
}

/// This node's vxlan endpoint: its IPv4 InternalIP and IPv4 pod CIDR (and its IPv6 pod CIDR).
pub(crate) fn own_vxlan(state: &ClusterState, node: &str) -> Option<(std::net::Ipv4Addr, ipnet::Ipv4Net, Option<ipnet::Ipv6Net>)> {
    let n = state.nodes.iter().find(|n| n.metadata.name.as_deref() == Some(node))?;
    let ip = internal_ipv4(n)?;
    let (v4, v6) = cidrs_of(n);
    Some((ip, v4?, v6))
}

/// Makes this namespace's vxlan device (if missing) and its peers exactly `peers`: routes into the
/// cluster's pod networks (`cluster`) that no peer has are deleted; each peer's route, neighbour
/// and FDB entry written (the last two replace what is there).
pub fn sync_vxlan(
    own_ip: std::net::Ipv4Addr,
    own_cidr: ipnet::Ipv4Net,
    own_cidr6: Option<ipnet::Ipv6Net>,
    cluster: &[ipnet::IpNet],
    peers: &[VxlanPeer],
) -> std::io::Result<usize> {
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
    // The IPv6 pod CIDR's network address on the device too (a dual-stack Node may get it later).
    if let Some(cidr6) = own_cidr6 {
        match nl.add_address(vx, ipnet::IpNet::new(IpAddr::V6(cidr6.network()), 128).map_err(std::io::Error::other)?) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
    }
    let ours = |dst: &ipnet::IpNet| cluster.iter().any(|c| c.contains(dst) && c != dst);
    // Each peer's routes: its IPv4 pod CIDR via its device's IPv4 address, its IPv6 one via the
    // IPv6 network address; each next hop a neighbour at the peer's device MAC.
    let wanted: Vec<(ipnet::IpNet, IpAddr, [u8; 6])> = peers
        .iter()
        .flat_map(|p| {
            let v6 = p.pod_cidr6.map(|c| (ipnet::IpNet::V6(c), IpAddr::V6(c.network()), p.mac));
            std::iter::once((ipnet::IpNet::V4(p.pod_cidr), IpAddr::V4(p.vxlan_ip), p.mac)).chain(v6)
        })
        .collect();
    let have = nl.all_routes()?;
    let mut changed = 0;
    for r in have.iter().filter(|r| ours(&r.dst) && r.gateway.is_some()) {
        if !wanted.iter().any(|(dst, via, _)| r.dst == *dst && r.gateway == Some(*via)) {
            nl.delete_route(r.dst, r.gateway)?;
            changed += 1;
        }
    }
    // Neighbour and FDB entries of peers that are gone (a deleted Node): Flannel removes them too.
    for (ip, _) in nl.neighbours(vx, false)? {
        if !wanted.iter().any(|(_, via, _)| *via == ip) {
            nl.delete_neighbour(vx, ip)?;
            changed += 1;
        }
    }
    for (dst, mac) in nl.neighbours(vx, true)? {
        if !peers.iter().any(|p| p.mac == mac && IpAddr::V4(p.node_ip) == dst) {
            nl.delete_fdb(vx, &mac, dst)?;
            changed += 1;
        }
    }
    for p in peers {
        nl.add_fdb(vx, &p.mac, IpAddr::V4(p.node_ip))?;
    }
    for (dst, via, mac) in &wanted {
        nl.add_neighbour(vx, *via, mac)?;
        nl.add_onlink_route(*dst, *via, vx)?;
    }
    Ok(changed)
}

/// Makes the routes to the cluster's pod networks (`cluster`) exactly `wanted`: adds the
/// missing ones, deletes those a Node no longer has. Routes outside `cluster` are not ours.
pub fn sync_routes(cluster: &[ipnet::IpNet], wanted: &[(ipnet::IpNet, std::net::IpAddr)]) -> std::io::Result<usize> {
    let nl = dataplane::link::Netlink::connect()?;
    let have = nl.all_routes()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidrs: &[&str], ip: &str) -> k8s_openapi::api::core::v1::Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"podCIDR": cidrs[0], "podCIDRs": cidrs},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}
        }))
        .unwrap()
    }

    #[test]
    fn vxlan_peers_carry_their_ipv6_pod_cidr_over_the_ipv4_tunnel() {
        let state = ClusterState {
            nodes: vec![
                node("a", &["10.244.0.0/24", "fd00:10:244::/64"], "172.18.0.2"),
                node("b", &["10.244.1.0/24", "fd00:10:244:1::/64"], "172.18.0.3"),
                node("c", &["10.244.2.0/24"], "172.18.0.4"),
            ],
            ..Default::default()
        };
        let peers = vxlan_peers(&state, "a");
        assert_eq!(peers.len(), 2);
        assert_eq!((peers[0].pod_cidr.to_string(), peers[0].pod_cidr6.map(|c| c.to_string())), ("10.244.1.0/24".into(), Some("fd00:10:244:1::/64".into())));
        assert_eq!(peers[0].node_ip.to_string(), "172.18.0.3");
        assert_eq!(peers[1].pod_cidr6, None, "a single-stack peer");
        let own = own_vxlan(&state, "a").unwrap();
        assert_eq!(own.2.map(|c| c.to_string()), Some("fd00:10:244::/64".into()));
    }

    #[test]
    fn the_conflist_is_written_once_and_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let list = conflist(&["10.244.1.0/24".parse().unwrap()], None);
        assert_eq!(conflist(&["10.244.1.0/24".parse().unwrap()], Some(1440))["plugins"][0]["mtu"], 1440);
        assert_eq!(list["plugins"][0]["ipam"]["ranges"][0][0]["subnet"], "10.244.1.0/24");
        assert!(write_conflist(dir.path(), &list).unwrap());
        assert!(!write_conflist(dir.path(), &list).unwrap(), "the same content is not written again");
        let read: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join(CONFLIST)).unwrap()).unwrap();
        assert_eq!(read, list);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    }
}
