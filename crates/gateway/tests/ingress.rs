//! Ingress routing as the Ingress concept page and ingress-nginx define it: classes, hosts,
//! path types and precedence, merging, default backends, TLS, canaries.

#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a line number

use std::path::Path;

use gateway::ingress::{self, IngressRoutes};
use gateway::routes::ServicePort;
use gateway::{Backend, Decision};

const CONTROLLER: &str = "podnet.io/ingress-controller";

fn build(yaml: &str) -> IngressRoutes {
    let classes = format!(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: podnet, annotations: {{ingressclass.kubernetes.io/is-default-class: 'true'}}}}\nspec: {{controller: {CONTROLLER}}}\n---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: other}}\nspec: {{controller: example.com/other}}\n---\n"
    );
    let objects = model::load_str(&format!("{classes}{yaml}"), Path::new("t.yaml")).unwrap();
    ingress::routes(&model::ClusterState::from_objects(&objects).unwrap(), ingress::Controller { controller: CONTROLLER, class: "nginx" })
}

fn ingress(name: &str, created: &str, extra_meta: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: shop, creationTimestamp: '{created}'{extra_meta}}}\nspec:\n{spec}"
    )
}

/// The service a request goes to, or "404".
fn to(r: &IngressRoutes, host: &str, path: &str) -> String {
    match r.table.route(host, path) {
        Decision::Route(p, _) => match &p.backend {
            Backend::Service { name, port: ServicePort::Number(n), .. } => format!("{name}:{n}"),
            Backend::Service { name, port: ServicePort::Name(n), .. } => format!("{name}:{n}"),
            Backend::Unavailable(why) => format!("503 {why}"),
        },
        Decision::NotFound => "404".into(),
    }
}

fn rule(host: &str, paths: &[(&str, &str, &str)]) -> String {
    let mut out = format!("  - host: '{host}'\n    http:\n      paths:\n");
    for (kind, path, svc) in paths {
        out.push_str(&format!("      - {{path: '{path}', pathType: {kind}, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}\n"));
    }
    out
}

#[test]
fn the_seeds_app_ingress_routes_by_host_and_path() {
    let spec = format!("  rules:\n{}", rule("api.example.com", &[("Prefix", "/orders", "order-service"), ("Prefix", "/", "api-service")]));
    let r = build(&ingress("app-ingress", "2026-01-01T00:00:00Z", "", &spec));
    assert_eq!(to(&r, "api.example.com", "/orders/42"), "order-service:80");
    assert_eq!(to(&r, "API.Example.com", "/orders"), "order-service:80");
    assert_eq!(to(&r, "api.example.com", "/ordersx"), "api-service:80", "Prefix is element-wise");
    assert_eq!(to(&r, "api.example.com", "/"), "api-service:80");
    assert_eq!(to(&r, "other.example.com", "/orders"), "404");
}

#[test]
fn longest_path_wins_and_exact_beats_prefix_of_the_same_length() {
    let spec = format!(
        "  rules:\n{}",
        rule(
            "h.test",
            &[("Prefix", "/foo", "prefix"), ("Exact", "/foo", "exact"), ("Prefix", "/foo/bar", "longer"), ("ImplementationSpecific", "/fo", "nginx-prefix")]
        )
    );
    let r = build(&ingress("i", "2026-01-01T00:00:00Z", "", &spec));
    assert_eq!(to(&r, "h.test", "/foo"), "exact:80");
    assert_eq!(to(&r, "h.test", "/foo/"), "prefix:80");
    assert_eq!(to(&r, "h.test", "/foo/bar/baz"), "longer:80");
    assert_eq!(to(&r, "h.test", "/fox"), "nginx-prefix:80", "ImplementationSpecific is a string prefix, as nginx's location");
}

