//! The scenarios of upstream `test/e2e/network/netpol/network_policy.go`, re-expressed as truth
//! tables over the same model (namespaces x/y/z, pods a/b/c serving 80/81 on TCP/UDP/SCTP; see
//! `testkit`). Each expectation is checked against the matrix, the reference evaluator and the
//! rules compiled for the kernel (`enforce`), decided on addresses as a node decides them, in
//! the single-stack model and in its dual-stack twin (see [`dual_stack`]), on both families.
//! Unlike the e2e suite, loopback is not ignored: a pod may always reach itself.

#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a line number

use std::net::IpAddr;

use model::{ClusterState, Protocol};
use policy::{Connection, Endpoint, Evaluator, PolicySet};
use serde_json::{Value, json};
use testkit::{TruthTable, e2e_with};
use twins::{dual_stack, net_twin};

mod twins;

const TCP: Protocol = Protocol::Tcp;
const UDP: Protocol = Protocol::Udp;
const SCTP: Protocol = Protocol::Sctp;

/// Checks one port of one scenario: the matrix and the evaluator must both equal `expected`.
fn check(state: &ClusterState, port: u16, protocol: Protocol, expected: &TruthTable) {
    let mut expected = expected.clone();
    expected.allow_loopback();
    let policies = PolicySet::compile(state).expect("valid policies");
    let matrix = policy::compute(state, &policies, &[(port, protocol)]);
    let evaluator = Evaluator::new(state, &policies);
    let names: Vec<String> = state.pods.iter().map(|p| p.key()).collect();
    assert_eq!(names, expected.pods, "the model's pods");
    let enforcement = policy::enforce::Enforcement::new(state, &policies);
    let mut from_matrix = expected.clone();
    let mut from_evaluator = expected.clone();
    let mut from_kernel_rules = expected.clone();
    for (i, a) in state.pods.iter().enumerate() {
        for (j, b) in state.pods.iter().enumerate() {
            from_matrix.values[i][j] = matrix.allowed(0, i, j);
            let c = Connection { from: Endpoint::Pod(a), to: Endpoint::Pod(b), port, protocol };
            from_evaluator.values[i][j] = evaluator.allowed(&c);
            let (ip_a, ip_b) = (IpAddr::V4(policy::enforce::pod_ipv4(a).unwrap()), IpAddr::V4(policy::enforce::pod_ipv4(b).unwrap()));
            from_kernel_rules.values[i][j] = enforcement.allows(ip_a, ip_b, Some(protocol), port);
        }
    }
    assert!(from_matrix == expected, "matrix on {port}/{protocol}\nexpected:\n{}\ngot:\n{}", expected.pretty(), from_matrix.pretty());
    assert!(from_evaluator == expected, "evaluator on {port}/{protocol}\nexpected:\n{}\ngot:\n{}", expected.pretty(), from_evaluator.pretty());
    assert!(
        from_kernel_rules == expected,
        "compiled kernel rules on {port}/{protocol}\nexpected:\n{}\ngot:\n{}",
        expected.pretty(),
        from_kernel_rules.pretty()
    );
    // The same cluster dual-stack: each family on its own must give the same answers.
    let (dual_state, dual_policies) = dual_stack(state, &policies);
    let dual = policy::enforce::Enforcement::new(&dual_state, &dual_policies);
    for family in [4, 6] {
        let mut from_dual = expected.clone();
        for (i, a) in dual_state.pods.iter().enumerate() {
            for (j, b) in dual_state.pods.iter().enumerate() {
                let of_family = |p: &model::PodInfo| p.ips.iter().copied().find(|ip| ip.is_ipv4() == (family == 4)).unwrap();
                from_dual.values[i][j] = dual.allows(of_family(a), of_family(b), Some(protocol), port);
            }
        }
        assert!(
            from_dual == expected,
            "compiled kernel rules, dual-stack, IPv{family}, on {port}/{protocol}\nexpected:\n{}\ngot:\n{}",
            expected.pretty(),
            from_dual.pretty()
        );
    }
}

