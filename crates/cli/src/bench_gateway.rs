//! `podnet bench gateway`: the HTTP(S) proxy beside nginx and haproxy (Debian's), each with one
//! worker pinned to core 0, the same route and the same request headers added (ingress-nginx's
//! X-Forwarded-* set and X-Request-ID), the same backend (an nginx answering from memory, on core 1),
//! wrk on core 1, in a private network namespace: keep-alive RPS and p99, over TLS, with
//! `Connection: close`; then podnet at 1000 Ingresses: memory, how long a route change takes to
//! be served, and failed requests while 100 changes happen under load.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use dataplane::netns::NamedNetns;

use crate::bench::{Running, in_ns};

#[derive(Args)]
pub struct GatewayBenchArgs {
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Rounds: every proxy runs every mode once per round; medians are reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// wrk connections.
    #[arg(long, default_value_t = 50)]
    connections: u32,
    /// Ingresses for the scale runs.
    #[arg(long, default_value_t = 1000)]
    routes: usize,
    /// Do not run nginx and haproxy.
    #[arg(long)]
    no_peers: bool,
}

const BACKEND: &str = "127.0.0.1:18080";

/// wrk's requests per second, p99 (ms) and errors ("non-2xx" plus socket errors).
struct Wrk {
    rps: f64,
    p99_ms: f64,
    errors: u64,
}

fn wrk(ns: &str, url: &str, host: &str, seconds: u64, connections: u32, close: bool) -> Result<Wrk> {
    let mut c = in_ns(ns, 1, "wrk");
    c.args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s"), "--latency", "-H", &format!("Host: {host}")]);
    if close {
        c.args(["-H", "Connection: close"]);
    }
    let out = c.arg(url).output().context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps =
        text.lines().find_map(|l| l.trim().strip_prefix("Requests/sec:")).and_then(|v| v.trim().parse().ok()).with_context(|| format!("wrk said: {text}"))?;
    let p99 = text.lines().find_map(|l| l.trim().strip_prefix("99%")).map(|v| v.trim().to_owned()).unwrap_or_default();
    let p99_ms = if let Some(us) = p99.strip_suffix("us") {
        us.parse::<f64>().unwrap_or(f64::NAN) / 1000.0
    } else if let Some(ms) = p99.strip_suffix("ms") {
        ms.parse().unwrap_or(f64::NAN)
    } else if let Some(s) = p99.strip_suffix('s') {
        s.parse::<f64>().unwrap_or(f64::NAN) * 1000.0
    } else {
        f64::NAN
    };
    let count = |prefix: &str| text.lines().find_map(|l| l.trim().strip_prefix(prefix)).and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0);
    let socket_errors: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        .map(|v| v.split(',').filter_map(|p| p.split_whitespace().nth(1)?.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    Ok(Wrk { rps, p99_ms, errors: count("Non-2xx or 3xx responses:") + socket_errors })
}

fn ingress(i: usize, path: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: r{i}, namespace: bench}}\nspec:\n  rules:\n  - host: h{i}.bench.local\n    http:\n      paths: [{{path: {path}, pathType: Prefix, backend: {{service: {{name: backend, port: {{number: 80}}}}}}}}]\n"
    )
}

fn manifests(routes: usize, tls: Option<(&str, &str)>, changed_path: &str) -> String {
    let mut out = String::from(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: podnet, annotations: {ingressclass.kubernetes.io/is-default-class: 'true'}}\nspec: {controller: k8s.io/ingress-nginx}\n",
    );
    out.push_str("---\napiVersion: v1\nkind: Service\nmetadata: {name: backend, namespace: bench}\nspec: {ports: [{name: http, port: 80}]}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: backend-1, namespace: bench, labels: {kubernetes.io/service-name: backend}}\naddressType: IPv4\nendpoints: [{addresses: [127.0.0.1]}]\nports: [{name: http, port: 18080}]\n");
    // The measured route: host bench.local, path /api, over TLS too (no redirect).
    out.push_str("---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: bench\n  namespace: bench\n  annotations: {nginx.ingress.kubernetes.io/ssl-redirect: 'false'}\nspec:\n  tls: [{hosts: [bench.local], secretName: bench-tls}]\n  rules:\n  - host: bench.local\n    http:\n      paths: [{path: /api, pathType: Prefix, backend: {service: {name: backend, port: {number: 80}}}}]\n");
    if let Some((crt, key)) = tls {
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: bench-tls, namespace: bench}}\ntype: kubernetes.io/tls\ndata: {{tls.crt: {crt}, tls.key: {key}}}\n"
        );
    }
    for i in 0..routes {
        out.push_str(&ingress(i, if i == 0 { changed_path } else { "/" }));
    }
    out
}

