//! Service ports and their endpoints as the proxy sees them (kube-proxy's `ServicePort` and
//! endpoints-from-slices), from a snapshot. Headless, ExternalName and Services with a
//! `service.kubernetes.io/service-proxy-name` label are not the proxy's.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use model::{ClusterState, Protocol};

use crate::topology::{Endpoint, Policies};

/// The label that hands a Service to another proxy.
pub const LABEL_SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";

/// One port of one Service (one family).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// Namespace.
    pub namespace: String,
    /// Service name.
    pub service: String,
    /// The port's name (may be empty).
    pub port_name: String,
    /// Protocol.
    pub protocol: Protocol,
    /// The Service port.
    pub port: u16,
    /// ClusterIPs of the Service.
    pub cluster_ips: Vec<IpAddr>,
    /// The NodePort, if any.
    pub node_port: Option<u16>,
    /// `externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// LoadBalancer ingress IPs (`status.loadBalancer.ingress[].ip`, not `ipMode: Proxy`).
    pub load_balancer_ips: Vec<IpAddr>,
    /// `loadBalancerSourceRanges`.
    pub load_balancer_source_ranges: Vec<String>,
    /// Session affinity ClientIP timeout, in seconds (`None`: no affinity).
    pub affinity_timeout: Option<u32>,
    /// Traffic policies.
    pub policies: Policies,
}

/// kube-proxy's name of a Service port (`ServicePortName`): `namespace/name:port`, or
/// `namespace/name` for an unnamed port.
impl std::fmt::Display for ServicePort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.service)?;
        if !self.port_name.is_empty() {
            write!(f, ":{}", self.port_name)?;
        }
        Ok(())
    }
}

impl ServicePort {
    /// kube-proxy's firewall for this port's load balancer IPs: `None` without source ranges,
    /// else the sources it lets in — the ranges, and when one holds an address of the node,
    /// the load balancer IPs themselves (a node reaching its own VIP comes from it).
    pub fn firewall_sources(&self, node_ips: &[IpAddr]) -> Option<Vec<ipnet::IpNet>> {
        if self.load_balancer_source_ranges.is_empty() {
            return None;
        }
        let mut allowed: Vec<ipnet::IpNet> =
            self.load_balancer_source_ranges.iter().filter_map(|r| r.trim().parse::<ipnet::IpNet>().ok()).map(|n| n.trunc()).collect();
        if allowed.iter().any(|r| node_ips.iter().any(|ip| r.contains(ip))) {
            allowed.extend(self.load_balancer_ips.iter().map(|ip| ipnet::IpNet::from(*ip)));
        }
        Some(allowed)
    }

    /// `ns/name:port-name` (kube-proxy's ServicePortName).
    pub fn key(&self) -> String {
        format!("{}/{}:{}", self.namespace, self.service, self.port_name)
    }
}

fn parse_ips(list: Option<&Vec<String>>) -> Vec<IpAddr> {
    list.into_iter().flatten().filter_map(|s| s.parse().ok()).collect()
}

/// The proxy's service ports, in namespace, name and port order.
pub fn service_ports(state: &ClusterState) -> Vec<ServicePort> {
    let mut out = Vec::new();
    for svc in &state.services {
        out.extend(ports_of(&svc.object));
    }
    out
}

/// The proxy's ports of one Service (none for headless, ExternalName and other proxies' Services).
pub fn ports_of(svc: &Service) -> Vec<ServicePort> {
    let spec = svc.spec.clone().unwrap_or_default();
    let labels = svc.metadata.labels.clone().unwrap_or_default();
    if labels.contains_key(LABEL_SERVICE_PROXY_NAME) || spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let mut cluster_ips = parse_ips(spec.cluster_ips.as_ref());
    if cluster_ips.is_empty() {
        cluster_ips = spec.cluster_ip.iter().filter_map(|s| s.parse().ok()).collect();
    }
    if cluster_ips.is_empty() {
        return Vec::new(); // headless (or not allocated)
    }
    let external_ips = parse_ips(spec.external_ips.as_ref());
    let load_balancer_ips: Vec<IpAddr> = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect();
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(10_800)
    });
    let is_lb = spec.type_.as_deref() == Some("LoadBalancer");
    spec.ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let node_port = p.node_port.and_then(|n| u16::try_from(n).ok()).filter(|n| *n != 0);
            Some(ServicePort {
                namespace: svc.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
                service: svc.metadata.name.clone().unwrap_or_default(),
                port_name: p.name.clone().unwrap_or_default(),
                protocol: p.protocol.as_deref().unwrap_or("TCP").parse().ok()?,
                port: u16::try_from(p.port).ok()?,
                cluster_ips: cluster_ips.clone(),
                node_port,
                external_ips: external_ips.clone(),
                load_balancer_ips: if is_lb { load_balancer_ips.clone() } else { Vec::new() },
                load_balancer_source_ranges: spec.load_balancer_source_ranges.clone().unwrap_or_default(),
                affinity_timeout,
                policies: Policies {
                    internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
                    external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
                    externally_accessible: node_port.is_some() || !external_ips.is_empty() || (is_lb && !load_balancer_ips.is_empty()),
                },
            })
        })
        .collect()
}

