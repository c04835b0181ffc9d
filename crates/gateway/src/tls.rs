//! Certificates by server name, from `kubernetes.io/tls` Secrets named in Ingresses' `tls`
//! sections: an exact host, else a wildcard host, else a section without hosts. The oldest
//! Ingress's Secret wins a host. A Secret that is missing or does not parse is a problem report,
//! and its hosts have no certificate; the other hosts keep theirs.

use std::collections::HashMap;
use std::sync::Arc;

use model::ClusterState;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::ingress::Tls;

/// Certificates for SNI.
#[derive(Clone, Debug, Default)]
pub struct Certificates {
    hosts: HashMap<String, Arc<CertifiedKey>>,
    wildcards: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

/// A Secret's certificate chain and key.
pub(crate) fn load(state: &ClusterState, namespace: &str, name: &str) -> Result<Arc<CertifiedKey>, String> {
    let secret =
        state.secrets.iter().find(|s| s.namespace == namespace && s.name == name).ok_or_else(|| format!("Secret {namespace}/{name} does not exist"))?;
    let data = secret.object.data.as_ref();
    let field = |key: &str| data.and_then(|d| d.get(key)).map(|b| b.0.clone()).ok_or_else(|| format!("Secret {namespace}/{name} has no {key}"));
    let (crt, key) = (field("tls.crt")?, field("tls.key")?);
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&crt).collect::<Result<_, _>>().map_err(|e| format!("Secret {namespace}/{name}: tls.crt: {e}"))?;
    if chain.is_empty() {
        return Err(format!("Secret {namespace}/{name}: tls.crt has no certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| format!("Secret {namespace}/{name}: tls.key: {e}"))?;
    // The certificate parsed as X.509 and its public key the private key's, as ingress-nginx's
    // CreateSSLCert checks, so a broken pair is a problem report instead of a broken handshake.
    match CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider()) {
        Ok(k) => Ok(Arc::new(k)),
        Err(rustls::Error::InconsistentKeys(_)) => Err(format!("Secret {namespace}/{name}: certificate and private key does not have a matching public key")),
        Err(e) => Err(format!("Secret {namespace}/{name}: {e}")),
    }
}

/// ingress-nginx's "Kubernetes Ingress Controller Fake Certificate" (O "Acme Co", for
/// `ingress.local`): self-signed, made once per process, served to a TLS client whose name has
/// no certificate of its own when no Ingress gave a default.
pub fn fake_certificate() -> Option<Arc<CertifiedKey>> {
    static FAKE: std::sync::OnceLock<Option<Arc<CertifiedKey>>> = std::sync::OnceLock::new();
    FAKE.get_or_init(|| {
        let key = rcgen::KeyPair::generate().ok()?;
        let mut params = rcgen::CertificateParams::new(vec!["ingress.local".to_owned()]).ok()?;
        params.distinguished_name.push(rcgen::DnType::CommonName, "Kubernetes Ingress Controller Fake Certificate");
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "Acme Co");
        let cert = params.self_signed(&key).ok()?;
        let der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        CertifiedKey::from_der(vec![cert.der().clone()], der, &rustls::crypto::ring::default_provider()).ok().map(Arc::new)
    })
    .clone()
}

impl Certificates {
    /// The certificates of TLS sections (oldest Ingress first); problems name the Secret.
    pub fn build(sections: &[Tls], state: &ClusterState, problems: &mut Vec<String>) -> Certificates {
        let mut out = Certificates::default();
        let mut hostless = false;
        for tls in sections {
            let key = match load(state, &tls.secret.0, &tls.secret.1) {
                Ok(k) => k,
                Err(e) => {
                    problems.push(format!("Ingress {}/{}: {e}", tls.source.namespace, tls.source.name));
                    continue;
                }
            };
            // A name without a certificate gets the first section without hosts, else the
            // oldest Ingress's certificate: where ingress-nginx shows its fake certificate, a
            // client that accepts it (`curl -k`) still gets the 404 or the route.
            if tls.hosts.is_empty() && !hostless {
                out.default = Some(Arc::clone(&key));
                hostless = true;
            } else if out.default.is_none() {
                out.default = Some(Arc::clone(&key));
            }
            for host in &tls.hosts {
                let slot = match host.strip_prefix('*') {
                    Some(suffix) => out.wildcards.entry(suffix.to_owned()),
                    None => out.hosts.entry(host.clone()),
                };
                slot.or_insert_with(|| Arc::clone(&key));
            }
        }
        out
    }

    /// Adds a Gateway listener's certificate for its hostname (none: the default), unless an
    /// older object has that name.
    pub fn add(&mut self, hostname: Option<&str>, key: Arc<CertifiedKey>) {
        match hostname.map(str::to_ascii_lowercase) {
            None => {
                self.default.get_or_insert(key);
            }
            Some(h) => match h.strip_prefix('*') {
                Some(suffix) => {
                    self.wildcards.entry(suffix.to_owned()).or_insert(key);
                }
                None => {
                    self.hosts.entry(h).or_insert(key);
                }
            },
        }
    }

    /// The certificate for a TLS client's server name.
    pub fn for_name(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = name.map(str::to_ascii_lowercase) {
            if let Some(k) = self.hosts.get(&name) {
                return Some(Arc::clone(k));
            }
            if let Some((_, suffix)) = name.split_once('.')
                && let Some(k) = self.wildcards.get(&format!(".{suffix}"))
            {
                return Some(Arc::clone(k));
            }
        }
        self.default.clone().or_else(fake_certificate)
    }

    /// Whether any certificate is known.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.wildcards.is_empty() && self.default.is_none()
    }
}
