//! HTTP/1.x connections, handled in one task each for speed: the request head parsed in place
//! with httparse (hyper's parser), decided by [`crate::plan`], sent on a pooled upstream
//! connection and the response relayed as it arrives; no channels, no copies of the head.
//! Framing is strict where requests get smuggled: Transfer-Encoding beside Content-Length,
//! differing or unparsable Content-Lengths, a transfer coding other than `chunked`, bare-LF
//! chunk lines, Transfer-Encoding in HTTP/1.0: 400 (501 for an unknown coding), then close.
//! WebSocket (and any `Upgrade`) is tunnelled once the backend answers 101.

use std::future::Future;
use std::io::{self, Write as _};
use std::ops::Range;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::annotations::BackendProtocol;
use crate::chunked;
use crate::plan::{Answer, Forward, Listener, Plan};
use crate::request::{RequestHead, is_hop_by_hop};
use crate::server::{Record, Shared};
use crate::upstream::Conn;

/// The largest request or response head (hyper's and our HTTP/2 limit alike).
const MAX_HEAD: usize = 64 * 1024;
/// The most header fields in a head.
const MAX_HEADERS: usize = 100;
/// Between two reads of a request body (`client_body_timeout`).
const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Between two writes to a client (`send_timeout`).
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes of a refused body still read (and dropped) so that the client sees the answer, as
/// nginx's lingering close does; past this, or after `DRAIN_TIME`, the connection closes.
const DRAIN_LIMIT: u64 = 64 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(5);
/// Request bodies longer than this (or chunked ones allowed to be) go upstream as they arrive
/// instead of being held whole.
const STREAM_FROM: u64 = 1 << 20;
/// Room made in a buffer before each read.
const READ_SIZE: usize = 16 * 1024;

/// What the connection does after an exchange.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Read the next request.
    KeepAlive,
    /// Close now.
    Close,
    /// Read and drop what the client still sends for a while, then close.
    Linger,
}

/// Buffers kept across a connection's requests.
#[derive(Default)]
struct Scratch {
    /// The upstream request.
    request: Vec<u8>,
    /// A request body.
    body: Vec<u8>,
    /// Bytes from the upstream.
    from_upstream: BytesMut,
    /// Bytes for the client.
    out: Vec<u8>,
}

/// Serves an HTTP/1 connection; `buf` holds what was already read from it.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(shared: Arc<Shared>, mut io: S, mut buf: BytesMut, at: Listener) {
    let mut scratch = Scratch { from_upstream: BytesMut::with_capacity(READ_SIZE), ..Scratch::default() };
    loop {
        match exchange(&shared, &mut io, &mut buf, &mut scratch, &at).await {
            Next::KeepAlive => {}
            Next::Close => break,
            Next::Linger => {
                linger(&mut io).await;
                break;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
}

/// A head's parts, as ranges of the buffer it was parsed from.
struct Parsed {
    len: usize,
    /// Method (request) or reason (response).
    first: Range<usize>,
    /// Target (request).
    target: Range<usize>,
    /// Status (response).
    status: u16,
    minor: u8,
    headers: Vec<(Range<usize>, Range<usize>)>,
}

fn range_in(buf: &[u8], part: &[u8]) -> Range<usize> {
    match (part.as_ptr() as usize).checked_sub(buf.as_ptr() as usize) {
        Some(start) if start + part.len() <= buf.len() => start..start + part.len(),
        _ => 0..0,
    }
}

fn header_ranges(buf: &[u8], headers: &[httparse::Header<'_>]) -> Vec<(Range<usize>, Range<usize>)> {
    headers.iter().map(|h| (range_in(buf, h.name.as_bytes()), range_in(buf, h.value))).collect()
}

/// Parses a request head at the front of `buf`: `None` while incomplete.
fn parse_request(buf: &[u8]) -> Result<Option<Parsed>, StatusCode> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(len)) => Ok(Some(Parsed {
            len,
            first: range_in(buf, req.method.unwrap_or("").as_bytes()),
            target: range_in(buf, req.path.unwrap_or("").as_bytes()),
            status: 0,
            minor: req.version.unwrap_or(1),
            headers: header_ranges(buf, req.headers),
        })),
        Err(httparse::Error::TooManyHeaders) => Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        Err(_) => Err(StatusCode::BAD_REQUEST),
    }
}

/// Parses a response head at the front of `buf`: `None` while incomplete.
fn parse_response(buf: &[u8]) -> Result<Option<Parsed>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(len)) => Ok(Some(Parsed {
            len,
            first: range_in(buf, resp.reason.unwrap_or("").as_bytes()),
            target: 0..0,
            status: resp.code.unwrap_or(0),
            minor: resp.version.unwrap_or(1),
            headers: header_ranges(buf, resp.headers),
        })),
        Err(_) => Err(()),
    }
}

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

fn tokens<'a>(values: impl Iterator<Item = &'a [u8]>) -> impl Iterator<Item = &'a [u8]> {
    values.flat_map(|v| v.split(|b| *b == b',')).map(<[u8]>::trim_ascii).filter(|t| !t.is_empty())
}

