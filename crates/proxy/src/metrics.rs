//! The proxy's metrics under kube-proxy's names and buckets (`pkg/proxy/metrics`), in the
//! Prometheus text format, and its health as kube-proxy's `/healthz` and `/livez` report it
//! (`pkg/proxy/healthcheck/proxy_health.go`). Pure: the caller says when things happened.

use std::fmt::Write as _;

/// A Prometheus histogram with fixed upper bounds.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: Vec<f64>) -> Histogram {
        Histogram { counts: vec![0; bounds.len()], bounds, sum: 0.0, count: 0 }
    }

    /// Records one observation.
    pub fn observe(&mut self, v: f64) {
        for (bound, count) in self.bounds.iter().zip(&mut self.counts) {
            if v <= *bound {
                *count += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}", self.count, self.sum, self.count);
    }
}

fn exponential(start: f64, factor: f64, n: usize) -> Vec<f64> {
    (0..n).map(|i| start * factor.powi(i as i32)).collect()
}

fn linear(start: f64, width: f64, n: usize) -> Vec<f64> {
    (0..n).map(|i| start + width * i as f64).collect()
}

/// What one node's proxy reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Metrics {
    /// `kubeproxy_sync_proxy_rules_duration_seconds`
    pub sync_duration: Histogram,
    /// `kubeproxy_sync_full_proxy_rules_duration_seconds`
    pub full_sync_duration: Histogram,
    /// `kubeproxy_sync_partial_proxy_rules_duration_seconds`
    pub partial_sync_duration: Histogram,
    /// `kubeproxy_network_programming_duration_seconds`
    pub network_programming: Histogram,
    /// `kubeproxy_sync_proxy_rules_last_timestamp_seconds`
    pub last_sync_timestamp: f64,
    /// `kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds`
    pub last_queued_timestamp: f64,
    /// `kubeproxy_sync_proxy_rules_nftables_sync_failures_total`
    pub sync_failures: u64,
    /// `podnet_proxy_nftables_elements`: set and map elements in the proxy's tables.
    pub elements: usize,
    /// `kubeproxy_proxy_healthz_total` and `kubeproxy_proxy_livez_total` by status code.
    pub probes: std::collections::BTreeMap<(&'static str, u16), u64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let sync = || Histogram::new(exponential(0.001, 2.0, 15));
        let programming = [linear(0.25, 0.25, 2), linear(1.0, 1.0, 59), linear(60.0, 5.0, 12), linear(120.0, 30.0, 7)].concat();
        Metrics {
            sync_duration: sync(),
            full_sync_duration: sync(),
            partial_sync_duration: sync(),
            network_programming: Histogram::new(programming),
            last_sync_timestamp: 0.0,
            last_queued_timestamp: 0.0,
            sync_failures: 0,
            elements: 0,
            probes: Default::default(),
        }
    }
}

impl Metrics {
    /// Records a sync that finished at `now` (Unix seconds), full or partial, that took
    /// `seconds`, programming changes first queued at `queued`.
    pub fn synced(&mut self, now: f64, seconds: f64, full: bool, queued: f64, elements: usize) {
        self.sync_duration.observe(seconds);
        if full { &mut self.full_sync_duration } else { &mut self.partial_sync_duration }.observe(seconds);
        self.network_programming.observe((now - queued).max(0.0));
        self.last_sync_timestamp = now;
        self.elements = elements;
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.sync_duration.write(&mut out, "kubeproxy_sync_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds");
        self.full_sync_duration.write(&mut out, "kubeproxy_sync_full_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds for full resyncs");
        self.partial_sync_duration.write(
            &mut out,
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
        );
        self.network_programming.write(&mut out, "kubeproxy_network_programming_duration_seconds", "In Cluster Network Programming Latency in seconds");
        let gauge = |out: &mut String, name: &str, help: &str, kind: &str, v: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        gauge(
            &mut out,
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            "gauge",
            self.last_sync_timestamp.to_string(),
        );
        gauge(
            &mut out,
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            "gauge",
            self.last_queued_timestamp.to_string(),
        );
        gauge(
            &mut out,
            "kubeproxy_sync_proxy_rules_nftables_sync_failures_total",
            "Cumulative proxy nftables sync failures",
            "counter",
            self.sync_failures.to_string(),
        );
        gauge(&mut out, "podnet_proxy_nftables_elements", "Set and map elements in the proxy's tables", "gauge", self.elements.to_string());
        for (probe, help) in [("healthz", "Cumulative proxy healthz HTTP status"), ("livez", "Cumulative proxy livez HTTP status")] {
            let name = format!("kubeproxy_proxy_{probe}_total");
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((_, code), n) in self.probes.iter().filter(|((p, _), _)| *p == probe) {
                let _ = writeln!(out, "{name}{{code=\"{code}\"}} {n}");
            }
        }
        out
    }
}

