//! Which endpoints a node's proxy sends a service port's traffic to: kube-proxy's
//! `CategorizeEndpoints` (`pkg/proxy/topology.go`), with its serving-terminating fallback
//! computed separately for the Cluster and Local sets, and topology hints all or nothing.

use std::collections::BTreeSet;

/// One endpoint of a service port, as the proxy sees it on one node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// `ip:port`
    pub addr: String,
    /// On this node.
    pub local: bool,
    /// The EndpointSlice's `ready`.
    pub ready: bool,
    /// `serving`.
    pub serving: bool,
    /// `terminating`.
    pub terminating: bool,
    /// `hints.forZones`.
    pub zone_hints: BTreeSet<String>,
    /// `hints.forNodes`.
    pub node_hints: BTreeSet<String>,
}

impl Endpoint {
    /// Its address and port (`addr` is `ip:port`, or `[ip]:port` for IPv6).
    pub fn ip_port(&self) -> Option<(std::net::IpAddr, u16)> {
        let (ip, port) = self.addr.rsplit_once(':')?;
        Some((ip.trim_matches(['[', ']']).parse().ok()?, port.parse().ok()?))
    }
}

/// The traffic policies of a service port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policies {
    /// `internalTrafficPolicy: Local`
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local`
    pub external_local: bool,
    /// Reachable from outside: a NodePort, LoadBalancer ingress IPs or externalIPs.
    pub externally_accessible: bool,
}

impl Policies {
    /// Whether the port ever sends traffic to cluster-wide endpoints (also to implement the
    /// short circuit of external Local traffic from inside the cluster).
    pub fn uses_cluster_endpoints(&self) -> bool {
        !self.internal_local || self.externally_accessible
    }

    /// Whether the port ever sends traffic to this node's endpoints only.
    pub fn uses_local_endpoints(&self) -> bool {
        self.internal_local || (self.external_local && self.externally_accessible)
    }
}

/// The result of categorizing a port's endpoints on one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Categorized {
    /// Usable endpoints for Cluster policy (`None` when the port never uses them).
    pub cluster: Option<Vec<Endpoint>>,
    /// Usable endpoints for Local policy (`None` when the port never uses them).
    pub local: Option<Vec<Endpoint>>,
    /// The union: every endpoint this node may send to.
    pub all_reachable: Vec<Endpoint>,
    /// Whether any usable endpoint exists anywhere in the cluster.
    pub has_any: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TopologyMode {
    None,
    SameZone,
    SameNode,
}

/// `topologyModeFromHints`: same-node if every ready endpoint has a node hint and one is for
/// this node; else same-zone if every ready endpoint has a zone hint and one is for this zone.
fn topology_mode(endpoints: &[Endpoint], node: &str, zone: &str) -> TopologyMode {
    let ready: Vec<&Endpoint> = endpoints.iter().filter(|e| e.ready).collect();
    if ready.is_empty() {
        return TopologyMode::None;
    }
    if ready.iter().all(|e| !e.node_hints.is_empty()) && ready.iter().any(|e| e.node_hints.contains(node)) {
        return TopologyMode::SameNode;
    }
    if ready.iter().all(|e| !e.zone_hints.is_empty()) && ready.iter().any(|e| e.zone_hints.contains(zone)) {
        return TopologyMode::SameZone;
    }
    TopologyMode::None
}

fn available(e: &Endpoint, mode: TopologyMode, node: &str, zone: &str) -> bool {
    match mode {
        TopologyMode::None => true,
        TopologyMode::SameNode => e.node_hints.contains(node),
        TopologyMode::SameZone => e.zone_hints.contains(zone),
    }
}

/// `CategorizeEndpoints` for a node named `node` in zone `zone` (empty when unlabelled).
pub fn categorize(endpoints: &[Endpoint], policies: Policies, node: &str, zone: &str) -> Categorized {
    let mut out = Categorized::default();
    if endpoints.is_empty() {
        return out;
    }
    let mut mode = TopologyMode::None;
    if policies.uses_cluster_endpoints() {
        mode = topology_mode(endpoints, node, zone);
        let mut cluster: Vec<Endpoint> = endpoints.iter().filter(|e| e.ready && available(e, mode, node, zone)).cloned().collect();
        if cluster.is_empty() {
            // No ready endpoint anywhere (topology already fell back): serving-terminating ones.
            cluster = endpoints.iter().filter(|e| e.serving && e.terminating).cloned().collect();
        }
        out.has_any = !cluster.is_empty();
        out.cluster = Some(cluster);
    }
    if !policies.uses_local_endpoints() {
        out.all_reachable = out.cluster.clone().unwrap_or_default();
        return out;
    }
    let (mut local_ready, mut local_terminating) = (false, false);
    for e in endpoints {
        if e.ready {
            out.has_any = true;
            local_ready |= e.local;
        } else if e.serving && e.terminating {
            out.has_any = true;
            local_terminating |= e.local;
        }
    }
    let mut use_terminating = false;
    let local: Vec<Endpoint> = if local_ready {
        endpoints.iter().filter(|e| e.local && e.ready).cloned().collect()
    } else if local_terminating {
        use_terminating = true;
        endpoints.iter().filter(|e| e.local && e.serving && e.terminating).cloned().collect()
    } else {
        Vec::new()
    };
    out.local = Some(local.clone());
    let Some(cluster) = out.cluster.clone() else {
        out.all_reachable = local;
        return out;
    };
    if mode == TopologyMode::None && !use_terminating {
        // Every ready endpoint is in the Cluster set, so it contains the Local one.
        out.all_reachable = cluster;
        return out;
    }
    let mut all: Vec<Endpoint> = cluster.into_iter().chain(local).collect();
    all.sort();
    all.dedup_by(|a, b| a.addr == b.addr);
    out.all_reachable = all;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(addr: &str, local: bool, ready: bool, serving: bool, terminating: bool) -> Endpoint {
        Endpoint { addr: addr.into(), local, ready, serving, terminating, zone_hints: BTreeSet::new(), node_hints: BTreeSet::new() }
    }

    fn zoned(mut e: Endpoint, zone: &str) -> Endpoint {
        e.zone_hints.insert(zone.into());
        e
    }

    fn addrs(v: &Option<Vec<Endpoint>>) -> Vec<&str> {
        v.as_ref().map(|v| v.iter().map(|e| e.addr.as_str()).collect()).unwrap_or_default()
    }

    const CLUSTER: Policies = Policies { internal_local: false, external_local: false, externally_accessible: false };

    #[test]
    fn cluster_policy_uses_every_ready_endpoint() {
        let eps = [ep("10.0.0.1:80", true, true, true, false), ep("10.0.1.1:80", false, true, true, false), ep("10.0.1.2:80", false, false, false, false)];
        let c = categorize(&eps, CLUSTER, "node-1", "");
        assert_eq!(addrs(&c.cluster), ["10.0.0.1:80", "10.0.1.1:80"]);
        assert_eq!(c.local, None, "Cluster policy never uses the Local set");
        assert!(c.has_any);
    }

    #[test]
    fn no_ready_endpoint_falls_back_to_serving_terminating_ones() {
        let eps = [ep("10.0.0.1:80", false, false, true, true), ep("10.0.0.2:80", false, false, false, true), ep("10.0.0.3:80", false, false, false, false)];
        let c = categorize(&eps, CLUSTER, "node-1", "");
        assert_eq!(addrs(&c.cluster), ["10.0.0.1:80"]);
        assert!(c.has_any);
        let none = categorize(&[ep("10.0.0.3:80", false, false, false, false)], CLUSTER, "node-1", "");
        assert!(!none.has_any && none.all_reachable.is_empty());
    }

    #[test]
    fn internal_local_uses_this_nodes_endpoints_only() {
        let p = Policies { internal_local: true, ..CLUSTER };
        let eps = [ep("10.0.0.1:80", true, true, true, false), ep("10.0.1.1:80", false, true, true, false)];
        let c = categorize(&eps, p, "node-1", "");
        assert_eq!(c.cluster, None);
        assert_eq!(addrs(&c.local), ["10.0.0.1:80"]);
        assert_eq!(c.all_reachable.len(), 1);
        // No local endpoint: nothing reachable from here, but the service has endpoints.
        let remote_only = categorize(&eps[1..], p, "node-1", "");
        assert!(remote_only.all_reachable.is_empty() && remote_only.has_any);
    }

    #[test]
    fn fallback_is_decided_separately_for_cluster_and_local() {
        // A remote ready endpoint and a local terminating one: Cluster uses the ready one,
        // Local falls back to the terminating one.
        let p = Policies { internal_local: false, external_local: true, externally_accessible: true };
        let eps = [ep("10.0.1.1:80", false, true, true, false), ep("10.0.0.1:80", true, false, true, true)];
        let c = categorize(&eps, p, "node-1", "");
        assert_eq!(addrs(&c.cluster), ["10.0.1.1:80"]);
        assert_eq!(addrs(&c.local), ["10.0.0.1:80"]);
        let all: Vec<&str> = c.all_reachable.iter().map(|e| e.addr.as_str()).collect();
        assert_eq!(all, ["10.0.0.1:80", "10.0.1.1:80"]);
    }

    #[test]
    fn external_local_without_external_access_is_plain_cluster() {
        let p = Policies { internal_local: false, external_local: true, externally_accessible: false };
        assert!(!p.uses_local_endpoints() && p.uses_cluster_endpoints());
    }

    #[test]
    fn zone_hints_are_used_only_when_every_ready_endpoint_has_one_and_one_matches() {
        let eps = [zoned(ep("10.0.0.1:80", false, true, true, false), "a"), zoned(ep("10.0.1.1:80", false, true, true, false), "b")];
        assert_eq!(addrs(&categorize(&eps, CLUSTER, "node-1", "a").cluster), ["10.0.0.1:80"]);
        // A zone no endpoint is hinted for: hints ignored.
        assert_eq!(categorize(&eps, CLUSTER, "node-1", "c").cluster.unwrap().len(), 2);
        // One ready endpoint without hints: all or nothing.
        let partial = [eps[0].clone(), ep("10.0.2.1:80", false, true, true, false)];
        assert_eq!(categorize(&partial, CLUSTER, "node-1", "a").cluster.unwrap().len(), 2);
    }

    #[test]
    fn node_hints_win_over_zone_hints() {
        let mut a = zoned(ep("10.0.0.1:80", true, true, true, false), "a");
        a.node_hints.insert("node-1".into());
        let mut b = zoned(ep("10.0.0.2:80", false, true, true, false), "a");
        b.node_hints.insert("node-2".into());
        assert_eq!(addrs(&categorize(&[a, b], CLUSTER, "node-1", "a").cluster), ["10.0.0.1:80"]);
    }
}
