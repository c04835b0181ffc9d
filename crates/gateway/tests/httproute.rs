//! Gateway API scenarios of the conformance suite (`conformance/tests`), in our own words:
//! attachment, hostname intersection, match precedence, allowed routes, backend resolution and
//! the status conditions with their standard reasons.

#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a line number

use std::path::Path;

use gateway::httproute::{self, Compiled, RequestView, Target};
use gateway::routes::ServicePort;

const CONTROLLER: &str = "podnet.io/gateway-controller";

fn compile(yaml: &str) -> Compiled {
    let base = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: podnet}}\nspec: {{controllerName: {CONTROLLER}}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: production, labels: {{team: shop}}}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: other}}\n"
    );
    let services = ["api-service", "web-service", "v1", "v2"]
        .iter()
        .map(|s| format!("---\napiVersion: v1\nkind: Service\nmetadata: {{name: {s}, namespace: production}}\nspec: {{ports: [{{port: 80}}]}}\n"))
        .collect::<String>();
    let objects = model::load_str(&format!("{base}{services}{yaml}"), Path::new("t.yaml")).unwrap();
    httproute::compile(&model::ClusterState::from_objects(&objects).unwrap(), CONTROLLER)
}

fn gateway(listeners: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: main-gateway, namespace: production}}\nspec:\n  gatewayClassName: podnet\n  listeners:\n{listeners}"
    )
}

const HTTP: &str = "  - {name: http, port: 80, protocol: HTTP}\n";

fn route(name: &str, ns: &str, created: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {ns}, creationTimestamp: '{created}'}}\nspec:\n{spec}"
    )
}

/// Where a request goes: "service:port", "500 why", or "-" for no route.
fn to(c: &Compiled, host: &str, method: &str, path: &str, headers: &[(&str, &str)], query: &[(&str, &str)]) -> String {
    let headers: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), (*v).to_owned())).collect();
    let lookup = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let query: Vec<(String, String)> = query.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let r = RequestView { method, path, headers: &lookup, query: &query };
    match c.select(80, host, &r) {
        None => "-".into(),
        Some(e) => match &e.rule.backends.first() {
            Some((Target::Service { name, port: ServicePort::Number(p), .. }, _)) => format!("{name}:{p}"),
            Some((Target::Invalid(why), _)) => format!("500 {why}"),
            _ => "no backends".into(),
        },
    }
}

fn get(c: &Compiled, host: &str, path: &str) -> String {
    to(c, host, "GET", path, &[], &[])
}

fn condition(c: &Compiled, route: &str, type_: &str) -> (bool, String) {
    let parents = &c.status.routes[&("production".to_owned(), route.to_owned())];
    let found = parents[0].1.iter().find(|x| x.type_ == type_).unwrap();
    (found.status, found.reason.clone())
}

#[test]
fn the_seeds_api_route() {
    let c = compile(&format!(
        "{}{}",
        gateway(HTTP),
        route(
            "api-route",
            "production",
            "2026-01-01T00:00:00Z",
            "  parentRefs: [{name: main-gateway}]\n  hostnames: [\"api.example.com\"]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /v1}}]\n    backendRefs: [{name: api-service, port: 80}]\n"
        )
    ));
    assert_eq!(get(&c, "api.example.com", "/v1/users"), "api-service:80");
    assert_eq!(get(&c, "api.example.com", "/v1"), "api-service:80");
    assert_eq!(get(&c, "api.example.com", "/v10"), "-", "PathPrefix is element-wise");
    assert_eq!(get(&c, "web.example.com", "/v1"), "-");
    assert_eq!(condition(&c, "api-route", "Accepted"), (true, "Accepted".into()));
    assert_eq!(condition(&c, "api-route", "ResolvedRefs"), (true, "ResolvedRefs".into()));
    let (gw, listeners) = &c.status.gateways[&("production".to_owned(), "main-gateway".to_owned())];
    assert!(gw.iter().all(|x| x.status));
    assert_eq!(listeners[0].2, 1, "attachedRoutes");
    assert_eq!(c.status.classes["podnet"][0].reason, "Accepted");
}

