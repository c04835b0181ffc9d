//! Connections to endpoints, kept open between requests as ingress-nginx's upstream keepalive
//! does (at most 320 idle per endpoint, 60 s each): plain TCP, or TLS for `backend-protocol:
//! HTTPS` (not verified, as ingress-nginx's `proxy-ssl-verify` default is off).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Idle connections kept per endpoint (ingress-nginx's `upstream-keepalive-connections`).
const IDLE_PER_ENDPOINT: usize = 320;
/// How long one stays idle (`upstream-keepalive-timeout`).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection to an endpoint.
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref().0,
        }
    }

    /// Whether an idle connection can still carry a request: nothing arrived on it while it
    /// sat idle (an end of stream, a reset, or bytes nobody asked for all mean it cannot). Costs
    /// a system call only when the reactor saw it become readable.
    fn still_open(&self) -> bool {
        let tcp = self.tcp();
        let mut cx = Context::from_waker(Waker::noop());
        match tcp.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                matches!(tcp.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A kept connection and since when it idles.
type Idle = (Instant, Conn);

/// Idle connections by (endpoint, TLS).
pub struct Pool {
    idle: Mutex<HashMap<(SocketAddr, bool), Vec<Idle>, fnv::FnvBuildHasher>>,
    swept: Mutex<Instant>,
    /// `None` if the TLS configuration could not be built (then TLS connections fail).
    tls: Option<tokio_rustls::TlsConnector>,
    /// The same, offering HTTP/2 (ALPN `h2`), for gRPC over TLS.
    tls_h2: Option<tokio_rustls::TlsConnector>,
}

impl Default for Pool {
    fn default() -> Pool {
        let connector = |alpn: &[u8]| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            rustls::ClientConfig::builder_with_provider(Arc::clone(&provider)).with_safe_default_protocol_versions().ok().map(|b| {
                let mut c = b.dangerous().with_custom_certificate_verifier(Arc::new(Unverified(provider))).with_no_client_auth();
                c.alpn_protocols = vec![alpn.to_vec()];
                tokio_rustls::TlsConnector::from(Arc::new(c))
            })
        };
        Pool { idle: Mutex::new(HashMap::default()), swept: Mutex::new(Instant::now()), tls: connector(b"http/1.1"), tls_h2: connector(b"h2") }
    }
}

impl Pool {
    /// An idle connection to the endpoint that is still open.
    pub fn take(&self, endpoint: SocketAddr, tls: bool) -> Option<Conn> {
        let mut idle = self.idle.lock().ok()?;
        let conns = idle.get_mut(&(endpoint, tls))?;
        while let Some((since, conn)) = conns.pop() {
            if since.elapsed() < IDLE_TIMEOUT && conn.still_open() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps a connection whose last exchange ended cleanly.
    pub fn put(&self, endpoint: SocketAddr, tls: bool, conn: Conn) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        let conns = idle.entry((endpoint, tls)).or_default();
        if conns.len() < IDLE_PER_ENDPOINT {
            conns.push((Instant::now(), conn));
        }
        // Now and then, close what idled too long (endpoints that went away, too).
        if let Ok(mut swept) = self.swept.try_lock()
            && swept.elapsed() > IDLE_TIMEOUT / 4
        {
            *swept = Instant::now();
            idle.retain(|_, conns| {
                conns.retain(|(since, _)| since.elapsed() < IDLE_TIMEOUT);
                !conns.is_empty()
            });
        }
    }

    /// A new TLS connection offering HTTP/2 only, within `timeout`.
    pub async fn connect_h2(&self, endpoint: SocketAddr, timeout: Duration) -> io::Result<Conn> {
        self.open(endpoint, Some(&self.tls_h2), timeout).await
    }

    /// A new connection, within `timeout`.
    pub async fn connect(&self, endpoint: SocketAddr, tls: bool, timeout: Duration) -> io::Result<Conn> {
        self.open(endpoint, tls.then_some(&self.tls), timeout).await
    }

    /// TCP, then TLS through the connector `tls` names when it names one (which is `None` if its
    /// configuration could not be built).
    async fn open(&self, endpoint: SocketAddr, tls: Option<&Option<tokio_rustls::TlsConnector>>, timeout: Duration) -> io::Result<Conn> {
        let connect = async {
            let tcp = TcpStream::connect(endpoint).await?;
            tcp.set_nodelay(true)?;
            let Some(connector) = tls else {
                return Ok(Conn::Plain(tcp));
            };
            let Some(connector) = connector else {
                return Err(io::Error::other("no TLS client configuration"));
            };
            // ingress-nginx sends no SNI to backends by default (`proxy-ssl-server-name: off`).
            Ok(Conn::Tls(Box::new(connector.connect(ServerName::IpAddress(endpoint.ip().into()), tcp).await?)))
        };
        tokio::time::timeout(timeout, connect).await.map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
    }
}

/// Accepts the backend's certificate unchecked (ingress-nginx's `proxy-ssl-verify: off`), but
/// still checks the handshake's signatures, so the session is with the key's holder.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
