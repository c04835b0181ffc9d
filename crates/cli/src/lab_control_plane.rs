//! `podnet lab up --control-plane`: the lab on a real Kubernetes control plane, as kind makes
//! one. etcd, kube-apiserver, kube-controller-manager and kube-scheduler (upstream's binaries)
//! run in the lab's control-plane namespace on the underlay; each lab node is registered as a
//! Node and gets its pod CIDR from the controller-manager's node IPAM; the manifests go through
//! the API (`kubectl apply`), and the lab's kubelet process (`lab_kubelet`) makes the pods the
//! scheduler binds to its nodes. kubectl reaches the API server through a port on this host's
//! loopback (`podnet lab kubeconfig`), as kind maps one.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use kubeplane::{ControlPlane, Settings};
use lab::LabName;
use lab::plan::{ControlPlaneConfig, LabPlan};
use lab::up::LabError;
use serde_json::{Value, json};

use crate::lab_cmd::UpArgs;

/// kube-apiserver's port on the control-plane host.
pub const API_PORT: u16 = 6443;

/// The admin kubeconfig for kubectl on this host (its server is the loopback forward).
pub fn kubeconfig_path(lab: &LabName) -> PathBuf {
    lab::up::control_plane_dir(lab).join("kubeconfig")
}

/// `podnet lab kubeconfig`: the path of the lab's admin kubeconfig.
pub fn kubeconfig(lab: &LabName) -> Result<ExitCode> {
    let st = lab::state::load(lab)?;
    if st.plan.config.control_plane.is_none() {
        bail!(
            "lab {lab} has no control plane (it was made without --control-plane): use podnet lab get/exec, or make it again with `podnet lab up --control-plane`"
        );
    }
    outln!("{}", kubeconfig_path(lab).display());
    Ok(ExitCode::SUCCESS)
}

fn lab_error(what: &str) -> impl FnOnce(std::io::Error) -> LabError + '_ {
    move |source| LabError { what: what.to_owned(), source }
}

/// The cluster DNS as kubeadm installs it: the `kube-dns` Service at the lab's DNS address and a
/// `coredns` Deployment whose pods the lab's DNS server answers in.
/// Each only when the manifests have none: a `kube-dns` Service, pods labelled `k8s-app: kube-dns`
/// in `kube-system` (as `lab up` without a control plane adds them).
fn cluster_dns_objects(cluster: &model::ClusterState) -> Value {
    use lab::system::{DNS_CLUSTER_IP, DNS_DEPLOYMENT, DNS_METRICS_PORT, DNS_SERVICE, SYSTEM_NAMESPACE};
    let labels = json!({"k8s-app": "kube-dns"});
    let has_service = cluster.services.iter().any(|s| s.namespace == SYSTEM_NAMESPACE && s.name == DNS_SERVICE);
    let has_pods = cluster.pods.iter().any(|p| p.namespace == SYSTEM_NAMESPACE && p.labels.get("k8s-app").is_some_and(|v| v == "kube-dns"));
    let mut items = Vec::new();
    if !has_service {
        items.push(json!({"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": DNS_SERVICE, "namespace": SYSTEM_NAMESPACE, "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
         "spec": {"clusterIP": DNS_CLUSTER_IP, "selector": labels, "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            {"name": "metrics", "port": DNS_METRICS_PORT, "protocol": "TCP", "targetPort": DNS_METRICS_PORT}]}}));
    }
    if !has_pods {
        items.push(json!({"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": DNS_DEPLOYMENT, "namespace": SYSTEM_NAMESPACE, "labels": labels},
         "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"dnsPolicy": "Default", "priorityClassName": "system-cluster-critical",
                     "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
                     "containers": [{"name": "coredns", "image": "registry.k8s.io/coredns/coredns:v1.12.0", "ports": [
                        {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                        {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                        {"name": "metrics", "containerPort": DNS_METRICS_PORT, "protocol": "TCP"}]}]}}}}));
    }
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// With Ingresses in the manifests: the ingress controller as ingress-nginx installs it (its
/// namespace, the default IngressClass `nginx`, the controller Deployment and its LoadBalancer
/// Service), each unless the manifests have it; the lab serves podnet's proxy in its pods.
fn ingress_controller_objects(cluster: &model::ClusterState) -> Option<Value> {
    use lab::system::{INGRESS_CLASS, INGRESS_CONTROLLER, INGRESS_CONTROLLER_CLASS, INGRESS_METRICS_PORT, INGRESS_NAMESPACE};
    if cluster.ingresses.is_empty() {
        return None;
    }
    let labels = json!({"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/component": "controller"});
    let mut items = vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": INGRESS_NAMESPACE}})];
    if !cluster.ingress_classes.iter().any(|c| c.metadata.name.as_deref() == Some(INGRESS_CLASS)) {
        items.push(json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": INGRESS_CLASS, "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
            "spec": {"controller": INGRESS_CONTROLLER_CLASS}}));
    }
    if !cluster.pods.iter().any(|p| p.namespace == INGRESS_NAMESPACE && p.name == INGRESS_CONTROLLER) {
        items.push(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": INGRESS_CONTROLLER, "namespace": INGRESS_NAMESPACE, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels},
                "spec": {"containers": [{"name": "controller", "image": "registry.k8s.io/ingress-nginx/controller:v1.12.0", "ports": [
                    {"name": "http", "containerPort": 80}, {"name": "https", "containerPort": 443}, {"name": "metrics", "containerPort": INGRESS_METRICS_PORT}]}]}}}}));
    }
    if !cluster.services.iter().any(|s| s.namespace == INGRESS_NAMESPACE && s.name == INGRESS_CONTROLLER) {
        items.push(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": INGRESS_CONTROLLER, "namespace": INGRESS_NAMESPACE, "labels": labels},
            "spec": {"type": "LoadBalancer", "selector": labels, "ports": [
                {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}, {"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}]}}));
    }
    Some(json!({"apiVersion": "v1", "kind": "List", "items": items}))
}

/// A lab node as the kubelet registers it (its status is posted by the lab's kubelet process).
fn node_object(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {
        "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": std::env::consts::ARCH.replace("x86_64", "amd64")}}})
}

