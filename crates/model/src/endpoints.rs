//! What the EndpointSlice controller does, as a pure function: from Services and Pods, the
//! EndpointSlices (`k8s.io/endpointslice`: `podToEndpoint`, `getEndpointPorts`, the reconciler's
//! grouping by port set and address type, at most 100 endpoints per slice, a placeholder slice
//! for a selector that matches nothing).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ObjectReference, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointHints, EndpointPort, EndpointSlice, ForNode, ForZone};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::cluster::{ClusterState, NAME_ALPHABET, Namespaced, PodInfo, Protocol, stable_hash};

/// The label naming a slice's Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The label naming who manages a slice.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// The controller's name in [`LABEL_MANAGED_BY`].
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// Set (empty) on slices of headless Services.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// The zone label of nodes.
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
/// The controller's limit.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// A Service's spec, read once.
fn spec(svc: &Service) -> k8s_openapi::api::core::v1::ServiceSpec {
    svc.spec.clone().unwrap_or_default()
}

fn is_headless(svc: &Service) -> bool {
    let cip = spec(svc).cluster_ip.unwrap_or_default();
    cip.is_empty() || cip == "None"
}

/// Address types of a Service: its `ipFamilies`, else its ClusterIP's family, else both (headless).
fn address_types(svc: &Service) -> Vec<&'static str> {
    let s = spec(svc);
    let mut out = Vec::new();
    for f in s.ip_families.iter().flatten() {
        match f.as_str() {
            "IPv4" if !out.contains(&"IPv4") => out.push("IPv4"),
            "IPv6" if !out.contains(&"IPv6") => out.push("IPv6"),
            _ => {}
        }
    }
    if !out.is_empty() {
        return out;
    }
    match s.cluster_ip.as_deref() {
        Some(ip) if !ip.is_empty() && ip != "None" => {
            vec![if ip.parse::<IpAddr>().is_ok_and(|a| a.is_ipv6()) { "IPv6" } else { "IPv4" }]
        }
        _ => vec!["IPv4", "IPv6"],
    }
}

/// `findPort`: a number as it is; a name looked up in the pod's ports with the same protocol.
fn find_port(pod: &PodInfo, port: &ServicePort) -> Option<i32> {
    let protocol: Protocol = port.protocol.as_deref().unwrap_or("TCP").parse().ok()?;
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => pod.named_port(name, protocol).map(i32::from),
    }
}

/// `getEndpointPorts`: the service's ports as resolved on this pod (ports that do not resolve are left out).
fn endpoint_ports(svc: &Service, pod: &PodInfo) -> Vec<EndpointPort> {
    spec(svc)
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(find_port(pod, p)?),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: p.app_protocol.clone(),
            })
        })
        .collect()
}

/// `podToEndpoint`, with the pod's readiness decided by `ready` (the lab's servers, or the status).
fn pod_to_endpoint(svc: &Service, pod: &PodInfo, address_type: &str, serving: bool, zone: Option<&str>) -> Endpoint {
    let publish_not_ready = spec(svc).publish_not_ready_addresses.unwrap_or(false);
    let terminating = pod.terminating;
    let ready = publish_not_ready || (serving && !terminating);
    let want_v6 = address_type == "IPv6";
    let addresses: Vec<String> = pod.ips.iter().filter(|ip| ip.is_ipv6() == want_v6).map(ToString::to_string).collect();
    let svc_name = svc.metadata.name.clone().unwrap_or_default();
    let hostname = match (&pod.hostname, &pod.subdomain) {
        (Some(h), Some(sub)) if *sub == svc_name => Some(h.clone()),
        _ => None,
    };
    Endpoint {
        addresses,
        conditions: Some(EndpointConditions { ready: Some(ready), serving: Some(serving), terminating: Some(terminating) }),
        hostname,
        node_name: pod.node_name.clone(),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some(pod.namespace.clone()),
            name: Some(pod.name.clone()),
            ..Default::default()
        }),
        zone: zone.map(str::to_owned),
        ..Default::default()
    }
}

