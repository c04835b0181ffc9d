//! The ingress controller's status writer, as ingress-nginx's: the addresses it is reached at
//! (`--publish-service`, `--publish-status-address`) go into `status.loadBalancer` of every
//! Ingress it serves, written by the elected leader only, and only where they differ.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use kube::Api;
use kube::api::{Patch, PatchParams};
use model::ClusterState;
use serde_json::json;

/// Where the controller says it is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Publish {
    /// `--publish-status-address`: these addresses (IPs, or host names).
    Addresses(Vec<String>),
    /// `--publish-service ns/name`: that Service's addresses.
    Service { namespace: String, name: String },
}

impl std::str::FromStr for Publish {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('/') {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Publish::Service { namespace: namespace.to_owned(), name: name.to_owned() })
            }
            _ => Err(format!("{s:?}: expected NAMESPACE/NAME")),
        }
    }
}

fn entry(address: &str) -> IngressLoadBalancerIngress {
    if address.parse::<std::net::IpAddr>().is_ok() {
        IngressLoadBalancerIngress { ip: Some(address.to_owned()), ..Default::default() }
    } else {
        IngressLoadBalancerIngress { hostname: Some(address.to_owned()), ..Default::default() }
    }
}

/// The addresses of a published Service, as ingress-nginx reads them: a LoadBalancer's ingress
/// addresses and external IPs, an ExternalName's name, else its external IPs or ClusterIP.
fn service_addresses(svc: &Service) -> Vec<String> {
    let spec = svc.spec.clone().unwrap_or_default();
    let external = spec.external_ips.clone().unwrap_or_default();
    match spec.type_.as_deref() {
        Some("ExternalName") => spec.external_name.into_iter().collect(),
        Some("LoadBalancer") => {
            let lb = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.clone()).unwrap_or_default();
            lb.into_iter().filter_map(|i| i.ip.or(i.hostname)).chain(external).collect()
        }
        _ if !external.is_empty() => external,
        _ => spec.cluster_ip.into_iter().filter(|ip| ip != "None").collect(),
    }
}

/// The `status.loadBalancer.ingress` list to publish (sorted, as ingress-nginx sorts it).
pub fn published(publish: &Publish, services: &[std::sync::Arc<Service>]) -> Vec<IngressLoadBalancerIngress> {
    let mut addresses = match publish {
        Publish::Addresses(a) => a.clone(),
        Publish::Service { namespace, name } => services
            .iter()
            .find(|s| s.metadata.namespace.as_deref() == Some(namespace.as_str()) && s.metadata.name.as_deref() == Some(name.as_str()))
            .map(|s| service_addresses(s))
            .unwrap_or_default(),
    };
    addresses.sort();
    addresses.dedup();
    addresses.iter().map(|a| entry(a)).collect()
}

/// Writes `addresses` into every Ingress this controller serves whose status differs; how many
/// were written.
pub async fn write(
    client: &kube::Client,
    state: &ClusterState,
    controller: gateway::ingress::Controller<'_>,
    addresses: &[IngressLoadBalancerIngress],
) -> usize {
    let mut written = 0;
    for ing in &state.ingresses {
        if gateway::ingress::selected(state, controller, ing).is_err() {
            continue;
        }
        let current = ing.object.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.clone()).unwrap_or_default();
        if current == addresses {
            continue;
        }
        let api: Api<Ingress> = Api::namespaced(client.clone(), &ing.namespace);
        let patch = json!({"status": {"loadBalancer": {"ingress": addresses}}});
        match api.patch_status(&ing.name, &PatchParams::default(), &Patch::Merge(patch)).await {
            Ok(_) => written += 1,
            Err(e) => eprintln!("podnet gateway: Ingress {}/{}: writing its status: {e}", ing.namespace, ing.name),
        }
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(yaml: &str) -> std::sync::Arc<Service> {
        std::sync::Arc::new(serde_norway::from_str(yaml).unwrap())
    }

    #[test]
    fn a_published_service_gives_its_addresses_as_ingress_nginx_reads_them() {
        let lb = service(
            "metadata: {name: c, namespace: ingress-nginx}\nspec: {type: LoadBalancer, clusterIP: 10.96.0.5, externalIPs: [192.0.2.9]}\nstatus: {loadBalancer: {ingress: [{ip: 172.18.255.200}, {hostname: lb.example}]}}",
        );
        let cip = service("metadata: {name: d, namespace: ingress-nginx}\nspec: {type: ClusterIP, clusterIP: 10.96.0.6}");
        let all = [lb, cip];
        let names = |p: &Publish| published(p, &all).into_iter().map(|i| i.ip.or(i.hostname).unwrap()).collect::<Vec<_>>();
        assert_eq!(names(&"ingress-nginx/c".parse().unwrap()), ["172.18.255.200", "192.0.2.9", "lb.example"]);
        assert_eq!(names(&"ingress-nginx/d".parse().unwrap()), ["10.96.0.6"]);
        assert!(names(&"ingress-nginx/missing".parse().unwrap()).is_empty());
        let given = Publish::Addresses(vec!["ingress.example".into(), "10.0.0.1".into(), "10.0.0.1".into()]);
        let p = published(&given, &all);
        assert_eq!((p[0].ip.as_deref(), p[1].hostname.as_deref(), p.len()), (Some("10.0.0.1"), Some("ingress.example"), 2));
        assert!("no-slash".parse::<Publish>().is_err());
    }
}
