//! What the server counts, in CoreDNS's metric names and buckets (`prometheus`, `cache`,
//! `forward`, `autopath` plugins), and the HTTP endpoints CoreDNS's `health` (`/health`),
//! `ready` (`/ready`) and `prometheus` (`/metrics`) plugins answer.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::server::Shared;

/// Query types counted by name (others are `other`), as CoreDNS's `monitor` type list.
const TYPES: [(u16, &str); 10] = [(1, "A"), (28, "AAAA"), (33, "SRV"), (12, "PTR"), (16, "TXT"), (5, "CNAME"), (2, "NS"), (6, "SOA"), (15, "MX"), (0, "other")];
const RCODES: [&str; 6] = ["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"];
/// CoreDNS's `dns_request_duration_seconds` buckets: `ExponentialBuckets(0.00025, 2, 16)`.
const BUCKETS: usize = 16;

fn type_index(qtype: u16) -> usize {
    TYPES.iter().position(|(t, _)| *t == qtype).unwrap_or(TYPES.len() - 1)
}

fn bucket_bound(i: usize) -> f64 {
    0.00025 * f64::from(1u32 << i)
}

/// Counters of requests and responses.
#[derive(Debug)]
pub struct Metrics {
    /// Requests by protocol (udp, tcp), family (IPv4, IPv6) and type.
    requests: Vec<AtomicU64>,
    /// Responses by rcode (the last slot: any other).
    responses: Vec<AtomicU64>,
    /// Durations by type: bucket counts, then the sum in nanoseconds.
    durations: Vec<AtomicU64>,
    duration_sum_ns: Vec<AtomicU64>,
    /// Queries answered through autopath.
    pub autopath: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        let zeros = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect();
        Metrics {
            requests: zeros(2 * 2 * TYPES.len()),
            responses: zeros(RCODES.len() + 1),
            durations: zeros(TYPES.len() * (BUCKETS + 1)),
            duration_sum_ns: zeros(TYPES.len()),
            autopath: AtomicU64::new(0),
        }
    }
}

/// The query type of a message (0 when it has no readable question).
pub fn qtype_of(query: &[u8]) -> u16 {
    let mut at = 12;
    while let Some(&len) = query.get(at) {
        if len == 0 || len & 0xc0 != 0 {
            break;
        }
        at += 1 + usize::from(len);
    }
    match query.get(at + 1..at + 3) {
        Some(t) => u16::from_be_bytes([t[0], t[1]]),
        None => 0,
    }
}

