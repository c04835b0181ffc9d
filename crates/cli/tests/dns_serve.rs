//! `podnet dns serve` with a real client (`dig`) on loopback: records over UDP and TCP, a file
//! change answered within 100 ms, forwarding through a second podnet server as the upstream,
//! its cache outliving the upstream, a quick SERVFAIL without one, no open resolver, and
//! garbage answered without harm.

#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a line number

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLUSTER: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: production}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: order-service, namespace: production}\nspec: {clusterIP: 10.96.0.50, ports: [{name: http, port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: production}\nspec: {clusterIP: None, ports: [{name: postgres, port: 5432}]}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: db-1, namespace: production, labels: {kubernetes.io/service-name: db}}\naddressType: IPv4\nendpoints: [{addresses: [10.244.1.7], hostname: db-0}]\nports: [{name: postgres, port: 5432}]\n";

/// A running `podnet dns serve`, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// The line it printed when it started.
    banner: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_podnet"))
        .args(["dns", "serve", "-f", dir.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The banner names the address; a line said before it (a warning) is not the banner.
    let mut line = String::new();
    let mut before = String::new();
    let mut stderr = BufReader::new(child.stderr.as_mut().unwrap());
    while stderr.read_line(&mut line).unwrap() > 0 && !line.starts_with("podnet dns: serving ") {
        before.push_str(&std::mem::take(&mut line));
    }
    let addr = line
        .split(" on ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?} (before it: {before:?})"));
    Server { child, addr, banner: line }
}

fn have_dig() -> bool {
    Command::new("dig").arg("-v").output().is_ok()
}

/// `dig +short`-like: the answer lines' data, and the status.
fn dig(server: &Server, args: &[&str]) -> (String, Vec<String>) {
    let out = Command::new("dig")
        .args([&format!("@{}", server.addr.ip()), "-p", &server.addr.port().to_string(), "+tries=1", "+time=2", "+noall", "+comments", "+answer"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let status = text.split("status: ").nth(1).and_then(|s| s.split(',').next()).unwrap_or("none").to_owned();
    let answers =
        text.lines().filter(|l| !l.starts_with(';') && !l.trim().is_empty()).map(|l| l.split_whitespace().skip(4).collect::<Vec<_>>().join(" ")).collect();
    (status, answers)
}

/// The tests of this file run one at a time: the 100 ms one measures the server, not the
/// others' load on this 2-core machine.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn records_over_udp_and_tcp_and_changes_within_100_ms() {
    let _serial = serial();
    if !have_dig() {
        testkit::skip("no dig");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cluster.yaml"), CLUSTER).unwrap();
    let s = serve(dir.path(), &["--upstream", "127.0.0.1:9"]);
    assert_eq!(dig(&s, &["order-service.production.svc.cluster.local", "A"]), ("NOERROR".into(), vec!["10.96.0.50".to_string()]));
    assert_eq!(dig(&s, &["+tcp", "_postgres._tcp.db.production.svc.cluster.local", "SRV"]).1, ["0 100 5432 db-0.db.production.svc.cluster.local."]);
    assert_eq!(dig(&s, &["-x", "10.96.0.50"]).1, ["order-service.production.svc.cluster.local."]);
    assert_eq!(dig(&s, &["missing.production.svc.cluster.local", "A"]).0, "NXDOMAIN");
    assert_eq!(dig(&s, &["dns-version.cluster.local", "TXT"]).1, ["\"1.1.0\""]);

    // A new Service in the files: answered within 100 ms of the write. Three changes, one
    // Service each: one answered in time passes (a 2-core machine running the other suites can
    // stall a process for longer now and then); a server that reloads slowly fails all three.
    let mut files = CLUSTER.to_owned();
    let mut took = Vec::new();
    for (i, name) in ["payments", "billing", "shipping"].iter().enumerate() {
        files.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: production}}\nspec: {{clusterIP: 10.96.0.{}, ports: [{{port: 80}}]}}\n",
            77 + i
        ));
        std::fs::write(dir.path().join("cluster.yaml.tmp"), &files).unwrap();
        std::fs::rename(dir.path().join("cluster.yaml.tmp"), dir.path().join("cluster.yaml")).unwrap();
        let written = std::time::Instant::now();
        let want = vec![format!("10.96.0.{}", 77 + i)];
        while dig(&s, &[&format!("{name}.production.svc.cluster.local"), "A"]).1 != want {
            assert!(written.elapsed() < Duration::from_secs(5), "{name} never answered");
            std::thread::sleep(Duration::from_millis(10));
        }
        took.push(written.elapsed());
        if took[i] < Duration::from_millis(100) {
            break;
        }
    }
    assert!(took.iter().any(|t| *t < Duration::from_millis(100)), "no change answered within 100 ms of its write: {took:?}");
    // A file that no longer loads keeps the last good view. Written whole (renamed into place):
    // a truncating write can be read empty in between, and an empty file is a valid, empty view.
    std::fs::write(dir.path().join("cluster.yaml.tmp"), "kind: Service\nmetadata: {name: [oops\n").unwrap();
    std::fs::rename(dir.path().join("cluster.yaml.tmp"), dir.path().join("cluster.yaml")).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(dig(&s, &["payments.production.svc.cluster.local", "A"]).1, ["10.96.0.77"]);
}