#[test]
fn the_dual_stack_twin_of_the_model() {
    let s = e2e_with(&[]);
    let policies = PolicySet::compile(&s).unwrap();
    let (dual, _) = dual_stack(&s, &policies);
    let x_a = &dual.pods[0];
    assert_eq!(x_a.key(), "x/a");
    assert_eq!(x_a.ips, ["10.244.1.1".parse::<IpAddr>().unwrap(), "fd00::af4:101".parse().unwrap()]);
    assert_eq!(net_twin(&"10.244.0.0/16".parse().unwrap()), Some("fd00::af4:0/112".parse().unwrap()));
}

/// Upstream's "should support a 'default-deny-ingress' policy" plus "should allow ingress access
/// from namespace on one named port", written for a dual-stack cluster: the pods' IPv6 addresses
/// are theirs as much as their IPv4 ones.
#[test]
fn dual_stack_pods_are_judged_alike_on_both_families() {
    let s = e2e_with(&[
        ("x", "deny-ingress", json!({"podSelector": {}, "ingress": []})),
        (
            "x",
            "allow-y-on-81",
            json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": ns_label("y")}}], "ports": [{"port": "serve-81-tcp"}]}]}),
        ),
    ]);
    let policies = PolicySet::compile(&s).unwrap();
    let (dual, dual_policies) = dual_stack(&s, &policies);
    let enforcement = policy::enforce::Enforcement::new(&dual, &dual_policies);
    let ip = |ns: &str, pod: &str, family: usize| dual.pods.iter().find(|p| p.key() == format!("{ns}/{pod}")).unwrap().ips[family];
    for family in 0..2 {
        assert!(enforcement.allows(ip("y", "b", family), ip("x", "a", family), Some(TCP), 81));
        assert!(!enforcement.allows(ip("y", "b", family), ip("x", "a", family), Some(TCP), 80));
        assert!(!enforcement.allows(ip("z", "b", family), ip("x", "a", family), Some(TCP), 81));
        assert!(!enforcement.allows(ip("y", "b", family), ip("x", "b", family), Some(TCP), 81));
        assert!(enforcement.allows(ip("x", "a", family), ip("y", "b", family), Some(TCP), 80));
    }
    let mut want = all_allowed();
    want.set("*/*", "x/*", false);
    check(&s, 80, TCP, &want);
    want.set("y/*", "x/a", true);
    check(&s, 81, TCP, &want);
}

fn all_allowed() -> TruthTable {
    TruthTable::e2e(true)
}

fn ns_label(ns: &str) -> Value {
    json!({"kubernetes.io/metadata.name": ns})
}

#[test]
fn default_deny_ingress_blocks_everything_into_the_namespace() {
    let s = e2e_with(&[("x", "deny-ingress", json!({"podSelector": {}, "ingress": []}))]);
    let mut want = all_allowed();
    want.set("*/*", "x/*", false);
    check(&s, 80, TCP, &want);
}

#[test]
fn default_deny_all_blocks_both_directions() {
    let s = e2e_with(&[("x", "deny-all", json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}))]);
    let mut want = all_allowed();
    want.set("*/*", "x/*", false).set("x/*", "*/*", false);
    check(&s, 80, TCP, &want);
    check(&s, 81, UDP, &want);
}

#[test]
fn pod_selector_alone_means_the_policy_namespace() {
    let s = e2e_with(&[(
        "x",
        "x-a-allows-x-b",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    )]);
    let mut want = all_allowed();
    want.set_all_to("x/a", false).set("x/b", "x/a", true);
    check(&s, 80, TCP, &want);
}

