//! The proxy's rendered rule set in a real kernel, with real packets (root): a node namespace
//! routes between a client pod, two server pods and an outside host; every case is checked
//! against `proxy trace` for the same packet, and the incremental sync is checked to land where
//! a full load does.

#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a line number

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dataplane::netns::{NamedNetns, run_in};
use model::Protocol;

static SEQ: AtomicUsize = AtomicUsize::new(0);

const NODE_IP: &str = "172.18.0.2";
const OUTSIDE_IP: &str = "172.18.0.100";
const NODE_IP6: &str = "fd00:18::2";
const OUTSIDE_IP6: &str = "fd00:18::100";

/// A pod's IPv6 address: its IPv4 address's last two bytes under fd00:10:244::/56.
fn six(v4: &str) -> String {
    let o: Vec<&str> = v4.split('.').collect();
    let v6: std::net::Ipv6Addr = format!("fd00:10:244:{}::{}", o[2], o[3]).parse().unwrap();
    v6.to_string()
}

/// `ip addr add` without duplicate address detection, so the address is usable at once.
fn addr6(netns: &str, addr: &str, dev: &str) {
    ip(&["-n", netns, "addr", "add", addr, "dev", dev, "nodad"]);
}

fn manifests(s2_ready: bool) -> String {
    let pod = |name: &str, node: &str, ip: &str, ready: bool| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, labels: {{app: web}}}}\nspec: {{nodeName: {node}, containers: [{{name: c, ports: [{{name: http, containerPort: 8080}}]}}]}}\nstatus: {{podIP: {ip}, podIPs: [{{ip: {ip}}}, {{ip: '{}'}}], conditions: [{{type: Ready, status: '{}'}}]}}\n",
            six(ip),
            if ready { "True" } else { "False" }
        )
    };
    let svc = |name: &str, ip: &str, extra: &str| {
        format!("---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  clusterIP: {ip}\n{extra}")
    };
    [
        format!("apiVersion: v1\nkind: Node\nmetadata: {{name: node-1}}\nspec: {{podCIDR: 10.244.0.0/24}}\nstatus: {{addresses: [{{type: InternalIP, address: {NODE_IP}}}, {{type: InternalIP, address: '{NODE_IP6}'}}]}}\n"),
        "---\napiVersion: v1\nkind: Node\nmetadata: {name: node-2}\nspec: {podCIDR: 10.244.1.0/24}\nstatus: {addresses: [{type: InternalIP, address: 172.18.0.3}]}\n".into(),
        "---\napiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {name: kubernetes}\nspec: {cidrs: [10.96.0.0/16, 'fd00:10:96::/112']}\n".into(),
        pod("s1", "node-1", "10.244.0.2", true),
        pod("s2", "node-2", "10.244.1.2", s2_ready),
        svc("web", "10.96.0.20", "  type: NodePort\n  selector: {app: web}\n  ports: [{port: 80, targetPort: http, nodePort: 30080}]\n"),
        svc("web-local", "10.96.0.21", "  type: NodePort\n  externalTrafficPolicy: Local\n  selector: {app: web}\n  ports: [{port: 80, targetPort: http, nodePort: 30081}]\n"),
        svc("empty", "10.96.0.30", "  selector: {app: nothing}\n  ports: [{port: 80}]\n"),
        svc("inside", "10.96.0.50", "  internalTrafficPolicy: Local\n  selector: {app: web}\n  ports: [{port: 80, targetPort: http}]\n"),
        svc("dual", "10.96.0.60", "  clusterIPs: [10.96.0.60, 'fd00:10:96::60']\n  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv4, IPv6]\n  type: NodePort\n  selector: {app: web}\n  ports: [{port: 80, targetPort: http, nodePort: 30082}]\n"),
        svc("sticky", "10.96.0.40", "  sessionAffinity: ClientIP\n  selector: {app: web}\n  ports: [{port: 80, targetPort: http}]\n"),
    ]
    .concat()
}

fn plan(s2_ready: bool) -> proxy::NodePlan {
    plan_with(s2_ready, proxy::ProxyConfig { cluster_cidr: "10.244.0.0/16".into(), ..Default::default() })
}

