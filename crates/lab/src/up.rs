//! Making and removing a lab: the `LabPlan` carried out with the dataplane, pods attached by
//! exec'ing the CNI plugin from the node's namespace exactly as a container runtime would.

use std::fs::File;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dataplane::{Netlink, VxlanSpec, netns};
use ipnet::IpNet;
use serde_json::{Value, json};

use crate::name::LabName;
use crate::plan::{LabPlan, Mode, NodePlan, PodPlan};
use crate::state::{self, LabState};

/// A failure while making or removing a lab, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct LabError {
    /// What was being done.
    pub what: String,
    /// Why it failed.
    pub source: io::Error,
}

fn ctx(what: impl Into<String>) -> impl FnOnce(io::Error) -> LabError {
    let what = what.into();
    move |source| LabError { what, source }
}

/// The vxlan device's name on every node (flannel's).
pub const VXLAN_DEVICE: &str = "flannel.1";
/// The pod bridge on every node.
pub const POD_BRIDGE: &str = "cni0";
/// The underlay bridge.
pub const UNDERLAY_BRIDGE: &str = "br0";

/// One step of `up`, reported as it finishes.
pub struct Step<'a> {
    /// What was done.
    pub what: &'a str,
    /// How long it took.
    pub took: Duration,
}

/// The network config the runtime passes to the plugin on `node` (a conflist's only plugin,
/// with the list's `cniVersion` and `name`, as libcni injects them).
pub fn cni_config(plan: &LabPlan, node: &NodePlan) -> Value {
    let lab = &plan.config.name;
    // One range per family, primary first: the pod gets an address from each.
    let gateways = [node.ipv4.then_some(IpAddr::V4(node.gateway())), node.gateway6().map(IpAddr::V6)].into_iter().flatten();
    let ranges: Vec<Value> = node.pod_cidrs().iter().zip(gateways).map(|(c, g)| json!([{"subnet": c.to_string(), "gateway": g.to_string()}])).collect();
    json!({
        "cniVersion": "1.1.0",
        "name": "podnet",
        "type": "podnet-bridge",
        "bridge": POD_BRIDGE,
        "isGateway": true,
        "isDefaultGateway": true,
        "hairpinMode": true,
        "mtu": plan.config.pod_mtu(),
        "ipam": {
            "type": "podnet-ipam",
            "ranges": ranges,
            "dataDir": state::dir(lab).join("ipam").join(&node.name),
        }
    })
}

/// The conflist a runtime on `node` would read.
pub fn conflist(plan: &LabPlan, node: &NodePlan) -> Value {
    let mut plugin = cni_config(plan, node);
    if let Some(m) = plugin.as_object_mut() {
        m.remove("cniVersion");
        m.remove("name");
    }
    json!({"cniVersion": "1.1.0", "name": "podnet", "plugins": [plugin]})
}

/// The Services and given EndpointSlices of a snapshot, ClusterIPs and NodePorts allocated.
pub fn lab_services(
    cluster: &model::ClusterState,
    config: &crate::plan::LabConfig,
) -> Result<(Vec<k8s_openapi::api::core::v1::Service>, Vec<k8s_openapi::api::discovery::v1::EndpointSlice>), model::ManifestError> {
    let mut services = cluster.services.clone();
    model::allocate::allocate(&mut services, &config.ranges())?;
    let mut services: Vec<_> = services.into_iter().map(|s| s.object).collect();
    crate::load_balancer::assign(&mut services, &config.load_balancer_pools());
    let slices = cluster.endpoint_slices.iter().map(|s| s.object.clone()).collect();
    Ok((services, slices))
}

/// Starts a control-plane lab's control plane once the underlay is there, registers the nodes
/// and returns the pod CIDRs its node IPAM gave each (`spec.podCIDRs`), in the plan's node order.
pub type StartControlPlane<'a> = dyn FnMut(&LabPlan) -> Result<Vec<Vec<IpNet>>, LabError> + 'a;

