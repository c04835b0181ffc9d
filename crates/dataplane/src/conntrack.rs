//! The kernel's connection tracking table, through conntrack-tools' `conntrack` (what
//! kube-proxy runs too), in the calling thread's network namespace: list flows, delete them.

use std::io;
use std::process::Command;

fn run(args: &[&str]) -> io::Result<std::process::Output> {
    Command::new("conntrack").args(args).output().map_err(|e| io::Error::new(e.kind(), format!("running conntrack (is conntrack installed?): {e}")))
}

/// `conntrack -L` of both families (of one protocol, `udp` or `tcp`, when given): one flow per
/// line, the IPv4 ones first (`conntrack` lists one family per run).
pub fn list(protocol: Option<&str>) -> io::Result<String> {
    let mut text = String::new();
    for family in ["ipv4", "ipv6"] {
        let mut args = vec!["-L", "-f", family];
        if let Some(p) = protocol {
            args.extend(["-p", p]);
        }
        let out = run(&args)?;
        if !out.status.success() {
            return Err(io::Error::other(format!("conntrack {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())));
        }
        text.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    Ok(text)
}

/// `conntrack -D ARGS`: deletes the flows the arguments match. None matching is not an error
/// (the flow may have ended meanwhile).
pub fn delete(args: &[String]) -> io::Result<()> {
    let mut all = vec!["-D"];
    all.extend(args.iter().map(String::as_str));
    run(&all).map(|_| ())
}
