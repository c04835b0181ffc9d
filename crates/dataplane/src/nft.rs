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
    if out.status.success() { Ok(()) } else { Err(io::Error::other(format!("nft: {}", String::from_utf8_lossy(&out.stderr).trim()))) }
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
    load(new).map(|_| Synced::Full)
}

/// Loads `ruleset` in full: each table deleted (if there) and made anew. Tables none of which
/// is in the kernel yet are made from nft text without the elements of their big sets, which
/// then go in as one netlink batch per table (nft's parser would spend most of a 30k-Service
/// load on them); until the batch commits the table holds no Service, as before it existed.
/// A table that is there is replaced in one nft transaction instead, so that its traffic never
/// meets a half-filled table; so is everything when the fast way fails.
pub fn load(ruleset: &Ruleset) -> io::Result<Loaded> {
    let reason = match first_load(ruleset) {
        Ok(true) => return Ok(Loaded::Batched),
        Ok(false) => "a table is there".to_owned(),
        Err(e) => e.to_string(),
    };
    apply(&ruleset.full_script()).map(|()| Loaded::Replaced(reason))
}

/// How `load` wrote the tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Loaded {
    /// nft text without the big sets' elements, then netlink element batches.
    Batched,
    /// One nft transaction, and why not the fast way.
    Replaced(String),
}

/// The fast first load; `false` when a table already exists.
fn first_load(ruleset: &Ruleset) -> io::Result<bool> {
    let mut socket = crate::nfnetlink::Socket::open()?;
    for (family, name) in ruleset.tables.keys() {
        if socket.table_exists(*family, name)? {
            return Ok(false);
        }
    }
    apply(&ruleset.skeleton_script())?;
    for ((family, name), table) in &ruleset.tables {
        let sets = table.sets.iter().filter(|(_, s)| !s.elements.is_empty() && nftset::netlink::encodable(s)).map(|(n, s)| (n.as_str(), s));
        let batch = nftset::netlink::element_batch(*family, name, sets, socket.next_seq(1 << 16)).map_err(io::Error::other)?;
        socket.transact(&batch).map_err(|e| io::Error::new(e.kind(), format!("netlink element batch for table {family} {name}: {e}")))?;
    }
    Ok(true)
}

/// `sync` through a long-lived `nft -i` session for the differences (no process started, no
/// wait for the kernel to free deleted elements when it exits: what most of a small change
/// costs); started on first use, dropped after a failure so that the next one starts afresh.
pub fn sync_in_session(session: &mut Option<Session>, old: Option<&Ruleset>, new: &Ruleset) -> io::Result<Synced> {
    if let Some(Ok(script)) = old.map(|o| nftset::transaction(o, new)) {
        if script.is_empty() {
            return Ok(Synced::Incremental);
        }
        let applied = match session {
            Some(s) => s.apply(&script),
            None => Session::start().and_then(|mut s| {
                let r = s.apply(&script);
                *session = Some(s);
                r
            }),
        };
        if applied.is_ok() {
            return Ok(Synced::Incremental);
        }
        *session = None;
    }
    load(new).map(|_| Synced::Full)
}

/// Starts `nft monitor trace` in the caller's network namespace: the trace events of packets
/// a rule marked with `meta nftrace set 1`, one per line on its stdout.
pub fn monitor_trace() -> io::Result<std::process::Child> {
    Command::new("nft")
        .args(["monitor", "trace"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("running nft monitor trace (is nftables installed?): {e}")))
}

/// `nft list table` output, or `None` when the table does not exist.
pub fn list_table(family: Family, name: &str) -> io::Result<Option<String>> {
    let out = Command::new("nft").args(["list", "table", &family.to_string(), name]).output()?;
    Ok(out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// A long-lived `nft -i` for small transactions. Each `nft -f` process that deletes elements
/// waits, when it closes its netlink socket, for the kernel to free them (an RCU grace period:
/// ~10-20 ms here); one session that stays open does not. One line is one transaction, so
/// a script's commands are joined on one line; after it, a `list` of an object that never
/// exists makes nft answer on stderr, which marks the transaction as done.
pub struct Session {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stderr: std::io::BufReader<std::process::ChildStderr>,
    sequence: u64,
}

impl Session {
    /// Starts `nft -i` in the caller's network namespace.
    pub fn start() -> io::Result<Session> {
        let mut child = Command::new("nft")
            .arg("-i")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("running nft -i (is nftables installed?): {e}")))?;
        let stdin = child.stdin.take().ok_or_else(|| io::Error::other("nft -i: no stdin"))?;
        let stderr = std::io::BufReader::new(child.stderr.take().ok_or_else(|| io::Error::other("nft -i: no stderr"))?);
        Ok(Session { child, stdin, stderr, sequence: 0 })
    }

    /// Runs `script` as one transaction: all of it or nothing.
    pub fn apply(&mut self, script: &str) -> io::Result<()> {
        use std::io::BufRead;
        let commands: Vec<&str> = script.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        if commands.is_empty() {
            return Ok(());
        }
        self.sequence += 1;
        let marker = format!("list set ip podnet-sync marker-{}", self.sequence);
        writeln!(self.stdin, "{}\n{marker}", commands.join("; "))?;
        self.stdin.flush()?;
        let mut said = Vec::new();
        loop {
            let mut line = String::new();
            if self.stderr.read_line(&mut line)? == 0 {
                return Err(io::Error::other(format!("nft -i exited: {}", said.join("\n"))));
            }
            let line = line.trim_end().to_owned();
            if line == marker {
                break;
            }
            said.push(line);
        }
        let mut carets = String::new();
        self.stderr.read_line(&mut carets)?;
        said.pop(); // the marker's own "No such file or directory"
        if said.is_empty() { Ok(()) } else { Err(io::Error::other(format!("nft: {}", said.join("\n")))) }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
