//! The HTTP(S) proxy's listeners and shared state: rustls in front with certificates chosen by
//! SNI; HTTP/1 connections go to [`crate::h1`] (pooled upstream connections of our own), HTTP/2
//! ones (ALPN `h2`, or the cleartext preface) to hyper with a pooled hyper client behind. Every
//! request reads one immutable snapshot (routes, endpoints, certificates); a change swaps the
//! snapshot, so requests in flight finish on the old one and no connection is refused meanwhile.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use model::ClusterState;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

use crate::annotations::BackendProtocol;
use crate::backends::Backends;
use crate::ingress;
use crate::plan::{Answer, Forward, Listener, Plan};
use crate::request::RequestHead;
use crate::routes::RouteTable;
use crate::tls::Certificates;

pub(crate) type Body = BoxBody<Bytes, hyper::Error>;

/// Everything a request is served from.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Routes.
    pub routes: RouteTable,
    /// Endpoint addresses per Service port.
    pub backends: Backends,
    /// Certificates by server name.
    pub certs: Certificates,
    /// What was wrong with the objects (each names its object).
    pub problems: Vec<String>,
    /// TLS Secrets that could not be used (their hosts get the default certificate); a
    /// snapshot with any is not a successful reload (`config_last_reload_successful` 0).
    pub broken_certificates: usize,
    /// Gateway API: our Gateways' listeners and the HTTPRoutes attached to them.
    pub gateway: crate::httproute::Compiled,
}

impl Snapshot {
    /// The snapshot of the Ingresses whose class's controller is `ingress_controller` and of
    /// the Gateways whose class's controller is `gateway_controller`.
    pub fn build(state: &ClusterState, ingress_controller: ingress::Controller<'_>, gateway_controller: &str) -> Snapshot {
        let ing = ingress::routes(state, ingress_controller);
        let mut problems = ing.problems;
        let before = problems.len();
        let mut certs = Certificates::build(&ing.tls, state, &mut problems);
        let gateway = crate::httproute::compile(state, gateway_controller);
        for l in gateway.listeners.iter().filter(|l| l.listener.protocol == "HTTPS") {
            for r in l.listener.tls.iter().flat_map(|t| t.certificate_refs.iter()).take(1) {
                let ns = r.namespace.clone().unwrap_or_else(|| l.gateway.0.clone());
                match crate::tls::load(state, &ns, &r.name) {
                    Ok(key) => certs.add(l.listener.hostname.as_deref(), key),
                    Err(e) => problems.push(format!("Gateway {}/{} listener {}: {e}", l.gateway.0, l.gateway.1, l.listener.name)),
                }
            }
        }
        let broken_certificates = problems.len() - before;
        for ((ns, name), parents) in &gateway.status.routes {
            for (parent, conditions) in parents {
                for c in conditions.iter().filter(|c| !c.status) {
                    problems.push(format!("HTTPRoute {ns}/{name} (parent {}): {}={} {}: {}", parent.name, c.type_, c.status, c.reason, c.message));
                }
            }
        }
        Snapshot { routes: ing.table, backends: Backends::build(state), certs, problems, broken_certificates, gateway }
    }
}

/// What every connection shares.
pub struct Shared {
    snapshot: RwLock<Arc<Snapshot>>,
    /// Idle HTTP/1 connections to endpoints.
    pub(crate) pool: crate::upstream::Pool,
    http1: Client<HttpConnector, Full<Bytes>>,
    http2: Client<HttpConnector, Full<Bytes>>,
    pub(crate) next: AtomicUsize,
    /// `limit-rps` state: (location, client) → (last request, excess in thousandths).
    rates: Mutex<HashMap<(String, IpAddr), (Instant, u64)>>,
    /// Write the access log (on stderr).
    pub access_log: AtomicBool,
    /// A client's time for a request head, idle keep-alive time included (ms).
    pub client_header_timeout_ms: AtomicU64,
    /// Whether the last change of objects could be served (else the last good ones are).
    pub last_reload_ok: AtomicBool,
    /// Client connections open.
    connections: AtomicU64,
    /// Requests by their labels (host, method, status, upstream, route, each ended by `\u{1}`).
    requests: Mutex<HashMap<String, RequestStats, fnv::FnvBuildHasher>>,
}

