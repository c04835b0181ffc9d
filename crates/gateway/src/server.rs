//! The HTTP(S) proxy: hyper (HTTP/1.1 and HTTP/2) in front, rustls with certificates chosen by
//! SNI, a pooled hyper client to the backends' endpoint addresses behind. Every request reads
//! one immutable snapshot (routes, endpoints, certificates); a change swaps the snapshot, so
//! requests in flight finish on the old one and no connection is refused while it happens.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use model::ClusterState;
use tokio::net::TcpListener;

use crate::annotations::{BackendProtocol, Canary};
use crate::backends::Backends;
use crate::ingress;
use crate::routes::{Backend, Decision, PathRoute, RouteTable};
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
    /// Gateway API: our Gateways' listeners and the HTTPRoutes attached to them.
    pub gateway: crate::httproute::Compiled,
}

impl Snapshot {
    /// The snapshot of the Ingresses whose class's controller is `ingress_controller` and of
    /// the Gateways whose class's controller is `gateway_controller`.
    pub fn build(state: &ClusterState, ingress_controller: &str, gateway_controller: &str) -> Snapshot {
        let ing = ingress::routes(state, ingress_controller);
        let mut problems = ing.problems;
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
        for ((ns, name), parents) in &gateway.status.routes {
            for (parent, conditions) in parents {
                for c in conditions.iter().filter(|c| !c.status) {
                    problems.push(format!("HTTPRoute {ns}/{name} (parent {}): {}={} {}: {}", parent.name, c.type_, c.status, c.reason, c.message));
                }
            }
        }
        Snapshot { routes: ing.table, backends: Backends::build(state), certs, problems, gateway }
    }
}

/// Counters, for metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests answered.
    pub requests: AtomicU64,
    /// Of which 5xx.
    pub errors: AtomicU64,
}

/// What every connection shares.
pub struct Shared {
    snapshot: RwLock<Arc<Snapshot>>,
    pub(crate) http1: Client<HttpConnector, Full<Bytes>>,
    http2: Client<HttpConnector, Full<Bytes>>,
    pub(crate) next: AtomicUsize,
    rates: Mutex<HashMap<(String, IpAddr), (Instant, u32)>>,
    /// Counters.
    pub counters: Counters,
    /// Write the access log (on stderr).
    pub access_log: std::sync::atomic::AtomicBool,
    /// Requests by (host, method, status, upstream): count, duration buckets, duration sum.
    requests: Mutex<std::collections::BTreeMap<RequestLabels, RequestStats>>,
}

/// host, method, status, upstream.
type RequestLabels = (String, String, u16, String);
/// Count, duration buckets (cumulative), duration sum.
type RequestStats = (u64, [u64; BUCKETS.len()], f64);

/// ingress-nginx's `request_duration_seconds` buckets (Prometheus's defaults).
const BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

impl Shared {
    /// Shared state serving `snapshot`.
    pub fn new(snapshot: Snapshot) -> Arc<Shared> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_nodelay(true);
        let http1 = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(60)).build(connector.clone());
        let http2 = Client::builder(TokioExecutor::new()).http2_only(true).build(connector);
        Arc::new(Shared { snapshot: RwLock::new(Arc::new(snapshot)), http1, http2, next: AtomicUsize::new(0), rates: Mutex::new(HashMap::new()), counters: Counters::default(), access_log: std::sync::atomic::AtomicBool::new(true), requests: Mutex::new(Default::default()) })
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().map(|s| Arc::clone(&s)).unwrap_or_else(|p| Arc::clone(&p.into_inner()))
    }

    /// Swaps in a new snapshot; requests in flight keep theirs.
    pub fn swap(&self, snapshot: Snapshot) {
        let new = Arc::new(snapshot);
        match self.snapshot.write() {
            Ok(mut s) => *s = new,
            Err(p) => *p.into_inner() = new,
        }
    }

    /// `limit-rps` for one location and client: a second's budget.
    fn within_rate(&self, location: &str, client: IpAddr, rps: u32) -> bool {
        let Ok(mut rates) = self.rates.lock() else { return true };
        let now = Instant::now();
        let entry = rates.entry((location.to_owned(), client)).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(1) {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= rps
    }
}

