//! `--mode bgp`: a BIRD 2 daemon per lab node (and on the external host with `--bgp-external`),
//! configured by `node::bgp` from the lab's plan and what each node's agent may serve, and kept
//! running by the lab process: a daemon that died is started again, a changed announcement
//! reloads its configuration. The routes between nodes are only those BGP learned.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

use dataplane::netns;
use node::bgp::{Bird, NodeRouting, Speaker, Supervised};

use crate::name::LabName;
use crate::plan::{EXTERNAL_ASN, LabPlan};

/// Where a lab's daemons keep their configuration, sockets, pid files and logs.
pub fn dir(lab: &LabName) -> PathBuf {
    crate::state::dir(lab).join("bird")
}

/// The daemon of a node (or of `external`).
pub fn bird(plan: &LabPlan, who: &str) -> Bird {
    let netns = if who == "external" { plan.external_netns() } else { plan.nodes.iter().find(|n| n.name == who).map(|n| n.netns.clone()).unwrap_or_default() };
    Bird { netns: netns::path_of(&netns), stem: dir(&plan.config.name).join(who) }
}

/// The external host as a BGP speaker.
fn external(plan: &LabPlan) -> Speaker {
    Speaker { name: "external".into(), ip: plan.external_ip(), ip6: plan.external_ip6() }
}

/// A node as a BGP speaker.
fn speaker(n: &crate::plan::NodePlan) -> Speaker {
    Speaker { name: n.name.clone(), ip: n.ip, ip6: n.ip6 }
}

/// Every node's routing: its pod CIDR and the /32 of each LoadBalancer/external IP it may serve
/// (`may_serve`, by node, from its agent) announced, peers as the lab's settings say.
pub fn routings(plan: &LabPlan, may_serve: &BTreeMap<String, BTreeMap<IpAddr, bool>>) -> Vec<NodeRouting> {
    let Some(bgp) = &plan.config.bgp else { return Vec::new() };
    let nodes: Vec<(Speaker, Vec<ipnet::IpNet>)> = plan
        .nodes
        .iter()
        .map(|n| {
            let mut announce = n.pod_cidrs();
            for (ip, yes) in may_serve.get(&n.name).into_iter().flatten() {
                if *yes && let Ok(host) = ipnet::IpNet::new(*ip, if ip.is_ipv4() { 32 } else { 128 }) {
                    announce.push(host);
                }
            }
            (speaker(n), announce)
        })
        .collect();
    let peer = bgp.external.then(|| (external(plan), EXTERNAL_ASN));
    node::bgp::routing(&nodes, bgp.asn, bgp.route_reflectors, peer)
}

/// Makes every daemon of the lab run with its configuration (nothing in other modes). Returns
/// what changed, by speaker.
pub fn supervise(plan: &LabPlan, may_serve: &BTreeMap<String, BTreeMap<IpAddr, bool>>) -> io::Result<Vec<(String, Supervised)>> {
    let Some(bgp) = &plan.config.bgp else { return Ok(Vec::new()) };
    let mut done = Vec::new();
    for r in routings(plan, may_serve) {
        let s = bird(plan, &r.me.name).supervise(&node::bgp::config(&r)).map_err(|e| io::Error::new(e.kind(), format!("{}'s BIRD: {e}", r.me.name)))?;
        done.push((r.me.name.clone(), s));
    }
    if bgp.external {
        let nodes: Vec<Speaker> = plan.nodes.iter().map(speaker).collect();
        let config = node::bgp::external_config(&external(plan), EXTERNAL_ASN, &nodes, bgp.asn);
        let s = bird(plan, "external").supervise(&config).map_err(|e| io::Error::new(e.kind(), format!("the external host's BIRD: {e}")))?;
        done.push(("external".into(), s));
    }
    Ok(done)
}

/// Stops every daemon the lab started (from their pid files: also after a lab process died).
pub fn stop_all(lab: &LabName) {
    let Ok(entries) = std::fs::read_dir(dir(lab)) else { return };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "pid") {
            Bird { netns: PathBuf::new(), stem: path.with_extension("") }.stop();
        }
    }
}

/// Whether every node (and a peering external host) has a route to every other node's pod
/// CIDR through BGP: what `lab up` waits for.
pub fn converged(plan: &LabPlan) -> io::Result<bool> {
    let mut hosts: Vec<(String, Vec<ipnet::IpNet>)> = plan.nodes.iter().map(|n| (n.netns.clone(), n.pod_cidrs())).collect();
    if plan.config.bgp.as_ref().is_some_and(|b| b.external) {
        hosts.push((plan.external_netns(), Vec::new()));
    }
    for (ns, own) in hosts {
        let wanted: Vec<ipnet::IpNet> = plan.nodes.iter().flat_map(|n| n.pod_cidrs()).filter(|c| !own.contains(c)).collect();
        let routes = netns::run_in(&netns::path_of(&ns), || dataplane::Netlink::connect()?.all_routes())??;
        if !wanted.iter().all(|w| routes.iter().any(|r| r.dst == *w && r.gateway.is_some())) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// One route as `birdc show route` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BirdRoute {
    /// The destination.
    pub prefix: String,
    /// `unicast`, `blackhole`, ...
    pub kind: String,
    /// The protocol (session) it came from.
    pub from: String,
    /// Whether BIRD chose it (`*`).
    pub best: bool,
    /// Next hops.
    pub via: Vec<String>,
}

/// Reads `birdc show route` output.
pub fn parse_routes(text: &str) -> Vec<BirdRoute> {
    let mut out: Vec<BirdRoute> = Vec::new();
    let mut prefix = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("via ") {
            if let Some(last) = out.last_mut() {
                last.via.push(rest.split_whitespace().next().unwrap_or_default().to_owned());
            }
            continue;
        }
        let Some(open) = trimmed.find('[') else { continue };
        let mut words = trimmed[..open].split_whitespace();
        let (first, second) = (words.next(), words.next());
        let kind = match (line.starts_with(char::is_whitespace), first, second) {
            (false, Some(p), Some(k)) => {
                prefix = p.to_owned();
                k
            }
            (true, Some(k), None) => k,
            _ => continue,
        };
        let from = trimmed[open + 1..].split_whitespace().next().unwrap_or_default().trim_end_matches(']').to_owned();
        let best = trimmed[open..].contains(" * ");
        out.push(BirdRoute { prefix: prefix.clone(), kind: kind.to_owned(), from, best, via: Vec::new() });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn birdc_routes_parse_with_their_next_hops() {
        let text = "BIRD 2.0.12 ready.\nTable master4:\n10.244.3.0/24        blackhole [announced 05:18:49.367] * (200)\n172.18.255.1/32      unicast [node_node_1 05:18:50.258] * (100) [i]\n\tvia 172.18.0.2 on eth0\n                     unicast [node_node_2 05:18:50.181] (100) [i]\n\tvia 172.18.0.3 on eth0\n";
        let r = parse_routes(text);
        assert_eq!(r.len(), 3, "{r:?}");
        assert_eq!((r[0].prefix.as_str(), r[0].kind.as_str(), r[0].from.as_str(), r[0].best), ("10.244.3.0/24", "blackhole", "announced", true));
        assert_eq!((r[2].prefix.as_str(), r[2].from.as_str(), r[2].best), ("172.18.255.1/32", "node_node_2", false));
        assert_eq!(r[1].via, ["172.18.0.2"]);
        assert_eq!(r[2].via, ["172.18.0.3"]);
    }
}
