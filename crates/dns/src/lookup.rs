//! Answers for names in the cluster zone and its reverse zones, as the Kubernetes DNS
//! specification (schema 1.1.0) and CoreDNS's `kubernetes` plugin give them: a name that
//! exists without records of the asked type is NODATA (NOERROR with the SOA), one that does
//! not is NXDOMAIN; names outside are "not ours" (the caller forwards them).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::view::{Endpoint, PodsMode, Port, Service, View};

/// The schema version in `dns-version.<zone>`.
pub const SCHEMA_VERSION: &str = "1.1.0";
/// TTL of the `dns-version` record (CoreDNS's).
const VERSION_TTL: u32 = 28800;

/// An authoritative answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Answer {
    /// NOERROR or NXDOMAIN.
    pub rcode: ResponseCode,
    /// The answer section.
    pub answers: Vec<Record>,
    /// The authority section (the SOA of a negative answer).
    pub authorities: Vec<Record>,
    /// The additional section (addresses of SRV and NS targets).
    pub additionals: Vec<Record>,
}

/// What the zone says about a question.
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup {
    /// The zone's answer.
    Answer(Answer),
    /// A name outside the zone and its reverse networks: forward it.
    NotOurs,
}

/// The longest chain of CNAMEs followed inside the zone (CoreDNS's `maxCnameChainLength`).
pub const MAX_CNAME_CHAIN: usize = 10;

/// What a name in the zone stands for, before the query type is looked at.
enum Found {
    /// The name does not exist.
    Missing,
    /// The name exists with these records (possibly none: an empty non-terminal).
    Records(Vec<Target>),
}

/// One thing a name points at (CoreDNS's `msg.Service`).
#[derive(Clone, Debug)]
enum Target {
    /// An address; for SRV, the port and the name that holds the address.
    Address { ip: IpAddr, port: Option<u16>, holder: Name },
    /// A CNAME (ExternalName).
    Alias(Name),
    /// `dns-version`.
    Text(String),
}

impl View {
    fn record(&self, name: &Name, rdata: RData) -> Record {
        Record::from_rdata(name.clone(), self.ttl, rdata)
    }

    /// The zone's SOA (CoreDNS's: `ns.dns.<zone>`, `hostmaster.<zone>`, the TTL as minimum).
    pub fn soa(&self) -> Record {
        self.soa_of(&self.zone)
    }

    /// The SOA of one of the zones served (the cluster zone or a reverse zone of its networks).
    fn soa_of(&self, zone: &Name) -> Record {
        let join = |prefix: &str| Name::from_ascii(prefix).and_then(|p| p.append_domain(zone)).unwrap_or_else(|_| zone.clone());
        let soa = SOA::new(join("ns.dns"), join("hostmaster"), self.serial, 7200, 1800, 86400, self.ttl);
        Record::from_rdata(zone.clone(), self.ttl.min(300), RData::SOA(soa))
    }

    fn negative(&self, rcode: ResponseCode) -> Lookup {
        Lookup::Answer(Answer { rcode, authorities: vec![self.soa()], ..Default::default() })
    }

    /// Looks `qname` / `qtype` up. Names under the zone come back spelled with the zone as the
    /// question spelled it (`svc.ns.svc.cLuStEr.LoCaL.`), as CoreDNS answers.
    pub fn lookup(&self, qname: &Name, qtype: RecordType) -> Lookup {
        let found = self.lookup_in_chain(qname, qtype, &[]);
        // The zone's own labels as the question spelled them; a question that spells them as
        // the zone does (what stub resolvers send) has nothing to respell and costs no more.
        let zone_labels = || qname.iter().skip(usize::from(qname.num_labels().saturating_sub(self.zone.num_labels())));
        if zone_labels().eq(self.zone.iter()) {
            return found;
        }
        match (found, Name::from_labels(zone_labels())) {
            (Lookup::Answer(answer), Ok(mut asked)) if self.zone.zone_of(&qname.to_lowercase()) => {
                asked.set_fqdn(true);
                Lookup::Answer(self.respelled(answer, &asked))
            }
            (found, _) => found,
        }
    }

