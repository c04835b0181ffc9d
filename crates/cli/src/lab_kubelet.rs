//! The kubelet's part of a control-plane lab's node agents (`podnet lab kubelet`, started by
//! `lab up --control-plane`): for each lab node it posts the Node's status (Ready, addresses,
//! capacity, the kubelet port) and renews its Lease; it follows the API server's Pods, Services,
//! Namespaces and NetworkPolicies into the lab (`lab::change::sync`: a pod the scheduler binds
//! to a lab node gets its namespace and CNI ADD, a deleted one CNI DEL) and writes each pod's
//! status back (`Running`, its IP, `Ready`); and it serves the kubelet API on each node's
//! `:10250` (TLS) for `kubectl exec` (the WebSocket streaming protocol, `v5.channel.k8s.io`) and
//! `kubectl logs`. It also forwards this host's loopback port to the API server, as kind maps one.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use lab::LabName;
use lab::plan::NodePlan;
use lab::state::{self, LabState};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message;

use crate::lab_control_plane::API_PORT;

/// The kubelet API's port, as the kubelet's.
pub const KUBELET_PORT: u16 = 10250;
/// How often each node's Lease is renewed (the kubelet's default).
const LEASE_RENEW: Duration = Duration::from_secs(10);

/// The kubelet process's log.
pub fn log_file(lab: &LabName) -> PathBuf {
    state::dir(lab).join("kubelet.log")
}