/// Makes the lab, and returns its state still locked (the caller saves what it adds and starts
/// the lab process before anyone else may change it). On failure everything made so far is
/// removed again.
pub fn up(
    plan: &LabPlan,
    services: &[k8s_openapi::api::core::v1::Service],
    given_slices: &[k8s_openapi::api::discovery::v1::EndpointSlice],
    plugin: &Path,
    mut progress: impl FnMut(Step<'_>),
    control_plane: Option<&mut StartControlPlane<'_>>,
) -> Result<(LabState, state::Locked), LabError> {
    let lab = &plan.config.name;
    let already = || LabError {
        what: format!("lab {:?}", lab.as_str()),
        source: io::Error::new(io::ErrorKind::AlreadyExists, format!("it is already up; remove it with `podnet lab down --name {lab}`")),
    };
    // Namespaces left by a crash count too; the directory is claimed atomically below.
    if exists(lab) {
        return Err(already());
    }
    let locked = state::create(lab).map_err(|e| if e.kind() == io::ErrorKind::AlreadyExists { already() } else { ctx(format!("lab {lab}"))(e) })?;
    match make(plan, services, given_slices, plugin, &locked, &mut progress, control_plane) {
        Ok(s) => Ok((s, locked)),
        Err(e) => {
            let _ = remove(lab);
            Err(e)
        }
    }
}

fn timed<T>(progress: &mut impl FnMut(Step<'_>), what: &str, f: impl FnOnce() -> Result<T, LabError>) -> Result<T, LabError> {
    let start = Instant::now();
    let out = f()?;
    progress(Step { what, took: start.elapsed() });
    Ok(out)
}

fn make(
    plan: &LabPlan,
    services: &[k8s_openapi::api::core::v1::Service],
    given_slices: &[k8s_openapi::api::discovery::v1::EndpointSlice],
    plugin: &Path,
    locked: &state::Locked,
    progress: &mut impl FnMut(Step<'_>),
    control_plane: Option<&mut StartControlPlane<'_>>,
) -> Result<LabState, LabError> {
    let lab = &plan.config.name;
    let dir = state::dir(lab);
    std::fs::create_dir_all(dir.join("cni")).map_err(ctx(format!("creating {}", dir.display())))?;
    // Saved first, so that `down` knows the lab even if `up` is killed halfway.
    let mut st = LabState {
        plan: plan.clone(),
        pod_ips: vec![None; plan.pods.len()],
        secondary_ips: Default::default(),
        created: 0,
        services: services.to_vec(),
        given_slices: given_slices.to_vec(),
        ingresses: Vec::new(),
        ingress_classes: Vec::new(),
        secrets: Vec::new(),
        gateway_classes: Vec::new(),
        gateways: Vec::new(),
        http_routes: Vec::new(),
        reference_grants: Vec::new(),
        namespaces: Vec::new(),
        network_policies: Vec::new(),
    };
    locked.save(&st).map_err(ctx("saving the lab state"))?;
    if let Some((old, new)) = make_neighbour_room(plan)? {
        progress(Step { what: &format!("ARP table room: gc_thresh3 {old} → {new}"), took: Duration::ZERO });
    }
    timed(progress, "underlay network", || make_underlay(plan))?;
    // With a control plane, its node IPAM gives each node its pod CIDR.
    let mut adopted = plan.clone();
    if let Some(start) = control_plane {
        let cidrs = timed(progress, "control plane (etcd, apiserver, controllers, scheduler)", || start(plan))?;
        for (node, cidrs) in adopted.nodes.iter_mut().zip(cidrs) {
            for cidr in cidrs {
                match cidr {
                    IpNet::V4(v4) => node.pod_cidr = v4,
                    IpNet::V6(v6) => node.pod_cidr6 = Some(v6),
                }
            }
        }
        st.plan = adopted.clone();
        locked.save(&st).map_err(ctx("saving the lab state"))?;
    }
    let plan = &adopted;
    for node in &plan.nodes {
        let path = dir.join("cni").join(format!("{}.conflist", node.name));
        std::fs::write(&path, serde_json::to_vec_pretty(&conflist(plan, node)).unwrap_or_default()).map_err(ctx(format!("writing {}", path.display())))?;
    }
    let what = format!("{} node(s), {} routing", plan.nodes.len(), plan.config.mode.name());
    timed(progress, &what, || {
        std::thread::scope(|s| {
            let handles: Vec<_> = plan.nodes.iter().map(|n| s.spawn(move || make_node(plan, n))).collect();
            handles.into_iter().try_for_each(|h| h.join().unwrap_or_else(|_| Err(panicked("node setup"))))
        })?;
        plan.nodes.iter().try_for_each(|n| route_peers(plan, n))?;
        route_control_plane(plan)
    })?;
    let what = format!("{} pod(s) attached by the CNI plugin", plan.pods.len());
    let ips = timed(progress, &what, || attach_pods(plan, plugin))?;
    st.pod_ips = vec![None; plan.pods.len()];
    for (i, addrs) in ips.into_iter().enumerate() {
        st.set_pod_addresses(i, &addrs);
    }
    st.created = std::time::SystemTime::UNIX_EPOCH.elapsed().map(|d| d.as_secs()).unwrap_or_default();
    locked.save(&st).map_err(ctx("saving the lab state"))?;
    Ok(st)
}

/// Neighbour entries a lab may hold at once: two per pod (the pod's entry for its gateway, the
/// node's for the pod) and one per pair of underlay hosts (nodes and the external host).
fn neighbours_needed(plan: &LabPlan) -> u64 {
    let pods = plan.pods.iter().filter(|p| !p.host_network).count() as u64;
    let hosts = plan.nodes.len() as u64 + 1;
    2 * pods + hosts * hosts
}

/// Makes room in the kernel's one ARP table (shared by every namespace: see
/// `dataplane::neighbour`) for this lab on top of what is there now; the old and new limit
/// when it was raised.
pub(crate) fn make_neighbour_room(plan: &LabPlan) -> Result<Option<(u64, u64)>, LabError> {
    let in_use = std::fs::read_to_string("/proc/net/stat/arp_cache")
        .ok()
        .and_then(|t| t.lines().nth(1).and_then(|l| l.split_whitespace().next()).and_then(|h| u64::from_str_radix(h, 16).ok()))
        .unwrap_or(0);
    dataplane::neighbour::make_room(in_use + neighbours_needed(plan))
        .map_err(ctx("raising the kernel's neighbour table limits (net.ipv4.neigh.default.gc_thresh*)"))
}

fn panicked(what: &str) -> LabError {
    LabError { what: what.to_owned(), source: io::Error::other("a worker thread panicked") }
}

fn in_netns<T: Send + 'static>(name: &str, what: &str, f: impl FnOnce() -> io::Result<T> + Send + 'static) -> Result<T, LabError> {
    netns::run_in(&netns::path_of(name), f).map_err(ctx(format!("entering {name}")))?.map_err(ctx(what.to_owned()))
}

fn make_underlay(plan: &LabPlan) -> Result<(), LabError> {
    netns::create(&plan.underlay_netns).map_err(ctx(format!("creating namespace {}", plan.underlay_netns)))?;
    in_netns(&plan.underlay_netns, "creating the underlay bridge", || {
        let nl = Netlink::connect()?;
        nl.ensure_bridge(UNDERLAY_BRIDGE, None)?;
        Ok(())
    })?;
    // The external host: a client off the cluster, on the underlay.
    plug_host(plan, &plan.external_netns(), "external", plan.external_ip(), plan.external_ip6())?;
    if plan.config.control_plane.is_some() {
        plug_host(plan, &plan.control_plane_netns(), "control-plane", plan.control_plane_ip(), None)?;
    }
    Ok(())
}

/// A host on the underlay that is not a node: its namespace, `eth0` with `ip` (and `ip6`), loopback.
fn plug_host(plan: &LabPlan, name: &str, port: &'static str, ip: Ipv4Addr, ip6: Option<Ipv6Addr>) -> Result<(), LabError> {
    netns::create(name).map_err(ctx(format!("creating namespace {name}")))?;
    let host_ns = File::open(netns::path_of(name)).map_err(ctx(format!("opening {name}")))?;
    in_netns(&plan.underlay_netns, &format!("plugging the {port} host into the underlay"), move || {
        let nl = Netlink::connect()?;
        let br = nl.require(UNDERLAY_BRIDGE)?;
        let p = nl.add_veth_with_peer_in(port, "eth0", &host_ns, None, None)?;
        nl.attach_up(p.index, br.index)
    })?;
    let prefix = plan.config.underlay.prefix_len();
    let prefix6 = plan.config.underlay6.prefix_len();
    in_netns(name, &format!("configuring the {port} host"), move || {
        let nl = Netlink::connect()?;
        no_dad()?;
        for name in ["lo", "eth0"] {
            let link = nl.require(name)?;
            nl.set_up(link.index)?;
        }
        let eth0 = nl.require("eth0")?;
        nl.add_address(eth0.index, IpNet::new(IpAddr::V4(ip), prefix).map_err(io::Error::other)?)?;
        if let Some(ip6) = ip6 {
            nl.add_address(eth0.index, IpNet::new(IpAddr::V6(ip6), prefix6).map_err(io::Error::other)?)?;
        }
        Ok(())
    })
}

/// IPv6 addresses in the lab are planned, never duplicates: no duplicate address detection on
/// any interface of this thread's namespace (its second of waiting would hold every address
/// back as "tentative"; kind's nodes and the reference bridge plugin turn it off too).
fn no_dad() -> io::Result<()> {
    for conf in ["all", "default", "eth0"] {
        if conf != "eth0" || Path::new("/proc/sys/net/ipv6/conf/eth0").exists() {
            dataplane::sysctl::set(&format!("net/ipv6/conf/{conf}/accept_dad"), "0")?;
        }
    }
    Ok(())
}

/// A node: its namespace, `eth0` on the underlay, loopback, forwarding.
fn make_node(plan: &LabPlan, node: &NodePlan) -> Result<(), LabError> {
    netns::create(&node.netns).map_err(ctx(format!("creating namespace {}", node.netns)))?;
    // Before any interface is made in it: new ones take the namespace's `default`.
    in_netns(&node.netns, "turning off duplicate address detection", no_dad)?;
    let node_ns = File::open(netns::path_of(&node.netns)).map_err(ctx(format!("opening {}", node.netns)))?;
    let port = node.name.clone();
    in_netns(&plan.underlay_netns, &format!("plugging {} into the underlay", node.name), move || {
        let nl = Netlink::connect()?;
        let br = nl.require(UNDERLAY_BRIDGE)?;
        let p = nl.add_veth_with_peer_in(&port, "eth0", &node_ns, None, None)?;
        nl.attach_up(p.index, br.index)
    })?;
    let ip = node.ip;
    let prefix = plan.config.underlay.prefix_len();
    let external_ip = plan.external_ip();
    let v6 = node.ip6.zip(plan.external_ip6()).map(|(ip6, gw6)| (ip6, gw6, plan.config.underlay6.prefix_len()));
    in_netns(&node.netns, &format!("configuring {}", node.name), move || {
        let nl = Netlink::connect()?;
        let lo = nl.require("lo")?;
        nl.set_up(lo.index)?;
        let eth0 = nl.require("eth0")?;
        nl.set_up(eth0.index)?;
        nl.add_address(eth0.index, IpNet::new(IpAddr::V4(ip), prefix).map_err(io::Error::other)?)?;
        // A default route through the external host, as nodes have one: traffic to
        // service addresses nobody DNATs reaches the forward hook, where the proxy REJECTs or
        // DROPs it, instead of failing the route lookup.
        let gateway = external_ip;
        nl.add_route(IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).map_err(io::Error::other)?, Some(IpAddr::V4(gateway)), None)?;
        // The node routes for its pods; /proc/sys/net is this thread's namespace's.
        // Same-node pod traffic is routed back out of the bridge it came in on (see
        // service_proxy): that is intended, so no ICMP redirects.
        for all_or_default in ["all", "default"] {
            dataplane::sysctl::set(&format!("net/ipv4/conf/{all_or_default}/send_redirects"), "0")?;
        }
        dataplane::sysctl::set("net/ipv4/ip_forward", "1")?;
        if let Some((ip6, gateway6, prefix6)) = v6 {
            nl.add_address(eth0.index, IpNet::new(IpAddr::V6(ip6), prefix6).map_err(io::Error::other)?)?;
            nl.add_route(IpNet::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0).map_err(io::Error::other)?, Some(IpAddr::V6(gateway6)), None)?;
            dataplane::sysctl::set("net/ipv6/conf/all/forwarding", "1")?;
        }
        Ok(())
    })
}

