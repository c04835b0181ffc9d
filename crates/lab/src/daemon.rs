//! The lab process: one long-lived process per lab that serves every pod's declared ports and
//! runs every node's service proxy.
//! A socket stays in the namespace it was created in, so one process on one thread serves all
//! pods: each listener is bound on a short-lived thread that entered the pod's namespace.

use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use dataplane::netns;
use model::Protocol;

use crate::echo::{self, Identity};
use crate::plan::PodPlan;
use crate::service_proxy::Proxies;
use crate::state::{self, LabState};

enum Bound {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

/// A non-blocking TCP listener on `port` of every address of a pod's (or node's) namespace.
pub(crate) fn tcp_listener_in(netns_name: &str, port: u16) -> io::Result<std::net::TcpListener> {
    netns::run_in(&netns::path_of(netns_name), move || {
        let l = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))?;
        l.set_nonblocking(true)?;
        Ok(l)
    })?
}

/// A non-blocking UDP socket on `port` of every address of a pod's namespace.
pub(crate) fn udp_socket_in(netns_name: &str, port: u16) -> io::Result<std::net::UdpSocket> {
    netns::run_in(&netns::path_of(netns_name), move || {
        let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))?;
        s.set_nonblocking(true)?;
        Ok(s)
    })?
}

fn bind(netns_name: &str, port: u16, protocol: Protocol) -> io::Result<Bound> {
    match protocol {
        Protocol::Tcp => tcp_listener_in(netns_name, port).map(Bound::Tcp),
        _ => udp_socket_in(netns_name, port).map(Bound::Udp),
    }
}

fn identity(pod: &PodPlan, ip: Ipv4Addr, port: u16, protocol: Protocol) -> Identity {
    Identity {
        pod: pod.key(),
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        ip: ip.to_string(),
        node: pod.node.clone(),
        port,
        protocol: protocol.as_str(),
    }
}

/// Where `lab apply` / `lab delete` tell the lab process to reload.
pub fn control_socket(lab: &str) -> std::path::PathBuf {
    state::dir(lab).join("control.sock")
}

/// A listener's key: the same namespace, port and protocol is the same socket.
type ListenerKey = (String, u16, Protocol);

/// Binds listeners for every port of every attached pod not served yet, and stops those whose
/// pod or port is gone.
fn sync_listeners(st: &LabState, running: &mut std::collections::BTreeMap<ListenerKey, tokio::task::JoinHandle<()>>) -> io::Result<()> {
    let mut wanted = std::collections::BTreeSet::new();
    for (pod, ip) in st.plan.pods.iter().zip(&st.pod_ips) {
        let Some(ip) = *ip else { continue };
        if crate::system::is_dns_pod(pod) || crate::system::is_ingress_controller_pod(pod) {
            continue; // served by the cluster DNS, or the ingress controller
        }
        for port in &pod.ports {
            if port.protocol == Protocol::Sctp {
                // This kernel has no SCTP sockets (EPROTONOSUPPORT), so there is nothing to listen with.
                eprintln!("{}: {}/SCTP: not served (no SCTP sockets on this kernel)", pod.key(), port.port);
                continue;
            }
            let key = (pod.netns.clone(), port.port, port.protocol);
            wanted.insert(key.clone());
            if running.contains_key(&key) {
                continue;
            }
            let id = Arc::new(identity(pod, ip, port.port, port.protocol));
            let task = match bind(&pod.netns, port.port, port.protocol) {
                Ok(Bound::Tcp(l)) => tokio::spawn(echo::serve_tcp(tokio::net::TcpListener::from_std(l)?, id)),
                Ok(Bound::Udp(s)) => tokio::spawn(echo::serve_udp(tokio::net::UdpSocket::from_std(s)?, id)),
                // hostNetwork pods share their node's ports: the first one wins, as on a node.
                Err(e) => {
                    eprintln!("{}: {}/{}: {e}", pod.key(), port.port, port.protocol);
                    continue;
                }
            };
            running.insert(key, task);
        }
    }
    running.retain(|key, task| {
        let keep = wanted.contains(key);
        if !keep {
            task.abort();
        }
        keep
    });
    Ok(())
}

