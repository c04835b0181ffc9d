//! IPAM compatible with the reference `host-local` plugin: same config, same allocation order
//! (round-robin from the last reserved address, skipping the gateway), same lease files.

pub mod range;
pub mod store;

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{CniError, Code};
use crate::result::{CniResult, Dns, IpConfig, Route};
use range::{Range, RangeConfig, RangeSet, next_ip};
use store::LeaseStore;

/// A route as written in the IPAM config.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct RouteConfig {
    /// Destination.
    pub dst: IpNet,
    /// Next hop.
    #[serde(default)]
    pub gw: Option<IpAddr>,
}

/// `ipam` of type `host-local`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostLocalConfig {
    /// Range sets: one address is allocated from each.
    #[serde(default)]
    pub ranges: Vec<Vec<RangeConfig>>,
    /// Routes to return.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Where leases live (default `/var/lib/cni/networks`).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// A resolv.conf whose settings become the result's `dns`.
    #[serde(default)]
    pub resolv_conf: Option<PathBuf>,
    /// Legacy single range: `subnet`.
    #[serde(default)]
    pub subnet: Option<String>,
    /// Legacy single range: `rangeStart`.
    #[serde(default)]
    pub range_start: Option<IpAddr>,
    /// Legacy single range: `rangeEnd`.
    #[serde(default)]
    pub range_end: Option<IpAddr>,
    /// Legacy single range: `gateway`.
    #[serde(default)]
    pub gateway: Option<IpAddr>,
}

/// A host-local config ready to allocate from.
#[derive(Clone, Debug)]
pub struct Ipam {
    /// The range sets.
    pub sets: Vec<RangeSet>,
    /// Routes to return.
    pub routes: Vec<RouteConfig>,
    /// Where leases live.
    pub data_dir: PathBuf,
    /// The result's DNS settings.
    pub dns: Dns,
}

fn internal(msg: impl Into<String>) -> CniError {
    CniError::new(Code::Internal, msg)
}

impl Ipam {
    /// Reads the `ipam` section of a network config.
    pub fn from_config(ipam: &Value) -> Result<Self, CniError> {
        let c: HostLocalConfig =
            serde_json::from_value(ipam.clone()).map_err(|e| CniError::new(Code::Decoding, "failed to decode ipam config").with_details(e.to_string()))?;
        let mut configs = c.ranges.clone();
        if let Some(subnet) = &c.subnet {
            // The legacy fields become the first range set, as the reference does.
            configs.insert(0, vec![RangeConfig { subnet: subnet.clone(), range_start: c.range_start, range_end: c.range_end, gateway: c.gateway }]);
        }
        if configs.is_empty() {
            return Err(internal("no IP ranges specified"));
        }
        let mut sets = Vec::with_capacity(configs.len());
        for (i, set) in configs.iter().enumerate() {
            sets.push(range::range_set(set).map_err(|e| internal(format!("invalid range set {i}: {e}")))?);
        }
        for (i, a) in sets.iter().enumerate() {
            for b in &sets[i + 1..] {
                if a.iter().any(|ra| b.iter().any(|rb| ra.overlaps(rb))) {
                    return Err(internal(format!("range set {i} overlaps with another range set")));
                }
            }
        }
        let dns = match &c.resolv_conf {
            Some(path) => parse_resolv_conf(&std::fs::read_to_string(path).map_err(|e| internal(format!("failed to read {}: {e}", path.display())))?),
            None => Dns::default(),
        };
        Ok(Ipam { sets, routes: c.routes, data_dir: c.data_dir.unwrap_or_else(|| PathBuf::from(store::DEFAULT_DATA_DIR)), dns })
    }

    /// ADD: one address from each range set (a requested one where it falls in the set).
    /// On failure nothing stays allocated.
    pub fn add(&self, store: &mut dyn LeaseStore, id: &str, ifname: &str, requested: &[IpAddr]) -> Result<CniResult, CniError> {
        let mut left: Vec<IpAddr> = requested.to_vec();
        let mut ips = Vec::new();
        for (i, set) in self.sets.iter().enumerate() {
            let want = left.iter().position(|ip| set.iter().any(|r| r.contains(*ip))).map(|p| left.remove(p));
            match allocate(set, i, store, id, ifname, want) {
                Ok(ip) => ips.push(ip),
                Err(e) => {
                    let _ = store.release(id, ifname);
                    return Err(internal(format!("failed to allocate for range {i}: {e}")));
                }
            }
        }
        if !left.is_empty() {
            let _ = store.release(id, ifname);
            let list: Vec<String> = left.iter().map(ToString::to_string).collect();
            return Err(internal(format!("failed to allocate all requested IPs: {}", list.join(" "))));
        }
        Ok(CniResult {
            interfaces: Vec::new(),
            ips,
            routes: self.routes.iter().map(|r| Route { dst: r.dst, gw: r.gw, mtu: None, priority: None }).collect(),
            dns: self.dns.clone(),
        })
    }

