//! `podnet lab probe` (the connectivity truth table, from real packets), `podnet lab label` and
//! `podnet lab logs`.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use lab::change::{LabelEdit, Labelled};
use lab::probe::Target;
use lab::state;
use model::{PodInfo, Protocol};
use policy::PortKey;

use crate::lab_cmd::{LabelArgs, LabelKind, LogFormat, LogsArgs, ProbeArgs, ProbeFormat, Via};

pub(crate) fn probe(a: ProbeArgs) -> Result<ExitCode> {
    crate::lab_cmd::need_root()?;
    let lab = crate::lab_cmd::which(&a.name)?;
    let st = state::load(&lab)?;
    lab::daemon::require_running(&lab)?;
    let view = st.cluster_view();
    for ns in &a.namespaces {
        if !view.namespaces.iter().any(|n| &n.name == ns) {
            bail!("namespace {ns:?} not found in lab {lab}");
        }
    }
    // The pods probed: every non-hostNetwork pod with an address, of the namespaces asked for.
    let chosen: Vec<usize> = (0..view.pods.len())
        .filter(|&i| {
            let p = &view.pods[i];
            !p.host_network && policy::enforce::pod_ipv4(p).is_some() && (a.namespaces.is_empty() || a.namespaces.contains(&p.namespace))
        })
        .collect();
    if chosen.is_empty() {
        bail!("no pod to probe in lab {lab}{}", if a.namespaces.is_empty() { String::new() } else { format!(" in {}", a.namespaces.join(", ")) });
    }
    let ports: Vec<PortKey> = if a.ports.is_empty() {
        let declared: BTreeSet<PortKey> = chosen.iter().flat_map(|&i| view.pods[i].ports.iter().map(|p| (p.port, p.protocol))).collect();
        let (sctp, probed): (Vec<PortKey>, Vec<PortKey>) = declared.into_iter().partition(|(_, p)| *p == Protocol::Sctp);
        if !sctp.is_empty() {
            eprintln!("note: SCTP ports are not probed (this kernel has no SCTP sockets)");
        }
        probed
    } else {
        if let Some((port, _)) = a.ports.iter().find(|(_, p)| *p == Protocol::Sctp) {
            bail!("--port {port}/SCTP: this kernel has no SCTP sockets to probe with");
        }
        a.ports.clone()
    };
    if ports.is_empty() {
        bail!("the pods declare no TCP or UDP port: give one with --port PORT/PROTO");
    }
    let ips: Vec<Ipv4Addr> = chosen.iter().filter_map(|&i| policy::enforce::pod_ipv4(&view.pods[i])).collect();
    // targets[c * n + j]: pod j on port c (`None`: no Service of its own to go through).
    let mut targets: Vec<Option<Target>> = Vec::with_capacity(ports.len() * ips.len());
    let mut without_service = Vec::new();
    let frontends = if a.via == Via::Service { service_frontends(&st)? } else { Vec::new() };
    for &(port, protocol) in &ports {
        for (j, &ip) in ips.iter().enumerate() {
            let target = match a.via {
                Via::Pod => Some(Target { ip, port, protocol, answered_by: None }),
                Via::Service => {
                    // A Service of its own if there is one, else one it shares: then the pod
                    // must be the one that answers.
                    let serving: Vec<&Frontend> = frontends.iter().filter(|f| f.endpoints.contains(&(ip, port)) && f.protocol == protocol).collect();
                    let found = serving.iter().min_by_key(|f| f.endpoints.len());
                    if found.is_none() {
                        without_service.push(format!("{} {port}/{protocol}", view.pods[chosen[j]].key()));
                    }
                    found.map(|f| Target { ip: f.vip, port: f.port, protocol, answered_by: (f.endpoints.len() > 1).then_some((ip, 10 * f.endpoints.len())) })
                }
            };
            targets.push(target);
        }
    }
    if !without_service.is_empty() {
        eprintln!("note: no ClusterIP Service has these pods as endpoints, shown as blocked: {}", without_service.join(", "));
    }
    let sources: Vec<String> = chosen.iter().map(|&i| st.plan.pods[i].netns.clone()).collect();
    let probed: Vec<Target> = targets.iter().flatten().copied().collect();
    let reached = lab::probe::run(&sources, &probed, Duration::from_millis(a.timeout))?;
    let n = ips.len();
    let mut cells = vec![vec![vec![false; n]; n]; ports.len()];
    for (s, row) in reached.iter().enumerate() {
        let mut answers = row.iter();
        for (t, target) in targets.iter().enumerate() {
            if target.is_some() {
                cells[t / n][s][t % n] = answers.next().copied().unwrap_or(false);
            }
        }
    }
    // A pod may always reach itself (upstream's truth tables ignore the diagonal): it is
    // probed like the rest, and allowed whatever a port or Service made of it.
    for matrix in &mut cells {
        for (i, row) in matrix.iter_mut().enumerate() {
            row[i] = true;
        }
    }
    let matrix = policy::Matrix::from_cells(ports, &cells);
    let pods: Vec<PodInfo> = chosen.iter().map(|&i| view.pods[i].clone()).collect();
    let format = match a.output {
        ProbeFormat::Table => policy::render::Format::Table,
        ProbeFormat::Json => policy::render::Format::Json,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    policy::render::render(&matrix, &pods, format, &mut out)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// A ClusterIP frontend and its ready endpoints.
struct Frontend {
    vip: Ipv4Addr,
    port: u16,
    protocol: Protocol,
    endpoints: Vec<(Ipv4Addr, u16)>,
}

/// Every ClusterIP Service port with its endpoints: the ways to pods through Services.
fn service_frontends(st: &lab::state::LabState) -> Result<Vec<Frontend>> {
    let view = lab::service_proxy::proxy_view(st);
    let Some(node) = st.plan.nodes.first() else { return Ok(Vec::new()) };
    let plan = proxy::plan(&view, &node.name, &lab::service_proxy::proxy_config(st))?;
    Ok(plan
        .ports
        .iter()
        .filter_map(|p| {
            let Some(IpAddr::V4(vip)) = p.port.cluster_ips.first().copied() else { return None };
            let endpoints = p
                .cluster
                .iter()
                .filter_map(|e| match e.ip_port()? {
                    (IpAddr::V4(ip), port) => Some((ip, port)),
                    _ => None,
                })
                .collect();
            Some(Frontend { vip, port: p.port.port, protocol: p.port.protocol, endpoints })
        })
        .collect())
}

pub(crate) fn label(a: LabelArgs) -> Result<ExitCode> {
    crate::lab_cmd::need_root()?;
    let lab = crate::lab_cmd::which(&a.name)?;
    crate::lab_cmd::refuse_on_control_plane(&lab, "kubectl label --overwrite")?;
    let edits: Vec<LabelEdit> = a.changes.iter().map(|c| c.parse()).collect::<Result<_, String>>().map_err(anyhow::Error::msg)?;
    let (what, kind) = match a.kind {
        LabelKind::Pod => (Labelled::Pod, "pod"),
        LabelKind::Namespace => (Labelled::Namespace, "namespace"),
    };
    let changed = lab::change::label(&lab, what, &a.namespace, &a.object, &edits)?;
    outln!("{kind}/{} {}", a.object, if changed { "labeled" } else { "not labeled" });
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn logs(a: LogsArgs) -> Result<ExitCode> {
    let lab = crate::lab_cmd::which(&a.name)?;
    if !state::dir(&lab).exists() {
        bail!("no lab named {:?} is up (see `podnet lab list`)", lab.as_str());
    }
    let (path, follow) = if a.drops { (lab::drops::log_file(&lab), !a.no_follow) } else { (lab::daemon::log_file(&lab), a.follow) };
    let show = |line: &str| -> Option<String> {
        if !a.drops {
            return Some(line.to_owned());
        }
        let d: lab::drops::Drop = serde_json::from_str(line).ok()?;
        let in_ns = |pod: &Option<String>| pod.as_deref().is_some_and(|p| a.namespaces.iter().any(|ns| p.starts_with(&format!("{ns}/"))));
        if !a.namespaces.is_empty() && !in_ns(&d.src_pod) && !in_ns(&d.dst_pod) {
            return None;
        }
        Some(match a.output {
            LogFormat::Json => line.to_owned(),
            LogFormat::Text => {
                let end = |pod: &Option<String>, ip: &str, port: u16| {
                    let at = if port == 0 { ip.to_owned() } else { format!("{ip}:{port}") };
                    pod.as_ref().map_or(at.clone(), |p| format!("{p} ({at})"))
                };
                format!(
                    "{} DROP {:<7} {} → {} {} on {} by {}",
                    d.time,
                    d.direction,
                    end(&d.src_pod, &d.src_ip, d.src_port),
                    end(&d.dst_pod, &d.dst_ip, d.dst_port),
                    d.protocol,
                    d.node,
                    d.policy
                )
            }
        })
    };
    let mut stdout = std::io::stdout().lock();
    let mut reader = LogReader::open(&path, follow)?;
    if follow && a.drops {
        eprintln!("Watching the packets NetworkPolicy drops in lab {lab} (Ctrl-C to stop)...");
    }
    loop {
        match reader.next_line()? {
            Some(line) => {
                if let Some(text) = show(&line)
                    && writeln!(stdout, "{text}").and_then(|()| stdout.flush()).is_err()
                {
                    return Ok(ExitCode::SUCCESS); // the reader went away (`| head`)
                }
            }
            None if follow => std::thread::sleep(Duration::from_millis(100)),
            None => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// Reads a log line by line; when following, from its end, across the lab process starting a
/// new file.
pub(crate) struct LogReader {
    path: std::path::PathBuf,
    reader: Option<std::io::BufReader<std::fs::File>>,
    partial: String,
}

impl LogReader {
    pub(crate) fn open(path: &std::path::Path, from_end: bool) -> Result<LogReader> {
        use std::io::Seek;
        let reader = match std::fs::File::open(path) {
            Ok(mut f) => {
                if from_end {
                    f.seek(std::io::SeekFrom::End(0))?;
                }
                Some(std::io::BufReader::new(f))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        Ok(LogReader { path: path.to_owned(), reader, partial: String::new() })
    }

    /// The next whole line, or `None` when there is none yet.
    pub(crate) fn next_line(&mut self) -> Result<Option<String>> {
        use std::io::{BufRead, Seek};
        let Some(reader) = &mut self.reader else {
            // Not there yet: it is made by the first drop.
            if let Ok(f) = std::fs::File::open(&self.path) {
                self.reader = Some(std::io::BufReader::new(f));
            }
            return Ok(None);
        };
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            // Started anew (rotated): read the new file from its start.
            let pos = reader.stream_position()?;
            if std::fs::metadata(&self.path).is_ok_and(|m| m.len() < pos) {
                self.reader = std::fs::File::open(&self.path).ok().map(std::io::BufReader::new);
            }
            return Ok(None);
        }
        self.partial.push_str(&line);
        if !self.partial.ends_with('\n') {
            return Ok(None);
        }
        let whole = std::mem::take(&mut self.partial);
        Ok(Some(whole.trim_end().to_owned()))
    }
}
