//! `podnet gateway serve` with a real client (curl) on loopback: the seed's `app-ingress`
//! (host and path routing, ssl-redirect, proxy-body-size, TLS by SNI), X-Forwarded headers,
//! 404/503, rewrite-target, and route changes under load without a failed request.

#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a line number

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// What a test backend does with one request (its head lines and body): answers on the
/// connection (the reader has what follows); `false` closes it.
type Answer = fn(&str, &[String], &[u8], &mut std::net::TcpStream, &mut BufReader<std::net::TcpStream>) -> bool;

/// A backend on loopback reading requests (bodies by Content-Length or chunked) and answering
/// each with `answer`.
fn spawn_backend(name: &'static str, answer: Answer) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                loop {
                    let mut head = Vec::new();
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                        head.push(line.trim_end().to_owned());
                        line.clear();
                    }
                    if head.is_empty() {
                        return;
                    }
                    let len: usize = head.iter().find_map(|h| h.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.parse().unwrap())).unwrap_or(0);
                    let mut body = vec![0; len];
                    reader.read_exact(&mut body).unwrap();
                    if head.iter().any(|h| h.eq_ignore_ascii_case("transfer-encoding: chunked")) {
                        loop {
                            let mut size = String::new();
                            reader.read_line(&mut size).unwrap();
                            let n = usize::from_str_radix(size.trim(), 16).unwrap();
                            let mut chunk = vec![0; n + 2];
                            reader.read_exact(&mut chunk).unwrap();
                            if n == 0 {
                                break;
                            }
                            body.extend_from_slice(&chunk[..n]);
                        }
                    }
                    if !answer(name, &head, &body, &mut conn, &mut reader) {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// An HTTP backend answering `<name> <method> <path>` and the request headers, one per line.
fn backend(name: &'static str) -> SocketAddr {
    spawn_backend(name, |name, head, body, conn, _| {
        let request = head[0].split(' ').take(2).collect::<Vec<_>>().join(" ");
        let text = format!("{name} {request}\n{}\nbody {}\n", head[1..].join("\n"), body.len());
        write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}", text.len()).is_ok()
    })
}

struct Gateway {
    child: Child,
    http: String,
    https: String,
    metrics: String,
    /// What it logged before it served.
    started: Vec<String>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `podnet gateway serve -f dir` on loopback HTTP and HTTPS ports.
fn serve(dir: &Path) -> Gateway {
    serve_with(dir, &["--http", "127.0.0.1:0", "--https", "127.0.0.1:0"])
}

/// `podnet gateway serve -f dir ARGS...`, once it says where it serves (addresses it was not
/// asked for are empty).
fn serve_with(dir: &Path, args: &[&str]) -> Gateway {
    let mut child =
        Command::new(env!("CARGO_BIN_EXE_podnet")).args(["gateway", "serve", "-f", dir.to_str().unwrap()]).args(args).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let mut started = Vec::new();
    while !line.contains("serving on") {
        started.push(std::mem::take(&mut line));
        assert!(stderr.read_line(&mut line).unwrap() > 0, "gateway exited: {started:?}");
    }
    std::thread::spawn(move || for _ in stderr.lines() {});
    let addr = |prefix: &str| line.split_whitespace().find_map(|w| w.strip_prefix(prefix)).unwrap_or_default().to_owned();
    Gateway { http: addr("http://"), https: addr("https://"), metrics: addr("metrics=http://"), child, started }
}

fn cert(dir: &Path, host: &str) -> (String, String) {
    let (key, crt) = (dir.join(format!("{host}.key")), dir.join(format!("{host}.crt")));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN={host}"),
            "-addext",
            &format!("subjectAltName=DNS:{host}"),
        ])
        .args(["-keyout", key.to_str().unwrap(), "-out", crt.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (crt.to_str().unwrap().to_owned(), key.to_str().unwrap().to_owned())
}

fn b64(path: &str) -> String {
    let out = Command::new("base64").args(["-w0", path]).output().unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// curl's status code and body.
fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl").args(["-s", "--max-time", "5", "-w", "\n%{http_code}"]).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_owned(), body.to_owned())
}

fn have_tools() -> bool {
    ["curl", "openssl"].iter().all(|t| Command::new(t).arg("--version").output().is_ok() || Command::new(t).arg("version").output().is_ok())
}

fn manifests(orders: SocketAddr, api: SocketAddr, crts: &[(String, String, &str)], order_path: &str) -> String {
    let mut out = String::from(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: podnet, annotations: {ingressclass.kubernetes.io/is-default-class: 'true'}}\nspec: {controller: k8s.io/ingress-nginx}\n",
    );
    out.push_str(&format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: app-ingress\n  namespace: production\n  annotations: {{nginx.ingress.kubernetes.io/ssl-redirect: 'true', nginx.ingress.kubernetes.io/proxy-body-size: 10m}}\nspec:\n  tls:\n  - {{hosts: [api.example.com], secretName: api-tls}}\n  - {{hosts: [shop.example.com], secretName: shop-tls}}\n  rules:\n  - host: api.example.com\n    http:\n      paths:\n      - {{path: {order_path}, pathType: Prefix, backend: {{service: {{name: order-service, port: {{number: 80}}}}}}}}\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: api-service, port: {{name: http}}}}}}}}\n      - {{path: /empty, pathType: Exact, backend: {{service: {{name: empty, port: {{number: 80}}}}}}}}\n  - host: shop.example.com\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: api-service, port: {{number: 80}}}}}}}}\n"
    ));
    out.push_str("---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: plain\n  namespace: production\n  annotations: {nginx.ingress.kubernetes.io/rewrite-target: /$2}\nspec:\n  rules:\n  - host: plain.example.com\n    http:\n      paths:\n      - {path: '/strip(/|$)(.*)', pathType: ImplementationSpecific, backend: {service: {name: api-service, port: {number: 80}}}}\n");
    out.push_str(&format!("      - {{path: {order_path}, pathType: Prefix, backend: {{service: {{name: order-service, port: {{number: 80}}}}}}}}\n"));
    for (name, addr) in [("order-service", orders), ("api-service", api)] {
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: production}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: production, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nendpoints: [{{addresses: [127.0.0.1]}}]\nports: [{{name: http, port: {}}}]\n",
            addr.port()
        ));
    }
    out.push_str("---\napiVersion: v1\nkind: Service\nmetadata: {name: empty, namespace: production}\nspec: {ports: [{port: 80}]}\n");
    for (crt, key, name) in crts {
        out.push_str(&format!("---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: production}}\ntype: kubernetes.io/tls\ndata: {{tls.crt: {}, tls.key: {}}}\n", b64(crt), b64(key)));
    }
    out
}

