//! The Gateway API conformance suite's HTTP routing tests (kubernetes-sigs/gateway-api,
//! `conformance/tests/`), ported in our own words: each upstream `http.ExpectedResponse` is a
//! row, each request is decided by [`gateway::plan::plan`] over a snapshot of the upstream
//! manifests, and every row is compared as the suite's `CompareRoundTrip` compares a round trip
//! through a real Gateway to its echo backends.
//!
//! How a round trip is stood in for:
//!
//! - The base fixture (`conformance/base/manifests.yaml`): the three namespaces, the Gateways
//!   `same-namespace`, `same-namespace-with-https-listener`, `all-namespaces` and
//!   `backend-namespaces` (class `podnet`, controller `podnet.io/gateway-controller`), and the
//!   echo Services `infra-backend-v1/v2/v3`, `app-backend-v1/v2` and `web-backend`. Their
//!   Deployments are written as the pods they make, each with an address of its own, so the
//!   endpoint a request is forwarded to names the backend that got it (the suite reads the echo
//!   server's pod name). The TLS, gRPC, TCP and DNS backends of the fixture are left out (no
//!   ported test uses them), and so is the certificate Secret the suite creates for the HTTPS
//!   Gateway (`plan` does not terminate TLS).
//! - A request without a Host carries the Gateway's address, as the suite's client sends it.
//!   `plan` takes no Gateway: requests the suite sends to different Gateways on the same port are
//!   the same request to podnet, and rows say which Gateway upstream sends them to.
//! - A forwarded request "arrives" with the request's headers and the plan's request edits
//!   applied, and its path is the plan's target; the echo backend answers 200 with the headers
//!   the row asks it to set, the plan's response edits applied. It waits as long as the
//!   request's `delay` query asks (the echo server's `?delay=1s`): 504 when that is longer than
//!   the plan's deadline or read timeout.
//! - An answer of the proxy's own is its status and `Location`.
//!
//! Status conditions the upstream tests assert (route `Accepted` / `ResolvedRefs` per parent,
//! listeners' `attachedRoutes` and conditions) are checked too. Every difference in a test is
//! collected before it fails, each naming the upstream test and row.
//!
//! Ported (requests rows; status checks besides):
//!
//! | upstream file | test | rows |
//! |---|---|---|
//! | httproute-simple-same-namespace | HTTPRouteSimpleSameNamespace | 1 |
//! | httproute-cross-namespace | HTTPRouteCrossNamespace | 1 |
//! | httproute-exact-path-matching | HTTPRouteExactPathMatching | 6 |
//! | httproute-matching | HTTPRouteMatching | 9 |
//! | httproute-path-match-order | HTTPRoutePathMatchOrder | 6 |
//! | httproute-header-matching | HTTPRouteHeaderMatching | 11 |
//! | httproute-query-param-matching | HTTPRouteQueryParamMatching | 19 |
//! | httproute-method-matching | HTTPRouteMethodMatching | 12 |
//! | httproute-matching-across-routes | HTTPRouteMatchingAcrossRoutes | 8 |
//! | httproute-hostname-intersection | HTTPRouteHostnameIntersection | 33 |
//! | httproute-listener-hostname-matching | HTTPRouteListenerHostnameMatching | 8 |
//! | httproute-multiple-gateways | HTTPRouteMultipleGateways | 4 |
//! | httproute-request-header-modifier | HTTPRouteRequestHeaderModifier | 7 |
//! | httproute-response-header-modifier | HTTPRouteResponseHeaderModifier | 8 |
//! | httproute-redirect-host-and-status | HTTPRouteRedirectHostAndStatus | 2 |
//! | httproute-redirect-path | HTTPRouteRedirectPath | 6 |
//! | httproute-redirect-port | HTTPRouteRedirectPort | 4 |
//! | httproute-redirect-scheme | HTTPRouteRedirectScheme | 4 |
//! | httproute-redirect-port-and-scheme | HTTPRouteRedirectPortAndScheme | 12 (the port 8080 Gateway's 3 left out) |
//! | httproute-rewrite-host | HTTPRouteRewriteHost | 3 |
//! | httproute-rewrite-path | HTTPRouteRewritePath | 6 |
//! | httproute-request-mirror | HTTPRouteRequestMirror | 2 |
//! | httproute-request-multiple-mirrors | HTTPRouteRequestMultipleMirrors | 2 |
//! | httproute-weight | HTTPRouteWeight | 1 and a distribution of 500 |
//! | httproute-timeout-request | HTTPRouteTimeoutRequest | 3 |
//! | httproute-timeout-backend-request | HTTPRouteTimeoutBackendRequest | 3 |
//! | httproute-reference-grant | HTTPRouteReferenceGrant | 2 |
//! | httproute-invalid-reference-grant | HTTPRouteInvalidReferenceGrant | 1 |
//! | httproute-invalid-cross-namespace-backend-ref | HTTPRouteInvalidCrossNamespaceBackendRef | 1 |
//! | httproute-invalid-cross-namespace-parent-ref | HTTPRouteInvalidCrossNamespaceParentRef | status only |
//! | httproute-invalid-nonexistent-backendref | HTTPRouteInvalidNonExistentBackendRef | 1 |
//! | httproute-invalid-backendref-unknown-kind | HTTPRouteInvalidBackendRefUnknownKind | 1 |
//! | httproute-invalid-parentref-not-matching-listener-port | HTTPRouteInvalidParentRefNotMatchingListenerPort | status only |
//! | httproute-invalid-parentref-not-matching-section-name | HTTPRouteInvalidParentRefNotMatchingSectionName | status only |
//! | httproute-invalid-parentref-section-name-not-matching-port | HTTPRouteInvalidParentRefSectionNameNotMatchingPort | status only |
//! | httproute-disallowed-kind | HTTPRouteDisallowedKind | status only |
//! | httproute-omitted-backendrefs | HTTPRouteNoBackendRefs | 3 |
//! | httproute-partially-invalid-via-invalid-reference-grant | HTTPRoutePartiallyInvalidViaInvalidReferenceGrant | 2 |
//! | httproute-service-types | HTTPRouteServiceTypes | 3 |
//! | httproute-named-rule | HTTPRouteNamedRule | 2 |
//! | httproute-https-listener | HTTPRouteHTTPSListener | 3 |
//! | gateway-http-listener-isolation (+ -with-hostname-intersection) | GatewayHTTPListenerIsolation | 32 |
//! | gateway-with-attached-routes | GatewayWithAttachedRoutes | status only |
//!
//! Not ported, for features podnet does not claim: 303/307/308 redirects, backendRef-level
//! filters (HTTPRouteBackendRequestHeaderModifier, HTTPRouteRequestHeaderModifierBackendWeights,
//! HTTPRouteBackendRequestRedirect, HTTPRouteBackendURLRewrite), CORS, retries, percentage
//! mirrors, 421 for misdirected HTTPS requests, backend protocols by `appProtocol` (h2c,
//! WebSocket), listeners on ports other than 80 and 443 (HTTPRouteListenerPortMatching,
//! GatewayWithAttachedRoutesWithPort8080, the port 8080 part of HTTPRouteRedirectPortAndScheme),
//! ListenerSets, TLS and client certificate validation, Gateway addresses and infrastructure,
//! `observedGeneration` bumps, listener `InvalidRouteKinds` (GatewayInvalidRouteKind), and the
//! other Gateway-only status tests (GatewayModifyListeners, GatewayNameMaximumLength, ...).

#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a line number

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gateway::plan::{Listener, Plan};
use gateway::request::RequestHead;
use gateway::server::{Shared, Snapshot};
use http::header::{HeaderMap, HeaderName, HeaderValue};

const CONTROLLER: &str = "podnet.io/gateway-controller";
const INFRA: &str = "gateway-conformance-infra";
const APP: &str = "gateway-conformance-app-backend";
const WEB: &str = "gateway-conformance-web-backend";
const V1: &str = "infra-backend-v1";
const V2: &str = "infra-backend-v2";
const V3: &str = "infra-backend-v3";
/// The Gateway's address: the Host of requests that name none.
const GATEWAY_ADDRESS: &str = "192.0.2.10";
/// The conformance client.
const CLIENT: &str = "192.0.2.99:41000";

/// The echo Deployments of the base fixture and the addresses of their pods (their replicas).
const ECHO: [(&str, &str, &[&str]); 6] = [
    (INFRA, V1, &["10.244.1.11", "10.244.2.11"]),
    (INFRA, V2, &["10.244.1.12", "10.244.2.12"]),
    (INFRA, V3, &["10.244.1.13"]),
    (APP, "app-backend-v1", &["10.244.1.21", "10.244.2.21"]),
    (APP, "app-backend-v2", &["10.244.1.22", "10.244.2.22"]),
    (WEB, "web-backend", &["10.244.1.31", "10.244.2.31"]),
];

/// `conformance/base/manifests.yaml`, the parts HTTP routing uses ({GATEWAY_CLASS_NAME} is
/// `podnet`). The echo pods are added by [`base`].
const BASE: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: podnet}
spec: {controllerName: podnet.io/gateway-controller}
---
apiVersion: v1
kind: Namespace
metadata: {name: gateway-conformance-infra, labels: {gateway-conformance: infra}}
---
apiVersion: v1
kind: Namespace
metadata: {name: gateway-conformance-app-backend, labels: {gateway-conformance: backend}}
---
apiVersion: v1
kind: Namespace
metadata: {name: gateway-conformance-web-backend, labels: {gateway-conformance: backend}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: same-namespace, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: podnet
  listeners:
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Same}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: same-namespace-with-https-listener, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: podnet
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    allowedRoutes: {namespaces: {from: Same}}
    tls: {certificateRefs: [{group: '', kind: Secret, name: tls-validity-checks-certificate, namespace: gateway-conformance-infra}]}
  - name: https-with-hostname
    port: 443
    hostname: second-example.org
    protocol: HTTPS
    allowedRoutes: {namespaces: {from: Same}}
    tls: {certificateRefs: [{group: '', kind: Secret, name: tls-validity-checks-certificate, namespace: gateway-conformance-infra}]}
  - name: https-with-wildcard-hostname
    port: 443
    hostname: '*.wildcard.org'
    protocol: HTTPS
    allowedRoutes: {namespaces: {from: Same}}
    tls: {certificateRefs: [{group: '', kind: Secret, name: tls-validity-checks-certificate, namespace: gateway-conformance-infra}]}
  - name: https-with-hostname-matching-wildcard
    port: 443
    hostname: fourth-example.wildcard.org
    protocol: HTTPS
    allowedRoutes: {namespaces: {from: Same}}
    tls: {certificateRefs: [{group: '', kind: Secret, name: tls-validity-checks-certificate, namespace: gateway-conformance-infra}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: all-namespaces, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: podnet
  listeners:
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: backend-namespaces, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: podnet
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {gateway-conformance: backend}}}}
---
apiVersion: v1
kind: Service
metadata: {name: infra-backend-v1, namespace: gateway-conformance-infra}
spec:
  selector: {app: infra-backend-v1}
  ports:
  - {name: first-port, protocol: TCP, port: 8080, targetPort: 3000}
  - {name: second-port, protocol: TCP, appProtocol: kubernetes.io/h2c, port: 8081, targetPort: 3001}
  - {name: third-port, protocol: TCP, appProtocol: kubernetes.io/ws, port: 8082, targetPort: 3000}
---
apiVersion: v1
kind: Service
metadata: {name: infra-backend-v2, namespace: gateway-conformance-infra}
spec:
  selector: {app: infra-backend-v2}
  ports: [{protocol: TCP, port: 8080, targetPort: 3000}]
---
apiVersion: v1
kind: Service
metadata: {name: infra-backend-v3, namespace: gateway-conformance-infra}
spec:
  selector: {app: infra-backend-v3}
  ports: [{protocol: TCP, port: 8080, targetPort: 3000}]
---
apiVersion: v1
kind: Service
metadata: {name: app-backend-v1, namespace: gateway-conformance-app-backend}
spec:
  selector: {app: app-backend-v1}
  ports: [{protocol: TCP, port: 8080, targetPort: 3000}]
---
apiVersion: v1
kind: Service
metadata: {name: app-backend-v2, namespace: gateway-conformance-app-backend}
spec:
  selector: {app: app-backend-v2}
  ports: [{protocol: TCP, port: 8080, targetPort: 3000}]
---
apiVersion: v1
kind: Service
metadata: {name: web-backend, namespace: gateway-conformance-web-backend}
spec:
  selector: {app: web-backend}
  ports: [{protocol: TCP, port: 8080, targetPort: 3000}]
";

/// The echo server of the suite's backends.
const ECHO_IMAGE: &str = "registry.k8s.io/gateway-api/conformance/echo-basic:v0.1.0";

/// A pod of an echo Deployment: its name starts with the Deployment's, as the suite expects.
fn pod_name(app: &str, i: usize) -> String {
    format!("{app}-7d9f8b6c5-{i}")
}

/// The base fixture with the echo pods: running, ready, each with its address.
fn base() -> String {
    let mut out = String::from(BASE);
    for (ns, app, ips) in ECHO {
        for (i, ip) in ips.iter().enumerate() {
            let name = pod_name(app, i);
            out.push_str(&format!("---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {app}}}}}\n"));
            out.push_str(&format!("spec: {{containers: [{{name: {app}, image: '{ECHO_IMAGE}', ports: [{{containerPort: 3000}}]}}]}}\n"));
            out.push_str(&format!("status: {{phase: Running, podIP: '{ip}', conditions: [{{type: Ready, status: 'True'}}]}}\n"));
        }
    }
    out
}

/// The snapshot podnet serves for the base fixture and a test's manifests.
fn build(manifests: &[&str]) -> Snapshot {
    let mut text = base();
    for m in manifests {
        text.push_str("\n---\n");
        text.push_str(m);
    }
    let objects = model::load_str(&text, Path::new("conformance.yaml")).unwrap();
    let state = model::ClusterState::from_objects(&objects).unwrap();
    Snapshot::build(&state, gateway::ingress::Controller { controller: "k8s.io/ingress-nginx", class: "nginx" }, CONTROLLER)
}

/// Where the suite sends a request: a Gateway's address, over HTTP (port 80) or HTTPS (443).
#[derive(Clone, Copy, Debug)]
struct Via {
    gateway: &'static str,
    https: bool,
    port: u16,
}

const fn via(gateway: &'static str) -> Via {
    Via { gateway, https: false, port: 80 }
}

