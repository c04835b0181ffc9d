//! Gateway API (standard channel, v1): which HTTPRoutes attach to which listeners of our
//! Gateways, for which hostnames, and in which order their matches are tried; plus the status
//! conditions a controller writes back, with the standard reasons.
//!
//! - A route attaches to a listener its `parentRefs` name (Gateway, optional `sectionName` and
//!   `port`) when the listener allows it (`allowedRoutes`: namespaces `Same` by default, `All`,
//!   or `Selector` on the route's namespace labels; kind HTTPRoute) and their hostnames
//!   intersect (a wildcard covers one or more labels).
//! - For one request, the most specific matching hostname decides which routes compete; among
//!   them the spec's precedence: Exact path, then the longest PathPrefix (then regular
//!   expressions), then a method match, then the most header matches, then the most query
//!   matches, then the oldest route, then `namespace/name`, then rule and match order.
//! - A backend that does not resolve (no such Service, another kind, another namespace without a
//!   ReferenceGrant) answers 500 for its share of the requests.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use model::ClusterState;
use model::Namespaced;
use model::gateway_api::{HttpBackendRef, HttpRoute, HttpRouteFilter, Listener, NameValueMatch, ParentReference};

use crate::routes::{PathRegex, ServicePort, Source};

const GROUP: &str = "gateway.networking.k8s.io";

/// How a path is matched.
#[derive(Clone, Debug, PartialEq)]
pub enum PathMatch {
    /// The whole path.
    Exact(String),
    /// Element-wise prefix.
    Prefix(String),
    /// A regular expression over the whole path.
    Regex(PathRegex),
}

/// A header or query value match.
#[derive(Clone, Debug, PartialEq)]
pub enum ValueMatch {
    /// Equal.
    Exact(String),
    /// The whole value matches.
    Regex(PathRegex),
}

impl ValueMatch {
    fn matches(&self, v: &str) -> bool {
        match self {
            ValueMatch::Exact(want) => v == want,
            ValueMatch::Regex(re) => re.0.is_match(v),
        }
    }
}

/// One `matches[]` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Match {
    /// The path.
    pub path: PathMatch,
    /// Headers (names lowercase), all must match.
    pub headers: Vec<(String, ValueMatch)>,
    /// Query parameters, all must match.
    pub query: Vec<(String, ValueMatch)>,
    /// The method.
    pub method: Option<String>,
}

/// A request as matching sees it.
pub struct RequestView<'a> {
    /// Method.
    pub method: &'a str,
    /// Path (no query).
    pub path: &'a str,
    /// Headers by lowercase name.
    pub headers: &'a dyn Fn(&str) -> Option<String>,
    /// Query parameters in order.
    pub query: &'a [(String, String)],
}

impl Match {
    /// Whether the request matches.
    pub fn matches(&self, r: &RequestView<'_>) -> bool {
        let path_ok = match &self.path {
            PathMatch::Exact(p) => r.path == p,
            PathMatch::Prefix(p) => crate::PathKind::Prefix.matches(p, r.path),
            PathMatch::Regex(re) => re.0.is_match(r.path),
        };
        path_ok
            && self.method.as_deref().is_none_or(|m| m == r.method)
            && self.headers.iter().all(|(n, v)| (r.headers)(n).is_some_and(|got| v.matches(&got)))
            && self.query.iter().all(|(n, v)| r.query.iter().find(|(k, _)| k == n).is_some_and(|(_, got)| v.matches(got)))
    }

    /// The spec's precedence, most specific first.
    fn precedence(&self, other: &Match) -> Ordering {
        let rank = |m: &Match| match &m.path {
            PathMatch::Exact(p) => (0, usize::MAX - p.len()),
            PathMatch::Prefix(p) => (1, usize::MAX - p.len()),
            PathMatch::Regex(r) => (2, usize::MAX - r.0.as_str().len()),
        };
        rank(self)
            .cmp(&rank(other))
            .then(other.method.is_some().cmp(&self.method.is_some()))
            .then(other.headers.len().cmp(&self.headers.len()))
            .then(other.query.len().cmp(&self.query.len()))
    }
}

/// A backend of a rule.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// A Service port.
    Service { namespace: String, name: String, port: ServicePort },
    /// Does not resolve: 500, with the reason.
    Invalid(String),
}