/// Hints the way `trafficDistribution` asks: `PreferClose`/`PreferSameZone` give each endpoint
/// its zone, `PreferSameNode` its node (and zone); all or nothing: none when an endpoint lacks one.
fn add_hints(svc: &Service, endpoints: &mut [Endpoint]) {
    let dist = spec(svc).traffic_distribution.unwrap_or_default();
    let (zones, nodes) = match dist.as_str() {
        "PreferClose" | "PreferSameZone" => (true, false),
        "PreferSameNode" => (true, true),
        _ => return,
    };
    if zones && endpoints.iter().any(|e| e.zone.is_none()) {
        return;
    }
    if nodes && endpoints.iter().any(|e| e.node_name.is_none()) {
        return;
    }
    for e in endpoints {
        e.hints = Some(EndpointHints {
            for_zones: e.zone.clone().map(|name| vec![ForZone { name }]),
            for_nodes: if nodes { e.node_name.clone().map(|name| vec![ForNode { name }]) } else { None },
        });
    }
}

/// A slice name: `<service>-<5 chars>`, stable for the same service, family, ports and chunk.
fn slice_name(svc: &Service, address_type: &str, ports: &[EndpointPort], chunk: usize) -> String {
    let name = svc.metadata.name.clone().unwrap_or_default();
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let seed = format!("{ns}/{name}/{address_type}/{}/{chunk}", serde_json::to_string(ports).unwrap_or_default());
    let h = stable_hash(seed.as_bytes());
    let suffix: String = (0..5).map(|i| NAME_ALPHABET[((h >> (i * 5)) % NAME_ALPHABET.len() as u64) as usize] as char).collect();
    format!("{name}-{suffix}")
}

fn new_slice(svc: &Namespaced<Service>, address_type: &str, ports: Vec<EndpointPort>, endpoints: Vec<Endpoint>, chunk: usize) -> EndpointSlice {
    let mut labels: BTreeMap<String, String> = svc
        .object
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k != LABEL_SERVICE_NAME && k != LABEL_MANAGED_BY && k != LABEL_HEADLESS)
        .collect();
    if is_headless(&svc.object) {
        labels.insert(LABEL_HEADLESS.into(), String::new());
    }
    labels.insert(LABEL_SERVICE_NAME.into(), svc.name.clone());
    labels.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(slice_name(&svc.object, address_type, &ports, chunk)),
            generate_name: Some(format!("{}-", svc.name)),
            namespace: Some(svc.namespace.clone()),
            labels: Some(labels),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Service".into(),
                name: svc.name.clone(),
                uid: svc.object.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        address_type: address_type.into(),
        endpoints,
        ports: if ports.is_empty() { None } else { Some(ports) },
    }
}

/// The Service (namespace, name) an EndpointSlice belongs to, by its `kubernetes.io/service-name` label.
pub fn service_of(slice: &EndpointSlice) -> Option<(&str, &str)> {
    let name = slice.metadata.labels.as_ref()?.get(LABEL_SERVICE_NAME)?;
    Some((slice.metadata.namespace.as_deref().unwrap_or("default"), name.as_str()))
}

/// The slices to use besides the given ones: computed (see [`compute`]) for the Services with a
/// selector that the manifests give no EndpointSlice for. Given slices are used exactly as given.
pub fn missing(state: &ClusterState, serving: impl Fn(&PodInfo) -> bool) -> Vec<EndpointSlice> {
    let given: std::collections::HashSet<(&str, &str)> = state.endpoint_slices.iter().filter_map(|s| service_of(&s.object)).collect();
    compute(state, serving).into_iter().filter(|c| service_of(c).is_none_or(|svc| !given.contains(&svc))).collect()
}

