//! Loading Kubernetes manifests the way `kubectl apply -f` reads them: files and directories
//! (recursively `*.yaml`, `*.yml`, `*.json`), multi-document YAML, JSON streams and `List` objects.
//! Kinds podnet does not use are skipped; objects of kinds it uses are decoded into k8s-openapi types.

use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass, NetworkPolicy, ServiceCIDR};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{LoadError, Location, ManifestError, ObjectRef};

/// An object of a kind podnet uses.
#[derive(Clone, Debug)]
pub enum Object {
    /// `v1 Namespace`
    Namespace(Box<Namespace>),
    /// `v1 Pod`
    Pod(Box<Pod>),
    /// `networking.k8s.io/v1 NetworkPolicy`
    NetworkPolicy(Box<NetworkPolicy>),
    /// `apps/v1 Deployment`
    Deployment(Box<Deployment>),
    /// `apps/v1 ReplicaSet`
    ReplicaSet(Box<ReplicaSet>),
    /// `apps/v1 StatefulSet`
    StatefulSet(Box<StatefulSet>),
    /// `apps/v1 DaemonSet`
    DaemonSet(Box<DaemonSet>),
    /// `batch/v1 Job`
    Job(Box<Job>),
    /// `batch/v1 CronJob`
    CronJob(Box<CronJob>),
    /// `v1 Service`
    Service(Box<Service>),
    /// `discovery.k8s.io/v1 EndpointSlice`
    EndpointSlice(Box<EndpointSlice>),
    /// `v1 Node`
    Node(Box<Node>),
    /// `networking.k8s.io/v1 ServiceCIDR`
    ServiceCidr(Box<ServiceCIDR>),
    /// `networking.k8s.io/v1 Ingress`
    Ingress(Box<Ingress>),
    /// `networking.k8s.io/v1 IngressClass`
    IngressClass(Box<IngressClass>),
    /// `v1 Secret` (TLS certificates for Ingresses and Gateways)
    Secret(Box<Secret>),
    /// `gateway.networking.k8s.io/v1 GatewayClass`
    GatewayClass(Box<crate::gateway_api::GatewayClass>),
    /// `gateway.networking.k8s.io/v1 Gateway`
    Gateway(Box<crate::gateway_api::Gateway>),
    /// `gateway.networking.k8s.io/v1 HTTPRoute`
    HttpRoute(Box<crate::gateway_api::HttpRoute>),
    /// `gateway.networking.k8s.io/v1beta1 ReferenceGrant`
    ReferenceGrant(Box<crate::gateway_api::ReferenceGrant>),
}

/// An object together with where it was read.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// Where it was read.
    pub location: Location,
    /// The object.
    pub object: Object,
}

/// Loads every manifest under the given paths, in order (directories sorted by name).
/// `-` reads standard input (YAML, which includes JSON).
pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<Loaded>, LoadError> {
    let mut out = Vec::new();
    for path in paths {
        let path = path.as_ref();
        if path == Path::new("-") {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|e| LoadError::Io { path: path.to_owned(), source: e })?;
            out.extend(load_str(&text, Path::new("<stdin>"))?);
            continue;
        }
        let meta = std::fs::metadata(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound { LoadError::NotFound(path.to_owned()) } else { LoadError::Io { path: path.to_owned(), source: e } }
        })?;
        if meta.is_dir() {
            for file in manifest_files(path)? {
                load_file(&file, &mut out)?;
            }
        } else {
            load_file(path, &mut out)?;
        }
    }
    Ok(out)
}

/// Files with a manifest extension under `dir`, recursively, sorted by path.
fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| LoadError::Io { path: d.clone(), source: e })?;
        for entry in entries {
            let entry = entry.map_err(|e| LoadError::Io { path: d.clone(), source: e })?;
            let p = entry.path();
            let ty = entry.file_type().map_err(|e| LoadError::Io { path: p.clone(), source: e })?;
            if ty.is_dir() {
                stack.push(p);
            } else if is_manifest(&p) {
                files.push(p);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn is_manifest(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
}

fn load_file(path: &Path, out: &mut Vec<Loaded>) -> Result<(), LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::Io { path: path.to_owned(), source: e })?;
    out.extend(load_str(&text, path)?);
    Ok(())
}

/// Loads the manifests in one file's text. JSON when the file name ends in `.json`, YAML otherwise.
pub fn load_str(text: &str, file: &Path) -> Result<Vec<Loaded>, ManifestError> {
    let mut out = Vec::new();
    let is_json = file.extension().is_some_and(|e| e == "json");
    let at = |document: usize| Location { file: file.to_owned(), document, item: None };
    if is_json {
        let stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        for (i, doc) in stream.enumerate() {
            let doc = doc.map_err(|e| plain_error(at(i + 1), format!("invalid JSON: {e}")))?;
            decode_document(doc, at(i + 1), &mut out)?;
        }
    } else {
        for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
            let doc = Value::deserialize(doc).map_err(|e| plain_error(at(i + 1), format!("invalid YAML: {e}")))?;
            decode_document(doc, at(i + 1), &mut out)?;
        }
    }
    Ok(out)
}

