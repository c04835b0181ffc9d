//! Packets logged by nftables' `log group N` (NFLOG), read from a netfilter netlink socket in
//! the caller's network namespace: the log prefix, the time and the packet's addresses and
//! ports. What `podnet lab logs --drops` shows comes from here.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::sys::socket::{self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, sockopt};

/// `NFNL_SUBSYS_ULOG`
const SUBSYS_ULOG: u16 = 4;
const MSG_PACKET: u16 = 0;
const MSG_CONFIG: u16 = 1;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const CFG_CMD: u16 = 1;
const CFG_MODE: u16 = 2;
const CFG_QTHRESH: u16 = 5;
const CMD_BIND: u8 = 1;
const COPY_PACKET: u8 = 2;
const ATTR_TIMESTAMP: u16 = 3;
const ATTR_PAYLOAD: u16 = 9;
const ATTR_PREFIX: u16 = 10;
/// Bytes of each packet copied to us: IP and transport headers.
const COPY_RANGE: u32 = 128;

/// One logged packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    /// The rule's log prefix.
    pub prefix: String,
    /// When the kernel logged it (Unix seconds and microseconds), if it said.
    pub time: Option<(u64, u32)>,
    /// The packet's addresses, protocol and ports, when it is IPv4.
    pub packet: Option<Packet>,
}

/// An IPv4 packet's header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP, 1 ICMP).
    pub protocol: u8,
    /// Source port (0 for protocols without ports).
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

/// A socket bound to one NFLOG group.
pub struct Listener {
    fd: OwnedFd,
}

fn message(kind: u16, flags: u16, seq: u32, group: u16, attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![0u8, 0, 0, 0]; // nfgenmsg: AF_UNSPEC, version 0, res_id (the group, big-endian)
    body[2..4].copy_from_slice(&group.to_be_bytes());
    for (t, v) in attrs {
        let len = 4 + v.len();
        body.extend_from_slice(&(len as u16).to_ne_bytes());
        body.extend_from_slice(&t.to_ne_bytes());
        body.extend_from_slice(v);
        body.resize(body.len().next_multiple_of(4), 0);
    }
    let mut out = Vec::with_capacity(16 + body.len());
    out.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    out.extend_from_slice(&((SUBSYS_ULOG << 8) | kind).to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&body);
    out
}

impl Listener {
    /// Binds NFLOG group `group` in the calling thread's network namespace, copying the first
    /// bytes of each packet.
    pub fn bind(group: u16) -> io::Result<Listener> {
        let fd = socket::socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkNetFilter)?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        let _ = socket::setsockopt(&fd, sockopt::RcvBufForce, &(1usize << 20));
        let listener = Listener { fd };
        listener.configure(1, group, vec![(CFG_CMD, vec![CMD_BIND])])?;
        let mut mode = COPY_RANGE.to_be_bytes().to_vec();
        mode.extend_from_slice(&[COPY_PACKET, 0]);
        listener.configure(2, group, vec![(CFG_MODE, mode)])?;
        // The kernel batches up to 100 packets or one second by default: hand each one over.
        listener.configure(3, group, vec![(CFG_QTHRESH, 1u32.to_be_bytes().to_vec())])?;
        Ok(listener)
    }

    fn configure(&self, seq: u32, group: u16, attrs: Vec<(u16, Vec<u8>)>) -> io::Result<()> {
        let msg = message(MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq, group, &attrs);
        socket::sendto(self.fd.as_raw_fd(), &msg, &NetlinkAddr::new(0, 0), MsgFlags::empty())?;
        let mut buf = [0u8; 256];
        let n = socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        // An NLMSG_ERROR answer: 0 is the acknowledgement.
        if n >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == 2 {
            let code = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
            if code < 0 {
                return Err(io::Error::from_raw_os_error(-code));
            }
        }
        Ok(())
    }

    /// Waits for logged packets (at most `timeout`); none when it passed.
    pub fn receive(&self, timeout: std::time::Duration) -> io::Result<Vec<Logged>> {
        socket::setsockopt(&self.fd, sockopt::ReceiveTimeout, &nix::sys::time::TimeVal::new(timeout.as_secs() as i64, timeout.subsec_micros() as i64))?;
        let mut buf = vec![0u8; 1 << 16];
        match socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) => Ok(parse(&buf[..n])),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => Ok(Vec::new()),
            // Packets were lost because we read too slowly: go on with what comes next.
            Err(nix::errno::Errno::ENOBUFS) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The logged packets in a buffer of netlink messages.
pub fn parse(buf: &[u8]) -> Vec<Logged> {
    crate::nlmsg::messages(buf).filter(|(kind, _)| *kind == (SUBSYS_ULOG << 8) | MSG_PACKET).map(|(_, attrs)| parse_packet_message(attrs)).collect()
}

