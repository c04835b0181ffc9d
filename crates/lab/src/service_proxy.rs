//! The service proxy of every lab node, run by the lab process: each node's plan rendered as
//! nftables and applied in the node's namespace, as a difference from what was applied there
//! last; a full re-sync on start, on error, and when the table was changed behind our back.

use std::collections::BTreeMap;
use std::io;
use std::time::Instant;

use dataplane::netns;
use dataplane::nft::Synced;
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use model::ClusterState;
use nftset::{Family, Ruleset};

use crate::state::LabState;

/// What one node's proxy applied last (the plan and its rules), and the node's ruleset
/// generation right after.
struct Applied {
    plan: proxy::NodePlan,
    rules: Ruleset,
    generation: Option<u32>,
}

/// Each node's metrics and health, as its kube-proxy would report them (shared with the
/// HTTP endpoints that serve them, which lock it only to read or bump a counter).
pub type ProxyStatus = BTreeMap<String, (proxy::metrics::Metrics, proxy::metrics::Health)>;

/// The proxies of a lab's nodes.
#[derive(Default)]
pub struct Proxies {
    applied: BTreeMap<String, Applied>,
    /// A netfilter socket in each node's namespace, for its ruleset generation.
    sockets: BTreeMap<String, dataplane::nfnetlink::Socket>,
    /// An `nft -i` session in each node's namespace, for the differences.
    sessions: BTreeMap<String, dataplane::nft::Session>,
    /// Each node's pod bridge MAC, once its first pod made the bridge.
    bridge_macs: BTreeMap<String, String>,
    status: std::sync::Arc<std::sync::Mutex<ProxyStatus>>,
    /// LoadBalancer and external IPs routed from the external host, to a node's address.
    announced: BTreeMap<std::net::Ipv4Addr, std::net::Ipv4Addr>,
}

/// Where the external host sends each LoadBalancer IP and externalIP: to a node with a local
/// endpoint for `externalTrafficPolicy: Local` (as MetalLB announces from such a node), else to
/// the first node.
fn announce(wanted: &mut BTreeMap<std::net::Ipv4Addr, (bool, std::net::Ipv4Addr)>, plan: &proxy::NodePlan, node_ip: std::net::Ipv4Addr) {
    for p in &plan.ports {
        let has_local = !p.local.is_empty();
        for ip in p.port.load_balancer_ips.iter().chain(&p.port.external_ips) {
            let std::net::IpAddr::V4(ip) = ip else {
                continue;
            };
            let preferred = p.port.policies.external_local && has_local;
            let entry = wanted.entry(*ip).or_insert((preferred, node_ip));
            if preferred && !entry.0 {
                *entry = (true, node_ip);
            }
        }
    }
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
        .map(|n| Node {
            metadata: ObjectMeta { name: Some(n.name.clone()), ..Default::default() },
            spec: Some(NodeSpec { pod_cidr: Some(n.pod_cidr.to_string()), pod_cidrs: Some(vec![n.pod_cidr.to_string()]), ..Default::default() }),
            status: Some(NodeStatus { addresses: Some(vec![NodeAddress { type_: "InternalIP".into(), address: n.ip.to_string() }]), ..Default::default() }),
        })
        .collect();
    state
}

/// The lab's proxy settings: pod traffic is what comes from the cluster's pod CIDR.
pub fn proxy_config(st: &LabState) -> proxy::ProxyConfig {
    proxy::ProxyConfig { cluster_cidr: st.plan.config.pod_cidr.to_string(), ..Default::default() }
}

/// What one sync did on one node.
#[derive(Debug)]
pub struct NodeSync {
    /// The node.
    pub node: String,
    /// Incremental or full.
    pub synced: Synced,
    /// Set and map elements in its tables.
    pub elements: usize,
    /// From the start of planning to the kernel's answer.
    pub seconds: f64,
}

/// The table that sends same-node pod-to-pod frames through the node's IP stack.
pub const L3_TABLE: &str = "podnet-l3";

/// Pods of one node share a bridge, so a reply from a Service's backend to a client on the same
/// node would be bridged straight back, past the conntrack entry that undoes the DNAT, and the
/// client would drop it. Routing every same-node pod-to-pod frame through the node (as Calico's
/// point-to-point layout does, without br_netfilter) gives both directions the node's hooks:
/// frames for another local pod are re-addressed to the bridge and handed up.
fn same_node_through_node(bridge_mac: &str, pod_cidr: &str) -> nftset::Table {
    let mut t = nftset::Table::default();
    t.chains.insert(
        "prerouting".into(),
        nftset::Chain {
            base: Some("type filter hook prerouting priority -300; policy accept;".into()),
            rules: vec![format!("ether type ip ip daddr {pod_cidr} ether daddr != {bridge_mac} ether daddr set {bridge_mac} meta pkttype set host")],
        },
    );
    t
}

