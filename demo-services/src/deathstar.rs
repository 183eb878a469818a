//! The Deathstar: the Star Wars demo's HTTP API, including the hidden exhaust port that kills it.
//!
//! Routes (anything else is 404; a known path with another method is 405 with an `allow`
//! header, so students can tell "no such API" from "wrong verb"):
//!
//! | route                                 | answer |
//! |---------------------------------------|--------|
//! | `GET /v1`                             | 200, JSON description; its `api` list hides the exhaust port |
//! | `GET /v1/healthz`                     | 200, small JSON |
//! | `POST /v1/request-landing`            | 200 `Ship landed\n` |
//! | `PUT /v1/cargobay`                    | 200 text |
//! | `GET /v1/hyper-matter-reactor/status` | 200 text |
//! | `PUT /v1/exhaust-port`                | 503 with a panic text, then the process exits with status 2 |
//!
//! Routing looks at the path without the query string. Every request is recorded into the
//! [`LogShipper`](crate::logship::LogShipper), which never blocks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::logship::{self, ApiRecord, LogShipper};

/// Exit status of the process after the exhaust port was hit; the supervisor restarts the pod.
pub const EXPLODED_EXIT_CODE: i32 = 2;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Shown as "hostname" in `GET /v1`, recorded in the API log and used in log file names.
    #[serde(default = "default_pod_name")]
    pub pod_name: String,
    /// Delay between the exhaust-port answer and the process exit.
    #[serde(default = "default_explode_after_ms")]
    pub explode_after_ms: u64,
    /// Where the API log goes; the default ships nowhere.
    #[serde(default)]
    pub log_ship: logship::Config,
    /// How many connections the Deathstar serves at once; more wait unanswered (so a flood of
    /// idle connections can keep ships from landing — the connection-limit lesson).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_max_connections() -> usize {
    32
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 80))
}
fn default_pod_name() -> String {
    "deathstar".to_string()
}
fn default_explode_after_ms() -> u64 {
    2000
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: default_listen(),
            pod_name: default_pod_name(),
            explode_after_ms: default_explode_after_ms(),
            log_ship: logship::Config::default(),
            max_connections: default_max_connections(),
        }
    }
}

/// Binds `cfg.listen` and serves until the process dies.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let listener = crate::listen::bind(cfg.listen).await?;
    serve(listener, cfg).await
}

/// Serves on an already bound listener (tests bind port 0). Must run inside a tokio runtime.
pub async fn serve(listener: TcpListener, cfg: Config) -> anyhow::Result<()> {
    let shipper = LogShipper::start(cfg.log_ship.clone(), &cfg.pod_name);
    let state = Arc::new(State {
        survey: survey_body(&cfg.pod_name),
        cfg,
        shipper,
    });
    tracing::info!(addr = %listener.local_addr()?, pod = %state.cfg.pod_name, "deathstar operational");
    let capacity = Some(state.cfg.max_connections);
    crate::http_server::serve(listener, capacity, move |req, peer| {
        let state = state.clone();
        async move { state.handle(req, peer) }
    })
    .await
}

struct State {
    cfg: Config,
    shipper: LogShipper,
    /// `GET /v1` never changes, so it is rendered once.
    survey: Bytes,
}

/// The routes `GET /v1` advertises. The exhaust port is deliberately missing, as in the paper.
pub const ADVERTISED_API: &[&str] = &[
    "GET   /v1",
    "GET   /v1/healthz",
    "POST  /v1/request-landing",
    "PUT   /v1/cargobay",
    "GET   /v1/hyper-matter-reactor/status",
];

/// Our own wording of a crashing Go program's output, so the 503 looks like the real demo's.
const PANIC_TEXT: &str = "Panic: deathstar exploded

goroutine 1 [running]:
main.HandleExhaustPort(0xc000124000, 0x1c)
\t/srv/deathstar/exhaust.go:42 +0x1f4
main.(*Reactor).Vent(0xc00011a0f0)
\t/srv/deathstar/reactor.go:117 +0x8b
net/http.HandlerFunc.ServeHTTP(0x7a3e20, {0x8c1f00, 0xc0001c2000}, 0xc000210100)
\t/usr/local/go/src/net/http/server.go:2136 +0x29
created by net/http.(*Server).Serve
\t/usr/local/go/src/net/http/server.go:3086 +0x4cc
exit status 2
";

