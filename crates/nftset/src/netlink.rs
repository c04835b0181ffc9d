//! Set and map elements as the kernel takes them: one nfnetlink batch of `NEWSETELEM`
//! messages. nft's parser spends ~5 µs on each element it reads from text (most of a
//! 30k-Service load); this encoding costs a fraction of a microsecond. Only sets whose
//! declarations are listed here are encoded (plain, fixed-size keys: addresses, protocols,
//! ports, marks, `numgen` buckets; verdict or value data); others, such as interval sets, stay
//! in the nft text. Still no I/O: `dataplane` sends the bytes.
//!
//! Layouts are those of `linux/netfilter/nf_tables.h` and `nfnetlink.h`, and of nft's own
//! encoding: each field of a concatenation takes a multiple of 4 bytes (a 32-bit register),
//! ports and addresses in network order, marks and integers in host order.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::{Family, Set};

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_GEN_ID: u16 = 1;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
/// libnftnl's type of an element comment in its user data (`NFTNL_UDATA_SET_ELEM_COMMENT`).
const NFTNL_UDATA_SET_ELEM_COMMENT: u8 = 0;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

/// Bytes of element attributes per message: an attribute's length is 16 bits.
const ELEMENTS_PER_MESSAGE_BYTES: usize = 60_000;

/// One field of a key or of map data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Ipv4,
    Ipv6,
    Protocol,
    Service,
    /// A 32-bit value in host order: a mark, a `numgen` bucket.
    Host32,
}

impl Field {
    fn from_type(name: &str) -> Option<Field> {
        Some(match name {
            "ipv4_addr" => Field::Ipv4,
            "ipv6_addr" => Field::Ipv6,
            "inet_proto" => Field::Protocol,
            "inet_service" => Field::Service,
            "mark" => Field::Host32,
            _ => return None,
        })
    }

    fn from_expression(expr: &str) -> Option<Field> {
        Some(match expr {
            "ip saddr" | "ip daddr" => Field::Ipv4,
            "ip6 saddr" | "ip6 daddr" => Field::Ipv6,
            "meta l4proto" => Field::Protocol,
            "th dport" | "th sport" | "tcp dport" | "udp dport" | "sctp dport" => Field::Service,
            "meta mark" | "ct mark" => Field::Host32,
            e if e.starts_with("numgen ") => Field::Host32,
            _ => return None,
        })
    }

    fn encode(self, text: &str, out: &mut Vec<u8>) -> Option<()> {
        match self {
            Field::Ipv4 => out.extend(text.parse::<Ipv4Addr>().ok()?.octets()),
            Field::Ipv6 => out.extend(text.parse::<Ipv6Addr>().ok()?.octets()),
            Field::Protocol => out.push(match text {
                "tcp" => 6,
                "udp" => 17,
                "sctp" => 132,
                "icmp" => 1,
                "icmpv6" => 58,
                n => n.parse().ok()?,
            }),
            Field::Service => out.extend(text.parse::<u16>().ok()?.to_be_bytes()),
            Field::Host32 => {
                let n = match text.strip_prefix("0x") {
                    Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                    None => text.parse().ok()?,
                };
                out.extend(n.to_ne_bytes());
            }
        }
        Some(())
    }
}

/// A value's fields; a concatenation pads each to 4 bytes, a single field is its own size.
fn encode_fields(fields: &[Field], text: &str) -> Option<Vec<u8>> {
    let parts: Vec<&str> = text.split(" . ").map(str::trim).collect();
    if parts.len() != fields.len() {
        return None;
    }
    let mut out = Vec::with_capacity(fields.len() * 16);
    for (field, part) in fields.iter().zip(parts) {
        field.encode(part, &mut out)?;
        if fields.len() > 1 {
            out.resize(out.len().next_multiple_of(4), 0);
        }
    }
    Some(out)
}

#[derive(Debug, PartialEq, Eq)]
enum Data {
    None,
    Fields(Vec<Field>),
    Verdict,
}

/// How a set's elements are encoded, from its declaration; `None` when this module does not
/// encode it (flags such as `interval` or `timeout`, or a type it does not know).
#[derive(Debug, PartialEq, Eq)]
struct Layout {
    key: Vec<Field>,
    data: Data,
}

