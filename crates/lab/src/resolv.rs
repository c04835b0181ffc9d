//! The resolv.conf kubelet gives a pod (`pkg/kubelet/network/dns`): by `dnsPolicy`, the
//! cluster DNS with the namespace's search path and `ndots:5` (`ClusterFirst`, and
//! `ClusterFirstWithHostNet`), the node's own file (`Default`, and `ClusterFirst` on the host
//! network) or nothing (`None`), then `dnsConfig` merged in. Written as the runtime writes it.
//! Pure: the node's file is an argument.

use model::DnsConfig;

/// The cluster DNS a pod is pointed at.
#[derive(Clone, Debug)]
pub struct ClusterDns {
    /// The DNS Service's ClusterIP.
    pub nameserver: String,
    /// The cluster domain.
    pub domain: String,
}

/// kubelet's limits.
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

/// A resolv.conf, read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resolv {
    /// `nameserver` lines, in order.
    pub nameservers: Vec<String>,
    /// The search path.
    pub searches: Vec<String>,
    /// `options`, as written (`ndots:5`).
    pub options: Vec<String>,
}

impl Resolv {
    /// The `ndots` option (the resolver's default, 1, when absent).
    pub fn ndots(&self) -> usize {
        self.options.iter().filter_map(|o| o.strip_prefix("ndots:")?.parse().ok()).next_back().unwrap_or(1)
    }
}

/// A resolv.conf's nameservers, search path (the last `search` or `domain` line) and options.
pub fn parse(text: &str) -> Resolv {
    let mut r = Resolv::default();
    for line in text.lines().map(|l| l.split(['#', ';']).next().unwrap_or("").trim()) {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => r.nameservers.extend(words.next().map(str::to_owned)),
            Some("search" | "domain") => r.searches = words.map(str::to_owned).collect(),
            Some("options") => r.options.extend(words.map(str::to_owned)),
            _ => {}
        }
    }
    r
}

fn push_unique(list: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for item in items {
        if !list.contains(&item) {
            list.push(item);
        }
    }
}

/// kubelet's `appendDNSConfig`: nameservers and searches appended without duplicates, options
/// merged by name (the pod's value wins).
fn merge(r: &mut Resolv, config: &DnsConfig) {
    push_unique(&mut r.nameservers, config.nameservers.iter().cloned());
    push_unique(&mut r.searches, config.searches.iter().cloned());
    for (option, value) in &config.options {
        let text = match value {
            Some(v) => format!("{option}:{v}"),
            None => option.clone(),
        };
        let name = |s: &String| s.split(':').next().unwrap_or("").to_owned();
        match r.options.iter_mut().find(|existing| name(existing) == *option) {
            Some(existing) => *existing = text,
            None => r.options.push(text),
        }
    }
}

/// The pod's resolv.conf, or `None` when it uses the node's file as it is (a host-network pod
/// with `Default` DNS, whose namespace is the node's).
pub fn resolv_conf(
    namespace: &str,
    host_network: bool,
    policy: Option<&str>,
    config: Option<&DnsConfig>,
    cluster: &ClusterDns,
    node_file: &str,
) -> Option<String> {
    let cluster_first = match policy.unwrap_or("ClusterFirst") {
        "None" => None,
        "ClusterFirstWithHostNet" => Some(true),
        "ClusterFirst" => Some(!host_network),
        _ => Some(false), // Default
    };
    let node = parse(node_file);
    let mut r = match cluster_first {
        None => Resolv::default(),
        Some(true) => {
            let d = &cluster.domain;
            let mut searches = vec![format!("{namespace}.svc.{d}"), format!("svc.{d}"), d.clone()];
            push_unique(&mut searches, node.searches);
            Resolv { nameservers: vec![cluster.nameserver.clone()], searches, options: vec!["ndots:5".into()] }
        }
        Some(false) => {
            if host_network && config.is_none() {
                return None;
            }
            node
        }
    };
    if let Some(config) = config {
        merge(&mut r, config);
    }
    r.nameservers.truncate(MAX_NAMESERVERS);
    r.searches.truncate(MAX_SEARCHES);
    let mut out = String::new();
    if !r.searches.is_empty() {
        out.push_str(&format!("search {}\n", r.searches.join(" ")));
    }
    for ns in &r.nameservers {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    if !r.options.is_empty() {
        out.push_str(&format!("options {}\n", r.options.join(" ")));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> ClusterDns {
        ClusterDns { nameserver: "10.96.0.10".into(), domain: "cluster.local".into() }
    }

    const NODE: &str = "# the host's\nnameserver 192.0.2.53\nsearch corp.example\noptions edns0\n";

    #[test]
    fn cluster_first_is_the_cluster_dns_with_the_namespace_search_path() {
        assert_eq!(
            resolv_conf("production", false, None, None, &cluster(), NODE).unwrap(),
            "search production.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
        // On the host network ClusterFirst means the node's file, unless WithHostNet.
        assert_eq!(resolv_conf("p", true, Some("ClusterFirst"), None, &cluster(), NODE), None);
        assert!(resolv_conf("p", true, Some("ClusterFirstWithHostNet"), None, &cluster(), NODE).unwrap().contains("nameserver 10.96.0.10"));
    }

    #[test]
    fn default_none_and_dns_config() {
        assert_eq!(resolv_conf("p", false, Some("Default"), None, &cluster(), NODE).unwrap(), "search corp.example\nnameserver 192.0.2.53\noptions edns0\n");
        let config = DnsConfig {
            nameservers: vec!["192.0.2.1".into()],
            searches: vec!["ns1.svc.cluster-domain.example".into(), "my.dns.search.suffix".into()],
            options: vec![("ndots".into(), Some("2".into())), ("edns0".into(), None)],
        };
        // The documentation's example (dnsPolicy: None).
        assert_eq!(
            resolv_conf("p", false, Some("None"), Some(&config), &cluster(), NODE).unwrap(),
            "search ns1.svc.cluster-domain.example my.dns.search.suffix\nnameserver 192.0.2.1\noptions ndots:2 edns0\n"
        );
        // Merged into ClusterFirst: appended, ndots overridden.
        let merged = resolv_conf("p", false, None, Some(&config), &cluster(), NODE).unwrap();
        assert_eq!(
            merged,
            "search p.svc.cluster.local svc.cluster.local cluster.local corp.example ns1.svc.cluster-domain.example my.dns.search.suffix\nnameserver 10.96.0.10\nnameserver 192.0.2.1\noptions ndots:2 edns0\n"
        );
    }
}