/// The control-plane host reaches pods as a node does in host-gw mode: a route per node's pod
/// CIDR via the node (pods talk to the API server, as `default/kubernetes`'s endpoint).
fn route_control_plane(plan: &LabPlan) -> Result<(), LabError> {
    if plan.config.control_plane.is_none() {
        return Ok(());
    }
    let nodes = plan.nodes.clone();
    in_netns(&plan.control_plane_netns(), "routing pods from the control-plane host", move || {
        let nl = Netlink::connect()?;
        let eth0 = nl.require("eth0")?;
        for n in &nodes {
            nl.add_route(IpNet::V4(n.pod_cidr), Some(IpAddr::V4(n.ip)), Some(eth0.index))?;
        }
        Ok(())
    })
}

/// Routes to every other node's pod CIDR.
fn route_peers(plan: &LabPlan, node: &NodePlan) -> Result<(), LabError> {
    // Encrypted: the lab process's WireGuard tunnels make the routes, through their devices.
    if plan.config.encrypt.is_some() {
        return Ok(());
    }
    let peers: Vec<NodePlan> = plan.nodes.iter().filter(|p| p.name != node.name).cloned().collect();
    let me = node.clone();
    let mode = plan.config.mode;
    in_netns(&node.netns, &format!("routing on {}", node.name), move || {
        let nl = Netlink::connect()?;
        let eth0 = nl.require("eth0")?;
        match mode {
            // The lab process starts BIRD on every node; the routes are the ones it learns.
            Mode::Bgp => {}
            Mode::HostGw => {
                for p in &peers {
                    if p.ipv4 {
                        nl.add_route(IpNet::V4(p.pod_cidr), Some(IpAddr::V4(p.ip)), Some(eth0.index))?;
                    }
                    if let Some((cidr6, ip6)) = p.pod_cidr6.zip(p.ip6) {
                        nl.add_route(IpNet::V6(cidr6), Some(IpAddr::V6(ip6)), Some(eth0.index))?;
                    }
                }
            }
            Mode::Vxlan => {
                let vx = nl.add_vxlan(&VxlanSpec {
                    name: VXLAN_DEVICE.into(),
                    vni: 1,
                    underlay_index: eth0.index,
                    local: me.ip,
                    port: 8472,
                    mtu: Mode::Vxlan.pod_mtu(),
                    mac: me.vxlan_mac(),
                })?;
                nl.add_address(vx, IpNet::new(IpAddr::V4(me.vxlan_ip()), 32).map_err(io::Error::other)?)?;
                if let Some(ip6) = me.vxlan_ip6() {
                    nl.add_address(vx, IpNet::new(IpAddr::V6(ip6), 128).map_err(io::Error::other)?)?;
                }
                nl.set_up(vx)?;
                for p in &peers {
                    // Flannel's layout: route via the peer's vxlan address, its MAC, and where that
                    // MAC lives. IPv6 pods ride the same IPv4 tunnel, by the same MAC.
                    if p.ipv4 {
                        nl.add_onlink_route(IpNet::V4(p.pod_cidr), IpAddr::V4(p.vxlan_ip()), vx)?;
                        nl.add_neighbour(vx, IpAddr::V4(p.vxlan_ip()), &p.vxlan_mac())?;
                    }
                    if let Some((cidr6, via6)) = p.pod_cidr6.zip(p.vxlan_ip6()) {
                        nl.add_onlink_route(IpNet::V6(cidr6), IpAddr::V6(via6), vx)?;
                        nl.add_neighbour(vx, IpAddr::V6(via6), &p.vxlan_mac())?;
                    }
                    nl.add_fdb(vx, &p.vxlan_mac(), IpAddr::V4(p.ip))?;
                }
            }
        }
        Ok(())
    })
}

