//! One test per rule of NetworkPolicy semantics that the e2e scenarios do not pin down alone.

#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a line number

use model::{ClusterState, Protocol};
use policy::{Connection, Endpoint, Evaluator, PolicySet};
use serde_json::{Value, json};
use testkit::{cluster, namespace, network_policy, pod};

fn allowed(state: &ClusterState, from: &str, to: &str, port: u16, protocol: Protocol) -> bool {
    let policies = PolicySet::compile(state).unwrap();
    let ev = Evaluator::new(state, &policies);
    let endpoint = |s: &str| match s.parse() {
        Ok(ip) => Endpoint::External(ip),
        Err(_) => Endpoint::Pod(state.pods.iter().find(|p| p.key() == s).unwrap_or_else(|| panic!("no pod {s}"))),
    };
    let c = Connection { from: endpoint(from), to: endpoint(to), port, protocol };
    let by_evaluator = ev.allowed(&c);
    // The matrix must agree wherever both ends are pods.
    if let (Endpoint::Pod(a), Endpoint::Pod(b)) = (c.from, c.to) {
        let i = state.pods.iter().position(|p| std::ptr::eq(p, a)).unwrap();
        let j = state.pods.iter().position(|p| std::ptr::eq(p, b)).unwrap();
        let m = policy::compute(state, &policies, &[(port, protocol)]);
        assert_eq!(m.allowed(0, i, j), by_evaluator, "{from} -> {to}");
    }
    by_evaluator
}

fn base(extra: Vec<Value>) -> ClusterState {
    let mut objects = vec![
        namespace("prod", json!({"env": "prod"})),
        pod("prod", "web", json!({"app": "web"}), &[("http", 8080, "TCP")], Some("10.244.1.10")),
        pod("prod", "api", json!({"app": "api"}), &[("http", 8080, "TCP"), ("metrics", 9090, "TCP")], Some("10.244.1.11")),
        pod("prod", "db", json!({"app": "db"}), &[("pg", 5432, "TCP")], Some("10.244.2.12")),
    ];
    objects.extend(extra);
    cluster(&objects)
}

fn deny_all(ns: &str) -> Value {
    network_policy(ns, "deny-all", json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}))
}

#[test]
fn no_policy_means_everything_is_allowed() {
    let s = base(vec![]);
    assert!(allowed(&s, "prod/web", "prod/db", 5432, Protocol::Tcp));
    assert!(allowed(&s, "prod/web", "prod/db", 1, Protocol::Sctp));
}

#[test]
fn a_pod_may_always_reach_itself() {
    let s = base(vec![deny_all("prod")]);
    assert!(allowed(&s, "prod/web", "prod/web", 8080, Protocol::Tcp));
    assert!(!allowed(&s, "prod/web", "prod/api", 8080, Protocol::Tcp));
}

#[test]
fn both_ends_must_allow() {
    let s = base(vec![
        network_policy(
            "prod",
            "db-in",
            json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}]}]}),
        ),
        network_policy(
            "prod",
            "api-out",
            json!({"podSelector": {"matchLabels": {"app": "api"}}, "policyTypes": ["Egress"], "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}),
        ),
    ]);
    // db admits api, but api's egress only reaches web.
    assert!(!allowed(&s, "prod/api", "prod/db", 5432, Protocol::Tcp));
    assert!(allowed(&s, "prod/api", "prod/web", 8080, Protocol::Tcp));
}

