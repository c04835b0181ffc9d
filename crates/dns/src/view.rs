//! What the cluster DNS knows, built once per snapshot: Services with their addresses, ports
//! and ready endpoints, namespaces, pod addresses, reverse names. Names are lowercase (queries
//! are compared case-insensitively); a lookup is a few hash probes.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use hickory_proto::rr::Name;
use ipnet::IpNet;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use model::ClusterState;

/// CoreDNS's `pods` option: whether and how `a-b-c-d.<ns>.pod.<zone>` answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PodsMode {
    /// No pod records (CoreDNS's default).
    #[default]
    Disabled,
    /// Any well-formed address answers, in any existing namespace.
    Insecure,
    /// Only the address of a pod in that namespace answers.
    Verified,
}

impl std::str::FromStr for PodsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "disabled" => Ok(PodsMode::Disabled),
            "insecure" => Ok(PodsMode::Insecure),
            "verified" => Ok(PodsMode::Verified),
            other => Err(format!("pods: {other:?} is not one of disabled, insecure, verified")),
        }
    }
}

/// Settings of the zone.
#[derive(Clone, Debug)]
pub struct ZoneConfig {
    /// The cluster domain, e.g. `cluster.local`.
    pub zone: String,
    /// TTL of the records (CoreDNS: 5 s).
    pub ttl: u32,
    /// Pod records.
    pub pods: PodsMode,
    /// The DNS Service (namespace, name) whose ClusterIPs are `ns.dns.<zone>`.
    pub dns_service: (String, String),
    /// CoreDNS's `autopath @kubernetes`: a pod's search-path walk is done by the server, which
    /// answers the first candidate with a CNAME to the name that exists.
    pub autopath: bool,
    /// The node's search domains, which kubelet appends to a pod's search path.
    pub host_searches: Vec<String>,
}

impl Default for ZoneConfig {
    fn default() -> Self {
        ZoneConfig {
            zone: "cluster.local".into(),
            ttl: 5,
            pods: PodsMode::Disabled,
            dns_service: ("kube-system".into(), "kube-dns".into()),
            autopath: false,
            host_searches: Vec::new(),
        }
    }
}

/// A Service or endpoint port as DNS sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    /// Its name, lowercase; empty when unnamed.
    pub name: String,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// The number.
    pub number: u16,
}

/// One address of a ready endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Its hostname: the endpoint's `hostname`, else the address with dashes (CoreDNS's choice).
    pub hostname: String,
    /// The address.
    pub ip: IpAddr,
    /// The ports of its EndpointSlice.
    pub ports: Vec<Port>,
}

/// What a Service answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Service {
    /// A Service with ClusterIPs.
    ClusterIp { ips: Vec<IpAddr>, ports: Vec<Port>, endpoints: Vec<Endpoint> },
    /// A headless Service: its ready endpoints.
    Headless { endpoints: Vec<Endpoint> },
    /// An ExternalName Service: a CNAME.
    ExternalName(Name),
}

impl Service {
    /// The ready endpoints.
    pub fn endpoints(&self) -> &[Endpoint] {
        match self {
            Service::ClusterIp { endpoints, .. } | Service::Headless { endpoints } => endpoints,
            Service::ExternalName(_) => &[],
        }
    }
}

/// The zone's data.
#[derive(Clone, Debug)]
pub struct View {
    /// The zone, lowercase and fully qualified.
    pub zone: Name,
    /// Record TTL.
    pub ttl: u32,
    /// SOA serial.
    pub serial: u32,
    /// Pod records.
    pub pods: PodsMode,
    /// Namespaces that exist.
    pub namespaces: HashSet<String>,
    /// Services by (namespace, name), lowercase.
    pub services: HashMap<(String, String), Service>,
    /// PTR targets by address: Services' ClusterIPs, then endpoints' names.
    pub reverse: HashMap<IpAddr, Vec<Name>>,
    /// Pod addresses and the namespaces that have a pod with it (for autopath's search path).
    pub pod_ips: HashMap<IpAddr, HashSet<String>>,
    /// The same for pods that are not terminating (for `pods verified`: CoreDNS excludes pods
    /// in the process of termination).
    pub live_pod_ips: HashMap<IpAddr, HashSet<String>>,
    /// The DNS Service's ClusterIPs (`ns.dns.<zone>`).
    pub nameservers: Vec<IpAddr>,
    /// Networks whose reverse names are this zone's: ServiceCIDRs and pod CIDRs. Other reverse
    /// names are forwarded.
    pub reverse_networks: Vec<IpNet>,
    /// With autopath: the node's search domains (else `None`: no autopath).
    pub autopath: Option<Vec<Name>>,
}

