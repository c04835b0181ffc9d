//! `podnet trace` in a lab (root): a healthy path is all ok, and a lab broken in each of the
//! seed's five steps (a name that does not exist, a selector that picks nothing, no ready pod,
//! the proxy's table flushed, a deny policy, a pod that does not listen) is named exactly at that
//! step, with exit 1; bad input exits 2. The same walk from manifests alone (`-f`).

#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a line number

use std::process::{Command, Output};

use serde_json::Value;

fn podnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podnet")).args(args).output().unwrap()
}

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {role: client}}
spec: {nodeName: node-1, containers: [{name: c, ports: [{containerPort: 7000}]}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {nodeName: node-2, containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: solo, namespace: shop, labels: {app: solo}}
spec: {nodeName: node-2, containers: [{name: c, ports: [{containerPort: 9000}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: http}]}
---
apiVersion: v1
kind: Service
metadata: {name: typo, namespace: shop}
spec: {selector: {app: wbe}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: dead, namespace: shop}
spec: {selector: {app: web}, ports: [{port: 80, targetPort: 9999}]}
---
apiVersion: v1
kind: Service
metadata: {name: solo, namespace: shop}
spec: {selector: {app: solo}, ports: [{port: 90, targetPort: 9000}]}
"#;

const DENY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-nobody, namespace: shop}
spec: {podSelector: {matchLabels: {app: web}}, policyTypes: [Ingress]}
"#;

struct Lab {
    name: String,
    dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = podnet(&["lab", "down", "--name", &self.name]);
    }
}

/// `podnet trace … -o json`: exit code and the report.
fn trace(lab: &Lab, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["trace", "--name", &lab.name, "-n", "shop", "-o", "json"];
    all.extend_from_slice(args);
    let out = podnet(&all);
    let code = out.status.code().unwrap();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("no JSON: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)));
    (code, report)
}

fn status<'a>(report: &'a Value, step: &str) -> &'a str {
    report["steps"].as_array().unwrap().iter().find(|s| s["name"] == step).unwrap()["status"].as_str().unwrap()
}

fn summary<'a>(report: &'a Value, step: &str) -> &'a str {
    report["steps"].as_array().unwrap().iter().find(|s| s["name"] == step).unwrap()["summary"].as_str().unwrap()
}

