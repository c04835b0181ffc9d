//! Flows the kernel keeps that new rules make wrong: UDP flows conntrack pinned to an endpoint
//! that is gone, or that missed the DNAT while a Service had no endpoints (kube-proxy's
//! conntrack cleanup), and established connections the NetworkPolicies now deny (the rules
//! accept established traffic before judging it, so such a connection would go on). What to
//! delete is chosen purely; listing and deleting go through `dataplane::conntrack`, in the
//! calling thread's network namespace.

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;

use model::Protocol;
use proxy::NodePlan;

/// TCP states of a connection that can still carry data.
const LIVE_TCP: [&str; 4] = [" ESTABLISHED ", " SYN_SENT ", " SYN_RECV ", " CLOSE_WAIT "];

/// The connections from one client to one frontend port that reach one endpoint (every source
/// port at once: a node's flows between the same two pods on one port share a verdict).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Connections {
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// The client.
    pub client: IpAddr,
    /// What it connected to (a Service frontend, or the endpoint itself).
    pub frontend: IpAddr,
    /// The frontend's port.
    pub port: u16,
    /// The endpoint the connection reaches.
    pub endpoint: IpAddr,
}

impl Connections {
    /// The `conntrack -D` arguments that delete them.
    pub fn delete_args(&self) -> Vec<String> {
        let family = if self.client.is_ipv6() { "ipv6" } else { "ipv4" };
        [
            ("-f", family.to_owned()),
            ("-p", self.protocol.clone()),
            ("-s", self.client.to_string()),
            ("-d", self.frontend.to_string()),
            ("--dport", self.port.to_string()),
            ("-r", self.endpoint.to_string()),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_owned(), v])
        .collect()
    }
}

/// The live connections in `listing` (`conntrack -L`) that `allows(from, to, protocol, port)`
/// denies. Connections from or to the node's own addresses (`own`) do not cross the forward
/// hook the policies are judged in, and stay.
pub fn denied(listing: &str, own: &[IpAddr], allows: impl Fn(IpAddr, IpAddr, Protocol, u16) -> bool) -> BTreeSet<Connections> {
    // TCP connections that are closing or closed carry nothing more: only live ones matter.
    let live: String = listing.lines().filter(|l| !l.starts_with("tcp") || LIVE_TCP.iter().any(|s| l.contains(s))).map(|l| format!("{l}\n")).collect();
    let mut doomed = BTreeSet::new();
    for f in proxy::conntrack::parse_list(&live) {
        if own.contains(&f.orig_src) || own.contains(&f.reply_src) {
            continue;
        }
        if !allows(f.orig_src, f.reply_src, f.protocol, f.reply_sport) {
            doomed.insert(Connections {
                protocol: f.protocol.as_str().to_ascii_lowercase(),
                client: f.orig_src,
                frontend: f.orig_dst,
                port: f.orig_dport,
                endpoint: f.reply_src,
            });
        }
    }
    doomed
}

/// This namespace's connections (`conntrack -L`) and its own addresses: what [`denied`] reads.
pub fn listing() -> io::Result<(String, Vec<IpAddr>)> {
    let own = dataplane::Netlink::connect()?.all_addresses()?.iter().map(ipnet::IpNet::addr).collect();
    Ok((dataplane::conntrack::list(None)?, own))
}

/// Deletes `doomed` in this namespace, so that their next packet is a new connection to the
/// rules, which drop it.
pub fn delete(doomed: &BTreeSet<Connections>) -> io::Result<()> {
    for c in doomed {
        dataplane::conntrack::delete(&c.delete_args())?;
    }
    Ok(())
}

/// Deletes the UDP flows in this namespace that `plan` (all of the node's ports, or only those
/// of the Services that changed) makes stale. Returns how many went.
pub fn clear_stale_udp(plan: &NodePlan) -> io::Result<usize> {
    let stale = plan.stale_flows(&proxy::conntrack::parse_list(&dataplane::conntrack::list(Some("udp"))?));
    for flow in &stale {
        dataplane::conntrack::delete(&flow.delete_args())?;
    }
    Ok(stale.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "\
tcp      6 431999 ESTABLISHED src=10.244.1.2 dst=10.96.0.20 sport=40000 dport=80 src=10.244.2.3 dst=10.244.1.2 sport=8080 dport=40000 [ASSURED] mark=0 use=1
tcp      6 431999 ESTABLISHED src=10.244.1.2 dst=10.96.0.20 sport=40001 dport=80 src=10.244.2.3 dst=10.244.1.2 sport=8080 dport=40001 [ASSURED] mark=0 use=1
tcp      6 119 TIME_WAIT src=10.244.1.4 dst=10.244.2.3 sport=40002 dport=8080 src=10.244.2.3 dst=10.244.1.4 sport=8080 dport=40002 [ASSURED] mark=0 use=1
tcp      6 431999 ESTABLISHED src=10.244.1.1 dst=10.244.2.3 sport=40003 dport=8080 src=10.244.2.3 dst=10.244.1.1 sport=8080 dport=40003 [ASSURED] mark=0 use=1
udp      17 29 src=10.244.1.5 dst=10.244.2.3 sport=5000 dport=53 src=10.244.2.3 dst=10.244.1.5 sport=53 dport=5000 mark=0 use=1
tcp      6 431999 ESTABLISHED src=fd00:10:244:1::2 dst=fd00:10:244:2::3 sport=40004 dport=8080 src=fd00:10:244:2::3 dst=fd00:10:244:1::2 sport=8080 dport=40004 [ASSURED] mark=0 use=1
";

    #[test]
    fn only_live_denied_connections_between_pods_are_cut_once_per_client_port_and_endpoint() {
        let own: [IpAddr; 1] = ["10.244.1.1".parse().unwrap()];
        let deny_to_8080 = |_: IpAddr, _: IpAddr, p: Protocol, port: u16| !(p == Protocol::Tcp && port == 8080);
        let doomed = denied(LISTING, &own, deny_to_8080);
        // The two source ports of one client to one Service make one deletion; the closed
        // connection and the node's own are left; UDP to port 53 is allowed; the IPv6
        // connection is judged and cut like the IPv4 ones (deleted from IPv6's table).
        assert_eq!(doomed.len(), 2, "{doomed:?}");
        let args: Vec<String> = doomed.iter().map(|c| c.delete_args().join(" ")).collect();
        assert_eq!(
            args,
            [
                "-f ipv4 -p tcp -s 10.244.1.2 -d 10.96.0.20 --dport 80 -r 10.244.2.3",
                "-f ipv6 -p tcp -s fd00:10:244:1::2 -d fd00:10:244:2::3 --dport 8080 -r fd00:10:244:2::3"
            ]
        );
        assert!(denied(LISTING, &own, |_, _, _, _| true).is_empty(), "nothing is denied");
        let all = denied(LISTING, &[], |_, _, _, _| false);
        assert_eq!(all.len(), 4, "without own addresses the node's connection is a pod's too: {all:?}");
    }
}
