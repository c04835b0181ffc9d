//! The lab process: one long-lived process per lab that serves every pod's declared ports and
//! runs every node's service proxy.
//! A socket stays in the namespace it was created in, so one process on one thread serves all
//! pods: each listener is bound on a short-lived thread that entered the pod's namespace.

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use dataplane::netns;
use model::Protocol;

use crate::echo::{self, Identity};
use crate::name::LabName;
use crate::plan::PodPlan;
use crate::service_proxy::{Proxies, ProxyStatus};
use crate::state::{self, LabState};

enum Bound {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

/// The wildcard addresses a pod with these addresses is served on: one socket per family, the
/// IPv6 one IPv6-only, so that every server sees its clients' addresses as they are (never as
/// IPv4-mapped IPv6) and knows which of the pod's addresses was asked.
fn wildcards(pod_ips: &[IpAddr]) -> Vec<IpAddr> {
    let mut out = Vec::with_capacity(2);
    if pod_ips.iter().any(IpAddr::is_ipv4) {
        out.push(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    }
    if pod_ips.iter().any(IpAddr::is_ipv6) {
        out.push(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    }
    out
}

/// A non-blocking socket of `kind` bound to `ip`:`port` in the calling thread's namespace.
fn bound_socket(ip: IpAddr, port: u16, kind: socket2::Type) -> io::Result<socket2::Socket> {
    let addr = SocketAddr::new(ip, port);
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), kind, None)?;
    if ip.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if kind == socket2::Type::STREAM {
        socket.set_reuse_address(true)?;
    }
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// A TCP listener on `ip`:`port`, with room for bursts: one echo thread serves every pod, so
/// bursts of new connections (a probe of every pair, a benchmark) queue up (std's is 128).
fn tcp_listener(ip: IpAddr, port: u16) -> io::Result<std::net::TcpListener> {
    let socket = bound_socket(ip, port, socket2::Type::STREAM)?;
    socket.listen(4096)?;
    Ok(socket.into())
}

fn udp_socket(ip: IpAddr, port: u16) -> io::Result<std::net::UdpSocket> {
    Ok(bound_socket(ip, port, socket2::Type::DGRAM)?.into())
}

/// Non-blocking TCP listeners on `port` of every address of a pod's (or node's) namespace, one
/// per family of `pod_ips`.
pub(crate) fn tcp_listeners_in(netns_name: &str, port: u16, pod_ips: &[IpAddr]) -> io::Result<Vec<std::net::TcpListener>> {
    let families = wildcards(pod_ips);
    netns::run_in(&netns::path_of(netns_name), move || families.iter().map(|ip| tcp_listener(*ip, port)).collect())?
}

/// Non-blocking UDP sockets on `port` of every address of a pod's namespace, one per family.
pub(crate) fn udp_sockets_in(netns_name: &str, port: u16, pod_ips: &[IpAddr]) -> io::Result<Vec<std::net::UdpSocket>> {
    let families = wildcards(pod_ips);
    netns::run_in(&netns::path_of(netns_name), move || families.iter().map(|ip| udp_socket(*ip, port)).collect())?
}

fn identity(pod: &PodPlan, ip: IpAddr, port: u16, protocol: Protocol) -> Identity {
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

/// Where a control-plane lab's kubelet process (`podnet lab kubelet`) records its pid.
pub fn kubelet_pid_file(lab: &LabName) -> std::path::PathBuf {
    state::dir(lab).join("kubelet.pid")
}

/// Stops a control-plane lab's kubelet process, if it runs.
pub fn stop_kubelet(lab: &LabName) {
    crate::up::stop_recorded(&kubelet_pid_file(lab), "kubelet", lab);
}

/// Where `lab apply` / `lab delete` tell the lab process to reload.
pub fn control_socket(lab: &LabName) -> std::path::PathBuf {
    state::dir(lab).join("control.sock")
}

/// A listener's key: the same namespace, port and protocol is the same socket.
type ListenerKey = (String, u16, Protocol);

/// A current-thread runtime on its own OS thread: one per component of the lab process, so
/// that one component's work (a proxy sync over 100 nodes, a DNS view rebuilt) never delays
/// another's serving, and a component that fails stops alone.
fn component_runtime(name: &str) -> io::Result<tokio::runtime::Handle> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let handle = rt.handle().clone();
    std::thread::Builder::new().name(name.to_owned()).spawn(move || rt.block_on(std::future::pending::<()>()))?;
    Ok(handle)
}

/// Every pod's echo servers, on their own runtime.
struct EchoServers {
    runtime: tokio::runtime::Handle,
    running: std::collections::BTreeMap<ListenerKey, Vec<tokio::task::JoinHandle<()>>>,
}

impl EchoServers {
    /// Binds listeners for every port of every attached pod not served yet (all of a pod's
    /// ports from one visit to its namespace), and stops those whose pod or port is gone.
    fn sync(&mut self, st: &LabState) {
        let mut wanted = std::collections::BTreeSet::new();
        for (i, pod) in st.plan.pods.iter().enumerate() {
            let ips = st.pod_addresses(i);
            if ips.is_empty() {
                continue;
            }
            if crate::system::is_dns_pod(pod) || crate::system::is_ingress_controller_pod(pod) {
                continue; // served by the cluster DNS, or the ingress controller
            }
            let mut missing = Vec::new();
            for port in &pod.ports {
                if port.protocol == Protocol::Sctp {
                    // This kernel has no SCTP sockets (EPROTONOSUPPORT), so there is nothing to listen with.
                    eprintln!("{}: {}/SCTP: not served (no SCTP sockets on this kernel)", pod.key(), port.port);
                    continue;
                }
                let key = (pod.netns.clone(), port.port, port.protocol);
                if wanted.insert(key.clone()) && !self.running.contains_key(&key) {
                    missing.push((port.port, port.protocol));
                }
            }
            if missing.is_empty() {
                continue;
            }
            let ports = missing.clone();
            let families: Vec<(IpAddr, IpAddr)> =
                wildcards(&ips).into_iter().filter_map(|w| Some((w, *ips.iter().find(|a| a.is_ipv6() == w.is_ipv6())?))).collect();
            let bound = netns::run_in(&netns::path_of(&pod.netns), move || {
                ports
                    .iter()
                    .map(|&(port, protocol)| families.iter().map(|&(w, ip)| Ok((ip, bind_here(w, port, protocol)?))).collect::<io::Result<Vec<_>>>())
                    .collect::<Vec<_>>()
            });
            let bound = match bound {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("{}: entering its namespace: {e}", pod.key());
                    continue;
                }
            };
            let _in_runtime = self.runtime.enter();
            for ((port, protocol), sockets) in missing.into_iter().zip(bound) {
                let spawn = |(ip, s): (IpAddr, Bound)| {
                    let id = Arc::new(identity(pod, ip, port, protocol));
                    match s {
                        Bound::Tcp(l) => Ok(tokio::spawn(echo::serve_tcp(tokio::net::TcpListener::from_std(l)?, id))),
                        Bound::Udp(u) => Ok(tokio::spawn(echo::serve_udp(tokio::net::UdpSocket::from_std(u)?, id))),
                    }
                };
                let tasks = match sockets.and_then(|s| s.into_iter().map(spawn).collect::<io::Result<Vec<_>>>()) {
                    Ok(tasks) => tasks,
                    // hostNetwork pods share their node's ports: the first one wins, as on a node.
                    Err(e) => {
                        eprintln!("{}: {port}/{protocol}: {e}", pod.key());
                        continue;
                    }
                };
                self.running.insert((pod.netns.clone(), port, protocol), tasks);
            }
        }
        self.running.retain(|key, tasks| {
            let keep = wanted.contains(key);
            if !keep {
                tasks.iter().for_each(tokio::task::JoinHandle::abort);
            }
            keep
        });
    }
}

/// Binds a non-blocking socket to the wildcard address `w` in the calling thread's namespace.
fn bind_here(w: IpAddr, port: u16, protocol: Protocol) -> io::Result<Bound> {
    Ok(match protocol {
        Protocol::Tcp => Bound::Tcp(tcp_listener(w, port)?),
        _ => Bound::Udp(udp_socket(w, port)?),
    })
}

/// A state for the proxy worker, and where it says how the sync went.
type ProxyRequest = (LabState, std::sync::mpsc::Sender<io::Result<()>>);

/// Every node's service proxy, on its own thread: syncs on request, and between requests checks
/// (one generation read per node) that nobody changed the tables behind its back. A panic in a
/// sync is caught, logged and answered with a full re-sync, not the end of the lab process.
fn proxy_worker(first: LabState, proxies: Proxies, requests: std::sync::mpsc::Receiver<ProxyRequest>) -> io::Result<()> {
    let mut proxies = proxies;
    let mut last = first;
    std::thread::Builder::new().name("proxy".into()).spawn(move || {
        loop {
            match requests.recv_timeout(SYNC_PERIOD) {
                Ok((st, reply)) => {
                    let done = guarded("proxy sync", || sync_proxies(&st, &mut proxies));
                    if done.is_err() {
                        proxies.forget_applied();
                    }
                    supervise_bgp(&st, &proxies);
                    last = st;
                    let _ = reply.send(done);
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    // Our tables changed behind our back (flushed by hand, edited): heal them.
                    let healed = guarded("proxy check", || {
                        let drifted = proxies.drifted(&last);
                        if drifted.is_empty() {
                            return Ok(());
                        }
                        eprintln!("proxy: the tables of {} differ from what was applied; re-syncing", drifted.join(", "));
                        sync_proxies(&last, &mut proxies)
                    });
                    if let Err(e) = healed {
                        eprintln!("proxy: {e}");
                        proxies.forget_applied();
                    }
                    // A BIRD that died is started again (its peers withdrew its routes).
                    supervise_bgp(&last, &proxies);
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    })?;
    Ok(())
}

/// Puts a UTC timestamp before every line the process writes to stderr (the lab's log): its
/// own messages, its components' and a panic's alike. stderr becomes a pipe read by a thread
/// that writes the stamped lines where stderr went before.
fn timestamp_stderr() -> io::Result<()> {
    use std::io::BufRead;
    use std::os::fd::AsFd;
    let log = std::fs::File::from(io::stderr().as_fd().try_clone_to_owned()?);
    let (read, write) = nix::unistd::pipe().map_err(io::Error::from)?;
    nix::unistd::dup2_stderr(&write).map_err(io::Error::from)?;
    drop(write);
    std::thread::Builder::new().name("log".into()).spawn(move || {
        let mut log = io::LineWriter::new(log);
        for line in io::BufReader::new(std::fs::File::from(read)).lines() {
            let Ok(line) = line else { return };
            let _ = writeln!(log, "{} {line}", utc_now());
        }
    })?;
    Ok(())
}

/// Now as RFC 3339 UTC with milliseconds (`2026-12-03T13:50:01.123Z`).
pub fn utc_now() -> String {
    let now = std::time::SystemTime::UNIX_EPOCH.elapsed().unwrap_or_default();
    rfc3339_utc(now.as_secs(), now.subsec_millis())
}

/// Now as Kubernetes' `MicroTime` writes it (`2026-12-03T13:50:01.123456Z`).
pub fn utc_now_micros() -> String {
    let now = std::time::SystemTime::UNIX_EPOCH.elapsed().unwrap_or_default();
    let seconds = rfc3339_utc(now.as_secs(), 0);
    format!("{}.{:06}Z", &seconds[..seconds.len() - 5], now.subsec_micros())
}

/// Unix seconds as a UTC date and time.
/// Unix seconds as the lab's logs write them (`2026-12-03T13:50:01.123Z`).
pub fn rfc3339_utc(secs: u64, millis: u32) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = gateway::server::civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Runs `f`, turning a panic into an error (logged with what was running).
fn guarded<T>(what: &str, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let why = panic.downcast_ref::<&str>().map(|s| (*s).to_owned()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
            eprintln!("{what} panicked: {why}");
            Err(io::Error::other(format!("{what} failed: {why}")))
        }
    }
}

/// The lab process's components, each serving on its own thread.
struct Components {
    echo: EchoServers,
    dns: crate::cluster_dns::ClusterDns,
    dns_runtime: tokio::runtime::Handle,
    ingress: crate::ingress_controller::IngressControllers,
    proxy: std::sync::mpsc::Sender<ProxyRequest>,
    /// `--encrypt wireguard`: each node's tunnel.
    tunnels: crate::wireguard::Tunnels,
    /// Pod, node and Service names by address, for the drop and flow logs.
    names: Arc<Mutex<crate::drops::Names>>,
}

impl Components {
    /// Brings every component to `st`; a component that fails is reported and the others still
    /// sync.
    fn sync(&mut self, st: &LabState) -> io::Result<()> {
        let mut failed = Vec::new();
        let started = std::time::Instant::now();
        *self.names.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = crate::drops::names(st);
        // The tunnels between nodes first (made, or given rotated keys): pods talk through them.
        guarded("WireGuard tunnels", || self.tunnels.sync(st)).unwrap_or_else(|e| failed.push(format!("WireGuard: {e}")));
        // The node rules first: a new pod that a NetworkPolicy selects is isolated before its
        // servers listen.
        let (tx, rx) = std::sync::mpsc::channel();
        let proxied = match self.proxy.send((st.clone(), tx)) {
            Ok(()) => rx.recv().unwrap_or_else(|_| Err(io::Error::other("the proxy worker is gone"))),
            Err(_) => Err(io::Error::other("the proxy worker is gone")),
        };
        proxied.unwrap_or_else(|e| failed.push(format!("proxy: {e}")));
        let rules = started.elapsed();
        guarded("echo servers", || {
            self.echo.sync(st);
            Ok(())
        })
        .unwrap_or_else(|e| failed.push(e.to_string()));
        let dns_runtime = self.dns_runtime.clone();
        guarded("cluster DNS", || self.dns.sync(st, &dns_runtime)).unwrap_or_else(|e| failed.push(format!("cluster DNS: {e}")));
        guarded("ingress controller", || self.ingress.sync(st)).unwrap_or_else(|e| failed.push(format!("ingress controller: {e}")));
        eprintln!("synced: node rules in {:.1} ms, everything in {:.1} ms", rules.as_secs_f64() * 1e3, started.elapsed().as_secs_f64() * 1e3);
        if failed.is_empty() { Ok(()) } else { Err(io::Error::other(failed.join("; "))) }
    }
}

/// Serves the lab's pods until killed. Prints `ready` on stdout once every port listens; then
/// answers `reload` on the control socket by re-reading the state.
pub fn run(lab: &LabName) -> io::Result<()> {
    timestamp_stderr()?;
    let st: LabState = state::load(lab)?;
    std::fs::write(state::pid_file(lab), std::process::id().to_string())?;
    let proxies = Proxies::default();
    let status = proxies.status();
    let (proxy_tx, proxy_rx) = std::sync::mpsc::channel();
    proxy_worker(st.clone(), proxies, proxy_rx)?;
    let mut components = Components {
        echo: EchoServers { runtime: component_runtime("echo")?, running: Default::default() },
        dns: crate::cluster_dns::ClusterDns::new(&st),
        dns_runtime: component_runtime("dns")?,
        ingress: crate::ingress_controller::IngressControllers::default(),
        proxy: proxy_tx,
        tunnels: Default::default(),
        names: Default::default(),
    };
    let flow_counts = Arc::new(Mutex::new(crate::drops::FlowCounts::default()));
    crate::drops::start(lab, &st, &components.names, &flow_counts)?;
    crate::drops::record_flows(lab, &st, &components.names, &flow_counts)?;
    components.sync(&st)?;
    serve_proxy_endpoints(&st, &status, &flow_counts, &component_runtime("proxy-http")?)?;
    let sock = control_socket(lab);
    let _ = std::fs::remove_file(&sock);
    let control = std::os::unix::net::UnixListener::bind(&sock)?;
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    drop(out);
    for conn in control.incoming() {
        let Ok(mut conn) = conn else { continue };
        use std::io::{BufRead, BufReader};
        let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(5)));
        let mut line = String::new();
        let _ = BufReader::new(&conn).read_line(&mut line);
        let reply = match line.trim() {
            "reload" => match state::load(lab).and_then(|st| components.sync(&st)) {
                Ok(()) => "ok\n".to_owned(),
                Err(e) => format!("error {e}\n"),
            },
            "ping" => "ok\n".to_owned(),
            other => format!("error unknown command {other:?}\n"),
        };
        let _ = conn.write_all(reply.as_bytes());
    }
    Ok(())
}

/// How often the lab process checks that its nft tables are as it left them.
pub const SYNC_PERIOD: std::time::Duration = std::time::Duration::from_secs(2);

/// kube-proxy's ports: metrics, and health (`/healthz`, `/livez`).
pub const METRICS_PORT: u16 = 10249;
/// See [`METRICS_PORT`].
pub const HEALTHZ_PORT: u16 = 10256;

fn lock(status: &Mutex<ProxyStatus>) -> MutexGuard<'_, ProxyStatus> {
    status.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Serves each node's proxy metrics and health on the node's address, as kube-proxy does.
fn serve_proxy_endpoints(
    st: &LabState,
    status: &Arc<Mutex<ProxyStatus>>,
    flows: &Arc<Mutex<crate::drops::FlowCounts>>,
    runtime: &tokio::runtime::Handle,
) -> io::Result<()> {
    let _in_runtime = runtime.enter();
    for node in &st.plan.nodes {
        for port in [METRICS_PORT, HEALTHZ_PORT] {
            let addr = (node.ip, port);
            let listener = netns::run_in(&netns::path_of(&node.netns), move || -> io::Result<std::net::TcpListener> {
                let l = std::net::TcpListener::bind(addr)?;
                l.set_nonblocking(true)?;
                Ok(l)
            })??;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let (status, flows, name) = (Arc::clone(status), Arc::clone(flows), node.name.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((conn, _)) = listener.accept().await else {
                        continue;
                    };
                    let (status, flows, name) = (Arc::clone(&status), Arc::clone(&flows), name.clone());
                    tokio::spawn(answer_probe(conn, status, flows, name));
                }
            });
        }
    }
    Ok(())
}

