//! A netfilter netlink socket for what nft's text is too slow for: batches of set elements
//! (encoded by `nftset::netlink`) and asking whether a table exists. The kernel handles a
//! message in the sender's `sendmsg`, so by the time it returns every answer is queued.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nftset::Family;
use nix::sys::socket::{self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, sockopt};

const NLMSG_ERROR: u16 = 2;
/// Answers are small (errors for our messages are a header and an error code, plus the
/// message unless it is large); room for many of them.
const RECEIVE_BUFFER: usize = 1 << 20;

/// One socket in the caller's network namespace.
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Socket> {
        let fd = socket::socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkNetFilter)?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        // Room for the answers of a large batch (root may go over the default maximum).
        let _ = socket::setsockopt(&fd, sockopt::RcvBufForce, &RECEIVE_BUFFER);
        Ok(Socket { fd, seq: 1 })
    }

    /// A sequence number for the next request, leaving `count` numbers to it.
    pub fn next_seq(&mut self, count: u32) -> u32 {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(count);
        seq
    }

    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        // One batch is one message to the kernel: the send buffer must hold all of it.
        socket::setsockopt(&self.fd, sockopt::SndBufForce, &(bytes.len() + 4096))?;
        let sent = socket::sendto(self.fd.as_raw_fd(), bytes, &NetlinkAddr::new(0, 0), MsgFlags::empty())?;
        if sent != bytes.len() {
            return Err(io::Error::other(format!("netlink: sent {sent} of {} bytes", bytes.len())));
        }
        Ok(())
    }

    /// The error codes (0: an acknowledgement) of every answer queued.
    fn answers(&self) -> io::Result<Vec<i32>> {
        let mut codes = Vec::new();
        let mut buf = vec![0u8; RECEIVE_BUFFER];
        loop {
            let n = match socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(nix::errno::Errno::EAGAIN) => return Ok(codes),
                Err(e) => return Err(e.into()),
            };
            let mut at = 0;
            while at + 16 <= n {
                let len = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
                let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
                if kind == NLMSG_ERROR && at + 20 <= n {
                    codes.push(i32::from_ne_bytes([buf[at + 16], buf[at + 17], buf[at + 18], buf[at + 19]]));
                } else {
                    codes.push(i32::MIN); // an object, as a GET answers
                }
                if len < 16 {
                    break;
                }
                at += len.next_multiple_of(4);
            }
        }
    }

    /// Sends one batch (one transaction) and returns the kernel's first error, if any.
    pub fn transact(&mut self, batch: &[u8]) -> io::Result<()> {
        self.send(batch)?;
        match self.answers()?.into_iter().find(|&c| c < 0 && c != i32::MIN) {
            Some(code) => Err(io::Error::from_raw_os_error(-code)),
            None => Ok(()),
        }
    }

    /// Whether table `name` of `family` exists.
    pub fn table_exists(&mut self, family: Family, name: &str) -> io::Result<bool> {
        let seq = self.next_seq(1);
        self.send(&nftset::netlink::get_table(family, name, seq))?;
        let answers = self.answers()?;
        if answers.contains(&-libc_enoent()) {
            return Ok(false);
        }
        match answers.iter().find(|&&c| c < 0 && c != i32::MIN) {
            Some(code) => Err(io::Error::from_raw_os_error(-code)),
            None if answers.contains(&i32::MIN) => Ok(true),
            None => Err(io::Error::other("netlink: no answer to GETTABLE")),
        }
    }
}

impl Socket {
    /// The namespace's ruleset generation (bumped by every nftables commit, ours or anyone's).
    pub fn generation(&mut self) -> io::Result<u32> {
        let seq = self.next_seq(1);
        self.send(&nftset::netlink::get_generation(seq))?;
        let mut buf = vec![0u8; 8192];
        let mut generation = None;
        // The kernel answers in our sendmsg: the answer is queued already (after anything older).
        loop {
            match socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => generation = nftset::netlink::parse_generation(&buf[..n]).or(generation),
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(e) => return Err(e.into()),
            }
        }
        generation.ok_or_else(|| io::Error::other("netlink: no generation in the answer to GETGEN"))
    }
}

fn libc_enoent() -> i32 {
    nix::errno::Errno::ENOENT as i32
}
