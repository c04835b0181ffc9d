//! `podnet lab check`: real connections across the lab, each held against what the lab should
//! do: pod to pod without NAT, node to its pods, Services through the proxy, the cluster DNS,
//! and NetworkPolicy (what the engine allows must answer, what it denies must time out).

use std::io::Read;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, anyhow};
use dataplane::netns;
use lab::LabName;
use lab::state;
use model::{ClusterState, Protocol};
use policy::{Connection, Endpoint, Evaluator};

/// How long a connection is given to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a connection NetworkPolicy denies is watched before it counts as dropped.
const DROPPED_AFTER: Duration = Duration::from_millis(1000);

/// One TCP exchange with a pod's echo server from inside a namespace: what the server saw.
pub(crate) fn probe(from_netns: &str, ip: IpAddr, port: u16, timeout: Duration) -> Result<serde_json::Value> {
    let addr = std::net::SocketAddr::from((ip, port));
    let text = netns::run_in(&netns::path_of(from_netns), move || -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        // Say something, so the echo server answers at once instead of waiting for a request.
        std::io::Write::write_all(&mut s, b"podnet lab check\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })??;
    Ok(serde_json::from_str(text.trim())?)
}

/// One HTTP/1.1 GET from inside a namespace: the response's status code.
fn http_probe(from_netns: &str, ip: IpAddr, port: u16, path: &str, timeout: Duration) -> Result<u16> {
    let addr = std::net::SocketAddr::from((ip, port));
    let request = format!("GET {path} HTTP/1.1\r\nHost: podnet-lab-check\r\nConnection: close\r\n\r\n");
    let text = netns::run_in(&netns::path_of(from_netns), move || -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        std::io::Write::write_all(&mut s, request.as_bytes())?;
        let mut head = [0u8; 64];
        let n = s.read(&mut head)?;
        Ok(String::from_utf8_lossy(&head[..n]).into_owned())
    })??;
    text.strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3)?.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP response: {:?}", text.lines().next().unwrap_or_default()))
}

/// A TCP connection from inside a namespace, accepted.
fn tcp_connect(from_netns: &str, ip: IpAddr, port: u16, timeout: Duration) -> Result<()> {
    let addr = std::net::SocketAddr::from((ip, port));
    netns::run_in(&netns::path_of(from_netns), move || std::net::TcpStream::connect_timeout(&addr, timeout).map(drop))??;
    Ok(())
}

/// Whether a failed probe is a connection nobody answered (what a policy drop looks like).
fn timed_out(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>().is_some_and(|e| matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock))
}

/// The NetworkPolicy verdicts the lab must show.
struct Verdicts<'a> {
    view: &'a ClusterState,
    evaluator: Evaluator<'a>,
}

impl Verdicts<'_> {
    /// Pod `from` (an index of the lab's pods) to an address: allowed, or why not.
    fn judge(&self, from: usize, to: IpAddr, port: u16, protocol: Protocol) -> Result<(), String> {
        let to_pod = self.view.pods.iter().find(|p| !p.host_network && p.ips.contains(&to));
        let c = Connection { from: Endpoint::Pod(&self.view.pods[from]), to: to_pod.map_or(Endpoint::External(to), Endpoint::Pod), port, protocol };
        let e = self.evaluator.explain(&c);
        if e.allowed { Ok(()) } else { Err(e.denial()) }
    }
}

/// One pod-to-pod check, run in parallel with the others.
struct PodProbe {
    what: String,
    netns: String,
    client_ip: Option<IpAddr>,
    ip: IpAddr,
    port: u16,
    verdict: Result<(), String>,
}

/// `✓`/`✗` lines and the count of failures.
struct Report {
    failures: usize,
}

impl Report {
    fn line(&mut self, ok: bool, text: String) {
        if !ok {
            self.failures += 1;
        }
        outln!(" {} {text}", if ok { "✓" } else { "✗" });
    }

