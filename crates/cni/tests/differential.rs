//! podnet-cni against Debian's reference plugins (`containernetworking-plugins`, spec <= 1.0.0):
//! the same config must give the same normalised results, addresses, routes, leases and bridge
//! state; mixed chains must work both ways; the same bad input must give the same error codes.
//! Needs root and `/usr/lib/cni` (`.ci/run` installs it).

#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a line number

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Lab, is_root, ours};
use dataplane::{Netlink, netns};
use serde_json::{Value, json};

const REFERENCE_DIR: &str = "/usr/lib/cni";

fn reference(plugin: &str) -> PathBuf {
    Path::new(REFERENCE_DIR).join(plugin)
}

fn ready() -> bool {
    if !is_root() || !reference("bridge").is_file() {
        testkit::skip(&format!("needs root and {REFERENCE_DIR} (apt-get install containernetworking-plugins)"));
        return false;
    }
    true
}

fn conf(lab: &Lab, network: &str, plugin: &str, ipam: &str, bridge: &str) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": network, "type": plugin, "bridge": bridge,
        "isGateway": true, "hairpinMode": true,
        "ipam": {"type": ipam, "ranges": [[{"subnet": "10.77.0.0/24"}], [{"subnet": "fd77::/120"}]],
                 "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.0.2.0/24", "gw": "10.77.0.1"}],
                 "dataDir": lab.data.path()}
    })
}

/// A result without what legitimately differs: MACs, the host veth's name.
fn normalise(mut r: Value) -> Value {
    if let Some(list) = r.get_mut("interfaces").and_then(Value::as_array_mut) {
        for (i, iface) in list.iter_mut().enumerate() {
            if let Some(m) = iface.as_object_mut() {
                m.remove("mac");
                m.remove("mtu");
                if i == 1 {
                    m.insert("name".into(), json!("<host veth>"));
                }
            }
        }
    }
    r
}

/// What the pod's eth0 looks like: addresses, and routes out of it as (dst, gw).
fn pod_state(pod: &Path) -> (Vec<String>, Vec<String>) {
    netns::run_in(pod, || {
        let nl = Netlink::connect().unwrap();
        let link = nl.require("eth0").unwrap();
        let mut addrs: Vec<String> = nl.addresses(link.index).unwrap().iter().map(ToString::to_string).collect();
        // The kernel's own link-local address is not the plugin's doing.
        addrs.retain(|a| !a.starts_with("fe80:"));
        addrs.sort();
        let mut routes: Vec<String> = nl
            .all_routes()
            .unwrap()
            .into_iter()
            .filter(|r| r.oif == Some(link.index) && !r.dst.addr().is_multicast() && !r.dst.to_string().starts_with("fe80:"))
            .map(|r| format!("{} via {:?}", r.dst, r.gateway))
            .collect();
        routes.sort();
        routes.dedup();
        (addrs, routes)
    })
    .unwrap()
}

/// The node side: the bridge's addresses, and whether the pod's veth is an up, hairpin port of it.
fn node_state(lab: &Lab, bridge: &str) -> (Vec<String>, bool) {
    let br = bridge.to_owned();
    let (addrs, index) = netns::run_in(lab.node.path(), move || {
        let nl = Netlink::connect().unwrap();
        let b = nl.require(&br).unwrap();
        let mut a: Vec<String> = nl.addresses(b.index).unwrap().iter().map(ToString::to_string).collect();
        a.retain(|x| !x.starts_with("fe80:"));
        a.sort();
        (a, b.index)
    })
    .unwrap();
    let ports = netns::run_in(lab.node.path(), move || {
        Netlink::connect().unwrap().links().unwrap().into_iter().filter(|l| l.controller == Some(index)).collect::<Vec<_>>()
    })
    .unwrap();
    let hairpin = ports.iter().all(|p| {
        let out = Command::new("ip").args(["-n", lab.node.name(), "-d", "link", "show", &p.name]).output().unwrap();
        p.up && String::from_utf8_lossy(&out.stdout).contains("hairpin on")
    });
    (addrs, !ports.is_empty() && hairpin)
}

