//! Against a real control plane (upstream's kube-apiserver, etcd and kube-controller-manager,
//! built by `tools/k8s/build.sh`; `testkit::k8s`): the seed's manifests apply as they are, node
//! IPAM gives Nodes their pod CIDRs, and the EndpointSlices podnet computes from the same
//! objects equal the ones upstream's EndpointSlice controller writes — ready, not ready and
//! terminating pods, named target ports, several ports.

#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a line number

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::k8s::ControlPlane;

/// An EndpointSlice reduced to what a proxy reads: ports, and each endpoint's address,
/// conditions, pod and node.
fn digest(slice: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let ports = slice["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| format!("{}/{}/{}", p["name"].as_str().unwrap_or(""), p["port"], p["protocol"].as_str().unwrap_or("TCP")))
        .collect();
    let endpoints = slice["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let c = &e["conditions"];
            format!(
                "{} ready={} serving={} terminating={} pod={} node={}",
                e["addresses"][0].as_str().unwrap_or(""),
                c["ready"],
                c["serving"],
                c["terminating"],
                e["targetRef"]["name"].as_str().unwrap_or(""),
                e["nodeName"].as_str().unwrap_or("")
            )
        })
        .collect();
    (ports, endpoints)
}

/// The slices of one Service as upstream's controller wrote them.
fn upstream_slices(cp: &ControlPlane, ns: &str, service: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let list = cp.kubectl_json(&["get", "endpointslices", "-n", ns, "-l", &format!("kubernetes.io/service-name={service}")]).unwrap();
    let mut all = (BTreeSet::new(), BTreeSet::new());
    for s in list["items"].as_array().unwrap() {
        let (p, e) = digest(s);
        all.0.extend(p);
        all.1.extend(e);
    }
    all
}

/// The slices podnet computes for the Service from the objects the apiserver holds.
fn podnet_slices(cp: &ControlPlane, ns: &str, service: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut objects = String::new();
    for kind in ["namespaces", "nodes", "services", "pods"] {
        for item in cp.kubectl_json(&["get", kind, "-A"]).unwrap()["items"].as_array().unwrap() {
            objects.push_str(&format!("---\n{item}\n"));
        }
    }
    let state = model::ClusterState::from_objects(&model::load_str(&objects, Path::new("apiserver-objects.yaml")).unwrap()).unwrap();
    let slices = model::endpoints::compute(&state, |p| p.ready.unwrap_or(true));
    let mut all = (BTreeSet::new(), BTreeSet::new());
    for s in slices.iter().filter(|s| model::endpoints::service_of(s) == Some((ns, service))) {
        let (p, e) = digest(&serde_json::to_value(s).unwrap());
        all.0.extend(p);
        all.1.extend(e);
    }
    all
}