/// Runs until killed (`lab down`).
pub fn run(lab: &LabName) -> Result<()> {
    let st = state::load(lab)?;
    let port = st.plan.config.control_plane.as_ref().map(|c| c.api_port).ok_or_else(|| anyhow!("lab {lab} has no control plane"))?;
    std::fs::write(lab::daemon::kubelet_pid_file(lab), std::process::id().to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(serve(lab.clone(), st, port))
}

fn now() -> String {
    lab::daemon::utc_now()
}

async fn serve(lab: LabName, st: LabState, port: u16) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.with_context(|| format!("listening on 127.0.0.1:{port}"))?;
    let apiserver = SocketAddr::new(IpAddr::V4(st.plan.control_plane_ip()), API_PORT);
    tokio::spawn(forward(listener, st.plan.control_plane_netns(), apiserver));
    let kubeconfig = kube::config::Kubeconfig::read_from(crate::lab_control_plane::kubeconfig_path(&lab))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await?;
    let client = kube::Client::try_from(config)?;
    for node in &st.plan.nodes {
        post_node_status(&client, node).await.with_context(|| format!("posting node {}'s status", node.name))?;
        renew_lease(&client, &node.name).await.with_context(|| format!("renewing node {}'s lease", node.name))?;
        serve_kubelet_api(&lab, node).with_context(|| format!("serving the kubelet API of {}", node.name))?;
    }
    tokio::spawn(heartbeat(client.clone(), st.plan.nodes.clone()));
    println!("ready");
    let changed = Arc::new(tokio::sync::Notify::new());
    let stores = agent::source::Stores::start_with_pod_objects(&client, &changed);
    stores.ready().await.map_err(|e| anyhow!(e))?;
    let exe = std::env::current_exe()?;
    loop {
        match stores.snapshot() {
            Ok(cluster) => {
                let (l, e) = (lab.clone(), exe.clone());
                match tokio::task::spawn_blocking(move || lab::change::sync(&l, &cluster, &e)).await {
                    Ok(Ok(c)) if c.added.len() + c.removed.len() + c.updated.len() > 0 => {
                        eprintln!("{}: pods made {:?}, removed {:?}, changed {:?}", now(), c.added, c.removed, c.updated)
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => eprintln!("{}: syncing the lab: {e}", now()),
                    Err(e) => eprintln!("{}: syncing the lab: {e}", now()),
                }
                if let Err(e) = write_back(&client, &lab, &stores).await {
                    eprintln!("{}: writing pod status: {e:#}", now());
                }
            }
            Err(e) => eprintln!("{}: the API server's objects: {e}", now()),
        }
        changed.notified().await;
        // A burst of events (a Deployment's pods) is one sync.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Forwards each connection to `127.0.0.1:port` on this host to the API server, from a socket
/// made in the control-plane namespace.
async fn forward(listener: tokio::net::TcpListener, netns: String, apiserver: SocketAddr) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else { continue };
        let ns = netns.clone();
        tokio::spawn(async move {
            let connected =
                tokio::task::spawn_blocking(move || dataplane::netns::run_in(&dataplane::netns::path_of(&ns), move || std::net::TcpStream::connect(apiserver)))
                    .await;
            let Ok(Ok(Ok(upstream))) = connected else { return };
            let _ = upstream.set_nonblocking(true);
            let Ok(mut upstream) = tokio::net::TcpStream::from_std(upstream) else { return };
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
    }
}

/// The Node's status as a kubelet posts it: addresses, capacity, Ready, the kubelet port, and
/// that its kubelet takes the API server's WebSocket streams itself.
fn node_status(node: &NodePlan) -> Value {
    let resources = json!({"cpu": "2", "memory": "4Gi", "pods": "110", "ephemeral-storage": "20Gi"});
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
    let mut addresses: Vec<Value> = node.internal_ips().iter().map(|ip| json!({"type": "InternalIP", "address": ip.to_string()})).collect();
    addresses.push(json!({"type": "Hostname", "address": node.name}));
    json!({"status": {
        "addresses": addresses,
        "capacity": resources, "allocatable": resources,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "podnet lab node agent is posting ready status",
                        "lastHeartbeatTime": now(), "lastTransitionTime": now()}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": KUBELET_PORT}},
        "declaredFeatures": ["ExtendWebSocketsToKubelet"],
        "nodeInfo": {"kubeletVersion": "v1.37.2", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": std::env::consts::ARCH.replace("x86_64", "amd64"),
                     "containerRuntimeVersion": "podnet://lab", "kernelVersion": kernel, "osImage": "podnet lab node", "machineID": "", "systemUUID": "", "bootID": ""}
    }})
}

async fn post_node_status(client: &kube::Client, node: &NodePlan) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes.patch_status(&node.name, &PatchParams::default(), &Patch::Merge(node_status(node))).await?;
    Ok(())
}

async fn renew_lease(client: &kube::Client, node: &str) -> Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": node},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": lab::daemon::utc_now_micros()}});
    leases.patch(node, &PatchParams::apply("podnet-lab-kubelet").force(), &Patch::Apply(lease)).await?;
    Ok(())
}

/// Renews every node's Lease, and posts Ready again should the node controller have marked a
/// node otherwise (after this process was down a while).
async fn heartbeat(client: kube::Client, nodes: Vec<NodePlan>) {
    let api: Api<Node> = Api::all(client.clone());
    loop {
        tokio::time::sleep(LEASE_RENEW).await;
        for node in &nodes {
            if let Err(e) = renew_lease(&client, &node.name).await {
                eprintln!("{}: node {}: renewing its lease: {e:#}", now(), node.name);
            }
            let ready = api
                .get_status(&node.name)
                .await
                .ok()
                .and_then(|n| n.status?.conditions?.into_iter().find(|c| c.type_ == "Ready"))
                .is_some_and(|c| c.status == "True");
            if !ready && let Err(e) = post_node_status(&client, node).await {
                eprintln!("{}: node {}: posting its status: {e:#}", now(), node.name);
            }
        }
    }
}

