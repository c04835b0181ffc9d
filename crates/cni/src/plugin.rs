//! The plugin: one invocation in, one result or error out. It acts as the bridge plugin
//! (`type: podnet-bridge`, also answering to `bridge`) or as the host-local compatible IPAM
//! plugin (`type: podnet-ipam`, also answering to `host-local`).

use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command as Process, Stdio};

use dataplane::{Netlink, masquerade, netns};
use ipnet::IpNet;
use serde_json::Value;

use crate::config::NetConf;
use crate::env::{Command, Invocation};
use crate::error::{CniError, Code};
use crate::ipam::Ipam;
use crate::ipam::store::DiskStore;
use crate::result::{CURRENT_VERSION, CniResult, Interface, IpConfig, Route, version_info};

/// Our IPAM plugin's type name.
pub const IPAM_TYPE: &str = "podnet-ipam";
/// Our bridge plugin's type name.
pub const BRIDGE_TYPE: &str = "podnet-bridge";

/// What a plugin run prints on success (nothing for DEL, CHECK, STATUS, GC).
pub type Output = Option<String>;

/// A whole plugin process: env and stdin in, result or error JSON on stdout, exit status out.
/// Shared by `podnet-cni` and by `podnet` when `CNI_COMMAND` is set.
pub fn main() -> std::process::ExitCode {
    use std::io::{Read, Write};
    use std::process::ExitCode;
    if let Ok(spec) = std::env::var(REAP_ENV) {
        // A detached helper of an earlier DEL: nobody reads its output.
        return if reap(&spec).is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    let mut stdin = Vec::new();
    let mut out = io::stdout().lock();
    if let Err(e) = io::stdin().read_to_end(&mut stdin) {
        let _ = writeln!(out, "{}", CniError::new(Code::Io, format!("reading stdin: {e}")).to_json(CURRENT_VERSION));
        return ExitCode::FAILURE;
    }
    let argv0 = std::env::args().next().unwrap_or_default();
    match run(&argv0, |k| std::env::var(k).ok(), &stdin) {
        Ok(Some(text)) => {
            let _ = writeln!(out, "{text}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err((err, version)) => {
            let _ = writeln!(out, "{}", err.to_json(&version));
            ExitCode::FAILURE
        }
    }
}

/// Which plugin a binary name stands for: a runtime execs plugins by their type name, so
/// `podnet-ipam` (or `host-local`) is always the IPAM plugin, whatever the config's `type`
/// (an IPAM plugin receives its caller's whole config).
fn role_of(argv0: &str) -> Option<&'static str> {
    match Path::new(argv0).file_name()?.to_str()? {
        IPAM_TYPE | "host-local" => Some(IPAM_TYPE),
        BRIDGE_TYPE | "bridge" => Some(BRIDGE_TYPE),
        _ => None,
    }
}

/// Runs one invocation of the binary named `argv0`. On error, returns it with the
/// `cniVersion` to report it in.
pub fn run(argv0: &str, env: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<Output, (CniError, String)> {
    let fail = |e: CniError, v: &str| (e, v.to_owned());
    let inv = Invocation::from_env(&env).map_err(|e| fail(e, CURRENT_VERSION))?;
    if inv.command == Command::Version {
        return Ok(Some(version_info()));
    }
    let conf = NetConf::parse(stdin).map_err(|e| fail(e, CURRENT_VERSION))?;
    let version = conf.cni_version.clone();
    let out = match role_of(argv0).unwrap_or(conf.plugin.as_str()) {
        BRIDGE_TYPE | "bridge" => bridge(&inv, &conf, stdin),
        IPAM_TYPE | "host-local" => ipam_plugin(&inv, &conf),
        other => Err(CniError::new(Code::InvalidNetworkConfig, format!("podnet-cni does not implement plugin type {other:?}"))),
    };
    out.map_err(|e| fail(e, &version))
}

fn internal(msg: impl Into<String>) -> CniError {
    CniError::new(Code::Internal, msg)
}

fn io_internal(what: &str) -> impl Fn(io::Error) -> CniError + '_ {
    move |e| internal(format!("{what}: {e}"))
}

/// Opens the lease store; a lock held too long by another process is "try again later" (11).
fn open_store(ipam: &Ipam, network: &str) -> Result<DiskStore, CniError> {
    DiskStore::open(&ipam.data_dir, network).map_err(store_error)
}

fn store_error(e: io::Error) -> CniError {
    if e.kind() == io::ErrorKind::WouldBlock {
        CniError::new(Code::TryAgainLater, "the lease store is busy").with_details(e.to_string())
    } else {
        internal(format!("opening the lease store: {e}"))
    }
}

/// STATUS of our IPAM: ready when its lease directory can be made and locked.
fn ipam_status(ipam: &Ipam, network: &str) -> Result<(), CniError> {
    match DiskStore::open(&ipam.data_dir, network) {
        Ok(_) => Ok(()),
        Err(e) => Err(CniError::new(Code::PluginNotAvailable, "the IPAM lease store is not usable")
            .with_details(format!("{}: {e}", ipam.data_dir.join(network).display()))),
    }
}

/// The IPAM plugin, as the reference bridge plugin execs it.
fn ipam_plugin(inv: &Invocation, conf: &NetConf) -> Result<Output, CniError> {
    let ipam = Ipam::from_config(&conf.ipam)?;
    if inv.command == Command::Status {
        return ipam_status(&ipam, &conf.name).map(|()| None);
    }
    let mut store = open_store(&ipam, &conf.name)?;
    match inv.command {
        Command::Add => {
            let mut requested = conf.requested_ips();
            if let Some(ip) = inv.args.get("IP") {
                for part in ip.split(',') {
                    requested.push(part.parse().map_err(|_| internal(format!("invalid IP {part:?} in CNI_ARGS")))?);
                }
            }
            let result = ipam.add(&mut store, &inv.container_id, &inv.ifname, &requested)?;
            Ok(Some(result.to_version(&conf.cni_version).to_string()))
        }
        Command::Del => ipam.del(&mut store, &inv.container_id, &inv.ifname).map(|()| None),
        Command::Check => ipam.check(&store, &inv.container_id, &inv.ifname).map(|()| None),
        Command::Gc => ipam.gc(&mut store, &conf.gc_attachments()).map(|_| None),
        Command::Status | Command::Version => Ok(None),
    }
}

/// Runs the IPAM part of a bridge invocation: ours in-process, any other plugin from `CNI_PATH`.
fn delegate_ipam(inv: &Invocation, conf: &NetConf, stdin: &[u8], command: Command) -> Result<Option<CniResult>, CniError> {
    let ipam_type = conf.ipam.get("type").and_then(Value::as_str).unwrap_or_default();
    if ipam_type == IPAM_TYPE {
        let ipam = Ipam::from_config(&conf.ipam)?;
        if command == Command::Status {
            return ipam_status(&ipam, &conf.name).map(|()| None);
        }
        let mut store = open_store(&ipam, &conf.name)?;
        return match command {
            Command::Add => ipam.add(&mut store, &inv.container_id, &inv.ifname, &conf.requested_ips()).map(Some),
            Command::Del => ipam.del(&mut store, &inv.container_id, &inv.ifname).map(|()| None),
            Command::Check => ipam.check(&store, &inv.container_id, &inv.ifname).map(|()| None),
            Command::Gc => ipam.gc(&mut store, &conf.gc_attachments()).map(|_| None),
            Command::Status | Command::Version => Ok(None),
        };
    }
    if ipam_type.is_empty() {
        return Err(CniError::new(Code::InvalidNetworkConfig, "ipam.type is required"));
    }
    exec_plugin(inv, ipam_type, stdin, command)
}

/// Execs a plugin found in `CNI_PATH`, as libcni's `ExecPluginWithResult` does.
fn exec_plugin(inv: &Invocation, plugin: &str, stdin: &[u8], command: Command) -> Result<Option<CniResult>, CniError> {
    let binary = inv
        .path
        .iter()
        .map(|dir| Path::new(dir).join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| internal(format!("failed to find plugin {plugin:?} in path {:?}", inv.path)))?;
    let name = match command {
        Command::Add => "ADD",
        Command::Del => "DEL",
        Command::Check => "CHECK",
        Command::Gc => "GC",
        Command::Status => "STATUS",
        Command::Version => "VERSION",
    };
    let mut child = Process::new(&binary)
        .env("CNI_COMMAND", name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(io_internal("starting the IPAM plugin"))?;
    if let Some(mut input) = child.stdin.take() {
        io::Write::write_all(&mut input, stdin).map_err(io_internal("writing to the IPAM plugin"))?;
    }
    let out = child.wait_with_output().map_err(io_internal("running the IPAM plugin"))?;
    let value: Option<Value> = serde_json::from_slice(&out.stdout).ok();
    if !out.status.success() {
        let v = value.unwrap_or_default();
        let code = v.get("code").and_then(Value::as_u64).unwrap_or(999);
        let msg = v.get("msg").and_then(Value::as_str).unwrap_or("IPAM plugin failed").to_owned();
        let details = v.get("details").and_then(Value::as_str).unwrap_or_default().to_owned();
        return Err(CniError { code: code_from(code), msg, details });
    }
    match (command, value) {
        (Command::Add, Some(v)) => CniResult::from_value(&v).map(Some),
        (Command::Add, None) => Err(CniError::new(Code::Decoding, "the IPAM plugin printed no result")),
        _ => Ok(None),
    }
}

fn code_from(n: u64) -> Code {
    match n {
        1 => Code::IncompatibleVersion,
        2 => Code::UnsupportedField,
        3 => Code::UnknownContainer,
        4 => Code::InvalidEnvironment,
        5 => Code::Io,
        6 => Code::Decoding,
        7 => Code::InvalidNetworkConfig,
        11 => Code::TryAgainLater,
        50 => Code::PluginNotAvailable,
        51 => Code::PluginNotAvailableLimitedConnectivity,
        _ => Code::Internal,
    }
}

/// The host-side veth name: stable for a (container, interface), so DEL can find it.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    // FNV-1a: stable across runs and releases.
    use std::hash::Hasher;
    let mut h = fnv::FnvHasher::default();
    h.write(container_id.as_bytes());
    h.write(&[0]);
    h.write(ifname.as_bytes());
    format!("veth{:08x}", h.finish() as u32)
}

/// Fields of the reference bridge plugin that podnet-bridge does not implement: refused with
/// "unsupported field" (2) rather than silently ignored.
fn unsupported_bridge_field(stdin: &[u8]) -> Option<&'static str> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    let set = |k: &str| match v.get(k) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Number(n)) => n.as_u64() != Some(0),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    };
    ["vlan", "vlanTrunk", "macspoofchk", "preserveDefaultVlan", "disableContainerInterface"].into_iter().find(|k| set(k))
}