fn has_token<'a>(values: impl Iterator<Item = &'a [u8]>, token: &str) -> bool {
    tokens(values).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// One Content-Length out of all the values given (identical repeats allowed, RFC 9110 §8.6).
fn content_length<'a>(values: impl Iterator<Item = &'a [u8]>) -> Result<Option<u64>, ()> {
    let mut length = None;
    for t in values.flat_map(|v| v.split(|b| *b == b',')).map(<[u8]>::trim_ascii) {
        if t.is_empty() || t.len() > 18 || !t.iter().all(u8::is_ascii_digit) {
            return Err(());
        }
        let n: u64 = std::str::from_utf8(t).map_err(|_| ())?.parse().map_err(|_| ())?;
        if length.is_some_and(|l| l != n) {
            return Err(());
        }
        length = Some(n);
    }
    Ok(length)
}

/// The request body's framing (RFC 9112 §6), or the status refusing it.
fn request_framing(head: &RequestHead<'_>, minor: u8) -> Result<Framing, StatusCode> {
    let has_te = head.values("transfer-encoding").next().is_some();
    let length = content_length(head.values("content-length")).map_err(|()| StatusCode::BAD_REQUEST)?;
    if !has_te {
        return Ok(length.map_or(Framing::None, Framing::Length));
    }
    // Both, or TE in HTTP/1.0: the request could be read two ways; refuse it.
    if length.is_some() || minor == 0 {
        return Err(StatusCode::BAD_REQUEST);
    }
    let codings: Vec<&[u8]> = tokens(head.values("transfer-encoding")).collect();
    match codings.as_slice() {
        [only] if only.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
        [] => Err(StatusCode::BAD_REQUEST),
        _ => Err(StatusCode::NOT_IMPLEMENTED),
    }
}

/// The path, query and authority of a request target (origin or absolute form).
fn split_target(target: &str) -> Option<(&str, Option<&str>, Option<&str>)> {
    let (authority, rest) = if target.starts_with('/') {
        (None, target)
    } else {
        let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
        let after = if lower.starts_with("http://") {
            &target[7..]
        } else if lower.starts_with("https://") {
            &target[8..]
        } else {
            return None;
        };
        let end = after.find(['/', '?']).unwrap_or(after.len());
        (Some(&after[..end]), &after[end..])
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let path = if path.is_empty() { "/" } else { path };
    Some((path, query, authority))
}

/// A parsed request head checked as this handler checks it: a target it can route, exactly one
/// Host in HTTP/1.1 (RFC 9112 §3.2; an absolute target may stand in), one unambiguous framing.
/// The head, its framing and its `Connection` values, or the status it is refused with.
fn checked_head<'b>(buf: &'b [u8], parsed: &Parsed) -> Result<(RequestHead<'b>, Framing, Vec<&'b [u8]>), StatusCode> {
    let text = |r: &Range<usize>| std::str::from_utf8(&buf[r.clone()]).unwrap_or("");
    let (path, query, authority) = split_target(text(&parsed.target)).ok_or(StatusCode::BAD_REQUEST)?;
    let head =
        RequestHead { method: text(&parsed.first), path, query, authority, headers: parsed.headers.iter().map(|(n, v)| (text(n), &buf[v.clone()])).collect() };
    let hosts = head.values("host").count();
    if hosts > 1 || (hosts == 0 && parsed.minor == 1 && authority.is_none()) {
        return Err(StatusCode::BAD_REQUEST);
    }
    let framing = request_framing(&head, parsed.minor)?;
    let connection: Vec<&[u8]> = head.values("connection").collect();
    Ok((head, framing, connection))
}

/// How a request head at the front of `buf` is read: `Ok(None)` while incomplete, else the
/// status it is refused with, or its method, path and body framing (`none`, `length N`,
/// `chunked`). Pure, for the `http1_head` fuzz target: any bytes get one of these, never a panic.
pub fn read_request_head(buf: &[u8]) -> Result<Option<(String, String, String)>, u16> {
    let Some(parsed) = parse_request(buf).map_err(|s| s.as_u16())? else {
        return if buf.len() >= MAX_HEAD { Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE.as_u16()) } else { Ok(None) };
    };
    let (head, framing, _) = checked_head(buf, &parsed).map_err(|s| s.as_u16())?;
    let framing = match framing {
        Framing::None => "none".to_owned(),
        Framing::Length(n) => format!("length {n}"),
        Framing::Chunked => "chunked".to_owned(),
        Framing::UntilClose => "until close".to_owned(),
    };
    Ok(Some((head.method.to_owned(), head.path.to_owned(), framing)))
}

/// What is known of a request after its head, owned (the head's buffer moves on).
struct Request {
    method: http::Method,
    minor: u8,
    framing: Framing,
    keep_alive: bool,
    expect_continue: bool,
    upgrade: bool,
    host: Option<String>,
    head_len: usize,
    /// The access log's fields, when it is written.
    log: Option<LogFields>,
}

struct LogFields {
    request_line: String,
    referer: String,
    user_agent: String,
}

