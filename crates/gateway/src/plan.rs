//! What the proxy does with one request, decided from its head alone: answer it (404, 308, 403,
//! 503, a Gateway API redirect…) or forward it to one endpoint with the header edits, body limit
//! and timeouts its route asks for. The HTTP/1 and HTTP/2 connection handlers both carry a plan
//! out; neither decides anything itself.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use model::gateway_api::{HeaderModifier, PathModifier};

use crate::annotations::{BackendProtocol, Canary};
use crate::httproute::{Entry, PathMatch, Target};
use crate::request::RequestHead;
use crate::routes::{Backend, Decision, PathRoute, ServicePort};
use crate::server::{Shared, Snapshot};

/// Gateway API requests with no timeout of their own get this (the spec leaves it to us).
const GATEWAY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Connecting to a Gateway API backend (ingress-nginx's `proxy-connect-timeout` default).
const GATEWAY_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What to do with a request.
#[derive(Debug)]
pub enum Plan {
    /// Answer it without a backend.
    Answer(Answer),
    /// Send it to a backend.
    Forward(Box<Forward>),
}

/// An answer of the proxy's own.
#[derive(Debug)]
pub struct Answer {
    /// Status.
    pub status: StatusCode,
    /// `Location`, for redirects.
    pub location: Option<String>,
    /// A plain-text body.
    pub body: String,
}

/// A request on its way to one endpoint.
#[derive(Debug)]
pub struct Forward {
    /// The upstream's name in logs and metrics (`namespace-service-port`, as ingress-nginx's).
    pub upstream: String,
    /// The route that took the request, for metrics: `ingress␁namespace␁name␁path` or
    /// `httproute␁namespace␁name␁rule index` (␁ is U+0001).
    pub route: String,
    /// The endpoint.
    pub endpoint: SocketAddr,
    /// How to talk to it.
    pub protocol: BackendProtocol,
    /// The request target sent (path and query).
    pub target: String,
    /// Changes to the request's headers (after hop-by-hop ones are dropped).
    pub request: Edits,
    /// Changes to the response's headers.
    pub response: Edits,
    /// The largest request body (`None`: no limit).
    pub max_body: Option<u64>,
    /// Connecting to the endpoint.
    pub connect_timeout: Duration,
    /// Between two reads of the response (nginx's `proxy_read_timeout`).
    pub read_timeout: Duration,
    /// The whole exchange (Gateway API `timeouts.request`).
    pub deadline: Option<Duration>,
    /// Copies go to these endpoints; their answers are dropped.
    pub mirrors: Vec<SocketAddr>,
}

/// Header changes: `set` replaces a header, `add` appends to it, `remove` drops it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Edits {
    /// Replacing every value of the name.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Appended.
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Removed from the message.
    pub remove: Vec<HeaderName>,
}

impl Edits {
    /// Replaces every value of `name`.
    pub fn set(&mut self, name: HeaderName, value: HeaderValue) {
        self.set.retain(|(n, _)| *n != name);
        self.add.retain(|(n, _)| *n != name);
        self.set.push((name, value));
    }

    /// Appends a value.
    pub fn add(&mut self, name: HeaderName, value: HeaderValue) {
        self.add.push((name, value));
    }

    /// Removes every value of `name`, the message's and earlier edits' alike.
    pub fn remove(&mut self, name: HeaderName) {
        self.set.retain(|(n, _)| *n != name);
        self.add.retain(|(n, _)| *n != name);
        self.remove.push(name);
    }

    /// Whether the message's own values of a header are dropped (replaced or removed).
    pub fn drops(&self, name: &str) -> bool {
        self.set.iter().map(|(n, _)| n).chain(&self.remove).any(|n| n.as_str().eq_ignore_ascii_case(name))
    }