fn layout(set: &Set) -> Option<Layout> {
    let spec = set.spec.trim().trim_end_matches(';');
    if spec.contains(';') {
        return None; // flags, timeouts, sizes: left to nft
    }
    let (typeof_, rest) = match spec.split_once(' ')? {
        ("type", rest) => (false, rest),
        ("typeof", rest) => (true, rest),
        _ => return None,
    };
    let (key, data) = match rest.split_once(" : ") {
        Some((k, d)) => (k, Some(d)),
        None => (rest, None),
    };
    let fields = |text: &str| -> Option<Vec<Field>> {
        text.split(" . ").map(str::trim).map(|f| if typeof_ { Field::from_expression(f) } else { Field::from_type(f) }).collect()
    };
    let data = match data.map(str::trim) {
        None => Data::None,
        Some("verdict") => Data::Verdict,
        Some(d) => Data::Fields(fields(d)?),
    };
    if set.is_map == (data == Data::None) {
        return None;
    }
    Some(Layout { key: fields(key)?, data })
}

/// Whether a set's elements can go in an element batch.
pub fn encodable(set: &Set) -> bool {
    layout(set).is_some()
}

fn verdict_code(text: &str) -> Option<(i32, Option<&str>)> {
    let mut words = text.split_whitespace();
    let code = match words.next()? {
        "accept" => 1,
        "drop" => 0,
        "continue" => -1,
        "return" => -5,
        "jump" => return Some((-3, Some(words.next()?))),
        "goto" => return Some((-4, Some(words.next()?))),
        _ => return None,
    };
    Some((code, None))
}

/// Netlink attributes, appended to a buffer with their alignment.
struct Attrs<'a>(&'a mut Vec<u8>);

impl Attrs<'_> {
    fn put(&mut self, kind: u16, payload: &[u8]) {
        let len = 4 + payload.len();
        self.0.extend((len as u16).to_ne_bytes());
        self.0.extend(kind.to_ne_bytes());
        self.0.extend(payload);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
    }

    fn put_str(&mut self, kind: u16, s: &str) {
        let mut bytes = s.as_bytes().to_vec();
        bytes.push(0);
        self.put(kind, &bytes);
    }

    /// Starts a nested attribute; `end` writes its length.
    fn begin(&mut self, kind: u16) -> usize {
        let at = self.0.len();
        self.0.extend([0, 0]);
        self.0.extend((kind | NLA_F_NESTED).to_ne_bytes());
        at
    }

    fn end(&mut self, at: usize) {
        let len = (self.0.len() - at) as u16;
        self.0[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }
}

fn nfproto(family: Family) -> u8 {
    match family {
        Family::Ip => 2,
        Family::Ip6 => 10,
        Family::Inet => 1,
        Family::Bridge => 7,
    }
}

/// Appends a message header (length filled in by `finish`) and the nfgenmsg.
fn message(out: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
    let at = out.len();
    out.extend(0u32.to_ne_bytes());
    out.extend(kind.to_ne_bytes());
    out.extend(flags.to_ne_bytes());
    out.extend(seq.to_ne_bytes());
    out.extend(0u32.to_ne_bytes());
    out.extend([family, 0]);
    out.extend(res_id.to_be_bytes());
    at
}

fn finish(out: &mut [u8], at: usize) {
    let len = (out.len() - at) as u32;
    out[at..at + 4].copy_from_slice(&len.to_ne_bytes());
}

/// An element that cannot be encoded: which set, which element.
#[derive(Debug, PartialEq, Eq)]
pub struct EncodeError {
    /// The set's name.
    pub set: String,
    /// The element's text.
    pub element: String,
}

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "set {}: cannot encode element {:?}", self.set, self.element)
    }
}

impl std::error::Error for EncodeError {}

