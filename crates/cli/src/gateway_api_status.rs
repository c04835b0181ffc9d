//! The Gateway API status the controller writes back (the conformance suite reads it): each
//! GatewayClass of ours `Accepted`, each of our Gateways `Accepted`/`Programmed` with its
//! addresses and listeners (conditions, attached routes, supported kinds), and each HTTPRoute's
//! entry for each of our parents (`Accepted`, `ResolvedRefs`, ...). The conditions are
//! `gateway::httproute::compile`'s, the same `podnet gateway status` prints. A condition keeps its
//! `lastTransitionTime` while its status stays; an object is written only when its status differs
//! (a write is a watch event: writing the same again would never settle). HTTPRoute entries of
//! other controllers are kept.

use gateway::httproute::{Condition, Status};
use k8s_openapi::api::networking::v1::IngressLoadBalancerIngress;
use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

fn conditions(conds: &[Condition], generation: Option<i64>, current: &Value, now: &str) -> Value {
    let list: Vec<Value> = conds
        .iter()
        .map(|c| {
            let status = if c.status { "True" } else { "False" };
            let before = current.as_array().and_then(|a| a.iter().find(|p| p["type"] == c.type_.as_str()));
            let since = match before {
                Some(p) if p["status"] == status => p["lastTransitionTime"].clone(),
                _ => json!(now),
            };
            let mut v = json!({"type": c.type_, "status": status, "reason": c.reason, "message": c.message, "lastTransitionTime": since});
            if let Some(g) = generation {
                v["observedGeneration"] = json!(g);
            }
            v
        })
        .collect();
    Value::Array(list)
}

/// One object's desired status beside its current one.
struct Wanted {
    kind: &'static str,
    namespace: Option<String>,
    name: String,
    status: Value,
}

/// Everything to write for `status`, against what the API server holds now.
fn wanted(stores: &agent::source::Stores, status: &Status, controller: &str, addresses: &[IngressLoadBalancerIngress], now: &str) -> Vec<Wanted> {
    let mut out = Vec::new();
    let current = |o: &Option<std::sync::Arc<DynamicObject>>| o.as_ref().map(|o| o.data["status"].clone()).unwrap_or(Value::Null);
    let generation = |o: &Option<std::sync::Arc<DynamicObject>>| o.as_ref().and_then(|o| o.metadata.generation);
    for (name, conds) in &status.classes {
        let o = stores.gateway_api_object("GatewayClass", None, name);
        let now_status = current(&o);
        out.push(Wanted {
            kind: "GatewayClass",
            namespace: None,
            name: name.clone(),
            status: json!({"conditions": conditions(conds, generation(&o), &now_status["conditions"], now)}),
        });
    }
    for ((ns, name), (conds, listeners)) in &status.gateways {
        let o = stores.gateway_api_object("Gateway", Some(ns), name);
        let before = current(&o);
        let listeners: Vec<Value> = listeners
            .iter()
            .map(|(l, lc, attached)| {
                let prev = before["listeners"]
                    .as_array()
                    .and_then(|a| a.iter().find(|p| p["name"] == l.as_str()))
                    .map(|p| p["conditions"].clone())
                    .unwrap_or(Value::Null);
                json!({"name": l, "attachedRoutes": attached, "supportedKinds": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}],
                       "conditions": conditions(lc, generation(&o), &prev, now)})
            })
            .collect();
        let addresses: Vec<Value> = addresses
            .iter()
            .filter_map(|a| match (&a.ip, &a.hostname) {
                (Some(ip), _) => Some(json!({"type": "IPAddress", "value": ip})),
                (None, Some(h)) => Some(json!({"type": "Hostname", "value": h})),
                _ => None,
            })
            .collect();
        let mut s = json!({"conditions": conditions(conds, generation(&o), &before["conditions"], now), "listeners": listeners});
        if !addresses.is_empty() {
            s["addresses"] = json!(addresses);
        }
        out.push(Wanted { kind: "Gateway", namespace: Some(ns.clone()), name: name.clone(), status: s });
    }
    for ((ns, name), parents) in &status.routes {
        let o = stores.gateway_api_object("HTTPRoute", Some(ns), name);
        let before = current(&o);
        let others: Vec<Value> =
            before["parents"].as_array().map(|a| a.iter().filter(|p| p["controllerName"] != controller).cloned().collect()).unwrap_or_default();
        let mut list = others;
        for (parent, conds) in parents {
            let parent_ref = serde_json::to_value(parent).unwrap_or(Value::Null);
            let prev = before["parents"]
                .as_array()
                .and_then(|a| a.iter().find(|p| p["controllerName"] == controller && p["parentRef"] == parent_ref))
                .map(|p| p["conditions"].clone())
                .unwrap_or(Value::Null);
            list.push(json!({"parentRef": parent_ref, "controllerName": controller, "conditions": conditions(conds, generation(&o), &prev, now)}));
        }
        out.push(Wanted { kind: "HTTPRoute", namespace: Some(ns.clone()), name: name.clone(), status: json!({"parents": list}) });
    }
    out
}

/// Does `current` already say everything `wanted` says?
fn holds(current: &Value, wanted: &Value) -> bool {
    match (current, wanted) {
        (Value::Object(c), Value::Object(w)) => w.iter().all(|(k, v)| c.get(k).is_some_and(|cv| holds(cv, v))),
        (Value::Array(c), Value::Array(w)) => c.len() == w.len() && c.iter().zip(w).all(|(a, b)| holds(a, b)),
        _ => current == wanted,
    }
}

/// Writes every status that differs; how many objects were written.
pub async fn write(
    client: &kube::Client,
    stores: &agent::source::Stores,
    status: &Status,
    controller: &str,
    addresses: &[IngressLoadBalancerIngress],
) -> usize {
    let now = lab::daemon::utc_now();
    let now = format!("{}Z", now.split('.').next().unwrap_or_default());
    let mut written = 0;
    for w in wanted(stores, status, controller, addresses, &now) {
        let Some(resource) = stores.gateway_api_resource(w.kind) else { continue };
        let Some(current) = stores.gateway_api_object(w.kind, w.namespace.as_deref(), &w.name) else { continue };
        if holds(&current.data["status"], &w.status) {
            continue;
        }
        let api: Api<DynamicObject> = match &w.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        match api.patch_status(&w.name, &PatchParams::default(), &Patch::Merge(json!({"status": w.status}))).await {
            Ok(_) => written += 1,
            Err(e) => eprintln!("podnet gateway: {} {}: writing its status: {e}", w.kind, w.namespace.map(|n| format!("{n}/{}", w.name)).unwrap_or(w.name)),
        }
    }
    written
}
