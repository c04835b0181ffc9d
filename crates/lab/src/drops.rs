//! Every packet a node's NetworkPolicy rules drop and log (NFLOG, rate-limited in the kernel),
//! written by the lab process as one JSON line each to `/run/podnet/<lab>/drops.log`, with the
//! pods behind the addresses: what `podnet lab logs --drops` prints.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dataplane::netns;
use dataplane::nflog::{Listener, Logged};
use serde::{Deserialize, Serialize};

use crate::name::LabName;
use crate::state::LabState;

/// The log file is started anew past this size (the old one kept as `drops.log.1`).
const MAX_LOG_BYTES: u64 = 16 << 20;

/// One dropped packet, as `lab logs --drops -o json` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drop {
    /// When (RFC 3339, UTC).
    pub time: String,
    /// The node whose rules dropped it.
    pub node: String,
    /// The source pod (`ns/name`), if the address is a pod's.
    pub src_pod: Option<String>,
    /// Source address.
    pub src_ip: String,
    /// Source port (0 without ports).
    pub src_port: u16,
    /// The destination pod, if any.
    pub dst_pod: Option<String>,
    /// Destination address (after Service DNAT).
    pub dst_ip: String,
    /// Destination port.
    pub dst_port: u16,
    /// `TCP`, `UDP`, `SCTP`, `ICMP` or the number.
    pub protocol: String,
    /// `ingress` (the destination's policies) or `egress` (the source's).
    pub direction: String,
    /// Always `drop`: NetworkPolicy never resets.
    pub verdict: String,
    /// The policies isolating the pod on that side (`ns/name,...`), none of whose rules allowed it.
    pub policy: String,
}

/// `/run/podnet/<lab>/drops.log`
pub fn log_file(lab: &LabName) -> std::path::PathBuf {
    crate::state::dir(lab).join("drops.log")
}

fn protocol_name(n: u8) -> String {
    match n {
        1 => "ICMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        132 => "SCTP".into(),
        other => other.to_string(),
    }
}

/// A logged packet as a drop record; `None` for anything our rules did not log.
pub fn record(node: &str, logged: &Logged, pods: &BTreeMap<IpAddr, String>, now: impl Fn() -> String) -> Option<Drop> {
    let (direction, policy) = policy::enforce::parse_drop_prefix(&logged.prefix)?;
    let p = logged.packet?;
    Some(Drop {
        time: logged.time.map_or_else(&now, |(secs, usecs)| crate::daemon::rfc3339_utc(secs, usecs / 1000)),
        node: node.to_owned(),
        src_pod: pods.get(&p.src).cloned(),
        src_ip: p.src.to_string(),
        src_port: p.src_port,
        dst_pod: pods.get(&p.dst).cloned(),
        dst_ip: p.dst.to_string(),
        dst_port: p.dst_port,
        protocol: protocol_name(p.protocol),
        direction: direction.to_owned(),
        verdict: "drop".into(),
        policy,
    })
}

/// Appends records to the log, starting it anew when it grew too big. The file stays open
/// between writes: a busy lab records thousands of connections a second, and opening the file
/// for each doubled the first-packet latency of the nodes' pods (`bench policy-enforce`).
struct Writer {
    path: std::path::PathBuf,
    file: Option<std::fs::File>,
    written: u64,
}

impl Writer {
    fn new(path: std::path::PathBuf) -> Writer {
        Writer { path, file: None, written: 0 }
    }

    fn write(&mut self, drops: &[Drop]) {
        let lines: Vec<String> = drops.iter().filter_map(|d| serde_json::to_string(d).ok()).collect();
        self.write_lines(&lines);
    }

    fn write_lines(&mut self, lines: &[String]) {
        if lines.is_empty() {
            return;
        }
        if self.written > MAX_LOG_BYTES {
            let _ = std::fs::rename(&self.path, self.path.with_extension("log.1"));
            self.file = None;
        }
        if self.file.is_none() {
            self.file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path).ok();
            self.written = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        }
        let Some(file) = &mut self.file else { return };
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        if file.write_all(text.as_bytes()).is_err() {
            self.file = None;
        }
        self.written += text.len() as u64;
    }
}

/// Flows counted per node by verdict, and drops by policy and direction: the lab's share of
/// Hubble's flow metrics, served with each node's proxy metrics (`:10249/metrics`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowCounts {
    /// (node, verdict `FORWARDED`/`DROPPED`) → flows.
    pub flows: BTreeMap<(String, &'static str), u64>,
    /// (node, policy `ns/name`, direction) → dropped packets.
    pub policy_drops: BTreeMap<(String, String, String), u64>,
}