    /// Every name of `answer` under the zone, with the zone spelled as `asked`.
    fn respelled(&self, answer: Answer, asked: &Name) -> Answer {
        let name = |n: &Name| -> Name {
            if !self.zone.zone_of(&n.to_lowercase()) {
                return n.clone();
            }
            let own = usize::from(n.num_labels() - self.zone.num_labels());
            Name::from_labels(n.iter().take(own)).and_then(|prefix| prefix.append_domain(asked)).unwrap_or_else(|_| n.clone())
        };
        let record = |r: Record| -> Record {
            let data = match &r.data {
                RData::SRV(srv) => RData::SRV(SRV::new(srv.priority, srv.weight, srv.port, name(&srv.target))),
                RData::CNAME(c) => RData::CNAME(CNAME(name(&c.0))),
                RData::PTR(p) => RData::PTR(PTR(name(&p.0))),
                RData::NS(ns) => RData::NS(NS(name(&ns.0))),
                RData::SOA(soa) => RData::SOA(SOA::new(name(&soa.mname), name(&soa.rname), soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum)),
                other => other.clone(),
            };
            Record::from_rdata(name(&r.name), r.ttl, data)
        };
        Answer {
            rcode: answer.rcode,
            answers: answer.answers.into_iter().map(record).collect(),
            authorities: answer.authorities.into_iter().map(record).collect(),
            additionals: answer.additionals.into_iter().map(record).collect(),
        }
    }

    /// Looks `qname` up as the next link of a CNAME chain whose targets so far are `chain`.
    fn lookup_in_chain(&self, qname: &Name, qtype: RecordType, chain: &[Name]) -> Lookup {
        let lower = qname.to_lowercase();
        if let Some(ip) = reverse_address(&lower) {
            return self.lookup_reverse(qname, ip, qtype);
        }
        if !self.zone.zone_of(&lower) {
            // Another name under a reverse zone of ours (not an address's) does not exist there.
            if let Some(zone) = self.reverse_zones().into_iter().find(|z| z.zone_of(&lower)) {
                return Lookup::Answer(Answer { rcode: ResponseCode::NXDomain, authorities: vec![self.soa_of(&zone)], ..Default::default() });
            }
            return Lookup::NotOurs;
        }
        let extra = usize::from(lower.num_labels() - self.zone.num_labels());
        let labels: Vec<String> = lower.iter().take(extra).map(|l| String::from_utf8_lossy(l).into_owned()).collect();
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();

        if labels.is_empty() {
            return self.apex(qname, qtype);
        }
        let found = self.find(&labels);
        let Found::Records(targets) = found else {
            return self.negative(ResponseCode::NXDomain);
        };
        let mut answer = Answer::default();
        match qtype {
            RecordType::A | RecordType::AAAA => {
                let mut seen: Vec<IpAddr> = Vec::new();
                for t in &targets {
                    match t {
                        // One record per address, not per port.
                        Target::Address { ip, .. } if (qtype == RecordType::A) == ip.is_ipv4() && !seen.contains(ip) => {
                            seen.push(*ip);
                            answer.answers.push(self.record(qname, address(*ip)));
                        }
                        Target::Alias(target) => self.alias(qname, target, qtype, chain, &mut answer),
                        _ => {}
                    }
                }
            }
            RecordType::CNAME => {
                for t in &targets {
                    if let Target::Alias(target) = t {
                        answer.answers.push(self.record(qname, RData::CNAME(CNAME(target.clone()))));
                    }
                }
            }
            RecordType::TXT => {
                for t in &targets {
                    if let Target::Text(text) = t {
                        answer.answers.push(Record::from_rdata(qname.clone(), VERSION_TTL, RData::TXT(TXT::new(vec![text.clone()]))));
                    }
                }
            }
            RecordType::SRV => self.srv(qname, &targets, &mut answer),
            _ => {}
        }
        if answer.answers.is_empty() {
            return self.negative(ResponseCode::NoError);
        }
        Lookup::Answer(answer)
    }