/// Per label set: requests, and histograms of their duration, upstream time, request and
/// response size.
#[derive(Clone, Debug, Default)]
struct RequestStats {
    count: u64,
    duration: Histogram,
    upstream: Histogram,
    request_size: Histogram,
    response_size: Histogram,
}

/// Cumulative buckets and a sum.
#[derive(Clone, Debug, Default)]
struct Histogram {
    buckets: [u64; 11],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64; 11], value: f64) {
        self.count += 1;
        self.sum += value;
        for (b, n) in bounds.iter().zip(&mut self.buckets) {
            if value <= *b {
                *n += 1;
            }
        }
    }
}

/// Clients tracked by `limit-rps` before drained ones are forgotten.
const MAX_RATE_ENTRIES: usize = 65_536;

/// ingress-nginx's size buckets (bytes).
const SIZE_BUCKETS: [f64; 11] = [10.0, 100.0, 1000.0, 10_000.0, 100_000.0, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11];

/// ingress-nginx's `request_duration_seconds` buckets (Prometheus's defaults).
const BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// One request served, for the metrics and the access log.
pub(crate) struct Record<'a> {
    pub peer: SocketAddr,
    /// Its valid host, if any.
    pub host: Option<&'a str>,
    pub method: &'a str,
    /// `GET /path HTTP/1.1`, when the access log is written.
    pub request_line: Option<&'a str>,
    pub referer: &'a str,
    pub user_agent: &'a str,
    pub request_length: u64,
    pub status: u16,
    pub body_bytes_sent: u64,
    pub took: Duration,
    /// Upstream name, address, response time and status.
    pub upstream: Option<(&'a str, SocketAddr, Duration, u16)>,
    /// The route that took it (see [`Forward::route`]).
    pub route: Option<&'a str>,
}

