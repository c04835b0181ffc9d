//! `LabName`: the only way code names a lab. A lab's name becomes part of namespace names
//! (`podnet.<lab>.node-1`) and of paths (`/run/podnet/<lab>/`), so it is checked once, where it
//! enters (a flag, a state file), and every path and prefix is built from the checked value:
//! `../..` or `a/b` can never reach `remove_dir_all`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where labs keep their state.
pub const STATE_ROOT: &str = "/run/podnet";

/// The longest lab name: `podnet.<lab>.<ns>.<pod>` must stay a usable file name.
pub const MAX_LEN: usize = 20;

/// A valid lab name: 1-20 lower-case letters, digits and '-', not at either end.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LabName(String);

/// A string that is not a lab name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid lab name {0:?}: use 1-{MAX_LEN} lower-case letters, digits and '-', not at either end")]
pub struct InvalidLabName(pub String);

impl LabName {
    /// Checks `name`.
    pub fn parse(name: &str) -> Result<LabName, InvalidLabName> {
        let ok = !name.is_empty()
            && name.len() <= MAX_LEN
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if ok { Ok(LabName(name.to_owned())) } else { Err(InvalidLabName(name.to_owned())) }
    }

    /// `podnet`: the lab `lab up` makes without `--name`.
    pub fn default_lab() -> LabName {
        LabName("podnet".to_owned())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The prefix of every namespace the lab makes. Lab names cannot contain `.`, so one lab's
    /// prefix is never a prefix of another's (`demo` vs `demo-2`).
    pub fn netns_prefix(&self) -> String {
        format!("podnet.{}.", self.0)
    }

    /// `/run/podnet/<lab>`: the lab's own state directory.
    pub fn state_dir(&self) -> PathBuf {
        PathBuf::from(STATE_ROOT).join(&self.0)
    }
}

impl FromStr for LabName {
    type Err = InvalidLabName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LabName::parse(s)
    }
}

impl TryFrom<String> for LabName {
    type Error = InvalidLabName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        LabName::parse(&s)
    }
}

impl From<LabName> for String {
    fn from(n: LabName) -> String {
        n.0
    }
}

impl fmt::Display for LabName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for LabName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_the_state_directory_are_refused() {
        for bad in ["", "..", "../..", "../../tmp/x", "a/b", "/", ".", "a.b", "A", "Bad Name", "-a", "a-", "a\0b", "ünï", "x".repeat(21).as_str()] {
            let err = LabName::parse(bad).unwrap_err();
            assert!(err.to_string().starts_with("invalid lab name"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn paths_and_prefixes_stay_under_the_lab_root() {
        for good in ["podnet", "shop", "a", "lab-2", "x".repeat(20).as_str()] {
            let n = LabName::parse(good).unwrap();
            assert_eq!(n.state_dir(), PathBuf::from(STATE_ROOT).join(good));
            assert_eq!(n.state_dir().parent(), Some(std::path::Path::new(STATE_ROOT)));
            assert_eq!(n.netns_prefix(), format!("podnet.{good}."));
        }
    }

    #[test]
    fn the_default_lab_name_is_valid() {
        assert_eq!(LabName::parse(LabName::default_lab().as_str()), Ok(LabName::default_lab()));
    }

    #[test]
    fn a_state_file_with_a_bad_name_does_not_load() {
        assert!(serde_json::from_str::<LabName>("\"../..\"").is_err());
        assert_eq!(serde_json::from_str::<LabName>("\"shop\"").unwrap().as_str(), "shop");
    }
}
