//! A first packet through a rendered rule set, read rule by rule as nft evaluates it: what
//! `podnet proxy trace` answers. It is an interpreter of the rule language `render` writes (set
//! and map lookups on concatenations of `ip daddr`, `ip saddr`, `meta l4proto`, `th dport` and
//! `numgen`, verdict maps, marks, `fib saddr type local`, `dnat … map`, `masquerade`, `reject`,
//! `drop`, jumps and gotos), so that what the tool says is what the rules do, not a second
//! reading of the plan beside them. The plan's own `NodePlan::trace` stays as the oracle the
//! tests hold this against.
//!
//! The packet takes the kernel's path through the hooks: from another host or a pod,
//! `prerouting` (filter -110, nat -100) then `forward`/`input`; from the node itself, `output`
//! (filter -110, nat -100, filter -5); then `postrouting`. A new connection meets no affinity
//! entry, so ClientIP stickiness plays no part in a first packet. `numgen` is every bucket at
//! once: the trace lists every endpoint the packet may be sent to.

use std::net::IpAddr;

use ipnet::IpNet;
use model::Protocol;
use nftset::{Chain, Ruleset, Table};

use crate::plan::Trace;
use crate::render::TABLE;

/// The packet's state as it crosses the rules.
#[derive(Clone, Debug)]
struct Packet {
    src: IpAddr,
    /// The destination before DNAT (`ct original ip daddr`).
    original: IpAddr,
    dst: IpAddr,
    dport: u16,
    protocol: &'static str,
    from_node: bool,
    mark: u32,
    /// Every endpoint a DNAT may choose (empty: not DNATed).
    dnat: Vec<(IpAddr, u16)>,
    masquerade: bool,
}

/// How a chain's evaluation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// Off the end of the chain: the caller goes on.
    Continue,
    /// `return`, or the end of a chain reached by `goto`: this chain ends too, its caller goes on.
    Return,
    Accept,
    Drop,
    Reject,
}

/// Where nft stops: a rule it cannot read is an error, named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable(pub String);

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot trace rule {:?}", self.0)
    }
}

impl std::error::Error for Unreadable {}

/// What the node's rules do with a first packet from `src` to `dst:dport`. `local` are the
/// node's own addresses (`fib saddr type local`; a packet from one of them takes `output`).
pub fn trace(ruleset: &Ruleset, local: &[IpAddr], src: IpAddr, dst: IpAddr, dport: u16, protocol: Protocol) -> Result<Trace, Unreadable> {
    let family = if dst.is_ipv6() { nftset::Family::Ip6 } else { nftset::Family::Ip };
    let Some(table) = ruleset.tables.get(&(family, TABLE.to_owned())) else {
        return Ok(Trace { verdict: "ACCEPT", endpoints: Vec::new(), masquerade: false });
    };
    let mut p = Packet {
        src,
        original: dst,
        dst,
        dport,
        protocol: match protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        },
        from_node: local.contains(&src),
        mark: 0,
        dnat: Vec::new(),
        masquerade: false,
    };
    let eval = Eval { table, local };
    let hooks: &[&str] = if p.from_node {
        &["filter-output-firewall", "nat-output", "filter-output", "nat-postrouting"]
    } else {
        &["filter-prerouting", "nat-prerouting", "filter-forward", "nat-postrouting"]
    };
    for hook in hooks {
        let Some(chain) = table.chains.get(*hook) else { continue };
        match eval.chain(chain, &mut p, 0)? {
            Outcome::Continue | Outcome::Return | Outcome::Accept => {}
            Outcome::Drop => return Ok(done("DROP")),
            Outcome::Reject => return Ok(done("REJECT")),
        }
    }
    if p.dnat.is_empty() {
        return Ok(done("ACCEPT"));
    }
    let mut endpoints: Vec<String> = p.dnat.iter().map(|(ip, port)| std::net::SocketAddr::new(*ip, *port).to_string()).collect();
    endpoints.sort();
    endpoints.dedup();
    Ok(Trace { verdict: "DNAT", endpoints, masquerade: p.masquerade })
}

fn done(verdict: &'static str) -> Trace {
    Trace { verdict, endpoints: Vec::new(), masquerade: false }
}

struct Eval<'a> {
    table: &'a Table,
    local: &'a [IpAddr],
}

