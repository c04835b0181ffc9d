//! Network namespaces, the way `ip netns` keeps them (a bind mount under `/run/netns`), and a
//! way to run code inside one: a namespace is per thread, so work happens on a dedicated OS
//! thread that enters it; sockets created there stay in it.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

/// Where named namespaces live (as with `ip netns`).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// The path of a named namespace.
pub fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

fn nix_err(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Makes `/run/netns` a shared mount point, as `ip netns add` does, so that namespace mounts
/// propagate to mount namespaces made later (`ip netns exec`).
fn prepare_run_dir() -> io::Result<()> {
    std::fs::create_dir_all(NETNS_RUN_DIR)?;
    let shared = |dir: &str| mount(None::<&str>, dir, None::<&str>, MsFlags::MS_SHARED | MsFlags::MS_REC, None::<&str>);
    match shared(NETNS_RUN_DIR) {
        Ok(()) => Ok(()),
        Err(nix::Error::EINVAL) => {
            mount(Some(NETNS_RUN_DIR), NETNS_RUN_DIR, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>).map_err(nix_err)?;
            shared(NETNS_RUN_DIR).map_err(nix_err)
        }
        Err(e) => Err(nix_err(e)),
    }
}

/// Creates the named namespace `/run/netns/<name>` (fails if it exists), with `lo` down as
/// the kernel makes it.
pub fn create(name: &str) -> io::Result<PathBuf> {
    prepare_run_dir()?;
    let path = path_of(name);
    // The mount target must exist; create_new fails when the name is taken.
    std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
    let target = path.clone();
    let made = std::thread::spawn(move || -> io::Result<()> {
        // This thread is thrown away after the unshare: the caller's namespace is untouched.
        unshare(CloneFlags::CLONE_NEWNET).map_err(nix_err)?;
        mount(Some("/proc/thread-self/ns/net"), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(nix_err)
    })
    .join()
    .map_err(|_| io::Error::other("namespace thread panicked"))?;
    if let Err(e) = made {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

/// Deletes a named namespace (unmount and remove); a missing one is not an error.
pub fn delete(name: &str) -> io::Result<()> {
    let path = path_of(name);
    match umount2(&path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(nix_err(e)),
    }
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Runs `f` on a new OS thread that has entered the namespace at `path`.
pub fn run_in<T, F>(path: &Path, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let ns = File::open(path)?;
    std::thread::spawn(move || -> io::Result<T> {
        setns(&ns, CloneFlags::CLONE_NEWNET).map_err(nix_err)?;
        Ok(f())
    })
    .join()
    .map_err(|_| io::Error::other("namespace thread panicked"))?
}

/// Starts `f` on a new OS thread that has entered the namespace at `path`, without waiting:
/// for work that can overlap with the caller's.
pub fn spawn_in<T, F>(path: &Path, f: F) -> io::Result<std::thread::JoinHandle<io::Result<T>>>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let ns = File::open(path)?;
    // A small stack: these threads make a few syscalls, and a smaller mapping starts faster.
    std::thread::Builder::new().stack_size(256 * 1024).spawn(move || -> io::Result<T> {
        setns(&ns, CloneFlags::CLONE_NEWNET).map_err(nix_err)?;
        f()
    })
}

/// Starts a long-lived server on its own OS thread inside the namespace at `path`: every socket
/// it makes, listening or connecting, is the namespace's (a usual stack, for a runtime).
pub fn spawn_server_in<F>(path: &Path, name: String, f: F) -> io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    let ns = File::open(path)?;
    std::thread::Builder::new().name(name).spawn(move || {
        if let Err(e) = setns(&ns, CloneFlags::CLONE_NEWNET) {
            eprintln!("entering the namespace: {e}");
            return;
        }
        f();
    })
}

/// A named namespace removed on drop (for tests and short-lived labs).
pub struct NamedNetns {
    name: String,
    path: PathBuf,
}

impl NamedNetns {
    /// Creates it.
    pub fn new(name: &str) -> io::Result<Self> {
        Ok(NamedNetns { name: name.to_owned(), path: create(name)? })
    }

    /// `/run/netns/<name>`
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = delete(&self.name);
    }
}
