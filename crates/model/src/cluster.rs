//! `ClusterState`: a snapshot of the objects podnet computes desired state from.
//!
//! Workloads stand for their pods through their pod template (as netpol-analyzer does): a
//! Deployment `shop/web` is one row `shop/web` whose owner kind is `Deployment`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use k8s_openapi::api::core::v1::{Container, Node, PodSpec, PodTemplateSpec, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass, NetworkPolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::error::{Location, ManifestError, ObjectRef};
use crate::load::{Loaded, Object};
use crate::selector::Labels;
use crate::validation::{self, FieldError, FieldPath};

/// The label every namespace carries (set by the API server).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The namespace of objects that do not name one (kubectl's default context).
pub const DEFAULT_NAMESPACE: &str = "default";

/// An L4 protocol of a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    /// TCP
    Tcp,
    /// UDP
    Udp,
    /// SCTP
    Sctp,
}

impl Protocol {
    /// The API spelling: `TCP`, `UDP`, `SCTP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = String;
    /// Accepts the API spelling and, for people typing flags, lower case.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "TCP" | "tcp" => Ok(Protocol::Tcp),
            "UDP" | "udp" => Ok(Protocol::Udp),
            "SCTP" | "sctp" => Ok(Protocol::Sctp),
            other => Err(format!("unsupported protocol {other:?}: supported values: \"TCP\", \"UDP\", \"SCTP\"")),
        }
    }
}

/// A declared container port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct ContainerPort {
    /// `name` (an IANA service name), if any.
    pub name: Option<String>,
    /// `containerPort`
    pub port: u16,
    /// `protocol` (default TCP)
    pub protocol: Protocol,
}

/// A namespace with its labels (always including `kubernetes.io/metadata.name`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: Labels,
    /// False when it is only referenced by other objects, not declared.
    pub declared: bool,
}

/// A pod, or a workload standing for its pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    /// Its namespace.
    pub namespace: String,
    /// Its name (the workload's name for a workload).
    pub name: String,
    /// `Pod`, or the workload kind (`Deployment`, ...).
    pub kind: String,
    /// Labels (the pod template's for a workload).
    pub labels: Labels,
    /// Declared ports of its containers (and restartable init containers).
    pub ports: Vec<ContainerPort>,
    /// `status.podIPs` (or `status.podIP`); empty for workloads and pods not yet running.
    pub ips: Vec<IpAddr>,
    /// `spec.hostNetwork`
    pub host_network: bool,
    /// `spec.nodeName`
    pub node_name: Option<String>,
    /// The pod's `Ready` condition, when its status says (`None`: no status; the lab decides).
    pub ready: Option<bool>,
    /// `metadata.deletionTimestamp` is set: the pod is terminating.
    pub terminating: bool,
    /// `status.phase` is `Succeeded` or `Failed`.
    pub terminal: bool,
    /// `spec.hostname` and `spec.subdomain` (for headless Service records).
    pub hostname: Option<String>,
    /// `spec.subdomain`
    pub subdomain: Option<String>,
    /// `spec.dnsPolicy` (absent: `ClusterFirst`).
    pub dns_policy: Option<String>,
    /// `spec.dnsConfig`.
    pub dns_config: Option<DnsConfig>,
    /// How many pods this entry stands for.
    pub replicas: Replicas,
    /// For workloads: a hash of the pod template, as controllers put in pod names
    /// (`pod-template-hash`), in the controllers' alphabet.
    pub template_hash: Option<String>,
    /// A Pod's controller, from its `ownerReferences` (kind, name): what made it on a real
    /// cluster (a ReplicaSet, a StatefulSet, ...).
    pub controller: Option<(String, String)>,
    /// Where it was read.
    pub location: Location,
}

/// A pod's `spec.dnsConfig`: what it adds to (or, with `dnsPolicy: None`, makes of) its resolv.conf.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DnsConfig {
    /// `nameservers`
    pub nameservers: Vec<String>,
    /// `searches`
    pub searches: Vec<String>,
    /// `options`: name and optional value.
    pub options: Vec<(String, Option<String>)>,
}

impl From<&k8s_openapi::api::core::v1::PodDNSConfig> for DnsConfig {
    fn from(c: &k8s_openapi::api::core::v1::PodDNSConfig) -> Self {
        DnsConfig {
            nameservers: c.nameservers.clone().unwrap_or_default(),
            searches: c.searches.clone().unwrap_or_default(),
            options: c.options.iter().flatten().filter_map(|o| Some((o.name.clone()?, o.value.clone()))).collect(),
        }
    }
}

