//! BGP routing of the pod network (Calico's model) through BIRD 2, the routing daemon Calico
//! itself runs: podnet writes each node's configuration and supervises the daemon; the BGP is
//! BIRD's. Every node announces its pod CIDR (and the LoadBalancer/external IPs it may serve)
//! to a full iBGP mesh, or to route reflectors; routes learned over BGP land in the node's
//! kernel table. An external router (the lab's top-of-rack) may peer over eBGP and learn it all.
//! The configuration is made purely ([`config`]); [`Bird`] starts, reconfigures and restarts
//! the daemon in a network namespace.

use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

/// A BGP speaker: its name (for the session's name) and address (its router id too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Speaker {
    /// A node's name, or `external`.
    pub name: String,
    /// Its underlay address.
    pub ip: Ipv4Addr,
    /// Its underlay IPv6 address, when it routes IPv6 too (sessions per family, as Calico's).
    pub ip6: Option<Ipv6Addr>,
}

impl Speaker {
    /// Its address of a family, if it has one.
    fn address(&self, f: Family) -> Option<IpAddr> {
        match f {
            Family::V4 => Some(IpAddr::V4(self.ip)),
            Family::V6 => self.ip6.map(IpAddr::V6),
        }
    }
}

/// An address family: BIRD's channel and the suffix of its protocols' names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn channel(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }

    /// IPv4's protocols keep their names (`node_node_2`); IPv6's end in `6`.
    fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "",
            Family::V6 => "6",
        }
    }

    fn holds(self, net: &ipnet::IpNet) -> bool {
        net.addr().is_ipv6() == (self == Family::V6)
    }
}

/// The families a speaker routes: IPv4 always, IPv6 when it has an IPv6 address.
fn families(s: &Speaker) -> Vec<Family> {
    let v6 = s.ip6.map(|_| Family::V6);
    std::iter::once(Family::V4).chain(v6).collect()
}

/// One node's routing, as its configuration says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRouting {
    /// This node.
    pub me: Speaker,
    /// The cluster's AS number (iBGP among the nodes).
    pub asn: u32,
    /// Whether this node reflects routes to `peers` (its clients).
    pub reflector: bool,
    /// The nodes it peers with: every other node (full mesh); a client's reflectors; a
    /// reflector's clients and the other reflectors.
    pub peers: Vec<Speaker>,
    /// The other reflectors, for a reflector (they peer as ordinary iBGP, not as clients).
    pub reflector_peers: Vec<Speaker>,
    /// An external router and its AS (eBGP): it learns every route this node announces.
    pub external: Option<(Speaker, u32)>,
    /// What this node announces: its pod CIDR(s), and the LoadBalancer/external IPs it may serve.
    pub announce: Vec<ipnet::IpNet>,
}

/// BGP's hold time in seconds: its legal minimum, so that a node that goes silent is withdrawn
/// within 3 s (one that stops cleanly closes its sessions and is withdrawn at once).
pub const HOLD_TIME: u32 = 3;

/// A session's name in BIRD: letters, digits and underscores.
fn session(prefix: &str, s: &Speaker) -> String {
    let name: String = s.name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    format!("{prefix}_{name}")
}