fn bridge(inv: &Invocation, conf: &NetConf, stdin: &[u8]) -> Result<Output, CniError> {
    if let Some(field) = unsupported_bridge_field(stdin)
        && inv.command != Command::Del
    {
        return Err(CniError::new(Code::UnsupportedField, format!("podnet-bridge does not support {field:?}")));
    }
    match inv.command {
        Command::Add => bridge_add(inv, conf, stdin).map(|r| Some(r.to_version(&conf.cni_version).to_string())),
        Command::Del => bridge_del(inv, conf, stdin).map(|()| None),
        Command::Check => bridge_check(inv, conf, stdin).map(|()| None),
        Command::Gc | Command::Status => delegate_ipam(inv, conf, stdin, inv.command).map(|_| None),
        Command::Version => Ok(Some(version_info())),
    }
}

/// What the pod side needs once IPAM has answered: addresses and routes.
type PodPlan = (Vec<IpNet>, Vec<(IpNet, Option<IpAddr>)>);

fn bridge_add(inv: &Invocation, conf: &NetConf, stdin: &[u8]) -> Result<CniResult, CniError> {
    let host_veth = host_veth_name(&inv.container_id, &inv.ifname);
    let host_ns = File::open("/proc/thread-self/ns/net").map_err(io_internal("opening the host namespace"))?;
    // The pod side starts at once and makes the veth while the bridge and IPAM are set up
    // here; it then waits for the addresses and routes (or for `None`: undo).
    let (plan_tx, plan_rx) = std::sync::mpsc::channel::<Option<PodPlan>>();
    // The pod side reports the new veth (its MAC, the host end's index) as soon as it exists,
    // so the node side can attach it while the pod side configures addresses.
    let (made_tx, made_rx) = std::sync::mpsc::channel::<(Option<String>, Option<u32>)>();
    let (ifname, peer, mtu, hairpin) = (inv.ifname.clone(), host_veth.clone(), conf.mtu, conf.hairpin_mode);
    let host_mac = veth_mac(&host_veth);
    let pod = netns::spawn_in(Path::new(&inv.netns), move || -> io::Result<()> {
        let nl = Netlink::connect()?;
        // The kernel refuses a name that exists: that is the reference plugin's check too.
        let link = nl.add_veth_with_peer_in(&ifname, &peer, &host_ns, mtu, Some(host_mac)).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                io::Error::new(io::ErrorKind::AlreadyExists, format!("container veth name provided ({ifname}) already exists"))
            } else {
                e
            }
        })?;
        let _ = made_tx.send((link.mac.clone(), link.peer_index));
        let Ok(Some((addrs, routes))) = plan_rx.recv() else {
            nl.delete_link(link.index)?;
            return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"));
        };
        if hairpin && addrs.iter().any(|a| a.addr().is_ipv6()) {
            // With hairpin on, the bridge reflects our own DAD probes back: IPv6 addresses
            // would be found "duplicate". The reference plugin turns DAD off for the same reason.
            let _ = dataplane::sysctl::set(&format!("net/ipv6/conf/{ifname}/accept_dad"), "0");
        }
        nl.set_up(link.index)?;
        for a in &addrs {
            nl.add_address(link.index, *a)?;
        }
        for (dst, gw) in &routes {
            nl.add_route(*dst, *gw, Some(link.index))?;
        }
        Ok(())
    })
    .map_err(|e| internal(format!("failed to open netns {:?}: {e}", inv.netns)))?;
    let pod_error = |pod: std::thread::JoinHandle<io::Result<()>>| match pod.join() {
        Ok(Err(e)) if e.kind() != io::ErrorKind::Interrupted => Some(internal(e.to_string())),
        Ok(_) => None,
        Err(_) => Some(internal("the pod-side thread panicked")),
    };

    let host_side = || -> Result<(Netlink, dataplane::LinkInfo, CniResult), CniError> {
        let nl = Netlink::connect().map_err(io_internal("netlink"))?;
        let br = nl.ensure_bridge(&conf.bridge, conf.mtu).map_err(|e| internal(format!("failed to create bridge {:?}: {e}", conf.bridge)))?;
        let result = delegate_ipam(inv, conf, stdin, Command::Add)?.ok_or_else(|| internal("IPAM returned no result"))?;
        if result.ips.is_empty() {
            let _ = delegate_ipam(inv, conf, stdin, Command::Del);
            return Err(internal("IPAM plugin returned missing IP config"));
        }
        Ok((nl, br, result))
    };
    let (nl, br, mut result) = match host_side() {
        Ok(ok) => ok,
        Err(e) => {
            let _ = plan_tx.send(None);
            // A failure of the pod side (e.g. the name exists) is what the reference reports first.
            return Err(pod_error(pod).unwrap_or(e));
        }
    };
    let routes = pod_routes(conf, &mut result);
    let _ = plan_tx.send(Some((result.ips.iter().map(|c| c.address).collect(), routes)));
    let undo = |nl: &Netlink| {
        let _ = delegate_ipam(inv, conf, stdin, Command::Del);
        if let Ok(Some(host)) = nl.link(&host_veth) {
            let _ = nl.delete_link(host.index);
        }
    };
    let Ok((pod_mac, host_index)) = made_rx.recv() else {
        // The veth was never made: the pod side says why.
        let _ = delegate_ipam(inv, conf, stdin, Command::Del);
        return Err(pod_error(pod).unwrap_or_else(|| internal("the pod side stopped")));
    };
    let host = HostVeth { name: host_veth.clone(), index: host_index, mac: host_mac };
    let plumbed = host_plumbing(inv, conf, &nl, &br, &host, pod_mac, &mut result);
    match (plumbed, pod_error(pod)) {
        (Ok(()), None) => Ok(result),
        (Err(e), _) | (Ok(()), Some(e)) => {
            // Leave nothing half-made: the addresses and the veth go.
            undo(&nl);
            Err(e)
        }
    }
}

