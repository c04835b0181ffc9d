//! `podnet policy matrix | explain | lint`

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use model::{ClusterState, Protocol};
use policy::evaluate::{Explanation, RuleMatch, SideVerdict};
use policy::lint::{Finding, Severity};
use policy::render::Format;
use policy::spec::Direction;
use policy::{Connection, Endpoint, Evaluator, PolicySet, PortKey};

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Which pods may open connections to which, per port.
    Matrix(MatrixArgs),
    /// Why one connection is allowed or blocked.
    Explain(ExplainArgs),
    /// Validation errors (exit 1) and warnings (exit 0) for the policies.
    Lint(LintArgs),
}

#[derive(Args)]
pub struct Manifests {
    /// Manifest files or directories (recursively *.yaml, *.yml, *.json), like `kubectl apply -f`; `-` is stdin.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required_unless_present = "lab", num_args = 1..)]
    pub paths: Vec<PathBuf>,
    /// Read a running lab's pods (with their addresses), namespaces and policies instead.
    #[arg(long, value_name = "NAME", conflicts_with = "paths")]
    pub lab: Option<lab::LabName>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum MatrixFormat {
    /// Upstream e2e truth tables: `.` allowed, `X` blocked.
    Table,
    /// `{"pods": [...], "matrices": [{"port", "protocol", "allowed"}]}`
    Json,
    /// Markdown tables.
    Md,
    /// A coloured HTML page.
    Html,
    /// An SVG picture.
    Svg,
}

#[derive(Args)]
pub struct MatrixArgs {
    #[command(flatten)]
    manifests: Manifests,
    /// Ports to compute, as PORT/PROTOCOL (default: every port some pod declares).
    #[arg(long = "port", value_name = "PORT/PROTO", value_parser = parse_port)]
    ports: Vec<PortKey>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: MatrixFormat,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum TextOrJson {
    /// For people.
    Text,
    /// For scripts.
    Json,
}

#[derive(Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    manifests: Manifests,
    /// Source: NS/POD (a pod or workload) or an IP address.
    #[arg(long, value_name = "NS/POD|IP")]
    from: String,
    /// Destination: NS/POD (a pod or workload) or an IP address.
    #[arg(long, value_name = "NS/POD|IP")]
    to: String,
    /// Destination port and protocol, e.g. 8080/TCP.
    #[arg(long, value_name = "PORT/PROTO", value_parser = parse_port)]
    port: PortKey,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: TextOrJson,
}

#[derive(Args)]
pub struct LintArgs {
    #[command(flatten)]
    manifests: Manifests,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: TextOrJson,
}

/// `80/TCP`, `53/udp` or `80` (TCP).
pub fn parse_port(s: &str) -> Result<PortKey, String> {
    let (port, proto) = s.split_once('/').unwrap_or((s, "TCP"));
    let port: u16 =
        port.parse().ok().filter(|p| *p != 0).ok_or_else(|| format!("invalid port {port:?}: expected a number between 1 and 65535, as in 8080/TCP"))?;
    let protocol: Protocol = proto.parse()?;
    Ok((port, protocol))
}

pub fn run(cmd: PolicyCommand) -> Result<ExitCode> {
    match cmd {
        PolicyCommand::Matrix(args) => matrix(args),
        PolicyCommand::Explain(args) => explain(args),
        PolicyCommand::Lint(args) => lint(args),
    }
}

/// Loads manifests and compiles the policies; invalid policies are all reported, nothing else printed.
/// The snapshot the manifests or the lab (`--lab`) describe.
fn snapshot(m: &Manifests) -> Result<ClusterState> {
    Ok(match &m.lab {
        Some(lab) => lab::state::load(lab).with_context(|| format!("lab {lab}"))?.cluster_view(),
        None => model::load_cluster(&m.paths)?,
    })
}

fn load(m: &Manifests) -> Result<(ClusterState, PolicySet)> {
    let state = snapshot(m)?;
    let policies = PolicySet::compile(&state).map_err(|errors| {
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow!("{} invalid NetworkPolic{}:\n{}", errors.len(), if errors.len() == 1 { "y" } else { "ies" }, text.join("\n"))
    })?;
    Ok((state, policies))
}

fn matrix(args: MatrixArgs) -> Result<ExitCode> {
    let (state, policies) = load(&args.manifests)?;
    let ports = if args.ports.is_empty() { policy::declared_ports(&state) } else { args.ports };
    let matrix = policy::compute(&state, &policies, &ports);
    let format = match args.output {
        MatrixFormat::Table => Format::Table,
        MatrixFormat::Json => Format::Json,
        MatrixFormat::Md => Format::Markdown,
        MatrixFormat::Html => Format::Html,
        MatrixFormat::Svg => Format::Svg,
    };
    // Stream: the JSON of 1000 pods x 4 ports is 24 MB.
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let written = policy::render::render(&matrix, &state.pods, format, &mut out).and_then(|()| out.flush());
    ignore_broken_pipe(written)?;
    Ok(ExitCode::SUCCESS)
}

fn write_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    ignore_broken_pipe(out.write_all(text.as_bytes()).and_then(|()| out.flush()))
}

