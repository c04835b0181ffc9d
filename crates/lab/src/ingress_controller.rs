//! The lab's ingress controller: podnet's HTTP(S) proxy in each ingress controller pod, on ports
//! 80 and 443, behind the controller's LoadBalancer Service — the seed's picture: client → load
//! balancer IP → controller pod → Service endpoints → pod. Each pod's proxy runs on its own
//! thread inside the pod's namespace, so that it listens and connects to backends from the
//! pod's address, as a controller pod does; `:10254/metrics` and `/healthz` as ingress-nginx's. It acts for ingress-nginx's controller name, so
//! `ingressClassName: nginx` manifests keep working. A change swaps every pod's snapshot.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use dataplane::netns;
use gateway::server::{Shared, Snapshot};
use model::{ClusterState, Namespaced};

use crate::state::LabState;
use crate::system;

/// The lab as the proxy sees it: the lab's snapshot, its Ingresses, classes and Secrets, and its
/// Gateway API objects.
pub fn view(st: &LabState) -> ClusterState {
    let mut state = st.cluster_view();
    state.ingresses = st.ingresses.iter().cloned().map(Namespaced::from_object).collect();
    state.ingress_classes.clone_from(&st.ingress_classes);
    state.secrets = st.secrets.iter().cloned().map(Namespaced::from_object).collect();
    state.gateway_classes.clone_from(&st.gateway_classes);
    state.gateways = st.gateways.iter().map(|g| Namespaced::with_meta(&g.metadata, g.clone())).collect();
    state.http_routes = st.http_routes.iter().map(|r| Namespaced::with_meta(&r.metadata, r.clone())).collect();
    state.reference_grants = st.reference_grants.iter().map(|r| Namespaced::with_meta(&r.metadata, r.clone())).collect();
    state
}

/// One controller pod's proxy.
struct PodProxy {
    shared: Arc<Shared>,
    stop: tokio::sync::watch::Sender<bool>,
}

/// The ingress controller pods' proxies.
#[derive(Default)]
pub struct IngressControllers {
    pods: BTreeMap<String, PodProxy>,
}

fn start(netns_name: &str, key: String, snapshot: Snapshot, pod_ips: &[std::net::IpAddr]) -> io::Result<PodProxy> {
    // Bound here, in the pod's namespace: one listener per family for each port.
    let listeners = |port: u16| crate::daemon::tcp_listeners_in(netns_name, port, pod_ips);
    let (http, https, metrics) = (listeners(80)?, listeners(443)?, listeners(system::INGRESS_METRICS_PORT)?);
    let shared = Shared::new(snapshot);
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let serving = Arc::clone(&shared);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
    netns::spawn_server_in(&netns::path_of(netns_name), format!("ingress {key}"), move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(r) => r,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        runtime.block_on(async move {
            let mut servers = tokio::task::JoinSet::new();
            let started = (|| -> io::Result<()> {
                let tokio_listener = tokio::net::TcpListener::from_std;
                for l in http {
                    servers.spawn(gateway::server::serve_http(tokio_listener(l)?, Arc::clone(&serving)));
                }
                for l in https {
                    servers.spawn(gateway::server::serve_https(tokio_listener(l)?, Arc::clone(&serving)));
                }
                for l in metrics {
                    servers.spawn(gateway::server::serve_metrics(tokio_listener(l)?, Arc::clone(&serving)));
                }
                Ok(())
            })();
            let _ = ready_tx.send(started);
            tokio::select! {
                Some(r) = servers.join_next() => match r {
                    Ok(Err(e)) => eprintln!("ingress {key}: {e}"),
                    Err(e) => eprintln!("ingress {key}: {e}"),
                    Ok(Ok(())) => {}
                },
                _ = stopped.changed() => {}
            }
        });
    })?;
    ready_rx.recv().map_err(|_| io::Error::other("the ingress proxy thread ended"))??;
    Ok(PodProxy { shared, stop })
}

impl IngressControllers {
    /// Serves the lab as it now is: every controller pod's snapshot swapped, proxies started in
    /// new controller pods and stopped in removed ones.
    pub fn sync(&mut self, st: &LabState) -> io::Result<()> {
        let controller = gateway::ingress::Controller { controller: system::INGRESS_CONTROLLER_CLASS, class: system::INGRESS_CLASS };
        let snapshot = Snapshot::build(&view(st), controller, system::GATEWAY_CONTROLLER);
        for p in &snapshot.problems {
            eprintln!("ingress: {p}");
        }
        let pods: Vec<(&crate::plan::PodPlan, Vec<std::net::IpAddr>)> = st
            .plan
            .pods
            .iter()
            .enumerate()
            .filter(|(i, p)| system::is_ingress_controller_pod(p) && st.pod_ips[*i].is_some())
            .map(|(i, p)| (p, st.pod_addresses(i)))
            .collect();
        self.pods.retain(|netns_name, proxy| {
            let keep = pods.iter().any(|(p, _)| &p.netns == netns_name);
            if !keep {
                let _ = proxy.stop.send(true);
            }
            keep
        });
        for proxy in self.pods.values() {
            proxy.shared.swap(snapshot.clone());
        }
        for (pod, ips) in pods {
            if !self.pods.contains_key(&pod.netns) {
                let proxy = start(&pod.netns, pod.key(), snapshot.clone(), &ips)?;
                self.pods.insert(pod.netns.clone(), proxy);
            }
        }
        Ok(())
    }
}
