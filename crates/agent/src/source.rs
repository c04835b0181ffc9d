//! The API server as a source of objects: one reflector (list, then watch, relisting on a 410)
//! per kind the node's planners read, objects trimmed to what podnet reads on their way in, and
//! a snapshot of all of them as a `ClusterState`. Each change also says which Services it
//! touched (a Service, or an EndpointSlice of one), so that the node agent programs those alone.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass, NetworkPolicy};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, Resource, ResourceExt as _};
use model::{ClusterState, Loaded, Location, Object};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

/// The objects the node agent reads, each kept current by its own watch.
#[derive(Clone)]
pub struct Stores {
    namespaces: Store<Namespace>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    /// Pods as the snapshot reads them: a k8s-openapi Pod is several KB even trimmed, and a
    /// cluster has tens of thousands.
    pods: Arc<Mutex<PodTable>>,
    /// The Pod objects themselves, for a kubelet's part (the lab's) that writes their status.
    pod_objects: Option<Store<Pod>>,
    /// Not watched by the cluster DNS, which needs neither (nor may list them).
    nodes: Option<Store<Node>>,
    policies: Option<Store<NetworkPolicy>>,
    /// Watched by the ingress controller only.
    routing: Option<Routing>,
    /// The Gateway API's kinds, when the API server serves them (their CRDs are installed).
    gateway_api: Vec<(kube::discovery::ApiResource, Store<kube::api::DynamicObject>)>,
    changes: Arc<Mutex<Changes>>,
}

/// What changed since it was last taken.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Services (namespace, name) whose object or EndpointSlices changed.
    pub services: BTreeSet<(String, String)>,
    /// Pods, Namespaces or NetworkPolicies changed: the policy and bridge tables are re-planned
    /// (Services' endpoints follow their EndpointSlices, not the Pods).
    pub pods_or_policies: bool,
    /// Anything else changed (a Node, ...): the whole state.
    pub other: bool,
}

/// What a change of an object touches.
pub enum Touches {
    /// One Service's rules (the Service or one of its EndpointSlices).
    Service(String, String),
    /// The policy table (a Pod, Namespace or NetworkPolicy).
    PodsOrPolicies,
    /// Anything: the whole state.
    Other,
}

/// What the ingress controller routes by: Ingresses, IngressClasses, and Secrets (TLS).
#[derive(Clone)]
struct Routing {
    ingresses: Store<Ingress>,
    classes: Store<IngressClass>,
    secrets: Store<Secret>,
}

/// A kind as the source watches it: how it is trimmed, and which Service a change of it touches.
trait Watched: Resource<DynamicType = ()> + Clone + std::fmt::Debug + DeserializeOwned + Send + Sync + 'static {
    /// Drops what no planner reads, before the object is stored (the reflector keeps every
    /// object of the cluster: 30,000 Pods with their managed fields are hundreds of MB).
    fn trim(&mut self) {
        let meta = self.meta_mut();
        meta.managed_fields = None;
        if let Some(a) = meta.annotations.as_mut() {
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }
    /// The Service a change of this object touches; `None`: something else (the whole state).
    fn service(&self) -> Option<(String, String)> {
        None
    }
    /// What a change of this object touches.
    fn touches(&self) -> Touches {
        match self.service() {
            Some((ns, name)) => Touches::Service(ns, name),
            None => Touches::Other,
        }
    }
}

