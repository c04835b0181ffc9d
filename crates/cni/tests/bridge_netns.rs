//! The bridge plugin in real network namespaces, called the way a runtime calls it: exec'd in
//! the node's namespace with the `CNI_*` environment and the config on stdin. Needs root;
//! every test makes its own uniquely named namespaces and removes them, also on failure.

#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a line number

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};

use common::{Lab, is_root, ours};
use dataplane::netns;
use serde_json::{Value, json};

fn conf(lab: &Lab, version: &str) -> Value {
    json!({
        "cniVersion": version, "name": "podnet", "type": "podnet-bridge", "bridge": "pn0",
        "isGateway": true, "hairpinMode": true,
        "ipam": {"type": "podnet-ipam", "ranges": [[{"subnet": "10.99.0.0/24"}]], "dataDir": lab.data.path()}
    })
}

/// Runs our plugin in the lab's node namespace.
fn cni(lab: &Lab, command: &str, pod: Option<usize>, container: &str, conf: &Value) -> (bool, Value) {
    lab.exec(&ours(), command, pod, container, "/nonexistent", conf)
}

/// Listens in `server`'s namespace, connects from `client`'s, and returns what the server saw.
fn tcp_roundtrip(server: &Path, client: &Path, ip: &str) -> String {
    let listener = netns::run_in(server, || TcpListener::bind("0.0.0.0:7777")).unwrap().unwrap();
    let accept = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        peer.ip().to_string()
    });
    let addr = format!("{ip}:7777");
    netns::run_in(client, move || TcpStream::connect(addr).unwrap().write_all(b"hello").unwrap()).unwrap();
    accept.join().unwrap()
}

#[test]
fn add_check_del_with_real_packets() {
    if !is_root() {
        testkit::skip("needs root");
        return;
    }
    let lab = Lab::new(2);
    let conf = conf(&lab, "1.1.0");
    let (ok, a) = cni(&lab, "ADD", Some(0), "ctr-a", &conf);
    assert!(ok, "{a}");
    let (ok, b) = cni(&lab, "ADD", Some(1), "ctr-b", &conf);
    assert!(ok, "{b}");
    assert_eq!(a["ips"][0]["address"], "10.99.0.2/24");
    assert_eq!(a["ips"][0]["gateway"], "10.99.0.1");
    assert_eq!(a["ips"][0]["interface"], 2);
    assert_eq!(b["ips"][0]["address"], "10.99.0.3/24");
    let names: Vec<&str> = a["interfaces"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names[0], "pn0");
    assert_eq!(names[2], "eth0");
    assert_eq!(a["interfaces"][2]["sandbox"], lab.pods[0].path().to_str().unwrap());

    // Pod to pod over the bridge: the server sees the client's own IP (no NAT).
    assert_eq!(tcp_roundtrip(lab.pods[1].path(), lab.pods[0].path(), "10.99.0.3"), "10.99.0.2");
    // The node reaches its pods through the gateway address on the bridge.
    assert_eq!(tcp_roundtrip(lab.pods[0].path(), lab.node.path(), "10.99.0.2"), "10.99.0.1");

    // CHECK against the ADD's result.
    let mut check = conf.clone();
    check["prevResult"] = a.clone();
    let (ok, out) = cni(&lab, "CHECK", Some(0), "ctr-a", &check);
    assert!(ok, "{out}");

    // DEL removes the interface and the lease, and is idempotent.
    let (ok, out) = cni(&lab, "DEL", Some(0), "ctr-a", &conf);
    assert!(ok, "{out}");
    assert!(!lab.data.path().join("podnet/10.99.0.2").exists());
    let gone = netns::run_in(lab.pods[0].path(), || dataplane::Netlink::connect().unwrap().link("eth0").unwrap()).unwrap();
    assert!(gone.is_none());
    // The retired interface is deleted by a detached reaper shortly after.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let veths =
            netns::run_in(lab.pods[0].path(), || dataplane::Netlink::connect().unwrap().links().unwrap().into_iter().filter(|l| l.name != "lo").count())
                .unwrap();
        if veths == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the retired interface is still there");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(cni(&lab, "DEL", Some(0), "ctr-a", &conf).0);
    // CHECK now fails.
    assert!(!cni(&lab, "CHECK", Some(0), "ctr-a", &check).0);
}