/// The endpoints of a service port, from the slices labelled with its Service, as seen on `node`
/// (absent conditions mean ready, and serving as ready, as kube-proxy reads them).
pub fn endpoints_for<'a>(port: &ServicePort, slices: impl IntoIterator<Item = &'a EndpointSlice>, node: &str) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = Vec::new();
    for slice in slices {
        if slice.metadata.namespace.as_deref().unwrap_or("default") != port.namespace
            || slice.metadata.labels.as_ref().and_then(|l| l.get(model::endpoints::LABEL_SERVICE_NAME)) != Some(&port.service)
        {
            continue;
        }
        let Some(target) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.clone().unwrap_or_default() == port.port_name && p.protocol.as_deref().unwrap_or("TCP") == port.protocol.as_str())
        else {
            continue;
        };
        let Some(target_port) = target.port.filter(|p| *p != 0) else {
            continue;
        };
        for e in &slice.endpoints {
            let c = e.conditions.clone().unwrap_or_default();
            let ready = c.ready.unwrap_or(true);
            let hints = e.hints.clone().unwrap_or_default();
            // kube-proxy uses an endpoint's first address only (the others are fungible).
            let Some(a) = e.addresses.first() else {
                continue;
            };
            let addr = match a.parse::<IpAddr>() {
                Ok(IpAddr::V6(v6)) => format!("[{v6}]:{target_port}"),
                Ok(IpAddr::V4(v4)) => format!("{v4}:{target_port}"),
                Err(_) => continue,
            };
            let endpoint = Endpoint {
                addr,
                local: e.node_name.as_deref() == Some(node),
                ready,
                // kube-proxy's cache reads an absent condition as true (serving) or false
                // (terminating), as the API's comments say.
                serving: c.serving.unwrap_or(true),
                terminating: c.terminating.unwrap_or(false),
                zone_hints: hints.for_zones.iter().flatten().map(|z| z.name.clone()).collect::<BTreeSet<_>>(),
                node_hints: hints.for_nodes.iter().flatten().map(|n| n.name.clone()).collect::<BTreeSet<_>>(),
            };
            // The same address twice (a pod moving between slices, or a pod's IP reused while
            // the old pod still terminates) counts once, as the running endpoint: ready, then
            // serving, then not terminating, wherever it runs; only then a local one (kube-proxy
            // after kubernetes#135593: a ghost pod on this node must not hide the live one).
            let rank = |e: &Endpoint| (e.ready, e.serving, !e.terminating, e.local);
            match out.iter_mut().find(|o| o.addr == endpoint.addr) {
                Some(o) if rank(&endpoint) > rank(o) => *o = endpoint,
                Some(_) => {}
                None => out.push(endpoint),
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(yaml: &str) -> ClusterState {
        ClusterState::from_objects(&model::load_str(yaml, std::path::Path::new("t.yaml")).unwrap()).unwrap()
    }

    const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  type: NodePort\n  clusterIP: 10.96.0.20\n  externalTrafficPolicy: Local\n  sessionAffinity: ClientIP\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: 8080, nodePort: 30080}\n  - {name: dns, port: 53, protocol: UDP}\n";

    #[test]
    fn service_ports_carry_addresses_policies_and_affinity() {
        let ports = service_ports(&state(SVC));
        assert_eq!(ports.len(), 2);
        let http = &ports[0];
        assert_eq!((http.key().as_str(), http.port, http.node_port), ("shop/web:http", 80, Some(30080)));
        assert_eq!(http.cluster_ips, ["10.96.0.20".parse::<IpAddr>().unwrap()]);
        assert!(http.policies.external_local && http.policies.externally_accessible);
        assert_eq!(http.affinity_timeout, Some(10_800));
        assert_eq!(ports[1].protocol, Protocol::Udp);
    }

    #[test]
    fn headless_external_name_and_other_proxies_services_are_not_ours() {
        let s = state(
            "apiVersion: v1\nkind: Service\nmetadata: {name: h, namespace: x}\nspec: {clusterIP: None, ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: e, namespace: x}\nspec: {type: ExternalName, externalName: a.example}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: o, namespace: x, labels: {service.kubernetes.io/service-proxy-name: other}}\nspec: {clusterIP: 10.96.0.5, ports: [{port: 80}]}\n",
        );
        assert!(service_ports(&s).is_empty());
    }

    #[test]
    fn endpoints_come_from_the_services_slices_by_port_name() {
        let s = state(&format!(
            "{SVC}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: a, namespace: shop, labels: {{app: web}}}}\nspec: {{nodeName: node-1, containers: [{{name: c, ports: [{{containerPort: 8080}}]}}]}}\nstatus: {{podIP: 10.244.0.2}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: b, namespace: shop, labels: {{app: web}}}}\nspec: {{nodeName: node-2, containers: []}}\nstatus: {{podIP: 10.244.1.2, conditions: [{{type: Ready, status: 'False'}}]}}\n"
        ));
        let slices = model::endpoints::compute(&s, |p| p.ready.unwrap_or(true));
        let ports = service_ports(&s);
        let eps = endpoints_for(&ports[0], &slices, "node-1");
        let got: Vec<(&str, bool, bool)> = eps.iter().map(|e| (e.addr.as_str(), e.local, e.ready)).collect();
        assert_eq!(got, [("10.244.0.2:8080", true, true), ("10.244.1.2:8080", false, false)]);
    }
}
