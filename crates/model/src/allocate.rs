//! ClusterIP and NodePort allocation the way the API server does it, but deterministic: a
//! Service gets a ClusterIP from the service CIDR of each of its `ipFamilies` that has none
//! yet (single- or dual-stack, either family primary), a NodePort/LoadBalancer port without a
//! `nodePort` gets one from 30000-32767. Like the API server (KEP-3070, KEP-3668), dynamic
//! allocation prefers the upper band of each range and leaves the lower band for addresses and
//! ports people choose; the first address is the `kubernetes` Service's.
//! Instead of a random pick, the start is a hash of `namespace/name`, then the next free one.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net};
use k8s_openapi::api::core::v1::Service;

use crate::cluster::{Namespaced, stable_hash};
use crate::error::{ManifestError, ObjectRef};

/// The settings of the allocators.
#[derive(Clone, Debug)]
pub struct Ranges {
    /// The service CIDRs (`--service-cluster-ip-range`), at most one per IP family, the
    /// cluster's primary (default) family first: `[10.96.0.0/16]`, `[fd00:10:96::/112]`,
    /// `[10.96.0.0/16, fd00:10:96::/112]` or `[fd00:10:96::/112, 10.96.0.0/16]`.
    /// Build other shapes with [`Ranges::with_cidrs`], which checks them.
    pub service_cidrs: Vec<IpNet>,
    /// First and last NodePort.
    pub node_ports: (u16, u16),
}

impl Default for Ranges {
    /// `10.96.0.0/16` (single-stack IPv4) and `30000-32767`, the conventions of kubeadm and kind.
    fn default() -> Self {
        Ranges { service_cidrs: vec![IpNet::V4(Ipv4Net::new(Ipv4Addr::new(10, 96, 0, 0), 16).unwrap_or_default())], node_ports: (30000, 32767) }
    }
}

fn family(cidr: &IpNet) -> &'static str {
    match cidr {
        IpNet::V4(_) => "IPv4",
        IpNet::V6(_) => "IPv6",
    }
}

impl Ranges {
    /// The default NodePort range with these service CIDRs, primary family first: one, or two
    /// of different families, as the API server's `--service-cluster-ip-range` takes them.
    pub fn with_cidrs(cidrs: Vec<IpNet>) -> Result<Ranges, String> {
        let list = cidrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        match cidrs.as_slice() {
            [] => return Err("service CIDRs: at least one is required".into()),
            [a, b] if family(a) == family(b) => return Err(format!("service CIDRs {list}: must be of different IP family")),
            [_, _, _, ..] => return Err(format!("service CIDRs {list}: must not contain more than two entries")),
            _ => {}
        }
        Ok(Ranges { service_cidrs: cidrs.iter().map(IpNet::trunc).collect(), ..Ranges::default() })
    }

    /// The defaults, with the service CIDRs of the snapshot's ServiceCIDRs if it has any: the
    /// first of each family, in the order given (so the first one's family is the primary).
    pub fn for_cluster(state: &crate::ClusterState) -> Ranges {
        let mut cidrs: Vec<IpNet> = Vec::new();
        for cidr in state.service_cidrs.iter().filter_map(|c| c.parse::<IpNet>().ok()) {
            if !cidrs.iter().any(|c| family(c) == family(&cidr)) {
                cidrs.push(cidr.trunc());
            }
        }
        if cidrs.is_empty() { Ranges::default() } else { Ranges { service_cidrs: cidrs, ..Ranges::default() } }
    }

    /// The cluster's service IP families, primary first (`"IPv4"`, `"IPv6"`).
    pub fn families(&self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = Vec::new();
        for f in self.service_cidrs.iter().map(family) {
            if !out.contains(&f) {
                out.push(f);
            }
        }
        out
    }

    /// The service CIDR of a family (`"IPv4"`/`"IPv6"`), if the cluster has one.
    pub fn cidr(&self, ip_family: &str) -> Option<&IpNet> {
        self.service_cidrs.iter().find(|c| family(c) == ip_family)
    }
}

/// The number of addresses in the CIDR (saturating at `u128::MAX` for `::/0`).
fn size(cidr: &IpNet) -> u128 {
    1u128.checked_shl(u32::from(cidr.max_prefix_len() - cidr.prefix_len())).unwrap_or(u128::MAX)
}

