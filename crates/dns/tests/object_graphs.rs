//! Random object graphs (ExternalNames pointing at each other, at themselves and outside the
//! zone, headless Services with pod hostnames) queried for every name and type: each query is
//! answered, no chase goes on for ever (the bug was a stack overflow on the first query for an
//! ExternalName that names itself), and CNAME chains stay within CoreDNS's limit. The fuzz
//! target `dns_graph` runs the same check on libFuzzer's inputs.

#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a line number

use std::path::Path;

use dns::message::{Handled, Recursion, Transport, handle};
use dns::{View, ZoneConfig};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use proptest::prelude::*;

const TYPES: [RecordType; 6] = [RecordType::A, RecordType::AAAA, RecordType::CNAME, RecordType::SRV, RecordType::TXT, RecordType::ANY];

fn check_graph(data: &[u8]) {
    let graph = testkit::graph::from_bytes(data);
    let text: String = graph.objects.iter().map(|o| format!("{o}\n")).collect();
    let objects = model::load_str(&text, Path::new("graph.json")).unwrap();
    let state = model::ClusterState::from_objects(&objects).unwrap();
    let view = View::build(&state, &ZoneConfig::default(), 1).unwrap();
    for name in &graph.names {
        let Ok(qname) = Name::from_ascii(format!("{name}.")) else { continue };
        for qtype in TYPES {
            let mut q = Message::query();
            q.metadata.id = 7;
            q.add_query(Query::query(qname.clone(), qtype));
            let Handled::Reply(bytes) = handle(&view, &q.to_vec().unwrap(), Transport::Tcp, Recursion::Allowed) else {
                panic!("{name} {qtype}: not answered");
            };
            let r = Message::from_vec(&bytes).unwrap();
            assert!(
                matches!(r.metadata.response_code, ResponseCode::NoError | ResponseCode::NXDomain | ResponseCode::NotImp),
                "{name} {qtype}: {:?}",
                r.metadata.response_code
            );
            let cnames = r.answers.iter().filter(|a| a.record_type() == RecordType::CNAME).count();
            assert!(cnames <= dns::lookup::MAX_CNAME_CHAIN + 1, "{name} {qtype}: {cnames} CNAMEs");
        }
    }
}

#[test]
fn an_external_name_naming_itself_or_a_loop_is_answered() {
    // Service s0 (default) -> s0.default (itself); s1 <-> s2 through both namespaces.
    check_graph(&[3, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 3, 1, 0, 1, 1, 1, 2, 0, 0]);
    check_graph(&[]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
    #[test]
    fn every_query_over_any_object_graph_is_answered(data in proptest::collection::vec(any::<u8>(), 0..96)) {
        check_graph(&data);
    }
}
