//! Names outside the cluster zone go to upstream resolvers (the host's `/etc/resolv.conf` by
//! default), through a cache like CoreDNS's `cache` plugin: positive answers for their smallest
//! TTL, negative ones (NXDOMAIN, NODATA) for their SOA's (RFC 2308), both capped, a bounded
//! number of entries. At most `max_concurrent` queries go upstream at once (more are REFUSED,
//! as CoreDNS's `forward` does), each waits at most `timeout` over all upstreams, and a failure
//! is a quick SERVFAIL, never a hang. A truncated upstream answer is asked again over TCP.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use crate::message::response_to;

/// Longest a positive answer is cached (CoreDNS: 3600 s).
const MAX_SUCCESS_TTL: u32 = 3600;
/// Longest a negative answer is cached (CoreDNS: 1800 s).
const MAX_DENIAL_TTL: u32 = 1800;

/// Forwarding settings.
#[derive(Clone, Debug)]
pub struct ForwardConfig {
    /// Upstream resolvers, tried in order.
    pub upstreams: Vec<SocketAddr>,
    /// Time for one query over all upstreams.
    pub timeout: Duration,
    /// Queries upstream at once.
    pub max_concurrent: usize,
    /// Cached answers at most (CoreDNS: 9984).
    pub cache_size: usize,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig { upstreams: Vec::new(), timeout: Duration::from_secs(2), max_concurrent: 1000, cache_size: 9984 }
    }
}

/// The nameservers of a resolv.conf text, port 53.
pub fn resolv_conf_nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The search domains of a resolv.conf text (its last `search` or `domain` line).
pub fn resolv_conf_searches(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("search").or_else(|| line.strip_prefix("domain")) {
            out = rest.split_whitespace().map(str::to_owned).collect();
        }
    }
    out
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    name: Name,
    qtype: RecordType,
    class: DNSClass,
    dnssec_ok: bool,
}

struct Entry {
    response: Message,
    stored: Instant,
    ttl: u32,
}

/// Counters, for metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Answers from the cache.
    pub cache_hits: AtomicU64,
    /// Queries the cache could not answer.
    pub cache_misses: AtomicU64,
    /// Queries that failed upstream (SERVFAIL given).
    pub upstream_failures: AtomicU64,
}

/// The forwarder: upstreams and the cache.
pub struct Forwarder {
    config: ForwardConfig,
    cache: Mutex<HashMap<Key, Entry>>,
    slots: Semaphore,
    next_id: AtomicU64,
    /// Counters.
    pub counters: Counters,
}

fn key_of(query: &Message) -> Option<Key> {
    let q = query.queries.first()?;
    Some(Key {
        name: q.name().to_lowercase(),
        qtype: q.query_type(),
        class: q.query_class(),
        dnssec_ok: query.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok),
    })
}

/// How long `response` may be cached; `None` for what is not cached (errors other than
/// NXDOMAIN, truncated answers).
fn cache_ttl(response: &Message) -> Option<u32> {
    if response.metadata.truncation {
        return None;
    }
    let negative = |rcode| {
        let soa = response.authorities.iter().find_map(|r| match &r.data {
            RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
            _ => None,
        });
        Some(soa.unwrap_or(0).min(MAX_DENIAL_TTL)).filter(|_| rcode == ResponseCode::NXDomain || rcode == ResponseCode::NoError)
    };
    match response.metadata.response_code {
        ResponseCode::NoError if !response.answers.is_empty() => response.answers.iter().map(|r| r.ttl).min().map(|t| t.min(MAX_SUCCESS_TTL)),
        code @ (ResponseCode::NoError | ResponseCode::NXDomain) => negative(code),
        _ => None,
    }
}

