//! ClusterIP and NodePort allocation the way the API server does it, but deterministic: a
//! Service without a ClusterIP gets one from the service CIDR, a NodePort/LoadBalancer port
//! without a `nodePort` gets one from 30000-32767. Like the API server (KEP-3070, KEP-3668),
//! dynamic allocation prefers the upper band of each range and leaves the lower band for
//! addresses and ports people choose; the first address is the `kubernetes` Service's.
//! Instead of a random pick, the start is a hash of `namespace/name`, then the next free one.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;

use crate::cluster::{Namespaced, stable_hash};
use crate::error::{ManifestError, ObjectRef};

/// The settings of the allocators.
#[derive(Clone, Debug)]
pub struct Ranges {
    /// The service CIDR (IPv4).
    pub service_cidr: Ipv4Net,
    /// First and last NodePort.
    pub node_ports: (u16, u16),
}

impl Default for Ranges {
    /// `10.96.0.0/16` and `30000-32767`, the conventions of kubeadm and kind.
    fn default() -> Self {
        Ranges { service_cidr: Ipv4Net::new(Ipv4Addr::new(10, 96, 0, 0), 16).unwrap_or_default(), node_ports: (30000, 32767) }
    }
}

impl Ranges {
    /// The defaults, with the service CIDR of the snapshot's first IPv4 ServiceCIDR if it has one.
    pub fn for_cluster(state: &crate::ClusterState) -> Ranges {
        let mut ranges = Ranges::default();
        if let Some(cidr) = state.service_cidrs.iter().find_map(|c| c.parse::<Ipv4Net>().ok()) {
            ranges.service_cidr = cidr.trunc();
        }
        ranges
    }
}

fn size(cidr: &Ipv4Net) -> u64 {
    1u64 << (32 - u32::from(cidr.prefix_len()))
}

fn nth(cidr: &Ipv4Net, i: u64) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()).wrapping_add(i as u32))
}

/// `min(max(16, size/16), 256)`: the lower band kept for chosen ClusterIPs.
fn ip_static_band(size: u64) -> u64 {
    (size / 16).clamp(16, 256)
}

/// `min(max(16, size/32), 128)`: the lower band kept for chosen NodePorts.
fn port_static_band(size: u64) -> u64 {
    (size / 32).clamp(16, 128)
}

fn fail(svc: &Namespaced<Service>, msg: String) -> ManifestError {
    ManifestError {
        location: svc.location.clone(),
        object: Some(ObjectRef { kind: "Service".into(), namespace: svc.namespace.clone(), name: svc.name.clone() }),
        messages: vec![msg],
    }
}

/// Fills in missing ClusterIPs and NodePorts; a chosen one that is taken or out of range is an
/// error naming the Service and field, as the API server's.
pub fn allocate(services: &mut [Namespaced<Service>], ranges: &Ranges) -> Result<(), ManifestError> {
    let cidr = ranges.service_cidr;
    // The network address and the first host are never handed out dynamically (the first is
    // the `kubernetes` Service's); chosen addresses are taken first, in order.
    let mut used_ips: BTreeSet<Ipv4Addr> = BTreeSet::from([nth(&cidr, 0), nth(&cidr, 1)]);
    let mut used_ports: BTreeSet<u16> = BTreeSet::new();
    for svc in services.iter() {
        let spec = svc.object.spec.clone().unwrap_or_default();
        if let Some(ip) = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty() && *ip != "None") {
            let parsed: IpAddr = ip.parse().map_err(|_| fail(svc, format!("spec.clusterIP: Invalid value: {ip:?}: must be a valid IP address")))?;
            if let IpAddr::V4(v4) = parsed {
                if !cidr.contains(&v4) {
                    return Err(fail(
                        svc,
                        format!("spec.clusterIP: Invalid value: {ip:?}: provided IP is not in the valid range. The range of valid IPs is {cidr}"),
                    ));
                }
                if !used_ips.insert(v4) && v4 != nth(&cidr, 1) {
                    return Err(fail(svc, format!("spec.clusterIP: Invalid value: {ip:?}: provided IP is already allocated")));
                }
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
        crate::defaults::service(&mut svc.object);
        let key = format!("{}/{}", svc.namespace, svc.name);
        let mut spec = svc.object.spec.clone().unwrap_or_default();
        let ty = spec.type_.clone().unwrap_or_else(|| "ClusterIP".into());
        if ty == "ExternalName" {
            continue;
        }
        if spec.cluster_ip.as_deref().is_none_or(str::is_empty) {
            let total = size(&cidr);
            let band = ip_static_band(total);
            let span = total - band - 1; // the upper band, without the broadcast address
            let start = stable_hash(key.as_bytes()) % span;
            let ip = (0..span)
                .map(|k| nth(&cidr, band + (start + k) % span))
                .find(|ip| !used_ips.contains(ip))
                .ok_or_else(|| fail(svc, "spec.clusterIP: Internal error: range is full".into()))?;
            used_ips.insert(ip);
            spec.cluster_ip = Some(ip.to_string());
            spec.cluster_ips = Some(vec![ip.to_string()]);
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
}
