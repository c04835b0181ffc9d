//! `podnet policy ...` as users and scripts run it: golden outputs for `examples/`, the JSON
//! contract, exit codes and error messages.

#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a line number

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn podnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podnet")).args(args).current_dir(repo()).output().unwrap()
}

fn stdout(args: &[&str]) -> String {
    let out = podnet(args);
    assert!(out.status.success(), "podnet {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn matrix_table_of_the_examples() {
    insta::assert_snapshot!(stdout(&["policy", "matrix", "-f", "examples/"]));
}

#[test]
fn matrix_markdown_of_the_examples() {
    insta::assert_snapshot!(stdout(&["policy", "matrix", "-f", "examples/", "-o", "md", "--port", "8080/TCP", "--port", "53/UDP"]));
}

#[test]
fn matrix_json_of_the_examples() {
    insta::assert_snapshot!(stdout(&["policy", "matrix", "-f", "examples/", "-o", "json", "--port", "5432/TCP", "--port", "53/UDP"]));
}

#[test]
fn matrix_json_is_exactly_the_contract() {
    let text = stdout(&["policy", "matrix", "-f", "examples/", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let obj = v.as_object().unwrap();
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["matrices", "pods"]);
    let pods: Vec<&str> = obj["pods"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert_eq!(
        pods,
        ["default/debug-pod", "kube-system/kube-dns", "production/api-service", "production/order-service", "production/postgres", "production/web-service"]
    );
    let idx = |name: &str| pods.iter().position(|p| *p == name).unwrap();
    let matrices = obj["matrices"].as_array().unwrap();
    let ports: Vec<(u64, &str)> = matrices.iter().map(|m| (m["port"].as_u64().unwrap(), m["protocol"].as_str().unwrap())).collect();
    // Every (containerPort, protocol) some pod declares.
    assert_eq!(ports, [(53, "TCP"), (53, "UDP"), (5432, "TCP"), (8080, "TCP"), (9090, "TCP"), (9153, "TCP")]);
    let allowed = |port: u64, proto: &str, from: &str, to: &str| -> bool {
        let m = matrices.iter().find(|m| m["port"] == port && m["protocol"] == proto).unwrap();
        assert_eq!(m.as_object().unwrap().len(), 3);
        m["allowed"][idx(from)][idx(to)].as_bool().unwrap()
    };
    // The seed: api-service receives only from web-service in production namespaces ...
    for from in &pods {
        let expected = *from == "production/web-service" || *from == "production/api-service";
        assert_eq!(allowed(8080, "TCP", from, "production/api-service"), expected, "{from} -> api-service");
    }
    // ... and sends only to postgres and DNS.
    for to in &pods {
        let to_db = *to == "production/postgres" || *to == "production/api-service";
        let to_dns = *to == "kube-system/kube-dns" || *to == "production/api-service";
        assert_eq!(allowed(5432, "TCP", "production/api-service", to), to_db, "api-service -> {to} 5432");
        assert_eq!(allowed(53, "UDP", "production/api-service", to), to_dns, "api-service -> {to} 53/UDP");
        assert_eq!(allowed(8080, "TCP", "production/api-service", to), *to == "production/api-service");
    }
}

#[test]
fn matrix_html_and_svg_draw_every_cell() {
    let html = stdout(&["policy", "matrix", "-f", "examples/", "-o", "html", "--port", "8080/TCP"]);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_eq!(html.matches("<td class=\"a").count() + html.matches("<td class=\"b").count(), 36);
    assert_eq!(html.matches(": allowed\">.</td>").count() + html.matches(": blocked\">X</td>").count(), 36, "every cell has a symbol, not colour alone");
    assert!(html.contains("title=\"production/web-service[Deployment] → production/api-service[Deployment] on 8080/TCP: allowed\""));
    let svg = stdout(&["policy", "matrix", "-f", "examples/", "-o", "svg", "--port", "8080/TCP", "--port", "53/UDP"]);
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert_eq!(svg.matches("<title>").count(), 72);
    assert_eq!(svg.matches("fill=\"white\">.</text>").count() + svg.matches("fill=\"white\">X</text>").count(), 72, "a symbol in every cell");
}

#[test]
fn explain_an_allowed_and_a_blocked_connection() {
    let allowed = stdout(&["policy", "explain", "-f", "examples/", "--from", "production/web-service", "--to", "production/api-service", "--port", "8080/TCP"]);
    let blocked = stdout(&["policy", "explain", "-f", "examples/", "--from", "default/debug-pod", "--to", "production/api-service", "--port", "8080"]);
    insta::assert_snapshot!(format!("{allowed}\n---\n{blocked}"));
}

#[test]
fn explain_as_json() {
    let text =
        stdout(&["policy", "explain", "-f", "examples/", "--from", "production/api-service", "--to", "kube-system/kube-dns", "--port", "53/UDP", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["allowed"], true);
    assert_eq!(v["egress"]["allowed_by"][0]["policy"], "production/api-network-policy");
    assert_eq!(v["egress"]["allowed_by"][0]["rule"], 1);
    assert_eq!(v["ingress"]["isolated"], false);
}

#[test]
fn explain_rejects_unknown_endpoints() {
    let out = podnet(&["policy", "explain", "-f", "examples/", "--from", "production/nope", "--to", "10.0.0.1", "--port", "80"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--from") && err.contains("no pod or workload production/nope"), "{err}");
    let out = podnet(&["policy", "explain", "-f", "examples/", "--from", "10.0.0.1", "--to", "10.0.0.2", "--port", "80/ICMP"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported protocol \"ICMP\""));
}

#[test]
fn lint_of_the_examples() {
    insta::assert_snapshot!(stdout(&["policy", "lint", "-f", "examples/"]));
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const BAD_POLICY: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: bad, namespace: prod}\nspec:\n  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/8}\n      podSelector: {}\n    ports:\n    - {port: 80, endPort: 79}\n";

#[test]
fn an_invalid_policy_fails_every_command_and_prints_nothing_partial() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "bad.yaml", BAD_POLICY);
    let f = file.to_str().unwrap();
    for args in [
        vec!["policy", "matrix", "-f", f],
        vec!["policy", "matrix", "-f", f, "-o", "json"],
        vec!["policy", "explain", "-f", f, "--from", "1.1.1.1", "--to", "2.2.2.2", "--port", "80"],
    ] {
        let out = podnet(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?} printed {}", String::from_utf8_lossy(&out.stdout));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("bad.yaml: document 1: NetworkPolicy prod/bad is invalid:"), "{err}");
        assert!(err.contains("spec.ingress[0].ports[0].endPort: Invalid value: 79: must be greater than or equal to `port`"), "{err}");
        assert!(err.contains("spec.ingress[0].from[0]: Forbidden: may not specify both ipBlock and another peer"), "{err}");
    }
    let out = podnet(&["policy", "lint", "-f", f]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("error: ") && text.contains("1 error(s)") || text.contains("2 error(s)"), "{text}");
}

#[test]
fn lint_warnings_exit_zero() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "ghost.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: ghost, namespace: prod}\nspec:\n  podSelector: {matchLabels: {app: ghost}}\n",
    );
    let out = podnet(&["policy", "lint", "-f", file.to_str().unwrap(), "-o", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["severity"], "warning");
    assert_eq!(v[0]["object"], "NetworkPolicy prod/ghost");
}

#[test]
fn malformed_input_names_file_and_document() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: ok}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, ports: [{containerPort: http}]}]}\n",
    );
    let out = podnet(&["policy", "matrix", "-f", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("a.yaml: document 2: Pod default/p: spec.containers[0].ports[0].containerPort: invalid type"), "{err}");
    let out = podnet(&["policy", "matrix", "-f", "does/not/exist"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the path \"does/not/exist\" does not exist"));
}

#[test]
fn several_paths_and_stdin() {
    let out = stdout(&["policy", "matrix", "-f", "examples/shop/namespaces.yaml", "examples/shop/workloads.yaml", "--port", "8080/TCP"]);
    assert!(!out.contains("X"), "no policies given, everything allowed:\n{out}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_podnet"))
        .args(["policy", "matrix", "-f", "-", "-o", "json", "--port", "80"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(b"apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\nspec: {containers: []}\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "{\"pods\":[\"x/a\"],\"matrices\":[{\"port\":80,\"protocol\":\"TCP\",\"allowed\":[[true]]}]}\n");
}
