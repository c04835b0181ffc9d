//! The desired state of one node's proxy, and a tracer that answers what happens to a first
//! packet (`podnet proxy trace`) from it, without the kernel. The semantics are kube-proxy's
//! nftables backend (`pkg/proxy/nftables/proxier.go`): ClusterIPs, NodePorts on the node's
//! addresses, externalIPs, LoadBalancer IPs with source ranges, traffic policies with the
//! short circuit of in-cluster traffic, REJECT without endpoints, REJECT for an unknown port of a
//! live ClusterIP, DROP for unallocated addresses of a ServiceCIDR, masquerade of off-cluster
//! sources, `masqueradeAll` and hairpin.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use model::{ClusterState, Protocol};
use serde::{Deserialize, Serialize};

use crate::service::{ServicePort, endpoints_for};
use crate::topology::{Endpoint, categorize};

/// The parts of a `KubeProxyConfiguration` (kubeproxy.config.k8s.io/v1alpha1) the proxy uses.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProxyConfig {
    /// `clusterCIDR`: comma-separated pod CIDRs; traffic from elsewhere to a ClusterIP is masqueraded.
    #[serde(default, rename = "clusterCIDR")]
    pub cluster_cidr: String,
    /// `masqueradeAll`
    #[serde(default)]
    pub masquerade_all: bool,
    /// `nodePortAddresses`: CIDRs, or `primary` (the nftables default): where NodePorts listen.
    #[serde(default)]
    pub node_port_addresses: Vec<String>,
    /// `detectLocalMode`: `ClusterCIDR` (default) or `NodeCIDR`.
    #[serde(default)]
    pub detect_local_mode: String,
}

impl ProxyConfig {
    /// The pod CIDRs of `clusterCIDR` (comma-separated).
    pub fn cluster_cidrs(&self) -> Result<Vec<IpNet>, PlanError> {
        self.cluster_cidr
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|c| c.parse::<IpNet>().map_err(|_| PlanError(format!("clusterCIDR: invalid CIDR {c:?}"))))
            .collect()
    }

    /// Reads a `KubeProxyConfiguration` document.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        let v: serde_json::Value = serde_norway::from_str(text).map_err(|e| format!("invalid YAML: {e}"))?;
        if v.get("kind").and_then(|k| k.as_str()) != Some("KubeProxyConfiguration") {
            return Err("expected kind: KubeProxyConfiguration".into());
        }
        serde_json::from_value(v).map_err(|e| e.to_string())
    }
}

/// The node the plan is for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeView {
    /// Its name.
    pub name: String,
    /// Its own addresses (`status.addresses` of type InternalIP/ExternalIP).
    pub ips: Vec<IpAddr>,
    /// The first InternalIP of each family.
    pub primary: Vec<IpAddr>,
    /// `spec.podCIDRs`.
    pub pod_cidrs: Vec<IpNet>,
    /// Its `topology.kubernetes.io/zone` label.
    pub zone: String,
}

/// One service port as this node programs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortPlan {
    /// The port.
    pub port: ServicePort,
    /// Usable endpoints for Cluster policy.
    pub cluster: Vec<Endpoint>,
    /// Usable endpoints for Local policy.
    pub local: Vec<Endpoint>,
    /// Whether any usable endpoint exists in the cluster, for IPv4 and for IPv6.
    pub has_any: [bool; 2],
}

impl PortPlan {
    /// Whether the port has any usable endpoint in `ip`'s family. As kube-proxy runs one
    /// proxier per family, each family is categorized on its own and a family without
    /// endpoints rejects even when the other has some.
    pub fn has_endpoints_for(&self, ip: IpAddr) -> bool {
        self.has_any[usize::from(ip.is_ipv6())]
    }

    /// The endpoints of `ip`'s family in `endpoints` (one of `cluster` / `local`).
    pub fn same_family(endpoints: &[Endpoint], ip: IpAddr) -> impl Iterator<Item = &Endpoint> {
        endpoints.iter().filter(move |e| e.ip_port().is_some_and(|(a, _)| a.is_ipv6() == ip.is_ipv6()))
    }
}

