//! A real Kubernetes control plane for tests (`kubeplane`), and the rule that a test needing one
//! fails, rather than skips, where CI must run it.
//!
//! The binaries are found in `PODNET_K8S_BIN`, else in the build script's cache. Without them a
//! test skips with a message, unless `PODNET_REQUIRE_K8S` is set (`.ci/run` sets it), when it
//! fails: CI builds them and must run these tests.

use std::path::PathBuf;

pub use kubeplane::{CLUSTER_CIDR, ControlPlane, DEFAULT_CACHE, SERVICE_CIDR, Settings, binaries};

/// The binaries, or `None` after saying why the test cannot run (a failure under
/// `PODNET_REQUIRE_K8S`).
pub fn binaries_or_skip() -> Option<PathBuf> {
    let found = binaries();
    if found.is_none() {
        let why = "needs etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubectl: run tools/k8s/build.sh (or set PODNET_K8S_BIN)";
        assert!(std::env::var_os("PODNET_REQUIRE_K8S").is_none(), "this test cannot run here ({why}), and CI must run it: see .ci/run");
        eprintln!("skipped: {why}");
    }
    found
}
