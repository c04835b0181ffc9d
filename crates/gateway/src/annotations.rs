//! The ingress-nginx annotations users rely on most, read into settings with ingress-nginx's
//! defaults. An invalid value is reported and its default used, as ingress-nginx does.

use std::collections::BTreeMap;
use std::time::Duration;

use ipnet::IpNet;

/// The annotation prefix.
pub const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// How the proxy talks to the backend (`backend-protocol`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendProtocol {
    /// HTTP/1.1 (the default).
    #[default]
    Http,
    /// HTTP/1.1 over TLS.
    Https,
    /// HTTP/2 without TLS (gRPC).
    Grpc,
    /// HTTP/2 over TLS (gRPC).
    Grpcs,
}

/// A canary (`canary: "true"` Ingress): when it takes a request instead of the main backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canary {
    /// Its backend.
    pub backend: crate::routes::Backend,
    /// `canary-by-header`: a request with this header set to `always` (or `canary-by-header-value`) goes to the canary, `never` never.
    pub by_header: Option<(String, Option<String>)>,
    /// `canary-by-cookie`: `always` / `never`.
    pub by_cookie: Option<String>,
    /// `canary-weight` out of `canary-weight-total`.
    pub weight: (u32, u32),
}

/// Cookie session affinity (`affinity: cookie`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Affinity {
    /// `session-cookie-name` (INGRESSCOOKIE).
    pub cookie: String,
    /// `session-cookie-path`, else the location's path.
    pub path: Option<String>,
    /// `session-cookie-max-age` (seconds).
    pub max_age: Option<u64>,
}

/// What a location's annotations ask for.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// `ssl-redirect` (true): HTTP requests to a TLS host are redirected (308).
    pub ssl_redirect: bool,
    /// `force-ssl-redirect` (false): redirect even without TLS for the host.
    pub force_ssl_redirect: bool,
    /// `proxy-body-size` (1m): the largest request body; `None` for unlimited ("0").
    pub max_body: Option<u64>,
    /// `rewrite-target`: the path sent upstream, with `$1`... from `use-regex` captures.
    pub rewrite_target: Option<String>,
    /// `backend-protocol`.
    pub backend_protocol: BackendProtocol,
    /// `proxy-read-timeout` (60 s).
    pub read_timeout: Duration,
    /// `proxy-connect-timeout` (5 s).
    pub connect_timeout: Duration,
    /// `whitelist-source-range` / `allowlist-source-range`: only these sources (403 otherwise).
    pub allow_sources: Vec<IpNet>,
    /// `limit-rps`: requests per second per client address (503 over it, ingress-nginx's status).
    pub limit_rps: Option<u32>,
    /// `limit-burst-multiplier` (5): the burst `limit-rps` allows, in multiples of the rate.
    pub limit_burst_multiplier: u32,
    /// `affinity: cookie`.
    pub affinity: Option<Affinity>,
    /// `use-regex` (or `rewrite-target`, which implies it): paths are regular expressions.
    pub use_regex: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ssl_redirect: true,
            force_ssl_redirect: false,
            max_body: Some(1024 * 1024),
            rewrite_target: None,
            backend_protocol: BackendProtocol::Http,
            read_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            allow_sources: Vec::new(),
            limit_rps: None,
            limit_burst_multiplier: 5,
            affinity: None,
            use_regex: false,
        }
    }
}

/// nginx's size syntax: a number with an optional `k`, `m` or `g` (1024-based); "0" is unlimited.
pub fn parse_size(text: &str) -> Result<Option<u64>, String> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c.to_ascii_lowercase()),
        _ => (t, ' '),
    };
    let n: u64 = digits.parse().map_err(|_| format!("{text:?} is not a size (like 8m, 512k, 1g)"))?;
    let factor = match unit {
        ' ' => 1,
        'k' => 1024,
        'm' => 1024 * 1024,
        'g' => 1024 * 1024 * 1024,
        _ => return Err(format!("{text:?}: unknown unit (k, m or g)")),
    };
    Ok((n != 0).then(|| n.saturating_mul(factor)))
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim() {
        "true" | "True" | "TRUE" | "1" => Ok(true),
        "false" | "False" | "FALSE" | "0" => Ok(false),
        other => Err(format!("{other:?} is not true or false")),
    }
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let t = text.trim().trim_end_matches('s');
    t.parse::<u64>().map(Duration::from_secs).map_err(|_| format!("{text:?} is not a number of seconds"))
}

