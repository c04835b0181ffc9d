//! Links, addresses and routes over rtnetlink, behind a small blocking API.
//!
//! A [`Netlink`] talks to the namespace of the thread that created it (its socket stays there).
//! Messages are built with rtnetlink's builders and sent on a plain blocking netlink socket, one
//! request and its answer at a time: no runtime, no background task, which is what a CNI plugin
//! that starts once per ADD wants (each request costs 10-50 µs here).

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use std::cell::{Cell, RefCell};

use ipnet::IpNet;
use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::neighbour::NeighbourFlags;
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState};
use rtnetlink::packet_route::route::RouteType;
use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use rtnetlink::{AddressMessageBuilder, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder};

/// What we need to know about a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// MAC address, `aa:bb:...`.
    pub mac: Option<String>,
    /// MTU.
    pub mtu: Option<u32>,
    /// Administratively up.
    pub up: bool,
    /// Index of the bridge it is attached to.
    pub controller: Option<u32>,
    /// `bridge`, `veth`, `vxlan`, ...
    pub kind: Option<String>,
    /// For a veth: the peer's index (in the peer's namespace).
    pub peer_index: Option<u32>,
}

/// The MAC of podnet's vxlan device on the node whose underlay address is `ip`: derived from the
/// address (locally administered), so every peer knows it without asking (Flannel publishes its
/// in a Node annotation instead).
pub fn vxlan_mac_for(ip: std::net::Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x0e, 0x70, o[0], o[1], o[2], o[3]]
}

/// A vxlan device to create.
#[derive(Clone, Debug)]
pub struct VxlanSpec {
    /// Device name (`flannel.1`).
    pub name: String,
    /// VXLAN network identifier.
    pub vni: u32,
    /// The underlay link it sends through.
    pub underlay_index: u32,
    /// The local underlay address.
    pub local: std::net::Ipv4Addr,
    /// UDP port (flannel: 8472).
    pub port: u16,
    /// MTU (the underlay's minus 50).
    pub mtu: u32,
    /// Its MAC address.
    pub mac: [u8; 6],
}

/// A route of the main table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteInfo {
    /// Destination.
    pub dst: IpNet,
    /// Next hop, if not on-link.
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
}

/// `ESRCH`: the kernel's answer for a route that is not there.
const fn libc_esrch() -> i32 {
    3
}

/// A netlink connection bound to the namespace it was created in.
pub struct Netlink {
    socket: Socket,
    seq: Cell<u32>,
    buf: RefCell<Vec<u8>>,
}

const ACK_CREATE: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
const ACK: u16 = NLM_F_REQUEST | NLM_F_ACK;
const DUMP: u16 = NLM_F_REQUEST | NLM_F_DUMP;

