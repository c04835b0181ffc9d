//! Ingresses into a route table, as ingress-nginx builds its servers: the Ingresses of our
//! IngressClasses (by `ingressClassName`, the legacy `kubernetes.io/ingress.class` annotation,
//! or the default class for Ingresses with neither), merged per host with the oldest Ingress
//! winning a conflict, canary Ingresses attached to the paths they shadow, TLS hosts noted.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};
use model::{ClusterState, Namespaced};

use crate::annotations;
use crate::routes::{Backend, HostRoutes, PathKind, PathRoute, RouteTable, ServicePort, Source};

/// The IngressClass annotation that makes a class the default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The legacy class annotation.
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// A TLS section: hosts (none: every host) and the `kubernetes.io/tls` Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    /// `hosts`
    pub hosts: Vec<String>,
    /// The Secret's namespace (the Ingress's) and name.
    pub secret: (String, String),
    /// The Ingress.
    pub source: Source,
}

/// The routes of a controller's Ingresses, their TLS sections, and what was wrong with them.
#[derive(Clone, Debug, Default)]
pub struct IngressRoutes {
    /// The table.
    pub table: RouteTable,
    /// TLS sections, oldest Ingress first.
    pub tls: Vec<Tls>,
    /// Problems, each naming its Ingress.
    pub problems: Vec<String>,
}

fn source(ing: &Namespaced<Ingress>) -> Source {
    Source {
        created: ing.object.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()).unwrap_or_default(),
        namespace: ing.namespace.clone(),
        name: ing.name.clone(),
    }
}

/// Whether `class` is ours and the default.
fn is_default(class: &IngressClass) -> bool {
    class.metadata.annotations.as_ref().and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION)).is_some_and(|v| v == "true")
}

/// Which Ingresses a controller acts for: those of the IngressClasses whose `spec.controller`
/// is `controller`, and (as ingress-nginx's `--ingress-class`, whose IngressClass its chart
/// makes) those naming `class` when no IngressClass of that name exists.
#[derive(Clone, Copy, Debug)]
pub struct Controller<'a> {
    /// `spec.controller` of our IngressClasses (ingress-nginx: `k8s.io/ingress-nginx`).
    pub controller: &'a str,
    /// The class name we answer to without an IngressClass object (ingress-nginx: `nginx`).
    pub class: &'a str,
}

/// Whether the controller serves an Ingress, and if not, why.
pub fn selected(state: &ClusterState, controller: Controller<'_>, ing: &Namespaced<Ingress>) -> Result<(), String> {
    let ours = |c: &IngressClass| c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(controller.controller);
    let class_named = |name: &str| state.ingress_classes.iter().find(|c| c.metadata.name.as_deref() == Some(name));
    let by_name = |name: &str, how: &str| match class_named(name) {
        Some(c) if ours(c) => Ok(()),
        Some(c) => Err(format!(
            "{how} {name:?}: IngressClass {name} is for controller {:?}, not {:?}",
            c.spec.as_ref().and_then(|s| s.controller.as_deref()).unwrap_or_default(),
            controller.controller
        )),
        None if name == controller.class => Ok(()),
        None => Err(format!("{how} {name:?}: no IngressClass {name}, and this controller's class is {:?}", controller.class)),
    };
    let spec_class = ing.object.spec.as_ref().and_then(|s| s.ingress_class_name.as_deref());
    let legacy = ing.object.metadata.annotations.as_ref().and_then(|a| a.get(LEGACY_CLASS_ANNOTATION)).map(String::as_str);
    match (spec_class, legacy) {
        (Some(c), _) => by_name(c, "ingressClassName"),
        (None, Some(c)) => by_name(c, LEGACY_CLASS_ANNOTATION),
        (None, None) if state.ingress_classes.iter().any(|c| ours(c) && is_default(c)) => Ok(()),
        (None, None) => Err("no ingressClassName, and no IngressClass of this controller is the default".to_owned()),
    }
}