/// Reads, decides and answers one request.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(shared: &Arc<Shared>, io: &mut S, buf: &mut BytesMut, scratch: &mut Scratch, at: &Listener) -> Next {
    let mut deadline = None;
    let parsed = loop {
        if !buf.is_empty() {
            match parse_request(buf) {
                Ok(Some(p)) => break p,
                Ok(None) if buf.len() >= MAX_HEAD => {
                    return reject(io, scratch, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE).await;
                }
                Ok(None) => {}
                Err(status) => return reject(io, scratch, status).await,
            }
        }
        buf.reserve(READ_SIZE);
        match within_deadline(&mut deadline, shared.client_header_timeout(), io.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            // The end, an error, or a head too slow (slowloris): close, as nginx does.
            _ => return Next::Close,
        }
    };
    let start = Instant::now();
    let snapshot = shared.snapshot();

    // Everything that needs the head, while it is in the buffer.
    let (request, plan) = {
        let (head, framing, connection) = match checked_head(buf, &parsed) {
            Ok(h) => h,
            Err(status) => return reject(io, scratch, status).await,
        };
        let target = std::str::from_utf8(&buf[parsed.target.clone()]).unwrap_or("");
        let keep_alive = if parsed.minor == 0 { has_token(connection.iter().copied(), "keep-alive") } else { !has_token(connection.iter().copied(), "close") };
        let request = Request {
            method: http::Method::from_bytes(head.method.as_bytes()).unwrap_or(http::Method::GET),
            minor: parsed.minor,
            framing,
            keep_alive,
            expect_continue: parsed.minor == 1 && head.header("expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue")),
            upgrade: has_token(connection.iter().copied(), "upgrade") && head.values("upgrade").next().is_some(),
            host: head.host(),
            head_len: parsed.len,
            log: shared.access_log().then(|| LogFields {
                request_line: format!("{} {target} HTTP/1.{}", head.method, parsed.minor),
                referer: head.header("referer").unwrap_or("-").to_owned(),
                user_agent: head.header("user-agent").unwrap_or("-").to_owned(),
            }),
        };
        let plan = crate::plan::plan(shared, &snapshot, &head, request.host.as_deref(), at);
        if let Plan::Forward(f) = &plan {
            upstream_head(&mut scratch.request, &head, f, &connection, request.upgrade);
        }
        (request, plan)
    };
    buf.advance(request.head_len);

    let (next, status, sent, upstream) = match &plan {
        Plan::Answer(a) => {
            // The body of a request answered here is skipped when it is at hand, else the
            // connection closes after the answer (lingering, so the client reads it).
            let body_at_hand = match request.framing {
                Framing::None => true,
                Framing::Length(n) => buf.len() as u64 >= n,
                Framing::Chunked | Framing::UntilClose => false,
            };
            if let (true, Framing::Length(n)) = (body_at_hand, request.framing) {
                buf.advance(usize::try_from(n).unwrap_or(usize::MAX));
            }
            let keep = request.keep_alive && body_at_hand;
            let sent = write_answer(io, scratch, a, &request, keep).await;
            let next = match (keep, sent.is_ok()) {
                (true, true) => Next::KeepAlive,
                (false, true) => Next::Linger,
                _ => Next::Close,
            };
            (next, a.status.as_u16(), a.body.len() as u64, None)
        }
        Plan::Forward(f) => forward(shared, io, buf, scratch, &request, f).await,
    };
    shared.record(&Record {
        peer: at.peer,
        host: request.host.as_deref(),
        method: request.method.as_str(),
        request_line: request.log.as_ref().map(|l| l.request_line.as_str()),
        referer: request.log.as_ref().map_or("-", |l| l.referer.as_str()),
        user_agent: request.log.as_ref().map_or("-", |l| l.user_agent.as_str()),
        request_length: request.head_len as u64,
        status,
        body_bytes_sent: sent,
        took: start.elapsed(),
        upstream,
        route: match &plan {
            Plan::Forward(f) => Some(f.route.as_str()),
            Plan::Answer(_) => None,
        },
    });
    next
}

/// The request head sent upstream: the client's headers less hop-by-hop ones and its
/// framing, with the plan's edits; HTTP/1.1, kept alive (the framing goes on after the body).
fn upstream_head(out: &mut Vec<u8>, head: &RequestHead<'_>, f: &Forward, connection: &[&[u8]], upgrade: bool) {
    out.clear();
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(f.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let kept = |name: &str| {
        !(is_hop_by_hop(name, connection) || name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("expect") || f.request.drops(name))
    };
    // A header the route adds to is sent once, its values and the added ones joined (Gateway
    // API's `add`: `X-Trace: client,gw`).
    let added_to = |name: &str| f.request.add.iter().any(|(n, _)| n.as_str().eq_ignore_ascii_case(name));
    for (name, value) in &head.headers {
        if kept(name) && !added_to(name) {
            push_header(out, name.as_bytes(), value);
        }
    }
    for (name, value) in f.request.set.iter().filter(|(n, _)| !added_to(n.as_str())) {
        push_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let mut done: Vec<&http::HeaderName> = Vec::new();
    for (name, _) in &f.request.add {
        if done.contains(&name) {
            continue;
        }
        done.push(name);
        let client = head.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name.as_str()) && kept(n)).map(|(_, v)| *v);
        let set = f.request.set.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_bytes());
        let added = f.request.add.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_bytes());
        push_header(out, name.as_str().as_bytes(), &crate::plan::join_values(client.chain(set).chain(added)));
    }
    if upgrade {
        for value in head.values("upgrade") {
            push_header(out, b"upgrade", value);
        }
        out.extend_from_slice(b"connection: upgrade\r\n");
    }
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Why a request body could not be read.
enum BodyError {
    TooLarge,
    Malformed,
    Gone,
}

