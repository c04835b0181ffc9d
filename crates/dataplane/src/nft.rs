//! Running nftables transactions: `nft -f -` in the caller's network namespace, one atomic
//! transaction per call (what kube-proxy's knftables does), and reading a table back.

use std::io::{self, Write};
use std::process::{Command, Stdio};

use nftset::{Family, Ruleset};

/// Runs a transaction with `nft -f -`; all of it or nothing takes effect.
pub fn apply(script: &str) -> io::Result<()> {
    if script.is_empty() {
        return Ok(());
    }
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("running nft (is nftables installed?): {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("nft: {}", String::from_utf8_lossy(&out.stderr).trim())))
    }
}

/// How a sync was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Synced {
    /// Only the difference.
    Incremental,
    /// Every table deleted and made anew.
    Full,
}

/// Applies `new` over what was applied before (`old`): the difference when it can be written
/// as one and the kernel takes it, else the full re-sync (a failed transaction changed nothing).
pub fn sync(old: Option<&Ruleset>, new: &Ruleset) -> io::Result<Synced> {
    if let Some(Ok(script)) = old.map(|o| nftset::transaction(o, new))
        && apply(&script).is_ok()
    {
        return Ok(Synced::Incremental);
    }
    apply(&new.full_script()).map(|()| Synced::Full)
}

/// `nft list table` output, or `None` when the table does not exist.
pub fn list_table(family: Family, name: &str) -> io::Result<Option<String>> {
    let out = Command::new("nft").args(["list", "table", &family.to_string(), name]).output()?;
    Ok(out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}
