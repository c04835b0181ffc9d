//! Serving one request an HTTPRoute rule took: its filters (RequestRedirect, URLRewrite,
//! Request/ResponseHeaderModifier, RequestMirror), a weighted choice among its backends (500 for
//! the share of invalid ones, 500 without backends), the endpoints of the chosen Service (503
//! without any), and `timeouts.request` (504).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use model::gateway_api::{HeaderModifier, PathModifier};

use crate::httproute::{Entry, PathMatch, Target};
use crate::server::{Body, Shared, Snapshot, read_body, send, strip_hop_by_hop, text, upstream_headers};

/// Requests with no timeout of their own get this (Gateway API leaves it to the implementation).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

fn modify(headers: &mut HeaderMap, m: &HeaderModifier) {
    for h in &m.set {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_str(&h.value)) {
            headers.insert(n, v);
        }
    }
    for h in &m.add {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_str(&h.value)) {
            headers.append(n, v);
        }
    }
    for name in &m.remove {
        headers.remove(name.as_str());
    }
}

/// A path rewritten by a `ReplaceFullPath` / `ReplacePrefixMatch` modifier; the prefix is the
/// match's PathPrefix (element-wise, as matched).
fn new_path(path: &str, matched: &PathMatch, m: &PathModifier) -> String {
    match (m.type_.as_str(), matched) {
        ("ReplaceFullPath", _) => m.replace_full_path.clone().unwrap_or_else(|| "/".into()),
        ("ReplacePrefixMatch", PathMatch::Prefix(prefix)) => {
            let replacement = m.replace_prefix_match.clone().unwrap_or_else(|| "/".into());
            let prefix = prefix.trim_end_matches('/');
            let rest = &path[prefix.len().min(path.len())..];
            match (replacement.trim_end_matches('/'), rest) {
                ("", "") => "/".into(),
                ("", r) => r.to_owned(),
                (rep, r) => format!("{rep}{r}"),
            }
        }
        _ => path.to_owned(),
    }
}

