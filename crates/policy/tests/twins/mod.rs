//! The dual-stack twin of a single-stack cluster, shared by the policy tests that check every
//! verdict again in both families.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv6Net};
use model::ClusterState;
use policy::PolicySet;
use policy::spec::{IpBlock, Peer};

/// The IPv6 twin of an IPv4 address: `fd00::` and its 32 bits (`10.244.1.1` is `fd00::af4:101`).
pub fn v6_twin(v4: Ipv4Addr) -> Ipv6Addr {
    Ipv6Addr::from((0xfd00_u128 << 112) | u128::from(u32::from(v4)))
}

pub fn net_twin(net: &IpNet) -> Option<IpNet> {
    match net {
        IpNet::V4(n) => Some(IpNet::V6(Ipv6Net::new(v6_twin(n.addr()), n.prefix_len() + 96).unwrap())),
        IpNet::V6(_) => None,
    }
}

/// A dual-stack twin of a cluster: every pod has the IPv6 twin of its IPv4 address as a second
/// one, and every IPv4 `ipBlock` has its IPv6 twin beside it as one more peer (its `except`
/// twinned too). An address is in a twin block exactly when its IPv4 twin is in the block, so
/// IPv6 packets must be judged as IPv4 ones are; an IPv6 block admits no IPv4 address, so the
/// twins change nothing for IPv4.
pub fn dual_stack(state: &ClusterState, policies: &PolicySet) -> (ClusterState, PolicySet) {
    let mut state = state.clone();
    for pod in &mut state.pods {
        let twins: Vec<IpAddr> = pod.ips.iter().filter_map(|ip| if let IpAddr::V4(v4) = ip { Some(IpAddr::V6(v6_twin(*v4))) } else { None }).collect();
        pod.ips.extend(twins);
    }
    let mut policies = policies.clone();
    for policy in &mut policies.policies {
        for rule in policy.ingress.iter_mut().chain(policy.egress.iter_mut()).flatten() {
            let Some(peers) = &mut rule.peers else { continue };
            let twins: Vec<Peer> = peers
                .iter()
                .filter_map(|peer| match peer {
                    Peer::IpBlock(block) => {
                        let cidr = net_twin(&block.cidr)?;
                        let except: Vec<IpNet> = block.except.iter().filter_map(net_twin).collect();
                        let except_text = except.iter().map(ToString::to_string).collect();
                        Some(Peer::IpBlock(IpBlock { cidr, except, cidr_text: cidr.to_string(), except_text }))
                    }
                    Peer::Pods { .. } => None,
                })
                .collect();
            peers.extend(twins);
        }
    }
    (state, policies)
}
