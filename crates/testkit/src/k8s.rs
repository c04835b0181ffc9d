//! A real Kubernetes control plane for tests: etcd, kube-apiserver (its own CA, serving
//! certificate, service-account keys, RBAC) and kube-controller-manager (node IPAM, the
//! EndpointSlice, ReplicaSet, Deployment, StatefulSet, namespace, service-account and garbage
//! collection controllers), upstream's own binaries as `tools/k8s/build.sh` builds them, on
//! loopback ports of this host. What envtest starts for controller-runtime, plus the
//! controllers whose results podnet reads.
//!
//! The binaries are found in `PODNET_K8S_BIN`, else in the build script's cache. Without them a
//! test skips with a message, unless `PODNET_REQUIRE_K8S` is set (`.ci/run` sets it), when it
//! fails: CI builds them and must run these tests.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// The build script's cache, where `tools/k8s/build.sh` puts the binaries by default.
pub const DEFAULT_CACHE: &str = "/var/cache/podnet/k8s";

/// The service CIDR the apiserver allocates ClusterIPs from (the lab's).
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The cluster CIDR node IPAM cuts `spec.podCIDR`s from (the lab's).
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";

/// The directory with the binaries, if they are there.
pub fn binaries() -> Option<PathBuf> {
    let have = |dir: &Path| ["etcd", "kube-apiserver", "kube-controller-manager", "kubectl"].iter().all(|b| dir.join(b).is_file());
    if let Some(dir) = std::env::var_os("PODNET_K8S_BIN").map(PathBuf::from) {
        return have(&dir).then_some(dir);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(DEFAULT_CACHE).ok()?.filter_map(|e| Some(e.ok()?.path().join("bin"))).filter(|d| have(d)).collect();
    found.sort();
    found.pop()
}

/// The binaries, or `None` after saying why the test cannot run (a failure under
/// `PODNET_REQUIRE_K8S`).
pub fn binaries_or_skip() -> Option<PathBuf> {
    let found = binaries();
    if found.is_none() {
        let why = "needs kube-apiserver, kube-controller-manager, etcd and kubectl: run tools/k8s/build.sh (or set PODNET_K8S_BIN)";
        assert!(std::env::var_os("PODNET_REQUIRE_K8S").is_none(), "this test cannot run here ({why}), and CI must run it: see .ci/run");
        eprintln!("skipped: {why}");
    }
    found
}

/// A process stopped when the control plane goes.
struct Process {
    name: &'static str,
    args: Vec<String>,
    child: Child,
}

/// A running control plane; everything stops and its files go when it is dropped (they stay
/// with `PODNET_K8S_KEEP` set, for a look at the components' logs).
pub struct ControlPlane {
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// `https://127.0.0.1:PORT`
    pub server: String,
    processes: Vec<Process>,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn err(what: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(what.to_string())
}

/// The files of the control plane's PKI, written into `dir`.
fn write_pki(dir: &Path) -> std::io::Result<()> {
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca.distinguished_name.push(DnType::CommonName, "podnet-test-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |name: &str, sans: Vec<String>, organization: Option<&str>| -> std::io::Result<()> {
        let key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::new(sans).map_err(err)?;
        params.distinguished_name.push(DnType::CommonName, name);
        if let Some(o) = organization {
            params.distinguished_name.push(DnType::OrganizationName, o);
        }
        let cert = params.signed_by(&key, &issuer).map_err(err)?;
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem())?;
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem())
    };
    let sans = ["127.0.0.1", "10.96.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"];
    leaf("kube-apiserver", sans.iter().map(|s| (*s).to_owned()).collect(), None)?;
    leaf("admin", Vec::new(), Some("system:masters"))?;
    std::fs::write(dir.join("ca.crt"), ca_cert.pem())?;
    // Service-account tokens: an ECDSA key the apiserver signs with and checks against.
    let sa = KeyPair::generate().map_err(err)?;
    std::fs::write(dir.join("sa.key"), sa.serialize_pem())?;
    std::fs::write(dir.join("sa.pub"), sa.public_key_pem())
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver and kube-controller-manager from `bin`, and waits until the
    /// apiserver is ready and the `default` service account exists (pods can be created).
    pub fn start(bin: &Path) -> std::io::Result<ControlPlane> {
        let dir = tempfile::Builder::new().prefix("podnet-k8s-").tempdir()?;
        write_pki(dir.path())?;
        let (etcd_client, etcd_peer, api_port) = (free_port()?, free_port()?, free_port()?);
        let server = format!("https://127.0.0.1:{api_port}");
        let mut cp = ControlPlane { bin: bin.to_owned(), server: server.clone(), processes: Vec::new(), dir };
        let d = cp.dir.path().to_owned();
        let path = |f: &str| d.join(f).to_string_lossy().into_owned();
        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        cp.spawn(
            "etcd",
            &[
                "--data-dir",
                &path("etcd"),
                "--listen-client-urls",
                &etcd_url,
                "--advertise-client-urls",
                &etcd_url,
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{etcd_peer}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{etcd_peer}"),
                "--initial-cluster",
                &format!("default=http://127.0.0.1:{etcd_peer}"),
                "--unsafe-no-fsync",
            ],
        )?;
        cp.spawn(
            "kube-apiserver",
            &[
                "--etcd-servers",
                &etcd_url,
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                &api_port.to_string(),
                "--tls-cert-file",
                &path("kube-apiserver.crt"),
                "--tls-private-key-file",
                &path("kube-apiserver.key"),
                "--client-ca-file",
                &path("ca.crt"),
                "--service-account-issuer",
                "https://kubernetes.default.svc.cluster.local",
                "--service-account-key-file",
                &path("sa.pub"),
                "--service-account-signing-key-file",
                &path("sa.key"),
                "--service-cluster-ip-range",
                SERVICE_CIDR,
                "--authorization-mode",
                "Node,RBAC",
                "--cert-dir",
                &path("apiserver-certs"),
            ],
        )?;
        cp.write_kubeconfig()?;
        cp.wait_ready(Duration::from_secs(60))?;
        let kubeconfig = cp.kubeconfig().to_string_lossy().into_owned();
        cp.spawn(
            "kube-controller-manager",
            &[
                "--kubeconfig",
                &kubeconfig,
                "--authentication-kubeconfig",
                &kubeconfig,
                "--authorization-kubeconfig",
                &kubeconfig,
                "--allocate-node-cidrs",
                "--cluster-cidr",
                CLUSTER_CIDR,
                "--service-cluster-ip-range",
                SERVICE_CIDR,
                "--service-account-private-key-file",
                &path("sa.key"),
                "--root-ca-file",
                &path("ca.crt"),
                "--use-service-account-credentials",
                "--leader-elect=false",
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                "0",
                "--controllers",
                "*",
            ],
        )?;
        // Pods need their namespace's `default` service account, which a controller makes.
        cp.wait_for(Duration::from_secs(60), "the default service account", |cp| {
            cp.kubectl(&["get", "serviceaccount", "default", "-n", "default"]).status.success()
        })?;
        Ok(cp)
    }

    fn spawn(&mut self, name: &'static str, args: &[&str]) -> std::io::Result<()> {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let child = self.launch(name, &args)?;
        self.processes.push(Process { name, args, child });
        Ok(())
    }

    fn launch(&self, name: &str, args: &[String]) -> std::io::Result<Child> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join(format!("{name}.log")))?;
        Command::new(self.bin.join(name))
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| std::io::Error::new(e.kind(), format!("starting {name}: {e}")))
    }

    /// Stops kube-apiserver (every watch on it breaks) and starts it again with the same
    /// settings and storage; returns once it is ready.
    pub fn restart_apiserver(&mut self) -> std::io::Result<()> {
        let i = self.processes.iter().position(|p| p.name == "kube-apiserver").ok_or_else(|| err("no kube-apiserver"))?;
        let _ = self.processes[i].child.kill();
        let _ = self.processes[i].child.wait();
        self.processes[i].child = self.launch("kube-apiserver", &self.processes[i].args.clone())?;
        self.wait_ready(Duration::from_secs(60))
    }

    /// An admin kubeconfig (client certificate in `system:masters`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    fn write_kubeconfig(&self) -> std::io::Result<()> {
        let d = self.dir.path();
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: podnet-test, cluster: {{server: '{}', certificate-authority: '{}'}}}}]\nusers: [{{name: admin, user: {{client-certificate: '{}', client-key: '{}'}}}}]\ncontexts: [{{name: podnet-test, context: {{cluster: podnet-test, user: admin}}}}]\ncurrent-context: podnet-test\n",
            self.server,
            d.join("ca.crt").display(),
            d.join("admin.crt").display(),
            d.join("admin.key").display()
        );
        std::fs::File::create(self.kubeconfig())?.write_all(text.as_bytes())
    }

    /// Runs upstream's kubectl against this control plane.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(self.bin.join("kubectl")).arg("--kubeconfig").arg(self.kubeconfig()).args(args).output().unwrap_or_else(|e| Output {
            status: std::process::ExitStatus::default(),
            stdout: Vec::new(),
            stderr: e.to_string().into_bytes(),
        })
    }

    /// kubectl's stdout as JSON (`-o json` is added).
    pub fn kubectl_json(&self, args: &[&str]) -> std::io::Result<serde_json::Value> {
        let mut all = args.to_vec();
        all.extend_from_slice(&["-o", "json"]);
        let out = self.kubectl(&all);
        if !out.status.success() {
            return Err(err(format!("kubectl {}: {}", all.join(" "), String::from_utf8_lossy(&out.stderr).trim())));
        }
        serde_json::from_slice(&out.stdout).map_err(err)
    }

    fn wait_ready(&self, within: Duration) -> std::io::Result<()> {
        let last = std::sync::Mutex::new(String::new());
        self.wait_for(within, "kube-apiserver /readyz", |cp| {
            let out = cp.kubectl(&["get", "--raw", "/readyz"]);
            *last.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = String::from_utf8_lossy(&out.stderr).into_owned();
            out.status.success()
        })
        .map_err(|e| err(format!("{e}\nkubectl said: {}", last.lock().unwrap_or_else(std::sync::PoisonError::into_inner))))
    }

    /// Polls `ready` until it holds, or fails naming `what` with the tail of every log.
    pub fn wait_for(&self, within: Duration, what: &str, ready: impl Fn(&ControlPlane) -> bool) -> std::io::Result<()> {
        let deadline = Instant::now() + within;
        while !ready(self) {
            if Instant::now() > deadline {
                return Err(err(format!("{what} not there after {within:?}:\n{}", self.logs_tail())));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// The last lines of each component's log, for a failure message.
    pub fn logs_tail(&self) -> String {
        self.processes
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(self.dir.path().join(format!("{}.log", p.name))).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                format!("--- {} ---\n{}", p.name, lines[lines.len().saturating_sub(8)..].join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if std::env::var_os("PODNET_K8S_KEEP").is_some() {
            eprintln!("kept the control plane's files in {}", self.dir.path().display());
            self.dir.disable_cleanup(true);
        }
        // Controllers first, etcd last.
        for p in self.processes.iter_mut().rev() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}
