//! New connections as conntrack reports them (ctnetlink's NEW events, multicast group 1), read
//! from a netlink socket in the caller's network namespace: the original and reply tuples. The
//! kernel reports a connection when its first packet is accepted (conntrack confirms it), so a
//! connection a rule drops is never reported: these are the forwarded flows.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, sockopt};

const SUBSYS_CTNETLINK: u16 = 1;
const MSG_CT_NEW: u16 = 0;
const GROUP_NEW: u32 = 1;
const TUPLE_ORIG: u16 = 1;
const TUPLE_REPLY: u16 = 2;
const TUPLE_IP: u16 = 1;
const TUPLE_PROTO: u16 = 2;
const IP_V4_SRC: u16 = 1;
const IP_V4_DST: u16 = 2;
const IP_V6_SRC: u16 = 3;
const IP_V6_DST: u16 = 4;
const PROTO_NUM: u16 = 1;
const PROTO_SRC_PORT: u16 = 2;
const PROTO_DST_PORT: u16 = 3;

/// One direction of a connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tuple {
    /// Source address.
    pub src: Option<IpAddr>,
    /// Destination address.
    pub dst: Option<IpAddr>,
    /// IP protocol number.
    pub protocol: u8,
    /// Source port (0 without ports).
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

/// A new connection: as it was sent, and as the reply comes back (after DNAT/SNAT).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NewFlow {
    /// The original direction.
    pub original: Tuple,
    /// The reply direction (its source is the DNAT target).
    pub reply: Tuple,
}

/// A socket subscribed to conntrack's NEW events.
pub struct Listener {
    fd: OwnedFd,
}

impl Listener {
    /// Subscribes in the calling thread's network namespace.
    pub fn bind() -> io::Result<Listener> {
        let fd = socket::socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkNetFilter)?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, GROUP_NEW))?;
        let _ = socket::setsockopt(&fd, sockopt::RcvBufForce, &(4usize << 20));
        Ok(Listener { fd })
    }

    /// Waits for new connections (at most `timeout`); none when it passed. Events lost because
    /// we read too slowly are skipped.
    pub fn receive(&self, timeout: std::time::Duration) -> io::Result<Vec<NewFlow>> {
        socket::setsockopt(&self.fd, sockopt::ReceiveTimeout, &nix::sys::time::TimeVal::new(timeout.as_secs() as i64, timeout.subsec_micros() as i64))?;
        let mut buf = vec![0u8; 1 << 16];
        let mut flows = match socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) => parse(&buf[..n]),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR | nix::errno::Errno::ENOBUFS) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        // Take what else is queued now, so that a burst of connections costs one wake-up and
        // one write, not one each.
        for _ in 0..256 {
            match socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => flows.extend(parse(&buf[..n])),
                Err(_) => break,
            }
        }
        Ok(flows)
    }
}

use crate::nlmsg::attributes as attrs;

