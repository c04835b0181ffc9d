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
    let (set, errors) = PolicySet::compile_valid(view);
    for e in errors {
        eprintln!("not enforced: {e}");
    }
    set
}

/// TCP states of a connection that can still carry data.
const LIVE_TCP: [&str; 4] = [" ESTABLISHED ", " SYN_SENT ", " SYN_RECV ", " CLOSE_WAIT "];

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
    let listed = String::from_utf8_lossy(&out.stdout);
    // TCP connections that are closing or closed carry nothing more: only live ones matter.
    let live: String = listed.lines().filter(|l| !l.starts_with("tcp") || LIVE_TCP.iter().any(|s| l.contains(s))).map(|l| format!("{l}\n")).collect();
    // One deletion per source, frontend and endpoint (every source port at once): a node's
    // flows between the same two pods on one port share a verdict.
    let mut doomed = std::collections::BTreeSet::new();
    for f in proxy::conntrack::parse_list(&live) {
        if is_own(f.orig_src) || is_own(f.reply_src) {
            continue;
        }
        let (IpAddr::V4(from), IpAddr::V4(to)) = (f.orig_src, f.reply_src) else { continue };
        if !enforcement.allows(from, to, Some(f.protocol), f.reply_sport) {
            doomed.insert((f.protocol.as_str().to_ascii_lowercase(), f.orig_src, f.orig_dst, f.orig_dport, f.reply_src));
        }
    }
    let count = doomed.len();
    if count == 0 {
        return 0;
    }
    let deleted = netns::run_in(&path, move || {
        for (proto, src, dst, dport, endpoint) in &doomed {
            let _ = std::process::Command::new("conntrack")
                .args(["-D", "-p", proto, "-s", &src.to_string(), "-d", &dst.to_string(), "--dport", &dport.to_string(), "-r", &endpoint.to_string()])
                .output();
        }
    });
    match deleted {
        Ok(()) => eprintln!("policy {}: cut the established connections of {count} client/port/endpoint triple(s) the policies now deny", node.name),
        Err(e) => eprintln!("policy {}: deleting conntrack entries: {e}", node.name),
    }
    count
}