fn plan_with(s2_ready: bool, config: proxy::ProxyConfig) -> proxy::NodePlan {
    let objects = model::load_str(&manifests(s2_ready), Path::new("t.yaml")).unwrap();
    let state = model::ClusterState::from_objects(&objects).unwrap();
    proxy::plan(&state, "node-1", &config).unwrap()
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The node, its pods and an outside host, removed on drop.
struct Topology {
    node: NamedNetns,
    client: NamedNetns,
    s1: NamedNetns,
    s2: NamedNetns,
    outside: NamedNetns,
}

impl Topology {
    fn new() -> Topology {
        let tag = format!("pnproxy{}-{}", std::process::id() % 100_000, SEQ.fetch_add(1, Ordering::SeqCst));
        let ns = |what: &str| NamedNetns::new(&format!("{tag}-{what}")).unwrap();
        let t = Topology { node: ns("node"), client: ns("c"), s1: ns("s1"), s2: ns("s2"), outside: ns("x") };
        let node = t.node.name().to_owned();
        // Pods hang off the node on point-to-point veths (Calico's layout): the node answers
        // 169.254.1.1 on each and routes every pod's /32.
        for (pod, addr, dev) in [(&t.client, "10.244.0.9", "vc"), (&t.s1, "10.244.0.2", "v1"), (&t.s2, "10.244.1.2", "v2")] {
            ip(&["link", "add", dev, "netns", &node, "type", "veth", "peer", "name", "eth0", "netns", pod.name()]);
            ip(&["-n", &node, "addr", "add", "169.254.1.1/32", "dev", dev]);
            ip(&["-n", &node, "link", "set", dev, "up"]);
            ip(&["-n", &node, "route", "add", &format!("{addr}/32"), "dev", dev]);
            ip(&["-n", pod.name(), "addr", "add", &format!("{addr}/32"), "dev", "eth0"]);
            ip(&["-n", pod.name(), "link", "set", "eth0", "up"]);
            ip(&["-n", pod.name(), "link", "set", "lo", "up"]);
            ip(&["-n", pod.name(), "route", "add", "169.254.1.1", "dev", "eth0"]);
            ip(&["-n", pod.name(), "route", "add", "default", "via", "169.254.1.1"]);
            // IPv6 the same way, with fe80::1 as the node's end (Calico's IPv6 layout).
            addr6(&node, "fe80::1/64", dev);
            ip(&["-n", &node, "-6", "route", "add", &format!("{}/128", six(addr)), "dev", dev]);
            addr6(pod.name(), &format!("{}/128", six(addr)), "eth0");
            ip(&["-n", pod.name(), "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0"]);
        }
        ip(&["link", "add", "ux", "netns", &node, "type", "veth", "peer", "name", "eth0", "netns", t.outside.name()]);
        ip(&["-n", &node, "addr", "add", &format!("{NODE_IP}/24"), "dev", "ux"]);
        ip(&["-n", &node, "link", "set", "ux", "up"]);
        ip(&["-n", &node, "link", "set", "lo", "up"]);
        ip(&["-n", t.outside.name(), "addr", "add", &format!("{OUTSIDE_IP}/24"), "dev", "eth0"]);
        ip(&["-n", t.outside.name(), "link", "set", "eth0", "up"]);
        ip(&["-n", t.outside.name(), "route", "add", "default", "via", NODE_IP]);
        // A node has a default route: packets to service addresses nobody DNATs reach the
        // forward hook instead of failing the route lookup.
        ip(&["-n", &node, "route", "add", "default", "via", OUTSIDE_IP]);
        addr6(&node, &format!("{NODE_IP6}/64"), "ux");
        addr6(t.outside.name(), &format!("{OUTSIDE_IP6}/64"), "eth0");
        ip(&["-n", t.outside.name(), "-6", "route", "add", "default", "via", NODE_IP6]);
        ip(&["-n", &node, "-6", "route", "add", "default", "via", OUTSIDE_IP6]);
        for sysctl in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            let out = Command::new("ip").args(["netns", "exec", &node, "sysctl", "-qw", sysctl]).output().unwrap();
            assert!(out.status.success());
        }
        t
    }

    /// Serves `<name> <peer address>` on port 8080 of both server pods.
    fn serve(&self) {
        for (ns, name, v4) in [(&self.s1, "s1", "10.244.0.2"), (&self.s2, "s2", "10.244.1.2")] {
            for addr in ["0.0.0.0:8080".to_string(), format!("[{}]:8080", six(v4))] {
                let listener = run_in(ns.path(), move || TcpListener::bind(addr)).unwrap().unwrap();
                serve_as(listener, name);
            }
        }
    }
}

/// Answers every connection with `<name> <peer address>`.
fn serve_as(listener: TcpListener, name: &'static str) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let peer = conn.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
            let _ = conn.write_all(format!("{name} {peer}").as_bytes());
        }
    });
}