/// Reads a location's settings; problems name the annotation.
pub fn settings(annotations: &BTreeMap<String, String>, problems: &mut Vec<String>) -> Settings {
    let mut s = Settings::default();
    let get = |name: &str| annotations.get(&format!("{PREFIX}{name}")).map(String::as_str);
    let mut note = |name: &str, e: String| problems.push(format!("annotation {PREFIX}{name}: {e}; using the default"));
    if let Some(v) = get("ssl-redirect") {
        match parse_bool(v) {
            Ok(b) => s.ssl_redirect = b,
            Err(e) => note("ssl-redirect", e),
        }
    }
    if let Some(v) = get("force-ssl-redirect") {
        match parse_bool(v) {
            Ok(b) => s.force_ssl_redirect = b,
            Err(e) => note("force-ssl-redirect", e),
        }
    }
    if let Some(v) = get("proxy-body-size") {
        match parse_size(v) {
            Ok(n) => s.max_body = n,
            Err(e) => note("proxy-body-size", e),
        }
    }
    s.rewrite_target = get("rewrite-target").map(str::to_owned);
    s.use_regex = s.rewrite_target.is_some() || get("use-regex").is_some_and(|v| parse_bool(v).unwrap_or(false));
    if let Some(v) = get("backend-protocol") {
        match v.trim().to_ascii_uppercase().as_str() {
            "HTTP" | "AUTO_HTTP" => s.backend_protocol = BackendProtocol::Http,
            "HTTPS" => s.backend_protocol = BackendProtocol::Https,
            "GRPC" | "H2C" => s.backend_protocol = BackendProtocol::Grpc,
            "GRPCS" => s.backend_protocol = BackendProtocol::Grpcs,
            other => note("backend-protocol", format!("{other:?} is not one of HTTP, HTTPS, GRPC, GRPCS, AUTO_HTTP")),
        }
    }
    for (name, field) in [("proxy-read-timeout", &mut s.read_timeout), ("proxy-connect-timeout", &mut s.connect_timeout)] {
        if let Some(v) = get(name) {
            match parse_seconds(v) {
                Ok(d) => *field = d,
                Err(e) => note(name, e),
            }
        }
    }
    for name in ["whitelist-source-range", "allowlist-source-range"] {
        if let Some(v) = get(name) {
            for cidr in v.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                let parsed = cidr.parse::<IpNet>().or_else(|_| cidr.parse::<std::net::IpAddr>().map(IpNet::from));
                match parsed {
                    Ok(net) => s.allow_sources.push(net.trunc()),
                    Err(_) => note(name, format!("{cidr:?} is not a CIDR")),
                }
            }
        }
    }
    if let Some(v) = get("limit-rps") {
        match v.trim().parse::<u32>() {
            Ok(n) if n > 0 => s.limit_rps = Some(n),
            _ => note("limit-rps", format!("{v:?} is not a positive number")),
        }
    }
    if let Some(v) = get("limit-burst-multiplier") {
        match v.trim().parse::<u32>() {
            Ok(n) => s.limit_burst_multiplier = n,
            _ => note("limit-burst-multiplier", format!("{v:?} is not a number")),
        }
    }
    if get("affinity").map(str::trim) == Some("cookie") {
        s.affinity = Some(Affinity {
            cookie: get("session-cookie-name").unwrap_or("INGRESSCOOKIE").to_owned(),
            path: get("session-cookie-path").map(str::to_owned),
            max_age: get("session-cookie-max-age").and_then(|v| v.trim().parse().ok()),
        });
    }
    s
}

/// Whether an Ingress is a canary (`canary: "true"`).
pub fn is_canary(annotations: &BTreeMap<String, String>) -> bool {
    annotations.get(&format!("{PREFIX}canary")).is_some_and(|v| parse_bool(v).unwrap_or(false))
}

/// A canary Ingress's rules for one backend.
pub fn canary(annotations: &BTreeMap<String, String>, backend: crate::routes::Backend) -> Canary {
    let get = |name: &str| annotations.get(&format!("{PREFIX}{name}")).map(|v| v.trim().to_owned());
    let weight = get("canary-weight").and_then(|v| v.parse().ok()).unwrap_or(0);
    let total = get("canary-weight-total").and_then(|v| v.parse().ok()).filter(|t| *t > 0).unwrap_or(100);
    Canary {
        backend,
        by_header: get("canary-by-header").map(|h| (h, get("canary-by-header-value"))),
        by_cookie: get("canary-by-cookie"),
        weight: (weight, total),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (format!("{PREFIX}{k}"), (*v).to_owned())).collect()
    }

    #[test]
    fn sizes_are_nginx_s() {
        assert_eq!(parse_size("10m"), Ok(Some(10 * 1024 * 1024)));
        assert_eq!(parse_size("512k"), Ok(Some(512 * 1024)));
        assert_eq!(parse_size("1G"), Ok(Some(1 << 30)));
        assert_eq!(parse_size("100"), Ok(Some(100)));
        assert_eq!(parse_size("0"), Ok(None));
        assert!(parse_size("10mb").is_err() && parse_size("ten").is_err());
    }

    #[test]
    fn defaults_and_the_seed_s_annotations() {
        let mut problems = Vec::new();
        let d = settings(&BTreeMap::new(), &mut problems);
        assert_eq!((d.ssl_redirect, d.max_body, d.read_timeout.as_secs(), d.connect_timeout.as_secs()), (true, Some(1 << 20), 60, 5));
        let s = settings(&annotations(&[("ssl-redirect", "true"), ("proxy-body-size", "10m")]), &mut problems);
        assert_eq!((s.ssl_redirect, s.max_body), (true, Some(10 << 20)));
        let s = settings(
            &annotations(&[
                ("ssl-redirect", "false"),
                ("backend-protocol", "GRPC"),
                ("whitelist-source-range", "10.0.0.0/8, 192.168.1.5"),
                ("limit-rps", "5"),
                ("affinity", "cookie"),
                ("proxy-read-timeout", "120"),
            ]),
            &mut problems,
        );
        assert!(!s.ssl_redirect);
        assert_eq!(s.backend_protocol, BackendProtocol::Grpc);
        assert_eq!(s.allow_sources.len(), 2);
        assert_eq!((s.limit_rps, s.read_timeout.as_secs()), (Some(5), 120));
        assert_eq!(s.affinity.unwrap().cookie, "INGRESSCOOKIE");
        assert!(problems.is_empty(), "{problems:?}");
        let bad = settings(&annotations(&[("proxy-body-size", "lots"), ("limit-rps", "-1")]), &mut problems);
        assert_eq!(bad.max_body, Some(1 << 20));
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
