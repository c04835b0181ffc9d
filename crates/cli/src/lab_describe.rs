//! `podnet lab describe networkpolicy NAME -n NS`: the seed's `kubectl describe networkpolicy
//! api-network-policy -n production`, in kubectl's own layout (`describe.go`:
//! `describeNetworkPolicySpec`), for the lab's policies.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Result;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::lab_cmd::{DescribeArgs, DescribeKind};

pub(crate) fn describe(a: DescribeArgs) -> Result<ExitCode> {
    let lab = crate::lab_cmd::which(&a.name)?;
    let st = lab::state::load(&lab)?;
    match a.kind {
        DescribeKind::Networkpolicy => {
            let found = st
                .network_policies
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(a.object.as_str()) && p.metadata.namespace.as_deref().unwrap_or("default") == a.namespace);
            let Some(policy) = found else {
                eprintln!("Error from server (NotFound): networkpolicies.networking.k8s.io {:?} not found", a.object);
                return Ok(ExitCode::FAILURE);
            };
            out!("{}", network_policy(policy, &go_time(st.created)));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Unix seconds as Go prints a `time.Time` in UTC (`2026-12-03 16:00:01 +0000 UTC`).
fn go_time(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = gateway::server::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} +0000 UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// `metav1.FormatLabelSelector`: requirements sorted by key, `<none>` when empty.
fn selector(s: &LabelSelector) -> String {
    let mut parts: Vec<(String, String)> = s.match_labels.iter().flatten().map(|(k, v)| (k.clone(), format!("{k}={v}"))).collect();
    for e in s.match_expressions.iter().flatten() {
        let mut values = e.values.clone().unwrap_or_default();
        values.sort();
        let text = match e.operator.as_str() {
            "In" => format!("{} in ({})", e.key, values.join(",")),
            "NotIn" => format!("{} notin ({})", e.key, values.join(",")),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            other => format!("{} {other} ({})", e.key, values.join(",")),
        };
        parts.push((e.key.clone(), text));
    }
    parts.sort_by(|a, b| a.0.cmp(&b.0));
    if parts.is_empty() { "<none>".into() } else { parts.into_iter().map(|(_, t)| t).collect::<Vec<_>>().join(",") }
}

fn port_lines(out: &mut String, indent: &str, ports: Option<&Vec<NetworkPolicyPort>>) {
    match ports.filter(|p| !p.is_empty()) {
        None => {
            let _ = writeln!(out, "{indent}To Port: <any> (traffic allowed to all ports)");
        }
        Some(ports) => {
            for p in ports {
                let proto = p.protocol.as_deref().unwrap_or("TCP");
                let port = match &p.port {
                    Some(IntOrString::Int(n)) => n.to_string(),
                    Some(IntOrString::String(s)) => s.clone(),
                    None => "<any>".into(),
                };
                let _ = match p.end_port {
                    Some(end) => writeln!(out, "{indent}To Port: {port}-{end}/{proto}"),
                    None => writeln!(out, "{indent}To Port: {port}/{proto}"),
                };
            }
        }
    }
}

fn peer_lines(out: &mut String, indent: &str, heading: &str, peers: Option<&Vec<NetworkPolicyPeer>>, any: &str) {
    match peers.filter(|p| !p.is_empty()) {
        None => {
            let _ = writeln!(out, "{indent}{heading}: <any> ({any})");
        }
        Some(peers) => {
            for peer in peers {
                let _ = writeln!(out, "{indent}{heading}:");
                match (&peer.pod_selector, &peer.namespace_selector, &peer.ip_block) {
                    (Some(pods), Some(nss), _) => {
                        let _ = writeln!(out, "  {indent}NamespaceSelector: {}", selector(nss));
                        let _ = writeln!(out, "  {indent}PodSelector: {}", selector(pods));
                    }
                    (Some(pods), None, _) => {
                        let _ = writeln!(out, "  {indent}PodSelector: {}", selector(pods));
                    }
                    (None, Some(nss), _) => {
                        let _ = writeln!(out, "  {indent}NamespaceSelector: {}", selector(nss));
                    }
                    (None, None, Some(block)) => {
                        let _ = writeln!(out, "  {indent}IPBlock:");
                        let _ = writeln!(out, "    {indent}CIDR: {}", block.cidr);
                        let _ = writeln!(out, "    {indent}Except: {}", block.except.clone().unwrap_or_default().join(", "));
                    }
                    (None, None, None) => {}
                }
            }
        }
    }
}

/// One rule's ports and peers.
type Rules<'a> = (Option<&'a Vec<NetworkPolicyPort>>, Option<&'a Vec<NetworkPolicyPeer>>);

/// kubectl's words for one direction.
struct DirectionWords {
    policy_type: &'static str,
    field: &'static str,
    peer: &'static str,
    any_peer: &'static str,
}

const DESCRIBE_INGRESS: DirectionWords =
    DirectionWords { policy_type: "Ingress", field: "ingress", peer: "From", any_peer: "traffic not restricted by source" };
const DESCRIBE_EGRESS: DirectionWords =
    DirectionWords { policy_type: "Egress", field: "egress", peer: "To", any_peer: "traffic not restricted by destination" };

/// kubectl's `printNetworkPolicySpecIngressFrom` / `…EgressTo`, under its heading.
fn direction_lines(out: &mut String, types: &[String], words: &DirectionWords, rules: &[Rules<'_>]) {
    let indent = "    ";
    if !types.iter().any(|t| t == words.policy_type) {
        let _ = writeln!(out, "  Not affecting {} traffic", words.field);
        return;
    }
    let _ = writeln!(out, "  Allowing {} traffic:", words.field);
    if rules.is_empty() {
        let _ = writeln!(out, "{indent}<none> (Selected pods are isolated for {} connectivity)", words.field);
    }
    for (i, (ports, peers)) in rules.iter().enumerate() {
        port_lines(out, indent, *ports);
        peer_lines(out, indent, words.peer, *peers, words.any_peer);
        if i + 1 != rules.len() {
            let _ = writeln!(out, "{indent}----------");
        }
    }
}

/// kubectl's description of a NetworkPolicy.
pub(crate) fn network_policy(np: &NetworkPolicy, created: &str) -> String {
    let mut out = String::new();
    let labels = |m: &Option<std::collections::BTreeMap<String, String>>| match m.as_ref().filter(|m| !m.is_empty()) {
        None => vec!["<none>".to_owned()],
        Some(m) => m.iter().map(|(k, v)| format!("{k}={v}")).collect(),
    };
    let head = [
        ("Name:", vec![np.metadata.name.clone().unwrap_or_default()]),
        ("Namespace:", vec![np.metadata.namespace.clone().unwrap_or_else(|| "default".into())]),
        ("Created on:", vec![created.to_owned()]),
        ("Labels:", labels(&np.metadata.labels)),
        ("Annotations:", labels(&np.metadata.annotations)),
    ];
    // kubectl's tabwriter: the first column as wide as its widest cell plus two spaces.
    let width = head.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 2;
    for (key, values) in &head {
        for (i, v) in values.iter().enumerate() {
            let k = if i == 0 { *key } else { "" };
            let _ = writeln!(out, "{k:<width$}{v}");
        }
    }
    let spec = np.spec.clone().unwrap_or_default();
    let _ = writeln!(out, "Spec:");
    let pod_selector = spec.pod_selector.clone().unwrap_or_default();
    if pod_selector.match_labels.as_ref().is_none_or(|m| m.is_empty()) && pod_selector.match_expressions.as_ref().is_none_or(|e| e.is_empty()) {
        let _ = writeln!(out, "  PodSelector:     <none> (Allowing the specific traffic to all pods in this namespace)");
    } else {
        let _ = writeln!(out, "  PodSelector:     {}", selector(&pod_selector));
    }
    // kubectl's getPolicyType: policyTypes when given, else Ingress, and Egress when it has rules.
    let types: Vec<String> = match spec.policy_types.clone().filter(|t| !t.is_empty()) {
        Some(t) => t,
        None => {
            let mut t = vec!["Ingress".to_owned()];
            if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
                t.push("Egress".to_owned());
            }
            t
        }
    };
    let ingress: Vec<Rules<'_>> = spec.ingress.iter().flatten().map(|r| (r.ports.as_ref(), r.from.as_ref())).collect();
    let egress: Vec<Rules<'_>> = spec.egress.iter().flatten().map(|r| (r.ports.as_ref(), r.to.as_ref())).collect();
    direction_lines(&mut out, &types, &DESCRIBE_INGRESS, &ingress);
    direction_lines(&mut out, &types, &DESCRIBE_EGRESS, &egress);
    let _ = writeln!(out, "  Policy Types: {}", types.join(", "));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_policy_is_described_as_kubectl_describes_it() {
        let np: NetworkPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "api-network-policy", "namespace": "production"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "api-service"}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"environment": "production"}}, "podSelector": {"matchLabels": {"app": "web-service"}}}], "ports": [{"protocol": "TCP", "port": 8080}]}],
                "egress": [
                    {"to": [{"podSelector": {"matchLabels": {"app": "postgres"}}}], "ports": [{"protocol": "TCP", "port": 5432}]},
                    {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}], "ports": [{"protocol": "UDP", "port": 53}]}
                ]
            }
        }))
        .unwrap();
        let want = "\
Name:         api-network-policy
Namespace:    production
Created on:   2026-12-03 16:00:01 +0000 UTC
Labels:       <none>
Annotations:  <none>
Spec:
  PodSelector:     app=api-service
  Allowing ingress traffic:
    To Port: 8080/TCP
    From:
      NamespaceSelector: environment=production
      PodSelector: app=web-service
  Allowing egress traffic:
    To Port: 5432/TCP
    To:
      PodSelector: app=postgres
    ----------
    To Port: 53/UDP
    To:
      NamespaceSelector: <none>
      PodSelector: k8s-app=kube-dns
  Policy Types: Ingress, Egress