/// Routes the pod gets: the IPAM routes (gateway defaulting to the address's), plus a default
/// route per family with `isDefaultGateway` (added to the result too).
fn pod_routes(conf: &NetConf, result: &mut CniResult) -> Vec<(IpNet, Option<IpAddr>)> {
    let mut routes: Vec<(IpNet, Option<IpAddr>)> =
        result.routes.iter().map(|r| (r.dst, r.gw.or_else(|| gateway_for(&result.ips, r.dst.addr().is_ipv4())))).collect();
    if conf.is_default_gateway {
        for ip in &result.ips {
            let default = IpNet::new(if ip.address.addr().is_ipv4() { [0u8; 4].into() } else { [0u16; 8].into() }, 0);
            if let (Some(gw), Ok(default)) = (ip.gateway, default)
                && !routes.iter().any(|(d, _)| *d == default)
            {
                routes.push((default, Some(gw)));
                result.routes.push(Route { dst: default, gw: Some(gw), mtu: None, priority: None });
            }
        }
    }
    routes
}

/// The node-side veth as the pod side created it.
struct HostVeth {
    name: String,
    /// Its index, as the kernel echoed it (looked up when it did not).
    index: Option<u32>,
    mac: [u8; 6],
}

/// A stable, locally administered MAC for a host-side veth (so the result needs no lookup).
fn veth_mac(host_veth: &str) -> [u8; 6] {
    let h = u32::from_str_radix(&host_veth[4..], 16).unwrap_or_default().to_be_bytes();
    [0x0a, 0x58, h[0], h[1], h[2], h[3]]
}

