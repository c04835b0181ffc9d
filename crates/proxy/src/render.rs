//! A node's plan as nftables: one table per family (`podnet-proxy`) with a fixed, small set of
//! chains, and every service, frontend and endpoint as a set or map element, so that a change
//! of services is a change of elements (docs/proxy-layout.md has the measurements behind this).
//!
//! A first packet goes: `services` (marks it for masquerade where kube-proxy would) → verdict
//! map `frontends` keyed `daddr . l4proto . dport` → a class chain per endpoint count
//! (`cluster-E` / `local-E`) that DNATs through `numgen random mod E` into a map keyed with the
//! same frontend and the bucket. `externalTrafficPolicy: Local` frontends go through
//! `external-local`, which short-circuits pods and the node to every endpoint. Filter chains
//! REJECT frontends without endpoints and unknown ports of live ClusterIPs, DROP unallocated
//! ServiceCIDR addresses and LoadBalancer traffic from outside its source ranges.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use nftset::{Chain, Family, Ruleset, Set, Table};

use crate::plan::{NodePlan, PortPlan};
use crate::topology::Endpoint;

/// The tables' name (one per family).
pub const TABLE: &str = "podnet-proxy";

/// The packet mark bit that asks for masquerade in postrouting (kube-proxy's 0x4000).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// Endpoint counts whose class chains every table has, used or not. nft 1.0.6 cannot add a rule
/// that looks up a `typeof … numgen` map already in the kernel ("conflicting protocols"), so
/// class chains are made only by full loads: with these always there, an endpoint count up to
/// this many never needs one.
pub const FIXED_CLASSES: usize = 16;

/// The nft spellings of one address family.
#[derive(Debug)]
struct Fam {
    family: Family,
    /// Payload protocol (`ip` / `ip6`).
    proto: &'static str,
    /// Address type (`ipv4_addr` / `ipv6_addr`).
    addr: &'static str,
    v6: bool,
}

const V4: Fam = Fam { family: Family::Ip, proto: "ip", addr: "ipv4_addr", v6: false };
const V6: Fam = Fam { family: Family::Ip6, proto: "ip6", addr: "ipv6_addr", v6: true };

impl Fam {
    fn has(&self, ip: &IpAddr) -> bool {
        ip.is_ipv6() == self.v6
    }
}

/// A frontend's map key: `daddr . proto . dport`.
fn key(ip: IpAddr, protocol: model::Protocol, port: u16) -> String {
    format!("{ip} . {} . {port}", protocol.as_str().to_ascii_lowercase())
}

/// An endpoint as a map value: `ip . port`.
fn endpoint_value(ep: &Endpoint) -> Option<(IpAddr, String)> {
    let (ip, port) = ep.ip_port()?;
    Some((ip, format!("{ip} . {port}")))
}

/// Which endpoint list a class chain DNATs into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Pool {
    Cluster,
    Local,
}

impl Pool {
    fn name(self) -> &'static str {
        match self {
            Pool::Cluster => "cluster",
            Pool::Local => "local",
        }
    }

    fn endpoints_map(self) -> &'static str {
        match self {
            Pool::Cluster => "cluster-endpoints",
            Pool::Local => "local-endpoints",
        }
    }

    fn chain(self, count: usize) -> String {
        format!("{}-{count}", self.name())
    }
}

// The sets and maps that hold Services.
const FRONTENDS: &str = "frontends";
const CLUSTER_FRONTENDS: &str = "cluster-frontends";
const LOCAL_FRONTENDS: &str = "local-frontends";
const NO_ENDPOINTS: &str = "no-endpoints";
const MASQUERADE_FRONTENDS: &str = "masquerade-frontends";
const FIREWALL: &str = "firewall";
const FIREWALL_ALLOW: &str = "firewall-allow";
const HAIRPIN: &str = "hairpin";
const CLUSTER_IPS: &str = "cluster-ips";
const AFFINITY_IDS: &str = "affinity-ids";
const AFFINITY_KEYS: &str = "affinity-keys";
/// The map the packet path writes: client . frontend address . protocol . affinity id → endpoint.
pub const AFFINITY: &str = "affinity";
/// ClientIP affinity timeouts whose chains every table has.
const FIXED_TIMEOUTS: [u32; 1] = [10_800];

/// ClientIP affinity is programmed in the IPv4 table only: nft 1.0.6 (Debian 12) aborts compiling
/// any `update @map` whose key or data concatenation is wider than 16 bytes
/// (`netlink_gen_expr: Assertion 'dreg < ctx->reg_low' failed`), and an IPv6 client . endpoint
/// pair is wider. IPv6 frontends of an affinity Service are load-balanced without stickiness
/// rather than leaving the whole ip6 table unloadable.
fn has_affinity(fam: &Fam) -> bool {
    !fam.v6
}

/// One Service's elements in one family, gathered from its ports.
#[derive(Default)]
struct Elements {
    frontends: BTreeMap<String, String>,
    cluster_frontends: BTreeMap<String, String>,
    local_frontends: BTreeMap<String, String>,
    endpoints: BTreeMap<Pool, BTreeMap<String, String>>,
    classes: BTreeSet<(Pool, usize)>,
    no_endpoints: BTreeSet<String>,
    masquerade_frontends: BTreeSet<String>,
    firewall: BTreeSet<String>,
    firewall_allow: BTreeSet<String>,
    hairpin: BTreeSet<String>,
    cluster_ips: BTreeSet<String>,
    affinity_ids: BTreeMap<String, String>,
    affinity_keys: BTreeMap<String, String>,
    timeouts: BTreeSet<u32>,
    /// The Service port each key is for (`namespace/name:port`, kube-proxy's comments), one
    /// string shared by a port's keys.
    comments: BTreeMap<String, Arc<str>>,
}