fn survey_body(pod: &str) -> Bytes {
    let doc = serde_json::json!({
        "name": "Death Star",
        "hostname": pod,
        "model": "DS-1 Orbital Battle Station",
        "manufacturer": "Imperial Department of Military Research, Sienar Fleet Systems",
        "cost_in_credits": "1000000000000",
        "length": "120000",
        "crew": "342953",
        "passengers": "843342",
        "cargo_capacity": "1000000000000",
        "starship_class": "Deep Space Mobile Battlestation",
        "api": ADVERTISED_API,
    });
    let mut text = serde_json::to_string_pretty(&doc).expect("a JSON value always serialises");
    text.push('\n');
    Bytes::from(text)
}

impl State {
    fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let method = req.method();
        let route = req.uri().path();
        let response = match (route, method) {
            ("/v1", &Method::GET) => json(StatusCode::OK, self.survey.clone()),
            ("/v1/healthz", &Method::GET) => json(
                StatusCode::OK,
                Bytes::from(format!(
                    "{{\"status\": \"operational\", \"hostname\": {}}}\n",
                    serde_json::Value::from(self.cfg.pod_name.as_str())
                )),
            ),
            ("/v1/request-landing", &Method::POST) => text(StatusCode::OK, "Ship landed\n"),
            ("/v1/cargobay", &Method::PUT) => text(StatusCode::OK, "Cargo bay doors opened\n"),
            ("/v1/hyper-matter-reactor/status", &Method::GET) => text(
                StatusCode::OK,
                "Hyper-matter reactor online, output nominal\n",
            ),
            ("/v1/exhaust-port", &Method::PUT) => self.explode(peer),
            _ => match allowed_method(route) {
                Some(allow) => {
                    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed\n");
                    r.headers_mut()
                        .insert(ALLOW, HeaderValue::from_static(allow));
                    r
                }
                None => text(StatusCode::NOT_FOUND, "Not found\n"),
            },
        };
        let path = req.uri().path_and_query().map_or(route, |pq| pq.as_str());
        self.shipper.record(&ApiRecord::now(
            peer,
            method.as_str(),
            path,
            response.status().as_u16(),
            &self.cfg.pod_name,
        ));
        response
    }

    /// Answers 503 now and ends the process a little later, like the demo's crashing server.
    fn explode(&self, peer: SocketAddr) -> Response<Full<Bytes>> {
        let delay = Duration::from_millis(self.cfg.explode_after_ms);
        tracing::error!(%peer, ?delay, "exhaust port hit: the deathstar will explode");
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            tracing::error!("deathstar exploded");
            // A real exit, not a returned error: the supervisor must see the process die.
            std::process::exit(EXPLODED_EXIT_CODE);
        });
        text(StatusCode::SERVICE_UNAVAILABLE, PANIC_TEXT)
    }
}

/// The one method a known path accepts, for 405 answers.
fn allowed_method(path: &str) -> Option<&'static str> {
    match path {
        "/v1" | "/v1/healthz" | "/v1/hyper-matter-reactor/status" => Some("GET"),
        "/v1/request-landing" => Some("POST"),
        "/v1/cargobay" | "/v1/exhaust-port" => Some("PUT"),
        _ => None,
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    with_type(status, Bytes::from_static(body.as_bytes()), "text/plain")
}

fn json(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    with_type(status, body, "application/json")
}

fn with_type(status: StatusCode, body: Bytes, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survey_hides_the_exhaust_port() {
        let body = survey_body("ds-1");
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["name"], "Death Star");
        assert_eq!(doc["hostname"], "ds-1");
        assert_eq!(doc["api"].as_array().unwrap().len(), ADVERTISED_API.len());
        assert!(!String::from_utf8_lossy(&body).contains("exhaust"));
    }

    #[test]
    fn config_defaults() {
        let cfg: Config = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg, Config::default());
        assert_eq!(cfg.listen.port(), 80);
        assert_eq!(cfg.explode_after_ms, 2000);
    }
}