fn plain_error(location: Location, message: String) -> ManifestError {
    ManifestError { location, object: None, messages: vec![message] }
}

/// One document: nothing (empty), a `List`, or an object.
fn decode_document(doc: Value, location: Location, out: &mut Vec<Loaded>) -> Result<(), ManifestError> {
    match doc {
        Value::Null => Ok(()),
        Value::Object(_) => {
            let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
            if kind.ends_with("List") && doc.get("items").is_some() {
                decode_list(doc, location, out)
            } else {
                if let Some(object) = decode_object(doc, &location)? {
                    out.push(Loaded { location, object });
                }
                Ok(())
            }
        }
        other => Err(plain_error(location, format!("expected a Kubernetes object, found {}", json_type(&other)))),
    }
}

/// `kind: List` or a typed list such as `PodList`, whose items may omit `apiVersion`/`kind`.
fn decode_list(mut doc: Value, location: Location, out: &mut Vec<Loaded>) -> Result<(), ManifestError> {
    let list_kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
    let api_version = doc.get("apiVersion").cloned();
    let item_kind = list_kind.strip_suffix("List").filter(|k| !k.is_empty()).map(str::to_owned);
    let items = match doc.get_mut("items").map(Value::take) {
        Some(Value::Array(items)) => items,
        Some(Value::Null) | None => Vec::new(),
        Some(other) => {
            return Err(plain_error(location, format!("items: expected a list, found {}", json_type(&other))));
        }
    };
    for (i, mut item) in items.into_iter().enumerate() {
        let item_location = Location { item: Some(i), ..location.clone() };
        if let (Some(kind), Value::Object(map)) = (&item_kind, &mut item) {
            map.entry("kind").or_insert_with(|| Value::String(kind.clone()));
            if let Some(v) = &api_version {
                map.entry("apiVersion").or_insert_with(|| v.clone());
            }
        }
        decode_document(item, item_location, out)?;
    }
    Ok(())
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The object's identity as far as it can be read from untyped metadata.
fn object_ref(doc: &Value) -> ObjectRef {
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
    let meta = doc.get("metadata");
    let kind = s(doc.get("kind"));
    let mut namespace = s(meta.and_then(|m| m.get("namespace")));
    // Namespaced objects without a namespace land in the default one, as with kubectl.
    if namespace.is_empty() && !matches!(kind.as_str(), "Namespace" | "Node" | "ServiceCIDR") {
        namespace = crate::cluster::DEFAULT_NAMESPACE.to_owned();
    }
    ObjectRef { kind, namespace, name: s(meta.and_then(|m| m.get("name"))) }
}

fn decode_object(doc: Value, location: &Location) -> Result<Option<Object>, ManifestError> {
    let id = object_ref(&doc);
    let fail = |message: String| ManifestError { location: location.clone(), object: Some(id.clone()), messages: vec![message] };
    let api_version = match doc.get("apiVersion") {
        Some(Value::String(v)) => v.clone(),
        Some(_) => return Err(fail("apiVersion: must be a string".into())),
        None => {
            return Err(fail("apiVersion: Required value: apiVersion must be set".into()));
        }
    };
    let kind = match doc.get("kind") {
        Some(Value::String(k)) if !k.is_empty() => k.clone(),
        Some(Value::String(_)) | None => {
            return Err(fail("kind: Required value: kind must be set".into()));
        }
        Some(_) => return Err(fail("kind: must be a string".into())),
    };
    if !doc.get("metadata").is_none_or(Value::is_object) {
        return Err(fail("metadata: must be an object".into()));
    }
    let object = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => Object::Namespace(typed(doc).map_err(fail)?),
        ("v1", "Pod") => Object::Pod(typed(doc).map_err(fail)?),
        ("networking.k8s.io/v1", "NetworkPolicy") => Object::NetworkPolicy(typed(doc).map_err(fail)?),
        ("apps/v1", "Deployment") => Object::Deployment(typed(doc).map_err(fail)?),
        ("apps/v1", "ReplicaSet") => Object::ReplicaSet(typed(doc).map_err(fail)?),
        ("apps/v1", "StatefulSet") => Object::StatefulSet(typed(doc).map_err(fail)?),
        ("apps/v1", "DaemonSet") => Object::DaemonSet(typed(doc).map_err(fail)?),
        ("batch/v1", "Job") => Object::Job(typed(doc).map_err(fail)?),
        ("batch/v1", "CronJob") => Object::CronJob(typed(doc).map_err(fail)?),
        ("v1", "Service") => Object::Service(typed(doc).map_err(fail)?),
        ("discovery.k8s.io/v1", "EndpointSlice") => Object::EndpointSlice(typed(doc).map_err(fail)?),
        ("v1", "Node") => Object::Node(typed(doc).map_err(fail)?),
        ("networking.k8s.io/v1", "ServiceCIDR") => Object::ServiceCidr(typed(doc).map_err(fail)?),
        ("networking.k8s.io/v1", "Ingress") => Object::Ingress(typed(doc).map_err(fail)?),
        ("networking.k8s.io/v1", "IngressClass") => Object::IngressClass(typed(doc).map_err(fail)?),
        ("v1", "Secret") => Object::Secret(typed(doc).map_err(fail)?),
        ("gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1", "GatewayClass") => Object::GatewayClass(typed(doc).map_err(fail)?),
        ("gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1", "Gateway") => Object::Gateway(typed(doc).map_err(fail)?),
        ("gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1", "HTTPRoute") => Object::HttpRoute(typed(doc).map_err(fail)?),
        ("gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1", "ReferenceGrant") => Object::ReferenceGrant(typed(doc).map_err(fail)?),
        _ => return Ok(None),
    };
    Ok(Some(object))
}

