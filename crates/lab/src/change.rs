//! `lab apply` and `lab delete`: adding, relabelling and removing pods of a running lab.
//!
//! The manifests are planned against the lab's nodes like `up` plans them; pods are matched by
//! `namespace/name`, and a workload's pods by owner, so scaling a Deployment down removes the pods
//! it no longer has.

use std::path::Path;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use model::ClusterState;

use crate::name::LabName;
use crate::plan::{self, PodPlan};
use crate::state::{self, LabState};
use crate::up::{LabError, attach_pod, detach_pod};

/// What a change did, by `ns/name`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// Pods created.
    pub added: Vec<String>,
    /// Pods whose labels or ports changed.
    pub updated: Vec<String>,
    /// Pods removed.
    pub removed: Vec<String>,
    /// Other objects, as kubectl reports them: `networkpolicy.networking.k8s.io/deny-all created`.
    pub objects: Vec<String>,
    /// Objects a delete named that the lab does not have, as kubectl says it:
    /// `networkpolicies.networking.k8s.io "deny-all" not found`.
    pub not_found: Vec<String>,
}

/// The Namespaces the manifests declare, as objects with their labels.
pub fn given_namespaces(cluster: &ClusterState) -> Vec<Namespace> {
    cluster
        .namespaces
        .iter()
        .filter(|n| n.declared)
        .map(|n| Namespace { metadata: ObjectMeta { name: Some(n.name.clone()), labels: Some(n.labels.clone()), ..Default::default() }, ..Default::default() })
        .collect()
}

/// How kubectl names a kind in what it prints: `networkpolicy.networking.k8s.io`, and its
/// resource for "not found": `networkpolicies.networking.k8s.io`.
struct KindNames {
    singular: &'static str,
    resource: &'static str,
    namespaced: bool,
}

const NAMESPACE: KindNames = KindNames { singular: "namespace", resource: "namespaces", namespaced: false };
const NETWORK_POLICY: KindNames = KindNames { singular: "networkpolicy.networking.k8s.io", resource: "networkpolicies.networking.k8s.io", namespaced: true };
const SERVICE: KindNames = KindNames { singular: "service", resource: "services", namespaced: true };

/// Reports applied (or deleted) objects of one kind against what the lab had before, as kubectl
/// does: created, configured, unchanged; deleted or not found.
fn report<'a, T: serde::Serialize + 'a>(
    names: &KindNames,
    before: &[T],
    given: impl IntoIterator<Item = &'a T>,
    meta: fn(&T) -> &ObjectMeta,
    deleting: bool,
    change: &mut Change,
) {
    let key = |m: &ObjectMeta| {
        let ns = names.namespaced.then(|| m.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into()));
        (ns, m.name.clone().unwrap_or_default())
    };
    for object in given {
        let k = key(meta(object));
        let old = before.iter().find(|b| key(meta(b)) == k);
        let line = match (old, deleting) {
            (Some(_), true) => "deleted",
            (None, true) => {
                let in_ns = k.0.as_ref().map(|ns| format!(" in namespace {ns:?}")).unwrap_or_default();
                change.not_found.push(format!("{} {:?} not found{in_ns}", names.resource, k.1));
                continue;
            }
            (None, false) => "created",
            (Some(o), false) if serde_json::to_value(o).ok() == serde_json::to_value(object).ok() => "unchanged",
            (Some(_), false) => "configured",
        };
        change.objects.push(format!("{}/{} {line}", names.singular, k.1));
    }
}

/// kubectl's name for a kind in what it prints (`deployment.apps`), and its resource for "not
/// found" (`deployments.apps`).
fn workload_names(kind: &str) -> (String, String) {
    let group = match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => ".apps",
        "Job" | "CronJob" => ".batch",
        _ => "",
    };
    let lower = kind.to_ascii_lowercase();
    (format!("{lower}{group}"), format!("{lower}s{group}"))
}