/// How many pods a [`PodInfo`] stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replicas {
    /// A Pod: itself.
    Pod,
    /// A fixed number (`spec.replicas`, a Job's `parallelism`; 0 for a CronJob until it runs).
    Count(u32),
    /// One on every node (DaemonSet).
    PerNode,
}

impl NamespaceInfo {
    /// A namespace with only the `kubernetes.io/metadata.name` label the API server gives every one.
    pub fn named(name: &str, declared: bool) -> NamespaceInfo {
        NamespaceInfo { name: name.to_owned(), labels: Labels::from([(NAMESPACE_NAME_LABEL.to_owned(), name.to_owned())]), declared }
    }
}

impl PodInfo {
    /// `namespace/name`
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// `namespace/name`, with `[Kind]` for workloads (netpol-analyzer's notation).
    pub fn display_name(&self) -> String {
        if self.kind == "Pod" { self.key() } else { format!("{}/{}[{}]", self.namespace, self.name, self.kind) }
    }

    /// The address other pods see: the first pod IP.
    pub fn primary_ip(&self) -> Option<IpAddr> {
        self.ips.first().copied()
    }

    /// Resolves a named port: the declared number for that name and protocol.
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports.iter().find(|p| p.protocol == protocol && p.name.as_deref() == Some(name)).map(|p| p.port)
    }
}

/// A NetworkPolicy as given, with where it came from.
#[derive(Clone, Debug)]
pub struct PolicyObject {
    /// Where it was read.
    pub location: Location,
    /// Its namespace (defaulted).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The object.
    pub policy: NetworkPolicy,
}

/// A snapshot of the cluster's objects.
#[derive(Clone, Debug, Default)]
pub struct ClusterState {
    /// Namespaces, sorted by name: declared ones and those only referenced.
    pub namespaces: Vec<NamespaceInfo>,
    /// Pods and workloads, sorted by namespace, name, then kind.
    pub pods: Vec<PodInfo>,
    /// NetworkPolicies, sorted by namespace then name.
    pub policies: Vec<PolicyObject>,
    /// Services, sorted by namespace then name.
    pub services: Vec<Namespaced<Service>>,
    /// EndpointSlices given in the manifests (for Services without a selector), by namespace then name.
    pub endpoint_slices: Vec<Namespaced<EndpointSlice>>,
    /// Nodes given in the manifests, by name.
    pub nodes: Vec<Node>,
    /// The CIDRs of the ServiceCIDR objects (`spec.cidrs`), as written.
    pub service_cidrs: Vec<String>,
    /// Ingresses, by namespace then name.
    pub ingresses: Vec<Namespaced<Ingress>>,
    /// IngressClasses, by name.
    pub ingress_classes: Vec<IngressClass>,
    /// Secrets (for TLS), by namespace then name.
    pub secrets: Vec<Namespaced<Secret>>,
    /// GatewayClasses, by name.
    pub gateway_classes: Vec<crate::gateway_api::GatewayClass>,
    /// Gateways, by namespace then name.
    pub gateways: Vec<Namespaced<crate::gateway_api::Gateway>>,
    /// HTTPRoutes, by namespace then name.
    pub http_routes: Vec<Namespaced<crate::gateway_api::HttpRoute>>,
    /// ReferenceGrants, by namespace then name.
    pub reference_grants: Vec<Namespaced<crate::gateway_api::ReferenceGrant>>,
}

/// A namespaced object as given, with where it came from.
#[derive(Clone, Debug)]
pub struct Namespaced<T> {
    /// Where it was read.
    pub location: Location,
    /// Its namespace (defaulted).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The object.
    pub object: T,
}

