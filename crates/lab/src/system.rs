//! The lab's system workloads, as a cluster installer adds them: the cluster DNS, a Deployment
//! in `kube-system` behind the Service `kube-dns` at 10.96.0.10 (ports 53/UDP, 53/TCP,
//! 9153/TCP), labelled as CoreDNS's are. The lab process serves its pods with podnet's DNS
//! server instead of the echo server. Manifests that bring their own `kube-system/kube-dns`
//! keep it, and then get no cluster DNS from the lab.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use model::{ClusterState, ContainerPort, Labels, NamespaceInfo, Namespaced, PodInfo, Protocol, Replicas};

use crate::plan::PodPlan;

/// The namespace of system workloads.
pub const SYSTEM_NAMESPACE: &str = "kube-system";
/// The cluster DNS Deployment (named as kubeadm names CoreDNS's).
pub const DNS_DEPLOYMENT: &str = "coredns";
/// The cluster DNS Service.
pub const DNS_SERVICE: &str = "kube-dns";
/// Its ClusterIP (DESIGN.md's convention) in an IPv4 or dual-stack cluster.
pub const DNS_CLUSTER_IP: &str = "10.96.0.10";

/// The cluster DNS's ClusterIP: the tenth address of the primary family's Service CIDR
/// (10.96.0.10, or `fd00:10:96::a` in an IPv6 cluster, as kubeadm picks it).
pub fn dns_cluster_ip(config: &crate::plan::LabConfig) -> std::net::IpAddr {
    nth_service_ip(config, 10)
}

/// `default/kubernetes`'s ClusterIP: the primary Service CIDR's first address.
pub fn kubernetes_cluster_ip(config: &crate::plan::LabConfig) -> std::net::IpAddr {
    nth_service_ip(config, 1)
}

fn nth_service_ip(config: &crate::plan::LabConfig, n: u32) -> std::net::IpAddr {
    match config.service_cidrs().first().map(ipnet::IpNet::network) {
        Some(std::net::IpAddr::V6(v6)) => std::net::IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) + u128::from(n))),
        Some(std::net::IpAddr::V4(v4)) => std::net::IpAddr::V4(std::net::Ipv4Addr::from(u32::from(v4) + n)),
        None => std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 96, 0, n as u8)),
    }
}
/// The cluster domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// CoreDNS's metrics port.
pub const DNS_METRICS_PORT: u16 = 9153;
/// CoreDNS's `health` and `ready` plugins' ports.
pub const DNS_HEALTH_PORT: u16 = 8080;
/// See [`DNS_HEALTH_PORT`].
pub const DNS_READY_PORT: u16 = 8181;
/// Replicas of the DNS Deployment (kubeadm's).
const DNS_REPLICAS: u32 = 2;

/// Adds a namespace, as the installer's manifests would, unless it is there.
fn add_namespace(state: &mut ClusterState, name: &str) {
    if !state.namespaces.iter().any(|n| n.name == name) {
        state.namespaces.push(NamespaceInfo::named(name, true));
        state.namespaces.sort_by(|a, b| a.name.cmp(&b.name));
    }
}

/// Adds a system Deployment (its pods stand for it as a manifest's Deployment's do).
/// `template_hash` stands for the controller's pod-template-hash in the pods' names.
fn add_deployment(
    state: &mut ClusterState,
    (namespace, name, template_hash): (&str, &str, &str),
    labels: Labels,
    ports: Vec<ContainerPort>,
    replicas: u32,
    dns_policy: Option<&str>,
) {
    state.pods.push(PodInfo {
        namespace: namespace.into(),
        name: name.into(),
        kind: "Deployment".into(),
        labels,
        ports,
        ips: Vec::new(),
        host_network: false,
        node_name: None,
        ready: None,
        terminating: false,
        terminal: false,
        hostname: None,
        subdomain: None,
        dns_policy: dns_policy.map(str::to_owned),
        dns_config: None,
        replicas: Replicas::Count(replicas),
        template_hash: Some(template_hash.into()),
        controller: None,
        location: Default::default(),
    });
    state.pods.sort_by(|a, b| (&a.namespace, &a.name, &a.kind).cmp(&(&b.namespace, &b.name, &b.kind)));
}