/// One field of a concatenation, read off the packet.
fn field(p: &Packet, words: &[&str]) -> Option<(Vec<String>, usize)> {
    let one = |s: String, n: usize| Some((vec![s], n));
    match words {
        // After a DNAT, every endpoint it may have chosen.
        ["ip" | "ip6", "daddr", ..] if !p.dnat.is_empty() => Some((distinct(p.dnat.iter().map(|(ip, _)| ip.to_string())), 2)),
        ["th", "dport", ..] if !p.dnat.is_empty() => Some((distinct(p.dnat.iter().map(|(_, port)| port.to_string())), 2)),
        ["ip" | "ip6", "daddr", ..] => one(p.dst.to_string(), 2),
        ["ip" | "ip6", "saddr", ..] => one(p.src.to_string(), 2),
        ["meta", "l4proto", ..] => one(p.protocol.to_owned(), 2),
        ["th", "dport", ..] => one(p.dport.to_string(), 2),
        ["ct", "original", "ip" | "ip6", "daddr", ..] => one(p.original.to_string(), 4),
        ["ct", "mark", ..] => one("0".into(), 2),
        ["numgen", "random", "mod", n, ..] => {
            let n: usize = n.parse().ok()?;
            Some(((0..n).map(|i| i.to_string()).collect(), 4))
        }
        _ => None,
    }
}

fn distinct(values: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = values.collect();
    out.sort();
    out.dedup();
    out
}

/// A concatenation `a . b . c` at the start of `words`: every key it can take (several with
/// `numgen`), and how many words it used.
fn selector(p: &Packet, words: &[&str]) -> Option<(Vec<String>, usize)> {
    let (mut keys, mut used) = field(p, words)?;
    while words.get(used) == Some(&".") {
        let (next, n) = field(p, &words[used + 1..])?;
        keys = keys.iter().flat_map(|k| next.iter().map(move |v| format!("{k} . {v}"))).collect();
        used += 1 + n;
    }
    Some((keys, used))
}

/// Whether an element's key (`10.96.0.1 . tcp . 80`, with prefixes in interval sets) holds `key`.
fn element_holds(element: &str, key: &str) -> bool {
    let (have, want): (Vec<&str>, Vec<&str>) = (element.split(" . ").collect(), key.split(" . ").collect());
    have.len() == want.len()
        && have.iter().zip(&want).all(|(h, w)| match (h.parse::<IpNet>(), w.parse::<IpAddr>()) {
            (Ok(net), Ok(ip)) if h.contains('/') => net.contains(&ip),
            _ => {
                // Addresses compare as addresses (nft prints them canonically, as we do).
                match (h.parse::<IpAddr>(), w.parse::<IpAddr>()) {
                    (Ok(a), Ok(b)) => a == b,
                    _ => h == w,
                }
            }
        })
}