fn ignore_broken_pipe(result: std::io::Result<()>) -> Result<()> {
    match result {
        // A closed pipe (`| head`) is not an error worth reporting.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}

/// `NS/POD`, `NS/POD[Kind]` or an IP address (a pod's IP stands for that pod).
fn resolve<'a>(state: &'a ClusterState, text: &str) -> Result<Endpoint<'a>> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(match state.pods.iter().find(|p| p.ips.contains(&ip)) {
            Some(pod) => Endpoint::Pod(pod),
            None => Endpoint::External(ip),
        });
    }
    if !text.contains('/') {
        bail!("{text:?} is neither NS/POD nor an IP address");
    }
    let matches: Vec<_> = state.pods.iter().filter(|p| p.key() == text || p.display_name() == text).collect();
    match matches.as_slice() {
        [] => bail!("no pod or workload {text} in the manifests"),
        [one] => Ok(Endpoint::Pod(one)),
        many => {
            let names: Vec<String> = many.iter().map(|p| p.display_name()).collect();
            bail!("{text} is ambiguous: {}; name one as NS/NAME[Kind]", names.join(", "))
        }
    }
}

fn explain(args: ExplainArgs) -> Result<ExitCode> {
    let (state, policies) = load(&args.manifests)?;
    let from = resolve(&state, &args.from).context("--from")?;
    let to = resolve(&state, &args.to).context("--to")?;
    let (port, protocol) = args.port;
    let evaluator = Evaluator::new(&state, &policies);
    let explanation = evaluator.explain(&Connection { from, to, port, protocol });
    let text = match args.output {
        TextOrJson::Json => format!("{}\n", serde_json::to_string_pretty(&explanation)?),
        TextOrJson::Text => explain_text(&explanation, &policies),
    };
    write_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn explain_text(e: &Explanation, policies: &PolicySet) -> String {
    let mut out = String::new();
    let verdict = if e.allowed { "ALLOWED" } else { "BLOCKED" };
    let _ = writeln!(out, "{} -> {} on {}/{}: {verdict}", e.from, e.to, e.port, e.protocol);
    if let Some(reason) = &e.always_allowed {
        let _ = writeln!(out, "  {reason}");
    }
    side_text(&mut out, &e.egress, policies);
    side_text(&mut out, &e.ingress, policies);
    out
}

fn side_text(out: &mut String, side: &SideVerdict, policies: &PolicySet) {
    let what = if side.direction == "Egress" { "egress from" } else { "ingress to" };
    let verdict = if side.allowed { "allows" } else { "blocks" };
    let _ = writeln!(out, "\n{what} {}: {verdict}", side.endpoint);
    if let Some(note) = &side.note {
        let _ = writeln!(out, "  {note}");
        return;
    }
    if !side.isolated {
        let _ = writeln!(out, "  not isolated: no NetworkPolicy selects it for {}", side.direction);
        return;
    }
    let _ = writeln!(out, "  isolated by: {}", side.selected_by.join(", "));
    if side.allowed_by.is_empty() {
        let _ = writeln!(out, "  allowed by: no rule of these policies matches this connection");
    }
    for m in &side.allowed_by {
        let _ = writeln!(out, "  allowed by: {}", m.describe());
        if let Some(detail) = rule_detail(policies, m) {
            let _ = writeln!(out, "    {detail}");
        }
    }
}

/// What the matching peer and port entries say, e.g. `from[0]: pods app=web in namespace prod; ports[0]: 8080/TCP`.
fn rule_detail(policies: &PolicySet, m: &RuleMatch) -> Option<String> {
    let policy = policies.policies.iter().find(|p| p.key() == m.policy)?;
    let direction = if m.direction == "ingress" { Direction::Ingress } else { Direction::Egress };
    let rule = policy.rules(direction)?.get(m.rule)?;
    let peers_field = direction.peers_field();
    let peer = match (m.peer, &rule.peers) {
        (Some(i), Some(peers)) => format!("{peers_field}[{i}]: {}", peers.get(i)?),
        _ => format!("{peers_field}: every peer"),
    };
    let port = match (m.port, &rule.ports) {
        (Some(i), Some(ports)) => format!("ports[{i}]: {}", ports.get(i)?),
        _ => "ports: every port".to_owned(),
    };
    Some(format!("{peer}; {port}"))
}

fn lint(args: LintArgs) -> Result<ExitCode> {
    let state = snapshot(&args.manifests)?;
    let mut findings: Vec<Finding> = Vec::new();
    let mut valid = Vec::new();
    for object in &state.policies {
        match policy::spec::compile(object) {
            Ok(p) => valid.push(p),
            Err(e) => findings.extend(e.messages.iter().map(|m| {
                let (field, message) = match m.split_once(": ") {
                    Some((f, rest)) if f.starts_with("spec") || f.starts_with("metadata") => (Some(f.to_owned()), rest.to_owned()),
                    _ => (None, m.clone()),
                };
                Finding {
                    severity: Severity::Error,
                    object: format!("NetworkPolicy {}/{}", object.namespace, object.name),
                    location: e.location.to_string(),
                    field,
                    message,
                }
            })),
        }
    }
    findings.extend(policy::lint::lint(&state, &PolicySet { policies: valid }));
    let errors = findings.iter().filter(|f| f.severity == Severity::Error).count();
    let warnings = findings.len() - errors;
    let text = match args.output {
        TextOrJson::Json => format!("{}\n", serde_json::to_string_pretty(&findings)?),
        TextOrJson::Text => {
            let mut t: String = findings.iter().map(|f| format!("{f}\n")).collect();
            let _ = writeln!(
                t,
                "{} NetworkPolic{}: {errors} error(s), {warnings} warning(s)",
                state.policies.len(),
                if state.policies.len() == 1 { "y" } else { "ies" }
            );
            t
        }
    };
    write_stdout(&text)?;
    Ok(if errors > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
