//! The route table: a pure value from which one request's route is read. Hosts are matched
//! exact first, then wildcard (`*.example.com` covers exactly one label, Ingress's rule), then
//! the host-less rules; within a host the longest matching path wins, and on equal length an
//! Exact path beats a Prefix one (the Ingress specification). Nothing matching: the default
//! backend, else 404.

use std::collections::HashMap;

use crate::annotations::Settings;

/// How a path is matched (`networking.k8s.io/v1` `pathType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathKind {
    /// The whole path, case-sensitive.
    Exact,
    /// Element-wise prefix over `/`-separated elements; a trailing slash is ignored.
    Prefix,
    /// ingress-nginx's: a plain string prefix (an nginx `location`).
    ImplementationSpecific,
}

impl PathKind {
    /// Whether `request` (the path, without the query) matches `path`.
    pub fn matches(self, path: &str, request: &str) -> bool {
        match self {
            PathKind::Exact => path == request,
            PathKind::ImplementationSpecific => request.starts_with(path),
            PathKind::Prefix => {
                let want = path.split('/').filter(|e| !e.is_empty());
                let mut got = request.split('/').filter(|e| !e.is_empty());
                want.into_iter().all(|w| got.next() == Some(w))
            }
        }
    }
}

/// Where a request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A Service port (a number, or the name of a Service port).
    Service { namespace: String, name: String, port: ServicePort },
    /// A backend podnet cannot send to (a `resource` backend, a missing Service): 503.
    Unavailable(String),
}

/// A Service port as a backend names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServicePort {
    /// `port.number`
    Number(u16),
    /// `port.name`
    Name(String),
}

/// Which object a route came from, and its age, for precedence and logs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Source {
    /// `creationTimestamp` (RFC 3339; sorts by age); empty when absent (oldest).
    pub created: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// One path of one host.
#[derive(Clone, Debug, PartialEq)]
pub struct PathRoute {
    /// How it matches.
    pub kind: PathKind,
    /// The path as written.
    pub path: String,
    /// Where it goes.
    pub backend: Backend,
    /// The Ingress it came from.
    pub source: Source,
    /// Its annotations' settings.
    pub settings: Settings,
    /// Canary alternatives (ingress-nginx `canary` Ingresses for the same host and path).
    pub canaries: Vec<crate::annotations::Canary>,
    /// ingress-nginx's `use-regex` (also implied by `rewrite-target`): the path is a
    /// case-insensitive regular expression from the start of the request's path.
    pub regex: Option<PathRegex>,
}

/// A compiled path regex (compared by its pattern).
#[derive(Clone, Debug)]
pub struct PathRegex(pub regex::Regex);

impl PartialEq for PathRegex {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl PathRoute {
    /// Whether the route takes `path`.
    pub fn matches(&self, path: &str) -> bool {
        match (&self.regex, self.kind) {
            (Some(re), PathKind::Prefix | PathKind::ImplementationSpecific) => re.0.is_match(path),
            _ => self.kind.matches(&self.path, path),
        }
    }
}

/// The paths of one host, in precedence order, and whether it has TLS.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostRoutes {
    /// Sorted: longest path first, then Exact before Prefix before ImplementationSpecific, then oldest.
    pub paths: Vec<PathRoute>,
    /// The host is served over TLS (an Ingress lists it under `tls`): HTTP redirects to HTTPS
    /// unless `ssl-redirect: "false"`.
    pub tls: bool,
    /// Where its unmatched paths go: the `defaultBackend` of the oldest Ingress naming the host,
    /// as ingress-nginx roots that Ingress's servers there (none: the controller's 404).
    pub default: Option<PathRoute>,
}

impl HostRoutes {
    /// Adds a path; a path already there (same path and kind) from an older Ingress keeps it.
    pub fn add(&mut self, route: PathRoute) -> Result<(), PathRoute> {
        if let Some(existing) = self.paths.iter().find(|p| p.path == route.path && p.kind == route.kind) {
            return if existing.source <= route.source { Err(route) } else { self.replace(route) };
        }
        self.paths.push(route);
        self.sort();
        Ok(())
    }