/// One HTTP request to a node's proxy endpoints.
async fn answer_probe(mut conn: tokio::net::TcpStream, status: Arc<Mutex<ProxyStatus>>, flows: Arc<Mutex<crate::drops::FlowCounts>>, node: String) {
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
    let flow_metrics = flows.lock().unwrap_or_else(std::sync::PoisonError::into_inner).render(&node);
    let (code, kind, body) = {
        let mut status = lock(&status);
        let (metrics, health) = status.entry(node).or_default();
        proxy::metrics::respond(metrics, health, &path, crate::service_proxy::unix_now(), &flow_metrics)
    };
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        _ => "Service Unavailable",
    };
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {kind}\r\nX-Content-Type-Options: nosniff\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(response.as_bytes()).await;
}

/// Keeps `--mode bgp`'s daemons running with what each node announces, logging what changed.
fn supervise_bgp(st: &LabState, proxies: &Proxies) {
    match guarded("BGP supervision", || crate::bgp::supervise(&st.plan, &proxies.external_addresses())) {
        Ok(done) => {
            for (who, what) in done.iter().filter(|(_, s)| *s != node::bgp::Supervised::Unchanged) {
                eprintln!("bgp {who}: BIRD {}", if *what == node::bgp::Supervised::Started { "started" } else { "reconfigured" });
            }
        }
        Err(e) => eprintln!("bgp: {e}"),
    }
}

