//! The ships' moves in the story: land, survey, fire at the exhaust port, fetch the Deathstar's
//! logs from a store, any HTTP request, or a bare TCP connect (can this pod reach that port?).
//! Used by `lab ship POD MOVE`, the web page (lessons and exercise probes) and tests.
//!
//! [`perform`] never fails: every result, including refusals and timeouts (what a policy does
//! to a ship), is an [`Outcome`] the caller renders. Names are resolved with the system resolver
//! (tokio's `lookup_host`), so the pod's /etc/resolv.conf decides.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HOST, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::ftp_client::{FtpClientError, FtpSession};

pub use model::moves::{Move, Options, Outcome};

/// Makes the move and reports what happened; never panics on network trouble.
pub async fn perform(mv: &Move, opts: &Options) -> Outcome {
    let start = Instant::now();
    let timeout = Duration::from_millis(opts.timeout_ms);
    if let Move::Flood {
        connections,
        hold_ms,
    } = mv
    {
        return flood(
            opts,
            *connections,
            Duration::from_millis(*hold_ms),
            timeout,
            start,
        )
        .await;
    }
    let result = match mv {
        Move::Land => {
            http(
                opts,
                "POST",
                "/v1/request-landing",
                &BTreeMap::new(),
                None,
                timeout,
            )
            .await
        }
        Move::Survey => http(opts, "GET", "/v1", &BTreeMap::new(), None, timeout).await,
        Move::Fire => {
            http(
                opts,
                "PUT",
                "/v1/exhaust-port",
                &BTreeMap::new(),
                None,
                timeout,
            )
            .await
        }
        Move::Http {
            method,
            url,
            headers,
            body,
        } => http(opts, method, url, headers, body.as_deref(), timeout).await,
        Move::FetchLogs {
            store,
            user,
            password,
            dir,
        } => fetch_logs(store, user.as_deref(), password.as_deref(), dir, timeout)
            .await
            .map_err(Failure::from),
        Move::Connect { addr, timeout_ms } => {
            let limit = timeout_ms.map_or(timeout, Duration::from_millis);
            match tokio::time::timeout(limit, connect(addr)).await {
                Ok(result) => result,
                Err(_) => Err(Failure::TimedOut),
            }
        }
        Move::Flood { .. } => unreachable!("handled above"),
    };
    let elapsed_ms = start.elapsed().as_millis() as u64;
    match result {
        Ok(Done::Http { status, body }) if (200..300).contains(&status) => Outcome::Ok {
            status,
            body,
            elapsed_ms,
        },
        Ok(Done::Http { status, body }) => Outcome::HttpError {
            status,
            body,
            elapsed_ms,
        },
        Ok(Done::Ftp { files, content }) => Outcome::FtpOk {
            files,
            content,
            elapsed_ms,
        },
        Ok(Done::Connected { peer }) => Outcome::Connected { peer, elapsed_ms },
        Err(Failure::Refused(detail)) => Outcome::Refused { detail, elapsed_ms },
        Err(Failure::TimedOut) => Outcome::TimedOut { elapsed_ms },
        Err(Failure::Denied(detail)) => Outcome::FtpDenied { detail, elapsed_ms },
        Err(Failure::Other(detail)) => Outcome::Error { detail, elapsed_ms },
    }
}

/// A finished move, before timing is attached.
enum Done {
    Http { status: u16, body: String },
    Ftp { files: Vec<String>, content: String },
    Connected { peer: String },
}

/// Why a move did not finish, sorted the way [`Outcome`] sorts it.
enum Failure {
    Refused(String),
    TimedOut,
    Denied(String),
    Other(String),
}

impl From<FtpClientError> for Failure {
    fn from(e: FtpClientError) -> Self {
        match e {
            FtpClientError::Refused { .. } => Failure::Refused(e.to_string()),
            FtpClientError::TimedOut { .. } => Failure::TimedOut,
            FtpClientError::Denied { .. } => Failure::Denied(e.to_string()),
            FtpClientError::Resolve { .. } | FtpClientError::Other { .. } => {
                Failure::Other(e.to_string())
            }
        }
    }
}