#[test]
fn deny_all_plus_allow_all_to_one_target_is_a_union() {
    let s = e2e_with(&[
        ("x", "deny-all", json!({"podSelector": {}, "ingress": []})),
        ("x", "allow-all-to-a", json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"podSelector": {}, "namespaceSelector": {}}]}]})),
    ]);
    let mut want = all_allowed();
    want.set_all_to("x/b", false).set_all_to("x/c", false);
    check(&s, 80, TCP, &want);
}

#[test]
fn empty_namespace_selector_selects_all_namespaces() {
    let s = e2e_with(&[(
        "x",
        "allow-from-another-ns",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {}}}]}]}),
    )]);
    check(&s, 80, TCP, &all_allowed());
}

#[test]
fn namespace_selector_alone_allows_every_pod_of_matching_namespaces() {
    for selector in [
        json!({"matchLabels": ns_label("y")}),
        json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["y"]}]}),
        json!({"matchLabels": {"ns": "y"}}),
    ] {
        let s = e2e_with(&[("x", "allow-y", json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": selector}]}]}))]);
        let mut want = all_allowed();
        want.set("x/*", "x/a", false).set("z/*", "x/a", false);
        check(&s, 80, TCP, &want);
    }
}

#[test]
fn pod_selector_with_match_expressions() {
    let s = e2e_with(&[(
        "x",
        "x-a-allows-x-b",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b"]}]}}]}]}),
    )]);
    let mut want = all_allowed();
    want.set_all_to("x/a", false).set("x/b", "x/a", true);
    check(&s, 80, TCP, &want);
}

#[test]
fn two_peers_are_ored() {
    let s = e2e_with(&[(
        "x",
        "ns-or-pod",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
            {"namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["x"]}]}},
            {"podSelector": {"matchLabels": {"pod": "b"}}}
        ]}]}),
    )]);
    let mut want = all_allowed();
    want.set("x/c", "x/a", false);
    check(&s, 80, TCP, &want);
}

#[test]
fn namespace_and_pod_selector_in_one_peer_are_anded() {
    let s = e2e_with(&[(
        "x",
        "ns-and-pod",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
            {"namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["x"]}]},
             "podSelector": {"matchLabels": {"pod": "b"}}}
        ]}]}),
    )]);
    let mut want = all_allowed();
    want.set_all_to("x/a", false).set("y/b", "x/a", true).set("z/b", "x/a", true);
    check(&s, 80, TCP, &want);
}

#[test]
fn multiple_values_in_anded_selectors() {
    let s = e2e_with(&[(
        "x",
        "ns-not-x-pods-b-c",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
            {"namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["x"]}]},
             "podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b", "c"]}]}}
        ]}]}),
    )]);
    let mut want = all_allowed();
    want.set("x/*", "x/a", false).set("y/a", "x/a", false).set("z/a", "x/a", false);
    check(&s, 80, TCP, &want);
}

#[test]
fn several_pod_selector_peers() {
    let s = e2e_with(&[(
        "x",
        "b-or-c",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
            {"podSelector": {"matchLabels": {"pod": "b"}}}, {"podSelector": {"matchLabels": {"pod": "c"}}}
        ]}]}),
    )]);
    let mut want = all_allowed();
    want.set_all_to("x/a", false).set("x/b", "x/a", true).set("x/c", "x/a", true);
    check(&s, 80, TCP, &want);
}

#[test]
fn one_pod_of_another_namespace() {
    let s = e2e_with(&[(
        "x",
        "only-y-a",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": ns_label("y")}, "podSelector": {"matchLabels": {"pod": "a"}}}
        ]}]}),
    )]);
    let mut want = all_allowed();
    want.set_all_to("x/a", false).set("y/a", "x/a", true);
    check(&s, 80, TCP, &want);
}

fn allow_y_on_port_81() -> (&'static str, &'static str, Value) {
    (
        "x",
        "allow-y-81",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": ns_label("y")}}], "ports": [{"port": 81, "protocol": "TCP"}]}]}),
    )
}