#[test]
fn same_config_same_results_addresses_routes_leases_and_bridge() {
    if !ready() {
        return;
    }
    let ours_lab = Lab::new(2);
    let ref_lab = Lab::new(2);
    let ours_conf = conf(&ours_lab, "diffnet", "podnet-bridge", "podnet-ipam", "dbr0");
    let ref_conf = conf(&ref_lab, "diffnet", "bridge", "host-local", "dbr0");
    for (pod, id) in [(0, "ctr-1"), (1, "ctr-2")] {
        let (ok_o, r_o) = ours_lab.exec(&ours(), "ADD", Some(pod), id, REFERENCE_DIR, &ours_conf);
        let (ok_r, r_r) = ref_lab.exec(&reference("bridge"), "ADD", Some(pod), id, REFERENCE_DIR, &ref_conf);
        assert!(ok_o && ok_r, "ours: {r_o}\nreference: {r_r}");
        let (mut n_o, mut n_r) = (normalise(r_o), normalise(r_r));
        // Sandbox paths differ by namespace name only.
        n_o["interfaces"][2]["sandbox"] = json!("<netns>");
        n_r["interfaces"][2]["sandbox"] = json!("<netns>");
        assert_eq!(n_o, n_r, "normalised ADD results");
        assert_eq!(pod_state(ours_lab.pods[pod].path()), pod_state(ref_lab.pods[pod].path()), "pod addresses and routes");
    }
    assert_eq!(node_state(&ours_lab, "dbr0"), node_state(&ref_lab, "dbr0"), "bridge addresses and ports");
    assert!(node_state(&ours_lab, "dbr0").1, "veths are up hairpin ports of the bridge");
    assert_eq!(ours_lab.leases("diffnet"), ref_lab.leases("diffnet"), "lease files");

    assert!(ours_lab.exec(&ours(), "DEL", Some(0), "ctr-1", REFERENCE_DIR, &ours_conf).0);
    assert!(ref_lab.exec(&reference("bridge"), "DEL", Some(0), "ctr-1", REFERENCE_DIR, &ref_conf).0);
    assert_eq!(ours_lab.leases("diffnet"), ref_lab.leases("diffnet"), "lease files after DEL");
}

#[test]
fn our_bridge_with_the_reference_host_local() {
    if !ready() {
        return;
    }
    let lab = Lab::new(1);
    let c = conf(&lab, "mixa", "podnet-bridge", "host-local", "mxa0");
    let (ok, r) = lab.exec(&ours(), "ADD", Some(0), "ctr-m", REFERENCE_DIR, &c);
    assert!(ok, "{r}");
    assert_eq!(r["ips"][0]["address"], "10.77.0.2/24");
    assert_eq!(r["ips"][1]["address"], "fd77::2/120");
    assert!(lab.leases("mixa").iter().any(|(f, c)| f == "10.77.0.2" && c == "ctr-m\r\neth0"));
    let mut check = c.clone();
    check["prevResult"] = r;
    assert!(lab.exec(&ours(), "CHECK", Some(0), "ctr-m", REFERENCE_DIR, &check).0);
    assert!(lab.exec(&ours(), "DEL", Some(0), "ctr-m", REFERENCE_DIR, &c).0);
    assert!(!lab.leases("mixa").iter().any(|(f, _)| f == "10.77.0.2"));
}

#[test]
fn the_reference_bridge_with_our_ipam() {
    if !ready() {
        return;
    }
    let lab = Lab::new(1);
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(ours(), bin.path().join("podnet-ipam")).unwrap();
    let c = conf(&lab, "mixb", "bridge", "podnet-ipam", "mxb0");
    let path = bin.path().to_str().unwrap();
    let (ok, r) = lab.exec(&reference("bridge"), "ADD", Some(0), "ctr-n", path, &c);
    assert!(ok, "{r}");
    assert_eq!(r["ips"][0]["address"], "10.77.0.2/24");
    assert_eq!(pod_state(lab.pods[0].path()).0, ["10.77.0.2/24", "fd77::2/120"]);
    assert!(lab.exec(&reference("bridge"), "DEL", Some(0), "ctr-n", path, &c).0);
    assert!(!lab.leases("mixb").iter().any(|(f, _)| f == "10.77.0.2"));
}

