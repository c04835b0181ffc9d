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
}