/// The node side once the pod side is done: bridge port, hairpin, gateway, forwarding.
fn host_plumbing(
    inv: &Invocation,
    conf: &NetConf,
    nl: &Netlink,
    br: &dataplane::LinkInfo,
    host: &HostVeth,
    pod_mac: Option<String>,
    result: &mut CniResult,
) -> Result<(), CniError> {
    let index = match host.index {
        Some(i) => i,
        None => nl.require(&host.name).map_err(io_internal("finding the host veth"))?.index,
    };
    nl.attach_up(index, br.index).map_err(io_internal("attaching the veth to the bridge"))?;
    if conf.hairpin_mode {
        nl.set_hairpin(index, true).map_err(io_internal("setting hairpin mode"))?;
    }
    if conf.is_gateway || conf.is_default_gateway {
        for ip in &result.ips {
            if let Some(gw) = ip.gateway {
                let addr = IpNet::new(gw, ip.address.prefix_len()).map_err(|e| internal(e.to_string()))?;
                nl.add_address(br.index, addr).map_err(io_internal("adding the gateway address to the bridge"))?;
            }
        }
        enable_forwarding(&result.ips).map_err(io_internal("enabling IP forwarding"))?;
    }
    // MACs as read before enslaving, like the reference plugin reports them.
    result.interfaces = vec![
        Interface { name: conf.bridge.clone(), mac: br.mac.clone(), mtu: br.mtu, sandbox: None },
        Interface { name: host.name.clone(), mac: Some(format_mac(&host.mac)), mtu: conf.mtu.or(br.mtu), sandbox: None },
        Interface { name: inv.ifname.clone(), mac: pod_mac, mtu: conf.mtu.or(br.mtu), sandbox: Some(inv.netns.clone()) },
    ];
    for ip in &mut result.ips {
        ip.interface = Some(2);
    }
    if conf.ip_masq {
        let subnets: Vec<IpNet> = result.ips.iter().map(|c| c.address.trunc()).collect();
        let pods: Vec<IpAddr> = result.ips.iter().map(|c| c.address.addr()).collect();
        masquerade::apply(&masquerade::add_script(&conf.name, &subnets, &pods)).map_err(io_internal("setting up ipMasq"))?;
    }
    Ok(())
}

fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn gateway_for(ips: &[IpConfig], v4: bool) -> Option<IpAddr> {
    ips.iter().find(|c| c.address.addr().is_ipv4() == v4).and_then(|c| c.gateway)
}

fn enable_forwarding(ips: &[IpConfig]) -> io::Result<()> {
    if ips.iter().any(|c| c.address.addr().is_ipv4()) {
        dataplane::sysctl::set("net/ipv4/ip_forward", "1")?;
    }
    if ips.iter().any(|c| c.address.addr().is_ipv6()) {
        dataplane::sysctl::set("net/ipv6/conf/all/forwarding", "1")?;
    }
    Ok(())
}

fn bridge_del(inv: &Invocation, conf: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    delegate_ipam(inv, conf, stdin, Command::Del)?;
    if inv.netns.is_empty() {
        return Ok(());
    }
    // The pod's addresses, for ipMasq: from prevResult, else read off the interface below.
    let mut pod_ips: Vec<IpAddr> =
        conf.prev_result.as_ref().and_then(|v| CniResult::from_value(v).ok()).map(|r| r.ips.iter().map(|c| c.address.addr()).collect()).unwrap_or_default();
    let path = Path::new(&inv.netns);
    if path.exists() {
        let ifname = inv.ifname.clone();
        let tombstone = format!("pnd{}", &host_veth_name(&inv.container_id, &inv.ifname)[4..]);
        let retired = tombstone.clone();
        let found = netns::run_in(path, move || -> io::Result<Option<Vec<IpNet>>> {
            let nl = Netlink::connect()?;
            let Some(link) = nl.link(&ifname)? else {
                return Ok(None);
            };
            let addrs = nl.addresses(link.index)?;
            // A tombstone left by an earlier DEL whose reaper has not finished: delete it now.
            if let Some(old) = nl.link(&retired)? {
                nl.delete_link(old.index)?;
            }
            nl.retire_link(link.index, &retired)?;
            Ok(Some(addrs))
        })
        .map_err(io_internal("entering the container namespace"))?
        .map_err(io_internal("removing the container interface"))?;
        if let Some(addrs) = found {
            spawn_reaper(&inv.netns, &tombstone);
            if pod_ips.is_empty() {
                pod_ips = addrs.iter().map(IpNet::addr).filter(|ip| !is_link_local(ip)).collect();
            }
        }
    }
    if conf.ip_masq && !pod_ips.is_empty() {
        masquerade::apply(&masquerade::del_script(&conf.name, &pod_ips)).map_err(io_internal("tearing down ipMasq"))?;
    }
    Ok(())
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    }
}

