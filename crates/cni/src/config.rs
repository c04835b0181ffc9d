//! Network configuration as a plugin receives it on stdin.

use serde::Deserialize;
use serde_json::Value;

use crate::error::{CniError, Code};
use crate::result::check_version;

/// The fields every plugin reads, plus the bridge plugin's own (reference `bridge` names and defaults).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// `cniVersion`
    pub cni_version: String,
    /// `name`: the network.
    pub name: String,
    /// `type`: the plugin.
    #[serde(rename = "type")]
    pub plugin: String,
    /// `ipam`, passed to the IPAM plugin.
    #[serde(default)]
    pub ipam: Value,
    /// `prevResult` (CHECK, DEL, chained plugins).
    #[serde(default)]
    pub prev_result: Option<Value>,
    /// `args` (conventions: `args.cni.ips`).
    #[serde(default)]
    pub args: Option<Value>,
    /// `runtimeConfig` (capabilities: `ips`).
    #[serde(default)]
    pub runtime_config: Option<Value>,
    /// `cni.dev/valid-attachments` (GC).
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
    /// Legacy name of the GC list.
    #[serde(default, rename = "cni.dev/attachments")]
    pub attachments: Option<Vec<Attachment>>,
    /// Bridge: the bridge's name (default `cni0`).
    #[serde(default = "default_bridge")]
    pub bridge: String,
    /// Bridge: give the bridge the gateway address.
    #[serde(default)]
    pub is_gateway: bool,
    /// Bridge: add a default route via the gateway (implies `isGateway`).
    #[serde(default)]
    pub is_default_gateway: bool,
    /// Bridge: masquerade traffic leaving the pod subnet.
    #[serde(default)]
    pub ip_masq: bool,
    /// Bridge: hairpin mode on the host-side veth.
    #[serde(default)]
    pub hairpin_mode: bool,
    /// Bridge: MTU of the bridge and veths.
    #[serde(default)]
    pub mtu: Option<u32>,
}

/// One entry of `cni.dev/valid-attachments`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// Container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Interface name.
    pub ifname: String,
}

fn default_bridge() -> String {
    "cni0".into()
}

impl NetConf {
    /// Parses stdin: decoding errors are code 6, version errors code 1, a bad name code 7.
    pub fn parse(stdin: &[u8]) -> Result<Self, CniError> {
        let value: Value = serde_json::from_slice(stdin).map_err(|e| CniError::new(Code::Decoding, format!("error unmarshall network config: {e}")))?;
        let version = value.get("cniVersion").and_then(Value::as_str).unwrap_or("0.1.0");
        check_version(version)?;
        let conf: NetConf = serde_json::from_value(value).map_err(|e| CniError::new(Code::Decoding, format!("error unmarshall network config: {e}")))?;
        validate_network_name(&conf.name)?;
        Ok(conf)
    }

    /// The attachments GC must keep.
    pub fn gc_attachments(&self) -> Vec<(String, String)> {
        self.valid_attachments.iter().chain(self.attachments.iter()).flatten().map(|a| (a.container_id.clone(), a.ifname.clone())).collect()
    }

    /// Requested addresses: `args.cni.ips`, `runtimeConfig.ips` (entries may carry a prefix).
    pub fn requested_ips(&self) -> Vec<std::net::IpAddr> {
        let from = |v: Option<&Value>| -> Vec<std::net::IpAddr> {
            v.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).filter_map(|s| s.split('/').next()?.parse().ok()).collect()
        };
        let mut ips = from(self.args.as_ref().and_then(|a| a.get("cni")).and_then(|c| c.get("ips")));
        ips.extend(from(self.runtime_config.as_ref().and_then(|r| r.get("ips"))));
        ips
    }
}

/// Network names: not empty, and characters like a container ID's.
pub fn validate_network_name(name: &str) -> Result<(), CniError> {
    if name.is_empty() {
        return Err(CniError::new(Code::InvalidNetworkConfig, "missing network name"));
    }
    let b = name.as_bytes();
    let ok = b[0].is_ascii_alphanumeric() && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok { Ok(()) } else { Err(CniError::new(Code::InvalidNetworkConfig, "invalid characters found in network name").with_details(name)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_defaults() {
        let c = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"podnet","type":"podnet-bridge","ipam":{}}"#).unwrap();
        assert_eq!(c.bridge, "cni0");
        assert!(!c.is_gateway && !c.ip_masq && !c.hairpin_mode);
    }

    #[test]
    fn errors_carry_the_reference_codes() {
        assert_eq!(NetConf::parse(b"{not json").unwrap_err().code, Code::Decoding);
        assert_eq!(NetConf::parse(br#"{"cniVersion":"9.9.9","name":"n","type":"t"}"#).unwrap_err().code, Code::IncompatibleVersion);
        assert_eq!(NetConf::parse(br#"{"cniVersion":"1.0.0","name":"","type":"t"}"#).unwrap_err().code, Code::InvalidNetworkConfig);
        assert_eq!(NetConf::parse(br#"{"cniVersion":"1.0.0","name":"a b","type":"t"}"#).unwrap_err().code, Code::InvalidNetworkConfig);
    }

    #[test]
    fn gc_lists_and_requested_ips() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"n","type":"t","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}],
                 "cni.dev/attachments":[{"containerID":"b","ifname":"eth0"}],
                 "args":{"cni":{"ips":["10.0.0.5"]}},"runtimeConfig":{"ips":["10.0.0.6/24"]}}"#,
        )
        .unwrap();
        assert_eq!(c.gc_attachments().len(), 2);
        assert_eq!(c.requested_ips().len(), 2);
    }
}