/// Writes a pod's status as a kubelet would: running on `node` with `ip`, ready or not.
fn run_pod(cp: &ControlPlane, ns: &str, pod: &str, node: &str, ip: &str, ready: bool) {
    // Bound as the scheduler binds: a Binding to the node.
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod, "namespace": ns}, "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("binding.json"), binding.to_string()).unwrap();
    let out = cp.kubectl(&["create", "-f", dir.path().join("binding.json").to_str().unwrap()]);
    assert!(out.status.success(), "binding {pod}: {}", String::from_utf8_lossy(&out.stderr));
    let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "172.18.0.2",
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}, {"type": "PodScheduled", "status": "True"}]}});
    let out = cp.kubectl(&["patch", "pod", pod, "-n", ns, "--subresource=status", "--type=merge", "-p", &status.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn pods_of(cp: &ControlPlane, ns: &str, selector: &str) -> Vec<String> {
    let list = cp.kubectl_json(&["get", "pods", "-n", ns, "-l", selector]).unwrap();
    let mut names: Vec<String> = list["items"].as_array().unwrap().iter().map(|p| p["metadata"]["name"].as_str().unwrap().to_owned()).collect();
    names.sort();
    names
}

#[test]
fn podnets_endpoint_slices_equal_the_endpoint_slice_controllers() {
    let Some(bin) = testkit::k8s::binaries_or_skip() else { return };
    let cp = ControlPlane::start(&bin).unwrap_or_else(|e| panic!("control plane: {e}"));
    // Two Nodes: node IPAM gives each a pod CIDR out of the cluster CIDR.
    for (i, node) in ["node-1", "node-2"].iter().enumerate() {
        let n = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node},
            "status": {"addresses": [{"type": "InternalIP", "address": format!("172.18.0.{}", i + 2)}]}});
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("n.json"), n.to_string()).unwrap();
        let out = cp.kubectl(&["apply", "-f", dir.path().join("n.json").to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    cp.wait_for(Duration::from_secs(30), "pod CIDRs on both nodes", |cp| {
        cp.kubectl_json(&["get", "nodes"])
            .is_ok_and(|v| v["items"].as_array().unwrap().iter().all(|n| n["spec"]["podCIDR"].as_str().is_some_and(|c| c.starts_with("10.244."))))
    })
    .unwrap();

    // The seed's shop, applied as it is (kubectl's own retry covers a namespace's service
    // account that is made a moment after the namespace).
    let shop = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/shop");
    cp.wait_for(Duration::from_secs(30), "kubectl apply -f examples/shop", |cp| cp.kubectl(&["apply", "-f", shop]).status.success()).unwrap();
    cp.wait_for(Duration::from_secs(30), "two order-service pods", |cp| pods_of(cp, "production", "app=order-service").len() == 2).unwrap();

    // Kubelets' part: the order-service pods run, one ready and one not.
    let pods = pods_of(&cp, "production", "app=order-service");
    run_pod(&cp, "production", &pods[0], "node-1", "10.244.0.7", true);
    run_pod(&cp, "production", &pods[1], "node-2", "10.244.1.7", false);
    let two_endpoints = |cp: &ControlPlane| upstream_slices(cp, "production", "order-service").1.len() == 2;
    cp.wait_for(Duration::from_secs(30), "the order-service EndpointSlice with both pods", two_endpoints).unwrap();
    let upstream = upstream_slices(&cp, "production", "order-service");
    assert_eq!(podnet_slices(&cp, "production", "order-service"), upstream, "ready and not ready");
    assert!(upstream.0.contains("http/8080/TCP") && upstream.0.contains("grpc/9090/TCP"), "{upstream:?}");
    let ready = format!("10.244.0.7 ready=true serving=true terminating=false pod={} node=node-1", pods[0]);
    let not_ready = format!("10.244.1.7 ready=false serving=false terminating=false pod={} node=node-2", pods[1]);
    assert_eq!(upstream.1, BTreeSet::from([ready, not_ready]), "what upstream's controller wrote");

    // A terminating pod (deleted with a grace period; no kubelet confirms it, so it stays):
    // serving, not ready, terminating, as the controller writes it.
    let out = cp.kubectl(&["delete", "pod", &pods[0], "-n", "production", "--wait=false", "--grace-period=300"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let terminating = |cp: &ControlPlane| upstream_slices(cp, "production", "order-service").1.iter().any(|e| e.contains("terminating=true"));
    cp.wait_for(Duration::from_secs(30), "the terminating endpoint", terminating).unwrap();
    // The ReplicaSet's replacement may have appeared meanwhile (pending, no address: in neither).
    let upstream = upstream_slices(&cp, "production", "order-service");
    assert_eq!(podnet_slices(&cp, "production", "order-service"), upstream, "a terminating pod");
}

/// The node's tables as `nft` lists them in `netns` (empty when a table is not there).
fn tables_in(netns: &str) -> String {
    let out = std::process::Command::new("ip").args(["netns", "exec", netns, "nft", "list", "ruleset"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn apply(cp: &ControlPlane, object: &Value) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("o.json"), object.to_string()).unwrap();
    let out = cp.kubectl(&["apply", "-f", dir.path().join("o.json").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Waits for the node's tables to satisfy `want`, returning how long it took.
fn until(netns: &str, what: &str, want: impl Fn(&str) -> bool) -> Duration {
    let start = std::time::Instant::now();
    loop {
        let tables = tables_in(netns);
        if want(&tables) {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{what}: not in the node's tables after 20 s:\n{tables}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_agent_programs_its_node_from_the_api_server_and_follows_changes() {
    if !nix::unistd::geteuid().is_root() {
        testkit::skip("needs root");
        return;
    }
    let Some(bin) = testkit::k8s::binaries_or_skip() else { return };
    let mut cp = ControlPlane::start(&bin).unwrap_or_else(|e| panic!("control plane: {e}"));
    let ns = dataplane::netns::NamedNetns::new(&format!("pnagent{}", std::process::id() % 100_000)).unwrap();
    apply(
        &cp,
        &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}, "status": {"addresses": [{"type": "InternalIP", "address": "172.18.0.2"}]}}),
    );
    shop_namespace(&cp);
    apply(
        &cp,
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"clusterIP": "10.96.0.50", "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
    );
    apply(
        &cp,
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "none", "ports": [{"containerPort": 8080}]}]}}),
    );
    run_pod(&cp, "shop", "web-1", "node-1", "10.244.0.7", true);

    // The node's underlay (its InternalIP's subnet), so that routes via the other nodes resolve.
    for cmd in [&["link", "add", "eth0", "type", "bridge"][..], &["addr", "add", "172.18.0.2/24", "dev", "eth0"], &["link", "set", "eth0", "up"]] {
        let out = std::process::Command::new("ip").args(["netns", "exec", &ns_name(&ns), "ip"]).args(cmd).output().unwrap();
        assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let cni_dir = tempfile::tempdir().unwrap();
    let proxy_config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(proxy_config.path(), "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nclusterCIDR: 10.244.0.0/16\n").unwrap();
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let (metrics_addr, healthz_addr) = (free(), free());
    let started = std::time::Instant::now();
    let log = tempfile::NamedTempFile::new().unwrap();
    let _agent = Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_podnet"))
            .args(["agent", "--kubeconfig", cp.kubeconfig().to_str().unwrap(), "--node-name", "node-1", "--netns", ns.path().to_str().unwrap()])
            .args(["--metrics-bind-address", &metrics_addr, "--healthz-bind-address", &healthz_addr])
            .args(["--proxy-config", proxy_config.path().to_str().unwrap()])
            .args(["--cni-conf-dir", cni_dir.path().to_str().unwrap()])
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap(),
    );
    // From start to rules in place: the ClusterIP to the ready pod, named after its port.
    let frontend = "10.96.0.50 . tcp . 80 comment \"shop/web:http\"";
    until(&ns_name(&ns), "the Service's frontend", |t| t.contains(frontend) && t.contains("10.244.0.7 . 8080"));
    eprintln!("agent start to rules: {:?}", started.elapsed());
    // With the rules in place, the runtime's conflist: node-1's pod CIDR for the IPAM.
    cp.wait_for(Duration::from_secs(30), "node-1's pod CIDR", |cp| cp.kubectl_json(&["get", "node", "node-1"]).is_ok_and(|n| n["spec"]["podCIDR"].is_string()))
        .unwrap();
    let node_cidr = cp.kubectl_json(&["get", "node", "node-1"]).unwrap()["spec"]["podCIDR"].as_str().unwrap().to_owned();
    let conflist = cni_dir.path().join("10-podnet.conflist");
    let start = std::time::Instant::now();
    let list: Value = loop {
        if let Some(list) = std::fs::read_to_string(&conflist).ok().and_then(|t| serde_json::from_str::<Value>(&t).ok()) {
            break list;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no conflist in {}", cni_dir.path().display());
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(list["plugins"][0]["ipam"]["ranges"][0][0]["subnet"], node_cidr.as_str(), "{list:#}");

    // A Service another proxy serves (kube-proxy's `service-proxy-name`; the agent filters its
    // watch as kube-proxy does) is not programmed; one made after it is.
    apply(
        &cp,
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "theirs", "namespace": "shop", "labels": {"service.kubernetes.io/service-proxy-name": "other"}},
        "spec": {"clusterIP": "10.96.0.71", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
    );
    apply(
        &cp,
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ours", "namespace": "shop"},
        "spec": {"clusterIP": "10.96.0.72", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
    );
    until(&ns_name(&ns), "the later Service", |t| t.contains("10.96.0.72 . tcp . 80"));
    assert!(!tables_in(&ns_name(&ns)).contains("10.96.0.71"), "another proxy's Service was programmed");

    // A relabel the Service no longer selects: the EndpointSlice controller empties the slice
    // and the agent turns the frontend into a refusal.
    let relabel = cp.kubectl(&["label", "pod", "web-1", "-n", "shop", "app=other", "--overwrite"]);
    assert!(relabel.status.success());
    let took = until(&ns_name(&ns), "the frontend without endpoints", |t| !t.contains("10.244.0.7 . 8080") && t.contains("no-endpoints"));
    eprintln!("relabel to rules: {took:?}");
    // A Pod's change alone re-plans the policy table from a snapshot, not the proxy's rules.
    let text = std::fs::read_to_string(log.path()).unwrap();
    assert!(text.contains("policy sync"), "{text}");

    // A NetworkPolicy isolating the pod: the node's policy table dispatches its address.
    apply(
        &cp,
        &json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "deny", "namespace": "shop"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}),
    );
    until(&ns_name(&ns), "the policy's isolation of the pod", |t| t.contains("table inet podnet-policy") && t.contains("10.244.0.7 : goto"));

    // The pod network (host-gw): a second Node gets a pod CIDR from node IPAM, and this node
    // routes it via that Node's address; the Node deleted, the route goes.
    apply(
        &cp,
        &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-2"}, "status": {"addresses": [{"type": "InternalIP", "address": "172.18.0.3"}]}}),
    );
    let routes = |ns: &str| {
        let out = std::process::Command::new("ip").args(["netns", "exec", ns, "ip", "route"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let cidr = |cp: &ControlPlane| cp.kubectl_json(&["get", "node", "node-2"]).ok().and_then(|n| n["spec"]["podCIDR"].as_str().map(str::to_owned));
    cp.wait_for(Duration::from_secs(30), "node-2's pod CIDR", |cp| cidr(cp).is_some()).unwrap();
    let route = format!("{} via 172.18.0.3", cidr(&cp).unwrap());
    let start = std::time::Instant::now();
    while !routes(&ns_name(&ns)).contains(&route) {
        assert!(start.elapsed() < Duration::from_secs(10), "no route {route}:\n{}", routes(&ns_name(&ns)));
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(cp.kubectl(&["delete", "node", "node-2"]).status.success());
    let start = std::time::Instant::now();
    while routes(&ns_name(&ns)).contains(&route) {
        assert!(start.elapsed() < Duration::from_secs(10), "the route to a deleted node stays");
        std::thread::sleep(Duration::from_millis(10));
    }

    // The Service deleted: its elements go.
    assert!(cp.kubectl(&["delete", "service", "web", "-n", "shop"]).status.success());
    until(&ns_name(&ns), "no trace of the Service", |t| !t.contains("10.96.0.50"));

    // The apiserver restarts (every watch breaks): the agent reconnects, keeps what it applied,
    // and the next change is a difference, not a full re-program.
    cp.restart_apiserver().unwrap();
    apply(
        &cp,
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "late", "namespace": "shop"},
        "spec": {"clusterIP": "10.96.0.51", "ports": [{"name": "http", "port": 80}]}}),
    );
    let took = until(&ns_name(&ns), "a Service made after the apiserver's restart", |t| t.contains("10.96.0.51 . tcp . 80"));
    eprintln!("after the restart, a new Service reached the rules in {took:?}");
    let text = std::fs::read_to_string(log.path()).unwrap();
    assert_eq!(text.matches("full sync").count(), 1, "one full sync, at start:\n{text}");
    // The restarted apiserver's watch cache starts at etcd's newest revision: the watches resumed
    // from older ones expire (410 Gone) and relist, without a full re-program (above).
    assert!(text.contains("Expired"), "no watch expired across the restart:\n{text}");

    // kube-proxy's endpoints: its metric names, one full sync and partial ones, healthy.
    let get = |addr: &str, path: &str| {
        let out = std::process::Command::new("curl").args(["-s", "-w", "\n%{http_code}", &format!("http://{addr}{path}")]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let metrics = get(&metrics_addr, "/metrics");
    let count = |series: &str| metrics.lines().find_map(|l| l.strip_prefix(series)).and_then(|v| v.trim().parse::<f64>().ok());
    assert_eq!(count("kubeproxy_sync_full_proxy_rules_duration_seconds_count"), Some(1.0), "{metrics}");
    assert!(count("kubeproxy_sync_partial_proxy_rules_duration_seconds_count").is_some_and(|n| n >= 4.0), "{metrics}");
    assert!(count("kubeproxy_network_programming_duration_seconds_count").is_some_and(|n| n >= 5.0), "{metrics}");
    let health = get(&healthz_addr, "/healthz");
    assert!(health.ends_with("\n200") && health.contains("\"nodeEligible\":true"), "{health}");

    // The policy table deleted by hand: the agent notices (one generation read every 5 s) and
    // writes its tables in full again.
    let out = std::process::Command::new("ip").args(["netns", "exec", &ns_name(&ns), "nft", "delete", "table", "inet", "podnet-policy"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let took = until(&ns_name(&ns), "the policy table, restored", |t| t.contains("table inet podnet-policy") && t.contains("10.244.0.7 : goto"));
    assert!(took < Duration::from_secs(8), "the table came back only after {took:?}");
    let text = std::fs::read_to_string(log.path()).unwrap();
    assert!(text.contains("the tables differ from what was applied; re-syncing in full"), "{text}");
}

fn ns_name(ns: &dataplane::netns::NamedNetns) -> String {
    ns.name().to_owned()
}

/// The manifests in `deploy/` are valid to the real apiserver (server-side dry run), and the
/// agent's ClusterRole grants what it watches and nothing more.
#[test]
fn the_deploy_manifests_pass_a_server_side_dry_run_and_grant_least_privilege() {
    let Some(bin) = testkit::k8s::binaries_or_skip() else { return };
    let cp = ControlPlane::start(&bin).unwrap_or_else(|e| panic!("control plane: {e}"));
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy");
    // A server-side dry run creates nothing, so objects in a namespace the same files make
    // need it made first.
    assert!(cp.kubectl(&["create", "namespace", "ingress-nginx"]).status.success());
    let dry = cp.kubectl(&["apply", "--dry-run=server", "-f", deploy]);
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    let out = String::from_utf8_lossy(&dry.stdout);
    for made in ["daemonset.apps/podnet-agent", "deployment.apps/podnet-dns", "deployment.apps/ingress-nginx-controller", "service/kube-dns"] {
        assert!(out.contains(&format!("{made} created (server dry run)")), "{out}");
    }
    let applied = cp.kubectl(&["apply", "-f", deploy]);
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let can_as = |who: &str, verb: &str, resource: &str, namespace: Option<&str>| {
        let scope = namespace.map_or_else(|| "--all-namespaces".to_owned(), |n| format!("--namespace={n}"));
        let out = cp.kubectl(&["auth", "can-i", verb, resource, &scope, &format!("--as=system:serviceaccount:{who}")]);
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    let can = |verb: &str, resource: &str| can_as("kube-system:podnet-agent", verb, resource, None);
    for resource in ["pods", "services", "nodes", "namespaces", "endpointslices.discovery.k8s.io", "networkpolicies.networking.k8s.io"] {
        assert!(can("watch", resource) && can("list", resource), "the agent must watch {resource}");
    }
    for (verb, resource) in
        [("create", "pods"), ("delete", "services"), ("update", "endpointslices.discovery.k8s.io"), ("list", "secrets"), ("get", "configmaps")]
    {
        assert!(!can(verb, resource), "the agent must not {verb} {resource}");
    }
    // The cluster DNS reads what CoreDNS's kubernetes plugin reads, and nothing else.
    let dns = "kube-system:podnet-dns";
    for resource in ["pods", "services", "namespaces", "endpointslices.discovery.k8s.io"] {
        assert!(can_as(dns, "watch", resource, None) && can_as(dns, "list", resource, None), "the DNS must watch {resource}");
    }
    for (verb, resource) in [("list", "secrets"), ("list", "nodes"), ("update", "services"), ("list", "networkpolicies.networking.k8s.io")] {
        assert!(!can_as(dns, verb, resource, None), "the DNS must not {verb} {resource}");
    }
    // The ingress controller writes Ingress status and its own Lease, and reads its objects.
    let ingress = "ingress-nginx:podnet-ingress";
    for resource in ["ingresses.networking.k8s.io", "ingressclasses.networking.k8s.io", "secrets", "services", "endpointslices.discovery.k8s.io"] {
        assert!(can_as(ingress, "watch", resource, None), "the ingress controller must watch {resource}");
    }
    let status =
        cp.kubectl(&["auth", "can-i", "patch", "ingresses.networking.k8s.io", "--subresource=status", "-A", &format!("--as=system:serviceaccount:{ingress}")]);
    assert_eq!(String::from_utf8_lossy(&status.stdout).trim(), "yes", "the ingress controller must patch Ingress status");
    assert!(can_as(ingress, "update", "leases.coordination.k8s.io", Some("ingress-nginx")));
    for (verb, resource, namespace) in [
        ("update", "ingresses.networking.k8s.io", None),
        ("list", "nodes", None),
        ("update", "leases.coordination.k8s.io", Some("kube-system")),
        ("delete", "secrets", None),
    ] {
        assert!(!can_as(ingress, verb, resource, namespace), "the ingress controller must not {verb} {resource} in {namespace:?}");
    }
}

/// The namespace `shop`, once the controller-manager has made its `default` service account
/// (pods cannot be made before).
fn shop_namespace(cp: &ControlPlane) {
    apply(cp, &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}));
    cp.wait_for(Duration::from_secs(30), "the shop's service account", |cp| cp.kubectl(&["get", "serviceaccount", "default", "-n", "shop"]).status.success())
        .unwrap();
}

/// `dig @addr -p port name type +short`, the answer lines.
fn dig(server: &std::net::SocketAddr, name: &str, kind: &str) -> Vec<String> {
    let out = std::process::Command::new("dig")
        .args([&format!("@{}", server.ip()), "-p", &server.port().to_string(), name, kind, "+short", "+time=1", "+tries=1"])
        .output()
        .unwrap();
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

#[test]
fn the_cluster_dns_answers_from_the_api_server_and_follows_it() {
    let Some(bin) = testkit::k8s::binaries_or_skip() else { return };
    let cp = ControlPlane::start(&bin).unwrap_or_else(|e| panic!("control plane: {e}"));
    shop_namespace(&cp);
    apply(&cp, &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}}));
    apply(
        &cp,
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"clusterIP": "10.96.0.60", "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]}}),
    );
    // A headless Service over a StatefulSet-style pod (hostname + subdomain): its records come
    // from the EndpointSlice upstream's controller writes.
    apply(
        &cp,
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": "shop"},
        "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"name": "pg", "port": 5432}]}}),
    );
    apply(
        &cp,
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db-0", "namespace": "shop", "labels": {"app": "db"}},
        "spec": {"hostname": "db-0", "subdomain": "db", "containers": [{"name": "c", "image": "none", "ports": [{"containerPort": 5432}]}]}}),
    );
    run_pod(&cp, "shop", "db-0", "node-1", "10.244.0.9", true);

    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let _dns = Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_podnet"))
            .args(["dns", "serve", "--kubeconfig", cp.kubeconfig().to_str().unwrap(), "--listen", &server.to_string(), "--upstream", "127.0.0.1:9"])
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap(),
    );
    let wait = |what: &str, name: &str, kind: &str, want: &[&str]| {
        let start = std::time::Instant::now();
        loop {
            let got = dig(&server, name, kind);
            if got == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{what}: {name} {kind} is {got:?}, not {want:?}\n{}",
                std::fs::read_to_string(log.path()).unwrap()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait("a ClusterIP Service", "web.shop.svc.cluster.local", "A", &["10.96.0.60"]);
    wait("a headless Service", "db.shop.svc.cluster.local", "A", &["10.244.0.9"]);
    wait("a pod by hostname.subdomain", "db-0.db.shop.svc.cluster.local", "A", &["10.244.0.9"]);
    wait("SRV", "_pg._tcp.db.shop.svc.cluster.local", "SRV", &["0 100 5432 db-0.db.shop.svc.cluster.local."]);
    // Changes through the API are answered: a new Service, then its deletion.
    apply(
        &cp,
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": "shop"},
        "spec": {"clusterIP": "10.96.0.61", "ports": [{"port": 8080}]}}),
    );
    let took = wait("a Service created", "api.shop.svc.cluster.local", "A", &["10.96.0.61"]);
    eprintln!("Service created to answered: {took:?}");
    assert!(cp.kubectl(&["delete", "service", "api", "-n", "shop"]).status.success());
    let took = wait("a Service deleted", "api.shop.svc.cluster.local", "A", &[]);
    eprintln!("Service deleted to NXDOMAIN: {took:?}");
    // A pod no longer ready leaves the headless Service's answer (the controller moves it to
    // not-ready in the slice).
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}]}});
    assert!(cp.kubectl(&["patch", "pod", "db-0", "-n", "shop", "--subresource=status", "--type=merge", "-p", &status.to_string()]).status.success());
    wait("a not-ready pod", "db.shop.svc.cluster.local", "A", &[]);
}

