//! One query in, one response out: the DNS protocol around the zone's answers. Bad messages
//! get the codes resolvers expect (FORMERR for what does not parse or has other than one
//! question, NOTIMP for other opcodes and ANY, REFUSED for other classes and zone transfers,
//! BADVERS for EDNS versions above 0); a response too big for the client's UDP size is
//! truncated (TC) so that it retries over TCP.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Record, RecordType};

use crate::lookup::{Answer, Lookup};
use crate::view::View;

/// The UDP payload size we advertise and accept at most (the DNS flag day 2020 value).
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// Without EDNS, a UDP response has at most 512 bytes.
const CLASSIC_UDP_PAYLOAD: usize = 512;

/// How a query arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// UDP: responses are limited to the client's payload size.
    Udp,
    /// TCP: up to 65535 bytes.
    Tcp,
}

/// What to do with a message.
#[derive(Debug)]
pub enum Handled {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Not the zone's: forward the query (the parsed message) upstream.
    Forward(Box<Message>),
    /// Say nothing (a response, or too short to answer).
    Drop,
    /// NXDOMAIN for a name in a pod's first search domain, with autopath on: walk the rest of
    /// the pod's search path (the query, and the path) before answering.
    Search(Box<Message>, Vec<hickory_proto::rr::Name>),
}

/// Whether the query's source may have names outside the zone resolved (no open resolver).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recursion {
    /// Forward names outside the zone.
    Allowed,
    /// Refuse them.
    Refused,
}

/// An empty response to `query`'s header: same id, opcode, RD, question.
pub fn response_to(query: &Message, rcode: ResponseCode) -> Message {
    let mut m = Message::new(query.metadata.id, MessageType::Response, query.metadata.op_code);
    m.metadata.recursion_desired = query.metadata.recursion_desired;
    m.metadata.checking_disabled = query.metadata.checking_disabled;
    m.metadata.response_code = rcode;
    m.queries = query.queries.clone();
    if query.edns.is_some() {
        m.edns = Some(our_edns());
    }
    m
}

fn our_edns() -> Edns {
    let mut e = Edns::new();
    e.set_max_payload(MAX_UDP_PAYLOAD);
    e
}

/// A bare error response from the raw header, for a message that does not parse.
fn header_error(bytes: &[u8], rcode: ResponseCode) -> Handled {
    let id = u16::from_be_bytes([bytes[0], bytes[1]]);
    let opcode = OpCode::from_u8((bytes[2] >> 3) & 0x0f);
    let mut m = Message::new(id, MessageType::Response, opcode);
    m.metadata.recursion_desired = bytes[2] & 1 == 1;
    m.metadata.response_code = rcode;
    m.to_vec().map_or(Handled::Drop, Handled::Reply)
}

/// [`handle`], with a bug met on the way (a panic) answered SERVFAIL for this one query
/// instead of ending the server that serves every pod.
pub fn handle_guarded(view: &View, bytes: &[u8], transport: Transport, recursion: Recursion) -> Handled {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(view, bytes, transport, recursion))) {
        Ok(handled) => handled,
        Err(_) if bytes.len() >= 12 => header_error(bytes, ResponseCode::ServFail),
        Err(_) => Handled::Drop,
    }
}

/// The largest response the client takes over `transport`.
pub fn size_limit(query: &Message, transport: Transport) -> usize {
    match (transport, &query.edns) {
        (Transport::Tcp, _) => usize::from(u16::MAX),
        (Transport::Udp, None) => CLASSIC_UDP_PAYLOAD,
        (Transport::Udp, Some(e)) => usize::from(e.max_payload().clamp(512, MAX_UDP_PAYLOAD)),
    }
}

/// Encodes `response`, truncated to an empty TC response when it does not fit in `limit`.
pub fn encode(mut response: Message, limit: usize) -> Handled {
    match response.to_vec() {
        Ok(bytes) if bytes.len() <= limit => Handled::Reply(bytes),
        Ok(_) => {
            response.metadata.truncation = true;
            response.answers.clear();
            response.authorities.clear();
            response.additionals.clear();
            response.to_vec().map_or(Handled::Drop, Handled::Reply)
        }
        Err(_) => Handled::Drop,
    }
}

/// Answers one message.
pub fn handle(view: &View, bytes: &[u8], transport: Transport, recursion: Recursion) -> Handled {
    if bytes.len() < 12 || bytes[2] & 0x80 != 0 {
        return Handled::Drop; // not even a header, or a response
    }
    let query = match Message::from_vec(bytes) {
        Ok(q) => q,
        Err(_) => return header_error(bytes, ResponseCode::FormErr),
    };
    let limit = size_limit(&query, transport);
    if query.metadata.op_code != OpCode::Query {
        return encode(response_to(&query, ResponseCode::NotImp), limit);
    }
    if query.queries.len() != 1 || !query.answers.is_empty() || !query.authorities.is_empty() {
        return encode(response_to(&query, ResponseCode::FormErr), limit);
    }
    if query.edns.as_ref().is_some_and(|e| e.version() > 0) {
        let mut r = response_to(&query, ResponseCode::BADVERS);
        r.queries.clear();
        return encode(r, limit);
    }
    let q = &query.queries[0];
    if q.query_class() != DNSClass::IN {
        return encode(response_to(&query, ResponseCode::Refused), limit);
    }
    match q.query_type() {
        RecordType::ANY => return encode(response_to(&query, ResponseCode::NotImp), limit),
        RecordType::AXFR | RecordType::IXFR => {
            return encode(response_to(&query, ResponseCode::Refused), limit);
        }
        _ => {}
    }
    match view.lookup(q.name(), q.query_type()) {
        Lookup::Answer(answer) => {
            let mut response = authoritative(&query, answer);
            // Clients that may recurse through us are told so (nslookup warns otherwise).
            response.metadata.recursion_available = recursion == Recursion::Allowed;
            encode(response, limit)
        }
        Lookup::NotOurs if recursion == Recursion::Allowed => Handled::Forward(Box::new(query)),
        Lookup::NotOurs => encode(response_to(&query, ResponseCode::Refused), limit),
    }
}

fn authoritative(query: &Message, answer: Answer) -> Message {
    let mut m = response_to(query, answer.rcode);
    m.metadata.authoritative = true;
    m.answers = answer.answers;
    m.authorities = answer.authorities;
    m.additionals = answer.additionals;
    m
}

/// The records of a message's answer section, for tests and tools.
pub fn answers(bytes: &[u8]) -> Option<(ResponseCode, Vec<Record>)> {
    let m = Message::from_vec(bytes).ok()?;
    Some((m.metadata.response_code, m.answers))
}