    /// DEL: releases every address of `(id, ifname)`; succeeds when there is none.
    pub fn del(&self, store: &mut dyn LeaseStore, id: &str, ifname: &str) -> Result<(), CniError> {
        store.release(id, ifname).map_err(|e| internal(format!("failed to release: {e}")))
    }

    /// CHECK: `(id, ifname)` must still hold an address in every range set.
    pub fn check(&self, store: &dyn LeaseStore, id: &str, ifname: &str) -> Result<(), CniError> {
        let held = store.leases_of(id, ifname);
        for set in &self.sets {
            if !held.iter().any(|ip| set.iter().any(|r| r.subnet.contains(ip))) {
                return Err(internal(format!("host-local: Failed to find address added by container {id}")));
            }
        }
        Ok(())
    }

    /// GC: releases every lease whose `(container id, ifname)` is not in `valid`.
    pub fn gc(&self, store: &mut dyn LeaseStore, valid: &[(String, String)]) -> Result<Vec<IpAddr>, CniError> {
        let mut released = Vec::new();
        for (ip, id, ifname) in store.all() {
            if !valid.iter().any(|(vid, vif)| *vid == id && (*vif == ifname || ifname.is_empty())) {
                store.release(&id, &ifname).map_err(|e| internal(format!("failed to release {ip}: {e}")))?;
                released.push(ip);
            }
        }
        Ok(released)
    }
}

/// `RangeSet.String()`: `start-end,start-end`.
fn describe(set: &RangeSet) -> String {
    set.iter().map(|r| format!("{}-{}", r.start, r.end)).collect::<Vec<_>>().join(",")
}

/// host-local's `IPAllocator.Get`.
fn allocate(set: &RangeSet, set_index: usize, store: &mut dyn LeaseStore, id: &str, ifname: &str, requested: Option<IpAddr>) -> Result<IpConfig, String> {
    let config =
        |ip: IpAddr, r: &Range| IpConfig { address: IpNet::new(ip, r.subnet.prefix_len()).unwrap_or(r.subnet), gateway: Some(r.gateway), interface: None };
    if let Some(ip) = requested {
        let r = set.iter().find(|r| r.contains(ip)).ok_or_else(|| format!("{ip} not in range set {}", describe(set)))?;
        if ip == r.gateway {
            return Err(format!("requested ip {ip} is subnet's gateway"));
        }
        if !store.reserve(id, ifname, ip, set_index).map_err(|e| e.to_string())? {
            return Err(format!("requested IP address {ip} is not available in range set {}", describe(set)));
        }
        return Ok(config(ip, r));
    }
    if let Some(ip) = store.leases_of(id, ifname).into_iter().find(|ip| set.iter().any(|r| r.contains(*ip))) {
        return Err(format!("{ip} has been allocated to {id}, duplicate allocation is not allowed"));
    }
    let mut iter = RoundRobin::new(set, store.last_reserved(set_index));
    while let Some((ip, r)) = iter.next() {
        if store.reserve(id, ifname, ip, set_index).map_err(|e| e.to_string())? {
            return Ok(config(ip, r));
        }
    }
    Err(format!("no IP addresses available in range set: {}", describe(set)))
}

/// host-local's `RangeIter`: from the address after the last reserved one, through every
/// range of the set once, skipping gateways.
struct RoundRobin<'a> {
    set: &'a RangeSet,
    index: usize,
    cur: Option<IpAddr>,
    start: Option<IpAddr>,
}

impl<'a> RoundRobin<'a> {
    fn new(set: &'a RangeSet, last: Option<IpAddr>) -> Self {
        match last.and_then(|ip| set.iter().position(|r| r.contains(ip)).map(|i| (i, ip))) {
            Some((index, ip)) => RoundRobin { set, index, cur: Some(ip), start: None },
            None => RoundRobin { set, index: 0, cur: None, start: Some(set[0].start) },
        }
    }