/// Deletes the node's UDP conntrack entries that its new rules make stale (see
/// `proxy::conntrack`), with the `conntrack` tool; without it, entries age out on their own.
fn clear_stale_udp_flows(plan: &proxy::NodePlan) {
    let Ok(out) = std::process::Command::new("conntrack").args(["-L", "-p", "udp"]).output() else {
        return;
    };
    let stale = plan.stale_flows(&proxy::conntrack::parse_list(&String::from_utf8_lossy(&out.stdout)));
    for flow in &stale {
        let _ = std::process::Command::new("conntrack").arg("-D").args(flow.delete_args()).output();
    }
    if !stale.is_empty() {
        eprintln!("proxy {}: deleted {} stale UDP conntrack entries", plan.node.name, stale.len());
    }
}

/// A node's NetworkPolicy table among its rules.
fn policy_table(rules: &Ruleset) -> Option<&nftset::Table> {
    rules.tables.get(&(Family::Inet, policy::enforce::TABLE.to_owned()))
}

/// How many nodes' kernel work runs at once.
const PARALLEL_NODES: usize = 8;

/// One node's sync, planned: what its namespace's thread applies.
struct NodeJob {
    plan: proxy::NodePlan,
    rules: Ruleset,
    old: Option<Applied>,
    socket: Option<dataplane::nfnetlink::Socket>,
    session: Option<dataplane::nft::Session>,
    known_mac: Option<String>,
    pod_cidr: String,
}

/// What a node's thread did.
struct NodeSynced {
    plan: proxy::NodePlan,
    synced: Synced,
    generation: Option<u32>,
    rules: Ruleset,
    socket: dataplane::nfnetlink::Socket,
    session: Option<dataplane::nft::Session>,
    mac: Option<String>,
    /// Whether its NetworkPolicy table may now deny what it let through before.
    policy_changed: bool,
}

/// A node's kernel work, in its namespace: the bridge table once the pod bridge exists, the
/// rules as a difference from what was applied (in full when the ruleset generation moved
/// behind our back), stale UDP flows cleared when the rules changed.
fn apply_node(job: NodeJob) -> io::Result<NodeSynced> {
    let NodeJob { plan, mut rules, old, socket, mut session, known_mac, pod_cidr } = job;
    let mut socket = match socket {
        Some(s) => s,
        None => dataplane::nfnetlink::Socket::open()?,
    };
    // The pod bridge exists once the first pod of the node is attached.
    let mac = match known_mac {
        Some(mac) => Some(mac),
        None => dataplane::link::Netlink::connect()?.link(crate::up::POD_BRIDGE)?.and_then(|l| l.mac),
    };
    if let Some(mac) = &mac {
        rules.tables.insert((Family::Bridge, L3_TABLE.to_owned()), same_node_through_node(mac, &pod_cidr));
    }
    let now = socket.generation().ok();
    let stale_possible = plan.may_leave_stale_udp_flows(old.as_ref().map(|o| &o.plan));
    let policy_differs = old.as_ref().is_none_or(|o| policy_table(&o.rules) != policy_table(&rules));
    let trusted = old.filter(|o| o.generation.is_some() && o.generation == now).map(|o| o.rules);
    let synced = dataplane::nft::sync_in_session(&mut session, trusted.as_ref(), &rules)?;
    let generation = socket.generation().ok();
    if stale_possible {
        clear_stale_udp_flows(&plan);
    }
    let policy_changed = synced == Synced::Full || policy_differs;
    Ok(NodeSynced { synced, generation, rules, socket, session, mac, plan, policy_changed })
}