impl Shared {
    /// Shared state serving `snapshot`.
    pub fn new(snapshot: Snapshot) -> Arc<Shared> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_nodelay(true);
        let http1 = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(60)).build(connector.clone());
        let http2 = Client::builder(TokioExecutor::new()).http2_only(true).build(connector);
        let reload_ok = snapshot.broken_certificates == 0;
        Arc::new(Shared {
            snapshot: RwLock::new(Arc::new(snapshot)),
            pool: crate::upstream::Pool::default(),
            http1,
            http2,
            next: AtomicUsize::new(0),
            rates: Mutex::new(HashMap::new()),
            access_log: AtomicBool::new(true),
            client_header_timeout_ms: AtomicU64::new(60_000),
            last_reload_ok: AtomicBool::new(reload_ok),
            connections: AtomicU64::new(0),
            requests: Mutex::new(HashMap::default()),
        })
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().map(|s| Arc::clone(&s)).unwrap_or_else(|p| Arc::clone(&p.into_inner()))
    }

    /// Swaps in a new snapshot; requests in flight keep theirs.
    pub fn swap(&self, snapshot: Snapshot) {
        self.last_reload_ok.store(snapshot.broken_certificates == 0, Ordering::Relaxed);
        let new = Arc::new(snapshot);
        match self.snapshot.write() {
            Ok(mut s) => *s = new,
            Err(p) => *p.into_inner() = new,
        }
    }

    pub(crate) fn client_header_timeout(&self) -> Duration {
        Duration::from_millis(self.client_header_timeout_ms.load(Ordering::Relaxed))
    }

    pub(crate) fn access_log(&self) -> bool {
        self.access_log.load(Ordering::Relaxed)
    }

    /// `limit-rps` for one location (Ingress and path) and client, as nginx's `limit_req` with
    /// `burst` and `nodelay`: each request adds one to an excess that drains at `rps` per second;
    /// a request that would take the excess past `burst` is refused (and not counted).
    pub(crate) fn within_rate(&self, source: &crate::routes::Source, path: &str, client: IpAddr, rps: u32, burst: u32) -> bool {
        let Ok(mut rates) = self.rates.lock() else {
            return true;
        };
        let now = Instant::now();
        let key = (format!("{}/{}{path}", source.namespace, source.name), client);
        // Excess in thousandths of a request, as nginx keeps it.
        match rates.get_mut(&key) {
            None => {
                if rates.len() >= MAX_RATE_ENTRIES {
                    // nginx's zone is bounded too: forget the clients whose excess has drained.
                    rates.retain(|_, (last, excess)| now.duration_since(*last).as_millis() * u128::from(rps) < u128::from(*excess));
                }
                rates.insert(key, (now, 0));
                true
            }
            Some((last, excess)) => {
                let drained = u64::try_from(now.duration_since(*last).as_millis() * u128::from(rps)).unwrap_or(u64::MAX);
                let next = excess.saturating_sub(drained) + 1000;
                let ok = next <= u64::from(burst) * 1000;
                if ok {
                    (*last, *excess) = (now, next);
                }
                ok
            }
        }
    }

    /// Counts a request in the metrics and writes its access log line.
    pub(crate) fn record(&self, r: &Record<'_>) {
        let took = r.took.as_secs_f64();
        // Labels only for routed requests: a client's made-up Host must not grow the table.
        let (host, upstream, route) = match (r.upstream, r.host, r.route) {
            (Some((name, ..)), Some(host), Some(route)) => (host, name, route),
            _ => ("-", "-", "-"),
        };
        // The key is made in a reused buffer: only a new label set allocates.
        KEY.with_borrow_mut(|key| {
            key.clear();
            for part in [host, r.method, StatusCode::from_u16(r.status).as_ref().map_or("0", StatusCode::as_str), upstream, route] {
                key.push_str(part);
                key.push('\u{1}');
            }
            let Ok(mut requests) = self.requests.lock() else {
                return;
            };
            let entry = match requests.get_mut(key.as_str()) {
                Some(e) => e,
                None => requests.entry(key.clone()).or_default(),
            };
            entry.count += 1;
            entry.duration.observe(&BUCKETS, took);
            if let Some((_, _, upstream_took, _)) = r.upstream {
                entry.upstream.observe(&BUCKETS, upstream_took.as_secs_f64());
            }
            entry.request_size.observe(&SIZE_BUCKETS, r.request_length as f64);
            entry.response_size.observe(&SIZE_BUCKETS, r.body_bytes_sent as f64);
        });
        if let Some(line) = r.request_line {
            // ingress-nginx's `log-format-upstream`.
            let (name, addr, upstream_took, upstream_status) = match r.upstream {
                Some((n, a, t, s)) => (n.to_owned(), a.to_string(), format!("{:.3}", t.as_secs_f64()), s.to_string()),
                None => ("-".into(), "-".into(), "-".into(), "-".into()),
            };
            eprintln!(
                "{} - - [{}] \"{line}\" {} {} \"{}\" \"{}\" {} {took:.3} [{name}] [] {addr} - {upstream_took} {upstream_status} -",
                r.peer.ip(),
                local_time(unix_seconds()),
                r.status,
                r.body_bytes_sent,
                r.referer,
                r.user_agent,
                r.request_length,
            );
        }
    }

    /// The Prometheus text of the requests served: those of Ingresses (and unrouted ones) on
    /// ingress-nginx's metric names and labels, those of HTTPRoutes on Envoy Gateway's.
    pub fn metrics(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let Ok(requests) = self.requests.lock() else {
            return out;
        };
        // (labels, stats) of Ingress requests; (cluster, status, stats) of HTTPRoute ones.
        let mut nginx: Vec<(String, &RequestStats)> = Vec::new();
        let mut envoy: Vec<(String, &str, &RequestStats)> = Vec::new();
        for (key, stats) in requests.iter() {
            let parts: Vec<&str> = key.split('\u{1}').collect();
            let [host, method, status, service, kind, rest @ ..] = parts.as_slice() else {
                continue;
            };
            match (*kind, rest) {
                ("httproute", [ns, name, rule, ..]) => envoy.push((format!("httproute/{ns}/{name}/rule/{rule}"), status, stats)),
                ("ingress", [ns, name, path, ..]) => nginx.push((
                    format!(
                        "host=\"{host}\",ingress=\"{name}\",method=\"{method}\",namespace=\"{ns}\",path=\"{path}\",service=\"{service}\",status=\"{status}\""
                    ),
                    stats,
                )),
                _ => nginx.push((
                    format!("host=\"{host}\",ingress=\"\",method=\"{method}\",namespace=\"\",path=\"\",service=\"{service}\",status=\"{status}\""),
                    stats,
                )),
            }
        }
        nginx.sort_by(|a, b| a.0.cmp(&b.0));
        envoy.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out.push_str("# HELP nginx_ingress_controller_requests The total number of client requests\n# TYPE nginx_ingress_controller_requests counter\n");
        for (labels, s) in &nginx {
            let _ = writeln!(out, "nginx_ingress_controller_requests{{{labels}}} {}", s.count);
        }
        let histogram = |out: &mut String, name: &str, help: &str, bounds: &[f64; 11], pick: &dyn Fn(&RequestStats) -> &Histogram| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (labels, s) in &nginx {
                let h = pick(s);
                for (b, n) in bounds.iter().zip(&h.buckets) {
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {n}");
                }
                let _ =
                    writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}\n{name}_sum{{{labels}}} {}\n{name}_count{{{labels}}} {}", h.count, h.sum, h.count);
            }
        };
        histogram(&mut out, "nginx_ingress_controller_request_duration_seconds", "The request processing time in seconds", &BUCKETS, &|s| &s.duration);
        histogram(
            &mut out,
            "nginx_ingress_controller_response_duration_seconds",
            "The time spent on receiving the response from the upstream server in seconds",
            &BUCKETS,
            &|s| &s.upstream,
        );
        histogram(
            &mut out,
            "nginx_ingress_controller_request_size",
            "The request length (including request line, header, and request body)",
            &SIZE_BUCKETS,
            &|s| &s.request_size,
        );
        histogram(
            &mut out,
            "nginx_ingress_controller_response_size",
            "The response length (including request line, header, and request body)",
            &SIZE_BUCKETS,
            &|s| &s.response_size,
        );
        let snapshot = self.snapshot();
        let _ = write!(
            out,
            "# HELP nginx_ingress_controller_config_last_reload_successful Whether the last configuration reload attempt was successful\n# TYPE nginx_ingress_controller_config_last_reload_successful gauge\nnginx_ingress_controller_config_last_reload_successful {}\n",
            u8::from(self.last_reload_ok.load(Ordering::Relaxed))
        );
        let _ = write!(
            out,
            "# HELP nginx_ingress_controller_nginx_process_connections current number of client connections with state {{active, reading, writing, waiting}}\n# TYPE nginx_ingress_controller_nginx_process_connections gauge\nnginx_ingress_controller_nginx_process_connections{{state=\"active\"}} {}\n",
            self.connections.load(Ordering::Relaxed)
        );
        let _ = write!(
            out,
            "# HELP nginx_ingress_controller_config_problems Problems found in the objects served (podnet).\n# TYPE nginx_ingress_controller_config_problems gauge\nnginx_ingress_controller_config_problems {}\n",
            snapshot.problems.len()
        );
        // Envoy Gateway's names for Gateway API routes: one cluster per HTTPRoute rule.
        out.push_str("# TYPE envoy_cluster_upstream_rq counter\n");
        for (cluster, status, s) in &envoy {
            let _ = writeln!(out, "envoy_cluster_upstream_rq{{envoy_response_code=\"{status}\",envoy_cluster_name=\"{cluster}\"}} {}", s.count);
        }
        out.push_str("# TYPE envoy_cluster_upstream_rq_total counter\n");
        let mut totals: Vec<(&str, u64, f64, [u64; 11])> = Vec::new();
        for (cluster, _, s) in &envoy {
            match totals.iter_mut().find(|t| t.0 == cluster) {
                Some(t) => {
                    t.1 += s.count;
                    t.2 += s.upstream.sum;
                    t.3.iter_mut().zip(&s.upstream.buckets).for_each(|(a, b)| *a += b);
                }
                None => totals.push((cluster, s.count, s.upstream.sum, s.upstream.buckets)),
            }
        }
        for (cluster, count, _, _) in &totals {
            let _ = writeln!(out, "envoy_cluster_upstream_rq_total{{envoy_cluster_name=\"{cluster}\"}} {count}");
        }
        // Envoy's histogram is in milliseconds.
        out.push_str("# TYPE envoy_cluster_upstream_rq_time histogram\n");
        for (cluster, count, sum, buckets) in &totals {
            for (b, n) in BUCKETS.iter().zip(buckets) {
                let _ = writeln!(out, "envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name=\"{cluster}\",le=\"{}\"}} {n}", b * 1000.0);
            }
            let _ = writeln!(
                out,
                "envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name=\"{cluster}\",le=\"+Inf\"}} {count}\nenvoy_cluster_upstream_rq_time_sum{{envoy_cluster_name=\"{cluster}\"}} {}\nenvoy_cluster_upstream_rq_time_count{{envoy_cluster_name=\"{cluster}\"}} {count}",
                sum * 1000.0
            );
        }
        out
    }
}

