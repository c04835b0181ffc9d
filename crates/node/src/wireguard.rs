//! Node-to-node encryption (`--encrypt wireguard`, Weave's and Calico's promise): the traffic
//! between nodes' pods goes through a TUN device per node and leaves it as WireGuard over UDP
//! 51820 on the underlay. This kernel has no wireguard module, so the protocol runs in userspace:
//! Cloudflare's boringtun does the Noise handshakes, timers and AEAD; this module owns the device,
//! the socket and cryptokey routing (a peer's packets are accepted only from its pod CIDR).
//! Each node's private key stays in its own file; public keys are published beside them.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};

/// The TUN device of a node.
pub const DEVICE: &str = "podnet-wg";
/// WireGuard's port.
pub const PORT: u16 = 51820;
/// What WireGuard adds to a packet over an IPv4 underlay: outer IPv4 (20) and UDP (8) headers,
/// its data header (16) and the AEAD tag (16). Pods get the underlay's MTU minus this, so that
/// nothing fragments.
pub const OVERHEAD: u32 = 60;

/// A key pair: a node's private key never leaves its file.
#[derive(Clone)]
pub struct KeyPair {
    secret: [u8; 32],
}

impl KeyPair {
    /// A new key from the kernel's random source.
    pub fn generate() -> io::Result<KeyPair> {
        let mut secret = [0u8; 32];
        File::open("/dev/urandom")?.read_exact(&mut secret)?;
        Ok(KeyPair { secret })
    }

    /// The private key (for the tunnel of the node it belongs to).
    pub fn secret(&self) -> [u8; 32] {
        self.secret
    }

    /// The public half, as peers know it.
    pub fn public(&self) -> [u8; 32] {
        PublicKey::from(&StaticSecret::from(self.secret)).to_bytes()
    }

    /// Reads `DIR/NAME.key`, or makes it (mode 0600) and publishes `DIR/NAME.pub` when missing.
    pub fn load_or_create(dir: &Path, name: &str) -> io::Result<KeyPair> {
        let path = dir.join(format!("{name}.key"));
        if let Ok(text) = std::fs::read_to_string(&path) {
            return Ok(KeyPair { secret: decode(text.trim()).ok_or_else(|| io::Error::other(format!("{}: not a WireGuard key", path.display())))? });
        }
        let key = KeyPair::generate()?;
        key.save(dir, name)?;
        Ok(key)
    }

    /// Writes `DIR/NAME.key` (0600) and `DIR/NAME.pub`, each renamed into place.
    pub fn save(&self, dir: &Path, name: &str) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".{name}.key.tmp"));
        let _ = std::fs::remove_file(&tmp);
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?.write_all(format!("{}\n", encode(&self.secret)).as_bytes())?;
        std::fs::rename(&tmp, dir.join(format!("{name}.key")))?;
        let tmp = dir.join(format!(".{name}.pub.tmp"));
        std::fs::write(&tmp, format!("{}\n", encode(&self.public())))?;
        std::fs::rename(&tmp, dir.join(format!("{name}.pub")))
    }
}

/// A published public key (`DIR/NAME.pub`).
pub fn read_public(dir: &Path, name: &str) -> io::Result<[u8; 32]> {
    let path = dir.join(format!("{name}.pub"));
    let text = std::fs::read_to_string(&path)?;
    decode(text.trim()).ok_or_else(|| io::Error::other(format!("{}: not a WireGuard key", path.display())))
}