pub(crate) fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())).map_err(|never| match never {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// The request's host, without a port, lowercase; `None` when it is not a valid host.
fn host_of<B>(req: &Request<B>) -> Option<String> {
    let raw = match req.headers().get(header::HOST) {
        Some(h) => h.to_str().ok()?.to_owned(),
        None => req.uri().authority()?.as_str().to_owned(),
    };
    let authority: http::uri::Authority = raw.parse().ok()?;
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    let valid = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:_".contains(&b));
    valid.then_some(host)
}

const HOP_BY_HOP: [&str; 8] = ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer", "proxy-authorization"];

pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers.get_all(header::CONNECTION).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()).collect();
    for n in named {
        headers.remove(n);
    }
    for h in HOP_BY_HOP {
        headers.remove(h);
    }
}

/// Whether a canary takes this request (header, then cookie, then weight).
fn canary_takes(c: &Canary, headers: &HeaderMap, roll: u32) -> bool {
    if let Some((name, value)) = &c.by_header
        && let Some(v) = headers.get(name.as_str()).and_then(|v| v.to_str().ok())
    {
        match value {
            Some(want) => return v == want,
            None if v == "always" => return true,
            None if v == "never" => return false,
            None => {}
        }
    }
    if let Some(cookie) = &c.by_cookie
        && let Some(v) = cookie_value(headers, cookie)
    {
        match v.as_str() {
            "always" => return true,
            "never" => return false,
            _ => {}
        }
    }
    let (weight, total) = c.weight;
    total > 0 && roll % total < weight
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

/// nginx's `rewrite <path> <target>`: the path as a case-insensitive regex from the start; the
/// whole URI becomes the target with `$1`..`$9` filled in.
fn rewrite(route: &PathRoute, path: &str) -> Option<String> {
    let target = route.settings.rewrite_target.as_ref()?;
    let re = regex::Regex::new(&format!("(?i)^{}", route.path)).ok()?;
    let caps = re.captures(path)?;
    let mut out = String::new();
    let mut chars = target.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek().and_then(|d| d.to_digit(10))) {
            ('$', Some(n)) => {
                chars.next();
                out.push_str(caps.get(n as usize).map_or("", |m| m.as_str()));
            }
            _ => out.push(c),
        }
    }
    Some(out)
}

/// Serves one request.
pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>, peer: SocketAddr, https: bool, port: u16) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let version = req.version();
    let host = host_of(&req).unwrap_or_default();
    let (response, upstream) = route(&shared, req, peer, https, port).await;
    shared.counters.requests.fetch_add(1, Ordering::Relaxed);
    if response.status().is_server_error() {
        shared.counters.errors.fetch_add(1, Ordering::Relaxed);
    }
    // Labels only for routed requests: a client's made-up Host must not grow the table.
    let (host_label, upstream_label) = match &upstream {
        Some((name, _)) => (host, name.clone()),
        None => ("-".to_owned(), "-".to_owned()),
    };
    if let Ok(mut requests) = shared.requests.lock() {
        let took = start.elapsed().as_secs_f64();
        let entry = requests.entry((host_label, method.to_string(), response.status().as_u16(), upstream_label)).or_insert((0, [0; BUCKETS.len()], 0.0));
        entry.0 += 1;
        entry.2 += took;
        for (i, b) in BUCKETS.iter().enumerate() {
            if took <= *b {
                entry.1[i] += 1;
            }
        }
    }
    if !shared.access_log.load(Ordering::Relaxed) {
        return Ok(response);
    }
    // ingress-nginx's access log format (`log-format-upstream`), less the fields we do not have.
    eprintln!(
        "{} - - [{}] \"{method} {uri} {version:?}\" {} - \"-\" \"-\" - {:.3} [{}] [] {} - - {} -",
        peer.ip(),
        unix_seconds(),
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
        upstream.as_ref().map_or("-".to_owned(), |u| u.0.clone()),
        upstream.as_ref().map_or("-".to_owned(), |u| u.1.to_string()),
        response.status().as_u16(),
    );
    Ok(response)
}

