//! Where leases live. [`DiskStore`] keeps host-local's on-disk format, so that a lease made by
//! podnet can be released by the reference plugin and the other way round:
//! `<dataDir>/<network>/<ip>` holding `containerID\r\nifname`, `last_reserved_ip.<set>`, and a
//! `lock` file held with `flock` for the whole operation. [`MemStore`] is the fake for unit tests.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The operations the allocator needs.
pub trait LeaseStore {
    /// Records `ip` for `(id, ifname)`; false when someone holds it already.
    fn reserve(&mut self, id: &str, ifname: &str, ip: IpAddr, set: usize) -> io::Result<bool>;
    /// The last address reserved from range set `set`.
    fn last_reserved(&self, set: usize) -> Option<IpAddr>;
    /// Addresses held by `(id, ifname)` (also leases of older versions holding only the id).
    fn leases_of(&self, id: &str, ifname: &str) -> Vec<IpAddr>;
    /// Releases everything held by `(id, ifname)`.
    fn release(&mut self, id: &str, ifname: &str) -> io::Result<()>;
    /// Every lease: `(ip, container id, ifname)`.
    fn all(&self) -> Vec<(IpAddr, String, String)>;
}

const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
const LINE_BREAK: &str = "\r\n";

/// host-local's directory of leases for one network, locked while this value lives.
pub struct DiskStore {
    dir: PathBuf,
    _lock: File,
}

/// How long an operation waits for another plugin process's lock.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The default `dataDir`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

impl DiskStore {
    /// Opens (creating) `<data_dir>/<network>` and takes its lock, waiting while another
    /// plugin process holds it (so concurrent ADDs of different containers are safe), but not
    /// forever: after [`LOCK_WAIT`] it fails with `WouldBlock` (CNI's "try again later").
    pub fn open(data_dir: &Path, network: &str) -> io::Result<Self> {
        Self::open_waiting(data_dir, network, LOCK_WAIT)
    }

    /// [`DiskStore::open`] with a given wait for the lock.
    pub fn open_waiting(data_dir: &Path, network: &str, wait: std::time::Duration) -> io::Result<Self> {
        let dir = data_dir.join(network);
        fs::create_dir_all(&dir)?;
        let lock = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o750).open(dir.join("lock"))?;
        let deadline = std::time::Instant::now() + wait;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(io::Error::new(io::ErrorKind::WouldBlock, format!("{} is locked by another process", dir.display())));
                }
                Err(fs::TryLockError::Error(e)) => return Err(e),
            }
        }
        Ok(DiskStore { dir, _lock: lock })
    }

    fn lease_files(&self) -> Vec<(IpAddr, String)> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let ip: IpAddr = e.file_name().to_str()?.parse().ok()?;
                let text = fs::read_to_string(e.path()).ok()?;
                Some((ip, text.trim().to_owned()))
            })
            .collect()
    }
}

fn owner_matches(content: &str, id: &str, ifname: &str) -> bool {
    content == format!("{}{LINE_BREAK}{ifname}", id.trim()) || content == id.trim()
}

impl LeaseStore for DiskStore {
    fn reserve(&mut self, id: &str, ifname: &str, ip: IpAddr, set: usize) -> io::Result<bool> {
        let path = self.dir.join(ip.to_string());
        let mut f = match OpenOptions::new().read(true).write(true).create_new(true).mode(0o644).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(e),
        };
        if let Err(e) = f.write_all(format!("{}{LINE_BREAK}{ifname}", id.trim()).as_bytes()) {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        fs::write(self.dir.join(format!("{LAST_RESERVED_PREFIX}{set}")), ip.to_string())?;
        Ok(true)
    }

    fn last_reserved(&self, set: usize) -> Option<IpAddr> {
        fs::read_to_string(self.dir.join(format!("{LAST_RESERVED_PREFIX}{set}"))).ok()?.trim().parse().ok()
    }