impl FlowCounts {
    /// A forwarded connection.
    pub fn forwarded(&mut self, f: &Forwarded) {
        *self.flows.entry((f.node.clone(), "FORWARDED")).or_default() += 1;
    }

    /// A dropped packet, counted once per policy that isolated its pod.
    pub fn dropped(&mut self, d: &Drop) {
        *self.flows.entry((d.node.clone(), "DROPPED")).or_default() += 1;
        for policy in d.policy.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            *self.policy_drops.entry((d.node.clone(), policy.to_owned(), d.direction.clone())).or_default() += 1;
        }
    }

    /// One node's counters in Prometheus' text format.
    pub fn render(&self, node: &str) -> String {
        use std::fmt::Write as _;
        let mut out = String::from(
            "# HELP podnet_flows_total Connections seen by this node, by verdict (forwarded: new in conntrack; dropped: by NetworkPolicy).
# TYPE podnet_flows_total counter
",
        );
        for verdict in ["FORWARDED", "DROPPED"] {
            let n = self.flows.get(&(node.to_owned(), verdict)).copied().unwrap_or(0);
            let _ = writeln!(out, "podnet_flows_total{{verdict=\"{verdict}\"}} {n}");
        }
        out.push_str(
            "# HELP podnet_policy_drops_total Packets NetworkPolicy dropped on this node, by isolating policy and direction.
# TYPE podnet_policy_drops_total counter
",
        );
        for ((_, policy, direction), n) in self.policy_drops.iter().filter(|((n, _, _), _)| n == node) {
            let _ = writeln!(out, "podnet_policy_drops_total{{policy=\"{policy}\",direction=\"{direction}\"}} {n}");
        }
        out
    }
}

fn count(counts: &Mutex<FlowCounts>) -> std::sync::MutexGuard<'_, FlowCounts> {
    counts.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Listens on every node's NFLOG group, each on a thread in the node's namespace.
pub fn start(lab: &LabName, st: &LabState, names: &Arc<Mutex<Names>>, counts: &Arc<Mutex<FlowCounts>>) -> std::io::Result<()> {
    let writer = Arc::new(Mutex::new(Writer::new(log_file(lab))));
    for node in &st.plan.nodes {
        let (names, writer, name, counts) = (Arc::clone(names), Arc::clone(&writer), node.name.clone(), Arc::clone(counts));
        netns::spawn_in(&netns::path_of(&node.netns), move || -> std::io::Result<()> {
            let listener = Listener::bind(policy::enforce::LOG_GROUP)?;
            loop {
                let logged = listener.receive(Duration::from_secs(5))?;
                if logged.is_empty() {
                    continue;
                }
                let drops: Vec<Drop> = {
                    let names = names.lock().unwrap_or_else(PoisonError::into_inner);
                    logged.iter().filter_map(|l| record(&name, l, &names.pods, crate::daemon::utc_now)).collect()
                };
                drops.iter().for_each(|d| count(&counts).dropped(d));
                writer.lock().unwrap_or_else(PoisonError::into_inner).write(&drops);
            }
        })?;
    }
    Ok(())
}

/// A forwarded connection, as `podnet observe` prints it (written by the lab process to
/// `flows.log`, one JSON line each).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forwarded {
    /// When (RFC 3339, UTC).
    pub time: String,
    /// The node that saw it first (the client's, or for outside clients the endpoint's).
    pub node: String,
    /// The client pod, if any.
    pub src_pod: Option<String>,
    /// Client address.
    pub src_ip: String,
    /// Client port.
    pub src_port: u16,
    /// The address the client asked for (a Service's, or the pod's own).
    pub dst_ip: String,
    /// The port it asked for.
    pub dst_port: u16,
    /// The Service behind `dst_ip`, if any (`ns/name`).
    pub service: Option<String>,
    /// The pod that took the connection (after DNAT), if any.
    pub dst_pod: Option<String>,
    /// Its address.
    pub endpoint_ip: String,
    /// Its port.
    pub endpoint_port: u16,
    /// `TCP`, `UDP`, `SCTP` or the number.
    pub protocol: String,
}

/// `/run/podnet/<lab>/flows.log`
pub fn flows_file(lab: &LabName) -> std::path::PathBuf {
    crate::state::dir(lab).join("flows.log")
}

/// What the drop log and the flow recorder need to know about the lab, shared with their
/// listeners and refreshed on every change.
#[derive(Default)]
pub struct Names {
    /// Pods by address (each of their addresses).
    pub pods: BTreeMap<IpAddr, String>,
    /// Each pod's node, by address.
    pub nodes: BTreeMap<IpAddr, String>,
    /// Services by ClusterIP (each of their ClusterIPs).
    pub services: BTreeMap<IpAddr, String>,
}

