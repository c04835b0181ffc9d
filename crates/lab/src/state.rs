//! What a running lab remembers, under `/run/podnet/<lab>/`: the plan, each pod's address,
//! the lab process's pid, the CNI configs and leases.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use model::{ClusterState, NamespaceInfo, Namespaced, PodInfo, PolicyObject, Replicas};
use serde::{Deserialize, Serialize};

use crate::name::LabName;
use crate::plan::LabPlan;

pub use crate::name::STATE_ROOT;

/// A running lab.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabState {
    /// The plan it was made from.
    pub plan: LabPlan,
    /// Each pod's address (its primary, `status.podIP`), in the plan's order (`None` until
    /// attached).
    pub pod_ips: Vec<Option<IpAddr>>,
    /// A dual-stack lab's pods' second address (`status.podIPs[1]`, IPv6), by `ns/name`.
    #[serde(default)]
    pub secondary_ips: BTreeMap<String, IpAddr>,
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
    /// Namespaces given in the manifests or labelled in the lab, with their labels.
    #[serde(default)]
    pub namespaces: Vec<k8s_openapi::api::core::v1::Namespace>,
    /// NetworkPolicies, enforced on every node (`docs/policy.md`).
    #[serde(default)]
    pub network_policies: Vec<k8s_openapi::api::networking::v1::NetworkPolicy>,
}

impl LabState {
    /// The `i`-th pod's addresses, primary first (`status.podIPs`).
    pub fn pod_addresses(&self, i: usize) -> Vec<IpAddr> {
        let primary = self.pod_ips.get(i).copied().flatten();
        let secondary = primary.and_then(|_| self.plan.pods.get(i)).and_then(|p| self.secondary_ips.get(&p.key()).copied());
        primary.into_iter().chain(secondary).collect()
    }

    /// Records the `i`-th pod's addresses (primary first).
    pub fn set_pod_addresses(&mut self, i: usize, addrs: &[IpAddr]) {
        if let Some(slot) = self.pod_ips.get_mut(i) {
            *slot = addrs.first().copied();
        }
        if let Some(key) = self.plan.pods.get(i).map(crate::plan::PodPlan::key) {
            match addrs.get(1) {
                Some(second) => self.secondary_ips.insert(key, *second),
                None => self.secondary_ips.remove(&key),
            };
        }
    }

    /// The `i`-th pod's address of one family (`v6`), if it has one.
    pub fn pod_address(&self, i: usize, v6: bool) -> Option<IpAddr> {
        self.pod_addresses(i).into_iter().find(|a| a.is_ipv6() == v6)
    }

