//! The set-based matrix and the one-connection evaluator are two implementations of the same
//! semantics: on random clusters they must agree on every pair and port; so must the rules
//! compiled for the kernel, on the cluster and on its dual-stack twin (both families).

#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a line number

use std::net::IpAddr;

use model::Protocol;
use policy::{Connection, Endpoint, Evaluator, PolicySet};
use proptest::prelude::*;
use serde_json::{Value, json};
use twins::{dual_stack, v6_twin};

mod twins;

const NAMESPACES: [&str; 3] = ["x", "y", "z"];

fn labels() -> impl Strategy<Value = Value> {
    (proptest::option::of(0..3u8), proptest::option::of(0..2u8)).prop_map(|(app, tier)| {
        let mut m = serde_json::Map::new();
        if let Some(a) = app {
            m.insert("app".into(), json!(format!("a{a}")));
        }
        if let Some(t) = tier {
            m.insert("tier".into(), json!(format!("t{t}")));
        }
        Value::Object(m)
    })
}

fn selector() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({})),
        (0..3u8).prop_map(|a| json!({"matchLabels": {"app": format!("a{a}")}})),
        (0..2u8).prop_map(|t| json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": [format!("t{t}")]}]})),
        Just(json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]})),
        Just(json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["a0", "a2"]}]})),
    ]
}

fn ns_selector() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({})),
        (0..3usize).prop_map(|i| json!({"matchLabels": {"kubernetes.io/metadata.name": NAMESPACES[i]}})),
        Just(json!({"matchLabels": {"env": "prod"}})),
        Just(json!({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]})),
    ]
}

fn peer() -> impl Strategy<Value = Value> {
    prop_oneof![
        selector().prop_map(|s| json!({"podSelector": s})),
        ns_selector().prop_map(|n| json!({"namespaceSelector": n})),
        (selector(), ns_selector()).prop_map(|(s, n)| json!({"podSelector": s, "namespaceSelector": n})),
        (0..3u8, proptest::bool::ANY).prop_map(|(third, except)| {
            let mut b = json!({"ipBlock": {"cidr": format!("10.244.{third}.0/24")}});
            if except {
                b["ipBlock"]["except"] = json!([format!("10.244.{third}.0/30")]);
            }
            b
        }),
    ]
}

fn port() -> impl Strategy<Value = Value> {
    let proto = prop_oneof![Just("TCP"), Just("UDP"), Just("SCTP")];
    prop_oneof![
        proto.clone().prop_map(|p| json!({"protocol": p})),
        (proto.clone(), 79..82u16).prop_map(|(p, n)| json!({"protocol": p, "port": n})),
        (79..81u16, 0..3u16).prop_map(|(n, w)| json!({"port": n, "endPort": n + w})),
        prop_oneof![Just("http"), Just("dns"), Just("metrics")].prop_map(|name| json!({"port": name})),
        Just(json!({"port": "dns", "protocol": "UDP"})),
    ]
}

fn rule(peer_key: &'static str) -> impl Strategy<Value = Value> {
    (proptest::option::of(proptest::collection::vec(peer(), 0..3)), proptest::option::of(proptest::collection::vec(port(), 0..3))).prop_map(
        move |(peers, ports)| {
            let mut r = json!({});
            if let Some(p) = peers {
                r[peer_key] = json!(p);
            }
            if let Some(p) = ports {
                r["ports"] = json!(p);
            }
            r
        },
    )
}

fn policy_spec() -> impl Strategy<Value = Value> {
    let types = prop_oneof![Just(None), Just(Some(json!(["Ingress"]))), Just(Some(json!(["Egress"]))), Just(Some(json!(["Ingress", "Egress"]))),];
    (selector(), proptest::option::of(proptest::collection::vec(rule("from"), 0..3)), proptest::option::of(proptest::collection::vec(rule("to"), 0..3)), types)
        .prop_map(|(sel, ingress, egress, types)| {
            let mut s = json!({"podSelector": sel});
            if let Some(i) = ingress {
                s["ingress"] = json!(i);
            }
            if let Some(e) = egress {
                s["egress"] = json!(e);
            }
            if let Some(t) = types {
                s["policyTypes"] = t;
            }
            s
        })
}

#[derive(Debug, Clone)]
struct PodSpec {
    ns: usize,
    labels: Value,
    ports: Vec<(u8, u16, u8)>,
    ip: bool,
    host_network: bool,
    node: Option<u8>,
}

fn pod_spec() -> impl Strategy<Value = PodSpec> {
    (
        0..3usize,
        labels(),
        proptest::collection::vec((0..4u8, 79..82u16, 0..3u8), 0..3),
        proptest::bool::weighted(0.8),
        proptest::bool::weighted(0.15),
        proptest::option::of(0..2u8),
    )
        .prop_map(|(ns, labels, ports, ip, host_network, node)| PodSpec { ns, labels, ports, ip, host_network, node })
}

