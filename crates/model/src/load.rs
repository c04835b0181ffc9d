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

/// Loads objects already parsed (as an API server's watch gives them), each through the same
/// decoding, defaults and checks as a manifest; `source` names where they came from in errors.
pub fn load_values(values: impl IntoIterator<Item = Value>, source: &Path) -> Result<Vec<Loaded>, ManifestError> {
    let mut out = Vec::new();
    for (i, doc) in values.into_iter().enumerate() {
        decode_document(doc, Location { file: source.to_owned(), document: i + 1, item: None }, &mut out)?;
    }
    Ok(out)
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
        // The YAML parser takes time quadratic in the nesting of flow collections (`[[[[…`) before
        // it reaches its own depth limit; refuse such a file first, in one linear pass.
        if let Some(line) = too_deep_flow(text, MAX_NESTING) {
            return Err(plain_error(at(1), format!("invalid YAML: collections nested deeper than {MAX_NESTING} levels at line {line}")));
        }
        for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
            let doc = Value::deserialize(doc).map_err(|e| plain_error(at(i + 1), format!("invalid YAML: {e}")))?;
            decode_document(doc, at(i + 1), &mut out)?;
        }
    }
    Ok(out)
}

/// The deepest nesting a manifest may have (the YAML parser's own recursion limit).
pub const MAX_NESTING: usize = 128;