/// Keys as `wg` writes them: base64 of the 32 bytes.
pub fn encode(key: &[u8; 32]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// The Node annotation that publishes a node's public key on a real cluster (Calico's
/// `projectcalico.org/WireguardPublicKey`, in podnet's name).
pub const PUBLIC_KEY_ANNOTATION: &str = "podnet.io/wireguard-public-key";

/// Every other Node that published a public key, as a peer: its IPv4 InternalIP (the
/// endpoint) and its pod CIDRs (what it may send from and receives). Pure.
pub fn peers_of(state: &model::ClusterState, me: &str) -> Vec<Peer> {
    let mut out: Vec<Peer> = state
        .nodes
        .iter()
        .filter(|n| n.metadata.name.as_deref() != Some(me))
        .filter_map(|n| {
            let public = decode(n.metadata.annotations.as_ref()?.get(PUBLIC_KEY_ANNOTATION)?.trim())?;
            let ip = crate::pod_network::internal_ipv4(n)?;
            let allowed: Vec<ipnet::IpNet> = model::cluster::node_pod_cidrs(n).into_iter().map(|c| c.trunc()).collect();
            (!allowed.is_empty()).then(|| Peer { name: n.metadata.name.clone().unwrap_or_default(), endpoint: SocketAddrV4::new(ip, PORT), public, allowed })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Decodes a key as `wg` writes it.
pub fn decode(text: &str) -> Option<[u8; 32]> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).ok()?.try_into().ok()
}

/// One peer node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its name (for logs).
    pub name: String,
    /// Where its WireGuard listens: its underlay address, port 51820.
    pub endpoint: SocketAddrV4,
    /// Its public key.
    pub public: [u8; 32],
    /// The addresses it may send from and receives: its pod CIDRs (one per family).
    pub allowed: Vec<ipnet::IpNet>,
}

/// A node's tunnel settings; a change (a rotated key, a peer) rebuilds its sessions.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// Its private key.
    pub secret: [u8; 32],
    /// Its peers.
    pub peers: Vec<Peer>,
}

/// What a running tunnel counts.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    /// Packets from the pods encrypted and sent.
    pub sent: u64,
    /// Packets received and decrypted to the pods.
    pub received: u64,
    /// Packets dropped: no peer for the destination, a source outside the peer's pod CIDR, or
    /// not authentic.
    pub dropped: u64,
}

/// A node's tunnel, running on its own thread (in the node's namespace) until dropped.
pub struct Tunnel {
    netns: PathBuf,
    settings: Arc<Mutex<(u64, Settings)>>,
    stop: Arc<AtomicBool>,
    counters: Arc<Mutex<Counters>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Session {
    peer: Peer,
    tunn: Tunn,
}

fn sessions(s: &Settings) -> Vec<Session> {
    s.peers
        .iter()
        .enumerate()
        .map(|(i, p)| Session {
            peer: p.clone(),
            tunn: Tunn::new(StaticSecret::from(s.secret), PublicKey::from(p.public), None, None, u32::try_from(i).unwrap_or(0) << 8, None),
        })
        .collect()
}

/// The destination of an IPv4 or IPv6 packet read from the device.
fn destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(packet.get(16..20)?).ok()?))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(packet.get(24..40)?).ok()?))),
        _ => None,
    }
}

impl Peer {
    fn holds(&self, ip: IpAddr) -> bool {
        self.allowed.iter().any(|net| net.contains(&ip))
    }
}

