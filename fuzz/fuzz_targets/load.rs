//! Any bytes as a manifest file: the loader, the model and policy compilation must return
//! values or errors, never panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for name in ["input.yaml", "input.json"] {
        let Ok(objects) = model::load_str(text, Path::new(name)) else { continue };
        let Ok(state) = model::ClusterState::from_objects(&objects) else { continue };
        if let Ok(policies) = policy::PolicySet::compile(&state) {
            let ports = policy::declared_ports(&state);
            let _ = policy::compute(&state, &policies, &ports);
            let _ = policy::lint::lint(&state, &policies);
        }
    }
});
