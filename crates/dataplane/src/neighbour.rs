//! The kernel's ARP table is one table for every network namespace, sized by thresholds that
//! only the host's own namespace can set (`net.ipv4.neigh.default.gc_thresh1/2/3`, 128/512/1024
//! by default). A lab of a thousand pods holds a neighbour entry in each pod (its gateway) and
//! one in its node per pod, and each node one per peer node it talks to: past `gc_thresh3` the
//! kernel refuses new entries ("neighbor table overflow") and connections time out. These
//! thresholds are limits, not routing state: raising them changes no packet's path.

use std::io;

const ROOT: &str = "/proc/sys/net/ipv4/neigh/default";

fn read(name: &str) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("{ROOT}/{name}"))?;
    text.trim().parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{ROOT}/{name}: {e}")))
}

/// The thresholds that leave room for `entries` neighbours (garbage collection starts at the
/// second, the table is full at the third), never below what is set.
pub fn thresholds_for(entries: u64, now: [u64; 3]) -> [u64; 3] {
    let full = (entries * 2).next_power_of_two();
    [now[0].max(full / 8), now[1].max(full / 2), now[2].max(full)]
}

/// Raises the IPv4 neighbour table's thresholds so that `entries` fit; returns the old and new
/// `gc_thresh3` when it changed them. Must run in the host's namespace (the only place the
/// files exist).
pub fn make_room(entries: u64) -> io::Result<Option<(u64, u64)>> {
    let names = ["gc_thresh1", "gc_thresh2", "gc_thresh3"];
    let now = [read(names[0])?, read(names[1])?, read(names[2])?];
    let wanted = thresholds_for(entries, now);
    if wanted == now {
        return Ok(None);
    }
    // Largest first, so that the three stay ordered at every step.
    for i in (0..3).rev() {
        std::fs::write(format!("{ROOT}/{}", names[i]), wanted[i].to_string())?;
    }
    Ok(Some((now[2], wanted[2])))
}

#[cfg(test)]
mod tests {
    #[test]
    fn thresholds_grow_to_fit_and_never_shrink() {
        assert_eq!(super::thresholds_for(100, [128, 512, 1024]), [128, 512, 1024]);
        assert_eq!(super::thresholds_for(12_000, [128, 512, 1024]), [4096, 16384, 32768]);
        assert_eq!(super::thresholds_for(12_000, [128, 512, 65536]), [4096, 16384, 65536]);
    }
}