/// Serves a request an HTTPRoute rule took.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve(shared: &Shared, snapshot: &Snapshot, req: Request<Incoming>, entry: &Entry, peer: SocketAddr, https: bool, port: u16, host: &str) -> (Response<Body>, Option<(String, SocketAddr)>) {
    let rule = Arc::clone(&entry.rule);
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let mut upstream_path = path.clone();
    let mut host_override: Option<String> = None;
    let mut response_mods: Vec<&HeaderModifier> = Vec::new();
    let mut mirrors = Vec::new();
    for f in &rule.filters {
        match f.type_.as_str() {
            "RequestRedirect" => {
                let Some(r) = &f.request_redirect else { continue };
                let scheme = r.scheme.clone().unwrap_or_else(|| if https { "https".into() } else { "http".into() });
                let hostname = r.hostname.clone().unwrap_or_else(|| host.to_owned());
                // No port: the scheme's well-known one when the scheme is given, else the listener's.
                let port = match (r.port, &r.scheme) {
                    (Some(p), _) => Some(p),
                    (None, Some(_)) => None,
                    (None, None) => Some(port),
                };
                let port = port.filter(|p| !((scheme == "http" && *p == 80) || (scheme == "https" && *p == 443)));
                let location_path = r.path.as_ref().map_or(path.clone(), |m| new_path(&path, &entry.m.path, m));
                let location = match port {
                    Some(p) => format!("{scheme}://{hostname}:{p}{location_path}{query}"),
                    None => format!("{scheme}://{hostname}{location_path}{query}"),
                };
                let status = StatusCode::from_u16(r.status_code.unwrap_or(302)).unwrap_or(StatusCode::FOUND);
                let mut resp = text(status, "");
                if let Ok(v) = HeaderValue::from_str(&location) {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
                return (resp, None);
            }
            "RequestHeaderModifier" => {
                if let Some(m) = &f.request_header_modifier {
                    modify(&mut parts.headers, m);
                }
            }
            "ResponseHeaderModifier" => response_mods.extend(f.response_header_modifier.as_ref()),
            "URLRewrite" => {
                if let Some(u) = &f.url_rewrite {
                    host_override.clone_from(&u.hostname);
                    if let Some(m) = &u.path {
                        upstream_path = new_path(&path, &entry.m.path, m);
                    }
                }
            }
            "RequestMirror" => mirrors.extend(f.request_mirror.as_ref().map(|m| m.backend_ref.clone())),
            _ => {}
        }
    }
    let body = match read_body(body, None).await {
        Ok(b) => b,
        Err(status) => return (text(status, "400 Bad Request\n"), None),
    };
    // A weighted choice; an invalid backend answers 500 for its share.
    let total: u64 = rule.backends.iter().map(|(_, w)| u64::from(*w)).sum();
    if total == 0 {
        return (text(StatusCode::INTERNAL_SERVER_ERROR, "500 Internal Server Error: no backend\n"), None);
    }
    let roll = shared.next.fetch_add(1, Ordering::Relaxed) as u64;
    let mut pick = roll.wrapping_mul(0x9E37_79B9_7F4A_7C15) % total;
    let chosen = rule.backends.iter().find(|(_, w)| {
        let take = pick < u64::from(*w);
        pick = pick.saturating_sub(u64::from(*w));
        take
    });
    let Some((Target::Service { namespace, name, port: service_port }, _)) = chosen else {
        let why = match chosen {
            Some((Target::Invalid(why), _)) => why.clone(),
            _ => "no backend".into(),
        };
        return (text(StatusCode::INTERNAL_SERVER_ERROR, &format!("500 Internal Server Error: {why}\n")), None);
    };
    let endpoints = match snapshot.backends.endpoints(namespace, name, service_port) {
        Ok(e) => e,
        Err(why) => return (text(StatusCode::SERVICE_UNAVAILABLE, &format!("503 Service Unavailable: {why}\n")), None),
    };
    let endpoint = endpoints[(roll as usize) % endpoints.len()];
    let upstream_name = format!("{namespace}-{name}-{}", match service_port {
        crate::routes::ServicePort::Number(n) => n.to_string(),
        crate::routes::ServicePort::Name(n) => n.clone(),
    });
    let mut headers = upstream_headers(&parts, peer, host, port, https, u32::try_from(roll % 100_000).unwrap_or(0));
    if let Some(h) = host_override.as_deref().and_then(|h| HeaderValue::from_str(h).ok()) {
        headers.insert(header::HOST, h);
    }
    // Mirrors get a copy; their answers are dropped.
    for m in mirrors {
        let ns = m.namespace.clone().unwrap_or_else(|| entry.source.namespace.clone());
        let Some(port) = m.port else { continue };
        if let Ok(eps) = snapshot.backends.endpoints(&ns, &m.name, &crate::routes::ServicePort::Number(port)) {
            let target = eps[(roll as usize) % eps.len()];
            if let Ok(uri) = format!("http://{target}{upstream_path}{query}").parse::<Uri>() {
                let (client, method, headers, body) = (shared.http1.clone(), parts.method.clone(), headers.clone(), body.clone());
                tokio::spawn(async move {
                    let _ = send(&client, method, uri, headers, body, Duration::from_secs(10)).await;
                });
            }
        }
    }
    let Ok(uri) = format!("http://{endpoint}{upstream_path}{query}").parse::<Uri>() else {
        return (text(StatusCode::BAD_REQUEST, "400 Bad Request\n"), None);
    };
    let response = match send(&shared.http1, parts.method.clone(), uri, headers, body, rule.timeout.unwrap_or(DEFAULT_TIMEOUT)).await {
        Ok(r) => r,
        Err(e) => return (e, Some((upstream_name, endpoint))),
    };
    let (mut rparts, rbody) = response.into_parts();
    strip_hop_by_hop(&mut rparts.headers);
    for m in response_mods {
        modify(&mut rparts.headers, m);
    }
    (Response::from_parts(rparts, rbody.boxed()), Some((upstream_name, endpoint)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_replacement_keeps_the_rest_of_the_path() {
        let m = |rep: &str| PathModifier { type_: "ReplacePrefixMatch".into(), replace_full_path: None, replace_prefix_match: Some(rep.into()) };
        let prefix = PathMatch::Prefix("/prefix/one".into());
        assert_eq!(new_path("/prefix/one/two", &prefix, &m("/one")), "/one/two");
        assert_eq!(new_path("/prefix/one", &prefix, &m("/one")), "/one");
        assert_eq!(new_path("/prefix/one/two", &prefix, &m("/")), "/two");
        assert_eq!(new_path("/prefix/one", &prefix, &m("/")), "/");
        let full = PathModifier { type_: "ReplaceFullPath".into(), replace_full_path: Some("/full".into()), replace_prefix_match: None };
        assert_eq!(new_path("/anything/at/all", &prefix, &full), "/full");
    }
}
