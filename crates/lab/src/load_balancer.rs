//! LoadBalancer addresses for the lab, as MetalLB or cloud-provider-kind would hand them out:
//! each `type: LoadBalancer` Service without an ingress address gets the lowest free address of
//! the pool in `status.loadBalancer.ingress`. The lab process then routes each one from the
//! external host to a node (see `service_proxy`).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Service, ServiceStatus};

/// The pool: outside the underlay, routed to the nodes by the lab.
pub fn pool() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(172, 18, 255, 0), 24).unwrap_or_default()
}

fn ingress_ips(svc: &Service) -> impl Iterator<Item = Ipv4Addr> + '_ {
    svc.status.iter().flat_map(|s| s.load_balancer.iter()).flat_map(|lb| lb.ingress.iter().flatten()).filter_map(|i| i.ip.as_deref()?.parse().ok())
}

/// Gives every LoadBalancer Service without an address one from `pool` (in the order given).
/// Addresses a Service already has are kept; a full pool leaves the rest pending, as MetalLB does,
/// and so does an IPv6-only Service (the pool is IPv4: MetalLB gives a Service addresses of its
/// own families only).
pub fn assign(services: &mut [Service], pool: Ipv4Net) {
    let mut used: std::collections::BTreeSet<Ipv4Addr> = services.iter().flat_map(ingress_ips).collect();
    for svc in services.iter_mut() {
        let is_lb = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
        let ipv4 = svc.spec.as_ref().and_then(|s| s.ip_families.as_ref()).is_none_or(|f| f.iter().any(|f| f == "IPv4"));
        if !is_lb || !ipv4 || ingress_ips(svc).next().is_some() {
            continue;
        }
        let Some(ip) = pool.hosts().find(|ip| !used.contains(ip)) else {
            continue;
        };
        used.insert(ip);
        svc.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress { ip: Some(ip.to_string()), ip_mode: Some("VIP".into()), ..Default::default() }]),
            }),
            ..Default::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServiceSpec;

    fn svc(kind: &str, ip: Option<&str>) -> Service {
        let mut s = Service { spec: Some(ServiceSpec { type_: Some(kind.into()), ..Default::default() }), ..Default::default() };
        if let Some(ip) = ip {
            s.status = Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus { ingress: Some(vec![LoadBalancerIngress { ip: Some(ip.into()), ..Default::default() }]) }),
                ..Default::default()
            });
        }
        s
    }

    #[test]
    fn load_balancers_get_the_lowest_free_address_and_keep_theirs() {
        let mut s = vec![svc("LoadBalancer", None), svc("ClusterIP", None), svc("LoadBalancer", Some("172.18.255.1")), svc("LoadBalancer", None)];
        assign(&mut s, pool());
        let ips: Vec<Option<Ipv4Addr>> = s.iter().map(|x| ingress_ips(x).next()).collect();
        assert_eq!(ips, [Some(Ipv4Addr::new(172, 18, 255, 2)), None, Some(Ipv4Addr::new(172, 18, 255, 1)), Some(Ipv4Addr::new(172, 18, 255, 3))]);
        // A full pool leaves the rest pending.
        let mut s = vec![svc("LoadBalancer", None), svc("LoadBalancer", None)];
        assign(&mut s, Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 31).unwrap());
        assert_eq!(s.iter().filter(|x| ingress_ips(x).next().is_some()).count(), 2, "/31 has two hosts");
        let mut s = vec![svc("LoadBalancer", None), svc("LoadBalancer", None)];
        assign(&mut s, Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 32).unwrap());
        assert_eq!(s.iter().filter(|x| ingress_ips(x).next().is_some()).count(), 1);
        // An IPv6-only Service gets nothing from an IPv4 pool; a dual-stack one does.
        let mut s = vec![svc("LoadBalancer", None), svc("LoadBalancer", None)];
        s[0].spec.as_mut().unwrap().ip_families = Some(vec!["IPv6".into()]);
        s[1].spec.as_mut().unwrap().ip_families = Some(vec!["IPv6".into(), "IPv4".into()]);
        assign(&mut s, pool());
        assert_eq!(s.iter().map(|x| ingress_ips(x).next()).collect::<Vec<_>>(), [None, Some(Ipv4Addr::new(172, 18, 255, 1))]);
    }
}
