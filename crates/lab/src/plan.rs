//! `LabPlan`: which namespaces, nodes, addresses and pods a lab has. Pure: computed from the
//! manifests' snapshot and the lab's settings, no I/O.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use model::{ClusterState, ContainerPort, Labels, PodInfo, Replicas};
use serde::{Deserialize, Serialize};

use crate::name::LabName;

/// How nodes route each other's pod CIDRs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// A route per peer node's pod CIDR via the peer's underlay address.
    HostGw,
    /// Flannel-like: one vxlan device per node; per peer a route, a neighbour and an FDB entry.
    Vxlan,
    /// Calico-like: every node runs BIRD 2 and announces its pod CIDR over iBGP; the routes
    /// between nodes are the ones BGP learned.
    Bgp,
}

impl Mode {
    /// Its name, as `--mode` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::HostGw => "host-gw",
            Mode::Vxlan => "vxlan",
            Mode::Bgp => "bgp",
        }
    }

    /// The pods' MTU: the underlay's, minus vxlan's 50 bytes of encapsulation.
    pub fn pod_mtu(self) -> u32 {
        match self {
            Mode::HostGw | Mode::Bgp => 1500,
            Mode::Vxlan => 1450,
        }
    }
}

/// The lab's settings (the conventions of `DESIGN.md`; flags override them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabConfig {
    /// The lab's name: every namespace it makes starts with `podnet.<name>.`.
    pub name: LabName,
    /// Number of nodes.
    pub nodes: usize,
    /// Routing between nodes.
    pub mode: Mode,
    /// The cluster's pod CIDR; node `n` gets the `n`-th /24 of it.
    pub pod_cidr: Ipv4Net,
    /// The underlay network; node `n` gets `.n+2`.
    pub underlay: Ipv4Net,
    /// A real control plane (`lab up --control-plane`): the API server is the lab's source.
    #[serde(default)]
    pub control_plane: Option<ControlPlaneConfig>,
    /// BGP's settings (`--mode bgp`).
    #[serde(default)]
    pub bgp: Option<BgpConfig>,
    /// Node-to-node encryption (`--encrypt wireguard`).
    #[serde(default)]
    pub encrypt: Option<Encryption>,
    /// The pods' address families (`--ip-family`).
    #[serde(default)]
    pub ip_family: IpFamily,
    /// The cluster's IPv6 pod CIDR; node `n` gets the `n`-th /64 of it.
    #[serde(default = "default_pod_cidr6")]
    pub pod_cidr6: Ipv6Net,
    /// The IPv6 Service CIDR (ClusterIPs of IPv6 Services).
    #[serde(default = "default_service_cidr6")]
    pub service_cidr6: Ipv6Net,
    /// The underlay's IPv6 network (when pods have IPv6): node `n` gets `::n+2`, the external
    /// host `::1`. The underlay keeps its IPv4 addresses: tunnels between nodes run over IPv4.
    #[serde(default = "default_underlay6")]
    pub underlay6: Ipv6Net,
}

/// Which address families pods (and Services) have, as kind's `ipFamily`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IpFamily {
    /// IPv4 only.
    #[default]
    Ipv4,
    /// IPv6 only.
    Ipv6,
    /// Both, IPv4 primary (kind's and kubeadm's dual-stack default).
    Dual,
}

impl IpFamily {
    /// Its name, as `--ip-family` takes it.
    pub fn name(self) -> &'static str {
        match self {
            IpFamily::Ipv4 => "ipv4",
            IpFamily::Ipv6 => "ipv6",
            IpFamily::Dual => "dual",
        }
    }

    /// Whether pods get an IPv4 address.
    pub fn has_v4(self) -> bool {
        self != IpFamily::Ipv6
    }

    /// Whether pods get an IPv6 address.
    pub fn has_v6(self) -> bool {
        self != IpFamily::Ipv4
    }

    /// The families pods have, IPv4 first, each as whether it is IPv6.
    pub fn families(self) -> Vec<bool> {
        [(self.has_v4(), false), (self.has_v6(), true)].into_iter().filter(|f| f.0).map(|f| f.1).collect()
    }
}