const fn via_tls(gateway: &'static str) -> Via {
    Via { gateway, https: true, port: 443 }
}

const SAME: Via = via("same-namespace");

/// An object's namespace and name.
type Name = (&'static str, &'static str);

const SAME_NAMESPACE: Name = (INFRA, "same-namespace");

/// An `ExpectedRequest`: the request as the backend should see it.
#[derive(Clone, Debug, Default)]
struct Expected {
    /// Checked when not empty.
    host: String,
    /// Path and query.
    path: String,
    /// These headers with these values (several values joined by `,`).
    headers: Vec<(String, String)>,
    /// Headers that must not arrive.
    absent: Vec<String>,
}

/// A `RedirectRequest`: the parts of `Location` checked; empty ones as the suite defaults them
/// (host: any; port: the scheme's or none; scheme: the request's; path: the request's).
#[derive(Clone, Copy, Debug, Default)]
struct Redirect {
    scheme: &'static str,
    host: &'static str,
    port: &'static str,
    path: &'static str,
}

/// One `http.ExpectedResponse`.
#[derive(Clone, Debug, Default)]
struct Case {
    /// Host (empty: the Gateway's address).
    host: String,
    method: String,
    /// Path and query.
    path: String,
    headers: Vec<(String, String)>,
    /// `BackendSetResponseHeaders`: what the echo backend puts in its response.
    backend_sets: Vec<(String, String)>,
    /// Any of these (none: 200).
    statuses: Vec<u16>,
    /// The backend's name prefix (empty: any).
    backend: String,
    /// The backend's namespace, compared on a 200.
    namespace: String,
    /// None: the request itself should arrive.
    expected: Option<Expected>,
    response_headers: Vec<(String, String)>,
    response_absent: Vec<String>,
    redirect: Option<Redirect>,
    /// `namespace/name` of the backends a copy should reach.
    mirrored_to: Vec<String>,
}

fn get(path: &str) -> Case {
    request("GET", path)
}

fn request(method: &str, path: &str) -> Case {
    Case { method: method.into(), path: path.into(), ..Case::default() }
}

impl Case {
    fn host(mut self, host: &str) -> Case {
        self.host = host.into();
        self
    }

    fn header(mut self, name: &str, value: &str) -> Case {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn backend_sets(mut self, name: &str, value: &str) -> Case {
        self.backend_sets.push((name.into(), value.into()));
        self
    }

    /// Answered by this backend, 200.
    fn to(mut self, namespace: &str, backend: &str) -> Case {
        self.namespace = namespace.into();
        self.backend = backend.into();
        self
    }

    fn namespace(mut self, namespace: &str) -> Case {
        self.namespace = namespace.into();
        self
    }

    fn status(mut self, code: u16) -> Case {
        self.statuses.push(code);
        self
    }

    /// An `ExpectedRequest` with this path (and the GET method; Host unchecked).
    fn arrives(mut self, path: &str) -> Case {
        self.expected = Some(Expected { path: path.into(), ..Expected::default() });
        self
    }

    fn expected_mut(&mut self) -> &mut Expected {
        self.expected.as_mut().expect("arrives(path) comes first")
    }

    fn arrives_host(mut self, host: &str) -> Case {
        self.expected_mut().host = host.into();
        self
    }

    fn arrives_header(mut self, name: &str, value: &str) -> Case {
        self.expected_mut().headers.push((name.into(), value.into()));
        self
    }

    fn arrives_without(mut self, name: &str) -> Case {
        self.expected_mut().absent.push(name.into());
        self
    }

    fn responds_header(mut self, name: &str, value: &str) -> Case {
        self.response_headers.push((name.into(), value.into()));
        self
    }

    fn responds_without(mut self, name: &str) -> Case {
        self.response_absent.push(name.into());
        self
    }

    fn redirects(mut self, redirect: Redirect) -> Case {
        self.redirect = Some(redirect);
        self
    }

    fn mirrored_to(mut self, namespace: &str, name: &str) -> Case {
        self.mirrored_to.push(format!("{namespace}/{name}"));
        self
    }

    fn describe(&self) -> String {
        let host = if self.host.is_empty() { GATEWAY_ADDRESS } else { self.host.as_str() };
        let headers = if self.headers.is_empty() { String::new() } else { format!(" with headers {:?}", self.headers) };
        format!("{} '{host}{}'{headers}", self.method, self.path)
    }
}

/// What came of a request, as the suite's client and the echo backend would tell it.
#[derive(Debug, Default)]
struct Outcome {
    status: u16,
    location: Option<String>,
    /// The backend that answered: namespace and Deployment.
    backend: Option<(&'static str, &'static str)>,
    /// The request as it arrived: method, path and query, headers (Host among them).
    method: String,
    target: String,
    request: HeaderMap,
    response: HeaderMap,
    /// `namespace/name` of the backends copies went to (or the bare address).
    mirrors: Vec<String>,
}

/// A status condition the upstream test asserts.
#[derive(Clone, Copy, Debug)]
enum Check {
    /// The route has this condition for a parentRef naming the Gateway (reason "": any).
    Route { route: Name, gateway: Name, type_: &'static str, status: bool, reason: &'static str },
    /// `HTTPRouteMustHaveNoAcceptedParents`.
    NoAcceptedParents(Name),
    /// `GatewayMustHaveZeroRoutes`.
    ZeroRoutes(Name),
    /// A listener's `attachedRoutes`.
    Attached { gateway: Name, listener: &'static str, routes: usize },
    /// A listener's condition.
    Listener { gateway: Name, listener: &'static str, type_: &'static str, status: bool },
}

/// `GatewayAndHTTPRoutesMustBeAccepted`.
fn accepted(route: Name, gateway: Name) -> Check {
    Check::Route { route, gateway, type_: "Accepted", status: true, reason: "Accepted" }
}

/// `HTTPRouteMustHaveResolvedRefsConditionsTrue`.
fn resolved(route: Name, gateway: Name) -> Check {
    Check::Route { route, gateway, type_: "ResolvedRefs", status: true, reason: "ResolvedRefs" }
}

/// Both: the route is attached and its references resolve.
fn attached(route: Name, gateway: Name) -> [Check; 2] {
    [accepted(route, gateway), resolved(route, gateway)]
}

/// A condition that is False.
fn refused(route: Name, gateway: Name, type_: &'static str, reason: &'static str) -> Check {
    Check::Route { route, gateway, type_, status: false, reason }
}

fn zero_routes(gateway: Name) -> Check {
    Check::ZeroRoutes(gateway)
}

/// One upstream test: podnet serving its manifests, and the differences found so far.
struct Run {
    test: &'static str,
    shared: Arc<Shared>,
    snapshot: Arc<Snapshot>,
    /// Pod address → namespace and Deployment.
    pods: BTreeMap<IpAddr, (&'static str, &'static str)>,
    failures: Vec<String>,
}

impl Run {
    fn new(test: &'static str, manifests: &[&str]) -> Run {
        let shared = Shared::new(build(manifests));
        let snapshot = shared.snapshot();
        let pods: BTreeMap<IpAddr, (&'static str, &'static str)> =
            ECHO.iter().flat_map(|(ns, app, ips)| ips.iter().map(move |ip| (ip.parse().unwrap(), (*ns, *app)))).collect();
        Run { test, shared, snapshot, pods, failures: Vec::new() }
    }

    /// The manifests change (the test deletes or adds objects).
    fn swap(&mut self, manifests: &[&str]) {
        self.shared.swap(build(manifests));
        self.snapshot = self.shared.snapshot();
    }

    fn fail(&mut self, what: String) {
        self.failures.push(format!("{}: {what}", self.test));
    }

    /// Runs rows, each compared as `CompareRoundTrip` does.
    fn rows(&mut self, via: Via, cases: &[Case]) {
        for (i, c) in cases.iter().enumerate() {
            let diffs = match self.exchange(via, c) {
                Ok(got) => compare(c, via, &got),
                Err(why) => vec![why],
            };
            if !diffs.is_empty() {
                self.fail(format!("row {i} via {}: {}: {}", via.gateway, c.describe(), diffs.join("; ")));
            }
        }
    }

