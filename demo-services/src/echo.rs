//! A small fast HTTP/1.1 server for exercises and the throughput benchmark: every request gets
//! 200 with a fixed body (default `hello world\n`), or, with `echo_request`, a text copy of the
//! request line and headers.
//!
//! Fast path: the body is one shared `Bytes` (cloning is a reference count), no headers are
//! added beyond what hyper writes (content-length, date), connections are kept alive, and each
//! connection is its own task so a multi-threaded runtime spreads them over the cores.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default = "default_body")]
    pub body: String,
    /// Answer with the method, path and headers of the request instead of `body`.
    #[serde(default)]
    pub echo_request: bool,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 80))
}
fn default_body() -> String {
    "hello world\n".to_string()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: default_listen(),
            body: default_body(),
            echo_request: false,
        }
    }
}

/// Binds `cfg.listen` and serves until the process dies.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let listener = crate::listen::bind(cfg.listen).await?;
    serve(listener, cfg).await
}

/// Serves on an already bound listener (tests bind port 0).
pub async fn serve(listener: TcpListener, cfg: Config) -> anyhow::Result<()> {
    if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::CurrentThread
    {
        tracing::warn!("echo runs on a single-threaded runtime: benchmarks will use one core");
    }
    tracing::info!(addr = %listener.local_addr()?, echo_request = cfg.echo_request, "echo server ready");
    let body = Bytes::from(cfg.body);
    if cfg.echo_request {
        crate::http_server::serve(listener, None, |req, _peer| async move { describe(&req) }).await
    } else {
        crate::http_server::serve(listener, None, move |_req, _peer| {
            let body = body.clone();
            async move { Response::new(Full::new(body)) }
        })
        .await
    }
}

/// The request as text: `METHOD PATH VERSION`, then one `name: value` line per header.
fn describe(req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut text = format!(
        "{} {} {:?}\n",
        req.method(),
        req.uri()
            .path_and_query()
            .map_or_else(|| req.uri().path(), |pq| pq.as_str()),
        req.version()
    );
    for (name, value) in req.headers() {
        text.push_str(name.as_str());
        text.push_str(": ");
        text.push_str(&String::from_utf8_lossy(value.as_bytes()));
        text.push('\n');
    }
    Response::new(Full::new(Bytes::from(text)))
}