/// A zone name that cannot be one.
#[derive(Debug, thiserror::Error)]
#[error("zone {0:?} is not a valid domain name")]
pub struct BadZone(String);

fn protocol(p: Option<&str>) -> String {
    p.unwrap_or("TCP").to_ascii_lowercase()
}

/// CoreDNS's `endpointHostname`: the endpoint's hostname, else its address with dashes.
fn hostname_of(hostname: Option<&str>, ip: &IpAddr) -> String {
    if let Some(h) = hostname.filter(|h| !h.is_empty()) {
        return h.to_ascii_lowercase();
    }
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => {
            let dashed = v6.to_string().replace(':', "-");
            if dashed.ends_with('-') { format!("{dashed}0") } else { dashed }
        }
    }
}

/// Ready endpoint addresses of the slices: the `ready` condition (absent: ready), or any with
/// `publishNotReadyAddresses`; terminating endpoints never.
fn ready_endpoints<'a>(slices: impl Iterator<Item = &'a EndpointSlice>, publish_not_ready: bool) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = Vec::new();
    for slice in slices {
        let ports: Vec<Port> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(Port {
                    name: p.name.clone().unwrap_or_default().to_ascii_lowercase(),
                    protocol: protocol(p.protocol.as_deref()),
                    number: u16::try_from(p.port?).ok()?,
                })
            })
            .collect();
        for e in &slice.endpoints {
            let c = e.conditions.as_ref();
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            if terminating || !(ready || publish_not_ready) {
                continue;
            }
            for ip in e.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                if out.iter().any(|o| o.ip == ip && o.ports == ports) {
                    continue; // the same address in two slices
                }
                out.push(Endpoint { hostname: hostname_of(e.hostname.as_deref(), &ip), ip, ports: ports.clone() });
            }
        }
    }
    out
}

impl View {
    /// The search path of the pod at `source`, as kubelet writes it, when autopath is on and
    /// the address is one pod's: `<ns>.svc.<zone>`, `svc.<zone>`, `<zone>`, the node's domains,
    /// and the root (the name as given).
    pub fn search_path(&self, source: IpAddr) -> Option<Vec<Name>> {
        let host = self.autopath.as_ref()?;
        let namespaces = self.pod_ips.get(&source)?;
        let [ns] = namespaces.iter().collect::<Vec<_>>()[..] else {
            return None;
        };
        let svc = Name::from_ascii("svc").ok()?.append_domain(&self.zone).ok()?;
        let mut path = vec![Name::from_ascii(ns).ok()?.append_domain(&svc).ok()?, svc, self.zone.clone()];
        path.extend(host.iter().cloned());
        path.push(Name::root());
        Some(path)
    }