/// A node's desired proxy state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePlan {
    /// The node.
    pub node: NodeView,
    /// Settings.
    pub config: ProxyConfig,
    /// Every service port.
    pub ports: Vec<PortPlan>,
    /// The ServiceCIDRs (addresses in them that no Service owns are dropped).
    pub service_cidrs: Vec<IpNet>,
    /// The cluster's pod CIDRs (from `clusterCIDR`).
    pub cluster_cidrs: Vec<IpNet>,
}

/// A plan that cannot be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanError(pub String);

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PlanError {}

fn node_view(state: &ClusterState, name: &str) -> Result<NodeView, PlanError> {
    let node = state.nodes.iter().find(|n| n.metadata.name.as_deref() == Some(name)).ok_or_else(|| {
        let names: Vec<String> = state.nodes.iter().filter_map(|n| n.metadata.name.clone()).collect();
        PlanError(format!("node {name:?} is not among the manifests' Nodes ({})", if names.is_empty() { "none".into() } else { names.join(", ") }))
    })?;
    let mut view = NodeView { name: name.to_owned(), ..Default::default() };
    for a in node.status.iter().flat_map(|s| s.addresses.iter().flatten()) {
        let Ok(ip) = a.address.parse::<IpAddr>() else {
            continue;
        };
        if a.type_ == "InternalIP" || a.type_ == "ExternalIP" {
            view.ips.push(ip);
        }
        if a.type_ == "InternalIP" && !view.primary.iter().any(|p| p.is_ipv4() == ip.is_ipv4()) {
            view.primary.push(ip);
        }
    }
    view.pod_cidrs = model::cluster::node_pod_cidrs(node);
    view.zone = node.metadata.labels.as_ref().and_then(|l| l.get(model::endpoints::LABEL_ZONE)).cloned().unwrap_or_default();
    Ok(view)
}

/// Plans one node: every service port with its usable endpoints as seen from there.
/// EndpointSlices come from the manifests, and are computed for Services with a selector
/// when the manifests give none for them.
pub fn plan(state: &ClusterState, node: &str, config: &ProxyConfig) -> Result<NodePlan, PlanError> {
    let node = node_view(state, node)?;
    // The given slices by reference (they can be many), and computed ones for Services with a
    // selector that the manifests give none for.
    let computed = model::endpoints::missing(state, |p| p.ready.unwrap_or(true));
    let slices: Vec<&EndpointSlice> = state.endpoint_slices.iter().map(|s| &s.object).chain(&computed).collect();
    let cluster_cidrs = config.cluster_cidrs()?;
    let service_cidrs = state.service_cidrs.iter().filter_map(|c| c.parse().ok()).collect();
    // Slices by Service, so that each port looks only at its own.
    let mut by_service: std::collections::HashMap<(&str, &str), Vec<&EndpointSlice>> = std::collections::HashMap::new();
    for s in slices {
        if let Some(svc) = model::endpoints::service_of(s) {
            by_service.entry(svc).or_default().push(s);
        }
    }
    let ports = state
        .services
        .iter()
        .flat_map(|svc| {
            let own = by_service.get(&(svc.namespace.as_str(), svc.name.as_str())).map(Vec::as_slice).unwrap_or_default();
            service_plan(&svc.object, own, &node)
        })
        .collect();
    Ok(NodePlan { node, config: config.clone(), ports, service_cidrs, cluster_cidrs })
}

/// One Service's ports as `node` programs them, from that Service's EndpointSlices.
pub fn service_plan(svc: &k8s_openapi::api::core::v1::Service, slices: &[&EndpointSlice], node: &NodeView) -> Vec<PortPlan> {
    crate::service::ports_of(svc)
        .into_iter()
        .map(|port| {
            let eps = endpoints_for(&port, slices.iter().copied(), &node.name);
            let mut plan = PortPlan { cluster: Vec::new(), local: Vec::new(), has_any: [false; 2], port };
            for v6 in [false, true] {
                let family: Vec<Endpoint> = eps.iter().filter(|e| e.ip_port().is_some_and(|(ip, _)| ip.is_ipv6() == v6)).cloned().collect();
                let c = categorize(&family, plan.port.policies, &node.name, &node.zone);
                plan.cluster.extend(c.cluster.unwrap_or_default());
                plan.local.extend(c.local.unwrap_or_default());
                plan.has_any[usize::from(v6)] = c.has_any;
            }
            plan
        })
        .collect()
}