/// The names of a lab state.
pub fn names(st: &LabState) -> Names {
    let mut n = Names::default();
    for (i, p) in st.plan.pods.iter().enumerate().filter(|(_, p)| !p.host_network) {
        for ip in st.pod_addresses(i) {
            n.pods.insert(ip, p.key());
            n.nodes.insert(ip, p.node.clone());
        }
    }
    for s in &st.services {
        for ip in s.spec.as_ref().and_then(|sp| sp.cluster_ips.clone()).unwrap_or_default() {
            if let Ok(ip) = ip.parse() {
                n.services.insert(ip, format!("{}/{}", s.metadata.namespace.as_deref().unwrap_or("default"), s.metadata.name.as_deref().unwrap_or_default()));
            }
        }
    }
    n
}

/// A node's new connection as a record, when this node is the one to record it: the client
/// pod's node, or for a client that is no pod, the endpoint pod's node.
pub fn forwarded(node: &str, flow: &dataplane::ctevents::NewFlow, names: &Names, now: &str) -> Option<Forwarded> {
    let (src, dst, endpoint) = (flow.original.src?, flow.original.dst?, flow.reply.src?);
    let recorder = names.nodes.get(&src).or_else(|| names.nodes.get(&endpoint))?;
    if recorder != node {
        return None;
    }
    Some(Forwarded {
        time: now.to_owned(),
        node: node.to_owned(),
        src_pod: names.pods.get(&src).cloned(),
        src_ip: src.to_string(),
        src_port: flow.original.src_port,
        dst_ip: dst.to_string(),
        dst_port: flow.original.dst_port,
        service: names.services.get(&dst).cloned(),
        dst_pod: names.pods.get(&endpoint).cloned(),
        endpoint_ip: endpoint.to_string(),
        endpoint_port: flow.reply.src_port,
        protocol: protocol_name(flow.original.protocol),
    })
}

/// Records every node's new connections, each node on a thread in its namespace.
pub fn record_flows(lab: &LabName, st: &LabState, names: &Arc<Mutex<Names>>, counts: &Arc<Mutex<FlowCounts>>) -> std::io::Result<()> {
    let writer = Arc::new(Mutex::new(Writer::new(flows_file(lab))));
    for node in &st.plan.nodes {
        let (names, writer, name, counts) = (Arc::clone(names), Arc::clone(&writer), node.name.clone(), Arc::clone(counts));
        netns::spawn_in(&netns::path_of(&node.netns), move || -> std::io::Result<()> {
            let listener = dataplane::ctevents::Listener::bind()?;
            loop {
                let flows = listener.receive(Duration::from_secs(5))?;
                if flows.is_empty() {
                    continue;
                }
                let now = crate::daemon::utc_now();
                let records: Vec<String> = {
                    let names = names.lock().unwrap_or_else(PoisonError::into_inner);
                    let seen: Vec<Forwarded> = flows.iter().filter_map(|f| forwarded(&name, f, &names, &now)).collect();
                    seen.iter().for_each(|f| count(&counts).forwarded(f));
                    seen.iter().filter_map(|r| serde_json::to_string(r).ok()).collect()
                };
                writer.lock().unwrap_or_else(PoisonError::into_inner).write_lines(&records);
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drop_of(node: &str, policy: &str, direction: &str) -> Drop {
        Drop {
            time: "2026-12-03T00:00:00.000Z".into(),
            node: node.into(),
            src_pod: None,
            src_ip: "10.244.0.2".into(),
            src_port: 1234,
            dst_pod: None,
            dst_ip: "10.244.1.2".into(),
            dst_port: 80,
            protocol: "TCP".into(),
            direction: direction.into(),
            verdict: "drop".into(),
            policy: policy.into(),
        }
    }

    #[test]
    fn flows_are_counted_per_node_verdict_and_isolating_policy() {
        let mut c = FlowCounts::default();
        c.dropped(&drop_of("node-1", "shop/deny-all,shop/api", "ingress"));
        c.dropped(&drop_of("node-1", "shop/deny-all", "ingress"));
        c.dropped(&drop_of("node-2", "shop/egress", "egress"));
        let text = c.render("node-1");
        assert!(text.contains("podnet_flows_total{verdict=\"DROPPED\"} 2\n"), "{text}");
        assert!(text.contains("podnet_flows_total{verdict=\"FORWARDED\"} 0\n"), "{text}");
        assert!(text.contains("podnet_policy_drops_total{policy=\"shop/deny-all\",direction=\"ingress\"} 2\n"), "{text}");
        assert!(text.contains("podnet_policy_drops_total{policy=\"shop/api\",direction=\"ingress\"} 1\n"), "{text}");
        assert!(!text.contains("shop/egress"), "another node's drop: {text}");
    }
}
