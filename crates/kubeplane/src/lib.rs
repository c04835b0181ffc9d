//! A real Kubernetes control plane: etcd, kube-apiserver (its own CA, serving certificate,
//! service-account keys, RBAC), kube-controller-manager (node IPAM, the EndpointSlice,
//! ReplicaSet, Deployment, StatefulSet, namespace, service-account and garbage-collection
//! controllers) and, when asked, kube-scheduler: upstream's own binaries as `tools/k8s/build.sh`
//! builds them. What envtest starts for controller-runtime, plus the controllers whose results
//! podnet reads.
//!
//! Two uses: tests start one on loopback ports of this host in a temporary directory, removed
//! with it; the lab starts one inside its control-plane network namespace (`ip netns exec`), in
//! the lab's state directory, and leaves it running ([`ControlPlane::detach`]) until `lab down`
//! calls [`stop`].

use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener};
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

/// The directory with the binaries (`PODNET_K8S_BIN`, else the newest in the build script's
/// cache), if they are there.
pub fn binaries() -> Option<PathBuf> {
    let have = |dir: &Path| ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"].iter().all(|b| dir.join(b).is_file());
    if let Some(dir) = std::env::var_os("PODNET_K8S_BIN").map(PathBuf::from) {
        return have(&dir).then_some(dir);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(DEFAULT_CACHE).ok()?.filter_map(|e| Some(e.ok()?.path().join("bin"))).filter(|d| have(d)).collect();
    found.sort();
    found.pop()
}

/// Where and how to run a control plane.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The directory with the binaries.
    pub bin: PathBuf,
    /// Where the PKI, etcd's data, kubeconfigs and logs go; `None`: a temporary directory,
    /// removed when the control plane is dropped.
    pub dir: Option<PathBuf>,
    /// A network namespace (by `ip netns` name) to run every component in.
    pub netns: Option<String>,
    /// The address kube-apiserver listens on and advertises.
    pub address: Ipv4Addr,
    /// kube-apiserver's port; 0 picks a free one.
    pub port: u16,
    /// More names and addresses for the serving certificate (a forwarder's, say).
    pub extra_sans: Vec<String>,
    /// Also run kube-scheduler.
    pub scheduler: bool,
    /// kube-controller-manager's `--controllers` (`*`: all of them; `-name` leaves one out).
    pub controllers: String,
    /// `--service-cluster-ip-range`: one CIDR, or an IPv4 and an IPv6 one (dual-stack), primary first.
    pub service_cidrs: String,
    /// The controller-manager's `--cluster-cidr` (node IPAM): one CIDR, or one of each family;
    /// nodes get a /24 of IPv4 and a /64 of IPv6.
    pub cluster_cidrs: String,
}

impl Settings {
    /// On loopback ports of this host, in a temporary directory, without a scheduler (tests
    /// bind their pods themselves).
    pub fn loopback(bin: &Path) -> Settings {
        Settings {
            bin: bin.to_owned(),
            dir: None,
            netns: None,
            address: Ipv4Addr::LOCALHOST,
            port: 0,
            extra_sans: Vec::new(),
            scheduler: false,
            controllers: "*".into(),
            service_cidrs: SERVICE_CIDR.into(),
            cluster_cidrs: CLUSTER_CIDR.into(),
        }
    }
}

/// A process stopped when the control plane goes.
struct Process {
    name: &'static str,
    args: Vec<String>,
    child: Child,
}

enum Dir {
    Temporary(tempfile::TempDir),
    Kept(PathBuf),
}

/// A running control plane; everything stops (and a temporary directory goes) when it is
/// dropped, unless detached. With `PODNET_K8S_KEEP` set a temporary directory stays, for a look
/// at the components' logs.
pub struct ControlPlane {
    settings: Settings,
    dir: Dir,
    /// `https://ADDRESS:PORT`
    pub server: String,
    processes: Vec<Process>,
}

/// A loopback port nothing listens on, below the kernel's ephemeral range, and never the same
/// twice in one process. A port the kernel hands out for `:0` can be handed out again at once
/// (CI saw etcd given one port for both its client and peer URLs) or taken as the source port
/// of an outgoing connection before the server binds it.
pub fn free_port() -> std::io::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low: u16 =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok().and_then(|r| r.split_whitespace().next()?.parse().ok()).unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_001));
    let span = u32::from(high - low);
    // Processes start at different places (their pid); within one, each call takes the next
    // port of a walk that visits every port once (7919 is prime, so coprime with the span).
    let origin = std::process::id().wrapping_mul(2_654_435_761) % span;
    for _ in 0..span {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = low + u16::try_from(origin.wrapping_add(step.wrapping_mul(7919)) % span).unwrap_or(0);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::other(format!("no free loopback port in {low}-{high}")))
}

