//! The Container Network Interface, spec 1.1, without a Kubernetes client.
//!
//! - [`env`]: the `CNI_*` invocation, checked like the reference `skel`;
//! - [`error`]: the spec's error codes and the error JSON;
//! - [`result`]: results of every supported version (0.3.0 to 1.1.0);
//! - [`ipam`]: IPAM compatible with the reference `host-local` (config, allocation order, lease files);
//! - [`config`]: the network configuration on stdin;
//! - [`plugin`]: the plugin itself (bridge and IPAM), run by the `podnet-cni` binary.

#![forbid(unsafe_code)]

pub mod config;
pub mod env;
pub mod error;
pub mod ipam;
pub mod plugin;
pub mod result;

pub use env::{Command, Invocation};
pub use error::{CniError, Code};
pub use result::{CniResult, SUPPORTED_VERSIONS};