/// Reads the request body into `body`, at most `max` bytes.
async fn read_body<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    framing: Framing,
    max: Option<u64>,
    expect_continue: bool,
    body: &mut Vec<u8>,
) -> Result<(), BodyError> {
    body.clear();
    let max = max.unwrap_or(u64::MAX);
    let mut continued = !expect_continue;
    match framing {
        Framing::None | Framing::UntilClose => Ok(()),
        Framing::Length(n) => {
            if n > max {
                return Err(BodyError::TooLarge);
            }
            let n = usize::try_from(n).map_err(|_| BodyError::TooLarge)?;
            while buf.len() < n {
                if !continued {
                    continued = true;
                    write_all(io, b"HTTP/1.1 100 Continue\r\n\r\n").await.map_err(|_| BodyError::Gone)?;
                }
                buf.reserve((n - buf.len()).min(1 << 20));
                match within(BODY_TIMEOUT, io.read_buf(buf)).await {
                    Ok(Ok(read)) if read > 0 => {}
                    _ => return Err(BodyError::Gone),
                }
            }
            body.extend_from_slice(&buf[..n]);
            buf.advance(n);
            Ok(())
        }
        Framing::Chunked => {
            let mut decoder = chunked::Decoder::default();
            let mut total: u64 = 0;
            loop {
                let used = decoder
                    .feed(buf, &mut |data| {
                        total += data.len() as u64;
                        if total <= max {
                            body.extend_from_slice(data);
                        }
                    })
                    .map_err(|_| BodyError::Malformed)?;
                buf.advance(used);
                if total > max {
                    return Err(BodyError::TooLarge);
                }
                if decoder.done() {
                    return Ok(());
                }
                if !continued {
                    continued = true;
                    write_all(io, b"HTTP/1.1 100 Continue\r\n\r\n").await.map_err(|_| BodyError::Gone)?;
                }
                buf.reserve(READ_SIZE);
                match within(BODY_TIMEOUT, io.read_buf(buf)).await {
                    Ok(Ok(read)) if read > 0 => {}
                    _ => return Err(BodyError::Gone),
                }
            }
        }
    }
}

type Upstream<'a> = Option<(&'a str, std::net::SocketAddr, Duration, u16)>;

/// Forwards a request: its body read (within the route's limit), the exchange with the
/// endpoint, the response relayed.
async fn forward<'f, S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Arc<Shared>,
    io: &mut S,
    buf: &mut BytesMut,
    scratch: &mut Scratch,
    request: &Request,
    f: &'f Forward,
) -> (Next, u16, u64, Upstream<'f>) {
    let answer = |status: StatusCode, body: &str| Answer { status, location: None, body: body.into() };
    let grpc = matches!(f.protocol, BackendProtocol::Grpc | BackendProtocol::Grpcs);
    // Large bodies (and chunked ones that may grow large) are streamed: memory stays bounded
    // whatever proxy-body-size allows.
    let streamed = !grpc
        && match request.framing {
            Framing::Length(n) => n > STREAM_FROM && f.max_body.is_none_or(|m| n <= m),
            Framing::Chunked => f.max_body.is_none_or(|m| m > STREAM_FROM),
            Framing::None | Framing::UntilClose => false,
        };
    let read = if streamed { Ok(()) } else { read_body(io, buf, request.framing, f.max_body, request.expect_continue, &mut scratch.body).await };
    let refused = match read {
        Ok(()) => None,
        Err(BodyError::TooLarge) => Some(answer(StatusCode::PAYLOAD_TOO_LARGE, "413 Request Entity Too Large\n")),
        Err(BodyError::Malformed) => Some(answer(StatusCode::BAD_REQUEST, "400 Bad Request\n")),
        Err(BodyError::Gone) => return (Next::Close, 400, 0, None),
    };
    if let Some(a) = refused {
        let _ = write_answer(io, scratch, &a, request, false).await;
        return (Next::Linger, a.status.as_u16(), a.body.len() as u64, None);
    }
    if grpc {
        let a = answer(StatusCode::BAD_GATEWAY, "502 Bad Gateway: gRPC backends take HTTP/2 clients\n");
        let next = if write_answer(io, scratch, &a, request, request.keep_alive).await.is_ok() && request.keep_alive { Next::KeepAlive } else { Next::Close };
        return (next, 502, a.body.len() as u64, None);
    }
    match (streamed, request.framing) {
        (true, Framing::Length(n)) => {
            let _ = write!(scratch.request, "content-length: {n}\r\n");
        }
        (true, _) => scratch.request.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        (false, Framing::None) => {}
        (false, _) => {
            let _ = write!(scratch.request, "content-length: {}\r\n", scratch.body.len());
        }
    }
    scratch.request.extend_from_slice(b"\r\n");
    if !streamed {
        scratch.request.extend_from_slice(&scratch.body);
        // Mirrors get buffered requests only (a streamed body is not kept).
        for &endpoint in &f.mirrors {
            tokio::spawn(mirror(Arc::clone(shared), endpoint, f.connect_timeout, scratch.request.clone()));
        }
    }

    let upstream_start = Instant::now();
    let result = relay(shared, io, buf, scratch, request, f, streamed).await;
    let took = upstream_start.elapsed();
    match result {
        Ok((status, sent, keep)) => {
            let next = if keep { Next::KeepAlive } else { Next::Close };
            (next, status, sent, Some((f.upstream.as_str(), f.endpoint, took, status)))
        }
        Err(Failure::BeforeResponse(status)) => {
            let text = if status == StatusCode::GATEWAY_TIMEOUT { "504 Gateway Time-out\n" } else { "502 Bad Gateway\n" };
            let a = answer(status, text);
            // After a streamed body the client may still be sending: no keep-alive then.
            let keep = request.keep_alive && !streamed;
            let ok = write_answer(io, scratch, &a, request, keep).await.is_ok();
            let next = match (ok, keep) {
                (true, true) => Next::KeepAlive,
                (true, false) => Next::Linger,
                (false, _) => Next::Close,
            };
            (next, status.as_u16(), a.body.len() as u64, Some((f.upstream.as_str(), f.endpoint, took, status.as_u16())))
        }
        Err(Failure::DuringResponse(status)) => (Next::Close, status, 0, Some((f.upstream.as_str(), f.endpoint, took, status))),
        Err(Failure::Refused(status)) => {
            let text = match status {
                StatusCode::PAYLOAD_TOO_LARGE => "413 Request Entity Too Large\n",
                StatusCode::BAD_REQUEST => "400 Bad Request\n",
                _ => "502 Bad Gateway\n",
            };
            let a = answer(status, text);
            let _ = write_answer(io, scratch, &a, request, false).await;
            (Next::Linger, status.as_u16(), a.body.len() as u64, Some((f.upstream.as_str(), f.endpoint, took, status.as_u16())))
        }
        Err(Failure::ClientGone) => (Next::Close, 400, 0, Some((f.upstream.as_str(), f.endpoint, took, 400))),
    }
}

