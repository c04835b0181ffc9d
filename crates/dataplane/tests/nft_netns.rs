//! nftset transactions against the real kernel, in a namespace of the test's own (root, nft).

#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a line number

use dataplane::netns::{self, NamedNetns};
use nftset::{Chain, Family, Ruleset, Set, Table};

fn ready() -> bool {
    let ok = nix::unistd::geteuid().is_root() && std::process::Command::new("nft").arg("--version").output().is_ok();
    if !ok {
        testkit::skip("needs root and nft");
    }
    ok
}

fn ruleset(elements: &[(&str, &str)]) -> Ruleset {
    let mut t = Table::default();
    t.chains.insert(
        "prerouting".into(),
        Chain { base: Some("type nat hook prerouting priority -100; policy accept;".into()), rules: vec!["jump services".into()] },
    );
    t.chains.insert("services".into(), Chain { base: None, rules: vec!["ip daddr . meta l4proto . th dport vmap @service-ips".into()] });
    t.chains.insert(
        "class-1".into(),
        Chain { base: None, rules: vec!["dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 1 map @endpoints".into()] },
    );
    t.sets.insert(
        "service-ips".into(),
        Set {
            is_map: true,
            spec: "type ipv4_addr . inet_proto . inet_service : verdict;".into(),
            elements: elements.iter().map(|(vip, _)| (format!("{vip} . tcp . 80"), Some("goto class-1".to_owned()))).collect(),
            comments: elements.iter().map(|(vip, _)| (format!("{vip} . tcp . 80"), format!("shop/svc-{vip}:http"))).collect(),
        },
    );
    t.sets.insert(
        "endpoints".into(),
        Set {
            is_map: true,
            spec: "typeof ip daddr . meta l4proto . th dport . numgen random mod 1 : ip daddr . th dport;".into(),
            elements: elements.iter().map(|(vip, ep)| (format!("{vip} . tcp . 80 . 0"), Some(format!("{ep} . 8080")))).collect(),
            ..Default::default()
        },
    );
    let mut r = Ruleset::default();
    r.tables.insert((Family::Ip, "podnet-test".into()), t);
    r
}

#[test]
fn full_sync_then_differences_reach_the_kernel() {
    if !ready() {
        return;
    }
    let ns = NamedNetns::new(&format!("pnnft{}", std::process::id())).unwrap();
    let path = ns.path().to_owned();
    netns::run_in(&path, || {
        let v1 = ruleset(&[("10.96.0.10", "10.244.0.2"), ("10.96.0.11", "10.244.0.3")]);
        dataplane::nft::sync(None, &v1).unwrap();
        let listed = dataplane::nft::list_table(Family::Ip, "podnet-test").unwrap().unwrap();
        assert!(listed.contains("10.96.0.10 . tcp . 80 comment \"shop/svc-10.96.0.10:http\" : goto class-1"), "{listed}");
        let v2 = ruleset(&[("10.96.0.10", "10.244.0.9"), ("10.96.0.12", "10.244.0.4")]);
        dataplane::nft::sync(Some(&v1), &v2).unwrap();
        let listed = dataplane::nft::list_table(Family::Ip, "podnet-test").unwrap().unwrap();
        assert!(listed.contains("10.96.0.12 . tcp . 80 comment \"shop/svc-10.96.0.12:http\" : goto class-1") && !listed.contains("10.96.0.11"), "{listed}");
        assert!(listed.contains("10.244.0.9 . 8080") && !listed.contains("10.244.0.2 . 8080"), "{listed}");
        // A full re-sync over an existing table replaces it.
        dataplane::nft::sync(None, &v1).unwrap();
        let listed = dataplane::nft::list_table(Family::Ip, "podnet-test").unwrap().unwrap();
        assert!(listed.contains("10.96.0.11") && !listed.contains("10.96.0.12"), "{listed}");
        dataplane::nft::apply(&v1.delete_script()).unwrap();
        assert!(dataplane::nft::list_table(Family::Ip, "podnet-test").unwrap().is_none());
        // The first load's netlink element batches carry the comments too.
        assert_eq!(dataplane::nft::load(&v2).unwrap(), dataplane::nft::Loaded::Batched);
        let listed = dataplane::nft::list_table(Family::Ip, "podnet-test").unwrap().unwrap();
        assert!(listed.contains("10.96.0.12 . tcp . 80 comment \"shop/svc-10.96.0.12:http\" : goto class-1"), "{listed}");
        dataplane::nft::apply(&v2.delete_script()).unwrap();
    })
    .unwrap();
}

#[test]
fn a_session_applies_whole_transactions_and_reports_failed_ones() {
    if !ready() {
        return;
    }
    let ns = NamedNetns::new(&format!("pnnfts{}", std::process::id())).unwrap();
    let path = ns.path().to_owned();
    netns::run_in(&path, || {
        let v1 = ruleset(&[("10.96.0.10", "10.244.0.2")]);
        dataplane::nft::sync(None, &v1).unwrap();
        let mut session = dataplane::nft::Session::start().unwrap();
        let v2 = ruleset(&[("10.96.0.10", "10.244.0.9"), ("10.96.0.12", "10.244.0.4")]);
        session.apply(&nftset::transaction(&v1, &v2).unwrap()).unwrap();
        let listed = dataplane::nft::list_table(Family::Ip, "podnet-test").unwrap().unwrap();
        assert!(listed.contains("10.244.0.9 . 8080") && listed.contains("10.96.0.12 . tcp . 80") && !listed.contains("10.244.0.2"), "{listed}");
        // A transaction with a bad command fails whole: its good command does not land either.
        let bad = "add element ip podnet-test service-ips { 10.96.0.13 . tcp . 80 : goto class-1 }\ndelete element ip podnet-test service-ips { 10.96.9.9 . tcp . 80 : goto class-1 }\n";
        let err = session.apply(bad).unwrap_err().to_string();
        assert!(err.contains("No such file or directory"), "{err}");
        let listed = dataplane::nft::list_table(Family::Ip, "podnet-test").unwrap().unwrap();
        assert!(!listed.contains("10.96.0.13"), "{listed}");
        // The session goes on after a failure.
        session.apply("add element ip podnet-test service-ips { 10.96.0.14 . tcp . 80 : goto class-1 }").unwrap();
        assert!(dataplane::nft::list_table(Family::Ip, "podnet-test").unwrap().unwrap().contains("10.96.0.14"));
    })
    .unwrap();
}