#[test]
fn a_lease_made_by_one_is_released_by_the_other() {
    if !ready() {
        return;
    }
    let lab = Lab::new(1);
    let ipam = |ty: &str| {
        json!({"cniVersion": "1.0.0", "name": "shared", "type": ty,
               "ipam": {"type": ty, "ranges": [[{"subnet": "10.66.0.0/24"}]], "dataDir": lab.data.path()}})
    };
    // Reference allocates, podnet releases.
    let (ok, r) = lab.exec(&reference("host-local"), "ADD", Some(0), "ctr-a", REFERENCE_DIR, &ipam("host-local"));
    assert!(ok, "{r}");
    assert_eq!(r["ips"][0]["address"], "10.66.0.2/24");
    assert!(lab.exec(&ours(), "DEL", Some(0), "ctr-a", REFERENCE_DIR, &ipam("podnet-ipam")).0);
    // podnet allocates: round-robin continues after the reference's last reservation.
    let (ok, r) = lab.exec(&ours(), "ADD", Some(0), "ctr-b", REFERENCE_DIR, &ipam("podnet-ipam"));
    assert!(ok, "{r}");
    assert_eq!(r["ips"][0]["address"], "10.66.0.3/24");
    // ... and the reference continues after ours, then releases ours.
    let (ok, r) = lab.exec(&reference("host-local"), "ADD", Some(0), "ctr-c", REFERENCE_DIR, &ipam("host-local"));
    assert!(ok, "{r}");
    assert_eq!(r["ips"][0]["address"], "10.66.0.4/24");
    assert!(lab.exec(&reference("host-local"), "DEL", Some(0), "ctr-b", REFERENCE_DIR, &ipam("host-local")).0);
    let files: Vec<String> = lab.leases("shared").into_iter().map(|(f, _)| f).collect();
    assert_eq!(files, ["10.66.0.4", "last_reserved_ip.0", "lock"]);
}

#[test]
fn the_same_bad_input_gives_the_same_error_codes() {
    if !ready() {
        return;
    }
    let lab = Lab::new(1);
    let good = conf(&lab, "errnet", "bridge", "host-local", "erb0");
    let mut tiny = good.clone();
    tiny["ipam"]["ranges"] = json!([[{"subnet": "10.78.0.0/31"}]]);
    let mut unnamed = good.clone();
    unnamed["name"] = json!("");
    let mut future = good.clone();
    future["cniVersion"] = json!("9.9.9");
    let mut backwards = good.clone();
    backwards["ipam"]["ranges"] = json!([[{"subnet": "10.78.0.0/24", "rangeStart": "10.78.0.50", "rangeEnd": "10.78.0.40"}]]);
    let mut outside = good.clone();
    outside["ipam"]["ranges"] = json!([[{"subnet": "10.78.0.0/24", "rangeEnd": "10.78.1.4"}]]);
    let cases: Vec<(&str, Option<usize>, Value)> = vec![
        ("bad JSON", Some(0), json!("{bad")),
        ("unsupported version", Some(0), future),
        ("missing network name", Some(0), unnamed),
        ("missing CNI_NETNS", None, good.clone()),
        ("subnet too small", Some(0), tiny),
        ("rangeStart after rangeEnd", Some(0), backwards),
        ("rangeEnd outside the subnet", Some(0), outside),
    ];
    for (what, pod, c) in cases {
        let ours_conf = {
            let mut o = c.clone();
            if o.is_object() {
                o["type"] = json!("podnet-bridge");
                o["ipam"]["type"] = json!("podnet-ipam");
            }
            o
        };
        let stdin = |v: &Value| {
            if v.is_string() { Value::String(v.as_str().unwrap().to_owned()) } else { v.clone() }
        };
        let (ok_r, e_r) = run_raw(&lab, &reference("bridge"), pod, &stdin(&c));
        let (ok_o, e_o) = run_raw(&lab, &ours(), pod, &stdin(&ours_conf));
        assert!(!ok_r && !ok_o, "{what}: both must fail");
        assert_eq!(e_o["code"], e_r["code"], "{what}: ours {e_o} reference {e_r}");
        if what.starts_with("range") {
            assert_eq!(e_o["msg"], e_r["msg"], "{what}: the reference's words");
        }
    }
}

/// Like `Lab::exec`, but a JSON string value is sent raw (to send malformed JSON).
fn run_raw(lab: &Lab, binary: &Path, pod: Option<usize>, conf: &Value) -> (bool, Value) {
    use std::io::Write;
    use std::process::Stdio;
    let text = match conf {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", lab.node.name()])
        .arg(binary)
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "ctr-e")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", REFERENCE_DIR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    if let Some(p) = pod {
        cmd.env("CNI_NETNS", lab.pods[p].path());
    }
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
}
