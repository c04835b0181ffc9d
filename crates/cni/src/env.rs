//! The invocation: `CNI_*` environment variables, checked as the reference `skel` checks them.

use std::collections::BTreeMap;

use crate::error::{CniError, Code};

/// The operations of CNI 1.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Add a container to the network.
    Add,
    /// Remove a container from the network (idempotent).
    Del,
    /// Check a container's networking.
    Check,
    /// Report whether the plugin is ready.
    Status,
    /// Release everything not in `cni.dev/valid-attachments`.
    Gc,
    /// Report supported versions.
    Version,
}

impl Command {
    /// Parses `CNI_COMMAND`.
    pub fn parse(s: &str) -> Result<Self, CniError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            other => {
                return Err(CniError::new(Code::InvalidEnvironment, format!("unknown CNI_COMMAND: {other}")));
            }
        })
    }
}

/// The parsed `CNI_*` environment of one invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    /// `CNI_COMMAND`
    pub command: Command,
    /// `CNI_CONTAINERID`
    pub container_id: String,
    /// `CNI_NETNS` (may be empty for DEL)
    pub netns: String,
    /// `CNI_IFNAME`
    pub ifname: String,
    /// `CNI_ARGS`, split into pairs
    pub args: BTreeMap<String, String>,
    /// `CNI_PATH`, split on `:`
    pub path: Vec<String>,
}

impl Invocation {
    /// Reads and checks the environment given by `get` (normally `std::env::var`).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let command = Command::parse(&get("CNI_COMMAND").unwrap_or_default()).map_err(|e| {
            if get("CNI_COMMAND").is_none() { CniError::new(Code::InvalidEnvironment, "required env variables [CNI_COMMAND] missing") } else { e }
        })?;
        let needs = |var: &str| -> bool {
            match var {
                "CNI_CONTAINERID" | "CNI_IFNAME" | "CNI_PATH" => {
                    matches!(command, Command::Add | Command::Del | Command::Check)
                }
                "CNI_NETNS" => matches!(command, Command::Add | Command::Check),
                _ => false,
            }
        };
        let missing: Vec<&str> =
            ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"].into_iter().filter(|v| needs(v) && get(v).is_none_or(|s| s.is_empty())).collect();
        if !missing.is_empty() {
            return Err(CniError::new(Code::InvalidEnvironment, format!("required env variables [{}] missing", missing.join(" "))));
        }
        let inv = Invocation {
            command,
            container_id: get("CNI_CONTAINERID").unwrap_or_default(),
            netns: get("CNI_NETNS").unwrap_or_default(),
            ifname: get("CNI_IFNAME").unwrap_or_default(),
            args: parse_args(&get("CNI_ARGS").unwrap_or_default())?,
            path: get("CNI_PATH").unwrap_or_default().split(':').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        };
        if matches!(command, Command::Add | Command::Del | Command::Check) {
            validate_container_id(&inv.container_id)?;
            validate_interface_name(&inv.ifname)?;
        }
        Ok(inv)
    }
}

/// `FOO=BAR;ABC=123`
fn parse_args(s: &str) -> Result<BTreeMap<String, String>, CniError> {
    let mut out = BTreeMap::new();
    for pair in s.split(';').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(CniError::new(Code::InvalidEnvironment, format!("ARGS: invalid pair {pair:?}")));
        };
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

/// A container ID starts with an alphanumeric character, then alphanumerics, `_`, `.` or `-`.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    let b = id.as_bytes();
    if b.is_empty() {
        return Err(CniError::new(Code::InvalidEnvironment, "missing containerID"));
    }
    let ok = b[0].is_ascii_alphanumeric() && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok { Ok(()) } else { Err(CniError::new(Code::InvalidEnvironment, "invalid characters in containerID").with_details(id)) }
}

/// Linux interface names: not empty, not `.`/`..`, under 16 bytes, no `/`, `:` or whitespace.
pub fn validate_interface_name(name: &str) -> Result<(), CniError> {
    let err = |msg: &str| Err(CniError::new(Code::InvalidEnvironment, msg).with_details(name));
    if name.is_empty() {
        return err("interface name is empty");
    }
    if name.len() > 15 {
        return err("interface name is too long");
    }
    if name == "." || name == ".." {
        return err("cannot use . or .. as interface name");
    }
    if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        return err("interface name contains / or : or whitespace characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn add_needs_container_netns_ifname_and_path() {
        let e = Invocation::from_env(env(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")])).unwrap_err();
        assert_eq!(e.code, Code::InvalidEnvironment);
        assert_eq!(e.msg, "required env variables [CNI_CONTAINERID CNI_NETNS CNI_PATH] missing");
    }

    #[test]
    fn del_does_not_need_a_netns() {
        let inv = Invocation::from_env(env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
            ("CNI_ARGS", "IP=10.0.0.5;K8S_POD_NAME=web"),
        ]))
        .unwrap();
        assert_eq!(inv.command, Command::Del);
        assert_eq!(inv.path, ["/opt/cni/bin", "/usr/lib/cni"]);
        assert_eq!(inv.args.get("IP").map(String::as_str), Some("10.0.0.5"));
    }

    #[test]
    fn version_needs_nothing_but_the_command() {
        assert_eq!(Invocation::from_env(env(&[("CNI_COMMAND", "VERSION")])).unwrap().command, Command::Version);
        assert_eq!(Invocation::from_env(env(&[])).unwrap_err().code, Code::InvalidEnvironment);
        assert_eq!(Invocation::from_env(env(&[("CNI_COMMAND", "FROB")])).unwrap_err().msg, "unknown CNI_COMMAND: FROB");
    }

    #[test]
    fn container_ids_and_interface_names_are_checked() {
        assert!(validate_container_id("a1_b.c-d").is_ok());
        assert!(validate_container_id("-abc").is_err());
        assert!(validate_container_id("a b").is_err());
        assert!(validate_interface_name("eth0").is_ok());
        assert_eq!(validate_interface_name("0123456789abcdef").unwrap_err().msg, "interface name is too long");
        assert!(validate_interface_name("..").is_err());
        assert!(validate_interface_name("a:b").is_err());
    }
}