/// The test manifests without TLS Secrets, /orders routed, and their two backends.
fn shop_without_tls() -> (tempfile::TempDir, SocketAddr, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let (orders, api) = (backend("orders"), backend("api"));
    std::fs::write(dir.path().join("m.yaml"), manifests(orders, api, &[], "/orders")).unwrap();
    (dir, orders, api)
}

#[test]
fn the_seeds_ingress_over_http_and_https() {
    if !have_tools() {
        testkit::skip("needs curl and openssl");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (orders, api) = (backend("orders"), backend("api"));
    let (api_crt, api_key) = cert(certs.path(), "api.example.com");
    let (shop_crt, shop_key) = cert(certs.path(), "shop.example.com");
    let crts = [(api_crt.clone(), api_key, "api-tls"), (shop_crt.clone(), shop_key, "shop-tls")];
    std::fs::write(dir.path().join("m.yaml"), manifests(orders, api, &crts, "/orders")).unwrap();
    let g = serve(dir.path());
    let https_port = g.https.rsplit(':').next().unwrap().to_owned();
    let resolve = |host: &str| format!("{host}:{https_port}:127.0.0.1");

    // HTTP to a TLS host: 308 to https, path and query kept.
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "-H", "Host: api.example.com", &format!("http://{}/orders/1?x=y", g.http)])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "308 https://api.example.com/orders/1?x=y");
    // HTTPS: the certificate of the name asked (curl verifies it against the right CA file).
    let (code, body) = curl(&[
        "--cacert",
        &api_crt,
        "--resolve",
        &resolve("api.example.com"),
        "https://api.example.com:PORT/orders/42?q=1".replace("PORT", &https_port).as_str(),
    ]);
    assert_eq!(code, "200", "{body}");
    assert!(body.starts_with("orders GET /orders/42?q=1"), "{body}");
    let header = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")).or_else(|| l.strip_prefix(&format!("{}: ", name.to_ascii_lowercase()))))
            .map(str::to_owned)
    };
    assert_eq!(header("host").as_deref(), Some(format!("api.example.com:{https_port}").as_str()), "Host as received: {body}");
    assert_eq!(header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(header("x-forwarded-host").as_deref(), Some("api.example.com"));
    let (code, body) = curl(&["--cacert", &shop_crt, "--resolve", &resolve("shop.example.com"), &format!("https://shop.example.com:{https_port}/")]);
    assert_eq!((code.as_str(), body.starts_with("api GET /")), ("200", true), "{body}");
    // The wrong certificate for a name fails verification.
    let (code, _) = curl(&["--cacert", &api_crt, "--resolve", &resolve("shop.example.com"), &format!("https://shop.example.com:{https_port}/")]);
    assert_eq!(code, "000");

    // Longest prefix, element-wise; the rest to api-service; no rule: 404; no endpoints: 503.
    let get = |host: &str, path: &str| curl(&["-k", "--resolve", &resolve(host), &format!("https://{host}:{https_port}{path}")]);
    assert!(get("api.example.com", "/ordersx").1.starts_with("api "));
    assert_eq!(get("unknown.example.com", "/").0, "404");
    assert_eq!(get("api.example.com", "/empty").0, "503");
    // rewrite-target with captures (plain HTTP: no TLS for that host, no redirect).
    let (code, body) = curl(&["-H", "Host: plain.example.com", &format!("http://{}/strip/inner/path", g.http)]);
    assert_eq!((code.as_str(), body.lines().next().unwrap()), ("200", "api GET /inner/path"));

    // proxy-body-size 10m: 10 MiB passes, one byte more is 413, chunked too.
    let body_file = dir.path().join("body");
    for (size, want) in [(10 << 20, "200"), ((10 << 20) + 1, "413")] {
        std::fs::write(&body_file, vec![b'x'; size]).unwrap();
        let (code, _) = curl(&[
            "-k",
            "--resolve",
            &resolve("api.example.com"),
            "--data-binary",
            &format!("@{}", body_file.display()),
            &format!("https://api.example.com:{https_port}/orders"),
        ]);
        assert_eq!(code, want, "{size} bytes");
        let (code, _) = curl(&[
            "-k",
            "--http1.1",
            "-H",
            "Transfer-Encoding: chunked",
            "--resolve",
            &resolve("api.example.com"),
            "--data-binary",
            &format!("@{}", body_file.display()),
            &format!("https://api.example.com:{https_port}/orders"),
        ]);
        assert_eq!(code, want, "{size} bytes chunked");
    }
}

#[test]
fn route_changes_under_load_fail_no_request() {
    if !have_tools() {
        testkit::skip("needs curl and openssl");
        return;
    }
    let (dir, orders, api) = shop_without_tls();
    let g = serve(dir.path());
    let url = format!("http://{}/orders", g.http);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (stop2, url2) = (std::sync::Arc::clone(&stop), url.clone());
    let load = std::thread::spawn(move || {
        let mut codes = std::collections::BTreeMap::new();
        let client = || std::net::TcpStream::connect(url2.trim_start_matches("http://").split('/').next().unwrap()).unwrap();
        let mut conn = client();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            // Keep-alive: one connection for every request, across the changes.
            write!(conn, "GET /orders HTTP/1.1\r\nHost: plain.example.com\r\n\r\n").unwrap();
            let mut reader = BufReader::new(&conn);
            let mut status = String::new();
            reader.read_line(&mut status).unwrap();
            let mut len = 0;
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length: ") {
                    len = v.trim().parse().unwrap();
                }
                line.clear();
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            *codes.entry(status.split(' ').nth(1).unwrap_or("?").to_owned()).or_insert(0) += 1;
        }
        codes
    });
    // 20 route changes: /orders moves between the two Services.
    for i in 0..20 {
        let path = if i % 2 == 0 { "/nothing" } else { "/orders" };
        std::fs::write(dir.path().join("m.yaml.tmp"), manifests(orders, api, &[], path)).unwrap();
        std::fs::rename(dir.path().join("m.yaml.tmp"), dir.path().join("m.yaml")).unwrap();
        std::thread::sleep(Duration::from_millis(60));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let codes = load.join().unwrap();
    // Both route versions answered (200 while /orders is routed, 404 while it is not), on one
    // keep-alive connection, and nothing else: no refused connection, no 5xx.
    assert_eq!(codes.keys().collect::<Vec<_>>(), ["200", "404"], "{codes:?}");
    assert!(codes.values().all(|n| *n > 20), "{codes:?}");
}