/// The status a kubelet writes for a running pod with `ip` on `node`.
fn pod_status(pod: &Pod, ips: &[std::net::IpAddr], host_ips: &[std::net::IpAddr], ready: bool, started: &str) -> Value {
    let flag = |b: bool| if b { "True" } else { "False" };
    let condition = |t: &str, status: &str| json!({"type": t, "status": status, "lastTransitionTime": started});
    let containers: Vec<Value> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            json!({"name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "", "ready": ready, "started": true, "restartCount": 0,
                   "containerID": format!("podnet://{}", c.name), "state": {"running": {"startedAt": started}}})
        })
        .collect();
    // Every address, primary first (`podIPs`; `podIP` is the first), as the kubelet posts them.
    let listed = |all: &[std::net::IpAddr]| -> Vec<Value> { all.iter().map(|i| json!({"ip": i.to_string()})).collect() };
    json!({"status": {
        "phase": "Running",
        "hostIP": host_ips.first().map(ToString::to_string), "hostIPs": listed(host_ips),
        "podIP": ips.first().map(ToString::to_string), "podIPs": listed(ips),
        "startTime": started,
        "conditions": [condition("PodReadyToStartContainers", "True"), condition("Initialized", "True"), condition("Ready", flag(ready)),
                       condition("ContainersReady", flag(ready)), condition("PodScheduled", "True")],
        "containerStatuses": containers,
    }})
}

/// Writes each lab pod's status where the API server's differs, and removes the Pods being
/// deleted whose pod the lab has taken down (what the kubelet does once containers stopped).
async fn write_back(client: &kube::Client, lab: &LabName, stores: &agent::source::Stores) -> Result<()> {
    let st = state::load(lab)?;
    let node_ips: BTreeMap<&str, Vec<std::net::IpAddr>> = st.plan.nodes.iter().map(|n| (n.name.as_str(), n.internal_ips())).collect();
    for pod in stores.pods() {
        let (Some(ns), Some(name)) = (pod.metadata.namespace.as_deref(), pod.metadata.name.as_deref()) else { continue };
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else { continue };
        let Some(host_ips) = node_ips.get(node) else { continue };
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let ours = st.plan.pods.iter().position(|p| p.namespace == ns && p.name == name);
        if pod.metadata.deletion_timestamp.is_some() {
            if ours.is_none() {
                let params = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions { uid: pod.metadata.uid.clone(), resource_version: None }),
                    ..Default::default()
                };
                let _ = api.delete(name, &params).await;
            }
            continue;
        }
        let Some(i) = ours else { continue };
        let (ips, ready) = (st.pod_addresses(i), st.plan.pods[i].ready);
        let status = pod.status.as_ref();
        let api_ready = status.and_then(|s| s.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")).is_some_and(|c| c.status == "True");
        let api_ips: Vec<String> = status.and_then(|s| s.pod_ips.as_ref()).into_iter().flatten().map(|p| p.ip.clone()).collect();
        let current = status.is_some_and(|s| s.phase.as_deref() == Some("Running"))
            && api_ips == ips.iter().map(ToString::to_string).collect::<Vec<_>>()
            && api_ready == ready;
        if current {
            continue;
        }
        let started = status
            .and_then(|s| s.start_time.as_ref())
            .and_then(|t| serde_json::to_value(t).ok())
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(now);
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(pod_status(&pod, &ips, host_ips, ready, &started)))
            .await
            .with_context(|| format!("pod {ns}/{name}"))?;
    }
    Ok(())
}

/// A TLS acceptor with a self-signed certificate for the node (the API server does not check
/// kubelet certificates unless told to, as in kind).
fn tls_acceptor(node: &NodePlan) -> Result<tokio_rustls::TlsAcceptor> {
    let certified = rcgen::generate_simple_self_signed(vec![node.ip.to_string(), node.name.clone()])?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves the kubelet API on `node`'s underlay address.
fn serve_kubelet_api(lab: &LabName, node: &NodePlan) -> Result<()> {
    let addr = SocketAddr::new(IpAddr::V4(node.ip), KUBELET_PORT);
    let listener = dataplane::netns::run_in(&dataplane::netns::path_of(&node.netns), move || {
        let l = std::net::TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        Ok::<_, std::io::Error>(l)
    })??;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let acceptor = tls_acceptor(node)?;
    let (lab, node) = (lab.clone(), node.name.clone());
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else { continue };
            let (acceptor, lab, node) = (acceptor.clone(), lab.clone(), node.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(conn).await else { return };
                let service = hyper::service::service_fn(move |req| answer(req, lab.clone(), node.clone()));
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).with_upgrades().await;
            });
        }
    });
    Ok(())
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.into())));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