/// Reports the manifests' Pods and workloads as kubectl does, from the pods the lab had before
/// and has after: created, configured (pods added, removed, relabelled), unchanged; deleted or
/// not found.
fn report_workloads(before: &[PodPlan], after: &[PodPlan], cluster: &ClusterState, deleting: bool, change: &mut Change) {
    for object in &cluster.pods {
        let made = |p: &&PodPlan| {
            p.namespace == object.namespace
                && if object.kind == "Pod" {
                    p.owner.is_none() && p.name == object.name
                } else {
                    p.owner.as_deref() == Some(object.name.as_str()) && p.owner_kind == object.kind
                }
        };
        let shape = |pods: &[PodPlan]| pods.iter().filter(made).map(|p| (p.key(), p.labels.clone(), p.ports.clone())).collect::<Vec<_>>();
        let (old, new) = (shape(before), shape(after));
        let (singular, resource) = workload_names(&object.kind);
        let verb = match (old.is_empty(), deleting) {
            (true, true) => {
                change.not_found.push(format!("{resource} {:?} not found in namespace {:?}", object.name, object.namespace));
                continue;
            }
            (false, true) => "deleted",
            (true, false) => "created",
            (false, false) if old == new => "unchanged",
            (false, false) => "configured",
        };
        change.objects.push(format!("{singular}/{} {verb}", object.name));
    }
}

/// Namespaces and NetworkPolicies: applied ones replace those of the same name (a namespace's
/// labels are what the manifest says); with `remove`, the named ones go.
fn merge_policy_objects(st: &mut LabState, cluster: &ClusterState, remove: bool, change: &mut Change) {
    let namespaces = given_namespaces(cluster);
    report(&NAMESPACE, &st.namespaces, &namespaces, |o| &o.metadata, remove, change);
    let policies: Vec<NetworkPolicy> = cluster.policies.iter().map(|p| p.policy.clone()).collect();
    report(&NETWORK_POLICY, &st.network_policies, &policies, |o| &o.metadata, remove, change);
    merge(&mut st.namespaces, &namespaces, |o| &o.metadata, false, remove);
    merge(&mut st.network_policies, &policies, |o| &o.metadata, true, remove);
    if remove {
        // A namespace deleted takes its objects with it.
        let gone: Vec<String> = namespaces.iter().filter_map(|n| n.metadata.name.clone()).collect();
        let in_gone = |m: &ObjectMeta| gone.iter().any(|g| m.namespace.as_deref().unwrap_or("default") == g);
        st.network_policies.retain(|p| !in_gone(&p.metadata));
        st.services.retain(|s| !in_gone(&s.metadata));
        st.given_slices.retain(|s| !in_gone(&s.metadata));
    }
}

fn plan_error(e: plan::PlanError) -> LabError {
    LabError { what: "planning".into(), source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()) }
}

fn same_owner(a: &PodPlan, b: &PodPlan) -> bool {
    a.owner.is_some() && a.namespace == b.namespace && a.owner == b.owner && a.owner_kind == b.owner_kind
}

/// Adds the manifests' pods, updates the labels and ports of those that exist, and removes
/// workload pods their workload no longer has.
pub fn apply(lab: &LabName, cluster: &ClusterState, plugin: &Path) -> Result<Change, LabError> {
    let (locked, mut st) = open(lab)?;
    let wanted = plan::plan(&st.plan.config, cluster).map_err(plan_error)?;
    let mut change = Change::default();
    let services_before = st.services.clone();
    merge_services(&mut st, cluster)?;
    // Each applied Service as stored (defaulted, its addresses kept), so that applying the same
    // manifest again is "unchanged", as kubectl says.
    let stored = cluster.services.iter().filter_map(|given| {
        st.services
            .iter()
            .find(|s| s.metadata.namespace.as_deref() == Some(given.namespace.as_str()) && s.metadata.name.as_deref() == Some(given.name.as_str()))
    });
    report(&SERVICE, &services_before, stored, |o| &o.metadata, false, &mut change);
    merge_policy_objects(&mut st, cluster, false, &mut change);
    let mut room = st.plan.clone();
    room.pods.extend(wanted.pods.iter().cloned());
    if let Some((old, new)) = crate::up::make_neighbour_room(&room)? {
        eprintln!("raised the kernel's ARP table limit (gc_thresh3) from {old} to {new} for the lab's pods");
    }
    let before = st.plan.pods.clone();
    let done = apply_plan(&mut st, wanted, plugin, &mut change);
    report_workloads(&before, &st.plan.pods, cluster, false, &mut change);
    finish(&locked, st, change, done)
}