/// The line where flow collections (`[`, `{`) nest deeper than `limit`, if they do. Brackets
/// count where YAML opens a collection (at a line's start, after `:`, `-`, `?`, `,` or another
/// bracket); quoted scalars, comments and block scalars (`|`, `>`) are skipped.
fn too_deep_flow(text: &str, limit: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut block_scalar: Option<usize> = None;
    for (n, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if let Some(parent) = block_scalar {
            if line.trim().is_empty() || indent > parent {
                continue;
            }
            block_scalar = None;
        }
        let bytes = line.as_bytes();
        let mut structural = true; // at a position where a collection or a quoted scalar may start
        let mut i = indent;
        while i < bytes.len() {
            let c = bytes[i];
            match c {
                b' ' | b'\t' => {}
                b'#' if i == 0 || bytes[i - 1] == b' ' || bytes[i - 1] == b'\t' => break,
                b'[' | b'{' if structural => {
                    depth += 1;
                    if depth > limit {
                        return Some(n + 1);
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                b'"' | b'\'' if structural => {
                    // Skip to the closing quote on this line ('' and \" escape).
                    i += 1;
                    while i < bytes.len() {
                        if bytes[i] == b'\\' && c == b'"' {
                            i += 1;
                        } else if bytes[i] == c {
                            if c == b'\'' && bytes.get(i + 1) == Some(&b'\'') {
                                i += 1;
                            } else {
                                break;
                            }
                        }
                        i += 1;
                    }
                    structural = false;
                }
                b'|' | b'>' if structural && depth == 0 => {
                    block_scalar = Some(indent);
                    break;
                }
                _ => {}
            }
            // Indicators keep (or make) the next position structural; anything else is text.
            structural = match c {
                b' ' | b'\t' | b'[' | b'{' | b'"' | b'\'' => structural && !matches!(c, b'"' | b'\''),
                b':' | b'-' | b'?' | b',' => true,
                _ => false,
            };
            i += 1;
        }
    }
    None
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
    if namespace.is_empty() && crate::kinds::is_namespaced(&kind) {
        namespace = crate::cluster::DEFAULT_NAMESPACE.to_owned();
    }
    ObjectRef { kind, namespace, name: s(meta.and_then(|m| m.get("name"))) }
}

fn decode_object(mut doc: Value, location: &Location) -> Result<Option<Object>, ManifestError> {
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
    match crate::kinds::served(&api_version, &kind) {
        crate::kinds::Served::Yes => {}
        crate::kinds::Served::Custom => return Ok(None),
        crate::kinds::Served::No => return Err(fail(format!("no matches for kind {kind:?} in version {api_version:?} (ensure CRDs are installed first)"))),
    }
    if let Some(message) = annotations_too_long(&doc) {
        return Err(fail(message));
    }
    // The object itself carries its namespace from here on (`default` when the manifest has
    // none, as kubectl applies it), so every consumer of the object sees the same one.
    if crate::kinds::is_namespaced(&kind)
        && let Some(meta) = doc.as_object_mut().map(|d| d.entry("metadata").or_insert_with(|| Value::Object(Default::default())))
        && let Some(meta) = meta.as_object_mut()
        && meta.get("namespace").is_none_or(|n| n.is_null() || n.as_str() == Some(""))
    {
        meta.insert("namespace".into(), Value::String(id.namespace.clone()));
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

/// The API server's limit on an object's annotations: keys and values together (apimachinery's
/// `TotalAnnotationSizeLimitB`).
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

fn annotations_too_long(doc: &Value) -> Option<String> {
    let annotations = doc.get("metadata")?.get("annotations")?.as_object()?;
    let total: usize = annotations.iter().map(|(k, v)| k.len() + v.as_str().map_or(0, str::len)).sum();
    (total > TOTAL_ANNOTATION_SIZE_LIMIT).then(|| format!("metadata.annotations: Too long: may not be more than {TOTAL_ANNOTATION_SIZE_LIMIT} bytes"))
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
    fn deep_flow_nesting_is_refused_in_linear_time() {
        let deep = |n: usize| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\ndata: {}{}\n", "[".repeat(n), "]".repeat(n));
        let started = std::time::Instant::now();
        let err = load(&deep(200_000)).unwrap_err().to_string();
        assert!(err.contains("nested deeper than 128 levels at line 4"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "took {:?}", started.elapsed());
        let err = load(&format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\ndata:\n  k: {}x{}\n", "{a: ".repeat(5000), "}".repeat(5000)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nested deeper than 128 levels"), "{err}");
        // Brackets that open nothing: in plain scalars, quotes, comments and block scalars.
        let fine = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}} # {0}\ndata:\n  a: x{0}\n  b: \"{0}\"\n  c: '{0}'\n  d: |\n    {0}\n    {0}\n  e: [[1], {{f: [2]}}]\n",
            "[".repeat(300)
        );
        assert!(load(&fine).is_ok(), "{:?}", load(&fine).err());
        assert!(load(&deep(100)).is_ok());
    }

    #[test]
    fn kinds_no_cluster_serves_are_errors_naming_the_document() {
        for (doc, kind, version) in [
            ("apiVersion: v1\nkind: Podd\nmetadata: {name: x}\n", "Podd", "v1"),
            ("apiVersion: apps/v1beta1\nkind: Deployment\nmetadata: {name: x}\n", "Deployment", "apps/v1beta1"),
            ("apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: x}\n", "Ingress", "extensions/v1beta1"),
        ] {
            let err = load(&format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\n---\n{doc}")).unwrap_err().to_string();
            assert!(err.contains(&format!("no matches for kind \"{kind}\" in version \"{version}\"")), "{err}");
            assert!(err.contains("t.yaml") && err.contains('2'), "names the file and document: {err}");
        }
    }

    #[test]
    fn namespaced_objects_without_a_namespace_get_default_in_the_object_itself() {
        let got = load("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: t, namespace: \"\"}\n---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: nginx}\n").unwrap();
        let Object::Service(svc) = &got[0].object else { panic!("{:?}", got[0].object) };
        assert_eq!(svc.metadata.namespace.as_deref(), Some("default"));
        let Object::Secret(secret) = &got[1].object else { panic!() };
        assert_eq!(secret.metadata.namespace.as_deref(), Some("default"));
        let Object::IngressClass(class) = &got[2].object else { panic!() };
        assert_eq!(class.metadata.namespace, None, "cluster-scoped kinds get no namespace");
    }

    #[test]
    fn annotations_over_the_api_servers_limit_are_refused() {
        let big = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT);
        let err =
            load(&format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p, annotations: {{a: {big}}}}}\nspec: {{containers: []}}\n")).unwrap_err().to_string();
        assert!(err.contains("metadata.annotations: Too long: may not be more than 262144 bytes"), "{}", &err[..200.min(err.len())]);
        let fits = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT - 1);
        assert!(load(&format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p, annotations: {{a: {fits}}}}}\nspec: {{containers: []}}\n")).is_ok());
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