/// One Service's share of a family's table: its set and map elements, and the class chains
/// they jump to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Fragment {
    elements: Vec<(&'static str, String, Option<String>)>,
    /// The Service port of each key.
    comments: BTreeMap<String, Arc<str>>,
    classes: BTreeSet<(Pool, usize)>,
    timeouts: BTreeSet<u32>,
}

impl Elements {
    fn into_fragment(self) -> Fragment {
        let mut elements = Vec::new();
        let mut maps = |name: &'static str, m: BTreeMap<String, String>| elements.extend(m.into_iter().map(|(k, v)| (name, k, Some(v))));
        maps(FRONTENDS, self.frontends);
        maps(CLUSTER_FRONTENDS, self.cluster_frontends);
        maps(LOCAL_FRONTENDS, self.local_frontends);
        maps(AFFINITY_IDS, self.affinity_ids);
        maps(AFFINITY_KEYS, self.affinity_keys);
        for (pool, m) in self.endpoints {
            maps(pool.endpoints_map(), m);
        }
        for (name, set) in [
            (NO_ENDPOINTS, self.no_endpoints),
            (MASQUERADE_FRONTENDS, self.masquerade_frontends),
            (FIREWALL, self.firewall),
            (FIREWALL_ALLOW, self.firewall_allow),
            (HAIRPIN, self.hairpin),
            (CLUSTER_IPS, self.cluster_ips),
        ] {
            elements.extend(set.into_iter().map(|k| (name, k, None)));
        }
        Fragment { elements, comments: self.comments, classes: self.classes, timeouts: self.timeouts }
    }

    /// Names the keys no port has named yet after `port` (the one just added).
    fn name_new_keys(&mut self, port: &str) {
        let maps = [&self.frontends, &self.cluster_frontends, &self.local_frontends, &self.affinity_ids, &self.affinity_keys]
            .into_iter()
            .chain(self.endpoints.values())
            .flat_map(BTreeMap::keys);
        let sets =
            [&self.no_endpoints, &self.masquerade_frontends, &self.firewall, &self.firewall_allow, &self.hairpin, &self.cluster_ips].into_iter().flatten();
        let new: Vec<String> = maps.chain(sets).filter(|k| !self.comments.contains_key(*k)).cloned().collect();
        let port: Arc<str> = port.into();
        self.comments.extend(new.into_iter().map(|k| (k, Arc::clone(&port))));
    }

    /// The verdict that sends `frontend` to `endpoints` (DROP when there are none), recording
    /// the endpoint elements and the class chain it needs.
    fn dnat(&mut self, fam: &Fam, frontend: &str, pool: Pool, endpoints: &[Endpoint]) -> String {
        let values: Vec<(IpAddr, String, bool)> =
            endpoints.iter().filter_map(|e| endpoint_value(e).map(|(ip, v)| (ip, v, e.local))).filter(|(ip, _, _)| fam.has(ip)).collect();
        if values.is_empty() {
            return "drop".into();
        }
        let map = self.endpoints.entry(pool).or_default();
        for (bucket, (ip, value, _)) in values.iter().enumerate() {
            map.insert(format!("{frontend} . {bucket}"), value.clone());
            // A pod reaching itself through a Service is masqueraded (hairpin), every endpoint
            // on every node as kube-proxy's endpoint chains do: the rules then say what the
            // plan says of any packet, also one no route would bring here.
            self.hairpin.insert(format!("{ip} . {ip}"));
        }
        self.classes.insert((pool, values.len()));
        format!("goto {}", pool.chain(values.len()))
    }

    /// ClientIP session affinity for one frontend: an id (carried in the connection's ct mark
    /// from prerouting to postrouting) that changes whenever the endpoints do, so that clients
    /// remembered for endpoints that changed are not sent there again.
    fn affinity(&mut self, ip: IpAddr, p: &PortPlan, frontend: &str) {
        let Some(timeout) = p.port.affinity_timeout else {
            return;
        };
        if ip.is_ipv6() {
            return; // see has_affinity
        }
        let mut seed = frontend.to_owned();
        for e in p.cluster.iter().chain(&p.local) {
            seed.push(' ');
            seed.push_str(&e.addr);
        }
        let id = (model::cluster::stable_hash(seed.as_bytes()) as u32) | 1;
        self.affinity_ids.insert(frontend.to_owned(), id.to_string());
        let proto = p.port.protocol.as_str().to_ascii_lowercase();
        self.affinity_keys.insert(format!("{ip} . {proto} . {id}"), format!("jump affinity-{timeout}"));
        self.timeouts.insert(timeout);
    }