/// The Ingresses a controller acts for.
pub fn ours<'a>(state: &'a ClusterState, controller: Controller<'_>) -> Vec<&'a Namespaced<Ingress>> {
    state.ingresses.iter().filter(|ing| selected(state, controller, ing).is_ok()).collect()
}

fn backend(ns: &str, b: &IngressBackend) -> Backend {
    match (&b.service, &b.resource) {
        (Some(svc), _) => {
            let port = match svc.port.as_ref() {
                Some(p) => match (p.number, &p.name) {
                    (Some(n), _) => u16::try_from(n).map(ServicePort::Number).unwrap_or(ServicePort::Number(0)),
                    (None, Some(name)) => ServicePort::Name(name.clone()),
                    (None, None) => {
                        return Backend::Unavailable(format!("service {}: no port", svc.name));
                    }
                },
                None => return Backend::Unavailable(format!("service {}: no port", svc.name)),
            };
            Backend::Service { namespace: ns.to_owned(), name: svc.name.clone(), port }
        }
        (None, Some(r)) => Backend::Unavailable(format!("resource backend {}/{} is not supported", r.kind, r.name)),
        (None, None) => Backend::Unavailable("no backend".into()),
    }
}

fn path_kind(t: &str) -> Option<PathKind> {
    match t {
        "Exact" => Some(PathKind::Exact),
        "Prefix" => Some(PathKind::Prefix),
        "ImplementationSpecific" => Some(PathKind::ImplementationSpecific),
        _ => None,
    }
}

/// Checks a rule's host: a DNS name, or `*.` and one.
fn host_problem(host: &str) -> Option<String> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.contains('*') {
        return Some(format!("host {host:?}: a wildcard must be the whole first label"));
    }
    let valid = !name.is_empty()
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') && !l.starts_with('-') && !l.ends_with('-'));
    (!valid).then(|| format!("host {host:?}: not a valid DNS name"))
}

/// Every path of an Ingress: (host, kind, path, backend).
fn paths_of(ing: &Namespaced<Ingress>, problems: &mut Vec<String>) -> Vec<(Option<String>, PathKind, String, Backend)> {
    let id = format!("Ingress {}/{}", ing.namespace, ing.name);
    let mut out = Vec::new();
    for (i, rule) in ing.object.spec.iter().flat_map(|s| s.rules.iter().flatten()).enumerate() {
        let host = rule.host.clone().filter(|h| !h.is_empty()).map(|h| h.to_ascii_lowercase());
        if let Some(p) = host.as_deref().and_then(host_problem) {
            problems.push(format!("{id}: spec.rules[{i}].{p}"));
            continue;
        }
        for (j, p) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
            let Some(kind) = path_kind(&p.path_type) else {
                problems.push(format!("{id}: spec.rules[{i}].http.paths[{j}].pathType: Unsupported value: {:?}: supported values: \"Exact\", \"ImplementationSpecific\", \"Prefix\"", p.path_type));
                continue;
            };
            let path = p.path.clone().unwrap_or_else(|| "/".into());
            if kind != PathKind::ImplementationSpecific && !path.starts_with('/') {
                problems.push(format!("{id}: spec.rules[{i}].http.paths[{j}].path: Invalid value: {path:?}: must be an absolute path"));
                continue;
            }
            out.push((host.clone(), kind, path, backend(&ing.namespace, &p.backend)));
        }
    }
    out
}

/// Whether an older Ingress already named `host`.
fn host_known(table: &RouteTable, host: &Option<String>) -> bool {
    match host {
        None => true,
        Some(h) => match h.strip_prefix('*') {
            Some(suffix) => table.wildcards.contains_key(suffix),
            None => table.hosts.contains_key(h),
        },
    }
}

fn host_entry<'a>(table: &'a mut RouteTable, host: &Option<String>) -> &'a mut HostRoutes {
    match host {
        None => &mut table.any_host,
        Some(h) => match h.strip_prefix('*') {
            Some(suffix) => table.wildcards.entry(suffix.to_owned()).or_default(),
            None => table.hosts.entry(h.clone()).or_default(),
        },
    }
}

