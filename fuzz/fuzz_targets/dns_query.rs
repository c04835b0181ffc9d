//! Any bytes as a DNS message to the cluster DNS, over UDP and TCP, from a client that may and
//! one that may not recurse: an answer, an error code or silence, never a panic; and a kept
//! response for a plain query is what the full path says.
#![no_main]

use std::sync::LazyLock;

use dns::message::{Handled, Recursion, Transport, handle};
use libfuzzer_sys::fuzz_target;

static VIEW: LazyLock<dns::View> = LazyLock::new(|| {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec: {clusterIP: 10.96.0.5, ports: [{name: http, port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: default}\nspec: {clusterIP: None, ports: [{name: pg, port: 5432}]}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: db-1, namespace: default, labels: {kubernetes.io/service-name: db}}\naddressType: IPv4\nendpoints: [{addresses: [10.244.0.7], hostname: db-0}]\nports: [{name: pg, port: 5432}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: ext, namespace: default}\nspec: {type: ExternalName, externalName: web.default.svc.cluster.local}\n";
    let objects = model::load_str(yaml, std::path::Path::new("fuzz.yaml")).expect("valid");
    let state = model::ClusterState::from_objects(&objects).expect("valid");
    let config = dns::ZoneConfig { pods: dns::PodsMode::Insecure, ..Default::default() };
    dns::View::build(&state, &config, 1).expect("valid zone")
});

fuzz_target!(|data: &[u8]| {
    for transport in [Transport::Udp, Transport::Tcp] {
        for recursion in [Recursion::Allowed, Recursion::Refused] {
            let handled = handle(&VIEW, data, transport, recursion);
            if let Handled::Reply(bytes) = &handled {
                assert!(transport == Transport::Tcp || bytes.len() <= usize::from(dns::message::MAX_UDP_PAYLOAD));
                // The kept-response path gives the same answer for the same question.
                if let Some(plain) = dns::fast::parse(data, transport, recursion) {
                    let answers = dns::fast::Answers::default();
                    answers.put(plain, bytes);
                    let again = dns::fast::parse(data, transport, recursion).expect("parsed once");
                    assert_eq!(answers.get(&again, data).as_deref(), Some(bytes.as_slice()));
                }
            }
        }
    }
});