pub(crate) fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())).map_err(|never| match never {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

pub(crate) fn unix_seconds() -> u64 {
    std::time::SystemTime::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_secs())
}

/// The UTC date of a day counted from the Unix epoch: (year, month 1-12, day 1-31), by Howard
/// Hinnant's `civil_from_days`.
pub fn civil_from_days(days: u64) -> (i64, usize, i64) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month as usize, day)
}

/// nginx's `$time_local` in UTC: `24/Nov/2026:17:42:24 +0000`.
fn local_time(unix: u64) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let (days, secs) = (unix / 86_400, unix % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!("{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000", MONTHS[month - 1], secs / 3600, secs / 60 % 60, secs % 60)
}

thread_local! {
    /// The metrics key of the request being recorded.
    static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    /// The `Date` header's value, made once a second.
    static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
}

/// Appends a `date` header for now.
pub(crate) fn push_date(out: &mut Vec<u8>) {
    DATE.with_borrow_mut(|(second, text)| {
        let now = unix_seconds();
        if *second != now || text.is_empty() {
            *second = now;
            *text = httpdate::fmt_http_date(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(now));
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
}

/// Drops the hop-by-hop headers (see [`crate::request::is_hop_by_hop`]) from a header map.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let doomed: Vec<HeaderName> = {
        let connection: Vec<&[u8]> = headers.get_all(header::CONNECTION).iter().map(HeaderValue::as_bytes).collect();
        headers.keys().filter(|n| crate::request::is_hop_by_hop(n.as_str(), &connection)).cloned().collect()
    };
    for n in doomed {
        headers.remove(n);
    }
}

/// Serves one HTTP/2 request (through hyper).
async fn handle_h2(shared: Arc<Shared>, req: Request<Incoming>, at: Listener) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    let (parts, body) = req.into_parts();
    let snapshot = shared.snapshot();
    let (host, plan) = {
        let head = RequestHead::from_parts(&parts);
        let host = head.host();
        let plan = crate::plan::plan(&shared, &snapshot, &head, host.as_deref(), &at);
        (host, plan)
    };
    let (response, upstream) = match plan {
        Plan::Answer(a) => (answer(&a), None),
        Plan::Forward(f) => {
            let upstream_start = Instant::now();
            let response = forward_h2(&shared, &parts, body, &f).await;
            let status = response.status().as_u16();
            (response, Some((f.upstream, f.endpoint, upstream_start.elapsed(), status, f.route)))
        }
    };
    let request_line = shared.access_log().then(|| format!("{} {} HTTP/2.0", parts.method, parts.uri.path_and_query().map_or("/", |p| p.as_str())));
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("-");
    shared.record(&Record {
        peer: at.peer,
        host: host.as_deref(),
        method: parts.method.as_str(),
        request_line: request_line.as_deref(),
        referer: header("referer"),
        user_agent: header("user-agent"),
        request_length: 0,
        status: response.status().as_u16(),
        body_bytes_sent: 0,
        took: start.elapsed(),
        upstream: upstream.as_ref().map(|(n, a, t, s, _)| (n.as_str(), *a, *t, *s)),
        route: upstream.as_ref().map(|u| u.4.as_str()),
    });
    Ok(response)
}