/// Locks the lab's state and loads it, once the lab process is known to be running: a change
/// to a lab whose process is gone would make pods nobody serves, so it is refused before
/// anything is made.
fn open(lab: &LabName) -> Result<(state::Locked, LabState), LabError> {
    let what = || format!("lab {lab}");
    let locked = state::lock(lab).map_err(|e| LabError { what: what(), source: e })?;
    crate::daemon::require_running(lab).map_err(|e| LabError { what: what(), source: e })?;
    let st = locked.load().map_err(|e| LabError { what: what(), source: e })?;
    Ok((locked, st))
}

/// Applied Services replace those of the same name; new ones get ClusterIPs and NodePorts
/// (the lab's existing ones keep theirs, as chosen addresses).
fn merge_services(st: &mut LabState, cluster: &ClusterState) -> Result<(), LabError> {
    let key = |s: &k8s_openapi::api::core::v1::Service| (s.metadata.namespace.clone().unwrap_or_default(), s.metadata.name.clone().unwrap_or_default());
    let applied: Vec<_> = cluster.services.iter().map(|n| (n.namespace.clone(), n.name.clone())).collect();
    let mut all: Vec<model::Namespaced<k8s_openapi::api::core::v1::Service>> = st
        .services
        .iter()
        .filter(|s| !applied.contains(&key(s)))
        .map(|s| model::Namespaced { location: Default::default(), namespace: key(s).0, name: key(s).1, object: s.clone() })
        .collect();
    all.extend(cluster.services.iter().cloned());
    all.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    model::allocate::allocate(&mut all, &st.plan.config.ranges())
        .map_err(|e| LabError { what: "allocating Service addresses".into(), source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()) })?;
    st.services = all.into_iter().map(|n| n.object).collect();
    crate::load_balancer::assign(&mut st.services, &st.plan.config.load_balancer_pools());
    for given in &cluster.endpoint_slices {
        st.given_slices
            .retain(|s| !(s.metadata.namespace.as_deref() == Some(given.namespace.as_str()) && s.metadata.name.as_deref() == Some(given.name.as_str())));
        st.given_slices.push(given.object.clone());
    }
    merge_routing(st, cluster, false);
    Ok(())
}

/// Ingresses, IngressClasses, Secrets and Gateway API objects: applied ones replace those of the
/// same name; with `remove`, the named ones go.
fn merge_routing(st: &mut LabState, cluster: &ClusterState, remove: bool) {
    merge(&mut st.ingresses, cluster.ingresses.iter().map(|n| &n.object), |o| &o.metadata, true, remove);
    merge(&mut st.secrets, cluster.secrets.iter().map(|n| &n.object), |o| &o.metadata, true, remove);
    merge(&mut st.ingress_classes, &cluster.ingress_classes, |o| &o.metadata, false, remove);
    merge(&mut st.gateway_classes, &cluster.gateway_classes, |o| &o.metadata, false, remove);
    merge(&mut st.gateways, cluster.gateways.iter().map(|n| &n.object), |o| &o.metadata, true, remove);
    merge(&mut st.http_routes, cluster.http_routes.iter().map(|n| &n.object), |o| &o.metadata, true, remove);
    merge(&mut st.reference_grants, cluster.reference_grants.iter().map(|n| &n.object), |o| &o.metadata, true, remove);
}

