//! The lab process: one long-lived process per lab that serves every pod's declared ports.
//! A socket stays in the namespace it was created in, so one process on one thread serves all
//! pods: each listener is bound on a short-lived thread that entered the pod's namespace.

use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

use dataplane::netns;
use model::Protocol;

use crate::echo::{self, Identity};
use crate::plan::PodPlan;
use crate::state::{self, LabState};

enum Bound {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

fn bind(netns_name: &str, port: u16, protocol: Protocol) -> io::Result<Bound> {
    netns::run_in(&netns::path_of(netns_name), move || -> io::Result<Bound> {
        let addr = (Ipv4Addr::UNSPECIFIED, port);
        Ok(match protocol {
            Protocol::Tcp => {
                let l = std::net::TcpListener::bind(addr)?;
                l.set_nonblocking(true)?;
                Bound::Tcp(l)
            }
            _ => {
                let s = std::net::UdpSocket::bind(addr)?;
                s.set_nonblocking(true)?;
                Bound::Udp(s)
            }
        })
    })?
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

/// Serves the lab's pods until killed. Prints `ready` on stdout once every port listens.
pub fn run(lab: &str) -> io::Result<()> {
    let st: LabState = state::load(lab)?;
    std::fs::write(state::pid_file(lab), std::process::id().to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        for (pod, ip) in st.plan.pods.iter().zip(&st.pod_ips) {
            let Some(ip) = *ip else { continue };
            for port in &pod.ports {
                if port.protocol == Protocol::Sctp {
                    eprintln!("{}: {}/SCTP: SCTP is not served by the echo server", pod.key(), port.port);
                    continue;
                }
                let id = Arc::new(identity(pod, ip, port.port, port.protocol));
                match bind(&pod.netns, port.port, port.protocol) {
                    Ok(Bound::Tcp(l)) => {
                        tokio::spawn(echo::serve_tcp(tokio::net::TcpListener::from_std(l)?, id));
                    }
                    Ok(Bound::Udp(s)) => {
                        tokio::spawn(echo::serve_udp(tokio::net::UdpSocket::from_std(s)?, id));
                    }
                    // hostNetwork pods share their node's ports: the first one wins, as on a node.
                    Err(e) => eprintln!("{}: {}/{}: {e}", pod.key(), port.port, port.protocol),
                }
            }
        }
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "ready");
        let _ = out.flush();
        drop(out);
        std::future::pending::<()>().await;
        Ok::<(), io::Error>(())
    })
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