fn answer(a: &Answer) -> Response<Body> {
    let mut r = text(a.status, &a.body);
    if let Some(v) = a.location.as_deref().and_then(|l| HeaderValue::from_str(l).ok()) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Carries out a forward plan for an HTTP/2 request with hyper's client.
async fn forward_h2(shared: &Shared, parts: &http::request::Parts, body: Incoming, f: &Forward) -> Response<Body> {
    let body = match read_body(body, f.max_body).await {
        Ok(b) => b,
        Err(StatusCode::PAYLOAD_TOO_LARGE) => {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "413 Request Entity Too Large\n");
        }
        Err(status) => return text(status, "400 Bad Request\n"),
    };
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    headers.remove(header::CONTENT_LENGTH);
    f.request.apply(&mut headers);
    let Ok(uri) = format!("http://{}{}", f.endpoint, f.target).parse::<Uri>() else {
        return text(StatusCode::BAD_REQUEST, "400 Bad Request\n");
    };
    for &m in &f.mirrors {
        if let Ok(uri) = format!("http://{m}{}", f.target).parse::<Uri>() {
            let (client, method, headers, body) = (shared.http1.clone(), parts.method.clone(), headers.clone(), body.clone());
            tokio::spawn(async move {
                let _ = send(&client, method, uri, headers, body, Duration::from_secs(10)).await;
            });
        }
    }
    let deadline = f.deadline.unwrap_or(f.connect_timeout + f.read_timeout);
    let sent = match f.protocol {
        BackendProtocol::Http => send(&shared.http1, parts.method.clone(), uri, headers, body, deadline).await,
        BackendProtocol::Grpc => send(&shared.http2, parts.method.clone(), uri, headers, body, deadline).await,
        BackendProtocol::Https | BackendProtocol::Grpcs => send_tls(shared, f, parts.method.clone(), uri, headers, body, deadline).await,
    };
    match sent {
        Ok(response) => {
            let (mut rparts, rbody) = response.into_parts();
            strip_hop_by_hop(&mut rparts.headers);
            f.response.apply(&mut rparts.headers);
            Response::from_parts(rparts, rbody.boxed())
        }
        Err(e) => e,
    }
}

