//! Serving DNS over UDP and TCP on one address: zone answers straight from the current view
//! (swapped whole on a change), other names through the forwarder on their own task so that
//! a slow upstream never holds up cluster names.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::CNAME;
use hickory_proto::rr::{Name, RData, Record};
use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::fast::{self, Answers};
use crate::forward::Forwarder;
use crate::message::{Handled, Recursion, Transport, encode, handle, response_to, size_limit};
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

/// A view and the responses kept for it.
struct Zone {
    view: View,
    answers: Answers,
}

/// What every server task shares.
pub struct Shared {
    zone: RwLock<Arc<Zone>>,
    /// The forwarder and its cache.
    pub forwarder: Forwarder,
    /// Sources whose names outside the zone are resolved; `None`: every source.
    recursion_from: Option<Vec<IpNet>>,
    /// Counters.
    pub requests: Requests,
    /// CoreDNS's metrics.
    pub metrics: crate::metrics::Metrics,
}

impl Shared {
    /// Shared state serving `view`.
    pub fn new(view: View, forwarder: Forwarder, recursion_from: Option<Vec<IpNet>>) -> Shared {
        Shared {
            zone: RwLock::new(Arc::new(Zone { view, answers: Answers::default() })),
            forwarder,
            recursion_from,
            requests: Requests::default(),
            metrics: Default::default(),
        }
    }

    fn zone(&self) -> Arc<Zone> {
        self.zone.read().map(|v| Arc::clone(&v)).unwrap_or_else(|poisoned| Arc::clone(&poisoned.into_inner()))
    }

