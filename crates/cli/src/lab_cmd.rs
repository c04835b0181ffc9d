//! `podnet lab ...`: a cluster's pod network as namespaces on this machine.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use lab::LabName;
use lab::plan::{LabConfig, Mode};
use lab::state::{self, LabState};

#[derive(Subcommand)]
pub enum LabCommand {
    /// Make a lab: nodes, the underlay, and every pod of the manifests.
    Up(UpArgs),
    /// Add or update the manifests' objects in a running lab: pods and workloads (scaled),
    /// Services, Namespaces (labels), NetworkPolicies, Ingresses, Gateway API objects.
    Apply(ManifestArgs),
    /// Remove the manifests' objects from a running lab (a Namespace takes its objects with it).
    Delete(ManifestArgs),
    /// Remove a lab and everything it made (also after a crash).
    Down(NameArg),
    /// List the labs that are up.
    List,
    /// Show pods or nodes, kubectl-style.
    Get(GetArgs),
    /// Run a command in a pod's network namespace (with its resolv.conf and hosts).
    Exec(ExecArgs),
    /// Check pod-to-pod and node-to-pod connectivity, Services and DNS with real packets, each
    /// connection held against the NetworkPolicy verdict (allowed answers, denied times out).
    Check(NameArg),
    /// Mark a pod ready, not ready or terminating (its EndpointSlice conditions follow).
    Mark(MarkArgs),
    /// Connect every ordered pair of pods on every port (real packets) and print the truth table.
    Probe(ProbeArgs),
    /// The lab process's log, or (`--drops`) the packets NetworkPolicy drops, as they happen.
    Logs(LogsArgs),
    /// Describe an object as kubectl does (`describe networkpolicy NAME -n NS`).
    Describe(DescribeArgs),
    /// A Service's rules and elements as the node's kernel holds them (`iptables-save | grep SVC`).
    Rules(RulesArgs),
    /// Add, change or remove labels of a pod or namespace (`key=value`, `key-`), as
    /// `kubectl label --overwrite` does.
    Label(LabelArgs),
    /// Start the lab process again from the saved state (after it died or was killed); pods,
    /// addresses and rules are kept.
    Restart(NameArg),
    /// `--encrypt wireguard`: replace every node's WireGuard key pair; the tunnels take the new
    /// keys at once (a new handshake on the next packet).
    RotateKeys(NameArg),
    /// Serve a browser view of the lab: nodes and pods, Services and endpoints, the policy
    /// matrix, live flows; click a pair to trace it.
    Ui(crate::lab_ui::UiArgs),
    /// The path of an admin kubeconfig for a lab made with `up --control-plane` (for kubectl).
    Kubeconfig(NameArg),
    /// The lab process (started by `up`).
    #[command(hide = true)]
    Daemon(NameArg),
    /// A control-plane lab's node agents' kubelet part (started by `up --control-plane`).
    #[command(hide = true)]
    Kubelet(NameArg),
}

#[derive(Args)]
pub struct NameArg {
    /// The lab (default: the only one up, else `podnet`).
    #[arg(long)]
    pub(crate) name: Option<LabName>,
}

#[derive(Args)]
pub struct ManifestArgs {
    /// Manifests (files or directories).
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true, num_args = 1..)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    name: NameArg,
}

/// How `lab probe` reaches a pod.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Via {
    /// Its pod IP.
    Pod,
    /// A ClusterIP Service whose only endpoint on that port is the pod.
    Service,
}

/// `lab probe` output.
#[derive(Clone, Copy, ValueEnum)]
pub enum ProbeFormat {
    /// Upstream's truth tables (`.` reached, `X` blocked), one per port.
    Table,
    /// `podnet policy matrix -o json`'s shape.
    Json,
}

#[derive(Args)]
pub struct ProbeArgs {
    /// Only the pods of these namespaces (repeatable; default: every non-hostNetwork pod).
    #[arg(short = 'n', long = "namespace")]
    pub(crate) namespaces: Vec<String>,
    /// Ports to probe, `80/TCP` or `53/UDP` (repeatable; default: every declared container port).
    #[arg(long = "port", value_parser = crate::policy_cmd::parse_port)]
    pub(crate) ports: Vec<policy::PortKey>,
    /// Connect to the pod IP, or through a ClusterIP Service selecting that pod.
    #[arg(long, value_enum, default_value = "pod")]
    pub(crate) via: Via,
    /// Milliseconds to wait for an answer before a connection counts as blocked.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub(crate) timeout: u64,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub(crate) output: ProbeFormat,
    #[command(flatten)]
    pub(crate) name: NameArg,
}

/// `lab logs` output.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line per drop for people.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Args)]
pub struct LogsArgs {
    /// The packets the nodes' NetworkPolicy rules drop (followed as they happen).
    #[arg(long)]
    pub(crate) drops: bool,
    /// Only drops from or to pods of these namespaces (repeatable).
    #[arg(short = 'n', long = "namespace", requires = "drops")]
    pub(crate) namespaces: Vec<String>,
    /// Output format of `--drops`.
    #[arg(short = 'o', long, value_enum, default_value = "text", requires = "drops")]
    pub(crate) output: LogFormat,
    /// Print what is recorded and stop, instead of following (`--drops` follows by default).
    #[arg(long, conflicts_with = "follow")]
    pub(crate) no_follow: bool,
    /// Follow the lab process's log.
    #[arg(short = 'f', long)]
    pub(crate) follow: bool,
    #[command(flatten)]
    pub(crate) name: NameArg,
}

#[derive(Args)]
pub struct RulesArgs {
    /// Only this Service (default: every Service of the namespace).
    pub(crate) service: Option<String>,
    /// Only this node (default: every node).
    #[arg(long)]
    pub(crate) node: Option<String>,
    /// The Services' namespace (default: default).
    #[arg(short = 'n', long, default_value = "default")]
    pub(crate) namespace: String,
    #[command(flatten)]
    pub(crate) name: NameArg,
}

/// What `lab describe` describes.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DescribeKind {
    /// A NetworkPolicy.
    #[value(alias = "networkpolicies", alias = "netpol", alias = "networkpolicy.networking.k8s.io")]
    Networkpolicy,
}

#[derive(Args)]
pub struct DescribeArgs {
    /// The kind.
    #[arg(value_enum)]
    pub(crate) kind: DescribeKind,
    /// Its name.
    pub(crate) object: String,
    /// Its namespace (default: default).
    #[arg(short = 'n', long, default_value = "default")]
    pub(crate) namespace: String,
    #[command(flatten)]
    pub(crate) name: NameArg,
}

/// What `lab label` relabels.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LabelKind {
    /// A pod.
    #[value(alias = "pods", alias = "po")]
    Pod,
    /// A namespace.
    #[value(alias = "namespaces", alias = "ns")]
    Namespace,
}