/// One upstream exchange within `deadline`: 502 when it fails, 504 when it takes too long.
async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: http::Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    deadline: Duration,
) -> Result<Response<Incoming>, Response<Body>> {
    let mut up = Request::builder().method(method).uri(uri);
    if let Some(h) = up.headers_mut() {
        *h = headers;
    }
    let up = up.body(Full::new(body)).map_err(|_| text(StatusCode::BAD_REQUEST, "400 Bad Request\n"))?;
    match tokio::time::timeout(deadline, client.request(up)).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(_)) => Err(text(StatusCode::BAD_GATEWAY, "502 Bad Gateway\n")),
        Err(_) => Err(text(StatusCode::GATEWAY_TIMEOUT, "504 Gateway Time-out\n")),
    }
}

/// One exchange over a new TLS connection to the endpoint: HTTP/1.1 for `HTTPS` backends, HTTP/2
/// for `GRPCS` ones (an HTTP/2 client's requests to TLS backends are few; they are not pooled).
async fn send_tls(
    shared: &Shared,
    f: &Forward,
    method: http::Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    deadline: Duration,
) -> Result<Response<Incoming>, Response<Body>> {
    let exchange = async {
        let h2 = f.protocol == BackendProtocol::Grpcs;
        let conn =
            if h2 { shared.pool.connect_h2(f.endpoint, f.connect_timeout).await } else { shared.pool.connect(f.endpoint, true, f.connect_timeout).await }
                .map_err(|_| ())?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        // HTTP/1.1 takes the path (the Host header names the site); HTTP/2 the full URI, for its
        // :scheme and :authority.
        let target = match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
            Some(authority) if h2 => format!("https://{authority}{path}"),
            _ => path.to_owned(),
        };
        let mut up = Request::builder().method(method).uri(target);
        if let Some(h) = up.headers_mut() {
            *h = headers;
        }
        let up = up.body(Full::new(body)).map_err(|_| ())?;
        if h2 {
            let (mut send, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(conn)).await.map_err(|_| ())?;
            tokio::spawn(connection);
            send.send_request(up).await.map_err(|_| ())
        } else {
            let (mut send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(conn)).await.map_err(|_| ())?;
            tokio::spawn(connection);
            send.send_request(up).await.map_err(|_| ())
        }
    };
    match tokio::time::timeout(deadline, exchange).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(())) => Err(text(StatusCode::BAD_GATEWAY, "502 Bad Gateway\n")),
        Err(_) => Err(text(StatusCode::GATEWAY_TIMEOUT, "504 Gateway Time-out\n")),
    }
}