/// `fd00:10:244::/56`: a /64 per node (kind's IPv6 pod subnet, cut per node).
pub fn default_pod_cidr6() -> Ipv6Net {
    Ipv6Net::new(Ipv6Addr::new(0xfd00, 0x10, 0x244, 0, 0, 0, 0, 0), 56).unwrap_or_default()
}

/// `fd00:10:96::/112`, kind's IPv6 service subnet.
pub fn default_service_cidr6() -> Ipv6Net {
    Ipv6Net::new(Ipv6Addr::new(0xfd00, 0x10, 0x96, 0, 0, 0, 0, 0), 112).unwrap_or_default()
}

/// `fd00:172:18::/64`, the underlay's IPv6 twin of 172.18.0.0/24.
pub fn default_underlay6() -> Ipv6Net {
    Ipv6Net::new(Ipv6Addr::new(0xfd00, 0x172, 0x18, 0, 0, 0, 0, 0), 64).unwrap_or_default()
}

/// How traffic between nodes' pods is encrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encryption {
    /// WireGuard (userspace, over a TUN device per node; UDP 51820 on the underlay).
    WireGuard,
}

/// The pods' MTU when encrypted: the underlay's 1500 minus WireGuard's 60 bytes over IPv4.
pub const ENCRYPTED_POD_MTU: u32 = 1500 - node::wireguard::OVERHEAD;

/// How a `--mode bgp` lab peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpConfig {
    /// The cluster's AS number (`--bgp-as`).
    pub asn: u32,
    /// How many nodes (the first ones) reflect routes; 0: a full iBGP mesh.
    pub route_reflectors: usize,
    /// Whether the external host peers (eBGP, AS [`EXTERNAL_ASN`]): it then learns every pod
    /// CIDR and the LoadBalancer/external IPs, instead of the lab's static routes.
    pub external: bool,
}

/// The external host's AS number when it peers over BGP (the top-of-rack router's).
pub const EXTERNAL_ASN: u32 = 64513;

impl Default for BgpConfig {
    /// Calico's default AS, a full mesh, no external peer.
    fn default() -> Self {
        BgpConfig { asn: 64512, route_reflectors: 0, external: false }
    }
}

/// Where a control-plane lab's Kubernetes binaries are, and where its API server answers on
/// this host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlPlaneConfig {
    /// The directory with etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl.
    pub kube_bin: std::path::PathBuf,
    /// The port on this host's loopback that forwards to the API server (kind's port mapping).
    pub api_port: u16,
}