async fn answer(req: Request<Incoming>, lab: LabName, node: String) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = req.uri().path().trim_start_matches('/').to_owned();
    let parts: Vec<&str> = path.split('/').collect();
    Ok(match parts.as_slice() {
        ["healthz"] => text(StatusCode::OK, "ok"),
        ["containerLogs", ns, pod, container] => logs(&lab, &node, ns, pod, container),
        ["exec", ns, pod, _container] | ["exec", ns, pod, _, _container] => {
            let (ns, pod) = ((*ns).to_owned(), (*pod).to_owned());
            exec(req, &lab, &node, &ns, &pod)
        }
        _ => text(StatusCode::NOT_FOUND, format!("podnet's kubelet API has no {path}")),
    })
}

/// The lab pod `ns/name` on `node`, and its namespace.
fn find_pod(lab: &LabName, node: &str, ns: &str, name: &str) -> Result<lab::PodPlan, Response<Full<Bytes>>> {
    let st = state::load(lab).map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    st.plan
        .pods
        .into_iter()
        .find(|p| p.namespace == ns && p.name == name && p.node == node)
        .ok_or_else(|| text(StatusCode::NOT_FOUND, format!("pod {ns}/{name} is not running on node {node}")))
}

/// A lab pod runs no container image: its "log" says what serves in its namespace.
fn logs(lab: &LabName, node: &str, ns: &str, name: &str, container: &str) -> Response<Full<Bytes>> {
    match find_pod(lab, node, ns, name) {
        Ok(pod) => {
            let ports: Vec<String> = pod.ports.iter().map(|p| format!("{}/{}", p.port, p.protocol.as_str())).collect();
            let what = if ports.is_empty() { "no declared ports".to_owned() } else { format!("the echo server on {}", ports.join(", ")) };
            text(StatusCode::OK, format!("podnet lab: container {container} of pod {ns}/{name} on {node} (network namespace {}): {what}\n", pod.netns))
        }
        Err(r) => r,
    }
}

/// The options of an exec request (`?command=...&stdin=true&tty=true`).
struct ExecOptions {
    command: Vec<String>,
    stdin: bool,
    tty: bool,
}

fn exec_options(query: &str) -> ExecOptions {
    let mut o = ExecOptions { command: Vec::new(), stdin: false, tty: false };
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let on = v == "true" || v == "1";
        match k.as_ref() {
            "command" => o.command.push(v.into_owned()),
            "input" | "stdin" => o.stdin = on,
            "tty" => o.tty = on,
            _ => {}
        }
    }
    o
}

/// The streaming protocols podnet's kubelet speaks, best first: v5 adds closing stdin.
const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

fn exec(req: Request<Incoming>, lab: &LabName, node: &str, ns: &str, name: &str) -> Response<Full<Bytes>> {
    let pod = match find_pod(lab, node, ns, name) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let options = exec_options(req.uri().query().unwrap_or(""));
    if options.command.is_empty() {
        return text(StatusCode::BAD_REQUEST, "you must specify at least one command for the container");
    }
    let header = |h: &str| req.headers().get(h).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let offered = header("sec-websocket-protocol");
    let offered: Vec<&str> = offered.split(',').map(str::trim).collect();
    let Some(protocol) = PROTOCOLS.iter().find(|p| offered.contains(p)) else {
        return text(StatusCode::BAD_REQUEST, format!("podnet's kubelet streams over WebSocket ({}) only; offered: {offered:?}", PROTOCOLS.join(", ")));
    };
    let key = header("sec-websocket-key");
    if !header("upgrade").eq_ignore_ascii_case("websocket") || key.is_empty() {
        return text(StatusCode::BAD_REQUEST, "exec needs a WebSocket upgrade");
    }
    let v5 = *protocol == PROTOCOLS[0];
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else { return };
        let ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(upgraded), tokio_tungstenite::tungstenite::protocol::Role::Server, None).await;
        run_exec(ws, pod.netns, options, v5).await;
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    let value = |s: &str| hyper::header::HeaderValue::from_str(s).unwrap_or(hyper::header::HeaderValue::from_static(""));
    h.insert(hyper::header::UPGRADE, value("websocket"));
    h.insert(hyper::header::CONNECTION, value("Upgrade"));
    h.insert("sec-websocket-accept", value(&tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes())));
    h.insert("sec-websocket-protocol", value(protocol));
    r
}

