//! One real connection from a pod, traced by the kernel: a `meta nftrace set 1` rule on every
//! node for the client's packets, `nft monitor trace` in every node while the connection is
//! made, and the lines read back per node. What `podnet trace` reports for its proxy and policy
//! steps comes from here, not from recomputing the rules.

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Child;
use std::time::Duration;

use model::Protocol;

use crate::state::LabState;

/// The table the tracing rule lives in, only while a trace runs.
pub const TRACE_TABLE: &str = "podnet-trace";

/// How the connection went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered; the echo server's JSON when it sent one.
    Answered(Option<serde_json::Value>),
    /// Reset or port-unreachable.
    Refused,
    /// Nothing came back.
    TimedOut,
    /// Another error.
    Failed(String),
}

/// One node's trace lines (`trace id …` lines of `nft monitor trace`).
#[derive(Clone, Debug)]
pub struct NodeTrace {
    /// The node.
    pub node: String,
    /// The lines, in order.
    pub lines: Vec<String>,
}

/// Runs `script` as one nft transaction in the lab namespace `netns`.
fn nft_in(netns: &str, script: &str) -> io::Result<()> {
    let script = script.to_owned();
    dataplane::netns::run_in(&dataplane::netns::path_of(netns), move || dataplane::nft::apply(&script))?
}

/// Monitors every node, makes the connection from `from_netns` to `to`, and returns its outcome
/// and every node's trace. The tracing tables are removed again whatever happens.
pub fn trace(
    st: &LabState,
    from_netns: &str,
    from_ip: Ipv4Addr,
    to: SocketAddr,
    protocol: Protocol,
    timeout: Duration,
) -> io::Result<(Outcome, Vec<NodeTrace>)> {
    let proto = match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    };
    let rule = format!(
        "add table inet {TRACE_TABLE}\nadd chain inet {TRACE_TABLE} pre {{ type filter hook prerouting priority -500; }}\nadd rule inet {TRACE_TABLE} pre ip saddr {from_ip} meta l4proto {proto} meta nftrace set 1\n"
    );
    let mut monitors: Vec<(String, Child)> = Vec::new();
    let result = (|| -> io::Result<Outcome> {
        for node in &st.plan.nodes {
            nft_in(&node.netns, &rule)?;
            let child = dataplane::netns::run_in(&dataplane::netns::path_of(&node.netns), dataplane::nft::monitor_trace)??;
            monitors.push((node.name.clone(), child));
        }
        // `nft monitor` subscribes as it starts: give every one a moment before the packet.
        std::thread::sleep(Duration::from_millis(200));
        let outcome = connect(from_netns, to, protocol, timeout);
        std::thread::sleep(Duration::from_millis(150));
        Ok(outcome)
    })();
    let mut traces = Vec::new();
    for (node, mut child) in monitors {
        let _ = child.kill();
        let mut text = String::new();
        if let Some(mut out) = child.stdout.take() {
            let _ = out.read_to_string(&mut text);
        }
        let _ = child.wait();
        traces.push(NodeTrace { node, lines: text.lines().filter(|l| l.starts_with("trace id")).map(str::to_owned).collect() });
    }
    for node in &st.plan.nodes {
        let _ = nft_in(&node.netns, &format!("add table inet {TRACE_TABLE}\ndelete table inet {TRACE_TABLE}\n"));
    }
    Ok((result?, traces))
}

