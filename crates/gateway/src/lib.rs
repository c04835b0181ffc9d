//! Ingress and Gateway API routing as a pure value: [`routes`] is the table one request is
//! routed by (host, then path precedence), [`ingress`] builds it from the Ingresses of our
//! IngressClasses, [`annotations`] reads the ingress-nginx annotations users rely on;
//! [`server`] is the hyper/rustls proxy serving a snapshot of them, [`backends`] the endpoint
//! addresses behind Services, [`tls`] the certificates by server name.

#![forbid(unsafe_code)]

pub mod annotations;
pub mod backends;
mod chunked;
mod h1;
pub use h1::read_request_head;
pub mod httproute;
pub mod ingress;
pub mod plan;
pub mod request;
pub mod routes;
pub mod server;
pub mod tls;
mod upstream;

pub use routes::{Backend, Decision, PathKind, RouteTable};
