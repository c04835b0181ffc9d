//! `policy lint`: one test per warning.

#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a line number

use policy::PolicySet;
use policy::lint::{Severity, lint};
use serde_json::{Value, json};
use testkit::{cluster, namespace, network_policy, pod};

fn warnings(policies: Vec<Value>) -> Vec<String> {
    let mut objects = vec![
        namespace("prod", json!({"env": "prod"})),
        pod("prod", "web", json!({"app": "web"}), &[("http", 8080, "TCP")], Some("10.244.1.10")),
        pod("prod", "db", json!({"app": "db"}), &[("pg", 5432, "TCP")], Some("10.244.2.12")),
    ];
    objects.extend(policies);
    let state = cluster(&objects);
    let compiled = PolicySet::compile(&state).unwrap();
    let findings = lint(&state, &compiled);
    assert!(findings.iter().all(|f| f.severity == Severity::Warning));
    findings.iter().map(|f| format!("{}: {}", f.field.clone().unwrap_or_default(), f.message)).collect()
}

#[test]
fn a_clean_policy_has_no_warnings() {
    let w = warnings(vec![network_policy(
        "prod",
        "db",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": "pg"}]}]}),
    )]);
    assert!(w.is_empty(), "{w:?}");
}

#[test]
fn a_policy_that_selects_no_pod() {
    let w = warnings(vec![network_policy("prod", "ghost", json!({"podSelector": {"matchLabels": {"app": "ghost"}}}))]);
    assert_eq!(w, ["spec.podSelector: selects no pod in namespace prod (app=ghost): the policy has no effect"]);
}

#[test]
fn a_peer_that_selects_nothing() {
    let w = warnings(vec![network_policy(
        "prod",
        "db",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [
            {"podSelector": {"matchLabels": {"app": "wbe"}}},
            {"namespaceSelector": {"matchLabels": {"team": "none"}}},
            {"podSelector": {"matchLabels": {"app": "web"}}}
        ]}]}),
    )]);
    assert_eq!(
        w,
        [
            "spec.ingress[0].from[0]: podSelector app=wbe selects no pod in namespace prod",
            "spec.ingress[0].from[1]: namespaceSelector team=none selects no namespace",
        ]
    );
}

#[test]
fn a_rule_whose_peers_all_select_nothing_can_never_match() {
    let w = warnings(vec![network_policy(
        "prod",
        "db",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "wbe"}}}]}]}),
    )]);
    assert_eq!(w.last().unwrap(), "spec.ingress[0]: this rule can never match");
}

#[test]
fn a_named_port_no_selected_pod_declares() {
    let w = warnings(vec![network_policy(
        "prod",
        "db",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"ports": [{"port": "http"}, {"port": "pg", "protocol": "UDP"}]}]}),
    )]);
    assert_eq!(
        w,
        [
            "spec.ingress[0].ports[0]: named port \"http\" (TCP): no selected pod declares it, so it matches nothing",
            "spec.ingress[0].ports[1]: named port \"pg\" (UDP): no selected pod declares it, so it matches nothing",
            "spec.ingress[0]: this rule can never match",
        ]
    );
}

#[test]
fn an_egress_named_port_is_checked_on_the_destinations() {
    let w = warnings(vec![network_policy(
        "prod",
        "web",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"], "egress": [
            {"to": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"port": "pg"}]},
            {"to": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"port": "http"}]}
        ]}),
    )]);
    assert_eq!(
        w,
        [
            "spec.egress[1].ports[0]: named port \"http\" (TCP): no destination pod declares it, so it matches nothing",
            "spec.egress[1]: this rule can never match",
        ]
    );
}

#[test]
fn ip_blocks_that_cover_pod_ips() {
    let w = warnings(vec![network_policy(
        "prod",
        "db",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.0.0/16"}}, {"ipBlock": {"cidr": "192.0.2.0/24"}}]}]}),
    )]);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].starts_with("spec.ingress[0].from[0].ipBlock: ipBlock 10.244.0.0/16 covers the IPs of 2 pod(s) (e.g. prod/db)"), "{w:?}");
}

#[test]
fn non_canonical_cidrs_get_the_api_server_warning() {
    let w = warnings(vec![network_policy(
        "prod",
        "db",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "192.0.2.1/24"}}]}]}),
    )]);
    assert_eq!(
        w,
        ["spec.egress[0].to[0].ipBlock.cidr: CIDR value \"192.0.2.1/24\" is ambiguous in this context (should be \"192.0.2.0/24\" or \"192.0.2.1/32\"?)"]
    );
}

#[test]
fn rules_of_a_direction_left_out_of_policy_types() {
    let w = warnings(vec![network_policy("prod", "db", json!({"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"], "egress": [{}]}))]);
    assert_eq!(w, ["spec.egress: rules are ignored: spec.policyTypes does not include Egress, so these rules can never match"]);
}

#[test]
fn dns_egress_on_udp_without_tcp() {
    let udp_only = warnings(vec![network_policy(
        "prod",
        "web",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"], "egress": [
            {"ports": [{"port": 53, "protocol": "UDP"}]}
        ]}),
    )]);
    assert_eq!(
        udp_only,
        [
            "spec.egress[0]: allows DNS on 53/UDP but not 53/TCP: resolvers retry truncated answers over TCP, which stays blocked unless another policy allows it"
        ]
    );
    let both = warnings(vec![network_policy(
        "prod",
        "web",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"], "egress": [
            {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
        ]}),
    )]);
    assert!(both.is_empty(), "{both:?}");
}