#[test]
fn ports_restrict_a_rule() {
    let s = e2e_with(&[allow_y_on_port_81()]);
    let mut on_81 = all_allowed();
    on_81.set("x/*", "x/a", false).set("z/*", "x/a", false);
    check(&s, 81, TCP, &on_81);
    let mut on_80 = all_allowed();
    on_80.set_all_to("x/a", false);
    check(&s, 80, TCP, &on_80);
}

#[test]
fn stacked_policies_add_up_per_port() {
    let s = e2e_with(&[
        allow_y_on_port_81(),
        (
            "x",
            "allow-y-80",
            json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": ns_label("y")}}], "ports": [{"port": 80, "protocol": "TCP"}]}]}),
        ),
    ]);
    let mut want = all_allowed();
    want.set("x/*", "x/a", false).set("z/*", "x/a", false);
    check(&s, 80, TCP, &want);
    check(&s, 81, TCP, &want);
}

#[test]
fn an_empty_ingress_rule_allows_everything() {
    let s = e2e_with(&[("x", "allow-all", json!({"podSelector": {}, "ingress": [{}]}))]);
    check(&s, 80, TCP, &all_allowed());
    check(&s, 81, TCP, &all_allowed());
    check(&s, 80, SCTP, &all_allowed());
}

#[test]
fn a_named_port_in_an_ingress_rule() {
    let s = e2e_with(&[("x", "allow-81-named", json!({"podSelector": {}, "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]}))]);
    check(&s, 81, TCP, &all_allowed());
    let mut on_80 = all_allowed();
    on_80.set("*/*", "x/*", false);
    check(&s, 80, TCP, &on_80);
    // The name is declared for TCP only: UDP 81 is not opened by it.
    check(&s, 81, UDP, &on_80);
}

#[test]
fn a_named_port_from_one_namespace() {
    let s = e2e_with(&[(
        "x",
        "allow-y-named-80",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": ns_label("y")}}], "ports": [{"port": "serve-80-tcp", "protocol": "TCP"}]}]}),
    )]);
    let mut on_80 = all_allowed();
    on_80.set("x/*", "x/a", false).set("z/*", "x/a", false);
    check(&s, 80, TCP, &on_80);
    let mut on_81 = all_allowed();
    on_81.set_all_to("x/a", false);
    check(&s, 81, TCP, &on_81);
}

#[test]
fn a_named_port_in_an_egress_rule_is_resolved_on_the_destination() {
    let s = e2e_with(&[("x", "allow-egress-80", json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "serve-80-tcp"}]}]}))]);
    check(&s, 80, TCP, &all_allowed());
    let mut on_81 = all_allowed();
    on_81.set("x/*", "*/*", false);
    check(&s, 81, TCP, &on_81);
}

#[test]
fn egress_to_a_pod_of_another_namespace() {
    let s = e2e_with(&[(
        "x",
        "allow-to-y-a",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [{"to": [
            {"namespaceSelector": {"matchLabels": ns_label("y")}, "podSelector": {"matchLabels": {"pod": "a"}}}
        ]}]}),
    )]);
    let mut want = all_allowed();
    want.set_all_from("x/a", false).set("x/a", "y/a", true);
    check(&s, 80, TCP, &want);
}

#[test]
fn an_egress_allow_all_rule_takes_precedence_over_a_narrower_one() {
    let narrow = (
        "x",
        "allow-to-y-a",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": {"matchLabels": ns_label("y")}, "podSelector": {"matchLabels": {"pod": "a"}}}]}]}),
    );
    let all = ("x", "allow-all-egress", json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [{}]}));
    let s = e2e_with(&[narrow, all]);
    check(&s, 80, TCP, &all_allowed());
}

#[test]
fn an_ingress_allow_all_rule_takes_precedence_over_a_narrower_one() {
    let s = e2e_with(&[
        allow_y_on_port_81(),
        ("x", "allow-all-ingress", json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{}], "policyTypes": ["Ingress"]})),
    ]);
    check(&s, 80, TCP, &all_allowed());
    check(&s, 81, TCP, &all_allowed());
}