impl ClusterState {
    /// Builds a snapshot from loaded objects. A later object with the same kind, namespace and
    /// name replaces an earlier one, as a later `kubectl apply` would.
    pub fn from_objects(objects: &[Loaded]) -> Result<Self, ManifestError> {
        let mut namespaces: BTreeMap<String, NamespaceInfo> = BTreeMap::new();
        let mut pods: BTreeMap<(String, String, String), PodInfo> = BTreeMap::new();
        let mut policies: BTreeMap<(String, String), PolicyObject> = BTreeMap::new();
        let mut services: BTreeMap<(String, String), Namespaced<Service>> = BTreeMap::new();
        let mut slices: BTreeMap<(String, String), Namespaced<EndpointSlice>> = BTreeMap::new();
        let mut ingresses: BTreeMap<(String, String), Namespaced<Ingress>> = BTreeMap::new();
        let mut ingress_classes: BTreeMap<String, IngressClass> = BTreeMap::new();
        let mut secrets: BTreeMap<(String, String), Namespaced<Secret>> = BTreeMap::new();
        let mut gateway_classes: BTreeMap<String, crate::gateway_api::GatewayClass> = BTreeMap::new();
        let mut gateways: BTreeMap<(String, String), Namespaced<crate::gateway_api::Gateway>> = BTreeMap::new();
        let mut http_routes: BTreeMap<(String, String), Namespaced<crate::gateway_api::HttpRoute>> = BTreeMap::new();
        let mut grants: BTreeMap<(String, String), Namespaced<crate::gateway_api::ReferenceGrant>> = BTreeMap::new();
        let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
        let mut service_cidrs: Vec<String> = Vec::new();

        for loaded in objects {
            let loc = &loaded.location;
            match &loaded.object {
                Object::Namespace(ns) => {
                    let name = ns.metadata.name.clone().unwrap_or_default();
                    let id = ObjectRef { kind: "Namespace".into(), namespace: String::new(), name: name.clone() };
                    let mut errs: Vec<FieldError> = Vec::new();
                    let name_path = FieldPath::new("metadata").child("name");
                    if name.is_empty() {
                        errs.push(FieldError::required(name_path, "name or generateName is required"));
                    } else {
                        errs.extend(validation::is_dns1123_label(&name).into_iter().map(|m| FieldError::invalid_str(name_path.clone(), &name, m)));
                    }
                    if let Some(labels) = &ns.metadata.labels {
                        errs.extend(validation::validate_labels(labels, &FieldPath::new("metadata").child("labels")));
                    }
                    check(loc, &id, errs)?;
                    let mut labels = ns.metadata.labels.clone().unwrap_or_default();
                    labels.insert(NAMESPACE_NAME_LABEL.into(), name.clone());
                    namespaces.insert(name.clone(), NamespaceInfo { name, labels, declared: true });
                }
                Object::Pod(pod) => {
                    let info = pod_info(loc, "Pod", &pod.metadata, pod.spec.as_ref(), pod.status.as_ref())?;
                    pods.insert((info.namespace.clone(), info.name.clone(), info.kind.clone()), info);
                }
                Object::NetworkPolicy(np) => {
                    let namespace = namespace_of(&np.metadata);
                    let name = np.metadata.name.clone().unwrap_or_default();
                    let id = ObjectRef { kind: "NetworkPolicy".into(), namespace: namespace.clone(), name: name.clone() };
                    check(loc, &id, validation::validate_object_meta(Some(&name), &namespace, np.metadata.labels.as_ref()))?;
                    policies.insert((namespace.clone(), name.clone()), PolicyObject { location: loc.clone(), namespace, name, policy: (**np).clone() });
                }
                Object::Service(svc) => {
                    let n = namespaced(loc, "Service", &svc.metadata, (**svc).clone())?;
                    if let Some(spec) = &svc.spec {
                        check(
                            loc,
                            &ObjectRef { kind: "Service".into(), namespace: n.namespace.clone(), name: n.name.clone() },
                            validation::validate_service_ports(spec),
                        )?;
                    }
                    services.insert((n.namespace.clone(), n.name.clone()), n);
                }
                Object::EndpointSlice(es) => {
                    let n = namespaced(loc, "EndpointSlice", &es.metadata, (**es).clone())?;
                    slices.insert((n.namespace.clone(), n.name.clone()), n);
                }
                Object::Ingress(ing) => {
                    let n = namespaced(loc, "Ingress", &ing.metadata, (**ing).clone())?;
                    ingresses.insert((n.namespace.clone(), n.name.clone()), n);
                }
                Object::Secret(secret) => {
                    let n = namespaced(loc, "Secret", &secret.metadata, (**secret).clone())?;
                    secrets.insert((n.namespace.clone(), n.name.clone()), n);
                }
                Object::IngressClass(class) => {
                    ingress_classes.insert(class.metadata.name.clone().unwrap_or_default(), (**class).clone());
                }
                Object::GatewayClass(class) => {
                    gateway_classes.insert(class.metadata.name.clone().unwrap_or_default(), (**class).clone());
                }
                Object::Gateway(g) => {
                    let n = namespaced(loc, "Gateway", &g.metadata, (**g).clone())?;
                    gateways.insert((n.namespace.clone(), n.name.clone()), n);
                }
                Object::HttpRoute(r) => {
                    let n = namespaced(loc, "HTTPRoute", &r.metadata, (**r).clone())?;
                    http_routes.insert((n.namespace.clone(), n.name.clone()), n);
                }
                Object::ReferenceGrant(r) => {
                    let n = namespaced(loc, "ReferenceGrant", &r.metadata, (**r).clone())?;
                    grants.insert((n.namespace.clone(), n.name.clone()), n);
                }
                Object::Node(node) => {
                    let name = node.metadata.name.clone().unwrap_or_default();
                    let id = ObjectRef { kind: "Node".into(), namespace: String::new(), name: name.clone() };
                    let name_path = FieldPath::new("metadata").child("name");
                    let mut errs = Vec::new();
                    if name.is_empty() {
                        errs.push(FieldError::required(name_path, "name or generateName is required"));
                    } else {
                        errs.extend(validation::is_dns1123_subdomain(&name).into_iter().map(|m| FieldError::invalid_str(name_path.clone(), &name, m)));
                    }
                    check(loc, &id, errs)?;
                    nodes.insert(name, (**node).clone());
                }
                Object::ServiceCidr(sc) => {
                    let name = sc.metadata.name.clone().unwrap_or_default();
                    let id = ObjectRef { kind: "ServiceCIDR".into(), namespace: String::new(), name };
                    let mut errs = Vec::new();
                    for (i, c) in sc.spec.iter().flat_map(|s| s.cidrs.iter().flatten()).enumerate() {
                        if c.parse::<ipnet::IpNet>().is_err() {
                            let path = FieldPath::new("spec").child("cidrs").index(i);
                            errs.push(FieldError::invalid_str(path, c, "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"));
                        }
                    }
                    check(loc, &id, errs)?;
                    service_cidrs.extend(sc.spec.iter().flat_map(|s| s.cidrs.clone().unwrap_or_default()));
                }
                workload => {
                    let Some((kind, meta, template, replicas)) = workload_template(workload) else {
                        continue;
                    };
                    let mut info = workload_info(loc, kind, meta, template)?;
                    info.replicas = replicas;
                    info.template_hash = Some(template_hash(template));
                    // A StatefulSet's pods are `<name>-<i>` in the subdomain of its governing Service.
                    if let Object::StatefulSet(o) = workload
                        && let Some(service) = o.spec.as_ref().map(|s| s.service_name.clone()).filter(|s| !s.as_deref().unwrap_or_default().is_empty())
                    {
                        info.subdomain = service;
                    }
                    pods.insert((info.namespace.clone(), info.name.clone(), info.kind.clone()), info);
                }
            }
        }

        let referenced: BTreeSet<String> = pods
            .values()
            .map(|p| p.namespace.clone())
            .chain(policies.values().map(|p| p.namespace.clone()))
            .chain(services.values().map(|s| s.namespace.clone()))
            .collect();
        for name in referenced {
            namespaces.entry(name.clone()).or_insert_with(|| NamespaceInfo::named(&name, false));
        }

        Ok(ClusterState {
            namespaces: namespaces.into_values().collect(),
            pods: pods.into_values().collect(),
            policies: policies.into_values().collect(),
            services: services.into_values().collect(),
            endpoint_slices: slices.into_values().collect(),
            nodes: nodes.into_values().collect(),
            service_cidrs,
            ingresses: ingresses.into_values().collect(),
            ingress_classes: ingress_classes.into_values().collect(),
            secrets: secrets.into_values().collect(),
            gateway_classes: gateway_classes.into_values().collect(),
            gateways: gateways.into_values().collect(),
            http_routes: http_routes.into_values().collect(),
            reference_grants: grants.into_values().collect(),
        })
    }

