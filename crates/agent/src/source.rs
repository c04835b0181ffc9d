//! The API server as a source of objects: one reflector (list, then watch, relisting on a 410)
//! per kind the node's planners read, and a snapshot of all of them as a `ClusterState` through
//! the same loader and checks manifests go through.

use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass, NetworkPolicy};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, Resource};
use model::ClusterState;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

/// The objects the node agent reads, each kept current by its own watch.
#[derive(Clone)]
pub struct Stores {
    namespaces: Store<Namespace>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    pods: Store<Pod>,
    /// Not watched by the cluster DNS, which needs neither (nor may list them).
    nodes: Option<Store<Node>>,
    policies: Option<Store<NetworkPolicy>>,
    /// Watched by the ingress controller only.
    routing: Option<Routing>,
}

/// What the ingress controller routes by: Ingresses, IngressClasses, and Secrets (TLS).
#[derive(Clone)]
struct Routing {
    ingresses: Store<Ingress>,
    classes: Store<IngressClass>,
    secrets: Store<Secret>,
}

/// Starts a reflector for `K` on the runtime; every change wakes `changed`.
fn reflect<K>(api: Api<K>, changed: &Arc<Notify>) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let changed = Arc::clone(changed);
    // Streaming lists where the server has them (1.34+ by default), a paged list elsewhere.
    let config = watcher::Config::default().any_semantic();
    let stream = reflector::reflector(writer, watcher::watcher(api, config)).default_backoff().touched_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                eprintln!("watch: {e}");
            }
            changed.notify_one();
        }
    });
    reader
}

impl Stores {
    /// Watches every kind, cluster-wide; `changed` is notified after each change.
    pub fn start(client: &Client, changed: &Arc<Notify>) -> Stores {
        Stores {
            nodes: Some(reflect(Api::all(client.clone()), changed)),
            policies: Some(reflect(Api::all(client.clone()), changed)),
            ..Stores::start_for_dns(client, changed)
        }
    }

    /// Watches what the cluster DNS answers from (CoreDNS's `kubernetes` plugin watches the
    /// same): Namespaces, Services, EndpointSlices, Pods.
    pub fn start_for_dns(client: &Client, changed: &Arc<Notify>) -> Stores {
        Stores {
            namespaces: reflect(Api::all(client.clone()), changed),
            services: reflect(Api::all(client.clone()), changed),
            slices: reflect(Api::all(client.clone()), changed),
            pods: reflect(Api::all(client.clone()), changed),
            nodes: None,
            policies: None,
            routing: None,
        }
    }

    /// Watches what the ingress controller serves: the cluster DNS's kinds (Services and their
    /// endpoints) and Ingresses, IngressClasses and Secrets.
    pub fn start_for_ingress(client: &Client, changed: &Arc<Notify>) -> Stores {
        let routing = Routing {
            ingresses: reflect(Api::all(client.clone()), changed),
            classes: reflect(Api::all(client.clone()), changed),
            secrets: reflect(Api::all(client.clone()), changed),
        };
        Stores { routing: Some(routing), ..Stores::start_for_dns(client, changed) }
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
        self.pods.wait_until_ready().await.map_err(e("pods"))?;
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

    /// The Pods as the API server has them (for status written back).
    pub fn pods(&self) -> Vec<Arc<Pod>> {
        self.pods.state()
    }

    /// Everything watched, as one snapshot (read through the manifest loader, so objects the
    /// API server holds meet the same checks and defaults as files do).
    pub fn snapshot(&self) -> Result<ClusterState, model::ManifestError> {
        let mut values = Vec::new();
        fn add<K: Resource<DynamicType = ()> + Serialize + Clone>(values: &mut Vec<serde_json::Value>, store: &Store<K>) {
            values.extend(store.state().iter().filter_map(|o| serde_json::to_value(o.as_ref()).ok()));
        }
        add(&mut values, &self.namespaces);
        if let Some(nodes) = &self.nodes {
            add(&mut values, nodes);
        }
        add(&mut values, &self.services);
        add(&mut values, &self.slices);
        add(&mut values, &self.pods);
        if let Some(policies) = &self.policies {
            add(&mut values, policies);
        }
        if let Some(r) = &self.routing {
            add(&mut values, &r.ingresses);
            add(&mut values, &r.classes);
            add(&mut values, &r.secrets);
        }
        // One object the loader refuses (a kind's field podnet does not know how to read) is left
        // out and said, rather than stopping every sync.
        let mut loaded = Vec::with_capacity(values.len());
        for value in values {
            match model::load::load_values([value], std::path::Path::new("the API server")) {
                Ok(objects) => loaded.extend(objects),
                Err(e) => eprintln!("left out: {e}"),
            }
        }
        ClusterState::from_objects(&loaded)
    }
}