/// `ip netns exec NS <args>`.
fn in_netns(ns: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new("ip").args(["netns", "exec", ns]).args(args).output().unwrap()
}

/// One namespace holding the control plane (10.0.0.1), a backend pod's address (10.244.0.9)
/// with its server answering `from web-1`, and room for controller replicas, as one node would;
/// the Service `shop/web` (80 → 8080) selects the pod, which runs on `node-1`.
fn node_with_a_web_pod(bin: &Path, prefix: &str) -> (dataplane::netns::NamedNetns, ControlPlane) {
    let netns = dataplane::netns::NamedNetns::new(&format!("{prefix}{}", std::process::id() % 100_000)).unwrap();
    let ns = ns_name(&netns);
    for cmd in
        [&["ip", "link", "set", "lo", "up"][..], &["ip", "addr", "add", "10.0.0.1/32", "dev", "lo"], &["ip", "addr", "add", "10.244.0.9/32", "dev", "lo"]]
    {
        let out = in_netns(&ns, cmd);
        assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let settings = testkit::k8s::Settings { netns: Some(ns.clone()), address: "10.0.0.1".parse().unwrap(), ..testkit::k8s::Settings::loopback(bin) };
    let cp = ControlPlane::start_with(settings).unwrap_or_else(|e| panic!("control plane: {e}"));
    // The backend pod's server.
    let listener = dataplane::netns::run_in(netns.path(), || std::net::TcpListener::bind("10.244.0.9:8080")).unwrap().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut conn = conn;
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut conn, &mut buf);
            let _ = std::io::Write::write_all(&mut conn, b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\nfrom web-1\r\n");
        }
    });
    shop_namespace(&cp);
    apply(&cp, &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}}));
    apply(
        &cp,
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
    );
    apply(
        &cp,
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "none", "ports": [{"containerPort": 8080}]}]}}),
    );
    run_pod(&cp, "shop", "web-1", "node-1", "10.244.0.9", true);
    (netns, cp)
}

