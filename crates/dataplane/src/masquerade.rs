//! Source NAT for pods leaving their network (the bridge plugin's `ipMasq`), on nftables.
//!
//! One table per family, `podnet-cni`; per network a base chain on the postrouting hook and two
//! sets: the network's subnets and its pods' addresses. ADD and DEL only add or remove set
//! elements, in one `nft -f -` transaction each; the chain's single rule is rewritten in the
//! same transaction, so the state is right however often ADD runs.

use std::io;
use std::net::IpAddr;

use ipnet::IpNet;

/// nftables' table for the plugin's NAT rules.
pub const TABLE: &str = "podnet-cni";

/// A short, nft-safe identifier for a network name.
fn tag(network: &str) -> String {
    use std::hash::Hasher;
    let mut h = fnv::FnvHasher::default();
    h.write(network.as_bytes());
    format!("{:08x}", h.finish() as u32)
}

fn family(v6: bool) -> (&'static str, &'static str, &'static str, &'static str) {
    // (nft family, address type, match keyword, multicast range)
    if v6 { ("ip6", "ipv6_addr", "ip6", "ff00::/8") } else { ("ip", "ipv4_addr", "ip", "224.0.0.0/4") }
}

/// The transaction that masquerades `pods` of `network` when they leave `subnets`.
pub fn add_script(network: &str, subnets: &[IpNet], pods: &[IpAddr]) -> String {
    let t = tag(network);
    let mut s = String::new();
    for v6 in [false, true] {
        let pods: Vec<String> = pods.iter().filter(|ip| ip.is_ipv6() == v6).map(ToString::to_string).collect();
        if pods.is_empty() {
            continue;
        }
        let nets: Vec<String> = subnets.iter().filter(|n| n.addr().is_ipv6() == v6).map(|n| n.trunc().to_string()).collect();
        let (fam, ty, kw, mcast) = family(v6);
        s.push_str(&format!(
            "add table {fam} {TABLE}\n\
             add set {fam} {TABLE} pods_{t} {{ type {ty}; comment \"network {network}\"; }}\n\
             add set {fam} {TABLE} subnets_{t} {{ type {ty}; flags interval; auto-merge; }}\n\
             add chain {fam} {TABLE} masq_{t} {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
             flush chain {fam} {TABLE} masq_{t}\n\
             add rule {fam} {TABLE} masq_{t} {kw} saddr @pods_{t} {kw} daddr != @subnets_{t} {kw} daddr != {mcast} masquerade\n"
        ));
        if !nets.is_empty() {
            s.push_str(&format!("add element {fam} {TABLE} subnets_{t} {{ {} }}\n", nets.join(", ")));
        }
        s.push_str(&format!("add element {fam} {TABLE} pods_{t} {{ {} }}\n", pods.join(", ")));
    }
    s
}

/// The transaction that stops masquerading `pods` (a no-op for addresses not there).
pub fn del_script(network: &str, pods: &[IpAddr]) -> String {
    let t = tag(network);
    let mut s = String::new();
    for v6 in [false, true] {
        let pods: Vec<String> = pods.iter().filter(|ip| ip.is_ipv6() == v6).map(ToString::to_string).collect();
        if pods.is_empty() {
            continue;
        }
        let (fam, ty, _, _) = family(v6);
        let list = pods.join(", ");
        // Adding first makes the delete succeed when the element (or table) is already gone.
        s.push_str(&format!(
            "add table {fam} {TABLE}\n\
             add set {fam} {TABLE} pods_{t} {{ type {ty}; comment \"network {network}\"; }}\n\
             add element {fam} {TABLE} pods_{t} {{ {list} }}\n\
             delete element {fam} {TABLE} pods_{t} {{ {list} }}\n"
        ));
    }
    s
}

/// Runs a transaction (see [`crate::nft::apply`]).
pub fn apply(script: &str) -> io::Result<()> {
    crate::nft::apply(script)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_touch_only_their_network() {
        let s = add_script("podnet", &["10.99.0.0/24".parse().unwrap()], &["10.99.0.2".parse().unwrap()]);
        let t = tag("podnet");
        assert!(s.contains(&format!("add element ip podnet-cni pods_{t} {{ 10.99.0.2 }}")));
        assert!(s.contains(&format!("ip saddr @pods_{t} ip daddr != @subnets_{t} ip daddr != 224.0.0.0/4 masquerade")));
        assert!(!s.contains("ip6"), "no IPv6 pods, no IPv6 table");
        let d = del_script("podnet", &["fd00::2".parse().unwrap()]);
        assert!(d.contains(&format!("delete element ip6 podnet-cni pods_{t} {{ fd00::2 }}")));
        assert_ne!(tag("a"), tag("b"));
    }
}