fn format_mac(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn link_info(msg: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: msg.header.index,
        name: String::new(),
        mac: None,
        mtu: None,
        up: msg.header.flags.contains(LinkFlags::Up),
        controller: None,
        kind: None,
        peer_index: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::Link(peer) => info.peer_index = Some(*peer),
            LinkAttribute::IfName(n) => info.name = n.clone(),
            LinkAttribute::Address(a) => info.mac = Some(format_mac(a)),
            LinkAttribute::Mtu(m) => info.mtu = Some(*m),
            LinkAttribute::Controller(c) => info.controller = Some(*c),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let rtnetlink::packet_route::link::LinkInfo::Kind(k) = i {
                        info.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    info
}

impl Netlink {
    /// Connects in the calling thread's network namespace.
    pub fn connect() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // 64 KiB holds any single netlink datagram the kernel sends (dumps come in pages).
        Ok(Netlink { socket, seq: Cell::new(1), buf: RefCell::new(Vec::with_capacity(64 * 1024)) })
    }

    /// Sends one request and collects its answer: the messages of a dump or a get, or the ACK
    /// (an error becomes the `io::Error` of its errno).
    fn request(&self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
        let seq = self.seq.get();
        self.seq.set(seq.wrapping_add(1));
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags;
        req.header.sequence_number = seq;
        req.finalize();
        let mut out = vec![0u8; req.buffer_len()];
        req.serialize(&mut out);
        self.socket.send(&out, 0)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let expect_ack = flags & NLM_F_ACK == NLM_F_ACK;
        let mut answers = Vec::new();
        let mut buf = self.buf.borrow_mut();
        loop {
            buf.clear();
            self.socket.recv(&mut *buf, 0)?;
            let mut offset = 0;
            while offset < buf.len() {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[offset..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = msg.header.length as usize;
                offset += (len + 3) & !3;
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Error(e) => match e.code {
                        Some(code) => return Err(io::Error::from_raw_os_error(-code.get())),
                        None => return Ok(answers),
                    },
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::InnerMessage(m) => {
                        answers.push(m);
                        if !dump && !expect_ack {
                            return Ok(answers);
                        }
                    }
                    _ => {}
                }
                if len == 0 {
                    break;
                }
            }
        }
    }

    /// A request answered by an ACK.
    fn ack(&self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.request(msg, flags).map(drop)
    }

    /// The link with this name, if any.
    pub fn link(&self, name: &str) -> io::Result<Option<LinkInfo>> {
        let query = LinkUnspec::new_with_name(name).build();
        match self.request(RouteNetlinkMessage::GetLink(query), NLM_F_REQUEST) {
            Ok(answers) => Ok(answers.iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_info(l)),
                _ => None,
            })),
            Err(e) if e.raw_os_error() == Some(nix::libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every link.
    pub fn links(&self) -> io::Result<Vec<LinkInfo>> {
        let answers = self.request(RouteNetlinkMessage::GetLink(LinkMessage::default()), DUMP)?;
        Ok(answers
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_info(l)),
                _ => None,
            })
            .collect())
    }

    /// The link with this name, which must exist.
    pub fn require(&self, name: &str) -> io::Result<LinkInfo> {
        self.link(name)?.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("link {name} not found")))
    }

    /// Creates the bridge unless it exists, sets it up, and returns it. A non-bridge link with
    /// the name is an error.
    pub fn ensure_bridge(&self, name: &str, mtu: Option<u32>) -> io::Result<LinkInfo> {
        if let Some(l) = self.link(name)? {
            if l.kind.as_deref() != Some("bridge") {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{name} already exists but is not a bridge")));
            }
            if !l.up {
                self.set_up(l.index)?;
            }
            return Ok(LinkInfo { up: true, ..l });
        }
        let mut b = LinkBridge::new(name);
        if let Some(m) = mtu {
            b = b.mtu(m);
        }
        match self.ack(RouteNetlinkMessage::NewLink(b.build()), ACK_CREATE) {
            Ok(()) => {}
            // Another plugin process made it meanwhile.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let l = self.require(name)?;
        if !l.up {
            self.set_up(l.index)?;
        }
        self.require(name)
    }

    /// Creates a veth pair here named `name`, whose peer `peer` is created in the namespace
    /// given by `peer_netns` (an open `/proc/.../ns/net` or `/run/netns/...` file).
    ///
    /// Returns the new link as the kernel echoes it (index, MAC, and the peer's index), so no
    /// second request is needed; `peer_mac` fixes the peer's address so the caller knows it too.
    pub fn add_veth_with_peer_in(
        &self,
        name: &str,
        peer: &str,
        peer_netns: &std::fs::File,
        mtu: Option<u32>,
        peer_mac: Option<[u8; 6]>,
    ) -> io::Result<LinkInfo> {
        let mut peer_msg = LinkMessageBuilder::<LinkUnspec>::new().name(peer.to_owned()).setns_by_fd(peer_netns.as_raw_fd());
        if let Some(m) = mtu {
            peer_msg = peer_msg.mtu(m);
        }
        if let Some(mac) = peer_mac {
            peer_msg = peer_msg.address(mac.to_vec());
        }
        let mut b = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(name.to_owned())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg.build())));
        if let Some(m) = mtu {
            b = b.mtu(m);
        }
        let echoed = self.request(RouteNetlinkMessage::NewLink(b.build()), ACK_CREATE | NLM_F_ECHO)?;
        match echoed.iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(link_info(l)),
            _ => None,
        }) {
            Some(info) if info.name == name => Ok(info),
            // A kernel that does not echo link creation: ask.
            _ => self.require(name),
        }
    }

    /// Creates a veth pair in this namespace.
    pub fn add_veth(&self, name: &str, peer: &str) -> io::Result<()> {
        self.ack(RouteNetlinkMessage::NewLink(LinkVeth::new(name, peer).build()), ACK_CREATE)
    }

    /// Sets a link's MTU and sets it up, in one request.
    pub fn set_mtu_up(&self, index: u32, mtu: u32) -> io::Result<()> {
        self.ack(RouteNetlinkMessage::SetLink(LinkUnspec::new_with_index(index).mtu(mtu).up().build()), ACK)
    }

    /// Sets a link up.
    pub fn set_up(&self, index: u32) -> io::Result<()> {
        self.ack(RouteNetlinkMessage::SetLink(LinkUnspec::new_with_index(index).up().build()), ACK)
    }

    /// Attaches a link to a bridge and sets it up, in one request.
    pub fn attach_up(&self, index: u32, bridge: u32) -> io::Result<()> {
        self.ack(RouteNetlinkMessage::SetLink(LinkUnspec::new_with_index(index).controller(bridge).up().build()), ACK)
    }

    /// Turns hairpin mode of a bridge port on or off (a pod reaching itself through a Service).
    pub fn set_hairpin(&self, index: u32, on: bool) -> io::Result<()> {
        self.ack(RouteNetlinkMessage::NewLink(LinkBridgePort::new(index).hairpin(on).build()), ACK)
    }

    /// Moves a link into another namespace.
    pub fn move_to_netns(&self, index: u32, netns: &std::fs::File) -> io::Result<()> {
        self.ack(RouteNetlinkMessage::SetLink(LinkUnspec::new_with_index(index).setns_by_fd(netns.as_raw_fd()).build()), ACK)
    }

    /// Takes a link out of service at once: down and renamed, in one request. Deleting a veth
    /// costs the kernel ~20 ms (an RCU grace period); this costs well under one, frees the
    /// name, and leaves the deletion to be done later.
    pub fn retire_link(&self, index: u32, new_name: &str) -> io::Result<()> {
        self.ack(RouteNetlinkMessage::SetLink(LinkUnspec::new_with_index(index).down().name(new_name.to_owned()).build()), ACK)
    }

    /// Deletes a link.
    pub fn delete_link(&self, index: u32) -> io::Result<()> {
        self.ack(RouteNetlinkMessage::DelLink(LinkUnspec::new_with_index(index).build()), ACK)
    }

    /// Adds an address (with prefix) to a link; an existing identical address is fine.
    pub fn add_address(&self, index: u32, addr: IpNet) -> io::Result<()> {
        let msg = match addr.addr() {
            IpAddr::V4(a) => AddressMessageBuilder::<std::net::Ipv4Addr>::new().index(index).address(a, addr.prefix_len()).build(),
            IpAddr::V6(a) => AddressMessageBuilder::<std::net::Ipv6Addr>::new().index(index).address(a, addr.prefix_len()).build(),
        };
        match self.ack(RouteNetlinkMessage::NewAddress(msg), ACK_CREATE) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    }

    /// The addresses of a link.
    pub fn addresses(&self, index: u32) -> io::Result<Vec<IpNet>> {
        self.addresses_where(|i| i == index)
    }

    /// Every address of this namespace's links.
    pub fn all_addresses(&self) -> io::Result<Vec<IpNet>> {
        self.addresses_where(|_| true)
    }

    fn addresses_where(&self, link: impl Fn(u32) -> bool) -> io::Result<Vec<IpNet>> {
        let answers = self.request(RouteNetlinkMessage::GetAddress(Default::default()), DUMP)?;
        let mut out = Vec::new();
        for m in answers.iter().filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a) if link(a.header.index) => Some(a),
            _ => None,
        }) {
            for a in &m.attributes {
                if let AddressAttribute::Address(ip) = a
                    && let Ok(net) = IpNet::new(*ip, m.header.prefix_len)
                {
                    out.push(net);
                }
            }
        }
        Ok(out)
    }

    /// Adds a route: `dst` via `gw` (on-link when `None`) out of `oif`.
    pub fn add_route(&self, dst: IpNet, gw: Option<IpAddr>, oif: Option<u32>) -> io::Result<()> {
        let invalid = |e: &dyn std::fmt::Display| io::Error::new(io::ErrorKind::InvalidInput, e.to_string());
        let mut b = RouteMessageBuilder::<IpAddr>::new().destination_prefix(dst.network(), dst.prefix_len()).map_err(|e| invalid(&e))?;
        if let Some(gw) = gw {
            b = b.gateway(gw).map_err(|e| invalid(&e))?;
        }
        if let Some(oif) = oif {
            b = b.output_interface(oif);
        }
        match self.ack(RouteNetlinkMessage::NewRoute(b.build()), ACK_CREATE) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    }

    /// Makes the route to `dst` go via `gw`, whatever route to `dst` was there (`ip route replace`).
    pub fn replace_route(&self, dst: IpNet, gw: IpAddr) -> io::Result<()> {
        let invalid = |e: &dyn std::fmt::Display| io::Error::new(io::ErrorKind::InvalidInput, e.to_string());
        let b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst.network(), dst.prefix_len())
            .map_err(|e| invalid(&e))?
            .gateway(gw)
            .map_err(|e| invalid(&e))?;
        self.ack(RouteNetlinkMessage::NewRoute(b.build()), NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE)
    }

    /// Deletes the route to `dst` via `gw` (gone already is fine).
    pub fn delete_route(&self, dst: IpNet, gw: Option<IpAddr>) -> io::Result<()> {
        let invalid = |e: &dyn std::fmt::Display| io::Error::new(io::ErrorKind::InvalidInput, e.to_string());
        let mut b = RouteMessageBuilder::<IpAddr>::new().destination_prefix(dst.network(), dst.prefix_len()).map_err(|e| invalid(&e))?;
        if let Some(gw) = gw {
            b = b.gateway(gw).map_err(|e| invalid(&e))?;
        }
        match self.ack(RouteNetlinkMessage::DelRoute(b.build()), ACK) {
            Err(e) if e.raw_os_error() == Some(libc_esrch()) => Ok(()),
            other => other,
        }
    }

    /// The address (v4) of this namespace's links that holds `ip`, and that link.
    pub fn link_with_address(&self, ip: IpAddr) -> io::Result<Option<LinkInfo>> {
        for link in self.links()? {
            if self.addresses(link.index)?.iter().any(|a| a.addr() == ip) {
                return Ok(Some(link));
            }
        }
        Ok(None)
    }

    /// Creates a vxlan device (flannel's layout: no learning, static FDB and neighbours).
    pub fn add_vxlan(&self, v: &VxlanSpec) -> io::Result<u32> {
        let msg = LinkVxlan::new(&v.name, v.vni).dev(v.underlay_index).local(v.local).port(v.port).learning(false).mtu(v.mtu).address(v.mac.to_vec()).build();
        self.ack(RouteNetlinkMessage::NewLink(msg), ACK_CREATE)?;
        Ok(self.require(&v.name)?.index)
    }

    /// A permanent neighbour entry: `ip` is at `mac` on link `index`.
    pub fn add_neighbour(&self, index: u32, ip: IpAddr, mac: &[u8; 6]) -> io::Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = if ip.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        msg.header.ifindex = index;
        msg.header.state = NeighbourState::Permanent;
        msg.header.kind = RouteType::Unspec;
        msg.attributes.push(NeighbourAttribute::Destination(match ip {
            IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
            IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
        }));
        msg.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        self.ack(RouteNetlinkMessage::NewNeighbour(msg), NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE)
    }

    /// The permanent neighbour entries (`ip`, `mac`) of link `index`, of both families; with
    /// `fdb`, its FDB entries (`dst`, `mac`) instead (`bridge fdb show dev`).
    pub fn neighbours(&self, index: u32, fdb: bool) -> io::Result<Vec<(IpAddr, [u8; 6])>> {
        let families: &[AddressFamily] = if fdb { &[AddressFamily::Bridge] } else { &[AddressFamily::Inet, AddressFamily::Inet6] };
        let mut out = Vec::new();
        for family in families {
            let mut query = NeighbourMessage::default();
            query.header.family = *family;
            for m in self.request(RouteNetlinkMessage::GetNeighbour(query), DUMP)? {
                let RouteNetlinkMessage::NewNeighbour(n) = m else { continue };
                if n.header.ifindex != index || n.header.state != NeighbourState::Permanent {
                    continue;
                }
                let (mut ip, mut mac) = (None, None);
                for a in &n.attributes {
                    match a {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => ip = Some(IpAddr::V4(*v4)),
                        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => ip = Some(IpAddr::V6(*v6)),
                        // An FDB entry's (AF_BRIDGE) destination comes as raw bytes.
                        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                            ip = <[u8; 4]>::try_from(b.as_slice()).map(IpAddr::from).or_else(|_| <[u8; 16]>::try_from(b.as_slice()).map(IpAddr::from)).ok();
                        }
                        NeighbourAttribute::LinkLayerAddress(l) => mac = <[u8; 6]>::try_from(l.as_slice()).ok(),
                        _ => {}
                    }
                }
                if let (Some(ip), Some(mac)) = (ip, mac) {
                    out.push((ip, mac));
                }
            }
        }
        Ok(out)
    }

    /// Deletes the neighbour entry of `ip` on link `index` (gone already is fine).
    pub fn delete_neighbour(&self, index: u32, ip: IpAddr) -> io::Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = if ip.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        msg.header.ifindex = index;
        msg.attributes.push(NeighbourAttribute::Destination(match ip {
            IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
            IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
        }));
        self.delete_neighbour_message(msg)
    }

    /// Deletes the vxlan FDB entry of `mac` towards `dst` on link `index` (gone already is fine).
    pub fn delete_fdb(&self, index: u32, mac: &[u8; 6], dst: IpAddr) -> io::Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = index;
        msg.header.flags = NeighbourFlags::Own;
        msg.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        msg.attributes.push(NeighbourAttribute::Destination(match dst {
            IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
            IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
        }));
        self.delete_neighbour_message(msg)
    }

    fn delete_neighbour_message(&self, msg: NeighbourMessage) -> io::Result<()> {
        const ENOENT: i32 = 2;
        match self.ack(RouteNetlinkMessage::DelNeighbour(msg), ACK) {
            Err(e) if e.raw_os_error() == Some(ENOENT) => Ok(()),
            other => other,
        }
    }

    /// A vxlan FDB entry: frames for `mac` go to the underlay address `dst` (`bridge fdb append ... self`).
    pub fn add_fdb(&self, index: u32, mac: &[u8; 6], dst: IpAddr) -> io::Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = index;
        msg.header.state = NeighbourState::Permanent;
        msg.header.kind = RouteType::Unspec;
        msg.header.flags = NeighbourFlags::Own;
        msg.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        msg.attributes.push(NeighbourAttribute::Destination(match dst {
            IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
            IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
        }));
        self.ack(RouteNetlinkMessage::NewNeighbour(msg), NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE)
    }

    /// A route whose gateway is reachable on `oif` without a connected subnet (`onlink`).
    pub fn add_onlink_route(&self, dst: IpNet, gw: IpAddr, oif: u32) -> io::Result<()> {
        let invalid = |e: &dyn std::fmt::Display| io::Error::new(io::ErrorKind::InvalidInput, e.to_string());
        let b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst.network(), dst.prefix_len())
            .map_err(|e| invalid(&e))?
            .gateway(gw)
            .map_err(|e| invalid(&e))?
            .output_interface(oif)
            .onlink();
        match self.ack(RouteNetlinkMessage::NewRoute(b.build()), ACK_CREATE) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    }

    /// Routes of both families in the main table, IPv4's first.
    pub fn all_routes(&self) -> io::Result<Vec<RouteInfo>> {
        let mut routes = self.routes(false)?;
        routes.extend(self.routes(true)?);
        Ok(routes)
    }

    /// Routes of one family in the main table.
    pub fn routes(&self, ipv6: bool) -> io::Result<Vec<RouteInfo>> {
        use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
        let family = if ipv6 { AddressFamily::Inet6 } else { AddressFamily::Inet };
        let mut query = RouteMessageBuilder::<IpAddr>::new().build();
        query.header.address_family = family;
        let msgs: Vec<_> = self
            .request(RouteNetlinkMessage::GetRoute(query), DUMP)?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => Some(r),
                _ => None,
            })
            .collect();
        let to_ip = |a: &RouteAddress| match a {
            RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
            RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
            _ => None,
        };
        let mut out = Vec::new();
        for m in msgs {
            let (mut dst, mut gw, mut oif) = (None, None, None);
            for a in &m.attributes {
                match a {
                    RouteAttribute::Destination(d) => dst = to_ip(d),
                    RouteAttribute::Gateway(g) => gw = to_ip(g),
                    RouteAttribute::Oif(o) => oif = Some(*o),
                    _ => {}
                }
            }
            let unspecified = if ipv6 { IpAddr::from([0u16; 8]) } else { IpAddr::from([0u8; 4]) };
            if let Ok(net) = IpNet::new(dst.unwrap_or(unspecified), m.header.destination_prefix_length) {
                out.push(RouteInfo { dst: net, gateway: gw, oif });
            }
        }
        Ok(out)
    }
}