impl LabConfig {
    /// The defaults: 10.244.0.0/16 for pods, 172.18.0.0/24 for nodes.
    pub fn new(name: &LabName, nodes: usize, mode: Mode) -> Self {
        LabConfig {
            name: name.clone(),
            nodes,
            mode,
            pod_cidr: Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), 16).unwrap_or_default(),
            underlay: Ipv4Net::new(Ipv4Addr::new(172, 18, 0, 0), 24).unwrap_or_default(),
            control_plane: None,
            bgp: (mode == Mode::Bgp).then(BgpConfig::default),
            encrypt: None,
            ip_family: IpFamily::Ipv4,
            pod_cidr6: default_pod_cidr6(),
            service_cidr6: default_service_cidr6(),
            underlay6: default_underlay6(),
        }
    }

    /// The Service CIDRs, primary family first (the API server's `--service-cluster-ip-range`).
    pub fn service_cidrs(&self) -> Vec<IpNet> {
        let v4 = IpNet::V4(Ipv4Net::new(Ipv4Addr::new(10, 96, 0, 0), 16).unwrap_or_default());
        match self.ip_family {
            IpFamily::Ipv4 => vec![v4],
            IpFamily::Ipv6 => vec![IpNet::V6(self.service_cidr6)],
            IpFamily::Dual => vec![v4, IpNet::V6(self.service_cidr6)],
        }
    }

    /// The ClusterIP and NodePort allocators' settings.
    pub fn ranges(&self) -> model::allocate::Ranges {
        model::allocate::Ranges::with_cidrs(self.service_cidrs()).unwrap_or_default()
    }

    /// The LoadBalancer pools of the families the lab's pods have.
    pub fn load_balancer_pools(&self) -> Vec<IpNet> {
        let v4 = self.ip_family.has_v4().then(|| IpNet::V4(crate::load_balancer::pool()));
        let v6 = self.ip_family.has_v6().then(|| IpNet::V6(crate::load_balancer::pool6()));
        v4.into_iter().chain(v6).collect()
    }

    /// The cluster's pod CIDRs, primary family first (kube-proxy's `--cluster-cidr`).
    pub fn cluster_cidrs(&self) -> Vec<IpNet> {
        let (v4, v6) = (IpNet::V4(self.pod_cidr), IpNet::V6(self.pod_cidr6));
        match self.ip_family {
            IpFamily::Ipv4 => vec![v4],
            IpFamily::Ipv6 => vec![v6],
            IpFamily::Dual => vec![v4, v6],
        }
    }

    /// The pods' MTU: the mode's, or less when WireGuard wraps every packet between nodes.
    pub fn pod_mtu(&self) -> u32 {
        match self.encrypt {
            Some(Encryption::WireGuard) => ENCRYPTED_POD_MTU,
            None => self.mode.pod_mtu(),
        }
    }
}

/// One node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlan {
    /// `node-1`, `node-2`, ...
    pub name: String,
    /// Its network namespace: it plays the node's root namespace.
    pub netns: String,
    /// Its underlay address.
    pub ip: Ipv4Addr,
    /// Its IPv4 pod CIDR (reserved even when pods are IPv6 only).
    pub pod_cidr: Ipv4Net,
    /// Its underlay IPv6 address, when pods have IPv6.
    #[serde(default)]
    pub ip6: Option<Ipv6Addr>,
    /// Its IPv6 pod CIDR, when pods have IPv6.
    #[serde(default)]
    pub pod_cidr6: Option<Ipv6Net>,
    /// Whether its pods get IPv4 addresses (false in an IPv6-only lab).
    #[serde(default = "yes")]
    pub ipv4: bool,
}

impl NodePlan {
    /// The bridge's (gateway) address in the pod CIDR: `.1`.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.pod_cidr.network()) + 1)
    }

    /// The bridge's IPv6 address in the IPv6 pod CIDR: `::1`.
    pub fn gateway6(&self) -> Option<Ipv6Addr> {
        self.pod_cidr6.map(|c| Ipv6Addr::from(u128::from(c.network()) + 1))
    }

    /// The vxlan device's address: the pod CIDR's network address, flannel's convention.
    pub fn vxlan_ip(&self) -> Ipv4Addr {
        self.pod_cidr.network()
    }

    /// The vxlan device's IPv6 address: the IPv6 pod CIDR's network address.
    pub fn vxlan_ip6(&self) -> Option<Ipv6Addr> {
        self.pod_cidr6.map(|c| c.network())
    }

    /// The pod CIDRs its pods get addresses from, primary family first (`spec.podCIDRs`).
    pub fn pod_cidrs(&self) -> Vec<IpNet> {
        let v4 = self.ipv4.then_some(IpNet::V4(self.pod_cidr));
        v4.into_iter().chain(self.pod_cidr6.map(IpNet::V6)).collect()
    }

    /// Its addresses on the underlay as a Node reports them (`InternalIP`s), primary family
    /// first: the IPv4 one only when its pods have IPv4.
    pub fn internal_ips(&self) -> Vec<IpAddr> {
        let v4 = self.ipv4.then_some(IpAddr::V4(self.ip));
        v4.into_iter().chain(self.ip6.map(IpAddr::V6)).collect()
    }

    /// A stable MAC for the node's vxlan device (locally administered).
    pub fn vxlan_mac(&self) -> [u8; 6] {
        dataplane::link::vxlan_mac_for(self.ip)
    }
}