    /// The zone apex: SOA and NS; everything else NODATA.
    fn apex(&self, qname: &Name, qtype: RecordType) -> Lookup {
        let mut answer = Answer::default();
        match qtype {
            RecordType::SOA => answer.answers.push(self.soa()),
            RecordType::NS => {
                let ns = Name::from_ascii("ns.dns").and_then(|n| n.append_domain(&self.zone)).unwrap_or_else(|_| self.zone.clone());
                answer.answers.push(self.record(qname, RData::NS(NS(ns.clone()))));
                answer.additionals.extend(self.nameservers.iter().map(|ip| self.record(&ns, address(*ip))));
            }
            _ => return self.negative(ResponseCode::NoError),
        }
        Lookup::Answer(answer)
    }

    /// A CNAME to `target`, followed as CoreDNS's kubernetes plugin follows it: a target in the
    /// zone is chased link by link and the CNAME is kept only if the chain ends in records; one
    /// outside the zone is answered with the CNAME alone (the client's resolver goes on). The
    /// chase is bounded, since ExternalNames are user data that can point at each other: a
    /// name pointing at itself, a target already in the chain (a loop) and a chain longer than
    /// [`MAX_CNAME_CHAIN`] add nothing.
    fn alias(&self, qname: &Name, target: &Name, qtype: RecordType, chain: &[Name], answer: &mut Answer) {
        let lower = target.to_lowercase();
        if lower == qname.to_lowercase() || chain.len() > MAX_CNAME_CHAIN || chain.iter().any(|t| t.to_lowercase() == lower) {
            return;
        }
        let cname = self.record(qname, RData::CNAME(CNAME(target.clone())));
        if !self.zone.zone_of(&lower) {
            answer.answers.push(cname);
            return;
        }
        let mut longer = chain.to_vec();
        longer.push(target.clone());
        if let Lookup::Answer(chased) = self.lookup_in_chain(target, qtype, &longer)
            && chased.rcode == ResponseCode::NoError
            && !chased.answers.is_empty()
        {
            answer.answers.push(cname);
            answer.answers.extend(chased.answers);
        }
    }

    /// SRV records (priority 0, weights of 100 shared as CoreDNS does), target addresses in
    /// the additional section.
    fn srv(&self, qname: &Name, targets: &[Target], answer: &mut Answer) {
        let mut seen: Vec<(u16, Name)> = Vec::new();
        for t in targets {
            if let Target::Address { port: Some(port), holder, .. } = t
                && !seen.contains(&(*port, holder.clone()))
            {
                seen.push((*port, holder.clone()));
            }
        }
        // CoreDNS shares the weight among every address found, before the records of one
        // target are merged (a dual-stack Service's one SRV record has weight 50).
        let found = targets.iter().filter(|t| matches!(t, Target::Address { port: Some(_), .. })).count();
        let weight = u16::try_from(100 / found.max(1)).unwrap_or(1).max(1);
        for (port, holder) in &seen {
            answer.answers.push(self.record(qname, RData::SRV(SRV::new(0, weight, *port, holder.clone()))));
        }
        let mut glued: Vec<(IpAddr, Name)> = Vec::new();
        for t in targets {
            if let Target::Address { ip, port: Some(_), holder } = t
                && !glued.contains(&(*ip, holder.clone()))
            {
                glued.push((*ip, holder.clone()));
                answer.additionals.push(self.record(holder, address(*ip)));
            }
        }
    }

