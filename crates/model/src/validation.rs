//! Field validation with the API server's own wording.
//!
//! Messages and error kinds follow `k8s.io/apimachinery/pkg/util/validation` and
//! `.../util/validation/field`, so that a user sees here what `kubectl apply` would have told them.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A path to a field, printed the way the API server prints it: `spec.ingress[0].from[1]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldPath(String);

impl FieldPath {
    /// The root of a path, e.g. `spec` or `metadata`.
    pub fn new(root: &str) -> Self {
        FieldPath(root.to_owned())
    }

    /// A child field.
    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() { FieldPath(name.to_owned()) } else { FieldPath(format!("{}.{name}", self.0)) }
    }

    /// An element of a list.
    pub fn index(&self, i: usize) -> Self {
        FieldPath(format!("{}[{i}]", self.0))
    }

    /// A key of a map (printed as upstream does: `matchLabels[app]`).
    pub fn key(&self, k: &str) -> Self {
        FieldPath(format!("{}[{k}]", self.0))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The kinds of field error the API server reports (`field.ErrorType`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// `Required value`
    Required,
    /// `Invalid value: <value>`
    Invalid(String),
    /// `Unsupported value: <value>: supported values: ...`
    NotSupported { value: String, supported: Vec<String> },
    /// `Forbidden`
    Forbidden,
    /// `Duplicate value: <value>`
    Duplicate(String),
}

/// One validation error: a field, what is wrong with it and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Where.
    pub path: FieldPath,
    /// What kind of error.
    pub kind: FieldErrorKind,
    /// The API server's detail message (may be empty).
    pub detail: String,
}

impl FieldError {
    /// `field.Required`
    pub fn required(path: FieldPath, detail: impl Into<String>) -> Self {
        FieldError { path, kind: FieldErrorKind::Required, detail: detail.into() }
    }

    /// `field.Invalid` with a string value (quoted like Go's `%q`).
    pub fn invalid_str(path: FieldPath, value: &str, detail: impl Into<String>) -> Self {
        FieldError { path, kind: FieldErrorKind::Invalid(go_quote(value)), detail: detail.into() }
    }

    /// `field.Invalid` with a number value.
    pub fn invalid_int(path: FieldPath, value: i64, detail: impl Into<String>) -> Self {
        FieldError { path, kind: FieldErrorKind::Invalid(value.to_string()), detail: detail.into() }
    }

    /// `field.Invalid` with a value printed as given.
    pub fn invalid_raw(path: FieldPath, value: String, detail: impl Into<String>) -> Self {
        FieldError { path, kind: FieldErrorKind::Invalid(value), detail: detail.into() }
    }

    /// `field.NotSupported`
    pub fn not_supported(path: FieldPath, value: &str, supported: &[&str]) -> Self {
        FieldError {
            path,
            kind: FieldErrorKind::NotSupported { value: value.to_owned(), supported: supported.iter().map(|s| (*s).to_owned()).collect() },
            detail: String::new(),
        }
    }

    /// `field.Forbidden`
    pub fn forbidden(path: FieldPath, detail: impl Into<String>) -> Self {
        FieldError { path, kind: FieldErrorKind::Forbidden, detail: detail.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.path)?;
        match &self.kind {
            FieldErrorKind::Required => f.write_str("Required value")?,
            FieldErrorKind::Forbidden => f.write_str("Forbidden")?,
            FieldErrorKind::Duplicate(value) => write!(f, "Duplicate value: {value}")?,
            FieldErrorKind::Invalid(value) => write!(f, "Invalid value: {value}")?,
            FieldErrorKind::NotSupported { value, supported } => {
                let quoted: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
                write!(f, "Unsupported value: {}: supported values: {}", go_quote(value), quoted.join(", "))?;
            }
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// Quotes a string the way Go's `%q` does for the printable ASCII we expect in names.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let mut out = format!("{msg} (e.g. ");
    for (i, example) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push_str(&format!("'{example}', "));
    }
    out.push_str(&format!("regex used for validation is '{fmt}')"));
    out
}

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

const LABEL_KEY_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_KEY_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR: &str =
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_ERR: &str =
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_ERR: &str =
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";

/// `^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`
fn matches_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
fn matches_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty() && alnum(&b[0]) && alnum(&b[b.len() - 1]) && b.iter().all(|c| alnum(c) || *c == b'-')
}