impl Eval<'_> {
    /// The value of the first element of `set` holding `key` (`Some(None)` for a set element).
    fn lookup(&self, set: &str, key: &str) -> Option<Option<String>> {
        let s = self.table.sets.get(set)?;
        if let Some(v) = s.elements.get(key) {
            return Some(v.clone());
        }
        s.elements.iter().find(|(k, _)| element_holds(k, key)).map(|(_, v)| v.clone())
    }

    fn chain(&self, chain: &Chain, p: &mut Packet, depth: usize) -> Result<Outcome, Unreadable> {
        if depth > 16 {
            return Err(Unreadable("jumps nested deeper than 16".into()));
        }
        for rule in &chain.rules {
            match self.rule(rule, p, depth)? {
                None | Some(Outcome::Continue) => {}
                Some(Outcome::Return) => return Ok(Outcome::Continue),
                Some(end) => return Ok(end),
            }
        }
        Ok(Outcome::Continue)
    }

    fn goto(&self, name: &str, p: &mut Packet, depth: usize) -> Result<Outcome, Unreadable> {
        let chain = self.table.chains.get(name).ok_or_else(|| Unreadable(format!("goto {name}: no such chain")))?;
        self.chain(chain, p, depth + 1)
    }

    /// A verdict as written in a map value or a rule (`goto cluster-2`, `drop`).
    fn verdict(&self, text: &str, p: &mut Packet, depth: usize) -> Result<Option<Outcome>, Unreadable> {
        let words: Vec<&str> = text.split_whitespace().collect();
        Ok(Some(match words.as_slice() {
            ["accept"] => Outcome::Accept,
            ["drop"] => Outcome::Drop,
            ["return"] => Outcome::Return,
            ["continue"] => return Ok(None),
            ["jump", chain] => match self.goto(chain, p, depth)? {
                // A jump comes back to the next rule.
                Outcome::Continue | Outcome::Return => return Ok(None),
                other => other,
            },
            // A goto does not come back: the end of its chain ends this one.
            ["goto", chain] => match self.goto(chain, p, depth)? {
                Outcome::Continue | Outcome::Return => Outcome::Return,
                other => other,
            },
            _ => return Err(Unreadable(text.to_owned())),
        }))
    }

    /// One rule: `None` when it does not match (or matched without a verdict), else how the
    /// chain ends.
    fn rule(&self, rule: &str, p: &mut Packet, depth: usize) -> Result<Option<Outcome>, Unreadable> {
        let unreadable = || Unreadable(rule.to_owned());
        let words: Vec<&str> = rule.split_whitespace().collect();
        let mut i = 0;
        while i < words.len() {
            let rest = &words[i..];
            match rest {
                ["ct", "state", "new", ..] => i += 3,
                ["ct", "status", "dnat", ..] => {
                    if p.dnat.is_empty() {
                        return Ok(None);
                    }
                    i += 3;
                }
                ["fib", "saddr", "type", "local", ..] => {
                    if !self.local.contains(&p.src) {
                        return Ok(None);
                    }
                    i += 4;
                }
                ["meta", "l4proto", "{", ..] => {
                    // A protocol set literal: `meta l4proto { tcp, udp, sctp }`.
                    let end = rest.iter().position(|w| *w == "}").ok_or_else(unreadable)?;
                    if !rest[3..end].iter().any(|w| w.trim_end_matches(',') == p.protocol) {
                        return Ok(None);
                    }
                    i += end + 1;
                }
                ["meta", "l4proto", proto @ ("tcp" | "udp" | "sctp"), ..] => {
                    if *proto != p.protocol {
                        return Ok(None);
                    }
                    i += 3;
                }
                ["meta", "mark", "&", bits, "==", "0", ..] => {
                    if p.mark & parse_u32(bits).ok_or_else(unreadable)? != 0 {
                        return Ok(None);
                    }
                    i += 6;
                }
                ["meta", "mark", "set", "meta", "mark", op @ ("|" | "^"), bits, ..] => {
                    let bits = parse_u32(bits).ok_or_else(unreadable)?;
                    p.mark = if *op == "|" { p.mark | bits } else { p.mark ^ bits };
                    i += 7;
                }
                ["ct", "mark", "set", ..] => {
                    // ClientIP affinity's id for the connection: no remembered client for a
                    // first packet, so nothing it does changes where the packet goes.
                    let end = rest.iter().position(|w| w.starts_with('@')).ok_or_else(unreadable)?;
                    i += end + 1;
                }
                ["update", ..] => return Ok(None),
                ["masquerade", ..] => {
                    p.masquerade = true;
                    return Ok(Some(Outcome::Accept));
                }
                ["reject", ..] => return Ok(Some(Outcome::Reject)),
                ["dnat", "ip" | "ip6", "to", ..] => {
                    let (keys, used) = selector(p, &rest[3..]).ok_or_else(unreadable)?;
                    let map = rest.get(3 + used + 1).and_then(|m| m.strip_prefix('@')).ok_or_else(unreadable)?;
                    if rest.get(3 + used) != Some(&"map") {
                        return Err(unreadable());
                    }
                    if map == "affinity" {
                        // ClientIP affinity: a first packet has no entry there.
                        i += 3 + used + 2;
                        continue;
                    }
                    let mut targets = Vec::new();
                    for key in keys {
                        if let Some(Some(value)) = self.lookup(map, &key) {
                            let (ip, port) = value.split_once(" . ").ok_or_else(unreadable)?;
                            targets.push((ip.parse().map_err(|_| unreadable())?, port.parse().map_err(|_| unreadable())?));
                        }
                    }
                    if targets.is_empty() {
                        // No element: nft drops a packet whose NAT map has no entry.
                        return Ok(Some(Outcome::Drop));
                    }
                    p.dst = targets[0].0;
                    p.dport = targets[0].1;
                    p.dnat = targets;
                    return Ok(Some(Outcome::Accept));
                }
                ["jump" | "goto", _, ..] | ["drop", ..] | ["accept", ..] | ["return", ..] => {
                    return self.verdict(&rest.join(" "), p, depth);
                }
                _ => {
                    // A lookup: `SELECTOR [!=] @set`, or `SELECTOR vmap @map`.
                    let (keys, used) = selector(p, rest).ok_or_else(unreadable)?;
                    let after = &rest[used..];
                    match after {
                        ["vmap", map, ..] => {
                            let map = map.strip_prefix('@').ok_or_else(unreadable)?;
                            let value = keys.iter().find_map(|k| self.lookup(map, k)).flatten();
                            return match value {
                                Some(v) => self.verdict(&v, p, depth),
                                None => Ok(None),
                            };
                        }
                        ["!=", set, ..] => {
                            let set = set.strip_prefix('@').ok_or_else(unreadable)?;
                            if keys.iter().any(|k| self.lookup(set, k).is_some()) {
                                return Ok(None);
                            }
                            i += used + 2;
                        }
                        [set, ..] if set.starts_with('@') => {
                            if !keys.iter().any(|k| self.lookup(&set[1..], k).is_some()) {
                                return Ok(None);
                            }
                            i += used + 1;
                        }
                        _ => return Err(unreadable()),
                    }
                }
            }
        }
        Ok(None)
    }
}

fn parse_u32(text: &str) -> Option<u32> {
    match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}