#[test]
fn egress_to_a_cidr_block() {
    let s = e2e_with(&[(
        "x",
        "allow-to-y-b-ip",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": format!("{}/32", testkit::pod_ip("y", "b"))}}]}]}),
    )]);
    let mut want = all_allowed();
    want.set_all_from("x/a", false).set("x/a", "y/b", true);
    check(&s, 80, TCP, &want);
}

#[test]
fn except_clause_carves_pods_out_of_an_egress_cidr() {
    let s = e2e_with(&[(
        "x",
        "allow-cluster-except-x-b",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": [format!("{}/32", testkit::pod_ip("x", "b"))]}}]}]}),
    )]);
    let mut want = all_allowed();
    want.set("x/a", "x/b", false);
    check(&s, 80, TCP, &want);
}

#[test]
fn except_is_not_a_deny_another_policy_may_allow_the_address() {
    let x_b = format!("{}/32", testkit::pod_ip("x", "b"));
    let s = e2e_with(&[
        (
            "x",
            "allow-cluster-except-x-b",
            json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": [x_b.clone()]}}]}]}),
        ),
        ("x", "allow-x-b", json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": x_b}}]}]})),
    ]);
    check(&s, 80, TCP, &all_allowed());
}

#[test]
fn ingress_from_a_cidr_block_matches_pod_ips() {
    let s = e2e_with(&[(
        "x",
        "allow-from-y",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.2.0/24", "except": ["10.244.2.3/32"]}}]}]}),
    )]);
    let mut want = all_allowed();
    want.set_all_to("x/a", false).set("y/a", "x/a", true).set("y/b", "x/a", true);
    check(&s, 80, TCP, &want);
}

#[test]
fn ingress_and_egress_are_controlled_independently() {
    let s = e2e_with(&[
        ("x", "deny-egress-a", json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"]})),
        ("x", "allow-all-ingress-a", json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{}]})),
    ]);
    let mut want = all_allowed();
    want.set_all_from("x/a", false);
    check(&s, 80, TCP, &want);
}

#[test]
fn a_udp_rule_never_opens_tcp() {
    let s =
        e2e_with(&[("x", "allow-udp-81", json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": 81, "protocol": "UDP"}]}]}))]);
    check(&s, 81, UDP, &all_allowed());
    let mut tcp = all_allowed();
    tcp.set_all_to("x/a", false);
    check(&s, 81, TCP, &tcp);
}

#[test]
fn an_sctp_only_policy_still_isolates_and_never_opens_tcp_or_udp() {
    let s =
        e2e_with(&[("x", "allow-sctp-80", json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": 80, "protocol": "SCTP"}]}]}))]);
    check(&s, 80, SCTP, &all_allowed());
    let mut other = all_allowed();
    other.set_all_to("x/a", false);
    check(&s, 80, TCP, &other);
    check(&s, 80, UDP, &other);
    check(&s, 81, SCTP, &other);
}

#[test]
fn a_protocol_without_port_allows_every_port_of_that_protocol() {
    let s = e2e_with(&[("x", "allow-any-udp", json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"protocol": "UDP"}]}]}))]);
    check(&s, 80, UDP, &all_allowed());
    check(&s, 81, UDP, &all_allowed());
    let mut tcp = all_allowed();
    tcp.set_all_to("x/a", false);
    check(&s, 80, TCP, &tcp);
}

#[test]
fn end_port_ranges_are_inclusive() {
    let s = e2e_with(&[(
        "x",
        "allow-80-81",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": 80, "endPort": 81, "protocol": "TCP"}]}]}),
    )]);
    check(&s, 80, TCP, &all_allowed());
    check(&s, 81, TCP, &all_allowed());
    let s = e2e_with(&[(
        "x",
        "allow-81-85",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": 81, "endPort": 85}]}]}),
    )]);
    check(&s, 81, TCP, &all_allowed());
    let mut on_80 = all_allowed();
    on_80.set_all_from("x/a", false);
    check(&s, 80, TCP, &on_80);
}

