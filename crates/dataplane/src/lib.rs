//! The only podnet crate that touches the kernel: network namespaces ([`netns`]), links,
//! addresses and routes over rtnetlink ([`link`]), nftables transactions ([`nft`]) and pod
//! source NAT on them ([`masquerade`]). It knows nothing of Kubernetes.

pub mod link;
pub mod masquerade;
pub mod netns;
pub mod nfnetlink;
pub mod nft;

pub use link::{LinkInfo, Netlink, RouteInfo, VxlanSpec};
