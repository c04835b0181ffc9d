//! The fields the API server fills in on a Service it stores, so that what podnet prints and
//! plans from is the object `kubectl get -o yaml` would show: the defaults of
//! `pkg/apis/core/v1/defaults.go` (`SetDefaults_Service`) and the IP family fields the Service
//! registry infers and checks on create (`initIPFamilyFields` in
//! `pkg/registry/core/service/storage/alloc.go`, with `ValidateServiceClusterIPsRelatedFields`
//! of `pkg/apis/core/validation`), for a cluster with one or two service IP families.

use k8s_openapi::api::core::v1::{ClientIPConfig, LoadBalancerStatus, Service, ServiceSpec, ServiceStatus, SessionAffinityConfig};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// `v1.DefaultClientIPServiceAffinitySeconds`: three hours.
pub const CLIENT_IP_AFFINITY_SECONDS: i32 = 10_800;

/// [`service_for`] on a single-stack IPv4 cluster (the lab's default), for callers that only
/// want the defaults: a Service the API server would refuse keeps the fields filled in so far.
pub fn service(svc: &mut Service) {
    let _ = service_for(svc, &["IPv4"]);
}

/// Fills in what the API server defaults on create, on a cluster whose service IP families are
/// `families` (`"IPv4"`/`"IPv6"`, primary first: the family of `--service-cluster-ip-range[0]`).
/// Idempotent: a stored Service stays as it is. The IP family fields the API server would refuse
/// are errors in its words, each starting with the field path
/// (`spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this cluster is not configured for dual-stack services`).
pub fn service_for(svc: &mut Service, families: &[&str]) -> Result<(), Vec<String>> {
    let spec = svc.spec.get_or_insert_with(ServiceSpec::default);
    let ty = spec.type_.get_or_insert_with(|| "ClusterIP".into()).clone();
    let affinity = spec.session_affinity.get_or_insert_with(|| "None".into()).clone();
    if affinity == "None" {
        spec.session_affinity_config = None;
    } else if affinity == "ClientIP" && spec.session_affinity_config.as_ref().and_then(|c| c.client_ip.as_ref()).and_then(|c| c.timeout_seconds).is_none() {
        spec.session_affinity_config = Some(SessionAffinityConfig { client_ip: Some(ClientIPConfig { timeout_seconds: Some(CLIENT_IP_AFFINITY_SECONDS) }) });
    }
    for port in spec.ports.iter_mut().flatten() {
        port.protocol.get_or_insert_with(|| "TCP".into());
        if matches!(&port.target_port, None | Some(IntOrString::Int(0))) || matches!(&port.target_port, Some(IntOrString::String(s)) if s.is_empty()) {
            port.target_port = Some(IntOrString::Int(port.port));
        }
    }
    let externally_accessible = ty == "NodePort" || ty == "LoadBalancer" || (ty == "ClusterIP" && spec.external_ips.as_ref().is_some_and(|e| !e.is_empty()));
    if externally_accessible {
        spec.external_traffic_policy.get_or_insert_with(|| "Cluster".into());
    }
    if matches!(ty.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer") {
        spec.internal_traffic_policy.get_or_insert_with(|| "Cluster".into());
    }
    if ty == "LoadBalancer" {
        spec.allocate_load_balancer_node_ports.get_or_insert(true);
    }
    let families = if ty == "ExternalName" { Ok(()) } else { ip_families(spec, families) };
    let status = svc.status.get_or_insert_with(ServiceStatus::default);
    let lb = status.load_balancer.get_or_insert_with(LoadBalancerStatus::default);
    for ingress in lb.ingress.iter_mut().flatten() {
        if ingress.ip.is_some() && ingress.ip_mode.is_none() {
            ingress.ip_mode = Some("VIP".into());
        }
    }
    families
}

const IP_FAMILIES: [&str; 2] = ["IPv4", "IPv6"];