/// The kept objects the applied ones name (by namespace, defaulted as the loader does, and name;
/// by name alone for cluster-scoped kinds) are replaced by them, or with `remove` dropped.
fn merge<'a, T: Clone + 'a>(kept: &mut Vec<T>, applied: impl IntoIterator<Item = &'a T>, meta: fn(&T) -> &ObjectMeta, namespaced: bool, remove: bool) {
    let key = |m: &ObjectMeta| (namespaced.then(|| m.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into())), m.name.clone());
    for object in applied {
        let named = key(meta(object));
        kept.retain(|k| key(meta(k)) != named);
        if !remove {
            kept.push(object.clone());
        }
    }
}

fn apply_plan(st: &mut LabState, wanted: plan::LabPlan, plugin: &Path, change: &mut Change) -> Result<(), LabError> {
    // A pod of the lab that an applied object of another kind or owner would also make is
    // refused before anything changes.
    for w in &wanted.pods {
        if let Some(p) = st.plan.pods.iter().find(|p| p.key() == w.key())
            && (&p.owner, &p.owner_kind) != (&w.owner, &w.owner_kind)
        {
            return Err(plan_error(plan::PlanError::Duplicate { pod: w.key(), first: p.made_by(), second: w.made_by() }));
        }
    }
    // Scale-down: pods of an applied workload that the new plan does not have.
    let gone: Vec<usize> = (0..st.plan.pods.len())
        .filter(|&i| {
            let p = &st.plan.pods[i];
            wanted.pods.iter().any(|w| same_owner(w, p)) && !wanted.pods.iter().any(|w| w.key() == p.key())
        })
        .collect();
    remove(st, &gone, plugin, change)?;
    add_or_update(st, wanted.pods, plugin, change, false)
}

/// Attaches the wanted pods the lab does not have; updates the labels and ports (and with
/// `readiness`, the readiness) of those it has.
fn add_or_update(st: &mut LabState, wanted: Vec<PodPlan>, plugin: &Path, change: &mut Change, readiness: bool) -> Result<(), LabError> {
    for w in wanted {
        match st.plan.pods.iter().position(|p| p.key() == w.key()) {
            Some(i) => {
                let p = &mut st.plan.pods[i];
                if p.labels != w.labels || p.ports != w.ports || (readiness && p.ready != w.ready) {
                    p.labels = w.labels;
                    p.ports = w.ports;
                    if readiness {
                        p.ready = w.ready;
                    }
                    change.updated.push(p.key());
                }
            }
            None => {
                let ips = attach_pod(&st.plan, &w, plugin)?;
                change.added.push(w.key());
                st.plan.pods.push(w);
                st.pod_ips.push(None);
                st.set_pod_addresses(st.pod_ips.len() - 1, &ips);
            }
        }
    }
    Ok(())
}

/// Brings a control-plane lab to what its API server holds. The lab's pods are the Pods bound to
/// its nodes that are neither finished nor being deleted (the kubelet's share: a pod is made
/// once the scheduler binds it, and removed when it is deleted); Services (with the addresses the
/// API server allocated), EndpointSlices of Services without a selector, Namespaces,
/// NetworkPolicies, Ingresses, IngressClasses and TLS Secrets are the API server's.
pub fn sync(lab: &LabName, cluster: &ClusterState, plugin: &Path) -> Result<Change, LabError> {
    let (locked, mut st) = open(lab)?;
    let nodes: Vec<String> = st.plan.nodes.iter().map(|n| n.name.clone()).collect();
    let mut bound = cluster.clone();
    bound.pods.retain(|p| p.kind == "Pod" && !p.terminal && !p.terminating && p.node_name.as_ref().is_some_and(|n| nodes.contains(n)));
    let wanted = plan::plan(&st.plan.config, &bound).map_err(plan_error)?;
    let mut change = Change::default();
    st.services = cluster.services.iter().map(|s| s.object.clone()).collect();
    crate::load_balancer::assign(&mut st.services, &st.plan.config.load_balancer_pools());
    // Slices the EndpointSlice controller made are the lab's to compute from its pods, as it does.
    let managed = |s: &k8s_openapi::api::discovery::v1::EndpointSlice| {
        s.metadata.labels.as_ref().and_then(|l| l.get("endpointslice.kubernetes.io/managed-by")).is_some_and(|m| m == "endpointslice-controller.k8s.io")
    };
    st.given_slices = cluster.endpoint_slices.iter().map(|s| s.object.clone()).filter(|s| !managed(s)).collect();
    st.namespaces = cluster
        .namespaces
        .iter()
        .map(|n| Namespace { metadata: ObjectMeta { name: Some(n.name.clone()), labels: Some(n.labels.clone()), ..Default::default() }, ..Default::default() })
        .collect();
    st.network_policies = cluster.policies.iter().map(|p| p.policy.clone()).collect();
    st.ingresses = cluster.ingresses.iter().map(|i| i.object.clone()).collect();
    st.ingress_classes.clone_from(&cluster.ingress_classes);
    st.secrets = cluster.secrets.iter().map(|s| s.object.clone()).collect();
    let mut room = st.plan.clone();
    room.pods.extend(wanted.pods.iter().cloned());
    if let Some((old, new)) = crate::up::make_neighbour_room(&room)? {
        eprintln!("raised the kernel's ARP table limit (gc_thresh3) from {old} to {new} for the lab's pods");
    }
    let gone: Vec<usize> = (0..st.plan.pods.len()).filter(|&i| !wanted.pods.iter().any(|w| w.key() == st.plan.pods[i].key())).collect();
    // Readiness too: the API server's Ready condition is the pod's.
    let done = remove(&mut st, &gone, plugin, &mut change).and_then(|()| add_or_update(&mut st, wanted.pods, plugin, &mut change, true));
    finish(&locked, st, change, done)
}