impl Watched for Namespace {
    fn touches(&self) -> Touches {
        Touches::PodsOrPolicies
    }
}
impl Watched for Node {
    fn trim(&mut self) {
        self.metadata.managed_fields = None;
        // Of the annotations, only the WireGuard public key is read (a peer's key).
        if let Some(a) = self.metadata.annotations.as_mut() {
            a.retain(|k, _| k == node::wireguard::PUBLIC_KEY_ANNOTATION);
        }
        if let Some(s) = self.status.as_mut() {
            // Images and volumes are most of a busy node's status.
            s.images = None;
            s.volumes_attached = None;
            s.volumes_in_use = None;
        }
    }
}
impl Watched for NetworkPolicy {
    fn touches(&self) -> Touches {
        Touches::PodsOrPolicies
    }
}
impl Watched for Ingress {}
impl Watched for IngressClass {}
impl Watched for Secret {}
impl Watched for Service {
    fn service(&self) -> Option<(String, String)> {
        Some((self.namespace().unwrap_or_default(), self.name_any()))
    }
}
impl Watched for EndpointSlice {
    fn service(&self) -> Option<(String, String)> {
        let name = self.labels().get("kubernetes.io/service-name")?;
        Some((self.namespace().unwrap_or_default(), name.clone()))
    }
}
impl Watched for Pod {
    fn trim(&mut self) {
        self.metadata.managed_fields = None;
        self.metadata.annotations = None;
        if let Some(spec) = self.spec.as_mut() {
            // A pod's network identity: its node, ports, host network, DNS settings.
            spec.volumes = None;
            spec.init_containers = None;
            spec.ephemeral_containers = None;
            spec.affinity = None;
            spec.tolerations = None;
            for c in &mut spec.containers {
                let (name, image, ports) = (std::mem::take(&mut c.name), c.image.take(), c.ports.take());
                *c = k8s_openapi::api::core::v1::Container { name, image, ports, ..Default::default() };
            }
        }
        if let Some(status) = self.status.as_mut() {
            status.container_statuses = None;
            status.init_container_statuses = None;
            status.ephemeral_container_statuses = None;
        }
    }
}

/// The Pods of the cluster, each as its `PodInfo`, and whether the first list is in.
#[derive(Default)]
struct PodTable {
    pods: std::collections::BTreeMap<(String, String), model::PodInfo>,
    /// A relist in progress (after a 410): the new list, swapped in when it is complete.
    relist: Option<std::collections::BTreeMap<(String, String), model::PodInfo>>,
    ready: bool,
}

fn pod_key(pod: &Pod) -> (String, String) {
    (pod.namespace().unwrap_or_default(), pod.name_any())
}

fn pod_info(pod: &Pod) -> Option<model::PodInfo> {
    model::cluster::pod_info(&Location::default(), "Pod", &pod.metadata, pod.spec.as_ref(), pod.status.as_ref()).map_err(|e| eprintln!("left out: {e}")).ok()
}

/// Watches Pods into `table` (no store of the objects); every change is noted and wakes `changed`.
fn watch_pods(api: Api<Pod>, changed: &Arc<Notify>, changes: &Arc<Mutex<Changes>>) -> Arc<Mutex<PodTable>> {
    let table = Arc::new(Mutex::new(PodTable::default()));
    let (changed, changes, t) = (Arc::clone(changed), Arc::clone(changes), Arc::clone(&table));
    let config = watcher::Config::default().any_semantic();
    let stream = watcher::watcher(api, config).default_backoff();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("watch: {e}");
                    continue;
                }
            };
            let mut table = t.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match event {
                watcher::Event::Init => table.relist = Some(Default::default()),
                watcher::Event::InitApply(pod) => {
                    if let (Some(relist), Some(info)) = (table.relist.as_mut(), pod_info(&pod)) {
                        relist.insert(pod_key(&pod), info);
                    }
                    continue; // the list is one change, when it is complete
                }
                watcher::Event::InitDone => {
                    table.pods = table.relist.take().unwrap_or_default();
                    table.ready = true;
                }
                watcher::Event::Apply(pod) => match pod_info(&pod) {
                    Some(info) => {
                        table.pods.insert(pod_key(&pod), info);
                    }
                    None => {
                        table.pods.remove(&pod_key(&pod));
                    }
                },
                watcher::Event::Delete(pod) => {
                    table.pods.remove(&pod_key(&pod));
                }
            }
            drop(table);
            changes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pods_or_policies = true;
            changed.notify_one();
        }
    });
    table
}

/// Starts a reflector for `K` on the runtime; every change is noted in `changes` and wakes
/// `changed`.
fn reflect<K: Watched>(api: Api<K>, changed: &Arc<Notify>, changes: &Arc<Mutex<Changes>>) -> Store<K> {
    reflect_selected(api, None, changed, changes)
}