/// The Gateway API's CRDs: `$PODNET_GATEWAY_CRDS`, else what `tools/gateway-api/crds.sh` finds
/// (the Go module pinned there).
fn gateway_api_crds() -> Option<std::path::PathBuf> {
    if let Some(dir) = std::env::var_os("PODNET_GATEWAY_CRDS").map(std::path::PathBuf::from).filter(|d| d.is_dir()) {
        return Some(dir);
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tools/gateway-api/crds.sh");
    let out = std::process::Command::new(script).output().ok()?;
    let dir = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    dir.is_dir().then_some(dir)
}

/// With the Gateway API's CRDs installed, the controller routes an HTTPRoute through its Gateway
/// and writes what the conformance suite reads: GatewayClass Accepted, Gateway Accepted and
/// Programmed with its address and listener (attached routes), the HTTPRoute's parent Accepted
/// and ResolvedRefs — and then stops writing (a write is a watch event).
#[test]
fn the_gateway_controller_routes_and_writes_gateway_api_status() {
    if !nix::unistd::geteuid().is_root() {
        testkit::skip("needs root");
        return;
    }
    let Some(bin) = testkit::k8s::binaries_or_skip() else { return };
    let Some(crds) = gateway_api_crds() else {
        assert!(std::env::var_os("PODNET_REQUIRE_K8S").is_none(), "this test needs the Gateway API CRDs (tools/gateway-api/crds.sh), and CI must run it");
        eprintln!("skipped: needs the Gateway API CRDs: tools/gateway-api/crds.sh");
        return;
    };
    let (netns, cp) = node_with_a_web_pod(&bin, "pngateway");
    let ns = ns_name(&netns);
    let out = cp.kubectl(&["apply", "--server-side", "-f", crds.to_str().unwrap()]);
    assert!(out.status.success(), "installing the CRDs: {}", String::from_utf8_lossy(&out.stderr));
    for crd in ["gatewayclasses", "gateways", "httproutes", "referencegrants"] {
        let out = cp.kubectl(&["wait", "--for", "condition=established", "--timeout=30s", &format!("crd/{crd}.gateway.networking.k8s.io")]);
        assert!(out.status.success(), "{crd}: {}", String::from_utf8_lossy(&out.stderr));
    }
    apply(
        &cp,
        &json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass", "metadata": {"name": "podnet"}, "spec": {"controllerName": "podnet.io/gateway-controller"}}),
    );
    apply(
        &cp,
        &json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "gw", "namespace": "shop"},
        "spec": {"gatewayClassName": "podnet", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}}),
    );
    apply(
        &cp,
        &json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"parentRefs": [{"name": "gw"}], "hostnames": ["shop.example"], "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}}),
    );
    let log = tempfile::NamedTempFile::new().unwrap();
    let _controller = Killed(
        std::process::Command::new("ip")
            .args(["netns", "exec", &ns, env!("CARGO_BIN_EXE_podnet"), "gateway", "serve", "--kubeconfig", cp.kubeconfig().to_str().unwrap()])
            .args(["--http", "10.0.0.1:80", "--publish-status-address", "192.0.2.10", "--election-namespace", "shop"])
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap(),
    );
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let start = std::time::Instant::now();
        while !done() {
            assert!(start.elapsed() < Duration::from_secs(40), "{what}: not after 40 s\n{}", std::fs::read_to_string(log.path()).unwrap());
            std::thread::sleep(Duration::from_millis(50));
        }
        start.elapsed()
    };
    let get = || String::from_utf8_lossy(&in_netns(&ns, &["curl", "-s", "-m", "2", "-H", "Host: shop.example", "http://10.0.0.1:80/"]).stdout).into_owned();
    wait("the HTTPRoute served", &|| get() == "from web-1\r\n");
    let condition = |object: &Value, path: &[&str], kind: &str| -> String {
        let mut v = object.clone();
        for p in path {
            v = if let Ok(i) = p.parse::<usize>() { v[i].clone() } else { v[*p].clone() };
        }
        v.as_array().and_then(|cs| cs.iter().find(|c| c["type"] == kind)).map(|c| c["status"].as_str().unwrap_or("").to_owned()).unwrap_or_default()
    };
    let get_json = |what: &[&str]| cp.kubectl_json(what).unwrap();
    let took = wait("every status written", &|| {
        let class = get_json(&["get", "gatewayclass", "podnet"]);
        let gw = get_json(&["get", "gateway", "gw", "-n", "shop"]);
        let route = get_json(&["get", "httproute", "web", "-n", "shop"]);
        condition(&class, &["status", "conditions"], "Accepted") == "True"
            && condition(&gw, &["status", "conditions"], "Accepted") == "True"
            && condition(&gw, &["status", "conditions"], "Programmed") == "True"
            && gw["status"]["addresses"] == json!([{"type": "IPAddress", "value": "192.0.2.10"}])
            && gw["status"]["listeners"][0]["attachedRoutes"] == 1
            && condition(&gw, &["status", "listeners", "0", "conditions"], "Programmed") == "True"
            && route["status"]["parents"][0]["controllerName"] == "podnet.io/gateway-controller"
            && condition(&route, &["status", "parents", "0", "conditions"], "Accepted") == "True"
            && condition(&route, &["status", "parents", "0", "conditions"], "ResolvedRefs") == "True"
    });
    eprintln!("Gateway API status written {took:?} after the route was served");
    // Settled: no more writes.
    let writes = || std::fs::read_to_string(log.path()).unwrap().matches("wrote the status").count();
    let before = writes();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(writes(), before, "the controller keeps writing status:\n{}", std::fs::read_to_string(log.path()).unwrap());
    // A route to a Service that does not exist: ResolvedRefs False, BackendNotFound.
    apply(
        &cp,
        &json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "broken", "namespace": "shop"},
        "spec": {"parentRefs": [{"name": "gw"}], "hostnames": ["broken.example"], "rules": [{"backendRefs": [{"name": "missing", "port": 80}]}]}}),
    );
    wait("BackendNotFound", &|| {
        let route = get_json(&["get", "httproute", "broken", "-n", "shop"]);
        let c = route["status"]["parents"][0]["conditions"].as_array().cloned().unwrap_or_default();
        c.iter().any(|c| c["type"] == "ResolvedRefs" && c["status"] == "False" && c["reason"] == "BackendNotFound")
    });
}