fn matches_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(matches_dns1123_label)
}

/// `validation.IsDNS1123Subdomain`
pub fn is_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 253 {
        errs.push(max_len_error(253));
    }
    if !matches_dns1123_subdomain(value) {
        let fmt = format!("{DNS1123_LABEL_FMT}(\\.{DNS1123_LABEL_FMT})*");
        errs.push(regex_error(DNS1123_SUBDOMAIN_ERR, &fmt, &["example.com"]));
    }
    errs
}

/// `validation.IsDNS1123Label`
pub fn is_dns1123_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !matches_dns1123_label(value) {
        if matches_dns1123_subdomain(value) {
            errs.push("must not contain dots".to_owned());
        } else {
            errs.push(regex_error(DNS1123_LABEL_ERR, DNS1123_LABEL_FMT, &["my-name", "123-abc"]));
        }
    }
    errs
}

/// `validation.IsQualifiedName` (a label key).
pub fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_owned());
            } else {
                errs.extend(is_dns1123_subdomain(prefix).into_iter().map(|m| format!("prefix part {m}")));
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a valid label key {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(LABEL_KEY_ERR, LABEL_KEY_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_owned());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len_error(63)));
    }
    if !matches_qualified_name_part(name) {
        errs.push(format!("name part {}", regex_error(LABEL_KEY_ERR, LABEL_KEY_FMT, &["MyName", "my.name", "123-abc"])));
    }
    errs
}

/// `validation.IsValidLabelValue`
pub fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !value.is_empty() && !matches_qualified_name_part(value) {
        errs.push(regex_error(LABEL_VALUE_ERR, LABEL_VALUE_FMT, &["MyValue", "my_value", "12345"]));
    }
    errs
}

/// `validation.IsValidPortNum`
pub fn is_valid_port_num(port: i64) -> Vec<String> {
    if (1..=65535).contains(&port) { Vec::new() } else { vec!["must be between 1 and 65535, inclusive".to_owned()] }
}

/// `validation.IsValidPortName` (an IANA service name).
pub fn is_valid_port_name(port: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if port.len() > 15 {
        errs.push(max_len_error(15));
    }
    if port.is_empty() || !port.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-') {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_owned());
    }
    if !port.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".to_owned());
    }
    if port.contains("--") {
        errs.push("must not contain consecutive hyphens".to_owned());
    }
    if port.starts_with('-') || port.ends_with('-') {
        errs.push("must not begin or end with a hyphen".to_owned());
    }
    errs
}

/// A Service's ports as the API server checks them (`ValidateService`): each port a valid
/// number, a numeric targetPort too (an absent one defaults to the port), a named one an IANA
/// service name, names unique, and no two ports with the
/// same port and protocol.
pub fn validate_service_ports(spec: &k8s_openapi::api::core::v1::ServiceSpec) -> Vec<FieldError> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let mut errs = Vec::new();
    let ports = spec.ports.as_deref().unwrap_or_default();
    let root = FieldPath::new("spec").child("ports");
    let mut names: Vec<&str> = Vec::new();
    let mut keys: Vec<(String, i32)> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let path = root.index(i);
        let name = p.name.as_deref().unwrap_or_default();
        // The API server also requires names when there are several ports; manifests written
        // for older tools often leave one unnamed, and nothing here depends on the name being
        // there, so that rule alone is not enforced.
        if !name.is_empty() {
            errs.extend(is_dns1123_label(name).into_iter().map(|m| FieldError::invalid_str(path.child("name"), name, m)));
            if names.contains(&name) {
                errs.push(FieldError { path: path.child("name"), kind: FieldErrorKind::Duplicate(go_quote(name)), detail: String::new() });
            }
            names.push(name);
        }
        errs.extend(is_valid_port_num(i64::from(p.port)).into_iter().map(|m| FieldError::invalid_int(path.child("port"), i64::from(p.port), m)));
        match &p.target_port {
            None | Some(IntOrString::Int(0)) => {
                errs.extend(is_valid_port_num(i64::from(p.port)).into_iter().map(|m| FieldError::invalid_int(path.child("targetPort"), i64::from(p.port), m)))
            }
            Some(IntOrString::Int(t)) => {
                errs.extend(is_valid_port_num(i64::from(*t)).into_iter().map(|m| FieldError::invalid_int(path.child("targetPort"), i64::from(*t), m)))
            }
            Some(IntOrString::String(t)) => errs.extend(is_valid_port_name(t).into_iter().map(|m| FieldError::invalid_str(path.child("targetPort"), t, m))),
        }
        if let Some(np) = p.node_port
            && np != 0
        {
            errs.extend(is_valid_port_num(i64::from(np)).into_iter().map(|m| FieldError::invalid_int(path.child("nodePort"), i64::from(np), m)));
        }
        let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".to_owned());
        if !matches!(protocol.as_str(), "TCP" | "UDP" | "SCTP") {
            errs.push(FieldError::not_supported(path.child("protocol"), &protocol, &["SCTP", "TCP", "UDP"]));
        }
        let key = (protocol, p.port);
        if keys.contains(&key) {
            // As apimachinery prints the duplicated `core.ServicePort{Protocol, Port}` (JSON since 1.34).
            let value = format!(r#"{{"Name":"","Protocol":{},"AppProtocol":null,"Port":{},"TargetPort":0,"NodePort":0}}"#, go_quote(&key.0), key.1);
            errs.push(FieldError { path: path.clone(), kind: FieldErrorKind::Duplicate(value), detail: String::new() });
        }
        keys.push(key);
    }
    errs
}