/// The environment variable that turns `podnet-cni` into a reaper: `<netns path>\n<link>`.
pub const REAP_ENV: &str = "PODNET_CNI_REAP";

/// Deletes the retired interface in a detached process, so that DEL returns without waiting
/// for the kernel's ~20 ms veth teardown. If the runtime removes the namespace first, the
/// kernel deletes the interface with it.
fn spawn_reaper(netns_path: &str, link: &str) {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let _ =
        Process::new(exe).env_clear().env(REAP_ENV, format!("{netns_path}\n{link}")).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
}

/// The reaper's work (see [`spawn_reaper`]).
pub fn reap(spec: &str) -> io::Result<()> {
    let (path, link) = spec.split_once('\n').ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad reap spec"))?;
    let link = link.to_owned();
    netns::run_in(Path::new(path), move || -> io::Result<()> {
        let nl = Netlink::connect()?;
        match nl.link(&link)? {
            Some(l) => nl.delete_link(l.index),
            None => Ok(()),
        }
    })?
}

fn bridge_check(inv: &Invocation, conf: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    let prev = conf.prev_result.as_ref().ok_or_else(|| internal("Required prevResult missing"))?;
    let prev = CniResult::from_value(prev)?;
    delegate_ipam(inv, conf, stdin, Command::Check)?;
    let nl = Netlink::connect().map_err(io_internal("netlink"))?;
    let br = nl.link(&conf.bridge).map_err(io_internal("netlink"))?.ok_or_else(|| internal(format!("bridge {} not found", conf.bridge)))?;
    if br.kind.as_deref() != Some("bridge") {
        return Err(internal(format!("{} is not a bridge", conf.bridge)));
    }
    let ifname = inv.ifname.clone();
    let want_mac = prev.interfaces.iter().find(|i| i.name == inv.ifname && i.sandbox.is_some()).and_then(|i| i.mac.clone());
    let want_addrs: Vec<IpNet> = prev.ips.iter().map(|c| c.address).collect();
    netns::run_in(Path::new(&inv.netns), move || -> Result<(), CniError> {
        let nl = Netlink::connect().map_err(io_internal("netlink"))?;
        let link = nl.link(&ifname).map_err(io_internal("netlink"))?.ok_or_else(|| internal(format!("Error: Container interface {ifname} not found")))?;
        if let Some(mac) = want_mac
            && link.mac.as_deref() != Some(mac.as_str())
        {
            return Err(internal(format!("Interface {ifname} Mac doesn't match: {mac} not found")));
        }
        let have = nl.addresses(link.index).map_err(io_internal("netlink"))?;
        for a in want_addrs {
            if !have.contains(&a) {
                return Err(internal(format!("Failed to find address {a} on interface {ifname}")));
            }
        }
        Ok(())
    })
    .map_err(io_internal("entering the container namespace"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_are_stable_and_short() {
        let a = host_veth_name("abc", "eth0");
        assert_eq!(a, host_veth_name("abc", "eth0"));
        assert_ne!(a, host_veth_name("abc", "eth1"));
        assert!(a.len() <= 15);
    }

    #[test]
    fn version_needs_no_config() {
        let out = run("podnet-cni", |k| (k == "CNI_COMMAND").then(|| "VERSION".to_owned()), b"").unwrap().unwrap();
        assert!(out.contains("\"1.1.0\""));
    }

    #[test]
    fn unknown_plugin_types_are_invalid_config() {
        let env = |k: &str| match k {
            "CNI_COMMAND" => Some("STATUS".to_owned()),
            _ => None,
        };
        let (e, v) = run("podnet-cni", env, br#"{"cniVersion":"1.0.0","name":"n","type":"macvlan"}"#).unwrap_err();
        assert_eq!((e.code, v.as_str()), (Code::InvalidNetworkConfig, "1.0.0"));
    }

    #[test]
    fn unimplemented_reference_fields_are_refused_not_ignored() {
        assert_eq!(unsupported_bridge_field(br#"{"vlan": 100}"#), Some("vlan"));
        assert_eq!(unsupported_bridge_field(br#"{"vlan": 0, "macspoofchk": false}"#), None);
        assert_eq!(unsupported_bridge_field(br#"{"vlanTrunk": [{"id": 5}]}"#), Some("vlanTrunk"));
    }

    #[test]
    fn status_says_unavailable_when_leases_cannot_be_kept() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let env = |k: &str| (k == "CNI_COMMAND").then(|| "STATUS".to_owned());
        let conf = serde_json::json!({"cniVersion": "1.1.0", "name": "n", "type": "podnet-ipam",
            "ipam": {"type": "podnet-ipam", "ranges": [[{"subnet": "10.0.0.0/24"}]], "dataDir": file.path()}});
        let (e, _) = run("podnet-ipam", env, conf.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.code, Code::PluginNotAvailable);
        let dir = tempfile::tempdir().unwrap();
        let conf = serde_json::json!({"cniVersion": "1.1.0", "name": "n", "type": "podnet-ipam",
            "ipam": {"type": "podnet-ipam", "ranges": [[{"subnet": "10.0.0.0/24"}]], "dataDir": dir.path()}});
        assert_eq!(run("podnet-ipam", env, conf.to_string().as_bytes()).unwrap(), None);
    }

    #[test]
    fn a_lock_held_too_long_is_try_again_later() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::from_config(&serde_json::json!({"ranges": [[{"subnet": "10.0.0.0/24"}]], "dataDir": dir.path()})).unwrap();
        let _held = DiskStore::open(&ipam.data_dir, "n").unwrap();
        // Another open in this process contends for the same flock (a separate file description).
        let wait = std::time::Duration::from_millis(50);
        let started = std::time::Instant::now();
        let err = DiskStore::open_waiting(&ipam.data_dir, "n", wait).err().unwrap();
        assert!(started.elapsed() >= wait);
        assert_eq!(store_error(err).code, Code::TryAgainLater);
    }

    #[test]
    fn the_binary_name_decides_the_role() {
        assert_eq!(role_of("/opt/cni/bin/podnet-ipam"), Some(IPAM_TYPE));
        assert_eq!(role_of("host-local"), Some(IPAM_TYPE));
        assert_eq!(role_of("/usr/lib/cni/bridge"), Some(BRIDGE_TYPE));
        assert_eq!(role_of("/usr/local/bin/podnet-cni"), None);
    }
}
