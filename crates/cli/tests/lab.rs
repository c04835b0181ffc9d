//! `podnet lab` with real namespaces and packets (root). Each test makes its own uniquely named
//! lab and removes it, also when it fails.

#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a line number

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn podnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podnet")).args(args).output().unwrap()
}

/// A lab removed on drop.
struct Lab {
    name: String,
}

impl Lab {
    fn up(manifests: &Path, extra: &[&str]) -> (Lab, Output) {
        let name = format!("t{}-{}", std::process::id() % 100_000, SEQ.fetch_add(1, Ordering::SeqCst));
        let lab = Lab { name: name.clone() };
        let mut args = vec!["lab", "up", "--name", &name, "-f", manifests.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = podnet(&args);
        (lab, out)
    }

    fn state(&self) -> Value {
        serde_json::from_slice(&std::fs::read(format!("/run/podnet/{}/state.json", self.name)).unwrap()).unwrap()
    }

    /// (netns, ip) of a pod (its primary address).
    fn pod(&self, ns: &str, name_prefix: &str) -> (String, IpAddr) {
        let (netns, ips) = self.pod_ips(ns, name_prefix);
        (netns, ips[0])
    }

    /// (netns, every address, primary first) of a pod.
    fn pod_ips(&self, ns: &str, name_prefix: &str) -> (String, Vec<IpAddr>) {
        let st = self.state();
        let pods = st["plan"]["pods"].as_array().unwrap();
        let i = pods
            .iter()
            .position(|p| p["namespace"] == ns && p["name"].as_str().unwrap().starts_with(name_prefix))
            .unwrap_or_else(|| panic!("no pod {ns}/{name_prefix}*"));
        let key = format!("{ns}/{}", pods[i]["name"].as_str().unwrap());
        let mut ips: Vec<IpAddr> = vec![st["pod_ips"][i].as_str().unwrap().parse().unwrap()];
        ips.extend(st["secondary_ips"][&key].as_str().map(|ip| ip.parse::<IpAddr>().unwrap()));
        (pods[i]["netns"].as_str().unwrap().to_owned(), ips)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = podnet(&["lab", "down", "--name", &self.name]);
    }
}

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: demo}
spec:
  nodeName: node-1
  containers: [{name: c, ports: [{containerPort: 7000}]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: server, namespace: demo}
spec:
  replicas: 2
  selector: {matchLabels: {app: server}}
  template:
    metadata: {labels: {app: server}}
    spec:
      nodeName: node-2
      containers:
      - name: s
        ports: [{name: http, containerPort: 8080}, {name: dns, containerPort: 5353, protocol: UDP}]
"#;

fn manifests() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("demo.yaml"), MANIFESTS).unwrap();
    dir
}

/// The demo manifests up as a 2-node lab; `None` (the test is skipped) without root.
fn demo_lab() -> Option<(Lab, tempfile::TempDir)> {
    lab_of(MANIFESTS, &["--nodes", "2"])
}