    /// What podnet does with a request and what the echo backend answers.
    fn exchange(&self, via: Via, c: &Case) -> Result<Outcome, String> {
        let host = if c.host.is_empty() { GATEWAY_ADDRESS } else { c.host.as_str() };
        let mut builder = http::Request::builder().method(c.method.as_str()).uri(c.path.as_str()).header(http::header::HOST, host);
        for (n, v) in &c.headers {
            builder = builder.header(n.as_str(), v.as_str());
        }
        let (parts, ()) = builder.body(()).map_err(|e| format!("the request cannot be made: {e}"))?.into_parts();
        let head = RequestHead::from_parts(&parts);
        let peer: SocketAddr = CLIENT.parse().unwrap();
        let plan = gateway::plan::plan(
            &self.shared,
            &self.snapshot,
            &head,
            head.host().as_deref(),
            &Listener::new(peer, via.https, via.port).at_gateway(INFRA, via.gateway),
        );
        let f = match plan {
            Plan::Answer(a) => return Ok(Outcome { status: a.status.as_u16(), location: a.location, ..Outcome::default() }),
            Plan::Forward(f) => f,
        };
        let Some(backend) = self.pods.get(&f.endpoint.ip()).copied() else {
            return Err(format!("forwarded to {}, which is no echo pod of the fixture", f.endpoint));
        };
        let mut request = parts.headers.clone();
        f.request.apply(&mut request);
        let mut response = HeaderMap::new();
        for (n, v) in &c.backend_sets {
            response.insert(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        f.response.apply(&mut response);
        let late = echo_delay(&f.target).is_some_and(|d| f.deadline.is_some_and(|t| t < d) || f.read_timeout < d);
        let mirrors = f.mirrors.iter().map(|m| self.pods.get(&m.ip()).map_or_else(|| m.to_string(), |(ns, app)| format!("{ns}/{app}"))).collect();
        Ok(Outcome {
            status: if late { 504 } else { 200 },
            location: None,
            backend: Some(backend),
            method: parts.method.to_string(),
            target: f.target.clone(),
            request,
            response,
            mirrors,
        })
    }

    /// `weight.TestWeightedDistribution`: 500 requests, each backend's share within 5 points
    /// of its weight, and exactly the backends of non-zero weight reached.
    fn weights(&mut self, via: Via, path: &str, namespace: &str, want: &[(&str, f64)]) {
        const REQUESTS: u32 = 500;
        const TOLERANCE: f64 = 0.05;
        let mut seen: BTreeMap<String, u32> = BTreeMap::new();
        for _ in 0..REQUESTS {
            let c = get(path).namespace(namespace);
            let diffs = match self.exchange(via, &c) {
                Ok(got) => {
                    if let Some((_, app)) = got.backend {
                        *seen.entry(app.to_owned()).or_default() += 1;
                    }
                    compare(&c, via, &got)
                }
                Err(why) => vec![why],
            };
            if !diffs.is_empty() {
                self.fail(format!("weighted distribution via {}: {}: {}", via.gateway, c.describe(), diffs.join("; ")));
                return;
            }
        }
        let mut problems = Vec::new();
        for name in seen.keys().filter(|n| !want.iter().any(|(w, _)| *w == n.as_str())) {
            problems.push(format!("{name} got requests"));
        }
        let active = want.iter().filter(|(_, w)| *w > 0.0).count();
        if seen.len() != active {
            problems.push(format!("{} backends got requests where {active} should", seen.len()));
        }
        for (name, weight) in want {
            let share = f64::from(seen.get(*name).copied().unwrap_or_default()) / f64::from(REQUESTS);
            if (share - weight).abs() > TOLERANCE {
                problems.push(format!("{name} got {share:.3} of the requests, its weight is {weight}"));
            }
        }
        if !problems.is_empty() {
            self.fail(format!("weighted distribution via {}: {} (seen {seen:?})", via.gateway, problems.join("; ")));
        }
    }

    /// The status conditions the test asserts.
    fn check(&mut self, checks: &[Check]) {
        let snapshot = Arc::clone(&self.snapshot);
        let status = &snapshot.gateway.status;
        for c in checks {
            let problem = match *c {
                Check::Route { route, gateway, type_, status: want, reason } => {
                    // `HTTPRouteMustHaveCondition`: any parent naming the Gateway (a parentRef
                    // without a namespace names it whatever its namespace).
                    let parents: Vec<_> = status
                        .routes
                        .get(&(route.0.to_owned(), route.1.to_owned()))
                        .into_iter()
                        .flatten()
                        .filter(|(p, _)| p.name == gateway.1 && p.namespace.as_deref().is_none_or(|ns| ns == gateway.0))
                        .collect();
                    let found = parents
                        .iter()
                        .any(|(_, conditions)| conditions.iter().any(|x| x.type_ == type_ && x.status == want && (reason.is_empty() || x.reason == reason)));
                    let has: Vec<String> = parents
                        .iter()
                        .flat_map(|(_, conditions)| conditions.iter().filter(|x| x.type_ == type_))
                        .map(|x| format!("{}={} {} ({})", x.type_, x.status, x.reason, x.message))
                        .collect();
                    let what = format!("HTTPRoute {}/{} for Gateway {}/{}", route.0, route.1, gateway.0, gateway.1);
                    match (found, parents.is_empty()) {
                        (true, _) => None,
                        (false, true) => Some(format!("{what}: no status; want {type_}={want} {reason}")),
                        (false, false) => Some(format!(
                            "{what}: {}; want {type_}={want} {reason}",
                            if has.is_empty() { "no such condition".to_owned() } else { has.join(", ") }
                        )),
                    }
                }
                Check::NoAcceptedParents(route) => {
                    // No parent in the status, or a single one that is not accepted.
                    let parents: Vec<_> = status.routes.get(&(route.0.to_owned(), route.1.to_owned())).into_iter().flatten().collect();
                    let accepted = parents.iter().any(|(_, conditions)| conditions.iter().any(|x| x.type_ == "Accepted" && x.status));
                    (parents.len() > 1 || accepted).then(|| {
                        let names: Vec<&str> = parents.iter().map(|(p, _)| p.name.as_str()).collect();
                        format!("HTTPRoute {}/{} has parents {names:?}, accepted: {accepted}; want none, or one not accepted", route.0, route.1)
                    })
                }
                Check::ZeroRoutes(gateway) => match status.gateways.get(&(gateway.0.to_owned(), gateway.1.to_owned())) {
                    // `GatewayMustHaveZeroRoutes`: no listener in the status, or one with no routes.
                    None => Some(format!("Gateway {}/{}: no status", gateway.0, gateway.1)),
                    Some((_, listeners)) if listeners.is_empty() || (listeners.len() == 1 && listeners[0].2 == 0) => None,
                    Some((_, listeners)) => {
                        let counts: Vec<(&str, usize)> = listeners.iter().map(|l| (l.0.as_str(), l.2)).collect();
                        Some(format!("Gateway {}/{}: listeners and attachedRoutes {counts:?}; want none, or one with 0", gateway.0, gateway.1))
                    }
                },
                Check::Attached { gateway, listener, routes } => {
                    let found = status.gateways.get(&(gateway.0.to_owned(), gateway.1.to_owned())).and_then(|(_, ls)| ls.iter().find(|l| l.0 == listener));
                    match found {
                        None => Some(format!("Gateway {}/{}: no listener {listener}", gateway.0, gateway.1)),
                        Some(l) if l.2 != routes => {
                            Some(format!("Gateway {}/{} listener {listener}: attachedRoutes {}; want {routes}", gateway.0, gateway.1, l.2))
                        }
                        Some(_) => None,
                    }
                }
                Check::Listener { gateway, listener, type_, status: want } => {
                    let found = status.gateways.get(&(gateway.0.to_owned(), gateway.1.to_owned())).and_then(|(_, ls)| ls.iter().find(|l| l.0 == listener));
                    match found.map(|l| l.1.iter().find(|x| x.type_ == type_)) {
                        None => Some(format!("Gateway {}/{}: no listener {listener}", gateway.0, gateway.1)),
                        Some(None) => Some(format!("Gateway {}/{} listener {listener}: no {type_} condition; want {type_}={want}", gateway.0, gateway.1)),
                        Some(Some(x)) if x.status != want => Some(format!(
                            "Gateway {}/{} listener {listener}: {type_}={} {} ({}); want {type_}={want}",
                            gateway.0, gateway.1, x.status, x.reason, x.message
                        )),
                        Some(Some(_)) => None,
                    }
                }
            };
            if let Some(p) = problem {
                self.fail(p);
            }
        }
    }

    /// Fails with every difference found.
    fn finish(self) {
        assert!(self.failures.is_empty(), "{} differences from the Gateway API conformance suite:\n{}", self.failures.len(), self.failures.join("\n"));
    }
}

/// The echo server's `delay` query parameter (`1s`, `500ms`).
fn echo_delay(target: &str) -> Option<Duration> {
    let (_, query) = target.split_once('?')?;
    let value = query.split('&').find_map(|kv| kv.strip_prefix("delay="))?;
    if let Some(ms) = value.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    value.strip_suffix('s')?.parse().ok().map(Duration::from_secs)
}

/// All values of a header joined by `,`, as the suite reads them; `None` when absent.
fn joined(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<&str> = headers.get_all(name).iter().map(|v| v.to_str().unwrap_or("<not text>")).collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// `CompareRoundTrip`: every difference between a row's expectation and what came of it.
fn compare(c: &Case, via: Via, got: &Outcome) -> Vec<String> {
    let mut diffs = Vec::new();
    let forwarded = got.backend.map(|(ns, app)| format!(" (answered by {ns}/{app})")).unwrap_or_default();
    // Mirrors are read from the mirror backends' logs, whatever the response.
    for m in &c.mirrored_to {
        if !got.mirrors.contains(m) {
            diffs.push(format!("no copy mirrored to {m} (copies went to {:?})", got.mirrors));
        }
    }
    let statuses = if c.statuses.is_empty() { vec![200] } else { c.statuses.clone() };
    let timeout = |s: u16| s == 408 || s == 504;
    if timeout(got.status) && statuses.iter().any(|s| timeout(*s)) {
        return diffs;
    }
    if !statuses.contains(&got.status) {
        diffs.push(format!("status {}{forwarded}; want one of {statuses:?}", got.status));
        return diffs;
    }
    if matches!(got.status, 200 | 204) {
        let expected =
            c.expected.clone().unwrap_or_else(|| Expected { host: c.host.clone(), path: c.path.clone(), headers: c.headers.clone(), absent: Vec::new() });
        let method = if c.expected.is_some() { "GET" } else { c.method.as_str() };
        let host = got.request.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        if !expected.host.is_empty() && expected.host != host {
            diffs.push(format!("the backend got Host {host:?}; want {:?}", expected.host));
        }
        if expected.path != got.target {
            diffs.push(format!("the backend got path {:?}; want {:?}", got.target, expected.path));
        }
        if method != got.method {
            diffs.push(format!("the backend got method {}; want {method}", got.method));
        }
        let (namespace, app) = got.backend.unwrap_or(("", ""));
        if c.namespace != namespace {
            diffs.push(format!("answered in namespace {namespace:?}; want {:?}", c.namespace));
        }
        for (n, v) in &expected.headers {
            match joined(&got.request, n) {
                None => diffs.push(format!("the backend got no {n} header; want {v:?}")),
                Some(value) if value != *v => diffs.push(format!("the backend got {n}: {value:?}; want {v:?}")),
                Some(_) => {}
            }
        }
        for n in &expected.absent {
            if let Some(value) = joined(&got.request, n) {
                diffs.push(format!("the backend got {n}: {value:?}; want none"));
            }
        }
        for (n, v) in &c.response_headers {
            match joined(&got.response, n) {
                None => diffs.push(format!("the response has no {n} header; want {v:?}")),
                Some(value) if value != *v => diffs.push(format!("the response has {n}: {value:?}; want {v:?}")),
                Some(_) => {}
            }
        }
        for n in &c.response_absent {
            if let Some(value) = joined(&got.response, n) {
                diffs.push(format!("the response has {n}: {value:?}; want none"));
            }
        }
        if !app.starts_with(&c.backend) {
            diffs.push(format!("answered by {app}; want {}", c.backend));
        }
    } else if matches!(got.status, 301 | 302 | 303 | 307 | 308)
        && let Some(want) = c.redirect
    {
        let Some(location) = got.location.as_deref() else {
            diffs.push("a redirect without Location".into());
            return diffs;
        };
        let scheme_of_request = if via.https { "https" } else { "http" };
        let request_path = c.path.split('?').next().unwrap_or("");
        let (scheme, host, port, path) = match location.parse::<http::Uri>() {
            Ok(u) if u.scheme().is_some() => (
                u.scheme_str().unwrap_or("").to_owned(),
                u.host().unwrap_or("").to_owned(),
                u.port().map(|p| p.as_str().to_owned()).unwrap_or_default(),
                u.path().to_owned(),
            ),
            // A relative Location is resolved against the request's URL.
            Ok(u) => (scheme_of_request.to_owned(), GATEWAY_ADDRESS.to_owned(), String::new(), u.path().to_owned()),
            Err(e) => {
                diffs.push(format!("Location {location:?} is not a URL: {e}"));
                return diffs;
            }
        };
        let want_host = if want.host.is_empty() { host.as_str() } else { want.host };
        if want_host != host {
            diffs.push(format!("redirected to host {host:?}; want {want_host:?} (Location {location})"));
        }
        if want.port.is_empty() {
            let well_known = match scheme.to_ascii_lowercase().as_str() {
                "http" => "80",
                "https" => "443",
                _ => "",
            };
            if !well_known.is_empty() && !port.is_empty() && port != well_known {
                diffs.push(format!("redirected to port {port} with scheme {scheme}; want {well_known} or none (Location {location})"));
            }
        } else if want.port != port {
            diffs.push(format!("redirected to port {port:?}; want {:?} (Location {location})", want.port));
        }
        let want_scheme = if want.scheme.is_empty() { scheme_of_request } else { want.scheme };
        if want_scheme != scheme {
            diffs.push(format!("redirected to scheme {scheme:?}; want {want_scheme:?} (Location {location})"));
        }
        let want_path = if want.path.is_empty() { request_path } else { want.path };
        if want_path != path {
            diffs.push(format!("redirected to path {path:?}; want {want_path:?} (Location {location})"));
        }
    }
    diffs
}

// ---------------------------------------------------------------------------------------------
// Simple attachment and path, header, query and method matching.
// ---------------------------------------------------------------------------------------------

const SIMPLE_SAME_NAMESPACE: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: gateway-conformance-infra-test, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - backendRefs: [{name: infra-backend-v1, port: 8080}]
";

/// Gateway API conformance HTTPRouteSimpleSameNamespace: a route in the Gateway's namespace
/// attaches to it.
#[test]
fn http_route_simple_same_namespace() {
    let mut run = Run::new("HTTPRouteSimpleSameNamespace", &[SIMPLE_SAME_NAMESPACE]);
    run.check(&attached((INFRA, "gateway-conformance-infra-test"), SAME_NAMESPACE));
    run.rows(SAME, &[get("/").status(200).to(INFRA, V1)]);
    run.finish();
}

const CROSS_NAMESPACE: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cross-namespace, namespace: gateway-conformance-web-backend}
spec:
  parentRefs: [{name: backend-namespaces, namespace: gateway-conformance-infra}]
  rules:
  - backendRefs: [{name: web-backend, port: 8080}]
";

/// Gateway API conformance HTTPRouteCrossNamespace: a route in a namespace the listener's
/// selector allows attaches to a Gateway of another namespace.
#[test]
fn http_route_cross_namespace() {
    let mut run = Run::new("HTTPRouteCrossNamespace", &[CROSS_NAMESPACE]);
    run.check(&attached((WEB, "cross-namespace"), (INFRA, "backend-namespaces")));
    run.rows(via("backend-namespaces"), &[get("/").status(200).to(WEB, "web-backend")]);
    run.finish();
}

const EXACT_PATH_MATCHING: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: exact-matching, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: Exact, value: /one}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: Exact, value: /two}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
";

/// Gateway API conformance HTTPRouteExactPathMatching
#[test]
fn http_route_exact_path_matching() {
    let mut run = Run::new("HTTPRouteExactPathMatching", &[EXACT_PATH_MATCHING]);
    run.check(&attached((INFRA, "exact-matching"), SAME_NAMESPACE));
    run.rows(
        SAME,
        &[
            get("/one").to(INFRA, V1),
            get("/two").to(INFRA, V2),
            get("/").status(404),
            get("/one/example").status(404),
            get("/two/").status(404),
            get("/Two").status(404),
        ],
    );
    run.finish();
}

const MATCHING: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: matching, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /}
    - headers: [{name: version, value: one}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches:
    - path: {type: PathPrefix, value: /v2}
    - headers: [{name: version, value: two}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
";

/// Gateway API conformance HTTPRouteMatching: path and header matches, ORed within a rule.
#[test]
fn http_route_matching() {
    let mut run = Run::new("HTTPRouteMatching", &[MATCHING]);
    run.check(&attached((INFRA, "matching"), SAME_NAMESPACE));
    run.rows(
        SAME,
        &[
            get("/").to(INFRA, V1),
            get("/example").to(INFRA, V1),
            get("/").header("Version", "one").to(INFRA, V1),
            get("/v2").to(INFRA, V2),
            get("/v2/example").to(INFRA, V2),
            get("/").header("Version", "two").to(INFRA, V2),
            get("/v2/").to(INFRA, V2),
            // Not a path segment prefix, so not /v2.
            get("/v2example").to(INFRA, V1),
            get("/foo/v2/example").to(INFRA, V1),
        ],
    );
    run.finish();
}

const PATH_MATCH_ORDER: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: path-matching-order, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: Exact, value: /match}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: Exact, value: /match/exact}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{path: {type: Exact, value: /match/exact/one}}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /match/}}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /match/prefix/}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /match/prefix/one}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
";

/// Gateway API conformance HTTPRoutePathMatchOrder: Exact before PathPrefix, longer prefixes
/// first.
#[test]
fn http_route_path_match_order() {
    let mut run = Run::new("HTTPRoutePathMatchOrder", &[PATH_MATCH_ORDER]);
    run.check(&attached((INFRA, "path-matching-order"), SAME_NAMESPACE));
    run.rows(
        SAME,
        &[
            get("/match/exact/one").to(INFRA, V3),
            get("/match/exact").to(INFRA, V2),
            get("/match").to(INFRA, V1),
            get("/match/prefix/one/any").to(INFRA, V2),
            get("/match/prefix/any").to(INFRA, V1),
            get("/match/any").to(INFRA, V3),
        ],
    );
    run.finish();
}

const HEADER_MATCHING: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: header-matching, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{headers: [{name: version, value: one}]}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{headers: [{name: version, value: two}]}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{headers: [{name: version, value: two}, {name: color, value: orange}]}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{headers: [{name: color, value: blue}]}, {headers: [{name: color, value: green}]}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{headers: [{name: color, value: red}]}, {headers: [{name: color, value: yellow}]}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
";

/// Gateway API conformance HTTPRouteHeaderMatching
#[test]
fn http_route_header_matching() {
    let mut run = Run::new("HTTPRouteHeaderMatching", &[HEADER_MATCHING]);
    run.check(&attached((INFRA, "header-matching"), SAME_NAMESPACE));
    run.rows(
        SAME,
        &[
            get("/").header("Version", "one").to(INFRA, V1),
            get("/").header("Version", "two").to(INFRA, V2),
            get("/").header("Version", "two").header("Color", "orange").to(INFRA, V1),
            get("/").header("Version", "two").header("Color", "blue").to(INFRA, V2),
            get("/").header("Color", "orange").status(404),
            get("/").header("Some-Other-Header", "one").status(404),
            get("/").header("Color", "blue").to(INFRA, V1),
            get("/").header("Color", "green").to(INFRA, V1),
            get("/").header("Color", "red").to(INFRA, V2),
            get("/").header("Color", "yellow").to(INFRA, V2),
            get("/").header("Color", "purple").status(404),
        ],
    );
    run.finish();
}

const QUERY_PARAM_MATCHING: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: query-param-matching, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{queryParams: [{name: animal, value: whale}]}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{queryParams: [{name: animal, value: dolphin}]}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches:
    - queryParams: [{name: animal, value: dolphin}, {name: color, value: blue}]
    - queryParams: [{name: ANIMAL, value: Whale}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /path1}, queryParams: [{name: animal, value: whale}]}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{headers: [{name: version, value: one}], queryParams: [{name: animal, value: whale}]}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /path2}, headers: [{name: version, value: two}], queryParams: [{name: animal, value: whale}]}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches:
    - path: {type: PathPrefix, value: /path3}
      queryParams: [{name: animal, value: shark}]
    - path: {type: PathPrefix, value: /path4}
      headers: [{name: version, value: three}]
      queryParams: [{name: animal, value: kraken}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /path5}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{queryParams: [{name: animal, value: hydra}]}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{headers: [{name: version, value: four}]}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
