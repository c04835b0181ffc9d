//! What a running lab remembers, under `/run/podnet/<lab>/`: the plan, each pod's address,
//! the lab process's pid, the CNI configs and leases.

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use model::{ClusterState, NamespaceInfo, Namespaced, PodInfo, Replicas};
use serde::{Deserialize, Serialize};

use crate::plan::LabPlan;

/// Where labs keep their state.
pub const STATE_ROOT: &str = "/run/podnet";

/// A running lab.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabState {
    /// The plan it was made from.
    pub plan: LabPlan,
    /// Each pod's address, in the plan's order (`None` until attached).
    pub pod_ips: Vec<Option<Ipv4Addr>>,
    /// Unix seconds when `up` finished.
    pub created: u64,
    /// The lab's Services, with their ClusterIPs and NodePorts allocated.
    #[serde(default)]
    pub services: Vec<Service>,
    /// EndpointSlices given in the manifests (for Services without a selector).
    #[serde(default)]
    pub given_slices: Vec<EndpointSlice>,
    /// Ingresses, IngressClasses and TLS Secrets, for the ingress controller.
    #[serde(default)]
    pub ingresses: Vec<k8s_openapi::api::networking::v1::Ingress>,
    /// See `ingresses`.
    #[serde(default)]
    pub ingress_classes: Vec<k8s_openapi::api::networking::v1::IngressClass>,
    /// See `ingresses`.
    #[serde(default)]
    pub secrets: Vec<k8s_openapi::api::core::v1::Secret>,
    /// Gateway API objects, for the same controller pods.
    #[serde(default)]
    pub gateway_classes: Vec<model::gateway_api::GatewayClass>,
    /// See `gateway_classes`.
    #[serde(default)]
    pub gateways: Vec<model::gateway_api::Gateway>,
    /// See `gateway_classes`.
    #[serde(default)]
    pub http_routes: Vec<model::gateway_api::HttpRoute>,
    /// See `gateway_classes`.
    #[serde(default)]
    pub reference_grants: Vec<model::gateway_api::ReferenceGrant>,
}

impl LabState {
    /// The lab as a model snapshot: its namespaces, pods (with their addresses, readiness and
    /// nodes), Services, given EndpointSlices and Service CIDR, for the planners that compute
    /// from one (EndpointSlices, the proxy, the DNS, the ingress controller).
    pub fn cluster_view(&self) -> ClusterState {
        let pods = self
            .plan
            .pods
            .iter()
            .zip(&self.pod_ips)
            .map(|(p, ip)| PodInfo {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                kind: "Pod".into(),
                labels: p.labels.clone(),
                ports: p.ports.clone(),
                ips: ip.iter().map(|i| std::net::IpAddr::V4(*i)).collect(),
                host_network: p.host_network,
                node_name: Some(p.node.clone()),
                ready: Some(p.ready),
                terminating: p.terminating,
                terminal: false,
                hostname: p.hostname.clone(),
                subdomain: p.subdomain.clone(),
                dns_policy: p.dns_policy.clone(),
                dns_config: p.dns_config.clone(),
                replicas: Replicas::Pod,
                template_hash: None,
                location: Default::default(),
            })
            .collect();
        let services: Vec<Namespaced<Service>> = self.services.iter().cloned().map(Namespaced::from_object).collect();
        // Every namespace in use, and the two every cluster has.
        let mut names: Vec<&str> = self.plan.pods.iter().map(|p| p.namespace.as_str()).chain(services.iter().map(|s| s.namespace.as_str())).collect();
        names.extend(["default", crate::system::SYSTEM_NAMESPACE]);
        names.sort_unstable();
        names.dedup();
        ClusterState {
            namespaces: names.into_iter().map(|n| NamespaceInfo::named(n, true)).collect(),
            pods,
            services,
            endpoint_slices: self.given_slices.iter().cloned().map(Namespaced::from_object).collect(),
            service_cidrs: vec![model::allocate::Ranges::default().service_cidr.to_string()],
            ..Default::default()
        }
    }

    /// The EndpointSlices of the lab: computed for Services with a selector, given for the rest.
    pub fn endpoint_slices(&self) -> Vec<EndpointSlice> {
        let mut slices = model::endpoints::compute(&self.cluster_view(), |p| p.ready.unwrap_or(true));
        slices.extend(self.given_slices.iter().cloned());
        slices
    }
}

/// `/run/podnet/<lab>`
pub fn dir(lab: &str) -> PathBuf {
    PathBuf::from(STATE_ROOT).join(lab)
}

/// `/run/podnet/<lab>/state.json`
pub fn state_file(lab: &str) -> PathBuf {
    dir(lab).join("state.json")
}

/// The lab process's pid file.
pub fn pid_file(lab: &str) -> PathBuf {
    dir(lab).join("lab.pid")
}

/// Saves the state atomically (write, then rename).
pub fn save(state: &LabState) -> io::Result<()> {
    let lab = &state.plan.config.name;
    let tmp = dir(lab).join("state.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state).map_err(io::Error::other)?)?;
    std::fs::rename(tmp, state_file(lab))
}

/// Loads a lab's state.
pub fn load(lab: &str) -> io::Result<LabState> {
    let text = std::fs::read(state_file(lab)).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            io::Error::new(io::ErrorKind::NotFound, format!("no lab named {lab:?} is up (see `podnet lab list`)"))
        } else {
            e
        }
    })?;
    serde_json::from_slice(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", state_file(lab).display())))
}

/// Names of the labs that have a state directory, sorted.
pub fn list() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(STATE_ROOT)
        .map(|d| d.filter_map(Result::ok).filter(|e| e.path().is_dir()).filter_map(|e| e.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// The lab a command means: `--name` if given, else the only one up, else `podnet`.
pub fn resolve_name(given: Option<&str>) -> String {
    if let Some(n) = given {
        return n.to_owned();
    }
    match list().as_slice() {
        [only] => only.clone(),
        _ => "podnet".to_owned(),
    }
}