    /// Replaces the view (and the responses kept for the old one); queries after this see the new one.
    pub fn set_view(&self, view: View) {
        let new = Arc::new(Zone { view, answers: Answers::default() });
        match self.zone.write() {
            Ok(mut v) => *v = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }

    /// Keeps a forwarded answer (NOERROR or NXDOMAIN only) for the fast path, briefly.
    fn keep_forwarded(&self, query: &[u8], transport: Transport, source: IpAddr, response: &[u8]) {
        let rcode = response.get(3).map_or(2, |b| b & 0x0f);
        if rcode != 0 && rcode != 3 {
            return;
        }
        if let Some(plain) = fast::parse(query, transport, self.recursion_for(source)) {
            self.zone().answers.put_forwarded(plain, response);
        }
    }

    /// Answers a message from `source`: a kept response when the question was answered before
    /// for this view, else the full path, whose response is kept.
    pub fn answer(&self, bytes: &[u8], transport: Transport, source: IpAddr) -> Handled {
        let recursion = self.recursion_for(source);
        let zone = self.zone();
        let plain = fast::parse(bytes, transport, recursion);
        let handled = match plain.as_ref().and_then(|p| zone.answers.get(p, bytes)) {
            Some(kept) => Handled::Reply(kept),
            None => {
                let handled = crate::message::handle_guarded(&zone.view, bytes, transport, recursion);
                if let (Some(p), Handled::Reply(response)) = (plain, &handled) {
                    zone.answers.put(p, response);
                }
                handled
            }
        };
        match handled {
            Handled::Reply(response) if is_nxdomain(&response) && recursion == Recursion::Allowed => match autopath_candidate(&zone.view, bytes, source) {
                Some((query, path)) => Handled::Search(Box::new(query), path),
                None => Handled::Reply(response),
            },
            other => other,
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
        let received = Instant::now();
        shared.requests.udp.fetch_add(1, Ordering::Relaxed);
        let qtype = crate::metrics::qtype_of(&buf[..n]);
        let record = move |shared: &Shared, response: Option<&[u8]>| shared.metrics.record(false, peer.is_ipv6(), qtype, response, received.elapsed());
        match shared.answer(&buf[..n], Transport::Udp, peer.ip()) {
            Handled::Reply(bytes) => {
                let _ = socket.send_to(&bytes, peer).await;
                record(&shared, Some(&bytes));
            }
            Handled::Forward(query) => {
                shared.requests.forwarded.fetch_add(1, Ordering::Relaxed);
                let (socket, shared) = (Arc::clone(&socket), Arc::clone(&shared));
                let asked = buf[..n].to_vec();
                tokio::spawn(async move {
                    if let Handled::Reply(bytes) = forwarded(&shared, &query, Transport::Udp).await {
                        let _ = socket.send_to(&bytes, peer).await;
                        record(&shared, Some(&bytes));
                        shared.keep_forwarded(&asked, Transport::Udp, peer.ip(), &bytes);
                    }
                });
            }
            Handled::Search(query, path) => {
                let (socket, shared) = (Arc::clone(&socket), Arc::clone(&shared));
                tokio::spawn(async move {
                    if let Handled::Reply(bytes) = autopath(&shared, &query, &path, Transport::Udp).await {
                        let _ = socket.send_to(&bytes, peer).await;
                        record(&shared, Some(&bytes));
                    }
                });
            }
            Handled::Drop => record(&shared, None),
        }
    }
}

fn is_nxdomain(response: &[u8]) -> bool {
    response.len() > 3 && response[3] & 0x0f == 3
}

/// The query and the pod's search path, when the query's name is in the first domain of the
/// search path of the pod it came from (its resolver is walking the path).
fn autopath_candidate(view: &View, bytes: &[u8], source: IpAddr) -> Option<(Message, Vec<Name>)> {
    let path = view.search_path(source)?;
    let query = Message::from_vec(bytes).ok()?;
    let name = query.queries.first()?.name().to_lowercase();
    (path[0].zone_of(&name) && name.num_labels() > path[0].num_labels()).then_some((query, path))
}

/// CoreDNS's autopath: the name without the first search domain is tried with each of the
/// others (in the zone, else upstream); the first that is not NXDOMAIN answers, with a CNAME
/// from the name asked. All NXDOMAIN: the first answer stands.
async fn autopath(shared: &Shared, query: &Message, path: &[Name], transport: Transport) -> Handled {
    let asked = query.queries[0].name().clone();
    let keep = usize::from(asked.num_labels() - path[0].num_labels());
    let Ok(base) = Name::from_labels(asked.iter().take(keep)) else {
        return encode(response_to(query, ResponseCode::ServFail), size_limit(query, transport));
    };
    for domain in &path[1..] {
        let Ok(candidate) = base.clone().append_domain(domain) else {
            continue;
        };
        let mut q = query.clone();
        q.queries[0].set_name(candidate.clone());
        let zone = shared.zone();
        let mut response = match zone.view.lookup(&candidate, q.queries[0].query_type()) {
            crate::lookup::Lookup::Answer(a) if a.rcode == ResponseCode::NXDomain => continue,
            crate::lookup::Lookup::Answer(a) => {
                let mut r = response_to(query, a.rcode);
                r.metadata.authoritative = true;
                r.metadata.recursion_available = true;
                r.answers = a.answers;
                r.authorities = a.authorities;
                r.additionals = a.additionals;
                r
            }
            crate::lookup::Lookup::NotOurs => {
                let r = shared.forwarder.resolve(&q).await;
                if matches!(r.metadata.response_code, ResponseCode::NXDomain | ResponseCode::ServFail | ResponseCode::Refused) {
                    continue;
                }
                r
            }
        };
        response.queries = query.queries.clone();
        if !response.answers.is_empty() {
            let cname = Record::from_rdata(asked.clone(), response.answers[0].ttl, RData::CNAME(CNAME(candidate)));
            response.answers.insert(0, cname);
        }
        shared.metrics.autopath.fetch_add(1, Ordering::Relaxed);
        return encode(response, size_limit(query, transport));
    }
    let view = shared.zone();
    handle(&view.view, &query.to_vec().unwrap_or_default(), transport, Recursion::Allowed)
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
        let received = Instant::now();
        let handled = match shared.answer(&buf, Transport::Tcp, peer.ip()) {
            Handled::Forward(query) => {
                shared.requests.forwarded.fetch_add(1, Ordering::Relaxed);
                forwarded(shared, &query, Transport::Tcp).await
            }
            Handled::Search(query, path) => autopath(shared, &query, &path, Transport::Tcp).await,
            other => other,
        };
        match handled {
            Handled::Reply(bytes) => {
                let mut framed = Vec::with_capacity(bytes.len() + 2);
                framed.extend(u16::try_from(bytes.len()).unwrap_or(u16::MAX).to_be_bytes());
                framed.extend(&bytes);
                stream.write_all(&framed).await?;
                shared.metrics.record(true, peer.is_ipv6(), crate::metrics::qtype_of(&buf), Some(&bytes), received.elapsed());
            }
            // Something that is not a query: the stream cannot be trusted any more.
            _ => return Ok(()),
        }
    }
}