/// One pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodPlan {
    /// Namespace.
    pub namespace: String,
    /// Name (for workload pods, as their controller names them).
    pub name: String,
    /// `Pod` or the owning workload's kind.
    pub owner_kind: String,
    /// The owning workload's name, if any.
    pub owner: Option<String>,
    /// Labels.
    pub labels: Labels,
    /// Declared container ports (served by the lab's echo server).
    pub ports: Vec<ContainerPort>,
    /// The node it runs on.
    pub node: String,
    /// hostNetwork pods live in the node's namespace.
    pub host_network: bool,
    /// Its network namespace.
    pub netns: String,
    /// Ready (its servers listen), unless its manifest's status says otherwise or `lab mark` changed it.
    #[serde(default = "yes")]
    pub ready: bool,
    /// Terminating (a `deletionTimestamp` in its manifest, or `lab mark`).
    #[serde(default)]
    pub terminating: bool,
    /// `spec.hostname`
    #[serde(default)]
    pub hostname: Option<String>,
    /// `spec.subdomain`
    #[serde(default)]
    pub subdomain: Option<String>,
    /// `spec.dnsPolicy`
    #[serde(default)]
    pub dns_policy: Option<String>,
    /// `spec.dnsConfig`
    #[serde(default)]
    pub dns_config: Option<model::DnsConfig>,
}

fn yes() -> bool {
    true
}

impl PodPlan {
    /// `ns/name`
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// What made the pod: `Pod ns/name` or `StatefulSet ns/db`.
    pub fn made_by(&self) -> String {
        match &self.owner {
            Some(owner) => format!("{} {}/{owner}", self.owner_kind, self.namespace),
            None => format!("Pod {}", self.key()),
        }
    }
}

/// Everything a lab is made of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabPlan {
    /// Settings.
    pub config: LabConfig,
    /// The namespace holding the underlay bridge.
    pub underlay_netns: String,
    /// Nodes.
    pub nodes: Vec<NodePlan>,
    /// Pods, ordered by namespace then name.
    pub pods: Vec<PodPlan>,
}

impl LabPlan {
    /// The `external` host's namespace: a machine on the underlay outside the cluster, for
    /// reaching NodePorts and external addresses as clients off the cluster do.
    pub fn external_netns(&self) -> String {
        format!("{}external", self.config.name.netns_prefix())
    }

    /// The control-plane host's namespace (kind's control-plane node): etcd, kube-apiserver,
    /// kube-controller-manager and kube-scheduler run there, on the underlay.
    pub fn control_plane_netns(&self) -> String {
        format!("{}control-plane", self.config.name.netns_prefix())
    }

    /// The control-plane host's address: the underlay's last.
    pub fn control_plane_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.config.underlay.broadcast()) - 1)
    }

    /// The external host's address, the underlay's first (nodes route through it by default,
    /// as kind's nodes route through the Docker network's gateway).
    pub fn external_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.config.underlay.network()) + 1)
    }

    /// The external host's IPv6 address (`::1` of the underlay's IPv6 network), when pods have IPv6.
    pub fn external_ip6(&self) -> Option<Ipv6Addr> {
        self.config.ip_family.has_v6().then(|| Ipv6Addr::from(u128::from(self.config.underlay6.network()) + 1))
    }
}

/// A plan that cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Two objects make a pod of the same name (a Pod `db-0` beside StatefulSet `db`'s).
    #[error("pod {pod} would be made twice: by {first} and by {second}; rename one of them")]
    Duplicate {
        /// `ns/name`
        pod: String,
        /// One maker.
        first: String,
        /// The other.
        second: String,
    },
    /// Bad settings.
    #[error("{0}")]
    Config(String),
    /// A pod asks for a node the lab does not have.
    #[error("{location}: Pod {pod}: spec.nodeName: node {node:?} is not in this lab (nodes: {nodes})")]
    UnknownNode {
        /// Where the pod was read.
        location: String,
        /// `ns/name`
        pod: String,
        /// The node asked for.
        node: String,
        /// The lab's nodes.
        nodes: String,
    },
}