/// An HTTP/2 body, at most `max` bytes: 413 over it, 400 if it breaks off.
async fn read_body(mut body: Incoming, max: Option<u64>) -> Result<Bytes, StatusCode> {
    let max = max.unwrap_or(u64::MAX);
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(StatusCode::BAD_REQUEST);
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if (buf.len() + data.len()) as u64 > max {
            return Err(StatusCode::PAYLOAD_TOO_LARGE);
        }
        buf.extend_from_slice(&data);
    }
    Ok(Bytes::from(buf))
}

/// Serves `/metrics` and `/healthz` (ingress-nginx's port 10254) on `listener`.
pub async fn serve_metrics(listener: TcpListener, shared: Arc<Shared>) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let shared = Arc::clone(&shared);
                async move {
                    Ok::<_, Infallible>(match req.uri().path() {
                        "/metrics" => text(StatusCode::OK, &shared.metrics()),
                        "/healthz" => text(StatusCode::OK, "ok"),
                        _ => text(StatusCode::NOT_FOUND, "404 page not found\n"),
                    })
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(60))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The cleartext HTTP/2 connection preface (prior knowledge, RFC 9113 §3.3).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves a connection: HTTP/2 when `h2` (ALPN) or when it opens with the preface, else HTTP/1.
async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(shared: Arc<Shared>, io: S, at: Listener, h2: bool) {
    shared.connections.fetch_add(1, Ordering::Relaxed);
    let counted = Arc::clone(&shared);
    serve_protocol(shared, io, at, h2).await;
    counted.connections.fetch_sub(1, Ordering::Relaxed);
}

async fn serve_protocol<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(shared: Arc<Shared>, mut io: S, at: Listener, h2: bool) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut h2 = h2;
    if !h2 {
        // Enough of the first bytes to tell the preface from an HTTP/1 request line.
        while buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&buf) {
            match tokio::time::timeout(shared.client_header_timeout(), io.read_buf(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
        }
        h2 = buf.starts_with(H2_PREFACE);
    }
    if !h2 {
        return crate::h1::serve(shared, io, buf, at).await;
    }
    let service = hyper::service::service_fn(move |req| handle_h2(Arc::clone(&shared), req, at.clone()));
    let io = Rewind { prefix: buf.freeze(), io };
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new()).max_header_list_size(64 * 1024);
    let _ = builder.serve_connection(TokioIo::new(io), service).await;
}

/// A stream that first yields bytes already read from it.
struct Rewind<S> {
    prefix: Bytes,
    io: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serves plain HTTP on `listener`.
pub async fn serve_http(listener: TcpListener, shared: Arc<Shared>) -> std::io::Result<()> {
    let port = listener.local_addr()?.port();
    loop {
        let (stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(Arc::clone(&shared), stream, Listener::new(peer, false, port), false));
    }
}

/// Serves HTTPS on `listener`, certificates chosen by SNI from the current snapshot.
pub async fn serve_https(listener: TcpListener, shared: Arc<Shared>) -> std::io::Result<()> {
    let port = listener.local_addr()?.port();
    let resolver = Arc::new(Resolver(Arc::clone(&shared)));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    loop {
        let (stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (shared, acceptor) = (Arc::clone(&shared), acceptor.clone());
        tokio::spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await else {
                return;
            };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            serve_connection(shared, tls, Listener::new(peer, true, port), h2).await;
        });
    }
}

