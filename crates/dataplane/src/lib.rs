//! The only podnet crate that touches the kernel: network namespaces ([`netns`]), links,
//! addresses and routes over rtnetlink ([`link`]), nftables transactions ([`nft`]) and pod
//! source NAT on them ([`masquerade`]), connection tracking ([`conntrack`]) and `/proc/sys`
//! ([`sysctl`]). It knows nothing of Kubernetes.

pub mod conntrack;
pub mod ctevents;
pub mod link;
pub mod masquerade;
pub mod neighbour;
pub mod netns;
pub mod nflog;
pub mod nfnetlink;
pub mod nft;
pub mod nlmsg;
pub mod sysctl;
pub mod tun;

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

/// Makes glibc serve every thread from one heap (`M_ARENA_MAX` 1). A long-lived process whose
/// threads come and go (one per network-namespace entry) otherwise gets a heap per thread, each
/// keeping the memory its last large allocation left: measured on the node agent at 10,000
/// Services (`podnet bench agent`), see docs/kubernetes.md.
#[allow(unsafe_code)]
pub fn one_malloc_arena() {
    // SAFETY: mallopt takes two integers and only sets the allocator's own parameter.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1);
    }
}