fn status_of(status: &std::sync::Mutex<ProxyStatus>) -> std::sync::MutexGuard<'_, ProxyStatus> {
    status.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Proxies {
    /// The nodes' metrics and health, as the proxy updates them.
    pub fn status(&self) -> std::sync::Arc<std::sync::Mutex<ProxyStatus>> {
        std::sync::Arc::clone(&self.status)
    }

    /// Forgets what was applied, so that the next sync re-makes every table in full (after a
    /// failure left the kernel in an unknown state).
    pub fn forget_applied(&mut self) {
        self.applied.clear();
    }

    /// Brings every node's rules to what `st` asks for: each node planned (pure), then the
    /// kernel work of a few nodes at a time, each in its own namespace, in parallel (most of it
    /// is waiting for `nft` and `conntrack` processes).
    pub fn sync(&mut self, st: &LabState) -> io::Result<Vec<NodeSync>> {
        let view = proxy_view(st);
        let config = proxy_config(st);
        let policies = crate::network_policy::compile(&view);
        let enforcement = policy::enforce::Enforcement::new(&view, &policies);
        let mut done = Vec::new();
        let mut wanted = BTreeMap::new();
        let mut first_error = None;
        for chunk in st.plan.nodes.chunks(PARALLEL_NODES) {
            let mut jobs = Vec::with_capacity(chunk.len());
            for node in chunk {
                let queued = unix_now();
                {
                    let mut status = status_of(&self.status);
                    let status = status.entry(node.name.clone()).or_default();
                    status.0.last_queued_timestamp = queued;
                    status.1.oldest_pending.get_or_insert(queued);
                }
                let plan = proxy::plan(&view, &node.name, &config).map_err(|e| io::Error::other(e.to_string()))?;
                announce(&mut wanted, &plan, node.ip);
                let mut rules = plan.render();
                rules.tables.insert((Family::Inet, policy::enforce::TABLE.to_owned()), enforcement.node_table(&node.name));
                let job = NodeJob {
                    rules,
                    plan,
                    old: self.applied.remove(&node.name),
                    socket: self.sockets.remove(&node.name),
                    session: self.sessions.remove(&node.name),
                    known_mac: self.bridge_macs.get(&node.name).cloned(),
                    pod_cidr: node.pod_cidr.to_string(),
                };
                jobs.push((node, queued, Instant::now(), Some(job)));
            }
            let results: Vec<io::Result<NodeSynced>> = std::thread::scope(|scope| {
                let handles: Vec<_> = jobs
                    .iter_mut()
                    .filter_map(|(node, _, _, job)| {
                        let job = job.take()?;
                        let path = netns::path_of(&node.netns);
                        Some(scope.spawn(move || netns::run_in(&path, move || apply_node(job)).and_then(|r| r)))
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(io::Error::other("a node's proxy sync panicked")))).collect()
            });
            for ((node, queued, started, _), result) in jobs.into_iter().zip(results) {
                let (synced, generation, rules, plan, policy_changed) = match result {
                    Ok(NodeSynced { synced, generation, rules, socket, session, mac, plan, policy_changed }) => {
                        self.sockets.insert(node.name.clone(), socket);
                        if let Some(session) = session {
                            self.sessions.insert(node.name.clone(), session);
                        }
                        if let Some(mac) = mac {
                            self.bridge_macs.insert(node.name.clone(), mac);
                        }
                        (synced, generation, rules, plan, policy_changed)
                    }
                    Err(e) => {
                        status_of(&self.status).entry(node.name.clone()).or_default().0.sync_failures += 1;
                        first_error.get_or_insert(io::Error::new(e.kind(), format!("{}: {e}", node.name)));
                        continue;
                    }
                };
                let now = unix_now();
                {
                    let mut status = status_of(&self.status);
                    let (metrics, health) = status.entry(node.name.clone()).or_default();
                    metrics.synced(now, started.elapsed().as_secs_f64(), synced == Synced::Full, queued, rules.element_count());
                    *health = proxy::metrics::Health { last_updated: now, oldest_pending: None };
                }
                // A node that isolates none of its pods denies nothing itself (the other end's
                // node cuts what it denies): no conntrack listing there.
                if policy_changed && policy_table(&rules).is_some_and(policy::enforce::isolates_any) {
                    crate::network_policy::cut_denied_flows(node, &enforcement);
                }
                done.push(NodeSync { node: node.name.clone(), synced, elements: rules.element_count(), seconds: started.elapsed().as_secs_f64() });
                self.applied.insert(node.name.clone(), Applied { plan, rules, generation });
            }
        }
        self.route_from_external_host(st, wanted.into_iter().map(|(ip, (_, node))| (ip, node)).collect());
        match first_error {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    /// Points the external host's /32 routes at the chosen nodes.
    fn route_from_external_host(&mut self, st: &LabState, wanted: BTreeMap<std::net::Ipv4Addr, std::net::Ipv4Addr>) {
        let ns = st.plan.external_netns();
        let ip = |args: &[String]| {
            let out = std::process::Command::new("ip").arg("-n").arg(&ns).args(args).output();
            if let Ok(o) = out
                && !o.status.success()
            {
                eprintln!("external host: ip {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr).trim());
            }
        };
        for gone in self.announced.keys().filter(|a| !wanted.contains_key(a)) {
            ip(&["route".into(), "del".into(), format!("{gone}/32")]);
        }
        for (addr, node) in &wanted {
            if self.announced.get(addr) != Some(node) {
                ip(&["route".into(), "replace".into(), format!("{addr}/32"), "via".into(), node.to_string()]);
            }
        }
        self.announced = wanted;
    }

    /// The nodes whose rules may have changed since we applied them: one generation read per
    /// node over a socket kept in its namespace, so the periodic check costs microseconds per
    /// node whatever the size of its tables.
    pub fn drifted(&mut self, st: &LabState) -> Vec<String> {
        st.plan
            .nodes
            .iter()
            .filter(|node| {
                let applied = self.applied.get(&node.name).and_then(|a| a.generation);
                let now = self.sockets.get_mut(&node.name).and_then(|s| s.generation().ok());
                applied.is_none() || applied != now
            })
            .map(|n| n.name.clone())
            .collect()
    }
}