impl Metrics {
    /// Counts one request and its response.
    pub fn record(&self, tcp: bool, ipv6: bool, qtype: u16, response: Option<&[u8]>, took: Duration) {
        let t = type_index(qtype);
        let i = (usize::from(tcp) * 2 + usize::from(ipv6)) * TYPES.len() + t;
        self.requests[i].fetch_add(1, Ordering::Relaxed);
        if let Some(r) = response.filter(|r| r.len() > 3) {
            let rcode = usize::from(r[3] & 0x0f);
            self.responses[if rcode < RCODES.len() { rcode } else { RCODES.len() }].fetch_add(1, Ordering::Relaxed);
        }
        let secs = took.as_secs_f64();
        let bucket = (0..BUCKETS).find(|&b| secs <= bucket_bound(b)).unwrap_or(BUCKETS);
        self.durations[t * (BUCKETS + 1) + bucket].fetch_add(1, Ordering::Relaxed);
        self.duration_sum_ns[t].fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// The Prometheus text of everything counted.
pub fn render(shared: &Shared) -> String {
    let m = &shared.metrics;
    let labels = "server=\"dns://:53\",zone=\".\",view=\"\"";
    let mut out = String::new();
    out.push_str("# HELP coredns_dns_requests_total Counter of DNS requests made per zone, protocol and family.\n# TYPE coredns_dns_requests_total counter\n");
    for (proto_i, proto) in ["udp", "tcp"].iter().enumerate() {
        for family in 0..2 {
            for (t, (_, name)) in TYPES.iter().enumerate() {
                let v = m.requests[(proto_i * 2 + family) * TYPES.len() + t].load(Ordering::Relaxed);
                if v > 0 {
                    let _ = writeln!(out, "coredns_dns_requests_total{{{labels},proto=\"{proto}\",family=\"{}\",type=\"{name}\"}} {v}", family + 1);
                }
            }
        }
    }
    out.push_str("# HELP coredns_dns_responses_total Counter of response status codes.\n# TYPE coredns_dns_responses_total counter\n");
    for (i, rcode) in RCODES.iter().chain(["other"].iter()).enumerate() {
        let v = m.responses[i].load(Ordering::Relaxed);
        if v > 0 {
            let _ = writeln!(out, "coredns_dns_responses_total{{{labels},rcode=\"{rcode}\",plugin=\"\"}} {v}");
        }
    }
    out.push_str("# HELP coredns_dns_request_duration_seconds Histogram of the time (in seconds) each request took per zone.\n# TYPE coredns_dns_request_duration_seconds histogram\n");
    for (t, (_, name)) in TYPES.iter().enumerate() {
        let counts: Vec<u64> = (0..=BUCKETS).map(|b| m.durations[t * (BUCKETS + 1) + b].load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            continue;
        }
        let mut cumulative = 0;
        for (b, c) in counts.iter().take(BUCKETS).enumerate() {
            cumulative += c;
            let _ = writeln!(out, "coredns_dns_request_duration_seconds_bucket{{{labels},type=\"{name}\",le=\"{}\"}} {cumulative}", bucket_bound(b));
        }
        let _ = writeln!(out, "coredns_dns_request_duration_seconds_bucket{{{labels},type=\"{name}\",le=\"+Inf\"}} {total}");
        let _ =
            writeln!(out, "coredns_dns_request_duration_seconds_sum{{{labels},type=\"{name}\"}} {}", m.duration_sum_ns[t].load(Ordering::Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "coredns_dns_request_duration_seconds_count{{{labels},type=\"{name}\"}} {total}");
    }
    let c = &shared.forwarder.counters;
    let _ = write!(
        out,
        "# HELP coredns_cache_hits_total The count of cache hits.\n# TYPE coredns_cache_hits_total counter\ncoredns_cache_hits_total{{{labels},type=\"success\"}} {}\n\
         # HELP coredns_cache_misses_total The count of cache misses. Deprecated, derive misses from cache hits/requests counters.\n# TYPE coredns_cache_misses_total counter\ncoredns_cache_misses_total{{{labels}}} {}\n\
         # HELP coredns_cache_entries The number of elements in the cache.\n# TYPE coredns_cache_entries gauge\ncoredns_cache_entries{{{labels},type=\"success\"}} {}\n\
         # HELP coredns_forward_requests_total Counter of requests made per upstream.\n# TYPE coredns_forward_requests_total counter\ncoredns_forward_requests_total{{to=\"upstream\"}} {}\n\
         # HELP coredns_forward_responses_total Counter of responses received per upstream.\n# TYPE coredns_forward_responses_total counter\ncoredns_forward_responses_total{{to=\"upstream\",rcode=\"SERVFAIL\"}} {}\n\
         # HELP coredns_autopath_success_total Counter of requests that did autopath.\n# TYPE coredns_autopath_success_total counter\ncoredns_autopath_success_total{{server=\"dns://:53\"}} {}\n",
        c.cache_hits.load(Ordering::Relaxed),
        c.cache_misses.load(Ordering::Relaxed),
        shared.forwarder.cache_len(),
        c.cache_misses.load(Ordering::Relaxed),
        c.upstream_failures.load(Ordering::Relaxed),
        m.autopath.load(Ordering::Relaxed),
    );
    out
}

/// Serves `/health`, `/ready` and `/metrics` on `listener` until it fails.
pub async fn serve_http(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(answer_http(conn, Arc::clone(&shared)));
    }
}

async fn answer_http(mut conn: tokio::net::TcpStream, shared: Arc<Shared>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) | Err(_) => return,
            Ok(Ok(n)) => head.extend_from_slice(&buf[..n]),
        }
    }
    let path = String::from_utf8_lossy(&head).split_whitespace().nth(1).unwrap_or("/").to_owned();
    let (code, kind, body) = match path.split('?').next().unwrap_or("/") {
        // `health`: the process answers; `ready`: the zone is loaded (it is before serving starts).
        "/health" | "/ready" => (200, "text/plain; charset=utf-8", "OK".to_owned()),
        "/metrics" => (200, "text/plain; version=0.0.4; charset=utf-8", render(&shared)),
        _ => (404, "text/plain; charset=utf-8", "404 page not found\n".to_owned()),
    };
    let reason = if code == 200 { "OK" } else { "Not Found" };
    let response = format!("HTTP/1.1 {code} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    let _ = conn.write_all(response.as_bytes()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_types_are_coredns_s() {
        assert_eq!(bucket_bound(0), 0.00025);
        assert_eq!(bucket_bound(15), 8.192);
        let m = Metrics::default();
        let mut response = vec![0u8; 12];
        response[3] = 3; // NXDOMAIN
        m.record(false, false, 1, Some(&response), Duration::from_micros(100));
        m.record(true, false, 99, None, Duration::from_secs(20));
        assert_eq!(m.requests[type_index(1)].load(Ordering::Relaxed), 1);
        assert_eq!(m.requests[2 * TYPES.len() + type_index(99)].load(Ordering::Relaxed), 1);
        assert_eq!(m.responses[3].load(Ordering::Relaxed), 1);
        assert_eq!(m.durations[type_index(99) * (BUCKETS + 1) + BUCKETS].load(Ordering::Relaxed), 1, "over every bound: +Inf only");
    }

    #[test]
    fn the_query_type_is_read_after_the_name() {
        let mut q = vec![0u8; 12];
        q.extend([3, b'w', b'w', b'w', 0, 0, 28, 0, 1]);
        assert_eq!(qtype_of(&q), 28);
        assert_eq!(qtype_of(&q[..14]), 0);
    }
}