";

/// Gateway API conformance HTTPRouteQueryParamMatching
#[test]
fn http_route_query_param_matching() {
    let mut run = Run::new("HTTPRouteQueryParamMatching", &[QUERY_PARAM_MATCHING]);
    run.check(&attached((INFRA, "query-param-matching"), SAME_NAMESPACE));
    run.rows(
        SAME,
        &[
            get("/?animal=whale").to(INFRA, V1),
            get("/?animal=dolphin").to(INFRA, V2),
            get("/?animal=dolphin&color=blue").to(INFRA, V3),
            get("/?ANIMAL=Whale").to(INFRA, V3),
            get("/?animal=whale&otherparam=irrelevant").to(INFRA, V1),
            get("/?animal=dolphin&color=yellow").to(INFRA, V2),
            get("/?color=blue").status(404),
            get("/?animal=dog").status(404),
            get("/?animal=whaledolphin").status(404),
            get("/").status(404),
            // Combinations with core match types.
            get("/path1?animal=whale").to(INFRA, V1),
            get("/?animal=whale").header("version", "one").to(INFRA, V2),
            get("/path2?animal=whale").header("version", "two").to(INFRA, V3),
            // (cond1 AND cond2) OR (cond3 AND cond4 AND cond5).
            get("/path3?animal=shark").to(INFRA, V1),
            get("/path4?animal=kraken").header("version", "three").to(INFRA, V1),
            get("/?animal=shark").status(404),
            get("/path4?animal=kraken").status(404),
            // Precedence.
            get("/path5?animal=hydra").to(INFRA, V1),
            get("/?animal=hydra").header("version", "four").to(INFRA, V3),
        ],
    );
    run.finish();
}

const METHOD_MATCHING: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: method-matching, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{method: POST}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{method: GET}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /path1}, method: GET}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{headers: [{name: version, value: one}], method: PUT}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /path2}, headers: [{name: version, value: two}], method: POST}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches:
    - path: {type: PathPrefix, value: /path3}
      method: PATCH
    - path: {type: PathPrefix, value: /path4}
      headers: [{name: version, value: three}]
      method: DELETE
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /path5}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{method: PATCH}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{headers: [{name: version, value: four}]}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
";

/// Gateway API conformance HTTPRouteMethodMatching
#[test]
fn http_route_method_matching() {
    let mut run = Run::new("HTTPRouteMethodMatching", &[METHOD_MATCHING]);
    run.check(&attached((INFRA, "method-matching"), SAME_NAMESPACE));
    run.rows(
        SAME,
        &[
            request("POST", "/").to(INFRA, V1),
            request("GET", "/").to(INFRA, V2),
            request("HEAD", "/").status(404),
            // Combinations with core match types.
            request("GET", "/path1").to(INFRA, V1),
            request("PUT", "/").header("version", "one").to(INFRA, V2),
            request("POST", "/path2").header("version", "two").to(INFRA, V3),
            // (cond1 AND cond2) OR (cond3 AND cond4 AND cond5).
            request("PATCH", "/path3").to(INFRA, V1),
            request("DELETE", "/path4").header("version", "three").to(INFRA, V1),
            request("PUT", "/").status(404),
            request("DELETE", "/path4").status(404),
            // Precedence.
            request("PATCH", "/path5").to(INFRA, V1),
            request("PATCH", "/").header("version", "four").to(INFRA, V2),
        ],
    );
    run.finish();
}

const MATCHING_ACROSS_ROUTES: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: matching-part1, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  hostnames: [example.com, example.net]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /}
    - headers: [{name: version, value: one}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: matching-part2, namespace: gateway-conformance-infra}
spec:
  hostnames: [example.com]
  parentRefs: [{name: same-namespace}]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /v2}
    - headers: [{name: version, value: two}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
";

/// Gateway API conformance HTTPRouteMatchingAcrossRoutes: matches of two routes for one
/// hostname compete as one set.
#[test]
fn http_route_matching_across_routes() {
    let mut run = Run::new("HTTPRouteMatchingAcrossRoutes", &[MATCHING_ACROSS_ROUTES]);
    run.check(&attached((INFRA, "matching-part1"), SAME_NAMESPACE));
    run.check(&attached((INFRA, "matching-part2"), SAME_NAMESPACE));
    run.rows(
        SAME,
        &[
            get("/").host("example.com").to(INFRA, V1),
            get("/example").host("example.com").to(INFRA, V1),
            get("/example").host("example.net").to(INFRA, V1),
            get("/example").host("example.com").header("Version", "one").to(INFRA, V1),
            get("/v2").host("example.com").to(INFRA, V2),
            get("/v2").host("example.net").to(INFRA, V1),
            get("/v2/example").host("example.com").to(INFRA, V2),
            get("/").host("example.com").header("Version", "two").to(INFRA, V2),
        ],
    );
    run.finish();
}

// ---------------------------------------------------------------------------------------------
// Hostnames, listeners and Gateways.
// ---------------------------------------------------------------------------------------------

const HOSTNAME_INTERSECTION: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: httproute-hostname-intersection, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: podnet
  listeners:
  - {name: listener-1, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Same}}, hostname: very.specific.com}
  - {name: listener-2, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Same}}, hostname: '*.wildcard.io'}
  - {name: listener-3, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Same}}, hostname: '*.anotherwildcard.io'}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: httproute-hostname-intersection-all, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: podnet
  listeners:
  - {name: listener-1, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Same}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: specific-host-matches-listener-specific-host, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: httproute-hostname-intersection, namespace: gateway-conformance-infra}]
  hostnames: [non.matching.com, '*.nonmatchingwildcard.io', very.specific.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /s1}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: specific-host-matches-listener-wildcard-host, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: httproute-hostname-intersection, namespace: gateway-conformance-infra}]
  hostnames: [non.matching.com, wildcard.io, foo.wildcard.io, bar.wildcard.io, foo.bar.wildcard.io]
  rules:
  - matches: [{path: {type: PathPrefix, value: /s2}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wildcard-host-matches-listener-specific-host, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: httproute-hostname-intersection, namespace: gateway-conformance-infra}]
  hostnames: [non.matching.com, '*.specific.com']
  rules:
  - matches: [{path: {type: PathPrefix, value: /s3}}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wildcard-host-matches-listener-wildcard-host, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: httproute-hostname-intersection, namespace: gateway-conformance-infra}]
  hostnames: ['*.anotherwildcard.io']
  rules:
  - matches: [{path: {type: PathPrefix, value: /s4}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: no-intersecting-hosts, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: httproute-hostname-intersection, namespace: gateway-conformance-infra}]
  hostnames: [specific.but.wrong.com, wildcard.io]
  rules:
  - matches: [{path: {type: PathPrefix, value: /s5}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: httproute-hostname-intersection-all, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: httproute-hostname-intersection-all, namespace: gateway-conformance-infra}]
  hostnames: [first.com, sub.first.com, second.com, sub.second.com]
  rules:
  - backendRefs: [{name: infra-backend-v2, port: 8080}]
";

/// Gateway API conformance HTTPRouteHostnameIntersection: routes attach to listeners only
/// where their hostnames intersect, and take requests only for the intersection.
#[test]
fn http_route_hostname_intersection() {
    let mut run = Run::new("HTTPRouteHostnameIntersection", &[HOSTNAME_INTERSECTION]);
    let gw = (INFRA, "httproute-hostname-intersection");
    for route in [
        "specific-host-matches-listener-specific-host",
        "specific-host-matches-listener-wildcard-host",
        "wildcard-host-matches-listener-specific-host",
        "wildcard-host-matches-listener-wildcard-host",
    ] {
        run.check(&attached((INFRA, route), gw));
    }
    let via_gw = via("httproute-hostname-intersection");
    run.rows(
        via_gw,
        &[
            get("/s1").host("very.specific.com").to(INFRA, V1),
            get("/s1").host("very.specific.com:1234").to(INFRA, V1),
            get("/s1").host("non.matching.com").status(404),
            get("/s1").host("foo.nonmatchingwildcard.io").status(404),
            get("/s1").host("foo.wildcard.io").status(404),
            get("/non-matching-prefix").host("very.specific.com").status(404),
            get("/s2").host("foo.wildcard.io").to(INFRA, V2),
            get("/s2").host("bar.wildcard.io").to(INFRA, V2),
            get("/s2").host("foo.bar.wildcard.io").to(INFRA, V2),
            get("/s2").host("non.matching.com").status(404),
            get("/s2").host("wildcard.io").status(404),
            get("/s2").host("very.specific.com").status(404),
            get("/non-matching-prefix").host("foo.wildcard.io").status(404),
            get("/s3").host("very.specific.com").to(INFRA, V3),
            get("/s3").host("non.matching.com").status(404),
            get("/s3").host("foo.specific.com").status(404),
            get("/s3").host("foo.wildcard.io").status(404),
            get("/non-matching-prefix").host("very.specific.com").status(404),
            get("/s4").host("foo.anotherwildcard.io").to(INFRA, V1),
            get("/s4").host("bar.anotherwildcard.io").to(INFRA, V1),
            get("/s4").host("foo.bar.anotherwildcard.io").to(INFRA, V1),
            get("/s4").host("anotherwildcard.io").status(404),
            get("/s4").host("foo.wildcard.io").status(404),
            get("/s4").host("very.specific.com").status(404),
            get("/non-matching-prefix").host("foo.anotherwildcard.io").status(404),
        ],
    );
    // Routes that do not intersect with the listeners' hostnames.
    run.check(&[refused((INFRA, "no-intersecting-hosts"), gw, "Accepted", "NoMatchingListenerHostname")]);
    run.rows(via_gw, &[get("/s5").host("specific.but.wrong.com").status(404), get("/s5").host("wildcard.io").status(404)]);
    // Only accepted routes count in attachedRoutes.
    for (listener, routes) in [("listener-1", 2), ("listener-2", 1), ("listener-3", 1)] {
        run.check(&[
            Check::Attached { gateway: gw, listener, routes },
            Check::Listener { gateway: gw, listener, type_: "Accepted", status: true },
            Check::Listener { gateway: gw, listener, type_: "ResolvedRefs", status: true },
        ]);
    }
    // A listener without a hostname.
    let all = (INFRA, "httproute-hostname-intersection-all");
    run.check(&attached((INFRA, "httproute-hostname-intersection-all"), all));
    run.rows(
        via("httproute-hostname-intersection-all"),
        &[
            get("/").host("first.com").to(INFRA, V2),
            get("/").host("sub.first.com").to(INFRA, V2),
            get("/").host("second.com").to(INFRA, V2),
            get("/").host("sub.second.com").to(INFRA, V2),
            get("/").host("third.com").namespace(INFRA).status(404),
            get("/").host("sub.third.com").namespace(INFRA).status(404),
        ],
    );
    run.finish();
}

const LISTENER_HOSTNAME_MATCHING: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: httproute-listener-hostname-matching, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: podnet
  listeners:
  - {name: listener-1, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Same}}, hostname: bar.com}
  - {name: listener-2, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Same}}, hostname: foo.bar.com}
  - {name: listener-3, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Same}}, hostname: '*.bar.com'}
  - {name: listener-4, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Same}}, hostname: '*.foo.com'}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-v1, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: httproute-listener-hostname-matching, namespace: gateway-conformance-infra, sectionName: listener-1}]
  rules:
  - backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-v2, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: httproute-listener-hostname-matching, namespace: gateway-conformance-infra, sectionName: listener-2}]
  rules:
  - backendRefs: [{name: infra-backend-v2, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-v3, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - {name: httproute-listener-hostname-matching, namespace: gateway-conformance-infra, sectionName: listener-3}
  - {name: httproute-listener-hostname-matching, namespace: gateway-conformance-infra, sectionName: listener-4}
  rules:
  - backendRefs: [{name: infra-backend-v3, port: 8080}]
";

/// Gateway API conformance HTTPRouteListenerHostnameMatching: listeners on one port with
/// different hostnames, each with a route of its own.
#[test]
fn http_route_listener_hostname_matching() {
    let mut run = Run::new("HTTPRouteListenerHostnameMatching", &[LISTENER_HOSTNAME_MATCHING]);
    let gw = (INFRA, "httproute-listener-hostname-matching");
    for route in ["backend-v1", "backend-v2", "backend-v3"] {
        run.check(&attached((INFRA, route), gw));
    }
    run.rows(
        via("httproute-listener-hostname-matching"),
        &[
            get("/").host("bar.com").to(INFRA, V1),
            get("/").host("foo.bar.com").to(INFRA, V2),
            get("/").host("baz.bar.com").to(INFRA, V3),
            get("/").host("boo.bar.com").to(INFRA, V3),
            get("/").host("multiple.prefixes.bar.com").to(INFRA, V3),
            get("/").host("multiple.prefixes.foo.com").to(INFRA, V3),
            get("/").host("foo.com").status(404),
            get("/").host("no.matching.host").status(404),
        ],
    );
    run.finish();
}

const MULTIPLE_GATEWAYS: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: multiple-gateways-shared-route, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}, {name: all-namespaces}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /shared}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: same-namespace-dedicated-route, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: all-namespaces-dedicated-route, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: all-namespaces}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
";

/// Gateway API conformance HTTPRouteMultipleGateways: a route shared by two Gateways serves on
/// both; each Gateway's dedicated route only on its own.
#[test]
fn http_route_multiple_gateways() {
    let mut run = Run::new("HTTPRouteMultipleGateways", &[MULTIPLE_GATEWAYS]);
    let all = (INFRA, "all-namespaces");
    run.check(&[
        accepted((INFRA, "multiple-gateways-shared-route"), SAME_NAMESPACE),
        accepted((INFRA, "same-namespace-dedicated-route"), SAME_NAMESPACE),
        accepted((INFRA, "multiple-gateways-shared-route"), all),
        accepted((INFRA, "all-namespaces-dedicated-route"), all),
    ]);
    run.rows(SAME, &[get("/shared").status(200).to(INFRA, V1), get("/").status(200).to(INFRA, V2)]);
    run.rows(via("all-namespaces"), &[get("/shared").status(200).to(INFRA, V1), get("/").status(200).to(INFRA, V3)]);
    run.finish();
}