impl Tunnel {
    /// Makes the node's device (MTU `mtu`, `address` on it: the node's own end for traffic it
    /// sends to other nodes' pods; `address6` for IPv6 pods), a route to each peer's pod CIDRs
    /// through it, the UDP socket, and starts the loop. Runs in the namespace at `netns`.
    pub fn start(netns: &Path, address: Ipv4Addr, address6: Option<Ipv6Addr>, mtu: u32, settings: Settings) -> io::Result<Tunnel> {
        let routes = routes_of(&settings);
        let (tun, socket) = dataplane::netns::run_in(netns, move || -> io::Result<(File, UdpSocket)> {
            let tun = dataplane::tun::create(DEVICE)?;
            let nl = dataplane::Netlink::connect()?;
            let link = nl.require(DEVICE)?;
            nl.set_mtu_up(link.index, mtu)?;
            nl.add_address(link.index, ipnet::IpNet::new(IpAddr::V4(address), 32).map_err(io::Error::other)?)?;
            if let Some(a6) = address6 {
                nl.add_address(link.index, ipnet::IpNet::new(IpAddr::V6(a6), 128).map_err(io::Error::other)?)?;
            }
            for r in routes {
                nl.add_route(r, None, Some(link.index))?;
            }
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PORT))?;
            Ok((tun, socket))
        })??;
        socket.set_nonblocking(true)?;
        nix::fcntl::fcntl(tun.as_fd(), nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK)).map_err(io::Error::from)?;
        let settings = Arc::new(Mutex::new((0, settings)));
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Mutex::new(Counters::default()));
        let (s, st, c) = (Arc::clone(&settings), Arc::clone(&stop), Arc::clone(&counters));
        let thread = std::thread::Builder::new().name("wireguard".into()).spawn(move || run(tun, socket, &s, &st, &c))?;
        Ok(Tunnel { netns: netns.to_owned(), settings, stop, counters, thread: Some(thread) })
    }

    /// New settings (a rotated key, a peer come or gone): the sessions are made anew, with a new
    /// handshake on the next packet, and the device's routes follow the peers' pod CIDRs. The
    /// same settings change nothing.
    pub fn update(&self, settings: Settings) -> io::Result<()> {
        let mut current = self.settings.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.1 == settings {
            return Ok(());
        }
        let (old, new) = (routes_of(&current.1), routes_of(&settings));
        *current = (current.0 + 1, settings);
        drop(current);
        if old == new {
            return Ok(());
        }
        dataplane::netns::run_in(&self.netns, move || -> io::Result<()> {
            let nl = dataplane::Netlink::connect()?;
            let link = nl.require(DEVICE)?;
            let have = nl.all_routes()?;
            for r in have.iter().filter(|r| r.oif == Some(link.index) && old.contains(&r.dst) && !new.contains(&r.dst)) {
                nl.delete_route(r.dst, None)?;
            }
            for dst in new.iter().filter(|d| !have.iter().any(|r| r.dst == **d && r.oif == Some(link.index))) {
                nl.add_route(*dst, None, Some(link.index))?;
            }
            Ok(())
        })?
    }

    /// What it counted so far.
    pub fn counters(&self) -> Counters {
        *self.counters.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The routes through the device: every peer's pod CIDRs.
fn routes_of(settings: &Settings) -> Vec<ipnet::IpNet> {
    let mut out: Vec<ipnet::IpNet> = settings.peers.iter().flat_map(|p| p.allowed.iter().copied()).collect();
    out.sort();
    out
}

/// The loop: device → encrypt → peer; socket → decrypt → device; timers every 100 ms.
fn run(mut tun: File, socket: UdpSocket, settings: &Mutex<(u64, Settings)>, stop: &AtomicBool, counters: &Mutex<Counters>) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let (mut generation, mut sessions) = {
        let s = settings.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (s.0, self::sessions(&s.1))
    };
    let mut packet = vec![0u8; 65536];
    let mut out = vec![0u8; 65536 + 64];
    let mut timers = Instant::now();
    let mut count = Counters::default();
    while !stop.load(Ordering::Relaxed) {
        {
            let s = settings.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if s.0 != generation {
                (generation, sessions) = (s.0, self::sessions(&s.1));
            }
        }
        let mut fds = [PollFd::new(tun.as_fd(), PollFlags::POLLIN), PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(100u16)).is_err() {
            continue;
        }
        // From the pods: to the peer whose pod CIDR holds the destination.
        while let Ok(n) = tun.read(&mut packet) {
            let Some(session) = destination(&packet[..n]).and_then(|d| sessions.iter_mut().find(|s| s.peer.holds(d))) else {
                count.dropped += 1;
                continue;
            };
            if let TunnResult::WriteToNetwork(data) = session.tunn.encapsulate(&packet[..n], &mut out) {
                let _ = socket.send_to(data, session.peer.endpoint);
                count.sent += 1;
            }
        }
        // From the peers: decrypted, and delivered only from the sender's own pod CIDR.
        while let Ok((n, from)) = socket.recv_from(&mut packet) {
            let SocketAddr::V4(from) = from else { continue };
            let Some(session) = sessions.iter_mut().find(|s| *s.peer.endpoint.ip() == *from.ip()) else {
                count.dropped += 1;
                continue;
            };
            let mut datagram: &[u8] = &packet[..n];
            loop {
                match session.tunn.decapsulate(Some(IpAddr::V4(*from.ip())), datagram, &mut out) {
                    TunnResult::WriteToNetwork(data) => {
                        let _ = socket.send_to(data, from);
                        // Packets queued behind the handshake go out now.
                        datagram = &[];
                        continue;
                    }
                    TunnResult::WriteToTunnelV4(data, source) if session.peer.holds(IpAddr::V4(source)) => {
                        let _ = tun.write(data);
                        count.received += 1;
                    }
                    TunnResult::WriteToTunnelV6(data, source) if session.peer.holds(IpAddr::V6(source)) => {
                        let _ = tun.write(data);
                        count.received += 1;
                    }
                    TunnResult::WriteToTunnelV4(..) | TunnResult::WriteToTunnelV6(..) | TunnResult::Err(_) => count.dropped += 1,
                    TunnResult::Done => {}
                }
                break;
            }
        }
        if timers.elapsed() >= Duration::from_millis(100) {
            timers = Instant::now();
            for s in &mut sessions {
                if let TunnResult::WriteToNetwork(data) = s.tunn.update_timers(&mut out) {
                    let _ = socket.send_to(data, s.peer.endpoint);
                }
            }
            *counters.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = count;
        }
    }
}

