//! Label selectors (`metav1.LabelSelector`) compiled for fast, repeated matching.
//!
//! Semantics as `metav1.LabelSelectorAsSelector`: `matchLabels` and every expression are ANDed;
//! `NotIn` and `DoesNotExist` match objects that lack the key; an empty selector matches everything.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Labels of an object.
pub type Labels = BTreeMap<String, String>;

/// One requirement of a selector.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Requirement {
    /// `key in (values)` (also `matchLabels`: a single value).
    In(String, Vec<String>),
    /// `key notin (values)`: also true when the key is absent.
    NotIn(String, Vec<String>),
    /// `key`
    Exists(String),
    /// `!key`
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &Labels) -> bool {
        match self {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.iter().any(|x| x == v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// A compiled label selector. Build it from a validated `LabelSelector`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// A selector that cannot be compiled (an unknown operator); validation reports it first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid selector operator")]
pub struct BadOperator(pub String);

impl Selector {
    /// The selector that matches every object (`{}`).
    pub fn everything() -> Self {
        Selector::default()
    }

    /// Compiles a Kubernetes label selector.
    pub fn from_k8s(selector: &LabelSelector) -> Result<Self, BadOperator> {
        let mut requirements = Vec::new();
        for (k, v) in selector.match_labels.iter().flatten() {
            requirements.push(Requirement::In(k.clone(), vec![v.clone()]));
        }
        for expr in selector.match_expressions.iter().flatten() {
            let mut values = expr.values.clone().unwrap_or_default();
            values.sort();
            values.dedup();
            requirements.push(match expr.operator.as_str() {
                "In" => Requirement::In(expr.key.clone(), values),
                "NotIn" => Requirement::NotIn(expr.key.clone(), values),
                "Exists" => Requirement::Exists(expr.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(expr.key.clone()),
                other => return Err(BadOperator(other.to_owned())),
            });
        }
        // Canonical order, so equal selectors compare (and cache) equal.
        requirements.sort();
        requirements.dedup();
        Ok(Selector { requirements })
    }

    /// Builds a selector from `key=value` pairs (matchLabels only).
    pub fn from_labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut requirements: Vec<Requirement> = pairs.into_iter().map(|(k, v)| Requirement::In(k.to_owned(), vec![v.to_owned()])).collect();
        requirements.sort();
        requirements.dedup();
        Selector { requirements }
    }

    /// True for `{}`.
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether the labels satisfy every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// The requirements, in canonical order.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

/// kubectl's selector syntax: `app=web,tier in (a,b),!legacy`; `{}` prints as `<all>`.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.requirements.is_empty() {
            return f.write_str("<all>");
        }
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match r {
                Requirement::In(k, vs) if vs.len() == 1 => write!(f, "{k}={}", vs[0])?,
                Requirement::In(k, vs) => write!(f, "{k} in ({})", vs.join(","))?,
                Requirement::NotIn(k, vs) => write!(f, "{k} notin ({})", vs.join(","))?,
                Requirement::Exists(k) => write!(f, "{k}")?,
                Requirement::DoesNotExist(k) => write!(f, "!{k}")?,
            }
        }
        Ok(())
    }
}