/// `ValidateLabels`: every key a qualified name, every value a label value.
pub fn validate_labels(labels: &BTreeMap<String, String>, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (k, v) in labels {
        errs.extend(is_qualified_name(k).into_iter().map(|m| FieldError::invalid_str(path.clone(), k, m)));
        errs.extend(is_valid_label_value(v).into_iter().map(|m| FieldError::invalid_str(path.clone(), v, m)));
    }
    errs
}

/// `unversioned.ValidateLabelSelector`
pub fn validate_label_selector(selector: &LabelSelector, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(labels) = &selector.match_labels {
        errs.extend(validate_labels(labels, &path.child("matchLabels")));
    }
    for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
        let p = path.child("matchExpressions").index(i);
        let values = expr.values.as_deref().unwrap_or_default();
        match expr.operator.as_str() {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(FieldError::required(p.child("values"), "must be specified when `operator` is 'In' or 'NotIn'"));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(FieldError::forbidden(p.child("values"), "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"));
                }
            }
            other => errs.push(FieldError::invalid_str(p.child("operator"), other, "not a valid selector operator")),
        }
        errs.extend(is_qualified_name(&expr.key).into_iter().map(|m| FieldError::invalid_str(p.child("key"), &expr.key, m)));
        for (vi, value) in values.iter().enumerate() {
            errs.extend(is_valid_label_value(value).into_iter().map(|m| FieldError::invalid_str(p.child("values").index(vi), value, m)));
        }
    }
    errs
}