/// The node's `bird.conf`: per family a static protocol with what it announces, a kernel
/// protocol for what it learns, and its sessions (IPv6 ones between IPv6 addresses).
pub fn config(r: &NodeRouting) -> String {
    let mut c = String::new();
    let _ =
        writeln!(c, "# podnet: {}'s BGP ({}). Written by podnet; changes are overwritten.", r.me.name, if r.reflector { "route reflector" } else { "node" });
    let _ = writeln!(c, "router id {};", r.me.ip);
    c.push_str("protocol device { scan time 10; }\n");
    for f in families(&r.me) {
        let Some(me) = r.me.address(f) else { continue };
        let (ch, sfx) = (f.channel(), f.suffix());
        // What this node announces: blackholes in BIRD's table only (the kernel gets BGP's
        // routes alone), so that the announcement stays while any pod of the CIDR lives.
        let _ = writeln!(c, "protocol static announced{sfx} {{\n  {ch};");
        for net in r.announce.iter().filter(|n| f.holds(n)) {
            let _ = writeln!(c, "  route {} blackhole;", net.trunc());
        }
        c.push_str("}\n");
        // Learned routes into the kernel; several nodes announcing one address make an ECMP route.
        let _ = writeln!(c, "protocol kernel kernel{ch} {{\n  {ch} {{ import none; export where source = RTS_BGP; }};\n  merge paths on;\n  scan time 10;\n}}");
        // Sessions: direct (one underlay), low timers, no graceful restart (a dead node's
        // routes must go, not be kept for a restart), fast reconnects.
        let _ = writeln!(
            c,
            "template bgp mesh{sfx} {{\n  local {me} as {asn};\n  direct;\n  hold time {HOLD_TIME}; keepalive time 1; startup hold time 10;\n  connect delay time 1; connect retry time 2; error wait time 1, 5;\n  graceful restart off;\n  {ch} {{ import all; export where source = RTS_STATIC; add paths on; }};\n}}",
            asn = r.asn
        );
        let reflected = format!("{ch} {{ import all; export where source ~ [RTS_STATIC, RTS_BGP]; add paths on; }};");
        for p in &r.peers {
            let Some(ip) = p.address(f) else { continue };
            if r.reflector {
                let _ = writeln!(
                    c,
                    "protocol bgp {} from mesh{sfx} {{\n  neighbor {ip} as {};\n  rr client; rr cluster id {};\n  {reflected}\n}}",
                    session(&format!("client{sfx}"), p),
                    r.asn,
                    r.me.ip
                );
            } else {
                let _ = writeln!(c, "protocol bgp {} from mesh{sfx} {{ neighbor {ip} as {}; }}", session(&format!("node{sfx}"), p), r.asn);
            }
        }
        for p in &r.reflector_peers {
            let Some(ip) = p.address(f) else { continue };
            let _ = writeln!(c, "protocol bgp {} from mesh{sfx} {{\n  neighbor {ip} as {};\n  {reflected}\n}}", session(&format!("reflector{sfx}"), p), r.asn);
        }
        if let Some((ext, asn)) = &r.external
            && let Some(ip) = ext.address(f)
        {
            let _ = writeln!(
                c,
                "protocol bgp {} from mesh{sfx} {{\n  neighbor {ip} as {asn};\n  {ch} {{ import none; export where source = RTS_STATIC; }};\n}}",
                session(&format!("peer{sfx}"), ext)
            );
        }
    }
    c
}

/// The external router's `bird.conf`: eBGP from its own AS to every node, every route it
/// learns installed in its kernel (ECMP over the nodes that announce an address).
pub fn external_config(me: &Speaker, asn: u32, nodes: &[Speaker], cluster_asn: u32) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "# podnet: the external router's BGP. Written by podnet; changes are overwritten.");
    let _ = writeln!(c, "router id {};", me.ip);
    c.push_str("protocol device { scan time 10; }\n");
    for f in families(me) {
        let Some(local) = me.address(f) else { continue };
        let (ch, sfx) = (f.channel(), f.suffix());
        let _ = writeln!(c, "protocol kernel kernel{ch} {{\n  {ch} {{ import none; export where source = RTS_BGP; }};\n  merge paths on;\n  scan time 10;\n}}");
        let _ = writeln!(
            c,
            "template bgp node{sfx} {{\n  local {local} as {asn};\n  hold time {HOLD_TIME}; keepalive time 1; startup hold time 10;\n  connect delay time 1; connect retry time 2; error wait time 1, 5;\n  graceful restart off;\n  {ch} {{ import all; export none; add paths on; }};\n}}"
        );
        for n in nodes {
            if let Some(ip) = n.address(f) {
                let _ = writeln!(c, "protocol bgp {} from node{sfx} {{ neighbor {ip} as {cluster_asn}; }}", session(&format!("node{sfx}"), n));
            }
        }
    }
    c
}

/// Which nodes reflect routes: the first `count` (0: a full mesh).
pub fn routing(nodes: &[(Speaker, Vec<ipnet::IpNet>)], asn: u32, reflectors: usize, external: Option<(Speaker, u32)>) -> Vec<NodeRouting> {
    let speakers: Vec<&Speaker> = nodes.iter().map(|(s, _)| s).collect();
    let reflectors = reflectors.min(nodes.len());
    nodes
        .iter()
        .enumerate()
        .map(|(i, (me, announce))| {
            let others =
                |range: std::ops::Range<usize>| -> Vec<Speaker> { range.filter(|j| *j != i).filter_map(|j| speakers.get(j)).map(|s| (*s).clone()).collect() };
            let (reflector, peers, reflector_peers) = match reflectors {
                0 => (false, others(0..nodes.len()), Vec::new()),
                n if i < n => (true, others(n..nodes.len()), others(0..n)),
                n => (false, others(0..n), Vec::new()),
            };
            NodeRouting { me: me.clone(), asn, reflector, peers, reflector_peers, external: external.clone(), announce: announce.clone() }
        })
        .collect()
}

