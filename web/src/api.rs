//! The control API: JSON over HTTP, served on the instance's Unix socket (for the CLI) and on
//! the web address (for the page). One API for both, so the page can do nothing the CLI cannot.
//!
//! The web crate never touches the kernel: everything goes through [`Backend`], which the lab
//! implements.

use std::{convert::Infallible, pin::Pin, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::{get, post},
};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub type BoxFut<'a, T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// An error for the API's clients: a status, a message, and structured details (e.g. the
/// located policy errors, which the editor shows at their lines).
#[derive(Debug, Serialize, Deserialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: u16,
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(status: u16, error: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            details: None,
        }
    }
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(404, what)
    }
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self)).into_response()
    }
}

#[derive(Debug, Default, Deserialize, Serialize, Clone)]
pub struct FlowFilter {
    /// `NAMESPACE/POD` or `POD` (matches source or destination).
    pub pod: Option<String>,
    /// FORWARDED, DROPPED, AUDIT, REDIRECTED, ...
    pub verdict: Option<String>,
    /// Only flows of this L7 type or L3_L4.
    #[serde(rename = "type")]
    pub flow_type: Option<String>,
    pub limit: Option<usize>,
    /// Only flows after this RFC 3339 time.
    pub since: Option<String>,
}

impl FlowFilter {
    pub fn matches(&self, flow: &Value) -> bool {
        if let Some(v) = &self.verdict
            && !flow["verdict"]
                .as_str()
                .is_some_and(|f| f.eq_ignore_ascii_case(v))
        {
            return false;
        }
        if let Some(t) = &self.flow_type
            && !flow["Type"]
                .as_str()
                .is_some_and(|f| f.eq_ignore_ascii_case(t))
        {
            return false;
        }
        if let Some(since) = &self.since
            && flow["time"].as_str().is_some_and(|t| t <= since.as_str())
        {
            return false;
        }
        if let Some(p) = &self.pod {
            let (ns, name) = match p.split_once('/') {
                Some((ns, n)) => (Some(ns), n),
                None => (None, p.as_str()),
            };
            let hit = |side: &Value| {
                side["pod_name"].as_str() == Some(name)
                    && ns.is_none_or(|ns| side["namespace"].as_str() == Some(ns))
            };
            if !hit(&flow["source"]) && !hit(&flow["destination"]) {
                return false;
            }
        }
        true
    }
}

#[derive(Debug, Deserialize, Serialize, Clone)]
pub struct ApplyRequest {
    /// Where the text came from (a file name, `-`, or `web editor`), for error messages.
    pub source: String,
    pub text: String,
    /// Validate and resolve, but change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Default, Deserialize, Serialize, Clone)]
pub struct DeleteRequest {
    pub name: Option<String>,
    pub namespace: Option<String>,
    /// Delete the policies named in this manifest text.
    pub text: Option<String>,
    pub source: Option<String>,
    #[serde(default)]
    pub all: bool,
}

#[derive(Debug, Deserialize, Serialize, Clone)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Serialize, Clone)]
pub struct ExecResult {
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed_ms: u64,
    pub timed_out: bool,
}

/// What the lab provides to the API and the page.
pub trait Backend: Send + Sync + 'static {
    /// Instance name, web address, counts.
    fn status(&self) -> Value;
    fn pods(&self) -> Value;
    fn pod(&self, namespace: &str, name: &str) -> Option<Value>;
    /// How to enter a pod (namespace paths), for `lab exec`.
    fn pod_context(&self, namespace: &str, name: &str) -> Option<Value>;
    fn services(&self) -> Value;
    fn endpoints(&self) -> Value;
    fn identities(&self) -> Value;
    fn policies(&self) -> Value;
    fn apply_policies(&self, req: ApplyRequest) -> BoxFut<'_, Result<Value, ApiError>>;
    fn delete_policies(&self, req: DeleteRequest) -> BoxFut<'_, Result<Value, ApiError>>;
    fn set_policy_audit(
        &self,
        namespace: &str,
        name: &str,
        audit: bool,
    ) -> BoxFut<'_, Result<Value, ApiError>>;
    fn flows(&self, filter: &FlowFilter) -> Vec<Arc<Value>>;
    fn subscribe_flows(&self) -> tokio::sync::broadcast::Receiver<Arc<Value>>;
    /// Prometheus text format.
    fn metrics(&self) -> String;
    /// Runs a built-in ship move in a pod; the outcome is the ship client's JSON.
    fn ship(&self, pod: &str, body: Value) -> BoxFut<'_, Result<Value, ApiError>>;
    /// Runs a program in a pod and captures its output.
    fn exec(&self, pod: &str, req: ExecRequest) -> BoxFut<'_, Result<ExecResult, ApiError>>;
    /// Extra JSON routes (`/api/x/...`) the lab adds (lessons, bench, audit...).
    fn extension(&self, path: &str, body: Option<Value>) -> BoxFut<'_, Result<Value, ApiError>>;
}

pub type SharedBackend = Arc<dyn Backend>;

