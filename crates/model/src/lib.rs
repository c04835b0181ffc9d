//! podnet's cluster model: Kubernetes objects as podnet reads them.
//!
//! - [`load`]: manifests from files and directories, like `kubectl apply -f`;
//! - [`cluster`]: [`ClusterState`], the snapshot every planner computes from;
//! - [`endpoints`]: the EndpointSlice controller as a pure function;
//! - [`allocate`]: ClusterIPs and NodePorts, as the API server allocates them;
//! - [`selector`]: label selectors compiled for matching;
//! - [`validation`]: field checks with the API server's messages;
//! - [`error`]: errors that name file, document, object and field.

pub mod allocate;
pub mod cluster;
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