/// Removes the manifests' pods (and every pod of the manifests' workloads).
pub fn delete(lab: &LabName, cluster: &ClusterState, plugin: &Path) -> Result<Change, LabError> {
    let (locked, mut st) = open(lab)?;
    let named = plan::plan(&st.plan.config, cluster).map_err(plan_error)?;
    let doomed: Vec<usize> = (0..st.plan.pods.len())
        .filter(|&i| {
            let p = &st.plan.pods[i];
            named.pods.iter().any(|w| w.key() == p.key() || same_owner(w, p))
        })
        .collect();
    let mut change = Change::default();
    let services_before = st.services.clone();
    report(&SERVICE, &services_before, cluster.services.iter().map(|s| &s.object), |o| &o.metadata, true, &mut change);
    merge_policy_objects(&mut st, cluster, true, &mut change);
    let gone_namespaces: Vec<String> = given_namespaces(cluster).into_iter().filter_map(|n| n.metadata.name).collect();
    let doomed: Vec<usize> = (0..st.plan.pods.len()).filter(|&i| doomed.contains(&i) || gone_namespaces.contains(&st.plan.pods[i].namespace)).collect();
    let named_services: Vec<(String, String)> = cluster.services.iter().map(|n| (n.namespace.clone(), n.name.clone())).collect();
    st.services.retain(|s| !named_services.contains(&(s.metadata.namespace.clone().unwrap_or_default(), s.metadata.name.clone().unwrap_or_default())));
    st.given_slices.retain(|s| {
        !cluster
            .endpoint_slices
            .iter()
            .any(|g| s.metadata.namespace.as_deref() == Some(g.namespace.as_str()) && s.metadata.name.as_deref() == Some(g.name.as_str()))
    });
    merge_routing(&mut st, cluster, true);
    let before = st.plan.pods.clone();
    let done = remove(&mut st, &doomed, plugin, &mut change);
    report_workloads(&before, &st.plan.pods, cluster, true, &mut change);
    finish(&locked, st, change, done)
}

fn remove(st: &mut LabState, indices: &[usize], plugin: &Path, change: &mut Change) -> Result<(), LabError> {
    for &i in indices.iter().rev() {
        detach_pod(&st.plan, &st.plan.pods[i], plugin)?;
        change.removed.insert(0, st.plan.pods[i].key());
        let gone = st.plan.pods.remove(i);
        st.pod_ips.remove(i);
        st.secondary_ips.remove(&gone.key());
    }
    Ok(())
}

