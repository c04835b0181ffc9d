//! `--encrypt wireguard`: every node's pod traffic to other nodes through its WireGuard tunnel
//! (`node::wireguard`), run by the lab process. Each node's key pair is made on first start in
//! `/run/podnet/<lab>/wireguard/` (the private key readable by root only, the public one
//! published beside it) and replaced by `podnet lab rotate-keys`; the tunnels pick up new keys
//! on the next reload.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddrV4;
use std::path::PathBuf;

use node::wireguard::{KeyPair, Peer, Settings, Tunnel};

use crate::name::LabName;
use crate::plan::{ENCRYPTED_POD_MTU, LabPlan};
use crate::state::LabState;

/// Where a lab's keys are.
pub fn key_dir(lab: &LabName) -> PathBuf {
    node::wireguard::key_dir(&crate::state::dir(lab))
}

/// Every node's settings: its own key, and every other node as a peer (its published key, its
/// pod CIDR, its underlay address). Keys missing yet are made.
pub fn settings(plan: &LabPlan) -> io::Result<BTreeMap<String, Settings>> {
    let dir = key_dir(&plan.config.name);
    let mut keys = BTreeMap::new();
    for n in &plan.nodes {
        keys.insert(n.name.clone(), KeyPair::load_or_create(&dir, &n.name)?);
    }
    let mut out = BTreeMap::new();
    for n in &plan.nodes {
        let peers = plan
            .nodes
            .iter()
            .filter(|p| p.name != n.name)
            .map(|p| {
                Ok(Peer {
                    name: p.name.clone(),
                    endpoint: SocketAddrV4::new(p.ip, node::wireguard::PORT),
                    public: node::wireguard::read_public(&dir, &p.name)?,
                    allowed: p.pod_cidrs(),
                })
            })
            .collect::<io::Result<Vec<Peer>>>()?;
        let secret = keys.get(&n.name).map(KeyPair::secret).ok_or_else(|| io::Error::other("a node without a key"))?;
        out.insert(n.name.clone(), Settings { secret, peers });
    }
    Ok(out)
}

/// Replaces every node's key pair (`podnet lab rotate-keys`); the lab process's next reload
/// gives the tunnels the new keys. Returns the new public keys by node.
pub fn rotate(plan: &LabPlan) -> io::Result<Vec<(String, String)>> {
    let dir = key_dir(&plan.config.name);
    let mut out = Vec::new();
    for n in &plan.nodes {
        let key = KeyPair::generate()?;
        key.save(&dir, &n.name)?;
        out.push((n.name.clone(), node::wireguard::encode(&key.public())));
    }
    Ok(out)
}

/// The lab's tunnels, one per node.
#[derive(Default)]
pub struct Tunnels {
    running: BTreeMap<String, Tunnel>,
}

impl Tunnels {
    /// Starts the tunnels of an encrypted lab, or gives them their current keys.
    pub fn sync(&mut self, st: &LabState) -> io::Result<()> {
        if st.plan.config.encrypt.is_none() {
            return Ok(());
        }
        for (name, settings) in settings(&st.plan)? {
            match self.running.get(&name) {
                Some(t) => t.update(settings).map_err(|e| io::Error::new(e.kind(), format!("{name}'s WireGuard tunnel: {e}")))?,
                None => {
                    let Some(n) = st.plan.nodes.iter().find(|n| n.name == name) else { continue };
                    let path = dataplane::netns::path_of(&n.netns);
                    let tunnel = Tunnel::start(&path, n.vxlan_ip(), n.vxlan_ip6(), ENCRYPTED_POD_MTU, settings)
                        .map_err(|e| io::Error::new(e.kind(), format!("{name}'s WireGuard tunnel: {e}")))?;
                    self.running.insert(name, tunnel);
                }
            }
        }
        Ok(())
    }

    /// Each node's counters.
    pub fn counters(&self) -> BTreeMap<String, node::wireguard::Counters> {
        self.running.iter().map(|(n, t)| (n.clone(), t.counters())).collect()
    }
}