#[test]
fn gateway_api_routes_with_their_filters() {
    if !have_tools() {
        testkit::skip("needs curl and openssl");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (api, other) = (backend("api"), backend("other"));
    let svc = |name: &str, addr: SocketAddr| {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: production}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: production, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nendpoints: [{{addresses: [127.0.0.1]}}]\nports: [{{name: http, port: {}}}]\n",
            addr.port()
        )
    };
    let yaml = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: podnet}}\nspec: {{controllerName: podnet.io/gateway-controller}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: main-gateway, namespace: production}}\nspec:\n  gatewayClassName: podnet\n  listeners: [{{name: http, port: 80, protocol: HTTP}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: api-route, namespace: production, generation: 2}}\nspec:\n  parentRefs: [{{name: main-gateway}}]\n  hostnames: [\"api.example.com\"]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /v1}}}}]\n    filters:\n    - {{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: X-Env, value: lab}}], add: [{{name: X-Trace, value: gw}}, {{name: X-New, value: a}}], remove: [X-Drop]}}}}\n    - {{type: ResponseHeaderModifier, responseHeaderModifier: {{add: [{{name: X-Served-By, value: podnet}}]}}}}\n    backendRefs: [{{name: api-service, port: 80, weight: 1}}, {{name: other-service, port: 80, weight: 0}}]\n  - matches: [{{path: {{type: PathPrefix, value: /old}}}}]\n    filters: [{{type: RequestRedirect, requestRedirect: {{scheme: https, statusCode: 301}}}}]\n  - matches: [{{path: {{type: PathPrefix, value: /rewrite/me}}}}]\n    filters: [{{type: URLRewrite, urlRewrite: {{hostname: internal.example, path: {{type: ReplacePrefixMatch, replacePrefixMatch: /new}}}}}}]\n    backendRefs: [{{name: other-service, port: 80}}]\n  - matches: [{{path: {{type: Exact, value: /broken}}}}]\n    backendRefs: [{{name: missing, port: 80}}]\n{}{}",
        svc("api-service", api),
        svc("other-service", other)
    );
    // Ingresses beside the Gateway: one for a host of an attached route (never reached: the
    // Gateway takes that host), one for a host no Gateway listener or route names.
    let ingress = |name: &str, host: &str| {
        format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: production}}\nspec:\n  ingressClassName: nginx\n  rules:\n  - host: {host}\n    http:\n      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: other-service, port: {{number: 80}}}}}}}}]\n"
        )
    };
    let yaml = format!("{yaml}{}{}", ingress("shadowed", "api.example.com"), ingress("elsewhere", "web.example.com"));
    std::fs::write(dir.path().join("m.yaml"), yaml).unwrap();
    let g = serve(dir.path());
    let url = |path: &str| format!("http://{}{path}", g.http);
    assert_eq!(curl(&["-H", "Host: api.example.com", &url("/v2")]).0, "404", "the Gateway's host: its 404, not the Ingress's route");
    let (code, body) = curl(&["-H", "Host: web.example.com", &url("/v2")]);
    assert!(code == "200" && body.starts_with("other GET /v2"), "a host the Gateway does not take goes to the Ingresses: {code} {body}");
    // The seed's api-route, with header modifiers both ways; weight 0 never takes a request.
    for _ in 0..5 {
        let out = Command::new("curl")
            .args(["-s", "-i", "-H", "Host: api.example.com", "-H", "X-Drop: me", "-H", "X-Trace: client", &url("/v1/users")])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        assert!(text.contains("x-served-by: podnet") && text.contains("\napi get /v1/users\n"), "{text}");
        assert!(text.contains("x-env: lab") && !text.contains("x-drop"), "{text}");
        // `add` appends to the client's value, in one field; a header the client did not send is added.
        assert!(text.contains("\nx-trace: client,gw\n") && text.matches("x-trace").count() == 1 && text.contains("\nx-new: a\n"), "{text}");
    }
    // RequestRedirect: scheme https, 301, the well-known port left out.
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "-H", "Host: api.example.com", &url("/old/page?x=1")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "301 https://api.example.com/old/page?x=1");
    // URLRewrite: the prefix replaced, the Host rewritten.
    let (code, body) = curl(&["-H", "Host: api.example.com", &url("/rewrite/me/please")]);
    assert_eq!(code, "200");
    assert!(body.starts_with("other GET /new/please") && body.to_ascii_lowercase().contains("host: internal.example"), "{body}");
    // An invalid backend: 500.
    assert_eq!(curl(&["-H", "Host: api.example.com", &url("/broken")]).0, "500");
    // And the status says why.
    let status = Command::new(env!("CARGO_BIN_EXE_podnet")).args(["gateway", "status", "-f", dir.path().to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("ResolvedRefs=False(BackendNotFound)") && text.contains("attachedRoutes=1"), "{text}");
    // As YAML, the conditions name the generation they were observed at.
    let yaml = Command::new(env!("CARGO_BIN_EXE_podnet")).args(["gateway", "status", "-f", dir.path().to_str().unwrap(), "-o", "yaml"]).output().unwrap();
    let yaml = String::from_utf8_lossy(&yaml.stdout);
    assert!(yaml.contains("kind: HTTPRoute") && yaml.contains("    observedGeneration: 2"), "{yaml}");
}

/// What the proxy answers to raw bytes on a fresh connection: the status line, or "" if it closed.
fn raw(addr: &str, bytes: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).lines().next().unwrap_or("").to_owned()
}