    /// A Gateway API header modifier (set, then add, then remove).
    pub fn modifier(&mut self, m: &HeaderModifier) {
        for h in &m.set {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_str(&h.value)) {
                self.set(n, v);
            }
        }
        for h in &m.add {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_str(&h.value)) {
                self.add(n, v);
            }
        }
        for name in &m.remove {
            if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                self.remove(n);
            }
        }
    }

    /// Applies the edits to a header map.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for n in &self.remove {
            headers.remove(n);
        }
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
        // Gateway API: `add` appends to the values already there (`my-header: foo,bar`), in
        // one field as the spec's example shows it.
        for (n, v) in &self.add {
            // Set-Cookie is the one header whose values cannot share a field (RFC 9110 §5.3).
            if n == http::header::SET_COOKIE {
                headers.append(n.clone(), v.clone());
                continue;
            }
            let joined = join_values(headers.get_all(n).iter().map(HeaderValue::as_bytes).chain([v.as_bytes()]));
            match HeaderValue::from_bytes(&joined) {
                Ok(value) => {
                    headers.insert(n.clone(), value);
                }
                Err(_) => {
                    headers.append(n.clone(), v.clone());
                }
            }
        }
    }
}

/// A header's values joined in one field with `,` (RFC 9110 §5.3).
pub fn join_values<'v>(values: impl IntoIterator<Item = &'v [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        if !out.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(v);
    }
    out
}

/// Where a request came in: one per connection.
#[derive(Clone, Debug)]
pub struct Listener {
    /// The client.
    pub peer: SocketAddr,
    /// Over TLS.
    pub https: bool,
    /// The port it came in on.
    pub port: u16,
    /// The Gateway (namespace, name) whose own address the connection came to; `None` on an
    /// address every Gateway shares (their listeners merged, as `gateway serve` has today).
    pub gateway: Option<(String, String)>,
    /// The client's address and the port as header values, made once per connection.
    peer_value: HeaderValue,
    port_value: HeaderValue,
}

impl Listener {
    /// A connection from `peer` on `port`.
    pub fn new(peer: SocketAddr, https: bool, port: u16) -> Listener {
        let peer_value = HeaderValue::from_str(&peer.ip().to_string()).unwrap_or_else(|_| HeaderValue::from_static("-"));
        Listener { peer, https, port, gateway: None, peer_value, port_value: HeaderValue::from(port) }
    }

    /// The same, on the address of one Gateway: only its listeners take the requests.
    pub fn at_gateway(mut self, namespace: &str, name: &str) -> Listener {
        self.gateway = Some((namespace.to_owned(), name.to_owned()));
        self
    }
}

fn answer(status: StatusCode, body: impl Into<String>) -> Plan {
    Plan::Answer(Answer { status, location: None, body: body.into() })
}

fn redirect(status: StatusCode, location: String) -> Plan {
    Plan::Answer(Answer { status, location: Some(location), body: String::new() })
}

/// Decides what to do with a request for `host` (its valid host, see [`RequestHead::host`];
/// `None`: 400).
pub fn plan(shared: &Shared, snapshot: &Snapshot, head: &RequestHead<'_>, host: Option<&str>, at: &Listener) -> Plan {
    let Some(host) = host else {
        return answer(StatusCode::BAD_REQUEST, "400 Bad Request: invalid Host\n");
    };
    // Routes match the normalized path; the request goes on as received unless rewritten.
    let Ok(path) = crate::request::normalized_path(head.path) else {
        return answer(StatusCode::BAD_REQUEST, "400 Bad Request: invalid path\n");
    };
    // Gateway API routes first; a host no Gateway listener takes goes on to the Ingresses.
    let protocol = if at.https { "HTTPS" } else { "HTTP" };
    if snapshot.gateway.listeners.iter().any(|l| l.listener.protocol == protocol) {
        let query = head.query_pairs();
        let lookup = |name: &str| head.header(name).map(str::to_owned);
        let view = crate::httproute::RequestView { method: head.method, path: &path, headers: &lookup, query: &query };
        if let Some(entry) = snapshot.gateway.select_for(protocol, at.gateway.as_ref(), host, &view) {
            return plan_httproute(shared, snapshot, head, &path, entry, at, host);
        }
        if snapshot.gateway.claims(protocol, at.gateway.as_ref(), host) {
            return answer(StatusCode::NOT_FOUND, "404 Not Found: no route of the Gateway matches\n");
        }
    }
    plan_ingress(shared, snapshot, head, &path, at, host)
}