#[test]
fn the_ingress_controller_serves_the_api_servers_ingresses_and_its_leader_writes_their_status() {
    if !nix::unistd::geteuid().is_root() {
        testkit::skip("needs root");
        return;
    }
    let Some(bin) = testkit::k8s::binaries_or_skip() else { return };
    let (netns, cp) = node_with_a_web_pod(&bin, "pningress");
    let ns = ns_name(&netns);
    apply(
        &cp,
        &json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}}),
    );

    // Two replicas, as a Deployment runs them: both serve, one writes status.
    let replica = |name: &str, port: u16| {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", &ns, env!("CARGO_BIN_EXE_podnet"), "gateway", "serve", "--kubeconfig", cp.kubeconfig().to_str().unwrap()])
            .args(["--http", &format!("10.0.0.1:{port}"), "--publish-status-address", "192.0.2.10", "--election-namespace", "shop"])
            .env("POD_NAME", name)
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        (Killed(child), log)
    };
    let (a, a_log) = replica("controller-a", 18080);
    let (b, b_log) = replica("controller-b", 18081);
    let get = |port: u16, host: &str, path: &str| -> (String, String) {
        let out = in_netns(
            &ns,
            &["curl", "-s", "-m", "2", "-o", "-", "-w", "\n%{http_code}", "-H", &format!("Host: {host}"), &format!("http://10.0.0.1:{port}{path}")],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
        (code.to_owned(), body.to_owned())
    };
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let start = std::time::Instant::now();
        while !done() {
            assert!(
                start.elapsed() < Duration::from_secs(40),
                "{what}: not after 40 s\n--- a ---\n{}\n--- b ---\n{}",
                std::fs::read_to_string(a_log.path()).unwrap(),
                std::fs::read_to_string(b_log.path()).unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        start.elapsed()
    };
    wait("both replicas up", &|| get(18080, "x", "/").0 == "404" && get(18081, "x", "/").0 == "404");
    // An Ingress through the API: both replicas route it to the pod.
    apply(
        &cp,
        &json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"ingressClassName": "nginx", "rules": [{"host": "shop.example", "http": {"paths": [{"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}),
    );
    let took =
        wait("the Ingress served by both", &|| get(18080, "shop.example", "/").1 == "from web-1\r\n" && get(18081, "shop.example", "/").1 == "from web-1\r\n");
    eprintln!("Ingress created to served: {took:?}");
    // The leader publishes the address in the Ingress's status.
    let status = || cp.kubectl_json(&["get", "ingress", "web", "-n", "shop"]).unwrap()["status"]["loadBalancer"]["ingress"].clone();
    wait("the Ingress status", &|| status() == json!([{"ip": "192.0.2.10"}]));
    let holder = || {
        cp.kubectl_json(&["get", "lease", "ingress-nginx-leader", "-n", "shop"])
            .map(|l| l["spec"]["holderIdentity"].as_str().unwrap_or("").to_owned())
            .unwrap_or_default()
    };
    let leader = holder();
    assert!(leader == "controller-a" || leader == "controller-b", "{leader:?}");
    // The leader goes: the other takes the Lease over once it expires, and keeps status current.
    let (survivor, _gone) = if leader == "controller-a" { (b, a) } else { (a, b) };
    drop(_gone);
    let took = wait("the other replica leading", &|| !holder().is_empty() && holder() != leader);
    eprintln!("leader gone to new leader: {took:?}");
    let status_patch = json!({"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}}});
    assert!(cp.kubectl(&["patch", "ingress", "web", "-n", "shop", "--subresource=status", "--type=merge", "-p", &status_patch.to_string()]).status.success());
    wait("the new leader correcting the status", &|| status() == json!([{"ip": "192.0.2.10"}]));
    drop(survivor);
}

/// Every object of multi-document YAML, as JSON text (sorted: the order of documents does not matter).
fn objects_of(text: &str) -> Vec<String> {
    let mut out: Vec<String> = serde_norway::Deserializer::from_str(text)
        .filter_map(|doc| serde::Deserialize::deserialize(doc).ok())
        .filter(|v: &Value| !v.is_null())
        .map(|v| v.to_string())
        .collect();
    out.sort();
    out
}

/// The Helm chart renders exactly the plain manifests (which pass the server-side dry run
/// above): nothing drifts between the two ways to install.
#[test]
fn the_helm_chart_renders_the_plain_manifests() {
    let cached = || std::fs::read_dir("/var/cache/podnet/helm").ok()?.flatten().map(|e| e.path().join("bin/helm")).find(|p| p.is_file());
    let helm = std::env::var_os("PODNET_HELM").map(std::path::PathBuf::from).filter(|p| p.is_file()).or_else(cached);
    let Some(helm) = helm else {
        assert!(std::env::var_os("PODNET_REQUIRE_K8S").is_none(), "this test needs helm (tools/helm/build.sh), and CI must run it");
        eprintln!("skipped: needs helm: run tools/helm/build.sh");
        return;
    };
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let chart = format!("{root}/deploy/helm/podnet");
    let lint = std::process::Command::new(&helm).args(["lint", "--strict", &chart]).output().unwrap();
    assert!(lint.status.success(), "{}{}", String::from_utf8_lossy(&lint.stdout), String::from_utf8_lossy(&lint.stderr));
    let render = |sets: &[&str]| {
        let mut args = vec!["template", "podnet", chart.as_str()];
        for s in sets {
            args.extend(["--set", s]);
        }
        let out = std::process::Command::new(&helm).args(&args).output().unwrap();
        assert!(out.status.success(), "helm {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        objects_of(&String::from_utf8_lossy(&out.stdout))
    };
    let plain = |files: &[&str]| {
        let mut all: Vec<String> = files.iter().flat_map(|f| objects_of(&std::fs::read_to_string(format!("{root}/deploy/{f}")).unwrap())).collect();
        all.sort();
        all
    };
    assert_eq!(render(&["dns.enabled=true", "ingress.enabled=true"]), plain(&["podnet.yaml", "dns.yaml", "ingress.yaml"]));
    assert_eq!(render(&[]), plain(&["podnet.yaml"]), "by default only the node agent");
    // Values reach the objects.
    let custom = render(&["agent.masqueradeAll=true", "agent.clusterCIDR=10.42.0.0/16", "image.tag=9.9.9"]).join("\n");
    assert!(custom.contains("clusterCIDR: 10.42.0.0/16") && custom.contains("masqueradeAll: true"), "{custom}");
    assert!(custom.contains("ghcr.io/podnet/podnet:9.9.9"), "{custom}");
}

/// Two nodes for the agents' pod-network tests: network namespaces joined by a veth pair as
/// their underlay (`{underlay}.2`, `.3`), each with a `cni0` bridge holding its pod CIDR's
/// gateway (`{pods[i]}.1`), and their Nodes (pod CIDR, InternalIP) in the API server.
struct TwoNodes {
    a: dataplane::netns::NamedNetns,
    b: dataplane::netns::NamedNetns,
    /// The agents' `KubeProxyConfiguration` (the cluster CIDR: they own the pod routes).
    config: tempfile::NamedTempFile,
    /// Each agent's log, by node name.
    logs: tempfile::TempDir,
}

fn two_nodes(cp: &ControlPlane, prefix: &str, underlay: &str, pods: [&str; 2]) -> TwoNodes {
    let id = std::process::id() % 100_000;
    let a = dataplane::netns::NamedNetns::new(&format!("{prefix}a{id}")).unwrap();
    let b = dataplane::netns::NamedNetns::new(&format!("{prefix}b{id}")).unwrap();
    let (na, nb) = (ns_name(&a), ns_name(&b));
    let run = |ns: &str, args: &[&str]| {
        let out = in_netns(ns, args);
        assert!(out.status.success(), "{ns}: {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&na, &["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &nb]);
    for (i, (ns, name)) in [(&na, "node-a"), (&nb, "node-b")].into_iter().enumerate() {
        let ip = format!("{underlay}.{}", i + 2);
        run(ns, &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        run(ns, &["ip", "link", "set", "eth0", "up"]);
        run(ns, &["ip", "link", "set", "lo", "up"]);
        // The node's pod network as the bridge plugin makes it: cni0 with the gateway address.
        run(ns, &["ip", "link", "add", "cni0", "type", "bridge"]);
        run(ns, &["ip", "addr", "add", &format!("{}.1/24", pods[i]), "dev", "cni0"]);
        run(ns, &["ip", "link", "set", "cni0", "up"]);
        run(ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let cidr = format!("{}.0/24", pods[i]);
        apply(cp, &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {"podCIDR": cidr, "podCIDRs": [cidr]}}));
        let status = json!({"status": {"addresses": [{"type": "InternalIP", "address": ip}]}});
        assert!(cp.kubectl(&["patch", "node", name, "--subresource=status", "--type=merge", "-p", &status.to_string()]).status.success());
    }
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nclusterCIDR: 10.244.0.0/16\n").unwrap();
    TwoNodes { a, b, config, logs: tempfile::tempdir().unwrap() }
}

impl TwoNodes {
    /// `podnet agent` for `node` (`node-a` or `node-b`) in its namespace, with `extra` flags.
    fn agent(&self, cp: &ControlPlane, node: &str, extra: &[&str]) -> Killed {
        let ns = if node == "node-a" { &self.a } else { &self.b };
        Killed(
            std::process::Command::new(env!("CARGO_BIN_EXE_podnet"))
                .args(["agent", "--kubeconfig", cp.kubeconfig().to_str().unwrap(), "--node-name", node, "--netns", ns.path().to_str().unwrap()])
                .args(extra)
                .args([
                    "--proxy-config",
                    self.config.path().to_str().unwrap(),
                    "--cni-conf-dir",
                    "",
                    "--metrics-bind-address",
                    "",
                    "--healthz-bind-address",
                    "",
                ])
                .stderr(std::fs::File::create(self.logs.path().join(node)).unwrap())
                .spawn()
                .unwrap(),
        )
    }

    fn log(&self, node: &str) -> String {
        std::fs::read_to_string(self.logs.path().join(node)).unwrap_or_default()
    }

    /// Waits until node A's and node B's routes contain `to_b` and `to_a`; how long it took.
    fn until_routes(&self, to_b: &str, to_a: &str) -> Duration {
        let (na, nb) = (ns_name(&self.a), ns_name(&self.b));
        let start = std::time::Instant::now();
        while !(routes(&na).contains(to_b) && routes(&nb).contains(to_a)) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no routes to each other's pods after 20 s:\nA: {}\nB: {}\n{}\n{}",
                routes(&na),
                routes(&nb),
                self.log("node-a"),
                self.log("node-b")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        start.elapsed()
    }

    /// A connection from node A's pod network (`from`, its cni0 address) to a server on node B's
    /// (`to`: port 8080 on its cni0 address) crosses.
    fn connect_across(&self, from: &str, to: &str) {
        let listen = format!("{to}:8080");
        let listener = dataplane::netns::run_in(self.b.path(), move || std::net::TcpListener::bind(listen)).unwrap().unwrap();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let mut buf = [0u8; 1024];
                let _ = std::io::Read::read(&mut conn, &mut buf);
                let _ = std::io::Write::write_all(&mut conn, b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nnode-b");
            }
        });
        let out = in_netns(&ns_name(&self.a), &["curl", "-s", "-m", "3", "--interface", from, &format!("http://{to}:8080/")]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "node-b", "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// Node B deleted from the API server: node A's route to its pod CIDR goes.
    fn node_b_leaves(&self, cp: &ControlPlane, b_cidr: &str) {
        assert!(cp.kubectl(&["delete", "node", "node-b"]).status.success());
        let na = ns_name(&self.a);
        let start = std::time::Instant::now();
        while routes(&na).contains(b_cidr) {
            assert!(start.elapsed() < Duration::from_secs(20), "node-b's route still there:\n{}\n{}", routes(&na), self.log("node-a"));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `ip route show` in a namespace.
fn routes(ns: &str) -> String {
    String::from_utf8_lossy(&in_netns(ns, &["ip", "route", "show"]).stdout).into_owned()
}

/// Two agents with `--backend vxlan`, each on its own node (a network namespace, the two joined by
/// a veth pair as their underlay): each makes its vxlan device and the route, neighbour and FDB
/// entry to the other's pod CIDR from the Nodes the API server holds, and a connection from one
/// node's pod network reaches the other's through the overlay. A Node deleted takes its route.
#[test]
fn two_agents_join_their_pod_networks_with_vxlan() {
    if !nix::unistd::geteuid().is_root() {
        testkit::skip("needs root");
        return;
    }
    let Some(bin) = testkit::k8s::binaries_or_skip() else { return };
    let cp = ControlPlane::start(&bin).unwrap_or_else(|e| panic!("control plane: {e}"));
    let nodes = two_nodes(&cp, "pnvx", "172.19.0", ["10.244.10", "10.244.11"]);
    let na = ns_name(&nodes.a);
    let _agent_a = nodes.agent(&cp, "node-a", &["--backend", "vxlan"]);
    let _agent_b = nodes.agent(&cp, "node-b", &["--backend", "vxlan"]);
    nodes.until_routes("10.244.11.0/24 via 10.244.11.0 dev podnet.1", "10.244.10.0/24 via 10.244.10.0 dev podnet.1");
    let link = String::from_utf8_lossy(&in_netns(&na, &["ip", "-d", "link", "show", "podnet.1"]).stdout).into_owned();
    assert!(link.contains("vxlan id 1") && link.contains("dstport 8472") && link.contains("mtu 1450"), "{link}");
    let fdb = String::from_utf8_lossy(&in_netns(&na, &["bridge", "fdb", "show", "dev", "podnet.1"]).stdout).into_owned();
    assert!(fdb.contains("0e:70:ac:13:00:03 dst 172.19.0.3"), "{fdb}");
    // A connection from node A's pod network to node B's, through the overlay.
    nodes.connect_across("10.244.10.1", "10.244.11.1");
    // Node B goes: A's route to its pods goes with it, and so do its neighbour and FDB entries.
    nodes.node_b_leaves(&cp, "10.244.11.0/24");
    let start = std::time::Instant::now();
    let left = || {
        let neigh = String::from_utf8_lossy(&in_netns(&na, &["ip", "neigh", "show", "dev", "podnet.1"]).stdout).into_owned();
        let fdb = String::from_utf8_lossy(&in_netns(&na, &["bridge", "fdb", "show", "dev", "podnet.1"]).stdout).into_owned();
        (neigh.contains("10.244.11.0") || fdb.contains("172.19.0.3")).then(|| format!("{neigh}{fdb}"))
    };
    while let Some(what) = left() {
        assert!(start.elapsed() < Duration::from_secs(10), "node-b's vxlan entries stayed:\n{what}\n{}", nodes.log("node-a"));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Two agents with `--backend bgp` (Calico's): each runs BIRD 2 in its node's namespace, peers
/// with the other Node the API server holds, and installs the route to the other's pod CIDR it
/// learns; a connection crosses. A Node deleted: its peer drops the session and the route.
#[test]
fn two_agents_route_their_pod_networks_with_bgp() {
    if !nix::unistd::geteuid().is_root() {
        testkit::skip("needs root");
        return;
    }
    let Some(bin) = testkit::k8s::binaries_or_skip() else { return };
    let cp = ControlPlane::start(&bin).unwrap_or_else(|e| panic!("control plane: {e}"));
    let nodes = two_nodes(&cp, "pnbg", "172.20.0", ["10.244.20", "10.244.21"]);
    let run_dir = tempfile::tempdir().unwrap();
    let bgp = ["--backend", "bgp", "--bgp-as", "64600", "--run-dir", run_dir.path().to_str().unwrap()];
    // BIRD outlives the agent (as a restarted agent finds it): stopped when the test ends.
    struct Birds(Vec<node::bgp::Bird>);
    impl Drop for Birds {
        fn drop(&mut self) {
            self.0.iter().for_each(node::bgp::Bird::stop);
        }
    }
    let birds = Birds(
        [("node-a", &nodes.a), ("node-b", &nodes.b)]
            .iter()
            .map(|(n, ns)| node::bgp::Bird { netns: ns.path().to_owned(), stem: run_dir.path().join("bird").join(n) })
            .collect(),
    );
    let _agent_a = nodes.agent(&cp, "node-a", &bgp);
    let _agent_b = nodes.agent(&cp, "node-b", &bgp);
    let took = nodes.until_routes("10.244.21.0/24 via 172.20.0.3 dev eth0 proto bird", "10.244.20.0/24 via 172.20.0.2 dev eth0 proto bird");
    eprintln!("two agents: BGP routes in place {took:?} after start");
    let conf = std::fs::read_to_string(run_dir.path().join("bird").join("node-a.conf")).unwrap();
    assert!(conf.contains("local 172.20.0.2 as 64600") && conf.contains("neighbor 172.20.0.3 as 64600"), "{conf}");
    // A connection from node A's pod network to node B's, routed by what BGP learned.
    nodes.connect_across("10.244.20.1", "10.244.21.1");
    // A Service with an external IP (externalTrafficPolicy Cluster: every node may serve it):
    // both announce its /32 on the Service change alone, and withdraw it when it goes.
    apply(
        &cp,
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "edge", "namespace": "default"},
        "spec": {"externalIPs": ["192.0.2.50"], "ports": [{"port": 80}]}}),
    );
    // (A node that announces an address serves it itself: its kernel keeps no route for it; the
    // peer's announcement is what BIRD holds beside its own.)
    let birdc = |n: usize, args: &[&str]| birds.0[n].birdc(args).unwrap_or_default();
    let from_peer = |n: usize, peer: &str| birdc(n, &["show", "route", "192.0.2.50/32"]).contains(&format!("node_{peer}"));
    let start = std::time::Instant::now();
    while !(from_peer(0, "node_b") && from_peer(1, "node_a")) {
        assert!(start.elapsed() < Duration::from_secs(20), "the external IP was not announced:\n{}\n{}", birdc(0, &["show", "route"]), nodes.log("node-a"));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(cp.kubectl(&["delete", "service", "edge"]).status.success());
    let start = std::time::Instant::now();
    while from_peer(0, "node_b") || from_peer(1, "node_a") {
        assert!(start.elapsed() < Duration::from_secs(20), "the external IP stayed announced:\n{}", birdc(0, &["show", "route"]));
        std::thread::sleep(Duration::from_millis(50));
    }
    // Node B deleted: A drops the peer from its configuration, and the route with the session.
    nodes.node_b_leaves(&cp, "10.244.21.0/24");
    drop(birds);
}

/// Two agents encrypting (`encrypt: wireguard` in their ConfigMap's settings file): each makes
/// its key pair, publishes the public key as its Node's annotation, and peers with the Node that
/// published the other; pods' traffic between the nodes goes through the tunnels — on the
/// underlay a capture sees only UDP 51820, never the payload. A Node deleted takes its route.
#[test]
fn two_agents_encrypt_their_pod_traffic_with_keys_published_on_their_nodes() {
    if !nix::unistd::geteuid().is_root() {
        testkit::skip("needs root");
        return;
    }
    let Some(bin) = testkit::k8s::binaries_or_skip() else { return };
    let cp = ControlPlane::start(&bin).unwrap_or_else(|e| panic!("control plane: {e}"));
    let nodes = two_nodes(&cp, "pnwg", "172.21.0", ["10.244.30", "10.244.31"]);
    let run_dir = tempfile::tempdir().unwrap();
    let settings = run_dir.path().join("podnet.yaml");
    std::fs::write(&settings, "backend: host-gw\nencrypt: wireguard\n").unwrap();
    let flags = |node: &str| {
        vec!["--config".to_owned(), settings.to_str().unwrap().to_owned(), "--run-dir".into(), run_dir.path().join(node).to_str().unwrap().to_owned()]
    };
    let fa = flags("node-a");
    let fb = flags("node-b");
    let _agent_a = nodes.agent(&cp, "node-a", &fa.iter().map(String::as_str).collect::<Vec<_>>());
    let _agent_b = nodes.agent(&cp, "node-b", &fb.iter().map(String::as_str).collect::<Vec<_>>());
    let took = nodes.until_routes("10.244.31.0/24 dev podnet-wg", "10.244.30.0/24 dev podnet-wg");
    eprintln!("two agents: WireGuard routes in place {took:?} after start");
    // The published key is the node's own public key; the private one stays in its file (0600).
    let published =
        String::from_utf8(cp.kubectl(&["get", "node", "node-a", "-o", "jsonpath={.metadata.annotations.podnet\\.io/wireguard-public-key}"]).stdout).unwrap();
    let own = std::fs::read_to_string(run_dir.path().join("node-a").join("wireguard").join("node-a.pub")).unwrap();
    assert_eq!(published.trim(), own.trim());
    assert_eq!(published.trim().len(), 44, "{published}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(run_dir.path().join("node-a").join("wireguard").join("node-a.key")).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    // A capture on node B's underlay side while node A's pod network talks to node B's.
    let capture = testkit::capture::Capture::start(&ns_name(&nodes.b), "eth0", "ip");
    nodes.connect_across("10.244.30.1", "10.244.31.1");
    let seen = capture.finish();
    assert!(!seen.contains("node-b") && !seen.contains("GET /"), "the exchange crossed in clear:\n{seen}");
    let headers = testkit::capture::Capture::headers(&seen);
    assert!(headers.len() >= 4 && headers.iter().all(|l| l.contains(".51820 > ") && l.contains("UDP")), "{}", headers.join("\n"));
    nodes.node_b_leaves(&cp, "10.244.31.0/24");
}