/// Saves the state in plan order (also after a failure halfway, so that it names every pod that
/// exists) and has the lab process serve what changed.
fn finish(locked: &state::Locked, mut st: LabState, change: Change, done: Result<(), LabError>) -> Result<Change, LabError> {
    let mut pairs: Vec<(PodPlan, Option<std::net::IpAddr>)> = st.plan.pods.drain(..).zip(st.pod_ips.drain(..)).collect();
    pairs.sort_by(|a, b| (&a.0.namespace, &a.0.name).cmp(&(&b.0.namespace, &b.0.name)));
    (st.plan.pods, st.pod_ips) = pairs.into_iter().unzip();
    locked.save(&st).map_err(|e| LabError { what: "saving the lab state".into(), source: e })?;
    crate::daemon::reload(locked.lab()).map_err(|e| LabError { what: "reloading the lab process".into(), source: e })?;
    done.map(|()| change)
}

/// What `lab label` relabels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Labelled {
    /// A pod, by namespace and name.
    Pod,
    /// A namespace.
    Namespace,
}

/// One edit of `kubectl label`: `key=value` sets (overwriting), `key-` removes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelEdit {
    /// Set `key` to `value`.
    Set(String, String),
    /// Remove `key`.
    Remove(String),
}

impl std::str::FromStr for LabelEdit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let invalid = |what: &str, errs: Vec<String>| if errs.is_empty() { Ok(()) } else { Err(format!("invalid label {what} {s:?}: {}", errs.join("; "))) };
        if let Some((key, value)) = s.split_once('=') {
            invalid("key in", model::validation::is_qualified_name(key))?;
            invalid("value in", model::validation::is_valid_label_value(value))?;
            return Ok(LabelEdit::Set(key.to_owned(), value.to_owned()));
        }
        if let Some(key) = s.strip_suffix('-') {
            invalid("key in", model::validation::is_qualified_name(key))?;
            return Ok(LabelEdit::Remove(key.to_owned()));
        }
        Err(format!("invalid label change {s:?}: expected key=value to set or key- to remove"))
    }
}

fn edit_labels(labels: &mut model::Labels, edits: &[LabelEdit]) -> bool {
    let before = labels.clone();
    for e in edits {
        match e {
            LabelEdit::Set(k, v) => {
                labels.insert(k.clone(), v.clone());
            }
            LabelEdit::Remove(k) => {
                labels.remove(k);
            }
        }
    }
    *labels != before
}

/// Relabels a pod or namespace of a running lab; whether anything changed. Everything that
/// selects by labels (EndpointSlices, NetworkPolicy on every node) follows before it returns.
pub fn label(lab: &LabName, what: Labelled, namespace: &str, name: &str, edits: &[LabelEdit]) -> Result<bool, LabError> {
    let (locked, mut st) = open(lab)?;
    let not_found = |resource: &str| LabError {
        what: format!("lab {lab}"),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, format!("{resource} {name:?} not found")),
    };
    let changed = match what {
        Labelled::Pod => {
            let pod = st.plan.pods.iter_mut().find(|p| p.namespace == namespace && p.name == name).ok_or_else(|| not_found("pods"))?;
            edit_labels(&mut pod.labels, edits)
        }
        Labelled::Namespace => {
            if !st.cluster_view().namespaces.iter().any(|n| n.name == name) {
                return Err(not_found("namespaces"));
            }
            let index = match st.namespaces.iter().position(|n| n.metadata.name.as_deref() == Some(name)) {
                Some(i) => i,
                None => {
                    st.namespaces.push(Namespace { metadata: ObjectMeta { name: Some(name.to_owned()), ..Default::default() }, ..Default::default() });
                    st.namespaces.len() - 1
                }
            };
            let labels = st.namespaces[index].metadata.labels.get_or_insert_with(Default::default);
            labels.insert(model::cluster::NAMESPACE_NAME_LABEL.to_owned(), name.to_owned());
            edit_labels(labels, edits)
        }
    };
    if changed {
        finish(&locked, st, Change::default(), Ok(()))?;
    }
    Ok(changed)
}
