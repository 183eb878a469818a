//! The control API: JSON over HTTP, served on the instance's Unix socket (for the CLI) and on
//! the web address (for the page). One API for both, so the page can do nothing the CLI cannot.
//!
//! The web crate never touches the kernel: everything goes through [`Backend`], which the lab
//! implements with the plain types of the `model` crate. JSON is made here, at the edge, and
//! nowhere behind it.

use std::{convert::Infallible, pin::Pin, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::{MethodRouter, get, post},
};
use futures_util::Stream;
pub use model::{ApplyRequest, DeleteRequest, ExecRequest, ExecResult, FlowFilter};
use model::{
    ApplyResult, AuditMode, AuditRequest, AuditSwitch, ConntrackEntry, DeleteResult, Endpoint,
    Finding, Flow, Host, Identity, LimitStatus, Located, Matrix, MatrixRequest, Pod, PodContext,
    PolicyAudit, PolicyEntry, PrefilterChange, PrefilterState, Service, ShipRequest, ShipResult,
    Status,
};
use serde::{Deserialize, Serialize};

pub type BoxFut<'a, T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// An error for the API's clients: a status, a message, and structured details (the located
/// policy errors, which the editor shows at their lines).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: u16,
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub details: Option<Vec<Located>>,
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
    pub fn with_details(mut self, details: Vec<Located>) -> Self {
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

/// Whether the L7 proxy runs (`POST /api/x/proxy/stop`, `/start`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProxyState {
    pub proxy: ProxyRun,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProxyRun {
    Running,
    Stopped,
}

/// What the lab provides to the API and the page.
pub trait Backend: Send + Sync + 'static {
    /// Instance name, web address, counts.
    fn status(&self) -> Status;
    /// The instance's name alone (every page shows it): unlike [`Backend::status`], it need not
    /// wait for the pods' and services' locks, which a readiness sweep may hold for a while.
    fn instance(&self) -> String {
        self.status().instance
    }
    fn pods(&self) -> Vec<Pod>;
    fn pod(&self, namespace: &str, name: &str) -> Option<Pod>;
    /// The hosts outside the cluster (the attacker, the monitor).
    fn hosts(&self) -> Vec<Host>;
    /// How to enter a pod or an outside host (namespace paths), for `lab exec`.
    fn pod_context(&self, namespace: &str, name: &str) -> Option<PodContext>;
    fn services(&self) -> Vec<Service>;
    fn endpoints(&self) -> Vec<Endpoint>;
    fn identities(&self) -> Vec<Identity>;
    fn conntrack(&self) -> Vec<ConntrackEntry>;
    fn policies(&self) -> Vec<PolicyEntry>;
    fn apply_policies(&self, req: ApplyRequest) -> BoxFut<'_, Result<ApplyResult, ApiError>>;
    fn delete_policies(&self, req: DeleteRequest) -> BoxFut<'_, Result<DeleteResult, ApiError>>;
    fn set_policy_audit(
        &self,
        namespace: &str,
        name: &str,
        audit: bool,
    ) -> BoxFut<'_, Result<PolicyAudit, ApiError>>;
    /// Lab-wide audit mode.
    fn audit_mode(&self) -> AuditMode;
    fn set_audit_mode(&self, on: bool) -> BoxFut<'_, Result<AuditMode, ApiError>>;
    /// Connection limits with their counts.
    fn limits(&self) -> Vec<LimitStatus>;
    fn prefilter(&self) -> PrefilterState;
    fn change_prefilter(
        &self,
        change: PrefilterChange,
    ) -> BoxFut<'_, Result<PrefilterState, ApiError>>;
    /// `lab audit` of the running lab with `req`'s policy files applied on top.
    fn audit(&self, req: AuditRequest) -> BoxFut<'_, Result<Vec<Finding>, ApiError>>;
    /// The connectivity matrix, predicted and (with `req.probe`) probed.
    fn matrix(&self, req: MatrixRequest) -> BoxFut<'_, Result<Matrix, ApiError>>;
    fn flows(&self, filter: &FlowFilter) -> Vec<Arc<Flow>>;
    fn subscribe_flows(&self) -> tokio::sync::broadcast::Receiver<Arc<Flow>>;
    /// The metrics in the OpenMetrics text format (which Prometheus reads).
    fn metrics(&self) -> String;
    /// Runs a built-in ship move in a pod.
    fn ship(&self, pod: &str, req: ShipRequest) -> BoxFut<'_, Result<ShipResult, ApiError>>;
    /// Runs a program in a pod and captures its output.
    fn exec(&self, pod: &str, req: ExecRequest) -> BoxFut<'_, Result<ExecResult, ApiError>>;
    /// Stops or starts the L7 proxy (to show that the datapath fails closed without it).
    fn set_proxy(&self, running: bool) -> BoxFut<'_, Result<ProxyState, ApiError>>;
    /// Asks the lab to shut down.
    fn shutdown(&self);
    /// One SVG plot of a benchmark run (`run` and `file` are plain names), for the Benchmark page.
    fn bench_plot(&self, run: &str, file: &str) -> BoxFut<'_, Result<String, ApiError>>;
}

pub type SharedBackend = Arc<dyn Backend>;

#[derive(Serialize)]
struct ShuttingDown {
    shutting_down: bool,
}

/// A GET route answering one of the backend's views as JSON.
fn view<T: Serialize + Send + 'static>(f: fn(&dyn Backend) -> T) -> MethodRouter<SharedBackend> {
    get(move |State(b): State<SharedBackend>| async move { Json(f(&*b)) })
}

