//! Results: one model (spec 1.1) and the wire shape of every supported version.
//!
//! - 1.1.0: interfaces may carry `mtu`, `socketPath`, `pciID`; routes `mtu`, `advmss`, `priority`, `table`, `scope`;
//! - 1.0.0: the same without those additions;
//! - 0.3.0, 0.3.1, 0.4.0: like 1.0.0, and every IP carries `"version": "4"|"6"`.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::{CniError, Code};

/// The spec versions this implementation speaks, oldest first.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest supported version.
pub const CURRENT_VERSION: &str = "1.1.0";

/// Checks a config's `cniVersion` (code 1 when unsupported, as the reference `skel` does).
pub fn check_version(v: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&v) {
        Ok(())
    } else {
        Err(CniError::new(Code::IncompatibleVersion, "incompatible CNI versions")
            // Go's %q of a slice, as the reference skel prints it.
            .with_details(format!("config is {v:?}, plugin supports [{}]", SUPPORTED_VERSIONS.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(" "))))
    }
}

/// The VERSION command's answer.
pub fn version_info() -> String {
    json!({"cniVersion": CURRENT_VERSION, "supportedVersions": SUPPORTED_VERSIONS}).to_string()
}

/// An interface created or used by a plugin.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Its MTU (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path, for container interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// An address given to an interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Address with prefix length (`10.244.1.5/24`).
    pub address: IpNet,
    /// The gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination.
    pub dst: IpNet,
    /// Next hop (the default gateway when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// Route MTU (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Route priority/metric (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
}

/// DNS settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// A plugin's result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    /// Interfaces.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Addresses.
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    /// Routes.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// DNS.
    #[serde(default)]
    pub dns: Dns,
}

impl CniResult {
    /// The result as JSON in the shape of `version` (a supported version).
    pub fn to_version(&self, version: &str) -> Value {
        let v1 = version.starts_with("1.");
        let v11 = version == "1.1.0";
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(version));
        if !self.interfaces.is_empty() {
            let list: Vec<Value> = self
                .interfaces
                .iter()
                .map(|i| {
                    let mut v = serde_json::to_value(i).unwrap_or_default();
                    if !v11 && let Some(m) = v.as_object_mut() {
                        m.remove("mtu");
                    }
                    v
                })
                .collect();
            out.insert("interfaces".into(), Value::Array(list));
        }
        if !self.ips.is_empty() {
            let list: Vec<Value> = self
                .ips
                .iter()
                .map(|ip| {
                    let mut m = Map::new();
                    if !v1 {
                        m.insert("version".into(), json!(if ip.address.addr().is_ipv4() { "4" } else { "6" }));
                    }
                    if let Some(i) = ip.interface {
                        m.insert("interface".into(), json!(i));
                    }
                    m.insert("address".into(), json!(ip.address.to_string()));
                    if let Some(gw) = ip.gateway {
                        m.insert("gateway".into(), json!(gw.to_string()));
                    }
                    Value::Object(m)
                })
                .collect();
            out.insert("ips".into(), Value::Array(list));
        }
        if !self.routes.is_empty() {
            let list: Vec<Value> = self
                .routes
                .iter()
                .map(|r| {
                    let mut v = serde_json::to_value(r).unwrap_or_default();
                    if !v11 && let Some(m) = v.as_object_mut() {
                        m.remove("mtu");
                        m.remove("priority");
                    }
                    v
                })
                .collect();
            out.insert("routes".into(), Value::Array(list));
        }
        out.insert("dns".into(), serde_json::to_value(&self.dns).unwrap_or_default());
        Value::Object(out)
    }

    /// Reads a result of any supported version (a `prevResult`, an IPAM plugin's answer).
    pub fn from_value(v: &Value) -> Result<Self, CniError> {
        let version = v.get("cniVersion").and_then(Value::as_str).unwrap_or(CURRENT_VERSION);
        check_version(version)?;
        // Older shapes differ only by the `version` field of IPs, which serde ignores.
        serde_json::from_value(v.clone()).map_err(|e| CniError::new(Code::Decoding, "failed to decode result").with_details(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface { name: "cni0".into(), mac: Some("aa:bb:cc:dd:ee:01".into()), mtu: Some(1500), sandbox: None },
                Interface { name: "eth0".into(), mac: Some("aa:bb:cc:dd:ee:02".into()), mtu: Some(1500), sandbox: Some("/var/run/netns/p".into()) },
            ],
            ips: vec![IpConfig { address: "10.244.1.5/24".parse().unwrap(), gateway: Some("10.244.1.1".parse().unwrap()), interface: Some(1) }],
            routes: vec![Route { dst: "0.0.0.0/0".parse().unwrap(), gw: None, mtu: None, priority: Some(10) }],
            dns: Dns::default(),
        }
    }

    #[test]
    fn results_take_the_shape_of_the_requested_version() {
        let r = sample();
        let v11 = r.to_version("1.1.0");
        assert_eq!(v11["interfaces"][1]["mtu"], 1500);
        assert_eq!(v11["routes"][0]["priority"], 10);
        assert!(v11["ips"][0].get("version").is_none());
        let v10 = r.to_version("1.0.0");
        assert!(v10["interfaces"][1].get("mtu").is_none());
        assert!(v10["routes"][0].get("priority").is_none());
        let v04 = r.to_version("0.4.0");
        assert_eq!(v04["ips"][0]["version"], "4");
        assert_eq!(v04["ips"][0]["address"], "10.244.1.5/24");
        assert_eq!(v04["cniVersion"], "0.4.0");
        assert_eq!(v04["dns"], json!({}));
    }

    #[test]
    fn results_of_every_version_read_back() {
        let r = sample();
        for v in SUPPORTED_VERSIONS {
            let back = CniResult::from_value(&r.to_version(v)).unwrap();
            assert_eq!(back.ips, r.ips, "{v}");
        }
    }

    #[test]
    fn unsupported_versions_are_code_1() {
        assert_eq!(check_version("0.2.0").unwrap_err().code, Code::IncompatibleVersion);
        assert!(check_version("1.1.0").is_ok());
        assert_eq!(serde_json::from_str::<Value>(&version_info()).unwrap()["supportedVersions"], json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]));
    }
}