/// Aborts the spawned connection driver when the request is done or abandoned (timeout).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn http(
    opts: &Options,
    method: &str,
    url: &str,
    headers: &BTreeMap<String, String>,
    body: Option<&str>,
    timeout: Duration,
) -> Result<Done, Failure> {
    let url = if url.starts_with('/') {
        format!("{}{url}", opts.base_url.trim_end_matches('/'))
    } else {
        url.to_string()
    };
    let (addr, request) = build_request(method, &url, headers, body).map_err(Failure::Other)?;
    match tokio::time::timeout(timeout, send(&addr, request)).await {
        Ok(result) => result,
        Err(_) => Err(Failure::TimedOut),
    }
}

/// The request to send and the "host:port" to send it to.
fn build_request(
    method: &str,
    url: &str,
    headers: &BTreeMap<String, String>,
    body: Option<&str>,
) -> Result<(String, Request<Full<Bytes>>), String> {
    let uri: Uri = url.parse().map_err(|e| format!("bad URL {url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => return Err(format!("only http:// URLs are supported, not {other}://")),
        None => return Err(format!("bad URL {url:?}: no scheme (http://...)")),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("bad URL {url:?}: no host"))?
        .clone();
    let method =
        Method::from_bytes(method.as_bytes()).map_err(|_| format!("bad method {method:?}"))?;
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut req = Request::builder()
        .method(method)
        // HTTP/1.1 requests carry the path only; the host goes in the Host header.
        .uri(path)
        .body(Full::new(Bytes::from(body.unwrap_or_default().to_string())))
        .map_err(|e| e.to_string())?;
    let h = req.headers_mut();
    h.insert(
        HOST,
        HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?,
    );
    h.insert(USER_AGENT, HeaderValue::from_static("lab-ship/1.0"));
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("bad header name {name:?}"))?;
        let value =
            HeaderValue::from_str(value).map_err(|_| format!("bad value for header {name}"))?;
        h.insert(name, value);
    }
    // "host:port" to connect to; an IPv6 host keeps its brackets, as lookup_host wants.
    let addr = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    Ok((addr, req))
}

/// Connects to `addr` ("host:port"), sends the request and reads the whole answer.
async fn send(addr: &str, request: Request<Full<Bytes>>) -> Result<Done, Failure> {
    let peer = crate::ftp_client::resolve(addr)
        .await
        .map_err(|e| Failure::Other(e.to_string()))?;
    let stream = TcpStream::connect(peer)
        .await
        .map_err(|e| io_failure(&format!("connect to {addr} ({peer})"), &e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| hyper_failure(&e))?;
    let _driver = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| hyper_failure(&e))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| hyper_failure(&e))?
        .to_bytes();
    Ok(Done::Http {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Opens `n` connections to the base URL's host (at most 64 connecting at a time), holds the
/// ones that open for `hold`, then closes them all.
async fn flood(
    opts: &Options,
    n: u32,
    hold: Duration,
    timeout: Duration,
    start: Instant,
) -> Outcome {
    let authority = opts
        .base_url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    let addr = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let peer = match crate::ftp_client::resolve(&addr).await {
        Ok(p) => p,
        Err(e) => {
            return Outcome::Error {
                detail: e.to_string(),
                elapsed_ms: start.elapsed().as_millis() as u64,
            };
        }
    };
    let (mut connected, mut refused, mut failed) = (0, 0, 0);
    let mut held = Vec::new();
    let mut pending = tokio::task::JoinSet::new();
    for _ in 0..n {
        if pending.len() >= 64
            && let Some(Ok(r)) = pending.join_next().await
        {
            tally(r, &mut held, &mut connected, &mut refused, &mut failed);
        }
        pending.spawn(tokio::time::timeout(timeout, TcpStream::connect(peer)));
    }
    while let Some(Ok(r)) = pending.join_next().await {
        tally(r, &mut held, &mut connected, &mut refused, &mut failed);
    }
    tokio::time::sleep(hold).await;
    drop(held);
    Outcome::Flooded {
        connected,
        refused,
        failed,
        elapsed_ms: start.elapsed().as_millis() as u64,
    }
}

fn tally(
    r: Result<std::io::Result<TcpStream>, tokio::time::error::Elapsed>,
    held: &mut Vec<TcpStream>,
    connected: &mut u32,
    refused: &mut u32,
    failed: &mut u32,
) {
    match r {
        Ok(Ok(s)) => {
            held.push(s);
            *connected += 1;
        }
        Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => *refused += 1,
        _ => *failed += 1,
    }
}

/// Resolves and connects, then closes at once (a FIN, no data).
async fn connect(addr: &str) -> Result<Done, Failure> {
    let peer = crate::ftp_client::resolve(addr)
        .await
        .map_err(|e| Failure::Other(e.to_string()))?;
    let stream = TcpStream::connect(peer)
        .await
        .map_err(|e| io_failure(&format!("connect to {addr} ({peer})"), &e))?;
    drop(stream);
    Ok(Done::Connected {
        peer: peer.to_string(),
    })
}

fn io_failure(what: &str, e: &std::io::Error) -> Failure {
    match e.kind() {
        ErrorKind::ConnectionRefused
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe => Failure::Refused(format!("{what}: {e}")),
        ErrorKind::TimedOut => Failure::TimedOut,
        _ => Failure::Other(format!("{what}: {e}")),
    }
}

/// A reset or a close in the middle of an exchange counts as refused, like curl's "recv failure".
fn hyper_failure(e: &hyper::Error) -> Failure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io_failure("HTTP exchange", io);
        }
        source = err.source();
    }
    if e.is_incomplete_message() {
        return Failure::Refused(format!("connection closed by the server: {e}"));
    }
    Failure::Other(format!("HTTP exchange: {e}"))
}