/// kube-proxy's server-side filter on Services and EndpointSlices: not those another proxy
/// serves (`service-proxy-name`), nor headless Services' slices.
const PROXY_SELECTOR: &str = "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";

/// [`reflect`], of the objects `labels` selects (server-side).
fn reflect_selected<K: Watched>(api: Api<K>, labels: Option<&str>, changed: &Arc<Notify>, changes: &Arc<Mutex<Changes>>) -> Store<K> {
    let (reader, writer) = reflector::store();
    let (changed, changes) = (Arc::clone(changed), Arc::clone(changes));
    // Streaming lists where the server has them (1.34+ by default), a paged list elsewhere.
    let mut config = watcher::Config::default().any_semantic();
    if let Some(labels) = labels {
        config = config.labels(labels);
    }
    let trimmed = watcher::watcher(api, config).modify(K::trim);
    let stream = reflector::reflector(writer, trimmed).default_backoff().touched_objects();
    follow(stream, |o: &K| o.touches(), changed, changes);
    reader
}

/// Spawns the loop that notes what each object of `stream` touches in `changes` and wakes
/// `changed`.
fn follow<T, E: std::fmt::Display>(
    stream: impl futures::Stream<Item = Result<T, E>> + Send + 'static,
    touches: impl Fn(&T) -> Touches + Send + 'static,
    changed: Arc<Notify>,
    changes: Arc<Mutex<Changes>>,
) {
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(object) => {
                    let mut c = changes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    match touches(&object) {
                        Touches::Service(ns, name) => {
                            c.services.insert((ns, name));
                        }
                        Touches::PodsOrPolicies => c.pods_or_policies = true,
                        Touches::Other => c.other = true,
                    }
                }
                Err(e) => eprintln!("watch: {e}"),
            }
            changed.notify_one();
        }
    });
}

/// Every object of a store, as the loader would give it (the API server has validated and
/// defaulted them already; typed copies, without a trip through JSON).
fn typed<K: Watched>(store: &Store<K>, wrap: fn(Box<K>) -> Object, out: &mut Vec<Loaded>) {
    let location = Location { file: "the API server".into(), document: 0, item: None };
    out.extend(store.state().iter().map(|o| Loaded { location: location.clone(), object: wrap(Box::new(o.as_ref().clone())) }));
}

impl Stores {
    /// Watches what a node agent reads, cluster-wide (Services and EndpointSlices filtered as
    /// kube-proxy filters them); `changed` is notified after each change.
    pub fn start(client: &Client, changed: &Arc<Notify>) -> Stores {
        let mut s = Stores::start_selected(client, changed, Some(PROXY_SELECTOR));
        s.nodes = Some(reflect(Api::all(client.clone()), changed, &s.changes));
        s.policies = Some(reflect(Api::all(client.clone()), changed, &s.changes));
        s
    }

    /// Watches what the cluster DNS answers from (CoreDNS's `kubernetes` plugin watches the
    /// same): Namespaces, Services, EndpointSlices, Pods.
    pub fn start_for_dns(client: &Client, changed: &Arc<Notify>) -> Stores {
        Stores::start_selected(client, changed, None)
    }

    fn start_selected(client: &Client, changed: &Arc<Notify>, services: Option<&str>) -> Stores {
        let changes = Arc::new(Mutex::new(Changes::default()));
        Stores {
            namespaces: reflect(Api::all(client.clone()), changed, &changes),
            services: reflect_selected(Api::all(client.clone()), services, changed, &changes),
            slices: reflect_selected(Api::all(client.clone()), services, changed, &changes),
            pods: watch_pods(Api::all(client.clone()), changed, &changes),
            pod_objects: None,
            nodes: None,
            policies: None,
            routing: None,
            gateway_api: Vec::new(),
            changes,
        }
    }