#[test]
fn bad_requests_get_clean_errors_and_the_proxy_keeps_serving() {
    if !have_tools() {
        testkit::skip("needs curl and openssl");
        return;
    }
    let (dir, _, _) = shop_without_tls();
    let g = serve(dir.path());
    // Request smuggling: Content-Length and Transfer-Encoding together could be read two ways
    // (the 40 bytes hide a second request): refused, as nginx does.
    let mut s = std::net::TcpStream::connect(&g.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"POST /orders HTTP/1.1\r\nHost: plain.example.com\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut reply = vec![0; 4096];
    let n = s.read(&mut reply).unwrap();
    let reply = String::from_utf8_lossy(&reply[..n]);
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    // An invalid Host.
    assert!(raw(&g.http, b"GET / HTTP/1.1\r\nHost: bad host!\r\nConnection: close\r\n\r\n").contains(" 400 "));
    // Headers past 64 KiB.
    let mut huge = b"GET / HTTP/1.1\r\nHost: plain.example.com\r\nX-Big: ".to_vec();
    huge.extend(vec![b'a'; 100 * 1024]);
    huge.extend(b"\r\n\r\n");
    let big = raw(&g.http, &huge);
    assert!(big.is_empty() || big.contains(" 431 ") || big.contains(" 400 "), "{big:?}");
    // Not TLS on the TLS port: a TLS alert (record type 21) and the connection closes.
    let alert = raw(&g.https, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(alert.is_empty() || alert.starts_with('\u{15}'), "{alert:?}");
    // Paths are routed normalized (as nginx matches locations), sent as received; one that
    // climbs above the root is refused.
    let (code, body) = curl(&["--path-as-is", "-H", "Host: plain.example.com", &format!("http://{}/elsewhere/..//%6Frders", g.http)]);
    assert_eq!(code, "200", "{body}");
    // (The plain Ingress's rewrite-target makes it `/` upstream.)
    assert!(body.starts_with("orders GET /\n"), "{body}");
    assert_eq!(curl(&["--path-as-is", "-H", "Host: plain.example.com", &format!("http://{}/../orders", g.http)]).0, "400");
    // Still serving.
    let (code, body) = curl(&["-H", "Host: plain.example.com", &format!("http://{}/orders", g.http)]);
    assert_eq!(code, "200", "{body}");
}

#[test]
fn metrics_and_healthz_on_ingress_nginx_names() {
    if !have_tools() {
        testkit::skip("needs curl and openssl");
        return;
    }
    let (dir, _, _) = shop_without_tls();
    let g = serve_with(dir.path(), &["--http", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--no-access-log"]);
    let metrics = g.metrics.clone();
    for _ in 0..3 {
        curl(&["-H", "Host: plain.example.com", &format!("http://{}/orders", g.http)]);
    }
    curl(&["-H", "Host: made.up", &format!("http://{}/", g.http)]);
    assert_eq!(curl(&[&format!("http://{metrics}/healthz")]), ("200".into(), "ok".into()));
    let (_, text) = curl(&[&format!("http://{metrics}/metrics")]);
    assert!(text.contains("nginx_ingress_controller_requests{host=\"plain.example.com\",ingress=\"plain\",method=\"GET\",namespace=\"production\",path=\"/orders\",service=\"production-order-service-80\",status=\"200\"} 3"), "{text}");
    assert!(
        text.contains("nginx_ingress_controller_requests{host=\"-\",ingress=\"\",method=\"GET\",namespace=\"\",path=\"\",service=\"-\",status=\"404\"} 1"),
        "made-up hosts are not labels: {text}"
    );
    assert!(text.contains("nginx_ingress_controller_request_duration_seconds_count{host=\"plain.example.com\""), "{text}");
}

#[test]
fn an_https_listener_serves_its_certificate_refs() {
    if !have_tools() {
        testkit::skip("needs curl and openssl");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let api = backend("api");
    let (crt, key) = cert(certs.path(), "secure.example.com");
    let yaml = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: podnet}}\nspec: {{controllerName: podnet.io/gateway-controller}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: production}}\nspec:\n  gatewayClassName: podnet\n  listeners:\n  - name: https\n    port: 443\n    protocol: HTTPS\n    hostname: secure.example.com\n    tls: {{certificateRefs: [{{name: secure-tls}}]}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: production}}\nspec:\n  parentRefs: [{{name: gw, sectionName: https}}]\n  rules: [{{backendRefs: [{{name: api-service, port: 80}}]}}]\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: secure-tls, namespace: production}}\ntype: kubernetes.io/tls\ndata: {{tls.crt: {}, tls.key: {}}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: api-service, namespace: production}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: api-1, namespace: production, labels: {{kubernetes.io/service-name: api-service}}}}\naddressType: IPv4\nendpoints: [{{addresses: [127.0.0.1]}}]\nports: [{{name: http, port: {}}}]\n",
        b64(&crt),
        b64(&key),
        api.port()
    );
    std::fs::write(dir.path().join("m.yaml"), yaml).unwrap();
    let g = serve(dir.path());
    let port = g.https.rsplit(':').next().unwrap().to_owned();
    let (code, body) = curl(&["--cacert", &crt, "--resolve", &format!("secure.example.com:{port}:127.0.0.1"), &format!("https://secure.example.com:{port}/x")]);
    assert_eq!(code, "200", "{body}");
    assert!(body.starts_with("api GET /x"), "{body}");
    // The HTTPS listener does not serve plain HTTP.
    assert_eq!(curl(&["-H", "Host: secure.example.com", &format!("http://{}/x", g.http)]).0, "404");
}

/// A backend answering by path the ways HTTP/1 lets it: `/chunked` (a chunked body), `/close`
/// (HTTP/1.0, the body delimited by the connection's end), `/ws` (101, then an echo of every
/// byte), anything else `echo` with the request head and body (Content-Length framing).
fn framing_backend() -> SocketAddr {
    spawn_backend("framing", |_, head, body, conn, reader| match head[0].split(' ').nth(1).unwrap_or("") {
        "/chunked" => conn
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-From: backend\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
            .is_ok(),
        "/slow" => {
            std::thread::sleep(Duration::from_millis(1500));
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nslow\n").is_ok()
        }
        "/close" => {
            let _ = conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end");
            false
        }
        "/ws" => {
            let upgrade = head.iter().any(|h| h.eq_ignore_ascii_case("upgrade: websocket"));
            if !upgrade {
                return conn.write_all(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n").is_ok();
            }
            let _ = conn.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
            let mut byte = [0u8; 1];
            while reader.read_exact(&mut byte).is_ok() && conn.write_all(&byte).is_ok() {}
            false
        }
        _ => {
            let shown = if body.len() < 1024 {
                String::from_utf8_lossy(body).into_owned()
            } else {
                format!("of {} bytes, sum {}", body.len(), body.iter().map(|b| u64::from(*b)).sum::<u64>())
            };
            let text = format!("echo {}\n{}\nbody {shown}\n", head[0], head[1..].join("\n"));
            write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}", text.len()).is_ok()
        }
    })
}