fn plan_ingress(shared: &Shared, snapshot: &Snapshot, head: &RequestHead<'_>, path: &str, at: &Listener, host: &str) -> Plan {
    let (route, host_routes) = match snapshot.routes.route(host, path) {
        Decision::Route(r, h) => (r, h),
        Decision::NotFound => return answer(StatusCode::NOT_FOUND, "default backend - 404\n"),
    };
    let s = &route.settings;
    if !at.https && ((host_routes.tls && s.ssl_redirect) || s.force_ssl_redirect) {
        return redirect(StatusCode::PERMANENT_REDIRECT, format!("https://{host}{}", head.path_and_query()));
    }
    if !s.allow_sources.is_empty() && !s.allow_sources.iter().any(|n| n.contains(&at.peer.ip())) {
        return answer(StatusCode::FORBIDDEN, "403 Forbidden\n");
    }
    if let Some(rps) = s.limit_rps
        && !shared.within_rate(&route.source, &route.path, at.peer.ip(), rps, rps.saturating_mul(s.limit_burst_multiplier))
    {
        return answer(StatusCode::SERVICE_UNAVAILABLE, "503 Service Temporarily Unavailable\n");
    }
    // Main backend or a canary.
    let roll = shared.next.fetch_add(1, Ordering::Relaxed);
    let backend =
        route.canaries.iter().find(|c| canary_takes(c, head, (roll % 100_000).wrapping_mul(2_654_435_761) % 10_000)).map_or(&route.backend, |c| &c.backend);
    let (namespace, service, service_port) = match backend {
        Backend::Service { namespace, name, port } => (namespace, name, port),
        Backend::Unavailable(why) => {
            return answer(StatusCode::SERVICE_UNAVAILABLE, format!("503 Service Temporarily Unavailable: {why}\n"));
        }
    };
    let endpoints = match snapshot.backends.endpoints(namespace, service, service_port) {
        Ok(e) => e,
        Err(why) => {
            return answer(StatusCode::SERVICE_UNAVAILABLE, format!("503 Service Temporarily Unavailable: {why}\n"));
        }
    };
    // Cookie affinity keeps a client on the endpoint its cookie names.
    let affinity = s.affinity.as_ref();
    let sticky = affinity.and_then(|a| head.cookie(&a.cookie)).and_then(|v| endpoints.iter().find(|e| endpoint_cookie(e) == v));
    let endpoint = match sticky {
        Some(e) => *e,
        None => match snapshot.backends.next_endpoint(namespace, service, service_port) {
            Ok(e) => e,
            Err(why) => return answer(StatusCode::SERVICE_UNAVAILABLE, format!("503 Service Temporarily Unavailable: {why}\n")),
        },
    };
    let target = match rewrite(route, path) {
        Some(new) => match head.query {
            Some(q) => format!("{new}?{q}"),
            None => new,
        },
        None => head.path_and_query(),
    };
    let mut response = Edits::default();
    if let Some(a) = affinity
        && sticky.is_none()
    {
        let path = a.path.as_deref().unwrap_or(&route.path);
        let max_age = a.max_age.map(|m| format!("; Max-Age={m}")).unwrap_or_default();
        if let Ok(v) = HeaderValue::from_str(&format!("{}={}; Path={path}{max_age}; HttpOnly", a.cookie, endpoint_cookie(&endpoint))) {
            response.add(http::header::SET_COOKIE, v);
        }
    }
    Plan::Forward(Box::new(Forward {
        upstream: upstream_name(namespace, service, service_port),
        route: format!("ingress\u{1}{}\u{1}{}\u{1}{}", route.source.namespace, route.source.name, route.path),
        endpoint,
        protocol: s.backend_protocol,
        target,
        request: forwarded_headers(head, at, host, roll),
        response,
        max_body: s.max_body,
        connect_timeout: s.connect_timeout,
        read_timeout: s.read_timeout,
        deadline: None,
        mirrors: Vec::new(),
    }))
}