    /// Every kind a lab on a real control plane mirrors (unfiltered: its DNS answers every
    /// Service; with Ingresses, IngressClasses and Secrets for its ingress controller), and the
    /// Pod objects themselves (its kubelet's part writes their status).
    pub fn start_with_pod_objects(client: &Client, changed: &Arc<Notify>) -> Stores {
        let mut s = Stores::start_for_ingress(client, changed);
        s.nodes = Some(reflect(Api::all(client.clone()), changed, &s.changes));
        s.policies = Some(reflect(Api::all(client.clone()), changed, &s.changes));
        s.pod_objects = Some(reflect(Api::all(client.clone()), changed, &s.changes));
        s
    }

    /// Watches what the ingress controller serves: the cluster DNS's kinds (Services and their
    /// endpoints) and Ingresses, IngressClasses and Secrets.
    pub fn start_for_ingress(client: &Client, changed: &Arc<Notify>) -> Stores {
        let mut s = Stores::start_for_dns(client, changed);
        s.routing = Some(Routing {
            ingresses: reflect(Api::all(client.clone()), changed, &s.changes),
            classes: reflect(Api::all(client.clone()), changed, &s.changes),
            secrets: reflect(Api::all(client.clone()), changed, &s.changes),
        });
        s
    }

    /// Also watches the Gateway API's GatewayClasses, Gateways and HTTPRoutes (v1) and
    /// ReferenceGrants (v1beta1), those of them the API server serves; how many kinds it serves.
    pub async fn watch_gateway_api(&mut self, client: &Client, changed: &Arc<Notify>) -> usize {
        use kube::api::{DynamicObject, GroupVersionKind};
        use kube::discovery::ApiResource;
        const GROUP: &str = "gateway.networking.k8s.io";
        for (version, kind, plural) in [
            ("v1", "GatewayClass", "gatewayclasses"),
            ("v1", "Gateway", "gateways"),
            ("v1", "HTTPRoute", "httproutes"),
            ("v1beta1", "ReferenceGrant", "referencegrants"),
        ] {
            let served = client.list_api_group_resources(&format!("{GROUP}/{version}")).await.is_ok_and(|l| l.resources.iter().any(|r| r.name == plural));
            if !served {
                continue;
            }
            let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, version, kind), plural);
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            let writer = reflector::store::Writer::new(resource.clone());
            let reader = writer.as_reader();
            let stream = reflector::reflector(writer, watcher::watcher(api, watcher::Config::default().any_semantic())).default_backoff().touched_objects();
            follow(stream, |_: &DynamicObject| Touches::Other, Arc::clone(changed), Arc::clone(&self.changes));
            self.gateway_api.push((resource, reader));
        }
        for (_, store) in &self.gateway_api {
            let _ = store.wait_until_ready().await;
        }
        self.gateway_api.len()
    }

    /// A Gateway API object as the API server has it.
    pub fn gateway_api_object(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Arc<kube::api::DynamicObject>> {
        let (resource, store) = self.gateway_api.iter().find(|(r, _)| r.kind == kind)?;
        let key = reflector::ObjectRef::new_with(name, resource.clone());
        store.get(&match namespace {
            Some(ns) => key.within(ns),
            None => key,
        })
    }

    /// The API resource of a Gateway API kind this source watches.
    pub fn gateway_api_resource(&self, kind: &str) -> Option<kube::discovery::ApiResource> {
        self.gateway_api.iter().find(|(r, _)| r.kind == kind).map(|(r, _)| r.clone())
    }

    /// What changed since the last call (a change seen before a snapshot is in it: take the
    /// changes first, then read).
    pub fn take_changes(&self) -> Changes {
        std::mem::take(&mut *self.changes.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// One Service and its EndpointSlices, as the API server has them now (`None`: deleted).
    pub fn service(&self, namespace: &str, name: &str) -> (Option<Arc<Service>>, Vec<Arc<EndpointSlice>>) {
        let svc = self.services.get(&reflector::ObjectRef::new(name).within(namespace));
        let slices = self.slices.state().into_iter().filter(|s| s.service().is_some_and(|(ns, n)| ns == namespace && n == name)).collect();
        (svc, slices)
    }

    /// The Ingresses as the API server has them (for status written back).
    pub fn ingresses(&self) -> Vec<Arc<Ingress>> {
        self.routing.as_ref().map(|r| r.ingresses.state()).unwrap_or_default()
    }

    /// The Services as the API server has them.
    pub fn services(&self) -> Vec<Arc<Service>> {
        self.services.state()
    }

    /// Waits until every watch has its first full list.
    pub async fn ready(&self) -> Result<(), String> {
        let e = |what: &'static str| move |err: reflector::store::WriterDropped| format!("{what}: {err}");
        self.namespaces.wait_until_ready().await.map_err(e("namespaces"))?;
        self.services.wait_until_ready().await.map_err(e("services"))?;
        self.slices.wait_until_ready().await.map_err(e("endpointslices"))?;
        while !self.pods.lock().unwrap_or_else(std::sync::PoisonError::into_inner).ready {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if let Some(pods) = &self.pod_objects {
            pods.wait_until_ready().await.map_err(e("pods"))?;
        }
        if let Some(nodes) = &self.nodes {
            nodes.wait_until_ready().await.map_err(e("nodes"))?;
        }
        if let Some(policies) = &self.policies {
            policies.wait_until_ready().await.map_err(e("networkpolicies"))?;
        }
        if let Some(r) = &self.routing {
            r.ingresses.wait_until_ready().await.map_err(e("ingresses"))?;
            r.classes.wait_until_ready().await.map_err(e("ingressclasses"))?;
            r.secrets.wait_until_ready().await.map_err(e("secrets"))?;
        }
        Ok(())
    }

    /// The Pod objects as the API server has them (for status written back; only with
    /// [`Stores::start_with_pod_objects`]).
    pub fn pods(&self) -> Vec<Arc<Pod>> {
        self.pod_objects.as_ref().map(Store::state).unwrap_or_default()
    }

    /// Everything watched, as one snapshot. The kinds the planners read in bulk (Namespaces,
    /// Nodes, Services, EndpointSlices, Pods, NetworkPolicies) are taken as typed copies (the
    /// API server validated and defaulted them); the routing kinds go through the manifest
    /// loader, which keeps the Secrets an ingress controller serves (TLS) and checks them.
    pub fn snapshot(&self) -> Result<ClusterState, model::ManifestError> {
        let mut loaded = Vec::new();
        typed(&self.namespaces, Object::Namespace, &mut loaded);
        if let Some(nodes) = &self.nodes {
            typed(nodes, Object::Node, &mut loaded);
        }
        typed(&self.services, Object::Service, &mut loaded);
        typed(&self.slices, Object::EndpointSlice, &mut loaded);
        if let Some(policies) = &self.policies {
            typed(policies, Object::NetworkPolicy, &mut loaded);
        }
        if let Some(r) = &self.routing {
            let mut values = Vec::new();
            fn add<K: Resource<DynamicType = ()> + Serialize + Clone>(values: &mut Vec<serde_json::Value>, store: &Store<K>) {
                values.extend(store.state().iter().filter_map(|o| serde_json::to_value(o.as_ref()).ok()));
            }
            add(&mut values, &r.ingresses);
            add(&mut values, &r.classes);
            add(&mut values, &r.secrets);
            for (resource, store) in &self.gateway_api {
                values.extend(store.state().iter().filter_map(|o| {
                    let mut v = serde_json::to_value(o.as_ref()).ok()?;
                    v["apiVersion"] = resource.api_version.clone().into();
                    v["kind"] = resource.kind.clone().into();
                    Some(v)
                }));
            }
            // One object the loader refuses is left out and said, rather than stopping every sync.
            for value in values {
                match model::load::load_values([value], std::path::Path::new("the API server")) {
                    Ok(objects) => loaded.extend(objects),
                    Err(e) => eprintln!("left out: {e}"),
                }
            }
        }
        let mut state = ClusterState::from_objects(&loaded)?;
        // The Pods, read already (in the loader's order: namespace, name).
        state.pods = self.pods.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pods.values().cloned().collect();
        Ok(state)
    }
}