fn build(pods: &[PodSpec], prod_ns: usize, policies: &[(usize, Value)]) -> Vec<Value> {
    let mut objects = Vec::new();
    for (i, ns) in NAMESPACES.iter().enumerate() {
        let labels = if i == prod_ns { json!({"env": "prod"}) } else { json!({}) };
        objects.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}));
    }
    for (i, p) in pods.iter().enumerate() {
        let names = ["http", "dns", "metrics", ""];
        let protos = ["TCP", "UDP", "SCTP"];
        let mut seen = std::collections::BTreeSet::new();
        let ports: Vec<Value> = p
            .ports
            .iter()
            .filter(|(_, n, pr)| seen.insert((*n, *pr)))
            .map(|(name, n, pr)| {
                let mut v = json!({"containerPort": n, "protocol": protos[*pr as usize]});
                if !names[*name as usize].is_empty() {
                    v["name"] = json!(names[*name as usize]);
                }
                v
            })
            .collect();
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("p{i}"), "namespace": NAMESPACES[p.ns], "labels": p.labels},
            "spec": {"containers": [{"name": "c", "ports": ports}], "hostNetwork": p.host_network}
        });
        if let Some(node) = p.node {
            pod["spec"]["nodeName"] = json!(format!("node{node}"));
        }
        if p.ip {
            // Spread pods over the ipBlock ranges the policies use: 10.244.<0..2>.<i+1>.
            pod["status"] = json!({"podIP": format!("10.244.{}.{}", i % 3, i / 3 + 1)});
        }
        objects.push(pod);
    }
    for (i, (ns, spec)) in policies.iter().enumerate() {
        objects.push(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": format!("np{i}"), "namespace": NAMESPACES[*ns]}, "spec": spec
        }));
    }
    objects
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn matrix_equals_evaluator_on_every_pair(
        pods in proptest::collection::vec(pod_spec(), 1..9),
        prod_ns in 0..4usize,
        policies in proptest::collection::vec((0..3usize, policy_spec()), 0..5),
    ) {
        let state = testkit::cluster(&build(&pods, prod_ns, &policies));
        let compiled = PolicySet::compile(&state).expect("generated policies are valid");
        let ports = [(80, Protocol::Tcp), (81, Protocol::Udp), (80, Protocol::Sctp), (79, Protocol::Tcp)];
        let matrix = policy::compute(&state, &compiled, &ports);
        let evaluator = Evaluator::new(&state, &compiled);
        let enforcement = policy::enforce::Enforcement::new(&state, &compiled);
        let (dual_state, dual_policies) = dual_stack(&state, &compiled);
        let dual = policy::enforce::Enforcement::new(&dual_state, &dual_policies);
        for (c, (port, protocol)) in ports.iter().enumerate() {
            for (i, a) in state.pods.iter().enumerate() {
                for (j, b) in state.pods.iter().enumerate() {
                    let conn = Connection { from: Endpoint::Pod(a), to: Endpoint::Pod(b), port: *port, protocol: *protocol };
                    prop_assert_eq!(
                        matrix.allowed(c, i, j),
                        evaluator.allowed(&conn),
                        "{} -> {} on {}/{}: {:#?}", a.key(), b.key(), port, protocol, evaluator.explain(&conn)
                    );
                    // The kernel judges addresses on a node's forward hook: pods with an address
                    // that are not the node's own traffic.
                    if let (Some(ip_a), Some(ip_b)) = (policy::enforce::pod_ipv4(a), policy::enforce::pod_ipv4(b))
                        && !a.host_network && !b.host_network && i != j
                    {
                        prop_assert_eq!(
                            enforcement.allows(IpAddr::V4(ip_a), IpAddr::V4(ip_b), Some(*protocol), *port),
                            evaluator.allowed(&conn),
                            "kernel rules: {} -> {} on {}/{}: {:#?}", a.key(), b.key(), port, protocol, evaluator.explain(&conn)
                        );
                        for (from, to) in [(IpAddr::V4(ip_a), IpAddr::V4(ip_b)), (IpAddr::V6(v6_twin(ip_a)), IpAddr::V6(v6_twin(ip_b)))] {
                            prop_assert_eq!(
                                dual.allows(from, to, Some(*protocol), *port),
                                evaluator.allowed(&conn),
                                "kernel rules, dual-stack: {} ({}) -> {} ({}) on {}/{}: {:#?}", a.key(), from, b.key(), to, port, protocol, evaluator.explain(&conn)
                            );
                        }
                    }
                }
            }
        }
    }
}