/// Attaches every pod, a few at a time; returns their addresses (primary first) in plan order.
fn attach_pods(plan: &LabPlan, plugin: &Path) -> Result<Vec<Vec<IpAddr>>, LabError> {
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Vec<IpAddr>>> = Mutex::new(vec![Vec::new(); plan.pods.len()]);
    let workers = std::thread::available_parallelism().map(|n| n.get() * 2).unwrap_or(4).min(8);
    std::thread::scope(|s| -> Result<(), LabError> {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| -> Result<(), LabError> {
                    loop {
                        let i = {
                            let mut n = next.lock().map_err(|_| panicked("pod queue"))?;
                            let i = *n;
                            *n += 1;
                            i
                        };
                        let Some(pod) = plan.pods.get(i) else {
                            return Ok(());
                        };
                        let ips = attach_pod(plan, pod, plugin)?;
                        results.lock().map_err(|_| panicked("pod results"))?[i] = ips;
                    }
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().unwrap_or_else(|_| Err(panicked("pod setup"))))
    })?;
    results.into_inner().map_err(|_| panicked("pod results"))
}

/// Attaches one pod; returns its addresses, primary first.
pub(crate) fn attach_pod(plan: &LabPlan, pod: &PodPlan, plugin: &Path) -> Result<Vec<IpAddr>, LabError> {
    let node = plan.nodes.iter().find(|n| n.name == pod.node).ok_or_else(|| LabError {
        what: format!("pod {}", pod.key()),
        source: io::Error::new(io::ErrorKind::NotFound, format!("node {} not in the plan", pod.node)),
    })?;
    let ips = if pod.host_network {
        node.internal_ips()
    } else {
        netns::create(&pod.netns).map_err(ctx(format!("creating namespace {}", pod.netns)))?;
        in_netns(&pod.netns, "setting up loopback", || {
            let nl = Netlink::connect()?;
            let lo = nl.require("lo")?;
            nl.set_up(lo.index)
        })?;
        cni_add(plan, node, pod, plugin)?
    };
    write_etc(plan, pod, &ips).map_err(ctx(format!("writing /etc/netns/{}", pod.netns)))?;
    Ok(ips)
}