    /// The lab as a model snapshot: its namespaces, pods (with their addresses, readiness and
    /// nodes), Services, given EndpointSlices and Service CIDR, for the planners that compute
    /// from one (EndpointSlices, the proxy, the DNS, the ingress controller).
    pub fn cluster_view(&self) -> ClusterState {
        let pods = self
            .plan
            .pods
            .iter()
            .enumerate()
            .map(|(i, p)| PodInfo {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                kind: "Pod".into(),
                labels: p.labels.clone(),
                ports: p.ports.clone(),
                ips: self.pod_addresses(i),
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
                controller: None,
                location: Default::default(),
            })
            .collect();
        let services: Vec<Namespaced<Service>> = self.services.iter().cloned().map(Namespaced::from_object).collect();
        let policies: Vec<PolicyObject> = self
            .network_policies
            .iter()
            .map(|p| PolicyObject {
                location: Default::default(),
                namespace: p.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
                name: p.metadata.name.clone().unwrap_or_default(),
                policy: p.clone(),
            })
            .collect();
        // Every namespace in use, and the two every cluster has; given ones with their labels
        // (and the name label the API server adds).
        let mut names: Vec<&str> = self
            .plan
            .pods
            .iter()
            .map(|p| p.namespace.as_str())
            .chain(services.iter().map(|s| s.namespace.as_str()))
            .chain(policies.iter().map(|p| p.namespace.as_str()))
            .chain(self.namespaces.iter().filter_map(|n| n.metadata.name.as_deref()))
            .collect();
        names.extend(["default", crate::system::SYSTEM_NAMESPACE]);
        names.sort_unstable();
        names.dedup();
        let namespaces = names
            .into_iter()
            .map(|n| {
                let mut info = NamespaceInfo::named(n, true);
                if let Some(given) = self.namespaces.iter().find(|g| g.metadata.name.as_deref() == Some(n)) {
                    info.labels.extend(given.metadata.labels.clone().unwrap_or_default());
                    info.labels.insert(model::cluster::NAMESPACE_NAME_LABEL.to_owned(), n.to_owned());
                }
                info
            })
            .collect();
        ClusterState {
            namespaces,
            pods,
            policies,
            services,
            endpoint_slices: self.given_slices.iter().cloned().map(Namespaced::from_object).collect(),
            service_cidrs: self.plan.config.service_cidrs().iter().map(ToString::to_string).collect(),
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
pub fn dir(lab: &LabName) -> PathBuf {
    lab.state_dir()
}

/// `/run/podnet/<lab>/state.json`
pub fn state_file(lab: &LabName) -> PathBuf {
    dir(lab).join("state.json")
}

/// The lab process's pid file.
pub fn pid_file(lab: &LabName) -> PathBuf {
    dir(lab).join("lab.pid")
}

fn lock_file(lab: &LabName) -> PathBuf {
    dir(lab).join("state.lock")
}

fn not_up(lab: &LabName) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no lab named {:?} is up (see `podnet lab list`)", lab.as_str()))
}

/// The lab's state, held exclusively: every change of a lab (`up`, `apply`, `delete`, `mark`,
/// `restart`, `down`) loads, changes and saves it under this lock, so that changes made at the
/// same time run one after the other instead of overwriting each other. Readers need no lock:
/// a save is atomic (write, then rename).
pub struct Locked {
    lab: LabName,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl Locked {
    /// The locked lab.
    pub fn lab(&self) -> &LabName {
        &self.lab
    }

    /// Loads the state.
    pub fn load(&self) -> io::Result<LabState> {
        load(&self.lab)
    }

    /// Saves the state atomically (write, then rename).
    pub fn save(&self, state: &LabState) -> io::Result<()> {
        if state.plan.config.name != self.lab {
            return Err(io::Error::other(format!("saving lab {}'s state under lab {}'s lock", state.plan.config.name, self.lab)));
        }
        let tmp = dir(&self.lab).join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(state).map_err(io::Error::other)?)?;
        std::fs::rename(tmp, state_file(&self.lab))
    }
}

fn flock(lab: &LabName, file: std::fs::File) -> io::Result<Locked> {
    use nix::fcntl::{Flock, FlockArg};
    let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from_raw_os_error(e as i32))?;
    Ok(Locked { lab: lab.clone(), _lock: lock })
}

/// Locks an existing lab's state, waiting for a change in progress to finish.
pub fn lock(lab: &LabName) -> io::Result<Locked> {
    if !dir(lab).is_dir() {
        return Err(not_up(lab));
    }
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(lock_file(lab))?;
    let locked = flock(lab, file)?;
    // Removed while we waited (`down` ran first).
    if !dir(lab).is_dir() {
        return Err(not_up(lab));
    }
    Ok(locked)
}

/// Claims a new lab: makes its state directory (failing if it exists, so two `up`s of one
/// name cannot both proceed) and locks it.
pub fn create(lab: &LabName) -> io::Result<Locked> {
    std::fs::create_dir_all(STATE_ROOT)?;
    std::fs::create_dir(dir(lab)).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            io::Error::new(io::ErrorKind::AlreadyExists, format!("lab {:?} is already up; remove it with `podnet lab down --name {lab}`", lab.as_str()))
        } else {
            io::Error::new(e.kind(), format!("creating {}: {e}", dir(lab).display()))
        }
    })?;
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(lock_file(lab))?;
    flock(lab, file)
}

/// Loads a lab's state.
pub fn load(lab: &LabName) -> io::Result<LabState> {
    let text = std::fs::read(state_file(lab)).map_err(|e| if e.kind() == io::ErrorKind::NotFound { not_up(lab) } else { e })?;
    serde_json::from_slice(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", state_file(lab).display())))
}

/// The labs that have a state directory, sorted (a directory whose name is not a lab name is
/// not a lab's, and is left alone).
pub fn list() -> Vec<LabName> {
    let mut names: Vec<LabName> = std::fs::read_dir(STATE_ROOT)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter_map(|n| LabName::parse(&n).ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// More than one lab is up and no `--name` says which.
#[derive(Debug, thiserror::Error)]
#[error("{} labs are up ({}): pass --name", .0.len(), .0.iter().map(LabName::as_str).collect::<Vec<_>>().join(", "))]
pub struct WhichLab(pub Vec<LabName>);

/// The lab a command means: `--name` if given, else the only one up, else `podnet`.
pub fn resolve_name(given: Option<&LabName>) -> Result<LabName, WhichLab> {
    if let Some(n) = given {
        return Ok(n.clone());
    }
    match list().as_slice() {
        [] => Ok(LabName::default_lab()),
        [only] => Ok(only.clone()),
        many => Err(WhichLab(many.to_vec())),
    }
}
