//! NetworkPolicy enforced in a lab, with real packets (root): upstream's netpol e2e model
//! (namespaces x/y/z, pods a/b/c serving 80 and 81 on TCP and UDP under the names
//! `serve-80-tcp` …, one Service per pod), the scenarios of `test/e2e/network/netpol/
//! network_policy.go` applied one after the other to a running lab, and for each the matrix
//! probed by pod IP and through the Services equal to the engine's (`policy matrix --lab`) on
//! every cell. The engine's answers themselves are held against upstream's truth tables in
//! `crates/policy/tests/e2e_scenarios.rs`; this proves the kernel does what the engine says.

#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a line number

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const PORTS: [&str; 4] = ["80/TCP", "81/TCP", "80/UDP", "81/UDP"];

fn podnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podnet")).args(args).output().unwrap()
}

fn ok(out: &Output, what: &str) -> String {
    assert!(out.status.success(), "{what}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A lab removed on drop.
struct Lab {
    name: String,
    dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = podnet(&["lab", "down", "--name", &self.name]);
    }
}

/// The e2e model as manifests: namespaces, pods spread over the nodes, a Service per pod.
fn model_manifests() -> String {
    let mut docs = Vec::new();
    let ports: Vec<Value> = [80, 81]
        .iter()
        .flat_map(|p| ["TCP", "UDP"].map(|proto| json!({"name": format!("serve-{p}-{}", proto.to_lowercase()), "containerPort": p, "protocol": proto})))
        .collect();
    for (n, ns) in ["x", "y", "z"].iter().enumerate() {
        docs.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"ns": ns}}}));
        for (k, pod) in ["a", "b", "c"].iter().enumerate() {
            let node = format!("node-{}", (n + k) % 3 + 1);
            docs.push(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": ns, "labels": {"pod": pod}},
                "spec": {"nodeName": node, "containers": [{"name": "cont", "ports": ports}]}
            }));
            let service_ports: Vec<Value> =
                ports.iter().map(|p| json!({"name": p["name"], "port": p["containerPort"], "protocol": p["protocol"], "targetPort": p["name"]})).collect();
            docs.push(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": format!("s-{pod}"), "namespace": ns},
                "spec": {"selector": {"pod": pod}, "ports": service_ports}
            }));
        }
    }
    docs.iter().map(|d| format!("---\n{d}\n")).collect()
}

impl Lab {
    fn up() -> Lab {
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let name = format!("np{}-{}", std::process::id() % 100_000, SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model.yaml");
        std::fs::write(&model, model_manifests()).unwrap();
        let lab = Lab { name, dir };
        ok(&podnet(&["lab", "up", "--name", &lab.name, "--nodes", "3", "-f", model.to_str().unwrap()]), "lab up");
        lab
    }

    /// Pod IPs by `ns/name`.
    fn ips(&self) -> BTreeMap<String, String> {
        let out = ok(&podnet(&["lab", "get", "pods", "-A", "-o", "json", "--name", &self.name]), "lab get pods");
        let v: Value = serde_json::from_str(&out).unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| {
                let key = format!("{}/{}", p["metadata"]["namespace"].as_str()?, p["metadata"]["name"].as_str()?);
                Some((key, p["status"]["podIP"].as_str()?.to_owned()))
            })
            .collect()
    }