/// Runs the plugin's ADD from the node's namespace, as a runtime does; returns the pod's
/// addresses, one per family of the node's pod CIDRs, primary first.
fn cni_add(plan: &LabPlan, node: &NodePlan, pod: &PodPlan, plugin: &Path) -> Result<Vec<IpAddr>, LabError> {
    let what = format!("CNI ADD of pod {} on {}", pod.key(), node.name);
    let result = cni_exec(plan, node, pod, plugin, "ADD")?;
    let ips: Vec<IpAddr> = result["ips"].as_array().into_iter().flatten().filter_map(|ip| ip["address"].as_str()?.split('/').next()?.parse().ok()).collect();
    let wanted = node.pod_cidrs();
    if ips.len() != wanted.len() || !ips.iter().zip(&wanted).all(|(ip, cidr)| cidr.contains(ip)) {
        let cidrs: Vec<String> = wanted.iter().map(ToString::to_string).collect();
        return Err(LabError { what, source: io::Error::other(format!("expected one address in each of {}, got: {result}", cidrs.join(", "))) });
    }
    Ok(ips)
}

/// Execs the plugin for `command` from the node's namespace with the `CNI_*` environment and
/// the node's network config on stdin; returns its JSON output.
fn cni_exec(plan: &LabPlan, node: &NodePlan, pod: &PodPlan, plugin: &Path, command: &'static str) -> Result<Value, LabError> {
    let conf = cni_config(plan, node).to_string();
    let plugin = plugin.to_owned();
    let cni_path = plugin.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
    let (id, netns_path) = (pod.netns.clone(), netns::path_of(&pod.netns));
    let what = format!("CNI {command} of pod {} on {}", pod.key(), node.name);
    let out = in_netns(&node.netns, &what, move || {
        let mut child = Command::new(&plugin)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &id)
            .env("CNI_NETNS", &netns_path)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &cni_path)
            .env("CNI_ARGS", "IgnoreUnknown=1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        child.stdin.take().map(|mut i| i.write_all(conf.as_bytes())).transpose()?;
        child.wait_with_output()
    })?;
    let result: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    if !out.status.success() {
        return Err(LabError { what, source: io::Error::other(result.to_string()) });
    }
    Ok(result)
}

