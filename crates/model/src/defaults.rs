//! The fields the API server fills in on a Service it stores, so that what podnet prints and
//! plans from is the object `kubectl get -o yaml` would show: the defaults of
//! `pkg/apis/core/v1/defaults.go` (`SetDefaults_Service`) and the IP family fields the Service
//! registry infers (`initIPFamilyFields`) on a single-stack IPv4 cluster, like the lab.

use k8s_openapi::api::core::v1::{ClientIPConfig, LoadBalancerStatus, Service, ServiceSpec, ServiceStatus, SessionAffinityConfig};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// `v1.DefaultClientIPServiceAffinitySeconds`: three hours.
pub const CLIENT_IP_AFFINITY_SECONDS: i32 = 10_800;

/// Fills in what the API server defaults on create. Idempotent: a stored Service stays as it is.
pub fn service(svc: &mut Service) {
    let spec = svc.spec.get_or_insert_with(ServiceSpec::default);
    let ty = spec.type_.get_or_insert_with(|| "ClusterIP".into()).clone();
    let affinity = spec.session_affinity.get_or_insert_with(|| "None".into()).clone();
    if affinity == "None" {
        spec.session_affinity_config = None;
    } else if affinity == "ClientIP" && spec.session_affinity_config.as_ref().and_then(|c| c.client_ip.as_ref()).and_then(|c| c.timeout_seconds).is_none() {
        spec.session_affinity_config = Some(SessionAffinityConfig { client_ip: Some(ClientIPConfig { timeout_seconds: Some(CLIENT_IP_AFFINITY_SECONDS) }) });
    }
    for port in spec.ports.iter_mut().flatten() {
        port.protocol.get_or_insert_with(|| "TCP".into());
        if matches!(&port.target_port, None | Some(IntOrString::Int(0))) || matches!(&port.target_port, Some(IntOrString::String(s)) if s.is_empty()) {
            port.target_port = Some(IntOrString::Int(port.port));
        }
    }
    let externally_accessible = ty == "NodePort" || ty == "LoadBalancer" || (ty == "ClusterIP" && spec.external_ips.as_ref().is_some_and(|e| !e.is_empty()));
    if externally_accessible {
        spec.external_traffic_policy.get_or_insert_with(|| "Cluster".into());
    }
    if matches!(ty.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer") {
        spec.internal_traffic_policy.get_or_insert_with(|| "Cluster".into());
    }
    if ty == "LoadBalancer" {
        spec.allocate_load_balancer_node_ports.get_or_insert(true);
    }
    if ty != "ExternalName" {
        ip_families(spec);
    }
    let status = svc.status.get_or_insert_with(ServiceStatus::default);
    let lb = status.load_balancer.get_or_insert_with(LoadBalancerStatus::default);
    for ingress in lb.ingress.iter_mut().flatten() {
        if ingress.ip.is_some() && ingress.ip_mode.is_none() {
            ingress.ip_mode = Some("VIP".into());
        }
    }
}