/// A request an HTTPRoute rule took: its filters (RequestRedirect, URLRewrite,
/// Request/ResponseHeaderModifier, RequestMirror), a weighted choice among its backends (500 for
/// the share of invalid ones, 500 without backends), the endpoints of the chosen Service (503
/// without any), and `timeouts.request`.
fn plan_httproute(shared: &Shared, snapshot: &Snapshot, head: &RequestHead<'_>, path: &str, entry: &Entry, at: &Listener, host: &str) -> Plan {
    let rule = &entry.rule;
    let query = head.query.map(|q| format!("?{q}")).unwrap_or_default();
    let roll = shared.next.fetch_add(1, Ordering::Relaxed);
    let mut request = forwarded_headers(head, at, host, roll);
    let mut response = Edits::default();
    let mut upstream_path = head.path.to_owned();
    let mut mirrors = Vec::new();
    for f in &rule.filters {
        match f.type_.as_str() {
            "RequestRedirect" => {
                let Some(r) = &f.request_redirect else {
                    continue;
                };
                let scheme = r.scheme.clone().unwrap_or_else(|| if at.https { "https".into() } else { "http".into() });
                let hostname = r.hostname.as_deref().unwrap_or(host);
                // No port: the scheme's well-known one when the scheme is given, else the listener's.
                let port = match (r.port, &r.scheme) {
                    (Some(p), _) => Some(p),
                    (None, Some(_)) => None,
                    (None, None) => Some(at.port),
                };
                let port = port.filter(|p| !((scheme == "http" && *p == 80) || (scheme == "https" && *p == 443)));
                let path = r.path.as_ref().map_or_else(|| head.path.to_owned(), |m| new_path(path, &entry.m.path, m));
                let location = match port {
                    Some(p) => format!("{scheme}://{hostname}:{p}{path}{query}"),
                    None => format!("{scheme}://{hostname}{path}{query}"),
                };
                return redirect(StatusCode::from_u16(r.status_code.unwrap_or(302)).unwrap_or(StatusCode::FOUND), location);
            }
            "RequestHeaderModifier" => {
                if let Some(m) = &f.request_header_modifier {
                    request.modifier(m);
                }
            }
            "ResponseHeaderModifier" => {
                if let Some(m) = &f.response_header_modifier {
                    response.modifier(m);
                }
            }
            "URLRewrite" => {
                if let Some(u) = &f.url_rewrite {
                    if let Some(h) = u.hostname.as_deref().and_then(|h| HeaderValue::from_str(h).ok()) {
                        request.set(http::header::HOST, h);
                    }
                    if let Some(m) = &u.path {
                        upstream_path = new_path(path, &entry.m.path, m);
                    }
                }
            }
            "RequestMirror" => {
                let Some(m) = f.request_mirror.as_ref().map(|m| &m.backend_ref) else {
                    continue;
                };
                let ns = m.namespace.as_deref().unwrap_or(&entry.source.namespace);
                let Some(port) = m.port else { continue };
                if let Ok(eps) = snapshot.backends.endpoints(ns, &m.name, &ServicePort::Number(port)) {
                    mirrors.push(eps[roll % eps.len()]);
                }
            }
            _ => {}
        }
    }
    let target = format!("{upstream_path}{query}");
    // A weighted choice; an invalid backend answers 500 for its share.
    let total: u64 = rule.backends.iter().map(|(_, w)| u64::from(*w)).sum();
    if total == 0 {
        return answer(StatusCode::INTERNAL_SERVER_ERROR, "500 Internal Server Error: no backend\n");
    }
    let mut pick = (roll as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) % total;
    let chosen = rule.backends.iter().find(|(_, w)| {
        let take = pick < u64::from(*w);
        pick = pick.saturating_sub(u64::from(*w));
        take
    });
    let (namespace, name, service_port) = match chosen {
        Some((Target::Service { namespace, name, port }, _)) => (namespace, name, port),
        Some((Target::Invalid(why), _)) => {
            return answer(StatusCode::INTERNAL_SERVER_ERROR, format!("500 Internal Server Error: {why}\n"));
        }
        None => {
            return answer(StatusCode::INTERNAL_SERVER_ERROR, "500 Internal Server Error: no backend\n");
        }
    };
    let endpoint = match snapshot.backends.next_endpoint(namespace, name, service_port) {
        Ok(e) => e,
        Err(why) => {
            return answer(StatusCode::SERVICE_UNAVAILABLE, format!("503 Service Unavailable: {why}\n"));
        }
    };
    Plan::Forward(Box::new(Forward {
        upstream: upstream_name(namespace, name, service_port),
        route: format!("httproute\u{1}{}\u{1}{}\u{1}{}", entry.source.namespace, entry.source.name, entry.position.0),
        endpoint,
        protocol: BackendProtocol::Http,
        target,
        request,
        response,
        max_body: None,
        connect_timeout: GATEWAY_CONNECT_TIMEOUT,
        read_timeout: rule.backend_timeout.or(rule.timeout).unwrap_or(GATEWAY_READ_TIMEOUT),
        deadline: rule.timeout,
        mirrors,
    }))
}

