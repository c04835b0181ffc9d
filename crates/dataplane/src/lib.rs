//! The only podnet crate that touches the kernel: network namespaces ([`netns`]), links,
//! addresses and routes over rtnetlink ([`link`]), nftables transactions ([`nft`]) and pod
//! source NAT on them ([`masquerade`]). It knows nothing of Kubernetes.

pub mod ctevents;
pub mod link;
pub mod masquerade;
pub mod neighbour;
pub mod netns;
pub mod nflog;
pub mod nfnetlink;
pub mod nft;
pub mod nlmsg;

pub use link::{LinkInfo, Netlink, RouteInfo, VxlanSpec};

/// Gives the heap's free pages back to the kernel (glibc's `malloc_trim`): after a large
/// transient allocation, such as parsing thousands of manifests into a compact view, glibc keeps
/// the freed memory mapped and the process's resident size stays at its peak.
#[allow(unsafe_code)]
pub fn release_free_memory() {
    // SAFETY: malloc_trim takes no pointers and only touches the allocator's own state.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}
