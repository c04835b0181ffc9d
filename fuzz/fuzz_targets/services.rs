//! Any bytes as a manifest of Services (and EndpointSlices, Nodes) plus a KubeProxyConfiguration:
//! loading, the API server's checks, address allocation and the proxy's plan and rules return
//! values or errors naming the object, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // The first document may be a KubeProxyConfiguration; the rest are objects.
    let (config, objects) = text.split_once("\n---\n").unwrap_or(("", &text));
    let config = proxy::ProxyConfig::from_yaml(config).unwrap_or_default();
    let Ok(loaded) = model::load_str(objects, std::path::Path::new("fuzz.yaml")) else { return };
    let Ok(mut state) = model::ClusterState::from_objects(&loaded) else { return };
    let ranges = model::allocate::Ranges::for_cluster(&state);
    if model::allocate::allocate(&mut state.services, &ranges).is_err() {
        return;
    }
    for node in state.nodes.iter().filter_map(|n| n.metadata.name.clone()) {
        if let Ok(plan) = proxy::plan(&state, &node, &config) {
            let _ = plan.render();
        }
    }
});