const LISTENER_ISOLATION: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: http-listener-isolation, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: podnet
  listeners:
  - {name: empty-hostname, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
  - {name: wildcard-example-com, port: 80, protocol: HTTP, hostname: '*.example.com', allowedRoutes: {namespaces: {from: All}}}
  - {name: wildcard-foo-example-com, port: 80, protocol: HTTP, hostname: '*.foo.example.com', allowedRoutes: {namespaces: {from: All}}}
  - {name: abc-foo-example-com, port: 80, protocol: HTTP, hostname: abc.foo.example.com, allowedRoutes: {namespaces: {from: All}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: attaches-to-empty-hostname, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: http-listener-isolation, namespace: gateway-conformance-infra, sectionName: empty-hostname}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /empty-hostname}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: attaches-to-wildcard-example-com, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: http-listener-isolation, namespace: gateway-conformance-infra, sectionName: wildcard-example-com}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /wildcard-example-com}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: attaches-to-wildcard-foo-example-com, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: http-listener-isolation, namespace: gateway-conformance-infra, sectionName: wildcard-foo-example-com}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /wildcard-foo-example-com}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: attaches-to-abc-foo-example-com, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: http-listener-isolation, namespace: gateway-conformance-infra, sectionName: abc-foo-example-com}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /abc-foo-example-com}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
";

const LISTENER_ISOLATION_WITH_HOSTNAME_INTERSECTION: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: http-listener-isolation-with-hostname-intersection, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: podnet
  listeners:
  - {name: empty-hostname, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
  - {name: wildcard-example-com, port: 80, protocol: HTTP, hostname: '*.example.com', allowedRoutes: {namespaces: {from: All}}}
  - {name: wildcard-foo-example-com, port: 80, protocol: HTTP, hostname: '*.foo.example.com', allowedRoutes: {namespaces: {from: All}}}
  - {name: abc-foo-example-com, port: 80, protocol: HTTP, hostname: abc.foo.example.com, allowedRoutes: {namespaces: {from: All}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: attaches-to-empty-hostname-with-hostname-intersection, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: http-listener-isolation-with-hostname-intersection, namespace: gateway-conformance-infra, sectionName: empty-hostname}]
  hostnames: [bar.com, '*.example.com', '*.foo.example.com', abc.foo.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /empty-hostname}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: attaches-to-wildcard-example-com-with-hostname-intersection, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: http-listener-isolation-with-hostname-intersection, namespace: gateway-conformance-infra, sectionName: wildcard-example-com}]
  hostnames: [bar.com, '*.example.com', '*.foo.example.com', abc.foo.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /wildcard-example-com}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: attaches-to-wildcard-foo-example-com-with-hostname-intersection, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: http-listener-isolation-with-hostname-intersection, namespace: gateway-conformance-infra, sectionName: wildcard-foo-example-com}]
  hostnames: [bar.com, '*.example.com', '*.foo.example.com', abc.foo.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /wildcard-foo-example-com}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: attaches-to-abc-foo-example-com-with-hostname-intersection, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: http-listener-isolation-with-hostname-intersection, namespace: gateway-conformance-infra, sectionName: abc-foo-example-com}]
  hostnames: [bar.com, '*.example.com', '*.foo.example.com', abc.foo.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /abc-foo-example-com}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
";

/// Gateway API conformance GatewayHTTPListenerIsolation: a request is matched only against the
/// routes of the most specific listener for its host, on both Gateways (hostnames only on the
/// listeners, and on listeners and routes).
#[test]
fn gateway_http_listener_isolation() {
    let mut run = Run::new("GatewayHTTPListenerIsolation", &[LISTENER_ISOLATION, LISTENER_ISOLATION_WITH_HOSTNAME_INTERSECTION]);
    let cases = [
        get("/empty-hostname").host("bar.com").to(INFRA, V1),
        get("/wildcard-example-com").host("bar.com").status(404),
        get("/wildcard-foo-example-com").host("bar.com").status(404),
        get("/abc-foo-example-com").host("bar.com").status(404),
        get("/empty-hostname").host("bar.example.com").status(404),
        get("/wildcard-example-com").host("bar.example.com").to(INFRA, V1),
        get("/wildcard-foo-example-com").host("bar.example.com").status(404),
        get("/abc-foo-example-com").host("bar.example.com").status(404),
        get("/empty-hostname").host("bar.foo.example.com").status(404),
        get("/wildcard-example-com").host("bar.foo.example.com").status(404),
        get("/wildcard-foo-example-com").host("bar.foo.example.com").to(INFRA, V1),
        get("/abc-foo-example-com").host("bar.foo.example.com").status(404),
        get("/empty-hostname").host("abc.foo.example.com").status(404),
        get("/wildcard-example-com").host("abc.foo.example.com").status(404),
        get("/wildcard-foo-example-com").host("abc.foo.example.com").namespace(INFRA).status(404),
        get("/abc-foo-example-com").host("abc.foo.example.com").to(INFRA, V1),
    ];
    let gateways = [
        (
            "http-listener-isolation",
            ["attaches-to-empty-hostname", "attaches-to-wildcard-example-com", "attaches-to-wildcard-foo-example-com", "attaches-to-abc-foo-example-com"],
        ),
        (
            "http-listener-isolation-with-hostname-intersection",
            [
                "attaches-to-empty-hostname-with-hostname-intersection",
                "attaches-to-wildcard-example-com-with-hostname-intersection",
                "attaches-to-wildcard-foo-example-com-with-hostname-intersection",
                "attaches-to-abc-foo-example-com-with-hostname-intersection",
            ],
        ),
    ];
    for (gateway, routes) in gateways {
        for route in routes {
            run.check(&attached((INFRA, route), (INFRA, gateway)));
        }
        run.rows(via(gateway), &cases);
    }
    run.finish();
}

const ATTACHED_ROUTES: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gateway-with-one-attached-route, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: podnet
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes:
      kinds: [{kind: HTTPRoute}]
      namespaces: {from: Selector, selector: {matchLabels: {kubernetes.io/metadata.name: gateway-conformance-infra}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: http-route-1, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{kind: Gateway, name: gateway-with-one-attached-route, namespace: gateway-conformance-infra}]
  rules:
  - backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gateway-with-two-attached-routes, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: podnet
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    hostname: foo.example.com
    allowedRoutes:
      kinds: [{kind: HTTPRoute}]
      namespaces: {from: Selector, selector: {matchLabels: {kubernetes.io/metadata.name: gateway-conformance-infra}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: http-route-2, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{kind: Gateway, name: gateway-with-two-attached-routes, namespace: gateway-conformance-infra}]
  rules:
  - backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: http-route-3, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{kind: Gateway, name: gateway-with-two-attached-routes, namespace: gateway-conformance-infra}]
  rules:
  - backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: http-route-not-accepted, namespace: gateway-conformance-infra}
spec:
  hostnames: [not-accepted.test.com]
  parentRefs: [{kind: Gateway, name: gateway-with-two-attached-routes, namespace: gateway-conformance-infra}]
  rules:
  - backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: unresolved-gateway-with-one-attached-unresolved-route
  namespace: gateway-conformance-infra
  annotations: {gateway-api/skip-this-for-readiness: 'true'}
spec:
  gatewayClassName: podnet
  listeners:
  - name: tls
    port: 443
    protocol: HTTPS
    allowedRoutes:
      kinds: [{kind: HTTPRoute}]
      namespaces: {from: Selector, selector: {matchLabels: {kubernetes.io/metadata.name: gateway-conformance-infra}}}
    tls:
      certificateRefs: [{group: '', kind: Secret, name: does-not-exist}]
      mode: Terminate
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: http-route-4, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{kind: Gateway, name: unresolved-gateway-with-one-attached-unresolved-route, namespace: gateway-conformance-infra, sectionName: tls}]
  rules:
  - backendRefs: [{name: does-not-exist, port: 8080}]
";

/// Gateway API conformance GatewayWithAttachedRoutes: `attachedRoutes` counts the routes a
/// listener accepted (namespaces selected by the `kubernetes.io/metadata.name` label), also
/// when the Gateway's references do not resolve.
#[test]
fn gateway_with_attached_routes() {
    let mut run = Run::new("GatewayWithAttachedRoutes", &[ATTACHED_ROUTES]);
    let one = (INFRA, "gateway-with-one-attached-route");
    let two = (INFRA, "gateway-with-two-attached-routes");
    let unresolved = (INFRA, "unresolved-gateway-with-one-attached-unresolved-route");
    run.check(&[
        Check::Attached { gateway: one, listener: "http", routes: 1 },
        Check::Listener { gateway: one, listener: "http", type_: "Accepted", status: true },
        Check::Listener { gateway: one, listener: "http", type_: "ResolvedRefs", status: true },
        Check::Attached { gateway: two, listener: "http", routes: 2 },
        Check::Listener { gateway: two, listener: "http", type_: "Accepted", status: true },
        Check::Listener { gateway: two, listener: "http", type_: "ResolvedRefs", status: true },
        refused((INFRA, "http-route-not-accepted"), two, "Accepted", "NoMatchingListenerHostname"),
        Check::Attached { gateway: unresolved, listener: "tls", routes: 1 },
        Check::Listener { gateway: unresolved, listener: "tls", type_: "Programmed", status: false },
        Check::Listener { gateway: unresolved, listener: "tls", type_: "ResolvedRefs", status: false },
        refused((INFRA, "http-route-4"), unresolved, "ResolvedRefs", ""),
    ]);
    run.finish();
}

const HTTPS_LISTENER: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: httproute-https-test, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace-with-https-listener}]
  hostnames: [example.org]
  rules:
  - backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: httproute-https-test-no-hostname, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace-with-https-listener, sectionName: https-with-hostname}]
  rules:
  - backendRefs: [{name: infra-backend-v2, port: 8080}]
";

/// Gateway API conformance HTTPRouteHTTPSListener: routes on a Gateway's HTTPS listeners (the
/// request's server name is its Host).
#[test]
fn http_route_https_listener() {
    let mut run = Run::new("HTTPRouteHTTPSListener", &[HTTPS_LISTENER]);
    let gw = (INFRA, "same-namespace-with-https-listener");
    run.check(&attached((INFRA, "httproute-https-test"), gw));
    run.check(&attached((INFRA, "httproute-https-test-no-hostname"), gw));
    run.rows(
        via_tls("same-namespace-with-https-listener"),
        &[
            get("/").host("example.org").status(200).to(INFRA, V1),
            get("/").host("unknown-example.org").status(404).namespace(INFRA),
            get("/").host("second-example.org").status(200).to(INFRA, V2),
        ],
    );
    run.finish();
}

// ---------------------------------------------------------------------------------------------
// Filters.
// ---------------------------------------------------------------------------------------------

const REQUEST_HEADER_MODIFIER: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: request-header-modifier, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /set}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /add}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        add: [{name: X-Header-Add, value: add-appends-values}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /remove}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        remove: [X-Header-Remove]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /multiple}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set-1, value: header-set-1}, {name: X-Header-Set-2, value: header-set-2}]
        add: [{name: X-Header-Add-1, value: header-add-1}, {name: X-Header-Add-2, value: header-add-2}, {name: X-Header-Add-3, value: header-add-3}]
        remove: [X-Header-Remove-1, X-Header-Remove-2]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /case-insensitivity}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set, value: header-set}]
        add: [{name: X-Header-Add, value: header-add}]
        remove: [X-Header-Remove]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
";

/// Gateway API conformance HTTPRouteRequestHeaderModifier
#[test]
fn http_route_request_header_modifier() {
    let mut run = Run::new("HTTPRouteRequestHeaderModifier", &[REQUEST_HEADER_MODIFIER]);
    run.check(&attached((INFRA, "request-header-modifier"), SAME_NAMESPACE));
    run.rows(
        SAME,
        &[
            get("/set")
                .header("Some-Other-Header", "val")
                .arrives("/set")
                .arrives_header("Some-Other-Header", "val")
                .arrives_header("X-Header-Set", "set-overwrites-values")
                .to(INFRA, V1),
            get("/set")
                .header("Some-Other-Header", "val")
                .header("X-Header-Set", "some-other-value")
                .arrives("/set")
                .arrives_header("Some-Other-Header", "val")
                .arrives_header("X-Header-Set", "set-overwrites-values")
                .to(INFRA, V1),
            get("/add")
                .header("Some-Other-Header", "val")
                .arrives("/add")
                .arrives_header("Some-Other-Header", "val")
                .arrives_header("X-Header-Add", "add-appends-values")
                .to(INFRA, V1),
            get("/add")
                .header("Some-Other-Header", "val")
                .header("X-Header-Add", "some-other-value")
                .arrives("/add")
                .arrives_header("Some-Other-Header", "val")
                .arrives_header("X-Header-Add", "some-other-value,add-appends-values")
                .to(INFRA, V1),
            get("/remove").header("X-Header-Remove", "val").arrives("/remove").arrives_without("X-Header-Remove").to(INFRA, V1),
            get("/multiple")
                .header("X-Header-Set-2", "set-val-2")
                .header("X-Header-Add-2", "add-val-2")
                .header("X-Header-Remove-2", "remove-val-2")
                .header("Another-Header", "another-header-val")
                .arrives("/multiple")
                .arrives_header("X-Header-Set-1", "header-set-1")
                .arrives_header("X-Header-Set-2", "header-set-2")
                .arrives_header("X-Header-Add-1", "header-add-1")
                .arrives_header("X-Header-Add-2", "add-val-2,header-add-2")
                .arrives_header("X-Header-Add-3", "header-add-3")
                .arrives_header("Another-Header", "another-header-val")
                .arrives_without("X-Header-Remove-1")
                .arrives_without("X-Header-Remove-2")
                .to(INFRA, V1),
            get("/case-insensitivity")
                .header("x-header-set", "original-val-set")
                .header("x-header-add", "original-val-add")
                .header("x-header-remove", "original-val-remove")
                .header("Another-Header", "another-header-val")
                .arrives("/case-insensitivity")
                .arrives_header("X-Header-Set", "header-set")
                .arrives_header("X-Header-Add", "original-val-add,header-add")
                .arrives_header("Another-Header", "another-header-val")
                .arrives_without("x-header-remove")
                .arrives_without("X-Header-Remove")
                .to(INFRA, V1),
        ],
    );
    run.finish();
}