/// A rule as served.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Weighted backends.
    pub backends: Vec<(Target, u32)>,
    /// Filters, as written.
    pub filters: Vec<HttpRouteFilter>,
    /// `timeouts.request` (`None` also for `0s`, which disables it).
    pub timeout: Option<std::time::Duration>,
    /// `timeouts.backendRequest`: one exchange with the backend (likewise).
    pub backend_timeout: Option<std::time::Duration>,
}

/// One match of one rule of one route, attached to one listener.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The route.
    pub source: Source,
    /// Rule index, match index.
    pub position: (usize, usize),
    /// The match.
    pub m: Match,
    /// The rule.
    pub rule: Arc<Rule>,
    /// Hostnames it serves there (none: any host of the listener).
    pub hostnames: Vec<String>,
}

/// A listener of one of our Gateways, with what attached to it.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenerRoutes {
    /// Gateway namespace and name.
    pub gateway: (String, String),
    /// The listener.
    pub listener: Listener,
    /// Attached entries, in precedence order.
    pub entries: Vec<Entry>,
    /// Routes attached.
    pub attached_routes: usize,
}

/// A status condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    /// Type (`Accepted`, `Programmed`, `ResolvedRefs`, ...).
    pub type_: String,
    /// `True` or `False`.
    pub status: bool,
    /// The standard reason.
    pub reason: String,
    /// A message.
    pub message: String,
}

fn cond(type_: &str, status: bool, reason: &str, message: impl Into<String>) -> Condition {
    Condition { type_: type_.into(), status, reason: reason.into(), message: message.into() }
}

/// A listener's status: its name, conditions and attached routes.
pub type ListenerStatus = (String, Vec<Condition>, usize);
/// A Gateway's status: its conditions and its listeners'.
pub type GatewayStatus = (Vec<Condition>, Vec<ListenerStatus>);
/// An HTTPRoute's status per parent: the parentRef as written and its conditions.
pub type RouteParentStatus = (ParentReference, Vec<Condition>);

/// The status podnet would write back, by object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Status {
    /// GatewayClass name → conditions.
    pub classes: BTreeMap<String, Vec<Condition>>,
    /// Gateway (ns, name) → its status.
    pub gateways: BTreeMap<(String, String), GatewayStatus>,
    /// HTTPRoute (ns, name) → per parentRef its status.
    pub routes: BTreeMap<(String, String), Vec<RouteParentStatus>>,
}

/// Everything compiled for a controller.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Compiled {
    /// Listeners of our Gateways.
    pub listeners: Vec<ListenerRoutes>,
    /// Status.
    pub status: Status,
}

/// Whether `host` (a request's, lowercase) is covered by `pattern` (exact, or `*.suffix`
/// covering one or more labels); how specific the match is (exact highest).
fn host_match(pattern: &str, host: &str) -> Option<usize> {
    let pattern = pattern.to_ascii_lowercase();
    match pattern.strip_prefix('*') {
        None => (pattern == host).then_some(usize::MAX),
        Some(suffix) => (host.ends_with(&suffix) && host.len() > suffix.len()).then_some(suffix.len()),
    }
}

/// The hostnames two sides have in common (Gateway API's intersection): of two names where
/// one covers the other, the more specific; `None` when there are none; an empty list when
/// neither side restricts.
fn intersect(listener: Option<&str>, route: &[String]) -> Option<Vec<String>> {
    let Some(l) = listener.map(str::to_ascii_lowercase) else {
        return Some(route.iter().map(|h| h.to_ascii_lowercase()).collect());
    };
    if route.is_empty() {
        return Some(vec![l]);
    }
    let covers = |pattern: &str, name: &str| -> bool {
        match (pattern.strip_prefix('*'), name.strip_prefix('*')) {
            (None, _) => pattern == name,
            (Some(suffix), None) => name.ends_with(suffix) && name.len() > suffix.len(),
            // `*.example.com` covers `*.foo.example.com` and itself.
            (Some(suffix), Some(inner)) => inner.ends_with(suffix) && inner.len() >= suffix.len(),
        }
    };
    let mut out: Vec<String> = route
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .filter_map(|r| {
            if covers(&l, &r) {
                Some(r)
            } else if covers(&r, &l) {
                Some(l.clone())
            } else {
                None
            }
        })
        .collect();
    out.sort();
    out.dedup();
    (!out.is_empty()).then_some(out)
}