#[test]
fn trace_names_exactly_the_broken_step() {
    if !nix::unistd::geteuid().is_root() {
        testkit::skip("needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("shop.yaml"), MANIFESTS).unwrap();
    let lab = Lab { name: format!("tr{}", std::process::id() % 100_000), dir };
    let manifests = lab.dir.path().join("shop.yaml");
    let up = podnet(&["lab", "up", "--name", &lab.name, "--nodes", "2", "-f", manifests.to_str().unwrap()]);
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));

    // Healthy: every step ok, the step names and shape as the contract says.
    let (code, r) = trace(&lab, &["client", "web"]);
    assert_eq!(code, 0, "{r:#}");
    let names: Vec<&str> = r["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["dns", "endpoints", "proxy", "policy", "pod"]);
    assert!(r["steps"].as_array().unwrap().iter().all(|s| s["status"] == "ok"), "{r:#}");
    assert_eq!(r["broken"], Value::Null);
    assert_eq!(r["from"], "shop/client");
    assert!(summary(&r, "proxy").contains("DNAT to"), "{r:#}");
    let web_ip = r["steps"][0]["details"]["answers"][0].as_str().unwrap().to_owned();

    // kubectl's -l and --show-labels.
    let got = podnet(&["lab", "get", "pods", "--name", &lab.name, "-n", "shop", "-l", "app in (web, solo),app!=solo", "--show-labels"]);
    let text = String::from_utf8_lossy(&got.stdout);
    assert!(text.lines().next().unwrap().ends_with("LABELS"), "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("web-") && l.ends_with("app=web")).count(), 2, "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");
    let none = podnet(&["lab", "get", "pods", "--name", &lab.name, "-n", "shop", "-l", "app=nothing"]);
    assert_eq!(String::from_utf8_lossy(&none.stderr).trim(), "No resources found in shop namespace.");
    let svc = podnet(&["lab", "get", "services", "--name", &lab.name, "-n", "shop", "-l", "tier=none", "-o", "name"]);
    assert!(svc.stdout.is_empty());

    // 1. A name that does not exist.
    let (code, r) = trace(&lab, &["client", "nosuch"]);
    assert_eq!((code, r["broken"].as_str()), (1, Some("dns")), "{r:#}");

    // 2. A selector that picks no pod: the pods' own labels are named.
    let (code, r) = trace(&lab, &["client", "typo"]);
    assert_eq!((code, r["broken"].as_str()), (1, Some("endpoints")), "{r:#}");
    assert!(summary(&r, "endpoints").contains("no pod matches selector app=wbe") && summary(&r, "endpoints").contains("app=web"), "{r:#}");

    // 2b. Pods selected, none ready.
    let mark = podnet(&["lab", "mark", "--name", &lab.name, "-n", "shop", "solo", "not-ready"]);
    assert!(mark.status.success(), "{}", String::from_utf8_lossy(&mark.stderr));
    let (code, r) = trace(&lab, &["client", "solo"]);
    assert_eq!((code, r["broken"].as_str()), (1, Some("endpoints")), "{r:#}");
    assert!(summary(&r, "endpoints").contains("none is ready"), "{r:#}");

    // 4. A pod that does not listen where the Service sends it.
    let (code, r) = trace(&lab, &["client", "dead"]);
    assert_eq!((code, r["broken"].as_str()), (1, Some("pod")), "{r:#}");
    assert!(summary(&r, "pod").contains("nothing listens"), "{r:#}");

    // The seed's `iptables-save | grep web`: the Service's elements and chains, read back.
    let rules = podnet(&["lab", "rules", "--name", &lab.name, "--node", "node-1", "-n", "shop", "web"]);
    let text = String::from_utf8_lossy(&rules.stdout);
    assert!(rules.status.success(), "{}", String::from_utf8_lossy(&rules.stderr));
    assert!(
        text.contains("shop/web:http 80/TCP")
            && text.contains(&format!("map frontends                {web_ip} . tcp . 80 comment \"shop/web:http\" : goto cluster-2")),
        "{text}"
    );
    assert_eq!(text.matches("map cluster-endpoints").count(), 2, "{text}");
    assert!(text.contains("chain cluster-2              dnat ip to"), "{text}");
    assert!(text.contains("vmap @frontends"), "{text}");
    assert_eq!(podnet(&["lab", "rules", "--name", &lab.name, "-n", "shop", "nosuch"]).status.code(), Some(1));

    // 3. The client node's proxy table flushed by hand (right after a change, so that the lab
    // process's 2 s check has not restored it yet when the packet goes).
    let label = podnet(&["lab", "label", "--name", &lab.name, "pod", "-n", "shop", "client", "touched=yes"]);
    assert!(label.status.success());
    let flush =
        Command::new("ip").args(["netns", "exec", &format!("podnet.{}.node-1", lab.name), "nft", "flush", "table", "ip", "podnet-proxy"]).output().unwrap();
    assert!(flush.status.success());
    // (By its ClusterIP: with the table gone, the cluster DNS's own ClusterIP fails too.)
    let (code, r) = trace(&lab, &["client", &web_ip]);
    assert_eq!((code, r["broken"].as_str()), (1, Some("proxy")), "{r:#}");
    // `lab rules` reads the kernel: the elements are there, the rules that use them are not.
    let gone = podnet(&["lab", "rules", "--name", &lab.name, "--node", "node-1", "-n", "shop", "web"]);
    let text = String::from_utf8_lossy(&gone.stdout);
    assert!(text.contains("(no rule: no Service address is translated on this node)") && !text.contains("dnat ip to"), "{text}");
    assert_eq!(status(&r, "dns"), "skipped", "{r:#}");
    assert_eq!(status(&r, "endpoints"), "ok", "{r:#}");

    // 5. A policy that denies: named, with the kernel's own drop.
    std::thread::sleep(std::time::Duration::from_secs(3)); // the table restored
    let deny = lab.dir.path().join("deny.yaml");
    std::fs::write(&deny, DENY).unwrap();
    assert!(podnet(&["lab", "apply", "--name", &lab.name, "-f", deny.to_str().unwrap()]).status.success());
    let (code, r) = trace(&lab, &["client", "web:http"]);
    assert_eq!((code, r["broken"].as_str()), (1, Some("policy")), "{r:#}");
    assert_eq!(status(&r, "proxy"), "ok", "{r:#}");
    assert!(summary(&r, "policy").contains("shop/web-from-nobody") && summary(&r, "policy").contains("kernel: dropped"), "{r:#}");
    assert_eq!(status(&r, "pod"), "ok", "the pod answers from its node: {r:#}");

    // `podnet observe`: the client's connections with their verdicts, in Hubble's field names.
    let seen = podnet(&["observe", "--name", &lab.name, "--pod", "shop/client", "--since", "5m", "-o", "json"]);
    assert!(seen.status.success(), "{}", String::from_utf8_lossy(&seen.stderr));
    let flows: Vec<Value> = String::from_utf8_lossy(&seen.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let forwarded = flows.iter().find(|f| f["verdict"] == "FORWARDED" && f["destination_service"]["name"] == "web").unwrap_or_else(|| panic!("{flows:#?}"));
    assert_eq!(forwarded["source"]["pod_name"], "client");
    assert!(forwarded["destination"]["pod_name"].as_str().unwrap().starts_with("web-"));
    assert_eq!(forwarded["l4"]["TCP"]["destination_port"], 8080);
    let dropped = flows.iter().find(|f| f["verdict"] == "DROPPED").unwrap_or_else(|| panic!("{flows:#?}"));
    assert_eq!(
        (&dropped["policy"], &dropped["drop_reason_desc"], &dropped["traffic_direction"]),
        (&Value::from("shop/web-from-nobody"), &Value::from("POLICY_DENIED"), &Value::from("INGRESS"))
    );
    let only_dropped = podnet(&["observe", "--name", &lab.name, "-n", "shop", "--verdict", "dropped", "-o", "json"]);
    assert!(String::from_utf8_lossy(&only_dropped.stdout).lines().all(|l| l.contains("\"verdict\":\"DROPPED\"")));
    assert_eq!(podnet(&["observe", "--name", &lab.name, "--since", "5x"]).status.code(), Some(2));

    // Text output names the broken step and a fix; bad input exits 2.
    let out = podnet(&["trace", "--name", &lab.name, "-n", "shop", "client", "web"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(text.contains("broken: policy — fix:"), "{text}");
    assert_eq!(podnet(&["trace", "--name", &lab.name, "-n", "shop", "nobody", "web"]).status.code(), Some(2));
    assert_eq!(podnet(&["trace", "--name", &lab.name, "-n", "shop", "client", "10.0.0.1"]).status.code(), Some(2), "an address needs --port");

    // From manifests alone: no kernel, the pod step skipped.
    let out = podnet(&["trace", "-f", manifests.to_str().unwrap(), "-n", "shop", "client", "typo", "-o", "json"]);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((out.status.code(), r["broken"].as_str()), (Some(1), Some("endpoints")), "{r:#}");
    let out = podnet(&["trace", "-f", manifests.to_str().unwrap(), "-n", "shop", "client", "web", "-o", "json"]);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{r:#}");
    assert_eq!(status(&r, "pod"), "skipped");
    assert_eq!(status(&r, "dns"), "ok", "{r:#}");
}
