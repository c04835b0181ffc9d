//! Stale UDP conntrack entries (kube-proxy's `pkg/proxy/conntrack/cleanup.go`): UDP has no
//! connection end, so a flow that conntrack pinned to an endpoint that is gone keeps going there,
//! and a flow that reached a service address while it had no endpoints keeps missing the DNAT.
//! Pure: the caller lists the node's flows (`conntrack -L -p udp`) and deletes what this says.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use model::Protocol;

use crate::plan::{NodePlan, PortPlan};

/// One conntrack entry, as `conntrack -L` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    /// Its protocol.
    pub protocol: Protocol,
    /// Original direction: source address and port.
    pub orig_src: IpAddr,
    /// Original source port.
    pub orig_sport: u16,
    /// Original destination (the service frontend for service traffic).
    pub orig_dst: IpAddr,
    /// Original destination port.
    pub orig_dport: u16,
    /// Reply direction source: the endpoint a DNATed flow goes to (else the original destination).
    pub reply_src: IpAddr,
    /// Reply source port.
    pub reply_sport: u16,
}

impl Flow {
    /// The `conntrack -D` arguments that delete exactly this flow.
    pub fn delete_args(&self) -> Vec<String> {
        let proto = self.protocol.as_str().to_ascii_lowercase();
        let family = if self.orig_src.is_ipv6() { "ipv6" } else { "ipv4" };
        [
            ("-f", family.to_owned()),
            ("-p", proto),
            ("--orig-src", self.orig_src.to_string()),
            ("--orig-dst", self.orig_dst.to_string()),
            ("--sport", self.orig_sport.to_string()),
            ("--dport", self.orig_dport.to_string()),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_owned(), v])
        .collect()
    }
}

/// Reads `conntrack -L` output; lines it does not understand are skipped.
pub fn parse_list(text: &str) -> Vec<Flow> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Flow> {
    let mut words = line.split_whitespace();
    let protocol: Protocol = words.next()?.parse().ok()?;
    let (mut src, mut dst, mut sport, mut dport) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            continue;
        };
        match k {
            "src" => src.push(v.parse::<IpAddr>().ok()?),
            "dst" => dst.push(v.parse::<IpAddr>().ok()?),
            "sport" => sport.push(v.parse::<u16>().ok()?),
            "dport" => dport.push(v.parse::<u16>().ok()?),
            _ => {}
        }
    }
    Some(Flow {
        protocol,
        orig_src: *src.first()?,
        orig_sport: *sport.first()?,
        orig_dst: *dst.first()?,
        orig_dport: *dport.first()?,
        reply_src: *src.get(1)?,
        reply_sport: *sport.get(1)?,
    })
}

/// Each UDP service port's endpoints (address, port), by namespace, Service and port: what
/// decides whether a change can leave stale flows.
pub type UdpEndpoints = BTreeMap<(String, String, u16), BTreeSet<(IpAddr, u16)>>;

/// The UDP service ports among `ports`, with their endpoints.
pub fn udp_endpoints(ports: &[PortPlan]) -> UdpEndpoints {
    ports
        .iter()
        .filter(|p| p.port.protocol == Protocol::Udp)
        .map(|p| ((p.port.namespace.clone(), p.port.service.clone(), p.port.port), p.cluster.iter().chain(&p.local).filter_map(|e| e.ip_port()).collect()))
        .collect()
}

/// Whether going from `before` to `after` can leave stale UDP flows (see
/// [`NodePlan::stale_flows`]): a UDP service port lost an endpoint, or had none and has some now.
pub fn may_leave_stale(before: &UdpEndpoints, after: &UdpEndpoints) -> bool {
    after.iter().any(|(port, now)| match before.get(port) {
        // Gained its first endpoints: flows that missed the DNAT must go.
        None => !now.is_empty(),
        Some(was) => (was.is_empty() && !now.is_empty()) || was.iter().any(|ep| !now.contains(ep)),
    }) || before.iter().any(|(port, was)| !was.is_empty() && !after.contains_key(port))
}

impl NodePlan {
    /// Whether going from `old` to this plan can leave stale UDP flows (see [`may_leave_stale`]);
    /// without an old plan, always. Listing a node's flows walks the kernel's whole conntrack
    /// table, so it is done only when this says so (as kube-proxy cleans up only for the
    /// endpoints a sync removed).
    pub fn may_leave_stale_udp_flows(&self, old: Option<&NodePlan>) -> bool {
        let Some(old) = old else { return true };
        may_leave_stale(&udp_endpoints(&old.ports), &udp_endpoints(&self.ports))
    }