    fn port(&mut self, fam: &Fam, p: &PortPlan, node_port_ips: &[IpAddr], node_ips: &[IpAddr]) {
        let port = &p.port;
        let mine = |ips: &[IpAddr]| ips.iter().copied().filter(|ip| fam.has(ip)).collect::<Vec<_>>();
        if mine(&port.cluster_ips).is_empty() {
            return; // a Service is served in the families of its ClusterIPs only
        }
        for ip in mine(&port.cluster_ips) {
            self.cluster_ips.insert(ip.to_string());
            let k = key(ip, port.protocol, port.port);
            if self.frontends.contains_key(&k) || self.no_endpoints.contains(&k) {
                continue; // the first Service to claim a frontend has it
            }
            if !p.has_endpoints_for(ip) {
                self.no_endpoints.insert(k);
                continue;
            }
            let (pool, eps) = if port.policies.internal_local { (Pool::Local, &p.local) } else { (Pool::Cluster, &p.cluster) };
            let verdict = self.dnat(fam, &k, pool, eps);
            if verdict != "drop" {
                self.affinity(ip, p, &k);
            }
            self.frontends.insert(k, verdict);
        }
        let mut external: Vec<(IpAddr, u16, bool)> = Vec::new();
        external.extend(mine(&port.external_ips).into_iter().map(|ip| (ip, port.port, false)));
        external.extend(mine(&port.load_balancer_ips).into_iter().map(|ip| (ip, port.port, true)));
        if let Some(node_port) = port.node_port {
            external.extend(node_port_ips.iter().map(|ip| (*ip, node_port, false)));
        }
        for (ip, dport, load_balancer) in external {
            let k = key(ip, port.protocol, dport);
            if self.frontends.contains_key(&k) || self.no_endpoints.contains(&k) {
                continue;
            }
            // kube-proxy's firewall: checked before DNAT (and before the no-endpoints REJECT),
            // with or without endpoints; when a range holds the node's own address, the load
            // balancer IPs are allowed sources too (a node reaching its own VIP comes from it).
            if load_balancer && let Some(allowed) = port.firewall_sources(node_ips) {
                self.firewall.insert(k.clone());
                for source in allowed.iter().filter(|n| n.addr().is_ipv6() == fam.v6) {
                    self.firewall_allow.insert(format!("{k} . {source}"));
                }
            }
            if !p.has_endpoints_for(ip) {
                self.no_endpoints.insert(k);
                continue;
            }
            self.affinity(ip, p, &k);
            if port.policies.external_local {
                let cluster = self.dnat(fam, &k, Pool::Cluster, &p.cluster);
                self.cluster_frontends.insert(k.clone(), cluster);
                let local = self.dnat(fam, &k, Pool::Local, &p.local);
                self.local_frontends.insert(k.clone(), local);
                self.frontends.insert(k, "goto external-local".into());
            } else {
                let verdict = self.dnat(fam, &k, Pool::Cluster, &p.cluster);
                self.masquerade_frontends.insert(k.clone());
                self.frontends.insert(k, verdict);
            }
        }
    }
}

fn set(spec: String, elements: impl IntoIterator<Item = String>) -> Set {
    Set { is_map: false, spec, elements: elements.into_iter().map(|e| (e, None)).collect(), ..Default::default() }
}

fn map(spec: String, elements: BTreeMap<String, String>) -> Set {
    Set { is_map: true, spec, elements: elements.into_iter().map(|(k, v)| (k, Some(v))).collect(), ..Default::default() }
}

fn base(hook: &str) -> Chain {
    Chain { base: Some(hook.to_owned()), rules: Vec::new() }
}

fn chain(rules: Vec<String>) -> Chain {
    Chain { base: None, rules }
}