/// The API routes (mounted at the root by [`crate::router`]).
pub fn routes() -> Router<SharedBackend> {
    Router::new()
        .route(
            "/api/status",
            get(|State(b): State<SharedBackend>| async move { Json(b.status()) }),
        )
        .route(
            "/api/pods",
            get(|State(b): State<SharedBackend>| async move { Json(b.pods()) }),
        )
        .route("/api/pods/{ns}/{name}", get(pod))
        .route("/api/pods/{ns}/{name}/context", get(pod_context))
        .route("/api/pods/{ns}/{name}/exec", post(exec))
        .route("/api/pods/{ns}/{name}/ship", post(ship))
        .route(
            "/api/services",
            get(|State(b): State<SharedBackend>| async move { Json(b.services()) }),
        )
        .route(
            "/api/endpoints",
            get(|State(b): State<SharedBackend>| async move { Json(b.endpoints()) }),
        )
        .route(
            "/api/identities",
            get(|State(b): State<SharedBackend>| async move { Json(b.identities()) }),
        )
        .route(
            "/api/policies",
            get(|State(b): State<SharedBackend>| async move { Json(b.policies()) })
                .post(apply)
                .delete(delete),
        )
        .route("/api/policies/{ns}/{name}/audit", post(set_audit))
        .route("/api/flows", get(flows))
        .route("/api/flows/stream", get(flow_stream))
        .route("/api/x/{*path}", get(extension_get).post(extension_post))
        .route("/metrics", get(metrics))
}

async fn pod(
    State(b): State<SharedBackend>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    b.pod(&ns, &name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("pod {ns}/{name} not found")))
}

async fn pod_context(
    State(b): State<SharedBackend>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    b.pod_context(&ns, &name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("pod {ns}/{name} not found")))
}

async fn exec(
    State(b): State<SharedBackend>,
    Path((ns, name)): Path<(String, String)>,
    Json(req): Json<ExecRequest>,
) -> Result<Json<ExecResult>, ApiError> {
    b.exec(&format!("{ns}/{name}"), req).await.map(Json)
}

async fn ship(
    State(b): State<SharedBackend>,
    Path((ns, name)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    b.ship(&format!("{ns}/{name}"), body).await.map(Json)
}

async fn apply(
    State(b): State<SharedBackend>,
    Json(req): Json<ApplyRequest>,
) -> Result<Json<Value>, ApiError> {
    b.apply_policies(req).await.map(Json)
}

async fn delete(
    State(b): State<SharedBackend>,
    Query(q): Query<DeleteRequest>,
    body: Option<Json<DeleteRequest>>,
) -> Result<Json<Value>, ApiError> {
    let req = body.map(|Json(b)| b).unwrap_or(q);
    b.delete_policies(req).await.map(Json)
}

#[derive(Deserialize)]
struct AuditBody {
    audit: bool,
}

async fn set_audit(
    State(b): State<SharedBackend>,
    Path((ns, name)): Path<(String, String)>,
    Json(body): Json<AuditBody>,
) -> Result<Json<Value>, ApiError> {
    b.set_policy_audit(&ns, &name, body.audit).await.map(Json)
}

async fn flows(
    State(b): State<SharedBackend>,
    Query(filter): Query<FlowFilter>,
) -> Json<Vec<Arc<Value>>> {
    Json(b.flows(&filter))
}

/// Live flows as server-sent events (`event: flow`, data = the flow's JSON).
async fn flow_stream(
    State(b): State<SharedBackend>,
    Query(filter): Query<FlowFilter>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = b.subscribe_flows();
    let stream = futures_util::stream::unfold((rx, filter), |(mut rx, filter)| async move {
        loop {
            match rx.recv().await {
                Ok(flow) if filter.matches(&flow) => {
                    let ev = Event::default().event("flow").data(flow.to_string());
                    return Some((Ok(ev), (rx, filter)));
                }
                Ok(_) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    let ev = Event::default().event("lagged").data(n.to_string());
                    return Some((Ok(ev), (rx, filter)));
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn metrics(State(b): State<SharedBackend>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        b.metrics(),
    )
}

async fn extension_get(
    State(b): State<SharedBackend>,
    Path(path): Path<String>,
) -> Result<Json<Value>, ApiError> {
    b.extension(&path, None).await.map(Json)
}

async fn extension_post(
    State(b): State<SharedBackend>,
    Path(path): Path<String>,
    body: Option<Json<Value>>,
) -> Result<Json<Value>, ApiError> {
    b.extension(&path, Some(body.map(|Json(v)| v).unwrap_or(Value::Null)))
        .await
        .map(Json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flow_filter() {
        let flow = json!({
            "verdict": "DROPPED", "Type": "L3_L4", "time": "2026-11-21T10:00:00Z",
            "source": {"pod_name": "xwing", "namespace": "default"},
            "destination": {"pod_name": "deathstar-1", "namespace": "default"}
        });
        let f = |pod: Option<&str>, verdict: Option<&str>| FlowFilter {
            pod: pod.map(Into::into),
            verdict: verdict.map(Into::into),
            ..Default::default()
        };
        assert!(f(Some("xwing"), Some("dropped")).matches(&flow));
        assert!(f(Some("default/deathstar-1"), None).matches(&flow));
        assert!(!f(Some("kube-system/deathstar-1"), None).matches(&flow));
        assert!(!f(None, Some("FORWARDED")).matches(&flow));
        let since = FlowFilter {
            since: Some("2026-11-21T10:00:00Z".into()),
            ..Default::default()
        };
        assert!(!since.matches(&flow));
    }
}
