//! NetworkPolicy in the lab: the policies every node enforces (compiled by `policy::enforce`
//! into a table synced with the node's service proxy rules), and cutting the established
//! connections a change now denies.

use std::net::{IpAddr, Ipv4Addr};

use dataplane::netns;
use model::ClusterState;
use policy::PolicySet;
use policy::enforce::Enforcement;

use crate::plan::NodePlan;

/// The lab's policies, compiled. The CLI refuses invalid ones before they reach the state; one
/// that is there anyway (an older state file) is logged and left out, the rest still enforced.
pub fn compile(view: &ClusterState) -> PolicySet {
    match PolicySet::compile(view) {
        Ok(set) => set,
        Err(_) => PolicySet {
            policies: view
                .policies
                .iter()
                .filter_map(|p| policy::spec::compile(p).map_err(|e| eprintln!("policy {}/{}: not enforced: {e}", p.namespace, p.name)).ok())
                .collect(),
        },
    }
}

/// Deletes the node's conntrack entries of connections the policies now deny, so that their
/// next packet is a new connection to the rules, which drop it. Connections from or to the node
/// itself are not judged by the forward hook and stay. Returns how many went.
pub fn cut_denied_flows(node: &NodePlan, enforcement: &Enforcement<'_>) -> usize {
    let path = netns::path_of(&node.netns);
    let listed = netns::run_in(&path, || std::process::Command::new("conntrack").arg("-L").output());
    let Ok(Ok(out)) = listed else {
        eprintln!("policy {}: cannot list conntrack entries (is conntrack installed?)", node.name);
        return 0;
    };
    let own: [Ipv4Addr; 3] = [node.ip, node.gateway(), node.vxlan_ip()];
    let is_own = |ip: IpAddr| matches!(ip, IpAddr::V4(v4) if own.contains(&v4));
    let doomed: Vec<Vec<String>> = proxy::conntrack::parse_list(&String::from_utf8_lossy(&out.stdout))
        .into_iter()
        .filter(|f| !is_own(f.orig_src) && !is_own(f.reply_src))
        .filter(|f| match (f.orig_src, f.reply_src) {
            (IpAddr::V4(from), IpAddr::V4(to)) => !enforcement.allows(from, to, Some(f.protocol), f.reply_sport),
            _ => false,
        })
        .map(|f| f.delete_args())
        .collect();
    let count = doomed.len();
    if count == 0 {
        return 0;
    }
    let deleted = netns::run_in(&path, move || {
        for args in &doomed {
            let _ = std::process::Command::new("conntrack").arg("-D").args(args).output();
        }
    });
    match deleted {
        Ok(()) => eprintln!("policy {}: cut {count} established connection(s) the policies now deny", node.name),
        Err(e) => eprintln!("policy {}: deleting conntrack entries: {e}", node.name),
    }
    count
}