fn tuple(b: &[u8]) -> Tuple {
    let mut t = Tuple::default();
    for (kind, value) in attrs(b) {
        match kind {
            TUPLE_IP => {
                for (k, v) in attrs(value) {
                    let v4 = || <[u8; 4]>::try_from(v).ok().map(|a| IpAddr::V4(Ipv4Addr::from(a)));
                    let v6 = || <[u8; 16]>::try_from(v).ok().map(|a| IpAddr::V6(Ipv6Addr::from(a)));
                    match k {
                        IP_V4_SRC => t.src = v4(),
                        IP_V4_DST => t.dst = v4(),
                        IP_V6_SRC => t.src = v6(),
                        IP_V6_DST => t.dst = v6(),
                        _ => {}
                    }
                }
            }
            TUPLE_PROTO => {
                for (k, v) in attrs(value) {
                    match (k, v) {
                        (PROTO_NUM, [n, ..]) => t.protocol = *n,
                        (PROTO_SRC_PORT, [a, b, ..]) => t.src_port = u16::from_be_bytes([*a, *b]),
                        (PROTO_DST_PORT, [a, b, ..]) => t.dst_port = u16::from_be_bytes([*a, *b]),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    t
}

/// The NEW events in a buffer of netlink messages (IPv4 ones; others have no addresses here).
pub fn parse(buf: &[u8]) -> Vec<NewFlow> {
    crate::nlmsg::messages(buf)
        .filter(|(kind, _)| *kind == (SUBSYS_CTNETLINK << 8) | MSG_CT_NEW)
        .map(|(_, payload)| {
            let mut flow = NewFlow::default();
            for (k, v) in attrs(payload) {
                match k {
                    TUPLE_ORIG => flow.original = tuple(v),
                    TUPLE_REPLY => flow.reply = tuple(v),
                    _ => {}
                }
            }
            flow
        })
        .filter(|flow| flow.original.src.is_some())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, nested: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = ((4 + payload.len()) as u16).to_ne_bytes().to_vec();
        out.extend((kind | if nested { 0x8000 } else { 0 }).to_ne_bytes());
        out.extend(payload);
        out.resize(out.len().next_multiple_of(4), 0);
        out
    }

    fn tuple_attr(kind: u16, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let ip = [attr(IP_V4_SRC, false, &src), attr(IP_V4_DST, false, &dst)].concat();
        let proto =
            [attr(PROTO_NUM, false, &[6]), attr(PROTO_SRC_PORT, false, &sport.to_be_bytes()), attr(PROTO_DST_PORT, false, &dport.to_be_bytes())].concat();
        attr(kind, true, &[attr(TUPLE_IP, true, &ip), attr(TUPLE_PROTO, true, &proto)].concat())
    }

    #[test]
    fn a_new_event_gives_both_tuples() {
        let body =
            [tuple_attr(TUPLE_ORIG, [10, 244, 0, 3], [10, 96, 0, 20], 40000, 80), tuple_attr(TUPLE_REPLY, [10, 244, 2, 3], [10, 244, 0, 3], 8080, 40000)]
                .concat();
        let mut msg = ((20 + body.len()) as u32).to_ne_bytes().to_vec();
        msg.extend(((SUBSYS_CTNETLINK << 8) | MSG_CT_NEW).to_ne_bytes());
        msg.extend([0u8; 10]); // flags, seq, pid
        msg.extend([2, 0, 0, 0]); // nfgenmsg: AF_INET
        msg.extend(body);
        let flows = parse(&msg);
        assert_eq!(flows.len(), 1);
        let f = flows[0];
        assert_eq!(
            (f.original.src, f.original.dst, f.original.dst_port),
            (Some(IpAddr::V4(Ipv4Addr::new(10, 244, 0, 3))), Some(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 20))), 80)
        );
        assert_eq!((f.reply.src, f.reply.src_port, f.original.protocol), (Some(IpAddr::V4(Ipv4Addr::new(10, 244, 2, 3))), 8080, 6));
        assert!(parse(&msg[..10]).is_empty());
    }

    #[test]
    fn an_ipv6_event_gives_its_addresses() {
        let (a, b): (Ipv6Addr, Ipv6Addr) = ("fd00:10:244::3".parse().unwrap(), "fd00:10:244:2::3".parse().unwrap());
        let ip = [attr(IP_V6_SRC, false, &a.octets()), attr(IP_V6_DST, false, &b.octets())].concat();
        let body = attr(TUPLE_ORIG, true, &attr(TUPLE_IP, true, &ip));
        let mut msg = ((20 + body.len()) as u32).to_ne_bytes().to_vec();
        msg.extend(((SUBSYS_CTNETLINK << 8) | MSG_CT_NEW).to_ne_bytes());
        msg.extend([0u8; 10]);
        msg.extend([10, 0, 0, 0]); // nfgenmsg: AF_INET6
        msg.extend(body);
        let f = parse(&msg)[0];
        assert_eq!((f.original.src, f.original.dst), (Some(IpAddr::V6(a)), Some(IpAddr::V6(b))));
    }
}