const RESPONSE_HEADER_MODIFIER: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: response-header-modifier, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /set}}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /add}}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        add: [{name: X-Header-Add, value: add-appends-values}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /remove}}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        remove: [X-Header-Remove]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /multiple}}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: X-Header-Set-1, value: header-set-1}, {name: X-Header-Set-2, value: header-set-2}]
        add: [{name: X-Header-Add-1, value: header-add-1}, {name: X-Header-Add-2, value: header-add-2}, {name: X-Header-Add-3, value: header-add-3}]
        remove: [X-Header-Remove-1, X-Header-Remove-2]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /case-insensitivity}}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: X-Header-Set, value: header-set}]
        add:
        - {name: X-Header-Add, value: header-add}
        - {name: x-lowercase-add, value: lowercase-add}
        - {name: x-Mixedcase-ADD-1, value: mixedcase-add-1}
        - {name: X-mixeDcase-add-2, value: mixedcase-add-2}
        - {name: X-UPPERCASE-ADD, value: uppercase-add}
        remove: [X-Header-Remove]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /response-and-request-header-modifiers}}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: X-Header-Set-1, value: header-set-1}, {name: X-Header-Set-2, value: header-set-2}]
        add: [{name: X-Header-Add-1, value: header-add-1}, {name: X-Header-Add-2, value: header-add-2}]
        remove: [X-Header-Remove-1, X-Header-Remove-2]
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
        add: [{name: X-Header-Add, value: header-val-1}, {name: X-Header-Add-Append, value: header-val-2}]
        remove: [X-Header-Remove]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
";

/// Gateway API conformance HTTPRouteResponseHeaderModifier
#[test]
fn http_route_response_header_modifier() {
    let mut run = Run::new("HTTPRouteResponseHeaderModifier", &[RESPONSE_HEADER_MODIFIER]);
    run.check(&attached((INFRA, "response-header-modifier"), SAME_NAMESPACE));
    run.rows(
        SAME,
        &[
            get("/set")
                .backend_sets("Some-Other-Header", "val")
                .responds_header("Some-Other-Header", "val")
                .responds_header("X-Header-Set", "set-overwrites-values")
                .to(INFRA, V1),
            get("/set")
                .backend_sets("Some-Other-Header", "val")
                .backend_sets("X-Header-Set", "some-other-value")
                .responds_header("Some-Other-Header", "val")
                .responds_header("X-Header-Set", "set-overwrites-values")
                .to(INFRA, V1),
            get("/add")
                .backend_sets("Some-Other-Header", "val")
                .responds_header("Some-Other-Header", "val")
                .responds_header("X-Header-Add", "add-appends-values")
                .to(INFRA, V1),
            get("/add")
                .backend_sets("Some-Other-Header", "val")
                .backend_sets("X-Header-Add", "some-other-value")
                .responds_header("Some-Other-Header", "val")
                .responds_header("X-Header-Add", "some-other-value,add-appends-values")
                .to(INFRA, V1),
            get("/remove").backend_sets("X-Header-Remove", "val").responds_without("X-Header-Remove").to(INFRA, V1),
            get("/multiple")
                .backend_sets("X-Header-Set-2", "set-val-2")
                .backend_sets("X-Header-Add-2", "add-val-2")
                .backend_sets("X-Header-Remove-2", "remove-val-2")
                .backend_sets("Another-Header", "another-header-val")
                .backend_sets("X-Header-Remove-1", "val")
                .responds_header("X-Header-Set-1", "header-set-1")
                .responds_header("X-Header-Set-2", "header-set-2")
                .responds_header("X-Header-Add-1", "header-add-1")
                .responds_header("X-Header-Add-2", "add-val-2,header-add-2")
                .responds_header("X-Header-Add-3", "header-add-3")
                .responds_header("Another-Header", "another-header-val")
                .responds_without("X-Header-Remove-1")
                .responds_without("X-Header-Remove-2")
                .to(INFRA, V1),
            get("/case-insensitivity")
                .backend_sets("x-header-set", "original-val-set")
                .backend_sets("x-header-add", "original-val-add")
                .backend_sets("x-header-remove", "original-val-remove")
                .backend_sets("Another-Header", "another-header-val")
                .responds_header("X-Header-Set", "header-set")
                .responds_header("X-Header-Add", "original-val-add,header-add")
                .responds_header("X-Lowercase-Add", "lowercase-add")
                .responds_header("X-Mixedcase-Add-1", "mixedcase-add-1")
                .responds_header("X-Mixedcase-Add-2", "mixedcase-add-2")
                .responds_header("X-Uppercase-Add", "uppercase-add")
                .responds_header("Another-Header", "another-header-val")
                .responds_without("x-header-remove")
                .responds_without("X-Header-Remove")
                .to(INFRA, V1),
            get("/response-and-request-header-modifiers")
                .header("X-Header-Remove", "remove-val")
                .header("X-Header-Add-Append", "append-val-1")
                .header("X-Header-Echo", "echo")
                .backend_sets("X-Header-Set-2", "set-val-2")
                .backend_sets("X-Header-Add-2", "add-val-2")
                .backend_sets("X-Header-Remove-2", "remove-val-2")
                .backend_sets("Another-Header", "another-header-val")
                .backend_sets("X-Header-Remove-1", "remove-val-1")
                .backend_sets("X-Header-Echo", "echo")
                .arrives("/response-and-request-header-modifiers")
                .arrives_header("X-Header-Add", "header-val-1")
                .arrives_header("X-Header-Set", "set-overwrites-values")
                .arrives_header("X-Header-Add-Append", "append-val-1,header-val-2")
                .arrives_header("X-Header-Echo", "echo")
                .arrives_without("X-Header-Remove")
                .responds_header("X-Header-Set-1", "header-set-1")
                .responds_header("X-Header-Set-2", "header-set-2")
                .responds_header("X-Header-Add-1", "header-add-1")
                .responds_header("X-Header-Add-2", "add-val-2,header-add-2")
                .responds_header("Another-Header", "another-header-val")
                .responds_header("X-Header-Echo", "echo")
                .responds_without("X-Header-Remove-1")
                .responds_without("X-Header-Remove-2")
                .to(INFRA, V1),
        ],
    );
    run.finish();
}

const REDIRECT_HOST_AND_STATUS: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: redirect-host-and-status, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /hostname-redirect}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org}}]
  - matches: [{path: {type: PathPrefix, value: /host-and-status}}]
    filters: [{type: RequestRedirect, requestRedirect: {statusCode: 301, hostname: example.org}}]
";

/// Gateway API conformance HTTPRouteRedirectHostAndStatus
#[test]
fn http_route_redirect_host_and_status() {
    let mut run = Run::new("HTTPRouteRedirectHostAndStatus", &[REDIRECT_HOST_AND_STATUS]);
    run.check(&attached((INFRA, "redirect-host-and-status"), SAME_NAMESPACE));
    run.rows(
        SAME,
        &[
            get("/hostname-redirect").status(302).redirects(Redirect { host: "example.org", ..Redirect::default() }).namespace(INFRA),
            get("/host-and-status").status(301).redirects(Redirect { host: "example.org", ..Redirect::default() }).namespace(INFRA),
        ],
    );
    run.finish();
}

const REDIRECT_PATH: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: redirect-path, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /original-prefix}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}}]
  - matches: [{path: {type: PathPrefix, value: /full}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /full-path-replacement}}}]
  - matches: [{path: {type: PathPrefix, value: /path-and-host}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}}]
  - matches: [{path: {type: PathPrefix, value: /path-and-status}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}, statusCode: 301}}]
  - matches: [{path: {type: PathPrefix, value: /full-path-and-host}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, path: {type: ReplaceFullPath, replaceFullPath: /replacement-full}}}]
  - matches: [{path: {type: PathPrefix, value: /full-path-and-status}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /replacement-full}, statusCode: 301}}]
";

/// Gateway API conformance HTTPRouteRedirectPath
#[test]
fn http_route_redirect_path() {
    let mut run = Run::new("HTTPRouteRedirectPath", &[REDIRECT_PATH]);
    run.check(&attached((INFRA, "redirect-path"), SAME_NAMESPACE));
    let r = Redirect::default();
    run.rows(
        SAME,
        &[
            get("/original-prefix/lemon").status(302).redirects(Redirect { path: "/replacement-prefix/lemon", ..r }).namespace(INFRA),
            get("/full/path/original").status(302).redirects(Redirect { path: "/full-path-replacement", ..r }).namespace(INFRA),
            get("/path-and-host").status(302).redirects(Redirect { host: "example.org", path: "/replacement-prefix", ..r }).namespace(INFRA),
            get("/path-and-status").status(301).redirects(Redirect { path: "/replacement-prefix", ..r }).namespace(INFRA),
            get("/full-path-and-host").status(302).redirects(Redirect { host: "example.org", path: "/replacement-full", ..r }).namespace(INFRA),
            get("/full-path-and-status").status(301).redirects(Redirect { path: "/replacement-full", ..r }).namespace(INFRA),
        ],
    );
    run.finish();
}

const REDIRECT_PORT: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: redirect-port, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /port}}]
    filters: [{type: RequestRedirect, requestRedirect: {port: 8083}}]
  - matches: [{path: {type: PathPrefix, value: /port-and-host}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, port: 8083}}]
  - matches: [{path: {type: PathPrefix, value: /port-and-status}}]
    filters: [{type: RequestRedirect, requestRedirect: {port: 8083, statusCode: 301}}]
  - matches: [{path: {type: PathPrefix, value: /port-and-host-and-status}}]
    filters: [{type: RequestRedirect, requestRedirect: {port: 8083, hostname: example.org, statusCode: 302}}]
";

/// Gateway API conformance HTTPRouteRedirectPort
#[test]
fn http_route_redirect_port() {
    let mut run = Run::new("HTTPRouteRedirectPort", &[REDIRECT_PORT]);
    run.check(&attached((INFRA, "redirect-port"), SAME_NAMESPACE));
    let r = Redirect::default();
    run.rows(
        SAME,
        &[
            get("/port").status(302).redirects(Redirect { port: "8083", ..r }).namespace(INFRA),
            get("/port-and-host").status(302).redirects(Redirect { host: "example.org", port: "8083", ..r }).namespace(INFRA),
            get("/port-and-status").status(301).redirects(Redirect { port: "8083", ..r }).namespace(INFRA),
            get("/port-and-host-and-status").status(302).redirects(Redirect { port: "8083", host: "example.org", ..r }).namespace(INFRA),
        ],
    );
    run.finish();
}

const REDIRECT_SCHEME: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: redirect-scheme, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /scheme}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-and-host}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, scheme: https}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-and-status}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-and-host-and-status}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 302, hostname: example.org}}]
";

/// Gateway API conformance HTTPRouteRedirectScheme
#[test]
fn http_route_redirect_scheme() {
    let mut run = Run::new("HTTPRouteRedirectScheme", &[REDIRECT_SCHEME]);
    run.check(&attached((INFRA, "redirect-scheme"), SAME_NAMESPACE));
    let r = Redirect::default();
    run.rows(
        SAME,
        &[
            get("/scheme").status(302).redirects(Redirect { scheme: "https", ..r }).namespace(INFRA),
            get("/scheme-and-host").status(302).redirects(Redirect { host: "example.org", scheme: "https", ..r }).namespace(INFRA),
            get("/scheme-and-status").status(301).redirects(Redirect { scheme: "https", ..r }).namespace(INFRA),
            get("/scheme-and-host-and-status").status(302).redirects(Redirect { scheme: "https", host: "example.org", ..r }).namespace(INFRA),
        ],
    );
    run.finish();
}

const REDIRECT_PORT_AND_SCHEME: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: same-namespace-with-http-listener-on-8080, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: podnet
  listeners:
  - {name: http, port: 8080, protocol: HTTP, allowedRoutes: {namespaces: {from: Same}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: http-route-for-listener-on-port-80, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /scheme-nil-and-port-nil}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-nil-and-port-80}}]
    filters: [{type: RequestRedirect, requestRedirect: {port: 80, hostname: example.org}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-nil-and-port-8080}}]
    filters: [{type: RequestRedirect, requestRedirect: {port: 8080, hostname: example.org}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-https-and-port-nil}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, hostname: example.org}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-https-and-port-443}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, port: 443, hostname: example.org}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-https-and-port-8443}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, port: 8443, hostname: example.org}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: http-route-for-listener-on-port-8080, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace-with-http-listener-on-8080}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /scheme-nil-and-port-nil}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-nil-and-port-80}}]
    filters: [{type: RequestRedirect, requestRedirect: {port: 80, hostname: example.org}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-https-and-port-nil}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, hostname: example.org}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: http-route-for-listener-on-port-443, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace-with-https-listener}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /scheme-nil-and-port-nil}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-nil-and-port-443}}]
    filters: [{type: RequestRedirect, requestRedirect: {port: 443, hostname: example.org}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-nil-and-port-8443}}]
    filters: [{type: RequestRedirect, requestRedirect: {port: 8443, hostname: example.org}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-http-and-port-nil}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: http, hostname: example.org}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-http-and-port-80}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: http, port: 80, hostname: example.org}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-http-and-port-8080}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: http, port: 8080, hostname: example.org}}]
";