/// kube-proxy's health: healthy unless a change has waited longer than the timeout (twice the
/// sync period) without a sync.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Health {
    /// When the rules were last synced (Unix seconds; 0 = never).
    pub last_updated: f64,
    /// When the oldest change not yet synced was queued (`None`: nothing pending).
    pub oldest_pending: Option<f64>,
}

impl Health {
    /// The status code and JSON body of `/healthz` (`livez: false`) or `/livez` at `now`.
    /// `/healthz` also says whether the node is eligible for traffic (a node being deleted is
    /// not); `/livez` leaves that out.
    pub fn report(&self, now: f64, timeout: f64, node_eligible: bool, livez: bool) -> (u16, String) {
        let healthy = self.oldest_pending.is_none_or(|queued| now - queued < timeout);
        let stamp = |t: f64| {
            let secs = t.max(0.0) as i64;
            let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
            let (y, m, d) = civil_from_days(days);
            format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
        };
        let mut body = serde_json::json!({"lastUpdated": stamp(self.last_updated), "currentTime": stamp(now)});
        if !livez {
            body["nodeEligible"] = serde_json::Value::Bool(node_eligible);
        }
        let ok = healthy && (livez || node_eligible);
        (if ok { 200 } else { 503 }, body.to_string())
    }
}

/// kube-proxy's health timeout: twice its default sync period (30 s).
pub const HEALTH_TIMEOUT_SECONDS: f64 = 60.0;

/// Answers one request to kube-proxy's endpoints at `now`: `/metrics` (with `extra` series
/// after kube-proxy's), `/healthz` and `/livez` (each answer counted), anything else 404. The
/// status code, content type and body; the lab's nodes and the agent both serve through it.
pub fn respond(metrics: &mut Metrics, health: &Health, path: &str, now: f64, extra: &str) -> (u16, &'static str, String) {
    match path.split('?').next().unwrap_or("/") {
        "/metrics" => (200, "text/plain; version=0.0.4", format!("{}{extra}", metrics.render())),
        probe @ ("/healthz" | "/livez") => {
            let livez = probe == "/livez";
            let (code, body) = health.report(now, HEALTH_TIMEOUT_SECONDS, true, livez);
            *metrics.probes.entry((if livez { "livez" } else { "healthz" }, code)).or_default() += 1;
            (code, "application/json", body)
        }
        _ => (404, "text/plain", "404 page not found\n".to_owned()),
    }
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_kube_proxys() {
        let m = Metrics::default();
        assert_eq!(m.sync_duration.bounds.len(), 15);
        assert_eq!((m.sync_duration.bounds[0], m.sync_duration.bounds[14]), (0.001, 16.384));
        let p = &m.network_programming.bounds;
        assert_eq!((p.len(), p[0], p[1], p[2], p[60], p[61], p[72], p[79]), (80, 0.25, 0.5, 1.0, 59.0, 60.0, 115.0, 300.0));
    }

    #[test]
    fn a_sync_is_counted_in_its_buckets_and_rendered() {
        let mut m = Metrics::default();
        m.synced(1000.0, 0.003, false, 999.9, 42);
        let text = m.render();
        assert!(text.contains("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.002\"} 0"), "{text}");
        assert!(text.contains("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.004\"} 1"));
        assert!(text.contains("kubeproxy_sync_partial_proxy_rules_duration_seconds_count 1"));
        assert!(text.contains("kubeproxy_sync_full_proxy_rules_duration_seconds_count 0"));
        assert!(text.contains("kubeproxy_network_programming_duration_seconds_bucket{le=\"0.25\"} 1"));
        assert!(text.contains("kubeproxy_sync_proxy_rules_last_timestamp_seconds 1000"));
        assert!(text.contains("podnet_proxy_nftables_elements 42"));
    }

    #[test]
    fn health_fails_when_a_change_waits_past_the_timeout() {
        let h = Health { last_updated: 1_700_000_000.0, oldest_pending: None };
        let (code, body) = h.report(1_700_000_100.0, 60.0, true, false);
        assert_eq!(code, 200);
        assert_eq!(body, r#"{"currentTime":"2023-11-14T22:15:00Z","lastUpdated":"2023-11-14T22:13:20Z","nodeEligible":true}"#);
        let pending = Health { oldest_pending: Some(1_700_000_000.0), ..h.clone() };
        assert_eq!(pending.report(1_700_000_030.0, 60.0, true, false).0, 200);
        assert_eq!(pending.report(1_700_000_061.0, 60.0, true, false).0, 503);
        // A node being deleted fails /healthz but not /livez.
        assert_eq!(h.report(1_700_000_100.0, 60.0, false, false).0, 503);
        let (code, body) = h.report(1_700_000_100.0, 60.0, false, true);
        assert_eq!(code, 200);
        assert!(!body.contains("nodeEligible"));
    }
}
