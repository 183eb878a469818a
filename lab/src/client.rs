//! The CLI's side of the control API: HTTP/1.1 over the instance's Unix socket.

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::net::UnixStream;

use crate::paths::Paths;

pub struct Client {
    paths: Paths,
}

/// An API error, printed as the server worded it.
#[derive(Debug)]
pub struct ApiFailure {
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiFailure {}

impl Client {
    pub fn new(paths: &Paths) -> Self {
        Self {
            paths: paths.clone(),
        }
    }

    async fn connect(&self) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
        let sock = self.paths.api_socket();
        let stream = match UnixStream::connect(&sock).await {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
                "permission denied on {}: the lab runs as root; run this command as root (sudo)",
                sock.display()
            ),
            Err(_) => bail!(
                "no lab named {:?} is running (nothing listens on {}). Start one with `lab up -d`{}",
                self.paths.instance,
                sock.display(),
                if nix::unistd::Uid::effective().is_root() {
                    ""
                } else {
                    " as root"
                }
            ),
        };
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("talking to the lab")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Calls the API and reads its JSON answer as `T`; an error answer is an [`ApiFailure`]
    /// with the server's message.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let body = body.map(serde_json::to_string).transpose()?;
        let resp = self.send(method, path, body).await?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .context("reading the lab's answer")?
            .to_bytes();
        if !status.is_success() {
            #[derive(Deserialize)]
            struct Failure {
                error: String,
            }
            let message = serde_json::from_slice::<Failure>(&bytes)
                .map(|f| f.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(anyhow!(ApiFailure { message }));
        }
        let body = if bytes.is_empty() {
            &b"null"[..]
        } else {
            &bytes
        };
        serde_json::from_slice(body).with_context(|| format!("reading the lab's answer to {path}"))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::GET, path, None::<&()>).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn text(&self, path: &str) -> Result<String> {
        let resp = self.send(Method::GET, path, None).await?;
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        let mut sender = self.connect().await?;
        let body = body.unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "lab")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        sender.send_request(req).await.context("talking to the lab")
    }

    /// Streams server-sent events, calling `f` with each event's data.
    pub async fn stream_events(
        &self,
        path: &str,
        mut f: impl FnMut(&str, &str) -> bool,
    ) -> Result<()> {
        let resp = self.send(Method::GET, path, None).await?;
        let mut body = resp.into_body();
        let mut buf = String::new();
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            buf.push_str(&String::from_utf8_lossy(data));
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                let mut name = "message";
                let mut payload = String::new();
                for line in event.lines() {
                    if let Some(n) = line.strip_prefix("event:") {
                        name = n.trim();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        payload.push_str(d.trim_start());
                    }
                }
                if !payload.is_empty() && !f(name, &payload) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}
