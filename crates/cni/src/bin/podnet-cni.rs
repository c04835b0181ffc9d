//! `podnet-cni`: the CNI plugin binary. Reads the `CNI_*` environment and the network config on
//! stdin; prints the result, or the error JSON (on stdout, as the reference plugins do) and
//! exits 1.

fn main() -> std::process::ExitCode {
    cni::plugin::main()
}