#[test]
fn wildcards_cover_one_label_and_host_less_rules_catch_the_rest() {
    let spec = format!(
        "  rules:\n{}{}  - http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: catch-all, port: {{number: 80}}}}}}}}\n",
        rule("*.foo.com", &[("Prefix", "/", "wild")]),
        rule("bar.foo.com", &[("Prefix", "/", "exact-host")])
    );
    let r = build(&ingress("i", "2026-01-01T00:00:00Z", "", &spec));
    assert_eq!(to(&r, "bar.foo.com", "/"), "exact-host:80");
    assert_eq!(to(&r, "baz.foo.com", "/"), "wild:80");
    assert_eq!(to(&r, "a.baz.foo.com", "/"), "catch-all:80", "one label only");
    assert_eq!(to(&r, "foo.com", "/"), "catch-all:80");
}

#[test]
fn ingresses_merge_per_host_and_the_oldest_wins_a_conflict() {
    let old = ingress("old", "2026-01-01T00:00:00Z", "", &format!("  rules:\n{}", rule("h.test", &[("Prefix", "/a", "from-old")])));
    let new =
        ingress("new", "2026-02-01T00:00:00Z", "", &format!("  rules:\n{}", rule("h.test", &[("Prefix", "/a", "from-new"), ("Prefix", "/b", "only-new")])));
    // Order in the files does not matter: age does.
    let r = build(&format!("{new}{old}"));
    assert_eq!(to(&r, "h.test", "/a"), "from-old:80");
    assert_eq!(to(&r, "h.test", "/b"), "only-new:80");
    assert!(r.problems.iter().any(|p| p.contains("shop/new") && p.contains("older Ingress")), "{:?}", r.problems);
}

#[test]
fn classes_decide_which_ingresses_are_ours() {
    let spec = |svc: &str| format!("  rules:\n{}", rule(&format!("{svc}.test"), &[("Prefix", "/", svc)]));
    let yaml = [
        ingress("by-name", "2026-01-01T00:00:00Z", "", &format!("  ingressClassName: podnet\n{}", spec("by-name"))),
        ingress("legacy", "2026-01-01T00:00:00Z", ", annotations: {kubernetes.io/ingress.class: podnet}", &spec("legacy")),
        ingress("defaulted", "2026-01-01T00:00:00Z", "", &spec("defaulted")),
        ingress("theirs", "2026-01-01T00:00:00Z", "", &format!("  ingressClassName: other\n{}", spec("theirs"))),
        ingress("unknown", "2026-01-01T00:00:00Z", "", &format!("  ingressClassName: nope\n{}", spec("unknown"))),
        // ingress-nginx's `--ingress-class`: the name it answers to with no IngressClass object.
        ingress("nginx", "2026-01-01T00:00:00Z", "", &format!("  ingressClassName: nginx\n{}", spec("nginx"))),
    ]
    .concat();
    let r = build(&yaml);
    for ours in ["by-name", "legacy", "defaulted", "nginx"] {
        assert_eq!(to(&r, &format!("{ours}.test"), "/"), format!("{ours}:80"));
    }
    for theirs in ["theirs", "unknown"] {
        assert_eq!(to(&r, &format!("{theirs}.test"), "/"), "404");
    }
}

#[test]
fn default_backend_tls_and_unavailable_backends() {
    let spec = "  defaultBackend: {service: {name: fallback, port: {name: http}}}\n  tls:\n  - {hosts: [secure.test], secretName: secure-tls}\n  rules:\n  - host: secure.test\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {resource: {apiGroup: k8s.example.com, kind: StorageBucket, name: static}}}\n";
    let r = build(&ingress("i", "2026-01-01T00:00:00Z", "", spec));
    assert_eq!(to(&r, "nowhere.test", "/x"), "404", "a host no Ingress names: the controller's default backend");
    assert!(to(&r, "secure.test", "/").starts_with("503"));
    assert!(r.table.host("secure.test").unwrap().tls);
    assert_eq!(r.tls[0].secret, ("shop".into(), "secure-tls".into()));
}