#[test]
fn named_ports_need_name_protocol_and_number_to_agree_on_the_destination() {
    let s = base(vec![network_policy("prod", "http-only", json!({"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]}))]);
    assert!(allowed(&s, "prod/web", "prod/api", 8080, Protocol::Tcp));
    assert!(!allowed(&s, "prod/web", "prod/api", 9090, Protocol::Tcp), "another number");
    assert!(!allowed(&s, "prod/web", "prod/api", 8080, Protocol::Udp), "another protocol");
    assert!(!allowed(&s, "prod/web", "prod/db", 8080, Protocol::Tcp), "db declares no port named http");
}

#[test]
fn an_egress_named_port_never_matches_an_address_outside_the_cluster() {
    let s = base(vec![network_policy("prod", "out-http", json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "http"}]}]}))]);
    assert!(allowed(&s, "prod/web", "prod/api", 8080, Protocol::Tcp));
    assert!(!allowed(&s, "prod/web", "192.0.2.1", 8080, Protocol::Tcp));
}

#[test]
fn ip_blocks_match_pod_ips_and_outside_addresses() {
    let s = base(vec![network_policy(
        "prod",
        "db-from-cidr",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.1.0/24", "except": ["10.244.1.10/32"]}}, {"ipBlock": {"cidr": "192.0.2.0/24"}}]}]}),
    )]);
    assert!(allowed(&s, "prod/api", "prod/db", 5432, Protocol::Tcp));
    assert!(!allowed(&s, "prod/web", "prod/db", 5432, Protocol::Tcp), "excepted");
    assert!(allowed(&s, "192.0.2.7", "prod/db", 5432, Protocol::Tcp));
    assert!(!allowed(&s, "198.51.100.1", "prod/db", 5432, Protocol::Tcp));
}

#[test]
fn selectors_never_match_outside_addresses() {
    let s = base(vec![network_policy(
        "prod",
        "db-from-all-pods",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}),
    )]);
    assert!(allowed(&s, "prod/web", "prod/db", 5432, Protocol::Tcp));
    assert!(!allowed(&s, "192.0.2.7", "prod/db", 5432, Protocol::Tcp));
}

#[test]
fn an_empty_peer_list_admits_outside_addresses_too() {
    let s = base(vec![network_policy("prod", "db-any", json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"ports": [{"port": 5432}]}]}))]);
    assert!(allowed(&s, "192.0.2.7", "prod/db", 5432, Protocol::Tcp));
    assert!(!allowed(&s, "192.0.2.7", "prod/db", 5433, Protocol::Tcp));
}

#[test]
fn ip_blocks_never_match_pods_without_an_ip() {
    let s = cluster(&[
        pod("prod", "db", json!({"app": "db"}), &[], Some("10.244.2.12")),
        pod("prod", "pending", json!({"app": "x"}), &[], None),
        network_policy(
            "prod",
            "db-from-cidr",
            json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}),
        ),
    ]);
    assert!(!allowed(&s, "prod/pending", "prod/db", 5432, Protocol::Tcp));
}

#[test]
fn a_namespace_only_referenced_carries_just_its_name_label() {
    let s = cluster(&[
        pod("prod", "db", json!({"app": "db"}), &[], Some("10.244.2.12")),
        pod("dev", "client", json!({}), &[], Some("10.244.3.1")),
        pod("staging", "client", json!({}), &[], Some("10.244.3.2")),
        network_policy(
            "prod",
            "from-dev",
            json!({"podSelector": {}, "ingress": [{"from": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dev"}}},
                {"namespaceSelector": {"matchLabels": {"env": "staging"}}}
            ]}]}),
        ),
    ]);
    assert!(allowed(&s, "dev/client", "prod/db", 1, Protocol::Tcp));
    assert!(!allowed(&s, "staging/client", "prod/db", 1, Protocol::Tcp));
}