impl Forwarder {
    /// A forwarder with an empty cache.
    pub fn new(config: ForwardConfig) -> Forwarder {
        let slots = Semaphore::new(config.max_concurrent);
        let seed = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8);
        Forwarder { config, cache: Mutex::new(HashMap::new()), slots, next_id: AtomicU64::new(seed), counters: Counters::default() }
    }

    /// Entries in the cache.
    pub fn cache_len(&self) -> usize {
        self.cache.lock().map(|c| c.len()).unwrap_or(0)
    }

    fn cached(&self, key: &Key, query: &Message) -> Option<Message> {
        let cache = self.cache.lock().ok()?;
        let entry = cache.get(key)?;
        let age = u32::try_from(entry.stored.elapsed().as_secs()).unwrap_or(u32::MAX);
        if age >= entry.ttl {
            return None;
        }
        let mut r = entry.response.clone();
        r.metadata.id = query.metadata.id;
        r.metadata.recursion_desired = query.metadata.recursion_desired;
        r.queries = query.queries.clone(); // the name as asked
        for rec in r.answers.iter_mut().chain(r.authorities.iter_mut()).chain(r.additionals.iter_mut()) {
            rec.decrement_ttl(age);
        }
        Some(r)
    }

    fn store(&self, key: Key, response: &Message) {
        let Some(ttl) = cache_ttl(response).filter(|t| *t > 0) else {
            return;
        };
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if cache.len() >= self.config.cache_size && !cache.contains_key(&key) {
            // Full: drop what has expired, else any one entry.
            cache.retain(|_, e| e.stored.elapsed().as_secs() < u64::from(e.ttl));
            if cache.len() >= self.config.cache_size
                && let Some(k) = cache.keys().next().cloned()
            {
                cache.remove(&k);
            }
        }
        let mut stored = response.clone();
        stored.edns = None;
        cache.insert(key, Entry { response: stored, stored: Instant::now(), ttl });
    }

    /// The answer to `query` (a question outside the zone), from the cache or upstream.
    pub async fn resolve(&self, query: &Message) -> Message {
        let Some(key) = key_of(query) else {
            return response_to(query, ResponseCode::FormErr);
        };
        if let Some(hit) = self.cached(&key, query) {
            self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
            return with_edns_of(hit, query);
        }
        self.counters.cache_misses.fetch_add(1, Ordering::Relaxed);
        let Ok(_slot) = self.slots.try_acquire() else {
            return response_to(query, ResponseCode::Refused);
        };
        match tokio::time::timeout(self.config.timeout, self.ask_upstreams(query)).await {
            Ok(Some(mut response)) => {
                self.store(key, &response);
                response.metadata.id = query.metadata.id;
                response.queries = query.queries.clone();
                with_edns_of(response, query)
            }
            _ => {
                self.counters.upstream_failures.fetch_add(1, Ordering::Relaxed);
                response_to(query, ResponseCode::ServFail)
            }
        }
    }

    async fn ask_upstreams(&self, query: &Message) -> Option<Message> {
        let mut upstream_query = query.clone();
        // Our own id towards upstream; the answer must carry it.
        upstream_query.metadata.id = (self.next_id.fetch_add(0x9E37_79B9, Ordering::Relaxed) >> 7) as u16;
        upstream_query.metadata.recursion_desired = true;
        let bytes = upstream_query.to_vec().ok()?;
        for upstream in &self.config.upstreams {
            if let Some(r) = ask_udp(*upstream, &bytes, upstream_query.metadata.id).await {
                if r.metadata.truncation
                    && let Some(full) = ask_tcp(*upstream, &bytes, upstream_query.metadata.id).await
                {
                    return Some(full);
                }
                return Some(r);
            }
        }
        None
    }
}

fn with_edns_of(mut response: Message, query: &Message) -> Message {
    response.edns = query.edns.as_ref().map(|_| {
        let mut e = hickory_proto::op::Edns::new();
        e.set_max_payload(crate::message::MAX_UDP_PAYLOAD);
        e
    });
    response
}

/// One UDP exchange; `None` on any failure (refused, timeout is the caller's, garbage).
async fn ask_udp(upstream: SocketAddr, bytes: &[u8], id: u16) -> Option<Message> {
    let bind: SocketAddr = if upstream.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let socket = UdpSocket::bind(bind).await.ok()?;
    socket.connect(upstream).await.ok()?;
    socket.send(bytes).await.ok()?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await.ok()?; // a refused port errors at once
        if let Ok(m) = Message::from_vec(&buf[..n])
            && m.metadata.id == id
        {
            return Some(m);
        }
    }
}

/// One TCP exchange.
async fn ask_tcp(upstream: SocketAddr, bytes: &[u8], id: u16) -> Option<Message> {
    let mut stream = TcpStream::connect(upstream).await.ok()?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend(u16::try_from(bytes.len()).ok()?.to_be_bytes());
    framed.extend(bytes);
    stream.write_all(&framed).await.ok()?;
    let len = stream.read_u16().await.ok()?;
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await.ok()?;
    Message::from_vec(&buf).ok().filter(|m| m.metadata.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Record;
    use hickory_proto::rr::rdata::{A, SOA};

    #[test]
    fn nameservers_come_from_resolv_conf() {
        let text = "# comment\nsearch example.com\nnameserver 192.0.2.1\nnameserver 2001:db8::1 # v6\noptions ndots:5\n";
        assert_eq!(resolv_conf_nameservers(text), ["192.0.2.1:53".parse().unwrap(), "[2001:db8::1]:53".parse().unwrap()]);
    }

    #[test]
    fn cache_ttls_follow_rfc_2308() {
        let name = Name::from_ascii("example.com.").unwrap();
        let mut ok = Message::query();
        ok.add_query(Query::query(name.clone(), RecordType::A));
        ok.answers.push(Record::from_rdata(name.clone(), 300, RData::A(A::new(192, 0, 2, 1))));
        ok.answers.push(Record::from_rdata(name.clone(), 60, RData::A(A::new(192, 0, 2, 2))));
        assert_eq!(cache_ttl(&ok), Some(60));
        ok.answers[1].ttl = 86400 * 7;
        ok.answers[0].ttl = 86400 * 7;
        assert_eq!(cache_ttl(&ok), Some(MAX_SUCCESS_TTL));
        let mut nx = Message::query();
        nx.metadata.response_code = ResponseCode::NXDomain;
        let soa = SOA::new(name.clone(), name.clone(), 1, 1, 1, 1, 30);
        nx.authorities.push(Record::from_rdata(name.clone(), 900, RData::SOA(soa)));
        assert_eq!(cache_ttl(&nx), Some(30), "the SOA's minimum, under its TTL");
        nx.metadata.response_code = ResponseCode::ServFail;
        assert_eq!(cache_ttl(&nx), None);
    }
}
