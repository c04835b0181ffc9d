//! Whole responses kept by question, so that a repeated question costs a hash lookup and a
//! copy instead of parsing, looking up and encoding. A zone answer depends only on the view,
//! the question (name case-insensitively, type, class) and what shapes the response (EDNS and
//! its DO bit, the size limit, whether the client may recurse); the id and the RD and CD bits
//! are the client's, and are written into the copy. The name is kept as spelled: answers spell
//! the zone as the question did (CoreDNS's), so two spellings are two answers. Only plain queries
//! take this path (one question, at most an OPT record, nothing unusual); the cache belongs to
//! one view and goes with it.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::message::{MAX_UDP_PAYLOAD, Recursion, Transport};

/// Responses kept at most; a full cache is emptied and starts over.
const MAX_ENTRIES: usize = 100_000;

/// The key of a plain query, and where its question name is.
pub struct Plain {
    key: Vec<u8>,
    name_end: usize,
}

/// Reads a plain query: header, one question, at most an OPT record, nothing after.
pub fn parse(bytes: &[u8], transport: Transport, recursion: Recursion) -> Option<Plain> {
    if bytes.len() < 17 || bytes[2] & 0xf8 != 0 {
        return None; // a response, or an opcode other than QUERY
    }
    let count = |at: usize| u16::from_be_bytes([bytes[at], bytes[at + 1]]);
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    if qd != 1 || an != 0 || ns != 0 || ar > 1 {
        return None;
    }
    let mut key = Vec::with_capacity(64);
    let mut at = 12;
    loop {
        let len = usize::from(*bytes.get(at)?);
        if len == 0 {
            break;
        }
        if len > 63 || at + 1 + len >= bytes.len() {
            return None; // compression in a question, or cut short
        }
        key.push(len as u8);
        // As spelled: answers carry the zone in the question's case.
        key.extend_from_slice(&bytes[at + 1..at + 1 + len]);
        at += 1 + len;
    }
    let name_end = at + 1;
    if name_end - 12 > 255 || name_end + 4 > bytes.len() {
        return None;
    }
    let (qtype, qclass) = (count(name_end), count(name_end + 2));
    // Class IN, and not ANY / AXFR / IXFR (the slow path gives their codes).
    if qclass != 1 || matches!(qtype, 255 | 252 | 251) {
        return None;
    }
    key.extend([0, bytes[name_end], bytes[name_end + 1]]);
    let mut at = name_end + 4;
    let (edns, dnssec_ok, payload) = if ar == 1 {
        // OPT: root name, type 41, class = payload size, ttl = ext-rcode, version, flags.
        let opt = bytes.get(at..at + 11)?;
        if opt[0] != 0 || opt[1..3] != [0, 41] || opt[6] != 0 {
            return None; // not OPT, or an EDNS version above 0
        }
        let rdlen = usize::from(u16::from_be_bytes([opt[9], opt[10]]));
        at += 11;
        // Options (cookies, padding, ...) must be well formed; they do not shape the response.
        let end = at + rdlen;
        while at < end {
            let len = usize::from(u16::from_be_bytes([*bytes.get(at + 2)?, *bytes.get(at + 3)?]));
            at += 4 + len;
        }
        if at != end {
            return None;
        }
        (1, opt[7] & 0x80, u16::from_be_bytes([opt[3], opt[4]]))
    } else {
        (0, 0, 0)
    };
    if at != bytes.len() {
        return None;
    }
    let limit: u16 = match (transport, edns) {
        (Transport::Tcp, _) => u16::MAX,
        (Transport::Udp, 0) => 512,
        (Transport::Udp, _) => payload.clamp(512, MAX_UDP_PAYLOAD),
    };
    key.extend([edns, dnssec_ok, u8::from(recursion == Recursion::Allowed)]);
    key.extend(limit.to_be_bytes());
    Some(Plain { key, name_end })
}

/// The responses of one view.
#[derive(Default)]
pub struct Answers {
    map: Mutex<HashMap<Vec<u8>, Kept, fnv::FnvBuildHasher>>,
}

/// A kept response, and until when it may be sent (forwarded answers: at most a second, so
/// that the TTLs the client sees never run more than a second behind the forwarder's cache).
struct Kept {
    bytes: Box<[u8]>,
    until: Option<std::time::Instant>,
}

