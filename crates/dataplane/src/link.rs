//! Links, addresses and routes over rtnetlink, behind a small blocking API.
//!
//! A [`Netlink`] talks to the namespace of the thread that created it (its socket stays there),
//! with its own current-thread tokio runtime: no worker threads, cheap enough for a CNI plugin
//! that starts once per ADD.

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::neighbour::NeighbourFlags;
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder};

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

/// A netlink connection bound to the namespace it was created in.
pub struct Netlink {
    rt: tokio::runtime::Runtime,
    handle: Handle,
}

fn nl_err(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => match m.code {
            Some(code) => io::Error::from_raw_os_error(-code.get()),
            None => io::Error::other("netlink error"),
        },
        other => io::Error::other(other.to_string()),
    }
}

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
    };
    for attr in &msg.attributes {
        match attr {
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
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
        let handle = {
            let _guard = rt.enter();
            let (conn, handle, _) = rtnetlink::new_connection()?;
            rt.spawn(conn);
            handle
        };
        Ok(Netlink { rt, handle })
    }

    /// The link with this name, if any.
    pub fn link(&self, name: &str) -> io::Result<Option<LinkInfo>> {
        let mut req = self.handle.link().get().match_name(name.to_owned()).execute();
        match self.rt.block_on(req.try_next()) {
            Ok(Some(msg)) => Ok(Some(link_info(&msg))),
            Ok(None) => Ok(None),
            Err(e) => {
                let e = nl_err(e);
                if e.raw_os_error() == Some(nix::libc::ENODEV) { Ok(None) } else { Err(e) }
            }
        }
    }

    /// Every link.
    pub fn links(&self) -> io::Result<Vec<LinkInfo>> {
        let msgs: Vec<LinkMessage> = self.rt.block_on(self.handle.link().get().execute().try_collect()).map_err(nl_err)?;
        Ok(msgs.iter().map(link_info).collect())
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
        match self.rt.block_on(self.handle.link().add(b.build()).execute()).map_err(nl_err) {
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
    pub fn add_veth_with_peer_in(&self, name: &str, peer: &str, peer_netns: &std::fs::File, mtu: Option<u32>) -> io::Result<()> {
        let mut peer_msg = LinkMessageBuilder::<LinkUnspec>::new().name(peer.to_owned()).setns_by_fd(peer_netns.as_raw_fd());
        if let Some(m) = mtu {
            peer_msg = peer_msg.mtu(m);
        }
        let mut b = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(name.to_owned())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg.build())));
        if let Some(m) = mtu {
            b = b.mtu(m);
        }
        self.rt.block_on(self.handle.link().add(b.build()).execute()).map_err(nl_err)
    }

    /// Creates a veth pair in this namespace.
    pub fn add_veth(&self, name: &str, peer: &str) -> io::Result<()> {
        self.rt.block_on(self.handle.link().add(LinkVeth::new(name, peer).build()).execute()).map_err(nl_err)
    }

    /// Sets a link up.
    pub fn set_up(&self, index: u32) -> io::Result<()> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.rt.block_on(self.handle.link().set(msg).execute()).map_err(nl_err)
    }

    /// Attaches a link to a bridge and sets it up, in one request.
    pub fn attach_up(&self, index: u32, bridge: u32) -> io::Result<()> {
        let msg = LinkUnspec::new_with_index(index).controller(bridge).up().build();
        self.rt.block_on(self.handle.link().set(msg).execute()).map_err(nl_err)
    }

    /// Turns hairpin mode of a bridge port on or off (a pod reaching itself through a Service).
    pub fn set_hairpin(&self, index: u32, on: bool) -> io::Result<()> {
        let msg = LinkBridgePort::new(index).hairpin(on).build();
        self.rt.block_on(self.handle.link().set_port(msg).execute()).map_err(nl_err)
    }

    /// Moves a link into another namespace.
    pub fn move_to_netns(&self, index: u32, netns: &std::fs::File) -> io::Result<()> {
        let msg = LinkUnspec::new_with_index(index).setns_by_fd(netns.as_raw_fd()).build();
        self.rt.block_on(self.handle.link().set(msg).execute()).map_err(nl_err)
    }

    /// Takes a link out of service at once: down and renamed, in one request. Deleting a veth
    /// costs the kernel ~20 ms (an RCU grace period); this costs well under one, frees the
    /// name, and leaves the deletion to be done later.
    pub fn retire_link(&self, index: u32, new_name: &str) -> io::Result<()> {
        let msg = LinkUnspec::new_with_index(index).down().name(new_name.to_owned()).build();
        self.rt.block_on(self.handle.link().set(msg).execute()).map_err(nl_err)
    }

    /// Deletes a link.
    pub fn delete_link(&self, index: u32) -> io::Result<()> {
        self.rt.block_on(self.handle.link().del(index).execute()).map_err(nl_err)
    }

    /// Adds an address (with prefix) to a link; an existing identical address is fine.
    pub fn add_address(&self, index: u32, addr: IpNet) -> io::Result<()> {
        let req = self.handle.address().add(index, addr.addr(), addr.prefix_len());
        match self.rt.block_on(req.execute()).map_err(nl_err) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    }

    /// The addresses of a link.
    pub fn addresses(&self, index: u32) -> io::Result<Vec<IpNet>> {
        let msgs: Vec<_> = self
            .rt
            .block_on(self.handle.address().get().set_link_index_filter(index).execute().try_collect())
            .map_err(nl_err)?;
        let mut out = Vec::new();
        for m in msgs {
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
        let mut b =
            RouteMessageBuilder::<IpAddr>::new().destination_prefix(dst.network(), dst.prefix_len()).map_err(|e| invalid(&e))?;
        if let Some(gw) = gw {
            b = b.gateway(gw).map_err(|e| invalid(&e))?;
        }
        if let Some(oif) = oif {
            b = b.output_interface(oif);
        }
        match self.rt.block_on(self.handle.route().add(b.build()).execute()).map_err(nl_err) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    }

    /// Creates a vxlan device (flannel's layout: no learning, static FDB and neighbours).
    pub fn add_vxlan(&self, v: &VxlanSpec) -> io::Result<u32> {
        let msg = LinkVxlan::new(&v.name, v.vni)
            .dev(v.underlay_index)
            .local(v.local)
            .port(v.port)
            .learning(false)
            .mtu(v.mtu)
            .address(v.mac.to_vec())
            .build();
        self.rt.block_on(self.handle.link().add(msg).execute()).map_err(nl_err)?;
        Ok(self.require(&v.name)?.index)
    }

    /// A permanent neighbour entry: `ip` is at `mac` on link `index`.
    pub fn add_neighbour(&self, index: u32, ip: IpAddr, mac: &[u8; 6]) -> io::Result<()> {
        let req = self.handle.neighbours().add(index, ip).link_layer_address(mac).replace();
        self.rt.block_on(req.execute()).map_err(nl_err)
    }

    /// A vxlan FDB entry: frames for `mac` go to the underlay address `dst` (`bridge fdb append ... self`).
    pub fn add_fdb(&self, index: u32, mac: &[u8; 6], dst: IpAddr) -> io::Result<()> {
        let req = self.handle.neighbours().add_bridge(index, mac).destination(dst).flags(NeighbourFlags::Own).replace();
        self.rt.block_on(req.execute()).map_err(nl_err)
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
        match self.rt.block_on(self.handle.route().add(b.build()).execute()).map_err(nl_err) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    }

    /// Routes of one family in the main table.
    pub fn routes(&self, ipv6: bool) -> io::Result<Vec<RouteInfo>> {
        use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
        let family = if ipv6 { AddressFamily::Inet6 } else { AddressFamily::Inet };
        let mut query = RouteMessageBuilder::<IpAddr>::new().build();
        query.header.address_family = family;
        let msgs: Vec<_> = self.rt.block_on(self.handle.route().get(query).execute().try_collect()).map_err(nl_err)?;
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