    /// The UDP flows to delete: those DNATed to an endpoint the service port no longer uses,
    /// and those that reached a frontend without DNAT (it had no endpoints) when it has some now.
    pub fn stale_flows(&self, flows: &[Flow]) -> Vec<Flow> {
        flows
            .iter()
            .filter(|f| f.protocol == Protocol::Udp)
            .filter(|f| {
                // The service port the flow was sent to, matched as the rules match packets.
                let Some((p, _)) = self.frontend(f.orig_dst, f.orig_dport, f.protocol) else {
                    return false;
                };
                let mut current = p.cluster.iter().chain(&p.local).filter_map(|e| e.ip_port());
                let dnated = (f.reply_src, f.reply_sport) != (f.orig_dst, f.orig_dport);
                if dnated { !current.any(|ep| ep == (f.reply_src, f.reply_sport)) } else { current.next().is_some() }
            })
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{ProxyConfig, plan};

    const LIST: &str = "udp      17 29 src=10.244.0.9 dst=10.96.0.10 sport=40000 dport=53 src=10.244.1.2 dst=10.244.0.9 sport=5353 dport=40000 mark=0 use=1\n\
udp      17 25 src=10.244.0.9 dst=10.96.0.10 sport=40001 dport=53 src=10.244.1.3 dst=10.244.0.9 sport=5353 dport=40001 mark=0 use=1\n\
udp      17 20 src=10.244.0.9 dst=10.96.0.11 sport=40002 dport=53 [UNREPLIED] src=10.96.0.11 dst=10.244.0.9 sport=53 dport=40002 mark=0 use=1\n\
tcp      6 431999 ESTABLISHED src=10.244.0.9 dst=10.96.0.10 sport=40003 dport=53 src=10.244.1.3 dst=10.244.0.9 sport=5353 dport=40003 [ASSURED] mark=0 use=1\n\
conntrack v1.4.7 (conntrack-tools): 4 flow entries have been shown.\n";

    fn node_plan() -> NodePlan {
        let yaml = "apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\nstatus: {addresses: [{type: InternalIP, address: 172.18.0.2}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: dns, namespace: x}\nspec: {clusterIP: 10.96.0.10, selector: {app: dns}, ports: [{port: 53, protocol: UDP, targetPort: 5353}, {name: tcp, port: 53, protocol: TCP, targetPort: 5353}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: late, namespace: x}\nspec: {clusterIP: 10.96.0.11, selector: {app: dns}, ports: [{port: 53, protocol: UDP, targetPort: 5353}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {app: dns}}\nspec: {nodeName: node-2, containers: [{name: c}]}\nstatus: {podIP: 10.244.1.2}\n";
        let s = model::ClusterState::from_objects(&model::load_str(yaml, std::path::Path::new("t.yaml")).unwrap()).unwrap();
        plan(&s, "node-1", &ProxyConfig::default()).unwrap()
    }

    #[test]
    fn flows_are_listed_only_when_a_udp_port_lost_an_endpoint_or_gained_its_first() {
        let now = node_plan();
        assert!(now.may_leave_stale_udp_flows(None));
        assert!(!now.may_leave_stale_udp_flows(Some(&now)), "nothing changed");
        let mut fewer = now.clone();
        let dns = fewer.ports.iter_mut().find(|p| p.port.service == "dns" && p.port.protocol == Protocol::Udp).unwrap();
        dns.cluster.clear();
        assert!(fewer.may_leave_stale_udp_flows(Some(&now)), "an endpoint left");
        assert!(now.may_leave_stale_udp_flows(Some(&fewer)), "the first endpoint came");
        let mut tcp_only = now.clone();
        tcp_only.ports.iter_mut().filter(|p| p.port.protocol == Protocol::Tcp).for_each(|p| p.cluster.clear());
        assert!(!tcp_only.may_leave_stale_udp_flows(Some(&now)), "TCP changes leave no stale UDP flows");
    }

    #[test]
    fn conntrack_listings_parse() {
        let flows = parse_list(LIST);
        assert_eq!(flows.len(), 4);
        assert_eq!(flows[0].reply_src, "10.244.1.2".parse::<IpAddr>().unwrap());
        assert_eq!((flows[2].orig_dport, flows[2].reply_sport), (53, 53));
        assert_eq!(flows[0].delete_args().join(" "), "-f ipv4 -p udp --orig-src 10.244.0.9 --orig-dst 10.96.0.10 --sport 40000 --dport 53");
    }

    #[test]
    fn flows_to_gone_endpoints_and_undnated_flows_to_served_frontends_are_stale() {
        let stale = node_plan().stale_flows(&parse_list(LIST));
        let ports: Vec<u16> = stale.iter().map(|f| f.orig_sport).collect();
        // 40000 goes to a live endpoint; 40001 to one that is gone; 40002 reached `late` before it
        // had endpoints; 40003 is TCP (it ends on its own).
        assert_eq!(ports, [40001, 40002]);
    }
}