/// The route table of the Ingresses a controller acts for.
pub fn routes(state: &ClusterState, controller: Controller<'_>) -> IngressRoutes {
    let mut out = IngressRoutes::default();
    let mut ingresses = ours(state, controller);
    ingresses.sort_by_key(|i| source(i));
    let empty = BTreeMap::new();
    let (canaries, mains): (Vec<_>, Vec<_>) =
        ingresses.into_iter().partition(|i| annotations::is_canary(i.object.metadata.annotations.as_ref().unwrap_or(&empty)));
    for ing in &mains {
        let annotations = ing.object.metadata.annotations.as_ref().unwrap_or(&empty);
        let mut notes = Vec::new();
        let settings = annotations::settings(annotations, &mut notes);
        out.problems.extend(notes.into_iter().map(|n| format!("Ingress {}/{}: {n}", ing.namespace, ing.name)));
        // ingress-nginx's scope of `spec.defaultBackend`: the root of every host this Ingress is
        // the first to name, or, for an Ingress without rules, the catch-all server.
        let default_route = ing.object.spec.as_ref().and_then(|s| s.default_backend.as_ref()).map(|b| PathRoute {
            kind: PathKind::Prefix,
            path: "/".into(),
            backend: backend(&ing.namespace, b),
            source: source(ing),
            settings: settings.clone(),
            canaries: Vec::new(),
            regex: None,
        });
        let rules = ing.object.spec.as_ref().and_then(|s| s.rules.as_deref()).unwrap_or_default();
        for host in rules.iter().filter_map(|r| r.host.as_deref()).filter(|h| !h.is_empty()) {
            let host = Some(host.to_ascii_lowercase());
            if !host_known(&out.table, &host) {
                host_entry(&mut out.table, &host).default = default_route.clone();
            }
        }
        if rules.is_empty() && out.table.default_backend.is_none() {
            out.table.default_backend = default_route;
        }
        for (host, kind, path, backend) in paths_of(ing, &mut out.problems) {
            let regex = match settings.use_regex {
                true => match regex::Regex::new(&format!("(?i)^{path}")) {
                    Ok(re) => Some(crate::routes::PathRegex(re)),
                    Err(e) => {
                        out.problems.push(format!("Ingress {}/{}: path {path:?} is not a regular expression: {e}", ing.namespace, ing.name));
                        continue;
                    }
                },
                false => None,
            };
            let route = PathRoute { kind, path, backend, source: source(ing), settings: settings.clone(), canaries: Vec::new(), regex };
            if let Err(lost) = host_entry(&mut out.table, &host).add(route) {
                out.problems.push(format!(
                    "Ingress {}/{}: host {:?} path {:?} ({:?}) is also in an older Ingress, which keeps it",
                    lost.source.namespace,
                    lost.source.name,
                    host.as_deref().unwrap_or("*"),
                    lost.path,
                    lost.kind
                ));
            }
        }
        for tls in ing.object.spec.iter().flat_map(|s| s.tls.iter().flatten()) {
            let hosts: Vec<String> = tls.hosts.iter().flatten().map(|h| h.to_ascii_lowercase()).collect();
            for h in &hosts {
                host_entry(&mut out.table, &Some(h.clone())).tls = true;
            }
            if let Some(secret) = &tls.secret_name {
                out.tls.push(Tls { hosts, secret: (ing.namespace.clone(), secret.clone()), source: source(ing) });
            }
        }
    }
    // A canary shadows the main Ingress's path for the same host.
    for ing in &canaries {
        let annotations = ing.object.metadata.annotations.as_ref().unwrap_or(&empty);
        for (host, kind, path, backend) in paths_of(ing, &mut out.problems) {
            let entry = host_entry(&mut out.table, &host);
            match entry.paths.iter_mut().find(|p| p.path == path && p.kind == kind) {
                Some(main) => main.canaries.push(annotations::canary(annotations, backend)),
                None => out.problems.push(format!(
                    "Ingress {}/{}: canary for host {:?} path {path:?} has no main Ingress",
                    ing.namespace,
                    ing.name,
                    host.as_deref().unwrap_or("*")
                )),
            }
        }
    }
    out
}
