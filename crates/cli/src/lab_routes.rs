//! `podnet lab get routes`: in a `--mode bgp` lab, each node's BGP sessions and the routes its
//! BIRD holds (what `birdc show protocols` and `birdc show route` say, node by node).

use std::fmt::Write as _;

use anyhow::{Result, bail};
use lab::state::LabState;

/// The sessions and routes of every node (or of `only`, a node or `external`).
pub fn view(st: &LabState, only: Option<&str>) -> Result<String> {
    let Some(bgp) = &st.plan.config.bgp else {
        bail!(
            "lab {:?} does not route with BGP (it was made with --mode {}); routes are BGP's only with --mode bgp",
            st.plan.config.name.as_str(),
            st.plan.config.mode.name()
        );
    };
    let mut speakers: Vec<String> = st.plan.nodes.iter().map(|n| n.name.clone()).collect();
    if bgp.external {
        speakers.push("external".into());
    }
    if let Some(want) = only {
        if !speakers.iter().any(|s| s == want) {
            bail!("no node {want:?} speaks BGP in this lab (its speakers: {})", speakers.join(", "));
        }
        speakers.retain(|s| s == want);
    }
    let (mut sessions, mut routes) = (String::from("NODE\tSESSION\tSTATE\tINFO\n"), String::from("NODE\tDESTINATION\tTYPE\tVIA\tFROM\tBEST\n"));
    for who in &speakers {
        let bird = lab::bgp::bird(&st.plan, who);
        if bird.pid().is_none() {
            let _ = writeln!(sessions, "{who}\t-\tdown\tBIRD is not running (the lab process starts it again within 2 s)");
            continue;
        }
        for s in node::bgp::parse_sessions(&bird.birdc(&["show", "protocols"])?) {
            let _ = writeln!(sessions, "{who}\t{}\t{}\t{}", s.name, s.state, s.info);
        }
        for r in lab::bgp::parse_routes(&bird.birdc(&["show", "route"])?) {
            let via = if r.via.is_empty() { "-".to_owned() } else { r.via.join(",") };
            let _ = writeln!(routes, "{who}\t{}\t{}\t{via}\t{}\t{}", r.prefix, r.kind, r.from, if r.best { "*" } else { "" });
        }
    }
    Ok(format!("{}\n{}", crate::lab_cmd::align(&sessions), crate::lab_cmd::align(&routes)))
}
