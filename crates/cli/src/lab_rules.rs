//! `podnet lab rules [--node N] [-n NS] [SERVICE]`: the seed's `iptables-save | grep
//! order-service`, for the lab: each Service port's elements and the chains they lead to, read
//! back from the node's kernel (`nft -j list table`), not recomputed.

use std::collections::BTreeSet;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::lab_cmd::RulesArgs;

/// An nft JSON expression as nft writes it in text.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) if items.len() == 2 => format!("{} : {}", text(&items[0]), text(&items[1])),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(", "),
        Value::Object(o) => {
            if let Some(c) = o.get("concat").and_then(Value::as_array) {
                return c.iter().map(text).collect::<Vec<_>>().join(" . ");
            }
            if let Some(r) = o.get("range").and_then(Value::as_array) {
                return r.iter().map(text).collect::<Vec<_>>().join("-");
            }
            if let Some(p) = o.get("prefix") {
                return format!("{}/{}", text(&p["addr"]), text(&p["len"]));
            }
            if let Some(e) = o.get("elem") {
                return match e.get("comment").and_then(Value::as_str) {
                    Some(c) => format!("{} comment \"{c}\"", text(&e["val"])),
                    None => text(&e["val"]),
                };
            }
            for verdict in ["goto", "jump"] {
                if let Some(t) = o.get(verdict) {
                    return format!("{verdict} {}", text(&t["target"]));
                }
            }
            o.keys().next().cloned().unwrap_or_default()
        }
        other => other.to_string(),
    }
}

/// One node's proxy table: every element by set, and the chains' rules as nft prints them.
struct NodeTable {
    elements: Vec<(String, String)>,
    chains: Vec<(String, Vec<String>)>,
}

fn read_node(netns: &str) -> Result<NodeTable> {
    let json = Command::new("ip").args(["netns", "exec", netns, "nft", "-j", "list", "table", "ip", proxy::render::TABLE]).output().context("running nft")?;
    if !json.status.success() {
        bail!("{netns}: nft: {}", String::from_utf8_lossy(&json.stderr).trim());
    }
    let v: Value = serde_json::from_slice(&json.stdout)?;
    let mut elements = Vec::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        for kind in ["set", "map"] {
            if let Some(set) = item.get(kind) {
                let name = set["name"].as_str().unwrap_or_default();
                for e in set["elem"].as_array().into_iter().flatten() {
                    elements.push((format!("{kind} {name}"), text(e)));
                }
            }
        }
    }
    // The rules as text: `nft list chain` for each chain an element leads to (read on demand).
    Ok(NodeTable { elements, chains: Vec::new() })
}

fn chain_text(netns: &str, chain: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "exec", netns, "nft", "list", "chain", "ip", proxy::render::TABLE, chain]).output();
    let Ok(out) = out else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("table") && !l.starts_with("chain") && *l != "}" && !l.starts_with("type "))
        .map(str::to_owned)
        .collect()
}

