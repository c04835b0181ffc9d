//! Ingress and Gateway API routing as a pure value: [`routes`] is the table one request is
//! routed by (host, then path precedence), [`ingress`] builds it from the Ingresses of our
//! IngressClasses, [`annotations`] reads the ingress-nginx annotations users rely on.

#![forbid(unsafe_code)]

pub mod annotations;
pub mod ingress;
pub mod routes;

pub use routes::{Backend, Decision, PathKind, RouteTable};
