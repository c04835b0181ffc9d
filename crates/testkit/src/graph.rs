//! Random object graphs for the DNS (and anything else that follows references between
//! objects): from a few bytes, Services of every type in two namespaces, ExternalNames that
//! point at other Services (themselves, each other, in loops, outside the zone), headless
//! Services with pods that have hostnames and subdomains. The same bytes always make the same
//! graph, so a fuzz target and a property test share it and a failure replays.

use serde_json::{Value, json};

const NAMESPACES: [&str; 2] = ["default", "other"];
const CLUSTER_DOMAIN: &str = "cluster.local";

/// One object graph, and the names worth asking about.
pub struct Graph {
    /// The objects (Namespaces, Services, Pods, EndpointSlices).
    pub objects: Vec<Value>,
    /// Fully qualified names to query: every Service, pod hostname, SRV port name and a few
    /// that do not exist.
    pub names: Vec<String>,
}

struct Bytes<'a>(std::slice::Iter<'a, u8>);

impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        self.0.next().copied().unwrap_or(0)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::from(self.next()) % n.max(1)
    }
}

fn service_name(i: usize) -> String {
    format!("s{i}")
}

fn fqdn(ns: &str, svc: &str) -> String {
    format!("{svc}.{ns}.svc.{CLUSTER_DOMAIN}")
}

/// Builds the graph `data` describes.
pub fn from_bytes(data: &[u8]) -> Graph {
    let mut b = Bytes(data.iter());
    let services = 1 + b.below(12);
    let mut objects: Vec<Value> = NAMESPACES.iter().map(|ns| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})).collect();
    let mut names = vec![fqdn("default", "missing"), format!("{CLUSTER_DOMAIN}"), format!("svc.{CLUSTER_DOMAIN}")];
    let mut pod_count = 0usize;
    for i in 0..services {
        let (ns, name) = (NAMESPACES[b.below(2)], service_name(i));
        names.push(fqdn(ns, &name));
        names.push(format!("_http._tcp.{}", fqdn(ns, &name)));
        let spec = match b.below(4) {
            // An ExternalName: at another Service of the graph (maybe itself, maybe one that
            // does not exist), with odd case and a trailing dot sometimes, or outside the zone.
            0 | 1 => {
                let target = match b.below(4) {
                    0 => "www.example.com".to_owned(),
                    _ => fqdn(NAMESPACES[b.below(2)], &service_name(b.below(services + 1))),
                };
                let target = if b.next() % 2 == 0 { format!("{target}.") } else { target };
                let target = if b.next() % 5 == 0 { target.to_uppercase() } else { target };
                json!({"type": "ExternalName", "externalName": target})
            }
            // Headless, selecting pods made here (with hostnames under the Service as subdomain).
            2 => {
                let app = format!("app{i}");
                for p in 0..b.below(4) {
                    pod_count += 1;
                    let pod_name = format!("p{i}-{p}");
                    let mut spec = json!({"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]});
                    if b.next() % 2 == 0 {
                        spec["hostname"] = json!(format!("h{p}"));
                        spec["subdomain"] = json!(name);
                        names.push(format!("h{p}.{}", fqdn(ns, &name)));
                    }
                    objects.push(json!({
                        "apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": pod_name, "namespace": ns, "labels": {"app": app}},
                        "spec": spec,
                        "status": {"podIP": format!("10.244.{}.{}", pod_count / 250, 1 + pod_count % 250),
                                   "conditions": [{"type": "Ready", "status": if b.next() % 4 == 0 { "False" } else { "True" }}]}
                    }));
                }
                json!({"clusterIP": "None", "selector": {"app": app}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]})
            }
            _ => json!({"clusterIP": format!("10.96.1.{}", i + 1), "ports": [{"name": "http", "port": 80}]}),
        };
        objects.push(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": spec}));
    }
    Graph { objects, names }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_same_bytes_make_the_same_graph_and_every_graph_loads() {
        for seed in 0u8..=255 {
            let data: Vec<u8> = (0u8..64).map(|i| seed.wrapping_mul(31).wrapping_add(i.wrapping_mul(7))).collect();
            let (a, b) = (super::from_bytes(&data), super::from_bytes(&data));
            assert_eq!(a.objects, b.objects);
            crate::cluster(&a.objects);
        }
    }
}