/// Manifests routing `framing.example.com` to the framing backend (and a TLS one, if given,
/// at `tls.example.com` with `backend-protocol: HTTPS`).
fn framing_manifests(dir: &Path, backend: SocketAddr, tls_backend: Option<u16>) {
    let mut out = String::from(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: podnet, annotations: {ingressclass.kubernetes.io/is-default-class: 'true'}}\nspec: {controller: k8s.io/ingress-nginx}\n",
    );
    let mut service = |name: &str, port: u16, host: &str, annotations: &str| {
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: t}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: t, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nendpoints: [{{addresses: [127.0.0.1]}}]\nports: [{{name: http, port: {port}}}]\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: t, annotations: {{{annotations}}}}}\nspec:\n  rules:\n  - host: {host}\n    http:\n      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: {name}, port: {{number: 80}}}}}}}}]\n"
        ));
    };
    service(
        "framing",
        backend.port(),
        "framing.example.com",
        "nginx.ingress.kubernetes.io/proxy-body-size: 1k, nginx.ingress.kubernetes.io/ssl-redirect: 'false'",
    );
    service("big", backend.port(), "big.example.com", "nginx.ingress.kubernetes.io/proxy-body-size: '0'");
    service("capped", backend.port(), "capped.example.com", "nginx.ingress.kubernetes.io/proxy-body-size: 2m");
    service("impatient", backend.port(), "impatient.example.com", "nginx.ingress.kubernetes.io/proxy-read-timeout: '1'");
    if let Some(port) = tls_backend {
        service("secure", port, "tls.example.com", "nginx.ingress.kubernetes.io/backend-protocol: HTTPS");
    }
    std::fs::write(dir.join("m.yaml"), out).unwrap();
}

/// The proxy serving the framing manifests (from a directory that lives as long as it is
/// kept), or `None` (the test skipped) without curl and openssl.
fn framing_gateway() -> Option<(tempfile::TempDir, Gateway)> {
    if !have_tools() {
        testkit::skip("needs curl and openssl");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    framing_manifests(dir.path(), framing_backend(), None);
    let g = serve(dir.path());
    Some((dir, g))
}

/// Sends raw bytes on a new connection and reads what comes back until it closes (or 3 s pass).
fn exchange(addr: &str, bytes: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn http1_framing_both_ways() {
    let Some((_dir, g)) = framing_gateway() else {
        return;
    };
    let url = |path: &str| format!("http://{}{path}", g.http);
    let host = ["-H", "Host: framing.example.com"];
    // A chunked request body reaches the backend whole, re-framed with a Content-Length.
    let (code, body) = curl(&[&host[..], &["-H", "Transfer-Encoding: chunked", "--data-binary", "hello chunks", &url("/post")]].concat());
    assert_eq!(code, "200", "{body}");
    assert!(
        body.contains("body hello chunks")
            && body.to_ascii_lowercase().contains("content-length: 12")
            && !body.to_ascii_lowercase().contains("transfer-encoding"),
        "{body}"
    );
    // Expect: 100-continue is answered by the proxy; the backend gets the body, not the Expect.
    let (code, body) = curl(&[&host[..], &["-H", "Expect: 100-continue", "--data-binary", "after continue", &url("/post")]].concat());
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("body after continue") && !body.to_ascii_lowercase().contains("expect"), "{body}");
    // A chunked body over proxy-body-size (1k): 413.
    let big = "x".repeat(1025);
    assert_eq!(curl(&[&host[..], &["-H", "Transfer-Encoding: chunked", "--data-binary", &big, &url("/post")]].concat()).0, "413");
    // A chunked response with trailers and extensions: the data arrives, re-chunked.
    let (code, body) = curl(&[&host[..], &[url("/chunked").as_str()][..]].concat());
    assert_eq!((code.as_str(), body.as_str()), ("200", "hello world"));
    let raw_chunked = exchange(&g.http, b"GET /chunked HTTP/1.1\r\nHost: framing.example.com\r\nConnection: close\r\n\r\n");
    assert!(
        raw_chunked.contains("transfer-encoding: chunked\r\n") && raw_chunked.contains("x-from: backend") || raw_chunked.contains("X-From: backend"),
        "{raw_chunked}"
    );
    assert!(raw_chunked.ends_with("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), "{raw_chunked:?}");
    // A body delimited by the backend closing: chunked to an HTTP/1.1 client, delimited by
    // the close to an HTTP/1.0 one.
    let (code, body) = curl(&[&host[..], &[url("/close").as_str()][..]].concat());
    assert_eq!((code.as_str(), body.as_str()), ("200", "until the end"));
    let old = exchange(&g.http, b"GET /close HTTP/1.0\r\nHost: framing.example.com\r\n\r\n");
    assert!(old.starts_with("HTTP/1.1 200") && old.ends_with("\r\n\r\nuntil the end") && !old.contains("chunked"), "{old:?}");
    // The path goes upstream as received (it is only routed normalized).
    let (_, body) = curl(&["--path-as-is", "-H", "Host: framing.example.com", &url("/a/..//b%2F")]);
    assert!(body.starts_with("echo GET /a/..//b%2F HTTP/1.1"), "{body}");
    // HEAD: the length, no body.
    let head = exchange(&g.http, b"HEAD /x HTTP/1.1\r\nHost: framing.example.com\r\nConnection: close\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200") && head.to_ascii_lowercase().contains("content-length:") && head.ends_with("\r\n\r\n"), "{head:?}");
    // HTTP/1.0 keep-alive is kept; pipelined requests are answered in order.
    let two = exchange(&g.http, b"GET /one HTTP/1.0\r\nHost: framing.example.com\r\nConnection: keep-alive\r\n\r\nGET /two HTTP/1.1\r\nHost: framing.example.com\r\nConnection: close\r\n\r\n");
    let (one_at, two_at) = (two.find("echo GET /one HTTP/1.1").unwrap(), two.find("echo GET /two HTTP/1.1").unwrap());
    assert!(one_at < two_at && two.contains("connection: keep-alive"), "{two}");
}

#[test]
fn large_bodies_are_streamed_within_their_limit() {
    let Some((dir, g)) = framing_gateway() else {
        return;
    };
    let file = dir.path().join("body.bin");
    let body: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let sum: u64 = body.iter().map(|b| u64::from(*b)).sum();
    std::fs::write(&file, &body).unwrap();
    let data = format!("@{}", file.display());
    for (host, chunked) in [("big.example.com", false), ("big.example.com", true), ("capped.example.com", false)] {
        let mut args = vec!["-H", "Host: ", "--data-binary", &data];
        let host_header = format!("Host: {host}");
        args[1] = &host_header;
        if chunked {
            args.extend(["-H", "Transfer-Encoding: chunked"]);
        }
        let url = format!("http://{}/upload", g.http);
        args.push(&url);
        let (code, text) = curl(&args);
        assert_eq!(code, if host == "capped.example.com" { "413" } else { "200" }, "{host} chunked={chunked}: {text}");
        if code == "200" {
            assert!(text.contains(&format!("body of {} bytes, sum {sum}", body.len())), "{text}");
        }
    }
    // Chunked and over the 2m limit: refused as it streams, the backend never gets all of it.
    let (code, text) =
        curl(&["-H", "Host: capped.example.com", "-H", "Transfer-Encoding: chunked", "--data-binary", &data, &format!("http://{}/upload", g.http)]);
    assert!(code == "413" || code == "000", "{code} {text}");
    assert!(!text.contains("body of"), "{text}");
    // Still serving.
    assert_eq!(curl(&["-H", "Host: big.example.com", &format!("http://{}/after", g.http)]).0, "200");
}

#[test]
fn timeouts_answer_504_and_zero_disables_them() {
    if !have_tools() {
        testkit::skip("needs curl and openssl");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    framing_manifests(dir.path(), framing_backend(), None);
    std::fs::write(
        dir.path().join("gateway.yaml"),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: podnet}\nspec: {controllerName: podnet.io/gateway-controller}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: t}\nspec:\n  gatewayClassName: podnet\n  listeners: [{name: http, port: 80, protocol: HTTP}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: timed, namespace: t}\nspec:\n  parentRefs: [{name: gw}]\n  hostnames: [timed.example.com]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /request}}]\n    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /slow}}}]\n    timeouts: {request: 500ms}\n    backendRefs: [{name: framing, port: 80}]\n  - matches: [{path: {type: PathPrefix, value: /backend}}]\n    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /slow}}}]\n    timeouts: {backendRequest: 500ms}\n    backendRefs: [{name: framing, port: 80}]\n  - matches: [{path: {type: PathPrefix, value: /off}}]\n    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /slow}}}]\n    timeouts: {request: 0s}\n    backendRefs: [{name: framing, port: 80}]\n",
    )
    .unwrap();
    let g = serve(dir.path());
    let timed = |host: &str, path: &str| {
        let start = std::time::Instant::now();
        let (code, _) = curl(&["-H", &format!("Host: {host}"), &format!("http://{}{path}", g.http)]);
        (code, start.elapsed())
    };
    // proxy-read-timeout: 1 (second) against a backend taking 1.5 s.
    let (code, took) = timed("impatient.example.com", "/slow");
    assert_eq!(code, "504");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_millis(1400), "{took:?}");
    // HTTPRoute timeouts.request and timeouts.backendRequest of 500ms.
    for path in ["/request", "/backend"] {
        let (code, took) = timed("timed.example.com", path);
        assert_eq!(code, "504", "{path}");
        assert!(took >= Duration::from_millis(400) && took < Duration::from_millis(1200), "{path}: {took:?}");
    }
    // 0s disables the timeout: the slow answer arrives.
    assert_eq!(timed("timed.example.com", "/off").0, "200");
    // Without a timeout of its own, the default (60 s) lets it through too.
    assert_eq!(timed("framing.example.com", "/slow").0, "200");
}