/// One transaction adding the elements of `sets` (each `encodable`) to table `table`: a batch
/// of `NEWSETELEM` messages, the last asking for an acknowledgement, so that the sender knows
/// when the kernel has committed it. Message sequence numbers start at `seq`.
pub fn element_batch<'a>(family: Family, table: &str, sets: impl IntoIterator<Item = (&'a str, &'a Set)>, seq: u32) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    let mut seq = seq;
    let subsys = NFNL_SUBSYS_NFTABLES;
    let begin = message(&mut out, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, 0, subsys);
    finish(&mut out, begin);
    let mut last_message = None;
    for (name, set) in sets {
        let bad = |element: &str| EncodeError { set: name.to_owned(), element: element.to_owned() };
        let Some(layout) = layout(set) else {
            return Err(bad("(the set's declaration)"));
        };
        let mut elements = set.elements.iter().peekable();
        while elements.peek().is_some() {
            seq += 1;
            let at = message(&mut out, (subsys << 8) | NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE, seq, nfproto(family), 0);
            last_message = Some(at);
            let mut a = Attrs(&mut out);
            a.put_str(NFTA_SET_ELEM_LIST_TABLE, table);
            a.put_str(NFTA_SET_ELEM_LIST_SET, name);
            let list = a.begin(NFTA_SET_ELEM_LIST_ELEMENTS);
            while let Some((key, value)) = elements.next_if(|_| a.0.len() - list < ELEMENTS_PER_MESSAGE_BYTES) {
                let element = a.begin(NFTA_LIST_ELEM);
                let key_bytes = encode_fields(&layout.key, key).ok_or_else(|| bad(key))?;
                let k = a.begin(NFTA_SET_ELEM_KEY);
                a.put(NFTA_DATA_VALUE, &key_bytes);
                a.end(k);
                match (&layout.data, value) {
                    (Data::None, None) => {}
                    (Data::Fields(fields), Some(v)) => {
                        let bytes = encode_fields(fields, v).ok_or_else(|| bad(v))?;
                        let d = a.begin(NFTA_SET_ELEM_DATA);
                        a.put(NFTA_DATA_VALUE, &bytes);
                        a.end(d);
                    }
                    (Data::Verdict, Some(v)) => {
                        let (code, chain) = verdict_code(v).ok_or_else(|| bad(v))?;
                        let d = a.begin(NFTA_SET_ELEM_DATA);
                        let verdict = a.begin(NFTA_DATA_VERDICT);
                        a.put(NFTA_VERDICT_CODE, &code.to_be_bytes());
                        if let Some(chain) = chain {
                            a.put_str(NFTA_VERDICT_CHAIN, chain);
                        }
                        a.end(verdict);
                        a.end(d);
                    }
                    _ => return Err(bad(key)),
                }
                if let Some(comment) = set.comments.get(key) {
                    // libnftnl's user data: type, length, the string with its NUL.
                    let text = crate::clip_comment(comment).as_bytes();
                    let mut udata = vec![NFTNL_UDATA_SET_ELEM_COMMENT, (text.len() + 1) as u8];
                    udata.extend(text);
                    udata.push(0);
                    a.put(NFTA_SET_ELEM_USERDATA, &udata);
                }
                a.end(element);
            }
            a.end(list);
            finish(&mut out, at);
        }
    }
    if let Some(at) = last_message {
        let flags = u16::from_ne_bytes([out[at + 6], out[at + 7]]) | NLM_F_ACK;
        out[at + 6..at + 8].copy_from_slice(&flags.to_ne_bytes());
    }
    let end = message(&mut out, NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq + 1, 0, subsys);
    finish(&mut out, end);
    Ok(out)
}

/// A `GETTABLE` request for one table: the answer is the table, or an error (`ENOENT`).
pub fn get_table(family: Family, table: &str, seq: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let at = message(&mut out, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE, NLM_F_REQUEST | NLM_F_ACK, seq, nfproto(family), 0);
    Attrs(&mut out).put_str(NFTA_TABLE_NAME, table);
    finish(&mut out, at);
    out
}

/// A request for the namespace's ruleset generation: a counter the kernel bumps on every
/// committed nftables transaction, by anyone. Reading it is one small message, so a periodic
/// "has anyone touched the rules?" check costs the same for a table of any size.
pub fn get_generation(seq: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let at = message(&mut out, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN, NLM_F_REQUEST, seq, 0, 0);
    finish(&mut out, at);
    out
}

