//! NetworkPolicy in the lab: the policies its nodes enforce (each node's agent compiles them
//! into its policy table and cuts the established connections a change denies; see
//! `node::flows`).

use model::ClusterState;
use policy::PolicySet;

/// The lab's policies, compiled. The CLI refuses invalid ones before they reach the state; one
/// that is there anyway (an older state file) is logged and left out, the rest still enforced.
pub fn compile(view: &ClusterState) -> PolicySet {
    let (set, errors) = PolicySet::compile_valid(view);
    for e in errors {
        eprintln!("not enforced: {e}");
    }
    set
}
