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

/// Applies `new` over what was applied before (`old`): the difference when it can be written
/// as one, else the full re-sync.
pub fn sync(old: Option<&Ruleset>, new: &Ruleset) -> io::Result<()> {
    match old.map(|o| nftset::transaction(o, new)) {
        Some(Ok(script)) => apply(&script),
        _ => apply(&new.full_script()),
    }
}

/// `nft list table` output, or `None` when the table does not exist.
pub fn list_table(family: Family, name: &str) -> io::Result<Option<String>> {
    let out = Command::new("nft").args(["list", "table", &family.to_string(), name]).output()?;
    Ok(out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}
