//! Random object graphs (ExternalName chains and loops, headless Services, pods with
//! hostnames) built from the input, then every name queried with every type: each query must be
//! answered, never panic or recurse without end. `crates/dns/tests/object_graphs.rs` runs the
//! same check as a property test on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let graph = podnet_testkit_graph(data);
    let text: String = graph.objects.iter().map(|o| format!("{o}\n")).collect();
    let Ok(objects) = model::load_str(&text, std::path::Path::new("graph.json")) else { return };
    let Ok(state) = model::ClusterState::from_objects(&objects) else { return };
    let Ok(view) = dns::View::build(&state, &dns::ZoneConfig::default(), 1) else { return };
    for name in &graph.names {
        for qtype in [1u16, 28, 5, 33, 16, 255] {
            let mut q = hickory_proto::op::Message::query();
            let Ok(qname) = hickory_proto::rr::Name::from_ascii(format!("{name}.")) else { continue };
            q.add_query(hickory_proto::op::Query::query(qname, hickory_proto::rr::RecordType::from(qtype)));
            let Ok(bytes) = q.to_vec() else { continue };
            let _ = dns::message::handle(&view, &bytes, dns::message::Transport::Udp, dns::message::Recursion::Allowed);
        }
    }
});

fn podnet_testkit_graph(data: &[u8]) -> testkit::graph::Graph {
    testkit::graph::from_bytes(data)
}