#[test]
fn other_names_are_forwarded_cached_and_fail_fast_without_upstream() {
    let _serial = serial();
    if !have_dig() {
        testkit::skip("no dig");
        return;
    }
    // The upstream: another podnet serving the zone `upstream.test`.
    let up_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        up_dir.path().join("c.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec: {clusterIP: 10.96.5.5, ports: [{port: 80}]}\n",
    )
    .unwrap();
    let upstream = serve(up_dir.path(), &["--zone", "upstream.test", "--upstream", "127.0.0.1:9"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cluster.yaml"), CLUSTER).unwrap();
    let s = serve(dir.path(), &["--upstream", &upstream.addr.to_string()]);

    assert_eq!(dig(&s, &["web.default.svc.upstream.test", "A"]), ("NOERROR".into(), vec!["10.96.5.5".to_string()]));
    assert_eq!(dig(&s, &["nope.default.svc.upstream.test", "A"]).0, "NXDOMAIN");
    // The upstream goes away: cached answers (positive and negative) live on for their TTL.
    drop(upstream);
    assert_eq!(dig(&s, &["web.default.svc.upstream.test", "A"]).1, ["10.96.5.5"]);
    assert_eq!(dig(&s, &["nope.default.svc.upstream.test", "A"]).0, "NXDOMAIN");
    // Anything else: SERVFAIL, at once (the upstream port refuses), never a hang.
    let t = Instant::now();
    assert_eq!(dig(&s, &["other.default.svc.upstream.test", "A"]).0, "SERVFAIL");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    // Cluster names never needed the upstream.
    assert_eq!(dig(&s, &["order-service.production.svc.cluster.local", "A"]).1, ["10.96.0.50"]);
}

#[test]
fn no_open_resolver_and_garbage_is_answered_harmlessly() {
    let _serial = serial();
    if !have_dig() {
        testkit::skip("no dig");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cluster.yaml"), CLUSTER).unwrap();
    let s = serve(dir.path(), &["--upstream", "127.0.0.1:9", "--recursion-from", "10.0.0.0/8"]);
    assert_eq!(dig(&s, &["example.com", "A"]).0, "REFUSED");
    assert_eq!(dig(&s, &["order-service.production.svc.cluster.local", "A"]).1, ["10.96.0.50"]);
    assert_eq!(dig(&s, &["order-service.production.svc.cluster.local", "ANY"]).0, "NOTIMP");

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut garbage = vec![0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    garbage.extend([0x3f; 300]); // a label longer than 63 bytes
    sock.send_to(&garbage, s.addr).unwrap();
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!((buf[0], buf[1], buf[3] & 0x0f), (0xab, 0xcd, 1), "FORMERR with the id: {:?}", &buf[..n]);
    // And the server still answers.
    assert_eq!(dig(&s, &["order-service.production.svc.cluster.local", "A"]).1, ["10.96.0.50"]);
}

/// One HTTP GET on loopback: status line and body.
fn http_get(addr: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

#[test]
fn health_ready_and_coredns_metrics() {
    let _serial = serial();
    if !have_dig() {
        testkit::skip("no dig");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cluster.yaml"), CLUSTER).unwrap();
    let s = serve(dir.path(), &["--upstream", "127.0.0.1:9", "--http", "127.0.0.1:0"]);
    let http = s.banner.split("http://").nth(1).unwrap().trim().to_owned();
    assert_eq!(http_get(&http, "/health"), ("HTTP/1.1 200 OK".into(), "OK".into()));
    assert_eq!(http_get(&http, "/ready").0, "HTTP/1.1 200 OK");
    dig(&s, &["order-service.production.svc.cluster.local", "A"]);
    dig(&s, &["missing.production.svc.cluster.local", "A"]);
    dig(&s, &["+tcp", "order-service.production.svc.cluster.local", "AAAA"]);
    let (status, metrics) = http_get(&http, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    for line in [
        "coredns_dns_requests_total{server=\"dns://:53\",zone=\".\",view=\"\",proto=\"udp\",family=\"1\",type=\"A\"} 2",
        "coredns_dns_requests_total{server=\"dns://:53\",zone=\".\",view=\"\",proto=\"tcp\",family=\"1\",type=\"AAAA\"} 1",
        "coredns_dns_responses_total{server=\"dns://:53\",zone=\".\",view=\"\",rcode=\"NXDOMAIN\",plugin=\"\"} 1",
        "coredns_dns_request_duration_seconds_count{server=\"dns://:53\",zone=\".\",view=\"\",type=\"A\"} 2",
        "coredns_dns_request_duration_seconds_bucket{server=\"dns://:53\",zone=\".\",view=\"\",type=\"A\",le=\"+Inf\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    assert!(metrics.contains("# TYPE coredns_cache_hits_total counter"));
}

/// The seed's shop declares its Services without a ClusterIP: the offline server answers with the
/// address the lab gives each (one deterministic allocator for both), and `proxy render` has a
/// frontend for it, instead of NXDOMAIN and a silently missing Service.
#[test]
fn services_without_a_cluster_ip_get_the_address_the_lab_gives_them() {
    let _serial = serial();
    if !have_dig() {
        testkit::skip("no dig");
        return;
    }
    let shop = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop");
    let (services, _) = lab::up::lab_services(
        &model::load_cluster(&[&shop]).unwrap(),
        &lab::plan::LabConfig::new(&lab::name::LabName::parse("demo").unwrap(), 1, lab::plan::Mode::HostGw),
    )
    .unwrap();
    let lab_ip = services.iter().find(|s| s.metadata.name.as_deref() == Some("order-service")).and_then(|s| s.spec.as_ref()?.cluster_ip.clone()).unwrap();
    let s = serve(&shop, &[]);
    assert_eq!(dig(&s, &["order-service.production.svc.cluster.local", "A"]), ("NOERROR".into(), vec![lab_ip.clone()]));
    let nodes = tempfile::tempdir().unwrap();
    std::fs::write(nodes.path().join("node.yaml"), "apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\nspec: {podCIDR: 10.244.0.0/24}\nstatus: {addresses: [{type: InternalIP, address: 172.18.0.2}]}\n").unwrap();
    let render = Command::new(env!("CARGO_BIN_EXE_podnet"))
        .args(["proxy", "render", "-f", shop.to_str().unwrap(), nodes.path().to_str().unwrap(), "--node", "node-1"])
        .output()
        .unwrap();
    assert!(render.status.success(), "{}", String::from_utf8_lossy(&render.stderr));
    assert!(String::from_utf8_lossy(&render.stdout).contains(&lab_ip), "proxy render has no frontend for {lab_ip}");
}