/// The EndpointSlices of every Service with a selector; `serving` decides a pod's readiness
/// (for manifests: its Ready condition, absent meaning ready). Services without a selector and
/// ExternalName Services get none: their slices are the ones given in the manifests.
pub fn compute(state: &ClusterState, serving: impl Fn(&PodInfo) -> bool) -> Vec<EndpointSlice> {
    let zones: BTreeMap<String, String> =
        state.nodes.iter().filter_map(|n| Some((n.metadata.name.clone()?, n.metadata.labels.as_ref()?.get(LABEL_ZONE)?.clone()))).collect();
    // The pods a Service may select, indexed by (namespace, label key, value): a selector is
    // looked up by its rarest pair instead of walking every pod for every Service (10k Services
    // over 40k pods took most of 17 s that way).
    let candidates: Vec<&PodInfo> = state
        .pods
        .iter()
        // `ShouldPodBeInEndpoints(pod, includeTerminating=true)`.
        .filter(|p| p.kind == "Pod" && !p.terminal && !p.ips.is_empty())
        .collect();
    let mut by_label: HashMap<(&str, &str, &str), Vec<usize>> = HashMap::new();
    for (i, p) in candidates.iter().enumerate() {
        for (k, v) in &p.labels {
            by_label.entry((p.namespace.as_str(), k.as_str(), v.as_str())).or_default().push(i);
        }
    }
    let mut out = Vec::new();
    for svc in &state.services {
        let s = spec(&svc.object);
        if s.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let Some(selector) = s.selector.as_ref().filter(|m| !m.is_empty()) else {
            continue;
        };
        let rarest = selector
            .iter()
            .map(|(k, v)| by_label.get(&(svc.namespace.as_str(), k.as_str(), v.as_str())).map_or(&[][..], Vec::as_slice))
            .min_by_key(|l| l.len());
        let mut pods: Vec<&PodInfo> =
            rarest.unwrap_or_default().iter().map(|&i| candidates[i]).filter(|p| selector.iter().all(|(k, v)| p.labels.get(k) == Some(v))).collect();
        pods.sort_by(|a, b| a.name.cmp(&b.name));
        for address_type in address_types(&svc.object) {
            // Group endpoints by the port set they resolve to, as the reconciler does.
            let mut groups: BTreeMap<String, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
            for pod in &pods {
                let zone = pod.node_name.as_ref().and_then(|n| zones.get(n)).map(String::as_str);
                let ep = pod_to_endpoint(&svc.object, pod, address_type, serving(pod), zone);
                if ep.addresses.is_empty() {
                    continue;
                }
                let ports = endpoint_ports(&svc.object, pod);
                let key = serde_json::to_string(&ports).unwrap_or_default();
                groups.entry(key).or_insert_with(|| (ports, Vec::new())).1.push(ep);
            }
            if groups.is_empty() {
                // A placeholder: the Service has a selector, and nothing matches yet.
                out.push(new_slice(svc, address_type, Vec::new(), Vec::new(), 0));
                continue;
            }
            for (_, (ports, mut endpoints)) in groups {
                add_hints(&svc.object, &mut endpoints);
                for (chunk, part) in endpoints.chunks(MAX_ENDPOINTS_PER_SLICE).enumerate() {
                    out.push(new_slice(svc, address_type, ports.clone(), part.to_vec(), chunk));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(yaml: &str) -> ClusterState {
        ClusterState::from_objects(&crate::load_str(yaml, std::path::Path::new("t.yaml")).unwrap()).unwrap()
    }

    fn pod(name: &str, labels: &str, ip: &str, extra_status: &str) -> String {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, labels: {{{labels}}}}}\nspec:\n  nodeName: node-1\n  containers: [{{name: c, ports: [{{name: http, containerPort: 8080}}, {{name: dns, containerPort: 53, protocol: UDP}}]}}]\nstatus: {{podIP: {ip}, podIPs: [{{ip: {ip}}}]{extra_status}}}\n"
        )
    }

    const SERVICE: &str = "---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop, labels: {team: a}}\nspec:\n  clusterIP: 10.96.0.20\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: http}\n  - {name: dns, port: 53, protocol: UDP, targetPort: dns}\n";

    fn ready_from_status(p: &PodInfo) -> bool {
        p.ready.unwrap_or(true)
    }

    #[test]
    fn selected_pods_become_endpoints_with_named_ports_resolved() {
        let s = state(&format!(
            "{SERVICE}{}{}{}",
            pod("a", "app: web", "10.244.0.2", ""),
            pod("b", "app: web", "10.244.0.3", ""),
            pod("other", "app: db", "10.244.0.4", "")
        ));
        let slices = compute(&s, ready_from_status);
        assert_eq!(slices.len(), 1);
        let sl = &slices[0];
        assert_eq!(sl.address_type, "IPv4");
        let addrs: Vec<&str> = sl.endpoints.iter().map(|e| e.addresses[0].as_str()).collect();
        assert_eq!(addrs, ["10.244.0.2", "10.244.0.3"]);
        let ports: Vec<(Option<&str>, Option<i32>, Option<&str>)> =
            sl.ports.as_ref().unwrap().iter().map(|p| (p.name.as_deref(), p.port, p.protocol.as_deref())).collect();
        assert_eq!(ports, [(Some("http"), Some(8080), Some("TCP")), (Some("dns"), Some(53), Some("UDP"))]);
        let labels = sl.metadata.labels.as_ref().unwrap();
        assert_eq!(labels.get(LABEL_SERVICE_NAME).map(String::as_str), Some("web"));
        assert_eq!(labels.get(LABEL_MANAGED_BY).map(String::as_str), Some(CONTROLLER_NAME));
        assert_eq!(labels.get("team").map(String::as_str), Some("a"));
        assert!(sl.metadata.name.as_ref().unwrap().starts_with("web-"));
        assert_eq!(sl.endpoints[0].target_ref.as_ref().unwrap().name.as_deref(), Some("a"));
        assert_eq!(sl.endpoints[0].node_name.as_deref(), Some("node-1"));
    }

    #[test]
    fn conditions_follow_ready_terminating_and_publish_not_ready() {
        let not_ready = ", conditions: [{type: Ready, status: 'False'}]";
        let terminating_pod =
            pod("t", "app: web", "10.244.0.5", "").replace("metadata: {name: t,", "metadata: {deletionTimestamp: '2026-01-01T00:00:00Z', name: t,");
        let s = state(&format!("{SERVICE}{}{}{terminating_pod}", pod("a", "app: web", "10.244.0.2", ""), pod("n", "app: web", "10.244.0.3", not_ready)));
        let slices = compute(&s, ready_from_status);
        let cond = |name: &str| {
            let e = slices[0].endpoints.iter().find(|e| e.target_ref.as_ref().unwrap().name.as_deref() == Some(name)).unwrap();
            let c = e.conditions.clone().unwrap();
            (c.ready.unwrap(), c.serving.unwrap(), c.terminating.unwrap())
        };
        assert_eq!(cond("a"), (true, true, false));
        assert_eq!(cond("n"), (false, false, false));
        assert_eq!(cond("t"), (false, true, true), "terminating but still serving");
        let publish = SERVICE.replace("  clusterIP: 10.96.0.20\n", "  clusterIP: 10.96.0.20\n  publishNotReadyAddresses: true\n");
        let s = state(&format!("{publish}{}", pod("n", "app: web", "10.244.0.3", not_ready)));
        assert_eq!(compute(&s, ready_from_status)[0].endpoints[0].conditions.clone().unwrap().ready, Some(true));
    }

    #[test]
    fn pods_that_cannot_resolve_a_named_port_land_in_another_slice() {
        let other = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: c, namespace: shop, labels: {app: web}}\nspec: {containers: [{name: c, ports: [{name: http, containerPort: 9090}]}]}\nstatus: {podIP: 10.244.0.9}\n";
        let s = state(&format!("{SERVICE}{}{other}", pod("a", "app: web", "10.244.0.2", "")));
        let slices = compute(&s, ready_from_status);
        assert_eq!(slices.len(), 2);
        let c = slices.iter().find(|s| s.endpoints[0].addresses[0] == "10.244.0.9").unwrap();
        let ports: Vec<Option<i32>> = c.ports.as_ref().unwrap().iter().map(|p| p.port).collect();
        assert_eq!(ports, [Some(9090)], "no port named dns/UDP on c: left out");
    }

    #[test]
    fn no_match_gives_a_placeholder_and_no_selector_gives_nothing() {
        let s = state(SERVICE);
        let slices = compute(&s, ready_from_status);
        assert_eq!(slices.len(), 1);
        assert!(slices[0].endpoints.is_empty() && slices[0].ports.is_none());
        let manual = "---\napiVersion: v1\nkind: Service\nmetadata: {name: ext, namespace: shop}\nspec: {ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: cname, namespace: shop}\nspec: {type: ExternalName, externalName: example.com, selector: {app: web}}\n";
        assert!(compute(&state(manual), ready_from_status).is_empty());
    }

    #[test]
    fn pods_without_ip_and_finished_pods_are_left_out() {
        let pending = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: shop, labels: {app: web}}\nspec: {containers: []}\n";
        let done = pod("d", "app: web", "10.244.0.7", ", phase: Succeeded");
        let slices = compute(&state(&format!("{SERVICE}{pending}{done}")), ready_from_status);
        assert!(slices[0].endpoints.is_empty());
    }

    #[test]
    fn big_services_are_split_into_slices_of_100() {
        let pods: String = (0..250).map(|i| pod(&format!("p{i:03}"), "app: web", &format!("10.244.{}.{}", i / 200, i % 200 + 1), "")).collect();
        let slices = compute(&state(&format!("{SERVICE}{pods}")), ready_from_status);
        let sizes: Vec<usize> = slices.iter().map(|s| s.endpoints.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
        let mut names: Vec<&String> = slices.iter().map(|s| s.metadata.name.as_ref().unwrap()).collect();
        names.dedup();
        assert_eq!(names.len(), 3);
    }

    #[test]
    fn traffic_distribution_adds_zone_hints_all_or_nothing() {
        let nodes = "---\napiVersion: v1\nkind: Node\nmetadata: {name: node-1, labels: {topology.kubernetes.io/zone: zone-a}}\n";
        let svc = SERVICE.replace("  selector: {app: web}\n", "  selector: {app: web}\n  trafficDistribution: PreferClose\n");
        let s = state(&format!("{svc}{nodes}{}", pod("a", "app: web", "10.244.0.2", "")));
        let e = &compute(&s, ready_from_status)[0].endpoints[0];
        assert_eq!(e.zone.as_deref(), Some("zone-a"));
        assert_eq!(e.hints.as_ref().unwrap().for_zones.as_ref().unwrap()[0].name, "zone-a");
        // Without zones on the node: no hints at all.
        let s = state(&format!("{svc}{}", pod("a", "app: web", "10.244.0.2", "")));
        assert!(compute(&s, ready_from_status)[0].endpoints[0].hints.is_none());
    }

    #[test]
    fn headless_services_get_a_slice_per_family_and_hostnames() {
        let svc =
            "---\napiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: shop}\nspec: {clusterIP: None, selector: {app: db}, ports: [{port: 5432}]}\n";
        let p = pod("db-0", "app: db", "10.244.0.2", "").replace("  nodeName: node-1\n", "  nodeName: node-1\n  hostname: db-0\n  subdomain: db\n");
        let slices = compute(&state(&format!("{svc}{p}")), ready_from_status);
        // Both families are tried; the pod has only IPv4, so the IPv6 one is a placeholder.
        let types: Vec<&str> = slices.iter().map(|s| s.address_type.as_str()).collect();
        assert_eq!(types, ["IPv4", "IPv6"]);
        assert_eq!(slices[0].endpoints[0].hostname.as_deref(), Some("db-0"));
        assert_eq!(slices[0].metadata.labels.as_ref().unwrap().get(LABEL_HEADLESS).map(String::as_str), Some(""));
    }

    #[test]
    fn allocated_services_get_a_slice_per_ip_family() {
        // The families come from the API server's defaulting on an IPv6-primary dual-stack cluster.
        let services = "---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {ipFamilyPolicy: PreferDualStack, selector: {app: web}, ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: shop}\nspec: {clusterIP: None, selector: {app: web}, ports: [{port: 80}]}\n";
        let p = pod("a", "app: web", "10.244.0.2", "").replace("podIPs: [{ip: 10.244.0.2}]", "podIPs: [{ip: 10.244.0.2}, {ip: 'fd00:10:244::2'}]");
        let mut s = state(&format!("{services}{p}"));
        let cidrs = vec!["fd00:10:96::/112".parse().unwrap(), "10.96.0.0/16".parse().unwrap()];
        crate::allocate::allocate(&mut s.services, &crate::allocate::Ranges::with_cidrs(cidrs).unwrap()).unwrap();
        let slices = compute(&s, ready_from_status);
        let of = |name: &str| -> Vec<(String, String)> {
            slices
                .iter()
                .filter(|sl| sl.metadata.labels.as_ref().unwrap()[LABEL_SERVICE_NAME] == name)
                .map(|sl| (sl.address_type.clone(), sl.endpoints[0].addresses[0].clone()))
                .collect()
        };
        assert_eq!(of("web"), [("IPv6".into(), "fd00:10:244::2".into()), ("IPv4".into(), "10.244.0.2".into())]);
        assert_eq!(of("db"), [("IPv6".to_string(), "fd00:10:244::2".to_string())], "headless with a selector: the primary family only");
    }
}