/// `initIPFamilyFields` for a cluster whose only service family is IPv4: a policy when none
/// is given (headless without a selector asks for both families, everything else one),
/// families inferred from the ClusterIPs given, else the cluster's.
fn ip_families(spec: &mut ServiceSpec) {
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let selectorless = spec.selector.as_ref().is_none_or(|s| s.is_empty());
    let policy = spec.ip_family_policy.get_or_insert_with(|| if headless && selectorless { "RequireDualStack".into() } else { "SingleStack".into() }).clone();
    // The v1 conversion: `clusterIP` alone is `clusterIPs[0]`.
    if let Some(ip) = spec.cluster_ip.clone().filter(|ip| !ip.is_empty())
        && spec.cluster_ips.as_ref().is_none_or(|c| c.is_empty())
    {
        spec.cluster_ips = Some(vec![ip]);
    }
    let families = spec.ip_families.get_or_insert_with(Vec::new);
    for ip in spec.cluster_ips.iter().flatten().skip(families.len()) {
        match ip.parse::<std::net::IpAddr>() {
            Ok(a) => families.push(if a.is_ipv6() { "IPv6" } else { "IPv4" }.into()),
            Err(_) => break,
        }
    }
    if families.is_empty() {
        families.push("IPv4".into());
    }
    // Headless and selectorless: the other family too, unless asked for one only.
    if headless && selectorless && families.len() < 2 && policy != "SingleStack" {
        let other = if families[0] == "IPv4" { "IPv6" } else { "IPv4" };
        families.push(other.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaulted(yaml: &str) -> serde_json::Value {
        let mut svc: Service = serde_norway::from_str(yaml).unwrap();
        service(&mut svc);
        let once = serde_json::to_value(&svc).unwrap();
        service(&mut svc);
        assert_eq!(serde_json::to_value(&svc).unwrap(), once, "defaulting twice changes nothing");
        once
    }

    #[test]
    fn a_cluster_ip_service_gets_the_api_servers_defaults() {
        let v = defaulted(
            "metadata: {name: web}\nspec: {clusterIP: 10.96.0.20, clusterIPs: [10.96.0.20], selector: {app: web}, ports: [{port: 80}, {port: 53, protocol: UDP, targetPort: dns}]}\n",
        );
        let spec = &v["spec"];
        assert_eq!(spec["type"], "ClusterIP");
        assert_eq!(spec["sessionAffinity"], "None");
        assert_eq!(spec["internalTrafficPolicy"], "Cluster");
        assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
        assert_eq!(spec["ipFamilies"], serde_json::json!(["IPv4"]));
        assert_eq!(spec["ports"][0], serde_json::json!({"port": 80, "protocol": "TCP", "targetPort": 80}));
        assert_eq!(spec["ports"][1]["targetPort"], "dns");
        assert!(spec.get("externalTrafficPolicy").is_none(), "not externally accessible");
        assert_eq!(v["status"], serde_json::json!({"loadBalancer": {}}));
    }

    #[test]
    fn external_services_get_traffic_policies_and_node_port_allocation() {
        let v = defaulted(
            "metadata: {name: lb}\nspec: {type: LoadBalancer, sessionAffinity: ClientIP, ports: [{port: 80}]}\nstatus: {loadBalancer: {ingress: [{ip: 192.0.2.1}]}}\n",
        );
        assert_eq!(v["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(v["spec"]["allocateLoadBalancerNodePorts"], true);
        assert_eq!(v["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"], 10800);
        assert_eq!(v["status"]["loadBalancer"]["ingress"][0]["ipMode"], "VIP");
        let v = defaulted("metadata: {name: e}\nspec: {externalIPs: [192.0.2.9], ports: [{port: 80}]}\n");
        assert_eq!(v["spec"]["externalTrafficPolicy"], "Cluster", "a ClusterIP Service with externalIPs is externally accessible");
    }

    #[test]
    fn headless_and_external_name_services() {
        let v = defaulted("metadata: {name: h}\nspec: {clusterIP: None, ports: [{port: 80}]}\n");
        assert_eq!(v["spec"]["ipFamilyPolicy"], "RequireDualStack", "headless without a selector");
        assert_eq!(v["spec"]["ipFamilies"], serde_json::json!(["IPv4", "IPv6"]));
        assert_eq!(v["spec"]["clusterIPs"], serde_json::json!(["None"]));
        let v = defaulted("metadata: {name: h}\nspec: {clusterIP: None, selector: {app: db}, ports: [{port: 80}]}\n");
        assert_eq!((&v["spec"]["ipFamilyPolicy"], &v["spec"]["ipFamilies"]), (&serde_json::json!("SingleStack"), &serde_json::json!(["IPv4"])));
        let v = defaulted("metadata: {name: x}\nspec: {type: ExternalName, externalName: example.com}\n");
        assert!(v["spec"].get("ipFamilies").is_none() && v["spec"].get("internalTrafficPolicy").is_none());
        assert_eq!(v["spec"]["sessionAffinity"], "None");
        let v = defaulted("metadata: {name: d}\nspec: {clusterIPs: [10.96.0.5, 'fd00::5'], ipFamilyPolicy: PreferDualStack, ports: [{port: 80}]}\n");
        assert_eq!(v["spec"]["ipFamilies"], serde_json::json!(["IPv4", "IPv6"]), "families follow the ClusterIPs given");
    }
}