pub(crate) fn rules(a: RulesArgs) -> Result<ExitCode> {
    crate::lab_cmd::need_root()?;
    let lab = crate::lab_cmd::which(&a.name)?;
    let st = lab::state::load(&lab)?;
    let services: Vec<&k8s_openapi::api::core::v1::Service> = st
        .services
        .iter()
        .filter(|s| s.metadata.namespace.as_deref().unwrap_or("default") == a.namespace)
        .filter(|s| a.service.as_ref().is_none_or(|name| s.metadata.name.as_ref() == Some(name)))
        .collect();
    if let Some(name) = &a.service
        && services.is_empty()
    {
        eprintln!("Error from server (NotFound): services {name:?} not found");
        return Ok(ExitCode::FAILURE);
    }
    let nodes: Vec<&lab::plan::NodePlan> = st.plan.nodes.iter().filter(|n| a.node.as_ref().is_none_or(|want| &n.name == want)).collect();
    if nodes.is_empty() {
        bail!("no node {:?} in lab {lab}", a.node.clone().unwrap_or_default());
    }
    for node in nodes {
        let mut table = read_node(&node.netns)?;
        outln!("{}: table ip {}", node.name, proxy::render::TABLE);
        // Where every first packet enters: the dispatch on the frontends map.
        let entry = chain_text(&node.netns, "services");
        if entry.is_empty() {
            outln!("  {:<30} (no rule: no Service address is translated on this node)", "chain services");
        }
        for rule in entry {
            outln!("  {:<30} {rule}", "chain services");
        }
        for svc in &services {
            let spec = svc.spec.clone().unwrap_or_default();
            let ns = svc.metadata.namespace.clone().unwrap_or_default();
            let name = svc.metadata.name.clone().unwrap_or_default();
            let mut addresses: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
            addresses.extend(spec.external_ips.clone().unwrap_or_default());
            addresses.extend(
                svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.clone()).unwrap_or_default().into_iter().filter_map(|i| i.ip),
            );
            for port in spec.ports.clone().unwrap_or_default() {
                let proto = port.protocol.clone().unwrap_or_else(|| "TCP".into()).to_ascii_lowercase();
                let mut frontends: Vec<String> =
                    addresses.iter().filter(|a| a.as_str() != "None").map(|ip| format!("{ip} . {proto} . {}", port.port)).collect();
                if let Some(np) = port.node_port {
                    frontends.push(format!("{} . {proto} . {np}", node.ip));
                }
                let port_name = port.name.clone().unwrap_or_default();
                // kube-proxy's name of the port, which the proxy writes as each element's comment.
                let named = if port_name.is_empty() { format!("{ns}/{name}") } else { format!("{ns}/{name}:{port_name}") };
                let comment = format!(" comment \"{named}\"");
                outln!("  {named} {}/{}", port.port, proto.to_ascii_uppercase());
                let mut chains = BTreeSet::new();
                let mut any = false;
                for (set, element) in &table.elements {
                    let by_name = element.contains(&comment);
                    let by_frontend = frontends.iter().any(|f| element == f || element.starts_with(&format!("{f} ")));
                    if by_name || by_frontend {
                        outln!("    {set:<28} {element}");
                        any = true;
                        if let Some((_, verdict)) = element.rsplit_once(" : ")
                            && let Some(chain) = verdict.strip_prefix("goto ").or_else(|| verdict.strip_prefix("jump "))
                        {
                            chains.insert(chain.to_owned());
                        }
                    }
                }
                if !any {
                    outln!("    (no element: the kernel does not know this port)");
                }
                for chain in chains {
                    if !table.chains.iter().any(|(c, _)| *c == chain) {
                        let rules = chain_text(&node.netns, &chain);
                        table.chains.push((chain.clone(), rules));
                    }
                    for (c, rules) in table.chains.iter().filter(|(c, _)| *c == chain) {
                        for rule in rules {
                            outln!("    {:<28} {rule}", format!("chain {c}"));
                        }
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nft_json_elements_read_as_nft_text() {
        let map_elem = serde_json::json!([{"concat": ["10.96.83.212", "tcp", 80]}, {"goto": {"target": "cluster-2"}}]);
        assert_eq!(text(&map_elem), "10.96.83.212 . tcp . 80 : goto cluster-2");
        let endpoint = serde_json::json!([{"concat": ["10.96.83.212", "tcp", 80, 0]}, {"concat": ["10.244.2.3", 8080]}]);
        assert_eq!(text(&endpoint), "10.96.83.212 . tcp . 80 . 0 : 10.244.2.3 . 8080");
        let commented = serde_json::json!([{"elem": {"val": {"concat": ["10.96.0.1", "tcp", 443]}, "comment": "default/kubernetes:https"}}, {"goto": {"target": "cluster-1"}}]);
        assert_eq!(text(&commented), "10.96.0.1 . tcp . 443 comment \"default/kubernetes:https\" : goto cluster-1");
        let with_counter = serde_json::json!({"elem": {"val": {"concat": ["10.96.0.1", "tcp", 443]}, "counter": {"packets": 0}}});
        assert_eq!(text(&with_counter), "10.96.0.1 . tcp . 443");
        assert_eq!(text(&serde_json::json!({"prefix": {"addr": "10.0.0.0", "len": 8}})), "10.0.0.0/8");
    }
}