/// Gateway API conformance HTTPRouteRedirectPortAndScheme: the redirect's port follows its
/// scheme (the well-known one left out) or the listener's. The rows of the port 8080 Gateway
/// are left out (podnet claims listeners on 80 and 443 only); its manifests stay, as upstream
/// applies them.
#[test]
fn http_route_redirect_port_and_scheme() {
    let mut run = Run::new("HTTPRouteRedirectPortAndScheme", &[REDIRECT_PORT_AND_SCHEME]);
    run.check(&attached((INFRA, "http-route-for-listener-on-port-80"), SAME_NAMESPACE));
    run.check(&attached((INFRA, "http-route-for-listener-on-port-443"), (INFRA, "same-namespace-with-https-listener")));
    let r = Redirect { host: "example.org", ..Redirect::default() };
    let http = Redirect { scheme: "http", ..r };
    let https = Redirect { scheme: "https", ..r };
    run.rows(
        SAME,
        &[
            get("/scheme-nil-and-port-nil").status(302).redirects(http).namespace(INFRA),
            get("/scheme-nil-and-port-80").status(302).redirects(http).namespace(INFRA),
            get("/scheme-nil-and-port-8080").status(302).redirects(Redirect { port: "8080", ..http }).namespace(INFRA),
            get("/scheme-https-and-port-nil").status(302).redirects(https).namespace(INFRA),
            get("/scheme-https-and-port-443").status(302).redirects(https).namespace(INFRA),
            get("/scheme-https-and-port-8443").status(302).redirects(Redirect { port: "8443", ..https }).namespace(INFRA),
        ],
    );
    run.rows(
        via_tls("same-namespace-with-https-listener"),
        &[
            get("/scheme-nil-and-port-nil").host("example.org").status(302).redirects(https).namespace(INFRA),
            get("/scheme-nil-and-port-443").host("example.org").status(302).redirects(https).namespace(INFRA),
            get("/scheme-nil-and-port-8443").host("example.org").status(302).redirects(Redirect { port: "8443", ..https }).namespace(INFRA),
            get("/scheme-http-and-port-nil").host("example.org").status(302).redirects(http).namespace(INFRA),
            get("/scheme-http-and-port-80").host("example.org").status(302).redirects(http).namespace(INFRA),
            get("/scheme-http-and-port-8080").host("example.org").status(302).redirects(Redirect { port: "8080", ..http }).namespace(INFRA),
        ],
    );
    run.finish();
}

const REWRITE_HOST: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: rewrite-host, namespace: gateway-conformance-infra}
spec:
  hostnames: [rewrite.example]
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /one}}]
    filters: [{type: URLRewrite, urlRewrite: {hostname: one.example.org}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - filters: [{type: URLRewrite, urlRewrite: {hostname: example.org}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /rewrite-host-and-modify-headers}}]
    filters:
    - {type: URLRewrite, urlRewrite: {hostname: test.example.org}}
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
        add: [{name: X-Header-Add, value: header-val-1}, {name: X-Header-Add-Append, value: header-val-2}]
        remove: [X-Header-Remove]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
";

/// Gateway API conformance HTTPRouteRewriteHost
#[test]
fn http_route_rewrite_host() {
    let mut run = Run::new("HTTPRouteRewriteHost", &[REWRITE_HOST]);
    run.check(&attached((INFRA, "rewrite-host"), SAME_NAMESPACE));
    run.rows(
        SAME,
        &[
            get("/one").host("rewrite.example").arrives("/one").arrives_host("one.example.org").to(INFRA, V1),
            get("/two").host("rewrite.example").arrives("/two").arrives_host("example.org").to(INFRA, V2),
            get("/rewrite-host-and-modify-headers")
                .host("rewrite.example")
                .header("X-Header-Remove", "remove-val")
                .header("X-Header-Add-Append", "append-val-1")
                .arrives("/rewrite-host-and-modify-headers")
                .arrives_host("test.example.org")
                .arrives_header("X-Header-Add", "header-val-1")
                .arrives_header("X-Header-Add-Append", "append-val-1,header-val-2")
                .arrives_header("X-Header-Set", "set-overwrites-values")
                .arrives_without("X-Header-Remove")
                .to(INFRA, V2),
        ],
    );
    run.finish();
}

const REWRITE_PATH: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: rewrite-path, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /prefix/one}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /one}}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /strip-prefix}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /full/one}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /one}}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /full/rewrite-path-and-modify-headers}}]
    filters:
    - {type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /test}}}
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
        add: [{name: X-Header-Add, value: header-val-1}, {name: X-Header-Add-Append, value: header-val-2}]
        remove: [X-Header-Remove]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /prefix/rewrite-path-and-modify-headers}}]
    filters:
    - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /prefix}}}
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
        add: [{name: X-Header-Add, value: header-val-1}, {name: X-Header-Add-Append, value: header-val-2}]
        remove: [X-Header-Remove]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
";

/// Gateway API conformance HTTPRouteRewritePath
#[test]
fn http_route_rewrite_path() {
    let mut run = Run::new("HTTPRouteRewritePath", &[REWRITE_PATH]);
    run.check(&attached((INFRA, "rewrite-path"), SAME_NAMESPACE));
    let modified = |c: Case| {
        c.header("X-Header-Remove", "remove-val")
            .header("X-Header-Add-Append", "append-val-1")
            .header("X-Header-Set", "set-val")
            .arrives_header("X-Header-Add", "header-val-1")
            .arrives_header("X-Header-Add-Append", "append-val-1,header-val-2")
            .arrives_header("X-Header-Set", "set-overwrites-values")
            .arrives_without("X-Header-Remove")
            .to(INFRA, V1)
    };
    run.rows(
        SAME,
        &[
            get("/prefix/one/two").arrives("/one/two").to(INFRA, V1),
            get("/strip-prefix/three").arrives("/three").to(INFRA, V1),
            get("/strip-prefix").arrives("/").to(INFRA, V1),
            get("/full/one/two").arrives("/one").to(INFRA, V1),
            modified(get("/full/rewrite-path-and-modify-headers/test").arrives("/test")),
            modified(get("/prefix/rewrite-path-and-modify-headers/one").arrives("/prefix/one")),
        ],
    );
    run.finish();
}

const REQUEST_MIRROR: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: request-mirror, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /mirror}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: infra-backend-v2, namespace: gateway-conformance-infra, port: 8080}}
    backendRefs: [{name: infra-backend-v1, port: 8080, namespace: gateway-conformance-infra}]
  - matches: [{path: {type: PathPrefix, value: /mirror-and-modify-headers}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
        add: [{name: X-Header-Add, value: header-val-1}, {name: X-Header-Add-Append, value: header-val-2}]
        remove: [X-Header-Remove]
    - type: RequestMirror
      requestMirror: {backendRef: {name: infra-backend-v2, namespace: gateway-conformance-infra, port: 8080}}
    backendRefs: [{name: infra-backend-v1, port: 8080, namespace: gateway-conformance-infra}]
";

/// The query parameter the suite adds to mirrored requests, to find them in the mirror's log.
const REQUEST_ID: &str = "gateway-api-conformance-request-id=5f0c6b1e-2d4a-4c8e-9a57-3b1d2e4f6a70";

/// Gateway API conformance HTTPRouteRequestMirror
#[test]
fn http_route_request_mirror() {
    let mut run = Run::new("HTTPRouteRequestMirror", &[REQUEST_MIRROR]);
    run.check(&[accepted((INFRA, "request-mirror"), SAME_NAMESPACE)]);
    let mirror = format!("/mirror?{REQUEST_ID}");
    let modify = format!("/mirror-and-modify-headers?{REQUEST_ID}");
    run.rows(
        SAME,
        &[
            get(&mirror).arrives(&mirror).to(INFRA, V1).mirrored_to(INFRA, V2),
            get(&modify)
                .header("X-Header-Remove", "remove-val")
                .header("X-Header-Add-Append", "append-val-1")
                .arrives(&modify)
                .arrives_header("X-Header-Add", "header-val-1")
                .arrives_header("X-Header-Add-Append", "append-val-1,header-val-2")
                .arrives_header("X-Header-Set", "set-overwrites-values")
                .arrives_without("X-Header-Remove")
                .to(INFRA, V1)
                .mirrored_to(INFRA, V2),
        ],
    );
    run.finish();
}

const REQUEST_MULTIPLE_MIRRORS: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: request-multiple-mirrors, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /multi-mirror}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: infra-backend-v2, namespace: gateway-conformance-infra, port: 8080}}
    - type: RequestMirror
      requestMirror: {backendRef: {name: infra-backend-v3, namespace: gateway-conformance-infra, port: 8080}}
    backendRefs: [{name: infra-backend-v1, port: 8080, namespace: gateway-conformance-infra}]
  - matches: [{path: {type: PathPrefix, value: /multi-mirror-and-modify-request-headers}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
        add: [{name: X-Header-Add, value: header-val-1}, {name: X-Header-Add-Append, value: header-val-2}]
        remove: [X-Header-Remove]
    - type: RequestMirror
      requestMirror: {backendRef: {name: infra-backend-v2, namespace: gateway-conformance-infra, port: 8080}}
    - type: RequestMirror
      requestMirror: {backendRef: {name: infra-backend-v3, namespace: gateway-conformance-infra, port: 8080}}
    backendRefs: [{name: infra-backend-v1, port: 8080, namespace: gateway-conformance-infra}]
";

/// Gateway API conformance HTTPRouteRequestMultipleMirrors
#[test]
fn http_route_request_multiple_mirrors() {
    let mut run = Run::new("HTTPRouteRequestMultipleMirrors", &[REQUEST_MULTIPLE_MIRRORS]);
    run.check(&[accepted((INFRA, "request-multiple-mirrors"), SAME_NAMESPACE)]);
    let mirror = format!("/multi-mirror?{REQUEST_ID}");
    let modify = format!("/multi-mirror-and-modify-request-headers?{REQUEST_ID}");
    run.rows(
        SAME,
        &[
            get(&mirror).arrives(&mirror).to(INFRA, V1).mirrored_to(INFRA, V2).mirrored_to(INFRA, V3),
            get(&modify)
                .header("X-Header-Remove", "remove-val")
                .header("X-Header-Add-Append", "append-val-1")
                .arrives(&modify)
                .arrives_header("X-Header-Add", "header-val-1")
                .arrives_header("X-Header-Add-Append", "append-val-1,header-val-2")
                .arrives_header("X-Header-Set", "set-overwrites-values")
                .arrives_without("X-Header-Remove")
                .to(INFRA, V1)
                .mirrored_to(INFRA, V2)
                .mirrored_to(INFRA, V3),
        ],
    );
    run.finish();
}

// ---------------------------------------------------------------------------------------------
// Backends: weights, timeouts, references.
// ---------------------------------------------------------------------------------------------

const WEIGHT: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: weighted-backends, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - backendRefs:
    - {name: infra-backend-v1, port: 8080, weight: 70}
    - {name: infra-backend-v2, port: 8080, weight: 30}
    - {name: infra-backend-v3, port: 8080, weight: 0}
";

/// Gateway API conformance HTTPRouteWeight: 500 requests split 70/30/0 within 5 points.
#[test]
fn http_route_weight() {
    let mut run = Run::new("HTTPRouteWeight", &[WEIGHT]);
    run.check(&attached((INFRA, "weighted-backends"), SAME_NAMESPACE));
    run.rows(SAME, &[get("/").status(200).namespace(INFRA)]);
    run.weights(SAME, "/", INFRA, &[(V1, 0.7), (V2, 0.3), (V3, 0.0)]);
    run.finish();
}

const TIMEOUT_REQUEST: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: request-timeout, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /request-timeout}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
    timeouts: {request: 500ms}
  - matches: [{path: {type: PathPrefix, value: /disable-request-timeout}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
    timeouts: {request: '0s'}
";

/// Gateway API conformance HTTPRouteTimeoutRequest
#[test]
fn http_route_timeout_request() {
    let mut run = Run::new("HTTPRouteTimeoutRequest", &[TIMEOUT_REQUEST]);
    run.check(&attached((INFRA, "request-timeout"), SAME_NAMESPACE));
    run.rows(
        SAME,
        &[
            get("/request-timeout").status(200).namespace(INFRA),
            get("/request-timeout?delay=1s").status(504).namespace(INFRA),
            get("/disable-request-timeout?delay=1s").status(200).namespace(INFRA),
        ],
    );
    run.finish();
}

const TIMEOUT_BACKEND_REQUEST: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-request-timeout, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /backend-timeout}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
    timeouts: {backendRequest: 500ms}
  - matches: [{path: {type: PathPrefix, value: /disable-backend-timeout}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
    timeouts: {backendRequest: '0s'}
";

/// Gateway API conformance HTTPRouteTimeoutBackendRequest
#[test]
fn http_route_timeout_backend_request() {
    let mut run = Run::new("HTTPRouteTimeoutBackendRequest", &[TIMEOUT_BACKEND_REQUEST]);
    run.check(&attached((INFRA, "backend-request-timeout"), SAME_NAMESPACE));
    run.rows(
        SAME,
        &[
            get("/backend-timeout").status(200).namespace(INFRA),
            get("/backend-timeout?delay=1s").status(504).namespace(INFRA),
            get("/disable-backend-timeout?delay=1s").status(200).namespace(INFRA),
        ],
    );
    run.finish();
}

const REFERENCE_GRANT: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: reference-grant, namespace: gateway-conformance-web-backend}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: gateway-conformance-infra}]
  to: [{group: '', kind: Service, name: web-backend}]
";

const REFERENCE_GRANT_ROUTE: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reference-grant, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - backendRefs: [{name: web-backend, namespace: gateway-conformance-web-backend, port: 8080}]
";

/// Gateway API conformance HTTPRouteReferenceGrant: a ReferenceGrant lets a route use a
/// Service of another namespace; once it is deleted, 500.
#[test]
fn http_route_reference_grant() {
    let mut run = Run::new("HTTPRouteReferenceGrant", &[REFERENCE_GRANT, REFERENCE_GRANT_ROUTE]);
    run.check(&attached((INFRA, "reference-grant"), SAME_NAMESPACE));
    run.rows(SAME, &[get("/").status(200).to(WEB, "web-backend")]);
    // The ReferenceGrant deleted.
    run.swap(&[REFERENCE_GRANT_ROUTE]);
    run.rows(SAME, &[get("/").status(500)]);
    run.finish();
}

const INVALID_REFERENCE_GRANT: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: reference-grant-wrong-namespace, namespace: gateway-conformance-infra}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: gateway-conformance-infra}]
  to: [{group: '', kind: Service, name: web-backend}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: reference-grant-wrong-from-group, namespace: gateway-conformance-web-backend}