/// Plans nodes and pods.
pub fn plan(config: &LabConfig, state: &ClusterState) -> Result<LabPlan, PlanError> {
    if config.nodes == 0 || config.nodes > 250 {
        return Err(PlanError::Config(format!("--nodes must be between 1 and 250, not {}", config.nodes)));
    }
    if config.pod_cidr.prefix_len() > 16 {
        return Err(PlanError::Config(format!("pod CIDR {} leaves no /24 per node", config.pod_cidr)));
    }
    let v6 = config.ip_family.has_v6();
    if v6 && config.pod_cidr6.prefix_len() > 56 {
        return Err(PlanError::Config(format!("--pod-cidr-v6 {}: leaves no /64 for each of 250 nodes; give a /56 or larger", config.pod_cidr6)));
    }
    // The API server's limit: an IPv6 service range of at most 2^20 addresses.
    if v6 && config.service_cidr6.prefix_len() < 108 {
        return Err(PlanError::Config(format!("--service-cidr-v6 {}: too large; the prefix must be /108 or longer", config.service_cidr6)));
    }
    if v6 && config.underlay6.prefix_len() > 120 {
        return Err(PlanError::Config(format!("underlay IPv6 network {} is too small", config.underlay6)));
    }
    let prefix = config.name.netns_prefix();
    let nodes: Vec<NodePlan> = (0..config.nodes)
        .map(|i| {
            let name = format!("node-{}", i + 1);
            let base = u32::from(config.pod_cidr.network()) + ((i as u32) << 8);
            let base6 = u128::from(config.pod_cidr6.network()) + ((i as u128) << 64);
            NodePlan {
                netns: format!("{prefix}{name}"),
                ip: Ipv4Addr::from(u32::from(config.underlay.network()) + i as u32 + 2),
                pod_cidr: Ipv4Net::new(Ipv4Addr::from(base), 24).unwrap_or_default(),
                ip6: v6.then(|| Ipv6Addr::from(u128::from(config.underlay6.network()) + i as u128 + 2)),
                pod_cidr6: v6.then(|| Ipv6Net::new(Ipv6Addr::from(base6), 64).unwrap_or_default()),
                ipv4: config.ip_family.has_v4(),
                name,
            }
        })
        .collect();
    let node_names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();

    // Expand workloads into the pods their controllers would make.
    let mut wanted: Vec<(PodPlan, Option<String>)> = Vec::new();
    for info in &state.pods {
        for (name, fixed_node) in pod_names(info, &node_names) {
            let pinned = fixed_node.or_else(|| info.node_name.clone());
            if let Some(node) = &pinned
                && !node_names.contains(node)
            {
                return Err(PlanError::UnknownNode {
                    location: info.location.to_string(),
                    pod: format!("{}/{name}", info.namespace),
                    node: node.clone(),
                    nodes: node_names.join(", "),
                });
            }
            let pod = PodPlan {
                namespace: info.namespace.clone(),
                // A workload's pods are its; a Pod made by a controller (on a real control plane)
                // is that controller's.
                owner_kind: info.controller.as_ref().filter(|_| info.kind == "Pod").map_or_else(|| info.kind.clone(), |(kind, _)| kind.clone()),
                owner: match &info.controller {
                    Some((_, name)) if info.kind == "Pod" => Some(name.clone()),
                    _ => (info.kind != "Pod").then(|| info.name.clone()),
                },
                labels: info.labels.clone(),
                ports: info.ports.clone(),
                node: String::new(),
                host_network: info.host_network,
                netns: String::new(),
                ready: info.ready.unwrap_or(true),
                terminating: info.terminating,
                // StatefulSet pods are named as their hostnames (`db-0`).
                hostname: if info.kind == "StatefulSet" { Some(name.clone()) } else { info.hostname.clone() },
                subdomain: info.subdomain.clone(),
                dns_policy: info.dns_policy.clone(),
                dns_config: info.dns_config.clone(),
                name,
            };
            wanted.push((pod, pinned));
        }
    }
    wanted.sort_by(|a, b| (&a.0.namespace, &a.0.name).cmp(&(&b.0.namespace, &b.0.name)));
    if let Some(pair) = wanted.windows(2).find(|w| w[0].0.key() == w[1].0.key()) {
        return Err(PlanError::Duplicate { pod: pair[0].0.key(), first: pair[0].0.made_by(), second: pair[1].0.made_by() });
    }

    // Pinned pods first, then spread the rest over the least loaded nodes.
    let mut load: BTreeMap<String, usize> = node_names.iter().map(|n| (n.clone(), 0)).collect();
    for (_, pinned) in &wanted {
        if let Some(n) = pinned {
            *load.entry(n.clone()).or_default() += 1;
        }
    }
    let mut pods = Vec::with_capacity(wanted.len());
    for (mut pod, pinned) in wanted {
        let node = match pinned {
            Some(n) => n,
            None => {
                let n = node_names.iter().min_by_key(|n| load[*n]).cloned().unwrap_or_default();
                *load.entry(n.clone()).or_default() += 1;
                n
            }
        };
        pod.netns = if pod.host_network { format!("{prefix}{node}") } else { format!("{prefix}{}.{}", pod.namespace, pod.name) };
        pod.node = node;
        pods.push(pod);
    }
    Ok(LabPlan { underlay_netns: format!("{prefix}underlay"), config: config.clone(), nodes, pods })
}