/// The end of the offsets the allocator hands out: like upstream's bitmap allocator, never the
/// network address (offset 0) nor IPv4's broadcast address, and an IPv6 range only up to its
/// first 2^16 addresses (upstream keeps a bitmap of that size; `fd00:10:96::/112` is exactly that).
fn limit(cidr: &IpNet) -> u128 {
    match cidr {
        IpNet::V4(_) => size(cidr) - 1,
        IpNet::V6(_) => size(cidr).min(1 << 16),
    }
}

fn nth(cidr: &IpNet, i: u128) -> IpAddr {
    match cidr {
        IpNet::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n.network()).wrapping_add(i as u32))),
        IpNet::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n.network()).wrapping_add(i))),
    }
}

/// The offset of an address in the CIDR, if it is in it.
fn offset(cidr: &IpNet, ip: IpAddr) -> Option<u128> {
    match (cidr, ip) {
        (IpNet::V4(n), IpAddr::V4(a)) if n.contains(&a) => Some(u128::from(u32::from(a) - u32::from(n.network()))),
        (IpNet::V6(n), IpAddr::V6(a)) if n.contains(&a) => Some(u128::from(a) - u128::from(n.network())),
        _ => None,
    }
}

/// `calculateRangeOffset`: `min(max(16, size/16), 256)`, the lower band kept for chosen
/// ClusterIPs; none in ranges of 16 addresses or fewer.
fn ip_static_band(size: u128) -> u128 {
    if size <= 16 { 0 } else { (size / 16).clamp(16, 256) }
}

/// `min(max(16, size/32), 128)`: the lower band kept for chosen NodePorts.
fn port_static_band(size: u64) -> u64 {
    (size / 32).clamp(16, 128)
}

fn fail(svc: &Namespaced<Service>, msg: String) -> ManifestError {
    invalid(svc, vec![msg])
}

fn invalid(svc: &Namespaced<Service>, messages: Vec<String>) -> ManifestError {
    ManifestError {
        location: svc.location.clone(),
        object: Some(ObjectRef { kind: "Service".into(), namespace: svc.namespace.clone(), name: svc.name.clone() }),
        messages,
    }
}

/// The field of the `i`th ClusterIP in errors: `spec.clusterIP` for the first, as it is the one
/// people write.
fn cluster_ip_field(i: usize) -> String {
    if i == 0 { "spec.clusterIP".into() } else { format!("spec.clusterIPs[{i}]") }
}

/// The next free address of the CIDR for `key`: a start in the upper band hashed from the key,
/// then the next free one (wrapping inside the band), then the lower band in order (upstream's
/// `AllocateNext` with an offset).
fn next_ip(cidr: &IpNet, key: &str, used: &BTreeSet<IpAddr>) -> Option<IpAddr> {
    let end = limit(cidr);
    let band = ip_static_band(size(cidr)).min(end);
    let span = end - band;
    let start = if span == 0 { 0 } else { u128::from(stable_hash(key.as_bytes())) % span };
    let upper = (0..span).map(|k| band + (start + k) % span);
    upper.chain(0..band).map(|i| nth(cidr, i)).find(|ip| !used.contains(ip))
}

