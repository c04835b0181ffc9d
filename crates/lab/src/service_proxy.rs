//! The lab's nodes, each programmed by its own node agent (`node::NodeAgent`, the one
//! `podnet agent` runs on a real cluster) over the lab's snapshot: a change to Services and
//! endpoints alone is planned and written per Service; one to pods, namespaces or policies
//! also re-plans the node's policy table; anything else is a full sync. A full re-sync on start,
//! on error, and when a node's tables were changed behind its agent's back. The lab's own part
//! is routing LoadBalancer and external IPs from the external host to a node, as MetalLB would.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use dataplane::netns;
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeSpec, NodeStatus, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use model::{ClusterState, Namespaced};
use node::NodeAgent;

use crate::state::LabState;

/// Each node's metrics and health, as its kube-proxy would report them (shared with the
/// HTTP endpoints that serve them, which lock it only to read or bump a counter).
pub type ProxyStatus = BTreeMap<String, (proxy::metrics::Metrics, proxy::metrics::Health)>;

/// The node agents of a lab's nodes.
#[derive(Default)]
pub struct Proxies {
    agents: BTreeMap<String, NodeAgent>,
    status: Arc<std::sync::Mutex<ProxyStatus>>,
    /// The snapshot the agents last synced to, to tell what a change touched.
    last: Option<ClusterState>,
    /// LoadBalancer and external IPs routed from the external host, to a node's address of
    /// their family.
    announced: BTreeMap<IpAddr, IpAddr>,
}

/// Unix time in seconds: the clock the lab process injects into the pure metrics and health.
pub fn unix_now() -> f64 {
    std::time::SystemTime::UNIX_EPOCH.elapsed().map_or(0.0, |d| d.as_secs_f64())
}

/// The lab as the proxy's input: the lab's snapshot, and its nodes as Node objects (InternalIP,
/// podCIDR).
pub fn proxy_view(st: &LabState) -> ClusterState {
    let mut state = st.cluster_view();
    state.nodes = st
        .plan
        .nodes
        .iter()
        .map(|n| {
            let cidrs: Vec<String> = n.pod_cidrs().iter().map(ToString::to_string).collect();
            let addresses = n.internal_ips().iter().map(|ip| NodeAddress { type_: "InternalIP".into(), address: ip.to_string() }).collect();
            Node {
                metadata: ObjectMeta { name: Some(n.name.clone()), ..Default::default() },
                spec: Some(NodeSpec { pod_cidr: cidrs.first().cloned(), pod_cidrs: Some(cidrs), ..Default::default() }),
                status: Some(NodeStatus { addresses: Some(addresses), ..Default::default() }),
            }
        })
        .collect();
    state
}

/// The lab's proxy settings: pod traffic is what comes from the cluster's pod CIDR.
pub fn proxy_config(st: &LabState) -> proxy::ProxyConfig {
    let cidrs: Vec<String> = st.plan.config.cluster_cidrs().iter().map(ToString::to_string).collect();
    proxy::ProxyConfig { cluster_cidr: cidrs.join(","), ..Default::default() }
}

/// The lab's snapshot for its node agents: [`proxy_view`] with the EndpointSlices of Services
/// that have a selector computed once here (as the endpointslice controller writes them), not
/// by every node's planner.
fn agents_view(st: &LabState) -> ClusterState {
    let mut view = proxy_view(st);
    let computed = model::endpoints::missing(&view, |p| p.ready.unwrap_or(true));
    for slice in computed {
        let namespace = slice.metadata.namespace.clone().unwrap_or_default();
        let name = slice.metadata.name.clone().unwrap_or_default();
        view.endpoint_slices.push(Namespaced { location: Default::default(), namespace, name, object: slice });
    }
    view
}

/// What a change from `old` to `new` asks of the node agents.
#[derive(Debug, PartialEq)]
enum Change {
    /// Nodes, ServiceCIDRs or the proxy settings changed: plan everything.
    Full,
    /// These Services (or their EndpointSlices) changed; `pods_or_policies`: pods, namespaces or
    /// NetworkPolicies did too (the policy table is re-planned).
    Partial { services: BTreeSet<(String, String)>, pods_or_policies: bool },
}

/// A Service (if there is one) and its EndpointSlices.
type ServiceAndSlices<'a> = (Option<&'a Service>, Vec<&'a EndpointSlice>);

/// Each Service with its EndpointSlices, by namespace and name.
fn by_service(state: &ClusterState) -> BTreeMap<(&str, &str), ServiceAndSlices<'_>> {
    let mut out: BTreeMap<(&str, &str), ServiceAndSlices<'_>> = BTreeMap::new();
    for s in &state.services {
        out.entry((s.namespace.as_str(), s.name.as_str())).or_default().0 = Some(&s.object);
    }
    for s in &state.endpoint_slices {
        if let Some(key) = model::endpoints::service_of(&s.object) {
            out.entry(key).or_default().1.push(&s.object);
        }
    }
    out
}