impl NodePlan {
    /// The addresses of one family where this node's NodePorts listen.
    fn node_port_ips(&self, fam: &Fam) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self.node.ips.iter().copied().filter(|ip| fam.has(ip) && self.node_port_address(*ip)).collect();
        ips.dedup();
        ips
    }

    /// The node's rule set: one `podnet-proxy` table for IPv4, and one for IPv6 when the node
    /// or a Service has an IPv6 address.
    pub fn render(&self) -> Ruleset {
        Programmer::new(self).ruleset()
    }

    /// A family's table without any Service in it: its chains and the sets that come from
    /// settings and ServiceCIDRs.
    fn base_table(&self, fam: &Fam) -> Table {
        let (ip, addr) = (fam.proto, fam.addr);
        let frontend_type = format!("type {addr} . inet_proto . inet_service;");
        let frontend_map = format!("type {addr} . inet_proto . inet_service : verdict;");
        let endpoint_map = format!("typeof {ip} daddr . meta l4proto . th dport . numgen random mod 1 : {ip} daddr . th dport;");
        let frontend = format!("{ip} daddr . meta l4proto . th dport");
        let mark = format!("meta mark set meta mark | {MASQUERADE_MARK:#x}");

        let mut t = Table::default();
        let pod_cidrs: Vec<String> = self.local_cidrs(fam.v6).map(|c| c.trunc().to_string()).collect();
        let detects_local = !pod_cidrs.is_empty();
        let service_cidrs: Vec<String> = self.service_cidrs.iter().filter(|c| c.addr().is_ipv6() == fam.v6).map(|c| c.trunc().to_string()).collect();
        t.sets.insert("pod-cidrs".into(), set(format!("type {addr}; flags interval;"), pod_cidrs));
        t.sets.insert("service-cidrs".into(), set(format!("type {addr}; flags interval;"), service_cidrs));
        t.sets.insert(CLUSTER_IPS.into(), set(format!("type {addr};"), []));
        t.sets.insert(NO_ENDPOINTS.into(), set(frontend_type.clone(), []));
        t.sets.insert(MASQUERADE_FRONTENDS.into(), set(frontend_type.clone(), []));
        t.sets.insert(FIREWALL.into(), set(frontend_type, []));
        t.sets.insert(FIREWALL_ALLOW.into(), set(format!("type {addr} . inet_proto . inet_service . {addr}; flags interval;"), []));
        t.sets.insert(HAIRPIN.into(), set(format!("type {addr} . {addr};"), []));
        t.sets.insert(FRONTENDS.into(), map(frontend_map.clone(), BTreeMap::new()));
        t.sets.insert(CLUSTER_FRONTENDS.into(), map(frontend_map.clone(), BTreeMap::new()));
        t.sets.insert(LOCAL_FRONTENDS.into(), map(frontend_map, BTreeMap::new()));
        for pool in [Pool::Cluster, Pool::Local] {
            t.sets.insert(pool.endpoints_map().into(), map(endpoint_map.clone(), BTreeMap::new()));
        }
        if has_affinity(fam) {
            t.sets.insert(AFFINITY_IDS.into(), map(format!("type {addr} . inet_proto . inet_service : mark;"), BTreeMap::new()));
            t.sets.insert(AFFINITY_KEYS.into(), map(format!("type {addr} . inet_proto . mark : verdict;"), BTreeMap::new()));
            t.sets.insert(AFFINITY.into(), map(format!("type {addr} . {addr} . inet_proto . mark : {addr} . inet_service; flags timeout;"), BTreeMap::new()));
        }

        // Hooks. nft 1.0.6 takes `dstnat` only on prerouting, so priorities are numbers.
        let hooked = |hook: &str, priority: i32, target: &str| {
            let mut c =
                base(&format!("type {} hook {hook} priority {priority}; policy accept;", if priority == -100 || priority == 100 { "nat" } else { "filter" }));
            c.rules.push(target.to_owned());
            c
        };
        t.chains.insert("nat-prerouting".into(), hooked("prerouting", -100, "jump services"));
        t.chains.insert("nat-output".into(), hooked("output", -100, "jump services"));
        // The firewall, before DNAT, for traffic from outside and from the node itself.
        let firewall = format!("{frontend} @firewall {frontend} . {ip} saddr != @firewall-allow drop");
        t.chains.insert("filter-prerouting".into(), hooked("prerouting", -110, &firewall));
        t.chains.insert("filter-output-firewall".into(), hooked("output", -110, &firewall));
        for hook in ["input", "forward", "output"] {
            t.chains.insert(format!("filter-{hook}"), hooked(hook, -5, "ct state new jump checks"));
        }
        let mut postrouting = base("type nat hook postrouting priority 100; policy accept;");
        if has_affinity(fam) {
            // Remember the endpoint a new connection to an affinity frontend went to.
            postrouting.rules.push(format!("ct status dnat ct original {ip} daddr . meta l4proto . ct mark vmap @{AFFINITY_KEYS}"));
        }
        postrouting.rules.extend([
            format!("{ip} saddr . {ip} daddr @hairpin ct status dnat {mark}"),
            format!("meta mark & {MASQUERADE_MARK:#x} == 0 return"),
            format!("meta mark set meta mark ^ {MASQUERADE_MARK:#x} masquerade fully-random"),
        ]);
        t.chains.insert("nat-postrouting".into(), postrouting);

        // The packet path.
        let mut services = Vec::new();
        if self.config.masquerade_all {
            services.push(format!("{ip} daddr @cluster-ips {mark}"));
        } else if detects_local {
            // Off-cluster sources are masqueraded so that replies come back through this node.
            services.push(format!("{ip} daddr @cluster-ips {ip} saddr != @pod-cidrs {mark}"));
        }
        services.push(format!("{frontend} @masquerade-frontends {mark}"));
        if has_affinity(fam) {
            // ClientIP affinity: a remembered client goes back to its endpoint.
            services.push(format!("ct mark set {frontend} map @{AFFINITY_IDS}"));
            services.push(format!("meta l4proto {{ tcp, udp, sctp }} dnat {ip} to {ip} saddr . {ip} daddr . meta l4proto . ct mark map @{AFFINITY}"));
        }
        services.push(format!("{frontend} vmap @frontends"));
        t.chains.insert("services".into(), chain(services));
        t.chains.insert(
            "external-local".into(),
            chain(vec![
                // Pods and the node itself reach every endpoint, as through the ClusterIP; a
                // pod keeps its address even with masqueradeAll (kube-proxy marks traffic to
                // ClusterIPs only: TestInternalExternalMasquerade).
                format!("{ip} saddr @pod-cidrs {frontend} vmap @cluster-frontends"),
                format!("fib saddr type local {mark} {frontend} vmap @cluster-frontends"),
                // Outside traffic keeps its source and stays on this node.
                format!("{frontend} vmap @local-frontends"),
            ]),
        );
        t.chains.insert(
            "checks".into(),
            chain(vec![
                format!("{frontend} @no-endpoints goto refuse"),
                format!("{ip} daddr @cluster-ips goto refuse"),
                format!("{ip} daddr @service-cidrs drop"),
            ]),
        );
        // TCP is refused with a reset: an ICMP error that reaches a client while its connect()
        // still holds the socket (a pod on this very host) is dropped by IPv6 TCP, and the
        // client would wait for a timeout instead of seeing "connection refused".
        t.chains.insert("refuse".into(), chain(vec!["meta l4proto tcp reject with tcp reset".into(), "reject".into()]));
        t
    }
}