/// Removes one pod: CNI DEL from its node, its namespace and its `/etc/netns` files.
pub(crate) fn detach_pod(plan: &LabPlan, pod: &PodPlan, plugin: &Path) -> Result<(), LabError> {
    if pod.host_network {
        return Ok(());
    }
    let node = plan.nodes.iter().find(|n| n.name == pod.node).ok_or_else(|| LabError {
        what: format!("pod {}", pod.key()),
        source: io::Error::new(io::ErrorKind::NotFound, format!("node {} not in the plan", pod.node)),
    })?;
    cni_exec(plan, node, pod, plugin, "DEL")?;
    netns::delete(&pod.netns).map_err(ctx(format!("deleting namespace {}", pod.netns)))?;
    let etc = Path::new("/etc/netns").join(&pod.netns);
    if etc.exists() {
        std::fs::remove_dir_all(&etc).map_err(ctx(format!("removing {}", etc.display())))?;
    }
    Ok(())
}

/// The files kubelet writes for a pod, where `ip netns exec` mounts them over `/etc`.
/// The pod's `/etc/netns/<netns>/` files, which `ip netns exec` (so `lab exec`) mounts over
/// `/etc`: the resolv.conf kubelet would give it, and kubelet's hosts file.
fn write_etc(plan: &LabPlan, pod: &PodPlan, ips: &[IpAddr]) -> io::Result<()> {
    if pod.host_network {
        return Ok(()); // the node's namespace: the node's files
    }
    let dir = Path::new("/etc/netns").join(&pod.netns);
    std::fs::create_dir_all(&dir)?;
    let cluster =
        crate::resolv::ClusterDns { nameserver: crate::system::dns_cluster_ip(&plan.config).to_string(), domain: crate::system::CLUSTER_DOMAIN.into() };
    let node_file = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if let Some(resolv) = crate::resolv::resolv_conf(&pod.namespace, false, pod.dns_policy.as_deref(), pod.dns_config.as_ref(), &cluster, &node_file) {
        std::fs::write(dir.join("resolv.conf"), resolv)?;
    }
    let hostname = pod.hostname.as_deref().unwrap_or(&pod.name);
    let names = match &pod.subdomain {
        Some(sub) => format!("{hostname}.{sub}.{}.svc.{}\t{hostname}", pod.namespace, crate::system::CLUSTER_DOMAIN),
        None => hostname.to_owned(),
    };
    // kubelet's: one line per pod address.
    let own: String = ips.iter().map(|ip| format!("{ip}\t{names}\n")).collect();
    let hosts = format!(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n{own}"
    );
    std::fs::write(dir.join("hosts"), hosts)
}