/// Writes `value` as a JSON file in `dir` and runs `kubectl apply -f` on it.
fn apply_value(cp: &ControlPlane, dir: &Path, file: &str, value: &Value) -> std::io::Result<()> {
    let path = dir.join(file);
    std::fs::write(&path, serde_json::to_vec(value).map_err(std::io::Error::other)?)?;
    let out = cp.kubectl(&["apply", "-f", &path.to_string_lossy()]);
    if !out.status.success() {
        return Err(std::io::Error::other(format!("kubectl apply -f {file}: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(())
}

/// Starts the control plane in `plan`'s control-plane namespace, registers the lab's nodes and
/// returns the pod CIDR node IPAM gave each, in the plan's node order.
fn start_control_plane(plan: &LabPlan, bin: &Path, keep: &mut Option<ControlPlane>) -> Result<Vec<Vec<ipnet::IpNet>>, LabError> {
    let lab = &plan.config.name;
    let settings = Settings {
        bin: bin.to_owned(),
        dir: Some(lab::up::control_plane_dir(lab)),
        netns: Some(plan.control_plane_netns()),
        address: plan.control_plane_ip(),
        port: API_PORT,
        extra_sans: vec![plan.control_plane_ip().to_string()],
        scheduler: true,
        controllers: "*".into(),
        service_cidrs: plan.config.service_cidrs().iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        cluster_cidrs: plan.config.cluster_cidrs().iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
    };
    let families = plan.config.cluster_cidrs().len();
    let cp = ControlPlane::start_with(settings).map_err(lab_error("starting the control plane"))?;
    let dir = cp.dir().to_owned();
    let nodes: Vec<Value> = plan.nodes.iter().map(|n| node_object(&n.name)).collect();
    apply_value(&cp, &dir, "nodes.json", &json!({"apiVersion": "v1", "kind": "List", "items": nodes})).map_err(lab_error("registering the lab's nodes"))?;
    let cidrs = std::cell::RefCell::new(Vec::new());
    cp.wait_for(Duration::from_secs(30), "every node's spec.podCIDRs (the controller-manager's node IPAM)", |cp| {
        let Ok(list) = cp.kubectl_json(&["get", "nodes"]) else { return false };
        let by_name: Vec<(String, Vec<ipnet::IpNet>)> = list["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|n| {
                        let cidrs = n["spec"]["podCIDRs"].as_array().into_iter().flatten().filter_map(|c| c.as_str()?.parse().ok()).collect();
                        (n["metadata"]["name"].as_str().unwrap_or_default().to_owned(), cidrs)
                    })
                    .collect()
            })
            .unwrap_or_default();
        // One of each of the cluster's families.
        let found: Option<Vec<Vec<ipnet::IpNet>>> =
            plan.nodes.iter().map(|n| by_name.iter().find(|(name, c)| *name == n.name && c.len() == families).map(|(_, c)| c.clone())).collect();
        found.map(|f| *cidrs.borrow_mut() = f).is_some()
    })
    .map_err(lab_error("waiting for node IPAM"))?;
    *keep = Some(cp);
    Ok(cidrs.into_inner())
}

/// `podnet lab up --control-plane`.
pub fn up(a: UpArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let bin = match &a.kube_bin {
        Some(dir) => dir.clone(),
        None => kubeplane::binaries().ok_or_else(|| {
            anyhow!("--control-plane needs etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubectl: build them with tools/k8s/build.sh, or name their directory with --kube-bin or $PODNET_K8S_BIN")
        })?,
    };
    for b in ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"] {
        if !bin.join(b).is_file() {
            bail!("--kube-bin {}: no {b} there (tools/k8s/build.sh builds all five)", bin.display());
        }
    }
    // The manifests are checked as `lab up` checks them before anything is made.
    let cluster = if a.paths.is_empty() { model::ClusterState::default() } else { model::load_cluster(&a.paths)? };
    crate::lab_cmd::require_valid_policies(&cluster)?;
    if lab::up::exists(&a.name) {
        bail!("lab {:?} is already up; remove it with `podnet lab down --name {}`", a.name.as_str(), a.name);
    }
    let mut config = crate::lab_cmd::lab_config(&a)?;
    config.control_plane = Some(ControlPlaneConfig { kube_bin: bin.clone(), api_port: kubeplane::free_port()? });
    // No pods yet: they come through the API, bound by the scheduler.
    let plan = lab::plan::plan(&config, &model::ClusterState::default())?;
    let exe = std::env::current_exe().context("finding the podnet executable")?;
    outln!("Creating lab {:?} on a Kubernetes control plane ({} nodes, binaries from {})", a.name.as_str(), plan.nodes.len(), bin.display());
    let mut cp = None;
    let mut start = |p: &LabPlan| start_control_plane(p, &bin, &mut cp);
    let made = lab::up::up(&plan, &[], &[], &exe, |s| outln!(" ✓ {:<52} {:>7.1} ms", s.what, s.took.as_secs_f64() * 1e3), Some(&mut start));
    let (st, locked) = match made {
        Ok(m) => m,
        Err(e) => {
            drop(cp);
            let _ = lab::up::down(&a.name);
            return Err(e.into());
        }
    };
    let cp = cp.ok_or_else(|| anyhow!("the control plane did not start"))?;
    let finished = (|| -> Result<()> {
        let port = st.plan.config.control_plane.as_ref().map(|c| c.api_port).unwrap_or_default();
        std::fs::write(kubeconfig_path(&a.name), kubeplane::kubeconfig_text(cp.dir(), &format!("https://127.0.0.1:{port}"), &format!("podnet-{}", a.name)))
            .context("writing the lab's kubeconfig")?;
        locked.save(&st)?;
        drop(locked);
        let t = Instant::now();
        crate::lab_cmd::start_daemon(&a.name, &exe)?;
        start_kubelet(&a.name, &exe)?;
        outln!(" ✓ {:<52} {:>7.1} ms", "lab process and node agents (kubelet API on :10250)", t.elapsed().as_secs_f64() * 1e3);
        if st.plan.config.bgp.is_some() {
            let t = Instant::now();
            crate::lab_cmd::wait_for_bgp(&st.plan)?;
            outln!(" ✓ {:<52} {:>7.1} ms", "BGP: every node has every pod CIDR", t.elapsed().as_secs_f64() * 1e3);
        }
        let t = Instant::now();
        apply_manifests(&cp, &a.paths, &cluster)?;
        outln!(" ✓ {:<52} {:>7.1} ms", "manifests applied through the API", t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let pods = wait_for_pods(&cp, Duration::from_secs(90))?;
        outln!(" ✓ {:<52} {:>7.1} ms", &format!("{pods} pod(s) scheduled, attached and Running"), t.elapsed().as_secs_f64() * 1e3);
        Ok(())
    })();
    if let Err(e) = finished {
        let logs = cp.logs_tail();
        drop(cp);
        let _ = lab::up::down(&a.name);
        return Err(e.context(format!("the control plane's logs end with:\n{logs}")));
    }
    cp.detach();
    outln!("Lab {:?} is up in {:.2} s.\n", a.name.as_str(), started.elapsed().as_secs_f64());
    let st = lab::state::load(&a.name)?;
    out!("{}", crate::lab_cmd::pods_table(&st, &crate::lab_cmd::PodFilter { wide: true, ..Default::default() }));
    outln!("\nkubectl: export KUBECONFIG=$(podnet lab kubeconfig --name {0})   then   kubectl get pods -A -o wide", a.name);
    outln!("Next: podnet lab check --name {0}   |   podnet lab down --name {0}", a.name);
    Ok(ExitCode::SUCCESS)
}

/// The cluster DNS, the manifests' Namespaces, then the manifests as they are (kubectl's own
/// errors name the file and object). A pod of a namespace whose `default` service account the
/// controller-manager has not made yet is refused for a moment: kubectl apply is retried then.
fn apply_manifests(cp: &ControlPlane, paths: &[PathBuf], cluster: &model::ClusterState) -> Result<()> {
    let dir = cp.dir().to_owned();
    apply_value(cp, &dir, "cluster-dns.json", &cluster_dns_objects(cluster))?;
    // Every namespace the manifests use, not only those they declare: the same manifests make
    // the same lab with or without a control plane (the declared ones keep their labels).
    let mut used = cluster.clone();
    used.namespaces.iter_mut().for_each(|n| n.declared = true);
    let namespaces: Vec<Value> = lab::change::given_namespaces(&used).iter().map(|n| serde_json::to_value(n).unwrap_or_default()).collect();
    let namespaces: Vec<Value> = namespaces
        .into_iter()
        .map(|mut n| {
            n["apiVersion"] = json!("v1");
            n["kind"] = json!("Namespace");
            n
        })
        .collect();
    apply_value(cp, &dir, "namespaces.json", &json!({"apiVersion": "v1", "kind": "List", "items": namespaces}))?;
    if let Some(ingress) = ingress_controller_objects(cluster) {
        apply_value(cp, &dir, "ingress-controller.json", &ingress)?;
    }
    if paths.is_empty() {
        return Ok(());
    }
    let mut args: Vec<String> = vec!["apply".into()];
    for p in paths {
        let p = std::path::absolute(p).unwrap_or_else(|_| p.clone());
        args.extend(["-f".into(), p.to_string_lossy().into_owned()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = cp.kubectl(&args);
        if out.status.success() {
            return Ok(());
        }
        let said = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let retry = said.contains("serviceaccount") || said.contains("service account") || said.contains("not found");
        if !retry || Instant::now() > deadline {
            bail!("kubectl {}: {said}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Waits until every pod the API server has is Running (made by the lab's kubelet); their count.
fn wait_for_pods(cp: &ControlPlane, within: Duration) -> Result<usize> {
    let count = std::cell::Cell::new(0);
    cp.wait_for(within, "every pod Running", |cp| {
        let Ok(list) = cp.kubectl_json(&["get", "pods", "-A"]) else { return false };
        let items = list["items"].as_array().cloned().unwrap_or_default();
        count.set(items.len());
        // Workloads make their pods a moment after they are applied: wait for owners too.
        let owners_done = ["deployments", "statefulsets", "replicasets"].iter().all(|kind| {
            cp.kubectl_json(&["get", kind, "-A"]).is_ok_and(|l| {
                l["items"]
                    .as_array()
                    .is_none_or(|items| items.iter().all(|o| o["status"]["replicas"].as_i64().unwrap_or(0) >= o["spec"]["replicas"].as_i64().unwrap_or(1)))
            })
        });
        owners_done && items.iter().all(|p| p["status"]["phase"] == "Running")
    })?;
    Ok(count.get())
}

/// Starts the lab's kubelet process, detached, and waits until its nodes are registered Ready.
fn start_kubelet(lab: &LabName, exe: &Path) -> Result<()> {
    crate::lab_cmd::start_detached(exe, "kubelet", lab, &crate::lab_kubelet::log_file(lab), "the lab's kubelet process")
}