fn upstream_name(namespace: &str, service: &str, port: &ServicePort) -> String {
    match port {
        ServicePort::Number(n) => format!("{namespace}-{service}-{n}"),
        ServicePort::Name(n) => format!("{namespace}-{service}-{n}"),
    }
}

/// The `X-Forwarded-*` set ingress-nginx sends, and the Host an HTTP/2 or absolute-form
/// request carried in its target.
fn forwarded_headers(head: &RequestHead<'_>, at: &Listener, host: &str, roll: usize) -> Edits {
    const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
    const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
    const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    const X_FORWARDED_SCHEME: HeaderName = HeaderName::from_static("x-forwarded-scheme");
    const X_SCHEME: HeaderName = HeaderName::from_static("x-scheme");
    const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    let scheme = HeaderValue::from_static(if at.https { "https" } else { "http" });
    let forwarded_for = match head.header("x-forwarded-for") {
        Some(prior) => HeaderValue::from_str(&format!("{prior}, {}", at.peer.ip())),
        None => Ok(at.peer_value.clone()),
    };
    let request_id = match head.header("x-request-id") {
        Some(id) => HeaderValue::from_str(id),
        None => HeaderValue::from_bytes(&request_id(roll)),
    };
    let mut set = Vec::with_capacity(10);
    for (name, value) in [
        (X_FORWARDED_FOR, forwarded_for),
        (X_REAL_IP, Ok(at.peer_value.clone())),
        (X_FORWARDED_HOST, HeaderValue::from_str(host)),
        (X_FORWARDED_PORT, Ok(at.port_value.clone())),
        (X_FORWARDED_PROTO, Ok(scheme.clone())),
        (X_FORWARDED_SCHEME, Ok(scheme.clone())),
        (X_SCHEME, Ok(scheme)),
        (X_REQUEST_ID, request_id),
    ] {
        if let Ok(v) = value {
            set.push((name, v));
        }
    }
    if let Some(authority) = head.authority
        && let Ok(v) = HeaderValue::from_str(authority)
    {
        set.push((http::header::HOST, v));
    }
    Edits { set, add: Vec::new(), remove: Vec::new() }
}