fn value_match(m: &NameValueMatch, lowercase_name: bool) -> Result<(String, ValueMatch), String> {
    let name = if lowercase_name { m.name.to_ascii_lowercase() } else { m.name.clone() };
    match m.type_.as_deref().unwrap_or("Exact") {
        "Exact" => Ok((name, ValueMatch::Exact(m.value.clone()))),
        "RegularExpression" => regex::Regex::new(&format!("^(?:{})$", m.value))
            .map(|re| (name, ValueMatch::Regex(PathRegex(re))))
            .map_err(|e| format!("invalid regular expression {:?}: {e}", m.value)),
        other => Err(format!("unsupported match type {other:?}")),
    }
}

fn compile_match(m: Option<&model::gateway_api::HttpRouteMatch>) -> Result<Match, String> {
    let Some(m) = m else {
        return Ok(Match { path: PathMatch::Prefix("/".into()), headers: Vec::new(), query: Vec::new(), method: None });
    };
    let value = m.path.as_ref().and_then(|p| p.value.clone()).unwrap_or_else(|| "/".into());
    let path = match m.path.as_ref().and_then(|p| p.type_.as_deref()).unwrap_or("PathPrefix") {
        "Exact" => PathMatch::Exact(value),
        "PathPrefix" => PathMatch::Prefix(value),
        "RegularExpression" => {
            PathMatch::Regex(PathRegex(regex::Regex::new(&format!("^(?:{value})$")).map_err(|e| format!("invalid path regular expression {value:?}: {e}"))?))
        }
        other => return Err(format!("unsupported path match type {other:?}")),
    };
    Ok(Match {
        path,
        headers: m.headers.iter().map(|h| value_match(h, true)).collect::<Result<_, _>>()?,
        query: m.query_params.iter().map(|q| value_match(q, false)).collect::<Result<_, _>>()?,
        method: m.method.clone(),
    })
}

/// A Gateway API duration (`1h`, `10s`, `500ms`, combinations).
pub fn duration(text: &str) -> Option<std::time::Duration> {
    let mut total = std::time::Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = [("ms", 2), ("h", 1), ("m", 1), ("s", 1)].into_iter().find(|(u, _)| rest.starts_with(u))?;
        total += match unit {
            "ms" => std::time::Duration::from_millis(n),
            "s" => std::time::Duration::from_secs(n),
            "m" => std::time::Duration::from_secs(n * 60),
            _ => std::time::Duration::from_secs(n * 3600),
        };
        rest = &rest[len..];
    }
    Some(total)
}

/// Whether a ReferenceGrant in `to_ns` lets HTTPRoutes of `from_ns` refer to Service `name`.
fn granted(state: &ClusterState, from_ns: &str, to_ns: &str, name: &str) -> bool {
    state.reference_grants.iter().filter(|g| g.namespace == to_ns).any(|g| {
        g.object.spec.from.iter().any(|f| f.group == GROUP && f.kind == "HTTPRoute" && f.namespace == from_ns)
            && g.object.spec.to.iter().any(|t| t.group.is_empty() && t.kind == "Service" && t.name.as_deref().is_none_or(|n| n == name))
    })
}