#[test]
fn a_canary_shadows_its_main_path_and_bad_input_is_reported() {
    let main = ingress(
        "main",
        "2026-01-01T00:00:00Z",
        ", annotations: {nginx.ingress.kubernetes.io/proxy-body-size: 10m}",
        &format!("  rules:\n{}", rule("h.test", &[("Prefix", "/", "stable")])),
    );
    let canary = ingress(
        "canary",
        "2026-02-01T00:00:00Z",
        ", annotations: {nginx.ingress.kubernetes.io/canary: 'true', nginx.ingress.kubernetes.io/canary-weight: '20', nginx.ingress.kubernetes.io/canary-by-header: X-Canary}",
        &format!("  rules:\n{}", rule("h.test", &[("Prefix", "/", "preview")])),
    );
    let bad = ingress(
        "bad",
        "2026-01-01T00:00:00Z",
        "",
        "  rules:\n  - host: 'x.*.test'\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: s, port: {number: 80}}}}]}\n  - host: ok.test\n    http: {paths: [{path: relative, pathType: Exact, backend: {service: {name: s, port: {number: 80}}}}]}\n",
    );
    let r = build(&format!("{main}{canary}{bad}"));
    let Decision::Route(p, _) = r.table.route("h.test", "/") else { panic!() };
    assert_eq!(to(&r, "h.test", "/"), "stable:80", "the canary does not replace the main route");
    assert_eq!(p.settings.max_body, Some(10 << 20));
    assert_eq!(p.canaries.len(), 1);
    assert_eq!((p.canaries[0].weight, p.canaries[0].by_header.clone()), ((20, 100), Some(("X-Canary".to_owned(), None))));
    assert_eq!(r.problems.len(), 2, "{:?}", r.problems);
    assert!(r.problems.iter().all(|p| p.starts_with("Ingress shop/bad: spec.rules[")), "{:?}", r.problems);
}

/// ingress-nginx's scope of `spec.defaultBackend` (`createServers`): the root of each host the
/// Ingress is the first to name; an Ingress with a default backend and no rules is the
/// catch-all server's; hosts no Ingress names and unmatched paths of host-less rules go to the
/// catch-all (the controller's 404 without one).
#[test]
fn default_backends_serve_their_own_ingresses_hosts() {
    let with_default = |svc: &str, rules: &str| format!("  defaultBackend: {{service: {{name: {svc}, port: {{number: 80}}}}}}\n{rules}");
    let yaml = [
        ingress("first", "2026-01-01T00:00:00Z", "", &with_default("first-default", &format!("  rules:\n{}", rule("a.test", &[("Prefix", "/app", "app")])))),
        // Names a.test too, later: its default backend does not take a.test's unmatched paths.
        ingress(
            "second",
            "2026-01-02T00:00:00Z",
            "",
            &with_default(
                "second-default",
                &format!("  rules:\n{}{}", rule("a.test", &[("Prefix", "/more", "more")]), rule("b.test", &[("Exact", "/b", "b")])),
            ),
        ),
        ingress(
            "hostless",
            "2026-01-03T00:00:00Z",
            "",
            "  rules:\n  - http:\n      paths:\n      - {path: /shared, pathType: Prefix, backend: {service: {name: shared, port: {number: 80}}}}\n",
        ),
    ]
    .concat();
    let r = build(&yaml);
    assert_eq!(to(&r, "a.test", "/app/x"), "app:80");
    assert_eq!(to(&r, "a.test", "/more"), "more:80");
    assert_eq!(to(&r, "a.test", "/elsewhere"), "first-default:80", "the oldest Ingress naming the host roots it");
    assert_eq!(to(&r, "b.test", "/nope"), "second-default:80");
    assert_eq!(to(&r, "c.test", "/shared/1"), "shared:80", "host-less rules serve any host");
    assert_eq!(to(&r, "c.test", "/nope"), "404", "no catch-all: the controller's default backend");
    // An Ingress with a default backend and no rules becomes the catch-all.
    let catch_all = ingress("catch-all", "2026-01-04T00:00:00Z", "", "  defaultBackend: {service: {name: catch, port: {number: 80}}}\n");
    let r = build(&format!("{yaml}{catch_all}"));
    assert_eq!(to(&r, "c.test", "/nope"), "catch:80");
    assert_eq!(to(&r, "a.test", "/elsewhere"), "first-default:80", "named hosts keep their own");
}