    fn write(&self, file: &str, objects: &[Value]) -> String {
        let path = self.dir.path().join(file);
        std::fs::write(&path, objects.iter().map(|d| format!("---\n{d}\n")).collect::<String>()).unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// The probed matrix (`--via pod|service`) and the engine's, over the model's nine pods.
    fn matrices(&self, via: &str) -> (Value, Value) {
        let mut probe = vec!["lab", "probe", "--name", &self.name, "-n", "x", "-n", "y", "-n", "z", "--via", via, "--timeout", "400", "-o", "json"];
        let mut matrix = vec!["policy", "matrix", "--lab", &self.name, "-o", "json"];
        for p in PORTS {
            probe.extend(["--port", p]);
            matrix.extend(["--port", p]);
        }
        let probed: Value = serde_json::from_str(&ok(&podnet(&probe), "lab probe")).unwrap();
        let engine: Value = serde_json::from_str(&ok(&podnet(&matrix), "policy matrix --lab")).unwrap();
        (probed, engine)
    }
}

/// Cells where the probed matrix differs from the engine's (matched by pod name).
fn differences(probed: &Value, engine: &Value) -> Vec<String> {
    let names = |v: &Value| -> Vec<String> { v["pods"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect() };
    let (pp, ep) = (names(probed), names(engine));
    let mut out = Vec::new();
    for (c, m) in probed["matrices"].as_array().unwrap().iter().enumerate() {
        let e = &engine["matrices"][c];
        assert_eq!((&m["port"], &m["protocol"]), (&e["port"], &e["protocol"]));
        for (i, from) in pp.iter().enumerate() {
            for (j, to) in pp.iter().enumerate() {
                let (ei, ej) = (ep.iter().position(|p| p == from).unwrap(), ep.iter().position(|p| p == to).unwrap());
                let (got, want) = (m["allowed"][i][j].as_bool().unwrap(), e["allowed"][ei][ej].as_bool().unwrap());
                if got != want {
                    out.push(format!("{from} -> {to} {}/{}: probed {got}, engine {want}", m["port"], m["protocol"].as_str().unwrap()));
                }
            }
        }
    }
    out
}

fn policy(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

fn ns_is(ns: &str) -> Value {
    json!({"matchLabels": {"kubernetes.io/metadata.name": ns}})
}

fn pod_is(pod: &str) -> Value {
    json!({"matchLabels": {"pod": pod}})
}

/// Upstream's scenarios (in our words), each as the policies it applies; `ip` gives a pod's
/// address in this lab for the ipBlock ones.
fn scenarios(ip: &dyn Fn(&str) -> String) -> Vec<(&'static str, Vec<Value>)> {
    let a_in_x = || json!({"matchLabels": {"pod": "a"}});
    vec![
        ("default deny ingress", vec![policy("x", "deny-ingress", json!({"podSelector": {}, "ingress": []}))]),
        ("default deny all", vec![policy("x", "deny-all", json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}))]),
        (
            "pod selector alone: own namespace",
            vec![policy("x", "allow-b", json!({"podSelector": a_in_x(), "ingress": [{"from": [{"podSelector": pod_is("b")}]}]}))],
        ),
        (
            "deny all plus allow all to one target",
            vec![
                policy("x", "deny-all", json!({"podSelector": {}, "ingress": []})),
                policy("x", "allow-all-to-a", json!({"podSelector": a_in_x(), "ingress": [{}]})),
            ],
        ),
        (
            "empty namespace selector: every namespace",
            vec![policy("x", "allow-ns", json!({"podSelector": a_in_x(), "ingress": [{"from": [{"namespaceSelector": {}}]}]}))],
        ),
        (
            "namespace selector alone",
            vec![policy("x", "allow-y", json!({"podSelector": a_in_x(), "ingress": [{"from": [{"namespaceSelector": ns_is("y")}]}]}))],
        ),
        (
            "match expressions",
            vec![policy(
                "x",
                "allow-not-y",
                json!({"podSelector": a_in_x(), "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["y"]}]}}]}]}),
            )],
        ),
        (
            "two peers are ORed",
            vec![policy(
                "x",
                "allow-two",
                json!({"podSelector": a_in_x(), "ingress": [{"from": [{"podSelector": pod_is("b")}, {"namespaceSelector": ns_is("z")}]}]}),
            )],
        ),
        (
            "namespace and pod selector in one peer are ANDed",
            vec![policy(
                "x",
                "allow-y-b",
                json!({"podSelector": a_in_x(), "ingress": [{"from": [{"namespaceSelector": ns_is("y"), "podSelector": pod_is("b")}]}]}),
            )],
        ),
        (
            "several values in ANDed selectors",
            vec![policy(
                "x",
                "allow-yz-bc",
                json!({"podSelector": a_in_x(), "ingress": [{"from": [{
                    "namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "In", "values": ["y", "z"]}]},
                    "podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b", "c"]}]}
                }]}]}),
            )],
        ),
        (
            "ports restrict a rule",
            vec![policy(
                "x",
                "allow-y-81",
                json!({"podSelector": a_in_x(), "ingress": [{"from": [{"namespaceSelector": ns_is("y")}], "ports": [{"port": 81}]}]}),
            )],
        ),
        (
            "stacked policies add up per port",
            vec![
                policy(
                    "x",
                    "allow-y-81",
                    json!({"podSelector": a_in_x(), "ingress": [{"from": [{"namespaceSelector": ns_is("y")}], "ports": [{"port": 81}]}]}),
                ),
                policy(
                    "x",
                    "allow-z-80",
                    json!({"podSelector": a_in_x(), "ingress": [{"from": [{"namespaceSelector": ns_is("z")}], "ports": [{"port": 80, "protocol": "UDP"}]}]}),
                ),
            ],
        ),
        ("named port in an ingress rule", vec![policy("x", "allow-81-named", json!({"podSelector": {}, "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]}))]),
        (
            "named UDP port from one namespace",
            vec![policy(
                "x",
                "allow-y-named",
                json!({"podSelector": a_in_x(), "ingress": [{"from": [{"namespaceSelector": ns_is("y")}], "ports": [{"port": "serve-80-udp", "protocol": "UDP"}]}]}),
            )],
        ),
        (
            "named port in an egress rule: resolved on the destination",
            vec![policy("x", "egress-80-named", json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "serve-80-tcp"}]}]}))],
        ),
        (
            "egress to one pod of another namespace",
            vec![policy(
                "x",
                "to-y-a",
                json!({"podSelector": a_in_x(), "policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": ns_is("y"), "podSelector": pod_is("a")}]}]}),
            )],
        ),
        (
            "egress to a /32 ipBlock",
            vec![policy(
                "x",
                "to-y-b",
                json!({"podSelector": a_in_x(), "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": format!("{}/32", ip("y/b"))}}]}]}),
            )],
        ),
        (
            "except carves a pod out of an egress ipBlock",
            vec![policy(
                "x",
                "cidr-except",
                json!({"podSelector": a_in_x(), "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": [format!("{}/32", ip("x/b"))]}}]}]}),
            )],
        ),
        (
            "except is not a deny: another policy may allow the address",
            vec![
                policy(
                    "x",
                    "cidr-except",
                    json!({"podSelector": a_in_x(), "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": [format!("{}/32", ip("x/b"))]}}]}]}),
                ),
                policy(
                    "x",
                    "allow-x-b",
                    json!({"podSelector": a_in_x(), "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": format!("{}/32", ip("x/b"))}}]}]}),
                ),
            ],
        ),
        (
            "ingress from an ipBlock matches pod IPs",
            vec![policy(
                "x",
                "from-cidr",
                json!({"podSelector": a_in_x(), "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": [format!("{}/32", ip("z/c")), format!("{}/31", ip("y/a"))]}}]}]}),
            )],
        ),
        (
            "ingress and egress controlled independently",
            vec![
                policy("x", "deny-egress-a", json!({"podSelector": a_in_x(), "policyTypes": ["Egress"]})),
                policy("y", "deny-ingress-b", json!({"podSelector": pod_is("b"), "policyTypes": ["Ingress"]})),
            ],
        ),
        (
            "a UDP rule never opens TCP",
            vec![policy("x", "udp-81", json!({"podSelector": a_in_x(), "ingress": [{"ports": [{"port": 81, "protocol": "UDP"}]}]}))],
        ),
        (
            "an SCTP-only policy still isolates",
            vec![policy("x", "sctp-80", json!({"podSelector": a_in_x(), "ingress": [{"ports": [{"port": 80, "protocol": "SCTP"}]}]}))],
        ),
        (
            "a protocol without port: every port of it",
            vec![policy("x", "any-udp", json!({"podSelector": a_in_x(), "ingress": [{"ports": [{"protocol": "UDP"}]}]}))],
        ),
        (
            "endPort ranges are inclusive",
            vec![
                policy("x", "in-80-81", json!({"podSelector": pod_is("b"), "ingress": [{"ports": [{"port": 80, "endPort": 81, "protocol": "TCP"}]}]})),
                policy("x", "out-81-85", json!({"podSelector": a_in_x(), "policyTypes": ["Egress"], "egress": [{"ports": [{"port": 81, "endPort": 85}]}]})),
            ],
        ),
        (
            "client-side egress deny wins over a server-side allow",
            vec![
                policy("x", "deny-egress", json!({"podSelector": a_in_x(), "policyTypes": ["Egress"]})),
                policy("y", "allow-all", json!({"podSelector": {}, "ingress": [{}]})),
            ],
        ),
        (
            "ingress and egress in one policy",
            vec![policy(
                "x",
                "both",
                json!({"podSelector": a_in_x(), "policyTypes": ["Ingress", "Egress"], "ingress": [{"from": [{"namespaceSelector": ns_is("z")}]}], "egress": [{"to": [{"namespaceSelector": ns_is("y")}]}]}),
            )],
        ),
        (
            "egress only to DNS",
            vec![policy("x", "dns-only", json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]}))],
        ),
        (
            "rules are never cross-multiplied",
            vec![policy(
                "x",
                "two-rules",
                json!({"podSelector": a_in_x(), "ingress": [
                    {"from": [{"namespaceSelector": ns_is("y")}], "ports": [{"port": 80}]},
                    {"from": [{"namespaceSelector": ns_is("z")}], "ports": [{"port": 81, "protocol": "UDP"}]}
                ]}),
            )],
        ),
        ("egress rules without policyTypes also isolate ingress", vec![policy("x", "egress-only-rules", json!({"podSelector": a_in_x(), "egress": [{}]}))]),
        (
            "several podSelector peers",
            vec![policy(
                "x",
                "allow-b-c",
                json!({"podSelector": a_in_x(), "ingress": [{"from": [{"podSelector": pod_is("b")}, {"podSelector": pod_is("c")}]}]}),
            )],
        ),
        (
            "one pod of another namespace",
            vec![policy(
                "x",
                "allow-y-a",
                json!({"podSelector": a_in_x(), "ingress": [{"from": [{"namespaceSelector": ns_is("y"), "podSelector": pod_is("a")}]}]}),
            )],
        ),
        (
            "an egress allow-all rule takes precedence over a narrower one",
            vec![
                policy(
                    "x",
                    "to-y-a",
                    json!({"podSelector": a_in_x(), "policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": ns_is("y"), "podSelector": pod_is("a")}]}]}),
                ),
                policy("x", "all-egress", json!({"podSelector": a_in_x(), "policyTypes": ["Egress"], "egress": [{}]})),
            ],
        ),
        (
            "an ingress allow-all rule takes precedence over a narrower one",
            vec![
                policy(
                    "x",
                    "allow-y-81",
                    json!({"podSelector": a_in_x(), "ingress": [{"from": [{"namespaceSelector": ns_is("y")}], "ports": [{"port": 81}]}]}),
                ),
                policy("x", "all-ingress", json!({"podSelector": a_in_x(), "policyTypes": ["Ingress"], "ingress": [{}]})),
            ],
        ),
        (
            "several endPort ranges and single ports combine",
            vec![policy(
                "x",
                "ranges",
                json!({"podSelector": a_in_x(), "ingress": [{"ports": [{"port": 79, "endPort": 80, "protocol": "TCP"}, {"port": 81, "protocol": "UDP"}, {"port": 70, "endPort": 75, "protocol": "UDP"}]}]}),
            )],
        ),
        (
            "policyTypes leave out the other direction's rules",
            vec![policy("x", "ingress-only", json!({"podSelector": a_in_x(), "policyTypes": ["Ingress"], "egress": [{}]}))],
        ),
        ("a policy never selects pods of another namespace", vec![policy("y", "deny-y-a", json!({"podSelector": a_in_x()}))]),
        ("deny egress of one pod", vec![policy("x", "deny-egress-a", json!({"podSelector": a_in_x(), "policyTypes": ["Egress"]}))]),
        ("deny egress of a whole namespace", vec![policy("y", "deny-egress", json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": []}))]),
        (
            "egress to pods of a namespace on one named port",
            vec![policy(
                "x",
                "egress-y-named",
                json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": ns_is("y")}], "ports": [{"port": "serve-81-udp", "protocol": "UDP"}]}]}),
            )],
        ),
    ]
}

#[test]
fn every_upstream_scenario_enforced_by_the_kernel_equals_the_engine_by_pod_ip_and_by_service() {
    if !nix::unistd::geteuid().is_root() {
        testkit::skip("needs root");
        return;
    }
    let lab = Lab::up();
    let ips = lab.ips();
    let ip = |pod: &str| ips.get(pod).cloned().unwrap_or_else(|| panic!("no pod {pod}"));
    let mut failures = Vec::new();
    let list = scenarios(&ip);
    for (i, (name, policies)) in list.iter().enumerate() {
        let file = lab.write(&format!("scenario-{i}.yaml"), policies);
        ok(&podnet(&["lab", "apply", "--name", &lab.name, "-f", &file]), name);
        for via in ["pod", "service"] {
            let (probed, engine) = lab.matrices(via);
            let diff = differences(&probed, &engine);
            if !diff.is_empty() {
                failures.push(format!("{name} (via {via}):\n  {}", diff.join("\n  ")));
            }
        }
        ok(&podnet(&["lab", "delete", "--name", &lab.name, "-f", &file]), name);
    }
    assert!(failures.is_empty(), "{} of {} scenarios differ:\n{}", failures.len(), list.len(), failures.join("\n"));
}

#[test]
fn label_changes_are_enforced_within_100_ms_and_cut_established_flows() {
    if !nix::unistd::geteuid().is_root() {
        testkit::skip("needs root");
        return;
    }
    let lab = Lab::up();
    let ips = lab.ips();
    // x/a accepts only pods labelled role=client, from namespaces labelled team=blue.
    let allow = policy(
        "x",
        "clients-only",
        json!({"podSelector": pod_is("a"), "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}, "podSelector": {"matchLabels": {"role": "client"}}}]}]}),
    );
    let file = lab.write("allow.yaml", &[allow]);
    ok(&podnet(&["lab", "apply", "--name", &lab.name, "-f", &file]), "apply");
    let reach = |from: &str, to: &str, port: &str| -> bool {
        let out = ok(&podnet(&["lab", "probe", "--name", &lab.name, "-n", "x", "-n", "y", "--port", port, "--timeout", "300", "-o", "json"]), "probe");
        let v: Value = serde_json::from_str(&out).unwrap();
        let pods: Vec<&str> = v["pods"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        let (i, j) = (pods.iter().position(|p| *p == from).unwrap(), pods.iter().position(|p| *p == to).unwrap());
        v["matrices"][0]["allowed"][i][j].as_bool().unwrap()
    };
    assert!(!reach("y/b", "x/a", "80/TCP"));
    // A UDP flow from y/b to x/a opened while it is allowed, then cut by a relabel.
    let ns_label = |args: &[&str]| ok(&podnet(&[&["lab", "label", "--name", &lab.name][..], args].concat()), "lab label");
    assert_eq!(ns_label(&["namespace", "y", "team=blue"]).trim(), "namespace/y labeled");
    let started = Instant::now();
    assert_eq!(ns_label(&["pod", "-n", "y", "b", "role=client"]).trim(), "pod/b labeled");
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1000), "lab label took {took:?}");
    assert!(reach("y/b", "x/a", "80/TCP"), "allowed once both labels match");
    assert!(!reach("y/c", "x/a", "80/TCP"), "y/c has no role=client");
    let netns = format!("podnet.{}.y.b", lab.name);
    let target: std::net::SocketAddr = (ips["x/a"].parse::<Ipv4Addr>().unwrap(), 80).into();
    let socket = dataplane::netns::run_in(&dataplane::netns::path_of(&netns), || UdpSocket::bind("0.0.0.0:0")).unwrap().unwrap();
    socket.connect(target).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut buf = [0u8; 2048];
    socket.send(b"hello\n").unwrap();
    assert!(socket.recv(&mut buf).is_ok(), "the flow answers while allowed");
    // The pod loses its label: new connections and the established flow stop.
    assert_eq!(ns_label(&["pod", "-n", "y", "b", "role-"]).trim(), "pod/b labeled");
    socket.send(b"again\n").unwrap();
    assert!(socket.recv(&mut buf).is_err(), "the established UDP flow must be cut by the relabel");
    assert!(!reach("y/b", "x/a", "80/TCP"));
    // The same label again on the namespace side: removing team=blue denies too.
    ns_label(&["pod", "-n", "y", "b", "role=client"]);
    assert!(reach("y/b", "x/a", "80/UDP"));
    ns_label(&["namespace", "y", "team-"]);
    assert!(!reach("y/b", "x/a", "80/UDP"));
    // The policy updated in place (same name, now only UDP 81): configured, and in force.
    let narrowed = policy(
        "x",
        "clients-only",
        json!({"podSelector": pod_is("a"), "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "client"}}}], "ports": [{"port": 81, "protocol": "UDP"}]}]}),
    );
    let updated = lab.write("narrowed.yaml", &[narrowed]);
    let said = ok(&podnet(&["lab", "apply", "--name", &lab.name, "-f", &updated]), "apply update");
    assert!(said.contains("networkpolicy.networking.k8s.io/clients-only configured"), "{said}");
    assert!(reach("y/b", "x/a", "81/UDP"));
    assert!(!reach("y/b", "x/a", "80/UDP"));
    // A pod relabelled into a policy's selection is isolated at once.
    ns_label(&["pod", "-n", "x", "c", "pod=a"]);
    assert!(!reach("y/c", "x/c", "80/TCP"), "x/c now carries pod=a and is isolated");
    // Deleted: no longer enforced; a second delete is NotFound.
    ok(&podnet(&["lab", "delete", "--name", &lab.name, "-f", &updated]), "delete");
    assert!(reach("y/c", "x/a", "80/TCP"));
    let again = podnet(&["lab", "delete", "--name", &lab.name, "-f", &updated]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("Error from server (NotFound): networkpolicies.networking.k8s.io \"clients-only\" not found"));
    // An unknown pod is NotFound, a bad label refused; nothing changes.
    let out = podnet(&["lab", "label", "--name", &lab.name, "pod", "-n", "y", "nope", "a=b"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not found"));
    let out = podnet(&["lab", "label", "--name", &lab.name, "pod", "-n", "y", "b", "bad key=x"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("invalid label"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Sends one datagram from a socket in a pod's namespace and says whether a reply came.
fn udp_exchange(socket: &UdpSocket) -> bool {
    let mut buf = [0u8; 2048];
    socket.send(b"ping\n").is_ok() && socket.recv(&mut buf).is_ok()
}

/// A UDP socket in a pod's namespace, connected to `to`.
fn udp_socket_in(lab: &Lab, pod: &str, to: std::net::SocketAddr, timeout: Duration) -> UdpSocket {
    let (ns, name) = pod.split_once('/').unwrap();
    let netns = format!("podnet.{}.{ns}.{name}", lab.name);
    let socket = dataplane::netns::run_in(&dataplane::netns::path_of(&netns), || UdpSocket::bind("0.0.0.0:0")).unwrap().unwrap();
    socket.connect(to).unwrap();
    socket.set_read_timeout(Some(timeout)).unwrap();
    socket
}

fn nft_in_node(lab: &Lab, node: &str, args: &[&str]) -> Output {
    Command::new("ip").args(["netns", "exec", &format!("podnet.{}.{node}", lab.name), "nft"]).args(args).output().unwrap()
}

#[test]
fn tables_removed_by_hand_come_back_and_a_restart_never_lapses_isolation() {
    if !nix::unistd::geteuid().is_root() {
        testkit::skip("needs root");
        return;
    }
    let lab = Lab::up();
    let ips = lab.ips();
    let deny = policy("x", "deny-ingress", json!({"podSelector": pod_is("a"), "policyTypes": ["Ingress"]}));
    let file = lab.write("deny.yaml", &[deny]);
    ok(&podnet(&["lab", "apply", "--name", &lab.name, "-f", &file]), "apply");
    let target: std::net::SocketAddr = (ips["x/a"].parse::<Ipv4Addr>().unwrap(), 80).into();
    let node_of_x_a = "node-1"; // x is namespace 0, a pod 0: node-((0+0)%3+1)
    let probe = udp_socket_in(&lab, "y/b", target, Duration::from_millis(300));
    assert!(!udp_exchange(&probe), "denied before anything is removed");
    for removal in [["flush", "table", "inet", "podnet-policy"], ["delete", "table", "inet", "podnet-policy"]] {
        let out = nft_in_node(&lab, node_of_x_a, &removal);
        assert!(out.status.success(), "nft {removal:?}: {}", String::from_utf8_lossy(&out.stderr));
        // While the rules are gone a flow gets through (and is remembered by conntrack)...
        let during = udp_socket_in(&lab, "y/b", target, Duration::from_millis(300));
        assert!(udp_exchange(&during), "with the table {removal:?}ed by hand the packets pass until it is restored");
        // ...until the lab process notices (one check period) and restores the rules, and cuts it.
        let started = Instant::now();
        while !String::from_utf8_lossy(&nft_in_node(&lab, node_of_x_a, &["list", "chain", "inet", "podnet-policy", "forward-ingress"]).stdout).contains("vmap")
        {
            assert!(started.elapsed() < Duration::from_secs(5), "the table was not restored after {removal:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(500));
        assert!(!udp_exchange(&during), "the flow opened while the table was {removal:?}ed must be cut once it is restored");
        assert!(!udp_exchange(&probe), "denied again after {removal:?}");
    }
    // The lab process killed, then restarted: isolation holds all along (a prober in the
    // background never gets an answer).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let prober = {
        let (stop, answered) = (std::sync::Arc::clone(&stop), std::sync::Arc::clone(&answered));
        let sockets: Vec<UdpSocket> = (0..20).map(|_| udp_socket_in(&lab, "y/b", target, Duration::from_millis(50))).collect();
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if udp_exchange(&sockets[i % sockets.len()]) {
                    answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                i += 1;
            }
        })
    };
    let pid: i32 = std::fs::read_to_string(format!("/run/podnet/{}/lab.pid", lab.name)).unwrap().trim().parse().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    ok(&podnet(&["lab", "restart", "--name", &lab.name]), "lab restart");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    prober.join().unwrap();
    assert_eq!(answered.load(std::sync::atomic::Ordering::SeqCst), 0, "a denied flow got an answer while the lab process was down or restarting");
    assert!(!udp_exchange(&probe), "denied after the restart");
}

#[test]
fn every_drop_is_logged_with_its_pods_and_policy() {
    if !nix::unistd::geteuid().is_root() {
        testkit::skip("needs root");
        return;
    }
    let lab = Lab::up();
    let deny = policy("x", "only-from-y", json!({"podSelector": pod_is("a"), "ingress": [{"from": [{"namespaceSelector": ns_is("y")}]}]}));
    let file = lab.write("policy.yaml", &[deny]);
    ok(&podnet(&["lab", "apply", "--name", &lab.name, "-f", &file]), "apply");
    let mut watcher = Command::new(env!("CARGO_BIN_EXE_podnet"))
        .args(["lab", "logs", "--drops", "-o", "json", "-n", "x", "--name", &lab.name])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It says when it watches.
    let mut said = String::new();
    let mut stderr = std::io::BufReader::new(watcher.stderr.take().unwrap());
    std::io::BufRead::read_line(&mut stderr, &mut said).unwrap();
    assert!(said.contains("Watching"), "{said}");
    // z/b is denied (TCP 80, UDP 81); y/b is allowed; neither is reset.
    let probe = |from: &str, port: &str| {
        ok(&podnet(&["lab", "probe", "--name", &lab.name, "-n", "x", "-n", "y", "-n", "z", "--port", port, "--timeout", "300", "-o", "json"]), from)
    };
    probe("z", "80/TCP");
    probe("z", "81/UDP");
    // Read what the watcher prints until both drops are there (or 5 s pass).
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let reader = {
        let (stdout, lines) = (watcher.stdout.take().unwrap(), std::sync::Arc::clone(&lines));
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
                lines.lock().unwrap().push(serde_json::from_str(&line).unwrap());
            }
        })
    };
    let started = Instant::now();
    let has = |lines: &[Value], proto: &str| lines.iter().any(|d| d["src_pod"] == "z/b" && d["dst_pod"] == "x/a" && d["protocol"] == proto);
    while !(has(&lines.lock().unwrap(), "TCP") && has(&lines.lock().unwrap(), "UDP")) && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("drops seen after {:?}", started.elapsed());
    watcher.kill().unwrap();
    watcher.wait().unwrap();
    reader.join().unwrap();
    let drops = lines.lock().unwrap().clone();
    let find = |src: &str, proto: &str, port: u64| {
        drops.iter().find(|d| d["src_pod"] == src && d["dst_pod"] == "x/a" && d["protocol"] == proto && d["dst_port"] == port).cloned()
    };
    let tcp = find("z/b", "TCP", 80).unwrap_or_else(|| panic!("no drop of z/b -> x/a 80/TCP in {drops:#?}"));
    assert_eq!(tcp["direction"], "ingress");
    assert_eq!(tcp["verdict"], "drop");
    assert_eq!(tcp["policy"], "x/only-from-y");
    assert_eq!(tcp["src_ip"], lab.ips()["z/b"].as_str());
    assert!(tcp["time"].as_str().unwrap().ends_with('Z'));
    assert!(find("z/b", "UDP", 81).is_some(), "the UDP drop is logged too");
    assert!(find("y/b", "TCP", 80).is_none(), "allowed connections are not drops");
    // -n x keeps only drops that touch namespace x.
    assert!(drops.iter().all(|d| [&d["src_pod"], &d["dst_pod"]].iter().any(|p| p.as_str().is_some_and(|p| p.starts_with("x/")))));
    // The node that dropped them counts them on its metrics endpoint, by policy and verdict.
    let pod: Value = serde_json::from_slice(&podnet(&["lab", "get", "pods", "a", "-n", "x", "-o", "json", "--name", &lab.name]).stdout).unwrap();
    let (node, node_ip) = (pod["spec"]["nodeName"].as_str().unwrap(), pod["status"]["hostIP"].as_str().unwrap());
    let metrics = Command::new("ip")
        .args(["netns", "exec", &format!("podnet.{}.{node}", lab.name), "curl", "-s", &format!("http://{node_ip}:10249/metrics")])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    let value = |series: &str| metrics.lines().find_map(|l| l.strip_prefix(series)).and_then(|v| v.trim().parse::<u64>().ok());
    assert!(value("podnet_policy_drops_total{policy=\"x/only-from-y\",direction=\"ingress\"}").is_some_and(|n| n >= 2), "{metrics}");
    assert!(value("podnet_flows_total{verdict=\"DROPPED\"}").is_some_and(|n| n >= 2), "{metrics}");
    assert!(value("podnet_flows_total{verdict=\"FORWARDED\"}").is_some(), "{metrics}");
}

#[test]
fn the_shop_example_enforces_the_seeds_policies_exactly() {
    if !nix::unistd::geteuid().is_root() {
        testkit::skip("needs root");
        return;
    }
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let name = format!("shop{}-{}", std::process::id() % 100_000, SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
    let shop = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/shop");
    let lab = Lab { name, dir: tempfile::tempdir().unwrap() };
    ok(&podnet(&["lab", "up", "--name", &lab.name, "-f", shop]), "lab up");
    for via in ["pod", "service"] {
        let out = podnet(&["lab", "probe", "--name", &lab.name, "-n", "production", "-n", "default", "--via", via, "--timeout", "400", "-o", "json"]);
        let probed: Value = serde_json::from_str(&ok(&out, "probe")).unwrap();
        // Through Services, a pod port no Service serves cannot be reached (the probe says which).
        let note = String::from_utf8_lossy(&out.stderr).into_owned();
        let unserved: Vec<&str> = note.split_once("shown as blocked: ").map(|(_, list)| list.trim().split(", ").collect()).unwrap_or_default();
        let mut matrix = vec!["policy", "matrix", "--lab", &lab.name, "-o", "json"];
        let ports: Vec<String> = probed["matrices"].as_array().unwrap().iter().map(|m| format!("{}/{}", m["port"], m["protocol"].as_str().unwrap())).collect();
        for p in &ports {
            matrix.extend(["--port", p.as_str()]);
        }
        let engine: Value = serde_json::from_str(&ok(&podnet(&matrix), "matrix")).unwrap();
        let diff: Vec<String> = differences(&probed, &engine)
            .into_iter()
            .filter(|d| !unserved.iter().any(|u| u.split_once(' ').is_some_and(|(pod, port)| d.contains(&format!("-> {pod} {port}:")))))
            .collect();
        assert!(diff.is_empty(), "via {via}:\n{}", diff.join("\n"));
        assert_eq!(via == "service", !unserved.is_empty(), "{note}");
        // The seed's intent, in packets: web reaches api on 8080, api reaches postgres on 5432,
        // nothing else in production reaches them.
        let cell = |from: &str, to: &str, port: u64| {
            let pods: Vec<&str> = probed["pods"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
            let (i, j) = (pods.iter().position(|p| p.starts_with(from)).unwrap(), pods.iter().position(|p| p.starts_with(to)).unwrap());
            let m = probed["matrices"].as_array().unwrap().iter().find(|m| m["port"] == port).unwrap();
            m["allowed"][i][j].as_bool().unwrap()
        };
        // (The shop has a Service only for order-service: these two are pod-IP paths.)
        if via == "pod" {
            assert!(cell("production/web-service", "production/api-service", 8080));
            assert!(cell("production/api-service", "production/postgres", 5432));
        }
        assert!(!cell("production/web-service", "production/postgres", 5432), "via {via}");
        assert!(!cell("default/debug-pod", "production/api-service", 8080), "via {via}");
    }
    let check = podnet(&["lab", "check", "--name", &lab.name]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    assert!(String::from_utf8_lossy(&check.stdout).contains("dropped, as NetworkPolicy requires"));
}