#[test]
fn host_network_pods_are_not_selected_and_not_matched_by_selectors() {
    let mut host = pod("prod", "agent", json!({"app": "web"}), &[], Some("172.18.0.2"));
    host["spec"]["hostNetwork"] = json!(true);
    host["spec"]["nodeName"] = json!("node-1");
    let s = base(vec![
        host,
        deny_all("prod"),
        network_policy(
            "prod",
            "from-web",
            json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}),
        ),
        network_policy(
            "prod",
            "from-node",
            json!({"podSelector": {"matchLabels": {"app": "api"}}, "ingress": [{"from": [{"ipBlock": {"cidr": "172.18.0.0/24"}}]}]}),
        ),
    ]);
    // deny-all selects everything in prod but the hostNetwork pod: its egress is open.
    assert!(allowed(&s, "prod/agent", "prod/api", 8080, Protocol::Tcp), "ipBlock matches the node IP");
    assert!(!allowed(&s, "prod/agent", "prod/db", 5432, Protocol::Tcp), "podSelector app=web does not match a hostNetwork pod");
    assert!(!allowed(&s, "prod/web", "prod/agent", 1, Protocol::Tcp), "web's egress is denied");
}

#[test]
fn traffic_between_a_pod_and_its_own_node_is_always_allowed() {
    let mut host = pod("kube-system", "agent", json!({}), &[], Some("172.18.0.2"));
    host["spec"]["hostNetwork"] = json!(true);
    host["spec"]["nodeName"] = json!("node-1");
    let mut local = pod("prod", "local", json!({}), &[], Some("10.244.1.5"));
    local["spec"]["nodeName"] = json!("node-1");
    let mut remote = pod("prod", "remote", json!({}), &[], Some("10.244.2.5"));
    remote["spec"]["nodeName"] = json!("node-2");
    let s = cluster(&[host, local, remote, deny_all("prod")]);
    assert!(allowed(&s, "kube-system/agent", "prod/local", 80, Protocol::Tcp));
    assert!(allowed(&s, "prod/local", "kube-system/agent", 80, Protocol::Tcp));
    assert!(!allowed(&s, "kube-system/agent", "prod/remote", 80, Protocol::Tcp));
}

#[test]
fn explain_names_the_isolating_policies_and_the_allowing_rule() {
    let s = base(vec![
        deny_all("prod"),
        network_policy(
            "prod",
            "api-in",
            json!({"podSelector": {"matchLabels": {"app": "api"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "db"}}}, {"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": 9090}, {"port": "http"}]}]}),
        ),
        network_policy("prod", "web-out", json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"], "egress": [{}]})),
    ]);
    let policies = PolicySet::compile(&s).unwrap();
    let ev = Evaluator::new(&s, &policies);
    let web = s.pods.iter().find(|p| p.name == "web").unwrap();
    let api = s.pods.iter().find(|p| p.name == "api").unwrap();
    let e = ev.explain(&Connection { from: Endpoint::Pod(web), to: Endpoint::Pod(api), port: 8080, protocol: Protocol::Tcp });
    assert!(e.allowed);
    assert_eq!(e.ingress.selected_by, ["prod/api-in", "prod/deny-all"]);
    assert_eq!(e.ingress.allowed_by.len(), 1);
    assert_eq!(e.ingress.allowed_by[0].describe(), "prod/api-in ingress[0] (from[1], ports[1])");
    assert_eq!(e.egress.allowed_by[0].describe(), "prod/web-out egress[0] (any to, any port)");
    let e = ev.explain(&Connection { from: Endpoint::Pod(api), to: Endpoint::Pod(web), port: 8080, protocol: Protocol::Tcp });
    assert!(!e.allowed);
    assert!(e.egress.isolated && e.egress.allowed_by.is_empty());
}

#[test]
fn invalid_policies_fail_compilation_with_every_error() {
    let s = base(vec![
        network_policy("prod", "bad-1", json!({"ingress": [{"from": [{}]}]})),
        network_policy("prod", "bad-2", json!({"policyTypes": ["Sideways"]})),
    ]);
    let errs = PolicySet::compile(&s).unwrap_err();
    assert_eq!(errs.len(), 2);
    assert_eq!(errs[0].to_string(), "testkit.json: document 5: NetworkPolicy prod/bad-1: spec.ingress[0].from[0]: Required value: must specify a peer");
}