/// Serves the lab's pods until killed. Prints `ready` on stdout once every port listens; then
/// answers `reload` on the control socket by re-reading the state.
pub fn run(lab: &str) -> io::Result<()> {
    let st: LabState = state::load(lab)?;
    std::fs::write(state::pid_file(lab), std::process::id().to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let lab = lab.to_owned();
    rt.block_on(async move {
        let mut running = std::collections::BTreeMap::new();
        sync_listeners(&st, &mut running)?;
        let mut cluster_dns = crate::cluster_dns::ClusterDns::new(&st);
        cluster_dns.sync(&st)?;
        let mut ingress = crate::ingress_controller::IngressControllers::default();
        ingress.sync(&st)?;
        let proxies = Arc::new(Mutex::new(Proxies::default()));
        sync_proxies(&st, &mut lock(&proxies))?;
        serve_proxy_endpoints(&st, &proxies)?;
        let mut last = st;
        let sock = control_socket(&lab);
        let _ = std::fs::remove_file(&sock);
        let control = tokio::net::UnixListener::bind(&sock)?;
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "ready");
        let _ = out.flush();
        drop(out);
        let mut check = tokio::time::interval(SYNC_PERIOD);
        loop {
            let accepted = tokio::select! {
                a = control.accept() => a,
                _ = check.tick() => {
                    // Our tables changed behind our back (flushed by hand, edited): heal them.
                    let mut proxies = lock(&proxies);
                    if !proxies.intact(&last) {
                        eprintln!("proxy: a node's table differs from what was applied; re-syncing");
                        if let Err(e) = sync_proxies(&last, &mut proxies) {
                            eprintln!("proxy: {e}");
                        }
                    }
                    continue;
                }
            };
            let Ok((mut conn, _)) = accepted else { continue };
            use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
            let (r, mut w) = conn.split();
            let mut line = String::new();
            let _ = tokio::io::BufReader::new(r).read_line(&mut line).await;
            let reply = match line.trim() {
                "reload" => match state::load(&lab).and_then(|st| {
                    sync_listeners(&st, &mut running)?;
                    cluster_dns.sync(&st)?;
                    ingress.sync(&st)?;
                    sync_proxies(&st, &mut lock(&proxies))?;
                    last = st;
                    Ok(())
                }) {
                    Ok(()) => "ok\n".to_owned(),
                    Err(e) => format!("error {e}\n"),
                },
                other => format!("error unknown command {other:?}\n"),
            };
            let _ = w.write_all(reply.as_bytes()).await;
        }
    })
}

/// How often the lab process checks that its nft tables are as it left them.
pub const SYNC_PERIOD: std::time::Duration = std::time::Duration::from_secs(2);

/// kube-proxy's ports: metrics, and health (`/healthz`, `/livez`).
pub const METRICS_PORT: u16 = 10249;
/// See [`METRICS_PORT`].
pub const HEALTHZ_PORT: u16 = 10256;
/// Health fails when a change waits longer than this: twice kube-proxy's default sync period.
const HEALTH_TIMEOUT_SECONDS: f64 = 60.0;

fn lock(proxies: &Mutex<Proxies>) -> MutexGuard<'_, Proxies> {
    proxies.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Serves each node's proxy metrics and health on the node's address, as kube-proxy does.
fn serve_proxy_endpoints(st: &LabState, proxies: &Arc<Mutex<Proxies>>) -> io::Result<()> {
    for node in &st.plan.nodes {
        for port in [METRICS_PORT, HEALTHZ_PORT] {
            let addr = (node.ip, port);
            let listener = netns::run_in(&netns::path_of(&node.netns), move || -> io::Result<std::net::TcpListener> {
                let l = std::net::TcpListener::bind(addr)?;
                l.set_nonblocking(true)?;
                Ok(l)
            })??;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let (proxies, name) = (Arc::clone(proxies), node.name.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((conn, _)) = listener.accept().await else { continue };
                    let (proxies, name) = (Arc::clone(&proxies), name.clone());
                    tokio::spawn(answer_probe(conn, proxies, name));
                }
            });
        }
    }
    Ok(())
}

/// One HTTP request to a node's proxy endpoints.
async fn answer_probe(mut conn: tokio::net::TcpStream, proxies: Arc<Mutex<Proxies>>, node: String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let path = String::from_utf8_lossy(&head).split_whitespace().nth(1).unwrap_or("/").to_owned();
    let (code, kind, body) = {
        let mut p = lock(&proxies);
        let (metrics, health) = p.status.entry(node).or_default();
        match path.split('?').next().unwrap_or("/") {
            "/metrics" => (200, "text/plain; version=0.0.4", metrics.render()),
            probe @ ("/healthz" | "/livez") => {
                let livez = probe == "/livez";
                let (code, body) = health.report(crate::service_proxy::unix_now(), HEALTH_TIMEOUT_SECONDS, true, livez);
                *metrics.probes.entry((if livez { "livez" } else { "healthz" }, code)).or_default() += 1;
                (code, "application/json", body)
            }
            _ => (404, "text/plain", "404 page not found\n".to_owned()),
        }
    };
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        _ => "Service Unavailable",
    };
    let response = format!("HTTP/1.1 {code} {reason}\r\nContent-Type: {kind}\r\nX-Content-Type-Options: nosniff\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    let _ = conn.write_all(response.as_bytes()).await;
}

/// Syncs every node's proxy, logging what each did.
fn sync_proxies(st: &LabState, proxies: &mut Proxies) -> io::Result<()> {
    for s in proxies.sync(st)? {
        eprintln!("proxy {}: {:?} sync, {} elements, {:.1} ms", s.node, s.synced, s.elements, s.seconds * 1e3);
    }
    Ok(())
}

/// Asks the lab process to pick up a changed state.
pub fn reload(lab: &str) -> io::Result<()> {
    use std::io::{BufRead, BufReader};
    let mut conn = std::os::unix::net::UnixStream::connect(control_socket(lab))?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    conn.write_all(b"reload\n")?;
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line)?;
    if line.trim() == "ok" { Ok(()) } else { Err(io::Error::other(format!("the lab process says: {}", line.trim()))) }
}

/// The lab process's log.
pub fn log_file(lab: &str) -> std::path::PathBuf {
    state::dir(lab).join("lab.log")
}

/// Whether the lab process recorded in the pid file is alive.
pub fn alive(lab: &str) -> bool {
    std::fs::read_to_string(state::pid_file(lab))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}