/// What happens to a first packet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Trace {
    /// `DNAT`, `DROP`, `REJECT` or `ACCEPT` (not ours: passes untouched).
    pub verdict: &'static str,
    /// Every endpoint the packet may be DNATed to, sorted.
    pub endpoints: Vec<String>,
    /// Whether the packet is source-NATed to the node.
    pub masquerade: bool,
}

fn verdict(v: &'static str) -> Trace {
    Trace { verdict: v, endpoints: Vec::new(), masquerade: false }
}

/// How a packet reaches a service port.
pub(crate) enum Frontend {
    ClusterIp,
    External { load_balancer: bool },
}

impl NodePlan {
    /// Whether `ip` is where this node's NodePorts listen.
    pub(crate) fn node_port_address(&self, ip: IpAddr) -> bool {
        let primary = self.config.node_port_addresses.is_empty() || self.config.node_port_addresses.iter().any(|a| a == "primary");
        if primary && self.node.primary.contains(&ip) {
            return true;
        }
        self.config.node_port_addresses.iter().filter_map(|a| a.parse::<IpNet>().ok()).any(|n| n.contains(&ip) && self.node.ips.contains(&ip))
    }

    /// The CIDRs whose sources are pods ("local" in kube-proxy's detect-local sense) in one
    /// family. None: kube-proxy's no-op detector for that family, which tells nothing apart.
    pub(crate) fn local_cidrs(&self, v6: bool) -> impl Iterator<Item = &IpNet> {
        let cidrs = if self.config.detect_local_mode == "NodeCIDR" { &self.node.pod_cidrs } else { &self.cluster_cidrs };
        cidrs.iter().filter(move |c| c.addr().is_ipv6() == v6)
    }

    /// Traffic from a pod of this cluster.
    fn is_pod_source(&self, src: IpAddr) -> bool {
        self.local_cidrs(src.is_ipv6()).any(|c| c.contains(&src))
    }

    /// The service port, and which of its frontends, that a packet to `dst:dport` reaches.
    pub(crate) fn frontend(&self, dst: IpAddr, dport: u16, protocol: Protocol) -> Option<(&PortPlan, Frontend)> {
        self.ports.iter().find_map(|p| {
            let port = &p.port;
            // A Service is served in the families of its ClusterIPs only.
            if port.protocol != protocol || !port.cluster_ips.iter().any(|ip| ip.is_ipv4() == dst.is_ipv4()) {
                return None;
            }
            if port.port == dport && port.cluster_ips.contains(&dst) {
                return Some((p, Frontend::ClusterIp));
            }
            if port.port == dport && port.external_ips.contains(&dst) {
                return Some((p, Frontend::External { load_balancer: false }));
            }
            if port.port == dport && port.load_balancer_ips.contains(&dst) {
                return Some((p, Frontend::External { load_balancer: true }));
            }
            if port.node_port == Some(dport) && self.node_port_address(dst) {
                return Some((p, Frontend::External { load_balancer: false }));
            }
            None
        })
    }