#[test]
fn smuggling_and_malformed_requests_are_refused_and_the_connection_closed() {
    let dir = tempfile::tempdir().unwrap();
    framing_manifests(dir.path(), framing_backend(), None);
    let g = serve(dir.path());
    let hidden = "GET /smuggled HTTP/1.1\r\nHost: framing.example.com\r\n\r\n";
    for (request, status) in [
        (format!("POST /a HTTP/1.1\r\nHost: framing.example.com\r\nContent-Length: 48\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{hidden}"), "400"),
        (format!("POST /a HTTP/1.1\r\nHost: framing.example.com\r\nContent-Length: 0\r\nContent-Length: 48\r\n\r\n{hidden}"), "400"),
        (format!("POST /a HTTP/1.1\r\nHost: framing.example.com\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n{hidden}"), "501"),
        (format!("POST /a HTTP/1.1\r\nHost: framing.example.com\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n{hidden}"), "400"),
        (format!("POST /a HTTP/1.0\r\nHost: framing.example.com\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{hidden}"), "400"),
        (format!("GET /a HTTP/1.1\r\nHost: framing.example.com\r\nHost: other.example.com\r\n\r\n{hidden}"), "400"),
        (format!("GET /a HTTP/1.1\r\n\r\n{hidden}"), "400"),
        (format!("GET /a HTTP/1.1\r\nHost: framing.example.com\r\n folded: header\r\n\r\n{hidden}"), "400"),
    ] {
        let reply = exchange(&g.http, request.as_bytes());
        assert!(reply.starts_with(&format!("HTTP/1.1 {status} ")), "{request:?} got {reply:?}");
        assert_eq!(reply.matches("HTTP/1.1 ").count(), 1, "one answer, then the connection closes: {reply:?}");
        assert!(!reply.contains("/smuggled"), "{reply}");
    }
    // A request too large for its headers.
    let mut huge = b"GET / HTTP/1.1\r\nHost: framing.example.com\r\n".to_vec();
    for i in 0..120 {
        huge.extend(format!("X-H{i}: v\r\n").as_bytes());
    }
    huge.extend(b"\r\n");
    assert!(exchange(&g.http, &huge).starts_with("HTTP/1.1 431 "));
}

#[test]
fn websockets_are_tunnelled_after_the_backend_s_101() {
    let dir = tempfile::tempdir().unwrap();
    framing_manifests(dir.path(), framing_backend(), None);
    let g = serve(dir.path());
    let mut s = std::net::TcpStream::connect(&g.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: framing.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101 ") && head.contains("upgrade: websocket") && head.contains("connection: upgrade"), "{head}");
    // Bytes both ways, unframed.
    s.write_all(b"ping\x00\xff").unwrap();
    let mut echo = [0u8; 6];
    s.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"ping\x00\xff");
    // Without Upgrade, the same path is a plain request.
    let plain = exchange(&g.http, b"GET /ws HTTP/1.1\r\nHost: framing.example.com\r\nConnection: close\r\n\r\n");
    assert!(plain.starts_with("HTTP/1.1 426 "), "{plain}");
}