    /// A probe of a connection the policies deny: it must time out, not answer and not be reset.
    fn denied(&mut self, what: &str, probed: Result<String>, why: &str) {
        match probed {
            Err(e) if timed_out(&e) => self.line(true, format!("{what}: dropped, as NetworkPolicy requires ({why})")),
            Err(e) => self.line(false, format!("{what}: {e}; NetworkPolicy denies it ({why}), so it must be dropped, never reset")),
            Ok(how) => self.line(false, format!("{what}: {how}, but NetworkPolicy denies it ({why})")),
        }
    }
}

pub(crate) fn check(lab: &LabName) -> Result<ExitCode> {
    crate::lab_cmd::need_root()?;
    let st = state::load(lab)?;
    lab::daemon::require_running(lab)?;
    let view = st.cluster_view();
    let policies = node::compile_policies(&view);
    let verdicts = Verdicts { view: &view, evaluator: Evaluator::new(&view, &policies) };
    let pods: Vec<(usize, &lab::PodPlan)> = st.plan.pods.iter().enumerate().filter(|(_, p)| !p.host_network).collect();
    // Echo servers answer the TCP probes (the cluster DNS's and the ingress controller's pods
    // have their own checks: their ports are their servers', not echo servers).
    let servers: Vec<(usize, &lab::PodPlan, u16)> = pods
        .iter()
        .filter(|(_, p)| !lab::system::is_dns_pod(p) && !lab::system::is_ingress_controller_pod(p))
        .filter_map(|(i, p)| p.ports.iter().find(|c| c.protocol == Protocol::Tcp).map(|c| (*i, *p, c.port)))
        .collect();
    if servers.is_empty() {
        outln!("No pod declares a TCP port: nothing to connect to.");
        return Ok(ExitCode::SUCCESS);
    }
    let mut report = Report { failures: 0 };
    outln!("Connectivity in lab \"{lab}\" (real TCP connections to the pods' echo servers; {} NetworkPolicies):", policies.policies.len());
    // Every pod reaches a pod on another node (or its own, with one node), and the server sees
    // the client's pod IP: no NAT. Where a policy denies the pair, the connection must time out.
    // In a dual-stack lab, every check of addresses runs in both families.
    let families = st.plan.config.ip_family.families();
    let mut probes = Vec::new();
    for (v6, (i, client)) in families.iter().flat_map(|v6| pods.iter().map(move |p| (*v6, p))) {
        let Some(cip) = st.pod_address(*i, v6) else { continue };
        // Spread the targets: the k-th client asks the k-th server on another node.
        let others: Vec<&(usize, &lab::PodPlan, u16)> = servers.iter().filter(|(_, s, _)| s.node != client.node).collect();
        let target = if others.is_empty() { servers.iter().find(|(j, _, _)| j != i) } else { Some(others[*i % others.len()]) };
        let Some(spread) = target else { continue };
        // A server the policies let this client reach, when the spread one is denied: both
        // answers and drops are checked.
        let reachable =
            |(j, _, port): &&(usize, &lab::PodPlan, u16)| st.pod_address(*j, v6).is_some_and(|ip| verdicts.judge(*i, ip, *port, Protocol::Tcp).is_ok());
        let allowed = others.iter().copied().filter(|t| t.0 != *i).find(reachable).or_else(|| servers.iter().filter(|t| t.0 != *i).find(reachable));
        let mut targets = vec![spread];
        targets.extend(allowed.filter(|a| a.0 != spread.0));
        for (j, server, port) in targets {
            let Some(sip) = st.pod_address(*j, v6) else { continue };
            probes.push(PodProbe {
                what: format!("{} ({}) → {} ({}, {})", client.key(), client.node, server.key(), server.node, std::net::SocketAddr::new(sip, *port)),
                netns: client.netns.clone(),
                client_ip: Some(cip),
                ip: sip,
                port: *port,
                verdict: verdicts.judge(*i, sip, *port, Protocol::Tcp),
            });
        }
    }
    // Agents on a node reach every pod on that node, whatever the policies say.
    for (v6, node) in families.iter().flat_map(|v6| st.plan.nodes.iter().map(move |n| (*v6, n))) {
        for (j, server, port) in servers.iter().filter(|(_, s, _)| s.node == node.name).take(1) {
            let Some(sip) = st.pod_address(*j, v6) else { continue };
            probes.push(PodProbe {
                what: format!("node {} → {} ({})", node.name, server.key(), std::net::SocketAddr::new(sip, *port)),
                netns: node.netns.clone(),
                client_ip: None,
                ip: sip,
                port: *port,
                verdict: Ok(()),
            });
        }
    }
    let results: Vec<Result<serde_json::Value>> = std::thread::scope(|s| {
        let handles: Vec<_> =
            probes.iter().map(|p| s.spawn(move || probe(&p.netns, p.ip, p.port, if p.verdict.is_ok() { ANSWER_TIMEOUT } else { DROPPED_AFTER }))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("the probe thread panicked")))).collect()
    });
    for (p, result) in probes.iter().zip(results) {
        match (&p.verdict, result) {
            (Ok(()), Ok(v)) => {
                let seen = v["client_ip"].as_str().unwrap_or_default().to_owned();
                match p.client_ip {
                    Some(cip) => {
                        let no_nat = seen == cip.to_string();
                        report.line(no_nat, format!("{}: answered, saw client {seen}{}", p.what, if no_nat { " (no NAT)" } else { " (NAT!)" }));
                    }
                    None => report.line(true, format!("{}: answered, saw client {seen}", p.what)),
                }
            }
            (Ok(()), Err(e)) => report.line(false, format!("{}: {e}", p.what)),
            (Err(why), result) => report.denied(&p.what, result.map(|v| format!("answered by {}", v["pod"].as_str().unwrap_or_default())), why),
        }
    }
    // The ingress controller's pods answer their health endpoint (ingress-nginx's /healthz on
    // 10254), from another node's pod.
    for (v6, (j, controller)) in families.iter().flat_map(|v6| pods.iter().filter(|(_, p)| lab::system::is_ingress_controller_pod(p)).map(move |p| (*v6, p))) {
        let Some(ip) = st.pod_address(*j, v6) else { continue };
        let client = pods.iter().find(|(_, p)| p.node != controller.node && !lab::system::is_ingress_controller_pod(p)).or(pods.first());
        let Some((ci, client)) = client else { continue };
        let what = format!(
            "{} ({}) → ingress controller {} ({})/healthz",
            client.key(),
            client.node,
            controller.key(),
            std::net::SocketAddr::new(ip, lab::system::INGRESS_METRICS_PORT)
        );
        match verdicts.judge(*ci, ip, lab::system::INGRESS_METRICS_PORT, Protocol::Tcp) {
            Ok(()) => match http_probe(&client.netns, ip, lab::system::INGRESS_METRICS_PORT, "/healthz", ANSWER_TIMEOUT) {
                Ok(status) => report.line(status == 200, format!("{what}: HTTP {status}")),
                Err(e) => report.line(false, format!("{what}: {e}")),
            },
            Err(why) => report.denied(
                &what,
                http_probe(&client.netns, ip, lab::system::INGRESS_METRICS_PORT, "/healthz", DROPPED_AFTER).map(|s| format!("HTTP {s}")),
                &why,
            ),
        }
    }
    check_services(&st, &pods, &verdicts, &mut report)?;
    check_dns(&st, &pods, &verdicts, &mut report)?;
    if report.failures > 0 {
        outln!("{} check(s) failed.", report.failures);
        return Ok(ExitCode::FAILURE);
    }
    outln!("All checks passed.");
    Ok(ExitCode::SUCCESS)
}

