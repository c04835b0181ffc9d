//! Backends to addresses: a Service port named by a route becomes the ready endpoint addresses
//! of its EndpointSlices (never the ClusterIP), with the port the endpoints listen on. Slices are
//! the given ones, else computed for Services with a selector.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use model::ClusterState;

use crate::routes::ServicePort;

/// One Service port: its number and name, the ready endpoints behind it, and where its round
/// robin is (each request takes the next endpoint, as ingress-nginx balances per request, also
/// over one keep-alive client connection).
#[derive(Clone, Debug, Default)]
struct Port {
    number: u16,
    name: String,
    endpoints: Vec<SocketAddr>,
    next: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// Ready endpoint addresses per Service port.
#[derive(Clone, Debug, Default)]
pub struct Backends {
    /// Namespace → Service → ports.
    services: HashMap<String, HashMap<String, Vec<Port>, fnv::FnvBuildHasher>, fnv::FnvBuildHasher>,
}

impl Backends {
    /// The backends of a snapshot.
    pub fn build(state: &ClusterState) -> Backends {
        let computed = model::endpoints::missing(state, |p| p.ready.unwrap_or(true));
        let mut slices: HashMap<(String, String), Vec<&k8s_openapi::api::discovery::v1::EndpointSlice>> = HashMap::new();
        for s in state.endpoint_slices.iter().map(|s| &s.object).chain(&computed) {
            if let Some((ns, svc)) = model::endpoints::service_of(s) {
                slices.entry((ns.to_owned(), svc.to_owned())).or_default().push(s);
            }
        }
        let mut services: HashMap<String, HashMap<String, Vec<Port>, fnv::FnvBuildHasher>, fnv::FnvBuildHasher> = HashMap::default();
        for svc in &state.services {
            let key = (svc.namespace.clone(), svc.name.clone());
            let mut ports = Vec::new();
            for p in svc.object.spec.iter().flat_map(|s| s.ports.iter().flatten()) {
                let name = p.name.clone().unwrap_or_default();
                let mut endpoints = Vec::new();
                for slice in slices.get(&key).into_iter().flatten() {
                    // The slice's port of the same name is where the endpoints listen.
                    let Some(port) = slice.ports.iter().flatten().find(|sp| sp.name.clone().unwrap_or_default() == name).and_then(|sp| sp.port) else {
                        continue;
                    };
                    for e in &slice.endpoints {
                        let c = e.conditions.as_ref();
                        if !c.and_then(|c| c.ready).unwrap_or(true) {
                            continue;
                        }
                        for a in e.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                            endpoints.push(SocketAddr::new(a, u16::try_from(port).unwrap_or(0)));
                        }
                    }
                }
                endpoints.sort();
                endpoints.dedup();
                ports.push(Port { number: u16::try_from(p.port).unwrap_or(0), name, endpoints, next: Default::default() });
            }
            services.entry(key.0).or_default().insert(key.1, ports);
        }
        Backends { services }
    }

    /// The endpoint the next request to a Service port goes to (round robin over its ready
    /// endpoints); `Err` says why there is none.
    pub fn next_endpoint(&self, namespace: &str, service: &str, port: &ServicePort) -> Result<SocketAddr, String> {
        let p = self.port(namespace, service, port)?;
        Ok(p.endpoints[p.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % p.endpoints.len()])
    }

    /// The endpoints of a Service port; `Err` says why there are none to send to.
    pub fn endpoints(&self, namespace: &str, service: &str, port: &ServicePort) -> Result<&[SocketAddr], String> {
        self.port(namespace, service, port).map(|p| p.endpoints.as_slice())
    }

    fn port(&self, namespace: &str, service: &str, port: &ServicePort) -> Result<&Port, String> {
        let ports = self.services.get(namespace).and_then(|s| s.get(service)).ok_or_else(|| format!("service {namespace}/{service} does not exist"))?;
        let p = ports
            .iter()
            .find(|p| match port {
                ServicePort::Number(n) => p.number == *n,
                ServicePort::Name(n) => &p.name == n,
            })
            .ok_or_else(|| format!("service {namespace}/{service} has no port {port:?}"))?;
        if p.endpoints.is_empty() {
            return Err(format!("service {namespace}/{service} has no ready endpoints"));
        }
        Ok(p)
    }
}
