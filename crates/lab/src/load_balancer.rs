//! LoadBalancer addresses for the lab, as MetalLB or cloud-provider-kind would hand them out:
//! each `type: LoadBalancer` Service gets, for each of its families that has a pool and no
//! ingress address yet, the lowest free address of that pool in `status.loadBalancer.ingress`.
//! The lab process then routes each one from the external host to a node (see `service_proxy`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Service, ServiceStatus};

/// The IPv4 pool: outside the underlay, routed to the nodes by the lab.
pub fn pool() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(172, 18, 255, 0), 24).unwrap_or_default()
}

/// The IPv6 pool (labs whose pods have IPv6): the IPv4 pool's twin, `fd00:172:18:ff::/120`.
pub fn pool6() -> Ipv6Net {
    Ipv6Net::new(Ipv6Addr::new(0xfd00, 0x172, 0x18, 0xff, 0, 0, 0, 0), 120).unwrap_or_default()
}

fn ingress_ips(svc: &Service) -> impl Iterator<Item = IpAddr> + '_ {
    svc.status.iter().flat_map(|s| s.load_balancer.iter()).flat_map(|lb| lb.ingress.iter().flatten()).filter_map(|i| i.ip.as_deref()?.parse().ok())
}

/// The pool's addresses, lowest first (an IPv4 pool's network and broadcast addresses left out).
fn addresses(pool: IpNet) -> Box<dyn Iterator<Item = IpAddr>> {
    match pool {
        IpNet::V4(v4) => Box::new(v4.hosts().map(IpAddr::V4)),
        IpNet::V6(v6) => Box::new(v6.hosts().skip(1).map(IpAddr::V6)),
    }
}

/// Gives every LoadBalancer Service an address of each of its families (`spec.ipFamilies`) from
/// the pool of that family in `pools`, in the order given. Addresses a Service already has are
/// kept; a full pool, or none of a family, leaves it without, as MetalLB does.
pub fn assign(services: &mut [Service], pools: &[IpNet]) {
    let mut used: std::collections::BTreeSet<IpAddr> = services.iter().flat_map(ingress_ips).collect();
    for svc in services.iter_mut() {
        let is_lb = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
        if !is_lb {
            continue;
        }
        let families = svc.spec.as_ref().and_then(|s| s.ip_families.clone()).unwrap_or_else(|| vec!["IPv4".into()]);
        let mut ingress: Vec<LoadBalancerIngress> =
            svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|lb| lb.ingress.clone()).unwrap_or_default();
        for family in &families {
            let v6 = family == "IPv6";
            if ingress_ips(svc).any(|ip| ip.is_ipv6() == v6) {
                continue;
            }
            let Some(pool) = pools.iter().find(|p| p.addr().is_ipv6() == v6) else { continue };
            let Some(ip) = addresses(*pool).find(|ip| !used.contains(ip)) else { continue };
            used.insert(ip);
            ingress.push(LoadBalancerIngress { ip: Some(ip.to_string()), ip_mode: Some("VIP".into()), ..Default::default() });
        }
        if !ingress.is_empty() {
            svc.status = Some(ServiceStatus { load_balancer: Some(LoadBalancerStatus { ingress: Some(ingress) }), ..Default::default() });
        }
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
        let v4 = |d: u8| Some(IpAddr::V4(Ipv4Addr::new(172, 18, 255, d)));
        let mut s = vec![svc("LoadBalancer", None), svc("ClusterIP", None), svc("LoadBalancer", Some("172.18.255.1")), svc("LoadBalancer", None)];
        assign(&mut s, &[IpNet::V4(pool())]);
        let ips: Vec<Option<IpAddr>> = s.iter().map(|x| ingress_ips(x).next()).collect();
        assert_eq!(ips, [v4(2), None, v4(1), v4(3)]);
        // A full pool leaves the rest pending.
        let mut s = vec![svc("LoadBalancer", None), svc("LoadBalancer", None)];
        assign(&mut s, &["10.0.0.0/31".parse().unwrap()]);
        assert_eq!(s.iter().filter(|x| ingress_ips(x).next().is_some()).count(), 2, "/31 has two hosts");
        let mut s = vec![svc("LoadBalancer", None), svc("LoadBalancer", None)];
        assign(&mut s, &["10.0.0.0/32".parse().unwrap()]);
        assert_eq!(s.iter().filter(|x| ingress_ips(x).next().is_some()).count(), 1);
        // An address per family of the Service that has a pool: an IPv6-only Service gets none
        // from an IPv4 pool; a dual-stack one gets one of each (its primary family first).
        let mut s = vec![svc("LoadBalancer", None), svc("LoadBalancer", None)];
        s[0].spec.as_mut().unwrap().ip_families = Some(vec!["IPv6".into()]);
        s[1].spec.as_mut().unwrap().ip_families = Some(vec!["IPv6".into(), "IPv4".into()]);
        assign(&mut s, &[IpNet::V4(pool())]);
        assert_eq!(s.iter().map(|x| ingress_ips(x).collect::<Vec<_>>()).collect::<Vec<_>>(), [vec![], vec![v4(1).unwrap()]]);
        assign(&mut s, &[IpNet::V4(pool()), IpNet::V6(pool6())]);
        let six = |n: u16| IpAddr::V6(Ipv6Addr::new(0xfd00, 0x172, 0x18, 0xff, 0, 0, 0, n));
        assert_eq!(s.iter().map(|x| ingress_ips(x).collect::<Vec<_>>()).collect::<Vec<_>>(), [vec![six(1)], vec![v4(1).unwrap(), six(2)]]);
    }
}