/// Every Service's elements of one family, counted: an element two Services share (a hairpin
/// pair, a ClusterIP) stays until the last one goes, and a key two Services claim keeps the
/// first one's value while it lasts.
#[derive(Clone, Debug, Default)]
struct Merged {
    sets: BTreeMap<&'static str, HashMap<String, Claims>>,
}

/// The values Services give one key, first claim first.
type Claims = Vec<Claim>;

/// One value of a key, with how many Services give it and the Service ports that do.
#[derive(Clone, Debug)]
struct Claim {
    value: Option<String>,
    count: u32,
    /// Sorted by name, each with how many of the key's claimants name it. A vector, not a map:
    /// nearly every key has one name, and a map's first node alone is ~300 bytes (80,000
    /// elements at 10,000 Services; `podnet bench agent`).
    names: Vec<(Arc<str>, u32)>,
}

impl Claim {
    /// The element's comment: the first of its Service ports by name, so that it does not
    /// depend on which Service came first (the kernel keeps the one written with the element).
    fn comment(&self) -> Option<String> {
        self.names.first().map(|(n, _)| n.to_string())
    }

    fn name_added(&mut self, name: &Arc<str>) {
        match self.names.binary_search_by(|(n, _)| n.as_ref().cmp(name.as_ref())) {
            Ok(i) => self.names[i].1 += 1,
            Err(i) => {
                // Most keys are named by one Service port: room for exactly one.
                self.names.reserve_exact(1);
                self.names.insert(i, (Arc::clone(name), 1));
            }
        }
    }

    fn name_removed(&mut self, name: &str) {
        if let Ok(i) = self.names.binary_search_by(|(n, _)| n.as_ref().cmp(name)) {
            self.names[i].1 -= 1;
            if self.names[i].1 == 0 {
                self.names.remove(i);
            }
        }
    }
}

/// An element written to the kernel (added with its comment).
enum Write {
    Add(&'static str, String, Option<String>, Option<String>),
    Delete(&'static str, String, Option<String>),
}

impl Merged {
    fn add(&mut self, f: &Fragment, out: &mut Vec<Write>) {
        for (set, k, v) in &f.elements {
            // Most keys have one claim: room for exactly one (a pushed-to empty Vec takes four).
            let claims = self.sets.entry(set).or_default().entry(k.clone()).or_insert_with(|| Vec::with_capacity(1));
            let name = f.comments.get(k);
            let claim = match claims.iter_mut().position(|c| c.value == *v) {
                Some(i) => &mut claims[i],
                None => {
                    claims.push(Claim { value: v.clone(), count: 0, names: Vec::new() });
                    claims.last_mut().unwrap_or_else(|| unreachable!("just pushed"))
                }
            };
            claim.count += 1;
            if let Some(name) = name {
                claim.name_added(name);
            }
            if claim.count == 1 && claims.len() == 1 {
                out.push(Write::Add(set, k.clone(), v.clone(), claims[0].comment()));
            }
        }
    }

    fn remove(&mut self, f: &Fragment, out: &mut Vec<Write>) {
        for (set, k, v) in &f.elements {
            let Some(keys) = self.sets.get_mut(set) else {
                continue;
            };
            let Some(claims) = keys.get_mut(k) else {
                continue;
            };
            let Some(i) = claims.iter().position(|c| c.value == *v) else {
                continue;
            };
            let claim = &mut claims[i];
            claim.count -= 1;
            if let Some(name) = f.comments.get(k) {
                claim.name_removed(name);
            }
            if claim.count > 0 {
                continue;
            }
            claims.remove(i);
            if i == 0 {
                out.push(Write::Delete(set, k.clone(), v.clone()));
                if let Some(next) = claims.first() {
                    out.push(Write::Add(set, k.clone(), next.value.clone(), next.comment()));
                }
            }
            if claims.is_empty() {
                keys.remove(k);
            }
        }
    }
}

/// One family's table as the programmer keeps it.
#[derive(Clone, Debug)]
struct FamilyTable {
    fam: &'static Fam,
    node_port_ips: Vec<IpAddr>,
    /// The node's own addresses (for the firewall's allow-from-node).
    node_ips: Vec<IpAddr>,
    base: Table,
    merged: Merged,
    fragments: HashMap<(String, String), Fragment>,
    classes: BTreeSet<(Pool, usize)>,
    timeouts: BTreeSet<u32>,
    present: bool,
}

/// What one Service's change takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    /// One transaction of element writes (empty when nothing changed).
    Elements(String),
    /// A new class chain or table: load [`Programmer::ruleset`] in full.
    Full,
}

/// A node's rule set kept per Service, so that a changed Service costs its own elements only
/// (O(change), not O(services)): the full rule set for loads, and element transactions for
/// changes.
#[derive(Clone, Debug)]
pub struct Programmer {
    tables: Vec<FamilyTable>,
}

fn fragment(fam: &Fam, ports: &[PortPlan], node_port_ips: &[IpAddr], node_ips: &[IpAddr]) -> Fragment {
    let mut el = Elements::default();
    for p in ports {
        el.port(fam, p, node_port_ips, node_ips);
        el.name_new_keys(&p.port.to_string());
    }
    el.into_fragment()
}

impl Programmer {
    /// Everything for `plan`.
    pub fn new(plan: &NodePlan) -> Programmer {
        static FAMS: [Fam; 2] = [V4, V6];
        let tables = FAMS
            .iter()
            .map(|fam| {
                let present =
                    !fam.v6 || plan.node.ips.iter().any(|ip| fam.has(ip)) || plan.ports.iter().any(|p| p.port.cluster_ips.iter().any(|ip| fam.has(ip)));
                let fixed = [Pool::Cluster, Pool::Local].into_iter().flat_map(|pool| (1..=FIXED_CLASSES).map(move |n| (pool, n)));
                let mut t = FamilyTable {
                    fam,
                    node_port_ips: plan.node_port_ips(fam),
                    node_ips: plan.node.ips.clone(),
                    base: plan.base_table(fam),
                    merged: Merged::default(),
                    fragments: HashMap::new(),
                    classes: fixed.collect(),
                    timeouts: FIXED_TIMEOUTS.into_iter().filter(|_| has_affinity(fam)).collect(),
                    present,
                };
                let mut ignored = Vec::new();
                for ports in plan.ports.chunk_by(|a, b| (&a.port.namespace, &a.port.service) == (&b.port.namespace, &b.port.service)) {
                    let f = fragment(fam, ports, &t.node_port_ips, &t.node_ips);
                    t.merged.add(&f, &mut ignored);
                    t.classes.extend(f.classes.iter().copied());
                    t.timeouts.extend(f.timeouts.iter().copied());
                    ignored.clear();
                    t.fragments.insert((ports[0].port.namespace.clone(), ports[0].port.service.clone()), f);
                }
                t
            })
            .collect();
        Programmer { tables }
    }