#[derive(Args)]
pub struct LabelArgs {
    /// pod or namespace.
    #[arg(value_enum)]
    pub(crate) kind: LabelKind,
    /// Its name.
    pub(crate) object: String,
    /// `key=value` to set (overwriting), `key-` to remove.
    #[arg(required = true, num_args = 1..)]
    pub(crate) changes: Vec<String>,
    /// The pod's namespace (default: default).
    #[arg(short = 'n', long, default_value = "default")]
    pub(crate) namespace: String,
    #[command(flatten)]
    pub(crate) name: NameArg,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum MarkAs {
    /// Ready (the default once its servers listen).
    Ready,
    /// Not ready: out of Services' ready endpoints.
    NotReady,
    /// Terminating (as if deleted with a grace period): serving but not ready.
    Terminating,
}

#[derive(Args)]
pub struct MarkArgs {
    /// Namespace.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// The pod.
    pod: String,
    /// What to mark it.
    #[arg(value_enum)]
    state: MarkAs,
    #[command(flatten)]
    name: NameArg,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ModeArg {
    /// A route per peer node's pod CIDR.
    HostGw,
    /// Flannel-like vxlan overlay.
    Vxlan,
    /// Calico-like: BIRD 2 on every node announces its pod CIDR over iBGP.
    Bgp,
}

#[derive(Args)]
pub struct UpArgs {
    /// Manifests (files or directories) whose pods and workloads become the lab's pods.
    #[arg(short = 'f', long = "filename", value_name = "PATH", num_args = 1..)]
    pub(crate) paths: Vec<PathBuf>,
    /// The lab's name (1-20 lower-case letters, digits and '-').
    #[arg(long, default_value = "podnet")]
    pub(crate) name: LabName,
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub(crate) nodes: usize,
    /// How nodes route each other's pods.
    #[arg(long, value_enum, default_value = "host-gw")]
    pub(crate) mode: ModeArg,
    /// Run a real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
    /// kube-scheduler) in a control-plane namespace: the manifests go through its API, kubectl
    /// drives the lab (`podnet lab kubeconfig`).
    #[arg(long)]
    pub(crate) control_plane: bool,
    /// Where the Kubernetes binaries are (default: $PODNET_K8S_BIN, else tools/k8s/build.sh's cache).
    #[arg(long, value_name = "DIR", requires = "control_plane")]
    pub(crate) kube_bin: Option<PathBuf>,
    /// `--mode bgp`: the cluster's AS number.
    #[arg(long = "bgp-as", value_name = "ASN", default_value_t = 64512)]
    pub(crate) bgp_as: u32,
    /// `--mode bgp`: how many nodes (the first ones) reflect routes to the others (0: a full
    /// iBGP mesh).
    #[arg(long = "bgp-route-reflectors", value_name = "N", default_value_t = 0)]
    pub(crate) bgp_route_reflectors: usize,
    /// `--mode bgp`: the external host peers over eBGP (AS 64513), as a top-of-rack router: it
    /// learns every pod CIDR and LoadBalancer IP and reaches pods directly.
    #[arg(long = "bgp-external")]
    pub(crate) bgp_external: bool,
    /// Encrypt the traffic between nodes' pods (WireGuard, in userspace: UDP 51820 on the
    /// underlay; pods get MTU 1440).
    #[arg(long, value_enum, value_name = "HOW")]
    pub(crate) encrypt: Option<EncryptArg>,
    /// The pods' and Services' address families: ipv4, ipv6, or dual (both, IPv4 primary).
    #[arg(long = "ip-family", value_enum, default_value = "ipv4")]
    pub(crate) ip_family: IpFamilyArg,
    /// The cluster's IPv6 pod CIDR (/56 or larger: a /64 per node).
    #[arg(long = "pod-cidr-v6", value_name = "CIDR", default_value = "fd00:10:244::/56")]
    pub(crate) pod_cidr_v6: ipnet::Ipv6Net,
    /// The IPv6 Service CIDR (/108 or smaller).
    #[arg(long = "service-cidr-v6", value_name = "CIDR", default_value = "fd00:10:96::/112")]
    pub(crate) service_cidr_v6: ipnet::Ipv6Net,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum IpFamilyArg {
    /// IPv4 only.
    Ipv4,
    /// IPv6 only.
    Ipv6,
    /// Both families, IPv4 primary.
    Dual,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum EncryptArg {
    /// WireGuard between every pair of nodes.
    Wireguard,
}

/// The lab's settings from `lab up`'s flags; BGP's only with `--mode bgp`.
pub(crate) fn lab_config(a: &UpArgs) -> Result<LabConfig> {
    let mode = match a.mode {
        ModeArg::HostGw => Mode::HostGw,
        ModeArg::Vxlan => Mode::Vxlan,
        ModeArg::Bgp => Mode::Bgp,
    };
    let mut config = LabConfig::new(&a.name, a.nodes, mode);
    config.ip_family = match a.ip_family {
        IpFamilyArg::Ipv4 => lab::plan::IpFamily::Ipv4,
        IpFamilyArg::Ipv6 => lab::plan::IpFamily::Ipv6,
        IpFamilyArg::Dual => lab::plan::IpFamily::Dual,
    };
    if a.control_plane && config.ip_family == lab::plan::IpFamily::Ipv6 {
        bail!("--ip-family ipv6: a control-plane lab is IPv4 or dual-stack (its API server is on the IPv4 underlay); use --ip-family dual");
    }
    config.pod_cidr6 = a.pod_cidr_v6.trunc();
    config.service_cidr6 = a.service_cidr_v6.trunc();
    if let Some(EncryptArg::Wireguard) = a.encrypt {
        config.encrypt = Some(lab::plan::Encryption::WireGuard);
    }
    let bgp_flags = a.bgp_as != 64512 || a.bgp_route_reflectors != 0 || a.bgp_external;
    match &mut config.bgp {
        None if bgp_flags => bail!("--bgp-as, --bgp-route-reflectors and --bgp-external need --mode bgp"),
        None => {}
        Some(bgp) => {
            if a.bgp_as == 0 {
                bail!("--bgp-as: 0 is not an AS number");
            }
            if a.bgp_as == lab::plan::EXTERNAL_ASN {
                bail!("--bgp-as: {} is the external host's AS; give the cluster another", lab::plan::EXTERNAL_ASN);
            }
            if a.bgp_route_reflectors > a.nodes {
                bail!("--bgp-route-reflectors {}: the lab has only {} node(s)", a.bgp_route_reflectors, a.nodes);
            }
            *bgp = lab::plan::BgpConfig { asn: a.bgp_as, route_reflectors: a.bgp_route_reflectors, external: a.bgp_external };
            for tool in ["bird", "birdc"] {
                if runnable(tool).is_err() {
                    bail!("--mode bgp runs BIRD 2 on every node, and `{tool}` is not installed: apt-get install bird2");
                }
            }
        }
    }
    Ok(config)
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Resource {
    /// Pods.
    #[value(alias = "po", alias = "pod")]
    Pods,
    /// Nodes.
    #[value(alias = "no", alias = "node")]
    Nodes,
    /// Services.
    #[value(alias = "svc", alias = "service")]
    Services,
    /// Endpoints (the ready addresses and ports of each Service, from its EndpointSlices).
    #[value(alias = "ep", alias = "endpoint")]
    Endpoints,
    /// EndpointSlices.
    #[value(alias = "endpointslice")]
    Endpointslices,
    /// `--mode bgp`: each node's BGP sessions and the routes its BIRD holds (`--node N`: one
    /// node, or `external`).
    #[value(alias = "route")]
    Routes,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum GetFormat {
    /// More columns.
    Wide,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
    /// `kind/name` per object, as kubectl's `-o name`.
    Name,
}

#[derive(Args)]
pub struct GetArgs {
    /// What to show.
    #[arg(value_enum)]
    resource: Resource,
    /// Only this object.
    object: Option<String>,
    /// Namespace (default: default).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// All namespaces.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum)]
    output: Option<GetFormat>,
    /// Only objects whose labels match (`app=web,tier in (a,b),!legacy`), as kubectl's `-l`.
    #[arg(short = 'l', long = "selector", value_parser = model::selector::parse)]
    selector: Option<model::Selector>,
    /// A LABELS column with every label (pods).
    #[arg(long)]
    show_labels: bool,
    /// Only this node's routes (`routes`; `external` for the external host).
    #[arg(long)]
    node: Option<String>,
    #[command(flatten)]
    name: NameArg,
}

#[derive(Args)]
pub struct ExecArgs {
    /// Namespace (default: default).
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// The pod.
    #[arg(required_unless_present = "external")]
    pod: Option<String>,
    /// Run on the external host (on the underlay, off the cluster) instead of in a pod.
    #[arg(long, conflicts_with = "pod")]
    external: bool,
    /// Pass this terminal's stdin to the command (kubectl's `-i`); without it, the command reads
    /// nothing, as kubectl's.
    #[arg(short = 'i', long = "stdin")]
    stdin: bool,
    /// Kubectl's `-t`: accepted for kubectl's habits (`exec -it`); the command runs on this
    /// terminal already.
    #[arg(short = 't', long = "tty")]
    _tty: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
    #[command(flatten)]
    name: NameArg,
}

pub fn run(cmd: LabCommand) -> Result<ExitCode> {
    match cmd {
        LabCommand::Up(a) => up(a),
        LabCommand::Apply(a) => change(a, true),
        LabCommand::Delete(a) => change(a, false),
        LabCommand::Down(a) => down(a),
        LabCommand::List => list(),
        LabCommand::Get(a) => get(a),
        LabCommand::Exec(a) => exec(a),
        LabCommand::Check(a) => crate::lab_check::check(&which(&a)?),
        LabCommand::Mark(a) => mark(a),
        LabCommand::Probe(a) => crate::lab_probe::probe(a),
        LabCommand::Label(a) => crate::lab_probe::label(a),
        LabCommand::Logs(a) => crate::lab_probe::logs(a),
        LabCommand::Describe(a) => crate::lab_describe::describe(a),
        LabCommand::Rules(a) => crate::lab_rules::rules(a),
        LabCommand::Ui(a) => crate::lab_ui::ui(a),
        LabCommand::Restart(a) => restart(a),
        LabCommand::RotateKeys(a) => rotate_keys(a),
        LabCommand::Kubeconfig(a) => crate::lab_control_plane::kubeconfig(&which(&a)?),
        LabCommand::Kubelet(a) => {
            let lab = which(&a)?;
            crate::lab_kubelet::run(&lab).with_context(|| format!("lab {lab}: the kubelet process"))?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Daemon(a) => {
            let lab = which(&a)?;
            lab::daemon::run(&lab).with_context(|| format!("lab {lab}: the lab process"))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The lab a command means (`--name`, else the only one up, else `podnet`).
pub(crate) fn which(a: &NameArg) -> Result<LabName> {
    which_lab(a.name.as_ref())
}

/// The lab a `--name` means (else the only one up, else `podnet`).
pub(crate) fn which_lab(name: Option<&LabName>) -> Result<LabName> {
    Ok(state::resolve_name(name)?)
}

/// Warns (on stderr) when the lab process is not running: what a command shows may be stale
/// and pods do not answer.
fn warn_if_stopped(lab: &LabName) {
    if let Err(e) = lab::daemon::require_running(lab) {
        eprintln!("warning: lab {lab}: {e}");
    }
}

/// A lab on a real control plane takes its objects from the API server: a change written into
/// the lab's state behind it would be undone at the next sync, so it is refused, naming the
/// kubectl command that does it.
pub(crate) fn refuse_on_control_plane(lab: &LabName, instead: &str) -> Result<()> {
    if state::load(lab).is_ok_and(|st| st.plan.config.control_plane.is_some()) {
        bail!(
            "lab {lab} runs on a Kubernetes control plane: change it through the API server instead — export KUBECONFIG=$(podnet lab kubeconfig --name {lab}); {instead} …"
        );
    }
    Ok(())
}

pub(crate) fn need_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("podnet lab makes network namespaces: run it as root");
    }
    Ok(())
}

fn up(a: UpArgs) -> Result<ExitCode> {
    need_root()?;
    if a.control_plane {
        return crate::lab_control_plane::up(a);
    }
    let started = Instant::now();
    let mut cluster = if a.paths.is_empty() { model::ClusterState::default() } else { model::load_cluster(&a.paths)? };
    require_valid_policies(&cluster)?;
    let config = lab_config(&a)?;
    lab::system::add_cluster_dns(&mut cluster, &config);
    lab::system::add_kubernetes_service(&mut cluster, &config);
    lab::system::add_ingress_controller(&mut cluster);
    // A lab that is up is refused before anything is printed or made.
    if lab::up::exists(&a.name) {
        bail!("lab {:?} is already up; remove it with `podnet lab down --name {}`", a.name.as_str(), a.name);
    }
    let plan = lab::plan::plan(&config, &cluster)?;
    let (services, given_slices) = lab::up::lab_services(&cluster, &config)?;
    let exe = std::env::current_exe().context("finding the podnet executable")?;
    outln!("Creating lab {:?} ({} nodes, {} pods, {} services)", a.name.as_str(), plan.nodes.len(), plan.pods.len(), services.len());
    let (mut st, locked) = lab::up::up(&plan, &services, &given_slices, &exe, |s| outln!(" ✓ {:<44} {:>7.1} ms", s.what, s.took.as_secs_f64() * 1e3), None)?;
    st.ingresses = cluster.ingresses.iter().map(|i| i.object.clone()).collect();
    st.ingress_classes.clone_from(&cluster.ingress_classes);
    st.secrets = cluster.secrets.iter().map(|s| s.object.clone()).collect();
    st.gateway_classes.clone_from(&cluster.gateway_classes);
    st.gateways = cluster.gateways.iter().map(|g| g.object.clone()).collect();
    st.http_routes = cluster.http_routes.iter().map(|r| r.object.clone()).collect();
    st.reference_grants = cluster.reference_grants.iter().map(|r| r.object.clone()).collect();
    st.namespaces = lab::change::given_namespaces(&cluster);
    st.network_policies = cluster.policies.iter().map(|p| p.policy.clone()).collect();
    let started_daemon = locked.save(&st).map_err(anyhow::Error::from).and_then(|()| {
        let t = Instant::now();
        start_daemon(&a.name, &exe).map(|()| t)
    });
    drop(locked);
    let t = match started_daemon {
        Ok(t) => t,
        Err(e) => {
            let _ = lab::up::down(&a.name);
            return Err(e);
        }
    };
    outln!(" ✓ {:<44} {:>7.1} ms", "lab process serving every declared port", t.elapsed().as_secs_f64() * 1e3);
    if st.plan.config.mode == Mode::Bgp {
        let t = Instant::now();
        if let Err(e) = wait_for_bgp(&st.plan) {
            let _ = lab::up::down(&a.name);
            return Err(e);
        }
        outln!(" ✓ {:<44} {:>7.1} ms", "BGP: every node has every pod CIDR", t.elapsed().as_secs_f64() * 1e3);
    }
    outln!("Lab {:?} is up in {:.2} s.\n", a.name.as_str(), started.elapsed().as_secs_f64());
    out!("{}", pods_table(&st, &PodFilter { wide: true, ..Default::default() }));
    outln!("\nNext: podnet lab check --name {0}   |   podnet lab exec --name {0} -n NS POD -- CMD   |   podnet lab down --name {0}", a.name);
    Ok(ExitCode::SUCCESS)
}

/// Starts the lab process, detached in its own process group, and waits until it listens.
pub(crate) fn start_daemon(lab: &LabName, exe: &std::path::Path) -> Result<()> {
    start_detached(exe, "daemon", lab, &lab::daemon::log_file(lab), "the lab process")
}

/// Starts `podnet lab <command> --name <lab>`, detached in its own process group with its stderr
/// in `log`, and waits until it says `ready` on stdout.
pub(crate) fn start_detached(exe: &std::path::Path, command: &str, lab: &LabName, log_path: &std::path::Path, what: &str) -> Result<()> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log_path).with_context(|| format!("opening {}", log_path.display()))?;
    let mut child = Command::new(exe)
        .args(["lab", command, "--name", lab.as_str()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout from {what}"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) if line.trim() == "ready" => Ok(()),
        _ => {
            let _ = child.kill();
            let log = std::fs::read_to_string(log_path).unwrap_or_default();
            bail!("{what} did not start: {log}")
        }
    }
}

fn change(a: ManifestArgs, apply: bool) -> Result<ExitCode> {
    need_root()?;
    let lab = which(&a.name)?;
    refuse_on_control_plane(&lab, if apply { "kubectl apply -f" } else { "kubectl delete -f" })?;
    let mut cluster = model::load_cluster(&a.paths)?;
    if apply {
        require_valid_policies(&cluster)?;
    }
    // Ingresses applied to a lab without an ingress controller bring ingress-nginx's pieces, as at `up`.
    if apply && !state::load(&lab)?.plan.pods.iter().any(lab::system::is_ingress_controller_pod) {
        lab::system::add_ingress_controller(&mut cluster);
    }
    let exe = std::env::current_exe().context("finding the podnet executable")?;
    let c = if apply { lab::change::apply(&lab, &cluster, &exe)? } else { lab::change::delete(&lab, &cluster, &exe)? };
    // As kubectl reports them: each object of the manifests (a workload, not each of its pods).
    for line in &c.objects {
        outln!("{line}");
    }
    for missing in &c.not_found {
        eprintln!("Error from server (NotFound): {missing}");
    }
    if !c.not_found.is_empty() {
        return Ok(ExitCode::FAILURE);
    }
    if c.added.is_empty() && c.updated.is_empty() && c.removed.is_empty() && c.objects.is_empty() {
        outln!("no change");
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses invalid NetworkPolicies before anything changes, with the API server's messages.
pub(crate) fn require_valid_policies(cluster: &model::ClusterState) -> Result<()> {
    if let Err(errors) = policy::PolicySet::compile(cluster) {
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        bail!("invalid NetworkPolicy:\n{}", text.join("\n"));
    }
    Ok(())
}

fn down(a: NameArg) -> Result<ExitCode> {
    need_root()?;
    let lab = which(&a)?;
    let t = Instant::now();
    match lab::up::down(&lab)? {
        lab::up::Down::Removed(n) => {
            outln!("Lab {:?} removed: {n} namespaces, its lab process, leases and state ({:.0} ms).", lab.as_str(), t.elapsed().as_secs_f64() * 1e3)
        }
        lab::up::Down::NotUp => outln!("Lab {:?} is not up: nothing to remove.", lab.as_str()),
    }
    Ok(ExitCode::SUCCESS)
}

fn rotate_keys(a: NameArg) -> Result<ExitCode> {
    need_root()?;
    let lab = which(&a)?;
    let locked = state::lock(&lab)?;
    let st = locked.load()?;
    if st.plan.config.encrypt.is_none() {
        bail!("lab {:?} is not encrypted (make it with `lab up --encrypt wireguard`): it has no keys to rotate", lab.as_str());
    }
    let t = Instant::now();
    let keys = lab::wireguard::rotate(&st.plan).context("writing the new keys")?;
    drop(locked);
    lab::daemon::reload(&lab).context("giving the tunnels their new keys")?;
    for (node, public) in keys {
        outln!("{node}\t{public}");
    }
    outln!("Rotated {} node key(s) in {:.0} ms.", st.plan.nodes.len(), t.elapsed().as_secs_f64() * 1e3);
    Ok(ExitCode::SUCCESS)
}

fn restart(a: NameArg) -> Result<ExitCode> {
    need_root()?;
    let lab = which(&a)?;
    let locked = state::lock(&lab)?;
    let st = locked.load()?;
    lab::up::stop_process(&lab);
    let exe = std::env::current_exe().context("finding the podnet executable")?;
    let t = Instant::now();
    start_daemon(&lab, &exe)?;
    drop(locked);
    outln!(
        "Lab {:?}: lab process started again from the saved state ({} pods, {} services) in {:.0} ms.",
        lab.as_str(),
        st.plan.pods.len(),
        st.services.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    Ok(ExitCode::SUCCESS)
}

/// Waits until BGP has converged: every node (and a peering external host) routes every other
/// node's pod CIDR as BIRD learned it.
pub(crate) fn wait_for_bgp(plan: &lab::LabPlan) -> Result<()> {
    let started = Instant::now();
    while !lab::bgp::converged(plan).context("reading the nodes' routes")? {
        if started.elapsed() > Duration::from_secs(30) {
            let log = std::fs::read_to_string(lab::daemon::log_file(&plan.config.name)).unwrap_or_default();
            let bgp: Vec<&str> = log.lines().filter(|l| l.contains("bgp")).collect();
            bail!("BGP did not converge in 30 s (see `podnet lab get routes`); the lab process said:\n{}", bgp.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn list() -> Result<ExitCode> {
    let mut out = String::from("NAME\tNODES\tPODS\tMODE\tLAB PROCESS\n");
    for name in state::list() {
        match state::load(&name) {
            Ok(st) => {
                let mode = st.plan.config.mode.name();
                let alive = if lab::daemon::alive(&name) { "running" } else { "stopped" };
                let _ = writeln!(out, "{name}\t{}\t{}\t{mode}\t{alive}", st.plan.nodes.len(), st.plan.pods.len());
            }
            Err(_) => {
                let _ = writeln!(out, "{name}\t?\t?\t?\tbroken (run `podnet lab down --name {name}`)");
            }
        }
    }
    out!("{}", align(&out));
    Ok(ExitCode::SUCCESS)
}

/// Aligns tab-separated columns with spaces, like kubectl's tables.
pub(crate) fn align(text: &str) -> String {
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}   ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Which pods `lab get pods` shows, and how.
#[derive(Default)]
pub(crate) struct PodFilter<'a> {
    pub(crate) namespace: Option<&'a str>,
    pub(crate) name: Option<&'a str>,
    pub(crate) selector: Option<&'a model::Selector>,
    pub(crate) wide: bool,
    pub(crate) show_labels: bool,
}

impl PodFilter<'_> {
    fn keeps(&self, pod: &lab::PodPlan) -> bool {
        self.namespace.is_none_or(|n| n == pod.namespace) && self.name.is_none_or(|n| n == pod.name) && self.selector.is_none_or(|s| s.matches(&pod.labels))
    }
}

fn labels_text(labels: &model::Labels) -> String {
    if labels.is_empty() { "<none>".into() } else { labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",") }
}

pub(crate) fn pods_table(st: &LabState, filter: &PodFilter<'_>) -> String {
    let mut out = String::new();
    let all = filter.namespace.is_none();
    let wide = filter.wide;
    if all {
        out.push_str("NAMESPACE\t");
    }
    out.push_str("NAME\tREADY\tSTATUS\tIP\tNODE");
    out.push_str(if wide { "\tOWNER\tNETNS" } else { "" });
    out.push_str(if filter.show_labels { "\tLABELS\n" } else { "\n" });
    for (pod, ip) in st.plan.pods.iter().zip(&st.pod_ips) {
        if !filter.keeps(pod) {
            continue;
        }
        if all {
            let _ = write!(out, "{}\t", pod.namespace);
        }
        let ip = ip.map(|i| i.to_string()).unwrap_or_else(|| "<none>".into());
        // As kubectl shows them: READY from readiness (`lab mark`), STATUS Terminating for a
        // pod marked so.
        let status = match (ip.as_str(), pod.terminating) {
            ("<none>", _) => "Pending",
            (_, true) => "Terminating",
            _ => "Running",
        };
        let ready = if status != "Pending" && pod.ready { "1/1" } else { "0/1" };
        let _ = write!(out, "{}\t{ready}\t{status}\t{ip}\t{}", pod.name, pod.node);
        if wide {
            let owner = pod.owner.as_ref().map(|o| format!("{}/{o}", pod.owner_kind)).unwrap_or_else(|| "<none>".into());
            let _ = write!(out, "\t{owner}\t{}", pod.netns);
        }
        if filter.show_labels {
            let _ = write!(out, "\t{}", labels_text(&pod.labels));
        }
        out.push('\n');
    }
    align(&out)
}

fn get(a: GetArgs) -> Result<ExitCode> {
    let lab = which(&a.name)?;
    let st = state::load(&lab)?;
    warn_if_stopped(&lab);
    if let Resource::Routes = a.resource {
        out!("{}", crate::lab_routes::view(&st, a.node.as_deref())?);
        return Ok(ExitCode::SUCCESS);
    }
    let namespace = if a.all_namespaces { None } else { Some(a.namespace.clone().unwrap_or_else(|| "default".into())) };
    let name = a.object.as_deref();
    let pod_filter = PodFilter {
        namespace: namespace.as_deref(),
        name,
        selector: a.selector.as_ref(),
        wide: matches!(a.output, Some(GetFormat::Wide)),
        show_labels: a.show_labels,
    };
    let labelled =
        |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| a.selector.as_ref().is_none_or(|s| s.matches(&m.labels.clone().unwrap_or_default()));
    // kubectl's answers for nothing to show: a named object that is not there is an error, an
    // empty list is said on stderr.
    let (kind, namespaced) = match a.resource {
        Resource::Pods => ("pods", true),
        Resource::Nodes => ("nodes", false),
        Resource::Services => ("services", true),
        Resource::Endpoints => ("endpoints", true),
        Resource::Endpointslices => ("endpointslices.discovery.k8s.io", true),
        Resource::Routes => ("routes", false),
    };
    let found = match a.resource {
        Resource::Pods => st.plan.pods.iter().filter(|p| pod_filter.keeps(p)).count(),
        Resource::Nodes => st.plan.nodes.iter().filter(|n| name.is_none_or(|want| want == n.name)).count(),
        Resource::Services | Resource::Endpoints => {
            st.services.iter().filter(|s| in_scope(namespace.as_deref(), name, &s.metadata) && labelled(&s.metadata)).count()
        }
        Resource::Endpointslices => st.endpoint_slices().iter().filter(|s| in_scope(namespace.as_deref(), name, &s.metadata)).count(),
        Resource::Routes => 0,
    };
    if found == 0 {
        if let Some(n) = name {
            eprintln!("Error from server (NotFound): {kind} {n:?} not found");
            return Ok(ExitCode::FAILURE);
        }
        match (&namespace, namespaced) {
            (Some(ns), true) => eprintln!("No resources found in {ns} namespace."),
            _ => eprintln!("No resources found"),
        }
        if !matches!(a.output, Some(GetFormat::Json | GetFormat::Yaml)) {
            return Ok(ExitCode::SUCCESS);
        }
    }
    if let Some(GetFormat::Name) = a.output {
        let scoped = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| in_scope(namespace.as_deref(), name, m);
        let names: Vec<String> = match a.resource {
            Resource::Pods => st.plan.pods.iter().filter(|p| pod_filter.keeps(p)).map(|p| format!("pod/{}", p.name)).collect(),
            Resource::Nodes => st.plan.nodes.iter().filter(|n| name.is_none_or(|want| want == n.name)).map(|n| format!("node/{}", n.name)).collect(),
            Resource::Services => {
                st.services.iter().filter(|s| scoped(&s.metadata)).map(|s| format!("service/{}", s.metadata.name.as_deref().unwrap_or_default())).collect()
            }
            Resource::Endpoints => {
                st.services.iter().filter(|s| scoped(&s.metadata)).map(|s| format!("endpoints/{}", s.metadata.name.as_deref().unwrap_or_default())).collect()
            }
            Resource::Endpointslices => st
                .endpoint_slices()
                .iter()
                .filter(|s| scoped(&s.metadata))
                .map(|s| format!("endpointslice.discovery.k8s.io/{}", s.metadata.name.as_deref().unwrap_or_default()))
                .collect(),
            Resource::Routes => Vec::new(),
        };
        for n in names {
            outln!("{n}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let text = match (a.resource, a.output) {
        (Resource::Pods, Some(GetFormat::Json | GetFormat::Yaml)) => {
            let items: Vec<serde_json::Value> = st
                .plan
                .pods
                .iter()
                .enumerate()
                .filter(|(_, p)| pod_filter.keeps(p))
                .map(|(i, p)| {
                    let ips = st.pod_addresses(i);
                    let ip = ips.first();
                    let owner = p.owner.as_ref().map(|o| vec![serde_json::json!({"kind": p.owner_kind, "name": o, "controller": true})]);
                    let node_ip = st.plan.nodes.iter().find(|n| n.name == p.node).and_then(|n| n.internal_ips().first().map(ToString::to_string));
                    let condition = |t: &str, ok: bool| serde_json::json!({"type": t, "status": if ok { "True" } else { "False" }});
                    let ports: Vec<serde_json::Value> =
                        p.ports.iter().map(|c| serde_json::json!({"containerPort": c.port, "protocol": c.protocol.as_str(), "name": c.name})).collect();
                    serde_json::json!({
                        "apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": p.name, "namespace": p.namespace, "labels": p.labels, "ownerReferences": owner},
                        "spec": {"nodeName": p.node, "hostNetwork": p.host_network, "hostname": p.hostname, "subdomain": p.subdomain,
                                 "containers": [{"name": "main", "ports": ports}]},
                        "status": {"phase": if ip.is_some() { "Running" } else { "Pending" },
                                   "hostIP": node_ip,
                                   "conditions": [condition("PodScheduled", true), condition("Initialized", true),
                                                  condition("ContainersReady", p.ready), condition("Ready", p.ready)],
                                   "podIP": ip, "podIPs": ips.iter().map(|i| serde_json::json!({"ip": i})).collect::<Vec<_>>()}
                    })
                })
                .collect();
            render(&object_or_list(&items, "pods", name)?, a.output)?
        }
        (Resource::Pods, _) => pods_table(&st, &pod_filter),
        (Resource::Nodes, Some(GetFormat::Json | GetFormat::Yaml)) => {
            let items: Vec<serde_json::Value> = st
                .plan
                .nodes
                .iter()
                .filter(|n| name.is_none_or(|want| want == n.name))
                .map(|n| {
                    serde_json::json!({
                        "apiVersion": "v1", "kind": "Node",
                        "metadata": {"name": n.name},
                        "spec": {"podCIDR": n.pod_cidrs().first().map(ToString::to_string), "podCIDRs": n.pod_cidrs().iter().map(ToString::to_string).collect::<Vec<_>>()},
                        "status": {"addresses": n.internal_ips().iter().map(|ip| serde_json::json!({"type": "InternalIP", "address": ip.to_string()})).collect::<Vec<_>>(),
                                   "conditions": [{"type": "Ready", "status": "True"}]}
                    })
                })
                .collect();
            render(&object_or_list(&items, "nodes", name)?, a.output)?
        }
        (Resource::Services, f) => services_view(&st, namespace.as_deref(), a.object.as_deref(), &labelled, f)?,
        (Resource::Endpoints, f) => endpoints_view(&st, namespace.as_deref(), a.object.as_deref(), &labelled, f)?,
        (Resource::Endpointslices, f) => slices_view(&st, namespace.as_deref(), a.object.as_deref(), f)?,
        (Resource::Nodes, f) => {
            let mut out = String::from(if matches!(f, Some(GetFormat::Wide)) {
                "NAME\tSTATUS\tINTERNAL-IP\tPOD-CIDR\tPODS\tNETNS\n"
            } else {
                "NAME\tSTATUS\tINTERNAL-IP\tPOD-CIDR\tPODS\n"
            });
            for n in st.plan.nodes.iter().filter(|n| name.is_none_or(|want| want == n.name)) {
                let pods = st.plan.pods.iter().filter(|p| p.node == n.name).count();
                let join = |v: Vec<String>| v.join(",");
                let (ips, cidrs) =
                    (join(n.internal_ips().iter().map(ToString::to_string).collect()), join(n.pod_cidrs().iter().map(ToString::to_string).collect()));
                let _ = write!(out, "{}\tReady\t{ips}\t{cidrs}\t{pods}", n.name);
                if matches!(f, Some(GetFormat::Wide)) {
                    let _ = write!(out, "\t{}", n.netns);
                }
                out.push('\n');
            }
            align(&out)
        }
        // Shown above, before the kubectl-like kinds.
        (Resource::Routes, _) => String::new(),
    };
    out!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// What `-l` keeps (Endpoints go by their Service's labels).
type Labelled<'a> = &'a dyn Fn(&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool;

fn in_scope(ns: Option<&str>, name: Option<&str>, meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
    ns.is_none_or(|n| meta.namespace.as_deref() == Some(n)) && name.is_none_or(|n| meta.name.as_deref() == Some(n))
}

fn list_of<T: serde::Serialize>(items: &[T]) -> Result<serde_json::Value> {
    Ok(serde_json::json!({"apiVersion": "v1", "kind": "List", "items": serde_json::to_value(items)?}))
}

/// kubectl's `-o json|yaml`: the object itself when a name is asked for, else a List.
fn object_or_list<T: serde::Serialize>(items: &[T], kind: &str, name: Option<&str>) -> Result<serde_json::Value> {
    match (name, items) {
        (Some(_), [one]) => Ok(serde_json::to_value(one)?),
        (Some(n), _) => bail!("Error from server (NotFound): {kind} {n:?} not found"),
        (None, _) => list_of(items),
    }
}

/// `kubectl get services`: NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) (and SELECTOR with -o wide).
fn services_view(st: &LabState, ns: Option<&str>, name: Option<&str>, labelled: Labelled<'_>, f: Option<GetFormat>) -> Result<String> {
    let items: Vec<&k8s_openapi::api::core::v1::Service> = st.services.iter().filter(|s| in_scope(ns, name, &s.metadata) && labelled(&s.metadata)).collect();
    if let Some(GetFormat::Json | GetFormat::Yaml) = f {
        return render(&object_or_list(&items, "services", name)?, f);
    }
    let wide = matches!(f, Some(GetFormat::Wide));
    let mut out = String::new();
    if ns.is_none() {
        out.push_str("NAMESPACE\t");
    }
    out.push_str(if wide { "NAME\tTYPE\tCLUSTER-IP\tEXTERNAL-IP\tPORT(S)\tSELECTOR\n" } else { "NAME\tTYPE\tCLUSTER-IP\tEXTERNAL-IP\tPORT(S)\n" });
    for s in items {
        let spec = s.spec.clone().unwrap_or_default();
        if ns.is_none() {
            let _ = write!(out, "{}\t", s.metadata.namespace.as_deref().unwrap_or_default());
        }
        let ty = spec.type_.clone().unwrap_or_else(|| "ClusterIP".into());
        // kubectl's order: LoadBalancer ingress addresses, then externalIPs.
        let ingress: Vec<String> = s
            .status
            .iter()
            .flat_map(|st| st.load_balancer.iter())
            .flat_map(|lb| lb.ingress.iter().flatten())
            .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
            .collect();
        let external_ips = spec.external_ips.clone().unwrap_or_default();
        let external = match (ty.as_str(), &spec.external_name) {
            ("ExternalName", Some(n)) => n.clone(),
            ("LoadBalancer", _) if ingress.is_empty() && external_ips.is_empty() => "<pending>".into(),
            ("LoadBalancer", _) => [ingress, external_ips].concat().join(","),
            _ if !external_ips.is_empty() => external_ips.join(","),
            _ => "<none>".into(),
        };
        let ports: Vec<String> = spec
            .ports
            .iter()
            .flatten()
            .map(|p| {
                let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                match p.node_port {
                    Some(np) => format!("{}:{np}/{proto}", p.port),
                    None => format!("{}/{proto}", p.port),
                }
            })
            .collect();
        let cip = spec.cluster_ip.clone().unwrap_or_else(|| "<none>".into());
        let _ = write!(
            out,
            "{}\t{ty}\t{cip}\t{external}\t{}",
            s.metadata.name.as_deref().unwrap_or_default(),
            if ports.is_empty() { "<none>".into() } else { ports.join(",") }
        );
        if wide {
            let sel: Vec<String> = spec.selector.iter().flatten().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = write!(out, "\t{}", if sel.is_empty() { "<none>".into() } else { sel.join(",") });
        }
        out.push('\n');
    }
    Ok(align(&out))
}

/// `kubectl get endpoints`: each Service's ready addresses × ports, from its EndpointSlices.
/// A Service's v1 Endpoints, as the endpoints controller makes them from its EndpointSlices:
/// one subset per set of ports, ready addresses apart from not-ready ones (terminating pods
/// left out), addresses sorted by IP.
fn endpoints_object(
    svc: &k8s_openapi::api::core::v1::Service,
    slices: &[k8s_openapi::api::discovery::v1::EndpointSlice],
) -> k8s_openapi::api::core::v1::Endpoints {
    use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference};
    let (name, ns) = (svc.metadata.name.clone().unwrap_or_default(), svc.metadata.namespace.clone().unwrap_or_default());
    let mut subsets: Vec<EndpointSubset> = Vec::new();
    for sl in slices.iter().filter(|sl| {
        sl.metadata.namespace.as_deref() == Some(ns.as_str())
            && sl.metadata.labels.as_ref().and_then(|l| l.get(model::endpoints::LABEL_SERVICE_NAME)) == Some(&name)
    }) {
        let mut ports: Vec<EndpointPort> = sl
            .ports
            .iter()
            .flatten()
            .map(|p| EndpointPort {
                name: p.name.clone(),
                port: p.port.unwrap_or_default(),
                protocol: p.protocol.clone(),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        ports.sort_by(|a, b| (&a.name, a.port).cmp(&(&b.name, b.port)));
        let index = match subsets.iter().position(|s| s.ports.as_ref() == Some(&ports)) {
            Some(i) => i,
            None => {
                subsets.push(EndpointSubset { ports: Some(ports), ..Default::default() });
                subsets.len() - 1
            }
        };
        for ep in &sl.endpoints {
            let conditions = ep.conditions.clone().unwrap_or_default();
            if conditions.terminating == Some(true) {
                continue;
            }
            let target = ep.target_ref.clone().map(|r| ObjectReference { kind: r.kind, name: r.name, namespace: r.namespace, ..Default::default() });
            for ip in &ep.addresses {
                let address = EndpointAddress { ip: ip.clone(), node_name: ep.node_name.clone(), target_ref: target.clone(), ..Default::default() };
                let list = if conditions.ready.unwrap_or(true) { &mut subsets[index].addresses } else { &mut subsets[index].not_ready_addresses };
                list.get_or_insert_with(Vec::new).push(address);
            }
        }
    }
    for s in &mut subsets {
        for list in [&mut s.addresses, &mut s.not_ready_addresses].into_iter().flatten() {
            list.sort_by_key(|a| a.ip.parse::<std::net::IpAddr>().ok());
        }
    }
    subsets.retain(|s| s.addresses.is_some() || s.not_ready_addresses.is_some());
    let labels = svc.metadata.labels.clone();
    Endpoints {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta { name: Some(name), namespace: Some(ns), labels, ..Default::default() },
        subsets: (!subsets.is_empty()).then_some(subsets),
    }
}

/// kubectl's ENDPOINTS column: `ip:port` per port and ready address, three at most, then
/// `+ N more...`.
fn endpoints_column(e: &k8s_openapi::api::core::v1::Endpoints) -> String {
    let mut all = Vec::new();
    for s in e.subsets.iter().flatten() {
        let addresses = s.addresses.clone().unwrap_or_default();
        match s.ports.as_deref().filter(|p| !p.is_empty()) {
            None => all.extend(addresses.iter().map(|a| a.ip.clone())),
            Some(ports) => {
                for p in ports {
                    all.extend(addresses.iter().map(|a| format!("{}:{}", a.ip, p.port)));
                }
            }
        }
    }
    match all.len() {
        0 => "<none>".into(),
        n if n > 3 => format!("{} + {} more...", all[..3].join(","), n - 3),
        _ => all.join(","),
    }
}

fn endpoints_view(st: &LabState, ns: Option<&str>, name: Option<&str>, labelled: Labelled<'_>, f: Option<GetFormat>) -> Result<String> {
    let slices = st.endpoint_slices();
    let items: Vec<k8s_openapi::api::core::v1::Endpoints> =
        st.services.iter().filter(|s| in_scope(ns, name, &s.metadata) && labelled(&s.metadata)).map(|svc| endpoints_object(svc, &slices)).collect();
    if let Some(GetFormat::Json | GetFormat::Yaml) = f {
        return render(&object_or_list(&items, "endpoints", name)?, f);
    }
    let mut out = String::new();
    if ns.is_none() {
        out.push_str("NAMESPACE\t");
    }
    out.push_str("NAME\tENDPOINTS\n");
    for e in &items {
        if ns.is_none() {
            let _ = write!(out, "{}\t", e.metadata.namespace.as_deref().unwrap_or_default());
        }
        let _ = writeln!(out, "{}\t{}", e.metadata.name.as_deref().unwrap_or_default(), endpoints_column(e));
    }
    Ok(align(&out))
}

/// `kubectl get endpointslices`: NAME ADDRESSTYPE PORTS ENDPOINTS.
fn slices_view(st: &LabState, ns: Option<&str>, name: Option<&str>, f: Option<GetFormat>) -> Result<String> {
    let slices: Vec<_> = st.endpoint_slices().into_iter().filter(|s| in_scope(ns, name, &s.metadata)).collect();
    if let Some(GetFormat::Json | GetFormat::Yaml) = f {
        return render(&object_or_list(&slices, "endpointslices.discovery.k8s.io", name)?, f);
    }
    let mut out = String::new();
    if ns.is_none() {
        out.push_str("NAMESPACE\t");
    }
    out.push_str("NAME\tADDRESSTYPE\tPORTS\tENDPOINTS\n");
    for sl in &slices {
        if ns.is_none() {
            let _ = write!(out, "{}\t", sl.metadata.namespace.as_deref().unwrap_or_default());
        }
        let ports: Vec<String> = sl.ports.iter().flatten().map(|p| p.port.unwrap_or_default().to_string()).collect();
        let eps: Vec<String> = sl.endpoints.iter().flat_map(|e| e.addresses.clone()).collect();
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}",
            sl.metadata.name.as_deref().unwrap_or_default(),
            sl.address_type,
            if ports.is_empty() { "<unset>".into() } else { ports.join(",") },
            if eps.is_empty() { "<unset>".into() } else { eps.join(",") }
        );
    }
    Ok(align(&out))
}

fn mark(a: MarkArgs) -> Result<ExitCode> {
    let lab = which(&a.name)?;
    refuse_on_control_plane(&lab, "kubectl delete pod (a pod's readiness is the API server's)")?;
    let locked = state::lock(&lab)?;
    lab::daemon::require_running(&lab)?;
    let mut st = locked.load()?;
    let pod = st
        .plan
        .pods
        .iter_mut()
        .find(|p| p.namespace == a.namespace && p.name == a.pod)
        .ok_or_else(|| anyhow!("pod {}/{} not found in lab \"{lab}\"", a.namespace, a.pod))?;
    (pod.ready, pod.terminating) = match a.state {
        MarkAs::Ready => (true, false),
        MarkAs::NotReady => (false, false),
        MarkAs::Terminating => (pod.ready, true),
    };
    let key = pod.key();
    locked.save(&st)?;
    // The lab process recomputes endpoints and the nodes' proxies.
    lab::daemon::reload(&lab).context("reloading the lab process")?;
    outln!(
        "pod/{key} marked {}",
        match a.state {
            MarkAs::Ready => "ready",
            MarkAs::NotReady => "not ready",
            MarkAs::Terminating => "terminating",
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// A Kubernetes-shaped value as JSON or YAML.
fn render(v: &serde_json::Value, format: Option<GetFormat>) -> Result<String> {
    Ok(match format {
        Some(GetFormat::Yaml) => serde_norway::to_string(v)?,
        _ => format!("{}\n", serde_json::to_string_pretty(v)?),
    })
}

fn exec(a: ExecArgs) -> Result<ExitCode> {
    need_root()?;
    let lab = which(&a.name)?;
    let st = state::load(&lab)?;
    let target = match &a.pod {
        None => st.plan.external_netns(),
        Some(name) => {
            let pod = st
                .plan
                .pods
                .iter()
                .find(|p| p.namespace == a.namespace && &p.name == name)
                .ok_or_else(|| anyhow!("pod {}/{name} not found in lab \"{lab}\" (see `podnet lab get pods -A`)", a.namespace))?;
            pod.netns.clone()
        }
    };
    // As a shell: 127 for a command that is not there, 126 for one that cannot run (`ip netns
    // exec` would exit 1 for both, like a failing command).
    if let Err((code, why)) = runnable(&a.command[0]) {
        eprintln!("podnet lab exec: {:?}: {why}", a.command[0]);
        return Ok(ExitCode::from(code));
    }
    // `ip netns exec` mounts /etc/netns/<netns>/* over /etc: the pod's resolv.conf and hosts.
    let mut command = Command::new("ip");
    command.args(["netns", "exec", &target]).args(&a.command);
    if !a.stdin {
        command.stdin(std::process::Stdio::null());
    }
    let err = command.exec();
    Err(anyhow!("running `ip netns exec`: {err}"))
}

/// Whether `command` names an executable file (as given with a `/`, else on `PATH`); else the
/// shell's exit code and why.
fn runnable(command: &str) -> std::result::Result<(), (u8, &'static str)> {
    use std::os::unix::fs::PermissionsExt;
    let candidates: Vec<PathBuf> = if command.contains('/') {
        vec![PathBuf::from(command)]
    } else {
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).map(|d| d.join(command)).collect()).unwrap_or_default()
    };
    let found: Vec<&PathBuf> = candidates.iter().filter(|p| p.is_file()).collect();
    if found.is_empty() {
        return Err((127, "command not found"));
    }
    if !found.iter().any(|p| p.metadata().is_ok_and(|m| m.permissions().mode() & 0o111 != 0)) {
        return Err((126, "permission denied (not executable)"));
    }
    Ok(())
}