/// What changed between two snapshots, for the node agents (pure).
fn change(old: &ClusterState, new: &ClusterState) -> Change {
    if old.nodes != new.nodes || old.service_cidrs != new.service_cidrs {
        return Change::Full;
    }
    let (before, after) = (by_service(old), by_service(new));
    let keys: BTreeSet<(&str, &str)> = before.keys().chain(after.keys()).copied().collect();
    let services = keys.into_iter().filter(|k| before.get(k) != after.get(k)).map(|(ns, name)| (ns.to_owned(), name.to_owned())).collect();
    let same_policies = old.policies.len() == new.policies.len()
        && old.policies.iter().zip(&new.policies).all(|(a, b)| (&a.namespace, &a.name, &a.policy) == (&b.namespace, &b.name, &b.policy));
    let pods_or_policies = old.pods != new.pods || old.namespaces != new.namespaces || !same_policies;
    Change::Partial { services, pods_or_policies }
}

/// One Service and its EndpointSlices from a snapshot, as a node agent looks them up.
fn lookup(state: &ClusterState, namespace: &str, name: &str) -> (Option<Arc<Service>>, Vec<Arc<EndpointSlice>>) {
    let svc = state.services.iter().find(|s| s.namespace == namespace && s.name == name).map(|s| Arc::new(s.object.clone()));
    let slices = state
        .endpoint_slices
        .iter()
        .filter(|s| model::endpoints::service_of(&s.object) == Some((namespace, name)))
        .map(|s| Arc::new(s.object.clone()))
        .collect();
    (svc, slices)
}

/// What one sync did on one node.
#[derive(Debug)]
pub struct NodeSync {
    /// The node.
    pub node: String,
    /// What its agent did.
    pub synced: node::Synced,
}

/// How many nodes' kernel work runs at once.
const PARALLEL_NODES: usize = 8;

/// One node agent's sync for `change`.
fn sync_agent(agent: &mut NodeAgent, view: &ClusterState, change: &Change) -> Result<node::Synced, String> {
    match change {
        // Tables changed behind the agent's back take a full sync (which also cuts what may
        // have got through meanwhile).
        Change::Partial { services, pods_or_policies } if agent.can_sync_services() && !agent.drifted() => {
            let synced = agent.sync_services(services, |ns, name| lookup(view, ns, name))?;
            if *pods_or_policies { Ok(synced.and(agent.sync_pod_tables(view)?)) } else { Ok(synced) }
        }
        _ => agent.sync(view),
    }
}

