//! The kernel's connection tracking table, through conntrack-tools' `conntrack` (what
//! kube-proxy runs too), in the calling thread's network namespace: list flows, delete them.

use std::io;
use std::process::Command;

fn run(args: &[&str]) -> io::Result<std::process::Output> {
    Command::new("conntrack").args(args).output().map_err(|e| io::Error::new(e.kind(), format!("running conntrack (is conntrack installed?): {e}")))
}

/// `conntrack -L` (of one protocol, `udp` or `tcp`, when given): one flow per line.
pub fn list(protocol: Option<&str>) -> io::Result<String> {
    let out = match protocol {
        Some(p) => run(&["-L", "-p", p])?,
        None => run(&["-L"])?,
    };
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(io::Error::other(format!("conntrack -L: {}", String::from_utf8_lossy(&out.stderr).trim())))
    }
}

/// `conntrack -D ARGS`: deletes the flows the arguments match. None matching is not an error
/// (the flow may have ended meanwhile).
pub fn delete(args: &[String]) -> io::Result<()> {
    let mut all = vec!["-D"];
    all.extend(args.iter().map(String::as_str));
    run(&all).map(|_| ())
}