fn err(what: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(what.to_string())
}

/// The files of the control plane's PKI, written into `dir`.
fn write_pki(dir: &Path, extra_sans: &[String]) -> std::io::Result<()> {
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca.distinguished_name.push(DnType::CommonName, "podnet-ca");
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
    let mut sans: Vec<String> =
        ["127.0.0.1", "10.96.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
    sans.extend(extra_sans.iter().cloned());
    sans.sort();
    sans.dedup();
    leaf("kube-apiserver", sans, None)?;
    leaf("admin", Vec::new(), Some("system:masters"))?;
    std::fs::write(dir.join("ca.crt"), ca_cert.pem())?;
    // Service-account tokens: an ECDSA key the apiserver signs with and checks against.
    let sa = KeyPair::generate().map_err(err)?;
    std::fs::write(dir.join("sa.key"), sa.serialize_pem())?;
    std::fs::write(dir.join("sa.pub"), sa.public_key_pem())
}

/// An admin kubeconfig for `server`, with the client certificate and CA in `dir`.
pub fn kubeconfig_text(dir: &Path, server: &str, cluster: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: {cluster}, cluster: {{server: '{server}', certificate-authority: '{}'}}}}]\nusers: [{{name: {cluster}-admin, user: {{client-certificate: '{}', client-key: '{}'}}}}]\ncontexts: [{{name: {cluster}, context: {{cluster: {cluster}, user: {cluster}-admin}}}}]\ncurrent-context: {cluster}\n",
        dir.join("ca.crt").display(),
        dir.join("admin.crt").display(),
        dir.join("admin.key").display()
    )
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver and kube-controller-manager on loopback ports (see
    /// [`Settings::loopback`]).
    pub fn start(bin: &Path) -> std::io::Result<ControlPlane> {
        ControlPlane::start_with(Settings::loopback(bin))
    }

    /// Starts every component and waits until the apiserver is ready and the `default` service
    /// account exists (pods can be created). On failure everything started is stopped.
    pub fn start_with(settings: Settings) -> std::io::Result<ControlPlane> {
        let dir = match &settings.dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                Dir::Kept(d.clone())
            }
            None => Dir::Temporary(tempfile::Builder::new().prefix("podnet-k8s-").tempdir()?),
        };
        let port = if settings.port == 0 { free_port()? } else { settings.port };
        let server = format!("https://{}:{port}", settings.address);
        let mut cp = ControlPlane { settings, dir, server, processes: Vec::new() };
        cp.start_components(port)?;
        Ok(cp)
    }

    /// Where the control plane's files are.
    pub fn dir(&self) -> &Path {
        match &self.dir {
            Dir::Temporary(t) => t.path(),
            Dir::Kept(p) => p,
        }
    }

    fn start_components(&mut self, api_port: u16) -> std::io::Result<()> {
        let mut sans = self.settings.extra_sans.clone();
        sans.push(self.settings.address.to_string());
        write_pki(self.dir(), &sans)?;
        // In a namespace of its own the control plane has its loopback to itself.
        let (etcd_client, etcd_peer) = if self.settings.netns.is_some() { (2379, 2380) } else { (free_port()?, free_port()?) };
        let d = self.dir().to_owned();
        let path = |f: &str| d.join(f).to_string_lossy().into_owned();
        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        let initial_cluster = format!("default={peer_url}");
        self.spawn(
            "etcd",
            &[
                "--data-dir",
                &path("etcd"),
                "--listen-client-urls",
                &etcd_url,
                "--advertise-client-urls",
                &etcd_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &initial_cluster,
                "--unsafe-no-fsync",
            ],
        )?;
        let service_range = self.settings.service_cidrs.clone();
        self.spawn(
            "kube-apiserver",
            &[
                "--etcd-servers",
                &etcd_url,
                "--bind-address",
                &self.settings.address.to_string(),
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
                &service_range,
                "--authorization-mode",
                "Node,RBAC",
                "--cert-dir",
                &path("apiserver-certs"),
                // Nodes are reached on their InternalIP (the lab's underlay), at the kubelet port they report.
                "--kubelet-preferred-address-types",
                "InternalIP,Hostname",
            ],
        )?;
        self.write_kubeconfig()?;
        self.wait_ready(Duration::from_secs(60))?;
        let kubeconfig = self.kubeconfig().to_string_lossy().into_owned();
        // What both controllers take: the admin kubeconfig for everything, one replica (no
        // election), no serving port of their own.
        let common = [
            "--kubeconfig",
            &kubeconfig,
            "--authentication-kubeconfig",
            &kubeconfig,
            "--authorization-kubeconfig",
            &kubeconfig,
            "--leader-elect=false",
            "--bind-address",
            "127.0.0.1",
            "--secure-port",
            "0",
        ];
        let (sa_key, ca) = (path("sa.key"), path("ca.crt"));
        let controllers = self.settings.controllers.clone();
        let (service_cidrs, cluster_cidrs) = (self.settings.service_cidrs.clone(), self.settings.cluster_cidrs.clone());
        let mut manager = common.to_vec();
        manager.extend([
            "--allocate-node-cidrs",
            "--cluster-cidr",
            &cluster_cidrs,
            "--service-cluster-ip-range",
            &service_cidrs,
            "--service-account-private-key-file",
            &sa_key,
            "--root-ca-file",
            &ca,
            "--use-service-account-credentials",
            "--controllers",
            &controllers,
        ]);
        if cluster_cidrs.contains(',') {
            // Dual-stack node IPAM: kubeadm's per-family node masks.
            manager.extend(["--node-cidr-mask-size-ipv4", "24", "--node-cidr-mask-size-ipv6", "64"]);
        }
        self.spawn("kube-controller-manager", &manager)?;
        if self.settings.scheduler {
            self.spawn("kube-scheduler", &common)?;
        }
        // Pods need their namespace's `default` service account, which a controller makes.
        self.wait_for(Duration::from_secs(60), "the default service account", |cp| {
            cp.kubectl(&["get", "serviceaccount", "default", "-n", "default"]).status.success()
        })
    }

    fn spawn(&mut self, name: &'static str, args: &[&str]) -> std::io::Result<()> {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let child = self.launch(name, &args)?;
        self.processes.push(Process { name, args, child });
        std::fs::create_dir_all(self.dir().join("pids"))?;
        std::fs::write(self.dir().join("pids").join(name), self.processes.last().map(|p| p.child.id()).unwrap_or_default().to_string())
    }

    /// `bin/name`, in the control plane's namespace when it has one.
    fn command(&self, name: &str) -> Command {
        let exe = self.settings.bin.join(name);
        match &self.settings.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(exe);
                c
            }
            None => Command::new(exe),
        }
    }

    fn launch(&self, name: &str, args: &[String]) -> std::io::Result<Child> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_file(name))?;
        let mut command = self.command(name);
        command.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        if self.settings.dir.is_some() {
            // A kept control plane outlives the command that started it (and its terminal's ^C).
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
        }
        command.spawn().map_err(|e| std::io::Error::new(e.kind(), format!("starting {name}: {e}")))
    }

    /// A component's log.
    pub fn log_file(&self, name: &str) -> PathBuf {
        self.dir().join(format!("{name}.log"))
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

    /// An admin kubeconfig (client certificate in `system:masters`) for the apiserver's own
    /// address.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir().join("admin.kubeconfig")
    }

    fn write_kubeconfig(&self) -> std::io::Result<()> {
        std::fs::File::create(self.kubeconfig())?.write_all(kubeconfig_text(self.dir(), &self.server, "podnet").as_bytes())
    }

    /// Runs upstream's kubectl against this control plane (in its namespace when it has one).
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.command("kubectl").arg("--kubeconfig").arg(self.kubeconfig()).args(args).output().unwrap_or_else(|e| Output {
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
                let text = std::fs::read_to_string(self.log_file(p.name)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                format!("--- {} ---\n{}", p.name, lines[lines.len().saturating_sub(8)..].join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Leaves every component running after this value is gone; [`stop`] on the directory stops them.
    pub fn detach(mut self) {
        self.processes.clear();
        if let Dir::Temporary(t) = &mut self.dir {
            t.disable_cleanup(true);
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Dir::Temporary(t) = &mut self.dir
            && std::env::var_os("PODNET_K8S_KEEP").is_some()
        {
            eprintln!("kept the control plane's files in {}", t.path().display());
            t.disable_cleanup(true);
        }
        // Controllers first, etcd last.
        for p in self.processes.iter_mut().rev() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

/// Stops the components a detached control plane in `dir` left running: each pid recorded there
/// whose command line still names `dir` (pids are reused), controllers first.
pub fn stop(dir: &Path) {
    let marker = dir.to_string_lossy().into_owned();
    for name in ["kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"] {
        let Some(pid) = std::fs::read_to_string(dir.join("pids").join(name)).ok().and_then(|t| t.trim().parse::<u32>().ok()) else {
            continue;
        };
        let ours = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker));
        if !ours {
            continue;
        }
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        // Wait until it is gone, so that its namespace and files can go.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')))
                .unwrap_or(true);
            if zombie {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