/// The API routes (mounted at the root by [`crate::router`]). The lab's own extra routes
/// (the benchmark's) live under `/api/x/bench` and are merged by the lab.
pub fn routes() -> Router<SharedBackend> {
    // Policy and manifest texts arrive as JSON strings: room for the largest file the lab reads
    // (`model::MAX_SOURCE_BYTES`) even when escaping doubles it; the CLI refuses larger files by
    // name before sending them.
    let body_limit = axum::extract::DefaultBodyLimit::max(2 * model::MAX_SOURCE_BYTES + (64 << 10));
    Router::new()
        .route("/api/status", view(|b| b.status()))
        .route("/api/pods", view(|b| b.pods()))
        .route("/api/pods/{ns}/{name}", get(pod))
        .route("/api/pods/{ns}/{name}/context", get(pod_context))
        .route("/api/pods/{ns}/{name}/exec", post(exec))
        .route("/api/pods/{ns}/{name}/ship", post(ship))
        .route("/api/services", view(|b| b.services()))
        .route("/api/endpoints", view(|b| b.endpoints()))
        .route("/api/identities", view(|b| b.identities()))
        .route(
            "/api/policies",
            view(|b| b.policies()).post(apply).delete(delete),
        )
        .route("/api/policies/{ns}/{name}/audit", post(set_audit))
        .route("/api/flows", get(flows))
        .route("/api/flows/stream", get(flow_stream))
        .route("/api/x/hosts", view(|b| b.hosts()))
        .route("/api/x/conntrack", view(|b| b.conntrack()))
        .route("/api/x/limits", view(|b| b.limits()))
        .route(
            "/api/x/prefilter",
            view(|b| b.prefilter()).post(change_prefilter),
        )
        .route("/api/x/audit", post(audit))
        .route(
            "/api/matrix",
            post(
                |State(b): State<SharedBackend>, body: Option<Json<MatrixRequest>>| async move {
                    b.matrix(body.map(|Json(r)| r).unwrap_or_default())
                        .await
                        .map(Json)
                },
            ),
        )
        .route(
            "/api/x/audit-mode",
            view(|b| b.audit_mode()).post(set_audit_mode),
        )
        .route(
            "/api/x/proxy/stop",
            post(
                |State(b): State<SharedBackend>| async move { b.set_proxy(false).await.map(Json) },
            ),
        )
        .route(
            "/api/x/proxy/start",
            post(|State(b): State<SharedBackend>| async move { b.set_proxy(true).await.map(Json) }),
        )
        .route(
            "/api/x/shutdown",
            post(|State(b): State<SharedBackend>| async move {
                b.shutdown();
                Json(ShuttingDown {
                    shutting_down: true,
                })
            }),
        )
        .route("/metrics", get(metrics))
        .layer(body_limit)
}

async fn pod(
    State(b): State<SharedBackend>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Pod>, ApiError> {
    b.pod(&ns, &name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("pod {ns}/{name} not found")))
}

async fn pod_context(
    State(b): State<SharedBackend>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<PodContext>, ApiError> {
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
    Json(req): Json<ShipRequest>,
) -> Result<Json<ShipResult>, ApiError> {
    b.ship(&format!("{ns}/{name}"), req).await.map(Json)
}

async fn apply(
    State(b): State<SharedBackend>,
    Json(req): Json<ApplyRequest>,
) -> Result<Json<ApplyResult>, ApiError> {
    b.apply_policies(req).await.map(Json)
}

async fn delete(
    State(b): State<SharedBackend>,
    Query(q): Query<DeleteRequest>,
    body: Option<Json<DeleteRequest>>,
) -> Result<Json<DeleteResult>, ApiError> {
    let req = body.map(|Json(b)| b).unwrap_or(q);
    b.delete_policies(req).await.map(Json)
}

async fn set_audit(
    State(b): State<SharedBackend>,
    Path((ns, name)): Path<(String, String)>,
    Json(body): Json<AuditSwitch>,
) -> Result<Json<PolicyAudit>, ApiError> {
    b.set_policy_audit(&ns, &name, body.audit).await.map(Json)
}

async fn set_audit_mode(
    State(b): State<SharedBackend>,
    Json(body): Json<AuditMode>,
) -> Result<Json<AuditMode>, ApiError> {
    b.set_audit_mode(body.audit_mode).await.map(Json)
}

async fn change_prefilter(
    State(b): State<SharedBackend>,
    Json(change): Json<PrefilterChange>,
) -> Result<Json<PrefilterState>, ApiError> {
    b.change_prefilter(change).await.map(Json)
}

async fn audit(
    State(b): State<SharedBackend>,
    body: Option<Json<AuditRequest>>,
) -> Result<Json<Vec<Finding>>, ApiError> {
    let req = body.map(|Json(r)| r).unwrap_or_default();
    b.audit(req).await.map(Json)
}

async fn flows(
    State(b): State<SharedBackend>,
    Query(filter): Query<FlowFilter>,
) -> Json<Vec<Arc<Flow>>> {
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
                    let data = serde_json::to_string(&*flow).unwrap_or_default();
                    let ev = Event::default().event("flow").data(data);
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
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        b.metrics(),
    )
}