/// A copy of a request to a mirror; its answer is read and dropped.
async fn mirror(shared: Arc<Shared>, endpoint: std::net::SocketAddr, connect_timeout: Duration, request: Vec<u8>) {
    let Ok(mut conn) = shared.pool.connect(endpoint, false, connect_timeout).await else {
        return;
    };
    if conn.write_all(&request).await.is_ok() {
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_secs(10), async { while matches!(conn.read(&mut sink).await, Ok(n) if n > 0) {} }).await;
    }
}

/// How an exchange with the endpoint failed.
enum Failure {
    /// Before anything was sent to the client: it gets this status.
    BeforeResponse(StatusCode),
    /// After the response began: the client connection closes (the status began it).
    DuringResponse(u16),
    /// A streamed body could not be sent (too large, malformed, the backend gone): the client
    /// gets this status and the connection closes.
    Refused(StatusCode),
    /// The client went away (or stalled) while its body was streamed.
    ClientGone,
}

/// Why no response head came.
enum HeadError {
    /// The connection ended or failed before a byte of response: a reused connection the
    /// endpoint had closed, for instance.
    Nothing,
    Timeout,
    Invalid,
}

/// Sends the request head (and a buffered body).
async fn send_request(conn: &mut Conn, request: &[u8], send_timeout: Duration) -> Result<(), HeadError> {
    match within(send_timeout, conn.write_all(request)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(HeadError::Nothing),
        Err(_) => Err(HeadError::Timeout),
    }
}

/// Sends a request body as it arrives from the client: `Length` bodies as they are, chunked
/// ones re-chunked (within `max`, counted as they go).
#[allow(clippy::too_many_arguments)]
async fn stream_body<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    conn: &mut Conn,
    framing: Framing,
    max: Option<u64>,
    expect_continue: bool,
    send_timeout: Duration,
    out: &mut Vec<u8>,
) -> Result<(), Failure> {
    if expect_continue {
        write_all(io, b"HTTP/1.1 100 Continue\r\n\r\n").await.map_err(|_| Failure::ClientGone)?;
    }
    let to_backend = |e: Result<io::Result<()>, TimedOut>| match e {
        Ok(Ok(())) => Ok(()),
        _ => Err(Failure::Refused(StatusCode::BAD_GATEWAY)),
    };
    let mut decoder = (framing == Framing::Chunked).then(chunked::Decoder::default);
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let (max, mut total) = (max.unwrap_or(u64::MAX), 0u64);
    loop {
        let done = match &mut decoder {
            Some(d) => {
                out.clear();
                let used = d
                    .feed(buf, &mut |data| {
                        total += data.len() as u64;
                        chunked::encode(out, data);
                    })
                    .map_err(|_| Failure::Refused(StatusCode::BAD_REQUEST))?;
                buf.advance(used);
                if total > max {
                    return Err(Failure::Refused(StatusCode::PAYLOAD_TOO_LARGE));
                }
                if d.done() {
                    out.extend_from_slice(chunked::END);
                }
                to_backend(within(send_timeout, conn.write_all(out)).await)?;
                d.done()
            }
            None => {
                let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                to_backend(within(send_timeout, conn.write_all(&buf[..take])).await)?;
                buf.advance(take);
                left -= take as u64;
                left == 0
            }
        };
        if done {
            return Ok(());
        }
        buf.reserve(READ_SIZE);
        match within(BODY_TIMEOUT, io.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return Err(Failure::ClientGone),
        }
    }
}

