//! `podnet proxy trace` as scripts run it: the JSON contract and errors.

#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a line number

use std::process::{Command, Output};

const MANIFESTS: &str = "apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\nspec: {podCIDR: 10.244.0.0/24}\nstatus: {addresses: [{type: InternalIP, address: 172.18.0.2}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: order-service, namespace: production}\nspec:\n  type: NodePort\n  clusterIP: 10.96.0.50\n  selector: {app: order-service}\n  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: order-1, namespace: production, labels: {app: order-service}}\nspec: {nodeName: node-1, containers: [{name: c, ports: [{containerPort: 8080}]}]}\nstatus: {podIP: 10.244.0.7}\n";

fn trace(dir: &std::path::Path, extra: &[&str]) -> Output {
    let mut args = vec!["proxy", "trace", "-f", dir.to_str().unwrap(), "--node", "node-1", "-o", "json"];
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_podnet")).args(&args).output().unwrap()
}

#[test]
fn trace_prints_exactly_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.yaml"), MANIFESTS).unwrap();
    let out = trace(dir.path(), &["--src", "10.244.0.9", "--dst", "10.96.0.50", "--dport", "80", "--proto", "TCP"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!({"verdict": "DNAT", "endpoints": ["10.244.0.7:8080"], "masquerade": false}));
    let np = trace(dir.path(), &["--src", "192.0.2.1", "--dst", "172.18.0.2", "--dport", "30080"]);
    let v: serde_json::Value = serde_json::from_slice(&np.stdout).unwrap();
    assert_eq!(v, serde_json::json!({"verdict": "DNAT", "endpoints": ["10.244.0.7:8080"], "masquerade": true}));
    let other = trace(dir.path(), &["--src", "10.244.0.9", "--dst", "8.8.8.8", "--dport", "53", "--proto", "UDP"]);
    let v: serde_json::Value = serde_json::from_slice(&other.stdout).unwrap();
    assert_eq!(v["verdict"], "ACCEPT");
}

#[test]
fn trace_reads_a_kube_proxy_configuration_and_names_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.yaml"), MANIFESTS).unwrap();
    let cfg = dir.path().join("kube-proxy.conf");
    std::fs::write(&cfg, "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nclusterCIDR: 10.244.0.0/16\n").unwrap();
    // The config sits outside the manifest directory's *.yaml files.
    let out = trace(dir.path(), &["--config", cfg.to_str().unwrap(), "--src", "192.0.2.1", "--dst", "10.96.0.50", "--dport", "80"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["masquerade"], true, "off-cluster source to a ClusterIP");
    let bad = trace(dir.path(), &["--src", "10.244.0.9", "--dst", "10.96.0.50", "--dport", "80", "--proto", "ICMP"]);
    assert!(!bad.status.success());
    let wrong_node = Command::new(env!("CARGO_BIN_EXE_podnet"))
        .args(["proxy", "trace", "-f", dir.path().to_str().unwrap(), "--node", "node-7", "--src", "1.1.1.1", "--dst", "2.2.2.2", "--dport", "1"])
        .output()
        .unwrap();
    assert!(!wrong_node.status.success());
    assert!(String::from_utf8_lossy(&wrong_node.stderr).contains("node \"node-7\" is not among the manifests' Nodes (node-1)"));
}

#[test]
fn render_prints_the_nodes_rule_set() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.yaml"), MANIFESTS).unwrap();
    let cfg = dir.path().join("kube-proxy.conf");
    std::fs::write(&cfg, "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nclusterCIDR: 10.244.0.0/16\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_podnet"))
        .args(["proxy", "render", "-f", dir.path().to_str().unwrap(), "--node", "node-1", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    insta::assert_snapshot!(String::from_utf8(out.stdout).unwrap());
}