spec:
  from: [{group: not-the-group-youre-looking-for, kind: HTTPRoute, namespace: gateway-conformance-infra}]
  to: [{group: '', kind: Service, name: web-backend}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: reference-grant-wrong-from-kind, namespace: gateway-conformance-web-backend}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: gateway-conformance-infra}]
  to: [{group: '', kind: Service, name: web-backend}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: reference-grant-wrong-from-namespace, namespace: gateway-conformance-web-backend}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: not-the-namespace-youre-looking-for}]
  to: [{group: '', kind: Service, name: web-backend}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: reference-grant-wrong-to-group, namespace: gateway-conformance-web-backend}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: gateway-conformance-infra}]
  to: [{group: not-the-group-youre-looking-for, kind: Service, name: web-backend}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: reference-grant-wrong-to-kind, namespace: gateway-conformance-web-backend}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: gateway-conformance-infra}]
  to: [{group: '', kind: Secret, name: web-backend}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: reference-grant-wrong-to-name, namespace: gateway-conformance-web-backend}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: gateway-conformance-infra}]
  to: [{group: '', kind: Secret, name: not-the-service-youre-looking-for}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reference-grant, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - backendRefs: [{name: web-backend, namespace: gateway-conformance-web-backend, port: 8080}]
";

/// Gateway API conformance HTTPRouteInvalidReferenceGrant: ReferenceGrants that miss by
/// namespace, group, kind or name permit nothing.
#[test]
fn http_route_invalid_reference_grant() {
    let mut run = Run::new("HTTPRouteInvalidReferenceGrant", &[INVALID_REFERENCE_GRANT]);
    let route = (INFRA, "reference-grant");
    run.check(&[accepted(route, SAME_NAMESPACE), refused(route, SAME_NAMESPACE, "ResolvedRefs", "RefNotPermitted")]);
    run.rows(SAME, &[get("/").status(500).to(WEB, "web-backend")]);
    run.finish();
}

const INVALID_CROSS_NAMESPACE_BACKEND_REF: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: invalid-cross-namespace-backend-ref, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - backendRefs: [{name: web-backend, namespace: gateway-conformance-web-backend, port: 8080}]
";

/// Gateway API conformance HTTPRouteInvalidCrossNamespaceBackendRef
#[test]
fn http_route_invalid_cross_namespace_backend_ref() {
    let mut run = Run::new("HTTPRouteInvalidCrossNamespaceBackendRef", &[INVALID_CROSS_NAMESPACE_BACKEND_REF]);
    let route = (INFRA, "invalid-cross-namespace-backend-ref");
    run.check(&[accepted(route, SAME_NAMESPACE), refused(route, SAME_NAMESPACE, "ResolvedRefs", "RefNotPermitted")]);
    run.rows(SAME, &[get("/").status(500)]);
    run.finish();
}

const INVALID_CROSS_NAMESPACE_PARENT_REF: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: invalid-cross-namespace-parent-ref, namespace: gateway-conformance-web-backend}
spec:
  parentRefs: [{name: same-namespace, namespace: gateway-conformance-infra}]
  rules:
  - backendRefs: [{name: web-backend, port: 8080}]
";

/// Gateway API conformance HTTPRouteInvalidCrossNamespaceParentRef: a route of another
/// namespace does not attach to a listener that allows only its own.
#[test]
fn http_route_invalid_cross_namespace_parent_ref() {
    let mut run = Run::new("HTTPRouteInvalidCrossNamespaceParentRef", &[INVALID_CROSS_NAMESPACE_PARENT_REF]);
    let route = (WEB, "invalid-cross-namespace-parent-ref");
    run.check(&[
        resolved(route, SAME_NAMESPACE),
        refused(route, SAME_NAMESPACE, "Accepted", "NotAllowedByListeners"),
        Check::NoAcceptedParents(route),
        zero_routes(SAME_NAMESPACE),
    ]);
    run.finish();
}

const INVALID_NONEXISTENT_BACKEND_REF: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: invalid-nonexistent-backend-ref, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - backendRefs: [{name: nonexistent, namespace: gateway-conformance-infra, port: 8080}]
";

/// Gateway API conformance HTTPRouteInvalidNonExistentBackendRef
#[test]
fn http_route_invalid_nonexistent_backend_ref() {
    let mut run = Run::new("HTTPRouteInvalidNonExistentBackendRef", &[INVALID_NONEXISTENT_BACKEND_REF]);
    let route = (INFRA, "invalid-nonexistent-backend-ref");
    run.check(&[accepted(route, SAME_NAMESPACE), refused(route, SAME_NAMESPACE, "ResolvedRefs", "BackendNotFound")]);
    run.rows(SAME, &[get("/").status(500)]);
    run.finish();
}

const INVALID_BACKEND_REF_UNKNOWN_KIND: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: invalid-backend-ref-unknown-kind, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - backendRefs: [{group: unknownkind.example.com, kind: NonExistent, name: infra-backend-v1, port: 8080}]
";

/// Gateway API conformance HTTPRouteInvalidBackendRefUnknownKind
#[test]
fn http_route_invalid_backend_ref_unknown_kind() {
    let mut run = Run::new("HTTPRouteInvalidBackendRefUnknownKind", &[INVALID_BACKEND_REF_UNKNOWN_KIND]);
    let route = (INFRA, "invalid-backend-ref-unknown-kind");
    run.check(&[accepted(route, SAME_NAMESPACE), refused(route, SAME_NAMESPACE, "ResolvedRefs", "InvalidKind")]);
    run.rows(SAME, &[get("/v2").status(500)]);
    run.finish();
}

const NOT_MATCHING_LISTENER_PORT: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: httproute-listener-not-matching-route-port, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace, namespace: gateway-conformance-infra, port: 81}]
  rules:
  - backendRefs: [{name: infra-backend-v1, kind: Service, port: 8080}]
";

/// Gateway API conformance HTTPRouteInvalidParentRefNotMatchingListenerPort
#[test]
fn http_route_invalid_parent_ref_not_matching_listener_port() {
    let mut run = Run::new("HTTPRouteInvalidParentRefNotMatchingListenerPort", &[NOT_MATCHING_LISTENER_PORT]);
    let route = (INFRA, "httproute-listener-not-matching-route-port");
    run.check(&[
        resolved(route, SAME_NAMESPACE),
        refused(route, SAME_NAMESPACE, "Accepted", "NoMatchingParent"),
        Check::NoAcceptedParents(route),
        zero_routes(SAME_NAMESPACE),
    ]);
    run.finish();
}

const NOT_MATCHING_SECTION_NAME: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: httproute-listener-not-matching-section-name, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace, namespace: gateway-conformance-infra, port: 80, sectionName: http1}]
  rules:
  - backendRefs: [{name: infra-backend-v1, kind: Service, port: 8080}]
";

/// Gateway API conformance HTTPRouteInvalidParentRefNotMatchingSectionName
#[test]
fn http_route_invalid_parent_ref_not_matching_section_name() {
    let mut run = Run::new("HTTPRouteInvalidParentRefNotMatchingSectionName", &[NOT_MATCHING_SECTION_NAME]);
    let route = (INFRA, "httproute-listener-not-matching-section-name");
    run.check(&[refused(route, SAME_NAMESPACE, "Accepted", "NoMatchingParent"), Check::NoAcceptedParents(route), zero_routes(SAME_NAMESPACE)]);
    run.finish();
}

const SECTION_NAME_NOT_MATCHING_PORT: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gateway-with-one-not-matching-port-and-section-name-route, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: podnet
  listeners:
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {kinds: [{kind: HTTPRoute}], namespaces: {from: All}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: httproute-listener-section-name-not-matching-port, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: gateway-with-one-not-matching-port-and-section-name-route, namespace: gateway-conformance-infra, sectionName: http, port: 81}]
  rules:
  - backendRefs: [{name: infra-backend-v1, kind: Service, port: 8080}]
";

/// Gateway API conformance HTTPRouteInvalidParentRefSectionNameNotMatchingPort
#[test]
fn http_route_invalid_parent_ref_section_name_not_matching_port() {
    let mut run = Run::new("HTTPRouteInvalidParentRefSectionNameNotMatchingPort", &[SECTION_NAME_NOT_MATCHING_PORT]);
    let route = (INFRA, "httproute-listener-section-name-not-matching-port");
    let gw = (INFRA, "gateway-with-one-not-matching-port-and-section-name-route");
    run.check(&[refused(route, gw, "Accepted", "NoMatchingParent"), Check::NoAcceptedParents(route), zero_routes(gw)]);
    run.finish();
}

const DISALLOWED_KIND: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: tlsroutes-only, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: podnet
  listeners:
  - name: tls
    port: 443
    protocol: TLS
    tls: {mode: Passthrough}
    allowedRoutes: {namespaces: {from: Same}, kinds: [{kind: TLSRoute}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: disallowed-kind, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: tlsroutes-only, namespace: gateway-conformance-infra}]
  rules:
  - backendRefs: [{name: infra-backend-v1, port: 8080}]
";

/// Gateway API conformance HTTPRouteDisallowedKind: no listener allows HTTPRoutes, so the route
/// does not attach.
#[test]
fn http_route_disallowed_kind() {
    let mut run = Run::new("HTTPRouteDisallowedKind", &[DISALLOWED_KIND]);
    let route = (INFRA, "disallowed-kind");
    let gw = (INFRA, "tlsroutes-only");
    run.check(&[resolved(route, gw), refused(route, gw, "Accepted", "NotAllowedByListeners"), Check::NoAcceptedParents(route), zero_routes(gw)]);
    run.finish();
}

const OMITTED_BACKEND_REFS: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: omitted-backendrefs, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: Exact, value: /omitted-no-forward}}]
  - matches: [{path: {type: Exact, value: /empty-no-forward}}]
    backendRefs: []
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
";

/// Gateway API conformance HTTPRouteNoBackendRefs: rules with omitted or empty backendRefs
/// answer 500.
#[test]
fn http_route_no_backend_refs() {
    let mut run = Run::new("HTTPRouteNoBackendRefs", &[OMITTED_BACKEND_REFS]);
    run.check(&attached((INFRA, "omitted-backendrefs"), SAME_NAMESPACE));
    run.rows(SAME, &[get("/forward").to(INFRA, V1), get("/omitted-no-forward").status(500), get("/empty-no-forward").status(500)]);
    run.finish();
}

const PARTIALLY_INVALID: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: invalid-reference-grant, namespace: gateway-conformance-app-backend}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: gateway-conformance-infra}]
  to: [{group: '', kind: Service, name: app-backend-v1}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: invalid-reference-grant, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v2}}]
    backendRefs: [{name: app-backend-v2, namespace: gateway-conformance-app-backend, port: 8080}]
  - backendRefs: [{name: app-backend-v1, namespace: gateway-conformance-app-backend, port: 8080}]
";

/// Gateway API conformance HTTPRoutePartiallyInvalidViaInvalidReferenceGrant: the rule whose
/// backend no ReferenceGrant covers answers 500, its sibling serves.
#[test]
fn http_route_partially_invalid_via_invalid_reference_grant() {
    let mut run = Run::new("HTTPRoutePartiallyInvalidViaInvalidReferenceGrant", &[PARTIALLY_INVALID]);
    let route = (INFRA, "invalid-reference-grant");
    run.check(&[accepted(route, SAME_NAMESPACE), refused(route, SAME_NAMESPACE, "ResolvedRefs", "RefNotPermitted")]);
    run.rows(SAME, &[get("/v2").status(500), get("/").status(200).to(APP, "app-backend-v1")]);
    run.finish();
}

/// `httproute-service-types.yaml`, with the EndpointSlices as the test patches them: the
/// addresses of infra-backend-v1's pods, per address family (none are IPv6).
fn service_types() -> String {
    let (_, _, ips) = ECHO[0];
    let mut ip4 = String::new();
    for (i, ip) in ips.iter().enumerate() {
        let pod = pod_name(V1, i);
        ip4.push_str(&format!("- addresses: ['{ip}']\n  conditions: {{ready: true, serving: true, terminating: false}}\n"));
        ip4.push_str(&format!("  targetRef: {{kind: Pod, name: {pod}, namespace: {INFRA}}}\n"));
    }
    let mut out = String::from(SERVICE_TYPES);
    for service in ["manual-endpointslices", "headless-manual-endpointslices"] {
        for (suffix, family, endpoints) in [("ip4", "IPv4", ip4.as_str()), ("ip6", "IPv6", "")] {
            out.push_str(&format!("---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\naddressType: {family}\n"));
            out.push_str(&format!("metadata: {{name: {service}-{suffix}, namespace: {INFRA}, labels: {{kubernetes.io/service-name: {service}}}}}\n"));
            out.push_str("ports: [{name: first-port, port: 3000, protocol: TCP}]\n");
            if endpoints.is_empty() {
                out.push_str("endpoints: []\n");
            } else {
                out.push_str("endpoints:\n");
                out.push_str(endpoints);
            }
        }
    }
    out
}

const SERVICE_TYPES: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: service-types, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: Exact, value: /manual-endpointslices}}]
    backendRefs: [{name: manual-endpointslices, port: 8080}]
  - matches: [{path: {type: Exact, value: /headless}}]
    backendRefs: [{name: headless, port: 8080}]
  - matches: [{path: {type: Exact, value: /headless-manual-endpointslices}}]
    backendRefs: [{name: headless-manual-endpointslices, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: manual-endpointslices, namespace: gateway-conformance-infra}
spec:
  ports: [{name: first-port, protocol: TCP, port: 8080, targetPort: 3000}]
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: gateway-conformance-infra}
spec:
  clusterIP: None
  selector: {app: infra-backend-v1}
  ports: [{name: first-port, protocol: TCP, port: 8080, targetPort: 3000}]
---
apiVersion: v1
kind: Service
metadata: {name: headless-manual-endpointslices, namespace: gateway-conformance-infra}
spec:
  clusterIP: None
  ports: [{name: first-port, protocol: TCP, port: 8080, targetPort: 3000}]
";

/// Gateway API conformance HTTPRouteServiceTypes: backends behind hand-made EndpointSlices and
/// headless Services.
#[test]
fn http_route_service_types() {
    let manifests = service_types();
    let mut run = Run::new("HTTPRouteServiceTypes", &[manifests.as_str()]);
    run.check(&attached((INFRA, "service-types"), SAME_NAMESPACE));
    run.rows(
        SAME,
        &[
            get("/manual-endpointslices").status(200).to(INFRA, V1),
            get("/headless-manual-endpointslices").status(200).to(INFRA, V1),
            get("/headless").status(200).to(INFRA, V1),
        ],
    );
    run.finish();
}

const NAMED_RULE: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: http-named-rules, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - name: named-rule
    matches: [{path: {type: PathPrefix, value: /named}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /unnamed}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
";

/// Gateway API conformance HTTPRouteNamedRule
#[test]
fn http_route_named_rule() {
    let mut run = Run::new("HTTPRouteNamedRule", &[NAMED_RULE]);
    run.check(&attached((INFRA, "http-named-rules"), SAME_NAMESPACE));
    run.rows(SAME, &[get("/named").status(200).namespace(INFRA), get("/unnamed").status(200).namespace(INFRA)]);
    run.finish();
}