/// Name and namespace of an object, as `ValidateObjectMeta` checks them for namespaced kinds
/// whose names are DNS subdomains (NetworkPolicy, Pod, Deployment, ...).
pub fn validate_object_meta(name: Option<&str>, namespace: &str, labels: Option<&BTreeMap<String, String>>) -> Vec<FieldError> {
    let meta = FieldPath::new("metadata");
    let mut errs = Vec::new();
    match name {
        None | Some("") => errs.push(FieldError::required(meta.child("name"), "name or generateName is required")),
        Some(n) => errs.extend(is_dns1123_subdomain(n).into_iter().map(|m| FieldError::invalid_str(meta.child("name"), n, m))),
    }
    errs.extend(is_dns1123_label(namespace).into_iter().map(|m| FieldError::invalid_str(meta.child("namespace"), namespace, m)));
    if let Some(labels) = labels {
        errs.extend(validate_labels(labels, &meta.child("labels")));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service_errors(ports: &str) -> Vec<String> {
        let spec: k8s_openapi::api::core::v1::ServiceSpec = serde_json::from_str(&format!(r#"{{"ports": {ports}}}"#)).unwrap();
        validate_service_ports(&spec).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn service_ports_are_checked_like_the_api_server() {
        assert_eq!(
            service_errors(r#"[{"port": 0}]"#),
            [
                "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.ports[0].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive"
            ]
        );
        assert_eq!(
            service_errors(r#"[{"name": "a", "port": 80}, {"name": "b", "port": 80}]"#),
            [r#"spec.ports[1]: Duplicate value: {"Name":"","Protocol":"TCP","AppProtocol":null,"Port":80,"TargetPort":0,"NodePort":0}"#]
        );
        assert!(service_errors(r#"[{"name": "a", "port": 80}, {"name": "b", "port": 80, "protocol": "UDP"}]"#).is_empty(), "same port, other protocol");
        assert_eq!(service_errors(r#"[{"name": "http", "port": 80}, {"name": "http", "port": 81}]"#), [r#"spec.ports[1].name: Duplicate value: "http""#]);
        assert_eq!(
            service_errors(r#"[{"port": 80, "targetPort": 70000}]"#),
            ["spec.ports[0].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive"]
        );
        assert!(service_errors(r#"[{"port": 53, "targetPort": "dns", "protocol": "UDP"}]"#).is_empty());
    }

    #[test]
    fn field_errors_print_like_the_api_server() {
        let p = FieldPath::new("spec").child("ingress").index(0).child("from").index(1);
        assert_eq!(FieldError::required(p.clone(), "must specify a peer").to_string(), "spec.ingress[0].from[1]: Required value: must specify a peer");
        assert_eq!(
            FieldError::not_supported(p.child("protocol"), "ICMP", &["TCP", "UDP", "SCTP"]).to_string(),
            "spec.ingress[0].from[1].protocol: Unsupported value: \"ICMP\": supported values: \"TCP\", \"UDP\", \"SCTP\""
        );
        assert_eq!(
            FieldError::invalid_int(p.child("port"), 70000, "must be between 1 and 65535, inclusive").to_string(),
            "spec.ingress[0].from[1].port: Invalid value: 70000: must be between 1 and 65535, inclusive"
        );
    }

    #[test]
    fn qualified_names_follow_upstream_rules() {
        assert!(is_qualified_name("app").is_empty());
        assert!(is_qualified_name("kubernetes.io/metadata.name").is_empty());
        assert!(is_qualified_name("app.kubernetes.io/name").is_empty());
        assert_eq!(is_qualified_name("/x"), vec!["prefix part must be non-empty"]);
        assert!(!is_qualified_name("a/b/c").is_empty());
        assert!(!is_qualified_name("-app").is_empty());
        assert!(!is_qualified_name(&"a".repeat(64)).is_empty());
        assert!(!is_qualified_name("Example.com/x").is_empty());
    }

    #[test]
    fn label_values_may_be_empty() {
        assert!(is_valid_label_value("").is_empty());
        assert!(is_valid_label_value("my_value.1").is_empty());
        assert!(!is_valid_label_value("bad value").is_empty());
        assert!(!is_valid_label_value("-x").is_empty());
    }

    #[test]
    fn port_names_are_iana_service_names() {
        assert!(is_valid_port_name("serve-80-tcp").is_empty());
        assert!(is_valid_port_name("http").is_empty());
        assert_eq!(is_valid_port_name("8080"), vec!["must contain at least one letter (a-z)"]);
        assert_eq!(is_valid_port_name("a--b"), vec!["must not contain consecutive hyphens"]);
        assert_eq!(is_valid_port_name("-ab"), vec!["must not begin or end with a hyphen"]);
        assert_eq!(is_valid_port_name("this-is-too-long-x"), vec!["must be no more than 15 characters"]);
        assert!(!is_valid_port_name("HTTP").is_empty());
    }

    #[test]
    fn selector_operators_and_values_are_checked() {
        let sel: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchExpressions": [
                {"key": "a", "operator": "In", "values": []},
                {"key": "b", "operator": "Exists", "values": ["x"]},
                {"key": "c", "operator": "Equals", "values": ["x"]}
            ]
        }))
        .unwrap();
        let errs: Vec<String> = validate_label_selector(&sel, &FieldPath::new("spec").child("podSelector")).iter().map(ToString::to_string).collect();
        assert_eq!(
            errs,
            vec![
                "spec.podSelector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
                "spec.podSelector.matchExpressions[1].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                "spec.podSelector.matchExpressions[2].operator: Invalid value: \"Equals\": not a valid selector operator",
            ]
        );
    }
}