impl Shared {
    /// The Prometheus text of the requests served, on ingress-nginx's metric names.
    pub fn metrics(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::from("# HELP nginx_ingress_controller_requests The total number of client requests\n# TYPE nginx_ingress_controller_requests counter\n");
        let Ok(requests) = self.requests.lock() else { return out };
        for ((host, method, status, service), (count, _, _)) in requests.iter() {
            let _ = writeln!(out, "nginx_ingress_controller_requests{{host=\"{host}\",method=\"{method}\",status=\"{status}\",service=\"{service}\"}} {count}");
        }
        out.push_str("# HELP nginx_ingress_controller_request_duration_seconds The request processing time in seconds\n# TYPE nginx_ingress_controller_request_duration_seconds histogram\n");
        for ((host, method, status, service), (count, buckets, sum)) in requests.iter() {
            let labels = format!("host=\"{host}\",method=\"{method}\",status=\"{status}\",service=\"{service}\"");
            for (b, n) in BUCKETS.iter().zip(buckets) {
                let _ = writeln!(out, "nginx_ingress_controller_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {n}");
            }
            let _ = writeln!(out, "nginx_ingress_controller_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}");
            let _ = writeln!(out, "nginx_ingress_controller_request_duration_seconds_sum{{{labels}}} {sum}");
            let _ = writeln!(out, "nginx_ingress_controller_request_duration_seconds_count{{{labels}}} {count}");
        }
        let snapshot = self.snapshot();
        let _ = write!(
            out,
            "# HELP nginx_ingress_controller_config_problems Problems found in the objects served (podnet).\n# TYPE nginx_ingress_controller_config_problems gauge\nnginx_ingress_controller_config_problems {}\n",
            snapshot.problems.len()
        );
        out
    }
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
            let _ = builder().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_secs())
}