    fn leases_of(&self, id: &str, ifname: &str) -> Vec<IpAddr> {
        self.lease_files().into_iter().filter(|(_, c)| owner_matches(c, id, ifname)).map(|(ip, _)| ip).collect()
    }

    fn release(&mut self, id: &str, ifname: &str) -> io::Result<()> {
        // Tolerant like the reference: release what can be released.
        let exact = format!("{}{LINE_BREAK}{ifname}", id.trim());
        let files = self.lease_files();
        let any_exact = files.iter().any(|(_, c)| *c == exact);
        for (ip, content) in files {
            if content == exact || (!any_exact && content == id.trim()) {
                let _ = fs::remove_file(self.dir.join(ip.to_string()));
            }
        }
        Ok(())
    }

    fn all(&self) -> Vec<(IpAddr, String, String)> {
        self.lease_files()
            .into_iter()
            .map(|(ip, c)| {
                let (id, ifname) = c.split_once(LINE_BREAK).unwrap_or((&c, ""));
                (ip, id.to_owned(), ifname.to_owned())
            })
            .collect()
    }
}

/// In-memory leases, for tests of the allocator.
#[derive(Default, Debug)]
pub struct MemStore {
    leases: BTreeMap<IpAddr, (String, String)>,
    last: BTreeMap<usize, IpAddr>,
}

impl LeaseStore for MemStore {
    fn reserve(&mut self, id: &str, ifname: &str, ip: IpAddr, set: usize) -> io::Result<bool> {
        if self.leases.contains_key(&ip) {
            return Ok(false);
        }
        self.leases.insert(ip, (id.to_owned(), ifname.to_owned()));
        self.last.insert(set, ip);
        Ok(true)
    }

    fn last_reserved(&self, set: usize) -> Option<IpAddr> {
        self.last.get(&set).copied()
    }

    fn leases_of(&self, id: &str, ifname: &str) -> Vec<IpAddr> {
        self.leases.iter().filter(|(_, (i, n))| i == id && n == ifname).map(|(ip, _)| *ip).collect()
    }

    fn release(&mut self, id: &str, ifname: &str) -> io::Result<()> {
        self.leases.retain(|_, (i, n)| !(i == id && n == ifname));
        Ok(())
    }

    fn all(&self) -> Vec<(IpAddr, String, String)> {
        self.leases.iter().map(|(ip, (i, n))| (*ip, i.clone(), n.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn disk_leases_use_host_local_format() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = DiskStore::open(dir.path(), "podnet").unwrap();
        let ip: IpAddr = "10.244.1.2".parse().unwrap();
        assert!(s.reserve("abc", "eth0", ip, 0).unwrap());
        assert!(!s.reserve("other", "eth0", ip, 0).unwrap());
        let net = dir.path().join("podnet");
        assert_eq!(fs::read_to_string(net.join("10.244.1.2")).unwrap(), "abc\r\neth0");
        assert_eq!(fs::metadata(net.join("10.244.1.2")).unwrap().permissions().mode() & 0o777, 0o644);
        assert_eq!(fs::read_to_string(net.join("last_reserved_ip.0")).unwrap(), "10.244.1.2");
        assert!(net.join("lock").exists());
        assert_eq!(s.last_reserved(0), Some(ip));
        assert_eq!(s.leases_of("abc", "eth0"), [ip]);
        assert_eq!(s.all(), [(ip, "abc".to_owned(), "eth0".to_owned())]);
        s.release("abc", "eth0").unwrap();
        assert!(!net.join("10.244.1.2").exists());
        assert_eq!(s.last_reserved(0), Some(ip), "the round-robin cursor survives a release");
    }

    #[test]
    fn old_leases_holding_only_the_id_are_released_too() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = DiskStore::open(dir.path(), "n").unwrap();
        fs::write(dir.path().join("n/10.0.0.9"), "abc").unwrap();
        assert_eq!(s.leases_of("abc", "eth0").len(), 1);
        s.release("abc", "eth0").unwrap();
        assert!(s.all().is_empty());
    }
}
