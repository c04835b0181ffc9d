//! The Kubernetes DNS specification's records, one test per kind, through the wire: a query is
//! encoded, answered by `message::handle`, and the response decoded.

#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a line number

use std::path::Path;

use dns::message::{Handled, Recursion, Transport, handle};
use dns::{PodsMode, View, ZoneConfig};
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: production}
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system}
spec: {clusterIP: 10.96.0.10, ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53}]}
---
apiVersion: v1
kind: Service
metadata: {name: order-service, namespace: production}
spec: {clusterIP: 10.96.0.50, selector: {app: order}, ports: [{name: http, port: 80, targetPort: 8080}, {name: metrics, port: 9090}]}
---
apiVersion: v1
kind: Pod
metadata: {name: order-1, namespace: production, labels: {app: order}}
spec: {containers: [{name: c}]}
status: {podIP: 10.244.1.5, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: order-2, namespace: production, labels: {app: order}}
spec: {containers: [{name: c}]}
status: {podIP: 10.244.2.6, conditions: [{type: Ready, status: "False"}]}
---
apiVersion: v1
kind: Service
metadata: {name: dual, namespace: default}
spec: {clusterIP: 10.96.0.60, clusterIPs: [10.96.0.60, "fd00:10:96::60"], ipFamilies: [IPv4, IPv6], ipFamilyPolicy: RequireDualStack, ports: [{name: web, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: production}
spec: {clusterIP: None, selector: {app: db}, ports: [{name: postgres, port: 5432}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: production, labels: {app: db}}
spec: {hostname: db-0, subdomain: db, containers: [{name: c}]}
status: {podIP: 10.244.1.7, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, namespace: production, labels: {app: db}}
spec: {containers: [{name: c}]}
status: {podIP: 10.244.2.8, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db-2, namespace: production, labels: {app: db}}
spec: {containers: [{name: c}]}
status: {podIP: 10.244.2.9, conditions: [{type: Ready, status: "False"}]}
---
apiVersion: v1
kind: Service
metadata: {name: nobody, namespace: production}
spec: {clusterIP: None, selector: {app: nobody}}
---
apiVersion: v1
kind: Service
metadata: {name: early, namespace: production}
spec: {clusterIP: None, publishNotReadyAddresses: true, selector: {app: early}}
---
apiVersion: v1
kind: Pod
metadata: {name: early-0, namespace: production, labels: {app: early}}
spec: {containers: [{name: c}]}
status: {podIP: 10.244.3.3, conditions: [{type: Ready, status: "False"}]}
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: default}
spec: {type: ExternalName, externalName: www.example.com.}
---
apiVersion: v1
kind: Service
metadata: {name: inside, namespace: default}
spec: {type: ExternalName, externalName: order-service.production.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: given, namespace: default}
spec: {clusterIP: None, ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: given-1, namespace: default, labels: {kubernetes.io/service-name: given}}
addressType: IPv6
endpoints:
- {addresses: ["fd00:10:244::5"], hostname: web-a}
- {addresses: ["fd00:10:244::6"], conditions: {ready: true, terminating: true}}
- {addresses: ["fd00:10:244::7"], conditions: {ready: false}}
ports: [{name: http, port: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: ServiceCIDR
metadata: {name: kubernetes}
spec: {cidrs: [10.96.0.0/16, "fd00:10:96::/112"]}
"#;

fn view(pods: PodsMode) -> View {
    let objects = model::load_str(CLUSTER, Path::new("cluster.yaml")).unwrap();
    let state = model::ClusterState::from_objects(&objects).unwrap();
    View::build(&state, &ZoneConfig { pods, ..Default::default() }, 7).unwrap()
}

/// The response's code and its sections as zone-file lines (answers, then authority, then additional).
fn ask_with(view: &View, name: &str, qtype: RecordType, recursion: Recursion) -> (ResponseCode, Vec<String>, Vec<String>, Vec<String>) {
    let mut q = Message::query();
    q.metadata.id = 4242;
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    let Handled::Reply(bytes) = handle(view, &q.to_vec().unwrap(), Transport::Udp, recursion) else { panic!("{name} {qtype}: not answered") };
    let r = Message::from_vec(&bytes).unwrap();
    assert_eq!(r.metadata.id, 4242);
    let text = |rs: &[hickory_proto::rr::Record]| rs.iter().map(|r| r.to_string()).collect::<Vec<_>>();
    (r.metadata.response_code, text(&r.answers), text(&r.authorities), text(&r.additionals))
}

fn ask(view: &View, name: &str, qtype: RecordType) -> (ResponseCode, Vec<String>) {
    let (rcode, answers, _, _) = ask_with(view, name, qtype, Recursion::Allowed);
    (rcode, answers)
}

#[test]
fn schema_version_txt() {
    let v = view(PodsMode::Disabled);
    assert_eq!(
        ask(&v, "dns-version.cluster.local.", RecordType::TXT),
        (ResponseCode::NoError, vec!["dns-version.cluster.local. 28800 IN TXT 1.1.0".to_string()])
    );
}

#[test]
fn cluster_ip_a_aaaa_and_their_absence() {
    let v = view(PodsMode::Disabled);
    assert_eq!(ask(&v, "order-service.production.svc.cluster.local.", RecordType::A).1, ["order-service.production.svc.cluster.local. 5 IN A 10.96.0.50"]);
    // Case-insensitive, answered under the name as asked.
    assert_eq!(ask(&v, "Order-Service.PRODUCTION.svc.Cluster.Local.", RecordType::A).1, ["Order-Service.PRODUCTION.svc.Cluster.Local. 5 IN A 10.96.0.50"]);
    assert_eq!(ask(&v, "dual.default.svc.cluster.local.", RecordType::AAAA).1, ["dual.default.svc.cluster.local. 5 IN AAAA fd00:10:96::60"]);
    assert_eq!(ask(&v, "dual.default.svc.cluster.local.", RecordType::A).1, ["dual.default.svc.cluster.local. 5 IN A 10.96.0.60"]);
    // The name exists without an AAAA: NODATA, with the SOA.
    let (rcode, answers, authority, _) = ask_with(&v, "order-service.production.svc.cluster.local.", RecordType::AAAA, Recursion::Allowed);
    assert_eq!((rcode, answers.len()), (ResponseCode::NoError, 0));
    assert_eq!(authority, ["cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 7 7200 1800 86400 5"]);
    let (rcode, _, authority, _) = ask_with(&v, "missing.production.svc.cluster.local.", RecordType::A, Recursion::Allowed);
    assert_eq!((rcode, authority.len()), (ResponseCode::NXDomain, 1));
}

#[test]
fn srv_for_named_ports_with_addresses_in_additional() {
    let v = view(PodsMode::Disabled);
    let (rcode, answers, _, additional) = ask_with(&v, "_http._tcp.order-service.production.svc.cluster.local.", RecordType::SRV, Recursion::Allowed);
    assert_eq!(rcode, ResponseCode::NoError);
    assert_eq!(answers, ["_http._tcp.order-service.production.svc.cluster.local. 5 IN SRV 0 100 80 order-service.production.svc.cluster.local."]);
    assert_eq!(additional, ["order-service.production.svc.cluster.local. 5 IN A 10.96.0.50"]);
    assert_eq!(ask(&v, "_http._udp.order-service.production.svc.cluster.local.", RecordType::SRV).0, ResponseCode::NXDomain);
    // Headless: one per ready endpoint, the endpoint's port, its hostname (or dashed address).
    let (_, answers, _, additional) = ask_with(&v, "_postgres._tcp.db.production.svc.cluster.local.", RecordType::SRV, Recursion::Allowed);
    assert_eq!(
        answers,
        [
            "_postgres._tcp.db.production.svc.cluster.local. 5 IN SRV 0 50 5432 db-0.db.production.svc.cluster.local.",
            "_postgres._tcp.db.production.svc.cluster.local. 5 IN SRV 0 50 5432 10-244-2-8.db.production.svc.cluster.local."
        ]
    );
    assert_eq!(additional.len(), 2);
}

#[test]
fn headless_records_per_ready_endpoint() {
    let v = view(PodsMode::Disabled);
    let (rcode, mut answers) = ask(&v, "db.production.svc.cluster.local.", RecordType::A);
    answers.sort();
    assert_eq!(rcode, ResponseCode::NoError);
    assert_eq!(answers, ["db.production.svc.cluster.local. 5 IN A 10.244.1.7", "db.production.svc.cluster.local. 5 IN A 10.244.2.8"]);
    assert_eq!(ask(&v, "db-0.db.production.svc.cluster.local.", RecordType::A).1, ["db-0.db.production.svc.cluster.local. 5 IN A 10.244.1.7"]);
    assert_eq!(ask(&v, "10-244-2-8.db.production.svc.cluster.local.", RecordType::A).1, ["10-244-2-8.db.production.svc.cluster.local. 5 IN A 10.244.2.8"]);
    // Not ready (db-2) is not there; no ready endpoint at all is NXDOMAIN.
    assert_eq!(ask(&v, "10-244-2-9.db.production.svc.cluster.local.", RecordType::A).0, ResponseCode::NXDomain);
    assert_eq!(ask(&v, "nobody.production.svc.cluster.local.", RecordType::A).0, ResponseCode::NXDomain);
    // publishNotReadyAddresses publishes the not-ready pod.
    assert_eq!(ask(&v, "early.production.svc.cluster.local.", RecordType::A).1, ["early.production.svc.cluster.local. 5 IN A 10.244.3.3"]);
    // Given slices as given: ready-absent is ready, terminating and not-ready are left out.
    assert_eq!(ask(&v, "given.default.svc.cluster.local.", RecordType::AAAA).1, ["given.default.svc.cluster.local. 5 IN AAAA fd00:10:244::5"]);
    assert_eq!(ask(&v, "web-a.given.default.svc.cluster.local.", RecordType::AAAA).1, ["web-a.given.default.svc.cluster.local. 5 IN AAAA fd00:10:244::5"]);
}

#[test]
fn ptr_for_cluster_ips_and_endpoints_and_unknown_addresses() {
    let v = view(PodsMode::Disabled);
    assert_eq!(ask(&v, "50.0.96.10.in-addr.arpa.", RecordType::PTR).1, ["50.0.96.10.in-addr.arpa. 5 IN PTR order-service.production.svc.cluster.local."]);
    assert_eq!(ask(&v, "7.1.244.10.in-addr.arpa.", RecordType::PTR).1, ["7.1.244.10.in-addr.arpa. 5 IN PTR db-0.db.production.svc.cluster.local."]);
    let v6 = dns::lookup::reverse_name("fd00:10:96::60".parse().unwrap()).to_ascii();
    assert_eq!(ask(&v, &v6, RecordType::PTR).1, [format!("{v6} 5 IN PTR dual.default.svc.cluster.local.")]);
    // An unallocated ServiceCIDR address is ours: NXDOMAIN; an outside one is forwarded.
    assert_eq!(ask(&v, "99.9.96.10.in-addr.arpa.", RecordType::PTR).0, ResponseCode::NXDomain);
    let mut q = Message::query();
    q.add_query(Query::query(Name::from_ascii("8.8.8.8.in-addr.arpa.").unwrap(), RecordType::PTR));
    assert!(matches!(handle(&v, &q.to_vec().unwrap(), Transport::Udp, Recursion::Allowed), Handled::Forward(_)));
}

#[test]
fn external_name_is_a_cname_chased_inside_the_zone() {
    let v = view(PodsMode::Disabled);
    assert_eq!(ask(&v, "ext.default.svc.cluster.local.", RecordType::A).1, ["ext.default.svc.cluster.local. 5 IN CNAME www.example.com."]);
    assert_eq!(ask(&v, "ext.default.svc.cluster.local.", RecordType::CNAME).1, ["ext.default.svc.cluster.local. 5 IN CNAME www.example.com."]);
    assert_eq!(
        ask(&v, "inside.default.svc.cluster.local.", RecordType::A).1,
        [
            "inside.default.svc.cluster.local. 5 IN CNAME order-service.production.svc.cluster.local.",
            "order-service.production.svc.cluster.local. 5 IN A 10.96.0.50"
        ]
    );
}

#[test]
fn apex_soa_ns_and_empty_non_terminals() {
    let v = view(PodsMode::Disabled);
    assert_eq!(ask(&v, "cluster.local.", RecordType::SOA).1, ["cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 7 7200 1800 86400 5"]);
    let (_, answers, _, additional) = ask_with(&v, "cluster.local.", RecordType::NS, Recursion::Allowed);
    assert_eq!(
        (answers, additional),
        (vec!["cluster.local. 5 IN NS ns.dns.cluster.local.".to_string()], vec!["ns.dns.cluster.local. 5 IN A 10.96.0.10".to_string()])
    );
    assert_eq!(ask(&v, "ns.dns.cluster.local.", RecordType::A).1, ["ns.dns.cluster.local. 5 IN A 10.96.0.10"]);
    for ent in ["svc.cluster.local.", "production.svc.cluster.local.", "cluster.local."] {
        assert_eq!(ask(&v, ent, RecordType::A), (ResponseCode::NoError, vec![]), "{ent}");
    }
    assert_eq!(ask(&v, "nonexistent-ns.svc.cluster.local.", RecordType::A).0, ResponseCode::NXDomain);
    assert_eq!(ask(&v, "a.b.c.d.e.f.svc.cluster.local.", RecordType::A).0, ResponseCode::NXDomain);
}

#[test]
fn pod_records_follow_the_pods_option() {
    let name = "10-244-1-5.production.pod.cluster.local.";
    assert_eq!(ask(&view(PodsMode::Disabled), name, RecordType::A).0, ResponseCode::NXDomain);
    assert_eq!(ask(&view(PodsMode::Insecure), name, RecordType::A).1, [format!("{name} 5 IN A 10.244.1.5")]);
    assert_eq!(ask(&view(PodsMode::Insecure), "10-1-2-3.production.pod.cluster.local.", RecordType::A).0, ResponseCode::NoError);
    assert_eq!(ask(&view(PodsMode::Verified), name, RecordType::A).1, [format!("{name} 5 IN A 10.244.1.5")]);
    // Verified: the pod must be in that namespace.
    assert_eq!(ask(&view(PodsMode::Verified), "10-1-2-3.production.pod.cluster.local.", RecordType::A).0, ResponseCode::NXDomain);
    assert_eq!(ask(&view(PodsMode::Verified), "10-244-1-5.default.pod.cluster.local.", RecordType::A).0, ResponseCode::NXDomain);
}

#[test]
fn protocol_errors_get_their_codes() {
    let v = view(PodsMode::Disabled);
    let rcode = |bytes: Vec<u8>| match handle(&v, &bytes, Transport::Udp, Recursion::Allowed) {
        Handled::Reply(r) => Message::from_vec(&r).unwrap().metadata.response_code,
        other => panic!("{other:?}"),
    };
    let query = |name: &str, qtype: RecordType| {
        let mut q = Message::query();
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        q
    };
    assert_eq!(rcode(query("order-service.production.svc.cluster.local.", RecordType::ANY).to_vec().unwrap()), ResponseCode::NotImp);
    assert_eq!(rcode(query("cluster.local.", RecordType::AXFR).to_vec().unwrap()), ResponseCode::Refused);
    let mut chaos = query("version.bind.", RecordType::TXT);
    chaos.queries[0].set_query_class(hickory_proto::rr::DNSClass::CH);
    assert_eq!(rcode(chaos.to_vec().unwrap()), ResponseCode::Refused);
    let mut two = query("a.cluster.local.", RecordType::A);
    two.add_query(Query::query(Name::from_ascii("b.cluster.local.").unwrap(), RecordType::A));
    assert_eq!(rcode(two.to_vec().unwrap()), ResponseCode::FormErr);
    let mut none = query("a.cluster.local.", RecordType::A);
    none.queries.clear();
    assert_eq!(rcode(none.to_vec().unwrap()), ResponseCode::FormErr);
    let mut notify = query("cluster.local.", RecordType::SOA);
    notify.metadata.op_code = hickory_proto::op::OpCode::Notify;
    assert_eq!(rcode(notify.to_vec().unwrap()), ResponseCode::NotImp);
    // Garbage after a header: FORMERR with the id; a response or a runt: nothing.
    let mut garbage = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    garbage.extend([0xff; 7]);
    assert_eq!(rcode(garbage.clone()), ResponseCode::FormErr);
    garbage[2] |= 0x80;
    assert!(matches!(handle(&v, &garbage, Transport::Udp, Recursion::Allowed), Handled::Drop));
    assert!(matches!(handle(&v, &[1, 2, 3], Transport::Udp, Recursion::Allowed), Handled::Drop));
    // Names outside the zone from a source that may not recurse: REFUSED.
    assert_eq!(ask_with(&v, "example.com.", RecordType::A, Recursion::Refused).0, ResponseCode::Refused);
}

#[test]
fn edns_is_answered_with_edns_and_big_answers_are_truncated_over_udp() {
    let objects = model::load_str(CLUSTER, Path::new("c.yaml")).unwrap();
    let mut state = model::ClusterState::from_objects(&objects).unwrap();
    // A headless Service with 100 ready endpoints: more than 512 bytes of A records.
    let mut slice = state.endpoint_slices[0].clone();
    slice.object.metadata.labels.as_mut().unwrap().insert("kubernetes.io/service-name".into(), "big".into());
    slice.object.address_type = "IPv4".into();
    slice.object.endpoints =
        (0..100).map(|i| k8s_openapi::api::discovery::v1::Endpoint { addresses: vec![format!("10.244.9.{i}")], ..Default::default() }).collect();
    state.endpoint_slices.push(slice);
    let mut big = state.services.iter().find(|s| s.name == "given").unwrap().clone();
    big.name = "big".into();
    state.services.push(big);
    let v = View::build(&state, &ZoneConfig::default(), 1).unwrap();
    let mut q = Message::query();
    q.add_query(Query::query(Name::from_ascii("big.default.svc.cluster.local.").unwrap(), RecordType::A));
    let Handled::Reply(small) = handle(&v, &q.to_vec().unwrap(), Transport::Udp, Recursion::Allowed) else { panic!() };
    let small = Message::from_vec(&small).unwrap();
    assert!(small.metadata.truncation && small.answers.is_empty() && small.edns.is_none());
    let Handled::Reply(tcp) = handle(&v, &q.to_vec().unwrap(), Transport::Tcp, Recursion::Allowed) else { panic!() };
    assert_eq!(Message::from_vec(&tcp).unwrap().answers.len(), 100);
    // With EDNS (4096 asked, 1232 given): 100 A records (~1.6 kB) still do not fit; 50 would.
    let mut e = Edns::new();
    e.set_max_payload(4096);
    q.set_edns(e);
    let Handled::Reply(edns) = handle(&v, &q.to_vec().unwrap(), Transport::Udp, Recursion::Allowed) else { panic!() };
    let edns = Message::from_vec(&edns).unwrap();
    assert!(edns.metadata.truncation);
    assert_eq!(edns.edns.as_ref().map(|e| e.max_payload()), Some(dns::message::MAX_UDP_PAYLOAD));
}

#[test]
fn a_formerr_for_a_bad_edns_option_is_not_kept_for_the_same_question() {
    use dns::forward::{ForwardConfig, Forwarder};
    use dns::server::Shared;
    let shared = Shared::new(view(PodsMode::Disabled), Forwarder::new(ForwardConfig::default()), None);
    // Found by fuzzing: an OPT record whose option is one byte long.
    let mut bad = Message::query();
    bad.metadata.id = 1;
    bad.add_query(Query::query(Name::from_ascii("order-service.production.svc.cluster.local.").unwrap(), RecordType::A));
    bad.set_edns(Edns::new());
    let mut bytes = bad.to_vec().unwrap();
    let n = bytes.len();
    bytes[n - 1] = 1; // rdlen 1
    bytes.push(b't');
    let source = "127.0.0.1".parse().unwrap();
    let Handled::Reply(r) = shared.answer(&bytes, Transport::Udp, source) else { panic!() };
    assert_eq!(Message::from_vec(&r).unwrap().metadata.response_code, ResponseCode::FormErr);
    let good = bad.to_vec().unwrap();
    for _ in 0..2 {
        let Handled::Reply(r) = shared.answer(&good, Transport::Udp, source) else { panic!() };
        assert_eq!(Message::from_vec(&r).unwrap().answers.len(), 1);
    }
}

/// ExternalName Services are user data that can point at each other; the chase through the
/// zone is CoreDNS's: loops and over-long chains end it, and a chain that does not end in
/// records is not answered (NOERROR, no data), never followed for ever.
fn external_names(links: &[(&str, &str)]) -> View {
    let mut yaml = String::new();
    for (name, target) in links {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{type: ExternalName, externalName: {target}}}\n"
        ));
    }
    yaml.push_str("---\napiVersion: v1\nkind: Service\nmetadata: {name: real, namespace: default}\nspec: {clusterIP: 10.96.0.9, ports: [{port: 80}]}\n");
    let objects = model::load_str(&yaml, Path::new("loops.yaml")).unwrap();
    View::build(&model::ClusterState::from_objects(&objects).unwrap(), &ZoneConfig::default(), 1).unwrap()
}

#[test]
fn external_name_loops_end_without_an_answer() {
    let v = external_names(&[
        ("self", "self.default.svc.cluster.local"),
        ("ping", "pong.default.svc.cluster.local"),
        ("pong", "ping.default.svc.cluster.local"),
        ("a", "b.default.svc.cluster.local"),
        ("b", "c.default.svc.cluster.local"),
        ("c", "a.default.svc.cluster.local"),
    ]);
    for name in ["self", "ping", "pong", "a", "b", "c"] {
        for qtype in [RecordType::A, RecordType::AAAA] {
            let (rcode, answers) = ask(&v, &format!("{name}.default.svc.cluster.local."), qtype);
            assert_eq!((rcode, answers.len()), (ResponseCode::NoError, 0), "{name} {qtype}: {answers:?}");
        }
        // The CNAME itself is still there to ask for.
        let (_, cname) = ask(&v, &format!("{name}.default.svc.cluster.local."), RecordType::CNAME);
        assert_eq!(cname.len(), 1, "{name}: {cname:?}");
    }
}

#[test]
fn external_name_chains_are_followed_up_to_coredns_limit() {
    // s0 -> s1 -> ... -> sN -> real (a ClusterIP).
    let chain = |n: usize| {
        let names: Vec<String> = (0..=n).map(|i| format!("s{i}")).collect();
        let targets: Vec<String> =
            (0..=n).map(|i| if i == n { "real.default.svc.cluster.local".into() } else { format!("s{}.default.svc.cluster.local", i + 1) }).collect();
        (names, targets)
    };
    let (names, targets) = chain(10);
    let links: Vec<(&str, &str)> = names.iter().map(String::as_str).zip(targets.iter().map(String::as_str)).collect();
    let v = external_names(&links);
    // Eleven CNAMEs then the address: within the limit.
    let (rcode, answers) = ask(&v, "s0.default.svc.cluster.local.", RecordType::A);
    assert_eq!(rcode, ResponseCode::NoError);
    assert_eq!(answers.len(), 12, "{answers:?}");
    assert_eq!(answers.last().unwrap(), "real.default.svc.cluster.local. 5 IN A 10.96.0.9");
    let (names, targets) = chain(40);
    let links: Vec<(&str, &str)> = names.iter().map(String::as_str).zip(targets.iter().map(String::as_str)).collect();
    let v = external_names(&links);
    // Too long from the start; answered from further along.
    assert_eq!(ask(&v, "s0.default.svc.cluster.local.", RecordType::A).1.len(), 0);
    assert_eq!(ask(&v, "s35.default.svc.cluster.local.", RecordType::A).1.len(), 7);
    // Twelve CNAMEs: one past the limit.
    assert_eq!(ask(&v, "s29.default.svc.cluster.local.", RecordType::A).1.len(), 0);
    assert_eq!(ask(&v, "s30.default.svc.cluster.local.", RecordType::A).1.len(), 12);
}

/// CoreDNS's `pods verified` leaves out pods in the process of termination (a deletionTimestamp):
/// their address answers NXDOMAIN, as a pod that does not exist.
#[test]
fn verified_pod_records_leave_out_terminating_pods() {
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: going, namespace: production, deletionTimestamp: '2026-01-01T00:00:00Z'}\nspec: {containers: [{name: c}]}\nstatus: {podIP: 10.244.3.3}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: staying, namespace: production}\nspec: {containers: [{name: c}]}\nstatus: {podIP: 10.244.3.4}\n";
    let objects = model::load_str(yaml, Path::new("pods.yaml")).unwrap();
    let state = model::ClusterState::from_objects(&objects).unwrap();
    let verified = View::build(&state, &ZoneConfig { pods: PodsMode::Verified, ..Default::default() }, 1).unwrap();
    assert_eq!(ask(&verified, "10-244-3-3.production.pod.cluster.local.", RecordType::A).0, ResponseCode::NXDomain);
    assert_eq!(ask(&verified, "10-244-3-4.production.pod.cluster.local.", RecordType::A).1, ["10-244-3-4.production.pod.cluster.local. 5 IN A 10.244.3.4"]);
    let insecure = View::build(&state, &ZoneConfig { pods: PodsMode::Insecure, ..Default::default() }, 1).unwrap();
    assert_eq!(ask(&insecure, "10-244-3-3.production.pod.cluster.local.", RecordType::A).0, ResponseCode::NoError, "insecure answers any address");
}
