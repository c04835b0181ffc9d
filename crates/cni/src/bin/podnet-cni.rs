//! `podnet-cni`: the CNI plugin binary. Reads the `CNI_*` environment and the network config on
//! stdin; prints the result, or the error JSON (on stdout, as the reference plugins do) and
//! exits 1.

use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    if let Ok(spec) = std::env::var(cni::plugin::REAP_ENV) {
        // A detached helper of an earlier DEL: nobody reads its output.
        return if cni::plugin::reap(&spec).is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        let err = cni::CniError::new(cni::Code::Io, format!("reading stdin: {e}"));
        println!("{}", err.to_json(cni::result::CURRENT_VERSION));
        return ExitCode::FAILURE;
    }
    let mut out = std::io::stdout().lock();
    let argv0 = std::env::args().next().unwrap_or_default();
    match cni::plugin::run(&argv0, |k| std::env::var(k).ok(), &stdin) {
        Ok(Some(text)) => {
            let _ = writeln!(out, "{text}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err((err, version)) => {
            let _ = writeln!(out, "{}", err.to_json(&version));
            ExitCode::FAILURE
        }
    }
}
