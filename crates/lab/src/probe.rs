//! `podnet lab probe`: one real new connection for every ordered pair of pods and port, all in
//! parallel, the way upstream's netpol e2e suite probes (agnhost connect): a TCP handshake, or
//! a UDP request and its reply. NetworkPolicy drops and never resets, so a destination that
//! answers in any way (an accepted connection, a reply, a reset or a port-unreachable from a
//! pod that does not serve that port) shows the packet got through; only silence until the
//! timeout is "blocked".

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use dataplane::netns;
use model::Protocol;

/// One connection to try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// Address (a pod IP or a ClusterIP).
    pub ip: Ipv4Addr,
    /// Port.
    pub port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Through a Service with several endpoints: the pod that must answer (its echo server
    /// names its address), and how many connections to open at once so that the proxy's random
    /// choice lands on it at least once (with 10 per endpoint, missing it has odds e^-10).
    pub answered_by: Option<(Ipv4Addr, usize)>,
}

/// How many source namespaces are probed at once (each on its own thread).
const PARALLEL_SOURCES: usize = 32;

/// Probes every target from every source namespace; `reached[s][t]`.
pub fn run(sources: &[String], targets: &[Target], timeout: Duration) -> io::Result<Vec<Vec<bool>>> {
    let mut reached = Vec::with_capacity(sources.len());
    for chunk in sources.chunks(PARALLEL_SOURCES) {
        let handles: Vec<_> = chunk
            .iter()
            .map(|netns_name| {
                let targets = targets.to_vec();
                netns::spawn_in(&netns::path_of(netns_name), move || from_here(&targets, timeout))
            })
            .collect::<io::Result<_>>()?;
        for h in handles {
            reached.push(h.join().map_err(|_| io::Error::other("a probe thread panicked"))??);
        }
    }
    Ok(reached)
}

/// Every target from the calling thread's namespace, concurrently.
fn from_here(targets: &[Target], timeout: Duration) -> io::Result<Vec<bool>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let tries: Vec<_> = targets.iter().map(|t| tokio::spawn(tokio::time::timeout(timeout, attempt(*t)))).collect();
        let mut out = Vec::with_capacity(tries.len());
        for t in tries {
            out.push(matches!(t.await, Ok(Ok(true))));
        }
        Ok(out)
    })
}

/// Whether the destination answered in any way (through a Service with several endpoints: whether
/// the wanted pod answered one of several connections).
async fn attempt(t: Target) -> bool {
    let Some((pod, tries)) = t.answered_by else {
        return reached(t).await;
    };
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tries {
        set.spawn(answering_pod(t));
    }
    while let Some(answer) = set.join_next().await {
        if answer.ok().flatten() == Some(pod) {
            return true;
        }
    }
    false
}

/// The address of the echo server that answered one request.
async fn answering_pod(t: Target) -> Option<Ipv4Addr> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = SocketAddr::from((t.ip, t.port));
    let mut buf = vec![0u8; 4096];
    let n = match t.protocol {
        Protocol::Tcp => {
            let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
            s.write_all(b"podnet lab probe\n").await.ok()?;
            let mut n = 0;
            while n < buf.len() {
                match s.read(&mut buf[n..]).await.ok()? {
                    0 => break,
                    k => n += k,
                }
                if buf[..n].contains(&b'\n') {
                    break;
                }
            }
            n
        }
        Protocol::Udp => {
            let socket = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await.ok()?;
            socket.connect(addr).await.ok()?;
            socket.send(b"podnet lab probe\n").await.ok()?;
            socket.recv(&mut buf).await.ok()?
        }
        Protocol::Sctp => return None,
    };
    let answer: serde_json::Value = serde_json::from_slice(buf[..n].split(|b| *b == b'\n').next()?).ok()?;
    answer["ip"].as_str()?.parse().ok()
}

/// Whether the destination answered in any way.
async fn reached(t: Target) -> bool {
    let addr = SocketAddr::from((t.ip, t.port));
    let answered = |e: &io::Error| e.kind() == io::ErrorKind::ConnectionRefused;
    match t.protocol {
        Protocol::Tcp => match tokio::net::TcpStream::connect(addr).await {
            Ok(_) => true,
            Err(e) => answered(&e),
        },
        Protocol::Udp => {
            let exchange = async {
                let socket = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
                socket.connect(addr).await?;
                socket.send(b"podnet lab probe\n").await?;
                let mut buf = [0u8; 2048];
                socket.recv(&mut buf).await
            };
            match exchange.await {
                Ok(_) => true,
                Err(e) => answered(&e),
            }
        }
        // No SCTP sockets on this kernel (and no servers): never reached.
        Protocol::Sctp => false,
    }
}