/// Defaults every Service for the cluster's IP families, then fills in missing ClusterIPs and
/// NodePorts; a family the cluster does not have, a chosen address or port that is taken or
/// out of range is an error naming the Service and field, as the API server's.
pub fn allocate(services: &mut [Namespaced<Service>], ranges: &Ranges) -> Result<(), ManifestError> {
    let families = ranges.families();
    for svc in services.iter_mut() {
        crate::defaults::service_for(&mut svc.object, &families).map_err(|messages| invalid(svc, messages))?;
    }
    // The network address and the first host are never handed out dynamically (the first is
    // the `kubernetes` Service's); chosen addresses are taken first, in order.
    let mut used_ips: BTreeSet<IpAddr> = ranges.service_cidrs.iter().flat_map(|c| [nth(c, 0), nth(c, 1)]).collect();
    let mut used_ports: BTreeSet<u16> = BTreeSet::new();
    for svc in services.iter() {
        let spec = svc.object.spec.clone().unwrap_or_default();
        let ips = if spec.type_.as_deref() == Some("ExternalName") { Vec::new() } else { spec.cluster_ips.clone().unwrap_or_default() };
        for (i, ip) in ips.iter().enumerate().filter(|(_, ip)| !ip.is_empty() && *ip != "None") {
            let field = cluster_ip_field(i);
            let parsed: IpAddr = ip.parse().map_err(|_| fail(svc, format!("{field}: Invalid value: {ip:?}: must be a valid IP address")))?;
            let ip_family = if parsed.is_ipv6() { "IPv6" } else { "IPv4" };
            let cidr =
                ranges.cidr(ip_family).ok_or_else(|| fail(svc, format!("{field}: Invalid value: {ip:?}: {ip_family} is not configured on this cluster")))?;
            if offset(cidr, parsed).is_none_or(|o| o == 0 || o >= limit(cidr)) {
                return Err(fail(svc, format!("{field}: Invalid value: {ip:?}: provided IP is not in the valid range. The range of valid IPs is {cidr}")));
            }
            if !used_ips.insert(parsed) && parsed != nth(cidr, 1) {
                return Err(fail(svc, format!("{field}: Invalid value: {ip:?}: provided IP is already allocated")));
            }
        }
        for (i, p) in spec.ports.iter().flatten().enumerate() {
            if let Some(np) = p.node_port.filter(|n| *n != 0) {
                let np_u16 = u16::try_from(np).unwrap_or(0);
                if np_u16 < ranges.node_ports.0 || np_u16 > ranges.node_ports.1 {
                    return Err(fail(
                        svc,
                        format!(
                            "spec.ports[{i}].nodePort: Invalid value: {np}: provided port is not in the valid range. The range of valid ports is {}-{}",
                            ranges.node_ports.0, ranges.node_ports.1
                        ),
                    ));
                }
                // The same nodePort on two protocols of one Service is allowed.
                let same_service = spec.ports.iter().flatten().take(i).any(|q| q.node_port == Some(np));
                if !used_ports.insert(np_u16) && !same_service {
                    return Err(fail(svc, format!("spec.ports[{i}].nodePort: Invalid value: {np}: provided port is already allocated")));
                }
            }
        }
        if let Some(hc) = spec.health_check_node_port.filter(|n| *n != 0)
            && !used_ports.insert(u16::try_from(hc).unwrap_or(0))
        {
            return Err(fail(svc, format!("spec.healthCheckNodePort: Invalid value: {hc}: provided port is already allocated")));
        }
    }
    for svc in services.iter_mut() {
        let key = format!("{}/{}", svc.namespace, svc.name);
        let mut spec = svc.object.spec.clone().unwrap_or_default();
        let ty = spec.type_.clone().unwrap_or_else(|| "ClusterIP".into());
        if ty == "ExternalName" {
            continue;
        }
        // `allocClusterIPs`: headless Services get none; every other family without an
        // address gets one from its CIDR, and `clusterIP` is `clusterIPs[0]`.
        let ips = spec.cluster_ips.get_or_insert_with(Vec::new);
        if ips.first().is_none_or(|ip| ip != "None") {
            for (i, ip_family) in spec.ip_families.iter().flatten().enumerate() {
                if ips.get(i).is_some_and(|ip| !ip.is_empty()) {
                    continue;
                }
                let cidr = ranges
                    .cidr(ip_family)
                    .ok_or_else(|| fail(svc, format!("spec.ipFamilies[{i}]: Invalid value: {ip_family:?}: not configured on this cluster")))?;
                let ip = next_ip(cidr, &key, &used_ips).ok_or_else(|| fail(svc, format!("{}: Internal error: range is full", cluster_ip_field(i))))?;
                used_ips.insert(ip);
                if i < ips.len() {
                    ips[i] = ip.to_string();
                } else {
                    ips.push(ip.to_string());
                }
            }
            spec.cluster_ip = ips.first().cloned();
        }
        let (lo, hi) = ranges.node_ports;
        let port_span = u64::from(hi - lo) + 1;
        let band = port_static_band(port_span);
        let span = port_span - band;
        let mut next = |what: &str, salt: String| {
            let start = stable_hash(salt.as_bytes()) % span;
            let port = (0..span)
                .map(|k| lo + (band + (start + k) % span) as u16)
                .find(|port| !used_ports.contains(port))
                .ok_or_else(|| fail(svc, format!("{what}: Internal error: range is full")))?;
            used_ports.insert(port);
            Ok::<i32, ManifestError>(i32::from(port))
        };
        if ty == "NodePort" || (ty == "LoadBalancer" && spec.allocate_load_balancer_node_ports != Some(false)) {
            let ports = spec.ports.get_or_insert_with(Vec::new);
            for i in 0..ports.len() {
                if ports[i].node_port.is_some_and(|n| n != 0) {
                    continue;
                }
                // The same port number on another protocol shares its NodePort (`initNodePorts`).
                let shared = ports.iter().filter(|q| q.port == ports[i].port).find_map(|q| q.node_port.filter(|n| *n != 0));
                ports[i].node_port = Some(match shared {
                    Some(n) => n,
                    None => next(&format!("spec.ports[{i}].nodePort"), format!("{key}/{i}"))?,
                });
            }
        }
        // A load balancer that keeps clients' addresses is health-checked on a NodePort of its own.
        if ty == "LoadBalancer" && spec.external_traffic_policy.as_deref() == Some("Local") && spec.health_check_node_port.is_none_or(|n| n == 0) {
            spec.health_check_node_port = Some(next("spec.healthCheckNodePort", format!("{key}/health"))?);
        }
        svc.object.spec = Some(spec);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterState;

    fn services(yaml: &str) -> Vec<Namespaced<Service>> {
        ClusterState::from_objects(&crate::load_str(yaml, std::path::Path::new("t.yaml")).unwrap()).unwrap().services
    }

    fn svc(name: &str, extra: &str) -> String {
        format!("---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  ports: [{{port: 80}}]\n{extra}")
    }

    #[test]
    fn missing_cluster_ips_come_from_the_upper_band_and_are_stable() {
        let mut s = services(&format!("{}{}", svc("a", ""), svc("b", "")));
        allocate(&mut s, &Ranges::default()).unwrap();
        let ips: Vec<Ipv4Addr> = s.iter().map(|x| x.object.spec.as_ref().unwrap().cluster_ip.as_ref().unwrap().parse().unwrap()).collect();
        assert_ne!(ips[0], ips[1]);
        for ip in &ips {
            let o = ip.octets();
            assert_eq!((o[0], o[1]), (10, 96));
            assert!(u32::from(*ip) - u32::from(Ipv4Addr::new(10, 96, 0, 0)) >= 256, "{ip} is in the static band");
        }
        let mut again = services(&format!("{}{}", svc("a", ""), svc("b", "")));
        allocate(&mut again, &Ranges::default()).unwrap();
        assert_eq!(s[0].object.spec.as_ref().unwrap().cluster_ip, again[0].object.spec.as_ref().unwrap().cluster_ip);
    }

    #[test]
    fn chosen_addresses_are_kept_and_checked() {
        let mut s = services(&svc("dns", "  clusterIP: 10.96.0.10\n"));
        allocate(&mut s, &Ranges::default()).unwrap();
        assert_eq!(s[0].object.spec.as_ref().unwrap().cluster_ip.as_deref(), Some("10.96.0.10"));
        let mut dup = services(&format!("{}{}", svc("a", "  clusterIP: 10.96.0.10\n"), svc("b", "  clusterIP: 10.96.0.10\n")));
        let err = allocate(&mut dup, &Ranges::default()).unwrap_err().to_string();
        assert!(err.contains("Service shop/b: spec.clusterIP: Invalid value: \"10.96.0.10\": provided IP is already allocated"), "{err}");
        let mut out = services(&svc("a", "  clusterIP: 10.0.0.1\n"));
        assert!(allocate(&mut out, &Ranges::default()).unwrap_err().to_string().contains("not in the valid range"));
    }

    #[test]
    fn headless_and_external_name_services_get_no_address() {
        let mut s = services(&format!("{}{}", svc("h", "  clusterIP: None\n"), svc("x", "  type: ExternalName\n  externalName: example.com\n")));
        allocate(&mut s, &Ranges::default()).unwrap();
        assert_eq!(s[0].object.spec.as_ref().unwrap().cluster_ip.as_deref(), Some("None"));
        assert_eq!(s[1].object.spec.as_ref().unwrap().cluster_ip, None);
    }

    #[test]
    fn node_ports_for_node_port_and_load_balancer_services() {
        let mut s = services(&format!(
            "{}{}{}",
            svc("np", "  type: NodePort\n"),
            svc("lb", "  type: LoadBalancer\n"),
            svc("fixed", "  type: NodePort\n").replace("ports: [{port: 80}]", "ports: [{port: 80, nodePort: 30080}]")
        ));
        allocate(&mut s, &Ranges::default()).unwrap();
        let port = |i: usize| s[i].object.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].node_port.unwrap();
        assert_eq!(port(0), 30080, "the chosen one is kept (services are in name order: fixed, lb, np)");
        for i in 1..3 {
            assert!((30128..=32767).contains(&port(i)), "{}", port(i));
        }
        assert_ne!(port(1), port(2));
        let mut shared = services(
            &svc("dns", "  type: LoadBalancer\n  externalTrafficPolicy: Local\n")
                .replace("ports: [{port: 80}]", "ports: [{port: 53, protocol: UDP}, {port: 53}]"),
        );
        allocate(&mut shared, &Ranges::default()).unwrap();
        let spec = shared[0].object.spec.as_ref().unwrap();
        let ports = spec.ports.as_ref().unwrap();
        assert_eq!(ports[0].node_port, ports[1].node_port, "one port number, one NodePort for both protocols");
        let health = spec.health_check_node_port.unwrap();
        assert!((30128..=32767).contains(&health) && Some(health) != ports[0].node_port, "{health}");
        let mut bad = services(&svc("np", "  type: NodePort\n").replace("ports: [{port: 80}]", "ports: [{port: 80, nodePort: 80}]"));
        assert!(allocate(&mut bad, &Ranges::default()).unwrap_err().to_string().contains("spec.ports[0].nodePort: Invalid value: 80"));
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn dual(primary_v6: bool) -> Ranges {
        let (v4, v6) = (net("10.96.0.0/16"), net("fd00:10:96::/112"));
        Ranges::with_cidrs(if primary_v6 { vec![v6, v4] } else { vec![v4, v6] }).unwrap()
    }

    /// `(clusterIP, clusterIPs, ipFamilies)` of each Service after allocation.
    fn fields(s: &[Namespaced<Service>]) -> Vec<(String, Vec<String>, Vec<String>)> {
        s.iter()
            .map(|x| {
                let spec = x.object.spec.clone().unwrap();
                (spec.cluster_ip.unwrap_or_default(), spec.cluster_ips.unwrap_or_default(), spec.ip_families.unwrap_or_default())
            })
            .collect()
    }

    fn upper_band(cidr: &str, ip: &str) -> bool {
        let o = offset(&net(cidr), ip.parse().unwrap());
        o.is_some_and(|o| (256..limit(&net(cidr))).contains(&o))
    }

    #[test]
    fn ranges_take_one_cidr_per_family_primary_first() {
        assert_eq!(Ranges::default().service_cidrs, [net("10.96.0.0/16")]);
        assert_eq!(Ranges::default().families(), ["IPv4"]);
        let r = Ranges::with_cidrs(vec![net("fd00:10:96::7/112"), net("10.96.0.0/16")]).unwrap();
        assert_eq!(r.service_cidrs, [net("fd00:10:96::/112"), net("10.96.0.0/16")], "truncated, order kept");
        assert_eq!(r.families(), ["IPv6", "IPv4"]);
        assert_eq!(r.cidr("IPv4"), Some(&net("10.96.0.0/16")));
        assert_eq!(r.node_ports, (30000, 32767));
        let e = Ranges::with_cidrs(vec![net("10.96.0.0/16"), net("10.97.0.0/16")]).unwrap_err();
        assert_eq!(e, "service CIDRs 10.96.0.0/16,10.97.0.0/16: must be of different IP family");
        let e = Ranges::with_cidrs(vec![net("10.96.0.0/16"), net("fd00::/112"), net("fd01::/112")]).unwrap_err();
        assert!(e.ends_with("must not contain more than two entries"), "{e}");
        assert!(Ranges::with_cidrs(Vec::new()).is_err());

        let state = |cidrs: &str| {
            let yaml = format!("---\napiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {{name: kubernetes}}\nspec: {{cidrs: {cidrs}}}\n");
            ClusterState::from_objects(&crate::load_str(&yaml, std::path::Path::new("t.yaml")).unwrap()).unwrap()
        };
        assert_eq!(Ranges::for_cluster(&ClusterState::default()).service_cidrs, [net("10.96.0.0/16")]);
        assert_eq!(Ranges::for_cluster(&state("['fd00:10:96::/112']")).families(), ["IPv6"]);
        assert_eq!(
            Ranges::for_cluster(&state("['fd00:10:96::/112', 10.100.0.0/16, 10.101.0.0/16]")).service_cidrs,
            [net("fd00:10:96::/112"), net("10.100.0.0/16")],
            "the first of each family, in order"
        );
    }

    #[test]
    fn ipv4_addresses_are_where_they_always_were() {
        // The upper band of 10.96.0.0/16 without the broadcast address: offsets 256..65535.
        let mut s = services(&svc("a", ""));
        allocate(&mut s, &Ranges::default()).unwrap();
        let want = nth(&net("10.96.0.0/16"), 256 + u128::from(stable_hash(b"shop/a")) % 65279).to_string();
        assert_eq!(fields(&s)[0], (want.clone(), vec![want], vec!["IPv4".to_string()]));
    }

    #[test]
    fn each_family_gets_an_address_from_its_own_cidr() {
        let yaml = format!(
            "{}{}{}{}",
            svc("plain", "  selector: {app: web}\n"),
            svc("prefer", "  ipFamilyPolicy: PreferDualStack\n"),
            svc("require", "  ipFamilyPolicy: RequireDualStack\n"),
            svc("v6only", "  ipFamilies: [IPv6]\n"),
        );
        // IPv4 primary.
        let mut s = services(&yaml);
        allocate(&mut s, &dual(false)).unwrap();
        let f = fields(&s);
        assert_eq!(f[0].2, ["IPv4"]);
        assert_eq!(f[1].2, ["IPv4", "IPv6"]);
        assert_eq!(f[2].2, ["IPv4", "IPv6"]);
        assert_eq!(f[3].2, ["IPv6"]);
        for (ip, ips, families) in &f {
            assert_eq!(Some(ip), ips.first(), "clusterIP is clusterIPs[0]");
            assert_eq!(ips.len(), families.len());
            for (ip, family) in ips.iter().zip(families) {
                let cidr = if family == "IPv4" { "10.96.0.0/16" } else { "fd00:10:96::/112" };
                assert!(upper_band(cidr, ip), "{ip} in the upper band of {cidr}");
            }
        }
        let all: BTreeSet<&String> = f.iter().flat_map(|x| &x.1).collect();
        assert_eq!(all.len(), 6, "no address twice");
        // IPv6 primary: the same Services, the other way round.
        let mut s = services(&yaml);
        allocate(&mut s, &dual(true)).unwrap();
        let f = fields(&s);
        assert_eq!(f[0].2, ["IPv6"]);
        assert!(f[0].0.contains(':'), "{}", f[0].0);
        assert_eq!(f[1].2, ["IPv6", "IPv4"]);
        assert_eq!(f[2].2, ["IPv6", "IPv4"]);
        // Single-stack IPv6.
        let mut s = services(&format!("{}{}", svc("plain", ""), svc("prefer", "  ipFamilyPolicy: PreferDualStack\n")));
        allocate(&mut s, &Ranges::with_cidrs(vec![net("fd00:10:96::/112")]).unwrap()).unwrap();
        let f = fields(&s);
        assert!(f.iter().all(|x| x.1.len() == 1 && x.2 == ["IPv6"] && upper_band("fd00:10:96::/112", &x.0)), "{f:?}");
        // Deterministic.
        let mut again = services(&yaml);
        allocate(&mut again, &dual(true)).unwrap();
        let mut s = services(&yaml);
        allocate(&mut s, &dual(true)).unwrap();
        assert_eq!(fields(&again), fields(&s));
    }

    #[test]
    fn chosen_addresses_of_either_family_are_kept_and_the_missing_one_allocated() {
        let mut s = services(&format!(
            "{}{}{}",
            svc("a", "  clusterIP: 'fd00:10:96::a'\n"),
            svc("b", "  clusterIP: 10.96.0.11\n  ipFamilyPolicy: PreferDualStack\n"),
            svc("c", "  clusterIP: 'fd00:10:96::c'\n  clusterIPs: ['fd00:10:96::c', 10.96.0.12]\n  ipFamilyPolicy: RequireDualStack\n"),
        ));
        allocate(&mut s, &dual(false)).unwrap();
        let f = fields(&s);
        assert_eq!(f[0], ("fd00:10:96::a".into(), vec!["fd00:10:96::a".into()], vec!["IPv6".into()]));
        assert_eq!((&f[1].1[0], &f[1].2), (&"10.96.0.11".to_string(), &vec!["IPv4".to_string(), "IPv6".to_string()]));
        assert!(upper_band("fd00:10:96::/112", &f[1].1[1]), "{:?}", f[1]);
        assert_eq!(f[2].1, ["fd00:10:96::c", "10.96.0.12"]);
        assert_eq!(f[2].2, ["IPv6", "IPv4"]);
    }

    #[test]
    fn chosen_ipv6_addresses_are_checked_like_ipv4_ones() {
        let err = |yaml: String, ranges: &Ranges| allocate(&mut services(&yaml), ranges).unwrap_err().to_string();
        let e = err(svc("a", "  clusterIP: 'fd00:10:97::5'\n"), &dual(false));
        assert!(
            e.contains("Service shop/a: spec.clusterIP: Invalid value: \"fd00:10:97::5\": provided IP is not in the valid range. The range of valid IPs is fd00:10:96::/112"),
            "{e}"
        );
        let e = err(
            format!(
                "{}{}",
                svc("a", "  clusterIP: 'fd00:10:96::5'\n"),
                svc("b", "  clusterIP: 10.96.0.5\n  clusterIPs: [10.96.0.5, 'fd00:10:96::5']\n  ipFamilyPolicy: PreferDualStack\n")
            ),
            &dual(false),
        );
        assert!(e.contains("Service shop/b: spec.clusterIPs[1]: Invalid value: \"fd00:10:96::5\": provided IP is already allocated"), "{e}");
        assert!(err(svc("a", "  clusterIP: 'fd00:10:96::'\n"), &dual(false)).contains("not in the valid range"), "the network address");
        assert!(err(svc("a", "  clusterIP: 10.96.255.255\n"), &dual(false)).contains("not in the valid range"), "the IPv4 broadcast address");
        // A big IPv6 range is used up to its first 2^16 addresses, as upstream's bitmap.
        let big = Ranges::with_cidrs(vec![net("fd00:10:96::/64")]).unwrap();
        assert!(err(svc("a", "  clusterIP: 'fd00:10:96::1:0'\n"), &big).contains("not in the valid range"));
        let mut s = services(&format!("{}{}", svc("a", "  clusterIP: 'fd00:10:96::ffff'\n"), svc("b", "")));
        allocate(&mut s, &big).unwrap();
        assert!(upper_band("fd00:10:96::/64", &fields(&s)[1].0), "{:?}", fields(&s));
        // Defaulting errors are the allocator's, naming the Service.
        let e = err(svc("a", "  ipFamilyPolicy: RequireDualStack\n"), &Ranges::default());
        assert!(
            e.contains("Service shop/a: spec.ipFamilyPolicy: Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services"),
            "{e}"
        );
        let e = err(svc("a", "  clusterIP: 'fd00:10:96::5'\n"), &Ranges::default());
        assert!(e.contains("spec.clusterIPs[0]: Invalid value: []string{\"fd00:10:96::5\"}: IPv6 is not configured on this cluster"), "{e}");
    }

    #[test]
    fn headless_services_get_families_but_no_addresses() {
        let mut s = services(&format!("{}{}", svc("h", "  clusterIP: None\n"), svc("s", "  clusterIP: None\n  selector: {app: db}\n")));
        allocate(&mut s, &dual(true)).unwrap();
        let f = fields(&s);
        assert_eq!(f[0], ("None".into(), vec!["None".into()], vec!["IPv6".into(), "IPv4".into()]));
        assert_eq!(f[1], ("None".into(), vec!["None".into()], vec!["IPv6".into()]));
    }

    #[test]
    fn small_ranges_fall_back_to_the_lower_band_when_the_upper_is_full() {
        // A /27: offsets 16..31 are the upper band, 2..16 the lower (0 and 1 are never handed out).
        let ranges = Ranges::with_cidrs(vec![net("10.0.0.0/27")]).unwrap();
        let all: String = (0..29).map(|i| svc(&format!("s{i:02}"), "")).collect();
        let mut s = services(&all);
        allocate(&mut s, &ranges).unwrap();
        let offsets: BTreeSet<u128> = fields(&s).iter().map(|f| offset(&ranges.service_cidrs[0], f.0.parse().unwrap()).unwrap()).collect();
        assert_eq!(offsets, (2..31).collect(), "every address but the network, the first and the broadcast");
        let mut full = services(&format!("{all}{}", svc("z", "")));
        assert!(allocate(&mut full, &ranges).unwrap_err().to_string().contains("Service shop/z: spec.clusterIP: Internal error: range is full"));
        // A /28 has no static band at all.
        let mut s = services(&svc("a", ""));
        allocate(&mut s, &Ranges::with_cidrs(vec![net("10.0.0.0/28")]).unwrap()).unwrap();
    }
}