/// A `-l` selector as kubectl parses it (`labels.Parse`): comma-separated requirements
/// `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`.
pub fn parse(text: &str) -> Result<Selector, String> {
    let mut requirements = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        // One requirement: up to the next comma outside parentheses.
        let mut depth = 0usize;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth = depth.saturating_sub(1),
                    _ => {}
                }
                c == ',' && depth == 0
            })
            .map_or(rest.len(), |(i, _)| i);
        let part = rest[..end].trim();
        rest = rest.get(end + 1..).unwrap_or("").trim();
        if part.is_empty() {
            return Err(format!("invalid selector {text:?}: empty requirement"));
        }
        let set = |values: &str| -> Result<Vec<String>, String> {
            let inner = values
                .trim()
                .strip_prefix('(')
                .and_then(|v| v.strip_suffix(')'))
                .ok_or_else(|| format!("invalid selector {text:?}: expected (values) in {part:?}"))?;
            let mut vs: Vec<String> = inner.split(',').map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).collect();
            vs.sort();
            vs.dedup();
            Ok(vs)
        };
        let words: Vec<&str> = part.split_whitespace().collect();
        let requirement = if let Some(key) = part.strip_prefix('!') {
            Requirement::DoesNotExist(key.trim().to_owned())
        } else if let Some((k, v)) = part.split_once("!=") {
            Requirement::NotIn(k.trim().to_owned(), vec![v.trim().to_owned()])
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            Requirement::In(k.trim().to_owned(), vec![v.trim().to_owned()])
        } else if words.len() >= 2 && words[1] == "in" {
            Requirement::In(words[0].to_owned(), set(part[part.find(" in ").map_or(0, |i| i + 4)..].trim())?)
        } else if words.len() >= 2 && words[1] == "notin" {
            Requirement::NotIn(words[0].to_owned(), set(part[part.find(" notin ").map_or(0, |i| i + 7)..].trim())?)
        } else if words.len() == 1 {
            Requirement::Exists(words[0].to_owned())
        } else {
            return Err(format!("invalid selector {text:?}: cannot read {part:?}"));
        };
        let key = match &requirement {
            Requirement::In(k, _) | Requirement::NotIn(k, _) | Requirement::Exists(k) | Requirement::DoesNotExist(k) => k,
        };
        let errors = crate::validation::is_qualified_name(key);
        if !errors.is_empty() {
            return Err(format!("invalid selector {text:?}: key {key:?}: {}", errors.join("; ")));
        }
        requirements.push(requirement);
    }
    requirements.sort();
    requirements.dedup();
    Ok(Selector { requirements })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn sel(json: serde_json::Value) -> Selector {
        Selector::from_k8s(&serde_json::from_value(json).unwrap()).unwrap()
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(sel(serde_json::json!({})).matches(&labels(&[])));
        assert!(sel(serde_json::json!({})).matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let s = sel(serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]
        }));
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "a")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
        assert!(!s.matches(&labels(&[("tier", "a")])));
    }

    #[test]
    fn not_in_and_does_not_exist_match_objects_without_the_key() {
        let not_in = sel(serde_json::json!({"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["x"]}]}));
        assert!(not_in.matches(&labels(&[])));
        assert!(not_in.matches(&labels(&[("ns", "y")])));
        assert!(!not_in.matches(&labels(&[("ns", "x")])));
        let dne = sel(serde_json::json!({"matchExpressions": [{"key": "ns", "operator": "DoesNotExist"}]}));
        assert!(dne.matches(&labels(&[])));
        assert!(!dne.matches(&labels(&[("ns", "")])));
    }

    #[test]
    fn exists_matches_empty_values_too() {
        let s = sel(serde_json::json!({"matchExpressions": [{"key": "k", "operator": "Exists"}]}));
        assert!(s.matches(&labels(&[("k", "")])));
        assert!(!s.matches(&labels(&[])));
    }

    #[test]
    fn equal_selectors_compile_equal() {
        let a = sel(serde_json::json!({"matchLabels": {"a": "1", "b": "2"}}));
        let b = sel(serde_json::json!({"matchExpressions": [
            {"key": "b", "operator": "In", "values": ["2"]}, {"key": "a", "operator": "In", "values": ["1"]}]}));
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "a=1,b=2");
    }

    #[test]
    fn unknown_operator_is_an_error() {
        let s: LabelSelector = serde_json::from_value(serde_json::json!({"matchExpressions": [{"key": "a", "operator": "Has"}]})).unwrap();
        assert_eq!(Selector::from_k8s(&s), Err(BadOperator("Has".into())));
    }

    #[test]
    fn kubectl_selectors_parse() {
        let labels = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<Labels>();
        let web = labels(&[("app", "web"), ("tier", "front")]);
        assert!(parse("app=web").unwrap().matches(&web));
        assert!(parse("app==web,tier").unwrap().matches(&web));
        assert!(!parse("app!=web").unwrap().matches(&web));
        assert!(parse("tier in (front, back),!legacy").unwrap().matches(&web));
        assert!(!parse("tier notin (front)").unwrap().matches(&web));
        assert!(parse("").unwrap().is_everything());
        assert!(parse("app=").unwrap().matches(&labels(&[("app", "")])));
        assert!(parse("bad key=x").is_err());
        assert!(parse("a,,b").is_err());
        assert!(parse("tier in front").is_err());
    }
}
