//! Kernel parameters under `/proc/sys`, as the calling thread sees them: the `net/` ones are
//! its network namespace's.

use std::io;

/// Writes `value` to `/proc/sys/KEY` (`net/ipv4/ip_forward`: slashes, as interface names may
/// hold dots).
pub fn set(key: &str, value: &str) -> io::Result<()> {
    let path = format!("/proc/sys/{key}");
    std::fs::write(&path, value).map_err(|e| io::Error::new(e.kind(), format!("writing {value} to {path}: {e}")))
}
