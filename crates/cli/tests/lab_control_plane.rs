//! The lab on a real control plane (root, and upstream's binaries from `tools/k8s/build.sh`):
//! `podnet lab up --control-plane -f examples/shop`, then plain kubectl with the lab's
//! kubeconfig drives it — the seed's debugging commands verbatim (`get endpoints`, `describe
//! networkpolicy`, `exec -it debug-pod -- nslookup ...`), `scale`, `label`, `delete` — and the
//! lab's dataplane follows: pods made and removed with real namespaces, `lab check` answered with
//! real packets. `lab down` leaves no process or namespace behind.

#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a line number

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

fn podnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podnet")).args(args).output().unwrap()
}

fn ok(out: &Output, what: &str) -> String {
    assert!(out.status.success(), "{what}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A control-plane lab, removed on drop.
struct Lab {
    name: String,
    kubectl: PathBuf,
    kubeconfig: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = podnet(&["lab", "down", "--name", &self.name]);
    }
}

impl Lab {
    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(&self.kubectl).arg("--kubeconfig").arg(&self.kubeconfig).args(args).output().unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&ok(&self.kubectl(&all), &all.join(" "))).unwrap()
    }

    /// `ns/name -> IP` of the pods the API server has as Running.
    fn running_pods(&self) -> BTreeSet<(String, String)> {
        self.json(&["get", "pods", "-A"])["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                (
                    format!("{}/{}", p["metadata"]["namespace"].as_str().unwrap(), p["metadata"]["name"].as_str().unwrap()),
                    p["status"]["podIP"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    /// `ns/name -> IP` of the lab's own pods, from `lab get pods -o json`.
    fn lab_pods(&self) -> BTreeSet<(String, String)> {
        let out = ok(&podnet(&["lab", "get", "pods", "-A", "-o", "json", "--name", &self.name]), "lab get pods");
        let v: Value = serde_json::from_str(&out).unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    format!("{}/{}", p["metadata"]["namespace"].as_str().unwrap(), p["metadata"]["name"].as_str().unwrap()),
                    p["status"]["podIP"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    fn wait_until(&self, within: Duration, what: &str, done: impl Fn(&Lab) -> bool) {
        let deadline = Instant::now() + within;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "{what}: not after {within:?}\nkubelet log:\n{}",
                std::fs::read_to_string(format!("/run/podnet/{}/kubelet.log", self.name)).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn shop() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop").to_string_lossy().into_owned()
}

/// Processes whose command line names the lab's state directory (the control plane) or its
/// `lab … --name NAME` (the lab process, the kubelet process).
fn processes_of(lab: &str) -> Vec<String> {
    let dir = format!("/run/podnet/{lab}/");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.parse::<u32>().is_ok()))
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            let ours = args.iter().any(|a| a.contains(&dir)) || args.windows(2).any(|w| w[0] == "--name" && w[1] == lab) && args.iter().any(|a| a == "lab");
            ours.then(|| args.join(" "))
        })
        .collect()
}

#[test]
fn kubectl_drives_a_lab_on_a_real_control_plane() {
    if !nix::unistd::geteuid().is_root() {
        testkit::skip("needs root");
        return;
    }
    let Some(bin) = testkit::k8s::binaries_or_skip() else { return };
    let name = format!("cp{}", std::process::id() % 100_000);
    let started = Instant::now();
    let up = podnet(&["lab", "up", "--control-plane", "--kube-bin", bin.to_str().unwrap(), "--name", &name, "-f", &shop()]);
    let mut lab = Lab { name: name.clone(), kubectl: bin.join("kubectl"), kubeconfig: String::new() };
    let said = ok(&up, "lab up --control-plane");
    eprintln!("lab up --control-plane: {:.1} s\n{said}", started.elapsed().as_secs_f64());
    lab.kubeconfig = ok(&podnet(&["lab", "kubeconfig", "--name", &name]), "lab kubeconfig").trim().to_owned();
    assert!(Path::new(&lab.kubeconfig).is_file(), "{}", lab.kubeconfig);

    // The nodes registered themselves Ready, with node IPAM's pod CIDRs, which the lab's pods use.
    let nodes = lab.json(&["get", "nodes"]);
    let nodes = nodes["items"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    for n in nodes {
        let ready = n["status"]["conditions"].as_array().unwrap().iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
        assert!(ready, "{n}");
        assert!(n["spec"]["podCIDR"].as_str().unwrap().starts_with("10.244."), "{n}");
    }

    // Every pod the scheduler bound is Running with the address the lab gave it, and the lab has
    // no other pod.
    let api = lab.running_pods();
    assert!(api.len() >= 10, "{api:?}");
    assert!(api.iter().all(|(_, ip)| ip.starts_with("10.244.")), "{api:?}");
    assert_eq!(api, lab.lab_pods());

    // The seed's debugging commands, verbatim.
    let endpoints = ok(&lab.kubectl(&["get", "endpoints", "order-service", "-n", "production"]), "get endpoints");
    assert!(endpoints.contains("10.244."), "{endpoints}");
    let described = ok(&lab.kubectl(&["describe", "networkpolicy", "api-network-policy", "-n", "production"]), "describe networkpolicy");
    assert!(described.contains("PodSelector:     app=api-service"), "{described}");
    let service_ip = lab.json(&["get", "service", "order-service", "-n", "production"])["spec"]["clusterIP"].as_str().unwrap().to_owned();
    let looked_up = ok(&lab.kubectl(&["exec", "-it", "debug-pod", "--", "nslookup", "order-service.production.svc.cluster.local"]), "exec nslookup");
    assert!(looked_up.contains(&format!("Address: {service_ip}")), "{looked_up}");
    // exec carries stdin, stderr and the exit code (kubelet streaming, v5.channel.k8s.io).
    let mut cat = Command::new(&lab.kubectl)
        .args(["--kubeconfig", &lab.kubeconfig, "exec", "-i", "debug-pod", "--", "sh", "-c", "cat; echo to-stderr >&2; exit 3"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut cat.stdin.take().unwrap(), b"through stdin\n").unwrap();
    let cat = cat.wait_with_output().unwrap();
    assert_eq!(cat.status.code(), Some(3), "{cat:?}");
    assert_eq!(String::from_utf8_lossy(&cat.stdout), "through stdin\n");
    assert!(String::from_utf8_lossy(&cat.stderr).contains("to-stderr"), "{cat:?}");
    // From a pod's network namespace, what NetworkPolicy allows (web-service -> api-service:8080)
    // answers, with the client's own pod IP seen.
    let api_pod = lab.json(&["get", "pods", "-n", "production", "-l", "app=api-service"])["items"][0].clone();
    let url = format!("http://{}:8080/", api_pod["status"]["podIP"].as_str().unwrap());
    let web_pod = lab.json(&["get", "pods", "-n", "production", "-l", "app=web-service"])["items"][0].clone();
    let web = web_pod["metadata"]["name"].as_str().unwrap();
    let answer: Value = serde_json::from_str(&ok(&lab.kubectl(&["exec", "-n", "production", web, "--", "curl", "-s", "-m", "3", &url]), "exec curl")).unwrap();
    assert_eq!(answer["name"], api_pod["metadata"]["name"]);
    assert_eq!(answer["client_ip"], web_pod["status"]["podIP"]);
    let logs = ok(&lab.kubectl(&["logs", "postgres-0", "-n", "production"]), "logs");
    assert!(logs.contains("5432/TCP"), "{logs}");

    // Changes behind the API server's back are refused, naming the kubectl command.
    let refused = podnet(&["lab", "apply", "--name", &name, "-f", &shop()]);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("kubectl apply -f"), "{refused:?}");
    let refused = podnet(&["lab", "label", "--name", &name, "pod", "debug-pod", "x=y"]);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("kubectl label"), "{refused:?}");

    // The lab's own check, with real packets, over what the API server made.
    ok(&podnet(&["lab", "check", "--name", &name]), "lab check");

    // Scale up and down: the lab follows the ReplicaSet's pods.
    ok(&lab.kubectl(&["scale", "deployment", "web-service", "-n", "production", "--replicas=4"]), "scale up");
    let web = |lab: &Lab| lab.running_pods().iter().filter(|(p, _)| p.starts_with("production/web-service-")).count();
    lab.wait_until(Duration::from_secs(30), "4 web-service pods Running", |lab| web(lab) == 4 && lab.running_pods() == lab.lab_pods());
    ok(&lab.kubectl(&["scale", "deployment", "web-service", "-n", "production", "--replicas=1"]), "scale down");
    lab.wait_until(Duration::from_secs(30), "1 web-service pod", |lab| web(lab) == 1 && lab.running_pods() == lab.lab_pods());
    // A deleted StatefulSet pod goes (CNI DEL) and comes back under the same name.
    let before = lab.lab_pods();
    ok(&lab.kubectl(&["delete", "pod", "postgres-0", "-n", "production", "--timeout=30s"]), "delete pod");
    lab.wait_until(Duration::from_secs(30), "postgres-0 back", |lab| {
        lab.running_pods().iter().any(|(p, _)| p == "production/postgres-0") && lab.running_pods() == lab.lab_pods()
    });
    assert_eq!(before.len(), lab.lab_pods().len());
    // A relabelled pod leaves its Service's endpoints.
    let order = lab.lab_pods().into_iter().find(|(p, _)| p.starts_with("production/order-service-")).unwrap();
    let pod = order.0.split('/').nth(1).unwrap().to_owned();
    ok(&lab.kubectl(&["label", "pod", &pod, "-n", "production", "app=elsewhere", "--overwrite"]), "label");
    lab.wait_until(Duration::from_secs(30), "the relabelled pod out of order-service's endpoints", |lab| {
        let e = String::from_utf8_lossy(&lab.kubectl(&["get", "endpoints", "order-service", "-n", "production", "-o", "json"]).stdout).into_owned();
        !e.contains(&format!("\"{}\"", order.1))
    });

    drop(lab);
    std::thread::sleep(Duration::from_millis(300));
    let left = processes_of(&name);
    assert!(left.is_empty(), "lab down left processes: {left:#?}");
    let namespaces: Vec<String> =
        std::fs::read_dir("/run/netns").map(|d| d.flatten().filter_map(|e| e.file_name().into_string().ok()).collect()).unwrap_or_default();
    assert!(!namespaces.iter().any(|n| n.starts_with(&format!("podnet.{name}."))), "{namespaces:?}");
}

/// An Ingress in the manifests of a control-plane lab: the ingress controller's Deployment,
/// Service and IngressClass go through the API too, the scheduler places its pod, and a request
/// from the external host to the load balancer's address reaches a backend pod through it.
#[test]
fn an_ingress_is_served_in_a_lab_on_a_real_control_plane() {
    if !nix::unistd::geteuid().is_root() {
        testkit::skip("needs root");
        return;
    }
    let Some(bin) = testkit::k8s::binaries_or_skip() else { return };
    let name = format!("ci{}", std::process::id() % 100_000);
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("app.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: web}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: echo, namespace: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: echo}}\n  template:\n    metadata: {labels: {app: echo}}\n    spec: {containers: [{name: echo, image: echo, ports: [{containerPort: 8080}]}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: web}\nspec: {selector: {app: echo}, ports: [{port: 80, targetPort: 8080}]}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: echo, namespace: web}\nspec:\n  ingressClassName: nginx\n  rules:\n  - host: shop.example\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: echo, port: {number: 80}}}}]}\n",
    )
    .unwrap();
    let up = podnet(&["lab", "up", "--control-plane", "--kube-bin", bin.to_str().unwrap(), "--name", &name, "-f", manifest.to_str().unwrap()]);
    let lab = Lab { name: name.clone(), kubectl: bin.join("kubectl"), kubeconfig: String::new() };
    ok(&up, "lab up --control-plane");
    let svc: Value =
        serde_json::from_str(&ok(&podnet(&["lab", "get", "svc", "ingress-nginx-controller", "-n", "ingress-nginx", "-o", "json", "--name", &name]), "get svc"))
            .unwrap();
    let lb = svc["status"]["loadBalancer"]["ingress"][0]["ip"].as_str().unwrap_or_else(|| panic!("no load balancer address: {svc}")).to_owned();
    let out = podnet(&["lab", "exec", "--external", "--name", &name, "--", "curl", "-s", "-m", "3", "-H", "Host: shop.example", &format!("http://{lb}/")]);
    let answer: Value = serde_json::from_str(&ok(&out, "curl through the ingress controller")).unwrap();
    assert_eq!(answer["namespace"], "web", "{answer}");
    assert!(answer["name"].as_str().unwrap().starts_with("echo-"), "{answer}");
    drop(lab);
}

/// `lab up --control-plane --ip-family dual`: the API server allocates from both Service
/// CIDRs and node IPAM cuts both pod CIDRs; the lab's kubelet reports both addresses of every
/// pod and node; a PreferDualStack Service (in a namespace the manifests only use) gets a
/// ClusterIP of each family that its pods answer on; `lab check` passes in both families.
#[test]
fn a_dual_stack_lab_on_a_real_control_plane() {
    if !nix::unistd::geteuid().is_root() {
        testkit::skip("needs root");
        return;
    }
    let Some(bin) = testkit::k8s::binaries_or_skip() else { return };
    let name = format!("cd{}", std::process::id() % 100_000);
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("app.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: echo, namespace: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: echo}}\n  template:\n    metadata: {labels: {app: echo}}\n    spec: {containers: [{name: echo, image: echo, ports: [{containerPort: 8080}]}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: web}\nspec: {ipFamilyPolicy: PreferDualStack, selector: {app: echo}, ports: [{port: 80, targetPort: 8080}]}\n",
    )
    .unwrap();
    let up = podnet(&[
        "lab",
        "up",
        "--control-plane",
        "--ip-family",
        "dual",
        "--kube-bin",
        bin.to_str().unwrap(),
        "--name",
        &name,
        "-f",
        manifest.to_str().unwrap(),
    ]);
    let mut lab = Lab { name: name.clone(), kubectl: bin.join("kubectl"), kubeconfig: String::new() };
    ok(&up, "lab up --control-plane --ip-family dual");
    lab.kubeconfig = ok(&podnet(&["lab", "kubeconfig", "--name", &name]), "lab kubeconfig").trim().to_owned();
    let families = |list: &Value| -> Vec<bool> { list.as_array().unwrap().iter().map(|v| v.as_str().unwrap().contains(':')).collect() };
    for node in lab.json(&["get", "nodes"])["items"].as_array().unwrap() {
        assert_eq!(families(&node["spec"]["podCIDRs"]), [false, true], "{node}");
        let internal: Vec<Value> =
            node["status"]["addresses"].as_array().unwrap().iter().filter(|a| a["type"] == "InternalIP").map(|a| a["address"].clone()).collect();
        assert_eq!(families(&Value::Array(internal)), [false, true], "{node}");
    }
    lab.wait_until(Duration::from_secs(30), "both addresses of every web pod in the API", |lab| {
        let pods = lab.json(&["get", "pods", "-n", "web"]);
        let items = pods["items"].as_array().unwrap();
        items.len() == 2 && items.iter().all(|p| p["status"]["podIPs"].as_array().is_some_and(|ips| ips.len() == 2))
    });
    let svc = lab.json(&["get", "svc", "echo", "-n", "web"]);
    assert_eq!(svc["spec"]["ipFamilies"], serde_json::json!(["IPv4", "IPv6"]), "{svc}");
    let cluster_ips: Vec<String> = svc["spec"]["clusterIPs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    assert!(cluster_ips[1].starts_with("fd00:10:96::"), "{svc}");
    let pods = lab.json(&["get", "pods", "-n", "web"]);
    let client = pods["items"][0]["metadata"]["name"].as_str().unwrap().to_owned();
    for ip in &cluster_ips {
        let url = if ip.contains(':') { format!("http://[{ip}]/") } else { format!("http://{ip}/") };
        let out = podnet(&["lab", "exec", "--name", &name, "-n", "web", &client, "--", "curl", "-s", "-m", "3", "-g", &url]);
        let answer: Value = serde_json::from_str(&ok(&out, &format!("curl {url}"))).unwrap();
        assert_eq!(answer["namespace"], "web", "{answer}");
    }
    let check = ok(&podnet(&["lab", "check", "--name", &name]), "lab check");
    assert!(check.lines().any(|l| l.contains("[fd00:10:96::")), "the IPv6 ClusterIP was checked:\n{check}");
}
