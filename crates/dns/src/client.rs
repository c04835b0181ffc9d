//! A one-question blocking DNS client over UDP, for checks (`podnet lab check`) and tools.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};

/// Asks `server` for the A records of `name`; returns the response code's name and the addresses.
pub fn lookup_a(server: SocketAddr, name: &str, timeout: Duration) -> io::Result<(String, Vec<std::net::IpAddr>)> {
    lookup(server, name, false, timeout)
}

/// Asks `server` for the A records (`v6`: AAAA records) of `name`; returns the response code's
/// name and the addresses.
pub fn lookup(server: SocketAddr, name: &str, v6: bool, timeout: Duration) -> io::Result<(String, Vec<std::net::IpAddr>)> {
    let qname = Name::from_ascii(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?}: {e}")))?;
    let mut query = Message::query();
    query.metadata.id = (std::process::id() as u16) ^ 0x5a5a;
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(qname, if v6 { RecordType::AAAA } else { RecordType::A }));
    let bytes = query.to_vec().map_err(io::Error::other)?;
    let socket = UdpSocket::bind(if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
    socket.set_read_timeout(Some(timeout))?;
    socket.send_to(&bytes, server)?;
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, from) = socket.recv_from(&mut buf)?;
        let Ok(response) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if from != server || response.metadata.id != query.metadata.id {
            continue;
        }
        let addresses = response.answers.iter().filter_map(|r| match &r.data {
            hickory_proto::rr::RData::A(a) => Some(std::net::IpAddr::V4(a.0)),
            hickory_proto::rr::RData::AAAA(a) => Some(std::net::IpAddr::V6(a.0)),
            _ => None,
        });
        return Ok((response.metadata.response_code.to_string(), addresses.collect()));
    }
}