/// The generation in a `NEWGEN` answer (the messages of one receive), if there is one.
pub fn parse_generation(answer: &[u8]) -> Option<u32> {
    let mut at = 0;
    while at + 16 <= answer.len() {
        let len = u32::from_ne_bytes(answer[at..at + 4].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(answer[at + 4..at + 6].try_into().ok()?);
        if len < 16 || at + len > answer.len() {
            return None;
        }
        if kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN {
            // nlmsghdr (16), nfgenmsg (4), then attributes.
            let mut a = at + 20;
            while a + 4 <= at + len {
                let alen = usize::from(u16::from_ne_bytes(answer[a..a + 2].try_into().ok()?));
                let akind = u16::from_ne_bytes(answer[a + 2..a + 4].try_into().ok()?) & !NLA_F_NESTED;
                if alen < 4 || a + alen > at + len {
                    return None;
                }
                if akind == NFTA_GEN_ID && alen >= 8 {
                    return Some(u32::from_be_bytes(answer[a + 4..a + 8].try_into().ok()?));
                }
                a += alen.next_multiple_of(4);
            }
        }
        at += len.next_multiple_of(4);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_requests_and_answers() {
        let req = get_generation(7);
        assert_eq!(req.len(), 20);
        assert_eq!(u16::from_ne_bytes([req[4], req[5]]), (10 << 8) | 16);
        // An answer as the kernel sends it: NEWGEN with the id, the pid and the process name.
        let mut answer = Vec::new();
        let at = message(&mut answer, (10 << 8) | 15, 0, 7, 0, 0);
        Attrs(&mut answer).put(NFTA_GEN_ID, &42u32.to_be_bytes());
        Attrs(&mut answer).put(2, &1234u32.to_be_bytes());
        finish(&mut answer, at);
        assert_eq!(parse_generation(&answer), Some(42));
        assert_eq!(parse_generation(&answer[..10]), None);
        assert_eq!(parse_generation(&req), None);
    }

    fn set(spec: &str, elements: &[(&str, Option<&str>)]) -> Set {
        Set {
            is_map: elements.first().is_some_and(|(_, v)| v.is_some()) || spec.contains(" : "),
            spec: spec.into(),
            elements: elements.iter().map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned))).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn layouts_come_from_type_and_typeof_declarations() {
        let frontends = set("type ipv4_addr . inet_proto . inet_service : verdict;", &[]);
        assert_eq!(layout(&frontends), Some(Layout { key: vec![Field::Ipv4, Field::Protocol, Field::Service], data: Data::Verdict }));
        let endpoints = set("typeof ip6 daddr . meta l4proto . th dport . numgen random mod 1 : ip6 daddr . th dport;", &[]);
        assert_eq!(
            layout(&endpoints),
            Some(Layout { key: vec![Field::Ipv6, Field::Protocol, Field::Service, Field::Host32], data: Data::Fields(vec![Field::Ipv6, Field::Service]) })
        );
        assert!(encodable(&set("type ipv4_addr;", &[])));
        // Left to nft: intervals, timeouts, unknown types.
        assert!(!encodable(&set("type ipv4_addr; flags interval;", &[])));
        assert!(!encodable(&set("type ipv4_addr . ipv4_addr : ipv4_addr . inet_service; flags timeout;", &[])));
        assert!(!encodable(&set("type ether_addr;", &[])));
    }

    #[test]
    fn concatenations_pad_each_field_to_a_register() {
        let key = encode_fields(&[Field::Ipv4, Field::Protocol, Field::Service, Field::Host32], "10.96.0.1 . tcp . 80 . 3").unwrap();
        let mut want = vec![10, 96, 0, 1, 6, 0, 0, 0, 0, 80, 0, 0];
        want.extend(3u32.to_ne_bytes());
        assert_eq!(key, want);
        // A single field is its own size.
        assert_eq!(encode_fields(&[Field::Service], "443").unwrap(), vec![1, 187]);
        assert_eq!(encode_fields(&[Field::Host32], "0x10").unwrap(), 16u32.to_ne_bytes().to_vec());
        assert_eq!(encode_fields(&[Field::Ipv4, Field::Service], "10.0.0.1"), None, "too few fields");
        assert_eq!(encode_fields(&[Field::Ipv4], "10.0.0.300"), None);
    }

    #[test]
    fn a_batch_is_framed_and_its_last_message_asks_for_an_ack() {
        let s = set(
            "type ipv4_addr . inet_proto . inet_service : verdict;",
            &[("10.96.0.1 . tcp . 80", Some("goto cluster-1")), ("10.96.0.2 . udp . 53", Some("drop"))],
        );
        let bytes = element_batch(Family::Ip, "podnet-proxy", [("frontends", &s)], 7).unwrap();
        // Walk the messages: begin, one NEWSETELEM, end.
        let mut kinds = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let len = u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes([bytes[at + 4], bytes[at + 5]]);
            let flags = u16::from_ne_bytes([bytes[at + 6], bytes[at + 7]]);
            kinds.push((kind, flags & NLM_F_ACK != 0, bytes[at + 16]));
            at += len;
        }
        assert_eq!(at, bytes.len());
        assert_eq!(kinds, [(0x10, false, 0), (0x0a0c, true, 2), (0x11, false, 0)]);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("podnet-proxy\0") && text.contains("frontends\0") && text.contains("cluster-1\0"));
    }

    #[test]
    fn large_sets_are_split_over_messages_and_bad_elements_are_named() {
        let elements: Vec<(String, Option<&str>)> = (0..10_000).map(|i| (format!("10.96.{}.{}", i / 256, i % 256), None)).collect();
        let refs: Vec<(&str, Option<&str>)> = elements.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let s = set("type ipv4_addr;", &refs);
        let bytes = element_batch(Family::Ip, "t", [("cluster-ips", &s)], 1).unwrap();
        let mut messages = 0;
        let mut at = 0;
        while at < bytes.len() {
            let len = u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            assert!(len < 65_536);
            messages += 1;
            at += len;
        }
        assert!(messages > 3, "{messages}");
        let bad = set("type ipv4_addr;", &[("10.0.0.1", None), ("nonsense", None)]);
        assert_eq!(element_batch(Family::Ip, "t", [("s", &bad)], 1).unwrap_err(), EncodeError { set: "s".into(), element: "nonsense".into() });
    }
}
