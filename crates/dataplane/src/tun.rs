//! TUN devices: a layer-3 interface whose packets a process reads and writes (for podnet, the
//! userspace WireGuard of `--encrypt wireguard`: this kernel has no wireguard module).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;

/// `TUNSETIFF`: `_IOW('T', 202, int)`.
const TUNSETIFF: nix::libc::c_ulong = 0x4004_54ca;
const IFF_TUN: i16 = 0x0001;
const IFF_NO_PI: i16 = 0x1000;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

/// Makes the TUN device `name` in the calling thread's network namespace (plain IP packets, no
/// packet-information header) and returns its queue: reads give one packet each, writes take
/// one. The device lives while the file is open.
pub fn create(name: &str) -> io::Result<File> {
    if name.is_empty() || name.len() > 15 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("a TUN device's name has 1-15 bytes: {name:?}")));
    }
    let file = OpenOptions::new().read(true).write(true).open("/dev/net/tun").map_err(|e| io::Error::new(e.kind(), format!("opening /dev/net/tun: {e}")))?;
    let mut req = IfReq { name: [0; 16], flags: IFF_TUN | IFF_NO_PI, _pad: [0; 22] };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads a `struct ifreq` of this layout (name, then flags) from the pointer,
    // which is valid for the call; the fd is open.
    #[allow(unsafe_code)]
    let r = unsafe { nix::libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
    if r < 0 {
        return Err(io::Error::new(io::Error::last_os_error().kind(), format!("TUNSETIFF {name}: {}", io::Error::last_os_error())));
    }
    Ok(file)
}