fn b64(path: &Path) -> Result<String> {
    Ok(String::from_utf8(Command::new("base64").args(["-w0", &path.to_string_lossy()]).output()?.stdout)?)
}

fn podnet_gateway(ns: &str, dir: &Path) -> Result<(Running, String, String)> {
    let exe = std::env::current_exe()?;
    let mut child = in_ns(ns, 0, &exe.to_string_lossy())
        .args(["gateway", "serve", "-f", &dir.to_string_lossy(), "--http", "127.0.0.1:18001", "--https", "127.0.0.1:18443", "--no-access-log"])
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stderr = BufReader::new(child.stderr.take().context("stderr")?);
    let mut line = String::new();
    while !line.contains("serving on") {
        line.clear();
        if stderr.read_line(&mut line)? == 0 {
            bail!("podnet gateway serve exited");
        }
    }
    // The access log goes on; drop it.
    std::thread::spawn(move || for _ in stderr.lines() {});
    Ok((Running(child), "http://127.0.0.1:18001".into(), "https://127.0.0.1:18443".into()))
}

/// Waits until something accepts connections on 127.0.0.1:`port` in the namespace.
fn wait_listening(ns: &str, port: u16) -> Result<()> {
    for _ in 0..100 {
        let out = in_ns(ns, 1, "curl").args(["-s", "-o", "/dev/null", "--max-time", "1", &format!("http://127.0.0.1:{port}/")]).output()?;
        // 7: connection refused; anything else means a listener answered.
        if out.status.code() != Some(7) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on 127.0.0.1:{port}")
}

fn rss_mb(pid: u32) -> f64 {
    crate::bench::proc_status_kib(&pid.to_string(), "VmRSS").map_or(f64::NAN, |kb| kb / 1024.0)
}

fn row(name: &str, w: &Wrk) {
    outln!("  {name:<34} {:>9.0} rps   p99 {:>7.2} ms   errors {}", w.rps, w.p99_ms, w.errors);
}

pub fn run(a: GatewayBenchArgs) -> Result<ExitCode> {
    if !nix::unistd::geteuid().is_root() {
        bail!("podnet bench gateway needs root (it makes a network namespace)");
    }
    let netns = NamedNetns::new(&format!("podnet-bench-gw-{}", std::process::id()))?;
    let ns = netns.name();
    let out = Command::new("ip").args(["netns", "exec", ns, "ip", "link", "set", "lo", "up"]).output()?;
    if !out.status.success() {
        bail!("ip link set lo up: {}", String::from_utf8_lossy(&out.stderr));
    }
    let tmp = tempfile::tempdir()?;
    let (crt, key) = (tmp.path().join("c.pem"), tmp.path().join("k.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=bench.local",
            "-keyout",
            &key.to_string_lossy(),
            "-out",
            &crt.to_string_lossy(),
        ])
        .output()?;
    if !made.status.success() {
        bail!("openssl: {}", String::from_utf8_lossy(&made.stderr));
    }
    // The backend: nginx answering from memory, the fastest responder at hand, on core 1 beside wrk.
    let backend_conf = tmp.path().join("backend.conf");
    std::fs::write(
        &backend_conf,
        format!(
            "daemon off; worker_processes 1; pid {0}/backend.pid; error_log stderr error;\nevents {{ worker_connections 4096; }}\nhttp {{ access_log off; server {{ listen {BACKEND}; keepalive_requests 1000000; location / {{ return 200 \"ok\\n\"; }} }} }}\n",
            tmp.path().display()
        ),
    )?;
    let _backend = Running(
        in_ns(ns, 1, "nginx")
            .args(["-c", &backend_conf.to_string_lossy(), "-e", "stderr"])
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx (apt-get install nginx-light)")?,
    );
    wait_listening(ns, 18080)?;

    let dir = tmp.path().join("manifests");
    std::fs::create_dir_all(&dir)?;
    let tls = (b64(&crt)?, b64(&key)?);
    std::fs::write(dir.join("m.yaml"), manifests(0, Some((&tls.0, &tls.1)), "/"))?;
    outln!(
        "One route (Host bench.local, /api), backend nginx on core 1, proxies on core 0, wrk -c{} on core 1; {} rounds of {} s runs, the proxies taking turns; medians:",
        a.connections,
        a.rounds,
        a.seconds
    );
    // All proxies listen at once (idle ones cost nothing) so that the runs can take turns:
    // this machine's speed drifts more between minutes than between proxies.
    let mut proxies: Vec<(&str, String, String, Running)> = Vec::new();
    let (podnet, http, https) = podnet_gateway(ns, &dir)?;
    proxies.push(("podnet", http, https, podnet));
    if !a.no_peers {
        let nginx_conf = tmp.path().join("nginx.conf");
        std::fs::write(
            &nginx_conf,
            format!(
                "daemon off; worker_processes 1; pid {d}/nginx.pid; error_log stderr error;\nevents {{ worker_connections 4096; }}\nhttp {{ access_log off; upstream backend {{ server {BACKEND}; keepalive 64; }}\n server {{ listen 127.0.0.1:18101; listen 127.0.0.1:18543 ssl; server_name bench.local; ssl_certificate {crt}; ssl_certificate_key {key}; keepalive_requests 1000000;\n  location /api {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header Host $host; proxy_set_header X-Request-ID $request_id; proxy_set_header X-Real-IP $remote_addr; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Host $host; proxy_set_header X-Forwarded-Port $server_port; proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Scheme $scheme; proxy_set_header X-Scheme $scheme; }} }} }}\n",
                d = tmp.path().display(),
                crt = crt.display(),
                key = key.display()
            ),
        )?;
        let nginx = Running(in_ns(ns, 0, "nginx").args(["-c", &nginx_conf.to_string_lossy(), "-e", "stderr"]).stderr(Stdio::null()).spawn()?);
        wait_listening(ns, 18101)?;
        proxies.push(("nginx", "http://127.0.0.1:18101".into(), "https://127.0.0.1:18543".into(), nginx));
        let pem = tmp.path().join("haproxy.pem");
        std::fs::write(&pem, [std::fs::read(&crt)?, std::fs::read(&key)?].concat())?;
        let haproxy_conf = tmp.path().join("haproxy.cfg");
        std::fs::write(
            &haproxy_conf,
            format!(
                "global\n  nbthread 1\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  option http-keep-alive\nfrontend web\n  bind 127.0.0.1:18201\n  bind 127.0.0.1:18643 ssl crt {pem}\n  acl bench hdr(host) -i bench.local\n  acl api path_beg /api\n  use_backend backend if bench api\nbackend backend\n  http-reuse always\n  option forwardfor\n  http-request set-header X-Request-ID %[uuid]\n  http-request set-header X-Real-IP %[src]\n  http-request set-header X-Forwarded-Host %[req.hdr(host)]\n  http-request set-header X-Forwarded-Port %[dst_port]\n  http-request set-header X-Forwarded-Proto http if !{{ ssl_fc }}\n  http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}\n  http-request set-header X-Forwarded-Scheme %[req.hdr(x-forwarded-proto)]\n  http-request set-header X-Scheme %[req.hdr(x-forwarded-proto)]\n  server b1 {BACKEND}\n",
                pem = pem.display()
            ),
        )?;
        let haproxy = Running(
            in_ns(ns, 0, "haproxy")
                .args(["-f", &haproxy_conf.to_string_lossy(), "-db"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting haproxy (apt-get install haproxy)")?,
        );
        wait_listening(ns, 18201)?;
        proxies.push(("haproxy", "http://127.0.0.1:18201".into(), "https://127.0.0.1:18643".into(), haproxy));
    }
    std::thread::sleep(Duration::from_millis(300));
    let modes = [("keep-alive", false, false), ("TLS keep-alive", true, false), ("Connection: close", false, true)];
    let mut runs: Vec<(String, Vec<Wrk>)> = Vec::new();
    for _ in 0..a.rounds {
        for (mode, tls, close) in modes {
            for (name, http, https, _) in &proxies {
                let base = if tls { https } else { http };
                let w = wrk(ns, &format!("{base}/api/x"), "bench.local", a.seconds, a.connections, close)?;
                let key = format!("{name} {mode}");
                match runs.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, v)) => v.push(w),
                    None => runs.push((key, vec![w])),
                }
            }
        }
    }
    drop(proxies);
    let mut medians = Vec::new();
    for (key, ws) in &runs {
        let m = Wrk {
            rps: crate::bench::median(ws.iter().map(|w| w.rps).collect()),
            p99_ms: crate::bench::median(ws.iter().map(|w| w.p99_ms).collect()),
            errors: ws.iter().map(|w| w.errors).sum(),
        };
        row(key, &m);
        medians.push((key.clone(), m));
    }
    if !a.no_peers {
        let get = |n: &str| medians.iter().find(|(k, _)| k == n).map_or((f64::NAN, f64::NAN), |(_, w)| (w.rps, w.p99_ms));
        for (mode, _, _) in modes {
            let (p, n) = (get(&format!("podnet {mode}")), get(&format!("nginx {mode}")));
            outln!("  podnet / nginx {mode}: RPS {:.2}x, p99 {:.2}x", p.0 / n.0, p.1 / n.1);
        }
    }

    // Scale: N Ingresses.
    std::fs::write(dir.join("m.yaml"), manifests(a.routes, Some((&tls.0, &tls.1)), "/"))?;
    let (g, http, _) = podnet_gateway(ns, &dir)?;
    std::thread::sleep(Duration::from_millis(300));
    let w = wrk(ns, &format!("{http}/api/x"), "bench.local", a.seconds.min(5), a.connections, false)?;
    outln!("{} Ingresses: podnet {:.1} MB RSS; keep-alive {:.0} rps, p99 {:.2} ms", a.routes, rss_mb(g.0.id()), w.rps, w.p99_ms);
    // A route change: h0's path moves; served when a request to the new path is routed.
    let probe = |path: &str| -> Result<u16> {
        let out =
            in_ns(ns, 1, "curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: h0.bench.local", &format!("{http}{path}")]).output()?;
        Ok(String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0))
    };
    let mut latencies = Vec::new();
    for k in 0..5 {
        let path = format!("/moved{k}");
        std::fs::write(dir.join("m.yaml.tmp"), manifests(a.routes, Some((&tls.0, &tls.1)), &path))?;
        let t = Instant::now();
        std::fs::rename(dir.join("m.yaml.tmp"), dir.join("m.yaml"))?;
        while probe(&path)? != 200 {
            if t.elapsed() > Duration::from_secs(5) {
                bail!("the change to {path} was not served in 5 s");
            }
        }
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
    }
    outln!("  route change to served: {}", latencies.iter().map(|l| format!("{l:.0} ms")).collect::<Vec<_>>().join(", "));
    // 100 changes under load.
    let (ns_name, url) = (ns.to_owned(), format!("{http}/api/x"));
    let seconds = 8;
    let load = std::thread::spawn(move || wrk(&ns_name, &url, "bench.local", seconds, 20, false));
    std::thread::sleep(Duration::from_millis(500));
    for k in 0..100 {
        std::fs::write(dir.join("m.yaml.tmp"), manifests(a.routes, Some((&tls.0, &tls.1)), &format!("/c{k}")))?;
        std::fs::rename(dir.join("m.yaml.tmp"), dir.join("m.yaml"))?;
        std::thread::sleep(Duration::from_millis(60));
    }
    let w = load.join().map_err(|_| anyhow::anyhow!("the load thread panicked"))??;
    outln!("  100 route changes under load: {:.0} rps, p99 {:.2} ms, {} failed requests", w.rps, w.p99_ms, w.errors);
    drop(g);
    Ok(ExitCode::SUCCESS)
}