/// Reads the response head into `from`; 1xx responses other than 101 are read past.
async fn read_head(conn: &mut Conn, from: &mut BytesMut, read_timeout: Duration) -> Result<Parsed, HeadError> {
    from.clear();
    loop {
        from.reserve(READ_SIZE);
        match within(read_timeout, conn.read_buf(from)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) if from.is_empty() => return Err(HeadError::Nothing),
            Ok(_) => return Err(HeadError::Invalid),
            Err(_) => return Err(HeadError::Timeout),
        }
        loop {
            match parse_response(from) {
                Ok(Some(p)) if (100..200).contains(&p.status) && p.status != 101 => from.advance(p.len),
                Ok(Some(p)) => return Ok(p),
                Ok(None) if from.len() >= MAX_HEAD => return Err(HeadError::Invalid),
                Ok(None) => break,
                Err(()) => return Err(HeadError::Invalid),
            }
        }
    }
}

/// A connection to the endpoint with the request sent on it (its body streamed, if it is) and
/// the response head read into `scratch.from_upstream`.
async fn open<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    io: &mut S,
    buf: &mut BytesMut,
    scratch: &mut Scratch,
    request: &Request,
    f: &Forward,
    streamed: bool,
) -> Result<(Conn, Parsed), Failure> {
    let tls = f.protocol == BackendProtocol::Https;
    let idempotent = request.method.is_idempotent();
    // A kept connection the endpoint closed meanwhile fails before any response: the request
    // goes again on a new connection when repeating it is harmless. A streamed body cannot be
    // sent twice: it goes on a new connection from the start.
    let mut fresh_only = streamed;
    loop {
        let (mut conn, reused) = match (!fresh_only).then(|| shared.pool.take(f.endpoint, tls)).flatten() {
            Some(c) => (c, true),
            None => match shared.pool.connect(f.endpoint, tls, f.connect_timeout).await {
                Ok(c) => (c, false),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Err(Failure::BeforeResponse(StatusCode::GATEWAY_TIMEOUT));
                }
                Err(_) => return Err(Failure::BeforeResponse(StatusCode::BAD_GATEWAY)),
            },
        };
        let sent = send_request(&mut conn, &scratch.request, f.read_timeout).await;
        if sent.is_ok() && streamed {
            stream_body(io, buf, &mut conn, request.framing, f.max_body, request.expect_continue, f.read_timeout, &mut scratch.body).await?;
        }
        let head = match sent {
            Ok(()) => read_head(&mut conn, &mut scratch.from_upstream, f.read_timeout).await,
            Err(e) => Err(e),
        };
        match head {
            Ok(p) => return Ok((conn, p)),
            Err(HeadError::Nothing) if reused && idempotent => fresh_only = true,
            Err(HeadError::Timeout) => {
                return Err(Failure::BeforeResponse(StatusCode::GATEWAY_TIMEOUT));
            }
            Err(_) => return Err(Failure::BeforeResponse(StatusCode::BAD_GATEWAY)),
        }
    }
}