fn parse_packet_message(attrs: &[u8]) -> Logged {
    let mut logged = Logged { prefix: String::new(), time: None, packet: None };
    for (kind, value) in crate::nlmsg::attributes(attrs) {
        match kind {
            ATTR_PREFIX => logged.prefix = String::from_utf8_lossy(value.split(|b| *b == 0).next().unwrap_or_default()).into_owned(),
            ATTR_TIMESTAMP if value.len() >= 16 => {
                let secs = u64::from_be_bytes(value[0..8].try_into().unwrap_or_default());
                let usecs = u64::from_be_bytes(value[8..16].try_into().unwrap_or_default());
                logged.time = Some((secs, usecs as u32));
            }
            ATTR_PAYLOAD => logged.packet = parse_ipv4(value).or_else(|| parse_ipv6(value)),
            _ => {}
        }
    }
    logged
}

/// The header fields of an IPv4 packet (ports for TCP, UDP and SCTP).
pub fn parse_ipv4(p: &[u8]) -> Option<Packet> {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return None;
    }
    let header = usize::from(p[0] & 0x0f) * 4;
    let protocol = p[9];
    let src = IpAddr::V4(Ipv4Addr::new(p[12], p[13], p[14], p[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(p[16], p[17], p[18], p[19]));
    let (src_port, dst_port) = ports(protocol, p.get(header..header + 4));
    Some(Packet { src, dst, protocol, src_port, dst_port })
}

/// The header fields of an IPv6 packet whose transport header follows the fixed header (what
/// pods send; extension headers leave the ports 0).
pub fn parse_ipv6(p: &[u8]) -> Option<Packet> {
    if p.len() < 40 || p[0] >> 4 != 6 {
        return None;
    }
    let protocol = p[6];
    let src = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&p[8..24]).ok()?));
    let dst = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&p[24..40]).ok()?));
    let (src_port, dst_port) = ports(protocol, p.get(40..44));
    Some(Packet { src, dst, protocol, src_port, dst_port })
}

/// TCP's, UDP's and SCTP's ports from the transport header's first four bytes.
fn ports(protocol: u8, header: Option<&[u8]>) -> (u16, u16) {
    match (protocol, header) {
        (6 | 17 | 132, Some(ports)) => (u16::from_be_bytes([ports[0], ports[1]]), u16::from_be_bytes([ports[2], ports[3]])),
        _ => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_message_gives_prefix_time_and_ports() {
        let mut ip = vec![0x45u8, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 10, 244, 0, 2, 10, 244, 1, 3];
        ip.extend_from_slice(&[0xa9, 0x8a, 0x1f, 0x90]); // 43402 -> 8080
        let mut ts = 1_700_000_000u64.to_be_bytes().to_vec();
        ts.extend_from_slice(&123_456u64.to_be_bytes());
        let msg = message(MSG_PACKET, 0, 0, 7, &[(ATTR_PREFIX, b"podnet drop ingress x: deny\0".to_vec()), (ATTR_TIMESTAMP, ts), (ATTR_PAYLOAD, ip)]);
        let got = parse(&msg);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].prefix, "podnet drop ingress x: deny");
        assert_eq!(got[0].time, Some((1_700_000_000, 123_456)));
        let p = got[0].packet.unwrap();
        assert_eq!(
            (p.src, p.dst, p.protocol, p.src_port, p.dst_port),
            (IpAddr::V4(Ipv4Addr::new(10, 244, 0, 2)), IpAddr::V4(Ipv4Addr::new(10, 244, 1, 3)), 6, 43402, 8080)
        );
    }

    #[test]
    fn truncated_input_gives_what_is_whole() {
        assert!(parse(&[1, 2, 3]).is_empty());
        assert_eq!(parse_ipv4(&[0x45, 0, 0]), None);
        let icmp = [0x45u8, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2];
        assert_eq!(parse_ipv4(&icmp).map(|p| (p.protocol, p.dst_port)), Some((1, 0)));
    }

    #[test]
    fn ipv6_packets_give_their_addresses_and_ports() {
        let (src, dst): (Ipv6Addr, Ipv6Addr) = ("fd00:10:244::2".parse().unwrap(), "fd00:10:244:1::3".parse().unwrap());
        let mut ip = vec![0x60u8, 0, 0, 0, 0, 20, 6, 64];
        ip.extend_from_slice(&src.octets());
        ip.extend_from_slice(&dst.octets());
        ip.extend_from_slice(&[0xa9, 0x8a, 0x1f, 0x90]);
        let msg = message(MSG_PACKET, 0, 0, 7, &[(ATTR_PREFIX, b"podnet drop ingress x: deny\0".to_vec()), (ATTR_PAYLOAD, ip.clone())]);
        let p = parse(&msg)[0].packet.unwrap();
        assert_eq!((p.src, p.dst, p.protocol, p.src_port, p.dst_port), (IpAddr::V6(src), IpAddr::V6(dst), 6, 43402, 8080));
        assert_eq!(parse_ipv6(&ip[..39]), None, "shorter than the fixed header");
        assert_eq!(parse_ipv6(&ip[..40]).map(|p| p.dst_port), Some(0), "no transport header: no ports");
    }
}