    /// The namespace with this name.
    pub fn namespace(&self, name: &str) -> Option<&NamespaceInfo> {
        self.namespaces.binary_search_by(|n| n.name.as_str().cmp(name)).ok().map(|i| &self.namespaces[i])
    }
}

fn check(location: &Location, id: &ObjectRef, errs: Vec<FieldError>) -> Result<(), ManifestError> {
    if errs.is_empty() {
        return Ok(());
    }
    Err(ManifestError { location: location.clone(), object: Some(id.clone()), messages: errs.iter().map(ToString::to_string).collect() })
}

impl<T: k8s_openapi::Metadata<Ty = ObjectMeta>> Namespaced<T> {
    /// An object that was checked when it was loaded (kept in a lab's state, or made by a
    /// controller), without a file location; its namespace defaulted as the loader does.
    pub fn from_object(object: T) -> Self {
        let meta = object.metadata();
        Namespaced { location: Location::default(), namespace: namespace_of(meta), name: meta.name.clone().unwrap_or_default(), object }
    }
}

impl<T> Namespaced<T> {
    /// [`Namespaced::from_object`] for objects whose types are not k8s-openapi's (Gateway API's).
    pub fn with_meta(meta: &ObjectMeta, object: T) -> Self {
        Namespaced { location: Location::default(), namespace: namespace_of(meta), name: meta.name.clone().unwrap_or_default(), object }
    }
}