    /// Evaluates one first packet against the plan.
    pub fn trace(&self, src: IpAddr, dst: IpAddr, dport: u16, protocol: Protocol) -> Trace {
        let Some((p, frontend)) = self.frontend(dst, dport, protocol) else {
            // A live ClusterIP on a port it does not serve: REJECT; an unallocated address of a
            // ServiceCIDR: DROP; anything else is not the proxy's business.
            if self.ports.iter().any(|p| p.port.cluster_ips.contains(&dst)) {
                return verdict("REJECT");
            }
            if self.service_cidrs.iter().any(|c| c.contains(&dst)) {
                return verdict("DROP");
            }
            return verdict("ACCEPT");
        };
        let port = &p.port;
        // kube-proxy's firewall: a load balancer IP with source ranges takes only those sources
        // (and, when a range holds the node's own address, the load balancer IPs themselves, as
        // a node reaching its own VIP comes from it), from outside and from the node alike; it
        // is checked before DNAT, so a client it refuses is dropped even without endpoints.
        if let Frontend::External { load_balancer: true } = frontend
            && let Some(allowed) = port.firewall_sources(&self.node.ips)
            && !allowed.iter().any(|n| n.contains(&src))
        {
            return verdict("DROP");
        }
        if !p.has_endpoints_for(dst) {
            return verdict("REJECT");
        }
        let from_pod = self.is_pod_source(src);
        let from_node = self.node.ips.contains(&src);
        let (endpoints, mut masquerade) = match frontend {
            Frontend::ClusterIp => {
                let eps = if port.policies.internal_local { &p.local } else { &p.cluster };
                // Off-cluster sources are masqueraded so replies come back through this node.
                let off_cluster = self.local_cidrs(dst.is_ipv6()).next().is_some() && !from_pod;
                (eps, self.config.masquerade_all || off_cluster)
            }
            Frontend::External { .. } => {
                if port.policies.external_local {
                    if from_pod {
                        // Pods short-circuit to every endpoint, as if they used the ClusterIP;
                        // masqueradeAll marks traffic to the ClusterIP only, not to this address.
                        (&p.cluster, false)
                    } else if from_node {
                        (&p.cluster, true)
                    } else {
                        // Outside traffic keeps its source and stays on this node.
                        (&p.local, false)
                    }
                } else {
                    (&p.cluster, true)
                }
            }
        };
        let endpoints: Vec<&Endpoint> = PortPlan::same_family(endpoints, dst).collect();
        if endpoints.is_empty() {
            return verdict("DROP");
        }
        // Hairpin: a pod reaching itself through its Service is masqueraded.
        if endpoints.iter().any(|e| e.ip_port().is_some_and(|(ip, _)| ip == src)) {
            masquerade = true;
        }
        let mut list: Vec<String> = endpoints.iter().map(|e| e.addr.clone()).collect();
        list.sort();
        Trace { verdict: "DNAT", endpoints: list, masquerade }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "---\napiVersion: v1\nkind: Node\nmetadata: {name: node-1, labels: {topology.kubernetes.io/zone: a}}\nspec: {podCIDR: 10.244.0.0/24}\nstatus: {addresses: [{type: InternalIP, address: 172.18.0.2}, {type: Hostname, address: node-1}]}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: node-2}\nspec: {podCIDR: 10.244.1.0/24}\nstatus: {addresses: [{type: InternalIP, address: 172.18.0.3}]}\n---\napiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {name: kubernetes}\nspec: {cidrs: [10.96.0.0/16]}\n";

    fn pods() -> String {
        let pod = |name: &str, node: &str, ip: &str, ready: bool| {
            format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, labels: {{app: web}}}}\nspec: {{nodeName: {node}, containers: [{{name: c, ports: [{{name: http, containerPort: 8080}}]}}]}}\nstatus: {{podIP: {ip}, conditions: [{{type: Ready, status: '{}'}}]}}\n",
                if ready { "True" } else { "False" }
            )
        };
        format!("{}{}", pod("a", "node-1", "10.244.0.2", true), pod("b", "node-2", "10.244.1.2", true))
    }

    fn service(extra: &str) -> String {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop}}\nspec:\n  clusterIP: 10.96.0.20\n  selector: {{app: web}}\n  ports: [{{name: http, port: 80, targetPort: http, nodePort: 30080}}]\n{extra}"
        )
    }

    fn plan_for(yaml: &str, node: &str, config: &str) -> NodePlan {
        let s = ClusterState::from_objects(&model::load_str(yaml, std::path::Path::new("t.yaml")).unwrap()).unwrap();
        let cfg = if config.is_empty() { ProxyConfig::default() } else { ProxyConfig::from_yaml(config).unwrap() };
        plan(&s, node, &cfg).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const CFG: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nclusterCIDR: 10.244.0.0/16\n";

    #[test]
    fn cluster_ip_dnats_to_every_ready_endpoint_without_masquerade_for_pods() {
        let p = plan_for(&format!("{NODES}{}{}", pods(), service("")), "node-1", CFG);
        let t = p.trace(ip("10.244.0.9"), ip("10.96.0.20"), 80, Protocol::Tcp);
        assert_eq!((t.verdict, t.masquerade), ("DNAT", false));
        assert_eq!(t.endpoints, ["10.244.0.2:8080", "10.244.1.2:8080"]);
        // From off the cluster: masqueraded.
        assert!(p.trace(ip("192.0.2.1"), ip("10.96.0.20"), 80, Protocol::Tcp).masquerade);
        // masqueradeAll: always.
        let all = plan_for(&format!("{NODES}{}{}", pods(), service("")), "node-1", &format!("{CFG}masqueradeAll: true\n"));
        assert!(all.trace(ip("10.244.0.9"), ip("10.96.0.20"), 80, Protocol::Tcp).masquerade);
    }

    #[test]
    fn unknown_ports_unallocated_addresses_and_other_traffic() {
        let p = plan_for(&format!("{NODES}{}{}", pods(), service("")), "node-1", CFG);
        assert_eq!(p.trace(ip("10.244.0.9"), ip("10.96.0.20"), 81, Protocol::Tcp).verdict, "REJECT");
        assert_eq!(p.trace(ip("10.244.0.9"), ip("10.96.0.20"), 80, Protocol::Udp).verdict, "REJECT");
        assert_eq!(p.trace(ip("10.244.0.9"), ip("10.96.5.5"), 80, Protocol::Tcp).verdict, "DROP");
        assert_eq!(p.trace(ip("10.244.0.9"), ip("10.244.1.2"), 8080, Protocol::Tcp).verdict, "ACCEPT");
    }

    #[test]
    fn each_family_has_its_own_endpoints_rejection_and_local_detection() {
        // A dual-stack Service whose pods have IPv4 addresses only, and a clusterCIDR for IPv4 only.
        let dual = service("  clusterIPs: [10.96.0.20, 'fd00:10:96::20']\n  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv4, IPv6]\n");
        let p = plan_for(&format!("{NODES}{}{dual}", pods()), "node-1", CFG);
        let t = p.trace(ip("10.244.0.9"), ip("10.96.0.20"), 80, Protocol::Tcp);
        assert_eq!((t.verdict, t.endpoints.len()), ("DNAT", 2));
        // IPv6 has no endpoint: REJECT there, as kube-proxy's IPv6 proxier would.
        assert_eq!(p.trace(ip("fd00::9"), ip("fd00:10:96::20"), 80, Protocol::Tcp).verdict, "REJECT");

        // With an IPv6 endpoint, each ClusterIP DNATs to its own family only.
        let v6_pod = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: c, namespace: shop, labels: {app: web}}\nspec: {nodeName: node-2, containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}\nstatus: {podIPs: [{ip: 10.244.1.3}, {ip: 'fd00:10:244::2'}]}\n";
        let p = plan_for(&format!("{NODES}{}{dual}{v6_pod}", pods()), "node-1", CFG);
        let t = p.trace(ip("fd00::9"), ip("fd00:10:96::20"), 80, Protocol::Tcp);
        assert_eq!(t.endpoints, ["[fd00:10:244::2]:8080"]);
        // No IPv6 clusterCIDR: kube-proxy's no-op local detector masquerades nothing in IPv6,
        // while IPv4 off-cluster sources still are.
        assert!(!t.masquerade);
        let t4 = p.trace(ip("192.0.2.1"), ip("10.96.0.20"), 80, Protocol::Tcp);
        assert_eq!((t4.endpoints.len(), t4.masquerade), (3, true));
        let both = plan_for(&format!("{NODES}{}{dual}{v6_pod}", pods()), "node-1", &CFG.replace("10.244.0.0/16", "10.244.0.0/16,fd00:10:244::/56"));
        assert!(both.trace(ip("2001:db8::1"), ip("fd00:10:96::20"), 80, Protocol::Tcp).masquerade);
        assert!(!both.trace(ip("fd00:10:244::9"), ip("fd00:10:96::20"), 80, Protocol::Tcp).masquerade);
    }

    #[test]
    fn no_endpoints_is_reject() {
        let p = plan_for(&format!("{NODES}{}", service("")), "node-1", CFG);
        let t = p.trace(ip("10.244.0.9"), ip("10.96.0.20"), 80, Protocol::Tcp);
        assert_eq!((t.verdict, t.endpoints.len()), ("REJECT", 0));
        assert_eq!(p.trace(ip("192.0.2.1"), ip("172.18.0.2"), 30080, Protocol::Tcp).verdict, "REJECT");
    }

    #[test]
    fn node_ports_listen_on_the_primary_address_and_masquerade_with_cluster_policy() {
        let p = plan_for(&format!("{NODES}{}{}", pods(), service("  type: NodePort\n")), "node-1", CFG);
        let t = p.trace(ip("192.0.2.1"), ip("172.18.0.2"), 30080, Protocol::Tcp);
        assert_eq!((t.verdict, t.masquerade, t.endpoints.len()), ("DNAT", true, 2));
        // Another node's address is not this node's NodePort.
        assert_eq!(p.trace(ip("192.0.2.1"), ip("172.18.0.3"), 30080, Protocol::Tcp).verdict, "ACCEPT");
    }

    #[test]
    fn external_traffic_policy_local_keeps_the_source_and_stays_on_the_node() {
        let yaml = format!("{NODES}{}{}", pods(), service("  type: NodePort\n  externalTrafficPolicy: Local\n"));
        let n1 = plan_for(&yaml, "node-1", CFG);
        let t = n1.trace(ip("192.0.2.1"), ip("172.18.0.2"), 30080, Protocol::Tcp);
        assert_eq!((t.verdict, t.masquerade), ("DNAT", false));
        assert_eq!(t.endpoints, ["10.244.0.2:8080"], "only the local endpoint");
        // Pods short-circuit to all endpoints.
        assert_eq!(n1.trace(ip("10.244.1.9"), ip("172.18.0.2"), 30080, Protocol::Tcp).endpoints.len(), 2);
        // A node without a local endpoint drops outside traffic.
        let without_local = format!("{NODES}{}", pods().replace("nodeName: node-2", "nodeName: node-1"));
        let n2 = plan_for(&format!("{without_local}{}", service("  type: NodePort\n  externalTrafficPolicy: Local\n")), "node-2", CFG);
        assert_eq!(n2.trace(ip("192.0.2.1"), ip("172.18.0.3"), 30080, Protocol::Tcp).verdict, "DROP");
    }

    #[test]
    fn internal_traffic_policy_local_uses_local_endpoints_or_drops() {
        let yaml = format!("{NODES}{}{}", pods(), service("  internalTrafficPolicy: Local\n"));
        assert_eq!(plan_for(&yaml, "node-1", CFG).trace(ip("10.244.0.9"), ip("10.96.0.20"), 80, Protocol::Tcp).endpoints, ["10.244.0.2:8080"]);
        let yaml = format!("{NODES}{}{}", pods().replace("nodeName: node-2", "nodeName: node-1"), service("  internalTrafficPolicy: Local\n"));
        assert_eq!(plan_for(&yaml, "node-2", CFG).trace(ip("10.244.1.9"), ip("10.96.0.20"), 80, Protocol::Tcp).verdict, "DROP");
    }

    #[test]
    fn load_balancer_source_ranges_and_external_ips() {
        let lb = "  type: LoadBalancer\n  externalIPs: [198.51.100.7]\n  loadBalancerSourceRanges: [203.0.113.0/24]\nstatus: {loadBalancer: {ingress: [{ip: 198.51.100.1}]}}\n";
        let p = plan_for(&format!("{NODES}{}{}", pods(), service(lb)), "node-1", CFG);
        assert_eq!(p.trace(ip("203.0.113.5"), ip("198.51.100.1"), 80, Protocol::Tcp).verdict, "DNAT");
        assert_eq!(p.trace(ip("192.0.2.1"), ip("198.51.100.1"), 80, Protocol::Tcp).verdict, "DROP");
        let t = p.trace(ip("192.0.2.1"), ip("198.51.100.7"), 80, Protocol::Tcp);
        assert_eq!((t.verdict, t.masquerade), ("DNAT", true), "externalIPs are not subject to source ranges");
    }

    /// kube-proxy's firewall (nftables proxier): several ranges and several load balancer IPs;
    /// the node itself only when a range holds its address, and then the load balancer IPs as
    /// sources too (a node reaching its own VIP); checked before the no-endpoints REJECT.
    #[test]
    fn load_balancer_source_ranges_as_kube_proxy_applies_them() {
        let lb = |ranges: &str| {
            format!(
                "  type: LoadBalancer\n  loadBalancerSourceRanges: [{ranges}]\nstatus: {{loadBalancer: {{ingress: [{{ip: 198.51.100.1}}, {{ip: 198.51.100.2}}]}}}}\n"
            )
        };
        let p = plan_for(&format!("{NODES}{}{}", pods(), service(&lb("203.0.113.0/25, 192.0.2.0/24"))), "node-1", CFG);
        for (src, dst, want) in [
            ("203.0.113.5", "198.51.100.1", "DNAT"),
            ("203.0.113.5", "198.51.100.2", "DNAT"),
            ("192.0.2.77", "198.51.100.2", "DNAT"),
            ("203.0.113.200", "198.51.100.1", "DROP"),
            ("172.18.0.2", "198.51.100.1", "DROP"),
            ("198.51.100.1", "198.51.100.1", "DROP"),
            ("10.244.0.9", "198.51.100.1", "DROP"),
        ] {
            assert_eq!(p.trace(ip(src), ip(dst), 80, Protocol::Tcp).verdict, want, "{src} -> {dst}");
        }
        // A range with the node's address: the node, and the VIPs as sources, are allowed.
        let p = plan_for(&format!("{NODES}{}{}", pods(), service(&lb("203.0.113.0/25, 172.18.0.0/24"))), "node-1", CFG);
        for (src, want) in [("172.18.0.2", "DNAT"), ("198.51.100.1", "DNAT"), ("198.51.100.2", "DNAT"), ("192.0.2.77", "DROP")] {
            assert_eq!(p.trace(ip(src), ip("198.51.100.1"), 80, Protocol::Tcp).verdict, want, "{src}");
        }
        // Without endpoints: a refused client is dropped, an allowed one rejected.
        let p = plan_for(&format!("{NODES}{}", service(&lb("203.0.113.0/25"))), "node-1", CFG);
        assert_eq!(p.trace(ip("192.0.2.1"), ip("198.51.100.1"), 80, Protocol::Tcp).verdict, "DROP");
        assert_eq!(p.trace(ip("203.0.113.1"), ip("198.51.100.1"), 80, Protocol::Tcp).verdict, "REJECT");
    }

    /// masqueradeAll marks traffic to ClusterIPs; a pod reaching an `externalTrafficPolicy:
    /// Local` load balancer IP short-circuits to every endpoint without masquerade.
    #[test]
    fn masquerade_all_with_external_local_from_a_pod() {
        let lb = "  type: LoadBalancer\n  externalTrafficPolicy: Local\nstatus: {loadBalancer: {ingress: [{ip: 198.51.100.1}]}}\n";
        let cfg = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nclusterCIDR: 10.244.0.0/16\nmasqueradeAll: true\n";
        let p = plan_for(&format!("{NODES}{}{}", pods(), service(lb)), "node-1", cfg);
        let t = p.trace(ip("10.244.0.9"), ip("198.51.100.1"), 80, Protocol::Tcp);
        assert_eq!((t.verdict, t.masquerade), ("DNAT", false));
        assert!(p.trace(ip("10.244.0.9"), ip("10.96.0.20"), 80, Protocol::Tcp).masquerade, "the ClusterIP is masqueraded");
    }

    /// kube-proxy's EndpointSlice cache: an address in two slices of a Service (a pod moving
    /// between them) counts once, as the running endpoint when one slice has it ready and the
    /// other terminating, whichever slice comes first; only an endpoint's first address is used.
    #[test]
    fn an_address_in_two_slices_counts_once_as_the_running_endpoint() {
        let svc =
            "---\napiVersion: v1\nkind: Service\nmetadata: {name: moved, namespace: shop}\nspec: {clusterIP: 10.96.0.21, ports: [{name: http, port: 80}]}\n";
        let slice = |name: &str, conditions: &str, addresses: &str| {
            format!(
                "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}, namespace: shop, labels: {{kubernetes.io/service-name: moved}}}}\naddressType: IPv4\nendpoints: [{{addresses: [{addresses}], conditions: {conditions}}}]\nports: [{{name: http, port: 8080}}]\n"
            )
        };
        let terminating = "{ready: false, serving: true, terminating: true}";
        let ready = "{ready: true, serving: true, terminating: false}";
        for (a, b) in [(terminating, ready), (ready, terminating)] {
            let yaml = format!("{NODES}{svc}{}{}", slice("moved-a", a, "10.244.1.9"), slice("moved-b", b, "10.244.1.9"));
            let p = plan_for(&yaml, "node-1", CFG);
            let port = p.ports.iter().find(|p| p.port.service == "moved").unwrap();
            assert_eq!(port.cluster.len(), 1, "{:?}", port.cluster);
            assert!(port.cluster[0].ready && !port.cluster[0].terminating, "{:?}", port.cluster[0]);
        }
        let p = plan_for(&format!("{NODES}{svc}{}", slice("moved-a", ready, "10.244.1.9, 10.244.1.10")), "node-1", CFG);
        assert_eq!(p.trace(ip("10.244.0.9"), ip("10.96.0.21"), 80, Protocol::Tcp).endpoints, ["10.244.1.9:8080"], "the first address only");
    }

    #[test]
    fn hairpin_is_masqueraded() {
        let p = plan_for(&format!("{NODES}{}{}", pods(), service("")), "node-1", CFG);
        assert!(p.trace(ip("10.244.0.2"), ip("10.96.0.20"), 80, Protocol::Tcp).masquerade);
    }

    #[test]
    fn terminating_endpoints_serve_when_nothing_else_does() {
        let terminating = pods()
            .replace("status: 'True'", "status: 'False'")
            .replace("metadata: {name: a,", "metadata: {deletionTimestamp: '2026-01-01T00:00:00Z', name: a,")
            .replacen("status: 'False'", "status: 'True'", 1);
        let p = plan_for(&format!("{NODES}{terminating}{}", service("")), "node-1", CFG);
        let t = p.trace(ip("10.244.0.9"), ip("10.96.0.20"), 80, Protocol::Tcp);
        assert_eq!(t.endpoints, ["10.244.0.2:8080"], "the serving-terminating one");
    }

    #[test]
    fn the_configuration_reads_kube_proxys_field_names() {
        let c = ProxyConfig::from_yaml("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nclusterCIDR: 10.244.0.0/16\nmasqueradeAll: true\nnodePortAddresses: [primary]\ndetectLocalMode: NodeCIDR\nmode: nftables\n").unwrap();
        assert_eq!(c.cluster_cidr, "10.244.0.0/16");
        assert!(c.masquerade_all);
        assert_eq!(c.node_port_addresses, ["primary"]);
        assert_eq!(c.detect_local_mode, "NodeCIDR");
        assert!(ProxyConfig::from_yaml("kind: Pod\n").is_err());
    }

    #[test]
    fn unknown_nodes_are_an_error() {
        let s = ClusterState::from_objects(&model::load_str(NODES, std::path::Path::new("t.yaml")).unwrap()).unwrap();
        assert!(plan(&s, "node-9", &ProxyConfig::default()).unwrap_err().0.contains("node-1, node-2"));
    }
}