/// Whether anything of the lab is there: its state directory or a namespace with its prefix.
pub fn exists(lab: &LabName) -> bool {
    state::dir(lab).exists() || !lab_namespaces(lab).is_empty()
}

/// Namespaces whose names say they belong to `lab`.
pub fn lab_namespaces(lab: &LabName) -> Vec<String> {
    let prefix = lab.netns_prefix();
    let mut names: Vec<String> = std::fs::read_dir(netns::NETNS_RUN_DIR)
        .map(|d| d.filter_map(Result::ok).filter_map(|e| e.file_name().into_string().ok()).filter(|n| n.starts_with(&prefix)).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// What `down` found to remove.
#[derive(Debug, PartialEq, Eq)]
pub enum Down {
    /// The lab was removed: this many namespaces, its process, leases and state.
    Removed(usize),
    /// No state directory and no namespace of the lab: nothing to remove.
    NotUp,
}

/// Removes everything the lab made: its process, namespaces (and every link, route, bridge,
/// vxlan device and nft table in them), `/etc/netns` files, leases and state. Works from the
/// names alone, so it also cleans up after an `up` that was killed halfway. Waits for a change
/// in progress (`apply`, `mark`) to finish first.
pub fn down(lab: &LabName) -> Result<Down, LabError> {
    if !exists(lab) {
        return Ok(Down::NotUp);
    }
    // Held until the directory (and the lock file in it) is gone; a state directory whose lock
    // cannot be taken (a half-made one) is removed anyway.
    let _locked = state::lock(lab).ok();
    remove(lab).map(Down::Removed)
}

/// Removes the lab's process, namespaces, their `/etc/netns` files and the lab's own state
/// directory: only names built from the lab's name, never a path from elsewhere.
fn remove(lab: &LabName) -> Result<usize, LabError> {
    stop_process(lab);
    crate::bgp::stop_all(lab);
    crate::daemon::stop_kubelet(lab);
    kubeplane::stop(&control_plane_dir(lab));
    stop_plugins(lab);
    let namespaces = lab_namespaces(lab);
    for name in &namespaces {
        netns::delete(name).map_err(ctx(format!("deleting namespace {name}")))?;
        let etc = Path::new("/etc/netns").join(name);
        if etc.exists() {
            std::fs::remove_dir_all(&etc).map_err(ctx(format!("removing {}", etc.display())))?;
        }
    }
    let dir = state::dir(lab);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(ctx(format!("removing {}", dir.display())))?;
    }
    Ok(namespaces.len())
}

/// Where a control-plane lab keeps its control plane's PKI, etcd data, kubeconfigs and logs.
pub fn control_plane_dir(lab: &LabName) -> std::path::PathBuf {
    state::dir(lab).join("control-plane")
}

/// Kills CNI plugin runs still working on the lab's pods (an `up` or `apply` killed halfway leaves
/// them running), so that none writes its leases again after the state directory is gone. They
/// are known by their `CNI_NETNS`, which names a namespace of the lab.
fn stop_plugins(lab: &LabName) {
    let marker = format!("CNI_NETNS={}", netns::path_of(&lab.netns_prefix()).display());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if environ.split(|b| *b == 0).any(|var| var.starts_with(marker.as_bytes())) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Stops the lab process named in the pid file, if it is still the lab's.
pub fn stop_process(lab: &LabName) {
    stop_recorded(&state::pid_file(lab), "daemon", lab);
}

/// Stops the process whose pid `pid_file` holds, if it is still `podnet lab <command> --name <lab>`.
pub(crate) fn stop_recorded(pid_file: &Path, command: &str, lab: &LabName) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let Ok(text) = std::fs::read_to_string(pid_file) else {
        return;
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return;
    };
    // Only signal a process that is still the lab's (pids are reused).
    if pid <= 0 || !crate::daemon::is_lab_process(pid.unsigned_abs(), command, lab) {
        return;
    }
    let raw = pid;
    let pid = Pid::from_raw(pid);
    let _ = kill(pid, Signal::SIGTERM);
    // Gone, or a zombie waiting for its (new) parent: either way it no longer serves.
    let gone = || {
        kill(pid, None).is_err()
            || std::fs::read_to_string(format!("/proc/{raw}/stat"))
                .map(|s| s.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
                .unwrap_or(true)
    };
    for _ in 0..200 {
        if gone() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = kill(pid, Signal::SIGKILL);
}
