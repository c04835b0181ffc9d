//! `podnet observe`: every connection in the lab with its verdict, as Hubble's `observe` shows
//! flows — the forwarded ones from conntrack's NEW events, the dropped ones from the
//! NetworkPolicy drop log, both recorded by the lab process in every node.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use lab::drops::{Drop, Forwarded};
use serde_json::{Value, json};

use crate::lab_probe::LogReader;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VerdictFilter {
    /// Connections that went through.
    Forwarded,
    /// Packets NetworkPolicy dropped.
    Dropped,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ObserveFormat {
    /// One line per flow.
    Text,
    /// One JSON object per line, with Hubble's field names where they fit.
    Json,
}

#[derive(Args)]
pub struct ObserveArgs {
    /// The lab (default: the only one up, else `podnet`).
    #[arg(long)]
    name: Option<lab::LabName>,
    /// Only flows from or to pods of this namespace.
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Only flows from or to this pod (`POD` in -n's namespace, or `NS/POD`).
    #[arg(long)]
    pod: Option<String>,
    /// Only this verdict.
    #[arg(long, value_enum)]
    verdict: Option<VerdictFilter>,
    /// Only flows of the last D (`30s`, `5m`, `1h`; default: all recorded).
    #[arg(long, value_parser = parse_duration)]
    since: Option<Duration>,
    /// Keep printing new flows as they happen.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    output: ObserveFormat,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number.parse().map_err(|_| format!("invalid duration {s:?}: expected e.g. 30s, 5m, 1h"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("invalid duration {s:?}: the unit is s, m or h")),
    };
    Ok(Duration::from_secs(secs))
}

fn split(pod: &Option<String>) -> Value {
    match pod.as_deref().and_then(|p| p.split_once('/')) {
        Some((ns, name)) => json!({"namespace": ns, "pod_name": name}),
        None => json!({}),
    }
}

fn l4(protocol: &str, src: u16, dst: u16) -> Value {
    json!({ protocol: {"source_port": src, "destination_port": dst} })
}

/// A forwarded connection in Hubble's shape.
fn forwarded_json(f: &Forwarded) -> Value {
    let mut v = json!({
        "time": f.time, "verdict": "FORWARDED", "node_name": f.node,
        "IP": {"source": f.src_ip, "destination": f.endpoint_ip},
        "l4": l4(&f.protocol, f.src_port, f.endpoint_port),
        "source": split(&f.src_pod), "destination": split(&f.dst_pod),
        "traffic_direction": "EGRESS",
    });
    if let Some((ns, name)) = f.service.as_deref().and_then(|s| s.split_once('/')) {
        v["destination_service"] = json!({"namespace": ns, "name": name});
        v["service_address"] = json!(format!("{}:{}", f.dst_ip, f.dst_port));
    }
    v
}

/// A policy drop in Hubble's shape.
fn dropped_json(d: &Drop) -> Value {
    json!({
        "time": d.time, "verdict": "DROPPED", "node_name": d.node,
        "IP": {"source": d.src_ip, "destination": d.dst_ip},
        "l4": l4(&d.protocol, d.src_port, d.dst_port),
        "source": split(&d.src_pod), "destination": split(&d.dst_pod),
        "traffic_direction": d.direction.to_ascii_uppercase(),
        "drop_reason_desc": "POLICY_DENIED",
        "policy": d.policy,
    })
}

fn end(v: &Value, side: &str, ip: &str, port: &Value) -> String {
    let at = format!("{}:{}", v["IP"][ip].as_str().unwrap_or_default(), port);
    match (v[side]["namespace"].as_str(), v[side]["pod_name"].as_str()) {
        (Some(ns), Some(p)) => format!("{ns}/{p} ({at})"),
        _ => at,
    }
}

fn text(v: &Value) -> String {
    let (proto, ports) = v["l4"].as_object().and_then(|o| o.iter().next()).map(|(k, p)| (k.clone(), p.clone())).unwrap_or_default();
    let service = v["destination_service"]["name"]
        .as_str()
        .map(|n| format!(" via {}/{n}", v["destination_service"]["namespace"].as_str().unwrap_or_default()))
        .unwrap_or_default();
    let why =
        v["policy"].as_str().map(|p| format!(" by {p} ({})", v["traffic_direction"].as_str().unwrap_or_default().to_ascii_lowercase())).unwrap_or_default();
    format!(
        "{} {:<9} {} → {}{service} {proto} on {}{why}",
        v["time"].as_str().unwrap_or_default(),
        v["verdict"].as_str().unwrap_or_default(),
        end(v, "source", "source", &ports["source_port"]),
        end(v, "destination", "destination", &ports["destination_port"]),
        v["node_name"].as_str().unwrap_or_default()
    )
}

fn parse_forwarded(line: &str) -> Option<Value> {
    serde_json::from_str::<Forwarded>(line).ok().map(|f| forwarded_json(&f))
}

fn parse_dropped(line: &str) -> Option<Value> {
    serde_json::from_str::<Drop>(line).ok().map(|d| dropped_json(&d))
}

/// Every flow recorded in a lab (forwarded and dropped), in Hubble's shape, in time order.
pub(crate) fn recorded(lab: &lab::LabName) -> Vec<Value> {
    let mut all: Vec<Value> = Vec::new();
    for (path, parse) in [(lab::drops::flows_file(lab), parse_forwarded as fn(&str) -> Option<Value>), (lab::drops::log_file(lab), parse_dropped)] {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        all.extend(text.lines().filter_map(parse));
    }
    all.sort_by(|x, y| x["time"].as_str().cmp(&y["time"].as_str()));
    all
}

pub fn run(a: ObserveArgs) -> Result<ExitCode> {
    let lab = crate::lab_cmd::which_lab(a.name.as_ref())?;
    if !lab::state::dir(&lab).exists() {
        bail!("no lab named {:?} is up (see `podnet lab list`)", lab.as_str());
    }
    let pod = a.pod.as_ref().map(|p| if p.contains('/') { p.clone() } else { format!("{}/{p}", a.namespace.as_deref().unwrap_or("default")) });
    let since = a.since.map(|d| {
        let t = std::time::SystemTime::UNIX_EPOCH.elapsed().unwrap_or_default().saturating_sub(d);
        lab::daemon::rfc3339_utc(t.as_secs(), t.subsec_millis())
    });
    let keep = |v: &Value| {
        let pods = [&v["source"], &v["destination"]].map(|s| match (s["namespace"].as_str(), s["pod_name"].as_str()) {
            (Some(ns), Some(p)) => Some(format!("{ns}/{p}")),
            _ => None,
        });
        let verdict_ok = match a.verdict {
            Some(VerdictFilter::Forwarded) => v["verdict"] == "FORWARDED",
            Some(VerdictFilter::Dropped) => v["verdict"] == "DROPPED",
            None => true,
        };
        let ns_ok = a.namespace.as_ref().is_none_or(|ns| pods.iter().flatten().any(|p| p.starts_with(&format!("{ns}/"))));
        let pod_ok = pod.as_ref().is_none_or(|want| pods.iter().flatten().any(|p| p == want));
        let time_ok = since.as_ref().is_none_or(|s| v["time"].as_str().is_some_and(|t| t >= s.as_str()));
        verdict_ok && ns_ok && pod_ok && time_ok
    };
    let show = |v: &Value| match a.output {
        ObserveFormat::Json => v.to_string(),
        ObserveFormat::Text => text(v),
    };
    for v in recorded(&lab).iter().filter(|v| keep(v)) {
        outln!("{}", show(v));
    }
    if !a.follow {
        return Ok(ExitCode::SUCCESS);
    }
    let mut readers = [(LogReader::open(&lab::drops::flows_file(&lab), true)?, true), (LogReader::open(&lab::drops::log_file(&lab), true)?, false)];
    eprintln!("Following the flows of lab {lab} (Ctrl-C to stop)...");
    loop {
        let mut any = false;
        for (reader, forwarded) in &mut readers {
            while let Some(line) = reader.next_line()? {
                any = true;
                let v = if *forwarded { parse_forwarded(&line) } else { parse_dropped(&line) };
                if let Some(v) = v.filter(|v| keep(v)) {
                    outln!("{}", show(&v));
                }
            }
        }
        if !any {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