/// A BIRD daemon in a network namespace: its configuration file, control socket and pid file.
#[derive(Clone, Debug)]
pub struct Bird {
    /// The namespace it runs in (a path under /run/netns).
    pub netns: PathBuf,
    /// Its files' stem: `STEM.conf`, `STEM.ctl`, `STEM.pid`, `STEM.log`.
    pub stem: PathBuf,
}

/// How a supervision round went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Supervised {
    /// Running with this configuration already.
    Unchanged,
    /// Running; the new configuration was loaded.
    Reconfigured,
    /// It was not running: started.
    Started,
}

impl Bird {
    fn file(&self, ext: &str) -> PathBuf {
        self.stem.with_extension(ext)
    }

    /// Its control socket (for `birdc -s`).
    pub fn socket(&self) -> PathBuf {
        self.file("ctl")
    }

    /// The daemon's pid, if it runs (its pid file names a live `bird`).
    pub fn pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.file("pid")).ok()?.trim().parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        Path::new(std::str::from_utf8(argv0).ok()?).file_name().is_some_and(|n| n == "bird").then_some(pid)
    }

    /// Makes the daemon run with `config`: started when not running (written first, checked by
    /// `bird -p`), reconfigured when its file differs.
    pub fn supervise(&self, config: &str) -> io::Result<Supervised> {
        let path = self.file("conf");
        let same = std::fs::read_to_string(&path).is_ok_and(|old| old == config);
        if !same {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = self.file("conf.tmp");
            std::fs::write(&tmp, config)?;
            let checked = std::process::Command::new("bird").arg("-p").arg("-c").arg(&tmp).output().map_err(not_installed)?;
            if !checked.status.success() {
                return Err(io::Error::other(format!("bird -p {}: {}", tmp.display(), String::from_utf8_lossy(&checked.stderr).trim())));
            }
            std::fs::rename(&tmp, &path)?;
        }
        if self.pid().is_none() {
            self.start()?;
            return Ok(Supervised::Started);
        }
        if same {
            return Ok(Supervised::Unchanged);
        }
        let out = self.birdc(&["configure"])?;
        if out.contains("Reconfigured") || out.contains("Reconfiguration in progress") || out.contains("Reconfiguration not needed") {
            Ok(Supervised::Reconfigured)
        } else {
            Err(io::Error::other(format!("birdc configure: {}", out.trim())))
        }
    }

    /// Starts the daemon (it forks into the background and writes its pid file).
    fn start(&self) -> io::Result<()> {
        let (conf, ctl, pid, log) = (self.file("conf"), self.file("ctl"), self.file("pid"), self.file("log"));
        let _ = std::fs::remove_file(&ctl);
        let out = dataplane::netns::run_in(&self.netns, move || {
            let log = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
            std::process::Command::new("bird").arg("-c").arg(&conf).arg("-s").arg(&ctl).arg("-P").arg(&pid).stderr(log).output().map_err(not_installed)
        })??;
        if !out.status.success() {
            return Err(io::Error::other(format!("bird: {}", String::from_utf8_lossy(&out.stderr).trim())));
        }
        Ok(())
    }

    /// Stops the daemon (if it runs) and removes its files.
    pub fn stop(&self) {
        if let Some(pid) = self.pid() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
            for _ in 0..50 {
                if self.pid().is_none() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        for ext in ["conf", "ctl", "pid", "log", "conf.tmp"] {
            let _ = std::fs::remove_file(self.file(ext));
        }
    }

    /// `birdc -s SOCKET ARGS`: what it printed.
    pub fn birdc(&self, args: &[&str]) -> io::Result<String> {
        let out = std::process::Command::new("birdc").arg("-s").arg(self.socket()).args(args).output().map_err(not_installed)?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(text)
        } else {
            Err(io::Error::other(format!("birdc {}: {}{}", args.join(" "), text.trim(), String::from_utf8_lossy(&out.stderr).trim())))
        }
    }
}

fn not_installed(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::NotFound { io::Error::new(e.kind(), "BGP mode runs BIRD 2: `bird` is not installed (apt-get install bird2)") } else { e }
}

/// One BGP session as `birdc show protocols` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Its name (`node_node_2`, `client_node_3`, `peer_external`, ...).
    pub name: String,
    /// BIRD's state (`up`, `start`, ...).
    pub state: String,
    /// The BGP state and last error (`Established`, `Active  Socket: Connection refused`).
    pub info: String,
}