/// A namespaced object with its name and namespace checked.
fn namespaced<T>(loc: &Location, kind: &str, meta: &ObjectMeta, object: T) -> Result<Namespaced<T>, ManifestError> {
    let namespace = namespace_of(meta);
    let name = meta.name.clone().unwrap_or_default();
    let id = ObjectRef { kind: kind.into(), namespace: namespace.clone(), name: name.clone() };
    check(loc, &id, validation::validate_object_meta(Some(&name), &namespace, meta.labels.as_ref()))?;
    Ok(Namespaced { location: loc.clone(), namespace, name, object })
}

fn namespace_of(meta: &ObjectMeta) -> String {
    meta.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
}

/// A workload's kind, metadata, pod template and replica count.
type WorkloadParts<'a> = (&'static str, &'a ObjectMeta, Option<&'a PodTemplateSpec>, Replicas);

fn workload_template(object: &Object) -> Option<WorkloadParts<'_>> {
    let count = |n: Option<i32>| Replicas::Count(u32::try_from(n.unwrap_or(1)).unwrap_or(0));
    Some(match object {
        Object::Deployment(o) => ("Deployment", &o.metadata, o.spec.as_ref().map(|s| &s.template), count(o.spec.as_ref().and_then(|s| s.replicas))),
        Object::ReplicaSet(o) => {
            ("ReplicaSet", &o.metadata, o.spec.as_ref().and_then(|s| s.template.as_ref()), count(o.spec.as_ref().and_then(|s| s.replicas)))
        }
        Object::StatefulSet(o) => ("StatefulSet", &o.metadata, o.spec.as_ref().map(|s| &s.template), count(o.spec.as_ref().and_then(|s| s.replicas))),
        Object::DaemonSet(o) => ("DaemonSet", &o.metadata, o.spec.as_ref().map(|s| &s.template), Replicas::PerNode),
        Object::Job(o) => ("Job", &o.metadata, o.spec.as_ref().map(|s| &s.template), count(o.spec.as_ref().and_then(|s| s.parallelism))),
        // A CronJob has no pods until its schedule fires.
        Object::CronJob(o) => ("CronJob", &o.metadata, o.spec.as_ref().and_then(|s| s.job_template.spec.as_ref()).map(|s| &s.template), Replicas::Count(0)),
        Object::Namespace(_)
        | Object::Pod(_)
        | Object::NetworkPolicy(_)
        | Object::Service(_)
        | Object::EndpointSlice(_)
        | Object::Node(_)
        | Object::ServiceCidr(_)
        | Object::Ingress(_)
        | Object::IngressClass(_)
        | Object::Secret(_)
        | Object::GatewayClass(_)
        | Object::Gateway(_)
        | Object::HttpRoute(_)
        | Object::ReferenceGrant(_) => return None,
    })
}

/// The controllers' alphabet for generated name parts (`rand.SafeEncodeString`): no vowels,
/// no look-alike characters.
pub const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `pod-template-hash`: FNV-1a of the template (as 32 bits), its decimal digits mapped onto [`NAME_ALPHABET`]
/// (the controller hashes Go's deep printing of the template; we hash its JSON).
fn template_hash(template: Option<&PodTemplateSpec>) -> String {
    let text = template.and_then(|t| serde_json::to_string(t).ok()).unwrap_or_default();
    let h = stable_hash(text.as_bytes()) as u32;
    h.to_string().bytes().map(|d| NAME_ALPHABET[usize::from(d) % NAME_ALPHABET.len()] as char).collect()
}

