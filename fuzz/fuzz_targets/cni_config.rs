//! Any bytes as a CNI plugin's stdin: config parsing, IPAM config and result decoding must
//! return values or errors, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(conf) = cni::config::NetConf::parse(data) {
        let _ = conf.requested_ips();
        let _ = conf.gc_attachments();
        if let Ok(ipam) = cni::ipam::Ipam::from_config(&conf.ipam) {
            let mut store = cni::ipam::store::MemStore::default();
            if let Ok(r) = ipam.add(&mut store, "fuzz", "eth0", &conf.requested_ips()) {
                for v in cni::SUPPORTED_VERSIONS {
                    let _ = cni::CniResult::from_value(&r.to_version(v));
                }
            }
        }
        if let Some(prev) = &conf.prev_result {
            let _ = cni::CniResult::from_value(prev);
        }
    }
});
