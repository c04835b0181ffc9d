//! The only podnet crate that touches the kernel: network namespaces ([`netns`]) and links,
//! addresses and routes over rtnetlink ([`link`]). It knows nothing of Kubernetes.

pub mod link;
pub mod netns;

pub use link::{LinkInfo, Netlink, RouteInfo};