/// Services: from a pod, each ClusterIP's TCP ports reach one of its endpoints that the
/// policies let the pod reach, which sees the pod's own address (the node's proxy DNATs without
/// SNAT); without endpoints: rejected; with only denied endpoints: dropped.
fn check_services(st: &lab::state::LabState, pods: &[(usize, &lab::PodPlan)], verdicts: &Verdicts<'_>, report: &mut Report) -> Result<()> {
    let Some((i, client)) = pods.first() else { return Ok(()) };
    let view = lab::service_proxy::proxy_view(st);
    let node_plan = proxy::plan(&view, &client.node, &lab::service_proxy::proxy_config(st))?;
    let is_dns = |p: &proxy::plan::PortPlan| p.port.namespace == lab::system::SYSTEM_NAMESPACE && p.port.service == lab::system::DNS_SERVICE;
    let pod_ips: Vec<IpAddr> = (0..st.pod_ips.len()).flat_map(|j| st.pod_addresses(j)).collect();
    // Each ClusterIP of a port (one per family of a dual-stack Service), from the client's
    // address of that family.
    let ports = node_plan.ports.iter().filter(|p| p.port.protocol == Protocol::Tcp && !is_dns(p));
    for (p, vip) in ports.flat_map(|p| p.port.cluster_ips.iter().map(move |ip| (p, *ip))) {
        let Some(cip) = st.pod_address(*i, vip.is_ipv6()) else { continue };
        let what =
            format!("{} ({}) → Service {}/{} {}", client.key(), client.node, p.port.namespace, p.port.service, std::net::SocketAddr::new(vip, p.port.port));
        // The endpoints of the ClusterIP's family.
        let endpoints: Vec<&str> =
            p.cluster.iter().map(|e| e.addr.as_str()).filter(|e| e.parse::<std::net::SocketAddr>().is_ok_and(|a| a.is_ipv6() == vip.is_ipv6())).collect();
        // The endpoints the policies let this client reach, and why the others are denied.
        let mut allowed = Vec::new();
        let mut denied = Vec::new();
        for e in &endpoints {
            let parsed: Option<std::net::SocketAddr> = e.parse().ok();
            match parsed.map(|a| verdicts.judge(*i, a.ip(), a.port(), Protocol::Tcp)) {
                Some(Ok(())) | None => allowed.push(*e),
                Some(Err(why)) => denied.push(why),
            }
        }
        let timeout = if allowed.is_empty() { DROPPED_AFTER } else { ANSWER_TIMEOUT };
        // The ingress controller's Service: its pods speak HTTP(S), so a connection that is
        // accepted (and, on plain HTTP, answered) is the proof.
        if p.port.namespace == lab::system::INGRESS_NAMESPACE && p.port.service == lab::system::INGRESS_CONTROLLER {
            let probed = if p.port.port == 443 {
                tcp_connect(&client.netns, vip, p.port.port, timeout).map(|()| "accepted".to_owned())
            } else {
                http_probe(&client.netns, vip, p.port.port, "/", timeout).map(|s| format!("HTTP {s}"))
            };
            match (probed, allowed.is_empty() && !endpoints.is_empty()) {
                (probed, true) => report.denied(&what, probed, &denied.join("; ")),
                (Ok(how), false) => report.line(!endpoints.is_empty(), format!("{what}: {how} by the ingress controller")),
                (Err(e), false) => report.line(false, format!("{what}: {e}")),
            }
            continue;
        }
        // Endpoints off the lab's pods (a control-plane lab's `default/kubernetes`: the API
        // server): a connection they accept is the proof; they speak no echo.
        let off_pods = |e: &&str| e.parse::<std::net::SocketAddr>().is_ok_and(|a| !pod_ips.contains(&a.ip()));
        if !endpoints.is_empty() && endpoints.iter().all(off_pods) {
            match tcp_connect(&client.netns, vip, p.port.port, timeout) {
                Ok(()) => report.line(true, format!("{what}: accepted by {} (not a pod of the lab)", endpoints.join(", "))),
                Err(e) => report.line(false, format!("{what}: {e}")),
            }
            continue;
        }
        if !endpoints.is_empty() && allowed.is_empty() {
            report.denied(
                &what,
                probe(&client.netns, vip, p.port.port, timeout).map(|v| format!("answered by {}", v["pod"].as_str().unwrap_or_default())),
                &denied.join("; "),
            );
            continue;
        }
        match (probe(&client.netns, vip, p.port.port, timeout), endpoints.is_empty()) {
            (Ok(v), false) => {
                let (ip, seen) = (v["ip"].as_str().unwrap_or_default(), v["client_ip"].as_str().unwrap_or_default());
                let port = v["port"].as_u64().unwrap_or_default();
                // A pod that reaches itself through its Service is masqueraded (hairpin, as
                // kube-proxy does), so that its reply comes back through the node.
                let hairpin = ip == cip.to_string();
                let endpoint = ip.parse::<IpAddr>().map(|a| std::net::SocketAddr::new(a, port as u16).to_string()).unwrap_or_default();
                let ok = allowed.contains(&endpoint.as_str()) && (seen == cip.to_string() || hairpin);
                let note = if hairpin { " (hairpin: itself, masqueraded)" } else { "" };
                report.line(ok, format!("{what}: answered by {} ({endpoint}), saw client {seen}{note}", v["pod"].as_str().unwrap_or_default()));
            }
            // Some endpoints allowed, some denied: the proxy may have picked a denied one.
            (Err(e), false) if timed_out(&e) && !denied.is_empty() => {
                report.line(true, format!("{what}: dropped: the proxy chose an endpoint NetworkPolicy denies ({})", denied.join("; ")))
            }
            (Err(e), true) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused) => {
                report.line(true, format!("{what}: no endpoints, rejected"));
            }
            (Ok(_), true) => report.line(false, format!("{what}: answered without endpoints")),
            (Err(e), _) => report.line(false, format!("{what}: {e}")),
        }
    }
    Ok(())
}