/// A backendRef as served, and the ResolvedRefs problem it raises.
fn target(state: &ClusterState, route_ns: &str, b: &HttpBackendRef) -> (Target, Option<(&'static str, String)>) {
    let r = &b.backend;
    let (group, kind) = (r.group.as_deref().unwrap_or(""), r.kind.as_deref().unwrap_or("Service"));
    if !group.is_empty() || kind != "Service" {
        let why = format!("backendRef {group}/{kind} {} is not a Service", r.name);
        return (Target::Invalid(why.clone()), Some(("InvalidKind", why)));
    }
    let ns = r.namespace.clone().unwrap_or_else(|| route_ns.to_owned());
    if ns != route_ns && !granted(state, route_ns, &ns, &r.name) {
        let why = format!("backendRef Service {ns}/{} is not permitted by any ReferenceGrant", r.name);
        return (Target::Invalid(why.clone()), Some(("RefNotPermitted", why)));
    }
    if !state.services.iter().any(|s| s.namespace == ns && s.name == r.name) {
        let why = format!("Service {ns}/{} not found", r.name);
        return (Target::Invalid(why.clone()), Some(("BackendNotFound", why)));
    }
    let Some(port) = r.port else {
        let why = format!("backendRef Service {ns}/{}: port is required", r.name);
        return (Target::Invalid(why.clone()), Some(("UnsupportedValue", why)));
    };
    (Target::Service { namespace: ns, name: r.name.clone(), port: ServicePort::Number(port) }, None)
}

fn source_of<T>(n: &Namespaced<T>, meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Source {
    Source { created: meta.creation_timestamp.as_ref().map(|t| t.0.to_string()).unwrap_or_default(), namespace: n.namespace.clone(), name: n.name.clone() }
}

/// Whether a listener lets routes of `route_ns` attach.
fn allows(state: &ClusterState, gateway_ns: &str, l: &Listener, route_ns: &str) -> bool {
    let kinds_ok = l
        .allowed_routes
        .as_ref()
        .and_then(|a| a.kinds.as_ref())
        .is_none_or(|ks| ks.iter().any(|k| k.kind == "HTTPRoute" && k.group.as_deref().is_none_or(|g| g == GROUP)));
    let ns = l.allowed_routes.as_ref().and_then(|a| a.namespaces.as_ref());
    let ns_ok = match ns.and_then(|n| n.from.as_deref()).unwrap_or("Same") {
        "All" => true,
        "Selector" => {
            let labels = state.namespaces.iter().find(|n| n.name == route_ns).map(|n| n.labels.clone()).unwrap_or_default();
            ns.and_then(|n| n.selector.as_ref()).is_some_and(|s| model::Selector::from_k8s(s).is_ok_and(|sel| sel.matches(&labels)))
        }
        _ => route_ns == gateway_ns,
    };
    kinds_ok && ns_ok
}

/// Compiles our Gateways and the HTTPRoutes attached to them.
/// A route's `ResolvedRefs`: set for every parent, attached or not (its backends resolve or
/// not whatever the listeners say).
fn resolved_condition(problem: &Option<(&'static str, String)>) -> Condition {
    match problem {
        Some((reason, message)) => cond("ResolvedRefs", false, reason, message.clone()),
        None => cond("ResolvedRefs", true, "ResolvedRefs", "all references resolved"),
    }
}

pub fn compile(state: &ClusterState, controller: &str) -> Compiled {
    let mut out = Compiled::default();
    let ours: Vec<&str> = state.gateway_classes.iter().filter(|c| c.spec.controller_name == controller).filter_map(|c| c.metadata.name.as_deref()).collect();
    for c in &ours {
        out.status.classes.insert((*c).to_owned(), vec![cond("Accepted", true, "Accepted", "handled by podnet")]);
    }
    let gateways: Vec<&Namespaced<model::gateway_api::Gateway>> =
        state.gateways.iter().filter(|g| ours.contains(&g.object.spec.gateway_class_name.as_str())).collect();
    for g in &gateways {
        for l in &g.object.spec.listeners {
            out.listeners.push(ListenerRoutes { gateway: (g.namespace.clone(), g.name.clone()), listener: l.clone(), entries: Vec::new(), attached_routes: 0 });
        }
    }
    let mut routes: Vec<&Namespaced<HttpRoute>> = state.http_routes.iter().collect();
    routes.sort_by_key(|r| source_of(r, &r.object.metadata));
    for route in routes {
        let source = source_of(route, &route.object.metadata);
        // Rules, compiled once for every listener.
        let mut resolved: Option<(&'static str, String)> = None;
        let mut rules = Vec::new();
        let mut bad_match = None;
        for (ri, rule) in route.object.spec.rules.iter().enumerate() {
            let backends: Vec<(Target, u32)> = rule
                .backend_refs
                .iter()
                .map(|b| {
                    let (t, problem) = target(state, &route.namespace, b);
                    if resolved.is_none() {
                        resolved = problem;
                    }
                    (t, b.weight.unwrap_or(1))
                })
                .collect();
            // A zero duration disables a timeout (the spec's "0s").
            let timeout_of = |pick: fn(&model::gateway_api::HttpRouteTimeouts) -> Option<&str>| {
                rule.timeouts.as_ref().and_then(pick).and_then(duration).filter(|d| !d.is_zero())
            };
            let timeout = timeout_of(|t| t.request.as_deref());
            let backend_timeout = timeout_of(|t| t.backend_request.as_deref());
            let compiled = Arc::new(Rule { backends, filters: rule.filters.clone(), timeout, backend_timeout });
            let matches: Vec<Option<&model::gateway_api::HttpRouteMatch>> =
                if rule.matches.is_empty() { vec![None] } else { rule.matches.iter().map(Some).collect() };
            for (mi, m) in matches.into_iter().enumerate() {
                match compile_match(m) {
                    Ok(m) => rules.push((ri, mi, m, Arc::clone(&compiled))),
                    Err(e) => bad_match = Some(e),
                }
            }
        }
        let mut parents = Vec::new();
        for parent in &route.object.spec.parent_refs {
            let mut conditions = Vec::new();
            let is_gateway = parent.group.as_deref().is_none_or(|g| g == GROUP) && parent.kind.as_deref().is_none_or(|k| k == "Gateway");
            let gw_ns = parent.namespace.clone().unwrap_or_else(|| route.namespace.clone());
            let candidates: Vec<usize> = out
                .listeners
                .iter()
                .enumerate()
                .filter(|(_, l)| is_gateway && l.gateway == (gw_ns.clone(), parent.name.clone()))
                .filter(|(_, l)| parent.section_name.as_deref().is_none_or(|s| s == l.listener.name))
                .filter(|(_, l)| parent.port.is_none_or(|p| p == l.listener.port))
                .map(|(i, _)| i)
                .collect();
            if candidates.is_empty() {
                // Not one of our Gateways (or no such listener): nothing to say for another controller's parent.
                if gateways.iter().any(|g| g.namespace == gw_ns && g.name == parent.name) {
                    conditions.push(cond("Accepted", false, "NoMatchingParent", "no listener matches the sectionName or port"));
                    conditions.push(resolved_condition(&resolved));
                    parents.push((parent.clone(), conditions));
                }
                continue;
            }
            let mut attached = false;
            let mut not_allowed = false;
            let mut no_host = false;
            for i in candidates {
                let l = &out.listeners[i];
                if !matches!(l.listener.protocol.as_str(), "HTTP" | "HTTPS") || !allows(state, &l.gateway.0, &l.listener, &route.namespace) {
                    not_allowed = true;
                    continue;
                }
                let Some(hostnames) = intersect(l.listener.hostname.as_deref(), &route.object.spec.hostnames) else {
                    no_host = true;
                    continue;
                };
                attached = true;
                let l = &mut out.listeners[i];
                l.attached_routes += 1;
                for (ri, mi, m, rule) in &rules {
                    l.entries.push(Entry { source: source.clone(), position: (*ri, *mi), m: m.clone(), rule: Arc::clone(rule), hostnames: hostnames.clone() });
                }
            }
            conditions.push(match (attached, bad_match.as_ref()) {
                (_, Some(e)) => cond("Accepted", false, "UnsupportedValue", e.clone()),
                (true, None) => cond("Accepted", true, "Accepted", "attached"),
                (false, None) if no_host && !not_allowed => {
                    cond("Accepted", false, "NoMatchingListenerHostname", "no listener hostname intersects the route's hostnames")
                }
                (false, None) => cond("Accepted", false, "NotAllowedByListeners", "no listener allows this route"),
            });
            conditions.push(resolved_condition(&resolved));
            parents.push((parent.clone(), conditions));
        }
        if !parents.is_empty() {
            out.status.routes.insert((route.namespace.clone(), route.name.clone()), parents);
        }
    }
    for l in &mut out.listeners {
        l.entries.sort_by(|a, b| a.m.precedence(&b.m).then(a.source.cmp(&b.source)).then(a.position.cmp(&b.position)));
    }
    for g in &gateways {
        let mut listeners = Vec::new();
        for l in out.listeners.iter().filter(|l| l.gateway == (g.namespace.clone(), g.name.clone())) {
            let mut c = Vec::new();
            let supported = matches!(l.listener.protocol.as_str(), "HTTP" | "HTTPS");
            c.push(if supported {
                cond("Accepted", true, "Accepted", "")
            } else {
                cond("Accepted", false, "UnsupportedProtocol", format!("protocol {} is not supported", l.listener.protocol))
            });
            let refs_ok = l.listener.tls.iter().flat_map(|t| t.certificate_refs.iter()).all(|r| {
                let ns = r.namespace.clone().unwrap_or_else(|| g.namespace.clone());
                state.secrets.iter().any(|s| s.namespace == ns && s.name == r.name)
            });
            c.push(if refs_ok {
                cond("ResolvedRefs", true, "ResolvedRefs", "")
            } else {
                cond("ResolvedRefs", false, "InvalidCertificateRef", "a certificateRef does not name an existing Secret")
            });
            c.push(cond("Programmed", supported && refs_ok, if supported && refs_ok { "Programmed" } else { "Invalid" }, ""));
            listeners.push((l.listener.name.clone(), c, l.attached_routes));
        }
        let gw = vec![cond("Accepted", true, "Accepted", ""), cond("Programmed", true, "Programmed", "")];
        out.status.gateways.insert((g.namespace.clone(), g.name.clone()), (gw, listeners));
    }
    out
}

impl Compiled {
    /// The entry serving a request on `port` for `host` (lowercase, no port): the routes of the
    /// most specific hostname that covers it compete, in precedence order.
    pub fn select(&self, port: u16, host: &str, request: &RequestView<'_>) -> Option<&Entry> {
        self.select_among(|l| l.listener.port == port, host, request)
    }

    /// As `select`, among the listeners of a protocol (`HTTP`, `HTTPS`), whatever their port:
    /// how `gateway serve`'s two addresses stand for a Gateway's listeners. With `gateway`,
    /// only that Gateway's (a request that came to its own address); without, every Gateway's.
    pub fn select_for(&self, protocol: &str, gateway: Option<&(String, String)>, host: &str, request: &RequestView<'_>) -> Option<&Entry> {
        self.select_among(|l| l.listener.protocol == protocol && gateway.is_none_or(|g| *g == l.gateway), host, request)
    }

    /// Whether a Gateway listener of `protocol` (of `gateway`, when given) takes requests for
    /// `host`: by its own hostname, or by the hostname of a route attached to it. A request
    /// for such a host that no rule matches is the Gateway's 404; it never falls through to
    /// the Ingresses.
    pub fn claims(&self, protocol: &str, gateway: Option<&(String, String)>, host: &str) -> bool {
        let reachable = |l: &&ListenerRoutes| l.listener.protocol == protocol && gateway.is_none_or(|g| *g == l.gateway);
        self.listeners.iter().filter(reachable).any(|l| match &l.listener.hostname {
            Some(h) => host_match(h, host).is_some(),
            None => l.entries.iter().any(|e| e.hostnames.iter().any(|h| host_match(h, host).is_some())),
        })
    }

    fn select_among(&self, which: impl Fn(&ListenerRoutes) -> bool, host: &str, request: &RequestView<'_>) -> Option<&Entry> {
        // How specifically a listener's hostname takes `host` (none: it does not); a listener
        // without a hostname takes every host, least specifically.
        let listener_fit = |l: &ListenerRoutes| match l.listener.hostname.as_deref() {
            None => Some(0),
            Some(h) => host_match(h, host),
        };
        // Listener isolation: a Gateway takes a request on its most specific listener for the
        // host only; the routes of its other listeners never see it.
        let mut fittest: BTreeMap<&(String, String), usize> = BTreeMap::new();
        for l in self.listeners.iter().filter(|l| which(l)) {
            if let Some(fit) = listener_fit(l) {
                let best = fittest.entry(&l.gateway).or_insert(fit);
                *best = (*best).max(fit);
            }
        }
        let mut best: Option<(usize, &Entry)> = None;
        for l in self.listeners.iter().filter(|l| which(l)) {
            if listener_fit(l).is_none_or(|fit| fittest.get(&l.gateway) != Some(&fit)) {
                continue;
            }
            for e in &l.entries {
                let specificity = if e.hostnames.is_empty() { Some(0) } else { e.hostnames.iter().filter_map(|h| host_match(h, host)).max() };
                let Some(specificity) = specificity else {
                    continue;
                };
                if best.is_some_and(|(s, _)| s > specificity) {
                    continue;
                }
                if e.m.matches(request) {
                    let better = match best {
                        None => true,
                        Some((s, b)) => {
                            specificity > s || e.m.precedence(&b.m).then(e.source.cmp(&b.source)).then(e.position.cmp(&b.position)) == Ordering::Less
                        }
                    };
                    if better {
                        best = Some((specificity, e));
                    }
                }
            }
        }
        best.map(|(_, e)| e)
    }
}