fn labels() -> Labels {
    Labels::from([("k8s-app".to_owned(), "kube-dns".to_owned())])
}

fn is_dns_labelled(namespace: &str, labels: &Labels) -> bool {
    namespace == SYSTEM_NAMESPACE && labels.get("k8s-app").is_some_and(|v| v == "kube-dns")
}

/// Whether a lab pod is one of the cluster DNS's: a `kube-system` pod labelled
/// `k8s-app: kube-dns`, as CoreDNS's are (the lab's own, or a CoreDNS Deployment of the manifests).
pub fn is_dns_pod(pod: &PodPlan) -> bool {
    is_dns_labelled(&pod.namespace, &pod.labels)
}

/// The ingress controller's namespace, Deployment, Service and IngressClass (ingress-nginx's
/// names, so that manifests written for it keep working).
pub const INGRESS_NAMESPACE: &str = "ingress-nginx";
/// See [`INGRESS_NAMESPACE`].
pub const INGRESS_CONTROLLER: &str = "ingress-nginx-controller";
/// The controller name podnet's ingress controller acts for in the lab: ingress-nginx's.
pub const INGRESS_CONTROLLER_CLASS: &str = "k8s.io/ingress-nginx";
/// The IngressClass name the lab's controller answers to (ingress-nginx's `--ingress-class`).
pub const INGRESS_CLASS: &str = "nginx";
/// ingress-nginx's metrics and health port.
pub const INGRESS_METRICS_PORT: u16 = 10254;
/// The Gateway API controller name of the lab's controller pods (GatewayClass `controllerName`).
pub const GATEWAY_CONTROLLER: &str = "podnet.io/gateway-controller";

fn controller_labels() -> Labels {
    Labels::from([("app.kubernetes.io/name".to_owned(), "ingress-nginx".to_owned()), ("app.kubernetes.io/component".to_owned(), "controller".to_owned())])
}

/// Whether a lab pod is the ingress controller's.
pub fn is_ingress_controller_pod(pod: &PodPlan) -> bool {
    pod.namespace == INGRESS_NAMESPACE
        && pod.labels.get("app.kubernetes.io/component").is_some_and(|v| v == "controller")
        && pod.labels.get("app.kubernetes.io/name").is_some_and(|v| v == "ingress-nginx")
}

/// When the manifests have Ingresses or Gateways: the ingress controller as ingress-nginx installs it — the
/// `nginx` IngressClass (the default), a controller Deployment and its LoadBalancer Service
/// (ports 80 and 443) in `ingress-nginx` — each unless the manifests have it.
pub fn add_ingress_controller(state: &mut ClusterState) {
    if state.ingresses.is_empty() && state.gateways.is_empty() {
        return;
    }
    if !state.ingress_classes.iter().any(|c| c.metadata.name.as_deref() == Some("nginx")) {
        state.ingress_classes.push(k8s_openapi::api::networking::v1::IngressClass {
            metadata: ObjectMeta {
                name: Some("nginx".into()),
                annotations: Some(BTreeMap::from([("ingressclass.kubernetes.io/is-default-class".to_owned(), "true".to_owned())])),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::networking::v1::IngressClassSpec { controller: Some(INGRESS_CONTROLLER_CLASS.into()), parameters: None }),
        });
    }
    add_namespace(state, INGRESS_NAMESPACE);
    if !state.pods.iter().any(|p| p.namespace == INGRESS_NAMESPACE && p.name == INGRESS_CONTROLLER) {
        let port = |name: &str, port: u16| ContainerPort { name: Some(name.into()), port, protocol: Protocol::Tcp };
        add_deployment(state, (INGRESS_NAMESPACE, INGRESS_CONTROLLER, "7c6974c4d8"), controller_labels(), vec![port("http", 80), port("https", 443)], 1, None);
    }
    if !state.services.iter().any(|s| s.namespace == INGRESS_NAMESPACE && s.name == INGRESS_CONTROLLER) {
        let service_port = |name: &str, port: i32| ServicePort {
            name: Some(name.into()),
            port,
            protocol: Some("TCP".into()),
            target_port: Some(IntOrString::String(name.into())),
            ..Default::default()
        };
        let service = Service {
            metadata: ObjectMeta { name: Some(INGRESS_CONTROLLER.into()), namespace: Some(INGRESS_NAMESPACE.into()), ..Default::default() },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                selector: Some(controller_labels()),
                ports: Some(vec![service_port("http", 80), service_port("https", 443)]),
                ..Default::default()
            }),
            status: None,
        };
        state.services.push(Namespaced::from_object(service));
        state.services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    }
}

