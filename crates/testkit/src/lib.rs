//! Test fixtures for podnet, shared by every crate's tests.
//!
//! # Address plan (the upstream NetworkPolicy e2e model, `test/e2e/network/netpol`)
//! - namespaces `x`, `y`, `z`, labelled `ns=<name>` (plus `kubernetes.io/metadata.name`);
//! - in each, pods `a`, `b`, `c`, labelled `pod=<name>`;
//! - every pod serves ports 80 and 81 on TCP, UDP and SCTP, each named `serve-<port>-<proto>`
//!   (`serve-80-tcp`, `serve-81-udp`, ...);
//! - pod IPs: `10.244.<namespace index + 1>.<pod index + 1>`, so `x/a` is `10.244.1.1`,
//!   `y/b` is `10.244.2.2`, `z/c` is `10.244.3.3`.
//!
//! Objects go through the real loader ([`model::load_str`]), so fixtures exercise it too.

pub mod capture;
pub mod graph;
pub mod k8s;

use std::path::Path;

use model::ClusterState;
use serde_json::{Value, json};

/// The e2e model's namespaces.
pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
/// The e2e model's pods in each namespace.
pub const PODS: [&str; 3] = ["a", "b", "c"];

/// The IP of an e2e model pod (see the address plan).
pub fn pod_ip(ns: &str, pod: &str) -> String {
    let n = NAMESPACES.iter().position(|x| *x == ns).expect("e2e namespace") + 1;
    let p = PODS.iter().position(|x| *x == pod).expect("e2e pod") + 1;
    format!("10.244.{n}.{p}")
}

/// A Namespace object.
pub fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

/// A Pod object with labels, container ports (`(name, port, protocol)`) and an IP.
pub fn pod(ns: &str, name: &str, labels: Value, ports: &[(&str, u16, &str)], ip: Option<&str>) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p, proto)| {
            let mut v = json!({"containerPort": p, "protocol": proto});
            if !n.is_empty() {
                v["name"] = json!(n);
            }
            v
        })
        .collect();
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"containers": [{"name": "cont", "image": "agnhost", "ports": ports}]}
    });
    if let Some(ip) = ip {
        pod["status"] = json!({"podIP": ip, "podIPs": [{"ip": ip}]});
    }
    pod
}

/// A NetworkPolicy object from its spec.
pub fn network_policy(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

/// The e2e model's objects: namespaces x/y/z, pods a/b/c serving 80/81 on TCP/UDP/SCTP.
pub fn e2e_objects() -> Vec<Value> {
    let mut out = Vec::new();
    let ports: Vec<(String, u16, &str)> =
        [80u16, 81].iter().flat_map(|p| ["TCP", "UDP", "SCTP"].map(|proto| (format!("serve-{p}-{}", proto.to_lowercase()), *p, proto))).collect();
    let ports: Vec<(&str, u16, &str)> = ports.iter().map(|(n, p, proto)| (n.as_str(), *p, *proto)).collect();
    for ns in NAMESPACES {
        out.push(namespace(ns, json!({"ns": ns})));
        for p in PODS {
            out.push(pod(ns, p, json!({"pod": p}), &ports, Some(&pod_ip(ns, p))));
        }
    }
    out
}

/// Builds a snapshot from objects, through the real loader.
pub fn cluster(objects: &[Value]) -> ClusterState {
    let text: String = objects.iter().map(|o| format!("{o}\n")).collect();
    let loaded = model::load_str(&text, Path::new("testkit.json")).expect("fixture objects load");
    ClusterState::from_objects(&loaded).expect("fixture objects are valid")
}

/// The e2e model plus the given policies (`(namespace, name, spec)`).
pub fn e2e_with(policies: &[(&str, &str, Value)]) -> ClusterState {
    let mut objects = e2e_objects();
    objects.extend(policies.iter().map(|(ns, name, spec)| network_policy(ns, name, spec.clone())));
    cluster(&objects)
}

/// An expected truth table over pods named `ns/name`, like upstream's `Reachability`:
/// everything allowed until told otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TruthTable {
    /// Pod names, in order.
    pub pods: Vec<String>,
    /// `values[from][to]`
    pub values: Vec<Vec<bool>>,
}

impl TruthTable {
    /// A table over the e2e model's nine pods with every value `init`.
    pub fn e2e(init: bool) -> Self {
        let pods: Vec<String> = NAMESPACES.iter().flat_map(|ns| PODS.iter().map(move |p| format!("{ns}/{p}"))).collect();
        let n = pods.len();
        TruthTable { pods, values: vec![vec![init; n]; n] }
    }

    fn idx(&self, pod: &str) -> usize {
        self.pods.iter().position(|p| p == pod).unwrap_or_else(|| panic!("no pod {pod} in the table"))
    }

    fn matching(&self, spec: &str) -> Vec<usize> {
        // `x/a` names a pod, `x/*` every pod of a namespace, `*/a` pod a of every namespace.
        let (ns, name) = spec.split_once('/').expect("ns/name");
        self.pods
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                let (pns, pname) = p.split_once('/').expect("ns/name");
                (ns == "*" || ns == pns) && (name == "*" || name == pname)
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Sets `from -> to`; either side may use `*` for a namespace or pod name.
    pub fn set(&mut self, from: &str, to: &str, value: bool) -> &mut Self {
        for i in self.matching(from) {
            for j in self.matching(to) {
                self.values[i][j] = value;
            }
        }
        self
    }

    /// Sets every connection into `to`.
    pub fn set_all_to(&mut self, to: &str, value: bool) -> &mut Self {
        self.set("*/*", to, value)
    }

    /// Sets every connection out of `from`.
    pub fn set_all_from(&mut self, from: &str, value: bool) -> &mut Self {
        self.set(from, "*/*", value)
    }

    /// A pod may always reach itself.
    pub fn allow_loopback(&mut self) -> &mut Self {
        for i in 0..self.pods.len() {
            self.values[i][i] = true;
        }
        self
    }

    /// The value for `from -> to`.
    pub fn get(&self, from: &str, to: &str) -> bool {
        self.values[self.idx(from)][self.idx(to)]
    }

    /// Upstream's `PrettyPrint`: a tab-separated table, `.` allowed and `X` blocked.
    pub fn pretty(&self) -> String {
        let mut out = format!("-\t{}\n", self.pods.join("\t"));
        for (i, from) in self.pods.iter().enumerate() {
            let marks: Vec<&str> = self.values[i].iter().map(|v| if *v { "." } else { "X" }).collect();
            out.push_str(&format!("{from}\t{}\n", marks.join("\t")));
        }
        out
    }
}

/// Says why a test that needs the kernel or a real client cannot run here, and skips it; with
/// `PODNET_REQUIRE_ROOT` or `CI` set (`.ci/run` sets both) the test fails instead: CI runs as
/// root and installs everything these tests need, so a skip there would only hide that they
/// did not run.
pub fn skip(why: &str) {
    let required = std::env::var_os("PODNET_REQUIRE_ROOT").is_some() || std::env::var_os("CI").is_some();
    assert!(!required, "this test cannot run here ({why}), and CI must run it: see .ci/run");
    eprintln!("skipped: {why}");
}