/// The `metav1.Status` the error channel carries when the command ends.
fn exit_status(code: Option<i32>, failure: Option<String>) -> Value {
    match (code, failure) {
        (_, Some(message)) => json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError"}),
        (Some(0), None) => json!({"metadata": {}, "status": "Success"}),
        (code, None) => {
            let code = code.unwrap_or(137);
            json!({"metadata": {}, "status": "Failure", "message": format!("command terminated with non-zero exit code: exit status {code}"),
                   "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
        }
    }
}

/// A close with status 1000: client-go reads anything else as the stream failing.
fn normal_close() -> Message {
    use tokio_tungstenite::tungstenite::protocol::{CloseFrame, frame::coding::CloseCode};
    Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }))
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

/// Runs the command in the pod's namespace (`ip netns exec`: with the pod's resolv.conf and
/// hosts), channel 0 to its stdin, its stdout and stderr to channels 1 and 2 (both to 1 with a
/// terminal), then its exit on channel 3.
async fn run_exec<S>(ws: tokio_tungstenite::WebSocketStream<S>, netns: String, options: ExecOptions, v5: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut incoming) = ws.split();
    let mut command = tokio::process::Command::new("ip");
    command
        .args(["netns", "exec", &netns])
        .args(&options.command)
        .stdin(if options.stdin { std::process::Stdio::piped() } else { std::process::Stdio::null() })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            let status = exit_status(None, Some(format!("running {:?}: {e}", options.command)));
            let _ = sink.send(frame(3, status.to_string().as_bytes())).await;
            let _ = sink.send(normal_close()).await;
            return;
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(16);
    let pump = |mut from: Box<dyn tokio::io::AsyncRead + Unpin + Send>, channel: u8, tx: tokio::sync::mpsc::Sender<Message>| {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = from.read(&mut buf).await {
                if n == 0 || tx.send(frame(channel, &buf[..n])).await.is_err() {
                    break;
                }
            }
        })
    };
    let out = child.stdout.take().map(|o| pump(Box::new(o), 1, tx.clone()));
    let err = child.stderr.take().map(|e| pump(Box::new(e), if options.tty { 1 } else { 2 }, tx.clone()));
    drop(tx);
    let mut stdin = child.stdin.take();
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
        sink
    });
    let reader = tokio::spawn(async move {
        while let Some(Ok(m)) = incoming.next().await {
            let Message::Binary(data) = m else {
                if matches!(m, Message::Close(_)) {
                    break;
                }
                continue;
            };
            match (data.first(), data.get(1)) {
                (Some(0), _) => {
                    if let Some(s) = stdin.as_mut()
                        && s.write_all(&data[1..]).await.is_err()
                    {
                        stdin = None;
                    }
                }
                // v5: the client closed stdin.
                (Some(255), Some(0)) if v5 => stdin = None,
                _ => {} // resize (channel 4) and the rest: no terminal to resize
            }
        }
    });
    let code = child.wait().await.ok().and_then(|s| s.code());
    for task in [out, err].into_iter().flatten() {
        let _ = task.await;
    }
    reader.abort();
    if let Ok(mut sink) = writer.await {
        let _ = sink.send(frame(3, exit_status(code, None).to_string().as_bytes())).await;
        let _ = sink.send(normal_close()).await;
    }
}
