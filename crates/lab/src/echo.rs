//! The echo server that stands in for every declared container port: it answers with the pod's
//! identity and the client's address as the server saw it (so tests can see NAT, or its absence).
//! TCP and UDP get a line of JSON; a TCP request that starts like HTTP gets an HTTP response
//! whose JSON body also carries the method, path and headers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Who answers: one pod's one port.
#[derive(Clone, Debug, Serialize)]
pub struct Identity {
    /// `ns/name`
    pub pod: String,
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Pod IP.
    pub ip: String,
    /// Node.
    pub node: String,
    /// Port.
    pub port: u16,
    /// `TCP` / `UDP`.
    pub protocol: &'static str,
}

/// The answer's JSON: the identity plus the client as seen by the server.
pub fn answer(id: &Identity, client: SocketAddr) -> Map<String, Value> {
    let mut m = match serde_json::to_value(id) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    m.insert("client".into(), json!(client.to_string()));
    m.insert("client_ip".into(), json!(client.ip().to_string()));
    m
}

const METHODS: [&str; 9] = ["GET ", "HEAD ", "POST ", "PUT ", "DELETE ", "PATCH ", "OPTIONS ", "CONNECT ", "TRACE "];

fn looks_like_http(data: &[u8]) -> bool {
    METHODS.iter().any(|m| data.starts_with(m.as_bytes()))
}

/// Accepts connections forever.
pub async fn serve_tcp(listener: TcpListener, id: Arc<Identity>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let id = Arc::clone(&id);
        tokio::spawn(async move {
            let _ = handle_tcp(stream, peer, &id).await;
        });
    }
}

async fn handle_tcp(mut stream: TcpStream, peer: SocketAddr, id: &Identity) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    // A client that sends nothing (a plain connect) gets the JSON line after a short wait.
    let n = match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await {
        Ok(Ok(n)) => n,
        _ => 0,
    };
    let mut body = answer(id, peer);
    if n > 0 && looks_like_http(&buf[..n]) {
        let mut len = n;
        // Read up to the end of the headers (bounded in size and time).
        while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") && len < buf.len() {
            match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf[len..])).await {
                Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                Ok(Ok(k)) => len += k,
            }
        }
        let head = String::from_utf8_lossy(&buf[..len]);
        let mut lines = head.split("\r\n");
        let mut request = lines.next().unwrap_or_default().split_whitespace();
        body.insert("method".into(), json!(request.next().unwrap_or_default()));
        body.insert("path".into(), json!(request.next().unwrap_or_default()));
        let mut headers = Map::new();
        for line in lines.take_while(|l| !l.is_empty()) {
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_owned(), json!(v.trim()));
            }
        }
        body.insert("headers".into(), Value::Object(headers));
        let text = format!("{}\n", Value::Object(body));
        let response = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}", text.len());
        stream.write_all(response.as_bytes()).await?;
    } else {
        stream.write_all(format!("{}\n", Value::Object(body)).as_bytes()).await?;
    }
    stream.shutdown().await
}

/// Answers every datagram with a JSON line.
pub async fn serve_udp(socket: UdpSocket, id: Arc<Identity>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let Ok((_, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let reply = format!("{}\n", Value::Object(answer(&id, peer)));
        let _ = socket.send_to(reply.as_bytes(), peer).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Arc<Identity> {
        Arc::new(Identity {
            pod: "shop/web".into(),
            namespace: "shop".into(),
            name: "web".into(),
            ip: "127.0.0.1".into(),
            node: "node-1".into(),
            port: 0,
            protocol: "TCP",
        })
    }

    async fn exchange(addr: SocketAddr, send: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        if !send.is_empty() {
            s.write_all(send).await.unwrap();
        }
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[test]
    fn tcp_http_and_udp_answers_name_the_pod_and_the_client() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(serve_tcp(l, id()));
            let line = exchange(addr, b"").await;
            let v: Value = serde_json::from_str(line.trim()).unwrap();
            assert_eq!(v["pod"], "shop/web");
            assert_eq!(v["client_ip"], "127.0.0.1");
            let http = exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: web\r\nX-Test: 1\r\n\r\n").await;
            assert!(http.starts_with("HTTP/1.1 200 OK\r\n"), "{http}");
            let body: Value = serde_json::from_str(http.split("\r\n\r\n").nth(1).unwrap().trim()).unwrap();
            assert_eq!((body["method"].as_str(), body["path"].as_str()), (Some("GET"), Some("/healthz")));
            assert_eq!(body["headers"]["X-Test"], "1");

            let u = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let uaddr = u.local_addr().unwrap();
            tokio::spawn(serve_udp(u, id()));
            let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            c.send_to(b"hi", uaddr).await.unwrap();
            let mut buf = [0u8; 2048];
            let (n, _) = c.recv_from(&mut buf).await.unwrap();
            let v: Value = serde_json::from_slice(&buf[..n]).unwrap();
            assert_eq!(v["client"], c.local_addr().unwrap().to_string());
        });
    }
}