fn family_of(ip: &str) -> &'static str {
    if ip.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_ipv6()) { "IPv6" } else { "IPv4" }
}

fn other_family(family: &str) -> &'static str {
    if family == "IPv4" { "IPv6" } else { "IPv4" }
}

/// A `[]string` as the API server prints an invalid value of that type (`%#v`).
fn go_strings(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

/// `initIPFamilyFields` on create: a policy when none is given (headless without a selector
/// asks for both families, everything else for one), families inferred from the ClusterIPs
/// given, else the cluster's primary one, and the other family appended for a dual-stack policy
/// on a dual-stack cluster; what the cluster cannot serve is an error.
fn ip_families(spec: &mut ServiceSpec, cluster: &[&str]) -> Result<(), Vec<String>> {
    let configured = |family: &str| cluster.contains(&family);
    let dual_stack_cluster = IP_FAMILIES.iter().all(|f| configured(f));
    let primary = cluster.first().map_or("IPv4", |f| if *f == "IPv6" { "IPv6" } else { "IPv4" });
    // `normalizeClusterIPs` on create: `clusterIP` alone is `clusterIPs[0]`.
    if let Some(ip) = spec.cluster_ip.clone().filter(|ip| !ip.is_empty())
        && spec.cluster_ips.as_ref().is_none_or(|c| c.is_empty())
    {
        spec.cluster_ips = Some(vec![ip]);
    }
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let selectorless = spec.selector.as_ref().is_none_or(|s| s.is_empty());
    let policy = spec.ip_family_policy.get_or_insert_with(|| if headless && selectorless { "RequireDualStack".into() } else { "SingleStack".into() }).clone();
    validate_ip_fields(spec)?;

    let ips = spec.cluster_ips.clone().unwrap_or_default();
    let families = spec.ip_families.get_or_insert_with(Vec::new);
    let mut errors = Vec::new();
    if policy == "SingleStack" {
        if ips.len() == 2 {
            errors.push(
                "spec.ipFamilyPolicy: Invalid value: \"SingleStack\": must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified"
                    .into(),
            );
        }
        if families.len() == 2 {
            errors.push(
                "spec.ipFamilyPolicy: Invalid value: \"SingleStack\": must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified"
                    .into(),
            );
        }
    }
    // Families inferred from the ClusterIPs given (validated above: they match the families given).
    for (i, ip) in ips.iter().enumerate().take_while(|(_, ip)| *ip != "None") {
        let family = family_of(ip);
        if i >= families.len() {
            if configured(family) {
                families.push(family.into());
            } else {
                errors.push(format!("spec.clusterIPs[{i}]: Invalid value: {}: {family} is not configured on this cluster", go_strings(&ips)));
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    // Headless without a selector: both families unless asked for one, even on a single-stack
    // cluster (there is nothing to allocate, and the endpoints may have both).
    if headless && selectorless {
        if families.is_empty() {
            families.push(primary.into());
        }
        if families.len() < 2 && policy != "SingleStack" {
            let other = other_family(&families[0]);
            families.push(other.into());
        }
        return Ok(());
    }

    if policy == "RequireDualStack" && !dual_stack_cluster {
        errors.push("spec.ipFamilyPolicy: Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services".into());
    }
    for (i, family) in families.iter().enumerate() {
        if !configured(family) {
            errors.push(format!("spec.ipFamilies[{i}]: Invalid value: {family:?}: not configured on this cluster"));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if families.is_empty() {
        families.push(primary.into());
    }
    // A dual-stack policy on a dual-stack cluster gets the other family; `PreferDualStack` on a
    // single-stack cluster stays single.
    if policy != "SingleStack" && families.len() == 1 && dual_stack_cluster {
        let other = other_family(&families[0]);
        families.push(other.into());
    }
    Ok(())
}

/// `ValidateServiceClusterIPsRelatedFields`: `clusterIP` and `clusterIPs` agree, families and
/// the policy have known values without repeats, at most two ClusterIPs, one per family, each
/// of the family at its index in `ipFamilies`.
fn validate_ip_fields(spec: &ServiceSpec) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    let ips = spec.cluster_ips.clone().unwrap_or_default();
    let families = spec.ip_families.clone().unwrap_or_default();
    if spec.cluster_ip.as_deref().is_some_and(|ip| !ip.is_empty()) {
        if ips.is_empty() {
            errors.push("spec.clusterIPs: Required value".into());
        } else if spec.cluster_ip.as_ref() != ips.first() {
            errors.push(format!("spec.clusterIPs: Invalid value: {}: first value must match `clusterIP`", go_strings(&ips)));
        }
    } else if !ips.is_empty() {
        errors.push(format!("spec.clusterIPs: Invalid value: {}: must be empty when `clusterIP` is not specified", go_strings(&ips)));
    }
    for (i, family) in families.iter().enumerate() {
        if !IP_FAMILIES.contains(&family.as_str()) {
            errors.push(format!("spec.ipFamilies[{i}]: Unsupported value: {family:?}: supported values: \"IPv4\", \"IPv6\""));
        }
        if families[..i].contains(family) {
            errors.push(format!("spec.ipFamilies[{i}]: Duplicate value: {family:?}"));
        }
    }
    if let Some(policy) = spec.ip_family_policy.as_deref()
        && !["SingleStack", "PreferDualStack", "RequireDualStack"].contains(&policy)
    {
        errors
            .push(format!("spec.ipFamilyPolicy: Unsupported value: {policy:?}: supported values: \"PreferDualStack\", \"RequireDualStack\", \"SingleStack\""));
    }
    let mut invalid_ips = false;
    for (i, ip) in ips.iter().enumerate() {
        if i == 0 && ip == "None" {
            if ips.len() > 1 {
                invalid_ips = true;
                errors.push(format!("spec.clusterIPs: Invalid value: {}: 'None' must be the first and only value", go_strings(&ips)));
            }
            continue;
        }
        if ip.parse::<std::net::IpAddr>().is_err() {
            invalid_ips = true;
            errors.push(format!("spec.clusterIPs[{i}]: Invalid value: {ip:?}: must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"));
        }
    }
    if ips.len() > 2 {
        errors.push(format!("spec.clusterIPs: Invalid value: {}: may only hold up to 2 values", go_strings(&ips)));
    }
    if !invalid_ips {
        if ips.len() > 1 && !IP_FAMILIES.iter().all(|f| ips.iter().any(|ip| family_of(ip) == *f)) {
            errors.push(format!("spec.clusterIPs: Invalid value: {}: may specify no more than one IP for each IP family", go_strings(&ips)));
        }
        let headless = ips.len() == 1 && ips[0] == "None";
        if !headless {
            for (i, (ip, family)) in ips.iter().zip(&families).enumerate() {
                if IP_FAMILIES.contains(&family.as_str()) && family_of(ip) != family {
                    errors.push(format!("spec.clusterIPs[{i}]: Invalid value: {ip:?}: expected an {family} value as indicated by `ipFamilies[{i}]`"));
                }
            }
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaulted(yaml: &str) -> serde_json::Value {
        let mut svc: Service = serde_norway::from_str(yaml).unwrap();
        service(&mut svc);
        let once = serde_json::to_value(&svc).unwrap();
        service(&mut svc);
        assert_eq!(serde_json::to_value(&svc).unwrap(), once, "defaulting twice changes nothing");
        once
    }

    #[test]
    fn a_cluster_ip_service_gets_the_api_servers_defaults() {
        let v = defaulted(
            "metadata: {name: web}\nspec: {clusterIP: 10.96.0.20, clusterIPs: [10.96.0.20], selector: {app: web}, ports: [{port: 80}, {port: 53, protocol: UDP, targetPort: dns}]}\n",
        );
        let spec = &v["spec"];
        assert_eq!(spec["type"], "ClusterIP");
        assert_eq!(spec["sessionAffinity"], "None");
        assert_eq!(spec["internalTrafficPolicy"], "Cluster");
        assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
        assert_eq!(spec["ipFamilies"], serde_json::json!(["IPv4"]));
        assert_eq!(spec["ports"][0], serde_json::json!({"port": 80, "protocol": "TCP", "targetPort": 80}));
        assert_eq!(spec["ports"][1]["targetPort"], "dns");
        assert!(spec.get("externalTrafficPolicy").is_none(), "not externally accessible");
        assert_eq!(v["status"], serde_json::json!({"loadBalancer": {}}));
    }

    #[test]
    fn external_services_get_traffic_policies_and_node_port_allocation() {
        let v = defaulted(
            "metadata: {name: lb}\nspec: {type: LoadBalancer, sessionAffinity: ClientIP, ports: [{port: 80}]}\nstatus: {loadBalancer: {ingress: [{ip: 192.0.2.1}]}}\n",
        );
        assert_eq!(v["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(v["spec"]["allocateLoadBalancerNodePorts"], true);
        assert_eq!(v["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"], 10800);
        assert_eq!(v["status"]["loadBalancer"]["ingress"][0]["ipMode"], "VIP");
        let v = defaulted("metadata: {name: e}\nspec: {externalIPs: [192.0.2.9], ports: [{port: 80}]}\n");
        assert_eq!(v["spec"]["externalTrafficPolicy"], "Cluster", "a ClusterIP Service with externalIPs is externally accessible");
    }

    #[test]
    fn headless_and_external_name_services() {
        let v = defaulted("metadata: {name: h}\nspec: {clusterIP: None, ports: [{port: 80}]}\n");
        assert_eq!(v["spec"]["ipFamilyPolicy"], "RequireDualStack", "headless without a selector");
        assert_eq!(v["spec"]["ipFamilies"], serde_json::json!(["IPv4", "IPv6"]));
        assert_eq!(v["spec"]["clusterIPs"], serde_json::json!(["None"]));
        let v = defaulted("metadata: {name: h}\nspec: {clusterIP: None, selector: {app: db}, ports: [{port: 80}]}\n");
        assert_eq!((&v["spec"]["ipFamilyPolicy"], &v["spec"]["ipFamilies"]), (&serde_json::json!("SingleStack"), &serde_json::json!(["IPv4"])));
        let v = defaulted("metadata: {name: x}\nspec: {type: ExternalName, externalName: example.com}\n");
        assert!(v["spec"].get("ipFamilies").is_none() && v["spec"].get("internalTrafficPolicy").is_none());
        assert_eq!(v["spec"]["sessionAffinity"], "None");
        // What the API server refuses is left as far as it got: `service` is for defaults only.
        let v = defaulted("metadata: {name: r}\nspec: {ipFamilyPolicy: RequireDualStack, selector: {app: web}, ports: [{port: 80}]}\n");
        assert_eq!(v["spec"]["ipFamilyPolicy"], "RequireDualStack");
    }

    /// `(ipFamilyPolicy, ipFamilies)`, or the messages.
    type Outcome = Result<(String, Vec<String>), Vec<String>>;

    const V4: &[&str] = &["IPv4"];
    const V6: &[&str] = &["IPv6"];
    const V4V6: &[&str] = &["IPv4", "IPv6"];
    const V6V4: &[&str] = &["IPv6", "IPv4"];

    /// The IP family fields of a Service with `spec` (flow-style fields, ports added) created on a
    /// cluster with these service families: `(policy, families)` or the messages.
    fn init(cluster: &[&str], spec: &str) -> Outcome {
        let yaml = format!("metadata: {{name: s}}\nspec: {{{spec}, ports: [{{port: 80}}]}}\n");
        let mut svc: Service = serde_norway::from_str(&yaml).unwrap();
        service_for(&mut svc, cluster)?;
        let once = svc.clone();
        service_for(&mut svc, cluster).unwrap();
        assert_eq!(svc, once, "defaulting twice changes nothing: {spec}");
        let spec = svc.spec.unwrap();
        Ok((spec.ip_family_policy.unwrap(), spec.ip_families.unwrap()))
    }

    fn ok(policy: &str, families: &[&str]) -> Outcome {
        Ok((policy.into(), families.iter().map(ToString::to_string).collect()))
    }

    fn check(cases: &[(&[&str], &str, Outcome)]) {
        for (cluster, spec, want) in cases {
            assert_eq!(&init(cluster, spec), want, "{spec} on a {cluster:?} cluster");
        }
    }

    fn err(message: &str) -> Outcome {
        Err(vec![message.into()])
    }

    #[test]
    fn policies_and_families_of_services_with_a_selector() {
        let sel = "selector: {app: web}";
        let prefer = &format!("{sel}, ipFamilyPolicy: PreferDualStack");
        let require = &format!("{sel}, ipFamilyPolicy: RequireDualStack");
        let single = &format!("{sel}, ipFamilyPolicy: SingleStack");
        let not_dual = "spec.ipFamilyPolicy: Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services";
        check(&[
            // No policy: SingleStack of the cluster's primary family.
            (V4, sel, ok("SingleStack", &["IPv4"])),
            (V6, sel, ok("SingleStack", &["IPv6"])),
            (V4V6, sel, ok("SingleStack", &["IPv4"])),
            (V6V4, sel, ok("SingleStack", &["IPv6"])),
            (V4V6, single, ok("SingleStack", &["IPv4"])),
            (V6V4, single, ok("SingleStack", &["IPv6"])),
            // PreferDualStack: both where the cluster has both, else single.
            (V4, prefer, ok("PreferDualStack", &["IPv4"])),
            (V6, prefer, ok("PreferDualStack", &["IPv6"])),
            (V4V6, prefer, ok("PreferDualStack", &["IPv4", "IPv6"])),
            (V6V4, prefer, ok("PreferDualStack", &["IPv6", "IPv4"])),
            // RequireDualStack: both, or an error on a single-stack cluster.
            (V4, require, err(not_dual)),
            (V6, require, err(not_dual)),
            (V4V6, require, ok("RequireDualStack", &["IPv4", "IPv6"])),
            (V6V4, require, ok("RequireDualStack", &["IPv6", "IPv4"])),
            // Families asked for, in the order asked.
            (V4V6, &format!("{sel}, ipFamilies: [IPv6]"), ok("SingleStack", &["IPv6"])),
            (V4V6, &format!("{prefer}, ipFamilies: [IPv6]"), ok("PreferDualStack", &["IPv6", "IPv4"])),
            (V6V4, &format!("{require}, ipFamilies: [IPv4, IPv6]"), ok("RequireDualStack", &["IPv4", "IPv6"])),
            (V4, &format!("{sel}, ipFamilies: [IPv6]"), err("spec.ipFamilies[0]: Invalid value: \"IPv6\": not configured on this cluster")),
            (V6, &format!("{prefer}, ipFamilies: [IPv6, IPv4]"), err("spec.ipFamilies[1]: Invalid value: \"IPv4\": not configured on this cluster")),
        ]);
        // Every problem at once, as the API server lists them.
        assert_eq!(
            init(V4, &format!("{require}, ipFamilies: [IPv6]")),
            Err(vec![not_dual.to_string(), "spec.ipFamilies[0]: Invalid value: \"IPv6\": not configured on this cluster".to_string()])
        );
    }

    #[test]
    fn families_follow_the_cluster_ips_given() {
        let sel = "selector: {app: web}";
        let v4 = "clusterIP: 10.96.0.5";
        let v6 = "clusterIP: 'fd00:10:96::5'";
        let both = "clusterIP: 10.96.0.5, clusterIPs: [10.96.0.5, 'fd00:10:96::5']";
        check(&[
            (V4V6, &format!("{sel}, {v4}"), ok("SingleStack", &["IPv4"])),
            (V6V4, &format!("{sel}, {v4}"), ok("SingleStack", &["IPv4"])),
            (V4V6, &format!("{sel}, {v6}"), ok("SingleStack", &["IPv6"])),
            (V6, &format!("{sel}, {v6}"), ok("SingleStack", &["IPv6"])),
            (V4V6, &format!("{sel}, {v6}, ipFamilyPolicy: PreferDualStack"), ok("PreferDualStack", &["IPv6", "IPv4"])),
            (V6V4, &format!("{sel}, {v4}, ipFamilyPolicy: RequireDualStack"), ok("RequireDualStack", &["IPv4", "IPv6"])),
            (V4V6, &format!("{sel}, {both}, ipFamilyPolicy: PreferDualStack"), ok("PreferDualStack", &["IPv4", "IPv6"])),
            (V6V4, &format!("{sel}, {both}, ipFamilyPolicy: RequireDualStack"), ok("RequireDualStack", &["IPv4", "IPv6"])),
            (V4, &format!("{sel}, {v6}"), err("spec.clusterIPs[0]: Invalid value: []string{\"fd00:10:96::5\"}: IPv6 is not configured on this cluster")),
            (
                V4,
                &format!("{sel}, {both}, ipFamilyPolicy: PreferDualStack"),
                err("spec.clusterIPs[1]: Invalid value: []string{\"10.96.0.5\", \"fd00:10:96::5\"}: IPv6 is not configured on this cluster"),
            ),
            (V6, &format!("{sel}, {v4}"), err("spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.5\"}: IPv4 is not configured on this cluster")),
        ]);
    }

    #[test]
    fn invalid_ip_family_fields_get_the_api_servers_messages() {
        let sel = "selector: {app: web}";
        check(&[
            (
                V4V6,
                &format!("{sel}, clusterIP: 10.96.0.5, clusterIPs: [10.96.0.5, 'fd00:10:96::5']"),
                err(
                    "spec.ipFamilyPolicy: Invalid value: \"SingleStack\": must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified",
                ),
            ),
            (
                V4V6,
                &format!("{sel}, ipFamilyPolicy: SingleStack, ipFamilies: [IPv4, IPv6]"),
                err(
                    "spec.ipFamilyPolicy: Invalid value: \"SingleStack\": must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified",
                ),
            ),
            (V4V6, &format!("{sel}, ipFamilyPolicy: PreferDualStack, ipFamilies: [IPv4, IPv4]"), err("spec.ipFamilies[1]: Duplicate value: \"IPv4\"")),
            (V4V6, &format!("{sel}, ipFamilyPolicy: PreferDualStack, ipFamilies: [IPv4, IPv6, IPv4]"), err("spec.ipFamilies[2]: Duplicate value: \"IPv4\"")),
            (V4V6, &format!("{sel}, ipFamilies: [IPv5]"), err("spec.ipFamilies[0]: Unsupported value: \"IPv5\": supported values: \"IPv4\", \"IPv6\"")),
            (
                V4V6,
                &format!("{sel}, ipFamilyPolicy: DualStack"),
                err("spec.ipFamilyPolicy: Unsupported value: \"DualStack\": supported values: \"PreferDualStack\", \"RequireDualStack\", \"SingleStack\""),
            ),
            (
                V4V6,
                &format!("{sel}, ipFamilyPolicy: RequireDualStack, clusterIP: 10.96.0.5, clusterIPs: [10.96.0.5, 10.96.0.6]"),
                err("spec.clusterIPs: Invalid value: []string{\"10.96.0.5\", \"10.96.0.6\"}: may specify no more than one IP for each IP family"),
            ),
            (
                V4V6,
                &format!("{sel}, ipFamilyPolicy: RequireDualStack, clusterIP: 10.96.0.5, clusterIPs: [10.96.0.5, 'fd00::5', 10.96.0.6]"),
                err("spec.clusterIPs: Invalid value: []string{\"10.96.0.5\", \"fd00::5\", \"10.96.0.6\"}: may only hold up to 2 values"),
            ),
            (
                V4V6,
                &format!("{sel}, clusterIP: 10.96.0.5, ipFamilies: [IPv6]"),
                err("spec.clusterIPs[0]: Invalid value: \"10.96.0.5\": expected an IPv6 value as indicated by `ipFamilies[0]`"),
            ),
            (
                V4V6,
                &format!("{sel}, ipFamilyPolicy: PreferDualStack, clusterIP: 10.96.0.5, clusterIPs: [10.96.0.5, 'fd00::5'], ipFamilies: [IPv4, IPv4]"),
                Err(vec![
                    "spec.ipFamilies[1]: Duplicate value: \"IPv4\"".into(),
                    "spec.clusterIPs[1]: Invalid value: \"fd00::5\": expected an IPv4 value as indicated by `ipFamilies[1]`".into(),
                ]),
            ),
            (
                V4V6,
                &format!("{sel}, clusterIPs: [10.96.0.5]"),
                err("spec.clusterIPs: Invalid value: []string{\"10.96.0.5\"}: must be empty when `clusterIP` is not specified"),
            ),
            (
                V4V6,
                &format!("{sel}, clusterIP: 10.96.0.5, clusterIPs: [10.96.0.6]"),
                err("spec.clusterIPs: Invalid value: []string{\"10.96.0.6\"}: first value must match `clusterIP`"),
            ),
            (
                V4V6,
                &format!("{sel}, clusterIP: ten"),
                err("spec.clusterIPs[0]: Invalid value: \"ten\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"),
            ),
            (
                V4V6,
                "clusterIP: None, clusterIPs: [None, 10.96.0.5]",
                err("spec.clusterIPs: Invalid value: []string{\"None\", \"10.96.0.5\"}: 'None' must be the first and only value"),
            ),
        ]);
    }

    #[test]
    fn headless_services_get_families_and_no_addresses() {
        let none = "clusterIP: None";
        check(&[
            // Without a selector: both families by default, even on a single-stack cluster.
            (V4, none, ok("RequireDualStack", &["IPv4", "IPv6"])),
            (V6, none, ok("RequireDualStack", &["IPv6", "IPv4"])),
            (V4V6, none, ok("RequireDualStack", &["IPv4", "IPv6"])),
            (V6V4, none, ok("RequireDualStack", &["IPv6", "IPv4"])),
            (V4, &format!("{none}, ipFamilyPolicy: PreferDualStack"), ok("PreferDualStack", &["IPv4", "IPv6"])),
            (V4, &format!("{none}, ipFamilies: [IPv6]"), ok("RequireDualStack", &["IPv6", "IPv4"])),
            // ... unless SingleStack is asked for.
            (V4, &format!("{none}, ipFamilyPolicy: SingleStack"), ok("SingleStack", &["IPv4"])),
            (V6V4, &format!("{none}, ipFamilyPolicy: SingleStack"), ok("SingleStack", &["IPv6"])),
            // With a selector: like any other Service.
            (V4, &format!("{none}, selector: {{app: db}}"), ok("SingleStack", &["IPv4"])),
            (V6V4, &format!("{none}, selector: {{app: db}}"), ok("SingleStack", &["IPv6"])),
            (V4V6, &format!("{none}, selector: {{app: db}}, ipFamilyPolicy: PreferDualStack"), ok("PreferDualStack", &["IPv4", "IPv6"])),
            (
                V4,
                &format!("{none}, selector: {{app: db}}, ipFamilyPolicy: RequireDualStack"),
                err("spec.ipFamilyPolicy: Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services"),
            ),
        ]);
    }
}
