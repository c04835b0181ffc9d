//! `podnet lab ui`: a browser view of a lab, served by podnet itself — one self-contained page
//! (no CDN: it works offline) with the nodes and pods, the Services and their endpoints, the
//! NetworkPolicy reachability matrix and the live flows; clicking a pair runs `podnet trace` and
//! shows its five steps. The page reads three JSON endpoints:
//!
//! - `GET /api/state`: nodes, pods, Services with endpoints, the matrix;
//! - `GET /api/flows?since=RFC3339`: the flows recorded since then (`podnet observe`'s, Hubble's shape);
//! - `GET /api/trace?from=NS/POD&to=TARGET`: one trace (`podnet trace -o json`, with `fix`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Args;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use lab::LabName;
use serde_json::{Value, json};

/// The page: HTML, CSS and script in one file.
const PAGE: &str = include_str!("lab_ui.html");

#[derive(Args)]
pub struct UiArgs {
    /// The lab (default: the only one up, else `podnet`).
    #[arg(long)]
    name: Option<LabName>,
    /// Where to serve the page.
    #[arg(long, default_value = "127.0.0.1:8089")]
    listen: SocketAddr,
}

pub(crate) fn ui(a: UiArgs) -> Result<ExitCode> {
    crate::lab_cmd::need_root()?;
    let lab = crate::lab_cmd::which_lab(a.name.as_ref())?;
    if !lab::state::dir(&lab).exists() {
        bail!("no lab named {:?} is up (see `podnet lab list`)", lab.as_str());
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.listen).await.with_context(|| format!("listening on {}", a.listen))?;
        eprintln!("Serving lab {lab} at http://{}/ (Ctrl-C to stop)", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let lab = lab.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| handle(lab.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    if let Ok(v) = "no-store".parse() {
        r.headers_mut().insert(hyper::header::CACHE_CONTROL, v);
    }
    r
}

fn json_reply(result: Result<Value>) -> Response<Full<Bytes>> {
    match result {
        Ok(v) => reply(StatusCode::OK, "application/json", v.to_string()),
        Err(e) => reply(StatusCode::BAD_REQUEST, "application/json", json!({"error": format!("{e:#}")}).to_string()),
    }
}

async fn handle(lab: LabName, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let query: Vec<(String, String)> = form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes()).into_owned().collect();
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    // The answers read state files, the kernel and the pods' namespaces: blocking work.
    let blocking = |f: Box<dyn FnOnce() -> Result<Value> + Send>| async move {
        json_reply(tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(anyhow::anyhow!("the request's worker failed: {e}"))))
    };
    Ok(match req.uri().path() {
        "/" => reply(StatusCode::OK, "text/html; charset=utf-8", PAGE),
        "/api/state" => blocking(Box::new(move || state_json(&lab))).await,
        "/api/flows" => {
            let since = param("since").unwrap_or_default();
            blocking(Box::new(move || {
                let flows: Vec<Value> =
                    crate::observe_cmd::recorded(&lab).into_iter().filter(|f| f["time"].as_str().is_some_and(|t| t > since.as_str())).collect();
                Ok(json!({ "flows": flows }))
            }))
            .await
        }
        "/api/trace" => match (param("from"), param("to")) {
            (Some(from), Some(to)) => blocking(Box::new(move || crate::trace_cmd::lab_trace_json(&lab, &from, &to))).await,
            _ => json_reply(Err(anyhow::anyhow!("give from=NS/POD and to=TARGET"))),
        },
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "404 page not found\n"),
    })
}

/// Everything the page draws, read from the lab's state.
fn state_json(lab: &LabName) -> Result<Value> {
    let st = lab::state::load(lab)?;
    let view = st.cluster_view();
    let nodes: Vec<Value> = st.plan.nodes.iter().map(|n| json!({"name": n.name, "ip": n.ip, "pod_cidr": n.pod_cidr.to_string()})).collect();
    let pods: Vec<Value> = st
        .plan
        .pods
        .iter()
        .zip(&st.pod_ips)
        .map(|(p, ip)| {
            let ports: Vec<String> = p.ports.iter().map(|c| format!("{}/{}", c.port, c.protocol.as_str())).collect();
            json!({"namespace": p.namespace, "name": p.name, "node": p.node, "ip": ip, "ready": p.ready, "terminating": p.terminating,
                   "labels": p.labels, "ports": ports})
        })
        .collect();
    let slices = st.endpoint_slices();
    let services: Vec<Value> = st
        .services
        .iter()
        .map(|s| {
            let (ns, name) = (s.metadata.namespace.clone().unwrap_or_default(), s.metadata.name.clone().unwrap_or_default());
            let spec = s.spec.clone().unwrap_or_default();
            let ports: Vec<String> = spec.ports.iter().flatten().map(|p| format!("{}/{}", p.port, p.protocol.as_deref().unwrap_or("TCP"))).collect();
            let endpoints: Vec<Value> = slices
                .iter()
                .filter(|sl| model::endpoints::service_of(sl) == Some((ns.as_str(), name.as_str())))
                .flat_map(|sl| sl.endpoints.iter())
                .map(|e| {
                    json!({"ip": e.addresses.first(), "ready": e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
                           "pod": e.target_ref.as_ref().and_then(|t| t.name.clone()), "node": e.node_name})
                })
                .collect();
            json!({"namespace": ns, "name": name, "type": spec.type_, "cluster_ip": spec.cluster_ip, "ports": ports, "endpoints": endpoints})
        })
        .collect();
    Ok(json!({"lab": lab.as_str(), "nodes": nodes, "pods": pods, "services": services, "matrix": matrix_json(&view)?}))
}

/// The reachability matrix by pod pair: allowed when the policies let the client reach the
/// destination on at least one port it declares (any port, when it declares none).
fn matrix_json(view: &model::ClusterState) -> Result<Value> {
    let policies = policy::PolicySet::compile(view)
        .map_err(|errors| anyhow::anyhow!("invalid NetworkPolicy: {}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")))?;
    let ports = policy::declared_ports(view);
    let matrix = policy::compute(view, &policies, &ports);
    let pods: Vec<String> = view.pods.iter().map(|p| format!("{}/{}", p.namespace, p.name)).collect();
    let allowed: Vec<Vec<bool>> = (0..view.pods.len())
        .map(|from| {
            (0..view.pods.len())
                .map(|to| {
                    let own = &view.pods[to].ports;
                    (0..ports.len()).filter(|&i| own.is_empty() || own.iter().any(|c| (c.port, c.protocol) == ports[i])).any(|i| matrix.allowed(i, from, to))
                })
                .collect()
        })
        .collect();
    Ok(json!({"pods": pods, "allowed": allowed}))
}
