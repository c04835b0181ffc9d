//! Serving DNS over UDP and TCP on one address: zone answers straight from the current view
//! (swapped whole on a change), other names through the forwarder on their own task so that
//! a slow upstream never holds up cluster names.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::Message;
use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::forward::Forwarder;
use crate::message::{Handled, Recursion, Transport, encode, handle, size_limit};
use crate::view::View;

/// A TCP connection idle this long is closed (CoreDNS: 10 s).
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Request counters, for metrics.
#[derive(Debug, Default)]
pub struct Requests {
    /// Over UDP.
    pub udp: AtomicU64,
    /// Over TCP.
    pub tcp: AtomicU64,
    /// Forwarded (not in the zone).
    pub forwarded: AtomicU64,
}

/// What every server task shares.
pub struct Shared {
    view: RwLock<Arc<View>>,
    /// The forwarder and its cache.
    pub forwarder: Forwarder,
    /// Sources whose names outside the zone are resolved; `None`: every source.
    recursion_from: Option<Vec<IpNet>>,
    /// Counters.
    pub requests: Requests,
}

impl Shared {
    /// Shared state serving `view`.
    pub fn new(view: View, forwarder: Forwarder, recursion_from: Option<Vec<IpNet>>) -> Shared {
        Shared { view: RwLock::new(Arc::new(view)), forwarder, recursion_from, requests: Requests::default() }
    }

    /// The current view.
    pub fn view(&self) -> Arc<View> {
        self.view.read().map(|v| Arc::clone(&v)).unwrap_or_else(|poisoned| Arc::clone(&poisoned.into_inner()))
    }

    /// Replaces the view; queries after this see the new one.
    pub fn set_view(&self, view: View) {
        let new = Arc::new(view);
        match self.view.write() {
            Ok(mut v) => *v = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }

    fn recursion_for(&self, source: IpAddr) -> Recursion {
        match &self.recursion_from {
            Some(nets) if !nets.iter().any(|n| n.contains(&source)) => Recursion::Refused,
            _ => Recursion::Allowed,
        }
    }
}

/// Serves UDP queries on `socket` until it fails.
pub async fn serve_udp(socket: UdpSocket, shared: Arc<Shared>) -> std::io::Result<()> {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, peer) = socket.recv_from(&mut buf).await?;
        shared.requests.udp.fetch_add(1, Ordering::Relaxed);
        let view = shared.view();
        match handle(&view, &buf[..n], Transport::Udp, shared.recursion_for(peer.ip())) {
            Handled::Reply(bytes) => {
                let _ = socket.send_to(&bytes, peer).await;
            }
            Handled::Forward(query) => {
                shared.requests.forwarded.fetch_add(1, Ordering::Relaxed);
                let (socket, shared) = (Arc::clone(&socket), Arc::clone(&shared));
                tokio::spawn(async move {
                    if let Handled::Reply(bytes) = forwarded(&shared, &query, Transport::Udp).await {
                        let _ = socket.send_to(&bytes, peer).await;
                    }
                });
            }
            Handled::Drop => {}
        }
    }
}

async fn forwarded(shared: &Shared, query: &Message, transport: Transport) -> Handled {
    let response = shared.forwarder.resolve(query).await;
    encode(response, size_limit(query, transport))
}

/// Serves TCP connections on `listener` until it fails.
pub async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) -> std::io::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let _ = serve_connection(stream, peer, &shared).await;
        });
    }
}

/// Length-prefixed messages, answered in order, until the client closes or idles.
async fn serve_connection(mut stream: TcpStream, peer: SocketAddr, shared: &Shared) -> std::io::Result<()> {
    loop {
        let Ok(len) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else {
            return Ok(());
        };
        let len = usize::from(len?);
        let mut buf = vec![0u8; len];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut buf)).await.map_err(|_| std::io::ErrorKind::TimedOut)??;
        shared.requests.tcp.fetch_add(1, Ordering::Relaxed);
        let view = shared.view();
        let handled = match handle(&view, &buf, Transport::Tcp, shared.recursion_for(peer.ip())) {
            Handled::Forward(query) => {
                shared.requests.forwarded.fetch_add(1, Ordering::Relaxed);
                forwarded(shared, &query, Transport::Tcp).await
            }
            other => other,
        };
        match handled {
            Handled::Reply(bytes) => {
                let mut framed = Vec::with_capacity(bytes.len() + 2);
                framed.extend(u16::try_from(bytes.len()).unwrap_or(u16::MAX).to_be_bytes());
                framed.extend(bytes);
                stream.write_all(&framed).await?;
            }
            // Something that is not a query: the stream cannot be trusted any more.
            _ => return Ok(()),
        }
    }
}