/// The exchange with the endpoint and the response relayed to the client: (status, body
/// bytes sent, whether the client connection goes on).
async fn relay<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    io: &mut S,
    buf: &mut BytesMut,
    scratch: &mut Scratch,
    request: &Request,
    f: &Forward,
    streamed: bool,
) -> Result<(u16, u64, bool), Failure> {
    let tls = f.protocol == BackendProtocol::Https;
    // Gateway API's timeouts.request bounds everything up to the response head.
    let opened = open(shared, io, buf, scratch, request, f, streamed);
    let (mut conn, parsed) = match f.deadline {
        Some(d) => tokio::time::timeout(d, opened).await.unwrap_or(Err(Failure::BeforeResponse(StatusCode::GATEWAY_TIMEOUT)))?,
        None => opened.await?,
    };
    let from = &mut scratch.from_upstream;
    let status = parsed.status;
    let head = &from[..parsed.len];
    let values =
        |name: &'static str| parsed.headers.iter().filter(move |(n, _)| head[n.clone()].eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| &head[v.clone()]);
    let head_only = request.method == http::Method::HEAD;
    let framing = if head_only || status == 204 || status == 304 || status == 101 {
        Framing::None
    } else if values("transfer-encoding").next().is_some() {
        if tokens(values("transfer-encoding")).last().is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")) { Framing::Chunked } else { Framing::UntilClose }
    } else {
        match content_length(values("content-length")) {
            Ok(Some(n)) => Framing::Length(n),
            Ok(None) => Framing::UntilClose,
            Err(()) => return Err(Failure::BeforeResponse(StatusCode::BAD_GATEWAY)),
        }
    };
    let connection: Vec<&[u8]> = values("connection").collect();
    let mut upstream_keeps = framing != Framing::UntilClose
        && status != 101
        && if parsed.minor == 0 { has_token(connection.iter().copied(), "keep-alive") } else { !has_token(connection.iter().copied(), "close") };
    if status == 101 && !request.upgrade {
        return Err(Failure::BeforeResponse(StatusCode::BAD_GATEWAY));
    }
    // A body without a length reaches an HTTP/1.0 client delimited by the connection's end.
    let chunk_to_client = matches!(framing, Framing::Chunked | Framing::UntilClose) && request.minor == 1;
    let keep_client = request.keep_alive && status != 101 && (request.minor == 1 || matches!(framing, Framing::None | Framing::Length(_)));

    // The response head for the client.
    let out = &mut scratch.out;
    out.clear();
    let _ = write!(out, "HTTP/1.1 {status} ");
    let reason = &head[parsed.first.clone()];
    if reason.is_empty() {
        out.extend_from_slice(StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("").as_bytes());
    } else {
        out.extend_from_slice(reason);
    }
    out.extend_from_slice(b"\r\n");
    let mut has_date = false;
    for (n, v) in &parsed.headers {
        let name = std::str::from_utf8(&head[n.clone()]).unwrap_or("");
        let length_kept = framing == Framing::None && name.eq_ignore_ascii_case("content-length");
        if (is_hop_by_hop(name, &connection) || name.eq_ignore_ascii_case("content-length") || f.response.drops(name)) && !length_kept {
            continue;
        }
        has_date |= name.eq_ignore_ascii_case("date");
        push_header(out, name.as_bytes(), &head[v.clone()]);
    }
    for (name, value) in f.response.set.iter().chain(&f.response.add) {
        push_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !has_date {
        crate::server::push_date(out);
    }
    match framing {
        Framing::Length(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        _ if chunk_to_client => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    if status == 101 {
        for value in values("upgrade") {
            push_header(out, b"upgrade", value);
        }
        out.extend_from_slice(b"connection: upgrade\r\n");
    } else if !keep_client {
        out.extend_from_slice(b"connection: close\r\n");
    } else if request.minor == 0 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    from.advance(parsed.len);

    let during = |_| Failure::DuringResponse(status);
    let mut sent: u64 = 0;
    match framing {
        Framing::None if status == 101 => {
            // The tunnel: what each side sent early first, then bytes both ways until one ends.
            out.extend_from_slice(from);
            write_all(io, out).await.map_err(during)?;
            conn.write_all(buf).await.map_err(during)?;
            buf.clear();
            let _ = tokio::io::copy_bidirectional(io, &mut conn).await;
            return Ok((status, 0, false));
        }
        Framing::None => {
            write_all(io, out).await.map_err(during)?;
            upstream_keeps &= from.is_empty();
        }
        Framing::Length(n) => {
            let first = from.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            out.extend_from_slice(&from[..first]);
            from.advance(first);
            sent = first as u64;
            write_all(io, out).await.map_err(during)?;
            while sent < n {
                from.clear();
                from.reserve(READ_SIZE);
                match within(f.read_timeout, conn.read_buf(from)).await {
                    Ok(Ok(read)) if read > 0 => {}
                    _ => return Err(Failure::DuringResponse(status)),
                }
                let take = from.len().min(usize::try_from(n - sent).unwrap_or(usize::MAX));
                write_all(io, &from[..take]).await.map_err(during)?;
                from.advance(take);
                sent += take as u64;
            }
            upstream_keeps &= from.is_empty();
        }
        Framing::Chunked | Framing::UntilClose => {
            let mut decoder = (framing == Framing::Chunked).then(chunked::Decoder::default);
            loop {
                let mut ended = false;
                let mut add = |data: &[u8], out: &mut Vec<u8>| {
                    sent += data.len() as u64;
                    if chunk_to_client { chunked::encode(out, data) } else { out.extend_from_slice(data) }
                };
                match &mut decoder {
                    Some(d) => {
                        let used = d.feed(from, &mut |data| add(data, out)).map_err(|_| Failure::DuringResponse(status))?;
                        from.advance(used);
                        ended = d.done();
                    }
                    None => {
                        add(from, out);
                        from.clear();
                    }
                }
                if !ended {
                    from.clear();
                    from.reserve(READ_SIZE);
                    match within(f.read_timeout, conn.read_buf(from)).await {
                        Ok(Ok(read)) if read > 0 => {}
                        // The end of an until-close body is its connection's end.
                        Ok(Ok(_)) if decoder.is_none() => ended = true,
                        _ => return Err(Failure::DuringResponse(status)),
                    }
                }
                if ended && chunk_to_client {
                    out.extend_from_slice(chunked::END);
                }
                if !out.is_empty() {
                    write_all(io, out).await.map_err(during)?;
                    out.clear();
                }
                if ended {
                    break;
                }
            }
            upstream_keeps &= from.is_empty();
        }
    }
    if upstream_keeps {
        shared.pool.put(f.endpoint, tls, conn);
    }
    Ok((status, sent, keep_client))
}

/// A timeout that passed.
struct TimedOut;

/// `fut` before `deadline` (set to `limit` from now when first needed). The timer is only
/// armed if `fut` does not finish at its first poll: most reads and writes do, and a timer
/// costs a clock read and a wheel entry.
async fn within_deadline<F: Future>(deadline: &mut Option<tokio::time::Instant>, limit: Duration, fut: F) -> Result<F::Output, TimedOut> {
    let mut fut = std::pin::pin!(fut);
    let first = std::future::poll_fn(|cx| {
        Poll::Ready(match fut.as_mut().poll(cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        })
    })
    .await;
    if let Some(v) = first {
        return Ok(v);
    }
    let deadline = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + limit);
    tokio::time::timeout_at(deadline, fut).await.map_err(|_| TimedOut)
}

/// `fut` within `limit`, the timer armed only when needed (see [`within_deadline`]).
async fn within<F: Future>(limit: Duration, fut: F) -> Result<F::Output, TimedOut> {
    within_deadline(&mut None, limit, fut).await
}

/// Writes all of `bytes` to the client within the send timeout.
async fn write_all<S: AsyncWrite + Unpin>(io: &mut S, bytes: &[u8]) -> io::Result<()> {
    match within(SEND_TIMEOUT, io.write_all(bytes)).await {
        Ok(r) => r,
        Err(TimedOut) => Err(io::Error::new(io::ErrorKind::TimedOut, "client too slow")),
    }?;
    io.flush().await
}

/// An answer of the proxy's own.
async fn write_answer<S: AsyncWrite + Unpin>(io: &mut S, scratch: &mut Scratch, a: &Answer, request: &Request, keep: bool) -> io::Result<()> {
    let out = &mut scratch.out;
    out.clear();
    answer_bytes(out, a, request.method == http::Method::HEAD, keep, request.minor);
    write_all(io, out).await
}

fn answer_bytes(out: &mut Vec<u8>, a: &Answer, head_only: bool, keep: bool, minor: u8) {
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n",
        a.status.as_u16(),
        a.status.canonical_reason().unwrap_or(""),
        a.body.len()
    );
    crate::server::push_date(out);
    if let Some(l) = &a.location {
        push_header(out, b"location", l.as_bytes());
    }
    if !keep {
        out.extend_from_slice(b"connection: close\r\n");
    } else if minor == 0 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(a.body.as_bytes());
    }
}