impl Topology {
    /// Loads `new` in the node (over `old` as a transaction, or in full).
    fn sync(&self, old: Option<&nftset::Ruleset>, new: &nftset::Ruleset) -> dataplane::nft::Synced {
        let (old, new) = (old.cloned(), new.clone());
        run_in(self.node.path(), move || dataplane::nft::sync(old.as_ref(), &new)).unwrap().unwrap()
    }

    fn list(&self) -> String {
        self.list_family("ip")
    }

    fn list_family(&self, family: &str) -> String {
        let out = Command::new("ip").args(["netns", "exec", self.node.name(), "nft", "list", "table", family, proxy::render::TABLE]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// What a TCP connection from namespace `from` to `dst` gets.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The answering server and the source address it saw.
    Served(String, String),
    Refused,
    TimedOut,
}

fn connect(from: &NamedNetns, dst: &str) -> Outcome {
    let dst: SocketAddr = dst.parse().unwrap();
    run_in(from.path(), move || match TcpStream::connect_timeout(&dst, Duration::from_millis(700)) {
        Ok(mut s) => {
            let mut reply = String::new();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s.read_to_string(&mut reply).unwrap();
            let (name, peer) = reply.split_once(' ').unwrap();
            Outcome::Served(name.into(), peer.into())
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Outcome::TimedOut,
        Err(e) => panic!("connect {dst}: {e}"),
    })
    .unwrap()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The tracer's verdict for a packet, as the kernel should show it.
/// What `proxy trace` says (the rendered rules, read rule by rule), checked here against what
/// the kernel does with real packets; the plan's own reading must say the same.
fn traced(plan: &proxy::NodePlan, src: &str, dst: &str) -> proxy::Trace {
    let dst: SocketAddr = dst.parse().unwrap();
    let by_rules = plan.trace_rules(src.parse().unwrap(), dst.ip(), dst.port(), Protocol::Tcp).unwrap();
    assert_eq!(by_rules, plan.trace(src.parse().unwrap(), dst.ip(), dst.port(), Protocol::Tcp), "{src} -> {dst}");
    by_rules
}

#[test]
fn the_rendered_rules_do_what_the_tracer_says_with_real_packets() {
    if !is_root() {
        testkit::skip("needs root");
        return;
    }
    let t = Topology::new();
    t.serve();
    let plan = plan(true);
    t.sync(None, &plan.render());

    // A ClusterIP from a pod: both endpoints, the client's own address kept.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        match connect(&t.client, "10.96.0.20:80") {
            Outcome::Served(name, peer) => {
                assert_eq!(peer, "10.244.0.9", "no masquerade for pod traffic");
                seen.insert(name);
            }
            other => panic!("ClusterIP: {other:?}"),
        }
    }
    assert_eq!(seen.len(), 2, "numgen spreads over both endpoints: {seen:?}");
    let trace = traced(&plan, "10.244.0.9", "10.96.0.20:80");
    assert_eq!((trace.verdict, trace.endpoints.len(), trace.masquerade), ("DNAT", 2, false));

    // Unknown port of a live ClusterIP and a Service without endpoints: REJECT.
    for dst in ["10.96.0.20:81", "10.96.0.30:80"] {
        assert_eq!(connect(&t.client, dst), Outcome::Refused, "{dst}");
        assert_eq!(traced(&plan, "10.244.0.9", dst).verdict, "REJECT", "{dst}");
    }
    // An address of the ServiceCIDR that no Service owns: DROP.
    assert_eq!(connect(&t.client, "10.96.9.9:80"), Outcome::TimedOut);
    assert_eq!(traced(&plan, "10.244.0.9", "10.96.9.9:80").verdict, "DROP");

    // A NodePort from outside: masqueraded to the node.
    match connect(&t.outside, "172.18.0.2:30080") {
        Outcome::Served(_, peer) => assert!(peer == "169.254.1.1" || peer == NODE_IP, "masqueraded, got {peer}"),
        other => panic!("NodePort: {other:?}"),
    }
    assert!(traced(&plan, OUTSIDE_IP, "172.18.0.2:30080").masquerade);

    // externalTrafficPolicy: Local from outside: the local endpoint only, the source kept.
    for _ in 0..10 {
        assert_eq!(connect(&t.outside, "172.18.0.2:30081"), Outcome::Served("s1".into(), OUTSIDE_IP.into()));
    }
    let trace = traced(&plan, OUTSIDE_IP, "172.18.0.2:30081");
    assert_eq!((trace.endpoints.as_slice(), trace.masquerade), (["10.244.0.2:8080".to_string()].as_slice(), false));

    // Hairpin: a pod reaching itself through its Service is masqueraded, else it could not answer.
    let mut hairpinned = false;
    for _ in 0..30 {
        match connect(&t.s1, "10.96.0.20:80") {
            Outcome::Served(name, peer) if name == "s1" => {
                assert_ne!(peer, "10.244.0.2", "hairpin traffic must be masqueraded");
                hairpinned = true;
            }
            Outcome::Served(_, peer) => assert_eq!(peer, "10.244.0.2"),
            other => panic!("hairpin: {other:?}"),
        }
    }
    assert!(hairpinned, "30 tries never picked the pod itself");

    // sessionAffinity: ClientIP: every connection of a client goes to the endpoint it first got.
    let served: std::collections::BTreeSet<String> = (0..20)
        .map(|_| match connect(&t.client, "10.96.0.40:80") {
            Outcome::Served(name, _) => name,
            other => panic!("affinity: {other:?}"),
        })
        .collect();
    assert_eq!(served.len(), 1, "{served:?}");
    let remembered = t.list();
    assert!(remembered.contains("10.244.0.9 . 10.96.0.40 . tcp"), "the client is remembered: {remembered}");
}

#[test]
fn an_incremental_sync_lands_where_a_full_load_does() {
    if !is_root() {
        testkit::skip("needs root");
        return;
    }
    let t = Topology::new();
    t.serve();
    let (before, after) = (plan(true).render(), plan(false).render());
    t.sync(None, &before);
    // s2 turns not-ready: only elements change (one endpoint class chain goes, another comes).
    assert_eq!(t.sync(Some(&before), &after), dataplane::nft::Synced::Incremental);
    let incremental = t.list();
    for _ in 0..15 {
        assert_eq!(connect(&t.client, "10.96.0.20:80"), Outcome::Served("s1".into(), "10.244.0.9".into()));
    }
    t.sync(None, &after);
    assert_eq!(t.list(), incremental, "the transaction and the full load make the same table");
    // And back.
    assert_eq!(t.sync(Some(&after), &before), dataplane::nft::Synced::Incremental);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        if let Outcome::Served(name, _) = connect(&t.client, "10.96.0.20:80") {
            seen.insert(name);
        }
    }
    assert_eq!(seen.len(), 2);

    // Per Service, as the proxy does it: the element writes of the changed Service only.
    let (a, b) = (plan(true), plan(false));
    let mut programmer = proxy::render::Programmer::new(&a);
    t.sync(None, &programmer.ruleset());
    // s2 backs both web Services: both changed.
    let mut script = String::new();
    for svc in ["web", "web-local", "sticky", "dual"] {
        let ports: Vec<proxy::plan::PortPlan> = b.ports.iter().filter(|p| p.port.service == svc).cloned().collect();
        let proxy::render::Update::Elements(writes) = programmer.update("shop", svc, &ports) else { panic!("needs a full load") };
        assert!(!writes.is_empty() && writes.lines().count() <= 10, "{writes}");
        script.push_str(&writes);
    }
    // `inside` uses node-1's endpoint only: s2 leaving changes nothing for it.
    let inside: Vec<proxy::plan::PortPlan> = b.ports.iter().filter(|p| p.port.service == "inside").cloned().collect();
    assert_eq!(programmer.update("shop", "inside", &inside), proxy::render::Update::Elements(String::new()));
    let node = t.node.path().to_owned();
    run_in(&node, move || dataplane::nft::apply(&script)).unwrap().unwrap();
    assert_eq!(t.list(), incremental, "per-Service writes make the same table as a full load");
}

#[test]
fn internal_traffic_policy_local_and_masquerade_all_with_real_packets() {
    if !is_root() {
        testkit::skip("needs root");
        return;
    }
    let t = Topology::new();
    t.serve();
    let p = plan(true);
    t.sync(None, &p.render());
    // internalTrafficPolicy: Local: only the endpoint on this node (s1), never s2.
    for _ in 0..15 {
        assert_eq!(connect(&t.client, "10.96.0.50:80"), Outcome::Served("s1".into(), "10.244.0.9".into()));
    }
    assert_eq!(traced(&p, "10.244.0.9", "10.96.0.50:80").endpoints, ["10.244.0.2:8080"]);
    // masqueradeAll: pod traffic to a ClusterIP is SNATed too.
    let all = plan_with(true, proxy::ProxyConfig { cluster_cidr: "10.244.0.0/16".into(), masquerade_all: true, ..Default::default() });
    t.sync(Some(&p.render()), &all.render());
    match connect(&t.client, "10.96.0.20:80") {
        Outcome::Served(_, peer) => assert_ne!(peer, "10.244.0.9", "masqueradeAll"),
        other => panic!("{other:?}"),
    }
    assert!(traced(&all, "10.244.0.9", "10.96.0.20:80").masquerade);
}

#[test]
fn a_dual_stack_service_serves_each_family_through_its_own_table() {
    if !is_root() {
        testkit::skip("needs root");
        return;
    }
    let t = Topology::new();
    t.serve();
    let p = plan_with(true, proxy::ProxyConfig { cluster_cidr: "10.244.0.0/16,fd00:10:244::/56".into(), ..Default::default() });
    t.sync(None, &p.render());
    assert!(t.list_family("ip6").contains("fd00:10:96::60 . tcp . 80"), "the IPv6 ClusterIP is in the ip6 table");

    // Each ClusterIP reaches both endpoints of its own family, the client's address kept.
    for (vip, client) in [("10.96.0.60:80", "10.244.0.9".to_string()), ("[fd00:10:96::60]:80", six("10.244.0.9"))] {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..40 {
            match connect(&t.client, vip) {
                Outcome::Served(name, peer) => {
                    assert_eq!(peer, client, "{vip}: no masquerade for pod traffic");
                    seen.insert(name);
                }
                other => panic!("{vip}: {other:?}"),
            }
        }
        assert_eq!(seen.len(), 2, "{vip}: {seen:?}");
        let trace = traced(&p, &client, vip);
        assert_eq!((trace.verdict, trace.endpoints.len()), ("DNAT", 2), "{vip}");
        assert!(trace.endpoints.iter().all(|e| e.starts_with('[') == vip.starts_with('[')), "{vip}: one family: {:?}", trace.endpoints);
    }
    // The IPv4-only Service has no IPv6 address; an unowned IPv6 ServiceCIDR address is dropped.
    assert_eq!(connect(&t.client, "[fd00:10:96::99]:80"), Outcome::TimedOut);
    assert_eq!(traced(&p, &six("10.244.0.9"), "[fd00:10:96::99]:80").verdict, "DROP");
    // An unknown port of the live IPv6 ClusterIP is rejected.
    assert_eq!(connect(&t.client, "[fd00:10:96::60]:81"), Outcome::Refused);

    // The NodePort on the node's IPv6 address from outside: masqueraded to the node.
    match connect(&t.outside, &format!("[{NODE_IP6}]:30082")) {
        Outcome::Served(_, peer) => assert!(peer == NODE_IP6 || peer == "fe80::1" || peer.starts_with("fd00:18:"), "masqueraded, got {peer}"),
        other => panic!("IPv6 NodePort: {other:?}"),
    }
    assert!(traced(&p, OUTSIDE_IP6, &format!("[{NODE_IP6}]:30082")).masquerade);
}

#[test]
fn a_first_load_over_netlink_makes_the_tables_an_nft_text_load_makes() {
    if !is_root() {
        testkit::skip("needs root");
        return;
    }
    let tag = format!("pnproxy{}-{}", std::process::id() % 100_000, SEQ.fetch_add(1, Ordering::SeqCst));
    let (text, fast) = (NamedNetns::new(&format!("{tag}-text")).unwrap(), NamedNetns::new(&format!("{tag}-fast")).unwrap());
    let p = plan_with(true, proxy::ProxyConfig { cluster_cidr: "10.244.0.0/16,fd00:10:244::/56".into(), ..Default::default() });
    let ruleset = p.render();
    assert!(ruleset.tables.len() == 2 && ruleset.element_count() > 20);
    let script = ruleset.full_script();
    run_in(text.path(), move || dataplane::nft::apply(&script)).unwrap().unwrap();
    let r = ruleset.clone();
    assert_eq!(run_in(fast.path(), move || dataplane::nft::load(&r)).unwrap().unwrap(), dataplane::nft::Loaded::Batched);
    let list = |ns: &NamedNetns| {
        let out = Command::new("ip").args(["netns", "exec", ns.name(), "nft", "list", "ruleset"]).output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let listed = list(&fast);
    // Elements named after their Service port either way (netlink user data, nft comments).
    assert!(listed.contains("fd00:10:96::60 . tcp . 80 . 1 comment \"") && listed.contains("10.96.0.20 . tcp . 80 comment \""), "{listed}");
    assert_eq!(listed, list(&text), "the same tables either way");
    // Loading again finds the tables there and replaces them in one nft transaction.
    let r = ruleset.clone();
    let again = run_in(fast.path(), move || dataplane::nft::load(&r)).unwrap().unwrap();
    assert_eq!(again, dataplane::nft::Loaded::Replaced("a table is there".into()));
    assert_eq!(list(&fast), list(&text));
}