fn status_of(status: &std::sync::Mutex<ProxyStatus>) -> std::sync::MutexGuard<'_, ProxyStatus> {
    status.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Proxies {
    /// The nodes' metrics and health, as the proxy updates them.
    pub fn status(&self) -> Arc<std::sync::Mutex<ProxyStatus>> {
        Arc::clone(&self.status)
    }

    /// Forgets what was applied, so that the next sync re-makes every table in full (after a
    /// failure left the kernel in an unknown state).
    pub fn forget_applied(&mut self) {
        self.agents.values_mut().for_each(NodeAgent::forget_applied);
        self.last = None;
    }

    /// Brings every node's rules to what `st` asks for: each node's agent on its own thread, a
    /// few at a time (most of it is waiting for the kernel and `nft`).
    pub fn sync(&mut self, st: &LabState) -> io::Result<Vec<NodeSync>> {
        let view = agents_view(st);
        let config = proxy_config(st);
        let change = match &self.last {
            Some(old) => change(old, &view),
            None => Change::Full,
        };
        let mut done = Vec::new();
        let mut first_error = None;
        for chunk in st.plan.nodes.chunks(PARALLEL_NODES) {
            let results: Vec<(NodeAgent, Result<node::Synced, String>, f64)> = std::thread::scope(|scope| {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|n| {
                        let mut agent = self.agents.remove(&n.name).unwrap_or_else(|| {
                            let mut a = NodeAgent::new(n.name.clone(), config.clone(), Some(netns::path_of(&n.netns)));
                            // The lab lays the pod network itself when it makes the nodes.
                            a.pod_network = false;
                            a
                        });
                        let queued = unix_now();
                        {
                            let mut status = status_of(&self.status);
                            let status = status.entry(n.name.clone()).or_default();
                            status.0.last_queued_timestamp = queued;
                            status.1.oldest_pending.get_or_insert(queued);
                        }
                        let (view, change) = (&view, &change);
                        scope.spawn(move || {
                            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sync_agent(&mut agent, view, change)))
                                .unwrap_or_else(|_| Err("the node's sync panicked".into()));
                            (agent, r, queued)
                        })
                    })
                    .collect();
                handles.into_iter().filter_map(|h| h.join().ok()).collect()
            });
            for (mut agent, result, queued) in results {
                let name = agent.node.clone();
                match result {
                    Ok(synced) => {
                        let now = unix_now();
                        let mut status = status_of(&self.status);
                        let (metrics, health) = status.entry(name.clone()).or_default();
                        metrics.synced(now, synced.seconds, synced.full, queued, synced.elements);
                        *health = proxy::metrics::Health { last_updated: now, oldest_pending: None };
                        done.push(NodeSync { node: name.clone(), synced });
                    }
                    Err(e) => {
                        agent.forget_applied();
                        status_of(&self.status).entry(name.clone()).or_default().0.sync_failures += 1;
                        first_error.get_or_insert(io::Error::other(format!("{name}: {e}")));
                    }
                }
                self.agents.insert(name, agent);
            }
        }
        self.route_from_external_host(st);
        self.last = first_error.is_none().then_some(view);
        match first_error {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    /// Each node's LoadBalancer and external addresses, and whether it may serve each (see
    /// `NodeAgent::external_addresses`).
    pub fn external_addresses(&self) -> BTreeMap<String, BTreeMap<IpAddr, bool>> {
        self.agents.iter().map(|(name, a)| (name.clone(), a.external_addresses())).collect()
    }

    /// Points the external host's /32 (/128) routes for LoadBalancer and external IPs at a node that
    /// may serve them (any for `externalTrafficPolicy: Cluster`, one with a local endpoint for
    /// `Local`, as MetalLB announces), else the first node. Not in a lab whose external host
    /// learns them over BGP.
    fn route_from_external_host(&mut self, st: &LabState) {
        if st.plan.config.bgp.as_ref().is_some_and(|b| b.external) {
            return;
        }
        let mut wanted: BTreeMap<IpAddr, (bool, IpAddr)> = BTreeMap::new();
        for n in &st.plan.nodes {
            let Some(agent) = self.agents.get(&n.name) else { continue };
            for (ip, preferred) in agent.external_addresses() {
                // Through the node's underlay address of the same family.
                let via = if ip.is_ipv4() { Some(IpAddr::V4(n.ip)) } else { n.ip6.map(IpAddr::V6) };
                let Some(via) = via else { continue };
                let entry = wanted.entry(ip).or_insert((preferred, via));
                if preferred && !entry.0 {
                    *entry = (true, via);
                }
            }
        }
        let wanted: BTreeMap<IpAddr, IpAddr> = wanted.into_iter().map(|(ip, (_, node))| (ip, node)).collect();
        let (gone, changed): (Vec<IpAddr>, Vec<(IpAddr, IpAddr)>) = (
            self.announced.keys().filter(|a| !wanted.contains_key(a)).copied().collect(),
            wanted.iter().filter(|(a, n)| self.announced.get(a) != Some(n)).map(|(a, n)| (*a, *n)).collect(),
        );
        if gone.is_empty() && changed.is_empty() {
            return;
        }
        let routed = netns::run_in(&netns::path_of(&st.plan.external_netns()), move || -> io::Result<()> {
            let nl = dataplane::Netlink::connect()?;
            let host = |a: IpAddr| ipnet::IpNet::new(a, if a.is_ipv4() { 32 } else { 128 }).map_err(io::Error::other);
            for a in gone {
                nl.delete_route(host(a)?, None)?;
            }
            for (a, node) in changed {
                nl.replace_route(host(a)?, node)?;
            }
            Ok(())
        });
        match routed.and_then(|r| r) {
            Ok(()) => self.announced = wanted,
            Err(e) => eprintln!("external host: routing LoadBalancer and external IPs: {e}"),
        }
    }

    /// The nodes whose rules may have changed since their agents applied them: one generation
    /// read per node over a socket kept in its namespace, so the periodic check costs
    /// microseconds per node whatever the size of its tables.
    pub fn drifted(&mut self, st: &LabState) -> Vec<String> {
        st.plan.nodes.iter().filter(|n| self.agents.get_mut(&n.name).is_none_or(NodeAgent::drifted)).map(|n| n.name.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServiceSpec;

    fn with_service(ip: &str) -> ClusterState {
        let svc = Service {
            metadata: ObjectMeta { name: Some("web".into()), namespace: Some("shop".into()), ..Default::default() },
            spec: Some(ServiceSpec { cluster_ip: Some(ip.into()), ..Default::default() }),
            ..Default::default()
        };
        ClusterState {
            services: vec![Namespaced { location: Default::default(), namespace: "shop".into(), name: "web".into(), object: svc }],
            ..Default::default()
        }
    }

    #[test]
    fn a_change_names_the_services_it_touched_and_whether_the_policy_tables_must_follow() {
        let (a, b) = (with_service("10.96.0.5"), with_service("10.96.0.6"));
        let web: BTreeSet<(String, String)> = [("shop".to_owned(), "web".to_owned())].into();
        assert_eq!(change(&a, &b), Change::Partial { services: web.clone(), pods_or_policies: false });
        assert_eq!(change(&a, &a), Change::Partial { services: BTreeSet::new(), pods_or_policies: false });
        assert_eq!(change(&a, &ClusterState::default()), Change::Partial { services: web, pods_or_policies: false }, "a deleted Service");
        let mut relabelled = a.clone();
        relabelled.namespaces.push(model::NamespaceInfo { name: "shop".into(), labels: Default::default(), declared: true });
        assert_eq!(change(&a, &relabelled), Change::Partial { services: BTreeSet::new(), pods_or_policies: true });
        let mut with_node = a.clone();
        with_node.nodes.push(Node::default());
        assert_eq!(change(&a, &with_node), Change::Full);
    }
}
