//! The lab's cluster DNS: podnet's DNS server in each pod of the `coredns` Deployment, on port
//! 53 (UDP and TCP) of the pod's own address, behind the `kube-dns` Service and so reached
//! through the nodes' service proxies. One view of the lab is shared by all of them and is
//! swapped on every change the lab process hears of (`lab apply`, `delete`, `mark`). Names
//! outside the cluster are forwarded to the host's resolvers for sources in the lab's networks
//! only (no open resolver). `:8080/health`, `:8181/ready` and `:9153/metrics` answer as CoreDNS's
//! `health`, `ready` and `prometheus` plugins do.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use dns::forward::{ForwardConfig, Forwarder};
use dns::server::Shared;
use dns::{View, ZoneConfig};
use model::ClusterState;

use crate::daemon::{tcp_listeners_in, udp_sockets_in};
use crate::state::LabState;
use crate::system;

/// The lab as the DNS sees it: the lab's snapshot, and the pod network for reverse names.
pub fn view(st: &LabState) -> View {
    let state = st.cluster_view();
    let searches = std::fs::read_to_string("/etc/resolv.conf").map(|t| dns::forward::resolv_conf_searches(&t)).unwrap_or_default();
    // kubeadm's Corefile: `pods insecure`, and autopath as CoreDNS's documentation sets it up.
    let zone = ZoneConfig { zone: system::CLUSTER_DOMAIN.into(), pods: dns::PodsMode::Insecure, autopath: true, host_searches: searches, ..Default::default() };
    let serial = u32::try_from(st.created).unwrap_or_default();
    let mut view = View::build(&state, &zone, serial)
        .unwrap_or_else(|_| View::build(&ClusterState::default(), &ZoneConfig::default(), serial).expect("the default zone is valid"));
    view.reverse_networks.extend(st.plan.config.cluster_cidrs());
    view
}

/// The DNS servers of a lab.
pub struct ClusterDns {
    shared: Arc<Shared>,
    servers: BTreeMap<String, Vec<tokio::task::JoinHandle<()>>>,
}

impl ClusterDns {
    /// The lab's DNS, not serving yet (see `sync`).
    pub fn new(st: &LabState) -> ClusterDns {
        let upstreams = std::fs::read_to_string("/etc/resolv.conf").map(|t| dns::forward::resolv_conf_nameservers(&t)).unwrap_or_default();
        let forwarder = Forwarder::new(ForwardConfig { upstreams, ..Default::default() });
        let mut networks = st.plan.config.cluster_cidrs();
        networks.push(ipnet::IpNet::V4(st.plan.config.underlay));
        if st.plan.config.ip_family.has_v6() {
            networks.push(ipnet::IpNet::V6(st.plan.config.underlay6));
        }
        ClusterDns { shared: Arc::new(Shared::new(view(st), forwarder, Some(networks))), servers: BTreeMap::new() }
    }

    /// Serves the lab as it now is: a new view, servers started in new DNS pods and stopped
    /// in removed ones.
    pub fn sync(&mut self, st: &LabState, runtime: &tokio::runtime::Handle) -> io::Result<()> {
        // The servers run on the DNS's own runtime, never waiting on the lab's housekeeping.
        let _in_runtime = runtime.enter();
        self.shared.set_view(view(st));
        let pods: Vec<(&crate::plan::PodPlan, Vec<std::net::IpAddr>)> =
            st.plan.pods.iter().enumerate().filter(|(i, p)| system::is_dns_pod(p) && st.pod_ips[*i].is_some()).map(|(i, p)| (p, st.pod_addresses(i))).collect();
        self.servers.retain(|netns_name, tasks| {
            let keep = pods.iter().any(|(p, _)| &p.netns == netns_name);
            if !keep {
                tasks.iter().for_each(tokio::task::JoinHandle::abort);
            }
            keep
        });
        for (pod, ips) in pods {
            if self.servers.contains_key(&pod.netns) {
                continue;
            }
            let mut tasks = Vec::new();
            for udp in udp_sockets_in(&pod.netns, 53, &ips)? {
                tasks.push(tokio::spawn(log_end(pod.key(), dns::server::serve_udp(tokio::net::UdpSocket::from_std(udp)?, Arc::clone(&self.shared)))));
            }
            for tcp in tcp_listeners_in(&pod.netns, 53, &ips)? {
                tasks.push(tokio::spawn(log_end(pod.key(), dns::server::serve_tcp(tokio::net::TcpListener::from_std(tcp)?, Arc::clone(&self.shared)))));
            }
            for port in [system::DNS_HEALTH_PORT, system::DNS_READY_PORT, system::DNS_METRICS_PORT] {
                for listener in tcp_listeners_in(&pod.netns, port, &ips)? {
                    tasks.push(tokio::spawn(dns::metrics::serve_http(tokio::net::TcpListener::from_std(listener)?, Arc::clone(&self.shared))));
                }
            }
            self.servers.insert(pod.netns.clone(), tasks);
        }
        Ok(())
    }
}

async fn log_end(pod: String, server: impl std::future::Future<Output = io::Result<()>>) {
    if let Err(e) = server.await {
        eprintln!("dns {pod}: {e}");
    }
}