#[test]
fn https_backends_and_http2_clients() {
    if !have_tools() {
        testkit::skip("needs curl and openssl");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A TLS backend: openssl's test server, answering HTTP/1.0 until it closes.
    let (crt, key) = cert(dir.path(), "backend.local");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = Command::new("openssl")
        .args(["s_server", "-quiet", "-accept", &port.to_string(), "-cert", &crt, "-key", &key, "-www"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let manifests_dir = dir.path().join("m");
    std::fs::create_dir(&manifests_dir).unwrap();
    framing_manifests(&manifests_dir, framing_backend(), Some(port));
    let (fcrt, fkey) = cert(dir.path(), "framing.example.com");
    std::fs::write(
        manifests_dir.join("tls.yaml"),
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: framing-tls, namespace: t}}\ntype: kubernetes.io/tls\ndata: {{tls.crt: {}, tls.key: {}}}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: framing-tls, namespace: t}}\nspec:\n  tls: [{{hosts: [framing.example.com], secretName: framing-tls}}]\n",
            b64(&fcrt),
            b64(&fkey)
        ),
    )
    .unwrap();
    let g = serve(&manifests_dir);
    let (code, body) = curl(&["-H", "Host: tls.example.com", &format!("http://{}/", g.http)]);
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("s_server"), "the TLS backend's page: {body}");
    // The same from an HTTP/2 client.
    let (code, body) = curl(&["--http2-prior-knowledge", "-H", "Host: tls.example.com", &format!("http://{}/", g.http)]);
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("s_server"), "the TLS backend's page over HTTP/2: {body}");
    // HTTP/2 clients: over TLS (ALPN h2) and in cleartext with prior knowledge.
    let (code, body) =
        curl(&["--http2-prior-knowledge", "-H", "Host: framing.example.com", "-H", "X-Forwarded-Proto: forged", &format!("http://{}/h2c", g.http)]);
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("echo GET /h2c HTTP/1.1") && body.to_ascii_lowercase().contains("x-forwarded-proto: http\n") && !body.contains("forged"), "{body}");
    let https_port = g.https.rsplit(':').next().unwrap().to_owned();
    let out = Command::new("curl")
        .args([
            "-sk",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            "--resolve",
            &format!("framing.example.com:{https_port}:127.0.0.1"),
            &format!("https://framing.example.com:{https_port}/h2"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200");
}

#[test]
fn grpcs_backends_get_http2_over_tls() {
    if !have_tools() {
        testkit::skip("needs curl and openssl");
        return;
    }
    // The backend: a second proxy serving HTTPS (ALPN h2) with a certificate for every name,
    // routing to the framing backend.
    let inner_dir = tempfile::tempdir().unwrap();
    framing_manifests(inner_dir.path(), framing_backend(), None);
    let (crt, key) = cert(inner_dir.path(), "inner.local");
    std::fs::write(
        inner_dir.path().join("tls.yaml"),
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: inner-tls, namespace: t}}\ntype: kubernetes.io/tls\ndata: {{tls.crt: {}, tls.key: {}}}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: inner-tls, namespace: t}}\nspec:\n  tls: [{{secretName: inner-tls}}]\n",
            b64(&crt),
            b64(&key)
        ),
    )
    .unwrap();
    let inner = serve(inner_dir.path());
    let inner_port = inner.https.rsplit(':').next().unwrap().to_owned();
    // The proxy under test: backend-protocol GRPCS to the inner one.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("m.yaml"),
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: podnet, annotations: {{ingressclass.kubernetes.io/is-default-class: 'true'}}}}\nspec: {{controller: k8s.io/ingress-nginx}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: grpc, namespace: t}}\nspec: {{ports: [{{name: grpc, port: 443}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: grpc-1, namespace: t, labels: {{kubernetes.io/service-name: grpc}}}}\naddressType: IPv4\nendpoints: [{{addresses: [127.0.0.1]}}]\nports: [{{name: grpc, port: {inner_port}}}]\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: grpc, namespace: t, annotations: {{nginx.ingress.kubernetes.io/backend-protocol: GRPCS}}}}\nspec:\n  rules:\n  - host: framing.example.com\n    http:\n      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: grpc, port: {{number: 443}}}}}}}}]\n"
        ),
    )
    .unwrap();
    let g = serve(dir.path());
    let (code, body) = curl(&["--http2-prior-knowledge", "-H", "Host: framing.example.com", &format!("http://{}/svc.Echo/Call", g.http)]);
    assert_eq!(code, "200", "{body}");
    // The inner proxy got it over TLS (its X-Forwarded-Proto) and passed it on.
    assert!(body.starts_with("echo GET /svc.Echo/Call HTTP/1.1") && body.to_ascii_lowercase().contains("x-forwarded-proto: https\n"), "{body}");
    // An HTTP/1 client cannot reach a gRPC backend: 502, as said.
    assert_eq!(curl(&["-H", "Host: framing.example.com", &format!("http://{}/svc.Echo/Call", g.http)]).0, "502");
}

#[test]
fn slow_clients_are_cut_off_and_hold_no_one_else_up() {
    if !have_tools() {
        testkit::skip("needs curl and openssl");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    framing_manifests(dir.path(), framing_backend(), None);
    let g = serve_with(dir.path(), &["--http", "127.0.0.1:0", "--no-access-log", "--client-header-timeout", "2"]);
    let addr = g.http.clone();
    // Slowloris: 300 connections trickling a head byte by byte.
    let mut slow: Vec<std::net::TcpStream> = (0..300).map(|_| std::net::TcpStream::connect(&addr).unwrap()).collect();
    for s in &mut slow {
        s.write_all(b"GET / HTTP/1.1\r\nHost: framing.example.com\r\nX-Slow: ").unwrap();
    }
    let start = std::time::Instant::now();
    // Others are served meanwhile.
    let (code, _) = curl(&["-H", "Host: framing.example.com", &format!("http://{addr}/fast")]);
    assert_eq!(code, "200");
    assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
    // Still trickling after the header timeout: the proxy has closed them.
    let mut closed = 0;
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(500));
        for s in &mut slow {
            let _ = s.write_all(b"a");
        }
    }
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut b = [0u8; 16];
        if matches!(s.read(&mut b), Ok(0) | Err(_)) && s.write_all(b"a").and_then(|()| s.write_all(b"a")).is_err() {
            closed += 1;
        }
    }
    let rss: u64 = std::fs::read_to_string(format!("/proc/{}/status", g.child.id()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    drop(g);
    assert_eq!(closed, slow.len(), "every slow connection is closed");
    assert!(rss < 64 * 1024, "bounded memory: {rss} kB");
}

/// With no flags, `gateway serve` acts as ingress-nginx does by default: Ingresses of class
/// `nginx` are served without an IngressClass object, and at start it says which Ingresses it
/// serves and why it ignores the others.
#[test]
fn ingress_nginx_class_by_default_and_ignored_ingresses_are_named() {
    let b = backend("web");
    let dir = tempfile::tempdir().unwrap();
    let service = |name: &str| {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: t}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: t, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nendpoints: [{{addresses: [127.0.0.1]}}]\nports: [{{name: http, port: {}}}]\n",
            b.port()
        )
    };
    let ingress = |name: &str, class: &str| {
        format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: t}}\nspec:\n{class}  rules:\n  - host: {name}.example.com\n    http:\n      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]\n"
        )
    };
    let yaml =
        [service("web"), ingress("plain", "  ingressClassName: nginx\n"), ingress("other", "  ingressClassName: traefik\n"), ingress("classless", "")].concat();
    std::fs::write(dir.path().join("all.yaml"), yaml).unwrap();
    let g = serve_with(dir.path(), &["--http", "127.0.0.1:0"]);
    let (code, body) = curl(&["-H", "Host: plain.example.com", &format!("http://{}/x", g.http)]);
    assert_eq!(code, "200", "{body}");
    assert!(body.starts_with("web GET /x"), "{body}");
    assert_eq!(curl(&["-H", "Host: other.example.com", &format!("http://{}/x", g.http)]).0, "404");
    let log = g.started.concat();
    assert!(log.contains("serving Ingress t/plain"), "{log}");
    assert!(log.contains("ignoring Ingress t/other: ingressClassName \"traefik\": no IngressClass traefik"), "{log}");
    assert!(log.contains("ignoring Ingress t/classless: no ingressClassName"), "{log}");
}