/// One connection from a namespace: TCP (a line sent, the answer read) or UDP (a datagram and
/// its reply).
fn connect(netns: &str, to: SocketAddr, protocol: Protocol, timeout: Duration) -> Outcome {
    let path = dataplane::netns::path_of(netns);
    let exchanged = dataplane::netns::run_in(&path, move || -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 8192];
        match protocol {
            Protocol::Udp => {
                let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
                s.connect(to)?;
                s.set_read_timeout(Some(timeout))?;
                s.send(b"podnet trace\n")?;
                let n = s.recv(&mut buf)?;
                buf.truncate(n);
                Ok(buf)
            }
            _ => {
                let mut s = std::net::TcpStream::connect_timeout(&to, timeout)?;
                s.set_read_timeout(Some(timeout))?;
                io::Write::write_all(&mut s, b"podnet trace\n")?;
                let mut out = Vec::new();
                let _ = s.read_to_end(&mut out);
                Ok(out)
            }
        }
    });
    match exchanged {
        Ok(Ok(bytes)) => Outcome::Answered(serde_json::from_slice(bytes.split(|b| *b == b'\n').next().unwrap_or_default()).ok()),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => Outcome::Refused,
        Ok(Err(e)) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) => Outcome::TimedOut,
        Ok(Err(e)) => Outcome::Failed(e.to_string()),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// One line of `nft monitor trace`, split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceLine<'a> {
    /// The trace id (one per packet per hook pass).
    pub id: &'a str,
    /// `inet podnet-policy` …
    pub family: &'a str,
    /// Table.
    pub table: &'a str,
    /// Chain.
    pub chain: &'a str,
    /// What follows: `packet: …`, `rule … (verdict …)`, `policy accept`, `verdict …`.
    pub rest: &'a str,
}

impl TraceLine<'_> {
    /// The verdict of a `rule … (verdict V)` or `policy V` line.
    pub fn verdict(&self) -> Option<&str> {
        if let Some(v) = self.rest.strip_prefix("policy ") {
            return Some(v.trim());
        }
        let (_, v) = self.rest.rsplit_once("(verdict ")?;
        v.strip_suffix(')')
    }

    /// The rule's text of a `rule …` line.
    pub fn rule(&self) -> Option<&str> {
        let r = self.rest.strip_prefix("rule ")?;
        Some(r.rsplit_once(" (verdict ").map_or(r, |(rule, _)| rule))
    }

    /// A `packet:` line's destination address and port.
    pub fn packet_destination(&self) -> Option<(IpAddr, Option<u16>)> {
        let p = self.rest.strip_prefix("packet:")?;
        let words: Vec<&str> = p.split_whitespace().collect();
        let after = |key: &[&str]| words.windows(key.len() + 1).find(|w| w[..key.len()] == *key).map(|w| w[key.len()]);
        let ip = after(&["ip", "daddr"])?.parse().ok()?;
        let port = after(&["tcp", "dport"]).or_else(|| after(&["udp", "dport"])).or_else(|| after(&["sctp", "dport"])).and_then(|p| p.parse().ok());
        Some((ip, port))
    }
}

/// Splits a `trace id …` line.
pub fn parse_line(line: &str) -> Option<TraceLine<'_>> {
    let rest = line.strip_prefix("trace id ")?;
    let mut parts = rest.splitn(5, ' ');
    Some(TraceLine { id: parts.next()?, family: parts.next()?, table: parts.next()?, chain: parts.next()?, rest: parts.next()?.trim_end() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_lines_split_into_rule_verdict_and_packet() {
        let l =
            parse_line("trace id bc852e1e ip podnet-proxy services rule ip daddr . meta l4proto . th dport vmap @frontends (verdict goto cluster-2)").unwrap();
        assert_eq!((l.id, l.family, l.table, l.chain), ("bc852e1e", "ip", "podnet-proxy", "services"));
        assert_eq!(l.verdict(), Some("goto cluster-2"));
        assert_eq!(l.rule(), Some("ip daddr . meta l4proto . th dport vmap @frontends"));
        let p = parse_line("trace id e359fa59 inet podnet-policy forward-egress packet: iif \"cni0\" oif \"eth0\" ip saddr 10.244.0.3 ip daddr 10.244.2.3 ip ttl 63 tcp sport 42260 tcp dport 8080 tcp flags == syn").unwrap();
        assert_eq!(p.packet_destination(), Some(("10.244.2.3".parse().unwrap(), Some(8080))));
        let policy = parse_line("trace id e359fa59 inet podnet-policy forward-ingress policy accept ").unwrap();
        assert_eq!(policy.verdict(), Some("accept"));
        assert!(parse_line("something else").is_none());
    }
}