/// Decodes into a k8s-openapi type; the error names the field path (`spec.containers[0].ports[0].containerPort`).
fn typed<T: serde::de::DeserializeOwned>(doc: Value) -> Result<Box<T>, String> {
    serde_path_to_error::deserialize(doc).map(Box::new).map_err(|e| {
        let path = e.path().to_string();
        if path == "." || path.is_empty() { e.inner().to_string() } else { format!("{path}: {}", e.inner()) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Vec<Loaded>, ManifestError> {
        load_str(text, Path::new("t.yaml"))
    }

    #[test]
    fn multi_document_yaml_and_unknown_kinds_are_skipped() {
        let got = load(
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: s}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a}\nspec: {containers: []}\n",
        )
        .unwrap();
        assert_eq!(got.len(), 2);
        assert!(matches!(got[0].object, Object::Namespace(_)));
        assert!(matches!(got[1].object, Object::Pod(_)));
        assert_eq!(got[1].location.document, 4);
    }

    #[test]
    fn other_groups_with_the_same_kind_are_skipped() {
        let got = load("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: x}\nspec: {selector: all()}\n").unwrap();
        assert!(got.is_empty());
    }

    #[test]
    fn lists_and_typed_lists_are_expanded() {
        let got = load(
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: a}\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: b}\n",
        )
        .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].location.item, Some(1));
        let got = load("apiVersion: v1\nkind: PodList\nitems:\n- metadata: {name: p}\n  spec: {containers: []}\n").unwrap();
        assert!(matches!(got[0].object, Object::Pod(_)));
    }

    #[test]
    fn json_streams_are_read() {
        let got = load_str(
            r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}} {"apiVersion":"v1","kind":"Namespace","metadata":{"name":"b"}}"#,
            Path::new("x.json"),
        )
        .unwrap();
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn type_errors_name_file_document_object_and_field() {
        let err = load(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop}\nspec:\n  containers:\n  - name: c\n    ports:\n    - containerPort: eighty\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("t.yaml: document 2: Pod shop/web: spec.containers[0].ports[0].containerPort: invalid type"), "{text}");
    }

    #[test]
    fn syntax_errors_name_the_document() {
        let err = load("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkind: [\n").unwrap_err();
        assert!(err.to_string().starts_with("t.yaml: document 2: invalid YAML"), "{err}");
    }

    #[test]
    fn missing_kind_and_scalars_are_errors() {
        assert!(load("apiVersion: v1\nmetadata: {name: a}\n").unwrap_err().to_string().contains("kind: Required value"));
        assert!(load("just a string\n").unwrap_err().to_string().contains("expected a Kubernetes object"));
    }

    #[test]
    fn directories_are_read_recursively_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("b.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n").unwrap();
        std::fs::write(dir.path().join("sub/a.yml"), "apiVersion: v1\nkind: Namespace\nmetadata: {name: c}\n").unwrap();
        std::fs::write(dir.path().join("a.json"), r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}"#).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
        let got = load_paths(&[dir.path()]).unwrap();
        let names: Vec<String> = got
            .iter()
            .map(|l| match &l.object {
                Object::Namespace(n) => n.metadata.name.clone().unwrap(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(matches!(load_paths(&[dir.path().join("nope")]), Err(LoadError::NotFound(_))));
    }
}
