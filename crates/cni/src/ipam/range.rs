//! host-local's ranges: `{subnet, rangeStart, rangeEnd, gateway}`, canonicalized as the
//! reference `Range.Canonicalize` does.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

/// A range as written in the config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeConfig {
    /// The subnet, e.g. `10.244.1.0/24`.
    pub subnet: String,
    /// First allocatable address (default: subnet + 1).
    #[serde(default)]
    pub range_start: Option<IpAddr>,
    /// Last allocatable address (default: the last address, minus the broadcast for IPv4).
    #[serde(default)]
    pub range_end: Option<IpAddr>,
    /// Gateway (default: subnet + 1); never allocated.
    #[serde(default)]
    pub gateway: Option<IpAddr>,
}

/// A canonical range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    /// The subnet (network address).
    pub subnet: IpNet,
    /// First allocatable address.
    pub start: IpAddr,
    /// Last allocatable address.
    pub end: IpAddr,
    /// The gateway, skipped by allocation.
    pub gateway: IpAddr,
}

/// The address after `ip` (wrapping).
pub fn next_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v) => IpAddr::from(std::net::Ipv4Addr::from(u32::from(v).wrapping_add(1))),
        IpAddr::V6(v) => IpAddr::from(std::net::Ipv6Addr::from(u128::from(v).wrapping_add(1))),
    }
}

fn ip_value(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

impl Range {
    /// Canonicalizes a configured range; the messages are the reference plugin's.
    pub fn from_config(c: &RangeConfig) -> Result<Self, String> {
        let subnet: IpNet = c.subnet.parse().map_err(|_| format!("invalid CIDR address: {}", c.subnet))?;
        let subnet = subnet.trunc();
        if subnet.prefix_len() > subnet.max_prefix_len().saturating_sub(2) {
            return Err(format!("Network {subnet} too small to allocate from"));
        }
        let first = next_ip(subnet.network());
        let gateway = match c.gateway {
            None => first,
            Some(gw) if subnet.contains(&gw) => gw,
            Some(gw) => return Err(format!("gateway {gw} not in network {subnet}")),
        };
        // As the reference's Canonicalize: each bound must lie in the subnet and within the
        // other bound as given, so a rangeStart after rangeEnd is "not in network".
        let same_family = |ip: IpAddr| ip.is_ipv4() == subnet.addr().is_ipv4();
        let start_ok = |ip: IpAddr| same_family(ip) && subnet.contains(&ip) && c.range_end.is_none_or(|end| ip_value(ip) <= ip_value(end));
        let end_ok = |ip: IpAddr| same_family(ip) && subnet.contains(&ip) && c.range_start.is_none_or(|start| ip_value(ip) >= ip_value(start));
        let mut r = Range { subnet, start: first, end: last_ip(&subnet), gateway };
        if let Some(start) = c.range_start {
            if !start_ok(start) {
                return Err(format!("RangeStart {start} not in network {subnet}"));
            }
            r.start = start;
        }
        if let Some(end) = c.range_end {
            if !end_ok(end) {
                return Err(format!("RangeEnd {end} not in network {subnet}"));
            }
            r.end = end;
        }
        Ok(r)
    }

    fn check_in_subnet(&self, ip: IpAddr) -> Result<(), String> {
        if ip.is_ipv4() != self.subnet.addr().is_ipv4() {
            return Err(format!("IP {ip} is not the same protocol as subnet {}", self.subnet));
        }
        if !self.subnet.contains(&ip) {
            return Err(format!("{ip} not in network {}", self.subnet));
        }
        Ok(())
    }

    /// Whether `ip` is an allocatable address of this range (inside start..=end).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.subnet.contains(&ip) && ip_value(ip) >= ip_value(self.start) && ip_value(ip) <= ip_value(self.end)
    }

    /// Checks a requested address the way `IPInRange` does.
    pub fn check_requested(&self, ip: IpAddr) -> Result<(), String> {
        self.check_in_subnet(ip)?;
        if ip_value(ip) < ip_value(self.start) {
            return Err(format!("{ip} is in network {} but before start {}", self.subnet, self.start));
        }
        if ip_value(ip) > ip_value(self.end) {
            return Err(format!("{ip} is in network {} but after end {}", self.subnet, self.end));
        }
        Ok(())
    }

    /// Whether two ranges of one family share an address.
    pub fn overlaps(&self, other: &Range) -> bool {
        self.subnet.addr().is_ipv4() == other.subnet.addr().is_ipv4()
            && ip_value(self.start) <= ip_value(other.end)
            && ip_value(other.start) <= ip_value(self.end)
    }
}