#[test]
fn hostnames_intersect_and_the_most_specific_wins() {
    let listeners = "  - {name: wild, port: 80, protocol: HTTP, hostname: '*.example.com'}\n";
    let c = compile(&format!(
        "{}{}{}{}",
        gateway(listeners),
        route(
            "exact",
            "production",
            "2026-01-01T00:00:00Z",
            "  parentRefs: [{name: main-gateway}]\n  hostnames: [foo.example.com, other.org]\n  rules: [{backendRefs: [{name: v1, port: 80}]}]\n"
        ),
        route("wild", "production", "2026-01-01T00:00:00Z", "  parentRefs: [{name: main-gateway}]\n  rules: [{backendRefs: [{name: v2, port: 80}]}]\n"),
        route(
            "elsewhere",
            "production",
            "2026-01-01T00:00:00Z",
            "  parentRefs: [{name: main-gateway}]\n  hostnames: [other.org]\n  rules: [{backendRefs: [{name: v2, port: 80}]}]\n"
        ),
    ));
    assert_eq!(get(&c, "foo.example.com", "/"), "v1:80", "the exact hostname beats the listener's wildcard");
    assert_eq!(get(&c, "bar.example.com", "/"), "v2:80");
    assert_eq!(get(&c, "a.b.example.com", "/"), "v2:80", "a Gateway API wildcard covers several labels");
    assert_eq!(get(&c, "example.com", "/"), "-");
    assert_eq!(get(&c, "other.org", "/"), "-", "outside the listener's hostname");
    assert_eq!(condition(&c, "elsewhere", "Accepted"), (false, "NoMatchingListenerHostname".into()));
}

#[test]
fn match_precedence_follows_the_spec() {
    let rules = "  - matches: [{path: {type: PathPrefix, value: /}}]\n    backendRefs: [{name: v1, port: 80}]\n  - matches: [{path: {type: PathPrefix, value: /api}}]\n    backendRefs: [{name: v2, port: 80}]\n  - matches: [{path: {type: Exact, value: /api}}]\n    backendRefs: [{name: api-service, port: 80}]\n  - matches: [{path: {type: PathPrefix, value: /api}, method: POST}]\n    backendRefs: [{name: web-service, port: 81}]\n  - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: Version, value: two}]}]\n    backendRefs: [{name: web-service, port: 82}]\n  - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: Version, value: two}, {name: Env, type: RegularExpression, value: 'canary|beta'}]}]\n    backendRefs: [{name: web-service, port: 83}]\n  - matches: [{path: {type: PathPrefix, value: /api}, queryParams: [{name: debug, value: '1'}]}]\n    backendRefs: [{name: web-service, port: 84}]\n";
    let c = compile(&format!(
        "{}{}",
        gateway(HTTP),
        route("r", "production", "2026-01-01T00:00:00Z", &format!("  parentRefs: [{{name: main-gateway}}]\n  rules:\n{rules}"))
    ));
    assert_eq!(get(&c, "any.host", "/"), "v1:80");
    assert_eq!(get(&c, "any.host", "/api/x"), "v2:80", "longest prefix");
    assert_eq!(get(&c, "any.host", "/api"), "api-service:80", "Exact beats every prefix");
    assert_eq!(to(&c, "h", "POST", "/api/x", &[("Version", "two")], &[]), "web-service:81", "a method match beats header matches");
    assert_eq!(to(&c, "h", "GET", "/api/x", &[("version", "two")], &[]), "web-service:82", "header names are case-insensitive");
    assert_eq!(to(&c, "h", "GET", "/api/x", &[("version", "two"), ("env", "beta")], &[]), "web-service:83", "more header matches win");
    assert_eq!(to(&c, "h", "GET", "/api/x", &[("env", "prod")], &[("debug", "1")]), "web-service:84");
    assert_eq!(to(&c, "h", "GET", "/api/x", &[], &[("DEBUG", "1")]), "v2:80", "query names are case-sensitive");
}

#[test]
fn ties_go_to_the_oldest_route_then_by_name() {
    let spec = |svc: &str| {
        format!(
            "  parentRefs: [{{name: main-gateway}}]\n  rules: [{{matches: [{{path: {{type: PathPrefix, value: /same}}}}], backendRefs: [{{name: {svc}, port: 80}}]}}]\n"
        )
    };
    let c = compile(&format!(
        "{}{}{}{}",
        gateway(HTTP),
        route("b-new", "production", "2026-03-01T00:00:00Z", &spec("v2")),
        route("z-old", "production", "2026-01-01T00:00:00Z", &spec("v1")),
        route("a-new", "production", "2026-03-01T00:00:00Z", &spec("web-service"))
    ));
    assert_eq!(get(&c, "h", "/same"), "v1:80", "the oldest");
    let c = compile(&format!(
        "{}{}{}",
        gateway(HTTP),
        route("b-new", "production", "2026-03-01T00:00:00Z", &spec("v2")),
        route("a-new", "production", "2026-03-01T00:00:00Z", &spec("web-service"))
    ));
    assert_eq!(get(&c, "h", "/same"), "web-service:80", "then namespace/name");
}

