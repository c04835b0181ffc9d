//! podnet's cluster model: Kubernetes objects as podnet reads them.
//!
//! - [`load`]: manifests from files and directories, like `kubectl apply -f`;
//! - [`cluster`]: [`ClusterState`], the snapshot every planner computes from;
//! - [`endpoints`]: the EndpointSlice controller as a pure function;
//! - [`allocate`]: ClusterIPs and NodePorts, as the API server allocates them;
//! - [`defaults`]: the fields the API server fills in on a Service;
//! - [`selector`]: label selectors compiled for matching;
//! - [`validation`]: field checks with the API server's messages;
//! - [`error`]: errors that name file, document, object and field.

pub mod allocate;
pub mod cluster;
pub mod defaults;
pub mod endpoints;
pub mod error;
pub mod gateway_api;
pub mod kinds;
pub mod load;
pub mod selector;
pub mod validation;

pub use cluster::{ClusterState, ContainerPort, DnsConfig, NamespaceInfo, Namespaced, PodInfo, PolicyObject, Protocol, Replicas};
pub use error::{LoadError, Location, ManifestError, ObjectRef};
pub use load::{Loaded, Object, load_paths, load_str};
pub use selector::{Labels, Selector};

/// Loads manifests from paths and builds a snapshot: what every `-f PATH...` flag does.
pub fn load_cluster<P: AsRef<std::path::Path>>(paths: &[P]) -> Result<ClusterState, LoadError> {
    let objects = load_paths(paths)?;
    Ok(ClusterState::from_objects(&objects)?)
}

/// [`load_cluster`], then every Service given the ClusterIP and NodePorts the API server would
/// give it (the same deterministic allocator as the lab's, so an offline command and a lab
/// made from the same files agree on every address): what `dns serve`, `proxy trace/render`
/// and `gateway serve` read.
pub fn load_cluster_served<P: AsRef<std::path::Path>>(paths: &[P]) -> Result<ClusterState, LoadError> {
    let mut state = load_cluster(paths)?;
    let ranges = allocate::Ranges::for_cluster(&state);
    allocate::allocate(&mut state.services, &ranges)?;
    Ok(state)
}