impl Answers {
    /// The kept response for `query`, made the client's own.
    pub fn get(&self, plain: &Plain, query: &[u8]) -> Option<Vec<u8>> {
        let map = self.map.lock().ok()?;
        let kept = map.get(&plain.key)?;
        if kept.until.is_some_and(|until| until <= std::time::Instant::now()) {
            return None;
        }
        let mut out = kept.bytes.to_vec();
        drop(map);
        out[0..2].copy_from_slice(&query[0..2]); // id
        out[2] = (out[2] & !0x01) | (query[2] & 0x01); // RD
        out[3] = (out[3] & !0x10) | (query[3] & 0x10); // CD
        out[12..plain.name_end].copy_from_slice(&query[12..plain.name_end]); // the name as spelled
        Some(out)
    }

    /// Keeps `response` for questions like `plain`'s, if it answers that question (it echoes
    /// it and is no FORMERR, which depends on more than the question).
    pub fn put(&self, plain: Plain, response: &[u8]) {
        self.keep(plain, response, None);
    }

    /// Keeps a forwarded `response` for one second (see [`Kept`]).
    pub fn put_forwarded(&self, plain: Plain, response: &[u8]) {
        self.keep(plain, response, Some(std::time::Instant::now() + std::time::Duration::from_secs(1)));
    }

    fn keep(&self, plain: Plain, response: &[u8], until: Option<std::time::Instant>) {
        let echoes_question = response.len() >= plain.name_end + 4 && response[4..6] == [0, 1] && response[3] & 0x0f != 1;
        if !echoes_question {
            return;
        }
        let Ok(mut map) = self.map.lock() else { return };
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(plain.key, Kept { bytes: response.into(), until });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Message, Query};
    use hickory_proto::rr::{Name, RecordType};

    fn query(name: &str, edns: bool) -> Vec<u8> {
        let mut q = Message::query();
        q.metadata.id = 7;
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        if edns {
            q.set_edns(Edns::new());
        }
        q.to_vec().unwrap()
    }

    #[test]
    fn plain_queries_key_on_the_question_as_spelled_and_the_response_shape() {
        let a = parse(&query("web.default.svc.cluster.local.", false), Transport::Udp, Recursion::Allowed).unwrap();
        let b = parse(&query("web.default.svc.cluster.local.", false), Transport::Udp, Recursion::Allowed).unwrap();
        assert_eq!(a.key, b.key);
        // Another spelling is another answer: names in it follow the zone's case as asked.
        let upper = parse(&query("web.default.svc.CLUSTER.local.", false), Transport::Udp, Recursion::Allowed).unwrap();
        assert_ne!(a.key, upper.key);
        let tcp = parse(&query("web.default.svc.cluster.local.", false), Transport::Tcp, Recursion::Allowed).unwrap();
        let edns = parse(&query("web.default.svc.cluster.local.", true), Transport::Udp, Recursion::Allowed).unwrap();
        let refused = parse(&query("web.default.svc.cluster.local.", false), Transport::Udp, Recursion::Refused).unwrap();
        assert!(a.key != tcp.key && a.key != edns.key && a.key != refused.key);
        // Not plain: trailing bytes, a response, two questions.
        let mut long = query("a.b.", false);
        long.push(0);
        assert!(parse(&long, Transport::Udp, Recursion::Allowed).is_none());
        let mut response = query("a.b.", false);
        response[2] |= 0x80;
        assert!(parse(&response, Transport::Udp, Recursion::Allowed).is_none());
        let mut two = Message::query();
        two.add_query(Query::query(Name::from_ascii("a.").unwrap(), RecordType::A));
        two.add_query(Query::query(Name::from_ascii("b.").unwrap(), RecordType::A));
        assert!(parse(&two.to_vec().unwrap(), Transport::Udp, Recursion::Allowed).is_none());
    }

    #[test]
    fn a_kept_response_gets_the_clients_id_flags_and_spelling() {
        let answers = Answers::default();
        let first = query("web.default.svc.cluster.local.", false);
        let mut response = first.clone();
        response[2] = 0x85; // QR AA RD
        let plain = parse(&first, Transport::Udp, Recursion::Allowed).unwrap();
        answers.put(plain, &response);
        let mut second = query("web.default.svc.cluster.local.", false);
        second[0..2].copy_from_slice(&[0xbe, 0xef]);
        second[2] = 0x00; // RD off
        let plain = parse(&second, Transport::Udp, Recursion::Allowed).unwrap();
        let out = answers.get(&plain, &second).unwrap();
        assert_eq!(&out[0..3], &[0xbe, 0xef, 0x84]);
    }
}
