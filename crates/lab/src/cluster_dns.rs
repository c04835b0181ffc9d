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

use crate::daemon::{tcp_listener_in, udp_socket_in};
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
    view.reverse_networks.push(ipnet::IpNet::V4(st.plan.config.pod_cidr));
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
        let networks = vec![ipnet::IpNet::V4(st.plan.config.pod_cidr), ipnet::IpNet::V4(st.plan.config.underlay)];
        ClusterDns { shared: Arc::new(Shared::new(view(st), forwarder, Some(networks))), servers: BTreeMap::new() }
    }

    /// Serves the lab as it now is: a new view, servers started in new DNS pods and stopped
    /// in removed ones.
    pub fn sync(&mut self, st: &LabState, runtime: &tokio::runtime::Handle) -> io::Result<()> {
        // The servers run on the DNS's own runtime, never waiting on the lab's housekeeping.
        let _in_runtime = runtime.enter();
        self.shared.set_view(view(st));
        let pods: Vec<&crate::plan::PodPlan> =
            st.plan.pods.iter().zip(&st.pod_ips).filter(|(p, ip)| system::is_dns_pod(p) && ip.is_some()).map(|(p, _)| p).collect();
        self.servers.retain(|netns_name, tasks| {
            let keep = pods.iter().any(|p| &p.netns == netns_name);
            if !keep {
                tasks.iter().for_each(tokio::task::JoinHandle::abort);
            }
            keep
        });
        for pod in pods {
            if self.servers.contains_key(&pod.netns) {
                continue;
            }
            let (udp, tcp) = (udp_socket_in(&pod.netns, 53)?, tcp_listener_in(&pod.netns, 53)?);
            let mut tasks = vec![
                tokio::spawn(log_end(pod.key(), dns::server::serve_udp(tokio::net::UdpSocket::from_std(udp)?, Arc::clone(&self.shared)))),
                tokio::spawn(log_end(pod.key(), dns::server::serve_tcp(tokio::net::TcpListener::from_std(tcp)?, Arc::clone(&self.shared)))),
            ];
            for port in [system::DNS_HEALTH_PORT, system::DNS_READY_PORT, system::DNS_METRICS_PORT] {
                let listener = tokio::net::TcpListener::from_std(tcp_listener_in(&pod.netns, port)?)?;
                tasks.push(tokio::spawn(dns::metrics::serve_http(listener, Arc::clone(&self.shared))));
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