    /// What `labels` (left of the zone, lowercase) name.
    fn find(&self, labels: &[&str]) -> Found {
        let empty = Found::Records(Vec::new());
        match labels {
            ["dns-version"] => Found::Records(vec![Target::Text(SCHEMA_VERSION.into())]),
            ["ns", "dns"] => {
                let holder = self.zone.clone();
                Found::Records(self.nameservers.iter().map(|ip| Target::Address { ip: *ip, port: None, holder: holder.clone() }).collect())
            }
            ["dns"] | ["svc"] | ["pod"] => empty,
            [ns, "svc" | "pod"] => {
                if self.namespaces.contains(*ns) {
                    empty
                } else {
                    Found::Missing
                }
            }
            [pod, ns, "pod"] => self.find_pod(pod, ns),
            [svc, ns, "svc"] => self.find_service(ns, svc, None, None),
            [endpoint, svc, ns, "svc"] => self.find_service(ns, svc, Some(endpoint), None),
            [port, proto, svc, ns, "svc"] => self.find_service(ns, svc, None, Some((port, proto))),
            _ => Found::Missing,
        }
    }

    fn find_pod(&self, pod: &str, ns: &str) -> Found {
        if self.pods == PodsMode::Disabled || !self.namespaces.contains(ns) {
            return Found::Missing;
        }
        // `a-b-c-d` for IPv4; IPv6 with its colons as dashes.
        let ip: Option<IpAddr> = if pod.matches('-').count() == 3 && !pod.contains("--") {
            pod.replace('-', ".").parse::<Ipv4Addr>().ok().map(IpAddr::V4)
        } else {
            pod.replace('-', ":").parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        };
        let Some(ip) = ip else { return Found::Missing };
        if self.pods == PodsMode::Verified && !self.live_pod_ips.get(&ip).is_some_and(|namespaces| namespaces.contains(ns)) {
            return Found::Missing;
        }
        Found::Records(vec![Target::Address { ip, port: None, holder: self.zone.clone() }])
    }

    /// A Service's records, optionally of one endpoint hostname or one `_port._proto`.
    fn find_service(&self, ns: &str, svc: &str, endpoint: Option<&str>, port: Option<(&str, &str)>) -> Found {
        let Some(service) = self.services.get(&(ns.to_owned(), svc.to_owned())) else {
            return Found::Missing;
        };
        let Ok(own) = Name::from_ascii(format!("{svc}.{ns}.svc")).and_then(|n| n.append_domain(&self.zone)) else {
            return Found::Missing;
        };
        let port_matches = |p: &Port| match port {
            None => true,
            Some((name, proto)) => {
                let (name, proto) = (name.strip_prefix('_').unwrap_or(name), proto.strip_prefix('_').unwrap_or(proto));
                (name == "*" || name == p.name) && (proto == "*" || proto == p.protocol)
            }
        };
        let endpoint_records = |endpoints: &[Endpoint]| -> Vec<Target> {
            let mut out = Vec::new();
            for e in endpoints.iter().filter(|e| endpoint.is_none_or(|h| h == e.hostname)) {
                let Ok(holder) = Name::from_ascii(&e.hostname).and_then(|h| h.append_domain(&own)) else {
                    continue;
                };
                for p in e.ports.iter().filter(|p| port_matches(p)) {
                    out.push(Target::Address { ip: e.ip, port: Some(p.number), holder: holder.clone() });
                }
                if e.ports.is_empty() && port.is_none() {
                    out.push(Target::Address { ip: e.ip, port: None, holder: holder.clone() });
                }
            }
            out
        };
        let targets = match service {
            Service::ExternalName(target) => {
                if endpoint.is_some() || port.is_some() {
                    return Found::Missing;
                }
                vec![Target::Alias(target.clone())]
            }
            Service::Headless { endpoints } => endpoint_records(endpoints),
            Service::ClusterIp { endpoints, .. } if endpoint.is_some() => endpoint_records(endpoints),
            Service::ClusterIp { ips, ports, .. } => {
                let mut out = Vec::new();
                for p in ports.iter().filter(|p| port_matches(p)) {
                    out.extend(ips.iter().map(|ip| Target::Address { ip: *ip, port: Some(p.number), holder: own.clone() }));
                }
                out
            }
        };
        // A headless Service without ready endpoints, or a port or endpoint it does not have: NXDOMAIN.
        if targets.is_empty() { Found::Missing } else { Found::Records(targets) }
    }