/// A deterministic stand-in for the controllers' random 5-character suffix.
fn suffix(seed: &str, len: usize) -> String {
    let h = model::cluster::stable_hash(seed.as_bytes());
    let alphabet = model::cluster::NAME_ALPHABET;
    (0..len).map(|i| alphabet[((h >> (i * 5)) % alphabet.len() as u64) as usize] as char).collect()
}

/// The names a controller gives its pods (and, for DaemonSets, the node of each).
fn pod_names(info: &PodInfo, nodes: &[String]) -> Vec<(String, Option<String>)> {
    let seed = |i: usize| format!("{}/{}/{i}", info.namespace, info.name);
    match (info.kind.as_str(), info.replicas) {
        ("Pod", _) | (_, Replicas::Pod) => vec![(info.name.clone(), None)],
        (_, Replicas::PerNode) => nodes
            .iter()
            .filter(|n| info.node_name.as_ref().is_none_or(|pinned| pinned == *n))
            .map(|n| (format!("{}-{}", info.name, suffix(&seed_node(info, n), 5)), Some(n.clone())))
            .collect(),
        ("StatefulSet", Replicas::Count(n)) => (0..n as usize).map(|i| (format!("{}-{i}", info.name), None)).collect(),
        ("Deployment", Replicas::Count(n)) => {
            let hash = info.template_hash.clone().unwrap_or_default();
            (0..n as usize).map(|i| (format!("{}-{hash}-{}", info.name, suffix(&seed(i), 5)), None)).collect()
        }
        (_, Replicas::Count(n)) => (0..n as usize).map(|i| (format!("{}-{}", info.name, suffix(&seed(i), 5)), None)).collect(),
    }
}

