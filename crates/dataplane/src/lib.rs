//! The only podnet crate that touches the kernel: network namespaces ([`netns`]), links,
//! addresses and routes over rtnetlink ([`link`]), and pod source NAT on nftables
//! ([`masquerade`]). It knows nothing of Kubernetes.

pub mod link;
pub mod masquerade;
pub mod netns;

pub use link::{LinkInfo, Netlink, RouteInfo, VxlanSpec};