#[test]
fn allowed_routes_by_namespace() {
    let spec = "  parentRefs: [{name: main-gateway, namespace: production}]\n  rules: [{backendRefs: [{name: v1, namespace: production, port: 80}]}]\n";
    let same = compile(&format!("{}{}", gateway(HTTP), route("from-other", "other", "2026-01-01T00:00:00Z", spec)));
    let parents = &same.status.routes[&("other".to_owned(), "from-other".to_owned())];
    assert_eq!(parents[0].1[0].reason, "NotAllowedByListeners");
    assert_eq!(get(&same, "h", "/"), "-");
    let all = compile(&format!(
        "{}{}",
        gateway("  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}\n"),
        route("from-other", "other", "2026-01-01T00:00:00Z", spec)
    ));
    assert!(get(&all, "h", "/").starts_with("500"), "attached, but its cross-namespace backend has no ReferenceGrant");
    let selector =
        gateway("  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {team: shop}}}}}\n");
    let c = compile(&format!("{selector}{}", route("from-other", "other", "2026-01-01T00:00:00Z", spec)));
    assert_eq!(get(&c, "h", "/"), "-", "namespace other has no team label");
}

#[test]
fn backend_references_resolve_or_answer_500() {
    let rule = |backend: &str| format!("  parentRefs: [{{name: main-gateway}}]\n  rules: [{{backendRefs: [{backend}]}}]\n");
    let cases = [
        ("{name: missing, port: 80}", "BackendNotFound"),
        ("{group: example.com, kind: Bucket, name: b}", "InvalidKind"),
        ("{name: api-service, namespace: other, port: 80}", "RefNotPermitted"),
    ];
    for (backend, reason) in cases {
        let c = compile(&format!("{}{}", gateway(HTTP), route("r", "production", "2026-01-01T00:00:00Z", &rule(backend))));
        assert_eq!(condition(&c, "r", "ResolvedRefs"), (false, reason.into()), "{backend}");
        assert!(condition(&c, "r", "Accepted").0, "still attached: {backend}");
        assert!(get(&c, "h", "/").starts_with("500"), "{backend}");
    }
    // A ReferenceGrant in the target namespace permits it.
    let grant = "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: allow, namespace: other}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: production}]\n  to: [{group: '', kind: Service}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: api-service, namespace: other}\nspec: {ports: [{port: 80}]}\n";
    let c = compile(&format!(
        "{}{}{grant}",
        gateway(HTTP),
        route("r", "production", "2026-01-01T00:00:00Z", &rule("{name: api-service, namespace: other, port: 80}"))
    ));
    assert_eq!(condition(&c, "r", "ResolvedRefs"), (true, "ResolvedRefs".into()));
    assert_eq!(get(&c, "h", "/"), "api-service:80");
}

#[test]
fn section_name_and_port_pick_listeners() {
    let listeners = "  - {name: http, port: 80, protocol: HTTP}\n  - {name: admin, port: 8080, protocol: HTTP}\n  - {name: tcp, port: 9000, protocol: TCP}\n";
    let c = compile(&format!(
        "{}{}{}",
        gateway(listeners),
        route(
            "admin-only",
            "production",
            "2026-01-01T00:00:00Z",
            "  parentRefs: [{name: main-gateway, sectionName: admin}]\n  rules: [{backendRefs: [{name: v1, port: 80}]}]\n"
        ),
        route(
            "nowhere",
            "production",
            "2026-01-01T00:00:00Z",
            "  parentRefs: [{name: main-gateway, sectionName: missing}]\n  rules: [{backendRefs: [{name: v1, port: 80}]}]\n"
        )
    ));
    assert_eq!(get(&c, "h", "/"), "-", "not on port 80");
    assert_eq!(condition(&c, "nowhere", "Accepted"), (false, "NoMatchingParent".into()));
    let (_, listeners) = &c.status.gateways[&("production".to_owned(), "main-gateway".to_owned())];
    let tcp = listeners.iter().find(|l| l.0 == "tcp").unwrap();
    assert_eq!(tcp.1[0].reason, "UnsupportedProtocol");
    assert_eq!(listeners.iter().find(|l| l.0 == "admin").unwrap().2, 1);
}

#[test]
fn durations() {
    assert_eq!(httproute::duration("10s"), Some(std::time::Duration::from_secs(10)));
    assert_eq!(httproute::duration("1h30m"), Some(std::time::Duration::from_secs(5400)));
    assert_eq!(httproute::duration("500ms"), Some(std::time::Duration::from_millis(500)));
    assert_eq!(httproute::duration("ten"), None);
}