/// A request ID as ingress-nginx's `$request_id`: 32 hex digits, unique per request (a
/// per-process random start, the request's sequence number mixed in).
fn request_id(roll: usize) -> [u8; 32] {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let now = std::time::SystemTime::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_nanos());
        model::cluster::stable_hash(format!("{now}-{}", std::process::id()).as_bytes())
    });
    // splitmix64 of the sequence: distinct for distinct requests, no clock read per request.
    let mut z = seed.wrapping_add((roll as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let value = u128::from(z) << 64 | u128::from(seed ^ roll as u64);
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = b"0123456789abcdef"[((value >> (124 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// Whether a canary takes this request (header, then cookie, then weight).
fn canary_takes(c: &Canary, head: &RequestHead<'_>, roll: usize) -> bool {
    if let Some((name, value)) = &c.by_header
        && let Some(v) = head.header(name)
    {
        match value {
            Some(want) => return v == want,
            None if v == "always" => return true,
            None if v == "never" => return false,
            None => {}
        }
    }
    if let Some(cookie) = &c.by_cookie
        && let Some(v) = head.cookie(cookie)
    {
        match v {
            "always" => return true,
            "never" => return false,
            _ => {}
        }
    }
    let (weight, total) = c.weight;
    total > 0 && (roll as u64 % u64::from(total)) < u64::from(weight)
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

/// A path rewritten by a `ReplaceFullPath` / `ReplacePrefixMatch` modifier; the prefix is the
/// match's PathPrefix (element-wise, as matched).
fn new_path(path: &str, matched: &PathMatch, m: &PathModifier) -> String {
    match (m.type_.as_str(), matched) {
        ("ReplaceFullPath", _) => m.replace_full_path.clone().unwrap_or_else(|| "/".into()),
        ("ReplacePrefixMatch", PathMatch::Prefix(prefix)) => {
            let replacement = m.replace_prefix_match.clone().unwrap_or_else(|| "/".into());
            let prefix = prefix.trim_end_matches('/');
            let rest = &path[prefix.len().min(path.len())..];
            match (replacement.trim_end_matches('/'), rest) {
                ("", "") => "/".into(),
                ("", r) => r.to_owned(),
                (rep, r) => format!("{rep}{r}"),
            }
        }
        _ => path.to_owned(),
    }
}

/// The affinity cookie's value for an endpoint: a hash of its address, as ingress-nginx's.
fn endpoint_cookie(e: &SocketAddr) -> String {
    format!("{:016x}", model::cluster::stable_hash(e.to_string().as_bytes()))
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
        let c = Canary {
            backend: Backend::Unavailable(String::new()),
            by_header: Some(("X-Canary".into(), None)),
            by_cookie: Some("canary".into()),
            weight: (20, 100),
        };
        let head = |headers: Vec<(&'static str, &'static [u8])>| RequestHead { method: "GET", path: "/", query: None, authority: None, headers };
        assert!(canary_takes(&c, &head(vec![]), 10) && !canary_takes(&c, &head(vec![]), 50), "weight 20 of 100");
        assert!(canary_takes(&c, &head(vec![("x-canary", b"always")]), 50));
        assert!(!canary_takes(&c, &head(vec![("X-Canary", b"never")]), 10));
        assert!(canary_takes(&c, &head(vec![("cookie", b"a=b; canary=always")]), 99));
    }

    #[test]
    fn prefix_replacement_keeps_the_rest_of_the_path() {
        let m = |rep: &str| PathModifier { type_: "ReplacePrefixMatch".into(), replace_full_path: None, replace_prefix_match: Some(rep.into()) };
        let prefix = PathMatch::Prefix("/prefix/one".into());
        assert_eq!(new_path("/prefix/one/two", &prefix, &m("/one")), "/one/two");
        assert_eq!(new_path("/prefix/one", &prefix, &m("/one")), "/one");
        assert_eq!(new_path("/prefix/one/two", &prefix, &m("/")), "/two");
        assert_eq!(new_path("/prefix/one", &prefix, &m("/")), "/");
        let full = PathModifier { type_: "ReplaceFullPath".into(), replace_full_path: Some("/full".into()), replace_prefix_match: None };
        assert_eq!(new_path("/anything/at/all", &prefix, &full), "/full");
    }

    #[test]
    fn edits_set_add_remove() {
        let mut e = Edits::default();
        e.add(HeaderName::from_static("x-a"), HeaderValue::from_static("1"));
        e.set(HeaderName::from_static("x-a"), HeaderValue::from_static("2"));
        e.add(HeaderName::from_static("x-a"), HeaderValue::from_static("3"));
        e.set(HeaderName::from_static("x-b"), HeaderValue::from_static("b"));
        e.remove(HeaderName::from_static("x-b"));
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("0"));
        h.insert("x-b", HeaderValue::from_static("0"));
        h.insert("x-c", HeaderValue::from_static("c"));
        e.apply(&mut h);
        assert_eq!(h.get_all("x-a").iter().collect::<Vec<_>>(), ["2,3"], "add appends to the value in one field");
        assert!(h.get("x-b").is_none() && h.get("x-c").is_some());
        assert!(e.drops("X-A") && e.drops("x-b") && !e.drops("x-c"));
        let mut cookies = Edits::default();
        cookies.add(http::header::SET_COOKIE, HeaderValue::from_static("a=1"));
        let mut h = HeaderMap::new();
        h.insert(http::header::SET_COOKIE, HeaderValue::from_static("b=2"));
        cookies.apply(&mut h);
        assert_eq!(h.get_all(http::header::SET_COOKIE).iter().collect::<Vec<_>>(), ["b=2", "a=1"], "cookies stay apart");
    }
}