    /// The whole rule set.
    pub fn ruleset(&self) -> Ruleset {
        let mut ruleset = Ruleset::default();
        for t in self.tables.iter().filter(|t| t.present) {
            let mut table = t.base.clone();
            for (name, keys) in &t.merged.sets {
                if let Some(set) = table.sets.get_mut(*name) {
                    for (k, claims) in keys {
                        let Some(claim) = claims.first() else {
                            continue;
                        };
                        set.elements.insert(k.clone(), claim.value.clone());
                        if let Some(c) = claim.comment() {
                            set.comments.insert(k.clone(), c);
                        }
                    }
                }
            }
            let ip = t.fam.proto;
            for &(pool, count) in &t.classes {
                let rule = format!("dnat {ip} to {ip} daddr . meta l4proto . th dport . numgen random mod {count} map @{}", pool.endpoints_map());
                table.chains.insert(pool.chain(count), Chain { base: None, rules: vec![rule] });
            }
            for timeout in &t.timeouts {
                let rule = format!(
                    "update @{AFFINITY} {{ {ip} saddr . ct original {ip} daddr . meta l4proto . ct mark timeout {timeout}s : {ip} daddr . th dport }} ct mark set 0"
                );
                table.chains.insert(format!("affinity-{timeout}"), Chain { base: None, rules: vec![rule] });
            }
            ruleset.tables.insert((t.fam.family, TABLE.to_owned()), table);
        }
        ruleset
    }