#[test]
fn del_succeeds_when_the_netns_is_gone() {
    if !is_root() {
        testkit::skip("needs root");
        return;
    }
    let mut lab = Lab::new(1);
    let conf = conf(&lab, "1.0.0");
    assert!(cni(&lab, "ADD", Some(0), "ctr-x", &conf).0);
    let pod = lab.pods.pop().unwrap();
    let path = pod.path().to_owned();
    drop(pod);
    let mut c = Command::new("ip");
    c.args(["netns", "exec", lab.node.name()])
        .arg(ours())
        .env("CNI_COMMAND", "DEL")
        .env("CNI_CONTAINERID", "ctr-x")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_NETNS", &path)
        .env("CNI_PATH", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(!lab.data.path().join("podnet/10.99.0.2").exists(), "the lease is released");
}

#[test]
fn older_versions_get_their_result_shape_and_errors_go_to_stdout() {
    if !is_root() {
        testkit::skip("needs root");
        return;
    }
    let lab = Lab::new(1);
    let (ok, r) = cni(&lab, "ADD", Some(0), "ctr-o", &conf(&lab, "0.4.0"));
    assert!(ok, "{r}");
    assert_eq!(r["cniVersion"], "0.4.0");
    assert_eq!(r["ips"][0]["version"], "4");
    // A second ADD for the same attachment fails: the interface exists, the IPAM refuses.
    let (ok, e) = cni(&lab, "ADD", Some(0), "ctr-o", &conf(&lab, "0.4.0"));
    assert!(!ok);
    assert_eq!(e["code"], 999, "{e}");
    // Missing CNI_NETNS on ADD: code 4.
    let (ok, e) = cni(&lab, "ADD", None, "ctr-p", &conf(&lab, "1.1.0"));
    assert!(!ok);
    assert_eq!(e["code"], 4);
    assert_eq!(e["msg"], "required env variables [CNI_NETNS] missing");
}

#[test]
fn ip_masq_rewrites_traffic_leaving_the_pod_network_only() {
    if !is_root() || std::process::Command::new("nft").arg("--version").output().is_err() {
        testkit::skip("needs root and nft");
        return;
    }
    let lab = Lab::new(2);
    // An "outside" network on a second node interface: 192.0.2.0/24, node .1, outside host .2.
    let ext = dataplane::netns::NamedNetns::new(&format!("{}-ext", lab.node.name())).unwrap();
    let ext_path = ext.path().to_owned();
    netns::run_in(lab.node.path(), move || {
        let nl = dataplane::Netlink::connect().unwrap();
        nl.add_veth("ext0", "ext1").unwrap();
        let here = nl.require("ext0").unwrap();
        nl.add_address(here.index, "192.0.2.1/24".parse().unwrap()).unwrap();
        nl.set_up(here.index).unwrap();
        let there = nl.require("ext1").unwrap();
        nl.move_to_netns(there.index, &std::fs::File::open(&ext_path).unwrap()).unwrap();
    })
    .unwrap();
    netns::run_in(ext.path(), || {
        let nl = dataplane::Netlink::connect().unwrap();
        let l = nl.require("ext1").unwrap();
        nl.add_address(l.index, "192.0.2.2/24".parse().unwrap()).unwrap();
        nl.set_up(l.index).unwrap();
    })
    .unwrap();
    let mut c = conf(&lab, "1.0.0");
    c["ipMasq"] = json!(true);
    c["isDefaultGateway"] = json!(true);
    let (ok, a) = cni(&lab, "ADD", Some(0), "ctr-m1", &c);
    assert!(ok, "{a}");
    let (ok, b) = cni(&lab, "ADD", Some(1), "ctr-m2", &c);
    assert!(ok, "{b}");
    // Leaving the pod network: the outside sees the node's address.
    assert_eq!(tcp_roundtrip(ext.path(), lab.pods[0].path(), "192.0.2.2"), "192.0.2.1");
    // Inside the pod network: no NAT.
    assert_eq!(tcp_roundtrip(lab.pods[1].path(), lab.pods[0].path(), "10.99.0.3"), "10.99.0.2");
    // DEL takes the pod out of the masquerade set.
    let mut del = c.clone();
    del["prevResult"] = a;
    assert!(cni(&lab, "DEL", Some(0), "ctr-m1", &del).0);
    let set = Command::new("ip").args(["netns", "exec", lab.node.name(), "nft", "list", "table", "ip", "podnet-cni"]).output().unwrap();
    let text = String::from_utf8_lossy(&set.stdout);
    assert!(!text.contains("10.99.0.2") && text.contains("10.99.0.3"), "{text}");
}