/// Cluster DNS: from a pod the policies let reach every DNS pod, every Service's name resolves
/// to its ClusterIP through kube-dns.
fn check_dns(st: &lab::state::LabState, pods: &[(usize, &lab::PodPlan)], verdicts: &Verdicts<'_>, report: &mut Report) -> Result<()> {
    let dns_pods: Vec<IpAddr> = st.plan.pods.iter().enumerate().filter(|(_, p)| lab::system::is_dns_pod(p)).flat_map(|(j, _)| st.pod_addresses(j)).collect();
    let may_ask = |i: usize| dns_pods.iter().all(|&d| verdicts.judge(i, d, 53, Protocol::Udp).is_ok());
    let Some((_, client)) = pods.iter().find(|(i, _)| may_ask(*i)) else {
        if !pods.is_empty() {
            report.line(true, "DNS: not checked: NetworkPolicy denies every pod's DNS queries".into());
        }
        return Ok(());
    };
    let dns_ip = lab::system::dns_cluster_ip(&st.plan.config);
    for svc in st.services.iter().filter(|s| s.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()).is_some_and(|ip| ip != "None")) {
        let (ns, name) = (svc.metadata.namespace.clone().unwrap_or_default(), svc.metadata.name.clone().unwrap_or_default());
        // A record for its IPv4 ClusterIP, AAAA for its IPv6 one.
        let cluster_ips = svc.spec.as_ref().and_then(|s| s.cluster_ips.clone()).unwrap_or_default();
        for want in cluster_ips.iter().map(|ip| ip.parse::<IpAddr>()) {
            let want = want?;
            let fqdn = format!("{name}.{ns}.svc.{}.", lab::system::CLUSTER_DOMAIN);
            let (asked, v6) = (fqdn.clone(), want.is_ipv6());
            let answer = netns::run_in(&netns::path_of(&client.netns), move || dns::client::lookup((dns_ip, 53).into(), &asked, v6, Duration::from_secs(2)))?;
            let kind = if v6 { "AAAA" } else { "A" };
            match answer {
                Ok((rcode, ips)) => report.line(ips.contains(&want), format!("{} → DNS {dns_ip}: {fqdn} {kind} → {rcode} {ips:?}", client.key())),
                Err(e) => report.line(false, format!("{} → DNS {dns_ip}: {fqdn} {kind}: {e}", client.key())),
            }
        }
    }
    Ok(())
}