    /// Replaces one Service's ports (none: the Service is gone) and says what the kernel needs.
    pub fn update(&mut self, namespace: &str, name: &str, ports: &[PortPlan]) -> Update {
        let mut full = false;
        let mut script = String::new();
        for t in &mut self.tables {
            let new = fragment(t.fam, ports, &t.node_port_ips, &t.node_ips);
            let old = t.fragments.remove(&(namespace.to_owned(), name.to_owned())).unwrap_or_default();
            if new == old {
                t.fragments.insert((namespace.to_owned(), name.to_owned()), old);
                continue;
            }
            // Only what differs is written: elements in both stay as they are.
            let kept: std::collections::HashSet<&(&'static str, String, Option<String>)> = old.elements.iter().filter(|e| new.elements.contains(e)).collect();
            let gone = Fragment { elements: old.elements.iter().filter(|e| !kept.contains(e)).cloned().collect(), ..Fragment::default() };
            let came = Fragment {
                elements: new.elements.iter().filter(|e| !kept.contains(e)).cloned().collect(),
                comments: new.comments.clone(),
                ..Fragment::default()
            };
            let mut writes = Vec::new();
            t.merged.remove(&gone, &mut writes);
            t.merged.add(&came, &mut writes);
            if !new.classes.is_subset(&t.classes) || !new.timeouts.is_subset(&t.timeouts) || (!t.present && !new.elements.is_empty()) {
                // nft cannot add rules that use the endpoint maps to a loaded table.
                t.classes.extend(new.classes.iter().copied());
                t.timeouts.extend(new.timeouts.iter().copied());
                t.present = true;
                full = true;
            }
            if !new.elements.is_empty() {
                t.fragments.insert((namespace.to_owned(), name.to_owned()), new);
            }
            write_script(&mut script, t.fam.family, &writes);
        }
        if full { Update::Full } else { Update::Elements(script) }
    }
}

/// Element writes as `nft` commands, in order (a key deleted and added again stays in order),
/// runs of one verb and set sharing one command.
fn write_script(out: &mut String, family: Family, writes: &[Write]) {
    use std::fmt::Write as _;
    let text = |w: &Write| match w {
        Write::Add(set, k, v, comment) => (true, *set, nftset::element_text(k, v.as_deref(), comment.as_deref())),
        Write::Delete(set, k, v) => (false, *set, nftset::element_text(k, v.as_deref(), None)),
    };
    let mut i = 0;
    while i < writes.len() {
        let (add, set, _) = text(&writes[i]);
        let mut items = Vec::new();
        while i < writes.len() {
            let (a, s, item) = text(&writes[i]);
            if (a, s) != (add, set) {
                break;
            }
            items.push(item);
            i += 1;
        }
        let _ = writeln!(out, "{} element {family} {TABLE} {set} {{ {} }}", if add { "add" } else { "delete" }, items.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{ProxyConfig, plan};

    const MANIFESTS: &str = "apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\nspec: {podCIDR: 10.244.0.0/24}\nstatus: {addresses: [{type: InternalIP, address: 172.18.0.2}, {type: InternalIP, address: 'fd00::2'}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: shop, labels: {app: web}}\nspec: {nodeName: node-2, containers: [{name: c}]}\nstatus: {podIP: 10.244.1.2}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  type: LoadBalancer\n  clusterIP: 10.96.0.20\n  externalTrafficPolicy: Local\n  loadBalancerSourceRanges: [203.0.113.0/24]\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]\nstatus: {loadBalancer: {ingress: [{ip: 198.51.100.1}]}}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: empty, namespace: shop}\nspec: {clusterIP: 10.96.0.30, selector: {app: none}, ports: [{port: 53, protocol: UDP}]}\n";

    fn table(family: Family) -> Option<Table> {
        let s = model::ClusterState::from_objects(&model::load_str(MANIFESTS, std::path::Path::new("t.yaml")).unwrap()).unwrap();
        let p = plan(&s, "node-1", &ProxyConfig { cluster_cidr: "10.244.0.0/16".into(), ..Default::default() }).unwrap();
        p.render().tables.remove(&(family, TABLE.to_owned()))
    }

    fn elements(t: &Table, set: &str) -> Vec<String> {
        t.sets[set].elements.iter().map(|(k, v)| v.as_ref().map_or_else(|| k.clone(), |v| format!("{k} : {v}"))).collect()
    }

    #[test]
    fn external_local_frontends_split_cluster_and_local_and_firewall_lb_ranges() {
        let t = table(Family::Ip).unwrap();
        assert_eq!(
            elements(&t, "frontends"),
            ["10.96.0.20 . tcp . 80 : goto cluster-1", "172.18.0.2 . tcp . 30080 : goto external-local", "198.51.100.1 . tcp . 80 : goto external-local"]
        );
        // No endpoint on this node: outside traffic is dropped, pods and the node reach node-2's.
        assert_eq!(elements(&t, "local-frontends"), ["172.18.0.2 . tcp . 30080 : drop", "198.51.100.1 . tcp . 80 : drop"]);
        assert_eq!(elements(&t, "cluster-frontends").len(), 2);
        assert_eq!(elements(&t, "firewall"), ["198.51.100.1 . tcp . 80"]);
        assert_eq!(elements(&t, "firewall-allow"), ["198.51.100.1 . tcp . 80 . 203.0.113.0/24"]);
        assert!(elements(&t, "masquerade-frontends").is_empty(), "Local policy keeps the source");
        assert_eq!(elements(&t, "no-endpoints"), ["10.96.0.30 . udp . 53"]);
    }

    #[test]
    fn class_chains_exist_for_every_count_in_use_and_an_ipv6_node_gets_an_ip6_table() {
        let t = table(Family::Ip).unwrap();
        for n in 1..=FIXED_CLASSES {
            assert!(t.chains.contains_key(&format!("cluster-{n}")) && t.chains.contains_key(&format!("local-{n}")));
        }
        assert_eq!(t.chains["cluster-2"].rules, ["dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @cluster-endpoints"]);
        let t6 = table(Family::Ip6).expect("the node has an IPv6 address");
        assert!(elements(&t6, "frontends").is_empty());
        assert!(t6.chains["services"].rules.iter().all(|r| !r.contains("ip daddr") || r.contains("ip6 daddr")));
    }

    /// Applies to `from` every Service's ports of `to`, one Service at a time.
    fn updates(p: &mut Programmer, from: &NodePlan, to: &NodePlan) -> Vec<Update> {
        let mut keys: BTreeSet<(String, String)> = BTreeSet::new();
        for port in from.ports.iter().chain(&to.ports) {
            keys.insert((port.port.namespace.clone(), port.port.service.clone()));
        }
        keys.iter()
            .map(|(ns, name)| {
                let ports: Vec<PortPlan> = to.ports.iter().filter(|q| (&q.port.namespace, &q.port.service) == (ns, name)).cloned().collect();
                p.update(ns, name, &ports)
            })
            .collect()
    }

    fn plan_of(yaml: &str) -> NodePlan {
        let s = model::ClusterState::from_objects(&model::load_str(yaml, std::path::Path::new("t.yaml")).unwrap()).unwrap();
        plan(&s, "node-1", &ProxyConfig { cluster_cidr: "10.244.0.0/16".into(), ..Default::default() }).unwrap()
    }

    #[test]
    fn per_service_updates_land_where_a_full_render_does() {
        let svc = |name: &str, ip: &str, app: &str| {
            format!(
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{clusterIP: {ip}, selector: {{app: {app}}}, ports: [{{port: 80, targetPort: 8080}}]}}\n"
            )
        };
        let pod = |name: &str, ip: &str, app: &str| {
            format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, labels: {{app: {app}}}}}\nspec: {{nodeName: node-2, containers: [{{name: c}}]}}\nstatus: {{podIP: {ip}}}\n"
            )
        };
        let node = MANIFESTS.split("---").next().unwrap();
        // Two Services share a backend (one hairpin element, two claims).
        let a = plan_of(&format!(
            "{node}{}{}{}{}{}",
            svc("web", "10.96.0.20", "web"),
            svc("web2", "10.96.0.21", "web"),
            svc("gone", "10.96.0.30", "db"),
            pod("w1", "10.244.1.2", "web"),
            pod("d1", "10.244.1.5", "db")
        ));
        let b = plan_of(&format!(
            "{node}{}{}{}{}",
            svc("web", "10.96.0.20", "web"),
            svc("new", "10.96.0.40", "web"),
            pod("w1", "10.244.1.2", "web"),
            pod("w2", "10.244.1.3", "web")
        ));
        let mut p = Programmer::new(&a);
        assert_eq!(p.ruleset(), a.render());
        let done = updates(&mut p, &a, &b);
        assert!(done.iter().all(|u| matches!(u, Update::Elements(_))), "{done:?}");
        assert_eq!(p.ruleset(), b.render());
        // The writes: web2 and gone deleted, new added, web's endpoint list grew.
        let script: String = done.iter().map(|u| if let Update::Elements(s) = u { s.as_str() } else { "" }).collect();
        assert!(script.contains("delete element ip podnet-proxy frontends { 10.96.0.21 . tcp . 80 : goto cluster-1 }"), "{script}");
        assert!(script.contains("add element ip podnet-proxy frontends { 10.96.0.40 . tcp . 80 comment \"shop/new\" : goto cluster-2 }"), "{script}");
        // Every element is named after its Service port, as kube-proxy's are.
        let frontends = &p.ruleset().tables[&(Family::Ip, TABLE.to_owned())].sets[FRONTENDS];
        assert_eq!(frontends.comments.values().collect::<Vec<_>>(), ["shop/web", "shop/new"]);
        assert!(!script.contains("hairpin { 10.244.1.2 . 10.244.1.2 }"), "a shared element stays: {script}");
        // Nothing changed: nothing written.
        assert!(updates(&mut p, &b, &b).iter().all(|u| *u == Update::Elements(String::new())));
    }