/// The BGP sessions in `birdc show protocols` output.
pub fn parse_sessions(text: &str) -> Vec<Session> {
    text.lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            if words.get(1) != Some(&"BGP") || words.len() < 5 {
                return None;
            }
            Some(Session { name: words[0].to_owned(), state: words[3].to_owned(), info: words[5..].join(" ") })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speaker(n: u8) -> (Speaker, Vec<ipnet::IpNet>) {
        (Speaker { name: format!("node-{n}"), ip: Ipv4Addr::new(172, 18, 0, n + 1), ip6: None }, vec![format!("10.244.{}.0/24", n - 1).parse().unwrap()])
    }

    #[test]
    fn a_full_mesh_peers_every_node_with_every_other() {
        let nodes: Vec<_> = (1..=3).map(speaker).collect();
        let r = routing(&nodes, 64512, 0, None);
        assert_eq!(r[0].peers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["node-2", "node-3"]);
        assert!(r.iter().all(|n| !n.reflector && n.reflector_peers.is_empty()));
        let c = config(&r[1]);
        assert!(c.contains("router id 172.18.0.3;"), "{c}");
        assert!(c.contains("route 10.244.1.0/24 blackhole;"), "{c}");
        assert!(c.contains("protocol bgp node_node_1 from mesh { neighbor 172.18.0.2 as 64512; }"), "{c}");
        assert!(c.contains("graceful restart off;") && c.contains("hold time 3;"), "{c}");
    }

    #[test]
    fn reflectors_peer_with_their_clients_and_each_other_and_clients_only_with_reflectors() {
        let nodes: Vec<_> = (1..=4).map(speaker).collect();
        let r = routing(&nodes, 64512, 2, None);
        let names = |v: &[Speaker]| v.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        assert!(r[0].reflector && r[1].reflector && !r[2].reflector);
        assert_eq!(names(&r[0].peers), ["node-3", "node-4"]);
        assert_eq!(names(&r[0].reflector_peers), ["node-2"]);
        assert_eq!(names(&r[3].peers), ["node-1", "node-2"]);
        let c = config(&r[0]);
        assert!(c.contains("rr client; rr cluster id 172.18.0.2;"), "{c}");
        assert!(!config(&r[3]).contains("rr client"));
    }

    #[test]
    fn dual_stack_nodes_announce_each_family_over_sessions_of_that_family() {
        let nodes: Vec<_> = (1..=2u8)
            .map(|n| {
                let (mut s, mut announce) = speaker(n);
                s.ip6 = Some(format!("fd00:172:18::{}", n + 1).parse().unwrap());
                announce.push(format!("fd00:10:244:{}::/64", n - 1).parse().unwrap());
                (s, announce)
            })
            .collect();
        let r = routing(&nodes, 64512, 0, None);
        let c = config(&r[0]);
        assert!(c.contains("protocol static announced {\n  ipv4;\n  route 10.244.0.0/24 blackhole;\n}"), "{c}");
        assert!(c.contains("protocol static announced6 {\n  ipv6;\n  route fd00:10:244::/64 blackhole;\n}"), "{c}");
        assert!(c.contains("protocol bgp node_node_2 from mesh { neighbor 172.18.0.3 as 64512; }"), "{c}");
        assert!(c.contains("protocol bgp node6_node_2 from mesh6 { neighbor fd00:172:18::3 as 64512; }"), "{c}");
        assert!(c.contains("local fd00:172:18::2 as 64512;") && c.contains("protocol kernel kernelipv6"), "{c}");
        // An IPv4-only node has no IPv6 protocols at all.
        assert!(!config(&routing(&[speaker(1), speaker(2)], 64512, 0, None)[0]).contains("ipv6"));
    }

    #[test]
    fn sessions_parse_from_birdc() {
        let text = "BIRD 2.0.12 ready.\nName       Proto      Table      State  Since         Info\ndevice1    Device     ---        up     05:18:49.367  \nnode_node_2 BGP        ---        start  05:19:00.490  Active        Socket: Connection refused\nnode_node_3 BGP        ---        up     05:18:50.181  Established   \n";
        let s = parse_sessions(text);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].name.as_str(), s[0].state.as_str(), s[0].info.as_str()), ("node_node_2", "start", "Active Socket: Connection refused"));
        assert_eq!(s[1].info, "Established");
    }
}
