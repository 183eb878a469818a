//! Helpers shared by the test areas: starting servers on free loopback ports, a raw HTTP
//! client that depends on nothing under test, FTP sessions, and polling with a deadline.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use demo_services::{deathstar, ftpstore};
use suppaftp::tokio::AsyncFtpStream;
use suppaftp::types::FileType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Upper bound for anything a test waits for; generous because two cores are shared.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Polls `check` every 50 ms until it returns `Some`, or panics after [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn loopback_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// A loopback port where nothing listens: connections to it are refused.
pub fn closed_port() -> SocketAddr {
    let l = StdTcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Starts a Deathstar on a free loopback port.
pub async fn start_deathstar(cfg: deathstar::Config) -> SocketAddr {
    let listener = loopback_listener().await;
    let addr = listener.local_addr().unwrap();
    tokio::spawn(deathstar::serve(listener, cfg));
    addr
}

/// Ten consecutive ports that are free on `ip` now and were not handed out before in this
/// process, below the kernel's ephemeral range so outgoing connections do not take them.
pub fn passive_ports(ip: &str) -> (u16, u16) {
    static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut taken = TAKEN.lock().unwrap();
    let taken = taken.get_or_insert_with(HashSet::new);
    // Start at a place that differs between processes, so parallel test runs rarely meet.
    let mut base = 20_000 + (std::process::id() % 1000) as u16 * 10;
    loop {
        let free = !taken.contains(&base)
            && (base..base + 10).all(|p| StdTcpListener::bind((ip, p)).is_ok());
        if free {
            taken.insert(base);
            return (base, base + 9);
        }
        base = if base >= 32_000 { 20_000 } else { base + 10 };
    }
}

/// Starts an FTP store on `ip` (port 0) in `root`.
pub async fn start_store_on(ip: &str, root: &Path, mode: ftpstore::Mode) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (min, max) = passive_ports(ip);
    let cfg = ftpstore::Config {
        listen: addr,
        root: root.to_path_buf(),
        name: "test-store".into(),
        passive_port_min: min,
        passive_port_max: max,
        mode,
    };
    tokio::spawn(ftpstore::serve(listener, cfg));
    addr
}

pub async fn start_store(root: &Path, mode: ftpstore::Mode) -> SocketAddr {
    start_store_on("127.0.0.1", root, mode).await
}

pub fn secure_mode(users: &[(&str, &str)]) -> ftpstore::Mode {
    ftpstore::Mode::Secure {
        users: users
            .iter()
            .map(|(name, password)| ftpstore::User {
                name: name.to_string(),
                password: password.to_string(),
            })
            .collect(),
    }
}

/// Connects and logs in, binary mode.
pub async fn ftp_login(
    addr: SocketAddr,
    user: &str,
    password: &str,
) -> Result<AsyncFtpStream, suppaftp::FtpError> {
    let mut ftp = AsyncFtpStream::connect(addr).await?;
    ftp.login(user, password).await?;
    ftp.transfer_type(FileType::Binary).await?;
    Ok(ftp)
}

pub async fn ftp_put(ftp: &mut AsyncFtpStream, name: &str, data: &str) {
    let mut reader = data.as_bytes();
    ftp.put_file(name, &mut reader).await.unwrap();
}

pub async fn ftp_get(ftp: &mut AsyncFtpStream, name: &str) -> Result<String, suppaftp::FtpError> {
    let mut stream = ftp.retr_as_stream(name).await?;
    let mut data = String::new();
    stream
        .read_to_string(&mut data)
        .await
        .map_err(suppaftp::FtpError::ConnectionError)?;
    stream.finish().await?;
    Ok(data)
}

/// Files named `deathstar-*.log` in `dir`, sorted, with their content.
pub fn log_files(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("deathstar-") && n.ends_with(".log"))
            .map(|n| {
                let content = std::fs::read_to_string(dir.join(&n)).unwrap_or_default();
                (n, content)
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

/// All log lines in `dir`, in file order.
pub fn log_lines(dir: &Path) -> Vec<String> {
    log_files(dir)
        .into_iter()
        .flat_map(|(_, c)| c.lines().map(str::to_string).collect::<Vec<_>>())
        .collect()
}

#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request with `Connection: close` and reads the whole answer. Written by hand so
/// the servers are checked against something that shares no code with them.
pub async fn raw_http(addr: SocketAddr, method: &str, path: &str, body: &str) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut raw))
        .await
        .expect("the server answers")
        .unwrap();
    parse_response(&String::from_utf8(raw).unwrap())
}

pub fn parse_response(raw: &str) -> RawResponse {
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete header");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect();
    RawResponse {
        status,
        headers,
        body: body.to_string(),
    }
}
