//! The FTP client steps shared by the log shipper and the ships' `FetchLogs` move.
//!
//! Every step (resolve, connect, each command, each transfer) is bounded by the same timeout,
//! so a store that a policy silently drops never hangs a caller. Errors are sorted into the few
//! kinds callers act on: refused, timed out, denied by the server, anything else.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use suppaftp::tokio::AsyncFtpStream;
use suppaftp::types::FileType;
use suppaftp::{FtpError, Mode};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// User name and password used when a target or move names no user (RFC 1635 convention).
const ANONYMOUS_USER: &str = "anonymous";
const ANONYMOUS_PASSWORD: &str = "anonymous@";

#[derive(Debug, thiserror::Error)]
pub(crate) enum FtpClientError {
    #[error("cannot resolve {addr}: {detail}")]
    Resolve { addr: String, detail: String },
    #[error("{what}: {detail}")]
    Refused { what: String, detail: String },
    #[error("{what} timed out after {after:?}")]
    TimedOut { what: String, after: Duration },
    /// The server answered with a refusal: login failed, permission denied, no such file.
    #[error("{what}: server replied {code} {text}")]
    Denied {
        what: String,
        code: u32,
        text: String,
    },
    #[error("{what}: {detail}")]
    Other { what: String, detail: String },
}

/// A logged-in FTP control connection in binary, passive mode.
pub(crate) struct FtpSession {
    stream: AsyncFtpStream,
    timeout: Duration,
}

/// Runs one step under the timeout, turning both kinds of failure into [`FtpClientError`].
async fn step<T>(
    what: &str,
    timeout: Duration,
    fut: impl Future<Output = Result<T, FtpError>>,
) -> Result<T, FtpClientError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => result.map_err(|e| classify(what, e)),
        Err(_) => Err(FtpClientError::TimedOut {
            what: what.to_string(),
            after: timeout,
        }),
    }
}

fn classify(what: &str, err: FtpError) -> FtpClientError {
    let what = what.to_string();
    match err {
        FtpError::ConnectionError(io) => classify_io(what, &io),
        FtpError::UnexpectedResponse(resp) => {
            let code = resp.status.code();
            let text = String::from_utf8_lossy(&resp.body).trim().to_string();
            // 530 not logged in, 532 need account, 550 unavailable/permission, 553 name not allowed.
            if matches!(code, 530 | 532 | 550 | 553) {
                FtpClientError::Denied { what, code, text }
            } else {
                FtpClientError::Other {
                    what,
                    detail: format!("unexpected reply {code} {text}"),
                }
            }
        }
        other => FtpClientError::Other {
            what,
            detail: other.to_string(),
        },
    }
}

fn classify_io(what: String, io: &std::io::Error) -> FtpClientError {
    let detail = io.to_string();
    match io.kind() {
        ErrorKind::ConnectionRefused
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe => FtpClientError::Refused { what, detail },
        _ => FtpClientError::Other { what, detail },
    }
}

impl FtpSession {
    /// Resolves `addr` ("host:port", host a name or an IP) with the system resolver, connects,
    /// logs in (anonymously when `user` is `None`) and switches to binary transfers.
    pub(crate) async fn open(
        addr: &str,
        user: Option<&str>,
        password: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, FtpClientError> {
        let peer = match tokio::time::timeout(timeout, resolve(addr)).await {
            Ok(peer) => peer?,
            Err(_) => {
                return Err(FtpClientError::TimedOut {
                    what: format!("resolve {addr}"),
                    after: timeout,
                });
            }
        };
        let what = format!("connect to {addr} ({peer})");
        let tcp = match tokio::time::timeout(timeout, TcpStream::connect(peer)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(classify_io(what, &e)),
            Err(_) => {
                return Err(FtpClientError::TimedOut {
                    what,
                    after: timeout,
                });
            }
        };
        let mut stream = step(
            "read the greeting",
            timeout,
            AsyncFtpStream::connect_with_stream(tcp),
        )
        .await?;
        stream.set_mode(Mode::Passive);
        let (user, password) = match user {
            Some(u) => (u, password.unwrap_or("")),
            None => (ANONYMOUS_USER, password.unwrap_or(ANONYMOUS_PASSWORD)),
        };
        step(
            &format!("log in as {user}"),
            timeout,
            stream.login(user, password),
        )
        .await?;
        // Logs must arrive byte for byte; ASCII mode would rewrite line endings.
        step(
            "set binary mode",
            timeout,
            stream.transfer_type(FileType::Binary),
        )
        .await?;
        Ok(FtpSession { stream, timeout })
    }

    /// Changes into `dir`; an empty dir means stay in the login directory.
    pub(crate) async fn enter_dir_existing(&mut self, dir: &str) -> Result<(), FtpClientError> {
        if dir.is_empty() {
            return Ok(());
        }
        let what = format!("change directory to {dir}");
        step(&what, self.timeout, self.stream.cwd(dir)).await
    }

    /// Changes into `dir`, creating it first if that fails. An empty dir or "/" means stay.
    pub(crate) async fn enter_dir(&mut self, dir: &str) -> Result<(), FtpClientError> {
        if dir.is_empty() || dir == "/" {
            return Ok(());
        }
        let what = format!("change directory to {dir}");
        if self.enter_dir_existing(dir).await.is_ok() {
            return Ok(());
        }
        step(
            &format!("create directory {dir}"),
            self.timeout,
            self.stream.mkdir(dir),
        )
        .await?;
        step(&what, self.timeout, self.stream.cwd(dir)).await
    }

    /// Stores `data` as the file `name` in the current directory.
    pub(crate) async fn put(&mut self, name: &str, data: &[u8]) -> Result<(), FtpClientError> {
        let mut reader = data;
        step(
            &format!("upload {name}"),
            self.timeout,
            self.stream.put_file(name, &mut reader),
        )
        .await
        .map(|_| ())
    }

    /// Names of the entries of the current directory.
    pub(crate) async fn list_names(&mut self) -> Result<Vec<String>, FtpClientError> {
        step("list the directory", self.timeout, self.stream.nlst(None)).await
    }

    /// Downloads the file `name` from the current directory.
    pub(crate) async fn get(&mut self, name: &str) -> Result<Vec<u8>, FtpClientError> {
        let what = format!("download {name}");
        let timeout = self.timeout;
        let stream = &mut self.stream;
        step(&what, timeout, async move {
            let mut transfer = stream.retr_as_stream(name).await?;
            let mut data = Vec::new();
            transfer
                .read_to_end(&mut data)
                .await
                .map_err(FtpError::ConnectionError)?;
            transfer.finish().await?;
            Ok(data)
        })
        .await
    }

    /// Says goodbye; a failure here changes nothing for the caller, so it is only logged.
    pub(crate) async fn quit(mut self) {
        if let Err(e) = step("quit", self.timeout, self.stream.quit()).await {
            tracing::debug!(error = %e, "FTP QUIT failed");
        }
    }
}

/// Resolves "host:port" with the system resolver (the pod's /etc/resolv.conf), preferring IPv4
/// because the lab's pod network is IPv4 only. Callers bound the time it takes.
pub(crate) async fn resolve(addr: &str) -> Result<SocketAddr, FtpClientError> {
    let resolve_err = |detail: String| FtpClientError::Resolve {
        addr: addr.to_string(),
        detail,
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| resolve_err(e.to_string()))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| resolve_err("no addresses".to_string()))
}