/// `yaml` up as a lab; `None` (the test is skipped) without root.
fn lab_of(yaml: &str, extra: &[&str]) -> Option<(Lab, tempfile::TempDir)> {
    if !is_root() {
        testkit::skip("needs root");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.yaml"), yaml).unwrap();
    let (lab, out) = Lab::up(dir.path(), extra);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some((lab, dir))
}

/// What the echo server at ip:port says, asked over TCP from inside `netns`.
fn tcp_from(netns: &str, ip: impl Into<IpAddr>, port: u16, send: &'static [u8]) -> String {
    let path = dataplane::netns::path_of(netns);
    let ip = ip.into();
    dataplane::netns::run_in(&path, move || {
        let mut s = TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_secs(3)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(send).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .unwrap()
}

fn udp_from(netns: &str, ip: impl Into<IpAddr>, port: u16) -> Value {
    let path = dataplane::netns::path_of(netns);
    let ip = ip.into();
    dataplane::netns::run_in(&path, move || {
        let s = UdpSocket::bind(if ip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.send_to(b"hello", (ip, port)).unwrap();
        let mut buf = [0u8; 4096];
        let (n, _) = s.recv_from(&mut buf).unwrap();
        serde_json::from_slice(&buf[..n]).unwrap()
    })
    .unwrap()
}

fn check_the_three_rules(mode: &str) {
    check_the_three_rules_with(&["--mode", mode]);
}

/// The seed's three rules in a 2-node lab made with `extra` flags; the lab, for more checks.
fn check_the_three_rules_with(extra: &[&str]) -> Lab {
    let m = manifests();
    let mut args = vec!["--nodes", "2"];
    args.extend_from_slice(extra);
    let (lab, out) = Lab::up(m.path(), &args);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let (client_ns, client_ip) = lab.pod("demo", "client");
    let (server_ns, server_ip) = lab.pod("demo", "server-");
    // 1. Every pod has its own IP, unique across the lab.
    let st = lab.state();
    let mut ips: Vec<&str> = st["pod_ips"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let n = ips.len();
    ips.sort();
    ips.dedup();
    assert_eq!((n, ips.len()), (5, 5), "three pods and the cluster DNS's two");
    // 2. Pod to pod across nodes without NAT: the server sees the client's pod IP.
    let line = tcp_from(&client_ns, server_ip, 8080, b"ping\n");
    let v: Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(v["client_ip"], client_ip.to_string(), "{line}");
    assert_eq!(v["node"], "node-2");
    let http = tcp_from(&client_ns, server_ip, 8080, b"GET /healthz HTTP/1.1\r\nHost: server\r\n\r\n");
    assert!(http.starts_with("HTTP/1.1 200 OK"), "{http}");
    assert!(http.contains("\"path\":\"/healthz\""), "{http}");
    let u = udp_from(&client_ns, server_ip, 5353);
    assert_eq!(u["client_ip"], client_ip.to_string());
    assert_eq!(u["protocol"], "UDP");
    // The pod's ports (its containers) share the pod's one address.
    assert_eq!((v["ip"].as_str(), u["ip"].as_str()), (Some(server_ip.to_string().as_str()), Some(server_ip.to_string().as_str())));
    assert_eq!(v["pod"], u["pod"]);
    // ... and back, node-2 to node-1.
    let back: Value = serde_json::from_str(tcp_from(&server_ns, client_ip, 7000, b"x").trim()).unwrap();
    assert_eq!(back["client_ip"], server_ip.to_string());
    // 3. Agents on a node reach every pod on that node (from the node's own namespace).
    let node2 = format!("podnet.{}.node-2", lab.name);
    let from_node: Value = serde_json::from_str(tcp_from(&node2, server_ip, 8080, b"x").trim()).unwrap();
    assert!(from_node["pod"].as_str().unwrap().starts_with("demo/server-"), "{from_node}");
    // The lab's own check agrees.
    let check = podnet(&["lab", "check", "--name", &lab.name]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    lab
}

#[test]
fn host_gw_lab_proves_the_three_rules() {
    if !is_root() {
        testkit::skip("needs root");
        return;
    }
    check_the_three_rules("host-gw");
}

#[test]
fn vxlan_lab_proves_the_three_rules_with_flannel_layout() {
    if !is_root() {
        testkit::skip("needs root");
        return;
    }
    check_the_three_rules("vxlan");
    let m = manifests();
    let (lab, out) = Lab::up(m.path(), &["--nodes", "3", "--mode", "vxlan"]);
    assert!(out.status.success());
    let node = format!("podnet.{}.node-1", lab.name);
    let ip = |args: &[&str]| {
        let o = Command::new("ip").args(["-n", &node]).args(args).output().unwrap();
        String::from_utf8(o.stdout).unwrap()
    };
    // Per peer node: one route, one neighbour entry, one FDB entry; MTU reduced by 50.
    assert_eq!(ip(&["route", "show", "dev", "flannel.1"]).lines().count(), 2);
    assert_eq!(ip(&["neigh", "show", "dev", "flannel.1"]).lines().count(), 2);
    let fdb = Command::new("bridge").args(["-n", &node, "fdb", "show", "dev", "flannel.1"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&fdb.stdout).lines().filter(|l| l.contains("dst 172.18.0.")).count(), 2);
    assert!(ip(&["link", "show", "flannel.1"]).contains("mtu 1450"));
    let (client_ns, _) = lab.pod("demo", "client");
    let pod_link = Command::new("ip").args(["-n", &client_ns, "link", "show", "eth0"]).output().unwrap();
    assert!(String::from_utf8_lossy(&pod_link.stdout).contains("mtu 1450"));
}

#[test]
fn down_cleans_up_after_an_up_killed_halfway() {
    if !is_root() {
        testkit::skip("needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let many: String = (0..40)
        .map(|i| {
            format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: x}}\nspec: {{containers: [{{name: c, ports: [{{containerPort: 80}}]}}]}}\n"
            )
        })
        .collect();
    std::fs::write(dir.path().join("many.yaml"), many).unwrap();
    let name = format!("k{}", std::process::id() % 100_000);
    let _guard = Lab { name: name.clone() };
    let mut child = Command::new(env!("CARGO_BIN_EXE_podnet"))
        .args(["lab", "up", "--name", &name, "-f", dir.path().to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(40));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let down = podnet(&["lab", "down", "--name", &name]);
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&format!("podnet.{name}.")))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    assert!(!Path::new(&format!("/run/podnet/{name}")).exists());
    // No CNI plugin run of the killed `up` writes its leases back afterwards.
    std::thread::sleep(Duration::from_millis(300));
    assert!(!Path::new(&format!("/run/podnet/{name}")).exists(), "a plugin run outlived `down`");
    let etc_left = std::fs::read_dir("/etc/netns")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.starts_with(&format!("podnet.{name}."))).count())
        .unwrap_or(0);
    assert_eq!(etc_left, 0);
}

#[test]
fn bad_input_makes_nothing() {
    if !is_root() {
        testkit::skip("needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: x}\nspec: {nodeName: node-9, containers: []}\n")
        .unwrap();
    let (lab, out) = Lab::up(dir.path(), &["--nodes", "2"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml: document 1: Pod x/p: spec.nodeName: node \"node-9\" is not in this lab"), "{err}");
    assert!(!Path::new(&format!("/run/podnet/{}", lab.name)).exists());
}

#[test]
fn apply_adds_relabels_and_scales_and_delete_removes() {
    let Some((lab, _m)) = demo_lab() else { return };
    let extra = tempfile::tempdir().unwrap();
    let scaled = MANIFESTS
        .replace("replicas: 2", "replicas: 1")
        .replace("metadata: {name: client, namespace: demo}", "metadata: {name: client, namespace: demo, labels: {role: client}}");
    std::fs::write(
        extra.path().join("more.yaml"),
        format!("{scaled}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: late, namespace: demo}}\nspec: {{containers: [{{name: c, ports: [{{containerPort: 9000}}]}}]}}\n"),
    )
    .unwrap();
    let out = podnet(&["lab", "apply", "--name", &lab.name, "-f", extra.path().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("pod/late created"), "{text}");
    assert!(text.contains("pod/client configured"), "{text}");
    assert!(text.contains("deployment.apps/server configured"), "one server pod scaled away: {text}");
    // The new pod is served by the lab process right away, and reachable without NAT.
    let (late_ns, late_ip) = lab.pod("demo", "late");
    let (client_ns, client_ip) = lab.pod("demo", "client");
    let v: Value = serde_json::from_str(tcp_from(&client_ns, late_ip, 9000, b"x").trim()).unwrap();
    assert_eq!(v["client_ip"], client_ip.to_string());
    assert_eq!(lab.state()["plan"]["pods"].as_array().unwrap().iter().filter(|p| p["name"].as_str().unwrap().starts_with("server-")).count(), 1);
    // delete removes the manifests' pods and every pod of their workloads.
    let out = podnet(&["lab", "delete", "--name", &lab.name, "-f", extra.path().to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("deployment.apps/server deleted") && text.contains("pod/late deleted"), "{text}");
    // A second delete: kubectl's NotFound, exit 1.
    let again = podnet(&["lab", "delete", "--name", &lab.name, "-f", extra.path().to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("Error from server (NotFound): pods \"late\" not found"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let left: Vec<Value> = lab.state()["plan"]["pods"].as_array().unwrap().clone();
    assert!(left.iter().all(|p| p["namespace"] == "kube-system"), "only the cluster DNS is left: {left:?}");
    assert!(!Path::new(&format!("/run/netns/{late_ns}")).exists());
}

#[test]
fn get_prints_kubernetes_shaped_json_and_yaml() {
    let Some((lab, _m)) = demo_lab() else { return };
    let json = podnet(&["lab", "get", "pods", "-A", "-o", "json", "--name", &lab.name]);
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["kind"], "List");
    assert_eq!(v["items"].as_array().unwrap().len(), 5, "three pods and the cluster DNS's two");
    assert!(v["items"][0]["status"]["podIP"].as_str().unwrap().starts_with("10.244."));
    let yaml = podnet(&["lab", "get", "nodes", "-o", "yaml", "--name", &lab.name]);
    let text = String::from_utf8_lossy(&yaml.stdout);
    assert!(text.contains("kind: Node") && text.contains("podCIDR: 10.244.1.0/24"), "{text}");
    let table = podnet(&["lab", "get", "pods", "-n", "demo", "--name", &lab.name]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("NAME") && text.contains("client") && text.contains("Running"), "{text}");
    // kubectl's habits: aliases, a named object (the object itself with -o json), NotFound and
    // "No resources found", READY and STATUS after `lab mark`.
    let one = podnet(&["lab", "get", "po", "client", "-n", "demo", "-o", "json", "--name", &lab.name]);
    let v: Value = serde_json::from_slice(&one.stdout).unwrap();
    assert_eq!((v["kind"].as_str(), v["metadata"]["name"].as_str()), (Some("Pod"), Some("client")));
    assert!(v["spec"]["containers"][0]["ports"][0]["containerPort"] == 7000 && v["status"]["hostIP"] == "172.18.0.2", "{v}");
    let missing = podnet(&["lab", "get", "pods", "nope", "-n", "demo", "--name", &lab.name]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&missing.stderr).trim(), "Error from server (NotFound): pods \"nope\" not found");
    let empty = podnet(&["lab", "get", "pods", "-n", "nothing-here", "--name", &lab.name]);
    assert!(empty.status.success() && empty.stdout.is_empty());
    assert_eq!(String::from_utf8_lossy(&empty.stderr).trim(), "No resources found in nothing-here namespace.");
    let names = String::from_utf8(podnet(&["lab", "get", "po", "-n", "demo", "-o", "name", "--name", &lab.name]).stdout).unwrap();
    assert!(names.lines().count() == 3 && names.lines().all(|l| l.starts_with("pod/")) && names.contains("pod/client\n"), "{names}");
    let node = String::from_utf8(podnet(&["lab", "get", "no", "node-2", "--name", &lab.name]).stdout).unwrap();
    assert!(node.contains("node-2") && !node.contains("node-1"), "{node}");
    assert!(podnet(&["lab", "mark", "-n", "demo", "client", "not-ready", "--name", &lab.name]).status.success());
    let row = String::from_utf8(podnet(&["lab", "get", "pods", "client", "-n", "demo", "--name", &lab.name]).stdout).unwrap();
    assert!(row.contains(" 0/1 ") && row.contains("Running"), "{row}");
    assert!(podnet(&["lab", "mark", "-n", "demo", "client", "terminating", "--name", &lab.name]).status.success());
    let row = String::from_utf8(podnet(&["lab", "get", "pods", "client", "-n", "demo", "--name", &lab.name]).stdout).unwrap();
    assert!(row.contains("Terminating"), "{row}");
    // kubectl's `exec -it`: accepted, and stdin reaches the command only with -i.
    let cat = |flags: &[&str]| {
        let mut args = vec!["lab", "exec", "--name", &lab.name, "-n", "demo", "client"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--", "cat"]);
        let mut child = Command::new(env!("CARGO_BIN_EXE_podnet")).args(&args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(b"typed\n").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{flags:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(cat(&["-it"]), "typed\n");
    assert_eq!(cat(&[]), "", "without -i the command reads nothing");
}

#[test]
fn services_get_addresses_and_endpoints_follow_pod_readiness() {
    let svc = "---\napiVersion: v1\nkind: Service\nmetadata: {name: server, namespace: demo}\nspec:\n  selector: {app: server}\n  ports: [{name: http, port: 80, targetPort: http}]\n";
    let Some((lab, _m)) = lab_of(&format!("{MANIFESTS}{svc}"), &["--nodes", "2"]) else {
        return;
    };
    let table = String::from_utf8(podnet(&["lab", "get", "svc", "-n", "demo", "--name", &lab.name]).stdout).unwrap();
    assert!(table.contains("server") && table.contains("10.96.") && table.contains("80/TCP"), "{table}");
    // The object as the API server stores it: its defaults filled in.
    let object: Value = serde_json::from_slice(&podnet(&["lab", "get", "svc", "server", "-n", "demo", "-o", "json", "--name", &lab.name]).stdout).unwrap();
    let spec = &object["spec"];
    assert_eq!(
        (&spec["sessionAffinity"], &spec["internalTrafficPolicy"], &spec["ipFamilyPolicy"]),
        (&Value::from("None"), &Value::from("Cluster"), &Value::from("SingleStack"))
    );
    assert_eq!((&spec["ipFamilies"], &spec["ports"][0]["protocol"]), (&serde_json::json!(["IPv4"]), &Value::from("TCP")), "{object:#}");
    assert_eq!(spec["clusterIPs"][0], spec["clusterIP"]);
    // Applying the same Service again changes nothing, and says so as kubectl does.
    let again = tempfile::tempdir().unwrap();
    std::fs::write(again.path().join("svc.yaml"), svc).unwrap();
    let out = podnet(&["lab", "apply", "--name", &lab.name, "-f", again.path().to_str().unwrap()]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "service/server unchanged", "{}", String::from_utf8_lossy(&out.stderr));
    let ep = |lab: &Lab| String::from_utf8(podnet(&["lab", "get", "endpoints", "server", "-n", "demo", "--name", &lab.name]).stdout).unwrap();
    let before = ep(&lab);
    assert_eq!(before.matches(":8080").count(), 2, "two ready server pods: {before}");
    let st = lab.state();
    let server_pod = st["plan"]["pods"].as_array().unwrap().iter().find(|p| p["name"].as_str().unwrap().starts_with("server-")).unwrap()["name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(podnet(&["lab", "mark", "-n", "demo", &server_pod, "not-ready", "--name", &lab.name]).status.success());
    assert_eq!(ep(&lab).matches(":8080").count(), 1, "one left after marking one not ready");
    // As a v1 Endpoints object: the not-ready pod under notReadyAddresses, with its pod named.
    let json: Value = serde_json::from_slice(&podnet(&["lab", "get", "endpoints", "server", "-n", "demo", "-o", "json", "--name", &lab.name]).stdout).unwrap();
    assert_eq!((&json["apiVersion"], &json["kind"]), (&Value::from("v1"), &Value::from("Endpoints")));
    let subset = &json["subsets"][0];
    assert_eq!(subset["addresses"].as_array().unwrap().len(), 1, "{json:#}");
    assert_eq!(subset["notReadyAddresses"][0]["targetRef"]["name"], server_pod.as_str(), "{json:#}");
    assert_eq!((&subset["ports"][0]["name"], &subset["ports"][0]["port"]), (&Value::from("http"), &Value::from(8080)));
    let slices: Value = serde_json::from_slice(&podnet(&["lab", "get", "endpointslices", "-n", "demo", "-o", "json", "--name", &lab.name]).stdout).unwrap();
    let conditions: Vec<bool> = slices["items"][0]["endpoints"].as_array().unwrap().iter().map(|e| e["conditions"]["ready"].as_bool().unwrap()).collect();
    assert_eq!(conditions.iter().filter(|r| !**r).count(), 1);
}

/// What a TCP connection from `netns` to `ip:port` gets: the echo server's JSON, or the error.
fn try_tcp(netns: &str, ip: impl Into<IpAddr>, port: u16) -> Result<Value, std::io::ErrorKind> {
    let ip = ip.into();
    let path = dataplane::netns::path_of(netns);
    dataplane::netns::run_in(&path, move || {
        let mut s = TcpStream::connect_timeout(&SocketAddr::from((ip, port)), Duration::from_secs(1)).map_err(|e| e.kind())?;
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(b"x").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        Ok(serde_json::from_str(out.trim()).unwrap())
    })
    .unwrap()
}

#[test]
fn cluster_ips_reach_ready_backends_on_every_node_with_the_clients_address() {
    let services = "---\napiVersion: v1\nkind: Service\nmetadata: {name: server, namespace: demo}\nspec:\n  clusterIP: 10.96.0.80\n  selector: {app: server}\n  ports: [{name: http, port: 80, targetPort: http}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: near, namespace: demo, labels: {app: server}}\nspec:\n  nodeName: node-1\n  containers: [{name: s, ports: [{name: http, containerPort: 8080}]}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: sticky, namespace: demo}\nspec:\n  clusterIP: 10.96.0.81\n  sessionAffinity: ClientIP\n  selector: {app: server}\n  ports: [{name: http, port: 80, targetPort: http}]\n";
    let Some((lab, _m)) = lab_of(&format!("{MANIFESTS}{services}"), &["--nodes", "2"]) else {
        return;
    };
    let (client_ns, client_ip) = lab.pod("demo", "client");
    let (near_ns, near_ip) = lab.pod("demo", "near");
    let vip = Ipv4Addr::new(10, 96, 0, 80);
    let served_by = |netns: &str, tries: usize| -> Vec<Value> { (0..tries).map(|_| try_tcp(netns, vip, 80).unwrap()).collect() };

    // From a pod on node-1: the backend on node-1 and both on node-2; the backend sees the client.
    let answers = served_by(&client_ns, 40);
    let pods: std::collections::BTreeSet<&str> = answers.iter().map(|a| a["pod"].as_str().unwrap()).collect();
    assert_eq!(pods.len(), 3, "every ready backend answers: {pods:?}");
    assert!(answers.iter().all(|a| a["client_ip"] == client_ip.to_string()), "no NAT of the client");
    assert!(answers.iter().any(|a| a["node"] == "node-1") && answers.iter().any(|a| a["node"] == "node-2"));

    // `lab check` tries every Service's ClusterIP from a pod too.
    let check = podnet(&["lab", "check", "--name", &lab.name]);
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success() && text.contains("→ Service demo/server 10.96.0.80:80: answered by"), "{text}");

    // Hairpin: the pod reaches itself through its Service, masqueraded to its node.
    let mut itself = 0;
    for a in served_by(&near_ns, 30) {
        if a["pod"] == "demo/near" {
            itself += 1;
            assert_ne!(a["client_ip"], near_ip.to_string(), "hairpin traffic is masqueraded");
        } else {
            assert_eq!(a["client_ip"], near_ip.to_string());
        }
    }
    assert!(itself > 0, "30 tries never picked the pod itself");

    // sessionAffinity: ClientIP keeps a client on one backend, also across the lab process's
    // periodic table checks (the clients it remembers are not taken for tampering).
    let sticky = Ipv4Addr::new(10, 96, 0, 81);
    let first = try_tcp(&client_ns, sticky, 80).unwrap()["pod"].clone();
    assert!((0..10).all(|_| try_tcp(&client_ns, sticky, 80).unwrap()["pod"] == first));
    std::thread::sleep(lab::daemon::SYNC_PERIOD * 2 + Duration::from_millis(300));
    assert!((0..5).all(|_| try_tcp(&client_ns, sticky, 80).unwrap()["pod"] == first));
    let log = std::fs::read_to_string(lab::daemon::log_file(&lab.name.parse().unwrap())).unwrap();
    assert!(!log.contains("re-syncing"), "{log}");

    // An unknown port of a live ClusterIP is rejected; an unallocated service address dropped.
    assert_eq!(try_tcp(&client_ns, vip, 81).unwrap_err(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(try_tcp(&client_ns, Ipv4Addr::new(10, 96, 9, 9), 80).unwrap_err(), std::io::ErrorKind::TimedOut);

    // A backend marked not ready stops getting traffic.
    assert!(podnet(&["lab", "mark", "-n", "demo", "near", "not-ready", "--name", &lab.name]).status.success());
    assert!(served_by(&client_ns, 20).iter().all(|a| a["pod"] != "demo/near"));

    // Our table flushed by hand heals within a sync period.
    let node1 = format!("podnet.{}.node-1", lab.name);
    let flushed = Command::new("ip").args(["netns", "exec", &node1, "nft", "flush", "table", "ip", "podnet-proxy"]).output().unwrap();
    assert!(flushed.status.success());
    assert!(try_tcp(&client_ns, vip, 80).is_err(), "flushed: nothing DNATs");
    std::thread::sleep(lab::daemon::SYNC_PERIOD * 2 + Duration::from_millis(500));
    assert!(try_tcp(&client_ns, vip, 80).is_ok(), "healed by the lab process");
}

#[test]
fn node_ports_from_the_external_host_follow_external_traffic_policy() {
    let svc = |name: &str, extra: &str, node_port: u16| {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: demo}}\nspec:\n  type: NodePort\n{extra}  selector: {{app: server}}\n  ports: [{{port: 80, targetPort: http, nodePort: {node_port}}}]\n"
        )
    };
    let yaml = [server_pod("near", "node-1"), server_pod("far", "node-2"), svc("cluster", "", 30080), svc("local", "  externalTrafficPolicy: Local\n", 30081)]
        .concat();
    let Some((lab, _dir)) = lab_of(&yaml, &["--nodes", "3"]) else {
        return;
    };
    let external = format!("podnet.{}.external", lab.name);
    let node = |n: u8| Ipv4Addr::new(172, 18, 0, n + 1);

    // Cluster policy: any node's NodePort reaches every endpoint, masqueraded to that node.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let a = try_tcp(&external, node(1), 30080).unwrap();
        // The node's address on the way to the endpoint: its underlay IP or its bridge's.
        assert!(a["client_ip"] == node(1).to_string() || a["client_ip"] == "10.244.0.1", "SNAT to the node: {a}");
        seen.insert(a["pod"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    // Local policy: the node's own endpoint only, the client's address kept; none: dropped.
    for (n, pod) in [(1, "demo/near"), (2, "demo/far")] {
        for _ in 0..5 {
            let a = try_tcp(&external, node(n), 30081).unwrap();
            assert_eq!((a["pod"].as_str().unwrap(), a["client_ip"].as_str().unwrap()), (pod, "172.18.0.1"));
        }
    }
    assert_eq!(try_tcp(&external, node(3), 30081).unwrap_err(), std::io::ErrorKind::TimedOut);
    // Each node's proxy answers kube-proxy's health and metrics endpoints on the node's address.
    let get = |ip: Ipv4Addr, port: u16, path: &'static str| -> String {
        dataplane::netns::run_in(&dataplane::netns::path_of(&external), move || {
            let mut s = TcpStream::connect_timeout(&SocketAddr::from((ip, port)), Duration::from_secs(2)).unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .unwrap()
    };
    let healthz = get(node(2), 10256, "/healthz");
    assert!(healthz.starts_with("HTTP/1.1 200 OK") && healthz.contains("\"nodeEligible\":true"), "{healthz}");
    assert!(get(node(2), 10256, "/livez").starts_with("HTTP/1.1 200 OK"));
    let metrics = get(node(3), 10249, "/metrics");
    for name in [
        "kubeproxy_sync_proxy_rules_duration_seconds_count 1",
        "kubeproxy_network_programming_duration_seconds_bucket{le=\"0.25\"}",
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
    ] {
        assert!(metrics.contains(name), "{name} in {metrics}");
    }
    // `lab exec --external` runs there.
    let exec = podnet(&["lab", "exec", "--name", &lab.name, "--external", "--", "ip", "-4", "-o", "addr", "show", "eth0"]);
    assert!(String::from_utf8_lossy(&exec.stdout).contains("172.18.0.1/24"), "{}", String::from_utf8_lossy(&exec.stdout));
}

#[test]
fn udp_flows_to_an_endpoint_that_leaves_move_to_the_others() {
    if Command::new("conntrack").arg("--version").output().is_err() {
        testkit::skip("needs conntrack");
        return;
    }
    let dns = |name: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: demo, labels: {{app: dns}}}}\nspec:\n  nodeName: node-2\n  containers: [{{name: d, ports: [{{name: dns, containerPort: 5353, protocol: UDP}}]}}]\n"
        )
    };
    let yaml = [
        "apiVersion: v1\nkind: Pod\nmetadata: {name: client, namespace: demo}\nspec: {nodeName: node-1, containers: [{name: c}]}\n".to_owned(),
        dns("dns-a"),
        dns("dns-b"),
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: dns, namespace: demo}\nspec:\n  clusterIP: 10.96.0.53\n  selector: {app: dns}\n  ports: [{port: 53, protocol: UDP, targetPort: dns}]\n".to_owned(),
    ]
    .concat();
    let Some((lab, _dir)) = lab_of(&yaml, &["--nodes", "2"]) else {
        return;
    };
    let (client_ns, _) = lab.pod("demo", "client");
    // Always from the same source port: one conntrack flow.
    let ask = || -> String {
        dataplane::netns::run_in(&dataplane::netns::path_of(&client_ns), || {
            let s = UdpSocket::bind("0.0.0.0:40053").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            s.send_to(b"q", "10.96.0.53:53").unwrap();
            let mut buf = [0u8; 4096];
            let (n, _) = s.recv_from(&mut buf).unwrap();
            let v: Value = serde_json::from_slice(&buf[..n]).unwrap();
            v["name"].as_str().unwrap().to_owned()
        })
        .unwrap()
    };
    let first = ask();
    assert_eq!(ask(), first, "one flow, one endpoint");
    assert!(podnet(&["lab", "mark", "-n", "demo", &first, "not-ready", "--name", &lab.name]).status.success());
    let after = ask();
    assert_ne!(after, first, "the flow pinned to {first} was deleted, so it moved");
}

/// A pod `app: server` on `node`, serving http on 8080.
fn server_pod(name: &str, node: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: demo, labels: {{app: server}}}}\nspec:\n  nodeName: {node}\n  containers: [{{name: s, ports: [{{name: http, containerPort: 8080}}]}}]\n"
    )
}

/// A LoadBalancer Service over the `app: server` pods, port 80 to their http; `extra`: more
/// lines of its spec.
fn load_balancer(name: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: demo}}\nspec:\n  type: LoadBalancer\n{extra}  selector: {{app: server}}\n  ports: [{{port: 80, targetPort: http}}]\n"
    )
}

#[test]
fn load_balancer_ips_come_from_the_pool_and_answer_from_the_external_host() {
    let yaml = [
        server_pod("near", "node-1"),
        server_pod("far", "node-2"),
        load_balancer("a-cluster", "  externalIPs: [192.0.2.10]\n"),
        load_balancer("b-closed", "  loadBalancerSourceRanges: [203.0.113.0/24]\n"),
        load_balancer("c-local", "  externalTrafficPolicy: Local\n"),
    ]
    .concat();
    let Some((lab, _dir)) = lab_of(&yaml, &["--nodes", "3"]) else {
        return;
    };
    // Addresses from the pool, in the Services' order, shown as kubectl shows them.
    let svc = String::from_utf8(podnet(&["lab", "get", "svc", "-n", "demo", "--name", &lab.name]).stdout).unwrap();
    assert!(svc.contains("172.18.255.1,192.0.2.10") && svc.contains("172.18.255.2") && svc.contains("172.18.255.3"), "{svc}");
    let external = format!("podnet.{}.external", lab.name);
    let lb_ip = |n: u8| Ipv4Addr::new(172, 18, 255, n);
    // Cluster policy: every endpoint, SNAT; the externalIP too.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let a = try_tcp(&external, lb_ip(1), 80).unwrap();
        assert_ne!(a["client_ip"], "172.18.0.1", "SNAT with Cluster policy");
        seen.insert(a["pod"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen.len(), 2);
    assert!(try_tcp(&external, Ipv4Addr::new(192, 0, 2, 10), 80).is_ok());
    // loadBalancerSourceRanges that do not include the client: dropped.
    assert_eq!(try_tcp(&external, lb_ip(2), 80).unwrap_err(), std::io::ErrorKind::TimedOut);
    // Local policy: routed to a node with an endpoint, which keeps the client's address.
    for _ in 0..5 {
        let a = try_tcp(&external, lb_ip(3), 80).unwrap();
        assert_eq!(a["client_ip"], "172.18.0.1");
    }
}

fn exec_in_pod(lab: &Lab, ns: &str, pod: &str, command: &[&str]) -> (bool, String) {
    let mut args = vec!["lab", "exec", "--name", &lab.name, "-n", ns, pod, "--"];
    args.extend_from_slice(command);
    let out = podnet(&args);
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn cluster_dns_answers_pods_through_the_service_proxy() {
    if Command::new("dig").arg("-v").output().is_err() {
        testkit::skip("no dig");
        return;
    }
    let extra = "---\napiVersion: v1\nkind: Service\nmetadata: {name: server, namespace: demo}\nspec:\n  clusterIP: 10.96.0.80\n  selector: {app: server}\n  ports: [{name: http, port: 80, targetPort: http}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: demo}\nspec:\n  clusterIP: None\n  selector: {app: server}\n  ports: [{name: http, port: 8080}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: custom, namespace: demo}\nspec:\n  dnsPolicy: None\n  dnsConfig: {nameservers: [192.0.2.53], searches: [example.test], options: [{name: ndots, value: '2'}]}\n  containers: [{name: c}]\n";
    let Some((lab, _m)) = lab_of(&format!("{MANIFESTS}{extra}"), &["--nodes", "2"]) else {
        return;
    };
    // kubelet's resolv.conf, and the seed's debugging step verbatim.
    let (_, resolv) = exec_in_pod(&lab, "demo", "client", &["cat", "/etc/resolv.conf"]);
    assert_eq!(resolv, "search demo.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n");
    let (ok, out) = exec_in_pod(&lab, "demo", "client", &["nslookup", "server.demo.svc.cluster.local"]);
    assert!(ok && out.contains("Address: 10.96.0.80") && !out.contains("recursion not available"), "{out}");
    // The short form through the search path, as libc resolves it.
    let (ok, out) = exec_in_pod(&lab, "demo", "client", &["getent", "hosts", "server"]);
    assert!(ok && out.starts_with("10.96.0.80") && out.contains("server.demo.svc.cluster.local"), "{out}");
    // `server.demo` is first tried as server.demo.demo.svc.cluster.local: autopath answers that
    // query with a CNAME to the name that exists, so the search walk ends on its first step.
    let (_, out) = exec_in_pod(&lab, "demo", "client", &["dig", "+short", "+search", "server.demo"]);
    assert_eq!(out.trim(), "server.demo.svc.cluster.local.\n10.96.0.80");
    // A headless Service: the ready pods' addresses; marking one not ready takes it out at once.
    let st = lab.state();
    let servers: Vec<(String, String)> = st["plan"]["pods"]
        .as_array()
        .unwrap()
        .iter()
        .zip(st["pod_ips"].as_array().unwrap())
        .filter(|(p, _)| p["name"].as_str().unwrap().starts_with("server-"))
        .map(|(p, ip)| (p["name"].as_str().unwrap().to_owned(), ip.as_str().unwrap().to_owned()))
        .collect();
    let headless = || {
        let (_, out) = exec_in_pod(&lab, "demo", "client", &["dig", "+short", "db.demo.svc.cluster.local"]);
        let mut ips: Vec<String> = out.lines().map(str::to_owned).collect();
        ips.sort();
        ips
    };
    let mut all: Vec<String> = servers.iter().map(|(_, ip)| ip.clone()).collect();
    all.sort();
    assert_eq!(headless(), all);
    assert!(podnet(&["lab", "mark", "-n", "demo", &servers[0].0, "not-ready", "--name", &lab.name]).status.success());
    assert_eq!(headless(), [servers[1].1.clone()]);
    let (_, srv) = exec_in_pod(&lab, "demo", "client", &["dig", "+short", "_http._tcp.server.demo.svc.cluster.local", "SRV"]);
    assert_eq!(srv.trim(), "0 100 80 server.demo.svc.cluster.local.");
    // dnsPolicy: None with dnsConfig: exactly what the pod asks for.
    let (_, resolv) = exec_in_pod(&lab, "demo", "custom", &["cat", "/etc/resolv.conf"]);
    assert_eq!(resolv, "search example.test\nnameserver 192.0.2.53\noptions ndots:2\n");
}

#[test]
fn the_seeds_ingress_from_the_external_host_through_the_load_balancer() {
    if Command::new("curl").arg("--version").output().is_err() || Command::new("openssl").arg("version").output().is_err() {
        testkit::skip("needs curl and openssl");
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let (key, crt) = (certs.path().join("k.pem"), certs.path().join("c.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=api.example.com",
            "-addext",
            "subjectAltName=DNS:api.example.com,DNS:web.example.com",
        ])
        .args(["-keyout", key.to_str().unwrap(), "-out", crt.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let b64 = |p: &Path| String::from_utf8(Command::new("base64").args(["-w0", p.to_str().unwrap()]).output().unwrap().stdout).unwrap();
    let deploy = |name: &str| {
        format!(
            "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: production}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec: {{containers: [{{name: c, ports: [{{name: http, containerPort: 8080}}]}}]}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: production}}\nspec: {{selector: {{app: {name}}}, ports: [{{port: 80, targetPort: http}}]}}\n"
        )
    };
    // The seed's app-ingress (less cert-manager's annotation), and its Secret.
    let ingress = format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: app-ingress\n  namespace: production\n  annotations:\n    nginx.ingress.kubernetes.io/ssl-redirect: \"true\"\n    nginx.ingress.kubernetes.io/proxy-body-size: \"10m\"\nspec:\n  ingressClassName: nginx\n  tls:\n  - hosts: [api.example.com, web.example.com]\n    secretName: app-tls\n  rules:\n  - host: api.example.com\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: api-service, port: {{number: 80}}}}}}}}\n  - host: web.example.com\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: web-service, port: {{number: 80}}}}}}}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: app-tls, namespace: production}}\ntype: kubernetes.io/tls\ndata: {{tls.crt: {}, tls.key: {}}}\n",
        b64(&crt),
        b64(&key)
    );
    let Some((lab, _dir)) = lab_of(&format!("{}{}{ingress}", deploy("api-service"), deploy("web-service")), &["--nodes", "2"]) else {
        return;
    };
    // The controller's LoadBalancer Service got an address from the lab's pool.
    let svc: Value =
        serde_json::from_slice(&podnet(&["lab", "get", "svc", "ingress-nginx-controller", "-n", "ingress-nginx", "-o", "json", "--name", &lab.name]).stdout)
            .unwrap();
    let lb = svc["status"]["loadBalancer"]["ingress"][0]["ip"].as_str().unwrap_or_else(|| panic!("{svc}")).to_owned();
    let curl = |args: &[&str]| {
        let mut all = vec!["lab", "exec", "--external", "--name", &lab.name, "--", "curl", "-s", "--max-time", "5"];
        all.extend_from_slice(args);
        String::from_utf8(podnet(&all).stdout).unwrap()
    };
    // HTTP: ssl-redirect.
    let redirect = curl(&["-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "-H", "Host: api.example.com", &format!("http://{lb}/orders?id=7")]);
    assert_eq!(redirect, "308 https://api.example.com/orders?id=7");
    // HTTPS by SNI, verified against the Secret's certificate, to a pod of the right Service.
    for (host, app) in [("api.example.com", "api-service"), ("web.example.com", "web-service")] {
        let body = curl(&["--cacert", crt.to_str().unwrap(), "--resolve", &format!("{host}:443:{lb}"), &format!("https://{host}/hello")]);
        let v: Value = serde_json::from_str(body.trim()).unwrap_or_else(|_| panic!("{host}: {body}"));
        assert!(v["pod"].as_str().unwrap().starts_with(&format!("production/{app}-")), "{v}");
        assert_eq!(v["path"], "/hello");
    }
    // The controller pod's metrics, as ingress-nginx's on :10254.
    let st = lab.state();
    let controller = st["plan"]["pods"].as_array().unwrap().iter().find(|p| p["namespace"] == "ingress-nginx").unwrap()["name"].as_str().unwrap().to_owned();
    let out = podnet(&["lab", "exec", "--name", &lab.name, "-n", "ingress-nginx", &controller, "--", "curl", "-s", "http://127.0.0.1:10254/metrics"]);
    let metrics = String::from_utf8_lossy(&out.stdout);
    assert!(metrics.contains("nginx_ingress_controller_requests{host=\"api.example.com\",ingress=\"app-ingress\",method=\"GET\",namespace=\"production\",path=\"/\",service=\"production-api-service-80\",status=\"200\"} 1"), "{metrics}");
    // `lab check` knows the controller's ports are the proxy's, not echo servers.
    let check = podnet(&["lab", "check", "--name", &lab.name]);
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{text}{}", String::from_utf8_lossy(&check.stderr));
    assert!(text.contains("/healthz: HTTP 200") && text.contains("by the ingress controller"), "{text}");
}

#[test]
fn an_ingress_applied_to_a_running_lab_brings_its_controller() {
    if Command::new("curl").arg("--version").output().is_err() {
        testkit::skip("needs curl");
        return;
    }
    let svc = "---\napiVersion: v1\nkind: Service\nmetadata: {name: server, namespace: demo}\nspec:\n  selector: {app: server}\n  ports: [{name: http, port: 80, targetPort: http}]\n";
    let Some((lab, _m)) = lab_of(&format!("{MANIFESTS}{svc}"), &["--nodes", "2"]) else {
        return;
    };
    assert!(!lab.state()["plan"]["pods"].as_array().unwrap().iter().any(|p| p["namespace"] == "ingress-nginx"), "no Ingress, no controller");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ingress.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: demo, namespace: demo}\nspec:\n  ingressClassName: nginx\n  rules:\n  - host: demo.example.com\n    http:\n      paths: [{path: /, pathType: Prefix, backend: {service: {name: server, port: {number: 80}}}}]\n",
    )
    .unwrap();
    let out = podnet(&["lab", "apply", "--name", &lab.name, "-f", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let svc: Value =
        serde_json::from_slice(&podnet(&["lab", "get", "svc", "ingress-nginx-controller", "-n", "ingress-nginx", "-o", "json", "--name", &lab.name]).stdout)
            .unwrap();
    let lb = svc["status"]["loadBalancer"]["ingress"][0]["ip"].as_str().unwrap_or_else(|| panic!("{svc}")).to_owned();
    let out = podnet(&[
        "lab",
        "exec",
        "--external",
        "--name",
        &lab.name,
        "--",
        "curl",
        "-s",
        "--max-time",
        "5",
        "-H",
        "Host: demo.example.com",
        &format!("http://{lb}/hi"),
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)));
    assert!(v["pod"].as_str().unwrap().starts_with("demo/server-"), "{v}");
}

#[test]
fn the_seeds_api_route_through_a_gateway_applied_to_a_running_lab() {
    if Command::new("curl").arg("--version").output().is_err() {
        testkit::skip("needs curl");
        return;
    }
    let api = "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api-service, namespace: production}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: api}}\n  template:\n    metadata: {labels: {app: api}}\n    spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: api-service, namespace: production}\nspec: {selector: {app: api}, ports: [{port: 80, targetPort: http}]}\n";
    let Some((lab, _m)) = lab_of(api, &["--nodes", "2"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // A GatewayClass for the lab's controller, the Gateway the seed's route names, the seed's api-route.
    std::fs::write(
        dir.path().join("gateway.yaml"),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: podnet}\nspec: {controllerName: podnet.io/gateway-controller}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: main-gateway, namespace: production}\nspec:\n  gatewayClassName: podnet\n  listeners: [{name: http, protocol: HTTP, port: 80}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: api-route\n  namespace: production\nspec:\n  parentRefs:\n  - name: main-gateway\n  hostnames:\n  - \"api.example.com\"\n  rules:\n  - matches:\n    - path:\n        type: PathPrefix\n        value: /v1\n    backendRefs:\n    - name: api-service\n      port: 80\n",
    )
    .unwrap();
    let out = podnet(&["lab", "apply", "--name", &lab.name, "-f", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let svc: Value =
        serde_json::from_slice(&podnet(&["lab", "get", "svc", "ingress-nginx-controller", "-n", "ingress-nginx", "-o", "json", "--name", &lab.name]).stdout)
            .unwrap();
    let lb = svc["status"]["loadBalancer"]["ingress"][0]["ip"].as_str().unwrap_or_else(|| panic!("{svc}")).to_owned();
    let curl = |path: &str| {
        let out = podnet(&[
            "lab",
            "exec",
            "--external",
            "--name",
            &lab.name,
            "--",
            "curl",
            "-s",
            "--max-time",
            "5",
            "-w",
            "\n%{http_code}",
            "-H",
            "Host: api.example.com",
            &format!("http://{lb}{path}"),
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let routed = curl("/v1/orders");
    assert!(routed.ends_with("\n200"), "{routed}");
    let v: Value = serde_json::from_str(routed.lines().next().unwrap()).unwrap_or_else(|_| panic!("{routed}"));
    assert!(v["pod"].as_str().unwrap().starts_with("production/api-service-"), "{v}");
    assert!(curl("/v2").ends_with("\n404"), "outside the route's PathPrefix");
    // The status, as the controller writes it back, with the Gateway's address.
    let status = podnet(&["gateway", "status", "--lab", &lab.name, "-o", "yaml"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert!(text.contains(&format!("value: {lb}")) && text.contains("type: Programmed\n    status: \"True\"") && text.contains("attachedRoutes: 1"), "{text}");
    // Deleting the route stops the routing.
    let out = podnet(&["lab", "delete", "--name", &lab.name, "-f", dir.path().to_str().unwrap()]);
    assert!(out.status.success());
    assert!(curl("/v1/orders").ends_with("\n404"));
}

/// Every lab command parses `--name` as a lab name before anything else: a path is refused, and
/// nothing outside `/run/podnet/<lab>` is touched (`lab down --name ../../x` once deleted x).
#[test]
fn a_name_that_is_not_a_lab_name_is_refused_by_every_command() {
    let victim = tempfile::tempdir().unwrap();
    std::fs::write(victim.path().join("keep"), "x").unwrap();
    let bad = format!("../..{}", victim.path().display());
    let commands: Vec<Vec<&str>> = vec![
        vec!["lab", "down", "--name", &bad],
        vec!["lab", "up", "--name", &bad],
        vec!["lab", "get", "pods", "--name", &bad],
        vec!["lab", "check", "--name", &bad],
        vec!["lab", "mark", "p", "ready", "--name", &bad],
        vec!["lab", "apply", "-f", "x.yaml", "--name", &bad],
        vec!["lab", "delete", "-f", "x.yaml", "--name", &bad],
        vec!["lab", "exec", "p", "--name", &bad, "--", "true"],
        vec!["lab", "restart", "--name", &bad],
        vec!["gateway", "status", "--lab", &bad],
    ];
    for args in commands {
        let out = podnet(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("invalid lab name"), "{args:?}: {err}");
    }
    assert!(victim.path().join("keep").exists());
}

const LOOPS: &str = "---\napiVersion: v1\nkind: Service\nmetadata: {name: self, namespace: demo}\nspec: {type: ExternalName, externalName: self.demo.svc.cluster.local}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: ping, namespace: demo}\nspec: {type: ExternalName, externalName: pong.demo.svc.cluster.local}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: pong, namespace: demo}\nspec: {type: ExternalName, externalName: ping.demo.svc.cluster.local}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: bare}\nspec:\n  selector: {app: loner}\n  ports: [{name: http, port: 80, targetPort: 8080}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: loner, labels: {app: loner}}\nspec: {containers: [{name: c, ports: [{containerPort: 8080}]}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: server, namespace: demo}\nspec:\n  selector: {app: server}\n  ports: [{name: http, port: 80, targetPort: http}]\n";

/// ExternalNames that name themselves or each other once overflowed the DNS's stack on the first
/// query and took the whole lab process down; now the query is answered and every other part of
/// the lab keeps serving. A Service without a namespace is in `default`, as kubectl puts it.
#[test]
fn external_name_loops_are_answered_and_the_lab_keeps_serving() {
    let Some((lab, _m)) = lab_of(&format!("{MANIFESTS}{LOOPS}"), &["--nodes", "2"]) else {
        return;
    };
    for name in ["self.demo.svc.cluster.local", "ping.demo.svc.cluster.local", "pong"] {
        let (ok, out) = exec_in_pod(&lab, "demo", "client", &["dig", "+tries=1", "+time=2", "+search", name, "A"]);
        assert!(ok && out.contains("status: NOERROR"), "{name}: {out}");
    }
    let check = podnet(&["lab", "check", "--name", &lab.name]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    // The namespace-less Service: listed in default, with endpoints, and in the DNS.
    let svc = String::from_utf8(podnet(&["lab", "get", "endpoints", "bare", "--name", &lab.name]).stdout).unwrap();
    assert!(svc.contains("bare") && svc.contains(":8080"), "{svc}");
    let (ok, out) = exec_in_pod(&lab, "demo", "client", &["dig", "+short", "bare.default.svc.cluster.local"]);
    assert!(ok && out.trim().starts_with("10.96."), "{out}");
    let log = std::fs::read_to_string(format!("/run/podnet/{}/lab.log", lab.name)).unwrap();
    let first = log.lines().next().unwrap_or_default();
    assert!(
        first.len() > 24 && first.as_bytes()[4] == b'-' && first.as_bytes()[10] == b'T' && first[..24].ends_with('Z'),
        "lab.log lines start with a UTC time: {first}"
    );
}

/// Changes made at the same time are applied one after the other (a lock on the lab's state):
/// four parallel applies keep every pod, parallel deletes remove them all, marks are not lost.
#[test]
fn parallel_applies_deletes_and_marks_lose_nothing() {
    let Some((lab, _m)) = demo_lab() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<String> = (0..4)
        .map(|i| {
            let path = dir.path().join(format!("p{i}.yaml"));
            std::fs::write(&path, format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: extra-{i}, namespace: demo, labels: {{app: server}}}}\nspec: {{containers: [{{name: c, ports: [{{name: http, containerPort: 8080}}]}}]}}\n")).unwrap();
            path.to_str().unwrap().to_owned()
        })
        .collect();
    let run_all = |verb: &str| {
        let handles: Vec<_> = files
            .iter()
            .map(|f| {
                let (verb, f, name) = (verb.to_owned(), f.clone(), lab.name.clone());
                std::thread::spawn(move || podnet(&["lab", &verb, "--name", &name, "-f", &f]))
            })
            .collect();
        for h in handles {
            let out = h.join().unwrap();
            assert!(out.status.success(), "{verb}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
    };
    run_all("apply");
    let pods = |lab: &Lab| -> Vec<String> { lab.state()["plan"]["pods"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_owned()).collect() };
    for i in 0..4 {
        assert!(pods(&lab).contains(&format!("extra-{i}")), "extra-{i} kept: {:?}", pods(&lab));
        let (netns, ip) = lab.pod("demo", &format!("extra-{i}"));
        assert!(Path::new(&format!("/run/netns/{netns}")).exists());
        let (client, _) = lab.pod("demo", "client");
        let v: Value = serde_json::from_str(tcp_from(&client, ip, 8080, b"hi\n").trim()).unwrap();
        assert_eq!(v["pod"], format!("demo/extra-{i}"));
    }
    // Parallel marks of different pods: each one sticks.
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let name = lab.name.clone();
            std::thread::spawn(move || podnet(&["lab", "mark", "-n", "demo", &format!("extra-{i}"), "not-ready", "--name", &name]))
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap().status.success());
    }
    let st = lab.state();
    let not_ready = st["plan"]["pods"].as_array().unwrap().iter().filter(|p| p["name"].as_str().unwrap().starts_with("extra-") && p["ready"] == false).count();
    assert_eq!(not_ready, 4);
    run_all("delete");
    assert!(!pods(&lab).iter().any(|p| p.starts_with("extra-")), "{:?}", pods(&lab));
    assert!(
        !std::fs::read_dir("/run/netns").unwrap().flatten().any(|e| e.file_name().to_string_lossy().starts_with(&format!("podnet.{}.demo.extra-", lab.name)))
    );
}

/// After the lab process is killed, commands say so and how to fix it, a change is refused
/// before anything is made, and `lab restart` brings it back from the saved state.
#[test]
fn a_killed_lab_process_is_named_and_restart_brings_it_back() {
    let Some((lab, _m)) = demo_lab() else {
        return;
    };
    let pid: i32 = std::fs::read_to_string(format!("/run/podnet/{}/lab.pid", lab.name)).unwrap().trim().parse().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let check = podnet(&["lab", "check", "--name", &lab.name]);
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(
        !check.status.success() && err.contains("the lab process is not running") && err.contains(&format!("podnet lab restart --name {}", lab.name)),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), "apiVersion: v1\nkind: Pod\nmetadata: {name: late, namespace: demo}\nspec: {containers: []}\n").unwrap();
    let apply = podnet(&["lab", "apply", "--name", &lab.name, "-f", dir.path().to_str().unwrap()]);
    assert!(!apply.status.success() && String::from_utf8_lossy(&apply.stderr).contains("not running"));
    assert!(!Path::new(&format!("/run/netns/podnet.{}.demo.late", lab.name)).exists(), "nothing half-applied");
    let restart = podnet(&["lab", "restart", "--name", &lab.name]);
    assert!(restart.status.success(), "{}", String::from_utf8_lossy(&restart.stderr));
    let check = podnet(&["lab", "check", "--name", &lab.name]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    // The other small things: a missing command, a lab that is not up, two labs without --name.
    let exec = podnet(&["lab", "exec", "--name", &lab.name, "-n", "demo", "client", "--", "no-such-command"]);
    assert_eq!(exec.status.code(), Some(127));
    let down = podnet(&["lab", "down", "--name", "never-made-lab"]);
    assert!(down.status.success() && String::from_utf8_lossy(&down.stdout).contains("is not up"));
    let Some((other, _m2)) = demo_lab() else {
        return;
    };
    let list = podnet(&["lab", "get", "pods"]);
    let err = String::from_utf8_lossy(&list.stderr);
    assert!(!list.status.success() && err.contains("labs are up (") && err.contains(&other.name) && err.contains("pass --name"), "{err}");
    let again = podnet(&["lab", "up", "--name", &lab.name]);
    assert!(!again.status.success() && again.stdout.is_empty(), "a running lab is refused before any progress is printed");
}

/// kubectl's shapes, golden: the shop's `get` tables (pods, Services, Endpoints, EndpointSlices,
/// nodes), a Service as the API server stores it (`-o yaml`), and `describe networkpolicy`. The
/// lab's addresses and generated pod names are deterministic, so the whole output is.
#[test]
fn kubectl_shaped_outputs_of_the_shop_are_golden() {
    if !is_root() {
        testkit::skip("needs root");
        return;
    }
    let (lab, out) = Lab::up(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/shop")), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut golden = String::new();
    for args in [
        &["get", "pods", "-A"][..],
        &["get", "pods", "-n", "production", "-o", "wide"],
        &["get", "svc", "-A"],
        &["get", "endpoints", "-A"],
        &["get", "endpointslices", "-n", "production"],
        &["get", "nodes"],
        &["get", "svc", "order-service", "-n", "production", "-o", "yaml"],
        &["describe", "networkpolicy", "api-network-policy", "-n", "production"],
    ] {
        let mut all = vec!["lab"];
        all.extend_from_slice(&args[..1]);
        all.extend_from_slice(&["--name", &lab.name]);
        all.extend_from_slice(&args[1..]);
        let out = podnet(&all);
        assert!(out.status.success(), "{all:?}: {}", String::from_utf8_lossy(&out.stderr));
        // The lab's own name (in namespaces) and the creation time are this run's, and which
        // pod of a node gets which address depends on the order their CNI ADDs finish.
        let text = mask_pod_hosts(&String::from_utf8_lossy(&out.stdout).replace(&lab.name, "LAB"));
        let text: Vec<String> = text.lines().map(|l| if l.starts_with("Created on:") { "Created on:   <time>".to_owned() } else { l.to_owned() }).collect();
        golden.push_str(&format!("$ podnet lab {}\n{}\n\n", args.join(" "), text.join("\n")));
    }
    insta::assert_snapshot!(golden);
}

/// `10.244.N.H` → `10.244.N.x`: the node's pod network stays, the host part goes.
fn mask_pod_hosts(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("10.244.") {
        out.push_str(&rest[..at + 7]);
        rest = &rest[at + 7..];
        let node = rest.find('.').filter(|&i| i > 0 && rest[..i].bytes().all(|b| b.is_ascii_digit()));
        let Some(dot) = node else { continue };
        out.push_str(&rest[..=dot]);
        rest = &rest[dot + 1..];
        let host = rest.bytes().take_while(u8::is_ascii_digit).count();
        out.push_str(if host > 0 { "x" } else { "" });
        rest = &rest[host..];
    }
    out.push_str(rest);
    out
}

#[test]
fn bgp_lab_proves_the_three_rules() {
    if !is_root() {
        testkit::skip("needs root");
        return;
    }
    check_the_three_rules("bgp");
}

/// `ip route` in a namespace, for `dst` (or all).
fn ip_route(netns: &str, dst: Option<&str>) -> String {
    let mut args = vec!["-n", netns, "route", "show"];
    args.extend(dst);
    String::from_utf8(Command::new("ip").args(&args).output().unwrap().stdout).unwrap()
}

/// Polls `cond` every 20 ms for up to `limit`; how long it took, or `None`.
fn within(limit: Duration, cond: impl Fn() -> bool) -> Option<Duration> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn bgp_routes_pods_and_load_balancers_to_the_external_router_and_heals() {
    let yaml = [
        server_pod("near", "node-1"),
        server_pod("far", "node-2"),
        load_balancer("a-cluster", ""),
        load_balancer("b-local", "  externalTrafficPolicy: Local\n"),
    ]
    .concat();
    let Some((lab, _dir)) = lab_of(&yaml, &["--nodes", "3", "--mode", "bgp", "--bgp-external"]) else {
        return;
    };
    let node = |n: u8| format!("podnet.{}.node-{n}", lab.name);
    let external = format!("podnet.{}.external", lab.name);
    // Every node learned the other two pod CIDRs from BIRD; the external router all three.
    for n in 1..=3 {
        let routes = ip_route(&node(n), None);
        assert_eq!(routes.lines().filter(|l| l.contains("10.244.") && l.contains("proto bird")).count(), 2, "node-{n}:\n{routes}");
    }
    let routes = ip_route(&external, None);
    assert_eq!(routes.lines().filter(|l| l.starts_with("10.244.") && l.contains("proto bird")).count(), 3, "{routes}");
    // The external router reaches a pod by its own address: no NAT, no overlay.
    let (_, near_ip) = lab.pod("demo", "near");
    let direct = try_tcp(&external, near_ip, 8080).unwrap();
    assert_eq!(direct["client_ip"], "172.18.0.1", "{direct}");
    // LoadBalancer IPs announced by the nodes that may serve them: every node for Cluster,
    // those with a ready endpoint for Local (node-1 and node-2, not node-3).
    let announced = |ip: &str| ip_route(&external, Some(ip));
    let cluster = announced("172.18.255.1");
    assert!(["172.18.0.2", "172.18.0.3", "172.18.0.4"].iter().all(|n| cluster.contains(&format!("via {n} "))), "{cluster}");
    let local = announced("172.18.255.2");
    assert!(local.contains("via 172.18.0.2 ") && local.contains("via 172.18.0.3 ") && !local.contains("172.18.0.4"), "{local}");
    let a = try_tcp(&external, Ipv4Addr::new(172, 18, 255, 2), 80).unwrap();
    assert_eq!(a["client_ip"], "172.18.0.1", "Local keeps the client's address: {a}");
    assert!(try_tcp(&external, Ipv4Addr::new(172, 18, 255, 1), 80).is_ok());
    // node-2's endpoint no longer ready: node-2 withdraws the Local address.
    let mark = podnet(&["lab", "mark", "--name", &lab.name, "-n", "demo", "far", "not-ready"]);
    assert!(mark.status.success(), "{}", String::from_utf8_lossy(&mark.stderr));
    let took = within(Duration::from_secs(5), || !announced("172.18.255.2").contains("172.18.0.3"));
    assert!(took.is_some(), "node-2 still announces the Local address:\n{}", announced("172.18.255.2"));
    assert!(announced("172.18.255.2").contains("172.18.0.2"), "node-1 still serves it");
    // Sessions and routes as `lab get routes` shows them.
    let shown = String::from_utf8(podnet(&["lab", "get", "routes", "--name", &lab.name, "--node", "node-1"]).stdout).unwrap();
    assert_eq!(shown.lines().filter(|l| l.starts_with("node-1") && l.contains("Established")).count(), 3, "{shown}");
    assert!(shown.contains("10.244.1.0/24") && shown.contains("172.18.0.3"), "{shown}");
    // node-2's BIRD killed: its pod CIDR is withdrawn from the others (the session closes), the
    // lab process starts BIRD again and the route comes back.
    let pid: i32 = std::fs::read_to_string(format!("/run/podnet/{}/bird/node-2.pid", lab.name)).unwrap().trim().parse().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let to_node2 = || ip_route(&node(1), Some("10.244.1.0/24")).contains("via 172.18.0.3");
    let gone = within(Duration::from_secs(4), || !to_node2()).expect("node-2's pod CIDR was not withdrawn within the hold time");
    let back = within(Duration::from_secs(10), to_node2).expect("node-2's routes did not come back after BIRD was restarted");
    eprintln!("node-2's BIRD killed: withdrawn from node-1 in {gone:?}, back {back:?} later");
    // A silent node (its link down: no session closes) is withdrawn after the hold time.
    let down = Command::new("ip").args(["-n", &node(3), "link", "set", "eth0", "down"]).status().unwrap();
    assert!(down.success());
    let to_node3 = || ip_route(&node(1), Some("10.244.2.0/24")).contains("via 172.18.0.4");
    let silent = within(Duration::from_secs(6), || !to_node3()).expect("a silent node's routes stayed past the hold time");
    assert!(silent >= Duration::from_millis(500), "withdrawn by the hold timer, not at once: {silent:?}");
    eprintln!("node-3 silent: withdrawn from node-1 after {silent:?}");
    // `lab down` leaves no BIRD behind.
    let name = lab.name.clone();
    drop(lab);
    let left = Command::new("pgrep").args(["-f", &format!("/run/podnet/{name}/bird")]).output().unwrap();
    assert!(left.stdout.is_empty(), "BIRD left after lab down: {}", String::from_utf8_lossy(&left.stdout));
}

#[test]
fn bgp_route_reflectors_carry_every_route_with_one_session_per_client() {
    let Some((lab, _dir)) = lab_of(MANIFESTS, &["--nodes", "4", "--mode", "bgp", "--bgp-route-reflectors", "1", "--bgp-as", "65001"]) else {
        return;
    };
    let shown = String::from_utf8(podnet(&["lab", "get", "routes", "--name", &lab.name]).stdout).unwrap();
    // node-1 reflects: three clients; node-3 has node-1 alone and still every other pod CIDR.
    assert_eq!(shown.lines().filter(|l| l.starts_with("node-1") && l.contains("client_node_") && l.contains("Established")).count(), 3, "{shown}");
    assert_eq!(shown.lines().filter(|l| l.starts_with("node-3") && l.contains("Established")).count(), 1, "{shown}");
    let routes = ip_route(&format!("podnet.{}.node-3", lab.name), None);
    assert_eq!(routes.lines().filter(|l| l.contains("proto bird")).count(), 3, "{routes}");
    let check = podnet(&["lab", "check", "--name", &lab.name]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    // BGP's flags without BGP, or a reflector count past the nodes, make nothing.
    for (args, says) in [(&["--bgp-as", "65001"][..], "need --mode bgp"), (&["--mode", "bgp", "--bgp-route-reflectors", "9"], "only 2 node(s)")] {
        let mut all = vec!["lab", "up", "--name", "bgp-bad", "--nodes", "2"];
        all.extend_from_slice(args);
        let out = podnet(&all);
        assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains(says), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(!std::path::Path::new("/run/podnet/bgp-bad").exists());
    }
}

#[test]
fn wireguard_encrypts_everything_between_nodes_in_every_mode() {
    if !is_root() {
        testkit::skip("needs root");
        return;
    }
    let _ = check_the_three_rules_with(&["--mode", "vxlan", "--encrypt", "wireguard"]);
    // With BGP the tunnel's routes (metric 0) win over BIRD's (metric 32): BGP still carries the
    // pod CIDRs (and LoadBalancer IPs), the pods' traffic between nodes is encrypted.
    let bgp = check_the_three_rules_with(&["--mode", "bgp", "--encrypt", "wireguard"]);
    let routes = String::from_utf8(Command::new("ip").args(["-n", &format!("podnet.{}.node-1", bgp.name), "route"]).output().unwrap().stdout).unwrap();
    assert!(routes.contains("10.244.1.0/24 dev podnet-wg") && routes.contains("10.244.1.0/24 via 172.18.0.3 dev eth0 proto bird"), "{routes}");
    drop(bgp);
    let lab = check_the_three_rules_with(&["--mode", "host-gw", "--encrypt", "wireguard"]);
    let (client_ns, _) = lab.pod("demo", "client");
    let (_, server_ip) = lab.pod("demo", "server-");
    // Pods get the MTU that leaves room for WireGuard: a full-size packet with "don't fragment"
    // crosses.
    let link = Command::new("ip").args(["-n", &client_ns, "link", "show", "eth0"]).output().unwrap();
    assert!(String::from_utf8_lossy(&link.stdout).contains("mtu 1440"), "{}", String::from_utf8_lossy(&link.stdout));
    let big = dataplane::netns::run_in(&dataplane::netns::path_of(&client_ns), move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        // 1412 bytes of payload + 8 (UDP) + 20 (IP) = 1440: the most a pod may send in one packet.
        s.send_to(&[b'x'; 1412], (server_ip, 5353)).unwrap();
        let mut buf = [0u8; 4096];
        s.recv_from(&mut buf).map(|(n, _)| n)
    })
    .unwrap();
    assert!(big.as_ref().is_ok_and(|n| *n > 0), "a full 1440-byte packet did not cross: {big:?}");
    // A capture on the underlay during a pod-to-pod HTTP exchange: only WireGuard's UDP, and
    // not one byte of the payload.
    let underlay = format!("podnet.{}.underlay", lab.name);
    let capture = testkit::capture::Capture::start(&underlay, "any", "ip and not igmp");
    let answer = tcp_from(&client_ns, server_ip, 8080, b"GET /podnet-secret-payload HTTP/1.1\r\nHost: server\r\n\r\n");
    assert!(answer.contains("podnet-secret-payload"), "the server got the request: {answer}");
    let seen = capture.finish();
    assert!(!seen.contains("podnet-secret-payload"), "the payload crossed the underlay in clear:\n{seen}");
    let headers = testkit::capture::Capture::headers(&seen);
    assert!(headers.len() >= 4, "the exchange was captured:\n{seen}");
    assert!(headers.iter().all(|l| l.contains(".51820 > ") && l.contains("UDP")), "something else crossed the underlay:\n{}", headers.join("\n"));
    // Keys rotated: new public keys, and pods still talk (a new handshake).
    let before = std::fs::read_to_string(format!("/run/podnet/{}/wireguard/node-1.pub", lab.name)).unwrap();
    let rotated = podnet(&["lab", "rotate-keys", "--name", &lab.name]);
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    let after = std::fs::read_to_string(format!("/run/podnet/{}/wireguard/node-1.pub", lab.name)).unwrap();
    assert_ne!(before, after);
    assert!(String::from_utf8_lossy(&rotated.stdout).contains(after.trim()), "{}", String::from_utf8_lossy(&rotated.stdout));
    let v: Value = serde_json::from_str(tcp_from(&client_ns, server_ip, 8080, b"x").trim()).unwrap();
    assert_eq!(v["node"], "node-2");
}

/// The demo's server behind a Service that asks for both families, as kind's dual-stack docs do.
const DUAL_STACK_SERVICE: &str = r#"
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  ipFamilyPolicy: PreferDualStack
  selector: {app: server}
  ports: [{name: http, port: 80, targetPort: http}]
"#;

/// The seed's three rules in every family of a 2-node lab made with `extra` flags (which pick
/// `--ip-family`): each pod has an address of each family, unique in the lab; pod to pod across
/// nodes without NAT over each; the node reaches its pods over each; the Service answers on
/// each of its ClusterIPs and its name resolves to them (A and AAAA); `lab check` agrees.
fn check_the_three_rules_in_every_family(extra: &[&str], v4: bool, v6: bool) -> Lab {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("demo.yaml"), format!("{MANIFESTS}{DUAL_STACK_SERVICE}")).unwrap();
    let mut args = vec!["--nodes", "2"];
    args.extend_from_slice(extra);
    let (lab, out) = Lab::up(dir.path(), &args);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let families: Vec<bool> = [(v4, false), (v6, true)].into_iter().filter(|f| f.0).map(|f| f.1).collect();
    let (client_ns, client_ips) = lab.pod_ips("demo", "client");
    let (server_ns, server_ips) = lab.pod_ips("demo", "server-");
    assert_eq!(client_ips.iter().map(IpAddr::is_ipv6).collect::<Vec<_>>(), families, "addresses in family order: {client_ips:?}");
    let st = lab.state();
    let mut all: Vec<String> = st["pod_ips"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    all.extend(st["secondary_ips"].as_object().unwrap().values().map(|v| v.as_str().unwrap().to_owned()));
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!((n, all.len()), (5 * families.len(), 5 * families.len()), "every pod an address of each family, none twice");
    let node2 = format!("podnet.{}.node-2", lab.name);
    for (&client_ip, &server_ip) in client_ips.iter().zip(&server_ips) {
        if client_ip.is_ipv6() {
            let pod_cidr: ipnet::IpNet = "fd00:10:244::/56".parse().unwrap();
            assert!(pod_cidr.contains(&client_ip) && pod_cidr.contains(&server_ip), "{client_ip} {server_ip}");
        }
        let v: Value = serde_json::from_str(tcp_from(&client_ns, server_ip, 8080, b"ping\n").trim()).unwrap();
        assert_eq!(
            (v["client_ip"].as_str(), v["ip"].as_str(), v["node"].as_str()),
            (Some(&*client_ip.to_string()), Some(&*server_ip.to_string()), Some("node-2"))
        );
        let u = udp_from(&client_ns, server_ip, 5353);
        assert_eq!(u["client_ip"], client_ip.to_string());
        let back: Value = serde_json::from_str(tcp_from(&server_ns, client_ip, 7000, b"x").trim()).unwrap();
        assert_eq!(back["client_ip"], server_ip.to_string());
        let from_node: Value = serde_json::from_str(tcp_from(&node2, server_ip, 8080, b"x").trim()).unwrap();
        assert!(from_node["pod"].as_str().unwrap().starts_with("demo/server-"), "{from_node}");
    }
    // The Service: a ClusterIP of each family, each reaching a server with the client's address
    // of that family; its name has an A and an AAAA record.
    let web = st["services"].as_array().unwrap().iter().find(|s| s["metadata"]["name"] == "web").unwrap().clone();
    let cluster_ips: Vec<IpAddr> = web["spec"]["clusterIPs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().parse().unwrap()).collect();
    assert_eq!(cluster_ips.iter().map(IpAddr::is_ipv6).collect::<Vec<_>>(), families, "{web}");
    if v6 {
        let service_cidr: ipnet::IpNet = "fd00:10:96::/112".parse().unwrap();
        assert!(cluster_ips.iter().filter(|ip| ip.is_ipv6()).all(|ip| service_cidr.contains(ip)), "{cluster_ips:?}");
    }
    for (vip, client_ip) in cluster_ips.iter().zip(&client_ips) {
        let v: Value = serde_json::from_str(tcp_from(&client_ns, *vip, 80, b"x").trim()).unwrap();
        assert_eq!(v["client_ip"], client_ip.to_string(), "through {vip}: {v}");
        let kind = if vip.is_ipv6() { "AAAA" } else { "A" };
        let (ok, answer) = exec_in_pod(&lab, "demo", "client", &["dig", "+short", "+search", kind, "web"]);
        assert!(ok && answer.lines().any(|l| l.trim() == vip.to_string()), "{kind} web: {answer}");
    }
    let check = podnet(&["lab", "check", "--name", &lab.name]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    lab
}

#[test]
fn dual_stack_and_ipv6_labs_prove_the_three_rules_in_every_family_and_mode() {
    if !is_root() {
        testkit::skip("needs root");
        return;
    }
    for mode in ["host-gw", "vxlan", "bgp"] {
        let lab = check_the_three_rules_in_every_family(&["--mode", mode, "--ip-family", "dual"], true, true);
        if mode == "vxlan" {
            // IPv6 pods ride the IPv4 tunnel: a route, a neighbour per peer for each family.
            let node = format!("podnet.{}.node-1", lab.name);
            let routes = String::from_utf8(Command::new("ip").args(["-n", &node, "-6", "route", "show", "dev", "flannel.1"]).output().unwrap().stdout).unwrap();
            assert!(routes.contains("fd00:10:244:1::/64 via fd00:10:244:1:: "), "{routes}");
        }
        if mode == "bgp" {
            // BGP carries IPv6 pod CIDRs over sessions between IPv6 addresses.
            let routes = ip_route(&format!("podnet.{}.node-1", lab.name), None);
            let routes6 =
                String::from_utf8(Command::new("ip").args(["-n", &format!("podnet.{}.node-1", lab.name), "-6", "route"]).output().unwrap().stdout).unwrap();
            assert!(routes6.contains("fd00:10:244:1::/64 via fd00:172:18::3 dev eth0 proto bird"), "{routes}\n{routes6}");
        }
    }
    // Every other combination: IPv6-only in each mode, and both families encrypted.
    for mode in ["host-gw", "vxlan", "bgp"] {
        drop(check_the_three_rules_in_every_family(&["--mode", mode, "--ip-family", "ipv6"], false, true));
        for family in ["dual", "ipv6"] {
            let lab = check_the_three_rules_in_every_family(&["--mode", mode, "--ip-family", family, "--encrypt", "wireguard"], family == "dual", true);
            // `lab down` leaves nothing: no namespace, no BIRD, no TUN (it lived in a node's
            // namespace), no keys (they lived in the state directory).
            let name = lab.name.clone();
            drop(lab);
            assert!(!Path::new(&format!("/run/podnet/{name}")).exists(), "the state and keys of {name} are left");
            let netns = String::from_utf8(Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).unwrap();
            assert!(!netns.contains(&format!("podnet.{name}.")), "{netns}");
            let birds = Command::new("pgrep").args(["-f", &format!("/run/podnet/{name}/")]).output().unwrap();
            assert!(birds.stdout.is_empty(), "a daemon of {name} is left: {}", String::from_utf8_lossy(&birds.stdout));
        }
    }
    // Bad settings make nothing.
    let m = manifests();
    let (_lab, out) = Lab::up(m.path(), &["--ip-family", "dual", "--pod-cidr-v6", "fd00:10:244::/64"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--pod-cidr-v6 fd00:10:244::/64"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// NetworkPolicy in the kernel holds in both families: with the server isolated for ingress
/// and only the client allowed, the client reaches it over IPv4 and IPv6 and another pod over
/// neither (dropped, never reset); `lab check` agrees in both; the client's established flows
/// of both families are cut when it loses the label the policy names.
#[test]
fn network_policy_holds_in_both_families_of_a_dual_stack_lab() {
    let policy = r#"
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: demo}
spec:
  nodeName: node-1
  containers: [{name: c, ports: [{containerPort: 7000}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-the-client, namespace: demo}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {role: client}}}]
"#;
    // The demo's client, labelled for the policy to name it.
    let manifests = format!("{MANIFESTS}{policy}").replacen(
        "metadata: {name: client, namespace: demo}",
        "metadata: {name: client, namespace: demo, labels: {role: client}}",
        1,
    );
    let Some((lab, _m)) = lab_of(&manifests, &["--nodes", "2", "--ip-family", "dual"]) else {
        return;
    };
    let (client_ns, client_ips) = lab.pod_ips("demo", "client");
    let (other_ns, _) = lab.pod_ips("demo", "other");
    let (_, server_ips) = lab.pod_ips("demo", "server-");
    assert_eq!(server_ips.len(), 2);
    for (server_ip, client_ip) in server_ips.iter().zip(&client_ips) {
        let v = try_tcp(&client_ns, *server_ip, 8080).unwrap_or_else(|e| panic!("client → {server_ip}: {e:?}"));
        assert_eq!(v["client_ip"], client_ip.to_string());
        assert_eq!(try_tcp(&other_ns, *server_ip, 8080).unwrap_err(), std::io::ErrorKind::TimedOut, "other → {server_ip} must be dropped");
    }
    // The client's connections are recorded as flows in both families, named.
    let flows_log = format!("/run/podnet/{}/flows.log", lab.name);
    let start = std::time::Instant::now();
    let recorded = |ip: &IpAddr| {
        std::fs::read_to_string(&flows_log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains(&format!("\"src_ip\":\"{ip}\"")) && l.contains("\"src_pod\":\"demo/client\""))
    };
    while !client_ips.iter().all(recorded) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(client_ips.iter().all(recorded), "{}", std::fs::read_to_string(&flows_log).unwrap_or_default());
    // The drops are logged in both families, named.
    let (other_ips, mut logged) = (lab.pod_ips("demo", "other").1, String::new());
    let start = std::time::Instant::now();
    while !other_ips.iter().all(|ip| logged.contains(&format!("\"src_ip\":\"{ip}\""))) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
        logged = String::from_utf8_lossy(&podnet(&["lab", "logs", "--name", &lab.name, "--drops", "--no-follow", "-o", "json"]).stdout).into_owned();
    }
    for ip in &other_ips {
        let drop = logged.lines().find(|l| l.contains(&format!("\"src_ip\":\"{ip}\""))).unwrap_or_else(|| panic!("no drop from {ip} logged:\n{logged}"));
        let v: Value = serde_json::from_str(drop).unwrap();
        assert_eq!((v["src_pod"].as_str(), v["dst_port"].as_u64(), v["direction"].as_str()), (Some("demo/other"), Some(8080), Some("ingress")), "{drop}");
    }
    let check = podnet(&["lab", "check", "--name", &lab.name]);
    let text = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(check.status.success(), "{text}");
    assert!(text.lines().any(|l| l.contains("[fd00:10:244:") && l.contains("dropped, as NetworkPolicy requires")), "{text}");
    // A UDP flow of each family from the client, answered while it is allowed...
    let flows: Vec<UdpSocket> = server_ips
        .iter()
        .map(|ip| {
            let target = SocketAddr::new(*ip, 5353);
            let s = dataplane::netns::run_in(&dataplane::netns::path_of(&client_ns), move || {
                UdpSocket::bind(if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })
            })
            .unwrap()
            .unwrap();
            s.connect(target).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            s.send(b"hello\n").unwrap();
            assert!(s.recv(&mut [0u8; 2048]).is_ok(), "the flow to {target} answers while allowed");
            s
        })
        .collect();
    // ... and cut, in both families, once the client loses its label.
    let relabel = podnet(&["lab", "label", "--name", &lab.name, "pod", "-n", "demo", "client", "role-"]);
    assert!(relabel.status.success(), "{}", String::from_utf8_lossy(&relabel.stderr));
    for s in &flows {
        s.send(b"again\n").unwrap();
        assert!(s.recv(&mut [0u8; 2048]).is_err(), "the established flow to {:?} must be cut", s.peer_addr());
    }
}

/// In a dual-stack lab a PreferDualStack LoadBalancer gets an address of each family (the IPv4
/// pool's and `fd00:172:18:ff::/120`'s), both answer from the external host; with
/// `externalTrafficPolicy: Local` the server sees the external host's own address of each family.
#[test]
fn dual_stack_load_balancers_answer_on_both_families_from_the_external_host() {
    let yaml = [server_pod("near", "node-1"), load_balancer("both", "  ipFamilyPolicy: PreferDualStack\n  externalTrafficPolicy: Local\n")].concat();
    let Some((lab, _dir)) = lab_of(&yaml, &["--nodes", "2", "--ip-family", "dual"]) else {
        return;
    };
    let st = lab.state();
    let svc = st["services"].as_array().unwrap().iter().find(|s| s["metadata"]["name"] == "both").unwrap().clone();
    let ingress: Vec<IpAddr> =
        svc["status"]["loadBalancer"]["ingress"].as_array().unwrap().iter().map(|i| i["ip"].as_str().unwrap().parse().unwrap()).collect();
    assert_eq!(ingress, ["172.18.255.1".parse::<IpAddr>().unwrap(), "fd00:172:18:ff::1".parse().unwrap()], "{svc}");
    let external = format!("podnet.{}.external", lab.name);
    for (ip, client) in ingress.iter().zip(["172.18.0.1", "fd00:172:18::1"]) {
        let a = try_tcp(&external, *ip, 80).unwrap_or_else(|e| panic!("{ip}: {e:?}"));
        assert_eq!((a["pod"].as_str(), a["client_ip"].as_str()), (Some("demo/near"), Some(client)), "through {ip}: {a}");
    }
}