#[test]
fn multiple_end_port_ranges_and_single_ports_combine() {
    let s = e2e_with(&[(
        "x",
        "ranges",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [
            {"port": 70, "endPort": 79}, {"port": 81}
        ]}]}),
    )]);
    check(&s, 81, TCP, &all_allowed());
    let mut on_80 = all_allowed();
    on_80.set_all_to("x/a", false);
    check(&s, 80, TCP, &on_80);
}

#[test]
fn client_side_egress_deny_wins_over_server_side_allow() {
    let s = e2e_with(&[
        ("x", "deny-egress", json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": []})),
        ("y", "allow-ingress", json!({"podSelector": {}, "ingress": [{}]})),
    ]);
    let mut want = all_allowed();
    want.set_all_from("x/a", false);
    check(&s, 80, TCP, &want);
}

#[test]
fn ingress_and_egress_specified_together() {
    let s = e2e_with(&[(
        "x",
        "both",
        json!({
            "podSelector": {"matchLabels": {"pod": "a"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
            "egress": [{"to": [{"namespaceSelector": {"matchLabels": ns_label("y")}}]}]
        }),
    )]);
    let mut want = all_allowed();
    want.set_all_to("x/a", false).set("x/b", "x/a", true);
    want.set_all_from("x/a", false).set("x/a", "y/*", true);
    check(&s, 80, TCP, &want);
}

#[test]
fn egress_only_to_dns_blocks_everything_else() {
    let s = e2e_with(&[("x", "dns-only", json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]}))]);
    let mut want = all_allowed();
    want.set("x/*", "*/*", false);
    check(&s, 80, TCP, &want);
    check(&s, 53, UDP, &all_allowed());
}

#[test]
fn policy_types_leave_out_rules_of_the_other_direction() {
    let s = e2e_with(&[(
        "x",
        "egress-only-type",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "nobody"}}}]}], "egress": [{}]}),
    )]);
    // The ingress rule is ignored: x/a is not isolated for ingress.
    check(&s, 80, TCP, &all_allowed());
}

#[test]
fn rules_are_never_cross_multiplied() {
    // Rule 0 allows y on 80, rule 1 allows z on 81: y on 81 and z on 80 stay blocked.
    let s = e2e_with(&[(
        "x",
        "two-rules",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
            {"from": [{"namespaceSelector": {"matchLabels": ns_label("y")}}], "ports": [{"port": 80}]},
            {"from": [{"namespaceSelector": {"matchLabels": ns_label("z")}}], "ports": [{"port": 81}]}
        ]}),
    )]);
    let mut on_80 = all_allowed();
    on_80.set_all_to("x/a", false).set("y/*", "x/a", true);
    check(&s, 80, TCP, &on_80);
    let mut on_81 = all_allowed();
    on_81.set_all_to("x/a", false).set("z/*", "x/a", true);
    check(&s, 81, TCP, &on_81);
}

#[test]
fn a_policy_in_one_namespace_never_selects_pods_of_another() {
    let s = e2e_with(&[("y", "deny-y", json!({"podSelector": {"matchLabels": {"pod": "a"}}}))]);
    let mut want = all_allowed();
    want.set_all_to("y/a", false);
    check(&s, 80, TCP, &want);
}

#[test]
fn egress_rules_without_policy_types_also_isolate_ingress() {
    // Defaulting: no policyTypes means Ingress, plus Egress because egress rules exist.
    let s = e2e_with(&[("x", "egress-rules-only", json!({"podSelector": {"matchLabels": {"pod": "a"}}, "egress": [{}]}))]);
    let mut want = all_allowed();
    want.set_all_to("x/a", false);
    check(&s, 80, TCP, &want);
}