/// Adds `default/kubernetes` (10.96.0.1, 443/TCP), as every cluster has it, unless the manifests
/// have it. The lab has no API server behind it: the name resolves, connections are refused.
pub fn add_kubernetes_service(state: &mut ClusterState, config: &crate::plan::LabConfig) {
    let ip = kubernetes_cluster_ip(config).to_string();
    if state.services.iter().any(|s| s.namespace == "default" && s.name == "kubernetes") {
        return;
    }
    let service = Service {
        metadata: ObjectMeta {
            name: Some("kubernetes".into()),
            namespace: Some("default".into()),
            labels: Some(BTreeMap::from([("component".to_owned(), "apiserver".to_owned()), ("provider".to_owned(), "kubernetes".to_owned())])),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(ip.clone()),
            cluster_ips: Some(vec![ip]),
            ports: Some(vec![ServicePort {
                name: Some("https".into()),
                port: 443,
                protocol: Some("TCP".into()),
                target_port: Some(IntOrString::Int(6443)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };
    state.services.push(Namespaced::from_object(service));
    state.services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
}

/// Adds the cluster DNS to a snapshot: the `kube-dns` Service unless there is one, and the
/// `coredns` Deployment unless `kube-system` has pods labelled `k8s-app: kube-dns` already.
pub fn add_cluster_dns(state: &mut ClusterState, config: &crate::plan::LabConfig) {
    if !state.services.iter().any(|s| s.namespace == SYSTEM_NAMESPACE && s.name == DNS_SERVICE) {
        state.services.push(Namespaced::from_object(dns_service(&dns_cluster_ip(config).to_string())));
        state.services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    }
    if state.pods.iter().any(|p| is_dns_labelled(&p.namespace, &p.labels)) {
        return;
    }
    add_namespace(state, SYSTEM_NAMESPACE);
    let port = |name: &str, port: u16, protocol: Protocol| ContainerPort { name: Some(name.into()), port, protocol };
    let ports = vec![port("dns", 53, Protocol::Udp), port("dns-tcp", 53, Protocol::Tcp), port("metrics", DNS_METRICS_PORT, Protocol::Tcp)];
    add_deployment(state, (SYSTEM_NAMESPACE, DNS_DEPLOYMENT, "5d78c9869d"), labels(), ports, DNS_REPLICAS, Some("Default"));
}

/// `kube-system/kube-dns`, as kubeadm makes it.
fn dns_service(cluster_ip: &str) -> Service {
    let service_port = |name: &str, port: i32, protocol: &str| ServicePort {
        name: Some(name.into()),
        port,
        protocol: Some(protocol.into()),
        target_port: Some(IntOrString::Int(port)),
        ..Default::default()
    };
    Service {
        metadata: ObjectMeta {
            name: Some(DNS_SERVICE.into()),
            namespace: Some(SYSTEM_NAMESPACE.into()),
            labels: Some(BTreeMap::from([("k8s-app".to_owned(), "kube-dns".to_owned()), ("kubernetes.io/name".to_owned(), "CoreDNS".to_owned())])),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(cluster_ip.into()),
            cluster_ips: Some(vec![cluster_ip.into()]),
            selector: Some(labels()),
            ports: Some(vec![service_port("dns", 53, "UDP"), service_port("dns-tcp", 53, "TCP"), service_port("metrics", i32::from(DNS_METRICS_PORT), "TCP")]),
            ..Default::default()
        }),
        status: None,
    }
}