    /// PTR for a reverse name: a ClusterIP's Service, an endpoint's hostname name. Addresses of
    /// the cluster's networks without one are NXDOMAIN; others are not ours.
    fn lookup_reverse(&self, qname: &Name, ip: IpAddr, qtype: RecordType) -> Lookup {
        let Some(names) = self.reverse.get(&ip) else {
            // An address of the cluster's networks without a name: NXDOMAIN, from the reverse
            // zone that holds it.
            if let Some(net) = self.reverse_networks.iter().find(|n| n.contains(&ip)) {
                return Lookup::Answer(Answer { rcode: ResponseCode::NXDomain, authorities: vec![self.soa_of(&reverse_zone(net))], ..Default::default() });
            }
            return Lookup::NotOurs;
        };
        if qtype != RecordType::PTR {
            return self.negative(ResponseCode::NoError);
        }
        let answers = names.iter().map(|n| self.record(qname, RData::PTR(PTR(n.clone())))).collect();
        Lookup::Answer(Answer { answers, ..Default::default() })
    }
}

fn address(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

impl View {
    /// The reverse zones of the cluster's networks.
    fn reverse_zones(&self) -> Vec<Name> {
        self.reverse_networks.iter().map(reverse_zone).collect()
    }
}

/// The reverse zone of a network: its whole octets (IPv4) or nibbles (IPv6) reversed, as a
/// `kubernetes` plugin zone for that network is written (`10.0.0.0/16` → `0.10.in-addr.arpa.`).
fn reverse_zone(net: &ipnet::IpNet) -> Name {
    let text = match net {
        ipnet::IpNet::V4(n) => {
            let octets = n.network().octets();
            let whole = usize::from(n.prefix_len() / 8);
            let mut labels: Vec<String> = octets[..whole].iter().rev().map(u8::to_string).collect();
            labels.push("in-addr.arpa.".into());
            labels.join(".")
        }
        ipnet::IpNet::V6(n) => {
            let nibbles: Vec<String> = n.network().octets().iter().flat_map(|b| [b >> 4, b & 0xf]).map(|x| format!("{x:x}")).collect();
            let whole = usize::from(n.prefix_len() / 4);
            let mut labels: Vec<String> = nibbles[..whole].iter().rev().cloned().collect();
            labels.push("ip6.arpa.".into());
            labels.join(".")
        }
    };
    Name::from_ascii(&text).unwrap_or_else(|_| Name::root())
}

/// The address of a full reverse name (`d.c.b.a.in-addr.arpa.`, 32 nibbles `.ip6.arpa.`).
fn reverse_address(lower: &Name) -> Option<IpAddr> {
    let labels: Vec<&[u8]> = lower.iter().collect();
    match labels.as_slice() {
        [d, c, b, a, b"in-addr", b"arpa"] => {
            let octet = |l: &[u8]| std::str::from_utf8(l).ok()?.parse::<u8>().ok();
            Some(IpAddr::V4(Ipv4Addr::new(octet(a)?, octet(b)?, octet(c)?, octet(d)?)))
        }
        [nibbles @ .., b"ip6", b"arpa"] if nibbles.len() == 32 => {
            let mut value: u128 = 0;
            for l in nibbles.iter().rev() {
                let [c] = l else { return None };
                value = (value << 4) | u128::from((*c as char).to_digit(16)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(value)))
        }
        _ => None,
    }
}

/// The reverse name of an address.
pub fn reverse_name(ip: IpAddr) -> Name {
    let text = match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa.")
        }
        IpAddr::V6(v6) => {
            let hex = format!("{:032x}", u128::from(v6));
            let mut parts: Vec<String> = hex.chars().rev().map(String::from).collect();
            parts.push("ip6.arpa.".into());
            parts.join(".")
        }
    };
    Name::from_ascii(text).unwrap_or_else(|_| Name::root())
}