/// The last address of a subnet, without the IPv4 broadcast address.
fn last_ip(subnet: &IpNet) -> IpAddr {
    match subnet.broadcast() {
        IpAddr::V4(b) => IpAddr::from(std::net::Ipv4Addr::from(u32::from(b) - 1)),
        v6 => v6,
    }
}

/// A range set: one address is allocated from each set (host-local's `ranges: [[...], [...]]`).
pub type RangeSet = Vec<Range>;

/// Canonicalizes a range set and rejects overlapping ranges.
pub fn range_set(configs: &[RangeConfig]) -> Result<RangeSet, String> {
    if configs.is_empty() {
        return Err("empty range set".into());
    }
    let set: RangeSet = configs.iter().map(Range::from_config).collect::<Result<_, _>>()?;
    for (i, a) in set.iter().enumerate() {
        for b in &set[i + 1..] {
            if a.overlaps(b) {
                return Err(format!("subnets {} and {} overlap", a.subnet, b.subnet));
            }
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(subnet: &str) -> RangeConfig {
        RangeConfig { subnet: subnet.into(), ..Default::default() }
    }

    #[test]
    fn defaults_follow_the_reference_plugin() {
        let r = Range::from_config(&cfg("10.244.1.0/24")).unwrap();
        assert_eq!(r.start.to_string(), "10.244.1.1");
        assert_eq!(r.end.to_string(), "10.244.1.254");
        assert_eq!(r.gateway.to_string(), "10.244.1.1");
        let r = Range::from_config(&cfg("fd00:10::/120")).unwrap();
        assert_eq!(r.end.to_string(), "fd00:10::ff");
    }

    #[test]
    fn bad_ranges_are_rejected() {
        assert_eq!(Range::from_config(&cfg("10.0.0.0/31")).unwrap_err(), "Network 10.0.0.0/31 too small to allocate from");
        let mut c = cfg("10.0.0.0/24");
        c.gateway = Some("10.0.1.1".parse().unwrap());
        assert_eq!(Range::from_config(&c).unwrap_err(), "gateway 10.0.1.1 not in network 10.0.0.0/24");
        let mut c = cfg("10.0.0.0/24");
        c.range_start = Some("fd00::1".parse().unwrap());
        assert_eq!(Range::from_config(&c).unwrap_err(), "RangeStart fd00::1 not in network 10.0.0.0/24");
        // The reference's range_test: a start after the end is not in the network's range.
        let mut c = cfg("192.0.2.0/24");
        c.range_start = Some("192.0.2.50".parse().unwrap());
        c.range_end = Some("192.0.2.40".parse().unwrap());
        assert_eq!(Range::from_config(&c).unwrap_err(), "RangeStart 192.0.2.50 not in network 192.0.2.0/24");
        let mut c = cfg("192.0.2.0/24");
        c.range_end = Some("192.0.4.0".parse().unwrap());
        assert_eq!(Range::from_config(&c).unwrap_err(), "RangeEnd 192.0.4.0 not in network 192.0.2.0/24");
        assert!(range_set(&[cfg("10.0.0.0/24"), cfg("10.0.0.0/25")]).is_err());
        assert!(range_set(&[cfg("10.0.0.0/24"), cfg("10.0.1.0/24")]).is_ok());
    }
}