    fn replace(&mut self, route: PathRoute) -> Result<(), PathRoute> {
        let i = self.paths.iter().position(|p| p.path == route.path && p.kind == route.kind).unwrap_or(0);
        let old = std::mem::replace(&mut self.paths[i], route);
        Err(old)
    }

    fn sort(&mut self) {
        self.paths.sort_by(|a, b| b.path.len().cmp(&a.path.len()).then(a.kind.cmp(&b.kind)).then(a.source.cmp(&b.source)));
    }

    /// The route of `path`: the first in precedence order that matches.
    pub fn route(&self, path: &str) -> Option<&PathRoute> {
        self.paths.iter().find(|p| p.matches(path))
    }
}

/// All routes of the controller.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteTable {
    /// Exact hosts, lowercase.
    pub hosts: HashMap<String, HostRoutes, fnv::FnvBuildHasher>,
    /// Wildcard hosts by their suffix (`*.example.com` → `.example.com`).
    pub wildcards: HashMap<String, HostRoutes, fnv::FnvBuildHasher>,
    /// Rules without a host.
    pub any_host: HostRoutes,
    /// The catch-all: the `defaultBackend` of the oldest Ingress that has one and no rules
    /// (ingress-nginx's default server), for hosts no Ingress names and the unmatched paths of
    /// host-less rules; none: the controller's default backend (404).
    pub default_backend: Option<PathRoute>,
}

/// What the table says about a request.
#[derive(Debug, PartialEq)]
pub enum Decision<'a> {
    /// Route to this path's backend.
    Route(&'a PathRoute, &'a HostRoutes),
    /// No rule and no default backend: 404.
    NotFound,
}

impl RouteTable {
    /// The routes of a request's host (the `Host` header without its port, any case).
    pub fn host(&self, host: &str) -> Option<&HostRoutes> {
        let host: std::borrow::Cow<'_, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) { host.to_ascii_lowercase().into() } else { host.into() };
        if let Some(h) = self.hosts.get(host.as_ref()) {
            return Some(h);
        }
        // `*.example.com` covers `foo.example.com`, not `example.com` or `a.b.example.com`.
        let (_, suffix) = host.split_once('.')?;
        self.wildcards.get(&format!(".{suffix}"))
    }

    /// Routes one request.
    pub fn route(&self, host: &str, path: &str) -> Decision<'_> {
        let named = self.host(host);
        let routes = named.unwrap_or(&self.any_host);
        if let Some(r) = routes.route(path) {
            return Decision::Route(r, routes);
        }
        let fallback = match named {
            Some(h) => h.default.as_ref(),
            None => self.default_backend.as_ref(),
        };
        match fallback {
            Some(d) => Decision::Route(d, routes),
            None => Decision::NotFound,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_element_wise_and_ignores_trailing_slashes() {
        // The Ingress documentation's table.
        let cases = [
            (PathKind::Prefix, "/", "/anything", true),
            (PathKind::Exact, "/foo", "/foo", true),
            (PathKind::Exact, "/foo", "/bar", false),
            (PathKind::Exact, "/foo", "/foo/", false),
            (PathKind::Exact, "/foo/", "/foo", false),
            (PathKind::Prefix, "/foo", "/foo", true),
            (PathKind::Prefix, "/foo", "/foo/", true),
            (PathKind::Prefix, "/foo/", "/foo", true),
            (PathKind::Prefix, "/foo/", "/foo/", true),
            (PathKind::Prefix, "/aaa/bb", "/aaa/bbb", false),
            (PathKind::Prefix, "/aaa/bbb", "/aaa/bbb", true),
            (PathKind::Prefix, "/aaa/bbb/", "/aaa/bbb", true),
            (PathKind::Prefix, "/aaa/bbb", "/aaa/bbb/", true),
            (PathKind::Prefix, "/aaa/bbb", "/aaa/bbb/ccc", true),
            (PathKind::Prefix, "/aaa/bbb", "/aaa/bbbxyz", false),
            (PathKind::ImplementationSpecific, "/aaa/bb", "/aaa/bbb", true),
        ];
        for (kind, path, request, want) in cases {
            assert_eq!(kind.matches(path, request), want, "{kind:?} {path} {request}");
        }
    }
}
