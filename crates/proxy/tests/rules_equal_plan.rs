//! The rendered rules and the plan say the same of every first packet: random clusters (Service
//! types, traffic policies, externalIPs, source ranges, endpoints ready, serving or terminating
//! on either node, `masqueradeAll`, with and without `clusterCIDR`) and packets from pods, the
//! node, outside and the endpoints themselves to every frontend, traced through the rules
//! `render` writes (`nft_trace`, what `proxy trace` answers) and read off the plan
//! (`NodePlan::trace`). A rule that drifts from the plan fails here.

#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a line number

use std::net::IpAddr;
use std::path::Path;

use model::Protocol;
use proptest::prelude::*;
use proxy::{ProxyConfig, plan};

const NODES: &str = "---\napiVersion: v1\nkind: Node\nmetadata: {name: node-1}\nspec: {podCIDR: 10.244.0.0/24}\nstatus: {addresses: [{type: InternalIP, address: 172.18.0.2}, {type: ExternalIP, address: 198.51.100.50}]}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: node-2}\nspec: {podCIDR: 10.244.1.0/24}\nstatus: {addresses: [{type: InternalIP, address: 172.18.0.3}]}\n---\napiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {name: kubernetes}\nspec: {cidrs: [10.96.0.0/16]}\n";

#[derive(Clone, Debug)]
struct Endpoint {
    host: u8,
    node2: bool,
    ready: bool,
    serving: bool,
    terminating: bool,
}

#[derive(Clone, Debug)]
struct Service {
    kind: u8, // 0 ClusterIP, 1 NodePort, 2 LoadBalancer
    external_local: bool,
    internal_local: bool,
    external_ip: bool,
    ranges: Option<bool>, // with source ranges: one that holds the node, or not
    udp: bool,
    endpoints: Vec<Endpoint>,
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    (10u8..14, any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(host, node2, ready, serving, terminating)| Endpoint {
        host,
        node2,
        ready,
        serving: serving || ready,
        terminating,
    })
}

fn service() -> impl Strategy<Value = Service> {
    (0u8..3, any::<bool>(), any::<bool>(), any::<bool>(), proptest::option::of(any::<bool>()), any::<bool>(), proptest::collection::vec(endpoint(), 0..4))
        .prop_map(|(kind, external_local, internal_local, external_ip, ranges, udp, endpoints)| Service {
            kind,
            external_local,
            internal_local,
            external_ip,
            ranges,
            udp,
            endpoints,
        })
}

fn manifests(services: &[Service]) -> String {
    let mut out = NODES.to_owned();
    for (i, s) in services.iter().enumerate() {
        let ty = ["ClusterIP", "NodePort", "LoadBalancer"][usize::from(s.kind)];
        let proto = if s.udp { "UDP" } else { "TCP" };
        let mut spec = format!("  type: {ty}\n  clusterIP: 10.96.0.{}\n  ports: [{{name: p, port: 80, protocol: {proto}, targetPort: 8080", 10 + i);
        if s.kind > 0 {
            spec.push_str(&format!(", nodePort: {}", 30000 + i));
        }
        spec.push_str("}]\n");
        if s.kind > 0 && s.external_local {
            spec.push_str("  externalTrafficPolicy: Local\n");
        }
        if s.internal_local {
            spec.push_str("  internalTrafficPolicy: Local\n");
        }
        if s.external_ip {
            spec.push_str(&format!("  externalIPs: [192.0.2.{}]\n", 10 + i));
        }
        if let (2, Some(node_in_range)) = (s.kind, s.ranges) {
            spec.push_str(if node_in_range {
                "  loadBalancerSourceRanges: [203.0.113.0/24, 172.18.0.0/24]\n"
            } else {
                "  loadBalancerSourceRanges: [203.0.113.0/24]\n"
            });
        }
        let status = if s.kind == 2 { format!("status: {{loadBalancer: {{ingress: [{{ip: 198.51.100.{}}}]}}}}\n", 1 + i) } else { String::new() };
        out.push_str(&format!("---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: ns}}\nspec:\n{spec}{status}"));
        let endpoints: Vec<String> = s
            .endpoints
            .iter()
            .map(|e| {
                format!(
                    "{{addresses: [10.244.{}.{}], nodeName: node-{}, conditions: {{ready: {}, serving: {}, terminating: {}}}}}",
                    u8::from(e.node2),
                    e.host,
                    1 + u8::from(e.node2),
                    e.ready,
                    e.serving,
                    e.terminating
                )
            })
            .collect();
        out.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: s{i}-a, namespace: ns, labels: {{kubernetes.io/service-name: s{i}}}}}\naddressType: IPv4\nports: [{{name: p, port: 8080, protocol: {proto}}}]\nendpoints: [{}]\n",
            endpoints.join(", ")
        ));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn the_rules_do_what_the_plan_says(services in proptest::collection::vec(service(), 1..4), masquerade_all in any::<bool>(), detect_local in any::<bool>()) {
        let yaml = manifests(&services);
        let state = model::ClusterState::from_objects(&model::load_str(&yaml, Path::new("t.yaml")).unwrap()).unwrap();
        let config = ProxyConfig { cluster_cidr: if detect_local { "10.244.0.0/16".into() } else { String::new() }, masquerade_all, ..Default::default() };
        let p = plan(&state, "node-1", &config).unwrap();
        let mut sources: Vec<IpAddr> = ["10.244.0.99", "10.244.1.99", "172.18.0.2", "198.51.100.50", "203.0.113.5", "192.0.2.200", "198.51.100.1"].iter().map(|s| s.parse().unwrap()).collect();
        sources.extend(services.iter().flat_map(|s| s.endpoints.iter()).map(|e| format!("10.244.{}.{}", u8::from(e.node2), e.host).parse::<IpAddr>().unwrap()));
        let mut targets: Vec<(IpAddr, u16)> = vec![("10.96.5.5".parse().unwrap(), 80), ("10.244.1.10".parse().unwrap(), 8080)];
        for (i, s) in services.iter().enumerate() {
            targets.push((format!("10.96.0.{}", 10 + i).parse().unwrap(), 80));
            targets.push((format!("10.96.0.{}", 10 + i).parse().unwrap(), 81));
            targets.push((format!("192.0.2.{}", 10 + i).parse().unwrap(), 80));
            targets.push((format!("198.51.100.{}", 1 + i).parse().unwrap(), 80));
            for node in ["172.18.0.2", "198.51.100.50", "172.18.0.3"] {
                targets.push((node.parse().unwrap(), 30000 + u16::try_from(i).unwrap()));
            }
            let _ = s;
        }
        // One rule set for every packet, as the kernel holds it.
        let rules = p.render();
        for src in &sources {
            for (dst, port) in &targets {
                for protocol in [Protocol::Tcp, Protocol::Udp] {
                    let by_rules = proxy::nft_trace::trace(&rules, &p.node.ips, *src, *dst, *port, protocol).unwrap();
                    let by_plan = p.trace(*src, *dst, *port, protocol);
                    prop_assert_eq!(&by_rules, &by_plan, "{:?} {} -> {}:{}\n{}", protocol, src, dst, port, yaml);
                }
            }
        }
    }
}