async fn fetch_logs(
    store: &str,
    user: Option<&str>,
    password: Option<&str>,
    dir: &str,
    timeout: Duration,
) -> Result<Done, FtpClientError> {
    let mut session = FtpSession::open(store, user, password, timeout).await?;
    session.enter_dir_existing(dir).await?;
    let mut files: Vec<String> = session
        .list_names()
        .await?
        .into_iter()
        // Some servers list "dir/name"; only the name matters here.
        .map(|n| n.rsplit('/').next().unwrap_or_default().to_string())
        .filter(|n| n.starts_with("deathstar-") && n.ends_with(".log"))
        .collect();
    files.sort();
    let mut content = String::new();
    for name in &files {
        let data = session.get(name).await?;
        let text = String::from_utf8_lossy(&data);
        content.push_str(&text);
        if !text.is_empty() && !text.ends_with('\n') {
            content.push('\n');
        }
    }
    session.quit().await;
    Ok(Done::Ftp { files, content })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_host_and_path_only() {
        let mut headers = BTreeMap::new();
        headers.insert("X-Has-Force".to_string(), "true".to_string());
        let (addr, req) =
            build_request("PUT", "http://deathstar:8080/v1/x?y=1", &headers, Some("b")).unwrap();
        assert_eq!(addr, "deathstar:8080");
        let (addr, _) = build_request("GET", "http://[::1]/", &headers, None).unwrap();
        assert_eq!(addr, "[::1]:80");
        assert_eq!(req.uri(), "/v1/x?y=1");
        assert_eq!(req.headers()[HOST], "deathstar:8080");
        assert_eq!(req.headers()["x-has-force"], "true");
        assert!(build_request("GET", "https://deathstar/", &headers, None).is_err());
        assert!(build_request("GE T", "http://deathstar/", &headers, None).is_err());
    }

    #[test]
    fn connect_as_json() {
        let mv: Move =
            serde_json::from_str(r#"{"move": "connect", "addr": "ftp-secure:21"}"#).unwrap();
        assert_eq!(
            mv,
            Move::Connect {
                addr: "ftp-secure:21".into(),
                timeout_ms: None
            }
        );
        let out = Outcome::Connected {
            peer: "10.244.0.6:21".into(),
            elapsed_ms: 1,
        };
        assert_eq!(out.summary(), "connected to 10.244.0.6:21");
        assert_eq!(out.exit_code(), 0);
        assert_eq!(serde_json::to_value(&out).unwrap()["kind"], "connected");
    }

    #[tokio::test]
    async fn connect_reaches_a_listener_and_is_refused_by_a_closed_port() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        let mv = Move::Connect {
            addr: open.to_string(),
            timeout_ms: Some(2000),
        };
        let out = perform(&mv, &Options::default()).await;
        assert_eq!(
            out,
            Outcome::Connected {
                peer: open.to_string(),
                elapsed_ms: out.elapsed_ms()
            }
        );
        drop(listener);
        let closed = Move::Connect {
            addr: open.to_string(),
            timeout_ms: Some(2000),
        };
        let out = perform(&closed, &Options::default()).await;
        assert!(matches!(out, Outcome::Refused { .. }), "{out:?}");
    }
}