/// The response, and the upstream (name, address) it came from.
async fn route(shared: &Shared, req: Request<Incoming>, peer: SocketAddr, https: bool, port: u16) -> (Response<Body>, Option<(String, SocketAddr)>) {
    let Some(host) = host_of(&req) else {
        return (text(StatusCode::BAD_REQUEST, "400 Bad Request: invalid Host\n"), None);
    };

    let snapshot = shared.snapshot();
    let path = req.uri().path().to_owned();
    // Gateway API routes first; what none of them takes goes on to the Ingresses.
    let protocol = if https { "HTTPS" } else { "HTTP" };
    if snapshot.gateway.listeners.iter().any(|l| l.listener.protocol == protocol) {
        let entry = {
            let query: Vec<(String, String)> = req.uri().query().unwrap_or("").split('&').filter(|kv| !kv.is_empty()).map(|kv| kv.split_once('=').map_or((kv.to_owned(), String::new()), |(k, v)| (k.to_owned(), v.to_owned()))).collect();
            let headers = req.headers();
            let lookup = |name: &str| headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).next().map(str::to_owned);
            let view = crate::httproute::RequestView { method: req.method().as_str(), path: &path, headers: &lookup, query: &query };
            snapshot.gateway.select_for(protocol, &host, &view).cloned()
        };
        if let Some(entry) = entry {
            return crate::gateway_serve::serve(shared, &snapshot, req, &entry, peer, https, port, &host).await;
        }
    }
    let (route, host_routes) = match snapshot.routes.route(&host, &path) {
        Decision::Route(r, h) => (r, h),
        Decision::NotFound => return (text(StatusCode::NOT_FOUND, "default backend - 404\n"), None),
    };
    let s = &route.settings;
    if !https && ((host_routes.tls && s.ssl_redirect) || s.force_ssl_redirect) {
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let mut r = text(StatusCode::PERMANENT_REDIRECT, "308 Permanent Redirect\n");
        if let Ok(v) = HeaderValue::from_str(&format!("https://{host}{pq}")) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return (r, None);
    }
    if !s.allow_sources.is_empty() && !s.allow_sources.iter().any(|n| n.contains(&peer.ip())) {
        return (text(StatusCode::FORBIDDEN, "403 Forbidden\n"), None);
    }
    let location = format!("{}/{}{}", route.source.namespace, route.source.name, route.path);
    if let Some(rps) = s.limit_rps
        && !shared.within_rate(&location, peer.ip(), rps)
    {
        return (text(StatusCode::SERVICE_UNAVAILABLE, "503 Service Temporarily Unavailable\n"), None);
    }
    // The body, up to proxy-body-size (413 one byte over, chunked bodies too).
    let (parts, body) = req.into_parts();
    let body = match read_body(body, s.max_body).await {
        Ok(b) => b,
        Err(status) => return (text(status, if status == StatusCode::PAYLOAD_TOO_LARGE { "413 Request Entity Too Large\n" } else { "400 Bad Request\n" }), None),
    };
    // Main backend or a canary.
    let roll = u32::try_from(shared.next.fetch_add(1, Ordering::Relaxed) % 100_000).unwrap_or(0);
    let backend = route.canaries.iter().find(|c| canary_takes(c, &parts.headers, roll.wrapping_mul(2_654_435_761) % 10_000)).map_or(&route.backend, |c| &c.backend);
    let (namespace, service, service_port) = match backend {
        Backend::Service { namespace, name, port } => (namespace, name, port),
        Backend::Unavailable(why) => return (text(StatusCode::SERVICE_UNAVAILABLE, &format!("503 Service Temporarily Unavailable: {why}\n")), None),
    };
    let endpoints = match snapshot.backends.endpoints(namespace, service, service_port) {
        Ok(e) => e,
        Err(why) => return (text(StatusCode::SERVICE_UNAVAILABLE, &format!("503 Service Temporarily Unavailable: {why}\n")), None),
    };
    // Cookie affinity keeps a client on the endpoint its cookie names.
    let affinity = s.affinity.as_ref();
    let sticky = affinity.and_then(|a| cookie_value(&parts.headers, &a.cookie)).and_then(|v| endpoints.iter().find(|e| endpoint_cookie(e) == v));
    let endpoint = *sticky.unwrap_or_else(|| &endpoints[shared.next.fetch_add(1, Ordering::Relaxed) % endpoints.len()]);
    let upstream_name = format!("{namespace}-{service}-{}", match service_port {
        crate::routes::ServicePort::Number(n) => n.to_string(),
        crate::routes::ServicePort::Name(n) => n.clone(),
    });

    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let upstream_pq = match rewrite(route, &path) {
        Some(new) => match parts.uri.query() {
            Some(q) => format!("{new}?{q}"),
            None => new,
        },
        None => pq,
    };
    let Ok(upstream_uri) = format!("http://{endpoint}{upstream_pq}").parse::<Uri>() else {
        return (text(StatusCode::BAD_REQUEST, "400 Bad Request\n"), None);
    };
    let headers = upstream_headers(&parts, peer, &host, port, https, roll);
    let client = match s.backend_protocol {
        BackendProtocol::Grpc => &shared.http2,
        BackendProtocol::Http => &shared.http1,
        BackendProtocol::Https | BackendProtocol::Grpcs => {
            return (text(StatusCode::BAD_GATEWAY, "502 Bad Gateway: TLS to backends is not supported yet\n"), Some((upstream_name, endpoint)));
        }
    };
    let response = match send(client, parts.method.clone(), upstream_uri, headers, body, s.connect_timeout + s.read_timeout).await {
        Ok(r) => r,
        Err(e) => return (e, Some((upstream_name, endpoint))),
    };
    let (mut rparts, rbody) = response.into_parts();
    strip_hop_by_hop(&mut rparts.headers);
    if let Some(a) = affinity
        && sticky.is_none()
    {
        let path = a.path.clone().unwrap_or_else(|| route.path.clone());
        let max_age = a.max_age.map(|m| format!("; Max-Age={m}")).unwrap_or_default();
        if let Ok(v) = HeaderValue::from_str(&format!("{}={}; Path={path}{max_age}; HttpOnly", a.cookie, endpoint_cookie(&endpoint))) {
            rparts.headers.append(header::SET_COOKIE, v);
        }
    }
    (Response::from_parts(rparts, rbody.boxed()), Some((upstream_name, endpoint)))
}

/// The request headers sent upstream: the client's less hop-by-hop ones, the Host as received,
/// and the `X-Forwarded-*` set ingress-nginx sends.
pub(crate) fn upstream_headers(parts: &http::request::Parts, peer: SocketAddr, host: &str, port: u16, https: bool, roll: u32) -> HeaderMap {
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    // The body is sent re-framed (its length from what was read), never with the client's
    // framing headers: a request with both (hyper keeps Transfer-Encoding, as RFC 9112 says)
    // cannot reach the backend framed differently from how the proxy read it.
    headers.remove(header::CONTENT_LENGTH);
    let scheme = if https { "https" } else { "http" };
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    let request_id = headers.get("x-request-id").and_then(|v| v.to_str().ok()).map_or_else(|| format!("{:032x}", u128::from(roll) << 64 | u128::from(unix_seconds())), str::to_owned);
    for (name, value) in [
        ("x-forwarded-for", forwarded_for),
        ("x-real-ip", peer.ip().to_string()),
        ("x-forwarded-host", host.to_owned()),
        ("x-forwarded-port", port.to_string()),
        ("x-forwarded-proto", scheme.to_owned()),
        ("x-forwarded-scheme", scheme.to_owned()),
        ("x-scheme", scheme.to_owned()),
        ("x-request-id", request_id),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    // HTTP/2 carries the host in :authority: forwarded as received, port and all.
    if !headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(v) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(header::HOST, v);
    }
    headers
}

