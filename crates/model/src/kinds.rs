//! Which kinds Kubernetes serves, in which versions, and which are cluster-scoped: what the API
//! server's discovery tells kubectl. A manifest of a kind the cluster would not know
//! (`kind: Podd`, `apps/v1beta1` Deployments) is refused with kubectl's message instead of
//! being skipped without a word; kinds of other API groups (custom resources) are skipped.

/// Built-in groups: a kind in one of these that is not listed below does not exist.
const BUILT_IN_GROUPS: &[&str] = &[
    "",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "apps",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "extensions",
    "flowcontrol.apiserver.k8s.io",
    "gateway.networking.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
];

/// `(group/version, kinds)` served by a current cluster (Kubernetes 1.3x, Gateway API v1.x).
const SERVED: &[(&str, &[&str])] = &[
    (
        "v1",
        &[
            "Binding",
            "ComponentStatus",
            "ConfigMap",
            "Endpoints",
            "Event",
            "LimitRange",
            "Namespace",
            "Node",
            "PersistentVolume",
            "PersistentVolumeClaim",
            "Pod",
            "PodTemplate",
            "ReplicationController",
            "ResourceQuota",
            "Secret",
            "Service",
            "ServiceAccount",
        ],
    ),
    (
        "admissionregistration.k8s.io/v1",
        &["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"],
    ),
    ("apiextensions.k8s.io/v1", &["CustomResourceDefinition"]),
    ("apiregistration.k8s.io/v1", &["APIService"]),
    ("apps/v1", &["ControllerRevision", "DaemonSet", "Deployment", "ReplicaSet", "StatefulSet"]),
    ("authentication.k8s.io/v1", &["TokenReview", "SelfSubjectReview"]),
    ("authorization.k8s.io/v1", &["LocalSubjectAccessReview", "SelfSubjectAccessReview", "SelfSubjectRulesReview", "SubjectAccessReview"]),
    ("autoscaling/v1", &["HorizontalPodAutoscaler"]),
    ("autoscaling/v2", &["HorizontalPodAutoscaler"]),
    ("batch/v1", &["CronJob", "Job"]),
    ("certificates.k8s.io/v1", &["CertificateSigningRequest"]),
    ("coordination.k8s.io/v1", &["Lease"]),
    ("discovery.k8s.io/v1", &["EndpointSlice"]),
    ("events.k8s.io/v1", &["Event"]),
    ("flowcontrol.apiserver.k8s.io/v1", &["FlowSchema", "PriorityLevelConfiguration"]),
    ("gateway.networking.k8s.io/v1", &["GatewayClass", "Gateway", "HTTPRoute", "GRPCRoute", "ReferenceGrant"]),
    ("gateway.networking.k8s.io/v1beta1", &["GatewayClass", "Gateway", "HTTPRoute", "ReferenceGrant"]),
    ("gateway.networking.k8s.io/v1alpha2", &["GRPCRoute", "TCPRoute", "TLSRoute", "UDPRoute", "BackendTLSPolicy", "ReferenceGrant"]),
    ("gateway.networking.k8s.io/v1alpha3", &["BackendTLSPolicy"]),
    ("networking.k8s.io/v1", &["IngressClass", "Ingress", "NetworkPolicy", "IPAddress", "ServiceCIDR"]),
    ("networking.k8s.io/v1beta1", &["IPAddress", "ServiceCIDR"]),
    ("node.k8s.io/v1", &["RuntimeClass"]),
    ("policy/v1", &["PodDisruptionBudget"]),
    ("rbac.authorization.k8s.io/v1", &["ClusterRoleBinding", "ClusterRole", "RoleBinding", "Role"]),
    ("resource.k8s.io/v1", &["DeviceClass", "ResourceClaim", "ResourceClaimTemplate", "ResourceSlice"]),
    ("scheduling.k8s.io/v1", &["PriorityClass"]),
    ("storage.k8s.io/v1", &["CSIDriver", "CSINode", "CSIStorageCapacity", "StorageClass", "VolumeAttachment", "VolumeAttributesClass"]),
];

/// Kinds that have no namespace.
const CLUSTER_SCOPED: &[&str] = &[
    "APIService",
    "CertificateSigningRequest",
    "ClusterRole",
    "ClusterRoleBinding",
    "ComponentStatus",
    "CSIDriver",
    "CSINode",
    "CustomResourceDefinition",
    "DeviceClass",
    "FlowSchema",
    "GatewayClass",
    "IngressClass",
    "IPAddress",
    "MutatingWebhookConfiguration",
    "Namespace",
    "Node",
    "PersistentVolume",
    "PriorityClass",
    "PriorityLevelConfiguration",
    "ResourceSlice",
    "RuntimeClass",
    "SelfSubjectAccessReview",
    "SelfSubjectReview",
    "SelfSubjectRulesReview",
    "ServiceCIDR",
    "StorageClass",
    "SubjectAccessReview",
    "TokenReview",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ValidatingWebhookConfiguration",
    "VolumeAttachment",
    "VolumeAttributesClass",
];

/// What the cluster would make of a `apiVersion` / `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// A kind Kubernetes serves in this version.
    Yes,
    /// A kind of another API group (a custom resource): not ours to judge.
    Custom,
    /// A built-in group that has no such kind in this version.
    No,
}

/// Whether `api_version` / `kind` exists.
pub fn served(api_version: &str, kind: &str) -> Served {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    if !BUILT_IN_GROUPS.contains(&group) {
        return Served::Custom;
    }
    if SERVED.iter().any(|(gv, kinds)| *gv == api_version && kinds.contains(&kind)) { Served::Yes } else { Served::No }
}

/// Whether objects of `kind` live in a namespace.
pub fn is_namespaced(kind: &str) -> bool {
    !CLUSTER_SCOPED.contains(&kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_kinds_custom_resources_and_typos() {
        assert_eq!(served("v1", "Pod"), Served::Yes);
        assert_eq!(served("v1", "ConfigMap"), Served::Yes);
        assert_eq!(served("apps/v1", "Deployment"), Served::Yes);
        assert_eq!(served("v1", "Podd"), Served::No);
        assert_eq!(served("apps/v1beta1", "Deployment"), Served::No);
        assert_eq!(served("networking.k8s.io/v1", "Service"), Served::No);
        assert_eq!(served("cert-manager.io/v1", "Certificate"), Served::Custom);
        assert_eq!(served("monitoring.coreos.com/v1", "ServiceMonitor"), Served::Custom);
    }

    #[test]
    fn scope() {
        assert!(is_namespaced("Service") && is_namespaced("Gateway") && is_namespaced("Secret"));
        assert!(!is_namespaced("Namespace") && !is_namespaced("IngressClass") && !is_namespaced("GatewayClass") && !is_namespaced("Node"));
    }
}