struct Resolver(Arc<Shared>);

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

impl rustls::server::ResolvesServerCert for Resolver {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.snapshot().certs.for_name(hello.server_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_on_ingress_nginx_and_envoy_names() {
        let shared = Shared::new(Snapshot::default());
        let peer: SocketAddr = "192.0.2.1:5000".parse().unwrap_or_else(|_| unreachable!());
        let upstream: SocketAddr = "10.0.0.1:80".parse().unwrap_or_else(|_| unreachable!());
        let record = |route: &'static str, status: u16| Record {
            peer,
            host: Some("api.example.com"),
            method: "GET",
            request_line: None,
            referer: "-",
            user_agent: "-",
            request_length: 120,
            status,
            body_bytes_sent: 2000,
            took: Duration::from_millis(3),
            upstream: Some(("production-api-service-80", upstream, Duration::from_millis(2), status)),
            route: Some(route),
        };
        shared.record(&record("ingress\u{1}production\u{1}app-ingress\u{1}/", 200));
        shared.record(&record("httproute\u{1}production\u{1}api-route\u{1}0", 200));
        shared.record(&record("httproute\u{1}production\u{1}api-route\u{1}0", 503));
        let text = shared.metrics();
        let labels = "host=\"api.example.com\",ingress=\"app-ingress\",method=\"GET\",namespace=\"production\",path=\"/\",service=\"production-api-service-80\",status=\"200\"";
        for line in [
            format!("nginx_ingress_controller_requests{{{labels}}} 1"),
            format!("nginx_ingress_controller_request_duration_seconds_bucket{{{labels},le=\"0.005\"}} 1"),
            format!("nginx_ingress_controller_response_size_bucket{{{labels},le=\"1000\"}} 0"),
            format!("nginx_ingress_controller_response_size_bucket{{{labels},le=\"10000\"}} 1"),
            format!("nginx_ingress_controller_request_size_sum{{{labels}}} 120"),
            "envoy_cluster_upstream_rq{envoy_response_code=\"503\",envoy_cluster_name=\"httproute/production/api-route/rule/0\"} 1".into(),
            "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"httproute/production/api-route/rule/0\"} 2".into(),
            "nginx_ingress_controller_config_last_reload_successful 1".into(),
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
    }

    #[test]
    fn limit_rps_allows_nginx_s_burst_then_drains_at_the_rate() {
        let shared = Shared::new(Snapshot::default());
        let source = crate::routes::Source { created: String::new(), namespace: "ns".into(), name: "ing".into() };
        let client: IpAddr = "192.0.2.7".parse().unwrap_or_else(|_| unreachable!());
        // limit-rps 2, burst multiplier 5: the first request, then a burst of 10, then 503s.
        let allowed = (0..20).filter(|_| shared.within_rate(&source, "/", client, 2, 10)).count();
        assert_eq!(allowed, 11);
        // Another client and another path have budgets of their own.
        assert!(shared.within_rate(&source, "/", "192.0.2.8".parse().unwrap_or_else(|_| unreachable!()), 2, 10));
        assert!(shared.within_rate(&source, "/other", client, 2, 10));
        // Half a second drains one request at 2 per second.
        std::thread::sleep(Duration::from_millis(520));
        assert!(shared.within_rate(&source, "/", client, 2, 10));
        assert!(!shared.within_rate(&source, "/", client, 2, 10));
    }

    #[test]
    fn local_time_is_nginx_s() {
        assert_eq!(local_time(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(local_time(1_795_542_144), "24/Nov/2026:17:42:24 +0000");
        assert_eq!(local_time(951_782_400), "29/Feb/2000:00:00:00 +0000");
    }
}