/// A Node's pod networks: `spec.podCIDRs`, else `spec.podCIDR` (what node IPAM assigned),
/// those that parse.
pub fn node_pod_cidrs(node: &Node) -> Vec<ipnet::IpNet> {
    let spec = node.spec.as_ref();
    let cidrs = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_else(|| spec.and_then(|s| s.pod_cidr.clone()).into_iter().collect());
    cidrs.iter().filter_map(|c| c.parse().ok()).collect()
}

/// A Node's `InternalIP` addresses (`status.addresses`), in the order it reports them.
pub fn node_internal_ips(node: &Node) -> Vec<std::net::IpAddr> {
    node.status.iter().flat_map(|s| s.addresses.iter().flatten()).filter(|a| a.type_ == "InternalIP").filter_map(|a| a.address.parse().ok()).collect()
}

/// FNV-1a of some bytes: stable across runs and releases, for generated names.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = fnv::FnvHasher::default();
    h.write(bytes);
    h.finish()
}

fn workload_info(loc: &Location, kind: &str, meta: &ObjectMeta, template: Option<&PodTemplateSpec>) -> Result<PodInfo, ManifestError> {
    let mut info = pod_info(loc, kind, meta, template.and_then(|t| t.spec.as_ref()), None)?;
    // A workload's pods carry the template's labels, not the workload's own.
    info.labels = template.and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone()).unwrap_or_default();
    let id = ObjectRef { kind: kind.into(), namespace: info.namespace.clone(), name: info.name.clone() };
    let path = FieldPath::new("spec").child("template").child("metadata").child("labels");
    check(loc, &id, validation::validate_labels(&info.labels, &path))?;
    Ok(info)
}