    /// The zone's data for a snapshot. EndpointSlices are the given ones, and computed ones for
    /// Services with a selector that none are given for (a pod without a Ready condition is ready).
    pub fn build(state: &ClusterState, config: &ZoneConfig, serial: u32) -> Result<View, BadZone> {
        let zone = Name::from_ascii(format!("{}.", config.zone.trim_end_matches('.'))).map_err(|_| BadZone(config.zone.clone()))?.to_lowercase();
        let computed = model::endpoints::missing(state, |p| p.ready.unwrap_or(true));
        let mut slices: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
        for slice in state.endpoint_slices.iter().map(|s| &s.object).chain(&computed) {
            if let Some((ns, svc)) = model::endpoints::service_of(slice) {
                slices.entry((ns.to_ascii_lowercase(), svc.to_ascii_lowercase())).or_default().push(slice);
            }
        }
        let mut view = View {
            zone,
            ttl: config.ttl,
            serial,
            pods: config.pods,
            namespaces: state.namespaces.iter().map(|n| n.name.to_ascii_lowercase()).collect(),
            services: HashMap::new(),
            reverse: HashMap::new(),
            pod_ips: HashMap::new(),
            live_pod_ips: HashMap::new(),
            nameservers: Vec::new(),
            reverse_networks: state.service_cidrs.iter().filter_map(|c| c.parse().ok()).collect(),
            autopath: config
                .autopath
                .then(|| config.host_searches.iter().filter_map(|s| Name::from_ascii(format!("{}.", s.trim_end_matches('.'))).ok()).collect()),
        };
        for node in &state.nodes {
            let spec = node.spec.clone().unwrap_or_default();
            let cidrs = spec.pod_cidrs.unwrap_or_else(|| spec.pod_cidr.into_iter().collect());
            view.reverse_networks.extend(cidrs.iter().filter_map(|c| c.parse::<IpNet>().ok()));
        }
        for pod in &state.pods {
            for ip in &pod.ips {
                view.pod_ips.entry(*ip).or_default().insert(pod.namespace.to_ascii_lowercase());
                if !pod.terminating {
                    view.live_pod_ips.entry(*ip).or_default().insert(pod.namespace.to_ascii_lowercase());
                }
            }
        }
        let mut endpoint_names: Vec<(IpAddr, Name)> = Vec::new();
        for svc in &state.services {
            let key = (svc.namespace.to_ascii_lowercase(), svc.name.to_ascii_lowercase());
            let spec = svc.object.spec.clone().unwrap_or_default();
            let Ok(own) = Name::from_ascii(format!("{}.{}.svc", key.1, key.0)).and_then(|n| n.append_domain(&view.zone)) else {
                continue;
            };
            let endpoints = ready_endpoints(slices.get(&key).into_iter().flatten().copied(), spec.publish_not_ready_addresses.unwrap_or(false));
            for e in &endpoints {
                if let Ok(name) = Name::from_ascii(&e.hostname).and_then(|h| h.append_domain(&own)) {
                    endpoint_names.push((e.ip, name));
                }
            }
            let service = if spec.type_.as_deref() == Some("ExternalName") {
                let target = spec.external_name.unwrap_or_default();
                let Ok(mut target) = Name::from_ascii(&target) else {
                    continue;
                };
                target.set_fqdn(true);
                Service::ExternalName(target)
            } else {
                let mut ips: Vec<IpAddr> = spec.cluster_ips.iter().flatten().filter_map(|i| i.parse().ok()).collect();
                if ips.is_empty() {
                    ips = spec.cluster_ip.iter().filter_map(|i| i.parse().ok()).collect();
                }
                if ips.is_empty() {
                    Service::Headless { endpoints }
                } else {
                    for ip in &ips {
                        view.reverse.entry(*ip).or_default().push(own.clone());
                    }
                    if (key.0.as_str(), key.1.as_str()) == (config.dns_service.0.as_str(), config.dns_service.1.as_str()) {
                        view.nameservers.clone_from(&ips);
                    }
                    let ports = spec
                        .ports
                        .iter()
                        .flatten()
                        .filter_map(|p| {
                            Some(Port {
                                name: p.name.clone().unwrap_or_default().to_ascii_lowercase(),
                                protocol: protocol(p.protocol.as_deref()),
                                number: u16::try_from(p.port).ok()?,
                            })
                        })
                        .collect();
                    Service::ClusterIp { ips, ports, endpoints }
                }
            };
            view.services.insert(key, service);
        }
        // Endpoint names come after ClusterIPs, as CoreDNS looks them up.
        for (ip, name) in endpoint_names {
            let names = view.reverse.entry(ip).or_default();
            if !names.contains(&name) {
                names.push(name);
            }
        }
        Ok(view)
    }
}