    #[test]
    fn an_endpoint_count_without_a_class_chain_asks_for_a_full_load() {
        let node = MANIFESTS.split("---").next().unwrap();
        let pods: String = (0..=FIXED_CLASSES).map(|i| format!("---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: shop, labels: {{app: big}}}}\nspec: {{nodeName: node-2, containers: [{{name: c}}]}}\nstatus: {{podIP: 10.244.1.{}}}\n", i + 10)).collect();
        let svc = "---\napiVersion: v1\nkind: Service\nmetadata: {name: big, namespace: shop}\nspec: {clusterIP: 10.96.0.50, selector: {app: big}, ports: [{port: 80}]}\n";
        let a = plan_of(&format!("{node}{svc}"));
        let b = plan_of(&format!("{node}{svc}{pods}"));
        let mut p = Programmer::new(&a);
        assert!(updates(&mut p, &a, &b).contains(&Update::Full));
        assert_eq!(p.ruleset(), b.render());
    }

    #[test]
    fn hairpin_pairs_cover_every_endpoint() {
        let svc = |name: &str, ip: &str, extra: &str| {
            format!(
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{clusterIP: {ip}, selector: {{app: {name}}}, ports: [{{port: 80}}]{extra}}}\n"
            )
        };
        let pod = |name: &str, app: &str, node: &str, ip: &str| {
            format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, labels: {{app: {app}}}}}\nspec: {{nodeName: {node}, containers: [{{name: c}}]}}\nstatus: {{podIP: {ip}}}\n"
            )
        };
        let node = MANIFESTS.split("---").next().unwrap();
        let p = plan_of(&format!(
            "{node}{}{}{}{}{}",
            svc("inner", "10.96.0.20", ""),
            svc("outer", "10.96.0.21", ", externalIPs: [192.0.2.1]"),
            pod("far", "inner", "node-2", "10.244.1.2"),
            pod("near", "inner", "node-1", "10.244.0.2"),
            pod("far2", "outer", "node-2", "10.244.1.3")
        ));
        let t = p.render().tables.remove(&(Family::Ip, TABLE.to_owned())).unwrap();
        // Every endpoint, on this node or another, as kube-proxy's endpoint chains masquerade
        // their own pod wherever it runs (the plan's answer for any packet).
        assert_eq!(elements(&t, "hairpin"), ["10.244.0.2 . 10.244.0.2", "10.244.1.2 . 10.244.1.2", "10.244.1.3 . 10.244.1.3"]);
    }
}