fn seed_node(info: &PodInfo, node: &str) -> String {
    format!("{}/{}/{node}", info.namespace, info.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> crate::name::LabName {
        crate::name::LabName::parse("demo").unwrap()
    }

    fn state(yaml: &str) -> ClusterState {
        ClusterState::from_objects(&model::load_str(yaml, std::path::Path::new("t.yaml")).unwrap()).unwrap()
    }

    const SHOP: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: c, ports: [{containerPort: 8080}]}]}\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db, namespace: shop}\nspec:\n  replicas: 2\n  serviceName: db\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec: {containers: [{name: c}]}\n---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent, namespace: kube-system}\nspec:\n  selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n    spec: {hostNetwork: true, containers: [{name: c}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: pinned, namespace: shop}\nspec: {nodeName: node-2, containers: []}\n";

    #[test]
    fn a_pod_named_like_a_statefulset_pod_is_refused_before_anything_is_made() {
        let extra = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: db-1, namespace: shop}\nspec: {containers: []}\n";
        let err = plan(&LabConfig::new(&demo(), 2, Mode::HostGw), &state(&format!("{SHOP}{extra}"))).unwrap_err();
        assert_eq!(err.to_string(), "pod shop/db-1 would be made twice: by StatefulSet shop/db and by Pod shop/db-1; rename one of them");
    }

    #[test]
    fn nodes_get_addresses_and_pod_cidrs_by_convention() {
        let p = plan(&LabConfig::new(&demo(), 3, Mode::HostGw), &state("")).unwrap();
        assert_eq!(p.underlay_netns, "podnet.demo.underlay");
        let n: Vec<(String, String, String)> = p.nodes.iter().map(|n| (n.netns.clone(), n.ip.to_string(), n.pod_cidr.to_string())).collect();
        assert_eq!(
            n,
            [
                ("podnet.demo.node-1".into(), "172.18.0.2".into(), "10.244.0.0/24".into()),
                ("podnet.demo.node-2".into(), "172.18.0.3".into(), "10.244.1.0/24".into()),
                ("podnet.demo.node-3".into(), "172.18.0.4".into(), "10.244.2.0/24".into()),
            ]
        );
        assert_eq!(p.nodes[1].gateway().to_string(), "10.244.1.1");
    }

    #[test]
    fn workloads_expand_into_pods_named_like_their_controllers_name_them() {
        let p = plan(&LabConfig::new(&demo(), 2, Mode::Vxlan), &state(SHOP)).unwrap();
        let names: Vec<String> = p.pods.iter().map(PodPlan::key).collect();
        assert_eq!(names.iter().filter(|n| n.starts_with("shop/web-")).count(), 3);
        assert!(names.contains(&"shop/db-0".to_owned()) && names.contains(&"shop/db-1".to_owned()));
        let web = p.pods.iter().find(|p| p.name.starts_with("web-")).unwrap();
        let parts: Vec<&str> = web.name.split('-').collect();
        assert_eq!((parts.len(), parts[2].len()), (3, 5), "web-<template hash>-<5 chars>: {}", web.name);
        assert_eq!(web.owner.as_deref(), Some("web"));
        // A DaemonSet pod on every node, in the node's namespace (hostNetwork).
        let agents: Vec<&PodPlan> = p.pods.iter().filter(|p| p.name.starts_with("agent-")).collect();
        assert_eq!(agents.len(), 2);
        assert_eq!(agents.iter().map(|a| a.node.as_str()).collect::<std::collections::BTreeSet<_>>().len(), 2);
        assert!(agents.iter().all(|a| a.netns == format!("podnet.demo.{}", a.node)));
        // Names are stable from run to run.
        assert_eq!(p, plan(&LabConfig::new(&demo(), 2, Mode::Vxlan), &state(SHOP)).unwrap());
    }

    #[test]
    fn node_name_is_honoured_and_the_rest_is_spread() {
        let p = plan(&LabConfig::new(&demo(), 2, Mode::HostGw), &state(SHOP)).unwrap();
        assert_eq!(p.pods.iter().find(|p| p.name == "pinned").unwrap().node, "node-2");
        let mut per_node = BTreeMap::new();
        for pod in &p.pods {
            *per_node.entry(pod.node.clone()).or_insert(0) += 1;
        }
        let counts: Vec<i32> = per_node.values().copied().collect();
        assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1, "{per_node:?}");
        let err = plan(&LabConfig::new(&demo(), 1, Mode::HostGw), &state(SHOP)).unwrap_err();
        assert_eq!(err.to_string(), "t.yaml: document 4: Pod shop/pinned: spec.nodeName: node \"node-2\" is not in this lab (nodes: node-1)");
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(plan(&LabConfig::new(&demo(), 0, Mode::HostGw), &state("")).is_err());
    }
}