/// Where a lab's (or an agent's) keys live: `DIR/<node>.key` and `.pub`.
pub fn key_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("wireguard")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_their_files_and_the_private_one_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = KeyPair::load_or_create(dir.path(), "node-1").unwrap();
        let again = KeyPair::load_or_create(dir.path(), "node-1").unwrap();
        assert_eq!(a.public(), again.public(), "an existing key is kept");
        assert_eq!(read_public(dir.path(), "node-1").unwrap(), a.public());
        let mode = std::fs::metadata(dir.path().join("node-1.key")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(encode(&a.public()).len(), 44, "base64 of 32 bytes, as wg prints it");
        let b = KeyPair::generate().unwrap();
        assert_ne!(a.public(), b.public());
    }

    #[test]
    fn packets_go_to_the_peer_holding_their_destination() {
        let mut p = [0u8; 20];
        p[0] = 0x45;
        p[16..20].copy_from_slice(&[10, 244, 1, 7]);
        assert_eq!(destination(&p), Some(IpAddr::V4(Ipv4Addr::new(10, 244, 1, 7))));
        let mut p6 = [0u8; 40];
        p6[0] = 0x60;
        let dst: Ipv6Addr = "fd00:10:244:1::7".parse().unwrap();
        p6[24..40].copy_from_slice(&dst.octets());
        assert_eq!(destination(&p6), Some(IpAddr::V6(dst)));
        assert_eq!(destination(&p6[..30]), None, "a truncated packet goes nowhere");
        let peer = Peer {
            name: "node-2".into(),
            endpoint: SocketAddrV4::new(Ipv4Addr::new(172, 18, 0, 3), PORT),
            public: [0; 32],
            allowed: vec!["10.244.1.0/24".parse().unwrap(), "fd00:10:244:1::/64".parse().unwrap()],
        };
        assert!(peer.holds(IpAddr::V6(dst)) && peer.holds("10.244.1.7".parse().unwrap()));
        assert!(!peer.holds("fd00:10:244:2::7".parse().unwrap()));
    }
}