/// A Pod (or a workload's pod template, by `kind`) as a snapshot keeps it, checked as the loader
/// checks it: what the API server's watch gives is read into this and the object dropped.
pub fn pod_info(
    loc: &Location,
    kind: &str,
    meta: &ObjectMeta,
    spec: Option<&PodSpec>,
    status: Option<&k8s_openapi::api::core::v1::PodStatus>,
) -> Result<PodInfo, ManifestError> {
    let namespace = namespace_of(meta);
    let name = meta.name.clone().unwrap_or_default();
    let id = ObjectRef { kind: kind.into(), namespace: namespace.clone(), name: name.clone() };
    let mut errs = validation::validate_object_meta(Some(&name), &namespace, meta.labels.as_ref());

    let spec_path = if kind == "Pod" {
        FieldPath::new("spec")
    } else if kind == "CronJob" {
        FieldPath::new("spec").child("jobTemplate").child("spec").child("template").child("spec")
    } else {
        FieldPath::new("spec").child("template").child("spec")
    };
    let mut ports = Vec::new();
    if let Some(spec) = spec {
        validate_dns(spec, &spec_path, &mut errs);
        let restartable_init = spec
            .init_containers
            .iter()
            .flatten()
            .enumerate()
            .filter(|(_, c)| c.restart_policy.as_deref() == Some("Always"))
            .map(|(i, c)| (spec_path.child("initContainers").index(i), c));
        let containers = spec.containers.iter().enumerate().map(|(i, c)| (spec_path.child("containers").index(i), c));
        for (path, container) in containers.chain(restartable_init) {
            container_ports(container, &path, &mut ports, &mut errs);
        }
    }

    let mut ips = Vec::new();
    if let Some(status) = status {
        let status_path = FieldPath::new("status");
        let listed: Vec<(FieldPath, &str)> = match &status.pod_ips {
            Some(list) if !list.is_empty() => {
                list.iter().enumerate().map(|(i, ip)| (status_path.child("podIPs").index(i).child("ip"), ip.ip.as_str())).collect()
            }
            _ => status.pod_ip.iter().map(|ip| (status_path.child("podIP"), ip.as_str())).collect(),
        };
        for (path, text) in listed {
            match text.parse::<IpAddr>() {
                Ok(ip) => ips.push(ip),
                Err(_) => errs.push(FieldError::invalid_str(path, text, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")),
            }
        }
    }
    check(loc, &id, errs)?;
    Ok(PodInfo {
        namespace,
        name,
        kind: kind.to_owned(),
        labels: meta.labels.clone().unwrap_or_default(),
        ports,
        ips,
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        node_name: spec.and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()),
        ready: status.and_then(|s| s.conditions.as_ref()).and_then(|cs| cs.iter().find(|c| c.type_ == "Ready")).map(|c| c.status == "True"),
        terminating: meta.deletion_timestamp.is_some(),
        terminal: status.and_then(|s| s.phase.as_deref()).is_some_and(|p| p == "Succeeded" || p == "Failed"),
        hostname: spec.and_then(|s| s.hostname.clone()).filter(|h| !h.is_empty()),
        subdomain: spec.and_then(|s| s.subdomain.clone()).filter(|h| !h.is_empty()),
        dns_policy: spec.and_then(|s| s.dns_policy.clone()),
        dns_config: spec.and_then(|s| s.dns_config.as_ref()).map(DnsConfig::from),
        replicas: Replicas::Pod,
        template_hash: None,
        controller: meta.owner_references.iter().flatten().find(|o| o.controller == Some(true)).map(|o| (o.kind.clone(), o.name.clone())),
        location: loc.clone(),
    })
}

/// `validateDNSPolicy` and the parts of `validatePodDNSConfig` that decide a resolv.conf.
fn validate_dns(spec: &PodSpec, path: &FieldPath, errs: &mut Vec<FieldError>) {
    const POLICIES: [&str; 4] = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
    match spec.dns_policy.as_deref() {
        Some(p) if !POLICIES.contains(&p) => errs.push(FieldError::not_supported(path.child("dnsPolicy"), p, &POLICIES)),
        Some("None") if spec.dns_config.is_none() => {
            errs.push(FieldError::required(path.child("dnsConfig"), "must provide `dnsConfig` when `dnsPolicy` is None"))
        }
        _ => {}
    }
    let Some(config) = &spec.dns_config else {
        return;
    };
    let nameservers = config.nameservers.as_deref().unwrap_or_default();
    if spec.dns_policy.as_deref() == Some("None") && nameservers.is_empty() {
        errs.push(FieldError::required(path.child("dnsConfig").child("nameservers"), "must provide at least one DNS nameserver when `dnsPolicy` is None"));
    }
    if nameservers.len() > 3 {
        errs.push(FieldError::invalid_str(path.child("dnsConfig").child("nameservers"), &nameservers.join(", "), "must not have more than 3 nameservers"));
    }
    for (i, ns) in nameservers.iter().enumerate() {
        if ns.parse::<IpAddr>().is_err() {
            errs.push(FieldError::invalid_str(path.child("dnsConfig").child("nameservers").index(i), ns, "must be valid IP address"));
        }
    }
    if config.searches.as_ref().is_some_and(|s| s.len() > 32) {
        errs.push(FieldError::invalid_str(path.child("dnsConfig").child("searches"), "", "must not have more than 32 search paths"));
    }
}

fn container_ports(container: &Container, path: &FieldPath, out: &mut Vec<ContainerPort>, errs: &mut Vec<FieldError>) {
    for (i, port) in container.ports.iter().flatten().enumerate() {
        let p = path.child("ports").index(i);
        let protocol = match port.protocol.as_deref() {
            None => Protocol::Tcp,
            Some(text) => match text.parse::<Protocol>() {
                Ok(proto) if text == proto.as_str() => proto,
                _ => {
                    errs.push(FieldError::not_supported(p.child("protocol"), text, &["SCTP", "TCP", "UDP"]));
                    continue;
                }
            },
        };
        let number = port.container_port;
        let msgs = validation::is_valid_port_num(i64::from(number));
        if !msgs.is_empty() {
            errs.extend(msgs.into_iter().map(|m| FieldError::invalid_int(p.child("containerPort"), i64::from(number), m)));
            continue;
        }
        if let Some(name) = &port.name {
            let msgs = validation::is_valid_port_name(name);
            if !msgs.is_empty() {
                errs.extend(msgs.into_iter().map(|m| FieldError::invalid_str(p.child("name"), name, m)));
                continue;
            }
        }
        out.push(ContainerPort { name: port.name.clone(), port: u16::try_from(number).unwrap_or_default(), protocol });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::load_str;
    use std::path::Path;

    fn state(yaml: &str) -> Result<ClusterState, ManifestError> {
        ClusterState::from_objects(&load_str(yaml, Path::new("t.yaml"))?)
    }

    #[test]
    fn every_namespace_carries_its_name_label_and_referenced_ones_exist() {
        let s = state(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: prod, labels: {env: prod}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: other}\nspec: {containers: []}\n",
        )
        .unwrap();
        assert_eq!(s.namespaces.len(), 2);
        let other = s.namespace("other").unwrap();
        assert!(!other.declared);
        assert_eq!(other.labels, Labels::from([(NAMESPACE_NAME_LABEL.into(), "other".into())]));
        let prod = s.namespace("prod").unwrap();
        assert_eq!(prod.labels.get(NAMESPACE_NAME_LABEL).map(String::as_str), Some("prod"));
        assert_eq!(prod.labels.get("env").map(String::as_str), Some("prod"));
    }

    #[test]
    fn workloads_stand_for_their_pods_with_template_labels() {
        let s = state(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api, namespace: prod, labels: {owner: team}}\nspec:\n  selector: {matchLabels: {app: api}}\n  template:\n    metadata: {labels: {app: api}}\n    spec:\n      containers:\n      - name: c\n        ports: [{name: http, containerPort: 8080}]\n---\napiVersion: batch/v1\nkind: CronJob\nmetadata: {name: nightly, namespace: prod}\nspec:\n  schedule: '@daily'\n  jobTemplate:\n    spec:\n      template:\n        metadata: {labels: {app: batch}}\n        spec: {containers: [], restartPolicy: Never}\n",
        )
        .unwrap();
        assert_eq!(s.pods.len(), 2);
        let api = &s.pods[0];
        assert_eq!((api.key().as_str(), api.kind.as_str()), ("prod/api", "Deployment"));
        assert_eq!(api.display_name(), "prod/api[Deployment]");
        assert_eq!(api.labels, Labels::from([("app".into(), "api".into())]));
        assert_eq!(api.named_port("http", Protocol::Tcp), Some(8080));
        assert_eq!(api.named_port("http", Protocol::Udp), None);
        assert_eq!(s.pods[1].kind, "CronJob");
        assert_eq!(api.replicas, Replicas::Count(1));
        assert_eq!(s.pods[1].replicas, Replicas::Count(0));
        let hash = api.template_hash.clone().unwrap();
        assert!(hash.bytes().all(|c| NAME_ALPHABET.contains(&c)) && !hash.is_empty());
    }

    #[test]
    fn pod_ips_and_defaults() {
        let s = state(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, ports: [{containerPort: 53, protocol: UDP}]}], hostNetwork: true, nodeName: n1}\nstatus: {podIPs: [{ip: 10.0.0.1}, {ip: 'fd00::1'}]}\n",
        )
        .unwrap();
        let p = &s.pods[0];
        assert_eq!(p.namespace, DEFAULT_NAMESPACE);
        assert_eq!(p.ips.len(), 2);
        assert!(p.host_network);
        assert_eq!(p.node_name.as_deref(), Some("n1"));
        assert_eq!(p.ports[0].protocol, Protocol::Udp);
    }

    #[test]
    fn invalid_pods_are_reported_with_all_their_errors() {
        let err = state(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name, namespace: x}\nspec: {containers: [{name: c, ports: [{containerPort: 0}, {containerPort: 80, name: HTTP}]}]}\nstatus: {podIP: 10.0.0.300}\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("t.yaml: document 1: Pod x/Bad_Name is invalid:"), "{text}");
        assert!(text.contains("metadata.name: Invalid value: \"Bad_Name\""), "{text}");
        assert!(text.contains("spec.containers[0].ports[0].containerPort: Invalid value: 0: must be between 1 and 65535, inclusive"), "{text}");
        assert!(text.contains("spec.containers[0].ports[1].name: Invalid value: \"HTTP\""), "{text}");
        assert!(text.contains("status.podIP: Invalid value: \"10.0.0.300\""), "{text}");
    }

    #[test]
    fn later_objects_replace_earlier_ones() {
        let s = state(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {v: '1'}}\nspec: {containers: []}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {v: '2'}}\nspec: {containers: []}\n",
        )
        .unwrap();
        assert_eq!(s.pods.len(), 1);
        assert_eq!(s.pods[0].labels.get("v").map(String::as_str), Some("2"));
    }
}