/// Answers a request that could not be read, and closes.
async fn reject<S: AsyncWrite + Unpin>(io: &mut S, scratch: &mut Scratch, status: StatusCode) -> Next {
    let out = &mut scratch.out;
    out.clear();
    let a = Answer { status, location: None, body: format!("{} {}\n", status.as_u16(), status.canonical_reason().unwrap_or("")) };
    answer_bytes(out, &a, false, false, 1);
    let _ = write_all(io, out).await;
    Next::Close
}

/// nginx's lingering close: what the client still sends is read and dropped for a while, so
/// that it reads the answer instead of a reset.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) {
    let _ = io.flush().await;
    let drain = async {
        let mut sink = vec![0u8; READ_SIZE];
        let mut total: u64 = 0;
        while total < DRAIN_LIMIT {
            match io.read(&mut sink).await {
                Ok(n) if n > 0 => total += n as u64,
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing(raw: &str) -> Result<Framing, StatusCode> {
        let p = parse_request(raw.as_bytes()).unwrap().unwrap();
        let buf = raw.as_bytes();
        let text = |r: &Range<usize>| std::str::from_utf8(&buf[r.clone()]).unwrap();
        let head = RequestHead {
            method: text(&p.first),
            path: "/",
            query: None,
            authority: None,
            headers: p.headers.iter().map(|(n, v)| (text(n), &buf[v.clone()])).collect(),
        };
        request_framing(&head, p.minor)
    }

    #[test]
    fn request_heads_are_read_refused_or_awaited() {
        assert_eq!(super::read_request_head(b"GET /a?b HTTP/1.1\r\nHost: x\r\n\r\n"), Ok(Some(("GET".into(), "/a".into(), "none".into()))));
        assert_eq!(
            super::read_request_head(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n"),
            Ok(Some(("POST".into(), "/".into(), "length 3".into())))
        );
        assert_eq!(super::read_request_head(b"GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None));
        assert_eq!(super::read_request_head(b"GET / HTTP/1.1\r\n\r\n"), Err(400), "no Host");
        assert_eq!(super::read_request_head(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), Err(400), "two Hosts");
        assert_eq!(super::read_request_head(b"\x00\x01 junk\r\n\r\n"), Err(400));
        assert_eq!(super::read_request_head(&vec![b'a'; super::MAX_HEAD]), Err(431), "a head that never ends");
    }

    #[test]
    fn request_framing_refuses_ambiguity() {
        assert_eq!(framing("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"), Ok(Framing::Length(5)));
        assert_eq!(framing("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"), Ok(Framing::Length(5)));
        assert_eq!(framing("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n"), Ok(Framing::Length(5)));
        assert_eq!(framing("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"), Ok(Framing::Chunked));
        assert_eq!(framing("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Ok(Framing::None));
        assert_eq!(framing("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"), Err(StatusCode::BAD_REQUEST));
        assert_eq!(framing("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n"), Err(StatusCode::BAD_REQUEST));
        assert_eq!(framing("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"), Err(StatusCode::BAD_REQUEST));
        assert_eq!(framing("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), Err(StatusCode::BAD_REQUEST));
        assert_eq!(framing("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), Err(StatusCode::NOT_IMPLEMENTED));
        assert_eq!(framing("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"), Err(StatusCode::NOT_IMPLEMENTED));
    }

    #[test]
    fn targets_in_origin_and_absolute_form() {
        assert_eq!(split_target("/a/b?x=1"), Some(("/a/b", Some("x=1"), None)));
        assert_eq!(split_target("http://Shop.Example:8080/p?q"), Some(("/p", Some("q"), Some("Shop.Example:8080"))));
        assert_eq!(split_target("HTTPS://h"), Some(("/", None, Some("h"))));
        assert_eq!(split_target("*"), None);
        assert_eq!(split_target("h:443"), None);
    }

    #[test]
    fn heads_that_do_not_parse_are_refused() {
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n").map(|p| p.is_none()), Ok(true));
        assert!(parse_request(b"GET / HTTP/1.1\r\nBad Header: a\r\n\r\n").is_err());
        assert!(parse_request(b"GET / HTTP/1.1\r\n folded: a\r\n\r\n").is_err());
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        assert_eq!(parse_request(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()).err(), Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
    }
}