/// Syncs every node's proxy, logging what each did.
fn sync_proxies(st: &LabState, proxies: &mut Proxies) -> io::Result<()> {
    for s in proxies.sync(st)? {
        let n = &s.synced;
        eprintln!("proxy {}: {} sync, {} elements, {:.1} ms", s.node, if n.full { "Full" } else { "Incremental" }, n.elements, n.seconds * 1e3);
        if n.stale_udp_flows > 0 {
            eprintln!("proxy {}: deleted {} stale UDP conntrack entries", s.node, n.stale_udp_flows);
        }
        if n.cut_connections > 0 {
            eprintln!("policy {}: cut the established connections of {} client/port/endpoint triple(s) the policies now deny", s.node, n.cut_connections);
        }
    }
    Ok(())
}

/// Asks the lab process to pick up a changed state.
pub fn reload(lab: &LabName) -> io::Result<()> {
    ask(lab, "reload", std::time::Duration::from_secs(60))
}

/// Says one line to the lab process and reads its answer.
fn ask(lab: &LabName, what: &str, wait: std::time::Duration) -> io::Result<()> {
    use std::io::{BufRead, BufReader};
    let mut conn = std::os::unix::net::UnixStream::connect(control_socket(lab)).map_err(|e| not_running(lab, &e.to_string()))?;
    conn.set_read_timeout(Some(wait))?;
    conn.write_all(format!("{what}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line)?;
    if line.trim() == "ok" { Ok(()) } else { Err(io::Error::other(format!("the lab process says: {}", line.trim()))) }
}

/// The lab process's log.
pub fn log_file(lab: &LabName) -> std::path::PathBuf {
    state::dir(lab).join("lab.log")
}

/// Whether the lab process recorded in the pid file is alive (and still the lab's: pids are
/// reused).
pub fn alive(lab: &LabName) -> bool {
    std::fs::read_to_string(state::pid_file(lab)).ok().and_then(|p| p.trim().parse::<u32>().ok()).is_some_and(|pid| is_lab_process(pid, "daemon", lab))
}

/// Whether `pid` is a running (not zombie) `podnet lab daemon --name <lab>`.
pub(crate) fn is_lab_process(pid: u32, command: &str, lab: &LabName) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let ours = args.windows(3).any(|w| w[0] == command.as_bytes() && w[1] == b"--name" && w[2] == lab.as_str().as_bytes());
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
        .unwrap_or(true);
    ours && !zombie && Path::new(&format!("/proc/{pid}")).exists()
}

fn not_running(lab: &LabName, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        format!("the lab process is not running ({why}); `podnet lab restart --name {lab}` starts it again from the saved state"),
    )
}

/// An error naming the fix unless the lab process is alive and answering.
pub fn require_running(lab: &LabName) -> io::Result<()> {
    if !alive(lab) {
        return Err(not_running(lab, "no process"));
    }
    ask(lab, "ping", std::time::Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_timestamps_are_rfc3339_utc() {
        assert_eq!(super::rfc3339_utc(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::rfc3339_utc(1_796_305_801, 123), "2026-12-03T13:50:01.123Z");
        assert_eq!(super::rfc3339_utc(951_782_400, 5), "2000-02-29T00:00:00.005Z");
    }
}