";
        assert_eq!(network_policy(&np, &go_time(1_796_313_601)), want);
    }

    #[test]
    fn default_deny_and_ip_blocks() {
        let np: NetworkPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "d", "namespace": "x", "labels": {"a": "1", "b": "2"}},
            "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.2.0.0/16"]}}]}, {}]}
        }))
        .unwrap();
        let text = network_policy(&np, "t");
        assert!(text.contains("Labels:       a=1\n              b=2\n"), "{text}");
        assert!(text.contains("  PodSelector:     <none> (Allowing the specific traffic to all pods in this namespace)\n"));
        assert!(text.contains("      IPBlock:\n        CIDR: 10.0.0.0/8\n        Except: 10.1.0.0/16, 10.2.0.0/16\n"), "{text}");
        assert!(
            text.contains("    ----------\n    To Port: <any> (traffic allowed to all ports)\n    From: <any> (traffic not restricted by source)\n"),
            "{text}"
        );
        assert!(text.contains("  Not affecting egress traffic\n  Policy Types: Ingress\n"), "{text}");
        let deny: NetworkPolicy =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "deny"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}))
                .unwrap();
        let text = network_policy(&deny, "t");
        assert!(text.contains("    <none> (Selected pods are isolated for ingress connectivity)\n"));
        assert!(text.contains("    <none> (Selected pods are isolated for egress connectivity)\n"));
    }
}
