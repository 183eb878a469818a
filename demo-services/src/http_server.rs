//! The HTTP/1.1 accept loop shared by the Deathstar and echo servers.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Accepts connections forever and serves each on its own task with `handler`, which gets the
/// request and the client's address. Keep-alive is on (hyper's default). With `capacity`, at
/// most that many connections are served at once; further ones wait unaccepted in the kernel's
/// backlog, like a server whose workers are all busy.
pub(crate) async fn serve<H, F>(
    listener: TcpListener,
    capacity: Option<usize>,
    handler: H,
) -> anyhow::Result<()>
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let slots = capacity.map(|n| std::sync::Arc::new(tokio::sync::Semaphore::new(n)));
    loop {
        let permit = match &slots {
            Some(s) => Some(s.clone().acquire_owned().await?),
            None => None,
        };
        let (stream, peer) = crate::listen::accept(&listener).await;
        // Small responses on kept-alive connections: Nagle would add delays of tens of ms.
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            // The slot is held for the connection's life.
            let _permit = permit;
            let service = service_fn(move |req| {
                let response = handler(req, peer);
                async move { Ok::<_, Infallible>(response.await) }
            });
            if let Err(e) = http1::Builder::new()
                // Answers to pipelined requests go out in one write, as benchmark tools expect.
                .pipeline_flush(true)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
