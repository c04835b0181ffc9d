//! Shared by the namespace tests: uniquely named namespaces removed on drop, and running a
//! plugin exactly as a runtime does (exec'd in the node namespace, `CNI_*` env, config on stdin).

#![allow(dead_code, clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use dataplane::netns::NamedNetns;
use serde_json::Value;

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Whether the tests can make namespaces.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Our plugin binary.
pub fn ours() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_podnet-cni"))
}

/// A node namespace, pod namespaces and a lease directory, removed on drop.
pub struct Lab {
    pub node: NamedNetns,
    pub pods: Vec<NamedNetns>,
    pub data: tempfile::TempDir,
}

impl Lab {
    pub fn new(pods: usize) -> Lab {
        let id = format!("pnc{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst));
        let node = NamedNetns::new(&format!("{id}-node")).unwrap();
        let pods = (0..pods).map(|i| NamedNetns::new(&format!("{id}-p{i}")).unwrap()).collect();
        Lab { node, pods, data: tempfile::tempdir().unwrap() }
    }

    /// Runs `binary` for `command` in the node namespace; returns (success, stdout as JSON).
    pub fn exec(&self, binary: &Path, command: &str, pod: Option<usize>, container: &str, cni_path: &str, conf: &Value) -> (bool, Value) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.node.name()])
            .arg(binary)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some(p) = pod {
            cmd.env("CNI_NETNS", self.pods[p].path());
        }
        let mut child = cmd.spawn().unwrap();
        child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        (out.status.success(), serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Files of the lease directory of `network`: name and content, sorted.
    pub fn leases(&self, network: &str) -> Vec<(String, String)> {
        let dir = self.data.path().join(network);
        let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read_to_string(e.path()).unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }
}