/// One upstream exchange within `deadline`: 502 when it fails, 504 when it takes too long.
pub(crate) async fn send(client: &Client<HttpConnector, Full<Bytes>>, method: http::Method, uri: Uri, headers: HeaderMap, body: Bytes, deadline: Duration) -> Result<Response<Incoming>, Response<Body>> {
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

/// Bytes of an oversized body still read (and dropped) so that the client sees the 413, as
/// nginx's lingering close does; past this, or after `DRAIN_TIME`, the connection just closes.
const DRAIN_LIMIT: u64 = 64 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// The request body, at most `max` bytes: 413 over it (the rest drained), 400 if it breaks off.
pub(crate) async fn read_body(mut body: Incoming, max: Option<u64>) -> Result<Bytes, StatusCode> {
    let max = max.unwrap_or(u64::MAX);
    let mut buf = Vec::new();
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return Err(StatusCode::BAD_REQUEST) };
        let Ok(data) = frame.into_data() else { continue };
        total += data.len() as u64;
        if total > max {
            let drain = async {
                while total < max.saturating_add(DRAIN_LIMIT) {
                    match body.frame().await {
                        Some(Ok(f)) => total += f.into_data().map_or(0, |d| d.len() as u64),
                        _ => break,
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
            return Err(StatusCode::PAYLOAD_TOO_LARGE);
        }
        buf.extend_from_slice(&data);
    }
    Ok(Bytes::from(buf))
}

/// The affinity cookie's value for an endpoint: a hash of its address, as ingress-nginx's.
fn endpoint_cookie(e: &SocketAddr) -> String {
    format!("{:016x}", model::cluster::stable_hash(e.to_string().as_bytes()))
}

/// Serves plain HTTP on `listener`.
pub async fn serve_http(listener: TcpListener, shared: Arc<Shared>) -> std::io::Result<()> {
    let port = listener.local_addr()?.port();
    loop {
        let (stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(Arc::clone(&shared), req, peer, false, port));
            let _ = builder().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn builder() -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // Slow clients get 60 s for their headers (nginx's client_header_timeout).
    b.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(60)).max_buf_size(64 * 1024);
    b
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
            let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await else { return };
            let service = hyper::service::service_fn(move |req| handle(Arc::clone(&shared), req, peer, true, port));
            let _ = builder().serve_connection(TokioIo::new(tls), service).await;
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
    fn rewrite_target_is_nginx_s() {
        let route = |path: &str, target: &str| PathRoute {
            kind: crate::PathKind::ImplementationSpecific,
            path: path.into(),
            backend: Backend::Unavailable(String::new()),
            source: crate::routes::Source { created: String::new(), namespace: String::new(), name: String::new() },
            settings: crate::annotations::Settings { rewrite_target: Some(target.into()), ..Default::default() },
            canaries: Vec::new(),
            regex: None,
        };
        assert_eq!(rewrite(&route("/something(/|$)(.*)", "/$2"), "/something/new"), Some("/new".into()));
        assert_eq!(rewrite(&route("/something(/|$)(.*)", "/$2"), "/something"), Some("/".into()));
        assert_eq!(rewrite(&route("/foo", "/"), "/foo/bar"), Some("/".into()));
    }

    #[test]
    fn canaries_by_header_cookie_and_weight() {
        let c = Canary { backend: Backend::Unavailable(String::new()), by_header: Some(("X-Canary".into(), None)), by_cookie: Some("canary".into()), weight: (20, 100) };
        let mut h = HeaderMap::new();
        assert!(canary_takes(&c, &h, 10) && !canary_takes(&c, &h, 50), "weight 20 of 100");
        h.insert("x-canary", HeaderValue::from_static("always"));
        assert!(canary_takes(&c, &h, 50));
        h.insert("x-canary", HeaderValue::from_static("never"));
        assert!(!canary_takes(&c, &h, 10));
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=b; canary=always"));
        assert!(canary_takes(&c, &h, 99));
    }
}