/// A TLS Secret whose certificate does not match its key (or does not parse) is reported, the
/// reload is not successful, and its host gets the default certificate (ingress-nginx's fake
/// one) rather than a failed handshake.
#[test]
fn a_broken_tls_secret_falls_back_to_the_fake_certificate() {
    let b = backend("web");
    let dir = tempfile::tempdir().unwrap();
    let (crt_a, _) = cert(dir.path(), "a.example.com");
    let (_, key_b) = cert(dir.path(), "b.example.com");
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: t}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-1, namespace: t, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nendpoints: [{{addresses: [127.0.0.1]}}]\nports: [{{name: http, port: {}}}]\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: mismatched, namespace: t}}\ntype: kubernetes.io/tls\ndata: {{tls.crt: {}, tls.key: {}}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: garbage, namespace: t}}\ntype: kubernetes.io/tls\ndata: {{tls.crt: {}, tls.key: {}}}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: tls, namespace: t}}\nspec:\n  ingressClassName: nginx\n  tls:\n  - {{hosts: [a.example.com], secretName: mismatched}}\n  - {{hosts: [c.example.com], secretName: garbage}}\n  rules:\n  - host: a.example.com\n    http:\n      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]\n",
        b.port(),
        b64(&crt_a),
        b64(&key_b),
        // A PEM block whose contents are not a certificate.
        b64_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"),
        b64(&key_b),
    );
    std::fs::write(dir.path().join("all.yaml"), yaml).unwrap();
    let g = serve_with(dir.path(), &["--https", "127.0.0.1:0", "--metrics", "127.0.0.1:0"]);
    let log = g.started.concat();
    assert!(log.contains("Secret t/mismatched: certificate and private key does not have a matching public key"), "{log}");
    assert!(log.contains("Secret t/garbage"), "{log}");
    let port = g.https.rsplit(':').next().unwrap().to_owned();
    let out = Command::new("curl")
        .args(["-s", "-k", "-v", "--max-time", "5", "--resolve", &format!("a.example.com:{port}:127.0.0.1"), &format!("https://a.example.com:{port}/x")])
        .output()
        .unwrap();
    let (body, verbose) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(body.starts_with("web GET /x"), "{body}{verbose}");
    assert!(verbose.contains("Kubernetes Ingress Controller Fake Certificate"), "{verbose}");
    let metrics = curl(&[&format!("http://{}/metrics", g.metrics)]).1;
    assert!(metrics.lines().any(|l| l.starts_with("nginx_ingress_controller_config_last_reload_successful") && l.ends_with(" 0")), "{metrics}");
}

fn b64_text(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    std::fs::write(&path, text).unwrap();
    b64(path.to_str().unwrap())
}

/// Requests are balanced per request over every ready endpoint, also over one keep-alive client
/// connection (ingress-nginx's round robin), for Ingress backends and HTTPRoute backends alike,
/// and whatever else the proxy counts between them (canary rolls, weighted choices).
#[test]
fn every_request_takes_the_next_endpoint_over_one_connection() {
    if !have_tools() {
        testkit::skip("needs curl and openssl");
        return;
    }
    let names = ["e1", "e2", "e3", "e4"];
    let addrs: Vec<SocketAddr> = names.iter().map(|n| backend(n)).collect();
    let slices = |svc: &str, eps: &[SocketAddr]| -> String {
        eps.iter()
            .enumerate()
            .map(|(i, a)| format!("---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {svc}-{i}, namespace: t, labels: {{kubernetes.io/service-name: {svc}}}}}\naddressType: IPv4\nendpoints: [{{addresses: [127.0.0.1]}}]\nports: [{{name: http, port: {}}}]\n", a.port()))
            .collect()
    };
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: three, namespace: t}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: one, namespace: t}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n{}---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: rr, namespace: t}}\nspec:\n  ingressClassName: nginx\n  rules:\n  - host: rr.example.com\n    http:\n      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: three, port: {{number: 80}}}}}}}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: podnet}}\nspec: {{controllerName: podnet.io/gateway-controller}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: t}}\nspec:\n  gatewayClassName: podnet\n  listeners: [{{name: http, port: 80, protocol: HTTP, hostname: route.example.com}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: split, namespace: t}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - backendRefs: [{{name: three, port: 80, weight: 1}}, {{name: one, port: 80, weight: 1}}]\n",
        slices("three", &addrs[..2]),
        slices("one", &addrs[2..]),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("all.yaml"), yaml).unwrap();
    let g = serve_with(dir.path(), &["--http", "127.0.0.1:0", "--no-access-log"]);
    // One curl, one connection, twelve requests.
    let answered = |host: &str| -> Vec<String> {
        let urls: Vec<String> = (0..12).map(|i| format!("http://{}/r{i}", g.http)).collect();
        let out = Command::new("curl").args(["-s", "-H", &format!("Host: {host}")]).args(&urls).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(" GET /r")).map(|l| l.split(' ').next().unwrap().to_owned()).collect()
    };
    let ingress = answered("rr.example.com");
    assert_eq!(ingress.len(), 12, "{ingress:?}");
    for n in &names[..2] {
        assert_eq!(ingress.iter().filter(|a| a == n).count(), 6, "{n} takes its turn: {ingress:?}");
    }
    let route = answered("route.example.com");
    assert_eq!(route.len(), 12, "{route:?}");
    for n in names {
        assert!(route.iter().any(|a| a == n), "{n} never answered the route: {route:?}");
    }
}
