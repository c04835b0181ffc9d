//! CNI errors: the spec's well-known codes and the JSON a plugin prints on failure.

use std::fmt;

use serde::Serialize;

/// The spec's well-known error codes (and the reference plugins' internal one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// 1: the config's `cniVersion` is not supported.
    IncompatibleVersion = 1,
    /// 2: a field of the network configuration is not supported.
    UnsupportedField = 2,
    /// 3: the container is unknown or does not exist.
    UnknownContainer = 3,
    /// 4: a required `CNI_*` environment variable is missing or invalid.
    InvalidEnvironment = 4,
    /// 5: I/O failure.
    Io = 5,
    /// 6: the input could not be decoded.
    Decoding = 6,
    /// 7: the network configuration is invalid.
    InvalidNetworkConfig = 7,
    /// 11: try again later.
    TryAgainLater = 11,
    /// 50: STATUS: the plugin is not available.
    PluginNotAvailable = 50,
    /// 51: STATUS: the plugin is not available and existing containers may have limited connectivity.
    PluginNotAvailableLimitedConnectivity = 51,
    /// 999: an internal error (the reference plugins' `ErrInternal`).
    Internal = 999,
}

/// An error as a plugin reports it: `{"cniVersion", "code", "msg", "details"}` on stdout.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct CniError {
    /// The code.
    pub code: Code,
    /// A short message.
    pub msg: String,
    /// Longer details (may be empty).
    pub details: String,
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.details.is_empty() { write!(f, "{}", self.msg) } else { write!(f, "{}; {}", self.msg, self.details) }
    }
}

#[derive(Serialize)]
struct Wire<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'a str,
    code: u32,
    msg: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    details: &'a str,
}

impl CniError {
    /// An error with a code and a message.
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        CniError { code, msg: msg.into(), details: String::new() }
    }

    /// Adds details.
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The JSON the plugin prints, in the version of the request.
    pub fn to_json(&self, cni_version: &str) -> String {
        let wire = Wire { cni_version, code: self.code as u32, msg: &self.msg, details: &self.details };
        serde_json::to_string(&wire).unwrap_or_else(|_| format!("{{\"code\":{}}}", self.code as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_serialize_like_the_reference_plugins() {
        let e = CniError::new(Code::InvalidEnvironment, "required env variables [CNI_NETNS] missing");
        assert_eq!(e.to_json("1.1.0"), r#"{"cniVersion":"1.1.0","code":4,"msg":"required env variables [CNI_NETNS] missing"}"#);
        let e = CniError::new(Code::Internal, "boom").with_details("more");
        assert_eq!(e.to_json("0.4.0"), r#"{"cniVersion":"0.4.0","code":999,"msg":"boom","details":"more"}"#);
    }
}