    fn next(&mut self) -> Option<(IpAddr, &'a Range)> {
        loop {
            let mut r = &self.set[self.index];
            let Some(cur) = self.cur else {
                self.cur = Some(r.start);
                self.start = Some(r.start);
                if r.start == r.gateway {
                    continue;
                }
                return Some((r.start, r));
            };
            let next = if cur == r.end {
                self.index = (self.index + 1) % self.set.len();
                r = &self.set[self.index];
                r.start
            } else {
                next_ip(cur)
            };
            self.cur = Some(next);
            match self.start {
                None => self.start = Some(next),
                Some(s) if s == next => return None,
                Some(_) => {}
            }
            if next == r.gateway {
                continue;
            }
            return Some((next, r));
        }
    }
}

/// `nameserver`, `domain`, `search` and `options` lines of a resolv.conf.
pub fn parse_resolv_conf(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.nameservers.extend(words.next().map(str::to_owned)),
            Some("domain") => dns.domain = words.next().map(str::to_owned),
            Some("search") => dns.search.extend(words.map(str::to_owned)),
            Some("options") => dns.options.extend(words.map(str::to_owned)),
            _ => {}
        }
    }
    dns
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::store::{DiskStore, MemStore};
    use super::*;

    fn ipam(config: Value) -> Ipam {
        Ipam::from_config(&config).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn first_ip(r: &CniResult) -> String {
        r.ips[0].address.to_string()
    }

    #[test]
    fn allocation_starts_after_the_gateway_and_goes_round_robin() {
        let i = ipam(json!({"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/29"}]]}));
        let mut s = MemStore::default();
        let a = i.add(&mut s, "a", "eth0", &[]).unwrap();
        assert_eq!(first_ip(&a), "10.244.1.2/29");
        assert_eq!(a.ips[0].gateway, Some(ip("10.244.1.1")));
        assert_eq!(first_ip(&i.add(&mut s, "b", "eth0", &[]).unwrap()), "10.244.1.3/29");
        // A freed address is not reused at once: allocation continues after the last one.
        i.del(&mut s, "a", "eth0").unwrap();
        assert_eq!(first_ip(&i.add(&mut s, "c", "eth0", &[]).unwrap()), "10.244.1.4/29");
        assert_eq!(first_ip(&i.add(&mut s, "d", "eth0", &[]).unwrap()), "10.244.1.5/29");
        assert_eq!(first_ip(&i.add(&mut s, "e", "eth0", &[]).unwrap()), "10.244.1.6/29");
        // Wraps around to the freed .2; .7 is the broadcast address.
        assert_eq!(first_ip(&i.add(&mut s, "f", "eth0", &[]).unwrap()), "10.244.1.2/29");
        let err = i.add(&mut s, "g", "eth0", &[]).unwrap_err();
        assert_eq!(err.code, Code::Internal);
        assert_eq!(err.msg, "failed to allocate for range 0: no IP addresses available in range set: 10.244.1.1-10.244.1.6");
    }

    #[test]
    fn a_second_add_for_the_same_attachment_is_refused() {
        let i = ipam(json!({"ranges": [[{"subnet": "10.0.0.0/24"}]]}));
        let mut s = MemStore::default();
        i.add(&mut s, "a", "eth0", &[]).unwrap();
        assert!(i.add(&mut s, "a", "eth0", &[]).unwrap_err().msg.contains("duplicate allocation is not allowed"));
        assert!(i.add(&mut s, "a", "eth1", &[]).is_ok(), "another interface of the same container");
    }

    #[test]
    fn requested_addresses_are_honoured_or_refused() {
        let i = ipam(json!({"ranges": [[{"subnet": "10.0.0.0/24"}]]}));
        let mut s = MemStore::default();
        assert_eq!(first_ip(&i.add(&mut s, "a", "eth0", &[ip("10.0.0.50")]).unwrap()), "10.0.0.50/24");
        assert!(i.add(&mut s, "b", "eth0", &[ip("10.0.0.50")]).unwrap_err().msg.contains("is not available"));
        assert!(i.add(&mut s, "c", "eth0", &[ip("10.0.0.1")]).unwrap_err().msg.contains("is subnet's gateway"));
        let err = i.add(&mut s, "d", "eth0", &[ip("10.9.0.1")]).unwrap_err();
        assert_eq!(err.msg, "failed to allocate all requested IPs: 10.9.0.1");
        assert!(s.leases_of("d", "eth0").is_empty(), "nothing stays allocated after a failure");
    }

    #[test]
    fn dual_stack_allocates_one_address_per_range_set() {
        let i = ipam(json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00::/120"}]], "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}));
        let mut s = MemStore::default();
        let r = i.add(&mut s, "a", "eth0", &[]).unwrap();
        let addrs: Vec<String> = r.ips.iter().map(|c| c.address.to_string()).collect();
        assert_eq!(addrs, ["10.0.0.2/24", "fd00::2/120"]);
        assert_eq!(r.routes.len(), 2);
        i.check(&s, "a", "eth0").unwrap();
        i.del(&mut s, "a", "eth0").unwrap();
        assert!(i.check(&s, "a", "eth0").is_err());
    }

    #[test]
    fn several_ranges_in_one_set_are_used_in_turn() {
        let i = ipam(json!({"ranges": [[
            {"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.10", "rangeEnd": "10.0.0.11"},
            {"subnet": "10.0.1.0/24", "rangeStart": "10.0.1.10", "rangeEnd": "10.0.1.10"}
        ]]}));
        let mut s = MemStore::default();
        let got: Vec<String> = ["a", "b", "c"].iter().map(|id| first_ip(&i.add(&mut s, id, "eth0", &[]).unwrap())).collect();
        assert_eq!(got, ["10.0.0.10/24", "10.0.0.11/24", "10.0.1.10/24"]);
    }

    #[test]
    fn legacy_single_range_fields_work() {
        let i = ipam(json!({"subnet": "10.1.0.0/16", "rangeStart": "10.1.5.0", "gateway": "10.1.0.254"}));
        let mut s = MemStore::default();
        let r = i.add(&mut s, "a", "eth0", &[]).unwrap();
        assert_eq!(first_ip(&r), "10.1.5.0/16");
        assert_eq!(r.ips[0].gateway, Some(ip("10.1.0.254")));
    }

    #[test]
    fn config_errors() {
        assert_eq!(Ipam::from_config(&json!({"type": "host-local"})).unwrap_err().msg, "no IP ranges specified");
        assert_eq!(Ipam::from_config(&json!({"ranges": "x"})).unwrap_err().code, Code::Decoding);
        assert!(Ipam::from_config(&json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.0/25"}]]})).is_err());
    }

    #[test]
    fn gc_keeps_exactly_the_valid_attachments() {
        let i = ipam(json!({"ranges": [[{"subnet": "10.0.0.0/24"}]]}));
        let mut s = MemStore::default();
        for id in ["a", "b", "c"] {
            i.add(&mut s, id, "eth0", &[]).unwrap();
        }
        let released = i.gc(&mut s, &[("b".into(), "eth0".into())]).unwrap();
        assert_eq!(released.len(), 2);
        let left: Vec<String> = s.all().into_iter().map(|(_, id, _)| id).collect();
        assert_eq!(left, ["b"]);
    }

    #[test]
    fn resolv_conf_becomes_dns() {
        let d = parse_resolv_conf("# c\nnameserver 10.96.0.10\nsearch a.svc b.svc\noptions ndots:5\ndomain x\n");
        assert_eq!(d.nameservers, ["10.96.0.10"]);
        assert_eq!(d.search, ["a.svc", "b.svc"]);
        assert_eq!(d.options, ["ndots:5"]);
        assert_eq!(d.domain.as_deref(), Some("x"));
    }

    #[test]
    fn concurrent_adds_on_disk_never_share_an_address() {
        let dir = tempfile::tempdir().unwrap();
        let i = ipam(json!({"ranges": [[{"subnet": "10.0.0.0/24"}]], "dataDir": dir.path()}));
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let i = i.clone();
                std::thread::spawn(move || {
                    (0..10)
                        .map(|k| {
                            let mut s = DiskStore::open(&i.data_dir, "net").unwrap();
                            first_ip(&i.add(&mut s, &format!("c{t}-{k}"), "eth0", &[]).unwrap())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<String> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        all.sort();
        let n = all.len();
        all.dedup();
        assert_eq!(all.len(), n);
        assert_eq!(n, 80);
    }
}
